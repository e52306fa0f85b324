//! A storage node is a placement candidate for its own client: a lone node stores and fetches
//! locally, and reports honestly that nothing survives losing it.

use std::sync::Arc;

use defs_core::pipeline::LayoutConfig;
use defs_core::remote::{OutShard, ShardClient};
use defs_core::types::ShardId;
use defs_net::Client;
use defs_net::commands::{self, layout_for};
use defs_net::test_utils::TestCluster;

use crate::util::{hash_file, random_file, timeout};

/// A client that talks through storage node `i` of the cluster (as `defs put` through the
/// control socket of a running `defs node` does).
fn own_client(cluster: &TestCluster, i: usize) -> Client {
    let n = cluster.net.node(i).unwrap();
    Client::new(n.node.clone(), n.identity.clone())
}

fn shards(n: usize, seed: u8) -> Vec<OutShard> {
    (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..20_000u32)
                .map(|j| (j as u8) ^ seed ^ (i as u8).wrapping_mul(17))
                .collect();
            OutShard::new(ShardId(*blake3::hash(&data).as_bytes()), data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_storage_node_puts_and_gets_files_locally() {
    let cluster = TestCluster::start(1).await;
    let client = own_client(&cluster, 0);
    assert_eq!(ShardClient::storage_peers(&client).await.unwrap(), 1);
    assert!(ShardClient::capacity(&client).await.unwrap() > 0);

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 3 << 20, 11);
    let layout = layout_for(&LayoutConfig::default(), "rs-size", Some((3, 2))).unwrap();
    let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();
    assert_eq!(report.peers, 1);
    assert_eq!(report.fault_tolerance, 0, "everything is on this machine");
    let out = dir.path().join("out");
    timeout(client.get_file(report.file, &out, None))
        .await
        .unwrap();
    assert_eq!(hash_file(&out), hash_file(&src));

    let status = commands::status(&client, false).await.unwrap();
    assert!(
        status.contains("nothing is protected against losing this machine"),
        "{status}"
    );
    assert!(
        status.contains("1 storage node(s) usable (this one included)"),
        "{status}"
    );
    let json = commands::status(&client, true).await.unwrap();
    assert!(json.contains("\"protected\":false"), "{json}");
    assert!(json.contains("\"usable_storage_nodes\":1"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_store_answers_lookups_and_fetches_without_the_network() {
    let cluster = TestCluster::start(1).await;
    let client = own_client(&cluster, 0);
    let me = client.node().node_id();
    let segment = shards(3, 1);
    let stored = timeout(client.store_segment(segment.clone(), 1))
        .await
        .unwrap();
    assert_eq!(stored.holders, vec![vec![me]; 3]);
    assert_eq!(stored.fault_tolerance, 0);
    let ids: Vec<ShardId> = segment.iter().map(|s| s.id).collect();
    let found = timeout(client.lookup(ids)).await.unwrap();
    assert_eq!(found.len(), 3);
    assert!(found.iter().all(|(_, h)| h == &vec![me]));
    for OutShard { id, bytes, .. } in &segment {
        assert_eq!(&timeout(client.fetch(*id, vec![me])).await.unwrap(), bytes);
        // Without recorded holders, the (local) lookup finds it.
        assert_eq!(
            &timeout(client.fetch(*id, Vec::new())).await.unwrap(),
            bytes
        );
    }
    ShardClient::delete(&client, ids_first(&segment), vec![me])
        .await
        .unwrap();
    assert!(
        timeout(client.fetch(ids_first(&segment), vec![me]))
            .await
            .is_err()
    );
}

fn ids_first(s: &[OutShard]) -> ShardId {
    s[0].id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_peers_the_local_node_is_a_last_resort() {
    let cluster = TestCluster::start(3).await;
    let client = own_client(&cluster, 0);
    let me = client.node().node_id();
    // Two remote peers: the local store does not count beside them.
    assert_eq!(ShardClient::storage_peers(&client).await.unwrap(), 2);
    // Two remote peers for five shards: local holds one shard, each peer two.
    for seed in 0..5 {
        let stored = timeout(client.store_segment(shards(5, 10 + seed), 2))
            .await
            .unwrap();
        let local = stored.holders.iter().filter(|h| h.contains(&me)).count();
        assert!(local <= 1, "local holds {local} shards: {stored:?}");
        assert_eq!(stored.fault_tolerance, 1, "{stored:?}");
    }
    // Enough remote peers for a 2-shard segment: nothing local.
    let stored = timeout(client.store_segment(shards(2, 50), 1))
        .await
        .unwrap();
    assert!(
        stored.holders.iter().all(|h| !h.contains(&me)),
        "{stored:?}"
    );
    assert_eq!(stored.fault_tolerance, 1);
    let status = commands::status(&client, false).await.unwrap();
    assert!(!status.contains("nothing is protected"), "{status}");
}

/// A client-only node (no store) with no peers still refuses plainly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_without_store_or_peers_says_nothing_can_be_stored() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    cluster.net.node(0).unwrap().node.shutdown().await;
    let node = client.node().clone();
    let alone = Client::new(node, Arc::clone(client.identity()));
    // The only storage peer is gone once its connection closes.
    let mut n = usize::MAX;
    for _ in 0..200 {
        n = ShardClient::storage_peers(&alone).await.unwrap();
        if n == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(n, 0);
    let status = commands::status(&alone, false).await.unwrap();
    assert!(status.contains("nothing can be stored"), "{status}");
}
