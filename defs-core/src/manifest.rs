//! The manifest: a file version's index (geometry, size, and per segment its shards' ids,
//! lengths, CRCs, nonces and holders), its versioned binary body format, and the sealed
//! envelope that stores it in the network encrypted under the file key.
//!
//! Byte layouts are in `docs/format.md` ("Manifest body v1", "Manifest body v3", "Sealed manifest v1"). Decoding
//! checks every length against the bytes present and the limits below before allocating, checks
//! that the geometry and segments hold together, and returns an error, never panics.
//!
//! A file's content may be a byte range inside a larger object (packing of small files): the
//! namespace stores (FileId, FileKey, offset, len) and reads through [`crate::pipeline::plan`].
//! A packed object's manifest lists its members' ranges ([`Manifest::pack`]), so a range that
//! names no member of its object is refused ([`Manifest::check_range`]) instead of read as a mix
//! of other files' bytes.
//!
//! Holes (issue 24): a segment may carry a list of data [`Extent`]s; its stored bytes are then
//! only those extents, concatenated, and everything else in it reads as zeros. A segment with
//! no extent at all is a hole: no shards.
//!
//! Body versions: v1 plain; v2 = v1 plus a pack directory; v3 = per-segment extent lists plus a
//! pack directory count (0: not a pack). Each manifest is written in the oldest version that can
//! hold it ([`Manifest::body_version`]), so older builds read everything they can.

use crate::error::{Error, Result};
use crate::pipeline::aead::{self, TAG_LEN};
use crate::pipeline::keys::{self, FileKey, WrapKey};
use crate::pipeline::layout::{Geometry, MAX_SHARDS, Redundancy};
use crate::types::{FileId, NodeId, ShardId, VersionId};

/// The newest body format version this build writes and reads (v3: segments may carry data
/// extents, and a pack directory may follow).
pub const BODY_VERSION: u16 = 3;
/// The body format version of a packed object without holes: v1 plus a pack directory.
pub const BODY_VERSION_PACK: u16 = 2;
/// The body format version of a manifest whose segments are all dense and that is not a pack.
pub const BODY_VERSION_DENSE: u16 = 1;
/// The sealed-envelope format version this build writes and reads.
pub const ENVELOPE_VERSION: u16 = 1;
/// Magic of a manifest body.
pub const BODY_MAGIC: [u8; 4] = *b"DFMB";
/// Magic of a sealed manifest.
pub const ENVELOPE_MAGIC: [u8; 8] = *b"DEFSMANI";
/// Largest manifest body: 256 MiB, room for a 10 TiB file in 10+4 × 1 MiB segments (≈ 75 MB)
/// with holders, while a hostile length can never make us allocate more.
pub const MAX_BODY_LEN: usize = 256 << 20;
/// Most segments in one manifest (2^24: 4 PiB at 256 MiB segments).
pub const MAX_SEGMENTS: u64 = 1 << 24;
/// Most members of one pack (a pack of 8 MiB holds at most this many files of 8 bytes; more
/// would make the directory larger than the data).
pub const MAX_PACK_MEMBERS: u32 = 1 << 20;
/// Most holders recorded per shard (the network re-places shards; history beyond this is noise).
pub const MAX_HOLDERS: usize = 16;
/// Most data extents in one segment: 4,096 × 8 bytes = 32 KiB of manifest for a segment that is
/// at most 256 MiB (0.01 %). The uploader merges the closest extents to stay within it.
pub const MAX_EXTENTS: usize = 4096;

/// Bytes of the fixed body header.
const BODY_HEADER_LEN: usize = 4 + 2 + 16 + 8 + 4 + 4 + 8;
/// Bytes of a segment header.
const SEGMENT_HEADER_LEN: usize = 4 + 4 + 2;
/// Bytes of a pack directory entry (offset, len).
const PACK_ENTRY_LEN: usize = 8 + 8;
/// Bytes of a shard entry without holders.
const SHARD_ENTRY_LEN: usize = 32 + 4 + 4 + 12 + 1;
/// Bytes of the envelope before the body ciphertext.
const ENVELOPE_HEADER_LEN: usize = 8 + 2 + 12 + 32 + TAG_LEN + 12;

