//! Test helpers for in-process clusters: [`TestCluster`] starts N storage nodes on 127.0.0.1,
//! each in its own tracing span, in a temporary dir that is removed on drop; every wait has a
//! timeout. [`Fault`] makes a node misbehave (garbage, truncated data, another shard).

use std::sync::Arc;
use std::time::Duration;

use defs_core::identity::Identity;

use crate::client::Client;
use crate::devnet::{DEVNET_DIFFICULTY, Devnet, DevnetConfig};
use crate::error::Result;

pub use crate::service::Fault;

/// Capacity of each test node: 4 GiB.
pub const TEST_CAPACITY: u64 = 4 << 30;

/// Every test wait ends after this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Pairing settings for tests: heartbeats every 200 ms, a partner given up after 3 s, 64 MiB/s,
/// the partner's mirror audited every second (the state file is set per node).
pub fn test_pairing() -> crate::pairing::Config {
    crate::pairing::Config {
        heartbeat: Duration::from_millis(200),
        partner_timeout: Duration::from_secs(3),
        mirror_bandwidth: 64 << 20,
        verify_every: Duration::from_secs(1),
        ..crate::pairing::Config::new(std::path::PathBuf::new())
    }
}

/// Installs a compact tracing subscriber once (`RUST_LOG` controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// N storage nodes on 127.0.0.1 plus the temp dir they live in.
#[derive(Debug)]
pub struct TestCluster {
    /// The devnet.
    pub net: Devnet,
    /// Removed on drop (after the nodes stop).
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` connected storage nodes.
    ///
    /// # Panics
    /// When the cluster does not come up within [`TEST_TIMEOUT`].
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with_capacity(n, TEST_CAPACITY).await
    }

    /// Starts `n` nodes of `capacity` bytes each.
    ///
    /// # Panics
    /// When the cluster does not come up within [`TEST_TIMEOUT`].
    pub async fn start_with_capacity(n: usize, capacity: u64) -> TestCluster {
        Self::start_inner(n, capacity, Vec::new(), false, None).await
    }

    /// Starts `n` nodes that pair with each other, with quick pairing timings
    /// ([`test_pairing`]).
    ///
    /// # Panics
    /// When the cluster does not come up within [`TEST_TIMEOUT`].
    pub async fn start_paired(n: usize) -> TestCluster {
        Self::start_inner(n, TEST_CAPACITY, Vec::new(), false, Some(test_pairing())).await
    }

    /// Starts `n` nodes that listen and connect over QUIC only.
    ///
    /// # Panics
    /// When the cluster does not come up within [`TEST_TIMEOUT`].
    pub async fn start_quic(n: usize) -> TestCluster {
        Self::start_inner(n, TEST_CAPACITY, Vec::new(), true, None).await
    }

    /// Starts one node per entry of `capacities`, node `i` offering `capacities[i]` bytes.
    ///
    /// # Panics
    /// When the cluster does not come up within [`TEST_TIMEOUT`].
    pub async fn start_with_capacities(capacities: &[u64]) -> TestCluster {
        Self::start_inner(
            capacities.len(),
            TEST_CAPACITY,
            capacities.to_vec(),
            false,
            None,
        )
        .await
    }

    async fn start_inner(
        n: usize,
        capacity: u64,
        capacities: Vec<u64>,
        quic: bool,
        pairing: Option<crate::pairing::Config>,
    ) -> TestCluster {
        init_tracing();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let cfg = DevnetConfig {
            nodes: n,
            dir: dir.path().to_path_buf(),
            capacity,
            capacities,
            gossip_heartbeat: Duration::from_millis(200),
            quic,
            difficulty: DEVNET_DIFFICULTY,
            pairing,
        };
        let net = tokio::time::timeout(TEST_TIMEOUT, Devnet::start(&cfg))
            .await
            .unwrap_or_else(|_| panic!("cluster of {n} did not start in time"))
            .unwrap_or_else(|e| panic!("cluster of {n}: {e}"));
        TestCluster { net, dir }
    }

    /// A client for a new owner identity (solving the devnet's puzzle), connected to every live
    /// node.
    ///
    /// # Panics
    /// When it cannot connect within [`TEST_TIMEOUT`].
    pub async fn client(&self) -> Client {
        self.client_for(Arc::new(Identity::generate(DEVNET_DIFFICULTY)))
            .await
    }

    /// A client for `identity`.
    ///
    /// # Panics
    /// When it cannot connect within [`TEST_TIMEOUT`].
    pub async fn client_for(&self, identity: Arc<Identity>) -> Client {
        tokio::time::timeout(TEST_TIMEOUT, self.net.client(identity))
            .await
            .unwrap_or_else(|_| panic!("client did not connect in time"))
            .unwrap_or_else(|e| panic!("client: {e}"))
    }

    /// Makes node `i` misbehave from now on.
    ///
    /// # Errors
    /// [`crate::Error::Closed`] when the node is gone.
    pub async fn set_fault(&self, i: usize, fault: Option<Fault>) -> Result<()> {
        match self.net.node(i) {
            Some(n) => n.node.set_fault(fault).await,
            None => Err(crate::Error::Closed),
        }
    }
}
