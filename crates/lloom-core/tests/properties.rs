//! Property tests: tampering with any single signed field is caught, codec round trips, and
//! arbitrary, oversized or truncated input gives an error, never a panic.
#![allow(
    clippy::panic,
    clippy::needless_pass_by_value,
    clippy::cast_possible_truncation,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use lloom_core::verify::{verify_request, verify_response};
use lloom_core::wire::{decode_frame, encode_frame, read_frame};
use lloom_core::{
    Address, B256, ChatMessage, Error, Role, SamplingParams, SignedRequest, StreamChunk, U256,
    VerifyPolicy, WireLimits, WireMessage,
};
use proptest::prelude::*;

const REQUEST_FIELDS: usize = 12;

/// Changes field `field` of a signed request to something different (derived from `salt`).
fn tamper_request(req: &mut SignedRequest, field: usize, salt: u64) {
    let c = &mut req.commitment;
    let bump = salt.max(1);
    match field {
        0 => {
            c.client = Address::repeat_byte(0x5a) ^ Address::left_padding_from(&salt.to_be_bytes())
        }
        1 => c.executor = Address::repeat_byte(0xa5),
        2 => c.model.push('x'),
        3 => c.requestHash ^= B256::left_padding_from(&bump.to_be_bytes()),
        4 => c.maxInputTokens ^= bump,
        5 => c.maxOutputTokens ^= bump,
        6 => c.pricePerInputToken ^= U256::from(bump),
        7 => c.pricePerOutputToken ^= U256::from(bump),
        8 => c.nonce ^= bump,
        9 => c.deadline = c.deadline.wrapping_sub(bump % 30 + 1),
        10 => req.body.messages[0].content.push_str(&salt.to_string()),
        _ => {
            let mut sig = *req.signature.as_bytes();
            sig[(salt % 64) as usize] ^= 0x01;
            match lloom_core::Signature::from_bytes(&sig) {
                Ok(s) => req.signature = s,
                // The flip made the signature non-canonical: that is a rejection too.
                Err(_) => req.commitment.nonce ^= 1,
            }
        }
    }
}

fn chat_message() -> impl Strategy<Value = ChatMessage> {
    (prop_oneof![Just(Role::System), Just(Role::User), Just(Role::Assistant)], ".{0,200}")
        .prop_map(|(role, content)| ChatMessage { role, content })
}

