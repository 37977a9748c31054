//! Reading and writing key files: encrypted Ethereum keystores (v3 JSON, as geth and
//! `cast wallet` write them) or raw hex secrets in a mode-0600 file.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use alloy_signer_local::PrivateKeySigner;

use super::{NodeKey, PasswordSource};
use crate::error::{Error, Result};

/// Largest key file we read; a v3 keystore is well under 1 KiB.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// How a key is stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// Encrypted Ethereum keystore v3 (scrypt + AES-128-CTR), compatible with geth and foundry.
    Keystore,
    /// The raw secret as `0x`-prefixed hex in a file only the owner can read (mode 0600).
    Hex,
}

/// Writes `key` to `path` in `format`; never overwrites an existing file.
///
/// `password` is required for [`KeyFormat::Keystore`] and ignored for [`KeyFormat::Hex`].
pub fn save_key(
    key: &NodeKey,
    path: &Path,
    format: KeyFormat,
    password: Option<&PasswordSource>,
) -> Result<()> {
    if path.exists() {
        return Err(Error::KeyFileExists(path.to_owned()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    match format {
        KeyFormat::Hex => {
            let mut file =
                OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            let mut line = zeroize::Zeroizing::new(format!("0x{}\n", key.secret_hex().as_str()));
            file.write_all(line.as_bytes())?;
            file.sync_all()?;
            zeroize::Zeroize::zeroize(&mut *line);
        }
        KeyFormat::Keystore => {
            let password = password
                .ok_or_else(|| Error::NoPassword("a keystore needs a password".into()))?
                .read(true)?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or(Error::InvalidKey("key path has no usable file name"))?;
            PrivateKeySigner::encrypt_keystore(
                dir,
                &mut rand::thread_rng(),
                key.secret_bytes().as_ref(),
                password.as_bytes(),
                Some(name),
            )?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Reads a key file, detecting its format: a JSON object is a keystore (decrypted with
/// `password`), anything else must be a hex secret in a file not readable by group or others.
pub fn load_key(path: &Path, password: &PasswordSource) -> Result<NodeKey> {
    let file = fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::KeyFileMissing(path.to_owned()),
        _ => Error::Io(e),
    })?;
    let meta = file.metadata()?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(Error::TooLarge {
            what: "key file",
            size: meta.len(),
            limit: MAX_KEY_FILE_BYTES,
        });
    }
    let mut text = zeroize::Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE_BYTES).read_to_string(&mut text)?;
    if text.trim_start().starts_with('{') {
        let pass = password.read(false)?;
        let signer = PrivateKeySigner::decrypt_keystore(path, pass.as_bytes())?;
        return NodeKey::from_signer(signer);
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InvalidKey(
            "hex key file is readable by group or others; run `chmod 600` on it",
        ));
    }
    NodeKey::from_hex(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn pw(p: &str) -> PasswordSource {
        PasswordSource::Value(Zeroizing::new(p.to_owned()))
    }

    #[test]
    fn hex_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key.hex");
        let key = NodeKey::generate();
        save_key(&key, &path, KeyFormat::Hex, None).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load_key(&path, &PasswordSource::Prompt).unwrap();
        assert_eq!(loaded.address(), key.address());
        assert!(matches!(
            save_key(&key, &path, KeyFormat::Hex, None),
            Err(Error::KeyFileExists(_))
        ));
    }

    #[test]
    fn world_readable_hex_key_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.hex");
        save_key(&NodeKey::generate(), &path, KeyFormat::Hex, None).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_key(&path, &PasswordSource::Prompt), Err(Error::InvalidKey(_))));
    }

    #[test]
    fn keystore_round_trip_and_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        let key = NodeKey::generate();
        save_key(&key, &path, KeyFormat::Keystore, Some(&pw("correct horse"))).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(key.secret_hex().as_str()));
        assert!(text.contains("\"version\":3") || text.contains("\"version\": 3"));
        let loaded = load_key(&path, &pw("correct horse")).unwrap();
        assert_eq!(loaded.address(), key.address());
        assert!(matches!(load_key(&path, &pw("wrong")), Err(Error::Keystore(_))));
    }

    #[test]
    fn garbage_and_oversized_files_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        fs::write(&path, "not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load_key(&path, &PasswordSource::Prompt), Err(Error::InvalidKey(_))));
        fs::write(&path, vec![b'a'; 100_000]).unwrap();
        assert!(matches!(load_key(&path, &PasswordSource::Prompt), Err(Error::TooLarge { .. })));
        assert!(matches!(
            load_key(&dir.path().join("missing"), &PasswordSource::Prompt),
            Err(Error::KeyFileMissing(_))
        ));
    }
}
