//! fsx for DeFS (issue 20): a seeded random-operation driver that applies the same sequence of
//! file system operations to a real mount (over real storage nodes) and to an in-memory
//! [`model::Model`], and compares every answer — each errno, each read, each `lstat` field the
//! model knows, xattrs, symlink targets and directory listings — including across unmounts and
//! remounts and across a wiped local cache (every byte then comes back from the nodes).
//!
//! A run is fixed by its seed: [`run_seed`] generates operation `i` from the seed and the model's
//! state after the first `i - 1`, so the same seed always makes the same sequence. A mismatch
//! stops the run with a [`Failure`] carrying the seed, the index and the operations so far;
//! [`shrink`] then looks for a shorter sequence that still fails, replaying candidates on fresh
//! mounts of the same cluster ([`replay`]).

pub mod model;
mod op;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use crate::cluster::{Cluster, out, text};
use crate::mount::{TestMount, mount_on};
use model::{Errno, Id, Kind, Model, Outcome};
pub use op::{Op, XattrFlag, bytes};

/// Names the generator picks from: few, so operations meet each other's names often.
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// `user.*` attribute names the generator picks from.
const XATTRS: [&str; 3] = ["user.x0", "user.x1", "user.x2"];

/// Directories nest at most this deep, to keep the tree small and names colliding.
const MAX_DEPTH: usize = 3;

/// The largest file the generator makes (5 MiB: several segments of the default 1 MiB, and
/// quick to read back in full after every change).
const MAX_FILE: u64 = 5 << 20;

/// A full check of the whole tree (every path, every listing) runs every this many operations,
/// besides after each remount and cache wipe and at the end.
const FULL_CHECK_EVERY: usize = 100;

/// One in this many generated operations is an unmount + mount, and as many a cache wipe (on
/// top of the forced ones below).
const REMOUNT_ONE_IN: u64 = 400;

/// An operation taking longer than this is reported on stderr (not a failure: timing is for
/// benchmarks), as a hint where a run spends its time.
const SLOW: std::time::Duration = std::time::Duration::from_secs(2);

/// Descriptor slots: a few files held open at once.
const SLOTS: u8 = 4;

/// One in this many generated operations waits for the flusher ([`Op::Settle`]).
const SETTLE_ONE_IN: u64 = 300;

/// Operation 60 of every run is an unmount + mount (a fixed place, so a seed's sequence does
/// not depend on its length).
pub const FORCED_REMOUNT_AT: usize = 60;

/// Operation 180 of every run is a cache wipe.
pub const FORCED_WIPE_AT: usize = 180;

/// A symlink target that resolves to nothing in the mount (the model's symlinks all dangle,
/// so following one is ENOENT on both sides).
fn dangling_target(n: u64) -> String {
    if n.is_multiple_of(3) {
        format!("/nonexistent-defs-fsx/t{n}")
    } else {
        format!("nowhere/t{n}")
    }
}

/// splitmix64: a small, fast, well-mixed generator (no dependency, fixed forever, so seeds
/// stay meaningful).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with odds `1` in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let n = u64::try_from(items.len()).ok()?;
        items.get(usize::try_from(self.below(n)).ok()?)
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Picks paths for the generator from the model's current tree.
struct Picker {
    all: Vec<(String, Id)>,
    dirs: Vec<String>,
    files: Vec<String>,
}

impl Picker {
    fn new(model: &Model) -> Picker {
        let all = model.paths();
        let kind = |id: Id| model.node(id).map(|n| &n.kind);
        let dirs = all
            .iter()
            .filter(|(_, id)| matches!(kind(*id), Some(Kind::Dir(_))))
            .map(|(p, _)| p.clone())
            .collect();
        let files = all
            .iter()
            .filter(|(_, id)| matches!(kind(*id), Some(Kind::File(_))))
            .map(|(p, _)| p.clone())
            .collect();
        Picker { all, dirs, files }
    }

    /// An existing path other than the root, or a new name when there is none.
    fn existing(&self, rng: &mut Rng) -> String {
        match rng.pick(&self.all[1..]) {
            Some((p, _)) => p.clone(),
            None => self.fresh(rng),
        }
    }

