//! The shard store: what a storage node keeps for others, in `DIR/shards`.
//!
//! ```text
//! DIR/shards/
//!   index.redb          shard id → (pack, offset, length, CRC32, stored-at, owners)   (redb)
//!   packs/0000002a.pack append-only pack files: one record (header + bytes) per shard
//!                       (index.redb also holds table `roots`: owner → newest root record, roots.rs)
//! ```
//!
//! Shards live in a few large append-only [`pack`] files rather than one file each: a 1 GiB put
//! spread over five nodes is about 1,700 shards, and creating, renaming and fsyncing an inode
//! and a directory entry per shard was a fifth of a node's CPU (on a journal-less ext4 each
//! inode allocation also scans past every inode freed in the last minute). A new shard is a
//! positioned write at the end of a pack and one `fdatasync`; a deleted shard's record
//! becomes a hole (`fallocate(PUNCH_HOLE)`), and a pack with no shards left is removed.
//!
//! Shard ids are content addresses (BLAKE3 of the bytes), so two owners storing the same bytes
//! share one record: the index keeps the set of owners, each owner's quota is charged the full
//! length, and the record goes only when the last owner deletes it.
//!
//! Commit protocol and crash outcomes (`docs/internals.md`, "Shard store"):
//! - put of a new shard: reserve a range at the end of a pack being filled (in memory), write the
//!   record there, `fdatasync` the pack, then commit the index entry (fsynced). A crash before
//!   the commit leaves an unindexed record, which open punches out (the put never returned, so
//!   nothing was promised).
//! - put by another owner: one index commit.
//! - delete of the last owner: commit the index removal, then punch the record's range. A crash
//!   in between leaves an unindexed record, which open punches out.
//! - open: punches every unindexed range of every pack that holds data, cuts each pack after its
//!   last indexed record, removes packs without one, and reports index entries whose record is
//!   gone as missing ([`ShardStore::recovery`], and every [`ShardStore::scrub`]). A store in the
//!   older one-file-per-shard layout (`data/ab/<id>`) is moved into packs at open. An index
//!   file that is missing or empty beside packs that hold data is never a crash's debris (the
//!   index exists before the first pack): open refuses, touching nothing.
//!
//! Every read checks the record header against the index and the CRC32 of the whole shard; see
//! [`ShardStore::get_range`] for partial reads.

mod counters;
mod entry;
pub mod pack;
mod recover;
mod roots;
mod shares;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::fsutil::{fsync_dir, has_data, open_store_index, punch_hole};
use crate::sync::{Arc, Condvar, Mutex};
use crate::types::{NodeId, ShardId};
use counters::Counters;
use entry::{Entry, Location};
pub use entry::{MAX_OWNERS, ShardMeta};
use pack::{HEADER_LEN, PACK_LIMIT, RecordHeader, record_end};

/// The largest shard accepted, in bytes. Shards are at most a few MiB (the default shard size is
/// 1 MiB); 64 MiB leaves room for large-slice layouts while bounding memory per request.
pub const MAX_SHARD_LEN: u64 = 64 << 20;

/// The index table: shard id → encoded [`ShardMeta`] and the shard's place in a pack.
const INDEX: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("shards");

/// Bytes of old-layout shard files moved into packs per committed batch (at open, once).
#[cfg(not(test))]
const MIGRATE_BATCH: u64 = 64 << 20;
/// Small in tests, so a few shards cross batches.
#[cfg(test)]
const MIGRATE_BATCH: u64 = 4096;

/// Pack files kept open for reads at once.
const OPEN_PACKS: usize = 64;

/// How much this store may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Total bytes of shards (each distinct shard counted once).
    pub capacity: u64,
    /// Bytes any one owner may have stored (each of its shards counted in full); 0 = no limit
    /// beyond the capacity.
    pub per_owner: u64,
}

/// What a [`ShardStore::put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The shard was new and is now stored.
    Stored,
    /// The shard was already stored for someone else; this owner was added.
    OwnerAdded,
    /// This owner already had it stored: nothing changed (puts are idempotent).
    AlreadyStored,
}

