//! Key backup: the identity's secret split into Shamir shares ([`split`], `defs key split`) and
//! rebuilt from any threshold of them ([`combine`], `defs key combine`). Owns the share text
//! format (`docs/format.md`, section "Identity key shares"). Pure: no files, no network; the only
//! outside input is the operating system's randomness in [`split`].
//!
//! The 32-byte secret scalar is shared over the secp256k1 scalar field (k256's own `Scalar`) with
//! vsss-rs: a random polynomial of degree T−1 whose constant term is the secret; share i is
//! (i, f(i)) for i = 1..=N. Any T shares determine f and so the secret; T−1 shares say nothing
//! about it. Sharing the scalar in its own field keeps every combination a valid field element,
//! and the rebuilt key is checked against the identity the shares name before anyone uses it.
//!
//! A share is one line of printable text, one shell word (no spaces), e.g.
//!
//! ```text
//! DEFSKS1-7F3A9C21-QX4M-3OF5-S2-D10-8Z1K-…-(13 groups of 4)-W9QD-4T7A
//! ```
//!
//! tag and version, the first 4 bytes of the node id (hex, as `defs id` prints it), a random
//! split code (shares of two splits never mix), threshold OF total, the share number, the puzzle
//! difficulty the key file records, the share value (Crockford base32) and a 40-bit checksum
//! over all of it. Reading is forgiving where a person copying by hand slips harmlessly (case,
//! `O` for `0`, `I`/`L` for `1`, spaces or dashes anywhere between groups) and strict everywhere
//! else: any other change to a share fails its checksum.

use std::convert::Infallible;
use std::fmt;

use k256::Scalar;
use k256::elliptic_curve::PrimeField;
use vsss_rs::{DefaultShare, IdentifierPrimeField, ReadableShareSet};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::types::{NodeId, from_hex, to_hex};

/// The fewest shares a split may require: with one, every share would be the key itself (copy
/// `identity.key` instead), and vsss-rs refuses it.
pub const MIN_THRESHOLD: u8 = 2;

/// The most shares one split may have: the share number is one byte. Far more than anyone hands
/// out.
pub const MAX_SHARES: u8 = 255;

/// The longest text [`KeyShare::parse`] looks at, in bytes. A canonical share is 107 characters;
/// this leaves room for generous spacing and refuses pasted essays before any work.
pub const MAX_SHARE_TEXT: usize = 512;

/// First token of every share: "DeFS key share", format version 1.
const TAG: &str = "DEFSKS1";
/// What every older or newer share starts with, to tell "another version" from "not a share".
const TAG_FAMILY: &str = "DEFSKS";

/// Crockford's base32 alphabet: digits and upper-case letters without I, L, O and U, so that
/// nothing a hand writes is ambiguous.
const BASE32: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Characters of the share value: 32 bytes = 256 bits in 5-bit symbols, the last 4 pad bits 0.
const VALUE_CHARS: usize = 52;
/// Characters of the checksum: 40 bits.
const CHECK_CHARS: usize = 8;
/// Characters of the split code: 20 random bits.
const SPLIT_CHARS: usize = 4;
/// Bits of the split code.
const SPLIT_BITS: u32 = 20;
/// The value and checksum are printed in groups of this many characters.
const GROUP: usize = 4;

/// BLAKE3 key-derivation context of the checksum.
const CHECK_CONTEXT: &str = "DeFS key share v1 checksum";
/// BLAKE3 key-derivation context of the random stream the polynomial is drawn from.
const RNG_CONTEXT: &str = "DeFS key share v1 coefficients";

