//! The engine's worker thread: owns the model and context, runs the continuous-batching loop.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use lloom_core::{FinishReason, Role};

use super::cpu_turn::{CpuTurn, computes_on_cpu};
use super::prompt_cache::{PromptCache, Reuse};
use super::queue::TryPopError;
use super::sampling::Samplers;
use super::slots::SequenceIds;
use super::{EngineConfig, Job, JobQueue};
use crate::backend::{GenerationEvent, StreamText, Usage};
use crate::memory::KvType;

/// Prompt tokens fed to the model in one decode step, over all sequences being prefilled.
///
/// A long prompt is fed in chunks of at most this many tokens, one chunk per step, so the
/// sequences already decoding keep getting a token every step instead of stalling for the
/// whole prompt (on a 2-core CPU, 256 prompt tokens take about one second).
const PREFILL_TOKENS_PER_STEP: usize = 256;

/// One active sequence.
struct Sequence {
    id: i32,
    job: Job,
    /// Prompt tokens not yet fed to the model.
    prefill: Vec<LlamaToken>,
    /// Last sampled token, fed in the next step.
    next: Option<LlamaToken>,
    /// Tokens in the KV cache for this sequence.
    n_past: i32,
    /// Those tokens, position by position (kept with the cache when the sequence ends; see
    /// the `prompt_cache` module).
    cached: Vec<LlamaToken>,
    /// Index of this sequence's logits in the current batch; `None` while its prompt is still
    /// being fed in chunks (nothing to sample yet).
    logits_at: Option<i32>,
    sampler: Samplers,
    text: StreamText,
    input_tokens: u64,
    output_tokens: u64,
    finished: Option<FinishReason>,
}

impl Sequence {
    fn send(&self, event: GenerationEvent) {
        // A closed receiver is noticed (and the sequence cancelled) at the next step.
        let _ = self.job.events.send(event);
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// Applies the model's own chat template and tokenizes the result.
fn prompt_tokens(model: &LlamaModel, job: &Job) -> Result<Vec<LlamaToken>, String> {
    let template =
        model.chat_template(None).map_err(|e| format!("model has no chat template: {e}"))?;
    let messages = job
        .request
        .messages
        .iter()
        .map(|m| LlamaChatMessage::new(role_name(m.role).to_owned(), m.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid message: {e}"))?;
    let prompt = model
        .apply_chat_template(&template, &messages, true)
        .map_err(|e| format!("chat template failed: {e}"))?;
    Ok(model.vocab().tokenize(prompt.as_bytes(), true, true))
}

/// What the worker reports to its engine while it runs.
pub(super) struct Counters {
    /// Cleared when the worker stops.
    pub(super) alive: Arc<AtomicBool>,
    /// Sequences moved into a hole inside the run of ids (see [`close_gaps`]).
    pub(super) moves: Arc<AtomicU64>,
    /// Prompt tokens not computed again because a kept cache held them.
    pub(super) reused: Arc<AtomicU64>,
}

/// Entry point of the worker thread.
pub(super) fn run(
    path: &Path,
    config: &EngineConfig,
    queue: &JobQueue,
    ready: &Sender<Result<(), String>>,
    counters: &Counters,
) {
    let result = serve(path, config, queue, ready, counters);
    counters.alive.store(false, Ordering::SeqCst);
    // Nothing may wait forever on a stopped engine.
    queue.close();
    while let Ok(job) = queue.try_pop() {
        job.fail("the engine has stopped".into());
    }
    if let Err(message) = result {
        // Either loading failed (reported through `ready`) or the loop hit a fatal error.
        let _ = ready.send(Err(message.clone()));
        tracing::error!(%message, "llama engine stopped");
    }
}

/// llama.cpp's backend is process-wide: initialized once, shared by every engine, never freed.
pub(crate) fn shared_backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: std::sync::OnceLock<Result<LlamaBackend, String>> = std::sync::OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| format!("llama backend: {e}"))?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn serve(
    path: &Path,
    config: &EngineConfig,
    queue: &JobQueue,
    ready: &Sender<Result<(), String>>,
    counters: &Counters,
) -> Result<(), String> {
    let backend = shared_backend()?;
    let model_params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers);
    let model = LlamaModel::load_from_file(backend, path, &model_params)
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    let threads = config.threads.map_or_else(
        || std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        |t| t as usize,
    );
    let threads = i32::try_from(threads).unwrap_or(1);
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.n_ctx))
        .with_n_batch(config.n_ctx)
        .with_n_ubatch(512.min(config.n_ctx))
        .with_n_seq_max(config.max_sequences)
        // One KV cache per sequence: a token attends to its own sequence's cells only. With
        // the ids kept contiguous (see the `slots` module), 8 streams decode 6-9 % faster
        // than with one cache shared by all.
        .with_kv_unified(false)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_type_k(cache_type(config.kv_cache))
        .with_type_v(cache_type(config.kv_cache));
    let mut ctx = model.new_context(backend, ctx_params).map_err(|e| match config.kv_cache {
        KvType::F16 => format!("context: {e}"),
        // llama.cpp refuses a quantized value cache where it cannot use flash attention.
        kv => format!(
            "context: {e} (a {kv} KV cache needs flash attention, which llama.cpp may not offer for this model or device; try --kv-cache-type f16)"
        ),
    })?;
    let cpu_threads = computes_on_cpu(config.gpu_layers, model.n_layer())
        .then(|| usize::try_from(threads).unwrap_or(1));
    let _ = ready.send(Ok(()));
    batch_loop(&model, &mut ctx, config, queue, cpu_threads, counters)
}

