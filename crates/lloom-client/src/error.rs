//! The error type of `lloom-client`.

/// Result alias for `lloom-client`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol, identity or storage error from `lloom-core`.
    #[error(transparent)]
    Core(#[from] lloom_core::Error),
}
