//! Every verification rule, each failing on purpose with its exact error.
#![allow(
    clippy::panic,
    clippy::needless_pass_by_value,
    clippy::cast_possible_truncation,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

mod common;

use common::*;
use lloom_core::verify::{verify_checkpoint, verify_error, verify_request, verify_response};
use lloom_core::{
    Address, B256, DomainConfig, Error, ErrorCode, ErrorCommitment, FinishReason, OutputFormat,
    ReplayStore, SignedError, SignedRequest, SignedResponse, U256, VerifyPolicy,
};

fn policy() -> VerifyPolicy {
    VerifyPolicy::default()
}

fn resign_response(
    req: &SignedRequest,
    edit: impl FnOnce(&mut lloom_core::ResponseCommitment),
) -> SignedResponse {
    let mut c = response_commitment(req, TEXT, 8, FinishReason::Stop);
    edit(&mut c);
    SignedResponse::sign(&executor_key(), DomainConfig::default(), c).unwrap()
}

#[test]
fn honest_exchange_verifies() {
    let req = signed_request();
    let digest = verify_request(&req, Some(&client_key().peer_id()), &policy(), NOW).unwrap();
    assert_eq!(digest, req.digest());
    let resp = signed_response(&req);
    verify_response(&resp, &req, TEXT, Some(&executor_key().peer_id()), &policy(), NOW).unwrap();
}

#[test]
fn signer_must_be_the_sending_peer() {
    let req = signed_request();
    let err = verify_request(&req, Some(&executor_key().peer_id()), &policy(), NOW).unwrap_err();
    assert!(matches!(err, Error::PeerMismatch { .. }), "{err}");
    let resp = signed_response(&req);
    let err = verify_response(&resp, &req, TEXT, Some(&client_key().peer_id()), &policy(), NOW)
        .unwrap_err();
    assert!(matches!(err, Error::PeerMismatch { .. }), "{err}");
}

#[test]
fn signature_by_another_key_is_rejected() {
    let forged =
        SignedRequest::sign(&executor_key(), DomainConfig::default(), request_commitment(), body())
            .unwrap();
    let err = verify_request(&forged, None, &policy(), NOW).unwrap_err();
    assert!(
        matches!(err, Error::SignerMismatch { claimed, recovered }
            if claimed == client_key().address() && recovered == executor_key().address()),
        "{err}"
    );
}

#[test]
fn wrong_chain_or_contract_is_rejected() {
    let req = signed_request();
    for domain in
        [DomainConfig::new(1, Address::ZERO), DomainConfig::new(31_337, Address::repeat_byte(0x42))]
    {
        let err = verify_request(&req, None, &VerifyPolicy::new(domain), NOW).unwrap_err();
        assert!(matches!(err, Error::DomainMismatch { .. }), "{err}");
    }
    // A message that lies about its domain: signed for chain 1, labelled as the default one.
    let mut lying = SignedRequest::sign(
        &client_key(),
        DomainConfig::new(1, Address::ZERO),
        request_commitment(),
        body(),
    )
    .unwrap();
    lying.domain = DomainConfig::default();
    let err = verify_request(&lying, None, &policy(), NOW).unwrap_err();
    assert!(matches!(err, Error::SignerMismatch { .. }), "{err}");
}

#[test]
fn deadline_rules() {
    let req = signed_request();
    let late = req.commitment.deadline + 1;
    assert!(matches!(
        verify_request(&req, None, &policy(), late),
        Err(Error::DeadlinePassed { .. })
    ));
    let mut far = request_commitment();
    far.deadline = NOW + VerifyPolicy::DEFAULT_MAX_DEADLINE_HORIZON_SECS + 1;
    let far = SignedRequest::sign(&client_key(), DomainConfig::default(), far, body()).unwrap();
    assert!(matches!(
        verify_request(&far, None, &policy(), NOW),
        Err(Error::DeadlineTooFar { .. })
    ));
}

#[test]
fn body_must_match_request_hash() {
    let mut req = signed_request();
    req.body.messages[0].content.push('!');
    assert!(matches!(
        verify_request(&req, None, &policy(), NOW),
        Err(Error::RequestHashMismatch { .. })
    ));
}

#[test]
fn invalid_bodies_are_rejected() {
    for edit in [
        |b: &mut lloom_core::RequestBody| b.messages.clear(),
        |b: &mut lloom_core::RequestBody| b.sampling.temperature = f32::NAN,
        |b: &mut lloom_core::RequestBody| b.sampling.top_p = 0.0,
        |b: &mut lloom_core::RequestBody| b.sampling.stop = vec![String::new()],
        |b: &mut lloom_core::RequestBody| b.sampling.frequency_penalty = 2.5,
        |b: &mut lloom_core::RequestBody| b.sampling.presence_penalty = f32::NEG_INFINITY,
        |b: &mut lloom_core::RequestBody| b.sampling.format = schema("answer", "{\"type\":"),
        |b: &mut lloom_core::RequestBody| b.sampling.format = schema("answer", "[1, 2]"),
        |b: &mut lloom_core::RequestBody| b.sampling.format = schema("an answer", "{}"),
        |b: &mut lloom_core::RequestBody| b.sampling.format = schema("", "{}"),
    ] {
        let mut req = signed_request();
        edit(&mut req.body);
        assert!(matches!(
            verify_request(&req, None, &policy(), NOW),
            Err(Error::InvalidMessage(_))
        ));
    }
}

