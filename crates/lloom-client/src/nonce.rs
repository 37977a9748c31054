//! Request nonces that never repeat for a client key, even across restarts and crashes.
//!
//! Nonces count up from 1, one per request, so the settlement contract can record settled
//! requests densely (256 per storage word). With a file, nonces are reserved in blocks of
//! [`NONCE_BLOCK`]: the end of the block is written and synced to disk (atomically, by rename)
//! before the block's first nonce is handed out, so a request costs no disk write and a crash
//! never hands out a nonce twice. A restart continues after the reserved block, skipping at most
//! `NONCE_BLOCK - 1` unused nonces (one storage word on chain). Keep the data directory, or
//! executors will refuse the re-used nonces as replays until the count passes them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// How many nonces one disk write reserves.
pub const NONCE_BLOCK: u64 = 256;

/// Hands out strictly increasing nonces.
#[derive(Debug)]
pub struct NonceSource {
    state: Mutex<Counter>,
    file: Option<PathBuf>,
}

/// The last nonce handed out, and the last one reserved on disk.
#[derive(Debug)]
struct Counter {
    last: u64,
    reserved: u64,
}

impl NonceSource {
    /// Nonces kept only in memory (for ephemeral keys).
    pub fn in_memory() -> Self {
        Self { state: Mutex::new(Counter { last: 0, reserved: u64::MAX }), file: None }
    }

    /// Nonces persisted in `file` (created if missing); the first one follows the last
    /// reservation the file records.
    pub fn persistent(file: PathBuf) -> Result<Self> {
        let reserved = match std::fs::read_to_string(&file) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                Error::State(format!("nonce file {} is not a number", file.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        let counter = Counter { last: reserved, reserved };
        Ok(Self { state: Mutex::new(counter), file: Some(file) })
    }

    /// The next nonce; its block is reserved on disk before it is returned.
    pub fn next(&self) -> Result<u64> {
        let mut state =
            self.state.lock().map_err(|_| Error::State("nonce lock poisoned".into()))?;
        let next =
            state.last.checked_add(1).ok_or_else(|| Error::State("nonces exhausted".into()))?;
        if next > state.reserved {
            let reserved = next.saturating_add(NONCE_BLOCK - 1);
            if let Some(file) = &self.file {
                write_synced(file, reserved)?;
            }
            state.reserved = reserved;
        }
        state.last = next;
        Ok(next)
    }
}

/// Replaces `file`'s content with `value`, synced: a temporary file is written and synced,
/// renamed over `file`, and the directory synced so the rename survives a crash.
fn write_synced(file: &Path, value: u64) -> Result<()> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension("tmp");
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(value.to_string().as_bytes())?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_increase_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nonce");
        let first = NonceSource::persistent(file.clone()).unwrap();
        assert_eq!(first.next().unwrap(), 1);
        assert_eq!(first.next().unwrap(), 2);
        // The first nonce reserved a block on disk; the rest of it cost no write.
        let on_disk = || std::fs::read_to_string(&file).unwrap().parse::<u64>().unwrap();
        assert_eq!(on_disk(), NONCE_BLOCK);
        for expected in 3..=NONCE_BLOCK {
            assert_eq!(first.next().unwrap(), expected);
        }
        assert_eq!(on_disk(), NONCE_BLOCK);
        assert_eq!(first.next().unwrap(), NONCE_BLOCK + 1);
        assert_eq!(on_disk(), 2 * NONCE_BLOCK, "the next block is reserved first");
        // A restart (or a crash) continues after the reserved block: nothing is handed out twice.
        drop(first);
        let restarted = NonceSource::persistent(file.clone()).unwrap();
        assert_eq!(restarted.next().unwrap(), 2 * NONCE_BLOCK + 1);
        // The file is the authority.
        std::fs::write(&file, (u64::MAX / 2).to_string()).unwrap();
        let again = NonceSource::persistent(file).unwrap();
        assert_eq!(again.next().unwrap(), u64::MAX / 2 + 1);
    }

    #[test]
    fn a_corrupt_nonce_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nonce");
        std::fs::write(&file, "garbage").unwrap();
        let err = NonceSource::persistent(file).unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
    }

    #[test]
    fn the_last_nonce_is_handed_out_and_then_exhaustion_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nonce");
        std::fs::write(&file, (u64::MAX - 1).to_string()).unwrap();
        let nonces = NonceSource::persistent(file).unwrap();
        assert_eq!(nonces.next().unwrap(), u64::MAX);
        assert!(nonces.next().unwrap_err().to_string().contains("exhausted"));
    }
}
