//! Remount from the network (issue 6): files written through a real mount with five real
//! `defs node` processes on 127.0.0.1, `defs sync`, unmount, `DIR/cache` deleted (identity and
//! metadata kept), two of the five nodes SIGKILLed, mounted again — every file reads back
//! bit-exact, lazily (a 4 KiB read fetches one segment at most), at random offsets and with
//! two readers at once.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use defs_tests::cluster::{Cluster, out, shard_records, text};
use defs_tests::mount::{TestMount, mount_on, pseudo_random, run};

/// The big file: 64 MiB, many segments of any auto layout this cluster gets.
const BIG: usize = 64 << 20;

/// The largest segment the auto layout gives a big file on this cluster: five nodes plus the
/// mount's own give at most 4 data shards (6 peers → 4+2, 5 → 3+2) of the default 1 MiB.
const MAX_SEGMENT: u64 = 4 << 20;

fn xattr(path: &Path, name: &str) -> String {
    run(Command::new("getfattr")
        .args(["-n", name, "--only-values"])
        .arg(path))
}

/// Bytes of cached data actually on disk under `DIR/cache/data`: the sum of allocated blocks
/// (what `du` prints without `--apparent-size`). The cache files are sparse — a file's length
/// is its whole size as soon as any byte is cached — so the apparent size would say nothing
/// about how much was fetched; allocated blocks count only the bytes written into the cache
/// (rounded up to the filesystem's block size). The index (`index.redb`) is bookkeeping, not
/// fetched data, and is left out.
fn cached_bytes(data_dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![data_dir.join("cache/data")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// `defs sync` of the whole mount, which must succeed: every file is then stored.
fn sync_all(m: &TestMount) {
    let o = out(m.defs().arg("sync").arg(m.mnt()));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
}

/// Deterministic offsets in `0..max` (xorshift64).
fn offsets(seed: u64, n: usize, max: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % max
        })
        .collect()
}

#[test]
fn remount_with_cache_deleted_and_two_of_five_nodes_killed_reads_every_file_back_lazily() {
    let base = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(base.path(), 5);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };

    // The files, also kept outside the mount for `cmp`.
    let src = m.scratch().join("src");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("big.bin", pseudo_random(1, BIG)),
        ("empty", Vec::new()),
        ("small.txt", pseudo_random(2, 5000)),
        ("sub/deeper/mid.bin", pseudo_random(3, (3 << 20) + 12_345)),
    ];
    for (rel, bytes) in &files {
        for root in [src.as_path(), m.mnt().as_path()] {
            let p = root.join(rel);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).unwrap();
            }
            fs::write(&p, bytes).unwrap();
        }
    }

    sync_all(&m);
    for (rel, bytes) in &files {
        let p = m.path(rel);
        assert_eq!(xattr(&p, "user.defs.state"), "clean", "{rel}");
        let d = xattr(&p, "user.defs.durability");
        if bytes.is_empty() {
            assert!(d.starts_with("empty"), "{rel}: {d}");
            continue;
        }
        // "on the network: P/S shards on other live nodes, survives N lost nodes": every
        // shard on another node, and the two nodes this test kills are survivable.
        let d = d
            .strip_prefix("on the network: ")
            .unwrap_or_else(|| panic!("{rel}: {d}"));
        let (placed, rest) = d.split_once('/').unwrap_or_else(|| panic!("{rel}: {d}"));
        let (shards, rest) = rest.split_once(' ').unwrap_or_else(|| panic!("{rel}: {d}"));
        assert_eq!(placed, shards, "{rel}: {d}");
        let survives: usize = rest
            .trim_start_matches("shards on other live nodes, survives ")
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{rel}: {d}"));
        assert!(survives >= 2, "{rel}: {d}");
    }

    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    for i in [1, 3] {
        // SIGKILL: the nodes vanish without a goodbye.
        cluster.nodes[i].0.kill().unwrap();
        cluster.nodes[i].0.wait().unwrap();
    }
    m.mount();
    let big = m.path("big.bin");
    let big_src = &files[0].1;

    // The first 4 KiB of the big file fetch one segment's shards at most, not the file.
    let before = cached_bytes(&m.data_dir());
    let f = fs::File::open(&big).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head[..], big_src[..4096]);
    let grown = cached_bytes(&m.data_dir()).saturating_sub(before);
    assert!(
        grown <= MAX_SEGMENT,
        "reading 4 KiB cached {grown} bytes (at most one segment, {MAX_SEGMENT}, expected)"
    );

    // Random-offset reads, mostly of bytes not cached yet.
    for (i, off) in offsets(7, 24, BIG as u64).into_iter().enumerate() {
        let len = (1 + i * 5003) % (200 << 10);
        let end = (off as usize + len).min(BIG);
        let mut buf = vec![0u8; end - off as usize];
        f.read_exact_at(&mut buf, off).unwrap();
        assert!(
            buf[..] == big_src[off as usize..end],
            "pread at {off}+{len}"
        );
    }
    drop(f);

    // Two sequential readers of the whole file at once (they share fetches).
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let p: PathBuf = big.clone();
            std::thread::spawn(move || fs::read(p))
        })
        .collect();
    for r in readers {
        let got = r.join().unwrap().unwrap();
        assert!(got == *big_src, "a concurrent reader got other bytes");
    }
    // The measure above counts fetched bytes: now that the whole file was read it shows them.
    let cached = cached_bytes(&m.data_dir());
    assert!(
        cached >= BIG as u64,
        "{cached} bytes cached after reading {BIG}"
    );

    // Every file, bit-exact.
    for (rel, _) in &files {
        run(Command::new("cmp").arg(src.join(rel)).arg(m.path(rel)));
    }
}

