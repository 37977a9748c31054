//! The announcer against a real validator: offers appear, an update shows up without waiting
//! for a heartbeat, shutdown withdraws the executor (long before the stale window), and a
//! validator that restarts lists the executor again without waiting for a heartbeat.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod listing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_client::directory::ModelRow;
use lloom_core::network::NetworkConfig;
use lloom_core::network::test_utils::TestNode;
use lloom_core::{AnnouncementBody, ExecutorLoad, ModelOffer, NodeKey, U256};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{Announcer, AnnouncerConfig, ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};

use listing::models_until;

fn body(price_out: u64) -> AnnouncementBody {
    AnnouncementBody {
        offers: vec![ModelOffer {
            model: "smol".into(),
            context_length: 2048,
            price_per_input_token: U256::from(1u64),
            price_per_output_token: U256::from(price_out),
            weights_sha256: None,
            quantization: None,
            capabilities: vec![],
        }],
        load: ExecutorLoad::default(),
        listen_addrs: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_updates_and_withdraws() {
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), config).await.unwrap();
    let addr = validator.listen_addrs().await.unwrap().remove(0);
    let node = TestNode::spawn(false, vec![addr.clone()]).await.unwrap();
    // A long heartbeat: everything below must happen on start, on change or on shutdown.
    let announcer_config =
        AnnouncerConfig { heartbeat: Duration::from_secs(600), ..Default::default() };
    let announcer =
        Announcer::spawn(node.key.clone(), node.handle.clone(), body(5), announcer_config);

    let rows = models_until(&addr, |r| !r.is_empty()).await;
    assert_eq!(rows[0].output_price, (U256::from(5u64), U256::from(5u64)));

    announcer.update(body(9));
    models_until(&addr, |r| r.first().is_some_and(|m| m.output_price.0 == U256::from(9u64))).await;

    let stopped = Instant::now();
    announcer.shutdown().await.unwrap();
    models_until(&addr, <[ModelRow]>::is_empty).await;
    assert!(stopped.elapsed() < Duration::from_secs(10), "removal waited for the stale window");
    validator.shutdown().await;
}

/// A validator that restarts holds nothing of the executors it listed. The executor dials it
/// again (a bootstrap peer) and, once the validator subscribes to announcements, announces at
/// once: listed again in a second or two, not at its next heartbeat (ten minutes away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_validator_lists_the_executor_again_before_its_heartbeat() {
    let validator_key = NodeKey::generate();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let validator_config = || ValidatorConfig {
        network: NetworkConfig {
            server_mode: true,
            listen_addrs: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
            ..NetworkConfig::local()
        },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&validator_key, validator_config()).await.unwrap();
    let addr = validator.listen_addrs().await.unwrap().remove(0);

    let dir = tempfile::tempdir().unwrap();
    let mut config = ExecutorConfig::new(dir.path().join("executor"));
    config.network = NetworkConfig { bootstrap: vec![addr.clone()], ..NetworkConfig::local() };
    config.announce = AnnouncerConfig { heartbeat: Duration::from_secs(600), ..Default::default() };
    let offer = ModelOffer {
        model: "smol".into(),
        context_length: 1024,
        price_per_input_token: U256::from(1u64),
        price_per_output_token: U256::from(2u64),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    };
    let backend = Arc::new(ScriptedBackend::new(Script::answer("smol", "Paris.")));
    let _executor =
        ExecutorNode::start(&NodeKey::generate(), vec![ServedModel { offer, backend }], config)
            .await
            .unwrap();
    models_until(&addr, |rows| !rows.is_empty()).await;

    // The validator restarts on the same address with an empty registry.
    validator.shutdown().await;
    let validator = Validator::spawn(&validator_key, validator_config()).await.unwrap();
    let restarted = Instant::now();
    let rows = models_until(&addr, |rows| !rows.is_empty()).await;
    assert_eq!((rows[0].model.as_str(), rows[0].executors), ("smol", 1));
    let relisted = restarted.elapsed();
    assert!(relisted < Duration::from_secs(10), "relisted after {relisted:?}");
    validator.shutdown().await;
}

/// An executor that never reached a validator has no one to tell it is leaving: it stops
/// cleanly (it used to exit with "publish failed: NoPeersSubscribedToTopic" on Ctrl-C).
#[tokio::test]
async fn shutting_down_with_no_validator_to_tell_is_not_an_error() {
    let node = TestNode::spawn(false, vec![]).await.unwrap();
    let announcer = Announcer::spawn(
        node.key.clone(),
        node.handle.clone(),
        body(5),
        AnnouncerConfig::default(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    announcer.shutdown().await.unwrap();
}
