//! Executors remembered between runs: the verified announcements of the last directory the
//! validators gave, kept in the data directory, so that a client started while every
//! validator is down (or unreachable) still reaches the executors it knew. Announcements are
//! signed by their executors: each one is verified again when read, and one older than
//! [`REMEMBERED_MAX_AGE_SECS`] is dropped. An executor that has gone costs one refused dial
//! and a cooldown, as any other.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use lloom_core::registry_query::ExecutorInfo;
use lloom_core::{AnnouncementLimits, PeerId, SignedAnnouncement, VerifyPolicy, unix_now};
use serde::{Deserialize, Serialize};

use crate::directory::Directory;

/// Oldest remembered announcement used, in seconds (a day).
pub const REMEMBERED_MAX_AGE_SECS: u64 = 24 * 3600;
/// Most executors remembered (the most recently announced are kept).
pub const MAX_REMEMBERED: usize = 1_024;
/// Largest file read; a larger one is read no further than this and refused.
const MAX_FILE_BYTES: u64 = 8 << 20;
/// The file's format.
const VERSION: u32 = 1;

/// What the file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    version: u32,
    /// When it was written (Unix seconds).
    saved_at: u64,
    executors: Vec<SavedExecutor>,
}

/// One executor: its peer id and its signed announcement, encoded as on gossip, in hex.
#[derive(Debug, Serialize, Deserialize)]
struct SavedExecutor {
    peer_id: String,
    announcement: String,
}

/// The executors read back from the file, verified.
#[derive(Debug, Default)]
pub struct Remembered {
    /// When the file was written (Unix seconds); 0 when nothing was read.
    pub saved_at: u64,
    /// The executors whose announcements verify and are recent enough.
    pub executors: Vec<(PeerId, SignedAnnouncement)>,
    /// Entries dropped: malformed, forged, withdrawn or too old.
    pub dropped: usize,
}

impl Remembered {
    /// Adds the remembered executors to `directory`, verified again against `policy` (a day's
    /// age allowed); returns how many it took.
    pub fn add_to(&self, directory: &mut Directory, policy: &VerifyPolicy) -> usize {
        self.executors
            .iter()
            .filter(|(peer, announcement)| {
                let info = ExecutorInfo {
                    announcement: announcement.clone(),
                    peer_id: peer.to_string(),
                    last_seen: unix_now(),
                };
                directory.ingest(info, policy, REMEMBERED_MAX_AGE_SECS)
            })
            .count()
    }
}

/// The file of executors remembered between runs.
#[derive(Clone, Debug)]
pub struct KnownExecutors {
    path: PathBuf,
}

