//! Engine figures: the embedded engine against a plain single-sequence llama.cpp greedy loop
//! over the same model and thread count, in the same run.
//!
//! `cargo bench -p lloom-executor --bench engine`
//!
//! Reports, for the default model: time to first token, prompt processing and decode tokens/s
//! for one stream, and aggregate decode tokens/s for 4 and 8 concurrent streams. Under
//! `cargo test` (no `--bench` argument) it runs one short generation as a smoke test.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::indexing_slicing)]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use lloom_core::{ChatMessage, Role, SamplingParams};
use lloom_executor::backend::llama::{EngineConfig, LlamaEngine};
use lloom_executor::backend::{Backend, GenerateRequest, GenerationEvent};
use lloom_executor::models::{DEFAULT_MODEL, ModelCache};

const PROMPT: &str = "Write a detailed story about a lighthouse keeper and a storm.";

struct Run {
    ttft: Duration,
    prompt_tokens: u64,
    output_tokens: u64,
    decode_time: Duration,
}

/// The simplest use of the library: one sequence, greedy, token by token.
fn plain_loop(path: &std::path::Path, max_tokens: u32, threads: i32) -> Run {
    let mut backend = LlamaBackend::init().unwrap();
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default()).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(2048))
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, params).unwrap();
    let template = model.chat_template(None).unwrap();
    let msg = LlamaChatMessage::new("user".into(), PROMPT.into()).unwrap();
    let prompt = model.apply_chat_template(&template, &[msg], true).unwrap();
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
    let start = Instant::now();
    let mut batch = LlamaBatch::new(2048, 1);
    let last = tokens.len() - 1;
    for (i, t) in tokens.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i == last).unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    let mut sampler = LlamaSampler::greedy();
    let mut pos = tokens.len() as i32;
    let mut token = sampler.sample(&ctx, batch.n_tokens() - 1);
    let ttft = start.elapsed();
    let mut output = 0u64;
    let decode_start = Instant::now();
    while !model.vocab().is_eog(token) && output < u64::from(max_tokens) {
        output += 1;
        let _ = model.vocab().token_to_piece(token, false, None);
        batch.clear();
        batch.add(token, pos, &[0], true).unwrap();
        pos += 1;
        ctx.decode(&mut batch).unwrap();
        token = sampler.sample(&ctx, 0);
    }
    Run {
        ttft,
        prompt_tokens: tokens.len() as u64,
        output_tokens: output,
        decode_time: decode_start.elapsed(),
    }
}

fn request(max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        messages: vec![ChatMessage { role: Role::User, content: PROMPT.into() }],
        sampling: SamplingParams::default(),
        max_tokens,
        max_input_tokens: None,
    }
}

async fn engine_streams(
    engine: &LlamaEngine,
    streams: usize,
    max_tokens: u32,
) -> (Duration, u64, Duration) {
    let start = Instant::now();
    let mut gens: Vec<_> =
        (0..streams).map(|_| engine.generate(request(max_tokens)).unwrap()).collect();
    let mut first = None;
    let mut total = 0;
    for g in &mut gens {
        while let Some(event) = g.events.recv().await {
            match event {
                GenerationEvent::Started { .. } => {}
                GenerationEvent::Text { .. } => {
                    first.get_or_insert_with(|| start.elapsed());
                }
                GenerationEvent::Done(usage) => {
                    total += usage.output_tokens;
                    break;
                }
                GenerationEvent::Failed(e) => panic!("{e}"),
            }
        }
    }
    (first.unwrap_or_default(), total, start.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let max_tokens = if benching { 128 } else { 8 };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as i32;
    let path =
        ModelCache::new(ModelCache::default_dir()).pull(&DEFAULT_MODEL, false, &()).unwrap().path;

    // The baseline runs first and frees llama.cpp's process-wide backend when done, so the
    // engine can initialize it again.
    let plain = plain_loop(&path, max_tokens, threads);
    let base = plain.output_tokens as f64 / plain.decode_time.as_secs_f64();
    println!(
        "plain loop      ttft {:>7.1?}  prompt {:>3} tok ({:.0} tok/s)  decode {base:>6.1} tok/s ({} tokens)",
        plain.ttft,
        plain.prompt_tokens,
        plain.prompt_tokens as f64 / plain.ttft.as_secs_f64(),
        plain.output_tokens
    );

    let load = Instant::now();
    let config = EngineConfig { n_ctx: 8 * 1024, max_sequences: 8, ..EngineConfig::default() };
    let engine = LlamaEngine::load(DEFAULT_MODEL.name, &path, config).unwrap();
    println!("engine loaded {} in {:.2?}, {threads} threads", DEFAULT_MODEL.name, load.elapsed());
    let (ttft, tokens, wall) = engine_streams(&engine, 1, max_tokens).await;
    let single = tokens as f64 / (wall - ttft).as_secs_f64();
    println!("engine x1       ttft {ttft:>7.1?}  decode {single:>6.1} tok/s ({tokens} tokens)");
    println!("engine x1 / plain loop decode: {:.2}", single / base);
    for streams in [4usize, 8] {
        let (ttft, tokens, wall) = engine_streams(&engine, streams, max_tokens).await;
        let aggregate = tokens as f64 / wall.as_secs_f64();
        println!(
            "engine x{streams}       first token {ttft:>7.1?}  aggregate {aggregate:>6.1} tok/s ({tokens} tokens in {wall:.2?}) = {:.2}x single",
            aggregate / single
        );
    }
}
