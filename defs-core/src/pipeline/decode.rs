//! Decoding: which segments and data shards cover a byte range ([`plan`]), verifying and
//! decrypting one shard ([`decrypt_shard`]), rebuilding a segment from any `k` good shards
//! ([`decode_segment`]), and the streaming [`Decoder`] that writes a file or a range to a
//! `Write`, one segment in memory at a time.
//!
//! A shard is checked by length, CRC32 and the AES-GCM tag. The decoder does not recompute the
//! BLAKE3 id: the tag already authenticates the bytes under a key only the reader has, and the
//! id is for those without the key (holders, scrub).

use std::io::Write;

use crate::error::{Error, Result};
use crate::manifest::{Manifest, SegmentEntry, ShardEntry};
use crate::pipeline::aead::{self, TAG_LEN};
use crate::pipeline::keys::{FileKey, shard_key};
use crate::pipeline::layout::Redundancy;
use crate::pipeline::rs;
use crate::types::VersionId;

/// The associated data of a shard: its identity. VersionId (16) ‖ segment u64 LE ‖
/// index u16 LE ‖ plain shard length u32 LE, 30 bytes.
pub fn shard_aad(version: VersionId, segment: u64, index: u16, shard_len: u32) -> [u8; 30] {
    let mut aad = [0u8; 30];
    aad[..16].copy_from_slice(&version.0);
    aad[16..24].copy_from_slice(&segment.to_le_bytes());
    aad[24..26].copy_from_slice(&index.to_le_bytes());
    aad[26..].copy_from_slice(&shard_len.to_le_bytes());
    aad
}

/// The part of one segment a range read needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRead {
    /// The segment.
    pub segment: u64,
    /// First byte wanted, relative to the segment's start.
    pub offset_in_segment: u32,
    /// Bytes wanted from this segment.
    pub len: u32,
    /// The stored bytes (stored offsets, see [`SegmentEntry::stored_offset`]) that hold the
    /// data of those bytes; empty when they are all hole.
    pub stored: std::ops::Range<u32>,
    /// The data shards that hold those stored bytes (for a replicated segment: copy 0; any copy
    /// will do); none when the bytes are all hole.
    pub data_shards: Vec<u16>,
}

fn out_of_range(what: String) -> Error {
    Error::InvalidLayout { reason: what }
}

/// The entry of `segment`, checked against the geometry so that the shard indexing below can
/// rely on it even for a hand-built manifest (decoded ones are validated whole).
fn segment_entry(manifest: &Manifest, segment: u64) -> Result<&SegmentEntry> {
    let entry = usize::try_from(segment)
        .ok()
        .and_then(|s| manifest.segments.get(s))
        .ok_or_else(|| {
            out_of_range(format!(
                "segment {segment} of a manifest with {}",
                manifest.segments.len()
            ))
        })?;
    let g = &manifest.geometry;
    let stored = entry.stored_len();
    let shards = if stored == 0 { 0 } else { g.total_shards() };
    if entry.shards.len() != usize::from(shards) {
        return Err(Error::MalformedManifest {
            what: "shard count does not match the geometry",
        });
    }
    let shard_len = if stored == 0 { 0 } else { g.shard_len(stored) };
    if entry.len == 0 || entry.shard_len != shard_len {
        return Err(Error::MalformedManifest {
            what: "shard length does not match the segment length",
        });
    }
    Ok(entry)
}

