//! Command-line interface of `lloom-validator`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lloom_core::cli::{ConfigFile, KeysCommand, NetworkArgs, NodeArgs, Role, run_keys};
use lloom_core::http::{HttpLimits, HttpServer};
use lloom_core::identity::load_key;
use lloom_core::network::NetworkConfig;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
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
    /// Network options.
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Seconds without a heartbeat after which an executor leaves the registry [default: 30].
    #[arg(long)]
    pub stale_after_secs: Option<u64>,
    /// Most executors the registry holds; announcements of new executors beyond it are
    /// refused. Each entry holds its announcement (at most 64 KiB, about 1 KiB typically)
    /// [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_executors: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9465), and at
    /// http://ADDR/health whether the registry service runs (200) or not (503).
    #[arg(long, value_name = "ADDR", env = "LLOOM_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The port a validator listens on (TCP and QUIC) unless told otherwise.
const DEFAULT_PORT: u16 = 4001;

impl StartArgs {
    /// The effective configuration: flags and environment, else the file, else defaults;
    /// refuses a registry that could hold no executor.
    fn config(&self, file: &ConfigFile) -> Result<ValidatorConfig> {
        let stale_after_secs = self
            .stale_after_secs
            .or(file.validator.stale_after_secs)
            .unwrap_or(RegistryConfig::DEFAULT_STALE_AFTER_SECS);
        let default_max = RegistryConfig::default().max_executors;
        let max_executors = match self.max_executors.or(file.validator.max_executors) {
            Some(0) => {
                return Err(Error::Config("max_executors must be at least 1".into()));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => default_max,
        };
        Ok(ValidatorConfig {
            network: NetworkConfig {
                server_mode: true,
                ..self.network.resolve(&file.network, DEFAULT_PORT)
            },
            registry: RegistryConfig { stale_after_secs, max_executors },
            expiry_interval: Duration::from_secs(1),
            ..ValidatorConfig::default()
        })
    }
}

/// Serves the validator's `/metrics` and `/health` on `addr` until `stop`; returns the
/// metrics URL.
async fn serve_metrics(
    validator: &Validator,
    addr: SocketAddr,
    stop: CancellationToken,
) -> Result<String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("metrics on {addr}: {e}"))))?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let router = validator.metrics().router();
    tokio::spawn(async move {
        // Scrapers need few connections; the limits keep idle ones from piling up.
        let limits = HttpLimits { max_connections: 64, ..HttpLimits::default() };
        let serve = HttpServer::new(listener, limits).serve(router, stop.cancelled_owned());
        if let Err(error) = serve.await {
            tracing::warn!(%error, "the metrics server stopped");
        }
    });
    Ok(url)
}

/// Runs a parsed command line, writing its output to `out`.
pub async fn run(cli: &Cli, out: &mut (dyn Write + Send)) -> Result<()> {
    match &cli.command {
        Command::Keys(cmd) => {
            let report = run_keys(cmd, &cli.node, Role::Validator)?;
            writeln!(out, "{}", report.render(cli.node.json))?;
        }
        Command::Start(args) => {
            let mut config = args.config(&cli.node.config_file()?)?;
            config.policy = lloom_core::VerifyPolicy::new(cli.node.domain());
            let key = load_key(&cli.node.key_path(Role::Validator), &cli.node.password_source())?;
            let stop = lloom_core::cli::ShutdownSignal::install()?;
            let validator = Validator::spawn(&key, config).await?;
            writeln!(out, "validator {} ({})", key.address().to_checksum(None), key.peer_id())?;
            for addr in validator.listen_addrs().await? {
                writeln!(out, "listening on {addr}")?;
            }
            let metrics_stop = CancellationToken::new();
            if let Some(addr) = args.metrics_listen {
                let url = serve_metrics(&validator, addr, metrics_stop.clone()).await?;
                writeln!(out, "metrics on {url}")?;
            }
            out.flush()?;
            stop.wait().await;
            writeln!(out, "shutting down")?;
            metrics_stop.cancel();
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
        let config = args.config(&ConfigFile::default()).unwrap();
        assert_eq!(config.network.listen_addrs.len(), 2);
        assert!(config.network.enable_mdns);
        assert_eq!(config.registry.stale_after_secs, RegistryConfig::DEFAULT_STALE_AFTER_SECS);
        assert_eq!(config.registry.max_executors, RegistryConfig::default().max_executors);
        assert!(
            Cli::try_parse_from(["lloom-validator", "start", "--listen", "not-an-addr"]).is_err()
        );
    }

    fn start_args(flags: &[&str]) -> StartArgs {
        let argv = ["lloom-validator", "start"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Start(args) => args,
            other => panic!("expected start, got {other:?}"),
        }
    }

    #[test]
    fn the_registry_bound_comes_from_the_flag_else_the_file_and_zero_is_refused() {
        let file: ConfigFile = toml::from_str("[validator]\nmax_executors = 500\n").unwrap();
        let from_file = start_args(&[]).config(&file).unwrap();
        assert_eq!(from_file.registry.max_executors, 500);
        let flagged = start_args(&["--max-executors", "20"]).config(&file).unwrap();
        assert_eq!(flagged.registry.max_executors, 20);
        for (flags, file) in [
            (&["--max-executors", "0"][..], ConfigFile::default()),
            (&[][..], toml::from_str("[validator]\nmax_executors = 0\n").unwrap()),
        ] {
            let err = start_args(flags).config(&file).unwrap_err().to_string();
            assert!(err.contains("max_executors must be at least 1"), "{err}");
        }
        assert!(
            Cli::try_parse_from(["lloom-validator", "start", "--max-executors", "-1"]).is_err()
        );
    }
}
