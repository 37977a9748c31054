//! `lloom-client chain ...` through the real binary against anvil: deploy, deposit, balance,
//! request a withdrawal (locked during the notice); bad amounts and a dead RPC are clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::unix::fs::PermissionsExt;

use assert_cmd::Command;
use lloom_core::chain::anvil::{Anvil, DEV_KEYS};
use predicates::str::contains;

fn client(key: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("lloom-client").unwrap();
    cmd.env_clear().arg("--key").arg(key).args(args);
    cmd
}

#[test]
fn deploy_deposit_balance_and_withdrawal_notice() {
    let anvil = Anvil::spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client.key");
    std::fs::write(&key, DEV_KEYS[1]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let output = client(&key, &["chain", "deploy", "--rpc-url", anvil.url()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let address = stdout
        .split_whitespace()
        .find(|w| w.starts_with("0x") && w.len() == 42)
        .unwrap_or_else(|| panic!("no address in {stdout}"))
        .to_owned();
    assert!(stdout.contains("on chain 31337"), "{stdout}");

    let at = ["--rpc-url", anvil.url(), "--contract", &address];
    client(&key, &[&["chain", "deposit", "0.5eth"][..], &at[..]].concat())
        .assert()
        .success()
        .stdout(contains("deposited 0.5 ETH"))
        .stdout(contains("escrow now 0.5 ETH"));
    client(&key, &[&["chain", "balance"][..], &at[..]].concat())
        .assert()
        .success()
        .stdout(contains("0.5 ETH (500000000000000000 wei)"));
    client(&key, &[&["chain", "request-withdrawal", "0.1eth"][..], &at[..]].concat())
        .assert()
        .success()
        .stdout(contains("withdrawal of 0.1 ETH requested"));
    // The notice period (one day by default) has not passed: the contract refuses.
    client(&key, &[&["chain", "withdraw"][..], &at[..]].concat())
        .assert()
        .failure()
        .stderr(contains("chain"));

    client(&key, &[&["chain", "deposit", "lots"][..], &at[..]].concat())
        .assert()
        .failure()
        .stderr(contains("`lots` is not an amount"));
    client(&key, &["chain", "balance", "--rpc-url", "http://127.0.0.1:9", "--contract", &address])
        .assert()
        .failure()
        .stderr(contains("chain:"));
}
