//! The verification rules of the protocol, one function per rule, and the composite checks
//! that apply them in order to a request, a response, a checkpoint or an error notice.
//!
//! Every function is pure; the only stateful rule (nonce replay) lives in
//! [`ReplayStore`](crate::ReplayStore).

use alloy_primitives::{Address, B256, U256};
use libp2p_identity::PeerId;

use crate::eip712::{DomainConfig, FinishReason, RequestCommitment, ResponseCommitment};
use crate::error::{Error, Result};
use crate::identity::{inlined_secp256k1_key, peer_id_to_address};
use crate::signature::{RecoveredSigner, Signature};
use crate::wire::{
    RequestWithDigest, SignedError, SignedRequest, SignedResponse, WireLimits, content_hash,
    request_hash,
};

/// What a verifier accepts: our domain, clock tolerance and how far ahead deadlines may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// The domain signatures must be made for.
    pub domain: DomainConfig,
    /// Accepted difference between a signed timestamp and our clock, in seconds.
    pub clock_skew_secs: u64,
    /// Latest accepted deadline, in seconds from now (bounds the replay store).
    pub max_deadline_horizon_secs: u64,
    /// Size limits for decoded messages.
    pub limits: WireLimits,
}

impl VerifyPolicy {
    /// Default clock-skew window: 30 seconds either way.
    pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 30;
    /// Default deadline horizon: one hour.
    pub const DEFAULT_MAX_DEADLINE_HORIZON_SECS: u64 = 3600;

    /// The default policy for `domain`.
    pub fn new(domain: DomainConfig) -> Self {
        Self {
            domain,
            clock_skew_secs: Self::DEFAULT_CLOCK_SKEW_SECS,
            max_deadline_horizon_secs: Self::DEFAULT_MAX_DEADLINE_HORIZON_SECS,
            limits: WireLimits::default(),
        }
    }
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self::new(DomainConfig::default())
    }
}

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

// ----- single rules ---------------------------------------------------------------------------

/// Rule: the message was signed for our domain (chain id and verifying contract).
pub fn check_domain(expected: &DomainConfig, got: &DomainConfig) -> Result<()> {
    if expected != got {
        return Err(Error::DomainMismatch { expected: expected.to_string(), got: got.to_string() });
    }
    Ok(())
}

/// Rule: the signature recovers to the claimed signer.
///
/// Malleable (high-s) signatures and bad `v` values were already refused when the
/// [`Signature`] was parsed.
pub fn check_signature(digest: &B256, signature: &Signature, claimed: Address) -> Result<()> {
    recover_claimed(digest, signature, claimed).map(|_| ())
}

/// [`check_signature`], returning the recovered signer (its key is what the sender check
/// compares).
fn recover_claimed(
    digest: &B256,
    signature: &Signature,
    claimed: Address,
) -> Result<RecoveredSigner> {
    let recovered = signature.recover_signer(digest)?;
    if recovered.address != claimed {
        return Err(Error::SignerMismatch { claimed, recovered: recovered.address });
    }
    Ok(recovered)
}

/// Rule: the claimed signer is the peer that sent the message.
pub fn check_sender(signer: Address, peer: &PeerId) -> Result<()> {
    let peer_address = peer_id_to_address(peer)?;
    if peer_address != signer {
        return Err(Error::PeerMismatch { signer, peer: peer_address });
    }
    Ok(())
}

/// Rules every signed message passes: signed for our domain, by `signer`, who is the sender.
pub fn check_origin(
    expected_domain: &DomainConfig,
    message_domain: &DomainConfig,
    digest: &B256,
    signature: &Signature,
    signer: Address,
    sender: Option<&PeerId>,
) -> Result<()> {
    check_domain(expected_domain, message_domain)?;
    let recovered = recover_claimed(digest, signature, signer)?;
    match sender {
        // The peer's inlined key is the recovered one: the same address, without decoding it.
        Some(peer) if inlined_secp256k1_key(peer) == Some(&recovered.compressed) => Ok(()),
        Some(peer) => check_sender(signer, peer),
        None => Ok(()),
    }
}

