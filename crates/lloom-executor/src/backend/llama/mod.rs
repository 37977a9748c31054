//! The embedded GGUF engine: llama.cpp through `llama-cpp-2`, with continuous batching.
//!
//! One worker thread owns the model and its context. Requests wait in a bounded queue; between
//! decode steps the worker admits new ones into free sequence slots (prefilling their prompts
//! in the same batch as the other sequences' next tokens), decodes every active sequence in one
//! `llama_decode` call, samples each one's next token, and retires the finished ones; their
//! slots keep their KV cache for the same client's next prompt that starts alike (see the
//! `prompt_cache` module).

mod cpu_turn;
mod grammar;
mod pool;
mod prompt_cache;
mod queue;
mod sampling;
mod slots;
mod worker;

pub use pool::{ModelPool, ModelStatus, PoolEntry, PooledModel};
pub(crate) use worker::shared_backend;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lloom_core::Address;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Backend, GenerateRequest, Generation};
use crate::error::{Error, Result};
use crate::memory::{GpuLayers, KvType};

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Total context (KV cache) in tokens, split evenly: each sequence has a cache of its own
    /// (see [`EngineConfig::tokens_per_sequence`]).
    pub n_ctx: u32,
    /// Most sequences decoded together.
    pub max_sequences: u32,
    /// CPU threads (default: all cores).
    pub threads: Option<u32>,
    /// Layers offloaded to the GPU (only with the `cuda` feature); the memory plan sets it
    /// from [`EngineConfig::offload`].
    pub gpu_layers: u32,
    /// Layers the operator asks to offload: as many as fit, all, or a number
    /// (`lloom-executor start --gpu-layers`).
    pub offload: GpuLayers,
    /// Requests that may wait for a free sequence slot.
    pub queue_capacity: usize,
    /// Requests one client may have waiting (the queue serves clients in turn).
    pub queue_per_client: usize,
    /// Keep the sequence ids one run by moving the highest sequence, KV cache and all, into a
    /// hole freed inside the run (see the `slots` module). Off, a hole splits every later
    /// step's batch into more passes over the weights until a request takes it or the
    /// sequences above it end; only `lloom-executor bench --churn` turns it off, to measure
    /// what moving gains.
    pub move_sequences: bool,
    /// Keep a finished sequence's KV cache in its slot, so that the same client's next prompt
    /// that starts with the same tokens (a conversation's next turn, an agent's next call)
    /// computes only the rest (see the `prompt_cache` module). Off: every prompt is computed
    /// whole (`lloom-executor start --no-prompt-cache`; the P2 benchmark turns it off to
    /// compare like with like).
    pub prompt_cache: bool,
    /// Element type of the KV cache: `q8_0` or `q4_0` hold about twice or three and a half
    /// times the tokens of `f16` in the same memory (`lloom-executor start --kv-cache-type`).
    pub kv_cache: KvType,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            n_ctx: 8192,
            max_sequences: 4,
            threads: None,
            gpu_layers: 0,
            offload: GpuLayers::Auto,
            queue_capacity: 64,
            queue_per_client: 32,
            move_sequences: true,
            prompt_cache: true,
            kv_cache: KvType::F16,
        }
    }
}

impl EngineConfig {
    /// Tokens each sequence may use (prompt + output).
    pub fn tokens_per_sequence(&self) -> u32 {
        self.n_ctx / self.max_sequences.max(1)
    }
}

/// A request handed to the worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) request: GenerateRequest,
    /// The grammar the answer must follow (see [`grammar::for_format`]).
    pub(crate) grammar: Option<String>,
    pub(crate) events: mpsc::UnboundedSender<super::GenerationEvent>,
    pub(crate) cancel: CancellationToken,
    /// Counts the job as using its engine until the worker is done with it.
    lease: Option<Lease>,
}

impl Job {
    /// A job for `request` and the generation that receives its events; fails at once if
    /// the request's output format cannot be compiled into a grammar.
    pub(crate) fn new(request: GenerateRequest) -> Result<(Self, Generation)> {
        let grammar = grammar::for_format(&request.sampling.format)?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let job = Self { request, grammar, events: events_tx, cancel: cancel.clone(), lease: None };
        Ok((job, Generation { events, cancel }))
    }

    /// Tells the caller that the job will never run.
    pub(crate) fn fail(mut self, message: String) {
        self.release();
        let _ = self.events.send(super::GenerationEvent::Failed(message));
    }

    /// Tells the caller that the job will never run because of what it asks for.
    pub(crate) fn refuse(mut self, message: String) {
        self.release();
        let _ = self.events.send(super::GenerationEvent::Refused(message));
    }

    /// Tells the caller that the job will never run here because its prompt and `max_tokens`
    /// do not fit the context.
    pub(crate) fn exceed(mut self, message: String) {
        self.release();
        let _ = self.events.send(super::GenerationEvent::ContextExceeded(message));
    }

