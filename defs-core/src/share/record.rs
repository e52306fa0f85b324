//! The share record: one owner-signed value per (owner, recipient, share) that hands the
//! recipient one subtree of the owner's namespace, or says the share was revoked. Storage nodes
//! keep the newest per share and return a recipient's records to it; only the recipient opens
//! the body. Layout in `docs/format.md`, "Share record".
//!
//! The header (owner, recipient, share id, seq, time, flags, name) is plaintext so nodes can
//! check and order records without a key. A live record then carries the share key wrapped
//! for the recipient ([`super::wrap`], the header as context) and the body sealed under a key
//! derived from the share key; a revoked record carries neither. The owner signs everything.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::wrap::{WRAPPED_LEN, Wrapped, unwrap, wrap};
use crate::error::{Error, Result};
use crate::identity::{Identity, PublicKey, SignDomain, Signature};
use crate::pipeline::aead::{TAG_LEN, open_in_place, seal_in_place};
use crate::pipeline::keys::random_nonce;
use crate::root_record::{Admit, field};
use crate::types::{FileId, NodeId, to_hex};

/// Magic of a share record.
pub const MAGIC: [u8; 8] = *b"DEFSSHAR";
/// Layout version written and read by this build.
pub const VERSION: u16 = 1;
/// Body version written and read by this build.
pub const BODY_VERSION: u8 = 1;
/// The longest share name (what the recipient sees under `/.shared`), in bytes.
pub const MAX_NAME: usize = 64;
/// Fixed header bytes before the name: magic 8, version 2, owner 33, recipient 33, share id
/// 16, seq 8, time 8, flags 1, name length 1.
const FIXED_LEN: usize = 110;
/// Body v1: version 1, subtree inode 8, view FileId 32, view key 32, view len 8, view trailer
/// 32, the owner's root seq 8.
pub const BODY_LEN: usize = 1 + 8 + 32 + 32 + 8 + 32 + 8;
/// The largest sealed body a record may carry (room for a later body version).
pub const MAX_SEALED_BODY_LEN: usize = 2048;
/// Signature bytes (r ‖ s).
pub const SIG_LEN: usize = 64;
/// The largest record anyone accepts: 4 KiB, checked before anything is parsed.
pub const MAX_RECORD_LEN: usize = 4096;

/// Flag bit 0: the share is revoked (no key, no body).
const FLAG_REVOKED: u8 = 1;
/// Flag bit 1: read-only (the only kind this build makes and reads).
const FLAG_READ_ONLY: u8 = 2;

/// HKDF info of the body key, derived from the share key.
const BODY_KEY_INFO: &[u8] = b"defs share body v1";

/// A share's id: 16 random bytes chosen by the owner when the share is made.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ShareId(pub [u8; 16]);

impl fmt::Debug for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareId({})", to_hex(&self.0))
    }
}

impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

/// What a live share hands over: the view of the subtree, an ordinary object whose plaintext
/// is a namespace snapshot with the subtree's directory as its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareBody {
    /// The shared directory's inode number in the owner's namespace (informative).
    pub subtree: u64,
    /// The view object's FileId.
    pub view: FileId,
    /// The view object's file key (its sealed manifest opens with it).
    pub view_key: [u8; 32],
    /// The view's plaintext length.
    pub view_len: u64,
    /// The BLAKE3 trailer that ends the view's plaintext.
    pub view_trailer: [u8; 32],
    /// The owner's root record seq the view was cut at (0: none published yet).
    pub root_seq: u64,
}

impl ShareBody {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BODY_LEN);
        out.push(BODY_VERSION);
        out.extend_from_slice(&self.subtree.to_le_bytes());
        out.extend_from_slice(&self.view.0);
        out.extend_from_slice(&self.view_key);
        out.extend_from_slice(&self.view_len.to_le_bytes());
        out.extend_from_slice(&self.view_trailer);
        out.extend_from_slice(&self.root_seq.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Result<ShareBody> {
        if b.first() != Some(&BODY_VERSION) {
            return Err(bad(format!(
                "unknown body version {:?} (this build reads {BODY_VERSION})",
                b.first()
            )));
        }
        if b.len() != BODY_LEN {
            return Err(bad(format!("body of {} bytes, not {BODY_LEN}", b.len())));
        }
        Ok(ShareBody {
            subtree: u64::from_le_bytes(field(b, 1)),
            view: FileId(field(b, 9)),
            view_key: field(b, 41),
            view_len: u64::from_le_bytes(field(b, 73)),
            view_trailer: field(b, 81),
            root_seq: u64::from_le_bytes(field(b, 113)),
        })
    }
}

