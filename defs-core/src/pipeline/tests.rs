//! Cross-module tests of the pipeline: encode → lose/corrupt/swap shards → decode.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::rc::Rc;

use proptest::prelude::*;

use super::*;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::types::VersionId;

type Store = HashMap<(u64, u16), Vec<u8>>;

fn key() -> FileKey {
    FileKey::from_bytes([0x42; 32])
}

const VERSION: VersionId = VersionId([7; 16]);

/// Deterministic pseudo-random bytes (so tests can regenerate any position).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

fn encode_all(g: Geometry, plain: &[u8]) -> (Manifest, Store) {
    let mut store = Store::new();
    let k = key();
    let m = encode_stream(plain, g, &k, VERSION, |seg| {
        for sh in seg.shards {
            store.insert((seg.index, sh.index), sh.bytes);
        }
        Ok(())
    })
    .unwrap();
    (m, store)
}

fn read_all(m: &Manifest, store: &Store) -> crate::Result<Vec<u8>> {
    let k = key();
    let mut out = Vec::new();
    let n = Decoder::new(m, &k).read_all(|s, i, _| store.get(&(s, i)).cloned(), &mut out)?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

fn geometries(shard: u32) -> Vec<Geometry> {
    vec![
        // `file`: one whole-file shard, replicated (shard size = file size; tested via choose below)
        Geometry::replicated(2, shard).unwrap(),
        // `slice`
        Geometry::replicated(3, shard).unwrap(),
        // `rs-size` / `rs-ratio` / `auto` end up here
        Geometry::reed_solomon(4, 2, shard).unwrap(),
        Geometry::reed_solomon(3, 0, shard).unwrap(),
        Geometry::reed_solomon(1, 1, shard).unwrap(),
        Geometry::reed_solomon(10, 4, shard).unwrap(),
    ]
}

#[test]
fn round_trips_every_geometry_at_edge_sizes() {
    let shard = 64usize;
    for g in geometries(shard as u32) {
        let seg = g.segment_size() as usize;
        for size in [
            0,
            1,
            shard - 1,
            shard,
            shard + 1,
            seg - 1,
            seg,
            seg + 1,
            3 * seg + 7,
        ] {
            let plain = data(size, size as u64);
            let (m, store) = encode_all(g, &plain);
            assert_eq!(m.size, size as u64);
            assert_eq!(m.segments.len() as u64, g.segment_count(size as u64));
            assert_eq!(read_all(&m, &store).unwrap(), plain, "{g:?} size {size}");
            for s in 0..m.segments.len() as u64 {
                let shards = (0..g.total_shards())
                    .map(|i| store.get(&(s, i)).cloned())
                    .collect();
                let got = decode_segment(&m, &key(), s, shards).unwrap();
                let start = (s * g.segment_size()) as usize;
                assert_eq!(got, &plain[start..start + got.len()]);
            }
        }
    }
}

#[test]
fn round_trips_every_mode_chosen_by_policy() {
    let cfg = LayoutConfig::default();
    for mode in [
        Mode::Auto,
        Mode::File,
        Mode::Slice,
        Mode::RsSize,
        Mode::RsRatio,
    ] {
        let cfg = LayoutConfig {
            mode,
            shard_size: layout::MIN_SHARD_SIZE,
            small_file_max: 3000,
            ..cfg.clone()
        };
        for size in [0usize, 1, 2999, 3001, 50_000] {
            let g = choose(size as u64, 14, &cfg).unwrap();
            let plain = data(size, 9);
            let (m, store) = encode_all(g, &plain);
            assert_eq!(read_all(&m, &store).unwrap(), plain, "{mode} {size}");
        }
    }
}

fn subsets(n: u16, r: usize) -> Vec<Vec<u16>> {
    let mut out = Vec::new();
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize == r {
            out.push((0..n).filter(|i| mask & (1 << i) != 0).collect());
        }
    }
    out
}

