//! `lloom-executor start`: serve models on the network until interrupted.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lloom_core::cli::{ConfigFile, NodeArgs, Role};
use lloom_core::identity::load_key;
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{ModelOffer, U256};
use std::sync::Arc;

use super::Bar;
use crate::announcer::AnnouncerConfig;
use crate::backend::llama::EngineConfig;
use crate::backend::openai::{OpenAiBackend, OpenAiConfig};
use crate::error::{Error, Result};
use crate::models::{ModelChoice, prepare};
use crate::node::{ExecutorConfig, ExecutorNode};
use crate::serve::{EscrowPolicy, RateLimits, ServeConfig, ServedModel};
use crate::settle::{SettlerConfig, spawn_settler};
use lloom_core::DomainConfig;
use lloom_core::chain::Settlement;
use tokio_util::sync::CancellationToken;

/// Default wei per prompt token.
pub const DEFAULT_PRICE_PER_INPUT_TOKEN: u64 = 1_000;
/// Default wei per generated token.
pub const DEFAULT_PRICE_PER_OUTPUT_TOKEN: u64 = 2_000;

/// Options of `lloom-executor start`.
#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    /// Address to listen on (repeatable) [default: /ip4/0.0.0.0/tcp/0 and
    /// /ip4/0.0.0.0/udp/0/quic-v1].
    #[arg(long = "listen", env = "LLOOM_LISTEN", value_delimiter = ',')]
    pub listen: Vec<Multiaddr>,
    /// Validators to join, as multiaddrs ending in /p2p/PEER_ID (repeatable).
    #[arg(long = "bootstrap", env = "LLOOM_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,
    /// Disable mDNS discovery on the local network.
    #[arg(long)]
    pub no_mdns: bool,
    /// Serve this GGUF file instead of the default model (fetched on first use).
    #[arg(long, value_name = "PATH")]
    pub model_path: Option<PathBuf>,
    /// The model name to announce [default: the file stem].
    #[arg(long)]
    pub model_name: Option<String>,
    /// Wei per prompt token [default: 1000].
    #[arg(long)]
    pub price_in: Option<U256>,
    /// Wei per generated token [default: 2000].
    #[arg(long)]
    pub price_out: Option<U256>,
    /// Sequences decoded together (continuous batching) [default: 4].
    #[arg(long)]
    pub max_sequences: Option<u32>,
    /// Total context (KV cache) in tokens, shared by the sequences [default: 8192].
    #[arg(long)]
    pub n_ctx: Option<u32>,
    /// CPU threads for the engine [default: all cores].
    #[arg(long)]
    pub threads: Option<u32>,
    /// A signed checkpoint every this many output tokens; 0 disables them [default: 32].
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Requests per minute per client [default: 600].
    #[arg(long)]
    pub requests_per_minute: Option<u32>,
    /// Output tokens per minute per client [default: unlimited].
    #[arg(long)]
    pub tokens_per_minute: Option<u32>,
    /// Serve through an OpenAI-compatible server at this base URL (e.g.
    /// http://127.0.0.1:8080/v1 for llama-server, http://127.0.0.1:11434/v1 for Ollama)
    /// instead of the embedded engine.
    #[arg(long, value_name = "URL")]
    pub backend_url: Option<String>,
    /// The model name the HTTP server knows [default: --model-name].
    #[arg(long, requires = "backend_url")]
    pub backend_model: Option<String>,
    /// Environment variable holding the HTTP server's API key.
    #[arg(long, default_value = "LLOOM_BACKEND_API_KEY", requires = "backend_url")]
    pub backend_api_key_env: String,
    /// Context length announced for an HTTP backend.
    #[arg(long, default_value_t = 4096, requires = "backend_url")]
    pub context_length: u32,
    /// JSON-RPC URL of the chain where receipts are settled with the contract named by the
    /// global --contract; the chain id is read from it.
    #[arg(long, env = "LLOOM_RPC_URL")]
    pub rpc_url: Option<String>,
    /// Serve only clients holding at least this escrow on the contract (`1500` wei or
    /// `0.01eth`; needs --rpc-url); balances are cached for 30 s.
    #[arg(long, requires = "rpc_url")]
    pub min_escrow: Option<String>,
    /// Seconds between settlement rounds.
    #[arg(long, default_value_t = 60)]
    pub settle_interval_secs: u64,
    /// Seconds between announcement heartbeats [default: 10].
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
}

impl StartArgs {
    /// The model to serve: flags, else the file, else defaults.
    pub fn model_choice(&self, file: &ConfigFile) -> ModelChoice {
        let ex = &file.executor;
        let defaults = EngineConfig::default();
        ModelChoice {
            path: self.model_path.clone().or_else(|| ex.model_path.clone()),
            name: self.model_name.clone().or_else(|| ex.model_name.clone()),
            price_per_input_token: self.price_in.unwrap_or_else(|| {
                U256::from(ex.price_per_input_token.unwrap_or(DEFAULT_PRICE_PER_INPUT_TOKEN))
            }),
            price_per_output_token: self.price_out.unwrap_or_else(|| {
                U256::from(ex.price_per_output_token.unwrap_or(DEFAULT_PRICE_PER_OUTPUT_TOKEN))
            }),
            engine: EngineConfig {
                n_ctx: self.n_ctx.or(ex.n_ctx).unwrap_or(defaults.n_ctx),
                max_sequences: self
                    .max_sequences
                    .or(ex.max_sequences)
                    .unwrap_or(defaults.max_sequences),
                threads: self.threads,
                ..defaults
            },
        }
    }

