//! Spare cache files: empty files made ahead of need, so that the first write of a new inode
//! links or renames one into `data/` instead of creating an inode on the request path, and a
//! removed inode's file is emptied and kept for the next one instead of unlinked.
//!
//! ```text
//!  refill thread ── open(data/, O_TMPFILE) while fewer than SPARE_LOW ready, up to SPARE_HIGH
//!        ▲ wake     (unnamed: no directory entry)  │ unnamed: [File, …]
//!        │          or, where O_TMPFILE is refused, create spare/<n> │ named: [n, …]
//!  CacheStore (its lock held) ── take_as(data/<ino>) ── a named one first:
//!                                    renameat2(spare/<n>, data/<ino>, NOREPLACE)
//!                                  else an unnamed one: linkat(fd, data/<ino>)
//!                             ── recycle(data/<ino>) ── set_len(0), rename to spare/<n>
//! ```
//!
//! Unnamed spares are cheaper to take than named ones: linking adds one directory entry,
//! where a rename between directories looks up, adds and removes entries in two of them
//! (`rsync -a` spent 7 % of the mount's CPU in those renames, `performance.md`). Named spares
//! remain for recycled files (they already have an inode and must not lose it) and for
//! filesystems without `O_TMPFILE`.
//!
//! Why: creating a file costs an inode allocation, and on ext4 without a journal that
//! allocation skips every inode freed in the last minute, reading its inode-table block for
//! each (`recently_deleted`): 0.1–0.8 ms per create after a tree was deleted, on the request
//! path of every first write (`performance.md`, "rsync -a"). A rename allocates nothing.
//!
//! Invariants: a name in the pool is an empty regular file in `spare/` that nothing else refers
//! to; an unnamed spare is an empty file with no name at all, freed by the kernel when its
//! descriptor closes (a crash included), or named into `spare/` when the pool is dropped, so
//! that a clean close frees no inode and the next open needs none. Spares hold no data, so a
//! crash at any point loses nothing: at open every file in `spare/` is emptied (a recycled
//! file may not have been) and taken into the pool, or removed beyond [`SPARE_MAX`] or when
//! its name is not ours.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fsutil::{c_path, check};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The refill thread tops the pool up when fewer spares than this are ready. 16 covers a burst
/// of new files between two wake-ups of the thread on a busy machine (a copy makes one every
/// 0.3 ms; the thread makes one in 0.05–0.1 ms); a pool found empty only costs that create on
/// the request path.
pub const SPARE_LOW: usize = 16;

/// The refill thread creates spares up to this many. Each is an empty inode (no data blocks).
/// Kept small because every spare is an inode freed when the cache is wiped, and on ext4
/// without a journal each inode allocated in the next minute skips every freed one: 128
/// spares cost a `cp -a` right after a wipe a third of the mount's CPU (`performance.md`).
pub const SPARE_HIGH: usize = 32;

/// At most this many spares are kept, recycled ones included; beyond it removed files are
/// unlinked. 1,024 empty inodes cost nothing noticeable and cover deleting and re-creating a
/// large directory.
pub const SPARE_MAX: usize = 1024;

/// How long the refill thread waits after a failed create before trying again.
const RETRY: Duration = Duration::from_secs(1);

struct State {
    /// Named spares: `spare/<n>`.
    ready: Vec<u64>,
    /// Unnamed spares (`O_TMPFILE` in `data/`).
    unnamed: Vec<File>,
    /// Whether to make unnamed spares: cleared when the filesystem refuses `O_TMPFILE` or
    /// linking one.
    unnamed_ok: bool,
    next: u64,
    stop: bool,
}

impl State {
    fn count(&self) -> usize {
        self.ready.len() + self.unnamed.len()
    }
}

struct Shared {
    /// `spare/`, for named spares.
    dir: PathBuf,
    /// `data/`, where unnamed spares are made and every spare ends up.
    data_dir: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(n.to_string())
    }
}

