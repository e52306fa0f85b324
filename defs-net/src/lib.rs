//! defs-net: the DeFS storage node and the client side of the shard network.
//!
//! One libp2p swarm, owned by one task ([`node`]), stores shards for their owners and serves
//! them back; the rest of the program talks to it through the cloneable [`Node`] handle.
//!
//! - [`protocol`]: the shard protocol's wire messages and codec (store, fetch, has, delete, info,
//!   lookup answers), with explicit size limits checked before allocating.
//! - [`behaviour`]: the composed libp2p behaviour (shard protocol first, then gossipsub, Kademlia,
//!   identify, ping, mDNS, relay client, DCUtR, AutoNAT, connection limits).
//! - [`node`]: the actor that owns the swarm, and its handle.
//! - [`lookup`]: broadcast index lookup over gossipsub with direct answers.
//! - [`placement`]: peer scores and the weighted random choice of distinct peers.
//! - [`transfer`]: the bounded, prioritised pool of shard transfers.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod behaviour;
pub mod error;
pub mod lookup;
//pub mod node;
pub mod placement;
pub mod protocol;
//mod service;
pub mod transfer;

pub use error::{Error, Result};
