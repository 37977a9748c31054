//! The validator's `/metrics` and `/health` over HTTP: a real validator on loopback (mDNS
//! off) with a real executor node announcing to it; the page follows the registry, the
//! health check says ok while the service runs and 503 once it stopped, and other paths and
//! methods are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use lloom_core::http::{HttpLimits, HttpServer};
use lloom_core::network::test_utils::{TestNode, WAIT};
use lloom_core::network::{NetworkConfig, NetworkEvent};
use lloom_core::{
    AnnouncementBody, DomainConfig, ExecutorLoad, ModelOffer, NodeKey, SignedAnnouncement, U256,
    unix_now,
};
use lloom_validator::{Validator, ValidatorConfig};
use tokio_util::sync::CancellationToken;

fn offer(model: &str) -> ModelOffer {
    ModelOffer {
        model: model.into(),
        context_length: 2048,
        price_per_input_token: U256::from(1),
        price_per_output_token: U256::from(2),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    }
}

/// GETs `url` until its body contains `wanted` (bounded by [`WAIT`]); returns the body.
async fn eventually_contains(url: &str, wanted: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = reqwest::get(url).await.unwrap().text().await.unwrap();
        if body.contains(wanted) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{wanted:?} never appeared in\n{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_follow_the_registry() {
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        expiry_interval: Duration::from_millis(100),
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), config).await.unwrap();
    let validator_addr = validator.listen_addrs().await.unwrap().remove(0);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = HttpServer::new(listener, HttpLimits::default())
        .serve(validator.metrics().router(), stop.clone().cancelled_owned());
    let server = tokio::spawn(server);

    let metrics_url = format!("{base}/metrics");
    let empty = reqwest::get(&metrics_url).await.unwrap();
    assert_eq!(empty.status(), 200);
    let content_type = empty.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let page = empty.text().await.unwrap();
    assert!(page.contains("lloom_validator_executors 0\n"), "{page}");
    assert!(page.contains("lloom_validator_up 1\n"), "{page}");
    assert!(page.contains("# TYPE lloom_network_announcements_accepted_total counter"), "{page}");

    // An executor announces two models; the page and the health check follow.
    let mut executor = TestNode::spawn(false, vec![validator_addr]).await.unwrap();
    executor.wait_for(|e| matches!(e, NetworkEvent::Subscribed(_)).then_some(())).await.unwrap();
    let body = AnnouncementBody {
        offers: vec![offer("smol"), offer("big")],
        load: ExecutorLoad::default(),
        listen_addrs: vec![],
    };
    let key = executor.key.clone();
    let handle = executor.handle.clone();
    let heartbeat = tokio::spawn(async move {
        for sequence in 1u64..=200 {
            let ann = SignedAnnouncement::sign(
                &key,
                DomainConfig::default(),
                sequence,
                unix_now(),
                body.clone(),
                false,
            )
            .unwrap();
            let _ = handle.publish_announcement(ann).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let page = eventually_contains(&metrics_url, "lloom_validator_offers 2\n").await;
    assert!(page.contains("lloom_validator_executors 1\n"), "{page}");
    assert!(page.contains("lloom_validator_models 2\n"), "{page}");
    assert!(page.contains("lloom_network_peers_connected 1\n"), "{page}");

    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!((health["executors"].as_u64(), health["models"].as_u64()), (Some(1), Some(2)));
    assert_eq!(health["peers"], 1, "{health}");

    // Other paths and methods are refused.
    let missing = reqwest::get(format!("{base}/registry")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("GET /metrics"));
    let posted = reqwest::Client::new().post(&metrics_url).body("x").send().await.unwrap();
    assert_eq!(posted.status(), 405);

    // Once the validator stops, its health check says so (the page stays readable).
    heartbeat.abort();
    let metrics = validator.metrics();
    validator.shutdown().await;
    let (status, body) = metrics.health(&metrics.network_view().await);
    assert_eq!(status, 503);
    assert_eq!(body["status"], "stopped");
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 503);
    assert!(
        eventually_contains(&metrics_url, "lloom_validator_up 0\n").await.contains("executors")
    );

    stop.cancel();
    server.await.unwrap().unwrap();
}
