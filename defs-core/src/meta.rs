//! The metadata DB: one redb file (`DIR/meta/meta.redb`) holding the namespace (inodes,
//! directory entries, xattrs), the dirty journal and a few counters. This module owns opening
//! the DB, the schema version check and migration, the table definitions, and the commit
//! protocol (group commit):
//!
//! ```text
//!  FUSE threads ──op──▶ MetaDb::write ── redb write txn, Durability::None ──▶ visible at once
//!                                                                 │ (committed_seq += 1)
//!  group-commit thread ── every COMMIT_INTERVAL, if committed_seq > durable_seq ──┐
//!  MetaDb::sync()      ── now ─────────────────────────────────────────────────────┴▶ empty
//!                         write txn with Durability::Immediate (fsync) ▶ durable_seq = seq
//! ```
//!
//! Non-durable redb commits live only in process memory, so every mutating operation also
//! appends a redo record (`meta/redo.rs`) to `DIR/meta/meta.oplog` ([`crate::oplog`]) inside its
//! write transaction, before the commit, and stores the record's LSN in `meta["lsn"]` in the
//! same transaction. The append is one `pwrite(2)`, no fsync: the page cache keeps it if the
//! process dies. Open replays every record above the DB's LSN. A durable commit (group commit,
//! `sync`) is a checkpoint: it covers every LSN committed before it, and the log is then reset.
//!
//! # Deferred changes
//!
//! A [`MetaDb::setattr`] that changes no size (chmod, chown, utimensat: three per file
//! `rsync -a` copies), the size and times a write or truncate saves for a file that is
//! already dirty ([`MetaDb::save_written`]), and the [`MetaDb::create`] of a new regular file
//! (with an inode number left in the allocator's reservation) do not commit: holding the DB's
//! writer lock (taken by every write transaction, so none runs between), each reads what it
//! needs in a read transaction, appends its redo record like any operation, and keeps its
//! inputs in memory (`meta/deferred.rs`, at most [`MAX_DEFERRED`]). The next write
//! transaction applies every waiting change first, in LSN order, before its own operation (its
//! LSN is higher), and so does every checkpoint, which then also writes `meta["lsn"]`; a
//! create is applied by the same code that commits one, with the allocator forced to its
//! logged inode number, as replay does. `getattr`, `lookup`, `content`, `readlink`,
//! `parent_of`, the xattr reads and `mark_dirty` lay the waiting changes over what they read (a
//! waiting create answers for its inode and name, and counts in its directory's size and
//! times); readers that list or walk (readdir, the journal's listings, snapshots) commit them
//! first. So a deferred change is visible at once, survives a crash of the process (its
//! record is replayed like any other: replay commits each record) and is durable at the next
//! checkpoint, exactly like a committed one: only the redb commit is shared.
//!
//! # Layers
//!
//! The metadata modules form layers; each imports only modules of the layers below it
//! (`ci/modgraph` checks that no two import each other):
//!
//! 1. values and records: `namespace::types` (what the API speaks), `namespace::record` (the
//!    inode record), `meta::schema` (tables, keys, schema check and migration), `meta::alloc`
//!    (inode numbers);
//! 2. changes inside one write transaction, with no DB handle: `namespace::tables`,
//!    `journal::entry` (the journal's rows), `namespace::txn` (create, purge, setattr), and the
//!    redo records (`meta::redo`) and waiting list (`meta::deferred`) built on them;
//! 3. this module: [`MetaDb`], its locks and the commit protocol above;
//! 4. the operations, methods of [`MetaDb`]: [`crate::namespace`] (POSIX),
//!    [`crate::journal`] (dirty data and uploads), [`crate::snapshot`];
//! 5. `meta::open`: opening, which replays the log through the operations of layer 4.

use std::path::{Path, PathBuf};
use std::sync::Condvar;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::error::{Error, Result};
use crate::namespace::record::InodeRecord;
use crate::namespace::tables::load;
use crate::namespace::txn::apply_set;
use crate::namespace::types::{Attr, FileKind, NewInode, SetAttr, Timestamp};
use crate::oplog::OpLog;
use crate::sync::{Arc, Mutex};
use crate::types::InodeNo;
pub use alloc::INO_BLOCK;
use alloc::{AllocRollback, InoAlloc};
pub(crate) use deferred::Deferred;
use deferred::{Change, DeferredOp};
use schema::{DIRENTS, DbContext, INODES, KEY_LSN, META, counter, meta_value};
pub use schema::{SCHEMA_VERSION, TableUsage};

/// How often the group-commit thread makes non-durable commits durable. One second, like
/// ext4's and XFS's order of magnitude (ext4: 5 s): long enough that a burst of small-file
/// creates costs one fsync per second, short enough that a crash loses at most about a second
/// of metadata that nobody fsync'd.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The DB file's name inside the meta directory.
pub const DB_FILE: &str = "meta.redb";

