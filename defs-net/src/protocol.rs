//! The shard protocol's wire messages: what a client asks a storage node (store, fetch, has,
//! delete, info, the asker's own use and quota there, and put or get an owner's root record) and what holders send back to a
//! broadcast lookup, plus the lookup ask itself.
//!
//! Every message is a frame: `u32 LE body length` then the body, `u8 version (1)`, `u8 tag`,
//! then fixed-width little-endian fields. Every length is checked against a stated limit when
//! encoding and when decoding, before anything is allocated (see `docs/format.md`).
//! [`codec::ShardCodec`] moves frames over libp2p streams.

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

// ---- encoding -------------------------------------------------------------------------------

const TAG_STORE: u8 = 1;
const TAG_FETCH: u8 = 2;
const TAG_HAS: u8 = 3;
const TAG_DELETE: u8 = 4;
const TAG_HOLDERS: u8 = 5;
const TAG_INFO: u8 = 6;
const TAG_PUT_ROOT: u8 = 7;
const TAG_GET_ROOT: u8 = 8;
/// Share records: one tag, the operation in the next byte ([`SHARE_PUT`], [`SHARE_LIST`]).
const TAG_SHARE: u8 = 9;
const SHARE_PUT: u8 = 1;
const SHARE_LIST: u8 = 2;
const TAG_OWNER_USAGE: u8 = 10;
// Pairing and audits: well clear of the root-record frames (7, 8).
const TAG_AUDIT: u8 = 20;
const TAG_PAIR: u8 = 21;
const TAG_HEARTBEAT: u8 = 22;
const TAG_MIRROR: u8 = 23;

const TAG_STORED: u8 = 101;
const TAG_DATA: u8 = 102;
const TAG_HAS_REPLY: u8 = 103;
const TAG_DELETED: u8 = 104;
const TAG_ACK: u8 = 105;
const TAG_INFO_REPLY: u8 = 106;
const TAG_ERROR: u8 = 107;
const TAG_ROOT: u8 = 108;
const TAG_SHARES: u8 = 109;
const TAG_OWNER_USAGE_REPLY: u8 = 110;
const TAG_PROOF: u8 = 120;
const TAG_BEAT: u8 = 122;

fn put_record(h: &mut Vec<u8>, record: &[u8]) -> Result<()> {
    put_record_of(h, "root record", record, MAX_ROOT_LEN)
}

fn put_record_of(h: &mut Vec<u8>, what: &'static str, record: &[u8], limit: usize) -> Result<()> {
    let n = len_u32(what, record.len(), limit as u64)?;
    h.extend_from_slice(&n.to_le_bytes());
    h.extend_from_slice(record);
    Ok(())
}

/// `n` if it is at most `limit`, else [`Error::TooLarge`] (a count read from a frame, checked
/// before anything is allocated for it).
fn at_most(what: &'static str, n: usize, limit: usize) -> Result<usize> {
    if n > limit {
        return Err(Error::TooLarge {
            what,
            size: n as u64,
            limit: limit as u64,
        });
    }
    Ok(n)
}

fn len_u32(what: &'static str, len: usize, limit: u64) -> Result<u32> {
    let len64 = u64::try_from(len).unwrap_or(u64::MAX);
    if len64 > limit {
        return Err(Error::TooLarge {
            what,
            size: len64,
            limit,
        });
    }
    u32::try_from(len).map_err(|_| Error::TooLarge {
        what,
        size: len64,
        limit,
    })
}

fn put_auth(out: &mut Vec<u8>, auth: &Auth) {
    out.extend_from_slice(&auth.public_key);
    out.extend_from_slice(&auth.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&auth.nonce);
    out.extend_from_slice(&auth.signature);
}

fn put_ids(out: &mut Vec<u8>, ids: &[ShardId]) -> Result<()> {
    let n = len_u32("shard id list", ids.len(), MAX_IDS as u64)?;
    out.extend_from_slice(&n.to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    Ok(())
}

/// A message split for writing: a small header, then a large payload written without copying.
#[derive(Debug)]
pub struct Encoded<'a> {
    /// Version, tag and fixed fields.
    pub header: Vec<u8>,
    /// Shard bytes, if any.
    pub payload: &'a [u8],
}