/// llama.cpp's name for a KV cache type.
fn cache_type(kv: KvType) -> KvCacheType {
    match kv {
        KvType::F16 => KvCacheType::F16,
        KvType::Q8_0 => KvCacheType::Q8_0,
        KvType::Q4_0 => KvCacheType::Q4_0,
    }
}

/// The continuous-batching loop; returns when the queue is closed and no sequence is active.
/// With `cpu_threads`, each decode step first takes that many of the machine's cores (see
/// [`CpuTurn`]). Sequence moves and reused prompt tokens are counted in `counters`.
fn batch_loop(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    config: &EngineConfig,
    queue: &JobQueue,
    cpu_threads: Option<usize>,
    counters: &Counters,
) -> Result<(), String> {
    let moves = &counters.moves;
    // Recurrent models' state cannot be cut back to a prefix.
    let caching = config.prompt_cache && !model.is_recurrent() && !model.is_hybrid();
    let mut prompt_cache = PromptCache::default();
    let per_sequence = config.tokens_per_sequence();
    let mut batch =
        LlamaBatch::new(config.n_ctx as usize, i32::try_from(config.max_sequences).unwrap_or(1));
    let mut ids = SequenceIds::new(i32::try_from(config.max_sequences).unwrap_or(1));
    let mut active: Vec<Sequence> = Vec::new();
    let mut closed = false;
    // Whether the run of ids in use had a hole after the last step's admissions.
    let mut gap_waited = false;
    loop {
        // Admit waiting requests into free slots; block only when idle.
        while !closed && ids.has_free() {
            let job = if active.is_empty() {
                match queue.pop() {
                    Some(job) => job,
                    None => {
                        closed = true;
                        break;
                    }
                }
            } else {
                match queue.try_pop() {
                    Ok(job) => job,
                    Err(TryPopError::Empty) => break,
                    Err(TryPopError::Closed) => {
                        closed = true;
                        break;
                    }
                }
            };
            if job.cancel.is_cancelled() || job.events.is_closed() {
                continue;
            }
            if job.request.max_tokens == 0 {
                job.fail("max_tokens must be at least 1".into());
                continue;
            }
            let tokens = match prompt_tokens(model, &job) {
                Ok(t) if t.is_empty() => {
                    job.fail("the prompt has no tokens".into());
                    continue;
                }
                Ok(t) => t,
                Err(message) => {
                    job.fail(message);
                    continue;
                }
            };
            if let Some(max) = job.request.max_input_tokens
                && tokens.len() as u64 > max
            {
                job.exceed(format!(
                    "prompt has {} tokens, more than the {max} allowed",
                    tokens.len()
                ));
                continue;
            }
            let budget = tokens.len() as u64 + u64::from(job.request.max_tokens);
            if budget > u64::from(per_sequence) {
                let message = format!(
                    "prompt of {} tokens plus max_tokens {} exceeds the {per_sequence} tokens per sequence",
                    tokens.len(),
                    job.request.max_tokens
                );
                job.exceed(message);
                continue;
            }
            let sampler = match Samplers::for_job(model, &job) {
                Ok(sampler) => sampler,
                Err(message) => {
                    job.refuse(message);
                    continue;
                }
            };
            let client = job.request.client;
            let reuse = if caching { prompt_cache.best(client, &tokens) } else { None };
            let preferred = reuse.map(|r| r.from);
            let rank = |id| prompt_cache.rank(id);
            let Some(id) = ids.take_for(run_of(&active), preferred, rank) else { break };
            let reused = start_from(ctx, id, reuse);
            prompt_cache.forget(id);
            counters.reused.fetch_add(reused as u64, Ordering::Relaxed);
            let _ = job.events.send(GenerationEvent::Started { input_tokens: tokens.len() as u64 });
            let mut prefill = tokens;
            let cached: Vec<LlamaToken> = prefill.drain(..reused).collect();
            active.push(Sequence {
                id,
                sampler,
                text: StreamText::new(&job.request.sampling.stop),
                input_tokens: (cached.len() + prefill.len()) as u64,
                prefill,
                job,
                next: None,
                n_past: i32::try_from(reused).unwrap_or(0),
                cached,
                logits_at: None,
                output_tokens: 0,
                finished: None,
            });
        }
        if active.is_empty() {
            if closed {
                return Ok(());
            }
            continue;
        }
        // A hole freed inside the run of ids in use splits each step's batch (see the `slots`
        // module) until a new request takes it. One still free after the admissions of the
        // next step, no request having come for it, is closed by moving sequences down; under
        // load the queue fills holes and nothing moves.
        if config.move_sequences {
            let gap = run_of(&active).and_then(|(low, high)| ids.hole(low, high)).is_some();
            if gap && gap_waited {
                let moved = close_gaps(ctx, &mut active, &mut ids, &mut prompt_cache);
                moves.fetch_add(moved, Ordering::Relaxed);
            }
            gap_waited = gap && !gap_waited;
        }

        // One batch: every decoding sequence's next token, and the next chunk of the prompts
        // being prefilled (in the order they were admitted) up to the step's prompt budget.
        batch.clear();
        let mut prefill_budget = PREFILL_TOKENS_PER_STEP;
        let mut chunks = Vec::with_capacity(active.len());
        for seq in &mut active {
            seq.logits_at = None;
            if seq.job.cancel.is_cancelled() || seq.job.events.is_closed() {
                seq.finished = Some(FinishReason::Cancelled);
            }
            let prefilling = seq.finished.is_none() && seq.next.is_none();
            let chunk = if prefilling { seq.prefill.len().min(prefill_budget) } else { 0 };
            prefill_budget -= chunk;
            chunks.push(chunk);
        }
        // The batch lists the sequences by id (see the `slots` module).
        let mut by_id: Vec<usize> = (0..active.len()).collect();
        by_id.sort_unstable_by_key(|&i| active.get(i).map_or(i32::MAX, |s| s.id));
        for i in by_id {
            let (Some(seq), Some(&chunk)) = (active.get_mut(i), chunks.get(i)) else { continue };
            if seq.finished.is_some() {
                continue;
            }
            if let Some(token) = seq.next.take() {
                batch
                    .add(token, seq.n_past, &[seq.id], true)
                    .map_err(|e| format!("batch full: {e}"))?;
                seq.n_past += 1;
                seq.cached.push(token);
                seq.logits_at = Some(batch.n_tokens() - 1);
                continue;
            }
            if chunk == 0 {
                continue;
            }
            let completes_prompt = chunk == seq.prefill.len();
            for (i, token) in seq.prefill.drain(..chunk).enumerate() {
                let wants_logits = completes_prompt && i + 1 == chunk;
                batch
                    .add(token, seq.n_past, &[seq.id], wants_logits)
                    .map_err(|e| format!("batch full: {e}"))?;
                seq.n_past += 1;
                seq.cached.push(token);
            }
            if completes_prompt {
                seq.logits_at = Some(batch.n_tokens() - 1);
            }
        }
        if batch.n_tokens() > 0 {
            let turn = cpu_threads.map(CpuTurn::take);
            if let Err(e) = ctx.decode(&mut batch) {
                for seq in &mut active {
                    seq.send(GenerationEvent::Failed(format!("decode failed: {e}")));
                    seq.finished = Some(FinishReason::Error);
                }
            } else {
                sample_all(model, ctx, &mut active, per_sequence);
            }
            drop(turn);
        }

        // Retire finished sequences; their slot keeps its cache for the client's next prompt
        // (see the `prompt_cache` module), or is cleared.
        let mut i = 0;
        while i < active.len() {
            if let Some(Some(reason)) = active.get(i).map(|s| s.finished) {
                let mut seq = active.remove(i); // keeps the admission order
                let client = seq.job.request.client.filter(|_| caching);
                if reason == FinishReason::Error || client.is_none() {
                    let _ = ctx.clear_kv_cache_seq(u32::try_from(seq.id).ok(), None, None);
                    prompt_cache.forget(seq.id);
                } else {
                    prompt_cache.keep(seq.id, client, std::mem::take(&mut seq.cached));
                }
                ids.release(seq.id);
                seq.job.release();
                if reason != FinishReason::Error {
                    let rest = seq.text.finish();
                    if !rest.is_empty() {
                        seq.send(GenerationEvent::Text { text: rest, tokens: seq.output_tokens });
                    }
                    seq.send(GenerationEvent::Done(Usage {
                        input_tokens: seq.input_tokens,
                        output_tokens: seq.output_tokens,
                        finish: reason,
                    }));
                }
            } else {
                i += 1;
            }
        }
    }
}

