//! The client's side of [`crate::known_executors`]: the executors remembered from earlier runs
//! are read at connect and used when no validator gives a directory; each directory the
//! validators give is kept for the next run, at most once every [`KEEP_EVERY`].

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lloom_core::unix_now;

use super::Client;
use crate::config::ClientConfig;
use crate::directory::Directory;
use crate::error::Error;
use crate::known_executors::{KnownExecutors, Remembered};

/// Least time between two writes of the file.
const KEEP_EVERY: Duration = Duration::from_secs(60);

/// The file, what was read from it at connect, and when it was last written.
#[derive(Debug, Default)]
pub(super) struct RememberedExecutors {
    file: Option<KnownExecutors>,
    read: Remembered,
    kept: Mutex<Option<Instant>>,
}

impl RememberedExecutors {
    /// Reads the file [`ClientConfig::known_executors_file`] names, if any, off the runtime's
    /// threads (up to 1,024 signatures to check).
    pub(super) async fn load(config: &ClientConfig) -> Self {
        let file = config.known_executors_file.clone().map(KnownExecutors::new);
        let policy = config.policy;
        let reader = file.clone();
        let read = tokio::task::spawn_blocking(move || {
            reader.map(|f| f.load(&policy)).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        if read.dropped > 0 {
            tracing::info!(
                dropped = read.dropped,
                "remembered executors left out (too old, withdrawn or not verifying)"
            );
        }
        Self { file, read, kept: Mutex::new(None) }
    }

    /// Whether no executor was remembered.
    pub(super) fn is_empty(&self) -> bool {
        self.read.executors.is_empty()
    }
}

impl Client {
    /// Puts the executors remembered from earlier runs into the directory, after `error` left
    /// it empty; returns how many were added.
    pub(super) async fn use_remembered(&self, error: &Error) -> usize {
        let remembered = &self.inner.remembered.read;
        let mut directory = self.inner.directory.lock().await;
        let added = remembered.add_to(&mut directory.0, &self.inner.config.policy);
        if added > 0 {
            directory.1 = Some(Instant::now());
            let minutes = unix_now().saturating_sub(remembered.saved_at) / 60;
            tracing::warn!(
                "no validator gave a directory ({error}); using the {added} executors remembered from a run {minutes} min ago"
            );
        }
        added
    }

    /// Keeps `directory` (just given by the validators) for the next run, unless it is empty
    /// or the file was written less than [`KEEP_EVERY`] ago; a failure is logged (the file
    /// is a cache).
    pub(super) async fn keep_known(&self, directory: &Directory) {
        let remembered = &self.inner.remembered;
        let Some(file) = &remembered.file else { return };
        if directory.is_empty() {
            return;
        }
        {
            let mut kept = remembered.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.is_some_and(|at| at.elapsed() < KEEP_EVERY) {
                return;
            }
            *kept = Some(Instant::now());
        }
        let text = match file.render(directory) {
            Ok(text) => text,
            Err(e) => return tracing::warn!("the known executors were not kept: {e}"),
        };
        let writer = file.clone();
        match tokio::task::spawn_blocking(move || writer.write(&text)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(path = %file.path().display(), "the known executors were not kept: {e}");
            }
            Err(e) => tracing::warn!("the known executors were not kept: {e}"),
        }
    }
}
