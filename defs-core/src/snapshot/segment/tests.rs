//! Segments against the metadata DB: a chain of segments cut between random operations rebuilds
//! exactly the last published view; a one-file change is a small segment; every damaged,
//! missing or misplaced segment is refused.

use super::*;
use crate::meta::MetaDb;
use crate::namespace::{NewInode, Timestamp};
use crate::testutil::{Op, Rng, apply_db, dump_published, time};
use crate::types::InodeNo;

fn snap(db: &MetaDb) -> Vec<u8> {
    let mut out = Vec::new();
    db.write_snapshot(&mut out).unwrap();
    out
}

fn head(base: &[u8], index: u32, prev: &[u8]) -> SegmentHead {
    SegmentHead {
        base: trailer_of(base).unwrap(),
        index,
        prev: trailer_of(prev).unwrap(),
        next_ino: 0,
    }
}

/// A base snapshot and `rounds` segments cut between random operations (dirty-journal ones
/// included), and the DB they came from.
fn chain(seed: u64, rounds: usize) -> (tempfile::TempDir, MetaDb, Vec<u8>, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let mut rng = Rng(seed);
    let mut n = 0u64;
    let mut step = |db: &MetaDb, rng: &mut Rng, ops: u64| {
        for _ in 0..ops {
            n += 1;
            let _ = apply_db(db, &Op::random(rng, true), time(n));
        }
    };
    step(&db, &mut rng, 40);
    let base = snap(&db);
    let mut prev = base.clone();
    let mut segments = Vec::new();
    for i in 0..rounds {
        let ops = 1 + rng.below(12);
        step(&db, &mut rng, ops);
        let next = snap(&db);
        let last = segments.last().unwrap_or(&base);
        let (seg, _) = diff(
            prev.as_slice(),
            next.as_slice(),
            head(&base, i as u32 + 1, last),
        )
        .unwrap();
        segments.push(seg);
        prev = next;
    }
    (dir, db, base, segments)
}

#[test]
fn a_chain_cut_between_random_operations_rebuilds_the_last_view_exactly() {
    for seed in 0..12 {
        let (_dir, db, base, segments) = chain(seed, 10);
        let mut out = Vec::new();
        let stats = apply_chain(
            base.as_slice(),
            &trailer_of(&base).unwrap(),
            &segments,
            &mut out,
        )
        .unwrap();
        let want = snap(&db);
        assert_eq!(
            out, want,
            "seed {seed}: the chain's state differs from the last cut"
        );
        assert_eq!(stats.trailer, trailer_of(&want).unwrap());
        let other = tempfile::tempdir().unwrap();
        let restored = MetaDb::open_with(other.path(), None).unwrap();
        if let Err(e) = restored.restore_snapshot(out.as_slice()) {
            panic!("seed {seed}: {e}\n{}", crate::testutil::dump(&db));
        }
        assert_eq!(
            dump_published(&restored),
            dump_published(&db),
            "seed {seed}"
        );
    }
}

#[test]
fn a_one_file_change_in_a_big_namespace_is_a_segment_under_one_kib() {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let o = NewInode {
        perm: 0o644,
        uid: 1000,
        gid: 100,
    };
    let t = Timestamp::new(1_700_000_000, 0);
    let mut dirs = Vec::new();
    for d in 0..20 {
        dirs.push(
            db.mkdir(InodeNo::ROOT, format!("dir-{d}").as_bytes(), &o, t)
                .unwrap()
                .ino,
        );
    }
    for f in 0..2000 {
        db.create(
            dirs[f % 20],
            format!("file-{f:05}.txt").as_bytes(),
            &o,
            true,
            t,
        )
        .unwrap();
    }
    let before = snap(&db);
    db.create(
        dirs[7],
        b"one more file.txt",
        &o,
        true,
        Timestamp::new(1_700_000_100, 0),
    )
    .unwrap();
    let after = snap(&db);
    let (seg, changed) = diff(
        before.as_slice(),
        after.as_slice(),
        head(&before, 1, &before),
    )
    .unwrap();
    assert!(changed);
    // The new inode, its name and its directory's record: nothing else.
    assert!(
        seg.len() < 1024,
        "{} bytes for one new file (snapshot {} bytes)",
        seg.len(),
        after.len()
    );
    let (none, changed) = diff(
        after.as_slice(),
        after.as_slice(),
        head(&before, 1, &before),
    )
    .unwrap();
    assert!(!changed && none.len() < HEADER_LEN + 100);
}

