//! The one-command demo, in-process and through its binary: a real local network answers
//! "What is the capital of France?" with the real default model, and the receipt verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use assert_cmd::Command;
use clap::Parser;
use lloom_demo::{DemoArgs, run};
use predicates::str::contains;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_streams_an_answer_about_paris_and_prints_the_verified_receipt() {
    let state = tempfile::tempdir().unwrap();
    let args = DemoArgs::parse_from(["lloom-demo", "--state-dir", state.path().to_str().unwrap()]);
    let mut out = Vec::new();
    run(&args, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("> What is the capital of France?"), "{out}");
    assert!(out.contains("Paris"), "{out}");
    for needle in [
        "verified receipt",
        "cost ",
        "✓ content hash matches the streamed text",
        "✓ signer is the chosen executor",
        "✓ the executor stored the same receipt durably",
        "No chain is configured, so receipts stay in the executor's store",
        "1 stored, 1 unsettled",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn the_demo_binary_answers_in_json() {
    let state = tempfile::tempdir().unwrap();
    let output = Command::cargo_bin("lloom-demo")
        .unwrap()
        .args(["--json", "--max-tokens", "32", "What is the capital of France?"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["text"].as_str().unwrap().contains("Paris"), "{report}");
    assert_eq!(report["executor_stored_receipt"], true);
    assert!(report["output_tokens"].as_u64().unwrap() <= 32);
    let cost: u128 = report["cost_wei"].as_str().unwrap().parse().unwrap();
    let expected = report["input_tokens"].as_u64().unwrap() as u128 * 1000
        + report["output_tokens"].as_u64().unwrap() as u128 * 2000;
    assert_eq!(cost, expected);
}

#[test]
fn bad_demo_input_is_a_clear_error() {
    Command::cargo_bin("lloom-demo")
        .unwrap()
        .args([
            "--model-path",
            "/nonexistent/model.gguf",
            "--state-dir",
            "/tmp/lloom-demo-test-unused",
        ])
        .assert()
        .failure()
        .stderr(contains("no model file at /nonexistent/model.gguf"));
    Command::cargo_bin("lloom-demo")
        .unwrap()
        .args(["--temperature", "9"])
        .assert()
        .failure()
        .stderr(contains("temperature"));
}
