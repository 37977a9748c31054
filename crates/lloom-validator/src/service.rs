//! The validator service: owns the registry, feeds it verified announcements, answers registry
//! queries, expires silent executors, drops those it can no longer reach (see [`crate::liveness`])
//! and converges with peer validators.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use lloom_core::network::{
    Multiaddr, NetworkConfig, NetworkEvent, NetworkHandle, peer_id_of, start,
};
use lloom_core::registry_query::{MAX_PAGE, RegistryRequest, RegistryResponse};
use lloom_core::{
    AnnouncementLimits, NodeKey, PeerId, SignedAnnouncement, VerifyPolicy, unix_now,
    verify_announcement,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::liveness::{CheckOutcome, LivenessChecks, MAX_CHECKS};
use crate::metrics::ValidatorMetrics;
use crate::registry::{Registry, RegistryConfig};
use crate::stats::ValidatorStats;

/// Most snapshot pages fetched from one peer validator (bounds the sync).
const MAX_SYNC_PAGES: usize = 10_000;

/// Everything a validator needs to run.
#[derive(Clone, Debug)]
pub struct ValidatorConfig {
    /// Network settings; validators run in server mode.
    pub network: NetworkConfig,
    /// Registry capacity and stale window.
    pub registry: RegistryConfig,
    /// Signature domain and clock tolerance.
    pub policy: VerifyPolicy,
    /// How often stale executors are removed.
    pub expiry_interval: Duration,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        Self {
            network: NetworkConfig { server_mode: true, ..NetworkConfig::default() },
            registry: RegistryConfig::default(),
            policy: VerifyPolicy::default(),
            expiry_interval: Duration::from_secs(1),
        }
    }
}

/// A running validator.
#[derive(Debug)]
pub struct Validator {
    /// Its network handle (listen addresses, stats, ...).
    pub network: NetworkHandle,
    stats: Arc<ValidatorStats>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    network_task: JoinHandle<()>,
}

impl Validator {
    /// Starts the network and the registry service.
    pub async fn spawn(key: &NodeKey, mut config: ValidatorConfig) -> Result<Self> {
        config.network.server_mode = true;
        let bootstrap: HashSet<PeerId> =
            config.network.bootstrap.iter().filter_map(peer_id_of).collect();
        let (network, events, event_loop) =
            start(key, config.network.clone(), config.policy).await?;
        let network_task = tokio::spawn(event_loop.run());
        let shutdown = CancellationToken::new();
        let (outcomes_tx, outcomes) = mpsc::channel(MAX_CHECKS);
        let stats = Arc::new(ValidatorStats::default());
        stats.running.store(true, Relaxed);
        let service = Service {
            stats: stats.clone(),
            liveness: LivenessChecks::new(network.clone(), outcomes_tx),
            registry: Registry::new(config.registry),
            network: network.clone(),
            policy: config.policy,
            bootstrap,
            synced: HashSet::new(),
        };
        let task =
            tokio::spawn(service.run(events, outcomes, config.expiry_interval, shutdown.clone()));
        Ok(Self { network, stats, shutdown, task, network_task })
    }

    /// The addresses the validator listens on, each with `/p2p/<id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        Ok(self.network.listen_addrs().await?)
    }

    /// What the service counts, updated as it runs.
    pub fn stats(&self) -> Arc<ValidatorStats> {
        self.stats.clone()
    }

    /// The metrics page and health check of this validator (serve them with
    /// [`ValidatorMetrics::router`]).
    pub fn metrics(&self) -> ValidatorMetrics {
        ValidatorMetrics { stats: self.stats.clone(), network: Some(self.network.downgrade()) }
    }

    /// Stops the service and the network.
    pub async fn shutdown(self) {
        self.stats.running.store(false, Relaxed);
        self.shutdown.cancel();
        let _ = self.task.await;
        drop(self.network);
        let _ = self.network_task.await;
    }
}

struct Service {
    stats: Arc<ValidatorStats>,
    registry: Registry,
    network: NetworkHandle,
    policy: VerifyPolicy,
    bootstrap: HashSet<PeerId>,
    synced: HashSet<PeerId>,
    liveness: LivenessChecks,
}

