//! `lloom-client chat` and `lloom-client receipts` through the real binary, against a validator
//! and an executor (scripted backend) in this process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use lloom_client::{Client, ClientConfig};
use lloom_core::network::NetworkConfig;
use lloom_core::{ModelOffer, NodeKey, U256};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};
use predicates::str::contains;

/// A validator and an executor serving `scripted` ("Paris it is.": 10 prompt tokens at 2 wei,
/// 3 completion tokens at 3, 29 wei an answer) in this process, once a client can see the
/// executor; returns them, their directory and the validator's address.
async fn scripted_network() -> (Validator, ExecutorNode, tempfile::TempDir, String) {
    scripted_network_with(Script::answer("scripted", "Paris it is.")).await
}

/// [`scripted_network`] with the executor's backend following `script`.
async fn scripted_network_with(
    script: Script,
) -> (Validator, ExecutorNode, tempfile::TempDir, String) {
    let vconfig = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), vconfig).await.unwrap();
    let bootstrap = validator.listen_addrs().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ExecutorConfig::new(dir.path().join("executor"));
    config.network = NetworkConfig { bootstrap: bootstrap.clone(), ..NetworkConfig::local() };
    let offer = ModelOffer {
        model: "scripted".into(),
        context_length: 1024,
        price_per_input_token: U256::from(2),
        price_per_output_token: U256::from(3),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    };
    let backend = Arc::new(ScriptedBackend::new(script));
    let executor =
        ExecutorNode::start(&NodeKey::generate(), vec![ServedModel { offer, backend }], config)
            .await
            .unwrap();
    let probe =
        Client::connect(NodeKey::generate(), ClientConfig::default().bootstrap(bootstrap.clone()))
            .await
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while probe.refresh().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the executor never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    (validator, executor, dir, bootstrap[0].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_prints_a_verified_receipt_and_receipts_lists_it() {
    let (_validator, _executor, dir, boot) = scripted_network().await;

    let data = dir.path().join("client");
    let run = |args: Vec<String>| tokio::spawn(client_with_stdin(data.clone(), args, ""));
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let chat = run(args(&[
        "--json",
        "chat",
        "Capital?",
        "--model",
        "scripted",
        "--no-mdns",
        "--bootstrap",
        &boot,
    ]))
    .await
    .unwrap();
    assert!(chat.status.success(), "{}", String::from_utf8_lossy(&chat.stderr));
    let receipt: serde_json::Value = serde_json::from_slice(&chat.stdout).unwrap();
    assert_eq!(receipt["text"], "Paris it is.");
    assert_eq!(receipt["cost_wei"], (10 * 2 + 3 * 3).to_string());
    let digest = receipt["request_digest"].as_str().unwrap().to_owned();

    let list = run(args(&["--json", "receipts", "list"])).await.unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["request_digest"], digest);
    assert_eq!(listed[0]["final"], true);
    let show = run(args(&["receipts", "show", &digest])).await.unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains("Paris it is."));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["messages"][0]["content"], "Capital?");
    assert_eq!(shown["sampling"]["temperature"], 0.0);
    // Without --max-tokens the answer may use what the context leaves: 8 bytes are taken for
    // 2 tokens, plus 8 + 64 of the template's, out of 1,024.
    assert_eq!(shown["max_output_tokens"], 1024 - 74);
    assert_eq!(shown["max_input_tokens"], 74);
    assert_eq!(shown["price_per_output_token"], "3");

    // Every sampling flag reaches the signed request the executor served.
    let sampled = run(args(&[
        "--json",
        "chat",
        "Capital?",
        "--model",
        "scripted",
        "--system",
        "Be brief.",
        "--temperature",
        "0.5",
        "--top-p",
        "0.75",
        "--top-k",
        "3",
        "--seed",
        "9",
        "--stop",
        "END",
        "--frequency-penalty",
        "-0.5",
        "--presence-penalty",
        "0.25",
        "--max-tokens",
        "40",
        "--min-context",
        "1024",
        "--no-mdns",
        "--bootstrap",
        &boot,
    ]))
    .await
    .unwrap();
    assert!(sampled.status.success(), "{}", String::from_utf8_lossy(&sampled.stderr));
    let sampled: serde_json::Value = serde_json::from_slice(&sampled.stdout).unwrap();
    let digest = sampled["request_digest"].as_str().unwrap().to_owned();
    let show = run(args(&["--json", "receipts", "show", &digest])).await.unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["messages"][0]["content"], "Be brief.");
    assert_eq!(shown["max_output_tokens"], 40, "--max-tokens is signed as given");
    assert_eq!(
        shown["sampling"],
        serde_json::json!({
            "temperature": 0.5,
            "top_p": 0.75,
            "top_k": 3,
            "seed": 9,
            "stop": ["END"],
            "frequency_penalty": -0.5,
            "presence_penalty": 0.25,
            "format": "Text",
        })
    );

    // The configuration file's model and price ceiling stand in for --model and --max-price;
    // the flags win over them.
    let config = dir.path().join("client.toml");
    std::fs::write(&config, "[client]\nmodel = \"scripted\"\nmax_price = 1\n").unwrap();
    let config = config.to_str().unwrap();
    let capped = run(args(&["--config", config, "chat", "hi", "--no-mdns", "--bootstrap", &boot]))
        .await
        .unwrap();
    assert!(!capped.status.success());
    let stderr = String::from_utf8_lossy(&capped.stderr);
    assert!(stderr.contains("no executor serves `scripted` within your limits"), "{stderr}");
    let flagged = ["--config", config, "chat", "hi", "--max-price", "3", "--no-mdns"];
    let flagged = run(args(&[&flagged[..], &["--bootstrap", &boot]].concat())).await.unwrap();
    assert!(flagged.status.success(), "{}", String::from_utf8_lossy(&flagged.stderr));

    // `-` reads the prompt from standard input.
    let piped = client_with_stdin(
        dir.path().join("client"),
        args(&["--json", "chat", "-", "--model", "scripted", "--no-mdns", "--bootstrap", &boot]),
        "Line one.\nLine two.\n",
    )
    .await;
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    let piped: serde_json::Value = serde_json::from_slice(&piped.stdout).unwrap();
    let digest = piped["request_digest"].as_str().unwrap().to_owned();
    let show = run(args(&["--json", "receipts", "show", &digest])).await.unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["messages"][0]["content"], "Line one.\nLine two.\n");

    // An executor whose context is too short for --min-context is not asked, and the error
    // says what is on offer.
    let too_long = run(args(&[
        "chat",
        "hi",
        "--model",
        "scripted",
        "--min-context",
        "4096",
        "--no-mdns",
        "--bootstrap",
        &boot,
    ]))
    .await
    .unwrap();
    assert!(!too_long.status.success());
    let stderr = String::from_utf8_lossy(&too_long.stderr);
    assert!(stderr.contains("no executor serves `scripted` within your limits"), "{stderr}");
    assert!(stderr.contains("asking at least 2 wei per input token and 3 wei"), "{stderr}");
    assert!(stderr.contains("at most 1024 tokens of context"), "{stderr}");

    let missing =
        run(args(&["receipts", "show", &format!("0x{}", "00".repeat(32))])).await.unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no receipt for request"));
    let unknown =
        run(args(&["chat", "hi", "--model", "gpt-17", "--no-mdns", "--bootstrap", &boot]))
            .await
            .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("models on offer: scripted"));
}

