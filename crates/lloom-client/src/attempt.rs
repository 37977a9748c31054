//! One attempt: a signed request to one executor, its stream read and verified frame by frame.

use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use lloom_core::network::NetworkHandle;
use lloom_core::verify::{verify_checkpoint, verify_error, verify_response};
use lloom_core::wire::{read_frame, write_frame};
use lloom_core::{
    DigestedRequest, ErrorCode, FinishReason, PeerId, SignedRequest, SignedResponse, VerifyPolicy,
    WireLimits, WireMessage, unix_now,
};
use tokio::sync::mpsc;

use crate::chat::ChatEvent;
use crate::chat_cost::OpenCheckpoint;
use crate::directory::Candidate;
use crate::stream_pool::StreamPool;
use crate::wait_text::wait_text;

/// Why an attempt failed; decides failover and penalties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptFailure {
    /// No connection or stream could be opened.
    Unreachable(String),
    /// The executor answered with a signed error.
    Refused {
        /// The error code.
        code: ErrorCode,
        /// The executor's message.
        message: String,
        /// When it suggests coming back (zero: no suggestion).
        retry_after: Duration,
    },
    /// Something the executor sent failed a check (named in the message).
    Verification(String),
    /// The stream broke or stalled before the final response.
    Broken(String),
}

impl AttemptFailure {
    /// Whether another executor (or a later try) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refused { code, .. } => code.is_retryable() || *code == ErrorCode::PriceTooLow,
            _ => true,
        }
    }
}

impl std::fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "unreachable: {e}"),
            Self::Refused { code, message, retry_after } => {
                write!(f, "refused ({code:?}): {message}")?;
                if !retry_after.is_zero() {
                    write!(f, " (retry after {})", wait_text(*retry_after))?;
                }
                Ok(())
            }
            Self::Verification(e) => write!(f, "verification failed: {e}"),
            Self::Broken(e) => write!(f, "stream broke: {e}"),
        }
    }
}

/// A verified answer from one attempt.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub(crate) text: String,
    pub(crate) response: SignedResponse,
    pub(crate) ttft: Duration,
    pub(crate) elapsed: Duration,
}

/// A failed attempt: why, whether text reached the user, and the last verified checkpoint.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) failure: AttemptFailure,
    pub(crate) streamed: bool,
    pub(crate) checkpoint: Option<SignedResponse>,
}

/// Limits of one attempt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttemptLimits {
    /// Longest wait for any frame (first token included).
    pub(crate) idle: Duration,
    /// Longest wait for a connection.
    pub(crate) connect: Duration,
    /// The request's deadline.
    pub(crate) deadline: Instant,
}

/// How attempts reach executors: the network and the idle streams.
pub(crate) struct Links<'a> {
    pub(crate) network: &'a NetworkHandle,
    pub(crate) streams: &'a StreamPool,
}

