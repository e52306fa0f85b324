//! Kept versions of the published namespace (`/.snapshots`): this module owns which published
//! states are kept ([`keeps`], [`retain`]), the set the garbage collector must spare
//! ([`kept_seqs`]), the versions object that lists them on the network (`DEFSVERS`,
//! `docs/format.md` "Versions object") with its local copy `DIR/meta/versions.list`, and
//! restoring one kept version into a DB of its own (`DIR/meta/versions/<seq>/`).
//!
//! ```text
//!  publish (why: change | sync | release) ─▶ keeps(why, list, state, time)? append
//!      ─▶ retain(list, current, now): newest keep_versions, none older than keep_days,
//!         the current state always
//!      ─▶ list changed?  Objects::put(encode(list)) ─▶ its FileId in the record's body
//!      ─▶ commit: versions.list = FileId ‖ plaintext (what /.snapshots lists)
//!  recovery ─▶ the record's versions object fetched ─▶ versions.list
//!  /.snapshots/<time> ─▶ restore(version): its snapshot + segments ─▶ versions/<seq>/meta.redb
//! ```
//!
//! A version is named by the seq of the record that first published its state, and carries that
//! record's chain (snapshot and segments), so it loads without that record: the network keeps
//! only the newest record per owner.

use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use super::files::{MemSource, blocking, write_durably};
use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;
use crate::meta::MetaDb;
use crate::object::Objects;
use crate::root_record::{MAX_SEGMENTS, ObjectRef, put_chain};
use crate::sync::Arc;
use crate::types::FileId;

/// Magic of a versions object.
pub const MAGIC: [u8; 8] = *b"DEFSVERS";
/// Versions object layout written and read by this build.
pub const VERSION: u32 = 1;
/// The most versions a list holds (and `namespace.keep_versions` allows): each has an inode
/// slot of its own in the mount (`/.snapshots`, 8 bits).
pub const MAX_VERSIONS: usize = 255;
/// The local copy of the current versions list: its object's FileId (32 bytes) ‖ plaintext.
pub const VERSIONS_FILE: &str = "versions.list";
/// The directory under `DIR/meta` holding one restored DB per browsed version.
pub const VERSIONS_DIR: &str = "versions";

/// Fixed bytes: magic 8, layout version 4, count 4.
const HEAD_LEN: usize = 16;
/// Fixed bytes of one entry: seq 8, time 8, snapshot FileId 32 + len 8 + trailer 32, segment
/// count 2.
const ENTRY_FIXED_LEN: usize = 8 + 8 + 72 + 2;
/// One segment of an entry: FileId 32, len u32, trailer 32.
const SEGMENT_LEN: usize = 32 + 4 + 32;

/// Why a state is being published: a state made for `defs sync` or by the release at unmount
/// is always kept; others only as the first state of their time bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Changes, debounced, or a lease renewal.
    Change,
    /// `defs sync`.
    Sync,
    /// The release at unmount.
    Release,
}

/// Retention (`config.toml` `[namespace]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Kept versions at most (the newest), 1..=[`MAX_VERSIONS`].
    pub keep_versions: u32,
    /// None older than this many days (0: age does not drop any).
    pub keep_days: u32,
    /// The first published state of each bucket of this many seconds is kept.
    pub every_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_versions: 48,
            keep_days: 30,
            every_secs: 3600,
        }
    }
}

/// One kept version: the published state of record `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The seq of the record that first published this state.
    pub seq: u64,
    /// That record's time, ms since the epoch (the name under `/.snapshots`).
    pub time_ms: u64,
    /// The full snapshot the state starts from.
    pub snapshot: ObjectRef,
    /// The segments applied on top of it.
    pub segments: Vec<ObjectRef>,
}

impl Version {
    /// Whether this version's state is the one `snapshot` + `segments` yield.
    pub fn is_state(&self, snapshot: &ObjectRef, segments: &[ObjectRef]) -> bool {
        self.snapshot == *snapshot && self.segments == segments
    }

    /// Its name under `/.snapshots`: the record's UTC time, `2026-12-07T145300Z`.
    pub fn name(&self) -> String {
        utc_name(self.time_ms)
    }
}

