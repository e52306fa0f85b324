//! The node's signing identity: its secp256k1 key, its [`NodeId`], the S/Kademlia-style work
//! puzzle every identity must solve, the key file, domain-separated signatures, and the
//! symmetric keys derived from the secret.
//!
//! - NodeId = BLAKE3 of the 33-byte compressed SEC1 public key.
//! - Puzzle: BLAKE3(NodeId) starts with at least `difficulty` zero bits ([`puzzle_ok`]).
//! - Signatures: ECDSA/secp256k1 (low-S, RFC 6979) over SHA-256 of
//!   `"DeFS-sig-v1" ‖ len(domain) u8 ‖ domain ‖ message`, where the domain is a [`SignDomain`]
//!   tag; a signature made for one purpose never verifies for another.
//! - Key file: `docs/format.md`, section "Identity key file"; mode 0600, written atomically,
//!   refused when group- or world-accessible.
//! - Key backup (Shamir shares of the secret): [`keyshare`].

pub mod keyshare;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use k256::ecdsa::signature::{MultipartSigner, MultipartVerifier};
use k256::ecdsa::{SigningKey, VerifyingKey};
use k256::elliptic_curve::Generate;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;
use crate::pipeline::WrapKey;
use crate::types::NodeId;

/// Puzzle difficulty (leading zero bits of BLAKE3(NodeId)) used by `defs init` unless told
/// otherwise. Each bit doubles the expected work. One key generation costs ≈ 0.14 ms on the
/// development machine (2 shared, busy cores), so the expected 1,024 tries at 10 bits take
/// ≈ 0.15–0.3 s and even an unlucky 3× draw stays under one second; 12 bits already averaged
/// 0.67 s there. Figures: `docs/performance.md`, section "Identity".
pub const DEFAULT_PUZZLE_DIFFICULTY: u8 = 10;

/// The highest difficulty [`Identity::create`] accepts: 2^32 expected key generations would take
/// days, so anything above is a typo, not a policy.
pub const MAX_PUZZLE_DIFFICULTY: u8 = 32;

/// Prefix of every signed message: names the scheme and its version.
const SIG_CONTEXT: &[u8] = b"DeFS-sig-v1";

/// Key file magic: identifies a DeFS identity key file.
const KEY_FILE_MAGIC: [u8; 8] = *b"DEFSKEY\0";
/// Key file format version written by this build.
const KEY_FILE_VERSION: u16 = 1;
/// Key file length: magic 8, version 2, difficulty 1, reserved 1, secret 32, CRC32 4.
const KEY_FILE_LEN: usize = 48;

/// What a signature is for. The tag is bound into the signed bytes, so a signature for one
/// purpose can never be replayed as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignDomain {
    /// A request to store a shard on a node.
    StoreShard,
    /// A request to delete (or stop holding) a shard.
    DeleteShard,
    /// A namespace root record (owner, sequence number, snapshot id).
    RootRecord,
    /// A broadcast index lookup ("who holds these shards?").
    Lookup,
    /// A pairing heartbeat between partner storage nodes.
    Heartbeat,
    /// A pairing request or acceptance between storage nodes.
    Pairing,
    /// A node announcement (addresses, capacity).
    Announce,
    /// A share record: a subtree's keys wrapped for another identity, or its revocation.
    ShareRecord,
}

impl SignDomain {
    /// The tag bound into signatures of this domain. Tags are part of the signature format: never
    /// change one.
    pub fn tag(self) -> &'static str {
        match self {
            SignDomain::StoreShard => "store-shard",
            SignDomain::DeleteShard => "delete-shard",
            SignDomain::RootRecord => "root-record",
            SignDomain::Lookup => "lookup",
            SignDomain::Heartbeat => "heartbeat",
            SignDomain::Pairing => "pairing",
            SignDomain::Announce => "announce",
            SignDomain::ShareRecord => "share-record",
        }
    }
}

