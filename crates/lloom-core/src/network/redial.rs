//! Peers worth dialling again, and when: those mDNS found, and the bootstrap peers.
//!
//! mDNS reports a peer once, when it first answers (and again only after its record has
//! expired, minutes later). A dial that fails then (the peer's listener not up yet, a
//! firewall rule being changed, a lost SYN) would leave the peer unconnected until that
//! expiry. After each failed dial of such a peer `Redials` says when to try again: after
//! 1 s, 2 s, 4 s … (at most [`MAX_BACKOFF`]), [`MAX_ATTEMPTS`] dials in all, then not until
//! mDNS reports the peer again. A peer mDNS found that connected is not dialled again when its
//! connection closes: that was the peer's or an idle timeout's choice.
//!
//! Bootstrap peers (validators, from the configuration) are kept connected: dialled again
//! with the same backoff, without a limit on attempts, when their dial fails (a validator
//! that starts after the node) and when their last connection closes (a validator that
//! restarted, a network that went away). An executor behind NAT needs its validator for its
//! relayed address, and every node for gossip.
//!
//! It holds only the decisions (no swarm, no clock of its own); the event loop feeds it
//! events with their time and dials what [`Redials::due`] returns. Everything a peer can make
//! it hold is bounded: [`MAX_PEERS`] peers found by mDNS, `max_addrs` addresses each.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// Most mDNS-found peers remembered at once; further ones are dialled once, not remembered.
pub(crate) const MAX_PEERS: usize = 256;
/// Dials of a peer mDNS found, the first included, before waiting for mDNS to report it again.
pub(crate) const MAX_ATTEMPTS: u32 = 6;
/// Wait before the second dial; doubled before each later one.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two dials of one peer.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// What follows a failed dial of a peer, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Redial {
    /// Not a dial of this schedule (a peer it does not hold, or one connected meanwhile).
    Unscheduled,
    /// Another dial at this time.
    At(Instant),
    /// No more dials until mDNS reports the peer again.
    GivenUp,
}

/// One peer worth dialling again.
#[derive(Debug)]
struct Peer {
    addrs: Vec<Multiaddr>,
    /// A bootstrap peer: kept connected, whatever its attempts, and never forgotten.
    keep: bool,
    /// Dials since it was last reported, disconnected or connected.
    attempts: u32,
    /// When to dial it next; `None` while a dial is under way, while it is connected, or
    /// after the last attempt failed.
    next_dial: Option<Instant>,
    connected: bool,
}

/// The peers to dial again, with their addresses and schedule.
#[derive(Debug)]
pub(crate) struct Redials {
    peers: HashMap<PeerId, Peer>,
    max_addrs: usize,
    /// How many of `peers` mDNS found (bootstrap peers do not count).
    found: usize,
}

impl Redials {
    /// An empty set keeping at most `max_addrs` addresses a peer.
    pub(crate) fn new(max_addrs: usize) -> Self {
        Self { peers: HashMap::new(), max_addrs: max_addrs.max(1), found: 0 }
    }

    /// Keeps the bootstrap peer `peer`, at `addrs`, connected. Its first dial is the caller's
    /// (counted as under way).
    pub(crate) fn keep(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let entry = self.peers.entry(peer).or_insert_with(|| Peer {
            addrs: Vec::new(),
            keep: true,
            attempts: 1,
            next_dial: None,
            connected: false,
        });
        if !entry.keep {
            entry.keep = true;
            self.found -= 1;
        }
        for addr in addrs {
            if !entry.addrs.contains(&addr) && entry.addrs.len() < self.max_addrs {
                entry.addrs.push(addr);
            }
        }
    }

    /// mDNS reported `peer` at `addr`. Returns `false` if the set of peers mDNS found is full
    /// and `peer` is not in it (the caller dials it once without a schedule).
    pub(crate) fn discovered(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        connected: bool,
        now: Instant,
    ) -> bool {
        if !self.peers.contains_key(&peer) {
            if self.found >= MAX_PEERS {
                return false;
            }
            self.found += 1;
        }
        let entry = self.peers.entry(peer).or_insert_with(|| Peer {
            addrs: Vec::new(),
            keep: false,
            attempts: 0,
            next_dial: None,
            connected,
        });
        if !entry.addrs.contains(&addr) {
            if entry.addrs.len() >= self.max_addrs {
                entry.addrs.remove(0);
            }
            entry.addrs.push(addr);
        }
        if !entry.connected && entry.next_dial.is_none() {
            // A fresh report starts the schedule over.
            entry.attempts = 0;
            entry.next_dial = Some(now);
        }
        true
    }

