//! Encoding: one segment at a time ([`encode_segment`], pure so segments can run in parallel)
//! and the streaming [`Encoder`] that reads a `Read` segment by segment, hands each encoded
//! segment to a sink and returns the [`Manifest`].
//!
//! Per segment: split into `k` data shards (zero-padded), Reed-Solomon parity, then per shard
//! AES-256-GCM under its own key with the shard's identity as associated data, CRC32 and
//! BLAKE3 of ciphertext ‖ tag. Replicated segments: each copy is the whole segment under its
//! own key.

use std::io::{ErrorKind, Read};

use crate::error::{Error, Result};
use crate::manifest::{Manifest, SegmentEntry, ShardEntry};
use crate::pipeline::aead::{self, TAG_LEN};
use crate::pipeline::decode::shard_aad;
use crate::pipeline::keys::{FileKey, shard_key};
use crate::pipeline::layout::{Geometry, Redundancy};
use crate::pipeline::rs;
use crate::types::{ShardId, VersionId};

/// One encoded shard: what goes to a holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedShard {
    /// Index in the segment (data shards first).
    pub index: u16,
    /// BLAKE3 of `bytes`.
    pub id: ShardId,
    /// CRC32 of `bytes`.
    pub crc: u32,
    /// The AES-GCM nonce used.
    pub nonce: [u8; 12],
    /// Ciphertext ‖ 16-byte tag.
    pub bytes: Vec<u8>,
}

/// One encoded segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedSegment {
    /// The segment's number in the file.
    pub index: u64,
    /// Plain bytes of the segment.
    pub len: u32,
    /// Plain bytes per shard (before the tag).
    pub shard_len: u32,
    /// The shards, index 0 first.
    pub shards: Vec<EncodedShard>,
}

impl EncodedSegment {
    /// The manifest entry for this segment (holders empty: the network fills them).
    pub fn entry(&self) -> SegmentEntry {
        SegmentEntry {
            len: self.len,
            shard_len: self.shard_len,
            shards: self
                .shards
                .iter()
                .map(|s| ShardEntry {
                    id: s.id,
                    len: self.shard_len + TAG_LEN as u32,
                    crc: s.crc,
                    nonce: s.nonce,
                    holders: Vec::new(),
                })
                .collect(),
        }
    }
}

/// Encrypts a plain shard buffer in place (tag appended) and computes its id and CRC.
fn seal_shard(
    file_key: &FileKey,
    version: VersionId,
    segment: u64,
    index: u16,
    shard_len: u32,
    mut buf: Vec<u8>,
) -> EncodedShard {
    let (key, nonce) = shard_key(file_key, version, segment, index);
    let aad = shard_aad(version, segment, index, shard_len);
    aead::seal_in_place(&key, &nonce, &aad, &mut buf);
    EncodedShard {
        index,
        id: ShardId(*blake3::hash(&buf).as_bytes()),
        crc: crc32fast::hash(&buf),
        nonce,
        bytes: buf,
    }
}

/// Encodes segment number `segment` holding `data` (1..=segment_size bytes).
pub fn encode_segment(
    geometry: &Geometry,
    file_key: &FileKey,
    version: VersionId,
    segment: u64,
    data: &[u8],
) -> Result<EncodedSegment> {
    geometry.validate()?;
    let len = u32::try_from(data.len())
        .ok()
        .filter(|l| u64::from(*l) <= geometry.segment_size() && *l > 0)
        .ok_or_else(|| Error::InvalidLayout {
            reason: format!(
                "segment of {} bytes (1..={})",
                data.len(),
                geometry.segment_size()
            ),
        })?;
    let shard_len = geometry.shard_len(len);
    let sl = shard_len as usize;
    // Every buffer gets room for the tag up front, so sealing never reallocates.
    let cap = sl + TAG_LEN;
    let plain: Vec<Vec<u8>> = match geometry.redundancy {
        Redundancy::Replicated { copies } => (0..copies)
            .map(|_| {
                let mut b = Vec::with_capacity(cap);
                b.extend_from_slice(data);
                b
            })
            .collect(),
        Redundancy::ReedSolomon { k, m } => {
            let mut shards: Vec<Vec<u8>> = Vec::with_capacity(usize::from(k) + usize::from(m));
            for i in 0..usize::from(k) {
                let mut b = Vec::with_capacity(cap);
                let start = (i * sl).min(data.len());
                let end = ((i + 1) * sl).min(data.len());
                b.extend_from_slice(&data[start..end]);
                b.resize(sl, 0);
                shards.push(b);
            }
            let mut parity: Vec<Vec<u8>> = (0..m)
                .map(|_| {
                    let mut b = Vec::with_capacity(cap);
                    b.resize(sl, 0);
                    b
                })
                .collect();
            rs::encode(&shards, &mut parity)?;
            shards.append(&mut parity);
            shards
        }
    };
    let shards = plain
        .into_iter()
        .enumerate()
        .map(|(i, buf)| {
            // At most 200 shards per segment (validated geometry).
            let index = i as u16;
            seal_shard(file_key, version, segment, index, shard_len, buf)
        })
        .collect();
    Ok(EncodedSegment {
        index: segment,
        len,
        shard_len,
        shards,
    })
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Stream {
                    what: "reading the file",
                    source: e,
                });
            }
        }
    }
    Ok(filled)
}

