//! The shard store: what a storage node keeps for others, in `DIR/shards`.
//!
//! ```text
//! DIR/shards/
//!   index.redb          shard id → (length, CRC32, stored-at, owners)   (redb, fsynced commits)
//!   data/ab/abcd…       one file per shard, named by its hex id, fanned out by the first byte
//!   tmp/                shards being written; emptied on open
//! ```
//!
//! Shard ids are content addresses (BLAKE3 of the bytes), so two owners storing the same bytes
//! share one file: the index keeps the set of owners, each owner's quota is charged the full
//! length, and the file goes only when the last owner deletes it.
//!
//! Commit protocol and crash outcomes (`docs/architecture.md`, "Shard store"):
//! - put of a new shard: write `tmp/…`, fsync, rename to `data/ab/<id>`, fsync `data/ab`, then
//!   commit the index entry (fsynced). A crash before the commit leaves a complete file without
//!   an entry, which open removes (the put never returned, so nothing was promised).
//! - put by another owner: one index commit.
//! - delete of the last owner: commit the index removal, then unlink and fsync the dir. A crash
//!   in between leaves an orphan file, which open removes.
//! - open: empties `tmp/`, removes files without index entries, and reports index entries
//!   without files as missing ([`ShardStore::recovery`], and every [`ShardStore::scrub`]).
//!
//! Every read verifies the length and CRC32 of the whole file; see [`ShardStore::get_range`] for
//! partial reads.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;
use crate::sync::{Condvar, Mutex};
use crate::types::{NodeId, ShardId};

/// The largest shard accepted, in bytes. Shards are at most a few MiB (the default shard size is
/// 1 MiB); 64 MiB leaves room for large-slice layouts while bounding memory per request.
pub const MAX_SHARD_LEN: u64 = 64 << 20;

/// The most owners one shard may have. Identical ciphertext under different owners only happens
/// for replicated objects shared on purpose; the cap bounds the index entry's size.
pub const MAX_OWNERS: usize = 256;

/// The index table: shard id → encoded [`ShardMeta`].
const INDEX: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("shards");

/// Version of the index entry encoding (first byte of every value).
const ENTRY_VERSION: u8 = 1;
/// Fixed part of an index entry: version 1, length 8, CRC 4, stored-at 8, owner count 2.
const ENTRY_FIXED: usize = 23;

/// How much this store may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Total bytes of shards (each distinct shard counted once).
    pub capacity: u64,
    /// Bytes any one owner may have stored (each of its shards counted in full); 0 = no limit
    /// beyond the capacity.
    pub per_owner: u64,
}

/// What the index records about a stored shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMeta {
    /// Length in bytes.
    pub len: u64,
    /// CRC32 (IEEE) of the bytes.
    pub crc: u32,
    /// When it was first stored, in seconds since the Unix epoch.
    pub stored_at: u64,
    /// The nodes that stored it and may delete it (sorted, no duplicates, never empty).
    pub owners: Vec<NodeId>,
}

