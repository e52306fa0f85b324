//! The errors of the filesystem core and their errno, in one place.
//!
//! [`ToErrno`] maps every error to exactly one errno. `defs_core::Error` variants each get their
//! own arm below; `Io` passes the operating system's errno through (a full cache disk is ENOSPC,
//! not EIO). Each mapping also chooses the log level: refusals the caller asked for (ENOENT on a
//! lookup, EEXIST on O_EXCL) are routine and logged at debug; anything that means lost or
//! unreachable data is logged as a warning or an error.

use std::io;

use defs_core::types::{FileId, InodeNo};

use crate::fs::FileHandle;

/// Everything the filesystem core can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The metadata DB, namespace, journal or cache store refused or failed.
    #[error(transparent)]
    Core(#[from] defs_core::Error),

    /// fsync with `-o sync=network` could not upload the file.
    #[error(transparent)]
    Flush(#[from] crate::flusher::FlushError),

    /// The kernel named a file handle this mount never handed out or already released.
    #[error("inode {ino} has no open file handle {fh}")]
    BadHandle {
        /// The inode the request was for.
        ino: InodeNo,
        /// The unknown handle.
        fh: FileHandle,
    },

    /// A write or another change through a handle that was opened read-only.
    #[error("file handle {fh} of inode {ino} is not open for writing")]
    NotWritable {
        /// The inode.
        ino: InodeNo,
        /// The handle.
        fh: FileHandle,
    },

    /// A change to a filesystem that was mounted with `-o ro`.
    #[error("the filesystem is mounted read-only")]
    ReadOnly,

    /// A write or truncate past the largest file size DeFS represents.
    #[error("offset {end} is past the largest file size {limit}")]
    FileTooLarge {
        /// The end offset that was asked for.
        end: u64,
        /// [`crate::fs::MAX_FILE_SIZE`].
        limit: u64,
    },

    /// An operation DeFS does not implement. Each refusal also increments
    /// [`crate::fs::Counters::unsupported`].
    #[error("{op} is not supported{detail}")]
    Unsupported {
        /// The FUSE operation.
        op: &'static str,
        /// What exactly (e.g. a fallocate mode), with a leading ": ", or empty.
        detail: String,
        /// The errno the operation answers with (EOPNOTSUPP, ENOSYS, ...).
        errno: i32,
    },

    /// An argument the kernel passed makes no sense for the operation.
    #[error("invalid argument: {what}")]
    Invalid {
        /// What was wrong.
        what: &'static str,
    },

    /// `lseek(SEEK_DATA | SEEK_HOLE)` from an offset at or past the end of the file, or
    /// `SEEK_DATA` with only holes after it.
    #[error("no {what} at or after offset {offset} of inode {ino}")]
    NoSuchOffset {
        /// The inode.
        ino: InodeNo,
        /// The offset asked from.
        offset: i64,
        /// "data" or "hole".
        what: &'static str,
    },

    /// Bytes of a file are in the local cache but nowhere else: the file was never stored, or
    /// the mount has no network.
    #[error(
        "bytes {offset}..{end} of inode {ino} are not in the local cache and not stored on a network"
    )]
    NotCached {
        /// The inode.
        ino: InodeNo,
        /// Start of the missing range.
        offset: u64,
        /// End of the missing range.
        end: u64,
    },

    /// Stored bytes of a file could not be read back from the network (no holder answered,
    /// too few shards to rebuild a segment, a manifest that does not open), or could not be
    /// cached for a change.
    #[error("bytes {offset}..{end} of inode {ino} (object {file}) could not be read: {reason}")]
    Fetch {
        /// The inode.
        ino: InodeNo,
        /// The stored object.
        file: FileId,
        /// Start of the range.
        offset: u64,
        /// End of the range.
        end: u64,
        /// Why, with the object layer's error.
        reason: String,
    },

    /// A local I/O error outside defs-core (e.g. statfs of the cache directory).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// How loudly an error should be logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// A refusal the caller asked for; routine (ENOENT, EEXIST, ENOTEMPTY, …).
    Debug,
    /// Something the user should know about but nothing is lost (unsupported op, ENOSPC).
    Warn,
    /// Data may be unreachable or a store is broken (EIO).
    Error,
}

/// Maps an error to the errno the kernel gets, and says how loudly to log it.
pub trait ToErrno {
    /// The errno (a positive `libc::E*` value).
    fn to_errno(&self) -> i32;
    /// The log level for this error.
    fn level(&self) -> Level;
}

