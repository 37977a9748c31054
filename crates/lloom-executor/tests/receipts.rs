//! The receipt store: idempotent group commits, settlement marks, oldest-first order, reopening,
//! the migration from the first (digest-keyed) layout, and damaged data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use lloom_core::{B256, FinishReason, NodeKey};
use lloom_executor::serve::{Receipt, ReceiptStore};
use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};

/// A signed exchange for request `nonce`, finished (`Stop`) or a checkpoint (`Partial`).
fn receipt(client: &NodeKey, executor: &NodeKey, nonce: u64, finish: FinishReason) -> Receipt {
    Receipt::sample(client, executor, nonce, finish)
}

fn keys() -> (NodeKey, NodeKey) {
    (NodeKey::generate(), NodeKey::generate())
}

#[test]
fn lookups_find_receipts_before_and_after_a_checkpoint_moves_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReceiptStore::open(&dir.path().join("r.redb")).unwrap();
    let (client, executor) = keys();
    let first = receipt(&client, &executor, 1, FinishReason::Stop);
    let second = receipt(&client, &executor, 2, FinishReason::Stop);
    assert!(!store.contains(&first.digest()).unwrap());
    store.put(&first).unwrap();
    assert!(store.contains(&first.digest()).unwrap(), "staged in memory");
    // The checkpoint empties the staging: the lookup now reads the index it left.
    store.checkpoint().unwrap();
    assert!(store.contains(&first.digest()).unwrap(), "in the database");
    assert!(!store.contains(&second.digest()).unwrap());
    store.put(&second).unwrap();
    store.checkpoint().unwrap();
    assert!(store.contains(&first.digest()).unwrap() && store.contains(&second.digest()).unwrap());
}

#[test]
fn puts_are_idempotent_a_final_response_supersedes_a_checkpoint_until_settled() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReceiptStore::open(&dir.path().join("r.redb")).unwrap();
    let (client, executor) = keys();
    let checkpoint = receipt(&client, &executor, 1, FinishReason::Partial);
    let digest = checkpoint.digest();
    assert!(!store.contains(&digest).unwrap());
    assert_eq!(store.get(&digest).unwrap(), None);

    store.put(&checkpoint).unwrap();
    store.put(&checkpoint).unwrap();
    assert_eq!(store.counts().unwrap(), (1, 1));
    assert_eq!(store.get(&digest).unwrap().as_ref(), Some(&checkpoint));

    let mut final_one = receipt(&client, &executor, 1, FinishReason::Stop);
    final_one.request = checkpoint.request.clone();
    final_one.response.commitment.requestDigest = digest;
    store.put(&final_one).unwrap();
    assert_eq!(store.counts().unwrap(), (1, 1));
    assert_eq!(store.get(&digest).unwrap().as_ref(), Some(&final_one));

    store.mark_settled(&[digest]).unwrap();
    assert_eq!(store.counts().unwrap(), (1, 0));
    store.put(&checkpoint).unwrap();
    assert_eq!(store.get(&digest).unwrap().as_ref(), Some(&final_one), "changed after settlement");
    assert!(store.contains(&digest).unwrap());
    // Marking an unknown digest is harmless.
    store.mark_settled(&[B256::repeat_byte(1)]).unwrap();
    assert_eq!(store.counts().unwrap(), (1, 0));
}

