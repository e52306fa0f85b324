//! Crash safety: a child process (this test binary, re-executed with a filter and an env var)
//! runs seeded namespace and journal operations, calling `sync` now and then and logging how
//! many operations were synced; the parent SIGKILLs it at a random moment, reopens the DB and
//! checks that it opens, that its invariants hold, and that its state equals the state after
//! some prefix of the operations no shorter than the synced one (so nothing synced is lost and
//! no operation is half-applied). The prefix states come from replaying the same operations on
//! a fresh DB in the parent.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::testutil::{Op, Rng, apply_db, check_invariants, dump, time};

const CHILD_ENV: &str = "DEFS_META_CRASH_CHILD";
const SEED_ENV: &str = "DEFS_META_CRASH_SEED";
const OPS: usize = 200;
const RUNS: u64 = 50;

fn ops(seed: u64) -> (Vec<Op>, Vec<bool>) {
    let mut rng = Rng(seed);
    let ops = (0..OPS).map(|_| Op::random(&mut rng, true)).collect();
    // Sync after roughly one operation in eight.
    let syncs = (0..OPS).map(|_| rng.below(8) == 0).collect();
    (ops, syncs)
}

/// The child's role; does nothing unless the parent set `CHILD_ENV`.
#[test]
fn crash_child_role() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(dir);
    // A short group-commit interval so background durable commits race with the kill too.
    let db = MetaDb::open_with(&dir.join("db"), Some(Duration::from_millis(3))).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("synced"))
        .unwrap();
    // "Ready": the parent starts its random countdown from here.
    writeln!(log, "0").unwrap();
    let (ops, syncs) = ops(seed);
    for (i, op) in ops.iter().enumerate() {
        let _ = apply_db(&db, op, time(i as u64));
        if syncs[i] {
            db.sync().unwrap();
            // The page cache survives SIGKILL; no fsync needed for the log.
            writeln!(log, "{}", i + 1).unwrap();
        }
    }
    db.sync().unwrap();
    writeln!(log, "{OPS}").unwrap();
}

#[test]
fn sigkill_at_random_points_loses_nothing_synced_and_half_applies_nothing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut rng = Rng(0xC0FFEE);
    let mut outcomes = Vec::new();
    for run in 0..RUNS {
        let seed = rng.next();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "meta::crash_tests::crash_child_role",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(SEED_ENV, seed.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ready = Instant::now();
        while !dir.path().join("synced").exists() && ready.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let synced: usize = std::fs::read_to_string(dir.path().join("synced"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .max()
            .unwrap_or(0);
        if !dir.path().join("db").join(DB_FILE).exists() {
            assert_eq!(synced, 0);
            outcomes.push((run, synced, None));
            continue;
        }
        let db = MetaDb::open_with(&dir.path().join("db"), None)
            .unwrap_or_else(|e| panic!("run {run}: reopen failed: {e:#}"));
        check_invariants(&db).unwrap_or_else(|e| panic!("run {run} (seed {seed}): {e}"));
        let got = dump(&db);

        // Replay on a fresh DB; the recovered state must be one of the prefixes ≥ synced.
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = MetaDb::open_with(fresh_dir.path(), None).unwrap();
        let (ops, _) = ops(seed);
        let mut matched = None;
        if synced == 0 && dump(&fresh) == got {
            matched = Some(0);
        }
        for (i, op) in ops.iter().enumerate() {
            if matched.is_some() {
                break;
            }
            let _ = apply_db(&fresh, op, time(i as u64));
            if i + 1 >= synced && dump(&fresh) == got {
                matched = Some(i + 1);
            }
        }
        let prefix = matched.unwrap_or_else(|| {
            panic!("run {run} (seed {seed}): recovered state is no prefix ≥ {synced} ops")
        });
        // The reopened DB keeps working.
        db.mkdir(
            InodeNo::ROOT,
            b"after-crash",
            &crate::testutil::OWNER,
            time(9999),
        )
        .map(|_| ())
        .or_else(|e| match e {
            Error::AlreadyExists { .. } => Ok(()),
            e => Err(e),
        })
        .unwrap();
        outcomes.push((run, synced, Some(prefix)));
    }
    let mid = outcomes
        .iter()
        .filter(|(_, s, p)| *s > 0 && p.is_some_and(|p| p < OPS))
        .count();
    eprintln!(
        "{RUNS} crash runs in {:?}; {mid} killed mid-run after a sync",
        started.elapsed()
    );
    assert!(mid >= 5, "too few kills landed mid-run: {outcomes:?}");
}
