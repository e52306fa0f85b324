//! Holes stay holes (issue 24): a 4 GiB sparse file with a few MiB of data, written on a mount
//! over real `defs node` processes on 127.0.0.1, takes about its data in the local cache and on
//! the nodes; `SEEK_DATA`/`SEEK_HOLE` answer as on the same file in a temp dir of the host
//! filesystem (dirty, after `defs sync`, after a cache wipe); a punched hole survives sync and a
//! cache wipe; and holes read back as zeros with every node gone.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use defs_tests::cluster::{Cluster, out, shard_records, text};
use defs_tests::mount::{TestMount, mount_on, pseudo_random};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 4 << 30;

/// Where the data goes: (offset, length). Some runs are not block-aligned, one crosses what is
/// a segment boundary for 2+1 × 1 MiB shards (2 MiB), one sits at the very end.
const RUNS: [(u64, u64); 7] = [
    (0, 512 * 1024),
    (3 * MIB + 4096, 300_000),
    (64 * MIB - 1000, 2000),
    (1 << 30, MIB),
    ((2 << 30) + 12_345, 700_000),
    (3 * (1 << 30) + 5 * MIB, 256 * 1024),
    (SIZE - 100_000, 100_000),
];

fn data_written() -> u64 {
    RUNS.iter().map(|(_, n)| n).sum()
}

/// Writes the runs into `path` and makes it `SIZE` long.
fn write_sparse(path: &Path) {
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    for (i, (at, n)) in RUNS.iter().enumerate() {
        f.write_all_at(&pseudo_random(i as u64 + 10, *n as usize), *at)
            .unwrap_or_else(|e| panic!("write at {at}: {e}"));
    }
    f.set_len(SIZE).unwrap_or_else(|e| panic!("set_len: {e}"));
}

