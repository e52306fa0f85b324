//! The garbage collector: the one place that deletes this owner's objects from the network
//! (file contents and packs, namespace snapshots and segments), when the object ledger
//! ([`crate::meta::ledger`]) shows that no kept version names them any more
//! (docs/namespace-publishing.md §6). A pack whose every member was deleted or rewritten dies
//! like any other content object; a sparse pack is first emptied by compaction ([`compact`]:
//! its live files copied into a new pack), then dies through the same ledger and is deleted
//! here too.
//!
//! ```text
//!  Collector::run(kept seqs) ── ledger rows, rule: born ≤ v < dead for no kept v
//!   ├─ per object, GC_PARALLEL at once, at most max_objects a run:
//!   │    Objects::retire (repair leaves it alone) ─▶ its manifest (local copy or the network)
//!   │    ─▶ a signed delete of every shard on its recorded holders ("not found" = done)
//!   │    ─▶ ledger: shards gone (durable)
//!   ├─ one lookup of every manifest copy of those objects ─▶ a signed delete of each
//!   └─ local manifest copy and holder record removed ─▶ ledger row removed (last)
//! ```
//!
//! Crash safety: every step is repeatable and the row goes last, so a crash (kill -9) at any
//! point repeats work at the next run and never deletes anything the rule does not allow. An
//! object whose shards are gone but whose row remains (a crash before the manifest step) is
//! known by the row's "shards gone" flag: its manifest copies are deleted without opening it.
//!
//! Only a mount that holds the lease and whose published seq is the newest may run it
//! ([`crate::publish::Publisher::may_collect`]): it alone knows every record that exists.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::error::Result;
use crate::meta::MetaDb;
use crate::meta::ledger::{self, LedgerRow, ObjectKind};
use crate::object::{MANIFEST_COPIES, Objects};
use crate::remote::Holders;
use crate::sync::Arc;
use crate::types::{FileId, NodeId, ShardId};

/// Objects deleted at once: each waits on a few round trips; four overlap them without
/// flooding the holders (the same figure as repair's).
pub const GC_PARALLEL: usize = 4;

/// Shard deletes of one object in flight at once.
pub const DELETE_PARALLEL: usize = 8;

/// Shard ids asked about in one lookup (the network's limit per request, 512).
pub const LOOKUP_BATCH: usize = 512;

/// Holders a lookup waits for per shard: the recorded one, its pair partner's mirror copy and
/// copies repair placed.
pub const LOOKUP_WANT: usize = 4;

/// Errors a [`GcStatus`] keeps (the newest), for `defs status`.
pub const MAX_STATUS_ERRORS: usize = 20;

/// How the collector runs (`[gc]` of `config.toml`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcConfig {
    /// Run in the background at all.
    pub enabled: bool,
    /// How often the background collector runs (after a publish moved the namespace).
    pub interval: Duration,
    /// At most this many objects are deleted per run (the rest waits for the next).
    pub max_objects: usize,
    /// Packs whose live share is below this are repacked ([`compact`]); 0: never.
    pub repack_below: f64,
}

/// The default of [`GcConfig::repack_below`]: a pack more than half dead is repacked, so
/// what packs store stays under twice their live bytes (before the code's own factor).
pub const DEFAULT_REPACK_BELOW: f64 = 0.5;

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            interval: Duration::from_secs(600),
            max_objects: 1000,
            repack_below: DEFAULT_REPACK_BELOW,
        }
    }
}

/// What the collector did and has pending, for `defs status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcStatus {
    /// A run is going on.
    pub running: bool,
    /// Runs finished since the mount started.
    pub runs: u64,
    /// When the last run ended.
    pub last_run: Option<SystemTime>,
    /// Objects deleted from the network (since the mount started).
    pub deleted_objects: u64,
    /// Shard deletes acknowledged (or found already gone).
    pub deleted_shards: u64,
    /// Stored bytes of the deleted shards (each copy counted).
    pub deleted_bytes: u64,
    /// Objects the rule lets go, not deleted yet (at the last run's start or end).
    pub pending_objects: u64,
    /// Their stored bytes, as far as their manifests are on this machine.
    pub pending_bytes: u64,
    /// Dead objects a kept version still needs.
    pub kept_objects: u64,
    /// Objects the namespace names now.
    pub live_objects: u64,
    /// Packs compaction emptied (every live file moved to a new pack; since the mount started).
    pub repacked_packs: u64,
    /// Files compaction moved to new packs.
    pub repacked_files: u64,
    /// Bytes compaction copied into new packs.
    pub repacked_bytes: u64,
    /// The newest errors, newest last.
    pub errors: Vec<String>,
}

