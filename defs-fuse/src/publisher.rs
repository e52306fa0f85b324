//! The publish trigger of a writable mount: decides *when* the namespace is published; defs-core's
//! [`Publisher`] does the publishing (`docs/namespace-publishing.md` §3).
//!
//! ```text
//!  PublishTrigger (handle) ── Now{reply} / Status{reply} / Stop{reply} ──▶ TriggerActor (task)
//!                                                                          │ every TICK: MetaDb LSN
//!                                                                          │  moved → last change now
//!  Publisher::publish_now ◀── quiet for debounce, or dirty for max_staleness
//!  Publisher::renew       ◀── no new record for a third of the lease (a record, no object)
//! ```
//!
//! The actor watches the metadata DB's log sequence number instead of being pinged by the FUSE
//! threads: every namespace change and every finished upload moves it, and reading it costs a
//! lock, so FUSE never waits on this task. One publish at a time (the publisher serialises);
//! `defs sync` asks for one now ([`PublishTrigger::publish_now`]) and waits for its outcome. A
//! failed publish is retried after the debounce; a `RootRollback` (a newer record of this
//! identity exists: another writer) stops publishing for good, which [`PublishState`] says.
//! With no other node reachable nothing is attempted (a publish would store a snapshot on this
//! machine only, and no record could be kept): the state says so and the changes wait.

use std::time::Duration;

use defs_core::Error as CoreError;
use defs_core::meta::MetaDb;
use defs_core::publish::{Published, Publisher};
use defs_core::remote::ShardClient;
use defs_core::sync::Arc;
use defs_core::types::NodeId;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

/// How often the actor looks at the DB's LSN: 1 s, far below any debounce a user sets.
pub const TICK: Duration = Duration::from_secs(1);

/// Requests queued to the actor.
const QUEUE: usize = 16;

/// When to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Quiet time after the last change before a publish.
    pub debounce: Duration,
    /// The longest a change waits under a steady stream of changes.
    pub max_staleness: Duration,
    /// The lease the records carry; renewed every third of it.
    pub lease: Duration,
}

/// What the trigger knows, for `defs status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishState {
    /// The last publish that succeeded.
    pub last: Option<Published>,
    /// The seq committed (also when the last publish was in an earlier mount).
    pub published_seq: u64,
    /// Changes not published yet.
    pub pending: bool,
    /// The last failure, while it is not followed by a success.
    pub error: Option<String>,
    /// Publishing stopped: a newer record of this identity exists (another writer).
    pub lost: bool,
}

enum TriggerMessage {
    Now {
        reply: oneshot::Sender<Result<Published, String>>,
    },
    Status {
        reply: oneshot::Sender<PublishState>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// Handle to the publish trigger. Cheap to clone; the task stops when the last handle goes.
#[derive(Clone)]
pub struct PublishTrigger {
    tx: mpsc::Sender<TriggerMessage>,
    publisher: Arc<Publisher>,
    net: Arc<dyn ShardClient>,
    owner: NodeId,
    _task: Arc<AbortOnDropHandle<()>>,
}

impl std::fmt::Debug for PublishTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishTrigger").finish_non_exhaustive()
    }
}

struct TriggerActor {
    rx: mpsc::Receiver<TriggerMessage>,
    db: Arc<MetaDb>,
    publisher: Arc<Publisher>,
    net: Arc<dyn ShardClient>,
    owner: NodeId,
    timing: Timing,
    state: PublishState,
    last_lsn: u64,
    /// When the LSN last moved, and since when changes wait.
    last_change: Option<Instant>,
    dirty_since: Option<Instant>,
    /// When the last publish (or attempt) ended.
    last_attempt: Instant,
    /// When a record of a new seq was last committed (the mount's start counts: it claimed
    /// the lease then).
    last_record: Instant,
}

impl PublishTrigger {
    /// Starts the trigger for `publisher` of `owner`'s namespace, which lives in `db`; `net`
    /// tells whether any other node is reachable.
    pub fn spawn(
        db: Arc<MetaDb>,
        publisher: Arc<Publisher>,
        net: Arc<dyn ShardClient>,
        owner: NodeId,
        timing: Timing,
    ) -> PublishTrigger {
        let (tx, rx) = mpsc::channel(QUEUE);
        let last_lsn = db.lsn().unwrap_or(0);
        let actor = TriggerActor {
            rx,
            db,
            publisher: publisher.clone(),
            net: net.clone(),
            owner,
            timing,
            state: PublishState {
                published_seq: publisher.published_seq(),
                ..PublishState::default()
            },
            last_lsn,
            last_change: None,
            dirty_since: None,
            last_attempt: Instant::now(),
            last_record: Instant::now(),
        };
        let task = tokio::spawn(actor.run());
        PublishTrigger {
            tx,
            publisher,
            net,
            owner,
            _task: Arc::new(AbortOnDropHandle::new(task)),
        }
    }