/// What a share record says once its recipient opened it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// A live share: its key and body.
    Live {
        /// The share key (the same for every seq of the share).
        key: Zeroizing<[u8; 32]>,
        /// The view it names.
        body: ShareBody,
    },
    /// The owner revoked the share.
    Revoked,
}

/// A share record whose layout, keys, owner puzzle and signature were checked
/// ([`ShareRecord::verify`]) or that its owner just made ([`ShareRecord::sign`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ShareRecord {
    bytes: Vec<u8>,
    owner: PublicKey,
    recipient: PublicKey,
    share: ShareId,
    seq: u64,
    time_ms: u64,
    revoked: bool,
    name: String,
}

impl fmt::Debug for ShareRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareRecord")
            .field("owner", &self.owner.node_id())
            .field("recipient", &self.recipient.node_id())
            .field("share", &self.share)
            .field("seq", &self.seq)
            .field("revoked", &self.revoked)
            .field("name", &self.name)
            .finish()
    }
}

/// What [`ShareRecord::sign`] puts in a record: a live share (its key and body) or a revocation.
#[derive(Clone, Copy, Debug)]
pub enum Grant<'a> {
    /// The share key and the view it names.
    Live {
        /// The share key.
        key: &'a [u8; 32],
        /// The body.
        body: &'a ShareBody,
    },
    /// The share is revoked.
    Revoked,
}

