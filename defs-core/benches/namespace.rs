//! Namespace operations per second: create + setattr + lookup of 10,000 files, in one directory
//! and spread over a 5-level tree, against two same-run baselines: the same operations on a
//! `BTreeMap` (no DB at all) and raw redb inserts (one non-durable transaction per insert).
//!
//! Run: `cargo bench -p defs-core --bench namespace`

// A benchmark is a test: failing loudly on an unexpected error is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use defs_core::MetaDb;
use defs_core::namespace::{NewInode, SetAttr, Timestamp};
use defs_core::types::InodeNo;
use redb::{Database, Durability, TableDefinition};

const FILES: u64 = 10_000;
/// Three operations per file: create, setattr, lookup.
const OPS: u64 = FILES * 3;
const OWNER: NewInode = NewInode {
    perm: 0o644,
    uid: 1000,
    gid: 1000,
};

fn t(i: u64) -> Timestamp {
    Timestamp::new(1_700_000_000 + i as i64, 0)
}

fn set(i: u64) -> SetAttr {
    SetAttr {
        size: Some(i),
        mtime: Some(t(i)),
        ..SetAttr::default()
    }
}

/// Directories of a tree 5 levels deep with 4 children per level (4 + 16 + 64 + 256 + 1024).
fn tree(db: &MetaDb) -> Vec<InodeNo> {
    let mut level = vec![InodeNo::ROOT];
    let mut leaves = Vec::new();
    for depth in 0..5 {
        let mut next = Vec::new();
        for &p in &level {
            for c in 0..4 {
                let name = format!("d{depth}-{c}");
                next.push(db.mkdir(p, name.as_bytes(), &OWNER, t(0)).unwrap().ino);
            }
        }
        leaves.clone_from(&next);
        level = next;
    }
    leaves
}

fn run_meta(dirs: impl Fn(&MetaDb) -> Vec<InodeNo>) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open(dir.path()).unwrap();
    let dirs = dirs(&db);
    let start = Instant::now();
    for i in 0..FILES {
        let parent = dirs[(i as usize) % dirs.len()];
        let name = format!("file-{i:06}");
        let (a, _) = db
            .create(parent, name.as_bytes(), &OWNER, true, t(i))
            .unwrap();
        db.setattr(a.ino, &set(i), t(i)).unwrap();
        black_box(db.lookup(parent, name.as_bytes()).unwrap());
    }
    let elapsed = start.elapsed();
    db.close().unwrap();
    elapsed
}

/// What a close-to-open durable FUSE layer would pay: the same three operations, then `sync`
/// (one fsync) after every file.
fn run_meta_sync_each(files: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open(dir.path()).unwrap();
    let start = Instant::now();
    for i in 0..files {
        let name = format!("file-{i:06}");
        let (a, _) = db
            .create(InodeNo::ROOT, name.as_bytes(), &OWNER, true, t(i))
            .unwrap();
        db.setattr(a.ino, &set(i), t(i)).unwrap();
        black_box(db.lookup(InodeNo::ROOT, name.as_bytes()).unwrap());
        db.sync().unwrap();
    }
    let elapsed = start.elapsed();
    db.close().unwrap();
    elapsed
}

fn run_btreemap() -> Duration {
    #[derive(Clone)]
    struct Ino {
        size: u64,
        mtime: Timestamp,
    }
    let mut inodes: BTreeMap<u64, Ino> = BTreeMap::new();
    let mut dirents: BTreeMap<(u64, Vec<u8>), u64> = BTreeMap::new();
    let start = Instant::now();
    for i in 0..FILES {
        let name = format!("file-{i:06}").into_bytes();
        let ino = i + 2;
        inodes.insert(
            ino,
            Ino {
                size: 0,
                mtime: t(i),
            },
        );
        dirents.insert((1, name.clone()), ino);
        let rec = inodes.get_mut(&ino).unwrap();
        rec.size = i;
        rec.mtime = t(i);
        let found = dirents[&(1, name)];
        black_box(inodes[&found].clone().size);
    }
    start.elapsed()
}

fn run_raw_redb() -> Duration {
    const T: TableDefinition<(u64, &[u8]), u64> = TableDefinition::new("t");
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("raw.redb")).unwrap();
    let start = Instant::now();
    // The same number of transactions as the namespace run: two writes and one read per file.
    for i in 0..FILES {
        let name = format!("file-{i:06}");
        for _ in 0..2 {
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(Durability::None).unwrap();
            txn.open_table(T)
                .unwrap()
                .insert((1, name.as_bytes()), i)
                .unwrap();
            txn.commit().unwrap();
        }
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        black_box(
            txn.open_table(T)
                .unwrap()
                .get((1, name.as_bytes()))
                .unwrap()
                .unwrap()
                .value(),
        );
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("namespace");
    g.sample_size(10);
    g.throughput(Throughput::Elements(OPS));
    g.bench_function("metadb_one_dir", |b| {
        b.iter_custom(|n| (0..n).map(|_| run_meta(|_| vec![InodeNo::ROOT])).sum())
    });
    g.bench_function("metadb_5_level_tree", |b| {
        b.iter_custom(|n| (0..n).map(|_| run_meta(tree)).sum())
    });
    g.bench_function("baseline_btreemap_one_dir", |b| {
        b.iter_custom(|n| (0..n).map(|_| run_btreemap()).sum())
    });
    g.bench_function("baseline_raw_redb_txns", |b| {
        b.iter_custom(|n| (0..n).map(|_| run_raw_redb()).sum())
    });
    g.finish();
    let mut g = c.benchmark_group("namespace_durable");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000 * 3));
    g.bench_function("metadb_one_dir_sync_every_file", |b| {
        b.iter_custom(|n| (0..n).map(|_| run_meta_sync_each(1_000)).sum())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
