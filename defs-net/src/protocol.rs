//! The shard protocol's wire messages: what a client asks a storage node (store, fetch, has,
//! delete, info, the asker's own use and quota there, and put or get an owner's root record) and what holders send back to a
//! broadcast lookup, plus the lookup ask itself.
//!
//! Every message is a frame: `u32 LE body length` then the body, `u8 version (1)`, `u8 tag`,
//! then fixed-width little-endian fields. Every length is checked against a stated limit when
//! encoding and when decoding, before anything is allocated (see `docs/format.md`).
//! [`codec::ShardCodec`] moves frames over libp2p streams; the `encoding` module holds the tags
//! and the byte writers and readers of every message.

pub mod codec;
pub(crate) mod refusal;

use bytes::Bytes;
use defs_core::types::{NodeId, ShardId};
use libp2p::Multiaddr;

use crate::error::{Error, Result};
pub use refusal::{ErrorCode, RemoteError};

/// The protocol name negotiated on shard streams.
pub const SHARD_PROTOCOL: &str = "/defs/shard/1";

/// Wire format version carried in every frame.
pub const WIRE_VERSION: u8 = 1;

/// Largest shard (or manifest object) a node accepts, in bytes. 32 MiB: ten times the largest
/// shard the default layouts produce, small enough that a node can hold a few in memory.
pub const MAX_SHARD_LEN: u32 = 32 << 20;

/// Largest frame body besides the shard bytes themselves (ids, keys, signatures), in bytes.
pub const MAX_HEADER_LEN: u32 = 64 << 10;

/// Largest frame on the shard protocol, in bytes: a shard plus its header.
pub const MAX_FRAME_LEN: u32 = MAX_SHARD_LEN + MAX_HEADER_LEN;

/// Most shard ids in one `Has`, `Holders` or lookup ask: 512 × 32 B = 16 KiB, enough for the
/// shards of several segments, small enough to answer in one store query.
pub const MAX_IDS: usize = 512;

/// Longest error message on the wire, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 512;

/// Longest zone label, in bytes.
pub const MAX_ZONE_LEN: usize = 64;

/// Most addresses a lookup ask carries for the holders to answer to.
pub const MAX_ASK_ADDRS: usize = 8;

/// Longest multiaddr in a lookup ask, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

/// Largest lookup ask (a gossipsub message), in bytes.
pub const MAX_ASK_LEN: usize = 16 + 4 + MAX_IDS * 32 + 4 + MAX_ASK_ADDRS * (2 + MAX_ADDR_LEN);

/// Largest root record carried by `PutRoot` and `Root` (defs-core's limit, 16 KiB).
pub const MAX_ROOT_LEN: usize = defs_core::root_record::MAX_RECORD_LEN;

/// Largest share record carried by `PutShare` and `Shares` (defs-core's limit, 4 KiB).
pub const MAX_SHARE_LEN: usize = defs_core::share::record::MAX_RECORD_LEN;

/// Most share records one `Shares` answer carries: 64 (a recipient with more is shown the
/// first 64 in the node's key order; each node answers with the same ones).
pub const MAX_SHARES: usize = 64;

/// Length of a compressed secp256k1 public key.
pub const PUBLIC_KEY_LEN: usize = 33;

/// Proof that the owner of a shard asked for a store or delete: the owner's public key, a
/// timestamp and a random nonce (against replays), and a signature over
/// [`auth_message`] in the `StoreShard` or `DeleteShard` domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The owner's compressed secp256k1 public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Milliseconds since the Unix epoch when the request was signed.
    pub timestamp_ms: u64,
    /// Random, never reused by an honest owner.
    pub nonce: [u8; 16],
    /// The signature.
    pub signature: [u8; 64],
}

