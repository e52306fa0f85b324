//! fsx (issue 20): random operations on a real mount over three real storage nodes, checked
//! against an in-memory model (`defs_tests::fsx`): every answer, read, `lstat` field, xattr,
//! symlink target and listing, across an unmount + mount and a cache wipe. CI runs a few hundred
//! operations of a fixed seed plus every kept seed (`fsx-seeds`); `ci/fsx` runs the long form.

use std::path::PathBuf;

use defs_tests::cluster::Cluster;
use defs_tests::fsx::{self, FORCED_WIPE_AT};

/// The seed CI runs (any fixed number: the run must be the same every time).
const CI_SEED: u64 = 20;

/// Operations CI runs: past the forced remount and cache wipe, a few hundred in all.
const CI_OPS: usize = FORCED_WIPE_AT + 170;

/// Replays a failing run may spend on shrinking it (each on a fresh mount).
const SHRINK_BUDGET: usize = 40;

/// The kept seeds, replayed by every run.
const KEPT: &str = include_str!("fsx-seeds");

#[test]
fn random_operations_match_the_model_across_remounts_and_a_cache_wipe() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let mut runs = vec![(CI_SEED, CI_OPS)];
    runs.extend(fsx::parse_seeds(KEPT));
    for (seed, n) in runs {
        match fsx::run_and_report(&cluster, seed, n, SHRINK_BUDGET, None) {
            Ok(c) => eprintln!("fsx: seed {seed}: {c:?}"),
            Err(report) => panic!("{report}"),
        }
    }
}

/// A number from an environment variable's text, or a panic naming it.
fn number<T: std::str::FromStr>(s: &str, var: &str) -> T {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{var}: {s:?} is not a number"))
}

/// The seeds `DEFS_FSX_SEEDS` names: `A..B` (B excluded), or a comma-separated list.
fn seeds_from_env() -> Vec<u64> {
    const VAR: &str = "DEFS_FSX_SEEDS";
    let spec = std::env::var(VAR).unwrap_or_else(|_| "1..4".into());
    if let Some((a, b)) = spec.split_once("..") {
        (number(a, VAR)..number(b, VAR)).collect()
    } else {
        spec.split(',').map(|s| number(s, VAR)).collect()
    }
}

/// The long form, for `ci/fsx`: `DEFS_FSX_OPS` operations (default 10^4) for each seed of
/// `DEFS_FSX_SEEDS`; failing seeds are appended to `DEFS_FSX_KEEP` (a seeds file) when set.
#[test]
#[ignore = "long: ci/fsx runs it"]
fn fsx_long() {
    let n: usize = std::env::var("DEFS_FSX_OPS").map_or(10_000, |s| number(&s, "DEFS_FSX_OPS"));
    let keep = std::env::var_os("DEFS_FSX_KEEP").map(PathBuf::from);
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let mut failed = Vec::new();
    for seed in seeds_from_env() {
        let started = std::time::Instant::now();
        match fsx::run_and_report(&cluster, seed, n, SHRINK_BUDGET, keep.as_deref()) {
            Ok(c) => eprintln!("fsx: seed {seed}: ok in {:.0?}: {c:?}", started.elapsed()),
            Err(report) => {
                eprintln!("{report}");
                failed.push(seed);
            }
        }
    }
    assert!(failed.is_empty(), "fsx: failing seeds: {failed:?}");
}
