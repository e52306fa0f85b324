//! The sealed manifests and holder records kept on this machine (`DIR/meta/manifests/`).

use std::path::{Path, PathBuf};

use std::fs::File;

use tracing::warn;

use super::holders::{self, HolderUpdate};
use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;
use crate::manifest::SealedManifest;
use crate::types::FileId;

/// Sealed manifests kept on this machine (`DIR/meta/manifests/<file id>`), so reading a file
/// this machine stored needs no lookup. One file per manifest, written temp-then-rename; a
/// missing or damaged one is fetched from the network again.
#[derive(Debug)]
pub struct ManifestStore {
    dir: PathBuf,
}

impl ManifestStore {
    /// Opens (creating) the directory.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn open(dir: &Path) -> Result<ManifestStore> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(ManifestStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, file: FileId) -> PathBuf {
        self.dir.join(file.to_string())
    }

    /// Keeps `sealed` durably (fsynced, directory too).
    ///
    /// # Errors
    /// [`Error::Io`] (a full disk included).
    pub fn put(&self, sealed: &SealedManifest) -> Result<()> {
        let tmp = self.dir.join(format!(".{}.tmp", sealed.id));
        self.write_durably(&tmp, &self.path(sealed.id), &sealed.bytes)
    }

    /// Writes `bytes` to `path` through `tmp`: written, fsynced, renamed, directory fsynced.
    fn write_durably(&self, tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
        let write = || -> std::io::Result<()> {
            let f = File::create(tmp)?;
            std::io::Write::write_all(&mut &f, bytes)?;
            f.sync_all()?;
            std::fs::rename(tmp, path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(tmp);
            return Err(Error::io(path, e));
        }
        fsync_dir(&self.dir)
    }

    /// The sealed manifest of `file`, if kept here and intact (its BLAKE3 is its id).
    ///
    /// # Errors
    /// [`Error::Io`] other than "not found".
    pub fn get(&self, file: FileId) -> Result<Option<Vec<u8>>> {
        let path = self.path(file);
        match std::fs::read(&path) {
            Ok(bytes) if blake3::hash(&bytes).as_bytes() == &file.0 => Ok(Some(bytes)),
            Ok(_) => {
                warn!(path = %path.display(), "local manifest copy is damaged; fetching it again");
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Forgets the local copy of `file` (and its holder record).
    ///
    /// # Errors
    /// [`Error::Io`] other than "not found".
    pub fn remove(&self, file: FileId) -> Result<()> {
        for path in [self.path(file), self.holders_path(file)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn holders_path(&self, file: FileId) -> PathBuf {
        self.dir.join(format!("{file}.holders"))
    }

    /// The holder record of `file` ([`holders`]): empty when there is none; a damaged one is
    /// ignored with a warning (holders are hints, a lookup finds the shards anyway).
    ///
    /// # Errors
    /// [`Error::Io`] other than "not found".
    pub fn holders(&self, file: FileId) -> Result<Vec<HolderUpdate>> {
        let path = self.holders_path(file);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(holders::decode(&bytes).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "holder record ignored");
                Vec::new()
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Adds `updates` to the holder record of `file` (durably: temp file, fsync, rename).
    ///
    /// # Errors
    /// [`Error::Io`] (a full disk included); the previous record is then unchanged.
    pub fn add_holders(&self, file: FileId, updates: Vec<HolderUpdate>) -> Result<()> {
        let mut all = self.holders(file)?;
        holders::merge(&mut all, updates);
        let tmp = self.dir.join(format!(".{file}.holders.tmp"));
        self.write_durably(&tmp, &self.holders_path(file), &holders::encode(&all))
    }
}
