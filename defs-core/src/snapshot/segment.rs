//! Namespace segments: the difference between two published views of the namespace as a small
//! sorted list of upserts and deletes, and a chain of them applied to a full snapshot. This
//! module owns the segment byte layout (docs/format.md, "Namespace segment") and both
//! directions: [`diff`] (two snapshot streams in, one segment out) and [`apply_chain`] (a
//! snapshot stream and its segments in, the resulting full snapshot stream out, which
//! [`MetaDb::restore_snapshot`](crate::MetaDb::restore_snapshot) then checks like any other).
//!
//! A segment is computed by merging the last published snapshot with the new cut, key by key
//! (both are sorted the same way), not from marks set by every write path: no change can be
//! missed, and a segment holds each changed key once however often it changed (state deltas,
//! docs/namespace-publishing.md D2). Memory: the segment, never the namespace; nothing
//! recurses.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io::{Read, Write};

use super::{
    HashReader, HashWriter, MAX_RECORD_LEN, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotStats,
    TAG_DIRENT, TAG_END, TAG_INODE, TAG_XATTR, io_err,
};
use crate::error::{Error, Result};
use crate::namespace::record::{Reader, put_u32, put_u64};

/// The first 8 bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"DEFSNSEG";
/// The segment format version this build writes and reads.
pub const SEGMENT_VERSION: u32 = 1;
/// The most segments a chain may hold after its snapshot (the record's limit too).
pub const MAX_CHAIN: usize = crate::root_record::MAX_SEGMENTS;
/// The largest segment a reader fetches: 256 MiB. The publisher compacts long before (segments
/// total at most a quarter of the snapshot or 1 MiB), so only a broken or hostile record names
/// more.
pub const MAX_SEGMENT_LEN: u64 = 256 << 20;

/// Added to a table's put tag to make its delete tag.
const DELETE: u8 = 0x10;
/// Header: magic 8, version 4, base 32, index 4, prev 32, next_ino 8.
const HEADER_LEN: usize = 8 + 4 + 32 + 4 + 32 + 8;

/// Where a segment sits in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHead {
    /// The trailer of the chain's full snapshot.
    pub base: [u8; 32],
    /// 1 for the first segment after the snapshot.
    pub index: u32,
    /// The trailer of the segment before it, or of the snapshot for the first.
    pub prev: [u8; 32],
    /// The namespace's next inode number after this segment.
    pub next_ino: u64,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "namespace segment",
        reason: reason.into(),
    }
}

/// The sort key of a record of table `tag & 0x0F`, as bytes that sort like the table's key:
/// big-endian inode number (and the name after it for dirents and xattrs). Returns it with the
/// length of the payload prefix that holds the key (a delete's whole payload).
fn sort_key(tag: u8, payload: &[u8]) -> Result<(Vec<u8>, usize)> {
    let mut r = Reader::new(payload, "namespace record key");
    let ino = r.u64()?;
    let mut key = ino.to_be_bytes().to_vec();
    let len = match tag & 0x0F {
        TAG_INODE => 8,
        TAG_DIRENT => {
            let n = usize::from(r.u8()?);
            key.extend_from_slice(r.bytes(n)?);
            9 + n
        }
        TAG_XATTR => {
            let n = usize::from(r.u16()?);
            key.extend_from_slice(r.bytes(n)?);
            10 + n
        }
        other => return Err(bad(format!("record tag {other} has no key"))),
    };
    Ok((key, len))
}

/// A record as (tag, sort key, payload).
type Keyed = (u8, Vec<u8>, Vec<u8>);

/// The records of a snapshot stream, in order, checked as they pass: header, framing, section
/// order, the end record's counts and the trailing hash.
struct Records<R> {
    input: HashReader<R>,
    next_ino: u64,
    counts: [u64; 3],
    done: bool,
}

impl<R: Read> Records<R> {
    fn open(r: R) -> Result<Records<R>> {
        let (input, next_ino) = super::open_stream(r)?;
        Ok(Records {
            next_ino,
            input,
            counts: [0; 3],
            done: false,
        })
    }

