//! # lloom-client
//!
//! Lloom client: discover executors, send signed requests, verify signed answers.
//!
//! The `lloom-client` binary is a thin wrapper: it parses [`cli::Cli`] and calls [`cli::run`],
//! so tests and other programs can drive the node in-process.
//!
//! ## Layout
//! - [`cli`]: command-line arguments and the dispatcher behind the binary.
//! - [`directory`]: verified executor announcements merged from validators; model listing.
//! - [`error`]: this crate's error type.
//!
//! ## Status
//! This release provides node identity (`keys new | show | import`) and model discovery
//! through validators (`models`). Requests, verification of answers and the gateway arrive
//! with the executor and client milestones (see the changelog).

pub mod cli;
pub mod directory;
pub mod error;

pub use error::{Error, Result};