/// Whether the state `snapshot` + `segments`, published at `time_ms` for `why`, becomes a kept
/// version, given the kept `list` (oldest first): never when it is the newest kept state
/// already; always for `defs sync` and the release; else when it is the first state of its
/// `every_secs` bucket (no kept version in the same bucket).
pub fn keeps(
    why: Why,
    list: &[Version],
    snapshot: &ObjectRef,
    segments: &[ObjectRef],
    time_ms: u64,
    retention: &Retention,
) -> bool {
    let Some(newest) = list.last() else {
        return true;
    };
    if newest.is_state(snapshot, segments) {
        return false;
    }
    match why {
        Why::Sync | Why::Release => true,
        Why::Change => {
            let bucket = |t: u64| t / (retention.every_secs.max(1) * 1000);
            list.iter().all(|v| bucket(v.time_ms) != bucket(time_ms))
        }
    }
}

/// The versions of `list` that stay at `now_ms`: the newest `keep_versions`, none older than
/// `keep_days`, and always the one whose state is `current` (the published state), oldest
/// first.
pub fn retain(
    mut list: Vec<Version>,
    current: (&ObjectRef, &[ObjectRef]),
    now_ms: u64,
    retention: &Retention,
) -> Vec<Version> {
    list.sort_by_key(|v| v.seq);
    list.dedup_by_key(|v| v.seq);
    let max_age = u64::from(retention.keep_days) * 86_400_000;
    let keep = (retention.keep_versions as usize).clamp(1, MAX_VERSIONS);
    let n = list.len();
    list.into_iter()
        .enumerate()
        .filter(|(i, v)| {
            v.is_state(current.0, current.1)
                || (n - i <= keep
                    && (retention.keep_days == 0 || now_ms.saturating_sub(v.time_ms) <= max_age))
        })
        .map(|(_, v)| v)
        .collect()
}

/// The seqs the garbage collector must keep loadable: every kept version's and the current
/// published record's (`current`, 0 for none), ascending, without repeats. An object may be
/// deleted only if no seq `v` here has `born ≤ v < dead`.
pub fn kept_seqs(list: &[Version], current: u64) -> Vec<u64> {
    let mut seqs: Vec<u64> = list.iter().map(|v| v.seq).collect();
    if current > 0 {
        seqs.push(current);
    }
    seqs.sort_unstable();
    seqs.dedup();
    seqs
}

/// The plaintext of a versions object listing `list` (oldest first).
///
/// # Errors
/// [`Error::TooLarge`] over [`MAX_VERSIONS`] versions or [`MAX_SEGMENTS`] segments in one.
pub fn encode(list: &[Version]) -> Result<Vec<u8>> {
    if list.len() > MAX_VERSIONS {
        return Err(Error::TooLarge {
            what: "versions list",
            size: list.len() as u64,
            limit: MAX_VERSIONS as u64,
        });
    }
    let mut out = Vec::with_capacity(HEAD_LEN + list.len() * ENTRY_FIXED_LEN + 32);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    for v in list {
        if v.segments.len() > MAX_SEGMENTS {
            return Err(Error::TooLarge {
                what: "a kept version's segment list",
                size: v.segments.len() as u64,
                limit: MAX_SEGMENTS as u64,
            });
        }
        out.extend_from_slice(&v.seq.to_le_bytes());
        out.extend_from_slice(&v.time_ms.to_le_bytes());
        put_chain(&mut out, &v.snapshot, &v.segments)?;
    }
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    Ok(out)
}

