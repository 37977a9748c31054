//! `GET /metrics` of a running executor (`start --metrics-listen ADDR`), in the Prometheus
//! text format, and `GET /health` (whether any model is offered now, for orchestrators). The
//! metrics: requests served and refused, the receipts waiting for settlement, the memory
//! budget and what the loaded models hold, each model's state (offered or withdrawn, its
//! context, loaded or not), and GPU memory through NVML.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lloom_core::metrics::{self, MetricKind, MetricsText};
use lloom_core::network::{NetworkHandle, NetworkStats};

use crate::backend::llama::ModelPool;
use crate::memory::gpu_memory;
use crate::node::FreeMemory;
use crate::serve::{ServedModel, Server};

/// What the metrics page reads.
#[derive(Clone, Debug)]
pub struct ExecutorMetrics {
    /// The request server (counters, receipt store).
    pub server: Server,
    /// The model pool of the embedded engine (`None` with an HTTP backend).
    pub pool: Option<Arc<ModelPool>>,
    /// The free memory announced.
    pub free_memory: Option<FreeMemory>,
    /// The network, for its counters (relay, hole punching, announcements); `None`: left out.
    pub network: Option<NetworkHandle>,
}

impl ExecutorMetrics {
    /// The page, now, with `network`'s counters when given.
    #[allow(clippy::cast_precision_loss)] // counters and byte counts far below 2^53
    pub fn render(&self, network: Option<&NetworkStats>) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut m = MetricsText::default();
        let stats = self.server.stats();
        let counters = [
            (
                "lloom_executor_requests_completed_total",
                "Requests answered with a signed response.",
                &stats.completed,
            ),
            (
                "lloom_executor_requests_refused_total",
                "Requests refused with a signed error (any code).",
                &stats.refused,
            ),
            ("lloom_executor_requests_busy_total", "Requests refused as Busy.", &stats.busy),
            (
                "lloom_executor_answers_off_format_total",
                "Answers not sent because the backend's text was not the JSON asked for.",
                &stats.off_format,
            ),
            (
                "lloom_executor_prompts_over_limit_total",
                "Answers whose prompt had more tokens than the request allowed, billed at its limit.",
                &stats.prompts_over_limit,
            ),
            (
                "lloom_executor_streams_dropped_total",
                "Streams that ended without a complete exchange.",
                &stats.dropped_streams,
            ),
            (
                "lloom_executor_streams_opened_total",
                "Request streams accepted; each carries one exchange after another.",
                &stats.streams_opened,
            ),
            (
                "lloom_executor_idle_streams_reclaimed_total",
                "Idle request streams closed to make room for new ones.",
                &stats.idle_streams_reclaimed,
            ),
        ];
        for (name, help, counter) in counters {
            m.single(name, MetricKind::Counter, help, counter.load(Relaxed) as f64);
        }
        let refusals = "lloom_executor_refusals_total";
        let help = "Requests refused with a signed error, by its code.";
        m.family(refusals, MetricKind::Counter, help);
        let codes =
            lloom_core::ErrorCode::KNOWN.into_iter().chain([lloom_core::ErrorCode::Other(0)]);
        for code in codes {
            m.sample(refusals, &[("code", code.name())], stats.refusals.get(code) as f64);
        }
        let in_flight = stats.in_flight.load(Relaxed) as f64;
        m.single(
            "lloom_executor_requests_in_flight",
            MetricKind::Gauge,
            "Requests being served.",
            in_flight,
        );
        m.single(
            "lloom_executor_draining",
            MetricKind::Gauge,
            "1 while shutting down: requests in flight finish, new ones are refused as Busy.",
            f64::from(u8::from(self.server.is_draining())),
        );
        if let Ok((_, unsettled)) = self.server.receipts().counts() {
            let help = "Receipts stored and not yet settled on chain.";
            m.single(
                "lloom_executor_receipts_unsettled",
                MetricKind::Gauge,
                help,
                unsettled as f64,
            );
        }
        let offered = "lloom_executor_model_offered";
        let help = "1 while the model is offered (its backend answers), 0 while it is withdrawn.";
        m.family(offered, MetricKind::Gauge, help);
        for model in self.server.models() {
            let up = f64::from(u8::from(model.is_offered()));
            m.sample(offered, &[("model", &model.offer.model)], up);
        }
        let context = "lloom_executor_model_context_tokens";
        m.family(context, MetricKind::Gauge, "Tokens of context a request gets (announced).");
        for model in self.server.models() {
            let tokens = f64::from(model.context_length());
            m.sample(context, &[("model", &model.offer.model)], tokens);
        }
        if let Some(free) = &self.free_memory {
            let help = "Memory free for more models (announced).";
            m.single(
                "lloom_executor_free_memory_bytes",
                MetricKind::Gauge,
                help,
                free.read() as f64,
            );
        }
        if let Some(pool) = &self.pool {
            let budget = pool.budget() as f64;
            m.single(
                "lloom_executor_memory_budget_bytes",
                MetricKind::Gauge,
                "The memory budget.",
                budget,
            );
            let used = pool.used_bytes() as f64;
            let help = "Memory held by loaded and loading models (planned).";
            m.single("lloom_executor_memory_used_bytes", MetricKind::Gauge, help, used);
            let status = pool.status();
            let loaded = "lloom_executor_model_loaded";
            m.family(loaded, MetricKind::Gauge, "1 when the model is loaded, 0 otherwise.");
            for s in &status {
                m.sample(loaded, &[("model", &s.name)], f64::from(u8::from(s.state == "loaded")));
            }
            let in_use = "lloom_executor_model_requests";
            m.family(in_use, MetricKind::Gauge, "Requests waiting or running on the model.");
            for s in &status {
                m.sample(in_use, &[("model", &s.name)], s.in_use as f64);
            }
            let planned = [
                (
                    "lloom_executor_model_planned_bytes",
                    "Memory the model takes while loaded (its plan).",
                    status.iter().map(|s| s.bytes as f64).collect::<Vec<_>>(),
                ),
                (
                    "lloom_executor_model_gpu_layers",
                    "Layers the model's plan offloads to the GPU (--gpu-layers).",
                    status.iter().map(|s| f64::from(s.gpu_layers)).collect(),
                ),
                (
                    "lloom_executor_model_max_sequences",
                    "Sequences the model's plan decodes together.",
                    status.iter().map(|s| f64::from(s.max_sequences)).collect(),
                ),
            ];
            for (name, help, values) in planned {
                m.family(name, MetricKind::Gauge, help);
                for (s, value) in status.iter().zip(values) {
                    m.sample(name, &[("model", &s.name)], value);
                }
            }
            let moves = "lloom_executor_model_sequence_moves_total";
            let help = "Sequences moved, KV cache and all, into a hole freed between running ones, since the model was loaded.";
            m.family(moves, MetricKind::Counter, help);
            for s in &status {
                m.sample(moves, &[("model", &s.name)], s.sequence_moves as f64);
            }
            let reused = "lloom_executor_model_prompt_tokens_reused_total";
            let help = "Prompt tokens taken from a cache the same client's earlier request left, not computed again, since the model was loaded.";
            m.family(reused, MetricKind::Counter, help);
            for s in &status {
                m.sample(reused, &[("model", &s.name)], s.prompt_tokens_reused as f64);
            }
        }
        let gpus = gpu_memory();
        if !gpus.is_empty() {
            let free = "lloom_executor_gpu_memory_free_bytes";
            let total = "lloom_executor_gpu_memory_total_bytes";
            m.family(free, MetricKind::Gauge, "Free GPU memory (NVML).");
            for (i, gpu) in gpus.iter().enumerate() {
                m.sample(free, &[("gpu", &i.to_string()), ("name", &gpu.name)], gpu.free as f64);
            }
            m.family(total, MetricKind::Gauge, "Total GPU memory (NVML).");
            for (i, gpu) in gpus.iter().enumerate() {
                m.sample(total, &[("gpu", &i.to_string()), ("name", &gpu.name)], gpu.total as f64);
            }
        }
        if let Some(stats) = network {
            metrics::write_network_stats(&mut m, stats);
        }
        m.finish()
    }

    /// Whether the executor serves now, for orchestrators: `200` with `{"status": "ok", ...}`
    /// while at least one model is offered, else `503` with `"unavailable"` (every backend
    /// down) or `"draining"` (shutting down, finishing the requests in flight); each model is
    /// listed with whether it is offered and its context.
    pub fn health(&self) -> (StatusCode, serde_json::Value) {
        let models: Vec<serde_json::Value> = self
            .server
            .models()
            .map(|m| {
                serde_json::json!({
                    "model": m.offer.model,
                    "offered": m.is_offered(),
                    "context_length": m.context_length(),
                })
            })
            .collect();
        let serving = self.server.models().any(ServedModel::is_offered);
        let (status, word) = match (self.server.is_draining(), serving) {
            (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            (false, true) => (StatusCode::OK, "ok"),
            (false, false) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        (status, serde_json::json!({ "status": word, "models": models }))
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

async fn health(State(metrics): State<Arc<ExecutorMetrics>>) -> Response {
    let (status, body) = metrics.health();
    (status, axum::Json(body)).into_response()
}

async fn page(State(metrics): State<Arc<ExecutorMetrics>>) -> Response {
    let network = match &metrics.network {
        Some(network) => network.stats().await.ok(),
        None => None,
    };
    let page = tokio::task::spawn_blocking(move || metrics.render(network.as_ref()))
        .await
        .unwrap_or_default();
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], page).into_response()
}