fn open(path: &Path) -> File {
    File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// `lseek(fd, from, whence)`: the offset, or the errno.
fn seek(f: &File, from: i64, whence: nix::unistd::Whence) -> Result<i64, i32> {
    nix::unistd::lseek(f, from, whence).map_err(|e| e as i32)
}

/// Offsets to ask from: every run's edges and their neighbours, and some in the middle of holes.
fn probes() -> Vec<i64> {
    let mut p = vec![
        0,
        1,
        4096,
        (SIZE / 2) as i64,
        SIZE as i64 - 1,
        SIZE as i64,
        SIZE as i64 + 7,
    ];
    for (at, n) in RUNS {
        for x in [at, at + n] {
            for d in [-4097i64, -1, 0, 1, 4096] {
                p.push(x as i64 + d);
            }
        }
    }
    p.retain(|x| *x >= 0);
    p
}

/// Every probe's `SEEK_DATA` and `SEEK_HOLE` on `ours` equals the same on `host`.
fn assert_same_layout(ours: &Path, host: &Path, when: &str, m: &TestMount) {
    let (a, b) = (open(ours), open(host));
    for from in probes() {
        for (whence, name) in [
            (nix::unistd::Whence::SeekData, "SEEK_DATA"),
            (nix::unistd::Whence::SeekHole, "SEEK_HOLE"),
        ] {
            assert_eq!(
                seek(&a, from, whence),
                seek(&b, from, whence),
                "{name} from {from} {when}\nlog:\n{}",
                m.log()
            );
        }
    }
}

/// The bytes of every run and of a margin around it equal the host file's.
fn assert_same_bytes_near_runs(ours: &Path, host: &Path, when: &str) {
    let (a, b) = (open(ours), open(host));
    for (at, n) in RUNS {
        let from = at.saturating_sub(64 * 1024);
        let len = (n + 128 * 1024).min(SIZE - from) as usize;
        let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
        a.read_exact_at(&mut x, from)
            .unwrap_or_else(|e| panic!("read {from} {when}: {e}"));
        b.read_exact_at(&mut y, from)
            .unwrap_or_else(|e| panic!("read host {from}: {e}"));
        assert!(x == y, "bytes near {at} differ {when}");
    }
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .blocks()
        * 512
}

/// Bytes of shards (and manifests) the nodes of `cluster` hold.
fn stored_on_nodes(cluster: &Cluster) -> u64 {
    cluster
        .dirs
        .iter()
        .flat_map(|d| shard_records(d))
        .map(|(_, _, h)| h.len)
        .sum()
}

fn sync(m: &TestMount) {
    let o = out(m.defs().arg("sync").arg(m.mnt()));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
}

#[test]
fn a_4_gib_sparse_file_costs_its_data_and_keeps_its_holes() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    let host = m.scratch().join("host.img");
    write_sparse(&host);
    let ours = m.path("disk.img");
    write_sparse(&ours);
    let data = data_written();
    let ino = fs::metadata(&ours).unwrap().ino();
    assert_eq!(fs::metadata(&ours).unwrap().len(), SIZE);

    // Dirty: the layout is the cache file's.
    assert_same_layout(&ours, &host, "while dirty", &m);
    let cache_file = m.data_dir().join("cache/data").join(ino.to_string());
    let in_cache = allocated(&cache_file);
    assert!(
        in_cache <= 2 * data,
        "the cache file takes {in_cache} bytes for {data} written"
    );
    assert!(
        allocated(&ours) <= 2 * data,
        "st_blocks {}",
        allocated(&ours)
    );

    sync(&m);
    let on_nodes = stored_on_nodes(&cluster);
    // 3 nodes: 2+1 Reed-Solomon (1.5×), data in whole 4 KiB blocks, manifests.
    assert!(
        on_nodes <= 3 * data,
        "the nodes hold {on_nodes} bytes for {data} written"
    );
    assert!(
        on_nodes >= data,
        "the nodes hold {on_nodes} bytes: less than the data"
    );
    eprintln!(
        "4 GiB sparse file, {data} bytes of data: cache file {in_cache} bytes, nodes {on_nodes} bytes"
    );
    // Clean: the layout is the manifest's.
    assert_same_layout(&ours, &host, "after defs sync", &m);
    assert!(
        allocated(&ours) <= 2 * data,
        "st_blocks after sync {}",
        allocated(&ours)
    );

    // A hole punched into data (and into the host's copy), then sync and a cache wipe.
    let punch = |path: &Path| {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        nix::fcntl::fallocate(
            &f,
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            (1 << 30) + 256 * 1024,
            512 * 1024,
        )
        .unwrap_or_else(|e| panic!("punch {}: {e}", path.display()));
    };
    punch(&host);
    punch(&ours);
    assert_same_layout(&ours, &host, "after a punch", &m);
    sync(&m);
    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();
    assert_same_layout(&ours, &host, "after a punch, sync and cache wipe", &m);
    assert!(
        allocated(&ours) <= 2 * data,
        "st_blocks after the wipe {}",
        allocated(&ours)
    );
    assert_same_bytes_near_runs(&ours, &host, "after the cache wipe");
    // Reading filled the cache from the nodes: as holes, not zeros.
    let cache_file = m.data_dir().join("cache/data").join(ino.to_string());
    let in_cache = allocated(&cache_file);
    assert!(
        in_cache <= 2 * data,
        "after reads the cache file takes {in_cache}"
    );

    // The tools that keep holes find them: cp --sparse=auto and tar -S copy the data only.
    let copy = m.scratch().join("copy.img");
    let o = out(std::process::Command::new("cp")
        .arg("--sparse=auto")
        .arg(&ours)
        .arg(&copy));
    assert_eq!(o.status.code(), Some(0), "cp: {}", text(&o));
    assert!(
        allocated(&copy) <= 2 * data,
        "cp --sparse=auto wrote {}",
        allocated(&copy)
    );
    assert_same_layout(&copy, &host, "in a cp --sparse=auto copy", &m);
    fs::remove_file(&copy).unwrap_or_else(|e| panic!("rm copy: {e}"));
    let tar = m.scratch().join("img.tar");
    let o = out(std::process::Command::new("tar")
        .arg("-cSf")
        .arg(&tar)
        .arg("-C")
        .arg(m.mnt())
        .arg("disk.img"));
    assert_eq!(o.status.code(), Some(0), "tar: {}", text(&o));
    let tar_len = fs::metadata(&tar).map(|t| t.len()).unwrap_or(u64::MAX);
    assert!(tar_len <= 2 * data, "tar -S wrote {tar_len} bytes");

    // Holes need no node: with every node gone, they still read as zeros.
    drop(cluster);
    let f = File::open(&ours).unwrap();
    for at in [8 * MIB, 2 * (1 << 30) + 100 * MIB, 3 * (1 << 30)] {
        let mut buf = vec![1u8; MIB as usize];
        f.read_exact_at(&mut buf, at).unwrap_or_else(|e| {
            panic!(
                "read of a hole at {at} with no node: {e}\nlog:\n{}",
                m.log()
            )
        });
        assert!(buf.iter().all(|b| *b == 0), "hole at {at} is not zeros");
    }
}
