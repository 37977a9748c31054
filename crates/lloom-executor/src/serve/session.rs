//! One request stream, from the signed request to the signed final response.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use lloom_core::answer_format::check_answer_format;
use lloom_core::verify::{compute_cost, verify_request};
use lloom_core::wire::{content_hash, read_frame, write_frame};
use lloom_core::{
    B256, DigestedRequest, ErrorCode, ErrorCommitment, FinishReason, PeerId, RequestCommitment,
    ResponseCommitment, SignedError, SignedRequest, SignedResponse, StreamChunk, WireMessage,
    unix_now,
};

use super::answer_time::{AnswerTime, untimed_retry_after};
use super::outbox::Outbox;
use super::{Receipt, ServedModel, Shared};
use crate::backend::{GenerateRequest, GenerationEvent};

/// A refusal: the code, what to tell the client, and when to come back.
struct Refusal {
    code: ErrorCode,
    message: String,
    retry_after: Duration,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: Duration::ZERO }
    }

    fn retry(code: ErrorCode, message: impl Into<String>, retry_after: Duration) -> Self {
        Self { code, message: message.into(), retry_after }
    }
}

impl From<lloom_core::Error> for Refusal {
    fn from(e: lloom_core::Error) -> Self {
        let code = match e {
            lloom_core::Error::DeadlinePassed { .. } => ErrorCode::DeadlineExceeded,
            lloom_core::Error::NonceReplayed { .. } => ErrorCode::NonceReplayed,
            _ => ErrorCode::InvalidRequest,
        };
        Self::new(code, e.to_string())
    }
}

/// Serves one stream: exchange after exchange (a request, then its answer), until the peer
/// closes the stream, sends nothing for [`ServeConfig::request_timeout`], breaks an exchange,
/// or the server reclaims idle streams to make room (see [`Shared::reclaim_idle`]).
///
/// [`ServeConfig::request_timeout`]: super::ServeConfig::request_timeout
pub(crate) async fn serve<S>(shared: &Arc<Shared>, peer: PeerId, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shared.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
    let mut exchanges = 0u64;
    while let Some(request) = next_request(shared, &peer, &mut stream, exchanges).await {
        exchanges += 1;
        let request = DigestedRequest::new(request);
        let digest = request.digest();
        // A request refused because the executor is shutting down is not counted in flight:
        // the drain waits only for the work it lets finish.
        let outcome = if shared.draining.load(Ordering::SeqCst) {
            send_refusal(shared, digest, draining_refusal(shared), &mut stream).await
        } else {
            shared.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let outcome = match admit(shared, &peer, &request).await {
                Ok(model) => run(shared, request.request(), digest, model, &mut stream).await,
                Err(refusal) => send_refusal(shared, digest, refusal, &mut stream).await,
            };
            shared.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            outcome
        };
        if let Err(e) = outcome {
            // Frames of this exchange may be missing: the stream cannot carry another one.
            shared.stats.dropped_streams.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %digest, "stream ended early: {e}");
            break;
        }
    }
    let _ = stream.close().await;
}

/// How long a new stream may wait for its first request before it counts as idle and may be
/// reclaimed to make room (it is closed anyway after the request timeout).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Waits for the stream's next request. `None` ends the stream: the peer closed it, sent
/// nothing in time, sent something other than a decodable request, or the server reclaimed
/// the idle stream. Only a stream that never carried a request is counted as dropped when it
/// ends without one.
async fn next_request<S>(
    shared: &Shared,
    peer: &PeerId,
    stream: &mut S,
    exchanges: u64,
) -> Option<SignedRequest>
where
    S: AsyncRead + Unpin,
{
    let limits = shared.config.policy.limits;
    let waiting_since = Instant::now();
    let read = tokio::time::timeout(shared.config.request_timeout, read_frame(stream, &limits));
    tokio::pin!(read);
    let outcome = loop {
        let reclaimed = shared.reclaim_idle.notified();
        tokio::select! {
            outcome = &mut read => break outcome,
            () = reclaimed => {
                // A stream just opened has its first request on the way: it keeps its slot.
                if exchanges == 0 && waiting_since.elapsed() < FIRST_REQUEST_GRACE {
                    continue;
                }
                shared.stats.idle_streams_reclaimed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, exchanges, "idle request stream reclaimed to make room");
                return None;
            }
        }
    };
    let unexpected = match outcome {
        Ok(Ok(Some(WireMessage::Request(request)))) => return Some(request),
        Ok(Ok(None)) if exchanges > 0 => return None,
        Err(_) if exchanges > 0 => return None,
        Ok(Ok(Some(other))) => format!("a {} frame where a request belongs", other.kind()),
        Ok(Ok(None)) => "closed before a request".to_owned(),
        Ok(Err(e)) => format!("unreadable request: {e}"),
        Err(_) => "no request before the timeout".to_owned(),
    };
    // Without a decodable request there is no digest to sign an error for.
    shared.stats.dropped_streams.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, exchanges, "request stream dropped: {unexpected}");
    None
}