    /// The publisher this trigger drives (for the garbage collector's checks).
    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// Publishes the namespace as it is now and returns the record's seq and copies.
    ///
    /// # Errors
    /// The publish's failure, as text; "stopped" when the trigger is gone.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the answer; the publish runs to its end.
    pub async fn publish_now(&self) -> Result<Published, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(TriggerMessage::Now { reply })
            .await
            .map_err(|_| "the publisher has stopped".to_string())?;
        rx.await
            .map_err(|_| "the publisher has stopped".to_string())?
    }

    /// What the trigger knows now.
    pub async fn status(&self) -> PublishState {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(TriggerMessage::Status { reply })
            .await
            .is_err()
        {
            return PublishState::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Stops triggering (publishes already running finish first), then publishes the final
    /// state with lease 0 so that another machine may take over at once.
    ///
    /// # Errors
    /// The release's failure (the namespace then stays at the last published seq; the lease
    /// runs out by itself).
    pub async fn release(&self) -> Result<Published, CoreError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(TriggerMessage::Stop { reply }).await.is_ok() {
            let _ = rx.await;
        }
        no_peers(self.net.as_ref(), self.owner).await?;
        self.publisher.release().await
    }
}

/// `Err` when no other node is reachable: nowhere to keep a record.
async fn no_peers(net: &dyn ShardClient, owner: NodeId) -> Result<(), CoreError> {
    let live = net.liveness().await?;
    if live.live.iter().any(|n| live.local.is_none_or(|l| l != *n)) {
        return Ok(());
    }
    Err(CoreError::RootUnreachable {
        owner,
        reason: "no other storage node is connected: the namespace stays on this machine until \
                 one is"
            .into(),
    })
}

impl TriggerActor {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Some(TriggerMessage::Now { reply }) => {
                        let r = self.publish("sync").await;
                        let _ = reply.send(r);
                    }
                    Some(TriggerMessage::Status { reply }) => {
                        self.state.pending = self.publisher.changed().unwrap_or(false);
                        self.state.published_seq = self.publisher.published_seq();
                        let _ = reply.send(self.state.clone());
                    }
                    Some(TriggerMessage::Stop { reply }) => {
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    async fn on_tick(&mut self) {
        if self.state.lost {
            return;
        }
        let now = Instant::now();
        if let Ok(lsn) = self.db.lsn()
            && lsn != self.last_lsn
        {
            self.last_lsn = lsn;
            self.last_change = Some(now);
            self.dirty_since.get_or_insert(now);
        }
        let waited = |t: Option<Instant>, d: Duration| t.is_some_and(|t| now >= t + d);
        let changed = self.publisher.changed().unwrap_or(false);
        let due_change = changed
            && now >= self.last_attempt + self.timing.debounce
            && (waited(self.last_change, self.timing.debounce)
                || waited(self.dirty_since, self.timing.max_staleness)
                || self.last_change.is_none());
        // A failed renewal is retried after the debounce, not at every tick.
        let due_renewal = now >= self.last_record + self.timing.lease / 3
            && now >= self.last_attempt + self.timing.debounce.min(self.timing.lease / 3);
        if due_change {
            let _ = self.publish("changes").await;
        } else if due_renewal {
            let _ = self.publish("lease renewal").await;
        }
    }

    async fn publish(&mut self, why: &'static str) -> Result<Published, String> {
        let started = Instant::now();
        let renewal = why == "lease renewal";
        let r = match no_peers(self.net.as_ref(), self.owner).await {
            // The state `defs sync` publishes is kept as a version (`/.snapshots`).
            Ok(()) if why == "sync" => self.publisher.publish_sync().await,
            Ok(()) if renewal => self.publisher.renew().await,
            Ok(()) => self.publisher.publish_now().await,
            Err(e) => Err(e),
        };
        self.last_attempt = Instant::now();
        match r {
            Ok(p) => {
                if p.seq != self.state.published_seq {
                    self.last_record = self.last_attempt;
                }
                info!(
                    why,
                    seq = p.seq,
                    copies = p.copies,
                    uploaded = p.uploaded,
                    took_ms = started.elapsed().as_millis() as u64,
                    "namespace published"
                );
                // Changes after the cut stay pending: the LSN check on the next tick sees them.
                if !self.publisher.changed().unwrap_or(true) {
                    self.dirty_since = None;
                    self.last_change = None;
                }
                self.state.published_seq = p.seq;
                self.state.last = Some(p.clone());
                self.state.error = None;
                Ok(p)
            }
            Err(e) => {
                let lost = matches!(e, CoreError::RootRollback { .. });
                if lost {
                    warn!(error = %e, "lease lost: a newer namespace record of this identity exists (another machine took over); publishing stopped, local changes are not published");
                    self.state.lost = true;
                } else {
                    debug!(why, error = %e, "publish failed; retrying after the debounce");
                }
                self.state.error = Some(format!("{e}"));
                Err(format!("{e}"))
            }
        }
    }
}
