//! Discovery across a real network interface: a validator in one network namespace, the client
//! in another, joined by a veth pair the test creates (and removes). Multicast never leaves
//! that pair.
//!
//! 1. mDNS alone: `lloom-client models` with no bootstrap address finds the validator.
//! 2. TCP and QUIC across the veth: the same with explicit bootstrap addresses, mDNS off.
//! 3. No validator at all: the validator stops, an executor (the default model) starts in its
//!    namespace, and the client finds it by mDNS alone and lists its model, which the executor
//!    describes itself.
//! 4. Refused dials: while nftables rules in the client's namespace reset every connection
//!    between the two sides, mDNS still finds the validator, and the first dials (and the one
//!    Kademlia makes half a second later) fail; once the rules are lifted, 2.5 s on, the
//!    redials with backoff connect. Without them the client never connects.
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

/// Starts a validator in `ns` with mDNS on, listening on `listen` (its log in `dir`); returns
/// it and its listen addresses, once it has one for each of `listen`.
fn spawn_validator(
    ns: &str,
    dir: &std::path::Path,
    listen: &[String],
) -> (netns::Running, Vec<String>) {
    let validator_bin = assert_cmd::cargo::cargo_bin("lloom-validator");
    assert!(validator_bin.exists(), "build lloom-validator first (cargo test --workspace does)");
    let key = new_hex_key(&validator_bin, &dir.join("validator.key"));
    let mut command = in_ns(ns, &validator_bin);
    command.env("LLOOM_LOG", MDNS_LOG).arg("--key").arg(&key).arg("start");
    for addr in listen {
        command.arg("--listen").arg(addr);
    }
    let (validator, lines) = spawn_logged(&mut command, &dir.join("validator.log"));
    let seen = read_until(&lines, Duration::from_secs(30), |seen| {
        listen_addrs(seen).len() >= listen.len()
    });
    let addrs = listen_addrs(&seen);
    assert!(addrs.len() >= listen.len(), "validator did not start: {seen:?}");
    (validator, addrs)
}

#[test]
fn discovery_across_namespaces_by_mdns_tcp_and_quic() {
    let Some((_spaces, a, b)) = testbed() else {
        netns::unavailable("discovery_across_namespaces", "cannot create network namespaces");
        return;
    };
    let client_bin = assert_cmd::cargo::cargo_bin("lloom-client");

    let dir = tempfile::tempdir().unwrap();

    // The validator in namespace A, mDNS on, listening on the veth address (TCP and QUIC).
    let tcp_and_quic = [format!("/ip4/{ADDR_A}/tcp/0"), format!("/ip4/{ADDR_A}/udp/0/quic-v1")];
    let (validator, addrs) = spawn_validator(&a, dir.path(), &tcp_and_quic);
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

/// Polls the log at `path` until it contains `needle` or `limit` passes.
fn log_shows(path: &std::path::Path, needle: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if netns::log(path).contains(needle) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// mDNS reports a peer once. When the dials that follow are refused (here by a firewall rule
/// in the client's namespace, lifted a moment later), the client dials again with backoff
/// instead of waiting minutes for mDNS to report the peer anew.
#[test]
fn a_peer_found_by_mdns_is_dialled_again_after_a_refused_dial() {
    if !netns::run("nft", &["--version"]) {
        netns::unavailable("mdns_redial", "nft (nftables) is not installed");
        return;
    }
    let Some((_spaces, a, b)) = testbed() else {
        netns::unavailable("mdns_redial", "cannot create network namespaces");
        return;
    };
    let client_bin = assert_cmd::cargo::cargo_bin("lloom-client");
    let dir = tempfile::tempdir().unwrap();
    let (_validator, _) = spawn_validator(&a, dir.path(), &[format!("/ip4/{ADDR_A}/tcp/0")]);

    // A connection between the two sides is refused at once, whichever side dials (each
    // side's mDNS finds the other): its SYN is answered with a reset. mDNS (UDP) passes.
    let nft = |args: &str| {
        let args: Vec<&str> = args.split_whitespace().collect();
        assert!(
            netns::run("ip", &[&["netns", "exec", &b, "nft"], &args[..]].concat()),
            "nft {args:?}"
        );
    };
    nft("add table inet lloomtest");
    nft("add chain inet lloomtest out { type filter hook output priority 0 ; }");
    nft("add chain inet lloomtest in { type filter hook input priority 0 ; }");
    nft(&format!(
        "add rule inet lloomtest out ip daddr {ADDR_A} tcp flags & (syn|ack) == syn reject with tcp reset"
    ));
    nft(&format!(
        "add rule inet lloomtest in ip saddr {ADDR_A} tcp flags & (syn|ack) == syn reject with tcp reset"
    ));

    let client_log = dir.path().join("client.log");
    let (mut client, output) = spawn_logged(
        in_ns(&b, &client_bin).env("LLOOM_LOG", MDNS_LOG).args(["models", "--timeout-secs", "25"]),
        &client_log,
    );
    let refused = log_shows(&client_log, "dial failed (", Duration::from_secs(15));
    // Past the one dial Kademlia makes 0.5 s after it learns of a peer, and the first redial.
    std::thread::sleep(Duration::from_millis(2500));
    nft("delete table inet lloomtest");
    assert!(
        refused,
        "the client's first dial was not refused:\nclient log:\n{}\nvalidator log:\n{}",
        netns::log(&client_log),
        netns::log(&dir.path().join("validator.log"))
    );

    // The next dial, at most 16 s later, gets through.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = client.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "client still running after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let printed = read_until(&output, Duration::from_secs(1), |_| false).join("\n");
    assert!(
        status.success() && printed.contains("no models on offer"),
        "client did not connect after the rule was lifted ({status}):\n{printed}\nclient log:\n{}",
        netns::log(&client_log)
    );
}
