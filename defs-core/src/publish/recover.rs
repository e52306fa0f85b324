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
//!      ─▶ any error: that candidate is refused with its reason, the next one is tried; after
//!         the first failure the kept versions its versions object lists (the newest list that
//!         fetches) join the queue by seq: the newest state that verifies is loaded, a record's
//!         or a kept version's (a version's state file is not kept: it is no base for segments)
//!      ─▶ root.record, root.seen; state.snap → published-<seq>.snap (the next segment's base);
//!         rename recover.new/meta.redb → DIR/meta/meta.redb
//! ```
//!
//! Nothing is written where the mount looks until a candidate restored completely: any error
//! leaves no DB. A caller that gets [`Recovered::refused`] non-empty loaded an older state than
//! the newest one that verified, and says so (the mount then mounts it read-only).

use std::path::Path;

use tracing::{info, warn};

use super::chain::load_chain;
use super::files::{LEDGER_DERIVE, ROOT_RECORD, raise_seen, read_seen, state_file, write_durably};
use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;
use crate::identity::Identity;
use crate::meta::{DB_FILE, LOG_FILE};
use crate::object::Objects;
use crate::remote::RootStore;
use crate::root_record::{ObjectRef, RootBody, RootRecord};
use crate::snapshot::SnapshotStats;

/// The staging directory under `DIR/meta` a candidate is restored in.
pub const STAGING_DIR: &str = "recover.new";
/// The state a chain yields, in a staging directory.
pub(super) use super::chain::STATE_FILE;

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
    /// The state loaded is a kept version (`/.snapshots`) listed by a newer record whose own
    /// state did not load, not the state of a record.
    pub kept_version: bool,
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
    let mut states: Vec<State> = candidates
        .into_iter()
        .map(|(rec, body)| State {
            seq: rec.seq(),
            time_ms: rec.time_ms(),
            snapshot: body.snapshot,
            segments: body.segments.clone(),
            kept_version: false,
            record: rec,
            body,
        })
        .collect();
    let mut refused = Vec::new();
    let mut versions_added = false;
    let mut i = 0;
    while let Some(state) = states.get(i) {
        match load_chain(
            &meta_dir.join(STAGING_DIR),
            objects,
            &state.snapshot,
            &state.segments,
            state.seq,
        )
        .await
        {
            Ok(stats) => {
                let (rec, body) = (&state.record, &state.body);
                write_durably(meta_dir, ROOT_RECORD, rec.as_bytes())?;
                // The lost machine's garbage is what the kept versions name and the namespace
                // does not: the ledger learns it before the first collection here.
                write_durably(meta_dir, LEDGER_DERIVE, b"")?;
                // The newest seq that verified, loaded or not: a later publish numbers above
                // it, or the holders would refuse it as a rollback.
                raise_seen(meta_dir, top)?;
                // A kept version is not the state its record names: no base for a segment on
                // that record's chain (the next publish stores a full snapshot).
                put_in_place(meta_dir, (!state.kept_version).then_some(rec.seq()))?;
                // The kept versions (`/.snapshots`): the tree mounts without them.
                if let Err(e) = super::versions::sync_local(meta_dir, objects, body.versions).await
                {
                    warn!(seq = rec.seq(), error = %e, "recovery: the list of kept versions could not be fetched; /.snapshots stays empty until the next publish");
                }
                info!(
                    seq = state.seq,
                    kept_version = state.kept_version,
                    inodes = stats.inodes,
                    refused = refused.len(),
                    "namespace recovered"
                );
                return Ok(Recovered {
                    seq: state.seq,
                    time_ms: state.time_ms,
                    kept_version: state.kept_version,
                    stats,
                    refused,
                    dropped,
                });
            }
            Err(e) => {
                warn!(seq = state.seq, kept_version = state.kept_version, error = %e, "recovery: namespace could not be loaded");
                refused.push(Refusal {
                    seq: Some(state.seq),
                    reason: if state.kept_version {
                        format!("kept version: {e}")
                    } else {
                        e.to_string()
                    },
                });
            }
        }
        i += 1;
        if !versions_added {
            // The newest state failed: the kept versions its record lists (the newest
            // versions object that loads) join the older records, newest first.
            versions_added = true;
            let kept: Vec<State> = kept_fallbacks(objects, &states)
                .await
                .into_iter()
                // A version whose state a record names is tried (or was) as that record.
                .filter(|v| {
                    !states
                        .iter()
                        .any(|s| s.snapshot == v.snapshot && s.segments == v.segments)
                })
                .collect();
            states.extend(kept);
            states[i..].sort_by_key(|s| (std::cmp::Reverse(s.seq), s.kept_version));
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
    // Highest seq first; two records of one seq (two writers: one cut off from the network
    // kept publishing while another took over) are ordered by the hash of their bytes, so
    // every reader picks the same one, and the other is refused as a conflict.
    good.sort_by_cached_key(|(r, _)| {
        (
            std::cmp::Reverse(r.seq()),
            *blake3::hash(r.as_bytes()).as_bytes(),
        )
    });
    let mut kept: Vec<(RootRecord, RootBody)> = Vec::with_capacity(good.len());
    for (rec, body) in good {
        match kept.last() {
            Some((first, first_body)) if first.seq() == rec.seq() => dropped.push(Refusal {
                seq: Some(rec.seq()),
                reason: format!(
                    "a conflict: seq {} names two records (writers {} and {}); the other one \
                     is loaded, this one's changes are only in its writer's data dir",
                    rec.seq(),
                    first_body.writer_name,
                    body.writer_name
                ),
            }),
            _ => kept.push((rec, body)),
        }
    }
    (kept, dropped)
}

/// One state recovery may load: the one a record names, or a kept version its versions object
/// lists (then `seq` is the version's, `record` the one whose list named it).
struct State {
    seq: u64,
    time_ms: u64,
    snapshot: ObjectRef,
    segments: Vec<ObjectRef>,
    kept_version: bool,
    record: RootRecord,
    body: RootBody,
}

/// The kept versions listed by the newest versions object among `states`' records that can be
/// fetched, each with the record that named the list; none when no list loads (logged).
async fn kept_fallbacks(objects: &Objects, states: &[State]) -> Vec<State> {
    for s in states.iter().filter(|s| !s.kept_version) {
        let Some(file) = s.body.versions else {
            continue;
        };
        match super::versions::fetch(objects, file).await {
            Ok((list, _)) => {
                return list
                    .into_iter()
                    .map(|v| State {
                        seq: v.seq,
                        time_ms: v.time_ms,
                        snapshot: v.snapshot,
                        segments: v.segments,
                        kept_version: true,
                        record: s.record.clone(),
                        body: s.body.clone(),
                    })
                    .collect();
            }
            Err(e) => {
                warn!(seq = s.seq, error = %e, "recovery: the kept versions this record lists could not be fetched");
            }
        }
    }
    Vec::new()
}

/// Moves the staged DB into place (after moving aside a redo log that belonged to no DB), and
/// the staged published state as record `seq`'s when given, then removes the staging directory.
fn put_in_place(meta_dir: &Path, seq: Option<u64>) -> Result<()> {
    let staging = meta_dir.join(STAGING_DIR);
    if let Some(seq) = seq {
        let state = meta_dir.join(state_file(seq));
        std::fs::rename(staging.join(STATE_FILE), &state).map_err(|e| Error::io(&state, e))?;
    }
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
