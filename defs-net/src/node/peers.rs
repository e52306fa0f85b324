//! What the actor knows of each peer: its state created on first sight, the identity-puzzle
//! check that admits or refuses it, its Info refreshes, and our own store's free space.

use super::*;

impl NodeActor {
    pub(super) fn peer(&mut self, peer: PeerId) -> &mut PeerState {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_TRACKED_PEERS {
            // Forget the longest-disconnected peer.
            if let Some(old) = self
                .peers
                .iter()
                .filter(|(_, s)| s.connections == 0)
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(p, _)| *p)
            {
                self.peers.remove(&old);
            }
        }
        let now = Instant::now();
        let difficulty = self.peer_difficulty;
        self.peers.entry(peer).or_insert_with(|| {
            let node_id = node_id_of(&peer);
            PeerState {
                addrs: Vec::new(),
                connections: 0,
                storage: false,
                stats: PeerStats::new(now),
                info: None,
                usage: None,
                puzzle_ok: node_id.is_some_and(|n| puzzle_ok(&n, difficulty)),
                refusal_logged: false,
                identified: false,
                redial: None,
                last_pong: now,
                draining: false,
                relayed: Vec::new(),
                relay_hop: false,
                circuit_retry: None,
                node_id,
                last_seen: now,
            }
        })
    }

    /// Whether `peer` may use this node and be used by it (its node id solves the puzzle).
    /// Logs the first refusal of each peer.
    pub(super) fn allowed(&mut self, peer: PeerId) -> bool {
        let difficulty = self.peer_difficulty;
        let s = self.peer(peer);
        if !s.puzzle_ok && !s.refusal_logged {
            s.refusal_logged = true;
            // Info, not warn: `defs peers` and the commands' bootstrap reports say it to the
            // user with the reason; the mount's log (info) keeps it.
            info!(
                peer = %short(&peer),
                node_id = ?s.node_id,
                difficulty,
                "refusing peer: its node id does not solve the identity puzzle"
            );
        }
        s.puzzle_ok
    }

    /// Free and total bytes of our own store, when we have one.
    pub(super) fn local_space(&self) -> Option<(u64, u64)> {
        self.service.as_ref().map(|s| {
            let info = s.info();
            (info.capacity.saturating_sub(info.used), info.capacity)
        })
    }

    /// Dials lost storage peers whose redial time has come, at their known addresses, with
    /// the wait doubling up to [`REDIAL_MAX`]; gives up after [`REDIAL_GIVE_UP`].
    pub(super) fn redial_lost_peers(&mut self, now: Instant) {
        let due: Vec<(PeerId, Vec<Multiaddr>)> = self
            .peers
            .iter_mut()
            .filter_map(|(p, s)| {
                let (at, wait) = s.redial?;
                if s.connections > 0 || now.duration_since(s.last_seen) > REDIAL_GIVE_UP {
                    s.redial = None;
                    return None;
                }
                if at > now {
                    return None;
                }
                let wait = (wait * 2).min(REDIAL_MAX);
                s.redial = Some((now + wait, wait));
                Some((*p, s.addrs.clone()))
            })
            .collect();
        for (peer, addrs) in due {
            self.dial_at(peer, addrs);
        }
    }

    /// Dials `peer` at `addrs`, unless it is connected or being dialled already.
    pub(super) fn dial_at(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            trace!(peer = %short(&peer), error = %e, "redial not started");
        }
    }

    /// Disconnects peers that have answered no ping for [`SILENT_AFTER`].
    pub(super) fn disconnect_silent_peers(&mut self, now: Instant) {
        let silent: Vec<PeerId> = self
            .peers
            .iter_mut()
            .filter(|(_, s)| s.connections > 0 && now.duration_since(s.last_pong) > SILENT_AFTER)
            .map(|(p, s)| {
                // Once per silence: the disconnect takes effect on the next swarm events.
                s.last_pong = now;
                *p
            })
            .collect();
        for peer in silent {
            warn!(peer = %short(&peer), secs = SILENT_AFTER.as_secs(), "peer answered no ping; disconnecting it");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Asks `peer` for its capacity (Info) and for what this owner stores there and its quota
    /// ([`Request::OwnerUsage`]); the answers land in its [`PeerState`].
    pub(super) fn request_info(&mut self, peer: PeerId) {
        for request in [Request::Info, Request::OwnerUsage] {
            let id = self
                .swarm
                .behaviour_mut()
                .shard
                .send_request(&peer, request);
            self.pending.insert(id, Pending::Info { peer });
        }
    }

    /// Keeps what an answer of `peer` says about its space (Info, or this owner's use and
    /// quota there), whoever asked.
    pub(super) fn note_space(&mut self, peer: PeerId, response: &Response) {
        match response {
            Response::Info(info) => {
                let s = self.peer(peer);
                s.stats.free = Some(info.capacity.saturating_sub(info.used));
                s.stats.zone = (!info.zone.is_empty()).then(|| info.zone.clone());
                s.storage = info.storage;
                s.info = Some(info.clone());
            }
            Response::OwnerUsage(usage) => {
                let s = self.peer(peer);
                s.usage = Some(*usage);
                if let Some(info) = s.info.as_mut() {
                    info.capacity = usage.capacity;
                    info.used = usage.node_used;
                }
            }
            _ => {}
        }
    }

    /// This owner's space on each storage node that may take its shards: our own store, then
    /// the connected remote storage peers (see [`NodeStatus::owner_space`]).
    pub(super) fn owner_space(&self) -> Vec<NodeSpace> {
        let mut out = Vec::new();
        if let Some(service) = &self.service {
            let info = service.info();
            out.push(NodeSpace {
                peer: self.peer_id,
                node_id: Some(self.node_id),
                local: true,
                usage: Some(service.owner_usage(&self.node_id)),
                space: Some((info.capacity, info.used)),
            });
        }
        for (peer, s) in &self.peers {
            if s.connections > 0 && s.storage && s.puzzle_ok {
                out.push(NodeSpace {
                    peer: *peer,
                    node_id: s.node_id,
                    local: false,
                    usage: s.usage,
                    space: s.info.as_ref().map(|i| (i.capacity, i.used)),
                });
            }
        }
        out
    }

    /// Whether a request of ours to `peer` (a handle's or our own Info refresh) waits for its
    /// answer.
    pub(super) fn requests_in_flight_to(&self, peer: PeerId) -> bool {
        self.pending.values().any(|p| match p {
            Pending::Client { peer: p, .. } | Pending::Info { peer: p } => *p == peer,
            Pending::Answer => false,
        })
    }

    pub(super) fn full_addr(&self, addr: &Multiaddr) -> Multiaddr {
        let mut a = addr.clone();
        if !matches!(a.iter().last(), Some(Protocol::P2p(_))) {
            a.push(Protocol::P2p(self.peer_id));
        }
        a
    }
}