/// The segments and data shards that cover `len` bytes at `offset`. The range is clipped at
/// the end of the file (like `read(2)`), so a range past the end plans nothing.
pub fn plan(manifest: &Manifest, offset: u64, len: u64) -> Result<Vec<SegmentRead>> {
    let end = offset.saturating_add(len).min(manifest.size);
    if offset >= end {
        return Ok(Vec::new());
    }
    let g = &manifest.geometry;
    let seg_size = g.segment_size().max(1);
    let mut reads = Vec::new();
    for segment in offset / seg_size..=(end - 1) / seg_size {
        let entry = segment_entry(manifest, segment)?;
        let start = segment * seg_size;
        let a = offset.max(start) - start;
        let b = end.min(start + u64::from(entry.len)) - start;
        if a >= b {
            return Err(out_of_range(format!(
                "segment {segment} is shorter than the manifest's size says"
            )));
        }
        let (sa, sb) = (entry.stored_offset(a), entry.stored_offset(b));
        let data_shards = match g.redundancy {
            _ if sa >= sb => Vec::new(),
            Redundancy::Replicated { .. } => vec![0],
            Redundancy::ReedSolomon { .. } => {
                let sl = u64::from(entry.shard_len.max(1));
                // Shard indices are below k ≤ 100.
                (sa / sl..=(sb - 1) / sl).map(|i| i as u16).collect()
            }
        };
        reads.push(SegmentRead {
            segment,
            // a < b ≤ entry.len, a u32; stored offsets are at most that.
            offset_in_segment: a as u32,
            len: (b - a) as u32,
            stored: sa as u32..sb as u32,
            data_shards,
        });
    }
    Ok(reads)
}

/// Verifies shard `index` of `segment` (length, CRC32, authentication tag with the shard's
/// identity as associated data) and decrypts it in place, returning the plain shard.
///
/// A shard that fails is [`Error::CorruptShard`] naming its id; a file key that is not this
/// manifest's is [`Error::WrongKey`].
pub fn decrypt_shard(
    manifest: &Manifest,
    key: &FileKey,
    segment: u64,
    index: u16,
    mut bytes: Vec<u8>,
) -> Result<Vec<u8>> {
    let seg = segment_entry(manifest, segment)?;
    let entry: &ShardEntry = seg.shards.get(usize::from(index)).ok_or_else(|| {
        out_of_range(format!(
            "shard {index} of segment {segment}, which has {}",
            seg.shards.len()
        ))
    })?;
    let corrupt = |reason| Error::CorruptShard {
        id: entry.id,
        reason,
    };
    if u64::try_from(bytes.len()).ok() != Some(u64::from(entry.len))
        || u64::from(entry.len) != u64::from(seg.shard_len) + TAG_LEN as u64
    {
        return Err(corrupt("wrong length"));
    }
    if crc32fast::hash(&bytes) != entry.crc {
        return Err(corrupt("CRC32 mismatch"));
    }
    let (shard_key, nonce) = shard_key(key, manifest.version, segment, index);
    if nonce != entry.nonce {
        // The nonce is derived from the file key: a mismatch means another key.
        return Err(Error::WrongKey { what: "file key" });
    }
    let aad = shard_aad(manifest.version, segment, index, seg.shard_len);
    aead::open_in_place(&shard_key, &nonce, &aad, &mut bytes)
        .map_err(|_| corrupt("authentication failed: tampered, swapped or not this shard"))?;
    Ok(bytes)
}

/// Turns the good plain shards of a segment into its data shards: rebuilds missing data shards
/// from parity when needed. `plain` has one slot per shard index.
fn complete(
    manifest: &Manifest,
    segment: u64,
    plain: &mut [Option<Vec<u8>>],
    good: usize,
) -> Result<()> {
    let g = &manifest.geometry;
    let need = usize::from(g.data_shards());
    if good < need {
        return Err(Error::TooFewShards {
            segment,
            need: need as u16,
            have: good as u16,
        });
    }
    match g.redundancy {
        Redundancy::Replicated { .. } => {
            if plain[0].is_none() {
                let copy = plain.iter_mut().find_map(Option::take);
                plain[0] = copy;
            }
            Ok(())
        }
        Redundancy::ReedSolomon { k, .. } => {
            if plain[..usize::from(k)].iter().all(Option::is_some) {
                rs::check_cpu()
            } else {
                rs::reconstruct_data(k, plain)
            }
        }
    }
}

