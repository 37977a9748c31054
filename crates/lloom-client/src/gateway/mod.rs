//! The OpenAI-compatible HTTP gateway: `POST /v1/chat/completions` (streaming and not),
//! `GET /v1/models`, `GET /health` and `GET /metrics` (Prometheus), in front of a [`Client`].
//!
//! Any OpenAI SDK pointed at the gateway uses the network unmodified. Every answer is verified
//! before it is reported; receipt details travel in `x-lloom-*` headers (non-streaming) and in
//! an extra `lloom` field (the completion object, or the last streamed chunk). A streamed
//! answer cannot take back text it has sent, so when the executor fails after streaming began
//! the stream ends with an error event instead of restarting on another executor (before any
//! text is sent, failover works as in [`Client::chat`]). A request may carry its own routing
//! choices in the same extra field, `lloom`: a strategy, price ceilings in wei and a minimum
//! context, as `lloom-client chat` takes them. A request that continues a conversation is
//! asked first of the executor that answered the conversation last, whose prompt cache holds
//! the history (`gateway/affinity.rs`).
//!
//! With [`ApiKeys`] configured, the `/v1/*` routes answer only requests that carry one of them
//! (`Authorization: Bearer <key>`), each key within its own requests and tokens per minute
//! ([`GatewayConfig::key_limits`]) and, where it has one, its budget in wei: what each key
//! spends is kept durably in a [`SpendLedger`] ([`GatewayConfig::spend_ledger`]), and a key
//! whose spend has reached its budget is answered 402 `insufficient_quota`. `GET /v1/key`
//! tells the caller its key's name, spend, budget and rate limits. `/health` stays open, and
//! so does `/metrics` unless [`GatewayConfig::metrics_keys`] names the keys a scrape must
//! present (the metrics name every API key and its spend).

mod affinity;
mod auth;
mod charge;
mod error;
mod metrics;
mod openai;
mod period;
mod reply_stream;
mod routing_options;
mod sdk_retry;
mod spend;
pub mod tools;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use lloom_core::http::{HttpLimits, HttpServer, RefusedConnections};
use lloom_core::rate_limit::{RateLimiter, RateLimits};
use lloom_core::{U256, unix_now};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use auth::{ApiKeys, MAX_KEY_CHARS, MAX_KEYS, MIN_KEY_CHARS};
pub use error::ApiError;
pub use openai::CompletionRequest;
pub use period::BudgetPeriod;
pub(crate) use period::rfc3339;
pub use spend::{KeySpend, SpendLedger};

use crate::client::{ChatEvent, Client, Receipt};
use crate::directory::ModelRow;
use charge::KeyedAnswer;

/// Gateway limits and defaults.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Time for a request's body to arrive once its headers have.
    pub body_timeout: Duration,
    /// Cap on the answer of a request that gives no `max_tokens`. Such a request is given as
    /// many tokens as the executor's context leaves after the prompt (as OpenAI does), up to
    /// this cap when one is set.
    pub default_max_tokens: Option<u32>,
    /// Time for one completion, failovers included.
    pub request_timeout: Duration,
    /// Keys a `/v1/*` request must present (empty: none is asked for).
    pub api_keys: ApiKeys,
    /// Most completions under way at once (streams included, until they end); more are
    /// answered 429 at once rather than queued.
    pub max_concurrent: usize,
    /// Connections held at once and the time allowed for a request's headers.
    pub http: HttpLimits,
    /// Requests and completion tokens per minute allowed to each API key (unlimited by
    /// default; without keys they do not apply).
    pub key_limits: RateLimits,
    /// Where each key's spend is kept (required when any key has a budget); `None` counts
    /// spend only in `/metrics`, from the gateway's start.
    pub spend_ledger: Option<Arc<SpendLedger>>,
    /// When every key's budget is whole again (`None`: budgets are for the gateway's life).
    pub budget_period: Option<BudgetPeriod>,
    /// Keys `GET /metrics` must present as `Authorization: Bearer <key>` (empty: it is open).
    /// They give no access to `/v1/*`, and no API key gives access to the metrics.
    pub metrics_keys: ApiKeys,
    /// Highest price per token (input and output, in wei) any request may pay: a request's
    /// own `lloom` ceilings may lower it, never raise it (`None`: no ceiling).
    pub max_price: Option<U256>,
}