/// The streaming encoder: reads one segment per worker at a time, so memory is bounded by
/// segment size × parallelism (inputs plus their encoded shards), never by file size.
#[derive(Debug)]
pub struct Encoder<'a> {
    geometry: Geometry,
    key: &'a FileKey,
    version: VersionId,
    parallelism: usize,
}

impl<'a> Encoder<'a> {
    /// An encoder for one file version, one segment at a time.
    pub fn new(geometry: Geometry, key: &'a FileKey, version: VersionId) -> Self {
        Encoder {
            geometry,
            key,
            version,
            parallelism: 1,
        }
    }

    /// Encodes up to `n` segments at once on `n` threads (1 = on the calling thread).
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.clamp(1, 64);
        self
    }

    /// Reads `reader` to its end, passes each encoded segment to `sink` in file order, and
    /// returns the manifest (holders empty). An error from the reader or the sink stops the
    /// encoding and is returned.
    pub fn encode<R, F>(&self, mut reader: R, mut sink: F) -> Result<Manifest>
    where
        R: Read,
        F: FnMut(EncodedSegment) -> Result<()>,
    {
        self.geometry.validate()?;
        rs::check_cpu()?;
        let seg_size =
            usize::try_from(self.geometry.segment_size()).map_err(|_| Error::InvalidLayout {
                reason: "segment size exceeds the address space".into(),
            })?;
        let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(self.parallelism);
        let mut manifest = Manifest {
            version: self.version,
            size: 0,
            geometry: self.geometry,
            segments: Vec::new(),
        };
        let mut next_segment = 0u64;
        let mut eof = false;
        while !eof {
            // Fill up to `parallelism` segment buffers (reused across rounds).
            let mut lens = Vec::with_capacity(self.parallelism);
            for i in 0..self.parallelism {
                if bufs.len() <= i {
                    bufs.push(vec![0u8; seg_size]);
                }
                let n = read_full(&mut reader, &mut bufs[i])?;
                if n > 0 {
                    lens.push(n);
                }
                if n < seg_size {
                    eof = true;
                    break;
                }
            }
            let encoded: Vec<Result<EncodedSegment>> = if lens.len() <= 1 {
                lens.iter()
                    .map(|&n| self.encode_one(next_segment, &bufs[0][..n]))
                    .collect()
            } else {
                std::thread::scope(|s| {
                    let handles: Vec<_> = lens
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| {
                            let data = &bufs[i][..n];
                            let seg = next_segment + i as u64;
                            s.spawn(move || self.encode_one(seg, data))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        .collect()
                })
            };
            for seg in encoded {
                let seg = seg?;
                manifest.size += u64::from(seg.len);
                manifest.segments.push(seg.entry());
                next_segment += 1;
                sink(seg)?;
            }
        }
        manifest.validate()?;
        Ok(manifest)
    }

    fn encode_one(&self, segment: u64, data: &[u8]) -> Result<EncodedSegment> {
        encode_segment(&self.geometry, self.key, self.version, segment, data)
    }
}

/// [`Encoder::encode`] with one segment at a time on the calling thread.
pub fn encode_stream<R, F>(
    reader: R,
    geometry: Geometry,
    key: &FileKey,
    version: VersionId,
    sink: F,
) -> Result<Manifest>
where
    R: Read,
    F: FnMut(EncodedSegment) -> Result<()>,
{
    Encoder::new(geometry, key, version).encode(reader, sink)
}