    /// The node configuration: flags and environment, else the file, else defaults.
    pub fn executor_config(&self, file: &ConfigFile, data_dir: PathBuf) -> ExecutorConfig {
        let net = &file.network;
        let ex = &file.executor;
        let listen = match self.listen.is_empty() {
            false => self.listen.clone(),
            true => net.listen.clone().unwrap_or_else(default_listen),
        };
        let bootstrap = match self.bootstrap.is_empty() {
            false => self.bootstrap.clone(),
            true => net.bootstrap.clone().unwrap_or_default(),
        };
        let defaults = ServeConfig::default();
        let mut config = ExecutorConfig::new(data_dir);
        config.network = NetworkConfig {
            listen_addrs: listen,
            bootstrap,
            enable_mdns: !self.no_mdns && net.mdns.unwrap_or(true),
            ..NetworkConfig::default()
        };
        config.serve = ServeConfig {
            checkpoint_every: self
                .checkpoint_every
                .or(ex.checkpoint_every)
                .unwrap_or(defaults.checkpoint_every),
            rate_limits: RateLimits {
                requests_per_minute: self
                    .requests_per_minute
                    .or(ex.requests_per_minute)
                    .or(defaults.rate_limits.requests_per_minute),
                tokens_per_minute: self.tokens_per_minute.or(ex.tokens_per_minute),
                ..defaults.rate_limits
            },
            ..defaults
        };
        config.announce = AnnouncerConfig {
            heartbeat: Duration::from_secs(self.heartbeat_secs.max(1)),
            ..AnnouncerConfig::default()
        };
        config.max_concurrency = self.model_choice(file).engine.max_sequences;
        config
    }
}

fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// Runs `start`: loads the key and the model, joins the network, serves until a signal.
pub(super) async fn run(
    args: &StartArgs,
    node: &NodeArgs,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let file = node.config_file()?;
    let key = load_key(&node.key_path(Role::Executor), &node.password_source())?;
    let choice = args.model_choice(&file);
    let mut config = args.executor_config(&file, node.data_dir(Role::Executor));
    config.announce.domain = node.domain();
    let chain = match &args.rpc_url {
        Some(url) => {
            let contract = node.require_contract()?;
            let chain = Settlement::at(url, &key, contract)?;
            let chain_id = chain.chain_id().await?;
            if node.chain_id.is_some_and(|id| id != chain_id) {
                return Err(Error::Backend(format!(
                    "--chain-id {} does not match the chain at {url} ({chain_id})",
                    node.domain().chain_id
                )));
            }
            config.announce.domain = DomainConfig { chain_id, verifying_contract: contract };
            if let Some(minimum) = &args.min_escrow {
                let minimum = lloom_core::chain::parse_amount(minimum)?;
                let policy = EscrowPolicy::new(chain.clone(), minimum, Duration::from_secs(30));
                config.serve.escrow = Some(Arc::new(policy));
            }
            Some(chain)
        }
        None => None,
    };
    let model = match &args.backend_url {
        Some(url) => http_backend(args, url, &choice).await?,
        None => {
            writeln!(out, "loading the model ...")?;
            out.flush()?;
            let bar = Bar::stderr();
            tokio::task::spawn_blocking(move || prepare(&choice, &bar))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??
        }
    };
    let offer = model.offer.clone();
    let executor = ExecutorNode::start(&key, vec![model], config).await?;
    writeln!(out, "executor {} ({})", key.address().to_checksum(None), key.peer_id())?;
    writeln!(
        out,
        "serving {} ({}, sha256 {}) at {}/{} wei per input/output token, context {}",
        offer.model,
        offer.quantization.as_deref().unwrap_or("unknown quantization"),
        offer.weights_sha256.map(|h| h.to_string()).unwrap_or_default(),
        offer.price_per_input_token,
        offer.price_per_output_token,
        offer.context_length
    )?;
    for addr in executor.listen_addrs().await? {
        writeln!(out, "listening on {addr}")?;
    }
    let stop = CancellationToken::new();
    if let Some(chain) = chain {
        writeln!(
            out,
            "settling receipts with contract {} every {}s",
            chain.address(),
            args.settle_interval_secs
        )?;
        let settler = SettlerConfig {
            interval: Duration::from_secs(args.settle_interval_secs.max(1)),
            ..SettlerConfig::default()
        };
        spawn_settler(executor.server.clone(), chain, settler, stop.clone());
    }
    out.flush()?;
    lloom_core::cli::wait_for_shutdown_signal().await?;
    stop.cancel();
    writeln!(out, "shutting down: withdrawing the offers")?;
    executor.shutdown().await
}

/// An OpenAI-compatible server as the backend; checked to list the model before serving.
async fn http_backend(args: &StartArgs, url: &str, choice: &ModelChoice) -> Result<ServedModel> {
    let remote = args.backend_model.clone().or_else(|| choice.name.clone()).ok_or_else(|| {
        Error::Backend("--backend-url needs --backend-model or --model-name".into())
    })?;
    let mut config = OpenAiConfig::new(url, remote.clone());
    config.served_model = choice.name.clone().unwrap_or(remote);
    config.api_key = std::env::var(&args.backend_api_key_env).ok().filter(|k| !k.is_empty());
    config.max_concurrent = choice.engine.max_sequences.max(1) as usize * 4;
    let backend = OpenAiBackend::new(config.clone())?;
    backend.probe().await?;
    let offer = ModelOffer {
        model: config.served_model,
        context_length: args.context_length,
        price_per_input_token: choice.price_per_input_token,
        price_per_output_token: choice.price_per_output_token,
        weights_sha256: None,
        quantization: None,
        capabilities: vec!["chat".into(), "stream".into()],
    };
    Ok(ServedModel { offer, backend: Arc::new(backend) })
}