impl GatewayConfig {
    /// Refuses a configuration the gateway cannot honour: budgets without a spend ledger, or
    /// a metrics key that is also an API key.
    pub fn check(&self) -> crate::error::Result<()> {
        if self.api_keys.has_budgets() && self.spend_ledger.is_none() {
            return Err(crate::error::Error::ApiKeys(
                "keys with budgets need a spend ledger to keep what they spend".into(),
            ));
        }
        if self.metrics_keys.shares_a_key_with(&self.api_keys) {
            return Err(crate::error::Error::ApiKeys(
                "the metrics key is also an API key: give the metrics scraper a key of its own"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            default_max_tokens: None,
            request_timeout: Duration::from_secs(120),
            api_keys: ApiKeys::default(),
            max_concurrent: 256,
            http: HttpLimits::default(),
            key_limits: RateLimits { requests_per_minute: None, ..RateLimits::default() },
            spend_ledger: None,
            budget_period: None,
            metrics_keys: ApiKeys::default(),
            max_price: None,
        }
    }
}

struct GatewayState {
    client: Client,
    config: GatewayConfig,
    ids: AtomicU64,
    counters: metrics::GatewayCounters,
    /// One permit per completion under way, [`GatewayConfig::max_concurrent`] in all.
    in_flight: Arc<Semaphore>,
    /// Connections closed at once for the connection limit.
    refused_connections: RefusedConnections,
    /// Each API key's request and token budget.
    limiter: Mutex<RateLimiter<Arc<str>>>,
    /// Which executor answered each recent conversation.
    affinity: affinity::Affinity,
}

impl GatewayState {
    fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!(
            "chatcmpl-{}-{n}",
            hex::encode(self.client.address().as_slice().get(..6).unwrap_or_default())
        )
    }

    /// Lets a request of `key` in, or answers 402 when the key has spent its budget and 429
    /// with the seconds until its rate limit allows it.
    fn admit(&self, key: Option<&auth::KeyName>) -> Result<(), ApiError> {
        let Some(key) = key else { return Ok(()) };
        if let Some(budget) = self.config.api_keys.budget(&key.0) {
            let spent = self.spent(key);
            if spent >= budget {
                let now = unix_now();
                let reset = self.config.budget_period.map(|p| (p, p.next_start(now)));
                return Err(ApiError::budget_spent(&key.0, spent, budget, reset, now));
            }
        }
        let admitted = match self.limiter.lock() {
            Ok(mut limiter) => limiter.admit(&key.0, Instant::now()),
            Err(_) => Ok(()),
        };
        admitted.map_err(|wait| ApiError::key_rate_limited(&key.0, wait))
    }

    /// When the budget period holding now began (0 without periods).
    fn period_start(&self) -> u64 {
        self.config.budget_period.map_or(0, |p| p.start(unix_now()))
    }

    /// What `key` has spent: in the ledger (this budget period), or else since the gateway
    /// started.
    fn spent(&self, key: &auth::KeyName) -> U256 {
        match &self.config.spend_ledger {
            Some(ledger) => ledger.spent(&key.0, self.period_start()),
            None => self.counters.cost_of(key),
        }
    }

    /// Counts a verified answer's tokens for `key`: in the metrics and against its rate limit
    /// (its cost is charged by [`charge::KeyedAnswer`]); and records who answered its
    /// conversation.
    fn answered(&self, key: Option<&auth::KeyName>, receipt: &Receipt) {
        let request = &receipt.request;
        self.affinity.answered(&request.commitment.model, &request.body.messages, receipt.executor);
        self.counters.count_tokens(key, receipt);
        if let (Some(key), Ok(mut limiter)) = (key, self.limiter.lock()) {
            limiter.charge_tokens(&key.0, receipt.output_tokens, Instant::now());
        }
    }

    /// Charges `cost` wei to `key` in the metrics and the spend ledger. A ledger that cannot be
    /// written is logged: the answer has been paid for, and the key's spend still counts in
    /// memory (and is written with the next charge).
    async fn charge(&self, key: Option<&auth::KeyName>, cost: U256) {
        let Some(key) = key else { return };
        self.counters.count_cost(key, cost);
        if let Some(ledger) = &self.config.spend_ledger
            && let Err(e) = ledger.charge(&key.0, cost, self.period_start()).await
        {
            self.counters.count_ledger_error();
            tracing::error!(key = %key.0, %cost, "could not record a key's spend: {e}");
        }
    }
}

/// The gateway's routes, ready to serve (by [`serve`], or any server of the caller's).
/// Budgets without a spend ledger are refused.
pub fn router(client: Client, config: GatewayConfig) -> crate::error::Result<Router> {
    build_router(client, config, RefusedConnections::default())
}

fn build_router(
    client: Client,
    config: GatewayConfig,
    refused_connections: RefusedConnections,
) -> crate::error::Result<Router> {
    config.check()?;
    let counters = metrics::GatewayCounters::new(&config.api_keys);
    let in_flight = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
    let limiter = Mutex::new(RateLimiter::new(RateLimits {
        max_clients: config.api_keys.len().max(1),
        ..config.key_limits
    }));
    let state = Arc::new(GatewayState {
        client,
        config,
        ids: AtomicU64::new(1),
        counters,
        in_flight,
        refused_connections,
        limiter,
        affinity: affinity::Affinity::default(),
    });
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/key", get(key_info))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_key));
    let scrape = Router::new().route("/metrics", get(metrics::metrics)).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), auth::require_metrics_key),
    );
    Ok(Router::new()
        .merge(api)
        .merge(scrape)
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(state))
}

