//! [`NetworkHandle`]: the cheap-to-clone way to talk to the task that owns the swarm.

use std::time::Duration;

use libp2p::kad::{Record, RecordKey};
use libp2p::{Multiaddr, PeerId, Stream};
use tokio::sync::{mpsc, oneshot};

use super::NetworkStats;
use super::connected::ConnectedPeers;
use super::event::RegistryResponder;
use super::protocol::REQUEST_PROTOCOL;
use crate::announce::SignedAnnouncement;
use crate::error::{Error, Result};
use crate::registry_query::{RegistryRequest, RegistryResponse};

/// Commands the event loop executes; each carries the channel for its reply.
#[derive(Debug)]
pub(crate) enum Command {
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<()>>,
    },
    Connect {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<()>>,
    },
    Disconnect {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    Publish {
        announcement: Box<SignedAnnouncement>,
        reply: oneshot::Sender<Result<()>>,
    },
    #[cfg(feature = "test-utils")]
    PublishRaw {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    QueryRegistry {
        peer: PeerId,
        request: RegistryRequest,
        reply: oneshot::Sender<Result<RegistryResponse>>,
    },
    RespondRegistry {
        responder: RegistryResponder,
        response: Box<RegistryResponse>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Stats {
        reply: oneshot::Sender<NetworkStats>,
    },
    Provide {
        key: RecordKey,
        reply: oneshot::Sender<Result<()>>,
    },
    FindProviders {
        key: RecordKey,
        reply: oneshot::Sender<Result<Vec<PeerId>>>,
    },
    PutRecord {
        record: Record,
        reply: oneshot::Sender<Result<()>>,
    },
    GetRecord {
        key: RecordKey,
        reply: oneshot::Sender<Result<Vec<Vec<u8>>>>,
    },
}

/// A handle to the network. Clone it freely; the event loop stops when every handle is gone.
#[derive(Clone)]
pub struct NetworkHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) control: libp2p_stream::Control,
    pub(crate) local_peer_id: PeerId,
    pub(crate) stream_timeout: Duration,
    pub(crate) connected: ConnectedPeers,
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle")
            .field("peer_id", &self.local_peer_id)
            .finish_non_exhaustive()
    }
}

/// A handle that does not keep the network running: for observers (a metrics page) that
/// should not hold the event loop open once the node's own handles are dropped.
#[derive(Clone)]
pub struct WeakNetworkHandle {
    commands: mpsc::WeakSender<Command>,
    control: libp2p_stream::Control,
    local_peer_id: PeerId,
    stream_timeout: Duration,
    connected: ConnectedPeers,
}

impl std::fmt::Debug for WeakNetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakNetworkHandle")
            .field("peer_id", &self.local_peer_id)
            .finish_non_exhaustive()
    }
}

impl WeakNetworkHandle {
    /// A full handle, while the network still runs (some other handle is alive).
    pub fn upgrade(&self) -> Option<NetworkHandle> {
        Some(NetworkHandle {
            commands: self.commands.upgrade()?,
            control: self.control.clone(),
            local_peer_id: self.local_peer_id,
            stream_timeout: self.stream_timeout,
            connected: self.connected.clone(),
        })
    }
}

