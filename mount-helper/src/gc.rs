//! The garbage collector of a writable mount: when it runs (`[gc] interval_secs` in the
//! background, `defs gc` now), which versions it keeps, and what `defs status` says of it.
//! defs-core's [`Collector`] does the deleting, and before it the compaction of sparse packs
//! ([`Collector::compact`]), whose switch a publish records before the deletes run.
//!
//! It runs only while the mount's publisher says it may ([`Publisher::may_collect`]: nothing
//! is waiting to commit and no newer record was seen) *and* the network agrees
//! ([`Publisher::holds_newest`]: this mount holds the write lease and no peer keeps a higher
//! seq). It keeps every version `/.snapshots` lists and the current one
//! ([`Publisher::kept_seqs`]); when those cannot be known, it deletes nothing.
//!
//! [`Publisher::may_collect`]: defs_core::publish::Publisher::may_collect
//! [`Publisher::holds_newest`]: defs_core::publish::Publisher::holds_newest
//! [`Publisher::kept_seqs`]: defs_core::publish::Publisher::kept_seqs

use std::fmt::Write as _;
use std::time::Duration;

use defs_core::gc::compact::CompactReport;
use defs_core::gc::{Collector, GcStatus};
use defs_core::sync::Arc;
use defs_fuse::publisher::PublishTrigger;
use defs_net::commands::json_str;
use tracing::{info, warn};

/// How long after the mount is ready the first background run starts (the publisher has
/// published by then).
pub const FIRST_RUN_AFTER: Duration = Duration::from_secs(60);

/// The mount's collector and the publisher it follows.
#[derive(Clone, Debug)]
pub struct GarbageCollector {
    /// The deleting part.
    pub collector: Arc<Collector>,
    /// The mount's publish trigger.
    pub publisher: PublishTrigger,
}

impl GarbageCollector {
    /// Whether this mount may collect now: `Ok(false)` when it may not.
    async fn may_collect(&self) -> Result<bool, String> {
        let publisher = self.publisher.publisher();
        if !publisher.may_collect().await {
            return Ok(false);
        }
        publisher.holds_newest().await.map_err(|e| {
            format!(
                "nothing collected: the network could not say whether this mount holds the \
                 newest record ({e})"
            )
        })
    }

    /// The kept versions' seqs.
    async fn kept(&self) -> Result<Vec<u64>, String> {
        self.publisher.publisher().kept_seqs().await.map_err(|e| {
            format!("nothing collected: the kept versions (/.snapshots) are unknown ({e})")
        })
    }

    /// One run, if this mount may collect (`Ok(None)` when it may not): compaction of sparse
    /// packs, a publish of the files it switched (so the ledger sees the old packs die), then
    /// the deletes.
    async fn run_once(&self) -> Result<Option<(CompactReport, GcStatus)>, String> {
        if !self.may_collect().await? {
            return Ok(None);
        }
        let kept = self.kept().await?;
        let report = self
            .collector
            .compact(&kept)
            .await
            .map_err(|e| format!("compaction: {e}"))?;
        let kept = if report.files > 0 {
            self.publisher
                .publish_now()
                .await
                .map_err(|e| format!("publishing the repacked files failed: {e}"))?;
            if !self.may_collect().await? {
                return Ok(None);
            }
            self.kept().await?
        } else {
            kept
        };
        // A data dir recovered from the key alone first learns the lost machine's garbage;
        // without it, what this run may delete is only less (tried again at the next run).
        if let Err(e) = self.publisher.publisher().derive_recovered_garbage().await {
            warn!(error = %e, "gc: what the recovered kept versions name is not known yet; their objects are kept");
        }
        self.collector
            .run(&kept)
            .await
            .map(|s| Some((report, s)))
            .map_err(|e| format!("{e}"))
    }

