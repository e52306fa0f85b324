//! Test fixtures for the metadata DB: an integrity checker, a canonical dump, a seeded
//! operation generator and an in-memory reference model of the namespace; and the harness the
//! crash tests share to run a child process and SIGKILL it ([`CrashChild`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redb::{ReadableTable, ReadableTableMetadata};

use crate::error::Error;
use crate::meta::MetaDb;
use crate::meta::schema::{COOKIES, DIRENTS, INODES, JOURNAL, KEY_NEXT_INO, META, ORPHANS, XATTRS};
use crate::namespace::record::InodeRecord;
use crate::namespace::*;
use crate::types::{FileId, Generation, InodeNo};

/// The errno name a namespace error maps to (the FUSE crate's table, for tests).
pub(crate) fn code(e: &Error) -> &'static str {
    match e {
        Error::NotFound { .. } => "ENOENT",
        Error::AlreadyExists { .. } => "EEXIST",
        Error::NotEmpty { .. } => "ENOTEMPTY",
        Error::NotADirectory { .. } => "ENOTDIR",
        Error::IsADirectory { .. } => "EISDIR",
        Error::NameTooLong { .. } => "ENAMETOOLONG",
        Error::InvalidArgument { .. } => "EINVAL",
        Error::NotPermitted { .. } => "EPERM",
        Error::NoXattr { .. } => "ENODATA",
        Error::XattrTooLarge { .. } => "E2BIG",
        Error::XattrNameInvalid { .. } => "ERANGE",
        other => panic!("unexpected error {other:#}"),
    }
}

/// SplitMix64: a tiny deterministic generator (the crash test's child and parent must agree).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Names the test a re-executed test binary runs as a crash child; its directory and seed
/// travel in the two variables after it.
const CRASH_CHILD_ENV: &str = "DEFS_CRASH_CHILD";
const CRASH_DIR_ENV: &str = "DEFS_CRASH_DIR";
const CRASH_SEED_ENV: &str = "DEFS_CRASH_SEED";

/// A crash test's child: this test binary re-executed to run only the role test `test` (which
/// starts with [`crash_child_args`]), in `dir` with `seed`, for the parent to SIGKILL.
pub(crate) struct CrashChild(pub(crate) Child);

impl CrashChild {
    /// Starts the child; `stdout` is where it prints (`Stdio::piped()` to read its progress).
    pub(crate) fn spawn(test: &str, dir: &Path, seed: u64, stdout: Stdio) -> CrashChild {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_ENV, test)
            .env(CRASH_DIR_ENV, dir)
            .env(CRASH_SEED_ENV, seed.to_string())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        CrashChild(child)
    }

    /// Waits (5 s at most) until the child has made `ready`, sleeps `delay`, then SIGKILLs it
    /// and reaps it.
    pub(crate) fn kill_when_ready(mut self, ready: &Path, delay: Duration) {
        let started = Instant::now();
        while !ready.exists() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(delay);
        self.kill();
    }

    /// SIGKILLs the child and reaps it.
    pub(crate) fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

/// In the role test `test`: its directory and seed when [`CrashChild::spawn`] started this
/// process for it, `None` in an ordinary test run (the role test then does nothing).
pub(crate) fn crash_child_args(test: &str) -> Option<(PathBuf, u64)> {
    if std::env::var(CRASH_CHILD_ENV).ok()? != test {
        return None;
    }
    let dir = std::env::var_os(CRASH_DIR_ENV).unwrap().into();
    let seed = std::env::var(CRASH_SEED_ENV).unwrap().parse().unwrap();
    Some((dir, seed))
}

/// Whether this process is a crash child (a parent test then returns at once).
pub(crate) fn in_crash_child() -> bool {
    std::env::var_os(CRASH_CHILD_ENV).is_some()
}

/// A crash child's record of how far it got: one line "N" per step, each appended with one
/// write(2), which the page cache keeps across SIGKILL without an fsync.
pub(crate) struct Progress(std::fs::File);

impl Progress {
    /// Creates (or appends to) the record at `path`.
    pub(crate) fn open(path: &Path) -> Progress {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Progress(file)
    }

    /// Records that step `n` is done.
    pub(crate) fn record(&mut self, n: usize) {
        self.0.write_all(format!("{n}\n").as_bytes()).unwrap();
    }

    /// The highest step recorded at `path` (0 if there is none).
    pub(crate) fn read(path: &Path) -> usize {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .max()
            .unwrap_or(0)
    }
}

/// Damages the op log at `path` as a crash or a bad disk might: cuts it `cut` bytes (modulo its
/// length) after its header, then, with `flip = Some((at, x))`, XORs `x` into a byte after the
/// header.
pub(crate) fn damage_log(path: &Path, cut: usize, flip: Option<(usize, u8)>) {
    let mut bytes = std::fs::read(path).unwrap();
    let h = crate::oplog::HEADER_LEN as usize;
    bytes.truncate(h + cut % (bytes.len() - h + 1));
    if let Some((at, x)) = flip
        && bytes.len() > h
    {
        let i = h + at % (bytes.len() - h);
        bytes[i] ^= x;
    }
    std::fs::write(path, &bytes).unwrap();
}