/// `retryAfterMillis` of the Busy that a shutting-down executor answers new requests with: it
/// will be gone, and a restarted one announces itself again.
const DRAINING_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The signed Busy of an executor shutting down (see `Server::start_draining`).
fn draining_refusal(shared: &Shared) -> Refusal {
    shared.stats.busy.fetch_add(1, Ordering::Relaxed);
    Refusal::retry(
        ErrorCode::Busy,
        "this executor is shutting down; ask another one",
        DRAINING_RETRY_AFTER,
    )
}

/// Applies every rule, in order, before any work is done.
async fn admit(
    shared: &Arc<Shared>,
    peer: &PeerId,
    request: &DigestedRequest,
) -> Result<ServedModel, Refusal> {
    let now = unix_now();
    let digest = verify_request(request, Some(peer), &shared.config.policy, now)?;
    let request = request.request();
    let c = &request.commitment;
    // A request already answered is refused from its durable receipt; the nonce store, whose
    // syncs are deferred, covers the ones in flight.
    match shared.receipts.contains(&digest) {
        Ok(false) => {}
        Ok(true) => {
            return Err(Refusal::from(lloom_core::Error::NonceReplayed {
                client: c.client,
                nonce: c.nonce,
            }));
        }
        Err(e) => {
            return Err(Refusal::new(ErrorCode::Internal, format!("receipt store: {e}")));
        }
    }
    if c.executor != shared.key.address() {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            format!("request is addressed to executor {}, not to this one", c.executor),
        ));
    }
    let Some(model) = shared.models.get(&c.model) else {
        let known: Vec<&str> = shared.models.keys().map(String::as_str).collect();
        return Err(Refusal::new(
            ErrorCode::UnknownModel,
            format!("model `{}` is not served here; served: {}", c.model, known.join(", ")),
        ));
    };
    let offer = &model.offer;
    if c.pricePerInputToken < offer.price_per_input_token
        || c.pricePerOutputToken < offer.price_per_output_token
    {
        return Err(Refusal::new(
            ErrorCode::PriceTooLow,
            format!(
                "offered {}/{} wei per input/output token; this executor asks {}/{}",
                c.pricePerInputToken,
                c.pricePerOutputToken,
                offer.price_per_input_token,
                offer.price_per_output_token
            ),
        ));
    }
    if c.maxOutputTokens == 0 {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "maxOutputTokens 0: at least 1 token must be asked for",
        ));
    }
    let context_length = model.context_length();
    if c.maxOutputTokens > u64::from(context_length) {
        return Err(Refusal::new(
            ErrorCode::ContextExceeded,
            format!(
                "maxOutputTokens {} is more than the context length {context_length}",
                c.maxOutputTokens
            ),
        ));
    }
    let admitted =
        shared.limiter.lock().map(|mut l| l.admit(&c.client, Instant::now())).map_err(|_| ());
    match admitted {
        Ok(Ok(())) => {}
        Ok(Err(wait)) => {
            return Err(Refusal::retry(
                ErrorCode::RateLimited,
                format!("rate limit reached for client {}", c.client),
                wait,
            ));
        }
        Err(_) => return Err(Refusal::new(ErrorCode::Internal, "rate limiter unavailable")),
    }
    if let Some(policy) = &shared.config.escrow {
        match policy.check(c.client).await {
            Ok(()) => {}
            Err(super::EscrowShortfall::Below { escrow, minimum }) => {
                return Err(Refusal::new(
                    ErrorCode::InsufficientEscrow,
                    format!(
                        "client escrow {escrow} wei is below this executor's minimum of {minimum} wei"
                    ),
                ));
            }
            Err(super::EscrowShortfall::Unknown(e)) => {
                return Err(Refusal::retry(
                    ErrorCode::Internal,
                    format!("cannot read the client's escrow: {e}"),
                    Duration::from_secs(5),
                ));
            }
        }
    }
    // The nonce rule comes last and is applied in `run`, overlapping the model's prompt
    // processing: a refused request does not burn the client's nonce.
    Ok(model.clone())
}

