//! Test fixtures for the filesystem core, shared with other crates' tests (feature
//! `test-utils`): an [`Fs`] over a real metadata DB and cache store in a temp dir, and a
//! scriptable [`Uploader`].

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::PathBuf;

use defs_core::cache_store::{CacheConfig, CacheStore};
use defs_core::meta::MetaDb;
use defs_core::namespace::Content;
use defs_core::sync::{Arc, Mutex};
use defs_core::types::{FileId, Generation, InodeNo};
use futures::future::BoxFuture;
use tokio::sync::Notify;

use crate::flusher::{UploadError, UploadJob, Uploader};
use crate::fs::{Config, Fs, Owner};
use crate::upload::Remote;

/// An [`Fs`] over a temp data dir. Reopen it (same dir) to simulate a restart.
#[derive(Debug)]
pub struct TestFs {
    /// The core.
    pub fs: Fs,
    /// The DB under it (for checking the journal).
    pub db: Arc<MetaDb>,
    /// The cache store under it.
    pub cache: Arc<CacheStore>,
    dir: Arc<tempfile::TempDir>,
}

/// The cache budget of [`TestFs::new`]: large enough that no test meets cache pressure.
pub const DEFAULT_BUDGET: u64 = 1 << 30;

/// The owner tests create files as.
pub const OWNER: Owner = Owner {
    uid: 1000,
    gid: 1000,
};

impl TestFs {
    /// A fresh core with `config` and `uploader`. Call within a tokio runtime.
    ///
    /// # Panics
    /// When the stores cannot be opened.
    pub fn new(config: Config, uploader: Option<Arc<dyn Uploader>>) -> TestFs {
        Self::with_remote(config, Remote::uploader(uploader))
    }

    /// A fresh core with `config` over the network `remote`. Call within a tokio runtime.
    ///
    /// # Panics
    /// When the stores cannot be opened.
    pub fn with_remote(config: Config, remote: Remote) -> TestFs {
        Self::with_budget(config, remote, DEFAULT_BUDGET)
    }

