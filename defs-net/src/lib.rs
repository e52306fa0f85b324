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
//! - [`transport`]: TCP (TLS 1.3 or noise, yamux) and QUIC, chosen in one function.
//! - [`service`]: what a storage node does with inbound requests (signatures, replays, store I/O).
//! - [`client`]: signed stores and deletes, verified fetches, placement with retries; it
//!   implements defs-core's `ShardClient`. [`files`]: whole files over the pipeline.
//! - [`roots`]: owners' signed root records on storage peers and in the DHT (put, find); the
//!   client's implementation of defs-core's `RootStore`. [`shares`]: share records on the
//!   storage peers closest to their recipient (put, list).
//! - [`control`]: the data dir's control socket; [`commands`]: what the CLI commands do.
//! - [`devnet`]: N storage nodes on 127.0.0.1 in one process.
//! - [`pairing`]: each storage node mirrors its store on a partner, heartbeats it and re-pairs
//!   when it goes; [`audit`]: proofs of storage checked against shard ids alone.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod audit;
pub mod behaviour;
pub mod bootstrap;
pub mod client;
pub mod commands;
pub mod control;
pub mod devnet;
pub mod error;
pub mod files;
pub mod lookup;
pub mod node;
pub mod pairing;
pub mod placement;
pub mod protocol;
pub mod roots;
pub mod service;
pub mod shares;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod transfer;
pub mod transport;

pub use client::Client;
pub use error::{Error, Result};
pub use libp2p::{Multiaddr, PeerId};
pub use node::{Config, Node};
