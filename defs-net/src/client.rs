//! The client side of the shard network: signed stores and deletes, verified fetches, placement
//! of a segment's shards on distinct peers with retries elsewhere, and the fallback to a
//! broadcast lookup when recorded holders fail. [`Client`] implements defs-core's
//! [`ShardClient`]; whole files (the pipeline plus a manifest) are in [`crate::files`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use defs_core::durability::Liveness;
use defs_core::identity::{Identity, SignDomain};
use defs_core::pipeline::WrapKey;
use defs_core::remote::{BoxFuture, Holders, OutShard, ShardClient, StoredSegment};
use defs_core::types::{NodeId, ShardId};
use futures::future::join_all;
use libp2p::PeerId;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::node::{Node, Outcome, node_id_of, now_ms, short};
use crate::placement::{self, Candidate};
use crate::protocol::{Auth, ErrorCode, MAX_SHARD_LEN, Request, Response, auth_message};
use crate::transfer::{DEFAULT_WORKERS, Priority, TransferPool};

/// Peers tried for one shard before a store gives up: the placed peer and three others.
pub const MAX_STORE_ATTEMPTS: u32 = 4;

/// How long [`Client::refresh_usage`] waits for a peer's figures: 5 s, a round trip to a slow
/// peer with room to spare; `defs status` waits at most this.
pub const USAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a broadcast lookup waits for answers.
pub const LOOKUP_WINDOW: Duration = Duration::from_secs(2);

/// The fixed part of one transfer's deadline with one peer ([`transfer_timeout`]): 8 s covers
/// a dial, the handshakes and a disk sync on a busy node, so a peer that went away or hangs
/// costs seconds, not the minutes of libp2p's own request timeout.
pub const TRANSFER_BASE: Duration = Duration::from_secs(8);

/// The slowest transfer rate a peer may keep before it counts as gone: 256 KiB/s per
/// transfer, a slow home uplink shared by a few transfers at once.
pub const TRANSFER_MIN_RATE: u64 = 256 << 10;

/// Bytes a fetch deadline assumes when the shard's length is not known beforehand: 2 MiB,
/// twice the default shard size.
pub const FETCH_SIZE_HINT: u64 = 2 << 20;

/// How long one request moving `bytes` to or from one peer may take before it counts as
/// failed and the transfer moves on to another peer: [`TRANSFER_BASE`] plus the bytes at
/// [`TRANSFER_MIN_RATE`].
pub fn transfer_timeout(bytes: u64) -> Duration {
    TRANSFER_BASE + Duration::from_millis(bytes.saturating_mul(1000) / TRANSFER_MIN_RATE)
}

/// The client of the shard network: a node handle, the owner's identity and a transfer pool.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    node: Node,
    identity: Arc<Identity>,
    pool: TransferPool,
}

impl Client {
    /// A client over `node`, signing with `identity`, running [`DEFAULT_WORKERS`] transfers at once.
    pub fn new(node: Node, identity: Arc<Identity>) -> Client {
        Client::with_workers(node, identity, DEFAULT_WORKERS)
    }

    /// A client with a transfer pool of `workers`.
    pub fn with_workers(node: Node, identity: Arc<Identity>, workers: usize) -> Client {
        Client {
            node,
            identity,
            pool: TransferPool::spawn(workers),
        }
    }

    /// The node this client talks through.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The owner's identity.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The key that opens this owner's manifests.
    pub fn wrap_key(&self) -> WrapKey {
        self.identity.manifest_wrap_key()
    }

    /// The transfer pool.
    pub fn pool(&self) -> &TransferPool {
        &self.pool
    }

