//! The signed root record: the one small, owner-signed value that names an owner's current
//! published namespace (snapshot, segments, versions object) and the writer's lease. Storage
//! nodes keep the newest per owner, the DHT carries a copy, and a machine holding only the
//! identity key finds its namespace through it.
//!
//! This module owns the byte layout (`docs/format.md`, "Root record"), sealing and opening the
//! body, signing, [`RootRecord::verify`] (what nodes and readers alike check before trusting a
//! record) and the no-rollback rule ([`admit`]) every holder applies.
//!
//! The header (owner, seq, time) is plaintext so that nodes can check and order records without
//! any key; the body, which names the objects that hold the namespace, is AES-256-GCM under a
//! key only the owner can derive, with the whole header as associated data.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::identity::{Identity, PublicKey, SignDomain, Signature};
use crate::pipeline::aead::{TAG_LEN, open_in_place, seal_in_place};
use crate::pipeline::keys::random_nonce;
use crate::types::{FileId, NodeId, to_hex};

/// Magic of a root record.
pub const MAGIC: [u8; 8] = *b"DEFSROOT";
/// Root record layout version written and read by this build.
pub const VERSION: u16 = 1;
/// Body format version written and read by this build.
pub const BODY_VERSION: u8 = 1;

/// Bytes before the sealed body: magic 8, version 2, owner key 33, seq 8, time 8, body length 4,
/// nonce 12.
pub const HEADER_LEN: usize = 75;
/// Bytes of the signature that ends a record (r ‖ s).
pub const SIG_LEN: usize = 64;
/// The largest sealed body (ciphertext and tag) a record may carry: 12 KiB, well above the
/// largest body v1 can encode ([`MAX_BODY_LEN`]), so a later body version has room.
pub const MAX_SEALED_BODY_LEN: usize = 12 * 1024;
/// The largest whole record anyone accepts: 16 KiB, checked before anything is parsed or
/// allocated. Small enough for one DHT record and one protocol frame without a second thought.
pub const MAX_RECORD_LEN: usize = 16 * 1024;
/// The most segments a record names: the publisher compacts into a new snapshot before more
/// (`docs/namespace-publishing.md` §1), bounding what a reader fetches.
pub const MAX_SEGMENTS: usize = 64;
/// The longest writer name (the host name shown to a second writer that is refused), in bytes.
pub const MAX_WRITER_NAME: usize = 64;

/// Fixed part of body v1: version 1, writer id 16, lease 4, name length 1, snapshot 72,
/// segment count 2, versions 32, flags 1.
const BODY_FIXED_LEN: usize = 1 + 16 + 4 + 1 + 72 + 2 + 32 + 1;
/// One segment reference in body v1: FileId 32, length u32, trailer 32.
const SEGMENT_REF_LEN: usize = 32 + 4 + 32;
/// The largest body v1: 4,545 bytes.
pub const MAX_BODY_LEN: usize = BODY_FIXED_LEN + MAX_WRITER_NAME + MAX_SEGMENTS * SEGMENT_REF_LEN;

/// HKDF info of the key that seals the body (derived from [`Identity::snapshot_key`]).
const BODY_KEY_INFO: &[u8] = b"defs root body v1";
/// Prefix of the DHT key under which an owner's record is put.
const DHT_KEY_PREFIX: &[u8] = b"defs root v1";

/// Appends a chain as body v1 (and the versions object) lay it out: the snapshot (FileId 32,
/// len u64, trailer 32), the segment count u16, per segment FileId 32, len u32, trailer 32.
///
/// # Errors
/// [`Error::TooLarge`] for a segment longer than `u32::MAX`.
pub(crate) fn put_chain(
    out: &mut Vec<u8>,
    snapshot: &ObjectRef,
    segments: &[ObjectRef],
) -> Result<()> {
    out.extend_from_slice(&snapshot.file.0);
    out.extend_from_slice(&snapshot.len.to_le_bytes());
    out.extend_from_slice(&snapshot.trailer);
    out.extend_from_slice(&(segments.len() as u16).to_le_bytes());
    for seg in segments {
        let len = u32::try_from(seg.len).map_err(|_| Error::TooLarge {
            what: "namespace segment",
            size: seg.len,
            limit: u64::from(u32::MAX),
        })?;
        out.extend_from_slice(&seg.file.0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&seg.trailer);
    }
    Ok(())
}

/// Body flag bit 0: this record's state is a kept version (`/.snapshots`).
const FLAG_KEPT: u8 = 1;

/// Who holds the write lease: 16 random bytes made once per data dir (`DIR/writer.id`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WriterId(pub [u8; 16]);

