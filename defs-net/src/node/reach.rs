//! Reachability: what AutoNAT says of this node (public, private, unknown), the relays a private
//! node reserves a slot on so that others can dial it, the relay service a public storage node
//! gives, and DCUtR's upgrades of relayed connections to direct ones.
//!
//! ```text
//!   AutoNAT ──StatusChanged──► Reach.status ──private──► listen_on(<relay>/p2p-circuit)
//!                                                          │ (up to WANT_RELAYS, on tick)
//!   relay client ──ReservationReqAccepted──► Reach.relays ◄┘
//!   identify ──protocols──► PeerState.relay_hop (the peer serves as a relay now)
//!   DCUtR ──Ok──► close the peer's relayed connections (the direct one carries on)
//!   lookup while not public ──► one reservation (ANSWER_RELAY) ──► the ask names its circuit
//! ```
//!
//! Holders answer a broadcast lookup by dialling the asker at the addresses its ask gives. A
//! node that AutoNAT has not yet found public (a one-shot `defs get` lives for seconds, less than
//! AutoNAT needs) may be behind a NAT, where those addresses lead nowhere: so before its first
//! ask it reserves a slot on one relay it is connected to, and the ask waits (at most
//! [`ANSWER_RELAY_WAIT`]) until the reservation's circuit address is there to give.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// Relays a private node keeps a reservation on: two, so that one relay leaving does not make
/// the node unreachable while it finds another.
pub const WANT_RELAYS: usize = 2;

/// How long after a failed or lost reservation the same relay is asked again.
pub const RESERVE_RETRY: Duration = Duration::from_secs(30);

/// How often the actor checks whether it needs (more) relays.
pub const RESERVE_CHECK: Duration = Duration::from_secs(1);

/// How long a lookup's ask waits at most before it goes out: for the relay reservation it asked
/// for (see the module doc), and for connected storage peers' gossipsub subscriptions
/// (`node/lookups.rs`). 3 s: a reservation takes one round trip to a relay we are already
/// connected to, a subscription arrives with a peer's first gossipsub message (milliseconds on
/// the test bed); 3 s leaves room for a loaded machine and a slow uplink, and is paid only
/// while one of them is still missing.
pub const ANSWER_RELAY_WAIT: Duration = Duration::from_secs(3);

/// How often a peer whose dial failed is dialled again through the relays of its circuit
/// addresses that we are connected to: at most once per 30 s. libp2p's relay client dials a
/// relay it is not connected to by itself, and that dial is refused while another dial of the
/// same relay runs: a Kademlia lookup dials every peer it learns at once, the relays and the
/// nodes reserved on them alike, so the circuit failed although both of its hops worked
/// (`ci/netbed`: a client behind a NAT missed a home node whose relays it was dialling). Once
/// per 30 s bounds the retries of a peer that is really gone to one more dial.
pub const CIRCUIT_RETRY: Duration = Duration::from_secs(30);

/// After a hole punch, the relayed connection it replaces is closed once none of our requests to
/// that peer is in flight (closing it under one fails that request), but no later than this:
/// the longest a request may take ([`crate::behaviour::REQUEST_TIMEOUT`]). Only the end that
/// dialled the relayed connection closes it: the other end cannot see the requests it is
/// serving on it, and closing it under one failed a store from a client behind a NAT while the
/// home node had already written the shard (`ci/netbed`: the client placed it elsewhere, and
/// the file missed a holder when three public nodes stopped).
pub const RETIRE_WITHIN: Duration = crate::behaviour::REQUEST_TIMEOUT;

/// Whether this node can be dialled from outside, as AutoNAT last found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// A peer dialled one of our addresses back.
    Public,
    /// Peers tried to dial us back and failed: we are behind a NAT or firewall.
    Private,
    /// Not known yet (no probe answered, or no peer that may probe us).
    Unknown,
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reachability::Public => "public",
            Reachability::Private => "private",
            Reachability::Unknown => "unknown",
        })
    }
}

