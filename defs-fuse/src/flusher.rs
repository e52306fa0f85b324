//! The flusher: decides when a dirty file is uploaded, runs the upload through an
//! [`Uploader`] (the network's half, plugged in by the mount helper), and records the outcome
//! in the journal.
//!
//! ```text
//!  Fs (FUSE threads) ── Closed / Deleted (try_send) ──▶ FlusherActor (one tokio task)
//!  Fs::fsync (sync=network) ── UploadNow{reply} ─────▶   │ Schedule: ino → deadline, by deadline
//!  Flusher::shutdown_within ── Shutdown{grace,reply} ▶   │ every PERIODIC_SCAN: journal's dirty inodes
//!                                                        │ cache pressure (dirty > budget/2): no debounce
//!                                                        ▼
//!                      upload task (≤ MAX_CONCURRENT_UPLOADS): journal.begin_upload → gen,
//!                      Uploader::upload(job) → Content, journal.finish_upload(gen) (clean only
//!                      if gen unchanged) or journal.upload_failed(gen, reason) + retry later
//! ```
//!
//! Without an uploader (no network configured) nothing is uploaded and nothing pretends to be:
//! dirty files stay dirty in the journal, where `defs status` reports them.
//!
//! **Cache pressure.** Dirty bytes cannot be evicted. When more than half of the cache's budget
//! is dirty ([`Flusher`] checks at every close and every scan), closed files start uploading at
//! once instead of after [`DEBOUNCE`]; files waiting for a retry keep their backoff.
//!
//! **Foreground first.** While closes of changed files keep coming (less than [`QUIET`]
//! apart), uploads wait for a quiet moment, so a tree copy is not slowed by the uploads of the
//! files it already wrote; a file waits so at most [`BUSY_DEFER`] past its deadline, then
//! uploads [`BUSY_UPLOADS`] at a time. Once the mount is quiet, up to
//! [`MAX_CONCURRENT_UPLOADS`] run. An upload someone waits for (`defs sync`, fsync with
//! `sync=network`) and cache pressure lift both limits, and a file waited for starts before
//! the files that are merely due.
//!
//! **Waking.** The actor sleeps until the earliest deadline only while an upload slot is free;
//! with [`MAX_CONCURRENT_UPLOADS`] running it waits for one to finish instead (a due file that
//! cannot start yet must not wake it: that was a busy loop that took a core away from the FUSE
//! threads while a tree of small files was uploading). Finding the next deadline and the due
//! files costs O(log n) in the number of scheduled files, not a pass over all of them.
//!
//! **Shutdown.** [`Flusher::shutdown_within`] starts nothing new, gives the uploads already
//! running a grace period, then cancels the rest; every file not uploaded stays dirty in the
//! journal and resumes at the next mount.
//!
//! Races with writes are the journal's business: every write calls `save_written` after its
//! bytes reach the cache file, an upload calls `begin_upload` before reading them, and
//! `finish_upload` marks the file clean only if no write came in between (generations). The
//! cache entry is marked clean only if no change reached it since `begin_upload`
//! (`CacheStore::changes`): a write racing the upload's end keeps its bytes pinned.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use defs_core::cache_store::{CacheStore, ContentTag};
use defs_core::meta::MetaDb;
use defs_core::namespace::Content;
use defs_core::sync::Arc;
use defs_core::types::{Generation, InodeNo};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

/// How long after the last close a file waits before it is uploaded. One second: rsync's
/// write-temp-then-rename and editors' save dances finish well within it, so they upload once.
pub const DEBOUNCE: Duration = Duration::from_secs(1);

/// How often the journal is scanned for dirty files nobody scheduled (a full inbox, a crash,
/// a failed upload's retry). One minute: cheap (one DB read) and bounds how long a file stays
/// dirty after a missed notification.
pub const PERIODIC_SCAN: Duration = Duration::from_secs(60);

/// Uploads running at once. Four keep a few peers busy without letting one big file's upload
/// starve the rest; each upload streams segment by segment, so memory stays bounded.
pub const MAX_CONCURRENT_UPLOADS: usize = 4;

/// Uploads running at once while files are still being written (see [`QUIET`]), once a file
/// has waited [`BUSY_DEFER`]. One: an upload of a small file costs the machine far more than
/// writing it did (signed stores of three copies and five manifest copies, each made durable
/// by its node: about a core's worth on a 2-core machine even one at a time), so uploads of a
/// copied tree slowed the copy that followed it (`rsync -a` after `cp -a` at 0.3–0.4× bindfs,
/// against 1.2–1.6× with nothing uploading). One keeps files moving during a long burst.
pub const BUSY_UPLOADS: usize = 1;