/// Counts of the ledger's rows under a set of kept versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    /// Rows the namespace names now (dead = alive).
    pub live: u64,
    /// Dead rows whose death no publish has resolved yet.
    pub pending_death: u64,
    /// Dead rows a kept version needs.
    pub kept: u64,
    /// Rows the rule lets go.
    pub collectible: u64,
}

impl MetaDb {
    /// Every row of the object ledger, in file id order.
    ///
    /// # Errors
    /// Db, Corrupt.
    pub fn ledger(&self) -> Result<Vec<LedgerRow>> {
        self.read(|txn| {
            let table = txn.open_table(crate::meta::schema::LEDGER).map_err(|e| {
                crate::error::Error::Db {
                    context: "opening the ledger",
                    source: Box::new(e.into()),
                }
            })?;
            let mut out = Vec::new();
            let iter = redb::ReadableTable::iter(&table).map_err(|e| crate::error::Error::Db {
                context: "listing the ledger",
                source: Box::new(e.into()),
            })?;
            for item in iter {
                let (k, v) = item.map_err(|e| crate::error::Error::Db {
                    context: "listing the ledger",
                    source: Box::new(e.into()),
                })?;
                out.push(ledger::decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    /// Records that `files` were stored but may be named by no inode (an upload that lost to a
    /// newer write, a pack whose members all changed meanwhile): each one no inode names gets
    /// a row no version needs. Call it once every inode that could name them has its outcome.
    ///
    /// # Errors
    /// Db; NotDurable.
    pub fn note_unnamed(&self, files: &[FileId]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        self.write_bookkeeping(&[], |txn| {
            for f in files {
                ledger::unnamed_in(txn, f)?;
            }
            Ok(())
        })
    }

    /// Records a stored namespace object (snapshot or segment), undecided until a commit.
    pub(crate) fn note_namespace_object(&self, file: FileId, kind: ObjectKind) -> Result<()> {
        self.write_bookkeeping(&[], |txn| ledger::stored_in(txn, &file, kind))
    }

    /// Gives the objects kept versions name rows where they have none ([`ledger::derived_in`]);
    /// returns how many rows were added.
    pub(crate) fn note_kept_objects(&self, named: &[(FileId, ObjectKind, u64)]) -> Result<u64> {
        self.write_bookkeeping(&[], |txn| ledger::derived_in(txn, named))
    }

    /// Gives the namespace objects of the committed record `seq` rows where they have none.
    pub(crate) fn note_record_objects(
        &self,
        seq: u64,
        named: &[(FileId, ObjectKind)],
    ) -> Result<()> {
        self.write_bookkeeping(&[], |txn| ledger::known_in(txn, seq, named))
    }

    /// Commits a published record: the counters and what the record decides in the ledger,
    /// in one durable transaction.
    pub(crate) fn commit_published(
        &self,
        seq: u64,
        lsn: u64,
        named: &[(FileId, ObjectKind)],
    ) -> Result<()> {
        use crate::meta::schema::{KEY_PUBLISHED_LSN, KEY_PUBLISHED_SEQ};
        self.write_bookkeeping(
            &[(KEY_PUBLISHED_SEQ, seq), (KEY_PUBLISHED_LSN, lsn)],
            |txn| {
                ledger::resolve_in(txn, seq, lsn, named)?;
                crate::meta::repack::resolve_in(txn, seq, lsn)
            },
        )
    }

    fn ledger_shards_gone(&self, file: FileId) -> Result<()> {
        self.write_bookkeeping(&[], |txn| ledger::shards_gone_in(txn, &file))
    }

    fn ledger_remove(&self, files: &[FileId], kept: &[u64]) -> Result<u64> {
        self.write_bookkeeping(&[], |txn| {
            let mut n = 0;
            for f in files {
                n += u64::from(ledger::remove_in(txn, f, kept)?);
            }
            Ok(n)
        })
    }

    /// How the ledger's rows stand under the kept versions `kept`.
    ///
    /// # Errors
    /// As [`MetaDb::ledger`].
    pub fn ledger_counts(&self, kept: &[u64]) -> Result<LedgerCounts> {
        let mut c = LedgerCounts::default();
        for row in self.ledger()? {
            if row.dead == ledger::ALIVE {
                c.live += 1;
            } else if row.collectible(kept) {
                c.collectible += 1;
            } else if row.dead == ledger::PENDING || row.born == ledger::PENDING {
                c.pending_death += 1;
            } else {
                c.kept += 1;
            }
        }
        Ok(c)
    }
}

/// What deleting one object's shards did.
#[derive(Default)]
struct Deleted {
    shards: u64,
    bytes: u64,
}

/// The collector (see the module doc). Cheap to share behind an `Arc`.
pub struct Collector {
    db: Arc<MetaDb>,
    objects: Arc<Objects>,
    config: GcConfig,
    status: Mutex<GcStatus>,
    /// One run at a time.
    pass: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The stored bytes a manifest's shards take (each recorded copy counted once, at least one).
fn stored_bytes(m: &crate::manifest::Manifest) -> u64 {
    m.segments
        .iter()
        .flat_map(|s| &s.shards)
        .map(|sh| u64::from(sh.len) * sh.holders.len().max(1) as u64)
        .sum()
}

impl Collector {
    /// A collector of the objects in `db`'s ledger, stored through `objects`.
    pub fn new(db: Arc<MetaDb>, objects: Arc<Objects>, config: GcConfig) -> Collector {
        Collector {
            db,
            objects,
            config,
            status: Mutex::new(GcStatus::default()),
            pass: tokio::sync::Mutex::new(()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &GcConfig {
        &self.config
    }

    /// The metadata DB.
    pub fn db(&self) -> &Arc<MetaDb> {
        &self.db
    }

    /// The object layer.
    pub fn objects(&self) -> &Arc<Objects> {
        &self.objects
    }

    /// What the collector did and has pending.
    pub fn status(&self) -> GcStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn error(&self, e: String) {
        if let Ok(mut s) = self.status.lock() {
            s.errors.push(e);
            let over = s.errors.len().saturating_sub(MAX_STATUS_ERRORS);
            s.errors.drain(..over);
        }
    }

    fn update(&self, f: impl FnOnce(&mut GcStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Counts what waits under `kept` into the status (pending objects and, where the manifest
    /// is on this machine, their bytes), and returns the collectible rows.
    async fn survey(&self, kept: &[u64]) -> Result<Vec<LedgerRow>> {
        let rows = self.db.ledger()?;
        let counts = {
            let mut c = LedgerCounts::default();
            for row in &rows {
                if row.dead == ledger::ALIVE {
                    c.live += 1;
                } else if !row.collectible(kept)
                    && row.dead != ledger::PENDING
                    && row.born != ledger::PENDING
                {
                    c.kept += 1;
                }
            }
            c
        };
        let collectible: Vec<LedgerRow> =
            rows.into_iter().filter(|r| r.collectible(kept)).collect();
        let mut bytes = 0;
        for row in &collectible {
            if row.shards_gone {
                continue;
            }
            if let Ok(Some(sealed)) = self.objects.local_sealed(row.file)
                && let Ok(m) = self.objects.open_sealed(row.file, &sealed)
            {
                bytes += stored_bytes(&m);
            }
        }
        self.update(|s| {
            s.pending_objects = collectible.len() as u64;
            s.pending_bytes = bytes;
            s.kept_objects = counts.kept;
            s.live_objects = counts.live;
        });
        Ok(collectible)
    }

    /// Deletes what the rule lets go under the kept versions `kept` (their seqs; the current
    /// published seq must be among them): at most [`GcConfig::max_objects`] objects,
    /// [`GC_PARALLEL`] at once. Returns the status after the run.
    ///
    /// # Errors
    /// Reading the ledger; a failure to delete an object is counted in
    /// [`GcStatus::errors`] and retried at the next run, not returned.
    ///
    /// # Cancel safety
    /// Safe: the ledger row of an object goes last, so a dropped run is repeated.
    pub async fn run(&self, kept: &[u64]) -> Result<GcStatus> {
        let _pass = self.pass.lock().await;
        self.update(|s| s.running = true);
        let result = self.run_locked(kept).await;
        self.update(|s| {
            s.running = false;
            s.runs += 1;
            s.last_run = Some(SystemTime::now());
        });
        if let Err(e) = &result {
            self.error(format!("collector: {e}"));
        }
        result.map(|()| self.status())
    }

    async fn run_locked(&self, kept: &[u64]) -> Result<()> {
        let mut rows = self.survey(kept).await?;
        rows.truncate(self.config.max_objects.max(1));
        if rows.is_empty() {
            return Ok(());
        }
        info!(
            objects = rows.len(),
            kept = kept.len(),
            "garbage collection: deleting objects no kept version names"
        );
        // Shards first, object by object, on their recorded holders and on every node a
        // lookup finds holding them (a pair partner's mirror copy, a copy repair placed).
        let todo: Vec<LedgerRow> = rows.iter().filter(|r| !r.shards_gone).copied().collect();
        let found = Arc::new(self.holders_of(&todo).await?);
        let shard_steps = futures::stream::iter(todo)
            .map(|row| {
                let found = found.clone();
                async move { (row.file, self.delete_shards(row, &found).await) }
            })
            .buffer_unordered(GC_PARALLEL);
        futures::pin_mut!(shard_steps);
        let mut ready: Vec<FileId> = rows
            .iter()
            .filter(|r| r.shards_gone)
            .map(|r| r.file)
            .collect();
        while let Some((file, r)) = shard_steps.next().await {
            match r {
                Ok(d) => {
                    self.update(|s| {
                        s.deleted_shards += d.shards;
                        s.deleted_bytes += d.bytes;
                    });
                    ready.push(file);
                }
                Err(e) => {
                    warn!(%file, error = %e, "garbage collection: deleting shards failed; retried next run");
                    self.error(format!("{file}: {e}"));
                }
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        // Then every manifest copy of those objects, found by lookups.
        let ids: Vec<ShardId> = ready.iter().map(|f| ShardId(f.0)).collect();
        let client = self.objects.client().clone();
        let found = self.lookup(ids, MANIFEST_COPIES).await?;
        let mut failed = HashSet::new();
        for (id, holders) in found {
            if holders.is_empty() {
                continue;
            }
            if let Err(e) = client.delete(id, holders).await {
                warn!(file = %id, error = %e, "garbage collection: deleting manifest copies failed; retried next run");
                self.error(format!("manifest {id}: {e}"));
                failed.insert(FileId(id.0));
            }
        }
        let done: Vec<FileId> = ready.into_iter().filter(|f| !failed.contains(f)).collect();
        for f in &done {
            if let Err(e) = self.objects.forget(*f) {
                warn!(file = %f, error = %e, "garbage collection: removing the local manifest copy failed");
            }
        }
        let removed = self.db.ledger_remove(&done, kept)?;
        self.update(|s| {
            s.deleted_objects += removed;
            s.pending_objects = s.pending_objects.saturating_sub(removed);
        });
        info!(objects = removed, "garbage collection: objects deleted");
        Ok(())
    }

    /// Who holds `ids`, asked [`LOOKUP_BATCH`] at a time (waiting for up to `want` holders).
    async fn lookup(&self, ids: Vec<ShardId>, want: usize) -> Result<Holders> {
        let client = self.objects.client().clone();
        let mut out = Vec::new();
        for chunk in ids.chunks(LOOKUP_BATCH) {
            out.extend(client.lookup_many(chunk.to_vec(), want).await?);
        }
        Ok(out)
    }

    /// The holders a lookup finds for every shard of `rows`' objects whose manifest opens
    /// (one that does not fails later, in [`Collector::delete_shards`]).
    async fn holders_of(&self, rows: &[LedgerRow]) -> Result<HashMap<ShardId, Vec<NodeId>>> {
        let mut ids = Vec::new();
        for row in rows {
            self.objects.retire(row.file);
            if let Ok((m, _)) = self.objects.open_owned(row.file).await {
                ids.extend(m.segments.iter().flat_map(|s| &s.shards).map(|s| s.id));
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut out: HashMap<ShardId, Vec<NodeId>> = HashMap::new();
        for (id, holders) in self.lookup(ids, LOOKUP_WANT).await? {
            out.entry(id).or_default().extend(holders);
        }
        Ok(out)
    }

    /// Deletes every shard of `row`'s object from its recorded holders and those `found`,
    /// then marks the row.
    async fn delete_shards(
        &self,
        row: LedgerRow,
        found: &HashMap<ShardId, Vec<NodeId>>,
    ) -> Result<Deleted> {
        self.objects.retire(row.file);
        let (manifest, _) = self.objects.open_owned(row.file).await?;
        // One delete per shard id, on every node recorded for any copy of it.
        let mut by_id: Vec<(ShardId, u64, Vec<NodeId>)> = Vec::new();
        for sh in manifest.segments.iter().flat_map(|s| &s.shards) {
            match by_id.iter_mut().find(|(id, _, _)| *id == sh.id) {
                Some((_, n, holders)) => {
                    *n += 1;
                    for h in &sh.holders {
                        if !holders.contains(h) {
                            holders.push(*h);
                        }
                    }
                }
                None => by_id.push((sh.id, 1, sh.holders.clone())),
            }
        }
        for (id, _, holders) in &mut by_id {
            for h in found.get(id).into_iter().flatten() {
                if !holders.contains(h) {
                    holders.push(*h);
                }
            }
        }
        let client = self.objects.client().clone();
        let bytes = stored_bytes(&manifest);
        let shards = by_id.len() as u64;
        let results: Vec<Result<()>> = futures::stream::iter(by_id)
            .map(|(id, _, holders)| {
                let client = client.clone();
                async move { client.delete(id, holders).await }
            })
            .buffer_unordered(DELETE_PARALLEL)
            .collect()
            .await;
        if let Some(e) = results.into_iter().find_map(|r| r.err()) {
            return Err(e);
        }
        debug!(file = %row.file, shards, kind = ?row.kind, "garbage collection: shards deleted");
        self.db.ledger_shards_gone(row.file)?;
        Ok(Deleted { shards, bytes })
    }
}

pub mod compact;
#[cfg(test)]
mod tests;
