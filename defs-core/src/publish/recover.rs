//! Recovery from the key alone: this module owns finding an identity's newest root record that
//! verifies, fetching the snapshot it names, and restoring it into a new metadata DB that
//! appears in the data dir only once it is whole (docs/namespace-publishing.md §4).
//!
//! ```text
//!  RootStore::find_roots(owner) ─▶ verify each (signature, owner, puzzle, seq ≥ root.seen, body)
//!      ─▶ highest seq first:  per object (snapshot, segments): manifest by FileId (owner's wrap
//!                             key), length = the record's, bytes → recover.new/, trailer = record's
//!                             ─▶ apply_chain (each segment's base, index, prev) → state.snap
//!                             ─▶ MetaDb::restore_snapshot into recover.new/meta.redb (framing,
//!                                hash, inode twice, link counts, reachability, no cycle)
//!                             ─▶ published_seq; close (fsync)
//!      ─▶ any error: that candidate is refused with its reason, the next one is tried
//!      ─▶ root.record, root.seen; state.snap → published-<seq>.snap (the next segment's base);
//!         rename recover.new/meta.redb → DIR/meta/meta.redb
//! ```
//!
//! Nothing is written where the mount looks until a candidate restored completely: any error
//! leaves no DB. A caller that gets [`Recovered::refused`] non-empty loaded an older state than
//! the newest one that verified, and says so (the mount then mounts it read-only).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::files::{ROOT_RECORD, blocking, raise_seen, read_seen, state_file, write_durably};
use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;
use crate::identity::Identity;
use crate::meta::schema::{KEY_PUBLISHED_LSN, KEY_PUBLISHED_SEQ};
use crate::meta::{DB_FILE, LOG_FILE, MetaDb};
use crate::object::Objects;
use crate::remote::RootStore;
use crate::root_record::{ObjectRef, RootBody, RootRecord};
use crate::snapshot::SnapshotStats;
use crate::snapshot::segment::{MAX_SEGMENT_LEN, SegmentHead, apply_from};

/// The staging directory under `DIR/meta` a candidate is restored in.
pub const STAGING_DIR: &str = "recover.new";
/// The state a chain yields, in a staging directory.
pub(super) const STATE_FILE: &str = "state.snap";

/// A candidate record that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Its seq, when it verified far enough to tell.
    pub seq: Option<u64>,
    /// Why it was refused.
    pub reason: String,
}

/// What [`recover`] loaded.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// The seq of the record whose namespace is now the data dir's.
    pub seq: u64,
    /// When that record was made (ms since the epoch).
    pub time_ms: u64,
    /// What the restored snapshot held.
    pub stats: SnapshotStats,
    /// Candidates with a higher seq that verified but could not be loaded, newest first. Not
    /// empty: an older state than the newest published one was loaded.
    pub refused: Vec<Refusal>,
    /// Candidates dropped before any fetch (bad signature, another owner, a seq below the one
    /// seen here, a body that does not open), with the reason.
    pub dropped: Vec<Refusal>,
}

