//! The data pipeline: file bytes → segments → Reed-Solomon shards → per-shard AES-256-GCM →
//! CRC32 and BLAKE3 id, and back, for whole files or any byte range.
//!
//! - [`layout`]: storage modes, settings, [`Geometry`], the `auto` policy ([`choose`]).
//! - [`keys`]: [`FileKey`], [`WrapKey`], the per-shard key derivation ([`shard_key`]).
//! - [`encode`]: [`encode_segment`] (pure, parallelisable) and the streaming [`Encoder`].
//! - [`decode`]: range [`plan`]ning, [`decrypt_shard`], [`decode_segment`] and the streaming
//!   [`Decoder`].
//! - `rs`, `aead`: Reed-Solomon and AES-GCM behind small modules.
//!
//! Memory is bounded by segment size × parallelism, never by file size.
//!
//! ```
//! use std::collections::HashMap;
//! use defs_core::pipeline::{Decoder, FileKey, LayoutConfig, choose, encode_stream, keys};
//!
//! let file = vec![7u8; 2 << 20];
//! // 14 peers: Reed-Solomon 10+4 with 1 MiB shards.
//! let geometry = choose(file.len() as u64, 14, &LayoutConfig::default())?;
//! let key = FileKey::random()?;
//! let mut stored = HashMap::new();
//! let manifest = encode_stream(&file[..], geometry, &key, keys::new_version_id()?, |seg| {
//!     for shard in seg.shards {
//!         stored.insert((seg.index, shard.index), shard.bytes);
//!     }
//!     Ok(())
//! })?;
//! stored.remove(&(0, 3)); // any 4 shards of a segment may be lost
//! let mut out = Vec::new();
//! Decoder::new(&manifest, &key).read_all(|s, i, _| stored.get(&(s, i)).cloned(), &mut out)?;
//! assert_eq!(out, file);
//! # Ok::<(), defs_core::Error>(())
//! ```

pub(crate) mod aead;
pub mod decode;
pub mod encode;
pub mod keys;
pub mod layout;
pub(crate) mod rs;
#[cfg(test)]
mod tests;

pub use aead::TAG_LEN;
pub use decode::{
    Decoder, SegmentRead, assemble_into, decode_segment, decode_segment_into, decrypt_shard, plan,
    shard_aad,
};
pub use encode::{
    EncodedSegment, EncodedShard, Encoder, encode_segment, encode_segment_with, encode_stream,
};
pub use keys::{FileKey, WrapKey, new_version_id, shard_key};
pub use layout::{Geometry, LayoutConfig, Mode, PACK_SHARD_SIZE, Redundancy, choose, pack_layout};
pub use rs::check_cpu;
