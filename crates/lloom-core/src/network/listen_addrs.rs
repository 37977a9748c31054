//! The node's current listen addresses, so an address a listener reports again (the relay
//! client does on every reservation renewal) is logged and announced once, not on every
//! renewal.

use std::collections::HashSet;

use libp2p::Multiaddr;

/// Listen addresses reported and not yet expired; as many as the node's listeners have.
#[derive(Debug, Default)]
pub(crate) struct ListenAddrs {
    current: HashSet<Multiaddr>,
}

impl ListenAddrs {
    /// Records `addr`; true when it was not current already.
    pub(crate) fn add(&mut self, addr: &Multiaddr) -> bool {
        self.current.insert(addr.clone())
    }

    /// Forgets `addr` (its listener expired it or closed).
    pub(crate) fn remove(&mut self, addr: &Multiaddr) {
        self.current.remove(addr);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_address_reported_again_is_not_new_until_it_expired() {
        let mut addrs = ListenAddrs::default();
        let relayed: Multiaddr =
            "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
                .parse()
                .unwrap();
        let direct: Multiaddr = "/ip4/127.0.0.1/tcp/4002".parse().unwrap();
        assert!(addrs.add(&relayed));
        assert!(addrs.add(&direct));
        assert!(!addrs.add(&relayed), "a renewal reports the same address");
        addrs.remove(&relayed);
        assert!(addrs.add(&relayed), "after it expired, it is new again");
    }
}
