//! defs-fuzz: one fuzz target per DeFS decoder that reads bytes from outside the process (peers,
//! the disk after a crash, files a user edits), and the seed corpus that starts each one.
//!
//! - [`targets`]: the target functions. Each decodes its input the way DeFS does, and checks
//!   what must hold for any input: no panic (an error is the answer to garbage), a decode →
//!   encode round trip where an encoder exists, and no allocation larger than the input can
//!   justify ([`alloc`]).
//! - [`alloc`]: the allocator wrapper that records the largest single allocation of a call.
//! - [`scratch`]: the per-process directory of the targets that read files or a database.
//! - [`seeds`]: the seed inputs, made by DeFS's own encoders (`examples/write_seeds.rs` writes
//!   them to `fuzz/seeds/<target>/`).
//!
//! `fuzz_targets/decoders.rs` is the libFuzzer driver of all of them (`DEFS_FUZZ_TARGET` picks
//! one), built by `cargo fuzz` (`ci/fuzz`, nightly, feature `libfuzzer`); `tests/replay.rs` runs every checked-in seed and
//! every past crash (`fuzz/regressions/<target>/`) through the same functions on stable, as part
//! of the normal test suite.
//!
//! ```
//! // A shard request frame made by the real encoder decodes and re-encodes to the same bytes.
//! let frame = defs_net::protocol::Request::Info.encode().unwrap().to_frame().unwrap();
//! assert_eq!(defs_fuzz::targets::wire_request(&frame[4..]), defs_fuzz::Verdict::Accepted);
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod alloc;
mod fixtures;
pub mod scratch;
pub mod seeds;
pub mod targets;

/// What a target made of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The decoder accepted the input (and every check on the result held).
    Accepted,
    /// The decoder refused the input with an error.
    Refused,
}

/// A fuzz target: takes any bytes, panics only when a property DeFS promises is broken.
pub type Target = fn(&[u8]) -> Verdict;

/// Every target by name (the `fuzz_targets/` binary and `fuzz/seeds/` directory of the same name).
pub const TARGETS: &[(&str, Target)] = &[
    ("wire_request", targets::wire_request),
    ("wire_response", targets::wire_response),
    ("wire_codec", targets::wire_codec),
    ("lookup_ask", targets::lookup_ask),
    ("audit_proof", targets::audit_proof),
    ("control_message", targets::control_message),
    ("manifest", targets::manifest),
    ("shard_verify", targets::shard_verify),
    ("shard_pack", targets::shard_pack),
    ("root_record", targets::root_record),
    ("snapshot", targets::snapshot),
    ("snapshot_segment", targets::snapshot_segment),
    ("config_file", targets::config_file),
    ("identity_file", targets::identity_file),
    ("key_share", targets::key_share),
];
