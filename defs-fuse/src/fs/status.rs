//! What the mount tells about storage: the read-only status xattrs (`user.defs.state`,
//! `user.defs.id`, `user.defs.durability`), statfs from the network's capacity, and
//! [`Fs::tree_status`], the whole tree's summary that `defs status` prints.
//!
//! The status xattrs are computed on each getxattr, never stored, never listed by listxattr
//! (so `cp -a` and `rsync -X` do not copy them), and setting or removing them is EPERM.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use defs_core::namespace::{Content, FileKind};
use defs_core::object::{DamagedShard, Durability};
use defs_core::pipeline::{FileKey, choose};
use defs_core::types::{FileId, InodeNo};
use tracing::debug;

use super::{Error, Fs, READDIR_BATCH, Result, STATE_XATTR, StatFs};

/// The read-only virtual xattr with a file's stored object id (hex), absent (ENODATA) while
/// the file has never been stored.
pub const ID_XATTR: &[u8] = b"user.defs.id";

/// The read-only virtual xattr telling how well a file is protected, from its manifest's
/// holders: e.g. `14/14 shards, survives 4 lost nodes`; a dirty file says it is not stored yet.
pub const DURABILITY_XATTR: &[u8] = b"user.defs.durability";

/// Files with errors that [`TreeStatus`] names, at most (the counts include all of them).
pub const TREE_STATUS_MAX_ERRORS: usize = 100;

/// A file size statfs assumes when it asks which layout big files get: redundancy is that of
/// the layout most of the bytes are stored with.
const STATFS_LAYOUT_PROBE: u64 = 1 << 40;

/// The whole tree's storage state, for `defs status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeStatus {
    /// Regular files (each inode once, however many names it has).
    pub files: u64,
    /// Directories, the root included.
    pub directories: u64,
    /// Bytes of all regular files.
    pub bytes: u64,
    /// Files stored and unchanged since.
    pub clean: u64,
    /// Files with changes waiting to be uploaded (no failure yet).
    pub dirty: u64,
    /// Files being uploaded now.
    pub uploading: u64,
    /// Dirty files whose last upload failed.
    pub failed: u64,
    /// The least protected stored file and its durability (fewest node losses survived).
    pub worst: Option<(PathBuf, Durability)>,
    /// Files with an error (a failed upload, a manifest that cannot be read), with the reason;
    /// at most [`TREE_STATUS_MAX_ERRORS`].
    pub errors: Vec<(PathBuf, String)>,
    /// Shards that reads found damaged and rebuilt around since the mount started (oldest
    /// first, at most [`defs_core::object::DAMAGED_MAX`]), with a path of the file each belongs
    /// to (`None` when no file of the tree has that content any more).
    pub damaged: Vec<(Option<PathBuf>, DamagedShard)>,
}

/// The line `defs status` prints for damaged shards, e.g. "1 damaged shard found on read
/// (rebuilt from parity)".
pub fn damaged_summary(n: usize) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{n} damaged shard{s} found on read (rebuilt from parity)")
}

/// One damaged shard as `defs status` prints it.
pub fn damaged_line(path: Option<&std::path::Path>, d: &DamagedShard) -> String {
    let file = path.map_or_else(|| format!("object {}", d.file), |p| p.display().to_string());
    let holder = d.holder.map_or_else(
        || "no recorded holder".to_string(),
        |h| format!("holder {h}"),
    );
    format!(
        "{file}: shard {} (segment {}, index {}) on {holder}: {}",
        d.shard, d.segment, d.index, d.reason
    )
}

impl std::fmt::Display for TreeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} files ({} bytes) in {} directories",
            self.files, self.bytes, self.directories
        )?;
        writeln!(
            f,
            "clean {}, dirty {}, uploading {}, failed {}",
            self.clean, self.dirty, self.uploading, self.failed
        )?;
        match &self.worst {
            Some((path, d)) => writeln!(f, "least protected: {} ({d})", path.display())?,
            None => writeln!(f, "least protected: (nothing stored)")?,
        }
        for (path, reason) in &self.errors {
            writeln!(f, "error: {}: {reason}", path.display())?;
        }
        if !self.damaged.is_empty() {
            writeln!(f, "{}:", damaged_summary(self.damaged.len()))?;
            for (path, d) in &self.damaged {
                writeln!(f, "  {}", damaged_line(path.as_deref(), d))?;
            }
        }
        Ok(())
    }
}

