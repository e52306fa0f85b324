//! The fuzz targets on stable, as part of the normal test suite: every checked-in seed
//! (`fuzz/seeds/<target>/`) must be accepted, every past crash (`fuzz/regressions/<target>/`)
//! must run through its target without a panic, and the seeds the encoders make now must be
//! accepted too (so a format change that outdates the corpus fails here, not silently).
//! `ci/fuzz` runs the same functions under libFuzzer.

#![allow(clippy::unwrap_used)] // A test binary: an unreadable seed is a failed test.

use std::path::{Path, PathBuf};

use defs_fuzz::{TARGETS, Verdict};

defs_fuzz::track_allocations!();

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// One test, so that the scratch files the targets share are removed once, after all of them.
#[test]
fn replay() {
    the_allocation_check_is_live();
    every_checked_in_seed_is_accepted_by_its_target();
    every_past_crash_runs_without_a_panic();
    the_encoders_seeds_are_accepted();
    defs_fuzz::scratch::remove();
}

fn the_allocation_check_is_live() {
    assert!(
        defs_fuzz::alloc::installed(),
        "the tracking allocator is not installed: every allocation bound would hold vacuously"
    );
}

fn every_checked_in_seed_is_accepted_by_its_target() {
    for (name, target) in TARGETS {
        let seeds = defs_fuzz::seeds::files_in(&root().join("seeds").join(name));
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for path in seeds {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                target(&bytes),
                Verdict::Accepted,
                "{} is refused (run ci/fuzz --write-seeds after a format change)",
                path.display()
            );
        }
    }
}

fn every_past_crash_runs_without_a_panic() {
    for (name, target) in TARGETS {
        for path in defs_fuzz::seeds::files_in(&root().join("regressions").join(name)) {
            let bytes = std::fs::read(&path).unwrap();
            // Refused or accepted, the target's own checks hold: no panic.
            let _ = target(&bytes);
        }
    }
}

fn the_encoders_seeds_are_accepted() {
    let seeds = defs_fuzz::seeds::all().unwrap();
    for (name, _) in TARGETS {
        assert!(
            seeds.iter().any(|s| s.target == *name),
            "no seed made for {name}"
        );
    }
    for s in seeds {
        let (_, target) = TARGETS.iter().find(|(n, _)| *n == s.target).unwrap();
        assert_eq!(
            target(&s.bytes),
            Verdict::Accepted,
            "{}/{}",
            s.target,
            s.name
        );
    }
}
