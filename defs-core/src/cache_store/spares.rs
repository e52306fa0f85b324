//! Spare cache files: empty files made ahead of need in `DIR/cache/spare/`, so that the first
//! write of a new inode renames one into `data/` instead of creating an inode on the request
//! path, and a removed inode's file is emptied and kept for the next one instead of unlinked.
//!
//! ```text
//!  refill thread ── create spare/<n> (O_EXCL) while fewer than SPARE_LOW ready, up to SPARE_HIGH
//!        ▲ wake                                   │ ready: [n, …]
//!  CacheStore (its lock held) ── take() ── renameat2(spare/<n>, data/<ino>, NOREPLACE)
//!                             ── recycle(data/<ino>) ── set_len(0), rename to spare/<n>
//! ```
//!
//! Why: creating a file costs an inode allocation, and on ext4 without a journal that
//! allocation skips every inode freed in the last minute, reading its inode-table block for
//! each (`recently_deleted`): 0.1–0.8 ms per create after a tree was deleted, on the request
//! path of every first write (`performance.md`, "rsync -a"). A rename allocates nothing.
//!
//! Invariants: a name in the pool is an empty regular file in `spare/` that nothing else refers
//! to. Spares hold no data, so a crash at any point loses nothing: at open every file in
//! `spare/` is emptied (a recycled file may not have been) and taken into the pool, or removed
//! beyond [`SPARE_MAX`] or when its name is not ours.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The refill thread tops the pool up when fewer spares than this are ready. 32 covers a burst
/// of new files between two wake-ups of the thread on a busy machine.
pub const SPARE_LOW: usize = 32;

/// The refill thread creates spares up to this many. Each is an empty inode (no data blocks);
/// 128 keep the refills in batches without holding many inodes nobody may need.
pub const SPARE_HIGH: usize = 128;

/// At most this many spares are kept, recycled ones included; beyond it removed files are
/// unlinked. 1,024 empty inodes cost nothing noticeable and cover deleting and re-creating a
/// large directory.
pub const SPARE_MAX: usize = 1024;

/// How long the refill thread waits after a failed create before trying again.
const RETRY: Duration = Duration::from_secs(1);

struct State {
    ready: Vec<u64>,
    next: u64,
    stop: bool,
}

struct Shared {
    dir: PathBuf,
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
    /// Opens the pool in `dir` (created if missing): adopts the spares a previous run left
    /// (emptied), then starts the refill thread.
    pub(super) fn open(dir: &Path) -> Result<Spares> {
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
            state: Mutex::new(State {
                ready,
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

    /// Moves a spare to `target`, which must not exist (renameat2 `RENAME_NOREPLACE`: an
    /// existing file is never replaced). Returns false, changing nothing at `target`, when no
    /// spare is ready or the rename failed; the caller then creates the file itself.
    pub(super) fn take_as(&self, target: &Path) -> bool {
        let n = {
            let mut s = self.shared.lock();
            let n = s.ready.pop();
            if s.ready.len() < SPARE_LOW {
                self.shared.wake.notify_one();
            }
            n
        };
        let Some(n) = n else { return false };
        let from = self.shared.path(n);
        match rename_noreplace(&from, target) {
            Ok(()) => true,
            Err(e) => {
                // EEXIST: the target exists after all (the caller opens it). Anything else
                // (a filesystem without renameat2): forget this spare, create normally.
                if e.kind() == io::ErrorKind::AlreadyExists {
                    self.shared.lock().ready.push(n);
                } else {
                    tracing::debug!(error = %e, "spare cache file not usable");
                    let _ = fs::remove_file(&from);
                }
                false
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
        self.shared.lock().ready.len()
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
        while !s.stop && s.ready.len() >= SPARE_LOW {
            s = shared
                .wake
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if s.stop {
            return;
        }
        // Create one at a time, without the lock, so that takers get each as soon as it exists.
        while !s.stop && s.ready.len() < SPARE_HIGH {
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
                Err(e) => {
                    tracing::warn!(error = %e, dir = %shared.dir.display(), "creating a spare cache file failed; retrying in a second");
                    s = shared
                        .wake
                        .wait_timeout(s, RETRY)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        }
    }
}

/// rename(2) that fails with `AlreadyExists` instead of replacing an existing `to`.
#[allow(unsafe_code)]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (from, to) = (cstr(from)?, cstr(to)?);
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD makes relative paths relative to
    // the working directory, as rename(2) does (ours are absolute or relative alike).
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
        let spares = Spares::open(&dir.path().join("spare")).unwrap();
        wait_for(&spares, SPARE_HIGH);
        let target = dir.path().join("a");
        assert!(spares.take_as(&target));
        assert_eq!(fs::metadata(&target).unwrap().len(), 0);
        fs::write(&target, b"keep me").unwrap();
        assert!(
            !spares.take_as(&target),
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

    #[test]
    fn recycled_files_come_back_empty_also_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let spare_dir = dir.path().join("spare");
        let spares = Spares::open(&spare_dir).unwrap();
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
        let spares = Spares::open(&spare_dir).unwrap();
        assert!(!spare_dir.join("not-ours").exists());
        for f in fs::read_dir(&spare_dir).unwrap() {
            assert_eq!(f.unwrap().metadata().unwrap().len(), 0);
        }
        let mut taken = 0;
        while spares.take_as(&dir.path().join(format!("t{taken}"))) {
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
        assert!(taken > SPARE_HIGH);
    }
}
