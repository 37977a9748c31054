//! Relayed addresses for nodes behind NAT: when to reserve a slot on a relay (circuit relay
//! v2, served by validators), and on which relays.
//!
//! A node behind NAT cannot be dialed. It asks up to [`MAX_RELAYS`] relays it has dialed
//! itself for a reservation and listens on `<relay address>/p2p/<relay>/p2p-circuit`; that
//! address goes into its announcements, peers dial it through the relay, and DCUtR then tries
//! to replace the relayed connection with a direct one (hole punching).
//!
//! `Reservations` holds only the decisions; the event loop feeds it swarm events and carries
//! out what it returns.

use std::collections::HashMap;
use std::str::FromStr;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// How long after start AutoNAT first asks peers to dial this node back (libp2p's default is
/// 15 s; an executor behind NAT becomes reachable through a relay this much sooner).
pub const NAT_PROBE_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Most relays a node keeps a reservation on at once.
pub const MAX_RELAYS: usize = 2;

/// When a node reserves a relayed address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    /// When AutoNAT finds the node unreachable from outside (behind NAT or a firewall).
    #[default]
    Auto,
    /// Always, on the relays the node dials (for hosts known to be unreachable).
    Always,
    /// Never (reachable hosts, and nodes that only dial out, such as clients).
    Never,
}

impl FromStr for RelayMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!("unknown relay mode {other:?}: use auto, always or never")),
        }
    }
}

impl std::fmt::Display for RelayMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        })
    }
}

/// What AutoNAT has found out about this node's reachability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// Not probed yet, or the probes were inconclusive.
    #[default]
    Unknown,
    /// Peers could dial this node back.
    Public,
    /// Peers could not dial this node back: it is behind NAT or a firewall.
    Private,
}

/// A peer this node dialed directly, a relay candidate.
#[derive(Debug)]
struct Candidate {
    /// The address this node reached it at.
    addr: Multiaddr,
    /// It offers the relay hop protocol (learnt through identify).
    relays: bool,
    /// The circuit listener reserved on it, if any.
    listener: Option<ListenerId>,
}

/// The reservation state of one node.
#[derive(Debug)]
pub(crate) struct Reservations {
    mode: RelayMode,
    reachability: Reachability,
    candidates: HashMap<PeerId, Candidate>,
}

impl Reservations {
    pub(crate) fn new(mode: RelayMode) -> Self {
        Self { mode, reachability: Reachability::Unknown, candidates: HashMap::new() }
    }

    pub(crate) fn reachability(&self) -> Reachability {
        self.reachability
    }

    fn wanted(&self) -> bool {
        match self.mode {
            RelayMode::Auto => self.reachability == Reachability::Private,
            RelayMode::Always => true,
            RelayMode::Never => false,
        }
    }

    fn reserved(&self) -> usize {
        self.candidates.values().filter(|c| c.listener.is_some()).count()
    }

    /// A direct outbound connection to `peer` at `addr` was established.
    pub(crate) fn on_dialed(&mut self, peer: PeerId, addr: &Multiaddr) {
        let addr: Multiaddr = addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
        self.candidates.entry(peer).and_modify(|c| c.addr = addr.clone()).or_insert(Candidate {
            addr,
            relays: false,
            listener: None,
        });
    }

    /// `peer` said (through identify) whether it serves the relay hop protocol. Returns the
    /// circuit addresses to listen on now.
    pub(crate) fn on_identified(&mut self, peer: PeerId, relays: bool) -> Vec<(PeerId, Multiaddr)> {
        match self.candidates.get_mut(&peer) {
            Some(candidate) => candidate.relays = relays,
            None => return Vec::new(),
        }
        self.to_reserve()
    }

    /// AutoNAT's verdict changed. Returns the circuit addresses to listen on and the listeners
    /// to close.
    pub(crate) fn on_reachability(
        &mut self,
        reachability: Reachability,
    ) -> (Vec<(PeerId, Multiaddr)>, Vec<ListenerId>) {
        self.reachability = reachability;
        if self.wanted() {
            return (self.to_reserve(), Vec::new());
        }
        let close = self.candidates.values_mut().filter_map(|c| c.listener.take()).collect();
        (Vec::new(), close)
    }

    /// The event loop opened `listener` for the reservation on `relay`.
    pub(crate) fn on_listening(&mut self, relay: PeerId, listener: ListenerId) {
        if let Some(candidate) = self.candidates.get_mut(&relay) {
            candidate.listener = Some(listener);
        }
    }

    /// A listener closed (the relay went away or refused): its relay may be asked again once
    /// reconnected.
    pub(crate) fn on_listener_closed(&mut self, listener: ListenerId) {
        for candidate in self.candidates.values_mut() {
            if candidate.listener == Some(listener) {
                candidate.listener = None;
            }
        }
    }

