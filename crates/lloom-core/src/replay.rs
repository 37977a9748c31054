//! Durable nonce-replay protection.
//!
//! An executor records every `(client, nonce)` it accepts together with the request's deadline,
//! in an embedded redb database, so a replayed request is refused even after a restart. Once a
//! deadline has passed the request is refused by the deadline rule anyway, so its entry can be
//! pruned: with deadlines capped by
//! [`VerifyPolicy::max_deadline_horizon_secs`](crate::VerifyPolicy), the store holds at most
//! one horizon's worth of accepted requests.
//!
//! By default every write is synced to disk before it returns. An executor that also refuses
//! requests it already answered by another durable record (its receipt store, keyed by request
//! digest) can defer the sync with [`ReplayStore::with_sync_interval`]: writes then cost no disk
//! sync, and a crash forgets at most the last interval's nonces, all of requests that never
//! completed (so no completed request can be replayed, and none is ever paid twice).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use crate::error::{Error, Result};

/// `client ‖ nonce` (28 bytes) → deadline.
const SEEN: TableDefinition<'_, &[u8], u64> = TableDefinition::new("seen_nonces");
/// `deadline ‖ client ‖ nonce` (36 bytes) → (), ordered by deadline for pruning.
const BY_DEADLINE: TableDefinition<'_, &[u8], ()> = TableDefinition::new("nonces_by_deadline");

/// A persistent set of used `(client, nonce)` pairs.
pub struct ReplayStore {
    db: Database,
    /// `None`: every commit is durable. `Some`: commits are durable at most this far apart.
    sync_interval: Option<Duration>,
    sync: Mutex<SyncState>,
}

/// When the last durable commit was, and whether non-durable commits followed it.
#[derive(Debug)]
struct SyncState {
    last_durable: Instant,
    pending: bool,
}

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayStore").finish_non_exhaustive()
    }
}

fn seen_key(client: Address, nonce: u64) -> [u8; 28] {
    let mut key = [0u8; 28];
    key[..20].copy_from_slice(client.as_slice());
    key[20..].copy_from_slice(&nonce.to_be_bytes());
    key
}

fn deadline_key(deadline: u64, seen: &[u8; 28]) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..8].copy_from_slice(&deadline.to_be_bytes());
    key[8..].copy_from_slice(seen);
    key
}

impl ReplayStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(SEEN)?;
        txn.open_table(BY_DEADLINE)?;
        txn.commit()?;
        let sync = Mutex::new(SyncState { last_durable: Instant::now(), pending: false });
        Ok(Self { db, sync_interval: None, sync })
    }

    /// Defers disk syncs: a write is made durable only when `interval` has passed since the
    /// last durable one (and by [`ReplayStore::sync`] and on drop). Use it only where replays
    /// of completed requests are also refused from a durable record, as the module docs say.
    #[must_use]
    pub fn with_sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = Some(interval);
        self
    }

    /// Makes every earlier write durable now.
    pub fn sync(&self) -> Result<()> {
        let pending = self.sync.lock().map(|s| s.pending).unwrap_or(true);
        if pending {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            self.commit(txn, true)?;
        }
        Ok(())
    }

    /// Starts a write transaction, durable unless syncs are deferred and one is not yet due.
    fn begin(&self) -> Result<(WriteTransaction, bool)> {
        let mut txn = self.db.begin_write()?;
        let durable = match self.sync_interval {
            None => true,
            Some(interval) => {
                self.sync.lock().map_or(true, |s| s.last_durable.elapsed() >= interval)
            }
        };
        if !durable {
            txn.set_durability(Durability::None)?;
        }
        Ok((txn, durable))
    }

    /// Commits `txn` and records whether un-synced writes remain.
    fn commit(&self, txn: WriteTransaction, durable: bool) -> Result<()> {
        txn.commit()?;
        if let Ok(mut state) = self.sync.lock() {
            if durable {
                *state = SyncState { last_durable: Instant::now(), pending: false };
            } else {
                state.pending = true;
            }
        }
        Ok(())
    }

    /// Records `(client, nonce)` if unseen; fails with [`Error::NonceReplayed`] otherwise.
    ///
    /// The check and the insert happen in one durable write transaction, so two concurrent
    /// requests with the same nonce cannot both pass. Entries whose deadline is before `now`
    /// are pruned in the same transaction (a bounded amount per call).
    pub fn check_and_record(
        &self,
        client: Address,
        nonce: u64,
        deadline: u64,
        now: u64,
    ) -> Result<()> {
        let mut results = self.check_and_record_batch(&[(client, nonce, deadline)], now)?;
        results.pop().unwrap_or(Ok(()))
    }

    /// [`ReplayStore::check_and_record`] for many requests in one durable transaction (group
    /// commit: one disk sync for the batch). Results are in input order; a nonce repeated
    /// within the batch is refused for all but its first occurrence.
    pub fn check_and_record_batch(
        &self,
        requests: &[(Address, u64, u64)],
        now: u64,
    ) -> Result<Vec<Result<()>>> {
        let (txn, durable) = self.begin()?;
        let mut results = Vec::with_capacity(requests.len());
        {
            let mut seen = txn.open_table(SEEN)?;
            let mut by_deadline = txn.open_table(BY_DEADLINE)?;
            for &(client, nonce, deadline) in requests {
                let key = seen_key(client, nonce);
                if seen.get(key.as_slice())?.is_some() {
                    results.push(Err(Error::NonceReplayed { client, nonce }));
                    continue;
                }
                seen.insert(key.as_slice(), deadline)?;
                by_deadline.insert(deadline_key(deadline, &key).as_slice(), ())?;
                results.push(Ok(()));
            }
            prune(&mut seen, &mut by_deadline, now, PRUNE_PER_CALL)?;
        }
        self.commit(txn, durable)?;
        Ok(results)
    }

    /// Whether `(client, nonce)` has been recorded and not yet pruned.
    pub fn contains(&self, client: Address, nonce: u64) -> Result<bool> {
        let txn = self.db.begin_read()?;
        let seen = txn.open_table(SEEN)?;
        Ok(seen.get(seen_key(client, nonce).as_slice())?.is_some())
    }

    /// Removes every entry whose deadline is before `now`; returns how many were removed.
    pub fn prune_expired(&self, now: u64) -> Result<usize> {
        let (txn, durable) = self.begin()?;
        let removed = {
            let mut seen = txn.open_table(SEEN)?;
            let mut by_deadline = txn.open_table(BY_DEADLINE)?;
            prune(&mut seen, &mut by_deadline, now, usize::MAX)?
        };
        self.commit(txn, durable)?;
        Ok(removed)
    }

    /// Number of recorded entries.
    pub fn len(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(SEEN)?.len()?)
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl Drop for ReplayStore {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::warn!("replay store: last sync failed: {e}");
        }
    }
}

