//! Compaction: the collector's repacking of sparse packs (issue 26). A pack whose live share
//! (bytes of the files still named, by the tree or by a kept version, over the pack's bytes)
//! is below [`GcConfig::repack_below`](super::GcConfig::repack_below) has its live files copied
//! into a new pack, and those files switched to it; the old pack then dies in the ledger like
//! any object nothing names, and [`Collector::run`] deletes it once no kept version needs it.
//!
//! ```text
//!  Collector::compact(kept)
//!   ├─ intents left by a crash or a failure (meta::repack `repacks`) ─▶ lookup + signed
//!   │  delete of their shards and manifest copies ─▶ intent removed
//!   ├─ candidates: packs that lost a member (`pack_deaths`) and are still live; share from
//!   │  `live_ranges` and the pack's manifest; dead bytes a kept version may name count as live
//!   ├─ their live files, by one pass over the inodes; groups of ≤ REPACK_TARGET_BYTES
//!   └─ per group: read the files' bytes from the old packs ─▶ new intent (durable)
//!        ─▶ Objects::put_pack_logged (every shard id into the intent before it is stored)
//!        ─▶ MetaDb::switch_repacked: one logged transaction, each file switched only if it
//!           still names exactly the range copied; the intent goes in the same transaction
//! ```
//!
//! Crash points (kill -9): before the intent, nothing was stored. Between the intent and the
//! switch, the new pack's shards are named by the intent only: the next run deletes them.
//! After the switch (durable as any logged operation), the files name the new pack; the old
//! pack's death is in the ledger and resolved by the next publish. Nothing is lost at any
//! point: the old pack is deleted only by the ledger's rule, after a publish that no longer
//! names it, and never while a kept version does.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::{debug, info, warn};

use super::{Collector, LOOKUP_WANT};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, PackRange};
use crate::meta::MetaDb;
use crate::meta::ledger::{self, PENDING};
use crate::meta::live::LiveRanges;
use crate::meta::repack::{self, PackDeath, REPACK_MAX_FILES, RepackMove};
use crate::meta::schema::{DbContext, INODES, LEDGER, LIVE_RANGES, PACK_DEATHS, REPACKS};
use crate::namespace::record::InodeRecord;
use crate::namespace::types::Content;
use crate::object::MemorySource;
use crate::pipeline::FileKey;
use crate::sync::Arc;
use crate::types::{FileId, InodeNo, NodeId, ShardId};

/// Live bytes gathered into one new pack: the flusher's pack size (4 MiB), so a new pack is
/// coded and placed like any other.
pub const REPACK_TARGET_BYTES: u64 = 4 << 20;

/// Live bytes one run copies at most: a run moves at most this much over the network (read
/// and stored again); the rest waits for the next run, so a large compaction is paced by the
/// collector's interval.
pub const REPACK_MAX_BYTES: u64 = 64 << 20;

/// A pack that lost members and is still live, as the metadata DB knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackCandidate {
    /// The pack.
    pub file: FileId,
    /// What the tree names of it now.
    pub live: LiveRanges,
    /// The first published seq that may name it (its ledger row).
    pub born: u64,
    /// When its last member left.
    pub death: PackDeath,
}

/// The share of a pack's `size` bytes that counts as live: `live_bytes`, or all of it while a
/// kept version (`kept`) may still name a member that left (one with `born ≤ v < dead`; a
/// death no publish has resolved yet counts as dated after every kept version). Dead bytes a
/// kept version names cannot be freed by a repack: the old pack stays until that version
/// expires, so they count as live.
pub fn live_share(c: &PackCandidate, size: u64, kept: &[u64]) -> f64 {
    if size == 0 {
        return 1.0;
    }
    let named_by_kept = kept
        .iter()
        .any(|&v| c.born <= v && (c.death.dead == PENDING || v < c.death.dead));
    if named_by_kept {
        return 1.0;
    }
    (c.live.bytes.min(size) as f64) / (size as f64)
}

/// Whether a pack of `size` bytes is due for repacking under threshold `below`.
pub fn repack_due(c: &PackCandidate, size: u64, kept: &[u64], below: f64) -> bool {
    below > 0.0 && c.live.files > 0 && live_share(c, size, kept) < below
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Packs whose live share was below the threshold.
    pub due: u64,
    /// New packs stored.
    pub new_packs: u64,
    /// Files switched to a new pack.
    pub files: u64,
    /// Bytes copied into new packs.
    pub bytes: u64,
    /// Packs every live file of which was switched (they now die like any unnamed object).
    pub emptied: u64,
    /// Intents of earlier runs whose shards were deleted.
    pub cleared: u64,
}

