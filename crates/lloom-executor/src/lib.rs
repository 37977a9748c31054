//! # lloom-executor
//!
//! Lloom executor: serve LLM requests on local hardware and sign what is returned.
//!
//! The `lloom-executor` binary is a thin wrapper: it parses [`cli::Cli`] and calls [`cli::run`],
//! so tests and other programs can drive the node in-process.
//!
//! ## Layout
//! - [`cli`]: command-line arguments and the dispatcher behind the binary.
//! - [`error`]: this crate's error type.
//!
//! ## Status
//! This release provides node identity (`keys new | show | import`). Networking and the
//! executor's own work arrive with the network, executor, client and settlement milestones
//! (see the changelog).

pub mod cli;
pub mod error;

pub use error::{Error, Result};