    /// mDNS's record of `peer` at `addr` expired (bootstrap peers keep their addresses).
    pub(crate) fn expired(&mut self, peer: &PeerId, addr: &Multiaddr) {
        let Some(entry) = self.peers.get_mut(peer) else { return };
        if entry.keep {
            return;
        }
        entry.addrs.retain(|a| a != addr);
        if entry.addrs.is_empty() {
            self.peers.remove(peer);
            self.found -= 1;
        }
    }

    /// `peer` has its first connection (however it was made).
    pub(crate) fn connected(&mut self, peer: &PeerId) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.connected = true;
            entry.attempts = 0;
            entry.next_dial = None;
        }
    }

    /// `peer`'s last connection closed: a bootstrap peer is dialled again after
    /// [`FIRST_BACKOFF`], a peer mDNS found is not.
    pub(crate) fn disconnected(&mut self, peer: &PeerId, now: Instant) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.connected = false;
            if entry.keep {
                entry.attempts = 1;
                entry.next_dial = Some(now + FIRST_BACKOFF);
            }
        }
    }

    /// A dial of `peer` failed (ours or another caller's): schedule the next one, unless
    /// the peer is connected meanwhile or has had its attempts.
    pub(crate) fn dial_failed(&mut self, peer: &PeerId, now: Instant) -> Redial {
        let Some(entry) = self.peers.get_mut(peer) else { return Redial::Unscheduled };
        if entry.connected || entry.attempts == 0 || entry.next_dial.is_some() {
            // Not a dial of this schedule: connected peers are not dialled by it, and a peer
            // whose next dial is set has none under way.
            return Redial::Unscheduled;
        }
        if !entry.keep && entry.attempts >= MAX_ATTEMPTS {
            return Redial::GivenUp;
        }
        let at = now + backoff(entry.attempts);
        entry.next_dial = Some(at);
        Redial::At(at)
    }

    /// The peers to dial now, with their addresses; each counts as one attempt, whose
    /// outcome the caller reports with [`connected`](Self::connected) or
    /// [`dial_failed`](Self::dial_failed).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut due = Vec::new();
        for (peer, entry) in &mut self.peers {
            if entry.next_dial.is_some_and(|at| at <= now) {
                entry.next_dial = None;
                entry.attempts = entry.attempts.saturating_add(1);
                due.push((*peer, entry.addrs.clone()));
            }
        }
        due
    }

    /// How many bootstrap peers are kept, and how many of them are connected.
    pub(crate) fn bootstrap(&self) -> (usize, usize) {
        let kept = self.peers.values().filter(|entry| entry.keep);
        kept.fold((0, 0), |(all, up), entry| (all + 1, up + usize::from(entry.connected)))
    }

    /// Whether some peer waits for a dial (the event loop's timer runs only then).
    pub(crate) fn waiting(&self) -> bool {
        self.peers.values().any(|entry| entry.next_dial.is_some())
    }

    /// How many peers are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }

    /// When `peer` is dialled next.
    #[cfg(test)]
    fn next_dial(&self, peer: &PeerId) -> Option<Instant> {
        self.peers.get(peer).and_then(|entry| entry.next_dial)
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

    /// Fails every dial from `now` on, `dials` times; returns the waits between them (s).
    fn fail_dials(redials: &mut Redials, peer: PeerId, mut now: Instant, dials: u32) -> Vec<u64> {
        let mut waits = Vec::new();
        for dial in 1..=dials {
            assert_eq!(redials.due(now).len(), 1, "dial {dial} is due");
            let Redial::At(next) = redials.dial_failed(&peer, now) else { break };
            assert_eq!(redials.next_dial(&peer), Some(next));
            assert!(redials.due(next - Duration::from_millis(1)).is_empty(), "not before");
            waits.push((next - now).as_secs());
            now = next;
        }
        waits
    }

    #[test]
    fn a_reported_peer_is_dialled_at_once_on_every_address() {
        let mut redials = Redials::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        assert!(redials.discovered(peer, addr(1), false, now));
        assert!(redials.discovered(peer, addr(2), false, now));
        assert!(redials.waiting());
        assert_eq!(redials.due(now), vec![(peer, vec![addr(1), addr(2)])]);
        assert!(!redials.waiting(), "one dial at a time");
        assert!(redials.due(now).is_empty());
    }

    #[test]
    fn failed_dials_of_an_mdns_peer_back_off_and_stop_after_the_last_attempt() {
        let mut redials = Redials::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        redials.discovered(peer, addr(1), false, now);
        let waits = fail_dials(&mut redials, peer, now, MAX_ATTEMPTS);
        assert_eq!(waits, [1, 2, 4, 8, 16], "then no sixth wait");
        assert!(!redials.waiting(), "gives up after {MAX_ATTEMPTS} dials");
        assert_eq!(redials.dial_failed(&peer, now), Redial::GivenUp);
        // mDNS reporting it again starts over.
        redials.discovered(peer, addr(1), false, now);
        assert_eq!(redials.due(now).len(), 1);
    }

    #[test]
    fn a_bootstrap_peer_is_dialled_again_without_end_and_after_it_disconnects() {
        let mut redials = Redials::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        redials.keep(peer, vec![addr(1)]);
        assert!(!redials.waiting(), "the caller makes the first dial");
        let Redial::At(first) = redials.dial_failed(&peer, now) else { panic!("no redial") };
        let waits = fail_dials(&mut redials, peer, first, 12);
        assert_eq!(waits, [2, 4, 8, 16, 16, 16, 16, 16, 16, 16, 16, 16], "capped, never ending");
        // mDNS finding it too adds an address; its record expiring does not drop the peer.
        let later = now + Duration::from_secs(600);
        redials.discovered(peer, addr(2), false, later);
        redials.expired(&peer, &addr(2));
        redials.expired(&peer, &addr(1));
        assert_eq!(redials.len(), 1);
        redials.connected(&peer);
        assert!(!redials.waiting());
        redials.disconnected(&peer, later);
        assert_eq!(redials.next_dial(&peer), Some(later + FIRST_BACKOFF), "dialled again");
        let due = redials.due(later + FIRST_BACKOFF);
        assert_eq!(due, vec![(peer, vec![addr(1), addr(2)])]);
        assert_eq!(redials.dial_failed(&peer, later), Redial::At(later + 2 * FIRST_BACKOFF));
    }

    #[test]
    fn connected_mdns_peers_are_not_dialled_again() {
        let mut redials = Redials::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        redials.discovered(peer, addr(1), false, now);
        assert_eq!(redials.due(now).len(), 1);
        redials.connected(&peer);
        // Another dial failing after the connection was made.
        assert_eq!(redials.dial_failed(&peer, now), Redial::Unscheduled);
        assert!(!redials.waiting());
        redials.disconnected(&peer, now);
        assert!(!redials.waiting(), "a closed connection is not redialled");
        // Found connected: nothing to dial.
        let other = PeerId::random();
        redials.discovered(other, addr(2), true, now);
        assert!(redials.due(now + MAX_BACKOFF).is_empty());
    }

    #[test]
    fn a_failure_of_a_dial_the_schedule_did_not_start_is_ignored() {
        let mut redials = Redials::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        redials.discovered(peer, addr(1), false, now);
        // Before the schedule's first dial.
        assert_eq!(redials.dial_failed(&peer, now), Redial::Unscheduled);
        assert_eq!(redials.due(now).len(), 1, "the first dial is still due");
        // A peer never reported.
        assert_eq!(redials.dial_failed(&PeerId::random(), now), Redial::Unscheduled);
        assert_eq!(redials.len(), 1);
    }

    #[test]
    fn expired_addresses_leave_and_so_does_a_peer_without_any() {
        let mut redials = Redials::new(4);
        let (peer, now) = (PeerId::random(), Instant::now());
        redials.discovered(peer, addr(1), false, now);
        redials.discovered(peer, addr(2), false, now);
        redials.expired(&peer, &addr(1));
        assert_eq!(redials.due(now), vec![(peer, vec![addr(2)])]);
        redials.expired(&peer, &addr(2));
        assert_eq!(redials.len(), 0);
    }

    #[test]
    fn peers_and_addresses_are_bounded() {
        let mut redials = Redials::new(2);
        let now = Instant::now();
        redials.keep(PeerId::random(), vec![addr(1)]);
        for _ in 0..MAX_PEERS {
            assert!(redials.discovered(PeerId::random(), addr(1), false, now));
        }
        assert!(!redials.discovered(PeerId::random(), addr(1), false, now), "full");
        assert_eq!(redials.len(), MAX_PEERS + 1, "bootstrap peers do not count");

        let mut redials = Redials::new(2);
        let peer = PeerId::random();
        for port in 1..=5 {
            redials.discovered(peer, addr(port), false, now);
        }
        assert_eq!(redials.due(now), vec![(peer, vec![addr(4), addr(5)])], "the newest two");
    }
}
