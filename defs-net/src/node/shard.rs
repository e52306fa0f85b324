//! The shard protocol on the actor: inbound requests admitted and queued for the blocking pool
//! ([`crate::service`] does the store I/O), a request addressed to this node served the same
//! way, finished work answered, and the request-response behaviour's events (answers to our own
//! requests, failures, timeouts) settled against the pending map.

use super::*;

impl NodeActor {
    /// A request addressed to ourselves: the same checks and store I/O as an inbound one.
    pub(super) fn on_local_request(
        &mut self,
        request: Request,
        reply: oneshot::Sender<Result<Response>>,
    ) {
        let Some(service) = &mut self.service else {
            let _ = reply.send(Ok(Response::error(
                ErrorCode::NotStorage,
                "this node does not store shards",
            )));
            return;
        };
        match request {
            Request::Info => {
                let _ = reply.send(Ok(Response::Info(service.info())));
            }
            Request::OwnerUsage => {
                let usage = service.owner_usage(&self.node_id);
                let _ = reply.send(Ok(Response::OwnerUsage(usage)));
            }
            request => match service.admit(request, now_ms()) {
                Ok(op) => self.spawn_op(op, Some(Reply::Local(reply))),
                Err(refusal) => {
                    debug!(?refusal, "local request refused");
                    let _ = reply.send(Ok(refusal));
                }
            },
        }
    }

    pub(super) fn on_done(&mut self, done: Done) {
        match done {
            Done::Respond { reply, response } => {
                self.inbound_ops = self.inbound_ops.saturating_sub(1);
                let sent = match reply {
                    Reply::Peer(channel) => self
                        .swarm
                        .behaviour_mut()
                        .shard
                        .send_response(channel, response)
                        .is_ok(),
                    Reply::Local(reply) => reply.send(Ok(response)).is_ok(),
                };
                if !sent {
                    debug!("response dropped: the requester went away");
                }
                self.start_queued_ops();
            }
            Done::Holders { asker, ask, ids } => {
                self.inbound_ops = self.inbound_ops.saturating_sub(1);
                if asker == self.peer_id {
                    self.on_holders(asker, ask, ids);
                } else if !ids.is_empty() {
                    trace!(asker = %short(&asker), ask, n = ids.len(), "answering lookup");
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .shard
                        .send_request(&asker, Request::Holders { ask, ids });
                    self.pending.insert(id, Pending::Answer);
                }
                self.start_queued_ops();
            }
        }
    }

    pub(super) fn start_queued_ops(&mut self) {
        while self.inbound_ops < MAX_INBOUND_OPS {
            let Some(q) = self.queued_inbound.pop_front() else {
                return;
            };
            self.spawn_op(q.op, q.reply);
        }
    }

