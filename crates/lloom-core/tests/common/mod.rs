//! Fixtures shared by the integration tests: fixed keys and a valid request/response pair.
#![allow(
    clippy::panic,
    clippy::needless_pass_by_value,
    clippy::cast_possible_truncation,
    dead_code,
    clippy::unwrap_used,
    missing_docs,
    unreachable_pub
)]

use lloom_core::wire::{content_hash, request_hash};
use lloom_core::{
    ChatMessage, DomainConfig, FinishReason, NodeKey, RequestBody, RequestCommitment,
    ResponseCommitment, Role, SamplingParams, SignedRequest, SignedResponse, U256,
};

pub const NOW: u64 = 1_800_000_000;
pub const TEXT: &str = "The capital of France is Paris.";

pub fn client_key() -> NodeKey {
    NodeKey::from_hex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d").unwrap()
}

pub fn executor_key() -> NodeKey {
    NodeKey::from_hex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap()
}

pub fn body() -> RequestBody {
    RequestBody {
        messages: vec![ChatMessage {
            role: Role::User,
            content: "What is the capital of France?".into(),
        }],
        sampling: SamplingParams { stop: vec!["\n\n".into()], ..SamplingParams::default() },
    }
}

pub fn request_commitment() -> RequestCommitment {
    RequestCommitment {
        client: client_key().address(),
        executor: executor_key().address(),
        model: "SmolLM2-135M-Instruct".into(),
        requestHash: request_hash(&body()),
        maxInputTokens: 2048,
        maxOutputTokens: 64,
        pricePerInputToken: U256::from(3u64),
        pricePerOutputToken: U256::from(5u64),
        nonce: 42,
        deadline: NOW + 60,
    }
}

pub fn signed_request() -> SignedRequest {
    SignedRequest::sign(&client_key(), DomainConfig::default(), request_commitment(), body())
        .unwrap()
}

/// An honest response commitment to `req` for `text` (12 input tokens, `out` output tokens).
pub fn response_commitment(
    req: &SignedRequest,
    text: &str,
    out: u64,
    reason: FinishReason,
) -> ResponseCommitment {
    let c = &req.commitment;
    ResponseCommitment {
        requestDigest: req.digest(),
        client: c.client,
        executor: c.executor,
        model: c.model.clone(),
        contentHash: content_hash(text),
        inputTokens: 12,
        outputTokens: out,
        totalCost: U256::from(12u64) * c.pricePerInputToken
            + U256::from(out) * c.pricePerOutputToken,
        finishReason: reason.code(),
        timestamp: NOW,
    }
}

pub fn signed_response(req: &SignedRequest) -> SignedResponse {
    let c = response_commitment(req, TEXT, 8, FinishReason::Stop);
    SignedResponse::sign(&executor_key(), DomainConfig::default(), c).unwrap()
}
