//! Model discovery through a real validator: the library merges verified announcements, and
//! `lloom-client models` prints them (table and JSON); unreachable or malformed bootstrap
//! addresses give clear errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use lloom_client::cli::{DiscoveryArgs, discover};
use lloom_core::network::NetworkEvent;
use lloom_core::network::test_utils::{TestNode, WAIT};
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{
    AnnouncementBody, B256, DomainConfig, ExecutorLoad, ModelOffer, NodeKey, SignedAnnouncement,
    U256, unix_now,
};
use lloom_validator::{Validator, ValidatorConfig};
use predicates::str::contains;

fn args(bootstrap: Vec<Multiaddr>) -> DiscoveryArgs {
    DiscoveryArgs {
        bootstrap,
        no_mdns: true,
        p2p_listen: vec![],
        timeout_secs: Some(10),
        max_age_secs: Some(60),
    }
}

async fn network_with_one_executor() -> (Validator, TestNode, Multiaddr) {
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), config).await.unwrap();
    let addr = validator.listen_addrs().await.unwrap().remove(0);
    let mut executor = TestNode::spawn(false, vec![addr.clone()]).await.unwrap();
    executor.wait_for(|e| matches!(e, NetworkEvent::Subscribed(_)).then_some(())).await.unwrap();
    let body = AnnouncementBody {
        offers: vec![ModelOffer {
            model: "SmolLM2-135M-Instruct".into(),
            context_length: 8192,
            price_per_input_token: U256::from(7u64),
            price_per_output_token: U256::from(11u64),
            weights_sha256: Some(B256::repeat_byte(0xab)),
            quantization: Some("Q4_1".into()),
            capabilities: vec!["chat".into()],
        }],
        load: ExecutorLoad::default(),
        listen_addrs: vec![],
    };
    let ann = SignedAnnouncement::sign(
        &executor.key,
        DomainConfig::default(),
        1,
        unix_now(),
        body,
        false,
    )
    .unwrap();
    executor.handle.publish_announcement(ann).await.unwrap();
    (validator, executor, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_through_a_validator() {
    let (validator, executor_node, addr) = network_with_one_executor().await;

    // Library: poll until the validator has applied the announcement (bounded).
    let deadline = tokio::time::Instant::now() + WAIT;
    let rows = loop {
        let rows = discover(&args(vec![addr.clone()])).await.unwrap().models();
        if !rows.is_empty() || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].model, "SmolLM2-135M-Instruct");
    assert_eq!(rows[0].executors, 1);
    assert_eq!(rows[0].input_price, (U256::from(7u64), U256::from(7u64)));
    assert_eq!(rows[0].max_context, 8192);

    // The real binary, table and JSON (with a data directory of its own).
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let bootstrap = addr.to_string();
    let table = tokio::task::spawn_blocking({
        let (bootstrap, data_dir) = (bootstrap.clone(), data_dir.clone());
        move || {
            assert_cmd::Command::cargo_bin("lloom-client")
                .unwrap()
                .args(["--data-dir", &data_dir, "models", "--no-mdns", "--bootstrap", &bootstrap])
                .assert()
                .success()
                .stdout(contains("SmolLM2-135M-Instruct"))
                .stdout(contains("MODEL"))
                .get_output()
                .stdout
                .clone()
        }
    })
    .await
    .unwrap();
    assert!(String::from_utf8(table).unwrap().contains("8192"));
    let json = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        move || {
            assert_cmd::Command::cargo_bin("lloom-client")
                .unwrap()
                .args(["--data-dir", &data_dir, "--json", "models", "--no-mdns", "--bootstrap"])
                .arg(&bootstrap)
                .assert()
                .success()
                .get_output()
                .stdout
                .clone()
        }
    })
    .await
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json[0]["output_price_wei"][0], "11");
    assert_eq!(json[0]["executors"], 1);

    // Each executor's offer, with the weights it serves.
    let run = |args: &[&str]| {
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.extend(["--no-mdns".into(), "--bootstrap".into(), addr.to_string()]);
        args.extend(["--data-dir".into(), data_dir.clone()]);
        tokio::task::spawn_blocking(move || {
            assert_cmd::Command::cargo_bin("lloom-client").unwrap().args(args).output().unwrap()
        })
    };
    let table = run(&["executors"]).await.unwrap();
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let table = String::from_utf8(table.stdout).unwrap();
    let executor = executor_node.key.address().to_checksum(None);
    assert!(table.starts_with("EXECUTOR"), "{table}");
    for cell in
        [executor.as_str(), "SmolLM2-135M-Instruct", "7", "11", "8192", "Q4_1", "0xabababab…"]
    {
        assert!(table.lines().nth(1).unwrap().contains(cell), "{cell}: {table}");
    }
    let json = run(&["--json", "executors", "--model", "SmolLM2-135M-Instruct"]).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["executor"], executor);
    assert_eq!(json[0]["peer_id"], executor_node.key.peer_id().to_string());
    assert_eq!(json[0]["weights_sha256"], B256::repeat_byte(0xab).to_string());
    assert_eq!(
        (json[0]["input_price_wei"].clone(), json[0]["capabilities"][0].clone()),
        ("7".into(), "chat".into())
    );
    let unknown = run(&["executors", "--model", "gpt-17"]).await.unwrap();
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("no executor serves `gpt-17`; models on offer: SmolLM2-135M-Instruct"),
        "{stderr}"
    );

    // The listings kept the directory; with the validator down they list what they kept,
    // and say so.
    assert!(data.path().join("known-executors.json").exists());
    validator.shutdown().await;
    let mut stopped = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(tcp_port(&addr)).is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stopped, "the validator never stopped listening");
    for listing in ["models", "executors"] {
        let kept = run(&[listing, "--timeout-secs", "30"]).await.unwrap();
        let stderr = String::from_utf8_lossy(&kept.stderr);
        assert!(kept.status.success(), "{stderr}");
        assert!(String::from_utf8_lossy(&kept.stdout).contains("SmolLM2-135M-Instruct"));
        assert!(stderr.contains("using the executor remembered from a run"), "{stderr}");
    }
}

/// The loopback TCP address of `addr`.
fn tcp_port(addr: &Multiaddr) -> std::net::SocketAddr {
    use lloom_core::network::Protocol;
    let port = addr.iter().find_map(|p| if let Protocol::Tcp(n) = p { Some(n) } else { None });
    std::net::SocketAddr::from(([127, 0, 0, 1], port.unwrap()))
}

#[test]
fn unreachable_or_malformed_bootstrap_is_a_clear_error() {
    // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
    let nobody = "/ip4/127.0.0.1/tcp/9/p2p/16Uiu2HAmGcnVbTzZoBtRMqNa6vLUkX9MkxiH3V8bQ4cfRpBWs2AU";
    // An empty data directory: no executors remembered from an earlier run to fall back on.
    let data = tempfile::tempdir().unwrap();
    assert_cmd::Command::cargo_bin("lloom-client")
        .unwrap()
        .arg("--data-dir")
        .arg(data.path())
        .args(["models", "--no-mdns", "--timeout-secs", "2", "--bootstrap", nobody])
        .assert()
        .failure()
        .stderr(contains("no validator reachable"));
    assert_cmd::Command::cargo_bin("lloom-client")
        .unwrap()
        .args(["models", "--no-mdns", "--bootstrap", "/ip4/127.0.0.1/tcp/4001"])
        .assert()
        .failure()
        .stderr(contains("must end in /p2p/"));
}