/// How long past its deadline an upload waits for the mount to turn quiet. Thirty seconds
/// cover a burst like copying ten thousand small files and the rsync after it; uploading such
/// a tree takes longer than that anyway (it is bound by the machine, not by when it starts),
/// so waiting moves the uploads behind the burst instead of delaying the tree's last file.
pub const BUSY_DEFER: Duration = Duration::from_secs(30);

/// The mount counts as busy until this long after the last close of a changed file. Half a
/// second: a tree copy closes a file every few milliseconds, an editor's save is one close.
pub const QUIET: Duration = Duration::from_millis(500);

/// Inbox size. Notifications beyond it are dropped with a warning; the journal still knows
/// the file is dirty and [`PERIODIC_SCAN`] picks it up.
pub const INBOX: usize = 4096;

/// The first retry delay after a failed upload; it doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(5);

/// The longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Cache pressure starts when dirty bytes exceed this fraction (1/n) of the cache budget. Half:
/// past it the clean data that can still be evicted no longer covers another burst of writes
/// as large as the one pending, and an upload takes time to relieve the cache.
pub const PRESSURE_DIVISOR: u64 = 2;

/// One upload: the bytes of `ino`'s cache file as of `generation`.
#[derive(Debug)]
pub struct UploadJob {
    /// The inode.
    pub ino: InodeNo,
    /// The journal generation this upload covers.
    pub generation: Generation,
    /// The file's size when the upload started.
    pub size: u64,
    /// Where the bytes are: read `ino`'s range `0..size` (all of it is cached while dirty).
    pub cache: Arc<CacheStore>,
    /// Cancelled when the file is deleted (or the mount shuts down): stop and return
    /// [`UploadError::Cancelled`].
    pub cancel: CancellationToken,
}

/// Why an upload did not produce a new content record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The job's cancel token fired.
    #[error("upload cancelled")]
    Cancelled,
    /// The upload failed; the file stays dirty and is retried.
    #[error("upload failed: {reason}")]
    Failed {
        /// What went wrong, for `defs status` and the logs.
        reason: String,
    },
    /// Every storage node tried refused a shard because the owner's quota there is full; the
    /// file stays dirty (in the local cache) and is retried.
    #[error("upload refused, quota exceeded: {reason}")]
    QuotaExceeded {
        /// The network's refusal, for `defs status` and the logs.
        reason: String,
    },
}

impl UploadError {
    /// The upload error for a failed put: [`UploadError::QuotaExceeded`] when the network
    /// refused it for the owner's quota, else [`UploadError::Failed`].
    pub fn from_core(e: &defs_core::Error) -> UploadError {
        let reason = e.to_string();
        match e {
            defs_core::Error::QuotaRefused { .. } => UploadError::QuotaExceeded { reason },
            _ => UploadError::Failed { reason },
        }
    }
}

/// The network's half of the write-back cache: turns a dirty file's cached bytes into stored
/// content. defs-net implements it (through defs-core's shard-store trait); the mount helper
/// plugs it in.
pub trait Uploader: Send + Sync + fmt::Debug + 'static {
    /// Uploads the job's bytes and returns the content record that now describes the file.
    /// Must not return before every shard is acknowledged as persisted.
    fn upload(&self, job: UploadJob) -> BoxFuture<'static, Result<Content, UploadError>>;

    /// The largest file this uploader packs with others; 0 (the default): it packs nothing.
    fn pack_max(&self) -> u64 {
        0
    }

    /// Uploads several files of at most [`Uploader::pack_max`] bytes together (one packed
    /// object) and returns one result per job, in the jobs' order. Like `upload`, must not
    /// return a content record before every shard holding it is acknowledged as persisted.
    /// The default uploads them one by one.
    fn upload_pack(
        &self,
        jobs: Vec<UploadJob>,
    ) -> BoxFuture<'static, Vec<Result<Content, UploadError>>> {
        let uploads: Vec<_> = jobs.into_iter().map(|job| self.upload(job)).collect();
        Box::pin(futures::future::join_all(uploads))
    }
}

/// Most bytes in one pack: 4 MiB, about twenty Reed-Solomon segments of the pack layout
/// (`defs_core::pipeline::PACK_SHARD_SIZE` shards), so a pack's stores keep the peers busy
/// in parallel while at most [`MAX_CONCURRENT_UPLOADS`] packs are held in memory at once.
pub const PACK_TARGET_BYTES: u64 = 4 << 20;

/// Most files in one pack. A pack's files are committed one journal record each once the pack
/// is stored, and the pack's manifest lists them (16 bytes each).
pub const PACK_MAX_FILES: usize = 4096;

