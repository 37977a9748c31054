//! The receipt database's tables (redb) and the operations on them.
//!
//! Receipts live in a log under increasing sequence numbers, so a checkpoint appends to the
//! log's last pages instead of dirtying a page per receipt all over the tree. A small index
//! maps each request digest to its sequence number, so writing the same exchange twice is
//! idempotent, and an `unsettled` set of sequence numbers lists, oldest first, what the
//! settlement loop still has to submit.

use lloom_core::B256;
use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, WriteTransaction,
};

use super::Receipt;
use crate::error::Result;

/// sequence number (storage order) → postcard([`Receipt`]).
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("receipt_log");
/// request digest → the receipt's sequence number in [`LOG`].
const BY_DIGEST: TableDefinition<'_, &[u8; 32], u64> = TableDefinition::new("receipt_by_digest");
/// sequence numbers of the receipts not yet settled.
const UNSETTLED: TableDefinition<'_, u64, ()> = TableDefinition::new("unsettled_log");
/// request digest → the contract's rejection code, for receipts the contract refused for good.
const REJECTED: TableDefinition<'_, &[u8; 32], u8> = TableDefinition::new("rejected");
/// Store-wide values: [`GENERATION`].
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("receipt_meta");
/// The journal generation whose records are not in the tables yet.
const GENERATION: &str = "journal_generation";

/// The first layout: receipts and the unsettled set keyed by request digest. Opening such a
/// store moves its receipts into the log (in digest order) and drops these tables.
const V1_RECEIPTS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("receipts");
/// The first layout's unsettled set: request digest → ().
const V1_UNSETTLED: TableDefinition<'_, &[u8; 32], ()> = TableDefinition::new("unsettled");

/// Maps a storage error into this crate's error.
pub(super) fn stored<T>(result: std::result::Result<T, impl Into<lloom_core::Error>>) -> Result<T> {
    result.map_err(|e| crate::Error::Core(e.into()))
}