fn is_worse(d: &Durability, than: &Durability) -> bool {
    (d.survives, d.placed * than.shards.max(1)) < (than.survives, than.placed * d.shards.max(1))
}

impl Fs {
    /// Whether `name` is one of the read-only status xattrs.
    pub(super) fn is_status_xattr(name: &[u8]) -> bool {
        name == STATE_XATTR || name == ID_XATTR || name == DURABILITY_XATTR
    }

    /// The value of a status xattr other than `user.defs.state`, or `None` for other names.
    ///
    /// # Errors
    /// NotFound; NoXattr (ENODATA) for `user.defs.id` of a file never stored and for both on
    /// anything but a regular file; DB errors.
    pub(super) async fn status_xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Option<Vec<u8>>> {
        if name != ID_XATTR && name != DURABILITY_XATTR {
            return Ok(None);
        }
        let attr = self.inner.db.getattr(ino)?;
        let absent = || -> Error {
            defs_core::Error::NoXattr {
                ino: ino.0,
                name: String::from_utf8_lossy(name).into_owned(),
            }
            .into()
        };
        if attr.kind != FileKind::RegularFile {
            return Err(absent());
        }
        let content = self.inner.db.content(ino)?;
        if name == ID_XATTR {
            return match content {
                Content::Stored { file, .. } => Ok(Some(file.to_string().into_bytes())),
                Content::Empty => Err(absent()),
            };
        }
        let dirty = self.inner.db.dirty_record(ino)?.is_some();
        let stored = match &content {
            Content::Stored { .. } => Some(self.durability(ino, &content).await),
            Content::Empty => None,
        };
        let text = match (dirty, stored) {
            (true, None) => "dirty: not stored yet".to_string(),
            (true, Some(Ok(d))) => format!("dirty: changes not stored yet (stored version: {d})"),
            (true, Some(Err(e))) => format!("dirty: changes not stored yet ({e})"),
            (false, Some(Ok(d))) => d.to_string(),
            (false, Some(Err(e))) => format!("unknown: {e}"),
            (false, None) => "empty: nothing to store".to_string(),
        };
        Ok(Some(text.into_bytes()))
    }

    /// The durability of stored `content`, or why it is unknown.
    async fn durability(&self, ino: InodeNo, content: &Content) -> Result<Durability, String> {
        let Content::Stored { file, key, .. } = content else {
            return Err("not stored".into());
        };
        let Some(objects) = &self.inner.objects else {
            return Err("no network is configured".into());
        };
        match objects.manifest(*file, &FileKey::from_bytes(*key)).await {
            Ok(m) => Ok(Durability::of(&m)),
            Err(e) => {
                debug!(%ino, file = %file, error = %e, "manifest unreadable");
                Err(format!("its manifest cannot be read: {e}"))
            }
        }
    }

