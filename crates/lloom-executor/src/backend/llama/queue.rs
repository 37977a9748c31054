//! The engine's wait queue: bounded, fair between clients.
//!
//! Each client has its own lane; the worker takes requests round-robin over the lanes, so a
//! client that sends a burst waits behind its own requests, not in front of everyone else's.
//! The queue holds at most `capacity` requests in all and `per_client` from one client; a full
//! queue (or a full lane) refuses at once, so the caller can answer Busy.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Why a push was refused; the item comes back.
#[derive(Debug)]
pub(crate) enum PushError<T> {
    /// The whole queue is full.
    Full(T),
    /// This client already has its share waiting.
    LaneFull(T),
    /// The queue is closed (the engine is stopping).
    Closed(T),
}

/// What a non-blocking pop found instead of an item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryPopError {
    /// Nothing waits.
    Empty,
    /// Closed and drained.
    Closed,
}

struct State<K, T> {
    lanes: HashMap<K, VecDeque<T>>,
    /// Clients with waiting requests, in serving order.
    turn: VecDeque<K>,
    len: usize,
    closed: bool,
}

/// A bounded multi-lane queue served round-robin.
pub(crate) struct FairQueue<K, T> {
    state: Mutex<State<K, T>>,
    ready: Condvar,
    capacity: usize,
    per_client: usize,
}

impl<K, T> std::fmt::Debug for FairQueue<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairQueue")
            .field("capacity", &self.capacity)
            .field("per_client", &self.per_client)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    /// A queue of at most `capacity` items, `per_client` of them from one client.
    pub(crate) fn new(capacity: usize, per_client: usize) -> Self {
        Self {
            state: Mutex::new(State {
                lanes: HashMap::new(),
                turn: VecDeque::new(),
                len: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            per_client: per_client.clamp(1, capacity.max(1)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K, T>> {
        // A panic while holding the lock leaves consistent state (no partial updates).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most items the queue holds.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items waiting now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    /// Adds `item` to `client`'s lane.
    pub(crate) fn push(&self, client: K, item: T) -> Result<(), PushError<T>> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed(item));
        }
        if state.len >= self.capacity {
            return Err(PushError::Full(item));
        }
        let lane = state.lanes.entry(client.clone()).or_default();
        if lane.len() >= self.per_client {
            return Err(PushError::LaneFull(item));
        }
        lane.push_back(item);
        if lane.len() == 1 {
            state.turn.push_back(client);
        }
        state.len += 1;
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    fn pop_locked(state: &mut State<K, T>) -> Option<T> {
        let client = state.turn.pop_front()?;
        let lane = state.lanes.get_mut(&client)?;
        let item = lane.pop_front();
        if lane.is_empty() {
            state.lanes.remove(&client);
        } else {
            state.turn.push_back(client);
        }
        if item.is_some() {
            state.len -= 1;
        }
        item
    }

    /// The next item in turn, without waiting.
    pub(crate) fn try_pop(&self) -> Result<T, TryPopError> {
        let mut state = self.lock();
        match Self::pop_locked(&mut state) {
            Some(item) => Ok(item),
            None if state.closed => Err(TryPopError::Closed),
            None => Err(TryPopError::Empty),
        }
    }

    /// The next item in turn, waiting for one; `None` once closed and drained.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = Self::pop_locked(&mut state) {
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Refuses new items; waiting ones are still handed out.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_served_in_turn() {
        let q = FairQueue::new(16, 8);
        for i in 0..4 {
            q.push("a", ("a", i)).unwrap();
        }
        q.push("b", ("b", 0)).unwrap();
        q.push("c", ("c", 0)).unwrap();
        q.push("b", ("b", 1)).unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.try_pop().ok()).collect();
        assert_eq!(
            order,
            [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("a", 2), ("a", 3)],
            "a burst from one client does not delay the others"
        );
        assert_eq!(q.try_pop(), Err(TryPopError::Empty));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn bounds_refuse_at_once() {
        let q = FairQueue::new(3, 2);
        q.push(1, 'x').unwrap();
        q.push(1, 'y').unwrap();
        assert!(matches!(q.push(1, 'z'), Err(PushError::LaneFull('z'))));
        q.push(2, 'u').unwrap();
        assert!(matches!(q.push(3, 'v'), Err(PushError::Full('v'))));
        assert_eq!(q.len(), 3);
        assert_eq!(q.capacity(), 3);
    }

    #[test]
    fn closing_drains_then_ends() {
        let q = std::sync::Arc::new(FairQueue::new(4, 4));
        q.push((), 1).unwrap();
        q.close();
        assert!(matches!(q.push((), 2), Err(PushError::Closed(2))));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), None);
        assert_eq!(q.try_pop(), Err(TryPopError::Closed));
    }

    #[test]
    fn a_waiting_pop_wakes_on_push() {
        let q = std::sync::Arc::new(FairQueue::new(4, 4));
        let popper = {
            let q = q.clone();
            std::thread::spawn(move || q.pop())
        };
        q.push("k", 7).unwrap();
        assert_eq!(popper.join().unwrap(), Some(7));
    }
}