/// The bytes an owner signs for a store or delete of `id` (the domain is added by the signer):
/// `"defs shard auth v1" ‖ id ‖ len u32 ‖ owner NodeId ‖ timestamp u64 ‖ nonce`.
/// `len` is the shard length for a store and 0 for a delete.
pub fn auth_message(
    id: &ShardId,
    len: u32,
    owner: &NodeId,
    timestamp_ms: u64,
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(18 + 32 + 4 + 32 + 8 + 16);
    m.extend_from_slice(b"defs shard auth v1");
    m.extend_from_slice(&id.0);
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&owner.0);
    m.extend_from_slice(&timestamp_ms.to_le_bytes());
    m.extend_from_slice(nonce);
    m
}

/// What a client asks a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store a shard for its owner. Acknowledged only once it is on disk.
    Store {
        /// BLAKE3 of `data`.
        id: ShardId,
        /// The owner's signed request.
        auth: Auth,
        /// CRC32 of `data`, checked before anything else.
        crc: u32,
        /// The shard's bytes (at most [`MAX_SHARD_LEN`]). Shared, so that retrying a store on
        /// another peer and decoding it from a frame copy nothing.
        data: Bytes,
    },
    /// Fetch a whole shard, or `len` bytes from `offset`.
    Fetch {
        /// The shard.
        id: ShardId,
        /// `Some((offset, len))` for a byte range.
        range: Option<(u64, u32)>,
    },
    /// Which of these shards does the node hold?
    Has {
        /// At most [`MAX_IDS`].
        ids: Vec<ShardId>,
    },
    /// Delete a shard; only its owner may.
    Delete {
        /// The shard.
        id: ShardId,
        /// The owner's signed request.
        auth: Auth,
    },
    /// A direct answer to a broadcast lookup: "of your ask `ask`, I hold these".
    Holders {
        /// The ask's id.
        ask: u64,
        /// The shards held, at most [`MAX_IDS`].
        ids: Vec<ShardId>,
    },
    /// Capacity and zone of the node, for placement.
    Info,
    /// What the asking owner stores on the node and its quota there ([`OwnerUsage`]). The
    /// owner is the requesting peer: its peer id is its node key, authenticated by the
    /// connection's handshake (noise or TLS), so nobody learns another owner's figures and the
    /// request needs no signature or nonce of its own.
    OwnerUsage,
    /// Keep this root record as its owner's newest (the record is self-certifying: the node
    /// verifies it and applies the no-rollback rule; anyone may relay it).
    PutRoot {
        /// The record's bytes, at most [`MAX_ROOT_LEN`].
        record: Vec<u8>,
    },
    /// The root record held for an owner.
    GetRoot {
        /// The owner's NodeId.
        owner: NodeId,
    },
    /// Keep this share record (self-certifying: the node verifies it and applies
    /// `defs_core::share::record::admit`; anyone may relay it).
    PutShare {
        /// The record's bytes, at most [`MAX_SHARE_LEN`].
        record: Vec<u8>,
    },
    /// The share records held for a recipient, newest of each share.
    ListShares {
        /// The recipient's NodeId.
        recipient: NodeId,
    },
    /// Prove that chunk `chunk` of shard `id` is held ([`crate::audit`]).
    Audit {
        /// The shard.
        id: ShardId,
        /// The chunk index (1 KiB chunks).
        chunk: u32,
    },
    /// "Be my pair partner": the receiver keeps a mirror of the sender's shard store
    /// ([`crate::pairing`]).
    Pair,
    /// A paired node's heartbeat to its partner, with what it holds as primary copies.
    Heartbeat {
        /// Bytes of the sender's own (primary) shards.
        primary_bytes: u64,
    },
    /// A mirror copy of one of the sender's shards, for its partner. Accepted only from a node
    /// paired with the receiver; checked against its id (BLAKE3) before it is stored.
    Mirror {
        /// BLAKE3 of `data`.
        id: ShardId,
        /// The shard's owners on the sender (1 to [`MAX_MIRROR_OWNERS`]), so that they keep
        /// their rights over the copy.
        owners: Vec<NodeId>,
        /// CRC32 of `data`.
        crc: u32,
        /// The shard's bytes (at most [`MAX_SHARD_LEN`]).
        data: Bytes,
    },
    /// A frame the codec read but could not decode: an unsupported version (an older or newer
    /// peer), an unknown tag, a bad field, or a body cut short by the end of the stream. Made
    /// by [`codec::ShardCodec`], never sent; the node answers it with
    /// [`ErrorCode::BadRequest`] and `reason`, so the peer learns why.
    Malformed {
        /// What was wrong, for the refusal's message.
        reason: String,
    },
}

