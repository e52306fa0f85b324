//! Audits: a holder that lost, damaged or never kept a shard cannot prove it; the owner finds
//! out from the shard id alone, the holder's score drops, and the failure is kept for repair.

use std::path::Path;

use defs_core::manifest::Manifest;
use defs_core::shard_store::pack::{HEADER_LEN, pack_files, records};
use defs_core::types::{NodeId, ShardId};
use defs_net::audit::{self, Target, Verdict};
use defs_net::commands::layout_for;
use defs_net::test_utils::{Fault, TestCluster};

use crate::util::{random_file, timeout};

/// The pack file and data offset of `id` in the store under `node_dir`.
fn record_of(node_dir: &Path, id: &ShardId) -> (std::path::PathBuf, u64) {
    for (_, pack) in pack_files(&node_dir.join("shards/packs")).unwrap() {
        for (offset, head) in records(&pack).unwrap() {
            if head.id == *id {
                return (pack, offset + HEADER_LEN);
            }
        }
    }
    panic!("shard {id} not found under {}", node_dir.display());
}

fn score_of(peers: &[defs_net::node::PeerSnapshot], node: &NodeId) -> f64 {
    peers
        .iter()
        .find(|p| p.node_id.as_ref() == Some(node))
        .map(|p| p.score)
        .expect("holder is a peer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audits_find_flipped_or_deleted_shards_and_garbage_answers_and_lower_the_score() {
    let cluster = TestCluster::start(4).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 3 << 20, 5);
    let layout = layout_for(&Default::default(), "rs-size", Some((2, 2))).unwrap();
    let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();
    let sealed = timeout(client.fetch_manifest(report.file)).await.unwrap();
    let (manifest, _) = Manifest::open(&sealed, &client.wrap_key()).unwrap();
    let index_of = |node: &NodeId| {
        (0..4)
            .find(|&i| cluster.net.node(i).unwrap().node.node_id() == *node)
            .expect("holder is a cluster node")
    };
    // One target per holder, from the first segment: four shards on four nodes.
    let targets: Vec<Target> = manifest.segments[0]
        .shards
        .iter()
        .map(|s| Target {
            id: s.id,
            len: u64::from(s.len),
            holder: s.holders[0],
        })
        .collect();
    assert_eq!(targets.len(), 4);

    // Every honest holder proves its shard.
    let r = timeout(audit::audit_round(&client, &targets))
        .await
        .unwrap();
    assert_eq!((r.passed, r.failed.len()), (4, 0), "{r:?}");
    assert!(r.bytes > 4 * 1024, "a proof carries a 1 KiB chunk: {r:?}");

    // Behind the nodes' backs: flip bytes in one shard's record; delete another's (cut its
    // pack file before the record: the node keeps the file open, so removing it would not do).
    let (flipped, deleted) = (&targets[0], &targets[1]);
    let flip_dir = cluster
        .net
        .node(index_of(&flipped.holder))
        .unwrap()
        .dir
        .clone();
    let (pack, at) = record_of(&flip_dir, &flipped.id);
    let file = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xAA; 64], at + 100).unwrap();
    let del_dir = cluster
        .net
        .node(index_of(&deleted.holder))
        .unwrap()
        .dir
        .clone();
    let (pack, at) = record_of(&del_dir, &deleted.id);
    let file = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    file.set_len(at - HEADER_LEN).unwrap();

    let before = client.node().peers().await.unwrap();
    let r = timeout(audit::audit_round(&client, &targets[..2]))
        .await
        .unwrap();
    assert_eq!((r.passed, r.failed.len()), (0, 2), "{r:?}");
    let after = client.node().peers().await.unwrap();
    for t in &targets[..2] {
        let (b, a) = (score_of(&before, &t.holder), score_of(&after, &t.holder));
        assert!(
            a < b * 0.5,
            "score of {:?}: {b} before, {a} after",
            t.holder
        );
    }
    let failed = client.node().failed_audits().await.unwrap();
    for t in &targets[..2] {
        assert!(
            failed.iter().any(|f| f.id == t.id && f.holder == t.holder),
            "failed audit of {} kept for repair: {failed:?}",
            t.id
        );
    }
    let status = client.node().status().await.unwrap();
    assert_eq!((status.audits.passed, status.audits.failed), (4, 2));

    // Garbage, truncated and stale (another shard's) proofs all fail, each with its reason.
    let honest = &targets[2];
    let i = index_of(&honest.holder);
    for (fault, why) in [
        (Fault::Garbage, "do not hash to the shard id"),
        (Fault::Truncated, "bytes, chunk"),
        (Fault::OtherShard, "do not hash to the shard id"),
    ] {
        cluster.set_fault(i, Some(fault)).await.unwrap();
        let r = timeout(audit::audit_round(&client, std::slice::from_ref(honest)))
            .await
            .unwrap();
        let Some(Verdict::Failed(reason)) = r.failed.first().map(|f| f.verdict.clone()) else {
            panic!("{fault:?}: the audit passed: {r:?}");
        };
        assert!(reason.contains(why), "{fault:?}: {reason}");
    }
    cluster.set_fault(i, None).await.unwrap();
    let r = timeout(audit::audit_round(&client, std::slice::from_ref(honest)))
        .await
        .unwrap();
    assert_eq!(r.passed, 1);
}
