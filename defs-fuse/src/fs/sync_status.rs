//! `defs sync` and `defs status` on the mount: which dirty files live under a path, uploading
//! them now and waiting until they are clean, and the journal's view for status.
//!
//! ```text
//!  sync_tree(root) ── walk root's subtree (loop, not recursion) ∩ journal's dirty set
//!        ▼
//!  ≤ SYNC_PARALLEL waits: Flusher::upload_now(ino) ── retried SYNC_ATTEMPTS times ──▶ report
//! ```
//!
//! The set of files is taken when the sync starts: files written later under the path are not
//! waited for (a file of the set written again is waited for until its newest bytes upload).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use defs_core::cache_store::Usage;
use defs_core::namespace::FileKind;
use defs_core::types::InodeNo;
use futures::StreamExt;

use super::{Error, Fs, READDIR_BATCH, Result};
use crate::flusher::FlushError;

/// Upload attempts `sync` makes per file before it reports the file as failed. Three, a
/// [`SYNC_RETRY_DELAY`] apart: a transient failure (a peer restarting, a timeout) gets another
/// chance, a lasting one (no reachable peers, a full network) is reported within seconds
/// instead of the flusher's minutes of backoff.
pub const SYNC_ATTEMPTS: u32 = 3;

/// Pause between a file's sync attempts.
pub const SYNC_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Files whose upload a sync waits for at once. The flusher runs
/// [`crate::flusher::MAX_CONCURRENT_UPLOADS`] uploads at once, but a pack takes every small
/// file waited for (up to [`crate::flusher::PACK_MAX_FILES`]): a file waited for is due at
/// once, so the more are waited for, the fuller the packs a sync right after a copy makes.
pub const SYNC_PARALLEL: usize = 1024;

/// Failed files listed by [`Fs::upload_status`] (the counts include all of them).
pub const STATUS_MAX_FAILED: usize = 100;

/// How far a sync is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// Files uploaded (or found clean) so far.
    pub files_done: u64,
    /// Dirty files under the path when the sync started.
    pub files_total: u64,
    /// Bytes of the files done.
    pub bytes_done: u64,
    /// Bytes of all the files.
    pub bytes_total: u64,
}

/// A file a sync could not upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncFailure {
    /// The inode.
    pub ino: InodeNo,
    /// Its path relative to the synced root (empty when it is the root).
    pub path: PathBuf,
    /// The last upload error.
    pub error: String,
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Dirty files found under the root when the sync started.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The files that still are not uploaded, with why.
    pub failed: Vec<SyncFailure>,
}

impl SyncReport {
    /// Whether every file under the root is uploaded.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }
}

/// A dirty file as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyFile {
    /// The inode.
    pub ino: InodeNo,
    /// A path of it inside the mount (relative to its root); `None` when no name leads to it
    /// (unlinked but still open).
    pub path: Option<PathBuf>,
    /// Its size.
    pub bytes: u64,
    /// Failed uploads since it became dirty.
    pub failures: u32,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

/// The write-back cache as `defs status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// Dirty files waiting for their upload (not running, never failed).
    pub waiting_files: u64,
    /// Their bytes.
    pub waiting_bytes: u64,
    /// Files being uploaded now.
    pub uploading_files: u64,
    /// Their bytes.
    pub uploading_bytes: u64,
    /// Dirty files whose last upload failed (retried in the background).
    pub failed_files: u64,
    /// Their bytes.
    pub failed_bytes: u64,
    /// Up to [`STATUS_MAX_FAILED`] of the failed files, with their paths and errors.
    pub failed: Vec<DirtyFile>,
    /// Whether the mount has a network to upload to.
    pub has_network: bool,
    /// The cache store's usage.
    pub cache: Usage,
}

impl UploadStatus {
    /// Every dirty file: waiting, uploading and failed.
    pub fn dirty_files(&self) -> u64 {
        self.waiting_files + self.uploading_files + self.failed_files
    }

    /// The bytes of every dirty file.
    pub fn dirty_bytes(&self) -> u64 {
        self.waiting_bytes + self.uploading_bytes + self.failed_bytes
    }
}

