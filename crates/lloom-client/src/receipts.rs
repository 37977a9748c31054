//! The client's receipt store: every verified answer (and the last verified checkpoint of a
//! stream that broke), kept in redb under the request digest, newest last.
//!
//! A receipt is durable once it is in the store's journal ([`lloom_core::journal`], beside the
//! database as `receipts.journal`): one append and one `fdatasync` per batch. The journal's
//! receipts are held in memory until a checkpoint moves them into the database in one
//! transaction: when the journal is full, before a listing or a count, when the store is
//! dropped, and when it is opened after a crash.

use std::path::{Path, PathBuf};

use lloom_core::journal::{self, Journal, Record, Staged};
use lloom_core::{Address, B256, SignedRequest, SignedResponse, U256, unix_now};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// request digest → postcard([`StoredReceipt`]).
const RECEIPTS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("receipts");
/// (stored at ‖ request digest) → (), to list in time order.
const BY_TIME: TableDefinition<'_, &[u8; 40], ()> = TableDefinition::new("receipts_by_time");
/// Store-wide values: [`GENERATION`].
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("receipt_meta");
/// The journal generation whose records are not in the tables yet.
const GENERATION: &str = "journal_generation";
/// Page cache: bounds the memory the store holds.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// One stored receipt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredReceipt {
    /// The signed request.
    pub request: SignedRequest,
    /// The executor's signed final response, or its last checkpoint for a broken stream.
    pub response: SignedResponse,
    /// The answer text (absent for a checkpoint of a broken stream).
    pub text: Option<String>,
    /// When it was stored (unix seconds).
    pub stored_at: u64,
}

impl StoredReceipt {
    /// A receipt stored now.
    pub fn now(request: SignedRequest, response: SignedResponse, text: Option<&str>) -> Self {
        Self { request, response, text: text.map(str::to_owned), stored_at: unix_now() }
    }

    /// The request digest.
    pub fn digest(&self) -> B256 {
        self.request.digest()
    }
    /// The executor.
    pub fn executor(&self) -> Address {
        self.response.commitment.executor
    }
    /// The cost, in wei.
    pub fn cost(&self) -> U256 {
        self.response.commitment.totalCost
    }
}

/// Receipts in a journal in front of an embedded redb database.
pub struct ReceiptStore {
    db: Database,
    staged: Staged,
}

impl std::fmt::Debug for ReceiptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptStore").finish_non_exhaustive()
    }
}

fn db<T, E: std::fmt::Display>(result: std::result::Result<T, E>) -> Result<T> {
    result.map_err(|e| Error::State(format!("receipt store: {e}")))
}

/// The journal that belongs to the database at `path`.
fn journal_path(path: &Path) -> PathBuf {
    path.with_extension("journal")
}

fn decode(bytes: &[u8]) -> Result<StoredReceipt> {
    db(postcard::from_bytes(bytes))
}

