//! The composed libp2p behaviour of a DeFS node. Field order is poll order: the shard protocol
//! comes first because a user waits on its transfers; discovery and NAT traversal follow.

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, autonat, connection_limits, dcutr, gossipsub, identify, identity, kad, mdns,
    ping, relay, request_response,
};

use crate::error::{Error, Result};
use crate::protocol::codec::ShardCodec;
use crate::protocol::{MAX_ASK_LEN, SHARD_PROTOCOL};

/// Identify protocol version spoken by DeFS nodes.
pub const IDENTIFY_PROTOCOL: &str = "/defs/id/1.0.0";

/// Kademlia protocol name: a DeFS-only DHT, separate from the public IPFS one.
pub const KAD_PROTOCOL: &str = "/defs/kad/1.0.0";

/// Identify agent prefix of a node that stores shards for others.
pub const AGENT_STORAGE: &str = "defs-storage/";

/// Identify agent prefix of a node that only acts as a client.
pub const AGENT_CLIENT: &str = "defs-client/";

/// How long one shard request may take end to end. 60 s: a 32 MiB shard at 1 MB/s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Concurrent shard streams per connection (inbound + outbound). 64 keeps a fast peer busy
/// without letting one peer pin unbounded memory (at most 64 × 32 MiB frames in flight).
pub const MAX_SHARD_STREAMS: usize = 64;

/// Established connections in total, and per peer.
pub const MAX_CONNECTIONS: u32 = 256;
/// Established connections per peer: one plus a spare for simultaneous dials.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Connections being set up at once, each way.
pub const MAX_PENDING_CONNECTIONS: u32 = 64;

/// How often a connection's peer is pinged (liveness and RTT for scores).
pub const PING_INTERVAL: Duration = Duration::from_secs(5);

/// A ping unanswered this long fails (the node closes that connection when libp2p reports it);
/// a peer whose last answer is older than `PING_INTERVAL + PING_TIMEOUT` is disconnected
/// ([`crate::node::SILENT_AFTER`]), so it stops counting as a live holder.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Options that shape the behaviour.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether this node stores shards for others (advertised through identify).
    pub storage: bool,
    /// Run mDNS discovery on the LAN.
    pub mdns: bool,
    /// Gossipsub heartbeat; tests shorten it.
    pub gossip_heartbeat: Duration,
}

pub use composed::{Behaviour, BehaviourEvent};

// The derive generates `BehaviourEvent` with undocumented variants (one per field).
#[allow(missing_docs)]
mod composed {
    use super::*;

    /// Every protocol a DeFS node speaks.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Shard store/fetch/has/delete and lookup answers: first, it is what users wait on.
        pub shard: request_response::Behaviour<ShardCodec>,
        /// Broadcast index lookups.
        pub gossipsub: gossipsub::Behaviour,
        /// Peer discovery and the DHT copy of root records.
        pub kad: kad::Behaviour<kad::store::MemoryStore>,
        /// Addresses, protocols and roles of peers.
        pub identify: identify::Behaviour,
        /// Liveness and RTT, used in peer scores.
        pub ping: ping::Behaviour,
        /// LAN discovery, off with `--no-mdns`.
        pub mdns: Toggle<mdns::tokio::Behaviour>,
        /// Reaching and being reached through relays.
        pub relay: relay::client::Behaviour,
        /// Hole punching through a relayed connection.
        pub dcutr: dcutr::Behaviour,
        /// Whether we are reachable from outside.
        pub autonat: autonat::Behaviour,
        /// Bounds on connections.
        pub limits: connection_limits::Behaviour,
    }
}

impl Behaviour {
    /// Builds the behaviour for `key`.
    ///
    /// # Errors
    /// [`Error::Setup`] when gossipsub or mDNS cannot be configured.
    pub fn new(
        key: &identity::Keypair,
        relay: relay::client::Behaviour,
        opts: &Options,
    ) -> Result<Self> {
        let peer_id = key.public().to_peer_id();
        let shard = request_response::Behaviour::with_codec(
            ShardCodec::default(),
            [(
                StreamProtocol::new(SHARD_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(REQUEST_TIMEOUT)
                .with_max_concurrent_streams(MAX_SHARD_STREAMS),
        );

        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(opts.gossip_heartbeat)
            .validation_mode(gossipsub::ValidationMode::Strict)
            .max_transmit_size(MAX_ASK_LEN + 1024)
            .build()
            .map_err(|e| Error::Setup(format!("gossipsub config: {e}")))?;
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_cfg,
        )
        .map_err(|e| Error::Setup(format!("gossipsub: {e}")))?;

        let mut kad_cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_cfg.set_periodic_bootstrap_interval(Some(Duration::from_secs(300)));
        // Every inbound record reaches the node's filter (root records only, verified, never
        // rolled back: `node/roots.rs`) before it is stored.
        kad_cfg.set_record_filtering(kad::StoreInserts::FilterBoth);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
        kad.set_mode(Some(if opts.storage {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));

        let agent = if opts.storage {
            AGENT_STORAGE
        } else {
            AGENT_CLIENT
        };
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                .with_agent_version(format!("{agent}{}", env!("CARGO_PKG_VERSION")))
                .with_interval(Duration::from_secs(60)),
        );

        let mdns = if opts.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| Error::Setup(format!("mdns: {e}")))?,
            )
        } else {
            None
        };

        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(MAX_CONNECTIONS))
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
            .with_max_pending_incoming(Some(MAX_PENDING_CONNECTIONS))
            .with_max_pending_outgoing(Some(MAX_PENDING_CONNECTIONS));

        Ok(Behaviour {
            shard,
            gossipsub,
            kad,
            identify,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            mdns: Toggle::from(mdns),
            relay,
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
            limits: connection_limits::Behaviour::new(limits),
        })
    }
}
