//! Objects: a byte source stored on a [`ShardClient`] as one encrypted, erasure-coded object
//! with a sealed manifest, and any byte range of it read back. Both the mount (upload of a
//! dirty file, lazy reads of an uncached range) and the CLI (`defs put`/`defs get`) go through
//! here, so the network sees one data path.
//!
//! ```text
//!  put:  Source ─read_at─▶ encode (blocking pool, UPLOAD_DEPTH segments in flight)
//!              ─▶ ShardClient::store_segment (holders into the manifest)
//!              ─▶ seal manifest ─▶ store MANIFEST_COPIES copies ─▶ ManifestStore (local copy)
//!  read: Objects::manifest (memory LRU → ManifestStore → network lookup)
//!        Objects::read_covering: decode::plan → fetch only the covering data shards (parallel)
//!              → decrypt; a bad or missing one → fetch the other shards, RS-rebuild the segment
//!              → a shard that failed verification is remembered: Objects::damaged
//! ```
//!
//! Memory is bounded by [`UPLOAD_DEPTH`] encoded segments on the way up and by the segments a
//! range touches on the way down, never by the object size.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::SystemTime;

use futures::StreamExt;
use lru::LruCache;
use tracing::{debug, info, warn};

pub use crate::durability::{Durability, Liveness};
use crate::error::{Error, Result};
pub use crate::fsutil::HOLE_BLOCK;
use crate::manifest::{Manifest, PackRange, SealedManifest, SegmentEntry};
use crate::pipeline::{
    FileKey, Geometry, LayoutConfig, WrapKey, assemble_into, choose, decrypt_shard, encode_segment,
    new_version_id, pack_layout, plan,
};
use crate::remote::{OutShard, ShardClient};
use crate::sync::Arc;
use crate::types::{FileId, NodeId, ShardId};
pub use holders::HolderUpdate;
pub use manifest_store::ManifestStore;
use source::read_segment;
pub use source::{FileSource, MemorySource, Source};

/// What [`Objects::put_pack_logged`] hands every shard id before it is stored.
pub type PutLog = dyn Fn(&[ShardId]) -> Result<()> + Send + Sync;

/// Segments in flight during a put (being read and encoded, or being stored). Six keep both
/// cores encoding while the network stores the segments before them; memory is six encoded
/// segments.
pub const UPLOAD_DEPTH: usize = 6;

/// Copies of a sealed manifest stored on distinct peers: it is small, and without it nothing
/// of the object can be read from another machine.
pub const MANIFEST_COPIES: usize = 5;

/// Opened manifests kept in memory (a 1 GiB object's manifest is about 100 KiB).
pub const MANIFEST_CACHE: usize = 256;

/// Damaged shards [`Objects::damaged`] remembers, at most (the oldest are forgotten first):
/// enough to show the user a pattern (one bad disk, one bad peer) without growing with the
/// number of reads.
pub const DAMAGED_MAX: usize = 64;

/// Background holder probes (see [`Objects::damaged`]) running at once: a read around many
/// lost shards (nodes down) must not start a broadcast lookup storm; a probe that finds none
/// free is skipped.
pub const DAMAGE_PROBES: usize = 4;

/// A shard a read found damaged (it failed verification) and read around, rebuilding its
/// segment from the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedShard {
    /// The object (file) it belongs to.
    pub file: FileId,
    /// Its segment.
    pub segment: u64,
    /// Its index in the segment.
    pub index: u16,
    /// The shard.
    pub shard: ShardId,
    /// Its recorded holder (the node that most likely has the bad copy), if the manifest
    /// names one.
    pub holder: Option<NodeId>,
    /// Which check failed, as the fetch or the decryption reported it.
    pub reason: String,
    /// When it was last found damaged.
    pub at: SystemTime,
}

/// Whether a shard fetch or decryption error means the shard's bytes are damaged (as opposed
/// to unreachable), and if so why.
///
/// AEAD/CRC failures of the decrypted shard are typed ([`Error::CorruptShard`]). A holder's
/// bad bytes reach this layer only as the text of an [`Error::Remote`] (the [`ShardClient`]
/// verifies and tries the next holder): a peer refusing with its `Corrupt` code (its CRC check
/// failed on disk) or bytes that do not hash to the id. The markers below are those messages.
fn damage(e: &Error) -> Option<String> {
    const MARKERS: [&str; 4] = [
        "Corrupt:",
        "is corrupt",
        "returned bad data",
        "do not hash to the shard id",
    ];
    match e {
        Error::CorruptShard { .. } => Some(e.to_string()),
        Error::Remote { reason, .. } if MARKERS.iter().any(|m| reason.contains(m)) => {
            Some(reason.clone())
        }
        _ => None,
    }
}