/// Decrypts a segment's shards (`shards[i]` is the stored bytes of shard `i`, `None` when
/// missing) and returns the segment's plain bytes. Shards that fail verification count as
/// missing; with fewer than `k` good ones the error is [`Error::TooFewShards`].
pub fn decode_segment(
    manifest: &Manifest,
    key: &FileKey,
    segment: u64,
    shards: Vec<Option<Vec<u8>>>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_segment_into(manifest, key, segment, shards, &mut out)?;
    Ok(out)
}

/// [`decode_segment`] appending to `out`, so a caller decoding many segments reuses one buffer
/// (a fresh multi-MiB allocation per segment costs page faults that halved decode throughput
/// in `benches/pipeline.rs`).
pub fn decode_segment_into(
    manifest: &Manifest,
    key: &FileKey,
    segment: u64,
    shards: Vec<Option<Vec<u8>>>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let seg = segment_entry(manifest, segment)?;
    if shards.len() != seg.shards.len() {
        return Err(out_of_range(format!(
            "{} shards given for segment {segment}, which has {}",
            shards.len(),
            seg.shards.len()
        )));
    }
    let mut plain: Vec<Option<Vec<u8>>> = Vec::with_capacity(shards.len());
    for (i, bytes) in shards.into_iter().enumerate() {
        plain.push(match bytes {
            None => None,
            Some(b) => match decrypt_shard(manifest, key, segment, i as u16, b) {
                Ok(p) => Some(p),
                Err(e @ Error::WrongKey { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(segment, index = i, error = %e, "shard treated as missing");
                    None
                }
            },
        });
    }
    assemble_into(manifest, segment, plain, out)
}

/// Appends a segment's plain bytes to `out` from its already verified and decrypted shards
/// (`plain[i]` is shard `i`, `None` when missing or bad), rebuilding missing data shards from
/// parity when needed: the second half of [`decode_segment_into`], for callers that fetched
/// and decrypted only some shards first (a range read that found a data shard bad).
///
/// # Errors
/// [`Error::TooFewShards`] with fewer than `k` shards; a layout error for a bad segment.
pub fn assemble_into(
    manifest: &Manifest,
    segment: u64,
    mut plain: Vec<Option<Vec<u8>>>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let seg = segment_entry(manifest, segment)?;
    if plain.len() != seg.shards.len() {
        return Err(out_of_range(format!(
            "{} shards given for segment {segment}, which has {}",
            plain.len(),
            seg.shards.len()
        )));
    }
    let good = plain.iter().filter(|p| p.is_some()).count();
    complete(manifest, segment, &mut plain, good)?;
    let mut left = seg.stored_len() as usize;
    out.reserve(left);
    for p in plain[..usize::from(manifest.geometry.data_shards())]
        .iter()
        .flatten()
    {
        let take = left.min(p.len());
        out.extend_from_slice(&p[..take]);
        left -= take;
    }
    Ok(())
}

/// The streaming decoder: writes a file or a byte range to a `Write`, fetching shards through a
/// closure, with one segment in memory at a time.
#[derive(Debug)]
pub struct Decoder<'a> {
    manifest: &'a Manifest,
    key: &'a FileKey,
}

impl<'a> Decoder<'a> {
    /// A decoder for the file version `manifest` describes, encrypted under `key`.
    pub fn new(manifest: &'a Manifest, key: &'a FileKey) -> Self {
        Decoder { manifest, key }
    }

    /// Writes the whole file to `out`; returns the bytes written.
    pub fn read_all<F, W>(&self, fetch: F, out: &mut W) -> Result<u64>
    where
        F: FnMut(u64, u16, &ShardEntry) -> Option<Vec<u8>>,
        W: Write,
    {
        self.read_range(0, self.manifest.size, fetch, out)
    }

