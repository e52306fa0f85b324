//! A short fuzz pass on stable, as part of the normal test suite (so of CI): every target gets
//! mutations of its checked-in seeds and past crashes (bit flips, random bytes, boundary
//! values written over 1, 2, 4 or 8 bytes, cuts, insertions, repeated runs, splices of two
//! seeds) for `DEFS_FUZZ_MUTATE_MS` milliseconds (default 1000) each. Not coverage-guided —
//! that is `ci/fuzz`, under libFuzzer — but it runs the same target functions with their
//! checks (no panic, round trips, allocation bounds), so a decoder change that breaks one on
//! an input near the seeds fails here. The sequence of inputs depends only on
//! `DEFS_FUZZ_SEED` (default 20) and the target; a failure prints the seed, the target, the
//! iteration and the input in hex, and writes the input to `fuzz/artifacts/<target>/`.

#![allow(clippy::unwrap_used)] // A test binary: an unreadable seed is a failed test.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use defs_fuzz::TARGETS;

defs_fuzz::track_allocations!();

/// At most this many inputs per target, whatever the time budget.
const MAX_RUNS: u64 = 50_000;

/// Values that sit at the edges of length and count fields.
const BOUNDARIES: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX / 2,
    u64::MAX - 1,
    u64::MAX,
];

/// splitmix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One mutation of `input` (possibly spliced with `other`).
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    let len = input.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = rng.next() as u8;
        }
        2 if len > 0 => {
            // A boundary value over 1, 2, 4 or 8 bytes, either byte order.
            let width = [1, 2, 4, 8][rng.below(4)].min(len);
            let at = rng.below(len - width + 1);
            let v = BOUNDARIES[rng.below(BOUNDARIES.len())];
            let bytes = if rng.next().is_multiple_of(2) {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            input[at..at + width].copy_from_slice(&bytes[..width]);
        }
        3 if len > 0 => input.truncate(rng.below(len)),
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below(len - at).min(63);
            input.drain(at..at + n);
        }
        5 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let fill: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, fill);
        }
        6 if len > 0 => {
            // Repeat a run (lengths and counts that disagree with the bytes that follow).
            let at = rng.below(len);
            let n = 1 + rng.below(len - at).min(255);
            let run = input[at..at + n].to_vec();
            input.splice(at..at, run);
        }
        _ if !other.is_empty() => {
            // Splice: a prefix of this input, a suffix of another seed of the same target.
            let cut = rng.below(len + 1);
            let from = rng.below(other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        _ => input.push(rng.next() as u8),
    }
}

#[test]
fn mutated_seeds_never_break_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seed: u64 = std::env::var("DEFS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let budget = Duration::from_millis(
        std::env::var("DEFS_FUZZ_MUTATE_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
    );
    let mut report = Vec::new();
    for (t, (name, target)) in TARGETS.iter().enumerate() {
        let mut corpus: Vec<Vec<u8>> = defs_fuzz::seeds::files_in(&root.join("seeds").join(name))
            .into_iter()
            .chain(defs_fuzz::seeds::files_in(
                &root.join("regressions").join(name),
            ))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert!(!corpus.is_empty(), "no seeds for {name}");
        corpus.sort();
        let mut rng = Rng(seed ^ (t as u64).wrapping_mul(0x1000_0000_01b3));
        let start = Instant::now();
        let mut runs = 0;
        while runs < MAX_RUNS && start.elapsed() < budget {
            let base = rng.below(corpus.len());
            let other = rng.below(corpus.len());
            let mut input = corpus[base].clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut input, &corpus[other]);
            }
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(&input))) {
                let dir = root.join("artifacts").join(name);
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("mutate-{seed}-{runs}"));
                let _ = std::fs::write(&path, &input);
                let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                panic!(
                    "target {name} broke on run {runs} of DEFS_FUZZ_SEED={seed}: {what}\n\
                     input ({} bytes, kept in {}): {hex}",
                    input.len(),
                    path.display()
                );
            }
            runs += 1;
        }
        report.push(format!("{name} {runs}"));
    }
    defs_fuzz::scratch::remove();
    eprintln!("mutated inputs per target: {}", report.join(", "));
}