/// One stored shard of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardEntry {
    /// BLAKE3 of the stored bytes (ciphertext ‖ tag).
    pub id: ShardId,
    /// Stored bytes: the segment's shard length + the 16-byte tag.
    pub len: u32,
    /// CRC32 of the stored bytes.
    pub crc: u32,
    /// The AES-GCM nonce (derived; recorded so holders and tools can see it without the key).
    pub nonce: [u8; 12],
    /// Nodes believed to hold the shard; filled in by the network.
    pub holders: Vec<NodeId>,
}

/// A run of data inside a segment: bytes `start..start + len`, relative to the segment's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First byte, relative to the segment.
    pub start: u32,
    /// Bytes (never 0).
    pub len: u32,
}

impl Extent {
    /// One past the last byte, relative to the segment.
    pub fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.len)
    }
}

/// One segment: its plain length and its shards, by index (data shards first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentEntry {
    /// Plain bytes of the segment (holes included).
    pub len: u32,
    /// Plain bytes of each of its shards (before the tag): `ceil(stored / k)`, or `stored` when
    /// replicated, where `stored` is [`SegmentEntry::stored_len`]; 0 for a hole.
    pub shard_len: u32,
    /// The shards, index 0 first (none for a hole).
    pub shards: Vec<ShardEntry>,
    /// `None`: every byte of the segment is stored (dense). `Some(list)`: only these extents
    /// (sorted, disjoint, not touching, inside `len`) are stored, concatenated in order; the rest
    /// reads as zeros. An empty list is a hole.
    pub extents: Option<Vec<Extent>>,
}

impl SegmentEntry {
    /// Bytes stored for the segment (what its shards encode).
    pub fn stored_len(&self) -> u32 {
        match &self.extents {
            None => self.len,
            // validate() keeps the extents inside `len`, so the sum fits.
            Some(list) => list.iter().map(|e| e.len).sum(),
        }
    }

    /// Whether the segment is all hole (no shards).
    pub fn is_hole(&self) -> bool {
        self.stored_len() == 0
    }

    /// The stored offset of segment offset `at`: the data bytes before it.
    pub fn stored_offset(&self, at: u64) -> u64 {
        match &self.extents {
            None => at.min(u64::from(self.len)),
            Some(list) => list
                .iter()
                .map(|e| at.clamp(u64::from(e.start), e.end()) - u64::from(e.start))
                .sum(),
        }
    }

    /// The data runs of the segment as `(segment offset, stored offset, len)`.
    pub fn runs(&self) -> Vec<(u64, u64, u64)> {
        match &self.extents {
            None => vec![(0, 0, u64::from(self.len))],
            Some(list) => {
                let mut stored = 0;
                list.iter()
                    .map(|e| {
                        let run = (u64::from(e.start), stored, u64::from(e.len));
                        stored += u64::from(e.len);
                        run
                    })
                    .collect()
            }
        }
    }

    /// The widest segment range `lo..hi` around `want` whose bytes are all known from the
    /// stored bytes `stored` (stored offsets): holes are zeros, data must lie within `stored`.
    pub fn known_around(
        &self,
        want: std::ops::Range<u64>,
        stored: std::ops::Range<u64>,
    ) -> std::ops::Range<u64> {
        let (mut lo, mut hi) = (0, u64::from(self.len));
        for (at, s, n) in self.runs() {
            // A run partly or wholly outside the fetched stored bytes bounds the range.
            if s < stored.start {
                lo = lo.max((at + (stored.start - s)).min(at + n));
            }
            if s + n > stored.end {
                hi = hi.min(at + stored.end.saturating_sub(s).min(n));
            }
        }
        lo.min(want.start)..hi.max(want.end).min(u64::from(self.len))
    }

