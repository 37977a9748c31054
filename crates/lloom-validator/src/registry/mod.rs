//! The model registry: the latest verified announcement of every live executor, indexed by
//! model, with stale entries expiring after a documented window.
//!
//! The registry trusts its caller to have verified each announcement
//! (`lloom_core::verify_announcement`); it enforces ordering (sequence numbers), capacity and
//! expiry, and answers the registry query protocol.

mod dropped;
mod query;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lloom_core::network::Multiaddr;
use lloom_core::{Address, PeerId, SignedAnnouncement};

use crate::error::{Error, Result};
use dropped::DroppedSequences;

/// How long and how much the registry keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// An executor not heard from for this long is removed (default: three heartbeats).
    pub stale_after_secs: u64,
    /// Most executors held; announcements from new executors beyond it are refused.
    pub max_executors: usize,
}

impl RegistryConfig {
    /// Default executor heartbeat interval, in seconds.
    pub const DEFAULT_HEARTBEAT_SECS: u64 = 10;
    /// Default stale window: three missed heartbeats.
    pub const DEFAULT_STALE_AFTER_SECS: u64 = 3 * Self::DEFAULT_HEARTBEAT_SECS;
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self { stale_after_secs: Self::DEFAULT_STALE_AFTER_SECS, max_executors: 100_000 }
    }
}

/// What applying an announcement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new executor was added.
    Inserted,
    /// A known executor's entry was replaced.
    Updated,
    /// The executor withdrew and was removed.
    Removed,
}

/// Most executors dropped as unreachable whose last sequence the registry remembers (so a
/// replay of their last announcement does not list them again); the oldest is forgotten first.
const MAX_DROPPED: usize = 10_000;

/// What a liveness check of one listed executor needs: where it says it listens, and which
/// announcement the check is about (a newer one makes the check's outcome moot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivenessCheck {
    /// The executor.
    pub executor: Address,
    /// Its peer id.
    pub peer: PeerId,
    /// The sequence of the announcement held when the check began.
    pub sequence: u64,
    /// The listen addresses that announcement gives.
    pub addrs: Vec<Multiaddr>,
}

#[derive(Clone, Debug)]
struct Entry {
    announcement: SignedAnnouncement,
    peer_id: PeerId,
    last_seen: u64,
}

/// The registry. Not thread-safe by itself: one task owns it.
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    executors: BTreeMap<Address, Entry>,
    by_model: BTreeMap<String, BTreeSet<Address>>,
    by_peer: HashMap<PeerId, Address>,
    /// The last sequence of each executor dropped as unreachable.
    dropped: DroppedSequences,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(RegistryConfig::default())
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(config: RegistryConfig) -> Self {
        Self {
            config,
            executors: BTreeMap::new(),
            by_model: BTreeMap::new(),
            by_peer: HashMap::new(),
            dropped: DroppedSequences::new(MAX_DROPPED),
        }
    }

    /// The stale window, in seconds.
    pub fn stale_after_secs(&self) -> u64 {
        self.config.stale_after_secs
    }

    /// Number of live executors.
    pub fn len(&self) -> usize {
        self.executors.len()
    }

    /// Whether no executor is registered.
    pub fn is_empty(&self) -> bool {
        self.executors.is_empty()
    }

    /// Number of distinct models offered.
    pub fn model_count(&self) -> usize {
        self.by_model.len()
    }

    /// Number of model offers: each executor counted once for each model it offers. Walks
    /// every model, so callers sample it rather than compute it on every change.
    pub fn offer_count(&self) -> usize {
        self.by_model.values().map(BTreeSet::len).sum()
    }

    /// Applies a verified announcement received from `peer_id` at `now`.
    ///
    /// Refuses announcements whose sequence is not newer than the one held
    /// ([`Error::StaleAnnouncement`]) and new executors beyond capacity
    /// ([`Error::RegistryFull`]).
    pub fn apply(&mut self, ann: SignedAnnouncement, peer_id: PeerId, now: u64) -> Result<Applied> {
        let executor = ann.executor();
        let sequence = ann.commitment.sequence;
        if let Some(dropped) = self.dropped.get(&executor)
            && sequence <= dropped
        {
            return Err(Error::StaleAnnouncement { executor, sequence, held: dropped });
        }
        if let Some(held) = self.executors.get(&executor) {
            let held_sequence = held.announcement.commitment.sequence;
            if sequence <= held_sequence {
                return Err(Error::StaleAnnouncement { executor, sequence, held: held_sequence });
            }
        } else if ann.commitment.withdrawn {
            return Ok(Applied::Removed);
        } else if self.executors.len() >= self.config.max_executors {
            return Err(Error::RegistryFull { limit: self.config.max_executors });
        }
        let previous = self.remove(&executor);
        if ann.commitment.withdrawn {
            return Ok(Applied::Removed);
        }
        self.dropped.remove(&executor);
        for offer in &ann.body.offers {
            self.by_model.entry(offer.model.clone()).or_default().insert(executor);
        }
        self.by_peer.insert(peer_id, executor);
        self.executors.insert(executor, Entry { announcement: ann, peer_id, last_seen: now });
        Ok(if previous { Applied::Updated } else { Applied::Inserted })
    }

    /// Removes every executor not heard from within the stale window; returns them.
    pub fn expire(&mut self, now: u64) -> Vec<Address> {
        let window = self.config.stale_after_secs;
        let stale: Vec<Address> = self
            .executors
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.last_seen) > window)
            .map(|(a, _)| *a)
            .collect();
        for executor in &stale {
            self.remove(executor);
        }
        stale
    }

    /// What a liveness check of the executor listed for `peer` needs, if one is listed and
    /// announces an address to check.
    pub fn liveness_check(&self, peer: &PeerId) -> Option<LivenessCheck> {
        let executor = *self.by_peer.get(peer)?;
        let entry = self.executors.get(&executor)?;
        let addrs: Vec<Multiaddr> =
            entry.announcement.body.listen_addrs.iter().filter_map(|a| a.parse().ok()).collect();
        (!addrs.is_empty()).then(|| LivenessCheck {
            executor,
            peer: *peer,
            sequence: entry.announcement.commitment.sequence,
            addrs,
        })
    }

    /// Removes an executor a liveness check could not reach, unless a newer announcement
    /// came meanwhile; that announcement's sequence and older ones are refused from then on.
    /// Returns whether it was removed.
    pub fn drop_unreachable(&mut self, check: &LivenessCheck) -> bool {
        let current = self.executors.get(&check.executor);
        if current.is_none_or(|e| e.announcement.commitment.sequence != check.sequence) {
            return false;
        }
        self.dropped.insert(check.executor, check.sequence);
        self.remove(&check.executor)
    }

    fn remove(&mut self, executor: &Address) -> bool {
        let Some(entry) = self.executors.remove(executor) else { return false };
        if self.by_peer.get(&entry.peer_id) == Some(executor) {
            self.by_peer.remove(&entry.peer_id);
        }
        for offer in &entry.announcement.body.offers {
            if let Some(set) = self.by_model.get_mut(&offer.model) {
                set.remove(executor);
                if set.is_empty() {
                    self.by_model.remove(&offer.model);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
