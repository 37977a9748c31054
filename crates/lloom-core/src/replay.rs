//! Durable nonce-replay protection.
//!
//! An executor records every `(client, nonce)` it accepts together with the request's deadline,
//! in an embedded redb database, so a replayed request is refused even after a restart. Once a
//! deadline has passed the request is refused by the deadline rule anyway, so its entry can be
//! pruned: with deadlines capped by
//! [`VerifyPolicy::max_deadline_horizon_secs`](crate::VerifyPolicy), the store holds at most
//! one horizon's worth of accepted requests.

use std::path::Path;

use alloy_primitives::Address;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::error::{Error, Result};

/// `client ‖ nonce` (28 bytes) → deadline.
const SEEN: TableDefinition<'_, &[u8], u64> = TableDefinition::new("seen_nonces");
/// `deadline ‖ client ‖ nonce` (36 bytes) → (), ordered by deadline for pruning.
const BY_DEADLINE: TableDefinition<'_, &[u8], ()> = TableDefinition::new("nonces_by_deadline");

/// A persistent set of used `(client, nonce)` pairs.
pub struct ReplayStore {
    db: Database,
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
        Ok(Self { db })
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
        let key = seen_key(client, nonce);
        let txn = self.db.begin_write()?;
        {
            let mut seen = txn.open_table(SEEN)?;
            if seen.get(key.as_slice())?.is_some() {
                return Err(Error::NonceReplayed { client, nonce });
            }
            seen.insert(key.as_slice(), deadline)?;
            let mut by_deadline = txn.open_table(BY_DEADLINE)?;
            by_deadline.insert(deadline_key(deadline, &key).as_slice(), ())?;
            prune(&mut seen, &mut by_deadline, now, PRUNE_PER_CALL)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// [`ReplayStore::check_and_record`] for many requests in one durable transaction (group
    /// commit: one disk sync for the batch). Results are in input order; a nonce repeated
    /// within the batch is refused for all but its first occurrence.
    pub fn check_and_record_batch(
        &self,
        requests: &[(Address, u64, u64)],
        now: u64,
    ) -> Result<Vec<Result<()>>> {
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
        let txn = self.db.begin_read()?;
        let seen = txn.open_table(SEEN)?;
        Ok(seen.get(seen_key(client, nonce).as_slice())?.is_some())
    }

    /// Removes every entry whose deadline is before `now`; returns how many were removed.
    pub fn prune_expired(&self, now: u64) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut seen = txn.open_table(SEEN)?;
            let mut by_deadline = txn.open_table(BY_DEADLINE)?;
            prune(&mut seen, &mut by_deadline, now, usize::MAX)?
        };
        txn.commit()?;
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
}
