//! `lloom-executor start`: serve models on the network until interrupted.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lloom_core::cli::{ConfigFile, NodeArgs, Role};
use lloom_core::http::{HttpLimits, HttpServer};
use lloom_core::identity::load_key;
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{ModelOffer, U256};
use std::sync::Arc;

use super::Bar;
use crate::announcer::AnnouncerConfig;
use crate::backend::llama::EngineConfig;
use crate::backend::llama::ModelPool;
use crate::backend::openai::{OpenAiBackend, OpenAiConfig};
use crate::error::{Error, Result};
use crate::memory::{KvType, MemoryBudget, ServingDevice, format_bytes};
use crate::metrics::ExecutorMetrics;
use crate::models::{ModelChoice, PreparedModels, prepare_models};
use crate::node::{ExecutorConfig, ExecutorNode, FreeMemory};
use crate::serve::{EscrowPolicy, RateLimits, ServeConfig, ServedModel};
use crate::settle::{SettlerConfig, spawn_settler};
use lloom_core::DomainConfig;
use lloom_core::announce::CAPABILITY_JSON;
use lloom_core::chain::Settlement;
use tokio_util::sync::CancellationToken;

/// Default wei per prompt token.
pub const DEFAULT_PRICE_PER_INPUT_TOKEN: u64 = 1_000;
/// Default wei per generated token.
pub const DEFAULT_PRICE_PER_OUTPUT_TOKEN: u64 = 2_000;

/// Seconds the requests in flight get to finish at shutdown, unless configured.
const DEFAULT_DRAIN_SECS: u64 = 30;
/// Most seconds a shutdown may wait for the requests in flight.
const MAX_DRAIN_SECS: u64 = 3600;

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
    /// When to reserve a relayed address on a validator, so that peers reach this node behind
    /// NAT: auto (once AutoNAT finds it unreachable), always, never [default: auto].
    #[arg(long, value_name = "MODE")]
    pub relay: Option<lloom_core::network::RelayMode>,
    /// Let AutoNAT probes use private addresses, when asking and when dialing back for others
    /// (labs and private networks; off on the internet).
    #[arg(long)]
    pub nat_probe_private_addrs: bool,
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
    /// Compute every prompt whole, instead of keeping a finished request's cache for the same
    /// client's next prompt that starts with the same tokens (a conversation's next turn).
    #[arg(long, conflicts_with = "backend_url")]
    pub no_prompt_cache: bool,
    /// Element type of the KV cache: f16, q8_0 or q4_0. A quantized cache holds about twice
    /// (q8_0) or three and a half times (q4_0) the tokens in the same memory, so more
    /// sequences fit the memory budget, at a small cost in accuracy [default: f16].
    #[arg(long, value_name = "TYPE", conflicts_with = "backend_url")]
    pub kv_cache_type: Option<KvType>,
    /// Memory the models may use: a size (20GiB, 512MiB) or a share of the memory free at
    /// start (0.8, 80%); host RAM, or GPU memory in a `cuda` build [default: 0.9].
    #[arg(long, value_name = "SIZE|SHARE")]
    pub memory_budget: Option<MemoryBudget>,
    /// Requests one client may have waiting for the engine [default: 32].
    #[arg(long)]
    pub queue_per_client: Option<usize>,
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
    /// Most milliseconds between disk syncs of the nonce store; answered requests are refused
    /// from the always-synced receipts, so a crash forgets only nonces of unfinished requests.
    /// 0 syncs on every request; at most 60000 [default: 1000].
    #[arg(long, value_name = "MS")]
    pub nonce_sync_ms: Option<u64>,
    /// Microseconds the receipt writer waits for more receipts when others are already waiting
    /// (fewer disk syncs under load; a lone request never waits). At most 100000 [default: 1000].
    #[arg(long, value_name = "US")]
    pub commit_delay_us: Option<u64>,
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
    /// Context length announced for an HTTP backend [default: what the server reports (vLLM's
    /// `max_model_len`, llama.cpp's per-slot `n_ctx`, LM Studio's and Ollama's loaded context),
    /// else 4096].
    #[arg(long, requires = "backend_url", value_parser = clap::value_parser!(u32).range(1..))]
    pub context_length: Option<u32>,
    /// The HTTP server holds answers to `response_format` (JSON mode and JSON schemas, as
    /// llama-server, vLLM and Ollama do): announce the `json` capability, so clients asking
    /// for JSON prefer this executor. Each such answer is still checked before it is signed.
    #[arg(long, requires = "backend_url")]
    pub backend_json: bool,
    /// Seconds between checks of the HTTP server while serving: while it does not answer, the
    /// model is not offered; a context it changes is announced.
    #[arg(
        long,
        default_value_t = 10,
        requires = "backend_url",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub backend_check_secs: u64,
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
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464), and at
    /// http://ADDR/health whether any model is offered (200) or none (503).
    #[arg(long, value_name = "ADDR", env = "LLOOM_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds between announcement heartbeats [default: 10].
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// On SIGTERM or Ctrl-C, seconds to let the requests in flight finish (new ones are
    /// refused with a signed Busy, the offers withdrawn) before stopping; a second signal stops
    /// at once; 0 stops at once. At most 3600 [default: 30].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_secs: Option<u64>,
}

