//! The registry query protocol: what clients (and other validators) ask a validator.
//!
//! Answers carry the executors' own [`SignedAnnouncement`]s, so a client can verify every price
//! it is shown instead of trusting the validator. Every page is bounded by [`MAX_PAGE`].

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::announce::SignedAnnouncement;

/// Most items in one page of any registry answer.
pub const MAX_PAGE: u32 = 100;

/// A question to a validator's registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryRequest {
    /// Every model on offer, with executor counts and price ranges, ordered by name.
    ListModels {
        /// Start after this model name.
        cursor: Option<String>,
        /// Page size (capped at [`MAX_PAGE`]).
        limit: u32,
    },
    /// Executors serving one model, ordered by address, filtered.
    FindExecutors(FindExecutors),
    /// One executor's latest announcement.
    Executor {
        /// The executor's address.
        executor: Address,
    },
    /// Every live announcement, ordered by executor address (validator convergence).
    Snapshot {
        /// Start after this executor.
        cursor: Option<Address>,
        /// Page size (capped at [`MAX_PAGE`]).
        limit: u32,
    },
}

/// Filters for [`RegistryRequest::FindExecutors`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindExecutors {
    /// The model.
    pub model: String,
    /// Highest acceptable price per prompt token, in wei.
    pub max_price_per_input_token: Option<U256>,
    /// Highest acceptable price per generated token, in wei.
    pub max_price_per_output_token: Option<U256>,
    /// Smallest acceptable context length.
    pub min_context: Option<u32>,
    /// Start after this executor.
    pub cursor: Option<Address>,
    /// Page size (capped at [`MAX_PAGE`]).
    pub limit: u32,
}

/// One model across all executors that serve it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The model name.
    pub model: String,
    /// How many live executors serve it.
    pub executors: u32,
    /// Cheapest and dearest price per prompt token, in wei.
    pub price_per_input_token: (U256, U256),
    /// Cheapest and dearest price per generated token, in wei.
    pub price_per_output_token: (U256, U256),
    /// Largest context length offered.
    pub max_context: u32,
}

/// A registry entry: the executor's own signed announcement and when it was last heard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorInfo {
    /// The latest announcement (verify it with `verify_announcement`).
    pub announcement: SignedAnnouncement,
    /// The executor's libp2p peer id, as text.
    pub peer_id: String,
    /// When the validator last heard from it (unix seconds).
    pub last_seen: u64,
}

/// A validator's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryResponse {
    /// Answer to `ListModels`.
    Models {
        /// This page.
        models: Vec<ModelSummary>,
        /// Cursor for the next page, if any.
        next_cursor: Option<String>,
    },
    /// Answer to `FindExecutors` and `Snapshot`.
    Executors {
        /// This page.
        executors: Vec<ExecutorInfo>,
        /// Cursor for the next page, if any.
        next_cursor: Option<Address>,
    },
    /// Answer to `Executor`.
    Executor(Option<Box<ExecutorInfo>>),
    /// The query was refused (rate limit, bad input).
    Refused {
        /// Why.
        reason: String,
    },
}
