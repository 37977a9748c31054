//! `lloom-executor bench`: the engine benchmark on this machine.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::bench::{EngineBenchOptions, run_engine_bench};
use crate::error::{Error, Result};
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
    let options = EngineBenchOptions {
        path,
        max_tokens: args.max_tokens,
        concurrent,
        threads: args.threads,
        baseline: !args.no_baseline,
        rounds: args.rounds,
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let wait_policy = std::env::var("OMP_WAIT_POLICY").ok();
    if let Some(warning) = shared_openmp_warning(&options, cores, wait_policy.as_deref()) {
        tracing::warn!("{warning}");
    }
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

/// The warning for a run whose plain-loop baseline shares the process with the engine, and
/// whose two OpenMP teams (each of `options.threads`, default all `cores`) have more threads
/// than the machine has cores.
///
/// The baseline thread and the engine's worker each own an OpenMP team. With more OpenMP
/// threads than cores, libgomp spins far less at a barrier before it sleeps (its
/// `GOMP_SPINCOUNT` rules), and a single stream decodes far slower (measured on a 2-core
/// machine: about 40 instead of about 105 tok/s, for both sides). The engine-to-plain ratio
/// stays fair; figures against a single stream do not. `OMP_WAIT_POLICY=active`, read when
/// the process starts, restored the single-stream speed there.
fn shared_openmp_warning(
    options: &EngineBenchOptions,
    cores: usize,
    wait_policy: Option<&str>,
) -> Option<&'static str> {
    let threads = options.threads.map_or(cores, |t| usize::try_from(t).unwrap_or(usize::MAX));
    let oversubscribed = options.baseline && threads.saturating_mul(2) > cores;
    let active = wait_policy.is_some_and(|p| p.trim().eq_ignore_ascii_case("active"));
    (oversubscribed && !active).then_some(
        "the plain-loop baseline and the engine each own an OpenMP team, together more threads \
         than this machine has cores: single-stream decode slows for both (the ratio between them stays \
         fair). For absolute figures run with OMP_WAIT_POLICY=active, or with --no-baseline.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(baseline: bool, threads: Option<u32>) -> EngineBenchOptions {
        EngineBenchOptions {
            path: PathBuf::from("model.gguf"),
            max_tokens: 8,
            concurrent: vec![8],
            threads,
            baseline,
            rounds: 1,
        }
    }

    #[test]
    fn the_openmp_warning_is_given_only_when_oversubscribed_without_active_waiting() {
        // Default threads (all cores), baseline on: two teams of 2 on 2 cores.
        assert!(shared_openmp_warning(&options(true, None), 2, None).is_some());
        assert!(shared_openmp_warning(&options(true, None), 2, Some("passive")).is_some());
        assert!(shared_openmp_warning(&options(true, None), 2, Some("ACTIVE")).is_none());
        assert!(shared_openmp_warning(&options(true, None), 2, Some(" active ")).is_none());
        // No baseline: one team.
        assert!(shared_openmp_warning(&options(false, None), 2, None).is_none());
        // Two teams of 4 fit 8 cores; of 5 they do not.
        assert!(shared_openmp_warning(&options(true, Some(4)), 8, None).is_none());
        assert!(shared_openmp_warning(&options(true, Some(5)), 8, None).is_some());
    }
}
