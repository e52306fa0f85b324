//! Issue 17 item 5 and issue 26's collector: files deleted or overwritten in the mount leave
//! the storage nodes once no kept version names them (`defs gc`, signed deletes), while every
//! remaining file still reads back bit-exact with the cache deleted.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use defs_tests::cluster::{Cluster, out, shard_records, text};
use defs_tests::mount::{TestMount, assert_same_tree, mount_on, pseudo_random, run};

/// Every shard record the nodes in `dirs` hold: id → stored bytes (one record per copy).
fn shards(dirs: &[PathBuf]) -> HashMap<[u8; 32], u64> {
    let mut out = HashMap::new();
    for (_, _, head) in dirs.iter().flat_map(|d| shard_records(d)) {
        *out.entry(head.id.0).or_insert(0) += head.len;
    }
    out
}

pub(super) fn defs_ok(m: &TestMount, args: &[&str]) -> String {
    let o = out(m.defs().args(args));
    assert_eq!(
        o.status.code(),
        Some(0),
        "defs {args:?}: {}\nlog:\n{}",
        text(&o),
        m.log()
    );
    text(&o)
}

/// Waits until the nodes' shard records stop changing for a while (pair partners mirrored).
fn settled(dirs: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (shard_records_count(dirs), Instant::now());
    while last.1.elapsed() < Duration::from_secs(3) {
        assert!(Instant::now() < deadline, "the nodes never settled");
        std::thread::sleep(Duration::from_millis(200));
        let n = shard_records_count(dirs);
        if n != last.0 {
            last = (n, Instant::now());
        }
    }
}

fn shard_records_count(dirs: &[PathBuf]) -> usize {
    dirs.iter().map(|d| shard_records(d).len()).sum()
}

#[test]
fn deleted_and_overwritten_files_leave_every_node_and_the_rest_reads_back() {
    let base = tempfile::tempdir().unwrap();
    collects(&Cluster::start_unpaired(base.path(), 5));
}

/// As above with paired nodes: each shard also has a mirror copy on its holder's partner,
/// which must go too.
#[test]
fn deleted_files_leave_the_pair_partners_mirrors_too() {
    let base = tempfile::tempdir().unwrap();
    collects(&Cluster::start(base.path(), 4));
}

/// Keeps one version (`/.snapshots`): the sync before the deletes is then past retention once
/// the next sync is kept, and what only it named may go. Remounts.
#[allow(clippy::unwrap_used)]
pub(super) fn keep_one_version(m: &mut TestMount) {
    let cfg = m.data_dir().join("config.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("keep_versions = 48"), "{text}");
    fs::write(
        &cfg,
        text.replace("keep_versions = 48", "keep_versions = 1"),
    )
    .unwrap();
    m.unmount();
    m.mount();
}

// A test body shared by the two tests above: a failed step fails the test.
#[allow(clippy::unwrap_used)]
fn collects(cluster: &Cluster) {
    let Some(mut m) = mount_on(cluster) else {
        return;
    };
    keep_one_version(&mut m);
    let mut dirs = cluster.dirs.clone();
    dirs.push(m.data_dir());
    let src = m.scratch().join("tree");
    for d in ["keep", "gone"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    // Large files (Reed-Solomon objects of their own) and small ones (packed).
    fs::write(src.join("keep/big"), pseudo_random(1, 3 << 20)).unwrap();
    fs::write(src.join("keep/changes"), pseudo_random(2, 1 << 20)).unwrap();
    fs::write(src.join("gone/big"), pseudo_random(3, 4 << 20)).unwrap();
    for i in 0..200 {
        let dir = if i % 2 == 0 { "keep" } else { "gone" };
        fs::write(
            src.join(format!("{dir}/s{i:03}")),
            pseudo_random(100 + i, 1 + (i as usize * 97) % 5000),
        )
        .unwrap();
    }
    run(Command::new("cp").arg("-a").arg(&src).arg(m.path("tree")));
    defs_ok(&m, &["sync"]);
    settled(&dirs);
    let before = shards(&dirs);

    // Delete a 4 MiB file and 100 small ones, rewrite a 1 MiB one.
    fs::remove_dir_all(m.path("tree/gone")).unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();
    let new = pseudo_random(4, 1 << 20);
    fs::write(m.path("tree/keep/changes"), &new).unwrap();
    fs::write(src.join("keep/changes"), &new).unwrap();
    defs_ok(&m, &["sync"]);
    let gc = defs_ok(&m, &["gc"]);
    assert!(gc.contains("garbage collection"), "{gc}");
    settled(&dirs);
    let after = shards(&dirs);

    // What left the nodes: at least the deleted and replaced data (5 MiB plus the small files),
    // every copy of each shard gone, and nothing the nodes hold now was lost.
    let gone: u64 = before
        .iter()
        .filter(|(id, _)| !after.contains_key(*id))
        .map(|(_, b)| b)
        .sum();
    let removed = before.keys().filter(|id| !after.contains_key(*id)).count();
    eprintln!(
        "gc: {removed} shard ids ({gone} bytes) left the nodes; {} before, {} after",
        before.len(),
        after.len()
    );
    assert!(gone >= 5 << 20, "only {gone} bytes left the nodes: {gc}");
    // A second run finds nothing more.
    let again = defs_ok(&m, &["gc"]);
    assert!(again.contains("deleted 0 object(s)"), "{again}");
    let status = defs_ok(&m, &["status"]);
    assert!(status.contains("gc: "), "{status}");

    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();
    assert_same_tree(&src, &m.path("tree"));
}
