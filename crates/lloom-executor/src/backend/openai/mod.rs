//! A backend in front of any OpenAI-compatible server: llama.cpp's `llama-server`, Ollama,
//! vLLM, LM Studio or a hosted API.
//!
//! Each generation is one streamed `POST {base_url}/chat/completions` with
//! `stream_options.include_usage`. The SSE stream is read with [`SseParser`] (events split across
//! reads, comments and keep-alives, `[DONE]`); exact usage comes from the last chunk. A server
//! that sends no usage gets an estimate (output: one token per content delta; input: one token
//! per four bytes of prompt), logged as such. Connection failures and `429`/`502`/`503`/`504`
//! answers are retried with backoff, but only before any text was produced; a request that
//! streamed text is never repeated. Every read has an idle timeout, an error body is read up to
//! a bound and its message reported, and at most `max_concurrent` requests run at once (more
//! are refused as Busy).

mod context_error;
mod request;
mod server_context;
mod sse;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lloom_core::FinishReason;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

pub use sse::{SseError, SseParser};

use super::{Backend, GenerateRequest, Generation, GenerationEvent, Usage};
use crate::error::{Error, Result};
use request::request_body;

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// Base URL including the version, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model name the server knows.
    pub remote_model: String,
    /// The model name announced to the network (default: the remote name).
    pub served_model: String,
    /// Bearer token, if the server needs one.
    pub api_key: Option<String>,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Longest wait for the response head or for the next bytes of the stream.
    pub read_timeout: Duration,
    /// Retries of a request that produced nothing (connection refused, 429, 502–504).
    pub max_retries: u32,
    /// Requests in flight at once; more are refused as Busy.
    pub max_concurrent: usize,
    /// Largest SSE event and largest error body read, in bytes.
    pub max_event_bytes: usize,
    /// The context length to announce whatever the server reports (`None`: the server's, as
    /// [`OpenAiBackend::probe`] last read it).
    pub context_length: Option<u32>,
}

impl OpenAiConfig {
    /// Defaults for `base_url` and `model`.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        let model = model.into();
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            served_model: model.clone(),
            remote_model: model,
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            max_retries: 2,
            max_concurrent: 64,
            max_event_bytes: 1024 * 1024,
            context_length: None,
        }
    }
}

/// The OpenAI-compatible HTTP backend.
#[derive(Debug)]
pub struct OpenAiBackend {
    config: Arc<OpenAiConfig>,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    healthy: Arc<AtomicBool>,
    /// The context the server last reported (0: none yet).
    reported_context: AtomicU32,
}

impl OpenAiBackend {
    /// A backend for `config` (no request is made yet; see [`OpenAiBackend::probe`]).
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| Error::Backend(format!("HTTP client: {e}")))?;
        let slots = Arc::new(Semaphore::new(config.max_concurrent));
        Ok(Self {
            config: Arc::new(config),
            http,
            slots,
            healthy: Arc::new(AtomicBool::new(true)),
            reported_context: AtomicU32::new(0),
        })
    }

    /// Asks `GET {base_url}/models`, checks the remote model is listed, and reads the context
    /// length the server gives a request: from the model's entry (vLLM's `max_model_len`,
    /// `context_length`, `max_context`), else from llama.cpp's `GET /props`, LM Studio's
    /// `GET /api/v0/models` or Ollama's `GET /api/ps` at the server's root; `None` when the
    /// server reports none. The backend is healthy after a probe that succeeds and not after
    /// one that fails ([`Backend::health`]); a context read is kept for
    /// [`Backend::context_length`] (one the server stops reporting, as Ollama does once it
    /// unloads the model, is not forgotten).
    pub async fn probe(&self) -> Result<ServerModel> {
        let probed = self.probe_server().await;
        self.healthy.store(probed.is_ok(), Ordering::Relaxed);
        if let Ok(ServerModel { context_length: Some(tokens) }) = probed {
            self.reported_context.store(tokens, Ordering::Relaxed);
        }
        probed
    }

    async fn probe_server(&self) -> Result<ServerModel> {
        let url = format!("{}/models", self.config.base_url);
        let response = self
            .get(&url, self.config.read_timeout)
            .await
            .map_err(|e| Error::Backend(format!("{url} is unreachable: {e}")))?;
        let status = response.status();
        let body = read_bounded(response, self.config.max_event_bytes).await?;
        if !status.is_success() {
            return Err(Error::Backend(format!("{url}: {}", upstream_error(status, &body))));
        }
        let listed: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Backend(format!("{url} did not answer JSON: {e}")))?;
        let models = listed.get("data").and_then(Value::as_array).map(Vec::as_slice);
        let models = models.unwrap_or_default();
        let remote = self.config.remote_model.as_str();
        let Some(entry) =
            models.iter().find(|m| m.get("id").and_then(Value::as_str) == Some(remote))
        else {
            let ids: Vec<&str> = models.iter().filter_map(|m| m.get("id")?.as_str()).collect();
            return Err(Error::Backend(format!(
                "{url} does not list model `{remote}` (it lists: {})",
                ids.join(", ")
            )));
        };
        let mut context_length = server_context::listed(entry);
        for (path, read) in server_context::SERVER_ENDPOINTS {
            if context_length.is_some() {
                break;
            }
            context_length = self.root_json(path).await.and_then(|answer| read(&answer, remote));
        }
        Ok(ServerModel { context_length })
    }

    /// The JSON `GET {server root}{path}` answers, if the server answers it whole within the
    /// connect timeout (llama.cpp's, LM Studio's and Ollama's own endpoints, beside the
    /// OpenAI-compatible ones: a server that has none must not hold the start up).
    async fn root_json(&self, path: &str) -> Option<Value> {
        let url = format!("{}{path}", server_context::server_root(&self.config.base_url)?);
        let limit = self.config.connect_timeout.min(self.config.read_timeout);
        let response = match self.get(&url, limit).await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                tracing::debug!(%url, status = %response.status(), "not answered");
                return None;
            }
            Err(e) => {
                tracing::debug!(%url, "not answered: {e}");
                return None;
            }
        };
        let body = read_bounded(response, self.config.max_event_bytes).await.ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// `GET url` with the API key, answered whole within `timeout`.
    async fn get(&self, url: &str, timeout: Duration) -> reqwest::Result<reqwest::Response> {
        let mut request = self.http.get(url).timeout(timeout);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        request.send().await
    }
}

