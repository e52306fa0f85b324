//! Issue 26 item 2, compaction: most of a tree of small files deleted, `defs gc` repacks the
//! sparse packs (the live files copied into new packs, switched in one logged transaction),
//! the old packs leave the nodes, and the rest reads back bit-exact with the cache deleted; a
//! kill -9 while it runs loses nothing and a later `defs gc` finishes the job.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use defs_tests::cluster::Cluster;
use defs_tests::mount::{TestMount, assert_same_tree, mount_on, run};

use super::gc::{defs_ok, keep_one_version};
use super::packing::{small_tree, stored_bytes, sync};

/// Small files written (a few seconds through the mount in CI).
const FILES: usize = 1500;

/// Deletes four files in five (those whose number is not a multiple of 5) from the mount and
/// from the source copy `src`.
fn delete_most(m: &TestMount, src: &Path) {
    for i in (0..FILES).filter(|i| i % 5 != 0) {
        let rel = format!("d{:02}/f{i:05}", i % 20);
        fs::remove_file(m.path("small").join(&rel)).unwrap_or_else(|e| panic!("rm {rel}: {e}"));
        fs::remove_file(src.join(&rel)).unwrap_or_else(|e| panic!("rm src {rel}: {e}"));
    }
}

/// A mount on `cluster` keeping one version, with the small tree copied in and synced, then
/// four files in five deleted and synced again. Returns the mount, the source tree (as the
/// mount should hold it), every data dir holding shards, and their stored bytes before the
/// deletes.
fn mostly_deleted_tree(cluster: &Cluster) -> Option<(TestMount, PathBuf, Vec<PathBuf>, u64)> {
    let mut m = mount_on(cluster)?;
    keep_one_version(&mut m);
    let src = m.scratch().join("small");
    small_tree(&src, FILES);
    run(Command::new("cp").arg("-a").arg(&src).arg(m.path("small")));
    sync(&m);
    let mut dirs = cluster.dirs.clone();
    dirs.push(m.data_dir());
    let bytes = stored_bytes(&dirs);
    delete_most(&m, &src);
    sync(&m);
    Some((m, src, dirs, bytes))
}

/// The number before `what` in `text` (e.g. "12 file(s)").
fn count_before(text: &str, what: &str) -> u64 {
    let at = text
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {text}"));
    text[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no count before {what:?} in {text}"))
}

/// Reads the tree back with the cache deleted.
fn reads_back_from_the_network(m: &mut TestMount, src: &Path) {
    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap_or_else(|e| panic!("rm cache: {e}"));
    m.mount();
    assert_same_tree(src, &m.path("small"));
}

#[test]
fn most_small_files_deleted_gc_repacks_the_rest_and_the_nodes_bytes_drop() {
    let base = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cluster = Cluster::start_unpaired(base.path(), 5);
    let Some((mut m, src, dirs, full)) = mostly_deleted_tree(&cluster) else {
        return;
    };
    let gc = defs_ok(&m, &["gc"]);
    // The files left lived in packs about four fifths dead: nearly all of them move (a small
    // pack whose one remaining file holds half its bytes or more stays as it is).
    let moved = count_before(&gc, "file(s)");
    assert!(
        moved >= (FILES / 10) as u64 && moved <= FILES.div_ceil(5) as u64,
        "{gc}"
    );
    assert!(count_before(&gc, "new pack(s)") >= 1, "{gc}");
    let after = stored_bytes(&dirs);
    eprintln!("compaction: stored {full} bytes before, {after} after deleting 4/5 and `defs gc`");
    // A fifth of the data stays; the old packs went. Half leaves room for the namespace's
    // snapshots and the new packs' last segments.
    assert!(
        after * 2 < full,
        "{after} of {full} bytes still stored: {gc}"
    );
    // A second run finds nothing to repack.
    let again = defs_ok(&m, &["gc"]);
    assert_eq!(count_before(&again, "file(s)"), 0, "{again}");
    let status = defs_ok(&m, &["status"]);
    assert!(status.contains("compaction: "), "{status}");
    reads_back_from_the_network(&mut m, &src);
}

#[test]
fn kill_9_during_compaction_loses_nothing_and_a_later_gc_finishes_the_job() {
    let base = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cluster = Cluster::start_unpaired(base.path(), 4);
    let Some((mut m, src, dirs, full)) = mostly_deleted_tree(&cluster) else {
        return;
    };
    // Kill the daemon as soon as its log says compaction started: the new pack is being read,
    // stored or switched (or, on a fast machine, already done): every point must be safe.
    let mut gc = m
        .defs()
        .arg("gc")
        .spawn()
        .unwrap_or_else(|e| panic!("defs gc: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !m.log().contains("compaction: repacking") {
        assert!(
            Instant::now() < deadline,
            "compaction never started:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    m.crash();
    let _ = gc.wait();

    m.mount();
    assert_same_tree(&src, &m.path("small"));
    // A later run finishes: what the killed one stored and did not switch is deleted, the
    // old packs go.
    let gc = defs_ok(&m, &["gc"]);
    let again = defs_ok(&m, &["gc"]);
    assert_eq!(count_before(&again, "file(s)"), 0, "{gc}\n{again}");
    let after = stored_bytes(&dirs);
    eprintln!("compaction after kill -9: stored {full} bytes before, {after} after");
    assert!(
        after * 2 < full,
        "{after} of {full} bytes still stored: {gc}"
    );
    reads_back_from_the_network(&mut m, &src);
}