/// Errors of [`Flusher::upload_now`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// No uploader is configured: the file stays dirty in the local journal.
    #[error("no network is configured: inode {ino} stays in the local cache (dirty)")]
    NoUploader {
        /// The inode.
        ino: InodeNo,
    },
    /// The upload failed (it is retried in the background).
    #[error("uploading inode {ino} failed: {reason}")]
    Failed {
        /// The inode.
        ino: InodeNo,
        /// Why.
        reason: String,
    },
    /// The network refused the upload for the owner's quota (EDQUOT); the file stays dirty in
    /// the local cache and is retried in the background.
    #[error("inode {ino} cannot be stored on the network: {reason}")]
    QuotaExceeded {
        /// The inode.
        ino: InodeNo,
        /// The network's refusal.
        reason: String,
    },
    /// The file was deleted while it was being uploaded.
    #[error("inode {ino} was deleted")]
    Deleted {
        /// The inode.
        ino: InodeNo,
    },
    /// The flusher has shut down.
    #[error("the flusher has shut down")]
    Closed,
}

enum FlusherMessage {
    Closed(InodeNo),
    Deleted(InodeNo),
    UploadNow {
        ino: InodeNo,
        reply: oneshot::Sender<Result<(), FlushError>>,
    },
    /// Was the last upload of `ino` refused for quota (and has none succeeded since)?
    QuotaRefused {
        ino: InodeNo,
        reply: oneshot::Sender<Option<String>>,
    },
    Shutdown {
        grace: Duration,
        reply: oneshot::Sender<()>,
    },
}

/// The handle to the flusher task. Cheap to clone; dropping the last clone stops the task.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<FlusherMessage>,
    has_uploader: bool,
    wakeups: Arc<AtomicU64>,
    _task: Arc<AbortOnDropHandle<()>>,
}

impl fmt::Debug for Flusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

impl Flusher {
    /// Starts the flusher task on the current tokio runtime.
    pub fn spawn(
        db: Arc<MetaDb>,
        cache: Arc<CacheStore>,
        uploader: Option<Arc<dyn Uploader>>,
    ) -> Flusher {
        let (tx, rx) = mpsc::channel(INBOX);
        let has_uploader = uploader.is_some();
        let wakeups = Arc::new(AtomicU64::new(0));
        let pack_max = uploader.as_ref().map_or(0, |u| u.pack_max());
        let actor = FlusherActor {
            pack_max,
            wakeups: wakeups.clone(),
            db,
            cache,
            uploader,
            rx,
            due: Schedule::default(),
            retries: HashMap::new(),
            quota_refused: HashMap::new(),
            running: HashMap::new(),
            waiters: HashMap::new(),
            tasks: JoinSet::new(),
            last_close: None,
        };
        let task = AbortOnDropHandle::new(tokio::spawn(actor.run()));
        Flusher {
            tx,
            has_uploader,
            wakeups,
            _task: Arc::new(task),
        }
    }

    /// Whether an uploader is configured (without one, dirty files stay dirty).
    pub fn has_uploader(&self) -> bool {
        self.has_uploader
    }