/// Recovers `identity`'s namespace into `meta_dir` (`DIR/meta`), which must hold no metadata
/// DB: the newest record among `roots` that verifies and whose snapshot loads completely.
/// Records are checked at `min_difficulty` (the network's identity puzzle).
///
/// # Errors
/// [`Error::AlreadyExists`] when `meta_dir` has a DB (nothing is touched);
/// [`Error::NoNamespace`] when no candidate verified and loaded (the reasons are in the error);
/// the root store's error when nobody could be asked; Io.
///
/// # Cancel safety
/// Safe: until the final rename nothing but the staging directory (removed by the next call)
/// and `root.seen` changes.
pub async fn recover(
    meta_dir: &Path,
    identity: &Identity,
    objects: &Objects,
    roots: &dyn RootStore,
    min_difficulty: u8,
) -> Result<Recovered> {
    let db_path = meta_dir.join(DB_FILE);
    if db_path.exists() {
        return Err(Error::AlreadyExists {
            what: format!(
                "{}: recovery only fills a data dir without a metadata DB",
                db_path.display()
            ),
        });
    }
    std::fs::create_dir_all(meta_dir).map_err(|e| Error::io(meta_dir, e))?;
    let owner = identity.node_id();
    let Candidates {
        found,
        verified: candidates,
        dropped,
    } = candidates(meta_dir, identity, roots, min_difficulty).await?;
    let top = candidates.first().map_or(0, |(r, _)| r.seq());
    let mut refused = Vec::new();
    for (rec, body) in candidates {
        match load(meta_dir, objects, &rec, &body).await {
            Ok(stats) => {
                write_durably(meta_dir, ROOT_RECORD, rec.as_bytes())?;
                // The newest seq that verified, loaded or not: a later publish numbers above
                // it, or the holders would refuse it as a rollback.
                raise_seen(meta_dir, top)?;
                put_in_place(meta_dir, rec.seq())?;
                // The kept versions (`/.snapshots`): the tree mounts without them.
                if let Err(e) = super::versions::sync_local(meta_dir, objects, body.versions).await
                {
                    warn!(seq = rec.seq(), error = %e, "recovery: the list of kept versions could not be fetched; /.snapshots stays empty until the next publish");
                }
                info!(
                    seq = rec.seq(),
                    inodes = stats.inodes,
                    refused = refused.len(),
                    "namespace recovered"
                );
                return Ok(Recovered {
                    seq: rec.seq(),
                    time_ms: rec.time_ms(),
                    stats,
                    refused,
                    dropped,
                });
            }
            Err(e) => {
                warn!(seq = rec.seq(), error = %e, "recovery: namespace could not be loaded");
                refused.push(Refusal {
                    seq: Some(rec.seq()),
                    reason: e.to_string(),
                });
            }
        }
    }
    let _ = std::fs::remove_dir_all(meta_dir.join(STAGING_DIR));
    let reasons: Vec<String> = refused
        .iter()
        .chain(&dropped)
        .map(|r| match r.seq {
            Some(s) => format!("seq {s}: {}", r.reason),
            None => r.reason.clone(),
        })
        .collect();
    Err(Error::NoNamespace {
        owner,
        detail: if found == 0 {
            "no peer holds a root record for it".into()
        } else {
            format!(
                "{found} record(s) found, none usable: {}",
                reasons.join("; ")
            )
        },
    })
}

/// What the places asked hold for an identity.
#[derive(Debug)]
pub struct Candidates {
    /// Records returned (duplicates included).
    pub found: usize,
    /// The records that verify as this identity's, not below `root.seen`, with their opened
    /// bodies, highest seq first, duplicates removed.
    pub verified: Vec<(RootRecord, RootBody)>,
    /// The others, with the reason (each is also logged).
    pub dropped: Vec<Refusal>,
}

/// Asks `roots` for `identity`'s records and checks them (signature at `min_difficulty`, owner,
/// seq not below `meta_dir`'s `root.seen`, the body opens): what a lease check at mount, a
/// read-only follower and [`recover`] start from. Reads only.
///
/// # Errors
/// The root store's error when nobody could be asked; Io, Corrupt (`root.seen`).
pub async fn candidates(
    meta_dir: &Path,
    identity: &Identity,
    roots: &dyn RootStore,
    min_difficulty: u8,
) -> Result<Candidates> {
    let raw = roots.find_roots(identity.node_id()).await?;
    let found = raw.len();
    let (verified, dropped) = sort_candidates(raw, identity, min_difficulty, read_seen(meta_dir)?);
    for d in &dropped {
        warn!(seq = ?d.seq, reason = %d.reason, "root record refused");
    }
    Ok(Candidates {
        found,
        verified,
        dropped,
    })
}

