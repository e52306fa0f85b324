//! Audits: challenge-response proofs of storage that an owner checks against a shard's id
//! alone, without keeping the shard.
//!
//! A shard's id is BLAKE3 of its bytes, and BLAKE3 is a Merkle tree over 1 KiB chunks. The
//! owner names a shard and a random chunk index ([`Request::Audit`]); the holder answers with
//! that chunk and the chaining values of the sibling subtrees on the path from the chunk to the
//! root ([`Response::Proof`], about 1.5 KiB for a 1 MiB shard). The owner hashes the chunk at
//! its offset, folds the siblings in, and compares the root with the id ([`verify`]). A holder
//! that dropped or damaged the shard cannot answer for a random chunk, and one that kept only a
//! few chunks fails in proportion. Proof building ([`prove`]) and checking are our own code over
//! the `blake3` crate's `hazmat` tree functions, tested against `blake3::hash`.
//!
//! Owner side: [`audit_round`] challenges sampled shards; a failed audit lowers the holder's
//! score ([`crate::node::Outcome::AuditFailed`]: placement and pairing use it) and is kept in
//! the node's list of failed audits ([`crate::Node::audits`]), which repair reads to know which
//! shards to rebuild.

use std::time::{Duration, Instant};

use blake3::hazmat::{
    HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use defs_core::types::{NodeId, ShardId};
use libp2p::PeerId;
use tracing::{debug, warn};

use crate::client::Client;
use crate::error::Error;
use crate::node::Outcome;
use crate::node::short;
use crate::protocol::{Request, Response};

/// BLAKE3's chunk: the leaf of its tree and the unit an audit proves, in bytes.
pub const CHUNK_LEN: u64 = blake3::CHUNK_LEN as u64;

/// Most sibling chaining values in a proof. A shard of [`crate::protocol::MAX_SHARD_LEN`]
/// (32 MiB = 2^15 chunks) needs 15; 32 leaves room and bounds the frame (1 KiB + 32 × 32 B).
pub const MAX_PROOF_DEPTH: usize = 32;

/// How long the owner waits for one proof: a holder reads and hashes one shard (a few ms for
/// 1 MiB), so 20 s is a slow disk, not a lost holder.
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Failed audits the node remembers for repair and `defs status` (the newest ones).
pub const MAX_FAILED_AUDITS: usize = 1024;

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

/// One shard to audit: its id and length (from the manifest) and a holder to challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The shard.
    pub id: ShardId,
    /// Its length.
    pub len: u64,
    /// The holder, by node id (as the manifest records it).
    pub holder: NodeId,
}

/// What one audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The holder proved it holds the shard.
    Passed,
    /// The holder could not prove it (why, in words): it lost, damaged or never kept the shard,
    /// or answered garbage.
    Failed(String),
    /// The holder was not reachable: not counted either way (liveness is another matter).
    Unreachable(String),
}

/// One audit's record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// The shard.
    pub id: ShardId,
    /// The holder's node id.
    pub holder: NodeId,
    /// What it found.
    pub verdict: Verdict,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// The outcome of a round of audits.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Audits whose holder proved the shard.
    pub passed: u64,
    /// Audits the holder failed (the failures are in `failed`).
    pub failed: Vec<AuditRecord>,
    /// Audits whose holder was not reachable.
    pub unreachable: u64,
    /// Bytes of challenges and proofs moved (both ways, frame bodies).
    pub bytes: u64,
    /// Time spent, owner side (waiting included).
    pub took: Duration,
}

/// What `defs status` shows of the audits this node ran as an owner.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Audits passed since start.
    pub passed: u64,
    /// Audits failed since start.
    pub failed: u64,
    /// Audits whose holder was unreachable since start.
    pub unreachable: u64,
    /// When the last audit was judged (ms since the epoch; 0: never).
    pub last_ms: u64,
    /// The newest failures (at most [`STATUS_FAILURES`]), newest last.
    pub recent_failures: Vec<AuditRecord>,
}

/// Failures `defs status` lists.
pub const STATUS_FAILURES: usize = 8;

/// The node's memory of audits: counts, and the failed ones (at most [`MAX_FAILED_AUDITS`])
/// for repair to read.
#[derive(Debug, Default)]
pub(crate) struct Log {
    summary: Summary,
    failures: std::collections::VecDeque<AuditRecord>,
}

impl Log {
    pub(crate) fn record(&mut self, r: AuditRecord) {
        self.summary.last_ms = r.at_ms;
        match r.verdict {
            Verdict::Passed => self.summary.passed += 1,
            Verdict::Unreachable(_) => self.summary.unreachable += 1,
            Verdict::Failed(_) => {
                self.summary.failed += 1;
                if self.failures.len() >= MAX_FAILED_AUDITS {
                    self.failures.pop_front();
                }
                self.failures.push_back(r);
            }
        }
    }

    pub(crate) fn summary(&self) -> Summary {
        let mut s = self.summary.clone();
        let skip = self.failures.len().saturating_sub(STATUS_FAILURES);
        s.recent_failures = self.failures.iter().skip(skip).cloned().collect();
        s
    }

    pub(crate) fn failures(&self) -> Vec<AuditRecord> {
        self.failures.iter().cloned().collect()
    }
}

