//! Following a namespace another machine publishes: this module owns bringing a data dir's
//! metadata DB, while it is mounted read-only (or before a writable mount that catches up),
//! to the state a newer root record names (docs/namespace-publishing.md §5).
//!
//! ```text
//!  Follower::poll ─▶ candidates (verified, ≥ root.seen) ─▶ newest seq > published_seq?
//!  Follower::apply(record):
//!     same snapshot, chain extended, local state file present ─▶ fetch the new segments only,
//!                                                                apply them to the state file
//!     else                                                   ─▶ fetch snapshot + segments
//!     ─▶ follow.new/state.snap (fsync)
//!     ─▶ segment::changes(published-<old>.snap, state.snap)  (what the caches must drop)
//!     ─▶ same view?  published_seq only        else  MetaDb::restore_published (one durable
//!                                                    transaction: namespace + published_seq/lsn)
//!     ─▶ state.snap → published-<seq>.snap; root.record; root.seen; older states removed
//! ```
//!
//! A DB with changes no record holds (dirty files, operations after the last publish) is never
//! overwritten: [`Follower::apply`] refuses, and the caller says so. Readers of the mount see
//! the old namespace or the new one, never a mix: the restore is one redb transaction.
//! Crash points: before the restore commits, nothing changed but `follow.new/` (removed by the
//! next apply); after it, the DB holds the new state with its seq, and a missing state file or
//! an old `root.record` only costs the next apply a full fetch.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use tracing::info;

use super::chain::{Applied, fetch_state};
use super::files::{
    ROOT_RECORD, blocking, raise_seen, remove_states_but, state_file, tail, write_durably,
};
use super::read_record;
use super::recover::candidates;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::meta::MetaDb;
use crate::meta::schema::{KEY_PUBLISHED_LSN, KEY_PUBLISHED_SEQ};
use crate::object::Objects;
use crate::remote::RootStore;
use crate::root_record::{RootBody, RootRecord};
use crate::snapshot::segment::{self, Changed};
use crate::sync::Arc;

/// The staging directory under `DIR/meta` where a followed state is built.
pub const FOLLOW_DIR: &str = "follow.new";

/// What one apply did.
#[derive(Clone, Debug)]
pub struct Followed {
    /// The seq now held.
    pub seq: u64,
    /// The host name of the writer that published it.
    pub writer_name: String,
    /// Every key that changed, for the caches that hold the old state (empty: the record
    /// named the same namespace, e.g. a lease renewal).
    pub changes: Vec<Changed>,
}

/// Brings one data dir's namespace up to the newest record the network holds for its identity.
pub struct Follower {
    dir: PathBuf,
    db: Arc<MetaDb>,
    objects: Arc<Objects>,
    roots: Arc<dyn RootStore>,
    identity: Arc<Identity>,
    min_difficulty: u8,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// The follower of `identity`'s namespace held in `db`, whose files are in `meta_dir`
    /// (`DIR/meta`); records are checked at `min_difficulty` (the network's puzzle).
    pub fn new(
        meta_dir: &Path,
        db: Arc<MetaDb>,
        objects: Arc<Objects>,
        roots: Arc<dyn RootStore>,
        identity: Arc<Identity>,
        min_difficulty: u8,
    ) -> Follower {
        Follower {
            dir: meta_dir.to_path_buf(),
            db,
            objects,
            roots,
            identity,
            min_difficulty,
        }
    }

    /// The newest record of this identity that verifies, with its body (`None`: no place
    /// holds one).
    ///
    /// # Errors
    /// The root store's error when nobody could be asked; Io, Corrupt (`root.seen`).
    pub async fn newest(&self) -> Result<Option<(RootRecord, RootBody)>> {
        let found = candidates(
            &self.dir,
            &self.identity,
            self.roots.as_ref(),
            self.min_difficulty,
        )
        .await?;
        Ok(found.verified.into_iter().next())
    }

    /// The seq of the record whose state the DB holds (0: none).
    ///
    /// # Errors
    /// Db.
    pub fn local_seq(&self) -> Result<u64> {
        self.db.meta_counter(KEY_PUBLISHED_SEQ)
    }

