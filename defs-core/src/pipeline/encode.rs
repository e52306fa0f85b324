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
    /// Hands the shard buffers back for reuse by [`encode_segment_with`].
    pub fn recycle(self, pool: &mut Vec<Vec<u8>>) {
        pool.extend(self.shards.into_iter().map(|s| s.bytes));
    }

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
            extents: None,
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
    encode_segment_with(geometry, file_key, version, segment, data, &mut Vec::new())
}

/// [`encode_segment`] taking shard buffers from `pool` (see [`EncodedSegment::recycle`]).
/// Fresh multi-MiB buffers per segment cost page faults that more than halved encode
/// throughput in `benches/pipeline.rs`; a caller that is done with a segment's bytes hands the
/// buffers back.
pub fn encode_segment_with(
    geometry: &Geometry,
    file_key: &FileKey,
    version: VersionId,
    segment: u64,
    data: &[u8],
    pool: &mut Vec<Vec<u8>>,
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
    let seal = |i: usize, buf: Vec<u8>| {
        // At most 200 shards per segment (validated geometry).
        seal_shard(file_key, version, segment, i as u16, shard_len, buf)
    };
    let mut buffer = || {
        let mut b = pool.pop().unwrap_or_default();
        b.clear();
        b.reserve_exact(cap);
        b
    };
    let mut copy_of = |bytes: &[u8]| {
        let mut b = buffer();
        b.extend_from_slice(bytes);
        b.resize(sl, 0);
        b
    };
    let shards = match geometry.redundancy {
        Redundancy::Replicated { copies } => (0..usize::from(copies))
            .map(|i| seal(i, copy_of(data)))
            .collect(),
        Redundancy::ReedSolomon { k, m } => {
            // Parity straight from the caller's bytes (only a short last chunk is padded), then
            // each shard copied, sealed and hashed while it is hot in cache: one pass over a
            // 1 MiB shard at a time instead of over the whole segment per step.
            let k = usize::from(k);
            let padded: Vec<Vec<u8>> = (0..k)
                .filter(|i| (i + 1) * sl > data.len())
                .map(|i| {
                    let mut b = Vec::with_capacity(sl);
                    b.extend_from_slice(&data[(i * sl).min(data.len())..]);
                    b.resize(sl, 0);
                    b
                })
                .collect();
            let full = data.len() / sl;
            let chunks: Vec<&[u8]> = (0..k)
                .map(|i| {
                    if i < full {
                        &data[i * sl..(i + 1) * sl]
                    } else {
                        padded[i - full].as_slice()
                    }
                })
                .collect();
            let mut parity: Vec<Vec<u8>> = (0..m)
                .map(|_| {
                    let mut b = copy_of(&[]);
                    b.resize(sl, 0);
                    b
                })
                .collect();
            rs::encode(&chunks, &mut parity)?;
            let mut shards = Vec::with_capacity(k + parity.len());
            for (i, chunk) in chunks.iter().enumerate() {
                shards.push(seal(i, copy_of(chunk)));
            }
            for (j, p) in parity.into_iter().enumerate() {
                shards.push(seal(k + j, p));
            }
            shards
        }
    };
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
    pub fn encode<R, F>(&self, reader: R, mut sink: F) -> Result<Manifest>
    where
        R: Read,
        F: FnMut(EncodedSegment) -> Result<()>,
    {
        self.run(reader, |seg: &mut EncodedSegment| {
            sink(std::mem::replace(
                seg,
                EncodedSegment {
                    index: seg.index,
                    len: seg.len,
                    shard_len: seg.shard_len,
                    shards: Vec::new(),
                },
            ))
        })
    }

    /// Like [`Encoder::encode`], but the sink borrows each segment, and the shard buffers it
    /// leaves in place (it may `std::mem::take` any it wants to keep) are reused for the next
    /// segments: no fresh allocation per segment once the pool is warm. For sinks that write
    /// shards out before returning (a local store, a socket).
    pub fn encode_recycling<R, F>(&self, reader: R, sink: F) -> Result<Manifest>
    where
        R: Read,
        F: FnMut(&mut EncodedSegment) -> Result<()>,
    {
        self.run(reader, sink)
    }

    fn run<R, F>(&self, mut reader: R, mut sink: F) -> Result<Manifest>
    where
        R: Read,
        F: FnMut(&mut EncodedSegment) -> Result<()>,
    {
        self.geometry.validate()?;
        rs::check_cpu()?;
        let seg_size =
            usize::try_from(self.geometry.segment_size()).map_err(|_| Error::InvalidLayout {
                reason: "segment size exceeds the address space".into(),
            })?;
        let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(self.parallelism);
        // One pool of shard buffers per worker slot.
        let mut pools: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.parallelism];
        let mut manifest = Manifest {
            version: self.version,
            size: 0,
            geometry: self.geometry,
            segments: Vec::new(),
            pack: None,
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
                    .map(|&n| self.encode_one(next_segment, &bufs[0][..n], &mut pools[0]))
                    .collect()
            } else {
                std::thread::scope(|s| {
                    let handles: Vec<_> = lens
                        .iter()
                        .zip(pools.iter_mut())
                        .enumerate()
                        .map(|(i, (&n, pool))| {
                            let data = &bufs[i][..n];
                            let seg = next_segment + i as u64;
                            s.spawn(move || self.encode_one(seg, data, pool))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        .collect()
                })
            };
            for (i, seg) in encoded.into_iter().enumerate() {
                let mut seg = seg?;
                manifest.size += u64::from(seg.len);
                manifest.segments.push(seg.entry());
                next_segment += 1;
                sink(&mut seg)?;
                let pool = &mut pools[i];
                pool.extend(
                    seg.shards
                        .into_iter()
                        .map(|s| s.bytes)
                        .filter(|b| b.capacity() > 0),
                );
            }
        }
        manifest.validate()?;
        Ok(manifest)
    }

    fn encode_one(
        &self,
        segment: u64,
        data: &[u8],
        pool: &mut Vec<Vec<u8>>,
    ) -> Result<EncodedSegment> {
        encode_segment_with(&self.geometry, self.key, self.version, segment, data, pool)
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
