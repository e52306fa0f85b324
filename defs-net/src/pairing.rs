//! Dual-node pairing: each storage node keeps a mirror of its shard store on one partner,
//! heartbeats it, and finds a new partner when it stops answering; the partner keeps the
//! mirror copies in its own store, so lookups find them there (the index stays answerable).
//!
//! ```text
//!  node A (ward) ── Pair / Heartbeat / Mirror / Audit ──► node B (A's partner)
//!   PairingTask: choose partner by score, heartbeat,          actor: admits A's frames
//!   mirror pass (list → Has → Mirror), verify (Audit)         (Shared: wards, last heard)
//!   ward expiry: a silent ward's copies become our own        store: copy owned by its owners
//!                                                             + the marker of A
//! ```
//!
//! - Who mirrors what: a node mirrors its *primary* shards, those not held as a mirror copy
//!   for a ward. A mirror copy is stored for each of its owners and for the ward's [`marker`]
//!   (a pseudo-owner, BLAKE3 of a domain and the ward's node id), so the owners keep their
//!   rights over it and the node tells copies from primaries without a second index.
//! - Single failure: when a partner has not answered for [`Config::partner_timeout`], the
//!   survivor picks a new one and mirrors everything again; when a ward has been silent as
//!   long, the node *adopts* its copies (drops the marker): they become primary and are
//!   mirrored to the node's own partner. So a pair that loses one node keeps two copies of
//!   everything once the survivor's new mirror is complete.
//! - Bandwidth: mirror copies are sent at most [`Config::mirror_bandwidth`] bytes/s; a pass
//!   over the whole store (ids only, in pages, `Has` on the partner) runs at pairing and every
//!   [`Config::rescan`]; shards stored in between are mirrored within a tick.
//! - Lies: a sample of the shards the partner says it holds is audited ([`crate::audit`]); a
//!   failed proof is logged, the copy sent again, and after [`MAX_LIES`] the partner is dropped.
//! - State (`partner`, `ward` lines) survives restarts in [`Config::state`] (`docs/format.md`).
//!
//! Shared state between the actor and the task is one small `Mutex` ([`Shared`]), never held
//! across an await.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use defs_core::shard_store::ShardStore;
use defs_core::types::{NodeId, ShardId};
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

mod state;

use crate::node::{Node, node_id_of, now_ms, short};
use crate::protocol::{ErrorCode, MAX_IDS, MAX_MIRROR_OWNERS, Request, Response};
use state::VERIFY_SAMPLE;
pub use state::{
    AVOID_FOR, Config, HEARTBEAT, MAX_LIES, MAX_WARDS, MIRROR_BANDWIDTH, NEW_QUEUE,
    PARTNER_TIMEOUT, RESCAN, Report, STATE_FILE, TICK, VERIFY_EVERY, marker,
};
pub(crate) use state::{Inbound, Shared};

/// The IPv4 /24 or IPv6 /48 of an address, to tell subnets apart.
fn subnet(addr: &libp2p::Multiaddr) -> Option<Vec<u8>> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.octets()[..3].to_vec()),
        Protocol::Ip6(ip) => Some(ip.octets()[..6].to_vec()),
        _ => None,
    })
}

/// How much a candidate in another subnet or zone is preferred as a partner.
const DIVERSITY_BONUS: f64 = 4.0;

/// A possible partner: peer, score, the subnets of its addresses, its zone.
type Prospect = (PeerId, f64, Vec<Vec<u8>>, Option<String>);

