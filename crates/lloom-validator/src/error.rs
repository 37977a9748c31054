//! The error type of `lloom-validator`.

use lloom_core::Address;

/// Result alias for `lloom-validator`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the validator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol, identity or storage error from `lloom-core`.
    #[error(transparent)]
    Core(#[from] lloom_core::Error),
    /// Writing output or waiting for a signal failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A setting from the command line or the configuration file is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An announcement is not newer than the one already held (a replay or a reordering).
    #[error("announcement {sequence} of {executor} is not newer than the held {held}")]
    StaleAnnouncement {
        /// The executor.
        executor: Address,
        /// The sequence received.
        sequence: u64,
        /// The sequence held.
        held: u64,
    },
    /// The registry holds its maximum number of executors.
    #[error("registry full ({limit} executors)")]
    RegistryFull {
        /// The configured capacity.
        limit: usize,
    },
}