    /// A name in a directory (mostly shallow enough), which may or may not exist; now and then
    /// under a file or a missing directory, for ENOTDIR and ENOENT.
    fn fresh(&self, rng: &mut Rng) -> String {
        let name = rng.pick(&NAMES).copied().unwrap_or("a");
        let parent = match rng.below(20) {
            0 => rng
                .pick(&self.all)
                .map(|(p, _)| p.clone())
                .unwrap_or_default(),
            1 => "missing".to_string(),
            _ => {
                let shallow: Vec<&String> = self
                    .dirs
                    .iter()
                    .filter(|d| model::components(d).len() < MAX_DEPTH)
                    .collect();
                rng.pick(&shallow).map(|d| (*d).clone()).unwrap_or_default()
            }
        };
        join(&parent, name)
    }

    /// Mostly an existing path, sometimes a fresh name.
    fn any(&self, rng: &mut Rng) -> String {
        if rng.below(10) < 7 {
            self.existing(rng)
        } else {
            self.fresh(rng)
        }
    }

    /// Mostly an existing regular file.
    fn file(&self, rng: &mut Rng) -> String {
        match rng.pick(&self.files) {
            Some(f) if rng.below(10) < 8 => f.clone(),
            _ => self.any(rng),
        }
    }

    /// Mostly an existing directory (the root included).
    fn dir(&self, rng: &mut Rng) -> String {
        match rng.pick(&self.dirs) {
            Some(d) if rng.below(10) < 8 => d.clone(),
            _ => self.any(rng),
        }
    }
}

/// The size of the regular file at `path` in the model, 0 when it is none.
fn size_of(model: &Model, path: &str) -> u64 {
    match model
        .lookup(path, true)
        .ok()
        .and_then(|id| model.node(id))
        .map(|n| &n.kind)
    {
        Some(Kind::File(d)) => u64::try_from(d.len()).unwrap_or(0),
        _ => 0,
    }
}

/// An offset or length near the interesting places of a file of `size` bytes: its start, its
/// end, inside it, past it (a hole), and around the 1 MiB segment boundaries.
fn place(rng: &mut Rng, size: u64) -> u64 {
    let at = match rng.below(6) {
        0 => 0,
        1 => size,
        2 => rng.below(size + 1),
        3 => size + rng.below(64 << 10),
        4 => ((1 + rng.below(3)) << 20).saturating_sub(rng.below(8192)),
        _ => rng.below(3 << 20),
    };
    at.min(MAX_FILE - 1)
}

