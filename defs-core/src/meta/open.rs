//! Opening the metadata DB: the file created atomically, its schema checked or migrated, the
//! redo log replayed — every record above the DB's LSN runs again through the public
//! operation it logged ([`crate::namespace`], [`crate::journal`]), which is why this module
//! sits above them — then a checkpoint, and the group-commit thread started.

use std::path::Path;
use std::sync::Condvar;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redb::Database;

use super::alloc::InoAlloc;
use super::deferred::Deferred;
use super::redo::{self, LogOp};
use super::schema::{DbContext, KEY_LSN, META, init_or_migrate};
use super::{
    COMMIT_INTERVAL, CommitState, DB_FILE, Inner, LOG_FILE, LOG_KIND, LogState, MetaDb,
    group_commit_loop,
};
use crate::error::{Error, Result};
use crate::oplog::{OpLog, Recovered, Tail};
use crate::sync::{Arc, Mutex};

impl MetaDb {
    /// Opens (or creates) the metadata DB in directory `dir` (created if missing) and starts
    /// the group-commit thread.
    ///
    /// # Errors
    /// [`Error::SchemaTooNew`] for a DB written by a newer DeFS (nothing is changed);
    /// [`Error::Db`] when redb cannot open the file (including redb's own format upgrades);
    /// [`Error::Io`] when the directory cannot be created.
    pub fn open(dir: &Path) -> Result<MetaDb> {
        Self::open_with(dir, Some(COMMIT_INTERVAL))
    }

    /// Like [`MetaDb::open`], with a chosen group-commit interval; `None` runs no thread, so
    /// only [`MetaDb::sync`] and close make commits durable (tests, benchmarks).
    ///
    /// # Errors
    /// As [`MetaDb::open`].
    pub fn open_with(dir: &Path, interval: Option<Duration>) -> Result<MetaDb> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(DB_FILE);
        if !path.exists() {
            create_atomically(dir, &path)?;
        }
        let db = Database::open(&path).ctx("opening the DB file")?;
        init_or_migrate(&db, &path, super::live::derive)?;
        let (log, recovered) = OpLog::open(&dir.join(LOG_FILE), LOG_KIND, redo::MAX_RECORD)?;
        let inner = Arc::new(Inner {
            writer: Mutex::new(()),
            db,
            alloc: Mutex::new(InoAlloc::default()),
            log: Mutex::new(LogState {
                log,
                last: 0,
                replaying: true,
                broken: false,
            }),
            deferred: Mutex::new(Deferred::default()),
            path,
            state: CommitState {
                committed: AtomicU64::new(0),
                durable: Mutex::new(0),
                failed: Mutex::new(None),
                stop: Mutex::new(false),
                wake: Condvar::new(),
            },
        });
        let db = MetaDb {
            inner,
            committer: Mutex::new(None),
        };
        if let Err(e) = db.replay(recovered) {
            // Nothing of a failed replay may become durable: refuse every later commit.
            if let Ok(mut failed) = db.inner.state.failed.lock() {
                failed.get_or_insert(e.to_string());
            }
            return Err(e);
        }
        let inner = db.inner.clone();
        let committer = match interval {
            Some(interval) => {
                let inner = inner.clone();
                let handle = std::thread::Builder::new()
                    .name("defs-meta-commit".into())
                    .spawn(move || group_commit_loop(&inner, interval))
                    .map_err(|e| Error::io("spawning the group-commit thread", e))?;
                Some(handle)
            }
            None => None,
        };
        if let Ok(mut slot) = db.committer.lock() {
            *slot = committer;
        }
        Ok(db)
    }

    /// Replays the log records above the DB's LSN, then checkpoints (durable commit, log
    /// reset). Runs before the DB is shared, so nothing else writes meanwhile.
    fn replay(&self, recovered: Recovered) -> Result<()> {
        let db_lsn = self.read(|txn| {
            let meta = txn.open_table(META).ctx("opening the meta table")?;
            Ok(meta
                .get(KEY_LSN)
                .ctx("reading lsn")?
                .map_or(0, |v| v.value()))
        })?;
        if recovered.base_lsn > db_lsn {
            return Err(Error::Corrupt {
                what: "metadata op log",
                reason: format!(
                    "the log starts after LSN {} but the DB is at LSN {db_lsn}: operations in                      between are lost (was the DB replaced by an older copy?)",
                    recovered.base_lsn
                ),
            });
        }
        if let Tail::Torn { offset, reason } = &recovered.tail {
            tracing::info!(offset, %reason, "metadata op log: ignoring a torn tail");
        }
        self.set_log(|l| l.last = db_lsn)?;
        let mut replayed = 0u64;
        for rec in recovered.records.iter().filter(|r| r.lsn > db_lsn) {
            replay_record(self, rec.lsn, &rec.payload)?;
            let last = self.set_log(|l| l.last)?;
            if last != rec.lsn {
                return Err(Error::Corrupt {
                    what: "metadata op log",
                    reason: format!(
                        "record {} replayed as LSN {last} (it changed nothing or more than one                          transaction)",
                        rec.lsn
                    ),
                });
            }
            replayed += 1;
        }
        self.set_log(|l| l.replaying = false)?;
        if replayed > 0 {
            tracing::info!(replayed, "metadata DB: replayed operations from the op log");
        }
        // Checkpoint: a durable commit that covers every replayed operation, then an empty log.
        self.inner.state.committed.fetch_add(1, Ordering::SeqCst);
        self.inner.sync()
    }

    fn set_log<T>(&self, f: impl FnOnce(&mut LogState) -> T) -> Result<T> {
        let mut l = self.inner.log.lock().map_err(|_| Error::Closed)?;
        Ok(f(&mut l))
    }
}

