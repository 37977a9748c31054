//! Command-line interface of `lloom-client`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lloom_core::cli::{ConfigFile, KeysCommand, NodeArgs, Role, run_keys};
use lloom_core::http::HttpLimits;
use lloom_core::identity::load_key;
use lloom_core::network::Multiaddr;
use lloom_core::rate_limit::RateLimits;
use lloom_core::{ChatMessage, NodeKey, U256, VerifyPolicy};

use crate::client::{ChatEvent, ChatRequest, Client, ClientConfig, Receipt};
use crate::directory::{Directory, ModelRow, render_table};
use crate::error::{Error, Result};
use crate::gateway::{ApiKeys, BudgetPeriod, GatewayConfig};
use crate::receipts::ReceiptStore;
use crate::report::{receipt_json, render_receipt};
use crate::routing::{RouteFilter, Strategy};

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

/// Options of `lloom-client serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// How executors are chosen and waited for.
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// `max_tokens` for requests that give none.
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: u32,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds for one completion, failovers included.
    #[arg(long, default_value_t = 120)]
    pub request_timeout_secs: u64,
    /// Most completions under way at once (streams until they end); more get a 429.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_concurrent: u32,
    /// Most HTTP connections held at once; one more is closed as soon as it is accepted.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// Seconds a connection gets to send a request's headers (from its start, or the end of
    /// the previous response) before it is closed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds a request's body gets to arrive once its headers have (then 408).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,
    /// A key every `/v1/*` request must present as `Authorization: Bearer <key>` (16 to 256
    /// printable characters); prefer the environment variable, which `ps` does not show.
    #[arg(long, env = "LLOOM_GATEWAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A file of keys, one per line as `NAME KEY BUDGET`, `NAME KEY` or `KEY` (`#` starts a
    /// comment); each name labels its key's usage in `/metrics`, and a budget (wei, or ether
    /// as `0.01eth`) is the most the key may spend.
    #[arg(long, env = "LLOOM_GATEWAY_API_KEY_FILE")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// The most each API key may spend (wei, or ether as `0.01eth`), for keys whose line in
    /// the key file gives no budget; a key that has spent it is answered 402.
    #[arg(long, value_parser = parse_budget)]
    pub key_budget: Option<U256>,
    /// Where each API key's spend is kept across restarts (default: `gateway-spend.redb` in
    /// the client's data directory).
    #[arg(long)]
    pub spend_ledger: Option<std::path::PathBuf>,
    /// Make every key's budget whole again each UTC day, week (from Monday) or month: `daily`,
    /// `weekly` or `monthly` (default: budgets are for the gateway's life).
    #[arg(long, value_parser = clap::builder::ValueParser::new(str::parse::<BudgetPeriod>))]
    pub key_budget_period: Option<BudgetPeriod>,
    /// Requests per minute each API key may make (burst: the same number).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub key_requests_per_minute: Option<u32>,
    /// Completion tokens per minute each API key may use (charged as answers end).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub key_tokens_per_minute: Option<u32>,
    /// Listen on a non-loopback address without API keys, letting anyone who reaches it spend
    /// this client's funds.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// How to find the network.
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    /// Escrow check.
    #[command(flatten)]
    pub escrow: EscrowArgs,
}

fn parse_budget(text: &str) -> std::result::Result<U256, String> {
    match lloom_core::chain::parse_amount(text) {
        Ok(amount) => Ok(amount),
        Err(lloom_core::Error::Chain(reason)) => Err(reason),
        Err(other) => Err(other.to_string()),
    }
}

