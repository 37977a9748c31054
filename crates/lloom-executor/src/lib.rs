//! # lloom-executor
//!
//! Lloom executor: serve LLM requests on local hardware and sign what is returned.
//!
//! The `lloom-executor` binary is a thin wrapper: it parses [`cli::Cli`] and calls [`cli::run`],
//! so tests and other programs can drive the node in-process.
//!
//! ## Layout
//! - [`announcer`]: signed announcements on start, on change, on heartbeat, and withdrawal.
//! - [`backend`]: model backends behind one streaming interface; the embedded llama.cpp engine
//!   and the pool that loads several models on demand under a memory budget.
//! - [`bench`](mod@bench): the engine benchmark (`lloom-executor bench`).
//! - [`cli`]: command-line arguments and the dispatcher behind the binary.
//! - [`error`]: this crate's error type.
//! - [`memory`]: GGUF geometry and the memory plan (layers to offload, sequences that fit).
//! - [`metrics`]: the Prometheus `/metrics` page of a running executor.
//! - [`models`]: known models, the local model cache and fetching through pip.
//! - [`node`]: a running executor: network, request server and announcer together.
//! - [`settle`]: the settlement loop: stored receipts, batched by client, settled on chain.
//! - [`serve`]: serving signed requests from the network: verification, admission, streaming,
//!   signed checkpoints and responses, the durable receipt store.
//!
//! ## Status
//! Node identity (`keys`), model download and inspection (`models pull | list | inspect`),
//! local generation (`generate`), the engine benchmark (`bench`), serving signed requests over
//! the network with the embedded engine or an OpenAI-compatible server (`start`), and on-chain
//! settlement (`chain`). See the changelog for what is still missing.

pub mod announcer;
pub mod backend;
pub mod bench;
pub mod cli;
mod cpuinfo;
mod dht_publish;
pub mod error;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod node;
mod node_events;
mod self_registry;
pub mod serve;
pub mod settle;

pub use announcer::{Announcer, AnnouncerConfig, Republish};
pub use error::{Error, Result};
pub use node::{ExecutorConfig, ExecutorNode};