/// The test request with its body edited by `edit`, hashed and signed again.
fn signed_with_body(edit: impl FnOnce(&mut lloom_core::RequestBody)) -> SignedRequest {
    let mut body = body();
    edit(&mut body);
    let mut commitment = request_commitment();
    commitment.requestHash = lloom_core::wire::request_hash(&body);
    SignedRequest::sign(&client_key(), DomainConfig::default(), commitment, body).unwrap()
}

fn schema(name: &str, schema: &str) -> OutputFormat {
    OutputFormat::JsonSchema { name: name.into(), schema: schema.into() }
}

#[test]
fn a_schema_larger_than_the_limit_is_rejected_and_one_within_it_verifies() {
    let signed = |format: OutputFormat| signed_with_body(|b| b.sampling.format = format);
    let limit = lloom_core::WireLimits::default().max_schema_bytes;
    let padding = " ".repeat(limit);
    let huge = signed(schema("answer", &format!("{{{padding}}}")));
    assert!(matches!(
        verify_request(&huge, None, &policy(), NOW),
        Err(Error::TooLarge { what: "JSON schema", .. })
    ));
    let fits = r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;
    for format in [OutputFormat::JsonObject, schema("capital_city-1", fits)] {
        verify_request(&signed(format), None, &policy(), NOW).unwrap();
    }
}

/// Verifies `text`, signed by the executor as the whole answer to `req`, ended by `finish`.
fn final_answer(req: &SignedRequest, text: &str, finish: FinishReason) -> Result<(), Error> {
    let c = response_commitment(req, text, 8, finish);
    let resp = SignedResponse::sign(&executor_key(), DomainConfig::default(), c).unwrap();
    verify_response(&resp, req, text, None, &policy(), NOW).map(|_| ())
}

