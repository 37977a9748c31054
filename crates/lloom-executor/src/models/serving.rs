//! From a model choice to a [`ServedModel`]: fetch (or hash) the weights, load the engine,
//! and describe the offer that will be announced.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lloom_core::{B256, ModelOffer, U256};
use sha2::Digest;

use super::{DEFAULT_MODEL, ModelCache, PullProgress};
use crate::backend::llama::{EngineConfig, LlamaEngine};
use crate::error::{Error, Result};
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

/// Fetches or hashes the weights, loads the engine and returns the served model.
/// Blocking: call it from `spawn_blocking`.
pub fn prepare(choice: &ModelChoice, progress: &dyn PullProgress) -> Result<ServedModel> {
    let (name, path, sha256, quantization) = match &choice.path {
        None => {
            let cache = ModelCache::new(ModelCache::default_dir());
            let model = cache.pull(&DEFAULT_MODEL, false, progress)?;
            let sha = model.sha256.parse::<B256>().map_err(|e| Error::EngineLoad(e.to_string()))?;
            (model.name, model.path, sha, Some(DEFAULT_MODEL.quantization.to_owned()))
        }
        Some(path) => {
            if !path.is_file() {
                return Err(Error::EngineLoad(format!("no model file at {}", path.display())));
            }
            let stem =
                path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            (stem, path.clone(), sha256_file(path)?, quantization_from_file_name(path))
        }
    };
    let name = choice.name.clone().unwrap_or(name);
    let engine = LlamaEngine::load(name.clone(), &path, choice.engine.clone())?;
    let offer = ModelOffer {
        model: name,
        context_length: choice.engine.tokens_per_sequence(),
        price_per_input_token: choice.price_per_input_token,
        price_per_output_token: choice.price_per_output_token,
        weights_sha256: Some(sha256),
        quantization,
        capabilities: vec!["chat".into(), "stream".into()],
    };
    Ok(ServedModel { offer, backend: Arc::new(engine) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_is_read_from_common_file_names() {
        let q = |name: &str| quantization_from_file_name(Path::new(name));
        assert_eq!(q("SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(), Some("Q4_1"));
        assert_eq!(q("llama-3-8b.Q4_K_M.gguf").as_deref(), Some("Q4_K_M"));
        assert_eq!(q("model-f16.gguf").as_deref(), Some("f16"));
        assert_eq!(q("model.gguf"), None);
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
