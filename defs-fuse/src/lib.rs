//! defs-fuse: the mounted filesystem.
//!
//! - [`fs::Fs`]: the async core. Every POSIX operation with typed results, over the metadata
//!   DB (namespace + dirty journal) and the cache store; tests drive it without a kernel.
//! - [`fuse::FuseFs`]: the fuser `Filesystem` adapter — decodes, calls [`fs::Fs`], replies.
//! - [`session`]: mounting and unmounting ([`session::mount`], [`session::Mounted`]).
//! - [`flusher::Flusher`]: the write-back cache's upload scheduler; the network plugs in as an
//!   [`flusher::Uploader`].
//! - [`publisher::PublishTrigger`]: when a writable mount publishes its namespace (debounced,
//!   bounded staleness, lease renewal, `defs sync`); defs-core's `Publisher` does the work.
//! - [`follower::FollowTrigger`]: a read-only mount's poll for the namespace another machine
//!   publishes; defs-core's `Follower` applies it, this tells the cache and the kernel.
//! - [`upload`]: that uploader over defs-core's object layer ([`upload::ObjectUploader`]) and
//!   [`upload::Remote`], everything the core uses of the network.
//!
//! Writes land in per-inode cache files and are uploaded by the flusher; defs-fuse never
//! imports defs-net.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use defs_core::sync::Arc;
//! use defs_fuse::{fs, fuse::FuseFs, session};
//!
//! let dir = Path::new("/var/lib/defs");
//! let db = Arc::new(defs_core::meta::MetaDb::open(&dir.join("meta"))?);
//! let cache = Arc::new(defs_core::cache_store::CacheStore::open(&dir.join("cache"))?);
//! let core = fs::Fs::new(db, cache, &dir.join("cache"), fs::Config::default(), fs::Remote::none())?;
//! let mounted = session::mount(
//!     FuseFs::new(core.clone(), tokio::runtime::Handle::current()),
//!     Path::new("/mnt/defs"),
//!     &session::MountConfig::default(),
//! )?;
//! mounted.unmount()?;
//! core.shutdown().await?;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_docs, rustdoc::broken_intra_doc_links, unreachable_pub)]

pub mod flusher;
pub mod follower;
pub mod fs;
pub mod fuse;
pub mod publisher;
pub mod session;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod upload;
