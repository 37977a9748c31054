//! Serving requests from the network.
//!
//! [`Server`] accepts request streams (`/lloom/request/3`), each carrying one exchange after
//! another, applies every verification rule of lloom-core to each signed request, admits it
//! past the per-client rate limits, the receipt store (not answered before) and the nonce
//! store, runs it on the backend of the requested model, and streams the answer: text chunks
//! as they are generated, a signed checkpoint every [`ServeConfig::checkpoint_every`] tokens,
//! and a final signed response, which is stored in the [`ReceiptStore`] before it is sent.
//! Every refusal is a signed error naming the rule.
//!
//! Everything a peer can make the server hold is bounded: open streams, idle ones included
//! ([`ServeConfig::max_streams`]), the time to send the request and to take each chunk, frame
//! sizes (the wire limits), the backend queue (a full one answers a signed Busy), and the
//! per-client rate-limiter state.

mod answer_time;
mod escrow;
mod nonces;
mod outbox;
mod receipts;
mod session;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lloom_core::network::NetworkHandle;
use lloom_core::{ErrorCode, ExecutorLoad, ModelOffer, NodeKey, ReplayStore, VerifyPolicy};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

pub use escrow::{EscrowPolicy, EscrowShortfall};
pub use lloom_core::rate_limit::{RateLimiter, RateLimits};
pub use receipts::{Receipt, ReceiptStore};

use lloom_core::group_commit::{CommitDelay, GroupCommit};
use nonces::{MAX_GROUP, NonceGate};

use crate::backend::Backend;
use crate::error::{Error, Result};

/// How the server treats requests.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The verification policy (domain, clock skew, deadline horizon, wire limits).
    pub policy: VerifyPolicy,
    /// A signed checkpoint every this many output tokens; 0 disables checkpoints.
    pub checkpoint_every: u64,
    /// Time a peer has to send its request after opening a stream, and its next request after
    /// an answer (a stream idle for longer is closed).
    pub request_timeout: Duration,
    /// Time a peer has to take each frame we send (a reader that stalls is cut off).
    pub write_timeout: Duration,
    /// Most request streams open at once, idle ones included; a new stream beyond it is closed
    /// at once, and the idle ones are closed to make room for its retry.
    pub max_streams: usize,
    /// Per-client limits.
    pub rate_limits: RateLimits,
    /// The least `retryAfterMillis` of a signed Busy answer; it is otherwise about the time
    /// between two of the model's answers here (1 s before any was timed), at most 60 s.
    pub busy_retry_after: Duration,
    /// A minimum escrow clients must hold on the settlement contract (`None`: no check).
    pub escrow: Option<Arc<EscrowPolicy>>,
    /// Most time between disk syncs of the nonce store. Requests already answered are refused
    /// from the (always synced) receipt store, so a crash can only forget nonces of requests
    /// that never completed.
    pub nonce_sync_interval: Duration,
    /// How long a store's writer, finding other writes already waiting behind the first,
    /// waits for more before its durable commit (like PostgreSQL's `commit_delay`): a busy
    /// executor syncs less often and each sync carries more receipts. A receipt that reaches
    /// the writer alone waits too while at least
    /// [`COMMIT_SIBLINGS`](lloom_core::group_commit::COMMIT_SIBLINGS) other requests are being
    /// served (PostgreSQL's `commit_siblings`); on an idle executor it never waits. At most
    /// [`MAX_COMMIT_DELAY`].
    pub commit_delay: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            policy: VerifyPolicy::default(),
            checkpoint_every: 32,
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_streams: 1024,
            rate_limits: RateLimits::default(),
            busy_retry_after: Duration::from_millis(100),
            escrow: None,
            nonce_sync_interval: Duration::from_secs(1),
            commit_delay: Duration::from_millis(1),
        }
    }
}

/// A model this executor serves: what it announces and the backend that runs it.
#[derive(Clone)]
pub struct ServedModel {
    /// The announced offer (name, context length, prices, weights hash).
    pub offer: ModelOffer,
    /// The backend that generates for it.
    pub backend: Arc<dyn Backend>,
}

