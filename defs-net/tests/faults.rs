//! Malicious or broken peers: garbage, truncated data, another shard. Detected by the shard id,
//! the shard is read elsewhere or reconstructed, and the peer's score drops.

use defs_core::manifest::Manifest;
use defs_net::commands::layout_for;
use defs_net::test_utils::{Fault, TestCluster};

use crate::util::{hash_file, random_file, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_data_from_a_peer_is_detected_and_the_file_still_reads() {
    let cluster = TestCluster::start(5).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    for (n, fault) in [Fault::Garbage, Fault::Truncated, Fault::OtherShard]
        .into_iter()
        .enumerate()
    {
        let src = dir.path().join(format!("f{n}"));
        random_file(&src, 2 << 20, 20 + n as u64);
        let layout = layout_for(&Default::default(), "rs-size", Some((3, 2))).unwrap();
        let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();
        let sealed = timeout(client.fetch_manifest(report.file)).await.unwrap();
        let (manifest, _) = Manifest::open(&sealed, &client.wrap_key()).unwrap();
        // The holder of data shard 0 of segment 0 turns bad.
        let holder = manifest.segments[0].shards[0].holders[0];
        let i = (0..5)
            .find(|&i| cluster.net.node(i).unwrap().node.node_id() == holder)
            .unwrap();
        let bad_peer = cluster.net.node(i).unwrap().node.peer_id();
        cluster.set_fault(i, Some(fault)).await.unwrap();

        let score = |peers: &[defs_net::node::PeerSnapshot]| {
            peers
                .iter()
                .find(|p| p.peer == bad_peer)
                .map(|p| p.score)
                .unwrap()
        };
        let before = score(&client.node().peers().await.unwrap());
        // A direct fetch is refused as bad data.
        let err = client
            .fetch_from(bad_peer, manifest.segments[0].shards[0].id)
            .await
            .unwrap_err();
        assert!(
            matches!(err, defs_net::Error::BadShard { .. }),
            "{fault:?}: {err}"
        );
        // The file still reads, byte for byte.
        let out = dir.path().join(format!("out{n}"));
        timeout(client.get_file(report.file, &out, None))
            .await
            .unwrap();
        assert_eq!(hash_file(&out), hash_file(&src), "{fault:?}");
        let after = score(&client.node().peers().await.unwrap());
        assert!(after < before / 2.0, "{fault:?}: score {before} -> {after}");
        cluster.set_fault(i, None).await.unwrap();
    }
}
