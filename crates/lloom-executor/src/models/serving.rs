//! From model choices to [`ServedModel`]s: fetch (or hash) the weights, plan each model's
//! memory, pool them under one budget, and describe the offers that will be announced.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lloom_core::announce::CAPABILITY_JSON;
use lloom_core::{B256, ModelOffer, U256};
use sha2::Digest;

use super::{DEFAULT_MODEL, ModelCache, PullProgress};
use crate::backend::llama::{EngineConfig, ModelPool, PoolEntry};
use crate::error::{Error, Result};
use crate::memory::{
    DeviceMemory, MemoryBudget, MemoryPlan, MemoryRequest, ModelGeometry, RepackedTypes,
    ServingDevice, plan, read_metadata,
};
use crate::serve::ServedModel;

/// Which weights to serve and at what price.
#[derive(Clone, Debug)]
pub struct ModelChoice {
    /// A GGUF file; `None` serves the default model (fetched on first use).
    pub path: Option<PathBuf>,
    /// The name to announce (default: the file stem, or the default model's name).
    pub name: Option<String>,
    /// Wei per prompt token.
    pub price_per_input_token: U256,
    /// Wei per generated token.
    pub price_per_output_token: U256,
    /// Engine settings.
    pub engine: EngineConfig,
}

/// The quantization type named in a GGUF file name (`...Q4_K_M.gguf` → `Q4_K_M`), if any.
pub fn quantization_from_file_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    stem.split(['.', '-'])
        .find(|part| {
            let upper = part.to_ascii_uppercase();
            let digits_after = |prefix: &str| {
                upper
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            };
            digits_after("Q")
                || digits_after("IQ")
                || matches!(upper.as_str(), "F16" | "F32" | "BF16")
        })
        .map(str::to_owned)
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<B256> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(B256::from_slice(&hasher.finalize()))
}

/// Where a model's weights are and what they are.
#[derive(Clone, Debug)]
struct Weights {
    name: String,
    path: PathBuf,
    sha256: B256,
    quantization: Option<String>,
}

/// Fetches (the default model) or hashes (a given file) the weights of `choice`.
fn locate(choice: &ModelChoice, progress: &dyn PullProgress) -> Result<Weights> {
    let weights = match &choice.path {
        None => {
            let cache = ModelCache::new(ModelCache::default_dir());
            let model = cache.pull(&DEFAULT_MODEL, false, progress)?;
            let sha = model.sha256.parse::<B256>().map_err(|e| Error::EngineLoad(e.to_string()))?;
            let quantization = Some(DEFAULT_MODEL.quantization.to_owned());
            Weights { name: model.name, path: model.path, sha256: sha, quantization }
        }
        Some(path) => {
            if !path.is_file() {
                return Err(Error::EngineLoad(format!("no model file at {}", path.display())));
            }
            let stem =
                path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            Weights {
                name: stem,
                path: path.clone(),
                sha256: sha256_file(path)?,
                quantization: quantization_from_file_name(path),
            }
        }
    };
    Ok(Weights { name: choice.name.clone().unwrap_or(weights.name), ..weights })
}

/// Plans `engine` for the model at `path` within `budget` bytes of `device`: the layers to
/// offload, the sequences that fit, and the memory the model takes while loaded.
pub fn plan_engine(
    path: &Path,
    engine: &EngineConfig,
    device: ServingDevice,
    budget: u64,
) -> Result<(EngineConfig, MemoryPlan, u64)> {
    let meta = read_metadata(path)?;
    let geometry = ModelGeometry::from_gguf(&meta, std::fs::metadata(path)?.len())?;
    let request = MemoryRequest {
        n_ctx: u64::from(engine.n_ctx),
        max_sequences: u64::from(engine.max_sequences),
        kv: engine.kv_cache,
        n_ubatch: u64::from(engine.n_ctx.min(512)),
        gpu_budget: (device == ServingDevice::Gpu).then_some(budget),
        gpu_layers: engine.offload,
        repacked: RepackedTypes::of_this_build(),
    };
    let plan = plan(&geometry, &request)?;
    let to_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let planned = EngineConfig {
        gpu_layers: to_u32(plan.gpu_layers),
        max_sequences: to_u32(plan.max_sequences),
        n_ctx: to_u32(plan.ctx_per_sequence * plan.max_sequences),
        ..engine.clone()
    };
    let bytes = match device {
        ServingDevice::Host => plan.host_bytes,
        ServingDevice::Gpu => plan.gpu_bytes,
    };
    Ok((planned, plan, bytes))
}

