//! Helpers of the network-namespace tests: namespaces and veth pairs that the test creates and
//! removes, node processes run inside them, and the visible skip when namespaces cannot be
//! created (no root). Multicast never leaves the veth pairs these tests create.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `ip ARGS`; true on success.
pub fn ip(args: &[&str]) -> bool {
    run("ip", args)
}

/// Runs `PROGRAM ARGS` quietly; true on success.
pub fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Namespaces and veth pairs made by this process so far: tests of one binary run in
/// parallel, so their names carry this count as well as the process id.
static MADE: AtomicUsize = AtomicUsize::new(0);

/// Namespaces this test created; each is removed on drop (with its ends of veth pairs).
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates the namespace `lloom-NAME-PID-N` with loopback up; `None` without permission.
    pub fn add(&mut self, name: &str) -> Option<String> {
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let ns = format!("lloom-{name}-{}-{n}", std::process::id());
        if !ip(&["netns", "add", &ns]) {
            return None;
        }
        self.names.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]).then_some(ns)
    }

    /// Joins `a` and `b` with a veth pair and gives each end its address (`10.x.y.z/24`).
    pub fn link(&mut self, (a, addr_a): (&str, &str), (b, addr_b): (&str, &str)) -> bool {
        // Interface names have at most 15 characters.
        let (tag, n) = (std::process::id() % 100_000, MADE.fetch_add(1, Ordering::Relaxed) % 1000);
        let (va, vb) = (format!("lv{n}a{tag}"), format!("lv{n}b{tag}"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
            && ip(&["link", "set", &va, "netns", a])
            && ip(&["link", "set", &vb, "netns", b])
            && [(a, &va, addr_a), (b, &vb, addr_b)].iter().all(|(ns, dev, addr)| {
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])
                    && ip(&["-n", ns, "link", "set", dev, "up"])
            })
    }

    /// The device in `ns` that holds `addr`.
    pub fn device_of(ns: &str, addr: &str) -> Option<String> {
        let out = Command::new("ip").args(["-n", ns, "-o", "-4", "addr", "show"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            let device = words.nth(1)?.to_owned();
            line.contains(&format!("inet {addr}/")).then_some(device)
        })
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.names {
            ip(&["netns", "del", ns]);
        }
    }
}

/// Ends the test when namespaces cannot be created: a visible SKIPPED line, or a failure when
/// `LLOOM_REQUIRE_NETNS=1` (set by `scripts/test.sh` when running as root).
pub fn unavailable(test: &str, why: &str) {
    assert!(
        std::env::var_os("LLOOM_REQUIRE_NETNS").is_none(),
        "LLOOM_REQUIRE_NETNS is set but {test} cannot run: {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// `ip netns exec NS PROGRAM`.
pub fn in_ns(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// A node process, interrupted (SIGINT) and reaped on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Runs `BIN --key PATH keys new --format hex`; returns the path.
pub fn new_hex_key(bin: &Path, path: &Path) -> PathBuf {
    let made =
        Command::new(bin).arg("--key").arg(path).args(["keys", "new", "--format", "hex"]).output();
    assert!(made.unwrap().status.success(), "{} keys new failed", bin.display());
    path.to_owned()
}

/// Starts `cmd` with its stderr in `log`; returns the process and a channel of its stdout
/// lines (read on a thread, so that waits for a line can time out).
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> (Running, mpsc::Receiver<String>) {
    let stderr = std::fs::File::create(log).unwrap();
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Running(child), rx)
}

/// Reads `lines` until `done` says every wanted line was seen, or `limit` passes; returns the
/// lines read.
pub fn read_until(
    lines: &mpsc::Receiver<String>,
    limit: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    seen
}

/// The `listening on ADDR` lines a node printed, as addresses.
pub fn listen_addrs(lines: &[String]) -> Vec<String> {
    lines.iter().filter_map(|l| l.strip_prefix("listening on ")).map(str::to_owned).collect()
}

/// The log at `path`, for failure messages.
pub fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
