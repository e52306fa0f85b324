//! An in-memory [`ShardClient`] of `n` simulated nodes for tests of the layers above the
//! network (the object layer, the filesystem's uploads and lazy reads): shards really are
//! stored, verified against their ids on fetch, placed on distinct nodes, and can be lost or
//! corrupted per node to exercise reconstruction. The real network is defs-net's `Client`;
//! end-to-end tests use that.
//!
//! It is also a [`RootStore`]: every running node keeps the newest root record per owner under
//! the rule real nodes apply ([`RootRecord::verify`], [`admit`]); tests can plant any bytes on
//! a node ([`MemoryClient::plant_root`]) to play a stale, forged or damaged holder.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BoxFuture, Holders, OutShard, RootStore, ShardClient, StoredSegment};
use crate::durability::Liveness;
use crate::durability::survivable_losses;
use crate::error::{Error, Result};
use crate::root_record::{Admit, RootRecord, admit};
use crate::types::{NodeId, ShardId};

/// `n` simulated storage nodes in memory.
#[derive(Debug)]
pub struct MemoryClient {
    nodes: Mutex<Vec<MemNode>>,
    next: AtomicU64,
    fetches: AtomicU64,
    fetched_bytes: AtomicU64,
    node_capacity: AtomicU64,
    root_difficulty: std::sync::atomic::AtomicU8,
}

/// What each simulated node advertises as its capacity unless a test sets another
/// ([`MemoryClient::set_node_capacity`]).
pub const DEFAULT_NODE_CAPACITY: u64 = 1 << 30;

#[derive(Debug)]
struct MemNode {
    id: NodeId,
    up: bool,
    shards: HashMap<ShardId, Vec<u8>>,
    roots: HashMap<NodeId, Vec<u8>>,
}

fn node_id(i: usize) -> NodeId {
    NodeId(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes())
}

fn remote(op: &'static str, shard: ShardId, reason: &str) -> Error {
    Error::Remote {
        op,
        shard,
        reason: reason.into(),
    }
}

impl MemoryClient {
    /// `n` empty, running nodes.
    pub fn new(n: usize) -> MemoryClient {
        MemoryClient {
            nodes: Mutex::new(
                (0..n)
                    .map(|i| MemNode {
                        id: node_id(i),
                        up: true,
                        shards: HashMap::new(),
                        roots: HashMap::new(),
                    })
                    .collect(),
            ),
            next: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            node_capacity: AtomicU64::new(DEFAULT_NODE_CAPACITY),
            root_difficulty: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// Sets the identity puzzle difficulty the simulated nodes require of a root record's
    /// owner (0 unless set, like a test network).
    pub fn set_root_difficulty(&self, difficulty: u8) {
        self.root_difficulty.store(difficulty, Ordering::Relaxed);
    }

    /// Puts `bytes` as `owner`'s root record on node `i` without any check: a stale, forged or
    /// damaged holder for tests of readers.
    pub fn plant_root(&self, i: usize, owner: NodeId, bytes: Vec<u8>) {
        self.with(|n| {
            if let Some(node) = n.get_mut(i) {
                node.roots.insert(owner, bytes);
            }
        });
    }

    /// The root record node `i` holds for `owner` (up or down).
    pub fn root_on(&self, i: usize, owner: NodeId) -> Option<Vec<u8>> {
        self.with(|n| n.get(i).and_then(|node| node.roots.get(&owner).cloned()))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<MemNode>) -> T) -> T {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut nodes)
    }

    /// The id of node `i`.
    pub fn node(&self, i: usize) -> NodeId {
        node_id(i)
    }

    /// Stops node `i` (its shards stay, unreachable) or starts it again.
    pub fn set_up(&self, i: usize, up: bool) {
        self.with(|n| {
            if let Some(node) = n.get_mut(i) {
                node.up = up;
            }
        });
    }

    /// Flips a byte of shard `id` wherever it is stored. Returns how many copies changed.
    pub fn corrupt(&self, id: ShardId) -> usize {
        self.with(|n| {
            let mut changed = 0;
            for node in n.iter_mut() {
                if let Some(b) = node.shards.get_mut(&id).filter(|b| !b.is_empty()) {
                    b[0] ^= 0xff;
                    changed += 1;
                }
            }
            changed
        })
    }