impl Encoded<'_> {
    /// The body length (header + payload), checked against [`MAX_FRAME_LEN`].
    pub fn body_len(&self) -> Result<u32> {
        len_u32(
            "frame",
            self.header.len() + self.payload.len(),
            u64::from(MAX_FRAME_LEN),
        )
    }

    /// The whole frame in one buffer (length prefix included). For tests and small messages.
    pub fn to_frame(&self) -> Result<Vec<u8>> {
        let len = self.body_len()?;
        let mut v = Vec::with_capacity(4 + self.header.len() + self.payload.len());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&self.header);
        v.extend_from_slice(self.payload);
        Ok(v)
    }
}

impl Request {
    /// Encodes the body, checking every limit.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when a field exceeds its limit.
    pub fn encode(&self) -> Result<Encoded<'_>> {
        let mut h = vec![WIRE_VERSION];
        let mut payload: &[u8] = &[];
        match self {
            Request::Store {
                id,
                auth,
                crc,
                data,
            } => {
                h.push(TAG_STORE);
                h.extend_from_slice(&id.0);
                put_auth(&mut h, auth);
                h.extend_from_slice(&crc.to_le_bytes());
                let n = len_u32("shard", data.len(), u64::from(MAX_SHARD_LEN))?;
                h.extend_from_slice(&n.to_le_bytes());
                payload = data;
            }
            Request::Fetch { id, range } => {
                h.push(TAG_FETCH);
                h.extend_from_slice(&id.0);
                match range {
                    None => h.push(0),
                    Some((off, len)) => {
                        len_u32("fetch range", *len as usize, u64::from(MAX_SHARD_LEN))?;
                        h.push(1);
                        h.extend_from_slice(&off.to_le_bytes());
                        h.extend_from_slice(&len.to_le_bytes());
                    }
                }
            }
            Request::Has { ids } => {
                h.push(TAG_HAS);
                put_ids(&mut h, ids)?;
            }
            Request::Delete { id, auth } => {
                h.push(TAG_DELETE);
                h.extend_from_slice(&id.0);
                put_auth(&mut h, auth);
            }
            Request::Holders { ask, ids } => {
                h.push(TAG_HOLDERS);
                h.extend_from_slice(&ask.to_le_bytes());
                put_ids(&mut h, ids)?;
            }
            Request::Info => h.push(TAG_INFO),
            Request::OwnerUsage => h.push(TAG_OWNER_USAGE),
            Request::PutRoot { record } => {
                h.push(TAG_PUT_ROOT);
                put_record(&mut h, record)?;
            }
            Request::GetRoot { owner } => {
                h.push(TAG_GET_ROOT);
                h.extend_from_slice(&owner.0);
            }
            Request::PutShare { record } => {
                h.extend_from_slice(&[TAG_SHARE, SHARE_PUT]);
                put_record_of(&mut h, "share record", record, MAX_SHARE_LEN)?;
            }
            Request::ListShares { recipient } => {
                h.extend_from_slice(&[TAG_SHARE, SHARE_LIST]);
                h.extend_from_slice(&recipient.0);
            }
            Request::Audit { id, chunk } => {
                h.push(TAG_AUDIT);
                h.extend_from_slice(&id.0);
                h.extend_from_slice(&chunk.to_le_bytes());
            }
            Request::Pair => h.push(TAG_PAIR),
            Request::Heartbeat { primary_bytes } => {
                h.push(TAG_HEARTBEAT);
                h.extend_from_slice(&primary_bytes.to_le_bytes());
            }
            Request::Mirror {
                id,
                owners,
                crc,
                data,
            } => {
                h.push(TAG_MIRROR);
                h.extend_from_slice(&id.0);
                let n = len_u32("mirror owners", owners.len(), MAX_MIRROR_OWNERS as u64)?;
                h.push(n as u8);
                for o in owners {
                    h.extend_from_slice(&o.0);
                }
                h.extend_from_slice(&crc.to_le_bytes());
                let n = len_u32("shard", data.len(), u64::from(MAX_SHARD_LEN))?;
                h.extend_from_slice(&n.to_le_bytes());
                payload = data;
            }
            Request::Malformed { reason } => {
                return Err(Error::Malformed {
                    what: "shard request",
                    reason: format!("a malformed request is never sent ({reason})"),
                });
            }
        }
        Ok(Encoded { header: h, payload })
    }

    /// Decodes a body read from the wire.
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::TooLarge`]; never panics.
    pub fn decode(body: Vec<u8>) -> Result<Request> {
        let mut r = Reader::new(&body, "shard request");
        r.version()?;
        let req = match r.u8()? {
            TAG_STORE => {
                let id = r.shard_id()?;
                let auth = r.auth()?;
                let crc = r.u32()?;
                let start = r.shard_tail()?;
                // A view of the frame, not a copy of its tail.
                let data = Bytes::from(body).slice(start..);
                return Ok(Request::Store {
                    id,
                    auth,
                    crc,
                    data,
                });
            }
            TAG_FETCH => {
                let id = r.shard_id()?;
                let range = match r.u8()? {
                    0 => None,
                    1 => {
                        let off = r.u64()?;
                        let len = r.u32()?;
                        if len > MAX_SHARD_LEN {
                            return Err(Error::TooLarge {
                                what: "fetch range",
                                size: u64::from(len),
                                limit: u64::from(MAX_SHARD_LEN),
                            });
                        }
                        Some((off, len))
                    }
                    f => return Err(r.bad(format!("range flag {f}"))),
                };
                Request::Fetch { id, range }
            }
            TAG_HAS => Request::Has { ids: r.ids()? },
            TAG_DELETE => {
                let id = r.shard_id()?;
                let auth = r.auth()?;
                Request::Delete { id, auth }
            }
            TAG_HOLDERS => {
                let ask = r.u64()?;
                Request::Holders { ask, ids: r.ids()? }
            }
            TAG_INFO => Request::Info,
            TAG_OWNER_USAGE => Request::OwnerUsage,
            TAG_PUT_ROOT => Request::PutRoot {
                record: r.record()?,
            },
            TAG_GET_ROOT => Request::GetRoot {
                owner: NodeId(r.array()?),
            },
            TAG_SHARE => match r.u8()? {
                SHARE_PUT => Request::PutShare {
                    record: r.record_of("share record", MAX_SHARE_LEN)?,
                },
                SHARE_LIST => Request::ListShares {
                    recipient: NodeId(r.array()?),
                },
                op => return Err(r.bad(format!("unknown share operation {op}"))),
            },
            TAG_AUDIT => Request::Audit {
                id: r.shard_id()?,
                chunk: r.u32()?,
            },
            TAG_PAIR => Request::Pair,
            TAG_HEARTBEAT => Request::Heartbeat {
                primary_bytes: r.u64()?,
            },
            TAG_MIRROR => {
                let id = r.shard_id()?;
                let n = usize::from(r.u8()?);
                if n == 0 || n > MAX_MIRROR_OWNERS {
                    return Err(r.bad(format!("{n} mirror owners (1 to {MAX_MIRROR_OWNERS})")));
                }
                let mut owners = Vec::with_capacity(n);
                for _ in 0..n {
                    owners.push(NodeId(r.array()?));
                }
                let crc = r.u32()?;
                let start = r.shard_tail()?;
                let data = Bytes::from(body).slice(start..);
                return Ok(Request::Mirror {
                    id,
                    owners,
                    crc,
                    data,
                });
            }
            t => return Err(r.bad(format!("unknown tag {t}"))),
        };
        r.end()?;
        Ok(req)
    }
}

impl Response {
    /// Encodes the body, checking every limit.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when a field exceeds its limit.
    pub fn encode(&self) -> Result<Encoded<'_>> {
        let mut h = vec![WIRE_VERSION];
        let mut payload: &[u8] = &[];
        match self {
            Response::Stored => h.push(TAG_STORED),
            Response::Data(data) => {
                h.push(TAG_DATA);
                let n = len_u32("shard", data.len(), u64::from(MAX_SHARD_LEN))?;
                h.extend_from_slice(&n.to_le_bytes());
                payload = data;
            }
            Response::Has(lens) => {
                h.push(TAG_HAS_REPLY);
                let n = len_u32("has reply", lens.len(), MAX_IDS as u64)?;
                h.extend_from_slice(&n.to_le_bytes());
                for l in lens {
                    match l {
                        None => h.push(0),
                        Some(l) => {
                            h.push(1);
                            h.extend_from_slice(&l.to_le_bytes());
                        }
                    }
                }
            }
            Response::Deleted => h.push(TAG_DELETED),
            Response::Ack => h.push(TAG_ACK),
            Response::Info(info) => {
                h.push(TAG_INFO_REPLY);
                h.push(u8::from(info.storage));
                h.extend_from_slice(&info.capacity.to_le_bytes());
                h.extend_from_slice(&info.used.to_le_bytes());
                h.extend_from_slice(&info.shards.to_le_bytes());
                let n = len_u32("zone", info.zone.len(), MAX_ZONE_LEN as u64)?;
                h.push(n as u8);
                h.extend_from_slice(info.zone.as_bytes());
            }
            Response::OwnerUsage(u) => {
                h.push(TAG_OWNER_USAGE_REPLY);
                for v in [u.used, u.quota, u.capacity, u.node_used] {
                    h.extend_from_slice(&v.to_le_bytes());
                }
            }
            Response::Root(record) => {
                h.push(TAG_ROOT);
                put_record(&mut h, record)?;
            }
            Response::Shares(records) => {
                h.push(TAG_SHARES);
                let n = len_u32("share records", records.len(), MAX_SHARES as u64)?;
                h.extend_from_slice(&(n as u16).to_le_bytes());
                for record in records {
                    put_record_of(&mut h, "share record", record, MAX_SHARE_LEN)?;
                }
            }
            Response::Error(e) => {
                h.push(TAG_ERROR);
                h.extend_from_slice(&e.code.to_u16().to_le_bytes());
                let n = len_u32("error message", e.message.len(), MAX_ERROR_MESSAGE as u64)?;
                h.extend_from_slice(&(n as u16).to_le_bytes());
                h.extend_from_slice(e.message.as_bytes());
            }
            Response::Proof(p) => {
                h.push(TAG_PROOF);
                let n = len_u32("proof chunk", p.chunk.len(), crate::audit::CHUNK_LEN)?;
                h.extend_from_slice(&(n as u16).to_le_bytes());
                h.extend_from_slice(&p.chunk);
                let n = len_u32(
                    "proof siblings",
                    p.siblings.len(),
                    crate::audit::MAX_PROOF_DEPTH as u64,
                )?;
                h.push(n as u8);
                for s in &p.siblings {
                    h.extend_from_slice(s);
                }
            }
            Response::Beat { mirrored_bytes } => {
                h.push(TAG_BEAT);
                h.extend_from_slice(&mirrored_bytes.to_le_bytes());
            }
        }
        Ok(Encoded { header: h, payload })
    }

    /// Bytes before a [`Response::Data`]'s payload: version, tag, length u32.
    pub const DATA_HEAD: usize = 6;

    /// Decodes a body read in two parts, its first [`DATA_HEAD`](Self::DATA_HEAD) bytes and the
    /// rest: a data response takes `rest` as its payload without moving it; anything else is
    /// joined and decoded as by [`decode`](Self::decode).
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    pub fn decode_parts(head: [u8; Self::DATA_HEAD], rest: Vec<u8>) -> Result<Response> {
        let n = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
        if head[0] == WIRE_VERSION
            && head[1] == TAG_DATA
            && n <= MAX_SHARD_LEN
            && n as usize == rest.len()
        {
            return Ok(Response::Data(rest));
        }
        let mut body = Vec::with_capacity(head.len() + rest.len());
        body.extend_from_slice(&head);
        body.extend_from_slice(&rest);
        Response::decode(body)
    }

    /// Decodes a body read from the wire.
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::TooLarge`]; never panics.
    pub fn decode(body: Vec<u8>) -> Result<Response> {
        let mut r = Reader::new(&body, "shard response");
        r.version()?;
        let resp = match r.u8()? {
            TAG_STORED => Response::Stored,
            TAG_DATA => {
                let n = r.u32()?;
                if n > MAX_SHARD_LEN {
                    return Err(Error::TooLarge {
                        what: "shard",
                        size: u64::from(n),
                        limit: u64::from(MAX_SHARD_LEN),
                    });
                }
                let start = r.pos;
                r.take(n as usize)?;
                r.end()?;
                // Shift the payload to the front in place: no second allocation of a shard.
                let mut body = body;
                body.drain(..start);
                return Ok(Response::Data(body));
            }
            TAG_HAS_REPLY => {
                let n = r.count(MAX_IDS, "has reply")?;
                let mut lens = Vec::with_capacity(n);
                for _ in 0..n {
                    lens.push(match r.u8()? {
                        0 => None,
                        1 => Some(r.u32()?),
                        f => return Err(r.bad(format!("has flag {f}"))),
                    });
                }
                Response::Has(lens)
            }
            TAG_DELETED => Response::Deleted,
            TAG_ACK => Response::Ack,
            TAG_INFO_REPLY => {
                let storage = match r.u8()? {
                    0 => false,
                    1 => true,
                    f => return Err(r.bad(format!("storage flag {f}"))),
                };
                let capacity = r.u64()?;
                let used = r.u64()?;
                let shards = r.u64()?;
                let n = usize::from(r.u8()?);
                if n > MAX_ZONE_LEN {
                    return Err(Error::TooLarge {
                        what: "zone",
                        size: n as u64,
                        limit: MAX_ZONE_LEN as u64,
                    });
                }
                let zone = r.string(n)?;
                Response::Info(NodeInfo {
                    storage,
                    capacity,
                    used,
                    shards,
                    zone,
                })
            }
            TAG_OWNER_USAGE_REPLY => Response::OwnerUsage(OwnerUsage {
                used: r.u64()?,
                quota: r.u64()?,
                capacity: r.u64()?,
                node_used: r.u64()?,
            }),
            TAG_ERROR => {
                let code = ErrorCode::from_u16(r.u16()?);
                let n = usize::from(r.u16()?);
                if n > MAX_ERROR_MESSAGE {
                    return Err(Error::TooLarge {
                        what: "error message",
                        size: n as u64,
                        limit: MAX_ERROR_MESSAGE as u64,
                    });
                }
                let message = r.string(n)?;
                Response::Error(RemoteError { code, message })
            }
            TAG_ROOT => Response::Root(r.record()?),
            TAG_SHARES => {
                let n = at_most("share records", usize::from(r.u16()?), MAX_SHARES)?;
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    records.push(r.record_of("share record", MAX_SHARE_LEN)?);
                }
                Response::Shares(records)
            }
            TAG_PROOF => {
                let n = usize::from(r.u16()?);
                if n as u64 > crate::audit::CHUNK_LEN {
                    return Err(Error::TooLarge {
                        what: "proof chunk",
                        size: n as u64,
                        limit: crate::audit::CHUNK_LEN,
                    });
                }
                let chunk = r.take(n)?.to_vec();
                let n = usize::from(r.u8()?);
                if n > crate::audit::MAX_PROOF_DEPTH {
                    return Err(Error::TooLarge {
                        what: "proof siblings",
                        size: n as u64,
                        limit: crate::audit::MAX_PROOF_DEPTH as u64,
                    });
                }
                let mut siblings = Vec::with_capacity(n);
                for _ in 0..n {
                    siblings.push(r.array()?);
                }
                Response::Proof(crate::audit::Proof { chunk, siblings })
            }
            TAG_BEAT => Response::Beat {
                mirrored_bytes: r.u64()?,
            },
            t => return Err(r.bad(format!("unknown tag {t}"))),
        };
        r.end()?;
        Ok(resp)
    }
}

