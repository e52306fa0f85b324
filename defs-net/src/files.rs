//! Whole files over the network, on defs-core's object layer ([`Objects`]) so that the CLI and
//! the mount share one data path. [`Client::put_file`] is [`Objects::put`] over a
//! [`FileSource`]: segments are encoded in parallel on the blocking pool, their shards stored
//! on distinct peers, the sealed manifest stored on several peers; its id is the file id.
//! [`Client::get_file`] finds the manifest (broadcast lookup), reads the file segment by
//! segment with [`Objects::read_covering`] (data shards from their recorded holders; any `k`
//! shards and one lookup per segment when they fail; Reed-Solomon rebuild), and writes a
//! temporary file that is renamed to the output name only once every byte has verified.
//!
//! ```text
//!  put: FileSource ─▶ Objects::put ─▶ ShardClient::store_segment (Client, Background priority)
//!  get: fetch_manifest ─▶ Manifest::open ─▶ Objects::read_covering, one task per segment,
//!       DOWNLOAD_DEPTH at once ─▶ in order to a blocking writer thread
//!       ─▶ .NAME.defs-partial-PID ─▶ fsync ─▶ rename to NAME
//! ```
//!
//! Memory is bounded by [`defs_core::object::UPLOAD_DEPTH`] segments (or [`DOWNLOAD_DEPTH`]
//! plus the writer's two), never by the file size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use defs_core::durability::Durability;
use defs_core::manifest::Manifest;
use defs_core::object::{FileSource, MANIFEST_COPIES, Objects};
use defs_core::pipeline::{Geometry, LayoutConfig};
use defs_core::remote::ShardClient;
use defs_core::types::{FileId, ShardId};
use futures::StreamExt;
use tokio_util::task::AbortOnDropHandle;

use crate::client::{Client, LOOKUP_WINDOW};
use crate::error::{Error, Result};
use crate::transfer::{Priority, Progress};

/// Segments downloading at once, each its own task. Eight keep every peer of a 5-node
/// cluster busy with several requests while earlier segments are written; memory is eight
/// decoded segments plus their shards (about 64 MiB with 4 MiB segments).
pub const DOWNLOAD_DEPTH: usize = 8;

/// What a put did.
#[derive(Debug, Clone)]
pub struct PutReport {
    /// The file id (what `defs put` prints).
    pub file: FileId,
    /// File size in bytes.
    pub size: u64,
    /// The chosen geometry.
    pub geometry: Geometry,
    /// Segments stored.
    pub segments: u64,
    /// Node losses every segment survives as placed (the minimum over segments).
    pub fault_tolerance: usize,
    /// Storage peers available at placement.
    pub peers: usize,
    /// How well the file is protected once stored, by the one definition of "on the network"
    /// ([`defs_core::durability`]).
    pub durability: Durability,
}

impl Client {
    /// The object layer over this client, sealing manifests with the owner's wrap key.
    fn objects(&self, layout: LayoutConfig) -> Objects {
        Objects::new(Arc::new(self.clone()), self.wrap_key(), layout, None)
    }

    /// Stores the file at `path` on the network and returns its id.
    ///
    /// # Errors
    /// [`Error::NoPeers`]; [`Error::Core`] for I/O on `path`, shards that could not be stored
    /// anywhere and pipeline errors.
    ///
    /// # Cancel safety
    /// Dropping the future stops the upload; shards already stored stay on their peers.
    pub async fn put_file(
        &self,
        path: &Path,
        layout_cfg: &LayoutConfig,
        progress: Option<Arc<Progress>>,
    ) -> Result<PutReport> {
        let source = FileSource::open(path)?;
        let size = source.size()?;
        if ShardClient::storage_peers(self).await? == 0 {
            return Err(Error::NoPeers);
        }
        if let Some(p) = &progress {
            p.set_total(size);
        }
        let done = |bytes: u64| {
            if let Some(p) = &progress {
                p.add(bytes);
            }
        };
        let stored = self
            .objects(layout_cfg.clone())
            .put(Arc::new(source), size, None, &done)
            .await?;
        let durability = Durability::assess(&stored.manifest, &self.liveness().await?);
        Ok(PutReport {
            file: stored.file,
            size,
            geometry: stored.manifest.geometry,
            segments: stored.manifest.segments.len() as u64,
            fault_tolerance: stored.fault_tolerance,
            peers: stored.peers,
            durability,
        })
    }