/// Rule: the deadline has not passed and is not further ahead than `max_horizon_secs`.
pub fn check_deadline(deadline: u64, now: u64, max_horizon_secs: u64) -> Result<()> {
    if deadline < now {
        return Err(Error::DeadlinePassed { deadline, now });
    }
    if deadline - now > max_horizon_secs {
        return Err(Error::DeadlineTooFar { deadline, now, max_horizon_secs });
    }
    Ok(())
}

/// Rule: a signed timestamp is within `skew_secs` of our clock.
pub fn check_timestamp(timestamp: u64, now: u64, skew_secs: u64) -> Result<()> {
    if timestamp.abs_diff(now) > skew_secs {
        return Err(Error::TimestampSkew { timestamp, now, skew_secs });
    }
    Ok(())
}

/// Rule: the commitment's `requestHash` is the hash of the body that came with it.
pub fn check_request_hash(request: &SignedRequest) -> Result<()> {
    let expected = request_hash(&request.body);
    if request.commitment.requestHash != expected {
        return Err(Error::RequestHashMismatch { expected, got: request.commitment.requestHash });
    }
    Ok(())
}

/// Rule: the response references this request's digest and repeats its parties and model.
pub fn check_binding(
    response: &ResponseCommitment,
    request: &RequestCommitment,
    request_digest: &B256,
) -> Result<()> {
    if response.requestDigest != *request_digest {
        return Err(Error::RequestDigestMismatch {
            expected: *request_digest,
            got: response.requestDigest,
        });
    }
    if response.client != request.client {
        return Err(Error::ResponseFieldMismatch { field: "client" });
    }
    if response.executor != request.executor {
        return Err(Error::ResponseFieldMismatch { field: "executor" });
    }
    if response.model != request.model {
        return Err(Error::ResponseFieldMismatch { field: "model" });
    }
    Ok(())
}

/// Rule: reported usage stays within the request's token limits.
pub fn check_token_limits(
    response: &ResponseCommitment,
    request: &RequestCommitment,
) -> Result<()> {
    if response.outputTokens > request.maxOutputTokens {
        return Err(Error::TooManyOutputTokens {
            got: response.outputTokens,
            max: request.maxOutputTokens,
        });
    }
    if response.inputTokens > request.maxInputTokens {
        return Err(Error::TooManyInputTokens {
            got: response.inputTokens,
            max: request.maxInputTokens,
        });
    }
    Ok(())
}

/// `input × price_in + output × price_out`, exactly, in uint256.
pub fn compute_cost(input: u64, output: u64, price_in: U256, price_out: U256) -> Result<U256> {
    let a = U256::from(input).checked_mul(price_in).ok_or(Error::CostOverflow)?;
    let b = U256::from(output).checked_mul(price_out).ok_or(Error::CostOverflow)?;
    a.checked_add(b).ok_or(Error::CostOverflow)
}

/// Rule: the claimed cost equals usage × the request's prices.
pub fn check_cost(response: &ResponseCommitment, request: &RequestCommitment) -> Result<()> {
    let expected = compute_cost(
        response.inputTokens,
        response.outputTokens,
        request.pricePerInputToken,
        request.pricePerOutputToken,
    )?;
    if response.totalCost != expected {
        return Err(Error::CostMismatch { expected, claimed: response.totalCost });
    }
    Ok(())
}

/// Rule: the content hash matches the content actually received.
pub fn check_content_hash(claimed: &B256, content: &str) -> Result<()> {
    let actual = content_hash(content);
    if actual != *claimed {
        return Err(Error::ContentHashMismatch { actual, claimed: *claimed });
    }
    Ok(())
}

// ----- composite checks -----------------------------------------------------------------------

