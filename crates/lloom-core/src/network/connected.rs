//! The set of peers with at least one open connection, kept current by the event loop and
//! read by handles without a round trip through the swarm task.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use libp2p::PeerId;

/// A shared, cheap-to-clone view of the connected peers.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnectedPeers {
    peers: Arc<RwLock<HashSet<PeerId>>>,
}

impl ConnectedPeers {
    /// Records that `peer` has its first connection.
    pub(crate) fn insert(&self, peer: PeerId) {
        if let Ok(mut peers) = self.peers.write() {
            peers.insert(peer);
        }
    }

    /// Records that `peer`'s last connection closed.
    pub(crate) fn remove(&self, peer: &PeerId) {
        if let Ok(mut peers) = self.peers.write() {
            peers.remove(peer);
        }
    }

    /// Whether `peer` has an open connection.
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.peers.read().is_ok_and(|peers| peers.contains(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_inserts_and_removals_across_clones() {
        let view = ConnectedPeers::default();
        let reader = view.clone();
        let peer = PeerId::random();
        assert!(!reader.contains(&peer));
        view.insert(peer);
        assert!(reader.contains(&peer));
        view.remove(&peer);
        assert!(!reader.contains(&peer));
    }
}
