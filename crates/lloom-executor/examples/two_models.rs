//! Two models in one executor process: how fast one decodes alone, next to the other loaded
//! and idle, and while both decode at once (one stream each, greedy, 128 tokens).
//!
//! ```sh
//! cargo run --profile perf -p lloom-executor --example two_models -- [MODEL.gguf] [ROUNDS] [THREADS]
//! ```
//!
//! Both engines load the same file (the default model unless a path is given), as two
//! configured models would, each with `THREADS` CPU threads (default: all cores). An empty
//! `MODEL.gguf` (`""`) also means the default model. This is the case that llama.cpp's OpenMP build slowed down (see
//! the benchmarks chapter of the book).
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lloom_core::{ChatMessage, Role, SamplingParams};
use lloom_executor::backend::llama::{EngineConfig, LlamaEngine};
use lloom_executor::backend::{Backend, GenerateRequest, GenerationEvent};
use lloom_executor::bench::PROMPT;
use lloom_executor::models::{DEFAULT_MODEL, ModelCache};

const MAX_TOKENS: u32 = 128;

/// Output tokens of one greedy stream and their rate over the stream's whole time.
async fn one_stream(engine: &LlamaEngine) -> Result<(u64, f64)> {
    let request = GenerateRequest {
        messages: vec![ChatMessage { role: Role::User, content: PROMPT.into() }],
        sampling: SamplingParams::default(),
        max_tokens: MAX_TOKENS,
        max_input_tokens: None,
        client: None,
    };
    let start = Instant::now();
    let mut generation = engine.generate(request)?;
    while let Some(event) = generation.events.recv().await {
        match event {
            GenerationEvent::Done(usage) => {
                #[allow(clippy::cast_precision_loss)]
                let rate = usage.output_tokens as f64 / start.elapsed().as_secs_f64();
                return Ok((usage.output_tokens, rate));
            }
            GenerationEvent::Failed(message)
            | GenerationEvent::Refused(message)
            | GenerationEvent::ContextExceeded(message) => {
                bail!("generation failed: {message}")
            }
            GenerationEvent::Started { .. } | GenerationEvent::Text { .. } => {}
        }
    }
    bail!("the engine ended the stream without a result")
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = match args.next() {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => ModelCache::new(ModelCache::default_dir()).pull(&DEFAULT_MODEL, false, &())?.path,
    };
    let rounds: usize = args.next().map_or(Ok(2), |r| r.parse()).context("ROUNDS")?;
    let threads: Option<u32> = args.next().map(|t| t.parse()).transpose().context("THREADS")?;
    let config = EngineConfig { n_ctx: 1024, max_sequences: 2, threads, ..EngineConfig::default() };

    let first = LlamaEngine::load("first", &path, config.clone())?;
    one_stream(&first).await?; // warm-up
    for _ in 0..rounds {
        let (_, rate) = one_stream(&first).await?;
        println!("first alone                 {rate:6.1} tok/s");
    }
    let second = LlamaEngine::load("second", &path, config)?;
    one_stream(&second).await?; // warm-up
    for _ in 0..rounds {
        let (_, rate) = one_stream(&first).await?;
        println!("first, second loaded idle   {rate:6.1} tok/s");
    }
    for _ in 0..rounds {
        let start = Instant::now();
        let (a, b) = tokio::join!(one_stream(&first), one_stream(&second));
        let ((tokens_a, rate_a), (tokens_b, rate_b)) = (a?, b?);
        #[allow(clippy::cast_precision_loss)]
        let aggregate = (tokens_a + tokens_b) as f64 / start.elapsed().as_secs_f64();
        println!(
            "both decoding at once       {rate_a:6.1} + {rate_b:6.1} tok/s, aggregate {aggregate:6.1}"
        );
    }
    Ok(())
}
