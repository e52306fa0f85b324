//! The node: one task owns the libp2p [`Swarm`] ([`NodeActor`]); everything else holds a
//! cheap, cloneable [`Node`] handle that sends [`NodeMessage`]s with a `oneshot` reply.
//!
//! ```text
//!   Node (handle) ──NodeMessage (bounded mpsc)──► NodeActor ──owns──► Swarm<Behaviour>
//!        ▲                                            │  │
//!        └──────────── oneshot replies ───────────────┘  ├─► spawn_blocking: ShardStore I/O
//!                                                        │      └─ Done (bounded mpsc) ─► actor
//!                                                        └─► gossipsub asks / Holders answers
//! ```
//!
//! The actor's loop is `select! { biased; cancel, finished local work, timers, commands, swarm }`.
//! Every outbound request is kept in a pending map until its response, failure or timeout (the
//! request-response behaviour times out every request); every lookup until its deadline.
//!
//! A node with a shard store serves its own handle too: a [`NodeMessage::Request`] addressed to
//! its own peer id goes through the same checks and store I/O as an inbound one, without the
//! network; it is a placement candidate ([`Candidate::local`]), resolves its own node id and
//! answers its own lookups. So a lone node stores and fetches locally.
//!
//! Peers whose node id does not solve the identity puzzle at [`Config::peer_difficulty`] are
//! refused: their requests get [`ErrorCode::PuzzleNotSolved`], their lookup asks and answers are
//! ignored, and they are never placement candidates.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use defs_core::identity::{DEFAULT_PUZZLE_DIFFICULTY, Identity, puzzle_ok};
use defs_core::shard_store::ShardStore;
use defs_core::types::{NodeId, ShardId};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify, identity, kad, mdns, noise, ping, relay, yamux,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info, info_span, trace, warn};

use crate::behaviour::{AGENT_STORAGE, Behaviour, BehaviourEvent, Options};
use crate::bootstrap;
use crate::error::{Error, Result};
use crate::lookup::{self, AskLimiter, AskPacer, LOOKUP_TOPIC};
use crate::placement::{Candidate, PeerStats};
use crate::protocol::{
    Ask, ErrorCode, MAX_ASK_ADDRS, MAX_IDS, NodeInfo, OwnerUsage, Request, Response,
};
use crate::service::{self, Service};

mod handle;
mod lookups;
mod messages;
mod peers;
mod reach;
mod reach_events;
mod roots;
mod shard;

pub use reach::{
    ANSWER_RELAY_WAIT, CIRCUIT_RETRY, RESERVE_CHECK, RESERVE_RETRY, RETIRE_WITHIN, ReachReport,
    Reachability, WANT_RELAYS,
};

/// Commands queued to the actor before `send` waits. Bounded: a stuck actor pushes back.
pub const COMMAND_QUEUE: usize = 1024;

/// Finished local work (store I/O results) queued to the actor.
pub const DONE_QUEUE: usize = 256;

/// Inbound store operations running at once on the blocking pool. Each may hold a shard in
/// memory, so this also bounds a node's memory: 32 × 32 MiB worst case.
pub const MAX_INBOUND_OPS: usize = 32;

/// Peers tracked at once; disconnected ones are forgotten first beyond this.
pub const MAX_TRACKED_PEERS: usize = 4096;

/// How often the actor checks lookup deadlines and refreshes peer info.
pub const TICK: Duration = Duration::from_millis(50);

/// How often capacity info of connected storage peers (and this owner's use and quota on each)
/// is refreshed.
pub const INFO_REFRESH: Duration = Duration::from_secs(30);

/// Idle connections are kept this long (shard transfers come in bursts).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// How long after losing its last connection a storage peer is dialled again at its known
/// addresses; each failed attempt doubles the wait up to [`REDIAL_MAX`]. So a holder that comes
/// back at the same address counts again in durability figures within `REDIAL_MAX` of its return.
pub const REDIAL_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between redials of a lost storage peer (see [`REDIAL_FIRST`]): 15 s keeps
/// a returning holder's absence from the figures short, at one dial per lost peer per 15 s.
pub const REDIAL_MAX: Duration = Duration::from_secs(15);

