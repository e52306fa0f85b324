//! The libFuzzer driver of every target in [`defs_fuzz::TARGETS`]: the environment variable
//! `DEFS_FUZZ_TARGET` names the one this process fuzzes (`ci/fuzz` sets it), e.g.
//! `DEFS_FUZZ_TARGET=manifest cargo +nightly fuzz run --features libfuzzer decoders`.
#![no_main]

use std::sync::OnceLock;

defs_fuzz::track_allocations!();

fn target() -> defs_fuzz::Target {
    static TARGET: OnceLock<defs_fuzz::Target> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let name = std::env::var("DEFS_FUZZ_TARGET").unwrap_or_default();
        match defs_fuzz::TARGETS.iter().find(|(n, _)| *n == name) {
            Some((_, t)) => *t,
            None => {
                let names: Vec<&str> = defs_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
                eprintln!("DEFS_FUZZ_TARGET must name a target: {}", names.join(" "));
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    target()(data);
});
