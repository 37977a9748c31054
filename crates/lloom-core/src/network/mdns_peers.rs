//! Peers found by mDNS, and when to dial them again.
//!
//! mDNS reports a peer once, when it first answers (and again only after its record has
//! expired, minutes later). A dial that fails then — the peer's listener not up yet, a
//! firewall rule being changed, a lost SYN — would leave the peer unconnected until that
//! expiry. `MdnsPeers` keeps the addresses mDNS reported and, after each failed dial, says
//! when to try again: after 1 s, 2 s, 4 s … (at most [`MAX_BACKOFF`]), [`MAX_ATTEMPTS`] dials
//! in all, then not until mDNS reports the peer again. A peer that connected is not dialled
//! again when its connection closes; that was the peer's or our idle timeout's choice.
//!
//! It holds only the decisions (no swarm, no clock of its own); the event loop feeds it
//! events with their time and dials what [`MdnsPeers::due`] returns. Everything is bounded:
//! [`MAX_PEERS`] peers, `max_addrs` addresses each.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// Most mDNS-found peers remembered at once; further ones are dialled once, not remembered.
pub(crate) const MAX_PEERS: usize = 256;
/// Dials of one peer, the first included, before waiting for mDNS to report it again.
pub(crate) const MAX_ATTEMPTS: u32 = 6;
/// Wait before the second dial; doubled before each later one.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two dials of one peer.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// What follows a failed dial of a peer, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Redial {
    /// Not a dial of this schedule (a peer mDNS did not report, or one connected meanwhile).
    Unscheduled,
    /// Another dial at this time.
    At(Instant),
    /// No more dials until mDNS reports the peer again.
    GivenUp,
}

/// One peer mDNS reported.
#[derive(Debug)]
struct Found {
    addrs: Vec<Multiaddr>,
    /// Dials since it was last reported or connected.
    attempts: u32,
    /// When to dial it next; `None` while a dial is under way, while it is connected, or
    /// after the last attempt failed.
    next_dial: Option<Instant>,
    connected: bool,
}

/// The peers mDNS reported, with their addresses and redial schedule.
#[derive(Debug)]
pub(crate) struct MdnsPeers {
    peers: HashMap<PeerId, Found>,
    max_addrs: usize,
}

impl MdnsPeers {
    /// An empty set keeping at most `max_addrs` addresses a peer.
    pub(crate) fn new(max_addrs: usize) -> Self {
        Self { peers: HashMap::new(), max_addrs: max_addrs.max(1) }
    }

    /// mDNS reported `peer` at `addr`. Returns `false` if the set is full and `peer` is not
    /// in it (the caller dials it once without a schedule).
    pub(crate) fn discovered(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        connected: bool,
        now: Instant,
    ) -> bool {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            return false;
        }
        let found = self.peers.entry(peer).or_insert_with(|| Found {
            addrs: Vec::new(),
            attempts: 0,
            next_dial: None,
            connected,
        });
        if !found.addrs.contains(&addr) {
            if found.addrs.len() >= self.max_addrs {
                found.addrs.remove(0);
            }
            found.addrs.push(addr);
        }
        // A fresh report starts the schedule over.
        found.attempts = 0;
        found.next_dial = (!found.connected).then_some(now);
        true
    }

    /// mDNS's record of `peer` at `addr` expired.
    pub(crate) fn expired(&mut self, peer: &PeerId, addr: &Multiaddr) {
        if let Some(found) = self.peers.get_mut(peer) {
            found.addrs.retain(|a| a != addr);
            if found.addrs.is_empty() {
                self.peers.remove(peer);
            }
        }
    }

    /// `peer` has its first connection (however it was made).
    pub(crate) fn connected(&mut self, peer: &PeerId) {
        if let Some(found) = self.peers.get_mut(peer) {
            found.connected = true;
            found.attempts = 0;
            found.next_dial = None;
        }
    }

    /// `peer`'s last connection closed. It is not dialled again for that.
    pub(crate) fn disconnected(&mut self, peer: &PeerId) {
        if let Some(found) = self.peers.get_mut(peer) {
            found.connected = false;
        }
    }

    /// A dial of `peer` failed (ours or another caller's): schedule the next one, unless
    /// the peer is connected meanwhile or has had its attempts.
    pub(crate) fn dial_failed(&mut self, peer: &PeerId, now: Instant) -> Redial {
        let Some(found) = self.peers.get_mut(peer) else { return Redial::Unscheduled };
        if found.connected || found.attempts == 0 {
            // Not a dial this schedule started (connected peers are not dialled by it; a
            // peer not yet dialled by it has its first dial pending).
            return Redial::Unscheduled;
        }
        found.next_dial = (found.attempts < MAX_ATTEMPTS).then(|| now + backoff(found.attempts));
        found.next_dial.map_or(Redial::GivenUp, Redial::At)
    }

    /// The peers to dial now, with their addresses; each counts as one attempt, whose
    /// outcome the caller reports with [`connected`](Self::connected) or
    /// [`dial_failed`](Self::dial_failed).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut due = Vec::new();
        for (peer, found) in &mut self.peers {
            if found.next_dial.is_some_and(|at| at <= now) {
                found.next_dial = None;
                found.attempts += 1;
                due.push((*peer, found.addrs.clone()));
            }
        }
        due
    }

    /// Whether some peer waits for a dial (the event loop's timer runs only then).
    pub(crate) fn waiting(&self) -> bool {
        self.peers.values().any(|found| found.next_dial.is_some())
    }

    /// How many peers are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }

    /// When `peer` is dialled next.
    #[cfg(test)]
    fn next_dial(&self, peer: &PeerId) -> Option<Instant> {
        self.peers.get(peer).and_then(|found| found.next_dial)
    }
}

