//! `lloom-client keys import` from stdin and from another keystore, through the real binary.
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

// Anvil's second default key: public test material.
const SECRET: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const ADDRESS: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

fn client(key: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("lloom-client").unwrap();
    cmd.env_clear().env("LLOOM_KEY_PASSWORD", "pw").arg("--key").arg(key);
    cmd
}

#[test]
fn import_from_stdin_and_from_keystore() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.json");
    client(&first)
        .args(["keys", "import", "--stdin"])
        .write_stdin(format!("{SECRET}\n"))
        .assert()
        .success()
        .stdout(contains(ADDRESS));

    let second = dir.path().join("b.key");
    client(&second)
        .args(["keys", "import", "--format", "hex", "--keystore"])
        .arg(&first)
        .assert()
        .success()
        .stdout(contains(ADDRESS));
    client(&second).args(["keys", "show"]).assert().success().stdout(contains(ADDRESS));
}

#[test]
fn bad_import_input_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.json");
    client(&key)
        .args(["keys", "import", "--stdin"])
        .write_stdin("not a key")
        .assert()
        .failure()
        .stderr(contains("invalid private key"));
    client(&key)
        .args(["keys", "import", "--private-key-env", "NOPE"])
        .assert()
        .failure()
        .stderr(contains("not set"));
    assert!(!key.exists(), "a failed import must not leave a key file");
}
