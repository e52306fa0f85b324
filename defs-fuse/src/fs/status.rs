//! What the mount tells about storage: the read-only status xattrs (`user.defs.state`,
//! `user.defs.id`, `user.defs.durability`), statfs from the network's capacity, and
//! [`Fs::tree_status`], the whole tree's summary that `defs status` prints and `defs sync`
//! checks. Whether a file is on the network is always [`Durability::assess`] against the
//! network's liveness at that moment (defs-core's one definition), never a stored verdict.
//!
//! The status xattrs are computed on each getxattr, never stored, never listed by listxattr
//! (so `cp -a` and `rsync -X` do not copy them), and setting or removing them is EPERM.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use defs_core::durability::Liveness;
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
/// holders and which of them are reachable now: e.g. `on the network: 14/14 shards on other
/// live nodes, survives 4 lost nodes`; a dirty file says it is not stored yet.
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
    /// Clean files whose stored version is not on the network now (kept on this machine
    /// only, holders unreachable, fewer losses survived than promised, or not known).
    pub not_on_network: u64,
    /// Those files, each with its durability or why it is unknown; at most
    /// [`TREE_STATUS_MAX_ERRORS`].
    pub unprotected: Vec<(PathBuf, String)>,
    /// The stored objects of those files that have shards whose only holder is this machine
    /// (each once, all of them): a repair moves such shards onto other nodes (`defs sync` runs
    /// one).
    pub kept_here: Vec<FileId>,
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

impl TreeStatus {
    /// Whether everything in the tree is on the network: nothing dirty, uploading or failed,
    /// no file with an error, and every stored file on the network by the one definition.
    pub fn on_network(&self) -> bool {
        self.dirty == 0 && self.uploading == 0 && self.failed == 0 && self.not_on_network == 0
    }
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
        for (path, why) in &self.unprotected {
            writeln!(f, "not on the network: {}: {why}", path.display())?;
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
            Content::Stored { .. } => Some(self.durability(ino, &content, None).await),
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

    /// `user.defs.state`: the upload state, and for a clean stored file whether it is on the
    /// network now (`clean` alone means it is).
    ///
    /// # Errors
    /// NotFound; the journal or the DB could not be read.
    pub(super) async fn state_xattr(&self, ino: InodeNo) -> Result<String> {
        let state = self.upload_state(ino)?;
        if state != "clean" {
            return Ok(state);
        }
        let content = self.inner.db.content(ino)?;
        if !matches!(content, Content::Stored { .. }) {
            return Ok(state);
        }
        Ok(match self.durability(ino, &content, None).await {
            Ok(d) if d.on_network() => state,
            Ok(d) => format!("clean; {d}"),
            Err(e) => format!("clean; not known to be on the network: {e}"),
        })
    }

    /// Which nodes count for durability now, or why that is unknown.
    async fn liveness(&self) -> Result<Liveness, String> {
        let Some(objects) = &self.inner.objects else {
            return Err("no network is configured".into());
        };
        objects
            .client()
            .liveness()
            .await
            .map_err(|e| format!("the network's liveness is unknown: {e}"))
    }

    /// The durability of stored `content` now (against `live`, else the network's liveness
    /// asked here), or why it is unknown.
    async fn durability(
        &self,
        ino: InodeNo,
        content: &Content,
        live: Option<&Liveness>,
    ) -> Result<Durability, String> {
        let Content::Stored {
            file,
            key,
            offset,
            len,
        } = content
        else {
            return Err("not stored".into());
        };
        let Some(objects) = &self.inner.objects else {
            return Err("no network is configured".into());
        };
        let asked;
        let live = match live {
            Some(l) => l,
            None => {
                asked = self.liveness().await?;
                &asked
            }
        };
        match objects.manifest(*file, &FileKey::from_bytes(*key)).await {
            Ok(m) => Ok(Durability::assess_range(&m, *offset, *len, live)),
            Err(e) => {
                debug!(%ino, file = %file, error = %e, "manifest unreadable");
                Err(format!("its manifest cannot be read: {e}"))
            }
        }
    }

    /// statfs over a network: what the owner may still store on the storage nodes (each
    /// node's free space capped by what is left of the owner's quota there, summed; the node
    /// keeps these figures, so no network round trip) divided by the redundancy of the layout
    /// big files get, capped by `local_free` (every write lands in the cache first). `None`
    /// when the network does not say (no storage node has reported yet).
    pub(super) async fn network_free(&self, local_free: u64) -> Option<u64> {
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
        Some(usable.min(local_free))
    }

    /// Applies [`Fs::network_free`] to the cache filesystem's figures.
    pub(super) async fn statfs_over_network(&self, local: StatFs) -> StatFs {
        let frsize = u64::from(local.frsize.max(1));
        let Some(free) = self.network_free(local.bavail.saturating_mul(frsize)).await else {
            return local;
        };
        let usage = self.inner.cache.usage();
        let used = (usage.clean_bytes + usage.dirty_bytes).div_ceil(frsize);
        let free = free / frsize;
        StatFs {
            // Never a zero-sized disk (file managers refuse to copy onto one), even when
            // nothing more fits: then available is 0.
            blocks: (free + used).max(1),
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
        self.tree_status_under(InodeNo::ROOT, PathBuf::from("/"))
            .await
    }

    /// [`Fs::tree_status`] of the subtree at `root` (a directory or a file), whose paths
    /// start with `root_path`. `defs sync PATH` checks with it that everything under PATH is
    /// on the network.
    ///
    /// # Errors
    /// DB errors while walking; NotFound when `root` is gone.
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn tree_status_under(&self, root: InodeNo, root_path: PathBuf) -> Result<TreeStatus> {
        let db = &self.inner.db;
        let damaged = self
            .inner
            .objects
            .as_ref()
            .map(|o| o.damaged())
            .unwrap_or_default();
        let mut walk = TreeWalk {
            journal: db.dirty_inodes()?.into_iter().map(|r| (r.ino, r)).collect(),
            live: self.liveness().await,
            damaged_files: damaged.iter().map(|d| d.file).collect(),
            damaged_paths: HashMap::new(),
            kept_here_seen: HashSet::new(),
            status: TreeStatus::default(),
        };
        let mut seen = HashSet::new();
        let mut queue = VecDeque::new();
        if self.getattr(root).await?.kind == FileKind::Directory {
            queue.push_back((root, root_path));
        } else {
            walk.file(self, root, root_path).await;
        }
        while let Some((dir, path)) = queue.pop_front() {
            walk.status.directories += 1;
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
                            walk.file(self, e.ino, child).await;
                        }
                        _ => {}
                    }
                }
            }
        }
        let TreeWalk {
            mut status,
            damaged_paths,
            ..
        } = walk;
        status.damaged = damaged
            .into_iter()
            .map(|d| (damaged_paths.get(&d.file).cloned(), d))
            .collect();
        Ok(status)
    }
}