/// The redo log's name inside the meta directory.
pub const LOG_FILE: &str = "meta.oplog";

/// A log longer than this is checkpointed by the operation that grew it (normally the group
/// commit resets it every [`COMMIT_INTERVAL`] long before).
pub const LOG_CHECKPOINT_BYTES: u64 = 64 << 20;

/// The owner kind written in the log header.
const LOG_KIND: [u8; 4] = *b"META";

/// The commit state shared by operations, `sync` and the group-commit thread.
struct CommitState {
    /// Commits made (non-durable ones included).
    committed: AtomicU64,
    /// The highest `committed` value known durable; the mutex also serialises durable commits so
    /// that concurrent `sync` calls share one fsync.
    durable: Mutex<u64>,
    /// The first durable-commit failure, sticky until reopen.
    failed: Mutex<Option<String>>,
    /// Set to stop the group-commit thread; paired with `wake`.
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The redo log and its position, behind one lock taken inside a write transaction (lock
/// order: the writer lock, then this, then the allocator).
struct LogState {
    log: OpLog,
    /// The LSN of the last committed operation.
    last: u64,
    /// Replaying at open: operations commit with the next LSN but append nothing.
    replaying: bool,
    /// An append or reset failed: the file's state is unknown, so operations commit durably
    /// (no log needed) until a checkpoint manages to reset it.
    broken: bool,
}

/// At most this many changes wait for a write transaction; one more commits them all (a bound
/// on memory and on what a reader overlays: a `cp -a` defers four per file, so a copy commits
/// once every 64 files).
pub(crate) const MAX_DEFERRED: usize = 256;

struct Inner {
    db: Database,
    /// Held by every writer from before its write transaction begins until it commits or
    /// aborts (redb's own writer lock is then never contended), and by
    /// [`MetaDb::defer_setattr`], which so orders its change among the commits without opening
    /// a write transaction: beginning and aborting one cost more than the change itself.
    /// Never held while calling [`Inner::sync`], which takes it.
    writer: Mutex<()>,
    alloc: Mutex<InoAlloc>,
    log: Mutex<LogState>,
    /// Lock order: the writer lock, then the log, then this.
    deferred: Mutex<Deferred>,
    path: PathBuf,
    state: CommitState,
}

/// The metadata DB. `Send + Sync`: share it (`Arc<MetaDb>`) between FUSE threads; redb
/// serialises writers, readers never block.
///
/// Every operation is one redb transaction: atomic, and visible to every later operation at
/// once. Once it returns it survives a crash of the process (its redo record is in
/// `meta.oplog`, replayed at open). It survives an OS crash or power loss when
/// [`MetaDb::sync`] returns, or within about [`COMMIT_INTERVAL`] (the group-commit thread),
/// whichever comes first. Dropping the DB (or [`MetaDb::close`])
/// makes everything durable.
///
/// ```
/// use defs_core::{MetaDb, NewInode, Timestamp};
/// use defs_core::types::InodeNo;
///
/// # fn main() -> defs_core::Result<()> {
/// let dir = tempfile::tempdir().map_err(|e| defs_core::Error::io("tempdir", e))?;
/// let db = MetaDb::open(dir.path())?;
/// let owner = NewInode { perm: 0o644, uid: 1000, gid: 1000 };
/// let (file, created) = db.create(InodeNo::ROOT, b"notes.txt", &owner, true, Timestamp::now())?;
/// assert!(created);
/// assert_eq!(db.lookup(InodeNo::ROOT, b"notes.txt")?.ino, file.ino);
/// db.sync()?; // durable now (fsync), not just within the group-commit interval
/// # Ok(()) }
/// ```
pub struct MetaDb {
    inner: Arc<Inner>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for MetaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaDb")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl MetaDb {
    /// Replay: the next inode allocation must hand out `ino` (None: must not allocate).
    pub(crate) fn force_next_ino(&self, ino: Option<InodeNo>) -> Result<()> {
        self.inner.force_ino(Some(ino.map(|i| i.0))).map(drop)
    }

    /// Replay: checks that a forced inode number was used, and ends forcing.
    pub(crate) fn finish_forced_ino(&self) -> Result<()> {
        let mut a = self.inner.alloc.lock().map_err(|_| Error::Closed)?;
        let left = a.forced.take();
        // Later allocations re-read next_ino from the DB.
        a.next = 0;
        a.reserved = 0;
        match left {
            Some(Some(ino)) => Err(Error::InvalidArgument {
                what: format!("the logged inode number {ino} was not allocated"),
            }),
            _ => Ok(()),
        }
    }

    /// The DB file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Makes every operation that returned before this call durable (one fsync, shared with
    /// concurrent callers). Call it for fsync/syncfs.
    ///
    /// # Errors
    /// [`Error::NotDurable`] if this or an earlier durable commit failed: from then on the DB
    /// never claims durability again until it is reopened.
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// Stops the group-commit thread and makes everything durable.
    ///
    /// # Errors
    /// As [`MetaDb::sync`].
    pub fn close(self) -> Result<()> {
        self.stop_committer();
        self.inner.sync()
    }

    fn stop_committer(&self) {
        if let Ok(mut stop) = self.inner.state.stop.lock() {
            *stop = true;
        }
        self.inner.state.wake.notify_all();
        let handle = self.committer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Runs `f` in one write transaction committed without fsync (see the module doc), after
    /// appending the redo record `op` builds from `f`'s result and storing its LSN in the same
    /// transaction. On `Err` nothing of it is applied or logged.
    pub(crate) fn write<'a, T>(
        &self,
        op: impl FnOnce(&T) -> redo::LogOp<'a>,
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        let writer = self.inner.lock_writer();
        let mut txn = self.inner.db.begin_write().ctx("beginning a write")?;
        txn.set_durability(Durability::None)
            .ctx("choosing durability")?;
        // Writers are serialised, so nobody else allocates until this one ends.
        // Unless the commit succeeds (an error, or a panic unwinding through here), the
        // allocator goes back with the transaction: its reservation (if it made one) was not
        // written, and its numbers were not used.
        let mut alloc_rollback = AllocRollback::new(&self.inner.alloc);
        // Deferred changes come first: they returned before this operation began.
        let applied = match self.inner.apply_deferred(&txn) {
            Ok(applied) => applied,
            Err(e) => return txn.abort().ctx("aborting").and(Err(e)),
        };
        let value = match f(&txn) {
            Ok(value) => value,
            Err(e) => return txn.abort().ctx("aborting").and(Err(e)),
        };
        let mut log = match self.inner.log.lock() {
            Ok(log) => log,
            Err(_) => return txn.abort().ctx("aborting").and(Err(Error::Closed)),
        };
        let Some(lsn) = log.last.checked_add(1) else {
            return txn.abort().ctx("aborting").and(Err(Error::Corrupt {
                what: "metadata DB",
                reason: "log sequence numbers exhausted".into(),
            }));
        };
        let stored = (|| {
            let mut meta = txn.open_table(META).ctx("opening the meta table")?;
            meta.insert(KEY_LSN, lsn).ctx("writing lsn")?;
            Ok(())
        })();
        if let Err(e) = stored {
            return txn.abort().ctx("aborting").and(Err(e));
        }
        let before = (log.log.len(), log.log.last_lsn());
        let mut appended = false;
        let mut durable = false;
        if !log.replaying {
            if log.broken || log.log.last_lsn() != log.last {
                durable = true;
            } else {
                let mut payload = Vec::with_capacity(64);
                op(&value).encode(&mut payload);
                match log.log.append(&payload) {
                    Ok(_) => appended = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "metadata op log: append failed; committing durably");
                        log.broken = true;
                        durable = true;
                    }
                }
            }
        }
        if durable && let Err(e) = txn.set_durability(Durability::Immediate) {
            drop(log);
            return txn
                .abort()
                .ctx("aborting")
                .and(Err(e).ctx("choosing durability"));
        }
        match txn.commit().ctx("committing") {
            Ok(()) => {
                alloc_rollback.disarm();
                log.last = lsn;
                self.inner.forget_deferred(applied);
                if durable && log.log.reset(lsn).is_ok() {
                    log.broken = false;
                }
                let big = log.log.len() > LOG_CHECKPOINT_BYTES;
                drop(log);
                drop(writer);
                self.inner.state.committed.fetch_add(1, Ordering::SeqCst);
                if big {
                    // Errors are logged and made sticky by sync().
                    let _ = self.inner.sync();
                }
                Ok(value)
            }
            Err(e) => {
                if appended && let Err(err) = log.log.rollback(before.0, before.1) {
                    tracing::warn!(error = %err, "metadata op log: could not take back a record");
                    log.broken = true;
                }
                drop(log);
                Err(e)
            }
        }
    }

