//! The durable receipt store: every completed exchange, written before the final response
//! leaves the executor, kept until it is settled on chain.
//!
//! A receipt is the client's signed request plus the executor's signed response (or, for a
//! stream that broke, the last signed checkpoint). Receipts are keyed by the request digest, so
//! writing the same exchange twice is idempotent, and an `unsettled` index lists what the
//! settlement loop still has to submit.

use std::path::Path;

use lloom_core::{B256, SignedRequest, SignedResponse};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Page cache of the database: bounds the memory the store holds, whatever its size on disk.
const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// request digest → postcard([`Receipt`]).
const RECEIPTS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("receipts");
/// request digest → (), for receipts not yet settled.
const UNSETTLED: TableDefinition<'_, &[u8; 32], ()> = TableDefinition::new("unsettled");
/// request digest → the contract's rejection code, for receipts the contract refused for good.
const REJECTED: TableDefinition<'_, &[u8; 32], u8> = TableDefinition::new("rejected");

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

impl ReceiptStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = stored(Database::builder().set_cache_size(CACHE_BYTES).create(path))?;
        let txn = stored(db.begin_write())?;
        stored(txn.open_table(RECEIPTS))?;
        stored(txn.open_table(UNSETTLED))?;
        stored(txn.open_table(REJECTED))?;
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
            let mut receipts = stored(txn.open_table(RECEIPTS))?;
            let mut unsettled = stored(txn.open_table(UNSETTLED))?;
            for receipt in batch {
                let key = receipt.digest().0;
                let bytes = postcard::to_stdvec(receipt).map_err(lloom_core::Error::from)?;
                let settled =
                    stored(receipts.get(&key))?.is_some() && stored(unsettled.get(&key))?.is_none();
                if !settled {
                    stored(receipts.insert(&key, bytes.as_slice()))?;
                    stored(unsettled.insert(&key, ()))?;
                }
            }
        }
        stored(txn.commit())
    }

    /// The receipt for `digest`, if stored.
    pub fn get(&self, digest: &B256) -> Result<Option<Receipt>> {
        let txn = stored(self.db.begin_read())?;
        let receipts = stored(txn.open_table(RECEIPTS))?;
        match stored(receipts.get(&digest.0))? {
            Some(bytes) => {
                Ok(Some(postcard::from_bytes(bytes.value()).map_err(lloom_core::Error::from)?))
            }
            None => Ok(None),
        }
    }

    /// Whether a receipt for `digest` is stored (settled or not).
    pub fn contains(&self, digest: &B256) -> Result<bool> {
        let txn = stored(self.db.begin_read())?;
        let receipts = stored(txn.open_table(RECEIPTS))?;
        Ok(stored(receipts.get(&digest.0))?.is_some())
    }

    /// Up to `limit` unsettled receipts, in digest order.
    pub fn unsettled(&self, limit: usize) -> Result<Vec<Receipt>> {
        let txn = stored(self.db.begin_read())?;
        let receipts = stored(txn.open_table(RECEIPTS))?;
        let unsettled = stored(txn.open_table(UNSETTLED))?;
        let mut out = Vec::new();
        for entry in stored(unsettled.iter())?.take(limit) {
            let (key, _) = stored(entry)?;
            if let Some(bytes) = stored(receipts.get(key.value()))? {
                out.push(postcard::from_bytes(bytes.value()).map_err(lloom_core::Error::from)?);
            }
        }
        Ok(out)
    }

    /// Up to `limit` receipts, settled or not, in digest order.
    pub fn all(&self, limit: usize) -> Result<Vec<Receipt>> {
        let txn = stored(self.db.begin_read())?;
        let receipts = stored(txn.open_table(RECEIPTS))?;
        let mut out = Vec::new();
        for entry in stored(receipts.iter())?.take(limit) {
            let (_, bytes) = stored(entry)?;
            out.push(postcard::from_bytes(bytes.value()).map_err(lloom_core::Error::from)?);
        }
        Ok(out)
    }

    /// Marks receipts settled (after their settlement transaction is confirmed).
    pub fn mark_settled(&self, digests: &[B256]) -> Result<()> {
        let txn = stored(self.db.begin_write())?;
        {
            let mut unsettled = stored(txn.open_table(UNSETTLED))?;
            for digest in digests {
                stored(unsettled.remove(&digest.0))?;
            }
        }
        stored(txn.commit())
    }

    /// Records that the contract refused receipts for good (they leave the unsettled set).
    pub fn mark_rejected(&self, rejected: &[(B256, u8)]) -> Result<()> {
        let txn = stored(self.db.begin_write())?;
        {
            let mut unsettled = stored(txn.open_table(UNSETTLED))?;
            let mut table = stored(txn.open_table(REJECTED))?;
            for (digest, reason) in rejected {
                stored(unsettled.remove(&digest.0))?;
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
        let total = stored(stored(txn.open_table(RECEIPTS))?.len())?;
        let unsettled = stored(stored(txn.open_table(UNSETTLED))?.len())?;
        Ok((total, unsettled))
    }
}
