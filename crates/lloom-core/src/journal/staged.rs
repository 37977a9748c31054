//! Records durable in a journal and held in memory until the owner's checkpoint.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use alloy_primitives::B256;

use super::{Journal, damaged};

/// A record: the key it is looked up by and its encoded bytes.
pub type Record = (B256, Vec<u8>);

/// The journal of a store and the records it holds that the database does not have yet.
///
/// Every operation that writes to the database takes a `write` function from the owner:
/// `write(records, Some(generation))` stores `records` and records `generation` as the
/// journal's generation, in one durable transaction (a checkpoint); `write(records, None)`
/// stores `records` durably at once (once the journal has failed).
pub struct Staged {
    writer: Mutex<Writer>,
    pending: RwLock<Pending>,
}

/// The writing side, held by one writer at a time.
struct Writer {
    /// `None` after the journal failed to write: batches then go to the database directly.
    journal: Option<Journal>,
    /// The generation being written; the database records it.
    generation: u64,
}

/// The records durable in the journal but not yet in the database, in the order they were
/// first written; a later record under the same key replaces the earlier one's bytes.
#[derive(Default)]
struct Pending {
    records: Vec<Record>,
    by_key: HashMap<B256, usize>,
}

impl Pending {
    fn add(&mut self, key: B256, bytes: Vec<u8>) {
        match self.by_key.get(&key) {
            Some(&at) => {
                if let Some(entry) = self.records.get_mut(at) {
                    entry.1 = bytes;
                }
            }
            None => {
                self.by_key.insert(key, self.records.len());
                self.records.push((key, bytes));
            }
        }
    }

    fn get(&self, key: &B256) -> Option<&[u8]> {
        let at = *self.by_key.get(key)?;
        self.records.get(at).map(|(_, bytes)| bytes.as_slice())
    }
}

/// The records `journal` holds of `generation` (those a run that did not close its store left
/// behind), each under the key `key_of` reads from its bytes. A record whose checksum holds
/// but which does not decode is an error naming the journal: it is never dropped.
pub fn recover<E: std::fmt::Display>(
    journal: &Journal,
    generation: u64,
    key_of: impl Fn(&[u8]) -> Result<B256, E>,
) -> crate::Result<Vec<Record>> {
    let mut recovered = Vec::new();
    for bytes in journal.records(generation)? {
        let key = key_of(&bytes)
            .map_err(|e| damaged(journal.path(), format!("a record does not decode: {e}")))?;
        recovered.push((key, bytes));
    }
    if !recovered.is_empty() {
        tracing::info!(records = recovered.len(), path = %journal.path().display(), "records recovered from the journal");
    }
    Ok(recovered)
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged").finish_non_exhaustive()
    }
}

impl Staged {
    /// Starts writing `journal` from its beginning under `generation` (the one the database
    /// has just recorded, after moving the journal's earlier records into it).
    pub fn new(mut journal: Journal, generation: u64) -> Self {
        journal.rewind();
        let writer = Writer { journal: Some(journal), generation };
        Self { writer: Mutex::new(writer), pending: RwLock::new(Pending::default()) }
    }

    /// Makes `records` durable (the call returns once they are on disk): appended to the
    /// journal, after a checkpoint if it is full, and held for lookups. If the journal fails,
    /// what it holds is checkpointed and `records`, like every later batch, are written
    /// directly.
    pub fn put<E>(
        &self,
        records: Vec<Record>,
        write: impl Fn(&[Record], Option<u64>) -> Result<(), E>,
    ) -> Result<(), E> {
        if records.is_empty() {
            return Ok(());
        }
        let mut writer = self.lock_writer();
        let payload_bytes = records.iter().map(|(_, bytes)| bytes.len()).sum();
        let has_room = match &writer.journal {
            Some(journal) => journal.has_room(records.len(), payload_bytes),
            None => return write(&records, None),
        };
        if !has_room {
            self.checkpoint_locked(&mut writer, &write)?;
        }
        let payloads: Vec<&[u8]> = records.iter().map(|(_, bytes)| bytes.as_slice()).collect();
        let generation = writer.generation;
        let appended = writer.journal.as_mut().map(|journal| journal.append(generation, &payloads));
        if let Some(Err(e)) = appended {
            tracing::error!("journal failed ({e}); writing to the database directly");
            writer.journal = None;
            self.checkpoint_locked(&mut writer, &write)?;
            return write(&records, None);
        }
        let mut pending = self.pending.write().unwrap_or_else(PoisonError::into_inner);
        for (key, bytes) in records {
            pending.add(key, bytes);
        }
        Ok(())
    }

