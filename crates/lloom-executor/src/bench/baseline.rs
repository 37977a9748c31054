//! The benchmark's baselines, on a thread that keeps its model and contexts loaded between
//! runs: the simplest use of the library (one sequence, greedy, token by token), and the
//! simplest batched use of it (several sequences, each step one `llama_decode` over all of
//! them), the ceiling that continuous batching can reach with this library on this machine.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use tokio::sync::oneshot;

use super::{BaselineFigures, BatchedFigures, PROMPT};
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
    path: &PathBuf,
    shape: &Shape,
    requests: &mpsc::Receiver<Run>,
    ready: oneshot::Sender<Result<()>>,
) {
    let loaded = (|| {
        let backend = shared_backend().map_err(|e| fail(&e))?;
        let params = LlamaModelParams::default().with_n_gpu_layers(shape.gpu_layers);
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| fail(&e))?;
        Ok((backend, model))
    })();
    let (backend, model) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let threads = i32::try_from(shape.threads).unwrap_or(1);
    let single = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(PLAIN_CTX))
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let streams = u32::try_from(shape.max_streams.max(1)).unwrap_or(u32::MAX);
    let batched_ctx = streams.saturating_mul(shape.max_tokens.saturating_add(256));
    let batched = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(batched_ctx))
        .with_n_batch(batched_ctx)
        .with_n_seq_max(streams)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let contexts = model
        .new_context(backend, single)
        .and_then(|single| Ok((single, model.new_context(backend, batched)?)));
    let (mut single, mut batched) = match contexts {
        Ok(contexts) => contexts,
        Err(e) => {
            let _ = ready.send(Err(fail(&e)));
            return;
        }
    };
    let _ = ready.send(Ok(()));
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
}

fn prompt(model: &LlamaModel) -> Result<Vec<llama_cpp_2::token::LlamaToken>> {
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
    let seq_ids: Vec<i32> = (0..i32::try_from(streams).unwrap_or(0)).collect();
    let start = Instant::now();
    let mut batch = LlamaBatch::new(
        tokens.len() * streams.max(1),
        i32::try_from(streams.max(1)).unwrap_or(i32::MAX),
    );
    let last = tokens.len().saturating_sub(1);
    let mut logits_at = Vec::with_capacity(streams);
    for &seq in &seq_ids {
        for (i, t) in tokens.iter().enumerate() {
            let pos = i32::try_from(i).unwrap_or(i32::MAX);
            batch.add(*t, pos, &[seq], i == last).map_err(|e| fail(&e))?;
        }
        logits_at.push(batch.n_tokens() - 1);
    }
    ctx.decode(&mut batch).map_err(|e| fail(&e))?;
    let mut sampler = LlamaSampler::greedy();
    let mut next: Vec<Option<llama_cpp_2::token::LlamaToken>> =
        logits_at.iter().map(|&at| Some(sampler.sample(ctx, at))).collect();
    let is_eog =
        |t: &Option<llama_cpp_2::token::LlamaToken>| t.is_none_or(|t| model.vocab().is_eog(t));
    // Counted as the engine counts: every sampled token that is not end-of-generation, the
    // first one from the prompt's step; `max_tokens` sampled tokens take `max_tokens - 1` steps.
    let mut output = next.iter().filter(|t| !is_eog(t)).count() as u64;
    let prompt_len = i32::try_from(tokens.len()).unwrap_or(i32::MAX);
    for step in 1..max_tokens {
        // Every running sequence is at the same position: same prompt, one token per step.
        let pos = prompt_len.saturating_add(i32::try_from(step - 1).unwrap_or(i32::MAX));
        batch.clear();
        let mut running = Vec::with_capacity(streams);
        for (&seq, token) in seq_ids.iter().zip(&mut next) {
            match *token {
                Some(t) if !model.vocab().is_eog(t) => {
                    let _ = model.vocab().token_to_piece(t, false, None);
                    batch.add(t, pos, &[seq], true).map_err(|e| fail(&e))?;
                    running.push(seq);
                }
                _ => *token = None,
            }
        }
        if running.is_empty() {
            break;
        }
        ctx.decode(&mut batch).map_err(|e| fail(&e))?;
        for (at, seq) in running.iter().enumerate() {
            let index = usize::try_from(*seq).unwrap_or(0);
            let at = i32::try_from(at).unwrap_or(0);
            let token = sampler.sample(ctx, at);
            if !model.vocab().is_eog(token) {
                output += 1;
            }
            if let Some(slot) = next.get_mut(index) {
                *slot = Some(token);
            }
        }
    }
    let wall = start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    #[allow(clippy::cast_precision_loss)]
    Ok(BatchedFigures {
        streams,
        output_tokens: output,
        wall_secs: wall,
        tokens_per_sec: output as f64 / wall,
    })
}
