//! `lloom-validator keys` with a raw hex key file, driven through the real binary.
#![allow(
    clippy::panic,
    clippy::needless_pass_by_value,
    clippy::cast_possible_truncation,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::os::unix::fs::PermissionsExt;

use assert_cmd::Command;
use predicates::str::contains;

fn validator(key: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("lloom-validator").unwrap();
    cmd.env_clear().arg("--key").arg(key);
    cmd
}

#[test]
fn new_hex_key_is_0600_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("validator.key");
    let out = validator(&key).args(["--json", "keys", "new", "--format", "hex"]).assert().success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let address = report["address"].as_str().unwrap().to_owned();
    assert!(report["peer_id"].as_str().unwrap().starts_with("16Uiu2"), "secp256k1 peer id");

    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secret = std::fs::read_to_string(&key).unwrap();
    assert!(!String::from_utf8_lossy(&out.get_output().stdout).contains(secret.trim()));

    validator(&key).args(["keys", "show"]).assert().success().stdout(contains(&address));
    validator(&key)
        .args(["keys", "new", "--format", "hex"])
        .assert()
        .failure()
        .stderr(contains("refusing to overwrite"));
}

#[test]
fn missing_or_corrupt_key_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("absent.key");
    validator(&key).args(["keys", "show"]).assert().failure().stderr(contains("keys new"));

    std::fs::write(&key, "0xnothex").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    validator(&key)
        .args(["keys", "show"])
        .assert()
        .failure()
        .stderr(contains("invalid private key"));

    validator(&key)
        .args(["keys", "frobnicate"])
        .assert()
        .failure()
        .stderr(contains("unrecognized"));
}