/// Generates the next operation for the model's state.
pub fn generate(rng: &mut Rng, model: &Model) -> Op {
    if rng.one_in(REMOUNT_ONE_IN) {
        return Op::Remount;
    }
    if rng.one_in(REMOUNT_ONE_IN) {
        return Op::WipeCache;
    }
    if rng.one_in(SETTLE_ONE_IN) {
        return Op::Settle;
    }
    let p = Picker::new(model);
    if rng.below(100) < 12 {
        return descriptor_op(rng, model, &p);
    }
    let mode = |rng: &mut Rng, base: u32| base | u32::try_from(rng.below(0o100)).unwrap_or(0) << 1;
    match rng.below(100) {
        0..=9 => Op::Create {
            path: p.fresh(rng),
            mode: mode(rng, 0o600),
        },
        10..=29 => {
            let path = p.file(rng);
            let offset = place(rng, size_of(model, &path));
            let len = match rng.below(20) {
                0 => 64 * 1024 + rng.below(320 * 1024),
                1..=5 => 4096 + rng.below(60 * 1024),
                _ => 1 + rng.below(4096),
            }
            .min(MAX_FILE - offset);
            Op::Write {
                path,
                offset,
                len: u32::try_from(len).unwrap_or(1),
                seed: rng.next_u64(),
            }
        }
        30..=36 => {
            let path = p.file(rng);
            let size = size_of(model, &path);
            let len = match rng.below(4) {
                0 => 0,
                1 => size / 2,
                _ => place(rng, size),
            };
            Op::Truncate { path, len }
        }
        37..=41 => Op::Read { path: p.file(rng) },
        42..=50 => {
            // Half the time onto an existing name: over files, empty and full directories.
            let from = p.existing(rng);
            let to = if rng.one_in(2) {
                p.existing(rng)
            } else {
                p.fresh(rng)
            };
            Op::Rename { from, to }
        }
        51..=54 => Op::Link {
            from: p.file(rng),
            to: p.fresh(rng),
        },
        55..=60 => Op::Unlink { path: p.any(rng) },
        61..=66 => Op::Mkdir {
            path: p.fresh(rng),
            mode: mode(rng, 0o700) & 0o777,
        },
        67..=71 => Op::Rmdir { path: p.dir(rng) },
        72..=74 => Op::Symlink {
            target: dangling_target(rng.below(1000)),
            path: p.fresh(rng),
        },
        75..=80 => Op::SetXattr {
            path: p.any(rng),
            name: rng.pick(&XATTRS).copied().unwrap_or("user.x0").to_string(),
            seed: rng.next_u64(),
            len: u16::try_from(rng.below(120)).unwrap_or(0),
            flag: match rng.below(4) {
                0 => XattrFlag::Create,
                1 => XattrFlag::Replace,
                _ => XattrFlag::Either,
            },
        },
        81..=83 => Op::RemoveXattr {
            path: p.any(rng),
            name: rng.pick(&XATTRS).copied().unwrap_or("user.x0").to_string(),
        },
        84..=86 => {
            let path = p.any(rng);
            let dir = model
                .lookup(&path, true)
                .ok()
                .and_then(|id| model.node(id))
                .is_some_and(model::Node::is_dir);
            let base = if dir { 0o700 } else { 0o600 };
            Op::Chmod {
                mode: mode(rng, base) & 0o777,
                path,
            }
        }
        87..=90 => Op::Utimens {
            path: if rng.one_in(4) {
                p.dir(rng)
            } else {
                p.any(rng)
            },
            sec: i64::try_from(rng.below(2_000_000_000)).unwrap_or(0),
            nsec: i64::try_from(rng.below(1_000_000_000)).unwrap_or(0),
        },
        91..=93 => Op::Fsync { path: p.any(rng) },
        94..=96 => Op::Stat { path: p.any(rng) },
        _ => Op::Readdir { path: p.dir(rng) },
    }
}

/// An operation on a held descriptor (or the opening of one).
fn descriptor_op(rng: &mut Rng, model: &Model, p: &Picker) -> Op {
    let held = model.held_slots();
    let slot = match rng.pick(&held) {
        Some(s) if !rng.one_in(5) => *s,
        _ => {
            return Op::Open {
                path: p.file(rng),
                slot: u8::try_from(rng.below(u64::from(SLOTS))).unwrap_or(0),
            };
        }
    };
    let size = model.held_size(slot);
    match rng.below(10) {
        0..=4 => {
            let offset = place(rng, size);
            Op::WriteFd {
                slot,
                offset,
                len: u32::try_from((1 + rng.below(16 << 10)).min(MAX_FILE - offset)).unwrap_or(1),
                seed: rng.next_u64(),
            }
        }
        5 | 6 => Op::ReadFd { slot },
        7 => Op::TruncateFd {
            slot,
            len: place(rng, size),
        },
        _ => Op::Close { slot },
    }
}

/// A mismatch between the mount and the model (or a step that failed outright).
#[derive(Debug, Clone)]
pub struct Failure {
    /// Index of the operation at which it showed (the sequence's length when the final check
    /// found it).
    pub index: usize,
    /// What differed.
    pub message: String,
    /// The operations applied, up to and including the failing one.
    pub ops: Vec<Op>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "at operation {}: {}", self.index, self.message)?;
        writeln!(f, "operations ({}):", self.ops.len())?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i:5}  {op}")?;
        }
        Ok(())
    }
}

/// The whole file behind `f`, read from offset 0.
fn read_fd(f: &fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::Start(0))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn name(e: Errno) -> String {
    format!("{} ({e})", nix::errno::Errno::from_raw(e))
}

