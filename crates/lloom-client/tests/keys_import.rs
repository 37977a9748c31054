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

/// foundry's `cast` from the repo's `node_modules` (installed by `scripts/test.sh`).
fn cast() -> Option<std::path::PathBuf> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/cast");
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("LLOOM_REQUIRE_CAST").is_none(), "cast required but not installed");
    eprintln!("SKIPPED keystore interop with cast: `cast` not installed");
    None
}

#[test]
fn keystores_interoperate_with_foundry_cast() {
    let Some(cast) = cast() else { return };
    let dir = tempfile::tempdir().unwrap();

    // cast → lloom: a keystore made by `cast wallet new` imports with the same password.
    let out = std::process::Command::new(&cast)
        .args(["wallet", "new"])
        .arg(dir.path())
        .args(["made-by-cast", "--unsafe-password", "pw"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cast_says = String::from_utf8_lossy(&out.stdout).to_string();
    let imported = dir.path().join("imported.json");
    let report = client(&imported)
        .args(["--json", "keys", "import", "--keystore"])
        .arg(dir.path().join("made-by-cast"))
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&report.get_output().stdout).unwrap();
    let address = report["address"].as_str().unwrap();
    assert!(cast_says.contains(address), "cast printed {cast_says}, lloom loaded {address}");

    // lloom → cast: cast decrypts the keystore lloom wrote and derives the same address.
    let out = std::process::Command::new(&cast)
        .args(["wallet", "address", "--keystore"])
        .arg(&imported)
        .args(["--password", "pw"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), address);
}
