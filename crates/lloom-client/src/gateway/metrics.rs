//! `GET /metrics`: the gateway's counters and what the client knows about each executor
//! (latency averages, failures, cooldowns), in the Prometheus text format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use lloom_core::metrics::{self, MetricKind, MetricsText};
use lloom_core::{Address, U256};

use super::GatewayState;
use super::auth::{ApiKeys, KeyName};
use super::error::ApiError;
use crate::client::Receipt;
use crate::routing::ExecutorStats;

/// What the gateway answered: completions by outcome, requests refused for want of a key, and,
/// when keys are configured, completions and tokens per key (the set of keys is fixed at start,
/// so the table cannot grow).
#[derive(Debug, Default)]
pub(super) struct GatewayCounters {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The failed ones by their error's code (codes are constants of the gateway's source, so
    /// the map stays small).
    errors: Mutex<BTreeMap<&'static str, u64>>,
    unauthorized: AtomicU64,
    /// Charges the spend ledger could not write.
    ledger_errors: AtomicU64,
    by_key: BTreeMap<Arc<str>, KeyUsage>,
}

/// Usage of one API key.
#[derive(Debug, Default)]
struct KeyUsage {
    ok: AtomicU64,
    failed: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Wei owed for the key's verified answers and broken streams' checkpoints, since the
    /// gateway started (saturating).
    cost_wei: Mutex<U256>,
}

impl GatewayCounters {
    /// Counters with a row for each of `keys`.
    pub(super) fn new(keys: &ApiKeys) -> Self {
        let by_key = keys.names().into_iter().map(|name| (name, KeyUsage::default())).collect();
        Self { by_key, ..Self::default() }
    }

    fn key(&self, key: Option<&KeyName>) -> Option<&KeyUsage> {
        key.and_then(|k| self.by_key.get(&k.0))
    }

