//! The mount's audits of its holders: a background round every `[audit] interval_secs` over a
//! sample of the mount's shards (`per_gib_hour` audits per GiB stored per hour, drawn in
//! proportion to their bytes), and the full round `defs audit` asks for (every shard on every
//! holder once). Proofs and their checks are defs-net's [`defs_net::audit`]; this module only
//! picks the shards, from the manifests of the mount's files ([`Fs::stored_manifests`]).
//!
//! A failed audit lowers the holder's score and is kept in the node's list of failed audits
//! (`Node::failed_audits`), which repair reads; `defs status` shows the counts and the newest
//! failures.

use std::fmt::Write as _;
use std::time::Duration;

use defs_core::config::AuditSettings;
use defs_core::types::{NodeId, ShardId};
use defs_fuse::fs::Fs;
use defs_net::Client;
use defs_net::audit::{self, Report, Target, Verdict};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A shard of the mount: id, length, recorded holders.
type Shard = (ShardId, u64, Vec<NodeId>);

/// Called with each shard a holder failed to prove (the shard, the holder): where repair is
/// told (defs-core `Repairer::mark_lost` once repair is merged).
pub type OnFailed = std::sync::Arc<dyn Fn(ShardId, NodeId) + Send + Sync>;

/// Runs the mount's audits.
#[derive(Clone)]
pub struct Auditor {
    /// The mounted filesystem (for its files' manifests).
    pub fs: Fs,
    /// The mount's node.
    pub client: Client,
    /// `[audit]` of `config.toml`.
    pub settings: AuditSettings,
    /// Told of every failed audit, besides the node's list (`Node::failed_audits`).
    pub on_failed: Option<OnFailed>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("settings", &self.settings)
            .field("on_failed", &self.on_failed.is_some())
            .finish_non_exhaustive()
    }
}

/// Audits a background round asks for: `per_gib_hour` per GiB of `bytes` for `interval`,
/// rounded up (a mount with any data gets at least one per round when the rate is not 0).
pub fn sample_size(bytes: u64, per_gib_hour: f64, interval: Duration) -> usize {
    let n = bytes as f64 / f64::from(1u32 << 30) * per_gib_hour * interval.as_secs_f64() / 3600.0;
    if bytes == 0 || n <= 0.0 {
        0
    } else {
        n.ceil().min(1e6) as usize
    }
}

impl Auditor {
    async fn shards(&self) -> Result<Vec<Shard>, String> {
        let manifests = self
            .fs
            .stored_manifests()
            .await
            .map_err(|e| format!("listing the mount's files: {e}"))?;
        Ok(manifests
            .iter()
            .flat_map(|m| m.segments.iter().flat_map(|s| &s.shards))
            .map(|s| (s.id, u64::from(s.len), s.holders.clone()))
            .collect())
    }

    /// One round over `targets`; each failure is passed on to [`Auditor::on_failed`].
    async fn round(&self, targets: &[Target]) -> defs_net::Result<Report> {
        let r = audit::audit_round(&self.client, targets).await?;
        if let Some(f) = &self.on_failed {
            for rec in &r.failed {
                f(rec.id, rec.holder);
            }
        }
        Ok(r)
    }

    /// `defs audit`: every shard of the mount on each of its recorded holders, once. The text
    /// names every failure; `Err` (exit 1) when any.
    ///
    /// # Errors
    /// The report, when a holder failed an audit; or why the round could not run.
    pub async fn full_round(&self) -> Result<String, String> {
        let targets: Vec<Target> = self
            .shards()
            .await?
            .into_iter()
            .flat_map(|(id, len, holders)| {
                holders
                    .into_iter()
                    .map(move |holder| Target { id, len, holder })
            })
            .collect();
        let r = self.round(&targets).await.map_err(|e| format!("{e}"))?;
        let text = report_text(&r);
        if r.failed.is_empty() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// Audits a sample every `interval_secs` until `cancel`.
    pub async fn background(self, cancel: CancellationToken) {
        let interval = Duration::from_secs(self.settings.interval_secs.max(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let shards = match self.shards().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "audit round skipped");
                    continue;
                }
            };
            let bytes: u64 = shards.iter().map(|s| s.1).sum();
            let n = sample_size(bytes, self.settings.per_gib_hour, interval);
            if n == 0 {
                continue;
            }
            let targets = audit::sample(&shards, n);
            match self.round(&targets).await {
                Ok(r) => info!(
                    audits = targets.len(),
                    passed = r.passed,
                    failed = r.failed.len(),
                    unreachable = r.unreachable,
                    bytes = r.bytes,
                    "audit round"
                ),
                Err(e) => {
                    warn!(error = %e, "audit round stopped");
                    return;
                }
            }
        }
    }
}

/// What `defs audit` prints.
fn report_text(r: &Report) -> String {
    let mut out = format!(
        "audited {} shard copies in {:.2} s: {} proved, {} failed, {} holders unreachable ({} bytes of proofs)",
        r.passed + r.failed.len() as u64 + r.unreachable,
        r.took.as_secs_f64(),
        r.passed,
        r.failed.len(),
        r.unreachable,
        r.bytes
    );
    for f in &r.failed {
        let why = match &f.verdict {
            Verdict::Failed(why) => why.as_str(),
            _ => "",
        };
        let _ = write!(
            out,
            "\nfailed: shard {} on node {}: {why} (its score dropped; the shard is marked for repair)",
            f.id, f.holder
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_size_follows_the_rate() {
        let hour = Duration::from_secs(3600);
        assert_eq!(sample_size(0, 4.0, hour), 0);
        assert_eq!(sample_size(1 << 30, 4.0, hour), 4);
        assert_eq!(sample_size(10 << 30, 4.0, Duration::from_secs(600)), 7);
        assert_eq!(sample_size(1, 4.0, hour), 1);
        assert_eq!(sample_size(1 << 30, 0.0, hour), 0);
    }
}