    /// How many times the flusher's task has woken up (a message, a finished upload, a
    /// deadline, a scan): a diagnostic, and how a test checks that it never spins.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    fn send(&self, msg: FlusherMessage) {
        if let Err(e) = self.tx.try_send(msg) {
            // Nothing is lost: the journal knows the file is dirty, the periodic scan finds it.
            warn!(error = %e, "flusher inbox full or closed; the periodic scan will catch up");
        }
    }

    /// The last handle of a changed file closed: upload it after [`DEBOUNCE`].
    pub fn closed(&self, ino: InodeNo) {
        self.send(FlusherMessage::Closed(ino));
    }

    /// The file was deleted: forget its schedule and cancel its upload.
    pub fn deleted(&self, ino: InodeNo) {
        self.send(FlusherMessage::Deleted(ino));
    }

    /// Uploads `ino` now (fsync with `-o sync=network`) and waits for the outcome.
    ///
    /// # Errors
    /// [`FlushError`]: no uploader, the upload failed, the file was deleted, or the flusher
    /// is gone.
    ///
    /// # Cancel safety
    /// Safe: the upload goes on; only the wait is dropped.
    pub async fn upload_now(&self, ino: InodeNo) -> Result<(), FlushError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(FlusherMessage::UploadNow { ino, reply })
            .await
            .map_err(|_| FlushError::Closed)?;
        rx.await.map_err(|_| FlushError::Closed)?
    }

    /// The network's refusal when the last upload of `ino` was refused for the owner's quota
    /// and none has succeeded since (what fsync reports as EDQUOT); `None` otherwise or when
    /// the flusher is gone.
    ///
    /// # Cancel safety
    /// Safe (a question, no change).
    pub async fn quota_refused(&self, ino: InodeNo) -> Option<String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(FlusherMessage::QuotaRefused { ino, reply })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Stops the task at once: running uploads are cancelled (their files stay dirty in the
    /// journal and resume at the next mount).
    ///
    /// # Cancel safety
    /// Safe.
    pub async fn shutdown(&self) {
        self.shutdown_within(Duration::ZERO).await;
    }

    /// Stops the task: nothing new starts, the uploads already running get up to `grace` to
    /// finish, then the rest are cancelled. Files not uploaded stay dirty in the journal and
    /// resume at the next mount.
    ///
    /// # Cancel safety
    /// Safe: once sent, the shutdown goes on without the caller.
    pub async fn shutdown_within(&self, grace: Duration) {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(FlusherMessage::Shutdown { grace, reply })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

struct FlusherActor {
    db: Arc<MetaDb>,
    cache: Arc<CacheStore>,
    uploader: Option<Arc<dyn Uploader>>,
    rx: mpsc::Receiver<FlusherMessage>,
    /// Scheduled uploads.
    due: Schedule,
    /// Consecutive failures per inode, for the retry backoff.
    retries: HashMap<InodeNo, u32>,
    /// Files whose last upload the network refused for quota, with its refusal (cleared when
    /// an upload succeeds or the file goes).
    quota_refused: HashMap<InodeNo, String>,
    /// Running uploads and their cancel tokens.
    running: HashMap<InodeNo, CancellationToken>,
    /// fsync callers waiting for an inode's next upload to finish.
    waiters: HashMap<InodeNo, Vec<oneshot::Sender<Result<(), FlushError>>>>,
    tasks: JoinSet<Vec<(InodeNo, Outcome)>>,
    wakeups: Arc<AtomicU64>,
    /// Files up to this size are packed together (0: none; see [`Uploader::pack_max`]).
    pack_max: u64,
    /// When the last close of a changed file arrived (see [`QUIET`]).
    last_close: Option<Instant>,
}

enum Outcome {
    Clean,
    /// The inode was already clean (uploaded meanwhile): nothing to do.
    AlreadyClean,
    ChangedMeanwhile,
    Failed {
        reason: String,
        /// Refused for the owner's quota on the network.
        quota: bool,
    },
    Cancelled,
}

impl Outcome {
    fn failed(reason: String) -> Outcome {
        Outcome::Failed {
            reason,
            quota: false,
        }
    }
}

impl FlusherActor {
    async fn run(mut self) {
        // The first scan one period from now: at start the mount hands over the journal's dirty
        // files itself.
        let mut scan = tokio::time::interval_at(Instant::now() + PERIODIC_SCAN, PERIODIC_SCAN);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            // With every open slot taken a due file cannot start: wait for an upload to finish
            // (or for the mount to turn quiet), not for a deadline that has passed (which would
            // fire again at once).
            let plan = self.plan(Instant::now());
            let next = if self.tasks.len() < plan.slots {
                // The first file's (deferred) deadline, or the quiet moment if that is sooner.
                let first = self.due.first().map(|at| at + plan.defer);
                first.map(|f| plan.quiet_at.map_or(f, |q| f.min(q)))
            } else if self.tasks.len() < MAX_CONCURRENT_UPLOADS && !self.due.is_empty() {
                plan.quiet_at
            } else {
                None
            };
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Some(FlusherMessage::Shutdown { grace, reply }) => {
                        self.stop(grace).await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(msg) => self.handle(msg),
                    None => {
                        self.stop(Duration::ZERO).await;
                        return;
                    }
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok(outcomes) => {
                            for (ino, outcome) in outcomes {
                                self.finished(ino, outcome);
                            }
                        }
                        Err(e) => warn!(error = %e, "an upload task panicked"),
                    }
                }
                () = sleep_until(next), if next.is_some() => self.start_due(),
                _ = scan.tick() => self.scan(),
            }
        }
    }

    fn handle(&mut self, msg: FlusherMessage) {
        match msg {
            FlusherMessage::Closed(ino) => {
                self.last_close = Some(Instant::now());
                if self.under_pressure() {
                    self.schedule(ino, Instant::now());
                    self.pull_in_waiting();
                } else {
                    self.schedule(ino, Instant::now() + DEBOUNCE);
                }
            }
            FlusherMessage::Deleted(ino) => {
                self.due.remove(ino);
                self.retries.remove(&ino);
                self.quota_refused.remove(&ino);
                if let Some(cancel) = self.running.get(&ino) {
                    cancel.cancel();
                }
                for w in self.waiters.remove(&ino).unwrap_or_default() {
                    let _ = w.send(Err(FlushError::Deleted { ino }));
                }
            }
            FlusherMessage::UploadNow { ino, reply } => {
                if self.uploader.is_none() {
                    let _ = reply.send(Err(FlushError::NoUploader { ino }));
                    return;
                }
                self.waiters.entry(ino).or_default().push(reply);
                self.schedule(ino, Instant::now());
            }
            FlusherMessage::QuotaRefused { ino, reply } => {
                let _ = reply.send(self.quota_refused.get(&ino).cloned());
            }
            FlusherMessage::Shutdown { .. } => {}
        }
    }

    fn schedule(&mut self, ino: InodeNo, at: Instant) {
        if self.uploader.is_none() {
            debug!(%ino, "no uploader: the file stays dirty in the local journal");
            return;
        }
        // A close pushes the deadline out (debounce); an fsync pulls it in.
        self.due.insert(ino, at);
    }

    /// Whether dirty bytes crowd the cache: see [`PRESSURE_DIVISOR`].
    fn under_pressure(&self) -> bool {
        let u = self.cache.usage();
        u.dirty_bytes > u.budget_bytes / PRESSURE_DIVISOR
    }

    /// Under pressure: every debounced file starts now; files waiting to retry keep their
    /// backoff (uploading them again at once would fail the same way).
    fn pull_in_waiting(&mut self) {
        let retries = &self.retries;
        self.due
            .pull_in(Instant::now(), |ino| !retries.contains_key(&ino));
    }

    fn scan(&mut self) {
        if self.uploader.is_none() {
            return;
        }
        let pressure = self.under_pressure();
        if pressure {
            self.pull_in_waiting();
        }
        match self.db.dirty_inodes() {
            Ok(dirty) => {
                let at = if pressure {
                    Instant::now()
                } else {
                    Instant::now() + DEBOUNCE
                };
                for ino in dirty.into_iter().map(|r| r.ino) {
                    if !self.running.contains_key(&ino) && !self.due.contains(ino) {
                        self.due.insert(ino, at);
                    }
                }
            }
            Err(e) => warn!(error = %e, "listing dirty files failed"),
        }
    }

    /// What may start now (see [`QUIET`], [`BUSY_UPLOADS`], [`BUSY_DEFER`]).
    fn plan(&self, now: Instant) -> Plan {
        let quiet_at = self.last_close.map(|t| t + QUIET).filter(|q| *q > now);
        match quiet_at {
            Some(q) if self.waiters.is_empty() && !self.under_pressure() => Plan {
                slots: BUSY_UPLOADS,
                defer: BUSY_DEFER,
                quiet_at: Some(q),
            },
            _ => Plan {
                slots: MAX_CONCURRENT_UPLOADS,
                defer: Duration::ZERO,
                quiet_at: None,
            },
        }
    }

    /// Starts due files while upload slots are open: first those someone waits for, then the
    /// rest, earliest deadline first. Files up to `pack_max` bytes started in one pass share
    /// packs (one upload slot per pack); a pack takes only files due now, so packing never
    /// holds a file back: a partial pack uploads as it is.
    fn start_due(&mut self) {
        let now = Instant::now();
        let plan = self.plan(now);
        let mut pack = Pack::default();
        // A sync or an fsync must not queue behind a copied tree's backlog (a file waited for is
        // scheduled now, after every file closed before it).
        let waited: Vec<InodeNo> = self
            .waiters
            .keys()
            .filter(|ino| self.due.contains(**ino) && !self.running.contains_key(*ino))
            .copied()
            .collect();
        for ino in waited {
            if !self.admit(ino, &mut pack, MAX_CONCURRENT_UPLOADS) {
                break;
            }
            self.due.remove(ino);
        }
        let mut behind = Vec::new();
        // While busy only files past their deadline by the deferral may start.
        while let Some(ino) = self.due.peek_due(now, plan.defer) {
            if self.running.contains_key(&ino) {
                // Closed again while its upload runs: the next upload moves behind it.
                self.due.remove(ino);
                behind.push(ino);
            } else if self.admit(ino, &mut pack, plan.slots) {
                self.due.remove(ino);
            } else {
                break;
            }
        }
        self.start_pack(pack);
        for ino in behind {
            self.due.insert(ino, now + DEBOUNCE);
        }
    }

    /// Takes `ino` into `pack` or starts its upload alone, if a slot is open for it (`pack`,
    /// once it holds a file, counts as one). Returns whether it was taken.
    fn admit(&mut self, ino: InodeNo, pack: &mut Pack, slots: usize) -> bool {
        let open = usize::from(!pack.inos.is_empty());
        let size = if self.pack_max == 0 {
            None
        } else {
            // A size that cannot be read uploads alone (where the error is reported).
            self.db
                .getattr(ino)
                .ok()
                .map(|a| a.size)
                .filter(|s| *s > 0 && *s <= self.pack_max)
        };
        let Some(size) = size else {
            if self.tasks.len() + open >= slots {
                return false;
            }
            self.start(ino);
            return true;
        };
        if !pack.fits(size) {
            if self.tasks.len() + open >= slots {
                return false;
            }
            self.start_pack(std::mem::take(pack));
        } else if open == 0 && self.tasks.len() >= slots {
            return false;
        }
        pack.inos.push(ino);
        pack.bytes += size;
        true
    }

    fn start(&mut self, ino: InodeNo) {
        let Some(uploader) = self.uploader.clone() else {
            return;
        };
        let cancel = CancellationToken::new();
        self.running.insert(ino, cancel.clone());
        let db = self.db.clone();
        let cache = self.cache.clone();
        self.tasks.spawn(async move {
            let outcome = upload_one(&db, cache, uploader.as_ref(), ino, cancel).await;
            vec![(ino, outcome)]
        });
    }

    /// Starts the upload of the files gathered in `pack` (alone when there is one).
    fn start_pack(&mut self, pack: Pack) {
        let mut inos = pack.inos;
        if inos.len() <= 1 {
            if let Some(ino) = inos.pop() {
                self.start(ino);
            }
            return;
        }
        let Some(uploader) = self.uploader.clone() else {
            return;
        };
        let members: Vec<(InodeNo, CancellationToken)> = inos
            .into_iter()
            .map(|ino| {
                let cancel = CancellationToken::new();
                self.running.insert(ino, cancel.clone());
                (ino, cancel)
            })
            .collect();
        let db = self.db.clone();
        let cache = self.cache.clone();
        debug!(files = members.len(), bytes = pack.bytes, "packing");
        let pack_max = self.pack_max;
        self.tasks.spawn(async move {
            upload_packed(&db, cache, uploader.as_ref(), members, pack_max).await
        });
    }

    fn finished(&mut self, ino: InodeNo, outcome: Outcome) {
        self.running.remove(&ino);
        let result = match outcome {
            Outcome::Clean => {
                self.retries.remove(&ino);
                self.quota_refused.remove(&ino);
                info!(%ino, "uploaded");
                Ok(())
            }
            Outcome::AlreadyClean => {
                self.retries.remove(&ino);
                self.quota_refused.remove(&ino);
                Ok(())
            }
            Outcome::ChangedMeanwhile => {
                // Still dirty: upload the newer bytes too.
                self.schedule(ino, Instant::now() + DEBOUNCE);
                return;
            }
            Outcome::Failed { reason, quota } => {
                let n = self.retries.entry(ino).or_insert(0);
                *n = n.saturating_add(1);
                let delay = RETRY_MIN
                    .saturating_mul(1 << (*n - 1).min(10))
                    .min(RETRY_MAX);
                self.schedule(ino, Instant::now() + delay);
                if quota {
                    warn!(%ino, %reason, retry_in = ?delay, "upload refused: this identity's quota is full on the storage nodes; the file stays dirty in the local cache, nothing is lost, and fsync answers EDQUOT until it is stored (free space by deleting files, or ask the node operators for a larger quota)");
                    self.quota_refused.insert(ino, reason.clone());
                    Err(FlushError::QuotaExceeded { ino, reason })
                } else {
                    warn!(%ino, %reason, retry_in = ?delay, "upload failed; the file stays dirty");
                    self.quota_refused.remove(&ino);
                    Err(FlushError::Failed { ino, reason })
                }
            }
            Outcome::Cancelled => Err(FlushError::Deleted { ino }),
        };
        for w in self.waiters.remove(&ino).unwrap_or_default() {
            let _ = w.send(match &result {
                Ok(()) => Ok(()),
                Err(FlushError::Failed { ino, reason }) => Err(FlushError::Failed {
                    ino: *ino,
                    reason: reason.clone(),
                }),
                Err(FlushError::QuotaExceeded { ino, reason }) => Err(FlushError::QuotaExceeded {
                    ino: *ino,
                    reason: reason.clone(),
                }),
                Err(_) => Err(FlushError::Deleted { ino }),
            });
        }
    }

    async fn stop(&mut self, grace: Duration) {
        self.due.clear();
        if !self.running.is_empty() && !grace.is_zero() {
            info!(
                uploads = self.running.len(),
                ?grace,
                "waiting for running uploads before unmount"
            );
            let deadline = Instant::now() + grace;
            while !self.tasks.is_empty() {
                match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                    Ok(Some(Ok(outcomes))) => {
                        for (ino, outcome) in outcomes {
                            self.finished(ino, outcome);
                        }
                    }
                    Ok(Some(Err(e))) => warn!(error = %e, "an upload task panicked"),
                    Ok(None) | Err(_) => break,
                }
            }
            self.due.clear();
        }
        if !self.running.is_empty() {
            info!(
                uploads = self.running.len(),
                "cancelling unfinished uploads; their files stay dirty and resume at the next mount"
            );
        }
        for cancel in self.running.values() {
            cancel.cancel();
        }
        while self.tasks.join_next().await.is_some() {}
        for (_, ws) in self.waiters.drain() {
            for w in ws {
                let _ = w.send(Err(FlushError::Closed));
            }
        }
    }
}

