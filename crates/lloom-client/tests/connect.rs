//! `Client::connect` with a bootstrap validator down: it goes on with the others as soon as
//! the dead one's dial fails, rather than after the discovery timeout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use lloom_client::{Client, ClientConfig};
use lloom_core::NodeKey;
use lloom_core::network::Multiaddr;
use lloom_core::network::test_utils::WAIT;
use lloom_executor::backend::scripted::Script;

mod scripted;
use scripted::*;

/// A loopback address with a peer id where nothing listens (a port just released).
fn dead_validator() -> Multiaddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let peer = NodeKey::generate().peer_id();
    format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bootstrap_validator_does_not_hold_up_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (_e, key) = executor(&addrs, Script::answer(MODEL, "Paris."), 1, &dir).await;
    let mut bootstrap = vec![dead_validator()];
    bootstrap.extend(addrs.iter().cloned());
    let config = ClientConfig { discovery_timeout: WAIT * 10, ..ClientConfig::default() }
        .bootstrap(bootstrap);

    let started = Client::connect(NodeKey::generate(), config);
    let client = tokio::time::timeout(WAIT, started).await.expect("waited it out").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while client.refresh().await.unwrap() < 1 {
        assert!(std::time::Instant::now() < deadline, "the executor never appeared");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!((receipt.executor, receipt.text.as_str()), (key.address(), "Paris."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_validator_dead_and_nothing_remembered_the_start_fails_after_the_timeout() {
    let config = ClientConfig {
        discovery_timeout: std::time::Duration::from_millis(500),
        ..ClientConfig::default()
    }
    .bootstrap(vec![dead_validator(), dead_validator()]);
    let err = Client::connect(NodeKey::generate(), config).await.unwrap_err();
    assert!(matches!(err, lloom_client::Error::NoValidator(_)), "{err:?}");
    assert!(err.to_string().contains("validator"), "{err}");
}
