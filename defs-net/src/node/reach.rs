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
use libp2p::{Multiaddr, PeerId, autonat, dcutr, relay};
use tracing::{debug, info};

use super::{NodeActor, short};

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
    status: Reachability,
    public_addr: Option<Multiaddr>,
    /// Circuit listeners we opened: the relay, and whether it accepted our reservation.
    listeners: HashMap<ListenerId, (PeerId, bool)>,
    /// When each relay was last asked, so that one that refuses is not asked in a loop.
    asked: HashMap<PeerId, Instant>,
    /// Peers holding a reservation on us.
    serving: HashMap<PeerId, ()>,
    circuits: usize,
    /// Relayed connections a hole punch replaced, closed when idle or at the deadline.
    retiring: Vec<(PeerId, ConnectionId, Instant)>,
    hole_punches: u64,
    hole_punch_failures: u64,
    last_check: Instant,
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

impl NodeActor {
    pub(super) fn on_autonat(&mut self, ev: autonat::Event) {
        if let autonat::Event::StatusChanged { old, new } = ev {
            let (status, addr) = match new {
                autonat::NatStatus::Public(a) => (Reachability::Public, Some(a)),
                autonat::NatStatus::Private => (Reachability::Private, None),
                autonat::NatStatus::Unknown => (Reachability::Unknown, None),
            };
            info!(%status, addr = ?addr, ?old, "reachability changed");
            self.reach.status = status;
            self.reach.public_addr = addr;
            // Relay for others only while reachable ourselves.
            if let Some(server) = self.swarm.behaviour_mut().relay_server.as_mut() {
                server.set_status(Some(if status == Reachability::Public {
                    relay::Status::Enable
                } else {
                    relay::Status::Disable
                }));
                info!(on = status == Reachability::Public, "relay service");
            }
            if status == Reachability::Public {
                // Reachable directly: relays would only add a detour.
                let ids: Vec<ListenerId> = self.reach.listeners.keys().copied().collect();
                for id in ids {
                    self.swarm.remove_listener(id);
                }
            }
        }
    }

