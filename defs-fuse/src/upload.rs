//! The network's half of the write-back cache: [`ObjectUploader`] turns a dirty file's cached
//! bytes into a stored object through defs-core's [`Objects`] (which reach the network through
//! the `ShardClient` trait), and [`Remote`] bundles what the core needs of the network.

use std::fmt;
use std::ops::Range;

use defs_core::cache_store::CacheStore;
use defs_core::manifest::PackRange;
use defs_core::namespace::Content;
use defs_core::object::{Durability, MemorySource, Objects, Source, Stored};
use defs_core::pipeline::Mode;
use defs_core::sync::Arc;
use defs_core::types::InodeNo;
use futures::future::BoxFuture;
use tracing::{info, warn};

use crate::flusher::{UploadError, UploadJob, Uploader};

/// What the filesystem core uses of the network: an uploader for dirty files and the object
/// layer for lazy reads. [`Remote::none`] is a mount without a network (files stay dirty).
#[derive(Clone, Debug, Default)]
pub struct Remote {
    /// Uploads dirty files; `None` keeps them dirty in the local cache.
    pub uploader: Option<Arc<dyn Uploader>>,
    /// Reads stored content back; `None` answers reads of uncached bytes with EIO.
    pub objects: Option<Arc<Objects>>,
}

impl Remote {
    /// No network: nothing is uploaded, nothing uncached can be read.
    pub fn none() -> Remote {
        Remote::default()
    }

    /// The network through `objects`: uploads and reads both go through it.
    pub fn objects(objects: Arc<Objects>) -> Remote {
        Remote {
            uploader: Some(Arc::new(ObjectUploader::new(objects.clone()))),
            objects: Some(objects),
        }
    }

    /// Just an uploader (tests of the flusher's scheduling).
    pub fn uploader(uploader: Option<Arc<dyn Uploader>>) -> Remote {
        Remote {
            uploader,
            objects: None,
        }
    }
}

/// Uploads a dirty file's cache contents as one new object.
pub struct ObjectUploader {
    objects: Arc<Objects>,
}

impl fmt::Debug for ObjectUploader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectUploader").finish_non_exhaustive()
    }
}

impl ObjectUploader {
    /// An uploader storing through `objects`.
    pub fn new(objects: Arc<Objects>) -> ObjectUploader {
        ObjectUploader { objects }
    }
}

/// An inode's cache file as an upload source (all of a dirty file is cached).
struct CacheSource {
    cache: Arc<CacheStore>,
    ino: InodeNo,
}

impl CacheSource {
    fn missing(&self) -> defs_core::Error {
        defs_core::Error::io(
            format!("cache file of inode {}", self.ino),
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "bytes of a dirty file are missing from the cache",
            ),
        )
    }
}

impl Source for CacheSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> defs_core::Result<()> {
        match self.cache.read(self.ino, offset, buf.len() as u64)? {
            Some(data) if data.len() == buf.len() => {
                buf.copy_from_slice(&data);
                Ok(())
            }
            _ => Err(self.missing()),
        }
    }

    /// The cache file's data runs: its holes (never written, grown by truncate, punched) are
    /// neither read nor stored.
    fn data_ranges(&self, offset: u64, len: u64) -> defs_core::Result<Vec<Range<u64>>> {
        // Holes of the cache file are zeros only where the cache holds the range.
        if !self.cache.missing(self.ino, offset, len).is_empty() {
            return Err(self.missing());
        }
        self.cache.data_ranges(self.ino, offset, len)
    }
}

/// Logs whether a new object is on the network (one line per object, however many files it
/// holds).
async fn log_durability(objects: &Objects, stored: &Stored, what: &str) {
    match objects.client().liveness().await {
        Ok(live) => {
            let d = Durability::assess(&stored.manifest, &live);
            if d.on_network() {
                info!(file = %stored.file, size = stored.manifest.size, durability = %d, "uploaded {what}");
            } else {
                warn!(file = %stored.file, size = stored.manifest.size, durability = %d, "uploaded {what}, but not on the network");
            }
        }
        Err(e) => {
            warn!(file = %stored.file, size = stored.manifest.size, error = %e, "uploaded {what}; whether it is on the network is unknown");
        }
    }
}