impl ShareRecord {
    /// Makes `owner`'s record number `seq` (≥ 1) of share `share` for `recipient`, named `name`
    /// (1..=[`MAX_NAME`] bytes, a valid file name), signed in the share-record domain.
    ///
    /// # Errors
    /// [`Error::BadShareRecord`] for seq 0, a bad name or a recipient equal to the owner;
    /// [`Error::Random`] when the OS has no randomness.
    pub fn sign(
        owner: &Identity,
        recipient: &PublicKey,
        share: ShareId,
        seq: u64,
        time_ms: u64,
        name: &str,
        grant: Grant<'_>,
    ) -> Result<ShareRecord> {
        if seq == 0 {
            return Err(bad("sequence number 0 (records start at 1)".into()));
        }
        check_name(name)?;
        if recipient == owner.public() {
            return Err(bad("a share for its own owner".into()));
        }
        let revoked = matches!(grant, Grant::Revoked);
        let mut bytes = Vec::with_capacity(FIXED_LEN + name.len() + 256);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&owner.public().to_bytes());
        bytes.extend_from_slice(&recipient.to_bytes());
        bytes.extend_from_slice(&share.0);
        bytes.extend_from_slice(&seq.to_le_bytes());
        bytes.extend_from_slice(&time_ms.to_le_bytes());
        bytes.push(FLAG_READ_ONLY | if revoked { FLAG_REVOKED } else { 0 });
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name.as_bytes());
        if let Grant::Live { key, body } = grant {
            let wrapped = wrap(recipient, &bytes, key)?;
            bytes.extend_from_slice(&wrapped.0);
            let nonce = random_nonce()?;
            let mut sealed = body.encode();
            let sealed_len = sealed.len() + TAG_LEN;
            bytes.extend_from_slice(&nonce);
            bytes.extend_from_slice(&(sealed_len as u32).to_le_bytes());
            seal_in_place(&body_key(key), &nonce, &bytes, &mut sealed);
            bytes.extend_from_slice(&sealed);
        }
        let sig = owner.sign(SignDomain::ShareRecord, &bytes);
        bytes.extend_from_slice(&sig.0);
        Ok(ShareRecord {
            bytes,
            owner: owner.public().clone(),
            recipient: recipient.clone(),
            share,
            seq,
            time_ms,
            revoked,
            name: name.to_string(),
        })
    }

    /// Checks `bytes` as a share record: the total length before anything else, magic,
    /// version, both keys, seq ≥ 1, flags, the name, the wrapped key and sealed body lengths
    /// against the bytes present (nothing after the signature), the owner's signature in the
    /// share-record domain and the owner's puzzle at `min_difficulty`. The body stays sealed.
    ///
    /// # Errors
    /// [`Error::TooLarge`]; [`Error::BadShareRecord`]; [`Error::BadPublicKey`];
    /// [`Error::BadSignature`]; [`Error::PuzzleNotSolved`].
    pub fn verify(bytes: &[u8], min_difficulty: u8) -> Result<ShareRecord> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(Error::TooLarge {
                what: "share record",
                size: bytes.len() as u64,
                limit: MAX_RECORD_LEN as u64,
            });
        }
        if bytes.len() < FIXED_LEN + 1 + SIG_LEN {
            return Err(bad(format!(
                "{} bytes, shorter than any record",
                bytes.len()
            )));
        }
        if bytes[..8] != MAGIC {
            return Err(bad("not a share record (bad magic)".into()));
        }
        let version = u16::from_le_bytes(field(bytes, 8));
        if version != VERSION {
            return Err(bad(format!(
                "unknown version {version} (this build reads {VERSION})"
            )));
        }
        let owner = PublicKey::from_bytes(&bytes[10..43])?;
        let recipient = PublicKey::from_bytes(&bytes[43..76])?;
        if owner == recipient {
            return Err(bad("a share for its own owner".into()));
        }
        let share = ShareId(field(bytes, 76));
        let seq = u64::from_le_bytes(field(bytes, 92));
        if seq == 0 {
            return Err(bad("sequence number 0 (records start at 1)".into()));
        }
        let time_ms = u64::from_le_bytes(field(bytes, 100));
        let flags = bytes[108];
        if flags & !(FLAG_REVOKED | FLAG_READ_ONLY) != 0 || flags & FLAG_READ_ONLY == 0 {
            return Err(bad(format!(
                "flags {flags:#04x} (this build reads read-only shares only)"
            )));
        }
        let revoked = flags & FLAG_REVOKED != 0;
        let name_len = usize::from(bytes[109]);
        let header_end = FIXED_LEN + name_len;
        if bytes.len() < header_end + SIG_LEN {
            return Err(bad("the record ends inside its name".into()));
        }
        let name = std::str::from_utf8(&bytes[FIXED_LEN..header_end])
            .map_err(|_| bad("the name is not UTF-8".into()))?
            .to_string();
        check_name(&name)?;
        let expected = if revoked {
            header_end + SIG_LEN
        } else {
            let at = header_end + WRAPPED_LEN + 12;
            if bytes.len() < at + 4 {
                return Err(bad("the record ends inside its wrapped key".into()));
            }
            let sealed_len = u32::from_le_bytes(field(bytes, at)) as usize;
            if !(TAG_LEN..=MAX_SEALED_BODY_LEN).contains(&sealed_len) {
                return Err(bad(format!(
                    "sealed body of {sealed_len} bytes (allowed {TAG_LEN}..={MAX_SEALED_BODY_LEN})"
                )));
            }
            at + 4 + sealed_len + SIG_LEN
        };
        if bytes.len() != expected {
            return Err(bad(format!(
                "{} bytes, but its fields say {expected}",
                bytes.len()
            )));
        }
        let signed = expected - SIG_LEN;
        owner.verify(
            SignDomain::ShareRecord,
            &bytes[..signed],
            &Signature(field(bytes, signed)),
        )?;
        owner.check_puzzle(min_difficulty)?;
        Ok(ShareRecord {
            bytes: bytes.to_vec(),
            owner,
            recipient,
            share,
            seq,
            time_ms,
            revoked,
            name,
        })
    }

    /// Opens the record with the recipient's identity: unwraps the share key and the body.
    ///
    /// # Errors
    /// [`Error::BadShareRecord`] when the record is addressed to another identity, or its key
    /// or body does not open (changed bytes, another context) or parse.
    pub fn open(&self, recipient: &Identity) -> Result<Opened> {
        if &self.recipient != recipient.public() {
            return Err(bad(format!(
                "addressed to {}, not to this identity {}",
                self.recipient.node_id(),
                recipient.node_id()
            )));
        }
        if self.revoked {
            return Ok(Opened::Revoked);
        }
        let header_end = FIXED_LEN + self.name.len();
        let mut w = [0u8; WRAPPED_LEN];
        w.copy_from_slice(&self.bytes[header_end..header_end + WRAPPED_LEN]);
        let key = unwrap(recipient, &self.bytes[..header_end], &Wrapped(w))
            .map_err(|e| bad(format!("the share key does not open: {e}")))?;
        let nonce_at = header_end + WRAPPED_LEN;
        let nonce: [u8; 12] = field(&self.bytes, nonce_at);
        let body_at = nonce_at + 12 + 4;
        let mut body = self.bytes[body_at..self.bytes.len() - SIG_LEN].to_vec();
        open_in_place(&body_key(&key), &nonce, &self.bytes[..body_at], &mut body)
            .map_err(|_| bad("the body does not open with the share key".into()))?;
        Ok(Opened::Live {
            key,
            body: ShareBody::decode(&body)?,
        })
    }

    /// The owner's public key.
    pub fn owner_key(&self) -> &PublicKey {
        &self.owner
    }
    /// The owner's NodeId.
    pub fn owner(&self) -> NodeId {
        self.owner.node_id()
    }
    /// The recipient's public key.
    pub fn recipient_key(&self) -> &PublicKey {
        &self.recipient
    }
    /// The recipient's NodeId.
    pub fn recipient(&self) -> NodeId {
        self.recipient.node_id()
    }
    /// The share's id.
    pub fn share(&self) -> ShareId {
        self.share
    }
    /// The sequence number, strictly increasing per share.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// When the owner made it, in ms since the epoch.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }
    /// Whether this record revokes the share.
    pub fn revoked(&self) -> bool {
        self.revoked
    }
    /// The share's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The record's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The one rule of every holder (nodes, recipients): a revocation is final; otherwise a record
