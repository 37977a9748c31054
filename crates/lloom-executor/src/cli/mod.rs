//! Command-line interface of `lloom-executor`.

mod bench;
mod chain;
mod init;
mod start;
mod start_args;

pub use chain::{ChainArgs, ChainCommand};
pub use init::{InitArgs, template as config_template};

pub use start_args::{DEFAULT_PRICE_PER_INPUT_TOKEN, DEFAULT_PRICE_PER_OUTPUT_TOKEN, StartArgs};

use std::io::Write;

use clap::{Parser, Subcommand};
use lloom_core::cli::{KeysCommand, NodeArgs, Role, run_keys};

use crate::error::{Error, Result};
use crate::models::{DEFAULT_MODEL, ModelCache, ModelSpec, PullProgress};

/// Lloom executor: serve LLM requests on local hardware and sign what is returned.
#[derive(Parser, Debug)]
#[command(name = "lloom-executor", version, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options shared by every Lloom node.
    #[command(flatten)]
    pub node: NodeArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `lloom-executor`.
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Manage the node key (one secp256k1 key: Ethereum address and libp2p peer id).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Download and list model files.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Generate locally with the embedded engine (no network): checks a model and this machine.
    Generate(GenerateArgs),
    /// Write a commented configuration file with every setting and its default.
    Init(InitArgs),
    /// Serve models on the network: announce them and answer signed requests until stopped.
    Start(StartArgs),
    /// Settlement on chain: settle receipts, show and withdraw earnings.
    #[command(subcommand)]
    Chain(ChainCommand),
    /// Benchmark the engine here: a plain llama.cpp loop, then 1 and several concurrent
    /// streams, and the model's memory (measured against the plan).
    Bench(bench::BenchArgs),
}

/// Options of `lloom-executor generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// The user message; `-` reads it from standard input.
    pub prompt: String,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
    /// Serve this GGUF file instead of the default model (fetched on first use).
    #[arg(long, value_name = "PATH")]
    pub model_path: Option<std::path::PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// How to sample the answer, and its shape.
    #[command(flatten)]
    pub sampling: lloom_core::cli::SamplingArgs,
}

/// `lloom-executor models ...`.
#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Download a model into the cache and verify its size and sha256.
    Pull {
        /// Model name.
        #[arg(default_value = DEFAULT_MODEL.name)]
        name: String,
        /// Download again even if a verified copy is cached.
        #[arg(long)]
        force: bool,
    },
    /// List the model files in the cache.
    List,
    /// Read a GGUF file's geometry and plan its memory: layers to offload, sequences that fit.
    Inspect(InspectArgs),
}

/// Options of `lloom-executor models inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The GGUF file [default: the default model, fetched on first use].
    pub path: Option<std::path::PathBuf>,
    /// Total context (KV cache) in tokens.
    #[arg(long, default_value_t = 8192)]
    pub n_ctx: u64,
    /// Sequences wanted at once.
    #[arg(long, default_value_t = 4)]
    pub max_sequences: u64,
    /// Accelerator memory available, in MiB [default: none, CPU only].
    #[arg(long)]
    pub gpu_mib: Option<u64>,
    /// Layers to offload: auto (as many as fit), all, or a number (refused when they do not
    /// fit).
    #[arg(long, value_name = "auto|all|N", default_value_t = crate::memory::GpuLayers::Auto)]
    pub gpu_layers: crate::memory::GpuLayers,
    /// Refuse unless every layer fits on the accelerator (the same as `--gpu-layers all`).
    #[arg(long, conflicts_with = "gpu_layers")]
    pub full_offload: bool,
    /// Element type of the KV cache: f16, q8_0 or q4_0.
    #[arg(long, value_name = "TYPE", default_value_t = crate::memory::KvType::F16)]
    pub kv_cache_type: crate::memory::KvType,
}

/// Draws model download progress on stderr (hidden when stderr is not a terminal).
pub struct Bar(indicatif::ProgressBar);

impl Bar {
    /// A bar drawn on stderr.
    pub fn stderr() -> Self {
        Self(indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stderr(),
        ))
    }
}

