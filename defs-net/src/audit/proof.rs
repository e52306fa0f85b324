//! Proofs of storage over BLAKE3's tree (the holder's [`prove`], the owner's [`verify`]):
//! pure functions, tested against `blake3::hash`. See [`crate::audit`].

use blake3::hazmat::{
    HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use defs_core::types::ShardId;

/// BLAKE3's chunk: the leaf of its tree and the unit an audit proves, in bytes.
pub const CHUNK_LEN: u64 = blake3::CHUNK_LEN as u64;

/// Most sibling chaining values in a proof. A shard of [`crate::protocol::MAX_SHARD_LEN`]
/// (32 MiB = 2^15 chunks) needs 15; 32 leaves room and bounds the frame (1 KiB + 32 × 32 B).
pub const MAX_PROOF_DEPTH: usize = 32;

/// A holder's answer to "prove chunk `i` of shard X".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The chunk's bytes: [`CHUNK_LEN`], or fewer for the shard's last chunk.
    pub chunk: Vec<u8>,
    /// Chaining values of the sibling subtrees, from the root down to the chunk.
    pub siblings: Vec<[u8; 32]>,
}

/// Why a proof does not prove what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The chunk index is past the shard's end (the challenge itself was wrong).
    #[error("chunk {chunk} is past the end of a {len}-byte shard")]
    NoSuchChunk {
        /// The index.
        chunk: u32,
        /// The shard's length.
        len: u64,
    },
    /// The chunk has the wrong length.
    #[error("the chunk is {got} bytes, chunk {chunk} of a {len}-byte shard is {want}")]
    ChunkLength {
        /// The index.
        chunk: u32,
        /// The shard's length.
        len: u64,
        /// Bytes expected.
        want: u64,
        /// Bytes received.
        got: usize,
    },
    /// The proof has the wrong number of siblings for the tree of this length.
    #[error("the proof has {got} sibling hashes, the tree needs {want}")]
    Depth {
        /// Siblings expected.
        want: usize,
        /// Siblings received.
        got: usize,
    },
    /// The chunk and siblings hash to another root: damaged or stale data.
    #[error("the chunk and its siblings do not hash to the shard id (damaged or stale data)")]
    Mismatch,
}

/// Chunks in a shard of `len` bytes (at least 1: an empty shard is one empty chunk).
pub fn chunks(len: u64) -> u64 {
    len.div_ceil(CHUNK_LEN).max(1)
}

/// One level of a tree path: whether the chunk is in the left subtree, and the sibling's byte
/// range.
type Level = (bool, u64, u64);

/// The path from the root to chunk `chunk` of a `len`-byte input: its levels, then the chunk's
/// byte range.
fn path(len: u64, chunk: u32) -> Result<(Vec<Level>, u64, u64), ProofError> {
    let at = u64::from(chunk) * CHUNK_LEN;
    if u64::from(chunk) >= chunks(len) {
        return Err(ProofError::NoSuchChunk { chunk, len });
    }
    let (mut start, mut end) = (0u64, len);
    let mut levels = Vec::new();
    while end - start > CHUNK_LEN {
        let split = start + left_subtree_len(end - start);
        if at < split {
            levels.push((true, split, end));
            end = split;
        } else {
            levels.push((false, start, split));
            start = split;
        }
    }
    Ok((levels, start, end))
}

/// The chaining value of the subtree `bytes`, which starts at byte `offset` of the input.
fn subtree_cv(bytes: &[u8], offset: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(bytes);
    h.finalize_non_root()
}

/// The proof of chunk `chunk` of `data` (a holder's side). Hashes about the whole shard once.
///
/// # Errors
/// [`ProofError::NoSuchChunk`] when the index is past the end.
pub fn prove(data: &[u8], chunk: u32) -> Result<Proof, ProofError> {
    let len = data.len() as u64;
    let (levels, start, end) = path(len, chunk)?;
    let slice = |a: u64, b: u64| &data[a as usize..b as usize];
    let siblings = levels
        .iter()
        .map(|&(_, a, b)| subtree_cv(slice(a, b), a))
        .collect();
    Ok(Proof {
        chunk: slice(start, end).to_vec(),
        siblings,
    })
}

