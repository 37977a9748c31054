//! `lloom-executor generate` and `bench` through the real binary and the real default model.
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

#[test]
fn bench_churn_moves_sequences_only_when_moving_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("lloom-executor")
        .unwrap()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--json", "bench", "--no-baseline", "--rounds", "1", "--streams", "5"])
        .args(["--max-tokens", "10", "--churn"])
        .timeout(std::time::Duration::from_secs(600))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let runs = report["churn"].as_array().unwrap();
    let order: Vec<(&str, bool)> = runs
        .iter()
        .map(|r| (r["scenario"].as_str().unwrap(), r["moving"].as_bool().unwrap()))
        .collect();
    // Moving, not, not, moving; each a refill and a drain run.
    let expected: Vec<(&str, bool)> = [true, false, false, true]
        .into_iter()
        .flat_map(|moving| [("refill", moving), ("drain", moving)])
        .collect();
    assert_eq!(order, expected);
    for run in runs {
        let moves = run["sequence_moves"].as_u64().unwrap();
        assert!(run["output_tokens"].as_u64().unwrap() > 0, "{run}");
        match (run["scenario"].as_str().unwrap(), run["moving"].as_bool().unwrap()) {
            (_, false) => assert_eq!(moves, 0, "{run}"),
            // A drain wave's lengths by slot are 2, 8, 4, 10 and 6 tokens. Slot 0 ends first,
            // at the bottom of the run, which breaks nothing; then slot 2 ends inside it, no
            // request comes to take it, and slot 4 moves down into it: once a wave at least.
            ("drain", true) => assert!(moves >= 3, "{run}"),
            _ => {}
        }
    }
}