    /// Appends the segment's bytes `range` to `out` from its stored bytes `stored`, which start
    /// at stored offset `from`: data from `stored`, zeros for holes.
    ///
    /// # Errors
    /// [`Error::MalformedManifest`] when `stored` lacks a data byte of `range`.
    pub fn expand_into(
        &self,
        range: std::ops::Range<u64>,
        from: u64,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let base = out.len();
        let n = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| malformed("a segment range larger than memory"))?;
        out.resize(base + n, 0);
        for (at, s, len) in self.runs() {
            let (a, b) = (at.max(range.start), (at + len).min(range.end));
            if a >= b {
                continue;
            }
            let src = s + (a - at);
            let (i, j) = (src.checked_sub(from), (src + (b - a)).checked_sub(from));
            let (Some(i), Some(j)) = (i, j) else {
                return Err(malformed("stored bytes do not cover a read's data"));
            };
            let src = stored
                .get(i as usize..j as usize)
                .ok_or(malformed("stored bytes do not cover a read's data"))?;
            let at = base + (a - range.start) as usize;
            out[at..at + src.len()].copy_from_slice(src);
        }
        Ok(())
    }
}

/// A file version's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The version, bound into every shard key and associated data.
    pub version: VersionId,
    /// File size in bytes.
    pub size: u64,
    /// How segments are cut and protected.
    pub geometry: Geometry,
    /// The segments, in file order. All but the last hold exactly `segment_size` bytes.
    pub segments: Vec<SegmentEntry>,
    /// A packed object's members, sorted by offset, disjoint, non-empty and inside the object
    /// (body v2); `None` for an object that is one file (body v1).
    pub pack: Option<Vec<PackRange>>,
}

/// One member of a packed object: the bytes `offset..offset + len` are one file's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackRange {
    /// Where the member starts in the object.
    pub offset: u64,
    /// Its length, > 0.
    pub len: u64,
}

impl PackRange {
    /// One past the member's last byte (`None` when that overflows).
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// A manifest sealed for storage: the bytes to store, and their id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedManifest {
    /// The envelope bytes.
    pub bytes: Vec<u8>,
    /// BLAKE3 of `bytes`: what `defs put` prints.
    pub id: FileId,
}

