//! Command-line interface of `lloom-validator`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lloom_core::cli::{ConfigFile, KeysCommand, NodeArgs, Role, run_keys};
use lloom_core::identity::load_key;
use lloom_core::network::{Multiaddr, NetworkConfig};

use crate::error::Result;
use crate::registry::RegistryConfig;
use crate::service::{Validator, ValidatorConfig};

/// Lloom validator: bootstrap the network and keep the signed model registry.
#[derive(Parser, Debug)]
#[command(name = "lloom-validator", version, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options shared by every Lloom node.
    #[command(flatten)]
    pub node: NodeArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `lloom-validator`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the node key (one secp256k1 key: Ethereum address and libp2p peer id).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run the validator: bootstrap node, relay server and model registry.
    Start(StartArgs),
}

/// Options of `lloom-validator start`.
#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    /// Address to listen on (repeatable) [default: /ip4/0.0.0.0/tcp/4001 and
    /// /ip4/0.0.0.0/udp/4001/quic-v1].
    #[arg(long = "listen", env = "LLOOM_LISTEN", value_delimiter = ',')]
    pub listen: Vec<Multiaddr>,
    /// Peer validators to join, as multiaddrs ending in /p2p/PEER_ID (repeatable).
    #[arg(long = "bootstrap", env = "LLOOM_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,
    /// Disable mDNS discovery on the local network.
    #[arg(long)]
    pub no_mdns: bool,
    /// When to reserve a relayed address on a validator, so that peers reach this node behind
    /// NAT: auto (once AutoNAT finds it unreachable), always, never [default: auto].
    #[arg(long, value_name = "MODE")]
    pub relay: Option<lloom_core::network::RelayMode>,
    /// Let AutoNAT probes use private addresses, when asking and when dialing back for others
    /// (labs and private networks; off on the internet).
    #[arg(long)]
    pub nat_probe_private_addrs: bool,
    /// Seconds without a heartbeat after which an executor leaves the registry [default: 30].
    #[arg(long)]
    pub stale_after_secs: Option<u64>,
}

fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

impl StartArgs {
    /// The effective configuration: flags and environment, else the file, else defaults.
    fn config(&self, file: &ConfigFile) -> ValidatorConfig {
        let net = &file.network;
        let listen = match self.listen.is_empty() {
            false => self.listen.clone(),
            true => net.listen.clone().unwrap_or_else(default_listen),
        };
        let bootstrap = match self.bootstrap.is_empty() {
            false => self.bootstrap.clone(),
            true => net.bootstrap.clone().unwrap_or_default(),
        };
        let stale_after_secs = self
            .stale_after_secs
            .or(file.validator.stale_after_secs)
            .unwrap_or(RegistryConfig::DEFAULT_STALE_AFTER_SECS);
        ValidatorConfig {
            network: NetworkConfig {
                listen_addrs: listen,
                bootstrap,
                enable_mdns: !self.no_mdns && net.mdns.unwrap_or(true),
                relay: self.relay.or(net.relay).unwrap_or_default(),
                nat_probe_private_addrs: self.nat_probe_private_addrs
                    || net.nat_probe_private_addrs.unwrap_or(false),
                server_mode: true,
                ..NetworkConfig::default()
            },
            registry: RegistryConfig { stale_after_secs, ..Default::default() },
            expiry_interval: Duration::from_secs(1),
            ..ValidatorConfig::default()
        }
    }
}

/// Runs a parsed command line, writing its output to `out`.
pub async fn run(cli: &Cli, out: &mut (dyn Write + Send)) -> Result<()> {
    match &cli.command {
        Command::Keys(cmd) => {
            let report = run_keys(cmd, &cli.node, Role::Validator)?;
            writeln!(out, "{}", report.render(cli.node.json))?;
        }
        Command::Start(args) => {
            let mut config = args.config(&cli.node.config_file()?);
            config.policy = lloom_core::VerifyPolicy::new(cli.node.domain());
            let key = load_key(&cli.node.key_path(Role::Validator), &cli.node.password_source())?;
            let stop = lloom_core::cli::ShutdownSignal::install()?;
            let validator = Validator::spawn(&key, config).await?;
            writeln!(out, "validator {} ({})", key.address().to_checksum(None), key.peer_id())?;
            for addr in validator.listen_addrs().await? {
                writeln!(out, "listening on {addr}")?;
            }
            out.flush()?;
            stop.wait().await;
            writeln!(out, "shutting down")?;
            validator.shutdown().await;
        }
    }
    Ok(())
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
        Cli::try_parse_from(["lloom-validator", "keys", "show"]).unwrap();
        let cli = Cli::try_parse_from(["lloom-validator", "start"]).unwrap();
        let Command::Start(args) = cli.command else { panic!("expected start") };
        let config = args.config(&ConfigFile::default());
        assert_eq!(config.network.listen_addrs.len(), 2);
        assert!(config.network.enable_mdns);
        assert_eq!(config.registry.stale_after_secs, RegistryConfig::DEFAULT_STALE_AFTER_SECS);
        assert!(
            Cli::try_parse_from(["lloom-validator", "start", "--listen", "not-an-addr"]).is_err()
        );
    }
}