impl fmt::Debug for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterId({})", to_hex(&self.0))
    }
}

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

/// A published object (snapshot or segment) as the record names it: enough for a reader to
/// fetch it by id and check it is exactly the object the owner published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// The object's FileId (BLAKE3 of its sealed manifest).
    pub file: FileId,
    /// Its plaintext length in bytes (segments: at most `u32::MAX`).
    pub len: u64,
    /// The BLAKE3 trailer that ends its plaintext.
    pub trailer: [u8; 32],
}

/// What a root record says, readable only by the owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootBody {
    /// The data dir that published this record and holds the lease.
    pub writer: WriterId,
    /// How long the lease lasts after the record was made, in seconds (0: released).
    pub lease_secs: u32,
    /// A human name for the writer (host name), at most [`MAX_WRITER_NAME`] bytes of UTF-8.
    pub writer_name: String,
    /// The full snapshot the state starts from.
    pub snapshot: ObjectRef,
    /// The segments applied on top of it, in order (at most [`MAX_SEGMENTS`]).
    pub segments: Vec<ObjectRef>,
    /// The versions object listing kept versions, if any.
    pub versions: Option<FileId>,
    /// This state is a kept version.
    pub kept: bool,
}

impl RootBody {
    /// The body's bytes (body v1, `docs/format.md`).
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the writer name, the segment list or a segment's length exceeds
    /// its limit.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let name = self.writer_name.as_bytes();
        check_limit("root record writer name", name.len(), MAX_WRITER_NAME)?;
        check_limit(
            "root record segment list",
            self.segments.len(),
            MAX_SEGMENTS,
        )?;
        let mut out =
            Vec::with_capacity(BODY_FIXED_LEN + name.len() + self.segments.len() * SEGMENT_REF_LEN);
        out.push(BODY_VERSION);
        out.extend_from_slice(&self.writer.0);
        out.extend_from_slice(&self.lease_secs.to_le_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        put_chain(&mut out, &self.snapshot, &self.segments)?;
        out.extend_from_slice(&self.versions.unwrap_or_default().0);
        out.push(if self.kept { FLAG_KEPT } else { 0 });
        Ok(out)
    }

    /// Parses body bytes. The body was authenticated before this runs, but every length is
    /// still checked: a bug in a writer must not become a panic in a reader.
    ///
    /// # Errors
    /// [`Error::BadRootRecord`] for an unknown body version, a length out of range, bad UTF-8,
    /// unknown flag bits or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<RootBody> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != BODY_VERSION {
            return Err(bad(format!(
                "unknown body version {version} (this build reads {BODY_VERSION})"
            )));
        }
        let writer = WriterId(r.array()?);
        let lease_secs = u32::from_le_bytes(r.array()?);
        let name_len = usize::from(r.u8()?);
        if name_len > MAX_WRITER_NAME {
            return Err(bad(format!(
                "writer name of {name_len} bytes (limit {MAX_WRITER_NAME})"
            )));
        }
        let writer_name = String::from_utf8(r.take(name_len)?.to_vec())
            .map_err(|_| bad("writer name is not UTF-8".into()))?;
        let snapshot = ObjectRef {
            file: FileId(r.array()?),
            len: u64::from_le_bytes(r.array()?),
            trailer: r.array()?,
        };
        let count = usize::from(u16::from_le_bytes(r.array()?));
        if count > MAX_SEGMENTS {
            return Err(bad(format!("{count} segments (limit {MAX_SEGMENTS})")));
        }
        let mut segments = Vec::with_capacity(count);
        for _ in 0..count {
            segments.push(ObjectRef {
                file: FileId(r.array()?),
                len: u64::from(u32::from_le_bytes(r.array()?)),
                trailer: r.array()?,
            });
        }
        let versions = FileId(r.array()?);
        let flags = r.u8()?;
        if flags & !FLAG_KEPT != 0 {
            return Err(bad(format!("unknown body flags {flags:#04x}")));
        }
        if r.pos != bytes.len() {
            return Err(bad(format!("{} bytes after the body", bytes.len() - r.pos)));
        }
        Ok(RootBody {
            writer,
            lease_secs,
            writer_name,
            snapshot,
            segments,
            versions: (versions != FileId::default()).then_some(versions),
            kept: flags & FLAG_KEPT != 0,
        })
    }
}

/// A root record whose layout, owner key, owner puzzle and signature have been checked (by
/// [`RootRecord::verify`]) or that was just made by its owner ([`RootRecord::sign`]). Its body
/// is still sealed: only [`RootRecord::open_body`] with the owner's identity reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct RootRecord {
    bytes: Vec<u8>,
    owner: PublicKey,
    seq: u64,
    time_ms: u64,
}

