//! The operations the random-op driver ([`super`]) applies to a mount and to the model
//! ([`super::model`]), and how each prints in a failure report.

use std::fmt;

use crate::mount::pseudo_random;

/// Deterministic pseudo-random bytes of an operation (`seed`, `len`).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    pseudo_random(seed, len)
}

/// `XATTR_CREATE`, `XATTR_REPLACE` or neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrFlag {
    /// Create or replace.
    Either,
    /// `XATTR_CREATE`: EEXIST when it exists.
    Create,
    /// `XATTR_REPLACE`: ENODATA when it does not.
    Replace,
}

/// One operation, with paths relative to the mount ("" is its root).
#[allow(missing_docs)] // each variant's doc says what its fields are
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `open(O_CREAT | O_EXCL | O_WRONLY, mode)` and close.
    Create { path: String, mode: u32 },
    /// `open(O_WRONLY)`, `pwrite` of `len` bytes made from `seed` at `offset`, close.
    Write {
        path: String,
        offset: u64,
        len: u32,
        seed: u64,
    },
    /// `truncate(2)` (grows with zeros or shrinks).
    Truncate { path: String, len: u64 },
    /// Reads the whole file.
    Read { path: String },
    /// `rename(2)`.
    Rename { from: String, to: String },
    /// `link(2)` (does not follow a symlink `from`).
    Link { from: String, to: String },
    /// `unlink(2)`.
    Unlink { path: String },
    /// `mkdir(2)`.
    Mkdir { path: String, mode: u32 },
    /// `rmdir(2)`.
    Rmdir { path: String },
    /// `symlink(2)`.
    Symlink { target: String, path: String },
    /// `setxattr(2)` of a value of `len` bytes made from `seed`.
    SetXattr {
        path: String,
        name: String,
        seed: u64,
        len: u16,
        flag: XattrFlag,
    },
    /// `removexattr(2)`.
    RemoveXattr { path: String, name: String },
    /// `chmod(2)`.
    Chmod { path: String, mode: u32 },
    /// `utimensat(2)` setting atime and mtime to the same time.
    Utimens { path: String, sec: i64, nsec: i64 },
    /// `open(O_RDONLY)` and `fsync(2)`.
    Fsync { path: String },
    /// `lstat(2)` (its fields are compared).
    Stat { path: String },
    /// `readdir` of a directory (its names are compared).
    Readdir { path: String },
    /// `open(O_RDWR)` kept in descriptor slot `slot` (one already there is closed first).
    Open { path: String, slot: u8 },
    /// `pwrite` through the descriptor in `slot` (it may be unlinked or renamed meanwhile).
    WriteFd {
        slot: u8,
        offset: u64,
        len: u32,
        seed: u64,
    },
    /// Reads the whole file through the descriptor in `slot`.
    ReadFd { slot: u8 },
    /// `ftruncate` of the descriptor in `slot`.
    TruncateFd { slot: u8, len: u64 },
    /// Closes the descriptor in `slot`.
    Close { slot: u8 },
    /// Waits a little longer than the flusher's debounce, so uploads run (and the next
    /// operations meet files being or just uploaded).
    Settle,
    /// Closes every held descriptor, unmounts (`fusermount3 -u`, waiting for the daemon to
    /// exit) and mounts the data dir again.
    Remount,
    /// `defs sync` (which must succeed), unmount, delete `DIR/cache`, mount again: every byte
    /// then comes from the storage nodes.
    WipeCache,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { path, mode } => write!(f, "create /{path} {mode:o}"),
            Op::Write {
                path,
                offset,
                len,
                seed,
            } => write!(f, "write /{path} at {offset} len {len} (seed {seed})"),
            Op::Truncate { path, len } => write!(f, "truncate /{path} {len}"),
            Op::Read { path } => write!(f, "read /{path}"),
            Op::Rename { from, to } => write!(f, "rename /{from} /{to}"),
            Op::Link { from, to } => write!(f, "link /{from} /{to}"),
            Op::Unlink { path } => write!(f, "unlink /{path}"),
            Op::Mkdir { path, mode } => write!(f, "mkdir /{path} {mode:o}"),
            Op::Rmdir { path } => write!(f, "rmdir /{path}"),
            Op::Symlink { target, path } => write!(f, "symlink {target} /{path}"),
            Op::SetXattr {
                path,
                name,
                seed,
                len,
                flag,
            } => write!(
                f,
                "setxattr /{path} {name} len {len} (seed {seed}) {flag:?}"
            ),
            Op::RemoveXattr { path, name } => write!(f, "removexattr /{path} {name}"),
            Op::Chmod { path, mode } => write!(f, "chmod /{path} {mode:o}"),
            Op::Utimens { path, sec, nsec } => write!(f, "utimens /{path} {sec}.{nsec:09}"),
            Op::Fsync { path } => write!(f, "fsync /{path}"),
            Op::Stat { path } => write!(f, "lstat /{path}"),
            Op::Readdir { path } => write!(f, "readdir /{path}"),
            Op::Open { path, slot } => write!(f, "open /{path} as fd{slot}"),
            Op::WriteFd {
                slot,
                offset,
                len,
                seed,
            } => write!(f, "write fd{slot} at {offset} len {len} (seed {seed})"),
            Op::ReadFd { slot } => write!(f, "read fd{slot}"),
            Op::TruncateFd { slot, len } => write!(f, "ftruncate fd{slot} {len}"),
            Op::Close { slot } => write!(f, "close fd{slot}"),
            Op::Settle => write!(f, "settle (wait for uploads)"),
            Op::Remount => write!(f, "remount"),
            Op::WipeCache => write!(f, "sync + unmount + rm -r DIR/cache + mount"),
        }
    }
}

impl Op {
    /// The paths whose `lstat` (and their parents') this operation may change.
    pub(super) fn paths(&self) -> Vec<&str> {
        match self {
            Op::Rename { from, to } | Op::Link { from, to } => vec![from, to],
            Op::Create { path, .. }
            | Op::Write { path, .. }
            | Op::Truncate { path, .. }
            | Op::Read { path }
            | Op::Unlink { path }
            | Op::Mkdir { path, .. }
            | Op::Rmdir { path }
            | Op::Symlink { path, .. }
            | Op::SetXattr { path, .. }
            | Op::RemoveXattr { path, .. }
            | Op::Chmod { path, .. }
            | Op::Utimens { path, .. }
            | Op::Fsync { path }
            | Op::Stat { path }
            | Op::Readdir { path }
            | Op::Open { path, .. } => vec![path],
            Op::WriteFd { .. }
            | Op::ReadFd { .. }
            | Op::TruncateFd { .. }
            | Op::Close { .. }
            | Op::Settle
            | Op::Remount
            | Op::WipeCache => Vec::new(),
        }
    }
}