    /// Moves shard `id` from wherever it is to node `to` (a holder the manifest does not know).
    pub fn relocate(&self, id: ShardId, to: usize) {
        self.with(|n| {
            let bytes = n.iter_mut().find_map(|node| node.shards.remove(&id));
            if let (Some(b), Some(node)) = (bytes, n.get_mut(to)) {
                node.shards.insert(id, b);
            }
        });
    }

    /// Sets the bytes each node holds at most (their free capacity is this minus what they
    /// store).
    pub fn set_node_capacity(&self, bytes: u64) {
        self.node_capacity.store(bytes, Ordering::Relaxed);
    }

    /// Shards stored in total (over all nodes, up or down).
    pub fn stored(&self) -> usize {
        self.with(|n| n.iter().map(|node| node.shards.len()).sum())
    }

    /// Successful fetches so far, and their bytes.
    pub fn fetch_counts(&self) -> (u64, u64) {
        (
            self.fetches.load(Ordering::Relaxed),
            self.fetched_bytes.load(Ordering::Relaxed),
        )
    }

    fn get_verified(node: &MemNode, id: ShardId) -> Option<Vec<u8>> {
        let b = node.shards.get(&id)?;
        (blake3::hash(b).as_bytes() == &id.0).then(|| b.clone())
    }
}

