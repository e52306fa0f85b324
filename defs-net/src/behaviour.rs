//! The composed libp2p behaviour of a DeFS node. Field order is poll order: the connection
//! limits come first (they only deny, before anyone else records a connection), then the shard
//! protocol, because a user waits on its transfers; discovery and NAT traversal follow.
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

/// Peers one Kademlia lookup asks at once: 10, where libp2p's default is 3 (`kad::ALPHA_VALUE`).
/// A lookup waits on each peer it asks until that peer answers or the dial to it fails, and a
/// dial of a peer that went away takes the transport's timeout (5 s over QUIC). With 3 at once,
/// three such peers stalled a one-shot client's discovery for those 5 s, and it started
/// without peers it needed: on `ci/netbed`, a client behind a NAT never dialled a home node
/// that n0 listed after three stopped nodes, and its get found 2 of the 3 shards it needed.
/// With 10, a lookup through a network of up to 10 peers asks them all in its first round;
/// beyond that each round asks at most 10, and a lookup still takes O(log N) rounds.
pub const KAD_PARALLELISM: usize = 10;

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
/// Established connections per peer: one, a spare for simultaneous dials, an AutoNAT dial-back
/// (a peer checking that we can reach it: denied, it would make that peer think itself behind
/// a NAT), and a hole punch's direct connection while the relayed one it replaces is open.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Connections being set up at once, each way.
pub const MAX_PENDING_CONNECTIONS: u32 = 64;

/// How often a connection's peer is pinged (liveness and RTT for scores).
pub const PING_INTERVAL: Duration = Duration::from_secs(5);

/// A ping unanswered this long fails (the node closes that connection when libp2p reports it);
/// a peer whose last answer is older than `PING_INTERVAL + PING_TIMEOUT` is disconnected
/// ([`crate::node::SILENT_AFTER`]), so it stops counting as a live holder.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Relay service (circuit relay v2) of a storage node, served only while AutoNAT says the node is
/// public (its hop protocol is advertised only then): every limit below bounds what relaying
/// for nodes behind NATs can cost a public node.
pub mod relay_limits {
    use std::time::Duration;

    /// Reservations held at once: nodes behind a NAT reachable through this node.
    pub const MAX_RESERVATIONS: usize = 128;
    /// Reservations per peer (a node renews its own; a second is a spare while it reconnects).
    pub const MAX_RESERVATIONS_PER_PEER: usize = 2;
    /// How long a reservation lasts before its holder must renew it (libp2p's default, 1 h).
    pub const RESERVATION_DURATION: Duration = Duration::from_secs(3600);
    /// Relayed connections at once, in total.
    pub const MAX_CIRCUITS: usize = 32;
    /// Relayed connections per source peer.
    pub const MAX_CIRCUITS_PER_PEER: usize = 4;
    /// How long one relayed connection may last: 10 min, long enough for a put or get of a
    /// few hundred MiB at home-uplink speeds; the owner dials again after it ends.
    pub const MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(600);
    /// Bytes one relayed connection may carry, both ways together: 256 MiB, eight of the
    /// largest shards (32 MiB). libp2p's default (128 KiB) would not carry a single shard, and
    /// a node behind a NAT that hole punching cannot open stores and serves through its relay.
    pub const MAX_CIRCUIT_BYTES: u64 = 256 << 20;
}

/// How long a node waits after start before its first AutoNAT probe: 5 s, time for its first
/// peers to connect and answer identify (libp2p's default waits 15 s).
pub const AUTONAT_BOOT_DELAY: Duration = Duration::from_secs(5);

/// How soon AutoNAT probes again while it has no confident answer: 15 s (libp2p's default 90 s
/// would leave a node behind a NAT unreachable for minutes after it starts).
pub const AUTONAT_RETRY: Duration = Duration::from_secs(15);

/// How long one peer is not asked for another AutoNAT probe: 15 s, so a small network's few
/// peers can give the three answers a confident status needs within a minute.
pub const AUTONAT_THROTTLE_SERVER: Duration = Duration::from_secs(15);

/// Options that shape the behaviour.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether this node stores shards for others (advertised through identify).
    pub storage: bool,
    /// Run mDNS discovery on the LAN.
    pub mdns: bool,
    /// Gossipsub heartbeat; tests shorten it.
    pub gossip_heartbeat: Duration,
    /// AutoNAT counts private addresses as reachable (`[node] private_ips_reachable`).
    pub private_ips_reachable: bool,
}

pub use composed::{Behaviour, BehaviourEvent};

// The derive generates `BehaviourEvent` with undocumented variants (one per field).
#[allow(missing_docs)]
mod composed {
    use super::*;

    /// Every protocol a DeFS node speaks.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Bounds on connections. First: a connection it denies must be denied before any
        /// other behaviour records it (request-response keeps a connection from its
        /// `handle_established_*` on, and a later denial left it stale: libp2p's debug
        /// assertion on closing fired on the test bed once relayed and hole-punched
        /// connections made a third connection to one peer). It emits no events, so polling it
        /// first delays nothing.
        pub limits: connection_limits::Behaviour,
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
        /// Relaying for nodes behind NATs: storage nodes only, and only while reachable.
        pub relay_server: Toggle<relay::Behaviour>,
        /// Hole punching through a relayed connection.
        pub dcutr: dcutr::Behaviour,
        /// Whether we are reachable from outside.
        pub autonat: autonat::Behaviour,
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
        if let Some(alpha) = std::num::NonZeroUsize::new(KAD_PARALLELISM) {
            kad_cfg.set_parallelism(alpha);
        }
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
                .with_interval(Duration::from_secs(60))
                // A circuit address (a relay reservation) must reach peers when it appears.
                .with_push_listen_addr_updates(true),
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
            relay_server: Toggle::from(opts.storage.then(|| relay_server(peer_id))),
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: autonat::Behaviour::new(
                peer_id,
                autonat::Config {
                    boot_delay: AUTONAT_BOOT_DELAY,
                    retry_interval: AUTONAT_RETRY,
                    throttle_server_period: AUTONAT_THROTTLE_SERVER,
                    only_global_ips: !opts.private_ips_reachable,
                    ..autonat::Config::default()
                },
            ),
            limits: connection_limits::Behaviour::new(limits),
        })
    }
}

/// The relay server with [`relay_limits`] (and libp2p's default per-peer and per-IP rate limits
/// on reservations and circuits). It starts switched off; the node switches it on while AutoNAT
/// says the node is public (`node/reach.rs`). libp2p's automatic switch would also count a
/// relay reservation's circuit address as external, and a node behind a NAT would offer to
/// relay through its own relay.
fn relay_server(peer_id: libp2p::PeerId) -> relay::Behaviour {
    use relay_limits::*;
    let mut server = relay::Behaviour::new(
        peer_id,
        relay::Config {
            max_reservations: MAX_RESERVATIONS,
            max_reservations_per_peer: MAX_RESERVATIONS_PER_PEER,
            reservation_duration: RESERVATION_DURATION,
            max_circuits: MAX_CIRCUITS,
            max_circuits_per_peer: MAX_CIRCUITS_PER_PEER,
            max_circuit_duration: MAX_CIRCUIT_DURATION,
            max_circuit_bytes: MAX_CIRCUIT_BYTES,
            ..relay::Config::default()
        },
    );
    server.set_status(Some(relay::Status::Disable));
    server
}
