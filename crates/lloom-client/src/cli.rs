//! Command-line interface of `lloom-client`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lloom_core::cli::{ConfigFile, KeysCommand, NodeArgs, Role, run_keys};
use lloom_core::identity::load_key;
use lloom_core::network::Multiaddr;
use lloom_core::{ChatMessage, NodeKey, U256, VerifyPolicy};

use crate::client::{ChatEvent, ChatRequest, Client, ClientConfig, Receipt};
use crate::directory::{Directory, ModelRow, render_table};
use crate::error::{Error, Result};
use crate::executor_list::{executors_json, render_executors};
use crate::receipts::ReceiptStore;
use crate::report::{receipt_json, render_receipt};
use crate::routing::{RouteFilter, Strategy};
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
    /// The model to ask.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// How to sample the answer, and its shape.
    #[command(flatten)]
    pub sampling: lloom_core::cli::SamplingArgs,
    /// Highest acceptable price per token (input and output), in wei.
    #[arg(long)]
    pub max_price: Option<U256>,
    /// Only executors whose context holds at least this many tokens (prompt and answer).
    #[arg(long, value_name = "TOKENS")]
    pub min_context: Option<u32>,
    /// How executors are chosen and waited for.
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Seconds for the whole request, failovers included.
    #[arg(long, default_value_t = 120)]
    pub request_timeout_secs: u64,
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

/// The model asked for when none is named.
pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct";

/// How executors are chosen and how long one is waited for.
#[derive(Args, Debug, Clone)]
pub struct RoutingArgs {
    /// How to choose executors.
    #[arg(long, value_enum, default_value_t = Strategy::Balanced)]
    pub strategy: Strategy,
    /// Seconds to wait for a connection to an executor before failing over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for any part of an answer (the first token included) before failing over.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
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
        Command::Chat(args) => chat(args, &cli.node, out).await?,
        Command::Serve(args) => crate::serve_cli::serve(args, &cli.node, out).await?,
        Command::Chain(cmd) => crate::chain_cli::run(cmd, &cli.node, out).await?,
        Command::Receipts(cmd) => receipts(cmd, &cli.node, out)?,
        Command::Spend(cmd) => crate::spend_cli::run(cmd, &cli.node, out)?,
        Command::Executors(args) => {
            let discovery = args.discovery.merged(&cli.node.config_file()?);
            let directory = discover_in(&discovery, cli.node.domain()).await?;
            let offers = directory.offers(args.model.as_deref());
            if let Some(model) = args.model.as_ref().filter(|_| offers.is_empty()) {
                let available = directory.models().into_iter().map(|m| m.model).collect();
                return Err(Error::NoExecutor { model: model.clone(), available });
            }
            let text = match cli.node.json {
                true => serde_json::to_string_pretty(&executors_json(&offers)).unwrap_or_default(),
                false => render_executors(&offers),
            };
            writeln!(out, "{text}")?;
        }
        Command::Models(args) => {
            let args = args.merged(&cli.node.config_file()?);
            let rows = discover_in(&args, cli.node.domain()).await?.models();
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
    let discovery = discovery.merged(&node.config_file()?);
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
        strategy: routing.strategy,
        connect_timeout: Duration::from_secs(routing.connect_timeout_secs),
        idle_timeout: Duration::from_secs(routing.idle_timeout_secs),
        discovery_timeout: Duration::from_secs(discovery.timeout_secs.unwrap_or(10)),
        max_announcement_age_secs: discovery.max_age_secs.unwrap_or(60),
        nonce_file: Some(nonce_file),
        policy: VerifyPolicy::new(node.domain()),
        escrow_guard,
        receipts: Some(std::sync::Arc::new(ReceiptStore::open(&receipts_path(node))?)),
        ..ClientConfig::default()
    };
    Client::connect(key, config).await
}

async fn chat(args: &ChatArgs, node: &NodeArgs, out: &mut (dyn Write + Send)) -> Result<()> {
    let sampling = args.sampling.params()?;
    let prompt = match (&args.prompt, args.interactive) {
        (Some(prompt), true) if prompt == lloom_core::cli::STDIN_PROMPT => {
            return Err(Error::InvalidRequest(
                "with --interactive, turns are read from standard input: give a first turn or \
                 none, not -"
                    .into(),
            ));
        }
        (prompt, true) => prompt.clone(),
        (Some(prompt), false) => {
            Some(lloom_core::cli::read_prompt(prompt, std::io::stdin().lock())?)
        }
        (None, false) => None,
    };
    let client = connect(&args.discovery, node, &args.routing, &args.escrow).await?;
    let mut request = ChatRequest::user(&args.model, "");
    request.messages.clear();
    if let Some(system) = &args.system {
        request
            .messages
            .insert(0, ChatMessage { role: lloom_core::Role::System, content: system.clone() });
    }
    request.max_tokens = args.max_tokens;
    request.sampling = sampling;
    request.timeout = Duration::from_secs(args.request_timeout_secs);
    request.filter = RouteFilter {
        max_price_per_input_token: args.max_price,
        max_price_per_output_token: args.max_price,
        min_context: args.min_context,
    };
    let json = node.json;
    if args.interactive {
        let style = crate::conversation::Style { verbose: args.verbose, json };
        let mut input = std::io::BufReader::new(std::io::stdin());
        let ended =
            crate::conversation::converse(&client, &request, prompt, &mut input, style, out).await;
        client.shutdown();
        return ended.map(drop);
    }
    request
        .messages
        .push(ChatMessage { role: lloom_core::Role::User, content: prompt.unwrap_or_default() });
    let receipt = stream_answer(&client, request, args.verbose, json, out).await;
    client.shutdown();
    let receipt = receipt?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&receipt_json(&receipt)).unwrap_or_default()
        )?;
    } else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{}", render_receipt(&receipt, args.verbose));
        }
    }
    Ok(())
}