/// The lowest and highest ids of the sequences in `active`.
fn run_of(active: &[Sequence]) -> Option<(i32, i32)> {
    let low = active.iter().map(|s| s.id).min()?;
    let high = active.iter().map(|s| s.id).max()?;
    Some((low, high))
}

/// Moves the sequences with the highest ids down into the holes freed inside the run of ids
/// in use, KV cache and all, until the ids in use follow each other again (see the `slots`
/// module). llama.cpp copies a moved sequence's cache at the start of the next decode.
/// Returns how many sequences moved.
fn close_gaps(
    ctx: &mut LlamaContext<'_>,
    active: &mut [Sequence],
    ids: &mut SequenceIds,
    prompt_cache: &mut PromptCache,
) -> u64 {
    let mut moved = 0;
    while let Some((low, high)) = run_of(active)
        && let Some(to) = ids.hole(low, high)
        && let Some(highest) = active.iter_mut().find(|s| s.id == high)
    {
        if ctx.copy_kv_cache_seq(highest.id, to, None, None).is_err() {
            break;
        }
        let _ = ctx.clear_kv_cache_seq(u32::try_from(highest.id).ok(), None, None);
        prompt_cache.forget(to);
        ids.take(to);
        ids.release(highest.id);
        highest.id = to;
        moved += 1;
    }
    moved
}

