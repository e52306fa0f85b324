//! Recovery from the key alone (issue 17 item 3): a tree of every file kind, with xattrs and
//! hard links, written through a mount over real `defs node` processes on 127.0.0.1, `defs
//! sync`ed; then a fresh data dir holding only a copy of `identity.key` mounts the whole tree
//! (`diff -r` and an rsync checksum dry run find nothing), also with a node stopped; and with no
//! peer reachable the mount exits 1 and mounts nothing.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::Path;
use std::process::Command;

use defs_tests::cluster::{Cluster, out, text};
use defs_tests::mount::{
    TestMount, bootstrap_args, key_only, left_to_copy, mount_on, pseudo_random, rsync_copy, run,
};

/// A tree of more than 1,000 entries: 40 directories of 24 small files, symlinks (one
/// dangling), hard links, empty files and directories, a fifo, a character device, a socket,
/// xattrs on files and directories, odd modes and times.
fn tree(src: &Path) {
    use nix::sys::stat::{Mode, SFlag, mknod};
    let must = |r: std::io::Result<()>, what: &str| r.unwrap_or_else(|e| panic!("{what}: {e}"));
    for d in 0..40 {
        let dir = src.join(format!("dir{d:02}"));
        must(fs::create_dir_all(dir.join("sub")), "mkdir");
        for f in 0..24 {
            let size = (d * 24 + f) * 37 % 5000;
            must(
                fs::write(
                    dir.join(format!("f{f:02}.dat")),
                    pseudo_random((d * 100 + f) as u64, size),
                ),
                "write",
            );
        }
        must(symlink("f00.dat", dir.join("link")), "symlink");
        must(
            fs::hard_link(dir.join("f01.dat"), dir.join("sub/hard")),
            "hard link",
        );
    }
    must(fs::create_dir_all(src.join("empty/nested")), "empty dir");
    must(fs::write(src.join("empty.txt"), b""), "empty file");
    must(
        symlink("/nonexistent/target", src.join("dangling")),
        "dangling",
    );
    nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640))
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    mknod(
        &src.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        libc::makedev(1, 3),
    )
    .unwrap_or_else(|e| panic!("mknod: {e}"));
    must(
        std::os::unix::net::UnixListener::bind(src.join("sock")).map(drop),
        "bind",
    );
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o4755)
        .open(src.join("setuid-tool"))
        .unwrap_or_else(|e| panic!("setuid file: {e}"));
    for (name, value, rel) in [
        ("user.comment", "quarterly", "dir00/f00.dat"),
        ("user.dir", "0x00ff00", "dir01"),
        ("trusted.k", "on a device", "null"),
    ] {
        run(Command::new("setfattr")
            .args(["-h", "-n", name, "-v", value])
            .arg(src.join(rel)));
    }
}

/// Mounts a fresh data dir that holds only `key` and checks the whole tree is there.
fn recover_and_compare(cluster: &Cluster, key: &[u8], src: &Path, when: &str) {
    let Some(mut m) = TestMount::prepared(&bootstrap_args(cluster), |d| key_only(d, key, ""))
    else {
        return;
    };
    m.mount();
    assert!(
        m.log().contains("namespace recovered from the network"),
        "{when}\nlog:\n{}",
        m.log()
    );
    // diff compares no fifos, sockets or devices (it calls even equal ones different); rsync does.
    run(Command::new("diff")
        .args([
            "-r",
            "--no-dereference",
            "--exclude=fifo",
            "--exclude=sock",
            "--exclude=null",
        ])
        .arg(src)
        .arg(m.path("dst")));
    let left = left_to_copy(src, &m.path("dst"));
    assert_eq!(left, "", "rsync -c finds changes {when}\nlog:\n{}", m.log());
    m.unmount();
}

#[test]
fn a_synced_tree_mounts_whole_on_a_fresh_data_dir_with_only_the_key() {
    let base = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(base.path(), 4);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    // Outside the first machine's dirs: it is lost below.
    let src = base.path().join("tree");
    tree(&src);
    let o = rsync_copy(&src, &m.path("dst"));
    assert_eq!(o.status.code(), Some(0), "rsync: {}", text(&o));
    m.sync_published();
    let o = out(m.defs().arg("status"));
    assert!(
        text(&o).contains("namespace: published as seq "),
        "{}",
        text(&o)
    );
    let key = fs::read(m.data_dir().join("identity.key")).unwrap();
    // The first machine is lost: only its key is left.
    m.unmount();
    drop(m);

    recover_and_compare(&cluster, &key, &src, "with every node up");
    // One of the four storage nodes stopped: the record and every object still come back.
    drop(cluster.nodes.remove(3));
    cluster.addrs.truncate(3);
    recover_and_compare(&cluster, &key, &src, "with a node stopped");
}

#[test]
fn with_no_peer_a_key_only_data_dir_exits_1_and_mounts_nothing() {
    let base = tempfile::tempdir().unwrap();
    let key_dir = base.path().join("keysrc");
    defs_tests::cluster::init(&key_dir);
    let key = fs::read(key_dir.join("identity.key")).unwrap();
    let Some(m) = TestMount::prepared(&[], |d| {
        key_only(d, &key, "[namespace]\nrecover_wait_secs = 1\n")
    }) else {
        return;
    };
    let o = out(&mut m.command());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(msg.contains("no storage peer reachable"), "{msg}");
    assert!(msg.contains("nothing was mounted"), "{msg}");
    assert!(!m.is_mounted(), "nothing may be mounted");
    assert!(
        !m.data_dir().join("meta/meta.redb").exists(),
        "no metadata DB is made"
    );
    assert_eq!(fs::read_dir(m.mnt()).unwrap().count(), 0);
}
