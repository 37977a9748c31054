//! The last sequence of each executor dropped as unreachable, so a replay of its last
//! announcement does not list it again. Bounded: beyond its capacity the executor dropped
//! longest ago is forgotten first (its announcements have aged past the freshness check by
//! then), never the whole table at once.

use std::collections::{HashMap, VecDeque};

use lloom_core::Address;

/// Dropped executors and their last sequences, oldest first.
#[derive(Debug)]
pub(super) struct DroppedSequences {
    capacity: usize,
    sequences: HashMap<Address, u64>,
    order: VecDeque<Address>,
}

impl DroppedSequences {
    /// A table remembering at most `capacity` executors (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), sequences: HashMap::new(), order: VecDeque::new() }
    }

    /// The last sequence of `executor`, if it was dropped.
    pub(super) fn get(&self, executor: &Address) -> Option<u64> {
        self.sequences.get(executor).copied()
    }

    /// Remembers that `executor` was dropped at `sequence`, forgetting the oldest when full.
    pub(super) fn insert(&mut self, executor: Address, sequence: u64) {
        if self.sequences.insert(executor, sequence).is_some() {
            self.order.retain(|a| *a != executor);
        } else if self.sequences.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.sequences.remove(&oldest);
        }
        self.order.push_back(executor);
    }

    /// Forgets `executor` (it announced anew and is listed again).
    pub(super) fn remove(&mut self, executor: &Address) {
        if self.sequences.remove(executor).is_some() {
            self.order.retain(|a| a != executor);
        }
    }

    /// How many executors are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.sequences.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_drop_is_forgotten_first_and_a_relisted_executor_leaves() {
        let (a, b, c, d) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
            Address::repeat_byte(4),
        );
        let mut dropped = DroppedSequences::new(3);
        dropped.insert(a, 1);
        dropped.insert(b, 2);
        dropped.insert(c, 3);
        // Dropped again, `a` becomes the newest.
        dropped.insert(a, 7);
        dropped.insert(d, 4);
        assert_eq!(dropped.len(), 3);
        assert_eq!(
            [a, b, c, d].map(|x| dropped.get(&x)),
            [Some(7), None, Some(3), Some(4)],
            "b was the oldest"
        );
        dropped.remove(&c);
        assert_eq!((dropped.get(&c), dropped.len()), (None, 2));
        dropped.insert(b, 9);
        dropped.insert(c, 10);
        assert_eq!([a, b, c, d].map(|x| dropped.get(&x)), [None, Some(9), Some(10), Some(4)]);
        assert_eq!(dropped.order.len(), dropped.len());
    }
}