/// One Shamir share of an identity, as written on paper. Its [`Display`](fmt::Display) is the
/// canonical text; [`KeyShare::parse`] reads it back.
///
/// <div class="warning">The text carries the share's secret value: print it only where the user
/// asked for shares, never into a log. <code>Debug</code> leaves the value out.</div>
#[derive(Clone, PartialEq, Eq)]
pub struct KeyShare {
    /// The first 4 bytes of the node id of the identity that was split.
    node_prefix: [u8; 4],
    /// Random code of the split (20 bits), the same on every share of one split.
    split: u32,
    /// Shares needed to rebuild.
    threshold: u8,
    /// Shares made.
    total: u8,
    /// This share's number, 1..=total: the x of the point.
    index: u8,
    /// The puzzle difficulty the key file records (not secret; it makes the file byte-identical).
    difficulty: u8,
    /// f(index), a canonical big-endian scalar.
    value: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the share value.
        f.debug_struct("KeyShare")
            .field("identity", &self.identity_tag())
            .field("split", &self.split_code())
            .field("index", &self.index)
            .field("threshold", &self.threshold)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self.body();
        let check = encode_base32(&checksum(&body), CHECK_CHARS);
        write!(f, "{body}-{}", grouped(&check))
    }
}

impl KeyShare {
    /// The identity's short tag: the first 8 hex digits of its node id, upper case.
    pub fn identity_tag(&self) -> String {
        to_hex(&self.node_prefix).to_ascii_uppercase()
    }

    /// The split code (4 base32 characters), the same on every share of one split.
    pub fn split_code(&self) -> String {
        (0..SPLIT_CHARS)
            .map(|i| {
                let shift = SPLIT_BITS as usize - 5 * (i + 1);
                char::from(BASE32[(self.split as usize >> shift) & 31])
            })
            .collect()
    }

    /// This share's number (1..=[`total`](Self::total)).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// How many shares rebuild the key.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// How many shares the split made.
    pub fn total(&self) -> u8 {
        self.total
    }

    /// Everything up to the checksum, in canonical form.
    fn body(&self) -> String {
        let value = encode_base32(&self.value[..], VALUE_CHARS);
        format!(
            "{TAG}-{}-{}-{}OF{}-S{}-D{}-{}",
            self.identity_tag(),
            self.split_code(),
            self.threshold,
            self.total,
            self.index,
            self.difficulty,
            grouped(&value)
        )
    }

    /// A short description for messages: "S2 (identity 7F3A9C21, split QX4M, 3 of 5)".
    fn describe(&self) -> String {
        format!(
            "S{} (identity {}, split {}, {} of {})",
            self.index,
            self.identity_tag(),
            self.split_code(),
            self.threshold,
            self.total
        )
    }

    /// True when `other` comes from the same split of the same identity.
    fn same_split(&self, other: &KeyShare) -> bool {
        self.node_prefix == other.node_prefix
            && self.split == other.split
            && self.threshold == other.threshold
            && self.total == other.total
            && self.difficulty == other.difficulty
    }