impl fmt::Debug for RootRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootRecord")
            .field("owner", &self.owner.node_id())
            .field("seq", &self.seq)
            .field("time_ms", &self.time_ms)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl RootRecord {
    /// Makes `identity`'s record number `seq` (≥ 1) at `time_ms` (ms since the epoch): seals
    /// `body` under the owner's root body key with a fresh random nonce and signs the whole
    /// record in the root-record domain. Two calls never give the same bytes (the nonce): a
    /// publisher that must resend a seq resends the bytes it kept.
    ///
    /// # Errors
    /// [`Error::BadRootRecord`] for seq 0; [`Error::TooLarge`] from [`RootBody::encode`];
    /// [`Error::Random`] when the OS has no randomness.
    pub fn sign(
        identity: &Identity,
        seq: u64,
        time_ms: u64,
        body: &RootBody,
    ) -> Result<RootRecord> {
        if seq == 0 {
            return Err(bad("sequence number 0 (records start at 1)".into()));
        }
        let mut sealed = body.encode()?;
        let nonce = random_nonce()?;
        let sealed_len = sealed.len() + TAG_LEN;
        check_limit("sealed root record body", sealed_len, MAX_SEALED_BODY_LEN)?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + sealed_len + SIG_LEN);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&identity.public().to_bytes());
        bytes.extend_from_slice(&seq.to_le_bytes());
        bytes.extend_from_slice(&time_ms.to_le_bytes());
        bytes.extend_from_slice(&(sealed_len as u32).to_le_bytes());
        bytes.extend_from_slice(&nonce);
        seal_in_place(&body_key(identity), &nonce, &bytes, &mut sealed);
        bytes.extend_from_slice(&sealed);
        let sig = identity.sign(SignDomain::RootRecord, &bytes);
        bytes.extend_from_slice(&sig.0);
        Ok(RootRecord {
            bytes,
            owner: identity.public().clone(),
            seq,
            time_ms,
        })
    }

    /// Checks `bytes` as a root record: total length (before anything else), magic, version,
    /// the body length against its limit and the bytes present, the owner key, seq ≥ 1, the
    /// signature over everything before it in the root-record domain, and that the owner's
    /// NodeId solves the identity puzzle at `min_difficulty`. The body stays sealed.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a record over [`MAX_RECORD_LEN`] or a body over
    /// [`MAX_SEALED_BODY_LEN`]; [`Error::BadRootRecord`] for a malformed record;
    /// [`Error::BadPublicKey`]; [`Error::BadSignature`]; [`Error::PuzzleNotSolved`].
    pub fn verify(bytes: &[u8], min_difficulty: u8) -> Result<RootRecord> {
        check_limit("root record", bytes.len(), MAX_RECORD_LEN)?;
        if bytes.len() < HEADER_LEN + TAG_LEN + SIG_LEN {
            return Err(bad(format!(
                "{} bytes, shorter than any record ({})",
                bytes.len(),
                HEADER_LEN + TAG_LEN + SIG_LEN
            )));
        }
        if bytes[0..8] != MAGIC {
            return Err(bad("not a root record (bad magic)".into()));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(bad(format!(
                "unknown version {version} (this build reads {VERSION})"
            )));
        }
        let sealed_len = u32::from_le_bytes(field(bytes, 59)) as usize;
        check_limit("sealed root record body", sealed_len, MAX_SEALED_BODY_LEN)?;
        if sealed_len < TAG_LEN {
            return Err(bad(format!(
                "sealed body of {sealed_len} bytes, shorter than its tag"
            )));
        }
        let expected = HEADER_LEN + sealed_len + SIG_LEN;
        if bytes.len() != expected {
            return Err(bad(format!(
                "{} bytes, but its body length says {expected}",
                bytes.len()
            )));
        }
        let owner = PublicKey::from_bytes(&bytes[10..43])?;
        let seq = u64::from_le_bytes(field(bytes, 43));
        if seq == 0 {
            return Err(bad("sequence number 0 (records start at 1)".into()));
        }
        let time_ms = u64::from_le_bytes(field(bytes, 51));
        let signed = expected - SIG_LEN;
        let sig = Signature(field(bytes, signed));
        owner.verify(SignDomain::RootRecord, &bytes[..signed], &sig)?;
        owner.check_puzzle(min_difficulty)?;
        Ok(RootRecord {
            bytes: bytes.to_vec(),
            owner,
            seq,
            time_ms,
        })
    }

    /// Opens the body with the owner's identity.
    ///
    /// # Errors
    /// [`Error::BadRootRecord`] when the record belongs to another owner, its body does not
    /// open with `identity`'s key, or the body does not parse.
    pub fn open_body(&self, identity: &Identity) -> Result<RootBody> {
        if self.owner.node_id() != identity.node_id() {
            return Err(bad(format!(
                "the record of owner {}, not of this identity {}",
                self.owner.node_id(),
                identity.node_id()
            )));
        }
        let sealed_end = self.bytes.len() - SIG_LEN;
        let nonce: [u8; 12] = field(&self.bytes, 63);
        let mut body = self.bytes[HEADER_LEN..sealed_end].to_vec();
        open_in_place(
            &body_key(identity),
            &nonce,
            &self.bytes[..HEADER_LEN],
            &mut body,
        )
        .map_err(|_| bad("the body does not open with this identity's key".into()))?;
        RootBody::decode(&body)
    }

    /// The owner's public key.
    pub fn owner_key(&self) -> &PublicKey {
        &self.owner
    }

    /// The owner's NodeId.
    pub fn owner(&self) -> NodeId {
        self.owner.node_id()
    }

    /// The sequence number: strictly increasing per owner.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When the publisher made it, in ms since the epoch (names versions; orders nothing).
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// The record's bytes, as stored and sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The record's bytes, as stored and sent.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// What a holder of at most one record per owner does with a verified record it is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Keep the offered record: there was none, or it is newer than the one held.
    Store,
    /// The offered record is byte for byte the one held (a resend): acknowledge, change nothing.
    Same,
}

