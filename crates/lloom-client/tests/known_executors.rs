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

use std::time::Duration;

use lloom_client::{Client, ClientConfig, Error};
use lloom_core::NodeKey;
use lloom_core::network::test_utils::WAIT;
use lloom_executor::backend::scripted::Script;

mod scripted;
use scripted::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_started_with_the_validator_down_uses_the_executors_an_earlier_run_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (validator, addrs) = validator().await;
    let (_node, key) = executor(&addrs, Script::answer(MODEL, "Paris."), 3, &dir).await;
    let file = dir.path().join("client").join("known-executors.json");
    let config = |known: Option<&std::path::Path>| {
        ClientConfig {
            known_executors_file: known.map(std::path::Path::to_path_buf),
            // Only the runs that find no executor to fall back on wait this long.
            discovery_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        }
        .bootstrap(addrs.clone())
    };

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
