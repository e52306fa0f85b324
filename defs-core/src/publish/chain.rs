//! Fetching one published state: a snapshot and its chain of segments, each object checked
//! against the record that names it, applied into a full snapshot (`STATE_FILE`), and, for
//! [`load_chain`], restored into a metadata DB. Recovery, the read-only follower and kept
//! versions (`/.snapshots`) all load states through it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::debug;

use super::files::blocking;
use crate::error::{Error, Result};
use crate::meta::MetaDb;
use crate::meta::schema::{KEY_PUBLISHED_LSN, KEY_PUBLISHED_SEQ};
use crate::object::Objects;
use crate::root_record::{ObjectRef, RootBody};
use crate::snapshot::SnapshotStats;
use crate::snapshot::segment::{MAX_SEGMENT_LEN, SegmentHead, apply_from};

/// The full snapshot a chain yields, in a staging directory.
pub(super) const STATE_FILE: &str = "state.snap";

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
        let started = std::time::Instant::now();
        let state = fetch_state(staging, objects, snapshot, segments, None).await?;
        let fetched = started.elapsed();
        let staging = staging.to_path_buf();
        let stats = blocking(move || -> Result<SnapshotStats> {
            let file = File::open(&state).map_err(|e| Error::io(&state, e))?;
            let db = MetaDb::open_with(&staging, None)?;
            let stats = db.restore_snapshot(BufReader::new(file))?;
            let lsn = db.lsn()?;
            db.set_counters_durable(&[(KEY_PUBLISHED_SEQ, seq), (KEY_PUBLISHED_LSN, lsn)])?;
            db.close()?;
            Ok(stats)
        })
        .await?;
        debug!(
            seq,
            bytes = stats.bytes,
            inodes = stats.inodes,
            fetch_ms = fetched.as_millis() as u64,
            restore_ms = (started.elapsed() - fetched).as_millis() as u64,
            "published state loaded"
        );
        Ok(stats)
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
