//! The benchmark's baselines, on a thread that keeps its model and contexts loaded between
//! runs: the simplest use of the library (one sequence, greedy, token by token), and the
//! simplest batched use of it (several sequences, each step one `llama_decode` over all of
//! them), the ceiling that continuous batching can reach with this library on this machine.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;

use super::{BaselineFigures, BatchedFigures, PROMPT, context_tokens};
use crate::backend::llama::shared_backend;
use crate::error::{Error, Result};

/// Context size of the plain loop.
const PLAIN_CTX: u32 = 2048;

/// One run asked of the baseline thread.
enum Run {
    /// One sequence, token by token.
    Single(oneshot::Sender<Result<BaselineFigures>>),
    /// This many sequences decoded together.
    Batched(usize, oneshot::Sender<Result<BatchedFigures>>),
}

/// A loaded plain loop; each run generates from an empty cache.
#[derive(Debug)]
pub(super) struct PlainLoop {
    runs: Option<mpsc::Sender<Run>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn fail(e: &dyn std::fmt::Display) -> Error {
    Error::EngineLoad(format!("baseline: {e}"))
}

impl PlainLoop {
    /// Loads the model on a thread of its own, with room for up to `max_streams` batched
    /// sequences; returns once it is ready.
    pub(super) async fn load(
        path: &Path,
        max_tokens: u32,
        max_streams: usize,
        threads: u32,
        gpu_layers: u32,
    ) -> Result<Self> {
        let (runs, requests) = mpsc::channel::<Run>();
        let (ready_tx, ready) = oneshot::channel();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("bench-plain-loop".into())
            .spawn(move || {
                let shape = Shape { max_tokens, max_streams, threads, gpu_layers };
                serve(&path, &shape, &requests, ready_tx);
            })
            .map_err(Error::Io)?;
        ready.await.map_err(|_| fail(&"the plain loop's thread died"))??;
        Ok(Self { runs: Some(runs), thread: Some(thread) })
    }

    /// One greedy generation of at most `max_tokens`.
    pub(super) async fn run(&self) -> Result<BaselineFigures> {
        let (reply, figures) = oneshot::channel();
        self.send(Run::Single(reply))?;
        figures.await.map_err(|_| fail(&"the plain loop's thread died"))?
    }

    /// `streams` greedy generations decoded together, each of at most `max_tokens`.
    pub(super) async fn run_batched(&self, streams: usize) -> Result<BatchedFigures> {
        let (reply, figures) = oneshot::channel();
        self.send(Run::Batched(streams, reply))?;
        figures.await.map_err(|_| fail(&"the plain loop's thread died"))?
    }

    fn send(&self, run: Run) -> Result<()> {
        self.runs
            .as_ref()
            .and_then(|runs| runs.send(run).ok())
            .ok_or_else(|| fail(&"the plain loop has stopped"))
    }
}

impl Drop for PlainLoop {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.runs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the baseline thread loads.
struct Shape {
    max_tokens: u32,
    max_streams: usize,
    threads: u32,
    gpu_layers: u32,
}

fn serve(
    path: &Path,
    shape: &Shape,
    requests: &mpsc::Receiver<Run>,
    ready: oneshot::Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    if let Err(e) = load_and_serve(path, shape, requests, &mut ready)
        && let Some(ready) = ready
    {
        let _ = ready.send(Err(e));
    }
}

/// Loads the model and both contexts, reports ready, then runs what `requests` asks.
fn load_and_serve(
    path: &Path,
    shape: &Shape,
    requests: &mpsc::Receiver<Run>,
    ready: &mut Option<oneshot::Sender<Result<()>>>,
) -> Result<()> {
    let backend = shared_backend().map_err(|e| fail(&e))?;
    let params = LlamaModelParams::default().with_n_gpu_layers(shape.gpu_layers);
    let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| fail(&e))?;
    let threads = i32::try_from(shape.threads).unwrap_or(1);
    let single = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(PLAIN_CTX))
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let streams = u32::try_from(shape.max_streams.max(1)).unwrap_or(u32::MAX);
    let batched_ctx = context_tokens(streams, shape.max_tokens);
    let batched = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(batched_ctx))
        .with_n_batch(batched_ctx)
        .with_n_seq_max(streams)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut single = model.new_context(backend, single).map_err(|e| fail(&e))?;
    let mut batched = model.new_context(backend, batched).map_err(|e| fail(&e))?;
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    }
    while let Ok(run) = requests.recv() {
        match run {
            Run::Single(reply) => {
                single.clear_kv_cache();
                let _ = reply.send(generate(&model, &mut single, shape.max_tokens));
            }
            Run::Batched(streams, reply) => {
                batched.clear_kv_cache();
                let streams = streams.min(shape.max_streams);
                let _ =
                    reply.send(generate_batched(&model, &mut batched, streams, shape.max_tokens));
            }
        }
    }
    Ok(())
}