    /// Runs `f` in one write transaction committed durably (fsync), as a checkpoint: the log
    /// is reset after it, so `f` needs no redo record (snapshot restore). With `published`
    /// (a root record's seq), the same transaction records the state it leaves as that
    /// record's: `published_seq` and `published_lsn` (a follower's apply).
    pub(crate) fn write_durable<T>(
        &self,
        published: Option<u64>,
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        let _writer = self.inner.lock_writer();
        let txn = self.inner.db.begin_write().ctx("beginning a write")?;
        let applied = match self.inner.apply_deferred(&txn) {
            Ok(applied) => applied,
            Err(e) => return txn.abort().ctx("aborting").and(Err(e)),
        };
        let value = match f(&txn) {
            Ok(value) => value,
            Err(e) => return txn.abort().ctx("aborting").and(Err(e)),
        };
        let mut log = self.inner.log.lock().map_err(|_| Error::Closed)?;
        let lsn = log.last.saturating_add(1);
        {
            let mut meta = txn.open_table(META).ctx("opening the meta table")?;
            meta.insert(KEY_LSN, lsn).ctx("writing lsn")?;
            if let Some(seq) = published {
                meta.insert(schema::KEY_PUBLISHED_SEQ, seq)
                    .ctx("writing published_seq")?;
                meta.insert(schema::KEY_PUBLISHED_LSN, lsn)
                    .ctx("writing published_lsn")?;
            }
        }
        txn.commit().ctx("durable commit")?;
        log.last = lsn;
        self.inner.forget_deferred(applied);
        log.broken = log.log.reset(lsn).is_err();
        drop(log);
        self.inner.state.committed.fetch_add(1, Ordering::SeqCst);
        Ok(value)
    }

