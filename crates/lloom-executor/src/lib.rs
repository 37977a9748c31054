//! # lloom-executor
//!
//! Lloom executor: serve LLM requests on local hardware and sign what is returned.
//!
//! The `lloom-executor` binary is a thin wrapper: it parses [`cli::Cli`] and calls [`cli::run`],
//! so tests and other programs can drive the node in-process.
//!
//! ## Layout
//! - [`announcer`]: signed announcements on start, on change, on heartbeat, and withdrawal.
//! - [`backend`]: model backends behind one streaming interface; the embedded llama.cpp engine.
//! - [`cli`]: command-line arguments and the dispatcher behind the binary.
//! - [`error`]: this crate's error type.
//! - [`models`]: known models, the local model cache and fetching through pip.
//!
//! ## Status
//! This release provides node identity (`keys new | show | import`), the announcer and model
//! download (`models pull | list`). Model backends and request serving arrive with the executor milestone (see the changelog).

pub mod announcer;
pub mod backend;
pub mod cli;
pub mod error;
pub mod models;

pub use announcer::{Announcer, AnnouncerConfig};
pub use error::{Error, Result};