fn malformed(what: &'static str) -> Error {
    Error::MalformedManifest { what }
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(malformed(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        self.array(what).map(u16::from_le_bytes)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }
}

impl Manifest {
    /// Checks that the size, geometry and segments hold together: segment count and lengths
    /// match the size, shard lengths match the geometry, shard counts and holder counts are in
    /// their limits. [`Manifest::decode_body`] and [`Manifest::encode_body`] both call it.
    pub fn validate(&self) -> Result<()> {
        self.geometry
            .validate()
            .map_err(|_| malformed("geometry out of range"))?;
        let seg_size = self.geometry.segment_size();
        let count = self.geometry.segment_count(self.size);
        if count > MAX_SEGMENTS {
            return Err(Error::TooLarge {
                what: "manifest segment count",
                size: count,
                limit: MAX_SEGMENTS,
            });
        }
        if u64::try_from(self.segments.len()).ok() != Some(count) {
            return Err(malformed("segment count does not match the file size"));
        }
        let total = usize::from(self.geometry.total_shards());
        for (i, seg) in self.segments.iter().enumerate() {
            let last = i + 1 == self.segments.len();
            let expected = if last {
                self.size - seg_size * (count - 1)
            } else {
                seg_size
            };
            if u64::from(seg.len) != expected {
                return Err(malformed("segment length does not match the file size"));
            }
            if let Some(list) = &seg.extents {
                check_extents(list, seg.len)?;
            }
            let stored = seg.stored_len();
            if stored == 0 {
                if seg.shard_len != 0 || !seg.shards.is_empty() {
                    return Err(malformed("a hole segment with shards"));
                }
                continue;
            }
            if seg.shard_len != self.geometry.shard_len(stored) {
                return Err(malformed("shard length does not match the segment length"));
            }
            if seg.shards.len() != total {
                return Err(malformed("shard count does not match the geometry"));
            }
            for shard in &seg.shards {
                if u64::from(shard.len) != u64::from(seg.shard_len) + TAG_LEN as u64 {
                    return Err(malformed("stored shard length is not shard length + tag"));
                }
                if shard.holders.len() > MAX_HOLDERS {
                    return Err(Error::TooLarge {
                        what: "holders of a shard",
                        size: shard.holders.len() as u64,
                        limit: MAX_HOLDERS as u64,
                    });
                }
            }
        }
        if let Some(pack) = &self.pack {
            self.validate_pack(pack)?;
        }
        Ok(())
    }

    /// The data runs of the object inside `start..end` (object offsets, sorted, merged where
    /// they touch), as its segments' extents say: what `SEEK_DATA` finds. Walks only the
    /// segments the range touches.
    pub fn data_runs(&self, start: u64, end: u64) -> Vec<std::ops::Range<u64>> {
        let end = end.min(self.size);
        let seg_size = self.geometry.segment_size().max(1);
        let mut out: Vec<std::ops::Range<u64>> = Vec::new();
        if start >= end {
            return out;
        }
        for s in start / seg_size..=(end - 1) / seg_size {
            let Some(seg) = usize::try_from(s).ok().and_then(|i| self.segments.get(i)) else {
                break;
            };
            let base = s * seg_size;
            for (at, _, n) in seg.runs() {
                let (a, b) = ((base + at).max(start), (base + at + n).min(end));
                if a >= b {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if last.end == a => last.end = b,
                    _ => out.push(a..b),
                }
            }
        }
        out
    }

    /// The first data byte at or after `from` and before `end` (object offsets), if any.
    pub fn next_data(&self, from: u64, end: u64) -> Option<u64> {
        let end = end.min(self.size);
        let seg_size = self.geometry.segment_size().max(1);
        let mut s = from / seg_size;
        // One segment at a time: a long run of holes costs a step per segment, no allocation.
        while s * seg_size < end {
            let lo = (s * seg_size).max(from);
            if let Some(r) = self.data_runs(lo, ((s + 1) * seg_size).min(end)).first() {
                return Some(r.start);
            }
            s += 1;
        }
        None
    }

    /// The first hole byte at or after `from` and before `end` (object offsets); `end` when
    /// there is none (the end of a file is a hole to `SEEK_HOLE`).
    pub fn next_hole(&self, from: u64, end: u64) -> u64 {
        let end = end.min(self.size);
        let seg_size = self.geometry.segment_size().max(1);
        let mut at = from;
        while at < end {
            let seg_end = ((at / seg_size + 1) * seg_size).min(end);
            match self.data_runs(at, seg_end).first() {
                Some(r) if r.start == at => at = r.end,
                _ => return at,
            }
        }
        end
    }

    /// Bytes the data of `start..end` (object offsets) takes in whole [`HOLE_BLOCK`]s, as a
    /// filesystem would allocate them: what `st_blocks` counts.
    ///
    /// [`HOLE_BLOCK`]: crate::object::HOLE_BLOCK
    pub fn allocated(&self, start: u64, end: u64) -> u64 {
        let block = crate::fsutil::HOLE_BLOCK as u64;
        let mut total = 0;
        let mut last_block = None;
        for r in self.data_runs(start, end) {
            let (mut a, b) = (r.start / block, r.end.div_ceil(block));
            // Runs meeting inside one block count it once.
            if last_block == Some(a) {
                a += 1;
            }
            total += b.saturating_sub(a) * block;
            last_block = Some(b - 1);
        }
        total
    }

    /// Whether any segment carries extents (the body is then v3).
    pub fn has_holes(&self) -> bool {
        self.segments.iter().any(|s| s.extents.is_some())
    }

    /// The body version [`Manifest::encode_body`] writes: v3 when a segment has extents, v2
    /// for a pack without them, else v1.
    pub fn body_version(&self) -> u16 {
        if self.has_holes() {
            BODY_VERSION
        } else if self.pack.is_some() {
            BODY_VERSION_PACK
        } else {
            BODY_VERSION_DENSE
        }
    }

    fn validate_pack(&self, pack: &[PackRange]) -> Result<()> {
        if pack.is_empty() {
            return Err(malformed("pack directory without members"));
        }
        if pack.len() as u64 > u64::from(MAX_PACK_MEMBERS) {
            return Err(Error::TooLarge {
                what: "pack members",
                size: pack.len() as u64,
                limit: u64::from(MAX_PACK_MEMBERS),
            });
        }
        let mut next = 0u64;
        for member in pack {
            if member.len == 0 {
                return Err(malformed("empty pack member"));
            }
            if member.offset < next {
                return Err(malformed("pack members overlap or are out of order"));
            }
            next = member
                .end()
                .filter(|end| *end <= self.size)
                .ok_or_else(|| malformed("pack member runs past the object"))?;
        }
        Ok(())
    }

    /// Checks that `offset..offset + len` is a file's content in this object: inside it and,
    /// in a packed object, exactly one member (a range that straddles members, or covers part
    /// of one, would read other files' bytes as this file's).
    ///
    /// # Errors
    /// [`Error::BadContentRange`] saying which rule the range breaks.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let bad = |reason: &'static str| {
            Err(Error::BadContentRange {
                offset,
                len,
                size: self.size,
                reason,
            })
        };
        let Some(end) = offset.checked_add(len) else {
            return bad("the range overflows");
        };
        if end > self.size {
            return bad("the range runs past the end of its object");
        }
        match &self.pack {
            None => Ok(()),
            Some(pack) => {
                let i = pack.partition_point(|m| m.offset < offset);
                match pack.get(i) {
                    Some(m) if m.offset == offset && m.len == len => Ok(()),
                    _ if len == 0 => Ok(()),
                    _ => bad("the range is not one member of its packed object"),
                }
            }
        }
    }

    /// Bytes of [`Manifest::encode_body`]'s output.
    pub fn encoded_len(&self) -> usize {
        let v3 = self.has_holes();
        let pack = match (&self.pack, v3) {
            (Some(p), _) => 4 + PACK_ENTRY_LEN * p.len(),
            (None, true) => 4,
            (None, false) => 0,
        };
        BODY_HEADER_LEN
            + pack
            + self
                .segments
                .iter()
                .map(|s| {
                    SEGMENT_HEADER_LEN
                        + if v3 {
                            1 + s.extents.as_ref().map_or(0, |l| 4 + 8 * l.len())
                        } else {
                            0
                        }
                        + s.shards
                            .iter()
                            .map(|sh| SHARD_ENTRY_LEN + 32 * sh.holders.len())
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    /// The plain body: format v1, or v2 when the object is a pack.
    pub fn encode_body(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let len = self.encoded_len();
        if len > MAX_BODY_LEN {
            return Err(Error::TooLarge {
                what: "manifest body",
                size: len as u64,
                limit: MAX_BODY_LEN as u64,
            });
        }
        let mut out = Vec::with_capacity(len);
        let v3 = self.has_holes();
        out.extend_from_slice(&BODY_MAGIC);
        out.extend_from_slice(&self.body_version().to_le_bytes());
        out.extend_from_slice(&self.version.0);
        out.extend_from_slice(&self.size.to_le_bytes());
        let (kind, a, b) = match self.geometry.redundancy {
            Redundancy::Replicated { copies } => (0u8, copies, 0u8),
            Redundancy::ReedSolomon { k, m } => (1u8, k, m),
        };
        out.extend_from_slice(&[kind, a, b, 0]);
        out.extend_from_slice(&self.geometry.shard_size.to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u64).to_le_bytes());
        for seg in &self.segments {
            out.extend_from_slice(&seg.len.to_le_bytes());
            out.extend_from_slice(&seg.shard_len.to_le_bytes());
            // validate() bounded the count by the geometry (≤ 200).
            out.extend_from_slice(&(seg.shards.len() as u16).to_le_bytes());
            if v3 {
                match &seg.extents {
                    None => out.push(0),
                    Some(list) => {
                        out.push(1);
                        // validate() bounded the list by MAX_EXTENTS.
                        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
                        for e in list {
                            out.extend_from_slice(&e.start.to_le_bytes());
                            out.extend_from_slice(&e.len.to_le_bytes());
                        }
                    }
                }
            }
            for sh in &seg.shards {
                out.extend_from_slice(&sh.id.0);
                out.extend_from_slice(&sh.len.to_le_bytes());
                out.extend_from_slice(&sh.crc.to_le_bytes());
                out.extend_from_slice(&sh.nonce);
                // validate() bounded holders by MAX_HOLDERS (16).
                out.push(sh.holders.len() as u8);
                for h in &sh.holders {
                    out.extend_from_slice(&h.0);
                }
            }
        }
        if let Some(pack) = &self.pack {
            // validate() bounded the count by MAX_PACK_MEMBERS.
            out.extend_from_slice(&(pack.len() as u32).to_le_bytes());
            for member in pack {
                out.extend_from_slice(&member.offset.to_le_bytes());
                out.extend_from_slice(&member.len.to_le_bytes());
            }
        } else if v3 {
            // v3 always carries the count; 0 says "not a pack".
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        debug_assert_eq!(out.len(), len);
        Ok(out)
    }

    /// Parses and validates a plain body. Any malformed input is an error, never a panic.
    pub fn decode_body(bytes: &[u8]) -> Result<Manifest> {
        if bytes.len() > MAX_BODY_LEN {
            return Err(Error::TooLarge {
                what: "manifest body",
                size: bytes.len() as u64,
                limit: MAX_BODY_LEN as u64,
            });
        }
        let mut r = Reader { bytes };
        if r.array::<4>("truncated magic")? != BODY_MAGIC {
            return Err(malformed("not a manifest body (bad magic)"));
        }
        let found = r.u16("truncated version")?;
        if found != BODY_VERSION && found != BODY_VERSION_PACK && found != BODY_VERSION_DENSE {
            return Err(Error::UnknownManifestVersion {
                found,
                supported: BODY_VERSION,
            });
        }
        let v3 = found == BODY_VERSION;
        let version = VersionId(r.array("truncated version id")?);
        let size = r.u64("truncated size")?;
        let kind = r.u8("truncated geometry")?;
        let a = r.u8("truncated geometry")?;
        let b = r.u8("truncated geometry")?;
        if r.u8("truncated geometry")? != 0 {
            return Err(malformed("reserved geometry byte is not zero"));
        }
        let shard_size = r.u32("truncated shard size")?;
        let redundancy = match kind {
            0 if b == 0 => Redundancy::Replicated { copies: a },
            0 => return Err(malformed("replicated geometry with parity")),
            1 => Redundancy::ReedSolomon { k: a, m: b },
            _ => return Err(malformed("unknown redundancy kind")),
        };
        let geometry = Geometry {
            redundancy,
            shard_size,
        };
        geometry
            .validate()
            .map_err(|_| malformed("geometry out of range"))?;
        let count = r.u64("truncated segment count")?;
        let total = usize::from(geometry.total_shards());
        // A v3 segment may be a hole: its header and extent flag, no shards.
        let min_segment = if v3 {
            SEGMENT_HEADER_LEN + 1
        } else {
            SEGMENT_HEADER_LEN + total * SHARD_ENTRY_LEN
        };
        if count > MAX_SEGMENTS || count > (r.bytes.len() / min_segment) as u64 {
            return Err(malformed("segment count exceeds the bytes present"));
        }
        if Some(count) != Some(geometry.segment_count(size)) {
            return Err(malformed("segment count does not match the file size"));
        }
        // Bounded above by the bytes present, so the allocation is too.
        let mut segments = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = r.u32("truncated segment")?;
            let shard_len = r.u32("truncated segment")?;
            let n = usize::from(r.u16("truncated segment")?);
            let extents = if v3 {
                match r.u8("truncated segment")? {
                    0 => None,
                    1 => {
                        let count = r.u32("truncated extent list")? as usize;
                        if count > MAX_EXTENTS || count > r.bytes.len() / 8 {
                            return Err(malformed(
                                "extent count exceeds the limit or the bytes present",
                            ));
                        }
                        let mut list = Vec::with_capacity(count);
                        for _ in 0..count {
                            let start = r.u32("truncated extent")?;
                            let len = r.u32("truncated extent")?;
                            list.push(Extent { start, len });
                        }
                        check_extents(&list, len)?;
                        Some(list)
                    }
                    _ => return Err(malformed("unknown segment extent flag")),
                }
            } else {
                None
            };
            let hole = extents.as_ref().is_some_and(|l: &Vec<Extent>| l.is_empty());
            if n != if hole { 0 } else { total } {
                return Err(malformed("shard count does not match the geometry"));
            }
            let mut shards = Vec::with_capacity(n);
            for _ in 0..n {
                let id = ShardId(r.array("truncated shard entry")?);
                let len = r.u32("truncated shard entry")?;
                let crc = r.u32("truncated shard entry")?;
                let nonce = r.array("truncated shard entry")?;
                let holders_n = usize::from(r.u8("truncated shard entry")?);
                if holders_n > MAX_HOLDERS {
                    return Err(malformed("more holders than MAX_HOLDERS"));
                }
                let mut holders = Vec::with_capacity(holders_n);
                for _ in 0..holders_n {
                    holders.push(NodeId(r.array("truncated holder list")?));
                }
                shards.push(ShardEntry {
                    id,
                    len,
                    crc,
                    nonce,
                    holders,
                });
            }
            segments.push(SegmentEntry {
                len,
                shard_len,
                shards,
                extents,
            });
        }
        let pack_count = if found == BODY_VERSION_PACK || v3 {
            Some(r.u32("truncated pack directory")?)
        } else {
            None
        };
        // In v3 a count of 0 says "not a pack"; in v2 it is an empty directory, which
        // validate() refuses.
        let pack = match pack_count.filter(|&n| !(v3 && n == 0)) {
            Some(n) => {
                if n > MAX_PACK_MEMBERS || n as usize > r.bytes.len() / PACK_ENTRY_LEN {
                    return Err(malformed("pack member count exceeds the bytes present"));
                }
                // Bounded above by the bytes present, so the allocation is too.
                let mut members = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let offset = r.u64("truncated pack directory")?;
                    let len = r.u64("truncated pack directory")?;
                    members.push(PackRange { offset, len });
                }
                Some(members)
            }
            None => None,
        };
        if !r.bytes.is_empty() {
            return Err(malformed("trailing bytes after the last segment"));
        }
        let m = Manifest {
            version,
            size,
            geometry,
            segments,
            pack,
        };
        m.validate()?;
        Ok(m)
    }

    /// Seals the manifest: the file key wrapped under `wrap`, the body encrypted under a key
    /// derived from `key`. Random nonces, so sealing twice gives different bytes (and ids).
    pub fn seal(&self, key: &FileKey, wrap: &WrapKey) -> Result<SealedManifest> {
        let mut body = self.encode_body()?;
        let wrap_nonce = keys::random_nonce()?;
        let body_nonce = keys::random_nonce()?;
        let mut out = Vec::with_capacity(ENVELOPE_HEADER_LEN + body.len() + TAG_LEN);
        out.extend_from_slice(&ENVELOPE_MAGIC);
        out.extend_from_slice(&ENVELOPE_VERSION.to_le_bytes());
        out.extend_from_slice(&wrap_nonce);
        let mut wrapped = key.as_bytes().to_vec();
        aead::seal_in_place(wrap.as_bytes(), &wrap_nonce, &out, &mut wrapped);
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&body_nonce);
        let body_key = keys::manifest_body_key(key);
        aead::seal_in_place(&body_key, &body_nonce, &out, &mut body);
        out.extend_from_slice(&body);
        let id = FileId(*blake3::hash(&out).as_bytes());
        Ok(SealedManifest { bytes: out, id })
    }

    /// Opens a sealed manifest with the owner's wrap key, returning it and its file key.
    pub fn open(bytes: &[u8], wrap: &WrapKey) -> Result<(Manifest, FileKey)> {
        check_envelope(bytes)?;
        let aad = &bytes[..22];
        let mut wrapped = bytes[22..22 + 32 + TAG_LEN].to_vec();
        let nonce: [u8; 12] = array_at(bytes, 10);
        aead::open_in_place(wrap.as_bytes(), &nonce, aad, &mut wrapped)
            .map_err(|_| Error::WrongKey { what: "wrap key" })?;
        let key = FileKey::from_bytes(array_at(&wrapped, 0));
        zeroize::Zeroize::zeroize(&mut wrapped);
        let manifest = Self::open_with_key(bytes, &key)?;
        Ok((manifest, key))
    }

    /// Opens a sealed manifest with its file key (how a shared file is read).
    pub fn open_with_key(bytes: &[u8], key: &FileKey) -> Result<Manifest> {
        check_envelope(bytes)?;
        let nonce: [u8; 12] = array_at(bytes, ENVELOPE_HEADER_LEN - 12);
        let mut body = bytes[ENVELOPE_HEADER_LEN..].to_vec();
        let body_key = keys::manifest_body_key(key);
        aead::open_in_place(&body_key, &nonce, &bytes[..ENVELOPE_HEADER_LEN], &mut body)
            .map_err(|_| Error::WrongKey { what: "file key" })?;
        Self::decode_body(&body)
    }
}

