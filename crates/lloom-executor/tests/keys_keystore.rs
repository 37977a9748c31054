//! `lloom-executor keys` with an encrypted keystore, driven through the real binary.
#![allow(
    clippy::panic,
    clippy::needless_pass_by_value,
    clippy::cast_possible_truncation,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use assert_cmd::Command;
use predicates::str::contains;

// Anvil's first default key: public test material, never a real secret.
const SECRET: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn executor(dir: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("lloom-executor").unwrap();
    cmd.env_clear().env("LLOOM_DATA_DIR", dir).env("LLOOM_KEY_PASSWORD", "s3cret pass");
    cmd
}

#[test]
fn version_and_help() {
    Command::cargo_bin("lloom-executor")
        .unwrap()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("lloom-executor {}\n", env!("CARGO_PKG_VERSION")));
    Command::cargo_bin("lloom-executor")
        .unwrap()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("keys"));
}

#[test]
fn import_then_show_from_keystore_never_prints_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = executor(dir.path())
        .env("IMPORT_ME", SECRET)
        .args(["--json", "keys", "import", "--private-key-env", "IMPORT_ME"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["address"], ADDRESS);
    assert_eq!(report["action"], "imported");
    assert!(!stdout.contains(SECRET) && !String::from_utf8_lossy(&out.stderr).contains(SECRET));

    let keystore = std::fs::read_to_string(dir.path().join("key.json")).unwrap();
    assert!(keystore.contains("scrypt") && !keystore.contains(SECRET));

    executor(dir.path()).args(["keys", "show"]).assert().success().stdout(contains(ADDRESS));
}

#[test]
fn wrong_or_missing_password_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    executor(dir.path()).args(["keys", "new"]).assert().success();
    executor(dir.path())
        .env("LLOOM_KEY_PASSWORD", "wrong")
        .args(["keys", "show"])
        .assert()
        .failure()
        .stderr(contains("keystore error"));
    executor(dir.path())
        .env_remove("LLOOM_KEY_PASSWORD")
        .args(["keys", "show"])
        .assert()
        .failure()
        .stderr(contains("LLOOM_KEY_PASSWORD"));
}