/// A connected peer that has answered no ping for this long is disconnected, so it stops
/// counting as a live holder: a ping every [`crate::behaviour::PING_INTERVAL`] (5 s), answered
/// within [`crate::behaviour::PING_TIMEOUT`] (10 s), leaves a live peer's last answer at most
/// 15 s old. (libp2p's ping reports only the second failure in a row, after 30 s or more.)
pub const SILENT_AFTER: Duration = Duration::from_secs(15);

/// A storage peer gone this long is no longer redialled (it has left the network, or comes back
/// through a bootstrap or mDNS).
pub const REDIAL_GIVE_UP: Duration = Duration::from_secs(3600);

/// How long a one-shot command at most waits for the network to settle: its bootstrap peers,
/// the peers Kademlia finds through them, and their identify answers.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Node::discover`] waits without a new peer connecting before it takes the network
/// as found, while its Kademlia lookup still runs (it may wait long on a peer that does not
/// answer). 300 ms: a lookup's answers connect within a few round trips (milliseconds on a LAN,
/// ~100 ms across continents), so a gap of 300 ms means the lookup has nobody new to give.
pub const DISCOVERY_QUIET: Duration = Duration::from_millis(300);

/// How long [`Node::discover`] waits without a new peer connecting while dials are still being
/// set up: 8 s. A relayed dial (a connection to the relay, a circuit through it, the handshakes,
/// and from behind a NAT the QUIC attempts at the peer's private addresses beside it) took more
/// than 2 s on the test bed (`ci/netbed`) from a client behind a NAT, and one that lost the race
/// for its relay's connection is tried again only once its other addresses have failed (5 s,
/// QUIC's handshake timeout; see [`reach::CIRCUIT_RETRY`]): 8 s covers both. A dead address's
/// transport timeout is not waited for beyond this, and discovery never beyond
/// [`DISCOVERY_TIMEOUT`].
pub const DISCOVERY_DIAL_QUIET: Duration = Duration::from_secs(8);

/// Configuration of a node.
#[derive(Debug)]
pub struct Config {
    /// Addresses to listen on; `/ip4/0.0.0.0/tcp/0` and QUIC when empty.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// LAN discovery.
    pub mdns: bool,
    /// The shard store, when this node stores shards for others.
    pub store: Option<ShardStore>,
    /// Capacity advertised to peers, in bytes (the shard store enforces its own quotas).
    pub capacity: u64,
    /// Optional zone label for placement diversity.
    pub zone: String,
    /// Gossipsub heartbeat.
    pub gossip_heartbeat: Duration,
    /// The identity puzzle difficulty (leading zero bits) a peer's node id must solve before
    /// this node stores for it, places on it or answers it; `identity.puzzle_difficulty` of
    /// `config.toml`.
    pub peer_difficulty: u8,
    /// Pairing settings; a node with a store and these pairs with a partner
    /// ([`crate::pairing`]).
    pub pairing: Option<crate::pairing::Config>,
    /// AutoNAT counts private addresses as reachable (`[node] private_ips_reachable`).
    pub private_ips_reachable: bool,
    /// TCP security protocols, in the order this node proposes them ([`crate::transport`]).
    pub tcp_security: Vec<defs_core::config::TcpSecurity>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: true,
            store: None,
            capacity: 0,
            zone: String::new(),
            gossip_heartbeat: Duration::from_secs(1),
            peer_difficulty: DEFAULT_PUZZLE_DIFFICULTY,
            pairing: None,
            private_ips_reachable: false,
            tcp_security: defs_core::config::NodeSettings::default().tcp_security,
        }
    }
}

