//! The models this client has seen on offer lately, so that a model whose executors have all
//! gone for now (withdrawn, restarting) is told apart from one nobody serves: the first is
//! worth asking again (the gateway's 503 with a retry-after), the second is a wrong name (404).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::directory::Directory;

/// Most models remembered.
const MAX_MODELS: usize = 4096;
/// A model not seen on offer for this long is forgotten.
pub(super) const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// When each model was last seen in a directory the validators gave.
#[derive(Debug, Default)]
pub(super) struct RecentlyOffered {
    last_seen: Mutex<HashMap<String, Instant>>,
}

impl RecentlyOffered {
    /// Notes the models `directory` offers, as of `now`.
    pub(super) fn note(&self, directory: &Directory, now: Instant) {
        self.note_models(directory.models().into_iter().map(|row| row.model), now);
    }

    fn note_models(&self, models: impl IntoIterator<Item = String>, now: Instant) {
        let mut seen = self.last_seen.lock().unwrap_or_else(PoisonError::into_inner);
        for model in models {
            seen.insert(model, now);
        }
        if seen.len() > MAX_MODELS {
            seen.retain(|_, at| now.saturating_duration_since(*at) < FORGET_AFTER);
        }
        if seen.len() > MAX_MODELS {
            let mut ages: Vec<Instant> = seen.values().copied().collect();
            ages.sort_unstable();
            if let Some(&cut) = ages.get(seen.len() - MAX_MODELS) {
                seen.retain(|_, at| *at >= cut);
            }
        }
    }

    /// How long ago `model` was last seen on offer, if in the last day.
    pub(super) fn last_seen(&self, model: &str, now: Instant) -> Option<Duration> {
        let seen = self.last_seen.lock().unwrap_or_else(PoisonError::into_inner);
        let age = now.saturating_duration_since(*seen.get(model)?);
        (age < FORGET_AFTER).then_some(age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_seen_on_offer_is_remembered_for_a_day() {
        let offered = RecentlyOffered::default();
        let t0 = Instant::now();
        offered.note_models(["a".to_owned(), "b".to_owned()], t0);
        offered.note(&Directory::default(), t0 + Duration::from_secs(5));
        let later = t0 + Duration::from_secs(30);
        assert_eq!(offered.last_seen("a", later), Some(Duration::from_secs(30)));
        assert_eq!(offered.last_seen("gpt-17", later), None);
        assert_eq!(offered.last_seen("b", t0 + FORGET_AFTER), None);
    }

    #[test]
    fn only_the_most_recently_seen_models_are_kept() {
        let offered = RecentlyOffered::default();
        let t0 = Instant::now();
        for i in 0..MAX_MODELS + 10 {
            offered.note_models([format!("m{i}")], t0 + Duration::from_millis(i as u64));
        }
        let now = t0 + Duration::from_secs(60);
        assert_eq!(offered.last_seen.lock().unwrap().len(), MAX_MODELS);
        assert_eq!(offered.last_seen("m0", now), None, "the oldest is forgotten");
        assert!(offered.last_seen(&format!("m{}", MAX_MODELS + 9), now).is_some());
    }
}
