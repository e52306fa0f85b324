//! Whole files over the network: [`Client::put_file`] streams a file through the pipeline
//! segment by segment, stores each segment's shards on distinct peers, fills the holders into the
//! manifest, seals it and stores the sealed manifest on several peers; its id is the file id.
//! [`Client::get_file`] finds the manifest (broadcast lookup), fetches data shards from their
//! recorded holders, falls back to any `k` shards and to lookups, decodes, and writes a temporary
//! file that is renamed to the output name only once every byte has verified.
//!
//! Memory is bounded by [`ENCODE_AHEAD`] + [`UPLOAD_DEPTH`] (or [`DOWNLOAD_DEPTH`]) segments,
//! never by the file size.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use defs_core::manifest::{Manifest, SegmentEntry};
use defs_core::pipeline::{
    self as layout, EncodedSegment, FileKey, Geometry, LayoutConfig, Redundancy, decode_segment,
    encode_segment,
};
use defs_core::types::{FileId, NodeId, ShardId, VersionId};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::client::{Client, LOOKUP_WINDOW};
use crate::error::{Error, Result};
use crate::node::node_id_of;
use crate::transfer::{Priority, Progress};

/// Segments encoded ahead of the uploads.
pub const ENCODE_AHEAD: usize = 2;

/// Segments uploading at once.
pub const UPLOAD_DEPTH: usize = 4;

/// Segments downloading at once.
pub const DOWNLOAD_DEPTH: usize = 4;

/// Copies of a sealed manifest stored on distinct peers: it is small and without it nothing of
/// the file can be read.
pub const MANIFEST_COPIES: usize = 5;

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
}

/// How many shards of a segment rebuild it, and how many may be lost.
pub fn need_and_parity(geometry: &Geometry) -> (usize, usize) {
    match geometry.redundancy {
        Redundancy::Replicated { copies } => (1, usize::from(copies).saturating_sub(1)),
        Redundancy::ReedSolomon { k, m } => (usize::from(k), usize::from(m)),
    }
}