    /// Reads a share from its text. Case does not matter, `O` reads as `0` and `I`/`L` as `1`
    /// in the base32 parts, and any run of dashes and white space separates groups.
    ///
    /// # Errors
    /// [`Error::BadKeyShare`] naming what is wrong: not a share, another format version, a field
    /// that does not parse, a checksum that does not match (a typo or an altered share), or
    /// numbers that no split makes (threshold above total, share number out of range).
    pub fn parse(text: &str) -> Result<KeyShare> {
        let bad = |reason: String| Error::BadKeyShare { reason };
        if text.len() > MAX_SHARE_TEXT {
            return Err(bad(format!(
                "{} bytes long; a share is about 107 characters (the limit is {MAX_SHARE_TEXT})",
                text.len()
            )));
        }
        let mut tokens = text
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|t| !t.is_empty());
        let mut next = |field: &str| {
            tokens
                .next()
                .map(str::to_ascii_uppercase)
                .ok_or_else(|| bad(format!("it ends before its {field}")))
        };
        let tag = next("format tag")?;
        if tag != TAG {
            return Err(bad(if tag.starts_with(TAG_FAMILY) {
                format!("format {tag} is not known to this DeFS, which reads {TAG}")
            } else {
                format!("a DeFS key share starts with {TAG}-")
            }));
        }
        let identity = next("identity")?;
        let node_prefix = from_hex::<4>(&identity)
            .ok_or_else(|| bad(format!("identity {identity:?} is not 8 hex digits")))?;
        let split_text = next("split code")?;
        let split = decode_split(&split_text).ok_or_else(|| {
            bad(format!(
                "split code {split_text:?} is not 4 base32 characters"
            ))
        })?;
        let t_of_n = next("threshold")?;
        let (threshold, total) = t_of_n
            .split_once("OF")
            .and_then(|(t, n)| Some((decimal(t)?, decimal(n)?)))
            .ok_or_else(|| bad(format!("{t_of_n:?} is not THRESHOLD OF TOTAL, e.g. 3OF5")))?;
        let index = next("share number")?;
        let index = index
            .strip_prefix('S')
            .and_then(decimal)
            .ok_or_else(|| bad(format!("{index:?} is not a share number, e.g. S2")))?;
        let difficulty = next("difficulty")?;
        let difficulty = difficulty
            .strip_prefix('D')
            .and_then(decimal)
            .ok_or_else(|| bad(format!("{difficulty:?} is not a difficulty, e.g. D10")))?;
        let rest: String = tokens.map(str::to_ascii_uppercase).collect();
        if let Some(c) = rest.chars().find(|c| !c.is_ascii_alphanumeric()) {
            return Err(bad(format!("{c:?} is not a base32 character")));
        }
        if rest.len() != VALUE_CHARS + CHECK_CHARS {
            return Err(bad(format!(
                "its value and checksum have {} characters, not {} (a group is missing or extra)",
                rest.len(),
                VALUE_CHARS + CHECK_CHARS
            )));
        }
        let (value_text, check_text) = rest.split_at(VALUE_CHARS);
        let value = decode_base32::<32>(value_text, VALUE_CHARS)
            .map_err(|c| bad(format!("{c:?} in its value is not a base32 character")))?;
        let check = decode_base32::<5>(check_text, CHECK_CHARS)
            .map_err(|c| bad(format!("{c:?} in its checksum is not a base32 character")))?;
        let share = KeyShare {
            node_prefix,
            split,
            threshold,
            total,
            index,
            difficulty,
            value: Zeroizing::new(value),
        };
        if checksum(&share.body()) != check {
            return Err(bad(
                "its checksum does not match: a character was copied wrong or the share was altered"
                    .to_owned(),
            ));
        }
        // A good checksum with impossible numbers: made by something other than `defs key split`.
        if threshold < MIN_THRESHOLD || threshold > total || index == 0 || index > total {
            return Err(bad(format!(
                "share S{index} of a {threshold}-of-{total} split is impossible"
            )));
        }
        if share.scalar().is_none() {
            return Err(bad(
                "its value is not below the secp256k1 group order".to_owned()
            ));
        }
        Ok(share)
    }

    /// The share value as a field element; `None` when not canonical.
    fn scalar(&self) -> Option<Scalar> {
        Option::from(Scalar::from_repr((*self.value).into()))
    }
}

/// True when `text` starts like a key share of any format version (whether or not it reads):
/// to tell a mistyped share from, say, a file name.
pub fn looks_like_share(text: &str) -> bool {
    text.trim_start()
        .get(..TAG_FAMILY.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(TAG_FAMILY))
}

/// The shares of one split, as vsss-rs sees them: x and y both secp256k1 scalars.
type FieldShare = DefaultShare<IdentifierPrimeField<Scalar>, IdentifierPrimeField<Scalar>>;

/// Splits `identity`'s secret into `total` shares, any `threshold` of which rebuild it.
///
/// # Errors
/// [`Error::InvalidArgument`] when `threshold` is below [`MIN_THRESHOLD`] or above `total`;
/// [`Error::Random`] when the operating system gives no randomness.
pub fn split(identity: &Identity, threshold: u8, total: u8) -> Result<Vec<KeyShare>> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| Error::Random {
        reason: e.to_string(),
    })?;
    split_seeded(identity, threshold, total, &seed)
}