/// The models of an executor, planned and pooled under one memory budget.
#[derive(Debug)]
pub struct PreparedModels {
    /// The pool that loads and unloads them.
    pub pool: Arc<ModelPool>,
    /// What to serve and announce, one per model, in the configured order.
    pub served: Vec<ServedModel>,
    /// Each model's memory plan, in the same order.
    pub plans: Vec<MemoryPlan>,
    /// The serving device and its memory when the budget was set.
    pub device: Option<DeviceMemory>,
}

/// Fetches or hashes every model's weights, plans each within the budget, and pools them;
/// the first model is loaded now (a warm start), the others on their first request.
/// Blocking: call it from `spawn_blocking`.
pub fn prepare_models(
    choices: &[ModelChoice],
    budget: MemoryBudget,
    progress: &dyn PullProgress,
) -> Result<PreparedModels> {
    let device = ServingDevice::of_this_build();
    let memory = device.memory();
    let budget_bytes = match (budget, &memory) {
        (MemoryBudget::Bytes(bytes), _) => bytes,
        (share, Some(memory)) => share.resolve(memory.free),
        (_, None) => {
            return Err(Error::EngineConfig(format!(
                "cannot read the free memory of the {device:?} device; give the memory budget in bytes (e.g. 20GiB)"
            )));
        }
    };
    let mut entries = Vec::new();
    let mut served = Vec::new();
    let mut plans = Vec::new();
    let mut offers = Vec::new();
    for choice in choices {
        let weights = locate(choice, progress)?;
        let (engine, plan, bytes) =
            plan_engine(&weights.path, &choice.engine, device, budget_bytes)?;
        offers.push(ModelOffer {
            model: weights.name.clone(),
            context_length: engine.tokens_per_sequence(),
            price_per_input_token: choice.price_per_input_token,
            price_per_output_token: choice.price_per_output_token,
            weights_sha256: Some(weights.sha256),
            quantization: weights.quantization.clone(),
            capabilities: engine_capabilities(&engine),
        });
        entries.push(PoolEntry { name: weights.name, path: weights.path, engine, bytes });
        plans.push(plan);
    }
    let pool = ModelPool::new(entries, budget_bytes)?;
    for offer in offers {
        let backend = Arc::new(pool.backend(&offer.model)?);
        served.push(ServedModel { offer, backend });
    }
    if let Some(first) = served.first() {
        pool.load_now(&first.offer.model)?;
    }
    Ok(PreparedModels { pool, served, plans, device: memory })
}

/// The capabilities the embedded engine announces for a model it runs with `engine`: chat,
/// streaming, answers held to a JSON format (its own grammars), and the KV cache's element type
/// (`kv-f16`, `kv-q8_0`, `kv-q4_0`), since a quantized cache can change answers slightly.
pub fn engine_capabilities(engine: &EngineConfig) -> Vec<String> {
    vec!["chat".into(), "stream".into(), CAPABILITY_JSON.into(), engine.kv_cache.capability()]
}

/// One model: fetches or hashes the weights, plans and loads it, and returns what to serve.
/// Blocking: call it from `spawn_blocking`.
pub fn prepare(choice: &ModelChoice, progress: &dyn PullProgress) -> Result<ServedModel> {
    let prepared = prepare_models(std::slice::from_ref(choice), MemoryBudget::default(), progress)?;
    prepared.served.into_iter().next().ok_or_else(|| Error::EngineConfig("no model".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::KvType;

    #[test]
    fn quantization_is_read_from_common_file_names() {
        let q = |name: &str| quantization_from_file_name(Path::new(name));
        assert_eq!(q("SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(), Some("Q4_1"));
        assert_eq!(q("llama-3-8b.Q4_K_M.gguf").as_deref(), Some("Q4_K_M"));
        assert_eq!(q("model-f16.gguf").as_deref(), Some("f16"));
        assert_eq!(q("model.gguf"), None);
    }

    #[test]
    fn the_engine_announces_its_kv_cache_type() {
        let mut engine = EngineConfig::default();
        assert_eq!(engine_capabilities(&engine), ["chat", "stream", CAPABILITY_JSON, "kv-f16"]);
        engine.kv_cache = KvType::Q4_0;
        assert_eq!(engine_capabilities(&engine).last().map(String::as_str), Some("kv-q4_0"));
    }

    #[test]
    fn file_hash_is_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap().to_string(),
            "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
