//! A local development network: N storage nodes on 127.0.0.1 in one process, fully connected.
//! `defs devnet --nodes 5` runs one for trying DeFS on one machine, and the in-process tests
//! build their clusters with it (see `test_utils`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use defs_core::identity::{Identity, puzzle_ok};
use defs_core::shard_store::{Quotas, ShardStore};
use libp2p::Multiaddr;
use tracing::{Instrument, info, info_span};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::node::{Config, Node};

/// How long a devnet waits for its nodes to see each other.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of the addresses file a listening node writes in its data dir.
pub const ADDRS_FILE: &str = "addrs";

/// Puzzle difficulty of the in-process test devnets (`test_utils`): low, so that tests make
/// identities quickly. `defs devnet` uses the difficulty `defs init` writes by default
/// ([`defs_core::identity::DEFAULT_PUZZLE_DIFFICULTY`]), so that a user's node accepts the
/// devnet's nodes and they accept it.
pub const DEVNET_DIFFICULTY: u8 = 4;

/// Settings of a devnet.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Number of storage nodes.
    pub nodes: usize,
    /// Where the nodes' data dirs go (`node-0`, `node-1`, …).
    pub dir: PathBuf,
    /// Capacity of each node, bytes.
    pub capacity: u64,
    /// Per-node capacities overriding `capacity` (node `i` gets `capacities[i]` when present).
    pub capacities: Vec<u64>,
    /// Gossipsub heartbeat.
    pub gossip_heartbeat: Duration,
    /// Listen (and connect) over QUIC instead of TCP.
    pub quic: bool,
    /// The identity puzzle difficulty: the nodes' identities solve it, and they ask it of
    /// their peers.
    pub difficulty: u8,
    /// Pairing settings for every node (each node's state file goes in its own dir); `None`:
    /// the nodes do not pair.
    pub pairing: Option<crate::pairing::Config>,
}

/// One node of a devnet.
#[derive(Debug)]
pub struct DevNode {
    /// Its handle.
    pub node: Node,
    /// Its identity.
    pub identity: Arc<Identity>,
    /// Its data dir.
    pub dir: PathBuf,
    /// Its listen addresses (with `/p2p/<id>`).
    pub addrs: Vec<Multiaddr>,
}

/// A running devnet. Dropping it stops every node.
#[derive(Debug)]
pub struct Devnet {
    /// The nodes; a killed node is `None`.
    pub nodes: Vec<Option<DevNode>>,
    /// The nodes listen on QUIC only (else TCP only).
    quic: bool,
    /// See [`DevnetConfig::difficulty`].
    difficulty: u8,
    /// What started it: where a node that joins later lives, its capacity and heartbeat.
    config: DevnetConfig,
}

/// A loopback listen address on an ephemeral port: QUIC or TCP.
///
/// # Errors
/// Never in practice (fixed strings); [`Error::Setup`] if they did not parse.
pub fn loopback(quic: bool) -> Result<Multiaddr> {
    let text = if quic {
        "/ip4/127.0.0.1/udp/0/quic-v1"
    } else {
        "/ip4/127.0.0.1/tcp/0"
    };
    text.parse().map_err(|e| Error::Setup(format!("{e}")))
}

/// Writes `addrs` one per line to `DIR/addrs` (atomically, so readers never see half a file).
///
/// # Errors
/// [`Error::Io`].
pub fn write_addrs(dir: &Path, addrs: &[Multiaddr]) -> Result<()> {
    let path = dir.join(ADDRS_FILE);
    let tmp = dir.join(format!(".{ADDRS_FILE}.tmp"));
    let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// Starts a storage node with its data in `dir` (identity created at `difficulty` if missing),
/// listening on 127.0.0.1 over TCP (or QUIC when `quic`), without mDNS. It asks `difficulty`
/// of its peers' identities, and pairs with `pairing`'s settings (its state file in `dir`).
///
/// # Errors
/// Identity, shard store or network setup errors.
pub async fn start_storage_node(
    dir: &Path,
    capacity: u64,
    bootstrap: Vec<Multiaddr>,
    gossip_heartbeat: Duration,
    quic: bool,
    difficulty: u8,
    pairing: Option<crate::pairing::Config>,
) -> Result<DevNode> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let key = dir.join("identity.key");
    let identity = if key.exists() {
        Identity::load(&key)?
    } else {
        Identity::create(&key, difficulty)?
    };
    let store = ShardStore::open(
        &dir.join("shards"),
        Quotas {
            capacity,
            per_owner: 0,
        },
    )?;
    let config = Config {
        listen: vec![loopback(quic)?],
        bootstrap,
        mdns: false,
        store: Some(store),
        capacity,
        gossip_heartbeat,
        peer_difficulty: difficulty,
        pairing: pairing.map(|p| crate::pairing::Config {
            state: dir.join(crate::pairing::STATE_FILE),
            ..p
        }),
        ..Config::default()
    };
    let node = Node::spawn(&identity, config).await?;
    let addrs = node.wait_listening(Duration::from_secs(10)).await?;
    write_addrs(dir, &addrs)?;
    Ok(DevNode {
        node,
        identity: Arc::new(identity),
        dir: dir.to_path_buf(),
        addrs,
    })
}