impl Service {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<NetworkEvent>,
        mut check_outcomes: mpsc::Receiver<CheckOutcome>,
        expiry_interval: Duration,
        shutdown: CancellationToken,
    ) {
        let (sync_tx, mut sync_rx) = mpsc::channel::<(PeerId, SignedAnnouncement)>(1024);
        let mut expiry = tokio::time::interval(expiry_interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = expiry.tick() => {
                    for executor in self.registry.expire(unix_now()) {
                        ValidatorStats::count(&self.stats.executors_expired);
                        tracing::info!(%executor, "executor expired from the registry");
                    }
                    self.publish_size();
                }
                Some((peer, ann)) = sync_rx.recv() => self.apply(ann, peer),
                Some(outcome) = check_outcomes.recv() => self.on_check_outcome(outcome),
                event = events.recv() => match event {
                    Some(event) => self.on_event(event, &sync_tx).await,
                    None => break,
                },
            }
        }
        self.stats.running.store(false, Relaxed);
    }

    /// Publishes the registry's size: executors, models and (walking every model) offers.
    fn publish_size(&self) {
        self.publish_counts();
        self.stats.set_offers(self.registry.offer_count());
    }

    /// Publishes the executor and model counts, cheap enough for every change; the offer
    /// count follows on the next expiry tick.
    fn publish_counts(&self) {
        self.stats.set_counts(self.registry.len(), self.registry.model_count());
    }

    fn apply(&mut self, announcement: SignedAnnouncement, source: PeerId) {
        let executor = announcement.executor();
        match self.registry.apply(announcement, source, unix_now()) {
            Ok(applied) => {
                ValidatorStats::count(&self.stats.announcements_applied);
                self.publish_counts();
                tracing::debug!(%executor, ?applied, "registry updated");
            }
            Err(error) => {
                ValidatorStats::count(&self.stats.announcements_not_applied);
                tracing::debug!(%executor, %error, "announcement not applied");
            }
        }
    }

    fn on_check_outcome(&mut self, outcome: CheckOutcome) {
        let CheckOutcome { check, unreachable } = outcome;
        self.liveness.finished(&check.peer);
        if let Some(reason) = unreachable
            && self.registry.drop_unreachable(&check)
        {
            ValidatorStats::count(&self.stats.executors_unreachable);
            self.publish_counts();
            let executor = check.executor;
            tracing::info!(%executor, %reason, "executor unreachable: dropped from the registry");
        }
    }

    async fn on_event(
        &mut self,
        event: NetworkEvent,
        sync_tx: &mpsc::Sender<(PeerId, SignedAnnouncement)>,
    ) {
        match event {
            NetworkEvent::Announcement { source, announcement } => self.apply(announcement, source),
            NetworkEvent::RegistryQuery { request, responder, .. } => {
                ValidatorStats::count(&self.stats.registry_queries);
                let response = self.registry.answer(&request);
                let _ = self.network.respond_registry(responder, response).await;
            }
            NetworkEvent::PeerConnected(peer)
                if self.bootstrap.contains(&peer) && !self.synced.contains(&peer) =>
            {
                self.synced.insert(peer);
                ValidatorStats::count(&self.stats.peer_syncs);
                let network = self.network.clone();
                let policy = self.policy;
                let stale_window = self.registry.stale_after_secs();
                tokio::spawn(sync_from(network, peer, policy, stale_window, sync_tx.clone()));
            }
            NetworkEvent::PeerDisconnected(peer) => {
                if let Some(check) = self.registry.liveness_check(&peer) {
                    self.liveness.start(check);
                }
            }
            NetworkEvent::Listening(addr) => tracing::info!(%addr, "validator listening"),
            _ => {}
        }
    }
}

/// Copies a peer validator's registry: every page of its snapshot, each announcement
/// re-verified (a peer validator is not trusted, only the executors' signatures are).
async fn sync_from(
    network: NetworkHandle,
    peer: PeerId,
    mut policy: VerifyPolicy,
    stale_window: u64,
    sink: mpsc::Sender<(PeerId, SignedAnnouncement)>,
) {
    // Announcements in a snapshot are up to one stale window old.
    policy.clock_skew_secs = policy.clock_skew_secs.max(stale_window);
    let limits = AnnouncementLimits::default();
    let mut cursor = None;
    for _ in 0..MAX_SYNC_PAGES {
        let request = RegistryRequest::Snapshot { cursor, limit: MAX_PAGE };
        let executors = match network.query_registry(peer, request).await {
            Ok(RegistryResponse::Executors { executors, next_cursor }) => {
                cursor = next_cursor;
                executors
            }
            Ok(other) => {
                tracing::warn!(%peer, ?other, "unexpected snapshot answer");
                return;
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "registry sync failed");
                return;
            }
        };
        for info in executors {
            let Ok(source) = info.peer_id.parse::<PeerId>() else { continue };
            let ann = info.announcement;
            match verify_announcement(&ann, Some(&source), &policy, &limits, unix_now()) {
                Ok(()) => {
                    if sink.send((source, ann)).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "peer validator sent a bad announcement")
                }
            }
        }
        if cursor.is_none() {
            return;
        }
    }
}