impl ShardClient for MemoryClient {
    fn store_segment(
        &self,
        shards: Vec<OutShard>,
        parity: usize,
    ) -> BoxFuture<'_, Result<StoredSegment>> {
        Box::pin(async move {
            let first = shards.first().map(|s| s.id).unwrap_or_default();
            let start = self.next.fetch_add(1, Ordering::Relaxed) as usize;
            self.with(|n| {
                let up: Vec<usize> = (0..n.len()).filter(|&i| n[i].up).collect();
                if up.is_empty() {
                    return Err(remote("store", first, "no node is up"));
                }
                let mut holders = Vec::with_capacity(shards.len());
                for (k, OutShard { id, crc, bytes }) in shards.into_iter().enumerate() {
                    if crc32fast::hash(&bytes) != crc {
                        return Err(remote("store", id, "CRC mismatch"));
                    }
                    if blake3::hash(&bytes).as_bytes() != &id.0 {
                        return Err(remote("store", id, "bytes do not hash to the id"));
                    }
                    let node = &mut n[up[(start + k) % up.len()]];
                    node.shards.insert(id, bytes);
                    holders.push(vec![node.id]);
                }
                let need = holders.len().saturating_sub(parity);
                let fault_tolerance =
                    survivable_losses(holders.iter().filter_map(|h| h.first()), need);
                Ok(StoredSegment {
                    holders,
                    fault_tolerance,
                })
            })
        })
    }

    fn store_shards(
        &self,
        shards: Vec<OutShard>,
        avoid: Vec<NodeId>,
    ) -> BoxFuture<'_, Result<Vec<Vec<NodeId>>>> {
        Box::pin(async move {
            let first = shards.first().map(|s| s.id).unwrap_or_default();
            self.with(|n| {
                let up = |i: &usize| n[*i].up;
                let mut order: Vec<usize> = (0..n.len())
                    .filter(up)
                    .filter(|&i| !avoid.contains(&n[i].id))
                    .collect();
                if order.is_empty() {
                    order = (0..n.len()).filter(up).collect();
                }
                if order.is_empty() {
                    return Err(remote("store", first, "no node is up"));
                }
                let mut holders = Vec::with_capacity(shards.len());
                for (k, OutShard { id, crc, bytes }) in shards.into_iter().enumerate() {
                    if crc32fast::hash(&bytes) != crc || blake3::hash(&bytes).as_bytes() != &id.0 {
                        return Err(remote("store", id, "bytes do not match the id or CRC"));
                    }
                    let node = &mut n[order[k % order.len()]];
                    node.shards.insert(id, bytes);
                    holders.push(vec![node.id]);
                }
                Ok(holders)
            })
        })
    }

    fn fetch(&self, id: ShardId, holders: Vec<NodeId>) -> BoxFuture<'_, Result<Vec<u8>>> {
        Box::pin(async move {
            let found = self.with(|n| {
                // Recorded holders first, then anyone (the broadcast lookup).
                let recorded = n
                    .iter()
                    .filter(|node| node.up && holders.contains(&node.id))
                    .find_map(|node| Self::get_verified(node, id));
                recorded.or_else(|| {
                    n.iter()
                        .filter(|node| node.up)
                        .find_map(|node| Self::get_verified(node, id))
                })
            });
            match found {
                Some(b) => {
                    self.fetches.fetch_add(1, Ordering::Relaxed);
                    self.fetched_bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    Ok(b)
                }
                // Like the network client: a holder whose bytes fail verification says so.
                None if self.with(|n| {
                    n.iter()
                        .any(|node| node.up && node.shards.contains_key(&id))
                }) =>
                {
                    Err(remote("fetch", id, "bytes do not hash to the shard id"))
                }
                None => Err(remote("fetch", id, "no running node holds valid bytes")),
            }
        })
    }

    fn lookup(&self, ids: Vec<ShardId>) -> BoxFuture<'_, Result<Holders>> {
        Box::pin(async move {
            Ok(self.with(|n| {
                ids.iter()
                    .filter_map(|id| {
                        let h: Vec<NodeId> = n
                            .iter()
                            .filter(|node| node.up && node.shards.contains_key(id))
                            .map(|node| node.id)
                            .collect();
                        (!h.is_empty()).then_some((*id, h))
                    })
                    .collect()
            }))
        })
    }

    fn storage_peers(&self) -> BoxFuture<'_, Result<usize>> {
        Box::pin(async move { Ok(self.with(|n| n.iter().filter(|node| node.up).count())) })
    }

    fn liveness(&self) -> BoxFuture<'_, Result<Liveness>> {
        // Every simulated node is another machine; this one stores nothing.
        Box::pin(async move {
            Ok(Liveness {
                local: None,
                live: self.with(|n| {
                    n.iter()
                        .filter(|node| node.up)
                        .map(|node| node.id)
                        .collect()
                }),
            })
        })
    }

    fn capacity(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let cap = self.node_capacity.load(Ordering::Relaxed);
            Ok(self.with(|n| {
                n.iter()
                    .filter(|node| node.up)
                    .map(|node| {
                        let used: u64 = node.shards.values().map(|b| b.len() as u64).sum();
                        cap.saturating_sub(used)
                    })
                    .sum()
            }))
        })
    }

    fn delete(&self, id: ShardId, holders: Vec<NodeId>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.with(|n| {
                for node in n.iter_mut().filter(|node| holders.contains(&node.id)) {
                    if !node.up {
                        return Err(remote("delete", id, "holder is down"));
                    }
                    node.shards.remove(&id);
                }
                Ok(())
            })
        })
    }
}