impl NetworkHandle {
    /// A handle that does not keep the network running (see [`WeakNetworkHandle`]).
    pub fn downgrade(&self) -> WeakNetworkHandle {
        WeakNetworkHandle {
            commands: self.commands.downgrade(),
            control: self.control.clone(),
            local_peer_id: self.local_peer_id,
            stream_timeout: self.stream_timeout,
            connected: self.connected.clone(),
        }
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| Error::NetworkStopped)?;
        answer.await.map_err(|_| Error::NetworkStopped)
    }

    /// Dials `addr` (which should end in `/p2p/<id>`); resolves once the dial has started.
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Connects to `peer` unless a connection is open already, dialling all of `addrs` at once
    /// (with or without `/p2p/<id>`; none: the addresses the network learnt for it). Resolves
    /// when a connection is established, or with [`Error::Dial`] naming each address's failure
    /// as soon as every one has failed (a refused or unreachable address does not wait for a
    /// timeout). Callers bound the wait: a dial can take as long as the transport allows.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<()> {
        self.call(|reply| Command::Connect { peer, addrs, reply }).await?
    }

    /// Closes every connection to `peer`; resolves to whether there was one.
    pub async fn disconnect(&self, peer: PeerId) -> Result<bool> {
        self.call(|reply| Command::Disconnect { peer, reply }).await
    }

    /// Publishes a signed announcement on the announcement topic.
    pub async fn publish_announcement(&self, announcement: SignedAnnouncement) -> Result<()> {
        self.call(|reply| Command::Publish { announcement: Box::new(announcement), reply }).await?
    }

    /// Asks `peer`'s registry; fails on timeout, disconnect or a refused stream.
    pub async fn query_registry(
        &self,
        peer: PeerId,
        request: RegistryRequest,
    ) -> Result<RegistryResponse> {
        self.call(|reply| Command::QueryRegistry { peer, request, reply }).await?
    }

    /// Answers an inbound registry query.
    pub async fn respond_registry(
        &self,
        responder: RegistryResponder,
        response: RegistryResponse,
    ) -> Result<()> {
        self.commands
            .send(Command::RespondRegistry { responder, response: Box::new(response) })
            .await
            .map_err(|_| Error::NetworkStopped)
    }

    /// The addresses this node listens on, each with `/p2p/<id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Whether `peer` has an open connection; a read of a view the event loop keeps current,
    /// with no round trip through the swarm task (cheap enough for every request).
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains(peer)
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>> {
        self.call(|reply| Command::ConnectedPeers { reply }).await
    }

    /// Counters of accepted and refused traffic.
    pub async fn stats(&self) -> Result<NetworkStats> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Provides `model` in the DHT (this node serves it); resolves when the provider record
    /// reached the DHT servers, or failed to (e.g. none is reachable yet).
    pub async fn provide_model(&self, model: &str) -> Result<()> {
        let key = super::dht::model_key(model);
        self.call(|reply| Command::Provide { key, reply }).await?
    }

    /// The peers that provide `model` in the DHT (at most [`super::dht::MAX_PROVIDERS`]).
    pub async fn find_model_providers(&self, model: &str) -> Result<Vec<PeerId>> {
        let key = super::dht::model_key(model);
        self.call(|reply| Command::FindProviders { key, reply }).await?
    }

    /// Stores this node's signed announcement in the DHT under its own key.
    pub async fn put_announcement(&self, announcement: &SignedAnnouncement) -> Result<()> {
        let key = super::dht::announcement_key(&self.local_peer_id);
        let record = Record::new(key, announcement.encode());
        self.call(|reply| Command::PutRecord { record, reply }).await?
    }

    /// The announcement records stored in the DHT for `executor`, as found (copies from
    /// several peers, undecoded and unverified: decode and verify before use).
    pub async fn announcement_records(&self, executor: PeerId) -> Result<Vec<Vec<u8>>> {
        let key = super::dht::announcement_key(&executor);
        self.call(|reply| Command::GetRecord { key, reply }).await?
    }

    /// Stores any record in the DHT (for tests of record validation).
    #[cfg(feature = "test-utils")]
    pub async fn put_raw_record(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let record = Record::new(RecordKey::new(&key), value);
        self.call(|reply| Command::PutRecord { record, reply }).await?
    }

    /// Opens a request stream (`/lloom/request/3`) to `peer`, within the stream timeout.
    pub async fn open_request_stream(&self, peer: PeerId) -> Result<Stream> {
        let mut control = self.control.clone();
        tokio::time::timeout(self.stream_timeout, control.open_stream(peer, REQUEST_PROTOCOL))
            .await
            .map_err(|_| Error::Timeout(self.stream_timeout))?
            .map_err(|e| Error::Stream(e.to_string()))
    }

    /// Starts accepting inbound request streams; only one acceptor may exist at a time.
    pub fn accept_request_streams(&self) -> Result<libp2p_stream::IncomingStreams> {
        self.control
            .clone()
            .accept(REQUEST_PROTOCOL)
            .map_err(|_| Error::Stream("request streams are already being accepted".into()))
    }
}
