//! One validator, three executors and a client, all real libp2p nodes in one process on
//! loopback (mDNS off): the client lists every model with the right prices; a withdrawn
//! executor disappears at once, a silent one within the stale window; a validator started later
//! converges by copying its peer's registry, not by waiting for gossip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use lloom_core::network::test_utils::{TestNode, WAIT};
use lloom_core::network::{NetworkConfig, NetworkEvent};
use lloom_core::registry_query::{ModelSummary, RegistryRequest, RegistryResponse};
use lloom_core::{
    AnnouncementBody, DomainConfig, ExecutorLoad, ModelOffer, NodeKey, PeerId, SignedAnnouncement,
    U256, unix_now,
};
use lloom_validator::{RegistryConfig, Validator, ValidatorConfig};

const STALE_SECS: u64 = 2;

/// While set, executors skip their heartbeats (so only the snapshot can inform a new validator).
static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn validator_config(bootstrap: Vec<lloom_core::network::Multiaddr>) -> ValidatorConfig {
    ValidatorConfig {
        network: NetworkConfig { server_mode: true, bootstrap, ..NetworkConfig::local() },
        registry: RegistryConfig { stale_after_secs: STALE_SECS, ..RegistryConfig::default() },
        expiry_interval: Duration::from_millis(200),
        ..ValidatorConfig::default()
    }
}

fn offer(model: &str, price_in: u64, price_out: u64) -> ModelOffer {
    ModelOffer {
        model: model.into(),
        context_length: 4096,
        price_per_input_token: U256::from(price_in),
        price_per_output_token: U256::from(price_out),
        weights_sha256: None,
        quantization: Some("Q4_1".into()),
        capabilities: vec!["chat".into()],
    }
}

/// Starts an executor node that announces `offers` (and no address) every 300 ms until its
/// task is aborted.
async fn executor(
    validator: &lloom_core::network::Multiaddr,
    offers: Vec<ModelOffer>,
) -> (NodeKey, tokio::task::JoinHandle<()>, TestNode) {
    executor_announcing(validator, offers, false).await
}

