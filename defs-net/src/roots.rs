//! Root records on the network, the client side: putting an owner's newest record on the
//! storage peers that keep it (and into the DHT), and finding every candidate among the peers
//! and the DHT. [`Client`] implements defs-core's [`RootStore`] with these.
//!
//! - **Put**: `PutRoot` to the [`ROOT_COPIES`] connected storage peers closest by XOR to the
//!   owner's NodeId, plus this node's own store if it has one, concurrently, and a DHT put. The
//!   record counts as stored when at least `min(2, peers asked)` *other* nodes acknowledged it
//!   (this machine's copy does not survive losing it). A `rollback` refusal means a newer
//!   record exists: the put fails with [`defs_core::Error::RootRollback`] naming its seq.
//! - **Find**: `GetRoot` to at most [`MAX_ROOT_ASKS`] connected storage peers (XOR-closest
//!   first, [`ROOT_ASK_TIMEOUT`] each) and a DHT get, concurrently. Candidates are returned raw;
//!   the caller verifies. Peers that answered with an older record than the newest that
//!   verifies are sent the newest in the background, so stale copies heal.
//!
//! Both need connected storage peers; with none, they fail with
//! [`defs_core::Error::RootUnreachable`], which recovery tells apart from "nobody holds one".

use std::time::Duration;

use defs_core::remote::{BoxFuture, RootStore};
use defs_core::root_record::RootRecord;
use defs_core::types::NodeId;
use futures::future::join_all;
use libp2p::PeerId;
use tracing::{debug, info};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::node::{node_id_of, short};
use crate::placement::Candidate;
use crate::protocol::{ErrorCode, Request, Response};

/// Storage peers a root record is put on: 5, so that it survives the loss of four of them
/// (the plan's choice; small networks put it on every peer).
pub const ROOT_COPIES: usize = 5;

/// Most storage peers asked for an owner's root record: 32 covers every node of a small
/// network and the close neighbourhood of a large one.
pub const MAX_ROOT_ASKS: usize = 32;

/// How long one peer has to answer a `GetRoot` or `PutRoot`: 5 s (a 16 KiB answer from a
/// reachable node takes milliseconds; a silent one must not hold up recovery).
pub const ROOT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// XOR distance of two node ids, for ordering peers by closeness to an owner.
fn distance(a: &NodeId, b: &NodeId) -> [u8; 32] {
    let mut d = [0u8; 32];
    for (i, x) in d.iter_mut().enumerate() {
        *x = a.0[i] ^ b.0[i];
    }
    d
}

/// The remote storage peers closest to `owner` (at most `n`), and whether this node has a
/// store of its own among the candidates.
pub(crate) fn closest(
    candidates: &[Candidate],
    owner: &NodeId,
    n: usize,
) -> (Vec<PeerId>, Option<PeerId>) {
    let local = candidates.iter().find(|c| c.local).map(|c| c.peer);
    let mut remote: Vec<(NodeId, PeerId)> = candidates
        .iter()
        .filter(|c| !c.local)
        .filter_map(|c| node_id_of(&c.peer).map(|id| (id, c.peer)))
        .collect();
    remote.sort_by_key(|(id, _)| distance(id, owner));
    remote.truncate(n);
    (remote.into_iter().map(|(_, p)| p).collect(), local)
}

/// What one peer did with a `PutRoot`.
enum PutAnswer {
    Ack,
    Rollback,
    Failed(String),
}

impl Client {
    async fn put_root_on(&self, peer: PeerId, record: Vec<u8>) -> PutAnswer {
        let asked = self.node().request(peer, Request::PutRoot { record });
        match tokio::time::timeout(ROOT_ASK_TIMEOUT, asked).await {
            Ok(Ok(Response::Ack)) => PutAnswer::Ack,
            Ok(Ok(_)) => PutAnswer::Failed(format!("{}: unexpected answer", short(&peer))),
            Ok(Err(e)) if e.remote_code() == Some(ErrorCode::Rollback) => PutAnswer::Rollback,
            Ok(Err(e)) => PutAnswer::Failed(format!("{e}")),
            Err(_) => PutAnswer::Failed(format!("{}: no answer in time", short(&peer))),
        }
    }