/// Sends `request` to `executor` and reads the verified answer, passing its text on to
/// `events` as it arrives and each verified checkpoint to `open` (which keeps the latest if
/// the attempt is dropped mid-stream).
/// A stream whose exchange ended cleanly (a verified response or signed error) goes back to
/// the pool for the next request.
pub(crate) async fn run(
    links: &Links<'_>,
    executor: &Candidate,
    request: &DigestedRequest,
    policy: &VerifyPolicy,
    limits: AttemptLimits,
    events: &mpsc::Sender<crate::Result<ChatEvent>>,
    open: &mut OpenCheckpoint<'_>,
) -> Result<Answer, Failed> {
    let started = Instant::now();
    let fail = |failure, streamed, checkpoint| Failed { failure, streamed, checkpoint };
    let wire = policy.limits;
    let (mut stream, mut first) = start(links, executor, request.request(), &wire, limits)
        .await
        .map_err(|e| fail(AttemptFailure::Unreachable(e), false, None))?;
    let peer: PeerId = executor.peer;
    let digest = request.digest();
    let mut text = String::new();
    let mut next_index = 0u32;
    let mut ttft = None;
    let mut checkpoint: Option<SignedResponse> = None;
    loop {
        let wait = limits.idle.min(limits.deadline.saturating_duration_since(Instant::now()));
        let next = match first.take() {
            Some(frame) => Ok(Ok(Some(frame))),
            None => tokio::time::timeout(wait, read_frame(&mut stream, &wire)).await,
        };
        let frame = match next {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => {
                let failure =
                    AttemptFailure::Broken("stream ended before the final response".into());
                return Err(fail(failure, next_index > 0, checkpoint));
            }
            Ok(Err(e)) if e.is_peer_fault() => {
                return Err(fail(
                    AttemptFailure::Verification(e.to_string()),
                    next_index > 0,
                    checkpoint,
                ));
            }
            Ok(Err(e)) => {
                return Err(fail(
                    AttemptFailure::Broken(e.to_string()),
                    next_index > 0,
                    checkpoint,
                ));
            }
            Err(_) => {
                let failure = AttemptFailure::Broken(format!("no data for {wait:?}"));
                let _ = stream.close().await;
                return Err(fail(failure, next_index > 0, checkpoint));
            }
        };
        let now = unix_now();
        match frame {
            WireMessage::Chunk(chunk) => {
                if chunk.index != next_index {
                    let failure = AttemptFailure::Verification(format!(
                        "chunk {} arrived where chunk {next_index} was expected",
                        chunk.index
                    ));
                    return Err(fail(failure, next_index > 0, checkpoint));
                }
                next_index += 1;
                ttft.get_or_insert_with(|| started.elapsed());
                text.push_str(&chunk.text);
                // A reader that went away does not stop verification of what was paid for.
                let _ = events.send(Ok(ChatEvent::Text(chunk.text))).await;
            }
            WireMessage::Checkpoint(cp) => {
                if let Err(e) = verify_checkpoint(&cp, request, &text, Some(&peer), policy, now) {
                    let failure = AttemptFailure::Verification(format!("checkpoint: {e}"));
                    return Err(fail(failure, next_index > 0, checkpoint));
                }
                open.record(request.request(), &cp);
                checkpoint = Some(cp);
            }
            WireMessage::Response(response) => {
                if let Err(e) = verify_response(&response, request, &text, Some(&peer), policy, now)
                {
                    let failure = AttemptFailure::Verification(format!("final response: {e}"));
                    return Err(fail(failure, next_index > 0, checkpoint));
                }
                links.streams.put(peer, stream);
                let finish = FinishReason::from_code(response.commitment.finishReason)
                    .unwrap_or(FinishReason::Error);
                tracing::debug!(%digest, finish = finish.as_str(), "verified response");
                return Ok(Answer {
                    text,
                    response,
                    ttft: ttft.unwrap_or_else(|| started.elapsed()),
                    elapsed: started.elapsed(),
                });
            }
            WireMessage::Error(error) => {
                if let Err(e) = verify_error(&error, &digest, Some(&peer), policy, now) {
                    let failure = AttemptFailure::Verification(format!("error notice: {e}"));
                    return Err(fail(failure, next_index > 0, checkpoint));
                }
                links.streams.put(peer, stream);
                let c = error.commitment;
                let failure = AttemptFailure::Refused {
                    code: ErrorCode::from_code(c.code),
                    message: c.message,
                    retry_after: Duration::from_millis(c.retryAfterMillis),
                };
                return Err(fail(failure, next_index > 0, checkpoint));
            }
            WireMessage::Request(_) => {
                let failure = AttemptFailure::Verification("executor sent a request".into());
                return Err(fail(failure, next_index > 0, checkpoint));
            }
        }
    }
}

