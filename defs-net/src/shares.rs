//! Share records on the network, the client side (`defs_core::share`): an owner puts a record
//! on the storage peers closest by XOR to the *recipient's* NodeId, which is where the
//! recipient asks, so neither needs to know the other's nodes.
//!
//! - **Put**: `PutShare` to the [`ROOT_COPIES`] closest connected storage peers plus this
//!   node's own store, concurrently; stored when `min(2, peers asked)` other nodes
//!   acknowledged. A `rollback` or `share revoked` refusal fails the put with that reason.
//! - **List**: `ListShares` to at most [`MAX_ROOT_ASKS`] closest peers; the records are
//!   returned raw (duplicates removed); the caller verifies and applies
//!   `defs_core::share::record::admit`.

use defs_core::share::ShareRecord;
use defs_core::types::NodeId;
use futures::future::join_all;
use libp2p::PeerId;
use tracing::debug;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::node::short;
use crate::protocol::{ErrorCode, Request, Response};
use crate::roots::{MAX_ROOT_ASKS, ROOT_ASK_TIMEOUT, ROOT_COPIES, closest};

impl Client {
    async fn share_request(&self, peer: PeerId, request: Request) -> Result<Response> {
        match tokio::time::timeout(ROOT_ASK_TIMEOUT, self.node().request(peer, request)).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Request {
                peer: Box::new(peer),
                reason: "no answer in time".into(),
            }),
        }
    }

    /// Puts a share record on the storage peers that keep its recipient's records; returns
    /// how many other nodes acknowledged it as durably kept.
    ///
    /// # Errors
    /// [`Error::Core`] with [`defs_core::Error::BadShareRecord`] when `record` does not verify,
    /// [`defs_core::Error::ShareRevoked`] or [`defs_core::Error::ShareRollback`] when a peer
    /// holds a revocation or a newer record, [`defs_core::Error::RootUnreachable`] when there
    /// is no storage peer or too few acknowledged.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the answers; peers may still keep the record.
    pub async fn put_share_record(&self, record: Vec<u8>) -> Result<usize> {
        let checked = ShareRecord::verify(&record, 0)?;
        let recipient = checked.recipient();
        let candidates = self.node().candidates(0).await?;
        let (peers, local) = closest(&candidates, &recipient, ROOT_COPIES);
        if peers.is_empty() {
            return Err(unreachable(checked.owner(), "no storage peer is connected"));
        }
        let all: Vec<PeerId> = peers.iter().copied().chain(local).collect();
        let answers = join_all(all.iter().map(|p| {
            self.share_request(
                *p,
                Request::PutShare {
                    record: record.clone(),
                },
            )
        }))
        .await;
        let mut acks = 0;
        let mut failures = Vec::new();
        for (peer, answer) in all.iter().zip(answers) {
            match answer {
                Ok(Response::Ack) if Some(*peer) != local => acks += 1,
                Ok(Response::Ack) => {}
                Ok(_) => failures.push(format!("{}: unexpected answer", short(peer))),
                Err(e) if e.remote_code() == Some(ErrorCode::ShareRevoked) => {
                    return Err(Error::Core(defs_core::Error::ShareRevoked {
                        owner: checked.owner(),
                        share: checked.share().to_string(),
                    }));
                }
                Err(e) if e.remote_code() == Some(ErrorCode::Rollback) => {
                    return Err(Error::Core(defs_core::Error::BadShareRecord {
                        reason: format!(
                            "{} holds a newer record of share {} than seq {} (no rollback)",
                            short(peer),
                            checked.share(),
                            checked.seq()
                        ),
                    }));
                }
                Err(e) => failures.push(format!("{e}")),
            }
        }
        let need = peers.len().min(2);
        if acks < need {
            return Err(unreachable(
                checked.owner(),
                &format!(
                    "{acks} of {} storage peers acknowledged share record seq {} ({need} needed): {}",
                    peers.len(),
                    checked.seq(),
                    failures.join("; ")
                ),
            ));
        }
        debug!(share = %checked.share(), seq = checked.seq(), acks, "share record stored");
        Ok(acks)
    }

    /// Every share record addressed to `recipient` that the closest connected storage peers
    /// hold, raw, duplicates removed.
    ///
    /// # Errors
    /// [`defs_core::Error::RootUnreachable`] when no storage peer is connected or none
    /// answered; [`Error::Closed`].
    ///
    /// # Cancel safety
    /// Safe: it only asks.
    pub async fn find_share_records(&self, recipient: NodeId) -> Result<Vec<Vec<u8>>> {
        let candidates = self.node().candidates(0).await?;
        let (mut peers, local) = closest(&candidates, &recipient, MAX_ROOT_ASKS);
        peers.extend(local);
        if peers.is_empty() {
            return Err(unreachable(recipient, "no storage peer is connected"));
        }
        let answers = join_all(
            peers
                .iter()
                .map(|p| self.share_request(*p, Request::ListShares { recipient })),
        )
        .await;
        let mut found: Vec<Vec<u8>> = Vec::new();
        let mut failures = 0;
        for (peer, answer) in peers.iter().zip(answers) {
            match answer {
                Ok(Response::Shares(records)) => {
                    for r in records {
                        if !found.contains(&r) {
                            found.push(r);
                        }
                    }
                }
                Ok(_) => failures += 1,
                Err(e) => {
                    failures += 1;
                    debug!(peer = %short(peer), error = %e, "list shares failed");
                }
            }
        }
        if failures == peers.len() {
            return Err(unreachable(
                recipient,
                &format!("none of the {} storage peers asked answered", peers.len()),
            ));
        }
        Ok(found)
    }
}

fn unreachable(owner: NodeId, reason: &str) -> Error {
    Error::Core(defs_core::Error::RootUnreachable {
        owner,
        reason: reason.to_string(),
    })
}