impl StartArgs {
    /// The memory budget: the flag, else the file, else 90 % of the free memory.
    pub fn memory_budget(&self, file: &ConfigFile) -> Result<MemoryBudget> {
        match (&self.memory_budget, &file.executor.memory_budget) {
            (Some(budget), _) => Ok(*budget),
            (None, Some(text)) => text.parse(),
            (None, None) => Ok(MemoryBudget::default()),
        }
    }

    /// Seconds to drain at shutdown: the flag, else the file, else 30; at most 3600.
    pub fn drain_secs(&self, file: &ConfigFile) -> Result<u64> {
        let secs = self.drain_secs.or(file.executor.drain_secs).unwrap_or(DEFAULT_DRAIN_SECS);
        if secs > MAX_DRAIN_SECS {
            return Err(Error::ServeConfig(format!(
                "drain_secs {secs} is above the most allowed, {MAX_DRAIN_SECS}"
            )));
        }
        Ok(secs)
    }

    /// The models to serve: `--model-path` (or `executor.model_path`) serves one model;
    /// otherwise `[[executor.models]]`, each entry taking unset keys from the flags and the
    /// `[executor]` section; otherwise the default model.
    pub fn model_choices(&self, file: &ConfigFile) -> Result<Vec<ModelChoice>> {
        let base = self.model_choice(file)?;
        let listed = file.executor.models.as_deref().unwrap_or_default();
        if self.model_path.is_some() || file.executor.model_path.is_some() || listed.is_empty() {
            return Ok(vec![base]);
        }
        listed
            .iter()
            .map(|m| {
                let kv_cache = match (&self.kv_cache_type, &m.kv_cache_type) {
                    (None, Some(name)) => name.parse()?,
                    _ => base.engine.kv_cache,
                };
                Ok(ModelChoice {
                    path: m.path.clone(),
                    name: m.name.clone(),
                    price_per_input_token: m
                        .price_per_input_token
                        .map_or(base.price_per_input_token, U256::from),
                    price_per_output_token: m
                        .price_per_output_token
                        .map_or(base.price_per_output_token, U256::from),
                    engine: EngineConfig {
                        n_ctx: m.n_ctx.unwrap_or(base.engine.n_ctx),
                        max_sequences: m.max_sequences.unwrap_or(base.engine.max_sequences),
                        kv_cache,
                        ..base.engine.clone()
                    },
                })
            })
            .collect()
    }