/// Files gathered into one pack while starting due files.
#[derive(Debug, Default)]
struct Pack {
    inos: Vec<InodeNo>,
    bytes: u64,
}

impl Pack {
    /// Whether a file of `size` bytes may join (a first file always may).
    fn fits(&self, size: u64) -> bool {
        self.inos.is_empty()
            || (self.inos.len() < PACK_MAX_FILES && self.bytes + size <= PACK_TARGET_BYTES)
    }
}

/// What the flusher may start at a moment: how many uploads may run, how long past its
/// deadline a file must be, and when the mount turns quiet (lifting both).
#[derive(Debug, Clone, Copy)]
struct Plan {
    slots: usize,
    defer: Duration,
    quiet_at: Option<Instant>,
}

/// Scheduled uploads, by inode and by deadline, so that the next deadline and the due files are
/// found in O(log n) however many files wait (a tree copy schedules one per file).
#[derive(Debug, Default)]
struct Schedule {
    at: HashMap<InodeNo, Instant>,
    order: BTreeSet<(Instant, InodeNo)>,
}

impl Schedule {
    /// Schedules `ino` at `at`, replacing its earlier deadline.
    fn insert(&mut self, ino: InodeNo, at: Instant) {
        if let Some(old) = self.at.insert(ino, at) {
            self.order.remove(&(old, ino));
        }
        self.order.insert((at, ino));
    }

