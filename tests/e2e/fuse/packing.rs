//! Issue 26, packing: thousands of small files through the mount into shared Reed-Solomon
//! objects on a cluster of real nodes, read back bit-exact with the cache deleted, at a stored
//! cost near the code's factor instead of three copies each; and a kill -9 while packs upload
//! loses no closed file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use defs_tests::cluster::{Cluster, out, shard_records, text};
use defs_tests::mount::{TestMount, assert_same_tree, mount_on, pseudo_random, run};

/// Small files in the tests below.
const FILES: usize = 2000;

/// Writes `n` files of 1 B to 6 KiB in 20 directories under `dir`; returns their bytes.
pub(super) fn small_tree(dir: &Path, n: usize) -> u64 {
    let must = |r: std::io::Result<()>| r.unwrap_or_else(|e| panic!("writing the tree: {e}"));
    let mut bytes = 0;
    for i in 0..n {
        let sub = dir.join(format!("d{:02}", i % 20));
        must(fs::create_dir_all(&sub));
        let size = 1 + (i * 7919) % 6144;
        must(fs::write(
            sub.join(format!("f{i:05}")),
            pseudo_random(i as u64, size),
        ));
        bytes += size as u64;
    }
    bytes
}

/// Bytes the nodes' pack files spend on the records they hold (each record: a 64-byte header
/// and the shard, from a 4 KiB boundary), summed over `dirs`.
pub(super) fn stored_bytes(dirs: &[PathBuf]) -> u64 {
    dirs.iter()
        .flat_map(|d| shard_records(d))
        .map(|(_, _, head)| (64 + head.len).div_ceil(4096) * 4096)
        .sum()
}

pub(super) fn sync(m: &TestMount) {
    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
    assert!(text(&o).contains("on the network"), "{}", text(&o));
}

#[test]
fn thousands_of_small_files_pack_sync_and_read_back_bit_exact_near_the_codes_cost() {
    let base = tempfile::tempdir().unwrap();
    // Unpaired nodes: a paired node also keeps its partner's mirror of every shard (issue 18),
    // which doubles what the network holds; this test measures what packing costs.
    let cluster = Cluster::start_unpaired(base.path(), 5);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    let src = m.scratch().join("small");
    let data = small_tree(&src, FILES);
    run(Command::new("cp").arg("-a").arg(&src).arg(m.path("small")));
    sync(&m);
    let one = m.path("small/d03/f00003");
    let durability = run(Command::new("getfattr")
        .args(["-n", "user.defs.durability", "--only-values"])
        .arg(&one));
    assert!(
        durability.starts_with("on the network: 5/5 shards"),
        "{durability}"
    );

    // Stored ÷ data: with 5 nodes (6 with the mount's own) the pack geometry is 3+2 or 4+2, a
    // factor of at most 5/3; the slack (1.8 for the files alone) covers the tags and record
    // headers, the 4 KiB alignment of each record, the last segment of each pack and five
    // copies of each pack's manifest. The namespace is published too (issue 17): each publish
    // during the copy and the one `defs sync` makes store a snapshot of about 230 B per entry
    // before coding, here about 0.13x the data of these 3 KiB files each, and no collector
    // removes superseded ones yet (1.95 measured with two): 2.4 in all. Three whole copies of
    // every file would be over 3.
    let mut dirs = cluster.dirs.clone();
    dirs.push(m.data_dir());
    let ratio = stored_bytes(&dirs) as f64 / data as f64;
    assert!(ratio < 2.4, "stored {ratio:.2}x the data");
    eprintln!("stored ÷ data = {ratio:.3} for {FILES} files, {data} bytes");

    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();
    assert_same_tree(&src, &m.path("small"));
}

#[test]
fn kill_9_while_packs_upload_loses_no_closed_file() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    let src = m.scratch().join("small");
    small_tree(&src, FILES);
    run(Command::new("cp").arg("-a").arg(&src).arg(m.path("small")));
    // Every file is closed. Kill the daemon as soon as the nodes start receiving packs: some
    // packs are stored and not yet committed, some not stored, some committed.
    let before = stored_bytes(&cluster.dirs);
    let mut syncing = m.defs().arg("sync").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored_bytes(&cluster.dirs) == before {
        assert!(Instant::now() < deadline, "no pack reached the nodes");
        std::thread::sleep(Duration::from_millis(20));
    }
    m.crash();
    let _ = syncing.wait();

    m.mount();
    sync(&m);
    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();
    assert_same_tree(&src, &m.path("small"));
}