    /// The inode number allocator, for operations that create inodes.
    pub(crate) fn ino_alloc(&self) -> &Mutex<InoAlloc> {
        &self.inner.alloc
    }

    /// Makes the next allocation re-read and re-reserve `next_ino` in the DB (after a restore
    /// rewrote it).
    pub(crate) fn forget_ino_reservation(&self) {
        if let Ok(mut a) = self.inner.alloc.lock() {
            a.reserved = 0;
        }
    }

    /// Logs `set` for `ino` and keeps it in memory until the next write transaction or
    /// checkpoint applies it: one log append instead of a redb commit. With `only_if_dirty`
    /// it waits only while the journal holds `ino` dirty with no upload of its generation in
    /// flight (a saved size is part of the content: see [`MetaDb::save_written`]). Returns the
    /// new attributes, or `None` when the change cannot wait (replay, a broken log,
    /// [`MAX_DEFERRED`] changes waiting, not dirty as required): the caller then commits it as
    /// usual.
    pub(crate) fn defer_setattr(
        &self,
        ino: InodeNo,
        set: &SetAttr,
        now: Timestamp,
        only_if_dirty: bool,
    ) -> Result<Option<Attr>> {
        // Holding the writer lock, no write transaction or checkpoint runs between reading the
        // record and logging the change: changes apply in LSN order, as replay applies them. A
        // read transaction begun now sees every commit so far.
        let writer = self.inner.lock_writer();
        let txn = self.inner.db.begin_read().ctx("beginning a read")?;
        let result = (|| -> Result<Option<(Attr, bool)>> {
            // Every committer forgets the changes it applied before it lets go of the writer
            // lock, so under it each waiting change should be above the DB's LSN; the filter
            // costs one read and keeps that an assumption nothing here depends on.
            let db_lsn = counter(
                &txn.open_table(META).ctx("opening the meta table")?,
                KEY_LSN,
            )?;
            let (mut rec, created) = {
                let d = self.inner.deferred.lock().map_err(|_| Error::Closed)?;
                if d.entries.len() >= MAX_DEFERRED {
                    return Ok(None);
                }
                match d.pending_create(db_lsn, |e| e.creates_ino(ino)) {
                    Some(op) => (d.created_record(op)?, true),
                    None => {
                        let inodes = txn.open_table(INODES).ctx("opening inodes")?;
                        let mut rec = load(&inodes, ino)?;
                        d.lay_over(ino, db_lsn, &mut rec)?;
                        (rec, false)
                    }
                }
            };
            apply_set(&mut rec, ino, set, now)?;
            // A waiting create is dirty with no upload in flight: an upload begins with a
            // write transaction, which would have applied it.
            if only_if_dirty && !created && !crate::journal::entry::dirty_in(&txn, ino, &rec)? {
                return Ok(None);
            }
            let logged = self.log_deferred(
                &redo::LogOp::Setattr {
                    ino,
                    set: *set,
                    now,
                },
                |lsn| DeferredOp {
                    lsn,
                    ino,
                    now,
                    change: Change::Set(*set),
                },
            )?;
            Ok(logged.map(|big| (rec.attr(ino), big)))
        })();
        drop(txn);
        drop(writer);
        self.deferred_done(result)
    }