/// The reachability part of `defs status`.
#[derive(Debug, Clone)]
pub struct ReachReport {
    /// What AutoNAT says now.
    pub reachability: Reachability,
    /// The address a peer dialled back, when public.
    pub public_addr: Option<Multiaddr>,
    /// Relays holding a reservation for us (private nodes).
    pub relays: Vec<PeerId>,
    /// Reservations we hold for nodes behind NATs (public storage nodes).
    pub relaying_for: usize,
    /// Relayed connections through us open now.
    pub circuits: usize,
    /// Our connections that go straight to the peer.
    pub direct_connections: usize,
    /// Our connections that go through a relay.
    pub relayed_connections: usize,
    /// Relayed connections DCUtR upgraded to direct ones since start.
    pub hole_punches: u64,
    /// DCUtR attempts that failed since start (the connection stayed relayed).
    pub hole_punch_failures: u64,
}

/// The actor's reachability state.
#[derive(Debug)]
pub(crate) struct Reach {
    pub(super) status: Reachability,
    pub(super) public_addr: Option<Multiaddr>,
    /// Circuit listeners we opened: the relay, and whether it accepted our reservation.
    pub(super) listeners: HashMap<ListenerId, (PeerId, bool)>,
    /// When each relay was last asked, so that one that refuses is not asked in a loop.
    pub(super) asked: HashMap<PeerId, Instant>,
    /// Peers holding a reservation on us.
    pub(super) serving: HashMap<PeerId, ()>,
    pub(super) circuits: usize,
    /// Relayed connections a hole punch replaced, closed when idle or at the deadline.
    pub(super) retiring: Vec<(PeerId, ConnectionId, Instant)>,
    /// Relayed connections we dialled (only these are retired: see [`RETIRE_WITHIN`]).
    pub(super) dialed_relayed: HashSet<ConnectionId>,
    pub(super) hole_punches: u64,
    pub(super) hole_punch_failures: u64,
    pub(super) last_check: Instant,
    /// A lookup was asked while this node was not known to be public: it keeps one relay
    /// reservation (while private it keeps [`WANT_RELAYS`] anyway), so that holders can answer.
    pub(super) for_answers: bool,
}

impl Reach {
    pub(crate) fn new(now: Instant) -> Self {
        Reach {
            status: Reachability::Unknown,
            public_addr: None,
            listeners: HashMap::new(),
            asked: HashMap::new(),
            serving: HashMap::new(),
            circuits: 0,
            retiring: Vec::new(),
            dialed_relayed: HashSet::new(),
            hole_punches: 0,
            hole_punch_failures: 0,
            last_check: now,
            for_answers: false,
        }
    }
}

/// `addr` (a relay's direct address) turned into the circuit address we listen on through it.
pub(crate) fn circuit_addr(addr: &Multiaddr, relay: PeerId) -> Multiaddr {
    let mut a: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    a.push(Protocol::P2p(relay));
    a.push(Protocol::P2pCircuit);
    a
}

/// The relay a circuit address goes through (the peer id before `/p2p-circuit`).
pub(crate) fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => relay = Some(peer),
            Protocol::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

/// Whether `addr` goes through a relay.
pub(crate) fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_addresses_name_the_relay_once() {
        let relay = PeerId::random();
        let plain: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        let with_id = plain.clone().with(Protocol::P2p(relay));
        let want: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        assert_eq!(circuit_addr(&plain, relay), want);
        assert_eq!(circuit_addr(&with_id, relay), want);
        assert!(is_circuit(&want));
        assert!(!is_circuit(&plain));
        assert_eq!(relay_of(&want), Some(relay));
        let target = PeerId::random();
        assert_eq!(
            relay_of(&want.clone().with(Protocol::P2p(target))),
            Some(relay)
        );
        assert_eq!(relay_of(&with_id), None);
    }
}
