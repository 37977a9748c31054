//! The embedded GGUF engine: llama.cpp through `llama-cpp-2`, with continuous batching.
//!
//! One worker thread owns the model and its context. Requests wait in a bounded queue; between
//! decode steps the worker admits new ones into free sequence slots (prefilling their prompts
//! in the same batch as the other sequences' next tokens), decodes every active sequence in one
//! `llama_decode` call, samples each one's next token, and retires the finished ones, freeing
//! their KV cache.

mod worker;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Backend, GenerateRequest, Generation};
use crate::error::{Error, Result};

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Total context (KV cache) in tokens, shared by all sequences.
    pub n_ctx: u32,
    /// Most sequences decoded together.
    pub max_sequences: u32,
    /// CPU threads (default: all cores).
    pub threads: Option<u32>,
    /// Layers offloaded to the GPU (only with the `cuda` feature).
    pub gpu_layers: u32,
    /// Requests that may wait for a free sequence slot.
    pub queue_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { n_ctx: 8192, max_sequences: 4, threads: None, gpu_layers: 0, queue_capacity: 64 }
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
    pub(crate) events: mpsc::UnboundedSender<super::GenerationEvent>,
    pub(crate) cancel: CancellationToken,
}

/// A loaded GGUF model served by a worker thread.
#[derive(Debug)]
pub struct LlamaEngine {
    name: String,
    path: PathBuf,
    jobs: SyncSender<Job>,
    config: EngineConfig,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    alive: Arc<std::sync::atomic::AtomicBool>,
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
        let (jobs, queue) = std::sync::mpsc::sync_channel(config.queue_capacity);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let worker = {
            let (path, config, alive) = (path.to_owned(), config.clone(), alive.clone());
            std::thread::Builder::new()
                .name("lloom-llama".into())
                .spawn(move || worker::run(&path, &config, &queue, &ready_tx, &alive))?
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
        })
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
        if self.alive.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::EngineLoad("engine thread has stopped".into()))
        }
    }

    fn generate(&self, request: GenerateRequest) -> Result<Generation> {
        self.health()?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let job = Job { request, events: events_tx, cancel: cancel.clone() };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(Generation { events, cancel }),
            Err(TrySendError::Full(_)) => Err(Error::Busy { queued: self.config.queue_capacity }),
            Err(TrySendError::Disconnected(_)) => {
                Err(Error::EngineLoad("engine thread has stopped".into()))
            }
        }
    }
}

impl Drop for LlamaEngine {
    fn drop(&mut self) {
        // Closing the queue ends the worker once its active sequences are done or cancelled.
        let (closed, _) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Ok(mut worker) = self.worker.lock()
            && let Some(handle) = worker.take()
        {
            let _ = handle.join();
        }
    }
}
