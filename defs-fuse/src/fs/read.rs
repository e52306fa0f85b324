//! Lazy range reads: the bytes of a stored file that are not in the cache are fetched from the
//! network through defs-core's [`Objects`](defs_core::object::Objects), written into the cache file, and answered.
//!
//! ```text
//!  Fs::read ──▶ cache.read ── hit ──▶ answer, then read-ahead (sequential handles only)
//!                   │ miss
//!                   ▼
//!  fetch_range: cache.missing → chunks (data-shard aligned, one segment each)
//!       ├─ chunk already in flight (another reader, a read-ahead) ──▶ wait on that flight
//!       └─ else a new flight: a task running Objects::read_covering → cache.fill(tag)
//!  answer from the cache (or from the fetched bytes when the cache refused them)
//! ```
//!
//! - **Only what is read**: a read fetches the data shards that cover its missing bytes, never
//!   the whole file, so `file`, thumbnailers and `head` of many files stay cheap.
//! - **Shared fetches**: every fetch is a flight in `Reads::inflight`, keyed by inode and file
//!   byte range; a reader whose bytes are already being fetched waits on that flight instead of
//!   fetching them again. A flight runs in its own task and removes itself when done, so a
//!   reader that gives up (an interrupted read) never strands the others.
//! - **Read-ahead**: a handle whose reads continue where the last one ended is sequential; it
//!   prefetches a window of segments that starts at one and doubles up to
//!   [`READAHEAD_MAX_SEGMENTS`] / [`READAHEAD_MAX_BYTES`]. A seek resets the window and stops
//!   scheduling (flights already started finish: another reader may be waiting on them).
//! - **No locks across the network**: the per-inode write lock is never held while waiting on
//!   a fetch, so `stat`, `readdir` and reads of other files go on during a slow one.
//! - **First change of an uncached file**: a write or truncate of a stored file whose bytes are
//!   not all cached fetches them first ([`Fs::fetch_before_change`]): the cache file is the
//!   source of the next upload, and must hold the whole file once it is dirty.

use std::ops::Range;
use std::sync::atomic::Ordering;

use defs_core::cache_store::ContentTag;
use defs_core::namespace::Content;
use defs_core::pipeline::FileKey;
use defs_core::sync::Arc;
use defs_core::types::{FileId, InodeNo};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tracing::{debug, info, warn};

use super::{Error, FileHandle, Fs, Result, lock};
use flights::{Fetched, Flight, Piece, subtract};
pub use flights::{READAHEAD_MAX_BYTES, READAHEAD_MAX_SEGMENTS, READAHEAD_TASKS, SEQUENTIAL_SLACK};
pub(crate) use flights::{Reads, StoredContent};

mod flights;

/// Passes over a read's missing bytes before giving up (the cache may evict a freshly filled
/// range under pressure before it is read back).
const READ_ATTEMPTS: usize = 3;

impl Fs {
    /// The stored content of `ino` with its manifest, or `None` when the file has never been
    /// stored or the mount has no network.
    pub(super) async fn stored_content(&self, ino: InodeNo) -> Result<Option<Arc<StoredContent>>> {
        let Some(objects) = &self.inner.objects else {
            return Ok(None);
        };
        let Content::Stored {
            file,
            key,
            offset,
            len,
        } = self.content_of(ino)?
        else {
            return Ok(None);
        };
        let key = FileKey::from_bytes(key);
        let manifest = objects
            .manifest(file, &key)
            .await
            .map_err(|e| Error::Fetch {
                ino,
                file,
                offset: 0,
                end: len,
                reason: format!("its manifest: {e}"),
            })?;
        // A record whose range its object cannot supply is this file's error alone: reading
        // it would hand out other files' bytes or run off the object.
        manifest
            .check_range(offset, len)
            .map_err(|e| Error::Fetch {
                ino,
                file,
                offset: 0,
                end: len,
                reason: e.to_string(),
            })?;
        Ok(Some(Arc::new(StoredContent {
            file,
            key,
            offset,
            len,
            manifest,
        })))
    }