/// Verifies a request as an executor receives it (every stateless rule); returns its digest.
/// Pass a [`DigestedRequest`](crate::DigestedRequest) where the digest is already known.
///
/// `sender` is the peer the request came from; pass `None` only where there is no peer (e.g.
/// re-checking a stored receipt). The nonce rule is applied separately with
/// [`ReplayStore::check_and_record`](crate::ReplayStore::check_and_record), after this succeeds.
pub fn verify_request<R: RequestWithDigest + ?Sized>(
    request: &R,
    sender: Option<&PeerId>,
    policy: &VerifyPolicy,
    now: u64,
) -> Result<B256> {
    let digest = request.request_digest();
    let request = request.signed_request();
    request.body.validate(&policy.limits)?;
    let client = request.commitment.client;
    check_origin(&policy.domain, &request.domain, &digest, &request.signature, client, sender)?;
    check_request_hash(request)?;
    check_deadline(request.commitment.deadline, now, policy.max_deadline_horizon_secs)?;
    Ok(digest)
}

/// Verifies a final response against the request it answers and the text received, the
/// text's shape included where the request asked for JSON
/// ([`check_answer_format`](crate::answer_format::check_answer_format)).
pub fn verify_response<R: RequestWithDigest + ?Sized>(
    response: &SignedResponse,
    request: &R,
    content: &str,
    sender: Option<&PeerId>,
    policy: &VerifyPolicy,
    now: u64,
) -> Result<()> {
    check_partial(response, false)?;
    verify_commitment(response, request, content, sender, policy, now)?;
    let finish = FinishReason::from_code(response.commitment.finishReason)?;
    let sampling = &request.signed_request().body.sampling;
    crate::answer_format::check_answer_format(sampling, finish, content)
}

/// Verifies a mid-stream checkpoint against the request and the text received so far.
pub fn verify_checkpoint<R: RequestWithDigest + ?Sized>(
    checkpoint: &SignedResponse,
    request: &R,
    content_so_far: &str,
    sender: Option<&PeerId>,
    policy: &VerifyPolicy,
    now: u64,
) -> Result<()> {
    check_partial(checkpoint, true)?;
    verify_commitment(checkpoint, request, content_so_far, sender, policy, now)
}

/// Rule: checkpoints are PARTIAL and final responses are not.
fn check_partial(response: &SignedResponse, expect_partial: bool) -> Result<()> {
    let partial =
        FinishReason::from_code(response.commitment.finishReason)? == FinishReason::Partial;
    match (expect_partial, partial) {
        (true, false) => Err(Error::InvalidMessage("a checkpoint must be PARTIAL".into())),
        (false, true) => Err(Error::InvalidMessage("a final response cannot be PARTIAL".into())),
        _ => Ok(()),
    }
}

fn verify_commitment<R: RequestWithDigest + ?Sized>(
    response: &SignedResponse,
    request: &R,
    content: &str,
    sender: Option<&PeerId>,
    policy: &VerifyPolicy,
    now: u64,
) -> Result<()> {
    let c = &response.commitment;
    let digest = response.digest();
    check_origin(
        &policy.domain,
        &response.domain,
        &digest,
        &response.signature,
        c.executor,
        sender,
    )?;
    let request_digest = request.request_digest();
    let request = &request.signed_request().commitment;
    check_binding(c, request, &request_digest)?;
    check_timestamp(c.timestamp, now, policy.clock_skew_secs)?;
    check_token_limits(c, request)?;
    check_cost(c, request)?;
    check_content_hash(&c.contentHash, content)
}

/// Verifies a signed error notice: signed by the sender for our domain, about this request.
pub fn verify_error(
    error: &SignedError,
    request_digest: &B256,
    sender: Option<&PeerId>,
    policy: &VerifyPolicy,
    now: u64,
) -> Result<()> {
    let c = &error.commitment;
    check_origin(
        &policy.domain,
        &error.domain,
        &error.digest(),
        &error.signature,
        c.executor,
        sender,
    )?;
    if c.requestDigest != *request_digest {
        return Err(Error::RequestDigestMismatch {
            expected: *request_digest,
            got: c.requestDigest,
        });
    }
    check_timestamp(c.timestamp, now, policy.clock_skew_secs)
}