    /// Logs a regular file `name` in `parent` as [`MetaDb::create`] would make it, and keeps it
    /// in memory until the next write transaction or checkpoint commits it: one log append
    /// instead of a redb commit, with an inode number from the allocator's reservation.
    /// Returns its attributes, or `None` when the create cannot wait (the name exists or is
    /// being created, the parent is no live directory, no reserved inode number is left, or as
    /// for [`MetaDb::defer_setattr`]): the caller then commits it as usual, which also gives
    /// every refusal its error.
    pub(crate) fn defer_create(
        &self,
        parent: InodeNo,
        name: &[u8],
        init: &NewInode,
        exclusive: bool,
        now: Timestamp,
    ) -> Result<Option<Attr>> {
        let writer = self.inner.lock_writer();
        let txn = self.inner.db.begin_read().ctx("beginning a read")?;
        let result = (|| -> Result<Option<(Attr, bool)>> {
            {
                let d = self.inner.deferred.lock().map_err(|_| Error::Closed)?;
                if d.entries.len() >= MAX_DEFERRED
                    || d.entries.iter().any(|e| e.creates_name(parent, name))
                {
                    return Ok(None);
                }
            }
            // Any doubt about the parent (missing: maybe a waiting create itself; no
            // directory; removed) goes the committed way, which gives the refusal its error.
            let inodes = txn.open_table(INODES).ctx("opening inodes")?;
            match load(&inodes, parent) {
                Ok(p) if p.kind == FileKind::Directory && p.nlink > 0 => {}
                _ => return Ok(None),
            }
            let dirents = txn.open_table(DIRENTS).ctx("opening dirents")?;
            if dirents
                .get((parent.0, name))
                .ctx("reading a dirent")?
                .is_some()
            {
                return Ok(None);
            }
            // Taken before the append, so that nothing can fail between a logged create and
            // its number being spoken for; given back if the create does not wait after all.
            let Some(ino) = self.take_reserved_ino()? else {
                return Ok(None);
            };
            let logged = self.log_deferred(
                &redo::LogOp::Create {
                    parent,
                    name,
                    init: *init,
                    exclusive,
                    now,
                    ino: Some(ino),
                },
                |lsn| DeferredOp {
                    lsn,
                    ino,
                    now,
                    change: Change::Create {
                        parent,
                        name: name.to_vec(),
                        init: *init,
                        exclusive,
                    },
                },
            )?;
            let Some(big) = logged else {
                self.give_back_ino(ino)?;
                return Ok(None);
            };
            Ok(Some((deferred::new_file_record(init, now)?.attr(ino), big)))
        })();
        drop(txn);
        drop(writer);
        self.deferred_done(result)
    }

    /// Takes the next inode number when the allocator's reservation has one left (no DB
    /// write needed). The writer lock held.
    fn take_reserved_ino(&self) -> Result<Option<InodeNo>> {
        let mut a = self.inner.alloc.lock().map_err(|_| Error::Closed)?;
        if a.forced.is_some() || a.next >= a.reserved {
            return Ok(None);
        }
        a.next += 1;
        Ok(Some(InodeNo(a.next - 1)))
    }

    /// Gives back `ino`, taken by [`MetaDb::take_reserved_ino`] under the same writer lock
    /// and used by nothing.
    fn give_back_ino(&self, ino: InodeNo) -> Result<()> {
        let mut a = self.inner.alloc.lock().map_err(|_| Error::Closed)?;
        if a.next == ino.0 + 1 {
            a.next = ino.0;
        }
        Ok(())
    }

    /// The writer lock held: appends `op`'s redo record with the next LSN and puts what
    /// `entry` makes of that LSN in the waiting list. `None` when the change cannot wait
    /// (replay, a broken log, a failed durable commit): nothing was logged. `Some(big)` says
    /// whether the log has grown past [`LOG_CHECKPOINT_BYTES`].
    fn log_deferred(
        &self,
        op: &redo::LogOp<'_>,
        entry: impl FnOnce(u64) -> DeferredOp,
    ) -> Result<Option<bool>> {
        if self
            .inner
            .state
            .failed
            .lock()
            .map_err(|_| Error::Closed)?
            .is_some()
        {
            // After a failed durable commit an operation must fail as a commit would.
            return Ok(None);
        }
        let mut log = self.inner.log.lock().map_err(|_| Error::Closed)?;
        if log.replaying || log.broken || log.log.last_lsn() != log.last {
            return Ok(None);
        }
        let Some(lsn) = log.last.checked_add(1) else {
            return Ok(None);
        };
        let mut payload = Vec::with_capacity(64);
        op.encode(&mut payload);
        if let Err(e) = log.log.append(&payload) {
            tracing::warn!(error = %e, "metadata op log: append failed; committing durably");
            log.broken = true;
            return Ok(None);
        }
        log.last = lsn;
        // Logged: from here nothing may fail, or the log would hold an operation that
        // returned an error. The list holds plain data, so a poisoned lock is taken as it is.
        self.inner
            .deferred
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entries
            .push(entry(lsn));
        Ok(Some(log.log.len() > LOG_CHECKPOINT_BYTES))
    }

