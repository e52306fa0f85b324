//! One writer per identity (issue 17 item 4, docs/namespace-publishing.md §5), over real `defs
//! node` processes on 127.0.0.1: a second writable mount of the same identity (another data dir
//! holding a copy of `identity.key`) is refused with the writer's host, seq and lease; after
//! the writer is killed with -9, `--force` takes over once the lease plus 30 s passed without a
//! new record, and the tree is intact; a read-only mount follows what the writer adds and
//! refuses writes (EROFS).

use std::fs;
use std::time::{Duration, Instant};

use defs_tests::cluster::{Cluster, out, text};
use defs_tests::mount::{TestMount, bootstrap_args, key_only};

/// Storage nodes of the test network: 4, so that no shard of the namespace lands on the
/// writer's own node (a last resort of placement), which the other machine could not reach
/// once the writer is killed.
const NODES: usize = 4;

/// A writable mount on `cluster` whose records carry a lease of `lease_secs`.
fn writer(cluster: &Cluster, lease_secs: u32) -> Option<TestMount> {
    let mut m = TestMount::prepared(&bootstrap_args(cluster), |d| {
        defs_tests::cluster::init(d);
        let path = d.join("config.toml");
        let config =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let set = config.replacen(
            "\nlease_secs = 300\n",
            &format!("\nlease_secs = {lease_secs}\n"),
            1,
        );
        assert!(set.contains(&format!("\nlease_secs = {lease_secs}\n")));
        fs::write(&path, set).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    })?;
    m.mount();
    // A mount is ready once one storage peer answers; what it stores before it knows the
    // others may land on its own node, which the other machine cannot reach once it is dead.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let peers = text(&out(m.defs().args(["peers", "--json"])));
        if peers.matches("\"connected\":true,\"storage\":true").count() >= NODES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never saw {NODES} storage peers: {peers}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(m)
}

#[test]
fn a_second_writable_mount_is_refused_and_force_takes_over_from_a_dead_writer() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), NODES);
    // A 3 s lease: --force then waits 33 s.
    let Some(mut a) = writer(&cluster, 3) else {
        return;
    };
    fs::create_dir(a.path("docs")).unwrap();
    fs::write(a.path("docs/a.txt"), b"written on the first machine").unwrap();
    a.sync_published();
    let key = fs::read(a.data_dir().join("identity.key")).unwrap();

    let Some(mut b) = TestMount::prepared(&bootstrap_args(&cluster), |d| key_only(d, &key, ""))
    else {
        return;
    };
    let o = out(&mut b.command());
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}\nlog:\n{}", b.log());
    assert!(msg.contains("is mounted writable on "), "{msg}");
    assert!(msg.contains(", lease 3 s): use -o ro, or --force"), "{msg}");
    assert!(!b.is_mounted(), "a refused mount mounts nothing");

    // The first machine dies: no release, its lease runs out by itself.
    a.crash();
    let started = Instant::now();
    let said = b.mount_with(&["--force"]);
    assert!(
        said.contains("waiting 33 s (the lease plus 30 s)"),
        "{said}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(33),
        "took over after {:?}",
        started.elapsed()
    );
    assert_eq!(
        fs::read(b.path("docs/a.txt")).unwrap(),
        b"written on the first machine"
    );
    fs::write(b.path("docs/b.txt"), b"written after the takeover").unwrap();
    b.sync_published();
    // The dead machine's data dir, started again, finds the lease taken.
    let o = out(&mut a.command());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is mounted writable on "), "{}", text(&o));
}

#[test]
fn a_read_only_mount_follows_the_writer_and_refuses_writes() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), NODES);
    let Some(a) = writer(&cluster, 300) else {
        return;
    };
    fs::write(a.path("first.txt"), b"version 1").unwrap();
    a.sync_published();
    let key = fs::read(a.data_dir().join("identity.key")).unwrap();
    let Some(mut c) = TestMount::prepared(&bootstrap_args(&cluster), |d| {
        key_only(d, &key, "[namespace]\nfollow_secs = 1\n")
    }) else {
        return;
    };
    c.mount_with(&["-o", "ro"]);
    assert_eq!(fs::read(c.path("first.txt")).unwrap(), b"version 1");
    let err = fs::write(c.path("mine.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    fs::write(a.path("first.txt"), b"version 2, longer").unwrap();
    fs::create_dir(a.path("new")).unwrap();
    fs::write(a.path("new/second.txt"), b"added later").unwrap();
    a.sync_published();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::read(c.path("new/second.txt")).ok().as_deref() != Some(&b"added later"[..]) {
        assert!(
            Instant::now() < deadline,
            "the read-only mount never showed the change\nlog:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fs::read(c.path("first.txt")).unwrap(), b"version 2, longer");
    assert!(
        fs::read_dir(c.path("new")).unwrap().count() == 1,
        "new/ lists its one file"
    );
    let status = text(&out(c.defs().arg("status")));
    assert!(
        status.contains("read-only mount following the published namespace (seq "),
        "{status}"
    );
    let err = fs::remove_file(c.path("first.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
}