    /// Finds and fetches the sealed manifest of `file`.
    ///
    /// # Errors
    /// [`Error::ManifestNotFound`] when nobody holds it.
    pub async fn fetch_manifest(&self, file: FileId) -> Result<Vec<u8>> {
        let id = ShardId(file.0);
        let found = self.node().lookup(vec![id], LOOKUP_WINDOW).await?;
        let holders = found.get(&id).cloned().unwrap_or_default();
        if holders.is_empty() {
            return Err(Error::ManifestNotFound { file });
        }
        if let Ok(bytes) = self
            .fetch_verified_from(id, &holders, Priority::Interactive)
            .await
        {
            return Ok(bytes);
        }
        // The first holders failed or lied: wait for every copy's holder to answer.
        let others = self.other_holders(id, &holders, MANIFEST_COPIES).await?;
        self.fetch_verified_from(id, &others, Priority::Interactive)
            .await
            .map_err(|_| Error::ManifestNotFound { file })
    }

    /// Fetches `file` into `out`, replacing a file already there: the data appears under `out`
    /// only after every segment has been fetched, verified and decrypted (a temporary file in
    /// the same dir is renamed). Returns the file size.
    ///
    /// # Errors
    /// [`Error::ManifestNotFound`], [`Error::NotEnoughShards`] naming the file and segment,
    /// [`Error::Output`], pipeline errors (wrong key).
    ///
    /// # Cancel safety
    /// Dropping the future leaves at most the temporary file, never a partial `out`.
    pub async fn get_file(
        &self,
        file: FileId,
        out: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<u64> {
        self.get_file_into(file, out, Existing::Replace, progress)
            .await
    }

    /// As [`Client::get_file`], with what to do when `out` already exists: with
    /// [`Existing::Keep`] the fetched file never replaces one that is there (also one created
    /// while the fetch ran), and the get fails with [`Error::Output`].
    ///
    /// # Errors
    /// As [`Client::get_file`].
    ///
    /// # Cancel safety
    /// As [`Client::get_file`].
    pub async fn get_file_into(
        &self,
        file: FileId,
        out: &Path,
        existing: Existing,
        progress: Option<Arc<Progress>>,
    ) -> Result<u64> {
        if existing == Existing::Keep && out.symlink_metadata().is_ok() {
            return Err(Error::output(out, ALREADY_THERE));
        }
        let sealed = self.fetch_manifest(file).await?;
        let (manifest, key) = Manifest::open(&sealed, &self.wrap_key())?;
        if let Some(p) = &progress {
            p.set_total(manifest.size);
        }
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = dir.join(format!(".{name}.defs-partial-{}", std::process::id()));
        let guard = TempFile::create(&tmp, out)?;

        // Each segment is read by its own task, so fetches, verification and decryption go on
        // while earlier segments are written; the writes run on a blocking thread, in order.
        let objects = Arc::new(self.objects(LayoutConfig::default()));
        let seg_size = manifest.geometry.segment_size();
        let size = manifest.size;
        let (manifest, key) = (Arc::new(manifest), Arc::new(key));
        let lens: Vec<u64> = manifest.segments.iter().map(|s| u64::from(s.len)).collect();
        let segments = futures::stream::iter(lens.into_iter().enumerate())
            .map(|(index, len)| {
                let (objects, manifest, key) = (objects.clone(), manifest.clone(), key.clone());
                let offset = index as u64 * seg_size;
                let read = tokio::spawn(async move {
                    objects
                        .read_covering(file, &manifest, &key, offset, len)
                        .await
                });
                async move {
                    let joined = AbortOnDropHandle::new(read).await;
                    let (start, bytes) = joined
                        .map_err(|e| Error::Malformed {
                            what: "segment read",
                            reason: format!("segment {index}: task failed: {e}"),
                        })?
                        .map_err(|e| not_enough_shards(file, e))?;
                    if start != offset || bytes.len() as u64 != len {
                        return Err(Error::Malformed {
                            what: "segment read",
                            reason: format!(
                                "segment {index}: got {} bytes at {start}, wanted {len} at {offset}",
                                bytes.len()
                            ),
                        });
                    }
                    Ok(bytes)
                }
            })
            .buffered(DOWNLOAD_DEPTH);
        futures::pin_mut!(segments);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let writer = tokio::task::spawn_blocking(move || {
            let mut guard = guard;
            while let Some(plain) = rx.blocking_recv() {
                guard.write(&plain)?;
            }
            Ok::<_, Error>(guard)
        });
        let mut failed = None;
        while let Some(plain) = segments.next().await {
            let plain = match plain {
                Ok(p) => p,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let n = plain.len() as u64;
            if tx.send(plain).await.is_err() {
                break; // the writer stopped on an error, returned below
            }
            if let Some(p) = &progress {
                p.add(n);
            }
        }
        drop(tx);
        let guard = writer.await.map_err(|e| Error::Malformed {
            what: "output",
            reason: format!("writer task failed: {e}"),
        })??;
        if let Some(e) = failed {
            return Err(e);
        }
        let out = out.to_path_buf();
        tokio::task::spawn_blocking(move || guard.finish(&out, size, existing))
            .await
            .map_err(|e| Error::Malformed {
                what: "output",
                reason: format!("finishing task failed: {e}"),
            })??;
        Ok(size)
    }
}

/// A segment that could not be rebuilt, named with its file; other errors as they are.
fn not_enough_shards(file: FileId, e: defs_core::Error) -> Error {
    match e {
        defs_core::Error::TooFewShards {
            segment,
            need,
            have,
        } => Error::NotEnoughShards {
            file,
            segment,
            need: usize::from(need),
            have: usize::from(have),
        },
        e => Error::Core(e),
    }
}

/// What a get does when its output file already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (`defs get --force`).
    Replace,
    /// Leave it as it is and fail.
    Keep,
}

/// Why a get with [`Existing::Keep`] did not write its output.
const ALREADY_THERE: &str =
    "it already exists and was left as it is (defs get --force replaces it)";

/// Why the output file cannot be created: its directory, named, rather than the internal
/// temporary file the error happened on.
fn create_failure(out: &Path, dir: &Path, e: &std::io::Error) -> Error {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("its directory {} does not exist", dir.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("no permission to create files in {}", dir.display())
        }
        _ => format!("cannot create a file in {}: {e}", dir.display()),
    };
    Error::output(out, reason)
}