/// [`split`] with its randomness drawn from `seed` (a stream of BLAKE3 in XOF mode): the same
/// seed gives the same shares.
fn split_seeded(
    identity: &Identity,
    threshold: u8,
    total: u8,
    seed: &[u8; 32],
) -> Result<Vec<KeyShare>> {
    if threshold < MIN_THRESHOLD {
        return Err(Error::InvalidArgument {
            what: format!(
                "a threshold of {threshold}: at least {MIN_THRESHOLD} shares must be needed \
                 (for a plain copy, copy identity.key)"
            ),
        });
    }
    if threshold > total {
        return Err(Error::InvalidArgument {
            what: format!("a threshold of {threshold} above the {total} shares made"),
        });
    }
    let mut rng = SeededRng::new(seed);
    let mut split_bytes = [0u8; 4];
    rand_core::Rng::fill_bytes(&mut rng, &mut split_bytes);
    let split = u32::from_be_bytes(split_bytes) >> (32 - SPLIT_BITS);
    let secret = identity.secret_bytes();
    let secret =
        Option::<Scalar>::from(Scalar::from_repr((*secret).into())).ok_or(Error::BadPublicKey)?;
    let shares = vsss_rs::shamir::split_secret::<FieldShare>(
        usize::from(threshold),
        usize::from(total),
        &IdentifierPrimeField(secret),
        &mut rng,
    )
    .map_err(|e| Error::InvalidArgument {
        what: format!("Shamir split: {e}"),
    })?;
    let node_prefix = node_prefix(&identity.node_id());
    let mut out = Vec::with_capacity(shares.len());
    // vsss-rs numbers the shares 1, 2, … in order (its default participant ids); the x of each
    // is checked, not assumed, because a share's number is what combining relies on.
    for (index, share) in (1..=total).zip(&shares) {
        if share.identifier.0 != Scalar::from(u64::from(index)) {
            return Err(Error::InvalidArgument {
                what: format!("Shamir split numbered share {index} differently"),
            });
        }
        let mut value = Zeroizing::new([0u8; 32]);
        value.copy_from_slice(&share.value.0.to_repr());
        out.push(KeyShare {
            node_prefix,
            split,
            threshold,
            total,
            index,
            difficulty: identity.difficulty(),
            value,
        });
    }
    Ok(out)
}

/// Rebuilds the identity from shares of one split: at least its threshold of them, distinct, in
/// any order. The rebuilt key is checked against the identity the shares name (node id prefix
/// and work puzzle) before it is returned.
///
/// # Errors
/// [`Error::MixedKeyShares`] for shares of different identities or splits;
/// [`Error::DuplicateKeyShare`] for a share number given twice; [`Error::TooFewKeyShares`] for
/// fewer distinct shares than the threshold; [`Error::KeyShareMismatch`] when the shares combine
/// to some other key (a share altered so that its checksum still matches).
pub fn combine(shares: &[KeyShare]) -> Result<Identity> {
    let Some(first) = shares.first() else {
        return Err(Error::TooFewKeyShares {
            have: 0,
            need: MIN_THRESHOLD,
        });
    };
    if let Some(other) = shares.iter().find(|s| !first.same_split(s)) {
        return Err(Error::MixedKeyShares {
            first: first.describe(),
            other: other.describe(),
        });
    }
    let mut seen = [false; 256];
    for share in shares {
        let slot = &mut seen[usize::from(share.index)];
        if *slot {
            return Err(Error::DuplicateKeyShare { index: share.index });
        }
        *slot = true;
    }
    if shares.len() < usize::from(first.threshold) {
        return Err(Error::TooFewKeyShares {
            have: shares.len(),
            need: first.threshold,
        });
    }
    let mut points = Vec::with_capacity(shares.len());
    for share in shares {
        // parse() refused non-canonical values; a share built otherwise is refused here.
        let y = share.scalar().ok_or_else(|| Error::BadKeyShare {
            reason: format!("share S{} has a value out of range", share.index),
        })?;
        points.push(FieldShare {
            identifier: IdentifierPrimeField(Scalar::from(u64::from(share.index))),
            value: IdentifierPrimeField(y),
        });
    }
    let secret = points.combine().map_err(|e| Error::InvalidArgument {
        what: format!("Shamir combine: {e}"),
    })?;
    let mut bytes = Zeroizing::new([0u8; 32]);
    bytes.copy_from_slice(&secret.0.to_repr());
    let mismatch = |found: Option<NodeId>| Error::KeyShareMismatch {
        expected: first.identity_tag(),
        found: found.map_or_else(|| "no valid key".to_owned(), |id| id.to_hex()),
    };
    let identity = Identity::from_secret_bytes(&bytes).map_err(|_| mismatch(None))?;
    if node_prefix(&identity.node_id()) != first.node_prefix {
        return Err(mismatch(Some(identity.node_id())));
    }
    identity.with_difficulty(first.difficulty)
}

