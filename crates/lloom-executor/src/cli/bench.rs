//! `lloom-executor bench`: the engine benchmark on this machine.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::bench::{EngineBenchOptions, run_engine_bench};
use crate::error::{Error, Result};
use crate::memory::KvType;
use crate::models::{DEFAULT_MODEL, ModelCache};

/// Options of `lloom-executor bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The GGUF file [default: the default model, fetched on first use].
    #[arg(long, value_name = "PATH")]
    pub model_path: Option<PathBuf>,
    /// Tokens each stream generates (at most).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// Concurrent stream counts to measure besides one [default: 4,8; 16,64 in a cuda build].
    #[arg(long, value_delimiter = ',')]
    pub streams: Vec<usize>,
    /// CPU threads [default: all cores].
    #[arg(long)]
    pub threads: Option<u32>,
    /// Skip the plain llama.cpp loop used as the baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Rounds of plain loop and single-stream engine, alternated; the ratio is their median.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Also measure requests that come and go (staggered lengths) at the largest stream
    /// count, with the engine moving sequences into freed slots and without (a minute more).
    #[arg(long)]
    pub churn: bool,
    /// The engine's KV cache type: f16, q8_0 or q4_0 (the plain loop keeps f16).
    #[arg(long, value_name = "TYPE", default_value_t = KvType::F16)]
    pub kv_cache_type: KvType,
    /// Hold the engine's answers to JSON, to measure what the grammar costs.
    #[command(flatten)]
    pub format: lloom_core::cli::OutputFormatArgs,
}

pub(super) async fn run(args: &BenchArgs, json: bool, out: &mut (dyn Write + Send)) -> Result<()> {
    if args.max_tokens == 0 || args.rounds == 0 || args.streams.contains(&0) {
        return Err(Error::EngineConfig(
            "--max-tokens, --rounds and --streams must be positive".into(),
        ));
    }
    let path = match &args.model_path {
        Some(path) => path.clone(),
        None => {
            let cache = ModelCache::new(ModelCache::default_dir());
            let bar = super::Bar::stderr();
            tokio::task::spawn_blocking(move || cache.pull(&DEFAULT_MODEL, false, &bar))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??
                .path
        }
    };
    let concurrent = match args.streams.is_empty() {
        false => args.streams.clone(),
        true if cfg!(feature = "cuda") => vec![16, 64],
        true => vec![4, 8],
    };
    if args.churn && concurrent.iter().all(|&n| n < 2) {
        return Err(Error::EngineConfig("--churn needs a stream count of at least 2".into()));
    }
    let options = EngineBenchOptions {
        path,
        max_tokens: args.max_tokens,
        concurrent,
        threads: args.threads,
        baseline: !args.no_baseline,
        rounds: args.rounds,
        churn: args.churn,
        format: args.format.format()?,
        kv_cache: args.kv_cache_type,
    };
    if !json {
        writeln!(out, "benchmarking (a minute or so on a small CPU) ...")?;
        out.flush()?;
    }
    let report = run_engine_bench(&options).await?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report).unwrap_or_default())?;
    } else {
        writeln!(out, "{report}")?;
    }
    Ok(())
}
