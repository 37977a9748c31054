//! The engine's sequence ids, kept contiguous from 0.
//!
//! Each sequence has a KV cache of its own (a llama.cpp stream, `kv_unified` off), so a token
//! attends to its own sequence's cells only. llama.cpp then decodes a batch in one pass over
//! the weights only for sequences whose ids follow each other in ascending order (its
//! `split_equal` with `sequential`); every break in the run costs another pass. So a new
//! request takes the lowest free id, the batch lists sequences by id, and when a slot below
//! others stays free through a step (no request came to take it), the highest sequence moves
//! down into it (see [`SequenceIds::gap`]). Moving costs a copy of the sequence's cache and a
//! new worst-case graph reservation in llama.cpp, so a slot that a waiting or arriving request
//! fills at once is left to it.

use std::collections::BTreeSet;

/// The free sequence ids out of `0..max_sequences`.
#[derive(Debug)]
pub(crate) struct SequenceIds {
    free: BTreeSet<i32>,
}

impl SequenceIds {
    /// All of `0..count` free.
    pub(crate) fn new(count: i32) -> Self {
        Self { free: (0..count.max(1)).collect() }
    }

    /// Takes the lowest free id; `None` when every id is in use.
    pub(crate) fn take_lowest(&mut self) -> Option<i32> {
        self.free.pop_first()
    }

    /// Whether an id is free.
    pub(crate) fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Gives `id` back.
    pub(crate) fn release(&mut self, id: i32) {
        self.free.insert(id);
    }

    /// Where the sequence with the highest id in use, `highest`, should move so that the ids
    /// in use are `0..n` again: the lowest free id, if it is below `highest`. The caller moves
    /// the cache, then [`take_lowest`](Self::take_lowest)s the target and
    /// [`release`](Self::release)s `highest`.
    pub(crate) fn gap(&self, highest: i32) -> Option<i32> {
        self.free.first().copied().filter(|&low| low < highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_id_comes_first_and_gaps_are_found() {
        let mut ids = SequenceIds::new(4);
        let taken: Vec<_> = (0..4).filter_map(|_| ids.take_lowest()).collect();
        assert_eq!(taken, [0, 1, 2, 3]);
        assert_eq!(ids.take_lowest(), None);
        ids.release(1);
        // 0, 2 and 3 in use: 3 should move into 1.
        assert_eq!(ids.gap(3), Some(1));
        assert_eq!(ids.take_lowest(), Some(1));
        ids.release(3);
        // 0, 1, 2 in use: contiguous.
        assert_eq!(ids.gap(2), None);
        ids.release(0);
        assert_eq!(ids.take_lowest(), Some(0), "a new request takes the lowest");
    }
}
