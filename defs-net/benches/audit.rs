//! Audit cost: what one proof costs the holder (read the shard from its store, CRC check, hash
//! it into a proof) and the owner (check the proof against the id), for 1 MiB shards, against
//! the same-run baseline of plain BLAKE3 over the shard; and the proof's size on the wire.
//!
//!     cargo bench -p defs-net --bench audit -- --warm-up-time 1 --measurement-time 3
#![allow(missing_docs)]
// A benchmark, like a test, may panic on a broken setup.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use defs_core::shard_store::{Quotas, ShardStore};
use defs_core::types::{NodeId, ShardId};
use defs_net::audit::{chunks, prove, verify};
use defs_net::protocol::{Request, Response};

const SHARD: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let data: Vec<u8> = (0..SHARD).map(|i| (i * 31 % 251) as u8).collect();
    let id = ShardId(*blake3::hash(&data).as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(
        dir.path(),
        Quotas {
            capacity: 1 << 30,
            per_owner: 0,
        },
    )
    .unwrap();
    store.put(id, NodeId([1; 32]), &data).unwrap();
    let n = chunks(SHARD as u64) as u32;

    let proof = prove(&data, n / 3).unwrap();
    let req = Request::Audit { id, chunk: n / 3 };
    let resp = Response::Proof(proof.clone());
    let wire = req.encode().unwrap().to_frame().unwrap().len()
        + resp.encode().unwrap().to_frame().unwrap().len();
    eprintln!(
        "audit of a 1 MiB shard: {} siblings, {wire} bytes of frames (challenge + proof)",
        proof.siblings.len()
    );

    let mut g = c.benchmark_group("audit_1MiB_shard");
    g.throughput(Throughput::Bytes(SHARD as u64));
    g.bench_function("baseline_blake3", |b| {
        b.iter(|| blake3::hash(black_box(&data)))
    });
    g.bench_function("holder_prove", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 7) % n;
            prove(black_box(&data), i).unwrap()
        })
    });
    g.bench_function("holder_read_and_prove", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 7) % n;
            prove(&store.get(&id).unwrap(), i).unwrap()
        })
    });
    g.finish();
    c.bench_function("owner_verify_1MiB_shard", |b| {
        b.iter(|| verify(&id, SHARD as u64, n / 3, black_box(&proof)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
