//! `scripts/devnet.sh`: anvil, the contract, a validator and an executor wired together; a
//! client chats through it with the real binaries, the running executor settles by itself, and
//! an independent read with foundry's `cast` shows exactly the receipt's cost earned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn the_devnet_serves_and_settles_with_the_real_binaries() {
    let state = tempfile::tempdir().unwrap();
    let mut devnet = Command::new(repo().join("scripts/devnet.sh"))
        .env("LLOOM_DEVNET_DIR", state.path())
        .args(["--n-ctx", "2048"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(devnet.stdout.take().unwrap()).lines();
    let mut exports = None;
    let mut client_bin = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("export ") {
            exports = Some(rest.to_owned());
        }
        if line.contains("/lloom-client ") {
            client_bin = line.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let exports = exports.expect("the devnet printed its settings");
    let env: Vec<(String, String)> = exports
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
    let client_bin = client_bin.unwrap();
    let bin_dir = Path::new(&client_bin).parent().unwrap().to_owned();
    let key1 = state.path().join("key1");

    let output = Command::new(&client_bin)
        .envs(env.clone())
        .arg("--key")
        .arg(&key1)
        .arg("--data-dir")
        .arg(state.path().join("client"))
        .args([
            "--json",
            "chat",
            "What is the capital of France?",
            "--no-mdns",
            "--max-tokens",
            "24",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let receipt: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(receipt["text"].as_str().unwrap().contains("Paris"), "{receipt}");
    let cost: u128 = receipt["cost_wei"].as_str().unwrap().parse().unwrap();
    let executor = receipt["executor"].as_str().unwrap().to_owned();

    // The executor settles within its 10 s interval; read the contract with cast.
    let cast = repo().join("node_modules/.bin/cast");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = Command::new(&cast)
            .args(["call", &get("LLOOM_CONTRACT"), "earningsOf(address)(uint256)", &executor])
            .args(["--rpc-url", &get("LLOOM_RPC_URL")])
            .output()
            .unwrap();
        let earned: u128 = String::from_utf8_lossy(&read.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        if earned == cost {
            break;
        }
        assert!(Instant::now() < deadline, "earned {earned} on chain, receipt says {cost}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The executor's own view agrees.
    let earnings = Command::new(bin_dir.join("lloom-executor"))
        .envs(env)
        .arg("--key")
        .arg(state.path().join("key2"))
        .args(["chain", "earnings"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&earnings.stdout).contains(&format!("({cost} wei)")));

    Command::new("kill").arg("-TERM").arg(devnet.id().to_string()).status().unwrap();
    let _ = devnet.wait();
}
