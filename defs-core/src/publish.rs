//! Publishing the namespace: this module owns the steps that put the metadata DB's namespace on
//! the network as ordinary stored objects (a full snapshot, then small segments) named by a
//! signed root record, and the local files that make those steps survive a crash
//! (`docs/namespace-publishing.md` §1, §3).
//!
//! ```text
//!  publish_now ─▶ (a record signed but not committed? resend it, commit it)
//!              ─▶ cut: snapshot of the published view ─▶ DIR/meta/publish/<seq>.snap (fsync),
//!                 MetaDb::sync
//!              ─▶ same view as DIR/meta/published-<last>.snap?  store nothing
//!                 else segment::diff(published-<last>.snap, cut), checked to yield the cut,
//!                      within the compaction bound?            Objects::put(segment)
//!                 else                                         Objects::put(full snapshot)
//!              ─▶ RootRecord::sign(seq = last + 1) ─▶ DIR/meta/root.next (fsync, rename)
//!              ─▶ RootStore::put_root ─▶ copies acknowledged
//!              ─▶ cut → published-<seq>.snap; one durable commit of published_seq /
//!                 published_lsn; root.record written, root.next removed
//! ```
//!
//! Compaction: a full snapshot when there is no local published state to diff against (first
//! publish, an older data dir), the chain has [`segment::MAX_CHAIN`] segments, or its segments
//! would total more than `max(COMPACT_MIN_BYTES, snapshot / COMPACT_RATIO)`.

//! # The API the mount wiring calls
//!
//! - [`Publisher::open`]: once per mount, after the metadata DB is open (and after recovery,
//!   [`recover()`], when the data dir had none). Reads `root.record` / `root.next`.
//! - [`Publisher::changed`]: cheap, synchronous: whether any operation returned since the last
//!   published cut (the debouncer asks it; no I/O but a lock).
//! - [`Publisher::publish_now`]: one publish, one at a time (callers queue on an async lock):
//!   returns [`Published`] (seq, copies acknowledged, segments in the chain, plaintext bytes
//!   uploaded: a one-file change is a segment of a few hundred bytes). With nothing changed it
//!   re-sends the current record (its copies are counted again, stale holders healed) and
//!   uploads nothing; a record older than a third of the lease is renewed under a new seq.
//!   `defs sync` calls it after the files are clean and reports "namespace published (seq N,
//!   M copies)".
//! - [`Publisher::release`]: at unmount, publishes the current state with lease 0.
//! - [`candidates`]: the verified records the network holds for the identity, newest first
//!   (the lease check before a writable mount, a read-only follower's poll); [`recover()`] builds
//!   the DB from the newest that loads.
//! - [`Publisher::published_seq`]: the last committed seq (for `defs status`).
//!
//! Crash safety, per step: a crash before the record is written leaves a snapshot file (removed
//! by the next cut) and maybe an object no record names; a crash after `root.next` is written
//! makes the next `publish_now` re-send exactly those bytes (a seq never names two byte
//! strings) and commit them before cutting anew. A crash after the commit has nothing to redo.
//! A holder's `RootRollback` refusal (a newer record of this identity exists: another writer)
//! stops this publisher: every later call returns that error.

mod chain;
mod derive;
mod files;
pub mod follow;
pub mod lease;
pub mod recover;
pub mod versions;

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::meta::MetaDb;
use crate::meta::ledger::ObjectKind;
use crate::meta::schema::{KEY_PUBLISHED_LSN, KEY_PUBLISHED_SEQ};
use crate::object::{FileSource, Objects};
use crate::remote::RootStore;
use crate::root_record::{ObjectRef, RootBody, RootRecord, WriterId};
use crate::snapshot::SnapshotStats;
use crate::snapshot::segment::{self, SegmentHead};
use crate::sync::Arc;
use crate::types::FileId;
pub use files::{LEDGER_DERIVE, PUBLISH_DIR, ROOT_NEXT, ROOT_RECORD, ROOT_SEEN};
use files::{
    MemSource, blocking, raise_seen, read_seen, remove_durably, remove_states_but, state_file,
    tail, write_durably,
};
pub use follow::{Followed, Follower};
pub use lease::{Lease, LeaseRefusal, WritableStart, writable_start};
pub use recover::{Candidates, Recovered, Refusal, candidates, recover};
use versions::{Retention, Version, Why};