/// Entries pruned opportunistically per insert, keeping each insert's cost bounded.
const PRUNE_PER_CALL: usize = 16;
/// Page cache of the database: bounds the memory the store holds, whatever its size on disk.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

fn prune(
    seen: &mut redb::Table<'_, &[u8], u64>,
    by_deadline: &mut redb::Table<'_, &[u8], ()>,
    now: u64,
    max: usize,
) -> Result<usize> {
    let upper = now.to_be_bytes();
    let mut expired = Vec::new();
    for entry in by_deadline.range::<&[u8]>(..upper.as_slice())?.take(max) {
        let (key, _) = entry?;
        expired.push(key.value().to_vec());
    }
    for key in &expired {
        by_deadline.remove(key.as_slice())?;
        if let Some(seen_part) = key.get(8..) {
            seen.remove(seen_part)?;
        }
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_rejected_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.redb");
        let client = Address::repeat_byte(0x11);
        {
            let store = ReplayStore::open(&path).unwrap();
            store.check_and_record(client, 7, 1_000, 100).unwrap();
            assert!(matches!(
                store.check_and_record(client, 7, 1_000, 100),
                Err(Error::NonceReplayed { nonce: 7, .. })
            ));
            // Another client may use the same nonce.
            store.check_and_record(Address::repeat_byte(0x22), 7, 1_000, 100).unwrap();
        }
        let store = ReplayStore::open(&path).unwrap();
        assert!(matches!(
            store.check_and_record(client, 7, 1_000, 200),
            Err(Error::NonceReplayed { .. })
        ));
        assert_eq!(store.len().unwrap(), 2);
    }

    #[test]
    fn expired_entries_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::open(&dir.path().join("r.redb")).unwrap();
        let client = Address::repeat_byte(0x33);
        for nonce in 0..10 {
            store.check_and_record(client, nonce, 100 + nonce, 50).unwrap();
        }
        assert_eq!(store.prune_expired(105).unwrap(), 5);
        assert!(!store.contains(client, 4).unwrap());
        assert!(store.contains(client, 5).unwrap());
        // Opportunistic pruning on insert.
        store.check_and_record(client, 100, 1_000, 200).unwrap();
        assert_eq!(store.len().unwrap(), 1);
    }

    #[test]
    fn deferred_syncs_still_refuse_replays_and_persist_on_sync_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.redb");
        let client = Address::repeat_byte(0x33);
        {
            let store =
                ReplayStore::open(&path).unwrap().with_sync_interval(Duration::from_secs(3600));
            store.check_and_record(client, 1, 1_000, 100).unwrap();
            assert!(store.sync.lock().unwrap().pending, "the write was not synced");
            assert!(matches!(
                store.check_and_record(client, 1, 1_000, 100),
                Err(Error::NonceReplayed { nonce: 1, .. })
            ));
            store.sync().unwrap();
            assert!(!store.sync.lock().unwrap().pending);
            store.check_and_record(client, 2, 1_000, 100).unwrap();
            // Dropped with nonce 2 not yet synced: the drop syncs it.
        }
        let store = ReplayStore::open(&path).unwrap();
        for nonce in [1, 2] {
            assert!(store.contains(client, nonce).unwrap(), "nonce {nonce} was persisted");
        }
    }
}
