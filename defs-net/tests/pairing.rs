//! Pairing: every node mirrors its store on a partner; when the partner dies the survivor
//! re-pairs and mirrors again, so losing both nodes of the first pair loses nothing.

use std::time::Duration;

use defs_core::manifest::Manifest;
use defs_core::types::FileId;
use defs_net::PeerId;
use defs_net::commands::layout_for;
use defs_net::pairing::Report;
use defs_net::test_utils::{Fault, TestCluster};

use crate::util::{hash_file, random_file, timeout};

/// Polls every second, up to 180 s (a generous bound: the test asserts no timing).
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..180 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{what}: not within 180 s");
}

async fn report(cluster: &TestCluster, i: usize) -> Option<Report> {
    let n = cluster.net.node(i)?;
    n.node.status().await.ok()?.pairing
}

fn index_of(cluster: &TestCluster, peer: PeerId) -> usize {
    (0..cluster.net.nodes.len())
        .find(|&i| {
            cluster
                .net
                .node(i)
                .is_some_and(|n| n.node.peer_id() == peer)
        })
        .expect("partner is a cluster node")
}

/// Every live node is paired (not with a dead node), keeps no dead ward, and its mirror is
/// complete.
async fn all_complete(cluster: &TestCluster, dead: &[PeerId]) -> bool {
    for i in 0..cluster.net.nodes.len() {
        if cluster.net.node(i).is_none() {
            continue;
        }
        let Some(r) = report(cluster, i).await else {
            return false;
        };
        let ok = r.complete
            && r.partner.is_some_and(|p| !dead.contains(&p))
            && r.wards.iter().all(|(w, _)| !dead.contains(w));
        if !ok {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_survivor_re_pairs_and_no_file_is_lost_when_both_nodes_of_a_pair_die() {
    let mut cluster = TestCluster::start_paired(5).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    // RS 3+1 over 5 nodes: without mirrors, losing two nodes loses every segment that had a
    // shard on both.
    let layout = layout_for(&Default::default(), "rs-size", Some((3, 1))).unwrap();
    let mut files: Vec<(FileId, std::path::PathBuf)> = Vec::new();
    for (n, size) in [1u64, 5_000, 300_000, 1 << 20, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let src = dir.path().join(format!("f{n}"));
        random_file(&src, size, 40 + n as u64);
        let r = timeout(client.put_file(&src, &layout, None)).await.unwrap();
        files.push((r.file, src));
    }
    until("every node paired with a complete mirror", || {
        all_complete(&cluster, &[])
    })
    .await;

    // The index stays answerable: a shard is found on its holder and on the holder's partner.
    let sealed = timeout(client.fetch_manifest(files[4].0)).await.unwrap();
    let (manifest, _) = Manifest::open(&sealed, &client.wrap_key()).unwrap();
    let shard = &manifest.segments[0].shards[0];
    let on_a = shard.id;
    let a = (0..5)
        .find(|&i| cluster.net.node(i).unwrap().node.node_id() == shard.holders[0])
        .expect("the holder is a cluster node");
    let a_node = cluster.net.node(a).unwrap().node.clone();
    let partner = report(&cluster, a).await.unwrap().partner.unwrap();
    let found = timeout(
        client
            .node()
            .lookup_holders(vec![on_a], 2, Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let holders = found.get(&on_a).cloned().unwrap_or_default();
    assert!(
        holders.contains(&partner) && holders.contains(&a_node.peer_id()),
        "the shard and its mirror copy are both found: {holders:?}"
    );

    // The holder's partner dies: the holder (and any other ward of it) re-pairs and mirrors again,
    // including the copies it kept for the dead node.
    let b = index_of(&cluster, partner);
    cluster.net.kill(b).await;
    let dead = [partner];
    until("the survivors re-paired with complete mirrors", || {
        all_complete(&cluster, &dead)
    })
    .await;
    let r = report(&cluster, a).await.unwrap();
    assert_ne!(r.partner, Some(partner));
    assert!(r.sent_shards > 0, "{r:?}");

    // Now the survivor dies too: every file still reads back, bit-exact.
    cluster.net.kill(a).await;
    for (n, (file, src)) in files.iter().enumerate() {
        let out = dir.path().join(format!("out{n}"));
        timeout(client.get_file(*file, &out, None))
            .await
            .unwrap_or_else(|e| panic!("file {n}: {e}"));
        assert_eq!(hash_file(&out), hash_file(src), "file {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_that_lies_about_its_mirror_is_caught_and_dropped() {
    let cluster = TestCluster::start_paired(3).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 2 << 20, 9);
    let layout = layout_for(&Default::default(), "rs-size", Some((2, 1))).unwrap();
    timeout(client.put_file(&src, &layout, None)).await.unwrap();
    until("every node paired with a complete mirror", || {
        all_complete(&cluster, &[])
    })
    .await;
    let liar = report(&cluster, 0).await.unwrap().partner.unwrap();
    // The partner now answers proofs with garbage (as if it had dropped the copies).
    cluster
        .set_fault(index_of(&cluster, liar), Some(Fault::Garbage))
        .await
        .unwrap();
    until("node 0 dropped its lying partner", || async {
        report(&cluster, 0)
            .await
            .is_some_and(|r| r.partner.is_some_and(|p| p != liar))
    })
    .await;
}
