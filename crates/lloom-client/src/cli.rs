//! Command-line interface of `lloom-client`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lloom_core::cli::{ConfigFile, KeysCommand, NodeArgs, Role, run_keys};
use lloom_core::identity::load_key;
use lloom_core::network::Multiaddr;
use lloom_core::{NodeKey, U256, VerifyPolicy};

pub use crate::chat_cli::stream_answer;
use crate::client::{Client, ClientConfig};
use crate::directory::{Directory, ModelRow, render_table};
use crate::error::{Error, Result};
use crate::executor_list::{executors_json, render_executors};
use crate::receipts::ReceiptStore;
use crate::routing::Strategy;
pub use crate::serve_cli::ServeArgs;

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
    /// List each executor's offers: prices, context, the weights it serves, its load.
    Executors(ExecutorsArgs),
    /// Ask a model; the answer streams to the terminal, then its verified receipt.
    Chat(ChatArgs),
    /// Run the OpenAI-compatible HTTP gateway (`/v1/chat/completions`, `/v1/models`, `/health`).
    Serve(ServeArgs),
    /// Settlement on chain: deploy the contract, deposit, balance, withdraw.
    #[command(subcommand)]
    Chain(crate::chain_cli::ChainCommand),
    /// List or show the verified receipts kept by `chat` and `serve`.
    #[command(subcommand)]
    Receipts(ReceiptsCommand),
    /// What each gateway API key has spent; reset a key's spend (while the gateway is stopped).
    #[command(subcommand)]
    Spend(crate::spend_cli::SpendCommand),
}

/// Options of `lloom-client executors`.
#[derive(Args, Debug, Clone)]
pub struct ExecutorsArgs {
    /// Only the offers of this model.
    #[arg(long)]
    pub model: Option<String>,
    /// How to find the network.
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// `lloom-client receipts ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum ReceiptsCommand {
    /// The newest receipts, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One receipt in full, by request digest.
    Show {
        /// The request digest (0x…).
        digest: lloom_core::B256,
    },
}

/// Options of `lloom-client chat`.
#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// The user message; `-` reads it from standard input. With `--interactive`, a first
    /// turn (optional).
    #[arg(required_unless_present = "interactive")]
    pub prompt: Option<String>,
    /// Hold a conversation: each line of standard input is a turn, answered with the
    /// conversation so far (`/reset` starts over, `/exit` or the end of input ends).
    #[arg(long, short)]
    pub interactive: bool,
    /// The model to ask [default: `client.model` in the configuration file, else
    /// SmolLM2-135M-Instruct].
    #[arg(long)]
    pub model: Option<String>,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens to generate [default: what the executor's context leaves after the
    /// prompt; in a conversation, at least 256, or its oldest turns are left out].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: Option<u32>,
    /// How to sample the answer, and its shape.
    #[command(flatten)]
    pub sampling: lloom_core::cli::SamplingArgs,
    /// Highest acceptable price per token (input and output), in wei [default:
    /// `client.max_price` in the configuration file, else none].
    #[arg(long)]
    pub max_price: Option<U256>,
    /// Only executors whose context holds at least this many tokens (prompt and answer).
    #[arg(long, value_name = "TOKENS")]
    pub min_context: Option<u32>,
    /// How executors are chosen and waited for.
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Seconds for the whole request, failovers and retries included.
    #[arg(long, default_value_t = 120)]
    pub request_timeout_secs: u64,
    /// Times to ask again when every executor is busy (after the retry-after they signed) or
    /// the model's executors are gone for now (after 5 s), within --request-timeout-secs;
    /// 0 fails at once [default: `client.retries` in the configuration file, else 2].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=MAX_RETRIES as i64))]
    pub retries: Option<u32>,
    /// Show every attempt, failovers and executor cooldowns.
    #[arg(long, short)]
    pub verbose: bool,
    /// How to find the network.
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    /// Escrow check.
    #[command(flatten)]
    pub escrow: EscrowArgs,
}