/// Who publishes and for how long it holds the namespace (docs/namespace-publishing.md §5).
#[derive(Clone, Debug)]
pub struct PublishConfig {
    /// This data dir's writer id (`DIR/writer.id`).
    pub writer: WriterId,
    /// A human name for the writer (host name), at most 64 bytes.
    pub writer_name: String,
    /// How long a record's lease lasts, in seconds.
    pub lease_secs: u32,
}

/// What one publish did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The seq of the record now on the network.
    pub seq: u64,
    /// Places that acknowledged the record as kept.
    pub copies: usize,
    /// The snapshot the record names.
    pub snapshot: ObjectRef,
    /// How many segments the record names after it.
    pub segments: usize,
    /// Plaintext bytes of namespace objects this call stored (0 when only a record was sent).
    pub uploaded: u64,
}

/// The publisher's state behind its async lock (one publish at a time).
struct State {
    /// The last committed record and its opened body.
    last: Option<(RootRecord, RootBody)>,
    /// The highest seq known to exist for this identity (committed, pending or seen).
    top_seq: u64,
    /// Set when a holder refused our record as a rollback: publishing has stopped.
    lost: Option<Error>,
    /// The kept versions the last committed record names (its versions object and the list),
    /// once loaded (`versions.list`, else fetched).
    versions: Option<(Option<FileId>, Vec<Version>)>,
    /// The list a signed record names, written as `versions.list` at its commit.
    staged: Option<(FileId, Vec<u8>, Vec<Version>)>,
}