/// The mount under test and what the checks remember about it.
pub struct Driver<'c> {
    cluster: &'c Cluster,
    /// The held descriptors, by slot (declared before `mount`, so they close before its drop
    /// unmounts).
    fds: HashMap<u8, fs::File>,
    mount: TestMount,
    model: Model,
    /// Model node → inode number seen, and back: numbers must stay stable across remounts and
    /// never be reused.
    inos: HashMap<Id, u64>,
    owners: HashMap<u64, Id>,
    /// What the driver did, for statistics.
    pub counts: Counts,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Operations applied.
    pub ops: usize,
    /// Of those, refused with an errno (on both sides alike).
    pub refused: usize,
    /// Unmount + mount cycles.
    pub remounts: usize,
    /// Cache wipes.
    pub wipes: usize,
}

impl<'c> Driver<'c> {
    /// A driver over a fresh mount on `cluster`, or `None` when FUSE is unusable outside CI.
    ///
    /// # Panics
    /// When the mount fails (or FUSE is unusable with `CI=true`).
    pub fn new(cluster: &'c Cluster) -> Option<Driver<'c>> {
        let mount = mount_on(cluster)?;
        let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        nix::sys::stat::umask(umask);
        Some(Driver {
            cluster,
            fds: HashMap::new(),
            mount,
            model: Model::new(umask.bits()),
            inos: HashMap::new(),
            owners: HashMap::new(),
            counts: Counts::default(),
        })
    }

    /// The mount under test.
    pub fn mount(&self) -> &TestMount {
        &self.mount
    }

    fn real(&self, path: &str) -> std::path::PathBuf {
        if path.is_empty() {
            self.mount.mnt()
        } else {
            self.mount.path(path)
        }
    }

    /// Applies `op` to the mount and the model and compares answers and the touched paths.
    ///
    /// # Errors
    /// The mismatch, as text.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        let expected = self.model.apply(op);
        let started = Instant::now();
        let got = self.apply_real(op)?;
        if started.elapsed() > SLOW && !matches!(op, Op::Settle) {
            eprintln!("fsx: slow: {op} took {:.1?}", started.elapsed());
        }
        self.counts.ops += 1;
        match (&expected, &got) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(a), Err(b)) if a == b => self.counts.refused += 1,
            (Ok(Outcome::Bytes(a)), Ok(Outcome::Bytes(b))) => {
                let first = a.iter().zip(b).position(|(x, y)| x != y);
                return Err(format!(
                    "read {} bytes, the model holds {} (first difference at {first:?})",
                    b.len(),
                    a.len()
                ));
            }
            (a, b) => {
                let show = |r: &Result<Outcome, Errno>| match r {
                    Ok(o) => format!("{o:?}"),
                    Err(e) => name(*e),
                };
                return Err(format!(
                    "the mount answered {}, the model {}",
                    show(b),
                    show(a)
                ));
            }
        }
        match op {
            Op::Remount | Op::WipeCache => self.check_all(),
            _ => {
                for path in op.paths() {
                    self.check_path(path)?;
                    let comps = model::components(path);
                    if comps.len() > 1 {
                        self.check_path(&comps[..comps.len() - 1].join("/"))?;
                    } else {
                        self.check_path("")?;
                    }
                }
                Ok(())
            }
        }
    }

    fn apply_real(&mut self, op: &Op) -> Result<Result<Outcome, Errno>, String> {
        let io = |r: std::io::Result<()>| r.map(|()| Outcome::Done).map_err(|e| errno_of(&e));
        let nix = |r: nix::Result<()>| r.map(|()| Outcome::Done).map_err(|e| e as i32);
        Ok(match op {
            Op::Create { path, mode } => io(fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(*mode)
                .open(self.real(path))
                .map(drop)),
            Op::Write {
                path,
                offset,
                len,
                seed,
            } => io(fs::OpenOptions::new()
                .write(true)
                .open(self.real(path))
                .and_then(|f| {
                    let len = usize::try_from(*len).unwrap_or(0);
                    f.write_all_at(&bytes(*seed, len), *offset)
                })),
            Op::Truncate { path, len } => nix(nix::unistd::truncate(
                &self.real(path),
                i64::try_from(*len).unwrap_or(i64::MAX),
            )),
            Op::Read { path } => fs::read(self.real(path))
                .map(Outcome::Bytes)
                .map_err(|e| errno_of(&e)),
            Op::Rename { from, to } => io(fs::rename(self.real(from), self.real(to))),
            Op::Link { from, to } => io(fs::hard_link(self.real(from), self.real(to))),
            Op::Unlink { path } => io(fs::remove_file(self.real(path))),
            Op::Mkdir { path, mode } => {
                io(fs::DirBuilder::new().mode(*mode).create(self.real(path)))
            }
            Op::Rmdir { path } => io(fs::remove_dir(self.real(path))),
            Op::Symlink { target, path } => io(std::os::unix::fs::symlink(target, self.real(path))),
            Op::SetXattr {
                path,
                name,
                seed,
                len,
                flag,
            } => {
                let value = bytes(*seed, usize::from(*len));
                let flags = match flag {
                    XattrFlag::Either => 0,
                    XattrFlag::Create => libc::XATTR_CREATE,
                    XattrFlag::Replace => libc::XATTR_REPLACE,
                };
                xattr::set(&self.real(path), name, &value, flags).map(|()| Outcome::Done)
            }
            Op::RemoveXattr { path, name } => {
                xattr::remove(&self.real(path), name).map(|()| Outcome::Done)
            }
            Op::Chmod { path, mode } => {
                use std::os::unix::fs::PermissionsExt;
                io(fs::set_permissions(
                    self.real(path),
                    fs::Permissions::from_mode(*mode),
                ))
            }
            Op::Utimens { path, sec, nsec } => {
                let t = nix::sys::time::TimeSpec::new(*sec, *nsec);
                nix(nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    &self.real(path),
                    &t,
                    &t,
                    nix::sys::stat::UtimensatFlags::FollowSymlink,
                ))
            }
            Op::Fsync { path } => io(fs::File::open(self.real(path)).and_then(|f| f.sync_all())),
            Op::Stat { path } => io(fs::symlink_metadata(self.real(path)).map(drop)),
            Op::Readdir { path } => self.listing(path),
            Op::Open { path, slot } => {
                self.fds.remove(slot);
                match fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(self.real(path))
                {
                    Ok(f) => {
                        self.fds.insert(*slot, f);
                        Ok(Outcome::Done)
                    }
                    Err(e) => Err(errno_of(&e)),
                }
            }
            Op::WriteFd {
                slot,
                offset,
                len,
                seed,
            } => match self.fds.get(slot) {
                Some(f) => {
                    io(f.write_all_at(&bytes(*seed, usize::try_from(*len).unwrap_or(0)), *offset))
                }
                None => Err(libc::EBADF),
            },
            Op::ReadFd { slot } => match self.fds.get(slot) {
                Some(f) => read_fd(f).map(Outcome::Bytes).map_err(|e| errno_of(&e)),
                None => Err(libc::EBADF),
            },
            Op::TruncateFd { slot, len } => match self.fds.get(slot) {
                Some(f) => io(f.set_len(*len)),
                None => Err(libc::EBADF),
            },
            Op::Close { slot } => match self.fds.remove(slot) {
                Some(f) => nix(nix::unistd::close(std::os::fd::OwnedFd::from(f))),
                None => Err(libc::EBADF),
            },
            Op::Settle => {
                std::thread::sleep(std::time::Duration::from_millis(1300));
                Ok(Outcome::Done)
            }
            Op::Remount => {
                self.fds.clear();
                self.counts.remounts += 1;
                self.mount.remount();
                Ok(Outcome::Done)
            }
            Op::WipeCache => {
                self.fds.clear();
                self.counts.wipes += 1;
                let o = out(self.mount.defs().arg("sync").arg(self.mount.mnt()));
                if !o.status.success() {
                    return Err(format!(
                        "defs sync failed before the cache wipe: {}",
                        text(&o)
                    ));
                }
                self.mount.unmount();
                fs::remove_dir_all(self.mount.data_dir().join("cache"))
                    .map_err(|e| format!("deleting DIR/cache: {e}"))?;
                self.mount.mount();
                Ok(Outcome::Done)
            }
        })
    }

    fn listing(&self, path: &str) -> Result<Outcome, Errno> {
        let mut names = fs::read_dir(self.real(path))
            .and_then(|d| {
                d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .map_err(|e| errno_of(&e))?;
        names.sort();
        Ok(Outcome::Names(names))
    }

    /// Compares `lstat` (and content, target, xattrs) of `path` with the model.
    fn check_path(&mut self, path: &str) -> Result<(), String> {
        let expected = self.model.lookup(path, false);
        let real = self.real(path);
        let got = fs::symlink_metadata(&real);
        let (id, md) = match (expected, got) {
            (Err(a), Err(e)) if a == errno_of(&e) => return Ok(()),
            (Err(a), Err(e)) => {
                return Err(format!(
                    "lstat /{path}: the mount answered {e}, the model {}",
                    name(a)
                ));
            }
            (Err(a), Ok(md)) => {
                return Err(format!(
                    "lstat /{path}: the mount shows a {:?}, the model {}",
                    md.file_type(),
                    name(a)
                ));
            }
            (Ok(_), Err(e)) => return Err(format!("lstat /{path}: {e}, the model has it")),
            (Ok(id), Ok(md)) => (id, md),
        };
        let Some(node) = self.model.node(id).cloned() else {
            return Err(format!("model: /{path} names a missing node {id}"));
        };
        let mut diffs = Vec::new();
        let ft = md.file_type();
        let kind_ok = match &node.kind {
            Kind::File(_) => ft.is_file(),
            Kind::Dir(_) => ft.is_dir(),
            Kind::Symlink(_) => ft.is_symlink(),
        };
        if !kind_ok {
            return Err(format!(
                "lstat /{path}: a {ft:?}, the model has {:?}",
                node.kind
            ));
        }
        let perm = md.mode() & 0o7777;
        if !ft.is_symlink() && perm != node.perm {
            diffs.push(format!("mode {perm:o}, the model {:o}", node.perm));
        }
        let nlink = self.model.nlink(id);
        if md.nlink() != u64::from(nlink) {
            diffs.push(format!("nlink {}, the model {nlink}", md.nlink()));
        }
        if let Some((sec, nsec)) = node.mtime
            && (md.mtime(), md.mtime_nsec()) != (sec, nsec)
        {
            diffs.push(format!(
                "mtime {}.{:09}, set to {sec}.{nsec:09}",
                md.mtime(),
                md.mtime_nsec()
            ));
        }
        match &node.kind {
            Kind::File(data) => {
                if md.len() != u64::try_from(data.len()).unwrap_or(0) {
                    diffs.push(format!("size {}, the model {}", md.len(), data.len()));
                }
                match fs::read(&real) {
                    Ok(b) if b == *data => {}
                    Ok(b) => diffs.push(format!(
                        "content of {} bytes differs from the model's {} (first at {:?})",
                        b.len(),
                        data.len(),
                        b.iter().zip(data).position(|(x, y)| x != y)
                    )),
                    Err(e) => diffs.push(format!("read: {e}")),
                }
            }
            Kind::Symlink(target) => {
                match fs::read_link(&real) {
                    Ok(t) if t.as_os_str() == target.as_str() => {}
                    other => diffs.push(format!("readlink {other:?}, the model {target}")),
                }
                if md.len() != u64::try_from(target.len()).unwrap_or(0) {
                    diffs.push(format!(
                        "size {}, the target has {}",
                        md.len(),
                        target.len()
                    ));
                }
            }
            Kind::Dir(_) => {}
        }
        if !ft.is_symlink() {
            match xattr::all_user(&real) {
                Ok(x) if x == node.xattrs => {}
                Ok(x) => diffs.push(format!(
                    "xattrs {:?}, the model {:?}",
                    x.keys().collect::<Vec<_>>(),
                    node.xattrs.keys().collect::<Vec<_>>()
                )),
                Err(e) => diffs.push(format!("listing xattrs: {}", name(e))),
            }
        }
        let ino = md.ino();
        match (self.inos.get(&id), self.owners.get(&ino)) {
            (Some(&seen), _) if seen != ino => {
                diffs.push(format!("inode {ino}, was {seen} before"));
            }
            (_, Some(&other)) if other != id => {
                diffs.push(format!("inode {ino} reused (it was another inode's)"));
            }
            _ => {
                self.inos.insert(id, ino);
                self.owners.insert(ino, id);
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!("lstat /{path}: {}", diffs.join("; ")))
        }
    }

    /// Checks every path of the model and every directory's listing.
    ///
    /// # Errors
    /// The first mismatch, as text.
    pub fn check_all(&mut self) -> Result<(), String> {
        for (path, id) in self.model.paths() {
            self.check_path(&path)?;
            if let Some(Kind::Dir(e)) = self.model.node(id).map(|n| &n.kind) {
                let want = Outcome::Names(e.keys().cloned().collect());
                let got = self.listing(&path);
                if got != Ok(want.clone()) {
                    return Err(format!("readdir /{path}: {got:?}, the model {want:?}"));
                }
            }
        }
        Ok(())
    }

    /// Applies `ops` in order, checking after each and the whole tree at the end.
    ///
    /// # Errors
    /// The first mismatch.
    pub fn replay(&mut self, ops: &[Op]) -> Result<(), Failure> {
        let fail = |index: usize, message: String| Failure {
            index,
            message,
            ops: ops[..(index + 1).min(ops.len())].to_vec(),
        };
        for (i, op) in ops.iter().enumerate() {
            self.step(op).map_err(|m| fail(i, format!("{op}: {m}")))?;
        }
        self.check_all()
            .map_err(|m| fail(ops.len(), format!("final check: {m}")))
    }

    /// Runs `n` operations generated from `seed`: operation [`FORCED_REMOUNT_AT`] is a remount
    /// and [`FORCED_WIPE_AT`] a cache wipe, so a run of a few hundred has both. A sequence is a
    /// prefix of every longer one of the same seed, so a failing seed replays with `index + 1`
    /// operations.
    ///
    /// # Errors
    /// The first mismatch.
    pub fn run_seed(&mut self, seed: u64, n: usize) -> Result<(), Failure> {
        let mut rng = Rng::new(seed);
        let mut ops = Vec::with_capacity(n);
        for i in 0..n {
            let op = if i == FORCED_REMOUNT_AT {
                Op::Remount
            } else if i == FORCED_WIPE_AT {
                Op::WipeCache
            } else {
                generate(&mut rng, &self.model)
            };
            ops.push(op.clone());
            let r = self.step(&op).and_then(|()| {
                if (i + 1).is_multiple_of(FULL_CHECK_EVERY) {
                    self.check_all()
                } else {
                    Ok(())
                }
            });
            if let Err(m) = r {
                return Err(Failure {
                    index: i,
                    message: format!("{op}: {m}"),
                    ops,
                });
            }
        }
        self.check_all().map_err(|m| Failure {
            index: n,
            message: format!("final check: {m}"),
            ops: ops.clone(),
        })
    }

    /// The cluster the mount uses.
    pub fn cluster(&self) -> &'c Cluster {
        self.cluster
    }
}

