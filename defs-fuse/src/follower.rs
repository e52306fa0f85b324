//! The follow trigger of a read-only mount: looks for a newer namespace another machine
//! published, has defs-core's [`Follower`] apply it, then drops what the caches hold of the
//! old one (`docs/namespace-publishing.md` §5).
//!
//! ```text
//!  FollowTrigger (handle) ── Status{reply} ──▶ FollowActor (task)
//!                                              │ every `every`: Follower::poll
//!                                              │ applied ──▶ Fs::content_replaced(ino)  (stale cached bytes)
//!                                              │         ──▶ kernel (blocking thread): inval_entry(parent, name),
//!                                              │             inval_inode(ino, 0, 0)     (entries, attributes, pages)
//! ```
//!
//! The metadata DB changes in one transaction, so a request sees the old namespace or the new
//! one. The kernel's caches are told after the commit; until then (microseconds to a few ms)
//! and for at most [`crate::fuse::ATTR_TTL`] where a notification fails, it may answer from
//! the old entries. A follower never publishes and never takes or releases the lease.

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use defs_core::publish::Follower;
use defs_core::snapshot::segment::Changed;
use defs_core::sync::Arc;
use defs_core::types::InodeNo;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::fs::Fs;

/// What the follower knows, for `defs status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowState {
    /// The seq of the namespace the mount shows (0: none published).
    pub seq: u64,
    /// The host name of the writer that published it, once one was applied here.
    pub writer_name: Option<String>,
    /// How often the network is asked.
    pub every: Duration,
    /// The last look or apply failed, and why (cleared by the next success).
    pub error: Option<String>,
}

enum FollowMessage {
    Status { reply: oneshot::Sender<FollowState> },
}

/// Handle to the follow trigger. Cheap to clone; the task stops when the last handle goes.
#[derive(Clone)]
pub struct FollowTrigger {
    tx: mpsc::Sender<FollowMessage>,
    _task: Arc<AbortOnDropHandle<()>>,
}

impl std::fmt::Debug for FollowTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowTrigger").finish_non_exhaustive()
    }
}

struct FollowActor {
    rx: mpsc::Receiver<FollowMessage>,
    follower: Arc<Follower>,
    fs: Fs,
    notifier: Option<fuser::Notifier>,
    state: FollowState,
}

impl FollowTrigger {
    /// Starts following: every `every`, `follower` looks for a newer record and applies it to
    /// the DB under `fs`; `notifier` (the mount's) tells the kernel what changed.
    pub fn spawn(
        follower: Arc<Follower>,
        fs: Fs,
        notifier: Option<fuser::Notifier>,
        every: Duration,
    ) -> FollowTrigger {
        let (tx, rx) = mpsc::channel(4);
        let state = FollowState {
            seq: follower.local_seq().unwrap_or(0),
            every,
            ..FollowState::default()
        };
        let actor = FollowActor {
            rx,
            follower,
            fs,
            notifier,
            state,
        };
        let task = tokio::spawn(actor.run(every));
        FollowTrigger {
            tx,
            _task: Arc::new(AbortOnDropHandle::new(task)),
        }
    }

    /// What the follower knows now.
    pub async fn status(&self) -> FollowState {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(FollowMessage::Status { reply }).await.is_err() {
            return FollowState::default();
        }
        rx.await.unwrap_or_default()
    }
}

impl FollowActor {
    async fn run(mut self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The mount just loaded the newest namespace: the first look is one period later.
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Some(FollowMessage::Status { reply }) => {
                        let _ = reply.send(self.state.clone());
                    }
                    None => return,
                },
                _ = tick.tick() => self.follow().await,
            }
        }
    }

    async fn follow(&mut self) {
        match self.follower.poll().await {
            Ok(None) => self.state.error = None,
            Ok(Some(f)) => {
                self.state.seq = f.seq;
                self.state.writer_name = Some(f.writer_name.clone());
                self.state.error = None;
                self.forget(&f.changes).await;
                info!(
                    seq = f.seq,
                    writer = %f.writer_name,
                    changes = f.changes.len(),
                    "read-only mount: followed a newer namespace"
                );
            }
            Err(e) => {
                let e = e.to_string();
                if self.state.error.as_ref() != Some(&e) {
                    warn!(error = %e, "read-only mount: following the namespace failed; retrying");
                }
                self.state.error = Some(e);
            }
        }
    }

    /// Drops cached bytes of replaced contents and tells the kernel every changed key.
    async fn forget(&self, changes: &[Changed]) {
        for c in changes {
            if let Changed::Inode {
                ino, content: true, ..
            } = c
            {
                self.fs.content_replaced(InodeNo(*ino));
            }
        }
        let Some(notifier) = self.notifier.clone() else {
            return;
        };
        let changes = changes.to_vec();
        // Writes to /dev/fuse; the kernel may wait on a directory lock a request holds, so off
        // the async threads (the session threads keep serving meanwhile).
        let told = tokio::task::spawn_blocking(move || {
            let mut failed = 0usize;
            for c in &changes {
                let r = match c {
                    Changed::Dirent { parent, name } => notifier
                        .inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::from_bytes(name)),
                    Changed::Inode { ino, .. } | Changed::Xattr { ino } => {
                        notifier.inval_inode(fuser::INodeNo(*ino), 0, 0)
                    }
                };
                if let Err(e) = r {
                    failed += 1;
                    debug!(change = ?c, error = %e, "kernel cache invalidation failed");
                }
            }
            failed
        })
        .await;
        match told {
            Ok(0) => {}
            Ok(n) => debug!(
                failed = n,
                "some kernel cache entries expire by their TTL instead"
            ),
            Err(e) => warn!(error = %e, "the kernel cache invalidation task failed"),
        }
    }
}