/// Publishes one identity's namespace (see the module doc).
pub struct Publisher {
    dir: PathBuf,
    db: Arc<MetaDb>,
    objects: Arc<Objects>,
    roots: Arc<dyn RootStore>,
    identity: Arc<Identity>,
    config: PublishConfig,
    retention: Retention,
    /// The LSN of the last committed cut.
    published_lsn: AtomicU64,
    /// The seq of the last committed record.
    published_seq: AtomicU64,
    state: tokio::sync::Mutex<State>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("dir", &self.dir)
            .field("published_seq", &self.published_seq)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads a local record file (`root.record`): `None` when absent. Our own file, checked like
/// any record (a damaged one is an error, never trusted).
pub(crate) fn read_record(
    path: &Path,
    identity: &Identity,
) -> Result<Option<(RootRecord, RootBody)>> {
    match std::fs::read(path) {
        Ok(bytes) => open_own(&bytes, identity).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Verifies `bytes` as a record of `identity` and opens its body.
fn open_own(bytes: &[u8], identity: &Identity) -> Result<(RootRecord, RootBody)> {
    let rec = RootRecord::verify(bytes, 0)?;
    let body = rec.open_body(identity)?;
    Ok((rec, body))
}

/// The pending record (`root.next`) and the LSN its cut was made at.
fn read_pending(dir: &Path, identity: &Identity) -> Result<Option<(u64, RootRecord, RootBody)>> {
    let path = dir.join(ROOT_NEXT);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let (lsn, rec) = bytes.split_at_checked(8).ok_or_else(|| Error::Corrupt {
        what: "pending root record",
        reason: format!("{} bytes", bytes.len()),
    })?;
    let lsn = u64::from_le_bytes(lsn.try_into().unwrap_or_default());
    let (rec, body) = open_own(rec, identity)?;
    Ok(Some((lsn, rec, body)))
}

/// What a cut stored: the objects its record names, the cut's LSN, plaintext bytes uploaded.
struct Cut {
    snapshot: ObjectRef,
    segments: Vec<ObjectRef>,
    lsn: u64,
    uploaded: u64,
}

/// Segments may total this many bytes before compaction, however small the snapshot: 1 MiB,
/// so a small namespace is not re-uploaded whole every few changes.
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// ... or a `1 / COMPACT_RATIO` part of the snapshot, whichever is more: then bytes published
/// stay within 5 times the segment bytes, and a reader fetches at most 1.25 snapshots.
pub const COMPACT_RATIO: u64 = 4;

impl Publisher {
    /// The publisher of `identity`'s namespace held in `db`, with its files in `meta_dir`
    /// (`DIR/meta`), storing objects through `objects` and records through `roots`.
    ///
    /// # Errors
    /// Io; [`Error::BadRootRecord`] or [`Error::Corrupt`] when `root.record`, `root.next` or
    /// `root.seen` is damaged (never silently replaced: the seq they hold matters).
    pub fn open(
        meta_dir: &Path,
        db: Arc<MetaDb>,
        objects: Arc<Objects>,
        roots: Arc<dyn RootStore>,
        identity: Arc<Identity>,
        config: PublishConfig,
    ) -> Result<Publisher> {
        let last = read_record(&meta_dir.join(ROOT_RECORD), &identity)?;
        let pending = read_pending(meta_dir, &identity)?;
        let published_seq = db.meta_counter(KEY_PUBLISHED_SEQ)?;
        let published_lsn = db.meta_counter(KEY_PUBLISHED_LSN)?;
        if let Some((rec, body)) = &last {
            // A DB migrated from schema 3 (or recovered) has no rows for these yet.
            db.note_record_objects(rec.seq(), &named_objects(body))?;
        }
        let top_seq = [
            published_seq,
            read_seen(meta_dir)?,
            last.as_ref().map_or(0, |(r, _)| r.seq()),
            pending.as_ref().map_or(0, |(_, r, _)| r.seq()),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        Ok(Publisher {
            dir: meta_dir.to_path_buf(),
            db,
            objects,
            roots,
            identity,
            config,
            retention: Retention::default(),
            published_lsn: AtomicU64::new(published_lsn),
            published_seq: AtomicU64::new(published_seq),
            state: tokio::sync::Mutex::new(State {
                last,
                top_seq,
                lost: None,
                versions: None,
                staged: None,
            }),
        })
    }

    /// Sets which published states are kept as versions (default: [`Retention::default`]).
    pub fn with_retention(mut self, retention: Retention) -> Publisher {
        self.retention = retention;
        self
    }

    /// The seqs of the kept versions and of the current published record, ascending: what
    /// the garbage collector must keep loadable ([`versions::kept_seqs`]).
    ///
    /// # Errors
    /// When the versions object the last record names can be neither read locally nor
    /// fetched: then nothing is known to be unkept, and nothing may be collected.
    pub async fn kept_seqs(&self) -> Result<Vec<u64>> {
        let mut st = self.state.lock().await;
        let list = self.load_versions(&mut st).await?;
        Ok(versions::kept_seqs(&list, self.published_seq()))
    }

    /// The kept versions the last committed record names: the local copy, else fetched.
    async fn load_versions(&self, st: &mut State) -> Result<Vec<Version>> {
        let named = st.last.as_ref().and_then(|(_, b)| b.versions);
        if let Some((file, list)) = &st.versions
            && *file == named
        {
            return Ok(list.clone());
        }
        let list = versions::sync_local(&self.dir, &self.objects, named).await?;
        st.versions = Some((named, list.clone()));
        Ok(list)
    }
    /// Whether any operation returned since the last published cut.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn changed(&self) -> Result<bool> {
        Ok(self.db.lsn()? > self.published_lsn.load(Ordering::Acquire))
    }

    /// The seq of the last committed record (0: never published).
    pub fn published_seq(&self) -> u64 {
        self.published_seq.load(Ordering::Acquire)
    }

    /// Whether this publisher may run the garbage collector ([`crate::gc`]): it has published
    /// (or recovered) a record, no newer record of this identity is known (no refusal as a
    /// rollback, no higher seq seen), and none of its own waits to be committed. The lease
    /// check of the one-writer rule is to be added here.
    pub async fn may_collect(&self) -> bool {
        let st = self.state.lock().await;
        let seq = self.published_seq();
        st.lost.is_none()
            && seq > 0
            && st.top_seq == seq
            && st.last.as_ref().is_some_and(|(r, _)| r.seq() == seq)
            && !self.dir.join(ROOT_NEXT).exists()
    }

    /// Records a stored namespace object in the ledger, undecided until a commit names it or
    /// passes it by.
    async fn note_stored(&self, file: FileId, kind: ObjectKind) -> Result<()> {
        let db = self.db.clone();
        blocking(move || db.note_namespace_object(file, kind)).await
    }

    /// Publishes the namespace as it is now (see the module doc) and returns once its record is
    /// acknowledged and committed.
    ///
    /// # Errors
    /// The store's and the network's errors (nothing committed; the next call resumes);
    /// [`Error::RootRollback`] when a newer record of this identity exists (publishing stops).
    ///
    /// # Cancel safety
    /// Safe at every await: the files left behind are each a step's durable outcome, and the
    /// next call (or the next [`Publisher::open`]) resumes from them.
    pub async fn publish_now(&self) -> Result<Published> {
        self.publish(self.config.lease_secs, Why::Change, false)
            .await
    }

    /// [`Publisher::publish_now`] for `defs sync`: the state published is a kept version
    /// (`/.snapshots`), also when it was published before without being kept.
    ///
    /// # Errors
    /// # Cancel safety
    /// As [`Publisher::publish_now`].
    pub async fn publish_sync(&self) -> Result<Published> {
        self.publish(self.config.lease_secs, Why::Sync, false).await
    }

    /// Publishes a new record now, with a fresh lease, even when the last one is recent and
    /// nothing changed (then it costs a record and no object): the lease renewal, and the
    /// claim of a writable mount that starts after another writer's record.
    ///
    /// # Errors
    /// # Cancel safety
    /// As [`Publisher::publish_now`].
    pub async fn renew(&self) -> Result<Published> {
        self.publish(self.config.lease_secs, Why::Change, true)
            .await
    }

    /// Whether this publisher holds the write lease *and* its last committed record is the
    /// newest the network has for this identity: publishing has not stopped (no newer record
    /// refused ours), the last record is this writer's with a lease, and no place asked holds
    /// a higher seq. What must be true before anything acts on the published state as the only
    /// one (the garbage collector: an object the network's newest record names must never go).
    ///
    /// # Errors
    /// The root store's error when nobody could be asked (the caller must then not act).
    ///
    /// # Cancel safety
    /// Safe: it only asks.
    pub async fn holds_newest(&self) -> Result<bool> {
        let ours = {
            let st = self.state.lock().await;
            if st.lost.is_some() {
                return Ok(false);
            }
            match &st.last {
                Some((r, b)) if b.writer == self.config.writer && b.lease_secs > 0 => r.seq(),
                _ => return Ok(false),
            }
        };
        let owner = self.identity.node_id();
        let newest = self
            .roots
            .find_roots(owner)
            .await?
            .iter()
            .filter_map(|b| RootRecord::verify(b, 0).ok())
            .filter(|r| r.owner() == owner)
            .map(|r| r.seq())
            .max()
            .unwrap_or(0);
        Ok(newest == ours)
    }

    /// Publishes the current state with lease 0 (unmount): another machine may then mount
    /// writable at once.
    ///
    /// # Errors
    /// # Cancel safety
    /// As [`Publisher::publish_now`].
    pub async fn release(&self) -> Result<Published> {
        self.publish(0, Why::Release, false).await
    }

    async fn publish(&self, lease_secs: u32, why: Why, renew: bool) -> Result<Published> {
        let mut st = self.state.lock().await;
        if let Some(e) = &st.lost {
            return Err(lost_again(e));
        }
        if let Some((lsn, rec, body)) = read_pending(&self.dir, &self.identity)? {
            info!(
                seq = rec.seq(),
                "publish: finishing a record signed before a restart"
            );
            self.send_and_commit(&mut st, lsn, rec, body, 0).await?;
        }
        // The last record needs no successor for the lease's sake when it is this writer's,
        // with the lease asked for, made less than a third of it ago (this machine's clock, on
        // both ends).
        let fresh_lease = !renew
            && st.last.as_ref().is_some_and(|(r, b)| {
                b.writer == self.config.writer
                    && b.lease_secs == lease_secs
                    && (lease_secs == 0
                        || now_ms().saturating_sub(r.time_ms()) < u64::from(lease_secs) * 1000 / 3)
            });
        // A state published for `defs sync` or the release is kept: one published before
        // without being kept gets a new record that says so.
        let keep_last = why != Why::Change && st.last.as_ref().is_some_and(|(_, b)| !b.kept);
        if !self.changed()? && fresh_lease && !keep_last {
            return self.resend_last(&mut st).await;
        }
        let seq = st.top_seq.checked_add(1).ok_or_else(|| Error::Corrupt {
            what: "root record",
            reason: "sequence numbers exhausted".into(),
        })?;
        let renewal = match (&st.last, self.changed()?) {
            // Nothing changed, the lease needs a new record: the same chain, no cut.
            (Some((_, b)), false) => Some(Cut {
                snapshot: b.snapshot,
                segments: b.segments.clone(),
                lsn: self.published_lsn.load(Ordering::Acquire),
                uploaded: 0,
            }),
            _ => None,
        };
        let Cut {
            snapshot,
            segments,
            lsn,
            uploaded,
        } = match renewal {
            Some(cut) => cut,
            None => self.cut_and_store(&st, seq).await?,
        };
        let same = st
            .last
            .as_ref()
            .is_some_and(|(_, b)| b.snapshot == snapshot && b.segments == segments);
        if same && fresh_lease && !keep_last {
            // Only bytes in the local cache changed (dirty files publish their stored size):
            // the network already holds this view; no new seq.
            // Deaths this cut saw are not named by the last record either (same view).
            let db = self.db.clone();
            let seq = self.published_seq();
            let named = st
                .last
                .as_ref()
                .map(|(_, b)| named_objects(b))
                .unwrap_or_default();
            blocking(move || db.commit_published(seq, lsn, &named)).await?;
            self.published_lsn.fetch_max(lsn, Ordering::AcqRel);
            return self.resend_last(&mut st).await;
        }
        let time_ms = now_ms();
        let (versions, kept, listed) = self
            .next_versions(&mut st, why, seq, time_ms, &snapshot, &segments)
            .await?;
        let uploaded = uploaded + listed;
        let body = RootBody {
            writer: self.config.writer,
            lease_secs,
            writer_name: self.config.writer_name.clone(),
            snapshot,
            segments,
            versions,
            kept,
        };
        let rec = RootRecord::sign(&self.identity, seq, time_ms, &body)?;
        let mut pending = lsn.to_le_bytes().to_vec();
        pending.extend_from_slice(rec.as_bytes());
        write_durably(&self.dir, ROOT_NEXT, &pending)?;
        st.top_seq = seq;
        debug!(seq, "publish: record signed");
        self.send_and_commit(&mut st, lsn, rec, body, uploaded)
            .await
    }

    /// The versions object the record `seq` (made at `time_ms` for `why`, naming `snapshot` +
    /// `segments`) names, whether its state is a kept version, and the bytes stored for it:
    /// the last list plus this state when [`versions::keeps`] says so, trimmed by
    /// [`versions::retain`]; stored anew only when it changed (then staged for the commit).
    async fn next_versions(
        &self,
        st: &mut State,
        why: Why,
        seq: u64,
        time_ms: u64,
        snapshot: &ObjectRef,
        segments: &[ObjectRef],
    ) -> Result<(Option<FileId>, bool, u64)> {
        let list = match self.load_versions(st).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "publish: the last list of kept versions is unreadable; starting a new one");
                Vec::new()
            }
        };
        let current = st.last.as_ref().and_then(|(_, b)| b.versions);
        let mut next = list.clone();
        if versions::keeps(why, &list, snapshot, segments, time_ms, &self.retention) {
            next.push(Version {
                seq,
                time_ms,
                snapshot: *snapshot,
                segments: segments.to_vec(),
            });
        }
        let next = versions::retain(next, (snapshot, segments), time_ms, &self.retention);
        let kept = next.last().is_some_and(|v| v.is_state(snapshot, segments));
        let seqs = |l: &[Version]| l.iter().map(|v| v.seq).collect::<Vec<_>>();
        if seqs(&next) == seqs(&list) && (current.is_some() || next.is_empty()) {
            st.staged = None;
            return Ok((current, kept, 0));
        }
        if next.is_empty() {
            st.staged = None;
            return Ok((None, kept, 0));
        }
        let (file, plain) = versions::store(&self.objects, &next).await?;
        info!(%file, versions = next.len(), kept, "publish: versions object stored");
        let len = plain.len() as u64;
        st.staged = Some((file, plain, next));
        Ok((Some(file), kept, len))
    }