    /// `defs gc`: publishes the namespace (so the ledger knows every death so far), then runs.
    ///
    /// # Errors
    /// The publish's or the run's failure, as text.
    pub async fn run_now(&self) -> Result<String, String> {
        let before = self.collector.status();
        let published = self
            .publisher
            .publish_now()
            .await
            .map_err(|e| format!("publishing the namespace first failed: {e}"))?;
        let Some((report, s)) = self.run_once().await? else {
            return Err(
                "this mount may not collect garbage: it does not hold the newest record of the \
                 identity"
                    .into(),
            );
        };
        let mut out = format!(
            "garbage collection (keeping seq {}): deleted {} object(s), {} shard(s), {} bytes",
            published.seq,
            s.deleted_objects - before.deleted_objects,
            s.deleted_shards - before.deleted_shards,
            s.deleted_bytes - before.deleted_bytes,
        );
        let _ = write!(out, "; {}", compaction_text(&report));
        if s.pending_objects > 0 {
            let _ = write!(
                out,
                "; {} object(s) still to delete (retried at the next run)",
                s.pending_objects
            );
            if let Some(e) = s.errors.last() {
                let _ = write!(out, "; last error: {e}");
            }
            return Err(out);
        }
        Ok(out)
    }

    /// The background collector: every `interval` (0: never), after [`FIRST_RUN_AFTER`].
    pub fn spawn(self, interval: Duration) -> Option<tokio_util::task::AbortOnDropHandle<()>> {
        if interval.is_zero() {
            info!("background garbage collection is off ([gc] interval_secs = 0)");
            return None;
        }
        let task = tokio::spawn(async move {
            tokio::time::sleep(FIRST_RUN_AFTER.min(interval)).await;
            loop {
                match self.run_once().await {
                    Ok(Some((r, s))) => info!(
                        deleted = s.deleted_objects,
                        pending = s.pending_objects,
                        kept = s.kept_objects,
                        repacked_files = r.files,
                        "background garbage collection done"
                    ),
                    Ok(None) => info!("garbage collection skipped: not the newest writer"),
                    Err(e) => warn!(error = %e, "background garbage collection failed"),
                }
                tokio::time::sleep(interval).await;
            }
        });
        Some(tokio_util::task::AbortOnDropHandle::new(task))
    }

    /// The `gc:` line of `defs status`.
    pub fn status_text(&self) -> String {
        let s = self.collector.status();
        let mut line = format!(
            "gc: {} object(s) deleted ({} shards, {} bytes) since mount; {} waiting to be deleted \
             ({} bytes known), {} kept by a version, {} live",
            s.deleted_objects,
            s.deleted_shards,
            s.deleted_bytes,
            s.pending_objects,
            s.pending_bytes,
            s.kept_objects,
            s.live_objects
        );
        let _ = write!(
            line,
            "; compaction: {} pack(s) emptied, {} file(s) ({} bytes) moved to new packs since \
             mount",
            s.repacked_packs, s.repacked_files, s.repacked_bytes
        );
        if s.runs == 0 {
            line.push_str(" (no run yet)");
        }
        if s.running {
            line.push_str("; running now");
        }
        if let Some(e) = s.errors.last() {
            let _ = write!(line, "; last error: {e}");
        }
        line
    }

    /// [`GarbageCollector::status_text`] as JSON.
    pub fn status_json(&self) -> String {
        let s = self.collector.status();
        format!(
            "{{\"runs\":{},\"deleted_objects\":{},\"deleted_shards\":{},\"deleted_bytes\":{},\"pending_objects\":{},\"pending_bytes\":{},\"kept_objects\":{},\"live_objects\":{},\"repacked_packs\":{},\"repacked_files\":{},\"repacked_bytes\":{},\"last_error\":{}}}",
            s.runs,
            s.deleted_objects,
            s.deleted_shards,
            s.deleted_bytes,
            s.pending_objects,
            s.pending_bytes,
            s.kept_objects,
            s.live_objects,
            s.repacked_packs,
            s.repacked_files,
            s.repacked_bytes,
            s.errors
                .last()
                .map_or_else(|| "null".to_string(), |e| json_str(e))
        )
    }
}

/// What one compaction did, in words (the part of `defs gc`'s line after the deletes).
fn compaction_text(r: &CompactReport) -> String {
    let mut out = format!(
        "compaction: {} pack(s) below repack_below, {} file(s) ({} bytes) moved into {} new pack(s)",
        r.due, r.files, r.bytes, r.new_packs
    );
    if r.cleared > 0 {
        let _ = write!(
            out,
            ", {} unfinished repack(s) of an earlier run deleted",
            r.cleared
        );
    }
    out
}
