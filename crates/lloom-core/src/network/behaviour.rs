//! The composed libp2p behaviour and the swarm built around it.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Swarm, autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, noise, ping, relay,
    request_response, tcp, yamux,
};

use super::NetworkConfig;
use super::protocol::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, REGISTRY_PROTOCOL};
use super::registry_codec::RegistryCodec;
use crate::error::{Error, Result};
use crate::identity::NodeKey;

/// Every protocol a Lloom node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) registry: request_response::Behaviour<RegistryCodec>,
    pub(crate) streams: libp2p_stream::Behaviour,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: autonat::Behaviour,
}

/// Relay server limits (validators). A circuit carries the request streams of a peer behind
/// NAT until DCUtR replaces it with a direct connection, or for good when hole punching fails,
/// so it allows whole exchanges: 8 MiB and 10 minutes per circuit (libp2p's defaults, 128 KiB
/// and 2 minutes, only cover the hole punch), 64 circuits, 8 per peer.
fn relay_server_config() -> relay::Config {
    relay::Config {
        max_circuits: 64,
        max_circuits_per_peer: 8,
        max_circuit_duration: std::time::Duration::from_secs(600),
        max_circuit_bytes: 8 * 1024 * 1024,
        ..relay::Config::default()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn setup<E: std::error::Error + Send + Sync + 'static>(e: E) -> Error {
    Error::NetworkSetup(Box::new(e))
}

/// Builds the swarm: TCP and QUIC, DNS names in addresses, Noise, Yamux, a relay client, and
/// [`Behaviour`].
pub(crate) fn build_swarm(key: &NodeKey, config: &NetworkConfig) -> Result<Swarm<Behaviour>> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.keypair().clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(setup)?
        .with_quic()
        .with_dns()
        .map_err(setup)?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(setup)?
        .with_behaviour(|keypair, relay_client| -> Result<Behaviour, BoxError> {
            let peer_id = keypair.public().to_peer_id();
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(config.max_connections_per_peer));

            let gossip_config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(config.max_gossip_bytes)
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .heartbeat_interval(std::time::Duration::from_millis(500))
                .build()?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(keypair.clone()),
                gossip_config,
            )?;

            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config
                .set_query_timeout(config.request_timeout * 3)
                // Records are checked before they are stored (see `dht::check_record`).
                .set_record_filtering(kad::StoreInserts::FilterBoth)
                // Executors republish fresh announcements themselves; stale ones expire.
                .set_record_ttl(Some(config.dht_record_ttl))
                .set_publication_interval(None)
                .set_provider_record_ttl(Some(config.dht_record_ttl))
                .set_provider_publication_interval(Some(config.dht_record_ttl / 3));
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::with_config(peer_id, super::dht::store_config()),
                kad_config,
            );
            kad.set_mode(Some(if config.server_mode {
                kad::Mode::Server
            } else {
                kad::Mode::Client
            }));

            let mdns = match config.enable_mdns {
                true => Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?),
                false => None,
            };
            let registry = request_response::Behaviour::with_codec(
                RegistryCodec { max_bytes: config.max_registry_message_bytes },
                [(REGISTRY_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(config.request_timeout)
                    .with_max_concurrent_streams(config.max_concurrent_streams),
            );
            let relay_server =
                config.server_mode.then(|| relay::Behaviour::new(peer_id, relay_server_config()));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_PROTOCOL.to_owned(),
                    keypair.public(),
                )),
                ping: ping::Behaviour::default(),
                kad,
                gossipsub,
                mdns: Toggle::from(mdns),
                registry,
                streams: libp2p_stream::Behaviour::new(),
                relay_client,
                relay_server: Toggle::from(relay_server),
                dcutr: dcutr::Behaviour::new(peer_id),
                autonat: autonat::Behaviour::new(
                    peer_id,
                    autonat::Config {
                        boot_delay: super::relay::NAT_PROBE_DELAY,
                        only_global_ips: !config.nat_probe_private_addrs,
                        ..autonat::Config::default()
                    },
                ),
            })
        })
        .map_err(|e| Error::NetworkSetup(Box::new(e)))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}