/// Records the request's nonce (synced within `nonce_sync_interval`); refuses a replay.
async fn record_nonce(shared: &Shared, request: &SignedRequest) -> Result<(), Refusal> {
    let c = &request.commitment;
    shared
        .nonces
        .record(c.client, c.nonce, c.deadline)
        .await
        .ok_or_else(|| Refusal::new(ErrorCode::Internal, "replay store stopped"))?
        .map_err(Refusal::from)
}

/// What has been streamed so far.
#[derive(Default)]
struct Progress {
    text: String,
    chunks: u32,
    input_tokens: u64,
    output_tokens: u64,
    next_checkpoint: u64,
    last_checkpoint: Option<SignedResponse>,
}

/// Runs an admitted request and streams its answer.
async fn run<S>(
    shared: &Arc<Shared>,
    request: &SignedRequest,
    digest: B256,
    model: ServedModel,
    stream: &mut S,
) -> lloom_core::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let admitted = Instant::now();
    let c = &request.commitment;
    let generate = GenerateRequest {
        messages: request.body.messages.clone(),
        sampling: request.body.sampling.clone(),
        max_tokens: u32::try_from(c.maxOutputTokens).unwrap_or(u32::MAX),
        max_input_tokens: Some(c.maxInputTokens),
        client: Some(c.client),
    };
    // Turning a JSON schema into a grammar takes milliseconds (tens for a deeply nested one):
    // off the async workers, so the other streams on this one are not held up.
    let generated = if generate.sampling.format == lloom_core::OutputFormat::Text {
        model.backend.generate(generate)
    } else {
        let backend = model.backend.clone();
        tokio::task::spawn_blocking(move || backend.generate(generate)).await.unwrap_or_else(|e| {
            Err(crate::Error::Backend(format!("generation did not start: {e}")))
        })
    };
    let mut generation = match generated {
        Ok(g) => g,
        Err(crate::Error::Busy(reason)) => {
            shared.stats.busy.fetch_add(1, Ordering::Relaxed);
            let floor = shared.config.busy_retry_after;
            let wait = shared.answer_times.get(&c.model).map_or_else(
                || untimed_retry_after(floor),
                |t| t.retry_after(floor, Instant::now()),
            );
            let refusal = Refusal::retry(ErrorCode::Busy, reason, wait);
            return send_refusal(shared, digest, refusal, stream).await;
        }
        Err(e @ crate::Error::Unservable(_)) => {
            let refusal = Refusal::new(ErrorCode::InvalidRequest, e.to_string());
            return send_refusal(shared, digest, refusal, stream).await;
        }
        Err(e) => {
            let refusal = Refusal::new(ErrorCode::BackendFailure, e.to_string());
            return send_refusal(shared, digest, refusal, stream).await;
        }
    };
    // Under way from the backend's yes until the answer ends (refusals never count).
    let _under_way = shared.answer_times.get(&c.model).map(AnswerTime::enter);
    // The backend processes the prompt while the nonce is recorded; nothing is sent before
    // the nonce is recorded, and a replay stops the work at once.
    if let Err(refusal) = record_nonce(shared, request).await {
        drop(generation);
        return send_refusal(shared, digest, refusal, stream).await;
    }
    let every = shared.config.checkpoint_every;
    let mut progress = Progress { next_checkpoint: every, ..Progress::default() };
    let mut outbox = Outbox::default();
    let (limits, write_timeout) = (&shared.config.policy.limits, shared.config.write_timeout);
    let deadline = deadline_instant(c.deadline);
    let mut deadline_hit = false;
    loop {
        let event = tokio::select! {
            event = generation.events.recv() => event,
            () = tokio::time::sleep_until(deadline), if !deadline_hit => {
                // Stop the work; the backend reports what was generated as CANCELLED.
                deadline_hit = true;
                generation.cancel();
                continue;
            }
        };
        match event {
            Some(GenerationEvent::Started { input_tokens }) => {
                // Checkpoints bill no more than the final response will (see billable_input).
                progress.input_tokens = input_tokens.min(c.maxInputTokens);
            }
            Some(GenerationEvent::Text { text, tokens }) => {
                progress.text.push_str(&text);
                progress.output_tokens = tokens;
                let chunk = StreamChunk { index: progress.chunks, text };
                progress.chunks += 1;
                let ready_alone = generation.events.is_empty();
                let sent = async {
                    outbox.push(&WireMessage::Chunk(chunk), limits)?;
                    if every > 0 && tokens >= progress.next_checkpoint {
                        progress.next_checkpoint = (tokens / every + 1) * every;
                        let checkpoint = sign_response(
                            shared,
                            request,
                            digest,
                            &progress,
                            FinishReason::Partial,
                        )?;
                        progress.last_checkpoint = Some(checkpoint.clone());
                        outbox.push(&WireMessage::Checkpoint(checkpoint), limits)?;
                    }
                    // Frames go out as soon as nothing else is ready to go with them.
                    match ready_alone {
                        true => outbox.flush(stream, write_timeout).await,
                        false => Ok(()),
                    }
                };
                // Whatever stops the stream here, the last checkpoint stays settleable.
                if let Err(e) = sent.await {
                    keep_checkpoint(shared, request, &progress).await;
                    return Err(e);
                }
            }
            Some(GenerationEvent::Done(usage)) => {
                progress.input_tokens = billable_input(shared, c, usage.input_tokens);
                progress.output_tokens = usage.output_tokens;
                // An answer in the wrong shape (a backend that ignores `response_format`) is
                // not signed, stored or charged: the client would reject it anyway.
                let sampling = &request.body.sampling;
                if let Err(e) = check_answer_format(sampling, usage.finish, &progress.text) {
                    shared.stats.off_format.fetch_add(1, Ordering::Relaxed);
                    outbox.flush(stream, write_timeout).await?;
                    let refusal = Refusal::new(ErrorCode::BackendFailure, e.to_string());
                    return send_refusal(shared, digest, refusal, stream).await;
                }
                let response = sign_response(shared, request, digest, &progress, usage.finish)?;
                let receipt = Receipt { request: request.clone(), response: response.clone() };
                if let Err(e) = store_receipt(shared, receipt).await {
                    tracing::error!(%digest, "cannot store the receipt: {e}");
                    outbox.flush(stream, write_timeout).await?;
                    let refusal = Refusal::new(ErrorCode::Internal, "receipt store failed");
                    return send_refusal(shared, digest, refusal, stream).await;
                }
                if let Ok(mut limiter) = shared.limiter.lock() {
                    limiter.charge_tokens(&c.client, usage.output_tokens, Instant::now());
                }
                shared.stats.completed.fetch_add(1, Ordering::Relaxed);
                if let Some(time) = shared.answer_times.get(&c.model) {
                    time.record(admitted.elapsed());
                }
                // The response leaves with any chunks still queued, after the receipt is stored.
                outbox.push(&WireMessage::Response(response), limits)?;
                return outbox.flush(stream, write_timeout).await;
            }
            Some(GenerationEvent::Failed(message)) => {
                keep_checkpoint(shared, request, &progress).await;
                outbox.flush(stream, write_timeout).await?;
                let refusal = Refusal::new(ErrorCode::BackendFailure, message);
                return send_refusal(shared, digest, refusal, stream).await;
            }
            Some(GenerationEvent::Refused(message)) => {
                outbox.flush(stream, write_timeout).await?;
                let refusal = Refusal::new(ErrorCode::InvalidRequest, message);
                return send_refusal(shared, digest, refusal, stream).await;
            }
            Some(GenerationEvent::ContextExceeded(message)) => {
                outbox.flush(stream, write_timeout).await?;
                let refusal = Refusal::new(ErrorCode::ContextExceeded, message);
                return send_refusal(shared, digest, refusal, stream).await;
            }
            None => {
                // The backend dropped the job before it started (cancelled at the deadline).
                outbox.flush(stream, write_timeout).await?;
                let refusal = Refusal::new(
                    ErrorCode::DeadlineExceeded,
                    "the deadline passed before generation started",
                );
                return send_refusal(shared, digest, refusal, stream).await;
            }
        }
    }
}

