//! Several GGUF models under one memory budget: loaded on demand, evicted least recently used.
//!
//! Each configured model has a memory cost from its plan ([`crate::memory::plan`]). A request
//! for a model that is not loaded starts loading it on a thread of its own; requests that
//! arrive meanwhile wait (bounded) and run once it is loaded. To make room, idle loaded models
//! are unloaded, least recently used first. A model with a request waiting or running is never
//! unloaded; when only such models hold the budget, the request is answered Busy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{EngineConfig, Job, LlamaEngine};
use crate::backend::{Backend, GenerateRequest, Generation};
use crate::error::{Error, Result};
use crate::memory::budget::format_bytes;

/// A model the pool can load.
#[derive(Clone, Debug)]
pub struct PoolEntry {
    /// The name it is served under.
    pub name: String,
    /// The GGUF file.
    pub path: PathBuf,
    /// How its engine runs (from the memory plan).
    pub engine: EngineConfig,
    /// Memory it takes while loaded, in bytes (from the memory plan).
    pub bytes: u64,
}

/// What one model of the pool is doing, for status output and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelStatus {
    /// The model.
    pub name: String,
    /// Loaded, loading or not loaded.
    pub state: &'static str,
    /// Requests waiting or running on it.
    pub in_use: usize,
    /// Memory it takes while loaded.
    pub bytes: u64,
    /// Sequences its engine moved into a freed hole since it was loaded (0 when not loaded).
    pub sequence_moves: u64,
    /// Prompt tokens its engine took from kept caches since it was loaded (0 when not loaded).
    pub prompt_tokens_reused: u64,
    /// Layers its plan offloads to the GPU.
    pub gpu_layers: u32,
    /// Sequences its plan decodes together.
    pub max_sequences: u32,
}

enum SlotState {
    Unloaded,
    /// Requests that arrived while loading; submitted once loaded.
    Loading(Vec<Job>),
    Loaded(LlamaEngine),
}

struct Slot {
    entry: PoolEntry,
    state: SlotState,
    last_used: u64,
}

impl Slot {
    fn holds_memory(&self) -> bool {
        !matches!(self.state, SlotState::Unloaded)
    }
}

struct State {
    slots: BTreeMap<String, Slot>,
    clock: u64,
}

/// Models sharing a memory budget. Cheap to share through `Arc`.
pub struct ModelPool {
    state: Mutex<State>,
    budget: u64,
}

impl std::fmt::Debug for ModelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPool").field("budget", &self.budget).finish_non_exhaustive()
    }
}

