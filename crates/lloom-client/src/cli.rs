//! Command-line interface of `lloom-client`.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lloom_core::cli::{ConfigFile, KeysCommand, NodeArgs, Role, run_keys};
use lloom_core::network::{Multiaddr, NetworkConfig, NetworkEvent, peer_id_of, start};
use lloom_core::{NodeKey, PeerId, VerifyPolicy};

use crate::directory::{Directory, ModelRow, render_table};
use crate::error::{Error, Result};

/// Lloom client: discover executors, send signed requests, verify signed answers.
#[derive(Parser, Debug)]
#[command(name = "lloom-client", version, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options shared by every Lloom node.
    #[command(flatten)]
    pub node: NodeArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `lloom-client`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the node key (one secp256k1 key: Ethereum address and libp2p peer id).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List the models on offer, with executor counts, prices and context lengths.
    Models(DiscoveryArgs),
}

/// How the client finds the network.
#[derive(Args, Debug, Clone)]
pub struct DiscoveryArgs {
    /// Validators to ask, as multiaddrs ending in /p2p/PEER_ID (repeatable).
    #[arg(long = "bootstrap", env = "LLOOM_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,
    /// Do not look for peers on the local network with mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Seconds to wait for validators to answer [default: 10].
    #[arg(long)]
    pub timeout_secs: Option<u64>,
    /// Largest age, in seconds, of an announcement the client accepts from a validator
    /// [default: 60].
    #[arg(long)]
    pub max_age_secs: Option<u64>,
}

impl DiscoveryArgs {
    /// Fills what the command line left open from the configuration file.
    pub fn merged(&self, file: &ConfigFile) -> Self {
        Self {
            bootstrap: match self.bootstrap.is_empty() {
                false => self.bootstrap.clone(),
                true => file.network.bootstrap.clone().unwrap_or_default(),
            },
            no_mdns: self.no_mdns || file.network.mdns == Some(false),
            timeout_secs: self.timeout_secs.or(file.client.timeout_secs),
            max_age_secs: self.max_age_secs.or(file.client.max_age_secs),
        }
    }
}

/// Runs a parsed command line, writing its output to `out`.
pub async fn run(cli: &Cli, out: &mut (dyn Write + Send)) -> Result<()> {
    match &cli.command {
        Command::Keys(cmd) => {
            let report = run_keys(cmd, &cli.node, Role::Client)?;
            writeln!(out, "{}", report.render(cli.node.json))?;
        }
        Command::Models(args) => {
            let rows = discover(&args.merged(&cli.node.config_file()?)).await?.models();
            let text = if cli.node.json { render_json(&rows) } else { render_table(&rows) };
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}

fn render_json(rows: &[ModelRow]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "model": r.model,
                "executors": r.executors,
                "input_price_wei": [r.input_price.0.to_string(), r.input_price.1.to_string()],
                "output_price_wei": [r.output_price.0.to_string(), r.output_price.1.to_string()],
                "max_context": r.max_context,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

/// Connects to the validators (bootstrap addresses, else whoever mDNS finds) and merges their
/// registries into a verified [`Directory`].
pub async fn discover(args: &DiscoveryArgs) -> Result<Directory> {
    let mut bootstrap = HashSet::new();
    for addr in &args.bootstrap {
        bootstrap.insert(
            peer_id_of(addr).ok_or_else(|| Error::BootstrapWithoutPeerId(addr.to_string()))?,
        );
    }
    let listen: Vec<Multiaddr> = match args.no_mdns {
        true => Vec::new(),
        false => {
            vec!["/ip4/0.0.0.0/tcp/0".parse().map_err(|_| Error::NoValidator(Duration::ZERO))?]
        }
    };
    let config = NetworkConfig {
        listen_addrs: listen,
        bootstrap: args.bootstrap.clone(),
        enable_mdns: !args.no_mdns,
        ..NetworkConfig::default()
    };
    // Listing models signs nothing: an ephemeral identity is enough.
    let key = NodeKey::generate();
    let policy = VerifyPolicy::default();
    let (network, mut events, event_loop) = start(&key, config, policy).await?;
    let loop_task = tokio::spawn(event_loop.run());

    let timeout = Duration::from_secs(args.timeout_secs.unwrap_or(10));
    let max_age_secs = args.max_age_secs.unwrap_or(60);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut validators: Vec<PeerId> = Vec::new();
    while validators.len() < bootstrap.len().max(1) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(NetworkEvent::PeerConnected(peer)))
                if bootstrap.is_empty() || bootstrap.contains(&peer) =>
            {
                validators.push(peer);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if validators.is_empty() {
        return Err(Error::NoValidator(timeout));
    }
    let mut directory = Directory::default();
    let mut last_error = None;
    for validator in &validators {
        let fetch = directory.fetch_from(&network, *validator, &policy, max_age_secs);
        match tokio::time::timeout_at(deadline, fetch).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => last_error = Some(Error::NoValidator(timeout)),
        }
    }
    drop(network);
    let _ = loop_task.await;
    match last_error {
        Some(e) if directory.is_empty() => Err(e),
        _ => Ok(directory),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_command_lines_parse() {
        Cli::try_parse_from(["lloom-client", "keys", "show"]).unwrap();
        Cli::try_parse_from(["lloom-client", "--json", "keys", "new", "--format", "hex"]).unwrap();
        Cli::try_parse_from(["lloom-client", "models"]).unwrap();
        assert!(Cli::try_parse_from(["lloom-client", "keys", "import"]).is_err());
        assert!(
            Cli::try_parse_from(["lloom-client", "models", "--bootstrap", "nonsense"]).is_err()
        );
    }
}
