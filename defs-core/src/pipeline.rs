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

pub(crate) mod aead;
pub mod decode;
pub mod encode;
pub mod keys;
pub mod layout;
pub(crate) mod rs;
#[cfg(test)]
mod tests;

pub use aead::TAG_LEN;
pub use decode::{Decoder, SegmentRead, decode_segment, decrypt_shard, plan, shard_aad};
pub use encode::{EncodedSegment, EncodedShard, Encoder, encode_segment, encode_stream};
pub use keys::{FileKey, WrapKey, new_version_id, shard_key};
pub use layout::{Geometry, LayoutConfig, Mode, Redundancy, choose};
pub use rs::check_cpu;
