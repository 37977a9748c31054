//! Request nonces that never repeat for a client key, even across restarts.
//!
//! Nonces count up from 1, one per request, so the settlement contract can record settled
//! requests densely (256 per storage word). With a file the last nonce is written (atomically,
//! by rename) before the nonce is handed out; keep the data directory, or executors will refuse
//! the re-used nonces as replays until the count passes them.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Hands out strictly increasing nonces.
#[derive(Debug)]
pub struct NonceSource {
    last: Mutex<u64>,
    file: Option<PathBuf>,
}

impl NonceSource {
    /// Nonces kept only in memory (for ephemeral keys).
    pub fn in_memory() -> Self {
        Self { last: Mutex::new(0), file: None }
    }

    /// Nonces persisted in `file` (created if missing).
    pub fn persistent(file: PathBuf) -> Result<Self> {
        let last = match std::fs::read_to_string(&file) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                Error::State(format!("nonce file {} is not a number", file.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(Self { last: Mutex::new(last), file: Some(file) })
    }

    /// The next nonce; persisted before it is returned.
    pub fn next(&self) -> Result<u64> {
        let mut last = self.last.lock().map_err(|_| Error::State("nonce lock poisoned".into()))?;
        let next = last.checked_add(1).ok_or_else(|| Error::State("nonces exhausted".into()))?;
        if let Some(file) = &self.file {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, next.to_string())?;
            std::fs::rename(&tmp, file)?;
        }
        *last = next;
        Ok(next)
    }
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
        assert_eq!(NonceSource::persistent(file.clone()).unwrap().next().unwrap(), 3);
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
}
