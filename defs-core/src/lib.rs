//! defs-core: everything in DeFS that is true without a network or a kernel.
//!
//! - [`types`]: the shared vocabulary (node, shard, file, inode ids).
//! - [`error`]: the crate's one error type.
//! - [`remote`]: the [`remote::ShardClient`] trait, "a place that stores and returns shards".
//!
//! The data path runs file bytes through the pipeline (slice → Reed-Solomon → encrypt → checksum)
//! into shards described by a manifest; the network (defs-net) stores shards, and the mounted
//! filesystem (defs-fuse) keeps the namespace and the write-back cache in the local stores here.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod error;
pub mod remote;
pub mod sync;
pub mod types;

pub use error::{Error, Result};
