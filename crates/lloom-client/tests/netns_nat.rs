//! An executor behind NAT, across real interfaces: three network namespaces the test creates
//! (and removes) —
//!
//! ```text
//!   public 10.78.0.1 ── 10.78.0.254 router 10.79.0.1 ── 10.79.0.2 private
//!   validator, client        (nftables masquerade)          executor
//! ```
//!
//! The public side has no route into the private network, so the executor's own addresses are
//! unreachable from there; the executor can dial out through the router's NAT.
//!
//! 1. An executor with `--relay never` is listed by the validator but cannot be reached: the
//!    client's chat fails.
//! 2. An executor with the default `--relay auto`: AutoNAT (the validator dials back and
//!    fails) finds it private, it reserves a relayed address on the validator and announces it,
//!    and a client (the OpenAI-compatible gateway, which stays up) gets a verified answer
//!    through the relay. DCUtR then replaces the relayed connection with a direct one (the
//!    executor's metrics count the hole punch).
//!
//! Needs root (CAP_NET_ADMIN) and `nft` (nftables, installed by scripts/setup-system.sh).
//! Without them the test prints a visible SKIPPED line, unless `LLOOM_REQUIRE_NETNS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod netns;

use std::path::Path;
use std::time::{Duration, Instant};

use netns::{Namespaces, in_ns, listen_addrs, log, new_hex_key, read_until, spawn_logged};

const PUBLIC: &str = "10.78.0.1";
const ROUTER_PUBLIC: &str = "10.78.0.254";
const ROUTER_PRIVATE: &str = "10.79.0.1";
const PRIVATE: &str = "10.79.0.2";

/// The three namespaces: (public, router, private).
fn nat_testbed() -> Result<(Namespaces, String, String), String> {
    if !netns::run("nft", &["--version"]) {
        return Err("nft (nftables) is not installed".into());
    }
    let mut spaces = Namespaces::default();
    let public = spaces.add("pub").ok_or("cannot create network namespaces")?;
    let router = spaces.add("rtr").ok_or("cannot create network namespaces")?;
    let private = spaces.add("priv").ok_or("cannot create network namespaces")?;
    let linked = spaces.link((&public, PUBLIC), (&router, ROUTER_PUBLIC))
        && spaces.link((&router, ROUTER_PRIVATE), (&private, PRIVATE))
        && netns::ip(&["-n", &private, "route", "add", "default", "via", ROUTER_PRIVATE]);
    if !linked {
        return Err("cannot link the namespaces".into());
    }
    let outside = Namespaces::device_of(&router, ROUTER_PUBLIC).ok_or("no router device")?;
    let forwarding = in_ns(&router, "sh")
        .args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        .status()
        .is_ok_and(|s| s.success());
    let nat = [
        vec!["add", "table", "ip", "nat"],
        vec!["add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority 100 ; }"],
        vec!["add", "rule", "ip", "nat", "post", "oifname", &outside, "masquerade"],
    ]
    .iter()
    .all(|args| in_ns(&router, "nft").args(args).status().is_ok_and(|s| s.success()));
    if !forwarding || !nat {
        return Err("cannot set up forwarding and NAT in the router namespace".into());
    }
    Ok((spaces, public, private))
}

