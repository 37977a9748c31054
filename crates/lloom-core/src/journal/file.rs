//! The journal file: preallocated and append-only, in front of a database.
//!
//! A group commit costs one `pwrite` of its records and one `fdatasync`, where a database
//! commit costs a page write per dirty B-tree page and the sync. The file is filled with zeros
//! when it is created, so appending overwrites blocks that already exist and the sync carries
//! no metadata. Records are moved into the database in large batches (a checkpoint); the
//! checkpoint bumps the journal's generation, stored in the database in the same transaction,
//! and writing starts again at the beginning of the file.
//!
//! Layout: an 8-byte magic and 8 reserved bytes, then records, each
//! `[payload length: u32 LE][CRC-32 of generation, length and payload: u32 LE]
//! [generation: u64 LE][payload]`. Recovery reads records of the current generation from the
//! start and stops at the first one that is missing, torn (its checksum fails) or of an older
//! generation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Identifies a journal (and its format's version; the executor's receipt journal came first).
const MAGIC: &[u8; 8] = b"LLOOMRJ1";
/// Bytes before the first record.
const FILE_HEADER: usize = 16;
/// Bytes before each record's payload.
const RECORD_HEADER: usize = 16;
/// Bytes of records the file holds before a checkpoint is due (the preallocated size).
pub const CAPACITY: usize = 4 * 1024 * 1024;
/// No receipt comes near this; a larger length is damage.
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// The open journal file and where the next record goes.
pub struct Journal {
    path: PathBuf,
    file: File,
    end: u64,
}

impl Journal {
    /// Opens the journal at `path`, creating and preallocating it first if there is none.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            create(path)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut magic = [0_u8; 8];
        if file.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
            return Err(damaged(path, "not a journal (bad magic)"));
        }
        Ok(Self { path: path.to_owned(), file, end: FILE_HEADER as u64 })
    }

    /// The payloads of `generation` in the file, in the order they were appended.
    pub fn records(&self, generation: u64) -> Result<Vec<Vec<u8>>> {
        let len = self.file.metadata()?.len();
        let mut bytes = vec![0_u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.file.read_exact_at(&mut bytes, 0)?;
        let mut records = Vec::new();
        let mut at = FILE_HEADER;
        while let Some((payload, next)) = record_at(&bytes, at, generation) {
            records.push(payload.to_vec());
            at = next;
        }
        Ok(records)
    }

    /// Starts writing again at the beginning of the file (after a checkpoint has put every
    /// earlier record into the database, or at open).
    pub fn rewind(&mut self) {
        self.end = FILE_HEADER as u64;
    }

    /// Whether `payload_bytes` more (in `count` records) still fit before a checkpoint is due.
    /// An empty journal always takes them: a batch larger than the capacity grows the file.
    pub fn has_room(&self, count: usize, payload_bytes: usize) -> bool {
        let needed = (count * RECORD_HEADER + payload_bytes) as u64;
        let start = FILE_HEADER as u64;
        self.end == start || self.end + needed <= start + CAPACITY as u64
    }

    /// Appends `payloads` as records of `generation` with one write and makes them durable
    /// with one `fdatasync`.
    pub fn append(&mut self, generation: u64, payloads: &[&[u8]]) -> std::io::Result<()> {
        let total: usize = payloads.iter().map(|p| RECORD_HEADER + p.len()).sum();
        let mut buffer = Vec::with_capacity(total);
        for payload in payloads {
            encode_record(&mut buffer, generation, payload);
        }
        self.file.write_all_at(&buffer, self.end)?;
        self.file.sync_data()?;
        self.end += buffer.len() as u64;
        Ok(())
    }

    /// The journal at `path` opened for reading only, so that every append fails.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn read_only(path: &Path) -> Result<Self> {
        let file = File::open(path)?;
        Ok(Self { path: path.to_owned(), file, end: FILE_HEADER as u64 })
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes a full-size, zero-filled journal under a temporary name, syncs it and renames it
/// into place, so a journal that exists is always complete.
fn create(path: &Path) -> Result<()> {
    let partial = path.with_extension("journal-new");
    {
        let mut file = File::create(&partial)?;
        let mut contents = MAGIC.to_vec();
        contents.resize(FILE_HEADER + CAPACITY, 0);
        file.write_all(&contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&partial, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Appends one record for `payload` of `generation` to `buffer`.
fn encode_record(buffer: &mut Vec<u8>, generation: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(&checksum(generation, len, payload).to_le_bytes());
    buffer.extend_from_slice(&generation.to_le_bytes());
    buffer.extend_from_slice(payload);
}

/// The record of `generation` at `at` in `bytes` and where the next one starts; `None` at the
/// end of the records (zeros, a torn write or an older generation).
fn record_at(bytes: &[u8], at: usize, generation: u64) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER)?)?;
    let len = u32::from_le_bytes(header.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?);
    let stored_generation = u64::from_le_bytes(header.get(8..16)?.try_into().ok()?);
    let size = usize::try_from(len).ok()?;
    if len == 0 || size > MAX_PAYLOAD || stored_generation != generation {
        return None;
    }
    let start = at + RECORD_HEADER;
    let payload = bytes.get(start..start.checked_add(size)?)?;
    (checksum(generation, len, payload) == crc).then_some((payload, start + size))
}

/// CRC-32 over a record's generation, length and payload.
fn checksum(generation: u64, len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// An [`Error::Journal`] for `path`.
pub fn damaged(path: &Path, reason: impl Into<String>) -> Error {
    Error::Journal { path: path.to_owned(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn payloads(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![u8::try_from(i % 250).unwrap() + 1; 100 + i]).collect()
    }

    fn slices(payloads: &[Vec<u8>]) -> Vec<&[u8]> {
        payloads.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn records_come_back_in_order_for_their_generation_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.journal");
        let mut journal = Journal::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), (FILE_HEADER + CAPACITY) as u64);
        let written = payloads(5);
        journal.append(3, &slices(&written[..2])).unwrap();
        journal.append(3, &slices(&written[2..])).unwrap();
        let reopened = Journal::open(&path).unwrap();
        assert_eq!(reopened.records(3).unwrap(), written);
        assert!(reopened.records(4).unwrap().is_empty());

        // The next generation overwrites from the start; the older records behind it are not
        // read back as its own.
        journal.rewind();
        journal.append(4, &slices(&written[..1])).unwrap();
        assert_eq!(Journal::open(&path).unwrap().records(4).unwrap(), written[..1]);
    }

    #[test]
    fn a_torn_record_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.journal");
        let mut journal = Journal::open(&path).unwrap();
        let written = payloads(3);
        journal.append(1, &slices(&written)).unwrap();
        // Flip one byte of the second record's payload.
        let second = FILE_HEADER + RECORD_HEADER + written[0].len() + RECORD_HEADER;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second + 7] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Journal::open(&path).unwrap().records(1).unwrap(), written[..1]);
    }

    #[test]
    fn room_runs_out_at_the_capacity_but_an_empty_journal_takes_anything() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("r.journal")).unwrap();
        let big = CAPACITY;
        assert!(journal.has_room(1, big * 2), "an empty journal refuses nothing");
        journal.append(1, &[&[1; 1000]]).unwrap();
        assert!(journal.has_room(1, 1000));
        assert!(!journal.has_room(1, big));
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.journal");
        std::fs::write(&path, b"something else entirely").unwrap();
        let error = Journal::open(&path).err().unwrap().to_string();
        assert!(error.contains("not a journal"), "{error}");
        std::fs::write(&path, b"").unwrap();
        assert!(Journal::open(&path).is_err());
    }
}
