//! The durable receipt store: every completed exchange, written before the final response
//! leaves the executor, kept until it is settled on chain.
//!
//! A receipt is the client's signed request plus the executor's signed response (or, for a
//! stream that broke, the last signed checkpoint). Receipts live in a log under increasing
//! sequence numbers, so a group commit appends to the log's last pages instead of dirtying a
//! page per receipt all over the tree. A small index maps each request digest to its
//! sequence number, so writing the same exchange twice is idempotent, and an `unsettled` set
//! of sequence numbers lists, oldest first, what the settlement loop still has to submit.

use std::path::Path;

use lloom_core::{B256, SignedRequest, SignedResponse};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Page cache of the database: bounds the memory the store holds, whatever its size on disk.
const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// sequence number (storage order) → postcard([`Receipt`]).
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("receipt_log");
/// request digest → the receipt's sequence number in [`LOG`].
const BY_DIGEST: TableDefinition<'_, &[u8; 32], u64> = TableDefinition::new("receipt_by_digest");
/// sequence numbers of the receipts not yet settled.
const UNSETTLED: TableDefinition<'_, u64, ()> = TableDefinition::new("unsettled_log");
/// request digest → the contract's rejection code, for receipts the contract refused for good.
const REJECTED: TableDefinition<'_, &[u8; 32], u8> = TableDefinition::new("rejected");

/// The first layout: receipts and the unsettled set keyed by request digest. Opening such a
/// store moves its receipts into the log (in digest order) and drops these tables.
const V1_RECEIPTS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("receipts");
/// The first layout's unsettled set: request digest → ().
const V1_UNSETTLED: TableDefinition<'_, &[u8; 32], ()> = TableDefinition::new("unsettled");

/// One settleable exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The client's signed request.
    pub request: SignedRequest,
    /// The executor's signed final response, or its last checkpoint for a broken stream.
    pub response: SignedResponse,
}

impl Receipt {
    /// The request digest this receipt is stored under.
    pub fn digest(&self) -> B256 {
        self.response.commitment.requestDigest
    }
}

/// Receipts in an embedded redb database.
pub struct ReceiptStore {
    db: Database,
}

impl std::fmt::Debug for ReceiptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptStore").finish_non_exhaustive()
    }
}

/// Maps a storage error into this crate's error.
fn stored<T>(result: std::result::Result<T, impl Into<lloom_core::Error>>) -> Result<T> {
    result.map_err(|e| crate::Error::Core(e.into()))
}