/// Flips a byte in the middle of every shard larger than `min` bytes stored by the node with data
/// dir `node_dir` (the big file's shards; manifest copies are smaller and the mount keeps its
/// own), writing into its pack files. Returns how many it changed.
fn corrupt_shards(node_dir: &Path, min: u64) -> usize {
    let mut changed = 0;
    for (pack, offset, head) in shard_records(node_dir) {
        if head.len > min {
            let at = offset + defs_core::shard_store::pack::HEADER_LEN + head.len / 2;
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&pack)
                .unwrap_or_else(|e| panic!("{}: {e}", pack.display()));
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at)
                .and_then(|()| file.write_all_at(&[byte[0] ^ 0xff], at))
                .unwrap_or_else(|e| panic!("{}: {e}", pack.display()));
            changed += 1;
        }
    }
    changed
}

#[test]
fn shards_corrupted_on_a_nodes_disk_read_correct_bytes_and_defs_status_reports_them() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 5);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    // 8+ segments of 3+2 over five nodes: node 0 holds one shard of each, a data shard of
    // most (placement is random; all parity has odds of (2/5)^8).
    let bytes = pseudo_random(5, 24 << 20);
    let src = m.scratch().join("big");
    fs::write(&src, &bytes).unwrap();
    fs::write(m.path("big"), &bytes).unwrap();
    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());

    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    let changed = corrupt_shards(&cluster.dirs[0], 256 << 10);
    assert!(changed >= 4, "{changed} shard files corrupted");
    m.mount();
    run(Command::new("cmp").arg(&src).arg(m.path("big")));

    // The holder refuses the bad shard (its CRC fails); the read rebuilt around it, and a
    // background probe confirms the holder still lists it: `defs status` names it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        let o = out(m.defs().arg("status"));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let t = text(&o);
        if t.contains("found on read (rebuilt from parity)") {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{t}\nlog:\n{}",
            m.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert!(
        status.contains(&format!("{}: shard ", m.path("big").display())),
        "{status}"
    );
    assert!(status.contains("tree:           1 file"), "{status}");
    let o = out(m.defs().args(["status", "--json"]));
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(json.contains("\"damaged\":[{\"path\":"), "{json}");
    assert!(json.contains("\"clean\":1,"), "{json}");
}

/// Sends `signal` to every node of `cluster`.
fn signal_nodes(cluster: &Cluster, signal: nix::sys::signal::Signal) {
    for node in &cluster.nodes {
        let Ok(pid) = i32::try_from(node.0.id()) else {
            continue;
        };
        // A node that already exited has nothing left to stop or resume.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Resumes the stopped nodes when the test ends, however it ends.
struct Resume<'a>(&'a Cluster);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        signal_nodes(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Reads that wait on the network leave the session threads: with every node stopped and more
/// cold reads hanging than the mount has threads, a `stat` and an `ls` are still answered at
/// once, and the reads complete with the right bytes once the nodes resume.
#[test]
fn reads_waiting_on_stopped_nodes_never_hold_up_a_stat() {
    use std::sync::mpsc;
    use std::time::Duration;

    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 5);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    let files: Vec<Vec<u8>> = (0..4).map(|i| pseudo_random(10 + i, 2 << 20)).collect();
    for (i, bytes) in files.iter().enumerate() {
        fs::write(m.path(format!("f{i}")), bytes).unwrap();
    }
    fs::write(m.path("other"), b"metadata is local").unwrap();
    sync_all(&m);
    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();

    signal_nodes(&cluster, nix::sys::signal::Signal::SIGSTOP);
    let resume = Resume(&cluster);
    let (done, reads) = mpsc::channel();
    let readers: Vec<_> = (0..files.len())
        .map(|i| {
            let path = m.path(format!("f{i}"));
            let done = done.clone();
            std::thread::spawn(move || {
                let got = fs::read(&path);
                let _ = done.send(i);
                got
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        reads.try_recv().is_err(),
        "a read finished with every node stopped"
    );

    // A lookup the kernel has not cached since the mount, and a listing.
    let (answered, answers) = mpsc::channel();
    let (other, mnt) = (m.path("other"), m.mnt());
    std::thread::spawn(move || {
        let len = fs::metadata(&other).map(|md| md.len());
        let names = fs::read_dir(&mnt).map(Iterator::count);
        let _ = answered.send((len, names));
    });
    let (len, names) = answers
        .recv_timeout(Duration::from_secs(5))
        .expect("stat and ls waited for the stopped nodes");
    assert_eq!(len.unwrap(), 17);
    assert_eq!(names.unwrap(), files.len() + 1);
    assert!(reads.try_recv().is_err(), "the reads are still waiting");

    drop(resume);
    for (i, reader) in readers.into_iter().enumerate() {
        let got = reader.join().unwrap().unwrap();
        assert!(got == files[i], "f{i} read back wrong");
    }
}