/// Space in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of distinct shards stored.
    pub used: u64,
    /// The capacity from [`Quotas`].
    pub capacity: u64,
    /// Number of distinct shards.
    pub shards: u64,
}

/// The result of a [`ShardStore::scrub`] pass (or of recovery at open).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Shards read and checked.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Shards whose record fails its header or CRC check.
    pub corrupt: Vec<ShardId>,
    /// Shards in the index whose record is gone (pack missing or cut short).
    pub missing: Vec<ShardId>,
}

impl ScrubReport {
    /// True when nothing is corrupt or missing.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

/// What opening the store found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Shards moved from the older one-file-per-shard layout into packs.
    pub migrated: u64,
    /// Unindexed ranges of packs (a put interrupted before its commit, or a delete interrupted
    /// after it) punched or cut off, and packs without an indexed record removed.
    pub orphans_removed: u64,
    /// Index entries whose record is gone: reported, not forgotten, so repair can restore them.
    pub missing: Vec<ShardId>,
}

/// The shard store of one data dir. Reads run concurrently. The writes of new shards (record,
/// fdatasync, index commit) run concurrently too: a put checks and reserves quota, capacity and
/// its place in a pack being filled under the counters lock, writes without it, and takes it again
/// to settle, so one node's writes and syncs overlap instead of queueing behind each other.
/// Deletes, owner changes and a second put of a shard still being written are serialised.
#[derive(Debug)]
pub struct ShardStore {
    dir: PathBuf,
    db: Database,
    quotas: Quotas,
    /// Held while a put or delete checks and changes the counters and the index (not while a
    /// new shard's record is written: [`Counters::writing`] marks those).
    counters: Mutex<Counters>,
    /// Signalled when a shard leaves [`Counters::writing`].
    written: Condvar,
    /// Open pack files, by number (at most [`OPEN_PACKS`]).
    files: Mutex<HashMap<u32, Arc<File>>>,
    recovery: Recovery,
    /// Set once the filesystem refused to punch a hole: deletes stop trying (and warning).
    no_punch: AtomicBool,
}

/// Whether `e` says the filesystem cannot punch holes at all (rather than failing this once).
fn punch_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
}

