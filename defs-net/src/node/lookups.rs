//! Broadcast lookups on the actor: a lookup published as a gossipsub ask and its answers
//! ([`Request::Holders`]) collected until its deadline, and the asks of others answered from
//! our store.

use super::*;

impl NodeActor {
    pub(super) fn start_lookup(
        &mut self,
        ids: Vec<ShardId>,
        window: Duration,
        want: usize,
        reply: oneshot::Sender<Result<HashMap<ShardId, Vec<PeerId>>>>,
    ) {
        let ask_id = getrandom::u64().unwrap_or_else(|_| now_ms());
        let addrs: Vec<Multiaddr> = self
            .listen
            .iter()
            .filter(|a| lookup::dialable(a))
            .take(MAX_ASK_ADDRS)
            .cloned()
            .collect();
        let ask = Ask {
            ask: ask_id,
            ids: ids.clone(),
            addrs,
        };
        let bytes = match ask.encode() {
            Ok(b) => b,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let topic = gossipsub::IdentTopic::new(LOOKUP_TOPIC);
        let unpublished = if !self.ask_pacer.ready(Instant::now()) {
            // Over our own ask budget: published from the tick once a token is free.
            debug!(ask = ask_id, "lookup waits for the ask budget");
            Some(bytes)
        } else {
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic, bytes.clone())
            {
                Ok(_) => {
                    self.ask_pacer.take();
                    debug!(ask = ask_id, ids = ids.len(), "lookup published");
                    None
                }
                Err(e) => {
                    // No subscribed peer yet: retried on every tick until the deadline.
                    debug!(error = %e, "lookup not published yet");
                    Some(bytes)
                }
            }
        };
        self.lookups.insert(
            ask_id,
            PendingLookup {
                unpublished,
                ids: ids.iter().copied().collect(),
                found: HashMap::new(),
                want: want.max(1),
                deadline: Instant::now() + window,
                window,
                reply,
            },
        );
        // Our own store answers too (it comes back as `Done::Holders` from ourselves).
        if self.service.is_some() {
            self.spawn_op(
                service::Op::Lookup {
                    asker: self.peer_id,
                    ask: ask_id,
                    ids,
                },
                None,
            );
        }
    }

    pub(super) fn on_holders(&mut self, peer: PeerId, ask: u64, ids: Vec<ShardId>) {
        let Some(l) = self.lookups.get_mut(&ask) else {
            return;
        };
        for id in ids {
            if l.ids.contains(&id) {
                let holders = l.found.entry(id).or_default();
                if !holders.contains(&peer) {
                    holders.push(peer);
                }
            }
        }
        if l.found.len() == l.ids.len()
            && l.found.values().all(|h| h.len() >= l.want)
            && let Some(l) = self.lookups.remove(&ask)
        {
            let _ = l.reply.send(Ok(l.found));
        }
    }

    pub(super) fn on_ask(&mut self, source: PeerId, data: &[u8]) {
        if source == self.peer_id || self.service.is_none() || !self.allowed(source) {
            return;
        }
        if !self.ask_limiter.allow(source, Instant::now()) {
            debug!(peer = %short(&source), "lookup ask rate-limited");
            return;
        }
        let ask = match Ask::decode(data) {
            Ok(a) => a,
            Err(e) => {
                debug!(peer = %short(&source), error = %e, "bad lookup ask");
                return;
            }
        };
        for addr in ask.addrs.iter().filter(|a| lookup::dialable(a)) {
            self.swarm.add_peer_address(source, addr.clone());
        }
        self.spawn_op(
            service::Op::Lookup {
                asker: source,
                ask: ask.ask,
                ids: ask.ids,
            },
            None,
        );
    }
}
