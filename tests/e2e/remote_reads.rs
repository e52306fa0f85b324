//! The filesystem core over a real in-process network (defs-net's `TestCluster`, 5 storage
//! nodes on 127.0.0.1): files written, uploaded, the cache thrown away, nodes stopped or a
//! shard corrupted on a node's disk — every file still reads back bit-exact.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use defs_core::namespace::Content;
use defs_core::object::{ManifestStore, Objects};
use defs_core::pipeline::{FileKey, LayoutConfig, Mode};
use defs_core::types::InodeNo;
use defs_fuse::fs::{Config, Remote};
use defs_fuse::test_utils::TestFs;
use defs_net::test_utils::TestCluster;

const TIMEOUT: Duration = Duration::from_secs(120);

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            i.wrapping_add(seed)
                .wrapping_mul(2_654_435_761)
                .to_le_bytes()[2]
        })
        .collect()
}

async fn remote(
    cluster: &TestCluster,
    client: &defs_net::client::Client,
    manifests: &Path,
) -> Remote {
    let _ = cluster;
    let layout = LayoutConfig {
        mode: Mode::Auto,
        k: 3,
        m: 2,
        shard_size: 64 << 10,
        small_file_max: 4096,
        ..LayoutConfig::default()
    };
    let objects = Objects::new(
        Arc::new(client.clone()),
        client.wrap_key(),
        layout,
        Some(ManifestStore::open(manifests).unwrap()),
    );
    Remote::objects(Arc::new(objects))
}

async fn read_all(t: &TestFs, ino: InodeNo) -> Vec<u8> {
    let o = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        let got = tokio::time::timeout(TIMEOUT, t.fs.read(ino, o.fh, out.len() as u64, 128 << 10))
            .await
            .expect("read timed out")
            .unwrap_or_else(|e| panic!("read of inode {ino} at {}: {e}", out.len()));
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
    }
    t.fs.release(ino, o.fh).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_read_back_from_the_network_with_the_cache_deleted_a_bad_shard_and_lost_nodes() {
    let mut cluster = TestCluster::start(5).await;
    let client = cluster.client().await;
    let manifests = tempfile::tempdir().unwrap();
    let files = [
        ("tiny", data(3, 1)),
        ("small", data(100 << 10, 2)),
        ("large", data((3 << 20) + 4321, 3)),
    ];
    let t = TestFs::with_remote(
        Config::default(),
        remote(&cluster, &client, manifests.path()).await,
    );
    let mut inos = Vec::new();
    for (name, bytes) in &files {
        let ino = t.write_file(name, bytes).await;
        tokio::time::timeout(TIMEOUT, t.fs.flusher().upload_now(ino))
            .await
            .expect("upload timed out")
            .unwrap_or_else(|e| panic!("upload of {name}: {e}"));
        assert_eq!(
            t.fs.getxattr(ino, defs_fuse::fs::STATE_XATTR)
                .await
                .unwrap(),
            b"clean"
        );
        inos.push(ino);
    }

    // The cache deleted (metadata kept), and a data shard of the large file corrupted on disk.
    let t = t
        .reopen(
            Config::default(),
            remote(&cluster, &client, manifests.path()).await,
            true,
        )
        .await;
    let Content::Stored { file, key, .. } = t.db.content(inos[2]).unwrap() else {
        panic!("large is not stored");
    };
    let manifest =
        t.fs.objects()
            .unwrap()
            .manifest(file, &FileKey::from_bytes(key))
            .await
            .unwrap();
    let shard = &manifest.segments[0].shards[0];
    let holder = (0..5)
        .find(|&i| {
            cluster
                .net
                .node(i)
                .is_some_and(|n| n.node.node_id() == shard.holders[0])
        })
        .expect("the holder is a cluster node");
    let node_dir = cluster.net.node(holder).unwrap().dir.clone();
    let (pack, offset, head) = defs_tests::cluster::shard_records(&node_dir)
        .into_iter()
        .find(|r| r.2.id == shard.id)
        .expect("the shard's record on the holder's disk");
    let at = offset + defs_core::shard_store::pack::HEADER_LEN + head.len / 2;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
    for ((name, bytes), ino) in files.iter().zip(&inos) {
        assert!(
            read_all(&t, *ino).await == *bytes,
            "{name} with a corrupted shard"
        );
    }
    // The read rebuilt around the bad shard and the tree's status names it (the holder's
    // refusal, or a background probe that finds it still listing the shard).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = t.fs.tree_status().await.unwrap();
        if let Some((p, d)) = st.damaged.iter().find(|(_, d)| d.shard == shard.id) {
            assert_eq!(p.as_deref(), Some(Path::new("/large")), "{st}");
            assert_eq!(d.holder, Some(shard.holders[0]), "{st}");
            assert!(
                st.to_string().contains("1 damaged shard found on read"),
                "{st}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no damage reported: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    file.write_all_at(&byte, at).unwrap();

    // The cache deleted again and two of five nodes stopped (the layout is 3+2).
    let t = t
        .reopen(
            Config::default(),
            remote(&cluster, &client, manifests.path()).await,
            true,
        )
        .await;
    cluster.net.kill(1).await;
    cluster.net.kill(3).await;
    for ((name, bytes), ino) in files.iter().zip(&inos) {
        assert!(
            read_all(&t, *ino).await == *bytes,
            "{name} with two nodes stopped"
        );
    }
    t.fs.shutdown().await.unwrap();
}
