//! End-to-end tests of DeFS: the real binaries, real nodes on 127.0.0.1, real FUSE mounts.
//!
//! The FUSE tests (`fuse`) need the `fuse_tests` feature and the built binaries:
//! `cargo build --workspace --bins && cargo nextest run -p defs-tests --features fuse_tests`.

mod addresses;
mod cli;
#[cfg(feature = "fuse_tests")]
mod fuse;
mod key_backup;
mod messages;
mod network;
mod remote_reads;
mod repair;
