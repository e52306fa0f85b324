//! Repair: the owner's side of durability that lasts. A [`Repairer`] checks the owner's stored
//! objects against the network and re-creates what was lost, before a segment is down to the
//! `k` shards that still rebuild it.
//!
//! ```text
//!  run_pass(files) ── REPAIR_PARALLEL files at once ──▶ repair_file
//!   ├─ the manifest, with the owner's holder record laid over it (Objects)
//!   ├─ which recorded holders count now: Liveness (durability's one definition), minus the
//!   │  shards marked lost (mark_lost: audits, a holder that no longer has it)
//!   ├─ one broadcast lookup for every shard left without a holder ─▶ found: recorded
//!   ├─ a segment missing ≥ threshold shards, still ≥ k: claimed (never two repairs of one
//!   │  segment at once), k shards fetched (paced), decoded and re-encoded with the pipeline's
//!   │  own code (shard keys are derived, so a rebuilt shard is byte-identical: its id is
//!   │  checked against the manifest), stored on new nodes (ShardClient::store_shards, avoiding
//!   │  the segment's holders) ─▶ Objects::update_holders (the owner's holder record)
//!   └─ the sealed manifest: topped up to MANIFEST_COPIES when fewer than MANIFEST_MIN_COPIES
//!      copies answer a lookup
//! ```
//!
//! State lives on the network and in the holder record: a pass that was cut short (a restart)
//! is simply run again; what it already repaired is recorded and found healthy, so repair
//! resumes where it stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::object::{HolderUpdate, MANIFEST_COPIES, Objects, need_and_parity};
use crate::pipeline::{FileKey, decode_segment, encode_segment};
use crate::remote::OutShard;
use crate::sync::Arc;
use crate::types::{FileId, NodeId, ShardId};

/// Live copies of a sealed manifest below which repair stores more (up to
/// [`MANIFEST_COPIES`]): the manifest is replicated, so two copies left is the last moment to
/// act with one loss still survivable.
pub const MANIFEST_MIN_COPIES: usize = 3;

/// Files a pass checks at once: each waits mostly on lookups (up to a lookup window each), so
/// a few overlap their waits without flooding the network with asks.
pub const REPAIR_PARALLEL: usize = 4;

/// Errors a [`RepairStatus`] keeps (the newest), for `defs status`.
pub const MAX_STATUS_ERRORS: usize = 20;

/// How repair runs (`[repair]` of `config.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairConfig {
    /// Shards of a segment without a live holder that start its repair. Clamped to
    /// `1..=parity - 1`, so a segment is repaired while more than `k` of its shards are left
    /// (with one parity shard, at `k`: the earliest possible).
    pub missing_threshold: usize,
    /// Bytes per second repair may move (fetched plus stored); 0 = unpaced.
    pub bandwidth: u64,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            missing_threshold: 1,
            bandwidth: 0,
        }
    }
}

/// What one check of one file found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRepair {
    /// Segments of the file.
    pub segments: u64,
    /// Segments with a live holder for every shard (after any repair of this check).
    pub healthy: u64,
    /// Segments missing shards but still readable, not repaired (below the threshold, or the
    /// repair failed: see `errors`).
    pub degraded: u64,
    /// Segments another repair was working on.
    pub repairing: u64,
    /// Segments with fewer than `k` reachable shards: not readable until holders return.
    pub lost: u64,
    /// Segments this check repaired.
    pub repaired: u64,
    /// Shards re-created and stored.
    pub shards_restored: u64,
    /// Their bytes.
    pub bytes_restored: u64,
    /// Shards without a live recorded holder that a lookup found elsewhere.
    pub found_elsewhere: u64,
    /// Copies of the sealed manifest stored.
    pub manifest_copies: u64,
    /// What went wrong, one line each.
    pub errors: Vec<String>,
}

