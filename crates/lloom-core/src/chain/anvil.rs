//! A local anvil node for tests (feature `test-utils`): the foundry binary installed from npm
//! by the project's setup, on a free loopback port, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{Error, Result};
use crate::identity::NodeKey;

/// Private keys of anvil's first funded accounts (its well-known development mnemonic).
pub const DEV_KEYS: [&str; 4] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];

/// A running anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    url: String,
}

/// The anvil binary: `$LLOOM_ANVIL`, else the native binary npm installed under
/// `node_modules/@foundry-rs/` of the repository.
pub fn anvil_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LLOOM_ANVIL") {
        return Some(PathBuf::from(path));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/@foundry-rs");
    std::fs::read_dir(&root)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/anvil"))
        .find(|p| p.is_file())
}

impl Anvil {
    /// Starts anvil on a free loopback port and waits until it listens.
    pub fn spawn() -> Result<Self> {
        Self::spawn_with(0, None)
    }

    /// Starts anvil on `port` (0: any free one), loading its chain from `state` and saving it
    /// there when stopped with [`Anvil::stop`], so a restart continues the same chain.
    pub fn spawn_with(port: u16, state: Option<&Path>) -> Result<Self> {
        let binary = anvil_binary().ok_or_else(|| {
            Error::Chain("anvil not found: run `npm install` (or ./scripts/test.sh)".into())
        })?;
        let mut command = Command::new(&binary);
        command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        if let Some(state) = state {
            command.arg("--state").arg(state);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Chain(format!("cannot start {}: {e}", binary.display())))?;
        let stdout =
            child.stdout.take().ok_or_else(|| Error::Chain("anvil has no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                return Err(Error::Chain("anvil exited before listening".into()));
            };
            if let Some(addr) = line.strip_prefix("Listening on ") {
                break format!("http://{}", addr.trim());
            }
        };
        // Keep draining its output so anvil never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, url })
    }

    /// Stops anvil gracefully (SIGTERM), so it saves its state; waits for it to exit.
    pub fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| Error::Chain(e.to_string()))?;
        self.child.wait().map_err(|e| Error::Chain(e.to_string()))?;
        Ok(())
    }

    /// The JSON-RPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `i`-th funded development account.
    pub fn key(&self, i: usize) -> Result<NodeKey> {
        let hex = DEV_KEYS.get(i).ok_or_else(|| Error::Chain(format!("no dev account {i}")))?;
        NodeKey::from_hex(hex)
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