/// [`executor`], announcing its listen address when `with_addr` holds.
async fn executor_announcing(
    validator: &lloom_core::network::Multiaddr,
    offers: Vec<ModelOffer>,
    with_addr: bool,
) -> (NodeKey, tokio::task::JoinHandle<()>, TestNode) {
    let mut node = TestNode::spawn(false, vec![validator.clone()]).await.unwrap();
    node.wait_for(|e| matches!(e, NetworkEvent::Subscribed(_)).then_some(())).await.unwrap();
    let key = node.key.clone();
    let handle = node.handle.clone();
    let listen_addrs = match with_addr {
        true => vec![node.addr().await.unwrap().to_string()],
        false => vec![],
    };
    let heartbeat = tokio::spawn(async move {
        for sequence in 1u64.. {
            let body = AnnouncementBody {
                offers: offers.clone(),
                load: ExecutorLoad::default(),
                listen_addrs: listen_addrs.clone(),
            };
            let ann = SignedAnnouncement::sign(
                &key,
                DomainConfig::default(),
                sequence,
                unix_now(),
                body,
                false,
            )
            .unwrap();
            if !PAUSED.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = handle.publish_announcement(ann).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    (node.key.clone(), heartbeat, node)
}

async fn models(client: &TestNode, validator: PeerId) -> Vec<ModelSummary> {
    let request = RegistryRequest::ListModels { cursor: None, limit: 100 };
    match client.handle.query_registry(validator, request).await.unwrap() {
        RegistryResponse::Models { models, .. } => models,
        other => panic!("unexpected {other:?}"),
    }
}

/// Polls the registry (bounded by [`WAIT`]) until `done` holds; returns the last answer.
async fn eventually(
    client: &TestNode,
    validator: PeerId,
    done: impl Fn(&[ModelSummary]) -> bool,
) -> Vec<ModelSummary> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = models(client, validator).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "registry never reached the state: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

/// Polls `done` (bounded by [`WAIT`]): gauges sampled on the expiry tick lag a little.
async fn eventually_stat(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "the metric never got there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn executors_of(models: &[ModelSummary], model: &str) -> u32 {
    models.iter().find(|m| m.model == model).map_or(0, |m| m.executors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_registry_end_to_end() {
    let v1_key = NodeKey::generate();
    let v1 = Validator::spawn(&v1_key, validator_config(vec![])).await.unwrap();
    let v1_addr = v1.listen_addrs().await.unwrap().remove(0);

    let (_, _hb_a, _a) = executor(&v1_addr, vec![offer("smol", 1, 2), offer("big", 10, 20)]).await;
    let (b_key, hb_b, b) = executor(&v1_addr, vec![offer("smol", 3, 4)]).await;
    let (_, hb_c, c) = executor(&v1_addr, vec![offer("smol", 5, 6)]).await;

    let client = TestNode::spawn(false, vec![v1_addr.clone()]).await.unwrap();
    let v1_id = v1_key.peer_id();
    let listed = eventually(&client, v1_id, |m| executors_of(m, "smol") == 3).await;
    let smol = listed.iter().find(|m| m.model == "smol").unwrap();
    assert_eq!(smol.price_per_input_token, (U256::from(1), U256::from(5)));
    assert_eq!(smol.price_per_output_token, (U256::from(2), U256::from(6)));
    let big = listed.iter().find(|m| m.model == "big").unwrap();
    assert_eq!((big.executors, big.price_per_output_token.0), (1, U256::from(20)));
    // The metrics count what the registry holds and the queries it answered.
    let stats = v1.stats();
    assert_eq!((load(&stats.executors), load(&stats.models)), (3, 2));
    eventually_stat(|| load(&stats.offers) == 4).await;
    assert!(load(&stats.registry_queries) >= 1);
    assert!(load(&stats.announcements_applied) >= 3);

    // A late validator converges from v1's registry while no gossip is sent at all.
    PAUSED.store(true, std::sync::atomic::Ordering::SeqCst);
    let v2_key = NodeKey::generate();
    let v2 = Validator::spawn(&v2_key, validator_config(vec![v1_addr.clone()])).await.unwrap();
    let v2_addr = v2.listen_addrs().await.unwrap().remove(0);
    client.handle.dial(v2_addr).await.unwrap();
    let converged = eventually(&client, v2_key.peer_id(), |m| executors_of(m, "smol") == 3).await;
    assert_eq!(executors_of(&converged, "big"), 1);
    assert_eq!(v2.network.stats().await.unwrap().announcements_accepted, 0, "converged by gossip");
    assert_eq!(load(&v2.stats().peer_syncs), 1);
    assert_eq!(load(&v2.stats().executors), 3);
    PAUSED.store(false, std::sync::atomic::Ordering::SeqCst);

    // Graceful shutdown: a withdrawal removes the executor at once.
    hb_b.abort();
    let bye = SignedAnnouncement::sign(
        &b_key,
        DomainConfig::default(),
        u64::MAX,
        unix_now(),
        AnnouncementBody::default(),
        true,
    )
    .unwrap();
    b.handle.publish_announcement(bye).await.unwrap();
    let withdrawn = std::time::Instant::now();
    eventually(&client, v1_id, |m| executors_of(m, "smol") == 2).await;
    assert!(
        withdrawn.elapsed() < Duration::from_secs(STALE_SECS),
        "withdrawal took the stale path"
    );
    assert_eq!(load(&stats.executors), 2);
    assert_eq!(load(&stats.executors_expired), 0);

    // A dropped executor (no withdrawal) disappears within the stale window.
    hb_c.abort();
    c.task.abort();
    let dropped = std::time::Instant::now();
    eventually(&client, v1_id, |m| executors_of(m, "smol") == 1).await;
    let took = dropped.elapsed();
    assert!(took >= Duration::from_millis(STALE_SECS * 1000 - 400), "expired too early: {took:?}");
    assert!(took <= Duration::from_secs(STALE_SECS + 2), "expired too late: {took:?}");
    assert_eq!((load(&stats.executors), load(&stats.executors_expired)), (1, 1));

    v2.shutdown().await;
    v1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_the_validator_can_no_longer_reach_leaves_before_its_stale_window() {
    let stale_secs = 30;
    let config = ValidatorConfig {
        registry: RegistryConfig { stale_after_secs: stale_secs, ..RegistryConfig::default() },
        ..validator_config(vec![])
    };
    let v_key = NodeKey::generate();
    let v = Validator::spawn(&v_key, config).await.unwrap();
    let v_addr = v.listen_addrs().await.unwrap().remove(0);
    let (_, _hb_up, up) = executor_announcing(&v_addr, vec![offer("up", 1, 2)], true).await;
    let (_, hb_gone, gone) = executor_announcing(&v_addr, vec![offer("gone", 1, 2)], true).await;
    let client = TestNode::spawn(false, vec![v_addr.clone()]).await.unwrap();
    let v_id = v_key.peer_id();
    eventually(&client, v_id, |m| executors_of(m, "up") == 1 && executors_of(m, "gone") == 1).await;

    // An executor still up whose connection closed answers the check's dial and stays.
    assert!(v.network.disconnect(up.key.peer_id()).await.unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !v.network.is_connected(&up.key.peer_id()) {
        assert!(tokio::time::Instant::now() < deadline, "the check never dialled it again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One that crashed (no withdrawal) refuses the dial and leaves at once.
    hb_gone.abort();
    gone.task.abort();
    let crashed = std::time::Instant::now();
    let listed = eventually(&client, v_id, |m| executors_of(m, "gone") == 0).await;
    let took = crashed.elapsed();
    assert!(took < Duration::from_secs(stale_secs / 3), "took the stale path: {took:?}");
    assert_eq!(executors_of(&listed, "up"), 1, "the live one was dropped: {listed:?}");

    v.shutdown().await;
}
