//! `lloom-validator start` through the real binary: it prints its listen multiaddrs with
//! `/p2p/<id>`, serves its health check when asked, logs JSON lines when asked, stops cleanly
//! on SIGINT, and refuses to start without a key or with a metrics address in use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use predicates::str::contains;

#[test]
fn start_prints_addresses_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("v.key");
    assert_cmd::Command::cargo_bin("lloom-validator")
        .unwrap()
        .arg("--key")
        .arg(&key)
        .args(["keys", "new", "--format", "hex"])
        .assert()
        .success();

    // Listen address and mDNS come from the configuration file.
    let config = dir.path().join("lloom.toml");
    std::fs::write(&config, "[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n")
        .unwrap();
    let mut child = Command::cargo_bin("lloom-validator")
        .unwrap()
        .arg("--key")
        .arg(&key)
        .arg("--config")
        .arg(&config)
        .args(["start", "--metrics-listen", "127.0.0.1:0"])
        .env("LLOOM_LOG", "info")
        .env("LLOOM_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut listening, mut metrics) = (None, None);
    while metrics.is_none() && Instant::now() < deadline {
        let Some(line) = lines.next() else { break };
        let line = line.unwrap();
        if line.starts_with("listening on /ip4/127.0.0.1/tcp/") && line.contains("/p2p/16Uiu2") {
            listening = Some(line);
        } else if let Some(url) = line.strip_prefix("metrics on http://") {
            metrics = url.strip_suffix("/metrics").map(str::to_owned);
        }
    }
    assert!(listening.is_some(), "no listen address printed");
    let metrics = metrics.expect("no metrics address printed");
    let health = get(&metrics, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#""status":"ok""#), "{health}");
    assert!(get(&metrics, "/metrics").contains("lloom_validator_up 1"));

    // A second validator asked to serve metrics on the same address refuses to start.
    assert_cmd::Command::cargo_bin("lloom-validator")
        .unwrap()
        .arg("--key")
        .arg(&key)
        .args(["start", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .args(["--metrics-listen", &metrics])
        .timeout(Duration::from_secs(30))
        .assert()
        .failure()
        .stderr(contains(format!("metrics on {metrics}")));

    let status = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(rest.iter().any(|l| l == "shutting down"), "{rest:?}");

    // With LLOOM_LOG_FORMAT=json every log line is a JSON object a collector can read.
    let logs = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let listening = events
        .iter()
        .find(|e| e["fields"]["message"] == "validator listening")
        .unwrap_or_else(|| panic!("no listening event in {logs}"));
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert!(listening["fields"]["addr"].as_str().unwrap().starts_with("/ip4/127.0.0.1/tcp/"));
    assert!(listening["timestamp"].is_string(), "{listening}");
}

/// A plain HTTP/1.1 GET of `path` on `addr`; the whole answer, status line first.
fn get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_bad_config_file_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lloom.toml");
    std::fs::write(&config, "[network]\nlisten_on = []\n").unwrap();
    assert_cmd::Command::cargo_bin("lloom-validator")
        .unwrap()
        .env_clear()
        .arg("--config")
        .arg(&config)
        .arg("start")
        .assert()
        .failure()
        .stderr(contains("listen_on"));
}

#[test]
fn start_without_a_key_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    assert_cmd::Command::cargo_bin("lloom-validator")
        .unwrap()
        .env_clear()
        .arg("--key")
        .arg(dir.path().join("missing.key"))
        .args(["start", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .assert()
        .failure()
        .stderr(contains("keys new"));
}
