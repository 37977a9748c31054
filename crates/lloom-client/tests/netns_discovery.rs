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

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Two namespaces joined by a veth pair; removed on drop (removing a namespace removes its
/// end of the veth pair).
struct Testbed {
    a: String,
    b: String,
}

impl Testbed {
    const ADDR_A: &'static str = "10.77.0.1";
    const ADDR_B: &'static str = "10.77.0.2";

    fn create() -> Option<Self> {
        let id = std::process::id();
        let bed = Self { a: format!("lloom-a-{id}"), b: format!("lloom-b-{id}") };
        let (va, vb) = (format!("lva{}", id % 100_000), format!("lvb{}", id % 100_000));
        if !ip(&["netns", "add", &bed.a]) {
            return None;
        }
        let ok = ip(&["netns", "add", &bed.b])
            && ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
            && ip(&["link", "set", &va, "netns", &bed.a])
            && ip(&["link", "set", &vb, "netns", &bed.b])
            && [(&bed.a, &va, Self::ADDR_A), (&bed.b, &vb, Self::ADDR_B)].iter().all(
                |(ns, dev, addr)| {
                    ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])
                        && ip(&["-n", ns, "link", "set", dev, "up"])
                        && ip(&["-n", ns, "link", "set", "lo", "up"])
                        && ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])
                },
            );
        ok.then_some(bed)
    }

    fn exec(&self, ns: &str, program: &PathBuf) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.a]);
        ip(&["netns", "del", &self.b]);
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Runs `BIN --key PATH keys new --format hex`; returns the path.
fn new_hex_key(bin: &PathBuf, path: &std::path::Path) -> PathBuf {
    let made =
        Command::new(bin).arg("--key").arg(path).args(["keys", "new", "--format", "hex"]).output();
    assert!(made.unwrap().status.success(), "{} keys new failed", bin.display());
    path.to_owned()
}

#[test]
fn discovery_across_namespaces_by_mdns_tcp_and_quic() {
    let Some(bed) = Testbed::create() else {
        assert!(
            std::env::var_os("LLOOM_REQUIRE_NETNS").is_none(),
            "LLOOM_REQUIRE_NETNS is set but network namespaces cannot be created"
        );
        eprintln!(
            "SKIPPED discovery_across_namespaces: cannot create network namespaces (needs root)"
        );
        return;
    };
    let validator_bin = assert_cmd::cargo::cargo_bin("lloom-validator");
    let client_bin = assert_cmd::cargo::cargo_bin("lloom-client");
    assert!(validator_bin.exists(), "build lloom-validator first (cargo test --workspace does)");

    let dir = tempfile::tempdir().unwrap();
    let key = new_hex_key(&validator_bin, &dir.path().join("validator.key"));

    // The validator in namespace A, mDNS on, listening on the veth address (TCP and QUIC).
    let mut child = bed
        .exec(&bed.a, &validator_bin)
        .arg("--key")
        .arg(&key)
        .args(["start", "--listen"])
        .arg(format!("/ip4/{}/tcp/0", Testbed::ADDR_A))
        .arg("--listen")
        .arg(format!("/ip4/{}/udp/0/quic-v1", Testbed::ADDR_A))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let validator = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let (mut tcp, mut quic) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (tcp.is_none() || quic.is_none()) && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(addr) = line.strip_prefix("listening on ") {
            if addr.contains("/tcp/") {
                tcp = Some(addr.to_owned());
            } else if addr.contains("/quic-v1/") {
                quic = Some(addr.to_owned());
            }
        }
    }
    let (tcp, quic) = (tcp.expect("tcp listen address"), quic.expect("quic listen address"));

    let models = |extra: &[&str]| {
        let out = bed
            .exec(&bed.b, &client_bin)
            .args(["models", "--timeout-secs", "20"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "client {extra:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
    let mut child = bed
        .exec(&bed.a, &executor_bin)
        .arg("--key")
        .arg(&executor_key)
        .arg("--data-dir")
        .arg(dir.path().join("executor"))
        .args(["start", "--listen"])
        .arg(format!("/ip4/{}/tcp/0", Testbed::ADDR_A))
        .args(["--n-ctx", "1024", "--max-sequences", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _executor = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.starts_with("listening on") {
            break;
        }
    }
    let listed = models(&[]);
    assert!(listed.contains("SmolLM2-135M-Instruct"), "{listed}");
}
