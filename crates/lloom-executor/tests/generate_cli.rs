//! `lloom-executor generate` through the real binary and the real default model.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use assert_cmd::Command;
use predicates::str::contains;

#[test]
fn generate_answers_with_usage() {
    let out = Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["--json", "generate", "What is the capital of France?", "--max-tokens", "32"])
        .timeout(std::time::Duration::from_secs(600))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(report["text"].as_str().unwrap().contains("Paris"), "{report}");
    assert!(report["output_tokens"].as_u64().unwrap() <= 32);
    assert!(report["input_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn generate_rejects_bad_input() {
    Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["generate", "hi", "--temperature", "9"])
        .assert()
        .failure()
        .stderr(contains("temperature"));
    Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["generate", "hi", "--model-path", "/nonexistent/model.gguf"])
        .assert()
        .failure()
        .stderr(contains("no model file"));
}
