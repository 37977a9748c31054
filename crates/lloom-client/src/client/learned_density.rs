//! The client's learned prompt densities, shared by its chats and kept in a file as they
//! change, so that a process that is killed rather than shut down loses little of what it
//! learned.
//!
//! The file is written when a model's first estimate changes (not on every answer), at most
//! once every [`SAVE_GAP`], off the async threads, and once more at shutdown. Each write
//! takes what is known at the time it runs, so writes that overlap never leave an older state
//! behind a newer one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::density::PromptDensity;

/// Least time between two writes of the file while chats teach something new.
pub(crate) const SAVE_GAP: Duration = Duration::from_secs(5);

/// Learned densities and where they are kept.
#[derive(Debug)]
pub(crate) struct LearnedDensity {
    density: Mutex<PromptDensity>,
    file: Option<PathBuf>,
    /// When the file was last written (held while writing, so one write runs at a time).
    saved: Mutex<Option<Instant>>,
}

impl LearnedDensity {
    /// What `file` holds (nothing when `None`, missing or unreadable), kept there from now on.
    pub(crate) fn open(file: Option<PathBuf>) -> Arc<Self> {
        let density = file.as_deref().map(PromptDensity::load).unwrap_or_default();
        Arc::new(Self { density: Mutex::new(density), file, saved: Mutex::new(None) })
    }

    /// The tenths of a byte a token to assume first for `model`'s prompts, if learned.
    pub(crate) fn tenths_per_token(&self, model: &str) -> Option<u64> {
        self.lock().tenths_per_token(model)
    }

    /// Keeps `tenths` as `model`'s latest observation; when that changes the first estimate,
    /// writes the file (in the background, unless one was written less than [`SAVE_GAP`] ago).
    pub(crate) fn record(self: &Arc<Self>, model: &str, tenths: u64) {
        let changed = {
            let mut density = self.lock();
            let before = density.tenths_per_token(model);
            density.record(model, tenths);
            density.tenths_per_token(model) != before
        };
        let due = || {
            let saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
            saved.is_none_or(|at| at.elapsed() >= SAVE_GAP)
        };
        if !changed || self.file.is_none() || !due() {
            return;
        }
        let this = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || this.save())),
            Err(_) => this.save(),
        }
    }

    /// Writes what is known now to the file, if there is one; a failure is logged (the file
    /// is a cache).
    pub(crate) fn save(&self) {
        let Some(path) = &self.file else { return };
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        let written = {
            let density = self.lock();
            density.save(path)
        };
        match written {
            Ok(()) => *saved = Some(Instant::now()),
            Err(e) => {
                tracing::warn!(path = %path.display(), "the learned prompt densities were not kept: {e}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PromptDensity> {
        self.density.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_changed_estimate_is_kept_at_once_and_later_ones_after_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prompt-density.json");
        let learned = LearnedDensity::open(Some(path.clone()));
        // Outside a runtime the write is made inline.
        learned.record("m", 39);
        assert_eq!(PromptDensity::load(&path).tenths_per_token("m"), Some(35));
        // An observation that changes nothing writes nothing.
        std::fs::remove_file(&path).unwrap();
        learned.record("m", 50);
        assert!(!path.exists());
        // A change within the gap waits for the next change after it, or the shutdown.
        learned.record("m", 20);
        assert!(!path.exists());
        learned.save();
        assert_eq!(PromptDensity::load(&path).tenths_per_token("m"), Some(18));
        // Without a file, nothing is written and nothing fails.
        let unkept = LearnedDensity::open(None);
        unkept.record("m", 39);
        unkept.save();
        assert_eq!(unkept.tenths_per_token("m"), Some(35));
    }
}