/// The pool of spare files and its refill thread (stopped on drop).
pub(super) struct Spares {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Spares {
    /// Opens the pool in `dir` (created if missing) for files that go to `data_dir`: adopts
    /// the spares a previous run left (emptied), then starts the refill thread.
    pub(super) fn open(dir: &Path, data_dir: &Path) -> Result<Spares> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut ready = Vec::new();
        let mut next = 0u64;
        for file in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = file.map_err(|e| Error::io(dir, e))?.path();
            let n = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok());
            match n {
                Some(n) if ready.len() < SPARE_MAX => {
                    // A recycled file may have been renamed here before it was emptied.
                    let emptied = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(0));
                    match emptied {
                        Ok(()) => {
                            ready.push(n);
                            next = next.max(n.saturating_add(1));
                        }
                        Err(_) => remove(&path)?,
                    }
                }
                _ => remove(&path)?,
            }
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            state: Mutex::new(State {
                ready,
                unnamed: Vec::new(),
                unnamed_ok: true,
                next,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("defs-cache-spare".into())
                .spawn(move || refill_loop(&shared))
                .map_err(|e| Error::io("spawning the spare-file thread", e))?
        };
        Ok(Spares {
            shared,
            thread: Some(thread),
        })
    }

    /// Gives a spare the name `target`, which must not exist (an existing file is never
    /// replaced), and returns it open for writing. `None`, changing nothing at `target`, when
    /// no spare is ready or the filesystem refused; the caller then opens or creates the file
    /// itself.
    pub(super) fn take_as(&self, target: &Path) -> Option<File> {
        let (named, unnamed) = {
            let mut s = self.shared.lock();
            // Recycled files first: they cost no inode at all.
            let named = s.ready.pop();
            let unnamed = if named.is_none() {
                s.unnamed.pop()
            } else {
                None
            };
            if s.count() < SPARE_LOW {
                self.shared.wake.notify_one();
            }
            (named, unnamed)
        };
        if let Some(n) = named {
            return self.rename_as(n, target);
        }
        let file = unnamed?;
        match link_as(&file, target) {
            Ok(()) => Some(file),
            Err(e) => {
                // EEXIST: the target exists after all (the caller opens it). A refusal of the
                // operation itself: this system cannot link unnamed files, so make named spares
                // from now on. Anything else (ENOSPC, EIO): drop this one, the caller creates.
                let mut s = self.shared.lock();
                if e.kind() == io::ErrorKind::AlreadyExists {
                    s.unnamed.push(file);
                } else if matches!(
                    e.raw_os_error(),
                    Some(
                        libc::EPERM | libc::ENOENT | libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL
                    )
                ) {
                    tracing::debug!(error = %e, "linking an unnamed spare refused; using named ones");
                    s.unnamed_ok = false;
                    s.unnamed.clear();
                    self.shared.wake.notify_one();
                } else {
                    tracing::debug!(error = %e, "linking an unnamed spare failed");
                }
                None
            }
        }
    }

    /// Renames named spare `n` to `target` and opens it.
    fn rename_as(&self, n: u64, target: &Path) -> Option<File> {
        let from = self.shared.path(n);
        match rename_noreplace(&from, target) {
            Ok(()) => OpenOptions::new().write(true).open(target).ok(),
            Err(e) => {
                // EEXIST: the target exists after all (the caller opens it). Anything else
                // (a filesystem without renameat2): forget this spare, create normally.
                if e.kind() == io::ErrorKind::AlreadyExists {
                    self.shared.lock().ready.push(n);
                } else {
                    tracing::debug!(error = %e, "spare cache file not usable");
                    let _ = fs::remove_file(&from);
                }
                None
            }
        }
    }

    /// Takes `path` (a cache file no entry refers to any more) into the pool, emptied, when
    /// the pool has room; otherwise unlinks it. A missing file is fine.
    ///
    /// # Errors
    /// I/O errors other than the file being missing.
    pub(super) fn recycle(&self, path: &Path) -> Result<()> {
        let n = {
            let mut s = self.shared.lock();
            if s.ready.len() >= SPARE_MAX {
                None
            } else {
                let n = s.next;
                s.next += 1;
                Some(n)
            }
        };
        let Some(n) = n else { return remove(path) };
        let emptied = OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(0));
        match emptied {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(_) => return remove(path),
        }
        let to = self.shared.path(n);
        match fs::rename(path, &to) {
            Ok(()) => {
                self.shared.lock().ready.push(n);
                Ok(())
            }
            Err(_) => remove(path),
        }
    }

    /// Spares ready now.
    #[cfg(test)]
    pub(super) fn ready(&self) -> usize {
        self.shared.lock().count()
    }
}

impl Drop for Spares {
    /// Stops the refill thread and names the unnamed spares, so that the next open adopts
    /// them: freed instead, they would cost the next run as many new inodes, each allocation
    /// skipping every inode freed in the last minute on ext4 without a journal (the
    /// module doc).
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.keep_unnamed();
    }
}