#[test]
fn any_m_lost_shards_decode_exactly_and_m_plus_1_do_not() {
    for g in [
        Geometry::reed_solomon(4, 2, 64).unwrap(),
        Geometry::reed_solomon(2, 3, 64).unwrap(),
        Geometry::replicated(3, 64).unwrap(),
    ] {
        let plain = data(2 * g.segment_size() as usize + 100, 3);
        let (m, store) = encode_all(g, &plain);
        let total = g.total_shards();
        let parity = usize::from(total) - usize::from(g.data_shards());
        for lost in subsets(total, parity) {
            let mut s = store.clone();
            for seg in 0..m.segments.len() as u64 {
                for &i in &lost {
                    s.remove(&(seg, i));
                }
            }
            assert_eq!(read_all(&m, &s).unwrap(), plain, "{g:?} lost {lost:?}");
        }
        for lost in subsets(total, parity + 1) {
            let mut s = store.clone();
            for &i in &lost {
                s.remove(&(1, i));
            }
            match read_all(&m, &s) {
                Err(Error::TooFewShards {
                    segment: 1,
                    need,
                    have,
                }) => {
                    assert_eq!(need, u16::from(g.data_shards()));
                    assert_eq!(have, need - 1);
                }
                other => panic!("{g:?} lost {lost:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_flipped_bit_in_any_shard_is_detected_and_repaired() {
    for g in [
        Geometry::reed_solomon(4, 2, 64).unwrap(),
        Geometry::replicated(2, 100).unwrap(),
    ] {
        let plain = data(2 * g.segment_size() as usize + 10, 4);
        let (m, store) = encode_all(g, &plain);
        for (&(seg, i), bytes) in &store {
            let bit = (seg as usize * 131 + usize::from(i) * 17) % (bytes.len() * 8);
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            // Caught by CRC32...
            let err = decrypt_shard(&m, &key(), seg, i, bad.clone()).unwrap_err();
            assert!(
                matches!(err, Error::CorruptShard { id, reason: "CRC32 mismatch" } if id == m.segments[seg as usize].shards[usize::from(i)].id)
            );
            // ...and by the tag when the CRC was forged to match.
            let mut forged = m.clone();
            forged.segments[seg as usize].shards[usize::from(i)].crc = crc32fast::hash(&bad);
            let err = decrypt_shard(&forged, &key(), seg, i, bad.clone()).unwrap_err();
            assert!(
                matches!(err, Error::CorruptShard { reason, .. } if reason.starts_with("authentication"))
            );
            // The read repairs it from parity (or another copy).
            let mut s = store.clone();
            s.insert((seg, i), bad);
            assert_eq!(read_all(&forged, &s).unwrap(), plain);
            assert_eq!(read_all(&m, &s).unwrap(), plain);
        }
    }
}

#[test]
fn a_swapped_shard_is_detected_never_decoded() {
    let g = Geometry::reed_solomon(4, 2, 64).unwrap();
    let plain = data(3 * g.segment_size() as usize, 5);
    let (m, store) = encode_all(g, &plain);
    // Same length: another index of the same segment, and the same index of another segment.
    for (target, source) in [((0, 1), (0, 2)), ((0, 0), (1, 0)), ((2, 5), (0, 3))] {
        let swapped = store[&source].clone();
        assert_eq!(swapped.len(), store[&target].len());
        // Even with the manifest's CRC forged to match, the identity in the key and AAD differ.
        let mut forged = m.clone();
        forged.segments[target.0 as usize].shards[usize::from(target.1)].crc =
            crc32fast::hash(&swapped);
        for man in [&m, &forged] {
            let err = decrypt_shard(man, &key(), target.0, target.1, swapped.clone()).unwrap_err();
            assert!(matches!(err, Error::CorruptShard { .. }), "{err}");
            let mut s = store.clone();
            s.insert(target, swapped.clone());
            assert_eq!(
                read_all(man, &s).unwrap(),
                plain,
                "repaired, not silently mixed"
            );
        }
    }
}

#[test]
fn a_wrong_file_key_is_a_clear_error() {
    let g = Geometry::reed_solomon(4, 2, 64).unwrap();
    let plain = data(500, 6);
    let (m, store) = encode_all(g, &plain);
    let wrong = FileKey::from_bytes([1; 32]);
    let mut out = Vec::new();
    let err = Decoder::new(&m, &wrong)
        .read_all(|s, i, _| store.get(&(s, i)).cloned(), &mut out)
        .unwrap_err();
    assert!(matches!(err, Error::WrongKey { what: "file key" }), "{err}");
    assert!(out.is_empty());
}

#[test]
fn a_small_read_fetches_only_the_covering_data_shards() {
    let g = Geometry::reed_solomon(4, 2, 64).unwrap();
    let plain = data(1000, 8);
    let (m, store) = encode_all(g, &plain);
    let reads = plan(&m, 300, 10).unwrap();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].segment, 1);
    assert_eq!(reads[0].offset_in_segment, 44);
    assert_eq!(reads[0].data_shards, vec![0]);
    let mut fetched = Vec::new();
    let mut out = Vec::new();
    Decoder::new(&m, &key())
        .read_range(
            300,
            70,
            |s, i, _| {
                fetched.push((s, i));
                store.get(&(s, i)).cloned()
            },
            &mut out,
        )
        .unwrap();
    assert_eq!(out, &plain[300..370]);
    assert_eq!(fetched, vec![(1, 0), (1, 1)]);
    assert!(plan(&m, 1000, 5).unwrap().is_empty());
    assert!(plan(&m, u64::MAX, u64::MAX).unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn range_reads_match_the_plain_bytes(
        size in 0usize..2000,
        offset in 0u64..2100,
        len in 0u64..2100,
        lost in prop::collection::vec(0u16..6, 0..3),
        kind in 0u8..3,
    ) {
        let g = match kind {
            0 => Geometry::reed_solomon(4, 2, 61).unwrap(),
            1 => Geometry::replicated(3, 97).unwrap(),
            _ => Geometry::reed_solomon(5, 1, 40).unwrap(),
        };
        let plain = data(size, size as u64 ^ 77);
        let (m, mut store) = encode_all(g, &plain);
        let parity = usize::from(g.total_shards() - u16::from(g.data_shards()));
        for &i in lost.iter().take(parity) {
            for s in 0..m.segments.len() as u64 {
                store.remove(&(s, i % g.total_shards()));
            }
        }
        let mut out = Vec::new();
        let n = Decoder::new(&m, &key())
            .read_range(offset, len, |s, i, _| store.get(&(s, i)).cloned(), &mut out)
            .unwrap();
        let a = (offset as usize).min(size);
        let b = (offset.saturating_add(len) as usize).min(size);
        prop_assert_eq!(n as usize, out.len());
        prop_assert_eq!(&out[..], &plain[a..b]);
    }
}

/// Byte `p` of the big streamed file: a pure function of the position, so the test can
/// regenerate any segment instead of keeping 100 MiB around.
fn word(w: u64) -> u64 {
    let mut z = w.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

fn fill(pos: u64, buf: &mut [u8]) {
    // pos is always a multiple of 8 here (segment sizes and read sizes are).
    for (j, chunk) in buf.chunks_mut(8).enumerate() {
        let w = word(pos / 8 + j as u64).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

struct Generated {
    pos: Rc<Cell<u64>>,
    size: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos.get();
        let n = (buf.len() as u64).min(self.size - pos).min(1 << 20) as usize & !7;
        let n = if n == 0 {
            (self.size - pos).min(buf.len() as u64) as usize
        } else {
            n
        };
        fill(pos, &mut buf[..n]);
        self.pos.set(pos + n as u64);
        Ok(n)
    }
}

struct Checker {
    pos: u64,
    expected: Vec<u8>,
}

impl Write for Checker {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Compare in 8-byte-aligned windows.
        let start = self.pos & !7;
        let end = (self.pos + buf.len() as u64).div_ceil(8) * 8;
        self.expected.resize((end - start) as usize, 0);
        fill(start, &mut self.expected);
        let off = (self.pos - start) as usize;
        assert!(
            self.expected[off..off + buf.len()] == *buf,
            "mismatch at {}",
            self.pos
        );
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn streams_100_mib_with_bounded_memory() {
    let size = 100u64 << 20;
    let g = Geometry::reed_solomon(10, 4, 1 << 20).unwrap();
    let seg = g.segment_size();
    let parallel = 2;
    let pos = Rc::new(Cell::new(0));
    let reader = Generated {
        pos: Rc::clone(&pos),
        size,
    };
    let k = key();
    let mut sunk = 0u64;
    let m = Encoder::new(g, &k, VERSION)
        .parallelism(parallel)
        .encode_recycling(reader, |s| {
            // The encoder never reads further ahead than `parallelism` segments.
            assert!(
                pos.get() - sunk <= seg * parallel as u64,
                "read ahead {}",
                pos.get() - sunk
            );
            sunk += u64::from(s.len);
            Ok(())
        })
        .unwrap();
    assert_eq!(m.size, size);
    assert_eq!(pos.get(), size);

    // Decode, regenerating each segment's shards on demand (deterministic keys make them
    // byte-identical, which the CRC check in decrypt_shard confirms), with 4 shards lost in
    // every third segment.
    let mut cache: Option<EncodedSegment> = None;
    let mut out = Checker {
        pos: 0,
        expected: Vec::new(),
    };
    let n = Decoder::new(&m, &k)
        .read_all(
            |s, i, _| {
                if s % 3 == 0 && i % 3 == 0 && i < 12 {
                    return None;
                }
                if cache.as_ref().map(|c| c.index) != Some(s) {
                    let len = m.segments[s as usize].len as usize;
                    let mut buf = vec![0u8; len];
                    fill(s * seg, &mut buf);
                    cache = Some(encode_segment(&g, &k, VERSION, s, &buf).unwrap());
                }
                cache
                    .as_ref()
                    .map(|c| c.shards[usize::from(i)].bytes.clone())
            },
            &mut out,
        )
        .unwrap();
    assert_eq!(n, size);
    assert_eq!(out.pos, size);
}

#[test]
fn an_inconsistent_hand_built_manifest_is_an_error_not_a_panic() {
    let g = Geometry::reed_solomon(4, 2, 64).unwrap();
    let plain = data(300, 10);
    let (m, store) = encode_all(g, &plain);
    let mut fewer = m.clone();
    fewer.segments[0].shards.truncate(2);
    let mut short = m.clone();
    short.segments[1].shard_len = 1;
    let mut beyond = m.clone();
    beyond.size += 1000;
    for bad in [fewer, short, beyond] {
        assert!(read_all(&bad, &store).is_err());
        let shards = (0..6).map(|i| store.get(&(0, i)).cloned()).collect();
        let _ = decode_segment(&bad, &key(), 0, shards);
    }
}

#[test]
fn parallel_encoding_gives_the_same_shards_in_file_order() {
    let g = Geometry::reed_solomon(3, 2, 50).unwrap();
    let plain = data(7 * g.segment_size() as usize + 33, 11);
    let (sequential, store) = encode_all(g, &plain);
    for parallelism in [2, 3, 8] {
        let mut seen = Vec::new();
        let mut recycled = Vec::new();
        let k = key();
        let m = Encoder::new(g, &k, VERSION)
            .parallelism(parallelism)
            .encode(&plain[..], |seg| {
                seen.push(seg.index);
                for sh in &seg.shards {
                    assert_eq!(store[&(seg.index, sh.index)], sh.bytes);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(m, sequential);
        assert_eq!(seen, (0..8).collect::<Vec<u64>>());
        let m2 = Encoder::new(g, &k, VERSION)
            .parallelism(parallelism)
            .encode_recycling(&plain[..], |seg| {
                recycled.push(seg.index);
                Ok(())
            })
            .unwrap();
        assert_eq!(m2, sequential);
        assert_eq!(recycled, seen);
    }
    // A sink error stops the encoding and comes back unchanged.
    let err = Encoder::new(g, &key(), VERSION)
        .encode(&plain[..], |_| Err(Error::CpuWithoutAvx2))
        .unwrap_err();
    assert!(matches!(err, Error::CpuWithoutAvx2));
}

#[test]
fn reader_and_writer_errors_are_stream_errors() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk gone"))
        }
    }
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("pipe closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let g = Geometry::reed_solomon(2, 1, 64).unwrap();
    let err = encode_stream(Failing, g, &key(), VERSION, |_| Ok(())).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Stream {
                what: "reading the file",
                ..
            }
        ),
        "{err}"
    );
    let plain = data(100, 1);
    let (m, store) = encode_all(g, &plain);
    let err = Decoder::new(&m, &key())
        .read_all(|s, i, _| store.get(&(s, i)).cloned(), &mut Failing)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Stream {
                what: "writing decoded bytes",
                ..
            }
        ),
        "{err}"
    );
}