/// What the node knows about one peer, as shown by `defs peers`.
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    /// The peer.
    pub peer: PeerId,
    /// Its DeFS node id.
    pub node_id: Option<NodeId>,
    /// Known addresses.
    pub addrs: Vec<Multiaddr>,
    /// Connected right now.
    pub connected: bool,
    /// Whether it stores shards for others (from identify).
    pub storage: bool,
    /// Last ping RTT.
    pub rtt: Option<Duration>,
    /// Measured bandwidth, bytes/s.
    pub bandwidth: Option<f64>,
    /// Its placement score now.
    pub score: f64,
    /// Its reported capacity and zone.
    pub info: Option<NodeInfo>,
    /// Its node id solves the identity puzzle at our difficulty (else it is refused).
    pub puzzle_ok: bool,
    /// Why this node refuses it, when it does ([`bootstrap::refusal`]).
    pub refused: Option<String>,
    /// It has answered identify on its current connection (its role is known).
    pub identified: bool,
    /// Its connections that go straight to it.
    pub direct: usize,
    /// Its connections that go through a relay.
    pub relayed: usize,
}

/// The node's own state, for `defs status`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Our peer id.
    pub peer: PeerId,
    /// Our node id.
    pub node_id: NodeId,
    /// Full listen addresses (with `/p2p/<id>`).
    pub listen: Vec<Multiaddr>,
    /// Connected peers.
    pub connected: usize,
    /// Connected remote storage peers that placement may use (puzzle solved).
    pub storage_peers: usize,
    /// Our own store, if any.
    pub info: NodeInfo,
    /// Free bytes advertised by those storage peers plus our own store's free bytes.
    pub network_free: u64,
    /// Each storage node that may take this owner's shards: our own store first (when we have
    /// one), then the connected remote storage peers, with this owner's use and quota on each
    /// as last reported.
    pub owner_space: Vec<NodeSpace>,
    /// Capacity advertised by those storage peers plus our own store's capacity.
    pub network_capacity: u64,
    /// Pairing: partner, mirror lag, wards (a storage node with pairing on).
    pub pairing: Option<crate::pairing::Report>,
    /// Audits this node ran as an owner.
    pub audits: crate::audit::Summary,
    /// Whether this node is reachable, its relays, and how its connections go.
    pub reach: ReachReport,
}

/// One storage node's space for this node's owner (its identity), for `defs status` and the
/// mount's statfs, from the node's last answers to Info and [`Request::OwnerUsage`] (refreshed
/// every [`INFO_REFRESH`], and at once by [`crate::Client::refresh_usage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpace {
    /// The node's peer id.
    pub peer: PeerId,
    /// Its node id.
    pub node_id: Option<NodeId>,
    /// This is our own store.
    pub local: bool,
    /// What the owner stores there and its quota there; `None` while the node has not answered
    /// (or is an older node that does not know the request).
    pub usage: Option<OwnerUsage>,
    /// The node's capacity and bytes used (from Info), when known.
    pub space: Option<(u64, u64)>,
}

impl NodeSpace {
    /// Bytes the owner may still store there: [`OwnerUsage::room`] when the node reported the
    /// owner's use, else its advertised free space (0 while it reported nothing).
    pub fn room(&self) -> u64 {
        match (&self.usage, self.space) {
            (Some(u), _) => u.room(),
            (None, Some((capacity, used))) => capacity.saturating_sub(used),
            (None, None) => 0,
        }
    }
}

/// How many bytes the owner may still store on the network, raw (shards, before redundancy):
/// the sum of [`NodeSpace::room`] over the remote storage nodes, or our own store's room when
/// there is no remote one (placement uses our own store only as a last resort, and a shard
/// refused for quota is never moved to it, see [`crate::Client`]). `None` while none of those
/// nodes has reported its space yet (just after connecting), or when there is none.
pub fn owner_room(space: &[NodeSpace]) -> Option<u64> {
    let remote = space.iter().any(|s| !s.local);
    let counted: Vec<&NodeSpace> = space.iter().filter(|s| s.local != remote).collect();
    if counted
        .iter()
        .all(|s| s.usage.is_none() && s.space.is_none())
    {
        return None;
    }
    Some(
        counted
            .iter()
            .map(|s| s.room())
            .fold(0, u64::saturating_add),
    )
}

