//! Crash safety of the cache store: a child process (this test binary, re-executed) runs seeded
//! writes, fills, truncates, removes and marks on a few inodes, with an occasional `sync` or
//! `flush`, and appends "N" to a side file after operation N returns. The parent SIGKILLs it at
//! a random moment, reopens the store (replaying its op log) and checks that every inode's
//! ranges, bytes and dirty flag equal those after exactly N or N + 1 operations run on a fresh
//! store (closed and reopened cleanly): no returned write is forgotten, no range is claimed that was not written.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::*;
use crate::testutil::{CrashChild, Progress, Rng, crash_child_args, in_crash_child};

const CHILD: &str = "cache_store::crash_tests::cache_crash_child_role";
const OPS: usize = 300;
const RUNS: u64 = 50;
const INODES: u64 = 4;
const SPAN: u64 = 40_000;
/// The page size the kernel copies a write in (a multiple of it works the same).
const PAGE: u64 = 4096;
const CONFIG: CacheConfig = CacheConfig {
    budget_bytes: 1 << 30,
    reserve_bytes: 0,
};

#[derive(Clone, Debug)]
enum Op {
    Write(u64, u64, u64),
    Fill(u64, u8, u64, u64),
    Truncate(u64, u64),
    Remove(u64),
    MarkClean(u64, u8),
    MarkDirty(u64),
    Validate(u64, u8),
    Sync(u64),
    Flush,
}

fn ops(seed: u64) -> Vec<Op> {
    let mut rng = Rng(seed);
    (0..OPS)
        .map(|_| {
            let ino = 1 + rng.below(INODES);
            let off = rng.below(SPAN);
            let len = 1 + rng.below(6000);
            let tag = rng.below(2) as u8;
            match rng.below(20) {
                0..=7 => Op::Write(ino, off, len),
                8..=10 => Op::Fill(ino, tag, off, len),
                11 | 12 => Op::Truncate(ino, rng.below(SPAN)),
                13 => Op::Remove(ino),
                14 => Op::MarkClean(ino, tag),
                15 => Op::MarkDirty(ino),
                16 => Op::Validate(ino, tag),
                17 | 18 => Op::Sync(ino),
                _ => Op::Flush,
            }
        })
        .collect()
}

fn bytes(i: usize, len: u64) -> Vec<u8> {
    (0..len)
        .map(|b| (b as u8).wrapping_mul(31) ^ i as u8)
        .collect()
}

fn apply(cache: &CacheStore, i: usize, op: &Op) {
    let tag = |t: u8| ContentTag([t + 1; 32]);
    match *op {
        Op::Write(ino, off, len) => cache.write(InodeNo(ino), off, &bytes(i, len)).unwrap(),
        Op::Fill(ino, t, off, len) => {
            cache
                .fill(InodeNo(ino), tag(t), off, &bytes(i, len))
                .unwrap();
        }
        Op::Truncate(ino, size) => cache.truncate(InodeNo(ino), size).unwrap(),
        Op::Remove(ino) => cache.remove(InodeNo(ino)).unwrap(),
        Op::MarkClean(ino, t) => {
            cache.mark_clean(InodeNo(ino), tag(t), cache.changes(InodeNo(ino)))
        }
        Op::MarkDirty(ino) => cache.mark_dirty(InodeNo(ino)),
        Op::Validate(ino, t) => {
            cache.validate(InodeNo(ino), tag(t)).unwrap();
        }
        Op::Sync(ino) => cache.sync(InodeNo(ino)).unwrap(),
        Op::Flush => cache.flush().unwrap(),
    }
}

/// One inode as the store shows it: its entry's flags, its present ranges and their bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct InodeView {
    entry: Option<(bool, ContentTag, u64)>,
    present: Vec<(Range<u64>, Vec<u8>)>,
}

/// Every inode's view, and the usage.
#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    inodes: Vec<InodeView>,
    usage: (u64, u64, u64),
}