    /// The next record as (tag, key, payload), or `None` after the end record and the hash.
    fn next(&mut self) -> Result<Option<Keyed>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = Vec::new();
        let tag = self.input.record(&mut buf)?;
        if tag == TAG_END {
            let mut p = Reader::new(&buf, "namespace snapshot");
            let counts = [p.u64()?, p.u64()?, p.u64()?];
            p.finish()?;
            if counts != self.counts {
                return Err(super::bad("record counts differ from the trailer"));
            }
            let computed = self.input.hasher.finalize();
            let mut hash = [0u8; 32];
            self.input.exact(&mut hash)?;
            if computed.as_bytes() != &hash {
                return Err(super::bad("hash mismatch"));
            }
            let mut extra = [0u8; 1];
            if self.input.inner.read(&mut extra).map_err(io_err)? != 0 {
                return Err(super::bad("bytes after the end"));
            }
            self.done = true;
            return Ok(None);
        }
        if !(TAG_INODE..=TAG_XATTR).contains(&tag) {
            return Err(super::bad(format!("unknown record tag {tag}")));
        }
        self.counts[usize::from(tag - 1)] += 1;
        let (key, _) = sort_key(tag, &buf)?;
        Ok(Some((tag, key, buf)))
    }
}

/// Writes a segment: header, records, end counts, hash.
struct SegmentWriter {
    out: HashWriter<Vec<u8>>,
    /// Puts and deletes per table, in section order.
    counts: [u64; 6],
}

fn count_slot(tag: u8) -> usize {
    usize::from((tag & 0x0F) - 1) * 2 + usize::from(tag & DELETE != 0)
}

impl SegmentWriter {
    fn new(head: &SegmentHead) -> Result<SegmentWriter> {
        let mut out = HashWriter {
            inner: Vec::new(),
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        let mut h = SEGMENT_MAGIC.to_vec();
        put_u32(&mut h, SEGMENT_VERSION);
        h.extend_from_slice(&head.base);
        put_u32(&mut h, head.index);
        h.extend_from_slice(&head.prev);
        put_u64(&mut h, head.next_ino);
        out.put(&h)?;
        Ok(SegmentWriter {
            out,
            counts: [0; 6],
        })
    }

    fn record(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        self.counts[count_slot(tag)] += 1;
        self.out.record(tag, payload)
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        let mut end = Vec::with_capacity(48);
        for c in self.counts {
            put_u64(&mut end, c);
        }
        self.out.record(TAG_END, &end)?;
        let hash = self.out.hasher.finalize();
        let mut bytes = self.out.inner;
        bytes.extend_from_slice(hash.as_bytes());
        Ok(bytes)
    }
}

/// The segment that turns the view in snapshot stream `old` into the one in `new`, placed at
/// `head` (whose `next_ino` is taken from `new`). Returns it, and whether it changes anything.
///
/// # Errors
/// Corrupt (either stream), Io.
pub fn diff(old: impl Read, new: impl Read, head: SegmentHead) -> Result<(Vec<u8>, bool)> {
    let (a, b) = (Records::open(old)?, Records::open(new)?);
    let mut w = SegmentWriter::new(&SegmentHead {
        next_ino: b.next_ino,
        ..head
    })?;
    let mut changed = a.next_ino != b.next_ino;
    walk(a, b, |tag, before, after| {
        changed = true;
        match (before, after) {
            (_, Some(payload)) => w.record(tag, payload),
            (Some(payload), None) => {
                let (_, len) = sort_key(tag, payload)?;
                w.record(tag | DELETE, &payload[..len])
            }
            (None, None) => Ok(()),
        }
    })?;
    Ok((w.finish()?, changed))
}

/// A key whose record differs between two views of the namespace ([`changes`]): what a reader
/// that follows another machine's namespace must tell the caches that hold the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    /// An inode appeared, changed or went.
    Inode {
        /// Its number.
        ino: u64,
        /// Its stored content differs (or it is new or gone): bytes cached for it are stale.
        content: bool,
        /// It is gone.
        gone: bool,
    },
    /// A directory entry appeared, went, or names another inode.
    Dirent {
        /// The directory's inode number.
        parent: u64,
        /// The entry's name.
        name: Vec<u8>,
    },
    /// An extended attribute of an inode appeared, changed or went.
    Xattr {
        /// The inode's number.
        ino: u64,
    },
}

