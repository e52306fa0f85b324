//! In-process clusters of storage nodes on 127.0.0.1: whole files, node losses, moved shards,
//! malicious peers, refused requests.

mod util;

mod faults;
mod lookup;
mod put_get;
mod security;