impl ModelPool {
    /// A pool of `entries` within `budget` bytes; nothing is loaded yet. Refuses duplicate
    /// names and a model that cannot fit even alone.
    pub fn new(entries: Vec<PoolEntry>, budget: u64) -> Result<Arc<Self>> {
        let mut slots = BTreeMap::new();
        for entry in entries {
            if entry.bytes > budget {
                return Err(Error::EngineConfig(format!(
                    "model {} needs {} but the memory budget is {}",
                    entry.name,
                    format_bytes(entry.bytes),
                    format_bytes(budget)
                )));
            }
            let name = entry.name.clone();
            let slot = Slot { entry, state: SlotState::Unloaded, last_used: 0 };
            if slots.insert(name.clone(), slot).is_some() {
                return Err(Error::EngineConfig(format!("model {name} is configured twice")));
            }
        }
        Ok(Arc::new(Self { state: Mutex::new(State { slots, clock: 0 }), budget }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The backend that serves `name` from this pool.
    pub fn backend(self: &Arc<Self>, name: &str) -> Result<PooledModel> {
        if !self.lock().slots.contains_key(name) {
            return Err(Error::UnknownModel(name.to_owned()));
        }
        Ok(PooledModel { pool: self.clone(), name: name.to_owned() })
    }

    /// The memory budget, in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Memory held by loaded and loading models.
    pub fn used_bytes(&self) -> u64 {
        let state = self.lock();
        state.slots.values().filter(|s| s.holds_memory()).map(|s| s.entry.bytes).sum()
    }

    /// Every model's state.
    pub fn status(&self) -> Vec<ModelStatus> {
        self.lock()
            .slots
            .values()
            .map(|slot| {
                let (state, in_use, sequence_moves, prompt_tokens_reused) = match &slot.state {
                    SlotState::Unloaded => ("unloaded", 0, 0, 0),
                    SlotState::Loading(waiting) => ("loading", waiting.len(), 0, 0),
                    SlotState::Loaded(engine) => (
                        "loaded",
                        engine.in_use(),
                        engine.sequence_moves(),
                        engine.prompt_tokens_reused(),
                    ),
                };
                ModelStatus {
                    name: slot.entry.name.clone(),
                    state,
                    in_use,
                    bytes: slot.entry.bytes,
                    sequence_moves,
                    prompt_tokens_reused,
                    gpu_layers: slot.entry.engine.gpu_layers,
                    max_sequences: slot.entry.engine.max_sequences,
                }
            })
            .collect()
    }

    /// Loads `name` now (blocking) unless it is loaded; for a warm start.
    pub fn load_now(self: &Arc<Self>, name: &str) -> Result<()> {
        let evicted = {
            let mut state = self.lock();
            let slot = state.slots.get(name).ok_or_else(|| Error::UnknownModel(name.to_owned()))?;
            if slot.holds_memory() {
                return Ok(());
            }
            Self::make_room(&mut state, name, self.budget)?
        };
        self.finish_load(name, evicted)
    }

    /// Marks `name` as loading and takes the idle models that must go to make room for it.
    fn make_room(state: &mut State, name: &str, budget: u64) -> Result<Vec<LlamaEngine>> {
        let need = state.slots.get(name).map_or(0, |s| s.entry.bytes);
        let mut used: u64 =
            state.slots.values().filter(|s| s.holds_memory()).map(|s| s.entry.bytes).sum();
        let mut idle: Vec<(u64, String)> = state
            .slots
            .iter()
            .filter(|(n, s)| {
                n.as_str() != name
                    && matches!(&s.state, SlotState::Loaded(engine) if engine.in_use() == 0)
            })
            .map(|(n, s)| (s.last_used, n.clone()))
            .collect();
        idle.sort();
        let mut victims = Vec::new();
        for (_, victim) in idle {
            if used + need <= budget {
                break;
            }
            used -= state.slots.get(&victim).map_or(0, |s| s.entry.bytes);
            victims.push(victim);
        }
        if used + need > budget {
            return Err(Error::Busy(format!(
                "model {name} needs {} and the models in use hold {} of the {} memory budget",
                format_bytes(need),
                format_bytes(used),
                format_bytes(budget)
            )));
        }
        let mut evicted = Vec::new();
        for victim in victims {
            if let Some(slot) = state.slots.get_mut(&victim)
                && let SlotState::Loaded(engine) =
                    std::mem::replace(&mut slot.state, SlotState::Unloaded)
            {
                tracing::info!(model = %victim, "unloading the least recently used idle model");
                evicted.push(engine);
            }
        }
        if let Some(slot) = state.slots.get_mut(name) {
            slot.state = SlotState::Loading(Vec::new());
        }
        Ok(evicted)
    }

    /// Unloads `evicted`, loads `name` and hands it the requests that waited.
    fn finish_load(&self, name: &str, evicted: Vec<LlamaEngine>) -> Result<()> {
        // Free the memory before taking more; each evicted engine is idle, so this is quick.
        drop(evicted);
        let entry = self.lock().slots.get(name).map(|s| s.entry.clone());
        let Some(entry) = entry else { return Err(Error::UnknownModel(name.to_owned())) };
        let started = std::time::Instant::now();
        let loaded = LlamaEngine::load(entry.name.clone(), &entry.path, entry.engine.clone());
        let mut state = self.lock();
        let Some(slot) = state.slots.get_mut(name) else {
            return Err(Error::UnknownModel(name.to_owned()));
        };
        let waiting = match std::mem::replace(&mut slot.state, SlotState::Unloaded) {
            SlotState::Loading(waiting) => waiting,
            _ => Vec::new(),
        };
        match loaded {
            Ok(engine) => {
                tracing::info!(model = %name, elapsed = ?started.elapsed(), "model loaded");
                for job in waiting {
                    if let Err(refused) = engine.submit(job) {
                        let (job, e) = *refused;
                        job.fail(e.to_string());
                    }
                }
                slot.state = SlotState::Loaded(engine);
                Ok(())
            }
            Err(e) => {
                for job in waiting {
                    job.fail(format!("cannot load model {name}: {e}"));
                }
                Err(e)
            }
        }
    }

    fn generate(self: &Arc<Self>, name: &str, request: GenerateRequest) -> Result<Generation> {
        // Compiles the request's grammar, if any, before the pool's lock is taken.
        let (job, generation) = Job::new(request)?;
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let budget = self.budget;
        let slot = state.slots.get_mut(name).ok_or_else(|| Error::UnknownModel(name.into()))?;
        slot.last_used = now;
        match &mut slot.state {
            SlotState::Loaded(engine) => {
                engine.submit(job).map_err(|refused| refused.1)?;
                return Ok(generation);
            }
            SlotState::Loading(waiting) => {
                let capacity = slot.entry.engine.queue_capacity;
                if waiting.len() >= capacity {
                    return Err(Error::Busy(format!(
                        "model {name} is loading and {capacity} requests already wait for it"
                    )));
                }
                waiting.push(job);
                return Ok(generation);
            }
            SlotState::Unloaded => {}
        }
        let evicted = Self::make_room(&mut state, name, budget)?;
        if let Some(Slot { state: SlotState::Loading(waiting), .. }) = state.slots.get_mut(name) {
            waiting.push(job);
        }
        drop(state);
        let (pool, model) = (self.clone(), name.to_owned());
        let spawned = std::thread::Builder::new().name("lloom-load".into()).spawn(move || {
            if let Err(error) = pool.finish_load(&model, evicted) {
                tracing::warn!(%model, %error, "loading on demand failed");
            }
        });
        if let Err(e) = spawned {
            // Put the slot back so a later request can try again; the waiting job is failed.
            let mut state = self.lock();
            if let Some(slot) = state.slots.get_mut(name)
                && let SlotState::Loading(waiting) =
                    std::mem::replace(&mut slot.state, SlotState::Unloaded)
            {
                for job in waiting {
                    job.fail(format!("cannot start loading: {e}"));
                }
            }
        }
        Ok(generation)
    }

    fn health(&self, name: &str) -> Result<()> {
        match self.lock().slots.get(name).map(|s| &s.state) {
            None => Err(Error::UnknownModel(name.to_owned())),
            Some(SlotState::Loaded(engine)) => engine.health(),
            Some(_) => Ok(()),
        }
    }
}

/// One model of a [`ModelPool`], as a [`Backend`]: loads it on the first request.
#[derive(Clone, Debug)]
pub struct PooledModel {
    pool: Arc<ModelPool>,
    name: String,
}

impl Backend for PooledModel {
    fn models(&self) -> Vec<String> {
        vec![self.name.clone()]
    }

    fn health(&self) -> Result<()> {
        self.pool.health(&self.name)
    }

    fn generate(&self, request: GenerateRequest) -> Result<Generation> {
        self.pool.generate(&self.name, request)
    }
}