impl RootStore for MemoryClient {
    fn put_root(&self, record: Vec<u8>) -> BoxFuture<'_, Result<usize>> {
        Box::pin(async move {
            let difficulty = self.root_difficulty.load(Ordering::Relaxed);
            let offered = RootRecord::verify(&record, difficulty)?;
            let owner = offered.owner();
            self.with(|n| {
                let mut acks = 0;
                let mut refusal = None;
                for node in n.iter_mut().filter(|node| node.up) {
                    // A held record that no longer verifies (planted by a test) is no record.
                    let held = node
                        .roots
                        .get(&owner)
                        .and_then(|b| RootRecord::verify(b, difficulty).ok());
                    match admit(held.as_ref(), &offered) {
                        Ok(Admit::Store) => {
                            node.roots.insert(owner, record.clone());
                            acks += 1;
                        }
                        Ok(Admit::Same) => acks += 1,
                        Err(e) => refusal = Some(e),
                    }
                }
                match refusal {
                    Some(e) => Err(e),
                    None if acks == 0 => Err(Error::RootUnreachable {
                        owner,
                        reason: "no node is up".into(),
                    }),
                    None => Ok(acks),
                }
            })
        })
    }

    fn find_roots(&self, owner: NodeId) -> BoxFuture<'_, Result<Vec<Vec<u8>>>> {
        Box::pin(async move {
            self.with(|n| {
                if !n.iter().any(|node| node.up) {
                    return Err(Error::RootUnreachable {
                        owner,
                        reason: "no node is up".into(),
                    });
                }
                Ok(n.iter()
                    .filter(|node| node.up)
                    .filter_map(|node| node.roots.get(&owner).cloned())
                    .collect())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn record(id: &Identity, seq: u64) -> Vec<u8> {
        crate::root_record::testing::record(id, seq).into_bytes()
    }

    #[tokio::test]
    async fn root_records_are_kept_newest_first_and_never_rolled_back() {
        let client = MemoryClient::new(3);
        let id = Identity::generate(0);
        let owner = id.node_id();
        assert!(client.find_roots(owner).await.unwrap().is_empty());
        let r1 = record(&id, 1);
        let r2 = record(&id, 2);
        assert_eq!(client.put_root(r1.clone()).await.unwrap(), 3);
        // A resend of the same bytes is acknowledged and changes nothing.
        assert_eq!(client.put_root(r1.clone()).await.unwrap(), 3);
        assert_eq!(client.put_root(r2.clone()).await.unwrap(), 3);
        assert_eq!(client.find_roots(owner).await.unwrap(), vec![r2.clone(); 3]);
        // Rollback: seq 1 again, or seq 2 with other bytes.
        for stale in [r1, record(&id, 2)] {
            let err = client.put_root(stale).await.unwrap_err();
            assert!(matches!(err, Error::RootRollback { held: 2, .. }), "{err}");
        }
        assert_eq!(client.find_roots(owner).await.unwrap(), vec![r2.clone(); 3]);
        // Garbage and forged records are refused and store nothing.
        let mut forged = r2.clone();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert!(client.put_root(forged).await.is_err());
        assert!(client.put_root(vec![0; 10]).await.is_err());
        assert_eq!(client.find_roots(owner).await.unwrap(), vec![r2; 3]);
    }

    #[tokio::test]
    async fn a_node_that_was_down_keeps_its_older_record_and_readers_see_both() {
        let client = MemoryClient::new(2);
        let id = Identity::generate(0);
        let (r1, r2) = (record(&id, 1), record(&id, 2));
        client.put_root(r1.clone()).await.unwrap();
        client.set_up(1, false);
        assert_eq!(client.put_root(r2.clone()).await.unwrap(), 1);
        client.set_up(1, true);
        let mut found = client.find_roots(id.node_id()).await.unwrap();
        found.sort();
        let mut want = vec![r1, r2.clone()];
        want.sort();
        assert_eq!(found, want);
        // The stale node takes the newer record when it is offered again.
        assert_eq!(client.put_root(r2.clone()).await.unwrap(), 2);
        assert_eq!(client.root_on(1, id.node_id()), Some(r2));
        client.set_up(0, false);
        client.set_up(1, false);
        assert!(matches!(
            client.find_roots(id.node_id()).await,
            Err(Error::RootUnreachable { .. })
        ));
    }

    #[tokio::test]
    async fn a_shard_whose_crc_does_not_match_its_bytes_is_refused() {
        let client = MemoryClient::new(3);
        let bytes = b"shard bytes".to_vec();
        let id = ShardId(*blake3::hash(&bytes).as_bytes());
        let mut bad = OutShard::new(id, bytes.clone());
        bad.crc ^= 1;
        let err = client.store_segment(vec![bad], 0).await.unwrap_err();
        assert!(err.to_string().contains("CRC mismatch"), "{err}");
        assert_eq!(client.stored(), 0);
        let ok = client
            .store_segment(vec![OutShard::new(id, bytes)], 0)
            .await
            .unwrap();
        assert_eq!(ok.holders.len(), 1);
        assert_eq!(client.stored(), 1);
    }
}