/// One operation of the model and crash tests.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Create(u64, Vec<u8>, bool),
    Mkdir(u64, Vec<u8>),
    /// mknod of a fifo, device node or socket, with a device number.
    Mknod(u64, Vec<u8>, FileKind, u32),
    Symlink(u64, Vec<u8>, usize),
    Readlink(u64),
    Link(u64, u64, Vec<u8>),
    Unlink(u64, Vec<u8>),
    Rmdir(u64, Vec<u8>),
    Rename(u64, Vec<u8>, u64, Vec<u8>, RenameMode),
    Setattr(u64, Option<u64>, Option<u16>),
    SetXattr(u64, Vec<u8>, usize, XattrMode),
    GetXattr(u64, Vec<u8>),
    ListXattr(u64),
    RemoveXattr(u64, Vec<u8>),
    Lookup(u64, Vec<u8>),
    Getattr(u64),
    Readdir(u64),
    Purge(u64),
    MarkDirty(u64),
    BeginUpload(u64),
    FinishUpload(u64, u64),
    UploadFailed(u64, u64),
    /// setattr_dirty with a size.
    SetattrDirty(u64, u64),
    /// save_written with a size.
    SaveWritten(u64, u64),
}

const NAMES: [&[u8]; 5] = [b"a", b"b", b"c", b"dd", b"."];

fn name(rng: &mut Rng) -> Vec<u8> {
    match rng.below(40) {
        0 => vec![b'x'; 256],
        1 => vec![b'y'; 255],
        n => NAMES[(n % 4) as usize].to_vec(),
    }
}

/// Inode numbers 1..=14 (some never exist, most do after a few creates).
fn ino(rng: &mut Rng) -> u64 {
    1 + rng.below(14)
}

fn dir(rng: &mut Rng) -> u64 {
    // Favour the root and early inodes so trees grow deep enough for rename's subtree check.
    if rng.below(3) == 0 { 1 } else { ino(rng) }
}

fn xname(rng: &mut Rng) -> Vec<u8> {
    match rng.below(20) {
        0 => Vec::new(),
        1 => vec![b'n'; 256],
        n => format!("user.{}", n % 3).into_bytes(),
    }
}

fn mode(rng: &mut Rng) -> RenameMode {
    match rng.below(4) {
        0 => RenameMode::NoReplace,
        1 => RenameMode::Exchange,
        _ => RenameMode::Replace,
    }
}

impl Op {
    /// A random operation; `journal` includes the dirty-journal operations.
    pub(crate) fn random(rng: &mut Rng, journal: bool) -> Op {
        let kinds = if journal { 24 } else { 18 };
        match rng.below(kinds) {
            0 => Op::Create(dir(rng), name(rng), rng.below(2) == 0),
            1 => Op::Mkdir(dir(rng), name(rng)),
            2 => {
                let kind = [
                    FileKind::Fifo,
                    FileKind::CharDevice,
                    FileKind::BlockDevice,
                    FileKind::Socket,
                ][rng.below(4) as usize];
                // Mostly a number that fits the kind, sometimes one that does not (EINVAL).
                let rdev = match (kind.is_device(), rng.below(8)) {
                    (true, _) | (false, 0) => rng.below(1 << 32) as u32,
                    _ => 0,
                };
                Op::Mknod(dir(rng), name(rng), kind, rdev)
            }
            3 => Op::Symlink(dir(rng), name(rng), [0, 3, 4096][rng.below(3) as usize]),
            4 => Op::Readlink(ino(rng)),
            5 => Op::Link(ino(rng), dir(rng), name(rng)),
            6 => Op::Unlink(dir(rng), name(rng)),
            7 => Op::Rmdir(dir(rng), name(rng)),
            8 | 9 => Op::Rename(dir(rng), name(rng), dir(rng), name(rng), mode(rng)),
            10 => Op::Setattr(
                ino(rng),
                (rng.below(2) == 0).then(|| rng.below(100)),
                (rng.below(2) == 0).then(|| (rng.below(0o10000)) as u16),
            ),
            11 => {
                let m = [XattrMode::Any, XattrMode::Create, XattrMode::Replace];
                let len = [0, 5, 65536, 65537][rng.below(4) as usize];
                Op::SetXattr(ino(rng), xname(rng), len, m[rng.below(3) as usize])
            }
            12 => Op::GetXattr(ino(rng), xname(rng)),
            13 => Op::ListXattr(ino(rng)),
            14 => Op::RemoveXattr(ino(rng), xname(rng)),
            15 => Op::Lookup(dir(rng), name(rng)),
            16 => match rng.below(2) {
                0 => Op::Getattr(ino(rng)),
                _ => Op::Readdir(dir(rng)),
            },
            17 => Op::Purge(ino(rng)),
            18 => Op::MarkDirty(ino(rng)),
            19 => Op::BeginUpload(ino(rng)),
            20 => Op::FinishUpload(ino(rng), rng.below(4)),
            21 => Op::UploadFailed(ino(rng), rng.below(4)),
            22 => Op::SetattrDirty(ino(rng), rng.below(100)),
            _ => Op::SaveWritten(ino(rng), rng.below(100)),
        }
    }
}

