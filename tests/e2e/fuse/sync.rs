//! The mount's network half: its embedded node and control socket, `defs sync` and
//! `defs status` against a cluster of real `defs node` processes on 127.0.0.1.

use std::fs;
use std::path::Path;
use std::process::Command;

use defs_tests::cluster::{Cluster, out, shard_records, text};
use defs_tests::mount::{TestMount, mount_on, pseudo_random, run};

fn write_tree(dir: &Path) {
    let must = |r: std::io::Result<()>| r.unwrap_or_else(|e| panic!("writing the tree: {e}"));
    must(fs::create_dir_all(dir.join("sub/deeper")));
    for i in 0..12u64 {
        let size = if i == 0 { 3 << 20 } else { (i as usize) * 1000 };
        let d = if i % 2 == 0 { "sub" } else { "sub/deeper" };
        must(fs::write(
            dir.join(format!("{d}/f{i}")),
            pseudo_random(i, size),
        ));
    }
    must(fs::write(dir.join("top.txt"), b"top"));
}

#[test]
fn sync_after_cp_uploads_everything_to_the_cluster_and_status_shows_nothing_dirty() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let Some(m) = mount_on(&cluster) else { return };
    let src = m.scratch().join("src");
    write_tree(&src);
    run(Command::new("cp").arg("-a").arg(&src).arg(m.path("copy")));

    // A subtree first, then the whole mount (the default PATH).
    let o = out(m.defs().arg("sync").arg(m.path("copy/sub/deeper")));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
    assert!(text(&o).contains("on the network"), "{}", text(&o));

    let o = out(m.defs().args(["status", "--json"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(json.contains("\"dirty_files\":0"), "{json}");
    assert!(json.contains("\"mount\":{\"mountpoint\":"), "{json}");
    let o = out(m.defs().arg("status"));
    assert!(text(&o).contains("dirty:          0 files"), "{}", text(&o));
    // The shards are on the cluster's nodes, not only on this machine.
    let stored: usize = cluster.dirs.iter().map(|d| shard_records(d).len()).sum();
    assert!(stored >= 13, "{stored} shards on the cluster");
    // Still the same bytes in the mount.
    run(Command::new("diff").arg("-r").arg(&src).arg(m.path("copy")));
}

#[test]
fn sync_with_no_peers_fails_at_once_and_status_lists_the_dirty_file() {
    let Some(m) = TestMount::new() else { return };
    fs::write(m.path("lonely"), b"only here").unwrap();
    let started = std::time::Instant::now();
    let o = out(m.defs().arg("sync").arg(m.mnt()));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no storage peers"), "{}", text(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let o = out(m.defs().arg("status"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!("mount:          {}", m.mnt().display())),
        "{t}"
    );
    assert!(t.contains("dirty:          1 file (9 bytes)"), "{t}");
    assert!(t.contains("nothing is protected"), "{t}");
}

#[test]
fn sync_refuses_paths_outside_the_mount_and_missing_paths() {
    let Some(m) = TestMount::new() else { return };
    let outside = m.scratch();
    let o = out(m.defs().arg("sync").arg(&outside));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is not inside the mount"), "{}", text(&o));
    let o = out(m.defs().arg("sync").arg(m.path("no/such/file")));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn the_mount_serves_its_data_dir_and_refuses_a_second_node_or_mount() {
    let Some(m) = TestMount::new() else { return };
    // The mount's node wrote its addresses and answers on the control socket.
    let addrs = fs::read_to_string(m.data_dir().join("addrs")).unwrap();
    assert!(addrs.contains("/ip4/127.0.0.1/tcp/"), "{addrs}");
    let o = out(m.defs().args(["peers", "--json"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = out(m
        .defs()
        .args(["node", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already running"), "{}", text(&o));

    let other = m.scratch().join("other-mnt");
    fs::create_dir(&other).unwrap();
    let o = out(defs_tests::bin("defs-mount")
        .arg(&other)
        .arg("--data-dir")
        .arg(m.data_dir())
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already running"), "{}", text(&o));
}

#[test]
fn sync_without_a_running_mount_says_so() {
    let dir = tempfile::tempdir().unwrap();
    defs_tests::cluster::init(dir.path());
    let o = out(defs_tests::cluster::defs(dir.path()).arg("sync"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no defs-mount is running"),
        "{}",
        text(&o)
    );
}

#[test]
fn bootstrap_given_to_the_mount_is_remembered() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 1);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    let config = fs::read_to_string(m.data_dir().join("config.toml")).unwrap();
    assert!(config.contains(&cluster.addrs[0]), "{config}");
    m.unmount();
    assert!(m.log().contains("node stopped"), "{}", m.log());
}

/// Block `i` of the big file: distinct 8-byte words, cheap to generate and to check.
fn big_block(i: u64, len: usize) -> Vec<u8> {
    (0..len as u64 / 8)
        .flat_map(|w| {
            (i << 32 | w)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .to_le_bytes()
        })
        .collect()
}

/// The daemon's peak resident set (VmHWM) in MiB.
fn peak_rss_mib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib / 1024
}

#[test]
fn a_2_gib_file_is_written_and_uploaded_with_the_daemon_under_512_mib() {
    use std::io::{Read, Seek, SeekFrom, Write};
    const BLOCK: usize = 1 << 20;
    const BLOCKS: u64 = 2048;
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let Some(m) = mount_on(&cluster) else { return };
    let mut f = fs::File::create(m.path("big")).unwrap();
    for i in 0..BLOCKS {
        f.write_all(&big_block(i, BLOCK)).unwrap();
    }
    drop(f);
    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
    let pid = m.pid().expect("the daemon's pid");
    let peak = peak_rss_mib(pid);
    assert!(peak <= 512, "defs-mount peak RSS {peak} MiB");
    // Spot checks of the content (the whole file was written through the same path).
    let mut f = fs::File::open(m.path("big")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), BLOCKS * BLOCK as u64);
    for i in [0, 1, 777, BLOCKS - 1] {
        let mut got = vec![0u8; BLOCK];
        f.seek(SeekFrom::Start(i * BLOCK as u64)).unwrap();
        f.read_exact(&mut got).unwrap();
        assert!(got == big_block(i, BLOCK), "block {i} differs");
    }
    eprintln!("defs-mount peak RSS after writing and uploading 2 GiB: {peak} MiB");
}