    async fn get_root_from(&self, peer: PeerId, owner: NodeId) -> Result<Option<Vec<u8>>> {
        let asked = self.node().request(peer, Request::GetRoot { owner });
        match tokio::time::timeout(ROOT_ASK_TIMEOUT, asked).await {
            Ok(Ok(Response::Root(bytes))) => Ok(Some(bytes)),
            Ok(Ok(_)) => Err(Error::UnexpectedResponse {
                peer: Box::new(peer),
                what: "get root",
            }),
            Ok(Err(e)) if e.remote_code() == Some(ErrorCode::NotFound) => Ok(None),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Request {
                peer: Box::new(peer),
                reason: "no answer in time".into(),
            }),
        }
    }

    /// Puts `record` on the storage peers that keep its owner's record and into the DHT;
    /// returns how many other nodes acknowledged it as durably kept.
    ///
    /// # Errors
    /// [`defs_core::Error::RootRollback`] (inside [`Error::Core`]) when a peer holds a newer
    /// record; [`defs_core::Error::RootUnreachable`] when there is no storage peer or fewer
    /// than `min(2, peers asked)` acknowledged; [`Error::Core`] when `record` does not verify.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the answers; peers may still store the record (it is
    /// the same bytes a retry sends, so that is harmless).
    pub async fn put_root_record(&self, record: Vec<u8>) -> Result<usize> {
        let checked = RootRecord::verify(&record, 0)?;
        let owner = checked.owner();
        let candidates = self.node().candidates(0).await?;
        let (peers, local) = closest(&candidates, &owner, ROOT_COPIES);
        if peers.is_empty() {
            return Err(unreachable(owner, "no storage peer is connected".into()));
        }
        let puts = join_all(peers.iter().map(|p| self.put_root_on(*p, record.clone())));
        let local_put = async {
            match local {
                Some(p) => Some(self.put_root_on(p, record.clone()).await),
                None => None,
            }
        };
        let dht = self.node().dht_put(record.clone());
        let (answers, local_answer, dht) = tokio::join!(puts, local_put, dht);
        if let Err(e) = dht {
            debug!(%owner, seq = checked.seq(), error = %e, "dht put of the root record failed");
        }
        let mut acks = 0;
        let mut failures = Vec::new();
        let mut newer_on = None;
        for (peer, answer) in peers.iter().zip(answers) {
            match answer {
                PutAnswer::Ack => acks += 1,
                PutAnswer::Rollback => newer_on = Some(*peer),
                PutAnswer::Failed(why) => failures.push(why),
            }
        }
        if let Some(PutAnswer::Rollback) = local_answer {
            newer_on = newer_on.or(local);
        }
        if let Some(peer) = newer_on {
            let held = self.newer_seq(peer, owner).await.unwrap_or(checked.seq());
            info!(%owner, seq = checked.seq(), held, peer = %short(&peer), "root record refused: a newer one exists");
            return Err(Error::Core(defs_core::Error::RootRollback {
                owner,
                held,
                offered: checked.seq(),
            }));
        }
        let need = peers.len().min(2);
        if acks < need {
            return Err(unreachable(
                owner,
                format!(
                    "{acks} of {} storage peers acknowledged seq {} ({need} needed): {}",
                    peers.len(),
                    checked.seq(),
                    failures.join("; ")
                ),
            ));
        }
        debug!(%owner, seq = checked.seq(), acks, "root record stored");
        Ok(acks)
    }

    /// The seq of the record `peer` holds for `owner`, if it verifies.
    async fn newer_seq(&self, peer: PeerId, owner: NodeId) -> Option<u64> {
        let bytes = self.get_root_from(peer, owner).await.ok()??;
        RootRecord::verify(&bytes, 0)
            .ok()
            .filter(|r| r.owner() == owner)
            .map(|r| r.seq())
    }

    /// Every root record of `owner` that the closest connected storage peers and the DHT hold,
    /// raw (duplicates removed). Peers holding an older record than the newest that verifies
    /// are sent the newest in the background.
    ///
    /// # Errors
    /// [`defs_core::Error::RootUnreachable`] when no storage peer is connected and the DHT
    /// returned nothing; [`Error::Closed`].
    ///
    /// # Cancel safety
    /// Safe: it only asks.
    pub async fn find_root_records(&self, owner: NodeId) -> Result<Vec<Vec<u8>>> {
        let candidates = self.node().candidates(0).await?;
        let (mut peers, local) = closest(&candidates, &owner, MAX_ROOT_ASKS);
        peers.extend(local);
        let asks = join_all(peers.iter().map(|p| self.get_root_from(*p, owner)));
        let (answers, dht) = tokio::join!(asks, self.node().dht_get(owner));
        let mut found: Vec<Vec<u8>> = Vec::new();
        let mut held: Vec<(PeerId, Option<u64>)> = Vec::new();
        let mut failures = 0;
        for (peer, answer) in peers.iter().zip(answers) {
            match answer {
                Ok(Some(bytes)) => {
                    let seq = RootRecord::verify(&bytes, 0)
                        .ok()
                        .filter(|r| r.owner() == owner)
                        .map(|r| r.seq());
                    held.push((*peer, seq));
                    if !found.contains(&bytes) {
                        found.push(bytes);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    failures += 1;
                    debug!(%owner, peer = %short(peer), error = %e, "get root failed");
                }
            }
        }
        for bytes in dht? {
            if !found.contains(&bytes) {
                found.push(bytes);
            }
        }
        if peers.is_empty() && found.is_empty() {
            return Err(unreachable(owner, "no storage peer is connected".into()));
        }
        if !peers.is_empty() && failures == peers.len() && found.is_empty() {
            return Err(unreachable(
                owner,
                format!("none of the {} storage peers asked answered", peers.len()),
            ));
        }
        self.heal_stale(owner, &found, held);
        Ok(found)
    }

    /// Sends the newest verifying record among `found` to the peers whose copy is older.
    fn heal_stale(&self, owner: NodeId, found: &[Vec<u8>], held: Vec<(PeerId, Option<u64>)>) {
        let Some(newest) = found
            .iter()
            .filter_map(|b| RootRecord::verify(b, 0).ok())
            .filter(|r| r.owner() == owner)
            .max_by_key(|r| r.seq())
        else {
            return;
        };
        let stale: Vec<PeerId> = held
            .into_iter()
            .filter(|(_, seq)| seq.is_none_or(|s| s < newest.seq()))
            .map(|(p, _)| p)
            .collect();
        if stale.is_empty() {
            return;
        }
        let this = self.clone();
        let record = newest.into_bytes();
        tokio::spawn(async move {
            for peer in stale {
                if let PutAnswer::Failed(why) = this.put_root_on(peer, record.clone()).await {
                    debug!(%owner, peer = %short(&peer), %why, "re-put of the newest root record failed");
                }
            }
        });
    }
}

fn unreachable(owner: NodeId, reason: String) -> Error {
    Error::Core(defs_core::Error::RootUnreachable { owner, reason })
}

/// A defs-net error as defs-core's: core errors as they are, the rest (the node stopped) as
/// "unreachable" for `owner`.
fn to_core(owner: NodeId, e: Error) -> defs_core::Error {
    match e {
        Error::Core(c) => c,
        e => defs_core::Error::RootUnreachable {
            owner,
            reason: format!("{e}"),
        },
    }
}

impl RootStore for Client {
    fn put_root(&self, record: Vec<u8>) -> BoxFuture<'_, defs_core::Result<usize>> {
        Box::pin(async move {
            let owner = RootRecord::verify(&record, 0)?.owner();
            self.put_root_record(record)
                .await
                .map_err(|e| to_core(owner, e))
        })
    }

    fn find_roots(&self, owner: NodeId) -> BoxFuture<'_, defs_core::Result<Vec<Vec<u8>>>> {
        Box::pin(async move {
            self.find_root_records(owner)
                .await
                .map_err(|e| to_core(owner, e))
        })
    }
}