    /// A completion answered (`error` is `None`: the answer, or the start of its stream) or
    /// refused with `error`.
    pub(super) fn count_outcome(&self, key: Option<&KeyName>, error: Option<&ApiError>) {
        let (total, per_key) = match error {
            None => (&self.ok, self.key(key).map(|k| &k.ok)),
            Some(error) => {
                let code = error.code.unwrap_or(error.kind);
                let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
                *errors.entry(code).or_default() += 1;
                (&self.failed, self.key(key).map(|k| &k.failed))
            }
        };
        total.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = per_key {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The tokens of a verified answer, counted for its key.
    pub(super) fn count_tokens(&self, key: Option<&KeyName>, receipt: &Receipt) {
        if let Some(usage) = self.key(key) {
            usage.prompt_tokens.fetch_add(receipt.input_tokens, Ordering::Relaxed);
            usage.completion_tokens.fetch_add(receipt.output_tokens, Ordering::Relaxed);
        }
    }

    /// Wei charged to `key`.
    pub(super) fn count_cost(&self, key: &KeyName, cost: U256) {
        if let Some(usage) = self.by_key.get(&key.0) {
            let mut total = usage.cost_wei.lock().unwrap_or_else(PoisonError::into_inner);
            *total = total.saturating_add(cost);
        }
    }

    /// Wei charged to `key` since the gateway started.
    pub(super) fn cost_of(&self, key: &KeyName) -> U256 {
        self.by_key.get(&key.0).map_or(U256::ZERO, |usage| {
            *usage.cost_wei.lock().unwrap_or_else(PoisonError::into_inner)
        })
    }

    /// A charge the spend ledger could not write.
    pub(super) fn count_ledger_error(&self) {
        self.ledger_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused for want of a valid key.
    pub(super) fn count_unauthorized(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) async fn metrics(State(state): State<Arc<GatewayState>>) -> Response {
    let executors = state.client.executor_stats().await;
    let limit = state.config.max_concurrent.max(1);
    let in_flight = limit.saturating_sub(state.in_flight.available_permits());
    let refused = state.refused_connections.get();
    let budgets = key_budgets(&state);
    let page = render(&state.counters, (in_flight, refused), &budgets, &executors, Instant::now());
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], page).into_response()
}

/// Each key's spend as the budget sees it (the ledger's total where there is one) and budget.
type KeyBudgetRow = (Arc<str>, U256, Option<U256>);

fn key_budgets(state: &GatewayState) -> Vec<KeyBudgetRow> {
    let keys = &state.config.api_keys;
    keys.names()
        .into_iter()
        .map(|name| {
            let spent = state.spent(&KeyName(name.clone()));
            let budget = keys.budget(&name);
            (name, spent, budget)
        })
        .collect()
}

/// Wei as a Prometheus sample (a float; exact below 2^53).
#[allow(clippy::cast_precision_loss)]
fn wei(amount: U256) -> f64 {
    u128::try_from(amount).map_or(f64::MAX, |w| w as f64)
}

/// Reads one figure of an executor's stats at an instant (`None`: not measured yet).
type StatReader = fn(&ExecutorStats, Instant) -> Option<f64>;

#[allow(clippy::cast_precision_loss)] // counters far below 2^53
fn render(
    counters: &GatewayCounters,
    (in_flight, refused_connections): (usize, u64),
    budgets: &[KeyBudgetRow],
    executors: &[(Address, ExecutorStats)],
    now: Instant,
) -> String {
    let mut m = MetricsText::default();
    let name = "lloom_gateway_completions_total";
    m.family(name, MetricKind::Counter, "Chat completions answered, by outcome.");
    m.sample(name, &[("outcome", "ok")], counters.ok.load(Ordering::Relaxed) as f64);
    m.sample(name, &[("outcome", "error")], counters.failed.load(Ordering::Relaxed) as f64);
    let name = "lloom_gateway_errors_total";
    m.family(name, MetricKind::Counter, "Chat completions refused, by the error's code.");
    let errors = counters.errors.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for (code, count) in errors {
        m.sample(name, &[("code", code)], count as f64);
    }
    let name = "lloom_gateway_in_flight";
    m.family(name, MetricKind::Gauge, "Completions under way, streams included.");
    m.sample(name, &[], in_flight as f64);
    let name = "lloom_gateway_refused_connections_total";
    m.family(name, MetricKind::Counter, "Connections closed at once for the connection limit.");
    m.sample(name, &[], refused_connections as f64);
    let name = "lloom_gateway_unauthorized_total";
    m.family(name, MetricKind::Counter, "Requests refused for want of a valid API key.");
    m.sample(name, &[], counters.unauthorized.load(Ordering::Relaxed) as f64);
    let name = "lloom_gateway_spend_ledger_errors_total";
    m.family(name, MetricKind::Counter, "Charges to API keys the spend ledger could not write.");
    m.sample(name, &[], counters.ledger_errors.load(Ordering::Relaxed) as f64);
    render_key_usage(&mut m, &counters.by_key);
    render_key_budgets(&mut m, budgets);
    let rows: Vec<(String, &ExecutorStats)> =
        executors.iter().map(|(a, s)| (a.to_checksum(None), s)).collect();
    let families: [(&str, MetricKind, &str, StatReader); 7] = [
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
            "lloom_client_executor_busy_total",
            MetricKind::Counter,
            "Signed Busy or RateLimited answers (waited out, not counted as failures).",
            |s, _| Some(f64::from(s.busy)),
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

/// Each API key's completions, tokens and wei owed (nothing when no key is configured).
#[allow(clippy::cast_precision_loss)] // counters far below 2^53
fn render_key_usage(m: &mut MetricsText, by_key: &BTreeMap<Arc<str>, KeyUsage>) {
    if by_key.is_empty() {
        return;
    }
    let name = "lloom_gateway_key_completions_total";
    m.family(name, MetricKind::Counter, "Chat completions answered, by API key and outcome.");
    for (key, usage) in by_key {
        let key: &str = key;
        m.sample(name, &[("key", key), ("outcome", "ok")], usage.ok.load(Ordering::Relaxed) as f64);
        let failed = usage.failed.load(Ordering::Relaxed) as f64;
        m.sample(name, &[("key", key), ("outcome", "error")], failed);
    }
    let name = "lloom_gateway_key_tokens_total";
    m.family(name, MetricKind::Counter, "Tokens of verified answers, by API key and kind.");
    for (key, usage) in by_key {
        let key: &str = key;
        let prompt = usage.prompt_tokens.load(Ordering::Relaxed) as f64;
        m.sample(name, &[("key", key), ("kind", "prompt")], prompt);
        let completion = usage.completion_tokens.load(Ordering::Relaxed) as f64;
        m.sample(name, &[("key", key), ("kind", "completion")], completion);
    }
    let name = "lloom_gateway_key_cost_wei_total";
    m.family(
        name,
        MetricKind::Counter,
        "Wei owed for verified answers and broken streams' checkpoints since the start, by API key.",
    );
    for (key, usage) in by_key {
        let key: &str = key;
        let cost = *usage.cost_wei.lock().unwrap_or_else(PoisonError::into_inner);
        m.sample(name, &[("key", key)], wei(cost));
    }
}

/// Each API key's spend (the ledger's, across restarts) and, for keys that have one, budget.
fn render_key_budgets(m: &mut MetricsText, rows: &[KeyBudgetRow]) {
    if rows.is_empty() {
        return;
    }
    let name = "lloom_gateway_key_spent_wei";
    m.family(name, MetricKind::Gauge, "Wei each API key has spent, as its budget counts it.");
    for (key, spent, _) in rows {
        m.sample(name, &[("key", key)], wei(*spent));
    }
    let name = "lloom_gateway_key_budget_wei";
    m.family(name, MetricKind::Gauge, "The most each API key with a budget may spend, in wei.");
    for (key, _, budget) in rows {
        if let Some(budget) = budget {
            m.sample(name, &[("key", key)], wei(*budget));
        }
    }
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
        let too_long = ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::invalid("too long", Some("messages"))
        };
        counters.count_outcome(None, Some(&too_long));
        counters.count_outcome(None, Some(&too_long));
        counters.count_unauthorized();
        let cooling = ExecutorStats {
            failures: 3,
            consecutive_failures: 2,
            cooldown_until: Some(now + Duration::from_secs(10)),
            ..ExecutorStats::default()
        };
        let healthy = ExecutorStats {
            successes: 7,
            busy: 4,
            ttft_ms: Some(42.5),
            tokens_per_sec: Some(120.0),
            ..ExecutorStats::default()
        };
        let (a, b) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xbb));
        let budgets = [
            ("alice".into(), U256::from(40), Some(U256::from(100))),
            ("bob".into(), U256::ZERO, None),
        ];
        let page = render(&counters, (3, 4), &budgets, &[(a, cooling), (b, healthy)], now);
        assert!(page.contains("lloom_gateway_key_spent_wei{key=\"alice\"} 40\n"), "{page}");
        assert!(page.contains("lloom_gateway_key_spent_wei{key=\"bob\"} 0\n"), "{page}");
        assert!(page.contains("lloom_gateway_key_budget_wei{key=\"alice\"} 100\n"), "{page}");
        assert!(!page.contains("lloom_gateway_key_budget_wei{key=\"bob\"}"), "{page}");
        let a = a.to_checksum(None);
        let b = b.to_checksum(None);
        assert!(page.contains("lloom_gateway_completions_total{outcome=\"ok\"} 5\n"), "{page}");
        assert!(page.contains("lloom_gateway_completions_total{outcome=\"error\"} 2\n"));
        assert!(
            page.contains("lloom_gateway_errors_total{code=\"context_length_exceeded\"} 2\n"),
            "{page}"
        );
        assert!(page.contains("lloom_gateway_unauthorized_total 1\n"), "{page}");
        assert!(page.contains("lloom_gateway_in_flight 3\n"), "{page}");
        assert!(page.contains("lloom_gateway_refused_connections_total 4\n"), "{page}");
        // Without keys there is no per-key usage family.
        assert!(!page.contains("lloom_gateway_key_completions"), "{page}");
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
        assert!(
            page.contains(&format!("lloom_client_executor_busy_total{{executor=\"{b}\"}} 4\n")),
            "{page}"
        );
        // No measurement, no sample (rather than a made-up 0).
        assert!(
            !page.contains(&format!("lloom_client_executor_ttft_milliseconds{{executor=\"{a}\"}}"))
        );
    }
}