/// What a server says of the model it serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerModel {
    /// The context length it gives one request, in tokens, where it reports one.
    pub context_length: Option<u32>,
}

impl Backend for OpenAiBackend {
    fn models(&self) -> Vec<String> {
        vec![self.config.served_model.clone()]
    }

    fn health(&self) -> Result<()> {
        match self.healthy.load(Ordering::Relaxed) {
            true => Ok(()),
            false => Err(Error::Backend(format!("{} is not answering", self.config.base_url))),
        }
    }

    fn context_length(&self) -> Option<u32> {
        let reported = self.reported_context.load(Ordering::Relaxed);
        self.config.context_length.or((reported > 0).then_some(reported))
    }

    fn generate(&self, request: GenerateRequest) -> Result<Generation> {
        let body = request_body(&self.config, &request)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Backend("the HTTP backend needs a tokio runtime".into()))?;
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            Error::Busy(format!("{} requests in flight to the server", self.config.max_concurrent))
        })?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let run = Run {
            config: self.config.clone(),
            http: self.http.clone(),
            healthy: self.healthy.clone(),
            events: events_tx,
            cancel: cancel.clone(),
        };
        runtime.spawn(async move {
            run.generate(request, body).await;
            drop(permit);
        });
        Ok(Generation { events, cancel })
    }
}

/// One generation in flight.
struct Run {
    config: Arc<OpenAiConfig>,
    http: reqwest::Client,
    healthy: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<GenerationEvent>,
    cancel: CancellationToken,
}

/// How a streamed completion ended.
#[derive(Default)]
struct Tally {
    deltas: u64,
    finish: Option<FinishReason>,
    usage: Option<(u64, u64)>,
}

impl Run {
    async fn generate(self, request: GenerateRequest, body: Value) {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            match self.send(&body).await {
                Ok(response) => break response,
                Err(NotSent::Retryable(message)) if attempt <= self.config.max_retries => {
                    tracing::debug!(attempt, "retrying the HTTP backend: {message}");
                    tokio::select! {
                        () = self.cancel.cancelled() => return self.fail(message),
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay *= 2;
                }
                Err(NotSent::Retryable(message) | NotSent::Failed(message)) => {
                    return self.fail(message);
                }
                Err(NotSent::ContextExceeded(message)) => {
                    let _ = self.events.send(GenerationEvent::ContextExceeded(message));
                    return;
                }
            }
        };
        self.healthy.store(true, Ordering::Relaxed);
        let tally = match self.stream(response).await {
            Ok(tally) => tally,
            Err(message) => return self.fail(message),
        };
        let (input, output) = tally.usage.unwrap_or_else(|| {
            let prompt_bytes: usize = request.messages.iter().map(|m| m.content.len()).sum();
            tracing::warn!("the HTTP backend sent no usage; token counts are estimated");
            ((prompt_bytes as u64).div_ceil(4), tally.deltas)
        });
        let finish = match tally.finish {
            _ if self.cancel.is_cancelled() => FinishReason::Cancelled,
            Some(reason) => reason,
            None => FinishReason::Stop,
        };
        let _ = self.events.send(GenerationEvent::Done(Usage {
            input_tokens: input,
            output_tokens: output.min(u64::from(request.max_tokens)),
            finish,
        }));
    }

