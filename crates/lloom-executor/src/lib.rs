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
//! - [`memory`]: GGUF geometry and the memory plan (layers to offload, sequences that fit).
//! - [`models`]: known models, the local model cache and fetching through pip.
//! - [`node`]: a running executor: network, request server and announcer together.
//! - [`settle`]: the settlement loop: stored receipts, batched by client, settled on chain.
//! - [`serve`]: serving signed requests from the network: verification, admission, streaming,
//!   signed checkpoints and responses, the durable receipt store.
//!
//! ## Status
//! This release provides node identity (`keys new | show | import`), model download
//! (`models pull | list`), local generation (`generate`), the embedded engine and serving
//! signed requests over the network (`start`). The OpenAI-compatible HTTP backend and GPU
//! memory management arrive later (see the changelog).

pub mod announcer;
pub mod backend;
pub mod cli;
pub mod error;
pub mod memory;
pub mod models;
pub mod node;
pub mod serve;
pub mod settle;

pub use announcer::{Announcer, AnnouncerConfig};
pub use error::{Error, Result};
pub use node::{ExecutorConfig, ExecutorNode};