/// The no-rollback rule, one definition for storage nodes, the DHT filter, the in-memory store
/// and readers: a record replaces the one held for its owner only with a higher seq; the same
/// seq with other bytes is refused too (a seq never names two states).
///
/// # Errors
/// [`Error::RootRollback`] when the offered record does not supersede `held`;
/// [`Error::BadRootRecord`] when the two belong to different owners (a caller's bug: holders
/// key records by owner).
pub fn admit(held: Option<&RootRecord>, offered: &RootRecord) -> Result<Admit> {
    let Some(held) = held else {
        return Ok(Admit::Store);
    };
    if held.owner() != offered.owner() {
        return Err(bad(format!(
            "record of owner {} compared with one of {}",
            offered.owner(),
            held.owner()
        )));
    }
    if offered.seq > held.seq {
        Ok(Admit::Store)
    } else if offered.seq == held.seq && offered.bytes == held.bytes {
        Ok(Admit::Same)
    } else {
        Err(Error::RootRollback {
            owner: offered.owner(),
            held: held.seq,
            offered: offered.seq,
        })
    }
}

/// The DHT key of `owner`'s root record: BLAKE3(`"defs root v1"` ‖ owner NodeId).
pub fn dht_key(owner: &NodeId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(DHT_KEY_PREFIX);
    h.update(&owner.0);
    *h.finalize().as_bytes()
}

/// HKDF-SHA256(ikm = the identity's snapshot key, info `"defs root body v1"`).
fn body_key(identity: &Identity) -> Zeroizing<[u8; 32]> {
    let ikm = Zeroizing::new(identity.snapshot_key());
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, &ikm[..]).expand(BODY_KEY_INFO, key.as_mut_slice());
    key
}

fn bad(reason: String) -> Error {
    Error::BadRootRecord { reason }
}

fn check_limit(what: &'static str, size: usize, limit: usize) -> Result<()> {
    if size > limit {
        return Err(Error::TooLarge {
            what,
            size: size as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

/// `N` bytes of `bytes` at `at`; callers have checked the length.
pub(crate) fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// A cursor over body bytes that refuses to read past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(bad(format!(
                "body ends after {} bytes, inside a field",
                self.bytes.len()
            )));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// Records for tests of the layers that store and find them.
#[cfg(any(test, feature = "test-utils"))]
pub mod testing {
    use super::*;

    /// `identity`'s record number `seq`, made at `seq` seconds after the epoch, naming a
    /// snapshot whose FileId is `seq` repeated (so records of different seqs differ in body).
    ///
    /// # Panics
    /// For seq 0 or when the OS has no randomness.
    pub fn record(identity: &Identity, seq: u64) -> RootRecord {
        let body = RootBody {
            writer: WriterId([9; 16]),
            lease_secs: 300,
            writer_name: "test".into(),
            snapshot: ObjectRef {
                file: FileId([seq as u8; 32]),
                len: 4096,
                trailer: [1; 32],
            },
            segments: vec![],
            versions: None,
            kept: false,
        };
        match RootRecord::sign(identity, seq, 1_000 * seq, &body) {
            Ok(r) => r,
            Err(e) => panic!("test record: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
