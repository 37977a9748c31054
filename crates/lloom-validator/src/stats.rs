//! What the validator service counts as it runs, for its metrics page and health check. The
//! service task owns the registry; it publishes the registry's size here after each change,
//! so readers never wait on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Counters and gauges of a running validator, shared with its metrics server.
#[derive(Debug, Default)]
pub struct ValidatorStats {
    /// Executors in the registry now.
    pub executors: AtomicU64,
    /// Distinct models offered by them now.
    pub models: AtomicU64,
    /// Model offers in the registry now (one per executor and model).
    pub offers: AtomicU64,
    /// Verified announcements the registry took (new, updated or withdrawn executors).
    pub announcements_applied: AtomicU64,
    /// Verified announcements the registry did not take (older than the one held, or a new
    /// executor while the registry is full).
    pub announcements_not_applied: AtomicU64,
    /// Registry queries answered (clients and peer validators).
    pub registry_queries: AtomicU64,
    /// Executors removed because their heartbeats stopped.
    pub executors_expired: AtomicU64,
    /// Executors removed because they could not be reached when dialled back.
    pub executors_unreachable: AtomicU64,
    /// Snapshot syncs started with peer validators.
    pub peer_syncs: AtomicU64,
    /// Whether the service task runs (false before it starts, once it stops, and while
    /// shutting down).
    pub running: AtomicBool,
}

impl ValidatorStats {
    /// Records how many executors and distinct models the registry holds now.
    pub(crate) fn set_counts(&self, executors: usize, models: usize) {
        self.executors.store(executors as u64, Relaxed);
        self.models.store(models as u64, Relaxed);
    }

    /// Records how many model offers the registry holds now.
    pub(crate) fn set_offers(&self, offers: usize) {
        self.offers.store(offers as u64, Relaxed);
    }

    /// Adds one to `counter`.
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Whether the service task runs.
    pub fn is_running(&self) -> bool {
        self.running.load(Relaxed)
    }
}