/// Holds `lloom-client --json chat -i --model scripted EXTRA` over `stdin` with the network at
/// `boot`; returns its stderr and, for each verified answer, its receipt as `receipts show`
/// prints it (the signed request in full).
async fn converse(
    data: &std::path::Path,
    boot: &str,
    extra: &[&str],
    stdin: &str,
) -> (String, Vec<serde_json::Value>) {
    let args: Vec<String> = ["--json", "chat", "-i", "--model", "scripted", "--no-mdns"]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .chain(["--bootstrap".to_owned(), boot.to_owned()])
        .collect();
    let talk = client_with_stdin(data.to_path_buf(), args, stdin).await;
    assert!(talk.status.success(), "{}", String::from_utf8_lossy(&talk.stderr));
    let mut receipts = Vec::new();
    for line in String::from_utf8_lossy(&talk.stdout).lines() {
        let receipt: serde_json::Value = serde_json::from_str(line).unwrap();
        let digest = receipt["request_digest"].as_str().unwrap().to_owned();
        let show = ["--json", "receipts", "show", &digest].map(str::to_owned).to_vec();
        let show = client_with_stdin(data.to_path_buf(), show, "").await;
        receipts.push(serde_json::from_slice(&show.stdout).unwrap());
    }
    (String::from_utf8_lossy(&talk.stderr).into_owned(), receipts)
}