    /// Signs a store (`len` = shard length) or delete (`len` = 0) of `id`.
    pub fn auth(&self, domain: SignDomain, id: &ShardId, len: u32) -> Auth {
        let mut nonce = [0u8; 16];
        // A failing OS RNG leaves a time-based nonce: still unique per request in practice.
        if getrandom::fill(&mut nonce).is_err() {
            nonce[..8].copy_from_slice(&now_ms().to_le_bytes());
        }
        let ts = now_ms();
        let owner = self.identity.node_id();
        let sig = self
            .identity
            .sign(domain, &auth_message(id, len, &owner, ts, &nonce));
        Auth {
            public_key: self.identity.public().to_bytes(),
            timestamp_ms: ts,
            nonce,
            signature: sig.0,
        }
    }

    /// Stores `data` (named `id`) on `peer`; returns once the peer has it on disk.
    ///
    /// # Errors
    /// [`Error::Remote`] when the peer refuses (quota full, bad signature…), [`Error::Request`]
    /// when it cannot be reached.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the answer; the peer may still store the shard.
    pub async fn store_on(&self, peer: PeerId, id: ShardId, data: impl Into<Bytes>) -> Result<()> {
        let data: Bytes = data.into();
        let crc = crc32fast::hash(&data);
        self.store_checked_on(peer, id, crc, data).await
    }

    /// [`store_on`](Self::store_on) for a caller that already holds `crc`, the CRC32 of `data`
    /// (the encoder computes it once; the peer checks it).
    async fn store_checked_on(
        &self,
        peer: PeerId,
        id: ShardId,
        crc: u32,
        data: Bytes,
    ) -> Result<()> {
        let len = u32::try_from(data.len())
            .ok()
            .filter(|l| *l <= MAX_SHARD_LEN)
            .ok_or(Error::TooLarge {
                what: "shard",
                size: data.len() as u64,
                limit: u64::from(MAX_SHARD_LEN),
            })?;
        let auth = self.auth(SignDomain::StoreShard, &id, len);
        let request = Request::Store {
            id,
            auth,
            crc,
            data,
        };
        match self
            .request_within(peer, request, transfer_timeout(u64::from(len)))
            .await?
        {
            Response::Stored => Ok(()),
            _ => Err(Error::UnexpectedResponse {
                peer: Box::new(peer),
                what: "store",
            }),
        }
    }

    /// Sends `request` to `peer` and waits at most `within` for the answer; a peer that does
    /// not answer in time counts as a failure for its score.
    ///
    /// # Errors
    /// [`Error::Request`] on a timeout, as [`Node::request`] otherwise.
    async fn request_within(
        &self,
        peer: PeerId,
        request: Request,
        within: Duration,
    ) -> Result<Response> {
        match tokio::time::timeout(within, self.node.request(peer, request)).await {
            Ok(r) => r,
            Err(_) => {
                self.node.report(peer, Outcome::Failure);
                Err(Error::Request {
                    peer: Box::new(peer),
                    reason: format!("no answer within {} s", within.as_secs()),
                })
            }
        }
    }

    /// Fetches the whole shard `id` from `peer` and verifies it against its id. Bad data lowers
    /// the peer's score.
    ///
    /// # Errors
    /// [`Error::BadShard`] when the bytes do not hash to `id`; [`Error::Remote`] (e.g. not found),
    /// [`Error::Request`].
    pub async fn fetch_from(&self, peer: PeerId, id: ShardId) -> Result<Vec<u8>> {
        let started = Instant::now();
        let resp = self
            .request_within(
                peer,
                Request::Fetch { id, range: None },
                transfer_timeout(FETCH_SIZE_HINT),
            )
            .await?;
        let Response::Data(data) = resp else {
            self.node.report(peer, Outcome::BadData);
            return Err(Error::UnexpectedResponse {
                peer: Box::new(peer),
                what: "fetch",
            });
        };
        // BLAKE3 of a few MiB on a blocking thread keeps the runtime responsive.
        let (data, ok) = tokio::task::spawn_blocking(move || {
            let ok = *blake3::hash(&data).as_bytes() == id.0;
            (data, ok)
        })
        .await
        .map_err(|e| Error::Request {
            peer: Box::new(peer),
            reason: format!("verify task: {e}"),
        })?;
        if !ok {
            warn!(peer = %short(&peer), shard = %id, "peer returned bad shard data");
            self.node.report(peer, Outcome::BadData);
            return Err(Error::BadShard {
                peer: Box::new(peer),
                shard: id,
                reason: "bytes do not hash to the shard id",
            });
        }
        self.node.report(
            peer,
            Outcome::Success {
                bytes: data.len() as u64,
                took: started.elapsed(),
            },
        );
        Ok(data)
    }