/// Streams an answer to `out` (unless `json`), reporting failovers on stderr.
pub async fn stream_answer(
    client: &Client,
    request: ChatRequest,
    verbose: bool,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<Receipt> {
    let mut answer = client.chat(request).await?;
    while let Some(event) = answer.next().await {
        match event? {
            ChatEvent::Attempt { executor } if verbose => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("[asking executor {executor}]");
                }
            }
            ChatEvent::Attempt { .. } => {}
            ChatEvent::Text(text) if !json => {
                write!(out, "{text}")?;
                out.flush()?;
            }
            ChatEvent::Text(_) => {}
            ChatEvent::Restart { reason, cost } => {
                if !json {
                    writeln!(out)?;
                }
                let paid = match cost.is_zero() {
                    true => String::new(),
                    false => format!("; its checkpoint of what it streamed costs {cost} wei"),
                };
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "[executor failed mid-answer ({reason}){paid}; the answer restarts on another executor]"
                    );
                }
            }
            ChatEvent::Done(receipt) => {
                if !json {
                    writeln!(out)?;
                }
                return Ok(*receipt);
            }
        }
    }
    Err(Error::State("the answer ended without a receipt".into()))
}

fn receipts_path(node: &NodeArgs) -> std::path::PathBuf {
    node.data_dir(Role::Client).join("receipts.redb")
}

fn receipts(cmd: &ReceiptsCommand, node: &NodeArgs, out: &mut (dyn Write + Send)) -> Result<()> {
    let store = ReceiptStore::open(&receipts_path(node))?;
    match cmd {
        ReceiptsCommand::List { limit } => {
            let list = store.latest(*limit)?;
            if node.json {
                let rows: Vec<_> = list.iter().map(stored_json).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows).unwrap_or_default())?;
            } else if list.is_empty() {
                writeln!(out, "no receipts yet")?;
            } else {
                writeln!(
                    out,
                    "{:<66}  {:<42}  {:>6}  {:>6}  {:>20}  KIND",
                    "REQUEST DIGEST", "EXECUTOR", "IN", "OUT", "COST WEI"
                )?;
                for r in &list {
                    let c = &r.response.commitment;
                    let kind = if r.text.is_some() { "final" } else { "checkpoint" };
                    writeln!(
                        out,
                        "{:<66}  {:<42}  {:>6}  {:>6}  {:>20}  {kind}",
                        r.digest().to_string(),
                        r.executor().to_checksum(None),
                        c.inputTokens,
                        c.outputTokens,
                        c.totalCost.to_string()
                    )?;
                }
            }
        }
        ReceiptsCommand::Show { digest } => {
            let receipt = store
                .get(digest)?
                .ok_or_else(|| Error::State(format!("no receipt for request {digest}")))?;
            // In full: what was asked, as signed, besides what was answered.
            let mut json = stored_json(&receipt);
            if let Some(fields) = json.as_object_mut() {
                let body = &receipt.request.body;
                fields.insert("messages".into(), serde_json::json!(body.messages));
                fields.insert("sampling".into(), serde_json::json!(body.sampling));
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&json).unwrap_or_default())?;
        }
    }
    Ok(())
}

fn stored_json(r: &crate::receipts::StoredReceipt) -> serde_json::Value {
    let (q, c) = (&r.request.commitment, &r.response.commitment);
    serde_json::json!({
        "request_digest": r.digest().to_string(),
        "executor": r.executor().to_checksum(None),
        "client": q.client.to_checksum(None),
        "model": q.model,
        "nonce": q.nonce,
        "input_tokens": c.inputTokens,
        "output_tokens": c.outputTokens,
        "cost_wei": c.totalCost.to_string(),
        "finish_reason": c.finishReason,
        "final": r.text.is_some(),
        "text": r.text,
        "stored_at": r.stored_at,
        "request_signature": r.request.signature.to_string(),
        "response_signature": r.response.signature.to_string(),
    })
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
/// registries into a verified [`Directory`] (announcements signed for the default domain).
pub async fn discover(args: &DiscoveryArgs) -> Result<Directory> {
    discover_in(args, lloom_core::DomainConfig::default()).await
}

/// [`discover`] for announcements signed for `domain`.
pub async fn discover_in(
    args: &DiscoveryArgs,
    domain: lloom_core::DomainConfig,
) -> Result<Directory> {
    let config = ClientConfig {
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
        assert_eq!(
            (args.model.as_str(), args.routing.strategy),
            (DEFAULT_MODEL, Strategy::Cheapest)
        );
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
}