impl ShardMeta {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENTRY_FIXED + 32 * self.owners.len());
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(&self.stored_at.to_le_bytes());
        // Bounded by MAX_OWNERS (256) on every insert.
        let count = u16::try_from(self.owners.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for owner in &self.owners {
            out.extend_from_slice(&owner.0);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<ShardMeta> {
        if bytes.len() < ENTRY_FIXED || bytes[0] != ENTRY_VERSION {
            return None;
        }
        let u64_at = |i: usize| bytes[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        let len = u64_at(1)?;
        let crc = u32::from_le_bytes(bytes[9..13].try_into().ok()?);
        let stored_at = u64_at(13)?;
        let count = usize::from(u16::from_le_bytes(bytes[21..23].try_into().ok()?));
        if count == 0 || count > MAX_OWNERS || bytes.len() != ENTRY_FIXED + 32 * count {
            return None;
        }
        let owners = bytes[ENTRY_FIXED..]
            .chunks_exact(32)
            .map(|c| c.try_into().ok().map(NodeId))
            .collect::<Option<Vec<_>>>()?;
        Some(ShardMeta {
            len,
            crc,
            stored_at,
            owners,
        })
    }
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
    /// Shards whose file has the wrong length or CRC.
    pub corrupt: Vec<ShardId>,
    /// Shards in the index without a file.
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
    /// Temporary files (interrupted puts) removed.
    pub temp_removed: u64,
    /// Files without an index entry (a put interrupted before its commit, or a delete
    /// interrupted after it) removed.
    pub orphans_removed: u64,
    /// Index entries whose file is gone: reported, not forgotten, so repair can restore them.
    pub missing: Vec<ShardId>,
}

/// Counters kept in memory, rebuilt from the index at open.
#[derive(Debug, Default)]
struct Counters {
    /// Bytes of indexed shards plus those being written (reserved before the write).
    used: u64,
    shards: u64,
    per_owner: HashMap<NodeId, u64>,
    /// New shards whose file and index entry are being written outside the lock.
    writing: HashSet<ShardId>,
}

/// The shard store of one data dir. Reads run concurrently. The writes of new shards (file,
/// fsyncs, index commit) run concurrently too: a put checks and reserves quota and capacity
/// under the counters lock, writes without it, and takes it again to settle, so one node's
/// fsyncs overlap instead of queueing behind each other. Deletes, owner changes and a second
/// put of a shard still being written are serialised.
#[derive(Debug)]
pub struct ShardStore {
    dir: PathBuf,
    db: Database,
    quotas: Quotas,
    /// Held while a put or delete checks and changes the counters and the index (not while a
    /// new shard's file is written: [`Counters::writing`] marks those).
    counters: Mutex<Counters>,
    /// Signalled when a shard leaves [`Counters::writing`].
    written: Condvar,
    recovery: Recovery,
    tmp_seq: std::sync::atomic::AtomicU64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ShardStore {
    /// Opens (creating if needed) the shard store in `dir` (normally `DATA_DIR/shards`) and
    /// recovers from any interrupted put or delete (see the module docs).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::StoreIndex`] when the directory or the index cannot be opened
    /// (including when another process has it open).
    pub fn open(dir: &Path, quotas: Quotas) -> Result<ShardStore> {
        for sub in ["", "data", "tmp"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let index_path = dir.join("index.redb");
        let db = Database::create(&index_path).map_err(|e| Error::store_index(&index_path, e))?;
        let mut store = ShardStore {
            dir: dir.to_path_buf(),
            db,
            quotas,
            counters: Mutex::new(Counters::default()),
            written: Condvar::new(),
            recovery: Recovery::default(),
            tmp_seq: std::sync::atomic::AtomicU64::new(0),
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

    fn fan_dir(&self, id: &ShardId) -> PathBuf {
        self.dir.join("data").join(&id.to_hex()[..2])
    }

    fn shard_path(&self, id: &ShardId) -> PathBuf {
        self.fan_dir(id).join(id.to_hex())
    }

    /// Rebuilds the counters from the index, empties tmp/, removes orphan files, finds missing
    /// ones.
    fn recover(&mut self) -> Result<()> {
        let mut recovery = Recovery::default();
        let tmp = self.dir.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))? {
            let entry = entry.map_err(|e| Error::io(&tmp, e))?;
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            recovery.temp_removed += 1;
        }
        fsync_dir(&tmp)?;

        let mut counters = Counters::default();
        let mut indexed: BTreeSet<ShardId> = BTreeSet::new();
        {
            let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
            // Creates the table on first open; the commit makes that durable.
            txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            txn.commit().map_err(|e| self.idx_err(e))?;
            let txn = self.db.begin_read().map_err(|e| self.idx_err(e))?;
            let table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            for row in table.iter().map_err(|e| self.idx_err(e))? {
                let (k, v) = row.map_err(|e| self.idx_err(e))?;
                let id = ShardId(*k.value());
                let meta = ShardMeta::decode(v.value()).ok_or(Error::CorruptShard {
                    id,
                    reason: "undecodable index entry",
                })?;
                counters.used += meta.len;
                counters.shards += 1;
                for owner in &meta.owners {
                    *counters.per_owner.entry(*owner).or_default() += meta.len;
                }
                indexed.insert(id);
            }
        }

        let data = self.dir.join("data");
        let mut present: BTreeSet<ShardId> = BTreeSet::new();
        for fan in fs::read_dir(&data).map_err(|e| Error::io(&data, e))? {
            let fan = fan.map_err(|e| Error::io(&data, e))?.path();
            if !fan.is_dir() {
                continue;
            }
            let mut removed_here = false;
            for file in fs::read_dir(&fan).map_err(|e| Error::io(&fan, e))? {
                let path = file.map_err(|e| Error::io(&fan, e))?.path();
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(ShardId::from_hex);
                match id {
                    Some(id) if indexed.contains(&id) => {
                        present.insert(id);
                    }
                    _ => {
                        tracing::warn!(path = %path.display(), "removing shard file without an index entry");
                        fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                        recovery.orphans_removed += 1;
                        removed_here = true;
                    }
                }
            }
            if removed_here {
                fsync_dir(&fan)?;
            }
        }
        recovery.missing = indexed.difference(&present).copied().collect();
        for id in &recovery.missing {
            tracing::warn!(shard = %id, "indexed shard has no file");
        }
        self.counters = Mutex::new(counters);
        self.recovery = recovery;
        Ok(())
    }

    /// What opening the store found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Counters> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters more than losing the store: recover the guard.
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let mut counters = self.lock();
        while counters.writing.contains(&id) {
            counters = self
                .written
                .wait(counters)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let existing = self.meta(&id)?;
        let owner_used = counters.per_owner.get(&owner).copied().unwrap_or(0);
        let owned = existing.as_ref().is_some_and(|m| m.owners.contains(&owner));
        if let Some(meta) = &existing {
            let path = self.shard_path(&id);
            let file_ok = fs::metadata(&path).is_ok_and(|m| m.len() == meta.len);
            if !file_ok {
                // Indexed but the file is gone or damaged: the bytes we hold verify, so put them
                // back (repair through a re-put).
                tracing::warn!(shard = %id, "rewriting missing or damaged shard file");
                self.write_file(&id, bytes)?;
            }
            if owned {
                return Ok(PutOutcome::AlreadyStored);
            }
            if meta.owners.len() >= MAX_OWNERS {
                return Err(Error::TooLarge {
                    what: "shard owner list",
                    size: meta.owners.len() as u64 + 1,
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
        let outcome = match existing {
            Some(mut meta) => {
                meta.owners.push(owner);
                meta.owners.sort();
                self.write_entry(&id, &meta)?;
                PutOutcome::OwnerAdded
            }
            None => {
                if counters.used.saturating_add(len) > self.quotas.capacity {
                    return Err(Error::StoreFull {
                        used: counters.used,
                        capacity: self.quotas.capacity,
                    });
                }
                // Reserve, then write without the lock.
                counters.used += len;
                counters.shards += 1;
                *counters.per_owner.entry(owner).or_default() += len;
                counters.writing.insert(id);
                drop(counters);
                let written = self.write_new(&id, owner, bytes, crc);
                let mut counters = self.lock();
                counters.writing.remove(&id);
                self.written.notify_all();
                if let Err(e) = written {
                    counters.used = counters.used.saturating_sub(len);
                    counters.shards = counters.shards.saturating_sub(1);
                    if let Some(used) = counters.per_owner.get_mut(&owner) {
                        *used = used.saturating_sub(len);
                        if *used == 0 {
                            counters.per_owner.remove(&owner);
                        }
                    }
                    return Err(e);
                }
                tracing::debug!(shard = %id, owner = %owner, len, "shard stored");
                return Ok(PutOutcome::Stored);
            }
        };
        *counters.per_owner.entry(owner).or_default() += len;
        tracing::debug!(shard = %id, owner = %owner, len, ?outcome, "shard stored");
        Ok(outcome)
    }

    /// Writes a new shard's file, then commits its index entry (the shard is promised only
    /// once both are durable).
    fn write_new(&self, id: &ShardId, owner: NodeId, bytes: &[u8], crc: u32) -> Result<()> {
        self.write_file(id, bytes)?;
        let meta = ShardMeta {
            len: bytes.len() as u64,
            crc,
            stored_at: now_secs(),
            owners: vec![owner],
        };
        if let Err(e) = self.write_entry(id, &meta) {
            // Not indexed, so not promised: take the file back (open would otherwise).
            let _ = fs::remove_file(self.shard_path(id));
            return Err(e);
        }
        Ok(())
    }

    /// Writes the file: temp, fsync, rename, fsync the fan-out dir.
    fn write_file(&self, id: &ShardId, bytes: &[u8]) -> Result<()> {
        let seq = self
            .tmp_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join("tmp").join(format!("{}.{seq}", id.to_hex()));
        let fan = self.fan_dir(id);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, e))?;
            file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
            file.sync_all().map_err(|e| Error::io(&tmp, e))?;
            if !fan.is_dir() {
                fs::create_dir_all(&fan).map_err(|e| Error::io(&fan, e))?;
                fsync_dir(&self.dir.join("data"))?;
            }
            let path = self.shard_path(id);
            fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            fsync_dir(&fan)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_entry(&self, id: &ShardId, meta: &ShardMeta) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
        {
            let mut table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            table
                .insert(&id.0, meta.encode().as_slice())
                .map_err(|e| self.idx_err(e))?;
        }
        txn.commit().map_err(|e| self.idx_err(e))
    }

    /// The index entry of `id`, if it is stored.
    ///
    /// # Errors
    /// [`Error::StoreIndex`], or [`Error::CorruptShard`] for an undecodable entry.
    pub fn has(&self, id: &ShardId) -> Result<Option<ShardMeta>> {
        self.meta(id)
    }

    fn meta(&self, id: &ShardId) -> Result<Option<ShardMeta>> {
        let txn = self.db.begin_read().map_err(|e| self.idx_err(e))?;
        let table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
        let Some(value) = table.get(&id.0).map_err(|e| self.idx_err(e))? else {
            return Ok(None);
        };
        ShardMeta::decode(value.value())
            .map(Some)
            .ok_or(Error::CorruptShard {
                id: *id,
                reason: "undecodable index entry",
            })
    }

    /// Reads and verifies the whole file of `id` against its index entry.
    fn read_verified(&self, id: &ShardId) -> Result<(Vec<u8>, ShardMeta)> {
        let meta = self.meta(id)?.ok_or(Error::ShardNotFound { id: *id })?;
        let path = self.shard_path(id);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // A delete may have raced this read: only an entry that is still there is missing.
                return Err(if self.meta(id)?.is_none() {
                    Error::ShardNotFound { id: *id }
                } else {
                    Error::CorruptShard {
                        id: *id,
                        reason: "file missing",
                    }
                });
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if file_len != meta.len {
            return Err(Error::CorruptShard {
                id: *id,
                reason: "wrong length",
            });
        }
        // meta.len ≤ MAX_SHARD_LEN (checked on put), so the allocation is bounded.
        let mut bytes =
            Vec::with_capacity(usize::try_from(meta.len.min(MAX_SHARD_LEN)).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        if bytes.len() as u64 != meta.len || crc32fast::hash(&bytes) != meta.crc {
            return Err(Error::CorruptShard {
                id: *id,
                reason: "CRC mismatch",
            });
        }
        Ok((bytes, meta))
    }

    /// The bytes of shard `id`, with their length and CRC verified.
    ///
    /// # Errors
    /// [`Error::ShardNotFound`]; [`Error::CorruptShard`] naming the shard when the file is
    /// missing, has the wrong length or fails its CRC; [`Error::Io`].
    pub fn get(&self, id: &ShardId) -> Result<Vec<u8>> {
        self.read_verified(id).map(|(bytes, _)| bytes)
    }

    /// `len` bytes of shard `id` from `offset` (fewer at the end of the shard).
    ///
    /// A CRC cannot verify part of a file, so a range read verifies the whole file (shards are
    /// at most [`MAX_SHARD_LEN`], normally 1 MiB) and returns the slice: a range read never
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

    /// Removes `requester` from the owners of `id`; the file is deleted when no owner is left.
    ///
    /// # Errors
    /// [`Error::ShardNotFound`]; [`Error::NotOwner`] when `requester` is not an owner (nothing
    /// changes); [`Error::Io`], [`Error::StoreIndex`].
    pub fn delete(&self, id: &ShardId, requester: NodeId) -> Result<()> {
        let mut counters = self.lock();
        let mut meta = self.meta(id)?.ok_or(Error::ShardNotFound { id: *id })?;
        let Some(pos) = meta.owners.iter().position(|o| *o == requester) else {
            return Err(Error::NotOwner { id: *id, requester });
        };
        meta.owners.remove(pos);
        if meta.owners.is_empty() {
            let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
            {
                let mut table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
                table.remove(&id.0).map_err(|e| self.idx_err(e))?;
            }
            txn.commit().map_err(|e| self.idx_err(e))?;
            counters.used = counters.used.saturating_sub(meta.len);
            counters.shards = counters.shards.saturating_sub(1);
            let path = self.shard_path(id);
            match fs::remove_file(&path) {
                Ok(()) => fsync_dir(&self.fan_dir(id))?,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                // The entry is gone, so the file is an orphan that the next open removes.
                Err(e) => tracing::warn!(shard = %id, error = %e, "cannot unlink deleted shard"),
            }
        } else {
            self.write_entry(id, &meta)?;
        }
        if let Some(used) = counters.per_owner.get_mut(&requester) {
            *used = used.saturating_sub(meta.len);
            if *used == 0 {
                counters.per_owner.remove(&requester);
            }
        }
        tracing::debug!(shard = %id, owner = %requester, "shard deleted");
        Ok(())
    }

    /// Reads every indexed shard and checks its length and CRC. Reports, repairs nothing: a
    /// corrupt or missing shard stays in the index until its owner re-puts or deletes it.
    ///
    /// # Errors
    /// [`Error::StoreIndex`] or [`Error::Io`] other than on the shard files themselves.
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
                    reason: "file missing",
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

    /// Bytes charged to `owner`.
    pub fn owner_usage(&self, owner: &NodeId) -> u64 {
        self.lock().per_owner.get(owner).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: Quotas = Quotas {
        capacity: 1 << 30,
        per_owner: 0,
    };

    fn shard(seed: u32, len: usize) -> (ShardId, Vec<u8>) {
        let mut bytes = Vec::with_capacity(len);
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes.push(x as u8);
        }
        (ShardId(*blake3::hash(&bytes).as_bytes()), bytes)
    }

    const ALICE: NodeId = NodeId([1; 32]);
    const BOB: NodeId = NodeId([2; 32]);

    #[test]
    fn put_get_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        let (id, bytes) = shard(1, 5000);
        assert_eq!(store.put(id, ALICE, &bytes).unwrap(), PutOutcome::Stored);
        assert_eq!(store.get(&id).unwrap(), bytes);
        assert_eq!(store.get_range(&id, 100, 50).unwrap(), &bytes[100..150]);
        assert_eq!(store.get_range(&id, 4990, 50).unwrap(), &bytes[4990..]);
        assert!(store.get_range(&id, 5001, 1).is_err());
        let meta = store.has(&id).unwrap().unwrap();
        assert_eq!(meta.len, 5000);
        assert_eq!(meta.crc, crc32fast::hash(&bytes));
        assert_eq!(meta.owners, vec![ALICE]);
        assert_eq!(store.usage().used, 5000);
        assert_eq!(
            store.put(id, ALICE, &bytes).unwrap(),
            PutOutcome::AlreadyStored
        );
        assert_eq!(store.owner_usage(&ALICE), 5000);
        let (other, _) = shard(2, 10);
        assert!(matches!(
            store.get(&other),
            Err(Error::ShardNotFound { .. })
        ));
        assert!(store.has(&other).unwrap().is_none());
    }

    #[test]
    fn wrong_hash_is_refused_before_touching_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        let (id, mut bytes) = shard(1, 100);
        bytes[0] ^= 1;
        let err = store.put(id, ALICE, &bytes).unwrap_err();
        assert!(
            matches!(err, Error::HashMismatch { expected, .. } if expected == id),
            "{err}"
        );
        assert_eq!(store.usage().shards, 0);
        assert_eq!(fs::read_dir(dir.path().join("data")).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_shard_is_refused_on_read_and_reported_by_scrub() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        let (id, bytes) = shard(1, 1000);
        let (good, good_bytes) = shard(2, 1000);
        store.put(id, ALICE, &bytes).unwrap();
        store.put(good, ALICE, &good_bytes).unwrap();
        let path = store.shard_path(&id);
        let mut damaged = bytes.clone();
        damaged[500] ^= 0x40;
        fs::write(&path, &damaged).unwrap();
        let err = store.get(&id).unwrap_err();
        assert!(
            matches!(err, Error::CorruptShard { id: i, .. } if i == id),
            "{err}"
        );
        assert!(err.to_string().contains(&id.to_hex()), "{err}");
        assert!(store.get_range(&id, 0, 10).is_err());
        let report = store.scrub().unwrap();
        assert_eq!(report.corrupt, vec![id]);
        assert!(report.missing.is_empty());
        assert_eq!(report.checked, 2);
        // Truncated also counts as corrupt.
        fs::write(&path, &bytes[..999]).unwrap();
        assert!(matches!(store.get(&id), Err(Error::CorruptShard { .. })));
        // A re-put of the right bytes repairs it.
        store.put(id, ALICE, &bytes).unwrap();
        assert_eq!(store.get(&id).unwrap(), bytes);
        assert!(store.scrub().unwrap().is_clean());
    }

    #[test]
    fn missing_file_is_reported_by_scrub_and_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = shard(1, 1000);
        {
            let store = ShardStore::open(dir.path(), BIG).unwrap();
            store.put(id, ALICE, &bytes).unwrap();
            fs::remove_file(store.shard_path(&id)).unwrap();
            let report = store.scrub().unwrap();
            assert_eq!(report.missing, vec![id]);
            assert!(matches!(
                store.get(&id),
                Err(Error::CorruptShard {
                    reason: "file missing",
                    ..
                })
            ));
        }
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        assert_eq!(store.recovery().missing, vec![id]);
    }

    #[test]
    fn owner_quota_and_capacity_have_their_own_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(
            dir.path(),
            Quotas {
                capacity: 3000,
                per_owner: 2000,
            },
        )
        .unwrap();
        let (a, ab) = shard(1, 1500);
        let (b, bb) = shard(2, 1000);
        let (c, cb) = shard(3, 1000);
        store.put(a, ALICE, &ab).unwrap();
        let err = store.put(b, ALICE, &bb).unwrap_err();
        assert!(
            matches!(err, Error::QuotaExceeded { owner, used: 1500, quota: 2000 } if owner == ALICE),
            "{err}"
        );
        store.put(b, BOB, &bb).unwrap();
        let err = store.put(c, BOB, &cb).unwrap_err();
        assert!(
            matches!(
                err,
                Error::StoreFull {
                    used: 2500,
                    capacity: 3000
                }
            ),
            "{err}"
        );
        assert!(store.has(&c).unwrap().is_none());
        // Sharing an existing shard charges the owner but not the capacity.
        assert!(matches!(
            store.put(b, ALICE, &bb),
            Err(Error::QuotaExceeded { .. })
        ));
        assert!(matches!(
            store.put(a, BOB, &ab),
            Err(Error::QuotaExceeded { .. })
        ));
        assert_eq!(store.usage().used, 2500);
    }

    #[test]
    fn shared_shard_lives_until_its_last_owner_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        let (id, bytes) = shard(1, 100);
        store.put(id, ALICE, &bytes).unwrap();
        assert_eq!(store.put(id, BOB, &bytes).unwrap(), PutOutcome::OwnerAdded);
        assert_eq!(store.usage().used, 100);
        assert_eq!(store.owner_usage(&BOB), 100);
        store.delete(&id, ALICE).unwrap();
        assert_eq!(store.get(&id).unwrap(), bytes);
        assert_eq!(store.has(&id).unwrap().unwrap().owners, vec![BOB]);
        store.delete(&id, BOB).unwrap();
        assert!(matches!(store.get(&id), Err(Error::ShardNotFound { .. })));
        assert!(!store.shard_path(&id).exists());
        assert_eq!(store.usage().used, 0);
        assert!(matches!(
            store.delete(&id, BOB),
            Err(Error::ShardNotFound { .. })
        ));
    }

    #[test]
    fn non_owner_delete_is_refused_and_the_shard_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        let (id, bytes) = shard(1, 100);
        store.put(id, ALICE, &bytes).unwrap();
        let err = store.delete(&id, BOB).unwrap_err();
        assert!(
            matches!(err, Error::NotOwner { id: i, .. } if i == id),
            "{err}"
        );
        assert_eq!(store.get(&id).unwrap(), bytes);
        assert_eq!(store.has(&id).unwrap().unwrap().owners, vec![ALICE]);
    }

    #[test]
    fn reopen_keeps_shards_and_counters_and_removes_debris() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = shard(1, 700);
        {
            let store = ShardStore::open(dir.path(), BIG).unwrap();
            store.put(id, ALICE, &bytes).unwrap();
        }
        // Debris of interrupted operations.
        fs::write(dir.path().join("tmp/whatever.0"), b"half").unwrap();
        let (orphan, orphan_bytes) = shard(9, 10);
        let fan = dir.path().join("data").join(&orphan.to_hex()[..2]);
        fs::create_dir_all(&fan).unwrap();
        fs::write(fan.join(orphan.to_hex()), &orphan_bytes).unwrap();
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        assert_eq!(store.recovery().temp_removed, 1);
        assert_eq!(store.recovery().orphans_removed, 1);
        assert!(store.recovery().missing.is_empty());
        assert_eq!(store.get(&id).unwrap(), bytes);
        assert_eq!(
            store.usage(),
            Usage {
                used: 700,
                capacity: 1 << 30,
                shards: 1
            }
        );
        assert_eq!(store.owner_usage(&ALICE), 700);
        assert!(store.has(&orphan).unwrap().is_none());
    }

    #[test]
    fn index_entry_round_trips_and_rejects_garbage() {
        let meta = ShardMeta {
            len: 5,
            crc: 7,
            stored_at: 9,
            owners: vec![ALICE, BOB],
        };
        assert_eq!(ShardMeta::decode(&meta.encode()), Some(meta.clone()));
        let enc = meta.encode();
        for cut in 0..enc.len() {
            assert_eq!(ShardMeta::decode(&enc[..cut]), None);
        }
        let mut bad = enc.clone();
        bad[0] = 2;
        assert_eq!(ShardMeta::decode(&bad), None);
    }

    /// The crash test's child role (see `testutil::CrashChild`).
    const CRASH_CHILD: &str = "shard_store::tests::crash_child";

    /// The child: puts and deletes shards as fast as it can, printing each operation after it
    /// returned, until it is killed.
    #[test]
    fn crash_child() {
        let Some((dir, seed)) = crate::testutil::crash_child_args(CRASH_CHILD) else {
            return;
        };
        let seed = seed as u32;
        let store = ShardStore::open(&dir, BIG).unwrap();
        let mut out = std::io::stdout().lock();
        for i in 0..100_000u32 {
            let n = seed.wrapping_mul(1000).wrapping_add(i);
            let (id, bytes) = shard(n, 1000 + (n as usize % 7) * 3000);
            store.put(id, ALICE, &bytes).unwrap();
            writeln!(out, "P {}", id.to_hex()).unwrap();
            out.flush().unwrap();
            if i % 3 == 2 {
                let (old, _) = shard(n - 1, 1000 + ((n - 1) as usize % 7) * 3000);
                writeln!(out, "d {}", old.to_hex()).unwrap();
                out.flush().unwrap();
                store.delete(&old, ALICE).unwrap();
                writeln!(out, "D {}", old.to_hex()).unwrap();
                out.flush().unwrap();
            }
        }
    }

    #[test]
    fn crash_at_random_points_keeps_every_returned_put() {
        use std::collections::HashSet;
        use std::io::BufRead;
        use std::process::Stdio;
        let runs = 50;
        let mut total_puts = 0;
        for run in 0..runs {
            let dir = tempfile::tempdir().unwrap();
            // Seed a few shards first, so recovery also sees pre-existing state.
            let mut child = crate::testutil::CrashChild::spawn(
                CRASH_CHILD,
                dir.path(),
                run as u64,
                Stdio::piped(),
            );
            let stdout = child.0.stdout.take().unwrap();
            // Kill after a varying number of completed operations, plus a varying delay, so the
            // kill lands at every point of put and delete.
            let ops_before_kill = 1 + (run * 7) % 9;
            let delay_us = (run as u64 * 379) % 3000;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let mut log = Vec::new();
            for line in lines.by_ref() {
                let line = line.unwrap();
                if line.starts_with("P ") || line.starts_with("d ") {
                    log.push(line);
                    if log.len() >= ops_before_kill {
                        break;
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_micros(delay_us));
            child.0.kill().unwrap();
            // Everything the child printed before dying returned to it.
            for line in lines {
                let Ok(line) = line else { break };
                if line.starts_with("P ") || line.starts_with("d ") {
                    log.push(line);
                }
            }
            child.0.wait().unwrap();
            // Puts that returned, minus deletes that started (a delete that did not return may
            // or may not have happened).
            let mut live = HashSet::new();
            for line in &log {
                let id = ShardId::from_hex(&line[2..]).unwrap();
                if line.starts_with("P ") {
                    live.insert(id);
                } else {
                    live.remove(&id);
                }
            }
            total_puts += log.iter().filter(|l| l.starts_with("P ")).count();
            let store = ShardStore::open(dir.path(), BIG).unwrap();
            assert!(
                store.recovery().missing.is_empty(),
                "run {run}: {:?}",
                store.recovery()
            );
            for id in &live {
                let bytes = store.get(id).unwrap_or_else(|e| panic!("run {run}: {e}"));
                assert_eq!(ShardId(*blake3::hash(&bytes).as_bytes()), *id);
            }
            let report = store.scrub().unwrap();
            assert!(report.is_clean(), "run {run}: {report:?}");
            // No file under a final name that is not a verified, indexed shard.
            for fan in fs::read_dir(dir.path().join("data")).unwrap() {
                for file in fs::read_dir(fan.unwrap().path()).unwrap() {
                    let path = file.unwrap().path();
                    let id =
                        ShardId::from_hex(path.file_name().unwrap().to_str().unwrap()).unwrap();
                    assert!(
                        store.has(&id).unwrap().is_some(),
                        "run {run}: unindexed {path:?}"
                    );
                    store.get(&id).unwrap();
                }
            }
            assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        }
        assert!(
            total_puts >= runs,
            "the children made progress: {total_puts} puts"
        );
    }
}