impl fmt::Display for SignDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// The message parts that are hashed (SHA-256, inside ECDSA) for a signature in `domain`.
fn signed_parts<'a>(domain: SignDomain, len: &'a [u8; 1], msg: &'a [u8]) -> [&'a [u8]; 4] {
    [SIG_CONTEXT, len, domain.tag().as_bytes(), msg]
}

/// The length byte of a domain tag. Tags are short constants; anything longer than 255 bytes
/// would be a programming error, and clamping keeps the encoding total.
fn tag_len(domain: SignDomain) -> [u8; 1] {
    [u8::try_from(domain.tag().len()).unwrap_or(u8::MAX)]
}

/// A compact ECDSA/secp256k1 signature: r ‖ s, 32 bytes each, big-endian, s normalised low.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", crate::types::to_hex(&self.0[..8]))
    }
}

/// A node's public key (compressed SEC1, 33 bytes) and the [`NodeId`] derived from it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    bytes: [u8; 33],
}

impl PublicKey {
    /// Parses a 33-byte compressed SEC1 public key.
    ///
    /// # Errors
    /// [`Error::BadPublicKey`] for any other length, an uncompressed encoding, or a point not on
    /// the curve.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey> {
        let bytes: [u8; 33] = bytes.try_into().map_err(|_| Error::BadPublicKey)?;
        if bytes[0] != 0x02 && bytes[0] != 0x03 {
            return Err(Error::BadPublicKey);
        }
        let key = VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| Error::BadPublicKey)?;
        Ok(PublicKey { key, bytes })
    }

    fn from_verifying_key(key: VerifyingKey) -> Result<PublicKey> {
        let point = key.to_sec1_point(true);
        let bytes: [u8; 33] = point
            .as_bytes()
            .try_into()
            .map_err(|_| Error::BadPublicKey)?;
        Ok(PublicKey { key, bytes })
    }

    /// The 33-byte compressed SEC1 encoding.
    pub fn to_bytes(&self) -> [u8; 33] {
        self.bytes
    }

    /// BLAKE3 of [`to_bytes`](Self::to_bytes).
    pub fn node_id(&self) -> NodeId {
        NodeId(*blake3::hash(&self.bytes).as_bytes())
    }

    /// Checks `signature` over `msg` in `domain`.
    ///
    /// # Errors
    /// [`Error::BadSignature`] when the signature was not made by this key over exactly these
    /// bytes in exactly this domain (or is malformed, or has a high S).
    pub fn verify(&self, domain: SignDomain, msg: &[u8], signature: &Signature) -> Result<()> {
        let bad = || Error::BadSignature {
            domain: domain.tag(),
        };
        let sig = k256::ecdsa::Signature::from_slice(&signature.0).map_err(|_| bad())?;
        let len = tag_len(domain);
        self.key
            .multipart_verify(&signed_parts(domain, &len, msg), &sig)
            .map_err(|_| bad())
    }

    /// Checks that this key's [`NodeId`] solves the puzzle at `difficulty`.
    ///
    /// # Errors
    /// [`Error::PuzzleNotSolved`] when it does not.
    pub fn check_puzzle(&self, difficulty: u8) -> Result<()> {
        let node_id = self.node_id();
        if puzzle_ok(&node_id, difficulty) {
            Ok(())
        } else {
            Err(Error::PuzzleNotSolved {
                node_id,
                difficulty,
                bits: puzzle_bits(&node_id),
            })
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", crate::types::to_hex(&self.bytes))
    }
}

