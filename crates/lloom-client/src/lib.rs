//! # lloom-client
//!
//! Lloom client: discover executors, send signed requests, verify signed answers.
//!
//! The `lloom-client` binary is a thin wrapper: it parses [`cli::Cli`] and calls [`cli::run`],
//! so tests and other programs can drive the node in-process.
//!
//! ## Layout
//! - [`cli`]: command-line arguments and the dispatcher behind the binary.
//! - [`client`]: the [`Client`]: connect, discover, `chat` with verified streaming and failover.
//! - [`conversation`]: `chat --interactive`, a conversation of verified turns.
//! - [`directory`]: verified executor announcements merged from validators; model listing.
//! - [`executor_list`]: each executor's offers as `lloom-client executors` shows them.
//! - [`known_executors`]: executors remembered between runs, for a start with no validator.
//! - [`nonce`]: request nonces that never repeat, across restarts.
//! - [`patience`]: waiting out busy or restarting executors instead of failing at once.
//! - [`receipts`]: the client's durable receipt store.
//! - [`report`]: how a verified receipt is shown (text and JSON).
//! - [`routing`]: executor scoring, strategies, cooldowns.
//! - [`escrow`]: the client's own escrow check before it signs.
//! - [`gateway`]: the OpenAI-compatible HTTP gateway in front of a [`Client`].
//! - [`error`]: this crate's error type.
//!
//! ## Status
//! This release provides node identity (`keys new | show | import`), model discovery
//! through validators (`models`), and verified, streamed `chat` with routing and failover.
//! The OpenAI-compatible gateway is `serve`.

mod attempt;
mod chain_cli;
mod chat;
mod chat_cli;
mod chat_cost;
pub mod cli;
pub mod client;
mod config;
pub mod conversation;
pub mod directory;
pub mod error;
pub mod escrow;
pub mod executor_list;
pub mod gateway;
pub mod known_executors;
pub mod nonce;
pub mod patience;
pub mod receipts;
mod receipts_cli;
pub mod report;
pub mod routing;
mod serve_cli;
mod spend_cli;
mod stream_pool;
mod table;
mod wait_text;

pub use attempt::AttemptFailure;
pub use chain_cli::ChainCommand;
pub use client::{
    ChatEvent, ChatRequest, ChatStream, Client, ClientConfig, FORMAT_CHECK, RESPONSE_CHECKS,
    Receipt,
};
pub use error::{Error, Result};
pub use routing::{RouteFilter, Strategy};
pub use spend_cli::SpendCommand;