    /// statfs over a network: the network's free capacity divided by the redundancy of the
    /// layout big files get, capped by `local_free` (every write lands in the cache first);
    /// at least one block while a storage node is up. `None` when the network does not say.
    pub(super) async fn network_free(&self, local_free: u64, frsize: u64) -> Option<u64> {
        let objects = self.inner.objects.as_ref()?;
        let client = objects.client();
        let capacity = match client.capacity().await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "statfs: the network's capacity is unknown; reporting the cache's");
                return None;
            }
        };
        let peers = client.storage_peers().await.unwrap_or(0);
        let (data, total) = match choose(STATFS_LAYOUT_PROBE, peers, objects.layout()) {
            Ok(g) => (u64::from(g.data_shards()), u64::from(g.total_shards())),
            Err(_) => (
                u64::from(objects.layout().k),
                u64::from(objects.layout().k) + u64::from(objects.layout().m),
            ),
        };
        let usable = u64::try_from(
            u128::from(capacity) * u128::from(data.max(1)) / u128::from(total.max(1)),
        )
        .unwrap_or(u64::MAX);
        let mut free = usable.min(local_free);
        if peers > 0 {
            free = free.max(frsize);
        }
        Some(free)
    }

    /// Applies [`Fs::network_free`] to the cache filesystem's figures.
    pub(super) async fn statfs_over_network(&self, local: StatFs) -> StatFs {
        let frsize = u64::from(local.frsize.max(1));
        let Some(free) = self
            .network_free(local.bavail.saturating_mul(frsize), frsize)
            .await
        else {
            return local;
        };
        let usage = self.inner.cache.usage();
        let used = (usage.clean_bytes + usage.dirty_bytes).div_ceil(frsize);
        let free = free / frsize;
        StatFs {
            blocks: free + used,
            bfree: free,
            bavail: free,
            ..local
        }
    }

    /// The storage state of the whole tree: files by upload state, the least protected stored
    /// file, and files with errors. Walks the namespace (a loop, not recursion) and opens each
    /// clean file's manifest (from memory or the local manifest store; the network only for
    /// manifests this machine does not keep).
    ///
    /// # Errors
    /// DB errors while walking.
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn tree_status(&self) -> Result<TreeStatus> {
        let db = &self.inner.db;
        let journal: HashMap<InodeNo, defs_core::DirtyRecord> =
            db.dirty_inodes()?.into_iter().map(|r| (r.ino, r)).collect();
        let mut status = TreeStatus::default();
        let damaged = self
            .inner
            .objects
            .as_ref()
            .map(|o| o.damaged())
            .unwrap_or_default();
        let damaged_files: HashSet<FileId> = damaged.iter().map(|d| d.file).collect();
        let mut damaged_paths: HashMap<FileId, PathBuf> = HashMap::new();
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([(InodeNo::ROOT, PathBuf::from("/"))]);
        fn error(status: &mut TreeStatus, path: PathBuf, reason: String) {
            if status.errors.len() < TREE_STATUS_MAX_ERRORS {
                status.errors.push((path, reason));
            }
        }
        while let Some((dir, path)) = queue.pop_front() {
            status.directories += 1;
            let mut after = 0;
            loop {
                let batch = db.readdir(dir, after, READDIR_BATCH)?;
                let Some(last) = batch.last() else { break };
                after = last.cookie;
                for e in batch {
                    let child = path.join(std::ffi::OsStr::from_bytes(&e.name));
                    match e.kind {
                        FileKind::Directory => queue.push_back((e.ino, child)),
                        FileKind::RegularFile if seen.insert(e.ino) => {
                            let Ok(attr) = self.getattr(e.ino).await else {
                                continue; // removed meanwhile
                            };
                            status.files += 1;
                            status.bytes += attr.size;
                            if !damaged_files.is_empty()
                                && let Ok(Content::Stored { file, .. }) = db.content(e.ino)
                                && damaged_files.contains(&file)
                            {
                                damaged_paths.entry(file).or_insert_with(|| child.clone());
                            }
                            if let Some(r) = journal.get(&e.ino) {
                                if r.uploading.is_some() {
                                    status.uploading += 1;
                                } else if let Some(reason) = &r.last_error {
                                    status.failed += 1;
                                    error(
                                        &mut status,
                                        child,
                                        format!(
                                            "upload failed {} times, last: {reason}",
                                            r.failures
                                        ),
                                    );
                                } else {
                                    status.dirty += 1;
                                }
                                continue;
                            }
                            status.clean += 1;
                            let content = match db.content(e.ino) {
                                Ok(c @ Content::Stored { .. }) => c,
                                _ => continue,
                            };
                            match self.durability(e.ino, &content).await {
                                Ok(d) => {
                                    if status.worst.as_ref().is_none_or(|(_, w)| is_worse(&d, w)) {
                                        status.worst = Some((child, d));
                                    }
                                }
                                Err(reason) => error(&mut status, child, reason),
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        status.damaged = damaged
            .into_iter()
            .map(|d| (damaged_paths.get(&d.file).cloned(), d))
            .collect();
        Ok(status)
    }
}