    /// Fetches `len` bytes at `offset` of shard `id` from `peer`. Range reads cannot be checked
    /// against the id; callers verify them (AEAD) after assembling.
    ///
    /// # Errors
    /// As [`Client::fetch_from`], and [`Error::BadShard`] when the peer returns a wrong length.
    pub async fn fetch_range(
        &self,
        peer: PeerId,
        id: ShardId,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>> {
        let request = Request::Fetch {
            id,
            range: Some((offset, len)),
        };
        match self
            .request_within(peer, request, transfer_timeout(u64::from(len)))
            .await?
        {
            Response::Data(d) if d.len() == len as usize => Ok(d),
            Response::Data(_) => {
                self.node.report(peer, Outcome::BadData);
                Err(Error::BadShard {
                    peer: Box::new(peer),
                    shard: id,
                    reason: "range has the wrong length",
                })
            }
            _ => Err(Error::UnexpectedResponse {
                peer: Box::new(peer),
                what: "fetch range",
            }),
        }
    }

    /// Asks `peer` which of `ids` it holds; the length of each held shard.
    ///
    /// # Errors
    /// [`Error::Remote`], [`Error::Request`], [`Error::UnexpectedResponse`].
    pub async fn has(&self, peer: PeerId, ids: Vec<ShardId>) -> Result<Vec<Option<u32>>> {
        let n = ids.len();
        match self
            .request_within(peer, Request::Has { ids }, TRANSFER_BASE)
            .await?
        {
            Response::Has(lens) if lens.len() == n => Ok(lens),
            _ => Err(Error::UnexpectedResponse {
                peer: Box::new(peer),
                what: "has",
            }),
        }
    }

    /// Deletes shard `id` from `peer` (signed by the owner).
    ///
    /// # Errors
    /// [`Error::Remote`] with `NotOwner` when we do not own it, `NotFound`, …
    pub async fn delete_on(&self, peer: PeerId, id: ShardId) -> Result<()> {
        let auth = self.auth(SignDomain::DeleteShard, &id, 0);
        match self
            .node
            .request(peer, Request::Delete { id, auth })
            .await?
        {
            Response::Deleted => Ok(()),
            _ => Err(Error::UnexpectedResponse {
                peer: Box::new(peer),
                what: "delete",
            }),
        }
    }

    /// Stores one shard through the pool, on `first` and then on other candidates (preferring
    /// peers not in `avoid`) until one acknowledges. Returns the peer that has it.
    async fn store_with_retry(
        &self,
        shard: OutShard,
        first: PeerId,
        candidates: Arc<Vec<Candidate>>,
        avoid: Arc<HashSet<PeerId>>,
        priority: Priority,
    ) -> Result<PeerId> {
        let OutShard { id, crc, bytes } = shard;
        let data = Bytes::from(bytes);
        let mut tried: Vec<PeerId> = Vec::new();
        let mut peer = first;
        let mut last = String::from("no peer tried");
        // Attempts refused because the owner's quota (or the node) is full, and refused for
        // any other reason (unreachable peers and timeouts are neither).
        let mut quota_refusals = 0u32;
        let mut other_refusals = 0u32;
        for attempt in 0..MAX_STORE_ATTEMPTS {
            tried.push(peer);
            let this = self.clone();
            // Shared, not copied: every attempt sends the same buffer.
            let bytes = data.clone();
            let r = self
                .pool
                .run(priority, async move {
                    this.store_checked_on(peer, id, crc, bytes).await
                })
                .await?;
            match r {
                Ok(()) => return Ok(peer),
                Err(e) => {
                    debug!(shard = %id, peer = %short(&peer), attempt, error = %e, "store failed; trying another peer");
                    if e.remote_code().is_some_and(|c| c != ErrorCode::QuotaFull) {
                        other_refusals += 1;
                    }
                    if e.remote_code() == Some(ErrorCode::QuotaFull) {
                        quota_refusals += 1;
                        self.node.report(peer, Outcome::Failure);
                        // Its cached figures are stale: ask for them again (statfs, status).
                        self.refresh_usage_of(peer);
                    }
                    last = format!("{e}");
                }
            }
            // Next: the best-scored untried candidate not holding this segment, else any untried,
            // among the candidates connected now (a peer that went away or is shutting down
            // since the segment was placed is no longer one, so it costs no second attempt).
            let now = match self.node.candidates(data.len() as u64).await {
                Ok(c) => Arc::new(c),
                Err(_) => candidates.clone(),
            };
            // This machine's store is a last resort against unreachable peers, not a way around
            // the owner's quota on the network: a shard refused for quota never lands there.
            let untried = now
                .iter()
                .filter(|c| !tried.contains(&c.peer) && (!c.local || quota_refusals == 0));
            let fresh: Vec<&Candidate> = untried
                .clone()
                .filter(|c| !avoid.contains(&c.peer))
                .collect();
            let pool: Vec<&Candidate> = if fresh.is_empty() {
                untried.collect()
            } else {
                fresh
            };
            let Some(next) = pool
                .iter()
                .max_by(|a, b| a.score.total_cmp(&b.score))
                .map(|c| c.peer)
            else {
                break;
            };
            peer = next;
        }
        let attempts = tried.len() as u32;
        Err(Error::StoreFailed {
            shard: id,
            attempts,
            // Every node that answered refused for quota (some may not have answered at all).
            quota: quota_refusals > 0 && other_refusals == 0,
            last,
        })
    }

    /// Places and stores the shards of one segment: distinct peers chosen by score, each shard
    /// retried on other peers when its peer fails. Returns once every shard is acknowledged.
    ///
    /// # Errors
    /// [`Error::NoPeers`] when no storage peer is connected; [`Error::StoreFailed`] when a shard
    /// could not be stored anywhere.
    pub async fn store_segment_on_network(
        &self,
        shards: Vec<OutShard>,
        parity: usize,
        priority: Priority,
    ) -> Result<(Vec<PeerId>, usize)> {
        let candidates = self.node.candidates(largest(&shards)).await?;
        let placed = placement::choose(&candidates, shards.len(), parity);
        if placed.peers.is_empty() {
            return Err(Error::NoPeers);
        }
        let candidates = Arc::new(candidates);
        let avoid: Arc<HashSet<PeerId>> = Arc::new(placed.peers.iter().copied().collect());
        let jobs = shards
            .into_iter()
            .zip(placed.peers.iter().copied())
            .map(|(shard, peer)| {
                self.store_with_retry(shard, peer, candidates.clone(), avoid.clone(), priority)
            });
        let results = join_all(jobs).await;
        let mut holders = Vec::with_capacity(results.len());
        for r in results {
            holders.push(r?);
        }
        let tolerance = placement::fault_tolerance(&holders, parity);
        Ok((holders, tolerance))
    }

    /// Stores each of `shards` on one peer chosen by score among those whose node is not in
    /// `avoid` (all candidates when none is left), on distinct peers where there are enough,
    /// each retried elsewhere when its peer fails: how repair re-places lost shards. Returns
    /// each shard's peer.
    ///
    /// # Errors
    /// [`Error::NoPeers`]; [`Error::StoreFailed`] when a shard could not be stored anywhere.
    pub async fn store_shards_avoiding(
        &self,
        shards: Vec<OutShard>,
        avoid: &[NodeId],
        priority: Priority,
    ) -> Result<Vec<PeerId>> {
        let candidates = self.node.candidates(largest(&shards)).await?;
        let avoided = |c: &Candidate| node_id_of(&c.peer).is_some_and(|n| avoid.contains(&n));
        let fresh: Vec<Candidate> = candidates.iter().filter(|c| !avoided(c)).cloned().collect();
        let placed = placement::choose(
            if fresh.is_empty() {
                &candidates
            } else {
                &fresh
            },
            shards.len(),
            0,
        );
        if placed.peers.is_empty() {
            return Err(Error::NoPeers);
        }
        let mut keep_off: HashSet<PeerId> = placed.peers.iter().copied().collect();
        keep_off.extend(candidates.iter().filter(|c| avoided(c)).map(|c| c.peer));
        let (candidates, keep_off) = (Arc::new(candidates), Arc::new(keep_off));
        let jobs = shards
            .into_iter()
            .zip(placed.peers.iter().copied())
            .map(|(shard, peer)| {
                self.store_with_retry(shard, peer, candidates.clone(), keep_off.clone(), priority)
            });
        join_all(jobs).await.into_iter().collect()
    }

    /// Fetches and verifies shard `id`: from `holders` in order, then from whoever answers a
    /// broadcast lookup. Bad data from a peer is skipped (and lowers its score).
    ///
    /// # Errors
    /// [`Error::Core`] with [`defs_core::Error::Remote`] listing what was tried when no peer
    /// returns valid bytes.
    pub async fn fetch_verified(
        &self,
        id: ShardId,
        holders: Vec<PeerId>,
        priority: Priority,
    ) -> Result<Vec<u8>> {
        match self.fetch_verified_from(id, &holders, priority).await {
            Ok(d) => return Ok(d),
            Err(e) => {
                debug!(shard = %id, error = %e, "recorded holders failed; broadcasting a lookup")
            }
        }
        // Wait for more than one answer: the first answering holder may be the one that failed.
        let others = self.other_holders(id, &holders, holders.len() + 2).await?;
        if others.is_empty() {
            return Err(Error::Core(defs_core::Error::Remote {
                op: "fetch",
                shard: id,
                reason: "the recorded holders failed and nobody answered the lookup".into(),
            }));
        }
        self.fetch_verified_from(id, &others, priority).await
    }

    /// Holders of `id` other than `tried`, by a broadcast lookup that waits for up to `want`
    /// answers (or [`LOOKUP_WINDOW`]).
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn other_holders(
        &self,
        id: ShardId,
        tried: &[PeerId],
        want: usize,
    ) -> Result<Vec<PeerId>> {
        let found = self
            .node
            .lookup_holders(vec![id], want, LOOKUP_WINDOW)
            .await?;
        Ok(found
            .get(&id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !tried.contains(p))
            .collect())
    }

    /// Fetches and verifies shard `id` from `peers` in order (no lookup).
    ///
    /// # Errors
    /// [`Error::Core`] with [`defs_core::Error::Remote`] listing every peer's failure.
    pub async fn fetch_verified_from(
        &self,
        id: ShardId,
        peers: &[PeerId],
        priority: Priority,
    ) -> Result<Vec<u8>> {
        let mut errors: Vec<String> = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            if peers[..i].contains(peer) {
                continue;
            }
            match self.fetch_pooled(*peer, id, priority).await {
                Ok(d) => return Ok(d),
                Err(e) => errors.push(format!("{e}")),
            }
        }
        Err(Error::Core(defs_core::Error::Remote {
            op: "fetch",
            shard: id,
            reason: if errors.is_empty() {
                "no reachable holder".into()
            } else {
                errors.join("; ")
            },
        }))
    }