impl PullProgress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        self.0.set_message("extracting");
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Runs a parsed command line, writing its output to `out`.
pub async fn run(cli: &Cli, out: &mut (dyn Write + Send)) -> Result<()> {
    match &cli.command {
        Command::Keys(cmd) => {
            let report = run_keys(cmd, &cli.node, Role::Executor)?;
            writeln!(out, "{}", report.render(cli.node.json))?;
        }
        Command::Models(ModelsCommand::Pull { name, force }) => {
            let spec = ModelSpec::by_name(name).ok_or_else(|| Error::UnknownModel(name.clone()))?;
            let cache = ModelCache::new(ModelCache::default_dir());
            if !cli.node.json {
                writeln!(
                    out,
                    "fetching {} ({} bytes) into {}",
                    spec.name,
                    spec.size,
                    cache.dir().display()
                )?;
                out.flush()?;
            }
            let bar = Bar::stderr();
            let (cache_ref, spec_copy, force) = (cache.clone(), *spec, *force);
            let model =
                tokio::task::spawn_blocking(move || cache_ref.pull(&spec_copy, force, &bar))
                    .await
                    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
            if cli.node.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&model).unwrap_or_default())?;
            } else {
                writeln!(
                    out,
                    "verified {} (sha256 {})\n{}",
                    model.name,
                    model.sha256,
                    model.path.display()
                )?;
            }
        }
        Command::Generate(args) => generate(args, cli.node.json, out).await?,
        Command::Init(args) => init::run(args, &cli.node, out)?,
        Command::Start(args) => start::run(args, &cli.node, out).await?,
        Command::Chain(cmd) => chain::run(cmd, &cli.node, out).await?,
        Command::Bench(args) => bench::run(args, cli.node.json, out).await?,
        Command::Models(ModelsCommand::Inspect(args)) => inspect(args, cli.node.json, out).await?,
        Command::Models(ModelsCommand::List) => {
            let cache = ModelCache::new(ModelCache::default_dir());
            let models = cache.list()?;
            if cli.node.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&models).unwrap_or_default())?;
            } else if models.is_empty() {
                writeln!(
                    out,
                    "no models in {}; run `lloom-executor models pull`",
                    cache.dir().display()
                )?;
            } else {
                for m in models {
                    let known = m.known_as.map(|k| format!("  ({k})")).unwrap_or_default();
                    writeln!(out, "{}  {} bytes{known}", m.file_name, m.size)?;
                }
            }
        }
    }
    Ok(())
}

async fn generate(args: &GenerateArgs, json: bool, out: &mut (dyn Write + Send)) -> Result<()> {
    use crate::backend::llama::{EngineConfig, LlamaEngine};
    use crate::backend::{Backend, GenerateRequest, GenerationEvent};
    use lloom_core::{ChatMessage, Role};

    // Check the request before the (slow) model fetch and load.
    let sampling = args.sampling.params()?;
    let prompt = lloom_core::cli::read_prompt(&args.prompt, std::io::stdin().lock())?;
    let (name, path) = match &args.model_path {
        Some(path) => (
            path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            path.clone(),
        ),
        None => {
            let cache = ModelCache::new(ModelCache::default_dir());
            let model = tokio::task::spawn_blocking(move || cache.pull(&DEFAULT_MODEL, false, &()))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
            (model.name, model.path)
        }
    };
    let config = EngineConfig { max_sequences: 1, n_ctx: 4096, ..EngineConfig::default() };
    let engine = tokio::task::spawn_blocking(move || LlamaEngine::load(name, &path, config))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage { role: Role::System, content: system.clone() });
    }
    messages.push(ChatMessage { role: Role::User, content: prompt });
    let mut generation = engine.generate(GenerateRequest {
        messages,
        sampling,
        max_tokens: args.max_tokens,
        max_input_tokens: None,
        client: None,
    })?;
    let mut text = String::new();
    while let Some(event) = generation.events.recv().await {
        match event {
            GenerationEvent::Started { .. } => {}
            GenerationEvent::Text { text: piece, .. } => {
                if !json {
                    write!(out, "{piece}")?;
                    out.flush()?;
                }
                text.push_str(&piece);
            }
            GenerationEvent::Done(usage) => {
                if json {
                    let report = serde_json::json!({
                        "text": text,
                        "input_tokens": usage.input_tokens,
                        "output_tokens": usage.output_tokens,
                        "finish_reason": usage.finish.as_str(),
                    });
                    writeln!(out, "{}", serde_json::to_string_pretty(&report).unwrap_or_default())?;
                } else {
                    writeln!(out)?;
                    out.flush()?;
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!(
                            "[{} input tokens, {} output tokens, finish: {}]",
                            usage.input_tokens,
                            usage.output_tokens,
                            usage.finish.as_str()
                        );
                    }
                }
                return Ok(());
            }
            GenerationEvent::Failed(message) => return Err(Error::EngineLoad(message)),
            GenerationEvent::Refused(message) | GenerationEvent::ContextExceeded(message) => {
                return Err(Error::Unservable(message));
            }
        }
    }
    Err(Error::EngineLoad("the engine stopped without finishing".into()))
}