    /// Sends the last committed record again (its copies counted anew, stale holders healed).
    async fn resend_last(&self, st: &mut State) -> Result<Published> {
        let Some((rec, body)) = st.last.clone() else {
            return Err(Error::Closed);
        };
        let copies = self.send(st, &rec).await?;
        Ok(Published {
            seq: rec.seq(),
            copies,
            snapshot: body.snapshot,
            segments: body.segments.len(),
            uploaded: 0,
        })
    }

    /// Cuts the namespace into a snapshot file (fsynced: it becomes the local copy of the
    /// published state at the commit), makes the cut durable in the DB, and stores what the
    /// network lacks: nothing when the view did not change, a segment when the chain may grow
    /// (docs/namespace-publishing.md §1, compaction), else the full snapshot.
    async fn cut_and_store(&self, st: &State, seq: u64) -> Result<Cut> {
        let dir = self.dir.join(PUBLISH_DIR);
        let db = self.db.clone();
        let path = dir.join(format!("{seq}.snap"));
        let (stats, lsn) = {
            let (dir, path) = (dir.clone(), path.clone());
            blocking(move || {
                // Whatever an interrupted publish left here is of no use now.
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
                let mut w = BufWriter::new(file);
                let cut = db.write_snapshot_cut(&mut w)?;
                let file = w
                    .into_inner()
                    .map_err(|e| Error::io(&path, e.into_error()))?;
                file.sync_all().map_err(|e| Error::io(&path, e))?;
                // The published state is durable here before it is on the network.
                db.sync()?;
                Ok(cut)
            })
            .await?
        };
        let state = st
            .last
            .as_ref()
            .map(|(r, b)| (self.dir.join(state_file(r.seq())), b.clone()))
            .filter(|(p, _)| p.exists());
        if let Some((state_path, body)) = state {
            match self.extend_chain(&state_path, &body, &path, &stats).await {
                Ok(Some(cut)) => return Ok(Cut { lsn, ..cut }),
                Ok(None) => {}
                Err(e) => {
                    warn!(seq, error = %e, "publish: no segment on the last state; storing a full snapshot");
                }
            }
        }
        let source = Arc::new(FileSource::open(&path)?);
        let stored = self.objects.put(source, stats.bytes, None, &|_| {}).await?;
        self.note_stored(stored.file, ObjectKind::Snapshot).await?;
        info!(seq, file = %stored.file, bytes = stats.bytes, inodes = stats.inodes, "publish: snapshot stored");
        Ok(Cut {
            snapshot: ObjectRef {
                file: stored.file,
                len: stats.bytes,
                trailer: stats.trailer,
            },
            segments: Vec::new(),
            lsn,
            uploaded: stats.bytes,
        })
    }