    /// Runs a store operation on the blocking pool; its answer comes back as [`Done`].
    pub(super) fn spawn_op(&mut self, op: service::Op, reply: Option<Reply>) {
        let Some(service) = &self.service else {
            return;
        };
        if self.inbound_ops >= MAX_INBOUND_OPS {
            self.queued_inbound.push_back(QueuedOp { op, reply });
            return;
        }
        self.inbound_ops += 1;
        let store = service.store();
        let (fault, other) = (service.fault, service.last_stored);
        let done = self.done_tx.clone();
        // A new primary shard is mirrored to the pair partner soon.
        let stored = match &op {
            service::Op::Store { id, .. } => self.pairing.clone().map(|p| (p, *id)),
            _ => None,
        };
        // An owner's delete of a mirror copy also drops the ward's marker it leaves alone.
        let markers = match &op {
            service::Op::Delete { id, .. } => {
                self.pairing.as_ref().map(|p| (*id, p.ward_markers()))
            }
            _ => None,
        };
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _g = span.enter();
            let msg = match (op, reply) {
                (service::Op::Lookup { asker, ask, ids }, _) => Done::Holders {
                    asker,
                    ask,
                    ids: service::held(&store, &ids),
                },
                (op, Some(reply)) => {
                    let response = service::execute_faulty(&store, op, fault, other);
                    if let (Some((pairing, id)), Response::Stored) = (&stored, &response) {
                        pairing.stored(*id);
                    }
                    if let (Some((id, markers)), Response::Deleted) = (&markers, &response) {
                        service::drop_orphan_markers(&store, id, markers);
                    }
                    Done::Respond { reply, response }
                }
                (_, None) => return,
            };
            let _ = done.blocking_send(msg);
        });
    }

    pub(super) fn on_inbound(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        if let Request::Malformed { reason } = request {
            warn!(peer = %short(&peer), %reason, "malformed shard request refused");
            let _ = self
                .swarm
                .behaviour_mut()
                .shard
                .send_response(channel, Response::error(ErrorCode::BadRequest, reason));
            return;
        }
        if !self.allowed(peer) {
            let _ = self.swarm.behaviour_mut().shard.send_response(
                channel,
                Response::error(
                    ErrorCode::PuzzleNotSolved,
                    format!(
                        "your node id does not solve the identity puzzle at difficulty {}",
                        self.peer_difficulty
                    ),
                ),
            );
            return;
        }
        if let Request::Holders { ask, ids } = request {
            self.on_holders(peer, ask, ids);
            let _ = self
                .swarm
                .behaviour_mut()
                .shard
                .send_response(channel, Response::Ack);
            return;
        }
        let Some(service) = &mut self.service else {
            let _ = self.swarm.behaviour_mut().shard.send_response(
                channel,
                Response::error(ErrorCode::NotStorage, "this node does not store shards"),
            );
            return;
        };
        if service.fault == Some(service::Fault::Silent) {
            self.silenced.push(channel);
            return;
        }
        if matches!(
            request,
            Request::Pair | Request::Heartbeat { .. } | Request::Mirror { .. }
        ) {
            let store = service.store();
            let answer = match &self.pairing {
                Some(p) => p.on_request(peer, request, &store),
                None => crate::pairing::Inbound::Reply(Response::error(
                    ErrorCode::NotPaired,
                    "this node does not pair",
                )),
            };
            match answer {
                crate::pairing::Inbound::Reply(r) => {
                    let _ = self.swarm.behaviour_mut().shard.send_response(channel, r);
                }
                crate::pairing::Inbound::Op(op) => self.spawn_op(op, Some(Reply::Peer(channel))),
            }
            return;
        }
        if let Request::Info = request {
            let info = service.info();
            let _ = self
                .swarm
                .behaviour_mut()
                .shard
                .send_response(channel, Response::Info(info));
            return;
        }
        if let Request::OwnerUsage = request {
            // The asker is the owner: its peer id is its key, proven by the handshake.
            let answer = match node_id_of(&peer) {
                Some(owner) => Response::OwnerUsage(service.owner_usage(&owner)),
                None => Response::error(
                    ErrorCode::BadRequest,
                    "your peer id is not a secp256k1 key: no owner to report on",
                ),
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .shard
                .send_response(channel, answer);
            return;
        }
        match service.admit(request, now_ms()) {
            Ok(op) => self.spawn_op(op, Some(Reply::Peer(channel))),
            Err(refusal) => {
                debug!(peer = %short(&peer), ?refusal, "request refused");
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .shard
                    .send_response(channel, refusal);
            }
        }
    }

    pub(super) fn on_shard(&mut self, ev: request_response::Event<Request, Response>) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_inbound(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => match self.pending.remove(&request_id) {
                Some(Pending::Client {
                    reply,
                    started,
                    sent_bytes,
                    ..
                }) => {
                    let bytes = sent_bytes
                        + match &response {
                            Response::Data(d) => d.len() as u64,
                            _ => 0,
                        };
                    let took = started.elapsed();
                    self.note_space(peer, &response);
                    let state = self.peer(peer);
                    let s = &mut state.stats;
                    match &response {
                        Response::Error(e) if e.code == ErrorCode::ShuttingDown => {
                            debug!(peer = %short(&peer), "peer is shutting down: no more shards go there");
                            state.draining = true;
                        }
                        Response::Error(e) if e.code != ErrorCode::NotFound => {
                            s.record_failure(Instant::now(), 1.0)
                        }
                        _ => s.record_success(bytes, took),
                    }
                    let _ = reply.send(Ok(response));
                }
                Some(Pending::Info { peer }) => self.note_space(peer, &response),
                Some(Pending::Answer) | None => {}
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(p) = self.pending.remove(&request_id) {
                    self.peer(peer).stats.record_failure(Instant::now(), 1.0);
                    if let Pending::Client { reply, peer, .. } = p {
                        let _ = reply.send(Err(Error::Request {
                            peer: Box::new(peer),
                            reason: error.to_string(),
                        }));
                    }
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(peer = %short(&peer), error = %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
