//! The engine's sequence ids, kept in one run of consecutive ids.
//!
//! Each sequence has a KV cache of its own (a llama.cpp stream, `kv_unified` off), so a token
//! attends to its own sequence's cells only. llama.cpp then decodes a batch in one pass over
//! the weights only for sequences whose ids follow each other in ascending order (its
//! `split_equal` with `sequential`); every break in the run costs another pass. So a new
//! request takes an id that keeps the run whole ([`SequenceIds::take_for`]), the batch lists
//! sequences by id, and when a hole inside the run stays free through a step (no request came
//! to take it), the highest sequence moves down into it ([`SequenceIds::hole`]). Moving costs a
//! copy of the sequence's cache and a new worst-case graph reservation in llama.cpp, so a hole
//! that a waiting or arriving request fills at once is left to it, and a slot freed at either
//! end of the run, which breaks nothing, is never filled by a move.

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

    /// Takes an id for a new sequence that keeps the ids in use one run, given the `running`
    /// run's lowest and highest ids: `preferred` (the slot whose kept prompt cache the request
    /// reuses, see the `prompt_cache` module) where it keeps the run; else a hole inside the run,
    /// else the id just below it or the one just above; with nothing running, any. Among
    /// those, the one of lowest `rank` (a slot keeping no cache before one kept long ago before
    /// one kept recently), then the lowest id (a hole, then below before above). `None` when
    /// every id is in use.
    pub(crate) fn take_for(
        &mut self,
        running: Option<(i32, i32)>,
        preferred: Option<i32>,
        rank: impl Fn(i32) -> u64,
    ) -> Option<i32> {
        let keeps_run =
            |id: i32| running.is_none_or(|(low, high)| (low - 1..=high + 1).contains(&id));
        let lowest_rank = |ids: &mut dyn Iterator<Item = i32>| ids.min_by_key(|&id| (rank(id), id));
        let id = match running {
            _ if preferred.is_some_and(|id| self.free.contains(&id) && keeps_run(id)) => preferred,
            None => lowest_rank(&mut self.free.iter().copied()),
            Some((low, high)) => {
                let holes = self.free.range(low + 1..high.max(low + 1));
                let mut ends = [low - 1, high + 1].into_iter().filter(|id| self.free.contains(id));
                lowest_rank(&mut holes.copied())
                    .or_else(|| lowest_rank(&mut ends))
                    .or_else(|| lowest_rank(&mut self.free.iter().copied()))
            }
        }?;
        self.free.remove(&id).then_some(id)
    }

    /// Whether an id is free.
    pub(crate) fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Takes `id` if it is free.
    pub(crate) fn take(&mut self, id: i32) -> bool {
        self.free.remove(&id)
    }

    /// Gives `id` back.
    pub(crate) fn release(&mut self, id: i32) {
        self.free.insert(id);
    }

    /// The lowest free id strictly between `lowest` and `highest`, the lowest and highest ids
    /// in use: where the highest sequence should move so that the run closes up. The caller
    /// moves the cache, then [`take`](Self::take)s the hole and [`release`](Self::release)s
    /// `highest`.
    pub(crate) fn hole(&self, lowest: i32, highest: i32) -> Option<i32> {
        if highest - lowest < 2 {
            return None;
        }
        self.free.range(lowest + 1..highest).next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_keep_the_run_whole_and_holes_are_found() {
        let mut ids = SequenceIds::new(4);
        assert_eq!(ids.take_for(None, None, |_| 0), Some(0));
        let taken: Vec<_> =
            (1..4).filter_map(|hi| ids.take_for(Some((0, hi - 1)), None, |_| 0)).collect();
        assert_eq!(taken, [1, 2, 3]);
        assert_eq!(ids.take_for(Some((0, 3)), None, |_| 0), None, "every id in use");
        // 1 ends: 0, 2 and 3 in use; 3 should move into 1.
        ids.release(1);
        assert_eq!(ids.hole(0, 3), Some(1));
        assert!(ids.take(1));
        ids.release(3);
        assert_eq!(ids.hole(0, 2), None, "0, 1, 2: one run");
        // 0 ends: 1 and 2 still follow each other, nothing to move.
        ids.release(0);
        assert_eq!(ids.hole(1, 2), None);
        // A new request takes the id just below the run, then just above.
        assert_eq!(ids.take_for(Some((1, 2)), None, |_| 0), Some(0));
        assert_eq!(ids.take_for(Some((0, 2)), None, |_| 0), Some(3));
    }

    #[test]
    fn a_reused_cache_is_taken_in_place_where_the_run_allows_and_idle_slots_by_rank() {
        let mut ids = SequenceIds::new(8);
        for id in [2, 3] {
            assert!(ids.take(id));
        }
        // Running 2 and 3: slot 4 (just above) or 1 (just below) keeps the run; 6 does not.
        assert_eq!(ids.take_for(Some((2, 3)), Some(4), |_| 0), Some(4));
        assert_eq!(ids.take_for(Some((2, 4)), Some(6), |_| 0), Some(1), "below the run");
        assert_eq!(ids.take_for(Some((1, 4)), Some(4), |_| 0), Some(0), "4 is not free");
        // Nothing running: the preferred slot, else the lowest rank, lowest id first.
        let mut idle = SequenceIds::new(4);
        assert_eq!(idle.take_for(None, Some(3), |_| 0), Some(3));
        let rank = |id: i32| [5, 0, 2, 0][usize::try_from(id).unwrap_or(0)];
        assert_eq!(idle.take_for(None, None, rank), Some(1));
        assert_eq!(idle.take_for(None, None, rank), Some(2));
        assert_eq!(idle.take_for(None, None, rank), Some(0));
        assert_eq!(idle.take_for(None, None, rank), None);
        // Running: of the ids that keep the run, the one keeping no cache, or the oldest.
        let mut busy = SequenceIds::new(4);
        assert!(busy.take(1));
        let kept_at_0 = |id: i32| u64::from(id == 0);
        assert_eq!(busy.take_for(Some((1, 1)), None, kept_at_0), Some(2), "above, not 0's cache");
        assert_eq!(busy.take_for(Some((1, 2)), None, kept_at_0), Some(3));
        assert_eq!(busy.take_for(Some((1, 3)), None, kept_at_0), Some(0), "no other choice");
    }

    #[test]
    fn a_new_request_fills_a_hole_before_the_ends() {
        let mut ids = SequenceIds::new(8);
        for id in [2, 3, 5, 6] {
            assert!(ids.take(id));
        }
        // Running 2, 3, 5, 6: the hole at 4 first, then 1 below, then 7 above once 0 and 1
        // are taken.
        assert_eq!(ids.take_for(Some((2, 6)), None, |_| 0), Some(4));
        assert_eq!(ids.take_for(Some((2, 6)), None, |_| 0), Some(1));
        assert!(ids.take(0));
        assert_eq!(ids.take_for(Some((0, 6)), None, |_| 0), Some(7));
        assert_eq!(ids.hole(0, 7), None);
    }
}
