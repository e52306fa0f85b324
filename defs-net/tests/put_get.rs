//! Whole files through a 5-node cluster: sizes, modes, a streamed 200 MiB file, node losses.

use std::time::Instant;

use defs_core::pipeline::{LayoutConfig, Mode};
use defs_net::Error;
use defs_net::commands::layout_for;
use defs_net::test_utils::TestCluster;

use crate::util::{hash_file, peak_rss, random_file, timeout};

fn rs(k: u8, m: u8) -> LayoutConfig {
    layout_for(&LayoutConfig::default(), "rs-size", Some((k, m))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_of_every_size_round_trip_in_every_mode() {
    let cluster = TestCluster::start(5).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let modes = [
        ("auto", None),
        ("rs-size", Some((3u8, 2u8))),
        ("file", None),
        ("slice", None),
        ("rs-ratio", None),
    ];
    for (i, size) in [0u64, 1, 5 << 20].into_iter().enumerate() {
        let src = dir.path().join(format!("src-{size}"));
        random_file(&src, size, 7 + i as u64);
        for (mode, k_m) in modes {
            let layout = layout_for(&LayoutConfig::default(), mode, k_m).unwrap();
            let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();
            assert_eq!(report.size, size);
            let out = dir.path().join(format!("out-{size}-{mode}"));
            let got = timeout(client.get_file(report.file, &out, None))
                .await
                .unwrap();
            assert_eq!(got, size, "{mode} {size}");
            assert_eq!(hash_file(&out), hash_file(&src), "{mode} {size}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_mib_file_streams_through_with_bounded_memory() {
    let cluster = TestCluster::start(5).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    let size = 200u64 << 20;
    random_file(&src, size, 99);
    let before = peak_rss();
    let t = Instant::now();
    let report = timeout(client.put_file(&src, &rs(3, 2), None))
        .await
        .unwrap();
    let put = t.elapsed();
    let out = dir.path().join("big.out");
    let t = Instant::now();
    timeout(client.get_file(report.file, &out, None))
        .await
        .unwrap();
    let get = t.elapsed();
    assert_eq!(hash_file(&out), hash_file(&src));
    let peak = peak_rss();
    eprintln!(
        "200 MiB: put {:.1} s ({:.0} MB/s), get {:.1} s ({:.0} MB/s), peak RSS {} MiB (before {} MiB) for 5 nodes + client",
        put.as_secs_f64(),
        size as f64 / put.as_secs_f64() / 1e6,
        get.as_secs_f64(),
        size as f64 / get.as_secs_f64() / 1e6,
        peak >> 20,
        before >> 20
    );
    // Six nodes in one process, none holding the file: far below the file size.
    assert!(
        peak < 160 << 20 || peak - before < 150 << 20,
        "peak RSS {peak}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_m_holders_is_survived_and_m_plus_one_is_a_clear_error() {
    let mut cluster = TestCluster::start(5).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 3 << 20, 5);
    let report = timeout(client.put_file(&src, &rs(3, 2), None))
        .await
        .unwrap();
    assert_eq!(report.fault_tolerance, 2);

    cluster.net.kill(0).await;
    cluster.net.kill(1).await;
    let out = dir.path().join("out");
    timeout(client.get_file(report.file, &out, None))
        .await
        .unwrap();
    assert_eq!(hash_file(&out), hash_file(&src));

    cluster.net.kill(2).await;
    let out2 = dir.path().join("out2");
    let err = timeout(client.get_file(report.file, &out2, None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotEnoughShards { file, need: 3, .. } if file == report.file),
        "{err}"
    );
    assert!(err.to_string().contains(&report.file.to_hex()), "{err}");
    assert!(!out2.exists(), "no partial output under the final name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fewer_peers_than_shards_spread_evenly_and_report_reduced_tolerance() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 1 << 20, 3);
    let mut layout = rs(3, 2);
    layout.mode = Mode::RsSize;
    let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();
    assert_eq!(report.peers, 3);
    assert!(report.fault_tolerance < 2, "{report:?}");
    let out = dir.path().join("out");
    timeout(client.get_file(report.file, &out, None))
        .await
        .unwrap();
    assert_eq!(hash_file(&out), hash_file(&src));
}