impl ReceiptStore {
    /// Opens (or creates) the store at `path` and its journal beside it (`.journal`); receipts
    /// the journal holds from a run that did not close the store are moved into the database.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let database = db(Database::builder().set_cache_size(CACHE_BYTES).create(path))?;
        let journal = Journal::open(&journal_path(path))?;
        let txn = db(database.begin_write())?;
        db(txn.open_table(RECEIPTS))?;
        db(txn.open_table(BY_TIME))?;
        let found = db(db(txn.open_table(META))?.get(GENERATION))?.map_or(0, |g| g.value());
        let recovered =
            journal::recover(&journal, found, |bytes| decode(bytes).map(|r| r.digest()))?;
        // Every run writes a generation of its own, so no record left from an earlier run can
        // pass for one of this run's.
        let generation = found + 1;
        insert(&txn, &recovered, Some(generation))?;
        db(txn.commit())?;
        Ok(Self { db: database, staged: Staged::new(journal, generation) })
    }

    /// Stores a receipt durably (a later one for the same request replaces it).
    pub fn put(
        &self,
        request: &SignedRequest,
        response: &SignedResponse,
        text: Option<&str>,
    ) -> Result<()> {
        let receipt = StoredReceipt::now(request.clone(), response.clone(), text);
        self.put_batch(std::slice::from_ref(&receipt))
    }

    /// Stores receipts durably with one disk sync for all of them, in order: a later one for
    /// the same request replaces an earlier one.
    pub fn put_batch(&self, batch: &[StoredReceipt]) -> Result<()> {
        let records = batch
            .iter()
            .map(|receipt| Ok((receipt.digest(), db(postcard::to_stdvec(receipt))?)))
            .collect::<Result<Vec<_>>>()?;
        self.staged.put(records, |records, generation| self.write(records, generation))
    }

    /// Writes encoded receipts to the database in one durable transaction, recording the
    /// journal's next generation if one is given (a checkpoint).
    fn write(&self, records: &[Record], generation: Option<u64>) -> Result<()> {
        let txn = db(self.db.begin_write())?;
        insert(&txn, records, generation)?;
        db(txn.commit())
    }

    /// Moves the journal's receipts into the database.
    pub fn checkpoint(&self) -> Result<()> {
        self.staged.checkpoint(|records, generation| self.write(records, generation))
    }

    /// The receipt of a request, by digest.
    pub fn get(&self, digest: &B256) -> Result<Option<StoredReceipt>> {
        if let Some(bytes) = self.staged.get(digest) {
            return decode(&bytes).map(Some);
        }
        let txn = db(self.db.begin_read())?;
        let receipts = db(txn.open_table(RECEIPTS))?;
        match db(receipts.get(&digest.0))? {
            Some(bytes) => Ok(Some(db(postcard::from_bytes(bytes.value()))?)),
            None => Ok(None),
        }
    }

    /// The newest `limit` receipts, newest first.
    pub fn latest(&self, limit: usize) -> Result<Vec<StoredReceipt>> {
        self.checkpoint()?;
        let txn = db(self.db.begin_read())?;
        let by_time = db(txn.open_table(BY_TIME))?;
        let receipts = db(txn.open_table(RECEIPTS))?;
        let mut out = Vec::new();
        for entry in db(by_time.iter())?.rev() {
            if out.len() >= limit {
                break;
            }
            let (key, _) = db(entry)?;
            let digest: [u8; 32] =
                key.value().get(8..).and_then(|d| d.try_into().ok()).unwrap_or([0; 32]);
            if let Some(bytes) = db(receipts.get(&digest))? {
                let receipt: StoredReceipt = db(postcard::from_bytes(bytes.value()))?;
                // A replaced receipt leaves an older time entry: list each request once.
                if !out.iter().any(|r: &StoredReceipt| r.digest().0 == digest) {
                    out.push(receipt);
                }
            }
        }
        Ok(out)
    }

    /// How many receipts are stored.
    pub fn len(&self) -> Result<u64> {
        self.checkpoint()?;
        let txn = db(self.db.begin_read())?;
        db(db(txn.open_table(RECEIPTS))?.len())
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
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

/// Writes encoded receipts (`(request digest, postcard bytes)`) in order, and the journal
/// generation if one is given.
fn insert(txn: &WriteTransaction, records: &[Record], generation: Option<u64>) -> Result<()> {
    let mut receipts = db(txn.open_table(RECEIPTS))?;
    let mut by_time = db(txn.open_table(BY_TIME))?;
    for (digest, bytes) in records {
        let stored_at = decode(bytes)?.stored_at;
        let mut time_key = [0u8; 40];
        time_key[..8].copy_from_slice(&stored_at.to_be_bytes());
        time_key[8..].copy_from_slice(&digest.0);
        db(receipts.insert(&digest.0, bytes.as_slice()))?;
        db(by_time.insert(&time_key, ()))?;
    }
    if let Some(generation) = generation {
        db(db(txn.open_table(META))?.insert(GENERATION, generation))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lloom_core::wire::{content_hash, request_hash};
    use lloom_core::*;

    fn exchange(nonce: u64) -> (SignedRequest, SignedResponse) {
        let (client, executor) = (NodeKey::generate(), NodeKey::generate());
        let body = RequestBody {
            messages: vec![ChatMessage { role: Role::User, content: "hi".into() }],
            sampling: SamplingParams::default(),
        };
        let c = RequestCommitment {
            client: client.address(),
            executor: executor.address(),
            model: "m".into(),
            requestHash: request_hash(&body),
            maxInputTokens: 10,
            maxOutputTokens: 10,
            pricePerInputToken: U256::from(1),
            pricePerOutputToken: U256::from(1),
            nonce,
            deadline: unix_now() + 60,
        };
        let request =
            SignedRequest::sign(&client, DomainConfig::default(), c.clone(), body).unwrap();
        let r = ResponseCommitment {
            requestDigest: request.digest(),
            client: c.client,
            executor: c.executor,
            model: c.model,
            contentHash: content_hash("hello"),
            inputTokens: 1,
            outputTokens: 1,
            totalCost: U256::from(2),
            finishReason: 0,
            timestamp: unix_now(),
        };
        let response = SignedResponse::sign(&executor, DomainConfig::default(), r).unwrap();
        (request, response)
    }

    #[test]
    fn receipts_are_stored_listed_newest_first_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.redb");
        let store = ReceiptStore::open(&path).unwrap();
        let (a, b) = (exchange(1), exchange(2));
        store.put(&a.0, &a.1, Some("hello")).unwrap();
        store.put(&b.0, &b.1, None).unwrap();
        store.put(&b.0, &b.1, Some("hello")).unwrap(); // replaced, listed once
        drop(store);
        let store = ReceiptStore::open(&path).unwrap();
        assert_eq!(store.len().unwrap(), 2);
        let latest = store.latest(10).unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(store.get(&a.0.digest()).unwrap().unwrap().text.as_deref(), Some("hello"));
        assert!(store.get(&B256::ZERO).unwrap().is_none());
        assert_eq!(store.latest(1).unwrap().len(), 1);
    }

    #[test]
    fn a_batch_is_stored_whole_and_a_later_receipt_for_the_same_request_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReceiptStore::open(&dir.path().join("receipts.redb")).unwrap();
        let (a, b) = (exchange(1), exchange(2));
        let batch = [
            StoredReceipt::now(a.0.clone(), a.1.clone(), None),
            StoredReceipt::now(b.0.clone(), b.1.clone(), Some("b")),
            StoredReceipt::now(a.0.clone(), a.1.clone(), Some("final")),
        ];
        store.put_batch(&batch).unwrap();
        assert_eq!(store.len().unwrap(), 2);
        assert_eq!(store.get(&a.0.digest()).unwrap().unwrap().text.as_deref(), Some("final"));
        assert_eq!(store.get(&b.0.digest()).unwrap().unwrap().text.as_deref(), Some("b"));
        store.put_batch(&[]).unwrap(); // nothing to store is not an error
        assert_eq!(store.len().unwrap(), 2);
    }

    #[test]
    fn receipts_only_in_the_journal_when_the_client_crashed_are_there_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.redb");
        let store = ReceiptStore::open(&path).unwrap();
        let (a, b) = (exchange(1), exchange(2));
        store.put(&a.0, &a.1, Some("first")).unwrap();
        store.put(&b.0, &b.1, Some("second")).unwrap();
        // A crash image: the files as they are while the store is open, before any checkpoint.
        let copy = dir.path().join("crashed.redb");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(journal_path(&path), journal_path(&copy)).unwrap();
        assert!(store.get(&b.0.digest()).unwrap().is_some(), "the journal answers lookups");
        drop(store);
        let recovered = ReceiptStore::open(&copy).unwrap();
        assert_eq!(recovered.len().unwrap(), 2);
        let latest = recovered.latest(10).unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(recovered.get(&a.0.digest()).unwrap().unwrap().text.as_deref(), Some("first"));
        // Recovered once: the next open finds them in the database, not twice.
        drop(recovered);
        assert_eq!(ReceiptStore::open(&copy).unwrap().len().unwrap(), 2);
    }

    #[test]
    fn a_journal_file_that_is_not_one_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.redb");
        std::fs::write(journal_path(&path), b"not a journal at all").unwrap();
        let error = ReceiptStore::open(&path).unwrap_err().to_string();
        assert!(error.contains("receipts.journal") && error.contains("not a journal"), "{error}");
    }
}