impl Ask {
    /// Encodes the ask (a gossipsub payload), checking every limit.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when there are too many ids or addresses.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut h = vec![WIRE_VERSION];
        h.extend_from_slice(&self.ask.to_le_bytes());
        put_ids(&mut h, &self.ids)?;
        let n = len_u32("ask addresses", self.addrs.len(), MAX_ASK_ADDRS as u64)?;
        h.push(n as u8);
        for a in &self.addrs {
            let bytes = a.to_vec();
            let l = len_u32("address", bytes.len(), MAX_ADDR_LEN as u64)?;
            h.extend_from_slice(&(l as u16).to_le_bytes());
            h.extend_from_slice(&bytes);
        }
        Ok(h)
    }

    /// Decodes an ask.
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::TooLarge`]; never panics.
    pub fn decode(body: &[u8]) -> Result<Ask> {
        if body.len() > MAX_ASK_LEN {
            return Err(Error::TooLarge {
                what: "lookup ask",
                size: body.len() as u64,
                limit: MAX_ASK_LEN as u64,
            });
        }
        let mut r = Reader::new(body, "lookup ask");
        r.version()?;
        let ask = r.u64()?;
        let ids = r.ids()?;
        let n = at_most("ask addresses", usize::from(r.u8()?), MAX_ASK_ADDRS)?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let l = usize::from(r.u16()?);
            if l > MAX_ADDR_LEN {
                return Err(Error::TooLarge {
                    what: "address",
                    size: l as u64,
                    limit: MAX_ADDR_LEN as u64,
                });
            }
            let bytes = r.take(l)?;
            let addr =
                Multiaddr::try_from(bytes.to_vec()).map_err(|e| r.bad(format!("address: {e}")))?;
            addrs.push(addr);
        }
        r.end()?;
        Ok(Ask { ask, ids, addrs })
    }
}

/// A bounds-checked cursor over a received body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn bad(&self, reason: String) -> Error {
        Error::Malformed {
            what: self.what,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.bad(format!(
                    "truncated: need {n} bytes at offset {}, have {}",
                    self.pos,
                    self.buf.len().saturating_sub(self.pos)
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn shard_id(&mut self) -> Result<ShardId> {
        Ok(ShardId(self.array()?))
    }

    /// A root record: length u32 (≤ [`MAX_ROOT_LEN`], checked before allocating) and bytes.
    fn record(&mut self) -> Result<Vec<u8>> {
        self.record_of("root record", MAX_ROOT_LEN)
    }

    /// `len u32` (at most `limit`) and that many bytes.
    fn record_of(&mut self, what: &'static str, limit: usize) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        if n > limit {
            return Err(Error::TooLarge {
                what,
                size: n as u64,
                limit: limit as u64,
            });
        }
        Ok(self.take(n)?.to_vec())
    }

    /// A shard's bytes at the end of a frame: `len u32` (at most [`MAX_SHARD_LEN`]) and exactly
    /// that many bytes, nothing after. Returns where they start.
    fn shard_tail(&mut self) -> Result<usize> {
        let n = self.u32()?;
        if n > MAX_SHARD_LEN {
            return Err(Error::TooLarge {
                what: "shard",
                size: u64::from(n),
                limit: u64::from(MAX_SHARD_LEN),
            });
        }
        let start = self.pos;
        self.take(n as usize)?;
        self.end()?;
        Ok(start)
    }

    fn version(&mut self) -> Result<()> {
        match self.u8()? {
            WIRE_VERSION => Ok(()),
            v => Err(self.bad(format!(
                "unsupported wire version {v} (this node speaks version {WIRE_VERSION})"
            ))),
        }
    }

    fn count(&mut self, limit: usize, what: &'static str) -> Result<usize> {
        at_most(what, self.u32()? as usize, limit)
    }

    fn ids(&mut self) -> Result<Vec<ShardId>> {
        let n = self.count(MAX_IDS, "shard id list")?;
        // The count is bounded, and the bytes must be present before anything is allocated.
        let bytes = self.take(n * 32)?;
        Ok(bytes
            .chunks_exact(32)
            .map(|c| {
                let mut a = [0u8; 32];
                a.copy_from_slice(c);
                ShardId(a)
            })
            .collect())
    }

    fn auth(&mut self) -> Result<Auth> {
        Ok(Auth {
            public_key: self.array()?,
            timestamp_ms: self.u64()?,
            nonce: self.array()?,
            signature: self.array()?,
        })
    }

    fn string(&mut self, n: usize) -> Result<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("string is not UTF-8".into()))
    }

    fn end(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.bad(format!("{} trailing bytes", self.buf.len() - self.pos)))
        }
    }
}

#[cfg(test)]
mod tests;
