//! What the network reports to the node that owns it.

use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};

use crate::announce::SignedAnnouncement;
use crate::registry_query::{RegistryRequest, RegistryResponse};

/// An event from the network. Announcements arrive already verified.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetworkEvent {
    /// The node listens on a new address (`/p2p/<id>` appended).
    Listening(Multiaddr),
    /// A connection to a peer was established.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A dial of a peer not connected failed on every address (a bootstrap peer, one mDNS
    /// found, or one asked for); bootstrap and mDNS peers are dialled again after a backoff.
    DialFailed {
        /// The peer.
        peer: PeerId,
        /// Why, one line per address.
        error: String,
    },
    /// mDNS found a peer on the local network.
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
        /// Where it listens.
        addr: Multiaddr,
    },
    /// A peer subscribed to the announcement topic.
    Subscribed(PeerId),
    /// A verified announcement arrived on gossip from `source`.
    Announcement {
        /// The executor (gossip source) that signed it.
        source: PeerId,
        /// The announcement.
        announcement: SignedAnnouncement,
    },
    /// A peer asks this node's registry; answer with
    /// [`NetworkHandle::respond_registry`](super::NetworkHandle::respond_registry).
    RegistryQuery {
        /// Who asks.
        peer: PeerId,
        /// The question.
        request: RegistryRequest,
        /// Where the answer goes.
        responder: RegistryResponder,
    },
}

/// The return path of one inbound registry query.
#[derive(Debug)]
pub struct RegistryResponder(pub(crate) ResponseChannel<RegistryResponse>);

/// Counters of what the network accepted and refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Announcements that passed verification.
    pub announcements_accepted: u64,
    /// Announcements that could not be decoded or exceeded a limit.
    pub announcements_malformed: u64,
    /// Announcements with a bad signature, a wrong signer or a wrong domain.
    pub announcements_forged: u64,
    /// Announcements refused for any other rule (timestamps, hashes).
    pub announcements_invalid: u64,
    /// Inbound registry queries refused by the per-peer rate limit.
    pub registry_queries_refused: u64,
    /// Peers disconnected for repeated misbehaviour.
    pub peers_disconnected: u64,
    /// Events dropped because the owner did not keep up.
    pub events_dropped: u64,
    /// DHT records refused for storage (not a valid announcement signed by its key's peer).
    pub dht_records_refused: u64,
    /// What AutoNAT found about this node's reachability.
    pub reachability: super::Reachability,
    /// Reservations relays accepted (renewals not counted).
    pub relay_reservations: u64,
    /// Connections established through a relay, inbound or outbound.
    pub relayed_connections: u64,
    /// Relayed connections DCUtR replaced with a direct one.
    pub hole_punches_succeeded: u64,
    /// Hole punching attempts that failed (the relayed connection stays).
    pub hole_punches_failed: u64,
    /// Bootstrap peers (validators) configured.
    pub bootstrap_peers: u64,
    /// Bootstrap peers connected now.
    pub bootstrap_connected: u64,
    /// Dials made again: bootstrap peers after a failure or a closed connection, mDNS-found
    /// peers after a failed dial.
    pub redials: u64,
}
