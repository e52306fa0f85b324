//! What the node remembers of audits: each [`AuditRecord`], the counts `defs status` shows
//! ([`Summary`]) and the failed ones repair reads ([`Log`]). See [`crate::audit`].

use defs_core::types::{NodeId, ShardId};

/// Failed audits the node remembers for repair and `defs status` (the newest ones).
pub const MAX_FAILED_AUDITS: usize = 1024;

/// What one audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The holder proved it holds the shard.
    Passed,
    /// The holder could not prove it (why, in words): it lost, damaged or never kept the shard,
    /// or answered garbage.
    Failed(String),
    /// The holder was not reachable: not counted either way (liveness is another matter).
    Unreachable(String),
}

/// One audit's record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// The shard.
    pub id: ShardId,
    /// The holder's node id.
    pub holder: NodeId,
    /// What it found.
    pub verdict: Verdict,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// What `defs status` shows of the audits this node ran as an owner.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Audits passed since start.
    pub passed: u64,
    /// Audits failed since start.
    pub failed: u64,
    /// Audits whose holder was unreachable since start.
    pub unreachable: u64,
    /// When the last audit was judged (ms since the epoch; 0: never).
    pub last_ms: u64,
    /// The newest failures (at most [`STATUS_FAILURES`]), newest last.
    pub recent_failures: Vec<AuditRecord>,
}

/// Failures `defs status` lists.
pub const STATUS_FAILURES: usize = 8;

/// The node's memory of audits: counts, and the failed ones (at most [`MAX_FAILED_AUDITS`])
/// for repair to read.
#[derive(Debug, Default)]
pub(crate) struct Log {
    summary: Summary,
    failures: std::collections::VecDeque<AuditRecord>,
}

impl Log {
    pub(crate) fn record(&mut self, r: AuditRecord) {
        self.summary.last_ms = r.at_ms;
        match r.verdict {
            Verdict::Passed => self.summary.passed += 1,
            Verdict::Unreachable(_) => self.summary.unreachable += 1,
            Verdict::Failed(_) => {
                self.summary.failed += 1;
                if self.failures.len() >= MAX_FAILED_AUDITS {
                    self.failures.pop_front();
                }
                self.failures.push_back(r);
            }
        }
    }

    pub(crate) fn summary(&self) -> Summary {
        let mut s = self.summary.clone();
        let skip = self.failures.len().saturating_sub(STATUS_FAILURES);
        s.recent_failures = self.failures.iter().skip(skip).cloned().collect();
        s
    }

    pub(crate) fn failures(&self) -> Vec<AuditRecord> {
        self.failures.iter().cloned().collect()
    }
}
