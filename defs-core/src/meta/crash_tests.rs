//! Crash safety: a child process (this test binary, re-executed with a filter and an env var)
//! runs seeded namespace and journal operations, calling `sync` now and then, with a 3 ms
//! group commit racing it, and writes "N" to a side file after operation N returns (write(2),
//! which survives the kill). The parent SIGKILLs it at a random moment, reopens the DB (which
//! replays the op log) and checks that it opens, that its invariants hold, and that its state
//! equals the state after exactly N or N + 1 operations (the one running at the kill may or
//! may not have been logged): every operation that *returned* survives, synced or not, and none
//! is half-applied. The reference states come from running the same operations on a fresh DB
//! in the parent.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::*;
use crate::testutil::{
    CrashChild, Op, Progress, Rng, apply_db, check_invariants, crash_child_args, dump,
    in_crash_child, time,
};

const CHILD: &str = "meta::crash_tests::crash_child_role";
const OPS: usize = 200;
const RUNS: u64 = 50;

fn ops(seed: u64) -> (Vec<Op>, Vec<bool>) {
    let mut rng = Rng(seed);
    let ops = (0..OPS).map(|_| Op::random(&mut rng, true)).collect();
    // Sync after roughly one operation in eight.
    let syncs = (0..OPS).map(|_| rng.below(8) == 0).collect();
    (ops, syncs)
}

/// The child's role; does nothing unless started by the parent test.
#[test]
fn crash_child_role() {
    let Some((dir, seed)) = crash_child_args(CHILD) else {
        return;
    };
    // A short group-commit interval so background durable commits race with the kill too.
    let db = MetaDb::open_with(&dir.join("db"), Some(Duration::from_millis(3))).unwrap();
    let mut returned = Progress::open(&dir.join("returned"));
    let mut log = Progress::open(&dir.join("synced"));
    // "Ready": the parent starts its random countdown from here.
    log.record(0);
    let (ops, syncs) = ops(seed);
    for (i, op) in ops.iter().enumerate() {
        let _ = apply_db(&db, op, time(i as u64));
        returned.record(i + 1);
        if syncs[i] {
            db.sync().unwrap();
            log.record(i + 1);
        }
    }
    db.sync().unwrap();
    log.record(OPS);
}

