//! The durable receipt store: every completed exchange, written before the final response
//! leaves the executor, kept until it is settled on chain.
//!
//! A receipt is the client's signed request plus the executor's signed response (or, for a
//! stream that broke, the last signed checkpoint). A write is durable once it is in the
//! journal ([`lloom_core::journal`]): one append and one `fdatasync` per group commit. The
//! journal's receipts are also held in memory (encoded, at most the journal's capacity) and
//! answer lookups until a checkpoint moves them into the redb database (`tables.rs`) in one
//! transaction: when the journal is full, before any query over the whole store (settlement,
//! listings, counts), when the store is dropped, and when it is opened after a crash. Should
//! the journal fail to write, the store moves what it holds into the database and writes every
//! later receipt there directly.

mod tables;

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use lloom_core::journal::{self, Journal, Record, Staged};
use lloom_core::{B256, SignedRequest, SignedResponse};
use redb::Database;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use tables::{DigestIndex, Stored, stored};

/// Page cache of the database: bounds the memory the store holds, whatever its size on disk.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

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

    /// A signed exchange for tests: `client` asks `executor` (model `m`) under `nonce`, and the
    /// response ends with `finish` (`Partial` for a checkpoint).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn sample(
        client: &lloom_core::NodeKey,
        executor: &lloom_core::NodeKey,
        nonce: u64,
        finish: lloom_core::FinishReason,
    ) -> Self {
        use lloom_core::{
            ChatMessage, DomainConfig, RequestBody, RequestCommitment, ResponseCommitment, Role,
            SamplingParams, U256,
        };
        let domain = DomainConfig::default();
        let body = RequestBody {
            messages: vec![ChatMessage { role: Role::User, content: format!("question {nonce}") }],
            sampling: SamplingParams::default(),
        };
        let commitment = RequestCommitment {
            client: client.address(),
            executor: executor.address(),
            model: "m".into(),
            requestHash: B256::repeat_byte(7),
            maxInputTokens: 100,
            maxOutputTokens: 100,
            pricePerInputToken: U256::from(1),
            pricePerOutputToken: U256::from(2),
            nonce,
            deadline: 4_000_000_000,
        };
        #[allow(clippy::expect_used)]
        let request = SignedRequest::sign(client, domain, commitment, body).expect("signs");
        let response = ResponseCommitment {
            requestDigest: request.digest(),
            client: client.address(),
            executor: executor.address(),
            model: "m".into(),
            contentHash: B256::repeat_byte(9),
            inputTokens: 10,
            outputTokens: 5,
            totalCost: U256::from(20),
            finishReason: finish.code(),
            timestamp: 1_000,
        };
        #[allow(clippy::expect_used)]
        let response = SignedResponse::sign(executor, domain, response).expect("signs");
        Self { request, response }
    }
}

/// Receipts in a journal in front of an embedded redb database.
pub struct ReceiptStore {
    db: Database,
    staged: Staged,
    /// The database's digest index as of its last write, so a lookup reads the tree without
    /// a read transaction of its own. Every write replaces it before its receipts leave the
    /// journal's staging, so each receipt is staged or in it. `None` after a write that could
    /// not reopen it: lookups then read the database afresh until the next write.
    written: RwLock<Option<DigestIndex>>,
}

impl std::fmt::Debug for ReceiptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptStore").finish_non_exhaustive()
    }
}

/// The journal that belongs to the database at `path`.
fn journal_path(path: &Path) -> PathBuf {
    path.with_extension("journal")
}

fn encode(receipt: &Receipt) -> Result<Vec<u8>> {
    Ok(postcard::to_stdvec(receipt).map_err(lloom_core::Error::from)?)
}

fn decode(bytes: &[u8]) -> Result<Receipt> {
    Ok(postcard::from_bytes(bytes).map_err(lloom_core::Error::from)?)
}

