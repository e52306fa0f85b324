//! The one AEAD of the pipeline: AES-256-GCM, through `ring`.
//!
//! `ring` won the measurement in `benches/pipeline.rs` against `aes-gcm` 0.11 (figures in
//! `docs/performance.md`, reasoning in `docs/internals.md`); the rest of the pipeline sees
//! only these two functions, so swapping the implementation touches this file only.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// Bytes of the authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// The authentication failed: wrong key, wrong associated data, or damaged bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unauthentic;

fn cipher(key: &[u8; 32]) -> LessSafeKey {
    // AES-256 takes exactly 32 bytes, which the type guarantees; the error arm is unreachable.
    match UnboundKey::new(&AES_256_GCM, key) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("a 32-byte key is a valid AES-256 key"),
    }
}

/// Encrypts `buf` in place and appends the tag. Each (key, nonce) pair must be used once.
pub(crate) fn seal_in_place(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], buf: &mut Vec<u8>) {
    let cipher = cipher(key);
    let nonce = Nonce::assume_unique_for_key(*nonce);
    // ring refuses only inputs longer than GCM's 64 GiB limit; shards are at most 64 MiB.
    match cipher.seal_in_place_separate_tag(nonce, Aad::from(aad), buf.as_mut_slice()) {
        Ok(tag) => buf.extend_from_slice(tag.as_ref()),
        Err(_) => unreachable!("shards are far below the AES-GCM length limit"),
    }
}

/// Checks the tag at the end of `buf` and decrypts in place; on success `buf` holds the
/// plaintext (the tag removed). On failure `buf`'s contents are unspecified.
pub(crate) fn open_in_place(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), Unauthentic> {
    if buf.len() < TAG_LEN {
        return Err(Unauthentic);
    }
    let cipher = cipher(key);
    let nonce = Nonce::assume_unique_for_key(*nonce);
    let plain_len = cipher
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
        .map_err(|_| Unauthentic)?
        .len();
    buf.truncate(plain_len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = [1u8; 32];
        let nonce = [2u8; 12];
        let mut buf = b"hello shard".to_vec();
        seal_in_place(&key, &nonce, b"aad", &mut buf);
        assert_eq!(buf.len(), 11 + TAG_LEN);
        let sealed = buf.clone();
        open_in_place(&key, &nonce, b"aad", &mut buf).unwrap();
        assert_eq!(buf, b"hello shard");

        let mut wrong_aad = sealed.clone();
        assert!(open_in_place(&key, &nonce, b"aaD", &mut wrong_aad).is_err());
        let mut flipped = sealed.clone();
        flipped[3] ^= 1;
        assert!(open_in_place(&key, &nonce, b"aad", &mut flipped).is_err());
        let mut short = vec![0u8; 5];
        assert!(open_in_place(&key, &nonce, b"aad", &mut short).is_err());
    }

    #[test]
    fn matches_aes_gcm_crate() {
        // The benchmark's alternative must agree byte for byte with what we ship.
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let key = [5u8; 32];
        let nonce = [6u8; 12];
        let plain = vec![0x5au8; 1000];
        let mut ours = plain.clone();
        seal_in_place(&key, &nonce, b"id", &mut ours);
        let other = aes_gcm::Aes256Gcm::new(&key.into());
        let mut theirs = plain.clone();
        let tag = other
            .encrypt_inout_detached(&nonce.into(), b"id", theirs.as_mut_slice().into())
            .unwrap();
        theirs.extend_from_slice(&tag);
        assert_eq!(ours, theirs);
    }
}
