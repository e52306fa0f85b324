//! The [`Node`] handle: starting the actor, and the requests the rest of the program sends it
//! (each a [`NodeMessage`] with a `oneshot` reply).

use super::*;

impl Node {
    /// Builds the swarm, starts listening and dialing, and spawns the actor.
    ///
    /// # Errors
    /// [`Error::Setup`] when the transport, a listener or a behaviour cannot be set up.
    pub async fn spawn(identity: &Identity, config: Config) -> Result<Node> {
        let key = keypair(identity)?;
        let peer_id = key.public().to_peer_id();
        let node_id = identity.node_id();
        let opts = Options {
            storage: config.store.is_some(),
            mdns: config.mdns,
            gossip_heartbeat: config.gossip_heartbeat,
            private_ips_reachable: config.private_ips_reachable,
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_other_transport(|key| {
                crate::transport::build(key, &config.tcp_security).map_err(Box::from)
            })
            .map_err(|e| Error::Setup(format!("transport: {e}")))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| Error::Setup(format!("relay client: {e}")))?
            .with_behaviour(|key, relay| Behaviour::new(key, relay, &opts).map_err(Box::from))
            .map_err(|e| Error::Setup(format!("behaviour: {e}")))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build();

        let listen = if config.listen.is_empty() {
            vec![
                "/ip4/0.0.0.0/tcp/0"
                    .parse()
                    .map_err(|e| Error::Setup(format!("{e}")))?,
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .map_err(|e| Error::Setup(format!("{e}")))?,
            ]
        } else {
            config.listen.clone()
        };
        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::BadAddress {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        }
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&gossipsub::IdentTopic::new(LOOKUP_TOPIC))
            .map_err(|e| Error::Setup(format!("gossipsub subscribe: {e}")))?;
        // Each bootstrap dial is followed by its connection id, so that its outcome (and the
        // reason of a failure) can be told to the user.
        let mut boot = Vec::with_capacity(config.bootstrap.len());
        let mut boot_dials = HashMap::new();
        for addr in &config.bootstrap {
            // Not given to Kademlia yet: it learns the address once a connection to it is
            // established, so that its lookups never wait on a dead or silent address.
            let opts = DialOpts::from(addr.clone());
            let id = opts.connection_id();
            let outcome = match swarm.dial(opts) {
                Ok(()) => {
                    boot_dials.insert(id, boot.len());
                    bootstrap::Outcome::Dialling
                }
                Err(e) => {
                    let why = bootstrap::dial_failure(&e);
                    info!(%addr, reason = %why, "bootstrap dial failed");
                    bootstrap::Outcome::Failed(why)
                }
            };
            boot.push((addr.clone(), outcome));
        }

        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (done_tx, done_rx) = mpsc::channel(DONE_QUEUE);
        let cancel = CancellationToken::new();
        let service = config.store.map(|store| {
            Service::new(
                store,
                config.capacity,
                config.zone.clone(),
                config.peer_difficulty,
            )
        });
        let link = Node {
            tx: tx.clone(),
            peer_id,
            node_id,
            cancel: cancel.clone(),
            task: None,
        };
        let (pairing, pairing_task) = match (config.pairing, &service) {
            (Some(cfg), Some(service)) => {
                let (stored_tx, stored_rx) = mpsc::channel(crate::pairing::NEW_QUEUE);
                let shared = Arc::new(crate::pairing::Shared::open(cfg, stored_tx, node_id_of));
                let task = crate::pairing::PairingTask::new(
                    link,
                    service.store(),
                    shared.clone(),
                    stored_rx,
                    cancel.child_token(),
                );
                let span = info_span!("pairing", peer = %short(&peer_id));
                let handle = tokio::spawn(task.run().instrument(span));
                (Some(shared), Some(AbortOnDropHandle::new(handle)))
            }
            _ => (None, None),
        };
        let mut local_stats = PeerStats::new(Instant::now());
        local_stats.zone = (!config.zone.is_empty()).then(|| config.zone.clone());
        let actor = NodeActor {
            swarm,
            peer_id,
            node_id,
            commands: rx,
            done_tx,
            done_rx,
            cancel: cancel.clone(),
            service,
            listen: Vec::new(),
            peers: HashMap::new(),
            pending: HashMap::new(),
            lookups: HashMap::new(),
            ask_limiter: AskLimiter::default(),
            ask_pacer: AskPacer::new(Instant::now()),
            inbound_ops: 0,
            queued_inbound: VecDeque::new(),
            last_refresh: Instant::now(),
            local_stats,
            peer_difficulty: config.peer_difficulty,
            boot,
            boot_dials,
            discoveries: Vec::new(),
            silenced: Vec::new(),
            dht_puts: HashMap::new(),
            dht_gets: HashMap::new(),
            pairing,
            _pairing_task: pairing_task,
            audits: crate::audit::Log::default(),
            reach: super::reach::Reach::new(Instant::now()),
        };
        let span = info_span!("node", peer = %short(&peer_id));
        let task = tokio::spawn(actor.run().instrument(span));
        Ok(Node {
            tx,
            peer_id,
            node_id,
            cancel,
            task: Some(Arc::new(AbortOnDropHandle::new(task))),
        })
    }

    /// Our libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Our DeFS node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> NodeMessage) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Sends a request and waits for the response. A `Response::Error` is returned as
    /// [`Error::Remote`].
    ///
    /// # Errors
    /// [`Error::Request`] on dial/stream failure or timeout, [`Error::Remote`] on refusal,
    /// [`Error::Closed`] when the node stopped.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the answer; the request may still reach the peer.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response> {
        let resp = self
            .ask(|reply| NodeMessage::Request {
                peer,
                request,
                reply,
            })
            .await??;
        match resp {
            Response::Error(error) => Err(Error::Remote {
                peer: Box::new(peer),
                error,
            }),
            other => Ok(other),
        }
    }

    /// Dials an address.
    ///
    /// # Errors
    /// [`Error::BadAddress`] when the dial cannot start.
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.ask(|reply| NodeMessage::Dial { addr, reply }).await?
    }

    /// Our full listen addresses (with `/p2p/<id>`), as written to `DIR/addrs`.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.ask(|reply| NodeMessage::ListenAddrs { reply }).await
    }

    /// Waits until the node listens on at least one address.
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::Closed`].
    pub async fn wait_listening(&self, timeout: Duration) -> Result<Vec<Multiaddr>> {
        let deadline = Instant::now() + timeout;
        loop {
            let addrs = self.listen_addrs().await?;
            if !addrs.is_empty() {
                return Ok(addrs);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "listening",
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every known peer.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn peers(&self) -> Result<Vec<PeerSnapshot>> {
        self.ask(|reply| NodeMessage::Peers { reply }).await
    }

    /// Connected storage peers with their scores for placing `need` bytes, and this node's own
    /// store ([`Candidate::local`]) when it has one.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn candidates(&self, need: u64) -> Result<Vec<Candidate>> {
        self.ask(|reply| NodeMessage::Candidates { need, reply })
            .await
    }

    /// Connected peers for node ids (manifest holders), `None` where unknown.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn resolve(&self, nodes: Vec<NodeId>) -> Result<Vec<Option<PeerId>>> {
        self.ask(|reply| NodeMessage::Resolve { nodes, reply })
            .await
    }

    /// Waits until at least `n` remote storage peers are connected and identified, or `timeout`.
    /// Returns how many there are (our own store is not counted).
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn wait_for_storage_peers(&self, n: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self
                .candidates(0)
                .await?
                .iter()
                .filter(|c| !c.local)
                .count();
            if have >= n || Instant::now() >= deadline {
                return Ok(have);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Broadcasts "who holds these shards?" and collects direct answers for up to `window`
    /// (earlier when every id has a holder). Ids beyond [`MAX_IDS`] are asked in several asks.
    ///
    /// # Errors
    /// [`Error::Closed`]; a lookup nobody answers is an empty map, not an error.
    ///
    /// # Cancel safety
    /// Dropping the future drops the answers.
    pub async fn lookup(
        &self,
        ids: Vec<ShardId>,
        window: Duration,
    ) -> Result<HashMap<ShardId, Vec<PeerId>>> {
        self.lookup_holders(ids, 1, window).await
    }

    /// As [`Node::lookup`], but ends early only once every id has `want` holders (to find
    /// alternatives when the first holder misbehaves).
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// # Cancel safety
    /// Dropping the future drops the answers.
    pub async fn lookup_holders(
        &self,
        ids: Vec<ShardId>,
        want: usize,
        window: Duration,
    ) -> Result<HashMap<ShardId, Vec<PeerId>>> {
        let mut all = HashMap::new();
        for chunk in ids.chunks(MAX_IDS) {
            let ids = chunk.to_vec();
            let found = self
                .ask(|reply| NodeMessage::Lookup {
                    ids,
                    window,
                    want,
                    reply,
                })
                .await??;
            all.extend(found);
        }
        Ok(all)
    }

    /// Reports a transfer outcome for the peer's score. Never waits: dropped if the actor is busy.
    pub fn report(&self, peer: PeerId, outcome: Outcome) {
        let _ = self.tx.try_send(NodeMessage::Report { peer, outcome });
    }

    /// The node's own status.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn status(&self) -> Result<NodeStatus> {
        self.ask(|reply| NodeMessage::Status { reply }).await
    }

    /// What became of each bootstrap address of [`Config::bootstrap`], in that order.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn bootstrap(&self) -> Result<Vec<bootstrap::Report>> {
        self.ask(|reply| NodeMessage::Bootstrap { reply }).await
    }

    /// Puts a root record into the DHT (`Quorum::One`), after checking it as a peer would.
    ///
    /// # Errors
    /// [`Error::Core`] when the record does not verify or the DHT copy held here is newer;
    /// [`Error::Dht`] when no peer took it (it is still in this node's own DHT store);
    /// [`Error::Closed`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the answer; the put runs on.
    pub async fn dht_put(&self, record: Vec<u8>) -> Result<()> {
        self.ask(|reply| NodeMessage::DhtPut { record, reply })
            .await?
    }

    /// The values the DHT holds under `owner`'s root record key, unverified (callers verify),
    /// collected for at most [`DHT_GET_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the answer; the query ends by itself.
    pub async fn dht_get(&self, owner: NodeId) -> Result<Vec<Vec<u8>>> {
        self.ask(|reply| NodeMessage::DhtGet { owner, reply }).await
    }

    /// Node ids of the peers reachable now: connected, identity accepted. A peer leaves this
    /// set when its last connection closes: at once when its process ends (the kernel closes
    /// the socket), after [`SILENT_AFTER`] without an answered ping when it goes silent. It
    /// comes back when a connection is made again (see [`REDIAL_FIRST`]).
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn live(&self) -> Result<Vec<NodeId>> {
        self.ask(|reply| NodeMessage::Live { reply }).await
    }

    /// Waits, at most `timeout`, until the network reachable through the bootstrap peers has
    /// settled: a peer has answered identify, a Kademlia lookup of our own id through it has
    /// started (it connects to the peers it finds), and every connected peer has answered
    /// identify (so its role is known) while either the lookup has ended or no new peer has
    /// connected for [`DISCOVERY_QUIET`] (a lookup can wait long on a peer that does not
    /// answer). Ends early once `enough` storage peers are there.
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// # Cancel safety
    /// Safe: it only observes the node (a lookup it started runs on by itself).
    pub async fn discover(&self, timeout: Duration, enough: Option<usize>) -> Result<Discovery> {
        let deadline = tokio::time::Instant::now() + timeout;
        let count = |peers: &[PeerSnapshot]| {
            let connected = peers.iter().filter(|p| p.connected);
            Discovery {
                storage: connected
                    .clone()
                    .filter(|p| p.storage && p.puzzle_ok)
                    .count(),
                refused: connected.clone().filter(|p| !p.puzzle_ok).count(),
                clients: connected
                    .clone()
                    .filter(|p| p.puzzle_ok && !p.storage)
                    .count(),
                settled: peers.iter().filter(|p| p.connected).all(|p| p.identified),
            }
        };
        let is_enough = |d: &Discovery| enough.is_some_and(|e| d.storage >= e);
        // 1. A first peer that has answered identify (its addresses are then in Kademlia).
        loop {
            let peers = self.peers().await?;
            let d = count(&peers);
            if is_enough(&d) {
                return Ok(d);
            }
            if peers.iter().any(|p| p.connected && p.identified) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Discovery {
                    settled: false,
                    ..d
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 2. The lookup through it, which connects to the peers it finds.
        let (reply, mut lookup) = oneshot::channel();
        self.tx
            .send(NodeMessage::Discover { reply })
            .await
            .map_err(|_| Error::Closed)?;
        let mut looked_up = false;
        // 3. Identify answers from everyone it connected to, until the lookup ends or no new
        // peer has connected for a while.
        let mut connected: HashSet<PeerId> = HashSet::new();
        let mut last_new = tokio::time::Instant::now();
        loop {
            let peers = self.peers().await?;
            let now_connected: HashSet<PeerId> = peers
                .iter()
                .filter(|p| p.connected)
                .map(|p| p.peer)
                .collect();
            if !now_connected.is_subset(&connected) {
                last_new = tokio::time::Instant::now();
            }
            connected = now_connected;
            let d = count(&peers);
            // Dials still being set up (a relayed one takes a few round trips more) may bring
            // more peers: quiet means none is, or none has connected for DISCOVERY_DIAL_QUIET
            // (a dial of a dead peer's address can wait on its transport's timeout).
            let quiet = last_new.elapsed() >= DISCOVERY_DIAL_QUIET
                || (last_new.elapsed() >= DISCOVERY_QUIET
                    && self.ask(|reply| NodeMessage::Dialing { reply }).await? == 0);
            if is_enough(&d) || (d.settled && (looked_up || quiet)) {
                return Ok(d);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Discovery {
                    settled: false,
                    ..d
                });
            }
            if !looked_up {
                // Ended (or nobody to ask: then identify answers are all there is to wait for).
                tokio::select! {
                    r = &mut lookup => {
                        r.map_err(|_| Error::Closed)?;
                        looked_up = true;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Remembers an audit's outcome for `defs status` and repair ([`crate::audit::audit_round`]
    /// calls it for each audit).
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn record_audit(&self, record: crate::audit::AuditRecord) -> Result<()> {
        self.ask(|reply| NodeMessage::RecordAudit { record, reply })
            .await
    }

    /// The failed audits this node remembers (at most [`crate::audit::MAX_FAILED_AUDITS`],
    /// oldest first): shards whose holder could not prove it keeps them, for repair.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn failed_audits(&self) -> Result<Vec<crate::audit::AuditRecord>> {
        self.ask(|reply| NodeMessage::FailedAudits { reply }).await
    }

    /// Makes this node misbehave on fetches (tests of malicious peers).
    ///
    /// # Errors
    /// [`Error::Closed`].
    #[cfg(any(test, feature = "test-utils"))]
    pub async fn set_fault(&self, fault: Option<crate::service::Fault>) -> Result<()> {
        self.ask(|reply| NodeMessage::SetFault { fault, reply })
            .await
    }

    /// Stops taking new shards, then waits (at most `within`) for the stores already admitted
    /// to finish: the first step of a shutdown, so that owners place their shards elsewhere
    /// at once (a refusal with [`ErrorCode::ShuttingDown`]) instead of losing them to a node
    /// that is about to stop. Returns the stores still running when the wait ended.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn drain(&self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            let running = self.ask(|reply| NodeMessage::Drain { reply }).await?;
            if running == 0 || Instant::now() >= deadline {
                return Ok(running);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the node and waits for its task to end.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let Some(task) = &self.task else {
            return;
        };
        for _ in 0..200 {
            if task.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the node's task has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