/// Replays `ops` on a fresh mount of `cluster`: `Err` when they fail (a panic counts).
pub fn replay(cluster: &Cluster, ops: &[Op]) -> Result<(), Failure> {
    let ops_for_panic = ops.to_vec();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(mut d) = Driver::new(cluster) else {
            panic!("FUSE became unusable while shrinking");
        };
        d.replay(ops)
    }))
    .unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(Failure {
            index: ops_for_panic.len(),
            message: format!("panicked: {what}"),
            ops: ops_for_panic,
        })
    })
}

/// Looks for a shorter sequence than `failure.ops` that still fails on a fresh mount, removing
/// chunks (halves, quarters, … single operations) while `budget` (replays) lasts. Returns the
/// shortest failing sequence found with its failure, or `None` when the full sequence did not
/// fail again (the failure depends on timing).
pub fn shrink(cluster: &Cluster, failure: &Failure, budget: usize) -> Option<Failure> {
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    let mut best = replay(cluster, &failure.ops).err()?;
    let mut tries = 1;
    let mut chunk = best.ops.len() / 2;
    while chunk >= 1 && tries < budget && Instant::now() < deadline {
        let mut start = 0;
        let mut removed_any = false;
        while start < best.ops.len() && tries < budget && Instant::now() < deadline {
            let mut candidate = best.ops.clone();
            let end = (start + chunk).min(candidate.len());
            candidate.drain(start..end);
            tries += 1;
            match replay(cluster, &candidate) {
                Err(f) => {
                    best = f;
                    removed_any = true;
                }
                Ok(()) => start += chunk,
            }
        }
        if !removed_any {
            chunk /= 2;
        }
    }
    Some(best)
}

