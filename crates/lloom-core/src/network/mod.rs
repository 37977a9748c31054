//! The libp2p stack shared by all three nodes.
//!
//! [`start`] builds the swarm and returns a [`NetworkHandle`] (cheap to clone), a bounded
//! stream of [`NetworkEvent`]s and the [`EventLoop`], which owns the swarm and must be spawned.
//! The loop `select!`s over swarm events and handle commands; each command carries a
//! `oneshot` for its reply; it ends when every handle is dropped.
//!
//! Protocols: TCP and QUIC, Noise, Yamux, identify, ping, Kademlia (`/lloom/kad/1`),
//! gossipsub (announcements), mDNS (optional), request-response (registry queries,
//! `/lloom/registry/1`), libp2p-stream (request streams, `/lloom/request/3`), relay client,
//! DCUtR, AutoNAT, and on validators a relay server.

mod behaviour;
mod config;
mod connected;
pub mod dht;
mod dial_error;
mod event;
mod event_loop;
mod handle;
mod listen_addrs;
pub mod protocol;
mod redial;
mod registry_codec;
pub mod relay;
#[cfg(feature = "test-utils")]
pub mod test_utils;

pub use config::NetworkConfig;
pub use event::{NetworkEvent, NetworkStats, RegistryResponder};
pub use event_loop::EventLoop;
pub use handle::{NetworkHandle, WeakNetworkHandle};
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, Stream};
pub use relay::{Reachability, RelayMode};

/// The peer id at the end of `addr` (`.../p2p/<id>`), if any.
pub fn peer_id_of(addr: &Multiaddr) -> Option<libp2p::PeerId> {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

use tokio::sync::mpsc;

use crate::announce::AnnouncementLimits;
use crate::error::Result;
use crate::identity::NodeKey;
use crate::verify::VerifyPolicy;

/// Builds the network for `key`: starts listening, dials the bootstrap peers, and returns the
/// handle, the event receiver and the event loop to spawn.
pub async fn start(
    key: &NodeKey,
    config: NetworkConfig,
    policy: VerifyPolicy,
) -> Result<(NetworkHandle, mpsc::Receiver<NetworkEvent>, EventLoop)> {
    let mut swarm = behaviour::build_swarm(key, &config)?;
    let control = swarm.behaviour().streams.new_control();
    let (command_tx, command_rx) = mpsc::channel(config.channel_capacity);
    let (event_tx, event_rx) = mpsc::channel(config.channel_capacity);
    let limits =
        AnnouncementLimits { max_bytes: config.max_gossip_bytes, ..AnnouncementLimits::default() };
    let topic = libp2p::gossipsub::IdentTopic::new(protocol::ANNOUNCEMENT_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| crate::Error::NetworkSetup(Box::new(e)))?;
    let mut event_loop =
        EventLoop::new(swarm, command_rx, event_tx, policy, limits, &config, topic);
    event_loop.listen_and_bootstrap(&config).await?;
    let handle = NetworkHandle {
        commands: command_tx,
        control,
        local_peer_id: key.peer_id(),
        stream_timeout: config.request_timeout,
        connected: event_loop.connected_view(),
    };
    Ok((handle, event_rx, event_loop))
}