impl View {
    /// This view with `data` written at `off` of `ino` wherever a range is present (a write
    /// killed after its bytes reached the file but before it was logged).
    fn overlaid(&self, ino: u64, off: u64, data: &[u8]) -> View {
        let mut v = self.clone();
        let Some(iv) = v.inodes.get_mut((ino - 1) as usize) else {
            return v;
        };
        for (r, bytes) in &mut iv.present {
            for (i, b) in bytes.iter_mut().enumerate() {
                let at = r.start + i as u64;
                if at >= off && at < off + data.len() as u64 {
                    *b = data[(at - off) as usize];
                }
            }
        }
        v
    }
}

fn state(cache: &CacheStore) -> View {
    let mut inodes = Vec::new();
    for ino in 1..=INODES {
        let ino = InodeNo(ino);
        let end = SPAN + 10_000;
        let missing = cache.missing(ino, 0, end);
        let mut cur = 0;
        let mut present = Vec::new();
        for m in missing.iter().chain(std::iter::once(&(end..end))) {
            if m.start > cur {
                let data = cache.read(ino, cur, m.start - cur).unwrap().unwrap();
                present.push((cur..m.start, data));
            }
            cur = m.end;
        }
        let inner = cache.lock();
        let entry = inner.entries.get(&ino.0).map(|e| (e.dirty, e.tag, e.bytes));
        drop(inner);
        inodes.push(InodeView { entry, present });
    }
    let u = cache.usage();
    View {
        inodes,
        usage: (u.clean_bytes, u.dirty_bytes, u.inodes),
    }
}

/// The child's role; does nothing unless started by the parent test.
#[test]
fn cache_crash_child_role() {
    let Some((dir, seed)) = crash_child_args(CHILD) else {
        return;
    };
    let cache = CacheStore::open(&dir.join("cache"), CONFIG).unwrap();
    let mut returned = Progress::open(&dir.join("returned"));
    returned.record(0);
    for (i, op) in ops(seed).iter().enumerate() {
        apply(&cache, i, op);
        returned.record(i + 1);
    }
}

