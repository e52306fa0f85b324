//! The node actor's side of reachability ([`super::reach`] holds its state and report): AutoNAT's,
//! the relay client's and server's and DCUtR's events, and the reservations a private node keeps.

use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::{Multiaddr, PeerId, autonat, dcutr, relay};
use tracing::{debug, info};

use super::reach::{
    ANSWER_RELAY_WAIT, CIRCUIT_RETRY, RESERVE_CHECK, RESERVE_RETRY, RETIRE_WITHIN, ReachReport,
    Reachability, WANT_RELAYS, circuit_addr, is_circuit, relay_of,
};
use super::{NodeActor, short};

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
                let dialed = &self.reach.dialed_relayed;
                for id in relayed
                    .into_iter()
                    .filter(|id| *id != direct && dialed.contains(id))
                {
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
    /// and that we reach directly; while not known to be public after a lookup, one
    /// ([`Reach::for_answers`](super::reach::Reach)).
    pub(super) fn reserve_relays(&mut self, now: Instant) {
        if now.duration_since(self.reach.last_check) < RESERVE_CHECK {
            return;
        }
        self.reach.last_check = now;
        let wanted = match self.reach.status {
            Reachability::Private => WANT_RELAYS,
            Reachability::Unknown if self.reach.for_answers => 1,
            _ => 0,
        };
        if self.reach.listeners.len() >= wanted {
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
        let want = wanted - self.reach.listeners.len();
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

    /// A dial of `peer` failed at `failed`: its circuit addresses through relays we are
    /// connected to now are dialled once more, at most once per [`CIRCUIT_RETRY`] (why, there).
    pub(super) fn retry_circuits(&mut self, peer: PeerId, failed: &[Multiaddr], now: Instant) {
        let via_connected_relay = |a: &&Multiaddr| {
            relay_of(a).is_some_and(|r| {
                self.peers
                    .get(&r)
                    .is_some_and(|s| s.connections > s.relayed.len())
            })
        };
        let addrs: Vec<Multiaddr> = failed.iter().filter(via_connected_relay).cloned().collect();
        if addrs.is_empty() || peer == self.peer_id {
            return;
        }
        let s = self.peer(peer);
        if s.connections > 0
            || s.circuit_retry
                .is_some_and(|t| now.duration_since(t) < CIRCUIT_RETRY)
        {
            return;
        }
        s.circuit_retry = Some(now);
        debug!(peer = %short(&peer), addrs = addrs.len(), "dialling again through relays");
        self.dial_at(peer, addrs);
    }

    /// Before a lookup's ask goes out: when holders may be unable to dial us back (we are not
    /// known to be public and no relay holds a reservation for us), asks a relay we are
    /// connected to for one at once. Returns until when the ask should wait for it, `None` when
    /// it need not wait (public, a circuit address already there, or no relay to ask).
    pub(super) fn relay_for_answers(&mut self, now: Instant) -> Option<Instant> {
        if self.reach.status == Reachability::Public || self.listen.iter().any(is_circuit) {
            return None;
        }
        self.reach.for_answers = true;
        if self.reach.listeners.is_empty() {
            // Not at the next RESERVE_CHECK: the ask waits for it.
            self.reach.last_check = now.checked_sub(RESERVE_CHECK).unwrap_or(now);
            self.reserve_relays(now);
        }
        self.answer_relay_pending()
            .then_some(now + ANSWER_RELAY_WAIT)
    }

    /// Whether a relay reservation we asked for has not given us a circuit address yet (an ask
    /// waiting for one keeps waiting; a refused one closes its listener, and the wait ends).
    pub(super) fn answer_relay_pending(&self) -> bool {
        !self.listen.iter().any(is_circuit) && !self.reach.listeners.is_empty()
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