impl ToErrno for Error {
    fn to_errno(&self) -> i32 {
        match self {
            Error::Core(e) => e.to_errno(),
            Error::Flush(crate::flusher::FlushError::QuotaExceeded { .. }) => libc::EDQUOT,
            Error::Flush(_) => libc::EIO,
            Error::BadHandle { .. } => libc::EBADF,
            Error::NotWritable { .. } => libc::EBADF,
            Error::ReadOnly => libc::EROFS,
            Error::FileTooLarge { .. } => libc::EFBIG,
            Error::Unsupported { errno, .. } => *errno,
            Error::Invalid { .. } => libc::EINVAL,
            Error::NoSuchOffset { .. } => libc::ENXIO,
            Error::NotCached { .. } => libc::EIO,
            Error::Fetch { .. } => libc::EIO,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    fn level(&self) -> Level {
        match self {
            Error::Core(e) => e.level(),
            Error::Flush(crate::flusher::FlushError::QuotaExceeded { .. }) => Level::Warn,
            Error::Flush(_) => Level::Error,
            Error::BadHandle { .. } | Error::NotWritable { .. } => Level::Warn,
            Error::ReadOnly
            | Error::FileTooLarge { .. }
            | Error::Invalid { .. }
            | Error::NoSuchOffset { .. } => Level::Debug,
            Error::Unsupported { .. } => Level::Warn,
            Error::NotCached { .. } | Error::Fetch { .. } | Error::Io { .. } => Level::Error,
        }
    }
}

impl ToErrno for defs_core::Error {
    fn to_errno(&self) -> i32 {
        use defs_core::Error as E;
        match self {
            E::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            E::TooLarge { .. } => libc::EFBIG,
            // identity: the mount cannot use its key.
            E::KeyFilePermissions { .. } => libc::EACCES,
            E::BadKeyFile { .. } => libc::EIO,
            E::KeyFileExists { .. } => libc::EEXIST,
            E::BadSignature { .. } => libc::EIO,
            E::BadPublicKey => libc::EIO,
            E::PuzzleNotSolved { .. } => libc::EIO,
            // key shares: only `defs key combine` reads them, never the mount.
            E::BadKeyShare { .. }
            | E::TooFewKeyShares { .. }
            | E::MixedKeyShares { .. }
            | E::DuplicateKeyShare { .. }
            | E::KeyShareMismatch { .. } => libc::EINVAL,
            // pipeline and manifest: stored data that cannot be read back.
            E::CorruptShard { .. } => libc::EIO,
            E::WrongKey { .. } => libc::EIO,
            E::UnknownManifestVersion { .. } => libc::EIO,
            E::MalformedManifest { .. } => libc::EIO,
            E::BadContentRange { .. } => libc::EIO,
            E::TooFewShards { .. } => libc::EIO,
            E::InvalidLayout { .. } => libc::EINVAL,
            E::Random { .. } => libc::EIO,
            E::Stream { .. } => libc::EIO,
            // namespace: each refusal its POSIX errno.
            E::NotFound { .. } => libc::ENOENT,
            E::AlreadyExists { .. } => libc::EEXIST,
            E::NotEmpty { .. } => libc::ENOTEMPTY,
            E::NotADirectory { .. } => libc::ENOTDIR,
            E::IsADirectory { .. } => libc::EISDIR,
            E::NameTooLong { .. } => libc::ENAMETOOLONG,
            E::InvalidArgument { .. } => libc::EINVAL,
            E::NotPermitted { .. } => libc::EPERM,
            E::NoXattr { .. } => libc::ENODATA,
            E::XattrTooLarge { .. } => libc::E2BIG,
            E::XattrNameInvalid { .. } => libc::ERANGE,
            E::Db { .. } => libc::EIO,
            E::SchemaTooNew { .. } => libc::EIO,
            E::Corrupt { .. } => libc::EIO,
            E::NotDurable { .. } => libc::EIO,
            E::Closed => libc::EIO,
            // stores: the cache disk full is ENOSPC, a quota EDQUOT.
            E::ShardNotFound { .. } => libc::EIO,
            E::QuotaExceeded { .. } | E::QuotaRefused { .. } => libc::EDQUOT,
            E::StoreFull { .. } => libc::ENOSPC,
            E::NotOwner { .. } => libc::EPERM,
            E::HashMismatch { .. } => libc::EIO,
            E::StoreIndex { .. } => libc::EIO,
            E::IndexLost { .. } => libc::EIO,
            E::NoSpace { .. } => libc::ENOSPC,
            E::InvalidConfig { .. } => libc::EINVAL,
            // defs_core::Error is #[non_exhaustive]: a variant added to defs-core without a row
            // here answers EIO (and is logged as an error) until it gets its own row.
            _ => libc::EIO,
        }
    }

    fn level(&self) -> Level {
        match self.to_errno() {
            libc::EIO => Level::Error,
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => Level::Warn,
            _ => Level::Debug,
        }
    }
}

/// Shorthand for the core's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
