//! The actor's handling of each [`NodeMessage`] a [`Node`] handle sends.

use super::*;

impl NodeActor {
    pub(super) fn on_command(&mut self, msg: NodeMessage) {
        match msg {
            NodeMessage::Request {
                peer,
                request,
                reply,
            } => {
                if peer == self.peer_id {
                    self.on_local_request(request, reply);
                    return;
                }
                let sent_bytes = match &request {
                    Request::Store { data, .. } => data.len() as u64,
                    _ => 0,
                };
                let id = self
                    .swarm
                    .behaviour_mut()
                    .shard
                    .send_request(&peer, request);
                self.pending.insert(
                    id,
                    Pending::Client {
                        reply,
                        peer,
                        started: Instant::now(),
                        sent_bytes,
                    },
                );
            }
            NodeMessage::Dial { addr, reply } => {
                let r = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| Error::BadAddress {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    });
                let _ = reply.send(r);
            }
            NodeMessage::ListenAddrs { reply } => {
                let addrs = self.listen.iter().map(|a| self.full_addr(a)).collect();
                let _ = reply.send(addrs);
            }
            NodeMessage::Peers { reply } => {
                let now = Instant::now();
                let list = self
                    .peers
                    .iter()
                    .map(|(p, s)| PeerSnapshot {
                        peer: *p,
                        node_id: s.node_id,
                        addrs: s.addrs.clone(),
                        connected: s.connections > 0,
                        storage: s.storage,
                        rtt: s.stats.rtt,
                        bandwidth: s.stats.bandwidth,
                        score: s.stats.score(now, 0),
                        info: s.info.clone(),
                        puzzle_ok: s.puzzle_ok,
                        refused: bootstrap::refusal(s.node_id.as_ref(), self.peer_difficulty),
                        identified: s.identified,
                        direct: s.connections.saturating_sub(s.relayed.len()),
                        relayed: s.relayed.len(),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            NodeMessage::Candidates { need, reply } => {
                let now = Instant::now();
                let mut list: Vec<Candidate> = self
                    .peers
                    .iter()
                    .filter(|(_, s)| s.storage && s.connections > 0 && s.puzzle_ok && !s.draining)
                    .map(|(p, s)| Candidate {
                        peer: *p,
                        score: s.stats.score(now, need),
                        zone: s.stats.zone.clone(),
                        local: false,
                    })
                    .collect();
                if let Some((free, _)) = self.local_space() {
                    self.local_stats.free = Some(free);
                    list.push(Candidate {
                        peer: self.peer_id,
                        score: self.local_stats.score(now, need),
                        zone: self.local_stats.zone.clone(),
                        local: true,
                    });
                }
                let _ = reply.send(list);
            }
            NodeMessage::Resolve { nodes, reply } => {
                let mut by_node: HashMap<NodeId, PeerId> = self
                    .peers
                    .iter()
                    .filter(|(_, s)| s.connections > 0 && s.puzzle_ok)
                    .filter_map(|(p, s)| s.node_id.map(|n| (n, *p)))
                    .collect();
                if self.service.is_some() {
                    by_node.insert(self.node_id, self.peer_id);
                }
                let _ = reply.send(nodes.iter().map(|n| by_node.get(n).copied()).collect());
            }
            NodeMessage::Lookup {
                ids,
                window,
                want,
                reply,
            } => self.start_lookup(ids, window, want, reply),
            NodeMessage::Report { peer, outcome } => {
                let now = Instant::now();
                let s = if peer == self.peer_id {
                    &mut self.local_stats
                } else {
                    &mut self.peer(peer).stats
                };
                match outcome {
                    Outcome::Success { bytes, took } => s.record_success(bytes, took),
                    Outcome::BadData => s.record_failure(now, 3.0),
                    Outcome::Failure => s.record_failure(now, 1.0),
                    Outcome::AuditFailed => s.record_audit_failure(now),
                }
            }
            NodeMessage::Drain { reply } => {
                if let Some(s) = &mut self.service
                    && !s.draining
                {
                    info!("shutting down: new shards are refused from now on");
                    s.draining = true;
                }
                let _ = reply.send(self.inbound_ops + self.queued_inbound.len());
            }
            NodeMessage::RecordAudit { record, reply } => {
                self.audits.record(record);
                let _ = reply.send(());
            }
            NodeMessage::FailedAudits { reply } => {
                let _ = reply.send(self.audits.failures());
            }
            #[cfg(any(test, feature = "test-utils"))]
            NodeMessage::SetFault { fault, reply } => {
                if let Some(s) = &mut self.service {
                    s.fault = fault;
                }
                let _ = reply.send(());
            }
            NodeMessage::Bootstrap { reply } => {
                let difficulty = self.peer_difficulty;
                let list = self
                    .boot
                    .iter()
                    .map(|(addr, outcome)| {
                        let outcome = match outcome {
                            bootstrap::Outcome::Answered { peer, .. } => {
                                let s = self.peers.get(peer);
                                bootstrap::Outcome::Answered {
                                    peer: *peer,
                                    refused: bootstrap::refusal(
                                        s.and_then(|s| s.node_id.as_ref()),
                                        difficulty,
                                    ),
                                    storage: s.is_some_and(|s| s.storage),
                                }
                            }
                            other => other.clone(),
                        };
                        bootstrap::Report {
                            addr: addr.clone(),
                            outcome,
                        }
                    })
                    .collect();
                let _ = reply.send(list);
            }
            NodeMessage::Dialing { reply } => {
                let info = self.swarm.network_info();
                let _ = reply.send(info.connection_counters().num_pending_outgoing());
            }
            NodeMessage::Live { reply } => {
                let live = self
                    .peers
                    .values()
                    .filter(|s| s.connections > 0 && s.puzzle_ok)
                    .filter_map(|s| s.node_id)
                    .collect();
                let _ = reply.send(live);
            }
            NodeMessage::DhtPut { record, reply } => self.on_dht_put(record, reply),
            NodeMessage::DhtGet { owner, reply } => self.on_dht_get(owner, reply),
            NodeMessage::Discover { reply } => match self.swarm.behaviour_mut().kad.bootstrap() {
                Ok(id) => {
                    self.discoveries.push((id, reply));
                }
                Err(e) => {
                    debug!(error = %e, "no peer to look the network up through");
                    let _ = reply.send(false);
                }
            },
            NodeMessage::Status { reply } => {
                let connected = self.peers.values().filter(|s| s.connections > 0).count();
                let storage: Vec<&PeerState> = self
                    .peers
                    .values()
                    .filter(|s| s.connections > 0 && s.storage && s.puzzle_ok)
                    .collect();
                let (mut network_free, mut network_capacity) = self.local_space().unwrap_or((0, 0));
                for i in storage.iter().filter_map(|s| s.info.as_ref()) {
                    network_free = network_free.saturating_add(i.capacity.saturating_sub(i.used));
                    network_capacity = network_capacity.saturating_add(i.capacity);
                }
                let info = self.service.as_ref().map(|s| s.info()).unwrap_or_default();
                let _ = reply.send(NodeStatus {
                    peer: self.peer_id,
                    node_id: self.node_id,
                    listen: self.listen.iter().map(|a| self.full_addr(a)).collect(),
                    connected,
                    storage_peers: storage.len(),
                    info,
                    network_free,
                    network_capacity,
                    owner_space: self.owner_space(),
                    pairing: self
                        .pairing
                        .as_ref()
                        .zip(self.service.as_ref())
                        .map(|(p, s)| p.report(&s.store())),
                    audits: self.audits.summary(),
                    reach: self.reach_report(),
                });
            }
        }
    }
}