#[test]
fn sigkill_at_random_points_loses_no_returned_operation_and_half_applies_nothing() {
    if in_crash_child() {
        return;
    }
    let started = Instant::now();
    let mut rng = Rng(0xC0FFEE);
    let mut outcomes = Vec::new();
    let mut with_log = 0;
    for run in 0..RUNS {
        let seed = rng.next();
        let dir = tempfile::tempdir().unwrap();
        CrashChild::spawn(CHILD, dir.path(), seed, Stdio::null()).kill_when_ready(
            &dir.path().join("synced"),
            Duration::from_micros(rng.below(30_000)),
        );
        let synced = Progress::read(&dir.path().join("synced"));
        let returned = Progress::read(&dir.path().join("returned"));
        assert!(returned >= synced);
        if !dir.path().join("db").join(DB_FILE).exists() {
            assert_eq!(returned, 0);
            outcomes.push((run, returned, None));
            continue;
        }
        let log_len =
            std::fs::metadata(dir.path().join("db").join(LOG_FILE)).map_or(0, |m| m.len());
        if log_len > crate::oplog::HEADER_LEN {
            with_log += 1;
        }
        let db = MetaDb::open_with(&dir.path().join("db"), None)
            .unwrap_or_else(|e| panic!("run {run}: reopen failed: {e:#}"));
        check_invariants(&db).unwrap_or_else(|e| panic!("run {run} (seed {seed}): {e}"));
        let got = dump(&db);

        // The same operations on a fresh DB: the state after `returned` ops, or one more.
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = MetaDb::open_with(fresh_dir.path(), None).unwrap();
        let (ops, _) = ops(seed);
        for (i, op) in ops.iter().enumerate().take(returned) {
            let _ = apply_db(&fresh, op, time(i as u64));
        }
        let mut matched = None;
        if dump(&fresh) == got {
            matched = Some(returned);
        } else if returned < OPS {
            let _ = apply_db(&fresh, &ops[returned], time(returned as u64));
            if dump(&fresh) == got {
                matched = Some(returned + 1);
            }
        }
        let prefix = matched.unwrap_or_else(|| {
            panic!(
                "run {run} (seed {seed}): recovered state is neither {returned} nor {} ops \
                 (synced: {synced})\n--- got\n{got}\n--- after {returned} ops\n{}",
                returned + 1,
                dump(&fresh)
            )
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
        outcomes.push((run, returned, Some(prefix)));
    }
    let mid = outcomes
        .iter()
        .filter(|(_, r, p)| *r > 0 && p.is_some_and(|p| p < OPS))
        .count();
    eprintln!(
        "{RUNS} crash runs in {:?}; {mid} killed mid-run; {with_log} left records to replay",
        started.elapsed()
    );
    assert!(with_log >= 5, "too few kills left log records: {with_log}");
    assert!(mid >= 5, "too few kills landed mid-run: {outcomes:?}");
}

/// Copies the DB's files while it is open, as a crash would leave them (same process, so the
/// copy sees exactly what the page cache holds).
fn crash_image(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in [DB_FILE, LOG_FILE] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[test]
fn an_image_taken_while_open_recovers_every_returned_operation() {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let mut rng = Rng(42);
    for i in 0..400u64 {
        let _ = apply_db(&db, &Op::random(&mut rng, true), time(i));
        if i == 150 {
            db.sync().unwrap();
        }
        if i % 97 == 0 {
            let img = tempfile::tempdir().unwrap();
            crash_image(dir.path(), img.path());
            let copy = MetaDb::open_with(img.path(), None).unwrap();
            check_invariants(&copy).unwrap();
            assert_eq!(dump(&copy), dump(&db), "after op {i}");
            // Replay is idempotent: the recovered copy reopens to the same state.
            drop(copy);
            let copy = MetaDb::open_with(img.path(), None).unwrap();
            assert_eq!(dump(&copy), dump(&db), "after op {i}, reopened");
        }
    }
}

#[test]
fn a_record_that_does_not_replay_or_a_gap_is_a_clear_error() {
    use crate::oplog::OpLog;
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    db.mkdir(InodeNo::ROOT, b"d", &crate::testutil::OWNER, time(1))
        .unwrap();
    db.close().unwrap();
    let log_path = dir.path().join(LOG_FILE);
    let good = std::fs::read(&log_path).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // An unlink of a name that does not exist: it cannot have returned Ok.
        (
            {
                let mut w = Vec::new();
                redo::LogOp::Unlink {
                    parent: InodeNo::ROOT,
                    name: b"nope",
                    now: time(2),
                }
                .encode(&mut w);
                w
            },
            "does not replay",
        ),
        (vec![200, 1, 2, 3], "does not decode"),
    ];
    for (payload, what) in cases {
        std::fs::write(&log_path, &good).unwrap();
        {
            let (mut log, _) = OpLog::open(&log_path, *b"META", redo::MAX_RECORD).unwrap();
            log.append(&payload).unwrap();
        }
        let err = MetaDb::open_with(dir.path(), None).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{what}: {err}");
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    // A log whose base is beyond the DB: operations in between were lost.
    std::fs::write(&log_path, &good).unwrap();
    {
        let (mut log, _) = OpLog::open(&log_path, *b"META", redo::MAX_RECORD).unwrap();
        log.reset(1000).unwrap();
    }
    let err = MetaDb::open_with(dir.path(), None).unwrap_err();
    assert!(err.to_string().contains("are lost"), "{err}");
    // Garbage behind the records is a torn tail: ignored.
    let mut torn = good.clone();
    torn.extend_from_slice(&[0xAB; 37]);
    std::fs::write(&log_path, &torn).unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    assert!(db.lookup(InodeNo::ROOT, b"d").is_ok());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// A crash image whose log is cut anywhere and/or has a byte overwritten after its header
    /// opens (a torn tail is normal), keeps its invariants, and holds the state after some
    /// prefix of the operations — never a panic, never a half-applied operation.
    #[test]
    fn a_torn_or_damaged_log_recovers_a_prefix(
        seed in 0u64..1000,
        cut in 0usize..4000,
        flip in proptest::option::of((0usize..4000, 1u8..=255)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(dir.path(), None).unwrap();
        let mut rng = Rng(seed);
        let mut states = vec![dump(&db)];
        for i in 0..30u64 {
            let _ = apply_db(&db, &Op::random(&mut rng, true), time(i));
            states.push(dump(&db));
        }
        let img = tempfile::tempdir().unwrap();
        crash_image(dir.path(), img.path());
        crate::testutil::damage_log(&img.path().join(LOG_FILE), cut, flip);
        let copy = MetaDb::open_with(img.path(), None).unwrap();
        check_invariants(&copy).unwrap();
        let got = dump(&copy);
        proptest::prop_assert!(states.contains(&got), "not a prefix state");
    }
}
