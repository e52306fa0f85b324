//! The storage service: what a node does with inbound shard requests. Cheap checks run on the
//! node's task ([`Service::admit`]: owner signature, timestamp window, nonce replay, CRC); store
//! I/O runs on the blocking pool ([`execute`]), and a store is acknowledged only after the shard
//! store has made it durable. Only a shard's owner may delete it; fetches need no secret.
//!
//! Root records ([`defs_core::root_record`]) are verified on the node's task (signature, owner
//! puzzle at the node's difficulty) and kept in the shard index's `roots` table under the
//! no-rollback rule; every refusal is logged with the owner, the seqs and the reason.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use defs_core::identity::{PublicKey, SignDomain, Signature};
use defs_core::root_record::RootRecord;
use defs_core::shard_store::ShardStore;
use defs_core::share::ShareRecord;
use defs_core::types::{NodeId, ShardId};
use libp2p::PeerId;
use tracing::info;

use crate::protocol::{
    Auth, ErrorCode, MAX_SHARES, NodeInfo, OwnerUsage, Request, Response, auth_message,
};

/// How far a signed request's timestamp may be from our clock: 10 minutes.
pub const MAX_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;

/// Nonces remembered against replays. Beyond this the oldest are forgotten, and requests not
/// newer than the newest forgotten one are refused, so a replay never slips through.
pub const MAX_REMEMBERED_NONCES: usize = 200_000;

/// An admitted operation, ready for the blocking pool.
#[derive(Debug)]
pub(crate) enum Op {
    Store {
        id: ShardId,
        owner: NodeId,
        /// CRC32 of `data`, checked on arrival.
        crc: u32,
        data: Bytes,
    },
    Fetch {
        id: ShardId,
        range: Option<(u64, u32)>,
    },
    Has {
        ids: Vec<ShardId>,
    },
    Delete {
        id: ShardId,
        requester: NodeId,
    },
    Lookup {
        asker: PeerId,
        ask: u64,
        ids: Vec<ShardId>,
    },
    PutRoot {
        record: RootRecord,
    },
    GetRoot {
        owner: NodeId,
    },
    PutShare {
        record: Box<ShareRecord>,
    },
    ListShares {
        recipient: NodeId,
    },
    /// Prove a chunk ([`crate::audit`]).
    Audit {
        id: ShardId,
        chunk: u32,
    },
    /// Keep a partner's mirror copy: stored for each of `owners`, then for the ward's
    /// `marker` ([`crate::pairing::marker`]), which tells mirror copies from primary ones.
    Mirror {
        id: ShardId,
        owners: Vec<NodeId>,
        marker: NodeId,
        crc: u32,
        data: Bytes,
    },
}

/// Remembers recent nonces of signed requests.
#[derive(Debug, Default)]
struct ReplayGuard {
    seen: HashSet<[u8; 16]>,
    order: VecDeque<([u8; 16], u64)>,
    /// Timestamps at or below this are refused (their nonces may have been forgotten).
    floor_ms: u64,
}

impl ReplayGuard {
    fn check_and_remember(&mut self, nonce: [u8; 16], ts: u64, now: u64) -> Result<(), Response> {
        if ts.abs_diff(now) > MAX_CLOCK_SKEW_MS {
            return Err(Response::error(
                ErrorCode::Replay,
                format!("timestamp {ts} is more than {MAX_CLOCK_SKEW_MS} ms from ours ({now})"),
            ));
        }
        if ts <= self.floor_ms || self.seen.contains(&nonce) {
            return Err(Response::error(ErrorCode::Replay, "nonce already used"));
        }
        // Forget nonces that left the window, then the oldest if still too many.
        while let Some(&(n, t)) = self.order.front() {
            if t + MAX_CLOCK_SKEW_MS < now || self.order.len() >= MAX_REMEMBERED_NONCES {
                self.order.pop_front();
                self.seen.remove(&n);
                self.floor_ms = self.floor_ms.max(t);
            } else {
                break;
            }
        }
        self.seen.insert(nonce);
        self.order.push_back((nonce, ts));
        Ok(())
    }
}

/// A misbehaviour injected into a node's fetch answers, for tests of what clients do with a
/// malicious or broken peer. Set through `Node::set_fault` (feature `test-utils`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Random bytes of the right length.
    Garbage,
    /// The first half of the shard.
    Truncated,
    /// The bytes of another shard this node stored.
    OtherShard,
    /// No answer at all to any shard request (a hung daemon whose connection stays open):
    /// the request is held until the node stops.
    Silent,
}