    /// Stops counting the job as using its engine; call it before the final event, so a
    /// caller that saw the end never finds the engine still in use.
    pub(crate) fn release(&mut self) {
        self.lease = None;
    }
}

/// One unit of "in use" on an engine; released on drop.
#[derive(Debug)]
struct Lease(Arc<AtomicUsize>);

impl Lease {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The wait queue, one lane per client.
type JobQueue = queue::FairQueue<Option<Address>, Job>;

/// A loaded GGUF model served by a worker thread.
#[derive(Debug)]
pub struct LlamaEngine {
    name: String,
    path: PathBuf,
    jobs: Arc<JobQueue>,
    config: EngineConfig,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    alive: Arc<AtomicBool>,
    in_use: Arc<AtomicUsize>,
    moves: Arc<AtomicU64>,
    reused: Arc<AtomicU64>,
}

impl LlamaEngine {
    /// Loads the GGUF at `path` and starts its worker; returns once the model is loaded.
    pub fn load(name: impl Into<String>, path: &Path, config: EngineConfig) -> Result<Self> {
        if config.max_sequences == 0 || NonZeroU32::new(config.n_ctx).is_none() {
            return Err(Error::EngineConfig("n_ctx and max_sequences must be positive".into()));
        }
        if !path.is_file() {
            return Err(Error::EngineLoad(format!("no model file at {}", path.display())));
        }
        let jobs = Arc::new(JobQueue::new(config.queue_capacity, config.queue_per_client));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let moves = Arc::new(AtomicU64::new(0));
        let reused = Arc::new(AtomicU64::new(0));
        let worker = {
            let (path, config, queue) = (path.to_owned(), config.clone(), jobs.clone());
            let counters = worker::Counters {
                alive: alive.clone(),
                moves: moves.clone(),
                reused: reused.clone(),
            };
            std::thread::Builder::new()
                .name("lloom-llama".into())
                .spawn(move || worker::run(&path, &config, &queue, &ready_tx, &counters))?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                let _ = worker.join();
                return Err(Error::EngineLoad(message));
            }
            Err(_) => return Err(Error::EngineLoad("engine thread died while loading".into())),
        }
        Ok(Self {
            name: name.into(),
            path: path.to_owned(),
            jobs,
            config,
            worker: Mutex::new(Some(worker)),
            alive,
            in_use: Arc::new(AtomicUsize::new(0)),
            moves,
            reused,
        })
    }

    /// Requests waiting or being generated now; an engine with none can be unloaded safely.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::SeqCst)
    }

    /// Requests waiting for a sequence slot.
    pub fn queued(&self) -> usize {
        self.jobs.len()
    }

    /// Sequences moved into a hole freed inside the run of ids since the engine loaded (each
    /// move copies the sequence's KV cache once).
    pub fn sequence_moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// Prompt tokens not computed since the engine loaded because a kept cache of the same
    /// client held them (see [`EngineConfig::prompt_cache`]).
    pub fn prompt_tokens_reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Queues `job` (fairly, by client); a full queue or lane answers Busy.
    pub(crate) fn submit(&self, mut job: Job) -> std::result::Result<(), Box<(Job, Error)>> {
        if let Err(e) = self.health() {
            return Err(Box::new((job, e)));
        }
        job.lease = Some(Lease::new(&self.in_use));
        let client = job.request.client;
        match self.jobs.push(client, job) {
            Ok(()) => Ok(()),
            Err(queue::PushError::Full(job)) => {
                let capacity = self.jobs.capacity();
                let busy = Error::Busy(format!("all slots busy and {capacity} requests queued"));
                Err(Box::new((job, busy)))
            }
            Err(queue::PushError::LaneFull(job)) => {
                let per_client = self.config.queue_per_client;
                let busy =
                    Error::Busy(format!("this client already has {per_client} requests queued"));
                Err(Box::new((job, busy)))
            }
            Err(queue::PushError::Closed(job)) => {
                Err(Box::new((job, Error::EngineLoad("engine thread has stopped".into()))))
            }
        }
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}

impl Backend for LlamaEngine {
    fn models(&self) -> Vec<String> {
        vec![self.name.clone()]
    }

    fn health(&self) -> Result<()> {
        if self.alive.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::EngineLoad("engine thread has stopped".into()))
        }
    }

    fn generate(&self, request: GenerateRequest) -> Result<Generation> {
        let (job, generation) = Job::new(request)?;
        self.submit(job).map_err(|refused| refused.1)?;
        Ok(generation)
    }
}

impl Drop for LlamaEngine {
    fn drop(&mut self) {
        // Closing the queue ends the worker once its waiting and active sequences are done.
        self.jobs.close();
        if let Ok(mut worker) = self.worker.lock()
            && let Some(handle) = worker.take()
        {
            let _ = handle.join();
        }
    }
}