/// Checks that `proof` proves chunk `chunk` of the `len`-byte shard `id` (the owner's side:
/// the id and length come from the manifest, nothing from the holder but the proof).
///
/// # Errors
/// A [`ProofError`] saying what is wrong.
pub fn verify(id: &ShardId, len: u64, chunk: u32, proof: &Proof) -> Result<(), ProofError> {
    let (levels, start, end) = path(len, chunk)?;
    if proof.chunk.len() as u64 != end - start {
        return Err(ProofError::ChunkLength {
            chunk,
            len,
            want: end - start,
            got: proof.chunk.len(),
        });
    }
    if proof.siblings.len() != levels.len() {
        return Err(ProofError::Depth {
            want: levels.len(),
            got: proof.siblings.len(),
        });
    }
    if levels.is_empty() {
        // One chunk: it is the root itself.
        return match blake3::hash(&proof.chunk).as_bytes() == &id.0 {
            true => Ok(()),
            false => Err(ProofError::Mismatch),
        };
    }
    // An empty chunk only exists in an empty (one-chunk) shard, handled above.
    let mut cv = subtree_cv(&proof.chunk, start);
    for (i, (&(left, _, _), sibling)) in levels.iter().zip(&proof.siblings).enumerate().rev() {
        let (l, r) = if left { (&cv, sibling) } else { (sibling, &cv) };
        if i == 0 {
            let root = merge_subtrees_root(l, r, Mode::Hash);
            return match root.as_bytes() == &id.0 {
                true => Ok(()),
                false => Err(ProofError::Mismatch),
            };
        }
        cv = merge_subtrees_non_root(l, r, Mode::Hash);
    }
    Err(ProofError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn every_chunk_of_every_shape_proves_against_blake3() {
        for len in [
            0usize, 1, 1023, 1024, 1025, 2048, 2049, 3000, 4096, 5000, 8191, 8193, 65536, 100_000,
        ] {
            let data = bytes(len, 7);
            let id = ShardId(*blake3::hash(&data).as_bytes());
            for c in 0..chunks(len as u64) as u32 {
                let p = prove(&data, c).unwrap();
                assert_eq!(
                    verify(&id, len as u64, c, &p),
                    Ok(()),
                    "len {len} chunk {c}"
                );
            }
            let past = chunks(len as u64) as u32;
            assert!(matches!(
                prove(&data, past),
                Err(ProofError::NoSuchChunk { .. })
            ));
        }
    }

    #[test]
    fn damaged_stale_or_misshapen_proofs_fail() {
        let data = bytes(10_000, 1);
        let id = ShardId(*blake3::hash(&data).as_bytes());
        let good = prove(&data, 3).unwrap();
        // A flipped bit in the chunk.
        let mut p = good.clone();
        p.chunk[5] ^= 1;
        assert_eq!(verify(&id, 10_000, 3, &p), Err(ProofError::Mismatch));
        // A flipped sibling.
        let mut p = good.clone();
        p.siblings[0][0] ^= 1;
        assert_eq!(verify(&id, 10_000, 3, &p), Err(ProofError::Mismatch));
        // Stale: the proof of another chunk.
        let other = prove(&data, 4).unwrap();
        assert_eq!(verify(&id, 10_000, 3, &other), Err(ProofError::Mismatch));
        // Another shard's proof.
        let data2 = bytes(10_000, 2);
        assert_eq!(
            verify(&id, 10_000, 3, &prove(&data2, 3).unwrap()),
            Err(ProofError::Mismatch)
        );
        // Wrong lengths.
        let mut p = good.clone();
        p.chunk.pop();
        assert!(matches!(
            verify(&id, 10_000, 3, &p),
            Err(ProofError::ChunkLength { .. })
        ));
        let mut p = good.clone();
        p.siblings.push([0; 32]);
        assert!(matches!(
            verify(&id, 10_000, 3, &p),
            Err(ProofError::Depth { .. })
        ));
        // A chunk index past the end is refused, not a panic.
        assert!(matches!(
            verify(&id, 10_000, 99, &good),
            Err(ProofError::NoSuchChunk { .. })
        ));
    }
}
