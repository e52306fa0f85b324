//! defs-fuse: the mounted filesystem.
//!
//! `fuse.rs` adapts fuser's callbacks to an async core (`fs.rs`) that tests can drive without a
//! kernel. Writes land in per-inode cache files and are uploaded by a background flusher; reads
//! of uncached ranges fetch only the shards that cover them, through defs-core's shard-store
//! trait (defs-fuse never imports defs-net).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
