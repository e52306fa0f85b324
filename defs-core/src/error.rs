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

    // ---- journal, cache store, shard store ---------------------------------------------------

    // ---- remote (the ShardClient trait; raised by its implementations) ------------------------
    /// A remote shard operation failed: the network could not store, fetch, find or delete.
    #[error("{op} of shard {shard} failed: {reason}")]
    Remote {
        /// The operation: "store", "fetch", "lookup", "delete".
        op: &'static str,
        /// The shard.
        shard: ShardId,
        /// Why, with the peers tried.
        reason: String,
    },
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
