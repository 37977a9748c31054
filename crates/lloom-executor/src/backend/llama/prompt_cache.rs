//! Prompt caching: a finished sequence's KV cache stays in its slot, and a later request from
//! the same client whose prompt starts with the same tokens starts from it instead of
//! computing those tokens again.
//!
//! A conversation sends its whole history every turn, and an agent its tools and instructions
//! every call; on a CPU, where a prompt takes about a second per 256 tokens, recomputing them
//! is most of the time to the first token. llama.cpp's own server keeps each slot's cache the
//! same way (`cache_prompt`). A request reuses the longest prefix any kept cache of its client
//! shares with its prompt, less the prompt's last token (whose logits are needed), and only
//! from [`MIN_REUSED_TOKENS`] on. The kept cache is used in place when the request can take its
//! slot (the ids in use stay one run, see the `slots` module); otherwise it is copied into the
//! request's slot (llama.cpp copies a whole per-sequence cache at the next decode: tens of MB,
//! milliseconds, against a second per 256 tokens recomputed) and stays kept where it was.
//!
//! Caches are kept per client, never shared between clients: how fast a first token comes must
//! not tell one client what another asked. Requests with no client (local generation, tests)
//! keep nothing. A free slot's cache goes when a request with no use for it takes the slot;
//! with nothing running, a request takes a slot that keeps nothing, else the one kept longest
//! ago. Keeping costs no memory: each sequence's cache cells are its own.

use std::collections::HashMap;

use llama_cpp_2::token::LlamaToken;
use lloom_core::Address;

/// Fewest prompt tokens worth reusing (a copy of a cache costs about what computing a few
/// tokens does).
pub(super) const MIN_REUSED_TOKENS: usize = 16;

/// The caches kept in free slots.
#[derive(Debug, Default)]
pub(super) struct PromptCache {
    kept: HashMap<i32, Kept>,
    /// Increases with every cache kept (which was kept longest ago).
    stamp: u64,
}

#[derive(Debug)]
struct Kept {
    client: Address,
    /// The tokens in the slot's cache, position by position.
    tokens: Vec<LlamaToken>,
    stamp: u64,
}

/// Where a request's prompt can start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reuse {
    /// The slot whose cache holds the prefix.
    pub(super) from: i32,
    /// How many of the prompt's first tokens it holds.
    pub(super) tokens: usize,
}

impl PromptCache {
    /// Keeps the cache of slot `id`, which holds `tokens`, for `client`'s later requests;
    /// with no client, nothing is kept (the caller clears the slot).
    pub(super) fn keep(&mut self, id: i32, client: Option<Address>, tokens: Vec<LlamaToken>) {
        let Some(client) = client else {
            self.kept.remove(&id);
            return;
        };
        self.stamp += 1;
        self.kept.insert(id, Kept { client, tokens, stamp: self.stamp });
    }

    /// The kept cache of `client` that shares the longest prefix with `prompt` (short of its
    /// last token), if it shares at least [`MIN_REUSED_TOKENS`].
    pub(super) fn best(&self, client: Option<Address>, prompt: &[LlamaToken]) -> Option<Reuse> {
        let client = client?;
        let usable = prompt.len().saturating_sub(1);
        self.kept
            .iter()
            .filter(|(_, kept)| kept.client == client)
            .map(|(&from, kept)| Reuse { from, tokens: common_prefix(&kept.tokens, prompt) })
            .map(|reuse| Reuse { tokens: reuse.tokens.min(usable), ..reuse })
            .filter(|reuse| reuse.tokens >= MIN_REUSED_TOKENS)
            .max_by_key(|reuse| (reuse.tokens, std::cmp::Reverse(reuse.from)))
    }

    /// Forgets what slot `id` kept (it is taken, or its cache was overwritten).
    pub(super) fn forget(&mut self, id: i32) {
        self.kept.remove(&id);
    }

    /// How long slot `id` has kept its cache: 0 when it keeps none, else higher the more
    /// recently it was kept (a new request with no use for any of them takes the lowest).
    pub(super) fn rank(&self, id: i32) -> u64 {
        self.kept.get(&id).map_or(0, |kept| kept.stamp)
    }
}

/// How many first tokens `a` and `b` share.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tokens(range: std::ops::Range<i32>) -> Vec<LlamaToken> {
        range.map(LlamaToken).collect()
    }

    #[test]
    fn the_longest_prefix_of_the_same_clients_caches_is_reused_short_of_the_last_token() {
        let (alice, bob) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let mut cache = PromptCache::default();
        cache.keep(0, Some(alice), tokens(0..40));
        cache.keep(1, Some(alice), tokens(0..100));
        cache.keep(2, Some(bob), tokens(0..200));
        // A longer prompt extending slot 1's: all of slot 1's 100 tokens.
        assert_eq!(cache.best(Some(alice), &tokens(0..150)), Some(Reuse { from: 1, tokens: 100 }));
        // The same prompt again: all but its last token.
        assert_eq!(cache.best(Some(alice), &tokens(0..100)), Some(Reuse { from: 1, tokens: 99 }));
        // A prompt that departs after 30 tokens: both share 30; the lower slot.
        let mut departing = tokens(0..30);
        departing.extend(tokens(500..520));
        assert_eq!(cache.best(Some(alice), &departing), Some(Reuse { from: 0, tokens: 30 }));
        // Too little in common, another client's cache, or no client: nothing.
        assert_eq!(
            cache.best(Some(alice), &tokens(0..i32::try_from(MIN_REUSED_TOKENS).unwrap())),
            None
        );
        assert_eq!(cache.best(Some(Address::repeat_byte(3)), &tokens(0..150)), None);
        assert_eq!(cache.best(None, &tokens(0..150)), None);
        assert_eq!(cache.best(Some(bob), &tokens(0..150)), Some(Reuse { from: 2, tokens: 149 }));
    }

    #[test]
    fn slots_rank_by_when_they_kept_and_forgotten_or_clientless_ones_keep_nothing() {
        let alice = Address::repeat_byte(1);
        let mut cache = PromptCache::default();
        cache.keep(3, Some(alice), tokens(0..40));
        cache.keep(1, Some(alice), tokens(0..40));
        assert!(cache.rank(3) < cache.rank(1));
        assert_eq!(cache.rank(0), 0);
        cache.forget(1);
        assert_eq!(cache.rank(1), 0);
        assert_eq!(cache.best(Some(alice), &tokens(0..50)).map(|r| r.from), Some(3));
        cache.keep(3, None, tokens(0..40));
        assert_eq!(cache.rank(3), 0);
        assert_eq!(cache.best(Some(alice), &tokens(0..50)), None);
    }
}
