//! The signed EIP-712 structs of the Lloom protocol.
//!
//! These definitions are the single source of truth: the Solidity accounting contract mirrors
//! them field for field, and `test-vectors/eip712.json` pins their digests and signatures.
//! Field order matters (it is part of the type hash); never reorder, only add in a new version.

#![allow(missing_docs)] // the sol! macro generates items without docs; each struct is documented.

use alloy_sol_types::sol;

sol! {
    /// What a client signs to ask an executor for work.
    ///
    /// `requestHash` binds the full request body (messages and sampling parameters); the two
    /// token limits and prices bound the worst-case cost the client accepts:
    /// `maxInputTokens × pricePerInputToken + maxOutputTokens × pricePerOutputToken`.
    #[derive(Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    struct RequestCommitment {
        address client;
        address executor;
        string model;
        bytes32 requestHash;
        uint64 maxInputTokens;
        uint64 maxOutputTokens;
        uint256 pricePerInputToken;
        uint256 pricePerOutputToken;
        uint64 nonce;
        uint64 deadline;
    }

    /// What an executor signs about the work it did for one request.
    ///
    /// With `finishReason == PARTIAL` (see [`crate::FinishReason`]) it is a mid-stream
    /// checkpoint: `contentHash`, token counts and `totalCost` cover the content streamed so far.
    #[derive(Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    struct ResponseCommitment {
        bytes32 requestDigest;
        address client;
        address executor;
        string model;
        bytes32 contentHash;
        uint64 inputTokens;
        uint64 outputTokens;
        uint256 totalCost;
        uint8 finishReason;
        uint64 timestamp;
    }

    /// What an executor signs to announce its offers (or, with `withdrawn`, their removal).
    ///
    /// `offersHash` binds the announcement body (models, prices, load, addresses); `sequence`
    /// increases with every announcement of the same executor, so old ones cannot be replayed.
    #[derive(Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    struct Announcement {
        address executor;
        uint64 sequence;
        uint64 timestamp;
        bytes32 offersHash;
        bool withdrawn;
    }

    /// What an executor signs when it refuses or aborts a request (busy, invalid, failed).
    #[derive(Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    struct ErrorCommitment {
        bytes32 requestDigest;
        address executor;
        uint16 code;
        string message;
        uint64 retryAfterMillis;
        uint64 timestamp;
    }
}