/// Options of `lloom-client chat`.
#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// The user message.
    pub prompt: String,
    /// The model to ask.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Highest acceptable price per token (input and output), in wei.
    #[arg(long)]
    pub max_price: Option<U256>,
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
        Command::Serve(args) => serve(args, &cli.node, out).await?,
        Command::Chain(cmd) => crate::chain_cli::run(cmd, &cli.node, out).await?,
        Command::Receipts(cmd) => receipts(cmd, &cli.node, out)?,
        Command::Spend(cmd) => crate::spend_cli::run(cmd, &cli.node, out)?,
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
async fn connect(
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

async fn serve(args: &ServeArgs, node: &NodeArgs, out: &mut (dyn Write + Send)) -> Result<()> {
    let api_keys = gateway_keys(args)?;
    // Every key's spend is kept, budget or not, so one given later counts from the start.
    let spend_ledger = match api_keys.is_empty() {
        true => None,
        false => {
            let path = args
                .spend_ledger
                .clone()
                .unwrap_or_else(|| crate::spend_cli::default_ledger_path(node));
            Some(std::sync::Arc::new(crate::gateway::SpendLedger::open(&path)?))
        }
    };
    let stop = lloom_core::cli::ShutdownSignal::install()?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let client = connect(&args.discovery, node, &args.routing, &args.escrow).await?;
    let access = match api_keys.len() {
        0 => "no API key asked for".to_owned(),
        1 => "1 API key".to_owned(),
        n => format!("{n} API keys"),
    };
    let config = GatewayConfig {
        max_body_bytes: args.max_body_bytes,
        body_timeout: Duration::from_secs(args.body_timeout_secs),
        default_max_tokens: args.default_max_tokens,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        api_keys,
        max_concurrent: args.max_concurrent as usize,
        key_limits: RateLimits {
            requests_per_minute: args.key_requests_per_minute,
            tokens_per_minute: args.key_tokens_per_minute,
            ..RateLimits::default()
        },
        http: HttpLimits {
            max_connections: args.max_connections as usize,
            header_timeout: Duration::from_secs(args.header_timeout_secs),
            ..HttpLimits::default()
        },
        spend_ledger,
        budget_period: args.key_budget_period,
    };
    writeln!(
        out,
        "OpenAI-compatible gateway on http://{}/v1 (client {}; {access})",
        listener.local_addr()?,
        client.address().to_checksum(None)
    )?;
    out.flush()?;
    let shutdown = stop.wait();
    crate::gateway::serve(client.clone(), listener, config, shutdown).await?;
    writeln!(out, "shutting down")?;
    client.shutdown();
    Ok(())
}

/// The gateway's API keys; refuses to expose an open gateway beyond loopback unless asked to.
fn gateway_keys(args: &ServeArgs) -> Result<ApiKeys> {
    let mut keys = ApiKeys::load(args.api_key.as_deref(), args.api_key_file.as_deref())?;
    let limited = args.key_requests_per_minute.is_some()
        || args.key_tokens_per_minute.is_some()
        || args.key_budget.is_some()
        || args.key_budget_period.is_some();
    if keys.is_empty() && limited {
        return Err(Error::ApiKeys(
            "--key-requests-per-minute, --key-tokens-per-minute, --key-budget and \
             --key-budget-period limit each API key: give --api-key or --api-key-file"
                .into(),
        ));
    }
    if let Some(budget) = args.key_budget {
        keys = keys.with_default_budget(budget);
    }
    if keys.is_empty() && !args.listen.ip().is_loopback() && !args.allow_unauthenticated {
        return Err(Error::ApiKeys(format!(
            "{} is reachable from other machines, and the gateway spends this client's funds: \
             give --api-key (or LLOOM_GATEWAY_API_KEY) or --api-key-file, or pass \
             --allow-unauthenticated to serve it open",
            args.listen
        )));
    }
    Ok(keys)
}

async fn chat(args: &ChatArgs, node: &NodeArgs, out: &mut (dyn Write + Send)) -> Result<()> {
    let client = connect(&args.discovery, node, &args.routing, &args.escrow).await?;
    let mut request = ChatRequest::user(&args.model, &args.prompt);
    if let Some(system) = &args.system {
        request
            .messages
            .insert(0, ChatMessage { role: lloom_core::Role::System, content: system.clone() });
    }
    request.max_tokens = args.max_tokens;
    request.sampling.temperature = args.temperature;
    request.timeout = Duration::from_secs(args.request_timeout_secs);
    request.filter = RouteFilter {
        max_price_per_input_token: args.max_price,
        max_price_per_output_token: args.max_price,
        min_context: None,
    };
    let json = node.json;
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
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&stored_json(&receipt)).unwrap_or_default()
            )?;
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

    fn serve_args(line: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from([&["lloom-client", "serve"], line].concat()).unwrap();
        let Command::Serve(args) = cli.command else { panic!("expected serve") };
        args
    }

    #[test]
    fn an_open_gateway_is_refused_beyond_loopback_unless_asked_for() {
        let key = ["--api-key", "0123456789abcdef0123"];
        assert!(gateway_keys(&serve_args(&[])).unwrap().is_empty());
        assert!(gateway_keys(&serve_args(&["--listen", "[::1]:8080"])).unwrap().is_empty());
        let error = gateway_keys(&serve_args(&["--listen", "0.0.0.0:8080"])).unwrap_err();
        let error = error.to_string();
        assert!(error.contains("0.0.0.0:8080 is reachable from other machines"), "{error}");
        assert!(error.contains("--allow-unauthenticated"), "{error}");
        let open = serve_args(&["--listen", "0.0.0.0:8080", "--allow-unauthenticated"]);
        assert!(gateway_keys(&open).unwrap().is_empty());
        let keyed = serve_args(&[&["--listen", "0.0.0.0:8080"][..], &key].concat());
        assert_eq!(gateway_keys(&keyed).unwrap().len(), 1);
        let unkeyed_limit = serve_args(&["--key-requests-per-minute", "10"]);
        let error = gateway_keys(&unkeyed_limit).unwrap_err().to_string();
        assert!(error.contains("limit each API key"), "{error}");
        let keyed_limit = serve_args(&[&key[..], &["--key-tokens-per-minute", "100"]].concat());
        assert_eq!(gateway_keys(&keyed_limit).unwrap().len(), 1);
        for bad in ["0", "-1", "lots"] {
            let cli =
                Cli::try_parse_from(["lloom-client", "serve", "--key-requests-per-minute", bad]);
            assert!(cli.is_err(), "--key-requests-per-minute {bad}");
        }
        let short = serve_args(&["--api-key", "short"]);
        assert!(gateway_keys(&short).unwrap_err().to_string().contains("16 to 256 characters"));
    }

    #[test]
    fn a_key_budget_needs_keys_and_an_amount() {
        let key = ["--api-key", "0123456789abcdef0123"];
        let error = gateway_keys(&serve_args(&["--key-budget", "100"])).unwrap_err().to_string();
        assert!(error.contains("limit each API key"), "{error}");
        let error = gateway_keys(&serve_args(&["--key-budget-period", "monthly"])).unwrap_err();
        assert!(error.to_string().contains("limit each API key"), "{error}");
        let keys =
            gateway_keys(&serve_args(&[&key[..], &["--key-budget-period", "weekly"]].concat()));
        assert_eq!(keys.unwrap().len(), 1);
        let hourly =
            Cli::try_parse_from(["lloom-client", "serve", "--key-budget-period", "hourly"]);
        assert!(hourly.unwrap_err().to_string().contains("daily, weekly or monthly"));
        let keys = gateway_keys(&serve_args(&[&key[..], &["--key-budget", "0.5eth"]].concat()));
        let budget = keys.unwrap().budget("default");
        assert_eq!(budget, Some(U256::from(500_000_000_000_000_000u64)));
        for bad in ["lots", "-5", "1.5", ""] {
            let flag = format!("--key-budget={bad}");
            let cli = Cli::try_parse_from(["lloom-client", "serve", &flag]);
            let error = cli.unwrap_err().to_string();
            assert!(error.contains("is not an amount"), "{bad}: {error}");
        }
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
        let cli = Cli::try_parse_from(["lloom-client", "serve", "--listen", "nowhere"]);
        assert!(cli.is_err(), "--listen nowhere");
        assert_eq!(serve_args(&[]).max_concurrent, 256);
        for flag in [
            "--max-concurrent",
            "--max-connections",
            "--header-timeout-secs",
            "--body-timeout-secs",
        ] {
            for bad in ["0", "-3", "many", "65537"] {
                let cli = Cli::try_parse_from(["lloom-client", "serve", flag, bad]);
                assert!(cli.is_err(), "{flag} {bad}");
            }
        }
        let args = serve_args(&[]);
        assert_eq!((args.max_connections, args.header_timeout_secs), (1024, 30));
        assert!(Cli::try_parse_from(["lloom-client", "chat", "hi", "--max-price", "-1"]).is_err());
        assert!(Cli::try_parse_from(["lloom-client", "keys", "import"]).is_err());
        assert!(
            Cli::try_parse_from(["lloom-client", "models", "--bootstrap", "nonsense"]).is_err()
        );
    }
}
