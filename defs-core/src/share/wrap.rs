//! Wrapping a 32-byte secret for one recipient's public key (ECIES on secp256k1): an ephemeral
//! key `e`, the shared point `e·R` with the recipient's key `R`, HKDF-SHA256 over its x
//! coordinate (salt `E ‖ R`, info [`WRAP_INFO`] ‖ context) into an AES-256-GCM key and nonce,
//! and the secret sealed with the context as associated data. Only the holder of `R`'s secret
//! recomputes the shared point (`r·E`), and a wrap opens only under the context it was made for.
//!
//! Every wrap draws a fresh ephemeral key, so a derived (key, nonce) pair is used once.

use hkdf::Hkdf;
use k256::elliptic_curve::Generate;
use k256::elliptic_curve::point::AffineCoordinates;
use k256::elliptic_curve::sec1::ToSec1Point;
use k256::{NonZeroScalar, SecretKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::identity::{Identity, PublicKey};
use crate::pipeline::aead::{TAG_LEN, open_in_place, seal_in_place};

/// HKDF info prefix of a share key wrap; a wrap made under any other label never opens here.
pub const WRAP_INFO: &[u8] = b"defs share wrap v1";

/// Bytes of a wrapped secret: ephemeral public key 33 (compressed SEC1) ‖ sealed secret 32 ‖
/// tag 16.
pub const WRAPPED_LEN: usize = 33 + 32 + TAG_LEN;

/// A secret wrapped for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wrapped(pub [u8; WRAPPED_LEN]);

/// Wraps `secret` for `recipient` under `context` (bound as associated data and into the key
/// derivation).
///
/// # Errors
/// [`Error::BadPublicKey`] when the recipient's key is not a curve point (cannot happen for a
/// parsed [`PublicKey`]).
pub fn wrap(recipient: &PublicKey, context: &[u8], secret: &[u8; 32]) -> Result<Wrapped> {
    wrap_with_info(WRAP_INFO, recipient, context, secret)
}

/// Opens a secret wrapped for `identity` under `context`.
///
/// # Errors
/// [`Error::WrongKey`] (`"share key wrap"`) when the wrap was made for another key, under
/// another context or label, or was changed; [`Error::BadPublicKey`] for an ephemeral key that
/// is not a curve point.
pub fn unwrap(
    identity: &Identity,
    context: &[u8],
    wrapped: &Wrapped,
) -> Result<Zeroizing<[u8; 32]>> {
    unwrap_with_info(WRAP_INFO, identity, context, wrapped)
}

pub(crate) fn wrap_with_info(
    info: &[u8],
    recipient: &PublicKey,
    context: &[u8],
    secret: &[u8; 32],
) -> Result<Wrapped> {
    let r = k256_key(&recipient.to_bytes())?;
    let eph = SecretKey::generate();
    let e_pub = sec1(&eph.public_key());
    let shared = shared_x(&eph.to_nonzero_scalar(), &r);
    let (key, nonce) = derive(info, &shared, &e_pub, &recipient.to_bytes(), context);
    let mut buf = secret.to_vec();
    seal_in_place(&key, &nonce, context, &mut buf);
    let mut out = [0u8; WRAPPED_LEN];
    out[..33].copy_from_slice(&e_pub);
    out[33..].copy_from_slice(&buf);
    Ok(Wrapped(out))
}

pub(crate) fn unwrap_with_info(
    info: &[u8],
    identity: &Identity,
    context: &[u8],
    wrapped: &Wrapped,
) -> Result<Zeroizing<[u8; 32]>> {
    let mut e_pub = [0u8; 33];
    e_pub.copy_from_slice(&wrapped.0[..33]);
    let e = k256_key(&e_pub)?;
    let secret = identity.secret_bytes();
    let scalar = SecretKey::from_slice(&secret[..])
        .map_err(|_| Error::BadPublicKey)?
        .to_nonzero_scalar();
    let shared = shared_x(&scalar, &e);
    let (key, nonce) = derive(
        info,
        &shared,
        &e_pub,
        &identity.public().to_bytes(),
        context,
    );
    let mut buf = wrapped.0[33..].to_vec();
    open_in_place(&key, &nonce, context, &mut buf).map_err(|_| Error::WrongKey {
        what: "share key wrap",
    })?;
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&buf);
    buf.iter_mut().for_each(|b| *b = 0);
    Ok(out)
}

fn k256_key(bytes: &[u8; 33]) -> Result<k256::PublicKey> {
    k256::PublicKey::from_sec1_bytes(bytes).map_err(|_| Error::BadPublicKey)
}

fn sec1(key: &k256::PublicKey) -> [u8; 33] {
    let point = key.to_sec1_point(true);
    let mut out = [0u8; 33];
    out.copy_from_slice(point.as_bytes());
    out
}

/// The x coordinate of `scalar · point`.
fn shared_x(scalar: &NonZeroScalar, point: &k256::PublicKey) -> Zeroizing<[u8; 32]> {
    let p = (point.to_projective() * **scalar).to_affine();
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&p.x());
    out
}

/// HKDF-SHA256(ikm = shared x, salt = E ‖ R, info = label ‖ context) → key 32 ‖ nonce 12.
fn derive(
    info: &[u8],
    shared: &[u8; 32],
    e_pub: &[u8; 33],
    r_pub: &[u8; 33],
    context: &[u8],
) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let mut salt = [0u8; 66];
    salt[..33].copy_from_slice(e_pub);
    salt[33..].copy_from_slice(r_pub);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut okm = Zeroizing::new([0u8; 44]);
    // 44 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
    let _ = hk.expand_multi_info(&[info, context], okm.as_mut_slice());
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (key, nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity::generate(0)
    }

    #[test]
    fn wrap_round_trips_for_its_recipient() {
        let bob = id();
        let secret = [7u8; 32];
        let w = wrap(bob.public(), b"ctx", &secret).unwrap();
        assert_eq!(*unwrap(&bob, b"ctx", &w).unwrap(), secret);
        // A fresh ephemeral key each time: two wraps of one secret differ.
        assert_ne!(wrap(bob.public(), b"ctx", &secret).unwrap(), w);
    }

    #[test]
    fn another_recipient_cannot_unwrap() {
        let (bob, eve) = (id(), id());
        let w = wrap(bob.public(), b"ctx", &[1; 32]).unwrap();
        assert!(matches!(
            unwrap(&eve, b"ctx", &w),
            Err(Error::WrongKey {
                what: "share key wrap"
            })
        ));
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let bob = id();
        let w = wrap(bob.public(), b"ctx", &[2; 32]).unwrap();
        for i in 0..WRAPPED_LEN {
            let mut t = w;
            t.0[i] ^= 0x01;
            assert!(
                unwrap(&bob, b"ctx", &t).is_err(),
                "byte {i} flipped was accepted"
            );
        }
    }

    #[test]
    fn a_wrap_opens_only_under_its_context_and_label() {
        let bob = id();
        let w = wrap(bob.public(), b"record A", &[3; 32]).unwrap();
        assert!(unwrap(&bob, b"record B", &w).is_err());
        let other =
            wrap_with_info(b"defs other wrap v1", bob.public(), b"record A", &[3; 32]).unwrap();
        assert!(unwrap(&bob, b"record A", &other).is_err());
        assert!(unwrap_with_info(b"defs other wrap v1", &bob, b"record A", &other).is_ok());
    }
}
