//! The client: a network presence, a verified directory, a router, and `chat`.
//!
//! ```no_run
//! # async fn example() -> lloom_client::Result<()> {
//! use lloom_client::{ChatEvent, ChatRequest, Client, ClientConfig};
//! let key = lloom_core::NodeKey::generate();
//! let bootstrap = "/ip4/127.0.0.1/tcp/4001/p2p/16Uiu2HAm...".parse().unwrap();
//! let client = Client::connect(key, ClientConfig::default().bootstrap(vec![bootstrap])).await?;
//! let mut answer = client.chat(ChatRequest::user("SmolLM2-135M-Instruct", "Hi!")).await?;
//! while let Some(event) = answer.next().await {
//!     match event? {
//!         ChatEvent::Text(text) => print!("{text}"),
//!         ChatEvent::Done(receipt) => println!("\ncost: {} wei", receipt.cost),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lloom_core::group_commit::{CommitDelay, GroupCommit};
use lloom_core::network::{NetworkConfig, NetworkEvent, NetworkHandle, peer_id_of, start};
use lloom_core::wire::request_hash;
use lloom_core::{
    Address, DigestedRequest, NodeKey, PeerId, RequestBody, RequestCommitment, SignedRequest,
    SignedResponse, unix_now,
};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

pub use crate::chat::{
    AttemptReport, ChatEvent, ChatRequest, ChatStream, FORMAT_CHECK, RESPONSE_CHECKS, Receipt,
    response_checks,
};
use crate::chat_cost::{ChatCost, KeepCheckpoint};
pub use crate::config::ClientConfig;
use crate::directory::{Candidate, DhtFinds, Directory, ModelRow};
use crate::error::{Error, Result};
use crate::nonce::NonceSource;
use crate::receipts::{ReceiptStore, StoredReceipt};
use crate::routing::Router;
use crate::stream_pool::StreamPool;

mod density;
mod failover;
mod learned_density;
mod offered;
mod remembered;
mod room;

/// Longest wait for a DHT lookup of a model no registry knows.
const DHT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

struct Inner {
    key: NodeKey,
    config: ClientConfig,
    network: NetworkHandle,
    validators: Vec<PeerId>,
    directory: Mutex<(Directory, Option<Instant>)>,
    /// Executors found through the DHT, carried into each refreshed directory.
    dht_finds: Mutex<DhtFinds>,
    /// The executors remembered from earlier runs, and when they were last kept.
    remembered: remembered::RememberedExecutors,
    /// When each model was last seen on offer.
    offered: offered::RecentlyOffered,
    router: Mutex<Router>,
    nonces: NonceSource,
    /// Request streams kept open between exchanges, by executor.
    streams: StreamPool,
    /// Stores verified receipts, concurrent answers in shared transactions (when
    /// [`ClientConfig::receipts`] is set).
    receipt_writer: Option<ReceiptWriter>,
    /// Chats under way: while enough are, a receipt reaching the writer alone waits for
    /// theirs (see [`CommitDelay::with_siblings`]).
    chats_in_flight: Arc<AtomicUsize>,
    /// How densely each model's prompts were counted in its recent verified answers.
    prompt_density: Arc<learned_density::LearnedDensity>,
    network_task: JoinHandle<()>,
}

/// The checkpoint of a chat dropped mid-stream goes into the receipt store.
impl KeepCheckpoint for Client {
    fn keep_later(&self, request: SignedRequest, checkpoint: SignedResponse) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        tracing::info!(
            tokens = checkpoint.commitment.outputTokens,
            "kept the last verified checkpoint of a cancelled chat"
        );
        let client = self.clone();
        runtime.spawn(async move { client.keep(&request, &checkpoint, None).await });
    }
}

/// A verified receipt to store, and whether it was stored.
type ReceiptWriter = GroupCommit<StoredReceipt, std::result::Result<(), String>>;

/// Most receipts written in one transaction.
const MAX_RECEIPT_GROUP: usize = 256;
/// How long the receipt writer waits for more receipts while other chats are under way.
const RECEIPT_COMMIT_DELAY: Duration = Duration::from_millis(1);

/// Counts a chat as under way until it is dropped (also when its task is cancelled).
struct UnderWay(Arc<AtomicUsize>);

impl UnderWay {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connected client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("address", &self.inner.key.address()).finish_non_exhaustive()
    }
}