impl ChatArgs {
    /// `--retries`, else `client.retries` in `file`, else [`DEFAULT_RETRIES`].
    pub fn retries(&self, file: &ConfigFile) -> Result<u32> {
        match self.retries.or(file.client.retries) {
            Some(retries) if retries > MAX_RETRIES => Err(Error::InvalidRequest(format!(
                "client.retries {retries} in the configuration file: at most {MAX_RETRIES}"
            ))),
            retries => Ok(retries.unwrap_or(DEFAULT_RETRIES)),
        }
    }
}

/// The client's own escrow check (with a settlement contract).
#[derive(Args, Debug, Clone, Default)]
pub struct EscrowArgs {
    /// JSON-RPC URL of the chain of the settlement contract (global --contract): requests whose
    /// worst-case cost exceeds the client's escrow there are not signed.
    #[arg(long, env = "LLOOM_RPC_URL")]
    pub rpc_url: Option<String>,
    /// Sign requests even when their worst-case cost exceeds the escrow.
    #[arg(long)]
    pub no_escrow_check: bool,
}

/// How many times `chat` asks again after a busy or restarting answer, as OpenAI's SDKs do.
pub const DEFAULT_RETRIES: u32 = 2;
/// The most retries `--retries` and `client.retries` allow.
pub const MAX_RETRIES: u32 = 100;

/// The model asked for when none is named.
pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct";

/// How executors are chosen and how long one is waited for.
#[derive(Args, Debug, Clone)]
pub struct RoutingArgs {
    /// How to choose executors [default: `client.strategy` in the configuration file, else
    /// balanced].
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// Seconds to wait for a connection to an executor before failing over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for any part of an answer (the first token included) before failing over.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
}