/// A uniform random chunk index of a `len`-byte shard.
fn random_chunk(len: u64) -> u32 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    let n = chunks(len);
    u32::try_from(u64::from_le_bytes(b) % n).unwrap_or(0)
}

/// Audits one shard on one holder: a random chunk, the proof checked against the id.
async fn audit_one(client: &Client, peer: PeerId, t: &Target) -> (Verdict, u64) {
    let chunk = random_chunk(t.len);
    let req = Request::Audit { id: t.id, chunk };
    let asked = tokio::time::timeout(AUDIT_TIMEOUT, client.node().request(peer, req)).await;
    let resp = match asked {
        Err(_) => {
            return (
                Verdict::Unreachable(format!("no answer in {} s", AUDIT_TIMEOUT.as_secs())),
                0,
            );
        }
        Ok(Err(Error::Remote { error, .. })) => {
            // The holder says it does not have the shard, or that it is damaged.
            return (Verdict::Failed(format!("refused: {error}")), 0);
        }
        Ok(Err(e)) => return (Verdict::Unreachable(format!("{e}")), 0),
        Ok(Ok(resp)) => resp,
    };
    let bytes = 40
        + match &resp {
            Response::Proof(p) => p.chunk.len() as u64 + 32 * p.siblings.len() as u64,
            _ => 0,
        };
    let verdict = match resp {
        Response::Proof(proof) => match verify(&t.id, t.len, chunk, &proof) {
            Ok(()) => Verdict::Passed,
            Err(e) => Verdict::Failed(format!("bad proof for chunk {chunk}: {e}")),
        },
        other => Verdict::Failed(format!("answered {other:?} instead of a proof")),
    };
    (verdict, bytes)
}

/// Audits each of `targets` once (in order, one at a time: audits are background work). Each
/// holder is found among the connected peers; a failure is logged, lowers the holder's score
/// and is remembered by the node for repair ([`crate::Node::audits`]).
///
/// # Errors
/// [`Error::Closed`] when the node stopped.
///
/// # Cancel safety
/// Dropping the future abandons the round; audits already judged are recorded.
pub async fn audit_round(client: &Client, targets: &[Target]) -> crate::Result<Report> {
    let started = Instant::now();
    let mut report = Report::default();
    let holders: Vec<NodeId> = targets.iter().map(|t| t.holder).collect();
    let peers = client.node().resolve(holders).await?;
    for (t, peer) in targets.iter().zip(peers) {
        let (verdict, bytes) = match peer {
            Some(peer) => audit_one(client, peer, t).await,
            None => (Verdict::Unreachable("not connected".into()), 0),
        };
        report.bytes += bytes;
        match &verdict {
            Verdict::Passed => {
                report.passed += 1;
                debug!(shard = %t.id, holder = %t.holder, "audit passed");
            }
            Verdict::Failed(why) => {
                warn!(shard = %t.id, holder = %t.holder, reason = %why, "audit failed: the holder cannot prove it stores the shard; its score drops and the shard is marked for repair");
                if let Some(peer) = peer {
                    client.node().report(peer, Outcome::AuditFailed);
                    debug!(peer = %short(&peer), "score lowered");
                }
            }
            Verdict::Unreachable(why) => {
                report.unreachable += 1;
                debug!(shard = %t.id, holder = %t.holder, reason = %why, "audit skipped");
            }
        }
        let record = AuditRecord {
            id: t.id,
            holder: t.holder,
            verdict: verdict.clone(),
            at_ms: crate::node::now_ms(),
        };
        client.node().record_audit(record.clone()).await?;
        if matches!(verdict, Verdict::Failed(_)) {
            report.failed.push(record);
        }
    }
    report.took = started.elapsed();
    Ok(report)
}

/// Picks about `n` audit targets from `shards` (id, length, holders), each shard drawn with
/// probability in proportion to its length (audit cost and loss both scale with bytes), one
/// random holder of it each time.
pub fn sample(shards: &[(ShardId, u64, Vec<NodeId>)], n: usize) -> Vec<Target> {
    let total: u64 = shards.iter().map(|s| s.1.max(1)).sum();
    if total == 0 || n == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut b = [0u8; 16];
        let _ = getrandom::fill(&mut b);
        let mut pick = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) % total;
        let h = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        for (id, len, holders) in shards {
            let w = (*len).max(1);
            if pick < w {
                if !holders.is_empty() {
                    let holder = holders[(h % holders.len() as u64) as usize];
                    out.push(Target {
                        id: *id,
                        len: *len,
                        holder,
                    });
                }
                break;
            }
            pick -= w;
        }
    }
    out
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

    #[test]
    fn sampling_draws_from_the_given_shards() {
        let shards = vec![
            (ShardId([1; 32]), 1000, vec![NodeId([9; 32])]),
            (ShardId([2; 32]), 0, vec![]),
        ];
        let t = sample(&shards, 5);
        // Draws of the shard without holders give no target.
        assert!(t.len() <= 5);
        assert!(
            t.iter()
                .all(|t| t.id == ShardId([1; 32]) && t.holder == NodeId([9; 32]))
        );
        assert!(sample(&[], 3).is_empty());
    }
}
