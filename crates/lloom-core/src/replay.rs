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
//! digest) can defer the writes with [`ReplayStore::with_sync_interval`]: accepted nonces are
//! then held in memory and written to disk together, at most one interval apart. A check costs
//! no disk write, and a crash forgets at most the last interval's nonces, all of requests that
//! never completed (so no completed request can be replayed, and none is ever paid twice).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use crate::error::{Error, Result};

/// `client ‖ nonce` (28 bytes) → deadline.
const SEEN: TableDefinition<'_, &[u8], u64> = TableDefinition::new("seen_nonces");
/// `deadline ‖ client ‖ nonce` (36 bytes) → (), ordered by deadline for pruning.
const BY_DEADLINE: TableDefinition<'_, &[u8], ()> = TableDefinition::new("nonces_by_deadline");

/// `client ‖ nonce`, the key of an accepted request.
type SeenKey = [u8; 28];

/// A persistent set of used `(client, nonce)` pairs.
pub struct ReplayStore {
    db: Database,
    /// `Some`: accepted nonces are held in memory and written together (see the module docs).
    deferred: Option<Deferred>,
}

/// Nonces accepted but not yet on disk, and when they were last written.
struct Deferred {
    /// Most time between two writes of the held nonces.
    interval: Duration,
    held: Mutex<Held>,
    /// Taken for a whole write, so one write runs at a time.
    writing: Mutex<()>,
}

struct Held {
    /// Accepted since the last write started.
    pending: HashMap<SeenKey, u64>,
    /// Being written now; still consulted by checks until the write has committed.
    writing: HashMap<SeenKey, u64>,
    /// When the last write committed.
    last_write: Instant,
    /// The database's nonces as of the last write (opened at the first check), so a check
    /// reads the tree without starting a read transaction of its own. Every nonce is held or
    /// in it: a write replaces it before its nonces leave `writing`.
    written: Option<ReadOnlyTable<&'static [u8], u64>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("pending", &self.pending.len())
            .field("writing", &self.writing.len())
            .field("last_write", &self.last_write)
            .finish_non_exhaustive()
    }
}

impl Held {
    fn contains(&self, key: &SeenKey) -> bool {
        self.pending.contains_key(key) || self.writing.contains_key(key)
    }

    fn len(&self) -> usize {
        self.pending.len() + self.writing.len()
    }
}

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayStore").finish_non_exhaustive()
    }
}

fn seen_key(client: Address, nonce: u64) -> SeenKey {
    let mut key = [0u8; 28];
    key[..20].copy_from_slice(client.as_slice());
    key[20..].copy_from_slice(&nonce.to_be_bytes());
    key
}

