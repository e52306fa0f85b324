//! defs-core: everything in DeFS that is true without a network or a kernel.
//!
//! - [`types`]: the shared vocabulary (node, shard, file, inode ids).
//! - [`error`]: the crate's one error type.
//! - [`cache_store`]: per-inode sparse cache files of file contents (`DIR/cache`).
//! - [`config`]: every setting of a data dir and its default.
//! - [`identity`]: the node's secp256k1 key, NodeId, work puzzle, key file and signatures.
//! - [`shard_store`]: the shards a storage node keeps for others (`DIR/shards`).
//! - [`pipeline`]: file bytes ↔ encrypted, erasure-coded shards ([`Encoder`], [`Decoder`]).
//! - [`manifest`]: a file version's index and its sealed, versioned format ([`Manifest`]).
//! - [`oplog`]: the append-only redo log that makes both local stores survive a crash of the
//!   daemon process without an fsync per operation.
//! - [`meta`]: the metadata DB ([`MetaDb`], redb) with group commit; [`namespace`] (POSIX
//!   operations on it), [`journal`] (which inodes hold unsaved data) and [`snapshot`] (the whole
//!   namespace as one streamable object). Their layering is in the [`meta`] module doc.
//! - [`remote`]: the [`remote::ShardClient`] trait, "a place that stores and returns shards",
//!   and [`remote::RootStore`], where an owner's signed root record is kept and found.
//! - [`root_record`]: the owner-signed record naming the published namespace (layout, sealing,
//!   verification, the no-rollback rule).
//! - [`object`]: a byte source stored through a `ShardClient` as one sealed, erasure-coded
//!   object, and byte ranges of it read back (the mount and the CLI share it).
//! - [`publish`]: the namespace published as a stored snapshot named by a signed root record
//!   ([`publish::Publisher`]), and recovered from the key alone ([`publish::recover()`]).
//! - [`durability`]: the one definition of "on the network" that every safety report uses.
//!
//! The data path runs file bytes through the pipeline (slice → Reed-Solomon → encrypt → checksum)
//! into shards described by a manifest; the network (defs-net) stores shards, and the mounted
//! filesystem (defs-fuse) keeps the namespace and the write-back cache in the local stores here.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod cache_store;
pub mod config;
pub mod durability;
pub mod error;
mod fsutil;
pub mod gc;
pub mod identity;
pub mod journal;
pub mod manifest;
pub mod meta;
pub mod namespace;
pub mod object;
pub mod oplog;
pub mod pipeline;
pub mod publish;
pub mod remote;
pub mod repair;
pub mod root_record;
pub mod shard_store;
pub mod share;
pub mod snapshot;
pub mod sync;
#[cfg(test)]
mod testutil;
pub mod types;

pub use cache_store::CacheStore;
pub use config::Config;
pub use error::{Error, Result};
pub use identity::{Identity, PublicKey, SignDomain, Signature};
pub use journal::DirtyRecord;
pub use manifest::{Manifest, SealedManifest, SegmentEntry, ShardEntry};
pub use meta::MetaDb;
pub use namespace::{
    Attr, Content, DirEntry, FileKind, NewInode, RenameMode, SetAttr, Timestamp, Unlinked,
    XattrMode,
};
pub use pipeline::{
    Decoder, EncodedSegment, EncodedShard, Encoder, FileKey, Geometry, LayoutConfig, Mode,
    Redundancy, WrapKey,
};
pub use shard_store::ShardStore;
pub use snapshot::SnapshotStats;
