//! # lloom-core
//!
//! The protocol core shared by every Lloom node: who a node is, what it signs, how messages
//! travel and which rules a message must pass before anyone trusts it.
//!
//! ## Layout
//! - [`identity`]: one secp256k1 [`NodeKey`] gives the libp2p `PeerId` and the Ethereum
//!   address; key files are encrypted v3 keystores or mode-0600 hex files.
//! - [`eip712`]: the EIP-712 domain ([`DomainConfig`]) and the signed structs
//!   [`RequestCommitment`], [`ResponseCommitment`] and [`ErrorCommitment`].
//! - [`announce`]: signed model announcements ([`SignedAnnouncement`]) and their limits.
//! - [`signature`]: canonical 65-byte signatures (low-s, `v` normalized to 27/28).
//! - [`verify`]: the verification rules, one function each, and composite verifiers.
//! - [`registry_query`]: the registry query protocol between clients and validators.
//! - [`network`]: the libp2p stack: one task owns the swarm, a handle talks to it.
//! - [`metrics`]: the Prometheus text format the nodes' `/metrics` pages are written in.
//! - [`group_commit`]: a writer thread that commits concurrent writes in shared transactions.
//! - [`journal`]: an append-only journal in front of a store's database (receipt stores).
//! - [`replay`]: the durable `(client, nonce)` replay store (redb).
//! - [`wire`]: wire messages and the length-prefixed, versioned, size-limited codec.
//! - [`error`]: the crate's one error type, with `is_peer_fault` / `is_retryable`.
//! - `chain` (feature `chain`): settlement contract bindings and an RPC client.
//!
//! ## Example: a signed request, checked as an executor would
//!
//! ```
//! use lloom_core::wire::request_hash;
//! use lloom_core::verify::verify_request;
//! use lloom_core::*;
//!
//! let client = NodeKey::generate();
//! let executor = NodeKey::generate();
//! let body = RequestBody {
//!     messages: vec![ChatMessage { role: Role::User, content: "Hello".into() }],
//!     sampling: SamplingParams::default(),
//! };
//! let now = unix_now();
//! let commitment = RequestCommitment {
//!     client: client.address(),
//!     executor: executor.address(),
//!     model: "SmolLM2-135M-Instruct".into(),
//!     requestHash: request_hash(&body),
//!     maxInputTokens: 512,
//!     maxOutputTokens: 64,
//!     pricePerInputToken: U256::from(1),
//!     pricePerOutputToken: U256::from(2),
//!     nonce: 1,
//!     deadline: now + 60,
//! };
//! let request = SignedRequest::sign(&client, DomainConfig::default(), commitment, body)?;
//!
//! let policy = VerifyPolicy::default();
//! let digest = verify_request(&request, Some(&client.peer_id()), &policy, now)?;
//! assert_eq!(digest, request.digest());
//! // The same request claimed by another peer is refused.
//! assert!(matches!(
//!     verify_request(&request, Some(&executor.peer_id()), &policy, now),
//!     Err(Error::PeerMismatch { .. })
//! ));
//! # Ok::<(), lloom_core::Error>(())
//! ```
//!
//! ## Feature flags
//! - `cli`: clap argument structs and the `keys new | show | import` subcommand shared by the
//!   three node binaries.

pub mod announce;
pub mod answer_format;
pub mod eip712;
pub mod error;
pub mod group_commit;
pub mod identity;
pub mod journal;
pub mod metrics;
pub mod network;
pub mod rate_limit;
pub mod registry_query;
pub mod replay;
pub mod signature;
pub mod verify;
pub mod wire;

#[cfg(feature = "chain")]
pub mod chain;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "http")]
pub mod http;

pub use announce::{
    AnnouncementBody, AnnouncementLimits, ExecutorLoad, ModelOffer, SignedAnnouncement,
    verify_announcement,
};
pub use eip712::{
    Announcement, DomainConfig, Eip712Type, ErrorCommitment, FinishReason, RequestCommitment,
    ResponseCommitment, signing_hash,
};
pub use error::{Error, Result};
pub use identity::{KeyFormat, NodeKey, PasswordSource, load_key, peer_id_to_address, save_key};
pub use replay::ReplayStore;
pub use signature::Signature;
pub use verify::{VerifyPolicy, unix_now};
pub use wire::{
    ChatMessage, DigestedRequest, ErrorCode, OutputFormat, RequestBody, RequestWithDigest, Role,
    SamplingParams, SignedError, SignedRequest, SignedResponse, StreamChunk, WireLimits,
    WireMessage,
};

/// Re-exported so dependents name the same versions of the primitive types.
pub use alloy_primitives::{Address, B256, U256, keccak256};
/// Re-exported so dependents use the same libp2p identity types.
pub use libp2p_identity::PeerId;