#[test]
fn sigkill_at_random_points_forgets_no_returned_write() {
    if in_crash_child() {
        return;
    }
    let started = Instant::now();
    let mut rng = Rng(0xCAC4E);
    let mut mid = 0;
    for run in 0..RUNS {
        let seed = rng.next();
        let dir = tempfile::tempdir().unwrap();
        CrashChild::spawn(CHILD, dir.path(), seed, Stdio::null()).kill_when_ready(
            &dir.path().join("returned"),
            Duration::from_micros(rng.below(40_000)),
        );
        let returned = Progress::read(&dir.path().join("returned"));
        if !dir.path().join("cache").join(LOG_FILE).exists() {
            assert_eq!(returned, 0);
            continue;
        }
        let cache = CacheStore::open(&dir.path().join("cache"), CONFIG)
            .unwrap_or_else(|e| panic!("run {run}: reopen failed: {e:#}"));
        let got = state(&cache);

        // The reference: the same operations on a fresh store, closed and reopened cleanly (a
        // reopen drops entries without a file, e.g. a bare `mark_dirty` pin).
        let ops = ops(seed);
        let reference = |n: usize, then_remove: Option<u64>| {
            let fresh_dir = tempfile::tempdir().unwrap();
            {
                let fresh = CacheStore::open(fresh_dir.path(), CONFIG).unwrap();
                for (i, op) in ops.iter().enumerate().take(n) {
                    apply(&fresh, i, op);
                }
                if let Some(ino) = then_remove {
                    fresh.remove(InodeNo(ino)).unwrap();
                }
            }
            state(&CacheStore::open(fresh_dir.path(), CONFIG).unwrap())
        };
        let expect = reference(returned, None);
        // `expect` with `ino` as the bare pin it was before the clean reopen dropped it.
        let pin_kept = |ino: u64| {
            let fresh_dir = tempfile::tempdir().unwrap();
            let fresh = CacheStore::open(fresh_dir.path(), CONFIG).unwrap();
            for (i, op) in ops.iter().enumerate().take(returned) {
                apply(&fresh, i, op);
            }
            let live = state(&fresh);
            let pin = &live.inodes[(ino - 1) as usize];
            let mut v = expect.clone();
            let iv = &mut v.inodes[(ino - 1) as usize];
            if iv.entry.is_some() || pin.entry != Some((true, ContentTag::NONE, 0)) {
                return None;
            }
            *iv = pin.clone();
            v.usage.2 += 1;
            Some(v)
        };
        // Besides N or N + 1 operations, the operation in flight may have left what any crash
        // may leave: a fill of another version killed between discarding the stale clean entry
        // and caching the new bytes leaves the entry evicted (a cache may always be in that
        // state); a write killed after its bytes reached the file but before it was logged
        // leaves those bytes, or a prefix of them up to a page boundary, in the ranges already
        // present (a torn write, as POSIX allows for a write that never returned). And a write, fill or growing truncate of an inode held
        // only by a bare `mark_dirty` pin, killed after it created the inode's file but before
        // its record, leaves the pin in place: a reopen drops only pins without a file. The pin
        // holds no bytes, and the journal pins a dirty inode at startup anyway.
        let in_flight_ok = || match ops.get(returned) {
            Some(Op::Fill(ino, ..)) => {
                got == reference(returned, Some(*ino)) || pin_kept(*ino).is_some_and(|v| got == v)
            }
            Some(Op::Write(ino, off, len)) => {
                let data = bytes(returned, *len);
                // Killed inside the write(2), the kernel stops copying at a page boundary: any
                // prefix ending at one may have reached the file.
                let mut cuts = (off / PAGE + 1..)
                    .map(|p| p * PAGE - off)
                    .take_while(|cut| cut < len)
                    .chain([*len]);
                cuts.any(|cut| got == expect.overlaid(*ino, *off, &data[..cut as usize]))
                    || pin_kept(*ino).is_some_and(|v| got == v)
            }
            Some(Op::Truncate(ino, _)) => pin_kept(*ino).is_some_and(|v| got == v),
            _ => false,
        };
        if got != expect && !in_flight_ok() {
            assert!(
                returned < OPS,
                "run {run} (seed {seed}): finished run differs"
            );
            let next = reference(returned + 1, None);
            assert!(
                got == next,
                "run {run} (seed {seed}): state is neither {returned} ops nor one more \
                 ({:?} in flight):\ngot {got:?}\nafter {returned}: {expect:?}\nafter one more: {next:?}",
                ops.get(returned)
            );
        }
        if returned > 0 && returned < OPS {
            mid += 1;
        }
        // The reopened store keeps working.
        cache.write(InodeNo(1), 0, b"after").unwrap();
    }
    eprintln!(
        "{RUNS} cache crash runs in {:?}; {mid} killed mid-run",
        started.elapsed()
    );
    assert!(mid >= 10, "too few kills landed mid-run: {mid}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// A store "crashed" (dropped without its final flush) whose log is then cut anywhere and/or
    /// has a byte overwritten after its header reopens without error or panic, every range it
    /// claims reads back, and a second reopen finds the same state (recovery checkpointed).
    #[test]
    fn a_torn_or_damaged_cache_log_recovers_cleanly(
        seed in 0u64..1000,
        cut in 0usize..3000,
        flip in proptest::option::of((0usize..3000, 1u8..=255)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut cache = CacheStore::open(dir.path(), CONFIG).unwrap();
            for (i, op) in ops(seed).iter().enumerate().take(40) {
                apply(&cache, i, op);
            }
            cache.flush_on_drop = false;
        }
        crate::testutil::damage_log(&dir.path().join(LOG_FILE), cut, flip);
        let cache = CacheStore::open(dir.path(), CONFIG).unwrap();
        // state() reads every present range back (and unwraps).
        let first = state(&cache);
        drop(cache);
        let again = state(&CacheStore::open(dir.path(), CONFIG).unwrap());
        proptest::prop_assert_eq!(first, again);
    }
}