    /// Whether the DB holds changes no record names: operations after the last published (or
    /// applied) state, or dirty files.
    ///
    /// # Errors
    /// Db, Closed.
    pub fn local_changes(&self) -> Result<bool> {
        Ok(self.db.lsn()? > self.db.meta_counter(KEY_PUBLISHED_LSN)?
            || !self.db.dirty_inodes()?.is_empty())
    }

    /// Applies the newest record when it is newer than the DB's state; `None` when it is not.
    ///
    /// # Errors
    /// As [`Follower::newest`] and [`Follower::apply`].
    ///
    /// # Cancel safety
    /// As [`Follower::apply`].
    pub async fn poll(&self) -> Result<Option<Followed>> {
        let Some((rec, body)) = self.newest().await? else {
            return Ok(None);
        };
        if rec.seq() <= self.local_seq()? {
            return Ok(None);
        }
        self.apply(&rec, &body).await.map(Some)
    }

    /// Makes the DB hold the state `rec` names (see the module doc).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the DB has changes no record names (nothing changes);
    /// Corrupt (an object, the chain, the tree), the network's errors, Io, Db.
    ///
    /// # Cancel safety
    /// Safe: until the restore commits only `follow.new/` changes; the restore and the files
    /// after it run on a blocking thread that finishes once started.
    pub async fn apply(&self, rec: &RootRecord, body: &RootBody) -> Result<Followed> {
        if self.local_changes()? {
            return Err(Error::InvalidArgument {
                what: format!(
                    "following seq {}: this data dir has changes that were never published \
                     (they would be overwritten)",
                    rec.seq()
                ),
            });
        }
        let staging = self.dir.join(FOLLOW_DIR);
        let current = read_record(&self.dir.join(ROOT_RECORD), &self.identity)?
            .filter(|(r, _)| self.local_seq().is_ok_and(|s| s == r.seq()));
        let current_state = current
            .as_ref()
            .map(|(r, _)| self.dir.join(state_file(r.seq())));
        let from = current
            .as_ref()
            .zip(current_state.as_deref())
            .map(|((_, b), state)| Applied { state, body: b });
        let result = async {
            let state = fetch_state(
                &staging,
                &self.objects,
                &body.snapshot,
                &body.segments,
                from,
            )
            .await?;
            let (db, dir, seq) = (self.db.clone(), self.dir.clone(), rec.seq());
            let bytes = rec.as_bytes().to_vec();
            let old = current_state.clone().filter(|p| p.exists());
            blocking(move || apply_state(&db, &dir, &state, old.as_deref(), seq, &bytes)).await
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        let changes = result?;
        info!(
            seq = rec.seq(),
            writer = %body.writer_name,
            changes = changes.len(),
            "namespace followed"
        );
        Ok(Followed {
            seq: rec.seq(),
            writer_name: body.writer_name.clone(),
            changes,
        })
    }
}

/// Puts the state file `state` (record `seq`, whose bytes are `record`) in the DB and the
/// published-state files in place; returns what changed since `old` (the previous state file;
/// without one, the DB's own published view is written out to compare with).
fn apply_state(
    db: &MetaDb,
    dir: &Path,
    state: &Path,
    old: Option<&Path>,
    seq: u64,
    record: &[u8],
) -> Result<Vec<Changed>> {
    let open = |p: &Path| {
        File::open(p)
            .map(BufReader::new)
            .map_err(|e| Error::io(p, e))
    };
    let old = match old {
        Some(p) => p.to_path_buf(),
        None => {
            let p = state.with_file_name("old.snap");
            let f = File::create(&p).map_err(|e| Error::io(&p, e))?;
            db.write_snapshot(BufWriter::new(f))?;
            p
        }
    };
    let changes = segment::changes(open(&old)?, open(state)?)?;
    if changes.is_empty() && tail(&old)? == tail(state)? {
        // The same namespace under a new seq (a renewal, a takeover's claim): no restore.
        let lsn = db.lsn()?;
        db.set_counters_durable(&[(KEY_PUBLISHED_SEQ, seq), (KEY_PUBLISHED_LSN, lsn)])?;
    } else {
        db.restore_published(open(state)?, seq)?;
    }
    let target = dir.join(state_file(seq));
    std::fs::rename(state, &target).map_err(|e| Error::io(&target, e))?;
    write_durably(dir, ROOT_RECORD, record)?;
    raise_seen(dir, seq)?;
    remove_states_but(dir, seq)?;
    Ok(changes)
}