    fn fail(&self, message: String) {
        let _ = self.events.send(GenerationEvent::Failed(message));
    }

    /// Sends the request; why not, when no stream could be started.
    async fn send(&self, body: &Value) -> std::result::Result<reqwest::Response, NotSent> {
        let url = format!("{}/chat/completions", self.config.base_url);
        let mut request = self.http.post(&url).json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let sent = tokio::select! {
            () = self.cancel.cancelled() => return Err(NotSent::Failed("cancelled".into())),
            sent = tokio::time::timeout(self.config.read_timeout, request.send()) => sent,
        };
        let response = match sent {
            Err(_) => {
                let message = format!("{url}: no response within {:?}", self.config.read_timeout);
                return Err(NotSent::Retryable(message));
            }
            Ok(Err(e)) => {
                self.healthy.store(false, Ordering::Relaxed);
                let message = format!("{url} is unreachable: {e}");
                return Err(match e.is_connect() {
                    true => NotSent::Retryable(message),
                    false => NotSent::Failed(message),
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_bounded(response, self.config.max_event_bytes).await.unwrap_or_default();
        let message = upstream_error(status, &body);
        Err(match status.as_u16() {
            429 | 502 | 503 | 504 => NotSent::Retryable(message),
            400 | 413 if context_error::exceeds_context(&body) => {
                NotSent::ContextExceeded(context_error::with_prompt_count(&body, message))
            }
            _ => NotSent::Failed(message),
        })
    }

    /// Reads the SSE stream, forwarding text; returns how it ended.
    async fn stream(&self, response: reqwest::Response) -> std::result::Result<Tally, String> {
        let mut parser = SseParser::new(self.config.max_event_bytes);
        let mut body = response.bytes_stream();
        let mut tally = Tally::default();
        loop {
            let next = tokio::select! {
                () = self.cancel.cancelled() => return Ok(tally),
                next = tokio::time::timeout(self.config.read_timeout, body.next()) => next,
            };
            let bytes = match next {
                Err(_) => {
                    return Err(format!("the stream stalled for {:?}", self.config.read_timeout));
                }
                Ok(None) => return Err("the stream ended without [DONE]".into()),
                Ok(Some(Err(e))) => return Err(format!("the stream broke: {e}")),
                Ok(Some(Ok(bytes))) => bytes,
            };
            for data in parser.push(&bytes).map_err(|e| e.0)? {
                if data.trim() == "[DONE]" {
                    return Ok(tally);
                }
                let chunk: Value = serde_json::from_str(&data)
                    .map_err(|e| format!("a stream event is not JSON ({e}): {data}"))?;
                if let Some(error) = chunk.get("error") {
                    return Err(format!("the server reported an error: {}", error_message(error)));
                }
                if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
                    let input = usage.get("prompt_tokens").and_then(Value::as_u64);
                    let output = usage.get("completion_tokens").and_then(Value::as_u64);
                    if let (Some(i), Some(o)) = (input, output) {
                        tally.usage = Some((i, o));
                    }
                }
                let Some(choice) = chunk.pointer("/choices/0") else { continue };
                let content = choice.pointer("/delta/content").and_then(Value::as_str);
                if let Some(text) = content.filter(|t| !t.is_empty()) {
                    tally.deltas += 1;
                    let event =
                        GenerationEvent::Text { text: text.to_owned(), tokens: tally.deltas };
                    if self.events.send(event).is_err() {
                        return Ok(tally); // the caller went away: dropping the body cancels upstream
                    }
                }
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    tally.finish = Some(match reason {
                        "length" => FinishReason::Length,
                        _ => FinishReason::Stop,
                    });
                }
            }
        }
    }
}

/// Why a request got no stream.
enum NotSent {
    /// Worth sending again after a pause (a refused connection, 429, 502–504, no answer).
    Retryable(String),
    /// The server says the prompt and `max_tokens` do not fit the model's context.
    ContextExceeded(String),
    /// Anything else; sending again would fail the same way.
    Failed(String),
}

/// Reads at most `limit` bytes of a body.
async fn read_bounded(response: reqwest::Response, limit: usize) -> Result<Vec<u8>> {
    let mut body = response.bytes_stream();
    let mut out = Vec::new();
    while let Some(bytes) = body.next().await {
        let bytes = bytes.map_err(|e| Error::Backend(format!("reading the body: {e}")))?;
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

fn error_message(error: &Value) -> String {
    error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_owned)
}

/// `"HTTP 401: Invalid API key"` from an error answer (OpenAI JSON or plain text).
fn upstream_error(status: reqwest::StatusCode, body: &[u8]) -> String {
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(error_message))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    format!("HTTP {}: {}", status.as_u16(), detail.trim())
}