const NO_PUNCH: &str = "this filesystem cannot punch holes: space of deleted shards returns only when a whole pack empties";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The shard files of the old one-file-per-shard layout (`data/ab/<id>`); none when there is
/// no `data/`.
fn legacy_files(data: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let subdirs = match fs::read_dir(data) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for sub in subdirs {
        let sub = sub?.path();
        if sub.is_dir() {
            for file in fs::read_dir(&sub)? {
                out.push(file?.path());
            }
        }
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the counters half-updated in a way that
    // matters more than losing the store: recover the guard.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ShardStore {
    /// Opens (creating if needed) the shard store in `dir` (normally `DATA_DIR/shards`) and
    /// recovers from any interrupted put or delete (see the module docs).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::StoreIndex`] when the directory or the index cannot be opened
    /// (including when another process has it open); [`Error::IndexLost`] when the index file
    /// is missing or empty but packs hold shards (nothing is touched).
    pub fn open(dir: &Path, quotas: Quotas) -> Result<ShardStore> {
        ShardStore::open_with(dir, quotas, PACK_LIMIT)
    }

    fn open_with(dir: &Path, quotas: Quotas, pack_limit: u64) -> Result<ShardStore> {
        for sub in ["", "packs"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let packs_dir = dir.join("packs");
        // Record headers hold each shard's id, length and CRC but not its owners, so a lost
        // index cannot be rebuilt from the packs. A store still (or partly) in the old layout
        // keeps shards in data/ab/<id>, which the move into packs would delete as unindexed.
        let db = open_store_index(
            dir,
            &dir.join("index.redb"),
            dir,
            || {
                let mut files: Vec<PathBuf> = pack::pack_files(&packs_dir)?
                    .into_iter()
                    .map(|(_, path)| path)
                    .collect();
                files.extend(legacy_files(&dir.join("data"))?);
                Ok(files)
            },
            "Restore index.redb from a backup, or move the packs and data directories away to \
             start this node empty (the network repairs the lost copies)",
        )?;
        let mut store = ShardStore {
            dir: dir.to_path_buf(),
            db,
            quotas,
            counters: Mutex::new(Counters {
                limit: pack_limit,
                ..Counters::default()
            }),
            written: Condvar::new(),
            files: Mutex::new(HashMap::new()),
            recovery: Recovery::default(),
            no_punch: AtomicBool::new(false),
        };
        store.recover()?;
        Ok(store)
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.redb")
    }

    fn idx_err(&self, e: impl Into<redb::Error>) -> Error {
        Error::store_index(self.index_path(), e)
    }

    fn packs_dir(&self) -> PathBuf {
        self.dir.join("packs")
    }

    fn pack_path(&self, n: u32) -> PathBuf {
        self.packs_dir().join(pack::pack_name(n))
    }

    /// Pack `n`, opened on first use.
    fn pack_file(&self, n: u32) -> std::io::Result<Arc<File>> {
        let mut files = lock(&self.files);
        if let Some(f) = files.get(&n) {
            return Ok(Arc::clone(f));
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.pack_path(n))?,
        );
        if files.len() >= OPEN_PACKS {
            files.clear();
        }
        files.insert(n, Arc::clone(&file));
        Ok(file)
    }

    /// Creates pack `n`, empty, and makes its name durable.
    fn create_pack(&self, n: u32) -> Result<()> {
        let path = self.pack_path(n);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        fsync_dir(&self.packs_dir())
    }

    /// Deletes pack `n`, which holds no indexed record any more.
    fn remove_pack(&self, n: u32) {
        lock(&self.files).remove(&n);
        let path = self.pack_path(n);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Err(e) = fsync_dir(&self.packs_dir()) {
                    tracing::warn!(error = %e, "cannot sync the pack directory");
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            // Nothing indexed points into it, so the next open removes it.
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove empty pack")
            }
        }
    }

    /// Gives back the space of a record nothing indexes any more (best effort: what is left,
    /// open punches again).
    fn punch(&self, at: Location, len: u64) {
        if at == Location::NOWHERE || self.no_punch.load(Ordering::Relaxed) {
            return;
        }
        let result = self
            .pack_file(at.pack)
            .and_then(|f| punch_hole(&f, at.offset, record_end(at.offset, len) - at.offset));
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if punch_unsupported(&e) => {
                if !self.no_punch.swap(true, Ordering::Relaxed) {
                    tracing::warn!("{NO_PUNCH}");
                }
            }
            Err(e) => {
                tracing::warn!(pack = at.pack, offset = at.offset, error = %e, "cannot free a deleted shard's space")
            }
        }
    }

    /// Reserves the next record's place (see [`Counters::reserve`]), creating its pack when it
    /// starts one and removing a pack the rollover left empty.
    fn reserve(&self, counters: &mut Counters, len: u64) -> Result<Location> {
        let (at, new_pack) = counters.reserve(len);
        for pack in std::mem::take(&mut counters.retired) {
            self.remove_pack(pack);
        }
        if new_pack && let Err(e) = self.create_pack(at.pack) {
            counters.abandon(at.pack);
            return Err(e);
        }
        Ok(at)
    }

    /// Takes `at`'s record out of the pack accounting: the pack goes if nothing is left in it,
    /// otherwise the record's range is punched.
    fn forget(&self, counters: &mut Counters, at: Location, len: u64) {
        if counters.release(at.pack) {
            self.remove_pack(at.pack);
        } else {
            self.punch(at, len);
        }
    }

    /// What opening the store found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Counters> {
        lock(&self.counters)
    }

    /// Stores `bytes` as shard `id` for `owner`.
    ///
    /// Checks, before anything touches the disk: the length limit, BLAKE3(bytes) = id, the
    /// owner's quota and the capacity. Idempotent for the same owner; another owner of the same
    /// bytes is added to the shard's owners (and charged its length).
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::HashMismatch`], [`Error::QuotaExceeded`],
    /// [`Error::StoreFull`], [`Error::Io`], [`Error::StoreIndex`].
    pub fn put(&self, id: ShardId, owner: NodeId, bytes: &[u8]) -> Result<PutOutcome> {
        self.put_with_crc(id, owner, bytes, crc32fast::hash(bytes))
    }

    /// [`put`](Self::put) for a caller that already holds `crc`, the CRC32 of `bytes` it has
    /// checked (a node checks every store request's CRC on arrival): one pass over the shard
    /// fewer. The BLAKE3 check against `id` still runs.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub fn put_with_crc(
        &self,
        id: ShardId,
        owner: NodeId,
        bytes: &[u8],
        crc: u32,
    ) -> Result<PutOutcome> {
        let len = bytes.len() as u64;
        if len > MAX_SHARD_LEN {
            return Err(Error::TooLarge {
                what: "shard",
                size: len,
                limit: MAX_SHARD_LEN,
            });
        }
        let actual = ShardId(*blake3::hash(bytes).as_bytes());
        if actual != id {
            return Err(Error::HashMismatch {
                expected: id,
                actual,
            });
        }
        // A shard stored already is read back and checked before the lock is taken (a re-put
        // must repair what is damaged), so the check does not hold up other puts.
        let checked = self
            .entry(&id)?
            .map(|e| (e.at, self.read_record(&id, &e).is_ok()));
        let mut counters = self.lock();
        while counters.writing.contains(&id) {
            counters = self
                .written
                .wait(counters)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let mut existing = self.entry(&id)?;
        if let Some(entry) = existing.as_mut() {
            let healthy = match checked {
                Some((at, ok)) if at == entry.at => ok,
                _ => self.read_record(&id, entry).is_ok(),
            };
            if !healthy {
                // Indexed but the record is gone or damaged: the bytes we hold verify, so
                // write them again (repair through a re-put).
                tracing::warn!(shard = %id, "rewriting a missing or damaged shard");
                let old = entry.at;
                let new = self.append_locked(&mut counters, &id, bytes, crc)?;
                entry.at = new;
                if let Err(e) = self.write_entry(&id, entry) {
                    self.forget(&mut counters, new, len);
                    return Err(e);
                }
                self.forget(&mut counters, old, len);
            }
        }
        let owner_used = counters.per_owner.get(&owner).copied().unwrap_or(0);
        if let Some(entry) = &existing {
            if entry.meta.owners.contains(&owner) {
                return Ok(PutOutcome::AlreadyStored);
            }
            if entry.meta.owners.len() >= MAX_OWNERS {
                return Err(Error::TooLarge {
                    what: "shard owner list",
                    size: entry.meta.owners.len() as u64 + 1,
                    limit: MAX_OWNERS as u64,
                });
            }
        }
        if self.quotas.per_owner > 0 && owner_used.saturating_add(len) > self.quotas.per_owner {
            return Err(Error::QuotaExceeded {
                owner,
                used: owner_used,
                quota: self.quotas.per_owner,
            });
        }
        if let Some(mut entry) = existing {
            entry.meta.owners.push(owner);
            entry.meta.owners.sort();
            self.write_entry(&id, &entry)?;
            counters.charge(owner, len);
            tracing::debug!(shard = %id, owner = %owner, len, "shard owner added");
            return Ok(PutOutcome::OwnerAdded);
        }
        if counters.used.saturating_add(len) > self.quotas.capacity {
            return Err(Error::StoreFull {
                used: counters.used,
                capacity: self.quotas.capacity,
            });
        }
        // Reserve quota, capacity and the record's place, then write without the lock.
        let at = self.reserve(&mut counters, len)?;
        counters.used += len;
        counters.shards += 1;
        counters.charge(owner, len);
        counters.writing.insert(id);
        drop(counters);
        let written = self.write_new(&id, owner, bytes, crc, at);
        let mut counters = self.lock();
        counters.written(at.pack);
        counters.writing.remove(&id);
        self.written.notify_all();
        if let Err(e) = written {
            counters.used = counters.used.saturating_sub(len);
            counters.shards = counters.shards.saturating_sub(1);
            counters.refund(&owner, len);
            self.forget(&mut counters, at, len);
            return Err(e);
        }
        tracing::debug!(shard = %id, owner = %owner, len, "shard stored");
        Ok(PutOutcome::Stored)
    }

    /// Writes a record of `bytes` at `at` and makes it durable.
    fn write_at(&self, at: Location, id: &ShardId, bytes: &[u8], crc: u32) -> Result<()> {
        let head = RecordHeader {
            id: *id,
            len: bytes.len() as u64,
            crc,
        };
        let path = self.pack_path(at.pack);
        // A file description of its own, not the shared read handle: Linux reports a writeback
        // error once per open file, so with a shared one a concurrent writer's fdatasync could
        // take this record's error and this one would return success for lost bytes.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| {
                pack::write_record(&file, at.offset, &head, bytes)?;
                file.sync_data()
            })
            .map_err(|e| Error::io(&path, e))
    }

    /// Appends a record of `bytes` to a pack being filled with the counters lock held (the repair
    /// path, which is rare; new shards write outside the lock).
    fn append_locked(
        &self,
        counters: &mut Counters,
        id: &ShardId,
        bytes: &[u8],
        crc: u32,
    ) -> Result<Location> {
        let len = bytes.len() as u64;
        let at = self.reserve(counters, len)?;
        let written = self.write_at(at, id, bytes, crc);
        counters.written(at.pack);
        if let Err(e) = written {
            self.forget(counters, at, len);
            return Err(e);
        }
        Ok(at)
    }

    /// Writes a new shard's record, then commits its index entry (the shard is promised only
    /// once both are durable).
    fn write_new(
        &self,
        id: &ShardId,
        owner: NodeId,
        bytes: &[u8],
        crc: u32,
        at: Location,
    ) -> Result<()> {
        self.write_at(at, id, bytes, crc)?;
        let entry = Entry {
            meta: ShardMeta {
                len: bytes.len() as u64,
                crc,
                stored_at: now_secs(),
                owners: vec![owner],
            },
            at,
        };
        self.write_entry(id, &entry)
    }

    fn write_entry(&self, id: &ShardId, entry: &Entry) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
        {
            let mut table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            table
                .insert(&id.0, entry.encode().as_slice())
                .map_err(|e| self.idx_err(e))?;
        }
        txn.commit().map_err(|e| self.idx_err(e))
    }

    /// The index entry of `id`, if it is stored.
    ///
    /// # Errors
    /// [`Error::StoreIndex`], or [`Error::CorruptShard`] for an undecodable entry.
    pub fn has(&self, id: &ShardId) -> Result<Option<ShardMeta>> {
        Ok(self.entry(id)?.map(|e| e.meta))
    }

    /// Up to `limit` stored shards with ids after `after` (all from the first when `None`), in
    /// id order: a cursor for walking the whole store in pages (pairing mirrors it this way)
    /// without holding a read transaction between pages.
    ///
    /// # Errors
    /// [`Error::StoreIndex`]; an undecodable entry is skipped with a warning (reads of it report
    /// it as corrupt).
    pub fn list(&self, after: Option<&ShardId>, limit: usize) -> Result<Vec<(ShardId, ShardMeta)>> {
        let txn = self.db.begin_read().map_err(|e| self.idx_err(e))?;
        let table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
        let rows = match after {
            Some(a) => table
                .range::<&[u8; 32]>((std::ops::Bound::Excluded(&a.0), std::ops::Bound::Unbounded)),
            None => table.range::<&[u8; 32]>(..),
        }
        .map_err(|e| self.idx_err(e))?;
        let mut out = Vec::with_capacity(limit.min(4096));
        for row in rows {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(|e| self.idx_err(e))?;
            let id = ShardId(*k.value());
            match Entry::decode(v.value()) {
                Some(e) => out.push((id, e.meta)),
                None => tracing::warn!(shard = %id, "undecodable index entry skipped in a listing"),
            }
        }
        Ok(out)
    }

    fn entry(&self, id: &ShardId) -> Result<Option<Entry>> {
        let txn = self.db.begin_read().map_err(|e| self.idx_err(e))?;
        let table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
        let Some(value) = table.get(&id.0).map_err(|e| self.idx_err(e))? else {
            return Ok(None);
        };
        Entry::decode(value.value())
            .map(Some)
            .ok_or(Error::CorruptShard {
                id: *id,
                reason: "undecodable index entry",
            })
    }

    /// Reads the record `entry` points to and checks its header and CRC.
    fn read_record(&self, id: &ShardId, entry: &Entry) -> Result<Vec<u8>> {
        let damaged = |reason| Error::CorruptShard { id: *id, reason };
        if entry.at == Location::NOWHERE {
            return Err(damaged(RECORD_MISSING));
        }
        let path = self.pack_path(entry.at.pack);
        let io = |e: std::io::Error| match e.kind() {
            ErrorKind::NotFound | ErrorKind::UnexpectedEof => damaged(RECORD_MISSING),
            _ => Error::io(&path, e),
        };
        let file = self.pack_file(entry.at.pack).map_err(io)?;
        let expected = RecordHeader {
            id: *id,
            len: entry.meta.len,
            crc: entry.meta.crc,
        };
        let head = pack::read_header(&file, entry.at.offset).map_err(io)?;
        if head != Some(expected) {
            let size = file.metadata().map_err(io)?.len();
            return Err(damaged(if size < entry.at.offset + HEADER_LEN {
                RECORD_MISSING
            } else {
                "record header does not match the index"
            }));
        }
        // meta.len ≤ MAX_SHARD_LEN (checked on put), so the allocation is bounded.
        let mut bytes = vec![0u8; usize::try_from(entry.meta.len.min(MAX_SHARD_LEN)).unwrap_or(0)];
        file.read_exact_at(&mut bytes, entry.at.offset + HEADER_LEN)
            .map_err(io)?;
        if bytes.len() as u64 != entry.meta.len || crc32fast::hash(&bytes) != entry.meta.crc {
            return Err(damaged("CRC mismatch"));
        }
        Ok(bytes)
    }

    /// Reads and verifies the whole record of `id` against its index entry.
    fn read_verified(&self, id: &ShardId) -> Result<(Vec<u8>, ShardMeta)> {
        let mut entry = self.entry(id)?.ok_or(Error::ShardNotFound { id: *id })?;
        // A delete (and a re-put elsewhere) may race the read: a failure counts only if the
        // entry still points where it was read (or it keeps moving).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.read_record(id, &entry) {
                Ok(bytes) => return Ok((bytes, entry.meta)),
                Err(e) => e,
            };
            match self.entry(id)? {
                None => {
                    tracing::debug!(shard = %id, error = %err, "shard deleted while read");
                    return Err(Error::ShardNotFound { id: *id });
                }
                Some(now) if now.at == entry.at || attempt == 3 => return Err(err),
                Some(now) => entry = now,
            }
        }
    }

    /// The bytes of shard `id`, with their length and CRC verified.
    ///
    /// # Errors
    /// [`Error::ShardNotFound`]; [`Error::CorruptShard`] naming the shard when its record is
    /// missing, does not match the index or fails its CRC; [`Error::Io`].
    pub fn get(&self, id: &ShardId) -> Result<Vec<u8>> {
        self.read_verified(id).map(|(bytes, _)| bytes)
    }

    /// `len` bytes of shard `id` from `offset` (fewer at the end of the shard).
    ///
    /// A CRC cannot verify part of a shard, so a range read verifies the whole record (shards
    /// are at most [`MAX_SHARD_LEN`], normally 1 MiB) and returns the slice: a range read never
    /// returns bytes a full read would refuse. Clients that need authenticity still check the
    /// whole shard (BLAKE3 id, AEAD tag); a range is for streaming to a peer that does.
    ///
    /// # Errors
    /// As [`get`](Self::get), and [`Error::TooLarge`] when `offset` is past the end.
    pub fn get_range(&self, id: &ShardId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (bytes, meta) = self.read_verified(id)?;
        if offset > meta.len {
            return Err(Error::TooLarge {
                what: "shard range offset",
                size: offset,
                limit: meta.len,
            });
        }
        let end = offset.saturating_add(len).min(meta.len);
        // Both bounds ≤ meta.len = bytes.len(), which is a usize.
        let start = usize::try_from(offset).unwrap_or(bytes.len());
        let end = usize::try_from(end).unwrap_or(bytes.len());
        Ok(bytes[start..end].to_vec())
    }

    /// Removes `requester` from the owners of `id`; the record goes when no owner is left.
    ///
    /// # Errors
    /// [`Error::ShardNotFound`]; [`Error::NotOwner`] when `requester` is not an owner (nothing
    /// changes); [`Error::Io`], [`Error::StoreIndex`].
    pub fn delete(&self, id: &ShardId, requester: NodeId) -> Result<()> {
        let mut counters = self.lock();
        let mut entry = self.entry(id)?.ok_or(Error::ShardNotFound { id: *id })?;
        let Some(pos) = entry.meta.owners.iter().position(|o| *o == requester) else {
            return Err(Error::NotOwner { id: *id, requester });
        };
        entry.meta.owners.remove(pos);
        let len = entry.meta.len;
        if entry.meta.owners.is_empty() {
            let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
            {
                let mut table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
                table.remove(&id.0).map_err(|e| self.idx_err(e))?;
            }
            txn.commit().map_err(|e| self.idx_err(e))?;
            counters.used = counters.used.saturating_sub(len);
            counters.shards = counters.shards.saturating_sub(1);
            self.forget(&mut counters, entry.at, len);
        } else {
            self.write_entry(id, &entry)?;
        }
        counters.refund(&requester, len);
        tracing::debug!(shard = %id, owner = %requester, "shard deleted");
        Ok(())
    }

    /// Reads every indexed shard and checks its record. Reports, repairs nothing: a corrupt or
    /// missing shard stays in the index until its owner re-puts or deletes it.
    ///
    /// # Errors
    /// [`Error::StoreIndex`] or [`Error::Io`] other than on the pack files themselves.
    pub fn scrub(&self) -> Result<ScrubReport> {
        let ids: Vec<ShardId> = {
            let txn = self.db.begin_read().map_err(|e| self.idx_err(e))?;
            let table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            let mut ids = Vec::new();
            for row in table.iter().map_err(|e| self.idx_err(e))? {
                let (k, _) = row.map_err(|e| self.idx_err(e))?;
                ids.push(ShardId(*k.value()));
            }
            ids
        };
        let mut report = ScrubReport::default();
        for id in ids {
            match self.read_verified(&id) {
                Ok((bytes, _)) => {
                    report.checked += 1;
                    report.bytes += bytes.len() as u64;
                }
                Err(Error::ShardNotFound { .. }) => {} // deleted meanwhile
                Err(Error::CorruptShard {
                    reason: RECORD_MISSING,
                    ..
                }) => report.missing.push(id),
                Err(Error::CorruptShard { .. }) => {
                    report.checked += 1;
                    report.corrupt.push(id);
                }
                Err(Error::Io { path, source }) => {
                    tracing::warn!(shard = %id, path = %path.display(), error = %source, "cannot read shard");
                    report.checked += 1;
                    report.corrupt.push(id);
                }
                Err(e) => return Err(e),
            }
        }
        if !report.is_clean() {
            tracing::warn!(
                corrupt = report.corrupt.len(),
                missing = report.missing.len(),
                "scrub found damaged shards"
            );
        }
        Ok(report)
    }

    /// Bytes and shards stored, and the capacity.
    pub fn usage(&self) -> Usage {
        let counters = self.lock();
        Usage {
            used: counters.used,
            capacity: self.quotas.capacity,
            shards: counters.shards,
        }
    }

    /// The quotas this store enforces.
    pub fn quotas(&self) -> Quotas {
        self.quotas
    }

    /// Bytes charged to `owner`.
    pub fn owner_usage(&self, owner: &NodeId) -> u64 {
        self.lock().per_owner.get(owner).copied().unwrap_or(0)
    }
}

/// The reason a read gives for a record that is gone (its pack is missing or cut short).
const RECORD_MISSING: &str = "record missing";

#[cfg(test)]
mod tests;
