//! The filesystem core: every POSIX operation of the mount, with typed results and no fuser
//! types, over the metadata DB ([`MetaDb`]: namespace + dirty journal) and the cache store
//! ([`CacheStore`]: one sparse cache file per inode). `fuse.rs` only translates; tests call
//! [`Fs`] directly.
//!
//! ```text
//!  write ──▶ cache file ──▶ MetaDb::save_written (size, mtime, dirty mark) ──▶ acknowledged
//!  flush (close) ──▶ ENOSYS: nothing left to save, so the kernel stops sending it
//!  release (last) ──▶ Flusher::closed(ino) — debounced upload through the Uploader
//!  forget/release of an orphan (nlink 0) ──▶ MetaDb::purge + cache file removed
//! ```
//!
//! Invariants:
//! - Every write is in the cache file, and its size, mtime and dirty mark are saved in the DB
//!   (`save_written`: a deferred change, no commit, while the file is already dirty), before
//!   it is acknowledged. So `close(2)` has nothing left to do, and `stat` after any write — in
//!   this or any later mount — shows the size and mtime it left.
//! - `save_written` and `mark_dirty` move the generation when an upload is in flight, so an
//!   upload that started before a change never marks the inode clean.
//! - A closed file that was written is durable against a crash of the daemon: its bytes are in
//!   the cache file and its ranges, size, mtime and dirty mark are in the stores' redo logs, all
//!   in the kernel's page cache, which survives the process. fsync(2) adds power-loss durability.

mod dir;
pub mod error;
mod read;
#[cfg(test)]
mod remote_tests;
pub mod snapshots;
mod sparse;
mod status;
mod sync_status;
#[cfg(test)]
mod tests;
mod types;
mod xattr;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use defs_core::cache_store::CacheStore;
use defs_core::meta::MetaDb;
use defs_core::namespace::{
    self, Attr, FileKind, NewInode, RenameMode, Timestamp, Unlinked, XattrMode,
};
use defs_core::sync::{Arc, Mutex};
use defs_core::types::{FileId, InodeNo};
use tracing::{debug, info, warn};

use crate::flusher::Flusher;
pub use crate::upload::Remote;
pub use error::{Error, Result};
pub use read::{READAHEAD_MAX_BYTES, READAHEAD_MAX_SEGMENTS, READAHEAD_TASKS, SEQUENTIAL_SLACK};
pub use status::{
    DURABILITY_XATTR, ID_XATTR, TREE_STATUS_MAX_ERRORS, TreeStatus, damaged_line, damaged_summary,
};
pub use sync_status::{
    DirtyFile, STATUS_MAX_FAILED, SYNC_ATTEMPTS, SYNC_PARALLEL, SYNC_RETRY_DELAY, SyncFailure,
    SyncProgress, SyncReport, UploadStatus,
};
use types::lock;
pub use types::{
    Config, Counters, DirEntry, FileHandle, FsyncMode, MAX_FILE_SIZE, Opened, Owner, READDIR_BATCH,
    STATE_XATTR, SetAttr, StatFs, TimeSet,
};

/// What the mount keeps about an inode the kernel knows or a handle has open.
#[derive(Debug, Default)]
struct InodeState {
    /// Lookups the kernel holds (entries it was given minus forgets).
    lookups: u64,
    /// Open file handles.
    opens: u32,
    /// Changed since its upload was last scheduled: the last close schedules one.
    changed: bool,
    /// Size and mtime when the kernel last closed the file, for FOPEN_KEEP_CACHE.
    closed_as: Option<(u64, Timestamp)>,
}

#[derive(Debug)]
enum Handle {
    File { ino: InodeNo, writable: bool },
    Dir { ino: InodeNo },
}

#[derive(Debug)]
struct Inner {
    db: Arc<MetaDb>,
    cache: Arc<CacheStore>,
    cache_dir: PathBuf,
    config: Config,
    flusher: Flusher,
    /// The object layer uncached reads fetch through (`None`: no network).
    objects: Option<Arc<defs_core::object::Objects>>,
    handles: Mutex<HashMap<FileHandle, Handle>>,
    next_fh: AtomicU64,
    inodes: Mutex<HashMap<InodeNo, InodeState>>,
    write_locks: [Mutex<()>; WRITE_LOCKS],
    counters: Counters,
    /// Flights of lazy reads and read-ahead state per handle.
    reads: read::Reads,
    /// Allocated bytes of stored versions (`st_blocks`), remembered.
    allocated: Mutex<Allocated>,
    /// `/.snapshots`, once turned on ([`Fs::enable_snapshots`]).
    snapshots: std::sync::OnceLock<snapshots::Snapshots>,
}

