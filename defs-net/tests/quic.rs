//! A cluster that talks only over QUIC.

use defs_core::pipeline::LayoutConfig;
use defs_net::commands::layout_for;
use defs_net::test_utils::TestCluster;

use crate::util::{hash_file, random_file, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_and_get_over_quic_only() {
    let cluster = TestCluster::start_quic(3).await;
    for n in cluster.net.nodes.iter().flatten() {
        assert!(
            n.addrs.iter().all(|a| a.to_string().contains("/quic-v1")),
            "{:?}",
            n.addrs
        );
    }
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 2 << 20, 31);
    let layout = layout_for(&LayoutConfig::default(), "rs-size", Some((2, 1))).unwrap();
    let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();
    assert_eq!(report.peers, 3);
    assert_eq!(report.fault_tolerance, 1);
    let out = dir.path().join("out");
    timeout(client.get_file(report.file, &out, None))
        .await
        .unwrap();
    assert_eq!(hash_file(&out), hash_file(&src));
}
