//! Discovery figures (a bench binary; numbers for the docs and closing notes).
//!
//! `cargo bench -p lloom-client --bench discovery [-- EXECUTORS]`
//!
//! 1. **Visibility latency**: time from starting an executor node (swarm, bootstrap dial,
//!    first signed announcement) until a client querying a validator sees it; 20 runs.
//! 2. **Scale**: EXECUTORS in-process executors (default 200) announcing to 3 validators; time
//!    until every validator lists all of them, and the encoded announcement size (the gossip
//!    payload per executor per heartbeat).
//!
//! Under `cargo test` (no `--bench` argument) it runs a tiny smoke version.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
#![allow(clippy::indexing_slicing, clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use lloom_core::network::test_utils::TestNode;
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::registry_query::{FindExecutors, RegistryRequest, RegistryResponse};
use lloom_core::{
    AnnouncementBody, ExecutorLoad, ModelOffer, NodeKey, PeerId, SignedAnnouncement, U256,
};
use lloom_executor::{Announcer, AnnouncerConfig};
use lloom_validator::{Validator, ValidatorConfig};

fn body(model: &str) -> AnnouncementBody {
    AnnouncementBody {
        offers: vec![ModelOffer {
            model: model.into(),
            context_length: 8192,
            price_per_input_token: U256::from(1_000u64),
            price_per_output_token: U256::from(2_000u64),
            weights_sha256: Some(lloom_core::B256::repeat_byte(7)),
            quantization: Some("Q4_1".into()),
            capabilities: vec!["chat".into(), "stream".into()],
        }],
        load: ExecutorLoad {
            queue_depth: 0,
            free_slots: 4,
            max_concurrency: 4,
            free_memory_bytes: 1 << 30,
        },
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/40000".into()],
    }
}

async fn validator(bootstrap: Vec<Multiaddr>) -> (Validator, Multiaddr, PeerId) {
    let key = NodeKey::generate();
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, bootstrap, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let v = Validator::spawn(&key, config).await.unwrap();
    let addr = v.listen_addrs().await.unwrap().remove(0);
    (v, addr, key.peer_id())
}

async fn count(client: &TestNode, validator: PeerId, model: &str) -> usize {
    let mut total = 0;
    let mut cursor = None;
    loop {
        let q = FindExecutors { model: model.into(), cursor, limit: 100, ..Default::default() };
        match client.handle.query_registry(validator, RegistryRequest::FindExecutors(q)).await {
            Ok(RegistryResponse::Executors { executors, next_cursor }) => {
                total += executors.len();
                cursor = next_cursor;
                if cursor.is_none() {
                    return total;
                }
            }
            _ => return total,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let executors: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 200 } else { 3 });
    let runs = if benching { 20 } else { 2 };
    let config = AnnouncerConfig::default();

    // 1. Visibility latency through a validator.
    let (_v, v_addr, v_id) = validator(vec![]).await;
    let client = TestNode::spawn(false, vec![v_addr.clone()]).await.unwrap();
    let mut samples = Vec::new();
    let mut keep = Vec::new();
    for run in 0..runs {
        let model = format!("latency-{run}");
        let start = Instant::now();
        let node = TestNode::spawn(false, vec![v_addr.clone()]).await.unwrap();
        let announcer =
            Announcer::spawn(node.key.clone(), node.handle.clone(), body(&model), config);
        while count(&client, v_id, &model).await == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "executor never became visible");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(start.elapsed());
        keep.push((node, announcer));
    }
    samples.sort();
    println!(
        "executor start -> visible via validator ({runs} runs): p50 {:.0?}  p99 {:.0?}  max {:.0?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );

    // 2. Scale: EXECUTORS executors announcing to 3 validators.
    let (_v1, a1, id1) = validator(vec![]).await;
    let (_v2, a2, id2) = validator(vec![a1.clone()]).await;
    let (_v3, _a3, id3) = validator(vec![a1.clone(), a2.clone()]).await;
    let watcher = TestNode::spawn(false, vec![a1.clone(), a2.clone(), _a3.clone()]).await.unwrap();
    let start = Instant::now();
    let mut fleet = Vec::with_capacity(executors);
    for i in 0..executors {
        let bootstrap = vec![[&a1, &a2][i % 2].clone()];
        let node = TestNode::spawn(false, bootstrap).await.unwrap();
        let announcer =
            Announcer::spawn(node.key.clone(), node.handle.clone(), body("scale"), config);
        fleet.push((node, announcer));
    }
    let started = start.elapsed();
    for (name, id) in [("v1", id1), ("v2", id2), ("v3", id3)] {
        while count(&watcher, id, "scale").await < executors {
            assert!(start.elapsed() < Duration::from_secs(300), "{name} never converged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "{executors} executors: {name} lists all after {:.2?} (all started after {started:.2?})",
            start.elapsed()
        );
    }
    let key = NodeKey::generate();
    let sample =
        SignedAnnouncement::sign(&key, Default::default(), 1, 1, body("scale"), false).unwrap();
    let bytes = sample.encode().len();
    let per_minute = 60 / config.heartbeat.as_secs().max(1);
    println!(
        "announcement payload {bytes} B; heartbeat every {:?} => {} B/min per executor published \
         (each gossip hop forwards it once per mesh peer)",
        config.heartbeat,
        bytes as u64 * per_minute
    );
}