/// Reads and runs the seeds file format: one `SEED OPS` pair per line, `#` comments.
pub fn parse_seeds(text: &str) -> Vec<(u64, usize)> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Runs seed `seed` for `n` operations on a fresh mount of `cluster`; on a failure, shrinks it
/// (up to `shrink_budget` replays), appends `SEED OPS` (the operations up to the failing one) to
/// `keep` when given, and returns the whole
/// report as text. `Ok` carries what the run did.
///
/// # Errors
/// The report of a failure.
pub fn run_and_report(
    cluster: &Cluster,
    seed: u64,
    n: usize,
    shrink_budget: usize,
    keep: Option<&Path>,
) -> Result<Counts, String> {
    let Some(mut d) = Driver::new(cluster) else {
        return Ok(Counts::default());
    };
    let failure = match d.run_seed(seed, n) {
        Ok(()) => return Ok(d.counts),
        Err(f) => f,
    };
    let log = d.mount().log();
    drop(d);
    let mut report = format!(
        "fsx: seed {seed} ({n} operations) FAILED\nreproduce: ci/fsx --seeds {seed} --ops {n}\n{failure}"
    );
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    report.push_str("mount log (last lines):\n");
    for l in tail.iter().rev() {
        report.push_str(l);
        report.push('\n');
    }
    if let Some(keep) = keep {
        use std::io::Write;
        let kept = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(keep)
            .and_then(|mut f| writeln!(f, "{seed} {}", failure.index + 1));
        match kept {
            Ok(()) => report.push_str(&format!("seed kept in {}\n", keep.display())),
            Err(e) => report.push_str(&format!("could not keep the seed: {e}\n")),
        }
    }
    if shrink_budget > 0 {
        match shrink(cluster, &failure, shrink_budget) {
            Some(s) => report.push_str(&format!("shrunk to {} operations:\n{s}", s.ops.len())),
            None => report.push_str("the sequence did not fail again on a fresh mount\n"),
        }
    }
    Err(report)
}