/// Every key whose record differs between the views in snapshot streams `old` and `new`, in
/// key order. Memory: the list, never the namespace.
///
/// # Errors
/// Corrupt (either stream), Io.
pub fn changes(old: impl Read, new: impl Read) -> Result<Vec<Changed>> {
    let mut out = Vec::new();
    walk(
        Records::open(old)?,
        Records::open(new)?,
        |tag, before, after| {
            let payload = after.or(before).unwrap_or_default();
            let mut r = Reader::new(payload, "namespace record key");
            let ino = r.u64()?;
            out.push(match tag {
                TAG_INODE => {
                    let content_of = |p: &[u8]| -> Result<crate::namespace::Content> {
                        let mut r = Reader::new(p, "namespace inode record");
                        r.u64()?;
                        Ok(crate::namespace::record::InodeRecord::decode_body(&mut r)?.content)
                    };
                    let content = match (before, after) {
                        (Some(a), Some(b)) => content_of(a)? != content_of(b)?,
                        _ => true,
                    };
                    Changed::Inode {
                        ino,
                        content,
                        gone: after.is_none(),
                    }
                }
                TAG_DIRENT => {
                    let n = usize::from(r.u8()?);
                    Changed::Dirent {
                        parent: ino,
                        name: r.bytes(n)?.to_vec(),
                    }
                }
                _ => Changed::Xattr { ino },
            });
            Ok(())
        },
    )?;
    Ok(out)
}

/// Merges the records of two snapshot streams key by key and calls `each(tag, old payload,
/// new payload)` for every key whose record differs (`None`: absent on that side).
fn walk<A: Read, B: Read>(
    mut a: Records<A>,
    mut b: Records<B>,
    mut each: impl FnMut(u8, Option<&[u8]>, Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    let mut x = a.next()?;
    let mut y = b.next()?;
    loop {
        let order = match (&x, &y) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((ta, ka, _)), Some((tb, kb, _))) => (ta, ka).cmp(&(tb, kb)),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((tag, _, payload)) = &x {
                    each(*tag, Some(payload), None)?;
                }
                x = a.next()?;
            }
            std::cmp::Ordering::Greater => {
                if let Some((tag, _, payload)) = &y {
                    each(*tag, None, Some(payload))?;
                }
                y = b.next()?;
            }
            std::cmp::Ordering::Equal => {
                if let (Some((_, _, pa)), Some((tag, _, pb))) = (&x, &y)
                    && pa != pb
                {
                    each(*tag, Some(pa), Some(pb))?;
                }
                x = a.next()?;
                y = b.next()?;
            }
        }
    }
    Ok(())
}

/// One key's change after composing segments: the record to put (`None`: delete), and whether
/// the key must exist in the base (a delete of a key no earlier segment touched).
struct Change {
    put: Option<Vec<u8>>,
    must_exist: bool,
}

/// The composed changes of a chain, by (table, key), and the last segment's `next_ino`.
struct Delta {
    changes: BTreeMap<(u8, Vec<u8>), Change>,
    next_ino: Option<u64>,
}

