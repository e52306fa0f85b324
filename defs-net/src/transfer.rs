//! The transfer pool: a bounded number of shard transfers run at once; queued transfers start
//! in priority order (a read a user waits for before a background upload), first come first
//! served within a priority. [`Progress`] counts bytes per task (a put or a get).
//!
//! ```text
//!   run(prio, job) ──► [interactive queue] ─┐  biased: interactive first
//!                  ──► [background queue] ──┴─► dispatcher ──(permit)──► JoinSet of jobs
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use crate::error::{Error, Result};

/// Default number of transfers running at once. 16 keeps five peers busy with a few
/// requests each while bounding memory to 16 shards in flight per process.
pub const DEFAULT_WORKERS: usize = 16;

/// Queued transfers per priority before `run` waits (backpressure on producers).
pub const QUEUE_DEPTH: usize = 256;

/// Which transfers start first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Uploads and repairs nobody is waiting on.
    Background,
    /// Reads a user is waiting for.
    Interactive,
}

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Bytes done and total of one task, shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// A new counter.
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }
    /// Sets the total bytes of the task.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }
    /// Adds finished bytes.
    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
    /// (done, total) bytes.
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// A bounded, prioritised pool of transfer jobs. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct TransferPool {
    interactive: mpsc::Sender<Job>,
    background: mpsc::Sender<Job>,
    _task: Arc<AbortOnDropHandle<()>>,
}

impl TransferPool {
    /// Starts a pool running at most `workers` jobs at once.
    pub fn spawn(workers: usize) -> TransferPool {
        let (itx, irx) = mpsc::channel(QUEUE_DEPTH);
        let (btx, brx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(dispatch(workers.max(1), irx, brx));
        TransferPool {
            interactive: itx,
            background: btx,
            _task: Arc::new(AbortOnDropHandle::new(task)),
        }
    }

    /// Runs `job` in the pool at `priority` and returns its output.
    ///
    /// # Errors
    /// [`Error::Closed`] when the pool has stopped.
    ///
    /// # Cancel safety
    /// Dropping the future before the job starts skips the job; after it started, the job runs
    /// to completion and its output is dropped.
    pub async fn run<T, F>(&self, priority: Priority, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let boxed: Job = Box::pin(async move {
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(job.await);
        });
        let queue = match priority {
            Priority::Interactive => &self.interactive,
            Priority::Background => &self.background,
        };
        queue.send(boxed).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }
}

async fn dispatch(
    workers: usize,
    mut interactive: mpsc::Receiver<Job>,
    mut background: mpsc::Receiver<Job>,
) {
    let permits = Arc::new(Semaphore::new(workers));
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let job = tokio::select! {
            biased;
            Some(job) = interactive.recv() => job,
            Some(job) = background.recv() => job,
            else => return,
        };
        running.spawn(async move {
            job.await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn interactive_jobs_start_before_queued_background_jobs() {
        let pool = TransferPool::spawn(1);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        // Occupy the only worker.
        let (block_tx, block_rx) = oneshot::channel::<()>();
        let p = pool.clone();
        let first = tokio::spawn(async move {
            p.run(Priority::Background, async move {
                let _ = block_rx.await;
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut handles = Vec::new();
        for (i, prio) in [
            (1, Priority::Background),
            (2, Priority::Background),
            (3, Priority::Interactive),
        ] {
            let p = pool.clone();
            let o = order.clone();
            handles.push(tokio::spawn(async move {
                p.run(prio, async move { o.lock().unwrap().push(i) }).await
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        block_tx.send(()).unwrap();
        first.await.unwrap().unwrap();
        for h in handles {
            tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let order = order.lock().unwrap().clone();
        // The dispatcher may already hold job 1 when the worker frees up; the interactive job
        // still overtakes every background job queued behind it.
        assert!(
            order == vec![3, 1, 2] || order == vec![1, 3, 2],
            "{order:?}"
        );
    }

    #[tokio::test]
    async fn at_most_n_jobs_run_at_once() {
        let pool = TransferPool::spawn(3);
        let running = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let mut hs = Vec::new();
        for _ in 0..20 {
            let (p, r, k) = (pool.clone(), running.clone(), peak.clone());
            hs.push(tokio::spawn(async move {
                p.run(Priority::Background, async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    k.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        for h in hs {
            h.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
