//! Versioned protocol names.

use libp2p::StreamProtocol;

/// Request streams: signed request in, chunks, checkpoints and a signed response (or a signed
/// error) out; then the next request on the same stream, until either side closes it.
pub const REQUEST_PROTOCOL: StreamProtocol = StreamProtocol::new("/lloom/request/3");
/// Registry queries (request-response).
pub const REGISTRY_PROTOCOL: StreamProtocol = StreamProtocol::new("/lloom/registry/1");
/// The Kademlia DHT of the Lloom network.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/lloom/kad/1");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/lloom/id/1";
/// Gossip topic of signed model announcements.
pub const ANNOUNCEMENT_TOPIC: &str = "lloom/announcements/1";