/// Readies slot `id`'s cache for a new sequence: starting from `reuse`'s prefix (copied from
/// its slot unless it is `id`'s own) when it can, else empty. Returns how many prompt tokens
/// the cache holds.
fn start_from(ctx: &mut LlamaContext<'_>, id: i32, reuse: Option<Reuse>) -> usize {
    let slot = u32::try_from(id).ok();
    if let Some(Reuse { from, tokens }) = reuse
        && let Ok(kept) = u32::try_from(tokens)
        && (from == id || ctx.copy_kv_cache_seq(from, id, None, None).is_ok())
        && ctx.clear_kv_cache_seq(slot, Some(kept), None) == Ok(true)
        // What is left must be exactly the prefix (a sliding-window cache may have dropped
        // its first positions).
        && ctx.kv_cache_seq_pos_min(id) == 0
        && i64::from(ctx.kv_cache_seq_pos_max(id)) == i64::from(kept) - 1
    {
        return tokens;
    }
    let _ = ctx.clear_kv_cache_seq(slot, None, None);
    0
}

fn sample_all(
    model: &LlamaModel,
    ctx: &LlamaContext<'_>,
    active: &mut [Sequence],
    per_sequence: u32,
) {
    let vocab = model.vocab();
    for seq in active.iter_mut().filter(|s| s.finished.is_none()) {
        let Some(logits_at) = seq.logits_at else { continue };
        let token = seq.sampler.sample(ctx, logits_at);
        if vocab.is_eog(token) {
            seq.finished = Some(FinishReason::Stop);
            continue;
        }
        seq.output_tokens += 1;
        let piece = vocab.token_to_piece(token, false, None);
        let text = seq.text.push(&piece);
        if !text.is_empty() {
            seq.send(GenerationEvent::Text { text, tokens: seq.output_tokens });
        }
        if seq.text.stopped() {
            seq.finished = Some(FinishReason::Stop);
        } else if seq.output_tokens >= u64::from(seq.job.request.max_tokens)
            || seq.n_past >= i32::try_from(per_sequence).unwrap_or(i32::MAX)
        {
            seq.finished = Some(FinishReason::Length);
        } else {
            seq.next = Some(token);
        }
    }
}
