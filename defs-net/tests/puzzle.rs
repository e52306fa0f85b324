//! Peers whose node id does not solve the identity puzzle are refused: their requests get
//! `PuzzleNotSolved`, and they never receive shards.

use std::sync::Arc;
use std::time::Duration;

use defs_core::identity::{Identity, puzzle_ok};
use defs_core::pipeline::LayoutConfig;
use defs_core::types::ShardId;
use defs_net::commands::layout_for;
use defs_net::devnet::{DEVNET_DIFFICULTY, start_storage_node};
use defs_net::protocol::ErrorCode;
use defs_net::test_utils::{TEST_CAPACITY, TestCluster};

use crate::util::{random_file, timeout};

/// An identity made without work: it fails the check at the devnet difficulty (4 bits, so the
/// honest identities of the test stay fast to generate).
fn lazy_identity() -> Identity {
    loop {
        let id = Identity::generate(0);
        if !puzzle_ok(&id.node_id(), DEVNET_DIFFICULTY) {
            return id;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_from_a_peer_without_a_solved_puzzle_are_refused() {
    let cluster = TestCluster::start(2).await;
    // The lazy client itself accepts the nodes (they solved their puzzle), so it connects.
    let lazy = cluster.client_for(Arc::new(lazy_identity())).await;
    let node = cluster.net.node(0).unwrap().node.peer_id();
    let data = vec![5u8; 10_000];
    let id = ShardId(*blake3::hash(&data).as_bytes());
    let err = timeout(lazy.store_on(node, id, data.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::PuzzleNotSolved), "{err}");
    let err = timeout(lazy.has(node, vec![id])).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::PuzzleNotSolved), "{err}");
    // An honest client is served as usual.
    let honest = cluster.client().await;
    timeout(honest.store_on(node, id, data)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storage_node_without_a_solved_puzzle_gets_no_shards() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let bad_dir = dir.path().join("lazy");
    std::fs::create_dir_all(&bad_dir).unwrap();
    lazy_identity_file(&bad_dir.join("identity.key"));
    let bad = start_storage_node(
        &bad_dir,
        TEST_CAPACITY,
        cluster.net.bootstrap(),
        Duration::from_millis(200),
        false,
        DEVNET_DIFFICULTY,
        None,
    )
    .await
    .unwrap();
    let bad_addr = bad.addrs[0].clone();
    client.node().dial(bad_addr).await.unwrap();
    // Wait until the client knows the lazy node is a connected storage node.
    let bad_peer = bad.node.peer_id();
    let mut seen = false;
    for _ in 0..400 {
        let peers = client.node().peers().await.unwrap();
        if let Some(p) = peers.iter().find(|p| p.peer == bad_peer)
            && p.connected
            && p.storage
        {
            assert!(!p.puzzle_ok);
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        seen,
        "the lazy node never showed up as a connected storage node"
    );
    let candidates = client.node().candidates(0).await.unwrap();
    assert_eq!(candidates.len(), 2);
    assert!(candidates.iter().all(|c| c.peer != bad_peer));

    let src = dir.path().join("f");
    random_file(&src, 1 << 20, 21);
    let layout = layout_for(&LayoutConfig::default(), "rs-size", Some((3, 2))).unwrap();
    let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();
    assert_eq!(report.peers, 2);
    let status = bad.node.status().await.unwrap();
    assert_eq!(status.info.shards, 0, "the lazy node got shards");
    // And the honest nodes refuse to count it either.
    let st = cluster.net.node(0).unwrap().node.status().await.unwrap();
    assert_eq!(st.storage_peers, 1, "{st:?}");
    bad.node.shutdown().await;
}

/// Writes an identity key that fails the devnet puzzle (it records difficulty 0, so it loads).
fn lazy_identity_file(path: &std::path::Path) {
    loop {
        let _ = std::fs::remove_file(path);
        let id = Identity::create(path, 0).unwrap();
        if !puzzle_ok(&id.node_id(), DEVNET_DIFFICULTY) {
            return;
        }
    }
}