    fn remove(&mut self, ino: InodeNo) {
        if let Some(old) = self.at.remove(&ino) {
            self.order.remove(&(old, ino));
        }
    }

    fn contains(&self, ino: InodeNo) -> bool {
        self.at.contains_key(&ino)
    }

    fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The earliest deadline.
    fn first(&self) -> Option<Instant> {
        self.order.first().map(|(at, _)| *at)
    }

    /// The file with the earliest deadline, if `late` after that deadline is not after `now`.
    fn peek_due(&self, now: Instant, late: Duration) -> Option<InodeNo> {
        let (at, ino) = *self.order.first()?;
        (at + late <= now).then_some(ino)
    }

    /// Moves every deadline after `now` of a file `pull` accepts to `now`. Visits only the
    /// deadlines still ahead, so repeating it is cheap.
    fn pull_in(&mut self, now: Instant, pull: impl Fn(InodeNo) -> bool) {
        let ahead: Vec<InodeNo> = self
            .order
            .iter()
            .rev()
            .take_while(|(at, _)| *at > now)
            .map(|(_, ino)| *ino)
            .filter(|ino| pull(*ino))
            .collect();
        for ino in ahead {
            self.insert(ino, now);
        }
    }

    fn clear(&mut self) {
        self.at.clear();
        self.order.clear();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// An upload under way: what `begin_upload` returned and what it needs at the end.
struct Begun {
    generation: Generation,
    changes: u64,
    size: u64,
}

/// Starts the journal's side of uploading `ino`: its generation, its cache change counter and
/// size (in that order: a change after `begin_upload` moves the generation or pins the cache
/// entry). `Err` is the outcome when there is nothing to upload or it cannot start.
fn begin(db: &MetaDb, cache: &CacheStore, ino: InodeNo) -> Result<Begun, Outcome> {
    let generation = match db.begin_upload(ino) {
        Ok(g) => g,
        // Uploaded meanwhile (a scan or a sync asked for an inode that became clean).
        Err(defs_core::Error::InvalidArgument { .. }) => return Err(Outcome::AlreadyClean),
        // Purged meanwhile: nothing to upload, nothing to retry.
        Err(defs_core::Error::NotFound { .. }) => return Err(Outcome::Cancelled),
        Err(e) => return Err(Outcome::failed(format!("starting the upload: {e}"))),
    };
    let changes = cache.changes(ino);
    let size = match db.getattr(ino) {
        Ok(a) => a.size,
        Err(e) => return Err(Outcome::failed(format!("reading the size: {e}"))),
    };
    Ok(Begun {
        generation,
        changes,
        size,
    })
}

/// Records an upload's result in the journal (clean only if no write came since `begin`) and
/// the cache.
fn end(
    db: &MetaDb,
    cache: &CacheStore,
    ino: InodeNo,
    begun: &Begun,
    result: Result<Content, UploadError>,
) -> Outcome {
    match result {
        Ok(content) => match db.finish_upload(ino, begun.generation, content.clone()) {
            Ok(true) => {
                let tag = match content {
                    Content::Stored { file, .. } => ContentTag::from(file),
                    Content::Empty => ContentTag::NONE,
                };
                cache.mark_clean(ino, tag, begun.changes);
                Outcome::Clean
            }
            Ok(false) => Outcome::ChangedMeanwhile,
            Err(e) => Outcome::failed(format!("recording the upload: {e}")),
        },
        Err(UploadError::Cancelled) => Outcome::Cancelled,
        Err(e @ (UploadError::Failed { .. } | UploadError::QuotaExceeded { .. })) => {
            let quota = matches!(e, UploadError::QuotaExceeded { .. });
            let reason = match e {
                UploadError::Failed { reason } | UploadError::QuotaExceeded { reason } => reason,
                UploadError::Cancelled => String::new(),
            };
            if let Err(e) = db.upload_failed(ino, begun.generation, &reason) {
                warn!(%ino, error = %e, "recording the failed upload failed");
            }
            Outcome::Failed { reason, quota }
        }
    }
}

async fn upload_one(
    db: &MetaDb,
    cache: Arc<CacheStore>,
    uploader: &dyn Uploader,
    ino: InodeNo,
    cancel: CancellationToken,
) -> Outcome {
    let begun = match begin(db, &cache, ino) {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    let job = UploadJob {
        ino,
        generation: begun.generation,
        size: begun.size,
        cache: cache.clone(),
        cancel,
    };
    let result = uploader.upload(job).await;
    let stored = stored_file(&result);
    let outcome = end(db, &cache, ino, &begun, result);
    if !matches!(outcome, Outcome::Clean) {
        note_unnamed(db, stored);
    }
    outcome
}

/// The object an upload stored, if any.
fn stored_file(result: &Result<Content, UploadError>) -> Option<defs_core::types::FileId> {
    match result {
        Ok(Content::Stored { file, .. }) => Some(*file),
        _ => None,
    }
}

/// An object stored for inodes that did not all take it: the ledger learns that no version
/// needs it unless an inode names it (the garbage collector then deletes it).
fn note_unnamed(db: &MetaDb, file: Option<defs_core::types::FileId>) {
    if let Some(file) = file
        && let Err(e) = db.note_unnamed(&[file])
    {
        warn!(%file, error = %e, "recording an unused upload in the object ledger failed; its shards stay");
    }
}

/// Uploads `members` as one pack. Each file's journal record moves to clean only after the
/// whole pack is stored (a crash before that leaves every member dirty, to upload again), one
/// commit per file, each checking its own generation.
async fn upload_packed(
    db: &MetaDb,
    cache: Arc<CacheStore>,
    uploader: &dyn Uploader,
    members: Vec<(InodeNo, CancellationToken)>,
    pack_max: u64,
) -> Vec<(InodeNo, Outcome)> {
    let mut outcomes = Vec::with_capacity(members.len());
    let mut begun = Vec::with_capacity(members.len());
    let mut jobs = Vec::with_capacity(members.len());
    for (ino, cancel) in members {
        match begin(db, &cache, ino) {
            Ok(b) => {
                let job = UploadJob {
                    ino,
                    generation: b.generation,
                    size: b.size,
                    cache: cache.clone(),
                    cancel: cancel.clone(),
                };
                if b.size > pack_max {
                    // Grew past the pack limit since it was picked: alone, streamed (a pack
                    // holds its members in memory).
                    let result = uploader.upload(job).await;
                    outcomes.push((ino, end(db, &cache, ino, &b, result)));
                    continue;
                }
                jobs.push(job);
                begun.push((ino, b, cancel));
            }
            Err(outcome) => outcomes.push((ino, outcome)),
        }
    }
    if jobs.is_empty() {
        return outcomes;
    }
    let mut results = uploader.upload_pack(jobs).await.into_iter();
    let mut pack = None;
    let mut all_clean = true;
    for (ino, b, cancel) in begun {
        let result = results.next().unwrap_or_else(|| {
            Err(UploadError::Failed {
                reason: "the uploader returned no result for this file".into(),
            })
        });
        // Deleted while its pack uploaded: nothing to record (the pack's copy of its bytes is
        // a dead range).
        let result = if cancel.is_cancelled() {
            Err(UploadError::Cancelled)
        } else {
            result
        };
        pack = pack.or(stored_file(&result));
        let outcome = end(db, &cache, ino, &b, result);
        all_clean &= matches!(outcome, Outcome::Clean);
        outcomes.push((ino, outcome));
    }
    // Every member has its outcome: a pack no member took is needed by no version.
    if !all_clean {
        note_unnamed(db, pack);
    }
    outcomes
}