fn prompt(model: &LlamaModel) -> Result<Vec<LlamaToken>> {
    let template = model.chat_template(None).map_err(|e| fail(&e))?;
    let message = LlamaChatMessage::new("user".into(), PROMPT.into()).map_err(|e| fail(&e))?;
    let prompt = model.apply_chat_template(&template, &[message], true).map_err(|e| fail(&e))?;
    Ok(model.vocab().tokenize(prompt.as_bytes(), true, true))
}

/// Prompt, then greedy decoding one token per `llama_decode`.
fn generate(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    max_tokens: u32,
) -> Result<BaselineFigures> {
    let tokens = prompt(model)?;
    let start = Instant::now();
    let mut batch = LlamaBatch::new(PLAIN_CTX as usize, 1);
    let last = tokens.len().saturating_sub(1);
    for (i, t) in tokens.iter().enumerate() {
        let pos = i32::try_from(i).unwrap_or(i32::MAX);
        batch.add(*t, pos, &[0], i == last).map_err(|e| fail(&e))?;
    }
    ctx.decode(&mut batch).map_err(|e| fail(&e))?;
    let mut sampler = LlamaSampler::greedy();
    let mut pos = i32::try_from(tokens.len()).unwrap_or(i32::MAX);
    let mut token = sampler.sample(ctx, batch.n_tokens() - 1);
    let ttft = start.elapsed();
    let mut output = 0u64;
    let decode_start = Instant::now();
    while !model.vocab().is_eog(token) && output < u64::from(max_tokens) {
        output += 1;
        let _ = model.vocab().token_to_piece(token, false, None);
        batch.clear();
        batch.add(token, pos, &[0], true).map_err(|e| fail(&e))?;
        pos += 1;
        ctx.decode(&mut batch).map_err(|e| fail(&e))?;
        token = sampler.sample(ctx, 0);
    }
    let decode = decode_start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    #[allow(clippy::cast_precision_loss)]
    Ok(BaselineFigures {
        prompt_tokens: tokens.len() as u64,
        ttft_secs: ttft.as_secs_f64(),
        prompt_tokens_per_sec: tokens.len() as f64 / ttft.as_secs_f64().max(f64::MIN_POSITIVE),
        decode_tokens_per_sec: output as f64 / decode,
        output_tokens: output,
    })
}

/// `streams` copies of the prompt prefilled in one batch, then greedy decoding with one
/// `llama_decode` per step over every sequence still running.
fn generate_batched(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    streams: usize,
    max_tokens: u32,
) -> Result<BatchedFigures> {
    let tokens = prompt(model)?;
    let seq_id = |i: usize| i32::try_from(i).unwrap_or(i32::MAX);
    let start = Instant::now();
    let mut batch = LlamaBatch::new(tokens.len() * streams.max(1), seq_id(streams.max(1)));
    let last = tokens.len().saturating_sub(1);
    let mut logits_at = Vec::with_capacity(streams);
    for seq in 0..streams {
        for (i, t) in tokens.iter().enumerate() {
            batch.add(*t, seq_id(i), &[seq_id(seq)], i == last).map_err(|e| fail(&e))?;
        }
        logits_at.push(batch.n_tokens() - 1);
    }
    ctx.decode(&mut batch).map_err(|e| fail(&e))?;
    let mut sampler = LlamaSampler::greedy();
    let is_eog = |t: LlamaToken| model.vocab().is_eog(t);
    // Each sequence's last sampled token; `None` once it ended.
    let mut next: Vec<Option<LlamaToken>> =
        logits_at.iter().map(|&at| Some(sampler.sample(ctx, at)).filter(|t| !is_eog(*t))).collect();
    // Counted as the engine counts: every sampled token that is not end-of-generation, the
    // first one from the prompt's step; `max_tokens` sampled tokens take `max_tokens - 1` steps.
    let mut output = next.iter().flatten().count() as u64;
    let (decode_start, from_prompt) = (Instant::now(), output);
    for step in 1..max_tokens {
        // Every running sequence is at the same position: same prompt, one token per step.
        let pos = seq_id(tokens.len()).saturating_add(seq_id(step as usize - 1));
        batch.clear();
        let mut running = Vec::with_capacity(streams);
        for (seq, token) in next.iter().enumerate() {
            if let Some(t) = *token {
                let _ = model.vocab().token_to_piece(t, false, None);
                batch.add(t, pos, &[seq_id(seq)], true).map_err(|e| fail(&e))?;
                running.push(seq);
            }
        }
        if running.is_empty() {
            break;
        }
        ctx.decode(&mut batch).map_err(|e| fail(&e))?;
        for (at, &seq) in running.iter().enumerate() {
            let token = Some(sampler.sample(ctx, seq_id(at))).filter(|t| !is_eog(*t));
            output += u64::from(token.is_some());
            if let Some(slot) = next.get_mut(seq) {
                *slot = token;
            }
        }
    }
    let wall = start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    let decode = decode_start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    #[allow(clippy::cast_precision_loss)]
    Ok(BatchedFigures {
        streams,
        output_tokens: output,
        wall_secs: wall,
        tokens_per_sec: output as f64 / wall,
        decode_tokens_per_sec: (output - from_prompt) as f64 / decode,
    })
}