/// The sequence number the next new receipt gets.
fn next_sequence(log: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64> {
    Ok(stored(log.last())?.map_or(0, |(sequence, _)| sequence.value() + 1))
}

fn decode(bytes: &[u8]) -> Result<Receipt> {
    Ok(postcard::from_bytes(bytes).map_err(lloom_core::Error::from)?)
}

/// Creates the tables that do not exist yet and migrates a first-layout store.
pub(super) fn prepare(txn: &WriteTransaction) -> Result<()> {
    stored(txn.open_table(LOG))?;
    stored(txn.open_table(BY_DIGEST))?;
    stored(txn.open_table(UNSETTLED))?;
    stored(txn.open_table(REJECTED))?;
    stored(txn.open_table(META))?;
    migrate_v1(txn)
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

/// The journal generation recorded in the store (0 for a new store).
pub(super) fn generation(txn: &WriteTransaction) -> Result<u64> {
    let meta = stored(txn.open_table(META))?;
    Ok(stored(meta.get(GENERATION))?.map_or(0, |g| g.value()))
}

/// Records the journal generation whose records are not in the tables yet.
pub(super) fn set_generation(txn: &WriteTransaction, generation: u64) -> Result<()> {
    let mut meta = stored(txn.open_table(META))?;
    stored(meta.insert(GENERATION, generation))?;
    Ok(())
}

/// Writes encoded receipts (`(request digest, postcard bytes)`), in order. A receipt for the
/// same request replaces the earlier one only while it is unsettled, so a final response
/// supersedes a checkpoint but nothing changes after settlement.
pub(super) fn insert(txn: &WriteTransaction, receipts: &[(B256, Vec<u8>)]) -> Result<()> {
    let mut log = stored(txn.open_table(LOG))?;
    let mut by_digest = stored(txn.open_table(BY_DIGEST))?;
    let mut unsettled = stored(txn.open_table(UNSETTLED))?;
    let mut next = next_sequence(&log)?;
    for (digest, bytes) in receipts {
        let digest = &digest.0;
        let known = stored(by_digest.get(digest))?.map(|sequence| sequence.value());
        let sequence = match known {
            // Settled (or refused for good): it never changes again.
            Some(sequence) if stored(unsettled.get(sequence))?.is_none() => continue,
            // Still unsettled: a final response supersedes a checkpoint in place.
            Some(sequence) => sequence,
            None => {
                stored(by_digest.insert(digest, next))?;
                stored(unsettled.insert(next, ()))?;
                next += 1;
                next - 1
            }
        };
        stored(log.insert(sequence, bytes.as_slice()))?;
    }
    Ok(())
}

/// Where a digest stands in the tables.
pub(super) enum Stored {
    /// Not in the tables.
    Absent,
    /// Stored and still to be settled.
    Unsettled,
    /// Stored and settled (or refused for good): it never changes again.
    Final,
}

/// Whether and how `digest` is stored.
pub(super) fn status(db: &Database, digest: &B256) -> Result<Stored> {
    let txn = stored(db.begin_read())?;
    let by_digest = stored(txn.open_table(BY_DIGEST))?;
    let Some(sequence) = stored(by_digest.get(&digest.0))?.map(|s| s.value()) else {
        return Ok(Stored::Absent);
    };
    let unsettled = stored(txn.open_table(UNSETTLED))?;
    Ok(if stored(unsettled.get(sequence))?.is_some() { Stored::Unsettled } else { Stored::Final })
}

/// The receipt for `digest`, if stored.
pub(super) fn get(db: &Database, digest: &B256) -> Result<Option<Receipt>> {
    let txn = stored(db.begin_read())?;
    let by_digest = stored(txn.open_table(BY_DIGEST))?;
    let Some(sequence) = stored(by_digest.get(&digest.0))?.map(|s| s.value()) else {
        return Ok(None);
    };
    let log = stored(txn.open_table(LOG))?;
    stored(log.get(sequence))?.map(|bytes| decode(bytes.value())).transpose()
}

/// Whether a receipt for `digest` is stored (settled or not).
pub(super) fn contains(index: &DigestIndex, digest: &B256) -> Result<bool> {
    Ok(stored(index.get(&digest.0))?.is_some())
}

/// The digest index as of one read transaction.
pub(super) type DigestIndex = ReadOnlyTable<&'static [u8; 32], u64>;

/// The digest index as the database holds it now.
pub(super) fn digest_index(db: &Database) -> Result<DigestIndex> {
    stored(stored(db.begin_read())?.open_table(BY_DIGEST))
}

/// Up to `limit` unsettled receipts, oldest first.
pub(super) fn unsettled(db: &Database, limit: usize) -> Result<Vec<Receipt>> {
    let txn = stored(db.begin_read())?;
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
pub(super) fn all(db: &Database, limit: usize) -> Result<Vec<Receipt>> {
    let txn = stored(db.begin_read())?;
    let log = stored(txn.open_table(LOG))?;
    let mut out = Vec::new();
    for entry in stored(log.iter())?.take(limit) {
        let (_, bytes) = stored(entry)?;
        out.push(decode(bytes.value())?);
    }
    Ok(out)
}

/// Takes `digests` out of the unsettled set; with `rejected`, also records why the contract
/// refused each one.
pub(super) fn settle(db: &Database, digests: &[B256], rejected: &[(B256, u8)]) -> Result<()> {
    let txn = stored(db.begin_write())?;
    {
        let by_digest = stored(txn.open_table(BY_DIGEST))?;
        let mut unsettled = stored(txn.open_table(UNSETTLED))?;
        let mut table = stored(txn.open_table(REJECTED))?;
        for digest in digests.iter().chain(rejected.iter().map(|(digest, _)| digest)) {
            if let Some(sequence) = stored(by_digest.get(&digest.0))?.map(|s| s.value()) {
                stored(unsettled.remove(sequence))?;
            }
        }
        for (digest, reason) in rejected {
            stored(table.insert(&digest.0, *reason))?;
        }
    }
    stored(txn.commit())
}

/// The contract's rejection code for `digest`, if it refused the receipt for good.
pub(super) fn rejection(db: &Database, digest: &B256) -> Result<Option<u8>> {
    let txn = stored(db.begin_read())?;
    let table = stored(txn.open_table(REJECTED))?;
    Ok(stored(table.get(&digest.0))?.map(|v| v.value()))
}

/// How many receipts are stored, and how many of them are unsettled.
pub(super) fn counts(db: &Database) -> Result<(u64, u64)> {
    let txn = stored(db.begin_read())?;
    let total = stored(stored(txn.open_table(LOG))?.len())?;
    let unsettled = stored(stored(txn.open_table(UNSETTLED))?.len())?;
    Ok((total, unsettled))
}
