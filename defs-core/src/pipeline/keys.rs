//! Keys of the pipeline: the per-file-version [`FileKey`], the owner's [`WrapKey`] that seals
//! file keys into manifests, and the derivation of each shard's own AES key and nonce.
//!
//! Shard key = HKDF-SHA256(ikm = file key, salt = VersionId,
//! info = `"defs shard v1" ‖ segment u64 LE ‖ index u16 LE`) → 32-byte key ‖ 12-byte nonce.
//! Every shard has its own key, used exactly once, so the derived nonce is safe, and a shard
//! rebuilt by repair is byte-identical to the lost one (same id).

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::types::VersionId;

/// The HKDF info prefix of shard keys (see `docs/internals.md`, "Keys and ids").
const SHARD_INFO: &[u8] = b"defs shard v1";

/// The HKDF info of the key that encrypts a manifest body (derived from the file key, so the
/// file key itself is only ever HKDF input).
const MANIFEST_BODY_INFO: &[u8] = b"defs manifest body v1";

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| Error::Random {
        reason: e.to_string(),
    })?;
    Ok(out)
}

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name([u8; 32]);

        impl $name {
            /// A fresh key from the operating system's random number generator.
            pub fn random() -> Result<Self> {
                random_bytes().map(Self)
            }

            /// The key with these bytes.
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The key's bytes (secret: do not log them).
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<secret>)"))
            }
        }
    };
}

secret_key!(
    /// The random key of one file version. Every shard key of the version and the manifest
    /// body's key are derived from it; the namespace keeps it next to the [`FileId`](crate::types::FileId).
    FileKey
);
secret_key!(
    /// The owner's key that wraps file keys inside sealed manifests (the identity derives it).
    WrapKey
);

/// A fresh random [`VersionId`] for a new file version.
pub fn new_version_id() -> Result<VersionId> {
    random_bytes().map(VersionId)
}

/// The AES-256 key and the 96-bit nonce of shard `index` of `segment` of a file version.
pub fn shard_key(
    file_key: &FileKey,
    version: VersionId,
    segment: u64,
    index: u16,
) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let mut info = [0u8; SHARD_INFO.len() + 8 + 2];
    info[..SHARD_INFO.len()].copy_from_slice(SHARD_INFO);
    info[SHARD_INFO.len()..SHARD_INFO.len() + 8].copy_from_slice(&segment.to_le_bytes());
    info[SHARD_INFO.len() + 8..].copy_from_slice(&index.to_le_bytes());
    let mut okm = Zeroizing::new([0u8; 44]);
    let hk = Hkdf::<Sha256>::new(Some(&version.0), file_key.as_bytes());
    // 44 bytes is far below HKDF-SHA256's limit of 255 × 32, so expand cannot fail.
    let _ = hk.expand(&info, okm.as_mut_slice());
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (key, nonce)
}

/// The key that encrypts a manifest body sealed with this file key.
pub(crate) fn manifest_body_key(file_key: &FileKey) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    let hk = Hkdf::<Sha256>::new(None, file_key.as_bytes());
    let _ = hk.expand(MANIFEST_BODY_INFO, key.as_mut_slice());
    key
}

/// Random bytes for nonces of the manifest envelope.
pub(crate) fn random_nonce() -> Result<[u8; 12]> {
    random_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_keys_differ_by_version_segment_and_index() {
        let fk = FileKey::from_bytes([7; 32]);
        let v = VersionId([1; 16]);
        let base = shard_key(&fk, v, 0, 0);
        assert_ne!(*base.0, *shard_key(&fk, v, 1, 0).0);
        assert_ne!(*base.0, *shard_key(&fk, v, 0, 1).0);
        assert_ne!(*base.0, *shard_key(&fk, VersionId([2; 16]), 0, 0).0);
        assert_ne!(base.1, shard_key(&fk, v, 0, 1).1);
        assert_eq!(*base.0, *shard_key(&fk, v, 0, 0).0, "deterministic");
    }

    #[test]
    fn shard_key_matches_hkdf_sha256_spec() {
        // Recompute with the written-out info layout.
        let fk = FileKey::from_bytes([3; 32]);
        let v = VersionId([9; 16]);
        let mut info = b"defs shard v1".to_vec();
        info.extend_from_slice(&5u64.to_le_bytes());
        info.extend_from_slice(&2u16.to_le_bytes());
        let mut okm = [0u8; 44];
        Hkdf::<Sha256>::new(Some(&v.0), &[3; 32])
            .expand(&info, &mut okm)
            .unwrap();
        let (k, n) = shard_key(&fk, v, 5, 2);
        assert_eq!(&okm[..32], &k[..]);
        assert_eq!(&okm[32..], &n[..]);
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let fk = FileKey::from_bytes([0xab; 32]);
        assert!(!format!("{fk:?}").contains("ab"));
        assert_ne!(FileKey::random().unwrap(), FileKey::random().unwrap());
    }
}