/// The prompt tokens to sign for: as counted, or the request's `maxInputTokens` when the
/// backend counted more. The embedded engine refuses such a prompt before any work, but a
/// server behind the HTTP backend whose context is longer than the one announced accepts it;
/// the client signed for no more, and would reject a response claiming more, so the executor
/// bills the limit and counts the event.
fn billable_input(shared: &Shared, request: &RequestCommitment, counted: u64) -> u64 {
    if counted <= request.maxInputTokens {
        return counted;
    }
    tracing::warn!(
        counted,
        allowed = request.maxInputTokens,
        "the backend counted more prompt tokens than the request allows; billing the limit (is the announced context shorter than the server's?)"
    );
    shared.stats.prompts_over_limit.fetch_add(1, Ordering::Relaxed);
    request.maxInputTokens
}

/// The deadline (unix seconds) as a tokio instant.
fn deadline_instant(deadline: u64) -> tokio::time::Instant {
    let left = deadline.saturating_sub(unix_now());
    tokio::time::Instant::now() + std::time::Duration::from_secs(left)
}

fn sign_response(
    shared: &Shared,
    request: &SignedRequest,
    digest: B256,
    progress: &Progress,
    finish: FinishReason,
) -> lloom_core::Result<SignedResponse> {
    let c = &request.commitment;
    let total_cost = compute_cost(
        progress.input_tokens,
        progress.output_tokens,
        c.pricePerInputToken,
        c.pricePerOutputToken,
    )?;
    let commitment = ResponseCommitment {
        requestDigest: digest,
        client: c.client,
        executor: c.executor,
        model: c.model.clone(),
        contentHash: content_hash(&progress.text),
        inputTokens: progress.input_tokens,
        outputTokens: progress.output_tokens,
        totalCost: total_cost,
        finishReason: finish.code(),
        timestamp: unix_now(),
    };
    SignedResponse::sign(&shared.key, shared.config.policy.domain, commitment)
}

