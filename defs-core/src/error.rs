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

    /// A key does not open what it should: a manifest sealed for another owner, or a file key
    /// that is not this manifest's. (Authenticated encryption cannot tell a wrong key from
    /// damaged bytes; a sealed manifest is fetched by its id, so damage is caught before this.)
    #[error("wrong {what}: the manifest does not open with it (or its bytes are damaged)")]
    WrongKey {
        /// Which key: "wrap key" or "file key".
        what: &'static str,
    },

    /// A manifest in a format version this build does not know.
    #[error("unknown manifest format version {found}; this build reads version {supported}")]
    UnknownManifestVersion {
        /// The version in the bytes.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },

    /// Manifest bytes that do not parse or do not hold together.
    #[error("malformed manifest: {what}")]
    MalformedManifest {
        /// What is wrong.
        what: &'static str,
    },

    /// Fewer good shards of a segment than Reed-Solomon needs to rebuild it.
    #[error("segment {segment}: too few good shards to rebuild it: need {need}, have {have}")]
    TooFewShards {
        /// The segment.
        segment: u64,
        /// Shards needed (k, or 1 for replicated segments).
        need: u16,
        /// Good shards found (present, CRC and authentication tag verified).
        have: u16,
    },

    /// A layout setting (or a manifest's geometry) outside what the pipeline supports.
    #[error("invalid layout: {reason}")]
    InvalidLayout {
        /// What is out of range, with the range.
        reason: String,
    },

    /// This binary was built with the `simd` feature (AVX2 Reed-Solomon kernels) and this CPU
    /// lacks AVX2; running the kernels would die on SIGILL.
    #[error(
        "this CPU has no AVX2, which this build's Reed-Solomon code needs; \
         rebuild defs without the `simd` feature (--no-default-features)"
    )]
    CpuWithoutAvx2,

    /// The operating system's random number generator failed.
    #[error("no randomness from the operating system: {reason}")]
    Random {
        /// The OS error, as text.
        reason: String,
    },

    /// Reading the input or writing the output stream of the pipeline failed.
    #[error("I/O error while {what}: {source}")]
    Stream {
        /// What the pipeline was doing: "reading the file", "writing decoded bytes".
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    // ---- metadata DB and namespace -----------------------------------------------------------

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