    async fn fetch_pooled(&self, peer: PeerId, id: ShardId, priority: Priority) -> Result<Vec<u8>> {
        let this = self.clone();
        self.pool
            .run(priority, async move { this.fetch_from(peer, id).await })
            .await?
    }

    /// Nodes a segment should be spread over now: the connected storage peers whose identity
    /// puzzle checks out, or, when there are none, this node alone when it has a shard store.
    /// This node does not count beside peers: its shards do not survive losing this machine
    /// ([`defs_core::durability`]), so a geometry sized for it would promise losses the file
    /// cannot survive. 0 means a put would fail with [`Error::NoPeers`].
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn storage_peers(&self) -> Result<usize> {
        let candidates = self.node.candidates(0).await?;
        let remote = candidates.iter().filter(|c| !c.local).count();
        Ok(if remote > 0 { remote } else { candidates.len() })
    }

    /// The nodes a durability figure may count now: this node (its shards do not count) and
    /// the peers connected now ([`Node::live`]).
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn liveness(&self) -> Result<Liveness> {
        Ok(Liveness {
            local: Some(self.node.node_id()),
            live: self.node.live().await?.into_iter().collect(),
        })
    }

    /// Bytes this owner may still store on the network, raw (before redundancy), from the
    /// figures the node keeps ([`crate::node::owner_room`]): no network round trip.
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::NoPeers`] when no storage node has reported its space yet.
    pub async fn capacity(&self) -> Result<u64> {
        crate::node::owner_room(&self.node.status().await?.owner_space).ok_or(Error::NoPeers)
    }

    /// Asks every connected storage peer at once for its capacity and for this owner's use and
    /// quota there, and waits for the answers (each at most [`USAGE_TIMEOUT`]), so the node's
    /// figures ([`crate::node::NodeStatus::owner_space`]) are those of now. A peer that does
    /// not answer keeps its last figures.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn refresh_usage(&self) -> Result<()> {
        let space = self.node.status().await?.owner_space;
        let asks = space.iter().filter(|s| !s.local).flat_map(|s| {
            [Request::Info, Request::OwnerUsage]
                .map(|r| self.request_within(s.peer, r, USAGE_TIMEOUT))
        });
        for r in join_all(asks).await {
            if let Err(e) = r {
                debug!(error = %e, "usage refresh: no answer");
            }
        }
        Ok(())
    }

    /// Asks `peer` for this owner's use and quota in the background (its answer updates the
    /// node's figures).
    fn refresh_usage_of(&self, peer: PeerId) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this
                .request_within(peer, Request::OwnerUsage, USAGE_TIMEOUT)
                .await
            {
                debug!(peer = %short(&peer), error = %e, "usage refresh: no answer");
            }
        });
    }

    /// Connected peers for the given node ids (manifest holders); unknown ones are left out.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn peers_for(&self, nodes: &[NodeId]) -> Result<Vec<PeerId>> {
        Ok(self
            .node
            .resolve(nodes.to_vec())
            .await?
            .into_iter()
            .flatten()
            .collect())
    }
}

fn to_core(op: &'static str, shard: ShardId, e: Error) -> defs_core::Error {
    match e {
        Error::Core(c) => c,
        Error::StoreFailed {
            shard,
            attempts,
            quota: true,
            last,
        } => defs_core::Error::QuotaRefused {
            shard,
            nodes: attempts,
            last,
        },
        e => defs_core::Error::Remote {
            op,
            shard,
            reason: format!("{e}"),
        },
    }
}

/// Bytes of the largest of `shards`: what each candidate must have room for.
fn largest(shards: &[OutShard]) -> u64 {
    shards
        .iter()
        .map(|s| s.bytes.len() as u64)
        .max()
        .unwrap_or(0)
}

fn node_ids(peers: &[PeerId]) -> Vec<NodeId> {
    peers.iter().filter_map(node_id_of).collect()
}

impl ShardClient for Client {
    fn store_segment(
        &self,
        shards: Vec<OutShard>,
        parity: usize,
    ) -> BoxFuture<'_, defs_core::Result<StoredSegment>> {
        Box::pin(async move {
            let first = shards.first().map(|s| s.id).unwrap_or_default();
            let (holders, fault_tolerance) = self
                .store_segment_on_network(shards, parity, Priority::Background)
                .await
                .map_err(|e| to_core("store", first, e))?;
            Ok(StoredSegment {
                holders: holders.iter().map(|p| node_ids(&[*p])).collect(),
                fault_tolerance,
            })
        })
    }

    fn fetch(
        &self,
        id: ShardId,
        holders: Vec<NodeId>,
    ) -> BoxFuture<'_, defs_core::Result<Vec<u8>>> {
        Box::pin(async move {
            let peers = self
                .peers_for(&holders)
                .await
                .map_err(|e| to_core("fetch", id, e))?;
            self.fetch_verified(id, peers, Priority::Interactive)
                .await
                .map_err(|e| to_core("fetch", id, e))
        })
    }

    fn fetch_recorded(
        &self,
        id: ShardId,
        holders: Vec<NodeId>,
    ) -> BoxFuture<'_, defs_core::Result<Vec<u8>>> {
        Box::pin(async move {
            let peers = self
                .peers_for(&holders)
                .await
                .map_err(|e| to_core("fetch", id, e))?;
            self.fetch_verified_from(id, &peers, Priority::Interactive)
                .await
                .map_err(|e| to_core("fetch", id, e))
        })
    }

    fn store_shards(
        &self,
        shards: Vec<OutShard>,
        avoid: Vec<NodeId>,
    ) -> BoxFuture<'_, defs_core::Result<Vec<Vec<NodeId>>>> {
        Box::pin(async move {
            let first = shards.first().map(|s| s.id).unwrap_or_default();
            let peers = self
                .store_shards_avoiding(shards, &avoid, Priority::Background)
                .await
                .map_err(|e| to_core("store", first, e))?;
            Ok(peers.iter().map(|p| node_ids(&[*p])).collect())
        })
    }

    fn lookup_many(
        &self,
        ids: Vec<ShardId>,
        want: usize,
    ) -> BoxFuture<'_, defs_core::Result<Holders>> {
        Box::pin(async move {
            let first = ids.first().copied().unwrap_or_default();
            let found = self
                .node
                .lookup_holders(ids, want, LOOKUP_WINDOW)
                .await
                .map_err(|e| to_core("lookup", first, e))?;
            Ok(found
                .into_iter()
                .map(|(id, peers)| (id, node_ids(&peers)))
                .collect())
        })
    }

    fn lookup(&self, ids: Vec<ShardId>) -> BoxFuture<'_, defs_core::Result<Holders>> {
        Box::pin(async move {
            let first = ids.first().copied().unwrap_or_default();
            let found = self
                .node
                .lookup(ids, LOOKUP_WINDOW)
                .await
                .map_err(|e| to_core("lookup", first, e))?;
            Ok(found
                .into_iter()
                .map(|(id, peers)| (id, node_ids(&peers)))
                .collect())
        })
    }

    fn delete(&self, id: ShardId, holders: Vec<NodeId>) -> BoxFuture<'_, defs_core::Result<()>> {
        Box::pin(async move {
            let peers = self
                .peers_for(&holders)
                .await
                .map_err(|e| to_core("delete", id, e))?;
            for peer in peers {
                match self.delete_on(peer, id).await {
                    Ok(()) => {}
                    Err(e) if e.remote_code() == Some(ErrorCode::NotFound) => {}
                    Err(e) => return Err(to_core("delete", id, e)),
                }
            }
            Ok(())
        })
    }
    fn storage_peers(&self) -> BoxFuture<'_, defs_core::Result<usize>> {
        Box::pin(async move {
            self.storage_peers()
                .await
                .map_err(|e| to_core("storage peers", ShardId::default(), e))
        })
    }

    fn liveness(&self) -> BoxFuture<'_, defs_core::Result<Liveness>> {
        Box::pin(async move {
            self.liveness()
                .await
                .map_err(|e| to_core("liveness", ShardId::default(), e))
        })
    }

    fn capacity(&self) -> BoxFuture<'_, defs_core::Result<u64>> {
        Box::pin(async move {
            self.capacity()
                .await
                .map_err(|e| to_core("capacity", ShardId::default(), e))
        })
    }
}