/// Parses `bytes` as segment `index` of the chain on `base` after `prev` and composes its
/// changes into `delta`.
fn compose(delta: &mut Delta, bytes: &[u8], expect: &SegmentHead) -> Result<()> {
    let len = bytes.len();
    if len < HEADER_LEN + 5 + 48 + 32 {
        return Err(bad(format!("{len} bytes, shorter than any segment")));
    }
    let (body, hash) = bytes.split_at(len - 32);
    if blake3::hash(body).as_bytes() != hash {
        return Err(bad("hash mismatch"));
    }
    let mut r = Reader::new(body, "namespace segment");
    if r.bytes(8)? != SEGMENT_MAGIC {
        return Err(bad("not a namespace segment (bad magic)"));
    }
    let version = r.u32()?;
    if version != SEGMENT_VERSION {
        return Err(bad(format!(
            "format version {version}; this DeFS reads version {SEGMENT_VERSION}"
        )));
    }
    let base: [u8; 32] = r.array()?;
    let index = r.u32()?;
    let prev: [u8; 32] = r.array()?;
    let next_ino = r.u64()?;
    if base != expect.base {
        return Err(bad(format!("segment {index} belongs to another snapshot")));
    }
    if index != expect.index || prev != expect.prev {
        return Err(bad(format!(
            "segment {index} found where segment {} belongs (a segment is missing or out of order)",
            expect.index
        )));
    }
    let mut counts = [0u64; 6];
    let mut last: Option<(u8, Vec<u8>)> = None;
    loop {
        let tag = r.u8()?;
        let plen = r.u32()?;
        if plen > MAX_RECORD_LEN {
            return Err(bad(format!(
                "record of {plen} bytes (limit {MAX_RECORD_LEN})"
            )));
        }
        let payload = r.bytes(plen as usize)?;
        if tag == TAG_END {
            let mut p = Reader::new(payload, "namespace segment");
            for c in counts {
                if p.u64()? != c {
                    return Err(bad("record counts differ from the end record"));
                }
            }
            p.finish()?;
            r.finish()?;
            break;
        }
        let table = tag & !DELETE;
        if !(TAG_INODE..=TAG_XATTR).contains(&table) || (tag & DELETE != 0 && tag != table | DELETE)
        {
            return Err(bad(format!("unknown record tag {tag}")));
        }
        let (key, key_len) = sort_key(tag, payload).map_err(|e| bad(e.to_string()))?;
        if tag & DELETE != 0 && key_len != payload.len() {
            return Err(bad("bytes after a delete's key"));
        }
        let at = (table, key);
        if last.as_ref().is_some_and(|l| *l >= at) {
            return Err(bad("records out of order or repeated"));
        }
        counts[count_slot(tag)] += 1;
        let put = (tag & DELETE == 0).then(|| payload.to_vec());
        match delta.changes.entry(at.clone()) {
            Entry::Vacant(v) => {
                v.insert(Change {
                    must_exist: put.is_none(),
                    put,
                });
            }
            Entry::Occupied(mut o) => {
                let c = o.get_mut();
                if put.is_none() && c.put.is_none() {
                    return Err(bad(format!(
                        "segment {index} deletes a key an earlier segment deleted"
                    )));
                }
                // A delete after a put removes whatever is there (the put may have added it);
                // a put after anything is the key's new record.
                c.must_exist = false;
                c.put = put;
            }
        }
        last = Some(at);
    }
    delta.next_ino = Some(next_ino);
    Ok(())
}

/// Applies `segments` (in chain order) to the snapshot stream `base` whose trailer is
/// `base_trailer`, writing the resulting full snapshot to `out`. Every segment must name
/// `base_trailer` as its base, carry its index (1, 2, …) and the trailer of the one before it
/// (of the snapshot for the first): a missing, repeated or reordered segment is refused. A
/// delete of a key the state lacks is refused. The output is a well-formed snapshot; its
/// cross-record checks (link counts, one name per directory, no cycle) are
/// [`MetaDb::restore_snapshot`](crate::MetaDb::restore_snapshot)'s.
///
/// # Errors
/// Corrupt (the snapshot or a segment), Io.
pub fn apply_chain(
    base: impl Read,
    base_trailer: &[u8; 32],
    segments: &[Vec<u8>],
    out: impl Write,
) -> Result<SnapshotStats> {
    let first = SegmentHead {
        base: *base_trailer,
        index: 1,
        prev: *base_trailer,
        next_ino: 0,
    };
    apply_from(base, &first, segments, out)
}

/// Applies `segments`, which continue a chain where `first` says (base, the index and `prev`
/// the first of them must carry), to `state`, the full snapshot the chain yields before them,
/// writing the resulting full snapshot to `out`: a follower that holds the state of a chain's
/// first segments fetches and applies only the new ones. Checks as [`apply_chain`].
///
/// # Errors
/// Corrupt (the state or a segment, or a chain longer than [`MAX_CHAIN`]), Io.
pub fn apply_from(
    state: impl Read,
    first: &SegmentHead,
    segments: &[Vec<u8>],
    out: impl Write,
) -> Result<SnapshotStats> {
    let before = usize::try_from(first.index.saturating_sub(1)).unwrap_or(usize::MAX);
    if first.index == 0 || before.saturating_add(segments.len()) > MAX_CHAIN {
        return Err(bad(format!(
            "{} segments from index {} (limit {MAX_CHAIN})",
            segments.len(),
            first.index
        )));
    }
    let mut delta = Delta {
        changes: BTreeMap::new(),
        next_ino: None,
    };
    let mut prev = first.prev;
    for (i, seg) in segments.iter().enumerate() {
        let expect = SegmentHead {
            base: first.base,
            index: first
                .index
                .saturating_add(u32::try_from(i).unwrap_or(u32::MAX)),
            prev,
            next_ino: 0,
        };
        compose(&mut delta, seg, &expect)?;
        prev = seg[seg.len() - 32..].try_into().unwrap_or_default();
    }
    merge(state, delta, out)
}