    /// The cut `cut` (its `stats`) as the chain of `body` (whose state is the file `state`)
    /// plus at most one segment: unchanged (nothing stored), or one segment stored. `None`
    /// when compaction wants a full snapshot instead.
    async fn extend_chain(
        &self,
        state: &Path,
        body: &RootBody,
        cut: &Path,
        stats: &SnapshotStats,
    ) -> Result<Option<Cut>> {
        let unchanged = Cut {
            snapshot: body.snapshot,
            segments: body.segments.clone(),
            lsn: 0,
            uploaded: 0,
        };
        if segment::trailer_of(&tail(state)?) == Some(stats.trailer) {
            debug!("publish: the published view did not change; no upload");
            return Ok(Some(unchanged));
        }
        if body.segments.len() >= segment::MAX_CHAIN {
            return Ok(None);
        }
        let head = SegmentHead {
            base: body.snapshot.trailer,
            index: u32::try_from(body.segments.len() + 1).unwrap_or(u32::MAX),
            prev: body
                .segments
                .last()
                .map_or(body.snapshot.trailer, |s| s.trailer),
            next_ino: 0,
        };
        let (state, cut, want) = (state.to_path_buf(), cut.to_path_buf(), stats.trailer);
        let seg = blocking(move || {
            let open = |p: &Path| {
                File::open(p)
                    .map(BufReader::new)
                    .map_err(|e| Error::io(p, e))
            };
            let (seg, _) = segment::diff(open(&state)?, open(&cut)?, head)?;
            // Proof before anything leaves: the chain plus this segment is the cut.
            segment::check_segment(open(&state)?, &seg, &head, &want)?;
            Ok(seg)
        })
        .await?;
        let len = seg.len() as u64;
        let chain: u64 = body.segments.iter().map(|s| s.len).sum::<u64>() + len;
        if chain > COMPACT_MIN_BYTES.max(body.snapshot.len / COMPACT_RATIO) {
            debug!(
                chain,
                snapshot = body.snapshot.len,
                "publish: compacting into a full snapshot"
            );
            return Ok(None);
        }
        let trailer = segment::trailer_of(&seg).unwrap_or_default();
        let stored = self
            .objects
            .put(Arc::new(MemSource(seg)), len, None, &|_| {})
            .await?;
        self.note_stored(stored.file, ObjectKind::Segment).await?;
        info!(file = %stored.file, bytes = len, index = head.index, "publish: segment stored");
        let mut segments = body.segments.clone();
        segments.push(ObjectRef {
            file: stored.file,
            len,
            trailer,
        });
        Ok(Some(Cut {
            segments,
            uploaded: len,
            ..unchanged
        }))
    }