impl Client {
    /// Starts the network, waits for the validators and fetches the directory.
    pub async fn connect(key: NodeKey, config: ClientConfig) -> Result<Self> {
        let mut bootstrap = HashSet::new();
        for addr in &config.bootstrap {
            bootstrap.insert(
                peer_id_of(addr).ok_or_else(|| Error::BootstrapWithoutPeerId(addr.to_string()))?,
            );
        }
        let listen = match (&config.listen, config.mdns) {
            (Some(listen), _) => listen.clone(),
            (None, true) => vec![
                "/ip4/0.0.0.0/tcp/0"
                    .parse()
                    .map_err(|_| Error::State("bad listen address".into()))?,
            ],
            (None, false) => Vec::new(),
        };
        let network_config = NetworkConfig {
            listen_addrs: listen,
            bootstrap: config.bootstrap.clone(),
            enable_mdns: config.mdns,
            // A client only dials out; it needs no relayed address of its own.
            relay: lloom_core::network::RelayMode::Never,
            // Nor does it advertise its listen addresses: what peers observe of it stays a
            // candidate, which DCUtR offers executors behind NAT to connect back to (libp2p's
            // DCUtR ignores addresses already confirmed as external).
            advertise_listen_addrs: false,
            ..NetworkConfig::default()
        };
        let (network, mut events, event_loop) = start(&key, network_config, config.policy).await?;
        let network_task = tokio::spawn(event_loop.run());
        let deadline = tokio::time::Instant::now() + config.discovery_timeout;
        let remembered = remembered::RememberedExecutors::new(&config);
        let mut validators = Vec::new();
        // Bootstrap validators whose dial failed (and that have not connected since): the
        // wait ends once each has connected or failed, with at least one connected, or with
        // none when executors are remembered (they are used at once, not after the timeout).
        let mut refused = HashSet::new();
        while validators.len() < bootstrap.len().max(1) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(NetworkEvent::PeerConnected(peer)))
                    if bootstrap.is_empty() || bootstrap.contains(&peer) =>
                {
                    refused.remove(&peer);
                    validators.push(peer);
                }
                Ok(Some(NetworkEvent::DialFailed { peer, error }))
                    if bootstrap.contains(&peer) && !validators.contains(&peer) =>
                {
                    tracing::debug!(%peer, "bootstrap validator unreachable: {error}");
                    refused.insert(peer);
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
            if validators.len() + refused.len() == bootstrap.len()
                && (!validators.is_empty() || !remembered.read().await.executors.is_empty())
            {
                break;
            }
        }
        if !refused.is_empty() && !validators.is_empty() {
            tracing::warn!(
                "{} of {} bootstrap validators unreachable; going on with the others",
                refused.len(),
                bootstrap.len()
            );
        }
        // Later events are not needed; keep the channel drained so the network never waits.
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        if validators.is_empty() {
            if remembered.read().await.executors.is_empty() {
                network_task.abort();
                return Err(Error::NoValidator(config.discovery_timeout));
            }
            // The executors remembered from earlier runs are used meanwhile; the bootstrap
            // validators are asked again at each refresh, in case they come back.
            validators = bootstrap.iter().copied().collect();
        }
        let nonces = match &config.nonce_file {
            Some(file) => NonceSource::persistent(file.clone())?,
            None => NonceSource::in_memory(),
        };
        let chats_in_flight = Arc::new(AtomicUsize::new(0));
        let receipt_writer = match &config.receipts {
            Some(store) => Some(receipt_writer(store.clone(), chats_in_flight.clone())?),
            None => None,
        };
        let inner = Inner {
            receipt_writer,
            chats_in_flight,
            prompt_density: learned_density::LearnedDensity::open(
                config.prompt_density_file.clone(),
            ),
            router: Mutex::new(Router::new(config.strategy)),
            key,
            config,
            network,
            validators,
            directory: Mutex::new((Directory::default(), None)),
            dht_finds: Mutex::new(DhtFinds::default()),
            remembered,
            offered: offered::RecentlyOffered::default(),
            nonces,
            streams: StreamPool::default(),
            network_task,
        };
        let client = Self { inner: Arc::new(inner) };
        if let Err(e) = client.refresh().await
            && client.use_remembered(&e).await == 0
        {
            client.inner.network_task.abort();
            return Err(e);
        }
        Ok(client)
    }

    /// The client's address (the signer of its requests).
    pub fn address(&self) -> Address {
        self.inner.key.address()
    }

    /// The network handle.
    pub fn network(&self) -> &NetworkHandle {
        &self.inner.network
    }

    /// Fetches every validator's registry again; returns how many executors are known.
    ///
    /// Executors found through the DHT that no validator lists stay in the directory until
    /// their announcement ages out.
    pub async fn refresh(&self) -> Result<usize> {
        let inner = &self.inner;
        if inner.validators.is_empty() {
            return Err(Error::NoValidator(inner.config.discovery_timeout));
        }
        let mut fresh = Directory::default();
        let mut last_error = None;
        for validator in &inner.validators {
            let fetch = fresh.fetch_from(
                &inner.network,
                *validator,
                &inner.config.policy,
                inner.config.max_announcement_age_secs,
            );
            if let Err(e) = fetch.await {
                last_error = Some(e);
            }
        }
        if let Some(e) = last_error
            && fresh.is_empty()
        {
            return Err(e);
        }
        inner.dht_finds.lock().await.carry_into(
            &mut fresh,
            &inner.config.policy,
            inner.config.max_announcement_age_secs,
        );
        self.keep_known(&fresh).await;
        inner.offered.note(&fresh, Instant::now());
        let count = fresh.len();
        *inner.directory.lock().await = (fresh, Some(Instant::now()));
        Ok(count)
    }

    /// [`Error::NoExecutor`] for `model`, with the models on offer (`models`) and how long ago
    /// `model` was last on offer, if this client saw it in the last day (in this run, else
    /// among the executors remembered from an earlier one).
    pub(crate) async fn no_executor(&self, model: &str, models: Vec<ModelRow>) -> Error {
        let last_offered = match self.inner.offered.last_seen(model, Instant::now()) {
            Some(age) => Some(age),
            None => self.remembered_offer_age(model).await,
        };
        Error::NoExecutor {
            model: model.to_owned(),
            available: models.into_iter().map(|m| m.model).collect(),
            last_offered_secs: last_offered.map(|age| age.as_secs()),
        }
    }

    /// Whether the directory fetched so far lists an executor serving `model`.
    pub async fn offers(&self, model: &str) -> bool {
        !self.inner.directory.lock().await.0.candidates(model).is_empty()
    }

    /// Takes the directory fetched so far (the client fetches a fresh one when next needed).
    pub async fn take_directory(&self) -> Directory {
        std::mem::take(&mut *self.inner.directory.lock().await).0
    }

    /// The models on offer (from the directory, refreshed when stale).
    pub async fn models(&self) -> Result<Vec<ModelRow>> {
        self.refresh_if_stale().await?;
        Ok(self.inner.directory.lock().await.0.models())
    }

    /// Refreshes a directory older than the TTL. When no validator answers, the last verified
    /// directory stays in use (executors are reached directly, not through validators).
    async fn refresh_if_stale(&self) -> Result<()> {
        let (known, fetched) = {
            let directory = self.inner.directory.lock().await;
            (directory.0.len(), directory.1)
        };
        if fetched.is_none_or(|t| t.elapsed() > self.inner.config.directory_ttl)
            && let Err(e) = self.refresh().await
        {
            if known == 0 {
                if self.use_remembered(&e).await == 0 {
                    return Err(e);
                }
                return Ok(());
            }
            tracing::warn!(
                "no validator gave a fresh directory ({e}); using the {known} executors known"
            );
            self.inner.directory.lock().await.1 = Some(Instant::now());
        }
        Ok(())
    }

    /// Finds executors of `model` through the DHT (provider records, then each provider's
    /// signed announcement) and adds them to the directory; returns how many were added.
    pub async fn discover_via_dht(&self, model: &str) -> Result<usize> {
        let inner = &self.inner;
        let mut found = Directory::default();
        let lookup = found
            .fetch_from_dht(
                &inner.network,
                model,
                &inner.config.policy,
                inner.config.max_announcement_age_secs,
            )
            .await?;
        let found = found.into_executors();
        {
            let mut finds = inner.dht_finds.lock().await;
            for executor in &lookup.withdrawn {
                finds.forget(executor);
            }
            for (peer, announcement) in found.values() {
                finds.remember(*peer, announcement.clone());
            }
        }
        let mut directory = inner.directory.lock().await;
        for (_, (peer, announcement)) in found {
            let info = lloom_core::registry_query::ExecutorInfo {
                announcement,
                peer_id: peer.to_string(),
                last_seen: lloom_core::unix_now(),
            };
            directory.0.ingest(info, &inner.config.policy, inner.config.max_announcement_age_secs);
        }
        Ok(lookup.added)
    }

    /// Executors the client has measured or penalised, for `--verbose` and metrics.
    pub async fn executor_stats(&self) -> Vec<(Address, crate::routing::ExecutorStats)> {
        self.inner.router.lock().await.all_stats().map(|(a, s)| (*a, s.clone())).collect()
    }

    /// Sends `request` to the best executor and streams its verified answer, failing over to
    /// the next candidate when one is unreachable, busy, failing or caught lying.
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatStream> {
        if request.max_tokens == 0 {
            return Err(Error::InvalidRequest("max_tokens must be at least 1".into()));
        }
        let body =
            RequestBody { messages: request.messages.clone(), sampling: request.sampling.clone() };
        body.validate(&self.inner.config.policy.limits)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        self.refresh_if_stale().await?;
        let mut candidates = self.inner.directory.lock().await.0.candidates(&request.model);
        if candidates.is_empty() {
            // No registry knows the model: look for its providers in the DHT.
            let lookup = self.discover_via_dht(&request.model);
            match tokio::time::timeout(DHT_LOOKUP_TIMEOUT.min(request.timeout), lookup).await {
                Ok(Ok(found)) if found > 0 => {
                    candidates = self.inner.directory.lock().await.0.candidates(&request.model);
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::debug!(%error, "DHT lookup failed"),
                Err(_) => tracing::debug!("DHT lookup timed out"),
            }
        }
        crate::routing::prefer_json_capable(&mut candidates, &request.sampling.format);
        if candidates.is_empty() {
            let models = self.inner.directory.lock().await.0.models();
            return Err(self.no_executor(&request.model, models).await);
        }
        if let Some(refusal) = request.filter.refusal(&request.model, &candidates) {
            return Err(refusal);
        }
        let (tx, rx) = mpsc::channel(64);
        let client = self.clone();
        let cost = Arc::new(ChatCost::default());
        let chat_cost = cost.clone();
        // Boxed: the chat's future is about 8 KiB, and a task copies an unboxed future whole
        // when it is spawned, stored and finished (callgrind: 83,000 instructions a request).
        let task = tokio::spawn(Box::pin(async move {
            let _under_way = UnderWay::enter(&client.inner.chats_in_flight);
            let outcome = client.run_chat(request, body, candidates, &tx, &chat_cost).await;
            match outcome {
                Ok(receipt) => {
                    let _ = tx.send(Ok(ChatEvent::Done(Box::new(receipt)))).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        }));
        Ok(ChatStream::new(rx, task, cost))
    }

    /// Stores a verified receipt (a failure to store is logged: the answer was verified).
    async fn keep(&self, request: &SignedRequest, response: &SignedResponse, text: Option<&str>) {
        let Some(writer) = &self.inner.receipt_writer else { return };
        let receipt = StoredReceipt::now(request.clone(), response.clone(), text);
        match writer.submit(receipt).await {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::warn!("could not store a verified receipt: {e}"),
            None => tracing::warn!("could not store a verified receipt: the writer has stopped"),
        }
    }

    /// Signs a request for `body` to `executor`, for at most `max_output` tokens and all the
    /// rest of its context for the prompt.
    fn sign(
        &self,
        model: &str,
        max_output: u32,
        body: &RequestBody,
        executor: &Candidate,
        deadline: Instant,
    ) -> Result<DigestedRequest> {
        let inner = &self.inner;
        let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
        let max_output = u64::from(max_output);
        let commitment = RequestCommitment {
            client: inner.key.address(),
            executor: executor.address,
            model: model.to_owned(),
            requestHash: request_hash(body),
            maxInputTokens: u64::from(executor.offer.context_length).saturating_sub(max_output),
            maxOutputTokens: max_output,
            pricePerInputToken: executor.offer.price_per_input_token,
            pricePerOutputToken: executor.offer.price_per_output_token,
            nonce: inner.nonces.next()?,
            deadline: unix_now() + left,
        };
        Ok(SignedRequest::sign_digested(
            &inner.key,
            inner.config.policy.domain,
            commitment,
            body.clone(),
        )?)
    }

    /// Leaves the network, and keeps what was learned of prompt densities in
    /// [`ClientConfig::prompt_density_file`], if set (it is also written as they change).
    pub fn shutdown(&self) {
        self.inner.network_task.abort();
        self.inner.prompt_density.save();
    }
}

/// Starts the writer thread of `store`: answers completing together share one transaction,
/// and while `chats_in_flight` says enough others are under way, a lone one waits for theirs.
fn receipt_writer(
    store: Arc<ReceiptStore>,
    chats_in_flight: Arc<AtomicUsize>,
) -> Result<ReceiptWriter> {
    let delay = CommitDelay::new(RECEIPT_COMMIT_DELAY)
        .with_siblings(move || chats_in_flight.load(Ordering::Relaxed));
    let writer = GroupCommit::spawn(
        "lloom-client-receipts",
        MAX_RECEIPT_GROUP * 4,
        MAX_RECEIPT_GROUP,
        delay,
        move |batch: Vec<StoredReceipt>| {
            let outcome = store.put_batch(&batch).map_err(|e| e.to_string());
            batch.iter().map(|_| outcome.clone()).collect()
        },
    )?;
    Ok(writer)
}
