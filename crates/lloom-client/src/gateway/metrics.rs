//! `GET /metrics`: the gateway's counters and what the client knows about each executor
//! (latency averages, failures, cooldowns), in the Prometheus text format.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use lloom_core::Address;
use lloom_core::metrics::{self, MetricKind, MetricsText};

use super::GatewayState;
use crate::routing::ExecutorStats;

/// Completions the gateway answered, by outcome.
#[derive(Debug, Default)]
pub(super) struct GatewayCounters {
    pub(super) ok: AtomicU64,
    pub(super) failed: AtomicU64,
}

pub(super) async fn metrics(State(state): State<Arc<GatewayState>>) -> Response {
    let executors = state.client.executor_stats().await;
    let page = render(&state.counters, &executors, Instant::now());
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], page).into_response()
}

/// Reads one figure of an executor's stats at an instant (`None`: not measured yet).
type StatReader = fn(&ExecutorStats, Instant) -> Option<f64>;

#[allow(clippy::cast_precision_loss)] // counters far below 2^53
fn render(
    counters: &GatewayCounters,
    executors: &[(Address, ExecutorStats)],
    now: Instant,
) -> String {
    let mut m = MetricsText::default();
    let name = "lloom_gateway_completions_total";
    m.family(name, MetricKind::Counter, "Chat completions answered, by outcome.");
    m.sample(name, &[("outcome", "ok")], counters.ok.load(Ordering::Relaxed) as f64);
    m.sample(name, &[("outcome", "error")], counters.failed.load(Ordering::Relaxed) as f64);
    let rows: Vec<(String, &ExecutorStats)> =
        executors.iter().map(|(a, s)| (a.to_checksum(None), s)).collect();
    let families: [(&str, MetricKind, &str, StatReader); 6] = [
        (
            "lloom_client_executor_successes_total",
            MetricKind::Counter,
            "Verified answers.",
            |s, _| Some(f64::from(s.successes)),
        ),
        (
            "lloom_client_executor_failures_total",
            MetricKind::Counter,
            "Failed attempts of any kind.",
            |s, _| Some(f64::from(s.failures)),
        ),
        (
            "lloom_client_executor_consecutive_failures",
            MetricKind::Gauge,
            "Failures since the last success.",
            |s, _| Some(f64::from(s.consecutive_failures)),
        ),
        (
            "lloom_client_executor_cooldown_seconds",
            MetricKind::Gauge,
            "Seconds before the executor is tried again (0: not cooling down).",
            |s, now| {
                Some(
                    s.cooldown_until
                        .map_or(0.0, |u| u.saturating_duration_since(now).as_secs_f64()),
                )
            },
        ),
        (
            "lloom_client_executor_ttft_milliseconds",
            MetricKind::Gauge,
            "Moving average of time to first token.",
            |s, _| s.ttft_ms,
        ),
        (
            "lloom_client_executor_tokens_per_second",
            MetricKind::Gauge,
            "Moving average of streaming speed.",
            |s, _| s.tokens_per_sec,
        ),
    ];
    for (name, kind, help, value) in families {
        m.family(name, kind, help);
        for (executor, stats) in &rows {
            if let Some(v) = value(stats, now) {
                m.sample(name, &[("executor", executor)], v);
            }
        }
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cooldowns_and_averages_are_exposed_per_executor() {
        let now = Instant::now();
        let counters = GatewayCounters::default();
        counters.ok.store(5, Ordering::Relaxed);
        counters.failed.store(2, Ordering::Relaxed);
        let cooling = ExecutorStats {
            failures: 3,
            consecutive_failures: 2,
            cooldown_until: Some(now + Duration::from_secs(10)),
            ..ExecutorStats::default()
        };
        let healthy = ExecutorStats {
            successes: 7,
            ttft_ms: Some(42.5),
            tokens_per_sec: Some(120.0),
            ..ExecutorStats::default()
        };
        let (a, b) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xbb));
        let page = render(&counters, &[(a, cooling), (b, healthy)], now);
        let a = a.to_checksum(None);
        let b = b.to_checksum(None);
        assert!(page.contains("lloom_gateway_completions_total{outcome=\"ok\"} 5\n"), "{page}");
        assert!(page.contains("lloom_gateway_completions_total{outcome=\"error\"} 2\n"));
        assert!(
            page.contains(&format!(
                "lloom_client_executor_cooldown_seconds{{executor=\"{a}\"}} 10\n"
            )),
            "{page}"
        );
        assert!(
            page.contains(&format!(
                "lloom_client_executor_cooldown_seconds{{executor=\"{b}\"}} 0\n"
            ))
        );
        assert!(page.contains(&format!(
            "lloom_client_executor_consecutive_failures{{executor=\"{a}\"}} 2\n"
        )));
        assert!(page.contains(&format!(
            "lloom_client_executor_ttft_milliseconds{{executor=\"{b}\"}} 42.5\n"
        )));
        // No measurement, no sample (rather than a made-up 0).
        assert!(
            !page.contains(&format!("lloom_client_executor_ttft_milliseconds{{executor=\"{a}\"}}"))
        );
    }
}