/// Allocated bytes of stored file ranges, by (object, offset, len)
/// (`fs/sparse.rs` fills and reads it).
#[derive(Debug, Default)]
struct Allocated {
    memo: HashMap<(FileId, u64, u64), u64>,
}

/// Stripes of the per-inode write lock.
const WRITE_LOCKS: usize = 64;

/// The filesystem core. Cheap to clone (one `Arc`); all methods take `&self` and may run
/// concurrently.
#[derive(Clone, Debug)]
pub struct Fs {
    inner: Arc<Inner>,
}

fn name_bytes(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

impl Fs {
    /// Starts the core over an open DB and cache store. Purges every orphan left by an earlier
    /// mount (no handle survives a restart) and hands the dirty inodes of the journal to the
    /// flusher, so uploads interrupted by a crash resume.
    ///
    /// `cache_dir` is the cache store's directory, whose filesystem statfs reports.
    /// `remote` is the network: the flusher's uploader (without one every dirty file stays
    /// dirty, and `defs status` says so) and the object layer lazy reads fetch through.
    ///
    /// Must be called within a tokio runtime (the flusher task starts here).
    ///
    /// # Errors
    /// The DB or the cache store failed while purging orphans or listing dirty inodes.
    pub fn new(
        db: Arc<MetaDb>,
        cache: Arc<CacheStore>,
        cache_dir: &Path,
        config: Config,
        remote: Remote,
    ) -> Result<Fs> {
        for ino in db.orphans()? {
            db.purge(ino)?;
            cache.remove(ino)?;
            debug!(%ino, "purged orphan left by an earlier mount");
        }
        let flusher = Flusher::spawn(db.clone(), cache.clone(), remote.uploader.clone());
        let dirty = db.dirty_inodes()?;
        if !dirty.is_empty() {
            info!(
                count = dirty.len(),
                "dirty files from an earlier mount resume uploading"
            );
        }
        for record in dirty {
            // The cache pins what the journal says is dirty (its own flag may predate a crash).
            cache.mark_dirty(record.ino);
            flusher.closed(record.ino);
        }
        Ok(Fs {
            inner: Arc::new(Inner {
                db,
                cache,
                cache_dir: cache_dir.to_path_buf(),
                config,
                flusher,
                objects: remote.objects,
                handles: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                inodes: Mutex::new(HashMap::new()),
                write_locks: std::array::from_fn(|_| Mutex::new(())),
                counters: Counters::default(),
                reads: read::Reads::default(),
                allocated: Mutex::default(),
                snapshots: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Turns on `/.snapshots` (see `fs/snapshots.rs`): the kept versions listed in
    /// `meta_dir/versions.list`, restored under `meta_dir/versions/` and read through
    /// `objects`. Once per mount; a second call changes nothing.
    pub fn enable_snapshots(&self, meta_dir: &Path, objects: Arc<defs_core::object::Objects>) {
        let _ = self
            .inner
            .snapshots
            .set(snapshots::Snapshots::new(meta_dir.to_path_buf(), objects));
    }

    fn snapshots(&self, ino: InodeNo) -> Result<&snapshots::Snapshots> {
        self.inner.snapshots.get().ok_or_else(|| {
            defs_core::Error::NotFound {
                what: format!("inode {ino}"),
            }
            .into()
        })
    }

    /// A change at `name` in `parent`: EROFS inside `/.snapshots`; for the reserved name in
    /// the root (while no real entry has it), EEXIST to create and EPERM to remove.
    fn check_snapshots(&self, parent: InodeNo, name: &OsStr, create: bool) -> Result<()> {
        if snapshots::is_version(parent) {
            return Err(Error::ReadOnly);
        }
        if snapshots::is_reserved(parent, name)
            && self.inner.snapshots.get().is_some()
            && self.inner.db.lookup(parent, name_bytes(name)).is_err()
        {
            let what = format!(
                "/{} is reserved for past versions",
                snapshots::SNAPSHOTS_NAME
            );
            return Err(if create {
                defs_core::Error::AlreadyExists { what }
            } else {
                defs_core::Error::NotPermitted { what }
            }
            .into());
        }
        Ok(())
    }

    /// EROFS for an inode of `/.snapshots`.
    fn check_live(ino: InodeNo) -> Result<()> {
        if snapshots::is_version(ino) {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// The attributes of the live root (what `/.snapshots` is shaped after).
    fn root_attr(&self) -> Result<Attr> {
        Ok(self.inner.db.getattr(InodeNo::ROOT)?)
    }

    /// The stored content of `ino`, live or in `/.snapshots`.
    pub(crate) fn content_of(&self, ino: InodeNo) -> Result<namespace::Content> {
        if snapshots::is_version(ino) {
            return self.snapshots(ino)?.content(ino);
        }
        Ok(self.inner.db.content(ino)?)
    }

    /// The object layer of the network, when the mount has one.
    pub fn objects(&self) -> Option<&Arc<defs_core::object::Objects>> {
        self.inner.objects.as_ref()
    }

    /// The operation counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The flusher.
    pub fn flusher(&self) -> &Flusher {
        &self.inner.flusher
    }

    /// Counts a request answered as unsupported.
    pub fn count_unsupported(&self, op: &'static str) {
        self.inner
            .counters
            .unsupported
            .fetch_add(1, Ordering::Relaxed);
        debug!(op, "unsupported");
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.config.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// The kernel got an entry for `ino`: one more lookup it will forget later.
    pub fn remember(&self, ino: InodeNo) {
        lock(&self.inner.inodes).entry(ino).or_default().lookups += 1;
    }

    fn entry(&self, attr: Attr) -> Attr {
        self.remember(attr.ino);
        self.with_allocated(attr)
    }

    /// The kernel dropped `n` lookups of `ino`. An orphan nobody references any more is purged.
    pub fn forget(&self, ino: InodeNo, n: u64) {
        let idle = {
            let mut inodes = lock(&self.inner.inodes);
            let Some(state) = inodes.get_mut(&ino) else {
                return;
            };
            state.lookups = state.lookups.saturating_sub(n);
            let idle = state.lookups == 0 && state.opens == 0;
            if idle {
                inodes.remove(&ino);
            }
            idle
        };
        if idle {
            self.purge_if_orphan(ino);
        }
    }

    fn purge_if_orphan(&self, ino: InodeNo) {
        let orphan = matches!(self.inner.db.getattr(ino), Ok(attr) if attr.nlink == 0);
        if !orphan {
            return;
        }
        lock(&self.inner.inodes).remove(&ino);
        self.inner.flusher.deleted(ino);
        if let Err(e) = self.inner.db.purge(ino) {
            warn!(%ino, error = %e, "purging an unlinked inode failed; retried at the next mount");
            return;
        }
        if let Err(e) = self.inner.cache.remove(ino) {
            warn!(%ino, error = %e, "removing the cache file of an unlinked inode failed");
        }
        debug!(%ino, "purged");
    }

    /// The namespace under the mount was replaced by a newer published one (a read-only mount
    /// following another machine): `ino`'s stored content changed or the inode is gone, so the
    /// bytes cached for it belong to an old version. Drops them, and the page-cache promise
    /// made at its last close. Dirty bytes are never dropped (a follower has none: it applies
    /// nothing over local changes).
    pub fn content_replaced(&self, ino: InodeNo) {
        if let Some(s) = lock(&self.inner.inodes).get_mut(&ino) {
            s.closed_as = None;
        }
        if self.inner.cache.is_dirty(ino) {
            return;
        }
        if let Err(e) = self.inner.cache.remove(ino) {
            warn!(%ino, error = %e, "dropping the cache of a replaced content version failed");
        }
    }

    /// A name lost its inode: purge it now if nothing references it, else when the kernel
    /// forgets it or the last handle closes.
    fn unlinked(&self, u: Unlinked) {
        if u.nlink > 0 {
            return;
        }
        self.inner.flusher.deleted(u.ino);
        let busy = lock(&self.inner.inodes)
            .get(&u.ino)
            .is_some_and(|s| s.lookups > 0 || s.opens > 0);
        if !busy {
            self.purge_if_orphan(u.ino);
        }
    }

    /// The per-inode write lock: the writes of one inode run one at a time.
    fn write_lock(&self, ino: InodeNo) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.inner.write_locks[(ino.0 % WRITE_LOCKS as u64) as usize])
    }

    /// Looks up `name` in `parent`.
    ///
    /// # Errors
    /// NotFound, NotADirectory, NameTooLong.
    ///
    /// # Cancel safety
    /// Safe: a dropped lookup changes nothing (except that its entry is not counted).
    pub async fn lookup(&self, parent: InodeNo, name: &OsStr) -> Result<Attr> {
        if snapshots::is_version(parent) {
            let attr = self.snapshots(parent)?.lookup(parent, name).await?;
            self.remember(attr.ino);
            return Ok(attr);
        }
        match self.inner.db.lookup(parent, name_bytes(name)) {
            Err(defs_core::Error::NotFound { .. })
                if snapshots::is_reserved(parent, name) && self.inner.snapshots.get().is_some() =>
            {
                let root = self.root_attr()?;
                let attr = self
                    .snapshots(parent)?
                    .getattr(snapshots::SNAPDIR, &root)
                    .await?;
                self.remember(attr.ino);
                Ok(attr)
            }
            r => Ok(self.entry(r?)),
        }
    }

    /// The attributes of `ino`.
    ///
    /// # Errors
    /// NotFound.
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn getattr(&self, ino: InodeNo) -> Result<Attr> {
        if snapshots::is_version(ino) {
            let root = self.root_attr()?;
            return self.snapshots(ino)?.getattr(ino, &root).await;
        }
        Ok(self.with_allocated(self.inner.db.getattr(ino)?))
    }

    /// Changes attributes. A size change truncates or extends the cache file and marks the
    /// file dirty; times are exact to the nanosecond.
    ///
    /// # Errors
    /// NotFound, IsADirectory / InvalidArgument for a size of a non-file, FileTooLarge,
    /// ReadOnly, and cache I/O errors (ENOSPC).
    ///
    /// # Cancel safety
    /// Safe: the only wait is fetching a stored file's bytes before a size change; from the
    /// cache truncate on, nothing awaits.
    pub async fn setattr(
        &self,
        ino: InodeNo,
        fh: Option<FileHandle>,
        set: SetAttr,
    ) -> Result<Attr> {
        self.check_writable()?;
        Self::check_live(ino)?;
        let _ = fh;
        let now = Timestamp::now();
        let resolve = |t: TimeSet| match t {
            TimeSet::At(t) => t,
            TimeSet::Now => now,
        };
        let db_set = namespace::SetAttr {
            perm: set.perm,
            uid: set.uid,
            gid: set.gid,
            size: set.size,
            atime: set.atime.map(resolve),
            mtime: set.mtime.map(resolve),
            ctime: set.ctime,
        };
        let Some(size) = set.size else {
            return Ok(self.with_allocated(self.inner.db.setattr(ino, &db_set, now)?));
        };
        if size > MAX_FILE_SIZE {
            return Err(Error::FileTooLarge {
                end: size,
                limit: MAX_FILE_SIZE,
            });
        }
        let attr = self.inner.db.getattr(ino)?;
        if attr.kind != FileKind::RegularFile {
            // The DB refuses a size for anything else, with the right errno.
            return Ok(self.with_allocated(self.inner.db.setattr(ino, &db_set, now)?));
        }
        self.fetch_before_change(ino, size.min(attr.size)).await?;
        self.inner.cache.truncate(ino, size)?;
        // After the bytes, as a write: the new size and the dirty mark in one step, so an
        // upload that began before it (and read the old size) can never mark the file clean.
        let attr = self.inner.db.save_written(ino, &db_set, now)?;
        let open = {
            let mut inodes = lock(&self.inner.inodes);
            let state = inodes.entry(ino).or_default();
            state.changed = true;
            state.opens > 0
        };
        if !open {
            // truncate(2) without an open file: nothing else will schedule the upload.
            self.inner.flusher.closed(ino);
        }
        Ok(self.with_allocated(attr))
    }

    /// A symlink's target.
    ///
    /// # Errors
    /// NotFound, InvalidArgument (not a symlink).
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        if snapshots::is_version(ino) {
            return self.snapshots(ino)?.readlink(ino).await;
        }
        Ok(self.inner.db.readlink(ino)?)
    }

    /// Creates a regular file, a fifo, a device node or a socket (`mode` carries the file type
    /// bits; `rdev`, the device number in the kernel's encoding, counts for devices only, as in
    /// mknod(2)). The kernel has already refused device nodes to callers without CAP_MKNOD.
    ///
    /// # Errors
    /// InvalidArgument for any other file type; AlreadyExists; NotFound; ReadOnly.
    ///
    /// # Cancel safety
    /// Safe: one DB transaction.
    pub async fn mknod(
        &self,
        parent: InodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        owner: Owner,
    ) -> Result<Attr> {
        self.check_writable()?;
        self.check_snapshots(parent, name, true)?;
        let (kind, rdev) = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => (FileKind::RegularFile, 0),
            libc::S_IFIFO => (FileKind::Fifo, 0),
            libc::S_IFSOCK => (FileKind::Socket, 0),
            libc::S_IFCHR => (FileKind::CharDevice, rdev),
            libc::S_IFBLK => (FileKind::BlockDevice, rdev),
            _ => {
                return Err(Error::Invalid {
                    what: "mknod of a directory, symlink or unknown file type",
                });
            }
        };
        let init = new_inode(mode, owner);
        let attr = self.inner.db.mknod(
            parent,
            name_bytes(name),
            kind,
            rdev,
            &init,
            Timestamp::now(),
        )?;
        if kind == FileKind::RegularFile {
            // Dirty from creation (`MetaDb::mknod`) with no handle whose close would schedule
            // the upload: schedule it now, as a last close does.
            self.inner.flusher.closed(attr.ino);
        }
        Ok(self.entry(attr))
    }

    /// Creates a directory.
    ///
    /// # Errors
    /// AlreadyExists, NotFound, NotADirectory, NameTooLong, ReadOnly.
    ///
    /// # Cancel safety
    /// Safe: one DB transaction.
    pub async fn mkdir(
        &self,
        parent: InodeNo,
        name: &OsStr,
        perm: u16,
        owner: Owner,
    ) -> Result<Attr> {
        self.check_writable()?;
        self.check_snapshots(parent, name, true)?;
        let init = new_inode(u32::from(perm), owner);
        let attr = self
            .inner
            .db
            .mkdir(parent, name_bytes(name), &init, Timestamp::now())?;
        Ok(self.entry(attr))
    }

    /// Removes a non-directory name. An inode that loses its last name stays readable through
    /// open handles until they close; its pending upload is cancelled.
    ///
    /// # Errors
    /// NotFound, IsADirectory, ReadOnly.
    ///
    /// # Cancel safety
    /// Safe: one DB transaction.
    pub async fn unlink(&self, parent: InodeNo, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        self.check_snapshots(parent, name, false)?;
        let u = self
            .inner
            .db
            .unlink(parent, name_bytes(name), Timestamp::now())?;
        self.unlinked(u);
        Ok(())
    }

    /// Removes an empty directory.
    ///
    /// # Errors
    /// NotFound, NotADirectory, NotEmpty, ReadOnly.
    ///
    /// # Cancel safety
    /// Safe: one DB transaction.
    pub async fn rmdir(&self, parent: InodeNo, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        self.check_snapshots(parent, name, false)?;
        let u = self
            .inner
            .db
            .rmdir(parent, name_bytes(name), Timestamp::now())?;
        self.unlinked(u);
        Ok(())
    }

    /// Creates a symlink.
    ///
    /// # Errors
    /// AlreadyExists, NotFound (also for an empty target), NameTooLong, ReadOnly.
    ///
    /// # Cancel safety
    /// Safe: one DB transaction.
    pub async fn symlink(
        &self,
        parent: InodeNo,
        name: &OsStr,
        target: &[u8],
        owner: Owner,
    ) -> Result<Attr> {
        self.check_writable()?;
        self.check_snapshots(parent, name, true)?;
        let init = new_inode(0o777, owner);
        let attr =
            self.inner
                .db
                .symlink(parent, name_bytes(name), target, &init, Timestamp::now())?;
        Ok(self.entry(attr))
    }

    /// Renames atomically. `flags` are renameat2's (RENAME_NOREPLACE, RENAME_EXCHANGE). Dirty
    /// or uploading files keep their data and their upload: both follow the inode, not the name.
    ///
    /// # Errors
    /// NotFound, AlreadyExists (NOREPLACE), NotEmpty, InvalidArgument (into its own subtree,
    /// unknown flags), IsADirectory / NotADirectory, ReadOnly.
    ///
    /// # Cancel safety
    /// Safe: one DB transaction.
    pub async fn rename(
        &self,
        parent: InodeNo,
        name: &OsStr,
        newparent: InodeNo,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.check_writable()?;
        self.check_snapshots(parent, name, false)?;
        self.check_snapshots(newparent, newname, true)?;
        let mode = match flags {
            0 => RenameMode::Replace,
            libc::RENAME_NOREPLACE => RenameMode::NoReplace,
            libc::RENAME_EXCHANGE => RenameMode::Exchange,
            _ => {
                self.count_unsupported("rename");
                return Err(Error::Unsupported {
                    op: "rename",
                    detail: format!(": flags {flags:#x} (RENAME_WHITEOUT)"),
                    errno: libc::EINVAL,
                });
            }
        };
        let replaced = self.inner.db.rename(
            parent,
            name_bytes(name),
            newparent,
            name_bytes(newname),
            mode,
            Timestamp::now(),
        )?;
        if let Some(u) = replaced {
            self.unlinked(u);
        }
        Ok(())
    }

    /// Adds a hard link.
    ///
    /// # Errors
    /// NotPermitted (directories), NotFound, AlreadyExists, ReadOnly.
    ///
    /// # Cancel safety
    /// Safe: one DB transaction.
    pub async fn link(&self, ino: InodeNo, newparent: InodeNo, newname: &OsStr) -> Result<Attr> {
        self.check_writable()?;
        Self::check_live(ino)?;
        self.check_snapshots(newparent, newname, true)?;
        let attr = self
            .inner
            .db
            .link(ino, newparent, name_bytes(newname), Timestamp::now())?;
        Ok(self.entry(attr))
    }

    fn new_handle(&self, handle: Handle) -> FileHandle {
        let fh = FileHandle(self.inner.next_fh.fetch_add(1, Ordering::Relaxed));
        lock(&self.inner.handles).insert(fh, handle);
        fh
    }

    /// Whether `fh` is an open file handle of `ino` that may write.
    fn file_handle(&self, ino: InodeNo, fh: FileHandle) -> Result<bool> {
        match lock(&self.inner.handles).get(&fh) {
            Some(Handle::File {
                ino: hino,
                writable,
            }) if *hino == ino => Ok(*writable),
            _ => Err(Error::BadHandle { ino, fh }),
        }
    }

    /// Opens a file. `flags` are open(2)'s.
    ///
    /// # Errors
    /// NotFound; IsADirectory; ReadOnly for a writable open of a read-only mount.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped open may leak a handle until unmount.
    pub async fn open(&self, ino: InodeNo, flags: i32) -> Result<Opened> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable {
            self.check_writable()?;
            Self::check_live(ino)?;
        }
        let attr = self.getattr(ino).await?;
        if attr.kind == FileKind::Directory {
            return Err(defs_core::Error::IsADirectory { ino: ino.0 }.into());
        }
        if snapshots::is_version(ino)
            && let Some(tag) = snapshots::tag_of(&self.content_of(ino)?)
        {
            // An inode number of a slot used again may have cached another version's bytes.
            self.inner.cache.validate(ino, tag)?;
        }
        Ok(self.open_handle(&attr, writable))
    }

    fn open_handle(&self, attr: &Attr, writable: bool) -> Opened {
        let keep_cache = {
            let mut inodes = lock(&self.inner.inodes);
            let state = inodes.entry(attr.ino).or_default();
            state.opens += 1;
            state.closed_as == Some((attr.size, attr.mtime))
        };
        let fh = self.new_handle(Handle::File {
            ino: attr.ino,
            writable,
        });
        Opened { fh, keep_cache }
    }

    /// Creates and opens a regular file. With O_EXCL an existing name is refused (EEXIST).
    ///
    /// # Errors
    /// AlreadyExists, NotFound, NotADirectory, NameTooLong, ReadOnly.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped create may leak a handle until unmount.
    pub async fn create(
        &self,
        parent: InodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
        owner: Owner,
    ) -> Result<(Attr, Opened)> {
        self.check_writable()?;
        self.check_snapshots(parent, name, true)?;
        let exclusive = flags & libc::O_EXCL != 0;
        let init = new_inode(mode, owner);
        let (mut attr, created) =
            self.inner
                .db
                .create(parent, name_bytes(name), &init, exclusive, Timestamp::now())?;
        if !created && flags & libc::O_TRUNC != 0 && attr.size > 0 {
            let set = SetAttr {
                size: Some(0),
                ..Default::default()
            };
            attr = self.setattr(attr.ino, None, set).await?;
        }
        if created {
            // Dirty from creation (see `MetaDb::create`): its last close schedules the upload
            // even when nothing was written.
            lock(&self.inner.inodes)
                .entry(attr.ino)
                .or_default()
                .changed = true;
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let opened = self.open_handle(&attr, writable);
        Ok((self.entry(attr), opened))
    }

    /// Reads up to `size` bytes at `offset`; fewer at the end of the file. Bytes not in the
    /// cache are fetched from the network (only the data shards covering them) and cached;
    /// sequential reads through one handle prefetch ahead (see the `read` module).
    ///
    /// # Errors
    /// BadHandle; an I/O error of the cache file; NotCached (EIO) for bytes that are neither
    /// in the cache nor stored; Fetch (EIO) when the network cannot return them.
    ///
    /// # Cancel safety
    /// Safe: fetches already started finish in their own tasks and fill the cache.
    pub async fn read(
        &self,
        ino: InodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>> {
        self.file_handle(ino, fh)?;
        let attr = if snapshots::is_version(ino) {
            self.getattr(ino).await?
        } else {
            self.inner.db.getattr(ino)?
        };
        if offset >= attr.size {
            return Ok(Vec::new());
        }
        let len = u64::from(size).min(attr.size - offset);
        let data = match self.inner.cache.read(ino, offset, len)? {
            Some(data) => data,
            None => self.read_uncached(ino, offset, len).await?,
        };
        self.after_read(ino, fh, offset, offset + len, attr.size);
        Ok(data)
    }

    /// Whether a write to `ino` may wait on the network: the first change of a stored file
    /// that is not dirty in the cache (all of it must be cached first). A file being written,
    /// or one never stored, changes locally at once.
    pub fn write_may_wait(&self, ino: InodeNo) -> bool {
        !self.inner.cache.is_dirty(ino)
            && !matches!(self.inner.db.content(ino), Ok(namespace::Content::Empty))
    }

    /// Writes `data` at `offset` into the cache file. The journal knows the file is dirty
    /// before the bytes land.
    ///
    /// # Errors
    /// BadHandle; NotWritable (read-only handle); FileTooLarge; cache I/O errors (ENOSPC).
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped write may have written some of its bytes (the file is dirty
    /// either way).
    pub async fn write(
        &self,
        ino: InodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<u32> {
        let writable = self.file_handle(ino, fh)?;
        if !writable {
            return Err(Error::NotWritable { ino, fh });
        }
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or(Error::FileTooLarge {
                end: offset.saturating_add(len),
                limit: MAX_FILE_SIZE,
            })?;
        // A stored file's first change needs all of it in the cache (never under the lock: it
        // may wait on the network). The same rule decides whether the FUSE layer runs this
        // write off its session thread; a new file skips the reads below.
        let stored = if self.write_may_wait(ino) {
            let size = self.inner.db.getattr(ino)?.size;
            self.fetch_before_change(ino, size).await?
        } else {
            None
        };
        // Writes to one inode are serialised (the kernel does so too for buffered writes): the
        // size check and the zero extension below must not interleave with another write.
        let _serial = self.write_lock(ino);
        if let Some((file, need)) = stored
            && !self.inner.cache.is_dirty(ino)
        {
            // Clean bytes fetched above may have been evicted since.
            self.check_cached(ino, file, need)?;
        }
        let base = self.inner.db.getattr(ino)?.size;
        if offset > base {
            // The gap between the old end and the write reads as zeros.
            self.inner.cache.truncate(ino, offset)?;
        }
        self.inner.cache.write(ino, offset, data)?;
        let now = Timestamp::now();
        // After the bytes, before the acknowledgement (the journal's ordering rule): the size
        // and times with the dirty mark. A file already dirty (a new one is, from its create)
        // costs no commit; a clean one is marked with a new generation in one commit.
        let set = namespace::SetAttr {
            size: Some(base.max(end)),
            mtime: Some(now),
            ctime: Some(now),
            ..Default::default()
        };
        self.inner.db.save_written(ino, &set, now)?;
        lock(&self.inner.inodes).entry(ino).or_default().changed = true;
        Ok(u32::try_from(data.len()).unwrap_or(u32::MAX))
    }

    /// The last reference to a handle is gone. After the last handle of a changed file, the
    /// flusher schedules its upload (debounced); an orphan with no handles left is purged.
    ///
    /// # Errors
    /// BadHandle.
    ///
    /// # Cancel safety
    /// Not cancel safe: the handle is gone even if the future is dropped.
    pub async fn release(&self, ino: InodeNo, fh: FileHandle) -> Result<()> {
        let handle = lock(&self.inner.handles).remove(&fh);
        let Some(Handle::File { .. }) = handle else {
            return Err(Error::BadHandle { ino, fh });
        };
        self.forget_reads(fh);
        let attr = self.inner.db.getattr(ino);
        let (last, idle, changed) = {
            let mut inodes = lock(&self.inner.inodes);
            let state = inodes.entry(ino).or_default();
            state.opens = state.opens.saturating_sub(1);
            if let Ok(a) = &attr {
                state.closed_as = Some((a.size, a.mtime));
            }
            let last = state.opens == 0;
            let changed = last && std::mem::take(&mut state.changed);
            (last, last && state.lookups == 0, changed)
        };
        if changed {
            self.inner.flusher.closed(ino);
        }
        if idle || matches!(attr, Ok(a) if a.nlink == 0 && last) {
            let lookups = lock(&self.inner.inodes).get(&ino).map_or(0, |s| s.lookups);
            if lookups == 0 {
                self.purge_if_orphan(ino);
            }
        }
        Ok(())
    }

    /// fsync(2): the file's bytes and metadata are durable on the local disk. With
    /// [`FsyncMode::Network`], also waits until the flusher has uploaded it. With
    /// [`FsyncMode::Local`], an upload the network refused for the owner's quota (the file's
    /// last one, none stored since) is reported here as EDQUOT, the way Linux reports an
    /// asynchronous writeback error at the next fsync: the bytes are durable on the local disk
    /// all the same, but cannot reach the network.
    ///
    /// # Errors
    /// BadHandle; cache or DB I/O errors; with `Network`, the upload's error; with either,
    /// [`FlushError::QuotaExceeded`](crate::flusher::FlushError::QuotaExceeded) (EDQUOT).
    ///
    /// # Cancel safety
    /// Safe: it can be repeated.
    pub async fn fsync(&self, ino: InodeNo, fh: FileHandle, datasync: bool) -> Result<()> {
        let _ = datasync;
        self.file_handle(ino, fh)?;
        self.inner.cache.sync(ino)?;
        self.inner.db.sync()?;
        if self.inner.config.fsync == FsyncMode::Network {
            self.inner.flusher.upload_now(ino).await?;
        } else if let Some(reason) = self.inner.flusher.quota_refused(ino).await {
            return Err(crate::flusher::FlushError::QuotaExceeded { ino, reason }.into());
        }
        Ok(())
    }

    /// Capacity. With a network: what the owner may still store there (each storage node's
    /// free space capped by what is left of the owner's quota on it, summed, from figures the
    /// node refreshes in the background: statfs never waits for the network) divided by the
    /// redundancy of the layout big files get, capped by the cache filesystem's free space
    /// (every write lands there first); total = free + bytes cached, never zero. Without one
    /// (or before any storage node has reported its space): the filesystem holding the cache
    /// directory.
    ///
    /// # Errors
    /// statvfs of the cache directory failed.
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn statfs(&self) -> Result<StatFs> {
        let st = nix::sys::statvfs::statvfs(&self.inner.cache_dir).map_err(|e| Error::Io {
            what: "statvfs of the cache directory",
            source: std::io::Error::from(e),
        })?;
        let frsize = u32::try_from(st.fragment_size()).unwrap_or(4096).max(1);
        let local = StatFs {
            blocks: st.blocks(),
            bfree: st.blocks_free(),
            bavail: st.blocks_available(),
            files: st.files(),
            ffree: st.files_free(),
            bsize: u32::try_from(st.block_size()).unwrap_or(4096),
            namelen: u32::try_from(namespace::NAME_MAX).unwrap_or(255),
            frsize,
        };
        Ok(self.statfs_over_network(local).await)
    }

    /// fallocate(2), as ext4 answers it: mode 0 reserves blocks and extends the size like a
    /// write of zeros would; `KEEP_SIZE` reserves without extending; `PUNCH_HOLE | KEEP_SIZE`
    /// makes the range a hole (see `fs/sparse.rs`). Every other mode (collapse, insert, zero
    /// range, unshare) is EOPNOTSUPP.
    ///
    /// # Errors
    /// Unsupported (EOPNOTSUPP); as [`Fs::setattr`] and [`Fs::write`]; ENOSPC when the cache
    /// cannot reserve the blocks.
    ///
    /// # Cancel safety
    /// As [`Fs::setattr`].
    pub async fn fallocate(
        &self,
        ino: InodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<()> {
        let writable = self.file_handle(ino, fh)?;
        if !writable {
            return Err(Error::NotWritable { ino, fh });
        }
        let end = offset.checked_add(length).ok_or(Error::FileTooLarge {
            end: u64::MAX,
            limit: MAX_FILE_SIZE,
        })?;
        match mode {
            0 | libc::FALLOC_FL_KEEP_SIZE => {
                let size = self.inner.db.getattr(ino)?.size;
                if mode == 0 && end > size {
                    let set = SetAttr {
                        size: Some(end),
                        ..Default::default()
                    };
                    self.setattr(ino, Some(fh), set).await?;
                }
                self.reserve(ino, mode, offset, length)
            }
            m if m == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE => {
                self.check_writable()?;
                self.punch_hole(ino, offset, length).await
            }
            _ => {
                self.count_unsupported("fallocate");
                Err(Error::Unsupported {
                    op: "fallocate",
                    detail: format!(": mode {mode:#x}"),
                    errno: libc::EOPNOTSUPP,
                })
            }
        }
    }

    /// The mount is going away: the DB is made durable, so everything written is safe in the
    /// local journal before the unmount completes.
    ///
    /// # Errors
    /// The DB failed.
    ///
    /// # Cancel safety
    /// Safe: it can be repeated.
    pub async fn unmounting(&self) -> Result<()> {
        self.inner.db.sync()?;
        Ok(())
    }

    /// Flushes like [`Fs::unmounting`] and stops the flusher.
    ///
    /// # Errors
    /// As [`Fs::unmounting`].
    ///
    /// # Cancel safety
    /// Safe: it can be repeated.
    pub async fn shutdown(&self) -> Result<()> {
        self.shutdown_within(std::time::Duration::ZERO).await
    }

    /// Flushes like [`Fs::unmounting`], then stops the flusher after giving the uploads already
    /// running up to `grace` to finish ([`Flusher::shutdown_within`]); files not uploaded stay
    /// dirty in the journal and resume at the next mount.
    ///
    /// # Errors
    /// As [`Fs::unmounting`] (the flusher is stopped either way).
    ///
    /// # Cancel safety
    /// Safe: it can be repeated.
    pub async fn shutdown_within(&self, grace: std::time::Duration) -> Result<()> {
        let flushed = self.unmounting().await;
        self.inner.flusher.shutdown_within(grace).await;
        flushed
    }
}

fn new_inode(mode: u32, owner: Owner) -> NewInode {
    NewInode {
        perm: (mode & 0o7777) as u16,
        uid: owner.uid,
        gid: owner.gid,
    }
}