/// The cached bytes `0..size` of a job's file (all of a dirty file is cached).
fn cached_bytes(job: &UploadJob) -> Result<Vec<u8>, UploadError> {
    let failed = |reason: String| UploadError::Failed { reason };
    match job.cache.read(job.ino, 0, job.size) {
        Ok(Some(data)) if data.len() as u64 == job.size => Ok(data),
        Ok(_) => Err(failed(format!(
            "bytes of dirty inode {} are missing from the cache",
            job.ino
        ))),
        Err(e) => Err(failed(format!(
            "reading inode {} from the cache: {e}",
            job.ino
        ))),
    }
}

impl Uploader for ObjectUploader {
    fn pack_max(&self) -> u64 {
        let layout = self.objects.layout();
        if layout.pack_small_files && layout.mode == Mode::Auto {
            layout.small_file_max
        } else {
            0
        }
    }

    fn upload_pack(
        &self,
        jobs: Vec<UploadJob>,
    ) -> BoxFuture<'static, Vec<Result<Content, UploadError>>> {
        let objects = self.objects.clone();
        let n_jobs = jobs.len();
        Box::pin(async move {
            // The members' bytes, read now: a member deleted from here on does not fail the
            // others (its result is dropped by the journal's generation check).
            let read = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                let mut members = Vec::new();
                let mut results = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    let r = if job.cancel.is_cancelled() {
                        Err(UploadError::Cancelled)
                    } else if job.size == 0 {
                        Ok(Some(Content::Empty))
                    } else {
                        cached_bytes(job).map(|data| {
                            members.push(PackRange {
                                offset: bytes.len() as u64,
                                len: job.size,
                            });
                            bytes.extend_from_slice(&data);
                            None
                        })
                    };
                    results.push(r);
                }
                (bytes, members, results)
            })
            .await;
            let (bytes, members, results) = match read {
                Ok(r) => r,
                Err(e) => {
                    let reason = format!("reading a pack's files: {e}");
                    return (0..n_jobs)
                        .map(|_| {
                            Err(UploadError::Failed {
                                reason: reason.clone(),
                            })
                        })
                        .collect();
                }
            };
            let stored = if members.is_empty() {
                None
            } else {
                let n = members.len();
                match objects
                    .put_pack(Arc::new(MemorySource(bytes)), members.clone(), &|_| {})
                    .await
                {
                    Ok(stored) => {
                        log_durability(&objects, &stored, &format!("a pack of {n} files")).await;
                        Some(Ok(stored))
                    }
                    Err(e) => Some(Err(e)),
                }
            };
            let mut members = members.into_iter();
            results
                .into_iter()
                .map(|r| match r? {
                    Some(content) => Ok(content),
                    None => {
                        let member = members.next();
                        match (&stored, member) {
                            (Some(Ok(stored)), Some(m)) => Ok(Content::Stored {
                                file: stored.file,
                                key: *stored.key.as_bytes(),
                                offset: m.offset,
                                len: m.len,
                            }),
                            (Some(Err(e)), _) => Err(UploadError::from_core(e)),
                            _ => Err(UploadError::Failed {
                                reason: "a pack lost track of a member".into(),
                            }),
                        }
                    }
                })
                .collect()
        })
    }

    fn upload(&self, job: UploadJob) -> BoxFuture<'static, Result<Content, UploadError>> {
        let objects = self.objects.clone();
        Box::pin(async move {
            if job.size == 0 {
                return Ok(Content::Empty);
            }
            let source = Arc::new(CacheSource {
                cache: job.cache.clone(),
                ino: job.ino,
            });
            let put = objects.put(source, job.size, None, &|_| {});
            let stored = tokio::select! {
                r = put => r.map_err(|e| UploadError::from_core(&e))?,
                () = job.cancel.cancelled() => return Err(UploadError::Cancelled),
            };
            log_durability(&objects, &stored, &format!("inode {}", job.ino)).await;
            Ok(Content::Stored {
                file: stored.file,
                key: *stored.key.as_bytes(),
                offset: 0,
                len: job.size,
            })
        })
    }
}