/// Sends the request on an idle stream to the executor, or a new one, and reads the first
/// frame. A stream the executor closed before reading the request is retried; a request the
/// executor did read is never sent twice by this path (a replay would be refused anyway):
/// - an idle stream closed while it waited (its connection went, or the executor closed it as
///   idle) is retried at once on a new stream, after dropping the executor's other idle ones;
/// - a new stream the executor dropped unread (its node accepts streams through a one-slot
///   queue and drops what does not fit, under load, and closes streams beyond its limit) is
///   retried with backoff, at most [`START_TRIES`] times in all.
async fn start(
    links: &Links<'_>,
    executor: &Candidate,
    request: &SignedRequest,
    wire: &WireLimits,
    limits: AttemptLimits,
) -> Result<(lloom_core::network::Stream, Option<WireMessage>), String> {
    let mut last = String::new();
    let mut tries = 0;
    // After one idle stream turned out closed, only new streams are used: the loop stays
    // bounded by `START_TRIES` whatever other requests put back into the pool meanwhile.
    let mut reuse = true;
    while tries < START_TRIES {
        let idle = if reuse { links.streams.take(&executor.peer) } else { None };
        let reused = idle.is_some();
        let mut stream = match idle {
            Some(stream) => stream,
            None => {
                if tries > 0 {
                    let pause = backoff(tries);
                    if Instant::now() + pause >= limits.deadline {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
                tries += 1;
                open(links, executor, limits).await?
            }
        };
        let unread =
            match write_frame(&mut stream, &WireMessage::Request(request.clone()), wire).await {
                Err(e) => e.to_string(),
                Ok(()) => {
                    let wait =
                        limits.idle.min(limits.deadline.saturating_duration_since(Instant::now()));
                    match tokio::time::timeout(wait, read_frame(&mut stream, wire)).await {
                        Ok(Ok(Some(frame))) => return Ok((stream, Some(frame))),
                        // Reset or closed before a single frame: the request was dropped unread.
                        Ok(Ok(None)) => "stream closed before any answer".into(),
                        Ok(Err(e)) if matches!(e, lloom_core::Error::Io(_)) => e.to_string(),
                        // Anything else is for the caller to judge (a timeout, a malformed frame).
                        Ok(Err(_)) | Err(_) => return Ok((stream, None)),
                    }
                }
            };
        if reused {
            links.streams.forget(&executor.peer);
            reuse = false;
        }
        last = unread;
    }
    Err(last)
}

/// Exponential backoff with jitter before try `tries` (≥ 1), so a burst of dropped streams
/// spreads out.
fn backoff(tries: u32) -> Duration {
    let base = Duration::from_millis(2u64 << tries.min(7)).min(START_MAX_BACKOFF);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let jitter = nanos % u64::try_from(base.as_micros()).unwrap_or(1).max(1);
    base + Duration::from_micros(jitter)
}

/// Tries at starting an exchange with one executor.
const START_TRIES: u32 = 8;
/// Longest pause between two tries.
const START_MAX_BACKOFF: Duration = Duration::from_millis(200);

/// Longest wait for one try at opening a stream on an established connection.
const OPEN_TRY: Duration = Duration::from_secs(3);

/// Dials the executor's announced addresses and waits until a connection is established, or
/// until every address failed (a dead executor ends the attempt at once, not at the timeout).
/// Concurrent requests to a new executor share one dial and so one connection (extra ones
/// would get closed, taking streams with them); a slow dial holds up only requests to the same
/// executor.
async fn connect(
    network: &NetworkHandle,
    executor: &Candidate,
    wait: Duration,
) -> Result<(), String> {
    // Open streams only on an established connection: a stream requested while a connection
    // is still being set up can be lost by the stream behaviour.
    let dial = network.connect(executor.peer, executor.addrs.clone());
    match tokio::time::timeout(wait, dial).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(peer = %executor.peer, "{e}");
            Err(e.to_string())
        }
        Err(_) => Err(format!("no connection within {wait:?}")),
    }
}

/// Connects to the executor if needed and opens a request stream.
async fn open(
    links: &Links<'_>,
    executor: &Candidate,
    limits: AttemptLimits,
) -> Result<lloom_core::network::Stream, String> {
    let network = links.network;
    let wait = limits.idle.min(limits.deadline.saturating_duration_since(Instant::now()));
    let until = Instant::now() + wait;
    if !network.is_connected(&executor.peer) {
        connect(network, executor, wait.min(limits.connect)).await?;
    }
    // Each try is bounded; a lost stream request is retried on the same connection.
    let mut last = format!("no connection within {wait:?}");
    for _ in 0..3 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left.min(OPEN_TRY), network.open_request_stream(executor.peer))
            .await
        {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no stream within {:?}", left.min(OPEN_TRY)),
        }
    }
    Err(last)
}