/// Creates a new DB under a temporary name and renames it into place, so that a crash during
/// creation never leaves a half-written file where [`MetaDb::open`] looks (redb refuses a file
/// whose header was never completed).
fn create_atomically(dir: &Path, path: &Path) -> Result<()> {
    let tmp = dir.join(format!("{DB_FILE}.new"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&tmp, e)),
    }
    {
        let db = Database::create(&tmp).ctx("creating the DB file")?;
        init_or_migrate(&db, &tmp, super::live::derive)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    crate::fsutil::fsync_dir(dir)
}

fn mismatch(what: String) -> Error {
    Error::InvalidArgument { what }
}

/// Runs one decoded record against the DB (in replay mode: the write commits with the next LSN
/// and appends nothing), forcing its inode number and checking its logged results. Any error
/// is returned as is; the caller wraps it into [`Error::Corrupt`] naming the record.
pub(crate) fn apply(db: &MetaDb, op: &LogOp<'_>) -> Result<()> {
    db.force_next_ino(op.allocated())?;
    match *op {
        LogOp::Setattr { ino, ref set, now } => db.setattr(ino, set, now).map(drop),
        LogOp::Create {
            parent,
            name,
            ref init,
            exclusive,
            now,
            ino,
        } => {
            let (attr, created) = db.create(parent, name, init, exclusive, now)?;
            if created != ino.is_some() || (created && Some(attr.ino) != ino) {
                return Err(mismatch(format!(
                    "create returned inode {} (created: {created}), the log says {ino:?}",
                    attr.ino
                )));
            }
            Ok(())
        }
        LogOp::Make {
            parent,
            name,
            kind,
            ref init,
            now,
            target,
            rdev,
            ino,
        } => {
            let attr = db.make_new(parent, name, kind, init, now, target, rdev)?;
            if attr.ino != ino {
                return Err(mismatch(format!(
                    "made inode {}, the log says {ino}",
                    attr.ino
                )));
            }
            Ok(())
        }
        LogOp::Link {
            ino,
            newparent,
            newname,
            now,
        } => db.link(ino, newparent, newname, now).map(drop),
        LogOp::Unlink { parent, name, now } => db.unlink(parent, name, now).map(drop),
        LogOp::Rmdir { parent, name, now } => db.rmdir(parent, name, now).map(drop),
        LogOp::Rename {
            parent,
            name,
            newparent,
            newname,
            mode,
            now,
        } => db
            .rename(parent, name, newparent, newname, mode, now)
            .map(drop),
        LogOp::SetXattr {
            ino,
            name,
            value,
            mode,
            now,
        } => db.set_xattr(ino, name, value, mode, now),
        LogOp::RemoveXattr { ino, name, now } => db.remove_xattr(ino, name, now),
        LogOp::Purge { ino } => db.purge(ino).map(drop),
        LogOp::MarkDirty {
            ino,
            now,
            generation,
        } => {
            let g = db.mark_dirty(ino, now)?;
            if g != generation {
                return Err(mismatch(format!(
                    "mark_dirty gave generation {}, the log says {}",
                    g.0, generation.0
                )));
            }
            Ok(())
        }
        LogOp::BeginUpload { ino, generation } => {
            let g = db.begin_upload(ino)?;
            if g != generation {
                return Err(mismatch(format!(
                    "begin_upload gave generation {}, the log says {}",
                    g.0, generation.0
                )));
            }
            Ok(())
        }
        LogOp::FinishUpload {
            ino,
            generation,
            ref content,
            clean,
        } => {
            let c = db.finish_upload(ino, generation, content.clone())?;
            if c != clean {
                return Err(mismatch(format!(
                    "finish_upload returned {c}, the log says {clean}"
                )));
            }
            Ok(())
        }
        LogOp::UploadFailed {
            ino,
            generation,
            reason,
        } => db.upload_failed_cut(ino, generation, reason),
        LogOp::Repack {
            intent,
            file,
            key,
            ref moves,
            switched,
        } => {
            let n = db.switch_repacked(intent, file, key, moves)?;
            if n != switched {
                return Err(mismatch(format!(
                    "switch_repacked switched {n} files, the log says {switched}"
                )));
            }
            Ok(())
        }
        LogOp::SetattrDirty {
            ino,
            ref set,
            now,
            generation,
        } => {
            let (_, g) = db.setattr_dirty(ino, set, now)?;
            if g != generation {
                return Err(mismatch(format!(
                    "setattr_dirty gave generation {}, the log says {}",
                    g.0, generation.0
                )));
            }
            Ok(())
        }
    }
}

/// Replays one record and turns any failure into [`Error::Corrupt`] naming it.
pub(crate) fn replay_record(db: &MetaDb, lsn: u64, payload: &[u8]) -> Result<()> {
    let op = LogOp::decode(payload).map_err(|e| Error::Corrupt {
        what: "metadata op log",
        reason: format!("record {lsn} does not decode: {e}"),
    })?;
    let result = apply(db, &op).and_then(|()| db.finish_forced_ino());
    result.map_err(|e| Error::Corrupt {
        what: "metadata op log",
        reason: format!(
            "record {lsn} ({}) does not replay: {e}; the DB and its log disagree \
             (a bug, or files from different DBs)",
            op.name()
        ),
    })
}