async fn inspect(args: &InspectArgs, json: bool, out: &mut (dyn Write + Send)) -> Result<()> {
    use crate::memory::{MemoryRequest, ModelGeometry, plan, read_metadata};
    let path = match &args.path {
        Some(path) => path.clone(),
        None => {
            let cache = ModelCache::new(ModelCache::default_dir());
            tokio::task::spawn_blocking(move || cache.pull(&DEFAULT_MODEL, false, &()))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??
                .path
        }
    };
    let meta = read_metadata(&path)?;
    let size = std::fs::metadata(&path)?.len();
    let g = ModelGeometry::from_gguf(&meta, size)?;
    let request = MemoryRequest {
        n_ctx: args.n_ctx,
        max_sequences: args.max_sequences,
        kv: args.kv_cache_type,
        n_ubatch: 512,
        gpu_budget: args.gpu_mib.map(|m| m << 20),
        gpu_layers: match args.full_offload {
            true => crate::memory::GpuLayers::All,
            false => args.gpu_layers,
        },
        repacked: crate::memory::RepackedTypes::of_this_build(),
    };
    let p = plan(&g, &request)?;
    #[allow(clippy::cast_precision_loss)] // display only
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    if json {
        let report = serde_json::json!({
            "path": path.display().to_string(),
            "architecture": meta.architecture(),
            "layers": g.n_layers, "embedding": g.n_embd, "heads": g.n_head,
            "kv_heads": g.n_head_kv, "head_dim": g.head_dim, "vocab": g.n_vocab,
            "weights_bytes": g.weights_bytes(),
            "kv_cache_type": args.kv_cache_type.name(),
            "kv_bytes_per_token": g.kv_bytes_per_token(args.kv_cache_type),
            "plan": {
                "gpu_layers": p.gpu_layers, "max_sequences": p.max_sequences,
                "ctx_per_sequence": p.ctx_per_sequence, "gpu_bytes": p.gpu_bytes,
                "host_bytes": p.host_bytes, "kv_bytes_per_sequence": p.kv_bytes_per_sequence,
            },
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&report).unwrap_or_default())?;
        return Ok(());
    }
    let arch = meta.architecture().unwrap_or("?");
    writeln!(out, "{} ({arch}, GGUF v{})", path.display(), meta.version)?;
    writeln!(
        out,
        "  {} layers, {} wide, {} heads ({} KV heads of {}), vocabulary {}",
        g.n_layers, g.n_embd, g.n_head, g.n_head_kv, g.head_dim, g.n_vocab
    )?;
    writeln!(
        out,
        "  weights {:.1} MiB ({:.2} MiB per layer); KV cache {} bytes per token ({})",
        mib(g.weights_bytes()),
        mib(g.layer_bytes),
        g.kv_bytes_per_token(args.kv_cache_type),
        args.kv_cache_type
    )?;
    writeln!(
        out,
        "plan: {} of {} layers on the GPU, {} sequences of {} tokens ({:.1} MiB KV each); GPU {:.1} MiB, host {:.1} MiB",
        p.gpu_layers,
        g.n_layers,
        p.max_sequences,
        p.ctx_per_sequence,
        mib(p.kv_bytes_per_sequence),
        mib(p.gpu_bytes),
        mib(p.host_bytes)
    )?;
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
        Cli::try_parse_from(["lloom-executor", "keys", "show"]).unwrap();
        let cli = Cli::try_parse_from(["lloom-executor", "models", "pull"]).unwrap();
        let Command::Models(ModelsCommand::Pull { name, force }) = cli.command else {
            panic!("expected models pull")
        };
        assert_eq!((name.as_str(), force), (DEFAULT_MODEL.name, false));
        Cli::try_parse_from(["lloom-executor", "--json", "models", "list"]).unwrap();
        assert!(Cli::try_parse_from(["lloom-executor", "keys", "import"]).is_err());
    }
}
