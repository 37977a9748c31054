//! The options of `lloom-executor start` and what they resolve to, with the configuration file
//! and the defaults: the models to serve, the memory budget, the node's settings, the drain
//! time.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lloom_core::U256;
use lloom_core::cli::{ConfigFile, NetworkArgs};

use crate::announcer::AnnouncerConfig;
use crate::backend::llama::EngineConfig;
use crate::error::{Error, Result};
use crate::memory::{GpuLayers, KvType, MemoryBudget};
use crate::models::ModelChoice;
use crate::node::ExecutorConfig;
use crate::serve::{RateLimits, ServeConfig};

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
    /// Network options.
    #[command(flatten)]
    pub network: NetworkArgs,
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
    /// Layers to offload to the GPU in a `cuda` build: auto (as many as the memory budget
    /// holds, with every sequence's KV cache), all, or a number (more than the model has means
    /// all; 0 keeps the model on the CPU); a number or all that does not fit is refused
    /// [default: auto].
    #[arg(long, value_name = "auto|all|N", conflicts_with = "backend_url")]
    pub gpu_layers: Option<GpuLayers>,
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
    /// At shutdown, after the drain, seconds a last settlement round may take to submit the
    /// receipts made since the round before; 0: none (they wait for the next start). At most
    /// 600.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(0..=600)
    )]
    pub settle_on_stop_secs: u64,
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
                let offload = match (&self.gpu_layers, &m.gpu_layers) {
                    (None, Some(layers)) => layers.to_string().parse()?,
                    _ => base.engine.offload,
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
                        offload,
                        ..base.engine.clone()
                    },
                })
            })
            .collect()
    }

    /// The model to serve: flags, else the file, else defaults; fails on a GPU layer count or
    /// a KV cache type the file names that does not exist.
    pub fn model_choice(&self, file: &ConfigFile) -> Result<ModelChoice> {
        let ex = &file.executor;
        let defaults = EngineConfig::default();
        let kv_cache = match (&self.kv_cache_type, &ex.kv_cache_type) {
            (Some(kv), _) => *kv,
            (None, Some(name)) => name.parse()?,
            (None, None) => defaults.kv_cache,
        };
        let offload = match (&self.gpu_layers, &ex.gpu_layers) {
            (Some(layers), _) => *layers,
            (None, Some(layers)) => layers.to_string().parse()?,
            (None, None) => defaults.offload,
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
                offload,
                ..defaults
            },
        })
    }

    /// The node configuration: flags and environment, else the file, else defaults.
    pub fn executor_config(&self, file: &ConfigFile, data_dir: PathBuf) -> ExecutorConfig {
        let ex = &file.executor;
        let defaults = ServeConfig::default();
        let mut config = ExecutorConfig::new(data_dir);
        config.network = self.network.resolve(&file.network, 0);
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

/// `lloom-executor start FLAGS`, parsed (for tests).
#[cfg(test)]
pub(super) fn parsed(flags: &[&str]) -> StartArgs {
    let argv = ["lloom-executor", "start"].iter().chain(flags);
    match <super::Cli as clap::Parser>::try_parse_from(argv).unwrap().command {
        super::Command::Start(args) => args,
        other => panic!("expected start, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    use super::parsed as start_args;

    fn config(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lloom.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile::load(&path).unwrap()
    }

    #[test]
    fn the_last_settlement_round_takes_at_most_30_seconds_unless_told() {
        assert_eq!(start_args(&[]).settle_on_stop_secs, 30);
        assert_eq!(start_args(&["--settle-on-stop-secs", "0"]).settle_on_stop_secs, 0);
        assert_eq!(start_args(&["--settle-on-stop-secs", "600"]).settle_on_stop_secs, 600);
        for bad in ["601", "-1", "soon"] {
            let argv = ["lloom-executor", "start", "--settle-on-stop-secs", bad];
            assert!(Cli::try_parse_from(argv).is_err(), "{bad}");
        }
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
        // The GPU layers: the flag for every model, else each entry's, else the section's.
        let layers = config(
            "[executor]\ngpu_layers = \"all\"\n[[executor.models]]\nname = \"a\"\n\
             [[executor.models]]\nname = \"b\"\ngpu_layers = 12\n",
        );
        let offloads = |args: &[&str]| -> Vec<GpuLayers> {
            let choices = start_args(args).model_choices(&layers).unwrap();
            choices.iter().map(|c| c.engine.offload).collect()
        };
        assert_eq!(offloads(&[]), [GpuLayers::All, GpuLayers::Exactly(12)]);
        assert_eq!(offloads(&["--gpu-layers", "0"]), [GpuLayers::Exactly(0); 2]);
        assert_eq!(
            start_args(&[]).model_choices(&file).unwrap()[0].engine.offload,
            GpuLayers::Auto
        );
        let err = start_args(&[])
            .model_choice(&config("[executor]\ngpu_layers = \"most\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown GPU layer count \"most\""), "{err}");
        let entry = config("[[executor.models]]\nname = \"a\"\ngpu_layers = \"half\"\n");
        assert!(start_args(&[]).model_choices(&entry).is_err());
        assert!(Cli::try_parse_from(["lloom-executor", "start", "--gpu-layers", "-3"]).is_err());
        // Settings of the embedded engine mean nothing in front of an HTTP server: refused.
        for engine_flag in [
            &["--kv-cache-type", "q8_0"][..],
            &["--no-prompt-cache"][..],
            &["--gpu-layers", "all"][..],
        ] {
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
