//! The cache store: per-inode sparse cache files of file contents, in `DIR/cache`, and the
//! record of which byte ranges each one holds.
//!
//! ```text
//! DIR/cache/
//!   index.redb      inode → content tag, dirty flag, last use, present ranges   (redb)
//!   data/<ino>      sparse file: the cached bytes at their file offsets
//!   spare/<n>       empty files made ahead of need and recycled ones (see `spares`)
//! ```
//!
//! Self-contained: deleting `DIR/cache` loses only clean data and the bytes of writes not yet
//! uploaded (dirty state is also recorded in the metadata DB's journal, which decides what
//! must be uploaded). Losing only `index.redb` is refused at open rather than taken as "every
//! file is unrecorded", which would delete them all.
//!
//! - **Clean** data (`fill`, from the network) is evicted least recently used first, a whole
//!   inode at a time, to keep clean bytes under the budget. **Dirty** data (`write`) is never
//!   evicted until `mark_clean`.
//! - **ENOSPC** before the disk is full: a write that would leave less than the reserve free on
//!   the cache's filesystem first evicts clean data, then fails with [`Error::NoSpace`]. A fill
//!   that does not fit is simply not cached (`Ok(false)`).
//! - **Versions**: each entry carries the [`ContentTag`] of the stored content it caches; a clean
//!   entry of another tag is discarded by [`CacheStore::validate`].
//!
//! Durability: a range is recorded in the index only after its bytes are fsynced ([`sync`],
//! [`flush`]); operations that shrink (truncate, evict, discard) commit the index first and
//! touch the file second. So after a power loss the index never claims bytes that are not on
//! disk; writes since the last sync may be forgotten (that is what fsync means). Open removes
//! files without an entry and entries without a file, and clips ranges to the file's length.
//! A removal ([`remove`], an unlinked inode) is the exception that those open rules make safe:
//! its file is emptied and renamed away at once and its row deleted by the next checkpoint, so
//! `rm -rf` of a tree costs no index fsync per file. Until then the old row finds its file
//! intact, emptied (clipped to nothing) or gone (dropped); before the inode number gets a file
//! again, the row is deleted.
//!
//! A crash of the *process* loses nothing that returned: every change to an entry is also
//! appended to `index.oplog` (see [`crate::oplog`]; one `pwrite(2)`, no fsync) — a range after
//! its bytes were written, a shrink before the index and the file change. Open replays the log
//! if it was written during the current boot of the OS (the bytes it claims are then in the page
//! cache or on disk); a log from an earlier boot is ignored (power loss: back to the rule
//! above). [`flush`] is the checkpoint that empties the log. Records and replay rules:
//! docs/format.md, "Cache op log".
//!
//! [`sync`]: CacheStore::sync
//! [`flush`]: CacheStore::flush
//! [`remove`]: CacheStore::remove

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lru::LruCache;
use redb::{Database, TableDefinition};

use crate::error::{Error, Result};
pub use crate::fsutil::Seek;
use crate::fsutil::{HOLE_BLOCK, all_zero, open_store_index};
use crate::oplog::OpLog;
use crate::sync::{Mutex, MutexGuard};
use crate::types::InodeNo;
pub use entry::{ContentTag, MAX_RANGES};
use entry::{Entry, now_secs};
use log::{CacheRec, MAX_LOG_RECORD};

/// The index table: inode number → encoded entry.
const INDEX: TableDefinition<u64, &[u8]> = TableDefinition::new("cache");
/// The op log's name inside the cache directory.
pub const LOG_FILE: &str = "index.oplog";
/// A log longer than this is checkpointed ([`CacheStore::flush`]) by the next operation.
pub const LOG_CHECKPOINT_BYTES: u64 = 16 << 20;
/// The owner kind in the log header.
const LOG_KIND: [u8; 4] = *b"CACH";
/// Limits of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Clean bytes kept before eviction (dirty bytes are not limited by this).
    pub budget_bytes: u64,
    /// Free bytes always left on the cache's filesystem.
    pub reserve_bytes: u64,
}

/// Bytes held by the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of clean (evictable) data.
    pub clean_bytes: u64,
    /// Bytes of dirty (pinned) data.
    pub dirty_bytes: u64,
    /// The clean-data budget.
    pub budget_bytes: u64,
    /// Inodes with a cache entry.
    pub inodes: u64,
}

/// Everything behind the store's lock.
struct Inner {
    entries: HashMap<u64, Entry>,
    /// Clean inodes, least recently used first: the eviction order. Dirty inodes are not in it.
    lru: LruCache<u64, ()>,
    clean_bytes: u64,
    dirty_bytes: u64,
    /// The op log; records are appended under this lock, in the order of the changes.
    log: OpLog,
    /// An append or reset failed: no record may be appended until a checkpoint succeeds.
    log_broken: bool,
    /// The last free-space reading, for writes that skip the next one.
    free_seen: Option<FreeSeen>,
    /// Removed inodes whose index rows the next checkpoint deletes ([`CacheStore::remove`]).
    dropped: HashSet<u64>,
}