/// What a one-shot node found of the network ([`Node::discover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Discovery {
    /// Connected storage peers whose identity is accepted: where shards can go.
    pub storage: usize,
    /// Connected peers refused because their node id does not solve the identity puzzle.
    pub refused: usize,
    /// Other connected peers (clients).
    pub clients: usize,
    /// Whether every connected peer had answered identify, and the Kademlia lookup had ended
    /// or no new peer had connected for [`DISCOVERY_QUIET`], before the time bound (else the
    /// counts are what had arrived by then).
    pub settled: bool,
}

impl std::fmt::Display for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} storage peer(s)", self.storage)?;
        if self.refused > 0 {
            write!(
                f,
                ", {} refused (identity puzzle not solved, see `defs peers`)",
                self.refused
            )?;
        }
        if self.clients > 0 {
            write!(f, ", {} client(s)", self.clients)?;
        }
        if !self.settled {
            write!(f, " (still arriving when the wait ended)")?;
        }
        Ok(())
    }
}

/// The outcome of a transfer, reported by clients for peer scores.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// `bytes` moved in `took`.
    Success {
        /// Bytes moved.
        bytes: u64,
        /// Time taken.
        took: Duration,
    },
    /// The peer sent bad data (garbage, truncated, another shard).
    BadData,
    /// The peer failed or refused.
    Failure,
    /// The peer could not prove it stores a shard it acknowledged ([`crate::audit`]).
    AuditFailed,
}

