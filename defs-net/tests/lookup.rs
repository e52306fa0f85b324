//! Broadcast index lookup: shards moved off their recorded holders are found and fetched.

use std::time::Duration;

use defs_core::manifest::Manifest;
use defs_core::types::ShardId;
use defs_net::PeerId;
use defs_net::commands::layout_for;
use defs_net::test_utils::TestCluster;
use defs_net::transfer::Priority;

use crate::util::{hash_file, random_file, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_moved_off_their_recorded_holders_are_found_by_broadcast_lookup() {
    let cluster = TestCluster::start(5).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 1 << 20, 11);
    let layout = layout_for(&Default::default(), "rs-size", Some((3, 2))).unwrap();
    let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();

    let sealed = timeout(client.fetch_manifest(report.file)).await.unwrap();
    let (manifest, _) = Manifest::open(&sealed, &client.wrap_key()).unwrap();
    let seg = &manifest.segments[0];
    let peer_of = |node: &defs_core::types::NodeId| -> (usize, PeerId) {
        (0..5)
            .find_map(|i| {
                let n = cluster.net.node(i)?;
                (n.node.node_id() == *node).then(|| (i, n.node.peer_id()))
            })
            .expect("holder is a cluster node")
    };
    // Move more shards than the parity count, so the recorded holders alone cannot serve the
    // segment: each goes to the next node and is deleted from its recorded holder.
    for shard in seg.shards.iter().take(3) {
        let (i, from) = peer_of(&shard.holders[0]);
        let to = cluster.net.node((i + 1) % 5).unwrap().node.peer_id();
        let bytes = client.fetch_from(from, shard.id).await.unwrap();
        client.store_on(to, shard.id, bytes).await.unwrap();
        client.delete_on(from, shard.id).await.unwrap();
        assert_eq!(client.has(from, vec![shard.id]).await.unwrap(), vec![None]);
    }

    // A single shard: the recorded holder fails, the lookup finds the new one.
    let moved = seg.shards[0].id;
    let (_, stale) = peer_of(&seg.shards[0].holders[0]);
    let found = timeout(client.node().lookup(vec![moved], Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(found.get(&moved).map(|v| v.len()), Some(1), "{found:?}");
    let bytes = timeout(client.fetch_verified(moved, vec![stale], Priority::Interactive))
        .await
        .unwrap();
    assert_eq!(ShardId(*blake3::hash(&bytes).as_bytes()), moved);

    // The whole file.
    let out = dir.path().join("out");
    timeout(client.get_file(report.file, &out, None))
        .await
        .unwrap();
    assert_eq!(hash_file(&out), hash_file(&src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lookup_nobody_can_answer_ends_empty_at_its_deadline() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    let t = std::time::Instant::now();
    let found = timeout(
        client
            .node()
            .lookup(vec![ShardId([9; 32])], Duration::from_millis(500)),
    )
    .await
    .unwrap();
    assert!(found.is_empty());
    assert!(t.elapsed() < Duration::from_secs(3));
}