impl Devnet {
    /// Starts `cfg.nodes` storage nodes, each dialing all earlier ones, and waits until every
    /// node sees every other as a storage peer.
    ///
    /// # Errors
    /// Setup errors, or [`Error::Timeout`] when the nodes do not connect.
    pub async fn start(cfg: &DevnetConfig) -> Result<Devnet> {
        // Every identity first (solving the puzzle takes a moment), so the nodes start within
        // milliseconds of each other: the first one then knows a peer before Kademlia's
        // automatic bootstrap runs, instead of warning that it knows none.
        for i in 0..cfg.nodes {
            let dir = cfg.dir.join(format!("node-{i}"));
            let key = dir.join("identity.key");
            if !key.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                Identity::create(&key, cfg.difficulty)?;
            }
        }
        let mut nodes: Vec<Option<DevNode>> = Vec::with_capacity(cfg.nodes);
        for i in 0..cfg.nodes {
            let bootstrap: Vec<Multiaddr> = nodes
                .iter()
                .flatten()
                .flat_map(|n| n.addrs.iter().take(1).cloned())
                .collect();
            let dir = cfg.dir.join(format!("node-{i}"));
            let capacity = cfg.capacities.get(i).copied().unwrap_or(cfg.capacity);
            let n = start_storage_node(
                &dir,
                capacity,
                bootstrap,
                cfg.gossip_heartbeat,
                cfg.quic,
                cfg.difficulty,
                cfg.pairing.clone(),
            )
            .instrument(info_span!("devnet", node = i))
            .await?;
            if !puzzle_ok(&n.identity.node_id(), cfg.difficulty) {
                n.node.shutdown().await;
                return Err(Error::Setup(format!(
                    "the identity in {} does not solve the identity puzzle at difficulty {} \
                     (an older devnet made it at a lower one): remove {} to start afresh",
                    dir.display(),
                    cfg.difficulty,
                    cfg.dir.display()
                )));
            }
            info!(node = i, addr = %n.addrs.first().map(|a| a.to_string()).unwrap_or_default(), "devnet node up");
            nodes.push(Some(n));
        }
        let net = Devnet {
            nodes,
            quic: cfg.quic,
            difficulty: cfg.difficulty,
            config: cfg.clone(),
        };
        for n in net.nodes.iter().flatten() {
            let have = n
                .node
                .wait_for_storage_peers(cfg.nodes - 1, CONNECT_TIMEOUT)
                .await?;
            if have < cfg.nodes - 1 {
                return Err(Error::Timeout {
                    what: "devnet nodes connecting",
                    secs: CONNECT_TIMEOUT.as_secs(),
                });
            }
        }
        Ok(net)
    }

    /// Every live node's first address: what clients bootstrap from.
    pub fn bootstrap(&self) -> Vec<Multiaddr> {
        self.nodes
            .iter()
            .flatten()
            .filter_map(|n| n.addrs.first().cloned())
            .collect()
    }

    /// Live node `i`.
    pub fn node(&self, i: usize) -> Option<&DevNode> {
        self.nodes.get(i).and_then(|n| n.as_ref())
    }

    /// Stops node `i` (its data stays on disk).
    pub async fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i).and_then(|n| n.take()) {
            n.node.shutdown().await;
        }
    }

    /// Starts a fresh node (the next index, in `node-N` of the devnet's dir) that joins through
    /// every live node, and waits until it sees them all as storage peers and they see it.
    /// Returns its index.
    ///
    /// # Errors
    /// Setup errors, [`Error::Timeout`].
    pub async fn join(&mut self) -> Result<usize> {
        let i = self.nodes.len();
        let bootstrap = self.bootstrap();
        let live = bootstrap.len();
        let cfg = &self.config;
        let n = start_storage_node(
            &cfg.dir.join(format!("node-{i}")),
            cfg.capacity,
            bootstrap,
            cfg.gossip_heartbeat,
            cfg.quic,
            cfg.difficulty,
            cfg.pairing.clone(),
        )
        .instrument(info_span!("devnet", node = i))
        .await?;
        if n.node.wait_for_storage_peers(live, CONNECT_TIMEOUT).await? < live {
            return Err(Error::Timeout {
                what: "a joining devnet node connecting",
                secs: CONNECT_TIMEOUT.as_secs(),
            });
        }
        self.nodes.push(Some(n));
        for n in self.nodes.iter().flatten() {
            if n.node.wait_for_storage_peers(live, CONNECT_TIMEOUT).await? < live {
                return Err(Error::Timeout {
                    what: "devnet nodes seeing a joining node",
                    secs: CONNECT_TIMEOUT.as_secs(),
                });
            }
        }
        Ok(i)
    }

    /// Starts a client-only node for `identity` (on the devnet's transport), connected to every
    /// live devnet node, and returns a client over it. `identity` must solve the puzzle at
    /// the devnet's difficulty, or the nodes refuse it.
    ///
    /// # Errors
    /// Setup errors, [`Error::Timeout`].
    pub async fn client(&self, identity: Arc<Identity>) -> Result<Client> {
        let security = defs_core::config::NodeSettings::default().tcp_security;
        self.client_with_security(identity, &security).await
    }

    /// [`Devnet::client`] with the TCP security protocols `security`, in this order
    /// ([`crate::transport`]).
    ///
    /// # Errors
    /// As [`Devnet::client`].
    pub async fn client_with_security(
        &self,
        identity: Arc<Identity>,
        security: &[defs_core::config::TcpSecurity],
    ) -> Result<Client> {
        let bootstrap = self.bootstrap();
        let want = bootstrap.len();
        let config = Config {
            listen: vec![loopback(self.quic)?],
            bootstrap,
            mdns: false,
            store: None,
            gossip_heartbeat: Duration::from_millis(200),
            peer_difficulty: self.difficulty,
            tcp_security: security.to_vec(),
            ..Config::default()
        };
        let node = Node::spawn(&identity, config).await?;
        let have = node.wait_for_storage_peers(want, CONNECT_TIMEOUT).await?;
        if have < want {
            return Err(Error::Timeout {
                what: "client connecting to the devnet",
                secs: CONNECT_TIMEOUT.as_secs(),
            });
        }
        Ok(Client::new(node, identity))
    }
}