/// The wait after the `attempts`-th failed dial: 1 s, 2 s, 4 s, … at most [`MAX_BACKOFF`].
fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn a_reported_peer_is_dialled_at_once_on_every_address() {
        let mut peers = MdnsPeers::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        assert!(peers.discovered(peer, addr(1), false, now));
        assert!(peers.discovered(peer, addr(2), false, now));
        assert!(peers.waiting());
        assert_eq!(peers.due(now), vec![(peer, vec![addr(1), addr(2)])]);
        assert!(!peers.waiting(), "one dial at a time");
        assert!(peers.due(now).is_empty());
    }

    #[test]
    fn failed_dials_back_off_and_stop_after_the_last_attempt() {
        let mut peers = MdnsPeers::new(4);
        let (peer, start) = (PeerId::random(), Instant::now());
        peers.discovered(peer, addr(1), false, start);
        let mut now = start;
        let mut waits = Vec::new();
        for dial in 1..=MAX_ATTEMPTS {
            assert_eq!(peers.due(now).len(), 1, "dial {dial} is due");
            let Redial::At(next) = peers.dial_failed(&peer, now) else {
                assert_eq!(dial, MAX_ATTEMPTS, "gave up early");
                break;
            };
            assert_eq!(peers.next_dial(&peer), Some(next));
            assert!(peers.due(next - Duration::from_millis(1)).is_empty(), "not before");
            waits.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16], "then no sixth wait");
        assert!(!peers.waiting(), "gives up after {MAX_ATTEMPTS} dials");
        // mDNS reporting it again starts over.
        peers.discovered(peer, addr(1), false, now);
        assert_eq!(peers.due(now).len(), 1);
    }

    #[test]
    fn connected_peers_are_not_dialled_again() {
        let mut peers = MdnsPeers::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        peers.discovered(peer, addr(1), false, now);
        assert_eq!(peers.due(now).len(), 1);
        peers.connected(&peer);
        // Another dial failing after the connection was made.
        assert_eq!(peers.dial_failed(&peer, now), Redial::Unscheduled);
        assert!(!peers.waiting());
        peers.disconnected(&peer);
        assert!(!peers.waiting(), "a closed connection is not redialled");
        // Found connected: nothing to dial.
        let other = PeerId::random();
        peers.discovered(other, addr(2), true, now);
        assert!(peers.due(now + MAX_BACKOFF).is_empty());
    }

    #[test]
    fn a_failure_of_a_dial_the_schedule_did_not_start_is_ignored() {
        let mut peers = MdnsPeers::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        peers.discovered(peer, addr(1), false, now);
        // Before the schedule's first dial.
        assert_eq!(peers.dial_failed(&peer, now), Redial::Unscheduled);
        assert_eq!(peers.due(now).len(), 1, "the first dial is still due");
        // A peer mDNS never reported.
        assert_eq!(peers.dial_failed(&PeerId::random(), now), Redial::Unscheduled);
        assert_eq!(peers.len(), 1);
    }

    #[test]
    fn expired_addresses_leave_and_so_does_a_peer_without_any() {
        let mut peers = MdnsPeers::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        peers.discovered(peer, addr(1), false, now);
        peers.discovered(peer, addr(2), false, now);
        peers.expired(&peer, &addr(1));
        assert_eq!(peers.due(now), vec![(peer, vec![addr(2)])]);
        peers.expired(&peer, &addr(2));
        assert_eq!(peers.len(), 0);
    }

    #[test]
    fn peers_and_addresses_are_bounded() {
        let mut peers = MdnsPeers::new(2);
        let now = Instant::now();
        for _ in 0..MAX_PEERS {
            assert!(peers.discovered(PeerId::random(), addr(1), false, now));
        }
        assert!(!peers.discovered(PeerId::random(), addr(1), false, now), "full");
        assert_eq!(peers.len(), MAX_PEERS);

        let mut peers = MdnsPeers::new(2);
        let peer = PeerId::random();
        for port in 1..=5 {
            peers.discovered(peer, addr(port), false, now);
        }
        assert_eq!(peers.due(now), vec![(peer, vec![addr(4), addr(5)])], "the newest two");
    }
}