/// Commands to the actor. Every variant with a `reply` gets exactly one answer.
#[derive(Debug)]
pub enum NodeMessage {
    /// Send a shard-protocol request to a peer.
    Request {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: Request,
        /// Its response.
        reply: oneshot::Sender<Result<Response>>,
    },
    /// Dial an address.
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Whether the dial started.
        reply: oneshot::Sender<Result<()>>,
    },
    /// Full listen addresses.
    ListenAddrs {
        /// The addresses.
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    /// Known peers.
    Peers {
        /// The peers.
        reply: oneshot::Sender<Vec<PeerSnapshot>>,
    },
    /// Connected storage peers (and our own store) with their scores for `need` bytes.
    Candidates {
        /// Bytes about to be placed on each.
        need: u64,
        /// The candidates.
        reply: oneshot::Sender<Vec<Candidate>>,
    },
    /// Map node ids to connected peers.
    Resolve {
        /// Node ids.
        nodes: Vec<NodeId>,
        /// For each, the peer if known.
        reply: oneshot::Sender<Vec<Option<PeerId>>>,
    },
    /// Broadcast a lookup and collect direct answers until `window` ends or every id has a holder.
    Lookup {
        /// At most [`MAX_IDS`] ids.
        ids: Vec<ShardId>,
        /// How long to wait for answers.
        window: Duration,
        /// The lookup ends early once every id has this many holders.
        want: usize,
        /// Holders per id.
        reply: oneshot::Sender<Result<HashMap<ShardId, Vec<PeerId>>>>,
    },
    /// A transfer outcome for peer scores.
    Report {
        /// The peer.
        peer: PeerId,
        /// What happened.
        outcome: Outcome,
    },
    /// The node's own status.
    Status {
        /// The status.
        reply: oneshot::Sender<NodeStatus>,
    },
    /// What became of each bootstrap address.
    Bootstrap {
        /// One report per address, in the order given.
        reply: oneshot::Sender<Vec<bootstrap::Report>>,
    },
    /// How many outgoing connections are being set up (a relayed dial takes a few round trips).
    Dialing {
        /// Answer.
        reply: oneshot::Sender<u32>,
    },
    /// Node ids of the peers reachable now (connected, identity accepted).
    Live {
        /// The node ids.
        reply: oneshot::Sender<Vec<NodeId>>,
    },
    /// Run a Kademlia bootstrap (a lookup of our own id through the known peers, which
    /// connects to the peers it finds); the reply comes when it has finished.
    Discover {
        /// `false` when no peer is known to ask.
        reply: oneshot::Sender<bool>,
    },
    /// Stop taking new shards (the node is shutting down): stores are refused with
    /// [`ErrorCode::ShuttingDown`] from now on; fetches are still served.
    Drain {
        /// Inbound store operations still running or queued.
        reply: oneshot::Sender<usize>,
    },
    /// Put a root record into the DHT (`Quorum::One`); the reply comes when the put ends.
    DhtPut {
        /// The record's bytes (verified before anything is sent).
        record: Vec<u8>,
        /// Whether a peer took it.
        reply: oneshot::Sender<Result<()>>,
    },
    /// The values the DHT holds under `owner`'s root record key (unverified), collected until
    /// the query ends or [`DHT_GET_TIMEOUT`].
    DhtGet {
        /// The owner.
        owner: NodeId,
        /// What was found.
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
    /// Remember an audit's outcome (for `defs status` and repair).
    RecordAudit {
        /// The audit.
        record: crate::audit::AuditRecord,
        /// Done.
        reply: oneshot::Sender<()>,
    },
    /// The failed audits remembered, oldest first.
    FailedAudits {
        /// The failures.
        reply: oneshot::Sender<Vec<crate::audit::AuditRecord>>,
    },
    /// Make this node misbehave (tests).
    #[cfg(any(test, feature = "test-utils"))]
    SetFault {
        /// The misbehaviour, `None` to behave again.
        fault: Option<crate::service::Fault>,
        /// Done.
        reply: oneshot::Sender<()>,
    },
}

/// Handle to a running node. Cheap to clone; the node stops when the last clone is dropped or on
/// [`Node::shutdown`].
#[derive(Clone, Debug)]
pub struct Node {
    tx: mpsc::Sender<NodeMessage>,
    peer_id: PeerId,
    node_id: NodeId,
    cancel: CancellationToken,
    /// `None` in the node's own helper tasks' handles ([`Node::link`]), so that they do not
    /// keep the node alive.
    task: Option<Arc<AbortOnDropHandle<()>>>,
}

/// Converts a DeFS identity into the libp2p keypair it is (same secp256k1 key).
///
/// # Errors
/// [`Error::Setup`] if libp2p refuses the key bytes.
pub fn keypair(identity: &Identity) -> Result<identity::Keypair> {
    let mut secret = identity.secret_bytes();
    let sk = identity::secp256k1::SecretKey::try_from_bytes(&mut secret[..])
        .map_err(|e| Error::Setup(format!("identity key: {e}")))?;
    Ok(identity::secp256k1::Keypair::from(sk).into())
}

/// The DeFS node id of a peer: peer ids of secp256k1 keys embed the public key.
pub fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let secp = pk.try_into_secp256k1().ok()?;
    Some(NodeId(*blake3::hash(&secp.to_bytes()).as_bytes()))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn short(peer: &PeerId) -> String {
    let s = peer.to_base58();
    s[s.len().saturating_sub(8)..].to_string()
}

/// What the actor keeps per peer.
#[derive(Debug)]
struct PeerState {
    addrs: Vec<Multiaddr>,
    connections: usize,
    storage: bool,
    stats: PeerStats,
    info: Option<NodeInfo>,
    /// This owner's use and quota there, as last reported.
    usage: Option<OwnerUsage>,
    node_id: Option<NodeId>,
    last_seen: Instant,
    /// The node id solves the puzzle at our difficulty; refused otherwise.
    puzzle_ok: bool,
    /// The refusal was logged (once per peer).
    refusal_logged: bool,
    /// Identify has answered since the peer last connected.
    identified: bool,
    /// When a lost storage peer is dialled again, and the wait after that.
    redial: Option<(Instant, Duration)>,
    /// Its last answered ping (or when it connected).
    last_pong: Instant,
    /// It refused a store because it is shutting down: not a placement candidate until it
    /// connects again.
    draining: bool,
    /// Its connections that go through a relay (a subset of `connections`).
    relayed: Vec<ConnectionId>,
    /// It offers relay service now (identify lists the circuit relay hop protocol).
    relay_hop: bool,
    /// When a failed dial of it was last tried again through relays ([`reach::CIRCUIT_RETRY`]).
    circuit_retry: Option<Instant>,
}

/// Where the answer to an admitted operation goes.
pub(crate) enum Reply {
    /// Back to a remote peer over its request-response stream.
    Peer(ResponseChannel<Response>),
    /// To this node's own handle (a request addressed to ourselves).
    Local(oneshot::Sender<Result<Response>>),
}

/// An outbound request in flight.
enum Pending {
    /// A handle waits for it.
    Client {
        reply: oneshot::Sender<Result<Response>>,
        peer: PeerId,
        started: Instant,
        sent_bytes: u64,
    },
    /// The actor's own Info (or owner usage) refresh.
    Info { peer: PeerId },
    /// A lookup answer we sent.
    Answer,
}

/// A lookup waiting for answers.
struct PendingLookup {
    /// The ask while it is not published yet (no subscribed peer so far, over the ask budget,
    /// or waiting for a relay reservation); its addresses are filled in when it goes out.
    unpublished: Option<Ask>,
    /// It waits until then for the relay reservation that lets holders answer us
    /// ([`reach::ANSWER_RELAY_WAIT`]).
    hold_until: Option<Instant>,
    ids: HashSet<ShardId>,
    found: HashMap<ShardId, Vec<PeerId>>,
    want: usize,
    deadline: Instant,
    /// How long it collects answers once published (a paced ask's deadline starts then).
    window: Duration,
    reply: oneshot::Sender<Result<HashMap<ShardId, Vec<PeerId>>>>,
}

/// Local work finished off the actor.
pub(crate) enum Done {
    /// An inbound (or local) request's answer is ready.
    Respond { reply: Reply, response: Response },
    /// Our store holds these of a broadcast ask.
    Holders {
        asker: PeerId,
        ask: u64,
        ids: Vec<ShardId>,
    },
}

/// An inbound operation waiting for a free slot on the blocking pool.
struct QueuedOp {
    op: service::Op,
    reply: Option<Reply>,
}

/// How long a DHT get collects records before it answers with what it has: 10 s, the plan's
/// bound for the DHT half of finding a root record (nodes' copies answer within 5 s).
pub const DHT_GET_TIMEOUT: Duration = Duration::from_secs(10);

/// A DHT get collecting records.
struct PendingGet {
    found: Vec<Vec<u8>>,
    deadline: Instant,
    reply: oneshot::Sender<Vec<Vec<u8>>>,
}

/// Most values one DHT get collects (honest holders all return the same few records).
pub const MAX_DHT_VALUES: usize = 64;

/// The task that owns the swarm.
struct NodeActor {
    swarm: Swarm<Behaviour>,
    peer_id: PeerId,
    node_id: NodeId,
    commands: mpsc::Receiver<NodeMessage>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    cancel: CancellationToken,
    service: Option<Service>,
    listen: Vec<Multiaddr>,
    peers: HashMap<PeerId, PeerState>,
    pending: HashMap<OutboundRequestId, Pending>,
    lookups: HashMap<u64, PendingLookup>,
    ask_limiter: AskLimiter,
    /// Paces our own asks below what peers answer.
    ask_pacer: AskPacer,
    inbound_ops: usize,
    queued_inbound: VecDeque<QueuedOp>,
    last_refresh: Instant,
    /// Scores of our own store as a placement candidate.
    local_stats: PeerStats,
    /// See [`Config::peer_difficulty`].
    peer_difficulty: u8,
    /// Each bootstrap address and what became of it.
    boot: Vec<(Multiaddr, bootstrap::Outcome)>,
    /// Bootstrap dials still running: their index in `boot`.
    boot_dials: HashMap<ConnectionId, usize>,
    /// Kademlia bootstraps a [`NodeMessage::Discover`] waits for.
    discoveries: Vec<(kad::QueryId, oneshot::Sender<bool>)>,
    /// Requests a [`service::Fault::Silent`] node never answers, held until it stops.
    silenced: Vec<ResponseChannel<Response>>,
    /// DHT puts in flight.
    dht_puts: HashMap<kad::QueryId, oneshot::Sender<Result<()>>>,
    /// DHT gets collecting records.
    dht_gets: HashMap<kad::QueryId, PendingGet>,
    /// Pairing state shared with the pairing task, when this node pairs.
    pairing: Option<Arc<crate::pairing::Shared>>,
    /// The pairing task; it ends with the actor.
    _pairing_task: Option<AbortOnDropHandle<()>>,
    /// Audits run through this node.
    audits: crate::audit::Log,
    /// Reachability, relays and hole punching.
    reach: reach::Reach,
}

/// A timer ticking every `period` that skips ticks missed while busy (never a burst).
pub(crate) fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

impl NodeActor {
    async fn run(mut self) {
        let mut tick = ticker(TICK);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(done) = self.done_rx.recv() => self.on_done(done),
                _ = tick.tick() => self.on_tick(),
                msg = self.commands.recv() => match msg {
                    Some(msg) => self.on_command(msg),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
            }
        }
        debug!("node stopped");
        for (_, l) in self.lookups.drain() {
            let _ = l.reply.send(Err(Error::Closed));
        }
        for (_, reply) in self.dht_puts.drain() {
            let _ = reply.send(Err(Error::Closed));
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(l) = self.lookups.remove(&k) {
                let _ = l.reply.send(Ok(l.found));
            }
        }
        self.publish_asks(now);
        self.expire_dht_gets(now);
        self.reserve_relays(now);
        self.retire_relayed(now);
        self.redial_lost_peers(now);
        self.disconnect_silent_peers(now);
        if now.duration_since(self.last_refresh) >= INFO_REFRESH {
            self.last_refresh = now;
            let storage: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, s)| s.storage && s.connections > 0)
                .map(|(p, _)| *p)
                .collect();
            for p in storage {
                if self.allowed(p) {
                    self.request_info(p);
                }
            }
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(addr = %self.full_addr(&address), "listening");
                if !self.listen.contains(&address) {
                    self.listen.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                addresses,
            } => {
                self.listen.retain(|a| !addresses.contains(a));
                let why = match &reason {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                };
                self.on_listener_closed(listener_id, &why);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                if let Some(i) = self.boot_dials.remove(&connection_id)
                    && let Some((addr, outcome)) = self.boot.get_mut(i)
                {
                    *outcome = bootstrap::Outcome::Answered {
                        peer: peer_id,
                        refused: None,
                        storage: false,
                    };
                    // Known to Kademlia once it answered, so that our lookups go through it
                    // (identify adds the addresses it listens on).
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                let addr = endpoint.get_remote_address().clone();
                if endpoint.is_relayed() && endpoint.is_dialer() {
                    self.reach.dialed_relayed.insert(connection_id);
                }
                let s = self.peer(peer_id);
                if s.connections == 0 {
                    s.identified = false;
                    s.last_pong = Instant::now();
                    s.draining = false;
                }
                s.connections += 1;
                if endpoint.is_relayed() {
                    s.relayed.push(connection_id);
                }
                s.last_seen = Instant::now();
                s.redial = None;
                if endpoint.is_dialer() && !s.addrs.contains(&addr) {
                    s.addrs.push(addr);
                }
                debug!(peer = %short(&peer_id), "connected");
                // Logs a refusal once, as soon as the peer shows up.
                let _ = self.allowed(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                self.reach.dialed_relayed.remove(&connection_id);
                if let Some(s) = self.peers.get_mut(&peer_id) {
                    s.connections = s.connections.saturating_sub(1);
                    s.relayed.retain(|c| *c != connection_id);
                    s.last_seen = Instant::now();
                    if s.connections == 0 && s.storage && s.puzzle_ok && !s.addrs.is_empty() {
                        s.redial = Some((s.last_seen + REDIAL_FIRST, REDIAL_FIRST));
                    }
                }
                debug!(peer = %short(&peer_id), "disconnected");
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error,
                connection_id,
            } => {
                if let Some(i) = self.boot_dials.remove(&connection_id)
                    && let Some((addr, outcome)) = self.boot.get_mut(i)
                {
                    let why = bootstrap::dial_failure(&error);
                    info!(%addr, reason = %why, "bootstrap peer cannot be reached");
                    debug!(%addr, ?error, "bootstrap dial error");
                    *outcome = bootstrap::Outcome::Failed(why);
                } else {
                    debug!(peer = ?peer_id, error = %error, "dial failed");
                }
                if let (Some(peer), libp2p::swarm::DialError::Transport(failed)) = (peer_id, &error)
                {
                    let addrs: Vec<Multiaddr> = failed.iter().map(|(a, _)| a.clone()).collect();
                    self.retry_circuits(peer, &addrs, Instant::now());
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Shard(ev) => self.on_shard(ev),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                if let Some(source) = message.source {
                    self.on_ask(source, &message.data);
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let storage = info.agent_version.starts_with(AGENT_STORAGE);
                let relay_hop = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
                let listen: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(lookup::dialable)
                    .take(MAX_ASK_ADDRS)
                    .collect();
                for a in &listen {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, a.clone());
                }
                // A circuit address the peer no longer lists is a relay reservation it lost:
                // dialling it would fail (or wait on a relay that is gone).
                let stale: Vec<Multiaddr> = self
                    .peers
                    .get(&peer_id)
                    .map(|s| {
                        s.addrs
                            .iter()
                            .filter(|a| reach::is_circuit(a) && !listen.contains(a))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for a in &stale {
                    self.swarm.behaviour_mut().kad.remove_address(&peer_id, a);
                }
                let s = self.peer(peer_id);
                s.addrs.retain(|a| !stale.contains(a));
                let was_storage = s.storage;
                s.storage = storage;
                s.relay_hop = relay_hop;
                s.identified = true;
                for a in listen {
                    if !s.addrs.contains(&a) {
                        s.addrs.push(a);
                    }
                }
                s.addrs.truncate(MAX_ASK_ADDRS);
                if storage && !was_storage && self.allowed(peer_id) {
                    self.request_info(peer_id);
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                let s = self.peer(peer);
                s.stats.rtt = Some(rtt);
                s.last_pong = Instant::now();
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            }) => {
                // A peer that stops answering pings is gone for durability figures: its
                // connection is closed (libp2p's ping no longer does that itself).
                debug!(peer = %short(&peer), %error, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::Bootstrap(result),
                step,
                ..
            }) => {
                if let Err(e) = &result {
                    debug!(error = %e, "kademlia bootstrap step failed");
                }
                if step.last
                    && let Some(i) = self.discoveries.iter().position(|(q, _)| *q == id)
                {
                    let (_, reply) = self.discoveries.swap_remove(i);
                    let _ = reply.send(true);
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => self.on_dht_progress(id, result, step.last),
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            }) => self.on_dht_inbound_put(source, record),
            BehaviourEvent::Autonat(ev) => self.on_autonat(ev),
            BehaviourEvent::Relay(ev) => self.on_relay_client(ev),
            BehaviourEvent::RelayServer(ev) => self.on_relay_server(ev),
            BehaviourEvent::Dcutr(ev) => self.on_dcutr(ev),
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    if peer != self.peer_id
                        && self.peers.get(&peer).is_none_or(|s| s.connections == 0)
                    {
                        debug!(peer = %short(&peer), %addr, "mdns discovered");
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            _ => {}
        }
    }
}
