//! Small filesystem helpers shared by the local stores: the durability steps every
//! temp-file-then-rename protocol needs, opening a store's index (refusing when it was lost),
//! and the syscalls std does not offer (punch a hole, find data) with their C-string and
//! return-code plumbing.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Fsyncs a directory, making the creations, renames and removals of entries in it durable.
///
/// # Errors
/// [`Error::Io`] naming `dir`.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// `p` as a C string for a syscall.
pub(crate) fn c_path(p: impl AsRef<std::ffi::OsStr>) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_ref().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A syscall's return code as a result (errno on -1).
pub(crate) fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Frees the blocks of `len` bytes at `offset` in `file` (they read as zeros afterwards); the
/// file's length does not change. Fails with `EOPNOTSUPP` on filesystems without hole punching.
#[allow(unsafe_code)]
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = (off(offset)?, off(len)?);
    // SAFETY: fallocate(2) on a file descriptor we own; no memory is passed.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    })
}

/// Whether `file` holds data (not a hole) anywhere in `start..end`. Filesystems without
/// `SEEK_DATA` report the whole file as data, which errs on the side of "yes".
#[allow(unsafe_code)]
pub(crate) fn has_data(file: &File, start: u64, end: u64) -> io::Result<bool> {
    if start >= end {
        return Ok(false);
    }
    // SAFETY: lseek(2) on a file descriptor we own. It moves that descriptor's offset, which
    // nothing here relies on (all I/O on pack files is positioned).
    let at = unsafe { libc::lseek(file.as_raw_fd(), off(start)?, libc::SEEK_DATA) };
    if at >= 0 {
        return Ok(u64::try_from(at).unwrap_or(u64::MAX) < end);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // No data at or after `start`.
        Some(libc::ENXIO) => Ok(false),
        Some(libc::EINVAL | libc::EOPNOTSUPP) => Ok(true),
        _ => Err(e),
    }
}

/// Granularity of holes DeFS finds in bytes it stores or caches: the page and block size of
/// Linux filesystems, so a file's holes as `SEEK_HOLE` reports them survive, and runs of
/// written or fetched zeros are dropped in the same units.
pub const HOLE_BLOCK: usize = 4096;

/// Whether `bytes` are all zero. An OR-fold without early exit: it vectorises, and callers
/// pass one [`HOLE_BLOCK`] at a time.
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// What [`seek`] looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// The first data byte at or after the offset (`SEEK_DATA`).
    Data,
    /// The first hole byte at or after the offset (`SEEK_HOLE`; the end of the file counts).
    Hole,
}

/// `lseek(file, from, SEEK_DATA | SEEK_HOLE)`: `None` when there is no such byte before the end
/// of the file (ENXIO). A filesystem without them (EINVAL, EOPNOTSUPP) answers as Linux's
/// generic fallback does: all data up to the end of the file.
///
/// # Errors
/// Any other I/O error.
#[allow(unsafe_code)]
pub(crate) fn seek(file: &File, from: u64, what: Seek) -> io::Result<Option<u64>> {
    let whence = match what {
        Seek::Data => libc::SEEK_DATA,
        Seek::Hole => libc::SEEK_HOLE,
    };
    // SAFETY: lseek(2) on a file descriptor we own; it moves only that descriptor's offset,
    // which callers do not use (their I/O is positioned).
    let at = unsafe { libc::lseek(file.as_raw_fd(), off(from)?, whence) };
    if at >= 0 {
        return Ok(u64::try_from(at).ok());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        Some(libc::EINVAL | libc::EOPNOTSUPP) => {
            let len = file.metadata()?.len();
            Ok((from < len).then_some(match what {
                Seek::Data => from,
                Seek::Hole => len,
            }))
        }
        _ => Err(e),
    }
}

/// The data runs of `file` inside `start..end` (file offsets, sorted), as `SEEK_DATA` and
/// `SEEK_HOLE` report them: on Linux filesystems, ranges never written, cut by a truncate that
/// grew the file or punched, are left out.
///
/// # Errors
/// I/O errors of `lseek`.
pub(crate) fn data_runs(
    file: &File,
    start: u64,
    end: u64,
) -> io::Result<Vec<std::ops::Range<u64>>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let Some(data) = seek(file, at, Seek::Data)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = seek(file, data, Seek::Hole)?.unwrap_or(end).min(end);
        if hole <= data {
            // A file changing under us: take the rest as data rather than loop.
            out.push(data..end);
            break;
        }
        out.push(data..hole);
        at = hole;
    }
    Ok(out)
}

/// fallocate(2) with `mode` on `file`: reserves (mode 0, `FALLOC_FL_KEEP_SIZE`) or punches.
///
/// # Errors
/// The syscall's error (`EOPNOTSUPP` where the filesystem lacks the mode, `ENOSPC`).
#[allow(unsafe_code)]
pub(crate) fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = (off(offset)?, off(len)?);
    // SAFETY: fallocate(2) on a file descriptor we own; no memory is passed.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) })
}

/// Opens (creating if needed) a local store's redb index at `index`, in the store directory
/// `dir`, refusing with [`Error::IndexLost`] and touching nothing when the index is missing or
/// empty while the store's data files (`data_files`, listed only then) hold data.
///
/// Each store creates its index here at its first open, before any data file exists, and a new
/// index's directory is fsynced so that its name is durable first: no crash leaves data files
/// beside a missing index, only an index lost or replaced outside our control does, and
/// opening then would discard every file the empty index does not list.
///
/// # Errors
/// `IndexLost` (its message ends with `way_out`: what the user can do, and what it costs);
/// `Io` when the index, the data files or the directory cannot be examined or synced;
/// `StoreIndex` when redb cannot open the index (another process holding it included).
pub(crate) fn open_store_index(
    dir: &Path,
    index: &Path,
    data: &Path,
    data_files: impl FnOnce() -> io::Result<Vec<PathBuf>>,
    way_out: &'static str,
) -> Result<redb::Database> {
    let present = match std::fs::metadata(index) {
        Ok(m) => m.len() > 0,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io(index, e)),
    };
    if !present {
        let mut holding = 0;
        for path in data_files().map_err(|e| Error::io(data, e))? {
            match std::fs::metadata(&path) {
                Ok(m) if m.len() > 0 => holding += 1,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        if holding > 0 {
            return Err(Error::IndexLost {
                index: index.to_path_buf(),
                data: data.to_path_buf(),
                files: holding,
                way_out,
            });
        }
    }
    let db = redb::Database::create(index).map_err(|e| Error::store_index(index, e))?;
    if !present {
        fsync_dir(dir)?;
    }
    Ok(db)
}