impl ServedModel {
    /// The context length a request gets now: the backend's where it can change while serving
    /// ([`Backend::context_length`]), else the offer's.
    pub fn context_length(&self) -> u32 {
        self.backend.context_length().unwrap_or(self.offer.context_length)
    }

    /// The offer as announced now: with the context the backend gives a request now.
    pub fn current_offer(&self) -> ModelOffer {
        ModelOffer { context_length: self.context_length(), ..self.offer.clone() }
    }

    /// Whether the model is offered now: its backend can serve ([`Backend::health`]).
    pub fn is_offered(&self) -> bool {
        self.backend.health().is_ok()
    }
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel").field("offer", &self.offer).finish_non_exhaustive()
    }
}

/// Counters of what the server did, for metrics and tests.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Requests answered with a final signed response.
    pub completed: AtomicU64,
    /// Requests refused with a signed error (any code).
    pub refused: AtomicU64,
    /// The same refusals, by code.
    pub refusals: RefusalCounts,
    /// Requests refused as Busy (also counted in `refused`).
    pub busy: AtomicU64,
    /// Answers refused because the backend's text was not the JSON the request asked for
    /// (also counted in `refused`).
    pub off_format: AtomicU64,
    /// Answers whose backend counted more prompt tokens than the request's `maxInputTokens`
    /// (a server behind the HTTP backend with a longer context than announced): billed at
    /// the limit the client signed.
    pub prompts_over_limit: AtomicU64,
    /// Streams that ended without a request, with an undecodable one, or cut by the peer.
    pub dropped_streams: AtomicU64,
    /// Request streams accepted (each carries one exchange or more).
    pub streams_opened: AtomicU64,
    /// Idle streams closed to make room for a new one (see [`ServeConfig::max_streams`]).
    pub idle_streams_reclaimed: AtomicU64,
    /// Requests being served now.
    pub in_flight: AtomicU64,
}

/// Signed refusals counted by their code.
#[derive(Debug, Default)]
pub struct RefusalCounts {
    /// One counter per [`ErrorCode::KNOWN`] code, in its order, then one for any other.
    counts: [AtomicU64; ErrorCode::KNOWN.len() + 1],
}

impl RefusalCounts {
    /// The counter of `code`.
    fn slot(&self, code: ErrorCode) -> Option<&AtomicU64> {
        let index = ErrorCode::KNOWN.iter().position(|known| *known == code);
        self.counts.get(index.unwrap_or(ErrorCode::KNOWN.len()))
    }

