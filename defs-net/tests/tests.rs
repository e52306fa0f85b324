//! In-process clusters of storage nodes on 127.0.0.1: whole files, node losses, moved shards,
//! malicious peers, refused requests.

// Helpers outside `#[test]` functions fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

mod audit;
mod churn;
mod faults;
mod frames;
mod local;
mod lookup;
mod pairing;
mod put_get;
mod puzzle;
mod quic;
mod roots;
mod security;
mod shares;
mod transport;