    /// The model to serve: flags, else the file, else defaults; fails on a KV cache type the
    /// file names that does not exist.
    pub fn model_choice(&self, file: &ConfigFile) -> Result<ModelChoice> {
        let ex = &file.executor;
        let defaults = EngineConfig::default();
        let kv_cache = match (&self.kv_cache_type, &ex.kv_cache_type) {
            (Some(kv), _) => *kv,
            (None, Some(name)) => name.parse()?,
            (None, None) => defaults.kv_cache,
        };
        Ok(ModelChoice {
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
                queue_per_client: self
                    .queue_per_client
                    .or(ex.queue_per_client)
                    .unwrap_or(defaults.queue_per_client),
                prompt_cache: !self.no_prompt_cache,
                kv_cache,
                ..defaults
            },
        })
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
            relay: self.relay.or(net.relay).unwrap_or_default(),
            nat_probe_private_addrs: self.nat_probe_private_addrs
                || net.nat_probe_private_addrs.unwrap_or(false),
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
            nonce_sync_interval: self
                .nonce_sync_ms
                .or(ex.nonce_sync_ms)
                .map_or(defaults.nonce_sync_interval, Duration::from_millis),
            commit_delay: self
                .commit_delay_us
                .or(ex.commit_delay_us)
                .map_or(defaults.commit_delay, Duration::from_micros),
            ..defaults
        };
        config.announce = AnnouncerConfig {
            heartbeat: Duration::from_secs(self.heartbeat_secs.max(1)),
            ..AnnouncerConfig::default()
        };
        config.max_concurrency = self
            .max_sequences
            .or(ex.max_sequences)
            .unwrap_or(EngineConfig::default().max_sequences);
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
    // Handlers first: a signal sent as soon as the addresses are printed must stop us cleanly.
    let mut signal = lloom_core::cli::ShutdownSignal::install()?;
    let key = load_key(&node.key_path(Role::Executor), &node.password_source())?;
    let choice = args.model_choice(&file)?;
    let budget = args.memory_budget(&file)?;
    let drain = Duration::from_secs(args.drain_secs(&file)?);
    let mut config = args.executor_config(&file, node.data_dir(Role::Executor));
    // Before the model loads: a bad setting should not cost the wait.
    config.serve.validate()?;
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
    let mut pool = None;
    let mut http = None;
    let models = match &args.backend_url {
        Some(url) => {
            let (served, backend) = http_backend(args, url, &choice).await?;
            http = Some(backend);
            vec![served]
        }
        None => {
            let choices = args.model_choices(&file)?;
            writeln!(out, "loading the model ...")?;
            out.flush()?;
            let bar = Bar::stderr();
            let prepared =
                tokio::task::spawn_blocking(move || prepare_models(&choices, budget, &bar))
                    .await
                    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
            write_plan(out, &prepared)?;
            config.max_concurrency = prepared
                .plans
                .iter()
                .map(|p| p.max_sequences)
                .max()
                .map_or(config.max_concurrency, |n| u32::try_from(n).unwrap_or(u32::MAX));
            config.free_memory = Some(pool_headroom(prepared.pool.clone()));
            pool = Some(prepared.pool.clone());
            prepared.served
        }
    };
    let offers: Vec<ModelOffer> = models.iter().map(|m| m.offer.clone()).collect();
    let free_memory = config.free_memory.clone();
    let mut executor = ExecutorNode::start(&key, models, config).await?;
    writeln!(out, "executor {} ({})", key.address().to_checksum(None), key.peer_id())?;
    for offer in &offers {
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
    }
    for addr in executor.listen_addrs().await? {
        writeln!(out, "listening on {addr}")?;
    }
    let stop = CancellationToken::new();
    if let Some(backend) = http {
        let every = Duration::from_secs(args.backend_check_secs);
        let stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopped.cancelled() => {}
                () = backend.watch(every) => {}
            }
        });
    }
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::Io(std::io::Error::new(e.kind(), format!("metrics on {addr}: {e}")))
        })?;
        writeln!(out, "metrics on http://{}/metrics", listener.local_addr()?)?;
        let metrics = ExecutorMetrics {
            server: executor.server.clone(),
            pool,
            free_memory,
            network: Some(executor.network.clone()),
        };
        let stopped = stop.clone();
        tokio::spawn(async move {
            // Scrapers need few connections; the limits keep idle ones from piling up.
            let limits = HttpLimits { max_connections: 64, ..HttpLimits::default() };
            let serve = HttpServer::new(listener, limits)
                .serve(metrics.router(), async move { stopped.cancelled().await });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "the metrics server stopped");
            }
        });
    }
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
    signal.next().await;
    writeln!(out, "shutting down: withdrawing the offers, refusing new requests")?;
    out.flush()?;
    let withdrawn = executor.start_draining().await;
    let in_flight = executor.server.in_flight();
    if in_flight > 0 && !drain.is_zero() {
        writeln!(
            out,
            "waiting up to {} s for {in_flight} request(s) in flight to finish (a second signal stops now)",
            drain.as_secs()
        )?;
        out.flush()?;
        let cut = tokio::select! {
            cut = executor.wait_drained(drain) => cut,
            () = signal.next() => executor.server.in_flight(),
        };
        match cut {
            0 => writeln!(out, "every request in flight finished")?,
            cut => {
                writeln!(out, "stopping with {cut} request(s) unfinished; their clients fail over")?
            }
        }
    }
    stop.cancel();
    executor.shutdown().await?;
    withdrawn
}