/// One live file of a pack due.
#[derive(Debug, Clone, Copy)]
struct Member {
    ino: InodeNo,
    pack: FileId,
    offset: u64,
    len: u64,
}

impl MetaDb {
    /// Packs that lost members and are still live, and the death rows whose pack is not live
    /// any more (stale: see `meta::repack`).
    ///
    /// # Errors
    /// Db, Corrupt.
    pub fn pack_candidates(&self) -> Result<(Vec<PackCandidate>, Vec<FileId>)> {
        self.read(|txn| {
            let deaths = txn.open_table(PACK_DEATHS).ctx("opening pack_deaths")?;
            let live = txn.open_table(LIVE_RANGES).ctx("opening live_ranges")?;
            let ledger_t = txn.open_table(LEDGER).ctx("opening the ledger")?;
            let mut out = Vec::new();
            let mut stale = Vec::new();
            for (file, death) in repack::deaths(&deaths)? {
                let Some((files, bytes)) = live
                    .get(&file.0[..])
                    .ctx("reading live ranges")?
                    .map(|v| v.value())
                else {
                    stale.push(file);
                    continue;
                };
                let born = match ledger_t.get(&file.0[..]).ctx("reading the ledger")? {
                    Some(v) => ledger::decode(&file.0, v.value())?.born,
                    None => 0,
                };
                out.push(PackCandidate {
                    file,
                    live: LiveRanges { files, bytes },
                    born,
                    death,
                });
            }
            Ok((out, stale))
        })
    }

    /// The inodes whose content is a range of one of `packs`, by pack, sorted by offset.
    fn members_of(&self, packs: &HashSet<FileId>) -> Result<HashMap<FileId, Vec<Member>>> {
        self.read(|txn| {
            let inodes = txn.open_table(INODES).ctx("opening inodes")?;
            let mut out: HashMap<FileId, Vec<Member>> = HashMap::new();
            for item in redb::ReadableTable::iter(&inodes).ctx("listing inodes")? {
                let (k, v) = item.ctx("listing inodes")?;
                if let Content::Stored {
                    file, offset, len, ..
                } = InodeRecord::decode(v.value())?.content
                    && packs.contains(&file)
                {
                    out.entry(file).or_default().push(Member {
                        ino: InodeNo(k.value()),
                        pack: file,
                        offset,
                        len,
                    });
                }
            }
            for list in out.values_mut() {
                list.sort_by_key(|m| m.offset);
            }
            Ok(out)
        })
    }

    /// Forgets the death rows of packs no longer live.
    fn forget_pack_deaths(&self, packs: &[FileId]) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        self.write_bookkeeping(&[], |txn| repack::forget_deaths_in(txn, packs))
    }

    /// A new repack intent (durable before it returns).
    fn repack_intent_new(&self) -> Result<u64> {
        self.write_bookkeeping(&[], repack::intent_new_in)
    }

    /// Adds shard ids to intent `id` (durable before it returns: before they are stored).
    fn repack_intent_add(&self, id: u64, ids: &[ShardId]) -> Result<()> {
        self.write_bookkeeping(&[], |txn| repack::intent_add_in(txn, id, ids))
    }

    /// Removes intent `id`.
    fn repack_intent_done(&self, id: u64) -> Result<()> {
        self.write_bookkeeping(&[], |txn| repack::intent_remove_in(txn, id))
    }

    /// Every repack intent and the shard ids it names: compactions that did not finish.
    ///
    /// # Errors
    /// Db, Corrupt.
    pub fn repack_intents(&self) -> Result<Vec<(u64, Vec<ShardId>)>> {
        self.read(|txn| {
            let table = txn.open_table(REPACKS).ctx("opening repacks")?;
            repack::intents(&table)
        })
    }
}

impl Collector {
    /// Repacks the packs whose live share under the kept versions `kept` is below
    /// [`GcConfig::repack_below`](super::GcConfig::repack_below) (see the module doc), at most
    /// [`REPACK_MAX_BYTES`] of live files a run, after deleting what earlier runs left
    /// unfinished. The old packs are deleted by a later [`Collector::run`], after a publish
    /// records that no file names them.
    ///
    /// # Errors
    /// Reading the DB; a pack that fails to repack is counted in the status's errors and
    /// retried at the next run, not returned.
    ///
    /// # Cancel safety
    /// Safe: a dropped run leaves at most an intent, whose shards the next run deletes.
    pub async fn compact(&self, kept: &[u64]) -> Result<CompactReport> {
        let _pass = self.pass.lock().await;
        self.update(|s| s.running = true);
        let result = self.compact_locked(kept).await;
        self.update(|s| {
            s.running = false;
            if let Ok(r) = &result {
                s.repacked_packs += r.emptied;
                s.repacked_files += r.files;
                s.repacked_bytes += r.bytes;
            }
        });
        if let Err(e) = &result {
            self.error(format!("compaction: {e}"));
        }
        result
    }