pub(crate) const OWNER: NewInode = NewInode {
    perm: 0o644,
    uid: 1000,
    gid: 100,
};

/// The time of the `i`-th operation.
pub(crate) fn time(i: u64) -> Timestamp {
    Timestamp::new(
        1_700_000_000 + i as i64,
        (i as u32).wrapping_mul(7919) % 1_000_000_000,
    )
}

fn value(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

type Outcome = Result<String, &'static str>;

fn out<T: std::fmt::Debug>(r: crate::Result<T>) -> Outcome {
    r.map(|v| format!("{v:?}")).map_err(|e| code(&e))
}

/// Applies `op` to the DB.
pub(crate) fn apply_db(db: &MetaDb, op: &Op, now: Timestamp) -> Outcome {
    let i = InodeNo;
    match op {
        Op::Create(p, n, x) => out(db.create(i(*p), n, &OWNER, *x, now)),
        Op::Mkdir(p, n) => out(db.mkdir(i(*p), n, &OWNER, now)),
        Op::Mknod(p, n, k, r) => out(db.mknod(i(*p), n, *k, *r, &OWNER, now)),
        Op::Symlink(p, n, len) => out(db.symlink(i(*p), n, &vec![b't'; *len], &OWNER, now)),
        Op::Readlink(x) => out(db.readlink(i(*x))),
        Op::Link(x, p, n) => out(db.link(i(*x), i(*p), n, now)),
        Op::Unlink(p, n) => out(db.unlink(i(*p), n, now)),
        Op::Rmdir(p, n) => out(db.rmdir(i(*p), n, now)),
        Op::Rename(p, n, q, m, f) => out(db.rename(i(*p), n, i(*q), m, *f, now)),
        Op::Setattr(x, size, perm) => {
            let set = SetAttr {
                size: *size,
                perm: *perm,
                ..SetAttr::default()
            };
            out(db.setattr(i(*x), &set, now))
        }
        Op::SetXattr(x, n, len, m) => out(db.set_xattr(i(*x), n, &value(*len), *m, now)),
        Op::GetXattr(x, n) => out(db.get_xattr(i(*x), n)),
        Op::ListXattr(x) => out(db.list_xattr(i(*x))),
        Op::RemoveXattr(x, n) => out(db.remove_xattr(i(*x), n, now)),
        Op::Lookup(p, n) => out(db.lookup(i(*p), n)),
        Op::Getattr(x) => out(db.getattr(i(*x))),
        Op::Readdir(p) => {
            // Paged two at a time, so cookies are exercised.
            let mut all = Vec::new();
            let mut cookie = 0;
            loop {
                match db.readdir(i(*p), cookie, 2) {
                    Ok(page) if page.is_empty() => break,
                    Ok(page) => {
                        cookie = page[page.len() - 1].cookie;
                        all.extend(page);
                    }
                    Err(e) => return Err(code(&e)),
                }
            }
            Ok(format!("{all:?}"))
        }
        Op::Purge(x) => out(db.purge(i(*x))),
        Op::MarkDirty(x) => out(db.mark_dirty(i(*x), now)),
        Op::BeginUpload(x) => out(db.begin_upload(i(*x))),
        Op::FinishUpload(x, g) => {
            let content = Content::Stored {
                file: FileId([*g as u8; 32]),
                key: [1; 32],
                offset: 0,
                len: *g,
            };
            out(db.finish_upload(i(*x), Generation(*g), content))
        }
        Op::UploadFailed(x, g) => out(db.upload_failed(i(*x), Generation(*g), "peer gone")),
        Op::SetattrDirty(x, size) | Op::SaveWritten(x, size) => {
            let set = SetAttr {
                size: Some(*size),
                mtime: Some(now),
                ctime: Some(now),
                ..SetAttr::default()
            };
            if matches!(op, Op::SetattrDirty(..)) {
                out(db.setattr_dirty(i(*x), &set, now))
            } else {
                out(db.save_written(i(*x), &set, now))
            }
        }
    }
}

/// [`dump`] as a snapshot publishes it: no dirty journal, no orphans, dirty files at the size of
/// their last stored content (see [`MetaDb::write_snapshot`]).
pub(crate) fn dump_published(db: &MetaDb) -> String {
    dump_view(db, true)
        .lines()
        .filter(|l| !l.starts_with("journal ") && !l.starts_with("meta published_"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `bytes` (a namespace snapshot) with its header kept and each record (tag, length, payload)
/// replaced by what `f` returns for it (`None` drops it), hashed again: what a hostile or
/// broken writer could publish with a valid trailer.
pub(crate) fn rewrite(bytes: &[u8], mut f: impl FnMut(&[u8]) -> Option<Vec<u8>>) -> Vec<u8> {
    let body = &bytes[..bytes.len() - 32];
    let mut out = body[..20].to_vec();
    let mut pos = 20;
    while pos < body.len() {
        let len = u32::from_le_bytes(body[pos + 1..pos + 5].try_into().unwrap()) as usize;
        out.extend(f(&body[pos..pos + 5 + len]).unwrap_or_default());
        pos += 5 + len;
    }
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    out
}

/// A canonical text of every table (but the op log's LSN), for comparing DB states.
pub(crate) fn dump(db: &MetaDb) -> String {
    dump_view(db, false)
}

/// [`dump`], with dirty files shown at their published size when `published`.
fn dump_view(db: &MetaDb, published: bool) -> String {
    let mut s = String::new();
    db.flush_deferred().unwrap();
    db.read(|txn| {
        let meta = txn.open_table(META).unwrap();
        for item in meta.iter().unwrap() {
            let (k, v) = item.unwrap();
            // The op log position is bookkeeping, not state: two DBs that went through the
            // same operations by different routes (a snapshot restore) differ in it.
            if k.value() == crate::meta::schema::KEY_LSN {
                continue;
            }
            writeln!(s, "meta {} {}", k.value(), v.value()).unwrap();
        }
        let inodes = txn.open_table(INODES).unwrap();
        let journal = txn.open_table(JOURNAL).unwrap();
        let orphans = txn.open_table(ORPHANS).unwrap();
        // A published view leaves orphans (and their xattrs) out.
        let hidden = |ino: u64| published && orphans.get(ino).unwrap().is_some();
        for item in inodes.iter().unwrap() {
            let (k, v) = item.unwrap();
            if hidden(k.value()) {
                continue;
            }
            let mut rec = InodeRecord::decode(v.value()).unwrap();
            if published
                && rec.kind == FileKind::RegularFile
                && journal.get(k.value()).unwrap().is_some()
            {
                rec.size = crate::snapshot::published_size(&rec.content);
            }
            writeln!(s, "ino {} {:?}", k.value(), rec).unwrap();
        }
        let dirents = txn.open_table(DIRENTS).unwrap();
        for item in dirents.iter().unwrap() {
            let (k, v) = item.unwrap();
            writeln!(s, "dirent {:?} {:?}", k.value(), v.value()).unwrap();
        }
        let cookies = txn.open_table(COOKIES).unwrap();
        for item in cookies.iter().unwrap() {
            let (k, v) = item.unwrap();
            writeln!(s, "cookie {:?} {:?}", k.value(), v.value()).unwrap();
        }
        let xattrs = txn.open_table(XATTRS).unwrap();
        for item in xattrs.iter().unwrap() {
            let (k, v) = item.unwrap();
            if hidden(k.value().0) {
                continue;
            }
            writeln!(s, "xattr {:?} {}", k.value(), v.value().len()).unwrap();
        }
        let journal = txn.open_table(JOURNAL).unwrap();
        for item in journal.iter().unwrap() {
            let (k, v) = item.unwrap();
            writeln!(s, "journal {} {:?}", k.value(), v.value()).unwrap();
        }
        for item in orphans.iter().unwrap().filter(|_| !published) {
            writeln!(s, "orphan {}", item.unwrap().0.value()).unwrap();
        }
        Ok(())
    })
    .unwrap();
    s
}

/// Checks every cross-table invariant of the namespace and the journal.
pub(crate) fn check_invariants(db: &MetaDb) -> Result<(), String> {
    db.flush_deferred().map_err(|e| e.to_string())?;
    db.read(|txn| {
        let mut recs = BTreeMap::new();
        for item in txn.open_table(INODES).unwrap().iter().unwrap() {
            let (k, v) = item.unwrap();
            recs.insert(k.value(), InodeRecord::decode(v.value())?);
        }
        let next_ino = txn
            .open_table(META)
            .unwrap()
            .get(KEY_NEXT_INO)
            .unwrap()
            .map(|v| v.value())
            .unwrap_or(0);
        let mut links: BTreeMap<u64, u32> = BTreeMap::new();
        let mut entries: BTreeMap<u64, u64> = BTreeMap::new();
        let mut subdirs: BTreeMap<u64, u32> = BTreeMap::new();
        let mut dir_parent: BTreeMap<u64, u64> = BTreeMap::new();
        let cookies = txn.open_table(COOKIES).unwrap();
        let mut n_dirents = 0;
        for item in txn.open_table(DIRENTS).unwrap().iter().unwrap() {
            let (k, v) = item.unwrap();
            let (p, name) = k.value();
            let (c, kind, cookie) = v.value();
            n_dirents += 1;
            let pr = recs.get(&p).ok_or(format!("dirent in missing dir {p}"));
            let Ok(pr) = pr else {
                return Ok(Err(pr.unwrap_err()));
            };
            if pr.kind != FileKind::Directory || cookie >= pr.next_cookie || cookie == 0 {
                return Ok(Err(format!("dirent {p}/{name:?}: bad parent or cookie")));
            }
            let Some(cr) = recs.get(&c) else {
                return Ok(Err(format!("dirent {p}/{name:?} → missing inode {c}")));
            };
            if cr.kind.tag() != kind {
                return Ok(Err(format!("dirent {p}/{name:?}: kind mismatch")));
            }
            let by_cookie = cookies
                .get((p, cookie))
                .unwrap()
                .map(|v| v.value().to_vec());
            if by_cookie.as_deref() != Some(name) {
                return Ok(Err(format!("dirent {p}/{name:?}: cookie table disagrees")));
            }
            *links.entry(c).or_default() += 1;
            *entries.entry(p).or_default() += 1;
            if cr.kind == FileKind::Directory {
                *subdirs.entry(p).or_default() += 1;
                if dir_parent.insert(c, p).is_some() {
                    return Ok(Err(format!("directory {c} has two names")));
                }
            }
        }
        if cookies.len().unwrap() != n_dirents {
            return Ok(Err("cookie table has entries without dirents".into()));
        }
        let orphans: BTreeSet<u64> = txn
            .open_table(ORPHANS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|i| i.unwrap().0.value())
            .collect();
        for (&ino, r) in &recs {
            if ino >= next_ino {
                return Ok(Err(format!("inode {ino} ≥ next_ino {next_ino}")));
            }
            let l = links.get(&ino).copied().unwrap_or(0);
            let orphan = orphans.contains(&ino);
            if (r.nlink == 0) != orphan {
                return Ok(Err(format!(
                    "inode {ino}: nlink {} vs orphan {orphan}",
                    r.nlink
                )));
            }
            if r.kind == FileKind::Directory {
                let e = entries.get(&ino).copied().unwrap_or(0);
                if r.size != e {
                    return Ok(Err(format!("dir {ino}: size {} but {e} entries", r.size)));
                }
                let expect = if r.nlink == 0 {
                    0
                } else {
                    2 + subdirs.get(&ino).copied().unwrap_or(0)
                };
                if r.nlink != expect {
                    return Ok(Err(format!(
                        "dir {ino}: nlink {} expected {expect}",
                        r.nlink
                    )));
                }
                let named = if ino == 1 { 1 } else { u32::from(r.nlink > 0) };
                if ino != 1 && l != named {
                    return Ok(Err(format!("dir {ino}: {l} names")));
                }
                if r.nlink > 0 && ino != 1 && dir_parent.get(&ino) != Some(&r.parent) {
                    return Ok(Err(format!("dir {ino}: parent pointer wrong")));
                }
            } else if r.nlink != l {
                return Ok(Err(format!(
                    "inode {ino}: nlink {} but {l} dirents",
                    r.nlink
                )));
            }
        }
        if !recs.contains_key(&1) {
            return Ok(Err("no root".into()));
        }
        for o in &orphans {
            if !recs.contains_key(o) {
                return Ok(Err(format!("orphan {o} has no inode")));
            }
        }
        for item in txn.open_table(JOURNAL).unwrap().iter().unwrap() {
            let (k, v) = item.unwrap();
            if !recs.contains_key(&k.value()) {
                return Ok(Err(format!(
                    "journal entry for missing inode {}",
                    k.value()
                )));
            }
            crate::journal::entry::JournalEntry::decode(v.value())?;
        }
        for item in txn.open_table(XATTRS).unwrap().iter().unwrap() {
            let (k, _) = item.unwrap();
            if !recs.contains_key(&k.value().0) {
                return Ok(Err(format!("xattr of missing inode {}", k.value().0)));
            }
        }
        Ok(Ok(()))
    })
    .map_err(|e| format!("{e:#}"))?
}

/// An in-memory reference model of the namespace: plain maps, the POSIX rules written out
/// again independently of the redb code.
#[derive(Default)]
pub(crate) struct Model {
    inodes: BTreeMap<u64, MInode>,
    /// (dir, name) → (child, cookie)
    dirents: BTreeMap<(u64, Vec<u8>), (u64, u64)>,
    next_ino: u64,
}

#[derive(Clone)]
struct MInode {
    attr: Attr,
    parent: u64,
    next_cookie: u64,
    target: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

type R<T> = Result<T, &'static str>;

fn name_ok(n: &[u8]) -> R<()> {
    if n.len() > 255 {
        return Err("ENAMETOOLONG");
    }
    if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') || n.contains(&0) {
        return Err("EINVAL");
    }
    Ok(())
}

impl Model {
    pub(crate) fn new() -> Model {
        let mut m = Model {
            next_ino: 2,
            ..Model::default()
        };
        m.inodes.insert(
            1,
            m.fresh(
                1,
                FileKind::Directory,
                &NewInode {
                    perm: 0o755,
                    uid: 0,
                    gid: 0,
                },
                Timestamp::default(),
                1,
            ),
        );
        m
    }

    fn fresh(&self, ino: u64, kind: FileKind, o: &NewInode, now: Timestamp, parent: u64) -> MInode {
        MInode {
            attr: Attr {
                ino: InodeNo(ino),
                kind,
                perm: o.perm & 0o7777,
                nlink: if kind == FileKind::Directory { 2 } else { 1 },
                uid: o.uid,
                gid: o.gid,
                size: 0,
                atime: now,
                mtime: now,
                ctime: now,
                rdev: 0,
                generation: Generation(0),
                allocated: None,
            },
            parent: if kind == FileKind::Directory {
                parent
            } else {
                0
            },
            next_cookie: 1,
            target: Vec::new(),
            xattrs: BTreeMap::new(),
        }
    }

    fn get(&mut self, ino: u64) -> R<&mut MInode> {
        self.inodes.get_mut(&ino).ok_or("ENOENT")
    }

    fn dir(&mut self, ino: u64) -> R<&mut MInode> {
        let i = self.get(ino)?;
        if i.attr.kind != FileKind::Directory {
            return Err("ENOTDIR");
        }
        Ok(i)
    }

    fn live_dir(&mut self, ino: u64) -> R<()> {
        if self.dir(ino)?.attr.nlink == 0 {
            return Err("ENOENT");
        }
        Ok(())
    }

    fn touch_dir(&mut self, p: u64, now: Timestamp) {
        if let Some(d) = self.inodes.get_mut(&p) {
            d.attr.mtime = now;
            d.attr.ctime = now;
        }
    }

    fn add(&mut self, p: u64, n: &[u8], c: u64, now: Timestamp) {
        let is_dir = self.inodes[&c].attr.kind == FileKind::Directory;
        let d = self.inodes.get_mut(&p).unwrap();
        let cookie = d.next_cookie;
        d.next_cookie += 1;
        d.attr.size += 1;
        if is_dir {
            d.attr.nlink += 1;
        }
        self.touch_dir(p, now);
        self.dirents.insert((p, n.to_vec()), (c, cookie));
        if is_dir {
            self.inodes.get_mut(&c).unwrap().parent = p;
        }
    }

    fn remove(&mut self, p: u64, n: &[u8], now: Timestamp) -> u64 {
        let (c, _) = self.dirents.remove(&(p, n.to_vec())).unwrap();
        let is_dir = self.inodes[&c].attr.kind == FileKind::Directory;
        let d = self.inodes.get_mut(&p).unwrap();
        d.attr.size -= 1;
        if is_dir {
            d.attr.nlink -= 1;
        }
        self.touch_dir(p, now);
        c
    }

    fn unlinked(&mut self, c: u64, now: Timestamp) -> Unlinked {
        let i = self.inodes.get_mut(&c).unwrap();
        i.attr.nlink = if i.attr.kind == FileKind::Directory {
            0
        } else {
            i.attr.nlink - 1
        };
        i.attr.ctime = now;
        Unlinked {
            ino: InodeNo(c),
            nlink: i.attr.nlink,
        }
    }

    fn within(&self, mut ino: u64, anc: u64) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            if ino == 1 {
                return false;
            }
            ino = self.inodes[&ino].parent;
        }
    }

    fn make(&mut self, p: u64, n: &[u8], kind: FileKind, now: Timestamp, target: &[u8]) -> R<Attr> {
        name_ok(n)?;
        self.live_dir(p)?;
        if self.dirents.contains_key(&(p, n.to_vec())) {
            return Err("EEXIST");
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut i = self.fresh(ino, kind, &OWNER, now, p);
        i.target = target.to_vec();
        i.attr.size = target.len() as u64;
        self.inodes.insert(ino, i);
        self.add(p, n, ino, now);
        Ok(self.inodes[&ino].attr)
    }

    fn lookup(&mut self, p: u64, n: &[u8]) -> R<Attr> {
        name_ok(n)?;
        self.dir(p)?;
        let (c, _) = self.dirents.get(&(p, n.to_vec())).ok_or("ENOENT")?;
        Ok(self.inodes[c].attr)
    }

    /// Applies `op` (namespace operations only).
    pub(crate) fn apply(&mut self, op: &Op, now: Timestamp) -> Outcome {
        fn o<T: std::fmt::Debug>(r: R<T>) -> Outcome {
            r.map(|v| format!("{v:?}"))
        }
        match op {
            Op::Create(p, n, x) => o((|| {
                name_ok(n)?;
                self.live_dir(*p)?;
                if let Some(&(c, _)) = self.dirents.get(&(*p, n.clone())) {
                    if *x {
                        return Err("EEXIST");
                    }
                    let a = self.inodes[&c].attr;
                    if a.kind == FileKind::Directory {
                        return Err("EISDIR");
                    }
                    return Ok((a, false));
                }
                let a = self.make(*p, n, FileKind::RegularFile, now, &[])?;
                // A created file starts dirty: its first generation.
                let i = self.inodes.get_mut(&a.ino.0).ok_or("ENOENT")?;
                i.attr.generation = Generation(1);
                Ok((i.attr, true))
            })()),
            Op::Mkdir(p, n) => o(self.make(*p, n, FileKind::Directory, now, &[])),
            Op::Mknod(p, n, k, r) => o((|| {
                if *r != 0 && !k.is_device() {
                    return Err("EINVAL");
                }
                let a = self.make(*p, n, *k, now, &[])?;
                let i = self.inodes.get_mut(&a.ino.0).ok_or("ENOENT")?;
                i.attr.rdev = *r;
                Ok(i.attr)
            })()),
            Op::Symlink(p, n, len) => o((|| {
                if *len == 0 {
                    return Err("ENOENT");
                }
                if *len > 4095 {
                    return Err("ENAMETOOLONG");
                }
                self.make(*p, n, FileKind::Symlink, now, &vec![b't'; *len])
            })()),
            Op::Readlink(x) => o((|| {
                let i = self.get(*x)?;
                if i.attr.kind != FileKind::Symlink {
                    return Err("EINVAL");
                }
                Ok(i.target.clone())
            })()),
            Op::Link(x, p, n) => o((|| {
                name_ok(n)?;
                let i = self.get(*x)?;
                if i.attr.kind == FileKind::Directory {
                    return Err("EPERM");
                }
                if i.attr.nlink == 0 {
                    return Err("ENOENT");
                }
                self.live_dir(*p)?;
                if self.dirents.contains_key(&(*p, n.clone())) {
                    return Err("EEXIST");
                }
                self.add(*p, n, *x, now);
                let i = self.get(*x)?;
                i.attr.nlink += 1;
                i.attr.ctime = now;
                Ok(i.attr)
            })()),
            Op::Unlink(p, n) => o((|| {
                name_ok(n)?;
                self.dir(*p)?;
                let &(c, _) = self.dirents.get(&(*p, n.clone())).ok_or("ENOENT")?;
                if self.inodes[&c].attr.kind == FileKind::Directory {
                    return Err("EISDIR");
                }
                self.remove(*p, n, now);
                Ok(self.unlinked(c, now))
            })()),
            Op::Rmdir(p, n) => o((|| {
                name_ok(n)?;
                self.dir(*p)?;
                let &(c, _) = self.dirents.get(&(*p, n.clone())).ok_or("ENOENT")?;
                if self.inodes[&c].attr.kind != FileKind::Directory {
                    return Err("ENOTDIR");
                }
                if self.inodes[&c].attr.size != 0 {
                    return Err("ENOTEMPTY");
                }
                self.remove(*p, n, now);
                Ok(self.unlinked(c, now))
            })()),
            Op::Rename(p, n, q, m, mode) => o(self.rename(*p, n, *q, m, *mode, now)),
            Op::Setattr(x, size, perm) => o((|| {
                let i = self.get(*x)?;
                if let Some(s) = size {
                    match i.attr.kind {
                        FileKind::RegularFile => {}
                        FileKind::Directory => return Err("EISDIR"),
                        _ => return Err("EINVAL"),
                    }
                    if *s != i.attr.size {
                        i.attr.size = *s;
                        i.attr.mtime = now;
                    }
                }
                if let Some(perm) = perm {
                    i.attr.perm = perm & 0o7777;
                }
                i.attr.ctime = now;
                Ok(i.attr)
            })()),
            Op::SetXattr(x, n, len, mode) => o((|| {
                if n.is_empty() || n.len() > 255 {
                    return Err("ERANGE");
                }
                if *len > 65536 {
                    return Err("E2BIG");
                }
                let i = self.get(*x)?;
                let exists = i.xattrs.contains_key(n);
                match (mode, exists) {
                    (XattrMode::Create, true) => return Err("EEXIST"),
                    (XattrMode::Replace, false) => return Err("ENODATA"),
                    _ => {}
                }
                let list: usize = i.xattrs.keys().map(|k| k.len() + 1).sum::<usize>() + n.len() + 1;
                if !exists && list > 65536 {
                    return Err("E2BIG");
                }
                i.xattrs.insert(n.clone(), value(*len));
                i.attr.ctime = now;
                Ok(())
            })()),
            Op::GetXattr(x, n) => o((|| {
                if n.is_empty() || n.len() > 255 {
                    return Err("ERANGE");
                }
                self.get(*x)?.xattrs.get(n).cloned().ok_or("ENODATA")
            })()),
            Op::ListXattr(x) => o((|| {
                Ok(self.get(*x)?.xattrs.keys().cloned().collect::<Vec<_>>())
            })()),
            Op::RemoveXattr(x, n) => o((|| {
                if n.is_empty() || n.len() > 255 {
                    return Err("ERANGE");
                }
                let i = self.get(*x)?;
                i.xattrs.remove(n).ok_or("ENODATA")?;
                i.attr.ctime = now;
                Ok(())
            })()),
            Op::Lookup(p, n) => o(self.lookup(*p, n)),
            Op::Getattr(x) => o((|| Ok(self.get(*x)?.attr))()),
            Op::Readdir(p) => o((|| {
                self.dir(*p)?;
                let mut v: Vec<DirEntry> = self
                    .dirents
                    .iter()
                    .filter(|((d, _), _)| d == p)
                    .map(|((_, n), &(c, cookie))| DirEntry {
                        name: n.clone(),
                        ino: InodeNo(c),
                        kind: self.inodes[&c].attr.kind,
                        cookie,
                    })
                    .collect();
                v.sort_by_key(|e| e.cookie);
                Ok(v)
            })()),
            Op::Purge(x) => o((|| {
                if self.get(*x)?.attr.nlink != 0 {
                    return Err("EINVAL");
                }
                self.inodes.remove(x);
                Ok(Content::Empty)
            })()),
            _ => Ok("journal op".into()),
        }
    }

    fn rename(
        &mut self,
        p: u64,
        n: &[u8],
        q: u64,
        m: &[u8],
        mode: RenameMode,
        now: Timestamp,
    ) -> R<Option<Unlinked>> {
        name_ok(n)?;
        name_ok(m)?;
        self.dir(p)?;
        self.live_dir(q)?;
        let &(src, src_cookie) = self.dirents.get(&(p, n.to_vec())).ok_or("ENOENT")?;
        let dst = self.dirents.get(&(q, m.to_vec())).copied();
        match (mode, dst) {
            (RenameMode::Exchange, None) => return Err("ENOENT"),
            (RenameMode::NoReplace, Some(_)) => return Err("EEXIST"),
            _ => {}
        }
        if let Some((d, _)) = dst
            && d == src
        {
            return Ok(None);
        }
        let is_dir = |s: &Self, i: u64| s.inodes[&i].attr.kind == FileKind::Directory;
        if is_dir(self, src) && self.within(q, src) {
            return Err("EINVAL");
        }
        if mode == RenameMode::Exchange
            && let Some((d, _)) = dst
            && is_dir(self, d)
            && self.within(p, d)
        {
            return Err("EINVAL");
        }
        match (mode, dst) {
            (RenameMode::Exchange, Some((d, d_cookie))) => {
                self.dirents.insert((p, n.to_vec()), (d, src_cookie));
                self.dirents.insert((q, m.to_vec()), (src, d_cookie));
                let (sd, dd) = (is_dir(self, src) as u32, is_dir(self, d) as u32);
                let pi = self.inodes.get_mut(&p).unwrap();
                pi.attr.nlink = pi.attr.nlink + dd - sd;
                let qi = self.inodes.get_mut(&q).unwrap();
                qi.attr.nlink = qi.attr.nlink + sd - dd;
                self.touch_dir(p, now);
                self.touch_dir(q, now);
                for (i, np) in [(src, q), (d, p)] {
                    let x = self.inodes.get_mut(&i).unwrap();
                    x.attr.ctime = now;
                    if x.attr.kind == FileKind::Directory {
                        x.parent = np;
                    }
                }
                Ok(None)
            }
            (_, dst) => {
                let mut gone = None;
                if let Some((d, _)) = dst {
                    match (is_dir(self, src), is_dir(self, d)) {
                        (true, false) => return Err("ENOTDIR"),
                        (false, true) => return Err("EISDIR"),
                        _ => {}
                    }
                    if is_dir(self, d) && self.inodes[&d].attr.size != 0 {
                        return Err("ENOTEMPTY");
                    }
                    self.remove(q, m, now);
                    gone = Some(self.unlinked(d, now));
                }
                self.remove(p, n, now);
                self.add(q, m, src, now);
                self.inodes.get_mut(&src).unwrap().attr.ctime = now;
                Ok(gone)
            }
        }
    }
}

/// Uploads `data` as `ino`'s content through `objects` and commits it (an upload that wins):
/// a real object on the network, as the mount's flusher makes one. Returns its file id.
pub(crate) async fn upload(
    db: &MetaDb,
    objects: &crate::object::Objects,
    ino: InodeNo,
    data: &[u8],
) -> FileId {
    db.mark_dirty(ino, Timestamp::new(1_700_000_000, 0))
        .unwrap();
    let g = db.begin_upload(ino).unwrap();
    let stored = objects
        .put(
            crate::sync::Arc::new(crate::object::MemorySource(data.to_vec())),
            data.len() as u64,
            None,
            &|_| {},
        )
        .await
        .unwrap();
    let content = Content::Stored {
        file: stored.file,
        key: *stored.key.as_bytes(),
        offset: 0,
        len: data.len() as u64,
    };
    assert!(db.finish_upload(ino, g, content).unwrap());
    stored.file
}

/// `file`'s shard ids and its manifest's (the manifest opened through `objects`).
pub(crate) async fn shard_ids(
    objects: &crate::object::Objects,
    file: FileId,
) -> Vec<crate::types::ShardId> {
    let (m, _) = objects.open_owned(file).await.unwrap();
    let mut ids: Vec<crate::types::ShardId> = m
        .segments
        .iter()
        .flat_map(|s| &s.shards)
        .map(|s| s.id)
        .collect();
    ids.push(crate::types::ShardId(file.0));
    ids
}

/// How many of `ids` some node of `net` still holds.
pub(crate) async fn held(
    net: &crate::remote::memory::MemoryClient,
    ids: &[crate::types::ShardId],
) -> usize {
    use crate::remote::ShardClient;
    net.lookup(ids.to_vec())
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, h)| !h.is_empty())
        .count()
}
