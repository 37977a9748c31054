//! Network configuration: what to listen on, whom to bootstrap from, and every bound.

use std::time::Duration;

use libp2p::Multiaddr;

use super::relay::RelayMode;

/// How a node takes part in the network.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Addresses to listen on (`/ip4/0.0.0.0/tcp/0`, `/ip4/0.0.0.0/udp/0/quic-v1`, ...).
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers to dial at start (validators), with `/p2p/<id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS. On by default for real deployments;
    /// tests and the demo on the host turn it off so multicast never leaves the machine.
    pub enable_mdns: bool,
    /// Serve the DHT and relay other peers' connections (validators).
    pub server_mode: bool,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections per peer.
    pub max_connections_per_peer: u32,
    /// Time limit of a registry query.
    pub request_timeout: Duration,
    /// Most concurrent inbound and outbound registry queries.
    pub max_concurrent_streams: usize,
    /// Largest gossip message (an encoded announcement), in bytes.
    pub max_gossip_bytes: usize,
    /// Largest registry request or response, in bytes.
    pub max_registry_message_bytes: usize,
    /// Registry queries accepted per peer per second (burst: twice this).
    pub registry_queries_per_sec: u32,
    /// Capacity of the command and event channels.
    pub channel_capacity: usize,
    /// Connections idle this long are closed.
    pub idle_timeout: Duration,
    /// Advertise the addresses this node listens on as its external addresses (in identify
    /// and in DHT provider records). Right for a node reachable where it listens (a LAN, a
    /// public host, loopback tests); behind NAT, AutoNAT and the relay supply the reachable
    /// addresses instead.
    pub advertise_listen_addrs: bool,
    /// How long DHT records (announcements, providers) live unless republished; executors
    /// republish every third of it.
    pub dht_record_ttl: Duration,
    /// When to reserve a relayed address on a validator (circuit relay v2), so that peers can
    /// reach this node behind NAT; see [`RelayMode`].
    pub relay: RelayMode,
    /// Let AutoNAT probes use private (RFC 1918, loopback) addresses, both when this node asks
    /// and when it dials back for others. Off on the internet, where dialing private addresses
    /// for strangers would scan this node's LAN; on in labs and private networks behind their
    /// own NAT.
    pub nat_probe_private_addrs: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen_addrs: Vec::new(),
            bootstrap: Vec::new(),
            enable_mdns: true,
            server_mode: false,
            max_connections: 1024,
            max_connections_per_peer: 4,
            request_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            max_gossip_bytes: 64 * 1024,
            max_registry_message_bytes: 4 * 1024 * 1024,
            registry_queries_per_sec: 50,
            channel_capacity: 1024,
            idle_timeout: Duration::from_secs(60),
            advertise_listen_addrs: true,
            dht_record_ttl: Duration::from_secs(180),
            relay: RelayMode::Auto,
            nat_probe_private_addrs: false,
        }
    }
}

impl NetworkConfig {
    /// A configuration for tests and local demos: loopback TCP on a free port, mDNS off.
    pub fn local() -> Self {
        Self {
            listen_addrs: vec![
                "/ip4/127.0.0.1/tcp/0".parse().unwrap_or_else(|_| Multiaddr::empty()),
            ],
            enable_mdns: false,
            ..Self::default()
        }
    }
}
