//! The read path's shared state: the fetches in flight (keyed by inode and byte range, shared
//! by every reader waiting on them), each handle's read-ahead window, the read-ahead limits,
//! and a stored file's content with the data-shard-aligned chunks a fetch asks for.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::AtomicU64;

use defs_core::manifest::Manifest;
use defs_core::pipeline::FileKey;
use defs_core::sync::{Arc, Mutex};
use defs_core::types::{FileId, InodeNo};
use futures::future::{BoxFuture, Shared};

use crate::fs::types::FileHandle;

/// Read-ahead window cap, in segments of the file's geometry: 8 keeps every peer of a 10+4
/// layout busy without holding more than a few segments in flight per reader.
pub const READAHEAD_MAX_SEGMENTS: u64 = 8;

/// Read-ahead window cap in bytes (64 MiB), whatever the segment size: bounds the memory one
/// sequential reader can hold in flights.
pub const READAHEAD_MAX_BYTES: u64 = 64 << 20;

/// Read-ahead tasks running at once over the whole mount. Each holds at most one window of
/// bytes in flight, so read-ahead memory is at most this × [`READAHEAD_MAX_BYTES`]; a read
/// that finds none free simply does not prefetch.
pub const READAHEAD_TASKS: usize = 2;

/// How far (bytes) a read may start from where the handle's last read ended and still count as
/// sequential: the kernel's own read-ahead sends requests of up to 128 KiB, several at a time,
/// which may arrive slightly out of order.
pub const SEQUENTIAL_SLACK: u64 = 1 << 20;

/// Bytes of a file fetched from the network, at file offset `start`.
#[derive(Debug)]
pub(crate) struct Piece {
    pub(crate) start: u64,
    pub(crate) bytes: Vec<u8>,
}

impl Piece {
    pub(crate) fn range(&self) -> Range<u64> {
        self.start..self.start + self.bytes.len() as u64
    }
}

/// A flight's outcome (the error as text: it is shared by every waiter).
pub(crate) type Fetched = std::result::Result<Arc<Piece>, Arc<str>>;

#[derive(Debug)]
pub(crate) struct Flight {
    pub(crate) id: u64,
    pub(crate) range: Range<u64>,
    pub(crate) done: Shared<BoxFuture<'static, Fetched>>,
}

/// Where a handle's reads are, for read-ahead.
#[derive(Debug, Default)]
pub(crate) struct Sequential {
    /// Where the last read ended.
    pub(crate) next: Option<u64>,
    /// The read-ahead window in segments (0: not sequential, nothing is scheduled).
    pub(crate) window: u64,
    /// Prefetched (or being prefetched) up to this file offset.
    pub(crate) ahead: u64,
}

/// The read path's shared state (part of the core's `Inner`).
#[derive(Debug)]
pub(crate) struct Reads {
    pub(crate) inflight: Mutex<HashMap<InodeNo, Vec<Flight>>>,
    pub(crate) next_flight: AtomicU64,
    pub(crate) handles: Mutex<HashMap<FileHandle, Sequential>>,
    pub(crate) readahead: Arc<tokio::sync::Semaphore>,
}

impl Default for Reads {
    fn default() -> Self {
        Reads {
            inflight: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(1),
            handles: Mutex::new(HashMap::new()),
            readahead: Arc::new(tokio::sync::Semaphore::new(READAHEAD_TASKS)),
        }
    }
}

/// A file's stored content with its opened manifest.
#[derive(Debug)]
pub(crate) struct StoredContent {
    pub(crate) file: FileId,
    pub(crate) key: FileKey,
    /// Where the file's bytes start in the object (packed objects hold several files).
    pub(crate) offset: u64,
    /// The file's stored length.
    pub(crate) len: u64,
    pub(crate) manifest: Arc<Manifest>,
}

/// `ranges` minus `cut`.
pub(crate) fn subtract(ranges: Vec<Range<u64>>, cut: &Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges {
        if cut.end <= r.start || cut.start >= r.end {
            out.push(r);
            continue;
        }
        if r.start < cut.start {
            out.push(r.start..cut.start);
        }
        if cut.end < r.end {
            out.push(cut.end..r.end);
        }
    }
    out
}

impl StoredContent {
    /// Whether `range` (file offsets) is all hole in the stored content: zeros, no shard.
    pub(crate) fn is_hole(&self, range: &Range<u64>) -> bool {
        self.manifest
            .next_data(self.offset + range.start, self.offset + range.end)
            .is_none()
    }

    /// `range` (file offsets, within the stored length) split at segment boundaries and widened
    /// to whole data shards: the units the network returns, so flights never overlap partly.
    pub(crate) fn chunks(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let m = &self.manifest;
        let seg = m.geometry.segment_size().max(1);
        let (lo, hi) = (self.offset, self.offset + self.len);
        let end = self.offset + range.end;
        let mut x = self.offset + range.start;
        let mut out = Vec::new();
        while x < end {
            let s = x / seg;
            let entry = usize::try_from(s).ok().and_then(|i| m.segments.get(i));
            let Some(entry) = entry else {
                // A manifest shorter than its size: read_covering reports it.
                out.push(x..end);
                break;
            };
            let seg_start = s * seg;
            let seg_end = seg_start + u64::from(entry.len);
            if seg_end <= x {
                out.push(x..end);
                break;
            }
            let unit = u64::from(entry.shard_len).max(1);
            let a = seg_start + (x - seg_start) / unit * unit;
            let b = seg_start + ((end.min(seg_end) - seg_start).div_ceil(unit) * unit);
            out.push(a..b.min(seg_end));
            x = seg_end;
        }
        out.into_iter()
            .filter_map(|r| {
                let (a, b) = (r.start.max(lo), r.end.min(hi));
                (a < b).then(|| a - self.offset..b - self.offset)
            })
            .collect()
    }
}