/// Repair as `defs status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairStatus {
    /// A pass is running now.
    pub running: bool,
    /// Files the current (or last) pass has checked.
    pub files_checked: u64,
    /// Files of the current (or last) pass.
    pub files_total: u64,
    /// Segments found healthy by the current (or last) pass.
    pub healthy: u64,
    /// Segments found degraded and not repaired.
    pub degraded: u64,
    /// Segments being repaired right now.
    pub repairing: u64,
    /// Segments found lost (fewer than `k` reachable shards).
    pub lost: u64,
    /// Segments that need repair and are not repaired yet: the degraded ones, and those being
    /// repaired now.
    pub backlog: u64,
    /// Shards re-created since this repairer started.
    pub shards_restored: u64,
    /// Their bytes.
    pub bytes_restored: u64,
    /// The configured bandwidth (bytes/s, 0 = unpaced).
    pub bandwidth: u64,
    /// When the last pass ended.
    pub last_pass: Option<SystemTime>,
    /// The newest errors, at most [`MAX_STATUS_ERRORS`].
    pub errors: Vec<String>,
}

/// Checks and repairs the owner's objects (see the module docs). Shared by the mount's
/// background task and `defs repair`; cheap to share behind an `Arc`.
pub struct Repairer {
    objects: Arc<Objects>,
    config: RepairConfig,
    /// Segments being repaired: never two repairs of one segment at once.
    busy: Mutex<HashSet<(FileId, u64)>>,
    /// Shards known bad or gone on a node, whatever the records say (see
    /// [`Repairer::mark_lost`]).
    suspects: Mutex<HashSet<(ShardId, NodeId)>>,
    status: Mutex<RepairStatus>,
    /// When the bandwidth budget is next free.
    pace: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// One pass at a time.
    pass: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Repairer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repairer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Releases a claimed segment when its repair ends, however it ends.
struct Claim<'a> {
    busy: &'a Mutex<HashSet<(FileId, u64)>>,
    key: (FileId, u64),
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.busy.lock() {
            b.remove(&self.key);
        }
    }
}

impl Repairer {
    /// A repairer over `objects` (whose manifest store keeps the holder records).
    pub fn new(objects: Arc<Objects>, config: RepairConfig) -> Repairer {
        Repairer {
            objects,
            config,
            busy: Mutex::new(HashSet::new()),
            suspects: Mutex::new(HashSet::new()),
            status: Mutex::new(RepairStatus {
                bandwidth: config.bandwidth,
                ..RepairStatus::default()
            }),
            pace: tokio::sync::Mutex::new(None),
            pass: tokio::sync::Mutex::new(()),
        }
    }

    /// The object layer it repairs through.
    pub fn objects(&self) -> &Arc<Objects> {
        &self.objects
    }

    /// Marks `shard` on `node` as bad or gone (an audit failed, a holder denies having it):
    /// from now on `node` does not count as its holder, and the next check of the file the
    /// shard belongs to repairs its segment if that leaves it short.
    pub fn mark_lost(&self, shard: ShardId, node: NodeId) {
        info!(%shard, %node, "shard marked lost on its holder; its segment is checked for repair");
        if let Ok(mut s) = self.suspects.lock() {
            s.insert((shard, node));
        }
    }

    /// The repair state now.
    pub fn status(&self) -> RepairStatus {
        let mut s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        s.repairing = self.busy.lock().map(|b| b.len() as u64).unwrap_or(0);
        s.backlog = s.degraded + s.repairing;
        s
    }

    fn error(&self, line: String) {
        if let Ok(mut s) = self.status.lock() {
            if s.errors.len() >= MAX_STATUS_ERRORS {
                s.errors.remove(0);
            }
            s.errors.push(line);
        }
    }

    /// Waits until `bytes` fit the bandwidth budget.
    async fn pace(&self, bytes: u64) {
        if self.config.bandwidth == 0 || bytes == 0 {
            return;
        }
        let until = {
            let mut next = self.pace.lock().await;
            let now = tokio::time::Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            let until = start
                + Duration::from_micros(bytes.saturating_mul(1_000_000) / self.config.bandwidth);
            *next = Some(until);
            start
        };
        tokio::time::sleep_until(until).await;
    }