impl Spares {
    /// Links each unnamed spare into `spare/` as a named one, up to [`SPARE_MAX`] in all.
    /// After the first that cannot be linked, the rest are freed, as they would have been.
    fn keep_unnamed(&self) {
        let mut s = self.shared.lock();
        for file in std::mem::take(&mut s.unnamed) {
            if s.ready.len() >= SPARE_MAX {
                break;
            }
            let n = s.next;
            s.next += 1;
            match link_as(&file, &self.shared.path(n)) {
                Ok(()) => s.ready.push(n),
                Err(e) => {
                    tracing::debug!(error = %e, "keeping an unnamed spare failed; freeing it");
                    break;
                }
            }
        }
    }
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn refill_loop(shared: &Shared) {
    let mut s = shared.lock();
    loop {
        while !s.stop && s.count() >= SPARE_LOW {
            s = shared
                .wake
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if s.stop {
            return;
        }
        // Create one at a time, without the lock, so that takers get each as soon as it exists.
        while !s.stop && s.count() < SPARE_HIGH {
            if s.unnamed_ok {
                drop(s);
                let made = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_TMPFILE)
                    .open(&shared.data_dir);
                s = shared.lock();
                match made {
                    Ok(file) => s.unnamed.push(file),
                    Err(e) if unsupported(&e) => {
                        tracing::debug!(error = %e, "no O_TMPFILE here; making named spares");
                        s.unnamed_ok = false;
                    }
                    Err(e) => s = retry_later(shared, s, &shared.data_dir, &e),
                }
                continue;
            }
            let n = s.next;
            s.next += 1;
            drop(s);
            let made = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(shared.path(n));
            s = shared.lock();
            match made {
                Ok(_) => s.ready.push(n),
                Err(e) => s = retry_later(shared, s, &shared.dir, &e),
            }
        }
    }
}

/// After a failed create in `dir`: logs it and waits [`RETRY`] (or a wake-up).
fn retry_later<'a>(
    shared: &'a Shared,
    s: MutexGuard<'a, State>,
    dir: &Path,
    e: &io::Error,
) -> MutexGuard<'a, State> {
    tracing::warn!(error = %e, dir = %dir.display(), "creating a spare cache file failed; retrying in a second");
    shared
        .wake
        .wait_timeout(s, RETRY)
        .map(|(s, _)| s)
        .unwrap_or_else(|p| p.into_inner().0)
}

/// Whether `open(O_TMPFILE)` failed because the kernel or filesystem does not offer it.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
    )
}

/// Whether linkat(2) with `AT_EMPTY_PATH` works for this process (it needs
/// CAP_DAC_READ_SEARCH, a per-process fact): once refused, [`link_as`] goes straight to the
/// `/proc/self/fd` form instead of failing a syscall on every new cache file.
static DIRECT_LINK: AtomicBool = AtomicBool::new(true);

