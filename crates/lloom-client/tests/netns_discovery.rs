//! Discovery across a real network interface: a validator in one network namespace, the client
//! in another, joined by a veth pair the test creates (and removes). Multicast never leaves
//! that pair.
//!
//! 1. mDNS alone: `lloom-client models` with no bootstrap address finds the validator.
//! 2. TCP and QUIC across the veth: the same with explicit bootstrap addresses, mDNS off.
//! 3. No validator at all: the validator stops, an executor (the default model) starts in its
//!    namespace, and the client finds it by mDNS alone and lists its model, which the executor
//!    describes itself.
//!
//! Creating namespaces needs root (CAP_NET_ADMIN). Without it the test prints a visible
//! SKIPPED line, unless `LLOOM_REQUIRE_NETNS=1` (set by `scripts/test.sh` when running as root),
//! in which case it fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod netns;

use std::time::Duration;

use netns::{Namespaces, in_ns, listen_addrs, new_hex_key, read_until, spawn_logged};

const ADDR_A: &str = "10.77.0.1";
const ADDR_B: &str = "10.77.0.2";
/// Log filter of the nodes: enough to tell, when a step fails, whether mDNS answered, and
/// why dials failed or connections closed (a run once saw the client discover the executor by
/// mDNS and connect to nothing for 20 s, and said no more).
const MDNS_LOG: &str =
    "info,libp2p_mdns=debug,libp2p_kad=error,libp2p_swarm=debug,lloom_core::network=debug";

/// Two namespaces joined by a veth pair, with a route for multicast (mDNS) over it.
fn testbed() -> Option<(Namespaces, String, String)> {
    let mut spaces = Namespaces::default();
    let a = spaces.add("a")?;
    let b = spaces.add("b")?;
    let ok = spaces.link((&a, ADDR_A), (&b, ADDR_B))
        && [(&a, ADDR_A), (&b, ADDR_B)].iter().all(|(ns, addr)| {
            Namespaces::device_of(ns, addr).is_some_and(|dev| {
                netns::ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", &dev])
            })
        });
    ok.then_some((spaces, a, b))
}

#[test]
fn discovery_across_namespaces_by_mdns_tcp_and_quic() {
    let Some((_spaces, a, b)) = testbed() else {
        netns::unavailable("discovery_across_namespaces", "cannot create network namespaces");
        return;
    };
    let validator_bin = assert_cmd::cargo::cargo_bin("lloom-validator");
    let client_bin = assert_cmd::cargo::cargo_bin("lloom-client");
    assert!(validator_bin.exists(), "build lloom-validator first (cargo test --workspace does)");

    let dir = tempfile::tempdir().unwrap();
    let key = new_hex_key(&validator_bin, &dir.path().join("validator.key"));

    // The validator in namespace A, mDNS on, listening on the veth address (TCP and QUIC).
    let (validator, lines) = spawn_logged(
        in_ns(&a, &validator_bin)
            .env("LLOOM_LOG", MDNS_LOG)
            .arg("--key")
            .arg(&key)
            .args(["start", "--listen"])
            .arg(format!("/ip4/{ADDR_A}/tcp/0"))
            .arg("--listen")
            .arg(format!("/ip4/{ADDR_A}/udp/0/quic-v1")),
        &dir.path().join("validator.log"),
    );
    let addrs = listen_addrs(&read_until(&lines, Duration::from_secs(30), |seen| {
        listen_addrs(seen).len() >= 2
    }));
    let tcp = addrs.iter().find(|a| a.contains("/tcp/")).expect("tcp listen address").clone();
    let quic = addrs.iter().find(|a| a.contains("/quic-v1")).expect("quic listen address").clone();

    let models = |extra: &[&str]| {
        let out = in_ns(&b, &client_bin)
            .env("LLOOM_LOG", MDNS_LOG)
            .args(["models", "--timeout-secs", "20"])
            .args(extra)
            .output()
            .unwrap();
        if !out.status.success() {
            // Show what the nodes on the other side logged: whether mDNS answered.
            let log = |name| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
            panic!(
                "client {extra:?} failed: {}\nvalidator log:\n{}\nexecutor log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                log("validator.log"),
                log("executor.log")
            );
        }
        String::from_utf8(out.stdout).unwrap()
    };
    // 1. mDNS alone, across the veth pair.
    assert!(models(&[]).contains("no models on offer"));
    // 2. Explicit TCP and QUIC across the veth pair.
    assert!(models(&["--no-mdns", "--bootstrap", &tcp]).contains("no models on offer"));
    assert!(models(&["--no-mdns", "--bootstrap", &quic]).contains("no models on offer"));

    // 3. The validator goes away; an executor on the LAN is found by mDNS alone.
    drop(validator);
    let executor_bin = assert_cmd::cargo::cargo_bin("lloom-executor");
    let executor_key = new_hex_key(&executor_bin, &dir.path().join("executor.key"));
    let (_executor, lines) = spawn_logged(
        in_ns(&a, &executor_bin)
            .env("LLOOM_LOG", MDNS_LOG)
            .arg("--key")
            .arg(&executor_key)
            .arg("--data-dir")
            .arg(dir.path().join("executor"))
            .args(["start", "--listen"])
            .arg(format!("/ip4/{ADDR_A}/tcp/0"))
            .args(["--n-ctx", "1024", "--max-sequences", "1"]),
        &dir.path().join("executor.log"),
    );
    let seen = read_until(&lines, Duration::from_secs(60), |seen| !listen_addrs(seen).is_empty());
    assert!(!listen_addrs(&seen).is_empty(), "executor did not start: {seen:?}");
    let listed = models(&[]);
    assert!(listed.contains("SmolLM2-135M-Instruct"), "{listed}");
}