/// A reading of the cache filesystem's free space, and what was stored since.
#[derive(Clone, Copy, Debug)]
struct FreeSeen {
    free: u64,
    at: Instant,
    stored_since: u64,
}

/// A free-space reading answers later writes for this long...
const FREE_RECHECK: Duration = Duration::from_millis(250);
/// ...while at least this much would stay free beyond the reserve after them. Other processes
/// on the same disk would have to write this much within [`FREE_RECHECK`] for a write to cut
/// into the reserve unchecked.
const FREE_SLACK: u64 = 256 << 20;

impl Inner {
    /// Appends `rec`, or fails (and refuses further records until a checkpoint) so that the
    /// log never misses a change it is followed by.
    fn log(&mut self, rec: CacheRec) -> Result<()> {
        if self.log_broken {
            return Err(Error::Io {
                path: self.log.path().to_path_buf(),
                source: io::Error::other("cache op log unusable until the next flush"),
            });
        }
        match self.log.append(&rec.encode()) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.log_broken = true;
                Err(e)
            }
        }
    }

    fn account(&mut self, dirty: bool, added: u64) {
        if dirty {
            self.dirty_bytes += added;
        } else {
            self.clean_bytes += added;
        }
    }

    fn unaccount(&mut self, dirty: bool, removed: u64) {
        if dirty {
            self.dirty_bytes = self.dirty_bytes.saturating_sub(removed);
        } else {
            self.clean_bytes = self.clean_bytes.saturating_sub(removed);
        }
    }
}

/// Reports the free bytes of the filesystem holding a path.
type FreeSpaceProbe = Box<dyn Fn(&Path) -> io::Result<u64> + Send + Sync>;

/// The cache store of one data dir. All operations take `&self`; they are serialised by one lock.
pub struct CacheStore {
    dir: PathBuf,
    spares: spares::Spares,
    db: Database,
    config: CacheConfig,
    inner: Mutex<Inner>,
    free_space: FreeSpaceProbe,
    /// Cleared by tests that simulate a crash.
    flush_on_drop: bool,
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Free bytes available to unprivileged users on the filesystem holding `path` (statvfs).
#[allow(unsafe_code, clippy::useless_conversion)]
fn statvfs_free(path: &Path) -> io::Result<u64> {
    let c = crate::fsutil::c_path(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated string and `st` a valid out-pointer for the call.
    crate::fsutil::check(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// The bytes a store operation puts in a cache file.
#[derive(Clone, Copy)]
enum Bytes<'a> {
    /// These bytes.
    Data(&'a [u8]),
    /// This many zeros (a hole).
    Zeros(u64),
}

impl Bytes<'_> {
    fn len(&self) -> u64 {
        match self {
            Bytes::Data(d) => d.len() as u64,
            Bytes::Zeros(n) => *n,
        }
    }
}

/// Makes `range` of `file` (whose length is `file_len`) read as zeros without taking blocks:
/// punched where the file has bytes, grown past its end.
fn punch_or_grow(file: &File, range: Range<u64>, file_len: u64) -> std::io::Result<()> {
    if range.start < file_len {
        let end = range.end.min(file_len);
        match crate::fsutil::punch_hole(file, range.start, end - range.start) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                // No hole punching here: write the zeros.
                let zeros = vec![0u8; HOLE_BLOCK];
                let mut at = range.start;
                while at < end {
                    let n = (end - at).min(HOLE_BLOCK as u64) as usize;
                    file.write_all_at(&zeros[..n], at)?;
                    at += n as u64;
                }
            }
            Err(e) => return Err(e),
        }
    }
    if file_len < range.end {
        file.set_len(range.end)?;
    }
    Ok(())
}

/// Writes `data` at `at` of `file` (whose length is `file_len`) leaving holes where it is
/// zeros: whole zero blocks ([`HOLE_BLOCK`], aligned in the file) are punched where the file
/// has bytes (stale ones, after a crash) and skipped past its end; the file grows to cover
/// `data`. Fetched holes thus never take blocks in the cache.
fn write_sparse(file: &File, data: &[u8], at: u64, file_len: u64) -> std::io::Result<()> {
    let end = at + data.len() as u64;
    let block = HOLE_BLOCK as u64;
    let zero_at = |x: u64| {
        all_zero(&data[(x - at) as usize..(((x / block + 1) * block).min(end) - at) as usize])
    };
    let mut x = at;
    while x < end {
        let zero = zero_at(x);
        // The run of blocks of the same kind.
        let mut y = ((x / block + 1) * block).min(end);
        while y < end && zero_at(y) == zero {
            y = ((y / block + 1) * block).min(end);
        }
        if zero {
            punch_or_grow(file, x..y, file_len.max(x))?;
        } else {
            file.write_all_at(&data[(x - at) as usize..(y - at) as usize], x)?;
        }
        x = y;
    }
    Ok(())
}

impl CacheStore {
    /// Opens (creating if needed) the cache in `dir` (normally `DATA_DIR/cache`), reconciling the
    /// index with the files (see the module docs).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::StoreIndex`] (including another process having it open);
    /// [`Error::IndexLost`] when the index file is missing or empty but cache files hold data
    /// (nothing is touched).
    pub fn open(dir: &Path, config: CacheConfig) -> Result<CacheStore> {
        Self::open_with_probe(dir, config, Box::new(statvfs_free))
    }

