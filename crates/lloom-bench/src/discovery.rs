//! Discovery: time from an executor's start until a client sees its model, through a
//! validator's registry and through the DHT (no registry), measured from the same start.
//!
//! One validator and one client stay up; each run starts a fresh executor serving a model of
//! its own, then polls both paths (every 10 ms) until each finds it, then stops the executor.
//! mDNS is not measured here: it must run inside network namespaces (see the netns test).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use lloom_client::{Client, ClientConfig};
use lloom_core::network::NetworkConfig;
use lloom_core::{
    AnnouncementLimits, NodeKey, SignedAnnouncement, VerifyPolicy, unix_now, verify_announcement,
};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{ExecutorConfig, ExecutorNode};

use crate::net::percentiles;

/// Longest wait for one path in one run.
const LIMIT: Duration = Duration::from_secs(30);
/// Time between polls.
const POLL: Duration = Duration::from_millis(10);

/// Polls `found` until it holds; the time it took from `start`.
async fn until<F: std::future::Future<Output = bool>>(
    start: Instant,
    mut found: impl FnMut() -> F,
) -> anyhow::Result<Duration> {
    while !found().await {
        if start.elapsed() > LIMIT {
            bail!("not discovered within {LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(start.elapsed())
}

pub(crate) async fn run(runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_validator, bootstrap) = crate::net::validator().await?;
    let client_config = ClientConfig { directory_ttl: Duration::ZERO, ..ClientConfig::default() }
        .bootstrap(bootstrap.clone());
    let client = Client::connect(NodeKey::generate(), client_config).await?;
    let (mut via_validator, mut via_dht) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let model = format!("discovery-{run}");
        let key = NodeKey::generate();
        let mut config = ExecutorConfig::new(dir.path().join(key.address().to_string()));
        config.network = NetworkConfig { bootstrap: bootstrap.clone(), ..NetworkConfig::local() };
        let offer = crate::net::offer(&model);
        let backend = Arc::new(ScriptedBackend::new(Script::answer(&model, "ok")));
        let start = Instant::now();
        let executor =
            ExecutorNode::start(&key, vec![ServedModel { offer, backend }], config).await?;
        let registry = until(start, || registry_lists(&client, &model));
        let dht = until(start, || dht_finds(&client, &model));
        let (registry, dht) = tokio::join!(registry, dht);
        via_validator.push(registry?);
        via_dht.push(dht?);
        executor.shutdown().await?;
    }
    let (v50, v99) = percentiles(&mut via_validator);
    let (d50, d99) = percentiles(&mut via_dht);
    println!("discovery over {runs} executor starts (loopback, 10 ms polling):");
    println!("  via a validator's registry   p50 {:>7.1} ms  p99 {:>7.1} ms", v50 / 1e3, v99 / 1e3);
    println!("  via the DHT (no registry)    p50 {:>7.1} ms  p99 {:>7.1} ms", d50 / 1e3, d99 / 1e3);
    Ok(())
}

async fn registry_lists(client: &Client, model: &str) -> bool {
    client.refresh().await.is_ok()
        && client.models().await.is_ok_and(|rows| rows.iter().any(|r| r.model == model))
}

/// Whether the DHT yields a verified announcement offering `model` (looked up directly, so
/// the registry path's directory is not touched).
async fn dht_finds(client: &Client, model: &str) -> bool {
    let network = client.network();
    let Ok(providers) = network.find_model_providers(model).await else { return false };
    let limits = AnnouncementLimits::default();
    let policy = VerifyPolicy::default();
    for peer in providers {
        for bytes in network.announcement_records(peer).await.unwrap_or_default() {
            let verified = SignedAnnouncement::decode(&bytes, &limits).is_ok_and(|a| {
                verify_announcement(&a, Some(&peer), &policy, &limits, unix_now()).is_ok()
                    && a.body.offers.iter().any(|o| o.model == model)
            });
            if verified {
                return true;
            }
        }
    }
    false
}