/// Prints the device, the budget and each model's plan.
fn write_plan(out: &mut (dyn Write + Send), prepared: &PreparedModels) -> Result<()> {
    let device = prepared.device.as_ref().map_or_else(
        || "memory unknown".to_owned(),
        |d| format!("{}: {} free of {}", d.name, format_bytes(d.free), format_bytes(d.total)),
    );
    writeln!(out, "memory budget {} ({device})", format_bytes(prepared.pool.budget()))?;
    for (model, plan) in prepared.served.iter().zip(&prepared.plans) {
        writeln!(
            out,
            "  {}: {} sequences of {} tokens ({} KV cache, {} each), {} layers on the GPU, needs {} GPU + {} host",
            model.offer.model,
            plan.max_sequences,
            plan.ctx_per_sequence,
            plan.kv,
            format_bytes(plan.kv_bytes_per_sequence),
            plan.gpu_layers,
            format_bytes(plan.gpu_bytes),
            format_bytes(plan.host_bytes)
        )?;
    }
    Ok(())
}

/// The memory the pool could still load models into; on a GPU build, also bounded by what
/// NVML reports free now (rounded down to 64 MiB so noise does not trigger announcements).
fn pool_headroom(pool: Arc<ModelPool>) -> FreeMemory {
    FreeMemory::new(move || {
        let headroom = pool.budget().saturating_sub(pool.used_bytes());
        match ServingDevice::of_this_build() {
            ServingDevice::Host => headroom,
            ServingDevice::Gpu => ServingDevice::Gpu
                .memory()
                .map_or(headroom, |m| headroom.min(m.free) & !((64 << 20) - 1)),
        }
    })
}

/// An OpenAI-compatible server as the backend (served, and for its watch); checked to list
/// the model before serving.
async fn http_backend(
    args: &StartArgs,
    url: &str,
    choice: &ModelChoice,
) -> Result<(ServedModel, Arc<OpenAiBackend>)> {
    let remote = args.backend_model.clone().or_else(|| choice.name.clone()).ok_or_else(|| {
        Error::Backend("--backend-url needs --backend-model or --model-name".into())
    })?;
    let mut config = OpenAiConfig::new(url, remote.clone());
    config.served_model = choice.name.clone().unwrap_or(remote);
    config.api_key = std::env::var(&args.backend_api_key_env).ok().filter(|k| !k.is_empty());
    config.max_concurrent = choice.engine.max_sequences.max(1) as usize * 4;
    config.context_length = args.context_length;
    let backend = Arc::new(OpenAiBackend::new(config.clone())?);
    let server = backend.probe().await?;
    let offer = ModelOffer {
        context_length: http_context_length(args.context_length, server.context_length),
        model: config.served_model,
        price_per_input_token: choice.price_per_input_token,
        price_per_output_token: choice.price_per_output_token,
        weights_sha256: None,
        quantization: None,
        capabilities: http_capabilities(args.backend_json),
    };
    Ok((ServedModel { offer, backend: backend.clone() }, backend))
}

/// The context an HTTP backend's offer announces: `--context-length` if given (with a warning
/// when it is more than the server reports), else what the server reports, else
/// [`DEFAULT_HTTP_CONTEXT`].
fn http_context_length(given: Option<u32>, reported: Option<u32>) -> u32 {
    match (given, reported) {
        (Some(given), Some(reported)) if given > reported => {
            tracing::warn!(
                "--context-length {given} is more than the {reported} tokens the server reports \
                 for a request; it will refuse prompts that need more"
            );
            given
        }
        (Some(given), _) => given,
        (None, Some(reported)) => {
            tracing::info!("the server gives a request {reported} tokens of context; announced");
            reported
        }
        (None, None) => {
            tracing::warn!(
                "the server does not report its context length; {DEFAULT_HTTP_CONTEXT} is \
                 announced (set --context-length to the server's)"
            );
            DEFAULT_HTTP_CONTEXT
        }
    }
}

/// The context announced for an HTTP backend that reports none, when none is configured.
const DEFAULT_HTTP_CONTEXT: u32 = 4096;