/// The sequence number the next new receipt gets.
fn next_sequence(log: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64> {
    Ok(stored(log.last())?.map_or(0, |(sequence, _)| sequence.value() + 1))
}

fn decode(bytes: &[u8]) -> Result<Receipt> {
    Ok(postcard::from_bytes(bytes).map_err(lloom_core::Error::from)?)
}

/// Moves a first-layout store's receipts into the log, inside the opening transaction.
fn migrate_v1(txn: &WriteTransaction) -> Result<()> {
    let has_v1 = stored(txn.list_tables())?.any(|table| table.name() == V1_RECEIPTS.name());
    if !has_v1 {
        return Ok(());
    }
    {
        let old = stored(txn.open_table(V1_RECEIPTS))?;
        let old_unsettled = stored(txn.open_table(V1_UNSETTLED))?;
        let mut log = stored(txn.open_table(LOG))?;
        let mut by_digest = stored(txn.open_table(BY_DIGEST))?;
        let mut unsettled = stored(txn.open_table(UNSETTLED))?;
        let first = next_sequence(&log)?;
        for (sequence, entry) in (first..).zip(stored(old.iter())?) {
            let (digest, bytes) = stored(entry)?;
            let digest = digest.value();
            stored(log.insert(sequence, bytes.value()))?;
            stored(by_digest.insert(digest, sequence))?;
            if stored(old_unsettled.get(digest))?.is_some() {
                stored(unsettled.insert(sequence, ()))?;
            }
        }
    }
    stored(txn.delete_table(V1_RECEIPTS))?;
    stored(txn.delete_table(V1_UNSETTLED))?;
    Ok(())
}

impl ReceiptStore {
    /// Opens (or creates) the store at `path`; a store of the first layout is migrated.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = stored(Database::builder().set_cache_size(CACHE_BYTES).create(path))?;
        let txn = stored(db.begin_write())?;
        stored(txn.open_table(LOG))?;
        stored(txn.open_table(BY_DIGEST))?;
        stored(txn.open_table(UNSETTLED))?;
        stored(txn.open_table(REJECTED))?;
        migrate_v1(&txn)?;
        stored(txn.commit())?;
        Ok(Self { db })
    }

    /// Stores `receipt` durably (the call returns after the commit is on disk).
    ///
    /// A receipt for the same request replaces the earlier one only while it is unsettled, so
    /// a final response supersedes a checkpoint but nothing changes after settlement.
    pub fn put(&self, receipt: &Receipt) -> Result<()> {
        self.put_batch(std::slice::from_ref(receipt))
    }

    /// [`ReceiptStore::put`] for many receipts in one durable transaction (group commit).
    pub fn put_batch(&self, batch: &[Receipt]) -> Result<()> {
        let txn = stored(self.db.begin_write())?;
        {
            let mut log = stored(txn.open_table(LOG))?;
            let mut by_digest = stored(txn.open_table(BY_DIGEST))?;
            let mut unsettled = stored(txn.open_table(UNSETTLED))?;
            let mut next = next_sequence(&log)?;
            for receipt in batch {
                let digest = receipt.digest().0;
                let known = stored(by_digest.get(&digest))?.map(|sequence| sequence.value());
                let sequence = match known {
                    // Settled (or refused for good): it never changes again.
                    Some(sequence) if stored(unsettled.get(sequence))?.is_none() => continue,
                    // Still unsettled: a final response supersedes a checkpoint in place.
                    Some(sequence) => sequence,
                    None => {
                        stored(by_digest.insert(&digest, next))?;
                        stored(unsettled.insert(next, ()))?;
                        next += 1;
                        next - 1
                    }
                };
                let bytes = postcard::to_stdvec(receipt).map_err(lloom_core::Error::from)?;
                stored(log.insert(sequence, bytes.as_slice()))?;
            }
        }
        stored(txn.commit())
    }

    /// The receipt for `digest`, if stored.
    pub fn get(&self, digest: &B256) -> Result<Option<Receipt>> {
        let txn = stored(self.db.begin_read())?;
        let by_digest = stored(txn.open_table(BY_DIGEST))?;
        let Some(sequence) = stored(by_digest.get(&digest.0))?.map(|s| s.value()) else {
            return Ok(None);
        };
        let log = stored(txn.open_table(LOG))?;
        stored(log.get(sequence))?.map(|bytes| decode(bytes.value())).transpose()
    }

    /// Whether a receipt for `digest` is stored (settled or not).
    pub fn contains(&self, digest: &B256) -> Result<bool> {
        let txn = stored(self.db.begin_read())?;
        let by_digest = stored(txn.open_table(BY_DIGEST))?;
        Ok(stored(by_digest.get(&digest.0))?.is_some())
    }

    /// Up to `limit` unsettled receipts, oldest first.
    pub fn unsettled(&self, limit: usize) -> Result<Vec<Receipt>> {
        let txn = stored(self.db.begin_read())?;
        let log = stored(txn.open_table(LOG))?;
        let unsettled = stored(txn.open_table(UNSETTLED))?;
        let mut out = Vec::new();
        for entry in stored(unsettled.iter())?.take(limit) {
            let (sequence, _) = stored(entry)?;
            if let Some(bytes) = stored(log.get(sequence.value()))? {
                out.push(decode(bytes.value())?);
            }
        }
        Ok(out)
    }

    /// Up to `limit` receipts, settled or not, oldest first.
    pub fn all(&self, limit: usize) -> Result<Vec<Receipt>> {
        let txn = stored(self.db.begin_read())?;
        let log = stored(txn.open_table(LOG))?;
        let mut out = Vec::new();
        for entry in stored(log.iter())?.take(limit) {
            let (_, bytes) = stored(entry)?;
            out.push(decode(bytes.value())?);
        }
        Ok(out)
    }

    /// Marks receipts settled (after their settlement transaction is confirmed).
    pub fn mark_settled(&self, digests: &[B256]) -> Result<()> {
        let txn = stored(self.db.begin_write())?;
        {
            let by_digest = stored(txn.open_table(BY_DIGEST))?;
            let mut unsettled = stored(txn.open_table(UNSETTLED))?;
            for digest in digests {
                if let Some(sequence) = stored(by_digest.get(&digest.0))?.map(|s| s.value()) {
                    stored(unsettled.remove(sequence))?;
                }
            }
        }
        stored(txn.commit())
    }

    /// Records that the contract refused receipts for good (they leave the unsettled set).
    pub fn mark_rejected(&self, rejected: &[(B256, u8)]) -> Result<()> {
        let txn = stored(self.db.begin_write())?;
        {
            let by_digest = stored(txn.open_table(BY_DIGEST))?;
            let mut unsettled = stored(txn.open_table(UNSETTLED))?;
            let mut table = stored(txn.open_table(REJECTED))?;
            for (digest, reason) in rejected {
                if let Some(sequence) = stored(by_digest.get(&digest.0))?.map(|s| s.value()) {
                    stored(unsettled.remove(sequence))?;
                }
                stored(table.insert(&digest.0, *reason))?;
            }
        }
        stored(txn.commit())
    }

    /// The contract's rejection code for `digest`, if it refused the receipt for good.
    pub fn rejection(&self, digest: &B256) -> Result<Option<u8>> {
        let txn = stored(self.db.begin_read())?;
        let table = stored(txn.open_table(REJECTED))?;
        Ok(stored(table.get(&digest.0))?.map(|v| v.value()))
    }

    /// How many receipts are stored, and how many of them are unsettled.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let txn = stored(self.db.begin_read())?;
        let total = stored(stored(txn.open_table(LOG))?.len())?;
        let unsettled = stored(stored(txn.open_table(UNSETTLED))?.len())?;
        Ok((total, unsettled))
    }
}