    /// After a deferred change (the writer lock let go): counts it as a commit and
    /// checkpoints when the log has grown big.
    fn deferred_done(&self, result: Result<Option<(Attr, bool)>>) -> Result<Option<Attr>> {
        let Some((attr, big)) = result? else {
            return Ok(None);
        };
        self.inner.state.committed.fetch_add(1, Ordering::SeqCst);
        if big {
            // Errors are logged and made sticky by sync().
            let _ = self.inner.sync();
        }
        Ok(Some(attr))
    }

    /// Reads one inode record with `f` (which returns the inode and its record) and lays the
    /// deferred changes of that inode over it; unless `waiting`, given the waiting list and
    /// the DB's LSN, answers from a waiting create that redb does not hold yet.
    pub(crate) fn read_attr(
        &self,
        waiting: impl Fn(&Deferred, u64) -> Option<Result<Attr>>,
        f: impl Fn(&ReadTransaction) -> Result<(InodeNo, InodeRecord)>,
    ) -> Result<Attr> {
        self.read_deferred(
            f,
            |found| found.map(|(ino, rec)| rec.attr(ino)),
            |d, db_lsn, found| {
                if let Some(answer) = waiting(d, db_lsn) {
                    return answer;
                }
                let (ino, mut rec) = found?;
                d.lay_over(ino, db_lsn, &mut rec)?;
                Ok(rec.attr(ino))
            },
        )
    }

    /// Reads with `f` in a read transaction, unless `ino` was made by a waiting create that
    /// the transaction does not hold yet: then `from` answers from that create (with the
    /// waiting list).
    pub(crate) fn read_or_created<T>(
        &self,
        ino: InodeNo,
        f: impl Fn(&ReadTransaction) -> Result<T>,
        from: impl Fn(&Deferred, &DeferredOp) -> Result<T>,
    ) -> Result<T> {
        self.read_deferred(
            f,
            |found| found,
            |d, db_lsn, found| match d.pending_create(db_lsn, |e| e.creates_ino(ino)) {
                Some(op) => from(d, op),
                None => found,
            },
        )
    }

    /// Answers with `f` from the record of `ino`: redb's, or the one a waiting create makes
    /// (with the setattrs that followed it), so a waiting file is answered by the same code
    /// as a committed one.
    pub(crate) fn read_record<T>(
        &self,
        ino: InodeNo,
        f: impl Fn(&InodeRecord) -> Result<T>,
    ) -> Result<T> {
        self.read_or_created(
            ino,
            |txn| f(&load(&txn.open_table(INODES).ctx("opening inodes")?, ino)?),
            |d, op| f(&d.created_record(op)?),
        )
    }

    /// Reads with `f` in a read transaction, then makes the answer: with `plain` from `f`'s
    /// result alone when nothing was waiting as the read began (a change deferred since is
    /// concurrent with the read), else with `over`, which holds the waiting list and gets the
    /// DB's LSN in that transaction.
    fn read_deferred<T, U>(
        &self,
        f: impl Fn(&ReadTransaction) -> Result<T>,
        plain: impl FnOnce(Result<T>) -> Result<U>,
        over: impl Fn(&Deferred, u64, Result<T>) -> Result<U>,
    ) -> Result<U> {
        loop {
            let (epoch, any) = {
                let d = self.inner.deferred.lock().map_err(|_| Error::Closed)?;
                (d.epoch, !d.entries.is_empty())
            };
            let (found, db_lsn) = self.read(|txn| Ok((f(txn), meta_value(txn, KEY_LSN)?)))?;
            if !any {
                return plain(found);
            }
            let d = self.inner.deferred.lock().map_err(|_| Error::Closed)?;
            if d.epoch != epoch {
                // Changes were forgotten meanwhile: those this read's snapshot predates are
                // gone from the list, so read again.
                continue;
            }
            return over(&d, db_lsn, found);
        }
    }

    /// Commits waiting creates (and every other waiting change) to redb, so that a plain read
    /// transaction sees every name: for readers that list or walk (readdir, the journal).
    pub(crate) fn settle_creates(&self) -> Result<()> {
        let any = self
            .inner
            .deferred
            .lock()
            .map_err(|_| Error::Closed)?
            .has_creates();
        if any { self.flush_deferred() } else { Ok(()) }
    }