/// `GET URL` from inside `ns`, with curl.
fn fetch(ns: &str, url: &str) -> String {
    let out = in_ns(ns, "curl").args(["-sf", "--max-time", "5", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the unlabelled metric `name` on `page`.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

/// Polls `url` in `ns` until `done` holds for the page, within `limit`; returns the last page.
fn poll_metrics(ns: &str, url: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let page = fetch(ns, url);
        if done(&page) || Instant::now() >= deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Starts an executor in `ns` with extra flags; returns it, its metrics URL and its log path.
fn start_executor(
    ns: &str,
    dir: &Path,
    name: &str,
    bootstrap: &str,
    extra: &[&str],
) -> (netns::Running, String, std::path::PathBuf) {
    let bin = assert_cmd::cargo::cargo_bin("lloom-executor");
    let key = new_hex_key(&bin, &dir.join(format!("{name}.key")));
    let log_path = dir.join(format!("{name}.log"));
    let (running, lines) = spawn_logged(
        in_ns(ns, &bin)
            .env("LLOOM_LOG", std::env::var("NAT_TEST_LOG").unwrap_or("info".into()))
            .arg("--key")
            .arg(&key)
            .arg("--data-dir")
            .arg(dir.join(name))
            .args(["start", "--no-mdns", "--bootstrap", bootstrap])
            .args(["--listen", &format!("/ip4/{PRIVATE}/tcp/0")])
            .args(["--listen", &format!("/ip4/{PRIVATE}/udp/0/quic-v1")])
            .args(["--metrics-listen", &format!("{PRIVATE}:0")])
            .args(["--n-ctx", "1024", "--max-sequences", "1", "--heartbeat-secs", "1"])
            .args(extra),
        &log_path,
    );
    let seen = read_until(&lines, Duration::from_secs(60), |seen| {
        seen.iter().any(|l| l.starts_with("metrics on"))
    });
    let url = seen
        .iter()
        .find_map(|l| l.strip_prefix("metrics on "))
        .unwrap_or_else(|| panic!("{name} did not start: {seen:?}\n{}", log(&log_path)))
        .to_owned();
    (running, url, log_path)
}

#[test]
fn an_executor_behind_nat_is_reached_through_the_relay_and_hole_punched() {
    let (_spaces, public, private) = match nat_testbed() {
        Ok(bed) => bed,
        Err(why) => return netns::unavailable("an_executor_behind_nat", &why),
    };
    let dir = tempfile::tempdir().unwrap();
    let validator_bin = assert_cmd::cargo::cargo_bin("lloom-validator");
    let client_bin = assert_cmd::cargo::cargo_bin("lloom-client");
    let key = new_hex_key(&validator_bin, &dir.path().join("validator.key"));
    let validator_log = dir.path().join("validator.log");
    let (_validator, lines) = spawn_logged(
        in_ns(&public, &validator_bin)
            .env("LLOOM_LOG", "info")
            .arg("--key")
            .arg(&key)
            .args(["start", "--no-mdns", "--nat-probe-private-addrs"])
            .args(["--listen", &format!("/ip4/{PUBLIC}/tcp/0")])
            .args(["--listen", &format!("/ip4/{PUBLIC}/udp/0/quic-v1")]),
        &validator_log,
    );
    let addrs =
        listen_addrs(&read_until(&lines, Duration::from_secs(30), |s| listen_addrs(s).len() >= 2));
    let bootstrap = addrs.iter().find(|a| a.contains("/quic-v1")).expect("quic address").clone();

    let chat = |tries: u32| {
        let mut last = None;
        for _ in 0..tries {
            let out = in_ns(&public, &client_bin)
                .env("LLOOM_LOG", "info")
                .arg("--data-dir")
                .arg(dir.path().join("client"))
                .args(["chat", "What is the capital of France?", "--max-tokens", "12"])
                .args(["--no-mdns", "--bootstrap", &bootstrap, "--timeout-secs", "10"])
                .args(["--p2p-listen", &format!("/ip4/{PUBLIC}/udp/0/quic-v1")])
                .args(["--p2p-listen", &format!("/ip4/{PUBLIC}/tcp/0")])
                .args(["--request-timeout-secs", "20", "--verbose"])
                .output()
                .unwrap();
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            last = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(last.unwrap_or_default())
    };

    // 1. No relay: listed, but unreachable from the public side.
    let (unreachable, url, _) =
        start_executor(&private, dir.path(), "unreachable", &bootstrap, &["--relay", "never"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let out = in_ns(&public, &client_bin)
            .args(["models", "--no-mdns", "--bootstrap", &bootstrap, "--timeout-secs", "10"])
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        if table.contains("SmolLM2-135M-Instruct") || Instant::now() >= deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(listed.contains("SmolLM2-135M-Instruct"), "the validator lists it: {listed}");
    let page = fetch(&private, &url);
    assert_eq!(metric(&page, "lloom_network_relay_reservations_total"), Some(0.0), "{page}");
    let refused = chat(1).expect_err("an executor behind NAT without a relay is unreachable");
    assert!(refused.contains("unreachable") || refused.contains("connection"), "{refused}");
    drop(unreachable);

    // 2. Relay auto: AutoNAT finds the executor private, it reserves on the validator.
    let (_executor, url, executor_log) = start_executor(
        &private,
        dir.path(),
        "behind-nat",
        &bootstrap,
        &["--nat-probe-private-addrs"],
    );
    let page = poll_metrics(&private, &url, Duration::from_secs(40), |p| {
        metric(p, "lloom_network_relay_reservations_total").is_some_and(|n| n >= 1.0)
    });
    assert!(
        page.contains("lloom_network_reachable{state=\"private\"} 1"),
        "AutoNAT did not find the executor private:\n{page}\n{}",
        log(&executor_log)
    );
    assert_eq!(metric(&page, "lloom_network_relay_reservations_total"), Some(1.0), "{page}");

    // A long-running client (the OpenAI-compatible gateway) reaches it through the relay; the
    // registry may still hold the announcement from before the reservation for one heartbeat,
    // so a few tries.
    let gateway_log = dir.path().join("gateway.log");
    let (_gateway, lines) = spawn_logged(
        in_ns(&public, &client_bin)
            .env("LLOOM_LOG", "info")
            .arg("--data-dir")
            .arg(dir.path().join("gateway"))
            .args(["serve", "--listen", "127.0.0.1:0", "--request-timeout-secs", "20"])
            .args(["--no-mdns", "--bootstrap", &bootstrap])
            .args(["--p2p-listen", &format!("/ip4/{PUBLIC}/udp/0/quic-v1")])
            .args(["--p2p-listen", &format!("/ip4/{PUBLIC}/tcp/0")]),
        &gateway_log,
    );
    let seen = read_until(&lines, Duration::from_secs(30), |s| {
        s.iter().any(|l| l.starts_with("OpenAI-compatible gateway on"))
    });
    let api = seen
        .iter()
        .find_map(|l| l.strip_prefix("OpenAI-compatible gateway on ")?.split(' ').next())
        .unwrap_or_else(|| panic!("gateway did not start: {seen:?}\n{}", log(&gateway_log)))
        .to_owned();
    let body = r#"{"model":"SmolLM2-135M-Instruct","max_tokens":12,"temperature":0,
        "messages":[{"role":"user","content":"What is the capital of France?"}]}"#;
    let mut answer = String::new();
    // A try on the stale announcement fails once its private addresses failed to dial (QUIC
    // gives up after its handshake timeout) and, unless the registry lists the relayed address
    // by then, cools the executor down for 5 s: the tries span more than that, within a bound.
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let out = in_ns(&public, "curl")
            .args(["-sf", "--max-time", "25", "-H", "content-type: application/json"])
            .args(["-d", body, &format!("{api}/chat/completions")])
            .output()
            .unwrap();
        answer = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        answer.contains("Paris"),
        "no answer through the relay: {answer}\ngateway: {}\nexecutor: {}",
        log(&gateway_log),
        log(&executor_log)
    );

    // DCUtR replaces the relayed connection with a direct one.
    let page = poll_metrics(&private, &url, Duration::from_secs(30), |p| {
        metric(p, "lloom_network_hole_punches_succeeded_total").is_some_and(|n| n >= 1.0)
    });
    assert!(
        metric(&page, "lloom_network_relayed_connections_total").is_some_and(|n| n >= 1.0),
        "{page}"
    );
    assert!(
        metric(&page, "lloom_network_hole_punches_succeeded_total").is_some_and(|n| n >= 1.0),
        "no direct connection after the relayed one:\n{page}\n{}",
        log(&executor_log)
    );
}