fn deadline_key(deadline: u64, seen: &SeenKey) -> [u8; 36] {
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
        Ok(Self { db, deferred: None })
    }

    /// Defers disk writes: accepted nonces are held in memory and written to disk together by
    /// [`ReplayStore::sync`], which the owner calls at most `interval` apart (and on drop). A
    /// check that finds the last write older than twice `interval`, or [`MAX_HELD`] nonces
    /// held, writes them itself. A zero `interval` keeps every write synced. Use it only where
    /// replays of completed requests are also refused from a durable record, as the module
    /// docs say.
    #[must_use]
    pub fn with_sync_interval(mut self, interval: Duration) -> Self {
        self.deferred = (!interval.is_zero()).then(|| Deferred {
            interval,
            held: Mutex::new(Held {
                pending: HashMap::new(),
                writing: HashMap::new(),
                last_write: Instant::now(),
                written: None,
            }),
            writing: Mutex::new(()),
        });
        self
    }

    /// Makes every earlier accepted nonce durable now.
    pub fn sync(&self) -> Result<()> {
        let Some(deferred) = &self.deferred else { return Ok(()) };
        let _one_writer = deferred.writing.lock().map_err(|_| poisoned())?;
        let batch: Vec<(SeenKey, u64)> = {
            let mut held = deferred.held.lock().map_err(|_| poisoned())?;
            if held.pending.is_empty() {
                held.last_write = Instant::now();
                return Ok(());
            }
            let taken = std::mem::take(&mut held.pending);
            let batch = taken.iter().map(|(k, d)| (*k, *d)).collect();
            held.writing = taken;
            batch
        };
        let written =
            self.write_durably(&batch, crate::unix_now()).and_then(|()| self.seen_table());
        let mut held = deferred.held.lock().map_err(|_| poisoned())?;
        let writing = std::mem::take(&mut held.writing);
        match written {
            Ok(table) => {
                held.written = Some(table);
                held.last_write = Instant::now();
                Ok(())
            }
            Err(e) => {
                // Nothing is lost: the nonces stay held for the next write.
                held.pending.extend(writing);
                Err(e)
            }
        }
    }

    /// The nonces table as the database holds it now.
    fn seen_table(&self) -> Result<ReadOnlyTable<&'static [u8], u64>> {
        Ok(self.db.begin_read()?.open_table(SEEN)?)
    }

    /// Inserts `batch` and prunes expired entries in one durable transaction.
    fn write_durably(&self, batch: &[(SeenKey, u64)], now: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut seen = txn.open_table(SEEN)?;
            let mut by_deadline = txn.open_table(BY_DEADLINE)?;
            for (key, deadline) in batch {
                seen.insert(key.as_slice(), *deadline)?;
                by_deadline.insert(deadline_key(*deadline, key).as_slice(), ())?;
            }
            // Prune about as many as were written, so the store does not grow in steady state.
            prune(&mut seen, &mut by_deadline, now, 2 * batch.len() + PRUNE_PER_CALL)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Records `(client, nonce)` if unseen; fails with [`Error::NonceReplayed`] otherwise.
    ///
    /// The check and the insert are atomic, so two concurrent requests with the same nonce
    /// cannot both pass. Entries whose deadline is before `now` are pruned as the store writes
    /// (a bounded amount per write).
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

    /// [`ReplayStore::check_and_record`] for many requests at once (with synced writes, one
    /// durable transaction: one disk sync for the batch). Results are in input order; a nonce
    /// repeated within the batch is refused for all but its first occurrence.
    pub fn check_and_record_batch(
        &self,
        requests: &[(Address, u64, u64)],
        now: u64,
    ) -> Result<Vec<Result<()>>> {
        match &self.deferred {
            Some(deferred) => self.hold_batch(deferred, requests),
            None => self.write_batch(requests, now),
        }
    }

    /// The deferred path: checks the held nonces and the database, holds the new ones.
    fn hold_batch(
        &self,
        deferred: &Deferred,
        requests: &[(Address, u64, u64)],
    ) -> Result<Vec<Result<()>>> {
        let mut results = Vec::with_capacity(requests.len());
        let write_now = {
            let mut held = deferred.held.lock().map_err(|_| poisoned())?;
            // Read under the lock: a nonce is either held or, once its write has committed
            // (before it leaves `writing`), in the table that write left.
            let seen = match held.written.take() {
                Some(table) => table,
                None => self.seen_table()?,
            };
            for &(client, nonce, deadline) in requests {
                let key = seen_key(client, nonce);
                if held.contains(&key) || seen.get(key.as_slice())?.is_some() {
                    results.push(Err(Error::NonceReplayed { client, nonce }));
                    continue;
                }
                held.pending.insert(key, deadline);
                results.push(Ok(()));
            }
            held.written = Some(seen);
            held.len() >= MAX_HELD || held.last_write.elapsed() >= 2 * deferred.interval
        };
        if write_now {
            self.sync()?;
        }
        Ok(results)
    }

    /// The synced path: check, insert and prune in one durable transaction.
    fn write_batch(&self, requests: &[(Address, u64, u64)], now: u64) -> Result<Vec<Result<()>>> {
        let txn = self.db.begin_write()?;
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
        txn.commit()?;
        Ok(results)
    }

    /// Whether `(client, nonce)` has been recorded and not yet pruned.
    pub fn contains(&self, client: Address, nonce: u64) -> Result<bool> {
        let key = seen_key(client, nonce);
        if let Some(deferred) = &self.deferred
            && deferred.held.lock().map_err(|_| poisoned())?.contains(&key)
        {
            return Ok(true);
        }
        let txn = self.db.begin_read()?;
        let seen = txn.open_table(SEEN)?;
        Ok(seen.get(key.as_slice())?.is_some())
    }

    /// Removes every entry whose deadline is before `now`; returns how many were removed.
    /// Held nonces are written first.
    pub fn prune_expired(&self, now: u64) -> Result<usize> {
        self.sync()?;
        let txn = self.db.begin_write()?;
        let removed = {
            let mut seen = txn.open_table(SEEN)?;
            let mut by_deadline = txn.open_table(BY_DEADLINE)?;
            prune(&mut seen, &mut by_deadline, now, usize::MAX)?
        };
        txn.commit()?;
        Ok(removed)
    }

    /// Number of recorded entries, held ones included.
    pub fn len(&self) -> Result<u64> {
        let held = match &self.deferred {
            Some(deferred) => deferred.held.lock().map_err(|_| poisoned())?.len() as u64,
            None => 0,
        };
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(SEEN)?.len()? + held)
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Nonces accepted and not yet written to disk.
    pub fn held(&self) -> usize {
        self.deferred.as_ref().and_then(|d| d.held.lock().ok().map(|h| h.len())).unwrap_or(0)
    }
}