    async fn compact_locked(&self, kept: &[u64]) -> Result<CompactReport> {
        let mut report = CompactReport {
            cleared: self.clear_intents().await?,
            ..CompactReport::default()
        };
        let below = self.config.repack_below;
        if below <= 0.0 {
            return Ok(report);
        }
        let (candidates, stale) = self.db.pack_candidates()?;
        self.db.forget_pack_deaths(&stale)?;
        // The packs due, lowest share first, with their manifests (to read them).
        let mut due: Vec<(f64, PackCandidate)> = Vec::new();
        let mut opened: HashMap<FileId, (Arc<Manifest>, FileKey)> = HashMap::new();
        for c in candidates {
            let (m, key) = match self.objects.open_owned(c.file).await {
                Ok(x) => x,
                Err(e) => {
                    warn!(file = %c.file, error = %e, "compaction: a pack's manifest cannot be read; skipped");
                    self.error(format!("compaction: pack {}: {e}", c.file));
                    continue;
                }
            };
            if m.pack.is_none() {
                continue;
            }
            if repack_due(&c, m.size, kept, below) {
                due.push((live_share(&c, m.size, kept), c));
                opened.insert(c.file, (m, key));
            }
        }
        if due.is_empty() {
            return Ok(report);
        }
        due.sort_by(|a, b| a.0.total_cmp(&b.0));
        report.due = due.len() as u64;
        let packs: HashSet<FileId> = due.iter().map(|(_, c)| c.file).collect();
        let members = self.db.members_of(&packs)?;
        info!(
            packs = due.len(),
            below, "compaction: repacking packs whose live share is below the threshold"
        );

        // Groups of live files, pack after pack, each group one new pack.
        let mut groups: Vec<Vec<Member>> = Vec::new();
        let mut current: Vec<Member> = Vec::new();
        let mut current_bytes = 0u64;
        let mut total = 0u64;
        let mut whole: Vec<FileId> = Vec::new();
        'packs: for (_, c) in &due {
            let list = members.get(&c.file).map(Vec::as_slice).unwrap_or_default();
            for (i, m) in list.iter().enumerate() {
                if total + m.len > REPACK_MAX_BYTES && total > 0 {
                    break 'packs;
                }
                if current_bytes + m.len > REPACK_TARGET_BYTES || current.len() >= REPACK_MAX_FILES
                {
                    groups.push(std::mem::take(&mut current));
                    current_bytes = 0;
                }
                current.push(*m);
                current_bytes += m.len;
                total += m.len;
                if i + 1 == list.len() {
                    whole.push(c.file);
                }
            }
        }
        if !current.is_empty() {
            groups.push(current);
        }
        for group in groups {
            let n = group.len();
            match self.repack_group(&group, &opened).await {
                Ok((switched, bytes)) => {
                    report.new_packs += 1;
                    report.files += switched;
                    report.bytes += bytes;
                    if switched < n as u64 {
                        debug!(
                            files = n,
                            switched, "compaction: files changed meanwhile keep their new state"
                        );
                    }
                }
                Err(e) => {
                    warn!(files = n, error = %e, "compaction: repacking failed; retried next run");
                    self.error(format!("compaction: {e}"));
                    // Whatever it stored is named by its intent: delete it now if we can.
                    if let Err(e) = self.clear_intents().await {
                        warn!(error = %e, "compaction: clearing the failed repack's shards failed; retried next run");
                    }
                }
            }
        }
        // Packs none of whose files is left now.
        let (still, _) = self.db.pack_candidates()?;
        let live: HashSet<FileId> = still.iter().map(|c| c.file).collect();
        report.emptied = whole.iter().filter(|f| !live.contains(f)).count() as u64;
        info!(
            new_packs = report.new_packs,
            files = report.files,
            bytes = report.bytes,
            emptied = report.emptied,
            "compaction: done"
        );
        Ok(report)
    }

    /// Copies `group`'s files into one new pack and switches them to it. Returns the files
    /// switched and the bytes copied.
    async fn repack_group(
        &self,
        group: &[Member],
        opened: &HashMap<FileId, (Arc<Manifest>, FileKey)>,
    ) -> Result<(u64, u64)> {
        // The files' bytes, one read per old pack (the span its files in this group cover).
        let mut by_pack: BTreeMap<FileId, Vec<&Member>> = BTreeMap::new();
        for m in group {
            by_pack.entry(m.pack).or_default().push(m);
        }
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        let mut moves = Vec::new();
        for (pack, list) in by_pack {
            let (manifest, key) = opened.get(&pack).ok_or(Error::MalformedManifest {
                what: "a pack due for repacking was not opened",
            })?;
            let start = list.iter().map(|m| m.offset).min().unwrap_or(0);
            let end = list
                .iter()
                .filter_map(|m| m.offset.checked_add(m.len))
                .max()
                .unwrap_or(start);
            // Each file's range must be exactly one member of its pack (a corrupt record
            // is that file's error, and copying it would copy other files' bytes).
            for m in &list {
                manifest.check_range(m.offset, m.len)?;
            }
            let (got_at, bytes) = self
                .objects
                .read_covering(pack, manifest, key, start, end - start)
                .await?;
            for m in list {
                let from = m
                    .offset
                    .checked_sub(got_at)
                    .and_then(|o| usize::try_from(o).ok());
                let piece = from
                    .zip(usize::try_from(m.len).ok())
                    .and_then(|(from, len)| bytes.get(from..from.checked_add(len)?))
                    .ok_or(Error::MalformedManifest {
                        what: "a pack read returned less than the member's range",
                    })?;
                let new_offset = buf.len() as u64;
                buf.extend_from_slice(piece);
                ranges.push(PackRange {
                    offset: new_offset,
                    len: m.len,
                });
                moves.push(RepackMove {
                    ino: m.ino,
                    old_file: m.pack,
                    old_offset: m.offset,
                    len: m.len,
                    new_offset,
                });
            }
        }
        let bytes = buf.len() as u64;
        let intent = self.db.repack_intent_new()?;
        let db = self.db.clone();
        let log = move |ids: &[ShardId]| db.repack_intent_add(intent, ids);
        let stored = self
            .objects
            .put_pack_logged(Arc::new(MemorySource(buf)), ranges, &|_| {}, Some(&log))
            .await?;
        let switched =
            self.db
                .switch_repacked(intent, stored.file, *stored.key.as_bytes(), &moves)?;
        info!(file = %stored.file, files = moves.len(), switched, bytes, "compaction: new pack");
        Ok((switched, bytes))
    }

    /// Deletes the shards and manifest copies of every repack intent left by an earlier run
    /// (a crash, a failure) and removes the intents. Returns how many were cleared.
    async fn clear_intents(&self) -> Result<u64> {
        let intents = self.db.repack_intents()?;
        let mut cleared = 0;
        for (id, ids) in intents {
            if ids.is_empty() {
                self.db.repack_intent_done(id)?;
                cleared += 1;
                continue;
            }
            // Holders: the manifest's record where this machine kept it, and a lookup.
            let mut holders: HashMap<ShardId, Vec<NodeId>> = HashMap::new();
            for sid in &ids {
                let file = FileId(sid.0);
                if let Ok(Some(sealed)) = self.objects.local_sealed(file)
                    && let Ok(m) = self.objects.open_sealed(file, &sealed)
                {
                    for sh in m.segments.iter().flat_map(|s| &s.shards) {
                        holders
                            .entry(sh.id)
                            .or_default()
                            .extend(sh.holders.iter().copied());
                    }
                }
            }
            for (sid, found) in self.lookup(ids.clone(), LOOKUP_WANT).await? {
                holders.entry(sid).or_default().extend(found);
            }
            let client = self.objects.client().clone();
            let mut failed = None;
            for (sid, mut nodes) in holders {
                nodes.sort_unstable();
                nodes.dedup();
                if nodes.is_empty() {
                    continue;
                }
                if let Err(e) = client.delete(sid, nodes).await {
                    failed = Some(e);
                }
            }
            if let Some(e) = failed {
                warn!(intent = id, error = %e, "compaction: deleting an unfinished repack's shards failed; retried next run");
                self.error(format!("compaction: unfinished repack {id}: {e}"));
                continue;
            }
            for sid in &ids {
                self.objects.forget(FileId(sid.0))?;
            }
            self.db.repack_intent_done(id)?;
            info!(
                intent = id,
                shards = ids.len(),
                "compaction: an unfinished repack's shards deleted"
            );
            cleared += 1;
        }
        Ok(cleared)
    }
}
