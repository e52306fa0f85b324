//! Pipeline throughput: full encode and decode per segment (RS 10+4 and 4+2, 1 MiB shards),
//! decode with 2 data shards lost, and same-run baselines: the AEAD candidates (`ring` vs
//! `aes-gcm`), Reed-Solomon alone, BLAKE3, CRC32. Throughput is bytes of file data.
//!
//!     cargo bench -p defs-core --bench pipeline -- --warm-up-time 1 --measurement-time 3
#![allow(missing_docs)]
// A benchmark, like a test, may panic on a broken setup.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use defs_core::pipeline::{
    Decoder, Geometry, decode_segment_into, encode_segment, encode_segment_with,
};
use defs_core::types::VersionId;
use defs_core::{FileKey, Manifest};

const SHARD: u32 = 1 << 20;

fn data(len: usize) -> Vec<u8> {
    let mut s = 0x1234_5678_u64;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let key = FileKey::from_bytes([9; 32]);
    let version = VersionId([1; 16]);
    for (k, m) in [(10u8, 4u8), (4, 2)] {
        let g = Geometry::reed_solomon(k, m, SHARD).unwrap();
        let plain = data(g.segment_size() as usize);
        let mut group = c.benchmark_group(format!("rs{k}+{m}"));
        group.throughput(Throughput::Bytes(plain.len() as u64));
        group.sample_size(20);
        group.bench_function("encode", |b| {
            b.iter(|| encode_segment(&g, &key, version, 0, black_box(&plain)).unwrap())
        });
        // With recycled shard buffers (a sink that writes shards out and hands them back).
        let mut pool = Vec::new();
        group.bench_function("encode_recycled", |b| {
            b.iter(|| {
                encode_segment_with(&g, &key, version, 0, black_box(&plain), &mut pool)
                    .unwrap()
                    .recycle(&mut pool)
            })
        });
        let enc = encode_segment(&g, &key, version, 0, &plain).unwrap();
        let manifest = Manifest {
            version,
            size: plain.len() as u64,
            geometry: g,
            segments: vec![enc.entry()],
            pack: None,
        };
        let shards = |lost: &[usize]| -> Vec<Option<Vec<u8>>> {
            enc.shards
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    // Without loss a reader fetches only the data shards.
                    let wanted = if lost.is_empty() {
                        i < usize::from(k)
                    } else {
                        !lost.contains(&i)
                    };
                    wanted.then(|| s.bytes.clone())
                })
                .collect()
        };
        // decode_segment into a reused buffer (what a reader decoding many segments does).
        let mut out = Vec::with_capacity(plain.len());
        for (name, lost) in [("decode", &[][..]), ("decode_2_lost", &[0, 1][..])] {
            group.bench_function(name, |b| {
                b.iter_batched(
                    || shards(lost),
                    |s| {
                        out.clear();
                        decode_segment_into(&manifest, &key, 0, s, &mut out).unwrap()
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        // The streaming reader (fetch → verify → decrypt → write), as `defs get` runs it.
        for (name, lost) in [
            ("decoder_stream", &[][..]),
            ("decoder_stream_2_lost", &[0, 1][..]),
        ] {
            group.bench_function(name, |b| {
                b.iter_batched(
                    || shards(lost),
                    |mut s| {
                        Decoder::new(&manifest, &key)
                            .read_all(|_, i, _| s[usize::from(i)].take(), &mut std::io::sink())
                            .unwrap()
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        // Baseline: Reed-Solomon parity alone on the same data.
        let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(usize::from(k), usize::from(m))
            .unwrap();
        let data_shards: Vec<&[u8]> = plain.chunks(SHARD as usize).collect();
        let mut parity = vec![vec![0u8; SHARD as usize]; usize::from(m)];
        group.bench_function("baseline_rs_encode", |b| {
            b.iter(|| rs.encode_sep(black_box(&data_shards), &mut parity).unwrap())
        });
        // Baseline: the same work with no pipeline glue (no key derivation, no copies, no
        // allocation): RS into preallocated parity, then seal + BLAKE3 + CRC32 of every shard in
        // preallocated buffers. encode / baseline_parts = the glue's cost.
        let mut bufs: Vec<Vec<u8>> = (0..usize::from(k) + usize::from(m))
            .map(|_| vec![0u8; SHARD as usize + 16])
            .collect();
        group.bench_function("baseline_parts", |b| {
            use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
            b.iter(|| {
                rs.encode_sep(black_box(&data_shards), &mut parity).unwrap();
                for buf in bufs.iter_mut() {
                    let (body, tag_space) = buf.split_at_mut(SHARD as usize);
                    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[1; 32]).unwrap());
                    let tag = key
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key([2; 12]),
                            Aad::from(&[3u8; 30]),
                            body,
                        )
                        .unwrap();
                    tag_space.copy_from_slice(tag.as_ref());
                    black_box(blake3::hash(buf));
                    black_box(crc32fast::hash(buf));
                }
            })
        });
        group.finish();
    }
}

fn parts(c: &mut Criterion) {
    let buf = data(SHARD as usize);
    let key = [7u8; 32];
    let nonce = [3u8; 12];
    let aad = [5u8; 30];
    let mut group = c.benchmark_group("parts_1MiB");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.sample_size(30);
    group.bench_function("aead_ring_seal", |b| {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let mut work = buf.clone();
        b.iter(|| {
            let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
            k.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut work,
            )
            .unwrap()
        })
    });
    group.bench_function("aead_aes_gcm_seal", |b| {
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let mut work = buf.clone();
        b.iter(|| {
            let k = aes_gcm::Aes256Gcm::new(&key.into());
            k.encrypt_inout_detached(&nonce.into(), &aad, work.as_mut_slice().into())
                .unwrap()
        })
    });
    group.bench_function("aead_ring_open", |b| {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let mut sealed = buf.clone();
        let tag = k
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut sealed,
            )
            .unwrap();
        sealed.extend_from_slice(tag.as_ref());
        b.iter_batched(
            || sealed.clone(),
            |mut s| {
                let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
                k.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut s)
                    .unwrap();
                s
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("aead_aes_gcm_open", |b| {
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let k = aes_gcm::Aes256Gcm::new(&key.into());
        let mut sealed = buf.clone();
        let tag = k
            .encrypt_inout_detached(&nonce.into(), &aad, sealed.as_mut_slice().into())
            .unwrap();
        b.iter_batched(
            || sealed.clone(),
            |mut s| {
                let k = aes_gcm::Aes256Gcm::new(&key.into());
                k.decrypt_inout_detached(&nonce.into(), &aad, s.as_mut_slice().into(), &tag)
                    .unwrap();
                s
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&buf))));
    group.bench_function("crc32", |b| b.iter(|| crc32fast::hash(black_box(&buf))));
    group.bench_function("memcpy", |b| {
        let mut dst = vec![0u8; buf.len()];
        b.iter(|| dst.copy_from_slice(black_box(&buf)))
    });
    group.finish();
}

criterion_group!(benches, pipeline, parts);
criterion_main!(benches);
