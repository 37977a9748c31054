//! A running executor node: the network, the request server and the announcer, together.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lloom_core::network::{Multiaddr, NetworkConfig, NetworkHandle, start};
use lloom_core::{AnnouncementBody, NodeKey, ReplayStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::announcer::{Announcer, AnnouncerConfig};
use crate::error::Result;
use crate::serve::{ReceiptStore, ServeConfig, ServedModel, Server};

/// Everything an executor node needs to run.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Network settings.
    pub network: NetworkConfig,
    /// Request handling (checkpoints, limits, timeouts, verification policy).
    pub serve: ServeConfig,
    /// Heartbeat and domain of announcements.
    pub announce: AnnouncerConfig,
    /// Where the replay and receipt databases live.
    pub data_dir: PathBuf,
    /// Sequences the backends decode at once (announced as `max_concurrency`).
    pub max_concurrency: u32,
    /// How often the load is re-checked and, when it changed, re-announced.
    pub load_interval: Duration,
    /// Memory free for more models, announced with the load (`None`: 0).
    pub free_memory: Option<FreeMemory>,
}

/// Reads the memory free for more models, in bytes.
#[derive(Clone)]
pub struct FreeMemory(Arc<dyn Fn() -> u64 + Send + Sync>);

impl FreeMemory {
    /// Reads it with `read`.
    pub fn new(read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(read))
    }

    /// The bytes free now.
    pub fn read(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for FreeMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FreeMemory").finish_non_exhaustive()
    }
}

impl ExecutorConfig {
    /// Defaults for an executor keeping its state in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            network: NetworkConfig::default(),
            serve: ServeConfig::default(),
            announce: AnnouncerConfig::default(),
            data_dir,
            max_concurrency: 4,
            load_interval: Duration::from_secs(2),
            free_memory: None,
        }
    }
}

/// The listen addresses to announce, within the announcement's limit: relayed ones (reachable
/// behind NAT) always, then as many direct ones as fit.
fn announced_addrs(addrs: Vec<Multiaddr>) -> Vec<String> {
    let max = lloom_core::AnnouncementLimits::default().max_addrs;
    let (relayed, direct): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(lloom_core::network::relay::is_relayed);
    let room = max.saturating_sub(relayed.len());
    direct.iter().take(room).chain(relayed.iter().take(max)).map(Multiaddr::to_string).collect()
}

/// A running executor.
#[derive(Debug)]
pub struct ExecutorNode {
    /// Its network handle.
    pub network: NetworkHandle,
    /// Its request server (stats, receipts).
    pub server: Server,
    announcer: Option<Announcer>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ExecutorNode {
    /// Opens the stores, starts the network, serves `models` and announces them.
    pub async fn start(
        key: &NodeKey,
        models: Vec<ServedModel>,
        mut config: ExecutorConfig,
    ) -> Result<Self> {
        config.serve.policy.domain = config.announce.domain;
        let replay = ReplayStore::open(&config.data_dir.join("replay.redb"))?;
        let receipts = ReceiptStore::open(&config.data_dir.join("receipts.redb"))?;
        let (network, events, event_loop) =
            start(key, config.network.clone(), config.serve.policy).await?;
        let mut tasks = vec![tokio::spawn(event_loop.run())];
        let server = Server::new(key.clone(), config.serve.clone(), models, replay, receipts)?;
        tasks.push(server.spawn(&network)?);

        let listen_addrs = announced_addrs(network.listen_addrs().await?);
        let max_concurrency = config.max_concurrency;
        let free_memory = config.free_memory.clone();
        let body = move |server: &Server, listen_addrs: Vec<String>| AnnouncementBody {
            offers: server.offers(),
            load: server.load(max_concurrency, free_memory.as_ref().map_or(0, FreeMemory::read)),
            listen_addrs,
        };
        let announcer = Announcer::spawn(
            key.clone(),
            network.clone(),
            body(&server, listen_addrs),
            config.announce,
        );
        // Peers that reach the executor directly may ask it about itself; validators that
        // subscribe are told about it at once.
        let validators =
            config.network.bootstrap.iter().filter_map(lloom_core::network::peer_id_of).collect();
        let handle_events = crate::node_events::handle_events(
            network.clone(),
            events,
            announcer.latest(),
            announcer.republisher(),
            validators,
        );
        tasks.push(tokio::spawn(handle_events));
        let stop = CancellationToken::new();
        let node = Self { network, server, announcer: Some(announcer), stop, tasks };
        node.spawn_load_reporter(config.load_interval, body);
        Ok(node)
    }

    /// Re-announces when the load, the offers (a backend down or back, a context changed) or
    /// the listen addresses change (a relay reservation adds an address once AutoNAT finds
    /// the executor behind NAT).
    fn spawn_load_reporter(
        &self,
        every: Duration,
        body: impl Fn(&Server, Vec<String>) -> AnnouncementBody + Send + 'static,
    ) {
        let Some(announcer) = &self.announcer else { return };
        let offers = announcer.sender();
        let (server, stop, network) =
            (self.server.clone(), self.stop.clone(), self.network.clone());
        let mut last = offers.borrow().clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
                let Ok(addrs) = network.listen_addrs().await else { break };
                let next = body(&server, announced_addrs(addrs));
                if next != last {
                    last = next.clone();
                    if offers.send(next).is_err() {
                        break;
                    }
                }
            }
        });
    }

    /// The addresses the executor listens on, each with `/p2p/<id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        Ok(self.network.listen_addrs().await?)
    }

    /// The first step of a graceful shutdown: withdraws the offers (validators drop them, so
    /// clients stop choosing this executor) and refuses new requests with a signed Busy, while
    /// the requests in flight go on (see [`Server::start_draining`]). Wait for them with
    /// [`ExecutorNode::wait_drained`], then call [`ExecutorNode::shutdown`].
    pub async fn start_draining(&mut self) -> Result<()> {
        self.server.start_draining();
        self.stop.cancel();
        match self.announcer.take() {
            Some(announcer) => announcer.shutdown().await,
            None => Ok(()),
        }
    }

    /// Waits up to `within` for the requests in flight to finish; returns how many had not
    /// (0: none left).
    pub async fn wait_drained(&self, within: Duration) -> u64 {
        self.server.wait_idle(within).await
    }

    /// A graceful shutdown: [`ExecutorNode::start_draining`], up to `within` for the requests
    /// in flight, then [`ExecutorNode::shutdown`]. Returns the requests cut short (0: every
    /// one finished with its signed response and receipt).
    pub async fn shutdown_gracefully(mut self, within: Duration) -> Result<u64> {
        let withdrawn = self.start_draining().await;
        let cut = self.wait_drained(within).await;
        self.shutdown().await?;
        withdrawn.map(|()| cut)
    }

    /// Withdraws the offers (unless [`ExecutorNode::start_draining`] did), then stops serving
    /// at once (streams still running are cut: their clients fail over) and leaves the network;
    /// the nonces held in memory are written to disk first.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop.cancel();
        let withdrawn = match self.announcer.take() {
            Some(announcer) => announcer.shutdown().await,
            None => Ok(()),
        };
        for task in &self.tasks {
            task.abort();
        }
        drop(self.network);
        let server = self.server.clone();
        match tokio::task::spawn_blocking(move || server.sync_nonces()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot sync the nonce store at shutdown"),
            Err(error) => tracing::warn!(%error, "the nonce store's last sync did not run"),
        }
        withdrawn
    }
}