/// What an HTTP backend's offer announces: `json` only where the operator vouches for it.
fn http_capabilities(holds_json: bool) -> Vec<String> {
    let mut capabilities = vec!["chat".to_owned(), "stream".to_owned()];
    if holds_json {
        capabilities.push(CAPABILITY_JSON.to_owned());
    }
    capabilities
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn start_args(flags: &[&str]) -> StartArgs {
        let argv = ["lloom-executor", "start"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Start(args) => args,
            other => panic!("expected start, got {other:?}"),
        }
    }

    fn config(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lloom.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile::load(&path).unwrap()
    }

    #[test]
    fn an_http_backend_announces_the_context_given_else_the_servers_else_the_default() {
        assert_eq!(http_context_length(Some(2048), Some(8192)), 2048);
        assert_eq!(http_context_length(Some(16_384), Some(8192)), 16_384, "given wins, warned");
        assert_eq!(http_context_length(Some(2048), None), 2048);
        assert_eq!(http_context_length(None, Some(32_768)), 32_768);
        assert_eq!(http_context_length(None, None), DEFAULT_HTTP_CONTEXT);
        let url = ["--backend-url", "http://127.0.0.1:9/v1"];
        assert_eq!(start_args(&url).context_length, None);
        let argv = ["lloom-executor", "start", url[0], url[1], "--context-length", "0"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn an_http_backend_is_checked_every_ten_seconds_unless_told() {
        let url = ["--backend-url", "http://127.0.0.1:9/v1"];
        assert_eq!(start_args(&url).backend_check_secs, 10);
        assert_eq!(
            start_args(&[url[0], url[1], "--backend-check-secs", "2"]).backend_check_secs,
            2
        );
        assert_eq!(start_args(&[]).backend_check_secs, 10, "the default needs no backend");
        for bad in ["0", "3601", "x"] {
            let argv = ["lloom-executor", "start", url[0], url[1], "--backend-check-secs", bad];
            assert!(Cli::try_parse_from(argv).is_err(), "{bad}");
        }
        let argv = ["lloom-executor", "start", "--backend-check-secs", "5"];
        assert!(Cli::try_parse_from(argv).is_err(), "means nothing without an HTTP backend");
    }

    #[test]
    fn listed_models_take_unset_keys_from_the_executor_section_and_flags() {
        let file = config(
            "[executor]\nprice_per_output_token = 9\nn_ctx = 4096\nmemory_budget = \"2GiB\"\n\
             [[executor.models]]\nname = \"small\"\n\
             [[executor.models]]\npath = \"/m/big.gguf\"\nn_ctx = 16384\nprice_per_input_token = 3\n",
        );
        let choices = start_args(&["--max-sequences", "2"]).model_choices(&file).unwrap();
        assert_eq!(choices.len(), 2);
        assert_eq!((choices[0].name.as_deref(), choices[0].path.as_ref()), (Some("small"), None));
        assert_eq!(choices[0].price_per_output_token, U256::from(9));
        assert_eq!((choices[0].engine.n_ctx, choices[0].engine.max_sequences), (4096, 2));
        assert_eq!(choices[1].engine.n_ctx, 16_384);
        assert_eq!(choices[1].price_per_input_token, U256::from(3));
        assert_eq!(start_args(&[]).memory_budget(&file).unwrap(), MemoryBudget::Bytes(2 << 30));
        assert_eq!(
            start_args(&["--memory-budget", "50%"]).memory_budget(&file).unwrap(),
            MemoryBudget::FractionOfFree(0.5)
        );

        // --model-path serves that one file, whatever the list says.
        let one = start_args(&["--model-path", "/m/x.gguf"]).model_choices(&file).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].path.as_deref(), Some(std::path::Path::new("/m/x.gguf")));

        // The KV cache type: the flag for every model, else each entry's, else the section's.
        let kv = config(
            "[executor]\nkv_cache_type = \"q8_0\"\n[[executor.models]]\nname = \"a\"\n\
             [[executor.models]]\nname = \"b\"\nkv_cache_type = \"q4_0\"\n",
        );
        let types = |args: &[&str]| -> Vec<KvType> {
            let choices = start_args(args).model_choices(&kv).unwrap();
            choices.iter().map(|c| c.engine.kv_cache).collect()
        };
        assert_eq!(types(&[]), [KvType::Q8_0, KvType::Q4_0]);
        assert_eq!(types(&["--kv-cache-type", "f16"]), [KvType::F16, KvType::F16]);
        assert_eq!(start_args(&[]).model_choices(&file).unwrap()[0].engine.kv_cache, KvType::F16);
        let err = start_args(&[])
            .model_choice(&config("[executor]\nkv_cache_type = \"q3\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown KV cache type \"q3\""), "{err}");
        let entry = config("[[executor.models]]\nname = \"a\"\nkv_cache_type = \"fp8\"\n");
        assert!(start_args(&[]).model_choices(&entry).is_err());
        let argv = ["lloom-executor", "start", "--kv-cache-type", "q8"];
        assert!(Cli::try_parse_from(argv).is_err());
        // Settings of the embedded engine mean nothing in front of an HTTP server: refused.
        for engine_flag in [&["--kv-cache-type", "q8_0"][..], &["--no-prompt-cache"][..]] {
            let argv = [
                &["lloom-executor", "start", "--backend-url", "http://127.0.0.1:1/v1"][..],
                engine_flag,
            ]
            .concat();
            let err = Cli::try_parse_from(argv).unwrap_err().to_string();
            assert!(err.contains("cannot be used with"), "{engine_flag:?}: {err}");
        }

        let bad = config("[executor]\nmemory_budget = \"plenty\"\n");
        assert!(start_args(&[]).memory_budget(&bad).is_err());
        assert_eq!(start_args(&[]).model_choices(&ConfigFile::default()).unwrap().len(), 1);
    }

    #[test]
    fn the_drain_time_comes_from_the_flag_else_the_file_else_30_seconds_and_is_bounded() {
        let file = config("[executor]\ndrain_secs = 5\n");
        assert_eq!(start_args(&[]).drain_secs(&ConfigFile::default()).unwrap(), 30);
        assert_eq!(start_args(&[]).drain_secs(&file).unwrap(), 5);
        assert_eq!(start_args(&["--drain-secs", "0"]).drain_secs(&file).unwrap(), 0);
        let long = config("[executor]\ndrain_secs = 7200\n");
        let err = start_args(&[]).drain_secs(&long).unwrap_err().to_string();
        assert!(err.contains("drain_secs 7200 is above the most allowed, 3600"), "{err}");
        for bad in ["3601", "-1", "soon"] {
            assert!(Cli::try_parse_from(["lloom-executor", "start", "--drain-secs", bad]).is_err());
        }
    }

    #[test]
    fn an_http_backend_announces_json_only_when_the_operator_says_it_holds_to_it() {
        let args = start_args(&["--backend-url", "http://127.0.0.1:1/v1", "--backend-json"]);
        assert!(args.backend_json);
        assert_eq!(http_capabilities(args.backend_json), ["chat", "stream", CAPABILITY_JSON]);
        let args = start_args(&["--backend-url", "http://127.0.0.1:1/v1"]);
        assert_eq!(http_capabilities(args.backend_json), ["chat", "stream"]);
        // Without an HTTP backend the flag means nothing, and is refused.
        let argv = ["lloom-executor", "start", "--backend-json"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn the_nonce_sync_interval_comes_from_the_flag_else_the_file_else_one_second() {
        let dir = std::path::PathBuf::from("/tmp/unused");
        let interval = |flags: &[&str], file: &ConfigFile| {
            start_args(flags).executor_config(file, dir.clone()).serve.nonce_sync_interval
        };
        let none = ConfigFile::default();
        assert_eq!(interval(&[], &none), Duration::from_secs(1));
        let file = config("[executor]\nnonce_sync_ms = 250\n");
        assert_eq!(interval(&[], &file), Duration::from_millis(250));
        assert_eq!(interval(&["--nonce-sync-ms", "0"], &file), Duration::ZERO);
        assert!(Cli::try_parse_from(["lloom-executor", "start", "--nonce-sync-ms", "-1"]).is_err());
    }

    #[test]
    fn the_commit_delay_comes_from_the_flag_else_the_file_else_one_millisecond() {
        let dir = std::path::PathBuf::from("/tmp/unused");
        let delay = |flags: &[&str], file: &ConfigFile| {
            start_args(flags).executor_config(file, dir.clone()).serve.commit_delay
        };
        let none = ConfigFile::default();
        assert_eq!(delay(&[], &none), Duration::from_millis(1));
        let file = config("[executor]\ncommit_delay_us = 250\n");
        assert_eq!(delay(&[], &file), Duration::from_micros(250));
        assert_eq!(delay(&["--commit-delay-us", "0"], &file), Duration::ZERO);
        assert!(
            Cli::try_parse_from(["lloom-executor", "start", "--commit-delay-us", "x"]).is_err()
        );
    }
}
