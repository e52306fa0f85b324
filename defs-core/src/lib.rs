//! defs-core: everything in DeFS that is true without a network or a kernel.
//!
//! - [`types`]: the shared vocabulary (node, shard, file, inode ids).
//! - [`error`]: the crate's one error type.
//! - [`meta`]: the metadata DB ([`MetaDb`], redb) with group commit; [`namespace`] (POSIX
//!   operations on it), [`journal`] (which inodes hold unsaved data) and [`snapshot`] (the whole
//!   namespace as one streamable object).
//!
//! The data path runs file bytes through the pipeline (slice → Reed-Solomon → encrypt → checksum)
//! into shards described by a manifest; the network (defs-net) stores shards, and the mounted
//! filesystem (defs-fuse) keeps the namespace and the write-back cache in the local stores here.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod error;
pub mod journal;
pub mod meta;
pub mod namespace;
pub mod snapshot;
pub mod sync;
#[cfg(test)]
mod testutil;
pub mod types;

pub use error::{Error, Result};
pub use journal::DirtyRecord;
pub use meta::MetaDb;
pub use snapshot::SnapshotStats;
pub use namespace::{
    Attr, Content, DirEntry, FileKind, NewInode, RenameMode, SetAttr, Timestamp, Unlinked,
    XattrMode,
};