/// The storage service of a node.
pub(crate) struct Service {
    store: Arc<ShardStore>,
    capacity: u64,
    zone: String,
    replay: ReplayGuard,
    /// The identity puzzle difficulty a root record's owner must solve.
    difficulty: u8,
    pub(crate) fault: Option<Fault>,
    /// The last shard stored, for [`Fault::OtherShard`].
    pub(crate) last_stored: Option<ShardId>,
    /// The node is shutting down: new stores are refused with [`ErrorCode::ShuttingDown`].
    pub(crate) draining: bool,
}

impl Service {
    pub(crate) fn new(store: ShardStore, capacity: u64, zone: String, difficulty: u8) -> Self {
        Service {
            store: Arc::new(store),
            capacity,
            zone,
            replay: ReplayGuard::default(),
            difficulty,
            fault: None,
            last_stored: None,
            draining: false,
        }
    }

    pub(crate) fn store(&self) -> Arc<ShardStore> {
        self.store.clone()
    }

    pub(crate) fn info(&self) -> NodeInfo {
        let usage = self.store.usage();
        NodeInfo {
            storage: true,
            capacity: self.capacity,
            used: usage.used,
            shards: usage.shards,
            zone: self.zone.clone(),
        }
    }

    /// What `owner` stores here, its quota here and this node's space: the answer to an
    /// [`Request::OwnerUsage`] of `owner` (the peer that asked, or this node itself).
    pub(crate) fn owner_usage(&self, owner: &NodeId) -> OwnerUsage {
        let usage = self.store.usage();
        OwnerUsage {
            used: self.store.owner_usage(owner),
            quota: self.store.quotas().per_owner,
            capacity: self.capacity,
            node_used: usage.used,
        }
    }

    /// Verifies the owner's signature over a store or delete and returns the owner.
    fn verify(
        &mut self,
        domain: SignDomain,
        id: &ShardId,
        len: u32,
        auth: &Auth,
        now: u64,
    ) -> Result<NodeId, Response> {
        let key = PublicKey::from_bytes(&auth.public_key).map_err(|e| {
            Response::error(ErrorCode::BadSignature, format!("bad public key: {e}"))
        })?;
        let owner = key.node_id();
        let msg = auth_message(id, len, &owner, auth.timestamp_ms, &auth.nonce);
        key.verify(domain, &msg, &Signature(auth.signature))
            .map_err(|e| Response::error(ErrorCode::BadSignature, format!("{e}")))?;
        // Only a valid signature may consume a nonce.
        self.replay
            .check_and_remember(auth.nonce, auth.timestamp_ms, now)?;
        Ok(owner)
    }

    /// Checks a request on the node's task and turns it into an operation for the blocking pool,
    /// or refuses it.
    pub(crate) fn admit(&mut self, req: Request, now: u64) -> Result<Op, Response> {
        match req {
            Request::Store {
                id,
                auth,
                crc,
                data,
            } => {
                if self.draining {
                    return Err(Response::error(
                        ErrorCode::ShuttingDown,
                        "this node is shutting down and takes no new shards",
                    ));
                }
                let len = u32::try_from(data.len())
                    .map_err(|_| Response::error(ErrorCode::TooLarge, "shard too large"))?;
                if crc32fast::hash(&data) != crc {
                    return Err(Response::error(
                        ErrorCode::Corrupt,
                        "CRC mismatch: the shard was damaged in transit",
                    ));
                }
                let owner = self.verify(SignDomain::StoreShard, &id, len, &auth, now)?;
                self.last_stored = Some(id);
                Ok(Op::Store {
                    id,
                    owner,
                    crc,
                    data,
                })
            }
            Request::Delete { id, auth } => {
                let requester = self.verify(SignDomain::DeleteShard, &id, 0, &auth, now)?;
                Ok(Op::Delete { id, requester })
            }
            Request::Fetch { id, range } => Ok(Op::Fetch { id, range }),
            Request::Audit { id, chunk } => Ok(Op::Audit { id, chunk }),
            Request::Has { ids } => Ok(Op::Has { ids }),
            Request::PutRoot { record } => match RootRecord::verify(&record, self.difficulty) {
                Ok(record) => Ok(Op::PutRoot { record }),
                Err(e) => {
                    info!(reason = %e, len = record.len(), "root record refused");
                    Err(refusal(e))
                }
            },
            Request::GetRoot { owner } => Ok(Op::GetRoot { owner }),
            Request::PutShare { record } => match ShareRecord::verify(&record, self.difficulty) {
                Ok(record) => Ok(Op::PutShare {
                    record: Box::new(record),
                }),
                Err(e) => {
                    info!(reason = %e, len = record.len(), "share record refused");
                    Err(refusal(e))
                }
            },
            Request::ListShares { recipient } => Ok(Op::ListShares { recipient }),
            Request::Holders { .. }
            | Request::Info
            | Request::OwnerUsage
            | Request::Pair
            | Request::Heartbeat { .. }
            | Request::Mirror { .. } => Err(Response::error(
                ErrorCode::BadRequest,
                "not a store operation",
            )),
            Request::Malformed { reason } => Err(Response::error(ErrorCode::BadRequest, reason)),
        }
    }
}