/// How many leading zero bits BLAKE3(`node_id`) has: the work a NodeId proves.
pub fn puzzle_bits(node_id: &NodeId) -> u32 {
    let hash = blake3::hash(&node_id.0);
    let mut bits = 0;
    for byte in hash.as_bytes() {
        if *byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// True when BLAKE3(`node_id`) starts with at least `difficulty` zero bits.
pub fn puzzle_ok(node_id: &NodeId, difficulty: u8) -> bool {
    puzzle_bits(node_id) >= u32::from(difficulty)
}

/// A node's secret signing key, with its public key and [`NodeId`] cached.
pub struct Identity {
    secret: SigningKey,
    public: PublicKey,
    node_id: NodeId,
    difficulty: u8,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("difficulty", &self.difficulty)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates random keys until one's NodeId solves the puzzle at `difficulty`. Expected work:
    /// 2^difficulty key generations (see [`DEFAULT_PUZZLE_DIFFICULTY`]).
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn generate(difficulty: u8) -> Identity {
        loop {
            let secret = SigningKey::generate();
            let Ok(public) = PublicKey::from_verifying_key(*secret.verifying_key()) else {
                continue;
            };
            let node_id = public.node_id();
            if puzzle_ok(&node_id, difficulty) {
                return Identity {
                    secret,
                    public,
                    node_id,
                    difficulty,
                };
            }
        }
    }

    /// Rebuilds an identity from its 32-byte secret scalar (big-endian). The puzzle is not
    /// checked: use [`PublicKey::check_puzzle`] where it matters.
    ///
    /// # Errors
    /// [`Error::BadPublicKey`] when the bytes are zero or not below the curve order.
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<Identity> {
        let secret = SigningKey::from_slice(bytes).map_err(|_| Error::BadPublicKey)?;
        let public = PublicKey::from_verifying_key(*secret.verifying_key())?;
        let node_id = public.node_id();
        let difficulty = u8::try_from(puzzle_bits(&node_id)).unwrap_or(u8::MAX);
        Ok(Identity {
            secret,
            public,
            node_id,
            difficulty,
        })
    }

    /// Generates an identity at `difficulty` and writes it to a new key file at `path` (see
    /// [`write_new`](Self::write_new)).
    ///
    /// # Errors
    /// [`Error::KeyFileExists`] when `path` exists; [`Error::TooLarge`] for a difficulty above
    /// [`MAX_PUZZLE_DIFFICULTY`]; [`Error::Io`] when writing fails.
    pub fn create(path: &Path, difficulty: u8) -> Result<Identity> {
        if difficulty > MAX_PUZZLE_DIFFICULTY {
            return Err(Error::TooLarge {
                what: "puzzle difficulty",
                size: u64::from(difficulty),
                limit: u64::from(MAX_PUZZLE_DIFFICULTY),
            });
        }
        if path.symlink_metadata().is_ok() {
            return Err(Error::KeyFileExists {
                path: path.to_path_buf(),
            });
        }
        let identity = Identity::generate(difficulty);
        identity.write_new(path)?;
        tracing::info!(node_id = %identity.node_id, difficulty, path = %path.display(), "identity created");
        Ok(identity)
    }

    /// Writes this identity to a new key file at `path`: mode 0600 from creation, written to a
    /// temporary file, fsynced, then linked into place so an existing file is never
    /// overwritten, and the directory fsynced. The bytes depend only on the secret and
    /// [`difficulty`](Self::difficulty), so a restored identity writes the file it came from.
    ///
    /// # Errors
    /// [`Error::KeyFileExists`] when `path` exists; [`Error::Io`] when writing fails.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "identity.key".to_owned());
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let bytes = self.encode_key_file();
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, e))?;
            file.write_all(&bytes[..]).map_err(|e| Error::io(&tmp, e))?;
            file.sync_all().map_err(|e| Error::io(&tmp, e))?;
            // A hard link is an atomic "rename unless the target exists": a concurrent `init`
            // can never replace a key someone already holds.
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == ErrorKind::AlreadyExists {
                    Error::KeyFileExists {
                        path: path.to_path_buf(),
                    }
                } else {
                    Error::io(path, e)
                }
            })
        })();
        let _ = fs::remove_file(&tmp);
        result?;
        fsync_dir(&dir)
    }

    fn encode_key_file(&self) -> Zeroizing<[u8; KEY_FILE_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_FILE_LEN]);
        out[0..8].copy_from_slice(&KEY_FILE_MAGIC);
        out[8..10].copy_from_slice(&KEY_FILE_VERSION.to_le_bytes());
        out[10] = self.difficulty;
        out[11] = 0;
        out[12..44].copy_from_slice(&self.secret_bytes()[..]);
        let crc = crc32fast::hash(&out[..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Loads a key file written by [`create`](Self::create).
    ///
    /// # Errors
    /// [`Error::KeyFilePermissions`] when the file is accessible to group or others (the message
    /// says to run `chmod 600 PATH`); [`Error::BadKeyFile`] for a malformed file;
    /// [`Error::PuzzleNotSolved`] when the key does not solve the puzzle at the difficulty the
    /// file records; [`Error::Io`] when it cannot be read.
    pub fn load(path: &Path) -> Result<Identity> {
        let bad = |reason: &'static str| Error::BadKeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if !meta.is_file() {
            return Err(bad("not a regular file"));
        }
        if meta.len() != KEY_FILE_LEN as u64 {
            return Err(bad("wrong length (expected 48 bytes)"));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_FILE_LEN]);
        file.read_exact(&mut bytes[..])
            .map_err(|e| Error::io(path, e))?;
        if bytes[0..8] != KEY_FILE_MAGIC {
            return Err(bad("not a DeFS identity key (bad magic)"));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != KEY_FILE_VERSION {
            return Err(bad("unsupported key file version"));
        }
        let crc = u32::from_le_bytes([bytes[44], bytes[45], bytes[46], bytes[47]]);
        if crc != crc32fast::hash(&bytes[..44]) {
            return Err(bad("checksum mismatch (the file is damaged)"));
        }
        // Reserved: a file that sets it is not one this version wrote, and writing the identity
        // back would not give the same file.
        if bytes[11] != 0 {
            return Err(bad("reserved byte 11 is not zero"));
        }
        let difficulty = bytes[10];
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&bytes[12..44]);
        Identity::from_secret_bytes(&secret)
            .map_err(|_| bad("invalid secret key"))?
            .with_difficulty(difficulty)
    }

    /// This identity with `difficulty` as the puzzle difficulty it records (what its key file
    /// stores), after checking that its NodeId solves the puzzle at that difficulty.
    ///
    /// # Errors
    /// [`Error::PuzzleNotSolved`] when it does not.
    pub fn with_difficulty(mut self, difficulty: u8) -> Result<Identity> {
        self.public.check_puzzle(difficulty)?;
        self.difficulty = difficulty;
        Ok(self)
    }

    /// The 32-byte secret scalar (big-endian), e.g. to build the libp2p keypair.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(self.secret.to_bytes().as_slice());
        out
    }

    /// The public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// BLAKE3 of the compressed public key.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The puzzle difficulty this identity was created at (recorded in the key file).
    pub fn difficulty(&self) -> u8 {
        self.difficulty
    }

    /// Signs `msg` for `domain` (deterministic, RFC 6979).
    pub fn sign(&self, domain: SignDomain, msg: &[u8]) -> Signature {
        let len = tag_len(domain);
        let sig: k256::ecdsa::Signature =
            self.secret.multipart_sign(&signed_parts(domain, &len, msg));
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.to_bytes().as_slice());
        Signature(out)
    }

    fn derive(&self, info: &[u8]) -> [u8; 32] {
        let secret = self.secret_bytes();
        let hk = Hkdf::<Sha256>::new(None, &secret[..]);
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8,160-byte limit, so expand cannot fail.
        let _ = hk.expand(info, &mut out);
        out
    }

    /// The key that wraps file keys inside manifests: HKDF-SHA256(secret, info
    /// `"defs manifest wrap v1"`).
    pub fn manifest_wrap_key(&self) -> WrapKey {
        WrapKey::from_bytes(self.derive(b"defs manifest wrap v1"))
    }

    /// The key that encrypts namespace snapshots: HKDF-SHA256(secret, info `"defs snapshot v1"`).
    pub fn snapshot_key(&self) -> [u8; 32] {
        self.derive(b"defs snapshot v1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn key_file_round_trips_with_mode_0600() {
        let dir = tmp();
        let path = dir.path().join("identity.key");
        let id = Identity::create(&path, 4).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.node_id(), id.node_id());
        assert_eq!(loaded.public(), id.public());
        assert_eq!(loaded.difficulty(), 4);
        assert_eq!(*loaded.secret_bytes(), *id.secret_bytes());
        assert_eq!(loaded.manifest_wrap_key(), id.manifest_wrap_key());
        assert_ne!(*id.manifest_wrap_key().as_bytes(), id.snapshot_key());
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_refuses_to_overwrite() {
        let dir = tmp();
        let path = dir.path().join("identity.key");
        let id = Identity::create(&path, 0).unwrap();
        let err = Identity::create(&path, 0).unwrap_err();
        assert!(matches!(err, Error::KeyFileExists { .. }), "{err}");
        assert_eq!(Identity::load(&path).unwrap().node_id(), id.node_id());
    }

    #[test]
    fn group_readable_key_file_is_refused_with_chmod_hint() {
        let dir = tmp();
        let path = dir.path().join("identity.key");
        Identity::create(&path, 0).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = Identity::load(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::KeyFilePermissions { .. }), "{msg}");
            assert!(msg.contains("chmod 600"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        Identity::load(&path).unwrap();
    }

    #[test]
    fn damaged_key_files_are_refused() {
        let dir = tmp();
        let path = dir.path().join("identity.key");
        Identity::create(&path, 0).unwrap();
        let good = fs::read(&path).unwrap();
        let write = |bytes: &[u8]| {
            fs::remove_file(&path).unwrap();
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap()
                .write_all(bytes)
                .unwrap();
        };
        for (i, bytes) in [
            good[..47].to_vec(),
            [&good[..], &[0]].concat(),
            {
                let mut b = good.clone();
                b[0] ^= 1;
                b
            },
            {
                let mut b = good.clone();
                b[20] ^= 1;
                b
            },
            {
                let mut b = good.clone();
                b[8] = 9;
                b
            },
        ]
        .iter()
        .enumerate()
        {
            write(bytes);
            let err = Identity::load(&path).unwrap_err();
            assert!(matches!(err, Error::BadKeyFile { .. }), "case {i}: {err}");
        }
    }

    #[test]
    fn sign_and_verify() {
        let id = Identity::generate(0);
        let sig = id.sign(SignDomain::StoreShard, b"hello");
        id.public()
            .verify(SignDomain::StoreShard, b"hello", &sig)
            .unwrap();
        // Deterministic (RFC 6979).
        assert_eq!(sig, id.sign(SignDomain::StoreShard, b"hello"));
    }

    #[test]
    fn tampered_message_is_refused() {
        let id = Identity::generate(0);
        let sig = id.sign(SignDomain::StoreShard, b"hello");
        let err = id
            .public()
            .verify(SignDomain::StoreShard, b"hellp", &sig)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadSignature {
                    domain: "store-shard"
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn signature_from_another_domain_is_refused() {
        let id = Identity::generate(0);
        let sig = id.sign(SignDomain::StoreShard, b"shard");
        for other in [
            SignDomain::DeleteShard,
            SignDomain::RootRecord,
            SignDomain::Lookup,
            SignDomain::Heartbeat,
        ] {
            assert!(id.public().verify(other, b"shard", &sig).is_err());
        }
    }

    #[test]
    fn forged_signatures_are_refused() {
        let id = Identity::generate(0);
        let other = Identity::generate(0);
        let msg = b"delete everything";
        // Signed by someone else.
        let sig = other.sign(SignDomain::DeleteShard, msg);
        assert!(
            id.public()
                .verify(SignDomain::DeleteShard, msg, &sig)
                .is_err()
        );
        // Bit flips, zeros, all ones.
        let good = id.sign(SignDomain::DeleteShard, msg);
        for i in [0, 31, 32, 63] {
            let mut bad = good;
            bad.0[i] ^= 0x80;
            assert!(
                id.public()
                    .verify(SignDomain::DeleteShard, msg, &bad)
                    .is_err()
            );
        }
        for bad in [Signature([0; 64]), Signature([0xff; 64])] {
            assert!(
                id.public()
                    .verify(SignDomain::DeleteShard, msg, &bad)
                    .is_err()
            );
        }
    }

    #[test]
    fn public_key_parsing() {
        let id = Identity::generate(0);
        let bytes = id.public().to_bytes();
        let parsed = PublicKey::from_bytes(&bytes).unwrap();
        assert_eq!(parsed.node_id(), id.node_id());
        assert_eq!(
            id.node_id(),
            NodeId(*blake3::hash(&bytes).as_bytes()),
            "NodeId is BLAKE3 of the compressed key"
        );
        assert!(PublicKey::from_bytes(&bytes[..32]).is_err());
        let mut uncompressed = bytes;
        uncompressed[0] = 0x04;
        assert!(PublicKey::from_bytes(&uncompressed).is_err());
        assert!(matches!(
            PublicKey::from_bytes(&[0u8; 33]),
            Err(Error::BadPublicKey)
        ));
    }

    #[test]
    fn puzzle_is_solved_and_enforced() {
        let id = Identity::generate(8);
        assert!(puzzle_bits(&id.node_id()) >= 8);
        assert!(puzzle_ok(&id.node_id(), 8));
        id.public().check_puzzle(8).unwrap();
        // Find a key that does not solve a high difficulty and check it is refused.
        let weak = loop {
            let id = Identity::generate(0);
            if puzzle_bits(&id.node_id()) < 4 {
                break id;
            }
        };
        let err = weak.public().check_puzzle(4).unwrap_err();
        assert!(
            matches!(err, Error::PuzzleNotSolved { difficulty: 4, .. }),
            "{err}"
        );
        assert!(!puzzle_ok(&weak.node_id(), 4));
        assert!(puzzle_ok(&weak.node_id(), 0));
    }

    #[test]
    fn key_file_claiming_a_higher_difficulty_is_refused() {
        let dir = tmp();
        let path = dir.path().join("identity.key");
        let id = loop {
            let id = Identity::generate(0);
            if puzzle_bits(&id.node_id()) < 6 {
                break id;
            }
        };
        let mut forged = id;
        forged.difficulty = 6;
        forged.write_new(&path).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(matches!(err, Error::PuzzleNotSolved { .. }), "{err}");
    }

    #[test]
    fn puzzle_bits_counts_leading_zeros() {
        // Find NodeIds whose hash starts with known bytes by brute force is slow; instead check
        // the counting against a direct computation on a few ids.
        for i in 0..64u8 {
            let id = NodeId([i; 32]);
            let h = blake3::hash(&id.0);
            let expected = h
                .as_bytes()
                .iter()
                .map(|b| format!("{b:08b}"))
                .collect::<String>()
                .chars()
                .take_while(|c| *c == '0')
                .count();
            assert_eq!(puzzle_bits(&id) as usize, expected);
        }
    }

    /// Issue 20 (fuzzing, target `identity_file`): a key file whose reserved byte 11 was set,
    /// with a CRC32 that matches, loaded, and the identity then wrote a different file.
    #[test]
    fn r20_key_file_with_reserved_byte_set_is_refused() {
        let dir = tmp();
        let path = dir.path().join("identity.key");
        Identity::create(&path, 0).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[11] = 0x80;
        let crc = crc32fast::hash(&bytes[..44]);
        bytes[44..48].copy_from_slice(&crc.to_le_bytes());
        fs::remove_file(&path).unwrap();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(
            matches!(err, Error::BadKeyFile { reason, .. } if reason.contains("reserved")),
            "{err}"
        );
    }

    #[test]
    fn create_rejects_absurd_difficulty() {
        let dir = tmp();
        let err = Identity::create(&dir.path().join("k"), MAX_PUZZLE_DIFFICULTY + 1).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }));
    }
}