/// Most owners a [`Request::Mirror`] names (a shard nearly always has one).
pub const MAX_MIRROR_OWNERS: usize = 16;

/// Capacity and zone of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// Whether the node stores shards for others.
    pub storage: bool,
    /// Bytes it offers.
    pub capacity: u64,
    /// Bytes in use.
    pub used: u64,
    /// Shards held.
    pub shards: u64,
    /// Optional zone label (rack, site), at most [`MAX_ZONE_LEN`] bytes.
    pub zone: String,
}

/// What a node stores for the owner that asked ([`Request::OwnerUsage`]), its quota there, and
/// the node's own space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnerUsage {
    /// Bytes charged to the owner on this node: each of its shards in full (a shard shared
    /// with other owners too), mirror copies a paired node keeps for it included.
    pub used: u64,
    /// The node's per-owner quota (`[node] owner_quota_bytes`); 0 = no limit beyond the
    /// node's capacity.
    pub quota: u64,
    /// The node's capacity, bytes.
    pub capacity: u64,
    /// Bytes of distinct shards the node holds for everybody.
    pub node_used: u64,
}

impl OwnerUsage {
    /// Bytes the owner may still store on this node: the node's free space, capped by what is
    /// left of the owner's quota when it has one.
    pub fn room(&self) -> u64 {
        let free = self.capacity.saturating_sub(self.node_used);
        if self.quota == 0 {
            free
        } else {
            free.min(self.quota.saturating_sub(self.used))
        }
    }
}

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The shard is on disk.
    Stored,
    /// The shard's bytes (or the asked range).
    Data(Vec<u8>),
    /// For each asked id, its length if held.
    Has(Vec<Option<u32>>),
    /// The shard is gone.
    Deleted,
    /// Received.
    Ack,
    /// Capacity and zone.
    Info(NodeInfo),
    /// The asking owner's use and quota on the node.
    OwnerUsage(OwnerUsage),
    /// The root record held for the owner asked about (unverified: the asker verifies).
    Root(Vec<u8>),
    /// The share records held for the recipient asked about (unverified: the asker verifies),
    /// at most [`MAX_SHARES`].
    Shares(Vec<Vec<u8>>),
    /// A refusal.
    Error(RemoteError),
    /// The proof an [`Request::Audit`] asked for.
    Proof(crate::audit::Proof),
    /// A partner's answer to a [`Request::Heartbeat`]: what it mirrors for the sender.
    Beat {
        /// Bytes it holds as the sender's mirror.
        mirrored_bytes: u64,
    },
}

impl Response {
    /// A refusal with a message (truncated to [`MAX_ERROR_MESSAGE`] on a char boundary).
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut cut = MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Response::Error(RemoteError { code, message })
    }
}

/// A broadcast lookup: "who holds these shard ids?". The asker is the gossipsub message's
/// signed source; holders answer it directly with [`Request::Holders`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Random id the answers quote.
    pub ask: u64,
    /// At most [`MAX_IDS`].
    pub ids: Vec<ShardId>,
    /// Where the asker listens, so holders that are not connected can dial it.
    pub addrs: Vec<Multiaddr>,
}

/// A message split for writing: a small header, then a large payload written without copying.
#[derive(Debug)]
pub struct Encoded<'a> {
    /// Version, tag and fixed fields.
    pub header: Vec<u8>,
    /// Shard bytes, if any.
    pub payload: &'a [u8],
}

mod encoding;

#[cfg(test)]
mod tests;
