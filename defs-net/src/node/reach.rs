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
//! ```

use std::collections::HashMap;
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

/// After a hole punch, the relayed connection it replaces is closed once none of our requests to
/// that peer is in flight (closing it under one fails that request), but no later than this:
/// the longest a request may take ([`crate::behaviour::REQUEST_TIMEOUT`]).
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
    pub(super) hole_punches: u64,
    pub(super) hole_punch_failures: u64,
    pub(super) last_check: Instant,
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
            hole_punches: 0,
            hole_punch_failures: 0,
            last_check: now,
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
    }
}