/// Maps a shard-store error to a wire refusal.
fn refusal(e: defs_core::Error) -> Response {
    use defs_core::Error as E;
    let code = match &e {
        E::ShardNotFound { .. } => ErrorCode::NotFound,
        E::NotOwner { .. } => ErrorCode::NotOwner,
        E::QuotaExceeded { .. } | E::StoreFull { .. } => ErrorCode::QuotaFull,
        E::TooLarge { .. } => ErrorCode::TooLarge,
        E::CorruptShard { .. } | E::HashMismatch { .. } => ErrorCode::Corrupt,
        E::BadSignature { .. } | E::BadPublicKey => ErrorCode::BadSignature,
        E::PuzzleNotSolved { .. } => ErrorCode::PuzzleNotSolved,
        E::RootRollback { .. } | E::ShareRollback { .. } => ErrorCode::Rollback,
        E::BadShareRecord { .. } => ErrorCode::BadShareRecord,
        E::ShareRevoked { .. } => ErrorCode::ShareRevoked,
        E::BadRootRecord { .. } => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    };
    Response::error(code, format!("{e}"))
}

/// Runs an admitted operation against the store (blocking I/O).
pub(crate) fn execute(store: &ShardStore, op: Op) -> Response {
    match op {
        Op::Store {
            id,
            owner,
            crc,
            data,
        } => match store.put_with_crc(id, owner, &data, crc) {
            Ok(_) => Response::Stored,
            Err(e) => refusal(e),
        },
        Op::Fetch { id, range: None } => match store.get(&id) {
            Ok(bytes) => Response::Data(bytes),
            Err(e) => refusal(e),
        },
        Op::Fetch {
            id,
            range: Some((off, len)),
        } => match store.get_range(&id, off, u64::from(len)) {
            Ok(bytes) => Response::Data(bytes),
            Err(e) => refusal(e),
        },
        Op::Has { ids } => Response::Has(
            ids.iter()
                .map(|id| {
                    store
                        .has(id)
                        .ok()
                        .flatten()
                        .and_then(|m| u32::try_from(m.len).ok())
                })
                .collect(),
        ),
        Op::Delete { id, requester } => match store.delete(&id, requester) {
            Ok(_) => Response::Deleted,
            Err(e) => refusal(e),
        },
        Op::PutRoot { record } => match store.put_root(&record) {
            Ok(verdict) => {
                info!(owner = %record.owner(), seq = record.seq(), ?verdict, "root record kept");
                Response::Ack
            }
            Err(e) => {
                info!(owner = %record.owner(), seq = record.seq(), reason = %e, "root record refused");
                refusal(e)
            }
        },
        Op::GetRoot { owner } => match store.root(&owner) {
            Ok(Some(record)) => Response::Root(record.into_bytes()),
            Ok(None) => Response::error(
                ErrorCode::NotFound,
                format!("no root record of {owner} here"),
            ),
            Err(e) => refusal(e),
        },
        Op::PutShare { record } => match store.put_share(&record) {
            Ok(verdict) => {
                info!(owner = %record.owner(), recipient = %record.recipient(), share = %record.share(),
                    seq = record.seq(), revoked = record.revoked(), ?verdict, "share record kept");
                Response::Ack
            }
            Err(e) => {
                info!(owner = %record.owner(), share = %record.share(), seq = record.seq(), reason = %e,
                    "share record refused");
                refusal(e)
            }
        },
        Op::ListShares { recipient } => match store.shares_for(&recipient, MAX_SHARES) {
            Ok(records) => {
                Response::Shares(records.iter().map(|r| r.as_bytes().to_vec()).collect())
            }
            Err(e) => refusal(e),
        },
        Op::Lookup { .. } => Response::error(ErrorCode::BadRequest, "not a request"),
        Op::Audit { id, chunk } => match store.get(&id) {
            Ok(bytes) => match crate::audit::prove(&bytes, chunk) {
                Ok(proof) => Response::Proof(proof),
                Err(e) => Response::error(ErrorCode::BadRequest, format!("{e}")),
            },
            Err(e) => refusal(e),
        },
        Op::Mirror {
            id,
            owners,
            marker,
            crc,
            data,
        } => {
            if crc32fast::hash(&data) != crc {
                return Response::error(
                    ErrorCode::Corrupt,
                    "CRC mismatch: the mirror copy was damaged in transit",
                );
            }
            // The owners first: the marker is never a shard's only owner, so dropping it when
            // the copy becomes primary (adoption) never removes the record.
            for owner in owners.iter().chain(std::iter::once(&marker)) {
                if let Err(e) = store.put_with_crc(id, *owner, &data, crc) {
                    return refusal(e);
                }
            }
            Response::Stored
        }
    }
}