    /// Counts one refusal with `code`.
    pub fn count(&self, code: ErrorCode) {
        if let Some(counter) = self.slot(code) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals with `code` so far (every unknown code shares one count).
    pub fn get(&self, code: ErrorCode) -> u64 {
        self.slot(code).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// A receipt to store, and whether it was stored.
pub(crate) type ReceiptWriter = GroupCommit<Receipt, std::result::Result<(), String>>;

/// Shortest period of the background nonce write (a zero interval syncs every write instead).
const MIN_SYNC_TICK: Duration = Duration::from_millis(10);
/// Longest accepted `nonce_sync_interval`: it bounds what a crash can forget, whatever the
/// configuration says (the memory held between writes is bounded by
/// [`lloom_core::replay::MAX_HELD`] in any case).
pub const MAX_NONCE_SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// How often [`Server::wait_idle`] looks at the requests in flight.
const IDLE_CHECK: Duration = Duration::from_millis(20);

/// Longest accepted `commit_delay`: every answer under load waits up to this long for its
/// receipt's commit.
pub const MAX_COMMIT_DELAY: Duration = Duration::from_millis(100);

pub(crate) struct Shared {
    pub(crate) key: NodeKey,
    pub(crate) config: ServeConfig,
    pub(crate) models: BTreeMap<String, ServedModel>,
    /// How long each model's answers take (for the retry-after of a Busy answer).
    pub(crate) answer_times: BTreeMap<String, answer_time::AnswerTime>,
    pub(crate) nonces: NonceGate,
    pub(crate) replay: Arc<ReplayStore>,
    pub(crate) receipt_writer: ReceiptWriter,
    pub(crate) receipts: Arc<ReceiptStore>,
    pub(crate) limiter: Mutex<RateLimiter>,
    pub(crate) stats: Arc<ServeStats>,
    /// Wakes every stream waiting for a request so the idle ones close: a new stream found no
    /// free slot, and idle ones (held by clients for their next request, or opened and left
    /// silent for a second) make room for it.
    pub(crate) reclaim_idle: Notify,
    /// Set when the executor is shutting down: requests in flight go on, new ones are refused
    /// with a signed Busy (see [`Server::start_draining`]).
    pub(crate) draining: AtomicBool,
}

/// The request server of an executor. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("executor", &self.shared.key.address())
            .field("models", &self.shared.models.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ServeConfig {
    /// Refuses settings out of their range, naming the setting.
    pub fn validate(&self) -> Result<()> {
        if self.nonce_sync_interval > MAX_NONCE_SYNC_INTERVAL {
            return Err(Error::ServeConfig(format!(
                "nonce_sync_ms {} is above the most allowed, {}",
                self.nonce_sync_interval.as_millis(),
                MAX_NONCE_SYNC_INTERVAL.as_millis()
            )));
        }
        if self.commit_delay > MAX_COMMIT_DELAY {
            return Err(Error::ServeConfig(format!(
                "commit_delay_us {} is above the most allowed, {}",
                self.commit_delay.as_micros(),
                MAX_COMMIT_DELAY.as_micros()
            )));
        }
        Ok(())
    }
}

impl Server {
    /// A server that signs with `key` and serves `models`; it starts one writer thread per
    /// store (group commit).
    pub fn new(
        key: NodeKey,
        config: ServeConfig,
        models: Vec<ServedModel>,
        replay: ReplayStore,
        receipts: ReceiptStore,
    ) -> Result<Self> {
        config.validate()?;
        let limiter = Mutex::new(RateLimiter::new(config.rate_limits));
        let models: BTreeMap<String, ServedModel> =
            models.into_iter().map(|m| (m.offer.model.clone(), m)).collect();
        let capacity = config.max_streams.max(1);
        let replay = Arc::new(replay.with_sync_interval(config.nonce_sync_interval));
        let deferred = !config.nonce_sync_interval.is_zero();
        let delay = config.commit_delay;
        let nonces = NonceGate::new(replay.clone(), deferred, capacity, delay)?;
        let receipts = Arc::new(receipts);
        let store = receipts.clone();
        let stats = Arc::new(ServeStats::default());
        let counted = stats.clone();
        // Every request being served ends in a receipt (or a refusal): while enough are under
        // way, a receipt that reaches the writer alone waits for theirs.
        let receipt_delay = CommitDelay::new(delay).with_siblings(move || {
            usize::try_from(counted.in_flight.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
        });
        let receipt_writer = GroupCommit::spawn(
            "lloom-receipts",
            capacity,
            MAX_GROUP,
            receipt_delay,
            move |ops: Vec<Receipt>| {
                let outcome = store.put_batch(&ops).map_err(|e| e.to_string());
                ops.iter().map(|_| outcome.clone()).collect()
            },
        )?;
        let answer_times =
            models.keys().map(|m: &String| (m.clone(), Default::default())).collect();
        let shared = Shared {
            key,
            config,
            models,
            answer_times,
            nonces,
            replay,
            receipt_writer,
            receipts,
            limiter,
            stats,
            reclaim_idle: Notify::new(),
            draining: AtomicBool::new(false),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Starts accepting request streams on `network`; the task ends when the network stops.
    pub fn spawn(&self, network: &NetworkHandle) -> Result<JoinHandle<()>> {
        let mut incoming = network.accept_request_streams()?;
        let server = self.clone();
        let slots = Arc::new(Semaphore::new(self.shared.config.max_streams));
        let every = self.shared.config.nonce_sync_interval.max(MIN_SYNC_TICK);
        let deferred = !self.shared.config.nonce_sync_interval.is_zero();
        let mut sync_due = tokio::time::interval(every);
        sync_due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = incoming.next() => next,
                    _ = sync_due.tick(), if deferred => {
                        server.sync_nonces_in_background();
                        continue;
                    }
                };
                let Some((peer, stream)) = next else { break };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    // The client retries the stream; idle ones close to make room for it.
                    server.shared.stats.dropped_streams.fetch_add(1, Ordering::Relaxed);
                    server.shared.reclaim_idle.notify_waiters();
                    tracing::debug!(%peer, "too many request streams; closing a new one");
                    continue;
                };
                let shared = server.shared.clone();
                tokio::spawn(async move {
                    session::serve(&shared, peer, stream).await;
                    drop(permit);
                });
            }
        }))
    }

    /// Writes the nonces held since the last write to disk, off the request path (a store
    /// holding none does nothing).
    fn sync_nonces_in_background(&self) {
        let replay = self.shared.replay.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = replay.sync() {
                tracing::warn!("cannot sync the nonce store: {e}");
            }
        });
    }

    /// Serves one request stream from `peer` to its end, one exchange after another (what
    /// [`Server::spawn`] does per stream); public so benchmarks and tests can drive it over any
    /// byte stream.
    pub async fn serve_stream<S>(&self, peer: lloom_core::PeerId, stream: S)
    where
        S: futures::AsyncRead + futures::AsyncWrite + Unpin,
    {
        session::serve(&self.shared, peer, stream).await;
    }

    /// Stops taking new work, for a graceful shutdown: requests already being served go on to
    /// their signed final response (and receipt), while every new request, on a new stream or
    /// one already open, is refused with a signed Busy saying the executor is shutting down,
    /// so its client fails over at once; nothing is offered any more. It cannot be undone.
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`Server::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Requests being served now (admitted, or being checked or refused), not counting those
    /// refused because the server is draining.
    pub fn in_flight(&self) -> u64 {
        self.shared.stats.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no request is being served, checking every 20 ms, for at most `within`;
    /// returns how many still were when it gave up (0: all finished).
    pub async fn wait_idle(&self, within: Duration) -> u64 {
        let give_up = tokio::time::Instant::now() + within;
        loop {
            let left = self.in_flight();
            if left == 0 || tokio::time::Instant::now() >= give_up {
                return left;
            }
            tokio::time::sleep_until(give_up.min(tokio::time::Instant::now() + IDLE_CHECK)).await;
        }
    }

    /// Writes the nonces held in memory to disk now (at shutdown: a restart then refuses
    /// every nonce seen, not only the answered ones). Blocking.
    pub fn sync_nonces(&self) -> Result<()> {
        Ok(self.shared.replay.sync()?)
    }

    /// The offers to announce: the models whose backend can serve now, each with the context
    /// it gives a request now; none while draining.
    pub fn offers(&self) -> Vec<ModelOffer> {
        if self.is_draining() {
            return Vec::new();
        }
        let offered = self.shared.models.values().filter(|m| m.is_offered());
        offered.map(ServedModel::current_offer).collect()
    }

    /// Every model served, offered now or not (a backend that is down), with its context now.
    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.shared.models.values()
    }

    /// Current load, for announcements.
    pub fn load(&self, max_concurrency: u32, free_memory_bytes: u64) -> ExecutorLoad {
        let in_flight =
            u32::try_from(self.shared.stats.in_flight.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
        ExecutorLoad {
            queue_depth: in_flight.saturating_sub(max_concurrency),
            free_slots: max_concurrency.saturating_sub(in_flight),
            max_concurrency,
            free_memory_bytes,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &ServeStats {
        &self.shared.stats
    }

    /// The receipt store.
    pub fn receipts(&self) -> &ReceiptStore {
        &self.shared.receipts
    }
}
