//! The fuzz targets, one function per decoder that reads outside bytes. Each takes any bytes
//! and returns whether the decoder accepted them; it panics only when something DeFS promises
//! breaks: a decoder panics, a round trip changes the value, one allocation exceeds what the
//! input can justify, or a check lets through what it must refuse.
//!
//! - `net`: what peers send: shard protocol bodies and frames, lookup asks, audit proofs,
//!   and the control socket's messages.
//! - `store`: what the network and the disk hand back: manifests, shards, pack files, root
//!   records, namespace snapshots and segments.
//! - `files`: what users write or keep: `config.toml`, `identity.key`, key share texts.

mod files;
mod net;
mod store;

pub use files::{config_file, identity_file, key_share};
pub use net::{audit_proof, control_message, lookup_ask, wire_codec, wire_request, wire_response};
pub use store::{manifest, root_record, shard_pack, shard_verify, snapshot, snapshot_segment};

use crate::Verdict;

/// Bytes of allocation a body decoder may make per input byte: its in-memory form (vectors of
/// entries with their own headers) is larger than the wire form, by a small constant factor.
const PER_BYTE: usize = 16;

/// Allocation any decoder may make whatever its input (error messages, small tables).
const SLACK: usize = 64 << 10;

/// The value of `r`, or a panic naming `what`: for steps that must succeed once the decoder has
/// accepted its input (re-encoding what it decoded, writing back what it read).
pub(crate) fn must<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The body of a shard protocol message as its encoder frames it (the length prefix cut off).
fn wire_body(what: &str, enc: defs_net::Result<defs_net::protocol::Encoded<'_>>) -> Vec<u8> {
    let mut frame = must(what, enc.and_then(|e| e.to_frame()));
    frame.drain(..4);
    frame
}

/// The input of a target whose format ends in a checksum or hash of what precedes it: the
/// first byte says whether the rest is taken as it is (even) or completed by `seal` (odd), so
/// that the fuzzer, which cannot forge a hash, also reaches the checks behind it.
fn sealed_or_raw(data: &[u8], seal: impl FnOnce(&[u8]) -> Vec<u8>) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    Some(if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut v = rest.to_vec();
        v.extend_from_slice(&seal(rest));
        v
    })
}

/// [`Verdict`] of a result.
fn verdict<T, E>(r: &Result<T, E>) -> Verdict {
    if r.is_ok() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}