/// Parses a versions object's plaintext, checking everything: magic, layout version, the
/// trailer (BLAKE3 of all bytes before it), counts against their limits and the bytes
/// present, seqs strictly increasing, no trailing bytes.
///
/// # Errors
/// [`Error::Corrupt`] naming what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Vec<Version>> {
    let bad = |reason: String| Error::Corrupt {
        what: "versions object",
        reason,
    };
    if bytes.len() < HEAD_LEN + 32 {
        return Err(bad(format!(
            "{} bytes, shorter than any versions object",
            bytes.len()
        )));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    if body[..8] != MAGIC {
        return Err(bad("not a versions object (bad magic)".into()));
    }
    if blake3::hash(body).as_bytes() != trailer {
        return Err(bad("its trailer does not match its bytes".into()));
    }
    let mut r = Cursor { bytes: body, at: 8 };
    let version = r.u32()?;
    if version != VERSION {
        return Err(bad(format!(
            "unknown layout version {version} (this build reads {VERSION})"
        )));
    }
    let count = r.u32()? as usize;
    if count > MAX_VERSIONS {
        return Err(bad(format!("{count} versions (limit {MAX_VERSIONS})")));
    }
    let mut list: Vec<Version> = Vec::with_capacity(count);
    for _ in 0..count {
        let seq = r.u64()?;
        let time_ms = r.u64()?;
        let snapshot = ObjectRef {
            file: FileId(r.array()?),
            len: r.u64()?,
            trailer: r.array()?,
        };
        let n = usize::from(u16::from_le_bytes(r.array()?));
        if n > MAX_SEGMENTS {
            return Err(bad(format!(
                "version {seq} names {n} segments (limit {MAX_SEGMENTS})"
            )));
        }
        let mut segments = Vec::with_capacity(n);
        for _ in 0..n {
            segments.push(ObjectRef {
                file: FileId(r.array()?),
                len: u64::from(r.u32()?),
                trailer: r.array()?,
            });
        }
        if list.last().is_some_and(|l| l.seq >= seq) || seq == 0 {
            return Err(bad(format!("seq {seq} out of order")));
        }
        list.push(Version {
            seq,
            time_ms,
            snapshot,
            segments,
        });
    }
    if r.at != body.len() {
        return Err(bad(format!("{} bytes after the list", body.len() - r.at)));
    }
    Ok(list)
}

