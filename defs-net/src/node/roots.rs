//! Root records in the Kademlia DHT, on the actor: putting and getting a value under an owner's
//! key ([`defs_core::root_record::dht_key`]), and the filter every inbound `PutRecord` passes
//! (Kademlia runs with `StoreInserts::FilterBoth`, so nothing enters the record store unseen):
//! the key must be a root record key, the value must verify as a record of the owner that key
//! names, and it must supersede the copy held ([`admit`]). Storage nodes' redb copies are the
//! primary home of root records (`crate::service`); the DHT (memory only) is the fallback.
//!
//! ```text
//!   Node::dht_put ──DhtPut──► actor ── kad.put_record(Quorum::One) ── PutRecord result ─► reply
//!   Node::dht_get ──DhtGet──► actor ── kad.get_record ── FoundRecord* ─► collected
//!                                         └─ last step, or DHT_GET_TIMEOUT on a tick ─► reply
//!   remote PutRecord ─► InboundRequest::PutRecord ─► verify + admit ─► store_mut().put
//! ```

use defs_core::root_record::{RootRecord, admit, dht_key};
use libp2p::kad::store::RecordStore;

use super::*;

impl NodeActor {
    /// Starts a DHT put of a root record. The record is verified first: a node puts only what
    /// it would accept from a peer.
    pub(super) fn on_dht_put(&mut self, record: Vec<u8>, reply: oneshot::Sender<Result<()>>) {
        let checked = match RootRecord::verify(&record, 0) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(Error::Core(e)));
                return;
            }
        };
        let key = kad::RecordKey::new(&dht_key(&checked.owner()));
        let held = self.held_dht_root(&key, &checked.owner());
        if let Err(e) = admit(held.as_ref(), &checked) {
            let _ = reply.send(Err(Error::Core(e)));
            return;
        }
        let kad_record = kad::Record::new(key, record);
        match self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(kad_record, kad::Quorum::One)
        {
            Ok(q) => {
                self.dht_puts.insert(q, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Dht(format!("local record store: {e:?}"))));
            }
        }
    }

    /// Starts a DHT get of `owner`'s root record.
    pub(super) fn on_dht_get(&mut self, owner: NodeId, reply: oneshot::Sender<Vec<Vec<u8>>>) {
        let key = kad::RecordKey::new(&dht_key(&owner));
        let q = self.swarm.behaviour_mut().kad.get_record(key);
        self.dht_gets.insert(
            q,
            PendingGet {
                found: Vec::new(),
                deadline: Instant::now() + DHT_GET_TIMEOUT,
                reply,
            },
        );
    }

    /// Answers DHT gets whose time is up with what they found.
    pub(super) fn expire_dht_gets(&mut self, now: Instant) {
        let done: Vec<kad::QueryId> = self
            .dht_gets
            .iter()
            .filter(|(_, g)| g.deadline <= now)
            .map(|(q, _)| *q)
            .collect();
        for q in done {
            if let Some(g) = self.dht_gets.remove(&q) {
                if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&q) {
                    query.finish();
                }
                let _ = g.reply.send(g.found);
            }
        }
    }

    /// Progress of our own DHT queries.
    pub(super) fn on_dht_progress(
        &mut self,
        id: kad::QueryId,
        result: kad::QueryResult,
        last: bool,
    ) {
        match result {
            kad::QueryResult::GetRecord(r) => {
                if let Some(g) = self.dht_gets.get_mut(&id) {
                    if let Ok(kad::GetRecordOk::FoundRecord(found)) = r {
                        if g.found.len() < MAX_DHT_VALUES {
                            g.found.push(found.record.value);
                        }
                    } else if let Err(e) = r {
                        debug!(error = %e, "dht get ended without a record");
                    }
                    if last && let Some(g) = self.dht_gets.remove(&id) {
                        let _ = g.reply.send(g.found);
                    }
                }
            }
            kad::QueryResult::PutRecord(r) => {
                if let Some(reply) = self.dht_puts.remove(&id) {
                    let _ = reply.send(
                        r.map(|_| ())
                            .map_err(|e| Error::Dht(format!("put record: {e}"))),
                    );
                }
            }
            _ => {}
        }
    }

    /// The filter of inbound DHT puts: only a verified root record under its owner's key that
    /// supersedes the copy held is stored; anything else is dropped and logged.
    pub(super) fn on_dht_inbound_put(&mut self, source: PeerId, record: kad::Record) {
        let refuse = |reason: String| {
            info!(peer = %short(&source), %reason, "dht record refused");
        };
        let checked = match RootRecord::verify(&record.value, self.peer_difficulty) {
            Ok(r) => r,
            Err(e) => return refuse(format!("{e}")),
        };
        let owner = checked.owner();
        if record.key.as_ref() != dht_key(&owner) {
            return refuse(format!(
                "not under the root record key of its owner {owner}"
            ));
        }
        let held = self.held_dht_root(&record.key, &owner);
        match admit(held.as_ref(), &checked) {
            Ok(verdict) => {
                let seq = checked.seq();
                if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
                    return refuse(format!("record store: {e:?}"));
                }
                debug!(%owner, seq, ?verdict, "dht root record kept");
            }
            Err(e) => refuse(format!("{e}")),
        }
    }

    /// The root record of `owner` in our DHT store, if it still verifies.
    fn held_dht_root(&mut self, key: &kad::RecordKey, owner: &NodeId) -> Option<RootRecord> {
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let held = store.get(key)?;
        RootRecord::verify(&held.value, 0)
            .ok()
            .filter(|r| r.owner() == *owner)
    }
}