    fn open_with_probe(
        dir: &Path,
        config: CacheConfig,
        free_space: FreeSpaceProbe,
    ) -> Result<CacheStore> {
        let data = dir.join("data");
        fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
        // Files of dirty inodes hold the only copy of writes not yet uploaded.
        let db = open_store_index(
            dir,
            &dir.join("index.redb"),
            &data,
            || fs::read_dir(&data)?.map(|e| e.map(|e| e.path())).collect(),
            "Move the cache directory away to start with an empty cache (writes not yet \
             uploaded are then lost; an older copy of the index would hide the bytes written \
             since, so restore only an exact one)",
        )?;
        let (log, recovered) = OpLog::open(&dir.join(LOG_FILE), LOG_KIND, MAX_LOG_RECORD)?;
        let spares = spares::Spares::open(&dir.join("spare"), &data)?;
        let store = CacheStore {
            dir: dir.to_path_buf(),
            spares,
            db,
            config,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                lru: LruCache::unbounded(),
                clean_bytes: 0,
                dirty_bytes: 0,
                log,
                log_broken: false,
                free_seen: None,
                dropped: HashSet::new(),
            }),
            free_space,
            flush_on_drop: true,
        };
        store.recover(recovered)?;
        Ok(store)
    }

    fn idx_err(&self, e: impl Into<redb::Error>) -> Error {
        Error::store_index(self.dir.join("index.redb"), e)
    }

    fn path(&self, ino: u64) -> PathBuf {
        self.dir.join("data").join(ino.to_string())
    }

    /// Opens `ino`'s cache file for writing. A file that does not exist yet (`exists`: the
    /// inode has an entry, so it has a file) is a spare given its name when one is ready,
    /// else created here.
    fn open_data(&self, ino: u64, exists: bool) -> Result<File> {
        let path = self.path(ino);
        if !exists && let Some(file) = self.spares.take_as(&path) {
            // Never replaces a file: a stray one is opened as it is, below.
            return Ok(file);
        }
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checkpoints when the log has grown past [`LOG_CHECKPOINT_BYTES`] or is unusable. Called
    /// at the start of operations (never between an operation's records).
    fn maybe_checkpoint(&self, inner: &mut Inner) -> Result<()> {
        if inner.log_broken || inner.log.len() > LOG_CHECKPOINT_BYTES {
            self.flush_locked(inner)?;
        }
        Ok(())
    }

    /// Removes the entries of `inos` from the index (one commit), then their files.
    fn drop_entries(&self, inner: &mut Inner, inos: &[u64]) -> Result<()> {
        if inos.is_empty() {
            return Ok(());
        }
        for ino in inos {
            inner.log(CacheRec::Drop { ino: *ino })?;
        }
        self.delete_rows(inos.iter().copied())?;
        for ino in inos {
            self.forget_entry(inner, *ino)?;
        }
        Ok(())
    }

    /// Deletes index rows, in one durable commit.
    fn delete_rows(&self, inos: impl Iterator<Item = u64>) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
        {
            let mut table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            for ino in inos {
                table.remove(ino).map_err(|e| self.idx_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.idx_err(e))
    }

    /// Forgets `ino`'s entry in memory and recycles its file: emptied and kept for the next new
    /// inode, or unlinked when enough are kept.
    fn forget_entry(&self, inner: &mut Inner, ino: u64) -> Result<()> {
        if let Some(entry) = inner.entries.remove(&ino) {
            inner.unaccount(entry.dirty, entry.bytes);
        }
        inner.lru.pop(&ino);
        self.spares.recycle(&self.path(ino))
    }

    /// Before a removed `ino` gets a file again: the index row of its removal is deleted
    /// first, so that a power loss cannot leave the old row claiming the new file's bytes (an
    /// entry made since without a file, by `mark_dirty`, changes nothing to that). The
    /// filesystem never reuses an inode number; this keeps the store correct on its own.
    fn settle_drop(&self, inner: &mut Inner, ino: u64) -> Result<()> {
        if inner.dropped.contains(&ino) {
            self.delete_rows(std::iter::once(ino))?;
            inner.dropped.remove(&ino);
        }
        Ok(())
    }

    /// Stores `data` at `offset`: all of it for a write (`fill_tag` None, pins dirty), only the
    /// parts not yet present for a fill (present bytes are the same clean data or newer dirty
    /// data, and must win).
    fn store_bytes(
        &self,
        inner: &mut Inner,
        ino: u64,
        offset: u64,
        data: Bytes<'_>,
        fill_tag: Option<ContentTag>,
    ) -> Result<bool> {
        let dirty = fill_tag.is_none();
        let len = data.len();
        let end = offset.checked_add(len).ok_or(Error::TooLarge {
            what: "cache write end offset",
            size: u64::MAX,
            limit: u64::MAX,
        })?;
        if let Some(tag) = fill_tag {
            let stale = inner
                .entries
                .get(&ino)
                .is_some_and(|e| !e.dirty && e.tag != tag);
            if stale {
                self.drop_entries(inner, &[ino])?;
            }
        }
        let missing = match inner.entries.get(&ino) {
            Some(e) => e.ranges.missing(offset, end),
            None if len == 0 => Vec::new(),
            None => std::iter::once(offset..end).collect(),
        };
        let new_bytes: u64 = missing.iter().map(|r| r.end - r.start).sum();
        if !dirty && new_bytes == 0 {
            if !inner.entries.get(&ino).is_some_and(|e| e.dirty) {
                inner.lru.promote(&ino);
            }
            return Ok(true);
        }
        // A hole takes no blocks: neither the budget nor the disk reserve is at stake.
        let hole = matches!(data, Bytes::Zeros(_));
        let need = if hole { 0 } else { new_bytes };
        // Clean data stays within the budget.
        if !dirty && !hole {
            let budget = self.config.budget_bytes;
            if new_bytes > budget {
                return Ok(false);
            }
            self.evict_until(inner, Some(ino), |i| i.clean_bytes + new_bytes <= budget)?;
            if inner.clean_bytes + new_bytes > budget {
                return Ok(false);
            }
        }
        // Everything stays clear of the disk reserve. A recent reading with plenty of room left
        // answers without a statvfs (one per write was 1 % of a small-file copy's CPU).
        // A write may allocate blocks for bytes already counted as present (zeros a truncate
        // grew the file by), so it counts all its bytes here; a fill stores only what is new.
        let allocating = match data {
            Bytes::Zeros(_) => 0,
            Bytes::Data(_) if dirty => len,
            Bytes::Data(_) => new_bytes,
        };
        let margin = allocating
            .saturating_add(self.config.reserve_bytes)
            .saturating_add(FREE_SLACK);
        let recent = inner.free_seen.filter(|seen| {
            seen.at.elapsed() < FREE_RECHECK
                && seen.free.saturating_sub(seen.stored_since) >= margin
        });
        let (mut room, mut free) = match recent {
            Some(seen) => (true, seen.free - seen.stored_since),
            None => {
                let (room, free) = self.has_disk_room(need)?;
                inner.free_seen = Some(FreeSeen {
                    free,
                    at: Instant::now(),
                    stored_since: 0,
                });
                (room, free)
            }
        };
        if !room {
            let mut probe_error = None;
            self.evict_until(inner, Some(ino), |_| match self.has_disk_room(need) {
                Ok((ok, f)) => {
                    free = f;
                    ok
                }
                Err(e) => {
                    probe_error = Some(e);
                    true
                }
            })?;
            if let Some(e) = probe_error {
                return Err(e);
            }
            (room, free) = self.has_disk_room(need)?;
        }
        if let Some(seen) = &mut inner.free_seen {
            seen.stored_since = seen.stored_since.saturating_add(allocating);
        }
        if !room {
            if !dirty {
                return Ok(false);
            }
            return Err(Error::NoSpace {
                path: self.dir.clone(),
                needed: new_bytes,
                available: free,
                reserve: self.config.reserve_bytes,
            });
        }
        let path = self.path(ino);
        self.settle_drop(inner, ino)?;
        let file = self.open_data(ino, inner.entries.contains_key(&ino))?;
        match data {
            Bytes::Data(data) if dirty => file
                .write_all_at(data, offset)
                .map_err(|e| Error::io(&path, e))?,
            _ => {
                let mut file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
                for r in &missing {
                    match data {
                        Bytes::Data(data) => {
                            // Within data: offset ≤ r.start < r.end ≤ end, a usize.
                            let a = usize::try_from(r.start - offset).unwrap_or(0);
                            let b = usize::try_from(r.end - offset).unwrap_or(0);
                            write_sparse(&file, &data[a..b], r.start, file_len)
                        }
                        Bytes::Zeros(_) => punch_or_grow(&file, r.clone(), file_len),
                    }
                    .map_err(|e| Error::io(&path, e))?;
                    file_len = file_len.max(r.end);
                }
            }
        }
        let tag = fill_tag.unwrap_or(ContentTag::NONE);
        let create = (!inner.entries.contains_key(&ino)).then_some(tag);
        // After the bytes are written, before they are counted: the log never claims bytes
        // that were not written.
        inner.log(CacheRec::Add {
            ino,
            start: offset,
            end,
            dirty,
            create,
        })?;
        let entry = inner.entries.entry(ino).or_insert_with(|| Entry::new(tag));
        let added = entry.ranges.insert(offset, end);
        entry.bytes += added;
        entry.last_used = now_secs();
        entry.pending = true;
        let was_dirty = entry.dirty;
        if dirty {
            entry.changes += 1;
        }
        if dirty && !was_dirty {
            let bytes_before = entry.bytes - added;
            entry.dirty = true;
            inner.unaccount(false, bytes_before);
            inner.account(true, bytes_before + added);
            inner.lru.pop(&ino);
        } else {
            inner.account(was_dirty, added);
            if !was_dirty {
                inner.lru.put(ino, ());
            }
        }
        Ok(true)
    }

    /// Writes `data` at `offset` of `ino`'s cache file, records the range and pins the inode as
    /// dirty (never evicted until [`mark_clean`](Self::mark_clean)). Durable after
    /// [`sync`](Self::sync). Writing past the cached data leaves a gap that stays missing: extend
    /// with [`truncate`](Self::truncate) first where POSIX says the gap reads as zeros.
    ///
    /// # Errors
    /// [`Error::NoSpace`] when, even after evicting all clean data, the write would leave less
    /// than the reserve free; [`Error::Io`], [`Error::StoreIndex`].
    pub fn write(&self, ino: InodeNo, offset: u64, data: &[u8]) -> Result<()> {
        let mut inner = self.lock();
        self.maybe_checkpoint(&mut inner)?;
        self.store_bytes(&mut inner, ino.0, offset, Bytes::Data(data), None)
            .map(|_| ())
    }

    /// Caches clean bytes of stored content `tag` (fetched from the network) at `offset` of
    /// `ino`. A clean entry of another tag is discarded first. Only the parts not yet cached are
    /// written: cached bytes are the same content or newer dirty data. Returns `false`, and
    /// caches nothing, when the bytes do not fit the budget or the disk reserve even after
    /// eviction; the caller serves them from memory instead.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::StoreIndex`].
    pub fn fill(&self, ino: InodeNo, tag: ContentTag, offset: u64, data: &[u8]) -> Result<bool> {
        let mut inner = self.lock();
        self.maybe_checkpoint(&mut inner)?;
        self.store_bytes(&mut inner, ino.0, offset, Bytes::Data(data), Some(tag))
    }

    /// [`fill`](Self::fill) with `len` zero bytes at `offset` (a hole of the stored content):
    /// recorded as present, never written — the cache file keeps a hole there.
    ///
    /// # Errors
    /// As [`fill`](Self::fill).
    pub fn fill_hole(&self, ino: InodeNo, tag: ContentTag, offset: u64, len: u64) -> Result<bool> {
        let mut inner = self.lock();
        self.maybe_checkpoint(&mut inner)?;
        self.store_bytes(&mut inner, ino.0, offset, Bytes::Zeros(len), Some(tag))
    }

    /// The parts of [offset, offset+len) of `ino` that are not cached.
    pub fn missing(&self, ino: InodeNo, offset: u64, len: u64) -> Vec<Range<u64>> {
        let end = offset.saturating_add(len);
        let inner = self.lock();
        match inner.entries.get(&ino.0) {
            Some(e) => e.ranges.missing(offset, end),
            None if len == 0 => Vec::new(),
            None => std::iter::once(offset..end).collect(),
        }
    }

    /// The bytes [offset, offset+len) of `ino` when all of them are cached, else `None` (ask
    /// [`missing`](Self::missing) which parts to fetch).
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::TooLarge`] for a `len` that does not fit in memory.
    pub fn read(&self, ino: InodeNo, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let end = offset.saturating_add(len);
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&ino.0) else {
            return Ok(None);
        };
        if !entry.ranges.missing(offset, end).is_empty() {
            return Ok(None);
        }
        entry.last_used = now_secs();
        let dirty = entry.dirty;
        let size = usize::try_from(end - offset).map_err(|_| Error::TooLarge {
            what: "cache read",
            size: end - offset,
            limit: usize::MAX as u64,
        })?;
        let mut buf = vec![0u8; size];
        let path = self.path(ino.0);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io(&path, e))?;
        if !dirty {
            inner.lru.promote(&ino.0);
        }
        Ok(Some(buf))
    }

    /// Sets `ino`'s content length to `size`: cached bytes at or after it are dropped; when the
    /// content grows past the cached data, the new part [end of cached data, size) is recorded
    /// as present zeros. Use it on dirty inodes whose data up to the old size is cached (as
    /// POSIX truncate/extension of locally held content); it marks the inode dirty.
    ///
    /// # Errors
    /// [`Error::NoSpace`] (growing counts as a write), [`Error::Io`], [`Error::StoreIndex`].
    pub fn truncate(&self, ino: InodeNo, size: u64) -> Result<()> {
        let mut inner = self.lock();
        self.maybe_checkpoint(&mut inner)?;
        self.settle_drop(&mut inner, ino.0)?;
        let (old_end, was_dirty, exists) = match inner.entries.get(&ino.0) {
            Some(e) => (e.ranges.end(), e.dirty, true),
            None => (0, false, false),
        };
        let rec = CacheRec::Truncate {
            ino: ino.0,
            size,
            old_end,
            create: !exists,
        };
        let path = self.path(ino.0);
        let open = || self.open_data(ino.0, exists);
        if size < old_end {
            // Shrink: log, then the index, then the file — after a crash neither the log nor
            // the index may claim bytes the file lost.
            inner.log(rec)?;
            let Some(entry) = inner.entries.get_mut(&ino.0) else {
                return Err(Error::Closed);
            };
            let removed = entry.ranges.clip(size);
            entry.bytes -= removed;
            entry.dirty = true;
            entry.changes += 1;
            let encoded = entry.encode();
            entry.pending = false;
            let bytes_now = entry.bytes;
            self.commit_one(ino.0, &encoded)?;
            inner.unaccount(was_dirty, removed + if was_dirty { 0 } else { bytes_now });
            if !was_dirty {
                inner.account(true, bytes_now);
                inner.lru.pop(&ino.0);
            }
            open()?.set_len(size).map_err(|e| Error::io(&path, e))?;
            return Ok(());
        }
        if size > old_end {
            let (room, free) = self.has_disk_room(0)?;
            // A hole takes no blocks, but the reserve must not be gone already.
            if !room {
                return Err(Error::NoSpace {
                    path: self.dir.clone(),
                    needed: size - old_end,
                    available: free,
                    reserve: self.config.reserve_bytes,
                });
            }
        }
        // Grow (or keep): the file first, then the log and the ranges.
        open()?.set_len(size).map_err(|e| Error::io(&path, e))?;
        inner.log(rec)?;
        let entry = inner
            .entries
            .entry(ino.0)
            .or_insert_with(|| Entry::new(ContentTag::NONE));
        let bytes = entry.bytes;
        entry.dirty = true;
        entry.changes += 1;
        entry.pending = true;
        let added = if size > old_end {
            let added = entry.ranges.insert(old_end, size);
            entry.bytes += added;
            added
        } else {
            0
        };
        if !was_dirty {
            inner.unaccount(false, bytes);
            inner.account(true, bytes);
            inner.lru.pop(&ino.0);
        }
        inner.account(true, added);
        Ok(())
    }

    fn commit_one(&self, ino: u64, encoded: &[u8]) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
        {
            let mut table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            table.insert(&ino, encoded).map_err(|e| self.idx_err(e))?;
        }
        txn.commit().map_err(|e| self.idx_err(e))
    }

    /// Forgets `ino` entirely, dirty or not: its file is emptied into the spare pool (or
    /// unlinked), its index row deleted by the next checkpoint.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::StoreIndex`].
    pub fn remove(&self, ino: InodeNo) -> Result<()> {
        let mut inner = self.lock();
        self.maybe_checkpoint(&mut inner)?;
        // Rows exist only for entries, so an inode never cached (a directory, a symlink) has
        // nothing to log; a stray file is still recycled.
        if inner.entries.contains_key(&ino.0) {
            // The log says it at once (a process crash replays it); the index row waits for
            // the next checkpoint, so that removing a tree costs no fsync per file. A power
            // loss before it finds the old row and a file that is intact, emptied (its ranges
            // are clipped) or gone (the row is dropped) — never bytes it does not hold.
            inner.log(CacheRec::Drop { ino: ino.0 })?;
            inner.dropped.insert(ino.0);
        }
        self.forget_entry(&mut inner, ino.0)
    }

    /// Checks `ino`'s entry against the content it should cache: a clean entry of another tag is
    /// discarded. A dirty entry is kept whatever the tag (it is newer than any stored version).
    /// Returns whether an entry remains.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::StoreIndex`].
    pub fn validate(&self, ino: InodeNo, tag: ContentTag) -> Result<bool> {
        let mut inner = self.lock();
        self.maybe_checkpoint(&mut inner)?;
        let stale = match inner.entries.get(&ino.0) {
            None => return Ok(false),
            Some(e) if e.dirty => return Ok(true),
            Some(e) if e.tag == tag => return Ok(true),
            Some(e) if e.bytes == 0 && e.tag == ContentTag::NONE => {
                // An empty placeholder: adopt the tag.
                inner.log(CacheRec::Adopt { ino: ino.0, tag })?;
                if let Some(e) = inner.entries.get_mut(&ino.0) {
                    e.tag = tag;
                    e.pending = true;
                }
                return Ok(true);
            }
            Some(_) => true,
        };
        if stale {
            tracing::debug!(ino = ino.0, "discarding cache of an old content version");
            self.drop_entries(&mut inner, &[ino.0])?;
        }
        Ok(false)
    }

    /// The count of changes that made `ino` dirty so far (0 without an entry): an upload
    /// reads it when it begins and hands it to [`CacheStore::mark_clean`].
    pub fn changes(&self, ino: InodeNo) -> u64 {
        self.lock().entries.get(&ino.0).map_or(0, |e| e.changes)
    }

    /// Marks `ino` clean: its data now matches stored content `tag`, and becomes evictable.
    /// `changes` is [`CacheStore::changes`] as of the upload's start: when a change came
    /// since (a write racing the upload's end), the entry stays dirty, pinned until the next
    /// upload covers it. Durable at the next [`sync`](Self::sync) or [`flush`](Self::flush).
    pub fn mark_clean(&self, ino: InodeNo, tag: ContentTag, changes: u64) {
        let mut inner = self.lock();
        match inner.entries.get(&ino.0) {
            None => return,
            Some(e) if e.changes != changes => {
                tracing::debug!(ino = ino.0, "changed since its upload began: stays dirty");
                return;
            }
            Some(_) => {}
        }
        self.log_or_warn(&mut inner, CacheRec::MarkClean { ino: ino.0, tag });
        let Some(entry) = inner.entries.get_mut(&ino.0) else {
            return;
        };
        entry.tag = tag;
        entry.pending = true;
        if entry.dirty {
            entry.dirty = false;
            let bytes = entry.bytes;
            inner.unaccount(true, bytes);
            inner.account(false, bytes);
            inner.lru.put(ino.0, ());
        }
    }

    /// Punches `len` bytes at `offset` out of `ino`'s cache file (they read as zeros and take no
    /// blocks) and counts a change, like a write of zeros: `fallocate(PUNCH_HOLE)` on a dirty
    /// file whose bytes are all cached. The ranges stay present.
    ///
    /// # Errors
    /// [`Error::Io`] (EOPNOTSUPP where the cache's filesystem cannot punch).
    pub fn punch(&self, ino: InodeNo, offset: u64, len: u64) -> Result<()> {
        let mut inner = self.lock();
        self.maybe_checkpoint(&mut inner)?;
        let exists = inner.entries.contains_key(&ino.0);
        if !exists {
            return Ok(());
        }
        let path = self.path(ino.0);
        let file = self.open_data(ino.0, true)?;
        crate::fsutil::punch_hole(&file, offset, len).map_err(|e| Error::io(&path, e))?;
        // A change like a write: pinned dirty (never evicted before its upload), counted.
        self.mark_dirty_locked(&mut inner, ino);
        Ok(())
    }

    /// fallocate(2) with `mode` (0 or `FALLOC_FL_KEEP_SIZE`) on `ino`'s cache file: reserves
    /// blocks for `len` bytes at `offset`, as the same call on ext4 does (they read as zeros).
    /// The caller has grown the file first when mode 0 extends it.
    ///
    /// # Errors
    /// [`Error::NoSpace`] when the reserve would be gone; [`Error::Io`].
    pub fn allocate(&self, ino: InodeNo, mode: i32, offset: u64, len: u64) -> Result<()> {
        let mut inner = self.lock();
        let exists = inner.entries.contains_key(&ino.0);
        let (room, free) = self.has_disk_room(len)?;
        if !room {
            return Err(Error::NoSpace {
                path: self.dir.clone(),
                needed: len,
                available: free,
                reserve: self.config.reserve_bytes,
            });
        }
        inner.free_seen = None;
        let path = self.path(ino.0);
        let file = self.open_data(ino.0, exists)?;
        crate::fsutil::fallocate(&file, mode, offset, len).map_err(|e| Error::io(&path, e))
    }

    /// `lseek(SEEK_DATA | SEEK_HOLE)` on `ino`'s cache file from `from` (`None`: no such byte
    /// before the cache file's end, or no cache file). The caller knows which ranges it holds.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn seek(&self, ino: InodeNo, from: u64, what: Seek) -> Result<Option<u64>> {
        let path = self.path(ino.0);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        crate::fsutil::seek(&file, from, what).map_err(|e| Error::io(&path, e))
    }

    /// The data runs of `ino`'s cache file inside `offset..offset + len` (see
    /// [`CacheStore::seek`]): what an upload reads; the rest is holes.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn data_ranges(&self, ino: InodeNo, offset: u64, len: u64) -> Result<Vec<Range<u64>>> {
        let path = self.path(ino.0);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        crate::fsutil::data_runs(&file, offset, offset.saturating_add(len))
            .map_err(|e| Error::io(&path, e))
    }

    /// Bytes the cache file of `ino` takes on disk (`st_blocks × 512`), 0 without one.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn allocated(&self, ino: InodeNo) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let path = self.path(ino.0);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.blocks().saturating_mul(512)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Pins `ino` as dirty (e.g. at startup, for inodes the journal says are dirty).
    pub fn mark_dirty(&self, ino: InodeNo) {
        let mut inner = self.lock();
        self.mark_dirty_locked(&mut inner, ino);
    }

    fn mark_dirty_locked(&self, inner: &mut Inner, ino: InodeNo) {
        match inner.entries.get(&ino.0) {
            Some(e) if e.dirty => {}
            found => {
                let create = found.is_none();
                self.log_or_warn(inner, CacheRec::MarkDirty { ino: ino.0, create });
            }
        }
        let entry = inner
            .entries
            .entry(ino.0)
            .or_insert_with(|| Entry::new(ContentTag::NONE));
        entry.changes += 1;
        if !entry.dirty {
            entry.dirty = true;
            entry.pending = true;
            let bytes = entry.bytes;
            inner.unaccount(false, bytes);
            inner.account(true, bytes);
            inner.lru.pop(&ino.0);
        }
    }

    /// True when `ino` is pinned dirty.
    pub fn is_dirty(&self, ino: InodeNo) -> bool {
        self.lock().entries.get(&ino.0).is_some_and(|e| e.dirty)
    }

    /// Makes `ino`'s cached bytes and its index entry durable: fsync of the file, then an index
    /// commit.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::StoreIndex`].
    pub fn sync(&self, ino: InodeNo) -> Result<()> {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&ino.0) else {
            return Ok(());
        };
        if !entry.pending {
            return Ok(());
        }
        let path = self.path(ino.0);
        if let Ok(file) = File::open(&path) {
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        let encoded = entry.encode();
        self.commit_one(ino.0, &encoded)?;
        if let Some(entry) = inner.entries.get_mut(&ino.0) {
            entry.pending = false;
        }
        Ok(())
    }

    /// [`sync`](Self::sync) for every inode with unsynced changes, in one index commit.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::StoreIndex`].
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.lock();
        self.flush_locked(&mut inner)
    }

    /// For the infallible `mark_clean` / `mark_dirty`: a change whose record cannot be logged is
    /// still made; the log then refuses records until the next operation checkpoints it (and
    /// the change reaches the index that way). Losing either mark in a crash meanwhile is
    /// harmless: a clean inode re-uploads, the journal re-pins dirty ones at startup.
    fn log_or_warn(&self, inner: &mut Inner, rec: CacheRec) {
        if let Err(e) = inner.log(rec) {
            tracing::warn!(error = %e, "cache op log append failed; the next operation checkpoints");
        }
    }

    /// The checkpoint: fsync of every file with unsynced changes, one index commit, then the
    /// log is emptied.
    fn flush_locked(&self, inner: &mut Inner) -> Result<()> {
        let pending: Vec<u64> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.pending)
            .map(|(ino, _)| *ino)
            .collect();
        // A removed inode with an entry again had its row deleted then (settle_drop).
        let dropped: Vec<u64> = inner
            .dropped
            .iter()
            .copied()
            .filter(|ino| !inner.entries.contains_key(ino))
            .collect();
        if pending.is_empty() && dropped.is_empty() {
            return self.reset_log(inner);
        }
        for ino in &pending {
            let path = self.path(*ino);
            if let Ok(file) = File::open(&path) {
                file.sync_all().map_err(|e| Error::io(&path, e))?;
            }
        }
        let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
        {
            let mut table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            for ino in &dropped {
                table.remove(ino).map_err(|e| self.idx_err(e))?;
            }
            for ino in &pending {
                if let Some(entry) = inner.entries.get(ino) {
                    table
                        .insert(ino, entry.encode().as_slice())
                        .map_err(|e| self.idx_err(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.idx_err(e))?;
        inner.dropped.clear();
        for ino in &pending {
            if let Some(entry) = inner.entries.get_mut(ino) {
                entry.pending = false;
            }
        }
        self.reset_log(inner)
    }

    /// Empties the log (the index now holds every change it recorded).
    fn reset_log(&self, inner: &mut Inner) -> Result<()> {
        if inner.log.is_empty() && !inner.log_broken {
            return Ok(());
        }
        let base = inner.log.last_lsn();
        match inner.log.reset(base) {
            Ok(()) => {
                inner.log_broken = false;
                Ok(())
            }
            Err(e) => {
                inner.log_broken = true;
                Err(e)
            }
        }
    }

    /// Bytes held, clean and dirty.
    pub fn usage(&self) -> Usage {
        let inner = self.lock();
        Usage {
            clean_bytes: inner.clean_bytes,
            dirty_bytes: inner.dirty_bytes,
            budget_bytes: self.config.budget_bytes,
            inodes: inner.entries.len() as u64,
        }
    }
}

impl Drop for CacheStore {
    fn drop(&mut self) {
        if !self.flush_on_drop {
            return;
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "cache index not flushed on close; unsynced ranges will be forgotten");
        }
    }
}

mod entry;
mod evict;
mod log;
mod recover;
mod spares;
pub use spares::{SPARE_HIGH, SPARE_LOW, SPARE_MAX};

#[cfg(test)]
mod crash_tests;

#[cfg(test)]
mod tests;