/// Extended attributes through libc (std has none).
#[allow(unsafe_code)]
mod xattr {
    use std::collections::BTreeMap;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use super::Errno;

    fn cpath(p: &Path) -> Result<CString, Errno> {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)
    }

    fn cname(n: &str) -> Result<CString, Errno> {
        CString::new(n).map_err(|_| libc::EINVAL)
    }

    fn last() -> Errno {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    }

    /// `setxattr(2)` (follows symlinks).
    pub(super) fn set(p: &Path, name: &str, value: &[u8], flags: i32) -> Result<(), Errno> {
        let (p, n) = (cpath(p)?, cname(name)?);
        // SAFETY: valid NUL-terminated strings and a live slice of `value.len()` bytes.
        let r = unsafe {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        };
        if r == 0 { Ok(()) } else { Err(last()) }
    }

    /// `removexattr(2)` (follows symlinks).
    pub(super) fn remove(p: &Path, name: &str) -> Result<(), Errno> {
        let (p, n) = (cpath(p)?, cname(name)?);
        // SAFETY: valid NUL-terminated strings.
        let r = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
        if r == 0 { Ok(()) } else { Err(last()) }
    }

    /// Every `user.*` attribute of `p` (not following a symlink) with its value.
    pub(super) fn all_user(p: &Path) -> Result<BTreeMap<String, Vec<u8>>, Errno> {
        let p = cpath(p)?;
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: a valid path and a buffer of `buf.len()` writable bytes.
        let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        let n = usize::try_from(n).map_err(|_| last())?;
        let mut out = BTreeMap::new();
        for name in buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
            let name = String::from_utf8_lossy(name).into_owned();
            if !name.starts_with("user.") {
                continue;
            }
            let cn = cname(&name)?;
            let mut value = vec![0u8; 64 * 1024];
            // SAFETY: valid strings and a buffer of `value.len()` writable bytes.
            let len = unsafe {
                libc::lgetxattr(
                    p.as_ptr(),
                    cn.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            let len = usize::try_from(len).map_err(|_| last())?;
            value.truncate(len);
            out.insert(name, value);
        }
        Ok(out)
    }
}
