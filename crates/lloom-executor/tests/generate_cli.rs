//! `lloom-executor generate` and `bench` through the real binary and the real default model.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use assert_cmd::Command;
use predicates::str::contains;

/// The `--json` report of a successful `lloom-executor --json generate ARGS`, given `stdin`.
fn generate_json(args: &[&str], stdin: &str) -> serde_json::Value {
    let out = Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["--json", "generate"])
        .args(args)
        .write_stdin(stdin)
        .timeout(std::time::Duration::from_secs(600))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn generate_answers_with_usage() {
    // The prompt from standard input (`-`).
    let report = generate_json(&["-", "--max-tokens", "32"], "What is the capital of France?\n");
    assert!(report["text"].as_str().unwrap().contains("Paris"), "{report}");
    assert!(report["output_tokens"].as_u64().unwrap() <= 32);
    assert!(report["input_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn generate_holds_the_answer_to_a_json_schema_file() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("capital.json");
    let capital = r#"{"type":"object","properties":{"capital":{"type":"string","maxLength":40}},
        "required":["capital"],"additionalProperties":false}"#;
    std::fs::write(&schema, capital).unwrap();
    let question = "What is the capital of France? Answer in JSON.";
    let report = generate_json(
        &[question, "--max-tokens", "64", "--json-schema", schema.to_str().unwrap()],
        "",
    );
    let answer: serde_json::Value = serde_json::from_str(report["text"].as_str().unwrap()).unwrap();
    assert!(answer["capital"].is_string() && answer.as_object().unwrap().len() == 1, "{report}");

    std::fs::write(&schema, "[1, 2]").unwrap();
    Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["generate", "hi", "--json-schema", schema.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(contains("does not hold a JSON object"));
    Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["generate", "hi", "--json-object", "--json-schema", schema.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(contains("cannot be used with"));
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
        .args(["generate", "-"])
        .write_stdin("")
        .assert()
        .failure()
        .stderr(contains("the prompt on standard input is empty"));
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
        .args(["--max-tokens", "10", "--churn", "--json-object"])
        .timeout(std::time::Duration::from_secs(600))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    // The engine's own streams were held to JSON (the churn runs stay free text).
    assert_eq!(report["format"], "json_object");
    assert!(report["single"]["output_tokens"].as_u64().unwrap() > 0, "{report}");
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