fn read_segment(file: &mut std::fs::File, path: &Path, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(Error::io(
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being stored",
                    ),
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(buf)
}

impl Client {
    /// Stores the file at `path` on the network and returns its id.
    ///
    /// # Errors
    /// [`Error::NoPeers`], [`Error::StoreFailed`], [`Error::Io`], and pipeline errors.
    ///
    /// # Cancel safety
    /// Dropping the future stops the upload; shards already stored stay on their peers.
    pub async fn put_file(
        &self,
        path: &Path,
        layout_cfg: &LayoutConfig,
        progress: Option<Arc<Progress>>,
    ) -> Result<PutReport> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let size = meta.len();
        let peers = self.node().candidates(0).await?.len();
        if peers == 0 {
            return Err(Error::NoPeers);
        }
        let geometry = layout::choose(size, peers, layout_cfg)?;
        let (_, parity) = need_and_parity(&geometry);
        if let Some(p) = &progress {
            p.set_total(size);
        }
        let key = FileKey::random()?;
        let mut version = [0u8; 16];
        getrandom::fill(&mut version).map_err(|e| Error::Setup(format!("random: {e}")))?;
        let version = VersionId(version);
        info!(size, ?geometry, peers, "put");

        // Reader + encoder on a blocking thread, ENCODE_AHEAD segments ahead.
        let (tx, mut rx) = mpsc::channel::<Result<EncodedSegment>>(ENCODE_AHEAD);
        let seg_size = geometry.segment_size();
        let path2: PathBuf = path.to_path_buf();
        let key2 = key.clone();
        let geo2 = geometry;
        let reader = tokio::task::spawn_blocking(move || {
            let run = || -> Result<()> {
                let mut f = std::fs::File::open(&path2).map_err(|e| Error::io(&path2, e))?;
                let mut offset = 0u64;
                let mut index = 0u64;
                while offset < size {
                    let len = (size - offset).min(seg_size) as usize;
                    let data = read_segment(&mut f, &path2, len)?;
                    let seg = encode_segment(&geo2, &key2, version, index, &data)?;
                    if tx.blocking_send(Ok(seg)).is_err() {
                        return Ok(());
                    }
                    offset += len as u64;
                    index += 1;
                }
                Ok(())
            };
            if let Err(e) = run() {
                let _ = tx.blocking_send(Err(e));
            }
        });

        let mut entries: Vec<SegmentEntry> = Vec::new();
        let mut tolerance = usize::MAX;
        let mut in_flight = FuturesOrdered::new();
        let mut input_done = false;
        loop {
            while !input_done && in_flight.len() < UPLOAD_DEPTH {
                match rx.recv().await {
                    None => input_done = true,
                    Some(seg) => {
                        let seg = seg?;
                        let this = self.clone();
                        let progress = progress.clone();
                        in_flight.push_back(async move {
                            let mut entry = seg.entry();
                            let plain = u64::from(seg.len);
                            let shards: Vec<(ShardId, Vec<u8>)> =
                                seg.shards.into_iter().map(|s| (s.id, s.bytes)).collect();
                            let (holders, tol) = this
                                .store_segment_on_network(shards, parity, Priority::Background)
                                .await?;
                            for (shard, peer) in entry.shards.iter_mut().zip(holders) {
                                shard.holders = node_id_of(&peer).into_iter().collect();
                            }
                            if let Some(p) = &progress {
                                p.add(plain);
                            }
                            Ok::<_, Error>((entry, tol))
                        });
                    }
                }
            }
            match in_flight.next().await {
                Some(r) => {
                    let (entry, tol) = r?;
                    tolerance = tolerance.min(tol);
                    entries.push(entry);
                }
                None if input_done => break,
                None => {}
            }
        }
        reader
            .await
            .map_err(|e| Error::Setup(format!("reader task: {e}")))?;
        if tolerance == usize::MAX {
            tolerance = parity;
        }
        if tolerance < parity {
            warn!(
                tolerance,
                parity, peers, "fewer peers than shards: reduced fault tolerance"
            );
        }

        let segments = entries.len() as u64;
        let manifest = Manifest {
            version,
            size,
            geometry,
            segments: entries,
        };
        let wrap = self.wrap_key();
        let sealed = manifest.seal(&key, &wrap)?;
        let id = ShardId(sealed.id.0);
        // Peers may have come or gone during the upload: count them again.
        let now_peers = self.node().candidates(0).await?.len();
        let copies = MANIFEST_COPIES.min(now_peers.max(1));
        let shards = vec![(id, sealed.bytes); copies];
        self.store_segment_on_network(shards, copies - 1, Priority::Background)
            .await?;
        debug!(file = %sealed.id, segments, "manifest stored");
        Ok(PutReport {
            file: sealed.id,
            size,
            geometry,
            segments,
            fault_tolerance: tolerance,
            peers,
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
        let found = self
            .node()
            .lookup_holders(vec![id], MANIFEST_COPIES, LOOKUP_WINDOW)
            .await?;
        let others: Vec<PeerId> = found
            .get(&id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !holders.contains(p))
            .collect();
        self.fetch_verified_from(id, &others, Priority::Interactive)
            .await
            .map_err(|_| Error::ManifestNotFound { file })
    }

    /// Fetches `file` into `out`: the data appears under `out` only after every segment has
    /// been fetched, verified and decrypted (a temporary file in the same dir is renamed).
    /// Returns the file size.
    ///
    /// # Errors
    /// [`Error::ManifestNotFound`], [`Error::NotEnoughShards`] naming the file and segment,
    /// [`Error::Io`], pipeline errors (wrong key).
    ///
    /// # Cancel safety
    /// Dropping the future leaves at most the temporary file, never a partial `out`.
    pub async fn get_file(
        &self,
        file: FileId,
        out: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<u64> {
        let sealed = self.fetch_manifest(file).await?;
        let wrap = self.wrap_key();
        let (manifest, key) = Manifest::open(&sealed, &wrap)?;
        let manifest = Arc::new(manifest);
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
        let mut guard = TempFile::create(&tmp)?;

        let mut in_flight = FuturesOrdered::new();
        let mut next = 0usize;
        let total = manifest.segments.len();
        loop {
            while next < total && in_flight.len() < DOWNLOAD_DEPTH {
                let this = self.clone();
                let m = manifest.clone();
                let k = key.clone();
                let s = next;
                in_flight.push_back(async move { this.fetch_segment(file, &m, &k, s).await });
                next += 1;
            }
            match in_flight.next().await {
                Some(r) => {
                    let plain = r?;
                    guard.write(&plain)?;
                    if let Some(p) = &progress {
                        p.add(plain.len() as u64);
                    }
                }
                None => break,
            }
        }
        guard.finish(out, manifest.size)?;
        Ok(manifest.size)
    }

    /// Fetches and decodes one segment: data shards from their recorded holders, then other
    /// shards from theirs, then a broadcast lookup for whatever is still missing.
    async fn fetch_segment(
        &self,
        file: FileId,
        manifest: &Manifest,
        key: &FileKey,
        segment: usize,
    ) -> Result<Vec<u8>> {
        let entry = &manifest.segments[segment];
        let n = entry.shards.len();
        let (need, _) = need_and_parity(&manifest.geometry);
        let holders: Vec<NodeId> = entry
            .shards
            .iter()
            .flat_map(|s| s.holders.iter().copied())
            .collect();
        let resolved = self.node().resolve(holders.clone()).await?;
        let by_node: std::collections::HashMap<NodeId, PeerId> = holders
            .into_iter()
            .zip(resolved)
            .filter_map(|(n, p)| p.map(|p| (n, p)))
            .collect();
        let peers_of = |i: usize| -> Vec<PeerId> {
            entry.shards[i]
                .holders
                .iter()
                .filter_map(|n| by_node.get(n).copied())
                .collect()
        };

        let mut got: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut valid = 0usize;
        let mut next = 0usize;
        // Phase 1 and 2: recorded holders, data shards first, then as many others as failed.
        while valid < need && next < n {
            let want = (need - valid).min(n - next);
            let batch: Vec<usize> = (next..next + want).collect();
            next += want;
            let fetches = batch.iter().map(|&i| {
                let id = entry.shards[i].id;
                let peers = peers_of(i);
                async move {
                    (
                        i,
                        self.fetch_verified_from(id, &peers, Priority::Interactive)
                            .await,
                    )
                }
            });
            for (i, r) in futures::future::join_all(fetches).await {
                match r {
                    Ok(d) => {
                        got[i] = Some(d);
                        valid += 1;
                    }
                    Err(e) => debug!(segment, shard = i, error = %e, "shard not at its holders"),
                }
            }
        }
        // Phase 3: a broadcast lookup for every missing shard of the segment.
        if valid < need {
            let missing: Vec<usize> = (0..n).filter(|&i| got[i].is_none()).collect();
            let ids: Vec<ShardId> = missing.iter().map(|&i| entry.shards[i].id).collect();
            debug!(
                segment,
                missing = ids.len(),
                "broadcast lookup for missing shards"
            );
            let found = self.node().lookup(ids, LOOKUP_WINDOW).await?;
            let fetches = missing.iter().filter_map(|&i| {
                let id = entry.shards[i].id;
                let peers = found.get(&id).cloned()?;
                Some(async move {
                    (
                        i,
                        self.fetch_verified_from(id, &peers, Priority::Interactive)
                            .await,
                    )
                })
            });
            for (i, r) in futures::future::join_all(fetches).await {
                if let Ok(d) = r {
                    got[i] = Some(d);
                    valid += 1;
                }
            }
        }
        if valid < need {
            return Err(Error::NotEnoughShards {
                file,
                segment: segment as u64,
                need,
                have: valid,
            });
        }
        let m = manifest.clone();
        let k = key.clone();
        let seg = segment as u64;
        tokio::task::spawn_blocking(move || decode_segment(&m, &k, seg, got))
            .await
            .map_err(|e| Error::Setup(format!("decode task: {e}")))?
            .map_err(Error::from)
    }
}

/// A temporary output file, removed unless [`TempFile::finish`] renames it into place.
struct TempFile {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl TempFile {
    fn create(path: &Path) -> Result<TempFile> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
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

    fn finish(mut self, out: &Path, size: u64) -> Result<()> {
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
        std::fs::rename(&self.path, out).map_err(|e| Error::io(out, e))?;
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