    /// Moves the records held into the database (see [`Staged`] for `write`).
    pub fn checkpoint<E>(
        &self,
        write: impl Fn(&[Record], Option<u64>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut writer = self.lock_writer();
        self.checkpoint_locked(&mut writer, &write)
    }

    fn checkpoint_locked<E>(
        &self,
        writer: &mut Writer,
        write: &impl Fn(&[Record], Option<u64>) -> Result<(), E>,
    ) -> Result<(), E> {
        {
            // Readers go on reading the held records from memory while they are written.
            let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
            if pending.records.is_empty() {
                return Ok(());
            }
            write(&pending.records, Some(writer.generation + 1))?;
        }
        *self.pending.write().unwrap_or_else(PoisonError::into_inner) = Pending::default();
        writer.generation += 1;
        if let Some(journal) = writer.journal.as_mut() {
            journal.rewind();
        }
        Ok(())
    }

    /// The held record under `key`, if there is one.
    pub fn get(&self, key: &B256) -> Option<Vec<u8>> {
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        pending.get(key).map(<[u8]>::to_vec)
    }

    /// Whether a record under `key` is held.
    pub fn contains(&self, key: &B256) -> bool {
        self.pending.read().unwrap_or_else(PoisonError::into_inner).get(key).is_some()
    }

    /// How many records are held.
    pub fn held(&self) -> usize {
        self.pending.read().unwrap_or_else(PoisonError::into_inner).records.len()
    }

    /// The generation being written.
    pub fn generation(&self) -> u64 {
        self.lock_writer().generation
    }

    /// Whether the journal has failed, so batches go to the database directly.
    pub fn journal_failed(&self) -> bool {
        self.lock_writer().journal.is_none()
    }

    /// Replaces the journal (tests: a read-only one makes every append fail).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn replace_journal(&self, journal: Journal) {
        self.lock_writer().journal = Some(journal);
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::Mutex;

    use super::*;

    /// What the owner's database received: checkpoints (with their generation) and direct
    /// writes (`None`).
    type Log = Mutex<Vec<(Vec<Record>, Option<u64>)>>;

    fn record(n: u8, bytes: usize) -> Record {
        (B256::repeat_byte(n), vec![n; bytes])
    }

    fn writer(log: &Log) -> impl Fn(&[Record], Option<u64>) -> Result<(), String> + '_ {
        move |records, generation| {
            log.lock().unwrap().push((records.to_vec(), generation));
            Ok(())
        }
    }

    #[test]
    fn held_records_answer_lookups_until_a_checkpoint_moves_them_with_the_next_generation() {
        let dir = tempfile::tempdir().unwrap();
        let staged = Staged::new(Journal::open(&dir.path().join("s.journal")).unwrap(), 7);
        let log = Log::default();
        staged.put(vec![record(1, 10), record(2, 10)], writer(&log)).unwrap();
        staged.put(vec![(B256::repeat_byte(1), vec![9; 3])], writer(&log)).unwrap();
        assert!(log.lock().unwrap().is_empty(), "nothing reached the database yet");
        assert_eq!(staged.get(&B256::repeat_byte(1)), Some(vec![9; 3]), "the later one wins");
        assert!(staged.contains(&B256::repeat_byte(2)));
        assert_eq!(staged.held(), 2);
        // The records are durable in the journal under generation 7.
        let on_disk = Journal::open(&dir.path().join("s.journal")).unwrap().records(7).unwrap();
        assert_eq!(on_disk.len(), 3);

        staged.checkpoint(writer(&log)).unwrap();
        let log = log.into_inner().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].0, vec![(B256::repeat_byte(1), vec![9; 3]), record(2, 10)]);
        assert_eq!(log[0].1, Some(8));
        assert_eq!((staged.held(), staged.generation()), (0, 8));
        assert!(!staged.contains(&B256::repeat_byte(2)));
    }

    #[test]
    fn a_full_journal_is_checkpointed_before_the_batch_that_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let staged = Staged::new(Journal::open(&dir.path().join("s.journal")).unwrap(), 1);
        let log = Log::default();
        let half = super::super::CAPACITY / 2;
        staged.put(vec![record(1, half)], writer(&log)).unwrap();
        staged.put(vec![record(2, half)], writer(&log)).unwrap();
        let log = log.into_inner().unwrap();
        assert_eq!(log.len(), 1, "one checkpoint made room");
        assert_eq!(log[0].0, vec![record(1, half)]);
        assert!(staged.contains(&B256::repeat_byte(2)));
        assert_eq!(staged.generation(), 2);
    }

    #[test]
    fn a_journal_that_fails_hands_what_it_holds_and_every_later_batch_to_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.journal");
        let staged = Staged::new(Journal::open(&path).unwrap(), 1);
        let log = Log::default();
        staged.put(vec![record(1, 10)], writer(&log)).unwrap();
        staged.replace_journal(Journal::read_only(&path).unwrap());
        staged.put(vec![record(2, 10)], writer(&log)).unwrap();
        assert!(staged.journal_failed());
        staged.put(vec![record(3, 10)], writer(&log)).unwrap();
        let log = log.into_inner().unwrap();
        assert_eq!(
            log,
            vec![
                (vec![record(1, 10)], Some(2)),
                (vec![record(2, 10)], None),
                (vec![record(3, 10)], None)
            ]
        );
        assert_eq!(staged.held(), 0);
    }

    #[test]
    fn a_failed_checkpoint_keeps_the_records_held_and_the_error_reaches_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let staged = Staged::new(Journal::open(&dir.path().join("s.journal")).unwrap(), 1);
        let log = Log::default();
        staged.put(vec![record(1, 10)], writer(&log)).unwrap();
        let failing = |_: &[Record], _: Option<u64>| Err("disk full".to_owned());
        assert_eq!(staged.checkpoint(failing), Err("disk full".to_owned()));
        assert!(staged.contains(&B256::repeat_byte(1)), "nothing is lost");
        assert_eq!(staged.generation(), 1);
        staged.checkpoint(writer(&log)).unwrap();
        assert_eq!(log.into_inner().unwrap().len(), 1);
    }
}
