//! What each API key has spent, kept durably so that a key's budget holds across restarts.
//!
//! The ledger is a small redb database (`gateway-spend.redb` in the client's data directory by
//! default) holding, per key name, a running total in wei and when it started: the start of
//! the key's budget period (see [`super::BudgetPeriod`]), or 0 without periods. A charge in a
//! later period starts the total again from zero. A charge is on disk before the
//! gateway sends the answer it pays for; totals are also kept in memory, so checking a key
//! against its budget reads no disk. Charges that arrive while a write is under way are
//! committed together by the next one (group commit), so a busy gateway syncs once for many.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use lloom_core::U256;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};

/// key name → when the total started (unix seconds, 8 bytes) ‖ total spent in wei (32 bytes),
/// both big-endian.
const SPENT: TableDefinition<'_, &str, &[u8; 40]> = TableDefinition::new("gateway_key_spend");
/// Page cache: one entry per key, so a little is plenty.
const CACHE_BYTES: usize = 1024 * 1024;

fn db<T, E: std::fmt::Display>(result: std::result::Result<T, E>) -> Result<T> {
    result.map_err(|e| Error::State(format!("spend ledger: {e}")))
}

/// The spend of every API key, on disk and in memory.
pub struct SpendLedger {
    path: PathBuf,
    db: Arc<Database>,
    totals: Mutex<Totals>,
    /// One durable write at a time; whoever holds it commits every charge made so far.
    writer: tokio::sync::Mutex<()>,
}

/// One key's spend: since when, and how much.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeySpend {
    /// When this total started (the start of its budget period, in unix seconds; 0 without
    /// periods).
    pub since: u64,
    /// Wei spent since then.
    pub spent: U256,
}

impl KeySpend {
    fn encode(self) -> [u8; 40] {
        let mut bytes = [0u8; 40];
        bytes[..8].copy_from_slice(&self.since.to_be_bytes());
        bytes[8..].copy_from_slice(&self.spent.to_be_bytes::<32>());
        bytes
    }

    fn decode(bytes: &[u8; 40]) -> Self {
        let (since, spent) = bytes.split_at(8);
        Self {
            since: u64::from_be_bytes(since.try_into().unwrap_or_default()),
            spent: U256::from_be_slice(spent),
        }
    }

    /// What was spent in the period that started at `since` (0 if this total is older).
    fn in_period(self, since: u64) -> U256 {
        if self.since == since { self.spent } else { U256::ZERO }
    }
}

/// The totals as charged, and which of them are not on disk yet.
#[derive(Default)]
struct Totals {
    spent: HashMap<Arc<str>, KeySpend>,
    /// Keys whose total changed since the last commit.
    dirty: HashSet<Arc<str>>,
    /// Charges made (each has its number).
    charged: u64,
    /// Charges up to this number are on disk.
    committed: u64,
}

