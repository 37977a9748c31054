//! Request streams kept open between exchanges.
//!
//! A request stream carries one exchange after another (`/lloom/request/3`). After a clean
//! exchange (the final response or a signed error read and verified) the stream goes back to
//! the pool, and the next request to the same executor reuses it: no stream to open and no
//! protocol to negotiate. A stream idle for [`MAX_IDLE`] is not reused (the executor closes
//! idle streams after its request timeout, 10 s by default); one the executor closed anyway
//! fails before any answer, and the caller then drops the peer's other idle streams and opens
//! a fresh one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lloom_core::PeerId;
use lloom_core::network::Stream;

/// Longest time a stream waits in the pool: half the executor's default request timeout.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(5);
/// Most idle streams kept per executor.
pub(crate) const MAX_IDLE_PER_PEER: usize = 128;
/// Most idle streams kept in all.
pub(crate) const MAX_IDLE_TOTAL: usize = 1024;

/// Idle request streams by executor, bounded per executor, in all and in time.
pub(crate) struct StreamPool<S = Stream> {
    idle: Mutex<Idle<S>>,
}

struct Idle<S> {
    by_peer: HashMap<PeerId, Vec<(S, Instant)>>,
    total: usize,
}

impl<S> Default for StreamPool<S> {
    fn default() -> Self {
        Self { idle: Mutex::new(Idle { by_peer: HashMap::new(), total: 0 }) }
    }
}

impl<S> StreamPool<S> {
    /// The most recently returned stream to `peer` that has not idled too long, if any.
    pub(crate) fn take(&self, peer: &PeerId) -> Option<S> {
        self.take_at(peer, Instant::now())
    }

    fn take_at(&self, peer: &PeerId, now: Instant) -> Option<S> {
        let mut idle = self.idle.lock().ok()?;
        let Idle { by_peer, total } = &mut *idle;
        let streams = by_peer.get_mut(peer)?;
        let before = streams.len();
        streams.retain(|(_, since)| now.duration_since(*since) < MAX_IDLE);
        let found = streams.pop().map(|(stream, _)| stream);
        *total -= before - streams.len();
        if streams.is_empty() {
            by_peer.remove(peer);
        }
        found
    }

    /// Keeps `stream` for the next request to `peer`; drops it when the pool is full.
    pub(crate) fn put(&self, peer: PeerId, stream: S) {
        self.put_at(peer, stream, Instant::now());
    }

    fn put_at(&self, peer: PeerId, stream: S, now: Instant) {
        let Ok(mut idle) = self.idle.lock() else { return };
        if idle.total >= MAX_IDLE_TOTAL {
            return;
        }
        let streams = idle.by_peer.entry(peer).or_default();
        if streams.len() >= MAX_IDLE_PER_PEER {
            return;
        }
        streams.push((stream, now));
        idle.total += 1;
    }

    /// Drops every idle stream to `peer` (one of them turned out closed, so the others, opened
    /// on the same connection or idle as long, most likely are too).
    pub(crate) fn forget(&self, peer: &PeerId) {
        if let Ok(mut idle) = self.idle.lock()
            && let Some(streams) = idle.by_peer.remove(peer)
        {
            idle.total -= streams.len();
        }
    }

    /// Idle streams held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        lloom_core::NodeKey::generate().peer_id()
    }

    #[test]
    fn the_latest_stream_is_reused_and_each_only_once() {
        let pool = StreamPool::default();
        let (a, b) = (peer(), peer());
        pool.put(a, 1);
        pool.put(a, 2);
        pool.put(b, 3);
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.take(&a), Some(2));
        assert_eq!(pool.take(&a), Some(1));
        assert_eq!(pool.take(&a), None);
        assert_eq!(pool.take(&b), Some(3));
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn streams_idle_too_long_are_dropped_not_reused() {
        let pool = StreamPool::default();
        let a = peer();
        let start = Instant::now();
        pool.put_at(a, 1, start);
        pool.put_at(a, 2, start + MAX_IDLE);
        pool.put_at(a, 3, start + MAX_IDLE * 2);
        // At 2.5 × MAX_IDLE only the last one is fresh enough.
        let later = start + MAX_IDLE * 5 / 2;
        assert_eq!(pool.take_at(&a, later), Some(3));
        assert_eq!(pool.len(), 0, "the stale ones were dropped");
        pool.put_at(a, 4, start);
        assert_eq!(pool.take_at(&a, start + MAX_IDLE), None);
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn the_pool_is_bounded_per_peer_and_in_all() {
        let pool = StreamPool::default();
        let a = peer();
        for i in 0..MAX_IDLE_PER_PEER + 5 {
            pool.put(a, i);
        }
        assert_eq!(pool.len(), MAX_IDLE_PER_PEER);
        while pool.len() < MAX_IDLE_TOTAL {
            let p = peer();
            for i in 0..MAX_IDLE_PER_PEER {
                pool.put(p, i);
            }
        }
        let last = peer();
        pool.put(last, 0);
        assert_eq!(pool.len(), MAX_IDLE_TOTAL);
        assert_eq!(pool.take(&last), None, "a full pool keeps nothing more");
    }

    #[test]
    fn forgetting_a_peer_drops_its_streams_only() {
        let pool = StreamPool::default();
        let (a, b) = (peer(), peer());
        pool.put(a, 1);
        pool.put(a, 2);
        pool.put(b, 3);
        pool.forget(&a);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.take(&a), None);
        assert_eq!(pool.take(&b), Some(3));
    }
}