fn wire_message() -> impl Strategy<Value = WireMessage> {
    prop_oneof![
        (any::<u32>(), ".{0,500}")
            .prop_map(|(index, text)| WireMessage::Chunk(StreamChunk { index, text })),
        (
            proptest::collection::vec(chat_message(), 1..8),
            0.0f32..2.0,
            0.01f32..1.0,
            any::<u32>(),
            any::<Option<u64>>(),
            any::<u64>(),
        )
            .prop_map(|(messages, temperature, top_p, top_k, seed, nonce)| {
                let mut req = signed_request();
                req.body.messages = messages;
                req.body.sampling = SamplingParams {
                    temperature,
                    top_p,
                    top_k,
                    seed,
                    stop: vec!["</s>".into()],
                    ..SamplingParams::default()
                };
                req.commitment.nonce = nonce;
                WireMessage::Request(req)
            }),
        any::<u64>().prop_map(|out| {
            let req = signed_request();
            let mut resp = signed_response(&req);
            resp.commitment.outputTokens = out;
            WireMessage::Response(resp)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_single_request_field_tampering_is_rejected(field in 0..REQUEST_FIELDS, salt in any::<u64>()) {
        let mut req = signed_request();
        tamper_request(&mut req, field, salt);
        prop_assert!(verify_request(&req, Some(&client_key().peer_id()), &VerifyPolicy::default(), NOW).is_err());
    }

    #[test]
    fn any_single_response_field_tampering_is_rejected(field in 0..11usize, salt in 1..u64::MAX) {
        let req = signed_request();
        let mut resp = signed_response(&req);
        let c = &mut resp.commitment;
        match field {
            0 => c.requestDigest ^= B256::left_padding_from(&salt.to_be_bytes()),
            1 => c.client = Address::repeat_byte(0x11),
            2 => c.executor = Address::repeat_byte(0x22),
            3 => c.model.push('!'),
            4 => c.contentHash ^= B256::left_padding_from(&salt.to_be_bytes()),
            5 => c.inputTokens ^= salt,
            6 => c.outputTokens ^= salt,
            7 => c.totalCost ^= U256::from(salt),
            8 => c.finishReason ^= (salt % 3 + 1) as u8,
            9 => c.timestamp ^= salt,
            _ => resp.domain.chain_id ^= salt,
        }
        let policy = VerifyPolicy::default();
        prop_assert!(verify_response(&resp, &req, TEXT, Some(&executor_key().peer_id()), &policy, NOW).is_err());
    }

    #[test]
    fn frames_round_trip(msg in wire_message()) {
        let limits = WireLimits::default();
        let frame = encode_frame(&msg, &limits).unwrap();
        let (decoded, used) = decode_frame(&frame, &limits).unwrap();
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(&decoded, &msg);
        let mut reader = futures::io::Cursor::new(frame);
        let streamed = futures::executor::block_on(read_frame(&mut reader, &limits)).unwrap();
        prop_assert_eq!(streamed, Some(msg));
    }

    #[test]
    fn truncated_frames_are_errors(msg in wire_message(), cut in any::<prop::sample::Index>()) {
        let limits = WireLimits::default();
        let frame = encode_frame(&msg, &limits).unwrap();
        let short = &frame[..cut.index(frame.len())];
        prop_assert!(decode_frame(short, &limits).is_err());
        let mut reader = futures::io::Cursor::new(short.to_vec());
        let streamed = futures::executor::block_on(read_frame(&mut reader, &limits));
        if short.is_empty() {
            prop_assert!(matches!(streamed, Ok(None)), "empty stream is a clean end");
        } else {
            let truncated = matches!(streamed, Err(Error::Truncated { .. }));
            prop_assert!(truncated, "expected Truncated");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let limits = WireLimits::default();
        let _ = decode_frame(&bytes, &limits);
        let _ = lloom_core::wire::decode_payload(&bytes, &limits);
        let mut reader = futures::io::Cursor::new(bytes);
        let _ = futures::executor::block_on(read_frame(&mut reader, &limits));
    }
}

#[test]
fn oversized_length_prefix_is_rejected_before_allocation() {
    let limits = WireLimits::default();
    // Announces 4 GiB - 1 but carries 3 bytes: must fail on the prefix, not try to allocate.
    let frame = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    assert!(matches!(
        decode_frame(&frame, &limits),
        Err(Error::TooLarge { what: "frame", size: 0xffff_ffff, .. })
    ));
    let mut reader = futures::io::Cursor::new(frame.to_vec());
    assert!(matches!(
        futures::executor::block_on(read_frame(&mut reader, &limits)),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn oversized_fields_are_rejected_on_both_sides() {
    let limits = WireLimits::default();
    let big =
        WireMessage::Chunk(StreamChunk { index: 0, text: "x".repeat(limits.max_chunk_bytes + 1) });
    assert!(matches!(
        encode_frame(&big, &limits),
        Err(Error::TooLarge { what: "stream chunk", .. })
    ));
    // A peer with laxer limits sends it anyway: we still refuse it.
    let lax = WireLimits { max_chunk_bytes: usize::MAX, ..limits };
    let frame = encode_frame(&big, &lax).unwrap();
    assert!(matches!(decode_frame(&frame, &limits), Err(Error::TooLarge { .. })));

    let mut req = signed_request();
    req.body.messages = vec![req.body.messages[0].clone(); limits.max_messages + 1];
    let frame = encode_frame(
        &WireMessage::Request(req),
        &WireLimits { max_messages: usize::MAX, ..limits },
    )
    .unwrap();
    assert!(matches!(decode_frame(&frame, &limits), Err(Error::TooLarge { what: "messages", .. })));

    let small = WireLimits { max_frame_bytes: 64, ..limits };
    let frame = encode_frame(&WireMessage::Request(signed_request()), &limits).unwrap();
    assert!(matches!(decode_frame(&frame, &small), Err(Error::TooLarge { what: "frame", .. })));
}

#[test]
fn unknown_version_and_trailing_bytes_are_rejected() {
    let limits = WireLimits::default();
    let mut frame =
        encode_frame(&WireMessage::Chunk(StreamChunk { index: 1, text: "hi".into() }), &limits)
            .unwrap();
    frame[4] = 2;
    assert!(matches!(decode_frame(&frame, &limits), Err(Error::UnsupportedVersion(2))));
    frame[4] = 1;
    frame.push(0);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(decode_frame(&frame, &limits), Err(Error::InvalidMessage(_))));
}

#[test]
fn two_frames_back_to_back_on_one_stream() {
    let limits = WireLimits::default();
    let a = WireMessage::Chunk(StreamChunk { index: 0, text: "Par".into() });
    let b = WireMessage::Chunk(StreamChunk { index: 1, text: "is".into() });
    let mut bytes = encode_frame(&a, &limits).unwrap();
    bytes.extend(encode_frame(&b, &limits).unwrap());
    let mut reader = futures::io::Cursor::new(bytes);
    futures::executor::block_on(async {
        assert_eq!(read_frame(&mut reader, &limits).await.unwrap(), Some(a));
        assert_eq!(read_frame(&mut reader, &limits).await.unwrap(), Some(b));
        assert_eq!(read_frame(&mut reader, &limits).await.unwrap(), None);
    });
}