#[test]
fn unsettled_receipts_come_oldest_first_and_rejections_leave_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.redb");
    let (client, executor) = keys();
    let receipts: Vec<Receipt> =
        (0..20).map(|n| receipt(&client, &executor, n, FinishReason::Stop)).collect();
    {
        let store = ReceiptStore::open(&path).unwrap();
        store.put_batch(&receipts[..12]).unwrap();
        for one in &receipts[12..] {
            store.put(one).unwrap();
        }
        assert_eq!(store.unsettled(100).unwrap(), receipts);
        assert_eq!(store.unsettled(3).unwrap(), receipts[..3]);
        store.mark_settled(&[receipts[0].digest(), receipts[5].digest()]).unwrap();
        store.mark_rejected(&[(receipts[1].digest(), 4)]).unwrap();
    }
    // Reopened, the order and the marks hold, and new receipts come after the old ones.
    let store = ReceiptStore::open(&path).unwrap();
    let rest: Vec<Receipt> = receipts
        .iter()
        .enumerate()
        .filter(|(i, _)| ![0, 1, 5].contains(i))
        .map(|(_, r)| r.clone())
        .collect();
    assert_eq!(store.unsettled(100).unwrap(), rest);
    assert_eq!(store.rejection(&receipts[1].digest()).unwrap(), Some(4));
    assert_eq!(store.rejection(&receipts[2].digest()).unwrap(), None);
    let newer = receipt(&client, &executor, 99, FinishReason::Stop);
    store.put(&newer).unwrap();
    assert_eq!(store.unsettled(100).unwrap().last(), Some(&newer));
    assert_eq!(store.all(100).unwrap().len(), 21);
    assert_eq!(store.all(1).unwrap(), receipts[..1]);
    assert_eq!(store.counts().unwrap(), (21, 18));
}

/// The first layout, as the executor wrote it before the log.
const V1_RECEIPTS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("receipts");
const V1_UNSETTLED: TableDefinition<'_, &[u8; 32], ()> = TableDefinition::new("unsettled");
const V1_REJECTED: TableDefinition<'_, &[u8; 32], u8> = TableDefinition::new("rejected");

#[test]
fn a_store_of_the_first_layout_is_migrated_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    let (client, executor) = keys();
    let receipts: Vec<Receipt> =
        (0..5).map(|n| receipt(&client, &executor, n, FinishReason::Stop)).collect();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(V1_RECEIPTS).unwrap();
            let mut unsettled = txn.open_table(V1_UNSETTLED).unwrap();
            let mut rejected = txn.open_table(V1_REJECTED).unwrap();
            for (i, one) in receipts.iter().enumerate() {
                let bytes = postcard::to_stdvec(one).unwrap();
                table.insert(&one.digest().0, bytes.as_slice()).unwrap();
                if i != 2 && i != 4 {
                    unsettled.insert(&one.digest().0, ()).unwrap();
                }
            }
            rejected.insert(&receipts[4].digest().0, 3).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = ReceiptStore::open(&path).unwrap();
    assert_eq!(store.counts().unwrap(), (5, 3));
    for one in &receipts {
        assert_eq!(store.get(&one.digest()).unwrap().as_ref(), Some(one));
    }
    let mut unsettled: Vec<_> = store.unsettled(10).unwrap().iter().map(Receipt::digest).collect();
    let mut expected: Vec<_> = [0, 1, 3].iter().map(|&i| receipts[i].digest()).collect();
    unsettled.sort();
    expected.sort();
    assert_eq!(unsettled, expected);
    assert_eq!(store.rejection(&receipts[4].digest()).unwrap(), Some(3));
    // Settled ones stay settled; new receipts are appended after the migrated ones.
    store.put(&receipts[2]).unwrap();
    assert_eq!(store.counts().unwrap(), (5, 3));
    let newer = receipt(&client, &executor, 7, FinishReason::Stop);
    store.put(&newer).unwrap();
    assert_eq!(store.all(10).unwrap().last(), Some(&newer));
    drop(store);

    // The old tables are gone, and opening again migrates nothing twice.
    let store = ReceiptStore::open(&path).unwrap();
    assert_eq!(store.counts().unwrap(), (6, 4));
    drop(store);
    let db = Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let tables: Vec<String> = txn.list_tables().unwrap().map(|t| t.name().to_owned()).collect();
    assert!(!tables.iter().any(|t| t == "receipts" || t == "unsettled"), "{tables:?}");
}