impl std::fmt::Debug for SpendLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendLedger").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SpendLedger {
    /// Opens (or creates) the ledger at `path` and reads every key's total.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let database = match Database::builder().set_cache_size(CACHE_BYTES).create(path) {
            Ok(database) => database,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::State(format!(
                    "spend ledger {} is open in another process (a running gateway?)",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::State(format!("spend ledger {}: {e}", path.display()))),
        };
        let txn = db(database.begin_write())?;
        db(txn.open_table(SPENT))?;
        db(txn.commit())?;
        let mut spent = HashMap::new();
        let txn = db(database.begin_read())?;
        let table = db(txn.open_table(SPENT))?;
        for entry in db(table.iter())? {
            let (name, spend) = db(entry)?;
            spent.insert(Arc::from(name.value()), KeySpend::decode(spend.value()));
        }
        drop(table);
        drop(txn);
        Ok(Self {
            path: path.to_owned(),
            db: Arc::new(database),
            totals: Mutex::new(Totals { spent, ..Totals::default() }),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// Where the ledger is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What `key` has spent in the period that started at `since` (0 without periods), in wei.
    pub fn spent(&self, key: &str, since: u64) -> U256 {
        self.totals().spent.get(key).map_or(U256::ZERO, |s| s.in_period(since))
    }

    /// Every key's latest total, sorted by name.
    pub fn all(&self) -> Vec<(Arc<str>, KeySpend)> {
        let mut all: Vec<(Arc<str>, KeySpend)> =
            self.totals().spent.iter().map(|(name, spend)| (name.clone(), *spend)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn totals(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.totals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `amount` to what `key` has spent in the period that started at `since` (a total
    /// from an earlier period starts again from zero) and returns the new total once it is on
    /// disk. When the disk refuses the write, the total is still raised in memory (the gateway
    /// goes on counting the key's spend, and the next write tries again) and the error is
    /// returned.
    pub async fn charge(&self, key: &Arc<str>, amount: U256, since: u64) -> Result<U256> {
        let (total, number) = {
            let mut totals = self.totals();
            let before = totals.spent.get(key).map_or(U256::ZERO, |s| s.in_period(since));
            let total = before.saturating_add(amount);
            if amount.is_zero() {
                return Ok(total);
            }
            totals.spent.insert(key.clone(), KeySpend { since, spent: total });
            totals.dirty.insert(key.clone());
            totals.charged += 1;
            (total, totals.charged)
        };
        let _turn = self.writer.lock().await;
        let (rows, through) = {
            let mut totals = self.totals();
            if totals.committed >= number {
                return Ok(total); // a write made while this one waited carried it
            }
            let Totals { spent, dirty, .. } = &mut *totals;
            let rows: Vec<(Arc<str>, KeySpend)> = dirty
                .drain()
                .map(|name| {
                    let spend = spent.get(&name).copied().unwrap_or_default();
                    (name, spend)
                })
                .collect();
            (rows, totals.charged)
        };
        let db = self.db.clone();
        let pending = rows.clone();
        let written = tokio::task::spawn_blocking(move || write(&db, &pending))
            .await
            .map_err(|e| Error::State(format!("spend ledger: {e}")))
            .and_then(|written| written);
        let mut totals = self.totals();
        match written {
            Ok(()) => {
                totals.committed = totals.committed.max(through);
                Ok(total)
            }
            Err(e) => {
                totals.dirty.extend(rows.into_iter().map(|(name, _)| name));
                Err(e)
            }
        }
    }

    /// Sets what `key` has spent back to zero (an operator's reset of its budget).
    pub fn reset(&self, key: &str) -> Result<()> {
        let txn = db(self.db.begin_write())?;
        db(db(txn.open_table(SPENT))?.remove(key))?;
        db(txn.commit())?;
        let mut totals = self.totals();
        totals.spent.remove(key);
        totals.dirty.remove(key);
        Ok(())
    }
}

/// Commits `rows` in one durable transaction.
fn write(database: &Database, rows: &[(Arc<str>, KeySpend)]) -> Result<()> {
    let txn = db(database.begin_write())?;
    {
        let mut table = db(txn.open_table(SPENT))?;
        for (name, spend) in rows {
            db(table.insert(&**name, &spend.encode()))?;
        }
    }
    db(txn.commit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_add_up_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.redb");
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let ledger = SpendLedger::open(&path).unwrap();
        assert_eq!(ledger.spent("alice", 0), U256::ZERO);
        assert_eq!(ledger.charge(&alice, U256::from(30), 0).await.unwrap(), U256::from(30));
        assert_eq!(ledger.charge(&alice, U256::from(12), 0).await.unwrap(), U256::from(42));
        assert_eq!(ledger.charge(&bob, U256::from(5), 0).await.unwrap(), U256::from(5));
        assert_eq!(ledger.charge(&bob, U256::ZERO, 0).await.unwrap(), U256::from(5));
        drop(ledger);
        let ledger = SpendLedger::open(&path).unwrap();
        let spend = |since, spent: u64| KeySpend { since, spent: U256::from(spent) };
        assert_eq!(ledger.all(), vec![(alice.clone(), spend(0, 42)), (bob, spend(0, 5))]);
        ledger.reset("alice").unwrap();
        drop(ledger);
        assert_eq!(SpendLedger::open(&path).unwrap().spent("alice", 0), U256::ZERO);
    }

    #[tokio::test]
    async fn a_new_period_starts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.redb");
        let alice: Arc<str> = "alice".into();
        let (december, january) = (1_796_083_200, 1_798_761_600);
        let ledger = SpendLedger::open(&path).unwrap();
        ledger.charge(&alice, U256::from(40), december).await.unwrap();
        assert_eq!(ledger.spent("alice", december), U256::from(40));
        assert_eq!(ledger.spent("alice", january), U256::ZERO, "a new month");
        assert_eq!(ledger.charge(&alice, U256::from(7), january).await.unwrap(), U256::from(7));
        drop(ledger);
        let ledger = SpendLedger::open(&path).unwrap();
        assert_eq!(ledger.all(), vec![(alice, KeySpend { since: january, spent: U256::from(7) })]);
        assert_eq!(ledger.spent("alice", december), U256::ZERO, "December's total is gone");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_charges_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.redb");
        let ledger = Arc::new(SpendLedger::open(&path).unwrap());
        let key: Arc<str> = "k".into();
        let tasks: Vec<_> = (1..=20u64)
            .map(|n| {
                let (ledger, key) = (ledger.clone(), key.clone());
                tokio::spawn(async move { ledger.charge(&key, U256::from(n), 0).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(ledger.spent("k", 0), U256::from(210));
        drop(ledger);
        assert_eq!(SpendLedger::open(&path).unwrap().spent("k", 0), U256::from(210));
    }

    #[test]
    fn a_file_that_is_not_a_ledger_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.redb");
        std::fs::write(&path, b"not a database at all, just some bytes").unwrap();
        let err = SpendLedger::open(&path).unwrap_err().to_string();
        assert!(err.contains("spend ledger"), "{err}");
    }
}