    /// Commits the deferred changes to redb (no log record: they have theirs), so
    /// that a plain read transaction sees them. For readers that walk whole tables (snapshots).
    pub(crate) fn flush_deferred(&self) -> Result<()> {
        if self
            .inner
            .deferred
            .lock()
            .map_err(|_| Error::Closed)?
            .entries
            .is_empty()
        {
            return Ok(());
        }
        self.commit_unlogged(&[], |_| Ok(()))
    }

    /// The LSN of the last operation that returned (committed, or waiting as a deferred
    /// change): it grows with every change of the DB's state and with nothing else.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn lsn(&self) -> Result<u64> {
        Ok(self.inner.log.lock().map_err(|_| Error::Closed)?.last)
    }

    /// A counter of the meta table (0 when absent).
    pub(crate) fn meta_counter(&self, key: &str) -> Result<u64> {
        self.read(|txn| meta_value(txn, key))
    }

    /// Sets counters of the meta table, which are bookkeeping, not state (no redo record, no
    /// new LSN), and makes them durable together with every operation before them.
    ///
    /// # Errors
    /// Db, [`Error::NotDurable`] (as [`MetaDb::sync`]).
    pub(crate) fn set_counters_durable(&self, pairs: &[(&'static str, u64)]) -> Result<()> {
        self.write_bookkeeping(pairs, |_| Ok(()))
    }

    /// As [`MetaDb::set_counters_durable`], with `f`'s bookkeeping changes (the object
    /// ledger's) in the same transaction: no redo record, durable when this returns.
    pub(crate) fn write_bookkeeping<T>(
        &self,
        pairs: &[(&'static str, u64)],
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        let value = self.commit_unlogged(pairs, f)?;
        self.sync()?;
        Ok(value)
    }

    /// One write transaction, committed without fsync, that applies the deferred changes and
    /// sets `pairs` in the meta table with no redo record of its own: the deferred changes
    /// have theirs, and the counters are bookkeeping that a crash may lose.
    fn commit_unlogged<T>(
        &self,
        pairs: &[(&'static str, u64)],
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        let _writer = self.inner.lock_writer();
        let mut txn = self.inner.db.begin_write().ctx("beginning a write")?;
        txn.set_durability(Durability::None)
            .ctx("choosing durability")?;
        let applied = match self.inner.apply_deferred(&txn) {
            Ok(applied) => applied,
            Err(e) => return txn.abort().ctx("aborting").and(Err(e)),
        };
        let value = match f(&txn) {
            Ok(value) => value,
            Err(e) => return txn.abort().ctx("aborting").and(Err(e)),
        };
        let log = self.inner.log.lock().map_err(|_| Error::Closed)?;
        {
            let mut meta = txn.open_table(META).ctx("opening the meta table")?;
            for &(key, value) in pairs {
                meta.insert(key, value).ctx("writing a counter")?;
            }
            // Under the writer lock every logged operation is committed or applied here.
            meta.insert(KEY_LSN, log.last).ctx("writing lsn")?;
        }
        txn.commit().ctx("committing")?;
        self.inner.forget_deferred(applied);
        drop(log);
        self.inner.state.committed.fetch_add(1, Ordering::SeqCst);
        Ok(value)
    }

    /// Runs `f` in one read transaction.
    /// What each table of the DB holds, in redb's figures (what the metadata costs per entry).
    ///
    /// # Errors
    /// Db.
    pub fn table_usage(&self) -> Result<Vec<TableUsage>> {
        self.read(schema::table_usage)
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.inner.db.begin_read().ctx("beginning a read")?;
        f(&txn)
    }
}

impl Drop for MetaDb {
    fn drop(&mut self) {
        self.stop_committer();
        if let Err(e) = self.inner.sync() {
            tracing::error!(error = %e, "metadata DB: final durable commit failed");
        }
    }
}

impl Inner {
    /// Takes the writer lock. It guards no data (a writer that panicked left nothing half-done
    /// behind it: redb drops its transaction), so a poisoned lock is taken as it is.
    fn lock_writer(&self) -> crate::sync::MutexGuard<'_, ()> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies every deferred change inside `txn` (whose caller holds the writer
    /// lock, so none is added meanwhile). Returns the LSN of the last one applied, for
    /// [`Inner::forget_deferred`] after the commit; `None` when there were none.
    fn apply_deferred(&self, txn: &WriteTransaction) -> Result<Option<u64>> {
        let entries = {
            let d = self.deferred.lock().map_err(|_| Error::Closed)?;
            if d.entries.is_empty() {
                return Ok(None);
            }
            d.entries.clone()
        };
        let mut t = crate::namespace::tables::Tables::new(txn, &self.alloc);
        for e in &entries {
            match &e.change {
                Change::Set(set) => apply_set(t.rec(e.ino)?, e.ino, set, e.now)?,
                Change::Create {
                    parent,
                    name,
                    init,
                    exclusive,
                } => {
                    // The create runs as it would have committed, on the state every earlier
                    // change left, with the inode number it logged.
                    t.flush()?;
                    self.force_ino(Some(Some(e.ino.0)))?;
                    let made = crate::namespace::txn::create_in(
                        txn,
                        &self.alloc,
                        *parent,
                        name,
                        init,
                        *exclusive,
                        e.now,
                    );
                    let left = self.force_ino(None)?;
                    let (attr, created) = made?;
                    if !created || attr.ino != e.ino || left.is_some_and(|l| l.is_some()) {
                        return Err(Error::Corrupt {
                            what: "metadata DB",
                            reason: format!(
                                "the deferred create of inode {} (LSN {}) did not create it",
                                e.ino, e.lsn
                            ),
                        });
                    }
                    t = crate::namespace::tables::Tables::new(txn, &self.alloc);
                }
            }
        }
        t.flush()?;
        Ok(entries.last().map(|e| e.lsn))
    }

    /// Sets what the allocator is forced to (see [`InoAlloc`]: `Some(Some(n))` hands out
    /// exactly `n` next, `Some(None)` refuses to allocate, `None` allocates normally); returns
    /// what was forced before.
    fn force_ino(&self, forced: Option<Option<u64>>) -> Result<Option<Option<u64>>> {
        let mut a = self.alloc.lock().map_err(|_| Error::Closed)?;
        Ok(std::mem::replace(&mut a.forced, forced))
    }

    /// The transaction that applied deferred changes up to LSN `applied` committed: they are
    /// in redb now.
    fn forget_deferred(&self, applied: Option<u64>) {
        let Some(applied) = applied else { return };
        if let Ok(mut d) = self.deferred.lock() {
            d.entries.retain(|e| e.lsn > applied);
            d.epoch = d.epoch.wrapping_add(1);
        }
    }

    fn sync(&self) -> Result<()> {
        let state = &self.state;
        let target = state.committed.load(Ordering::SeqCst);
        let mut durable = state.durable.lock().map_err(|_| Error::Closed)?;
        if let Some(reason) = state.failed.lock().map_err(|_| Error::Closed)?.clone() {
            return Err(Error::NotDurable { reason });
        }
        if *durable >= target {
            // Someone else's fsync, which started after our operations returned, covered us.
            return Ok(());
        }
        let result = (|| -> Result<u64> {
            let _writer = self.lock_writer();
            let txn = self.db.begin_write().ctx("beginning a durable commit")?;
            // Deferred changes are logged operations like any other: the checkpoint
            // includes them before it drops their records.
            let applied = self.apply_deferred(&txn)?;
            // With the writer lock held no operation is between its append and its commit, so
            // this checkpoint covers exactly the LSNs up to `log.last`.
            let mut log = self.log.lock().map_err(|_| Error::Closed)?;
            let now = state.committed.load(Ordering::SeqCst);
            if applied.is_some() {
                let mut meta = txn.open_table(META).ctx("opening the meta table")?;
                meta.insert(KEY_LSN, log.last).ctx("writing lsn")?;
            }
            // Durability::Immediate is the default: this commit persists every non-durable
            // commit before it.
            txn.commit().ctx("durable commit")?;
            self.forget_deferred(applied);
            let lsn = log.last;
            match log.log.reset(lsn) {
                Ok(()) => log.broken = false,
                Err(e) => {
                    tracing::warn!(error = %e, "metadata op log: reset failed; committing durably until it works");
                    log.broken = true;
                }
            }
            Ok(now)
        })();
        match result {
            Ok(now) => {
                *durable = now;
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(error = %reason, "metadata DB: durable commit failed");
                if let Ok(mut failed) = state.failed.lock() {
                    failed.get_or_insert(reason.clone());
                }
                Err(Error::NotDurable { reason })
            }
        }
    }
}

fn group_commit_loop(inner: &Inner, interval: Duration) {
    let state = &inner.state;
    loop {
        {
            let Ok(stop) = state.stop.lock() else { return };
            let Ok((stop, _)) = state.wake.wait_timeout_while(stop, interval, |s| !*s) else {
                return;
            };
            if *stop {
                return;
            }
        }
        let durable = state.durable.lock().map(|d| *d).unwrap_or(u64::MAX);
        if state.committed.load(Ordering::SeqCst) > durable {
            // Errors are logged and made sticky by sync(); the thread keeps no other state.
            let _ = inner.sync();
        }
    }
}

pub(crate) mod alloc;
#[cfg(test)]
mod crash_tests;
mod deferred;
pub mod ledger;
pub mod live;
mod open;
pub(crate) mod redo;
pub mod repack;
pub(crate) mod schema;

#[cfg(test)]
mod tests;