impl ReceiptStore {
    /// Opens (or creates) the store at `path` and its journal beside it (`.journal`). Receipts
    /// the journal holds from a run that did not close the store are moved into the database;
    /// a store of the first layout is migrated.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = stored(Database::builder().set_cache_size(CACHE_BYTES).create(path))?;
        let journal = Journal::open(&journal_path(path))?;
        let txn = stored(db.begin_write())?;
        tables::prepare(&txn)?;
        let found = tables::generation(&txn)?;
        let recovered =
            journal::recover(&journal, found, |bytes| decode(bytes).map(|r| r.digest()))?;
        tables::insert(&txn, &recovered)?;
        // Every run writes a generation of its own, so no record left from an earlier run
        // (behind a torn write, say) can pass for one of this run's.
        let generation = found + 1;
        tables::set_generation(&txn, generation)?;
        stored(txn.commit())?;
        let written = RwLock::new(Some(tables::digest_index(&db)?));
        Ok(Self { db, staged: Staged::new(journal, generation), written })
    }

    /// Stores `receipt` durably (the call returns after it is on disk).
    ///
    /// A receipt for the same request replaces the earlier one only while it is unsettled, so
    /// a final response supersedes a checkpoint but nothing changes after settlement.
    pub fn put(&self, receipt: &Receipt) -> Result<()> {
        self.put_batch(std::slice::from_ref(receipt))
    }

    /// [`ReceiptStore::put`] for many receipts with one disk sync (group commit).
    pub fn put_batch(&self, batch: &[Receipt]) -> Result<()> {
        let encoded =
            batch.iter().map(|r| Ok((r.digest(), encode(r)?))).collect::<Result<Vec<_>>>()?;
        self.staged.put(encoded, |records, generation| self.write(records, generation))
    }

    /// Writes encoded receipts to the database in one durable transaction, recording the
    /// journal's next generation if one is given (a checkpoint).
    fn write(&self, records: &[Record], generation: Option<u64>) -> Result<()> {
        let txn = stored(self.db.begin_write())?;
        tables::insert(&txn, records)?;
        if let Some(generation) = generation {
            tables::set_generation(&txn, generation)?;
        }
        stored(txn.commit())?;
        // The write has committed, so it must not fail now (the journal would go on under a
        // generation the database has left behind): without an index, lookups read afresh.
        let index = tables::digest_index(&self.db)
            .inspect_err(|e| tracing::warn!("receipt index not reopened ({e}); reading afresh"))
            .ok();
        *self.written.write().unwrap_or_else(PoisonError::into_inner) = index;
        Ok(())
    }

    /// Moves the journal's receipts into the database (see the module documentation).
    pub fn checkpoint(&self) -> Result<()> {
        self.staged.checkpoint(|records, generation| self.write(records, generation))
    }

    /// The receipt for `digest`, if stored.
    pub fn get(&self, digest: &B256) -> Result<Option<Receipt>> {
        match self.staged.get(digest) {
            // A settled receipt never changes, even if a later write is still in the journal.
            Some(bytes) if !matches!(tables::status(&self.db, digest)?, Stored::Final) => {
                decode(&bytes).map(Some)
            }
            _ => tables::get(&self.db, digest),
        }
    }

    /// Whether a receipt for `digest` is stored (settled or not).
    pub fn contains(&self, digest: &B256) -> Result<bool> {
        // Staged first: a checkpoint replaces the index before it drops what it wrote.
        if self.staged.contains(digest) {
            return Ok(true);
        }
        let written = self.written.read().unwrap_or_else(PoisonError::into_inner);
        match written.as_ref() {
            Some(index) => tables::contains(index, digest),
            None => tables::contains(&tables::digest_index(&self.db)?, digest),
        }
    }

    /// Up to `limit` unsettled receipts, oldest first.
    pub fn unsettled(&self, limit: usize) -> Result<Vec<Receipt>> {
        self.checkpoint()?;
        tables::unsettled(&self.db, limit)
    }

    /// Up to `limit` receipts, settled or not, oldest first.
    pub fn all(&self, limit: usize) -> Result<Vec<Receipt>> {
        self.checkpoint()?;
        tables::all(&self.db, limit)
    }

    /// Marks receipts settled (after their settlement transaction is confirmed).
    pub fn mark_settled(&self, digests: &[B256]) -> Result<()> {
        self.checkpoint()?;
        tables::settle(&self.db, digests, &[])
    }

    /// Records that the contract refused receipts for good (they leave the unsettled set).
    pub fn mark_rejected(&self, rejected: &[(B256, u8)]) -> Result<()> {
        self.checkpoint()?;
        tables::settle(&self.db, &[], rejected)
    }

    /// The contract's rejection code for `digest`, if it refused the receipt for good.
    pub fn rejection(&self, digest: &B256) -> Result<Option<u8>> {
        tables::rejection(&self.db, digest)
    }

    /// How many receipts are stored, and how many of them are unsettled.
    pub fn counts(&self) -> Result<(u64, u64)> {
        self.checkpoint()?;
        tables::counts(&self.db)
    }
}

impl Drop for ReceiptStore {
    /// Leaves the database complete; what fails here is recovered from the journal next time.
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::warn!("receipt checkpoint on close failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use lloom_core::{FinishReason, NodeKey};

    use super::*;

    fn receipt(nonce: u64) -> Receipt {
        Receipt::sample(&NodeKey::generate(), &NodeKey::generate(), nonce, FinishReason::Stop)
    }

    #[test]
    fn a_journal_that_fails_to_write_hands_its_receipts_and_all_later_ones_to_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        let store = ReceiptStore::open(&path).unwrap();
        let (first, second) = (receipt(1), receipt(2));
        store.put(&first).unwrap();
        store.staged.replace_journal(Journal::read_only(&journal_path(&path)).unwrap());
        store.put(&second).unwrap();
        assert!(store.staged.journal_failed(), "the failed journal is set aside");
        assert_eq!(store.staged.held(), 0);
        // Both are in the database itself now.
        assert!(
            tables::contains(&tables::digest_index(&store.db).unwrap(), &first.digest()).unwrap()
        );
        assert_eq!(tables::get(&store.db, &second.digest()).unwrap(), Some(second));
        let third = receipt(3);
        store.put(&third).unwrap();
        assert!(
            tables::contains(&tables::digest_index(&store.db).unwrap(), &third.digest()).unwrap()
        );
    }

    #[test]
    fn a_checksummed_record_that_does_not_decode_stops_the_open_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        let store = ReceiptStore::open(&path).unwrap();
        // A second handle on the open store's journal writes where the store would.
        let mut journal = Journal::open(&journal_path(&path)).unwrap();
        journal.append(store.staged.generation(), &[b"not a receipt"]).unwrap();
        let copy = dir.path().join("copy.redb");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(journal_path(&path), journal_path(&copy)).unwrap();
        let error = ReceiptStore::open(&copy).unwrap_err().to_string();
        assert!(error.contains("copy.journal") && error.contains("does not decode"), "{error}");
    }
}