impl KnownExecutors {
    /// The file at `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the executors back, each announcement verified with `policy`; a missing file
    /// gives none, and an unreadable one none with a warning (the file is a cache).
    pub fn load(&self, policy: &VerifyPolicy) -> Remembered {
        let saved = match self.read() {
            Ok(saved) => saved,
            Err(_) if !self.path.exists() => return Remembered::default(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "the executors remembered from earlier runs do not read ({e}); none are used");
                return Remembered::default();
            }
        };
        let mut directory = Directory::default();
        let mut dropped = 0;
        let limits = AnnouncementLimits::default();
        for entry in saved.executors.iter().take(MAX_REMEMBERED) {
            let announcement = hex::decode(&entry.announcement)
                .ok()
                .and_then(|bytes| SignedAnnouncement::decode(&bytes, &limits).ok());
            let kept = announcement.is_some_and(|announcement| {
                let info = ExecutorInfo {
                    announcement,
                    peer_id: entry.peer_id.clone(),
                    last_seen: saved.saved_at,
                };
                directory.ingest(info, policy, REMEMBERED_MAX_AGE_SECS)
            });
            dropped += usize::from(!kept);
        }
        dropped += saved.executors.len().saturating_sub(MAX_REMEMBERED);
        let executors = directory.into_executors().into_values().collect();
        Remembered { saved_at: saved.saved_at, executors, dropped }
    }

    fn read(&self) -> Result<Saved, String> {
        let file = std::fs::File::open(&self.path).map_err(|e| e.to_string())?;
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
        }
        let saved: Saved = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if saved.version != VERSION {
            return Err(format!("format {} (this client reads {VERSION})", saved.version));
        }
        Ok(saved)
    }

    /// Keeps `directory`'s executors for the next run (the [`MAX_REMEMBERED`] most recently
    /// announced), written whole, then renamed over the file.
    pub fn save(&self, directory: &Directory) -> std::io::Result<()> {
        self.write(&self.render(directory)?)
    }

    /// The file's text for `directory`'s executors (see [`KnownExecutors::save`]).
    pub fn render(&self, directory: &Directory) -> std::io::Result<String> {
        let mut executors: Vec<(&PeerId, &SignedAnnouncement)> = directory.executors().collect();
        executors.sort_by_key(|(_, a)| std::cmp::Reverse(a.commitment.timestamp));
        executors.truncate(MAX_REMEMBERED);
        let saved = Saved {
            version: VERSION,
            saved_at: unix_now(),
            executors: executors
                .into_iter()
                .map(|(peer, announcement)| SavedExecutor {
                    peer_id: peer.to_string(),
                    announcement: hex::encode(announcement.encode()),
                })
                .collect(),
        };
        serde_json::to_string(&saved).map_err(std::io::Error::other)
    }

    /// Writes `text` (from [`KnownExecutors::render`]) whole, then renames it over the file.
    pub fn write(&self, text: &str) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let partial = self.path.with_extension("partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, &self.path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use lloom_core::{AnnouncementBody, DomainConfig, ModelOffer, NodeKey, U256};

    use super::*;

    fn announcement(key: &NodeKey, timestamp: u64) -> SignedAnnouncement {
        let offer = ModelOffer {
            model: "m".into(),
            context_length: 2048,
            price_per_input_token: U256::from(1),
            price_per_output_token: U256::from(2),
            weights_sha256: None,
            quantization: None,
            capabilities: vec![],
        };
        let body = AnnouncementBody {
            offers: vec![offer],
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/4002".into()],
            ..AnnouncementBody::default()
        };
        SignedAnnouncement::sign(key, DomainConfig::default(), 1, timestamp, body, false).unwrap()
    }

    fn directory_of(entries: &[(&NodeKey, u64)]) -> Directory {
        let mut directory = Directory::default();
        for (key, timestamp) in entries {
            let info = ExecutorInfo {
                announcement: announcement(key, *timestamp),
                peer_id: key.peer_id().to_string(),
                last_seen: unix_now(),
            };
            assert!(directory.ingest(info, &VerifyPolicy::default(), REMEMBERED_MAX_AGE_SECS));
        }
        directory
    }

    #[test]
    fn saved_executors_come_back_verified() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownExecutors::new(dir.path().join("sub").join("known-executors.json"));
        let policy = VerifyPolicy::default();
        assert!(known.load(&policy).executors.is_empty(), "no file yet");
        let (a, b) = (NodeKey::generate(), NodeKey::generate());
        let now = unix_now();
        known.save(&directory_of(&[(&a, now), (&b, now - 600)])).unwrap();
        let remembered = known.load(&policy);
        assert_eq!((remembered.executors.len(), remembered.dropped), (2, 0));
        assert!(remembered.saved_at >= now);
        let mut directory = Directory::default();
        assert_eq!(remembered.add_to(&mut directory, &policy), 2);
        assert_eq!(directory.candidates("m").len(), 2);
        // Another domain's client verifies none of them.
        let other = VerifyPolicy::new(DomainConfig { chain_id: 1, ..DomainConfig::default() });
        assert_eq!(known.load(&other).dropped, 2);
    }

    #[test]
    fn forged_stale_and_malformed_entries_are_dropped_and_a_bad_file_gives_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known-executors.json");
        let known = KnownExecutors::new(&path);
        let (a, b, c) = (NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let now = unix_now();
        known.save(&directory_of(&[(&a, now), (&b, now), (&c, now)])).unwrap();
        // Rewrite the file by hand: a's announcement claimed by c's peer id, b's two days old
        // (re-signed), and an entry that is not hex.
        let mut saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let entries = saved["executors"].as_array_mut().unwrap();
        let a_entry = entries.iter().position(|e| e["peer_id"] == a.peer_id().to_string()).unwrap();
        entries[a_entry]["peer_id"] = c.peer_id().to_string().into();
        let old = hex::encode(announcement(&b, now - 2 * REMEMBERED_MAX_AGE_SECS).encode());
        entries.push(serde_json::json!({"peer_id": b.peer_id().to_string(), "announcement": old}));
        entries.push(serde_json::json!({"peer_id": "x", "announcement": "not hex"}));
        std::fs::write(&path, saved.to_string()).unwrap();
        let remembered = known.load(&VerifyPolicy::default());
        let kept: Vec<_> = remembered.executors.iter().map(|(_, a)| a.executor()).collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.contains(&b.address()) && kept.contains(&c.address()));
        assert_eq!(remembered.dropped, 3);

        for bad in ["", "{", "[]", r#"{"version": 9, "saved_at": 0, "executors": []}"#] {
            std::fs::write(&path, bad).unwrap();
            assert!(known.load(&VerifyPolicy::default()).executors.is_empty(), "{bad:?}");
        }
        let huge = vec![b' '; usize::try_from(MAX_FILE_BYTES).unwrap() + 2];
        std::fs::write(&path, huge).unwrap();
        assert!(known.read().unwrap_err().contains("larger than"));
    }

    #[test]
    fn only_the_most_recently_announced_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownExecutors::new(dir.path().join("known-executors.json"));
        let keys: Vec<NodeKey> = (0..MAX_REMEMBERED + 3).map(|_| NodeKey::generate()).collect();
        let now = unix_now();
        let entries: Vec<(&NodeKey, u64)> =
            keys.iter().enumerate().map(|(i, k)| (k, now - i as u64)).collect();
        known.save(&directory_of(&entries)).unwrap();
        let remembered = known.load(&VerifyPolicy::default());
        assert_eq!(remembered.executors.len(), MAX_REMEMBERED);
        let kept: std::collections::HashSet<_> =
            remembered.executors.iter().map(|(_, a)| a.executor()).collect();
        for oldest in &keys[MAX_REMEMBERED..] {
            assert!(!kept.contains(&oldest.address()));
        }
    }
}