/// A broken stream still leaves a settleable record: the last checkpoint the client got.
async fn keep_checkpoint(shared: &Arc<Shared>, request: &SignedRequest, progress: &Progress) {
    if let Some(checkpoint) = &progress.last_checkpoint {
        let receipt = Receipt { request: request.clone(), response: checkpoint.clone() };
        if let Err(e) = store_receipt(shared, receipt).await {
            tracing::error!("cannot store the checkpoint receipt: {e}");
        }
    }
}

async fn store_receipt(shared: &Arc<Shared>, receipt: Receipt) -> crate::Result<()> {
    match shared.receipt_writer.submit(receipt).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(crate::Error::Io(std::io::Error::other(e))),
        None => Err(crate::Error::Io(std::io::Error::other("receipt store stopped"))),
    }
}

async fn send<S: AsyncWrite + Unpin>(
    shared: &Shared,
    stream: &mut S,
    message: &WireMessage,
) -> lloom_core::Result<()> {
    let timeout = shared.config.write_timeout;
    tokio::time::timeout(timeout, write_frame(stream, message, &shared.config.policy.limits))
        .await
        .map_err(|_| lloom_core::Error::Timeout(timeout))?
}

async fn send_refusal<S: AsyncWrite + Unpin>(
    shared: &Shared,
    digest: B256,
    refusal: Refusal,
    stream: &mut S,
) -> lloom_core::Result<()> {
    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
    shared.stats.refusals.count(refusal.code);
    if refusal.code == ErrorCode::RateLimited {
        tracing::debug!(%digest, "rate limited");
    }
    let mut message = refusal.message;
    truncate_at_char(&mut message, shared.config.policy.limits.max_error_message_bytes);
    let commitment = ErrorCommitment {
        requestDigest: digest,
        executor: shared.key.address(),
        code: refusal.code.code(),
        message,
        retryAfterMillis: u64::try_from(refusal.retry_after.as_millis()).unwrap_or(u64::MAX),
        timestamp: unix_now(),
    };
    let error = SignedError::sign(&shared.key, shared.config.policy.domain, commitment)?;
    send(shared, stream, &WireMessage::Error(error)).await
}

fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