impl RoutingArgs {
    /// The strategy: `--strategy`, else the configuration file's `client.strategy`, else
    /// [`Strategy::Balanced`]; an unknown name in the file is an error naming the choices.
    pub fn strategy(&self, file: &ConfigFile) -> Result<Strategy> {
        if let Some(strategy) = self.strategy {
            return Ok(strategy);
        }
        let Some(name) = &file.client.strategy else { return Ok(Strategy::Balanced) };
        <Strategy as clap::ValueEnum>::from_str(name, true).map_err(|_| {
            Error::InvalidRequest(format!(
                "client.strategy `{name}` in the configuration file: use cheapest, fastest or balanced"
            ))
        })
    }
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
    /// Peer-to-peer address to listen on (repeatable), so executors behind NAT can connect
    /// back directly after a relayed first contact (hole punching) [default:
    /// /ip4/0.0.0.0/tcp/0 with mDNS, none without].
    #[arg(long = "p2p-listen", env = "LLOOM_LISTEN", value_delimiter = ',')]
    pub p2p_listen: Vec<Multiaddr>,
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
            p2p_listen: match self.p2p_listen.is_empty() {
                false => self.p2p_listen.clone(),
                true => file.network.listen.clone().unwrap_or_default(),
            },
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
        Command::Chat(args) => crate::chat_cli::chat(args, &cli.node, out).await?,
        Command::Serve(args) => crate::serve_cli::serve(args, &cli.node, out).await?,
        Command::Chain(cmd) => crate::chain_cli::run(cmd, &cli.node, out).await?,
        Command::Receipts(cmd) => crate::receipts_cli::receipts(cmd, &cli.node, out)?,
        Command::Spend(cmd) => crate::spend_cli::run(cmd, &cli.node, out)?,
        Command::Executors(args) => {
            let discovery = args.discovery.merged(&cli.node.config_file()?);
            let remembered = Some(known_executors_path(&cli.node));
            let directory = discover_in(&discovery, cli.node.domain(), remembered).await?;
            let offers = directory.offers(args.model.as_deref());
            if let Some(model) = args.model.as_ref().filter(|_| offers.is_empty()) {
                let available = directory.models().into_iter().map(|m| m.model).collect();
                return Err(Error::NoExecutor {
                    model: model.clone(),
                    available,
                    last_offered_secs: None,
                });
            }
            let text = match cli.node.json {
                true => serde_json::to_string_pretty(&executors_json(&offers)).unwrap_or_default(),
                false => render_executors(&offers),
            };
            writeln!(out, "{text}")?;
        }
        Command::Models(args) => {
            let args = args.merged(&cli.node.config_file()?);
            let remembered = Some(known_executors_path(&cli.node));
            let rows = discover_in(&args, cli.node.domain(), remembered).await?.models();
            let text = if cli.node.json { render_json(&rows) } else { render_table(&rows) };
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}

/// The client key: the node's key file if there is one, else a fresh key for this run.
fn client_key(node: &NodeArgs) -> Result<NodeKey> {
    let path = node.key_path(Role::Client);
    if path.exists() {
        return Ok(load_key(&path, &node.password_source())?);
    }
    tracing::warn!(
        "no key at {}; signing with a one-off key (run `lloom-client keys new`)",
        path.display()
    );
    Ok(NodeKey::generate())
}

/// Connects a signing client (the node key, nonces persisted in the data directory).
pub(crate) async fn connect(
    discovery: &DiscoveryArgs,
    node: &NodeArgs,
    routing: &RoutingArgs,
    escrow: &EscrowArgs,
) -> Result<Client> {
    let file = node.config_file()?;
    let discovery = discovery.merged(&file);
    let strategy = routing.strategy(&file)?;
    let key = client_key(node)?;
    let escrow_guard = match (&escrow.rpc_url, escrow.no_escrow_check) {
        (Some(url), false) => {
            let settlement =
                lloom_core::chain::Settlement::at(url, &key, node.require_contract()?)?;
            Some(std::sync::Arc::new(crate::escrow::EscrowGuard::new(
                settlement,
                Duration::from_secs(30),
            )))
        }
        _ => None,
    };
    let nonce_file = node.data_dir(Role::Client).join("nonces").join(key.address().to_string());
    let config = ClientConfig {
        bootstrap: discovery.bootstrap.clone(),
        mdns: !discovery.no_mdns,
        listen: (!discovery.p2p_listen.is_empty()).then(|| discovery.p2p_listen.clone()),
        strategy,
        connect_timeout: Duration::from_secs(routing.connect_timeout_secs),
        idle_timeout: Duration::from_secs(routing.idle_timeout_secs),
        discovery_timeout: Duration::from_secs(discovery.timeout_secs.unwrap_or(10)),
        max_announcement_age_secs: discovery.max_age_secs.unwrap_or(60),
        nonce_file: Some(nonce_file),
        prompt_density_file: Some(node.data_dir(Role::Client).join("prompt-density.json")),
        known_executors_file: Some(known_executors_path(node)),
        policy: VerifyPolicy::new(node.domain()),
        escrow_guard,
        receipts: Some(std::sync::Arc::new(ReceiptStore::open(
            &crate::receipts_cli::receipts_path(node),
        )?)),
        ..ClientConfig::default()
    };
    Client::connect(key, config).await
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

/// Where the client keeps the executors of the last directory the validators gave (see
/// [`crate::known_executors`]).
fn known_executors_path(node: &NodeArgs) -> std::path::PathBuf {
    node.data_dir(Role::Client).join("known-executors.json")
}

/// Connects to the validators (bootstrap addresses, else whoever mDNS finds) and merges their
/// registries into a verified [`Directory`] (announcements signed for the default domain).
pub async fn discover(args: &DiscoveryArgs) -> Result<Directory> {
    discover_in(args, lloom_core::DomainConfig::default(), None).await
}

/// [`discover`] for announcements signed for `domain`. With `remembered` (a
/// [`ClientConfig::known_executors_file`]), the directory is kept there, and when no validator
/// answers, the executors kept there by an earlier run are listed instead (with a warning).
pub async fn discover_in(
    args: &DiscoveryArgs,
    domain: lloom_core::DomainConfig,
    remembered: Option<std::path::PathBuf>,
) -> Result<Directory> {
    let config = ClientConfig {
        known_executors_file: remembered,
        policy: VerifyPolicy::new(domain),
        bootstrap: args.bootstrap.clone(),
        mdns: !args.no_mdns,
        listen: (!args.p2p_listen.is_empty()).then(|| args.p2p_listen.clone()),
        discovery_timeout: Duration::from_secs(args.timeout_secs.unwrap_or(10)),
        max_announcement_age_secs: args.max_age_secs.unwrap_or(60),
        ..ClientConfig::default()
    };
    // Listing models signs nothing: an ephemeral identity is enough.
    let client = Client::connect(NodeKey::generate(), config).await?;
    let directory = client.take_directory().await;
    client.shutdown();
    Ok(directory)
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
        let cli =
            Cli::try_parse_from(["lloom-client", "chat", "hi", "--strategy", "cheapest"]).unwrap();
        let Command::Chat(args) = cli.command else { panic!("expected chat") };
        // No --model: the configuration file's, else DEFAULT_MODEL, chosen when chat runs.
        assert_eq!((args.model, args.routing.strategy), (None, Some(Strategy::Cheapest)));
        // Without --strategy, the configuration file's, else balanced; a bad one is named.
        let cli = Cli::try_parse_from(["lloom-client", "chat", "hi"]).unwrap();
        let Command::Chat(plain) = cli.command else { panic!("expected chat") };
        let mut file = ConfigFile::default();
        assert_eq!(plain.routing.strategy(&file).unwrap(), Strategy::Balanced);
        file.client.strategy = Some("Fastest".into());
        assert_eq!(plain.routing.strategy(&file).unwrap(), Strategy::Fastest);
        assert_eq!(args.routing.strategy(&file).unwrap(), Strategy::Cheapest, "the flag wins");
        file.client.strategy = Some("random".into());
        let err = plain.routing.strategy(&file).unwrap_err().to_string();
        assert!(err.contains("client.strategy `random`"), "{err}");
        assert_eq!((args.routing.connect_timeout_secs, args.routing.idle_timeout_secs), (10, 30));
        let cli = Cli::try_parse_from(["lloom-client", "serve", "--connect-timeout-secs", "3"]);
        let Command::Serve(args) = cli.unwrap().command else { panic!("expected serve") };
        assert_eq!(args.routing.connect_timeout_secs, 3);
        for bad in ["0", "-1", "soon"] {
            let cli =
                Cli::try_parse_from(["lloom-client", "chat", "hi", "--idle-timeout-secs", bad]);
            assert!(cli.is_err(), "--idle-timeout-secs {bad}");
            let cli = Cli::try_parse_from(["lloom-client", "serve", "--connect-timeout-secs", bad]);
            assert!(cli.is_err(), "--connect-timeout-secs {bad}");
        }
        assert!(
            Cli::try_parse_from(["lloom-client", "chat", "hi", "--strategy", "random"]).is_err()
        );
        assert!(Cli::try_parse_from(["lloom-client", "chat", "hi", "--max-price", "-1"]).is_err());
        assert!(Cli::try_parse_from(["lloom-client", "keys", "import"]).is_err());
        assert!(
            Cli::try_parse_from(["lloom-client", "models", "--bootstrap", "nonsense"]).is_err()
        );
    }

    #[test]
    fn chat_retries_come_from_the_flag_the_file_or_the_default_and_stay_within_bounds() {
        let mut file = ConfigFile::default();
        let chat = |extra: &[&str]| {
            let args = ["lloom-client", "chat", "hi"].iter().chain(extra);
            let Command::Chat(args) = Cli::try_parse_from(args)?.command else {
                panic!("expected chat")
            };
            Ok::<_, clap::Error>(args)
        };
        let plain = chat(&[]).unwrap();
        assert_eq!(plain.retries(&file).unwrap(), DEFAULT_RETRIES);
        file.client.retries = Some(7);
        assert_eq!(plain.retries(&file).unwrap(), 7);
        let flagged = chat(&["--retries", "0"]).unwrap();
        assert_eq!(flagged.retries(&file).unwrap(), 0, "the flag wins");
        assert_eq!(chat(&["--retries", "100"]).unwrap().retries(&file).unwrap(), 100);
        for bad in ["101", "-1", "many"] {
            assert!(chat(&["--retries", bad]).is_err(), "--retries {bad}");
        }
        file.client.retries = Some(101);
        let err = plain.retries(&file).unwrap_err().to_string();
        assert!(err.contains("client.retries 101"), "{err}");
    }
}
