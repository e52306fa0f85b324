//! libFuzzer driver of [`defs_fuzz::targets::manifest`] (`ci/fuzz`).
#![no_main]

defs_fuzz::track_allocations!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    defs_fuzz::targets::manifest(data);
});