/// Adds `d` to the bounded damaged list (a shard already listed moves to the end).
fn record_damage(list: &Mutex<VecDeque<DamagedShard>>, d: DamagedShard) {
    warn!(file = %d.file, segment = d.segment, shard = %d.shard, holder = ?d.holder, reason = %d.reason, "damaged shard read around");
    if let Ok(mut list) = list.lock() {
        list.retain(|x| x.shard != d.shard);
        if list.len() >= DAMAGED_MAX {
            list.pop_front();
        }
        list.push_back(d);
    }
}

/// What a put stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The object's id: BLAKE3 of its sealed manifest.
    pub file: FileId,
    /// The object's file key (the namespace keeps it).
    pub key: FileKey,
    /// The manifest, holders filled in.
    pub manifest: Arc<Manifest>,
    /// Node losses every segment survives as placed (the minimum over segments).
    pub fault_tolerance: usize,
    /// Storage peers available when the put started.
    pub peers: usize,
}

/// Shards that rebuild a segment, and how many of a segment's shards may be lost.
pub fn need_and_parity(geometry: &Geometry) -> (usize, usize) {
    let need = usize::from(geometry.data_shards());
    let total = usize::from(geometry.total_shards());
    (need, total.saturating_sub(need))
}

/// Objects on a shard network: put, find manifests, read ranges.
pub struct Objects {
    client: Arc<dyn ShardClient>,
    wrap: WrapKey,
    layout: LayoutConfig,
    manifests: Option<ManifestStore>,
    opened: Mutex<LruCache<FileId, Arc<Manifest>>>,
    damaged: Arc<Mutex<VecDeque<DamagedShard>>>,
    probes: Arc<std::sync::atomic::AtomicUsize>,
    /// Objects the garbage collector is deleting: repair must not store shards of them again.
    retired: Mutex<std::collections::HashSet<FileId>>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("layout", &self.layout)
            .field("manifests", &self.manifests)
            .finish_non_exhaustive()
    }
}

fn join_error(e: &dyn std::fmt::Display) -> Error {
    Error::Remote {
        op: "encode",
        shard: ShardId::default(),
        reason: format!("the encoding task failed: {e}"),
    }
}