    /// Offers `rec` to the root store; a rollback refusal stops this publisher.
    async fn send(&self, st: &mut State, rec: &RootRecord) -> Result<usize> {
        match self.roots.put_root(rec.as_bytes().to_vec()).await {
            Ok(0) => Err(Error::RootUnreachable {
                owner: rec.owner(),
                reason: "no place acknowledged the record".into(),
            }),
            Ok(copies) => Ok(copies),
            Err(e @ Error::RootRollback { .. }) => {
                warn!(seq = rec.seq(), error = %e, "publish: a newer record of this identity exists; publishing stops");
                st.lost = Some(lost_again(&e));
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends the signed (pending) record and commits it: the DB's counters in one durable
    /// commit, then `root.next` becomes `root.record`.
    async fn send_and_commit(
        &self,
        st: &mut State,
        lsn: u64,
        rec: RootRecord,
        body: RootBody,
        uploaded: u64,
    ) -> Result<Published> {
        let copies = self.send(st, &rec).await?;
        let seq = rec.seq();
        let db = self.db.clone();
        let dir = self.dir.clone();
        let bytes = rec.as_bytes().to_vec();
        let named = named_objects(&body);
        // A record naming the same chain as the last one (a lease renewal) has its state.
        let same_state = st
            .last
            .as_ref()
            .filter(|(_, b)| b.snapshot == body.snapshot && b.segments == body.segments)
            .map(|(r, _)| dir.join(state_file(r.seq())));
        blocking(move || {
            // The cut this record names becomes the local copy of the published state (the
            // base of the next segment); an older copy is of no use any more. Without either,
            // there is no base and the next publish stores a full snapshot.
            let cut = dir.join(PUBLISH_DIR).join(format!("{seq}.snap"));
            let state = dir.join(state_file(seq));
            if cut.exists() {
                std::fs::rename(&cut, &state).map_err(|e| Error::io(&state, e))?;
            } else if let Some(old) = same_state.filter(|p| p.exists() && *p != state) {
                std::fs::rename(&old, &state).map_err(|e| Error::io(&state, e))?;
            }
            db.commit_published(seq, lsn, &named)?;
            write_durably(&dir, ROOT_RECORD, &bytes)?;
            remove_durably(&dir, ROOT_NEXT)?;
            raise_seen(&dir, seq)?;
            remove_states_but(&dir, seq)
        })
        .await?;
        self.published_lsn.fetch_max(lsn, Ordering::AcqRel);
        self.published_seq.store(seq, Ordering::Release);
        st.top_seq = st.top_seq.max(seq);
        info!(seq, copies, "namespace published");
        self.commit_versions(st, body.versions).await;
        let (snapshot, segments) = (body.snapshot, body.segments.len());
        st.last = Some((rec, body));
        Ok(Published {
            seq,
            copies,
            snapshot,
            segments,
            uploaded,
        })
    }
}

impl Publisher {
    /// After a commit naming versions object `named`: the local list becomes the one staged
    /// for it (or the one kept already). A failure to write it only costs a fetch later.
    async fn commit_versions(&self, st: &mut State, named: Option<FileId>) {
        let staged = st.staged.take().filter(|(f, ..)| Some(*f) == named);
        let dir = self.dir.clone();
        let write = match (staged, named) {
            (Some((file, plain, list)), _) => {
                st.versions = Some((Some(file), list));
                blocking(move || versions::write_local(&dir, file, &plain)).await
            }
            (None, None) => {
                st.versions = Some((None, Vec::new()));
                blocking(move || files::remove_durably(&dir, versions::VERSIONS_FILE)).await
            }
            (None, Some(_)) => Ok(()),
        };
        if let Err(e) = write {
            warn!(error = %e, "publish: writing the local list of kept versions failed");
            st.versions = None;
        }
    }
}

/// The namespace objects a record's body names (its snapshot and segments).
fn named_objects(body: &RootBody) -> Vec<(FileId, ObjectKind)> {
    std::iter::once((body.snapshot.file, ObjectKind::Snapshot))
        .chain(body.segments.iter().map(|s| (s.file, ObjectKind::Segment)))
        .collect()
}

/// The stopping error again, for a later call (errors are not `Clone`).
fn lost_again(e: &Error) -> Error {
    match e {
        Error::RootRollback {
            owner,
            held,
            offered,
        } => Error::RootRollback {
            owner: *owner,
            held: *held,
            offered: *offered,
        },
        other => Error::InvalidArgument {
            what: format!("publishing stopped: {other}"),
        },
    }
}

#[cfg(test)]
mod tests;
