//! The values the core's operations take and return (file handles, owners, setattr choices,
//! directory entries, statfs), its limits, and its configuration and counters.

use std::sync::atomic::AtomicU64;

use defs_core::namespace::{Attr, FileKind, Timestamp};
use defs_core::types::InodeNo;

/// The largest file size DeFS accepts: 2^60 bytes, far beyond any cache disk, small enough that
/// offset arithmetic never overflows.
pub const MAX_FILE_SIZE: u64 = 1 << 60;

/// The read-only virtual extended attribute that tells a file's upload state: `clean`,
/// `dirty`, `uploading`, or `dirty` with the reason it is not uploaded (no network configured,
/// the last failure). Never listed by listxattr, so `rsync -X` and `cp -a` do not copy it.
pub const STATE_XATTR: &[u8] = b"user.defs.state";

/// Directory entries fetched from the DB per readdir request; the kernel's buffer (4 KiB to
/// 128 KiB) holds fewer, the rest are fetched again from the next cookie.
pub const READDIR_BATCH: usize = 256;

/// A file handle the mount handed out: an index into [`Fs`](super::Fs)'s handle table, never reused
/// during a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileHandle(pub u64);

impl std::fmt::Display for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Who is asking: the owner of anything the request creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// A time a setattr sets: a given one, or the clock (UTIME_NOW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    /// Exactly this time.
    At(Timestamp),
    /// The current time.
    Now,
}

/// What a setattr changes; `None` leaves an attribute alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits.
    pub perm: Option<u16>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size (truncate or extend with zeros).
    pub size: Option<u64>,
    /// Access time.
    pub atime: Option<TimeSet>,
    /// Modification time.
    pub mtime: Option<TimeSet>,
    /// Change time.
    pub ctime: Option<Timestamp>,
}

/// A file opened by `open` or `create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The handle.
    pub fh: FileHandle,
    /// Whether the kernel may keep its page cache of the file (FOPEN_KEEP_CACHE): true when the
    /// file is unchanged since the kernel last had it open.
    pub keep_cache: bool,
}

/// One directory entry as `readdir` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's inode.
    pub ino: InodeNo,
    /// Pass this back as the offset to continue after this entry.
    pub cookie: u64,
    /// What it is.
    pub kind: FileKind,
    /// Its name ("." and ".." included).
    pub name: std::ffi::OsString,
    /// Its attributes, for readdirplus.
    pub attr: Option<Attr>,
}

/// Filesystem capacity, as statfs reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks of `frsize` bytes.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Preferred I/O size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size: the unit of `blocks`.
    pub frsize: u32,
}

/// What `fsync` promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncMode {
    /// The file's bytes and metadata are durable on the local disk (cache file + journal).
    #[default]
    Local,
    /// Additionally, the flusher has uploaded the file to the network (`-o sync=network`).
    Network,
}

/// How the core behaves.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Refuse every change (EROFS), as `-o ro`.
    pub read_only: bool,
    /// What fsync promises.
    pub fsync: FsyncMode,
}

/// Operation counters, for `defs status` and the logs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered with an "unsupported" errno.
    pub unsupported: AtomicU64,
}

/// Locks `m`, also when a panic poisoned it.
pub(super) fn lock<T>(m: &defs_core::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain maps behind, never a half-written
    // invariant that matters more than serving the next request.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
