//! "A place that stores and returns shards": the trait through which everything above the
//! network (the filesystem, the CLI) reaches the storage network, in the spirit of
//! mountpoint-s3's `ObjectClient`. defs-core owns it so that defs-fuse never imports defs-net;
//! defs-net implements it over libp2p, and tests can implement it in memory.
//!
//! Shards are opaque, already-encrypted bytes named by their [`ShardId`] (BLAKE3 of the bytes).
//! Implementations verify every whole shard they return against its id.
//!
//! [`RootStore`] is the second, much smaller service of the same network: where an owner's
//! signed root record ([`crate::root_record`]) is kept (storage nodes and the DHT) and found.

use std::future::Future;
use std::pin::Pin;

use crate::durability::Liveness;
use crate::error::Result;
use crate::types::{NodeId, ShardId};

#[cfg(any(test, feature = "test-utils"))]
pub mod memory;

/// A boxed, sendable future (object-safe async methods).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The holders found for each shard id of a lookup.
pub type Holders = Vec<(ShardId, Vec<NodeId>)>;

/// A shard on its way to a holder: the bytes with the id and CRC32 the encoder computed while
/// they were hot in cache, so the sender does not hash them again (the holder checks both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutShard {
    /// BLAKE3 of `bytes`.
    pub id: ShardId,
    /// CRC32 of `bytes`.
    pub crc: u32,
    /// The (encrypted) shard.
    pub bytes: Vec<u8>,
}

impl OutShard {
    /// `bytes` named `id`, with their CRC32 computed here.
    pub fn new(id: ShardId, bytes: Vec<u8>) -> Self {
        OutShard {
            id,
            crc: crc32fast::hash(&bytes),
            bytes,
        }
    }
}

/// Where the shards of one segment went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSegment {
    /// For each shard, in order, the nodes that acknowledged it as durably stored.
    pub holders: Vec<Vec<NodeId>>,
    /// How many node losses the segment survives as placed (fewer than its parity count when
    /// there were fewer peers than shards).
    pub fault_tolerance: usize,
}

/// A network (or any store) that keeps shards for their owner.
pub trait ShardClient: Send + Sync {
    /// Stores the shards of one segment, each on a different node where possible, and returns
    /// once every shard is acknowledged as persisted. `parity` is how many of the shards may be
    /// lost with the segment still readable (it guides placement and the reported tolerance).
    ///
    /// # Errors
    /// When a shard cannot be stored anywhere, or there is no node to store on.
    fn store_segment(
        &self,
        shards: Vec<OutShard>,
        parity: usize,
    ) -> BoxFuture<'_, Result<StoredSegment>>;

