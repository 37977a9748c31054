//! A validator that restarts holds nothing of the executors it listed. The executor dials it
//! again (it is a bootstrap peer) and, once the validator subscribes to announcements,
//! announces at once: listed again in a second or two, not at its next heartbeat (here ten
//! minutes away).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_client::cli::{DiscoveryArgs, discover};
use lloom_core::network::test_utils::WAIT;
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{ModelOffer, NodeKey, U256};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{AnnouncerConfig, ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};

const MODEL: &str = "smol";

/// Waits (at most [`WAIT`]) until the validator at `addr` lists `want` executors for
/// [`MODEL`]; returns how long that took.
async fn listed_until(addr: &Multiaddr, want: usize) -> Duration {
    let args = DiscoveryArgs {
        bootstrap: vec![addr.clone()],
        no_mdns: true,
        p2p_listen: vec![],
        timeout_secs: Some(10),
        max_age_secs: Some(60),
    };
    let start = Instant::now();
    loop {
        let rows = discover(&args).await.map(|d| d.models()).unwrap_or_default();
        let count = rows.iter().find(|r| r.model == MODEL).map_or(0, |r| r.executors);
        if count == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < WAIT, "the validator lists {count} executors, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
        model: MODEL.into(),
        context_length: 1024,
        price_per_input_token: U256::from(1u64),
        price_per_output_token: U256::from(2u64),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    };
    let backend = Arc::new(ScriptedBackend::new(Script::answer(MODEL, "Paris.")));
    let _executor =
        ExecutorNode::start(&NodeKey::generate(), vec![ServedModel { offer, backend }], config)
            .await
            .unwrap();
    listed_until(&addr, 1).await;

    // The validator restarts on the same address with an empty registry.
    validator.shutdown().await;
    let validator = Validator::spawn(&validator_key, validator_config()).await.unwrap();
    let relisted = listed_until(&addr, 1).await;
    assert!(relisted < Duration::from_secs(10), "relisted after {relisted:?}");
    validator.shutdown().await;
}