#[test]
fn damaged_data_and_foreign_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.redb");
    let (client, executor) = keys();
    let good = receipt(&client, &executor, 1, FinishReason::Stop);
    ReceiptStore::open(&path).unwrap().put(&good).unwrap();
    {
        // Overwrite the stored receipt's bytes with garbage.
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let log: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("receipt_log");
            let mut log = txn.open_table(log).unwrap();
            log.insert(0, [0xff_u8; 3].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = ReceiptStore::open(&path).unwrap();
    assert!(store.get(&good.digest()).is_err());
    assert!(store.unsettled(10).is_err());
    assert!(store.all(10).is_err());
    assert!(store.contains(&good.digest()).unwrap());
    drop(store);

    let foreign = dir.path().join("not-a-db");
    std::fs::write(&foreign, b"this is not a redb file at all, just some text").unwrap();
    assert!(ReceiptStore::open(&foreign).is_err());
}

/// Copies the store's files as they are on disk now: what a crash at this moment would leave.
fn crash_copy(from: &std::path::Path, to: &std::path::Path) {
    for (source, target) in
        [(from, to), (&from.with_extension("journal"), &to.with_extension("journal"))]
    {
        std::fs::copy(source, target).unwrap();
    }
}

#[test]
fn receipts_in_the_journal_survive_a_crash_and_a_torn_last_write_loses_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.redb");
    let (client, executor) = keys();
    let receipts: Vec<Receipt> =
        (0..6).map(|n| receipt(&client, &executor, n, FinishReason::Stop)).collect();
    let store = ReceiptStore::open(&path).unwrap();
    store.put_batch(&receipts[..3]).unwrap();
    store.put(&receipts[3]).unwrap();
    store.put(&receipts[4]).unwrap();
    store.put(&receipts[5]).unwrap();
    // Nothing has been checkpointed: the database alone does not hold them yet.
    let crashed = dir.path().join("crashed.redb");
    crash_copy(&path, &crashed);
    let recovered = ReceiptStore::open(&crashed).unwrap();
    assert_eq!(recovered.unsettled(100).unwrap(), receipts);
    drop(recovered);

    // Tear the last record: the receipts before it are recovered, in order.
    let torn = dir.path().join("torn.redb");
    crash_copy(&path, &torn);
    let journal = torn.with_extension("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    let last_byte = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[last_byte] ^= 0xff;
    std::fs::write(&journal, &bytes).unwrap();
    let recovered = ReceiptStore::open(&torn).unwrap();
    assert_eq!(recovered.unsettled(100).unwrap(), receipts[..5]);
    // Writing goes on after the recovered ones, and the torn record is not read back later.
    recovered.put(&receipts[5]).unwrap();
    drop(recovered);
    let reopened = ReceiptStore::open(&torn).unwrap();
    assert_eq!(reopened.unsettled(100).unwrap(), receipts);

    // The original store, closed cleanly, holds everything without its journal.
    drop(store);
    std::fs::remove_file(path.with_extension("journal")).unwrap();
    assert_eq!(ReceiptStore::open(&path).unwrap().unsettled(100).unwrap(), receipts);
}

#[test]
fn lookups_see_the_journal_and_a_full_journal_is_checkpointed_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.redb");
    let (client, executor) = keys();
    let big = |nonce| {
        let mut one = receipt(&client, &executor, nonce, FinishReason::Stop);
        one.request.body.messages[0].content = "x".repeat(300_000);
        one
    };
    let store = ReceiptStore::open(&path).unwrap();
    // 300 kB each: the 4 MiB journal fills after 13 of them and is checkpointed.
    let receipts: Vec<Receipt> = (0..20).map(big).collect();
    for one in &receipts {
        store.put(one).unwrap();
        assert!(store.contains(&one.digest()).unwrap());
        assert_eq!(store.get(&one.digest()).unwrap().as_ref(), Some(one));
    }
    let crashed = dir.path().join("crashed.redb");
    crash_copy(&path, &crashed);
    {
        // The database alone (its journal removed) holds what the checkpoint moved.
        std::fs::remove_file(crashed.with_extension("journal")).unwrap();
        let checkpointed = ReceiptStore::open(&crashed).unwrap();
        let (total, _) = checkpointed.counts().unwrap();
        assert!((13..20).contains(&total), "{total} receipts checkpointed");
        assert_eq!(checkpointed.all(100).unwrap(), receipts[..usize::try_from(total).unwrap()]);
    }
    assert_eq!(store.all(100).unwrap(), receipts);
}

#[test]
fn a_journal_that_is_not_one_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.redb");
    std::fs::write(path.with_extension("journal"), b"not a journal").unwrap();
    let error = ReceiptStore::open(&path).unwrap_err().to_string();
    assert!(error.contains("r.journal") && error.contains("not a journal"), "{error}");
}
