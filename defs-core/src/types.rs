//! The shared vocabulary: ids that cross crate boundaries, each its own newtype so that a shard id
//! can never be passed where a node id belongs. Pure values, no I/O.

use std::fmt;

/// Writes `bytes` as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Parses exactly `N` bytes of hex (either case). `None` for any other length or a non-hex digit.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id as lowercase hex (64 characters).
            pub fn to_hex(&self) -> String {
                to_hex(&self.0)
            }

            /// Parses 64 hex characters.
            pub fn from_hex(text: &str) -> Option<Self> {
                from_hex::<32>(text).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Eight bytes are plenty to tell ids apart in logs.
                write!(f, "{}({}…)", stringify!($name), &self.to_hex()[..16])
            }
        }
    };
}

hash_id!(
    /// A storage node: BLAKE3 of its compressed secp256k1 public key.
    NodeId
);
hash_id!(
    /// A stored object (a shard, or a sealed manifest): BLAKE3 of its exact bytes, so anyone can
    /// verify an object against its id without a key.
    ShardId
);
hash_id!(
    /// What `defs put` prints: the [`ShardId`] of the file's sealed manifest.
    FileId
);

/// One version of one file's content: random, 16 bytes, bound into every shard's key and
/// associated data so shards of different versions never mix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VersionId(pub [u8; 16]);

impl fmt::Debug for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VersionId({})", to_hex(&self.0))
    }
}

/// An inode number: stable for a file's whole life and across restarts. 1 is the root.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct InodeNo(pub u64);

impl InodeNo {
    /// The root directory.
    pub const ROOT: InodeNo = InodeNo(1);
}

impl fmt::Display for InodeNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Counts changes to an inode's content. An upload records the generation it read; finishing it
/// marks the inode clean only if the generation is still the same.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Generation(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let id = ShardId([0xab; 32]);
        assert_eq!(ShardId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ShardId::from_hex("abc"), None);
        assert_eq!(ShardId::from_hex(&"zz".repeat(32)), None);
        assert_eq!(from_hex::<2>("ABcd"), Some([0xab, 0xcd]));
    }
}