/// Ranks partner candidates, best first: score, times [`DIVERSITY_BONUS`] for one in another
/// subnet (or zone) than ours when there is one.
fn rank(candidates: Vec<Prospect>, ours: &HashSet<Vec<u8>>, our_zone: Option<&str>) -> Vec<PeerId> {
    let mut scored: Vec<(f64, PeerId)> = candidates
        .into_iter()
        .filter(|c| c.1 > 0.0)
        .map(|(p, score, nets, zone)| {
            let other_net = !nets.is_empty() && nets.iter().all(|n| !ours.contains(n));
            let other_zone = match (zone.as_deref(), our_zone) {
                (Some(z), Some(o)) => z != o,
                _ => false,
            };
            let bonus = if other_net || other_zone {
                DIVERSITY_BONUS
            } else {
                1.0
            };
            (score * bonus, p)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|s| s.1).collect()
}

/// The pairing task of one storage node.
pub(crate) struct PairingTask {
    node: Node,
    store: Arc<ShardStore>,
    shared: Arc<Shared>,
    new: mpsc::Receiver<ShardId>,
    cancel: CancellationToken,
    /// When the partner last answered.
    last_ack: Instant,
    next_beat: Instant,
    /// Shards to mirror soon (new ones, failed sends, copies that failed a proof).
    queue: VecDeque<ShardId>,
    queued: HashSet<ShardId>,
    /// The running pass: the last id done, and its counts so far.
    pass: Option<Pass>,
    next_pass: Instant,
    /// Bytes of mirror copies that may still be sent this tick (negative: debt).
    budget: i64,
    /// Confirmed copies on the partner, for audits of its mirror.
    sample: VecDeque<ShardId>,
    next_verify: Instant,
    /// Partners given up, not chosen again before the instant.
    avoid: HashMap<PeerId, Instant>,
    old_store_logged: bool,
    /// A full pass has ended since the partner, the wards or a copy last changed.
    clean: bool,
    /// A full pass has counted our primary shards (since start).
    counted: bool,
}

#[derive(Debug, Default)]
struct Pass {
    after: Option<ShardId>,
    shards: u64,
    bytes: u64,
    missing: u64,
}

impl PairingTask {
    pub(crate) fn new(
        node: Node,
        store: Arc<ShardStore>,
        shared: Arc<Shared>,
        new: mpsc::Receiver<ShardId>,
        cancel: CancellationToken,
    ) -> PairingTask {
        let now = Instant::now();
        PairingTask {
            node,
            store,
            shared,
            new,
            cancel,
            last_ack: now,
            next_beat: now,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            pass: None,
            next_pass: now,
            budget: 0,
            sample: VecDeque::new(),
            next_verify: now,
            avoid: HashMap::new(),
            old_store_logged: false,
            clean: false,
            counted: false,
        }
    }

    fn cfg(&self) -> &Config {
        &self.shared.cfg
    }

    fn partner(&self) -> Option<PeerId> {
        self.shared.lock().partner.map(|p| p.0)
    }

    fn control(&self, bytes: u64) {
        self.shared.lock().report.control_bytes += bytes;
    }

    pub(crate) async fn run(mut self) {
        let mut tick = crate::node::ticker(TICK);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            while let Ok(id) = self.new.try_recv() {
                self.enqueue(id);
            }
            if self.shared.overflow.swap(false, Ordering::Relaxed) {
                self.next_pass = Instant::now();
            }
            let step = async {
                self.expire_wards().await?;
                self.keep_partner().await?;
                self.mirror().await?;
                self.verify().await
            };
            match step.await {
                Ok(()) => {}
                Err(Error::Closed) => break,
                Err(e) => warn!(error = %e, "pairing step failed; retried next tick"),
            }
            self.publish();
        }
        debug!("pairing task stopped");
    }

    fn enqueue(&mut self, id: ShardId) {
        if self.queued.len() < NEW_QUEUE && self.queued.insert(id) {
            self.queue.push_back(id);
        } else if !self.queued.contains(&id) {
            // Too many at once: the next pass finds it.
            self.next_pass = Instant::now();
        }
    }

    fn publish(&self) {
        let lag: u64 = self.queue.len() as u64;
        let mut st = self.shared.lock();
        let paired = st.partner.is_some();
        let r = &mut st.report;
        r.checking = self.pass.is_some();
        r.lag_shards = lag + self.pass.as_ref().map_or(0, |p| p.missing);
        r.complete = paired && self.clean && self.pass.is_none() && lag == 0;
    }

    /// Adopts the copies of wards silent for longer than the partner timeout.
    async fn expire_wards(&mut self) -> Result<()> {
        let timeout = self.cfg().partner_timeout;
        let gone: Vec<PeerId> = self
            .shared
            .lock()
            .wards
            .iter()
            .filter(|(_, seen)| seen.elapsed() > timeout)
            .map(|(w, _)| *w)
            .collect();
        for ward in gone {
            let Some(node) = node_id_of(&ward) else {
                continue;
            };
            let mark = marker(&node);
            let store = self.store.clone();
            let adopted = tokio::task::spawn_blocking(move || adopt(&store, &mark))
                .await
                .map_err(|e| Error::Setup(format!("adoption task: {e}")))??;
            {
                let mut st = self.shared.lock();
                st.wards.remove(&ward);
                self.shared.save(&st);
            }
            warn!(
                ward = %short(&ward),
                silent_secs = timeout.as_secs(),
                shards = adopted.0,
                bytes = adopted.1,
                "a node whose mirror we keep has been silent too long: its copies are now our own and are mirrored to our partner"
            );
            // Its copies are primary now: mirror them.
            self.next_pass = Instant::now();
            self.mark_incomplete();
        }
        Ok(())
    }

    fn mark_incomplete(&mut self) {
        self.clean = false;
        self.shared.lock().report.complete = false;
    }

    /// Heartbeats the partner; replaces it when silent too long; finds one when there is none.
    async fn keep_partner(&mut self) -> Result<()> {
        let Some(partner) = self.partner() else {
            return self.choose().await;
        };
        let now = Instant::now();
        if now < self.next_beat {
            return Ok(());
        }
        self.next_beat = now + self.cfg().heartbeat;
        let primary_bytes = self.shared.lock().report.primary_bytes;
        let asked = self
            .node
            .request(partner, Request::Heartbeat { primary_bytes })
            .await;
        self.control(2 * 48);
        match asked {
            Ok(Response::Beat { mirrored_bytes }) => {
                self.last_ack = Instant::now();
                let mut st = self.shared.lock();
                st.report.last_beat_ms = now_ms();
                st.report.partner_mirrored_bytes = mirrored_bytes;
                let primary = st.report.primary_bytes;
                drop(st);
                if primary > 0
                    && mirrored_bytes > primary.saturating_mul(2)
                    && !self.old_store_logged
                {
                    self.old_store_logged = true;
                    warn!(
                        partner = %short(&partner),
                        mirrored_bytes,
                        primary_bytes = primary,
                        "our partner mirrors much more than this node holds: this node rejoined with an old or emptied store; the partner's copies keep answering lookups"
                    );
                }
                Ok(())
            }
            Ok(other) => {
                warn!(partner = %short(&partner), answer = ?other, "partner answered a heartbeat with garbage");
                self.maybe_drop(partner).await
            }
            Err(Error::Remote { error, .. }) if error.code == ErrorCode::NotPaired => {
                warn!(partner = %short(&partner), "our partner no longer keeps our pairing (it may have adopted our copies while we were away): pairing again");
                self.ask_pair(partner).await?;
                Ok(())
            }
            Err(Error::Closed) => Err(Error::Closed),
            Err(e) => {
                debug!(partner = %short(&partner), error = %e, "heartbeat failed");
                self.maybe_drop(partner).await
            }
        }
    }

    async fn maybe_drop(&mut self, partner: PeerId) -> Result<()> {
        let silent = self.last_ack.elapsed();
        if silent > self.cfg().partner_timeout {
            warn!(
                partner = %short(&partner),
                silent_secs = silent.as_secs(),
                "pair partner stopped answering: choosing a new partner and mirroring again"
            );
            self.drop_partner(partner);
            self.choose().await?;
        }
        Ok(())
    }

    fn drop_partner(&mut self, partner: PeerId) {
        self.avoid.insert(partner, Instant::now() + AVOID_FOR);
        let mut st = self.shared.lock();
        st.partner = None;
        st.report.lies = 0;
        st.report.complete = false;
        st.report.partner_mirrored_bytes = 0;
        st.report.last_beat_ms = 0;
        self.shared.save(&st);
        drop(st);
        self.pass = None;
        self.clean = false;
        self.sample.clear();
    }

    /// Asks `peer` to pair; on acceptance it becomes the partner and a full pass starts.
    async fn ask_pair(&mut self, peer: PeerId) -> Result<bool> {
        let r = self.node.request(peer, Request::Pair).await;
        self.control(2 * 40);
        match r {
            Ok(Response::Ack) => {
                let mut st = self.shared.lock();
                if st.partner.map(|p| p.0) != Some(peer) {
                    st.partner = Some((peer, now_ms()));
                    st.report.lies = 0;
                }
                st.report.complete = false;
                self.shared.save(&st);
                drop(st);
                info!(partner = %short(&peer), "paired: mirroring our shards to it");
                self.last_ack = Instant::now();
                self.next_beat = Instant::now();
                self.pass = None;
                self.clean = false;
                self.next_pass = Instant::now();
                Ok(true)
            }
            Ok(other) => {
                debug!(peer = %short(&peer), answer = ?other, "pair ask answered oddly");
                Ok(false)
            }
            Err(Error::Closed) => Err(Error::Closed),
            Err(e) => {
                debug!(peer = %short(&peer), error = %e, "pair refused");
                Ok(false)
            }
        }
    }

    /// Chooses a partner by score, preferring another subnet or zone, and asks it.
    async fn choose(&mut self) -> Result<()> {
        let now = Instant::now();
        self.avoid.retain(|_, until| *until > now);
        let candidates = self.node.candidates(0).await?;
        let peers = self.node.peers().await?;
        let ours: HashSet<Vec<u8>> = self
            .node
            .listen_addrs()
            .await?
            .iter()
            .filter_map(subnet)
            .collect();
        let our_zone = candidates
            .iter()
            .find(|c| c.local)
            .and_then(|c| c.zone.clone());
        let list: Vec<_> = candidates
            .into_iter()
            .filter(|c| !c.local && !self.avoid.contains_key(&c.peer))
            .map(|c| {
                let nets = peers
                    .iter()
                    .find(|p| p.peer == c.peer)
                    .map(|p| p.addrs.iter().filter_map(subnet).collect())
                    .unwrap_or_default();
                (c.peer, c.score, nets, c.zone)
            })
            .collect();
        for peer in rank(list, &ours, our_zone.as_deref()) {
            if self.ask_pair(peer).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One tick of mirroring: queued shards first, then the next page of a pass.
    async fn mirror(&mut self) -> Result<()> {
        let Some(partner) = self.partner() else {
            return Ok(());
        };
        self.budget = (self.budget + self.cfg().mirror_bandwidth as i64)
            .min(self.cfg().mirror_bandwidth as i64);
        // Queued shards.
        while self.budget > 0 && !self.queue.is_empty() {
            let n = self.queue.len().min(MAX_IDS);
            let ids: Vec<ShardId> = self.queue.drain(..n).collect();
            for id in &ids {
                self.queued.remove(id);
            }
            let metas = self.primary_metas(ids).await?;
            let done = self.sync_page(partner, &metas, false).await?;
            if done < metas.len() {
                for m in metas[done..].iter().rev() {
                    if self.queued.insert(m.0) {
                        self.queue.push_front(m.0);
                    }
                }
                return Ok(());
            }
        }
        // The pass.
        if self.pass.is_none() && Instant::now() >= self.next_pass {
            self.pass = Some(Pass::default());
            self.mark_incomplete();
        }
        while self.budget > 0 {
            let Some(after) = self.pass.as_ref().map(|p| p.after) else {
                return Ok(());
            };
            let store = self.store.clone();
            let wards = self.ward_markers();
            let page = tokio::task::spawn_blocking(move || {
                store.list(after.as_ref(), MAX_IDS).map(|page| {
                    let len = page.len();
                    let last = page.last().map(|p| p.0);
                    let primary: Vec<(ShardId, u64, Vec<NodeId>)> = page
                        .into_iter()
                        .filter(|(_, m)| !m.owners.iter().any(|o| wards.contains(o)))
                        .map(|(id, m)| (id, m.len, m.owners))
                        .collect();
                    (len, last, primary)
                })
            })
            .await
            .map_err(|e| Error::Setup(format!("listing task: {e}")))??;
            let (len, last, primary) = page;
            let done = self.sync_page(partner, &primary, true).await?;
            let Some(pass) = self.pass.as_mut() else {
                return Ok(());
            };
            if done < primary.len() {
                // Out of budget or the partner failed: this page again next tick.
                return Ok(());
            }
            pass.shards += primary.len() as u64;
            pass.bytes += primary.iter().map(|p| p.1).sum::<u64>();
            pass.after = last;
            if len < MAX_IDS {
                let pass = self.pass.take().unwrap_or_default();
                let mut st = self.shared.lock();
                st.report.primary_shards = pass.shards;
                st.report.primary_bytes = pass.bytes;
                drop(st);
                self.clean = true;
                self.counted = true;
                info!(
                    partner = %short(&partner),
                    shards = pass.shards,
                    bytes = pass.bytes,
                    "mirror pass complete: every primary shard is on the partner"
                );
                self.next_pass = Instant::now() + self.cfg().rescan;
                return Ok(());
            }
        }
        Ok(())
    }

    fn ward_markers(&self) -> HashSet<NodeId> {
        self.shared.ward_markers()
    }

    /// Length and owners of those of `ids` that are primary shards here (gone ones and mirror
    /// copies are dropped).
    async fn primary_metas(&self, ids: Vec<ShardId>) -> Result<Vec<(ShardId, u64, Vec<NodeId>)>> {
        let store = self.store.clone();
        let wards = self.ward_markers();
        tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .filter_map(|id| match store.has(&id) {
                    Ok(Some(m)) if !m.owners.iter().any(|o| wards.contains(o)) => {
                        Some((id, m.len, m.owners))
                    }
                    _ => None,
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Setup(format!("store task: {e}")))
    }

    /// Makes sure the partner holds every shard of `page`: asks which it has, sends the others
    /// within the budget. Returns how many of the page (in order) are done; fewer when the
    /// budget ran out or a send failed.
    async fn sync_page(
        &mut self,
        partner: PeerId,
        page: &[(ShardId, u64, Vec<NodeId>)],
        in_pass: bool,
    ) -> Result<usize> {
        if page.is_empty() {
            return Ok(0);
        }
        let ids: Vec<ShardId> = page.iter().map(|p| p.0).collect();
        let n = ids.len() as u64;
        let has = match self.node.request(partner, Request::Has { ids }).await {
            Ok(Response::Has(h)) if h.len() == page.len() => h,
            Ok(other) => {
                warn!(partner = %short(&partner), answer = ?other, "partner answered a mirror check with garbage");
                return Ok(0);
            }
            Err(Error::Closed) => return Err(Error::Closed),
            Err(e) => {
                debug!(partner = %short(&partner), error = %e, "mirror check failed");
                return Ok(0);
            }
        };
        self.control(40 + 37 * n);
        let missing = page
            .iter()
            .zip(&has)
            .filter(|(p, h)| h.map(u64::from) != Some(p.1))
            .count() as u64;
        if let Some(pass) = self.pass.as_mut().filter(|_| in_pass) {
            pass.missing = missing;
        }
        for (i, ((id, len, owners), held)) in page.iter().zip(has).enumerate() {
            if held.map(u64::from) == Some(*len) {
                self.remember_confirmed(*id);
                continue;
            }
            if self.budget <= 0 {
                return Ok(i);
            }
            if !self.send(partner, *id, owners).await? {
                return Ok(i);
            }
            self.budget -= *len as i64;
            if let Some(pass) = self.pass.as_mut().filter(|_| in_pass) {
                pass.missing = pass.missing.saturating_sub(1);
            }
        }
        Ok(page.len())
    }

    fn remember_confirmed(&mut self, id: ShardId) {
        if self.sample.len() >= VERIFY_SAMPLE {
            self.sample.pop_front();
        }
        self.sample.push_back(id);
    }

    /// Sends one mirror copy. `false` when it could not be sent now (retried later).
    async fn send(&mut self, partner: PeerId, id: ShardId, owners: &[NodeId]) -> Result<bool> {
        let store = self.store.clone();
        let data = match tokio::task::spawn_blocking(move || store.get(&id)).await {
            Ok(Ok(d)) => d,
            Ok(Err(defs_core::Error::ShardNotFound { .. })) => return Ok(true), // deleted meanwhile
            Ok(Err(e)) => {
                warn!(shard = %id, error = %e, "cannot read a shard to mirror it: it is damaged here; its owner's audits and repair find it");
                return Ok(true);
            }
            Err(e) => return Err(Error::Setup(format!("store task: {e}"))),
        };
        let len = data.len() as u64;
        let crc = crc32fast::hash(&data);
        let owners: Vec<NodeId> = owners.iter().take(MAX_MIRROR_OWNERS).copied().collect();
        let req = Request::Mirror {
            id,
            owners,
            crc,
            data: data.into(),
        };
        match self.node.request(partner, req).await {
            Ok(Response::Stored) => {
                let mut st = self.shared.lock();
                st.report.sent_shards += 1;
                st.report.sent_bytes += len;
                drop(st);
                self.remember_confirmed(id);
                Ok(true)
            }
            Ok(other) => {
                warn!(partner = %short(&partner), shard = %id, answer = ?other, "partner answered a mirror copy with garbage");
                Ok(false)
            }
            Err(Error::Remote { error, .. }) if error.code == ErrorCode::NotPaired => {
                warn!(partner = %short(&partner), "our partner refuses our mirror copies (it no longer keeps our pairing): pairing again");
                self.ask_pair(partner).await?;
                Ok(false)
            }
            Err(Error::Closed) => Err(Error::Closed),
            Err(e) => {
                debug!(partner = %short(&partner), shard = %id, error = %e, "mirror copy not stored");
                Ok(false)
            }
        }
    }

    /// Audits one copy the partner claims to hold; a failed proof is a lie.
    async fn verify(&mut self) -> Result<()> {
        let Some(partner) = self.partner() else {
            return Ok(());
        };
        if Instant::now() < self.next_verify || self.sample.is_empty() {
            return Ok(());
        }
        self.next_verify = Instant::now() + self.cfg().verify_every;
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        let i = (u64::from_le_bytes(r) % self.sample.len() as u64) as usize;
        let Some(id) = self.sample.get(i).copied() else {
            return Ok(());
        };
        let Ok(Some(meta)) = self.store.has(&id) else {
            return Ok(());
        };
        let chunk = (u64::from_le_bytes(r).rotate_left(17) % crate::audit::chunks(meta.len)) as u32;
        let answer = self
            .node
            .request(partner, Request::Audit { id, chunk })
            .await;
        self.control(2 * 1400);
        let why = match answer {
            Ok(Response::Proof(p)) => match crate::audit::verify(&id, meta.len, chunk, &p) {
                Ok(()) => return Ok(()),
                Err(e) => format!("{e}"),
            },
            Ok(other) => format!("answered {other:?}"),
            Err(Error::Remote { error, .. }) => format!("refused: {error}"),
            Err(Error::Closed) => return Err(Error::Closed),
            // Unreachable: the heartbeat judges liveness.
            Err(_) => return Ok(()),
        };
        let lies = {
            let mut st = self.shared.lock();
            st.report.lies += 1;
            st.report.lies
        };
        warn!(
            partner = %short(&partner),
            shard = %id,
            reason = %why,
            lies,
            "partner lies about its mirror: it reported a copy it cannot prove; sending it again"
        );
        self.sample.retain(|s| *s != id);
        self.enqueue(id);
        self.mark_incomplete();
        if lies >= MAX_LIES {
            warn!(partner = %short(&partner), lies, "pair partner dropped: its mirror failed too many proofs");
            self.drop_partner(partner);
        }
        Ok(())
    }
}

/// Drops `mark` from every shard it owns (on the blocking pool): a silent ward's copies become
/// this node's own. Returns the shards and bytes adopted.
fn adopt(store: &ShardStore, mark: &NodeId) -> Result<(u64, u64)> {
    let (mut shards, mut bytes) = (0u64, 0u64);
    let mut after = None;
    loop {
        let page = store.list(after.as_ref(), MAX_IDS)?;
        let Some(last) = page.last().map(|p| p.0) else {
            break;
        };
        for (id, meta) in &page {
            if meta.owners.contains(mark) && meta.owners.len() > 1 {
                store.delete(id, *mark)?;
                shards += 1;
                bytes += meta.len;
            }
        }
        if page.len() < MAX_IDS {
            break;
        }
        after = Some(last);
    }
    Ok((shards, bytes))
}

#[cfg(test)]
mod tests {
    use super::state::{STATE_MAGIC, parse_state};
    use super::*;

    #[test]
    fn state_file_round_trips_and_garbage_is_refused() {
        let p = PeerId::random();
        let w = PeerId::random();
        let text = format!("{STATE_MAGIC}\npartner {p} 42\nward {w}\n");
        assert_eq!(parse_state(&text).unwrap(), (Some((p, 42)), vec![w]));
        assert!(parse_state("something else\n").is_err());
        assert!(parse_state(&format!("{STATE_MAGIC}\npartner nope 1\n")).is_err());
        assert!(parse_state(&format!("{STATE_MAGIC}\nfoo bar\n")).is_err());
    }

    #[test]
    fn partners_in_another_subnet_or_zone_are_preferred() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let ours: HashSet<Vec<u8>> = [vec![10, 0, 0]].into();
        let list = vec![
            (a, 1.0, vec![vec![10, 0, 0]], None),
            (b, 0.5, vec![vec![192, 168, 1]], None),
            (c, 0.0, vec![vec![172, 16, 0]], None),
        ];
        // b scores half of a but lives in another subnet; c is excluded (score 0).
        assert_eq!(rank(list, &ours, None), vec![b, a]);
        // All in one subnet: by score; a zone differing from ours counts as diversity.
        let list = vec![
            (a, 1.0, vec![vec![10, 0, 0]], Some("z1".into())),
            (b, 0.5, vec![vec![10, 0, 0]], Some("z2".into())),
        ];
        assert_eq!(rank(list.clone(), &ours, Some("z1")), vec![b, a]);
        assert_eq!(rank(list, &ours, None), vec![a, b]);
    }

    #[test]
    fn markers_differ_per_ward_and_from_the_ward() {
        let a = NodeId([1; 32]);
        assert_ne!(marker(&a), a);
        assert_ne!(marker(&a), marker(&NodeId([2; 32])));
    }
}
