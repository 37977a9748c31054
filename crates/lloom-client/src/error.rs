//! The error type of `lloom-client`.

use lloom_core::PeerId;

/// Result alias for `lloom-client`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol, identity, storage or network error from `lloom-core`.
    #[error(transparent)]
    Core(#[from] lloom_core::Error),
    /// Writing output failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A validator refused or mangled a registry query.
    #[error("validator {validator} refused the query: {reason}")]
    ValidatorRefused {
        /// The validator.
        validator: PeerId,
        /// Its reason.
        reason: String,
    },
    /// No validator could be reached.
    #[error("no validator reachable within {0:?}; check --bootstrap addresses")]
    NoValidator(std::time::Duration),
    /// A bootstrap address lacks its `/p2p/<peer id>` suffix.
    #[error("bootstrap address {0} must end in /p2p/<peer id>")]
    BootstrapWithoutPeerId(String),
}