/// The first 4 bytes of a node id: the identity tag shares carry.
fn node_prefix(id: &NodeId) -> [u8; 4] {
    [id.0[0], id.0[1], id.0[2], id.0[3]]
}

/// The 40-bit checksum of a share's canonical body.
fn checksum(body: &str) -> [u8; 5] {
    let mut hasher = blake3::Hasher::new_derive_key(CHECK_CONTEXT);
    hasher.update(body.as_bytes());
    let hash = hasher.finalize();
    let mut out = [0u8; 5];
    out.copy_from_slice(&hash.as_bytes()[..5]);
    out
}

/// Inserts a dash after every [`GROUP`] characters.
fn grouped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / GROUP);
    for (i, c) in text.chars().enumerate() {
        if i > 0 && i % GROUP == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// A decimal number 0..=255 written with digits only.
fn decimal(text: &str) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `bytes` as `chars` base32 symbols, most significant bit first; the bits past the end of
/// `bytes` are zero.
fn encode_base32(bytes: &[u8], chars: usize) -> String {
    let mut out = String::with_capacity(chars);
    for i in 0..chars {
        let mut symbol = 0usize;
        for bit in i * 5..i * 5 + 5 {
            let set = bytes
                .get(bit / 8)
                .is_some_and(|b| b & (0x80 >> (bit % 8)) != 0);
            symbol = (symbol << 1) | usize::from(set);
        }
        out.push(char::from(BASE32[symbol]));
    }
    out
}

/// The value of one base32 symbol, reading `O` as 0 and `I`/`L` as 1 (upper case only: callers
/// upper-case first).
fn base32_value(c: u8) -> Option<u8> {
    let c = match c {
        b'O' => b'0',
        b'I' | b'L' => b'1',
        c => c,
    };
    BASE32
        .iter()
        .position(|&s| s == c)
        .and_then(|p| u8::try_from(p).ok())
}

/// Decodes exactly `chars` base32 symbols into `N` bytes; the pad bits past `N` bytes must be
/// zero (otherwise two texts would mean one share). `Err` carries the offending character.
fn decode_base32<const N: usize>(text: &str, chars: usize) -> Result<[u8; N], char> {
    if text.len() != chars {
        return Err(text.chars().next().unwrap_or(' '));
    }
    let mut out = [0u8; N];
    for (i, c) in text.bytes().enumerate() {
        let symbol = base32_value(c).ok_or(char::from(c))?;
        for j in 0..5 {
            let bit = i * 5 + j;
            let set = symbol & (0x10 >> j) != 0;
            match out.get_mut(bit / 8) {
                Some(byte) if set => *byte |= 0x80 >> (bit % 8),
                Some(_) => {}
                None if set => return Err(char::from(c)),
                None => {}
            }
        }
    }
    Ok(out)
}

/// Decodes a split code: 4 base32 symbols, 20 bits.
fn decode_split(text: &str) -> Option<u32> {
    if text.len() != SPLIT_CHARS {
        return None;
    }
    text.bytes().try_fold(0u32, |acc, c| {
        base32_value(c).map(|v| (acc << 5) | u32::from(v))
    })
}

/// A cryptographic random stream: BLAKE3 in XOF mode keyed by a 32-byte seed from the operating
/// system. Drawing the seed first (fallibly) keeps vsss-rs's infallible RNG interface from ever
/// having to panic on an OS failure.
struct SeededRng(blake3::OutputReader);

impl SeededRng {
    fn new(seed: &[u8; 32]) -> SeededRng {
        let mut hasher = blake3::Hasher::new_derive_key(RNG_CONTEXT);
        hasher.update(seed);
        SeededRng(hasher.finalize_xof())
    }
}

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for SeededRng {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn identity() -> Identity {
        Identity::generate(4)
    }

    /// Every `k`-element subset of `0..n`.
    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize == k {
                out.push((0..n).filter(|i| mask & (1 << i) != 0).collect());
            }
        }
        out
    }

    fn pick(shares: &[KeyShare], which: &[usize]) -> Vec<KeyShare> {
        which.iter().map(|&i| shares[i].clone()).collect()
    }

    #[test]
    fn every_three_of_five_rebuild_the_same_key() {
        let id = identity();
        let shares = split(&id, 3, 5).unwrap();
        assert_eq!(shares.len(), 5);
        let sets = subsets(5, 3);
        assert_eq!(sets.len(), 10);
        for set in sets {
            let mut chosen = pick(&shares, &set);
            // Order does not matter.
            chosen.reverse();
            let back = combine(&chosen).unwrap();
            assert_eq!(*back.secret_bytes(), *id.secret_bytes(), "{set:?}");
            assert_eq!(back.node_id(), id.node_id());
            assert_eq!(back.difficulty(), id.difficulty());
        }
        // More than the threshold works too.
        assert_eq!(combine(&shares).unwrap().node_id(), id.node_id());
        for set in subsets(5, 4) {
            let back = combine(&pick(&shares, &set)).unwrap();
            assert_eq!(*back.secret_bytes(), *id.secret_bytes());
        }
    }

    #[test]
    fn fewer_than_the_threshold_is_refused() {
        let shares = split(&identity(), 3, 5).unwrap();
        for set in subsets(5, 2).into_iter().chain(subsets(5, 1)) {
            let err = combine(&pick(&shares, &set)).unwrap_err();
            assert!(
                matches!(err, Error::TooFewKeyShares { need: 3, have } if have == set.len()),
                "{err}"
            );
        }
        let err = combine(&[]).unwrap_err();
        assert!(
            matches!(err, Error::TooFewKeyShares { have: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn two_of_two_and_n_of_n_work_and_thresholds_below_two_are_refused() {
        let id = identity();
        let two = split(&id, 2, 2).unwrap();
        assert_eq!(combine(&two).unwrap().node_id(), id.node_id());
        let all = split(&id, 7, 7).unwrap();
        assert_eq!(combine(&all).unwrap().node_id(), id.node_id());
        for (t, n) in [(0, 3), (1, 3), (4, 3)] {
            let err = split(&id, t, n).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        }
        let many = split(&id, 3, MAX_SHARES).unwrap();
        assert_eq!(many.last().unwrap().index(), 255);
        let back = combine(&[many[254].clone(), many[0].clone(), many[100].clone()]).unwrap();
        assert_eq!(back.node_id(), id.node_id());
    }

    #[test]
    fn text_round_trips_and_reads_forgivingly() {
        let id = identity();
        for share in split(&id, 3, 5).unwrap() {
            let text = share.to_string();
            assert!(
                text.is_ascii() && !text.contains(char::is_whitespace),
                "{text}"
            );
            assert!(text.starts_with("DEFSKS1-"), "{text}");
            assert_eq!(text.len(), 107, "{text}");
            assert!(text.contains(&id.node_id().to_hex()[..8].to_ascii_uppercase()));
            assert_eq!(KeyShare::parse(&text).unwrap(), share);
            // What a person copying by hand may do: lower case, spaces for dashes, O for 0 and
            // l for 1 in the base32 groups, a trailing newline.
            let cut = text.match_indices('-').nth(5).unwrap().0;
            let (head, tail) = text.split_at(cut);
            let sloppy = format!(
                "{}{}\n",
                head.to_ascii_lowercase(),
                tail.to_ascii_lowercase()
                    .replace('-', "  ")
                    .replace('0', "o")
                    .replace('1', "l")
            );
            assert_eq!(KeyShare::parse(&sloppy).unwrap(), share, "{sloppy}");
            let regrouped: String = text.split('-').collect::<Vec<_>>().join(" ");
            assert_eq!(KeyShare::parse(&regrouped).unwrap(), share);
        }
    }

    #[test]
    fn every_single_character_change_is_refused_or_means_the_same_share() {
        let id = identity();
        let share = split(&id, 3, 5).unwrap().remove(1);
        let text = share.to_string();
        let candidates: Vec<char> = ('0'..='9')
            .chain('A'..='Z')
            .chain('a'..='z')
            .chain("-_ +/.#".chars())
            .collect();
        let mut refused = 0;
        for (pos, original) in text.char_indices() {
            for &c in &candidates {
                if c == original {
                    continue;
                }
                let mut altered = text.clone();
                altered.replace_range(pos..pos + 1, &c.to_string());
                match KeyShare::parse(&altered) {
                    // Only a synonym may pass: a case change, O/0, I/L/1, a separator.
                    Ok(parsed) => assert_eq!(parsed, share, "{altered} read as another share"),
                    Err(Error::BadKeyShare { .. }) => refused += 1,
                    Err(e) => panic!("{altered}: unexpected {e}"),
                }
            }
        }
        assert!(refused > text.len() * 50, "{refused}");
        // Dropping or doubling any character is refused too.
        for (pos, _) in text.char_indices() {
            let mut dropped = text.clone();
            dropped.remove(pos);
            if let Ok(parsed) = KeyShare::parse(&dropped) {
                assert_eq!(parsed, share, "{dropped}");
            }
        }
    }

    #[test]
    fn a_checksum_valid_but_altered_value_is_caught_by_the_identity_check() {
        // Someone who recomputes the checksum (not a typo) still cannot slip in another value:
        // the combined key does not match the identity the shares name.
        let id = identity();
        let mut shares = split(&id, 3, 5).unwrap();
        shares[0].value[31] ^= 1;
        let err = combine(&shares[..3]).unwrap_err();
        assert!(matches!(err, Error::KeyShareMismatch { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&id.node_id().to_hex()[..8].to_ascii_uppercase())
        );
    }

    #[test]
    fn shares_of_two_splits_or_two_identities_do_not_mix() {
        let id = identity();
        // Two splits share a split code with probability 2^-20; fixed seeds keep the test exact.
        let a = split_seeded(&id, 3, 5, &[1; 32]).unwrap();
        let b = split_seeded(&id, 3, 5, &[2; 32]).unwrap();
        assert_ne!(a[0].split_code(), b[0].split_code());
        let err = combine(&[a[0].clone(), a[1].clone(), b[2].clone()]).unwrap_err();
        assert!(matches!(err, Error::MixedKeyShares { .. }), "{err}");
        assert!(err.to_string().contains(&b[0].split_code()), "{err}");

        let other = split(&identity(), 3, 5).unwrap();
        let err = combine(&[a[0].clone(), other[1].clone(), a[2].clone()]).unwrap_err();
        assert!(matches!(err, Error::MixedKeyShares { .. }), "{err}");
        assert!(err.to_string().contains(&other[0].identity_tag()), "{err}");

        // A different threshold on the same identity is another split too.
        let c = split(&id, 2, 5).unwrap();
        let err = combine(&[a[0].clone(), c[1].clone(), a[2].clone()]).unwrap_err();
        assert!(matches!(err, Error::MixedKeyShares { .. }), "{err}");
    }

    #[test]
    fn a_share_given_twice_is_refused() {
        let shares = split(&identity(), 3, 5).unwrap();
        let err = combine(&[shares[0].clone(), shares[3].clone(), shares[0].clone()]).unwrap_err();
        assert!(
            matches!(err, Error::DuplicateKeyShare { index: 1 }),
            "{err}"
        );
        // Even with enough other shares: a duplicate is a sign of a mix-up, not ignored.
        let mut four = shares[..3].to_vec();
        four.push(shares[2].clone());
        let err = combine(&four).unwrap_err();
        assert!(
            matches!(err, Error::DuplicateKeyShare { index: 3 }),
            "{err}"
        );
    }

    #[test]
    fn the_rebuilt_key_file_is_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("identity.key");
        let id = Identity::create(&original, 6).unwrap();
        let shares = split(&Identity::load(&original).unwrap(), 2, 3).unwrap();
        let back = combine(&shares[1..]).unwrap();
        assert_eq!(back.difficulty(), 6);
        let rebuilt = dir.path().join("rebuilt.key");
        back.write_new(&rebuilt).unwrap();
        assert_eq!(
            std::fs::read(&original).unwrap(),
            std::fs::read(&rebuilt).unwrap()
        );
        assert_eq!(Identity::load(&rebuilt).unwrap().node_id(), id.node_id());
    }

    #[test]
    fn the_same_seed_gives_the_same_shares_and_another_seed_other_ones() {
        let id = identity();
        let a = split_seeded(&id, 3, 5, &[7; 32]).unwrap();
        let b = split_seeded(&id, 3, 5, &[7; 32]).unwrap();
        let c = split_seeded(&id, 3, 5, &[8; 32]).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).all(|(x, y)| x.value != y.value));
    }

    #[test]
    fn impossible_numbers_with_a_good_checksum_are_refused() {
        let share = split(&identity(), 3, 5).unwrap().remove(0);
        for (threshold, total, index) in [(6, 5, 1), (1, 5, 1), (3, 5, 0), (3, 5, 6)] {
            let forged = KeyShare {
                threshold,
                total,
                index,
                ..share.clone()
            };
            let err = KeyShare::parse(&forged.to_string()).unwrap_err();
            assert!(matches!(err, Error::BadKeyShare { .. }), "{err}");
        }
        let forged = KeyShare {
            value: Zeroizing::new([0xff; 32]),
            ..share.clone()
        };
        let err = KeyShare::parse(&forged.to_string()).unwrap_err();
        assert!(err.to_string().contains("group order"), "{err}");
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let text = split(&identity(), 3, 5).unwrap()[0].to_string();
        let cases = [
            ("hello", "starts with DEFSKS1"),
            (&text.replacen("DEFSKS1", "DEFSKS2", 1), "not known"),
            (&text[..40], "missing"),
            (&format!("{text}-AAAA"), "extra"),
            (&text.replacen("-S1-", "-S9-", 1), "checksum"),
            (&"DEFSKS1 ".repeat(100), "limit"),
        ];
        for (input, expected) in cases {
            let err = KeyShare::parse(input).unwrap_err().to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn shares_of_any_version_look_like_shares() {
        let text = split(&identity(), 2, 2).unwrap()[0].to_string();
        assert!(looks_like_share(&text));
        assert!(looks_like_share(&format!(
            "  {}",
            text.to_ascii_lowercase()
        )));
        assert!(looks_like_share("DEFSKS9-whatever"));
        for other in ["shares.txt", "", "DEFS", "./DEFSKS1", "é"] {
            assert!(!looks_like_share(other), "{other}");
        }
    }

    #[test]
    fn base32_round_trips_and_rejects_set_pad_bits() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        let text = encode_base32(&bytes, VALUE_CHARS);
        assert_eq!(decode_base32::<32>(&text, VALUE_CHARS), Ok(bytes));
        // The last symbol carries 1 data bit and 4 pad bits.
        let mut padded = text.clone();
        padded.pop();
        padded.push('1');
        assert!(decode_base32::<32>(&padded, VALUE_CHARS).is_err());
    }

    proptest! {
        #[test]
        fn parsing_garbage_never_panics(text in "\\PC{0,600}") {
            let _ = KeyShare::parse(&text);
        }

        #[test]
        fn parsing_near_shares_never_panics(
            cut in 0usize..107,
            junk in "[0-9A-Za-z\\- ]{0,40}",
        ) {
            let text = split_seeded(&Identity::from_secret_bytes(&[3; 32]).unwrap(), 2, 3, &[1; 32])
                .unwrap()[0]
                .to_string();
            let _ = KeyShare::parse(&format!("{}{junk}", &text[..cut]));
            let _ = KeyShare::parse(&format!("{junk}{}", &text[cut..]));
        }

        #[test]
        fn any_secret_round_trips(secret in any::<[u8; 32]>(), seed in any::<[u8; 32]>()) {
            let Ok(id) = Identity::from_secret_bytes(&secret) else {
                return Ok(()); // zero or not below the group order: not a key
            };
            let shares = split_seeded(&id, 2, 3, &seed).unwrap();
            let parsed: Vec<KeyShare> = shares
                .iter()
                .map(|s| KeyShare::parse(&s.to_string()).unwrap())
                .collect();
            prop_assert_eq!(&parsed, &shares);
            let back = combine(&parsed[1..]).unwrap();
            prop_assert_eq!(*back.secret_bytes(), *id.secret_bytes());
        }
    }
}