/// After an owner deleted its share of `id`: a record left owned only by ward markers (a
/// mirror copy whose owners all deleted it) is removed, so a mirror never outlives its owners.
pub(crate) fn drop_orphan_markers(
    store: &ShardStore,
    id: &ShardId,
    markers: &std::collections::HashSet<NodeId>,
) {
    let Ok(Some(meta)) = store.has(id) else {
        return;
    };
    if meta.owners.iter().all(|o| markers.contains(o)) {
        for m in &meta.owners {
            if let Err(e) = store.delete(id, *m) {
                tracing::warn!(shard = %id, error = %e, "dropping a mirror copy its owners deleted failed");
            }
        }
    }
}

/// Runs an operation, then applies `fault` to fetch answers (a misbehaving node).
pub(crate) fn execute_faulty(
    store: &ShardStore,
    op: Op,
    fault: Option<Fault>,
    other: Option<ShardId>,
) -> Response {
    let is_fetch = matches!(op, Op::Fetch { .. });
    let audit_chunk = match &op {
        Op::Audit { chunk, .. } => Some(*chunk),
        _ => None,
    };
    if let (Some(fault), Some(chunk)) = (fault, audit_chunk) {
        return faulty_proof(store, execute(store, op), fault, other, chunk);
    }
    let resp = execute(store, op);
    // Only a faulty node looks at (and copies) what it answers.
    let (Some(fault), true) = (fault, is_fetch) else {
        return resp;
    };
    let Response::Data(mut data) = resp else {
        return resp;
    };
    match fault {
        Fault::Garbage => {
            let _ = getrandom::fill(&mut data);
            Response::Data(data)
        }
        Fault::Truncated => {
            data.truncate(data.len() / 2);
            Response::Data(data)
        }
        Fault::OtherShard => match other.map(|o| store.get(&o)) {
            Some(Ok(d)) => Response::Data(d),
            _ => {
                data.reverse();
                Response::Data(data)
            }
        },
        // The actor holds a silent node's requests before they get here.
        Fault::Silent => Response::Data(data),
    }
}

/// A misbehaving node's answer to an audit: garbage of the right length, a truncated chunk,
/// or a stale proof (of another shard it stored).
fn faulty_proof(
    store: &ShardStore,
    resp: Response,
    fault: Fault,
    other: Option<ShardId>,
    chunk: u32,
) -> Response {
    let Response::Proof(mut proof) = resp else {
        return resp;
    };
    match fault {
        // A silent node's requests are held before they reach here.
        Fault::Silent => Response::Proof(proof),
        Fault::Garbage => {
            let _ = getrandom::fill(&mut proof.chunk);
            Response::Proof(proof)
        }
        Fault::Truncated => {
            proof.chunk.truncate(proof.chunk.len() / 2);
            Response::Proof(proof)
        }
        Fault::OtherShard => match other
            .and_then(|o| store.get(&o).ok())
            .and_then(|d| crate::audit::prove(&d, chunk).ok())
        {
            Some(p) => Response::Proof(p),
            None => {
                proof.chunk.reverse();
                Response::Proof(proof)
            }
        },
    }
}

/// The ids of `ids` this store holds.
pub(crate) fn held(store: &ShardStore, ids: &[ShardId]) -> Vec<ShardId> {
    ids.iter()
        .filter(|id| matches!(store.has(id), Ok(Some(_))))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_or_stale_nonces_are_refused() {
        let mut g = ReplayGuard::default();
        let now = 1_000_000_000;
        assert!(g.check_and_remember([1; 16], now, now).is_ok());
        assert!(g.check_and_remember([1; 16], now, now).is_err());
        assert!(
            g.check_and_remember([2; 16], now - MAX_CLOCK_SKEW_MS - 1, now)
                .is_err()
        );
        assert!(
            g.check_and_remember([3; 16], now + MAX_CLOCK_SKEW_MS + 1, now)
                .is_err()
        );
        // Once a nonce is forgotten (it left the window), its timestamp becomes the floor.
        let later = now + 2 * MAX_CLOCK_SKEW_MS;
        assert!(g.check_and_remember([4; 16], later, later).is_ok());
        assert!(g.check_and_remember([1; 16], now, later).is_err());
    }
}