    /// The last connection to `peer` closed. Returns the relays to ask instead.
    pub(crate) fn on_disconnected(&mut self, peer: PeerId) -> Vec<(PeerId, Multiaddr)> {
        self.candidates.remove(&peer);
        self.to_reserve()
    }

    /// Circuit addresses on relays not yet asked, up to [`MAX_RELAYS`] reservations.
    fn to_reserve(&self) -> Vec<(PeerId, Multiaddr)> {
        if !self.wanted() {
            return Vec::new();
        }
        let free = MAX_RELAYS.saturating_sub(self.reserved());
        let mut peers: Vec<_> = self
            .candidates
            .iter()
            .filter(|(_, c)| c.relays && c.listener.is_none())
            .map(|(peer, c)| (*peer, c.addr.clone()))
            .collect();
        peers.sort_by_key(|(peer, _)| *peer);
        peers
            .into_iter()
            .take(free)
            .map(|(peer, addr)| (peer, addr.with(Protocol::P2p(peer)).with(Protocol::P2pCircuit)))
            .collect()
    }
}

/// True when `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()
    }

    fn listener() -> ListenerId {
        ListenerId::next()
    }

    /// Reservations in `mode` with one dialed relay that identify described as a relay.
    fn with_relay(mode: RelayMode) -> (Reservations, PeerId, Vec<(PeerId, Multiaddr)>) {
        let mut r = Reservations::new(mode);
        let relay = PeerId::random();
        r.on_dialed(relay, &addr(1));
        let asked = r.on_identified(relay, true);
        (r, relay, asked)
    }

    #[test]
    fn auto_reserves_only_once_autonat_finds_the_node_private() {
        let (mut r, relay, asked) = with_relay(RelayMode::Auto);
        assert!(asked.is_empty(), "reachability still unknown");
        let (reserve, close) = r.on_reachability(Reachability::Private);
        assert!(close.is_empty());
        assert_eq!(reserve.len(), 1);
        assert_eq!(reserve[0].0, relay);
        assert_eq!(
            reserve[0].1.to_string(),
            format!("/ip4/10.0.0.1/tcp/1/p2p/{relay}/p2p-circuit")
        );
        assert!(is_relayed(&reserve[0].1));
    }

    #[test]
    fn auto_gives_reservations_back_when_the_node_turns_out_public() {
        let (mut r, relay, _) = with_relay(RelayMode::Auto);
        r.on_reachability(Reachability::Private);
        let id = listener();
        r.on_listening(relay, id);
        let public = Reachability::Public;
        let (reserve, close) = r.on_reachability(public);
        assert!(reserve.is_empty());
        assert_eq!(close, vec![id]);
        assert_eq!(r.reachability(), public);
    }

    #[test]
    fn always_reserves_on_relays_only_and_at_most_max_relays() {
        let mut r = Reservations::new(RelayMode::Always);
        let plain = PeerId::random();
        r.on_dialed(plain, &addr(1));
        assert!(r.on_identified(plain, false).is_empty(), "not a relay");
        let relays: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for (i, relay) in relays.iter().enumerate() {
            r.on_dialed(*relay, &addr(10 + u16::try_from(i).unwrap()));
        }
        let mut reserved = Vec::new();
        for relay in &relays {
            for (peer, _) in r.on_identified(*relay, true) {
                if !reserved.contains(&peer) {
                    reserved.push(peer);
                    r.on_listening(peer, listener());
                }
            }
        }
        assert_eq!(reserved.len(), MAX_RELAYS);
        // One reservation goes away: another relay is asked.
        let gone = reserved[0];
        let next = r.on_disconnected(gone);
        assert_eq!(next.len(), 1);
        assert!(!reserved.contains(&next[0].0));
    }

    #[test]
    fn never_reserves_and_unknown_peers_are_ignored() {
        let (mut r, _, asked) = with_relay(RelayMode::Never);
        assert!(asked.is_empty());
        assert!(r.on_reachability(Reachability::Private).0.is_empty());
        let mut always = Reservations::new(RelayMode::Always);
        assert!(always.on_identified(PeerId::random(), true).is_empty(), "never dialed");
    }

    #[test]
    fn a_closed_listener_makes_its_relay_askable_again() {
        let (mut r, relay, asked) = with_relay(RelayMode::Always);
        assert_eq!(asked.len(), 1);
        let id = listener();
        r.on_listening(relay, id);
        assert!(r.to_reserve().is_empty());
        r.on_listener_closed(id);
        assert_eq!(r.to_reserve().len(), 1);
    }

    #[test]
    fn relay_modes_parse_and_print() {
        for mode in [RelayMode::Auto, RelayMode::Always, RelayMode::Never] {
            assert_eq!(mode.to_string().parse::<RelayMode>().unwrap(), mode);
        }
        let err = "sometimes".parse::<RelayMode>().unwrap_err();
        assert!(err.contains("auto, always or never"), "{err}");
    }
}