#[test]
fn damaged_missing_or_misplaced_segments_are_refused() {
    let (_dir, _db, base, segments) = chain(7, 4);
    let t = trailer_of(&base).unwrap();
    let run = |segs: &[Vec<u8>]| apply_chain(base.as_slice(), &t, segs, std::io::sink());
    run(&segments).unwrap();
    let err = |r: Result<SnapshotStats>| r.unwrap_err().to_string();

    let missing = [
        segments[0].clone(),
        segments[2].clone(),
        segments[3].clone(),
    ];
    assert!(
        err(run(&missing)).contains("missing"),
        "{}",
        err(run(&missing))
    );
    let swapped = [segments[1].clone(), segments[0].clone()];
    assert!(err(run(&swapped)).contains("missing or out of order"));
    let twice = [segments[0].clone(), segments[0].clone()];
    assert!(run(&twice).is_err());

    let s = &segments[1];
    for n in 0..s.len() {
        let cut = [segments[0].clone(), s[..n].to_vec()];
        assert!(run(&cut).is_err(), "truncated at {n}");
    }
    let mut x = 0x9E37_79B9_u64;
    for i in 0..s.len() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut flipped = s.clone();
        flipped[i] ^= 1 << (x >> 61);
        let bad = [segments[0].clone(), flipped];
        assert!(run(&bad).is_err(), "flip at {i}");
    }

    // A chain on another snapshot.
    let (_d2, _db2, other_base, other) = chain(8, 1);
    let e = apply_chain(
        other_base.as_slice(),
        &trailer_of(&other_base).unwrap(),
        &segments[..1],
        std::io::sink(),
    );
    assert!(e.unwrap_err().to_string().contains("another snapshot"));
    drop(other);
}

#[test]
fn a_segment_deleting_a_missing_key_or_out_of_order_is_refused() {
    let (_dir, _db, base, _) = chain(3, 0);
    let t = trailer_of(&base).unwrap();
    let h = SegmentHead {
        base: t,
        index: 1,
        prev: t,
        next_ino: 1 << 20,
    };
    let mut w = SegmentWriter::new(&h).unwrap();
    w.record(TAG_INODE | DELETE, &(1u64 << 19).to_le_bytes())
        .unwrap();
    let seg = w.finish().unwrap();
    let e = apply_chain(base.as_slice(), &t, &[seg], std::io::sink()).unwrap_err();
    assert!(e.to_string().contains("delete of a missing key"), "{e}");

    let mut w = SegmentWriter::new(&h).unwrap();
    w.record(TAG_INODE | DELETE, &5u64.to_le_bytes()).unwrap();
    w.record(TAG_INODE | DELETE, &4u64.to_le_bytes()).unwrap();
    let seg = w.finish().unwrap();
    let e = apply_chain(base.as_slice(), &t, &[seg], std::io::sink()).unwrap_err();
    assert!(e.to_string().contains("out of order"), "{e}");

    let mut w = SegmentWriter::new(&h).unwrap();
    w.record(TAG_DIRENT | DELETE, &[1, 0, 0, 0, 0, 0, 0, 0, 1, b'a', 0])
        .unwrap();
    let seg = w.finish().unwrap();
    let e = apply_chain(base.as_slice(), &t, &[seg], std::io::sink()).unwrap_err();
    assert!(e.to_string().contains("after a delete's key"), "{e}");
}