impl Fs {
    /// Every stored object the tree refers to, each once, with its file key: what the owner's
    /// repair checks. Walks the namespace breadth first (a loop, not recursion).
    ///
    /// # Errors
    /// DB errors while walking.
    pub fn stored_objects(&self) -> Result<Vec<(FileId, FileKey)>> {
        let db = &self.inner.db;
        let mut out = Vec::new();
        let mut seen_files = HashSet::new();
        let mut seen_dirs = HashSet::from([InodeNo::ROOT]);
        let mut queue = VecDeque::from([InodeNo::ROOT]);
        while let Some(dir) = queue.pop_front() {
            let mut after = 0;
            loop {
                let batch = match db.readdir(dir, after, READDIR_BATCH) {
                    Ok(b) => b,
                    // Removed while we walk: nothing below it any more.
                    Err(defs_core::Error::NotFound { .. }) => break,
                    Err(e) => return Err(e.into()),
                };
                let Some(last) = batch.last() else { break };
                after = last.cookie;
                for e in batch {
                    match e.kind {
                        FileKind::Directory if seen_dirs.insert(e.ino) => queue.push_back(e.ino),
                        FileKind::RegularFile => {
                            if let Ok(Content::Stored { file, key, .. }) = db.content(e.ino)
                                && seen_files.insert(file)
                            {
                                out.push((file, FileKey::from_bytes(key)));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    /// The manifests of every stored file in the mount (each inode once; a file whose
    /// manifest cannot be read is skipped with a debug line): what audits sample from.
    ///
    /// # Errors
    /// DB errors while walking.
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn stored_manifests(&self) -> Result<Vec<std::sync::Arc<defs_core::Manifest>>> {
        let Some(objects) = &self.inner.objects else {
            return Ok(Vec::new());
        };
        let db = &self.inner.db;
        let (mut out, mut seen, mut dirs) = (Vec::new(), HashSet::new(), vec![InodeNo::ROOT]);
        while let Some(dir) = dirs.pop() {
            let mut after = 0;
            while let Some(last) = {
                let batch = db.readdir(dir, after, READDIR_BATCH)?;
                for e in &batch {
                    if e.kind == FileKind::Directory {
                        dirs.push(e.ino);
                    } else if e.kind == FileKind::RegularFile
                        && seen.insert(e.ino)
                        && let Ok(Content::Stored { file, key, .. }) = db.content(e.ino)
                    {
                        match objects.manifest(file, &FileKey::from_bytes(key)).await {
                            Ok(m) => out.push(m),
                            Err(e) => {
                                debug!(file = %file, error = %e, "manifest unreadable; not audited")
                            }
                        }
                    }
                }
                batch.last().map(|l| l.cookie)
            } {
                after = last;
            }
        }
        Ok(out)
    }
}

/// The state of one [`Fs::tree_status_under`] walk.
struct TreeWalk {
    journal: HashMap<InodeNo, defs_core::DirtyRecord>,
    live: Result<Liveness, String>,
    damaged_files: HashSet<FileId>,
    damaged_paths: HashMap<FileId, PathBuf>,
    /// The objects in `status.kept_here` (packed files share one).
    kept_here_seen: HashSet<FileId>,
    status: TreeStatus,
}

impl TreeWalk {
    fn error(&mut self, path: PathBuf, reason: String) {
        if self.status.errors.len() < TREE_STATUS_MAX_ERRORS {
            self.status.errors.push((path, reason));
        }
    }

    /// Counts the regular file `ino` at `path`.
    async fn file(&mut self, fs: &Fs, ino: InodeNo, path: PathBuf) {
        let db = &fs.inner.db;
        let Ok(attr) = fs.getattr(ino).await else {
            return; // removed meanwhile
        };
        self.status.files += 1;
        self.status.bytes += attr.size;
        if !self.damaged_files.is_empty()
            && let Ok(Content::Stored { file, .. }) = db.content(ino)
            && self.damaged_files.contains(&file)
        {
            self.damaged_paths
                .entry(file)
                .or_insert_with(|| path.clone());
        }
        if let Some(r) = self.journal.get(&ino) {
            if r.uploading.is_some() {
                self.status.uploading += 1;
            } else if let Some(reason) = &r.last_error {
                self.status.failed += 1;
                let reason = format!("upload failed {} times, last: {reason}", r.failures);
                self.error(path, reason);
            } else {
                self.status.dirty += 1;
            }
            return;
        }
        self.status.clean += 1;
        let content = match db.content(ino) {
            Ok(c @ Content::Stored { .. }) => c,
            _ => return,
        };
        let d = match &self.live {
            Ok(live) => fs.durability(ino, &content, Some(live)).await,
            Err(e) => Err(e.clone()),
        };
        match d {
            Ok(d) => {
                if !d.on_network() {
                    self.unprotected(path.clone(), d.to_string());
                    if d.local_only > 0
                        && let Content::Stored { file, .. } = &content
                        && self.kept_here_seen.insert(*file)
                    {
                        self.status.kept_here.push(*file);
                    }
                }
                if self
                    .status
                    .worst
                    .as_ref()
                    .is_none_or(|(_, w)| d.is_worse(w))
                {
                    self.status.worst = Some((path, d));
                }
            }
            Err(reason) => {
                self.unprotected(
                    path.clone(),
                    format!("not known to be on the network: {reason}"),
                );
                self.error(path, reason);
            }
        }
    }

    fn unprotected(&mut self, path: PathBuf, why: String) {
        self.status.not_on_network += 1;
        if self.status.unprotected.len() < TREE_STATUS_MAX_ERRORS {
            self.status.unprotected.push((path, why));
        }
    }
}
