//! Opening the store: the counters rebuilt from the index, every pack cut and punched to what
//! the index covers, packs without an entry removed, index entries without a record reported
//! missing, and an old one-file-per-shard store moved into packs.

use std::collections::BTreeMap;

use super::counters::{FILLING, Filling};
use super::*;

impl ShardStore {
    /// Rebuilds the counters from the index, cuts and punches what no entry covers in the
    /// packs, removes packs without an entry, finds missing records, and moves an old
    /// one-file-per-shard store into packs.
    pub(super) fn recover(&mut self) -> Result<()> {
        let mut recovery = Recovery::default();
        let mut counters = Counters {
            limit: self.lock().limit,
            ..Counters::default()
        };
        // Pack → (offset, length, id) of every record the index points into it.
        let mut spans: BTreeMap<u32, Vec<(u64, u64, ShardId)>> = BTreeMap::new();
        let mut legacy: Vec<(ShardId, ShardMeta)> = Vec::new();
        {
            let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
            // Creates the table on first open; the commit makes that durable.
            txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            txn.commit().map_err(|e| self.idx_err(e))?;
            let txn = self.db.begin_read().map_err(|e| self.idx_err(e))?;
            let table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            for row in table.iter().map_err(|e| self.idx_err(e))? {
                let (k, v) = row.map_err(|e| self.idx_err(e))?;
                let id = ShardId(*k.value());
                let (meta, at) = Entry::decode_any(v.value()).ok_or(Error::CorruptShard {
                    id,
                    reason: "undecodable index entry",
                })?;
                counters.used += meta.len;
                counters.shards += 1;
                for owner in &meta.owners {
                    counters.charge(*owner, meta.len);
                }
                match at {
                    Some(Location::NOWHERE) => recovery.missing.push(id),
                    Some(at) => spans
                        .entry(at.pack)
                        .or_default()
                        .push((at.offset, meta.len, id)),
                    None => legacy.push((id, meta)),
                }
            }
        }

        let packs_dir = self.packs_dir();
        let on_disk = pack::pack_files(&packs_dir).map_err(|e| Error::io(&packs_dir, e))?;
        let mut with_room = Vec::new();
        for (n, path) in &on_disk {
            let Some(records) = spans.get_mut(n) else {
                tracing::warn!(path = %path.display(), "removing a pack without indexed shards");
                fs::remove_file(path).map_err(|e| Error::io(path, e))?;
                recovery.orphans_removed += 1;
                continue;
            };
            records.sort_unstable();
            let (trimmed, orphans) =
                trim_pack(path, records, &mut recovery.missing, &self.no_punch)
                    .map_err(|e| Error::io(path, e))?;
            recovery.orphans_removed += orphans;
            if trimmed < counters.limit {
                with_room.push(Filling {
                    pack: *n,
                    end: trimmed,
                    writes: 0,
                });
            }
        }
        fsync_dir(&packs_dir)?;
        for (n, records) in &spans {
            if on_disk.iter().all(|(m, _)| m != n) {
                recovery.missing.extend(records.iter().map(|r| r.2));
            }
            counters.live.insert(*n, records.len() as u64);
        }
        // New records go into the newest packs with room, or into new packs numbered after
        // everything an entry names (packs of missing shards included).
        with_room.reverse();
        with_room.truncate(FILLING);
        counters.filling = with_room;
        counters.next_pack = spans.keys().max().map_or(0, |h| h.saturating_add(1));

        if !legacy.is_empty() || self.dir.join("data").exists() || self.dir.join("tmp").exists() {
            self.migrate_files(legacy, &mut counters, &mut recovery)?;
        }
        recovery.missing.sort_unstable();
        for id in &recovery.missing {
            tracing::warn!(shard = %id, "indexed shard has no record");
        }
        self.counters = Mutex::new(counters);
        self.recovery = recovery;
        Ok(())
    }

