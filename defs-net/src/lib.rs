//! defs-net: the DeFS storage node and the client side of the shard network.
//!
//! One libp2p swarm, owned by one task, stores shards for their owners and serves them back; the
//! rest of the program talks to it through a cloneable handle. It implements the shard-store
//! trait that defs-core defines, so the filesystem never depends on this crate directly.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