/// The candidates that verify as records of `identity` with a seq not below `seen`, with their
/// bodies, highest seq first (duplicates dropped); and the refused ones.
fn sort_candidates(
    raw: Vec<Vec<u8>>,
    identity: &Identity,
    min_difficulty: u8,
    seen: u64,
) -> (Vec<(RootRecord, RootBody)>, Vec<Refusal>) {
    let owner = identity.node_id();
    let mut good: Vec<(RootRecord, RootBody)> = Vec::new();
    let mut dropped = Vec::new();
    for bytes in raw {
        let rec = match RootRecord::verify(&bytes, min_difficulty) {
            Ok(r) => r,
            Err(e) => {
                dropped.push(Refusal {
                    seq: None,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let reason = if rec.owner() != owner {
            Some(format!("a record of another owner ({})", rec.owner()))
        } else if rec.seq() < seen {
            Some(format!(
                "seq {} is below seq {seen} already seen here (rollback)",
                rec.seq()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            dropped.push(Refusal {
                seq: Some(rec.seq()),
                reason,
            });
            continue;
        }
        if good.iter().any(|(g, _)| g.as_bytes() == rec.as_bytes()) {
            continue;
        }
        match rec.open_body(identity) {
            Ok(body) => good.push((rec, body)),
            Err(e) => dropped.push(Refusal {
                seq: Some(rec.seq()),
                reason: e.to_string(),
            }),
        }
    }
    good.sort_by_key(|(r, _)| std::cmp::Reverse(r.seq()));
    (good, dropped)
}

/// Fetches one candidate's snapshot and segments, applies the chain, and restores the result
/// into the staging directory (`meta.redb`, and `state.snap`: the published state, kept as the
/// base of the next segment this data dir publishes).
async fn load(
    meta_dir: &Path,
    objects: &Objects,
    rec: &RootRecord,
    body: &RootBody,
) -> Result<SnapshotStats> {
    let staging = meta_dir.join(STAGING_DIR);
    load_chain(&staging, objects, &body.snapshot, &body.segments, rec.seq()).await
}

/// Fetches `snapshot` and `segments` (the chain of record `seq`), applies the chain, and
/// restores the result into directory `staging` (made anew): `meta.redb` and `state.snap`.
/// On any error `staging` is removed.
pub(super) async fn load_chain(
    staging: &Path,
    objects: &Objects,
    snapshot: &ObjectRef,
    segments: &[ObjectRef],
    seq: u64,
) -> Result<SnapshotStats> {
    let result = async {
        let state = fetch_state(staging, objects, snapshot, segments, None).await?;
        let staging = staging.to_path_buf();
        blocking(move || -> Result<SnapshotStats> {
            let file = File::open(&state).map_err(|e| Error::io(&state, e))?;
            let db = MetaDb::open_with(&staging, None)?;
            let stats = db.restore_snapshot(BufReader::new(file))?;
            let lsn = db.lsn()?;
            db.set_counters_durable(&[(KEY_PUBLISHED_SEQ, seq), (KEY_PUBLISHED_LSN, lsn)])?;
            db.close()?;
            Ok(stats)
        })
        .await
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(staging);
    }
    result
}

/// What a chain already applied locally lets a fetch skip: the state file it yields and the
/// record body that names it.
pub(super) struct Applied<'a> {
    /// The full snapshot (plaintext) the chain of `body` yields.
    pub(super) state: &'a Path,
    /// The body of the record whose state that is.
    pub(super) body: &'a RootBody,
}

/// Makes `staging` (emptied first) hold `STATE_FILE`, the full snapshot the chain `snapshot` +
/// `chain` yields, and returns its path. With `from` naming the same snapshot and a chain that
/// `chain` extends, only the new segments are fetched and applied to `from`'s state; else the
/// snapshot and every segment are fetched. Every object's length and trailer are checked against
/// the record, every segment's place in the chain against its header.
///
/// # Errors
/// Corrupt (an object or the chain), the network's errors, Io.
pub(super) async fn fetch_state(
    staging: &Path,
    objects: &Objects,
    snapshot: &ObjectRef,
    chain: &[ObjectRef],
    from: Option<Applied<'_>>,
) -> Result<PathBuf> {
    match std::fs::remove_dir_all(staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(staging, e));
        }
        _ => {}
    }
    std::fs::create_dir_all(staging).map_err(|e| Error::io(staging, e))?;
    let snap = *snapshot;
    let from = from.filter(|f| {
        f.body.snapshot == snap && chain.starts_with(&f.body.segments) && f.state.exists()
    });
    let (base, done) = match &from {
        Some(f) => (f.state.to_path_buf(), f.body.segments.len()),
        None => {
            let base = staging.join("snapshot");
            fetch_object(objects, snap.file, snap.len, &snap.trailer, &base).await?;
            (base, 0)
        }
    };
    let mut segments = Vec::with_capacity(chain.len() - done);
    for (i, seg) in chain.iter().enumerate().skip(done) {
        if seg.len > MAX_SEGMENT_LEN {
            return Err(Error::Corrupt {
                what: "root record",
                reason: format!(
                    "segment {} of {} bytes (limit {MAX_SEGMENT_LEN})",
                    i + 1,
                    seg.len
                ),
            });
        }
        let path = staging.join(format!("segment-{}", i + 1));
        fetch_object(objects, seg.file, seg.len, &seg.trailer, &path).await?;
        segments.push(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
    }
    let first = SegmentHead {
        base: snap.trailer,
        index: u32::try_from(done + 1).unwrap_or(u32::MAX),
        prev: done
            .checked_sub(1)
            .and_then(|i| chain.get(i))
            .map_or(snap.trailer, |s| s.trailer),
        next_ino: 0,
    };
    let state = staging.join(STATE_FILE);
    let out_path = state.clone();
    blocking(move || {
        let input = File::open(&base).map_err(|e| Error::io(&base, e))?;
        let out = File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
        let mut w = BufWriter::new(out);
        apply_from(BufReader::new(input), &first, &segments, &mut w)?;
        let out = w
            .into_inner()
            .map_err(|e| Error::io(&out_path, e.into_error()))?;
        out.sync_all().map_err(|e| Error::io(&out_path, e))
    })
    .await?;
    Ok(state)
}

/// Reads object `file` (the owner's, opened with the wrap key) into a new file at `path`,
/// checking that it is `len` bytes long and ends with `trailer`, as its record says.
async fn fetch_object(
    objects: &Objects,
    file: crate::types::FileId,
    len: u64,
    trailer: &[u8; 32],
    path: &Path,
) -> Result<()> {
    let corrupt = |reason: String| Error::Corrupt {
        what: "namespace object",
        reason: format!("{file}: {reason}"),
    };
    let (manifest, key) = objects.open_owned(file).await?;
    if manifest.size != len {
        return Err(corrupt(format!(
            "{} bytes, its record says {len}",
            manifest.size
        )));
    }
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let step = manifest.geometry.segment_size().max(1);
    let mut at = 0u64;
    while at < len {
        let (start, bytes) = objects
            .read_covering(file, &manifest, &key, at, step.min(len - at))
            .await?;
        let end = start + bytes.len() as u64;
        if start > at || end <= at {
            return Err(corrupt(format!("a read at {at} returned nothing")));
        }
        out.write_all_at(&bytes, start)
            .map_err(|e| Error::io(path, e))?;
        at = end;
    }
    let mut tail = [0u8; 32];
    let mut f = &out;
    if len < 32
        || f.seek(SeekFrom::Start(len - 32)).is_err()
        || f.read_exact(&mut tail).is_err()
        || &tail != trailer
    {
        return Err(corrupt("its trailer differs from its record's".into()));
    }
    Ok(())
}

/// Moves the staged published state and DB into place (after moving aside a redo log that
/// belonged to no DB), then removes the staging directory.
fn put_in_place(meta_dir: &Path, seq: u64) -> Result<()> {
    let staging = meta_dir.join(STAGING_DIR);
    let state = meta_dir.join(state_file(seq));
    std::fs::rename(staging.join(STATE_FILE), &state).map_err(|e| Error::io(&state, e))?;
    let log = meta_dir.join(LOG_FILE);
    if log.exists() {
        let aside = meta_dir.join(format!("{LOG_FILE}.orphaned"));
        warn!(path = %log.display(), "a redo log without its DB is moved aside");
        std::fs::rename(&log, &aside).map_err(|e| Error::io(&log, e))?;
    }
    let target = meta_dir.join(DB_FILE);
    std::fs::rename(staging.join(DB_FILE), &target).map_err(|e| Error::io(&target, e))?;
    fsync_dir(meta_dir)?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}
