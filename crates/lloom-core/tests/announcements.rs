//! Signed model announcements: honest ones verify; forged, unsigned, misattributed, tampered
//! and oversized ones are refused with their exact error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

mod common;

use common::*;
use lloom_core::{
    AnnouncementBody, AnnouncementLimits, DomainConfig, Error, ExecutorLoad, ModelOffer, NodeKey,
    SignedAnnouncement, U256, VerifyPolicy, verify_announcement,
};

fn body() -> AnnouncementBody {
    AnnouncementBody {
        offers: vec![ModelOffer {
            model: "SmolLM2-135M-Instruct".into(),
            context_length: 8192,
            price_per_input_token: U256::from(1_000u64),
            price_per_output_token: U256::from(2_000u64),
            weights_sha256: None,
            quantization: Some("Q4_1".into()),
            capabilities: vec!["chat".into(), "stream".into()],
        }],
        load: ExecutorLoad {
            queue_depth: 0,
            free_slots: 4,
            max_concurrency: 4,
            free_memory_bytes: 1 << 30,
        },
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
    }
}

fn announce(key: &NodeKey) -> SignedAnnouncement {
    SignedAnnouncement::sign(key, DomainConfig::default(), 7, NOW, body(), false).unwrap()
}

fn check(ann: &SignedAnnouncement, source: &NodeKey) -> Result<(), Error> {
    let limits = AnnouncementLimits::default();
    verify_announcement(ann, Some(&source.peer_id()), &VerifyPolicy::default(), &limits, NOW)
}

#[test]
fn honest_announcement_round_trips_and_verifies() {
    let key = executor_key();
    let ann = announce(&key);
    let decoded =
        SignedAnnouncement::decode(&ann.encode(), &AnnouncementLimits::default()).unwrap();
    assert_eq!(decoded, ann);
    check(&decoded, &key).unwrap();
}

#[test]
fn forged_announcement_signed_by_another_key_is_rejected() {
    let mut ann = announce(&client_key());
    ann.commitment.executor = executor_key().address();
    assert!(matches!(check(&ann, &executor_key()), Err(Error::SignerMismatch { .. })));
}

#[test]
fn announcement_relayed_as_another_peer_is_rejected() {
    let ann = announce(&executor_key());
    assert!(matches!(check(&ann, &client_key()), Err(Error::PeerMismatch { .. })));
}

#[test]
fn unsigned_announcements_do_not_decode() {
    let limits = AnnouncementLimits::default();
    let mut bytes = announce(&executor_key()).encode();
    // Zero the signature (the last 65 bytes; postcard puts a length byte before them).
    let n = bytes.len();
    bytes[n - 65..].fill(0);
    assert!(matches!(SignedAnnouncement::decode(&bytes, &limits), Err(Error::Decode(_))));
    // Strip it entirely.
    let stripped = &bytes[..n - 66];
    assert!(SignedAnnouncement::decode(stripped, &limits).is_err());
}

#[test]
fn tampered_body_is_rejected() {
    let mut ann = announce(&executor_key());
    ann.body.offers[0].price_per_output_token = U256::from(1u64);
    assert!(matches!(check(&ann, &executor_key()), Err(Error::OffersHashMismatch { .. })));
}

#[test]
fn oversized_announcements_are_rejected() {
    let limits = AnnouncementLimits::default();
    let mut big = body();
    big.offers = vec![big.offers[0].clone(); limits.max_offers + 1];
    let ann =
        SignedAnnouncement::sign(&executor_key(), DomainConfig::default(), 1, NOW, big, false)
            .unwrap();
    assert!(matches!(
        SignedAnnouncement::decode(&ann.encode(), &limits),
        Err(Error::TooLarge { what: "offers", .. })
    ));
    assert!(matches!(check(&ann, &executor_key()), Err(Error::TooLarge { .. })));
    let huge = vec![1u8; limits.max_bytes + 1];
    assert!(matches!(
        SignedAnnouncement::decode(&huge, &limits),
        Err(Error::TooLarge { what: "announcement", .. })
    ));
}

#[test]
fn stale_timestamps_and_wrong_domains_are_rejected() {
    let key = executor_key();
    let old = SignedAnnouncement::sign(&key, DomainConfig::default(), 1, NOW - 3600, body(), false)
        .unwrap();
    assert!(matches!(check(&old, &key), Err(Error::TimestampSkew { .. })));
    let other = SignedAnnouncement::sign(
        &key,
        DomainConfig::new(1, Default::default()),
        1,
        NOW,
        body(),
        false,
    )
    .unwrap();
    assert!(matches!(check(&other, &key), Err(Error::DomainMismatch { .. })));
}
