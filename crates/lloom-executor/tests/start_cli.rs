//! `lloom-executor start` through the real binary with the real default model: it joins a
//! validator, answers a client's signed request (the answer mentions Paris), stores the
//! receipt, on SIGTERM withdraws and lets the answer under way finish; bad input is refused with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use lloom_client::{ChatEvent, ChatRequest, Client, ClientConfig};
use lloom_core::NodeKey;
use lloom_core::network::NetworkConfig;
use lloom_executor::models::DEFAULT_MODEL;
use lloom_validator::{Validator, ValidatorConfig};
use predicates::str::contains;

mod common;

/// Longest wait for any one event of a chat.
const WAIT: Duration = Duration::from_secs(30);

fn new_hex_key(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("executor.key");
    assert_cmd::Command::cargo_bin("lloom-executor")
        .unwrap()
        .arg("--key")
        .arg(&key)
        .args(["keys", "new", "--format", "hex"])
        .assert()
        .success();
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_serves_the_default_model_to_a_client_and_withdraws_on_sigterm() {
    // The binary finds the model in the shared cache (fetched once for all tests).
    // The default model, fetched into the cache on first use.
    tokio::task::spawn_blocking(common::model_path).await.unwrap();
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), config).await.unwrap();
    let bootstrap = validator.listen_addrs().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let key = new_hex_key(dir.path());
    let mut child = Command::cargo_bin("lloom-executor")
        .unwrap()
        .arg("--key")
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["start", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--n-ctx", "2048"])
        .args(["--max-sequences", "2", "--price-in", "7", "--price-out", "11"])
        .args(["--metrics-listen", "127.0.0.1:0", "--kv-cache-type", "q8_0"])
        // Time for the answer under way at SIGTERM to finish even on a machine busy with more.
        .args(["--drain-secs", "120"])
        .arg("--bootstrap")
        .arg(bootstrap[0].to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("metrics on")) && Instant::now() < deadline {
        let Some(line) = lines.next() else { break };
        seen.push(line.unwrap());
    }
    assert!(
        seen.iter().any(|l| l.contains("serving SmolLM2-135M-Instruct (Q4_1, sha256 0xb179c952")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains("/p2p/16Uiu2")), "{seen:?}");
    // The memory plan sets the engine: 2 sequences share the 2048-token context, each with a
    // q8_0 cache of 1,024 × 12,240 bytes.
    assert!(seen.iter().any(|l| l.starts_with("memory budget")), "{seen:?}");
    let plan = "SmolLM2-135M-Instruct: 2 sequences of 1024 tokens (q8_0 KV cache, 11 MiB each)";
    assert!(seen.iter().any(|l| l.contains(plan)), "{seen:?}");

    let client_config = ClientConfig::default().bootstrap(bootstrap);
    let client = Client::connect(NodeKey::generate(), client_config).await.unwrap();
    let wait = Instant::now() + Duration::from_secs(30);
    while client.refresh().await.unwrap() == 0 {
        assert!(Instant::now() < wait, "the executor never appeared in the registry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut request = ChatRequest::user(DEFAULT_MODEL.name, "What is the capital of France?");
    request.max_tokens = 48;
    let receipt = client.chat(request).await.unwrap().collect().await.unwrap();
    assert!(receipt.text.contains("Paris"), "{:?}", receipt.text);
    assert_eq!(
        receipt.cost,
        lloom_core::U256::from(receipt.input_tokens * 7 + receipt.output_tokens * 11)
    );

    // A prompt longer than a sequence's 1,024 tokens: the engine refuses it, signed, as
    // ContextExceeded, and no executor with a longer context is left to ask.
    let long = ChatRequest {
        max_tokens: 48,
        ..ChatRequest::user(DEFAULT_MODEL.name, "word ".repeat(1500))
    };
    let err = client.chat(long).await.unwrap().collect().await.unwrap_err();
    assert!(
        matches!(err, lloom_client::Error::ContextExceeded { context_length: 1024, .. }),
        "{err}"
    );

    let metrics_url = seen
        .iter()
        .find_map(|l| l.strip_prefix("metrics on "))
        .unwrap_or_else(|| panic!("no metrics address in {seen:?}"));
    let page = reqwest::get(metrics_url).await.unwrap().text().await.unwrap();
    for line in [
        "lloom_executor_requests_completed_total 1\n",
        "lloom_executor_requests_refused_total 1\n",
        "lloom_executor_refusals_total{code=\"context_exceeded\"} 1\n",
        "lloom_executor_refusals_total{code=\"busy\"} 0\n",
        "lloom_executor_receipts_unsettled 1\n",
        "lloom_executor_model_loaded{model=\"SmolLM2-135M-Instruct\"} 1\n",
        "lloom_executor_model_requests{model=\"SmolLM2-135M-Instruct\"} 0\n",
        // The plan: no GPU in this build, the two sequences asked for.
        "lloom_executor_model_gpu_layers{model=\"SmolLM2-135M-Instruct\"} 0\n",
        "lloom_executor_model_max_sequences{model=\"SmolLM2-135M-Instruct\"} 2\n",
        "# TYPE lloom_executor_model_planned_bytes gauge\n",
        // One request at a time: nothing to move.
        "lloom_executor_model_sequence_moves_total{model=\"SmolLM2-135M-Instruct\"} 0\n",
        // Reachable on loopback: no relay needed, none reserved.
        "lloom_network_relay_reservations_total 0\n",
        "lloom_network_announcements_accepted_total ",
    ] {
        assert!(page.contains(line), "{line} missing from {page}");
    }
    let missing = reqwest::get(metrics_url.replace("/metrics", "/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let health = reqwest::get(metrics_url.replace("/metrics", "/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["models"][0]["model"], "SmolLM2-135M-Instruct", "{health}");
    assert_eq!(health["models"][0]["offered"], true, "{health}");
    assert_eq!(health["models"][0]["context_length"], 1024, "{health}");

    // SIGTERM while an answer streams: the executor withdraws, says it is draining, lets the
    // answer finish (signed, stored), and then exits.
    let mut story = ChatRequest::user(DEFAULT_MODEL.name, "Write a long story about a dragon.");
    story.max_tokens = 96;
    let mut streaming = client.chat(story).await.unwrap();
    loop {
        let event = tokio::time::timeout(WAIT, streaming.next()).await.unwrap().unwrap();
        if matches!(event.unwrap(), ChatEvent::Text(_)) {
            break;
        }
    }
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let health_url = metrics_url.replace("/metrics", "/health");
    let draining = Instant::now() + Duration::from_secs(2);
    loop {
        let health = reqwest::get(&health_url).await.unwrap();
        if health.status() == 503 {
            let health: serde_json::Value = health.json().await.unwrap();
            assert_eq!(health["status"], "draining", "{health}");
            break;
        }
        assert!(Instant::now() < draining, "/health still says ok after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut receipt = None;
    while let Some(event) = tokio::time::timeout(WAIT, streaming.next()).await.unwrap() {
        match event.unwrap() {
            ChatEvent::Done(r) => receipt = Some(*r),
            ChatEvent::Restart { .. } => panic!("the answer was cut"),
            ChatEvent::Text(_) | ChatEvent::Attempt { .. } => {}
        }
    }
    let receipt = receipt.expect("the answer under way completes");
    assert!(receipt.output_tokens > 1 && receipt.attempts.len() == 1, "{receipt:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}, output {rest:?}");
    assert!(rest.iter().any(|l| l.contains("withdrawing")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("up to 120 s for 1 request(s) in flight")), "{rest:?}");
    assert!(rest.iter().any(|l| l == "every request in flight finished"), "{rest:?}");
    assert!(dir.path().join("receipts.redb").exists(), "the receipt store is on disk");
    validator.shutdown().await;
}

/// `lloom-executor --key KEY --data-dir DIR`.
fn with_key(key: &std::path::Path, dir: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("lloom-executor").unwrap();
    cmd.arg("--key").arg(key).arg("--data-dir").arg(dir);
    cmd
}

#[test]
fn start_refuses_a_missing_model_file_and_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_hex_key(dir.path());
    with_key(&key, dir.path())
        .args(["start", "--no-mdns", "--model-path", "/nonexistent/model.gguf"])
        .assert()
        .failure()
        .stderr(contains("no model file at /nonexistent/model.gguf"));
    // An HTTP backend that does not answer.
    with_key(&key, dir.path())
        .args(["start", "--no-mdns", "--backend-url", "http://127.0.0.1:9/v1"])
        .args(["--backend-model", "llama3"])
        .assert()
        .failure()
        .stderr(contains("http://127.0.0.1:9/v1/models is unreachable"));
    assert_cmd::Command::cargo_bin("lloom-executor")
        .unwrap()
        .env_clear()
        .arg("--key")
        .arg(dir.path().join("missing.key"))
        .args(["start", "--no-mdns"])
        .assert()
        .failure()
        .stderr(contains("keys new"));
    assert_cmd::Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["start", "--price-in=lots"])
        .assert()
        .failure()
        .stderr(contains("--price-in"));
    assert_cmd::Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["start", "--memory-budget=lots"])
        .assert()
        .failure()
        .stderr(contains("memory budget `lots`"));
    // A nonce sync interval out of range is refused before the model loads.
    with_key(&key, dir.path())
        .args(["start", "--no-mdns", "--nonce-sync-ms", "3600000"])
        .assert()
        .failure()
        .stderr(contains("nonce_sync_ms 3600000 is above the most allowed, 60000"));
    with_key(&key, dir.path())
        .args(["start", "--no-mdns", "--commit-delay-us", "100001"])
        .assert()
        .failure()
        .stderr(contains("commit_delay_us 100001 is above the most allowed, 100000"));
    // A budget the default model cannot fit in is refused with the numbers, before serving.
    with_key(&key, dir.path())
        .args(["start", "--no-mdns", "--memory-budget", "10MiB"])
        .assert()
        .failure()
        .stderr(contains("but the memory budget is 10 MiB"));
    // Layers asked of a GPU this build does not have are refused before serving.
    if !cfg!(feature = "cuda") {
        with_key(&key, dir.path())
            .args(["start", "--no-mdns", "--gpu-layers", "4"])
            .assert()
            .failure()
            .stderr(contains("4 layers asked for the GPU, but no GPU is available"));
    }
    for args in [["--streams", "4,0"], ["--rounds", "0"]] {
        assert_cmd::Command::cargo_bin("lloom-executor")
            .unwrap()
            .arg("bench")
            .args(args)
            .assert()
            .failure()
            .stderr(contains("--max-tokens, --rounds and --streams must be positive"));
    }
    assert_cmd::Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["bench", "--churn", "--streams", "1", "--model-path", "/nonexistent.gguf"])
        .assert()
        .failure()
        .stderr(contains("--churn needs a stream count of at least 2"));
}

#[test]
fn init_writes_a_commented_config_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conf/lloom.toml");
    let init = |force: bool| {
        let mut cmd = assert_cmd::Command::cargo_bin("lloom-executor").unwrap();
        cmd.env_clear().args(["init", "--path"]).arg(&path);
        if force {
            cmd.arg("--force");
        }
        cmd.assert()
    };
    init(false).success().stdout(contains("wrote"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("price_per_output_token = 2000") && text.contains("# model_path"));
    let parsed = lloom_core::cli::ConfigFile::load(&path).expect("init writes a valid file");
    assert_eq!(parsed.executor.memory_budget.as_deref(), Some("0.9"));
    init(false).failure().stderr(contains("exists; pass --force"));
    init(true).success();
}