/// A temporary output file, removed unless [`TempFile::finish`] renames it into place.
struct TempFile {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl TempFile {
    /// Creates the temporary file `path` for the output `out` (errors name `out`).
    fn create(path: &Path, out: &Path) -> Result<TempFile> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| create_failure(out, path.parent().unwrap_or(Path::new(".")), &e))?;
        Ok(TempFile {
            path: path.to_path_buf(),
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(data).map_err(|e| Error::io(&self.path, e)),
            None => Ok(()),
        }
    }

    fn finish(mut self, out: &Path, size: u64, existing: Existing) -> Result<()> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        let f = f
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        let len = f.metadata().map_err(|e| Error::io(&self.path, e))?.len();
        if len != size {
            return Err(Error::Malformed {
                what: "output",
                reason: format!("wrote {len} bytes, the manifest says {size}"),
            });
        }
        f.sync_all().map_err(|e| Error::io(&self.path, e))?;
        if existing == Existing::Keep {
            // A hard link never replaces a file that is there, not even one created a moment
            // ago; the temporary name then goes (the Drop below).
            match std::fs::hard_link(&self.path, out) {
                Ok(()) => {
                    self.file = Some(std::io::BufWriter::new(f));
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    self.file = Some(std::io::BufWriter::new(f));
                    return Err(Error::output(out, ALREADY_THERE));
                }
                // A filesystem without hard links: check, then rename.
                Err(_) if out.symlink_metadata().is_ok() => {
                    self.file = Some(std::io::BufWriter::new(f));
                    return Err(Error::output(out, ALREADY_THERE));
                }
                Err(_) => {}
            }
        }
        std::fs::rename(&self.path, out).map_err(|e| Error::output(out, e.to_string()))?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
