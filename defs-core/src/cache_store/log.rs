//! The cache op log's records ([`CacheRec`]): one operation's change to one inode's entry, its
//! encoding in `index.oplog` and how replay applies it to the entries loaded at open. Records
//! and replay rules: docs/format.md, "Cache op log".

use std::collections::HashMap;

use super::entry::{ContentTag, Entry};

/// The largest cache log payload (a record with a tag is 41 bytes).
pub(super) const MAX_LOG_RECORD: u32 = 64;

/// One operation's change to the entries, as logged: each operation appends at most one
/// record per inode, so replay never sees half an operation. Replay applies them in order;
/// `create` replaces any entry with a new empty one first, and every other part does nothing to
/// a missing entry (the original only logs it for an existing one). Each record is idempotent
/// and of a form (replace the entry, set a flag, set a tag, add a range, cut the ranges at a
/// size) for which applying the log again to a state that already includes a prefix of it gives
/// the same result, so entries committed by `sync(ino)` since the last checkpoint need no LSN of
/// their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CacheRec {
    /// Bytes [start, end) are present (a write or a fill); `dirty` pins the entry; `create`
    /// starts a new entry with that tag first.
    Add {
        ino: u64,
        start: u64,
        end: u64,
        dirty: bool,
        create: Option<ContentTag>,
    },
    /// truncate: bytes at or after `size` are gone, the entry is dirty, and when `size` is past
    /// `old_end` (the end of the cached data then) [old_end, size) is present (zeros).
    Truncate {
        ino: u64,
        size: u64,
        old_end: u64,
        create: bool,
    },
    /// The entry is gone.
    Drop { ino: u64 },
    /// The entry is pinned dirty (`create`: a new one).
    MarkDirty { ino: u64, create: bool },
    /// The entry is clean and caches `tag`.
    MarkClean { ino: u64, tag: ContentTag },
    /// The entry caches `tag` (an empty placeholder adopting a tag).
    Adopt { ino: u64, tag: ContentTag },
}

impl CacheRec {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(MAX_LOG_RECORD as usize);
        let (tag, ino) = match *self {
            CacheRec::Add { ino, .. } => (1, ino),
            CacheRec::Truncate { ino, .. } => (2, ino),
            CacheRec::Drop { ino } => (3, ino),
            CacheRec::MarkDirty { ino, .. } => (4, ino),
            CacheRec::MarkClean { ino, .. } => (5, ino),
            CacheRec::Adopt { ino, .. } => (6, ino),
        };
        w.push(tag);
        w.extend_from_slice(&ino.to_le_bytes());
        match *self {
            CacheRec::Add {
                start,
                end,
                dirty,
                create,
                ..
            } => {
                w.extend_from_slice(&start.to_le_bytes());
                w.extend_from_slice(&end.to_le_bytes());
                w.push(u8::from(dirty) | u8::from(create.is_some()) << 1);
                w.extend_from_slice(&create.unwrap_or(ContentTag::NONE).0);
            }
            CacheRec::Truncate {
                size,
                old_end,
                create,
                ..
            } => {
                w.extend_from_slice(&size.to_le_bytes());
                w.extend_from_slice(&old_end.to_le_bytes());
                w.push(u8::from(create));
            }
            CacheRec::MarkClean { tag, .. } | CacheRec::Adopt { tag, .. } => {
                w.extend_from_slice(&tag.0);
            }
            CacheRec::MarkDirty { create, .. } => w.push(u8::from(create)),
            CacheRec::Drop { .. } => {}
        }
        w
    }

    pub(super) fn decode(b: &[u8]) -> Option<CacheRec> {
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
        };
        let tag_at = |i: usize| -> Option<ContentTag> {
            Some(ContentTag(b.get(i..i + 32)?.try_into().ok()?))
        };
        let flag_at = |i: usize| -> Option<bool> {
            match *b.get(i)? {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            }
        };
        let ino = u64_at(1)?;
        let (rec, len) = match *b.first()? {
            1 => {
                let (start, end, flags) = (u64_at(9)?, u64_at(17)?, *b.get(25)?);
                let tag = tag_at(26)?;
                if start > end || flags > 3 || (flags & 2 == 0 && tag != ContentTag::NONE) {
                    return None;
                }
                let rec = CacheRec::Add {
                    ino,
                    start,
                    end,
                    dirty: flags & 1 != 0,
                    create: (flags & 2 != 0).then_some(tag),
                };
                (rec, 58)
            }
            2 => {
                let rec = CacheRec::Truncate {
                    ino,
                    size: u64_at(9)?,
                    old_end: u64_at(17)?,
                    create: flag_at(25)?,
                };
                (rec, 26)
            }
            3 => (CacheRec::Drop { ino }, 9),
            4 => (
                CacheRec::MarkDirty {
                    ino,
                    create: flag_at(9)?,
                },
                10,
            ),
            5 => (
                CacheRec::MarkClean {
                    ino,
                    tag: tag_at(9)?,
                },
                41,
            ),
            6 => (
                CacheRec::Adopt {
                    ino,
                    tag: tag_at(9)?,
                },
                41,
            ),
            _ => return None,
        };
        (b.len() == len).then_some(rec)
    }

    /// Applies the record to the entries loaded at open; returns the inode it dropped, if any.
    pub(super) fn apply(&self, entries: &mut HashMap<u64, Entry>) -> Option<u64> {
        let created = |entries: &mut HashMap<u64, Entry>, ino: u64, tag: Option<ContentTag>| {
            if let Some(tag) = tag {
                entries.insert(ino, Entry::new(tag));
            }
        };
        match *self {
            CacheRec::Drop { ino } => {
                entries.remove(&ino);
                return Some(ino);
            }
            CacheRec::Add {
                ino,
                start,
                end,
                dirty,
                create,
            } => {
                created(entries, ino, create);
                if let Some(e) = entries.get_mut(&ino) {
                    e.ranges.insert(start, end);
                    e.dirty |= dirty;
                    e.pending = true;
                }
            }
            CacheRec::Truncate {
                ino,
                size,
                old_end,
                create,
            } => {
                created(entries, ino, create.then_some(ContentTag::NONE));
                if let Some(e) = entries.get_mut(&ino) {
                    e.ranges.clip(size);
                    if size > old_end {
                        e.ranges.insert(old_end, size);
                    }
                    e.dirty = true;
                    e.pending = true;
                }
            }
            CacheRec::MarkDirty { ino, create } => {
                created(entries, ino, create.then_some(ContentTag::NONE));
                if let Some(e) = entries.get_mut(&ino) {
                    e.dirty = true;
                    e.pending = true;
                }
            }
            CacheRec::MarkClean { ino, tag } => {
                if let Some(e) = entries.get_mut(&ino) {
                    e.tag = tag;
                    e.dirty = false;
                    e.pending = true;
                }
            }
            CacheRec::Adopt { ino, tag } => {
                if let Some(e) = entries.get_mut(&ino) {
                    e.tag = tag;
                    e.pending = true;
                }
            }
        }
        None
    }
}
