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

use defs_core::types::{NodeId, ShardId};
use libp2p::PeerId;
use tracing::{debug, warn};

use crate::client::Client;
use crate::error::Error;
use crate::node::Outcome;
use crate::node::short;
use crate::protocol::{Request, Response};

mod proof;
mod record;

pub use proof::{CHUNK_LEN, MAX_PROOF_DEPTH, Proof, ProofError, chunks, prove, verify};
pub(crate) use record::Log;
pub use record::{AuditRecord, MAX_FAILED_AUDITS, STATUS_FAILURES, Summary, Verdict};

/// How long the owner waits for one proof: a holder reads and hashes one shard (a few ms for
/// 1 MiB), so 20 s is a slow disk, not a lost holder.
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(20);

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