    /// Checks (and repairs) every object of `files` (a file key where known, else the object is
    /// opened with the owner's wrap key), [`REPAIR_PARALLEL`] at once; `progress(done, total)`
    /// after each file. Passes run one at a time; a second waits for the first.
    ///
    /// # Cancel safety
    /// Dropping the future stops the pass; segments repaired so far are recorded.
    pub async fn run_pass(
        &self,
        files: Vec<(FileId, Option<FileKey>)>,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> RepairStatus {
        let _pass = self.pass.lock().await;
        let total = files.len() as u64;
        if let Ok(mut s) = self.status.lock() {
            s.running = true;
            s.files_checked = 0;
            s.files_total = total;
            s.healthy = 0;
            s.degraded = 0;
            s.lost = 0;
        }
        progress(0, total);
        let checks = futures::stream::iter(files)
            .map(|(file, key)| async move { (file, self.repair_file(file, key.as_ref()).await) })
            .buffer_unordered(REPAIR_PARALLEL);
        futures::pin_mut!(checks);
        let mut done = 0;
        while let Some((file, r)) = checks.next().await {
            done += 1;
            match r {
                Ok(r) => {
                    if let Ok(mut s) = self.status.lock() {
                        s.healthy += r.healthy;
                        s.degraded += r.degraded + r.repairing;
                        s.lost += r.lost;
                    }
                    for e in r.errors {
                        self.error(format!("{file}: {e}"));
                    }
                }
                Err(e) => {
                    warn!(%file, error = %e, "repair check failed");
                    self.error(format!("{file}: {e}"));
                }
            }
            if let Ok(mut s) = self.status.lock() {
                s.files_checked = done;
            }
            progress(done, total);
        }
        if let Ok(mut s) = self.status.lock() {
            s.running = false;
            s.last_pass = Some(SystemTime::now());
        }
        self.status()
    }

    /// Checks one object and repairs what needs it (see the module docs).
    ///
    /// # Errors
    /// When its manifest cannot be found or opened, or the network layer has stopped; a
    /// segment that cannot be repaired is counted and named in [`FileRepair::errors`].
    pub async fn repair_file(&self, file: FileId, key: Option<&FileKey>) -> Result<FileRepair> {
        if self.objects.is_retired(file) {
            // Being deleted by the garbage collector: nothing to keep alive.
            return Ok(FileRepair::default());
        }
        let (manifest, key) = match key {
            Some(k) => (self.objects.manifest(file, k).await?, k.clone()),
            None => self.objects.open_owned(file).await?,
        };
        let client = self.objects.client().clone();
        let live = client.liveness().await?;
        let suspects: HashSet<(ShardId, NodeId)> =
            self.suspects.lock().map(|s| s.clone()).unwrap_or_default();
        let counts = |id: ShardId, h: &NodeId| live.counts(h) && !suspects.contains(&(id, *h));
        // holders[segment][index]: the holders that count now.
        let mut holders: Vec<Vec<Vec<NodeId>>> = manifest
            .segments
            .iter()
            .map(|seg| {
                seg.shards
                    .iter()
                    .map(|sh| {
                        sh.holders
                            .iter()
                            .filter(|h| counts(sh.id, h))
                            .copied()
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let mut report = FileRepair {
            segments: manifest.segments.len() as u64,
            ..FileRepair::default()
        };
        let mut updates = Vec::new();

        // One lookup for every shard without a holder that counts.
        let mut unheld: HashMap<ShardId, (usize, usize)> = HashMap::new();
        for (s, seg) in manifest.segments.iter().enumerate() {
            for (i, sh) in seg.shards.iter().enumerate() {
                if holders[s][i].is_empty() {
                    unheld.insert(sh.id, (s, i));
                }
            }
        }
        if !unheld.is_empty() {
            match client.lookup(unheld.keys().copied().collect()).await {
                Ok(found) => {
                    for (id, nodes) in found {
                        let nodes: Vec<NodeId> =
                            nodes.into_iter().filter(|h| counts(id, h)).collect();
                        if let (Some(&(s, i)), false) = (unheld.get(&id), nodes.is_empty()) {
                            report.found_elsewhere += 1;
                            holders[s][i] = nodes.clone();
                            updates.push(HolderUpdate {
                                segment: s as u64,
                                index: i as u16,
                                holders: nodes,
                            });
                        }
                    }
                }
                Err(e) => report.errors.push(format!("lookup: {e}")),
            }
        }

        let (need, parity) = need_and_parity(&manifest.geometry);
        let threshold = self
            .config
            .missing_threshold
            .min(parity.saturating_sub(1))
            .max(1);
        for (s, seg_holders) in holders.iter().enumerate() {
            let have = seg_holders.iter().filter(|h| !h.is_empty()).count();
            let missing = seg_holders.len() - have;
            if missing == 0 {
                report.healthy += 1;
                continue;
            }
            if have < need {
                report.lost += 1;
                report.errors.push(format!(
                    "segment {s}: only {have} of the {need} shards that rebuild it are reachable"
                ));
                continue;
            }
            if missing < threshold {
                report.degraded += 1;
                continue;
            }
            let seg_suspects: Vec<NodeId> = suspects
                .iter()
                .filter(|(id, _)| manifest.segments[s].shards.iter().any(|sh| sh.id == *id))
                .map(|(_, n)| *n)
                .collect();
            match self
                .repair_segment(file, &manifest, &key, s, seg_holders, seg_suspects)
                .await
            {
                Ok(Some((placed, bytes))) => {
                    report.repaired += 1;
                    report.healthy += 1;
                    report.shards_restored += placed.len() as u64;
                    report.bytes_restored += bytes;
                    updates.extend(placed);
                }
                Ok(None) => report.repairing += 1,
                Err(e) => {
                    warn!(%file, segment = s, error = %e, "segment repair failed");
                    report.degraded += 1;
                    report
                        .errors
                        .push(format!("segment {s}: repair failed: {e}"));
                }
            }
        }
        if !updates.is_empty() {
            let repaired: HashSet<ShardId> = updates
                .iter()
                .filter_map(|u| {
                    manifest
                        .segments
                        .get(usize::try_from(u.segment).ok()?)?
                        .shards
                        .get(usize::from(u.index))
                        .map(|sh| sh.id)
                })
                .collect();
            self.objects.update_holders(file, updates)?;
            if let Ok(mut s) = self.suspects.lock() {
                s.retain(|(id, _)| !repaired.contains(id));
            }
        }
        report.manifest_copies = self.top_up_manifest(file).await.unwrap_or_else(|e| {
            report.errors.push(format!("manifest copies: {e}"));
            0
        });
        if report.repaired > 0 || report.manifest_copies > 0 {
            info!(%file, segments = report.repaired, shards = report.shards_restored, bytes = report.bytes_restored, manifest_copies = report.manifest_copies, "repaired");
        }
        if let Ok(mut s) = self.status.lock() {
            s.shards_restored += report.shards_restored;
            s.bytes_restored += report.bytes_restored;
        }
        Ok(report)
    }

    /// Re-creates the missing shards of segment `s` (whose counted holders are `holders`) and
    /// stores them on new nodes, avoiding the segment's holders and `suspects`. `None` when
    /// another repair holds the segment. Returns the new holders and the bytes stored.
    async fn repair_segment(
        &self,
        file: FileId,
        manifest: &Arc<Manifest>,
        key: &FileKey,
        s: usize,
        holders: &[Vec<NodeId>],
        suspects: Vec<NodeId>,
    ) -> Result<Option<(Vec<HolderUpdate>, u64)>> {
        let claim_key = (file, s as u64);
        {
            let Ok(mut busy) = self.busy.lock() else {
                return Ok(None);
            };
            if !busy.insert(claim_key) {
                return Ok(None);
            }
        }
        let _claim = Claim {
            busy: &self.busy,
            key: claim_key,
        };
        let seg = &manifest.segments[s];
        let (need, _) = need_and_parity(&manifest.geometry);
        let client = self.objects.client().clone();
        // k shards from their holders, data shards first (fewest bytes to decode); a failed
        // fetch moves on to the next held shard.
        let held: Vec<usize> = (0..seg.shards.len())
            .filter(|i| !holders[*i].is_empty())
            .collect();
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; seg.shards.len()];
        let mut got = 0;
        let mut next = 0;
        while got < need && next < held.len() {
            let batch: Vec<usize> = held[next..].iter().take(need - got).copied().collect();
            next += batch.len();
            for &i in &batch {
                self.pace(u64::from(seg.shards[i].len)).await;
            }
            let fetched = futures::future::join_all(
                batch
                    .iter()
                    .map(|&i| client.fetch_recorded(seg.shards[i].id, holders[i].clone())),
            )
            .await;
            for (&i, r) in batch.iter().zip(fetched) {
                match r {
                    Ok(bytes) => {
                        slots[i] = Some(bytes);
                        got += 1;
                    }
                    Err(e) => {
                        debug!(%file, segment = s, shard = i, error = %e, "repair fetch failed")
                    }
                }
            }
        }
        if got < need {
            return Err(Error::TooFewShards {
                segment: s as u64,
                need: need as u16,
                have: got as u16,
            });
        }
        let missing: Vec<usize> = (0..seg.shards.len())
            .filter(|i| holders[*i].is_empty())
            .collect();
        let (m, k, wanted) = (manifest.clone(), key.clone(), missing.clone());
        let rebuilt: Vec<OutShard> =
            tokio::task::spawn_blocking(move || -> Result<Vec<OutShard>> {
                let segment = s as u64;
                let plain = decode_segment(&m, &k, segment, slots)?;
                let encoded = encode_segment(&m.geometry, &k, m.version, segment, &plain)?;
                let entry = &m.segments[s];
                wanted
                    .iter()
                    .map(|&i| {
                        let shard = encoded.shards.get(i).ok_or(Error::MalformedManifest {
                            what: "the re-encoded segment has fewer shards than the manifest",
                        })?;
                        let id = entry.shards[i].id;
                        if shard.id != id {
                            return Err(Error::Remote {
                                op: "repair",
                                shard: id,
                                reason:
                                    "the re-encoded shard does not match its id in the manifest"
                                        .into(),
                            });
                        }
                        Ok(OutShard {
                            id: shard.id,
                            crc: shard.crc,
                            bytes: shard.bytes.clone(),
                        })
                    })
                    .collect()
            })
            .await
            .map_err(|e| Error::Remote {
                op: "repair",
                shard: ShardId::default(),
                reason: format!("the rebuild task failed: {e}"),
            })??;
        let bytes: u64 = rebuilt.iter().map(|o| o.bytes.len() as u64).sum();
        self.pace(bytes).await;
        let mut avoid: Vec<NodeId> = holders.iter().flatten().copied().collect();
        avoid.extend(suspects);
        if self.objects.is_retired(file) {
            return Ok(None);
        }
        let placed = client.store_shards(rebuilt, avoid).await?;
        let updates = missing
            .iter()
            .zip(placed)
            .map(|(&i, nodes)| HolderUpdate {
                segment: s as u64,
                index: i as u16,
                holders: nodes,
            })
            .collect();
        Ok(Some((updates, bytes)))
    }

    /// Stores copies of `file`'s sealed manifest when fewer than [`MANIFEST_MIN_COPIES`] live
    /// ones answer a lookup; returns how many it stored.
    async fn top_up_manifest(&self, file: FileId) -> Result<u64> {
        let client = self.objects.client().clone();
        let id = ShardId(file.0);
        let live = client.liveness().await?;
        let found: Vec<NodeId> = client
            .lookup_many(vec![id], MANIFEST_COPIES)
            .await?
            .into_iter()
            .filter(|(f, _)| *f == id)
            .flat_map(|(_, h)| h)
            .filter(|h| live.counts(h))
            .collect();
        let peers = client.storage_peers().await?;
        let target = MANIFEST_COPIES.min(peers);
        if found.len() >= MANIFEST_MIN_COPIES.min(target) || found.len() >= target {
            return Ok(0);
        }
        let sealed = self.objects.sealed(file).await?;
        let add = target - found.len();
        if self.objects.is_retired(file) {
            return Ok(0);
        }
        let shards = vec![OutShard::new(id, sealed); add];
        let placed = client.store_shards(shards, found).await?;
        Ok(placed.len() as u64)
    }
}

#[cfg(test)]
mod tests;