/// replaces the held one of its share only with a higher seq (no replay of an older version).
///
/// # Errors
/// [`Error::ShareRevoked`] when the held record revokes the share (and the offer is not that
/// record); [`Error::ShareRollback`] for a seq not above the held one (other bytes);
/// [`Error::BadShareRecord`] when the two are of different shares (a caller's bug).
/// The verdict is the root records' [`Admit`]: store it, or an identical resend.
pub fn admit(held: Option<&ShareRecord>, offered: &ShareRecord) -> Result<Admit> {
    let Some(held) = held else {
        return Ok(Admit::Store);
    };
    if (held.owner(), held.recipient(), held.share)
        != (offered.owner(), offered.recipient(), offered.share)
    {
        return Err(bad("records of two different shares compared".into()));
    }
    if held.bytes == offered.bytes {
        return Ok(Admit::Same);
    }
    if held.revoked {
        return Err(Error::ShareRevoked {
            owner: held.owner(),
            share: held.share.to_string(),
        });
    }
    if offered.seq > held.seq {
        Ok(Admit::Store)
    } else {
        Err(Error::ShareRollback {
            owner: held.owner(),
            share: held.share.to_string(),
            held: held.seq,
            offered: offered.seq,
        })
    }
}

/// A share name must be a single valid file name: 1..=64 bytes, no `/` or NUL, not `.`/`..`.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || name == "."
        || name == ".."
        || name.bytes().any(|b| b == b'/' || b == 0)
    {
        return Err(bad(format!(
            "share name {name:?} is not a file name of 1..={MAX_NAME} bytes"
        )));
    }
    Ok(())
}

/// HKDF-SHA256(ikm = share key, info `"defs share body v1"`).
fn body_key(share_key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, share_key).expand(BODY_KEY_INFO, key.as_mut_slice());
    key
}

fn bad(reason: String) -> Error {
    Error::BadShareRecord { reason }
}