/// Checks that `segment`, placed at `head`, turns the view in snapshot stream `state` into the
/// view whose trailer is `want`: the publisher's proof, before it stores a segment, that the
/// chain it extends yields exactly the state it cut.
///
/// # Errors
/// Corrupt (a stream, the segment, or a result that differs), Io.
pub fn check_segment(
    state: impl Read,
    segment: &[u8],
    head: &SegmentHead,
    want: &[u8; 32],
) -> Result<()> {
    let mut delta = Delta {
        changes: BTreeMap::new(),
        next_ino: None,
    };
    compose(&mut delta, segment, head)?;
    let got = merge(state, delta, std::io::sink())?;
    if &got.trailer != want {
        return Err(bad("the segment does not yield the state it was cut from"));
    }
    Ok(())
}

/// Streams `base` with `delta` laid over it into `out` as one full snapshot.
fn merge(base: impl Read, delta: Delta, out: impl Write) -> Result<SnapshotStats> {
    let mut a = Records::open(base)?;
    let next_ino = delta.next_ino.unwrap_or(a.next_ino);
    let mut w = HashWriter {
        inner: out,
        hasher: blake3::Hasher::new(),
        bytes: 0,
    };
    let mut head = SNAPSHOT_MAGIC.to_vec();
    put_u32(&mut head, SNAPSHOT_VERSION);
    put_u64(&mut head, next_ino);
    w.put(&head)?;
    let mut counts = [0u64; 3];
    let mut emit = |w: &mut HashWriter<_>, tag: u8, payload: &[u8]| {
        counts[usize::from(tag - 1)] += 1;
        w.record(tag, payload)
    };
    let mut changes = delta.changes.into_iter().peekable();
    let mut x = a.next()?;
    loop {
        let order = match (&x, changes.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((t, k, _)), Some(((ct, ck), _))) => (t, k).cmp(&(ct, ck)),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((tag, _, payload)) = &x {
                    emit(&mut w, *tag, payload)?;
                }
                x = a.next()?;
            }
            std::cmp::Ordering::Equal => {
                if let Some((_, Change { put: Some(p), .. })) = changes.next()
                    && let Some((tag, _, _)) = &x
                {
                    emit(&mut w, *tag, &p)?;
                }
                x = a.next()?;
            }
            std::cmp::Ordering::Greater => {
                if let Some(((tag, key), c)) = changes.next() {
                    match c.put {
                        Some(p) => emit(&mut w, tag, &p)?,
                        None if c.must_exist => {
                            return Err(bad(format!(
                                "a delete of a missing key (table {tag}, key {})",
                                crate::types::to_hex(&key)
                            )));
                        }
                        None => {}
                    }
                }
            }
        }
    }
    let mut end = Vec::with_capacity(24);
    for c in counts {
        put_u64(&mut end, c);
    }
    w.record(TAG_END, &end)?;
    let hash = w.hasher.finalize();
    w.inner.write_all(hash.as_bytes()).map_err(io_err)?;
    w.inner.flush().map_err(io_err)?;
    Ok(SnapshotStats {
        inodes: counts[0],
        dirents: counts[1],
        xattrs: counts[2],
        bytes: w.bytes + 32,
        trailer: *hash.as_bytes(),
    })
}

/// A snapshot's trailer: its last 32 bytes.
pub fn trailer_of(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.get(bytes.len().checked_sub(32)?..)?.try_into().ok()
}

#[cfg(test)]
mod tests;
