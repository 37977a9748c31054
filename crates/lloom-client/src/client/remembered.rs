//! The client's side of [`crate::known_executors`]: the executors remembered from earlier runs
//! are read (once) and used when no validator gives a directory; each directory the
//! validators give is kept for the next run, at most once every [`KEEP_EVERY`].

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lloom_core::{VerifyPolicy, unix_now};
use tokio::sync::OnceCell;

use super::Client;
use crate::config::ClientConfig;
use crate::directory::Directory;
use crate::error::Error;
use crate::known_executors::{KnownExecutors, Remembered};

/// Least time between two writes of the file.
const KEEP_EVERY: Duration = Duration::from_secs(60);

/// The file, what was read from it (only once a run needs it), and when it was last written.
#[derive(Debug)]
pub(super) struct RememberedExecutors {
    file: Option<KnownExecutors>,
    policy: VerifyPolicy,
    read: OnceCell<Remembered>,
    kept: Mutex<Option<Instant>>,
}

impl RememberedExecutors {
    /// The file [`ClientConfig::known_executors_file`] names, if any (not read yet).
    pub(super) fn new(config: &ClientConfig) -> Self {
        Self {
            file: config.known_executors_file.clone().map(KnownExecutors::new),
            policy: config.policy,
            read: OnceCell::new(),
            kept: Mutex::new(None),
        }
    }

    /// What the file holds, read and verified the first time it is asked for, off the
    /// runtime's threads (up to 1,024 signatures to check).
    pub(super) async fn read(&self) -> &Remembered {
        self.read
            .get_or_init(|| async {
                let (file, policy) = (self.file.clone(), self.policy);
                let read = tokio::task::spawn_blocking(move || {
                    file.map(|f| f.load(&policy)).unwrap_or_default()
                })
                .await
                .unwrap_or_default();
                if read.dropped > 0 {
                    tracing::info!(
                        dropped = read.dropped,
                        "remembered executors left out (too old, withdrawn or not verifying)"
                    );
                }
                read
            })
            .await
    }
}

impl Client {
    /// Puts the executors remembered from earlier runs into the directory, after `error` left
    /// it empty; returns how many were added.
    pub(super) async fn use_remembered(&self, error: &Error) -> usize {
        let remembered = self.inner.remembered.read().await;
        let mut directory = self.inner.directory.lock().await;
        let added = remembered.add_to(&mut directory.0, &self.inner.config.policy);
        if added > 0 {
            directory.1 = Some(Instant::now());
            let minutes = unix_now().saturating_sub(remembered.saved_at) / 60;
            tracing::warn!(
                "no validator gave a directory ({error}); using the {} remembered from a run {minutes} min ago",
                if added == 1 { "executor".to_owned() } else { format!("{added} executors") }
            );
        }
        added
    }

    /// How long ago the file kept an executor offering `model`, if within the last day: a
    /// model on offer in an earlier run and not now is gone for now, not unknown.
    pub(super) async fn remembered_offer_age(&self, model: &str) -> Option<Duration> {
        let remembered = self.inner.remembered.read().await;
        let offered = (remembered.executors.iter())
            .any(|(_, announcement)| announcement.body.offers.iter().any(|o| o.model == model));
        let age = Duration::from_secs(unix_now().saturating_sub(remembered.saved_at));
        (offered && age < super::offered::FORGET_AFTER).then_some(age)
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