    /// Moves the shards of the older layout (`data/ab/<id>` files, version-1 index entries) into
    /// packs, [`MIGRATE_BATCH`] bytes at a time: each batch's packs are synced, its entries
    /// committed at once, then its old files removed, so the move needs at most one batch of
    /// disk beyond what the store holds. Then `data/` and `tmp/` go. A crash or an error (a full
    /// disk, an unreadable file) leaves the batches before it moved and the rest in the old
    /// layout; unindexed records of the batch under way are punched at the next open, which
    /// moves the rest.
    pub(super) fn migrate_files(
        &self,
        legacy: Vec<(ShardId, ShardMeta)>,
        counters: &mut Counters,
        recovery: &mut Recovery,
    ) -> Result<()> {
        let data = self.dir.join("data");
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for (id, meta) in legacy {
            let hex = id.to_hex();
            let path = data.join(&hex[..2]).join(&hex);
            let at = match fs::read(&path) {
                Ok(bytes) if bytes.len() as u64 == meta.len => {
                    let at = self.reserve(counters, meta.len)?;
                    let pack_path = self.pack_path(at.pack);
                    let head = RecordHeader {
                        id,
                        len: meta.len,
                        crc: meta.crc,
                    };
                    let written = self
                        .pack_file(at.pack)
                        .and_then(|file| pack::write_record(&file, at.offset, &head, &bytes));
                    counters.written(at.pack);
                    written.map_err(|e| Error::io(&pack_path, e))?;
                    recovery.migrated += 1;
                    batch_bytes += meta.len;
                    at
                }
                Ok(_) => {
                    tracing::warn!(shard = %id, "old shard file has the wrong length; not moved");
                    recovery.missing.push(id);
                    Location::NOWHERE
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    recovery.missing.push(id);
                    Location::NOWHERE
                }
                Err(e) => return Err(Error::io(&path, e)),
            };
            batch.push((id, Entry { meta, at }, path));
            if batch_bytes >= MIGRATE_BATCH {
                self.commit_migrated(&mut batch)?;
                batch_bytes = 0;
            }
        }
        self.commit_migrated(&mut batch)?;
        for sub in ["data", "tmp"] {
            let d = self.dir.join(sub);
            match fs::remove_dir_all(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&d, e)),
            }
        }
        fsync_dir(&self.dir)?;
        if recovery.migrated > 0 {
            tracing::info!(shards = recovery.migrated, "moved shard files into packs");
        }
        Ok(())
    }

    /// Makes a batch of moved shards durable (syncs the packs written, commits the entries in
    /// one transaction), then removes their old files.
    pub(super) fn commit_migrated(&self, batch: &mut Vec<(ShardId, Entry, PathBuf)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut packs: Vec<u32> = batch
            .iter()
            .map(|b| b.1.at)
            .filter(|at| *at != Location::NOWHERE)
            .map(|at| at.pack)
            .collect();
        packs.sort_unstable();
        packs.dedup();
        for n in packs {
            let path = self.pack_path(n);
            self.pack_file(n)
                .and_then(|f| f.sync_data())
                .map_err(|e| Error::io(&path, e))?;
        }
        let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
        {
            let mut table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            for (id, entry, _) in batch.iter() {
                table
                    .insert(&id.0, entry.encode().as_slice())
                    .map_err(|e| self.idx_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.idx_err(e))?;
        for (_, _, path) in batch.drain(..) {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(())
    }
}

/// Open's work on one pack, given the records the index points into it (offset, length, id;
/// sorted): punches the
/// unindexed ranges that hold data, cuts the file after the last record, and adds records the
/// file is too short for to `missing`. Returns where the next record may start and how many
/// ranges it reclaimed.
pub(super) fn trim_pack(
    path: &Path,
    records: &[(u64, u64, ShardId)],
    missing: &mut Vec<ShardId>,
    no_punch: &AtomicBool,
) -> std::io::Result<(u64, u64)> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let size = file.metadata()?.len();
    let mut reclaimed = 0;
    let mut free_from = 0;
    for &(offset, len, id) in records {
        if offset > free_from
            && !no_punch.load(Ordering::Relaxed)
            && has_data(&file, free_from, offset.min(size))?
        {
            match punch_hole(&file, free_from, offset - free_from) {
                Ok(()) => reclaimed += 1,
                // Debris costs space only: reads go by the index and check header and CRC.
                Err(e) if punch_unsupported(&e) => {
                    no_punch.store(true, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), "{NO_PUNCH}");
                }
                Err(e) => return Err(e),
            }
        }
        if offset + HEADER_LEN + len > size {
            missing.push(id);
        }
        free_from = free_from.max(record_end(offset, len));
    }
    if size > free_from {
        file.set_len(free_from)?;
        reclaimed += 1;
    }
    Ok((free_from, reclaimed))
}
