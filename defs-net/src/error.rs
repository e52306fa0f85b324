//! The one error type of defs-net. Every variant names what it happened to: the peer, the shard,
//! the file. Remote refusals keep the remote's [`RemoteError`] code so callers can tell a full
//! quota (move on to another peer) from a forged signature (a bug or an attack).

use std::io;

use defs_core::types::{FileId, ShardId};
use libp2p::PeerId;

use crate::protocol::refusal::ErrorCode;
pub use crate::protocol::refusal::RemoteError;

/// Shorthand for results in defs-net.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in defs-net.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node's task has stopped; the handle can no longer reach it.
    #[error("the node has stopped")]
    Closed,

    /// An error from defs-core (identity, pipeline, manifest, shard store).
    #[error(transparent)]
    Core(#[from] defs_core::Error),

    /// An operating-system I/O error on a named file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file, socket or directory.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A Kademlia DHT operation failed (the local record store, or a put no peer took).
    #[error("dht: {0}")]
    Dht(String),

    /// Setting up the libp2p transport, listener or a behaviour failed.
    #[error("network setup: {0}")]
    Setup(String),

    /// A multiaddr could not be parsed or dialed.
    #[error("bad address {addr}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },

    /// A request to a peer failed on the way (dial, timeout, connection closed, stream error).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: Box<PeerId>,
        /// Why.
        reason: String,
    },

    /// A peer refused a request.
    #[error("{peer} refused: {error}")]
    Remote {
        /// The peer.
        peer: Box<PeerId>,
        /// Its refusal.
        error: RemoteError,
    },

    /// A peer answered with a message that does not fit the request (a protocol violation).
    #[error("{peer} answered {what} with an unexpected response")]
    UnexpectedResponse {
        /// The peer.
        peer: Box<PeerId>,
        /// Which request.
        what: &'static str,
    },

    /// A peer returned bytes that do not verify against the shard id (garbage, truncated, or
    /// another shard).
    #[error("{peer} returned bad data for shard {shard}: {reason}")]
    BadShard {
        /// The peer.
        peer: Box<PeerId>,
        /// The shard asked for.
        shard: ShardId,
        /// Which check failed.
        reason: &'static str,
    },

    /// A wire message broke the format or a limit.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The message kind.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// A value exceeds its limit; checked when encoding and when decoding, before allocating.
    #[error("{what} is too large: {size} bytes, the limit is {limit}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// No storage peer is known, so nothing can be placed.
    #[error("no storage peers are reachable")]
    NoPeers,

    /// A shard could not be stored on any peer.
    #[error("could not store shard {shard} on any peer ({attempts} attempts; last error: {last})")]
    StoreFailed {
        /// The shard.
        shard: ShardId,
        /// How many peers were tried.
        attempts: u32,
        /// Every peer tried that answered refused because the owner's quota (or the node) is
        /// full (at least one did; the others could not be reached).
        quota: bool,
        /// The last error.
        last: String,
    },

    /// Not enough shards of a segment could be fetched and verified to rebuild it.
    #[error(
        "file {file}: not enough shards for segment {segment}: need {need}, found {have} valid"
    )]
    NotEnoughShards {
        /// The file.
        file: FileId,
        /// The segment.
        segment: u64,
        /// Shards needed.
        need: usize,
        /// Valid shards found.
        have: usize,
    },

    /// A file's manifest could not be found on any peer.
    #[error("file {file}: manifest not found on any reachable peer")]
    ManifestNotFound {
        /// The file.
        file: FileId,
    },

    /// An operation did not finish in time.
    #[error("{what} timed out after {secs} s")]
    Timeout {
        /// What.
        what: &'static str,
        /// The timeout in seconds.
        secs: u64,
    },

    /// The output file of a get could not be written (its directory is missing, it already
    /// exists, no permission, ...).
    #[error("cannot write {}: {reason}", path.display())]
    Output {
        /// The output file.
        path: std::path::PathBuf,
        /// Why, in terms of that file and its directory.
        reason: String,
    },

    /// The running node (through the local control socket) failed the request: its message.
    #[error("{0}")]
    Control(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl AsRef<std::path::Path>, source: io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// An [`Error::Output`] for the output file `path`.
    pub fn output(path: impl AsRef<std::path::Path>, reason: impl Into<String>) -> Self {
        Error::Output {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }

    /// The remote's refusal code, when this is a refusal.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Remote { error, .. } => Some(error.code),
            _ => None,
        }
    }
}