/// Runs `lloom-client --data-dir DATA ARGS` with `stdin`, off the runtime's threads.
async fn client_with_stdin(data: std::path::PathBuf, args: Vec<String>, stdin: &str) -> Output {
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::cargo_bin("lloom-client")
            .unwrap()
            .env_clear()
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .write_stdin(stdin)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_chat_carries_the_conversation_and_goes_on_after_a_failed_turn() {
    let (_validator, _executor, dir, boot) = scripted_network().await;
    let data = dir.path().join("client");
    let chat = |extra: &[&str]| {
        let mut args: Vec<String> = ["--json", "chat", "--interactive", "--model", "scripted"]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(["--no-mdns".to_owned(), "--bootstrap".to_owned(), boot.clone()]);
        args
    };
    let stdin = "Capital?\n\n/help\nAnd then?\n/reset\nAgain?\n/exit\nNot asked.\n";
    let talk = client_with_stdin(data.clone(), chat(&["--system", "Be brief."]), stdin).await;
    assert!(talk.status.success(), "{}", String::from_utf8_lossy(&talk.stderr));
    let receipts: Vec<serde_json::Value> = String::from_utf8_lossy(&talk.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(receipts.len(), 3, "one receipt a turn; /exit ends: {receipts:?}");
    let stderr = String::from_utf8_lossy(&talk.stderr);
    assert!(
        stderr.contains("[3 answers, 0 failed; 39 tokens, 87 wei for the answers]"),
        "{stderr}"
    );

    // Each turn signed the conversation so far; /reset started it again.
    let asked = |receipt: &serde_json::Value| {
        let digest = receipt["request_digest"].as_str().unwrap().to_owned();
        let data = data.clone();
        async move {
            let show =
                client_with_stdin(data, vec!["receipts".into(), "show".into(), digest], "").await;
            let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
            shown["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    format!("{}: {}", m["role"].as_str().unwrap(), m["content"].as_str().unwrap())
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(asked(&receipts[0]).await, ["System: Be brief.", "User: Capital?"]);
    assert_eq!(
        asked(&receipts[1]).await,
        ["System: Be brief.", "User: Capital?", "Assistant: Paris it is.", "User: And then?"]
    );
    assert_eq!(asked(&receipts[2]).await, ["System: Be brief.", "User: Again?"]);

    // Turns no executor can take are reported; the conversation goes on to the end of input.
    let priced_out =
        client_with_stdin(data.clone(), chat(&["--max-price", "1"]), "One?\nTwo?\n").await;
    assert!(priced_out.status.success(), "{}", String::from_utf8_lossy(&priced_out.stderr));
    let stderr = String::from_utf8_lossy(&priced_out.stderr);
    assert_eq!(stderr.matches("[no answer: no executor serves `scripted` within").count(), 2);
    assert!(stderr.contains("[0 answers, 2 failed; 0 tokens, 0 wei for the answers]"), "{stderr}");

    // A first turn may be given on the command line; `-` may not (turns come from stdin).
    let first = client_with_stdin(data.clone(), chat(&["Capital?"]), "").await;
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(String::from_utf8_lossy(&first.stdout).lines().count(), 1);
    let dash = client_with_stdin(data.clone(), chat(&["-"]), "Capital?\n").await;
    assert!(!dash.status.success());
    assert!(String::from_utf8_lossy(&dash.stderr).contains("with --interactive, turns are read"));

    // Without --json, a line on stderr a turn: who answered, tokens, wei, the wait.
    let human: Vec<String> = chat(&[]).into_iter().filter(|a| a != "--json").collect();
    let plain = client_with_stdin(data, human, "Capital?\n").await;
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "Paris it is.");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    let line = stderr.lines().find(|l| l.contains("[verified: executor 0x")).unwrap_or_default();
    assert!(line.contains(" + 3 tokens, ") && line.contains(" ms]"), "{stderr}");
    assert!(line.contains("wei, first token after "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_chat_that_outgrows_the_context_leaves_its_oldest_turns_out() {
    // 16 tokens of context, one a word: three turns of three words with 4 tokens to answer
    // ("Paris it is.") fill it.
    let script = Script { context: Some(16), ..Script::answer("scripted", "Paris it is.") };
    let (_validator, _executor, dir, boot) = scripted_network_with(script).await;
    let data = dir.path().join("client");
    // The fourth turn does not fit even alone; the conversation it leaves behind still holds
    // the third exchange, so the fifth is signed with it.
    let stdin = format!("a b c\nd e f\ng h i\n{}\nj\n", "w ".repeat(13));
    let (stderr, receipts) = converse(&data, &boot, &["--max-tokens", "4"], &stdin).await;
    let outgrew = "[the conversation outgrew the model's context: the oldest turns are left out";
    assert_eq!(stderr.matches(outgrew).count(), 4, "{stderr}");
    assert!(stderr.contains("3 messages kept]"), "{stderr}");
    assert!(
        stderr.contains("[no answer: the prompt and max_tokens 4 do not fit the context"),
        "{stderr}"
    );
    assert!(stderr.contains("[4 answers, 1 failed;"), "{stderr}");

    // The third turn was signed without the first exchange, the fifth without the second.
    assert_eq!(receipts.len(), 4);
    let contents = |shown: &serde_json::Value| {
        let messages = shown["messages"].as_array().unwrap().iter();
        messages.map(|m| m["content"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(contents(&receipts[2]), ["d e f", "Paris it is.", "g h i"]);
    assert_eq!(contents(&receipts[3]), ["g h i", "Paris it is.", "j"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_max_tokens_a_conversation_keeps_room_for_an_answer_by_leaving_out_old_turns() {
    // 1,024 tokens of context, one a word; turns of 300 words. Without --max-tokens each
    // answer may use what the context leaves, but at least 256 tokens: the third turn would
    // leave 1,024 - 906 = 118, so the first exchange is left out.
    let script = Script { context: Some(1024), ..Script::answer("scripted", "Paris it is.") };
    let (_validator, _executor, dir, boot) = scripted_network_with(script).await;
    let data = dir.path().join("client");
    let turn = |word: &str| format!("{word} ").repeat(300);
    let stdin = format!("{}\n{}\n{}\n", turn("a"), turn("b"), turn("c"));
    let (stderr, receipts) = converse(&data, &boot, &[], &stdin).await;
    let outgrew = "[the conversation outgrew the model's context: the oldest turns are left out";
    assert_eq!(stderr.matches(outgrew).count(), 1, "{stderr}");
    assert!(stderr.contains("3 messages kept]"), "{stderr}");
    assert!(stderr.contains("[3 answers, 0 failed;"), "{stderr}");

    let signed: Vec<_> = receipts
        .iter()
        .map(|shown| {
            let first = shown["messages"][0]["content"].as_str().unwrap().chars().next();
            let messages = shown["messages"].as_array().unwrap().len();
            (first, messages, shown["max_output_tokens"].as_u64().unwrap())
        })
        .collect();
    // Each prompt is longer than estimated from its size, so each is asked again for what
    // the executor's count leaves: 724 after the first turn's 300 words, 421 after 603; the
    // third is asked without the first exchange.
    assert_eq!(signed, [(Some('a'), 1, 724), (Some('a'), 3, 421), (Some('b'), 3, 421)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_chat_learns_of_prompt_density_the_next_run_uses() {
    // 300 words of two letters, one token each: 899 bytes that six bytes a token would take
    // for 222 tokens with the template's.
    let script = Script {
        context: Some(1024),
        input_tokens: 300,
        ..Script::answer("scripted", "Paris it is.")
    };
    let (_validator, _executor, dir, boot) = scripted_network_with(script).await;
    let data = dir.path().join("client");
    let prompt = vec!["ab"; 300].join(" ");
    let args: Vec<String> = ["--json", "chat", &prompt, "--model", "scripted", "--no-mdns"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["--bootstrap".to_owned(), boot])
        .collect();
    let mut signed = Vec::new();
    for _ in 0..2 {
        let chat = client_with_stdin(data.clone(), args.clone(), "").await;
        assert!(chat.status.success(), "{}", String::from_utf8_lossy(&chat.stderr));
        let receipt: serde_json::Value = serde_json::from_slice(&chat.stdout).unwrap();
        let digest = receipt["request_digest"].as_str().unwrap().to_owned();
        let show = ["--json", "receipts", "show", &digest].map(str::to_owned).to_vec();
        let show = client_with_stdin(data.clone(), show, "").await;
        let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
        signed.push(shown["max_output_tokens"].as_u64().unwrap());
    }
    // The first run asked for 802, was refused with the count and signed 724; it kept what the
    // answer showed (35 tenths of a byte a token), so the second estimates 257 + 72 tokens and
    // is not refused.
    assert_eq!(signed, [724, 1024 - 329]);
    assert!(data.join("prompt-density.json").exists());
    // So are the executors the validator listed, for a later run that finds no validator.
    assert!(data.join("known-executors.json").exists());
}

#[test]
fn bad_chat_arguments_are_refused_before_any_network_use() {
    Command::cargo_bin("lloom-client")
        .unwrap()
        .args(["chat", "hi", "--temperature", "hot"])
        .assert()
        .failure()
        .stderr(contains("--temperature"));
    Command::cargo_bin("lloom-client")
        .unwrap()
        .args(["chat", "hi", "--max-tokens", "0"])
        .assert()
        .failure()
        .stderr(contains("--max-tokens"));
    Command::cargo_bin("lloom-client")
        .unwrap()
        .args(["chat", "hi", "--top-p", "0"])
        .assert()
        .failure()
        .stderr(contains("top_p 0 not in (0, 1]"));
    Command::cargo_bin("lloom-client")
        .unwrap()
        .args(["chat", "-"])
        .write_stdin(" \n")
        .assert()
        .failure()
        .stderr(contains("the prompt on standard input is empty"));
    Command::cargo_bin("lloom-client")
        .unwrap()
        .args(["chat", "hi", "--stop", ""])
        .assert()
        .failure()
        .stderr(contains("empty stop sequence"));
    Command::cargo_bin("lloom-client")
        .unwrap()
        .args(["chat", "hi", "--json-schema", "/nonexistent/schema.json"])
        .assert()
        .failure()
        .stderr(contains("cannot read the JSON schema /nonexistent/schema.json"));
    Command::cargo_bin("lloom-client")
        .unwrap()
        .args(["receipts", "show", "not-a-digest"])
        .assert()
        .failure()
        .stderr(contains("invalid value"));
}

#[test]
fn serve_refuses_bad_gateway_keys_and_an_open_public_address_before_any_network_use() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "alice short\n").unwrap();
    let budgeted = dir.path().join("budgeted");
    std::fs::write(&budgeted, "alice 0123456789abcdef0123 plenty\n").unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--listen", "0.0.0.0:0"], "is reachable from other machines"),
        (&["--api-key-file", keys.to_str().unwrap()], "line 1: a key must be 16 to 256"),
        (&["--key-requests-per-minute", "5"], "limit each API key"),
        (&["--key-budget", "5"], "limit each API key"),
        (&["--key-budget", "5 wei"], "is not an amount"),
        (&["--api-key-file", budgeted.to_str().unwrap()], "the budget of `alice`: `plenty`"),
    ];
    for (args, needle) in cases {
        Command::cargo_bin("lloom-client")
            .unwrap()
            .env_remove("LLOOM_GATEWAY_API_KEY")
            .env_remove("LLOOM_GATEWAY_API_KEY_FILE")
            .args(["--data-dir", dir.path().to_str().unwrap(), "serve", "--no-mdns"])
            .args(args)
            .timeout(std::time::Duration::from_secs(30))
            .assert()
            .failure()
            .stderr(contains(needle));
    }
}

#[tokio::test]
async fn spend_lists_and_resets_what_each_gateway_key_spent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let spend = |args: &[&str]| {
        let mut command = Command::cargo_bin("lloom-client").unwrap();
        command.args(["--data-dir", data]).args(args).timeout(Duration::from_secs(30));
        command.assert()
    };
    // No ledger yet: said so, and none is made.
    spend(&["spend", "list"]).failure().stderr(contains("no spend ledger at"));
    assert!(!dir.path().join("gateway-spend.redb").exists());
    // The ledger `serve` keeps in the data directory.
    {
        let path = dir.path().join("gateway-spend.redb");
        let ledger = lloom_client::gateway::SpendLedger::open(&path).unwrap();
        ledger.charge(&"alice".into(), U256::from(58), 0).await.unwrap();
        // Bob's total is for the month that began on 2026-12-01.
        ledger.charge(&"bob".into(), U256::from(29), 1_796_083_200).await.unwrap();
        // A ledger in use is not opened twice.
        spend(&["spend", "list"]).failure().stderr(contains("open in another process"));
    }
    spend(&["spend", "list"]).success().stdout(contains("alice")).stdout(contains("58"));
    let listed = spend(&["--json", "spend", "list"]).success();
    let rows: serde_json::Value = serde_json::from_slice(&listed.get_output().stdout).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([
            {"key": "alice", "spent_wei": "58", "since": null},
            {"key": "bob", "spent_wei": "29", "since": "2026-12-01T00:00:00Z"},
        ])
    );
    spend(&["spend", "reset", "alice"]).success().stdout(contains("reset to 0 (it was 58 wei)"));
    spend(&["spend", "reset", "carol"])
        .failure()
        .stderr(contains("no spend recorded for a key named `carol`"))
        .stderr(contains("keys with spend: bob"));
    let listed = spend(&["--json", "spend", "list"]).success();
    let rows: serde_json::Value = serde_json::from_slice(&listed.get_output().stdout).unwrap();
    assert_eq!(rows[0]["key"], "bob");
    assert_eq!(rows.as_array().unwrap().len(), 1);
    let elsewhere = dir.path().join("elsewhere.redb");
    spend(&["spend", "list", "--ledger", elsewhere.to_str().unwrap()])
        .failure()
        .stderr(contains("elsewhere.redb"));
}

/// `lloom-client serve` as a process, with `args` after `serve`; returns it and the gateway's
/// address, once it listens (on a blocking thread: the nodes it talks to run in this runtime).
/// With `keep_reading`, what it prints later is read, as a supervisor would; without, its
/// output is closed after the first line, as `serve | head -1` would.
async fn spawn_gateway(
    data: &std::path::Path,
    args: &[&str],
    keep_reading: bool,
) -> (std::process::Child, String) {
    let data = data.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || spawn_gateway_blocking(&data, &args, keep_reading))
        .await
        .unwrap()
}

fn spawn_gateway_blocking(
    data: &std::path::Path,
    args: &[String],
    keep_reading: bool,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("lloom-client"))
        .env_clear()
        .arg("--data-dir")
        .arg(data)
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let line = lines.next().expect("serve printed nothing").unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split("/v1").next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    if keep_reading {
        std::thread::spawn(move || lines.for_each(drop));
    }
    (child, addr)
}

/// Stops a gateway as Ctrl-C would, and waits for it.
async fn stop_gateway(child: std::process::Child) {
    let pid = child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "serve ended with {}: {stderr}", out.status);
}

/// One completion with the API key `key`; returns the HTTP status and body.
async fn complete(addr: &str, key: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"model":"scripted","messages":[{"role":"user","content":"Capital?"}]}"#;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_a_keys_spend_across_restarts_and_refuses_it_past_its_budget() {
    let (_validator, _executor, dir, boot) = scripted_network().await;
    let data = dir.path().join("gateway");
    let key = "gateway-key-0123456789abcdef";
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--no-mdns",
        "--bootstrap",
        &boot,
        "--api-key",
        key,
        "--key-budget",
        "29",
    ];
    let (gateway, addr) = spawn_gateway(&data, &args, true).await;
    let (status, body) = complete(&addr, key).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = complete(&addr, key).await;
    assert_eq!(status, 402, "29 of 29 wei spent: {body}");
    assert!(body.contains("insufficient_quota"), "{body}");
    assert!(!body.to_lowercase().contains("retry-after"), "no period, no reset: {body}");
    stop_gateway(gateway).await;

    // The spend is in the ledger of the data directory, and a restarted gateway holds to it.
    let listed = Command::cargo_bin("lloom-client")
        .unwrap()
        .env_clear()
        .arg("--data-dir")
        .arg(&data)
        .args(["--json", "spend", "list"])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows, serde_json::json!([{"key": "default", "spent_wei": "29", "since": null}]));
    // This time nobody reads its output after the first line: it still stops cleanly.
    let (gateway, addr) = spawn_gateway(&data, &args, false).await;
    let (status, body) = complete(&addr, key).await;
    assert_eq!(status, 402, "the budget held across the restart: {body}");
    stop_gateway(gateway).await;
}
