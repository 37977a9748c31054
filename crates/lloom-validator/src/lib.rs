//! # lloom-validator
//!
//! Lloom validator: bootstrap the network and keep the signed model registry.
//!
//! The `lloom-validator` binary is a thin wrapper: it parses [`cli::Cli`] and calls [`cli::run`],
//! so tests and other programs can drive the node in-process.
//!
//! ## Layout
//! - [`cli`]: command-line arguments and the dispatcher behind the binary.
//! - [`error`]: this crate's error type.
//! - [`service`]: the running validator: network, registry, expiry and peer sync.
//! - [`registry`]: the model registry fed by verified announcements, and its queries.
//! - [`liveness`]: dial checks of executors whose connection closed; unreachable ones leave.
//! - [`stats`] and [`metrics`]: what the service counts, served as `GET /metrics` (Prometheus)
//!   and `GET /health` (`start --metrics-listen`).
//!
//! ## Status
//! This release provides node identity (`keys new | show | import`) and `start`: a validator
//! on the network that bootstraps peers, relays for executors behind NAT, keeps the model
//! registry from verified announcements and answers registry queries (see the changelog).

pub mod cli;
pub mod error;
pub mod liveness;
pub mod metrics;
pub mod registry;
pub mod service;
pub mod stats;

pub use error::{Error, Result};
pub use metrics::ValidatorMetrics;
pub use registry::{Applied, Registry, RegistryConfig};
pub use service::{Validator, ValidatorConfig};
pub use stats::ValidatorStats;