#[test]
fn a_final_answer_must_have_the_shape_its_request_asked_for() {
    let req = signed_with_body(|b| {
        b.sampling.format = OutputFormat::JsonObject;
        // No stop sequence that could have cut a `stop` answer short.
        b.sampling.stop.clear();
    });
    let answer = |text: &str, finish| final_answer(&req, text, finish);
    answer(r#"{"capital": "Paris"}"#, FinishReason::Stop).unwrap();
    answer(r#"{"capital": "Pa"#, FinishReason::Length).unwrap();
    let err = answer(TEXT, FinishReason::Stop).unwrap_err();
    assert!(matches!(err, Error::FormatViolated { wanted: "a JSON object", .. }), "{err}");
    let err = answer(r#"{"capital": "Pa"#, FinishReason::Stop).unwrap_err();
    assert!(matches!(err, Error::FormatViolated { .. }), "{err}");
    // A checkpoint is the start of an answer: its shape is not checked.
    let c = response_commitment(&req, TEXT, 8, FinishReason::Partial);
    let cp = SignedResponse::sign(&executor_key(), DomainConfig::default(), c).unwrap();
    verify_checkpoint(&cp, &req, TEXT, None, &policy(), NOW).unwrap();
}

#[test]
fn a_whole_answer_must_be_one_its_schema_accepts() {
    let fits = r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;
    let req = signed_with_body(|b| {
        b.sampling.format = schema("capital", fits);
        b.sampling.stop.clear();
    });
    let answer = |text: &str, finish| final_answer(&req, text, finish);
    answer(r#"{"city": "Paris"}"#, FinishReason::Stop).unwrap();
    let err = answer(r#"{"town": "Paris"}"#, FinishReason::Stop).unwrap_err();
    assert!(
        matches!(err, Error::FormatViolated { wanted: "JSON its schema accepts", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("required property \"city\""), "{err}");
    assert!(err.is_peer_fault(), "{err}");
    let err = answer(r#"{"city": 75}"#, FinishReason::Stop).unwrap_err();
    assert!(err.to_string().contains("at /city: it is an integer, not a string"), "{err}");
    // An answer cut off by `max_tokens` is the start of one: its schema is not checked.
    answer(r#"{"town": "Pa"#, FinishReason::Length).unwrap();
}

#[test]
fn nonce_replay_rejected_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nonces.redb");
    let req = signed_request();
    let c = &req.commitment;
    ReplayStore::open(&path).unwrap().check_and_record(c.client, c.nonce, c.deadline, NOW).unwrap();
    let reopened = ReplayStore::open(&path).unwrap();
    assert!(matches!(
        reopened.check_and_record(c.client, c.nonce, c.deadline, NOW),
        Err(Error::NonceReplayed { nonce: 42, .. })
    ));
}

#[test]
fn response_must_reference_the_request() {
    let req = signed_request();
    let resp = resign_response(&req, |c| c.requestDigest = B256::repeat_byte(1));
    assert!(matches!(
        verify_response(&resp, &req, TEXT, None, &policy(), NOW),
        Err(Error::RequestDigestMismatch { .. })
    ));
    let resp = resign_response(&req, |c| c.model = "other".into());
    assert!(matches!(
        verify_response(&resp, &req, TEXT, None, &policy(), NOW),
        Err(Error::ResponseFieldMismatch { field: "model" })
    ));
}

#[test]
fn usage_and_cost_rules() {
    let req = signed_request();
    let resp = resign_response(&req, |c| {
        c.outputTokens = 65;
        c.totalCost = U256::from(12 * 3 + 65 * 5);
    });
    assert!(matches!(
        verify_response(&resp, &req, TEXT, None, &policy(), NOW),
        Err(Error::TooManyOutputTokens { got: 65, max: 64 })
    ));
    let resp = resign_response(&req, |c| c.totalCost += U256::from(1));
    let err = verify_response(&resp, &req, TEXT, None, &policy(), NOW).unwrap_err();
    assert!(
        matches!(err, Error::CostMismatch { expected, .. } if expected == U256::from(12 * 3 + 8 * 5)),
        "{err}"
    );
}

#[test]
fn cost_overflow_is_an_error_not_a_wrap() {
    let err = lloom_core::verify::compute_cost(2, 0, U256::MAX, U256::ZERO).unwrap_err();
    assert!(matches!(err, Error::CostOverflow));
    let ok = lloom_core::verify::compute_cost(u64::MAX, u64::MAX, U256::from(u64::MAX), U256::ONE);
    assert_eq!(ok.unwrap(), U256::from(u64::MAX) * U256::from(u64::MAX) + U256::from(u64::MAX));
}

#[test]
fn content_hash_must_match_what_was_streamed() {
    let req = signed_request();
    let resp = signed_response(&req);
    assert!(matches!(
        verify_response(&resp, &req, "The capital of France is Lyon.", None, &policy(), NOW),
        Err(Error::ContentHashMismatch { .. })
    ));
}

#[test]
fn timestamps_outside_the_skew_window_are_rejected() {
    let req = signed_request();
    let resp = signed_response(&req);
    let skew = VerifyPolicy::DEFAULT_CLOCK_SKEW_SECS;
    verify_response(&resp, &req, TEXT, None, &policy(), NOW + skew).unwrap();
    for now in [NOW + skew + 1, NOW - skew - 1] {
        assert!(matches!(
            verify_response(&resp, &req, TEXT, None, &policy(), now),
            Err(Error::TimestampSkew { .. })
        ));
    }
}

#[test]
fn checkpoints_and_finals_are_not_interchangeable() {
    let req = signed_request();
    let partial = response_commitment(&req, "The capital", 2, FinishReason::Partial);
    let cp = SignedResponse::sign(&executor_key(), DomainConfig::default(), partial).unwrap();
    verify_checkpoint(&cp, &req, "The capital", None, &policy(), NOW).unwrap();
    assert!(matches!(
        verify_response(&cp, &req, "The capital", None, &policy(), NOW),
        Err(Error::InvalidMessage(_))
    ));
    let fin = signed_response(&req);
    assert!(matches!(
        verify_checkpoint(&fin, &req, TEXT, None, &policy(), NOW),
        Err(Error::InvalidMessage(_))
    ));
}

#[test]
fn signed_errors_verify_and_bind_to_the_request() {
    let req = signed_request();
    let notice = ErrorCommitment {
        requestDigest: req.digest(),
        executor: executor_key().address(),
        code: ErrorCode::Busy.code(),
        message: "queue full".into(),
        retryAfterMillis: 5_000,
        timestamp: NOW,
    };
    let signed = SignedError::sign(&executor_key(), DomainConfig::default(), notice).unwrap();
    verify_error(&signed, &req.digest(), Some(&executor_key().peer_id()), &policy(), NOW).unwrap();
    assert!(matches!(
        verify_error(&signed, &B256::ZERO, None, &policy(), NOW),
        Err(Error::RequestDigestMismatch { .. })
    ));
    assert!(matches!(
        verify_error(&signed, &req.digest(), Some(&client_key().peer_id()), &policy(), NOW),
        Err(Error::PeerMismatch { .. })
    ));
    assert!(ErrorCode::from_code(signed.commitment.code).is_retryable());
}

#[test]
fn malleable_twin_of_a_valid_signature_is_rejected() {
    let req = signed_request();
    let bytes = req.signature.as_bytes();
    // s' = n - s, v flipped: the same signer, but the high-s form.
    let n = U256::from_str_radix(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
        16,
    )
    .unwrap();
    let s = U256::from_be_slice(&bytes[32..64]);
    let mut twin = bytes.to_vec();
    twin[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    twin[64] = if bytes[64] == 27 { 28 } else { 27 };
    assert!(matches!(lloom_core::Signature::from_bytes(&twin), Err(Error::HighS)));
}
