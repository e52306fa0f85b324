//! The one error type of defs-core. Each variant says what happened and to what: the shard, the
//! path, the inode, the limit. The FUSE layer maps variants to errno in one place; the CLI prints
//! them with `{:#}`.
//!
//! Variants are grouped by the module that raises them.

use std::io;
use std::path::PathBuf;

use crate::types::{NodeId, ShardId};

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
    /// The identity key file is accessible to group or others.
    #[error(
        "identity key {} is accessible to group or others (mode {mode:03o}); \
         run `chmod 600 {}` if it is really yours, or create a new identity",
        path.display(),
        path.display()
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The identity key file is not a valid DeFS key file.
    #[error("{} is not a usable identity key: {reason}", path.display())]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An identity key file already exists where a new one was to be created.
    #[error("an identity already exists at {}; refusing to overwrite it", path.display())]
    KeyFileExists {
        /// The existing key file.
        path: PathBuf,
    },

    /// A signature does not verify for the given key, message and domain.
    #[error("bad signature (domain {domain})")]
    BadSignature {
        /// The signature domain that was checked.
        domain: &'static str,
    },

    /// Bytes that should be a compressed secp256k1 public key (or secret scalar) are not one.
    #[error("not a valid secp256k1 key")]
    BadPublicKey,

    /// A NodeId does not solve the identity puzzle at the required difficulty.
    #[error(
        "node {node_id} does not solve the identity puzzle: {bits} leading zero bits, {difficulty} required"
    )]
    PuzzleNotSolved {
        /// The node.
        node_id: NodeId,
        /// The required difficulty (leading zero bits).
        difficulty: u8,
        /// The leading zero bits it has.
        bits: u32,
    },

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
    /// The shard is not stored here.
    #[error("shard {id} is not stored here")]
    ShardNotFound {
        /// The shard.
        id: ShardId,
    },

    /// An owner would exceed its quota on this node.
    #[error("owner {owner} would exceed its quota: {used} bytes stored, the quota is {quota}")]
    QuotaExceeded {
        /// The owner.
        owner: NodeId,
        /// Bytes it has stored already.
        used: u64,
        /// Its quota.
        quota: u64,
    },

    /// The store has no room for another shard.
    #[error("the shard store is full: {used} of {capacity} bytes used")]
    StoreFull {
        /// Bytes stored.
        used: u64,
        /// The capacity.
        capacity: u64,
    },

    /// Someone who does not own a shard asked to delete it.
    #[error("{requester} does not own shard {id}")]
    NotOwner {
        /// The shard.
        id: ShardId,
        /// Who asked.
        requester: NodeId,
    },

    /// Bytes offered as a shard do not hash to its id.
    #[error("shard bytes hash to {actual}, not to their id {expected}")]
    HashMismatch {
        /// The id they were offered under.
        expected: ShardId,
        /// BLAKE3 of the bytes.
        actual: ShardId,
    },

    /// The index database of a local store (shard store, cache store) failed.
    #[error("store index {}: {source}", path.display())]
    StoreIndex {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },

    /// A write would eat into the free space kept in reserve on the local disk (ENOSPC).
    #[error(
        "no space for {needed} more bytes in {}: {available} bytes free, {reserve} kept in reserve",
        path.display()
    )]
    NoSpace {
        /// The directory whose filesystem is full.
        path: PathBuf,
        /// Bytes the write needed.
        needed: u64,
        /// Bytes free on the filesystem (or left in the budget).
        available: u64,
        /// Bytes kept free.
        reserve: u64,
    },

    // ---- config ------------------------------------------------------------------------------
    /// A configuration value is out of range or inconsistent.
    #[error("invalid setting {field}: {reason}")]
    InvalidConfig {
        /// The setting, as `section.field`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// Wraps a redb error with the database it happened on.
    pub fn store_index(path: impl Into<PathBuf>, source: impl Into<redb::Error>) -> Self {
        Error::StoreIndex {
            path: path.into(),
            source: Box::new(source.into()),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
