//! Registry query latency and memory at scale (issue figures: 10,000 executors).
//!
//! `cargo bench -p lloom-validator --bench registry_scale [-- EXECUTORS]`
//!
//! Registers EXECUTORS (default 10,000) executors, each offering one of 20 models, then times
//! 10,000 queries of each kind and prints p50/p99 latency, plus the resident memory the
//! registry added (from /proc/self/statm).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
#![allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::time::{Duration, Instant};

use lloom_core::registry_query::{FindExecutors, RegistryRequest};
use lloom_core::{
    AnnouncementBody, DomainConfig, ExecutorLoad, ModelOffer, NodeKey, SignedAnnouncement, U256,
};
use lloom_validator::{Registry, RegistryConfig};

const MODELS: usize = 20;
const QUERIES: usize = 10_000;
/// Queries per kind in smoke-test mode (`cargo test`).
const SMOKE_QUERIES: usize = 50;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn time_queries(name: &str, registry: &Registry, make: impl Fn(usize) -> RegistryRequest) {
    let queries = if std::env::args().any(|a| a == "--bench") { QUERIES } else { SMOKE_QUERIES };
    let mut samples = Vec::with_capacity(queries);
    for i in 0..queries {
        let request = make(i);
        let start = Instant::now();
        std::hint::black_box(registry.answer(&request));
        samples.push(start.elapsed());
    }
    samples.sort();
    println!(
        "{name:<28} p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

fn main() {
    let executors: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let now = lloom_core::unix_now();
    // Keys and signatures are made first so the memory figure is the registry's alone.
    let announcements: Vec<(SignedAnnouncement, lloom_core::PeerId)> = (0..executors)
        .map(|i| {
            let key = NodeKey::generate();
            let body = AnnouncementBody {
                offers: vec![ModelOffer {
                    model: format!("model-{:02}", i % MODELS),
                    context_length: 2048 << (i % 3),
                    price_per_input_token: U256::from(1_000 + i as u64),
                    price_per_output_token: U256::from(2_000 + i as u64),
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
                listen_addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i)],
            };
            let ann = SignedAnnouncement::sign(&key, DomainConfig::default(), 1, now, body, false)
                .unwrap();
            (ann, key.peer_id())
        })
        .collect();

    let before = rss_bytes();
    let mut registry = Registry::new(RegistryConfig::default());
    let start = Instant::now();
    for (ann, peer) in announcements.iter().cloned() {
        registry.apply(ann, peer, now).unwrap();
    }
    let insert = start.elapsed();
    let after = rss_bytes();
    drop(announcements);

    println!("executors                    {executors}");
    println!("insert all                   {insert:.1?} ({:.1?} each)", insert / executors as u32);
    println!(
        "registry memory (RSS delta)  {:.1} MiB",
        (after.saturating_sub(before)) as f64 / 1048576.0
    );
    time_queries("list_models (page 100)", &registry, |_| RegistryRequest::ListModels {
        cursor: None,
        limit: 100,
    });
    time_queries("find_executors (page 20)", &registry, |i| {
        RegistryRequest::FindExecutors(FindExecutors {
            model: format!("model-{:02}", i % MODELS),
            max_price_per_output_token: Some(U256::from(2_000 + executors as u64 / 2)),
            min_context: Some(4096),
            limit: 20,
            ..Default::default()
        })
    });
    let addresses: Vec<_> = registry_addresses(&registry);
    time_queries("executor details", &registry, |i| RegistryRequest::Executor {
        executor: addresses[i % addresses.len()],
    });
    time_queries("snapshot (page 100)", &registry, |_| RegistryRequest::Snapshot {
        cursor: None,
        limit: 100,
    });
}

fn registry_addresses(registry: &Registry) -> Vec<lloom_core::Address> {
    match registry.snapshot(None, 100) {
        lloom_core::registry_query::RegistryResponse::Executors { executors, .. } => {
            executors.iter().map(|e| e.announcement.executor()).collect()
        }
        _ => Vec::new(),
    }
}