    /// Answers a read of `len` bytes at `offset` (within the file) that the cache could not:
    /// fetches the missing bytes and answers from the cache, or from the fetched bytes when the
    /// cache had no room for them.
    pub(super) async fn read_uncached(
        &self,
        ino: InodeNo,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let not_cached = || Error::NotCached {
            ino,
            offset,
            end: offset + len,
        };
        let Some(stored) = self.stored_content(ino).await? else {
            return Err(not_cached());
        };
        let cache = &self.inner.cache;
        let end = offset + len;
        if cache
            .missing(ino, offset, len)
            .iter()
            .any(|r| r.end > stored.len)
        {
            // Bytes past the stored length that the cache does not hold: nowhere to get them.
            return Err(not_cached());
        }
        let mut pieces = Vec::new();
        for _ in 0..READ_ATTEMPTS {
            pieces.extend(self.fetch_range(ino, &stored, offset..end).await?);
            if let Some(data) = cache.read(ino, offset, len)? {
                return Ok(data);
            }
            if let Some(data) = self.assemble(ino, offset..end, &pieces)? {
                return Ok(data);
            }
        }
        Err(not_cached())
    }

    /// The bytes of `range`: cached bytes from the cache (they may be newer, dirty data), the
    /// rest from `pieces`. `None` when neither has some byte.
    fn assemble(
        &self,
        ino: InodeNo,
        range: Range<u64>,
        pieces: &[Arc<Piece>],
    ) -> Result<Option<Vec<u8>>> {
        let cache = &self.inner.cache;
        let len = range.end - range.start;
        let mut out = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let missing = cache.missing(ino, range.start, len);
        let mut present = vec![range.clone()];
        for m in &missing {
            present = subtract(present, m);
        }
        for p in present {
            let Some(bytes) = cache.read(ino, p.start, p.end - p.start)? else {
                return Ok(None);
            };
            let at = (p.start - range.start) as usize;
            out[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        for m in missing {
            let mut need = vec![m];
            for piece in pieces {
                let pr = piece.range();
                for r in &need {
                    let (a, b) = (r.start.max(pr.start), r.end.min(pr.end));
                    if a < b {
                        let src = &piece.bytes[(a - pr.start) as usize..(b - pr.start) as usize];
                        let at = (a - range.start) as usize;
                        out[at..at + src.len()].copy_from_slice(src);
                    }
                }
                need = subtract(need, &pr);
            }
            if !need.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    /// Fetches the bytes of `range` (file offsets) that the cache misses, sharing flights
    /// already under way, and returns what the flights brought (also filled into the cache).
    pub(super) async fn fetch_range(
        &self,
        ino: InodeNo,
        stored: &Arc<StoredContent>,
        range: Range<u64>,
    ) -> Result<Vec<Arc<Piece>>> {
        let range = range.start..range.end.min(stored.len);
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let mut waits: Vec<(u64, Range<u64>, Shared<BoxFuture<'static, Fetched>>)> = Vec::new();
        let mut holes: Vec<Arc<Piece>> = Vec::new();
        {
            let mut map = lock(&self.inner.reads.inflight);
            // Under the flight map's lock: a flight fills the cache before it leaves the map, so
            // every missing byte seen here is either still missing or in a listed flight.
            let missing = self
                .inner
                .cache
                .missing(ino, range.start, range.end - range.start);
            if missing.is_empty() {
                return Ok(Vec::new());
            }
            let flights = map.entry(ino).or_default();
            for m in missing {
                for chunk in stored.chunks(m) {
                    if stored.is_hole(&chunk) {
                        // Zeros known from the manifest: cached as a hole, nothing fetched.
                        self.fill_hole(ino, stored, &chunk, &mut holes);
                        continue;
                    }
                    let mut rest = vec![chunk];
                    for f in flights.iter() {
                        let cut = subtract(rest.clone(), &f.range);
                        if cut != rest {
                            if !waits.iter().any(|(id, ..)| *id == f.id) {
                                waits.push((f.id, f.range.clone(), f.done.clone()));
                            }
                            rest = cut;
                        }
                    }
                    for r in rest {
                        let flight = self.start_flight(ino, stored.clone(), r);
                        waits.push((flight.id, flight.range.clone(), flight.done.clone()));
                        flights.push(flight);
                    }
                }
            }
        }
        let got = futures::future::join_all(
            waits
                .into_iter()
                .map(|(_, r, w)| async move { (r, w.await) }),
        )
        .await;
        let mut pieces = holes;
        for (r, result) in got {
            match result {
                Ok(p) => pieces.push(p),
                Err(reason) => {
                    return Err(Error::Fetch {
                        ino,
                        file: stored.file,
                        offset: r.start,
                        end: r.end,
                        reason: reason.to_string(),
                    });
                }
            }
        }
        Ok(pieces)
    }

    /// Caches `range` of `ino`, all hole in `stored`, as a hole of the cache file; when the
    /// cache has no room (or the content changed), the zeros go to `pieces` instead.
    fn fill_hole(
        &self,
        ino: InodeNo,
        stored: &StoredContent,
        range: &Range<u64>,
        pieces: &mut Vec<Arc<Piece>>,
    ) {
        let current = matches!(
            self.content_of(ino),
            Ok(Content::Stored { file, .. }) if file == stored.file
        );
        let tag = ContentTag::from(stored.file);
        let len = range.end - range.start;
        let filled = current
            && match self.inner.cache.fill_hole(ino, tag, range.start, len) {
                Ok(done) => done,
                Err(e) => {
                    warn!(%ino, error = %e, "caching a hole failed");
                    false
                }
            };
        if !filled {
            pieces.push(Arc::new(Piece {
                start: range.start,
                bytes: vec![0; usize::try_from(len).unwrap_or(0)],
            }));
        }
    }

    /// Starts a task fetching `range` of `ino` into the cache; the caller registers it.
    fn start_flight(&self, ino: InodeNo, stored: Arc<StoredContent>, range: Range<u64>) -> Flight {
        let id = self.inner.reads.next_flight.fetch_add(1, Ordering::Relaxed);
        let fs = self.clone();
        let r = range.clone();
        let task = tokio::spawn(async move {
            let result = fs.fetch_chunk(ino, &stored, r).await;
            let mut map = lock(&fs.inner.reads.inflight);
            if let Some(flights) = map.get_mut(&ino) {
                flights.retain(|f| f.id != id);
                if flights.is_empty() {
                    map.remove(&ino);
                }
            }
            result
        });
        let done = async move {
            match task.await {
                Ok(r) => r,
                Err(e) => Err(Arc::from(format!("the fetch task failed: {e}"))),
            }
        }
        .boxed()
        .shared();
        Flight { id, range, done }
    }

    /// One flight: reads `range` of the file from the network and fills the cache with it.
    async fn fetch_chunk(
        &self,
        ino: InodeNo,
        stored: &StoredContent,
        range: Range<u64>,
    ) -> Fetched {
        let objects = self
            .inner
            .objects
            .as_ref()
            .ok_or_else(|| Arc::<str>::from("no network is configured"))?;
        let (start, bytes) = objects
            .read_covering(
                stored.file,
                &stored.manifest,
                &stored.key,
                stored.offset + range.start,
                range.end - range.start,
            )
            .await
            .map_err(|e| Arc::<str>::from(e.to_string()))?;
        // Keep only this file's part of the object.
        let end = start + bytes.len() as u64;
        let (a, b) = (
            start.max(stored.offset),
            end.min(stored.offset + stored.len),
        );
        let mut bytes = bytes;
        if a < b {
            bytes.truncate((b - start) as usize);
            bytes.drain(..(a - start) as usize);
        } else {
            bytes.clear();
        }
        let piece = Piece {
            start: a.saturating_sub(stored.offset),
            bytes,
        };
        debug!(%ino, file = %stored.file, start = piece.start, len = piece.bytes.len(), "fetched");
        // Cache it only if the file still has this content (an upload may have replaced it).
        let current = matches!(
            self.content_of(ino),
            Ok(Content::Stored { file, .. }) if file == stored.file
        );
        let piece = Arc::new(piece);
        if current && !piece.bytes.is_empty() {
            // Megabytes of file writes: on a blocking thread, not on the runtime.
            let (fs, p) = (self.clone(), piece.clone());
            let tag = ContentTag::from(stored.file);
            let filled = tokio::task::spawn_blocking(move || {
                fs.inner.cache.fill(ino, tag, p.start, &p.bytes)
            })
            .await;
            match filled {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => debug!(%ino, "no room in the cache: served from memory"),
                Ok(Err(e)) => warn!(%ino, error = %e, "caching fetched bytes failed"),
                Err(e) => warn!(%ino, error = %e, "caching fetched bytes: task failed"),
            }
        }
        Ok(piece)
    }

    /// Bookkeeping after a read of `offset..end` through `fh`: a sequential handle prefetches
    /// the next window in the background; a seek stops it.
    pub(super) fn after_read(
        &self,
        ino: InodeNo,
        fh: FileHandle,
        offset: u64,
        end: u64,
        size: u64,
    ) {
        if self.inner.objects.is_none() {
            return;
        }
        let window = {
            let mut handles = lock(&self.inner.reads.handles);
            let st = handles.entry(fh).or_default();
            let sequential = st
                .next
                .is_some_and(|n| offset.abs_diff(n) <= SEQUENTIAL_SLACK);
            st.next = Some(end);
            if !sequential {
                if st.window != 0 {
                    debug!(%ino, %fh, offset, "seek: read-ahead stops");
                }
                st.window = 0;
                st.ahead = 0;
                return;
            }
            st.window = (st.window * 2).clamp(1, READAHEAD_MAX_SEGMENTS);
            st.window
        };
        if end >= size {
            return;
        }
        let horizon = READAHEAD_MAX_BYTES.min(size - end);
        if self.inner.cache.missing(ino, end, horizon).is_empty() {
            return;
        }
        let Ok(permit) = self.inner.reads.readahead.clone().try_acquire_owned() else {
            return;
        };
        let fs = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stored = match fs.stored_content(ino).await {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => {
                    debug!(%ino, error = %e, "read-ahead: no manifest");
                    return;
                }
            };
            let seg = stored.manifest.geometry.segment_size().max(1);
            let bytes = (window * seg).min(READAHEAD_MAX_BYTES).max(seg);
            let target = end.saturating_add(bytes).min(size).min(stored.len);
            let from = {
                let mut handles = lock(&fs.inner.reads.handles);
                let Some(st) = handles.get_mut(&fh) else {
                    return;
                };
                // A seek since, or enough already ahead of the reader.
                if st.window == 0 || st.ahead >= end + bytes / 2 {
                    return;
                }
                let from = st.ahead.max(end);
                if target <= from {
                    return;
                }
                st.ahead = target;
                from
            };
            debug!(%ino, %fh, from, to = target, window, "read-ahead");
            if let Err(e) = fs.fetch_range(ino, &stored, from..target).await {
                debug!(%ino, error = %e, "read-ahead failed; the read will retry");
            }
        });
    }

    /// Forgets a released handle's read-ahead state.
    pub(super) fn forget_reads(&self, fh: FileHandle) {
        lock(&self.inner.reads.handles).remove(&fh);
    }

    /// Before the first change of a file that is not dirty: fetches whatever of its stored
    /// bytes up to `upto` the cache lacks, because once it is dirty the cache file is the
    /// whole file (the next upload reads it from there). Returns the object and the stored
    /// length that must stay cached until the change lands (`None` when nothing is stored).
    ///
    /// # Errors
    /// [`Error::Fetch`] when the bytes cannot be fetched or do not fit in the cache.
    pub(super) async fn fetch_before_change(
        &self,
        ino: InodeNo,
        upto: u64,
    ) -> Result<Option<(FileId, u64)>> {
        if self.inner.objects.is_none() || self.inner.cache.is_dirty(ino) {
            return Ok(None);
        }
        let Some(stored) = self.stored_content(ino).await? else {
            return Ok(None);
        };
        let need = upto.min(stored.len);
        if self.inner.cache.missing(ino, 0, need).is_empty() {
            return Ok(Some((stored.file, need)));
        }
        info!(%ino, file = %stored.file, bytes = need, "fetching a stored file before its first change");
        self.fetch_range(ino, &stored, 0..need).await?;
        self.check_cached(ino, stored.file, need)?;
        Ok(Some((stored.file, need)))
    }

    /// Errs unless bytes `0..need` of `ino` are all cached.
    pub(super) fn check_cached(&self, ino: InodeNo, file: FileId, need: u64) -> Result<()> {
        match self.inner.cache.missing(ino, 0, need).first() {
            None => Ok(()),
            Some(r) => Err(Error::Fetch {
                ino,
                file,
                offset: r.start,
                end: r.end,
                reason: "the file does not fit in the cache, so it cannot be changed".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subtract;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn subtract_cuts_ranges() {
        assert_eq!(subtract(vec![0..10], &(3..5)), vec![0..3, 5..10]);
        assert_eq!(
            subtract(vec![0..10], &(0..10)),
            Vec::<std::ops::Range<u64>>::new()
        );
        assert_eq!(subtract(vec![0..4, 6..10], &(2..8)), vec![0..2, 8..10]);
        assert_eq!(subtract(vec![0..4], &(4..8)), vec![0..4]);
    }
}
