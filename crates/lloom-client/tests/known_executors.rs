//! A client started while no validator answers reaches the executors an earlier run knew: the
//! earlier run kept the validators' directory in its data directory (signed announcements,
//! verified again when read). Real validator, executor and clients on loopback, mDNS off.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;
use std::time::Duration;

use lloom_client::{Client, ClientConfig, Error};
use lloom_core::NodeKey;
use lloom_core::network::test_utils::WAIT;
use lloom_executor::backend::scripted::Script;

mod scripted;
use scripted::*;

/// A client of the validator at `addrs` that keeps its known executors in `known`, if any.
fn config_with(known: Option<&Path>, addrs: &[lloom_core::network::Multiaddr]) -> ClientConfig {
    ClientConfig {
        known_executors_file: known.map(Path::to_path_buf),
        // Only the runs that find no executor to fall back on wait this long.
        discovery_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    }
    .bootstrap(addrs.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_started_with_the_validator_down_uses_the_executors_an_earlier_run_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (validator, addrs) = validator().await;
    let (_node, key) = executor(&addrs, Script::answer(MODEL, "Paris."), 3, &dir).await;
    let file = dir.path().join("client").join("known-executors.json");
    let config = |known: Option<&Path>| config_with(known, &addrs);

    // A first run learns the executor from the validator and keeps it.
    let first = connect(config(Some(&file)), 1).await;
    assert!(file.exists(), "the directory was not kept");
    first.shutdown();
    validator.shutdown().await;

    // Without the file, a client cannot start with the validator down.
    let err = Client::connect(NodeKey::generate(), config(None)).await.unwrap_err();
    assert!(matches!(err, Error::NoValidator(_)), "{err}");

    // With it, the next run answers through the executor it remembers, verified as ever; it
    // starts once the validator's dial has failed, not after the discovery timeout.
    let patient = ClientConfig { discovery_timeout: WAIT * 10, ..config(Some(&file)) };
    let started = Client::connect(NodeKey::generate(), patient);
    let second = tokio::time::timeout(WAIT, started).await.expect("waited it out").unwrap();
    let receipt = second.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!((receipt.executor, receipt.text.as_str()), (key.address(), "Paris."));
    assert_eq!(receipt.checks.len(), lloom_client::RESPONSE_CHECKS.len());
    let models = second.models().await.unwrap();
    assert_eq!((models.len(), models[0].executors), (1, 1));
    second.shutdown();

    // A file whose announcement was tampered with is not used.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut saved: serde_json::Value = serde_json::from_str(&text).unwrap();
    let announcement = saved["executors"][0]["announcement"].as_str().unwrap().to_owned();
    let flipped = match announcement.as_bytes()[40] {
        b'0' => "1",
        _ => "0",
    };
    let tampered = format!("{}{flipped}{}", &announcement[..40], &announcement[41..]);
    saved["executors"][0]["announcement"] = tampered.into();
    std::fs::write(&file, saved.to_string()).unwrap();
    let err = Client::connect(NodeKey::generate(), config(Some(&file))).await.unwrap_err();
    assert!(matches!(err, Error::NoValidator(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_an_earlier_run_saw_on_offer_is_gone_for_now_not_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let (_validator, addrs) = validator().await;
    let (node, _key) = executor(&addrs, Script::answer(MODEL, "Paris."), 3, &dir).await;
    let file = dir.path().join("client").join("known-executors.json");
    let config = |known: Option<&Path>| config_with(known, &addrs);
    connect(config(Some(&file)), 1).await.shutdown();

    // The executor stops (restarting, say); the validator lists nothing.
    node.shutdown().await.unwrap();
    let next = Client::connect(NodeKey::generate(), config(Some(&file))).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while next.refresh().await.unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "the validator still lists the executor");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A later run knows the model was on offer (from the file) and says so; without the file
    // the model is simply not served.
    match next.chat(ask()).await.map(drop) {
        Err(Error::NoExecutor { last_offered_secs: Some(age), .. }) => assert!(age < 60, "{age}"),
        other => panic!("expected the model to be gone for now: {other:?}"),
    }
    let fresh = Client::connect(NodeKey::generate(), config(None)).await.unwrap();
    match fresh.chat(ask()).await.map(drop) {
        Err(Error::NoExecutor { last_offered_secs: None, .. }) => {}
        other => panic!("expected the model to be unknown: {other:?}"),
    }
    let other_model = lloom_client::ChatRequest::user("never-offered", "?");
    match next.chat(other_model).await.map(drop) {
        Err(Error::NoExecutor { last_offered_secs: None, .. }) => {}
        other => panic!("expected the model to be unknown: {other:?}"),
    }
}