/// Gives the unnamed `file` the name `to` (never replacing an existing one): linkat(2) with
/// `AT_EMPTY_PATH`, which needs CAP_DAC_READ_SEARCH, else through `/proc/self/fd`, which does
/// not.
#[allow(unsafe_code)]
fn link_as(file: &File, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let to = c_path(to)?;
    let fd = file.as_raw_fd();
    let direct = if DIRECT_LINK.load(Ordering::Relaxed) {
        // SAFETY: `fd` is an open descriptor we own for the call's duration; the paths are
        // valid NUL-terminated strings.
        check(unsafe {
            libc::linkat(
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        })
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    };
    match direct {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EPERM)) => {
            let proc = c_path(format!("/proc/self/fd/{fd}"))?;
            // SAFETY: as above.
            check(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    proc.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            })?;
            // The fallback works where the direct form did not: use it from now on.
            DIRECT_LINK.store(false, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// rename(2) that fails with `AlreadyExists` instead of replacing an existing `to`.
#[allow(unsafe_code)]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD makes relative paths relative to
    // the working directory, as rename(2) does (ours are absolute or relative alike).
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for the refill thread. Generous: on a loaded machine with a journal-less ext4,
    /// each create can take milliseconds (it scans past recently freed inodes).
    fn wait_for(spares: &Spares, n: usize) {
        for _ in 0..3000 {
            if spares.ready() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("only {} spares after 30 s", spares.ready());
    }

    #[test]
    fn the_pool_fills_and_a_spare_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::open(&dir.path().join("spare"), dir.path()).unwrap();
        wait_for(&spares, SPARE_HIGH);
        let target = dir.path().join("a");
        let mut file = spares.take_as(&target).unwrap();
        assert_eq!(fs::metadata(&target).unwrap().len(), 0);
        // What is written through the returned file is the named file's.
        std::io::Write::write_all(&mut file, b"keep me").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        assert!(
            spares.take_as(&target).is_none(),
            "an existing file is never replaced"
        );
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        // Taking below SPARE_LOW wakes the refill.
        let fresh = dir.path().join("fresh");
        fs::create_dir(&fresh).unwrap();
        for i in 0..SPARE_HIGH {
            spares.take_as(&fresh.join(i.to_string()));
        }
        wait_for(&spares, SPARE_HIGH);
    }

    /// The path a mount without CAP_DAC_READ_SEARCH takes (a user's fusermount3 mount; the
    /// tests run as root, where the direct form always works).
    #[test]
    fn an_unnamed_spare_links_through_proc_when_the_direct_form_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::open(&dir.path().join("spare"), dir.path()).unwrap();
        wait_for(&spares, 1);
        // Process-wide, like the capability it stands for; other tests then take the
        // fallback too, which is what it is for.
        DIRECT_LINK.store(false, Ordering::Relaxed);
        let target = dir.path().join("via-proc");
        let mut file = spares.take_as(&target).unwrap();
        std::io::Write::write_all(&mut file, b"linked").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"linked");
        assert!(
            spares.take_as(&target).is_none(),
            "an existing file is never replaced"
        );
    }

    #[test]
    fn unnamed_spares_outlive_a_close_as_named_ones() {
        let dir = tempfile::tempdir().unwrap();
        let spare_dir = dir.path().join("spare");
        let spares = Spares::open(&spare_dir, dir.path()).unwrap();
        wait_for(&spares, SPARE_HIGH);
        assert!(spares.shared.lock().ready.is_empty(), "unnamed while open");
        drop(spares);
        assert_eq!(fs::read_dir(&spare_dir).unwrap().count(), SPARE_HIGH);
        // The next open starts with a full pool: no inode to allocate, none freed.
        let spares = Spares::open(&spare_dir, dir.path()).unwrap();
        assert_eq!(spares.shared.lock().ready.len(), SPARE_HIGH);
        let target = dir.path().join("a");
        let mut file = spares.take_as(&target).unwrap();
        std::io::Write::write_all(&mut file, b"named").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"named");
        assert_eq!(fs::read_dir(&spare_dir).unwrap().count(), SPARE_HIGH - 1);
    }

    #[test]
    fn recycled_files_come_back_empty_also_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let spare_dir = dir.path().join("spare");
        let spares = Spares::open(&spare_dir, dir.path()).unwrap();
        wait_for(&spares, SPARE_HIGH);
        let old = dir.path().join("old");
        fs::write(&old, vec![7u8; 10_000]).unwrap();
        spares.recycle(&old).unwrap();
        assert!(!old.exists());
        spares.recycle(&old).unwrap(); // missing: fine
        drop(spares);
        // A file renamed into spare/ but not emptied (a crash between the two steps).
        fs::write(spare_dir.join("999999"), b"stale").unwrap();
        fs::write(spare_dir.join("not-ours"), b"x").unwrap();
        let spares = Spares::open(&spare_dir, dir.path()).unwrap();
        assert!(!spare_dir.join("not-ours").exists());
        for f in fs::read_dir(&spare_dir).unwrap() {
            assert_eq!(f.unwrap().metadata().unwrap().len(), 0);
        }
        // The recycled file, the stale one and the unnamed spares named at the drop are
        // adopted, and taken before unnamed spares.
        assert_eq!(spares.shared.lock().ready.len(), 2 + SPARE_HIGH);
        let mut taken = 0;
        while spares
            .take_as(&dir.path().join(format!("t{taken}")))
            .is_some()
        {
            assert_eq!(
                fs::metadata(dir.path().join(format!("t{taken}")))
                    .unwrap()
                    .len(),
                0
            );
            taken += 1;
            if taken > SPARE_MAX {
                break;
            }
        }
        assert!(taken >= 2);
        assert!(fs::read_dir(&spare_dir).unwrap().next().is_none());
    }
}