impl Objects {
    /// Objects stored through `client`, manifests sealed under `wrap`, laid out per `layout`,
    /// sealed manifests kept in `manifests` when given.
    pub fn new(
        client: Arc<dyn ShardClient>,
        wrap: WrapKey,
        layout: LayoutConfig,
        manifests: Option<ManifestStore>,
    ) -> Objects {
        let cap = NonZeroUsize::new(MANIFEST_CACHE).unwrap_or(NonZeroUsize::MIN);
        Objects {
            client,
            wrap,
            layout,
            manifests,
            opened: Mutex::new(LruCache::new(cap)),
            damaged: Arc::new(Mutex::new(VecDeque::new())),
            probes: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            retired: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Marks `file` as being deleted by the garbage collector ([`crate::gc`]): from now on
    /// [`Objects::is_retired`] says so, and repair leaves it alone (it would store its shards
    /// again).
    pub fn retire(&self, file: FileId) {
        if let Ok(mut r) = self.retired.lock() {
            r.insert(file);
        }
    }

    /// Whether the garbage collector is deleting (or has deleted) `file`.
    pub fn is_retired(&self, file: FileId) -> bool {
        self.retired.lock().is_ok_and(|r| r.contains(&file))
    }

    /// The sealed manifest of `file` if this machine keeps a copy (never the network).
    ///
    /// # Errors
    /// [`Error::Io`] other than "not found".
    pub fn local_sealed(&self, file: FileId) -> Result<Option<Vec<u8>>> {
        match &self.manifests {
            Some(store) => store.get(file),
            None => Ok(None),
        }
    }

    /// Opens a sealed manifest of this owner with the wrap key, the holder record laid over it.
    ///
    /// # Errors
    /// [`Error::WrongKey`] or a malformed-manifest error.
    pub fn open_sealed(&self, file: FileId, sealed: &[u8]) -> Result<Manifest> {
        let (mut manifest, _) = Manifest::open(sealed, &self.wrap)?;
        self.overlay(file, &mut manifest);
        Ok(manifest)
    }

    /// Forgets `file` on this machine: its local manifest copy, holder record and cached
    /// manifest (the collector's last step once its shards and copies are deleted).
    ///
    /// # Errors
    /// [`Error::Io`] removing the files.
    pub fn forget(&self, file: FileId) -> Result<()> {
        if let Ok(mut m) = self.opened.lock() {
            m.pop(&file);
        }
        match &self.manifests {
            Some(store) => store.remove(file),
            None => Ok(()),
        }
    }

    /// The shard client.
    pub fn client(&self) -> &Arc<dyn ShardClient> {
        &self.client
    }

    /// The layout settings puts use.
    pub fn layout(&self) -> &LayoutConfig {
        &self.layout
    }

    /// The damaged shards reads found and read around (rebuilt from parity), oldest first, at
    /// most [`DAMAGED_MAX`]; a shard found damaged again appears once, with its latest time.
    ///
    /// A shard is damaged when its fetch or decryption failed verification. The network's
    /// fetch may report only that no holder returned valid bytes; then a background probe (at
    /// most [`DAMAGE_PROBES`] at once) asks the network who holds it, and a recorded holder
    /// that still claims the shard after failing to return it is reported (a node that is
    /// down does not answer, so lost nodes are not reported as damage).
    pub fn damaged(&self) -> Vec<DamagedShard> {
        self.damaged
            .lock()
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn record_damage(&self, d: DamagedShard) {
        record_damage(&self.damaged, d);
    }

    /// Starts a background probe: does a recorded holder of `d.shard` still claim it after
    /// its fetch failed (`d.reason`)? Then it holds damaged bytes, and `d` is recorded.
    fn probe_damage(&self, holders: Vec<NodeId>, mut d: DamagedShard) {
        use std::sync::atomic::Ordering;
        if holders.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if self.probes.fetch_add(1, Ordering::AcqRel) >= DAMAGE_PROBES {
            self.probes.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let client = self.client.clone();
        let list = self.damaged.clone();
        let probes = self.probes.clone();
        tokio::spawn(async move {
            match client.lookup(vec![d.shard]).await {
                Ok(found) => {
                    let claims = found
                        .iter()
                        .filter(|(id, _)| *id == d.shard)
                        .flat_map(|(_, h)| h)
                        .find(|h| holders.contains(h))
                        .copied();
                    if let Some(h) = claims {
                        d.holder = Some(h);
                        d.reason = format!(
                            "its holder still lists it but returned no valid bytes ({})",
                            d.reason
                        );
                        record_damage(&list, d);
                    }
                }
                Err(e) => debug!(shard = %d.shard, error = %e, "damage probe: lookup failed"),
            }
            probes.fetch_sub(1, Ordering::AcqRel);
        });
    }

    fn remember(&self, file: FileId, manifest: Arc<Manifest>) {
        if let Ok(mut m) = self.opened.lock() {
            m.put(file, manifest);
        }
    }

    /// The whole plaintext of object `file` (small objects: versions lists, share views).
    ///
    /// # Errors
    /// As [`Objects::read_exact`].
    pub async fn read_all(
        &self,
        file: FileId,
        manifest: &Manifest,
        key: &FileKey,
        what: &'static str,
    ) -> Result<Vec<u8>> {
        self.read_exact(file, manifest, key, 0, manifest.size, what)
            .await
    }

    /// Bytes `offset..offset + len` of object `file`, all of them, in memory.
    ///
    /// # Errors
    /// The reads' errors; [`Error::Corrupt`] (`what`) when a read returns nothing or the range
    /// runs past the object.
    pub async fn read_exact(
        &self,
        file: FileId,
        manifest: &Manifest,
        key: &FileKey,
        offset: u64,
        len: u64,
        what: &'static str,
    ) -> Result<Vec<u8>> {
        let end = offset.checked_add(len).filter(|&e| e <= manifest.size);
        let Some(end) = end else {
            return Err(Error::Corrupt {
                what,
                reason: format!(
                    "{file}: {len} bytes at {offset} run past its {}",
                    manifest.size
                ),
            });
        };
        let mut plain = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        while (plain.len() as u64) < len {
            let at = offset + plain.len() as u64;
            let (start, bytes) = self
                .read_covering(file, manifest, key, at, end - at)
                .await?;
            let skip = usize::try_from(at.saturating_sub(start)).unwrap_or(usize::MAX);
            match bytes.get(skip..) {
                Some(rest) if start <= at && !rest.is_empty() => plain.extend_from_slice(rest),
                _ => {
                    return Err(Error::Corrupt {
                        what,
                        reason: format!("{file}: a read at {at} returned nothing"),
                    });
                }
            }
        }
        plain.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(plain)
    }

    /// Stores `size` bytes of `source` as a new object and returns once every shard and the
    /// manifest are acknowledged as persisted. `progress` gets the plain bytes of each stored
    /// segment.
    ///
    /// # Errors
    /// The source's read errors; the client's store errors (no peers, a shard stored nowhere);
    /// pipeline errors (a layout the config does not allow).
    ///
    /// # Cancel safety
    /// Dropping the future stops the put; shards already stored stay on their peers (no
    /// manifest refers to them).
    pub async fn put(
        &self,
        source: Arc<dyn Source>,
        size: u64,
        layout: Option<&LayoutConfig>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Stored> {
        self.put_object(
            source,
            size,
            layout.unwrap_or(&self.layout),
            None,
            progress,
            None,
        )
        .await
    }

    /// Stores a packed object: `source` holds the members' bytes back to back as `members`
    /// says (sorted, disjoint, non-empty), coded like a large file (Reed-Solomon over the
    /// peers there are, [`PACK_SHARD_SIZE`] shards) whatever the members' sizes, and its
    /// manifest lists the members. Returns as [`Objects::put`] does.
    ///
    /// # Errors
    /// As [`Objects::put`]; a malformed member list is `MalformedManifest`.
    ///
    /// # Cancel safety
    /// As [`Objects::put`].
    pub async fn put_pack(
        &self,
        source: Arc<dyn Source>,
        members: Vec<PackRange>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Stored> {
        self.put_pack_logged(source, members, progress, None).await
    }

    /// [`Objects::put_pack`] that first hands `log` the id of every shard it is about to store
    /// (each segment's shards, then the manifest's id, which its copies are stored under): a
    /// caller that records them durably can find and delete the shards of a put that never
    /// got named (a crash, a failure). An error from `log` stops the put before that store.
    ///
    /// # Errors
    /// As [`Objects::put_pack`], and `log`'s.
    ///
    /// # Cancel safety
    /// As [`Objects::put`]; every shard stored was given to `log` first.
    pub async fn put_pack_logged(
        &self,
        source: Arc<dyn Source>,
        members: Vec<PackRange>,
        progress: &(dyn Fn(u64) + Send + Sync),
        log: Option<&PutLog>,
    ) -> Result<Stored> {
        let size = members.last().and_then(PackRange::end).unwrap_or(0);
        let layout = pack_layout(&self.layout);
        self.put_object(source, size, &layout, Some(members), progress, log)
            .await
    }

    async fn put_object(
        &self,
        source: Arc<dyn Source>,
        size: u64,
        layout: &LayoutConfig,
        pack: Option<Vec<PackRange>>,
        progress: &(dyn Fn(u64) + Send + Sync),
        log: Option<&PutLog>,
    ) -> Result<Stored> {
        let peers = self.client.storage_peers().await?;
        let geometry = choose(size, peers, layout)?;
        let (_, parity) = need_and_parity(&geometry);
        let key = FileKey::random()?;
        let version = new_version_id()?;
        let seg_size = geometry.segment_size();
        info!(size, ?geometry, peers, "put");

        let mut entries = Vec::new();
        let mut tolerance = parity;
        // Segment read buffers, reused: no page-faulting and zeroing a fresh one per segment.
        let buffers: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        {
            let segments = futures::stream::iter(0..geometry.segment_count(size))
                .map(|index| {
                    let source = source.clone();
                    let key = key.clone();
                    let buffers = buffers.clone();
                    async move {
                        let offset = index * seg_size;
                        let len = usize::try_from((size - offset).min(seg_size)).map_err(|_| {
                            Error::InvalidLayout {
                                reason: "segment larger than memory".into(),
                            }
                        })?;
                        let segment = tokio::task::spawn_blocking(move || {
                            let mut data = buffers
                                .lock()
                                .ok()
                                .and_then(|mut pool| pool.pop())
                                .unwrap_or_default();
                            let encoded = read_segment(&*source, offset, len, &mut data).and_then(
                                |extents| {
                                    let stored = extents
                                        .as_ref()
                                        .map_or(len, |l| l.iter().map(|e| e.len as usize).sum());
                                    if stored == 0 {
                                        return Ok((None, extents));
                                    }
                                    let seg = encode_segment(
                                        &geometry,
                                        &key,
                                        version,
                                        index,
                                        &data[..stored],
                                    )?;
                                    Ok((Some(seg), extents))
                                },
                            );
                            if let Ok(mut pool) = buffers.lock() {
                                pool.push(data);
                            }
                            encoded
                        })
                        .await
                        .map_err(|e| join_error(&e))??;
                        let plain = len as u64;
                        let (entry, tolerance) = match segment {
                            // A hole: nothing to store, nothing to lose.
                            (None, extents) => (
                                SegmentEntry {
                                    len: len as u32,
                                    shard_len: 0,
                                    shards: Vec::new(),
                                    extents,
                                },
                                parity,
                            ),
                            (Some(segment), extents) => {
                                let mut entry = segment.entry();
                                // Segments are at most 256 MiB: the length fits.
                                entry.len = len as u32;
                                entry.extents = extents;
                                if let Some(log) = log {
                                    let ids: Vec<ShardId> =
                                        segment.shards.iter().map(|s| s.id).collect();
                                    log(&ids)?;
                                }
                                let shards = segment
                                    .shards
                                    .into_iter()
                                    .map(|s| OutShard {
                                        id: s.id,
                                        crc: s.crc,
                                        bytes: s.bytes,
                                    })
                                    .collect();
                                let stored = self.client.store_segment(shards, parity).await?;
                                for (shard, holders) in entry.shards.iter_mut().zip(stored.holders)
                                {
                                    shard.holders = holders;
                                }
                                (entry, stored.fault_tolerance)
                            }
                        };
                        progress(plain);
                        Ok::<_, Error>((entry, tolerance))
                    }
                })
                .buffered(UPLOAD_DEPTH);
            futures::pin_mut!(segments);
            while let Some(r) = segments.next().await {
                let (entry, t) = r?;
                tolerance = tolerance.min(t);
                entries.push(entry);
            }
        }
        if tolerance < parity {
            warn!(
                tolerance,
                parity, peers, "fewer peers than shards: reduced fault tolerance"
            );
        }

        let manifest = Manifest {
            version,
            size,
            geometry,
            segments: entries,
            pack,
        };
        let sealed = manifest.seal(&key, &self.wrap)?;
        // Peers may have come or gone during the upload: count them again.
        let copies = MANIFEST_COPIES.min(self.client.storage_peers().await?.max(1));
        let id = ShardId(sealed.id.0);
        if let Some(log) = log {
            log(&[id])?;
        }
        self.client
            .store_segment(
                vec![OutShard::new(id, sealed.bytes.clone()); copies],
                copies - 1,
            )
            .await?;
        if let Some(store) = &self.manifests {
            store.put(&sealed)?;
        }
        debug!(file = %sealed.id, segments = manifest.segments.len(), "manifest stored");
        let manifest = Arc::new(manifest);
        self.remember(sealed.id, manifest.clone());
        Ok(Stored {
            file: sealed.id,
            key,
            manifest,
            fault_tolerance: tolerance,
            peers,
        })
    }

    /// The manifest of `file` if this machine has it (memory or the local manifest store),
    /// never asking the network: for answers that must not wait, such as `stat`.
    pub fn manifest_local(&self, file: FileId, key: &FileKey) -> Option<Arc<Manifest>> {
        if let Some(m) = self.opened.lock().ok().and_then(|c| c.peek(&file).cloned()) {
            return Some(m);
        }
        let bytes = self.manifests.as_ref()?.get(file).ok()??;
        Manifest::open_with_key(&bytes, key).ok().map(Arc::new)
    }

    /// The manifest of `file`: from memory, the local manifest store, or the network (a
    /// broadcast lookup for its holders).
    ///
    /// # Errors
    /// [`Error::Remote`] when nobody returns it; [`Error::WrongKey`] or a malformed-manifest
    /// error when it does not open with `key`.
    pub async fn manifest(&self, file: FileId, key: &FileKey) -> Result<Arc<Manifest>> {
        if let Some(m) = self.opened(file) {
            return Ok(m);
        }
        let bytes = self.sealed(file).await?;
        let mut manifest = Manifest::open_with_key(&bytes, key)?;
        self.overlay(file, &mut manifest);
        let manifest = Arc::new(manifest);
        self.remember(file, manifest.clone());
        Ok(manifest)
    }

    fn opened(&self, file: FileId) -> Option<Arc<Manifest>> {
        self.opened
            .lock()
            .ok()
            .and_then(|mut c| c.get(&file).cloned())
    }

    /// Lays the owner's holder record of `file` over `manifest` (see [`holders`]).
    fn overlay(&self, file: FileId, manifest: &mut Manifest) {
        if let Some(store) = &self.manifests {
            match store.holders(file) {
                Ok(updates) => holders::apply(manifest, &updates),
                Err(e) => warn!(file = %file, error = %e, "holder record unreadable"),
            }
        }
    }

    /// The sealed manifest of `file`: the local copy, else fetched from the network (a
    /// broadcast lookup) and kept locally.
    ///
    /// # Errors
    /// [`Error::Remote`] when nobody returns it.
    pub async fn sealed(&self, file: FileId) -> Result<Vec<u8>> {
        if let Some(store) = &self.manifests
            && let Some(bytes) = store.get(file)?
        {
            return Ok(bytes);
        }
        let bytes = self.client.fetch(ShardId(file.0), Vec::new()).await?;
        if let Some(store) = &self.manifests {
            let sealed = SealedManifest {
                bytes: bytes.clone(),
                id: file,
            };
            if let Err(e) = store.put(&sealed) {
                warn!(file = %file, error = %e, "keeping a local manifest copy failed");
            }
        }
        Ok(bytes)
    }

    /// The manifest of one of this owner's objects and its file key, opened with the owner's
    /// wrap key: for callers that know only the file id (`defs repair FILE_ID`, a published
    /// namespace snapshot or segment). The bytes hash to `file`.
    ///
    /// # Errors
    /// As [`Objects::sealed`]; [`Error::WrongKey`] when the object is another owner's.
    pub async fn open_owned(&self, file: FileId) -> Result<(Arc<Manifest>, FileKey)> {
        let bytes = self.sealed(file).await?;
        let (mut manifest, key) = Manifest::open(&bytes, &self.wrap)?;
        self.overlay(file, &mut manifest);
        let manifest = Arc::new(manifest);
        self.remember(file, manifest.clone());
        Ok((manifest, key))
    }

    /// Records where shards of `file` are now (repair placed them, or a lookup found them):
    /// kept in the local holder record (when this `Objects` has a manifest store) and laid
    /// over the manifest in memory, so reads and durability figures use them from now on.
    ///
    /// # Errors
    /// [`Error::Io`] writing the record; the in-memory manifest is then unchanged.
    pub fn update_holders(&self, file: FileId, updates: Vec<HolderUpdate>) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        if let Some(store) = &self.manifests {
            store.add_holders(file, updates.clone())?;
        }
        if let Ok(mut cache) = self.opened.lock()
            && let Some(m) = cache.get(&file).cloned()
        {
            let mut m = (*m).clone();
            holders::apply(&mut m, &updates);
            cache.put(file, Arc::new(m));
        }
        Ok(())
    }

    /// Reads the bytes of object `file` (its opened `manifest`) covering `len` bytes at
    /// `offset`, fetching only the data shards that hold them (in parallel); a data shard that
    /// is missing or fails verification makes that segment fetch its other shards and rebuild
    /// (a shard that failed verification is then listed by [`Objects::damaged`]). Returns
    /// `(start, bytes)`: the range widened to whole data shards (whole segments for replicated
    /// layouts) and clipped at the end of the object, so the caller can cache all it paid for.
    ///
    /// # Errors
    /// [`Error::TooFewShards`] when a segment cannot be rebuilt; [`Error::WrongKey`].
    ///
    /// # Cancel safety
    /// Safe: nothing is written.
    pub async fn read_covering(
        &self,
        file: FileId,
        manifest: &Manifest,
        key: &FileKey,
        offset: u64,
        len: u64,
    ) -> Result<(u64, Vec<u8>)> {
        let reads = plan(manifest, offset, len)?;
        let Some(first) = reads.first() else {
            return Ok((offset.min(manifest.size), Vec::new()));
        };
        let seg_size = manifest.geometry.segment_size();
        // Holes need no shard: a read of holes asks the network nothing.
        let parts = futures::future::join_all(reads.iter().map(|r| async move {
            if r.data_shards.is_empty() {
                return Ok((u64::from(r.stored.start), Vec::new()));
            }
            self.read_shards(file, manifest, key, r.segment, &r.data_shards)
                .await
        }))
        .await;
        let mut start = first.segment * seg_size;
        let mut out = Vec::new();
        for (i, (read, part)) in reads.iter().zip(parts).enumerate() {
            let (rel, bytes) = part?;
            let entry = usize::try_from(read.segment)
                .ok()
                .and_then(|s| manifest.segments.get(s))
                .ok_or(Error::MalformedManifest {
                    what: "a read plan names a segment the manifest does not have",
                })?;
            if entry.extents.is_none() {
                // Dense: the stored bytes are the segment's bytes.
                if i == 0 {
                    start += rel;
                    out = bytes;
                } else {
                    out.extend_from_slice(&bytes);
                }
                continue;
            }
            let want = u64::from(read.offset_in_segment)
                ..u64::from(read.offset_in_segment) + u64::from(read.len);
            let span = entry.known_around(want, rel..rel + bytes.len() as u64);
            if i == 0 {
                start += span.start;
            }
            entry.expand_into(span, rel, &bytes, &mut out)?;
        }
        Ok((start, out))
    }

    /// The plain bytes of data shards `wanted` (consecutive) of `segment`, as
    /// `(offset in the segment, bytes)`.
    async fn read_shards(
        &self,
        file: FileId,
        manifest: &Manifest,
        key: &FileKey,
        segment: u64,
        wanted: &[u16],
    ) -> Result<(u64, Vec<u8>)> {
        let entry = usize::try_from(segment)
            .ok()
            .and_then(|s| manifest.segments.get(s))
            .ok_or(Error::MalformedManifest {
                what: "a read plan names a segment the manifest does not have",
            })?;
        let shard_len = u64::from(entry.shard_len);
        // Shards hold the segment's stored bytes (its data extents, when it has holes).
        let seg_len = u64::from(entry.stored_len());
        let replicated = manifest.geometry.data_shards() == 1;
        // From the recorded holders (`None`) or from the nodes a lookup found; never a lookup
        // per shard: a segment asks the network once, below, when its holders fall short.
        let fetch_plain = |index: u16, found: Option<Vec<NodeId>>| async move {
            let shard = entry
                .shards
                .get(usize::from(index))
                .ok_or(Error::MalformedManifest {
                    what: "a read plan names a shard the segment does not have",
                })?;
            let holders = found.unwrap_or_else(|| shard.holders.clone());
            let bytes = self.client.fetch_recorded(shard.id, holders).await?;
            decrypt_shard(manifest, key, segment, index, bytes)
        };
        // Fast path: just the covering data shards.
        let got = futures::future::join_all(wanted.iter().map(|&i| fetch_plain(i, None))).await;
        let first = u64::from(wanted.first().copied().unwrap_or(0));
        let rel = if replicated { 0 } else { first * shard_len };
        let mut plain = Vec::with_capacity(wanted.len());
        let mut failed = false;
        // Shards that failed verification: recorded once the segment is rebuilt around them.
        // `Ok(reason)`: it failed verification; `Err(error)`: unavailable, maybe damaged.
        let mut damaged: Vec<(u16, std::result::Result<String, String>)> = Vec::new();
        for (i, r) in wanted.iter().zip(got) {
            match r {
                Ok(p) => plain.push((*i, p)),
                Err(e @ Error::WrongKey { .. }) => return Err(e),
                Err(e) => {
                    debug!(segment, shard = i, error = %e, "data shard unavailable; rebuilding the segment");
                    damaged.push((*i, damage(&e).ok_or_else(|| e.to_string())));
                    failed = true;
                }
            }
        }
        if !failed {
            let end = if replicated {
                seg_len
            } else {
                ((u64::from(wanted.last().copied().unwrap_or(0)) + 1) * shard_len).min(seg_len)
            };
            // The first shard's buffer becomes the answer: one copy fewer per read.
            let want = usize::try_from(end - rel).unwrap_or(usize::MAX);
            let mut out: Vec<u8> = Vec::new();
            for (_, p) in plain {
                if out.is_empty() {
                    out = p;
                    out.truncate(want);
                    out.reserve(want - out.len());
                } else {
                    let take = (want - out.len()).min(p.len());
                    out.extend_from_slice(&p[..take]);
                }
            }
            return Ok((rel, out));
        }

        // Slow path: every other shard of the segment, then Reed-Solomon.
        let n = entry.shards.len();
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; n];
        for (i, p) in plain {
            slots[usize::from(i)] = Some(p);
        }
        let others: Vec<u16> = (0..n)
            .filter(|i| slots[*i].is_none() && !wanted.contains(&(*i as u16)))
            .map(|i| i as u16)
            .collect();
        let got = futures::future::join_all(others.iter().map(|&i| fetch_plain(i, None))).await;
        for (i, r) in others.iter().zip(got) {
            match r {
                Ok(p) => slots[usize::from(*i)] = Some(p),
                Err(e @ Error::WrongKey { .. }) => return Err(e),
                Err(e) => {
                    debug!(segment, shard = i, error = %e, "shard unavailable");
                    damaged.push((*i, damage(&e).ok_or_else(|| e.to_string())));
                }
            }
        }
        // Still short of a rebuild: one broadcast lookup for every missing shard of the segment.
        let need = usize::from(manifest.geometry.data_shards());
        if slots.iter().filter(|s| s.is_some()).count() < need {
            let missing: Vec<u16> = (0..n)
                .filter(|i| slots[*i].is_none())
                .map(|i| i as u16)
                .collect();
            let ids = missing
                .iter()
                .filter_map(|&i| entry.shards.get(usize::from(i)).map(|s| s.id))
                .collect();
            debug!(
                segment,
                missing = missing.len(),
                "broadcast lookup for missing shards"
            );
            let found = self.client.lookup(ids).await.unwrap_or_else(|e| {
                debug!(segment, error = %e, "lookup failed");
                Vec::new()
            });
            let fetches = missing.iter().filter_map(|&i| {
                let id = entry.shards.get(usize::from(i))?.id;
                let (_, nodes) = found.iter().find(|(f, n)| *f == id && !n.is_empty())?;
                Some(async move { (i, fetch_plain(i, Some(nodes.clone())).await) })
            });
            for (i, r) in futures::future::join_all(fetches).await {
                match r {
                    Ok(p) => slots[usize::from(i)] = Some(p),
                    Err(e @ Error::WrongKey { .. }) => return Err(e),
                    Err(e) => debug!(segment, shard = i, error = %e, "shard unavailable"),
                }
            }
        }
        let m = manifest.clone();
        let whole = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            assemble_into(&m, segment, slots, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| join_error(&e))??;
        let at = SystemTime::now();
        for (index, outcome) in damaged {
            if let Some(shard) = entry.shards.get(usize::from(index)) {
                let mut d = DamagedShard {
                    file,
                    segment,
                    index,
                    shard: shard.id,
                    holder: shard.holders.first().copied(),
                    reason: String::new(),
                    at,
                };
                match outcome {
                    Ok(reason) => {
                        d.reason = reason;
                        self.record_damage(d);
                    }
                    Err(error) => {
                        d.reason = error;
                        self.probe_damage(shard.holders.clone(), d);
                    }
                }
            }
        }
        if replicated {
            return Ok((0, whole));
        }
        let end = ((u64::from(wanted.last().copied().unwrap_or(0)) + 1) * shard_len).min(seg_len);
        let a = usize::try_from(rel).unwrap_or(0).min(whole.len());
        let b = usize::try_from(end).unwrap_or(0).clamp(a, whole.len());
        Ok((rel, whole[a..b].to_vec()))
    }
}

pub mod holders;
mod manifest_store;
mod source;
#[cfg(test)]
mod tests;