    pub(super) fn on_relay_client(&mut self, ev: relay::client::Event) {
        match ev {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                for (relay, accepted) in self.reach.listeners.values_mut() {
                    if *relay == relay_peer_id {
                        *accepted = true;
                    }
                }
                if !renewal {
                    info!(relay = %short(&relay_peer_id), "reachable through relay");
                }
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(peer = %short(&src_peer_id), "relayed connection in");
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %short(&relay_peer_id), "relayed connection out");
            }
        }
    }

    pub(super) fn on_relay_server(&mut self, ev: relay::Event) {
        match ev {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                debug!(peer = %short(&src_peer_id), "relaying for peer");
                self.reach.serving.insert(src_peer_id, ());
            }
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                self.reach.serving.remove(&src_peer_id);
            }
            relay::Event::CircuitReqAccepted { .. } => self.reach.circuits += 1,
            relay::Event::CircuitClosed { .. } => {
                self.reach.circuits = self.reach.circuits.saturating_sub(1);
            }
            other => debug!(event = ?other, "relay service"),
        }
    }

    pub(super) fn on_dcutr(&mut self, ev: dcutr::Event) {
        let peer = ev.remote_peer_id;
        match ev.result {
            Ok(direct) => {
                self.reach.hole_punches += 1;
                info!(peer = %short(&peer), "hole punched: direct connection");
                // The direct connection carries on; a relayed one left open would take half
                // the requests (request-response spreads them over connections) through the
                // relay and its byte limit. It closes once idle (`retire_relayed`).
                let relayed: Vec<_> = self
                    .peers
                    .get(&peer)
                    .map(|s| s.relayed.clone())
                    .unwrap_or_default();
                let until = Instant::now() + RETIRE_WITHIN;
                for id in relayed.into_iter().filter(|id| *id != direct) {
                    self.reach.retiring.push((peer, id, until));
                }
            }
            Err(e) => {
                self.reach.hole_punch_failures += 1;
                info!(peer = %short(&peer), error = %e, "hole punch failed: staying relayed");
            }
        }
    }

    /// Closes the relayed connections hole punches replaced, once no request of ours to their
    /// peer is in flight (or at their deadline).
    pub(super) fn retire_relayed(&mut self, now: Instant) {
        if self.reach.retiring.is_empty() {
            return;
        }
        let retiring = std::mem::take(&mut self.reach.retiring);
        for (peer, id, until) in retiring {
            let open = self
                .peers
                .get(&peer)
                .is_some_and(|s| s.relayed.contains(&id));
            if !open {
                continue;
            }
            if now >= until || !self.requests_in_flight_to(peer) {
                debug!(peer = %short(&peer), "closing the relayed connection a hole punch replaced");
                self.swarm.close_connection(id);
            } else {
                self.reach.retiring.push((peer, id, until));
            }
        }
    }

    /// A listener ended: a circuit listener's relay refused or went away.
    pub(super) fn on_listener_closed(&mut self, id: ListenerId, reason: &str) {
        if let Some((relay, _)) = self.reach.listeners.remove(&id) {
            info!(relay = %short(&relay), reason, "relay reservation ended");
        }
    }

    /// While private, keeps [`WANT_RELAYS`] reservations on storage peers that serve as relays
    /// and that we reach directly.
    pub(super) fn reserve_relays(&mut self, now: Instant) {
        if now.duration_since(self.reach.last_check) < RESERVE_CHECK {
            return;
        }
        self.reach.last_check = now;
        if self.reach.status != Reachability::Private || self.reach.listeners.len() >= WANT_RELAYS {
            return;
        }
        let in_use: Vec<PeerId> = self.reach.listeners.values().map(|(p, _)| *p).collect();
        let asked = &self.reach.asked;
        let mut candidates: Vec<(PeerId, Multiaddr)> = self
            .peers
            .iter()
            .filter(|(p, s)| {
                s.relay_hop
                    && s.puzzle_ok
                    && s.connections > s.relayed.len()
                    && !in_use.contains(p)
                    && asked
                        .get(p)
                        .is_none_or(|t| now.duration_since(*t) >= RESERVE_RETRY)
            })
            .filter_map(|(p, s)| {
                s.addrs
                    .iter()
                    .find(|a| !is_circuit(a))
                    .map(|a| (*p, circuit_addr(a, *p)))
            })
            .collect();
        // Lowest RTT first: a relay close to us adds the least to every relayed transfer.
        candidates.sort_by_key(|(p, _)| {
            self.peers
                .get(p)
                .and_then(|s| s.stats.rtt)
                .unwrap_or(Duration::MAX)
        });
        let want = WANT_RELAYS - self.reach.listeners.len();
        for (relay, addr) in candidates.into_iter().take(want) {
            self.reach.asked.insert(relay, now);
            match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    debug!(relay = %short(&relay), %addr, "asking relay for a reservation");
                    self.reach.listeners.insert(id, (relay, false));
                }
                Err(e) => debug!(relay = %short(&relay), error = %e, "cannot listen via relay"),
            }
        }
    }

    pub(super) fn reach_report(&self) -> ReachReport {
        let relayed: usize = self.peers.values().map(|s| s.relayed.len()).sum();
        let all: usize = self.peers.values().map(|s| s.connections).sum();
        ReachReport {
            reachability: self.reach.status,
            public_addr: self.reach.public_addr.clone(),
            relays: self
                .reach
                .listeners
                .values()
                .filter(|(_, accepted)| *accepted)
                .map(|(p, _)| *p)
                .collect(),
            relaying_for: self.reach.serving.len(),
            circuits: self.reach.circuits,
            direct_connections: all.saturating_sub(relayed),
            relayed_connections: relayed,
            hole_punches: self.reach.hole_punches,
            hole_punch_failures: self.reach.hole_punch_failures,
        }
    }
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