    /// Like [`TestFs::with_remote`] with a cache budget of `budget` bytes (for cache-pressure
    /// tests).
    ///
    /// # Panics
    /// When the stores cannot be opened.
    pub fn with_budget(config: Config, remote: Remote, budget: u64) -> TestFs {
        let dir = Arc::new(tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")));
        Self::open(dir, config, remote, budget)
    }

    fn open(dir: Arc<tempfile::TempDir>, config: Config, remote: Remote, budget: u64) -> TestFs {
        let meta = dir.path().join("meta");
        let cache_dir = dir.path().join("cache");
        // A restart may race with the old core's last tasks letting go of the stores (the
        // flusher replies to its shutdown just before it drops them).
        let db = Arc::new(retry_open("db", || MetaDb::open_with(&meta, None)));
        let limits = CacheConfig {
            budget_bytes: budget,
            reserve_bytes: 0,
        };
        let cache = Arc::new(retry_open("cache", || CacheStore::open(&cache_dir, limits)));
        let fs = Fs::new(db.clone(), cache.clone(), &cache_dir, config, remote)
            .unwrap_or_else(|e| panic!("Fs::new: {e}"));
        TestFs { fs, db, cache, dir }
    }

    /// Shuts this core down and opens a new one over the same data dir (a clean restart).
    ///
    /// # Panics
    /// When the shutdown or the reopen fails.
    pub async fn restart(self, config: Config, uploader: Option<Arc<dyn Uploader>>) -> TestFs {
        self.fs
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
        let dir = self.dir.clone();
        drop(self);
        Self::open(dir, config, Remote::uploader(uploader), DEFAULT_BUDGET)
    }

    /// Shuts this core down and opens a new one over the same data dir with `remote`; with
    /// `wipe_cache`, `DIR/cache` is deleted first (identity and metadata kept), as a user
    /// throwing the cache away would.
    ///
    /// # Panics
    /// When the shutdown, the removal or the reopen fails.
    pub async fn reopen(self, config: Config, remote: Remote, wipe_cache: bool) -> TestFs {
        self.fs
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
        let dir = self.dir.clone();
        let old_cache = Arc::downgrade(&self.cache);
        drop(self);
        if wipe_cache {
            // The old store lives until the core's last tasks let go of it, and until then its
            // spare-file thread may still be adding files to the directory. The strong count
            // reaches 0 just before the store's drop stops that thread, so a file may still
            // appear while the removal runs: retry that (ENOTEMPTY) for a moment.
            for _ in 0..500 {
                if old_cache.strong_count() == 0 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let cache = dir.path().join("cache");
            for attempt in 0.. {
                match std::fs::remove_dir_all(&cache) {
                    Ok(()) => break,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempt < 100 =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(e) => panic!("removing the cache: {e}"),
                }
            }
        }
        Self::open(dir, config, remote, DEFAULT_BUDGET)
    }

    /// The data dir.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Creates `name` in the root with `data`, and closes it (release).
    ///
    /// # Panics
    /// On any error.
    pub async fn write_file(&self, name: &str, data: &[u8]) -> InodeNo {
        self.write_file_in(InodeNo::ROOT, name, data).await
    }

    /// Creates `name` in directory `parent` with `data`, and closes it (release).
    ///
    /// # Panics
    /// On any error.
    pub async fn write_file_in(&self, parent: InodeNo, name: &str, data: &[u8]) -> InodeNo {
        let (attr, opened) = self
            .fs
            .create(parent, OsStr::new(name), 0o644, libc::O_WRONLY, OWNER)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        if !data.is_empty() {
            self.fs
                .write(attr.ino, opened.fh, 0, data)
                .await
                .unwrap_or_else(|e| panic!("write {name}: {e}"));
        }
        self.fs
            .release(attr.ino, opened.fh)
            .await
            .unwrap_or_else(|e| panic!("release {name}: {e}"));
        attr.ino
    }
}

fn retry_open<T>(what: &str, open: impl Fn() -> defs_core::Result<T>) -> T {
    let mut tries = 0;
    loop {
        match open() {
            Ok(v) => return v,
            Err(e) if tries < 100 => {
                tries += 1;
                tracing::debug!(what, error = %e, "still open; retrying");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// What a [`ScriptedUploader`] does with its next job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read the bytes and succeed.
    Succeed,
    /// Fail with a reason.
    Fail,
    /// Wait until [`ScriptedUploader::release`] (or cancellation), then succeed.
    Block,
}

/// One finished upload attempt: inode, generation, the bytes it read, whether it succeeded.
pub type Attempt = (InodeNo, Generation, Vec<u8>, bool);

#[derive(Debug, Default)]
struct Shared {
    script: Mutex<VecDeque<Step>>,
    attempts: Mutex<Vec<Attempt>>,
    gate: Notify,
    started: Notify,
}

/// An [`Uploader`] for tests: follows a script (then succeeds) and records every attempt.
/// Test code only: production has no fake uploader.
#[derive(Clone, Debug, Default)]
pub struct ScriptedUploader {
    shared: Arc<Shared>,
}

impl ScriptedUploader {
    /// An uploader that follows `steps`, then succeeds.
    pub fn new(steps: &[Step]) -> ScriptedUploader {
        let u = ScriptedUploader::default();
        if let Ok(mut s) = u.shared.script.lock() {
            s.extend(steps.iter().copied());
        }
        u
    }

    /// Lets one blocked upload continue.
    pub fn release(&self) {
        self.shared.gate.notify_one();
    }

    /// Waits until an upload has started (one that started earlier counts once).
    pub async fn started(&self) {
        self.shared.started.notified().await;
    }

    /// The attempts so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared
            .attempts
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }
}

impl Uploader for ScriptedUploader {
    fn upload(&self, job: UploadJob) -> BoxFuture<'static, Result<Content, UploadError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let step = shared
                .script
                .lock()
                .ok()
                .and_then(|mut s| s.pop_front())
                .unwrap_or(Step::Succeed);
            shared.started.notify_one();
            if step == Step::Block {
                tokio::select! {
                    () = shared.gate.notified() => {}
                    () = job.cancel.cancelled() => return Err(UploadError::Cancelled),
                }
            }
            // An empty file has nothing to read (a new file has no cache entry before its
            // first write) and, like `ObjectUploader`, stores nothing.
            let bytes = match job.size {
                0 => Vec::new(),
                size => job
                    .cache
                    .read(job.ino, 0, size)
                    .map_err(|e| UploadError::Failed {
                        reason: e.to_string(),
                    })?
                    .ok_or_else(|| UploadError::Failed {
                        reason: "not all bytes are cached".into(),
                    })?,
            };
            let ok = step != Step::Fail;
            if let Ok(mut a) = shared.attempts.lock() {
                a.push((job.ino, job.generation, bytes, ok));
            }
            if ok && job.size == 0 {
                Ok(Content::Empty)
            } else if ok {
                Ok(fake_content(1, job.size))
            } else {
                Err(UploadError::Failed {
                    reason: "scripted failure".into(),
                })
            }
        })
    }
}

/// The content record a successful test upload produces: a made-up object of `len` bytes.
pub fn fake_content(n: u8, len: u64) -> Content {
    Content::Stored {
        file: FileId([n; 32]),
        key: [n; 32],
        offset: 0,
        len,
    }
}