impl Drop for ReplayStore {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::warn!("replay store: last sync failed: {e}");
        }
    }
}

fn poisoned() -> Error {
    Error::Io(std::io::Error::other("replay store: a thread panicked while holding its lock"))
}

/// Entries pruned opportunistically per write, keeping each write's cost bounded.
const PRUNE_PER_CALL: usize = 16;
/// Most nonces held in memory before a check writes them (about 7 MiB).
pub const MAX_HELD: usize = 100_000;
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

    /// A deadline that a write's pruning (by the wall clock) leaves alone.
    const FUTURE: u64 = u64::MAX;

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
    fn deferred_writes_still_refuse_replays_and_persist_on_sync_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.redb");
        let client = Address::repeat_byte(0x33);
        {
            let store =
                ReplayStore::open(&path).unwrap().with_sync_interval(Duration::from_secs(3600));
            store.check_and_record(client, 1, FUTURE, 100).unwrap();
            assert_eq!(store.held(), 1, "the nonce is held, not written");
            assert!(matches!(
                store.check_and_record(client, 1, FUTURE, 100),
                Err(Error::NonceReplayed { nonce: 1, .. })
            ));
            store.sync().unwrap();
            assert_eq!(store.held(), 0);
            // Written: refused from the database now.
            assert!(matches!(
                store.check_and_record(client, 1, FUTURE, 100),
                Err(Error::NonceReplayed { nonce: 1, .. })
            ));
            store.check_and_record(client, 2, FUTURE, 100).unwrap();
            assert!(store.contains(client, 2).unwrap());
            assert_eq!(store.len().unwrap(), 2);
            // Dropped with nonce 2 still held: the drop writes it.
        }
        let store = ReplayStore::open(&path).unwrap();
        for nonce in [1, 2] {
            assert!(store.contains(client, nonce).unwrap(), "nonce {nonce} was persisted");
        }
    }

    #[test]
    fn a_batch_refuses_a_nonce_it_repeats_and_held_nonces_are_written_when_overdue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.redb");
        let store = ReplayStore::open(&path).unwrap().with_sync_interval(Duration::from_millis(5));
        let client = Address::repeat_byte(0x44);
        let results =
            store.check_and_record_batch(&[(client, 1, FUTURE), (client, 1, FUTURE)], 100).unwrap();
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(Error::NonceReplayed { nonce: 1, .. })));
        // No timer calls `sync` here: a check long after the last write writes them itself.
        std::thread::sleep(Duration::from_millis(20));
        store.check_and_record(client, 2, FUTURE, 100).unwrap();
        assert_eq!(store.held(), 0, "the overdue check wrote the held nonces");
        // Nothing held, so these answers come from the database.
        assert!(store.contains(client, 1).unwrap() && store.contains(client, 2).unwrap());
    }

    #[test]
    fn a_zero_interval_keeps_every_write_synced() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplayStore::open(&dir.path().join("r.redb"))
            .unwrap()
            .with_sync_interval(Duration::ZERO);
        store.check_and_record(Address::repeat_byte(0x55), 1, FUTURE, 100).unwrap();
        assert_eq!(store.held(), 0);
        assert_eq!(store.len().unwrap(), 1);
    }
}
