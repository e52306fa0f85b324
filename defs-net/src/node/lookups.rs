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
        let ask = Ask {
            ask: ask_id,
            ids: ids.clone(),
            addrs: self.ask_addrs(),
        };
        // Checked now, so that a bad ask fails its caller at once (it is encoded again, with
        // the addresses of that moment, when it goes out).
        if let Err(e) = ask.encode() {
            let _ = reply.send(Err(e));
            return;
        }
        let now = Instant::now();
        let relay_wait = self.relay_for_answers(now);
        if relay_wait.is_some() {
            debug!(
                ask = ask_id,
                "lookup waits for a relay reservation, so that holders can answer"
            );
        }
        let hold_until = relay_wait.or_else(|| {
            self.subscriptions_pending()
                .then_some(now + reach::ANSWER_RELAY_WAIT)
        });
        self.lookups.insert(
            ask_id,
            PendingLookup {
                unpublished: Some(ask),
                hold_until,
                ids: ids.iter().copied().collect(),
                found: HashMap::new(),
                want: want.max(1),
                deadline: hold_until.unwrap_or(now) + window,
                window,
                reply,
            },
        );
        self.publish_asks(now);
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

    /// Whether a connected storage peer has not yet told us (gossipsub) that it takes lookup
    /// asks: an ask published now would not reach it. Gossipsub sends an ask to the peers
    /// known to subscribe when it is published (and on through their meshes, which a peer that
    /// just connected, or a group that just rejoined after a partition, is not in yet); a
    /// one-shot client asks within milliseconds of connecting, before every subscription has
    /// arrived (`ci/netbed`: a get after a partition healed found no holder of a manifest).
    fn subscriptions_pending(&self) -> bool {
        let topic = gossipsub::IdentTopic::new(LOOKUP_TOPIC).hash();
        let subscribed: HashSet<&PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&topic))
            .map(|(p, _)| p)
            .collect();
        self.peers.iter().any(|(p, s)| {
            s.connections > 0 && s.identified && s.storage && s.puzzle_ok && !subscribed.contains(p)
        })
    }

    /// Where holders can dial us to answer: our listen addresses (a relay's circuit address
    /// among them when we hold a reservation), at most [`MAX_ASK_ADDRS`].
    fn ask_addrs(&self) -> Vec<Multiaddr> {
        self.listen
            .iter()
            .filter(|a| lookup::dialable(a))
            .take(MAX_ASK_ADDRS)
            .cloned()
            .collect()
    }

    /// Publishes the asks that may go out now: not waiting for a relay reservation (or waited
    /// long enough), within the ask budget ([`AskPacer`]); one that finds no subscribed peer
    /// yet (a node that just connected) is tried again on the next tick. A lookup collects
    /// answers for its whole window from when its ask goes out.
    pub(super) fn publish_asks(&mut self, now: Instant) {
        let relay_pending = self.answer_relay_pending() || self.subscriptions_pending();
        let addrs = self.ask_addrs();
        let topic = gossipsub::IdentTopic::new(LOOKUP_TOPIC);
        for l in self.lookups.values_mut() {
            let Some(mut ask) = l.unpublished.take() else {
                continue;
            };
            let held = relay_pending && l.hold_until.is_some_and(|t| now < t);
            // Only published asks use up the budget, so this wait ends.
            if held || !self.ask_pacer.ready(now) {
                l.unpublished = Some(ask);
                l.deadline = l.deadline.max(now + l.window);
                continue;
            }
            ask.addrs = addrs.clone();
            let bytes = match ask.encode() {
                Ok(b) => b,
                Err(e) => {
                    // Its ids were checked when it started; the addresses are bounded.
                    warn!(ask = ask.ask, error = %e, "lookup ask cannot be encoded; not sent");
                    continue;
                }
            };
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), bytes)
            {
                Ok(_) => {
                    self.ask_pacer.take();
                    l.deadline = l.deadline.max(now + l.window);
                    debug!(
                        ask = ask.ask,
                        ids = ask.ids.len(),
                        addrs = ask.addrs.len(),
                        "lookup published"
                    );
                }
                Err(e) => {
                    trace!(error = %e, "lookup not published yet");
                    l.unpublished = Some(ask);
                }
            }
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