/// A dirty file a sync found: inode, path below the root, size.
type Target = (InodeNo, PathBuf, u64);

impl Fs {
    /// The inode at `rel`, a path relative to the mount's root made of plain names (what is
    /// left of a canonical path once the mountpoint is stripped). Symlinks are not followed.
    ///
    /// # Errors
    /// NotFound, NotADirectory; [`Error::Invalid`] for `..`, `.` or an absolute path.
    pub fn resolve(&self, rel: &Path) -> Result<InodeNo> {
        let mut ino = InodeNo::ROOT;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(Error::Invalid {
                    what: "a path inside the mount must be relative and made of plain names",
                });
            };
            ino = self.inner.db.lookup(ino, name.as_bytes())?.ino;
        }
        Ok(ino)
    }

    /// The size of `ino` as `stat` shows it.
    fn size_of(&self, ino: InodeNo) -> Result<u64> {
        Ok(self.inner.db.getattr(ino)?.size)
    }

    /// Paths (relative to `root`) of the inodes of `wanted` found in `root`'s subtree, or of
    /// `root` itself (empty path). Walks directories breadth first with a queue, and stops as
    /// soon as every wanted inode is found. A hard-linked file gets the first path seen.
    fn paths_under(
        &self,
        root: InodeNo,
        wanted: &HashSet<InodeNo>,
    ) -> Result<HashMap<InodeNo, PathBuf>> {
        let mut found = HashMap::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        if wanted.contains(&root) {
            found.insert(root, PathBuf::new());
        }
        if self.inner.db.getattr(root)?.kind != FileKind::Directory {
            return Ok(found);
        }
        let mut queue = VecDeque::from([(root, PathBuf::new())]);
        let mut seen_dirs = HashSet::from([root]);
        while let Some((dir, path)) = queue.pop_front() {
            let mut after = 0;
            loop {
                let batch = match self.inner.db.readdir(dir, after, READDIR_BATCH) {
                    Ok(b) => b,
                    // Removed while we walk: nothing below it any more.
                    Err(defs_core::Error::NotFound { .. }) => break,
                    Err(e) => return Err(e.into()),
                };
                let Some(last) = batch.last() else { break };
                after = last.cookie;
                for e in batch {
                    let child = path.join(OsStr::from_bytes(&e.name));
                    if e.kind == FileKind::Directory {
                        // A corrupt DB must not make the walk loop forever.
                        if seen_dirs.insert(e.ino) {
                            queue.push_back((e.ino, child.clone()));
                        }
                    }
                    if wanted.contains(&e.ino) {
                        found.entry(e.ino).or_insert(child);
                        if found.len() == wanted.len() {
                            return Ok(found);
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// The dirty files under `root` (itself, or its whole subtree when it is a directory), in
    /// path order.
    fn dirty_under(&self, root: InodeNo) -> Result<Vec<Target>> {
        let dirty: HashSet<InodeNo> = self
            .inner
            .db
            .dirty_inodes()?
            .into_iter()
            .map(|r| r.ino)
            .collect();
        let paths = self.paths_under(root, &dirty)?;
        let mut out = Vec::with_capacity(paths.len());
        for (ino, path) in paths {
            match self.size_of(ino) {
                Ok(size) => out.push((ino, path, size)),
                // Deleted since the walk: nothing to upload.
                Err(Error::Core(defs_core::Error::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// The dirty files under `root` and their bytes, as a sync would start with them
    /// (`files_total`, `bytes_total`), without uploading anything.
    ///
    /// # Errors
    /// NotFound when `root` is gone; the DB could not be read.
    pub fn pending(&self, root: InodeNo) -> Result<SyncProgress> {
        let targets = self.dirty_under(root)?;
        Ok(SyncProgress {
            files_total: targets.len() as u64,
            bytes_total: targets.iter().map(|t| t.2).sum(),
            ..SyncProgress::default()
        })
    }

    /// `defs sync`: uploads every dirty file under `root` now (no debounce) and waits until
    /// each is clean, calling `progress` as files finish. A file whose upload fails
    /// [`SYNC_ATTEMPTS`] times is reported in [`SyncReport::failed`] with its last error;
    /// the other files are still waited for. A file deleted meanwhile counts as done.
    ///
    /// # Errors
    /// NotFound when `root` is gone; [`FlushError::NoUploader`] when something under `root` is
    /// dirty and the mount has no network; [`FlushError::Closed`] when the mount shuts down.
    ///
    /// # Cancel safety
    /// Safe: uploads already asked for go on in the flusher; only the wait is dropped.
    pub async fn sync_tree(
        &self,
        root: InodeNo,
        progress: impl Fn(SyncProgress) + Send,
    ) -> Result<SyncReport> {
        let targets = self.dirty_under(root)?;
        let mut p = SyncProgress {
            files_total: targets.len() as u64,
            bytes_total: targets.iter().map(|t| t.2).sum(),
            ..SyncProgress::default()
        };
        let mut report = SyncReport {
            files: p.files_total,
            bytes: p.bytes_total,
            failed: Vec::new(),
        };
        progress(p);
        if targets.is_empty() {
            return Ok(report);
        }
        if !self.inner.flusher.has_uploader() {
            return Err(FlushError::NoUploader { ino: targets[0].0 }.into());
        }
        let flusher = self.inner.flusher.clone();
        let mut waits = futures::stream::iter(targets.into_iter().map(|(ino, path, size)| {
            let flusher = flusher.clone();
            async move {
                let mut last = String::new();
                for attempt in 1..=SYNC_ATTEMPTS {
                    match flusher.upload_now(ino).await {
                        Ok(()) | Err(FlushError::Deleted { .. }) => {
                            return (ino, path, size, Ok(()));
                        }
                        Err(FlushError::Failed { reason, .. }) => last = reason,
                        Err(e) => return (ino, path, size, Err(e)),
                    }
                    if attempt < SYNC_ATTEMPTS {
                        tokio::time::sleep(SYNC_RETRY_DELAY).await;
                    }
                }
                let failed = FlushError::Failed { ino, reason: last };
                (ino, path, size, Err(failed))
            }
        }))
        .buffer_unordered(SYNC_PARALLEL);
        while let Some((ino, path, size, outcome)) = waits.next().await {
            match outcome {
                Ok(()) => {
                    p.files_done += 1;
                    p.bytes_done += size;
                    progress(p);
                }
                Err(FlushError::Failed { reason, .. }) => report.failed.push(SyncFailure {
                    ino,
                    path,
                    error: reason,
                }),
                Err(e) => return Err(e.into()),
            }
        }
        report.failed.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(report)
    }

    /// The write-back cache for `defs status`: dirty, uploading and failed files from the
    /// journal, with the paths and last errors of the failed ones.
    ///
    /// # Errors
    /// The DB could not be read.
    pub fn upload_status(&self) -> Result<UploadStatus> {
        let mut s = UploadStatus {
            waiting_files: 0,
            waiting_bytes: 0,
            uploading_files: 0,
            uploading_bytes: 0,
            failed_files: 0,
            failed_bytes: 0,
            failed: Vec::new(),
            has_network: self.inner.flusher.has_uploader(),
            cache: self.inner.cache.usage(),
        };
        let mut failed = Vec::new();
        for r in self.inner.db.dirty_inodes()? {
            let bytes = match self.size_of(r.ino) {
                Ok(b) => b,
                Err(Error::Core(defs_core::Error::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            };
            if r.uploading.is_some() {
                s.uploading_files += 1;
                s.uploading_bytes += bytes;
            } else if r.failures > 0 {
                s.failed_files += 1;
                s.failed_bytes += bytes;
                if failed.len() < STATUS_MAX_FAILED {
                    failed.push(DirtyFile {
                        ino: r.ino,
                        path: None,
                        bytes,
                        failures: r.failures,
                        last_error: r.last_error,
                    });
                }
            } else {
                s.waiting_files += 1;
                s.waiting_bytes += bytes;
            }
        }
        let wanted: HashSet<InodeNo> = failed.iter().map(|f| f.ino).collect();
        let mut paths = self.paths_under(InodeNo::ROOT, &wanted)?;
        for f in &mut failed {
            f.path = paths.remove(&f.ino);
        }
        s.failed = failed;
        Ok(s)
    }
}
