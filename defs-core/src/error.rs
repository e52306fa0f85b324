//! The one error type of defs-core. Each variant says what happened and to what: the shard, the
//! path, the inode, the limit. The FUSE layer maps variants to errno in one place; the CLI prints
//! them with `{:#}`.
//!
//! Variants are grouped by the module that raises them.

use std::io;
use std::path::PathBuf;

use crate::types::ShardId;

/// Shorthand for results in defs-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in defs-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- I/O, shared by every store --------------------------------------------------------
    /// An operating-system I/O error on a named file.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A size field or an input exceeds its limit. Checked both when encoding and when decoding.
    #[error("{what} is too large: {size} bytes, the limit is {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    // ---- identity ----------------------------------------------------------------------------

    // ---- pipeline and manifest ---------------------------------------------------------------
    /// A shard's bytes do not verify (CRC, hash, or authentication tag).
    #[error("shard {id} is corrupt: {reason}")]
    CorruptShard {
        /// The shard.
        id: ShardId,
        /// Which check failed.
        reason: &'static str,
    },
    // ---- metadata DB and namespace -----------------------------------------------------------
    /// A name or inode does not exist (ENOENT).
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for: a name in a directory, an inode.
        what: String,
    },

    /// The name already exists (EEXIST).
    #[error("already exists: {what}")]
    AlreadyExists {
        /// The name and its directory.
        what: String,
    },

    /// A directory to be removed or replaced still has entries (ENOTEMPTY).
    #[error("directory inode {ino} is not empty")]
    NotEmpty {
        /// The directory.
        ino: u64,
    },

    /// A directory was needed but the inode is something else (ENOTDIR).
    #[error("inode {ino} is not a directory")]
    NotADirectory {
        /// The inode.
        ino: u64,
    },

    /// The operation does not apply to a directory (EISDIR).
    #[error("inode {ino} is a directory")]
    IsADirectory {
        /// The inode.
        ino: u64,
    },

    /// A file name is longer than [`crate::namespace::NAME_MAX`] bytes (ENAMETOOLONG).
    #[error("name is {len} bytes long, the limit is {limit}")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },

    /// An argument is invalid for this operation (EINVAL).
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What was wrong.
        what: String,
    },

    /// The operation is not permitted on this kind of inode, e.g. a hard link to a directory
    /// (EPERM).
    #[error("operation not permitted: {what}")]
    NotPermitted {
        /// What was refused.
        what: String,
    },

    /// The extended attribute does not exist (ENODATA).
    #[error("inode {ino} has no extended attribute {name:?}")]
    NoXattr {
        /// The inode.
        ino: u64,
        /// The attribute's name (lossy UTF-8).
        name: String,
    },

    /// An extended attribute's value is larger than [`crate::namespace::XATTR_SIZE_MAX`], or
    /// the inode's attribute list would exceed [`crate::namespace::XATTR_LIST_MAX`] (E2BIG).
    #[error("extended attribute too large: {size} bytes, the limit is {limit}")]
    XattrTooLarge {
        /// The size that was asked for.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// An extended attribute's name is empty or longer than
    /// [`crate::namespace::XATTR_NAME_MAX`] bytes (ERANGE, as Linux answers).
    #[error("extended attribute name is {len} bytes long; it must be 1 to {limit}")]
    XattrNameInvalid {
        /// The name's length.
        len: usize,
        /// The limit.
        limit: usize,
    },

    /// The metadata DB (redb) failed. The DB refuses further commits after an I/O failure;
    /// reopen it to recover (EIO).
    #[error("metadata DB: {context}: {source}")]
    Db {
        /// What the DB was doing.
        context: &'static str,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },

    /// The metadata DB was written by a newer DeFS with a schema this build does not know (EIO).
    #[error(
        "the metadata DB at {} has schema version {found}, this DeFS supports up to {supported}: \
         upgrade DeFS (the DB was not changed)",
        path.display()
    )]
    SchemaTooNew {
        /// The DB's directory or file.
        path: PathBuf,
        /// The version found in the DB.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },

    /// The metadata DB's records are inconsistent or a snapshot is malformed (EIO).
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being read: "inode record", "namespace snapshot", ...
        what: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// A previous durable commit failed; the DB no longer claims durability until reopened
    /// (EIO).
    #[error("metadata DB: an earlier durable commit failed ({reason}); reopen the DB")]
    NotDurable {
        /// The first failure.
        reason: String,
    },

    /// The DB was closed (EIO).
    #[error("metadata DB is closed")]
    Closed,
    // ---- journal, cache store, shard store ---------------------------------------------------
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
