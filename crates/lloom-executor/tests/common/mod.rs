//! Helpers shared by the tests that run the real default model.
#![allow(dead_code, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::OnceLock;

use lloom_core::{ChatMessage, Role, SamplingParams};
use lloom_executor::backend::GenerateRequest;
use lloom_executor::models::{DEFAULT_MODEL, ModelCache};

/// The default model's file, fetched into the cache on first use.
pub(crate) fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let cache = ModelCache::new(ModelCache::default_dir());
        cache.pull(&DEFAULT_MODEL, false, &()).expect("default model available").path
    })
    .clone()
}

/// A greedy chat request with one user message.
pub(crate) fn ask(question: &str, max_tokens: u32, stop: &[&str]) -> GenerateRequest {
    GenerateRequest {
        messages: vec![ChatMessage { role: Role::User, content: question.into() }],
        sampling: SamplingParams {
            stop: stop.iter().map(|s| (*s).to_owned()).collect(),
            ..SamplingParams::default()
        },
        max_tokens,
        max_input_tokens: None,
        client: None,
    }
}

/// The question whose greedy answer mentions Paris.
pub(crate) const FRANCE: &str = "What is the capital of France?";
