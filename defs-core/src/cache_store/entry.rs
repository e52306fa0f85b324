//! The cache index's rows: an inode's [`Entry`] (the [`ContentTag`] of the content it caches,
//! its dirty flag, last use and the byte ranges present, as a [`RangeSet`]) and its byte
//! encoding in `index.redb` (layout in docs/format.md, "Cache index").

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::types::FileId;

/// Version of the index entry encoding.
pub(super) const ENTRY_VERSION: u8 = 1;
/// Fixed part of an entry: version 1, tag 32, flags 1, last use 8, range count 4.
pub(super) const ENTRY_FIXED: usize = 46;
/// The most disjoint ranges one inode's entry may record (16 bytes each: 16 MiB at most).
/// Ranges coalesce, so only pathological access patterns get near it.
pub const MAX_RANGES: usize = 1 << 20;

/// Which stored content a cache entry holds: normally the [`FileId`] of the content's sealed
/// manifest. [`ContentTag::NONE`] for content that has never been stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ContentTag(pub [u8; 32]);

impl ContentTag {
    /// No stored content (a new file, written locally only).
    pub const NONE: ContentTag = ContentTag([0; 32]);
}

impl From<FileId> for ContentTag {
    fn from(id: FileId) -> Self {
        ContentTag(id.0)
    }
}

/// A set of disjoint, non-adjacent half-open byte ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RangeSet {
    /// start → end.
    pub(super) map: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub(super) fn bytes(&self) -> u64 {
        self.map.iter().map(|(s, e)| e - s).sum()
    }

    /// Adds [start, end); returns how many bytes were new.
    pub(super) fn insert(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let touching: Vec<(u64, u64)> = self
            .map
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        let (mut s, mut e, mut had) = (start, end, 0);
        for (a, b) in touching {
            self.map.remove(&a);
            had += b - a;
            s = s.min(a);
            e = e.max(b);
        }
        self.map.insert(s, e);
        (e - s) - had
    }

    /// The parts of [start, end) not in the set.
    pub(super) fn missing(&self, start: u64, end: u64) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let mut cur = start;
        let first = self
            .map
            .range(..=start)
            .next_back()
            .filter(|(_, e)| **e > start);
        let rest = self.map.range((
            std::ops::Bound::Excluded(start),
            std::ops::Bound::Excluded(end),
        ));
        for (a, b) in first.into_iter().chain(rest) {
            if *a > cur {
                out.push(cur..*a);
            }
            cur = cur.max(*b);
            if cur >= end {
                break;
            }
        }
        if cur < end {
            out.push(cur..end);
        }
        out
    }

    /// Drops everything at or after `size`; returns the bytes dropped.
    pub(super) fn clip(&mut self, size: u64) -> u64 {
        let before = self.bytes();
        let above: Vec<u64> = self.map.range(size..).map(|(s, _)| *s).collect();
        for s in above {
            self.map.remove(&s);
        }
        if let Some((_, e)) = self.map.range_mut(..size).next_back()
            && *e > size
        {
            *e = size;
        }
        before - self.bytes()
    }

    pub(super) fn end(&self) -> u64 {
        self.map.values().next_back().copied().unwrap_or(0)
    }
}

/// One inode's cache entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) tag: ContentTag,
    pub(super) dirty: bool,
    pub(super) last_used: u64,
    pub(super) ranges: RangeSet,
    /// Bytes of `ranges` (kept to avoid recounting).
    pub(super) bytes: u64,
    /// Changed since the last index commit.
    pub(super) pending: bool,
    /// Counts the changes that made it dirty (writes, truncates, marks), in memory only: what
    /// [`CacheStore::mark_clean`](super::CacheStore::mark_clean) checks so that a change racing an upload's end stays pinned.
    pub(super) changes: u64,
}

impl Entry {
    pub(super) fn new(tag: ContentTag) -> Entry {
        Entry {
            tag,
            dirty: false,
            last_used: now_secs(),
            ranges: RangeSet::default(),
            bytes: 0,
            pending: true,
            changes: 0,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENTRY_FIXED + 16 * self.ranges.map.len());
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&self.tag.0);
        out.push(u8::from(self.dirty));
        out.extend_from_slice(&self.last_used.to_le_bytes());
        let count = u32::try_from(self.ranges.map.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for (s, e) in &self.ranges.map {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Entry> {
        if bytes.len() < ENTRY_FIXED || bytes[0] != ENTRY_VERSION {
            return None;
        }
        let tag = ContentTag(bytes[1..33].try_into().ok()?);
        let flags = bytes[33];
        if flags > 1 {
            return None;
        }
        let last_used = u64::from_le_bytes(bytes[34..42].try_into().ok()?);
        let count = usize::try_from(u32::from_le_bytes(bytes[42..46].try_into().ok()?)).ok()?;
        if count > MAX_RANGES || bytes.len() != ENTRY_FIXED + 16 * count {
            return None;
        }
        let mut ranges = RangeSet::default();
        let mut prev_end = None;
        for chunk in bytes[ENTRY_FIXED..].chunks_exact(16) {
            let s = u64::from_le_bytes(chunk[..8].try_into().ok()?);
            let e = u64::from_le_bytes(chunk[8..].try_into().ok()?);
            // Sorted, disjoint, non-adjacent, non-empty: exactly what encode writes.
            if s >= e || prev_end.is_some_and(|p| s <= p) {
                return None;
            }
            prev_end = Some(e);
            ranges.map.insert(s, e);
        }
        let bytes = ranges.bytes();
        Some(Entry {
            tag,
            dirty: flags == 1,
            last_used,
            ranges,
            bytes,
            pending: false,
            changes: 0,
        })
    }
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