/// Checks a segment's extent list: at most [`MAX_EXTENTS`], each non-empty, sorted, disjoint and
/// not touching the next (holes between data), and inside the segment's `len` bytes. Holes that
/// overlap data or run past the size are refused here.
fn check_extents(list: &[Extent], len: u32) -> Result<()> {
    if list.len() > MAX_EXTENTS {
        return Err(Error::TooLarge {
            what: "extents of a segment",
            size: list.len() as u64,
            limit: MAX_EXTENTS as u64,
        });
    }
    let mut prev_end: Option<u64> = None;
    for e in list {
        if e.len == 0 {
            return Err(malformed("an empty extent"));
        }
        if prev_end.is_some_and(|p| u64::from(e.start) <= p) {
            return Err(malformed("extents overlap, touch or are out of order"));
        }
        if e.end() > u64::from(len) {
            return Err(malformed("an extent runs past the segment's length"));
        }
        prev_end = Some(e.end());
    }
    Ok(())
}

/// Checks magic, version and the length bounds of an envelope, so that the fixed offsets used
/// by `open` are in range.
fn check_envelope(bytes: &[u8]) -> Result<()> {
    if bytes.len() < ENVELOPE_HEADER_LEN + TAG_LEN {
        return Err(malformed("sealed manifest shorter than its header"));
    }
    if bytes.len() > ENVELOPE_HEADER_LEN + MAX_BODY_LEN + TAG_LEN {
        return Err(Error::TooLarge {
            what: "sealed manifest",
            size: bytes.len() as u64,
            limit: (ENVELOPE_HEADER_LEN + MAX_BODY_LEN + TAG_LEN) as u64,
        });
    }
    if bytes[..8] != ENVELOPE_MAGIC {
        return Err(malformed("not a sealed manifest (bad magic)"));
    }
    let found = u16::from_le_bytes([bytes[8], bytes[9]]);
    if found != ENVELOPE_VERSION {
        return Err(Error::UnknownManifestVersion {
            found,
            supported: ENVELOPE_VERSION,
        });
    }
    Ok(())
}

/// `N` bytes at `at`; callers have checked the length.
fn array_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

#[allow(dead_code)]
const _: () = assert!(MAX_SHARDS as usize * 2 <= u16::MAX as usize);

#[cfg(test)]
mod tests;