/// A cursor over the bytes of a versions object that refuses to read past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let got = self
            .at
            .checked_add(N)
            .and_then(|end| self.bytes.get(self.at..end));
        let Some(got) = got else {
            return Err(Error::Corrupt {
                what: "versions object",
                reason: format!("it ends after {} bytes, inside an entry", self.bytes.len()),
            });
        };
        self.at += N;
        let mut out = [0u8; N];
        out.copy_from_slice(got);
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Stores `list` as a versions object (an ordinary object: own key, RS, the owner's manifest)
/// and returns its FileId with its plaintext.
///
/// # Errors
/// As [`encode`] and `Objects::put`.
pub async fn store(objects: &Objects, list: &[Version]) -> Result<(FileId, Vec<u8>)> {
    let plain = encode(list)?;
    let len = plain.len() as u64;
    let stored = objects
        .put(Arc::new(MemSource(plain.clone())), len, None, &|_| {})
        .await?;
    debug!(file = %stored.file, versions = list.len(), "versions object stored");
    Ok((stored.file, plain))
}

/// Fetches and parses versions object `file` (opened with the owner's wrap key: another
/// owner's object does not open).
///
/// # Errors
/// The fetch's errors; [`Error::Corrupt`] when it does not parse.
pub async fn fetch(objects: &Objects, file: FileId) -> Result<(Vec<Version>, Vec<u8>)> {
    let (manifest, key) = objects.open_owned(file).await?;
    let max =
        (HEAD_LEN + 32 + MAX_VERSIONS * (ENTRY_FIXED_LEN + MAX_SEGMENTS * SEGMENT_LEN)) as u64;
    if manifest.size > max {
        return Err(Error::Corrupt {
            what: "versions object",
            reason: format!("{file}: {} bytes (limit {max})", manifest.size),
        });
    }
    let plain = objects
        .read_all(file, &manifest, &key, "versions object")
        .await?;
    let list = decode(&plain).map_err(|e| Error::Corrupt {
        what: "versions object",
        reason: format!("{file}: {e}"),
    })?;
    Ok((list, plain))
}

/// Writes the local copy of versions object `file` (`DIR/meta/versions.list`), durably.
///
/// # Errors
/// Io.
pub fn write_local(meta_dir: &Path, file: FileId, plain: &[u8]) -> Result<()> {
    let mut bytes = file.0.to_vec();
    bytes.extend_from_slice(plain);
    write_durably(meta_dir, VERSIONS_FILE, &bytes)
}

/// The local copy: the versions object it copies and the list; `None` when there is none.
///
/// # Errors
/// Io; [`Error::Corrupt`] for a damaged copy.
pub fn read_local(meta_dir: &Path) -> Result<Option<(FileId, Vec<Version>)>> {
    let path = meta_dir.join(VERSIONS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let Some((id, plain)) = bytes.split_first_chunk::<32>() else {
        return Err(Error::Corrupt {
            what: "versions.list",
            reason: format!("{} bytes", bytes.len()),
        });
    };
    Ok(Some((FileId(*id), decode(plain)?)))
}

/// Makes the local copy match versions object `file` (what a record names; `None`: no kept
/// versions): nothing to do when it does already, else fetched. Returns the list.
///
/// # Errors
/// The fetch's errors (the local copy is then unchanged).
pub async fn sync_local(
    meta_dir: &Path,
    objects: &Objects,
    file: Option<FileId>,
) -> Result<Vec<Version>> {
    let Some(file) = file else {
        super::files::remove_durably(meta_dir, VERSIONS_FILE)?;
        return Ok(Vec::new());
    };
    match read_local(meta_dir) {
        Ok(Some((have, list))) if have == file => return Ok(list),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "the local versions list is damaged; fetching it again"),
    }
    let (list, plain) = fetch(objects, file).await?;
    write_local(meta_dir, file, &plain)?;
    Ok(list)
}

/// The directory of version `seq`'s restored DB.
pub fn version_dir(meta_dir: &Path, seq: u64) -> PathBuf {
    meta_dir.join(VERSIONS_DIR).join(seq.to_string())
}

/// Restores kept version `v` into a DB of its own (`DIR/meta/versions/<seq>/`), fetching its
/// snapshot and segments through `objects` and checking them as recovery does (lengths,
/// trailers, the chain, the tree); a DB restored earlier is reused. Returns the DB's directory.
///
/// # Errors
/// As recovery's load (Corrupt naming the object; fetch errors); nothing is left half-made.
pub async fn restore(meta_dir: &Path, objects: &Objects, v: &Version) -> Result<PathBuf> {
    let dir = version_dir(meta_dir, v.seq);
    if dir.join(crate::meta::DB_FILE).exists() {
        return Ok(dir);
    }
    let parent = meta_dir.join(VERSIONS_DIR);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let staging = parent.join(format!("{}.new", v.seq));
    super::chain::load_chain(&staging, objects, &v.snapshot, &v.segments, v.seq).await?;
    let (staging2, dir2) = (staging.clone(), dir.clone());
    blocking(move || {
        // Only the DB is needed to browse; the fetched objects and the state go.
        for entry in std::fs::read_dir(&staging2)
            .map_err(|e| Error::io(&staging2, e))?
            .flatten()
        {
            let name = entry.file_name();
            if name != crate::meta::DB_FILE && name != crate::meta::LOG_FILE {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        std::fs::rename(&staging2, &dir2).map_err(|e| Error::io(&dir2, e))?;
        if let Some(p) = dir2.parent() {
            fsync_dir(p)?;
        }
        Ok(())
    })
    .await?;
    Ok(dir)
}

/// Opens the restored DB of version `seq` (see [`restore`]).
///
/// # Errors
/// As `MetaDb::open_with`.
pub fn open_restored(dir: &Path) -> Result<MetaDb> {
    MetaDb::open_with(dir, None)
}

/// Removes the restored DBs of versions not in `keep` (and staging left by an interrupted
/// restore); the DBs must not be open.
pub fn remove_restored_but(meta_dir: &Path, keep: &[u64]) {
    let dir = meta_dir.join(VERSIONS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let seq = name.to_str().and_then(|n| n.parse::<u64>().ok());
        if seq.is_none_or(|s| !keep.contains(&s)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `time_ms` as a UTC name, `2026-12-07T145300Z` (second precision; no colons, so the name is
/// the same in every shell and on every filesystem a copy lands on).
pub fn utc_name(time_ms: u64) -> String {
    let secs = time_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;