/// Serves the gateway on `listener` until `shutdown` resolves, within
/// [`GatewayConfig::http`]'s limits.
pub async fn serve(
    client: Client,
    listener: tokio::net::TcpListener,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = HttpServer::new(listener, config.http);
    let app = build_router(client, config, server.refused())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    server.serve(app, shutdown).await
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint; try POST /v1/chat/completions or GET /v1/models".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
        retry_after: None,
    }
}

async fn health(State(state): State<Arc<GatewayState>>) -> Response {
    match state.client.models().await {
        Ok(models) => axum::Json(json!({
            "status": "ok",
            "client": state.client.address().to_checksum(None),
            "models": models.len(),
        }))
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /v1/key`: the calling key's name, spend, budget and rate limits (after OpenRouter's
/// endpoint of the same purpose; amounts in wei, as strings).
async fn key_info(
    State(state): State<Arc<GatewayState>>,
    key: Option<Extension<auth::KeyName>>,
) -> Result<Response, ApiError> {
    let Some(Extension(key)) = key else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: Some("no_api_keys"),
            ..ApiError::invalid("this gateway asks for no API key", None)
        });
    };
    let spent = state.spent(&key);
    let budget = state.config.api_keys.budget(&key.0);
    let limits = &state.config.key_limits;
    let period = state.config.budget_period;
    let resets_at = period.map(|p| period::rfc3339(p.next_start(unix_now())));
    Ok(axum::Json(json!({ "data": {
        "label": &*key.0,
        "usage_wei": spent.to_string(),
        "limit_wei": budget.map(|b| b.to_string()),
        "limit_remaining_wei": budget.map(|b| b.saturating_sub(spent).to_string()),
        "limit_reset": period.map(BudgetPeriod::as_str),
        "resets_at": resets_at,
        "durable": state.config.spend_ledger.is_some(),
        "rate_limit": {
            "requests_per_minute": limits.requests_per_minute,
            "tokens_per_minute": limits.tokens_per_minute,
        },
    }}))
    .into_response())
}

fn model_entry(row: ModelRow) -> openai::ModelEntry {
    openai::ModelEntry {
        id: row.model,
        object: "model",
        created: 0,
        owned_by: "lloom",
        executors: row.executors,
        min_input_price_wei: row.input_price.0.to_string(),
        min_output_price_wei: row.output_price.0.to_string(),
        max_context: row.max_context,
    }
}

async fn models(State(state): State<Arc<GatewayState>>) -> Result<Response, ApiError> {
    let rows = state.client.models().await?;
    let data: Vec<openai::ModelEntry> = rows.into_iter().map(model_entry).collect();
    Ok(axum::Json(json!({ "object": "list", "data": data })).into_response())
}

/// `GET /v1/models/{id}` (the id may hold `/`, as in `org/model`).
async fn model(
    State(state): State<Arc<GatewayState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut rows = state.client.models().await?;
    match rows.iter().position(|r| r.model == id) {
        Some(i) => Ok(axum::Json(model_entry(rows.swap_remove(i))).into_response()),
        None => Err(state.client.no_executor(&id, rows).await.into()),
    }
}

async fn chat_completions(
    State(state): State<Arc<GatewayState>>,
    key: Option<Extension<auth::KeyName>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key.map(|Extension(k)| k);
    let answer = complete(&state, key.clone(), sdk_retry::is_sdk_retry(&headers), body).await;
    state.counters.count_outcome(key.as_ref(), answer.as_ref().err());
    answer
}

/// Reads a request body of at most [`GatewayConfig::max_body_bytes`] within
/// [`GatewayConfig::body_timeout`] (a client that trickles its body in holds no slot for long).
async fn read_body(config: &GatewayConfig, body: Body) -> Result<Bytes, ApiError> {
    let limited = Limited::new(body, config.max_body_bytes);
    match tokio::time::timeout(config.body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..ApiError::invalid(
                &format!("request body is larger than {} bytes", config.max_body_bytes),
                None,
            )
        }),
        Ok(Err(error)) => {
            Err(ApiError::invalid(&format!("cannot read the request body: {error}"), None))
        }
        Err(_) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            code: Some("request_timeout"),
            ..ApiError::invalid(
                &format!("the request body did not arrive within {:?}", config.body_timeout),
                None,
            )
        }),
    }
}

async fn complete(
    state: &Arc<GatewayState>,
    key: Option<auth::KeyName>,
    retried: bool,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&state.config, body).await?;
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        return Err(ApiError::gateway_busy(state.config.max_concurrent));
    };
    state.admit(key.as_ref())?;
    let request: CompletionRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(&format!("invalid JSON body: {e}"), None))?;
    let stream = request.stream;
    let model = request.model.clone();
    let openai::Converted { mut chat, include_usage, with_tools } =
        request.into_chat(state.config.default_max_tokens)?;
    chat.timeout = state.config.request_timeout;
    chat.prefer = state.affinity.preferred(&chat.model, &chat.messages);
    // A retry has waited out what an executor's Busy asked of it (SDKs wait `retry-after-ms`).
    chat.waited_out_busy = retried;
    if let Some(ceiling) = state.config.max_price {
        chat.filter = chat.filter.capped_at(ceiling);
    }
    let mut answer = KeyedAnswer::new(state.client.chat(chat).await?, state.clone(), key);
    let (id, created) = (state.next_id(), unix_now());
    if stream {
        let state = SseState {
            answer,
            id,
            created,
            model,
            include_usage,
            with_tools,
            reply: reply_stream::ReplyReader::new(),
            streamed_reply: String::new(),
            phase: Phase::Start,
            _permit: permit,
        };
        return Ok(Sse::new(sse_events(state)).keep_alive(KeepAlive::default()).into_response());
    }
    let outcome = answer.receipt().await;
    answer.settle().await;
    let receipt = outcome?;
    state.answered(answer.key(), &receipt);
    let body = openai::completion(&id, created, &receipt, with_tools);
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-lloom-executor", receipt.executor.to_checksum(None)),
        ("x-lloom-request-digest", receipt.request.digest().to_string()),
        ("x-lloom-cost-wei", receipt.cost.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

enum Phase {
    Start,
    Running,
    /// The answer to a request with tools has been sent whole; its finish comes next.
    Finish(Box<Receipt>, &'static str),
    Usage(Box<Receipt>),
    Done,
    End,
}

struct SseState {
    /// The chat, charged to its key however the stream ends.
    answer: KeyedAnswer,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// The request listed tools: a reply (`{"response": …}`) streams its words as they come;
    /// tool calls are sent whole at the end, read back from the verified answer.
    with_tools: bool,
    /// Reads the reply out of an answer to a request with tools.
    reply: reply_stream::ReplyReader,
    /// The reply's text streamed so far.
    streamed_reply: String,
    phase: Phase,
    /// Held until the stream ends or the HTTP client goes away.
    _permit: OwnedSemaphorePermit,
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

fn sse_events(state: SseState) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(state, |mut s| async move {
        let event = next_event(&mut s).await?;
        Some((Ok(event), s))
    })
}

async fn next_event(s: &mut SseState) -> Option<Event> {
    loop {
        match std::mem::replace(&mut s.phase, Phase::End) {
            Phase::Start => {
                s.phase = Phase::Running;
                let delta = json!({ "role": "assistant", "content": "" });
                return Some(data(&openai::chunk(&s.id, s.created, &s.model, &delta, None)));
            }
            Phase::Running => match s.answer.next().await {
                Some(Ok(ChatEvent::Attempt { .. })) => s.phase = Phase::Running,
                Some(Ok(ChatEvent::Text(text))) if s.with_tools => {
                    s.phase = Phase::Running;
                    let words = s.reply.push(&text);
                    if !words.is_empty() {
                        s.streamed_reply.push_str(&words);
                        let delta = json!({ "content": words });
                        return Some(data(&openai::chunk(
                            &s.id, s.created, &s.model, &delta, None,
                        )));
                    }
                }
                // Nothing was streamed yet: another executor's answer is sent as if first.
                Some(Ok(ChatEvent::Restart { .. }))
                    if s.with_tools && s.streamed_reply.is_empty() =>
                {
                    s.phase = Phase::Running;
                    s.reply = reply_stream::ReplyReader::new();
                }
                Some(Ok(ChatEvent::Text(text))) => {
                    s.phase = Phase::Running;
                    let delta = json!({ "content": text });
                    return Some(data(&openai::chunk(&s.id, s.created, &s.model, &delta, None)));
                }
                Some(Ok(ChatEvent::Restart { reason, .. })) => {
                    s.answer.settle().await;
                    let message = format!("the executor failed after streaming began: {reason}");
                    let error = ApiError {
                        status: StatusCode::BAD_GATEWAY,
                        ..ApiError::invalid(&message, None)
                    };
                    return Some(data(&error.body()));
                }
                Some(Ok(ChatEvent::Done(receipt))) => {
                    s.answer.gateway().answered(s.answer.key(), &receipt);
                    s.answer.settle().await;
                    if s.with_tools {
                        let answer = openai::Answer::of(&receipt, true);
                        let finish = answer.finish_reason(&receipt);
                        s.phase = Phase::Finish(receipt, finish);
                        if let Some(delta) = answer.delta_after(&s.streamed_reply) {
                            return Some(data(&openai::chunk(
                                &s.id, s.created, &s.model, &delta, None,
                            )));
                        }
                        continue;
                    }
                    let finish = openai::finish_reason(&receipt);
                    s.phase = Phase::Finish(receipt, finish);
                }
                Some(Err(e)) => {
                    s.answer.settle().await;
                    return Some(data(&ApiError::from(e).body()));
                }
                None => return None,
            },
            Phase::Finish(receipt, finish) => {
                let mut last = openai::chunk(&s.id, s.created, &s.model, &json!({}), Some(finish));
                if let Some(fields) = last.as_object_mut() {
                    fields.insert("lloom".into(), openai::lloom_field(&receipt, s.with_tools));
                }
                s.phase = if s.include_usage { Phase::Usage(receipt) } else { Phase::Done };
                return Some(data(&last));
            }
            Phase::Usage(receipt) => {
                s.phase = Phase::Done;
                let mut chunk = openai::chunk(&s.id, s.created, &s.model, &json!({}), None);
                if let Some(fields) = chunk.as_object_mut() {
                    fields.insert("choices".into(), json!([]));
                    fields.insert("usage".into(), openai::usage(&receipt));
                }
                return Some(data(&chunk));
            }
            Phase::Done => return Some(Event::default().data("[DONE]")),
            Phase::End => return None,
        }
    }
}
