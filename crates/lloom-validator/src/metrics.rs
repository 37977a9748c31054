//! `GET /metrics` of a running validator (`start --metrics-listen ADDR`), in the Prometheus
//! text format, and `GET /health` (whether the registry service runs, for orchestrators).
//! The metrics: the registry's size (executors, models, offers), announcements taken and
//! not taken, registry queries answered, executors expired or found unreachable, syncs with
//! peer validators, connected peers and the network's counters.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lloom_core::metrics::{self, MetricKind, MetricsText};
use lloom_core::network::{NetworkStats, WeakNetworkHandle};

use crate::stats::ValidatorStats;

/// What the metrics page and the health check read.
#[derive(Clone, Debug)]
pub struct ValidatorMetrics {
    /// The service's counters.
    pub stats: Arc<ValidatorStats>,
    /// The network, for connected peers and its counters (a weak handle: the page does not
    /// keep a stopped validator's network running); `None`: left out.
    pub network: Option<WeakNetworkHandle>,
}

/// What the network adds to the page, read before it is written.
#[derive(Clone, Debug, Default)]
pub struct NetworkView {
    /// The network's counters.
    pub stats: Option<NetworkStats>,
    /// Peers connected now.
    pub peers: Option<usize>,
}

impl ValidatorMetrics {
    /// Reads what the network adds (nothing once it has stopped).
    pub async fn network_view(&self) -> NetworkView {
        let Some(network) = self.network.as_ref().and_then(WeakNetworkHandle::upgrade) else {
            return NetworkView::default();
        };
        NetworkView {
            stats: network.stats().await.ok(),
            peers: network.connected_peers().await.ok().map(|peers| peers.len()),
        }
    }

    /// The page, now, with what `network` holds.
    #[allow(clippy::cast_precision_loss)] // counters far below 2^53
    pub fn render(&self, network: &NetworkView) -> String {
        let s = &self.stats;
        let mut m = MetricsText::default();
        let gauges = [
            ("lloom_validator_executors", "Executors in the registry.", &s.executors),
            ("lloom_validator_models", "Distinct models offered in the registry.", &s.models),
            (
                "lloom_validator_offers",
                "Model offers in the registry (executor and model).",
                &s.offers,
            ),
        ];
        for (name, help, gauge) in gauges {
            m.single(name, MetricKind::Gauge, help, gauge.load(Relaxed) as f64);
        }
        let counters = [
            (
                "lloom_validator_announcements_applied_total",
                "Verified announcements the registry took (new, updated or withdrawn executors).",
                &s.announcements_applied,
            ),
            (
                "lloom_validator_announcements_not_applied_total",
                "Verified announcements not taken: older than the one held, or the registry full.",
                &s.announcements_not_applied,
            ),
            (
                "lloom_validator_registry_queries_total",
                "Registry queries answered.",
                &s.registry_queries,
            ),
            (
                "lloom_validator_executors_expired_total",
                "Executors removed because their heartbeats stopped.",
                &s.executors_expired,
            ),
            (
                "lloom_validator_executors_unreachable_total",
                "Executors removed because they could not be reached when dialled back.",
                &s.executors_unreachable,
            ),
            (
                "lloom_validator_peer_syncs_total",
                "Registry snapshot syncs started with peer validators.",
                &s.peer_syncs,
            ),
        ];
        for (name, help, counter) in counters {
            m.single(name, MetricKind::Counter, help, counter.load(Relaxed) as f64);
        }
        m.single(
            "lloom_validator_up",
            MetricKind::Gauge,
            "1 while the registry service runs.",
            f64::from(u8::from(s.is_running())),
        );
        if let Some(peers) = network.peers {
            let help = "Peers connected now.";
            m.single("lloom_network_peers_connected", MetricKind::Gauge, help, peers as f64);
        }
        if let Some(stats) = &network.stats {
            metrics::write_network_stats(&mut m, stats);
        }
        m.finish()
    }

    /// Whether the validator serves, for orchestrators: `200` with `{"status": "ok", ...}`
    /// (the registry's size and the peers connected) while the registry service runs, else
    /// `503` with `"stopped"`.
    pub fn health(&self, network: &NetworkView) -> (StatusCode, serde_json::Value) {
        let s = &self.stats;
        if !s.is_running() {
            return (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "status": "stopped" }));
        }
        let body = serde_json::json!({
            "status": "ok",
            "executors": s.executors.load(Relaxed),
            "models": s.models.load(Relaxed),
            "peers": network.peers,
        });
        (StatusCode::OK, body)
    }

    /// The HTTP routes: `GET /metrics` and `GET /health`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(page))
            .route("/health", get(health))
            .fallback(|| async { (StatusCode::NOT_FOUND, "try GET /metrics or GET /health\n") })
            .with_state(Arc::new(self))
    }
}

async fn health(State(metrics): State<Arc<ValidatorMetrics>>) -> Response {
    let network = metrics.network_view().await;
    let (status, body) = metrics.health(&network);
    (status, axum::Json(body)).into_response()
}

async fn page(State(metrics): State<Arc<ValidatorMetrics>>) -> Response {
    let network = metrics.network_view().await;
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics.render(&network)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> ValidatorMetrics {
        ValidatorMetrics { stats: Arc::new(ValidatorStats::default()), network: None }
    }

    #[test]
    fn the_page_names_every_family_with_its_value() {
        let metrics = metrics();
        metrics.stats.running.store(true, Relaxed);
        metrics.stats.set_counts(3, 2);
        metrics.stats.set_offers(5);
        ValidatorStats::count(&metrics.stats.registry_queries);
        let view = NetworkView { stats: None, peers: Some(4) };
        let page = metrics.render(&view);
        for line in [
            "# TYPE lloom_validator_executors gauge\nlloom_validator_executors 3\n",
            "lloom_validator_models 2\n",
            "lloom_validator_offers 5\n",
            "# TYPE lloom_validator_registry_queries_total counter\n\
             lloom_validator_registry_queries_total 1\n",
            "lloom_validator_announcements_not_applied_total 0\n",
            "lloom_validator_up 1\n",
            "lloom_network_peers_connected 4\n",
        ] {
            assert!(page.contains(line), "{line:?} missing from\n{page}");
        }
        assert!(!metrics.render(&NetworkView::default()).contains("peers_connected"));
    }

    #[test]
    fn health_is_ok_while_the_service_runs_and_503_once_it_stops() {
        let metrics = metrics();
        metrics.stats.running.store(true, Relaxed);
        metrics.stats.set_counts(1, 1);
        let view = NetworkView { stats: None, peers: Some(2) };
        let (status, body) = metrics.health(&view);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"status": "ok", "executors": 1, "models": 1, "peers": 2})
        );
        metrics.stats.running.store(false, Relaxed);
        let (status, body) = metrics.health(&view);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "stopped");
    }
}