    /// Stores each of `shards` on one node (distinct nodes where possible), preferring nodes
    /// not in `avoid` (those already holding other shards of the segment), and returns each
    /// shard's new holders: how repair re-places lost shards.
    ///
    /// The default ignores `avoid` and places like [`store_segment`](Self::store_segment),
    /// for stores without a choice of nodes.
    ///
    /// # Errors
    /// When a shard cannot be stored anywhere, or there is no node to store on.
    fn store_shards(
        &self,
        shards: Vec<OutShard>,
        avoid: Vec<NodeId>,
    ) -> BoxFuture<'_, Result<Vec<Vec<NodeId>>>> {
        let _ = avoid;
        Box::pin(async move { Ok(self.store_segment(shards, 0).await?.holders) })
    }

    /// Fetches a whole shard, trying `holders` first and a broadcast lookup when they fail.
    /// The returned bytes hash to `id`.
    ///
    /// # Errors
    /// When no reachable node returns bytes that verify.
    fn fetch(&self, id: ShardId, holders: Vec<NodeId>) -> BoxFuture<'_, Result<Vec<u8>>>;

    /// Fetches a whole shard from `holders` only, without a broadcast lookup when they fail:
    /// the cheap first try of a reader that can rebuild the shard from its siblings, which
    /// asks the network once per segment (with [`lookup`](Self::lookup)) only when the
    /// recorded holders of too many shards fail. The returned bytes hash to `id`.
    ///
    /// The default is [`fetch`](Self::fetch), for stores that have no separate lookup step.
    ///
    /// # Errors
    /// When no holder returns bytes that verify.
    fn fetch_recorded(&self, id: ShardId, holders: Vec<NodeId>) -> BoxFuture<'_, Result<Vec<u8>>> {
        self.fetch(id, holders)
    }

    /// Asks the network which nodes hold these shards.
    ///
    /// # Errors
    /// When the network is unreachable; ids nobody holds are simply absent.
    fn lookup(&self, ids: Vec<ShardId>) -> BoxFuture<'_, Result<Holders>>;

    /// As [`lookup`](Self::lookup), but waits for up to `want` holders of each id (or the
    /// lookup's window) instead of the first: to count the copies of a replicated object.
    ///
    /// The default is [`lookup`](Self::lookup).
    ///
    /// # Errors
    /// When the network is unreachable.
    fn lookup_many(&self, ids: Vec<ShardId>, want: usize) -> BoxFuture<'_, Result<Holders>> {
        let _ = want;
        self.lookup(ids)
    }

    /// Deletes a shard from `holders` (a signed, owner-only request).
    ///
    /// # Errors
    /// When a holder refuses or cannot be reached.
    fn delete(&self, id: ShardId, holders: Vec<NodeId>) -> BoxFuture<'_, Result<()>>;

    /// How many distinct nodes a segment should be spread over right now: the connected
    /// storage peers [`store_segment`](Self::store_segment) accepts, or 1 when there are none
    /// and the local node has a shard store of its own (a lone storage node). The local node
    /// does not count beside peers: its shards do not survive losing this machine. A segment
    /// of more shards than this survives fewer node losses than its parity count.
    ///
    /// # Errors
    /// When the network layer has stopped.
    fn storage_peers(&self) -> BoxFuture<'_, Result<usize>>;

    /// Free bytes advertised by the nodes [`storage_peers`](Self::storage_peers) counts (each
    /// peer's last reported capacity minus its use, plus the local store's), for `statfs`.
    /// Peers that have not reported yet count as 0. Raw shard bytes: a file needs more than its
    /// size (parity and replicas).
    ///
    /// # Errors
    /// When the network layer has stopped.
    fn capacity(&self) -> BoxFuture<'_, Result<u64>>;

    /// The nodes a durability figure may count now: this machine's node (whose shards do not
    /// count) and the other nodes reachable now. See [`crate::durability`].
    ///
    /// # Errors
    /// When the network layer has stopped.
    fn liveness(&self) -> BoxFuture<'_, Result<Liveness>>;
}

/// Where owners' signed root records ([`crate::root_record`]) are kept and found: storage
/// nodes (newest per owner, no rollback) and the DHT. Implementations check what they store
/// ([`RootRecord::verify`](crate::root_record::RootRecord::verify) and
/// [`admit`](crate::root_record::admit)) as nodes do; callers verify what they find.
pub trait RootStore: Send + Sync {
    /// Offers `record` (bytes of a signed root record) to the places that keep its owner's
    /// record, and returns how many of them acknowledged it as durably kept (a resend of the
    /// bytes already held counts).
    ///
    /// # Errors
    /// [`Error::RootRollback`](crate::Error::RootRollback) when a holder already keeps a newer
    /// record of the owner (a newer namespace exists: the caller must stop publishing);
    /// another error when no place acknowledged it.
    fn put_root(&self, record: Vec<u8>) -> BoxFuture<'_, Result<usize>>;

    /// The root records of `owner` that reachable places hold, as raw candidates (unverified,
    /// possibly stale, duplicated or forged): the caller verifies each and tries the highest
    /// seq first. Empty when nobody holds one.
    ///
    /// # Errors
    /// When no place could be asked at all (no peers, the network layer stopped).
    fn find_roots(&self, owner: NodeId) -> BoxFuture<'_, Result<Vec<Vec<u8>>>>;
}