    /// Writes `len` bytes at `offset` (clipped at the end of the file) to `out`; returns the
    /// bytes written. `fetch(segment, index, entry)` returns a shard's stored bytes, or `None`
    /// when no holder has it. Only the data shards covering the range are fetched; when one is
    /// missing or fails verification, further shards are fetched until `k` good ones rebuild the
    /// segment.
    pub fn read_range<F, W>(&self, offset: u64, len: u64, mut fetch: F, out: &mut W) -> Result<u64>
    where
        F: FnMut(u64, u16, &ShardEntry) -> Option<Vec<u8>>,
        W: Write,
    {
        let mut written = 0u64;
        let mut logical = Vec::new();
        let mut stored = Vec::new();
        for read in plan(self.manifest, offset, len)? {
            let seg = segment_entry(self.manifest, read.segment)?;
            let a = read.stored.start as usize;
            let b = read.stored.end as usize;
            stored.clear();
            if a < b {
                let plain = self.fetch_segment(&read, &mut fetch)?;
                match self.manifest.geometry.redundancy {
                    Redundancy::Replicated { .. } => {
                        if let Some(p) = &plain[0] {
                            stored.extend_from_slice(&p[a..b]);
                        }
                    }
                    Redundancy::ReedSolomon { .. } => {
                        let sl = seg.shard_len as usize;
                        for &i in &read.data_shards {
                            let i = usize::from(i);
                            let s_start = i * sl;
                            let from = a.max(s_start) - s_start;
                            let to = b.min(s_start + sl) - s_start;
                            if let Some(p) = &plain[i] {
                                stored.extend_from_slice(&p[from..to]);
                            }
                        }
                    }
                }
            }
            // The segment's bytes: data from the stored bytes, zeros for holes.
            let want =
                u64::from(read.offset_in_segment)..u64::from(read.offset_in_segment + read.len);
            let bytes = if seg.extents.is_none() {
                &stored
            } else {
                logical.clear();
                seg.expand_into(want, a as u64, &stored, &mut logical)?;
                &logical
            };
            out.write_all(bytes).map_err(|e| Error::Stream {
                what: "writing decoded bytes",
                source: e,
            })?;
            written += u64::from(read.len);
        }
        Ok(written)
    }

    /// Fetches and verifies the shards `read` needs, falling back to any `k`.
    fn fetch_segment<F>(&self, read: &SegmentRead, fetch: &mut F) -> Result<Vec<Option<Vec<u8>>>>
    where
        F: FnMut(u64, u16, &ShardEntry) -> Option<Vec<u8>>,
    {
        let seg = segment_entry(self.manifest, read.segment)?;
        let total = seg.shards.len();
        let need = usize::from(self.manifest.geometry.data_shards());
        let mut plain: Vec<Option<Vec<u8>>> = vec![None; total];
        let mut good = 0;
        let mut try_one = |i: usize, plain: &mut Vec<Option<Vec<u8>>>| -> Result<bool> {
            let Some(bytes) = fetch(read.segment, i as u16, &seg.shards[i]) else {
                return Ok(false);
            };
            match decrypt_shard(self.manifest, self.key, read.segment, i as u16, bytes) {
                Ok(p) => {
                    plain[i] = Some(p);
                    Ok(true)
                }
                Err(e @ Error::WrongKey { .. }) => Err(e),
                Err(e) => {
                    tracing::warn!(segment = read.segment, index = i, error = %e, "shard treated as missing");
                    Ok(false)
                }
            }
        };
        for &i in &read.data_shards {
            good += usize::from(try_one(usize::from(i), &mut plain)?);
        }
        if read
            .data_shards
            .iter()
            .all(|&i| plain[usize::from(i)].is_some())
        {
            return Ok(plain);
        }
        for i in 0..total {
            if good >= need {
                break;
            }
            if !read.data_shards.contains(&(i as u16)) {
                good += usize::from(try_one(i, &mut plain)?);
            }
        }
        complete(self.manifest, read.segment, &mut plain, good)?;
        Ok(plain)
    }
}
