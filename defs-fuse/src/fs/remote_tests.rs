//! The core over an in-memory network ([`MemoryClient`]): uploads, then reads with the cache
//! thrown away — range reads that fetch only what they cover, rebuilds around bad shards and
//! stopped nodes, shared fetches, read-ahead, statfs and the status xattrs.

use std::ffi::OsStr;
use std::time::Duration;

use defs_core::namespace::Content;
use defs_core::object::{ManifestStore, Objects};
use defs_core::pipeline::{FileKey, LayoutConfig, Mode, WrapKey};
use defs_core::remote::memory::MemoryClient;
use defs_core::sync::Arc;
use defs_core::types::{InodeNo, ShardId};

use super::error::ToErrno;
use super::*;
use crate::test_utils::{OWNER, TestFs};

/// Shards of 16 KiB, 3+2: 48 KiB segments, so small files span many segments.
const SHARD: u32 = 16 << 10;
const K: u64 = 3;

struct Net {
    client: Arc<MemoryClient>,
    manifests: tempfile::TempDir,
}

impl Net {
    fn new() -> Net {
        Net {
            client: Arc::new(MemoryClient::new(5)),
            manifests: tempfile::tempdir().unwrap(),
        }
    }

    /// A fresh object layer (empty manifest LRU) over the same nodes and local manifests.
    fn remote(&self) -> Remote {
        let layout = LayoutConfig {
            mode: Mode::Auto,
            k: 3,
            m: 2,
            shard_size: SHARD,
            small_file_max: 4096,
            ..LayoutConfig::default()
        };
        let store = ManifestStore::open(self.manifests.path()).unwrap();
        let objects = Objects::new(
            self.client.clone(),
            WrapKey::from_bytes([9; 32]),
            layout,
            Some(store),
        );
        Remote::objects(Arc::new(objects))
    }

    fn fetches(&self) -> u64 {
        self.client.fetch_counts().0
    }
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            (i.wrapping_add(seed))
                .wrapping_mul(2_654_435_761)
                .to_le_bytes()[2]
        })
        .collect()
}

async fn upload(t: &TestFs, ino: InodeNo) {
    if !t.db.dirty_inodes().unwrap().iter().any(|r| r.ino == ino) {
        return; // an empty file that was never written: nothing to upload
    }
    tokio::time::timeout(Duration::from_secs(30), t.fs.flusher().upload_now(ino))
        .await
        .expect("upload timed out")
        .unwrap();
    assert!(
        t.db.dirty_inodes().unwrap().is_empty(),
        "clean after upload"
    );
}

/// Writes and uploads `files`, then restarts with the cache deleted.
async fn stored(net: &Net, files: &[(&str, Vec<u8>)]) -> (TestFs, Vec<InodeNo>) {
    let t = TestFs::with_remote(Config::default(), net.remote());
    let mut inos = Vec::new();
    for (name, bytes) in files {
        let ino = t.write_file(name, bytes).await;
        upload(&t, ino).await;
        inos.push(ino);
    }
    let t = t.reopen(Config::default(), net.remote(), true).await;
    assert_eq!(t.cache.usage().clean_bytes + t.cache.usage().dirty_bytes, 0);
    (t, inos)
}

async fn read_all(t: &TestFs, ino: InodeNo, chunk: u32) -> Vec<u8> {
    let o = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        let got = t.fs.read(ino, o.fh, out.len() as u64, chunk).await.unwrap();
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
    }
    t.fs.release(ino, o.fh).await.unwrap();
    out
}

async fn manifest_of(t: &TestFs, ino: InodeNo) -> Arc<defs_core::Manifest> {
    let Content::Stored { file, key, .. } = t.db.content(ino).unwrap() else {
        panic!("not stored");
    };
    t.fs.objects()
        .unwrap()
        .manifest(file, &FileKey::from_bytes(key))
        .await
        .unwrap()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_files_read_back_bit_exact_after_the_cache_is_deleted() {
    let net = Net::new();
    let files = vec![
        ("small", data(100, 1)),
        ("empty", Vec::new()),
        ("medium", data(300 << 10, 2)),
        ("large", data((2 << 20) + 12345, 3)),
    ];
    let (t, inos) = stored(&net, &files).await;
    for ((name, bytes), ino) in files.iter().zip(&inos) {
        assert_eq!(&read_all(&t, *ino, 128 << 10).await, bytes, "{name}");
    }
    // Everything read is cached now: a second pass fetches nothing.
    let before = net.fetches();
    for ((_, bytes), ino) in files.iter().zip(&inos) {
        assert_eq!(&read_all(&t, *ino, 100_000).await, bytes);
    }
    assert_eq!(net.fetches(), before, "warm reads come from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_first_4_kib_of_large_files_fetches_one_shard_each() {
    let net = Net::new();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("big{i}"), data(8 << 20, i)))
        .collect();
    let named: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let (t, inos) = stored(&net, &named).await;
    let before = net.fetches();
    for ((_, bytes), ino) in files.iter().zip(&inos) {
        // As `file` or a thumbnailer does: open, read the head, close.
        let o = t.fs.open(*ino, libc::O_RDONLY).await.unwrap();
        let head = t.fs.read(*ino, o.fh, 0, 4096).await.unwrap();
        t.fs.release(*ino, o.fh).await.unwrap();
        assert_eq!(head, bytes[..4096]);
    }
    let fetched = net.fetches() - before;
    assert!(
        fetched <= 3 * K,
        "at most one segment's shards per file, got {fetched} fetches"
    );
    let usage = t.cache.usage();
    assert!(
        usage.clean_bytes <= 3 * u64::from(SHARD) * K,
        "cached {} bytes",
        usage.clean_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_shard_still_reads_correct_bytes() {
    let net = Net::new();
    let bytes = data(1 << 20, 7);
    let (t, inos) = stored(&net, &[("f", bytes.clone())]).await;
    let manifest = manifest_of(&t, inos[0]).await;
    // The first data shard of the first two segments, and a middle one.
    for (seg, shard) in [(0, 0), (1, 0), (5, 1)] {
        let id: ShardId = manifest.segments[seg].shards[shard].id;
        assert_eq!(net.client.corrupt(id), 1);
    }
    assert_eq!(read_all(&t, inos[0], 128 << 10).await, bytes);
    // And the tree's status names each damaged shard with the file it belongs to.
    let st = t.fs.tree_status().await.unwrap();
    assert_eq!(st.damaged.len(), 3, "{st}");
    assert!(
        st.damaged
            .iter()
            .all(|(p, _)| p.as_deref() == Some("/f".as_ref()))
    );
    let text = st.to_string();
    assert!(
        text.contains("3 damaged shards found on read (rebuilt from parity):"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_nodes_up_to_the_parity_count_still_read_correct_bytes() {
    let net = Net::new();
    let files = vec![("a", data(700 << 10, 8)), ("b", data(3000, 9))];
    let (t, inos) = stored(&net, &files).await;
    net.client.set_up(0, false);
    net.client.set_up(3, false);
    for ((_, bytes), ino) in files.iter().zip(&inos) {
        assert_eq!(&read_all(&t, *ino, 64 << 10).await, bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_lost_nodes_answer_eio_not_a_panic() {
    let net = Net::new();
    let (t, inos) = stored(&net, &[("f", data(200 << 10, 10))]).await;
    // Three of five nodes down, the holder of the first shard among them.
    let first = manifest_of(&t, inos[0]).await.segments[0].shards[0].holders[0];
    let down: Vec<usize> = (0..5)
        .filter(|&i| net.client.node(i) == first)
        .chain((0..5).filter(|&i| net.client.node(i) != first).take(2))
        .collect();
    for &i in &down {
        net.client.set_up(i, false);
    }
    let o = t.fs.open(inos[0], libc::O_RDONLY).await.unwrap();
    let Err(e) = t.fs.read(inos[0], o.fh, 0, 4096).await else {
        panic!("a read with too few shards succeeded");
    };
    assert_eq!(e.to_errno(), libc::EIO, "{e}");
    assert!(matches!(e, Error::Fetch { .. }), "{e}");
    // Nodes back: the same handle reads.
    for &i in &down {
        net.client.set_up(i, true);
    }
    assert_eq!(
        t.fs.read(inos[0], o.fh, 0, 4096).await.unwrap(),
        data(200 << 10, 10)[..4096]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_offset_reads_match_the_file() {
    let net = Net::new();
    let model = data((1 << 20) + 777, 11);
    let (t, inos) = stored(&net, &[("f", model.clone())]).await;
    let ino = inos[0];
    let o = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = x % (model.len() as u64 + 1000);
        let size = (x >> 32) as u32 % (200 << 10);
        let got = t.fs.read(ino, o.fh, offset, size).await.unwrap();
        let a = (offset as usize).min(model.len());
        let b = (a + size as usize).min(model.len());
        assert_eq!(got, model[a..b], "read of {size} at {offset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sequential_readers_share_fetches() {
    let net = Net::new();
    let bytes = data(3 << 20, 12);
    let (t, inos) = stored(&net, &[("f", bytes.clone())]).await;
    let ino = inos[0];
    let data_shards: u64 = manifest_of(&t, ino)
        .await
        .segments
        .iter()
        .map(|s| {
            let used = u64::from(s.len).div_ceil(u64::from(s.shard_len).max(1));
            used.min(K)
        })
        .sum();
    let before = net.fetches();
    let (a, b) = tokio::join!(read_all(&t, ino, 128 << 10), read_all(&t, ino, 128 << 10));
    assert_eq!(a, bytes);
    assert_eq!(b, bytes);
    let fetched = net.fetches() - before;
    assert!(
        fetched <= data_shards,
        "two readers fetched {fetched} shards; one pass is {data_shards}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_prefetches_sequential_reads_and_stops_on_seek() {
    let net = Net::new();
    let bytes = data(4 << 20, 13);
    let (t, inos) = stored(&net, &[("f", bytes.clone())]).await;
    let ino = inos[0];
    let seg = K * u64::from(SHARD);
    let o = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    // Sequential: three reads of 16 KiB from the start.
    for i in 0..3u64 {
        let got = t.fs.read(ino, o.fh, i * 16384, 16384).await.unwrap();
        assert_eq!(got, bytes[(i * 16384) as usize..((i + 1) * 16384) as usize]);
    }
    let end = 3 * 16384;
    eventually("the next segments are prefetched", || {
        t.cache.missing(ino, end, 2 * seg).is_empty()
    })
    .await;
    // Random reads far apart: no read-ahead after them.
    let far = [7 << 19, 1 << 20, 5 << 19];
    for off in far {
        let got = t.fs.read(ino, o.fh, off, 4096).await.unwrap();
        assert_eq!(got, bytes[off as usize..off as usize + 4096]);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for off in far {
        let after = off + u64::from(SHARD);
        assert!(
            !t.cache.missing(ino, after, seg).is_empty(),
            "nothing prefetched after the read at {off}"
        );
    }
    t.fs.release(ino, o.fh).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_change_of_an_uncached_file_fetches_it_whole_and_keeps_its_bytes() {
    let net = Net::new();
    let mut model = data(500 << 10, 14);
    let (t, inos) = stored(&net, &[("f", model.clone())]).await;
    let ino = inos[0];
    let o = t.fs.open(ino, libc::O_RDWR).await.unwrap();
    t.fs.write(ino, o.fh, 100_000, b"patch").await.unwrap();
    model[100_000..100_005].copy_from_slice(b"patch");
    // Extend past the end: the gap reads as zeros, the old bytes stay.
    let end = model.len() as u64 + 10;
    t.fs.write(ino, o.fh, end, b"tail").await.unwrap();
    model.extend_from_slice(&[0; 10]);
    model.extend_from_slice(b"tail");
    t.fs.release(ino, o.fh).await.unwrap();
    assert_eq!(read_all(&t, ino, 128 << 10).await, model);
    upload(&t, ino).await;
    let t = t.reopen(Config::default(), net.remote(), true).await;
    assert_eq!(read_all(&t, ino, 128 << 10).await, model);
    // Truncating an uncached file keeps what stays.
    let t = t.reopen(Config::default(), net.remote(), true).await;
    let set = SetAttr {
        size: Some(1000),
        ..Default::default()
    };
    t.fs.setattr(ino, None, set).await.unwrap();
    assert_eq!(read_all(&t, ino, 4096).await, model[..1000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statfs_reports_the_networks_free_capacity_over_redundancy() {
    let net = Net::new();
    let t = TestFs::with_remote(Config::default(), net.remote());
    let local = nix::sys::statvfs::statvfs(&t.path()).unwrap();
    let local_free = local.blocks_available() * local.fragment_size();
    net.client.set_node_capacity(100 << 20);
    let s = t.fs.statfs().await.unwrap();
    let free = s.bavail * u64::from(s.frsize);
    // 5 nodes × 100 MiB, stored as 3+2: 300 MiB usable.
    let want = (300u64 << 20).min(local_free);
    assert!(
        free.abs_diff(want) < u64::from(s.frsize),
        "free {free}, want {want}"
    );
    assert!(s.blocks >= s.bfree);
    // A full network (or a quota used up) has nothing available, but the disk never looks
    // zero-sized.
    net.client.set_node_capacity(0);
    let full = t.fs.statfs().await.unwrap();
    assert_eq!(full.bavail, 0);
    assert!(full.blocks >= 1);
    // Nothing up: nothing free.
    for i in 0..5 {
        net.client.set_up(i, false);
    }
    assert_eq!(t.fs.statfs().await.unwrap().bavail, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_xattrs_tell_the_id_and_durability_and_are_read_only() {
    let net = Net::new();
    let t = TestFs::with_remote(Config::default(), net.remote());
    let ino = t.write_file("f", &data(200 << 10, 15)).await;
    let get = |name: &'static [u8]| {
        let fs = t.fs.clone();
        async move { fs.getxattr(ino, name).await }
    };
    // Dirty, never stored.
    let e = get(ID_XATTR).await.unwrap_err();
    assert_eq!(e.to_errno(), libc::ENODATA);
    assert_eq!(
        get(DURABILITY_XATTR).await.unwrap(),
        b"dirty: not stored yet"
    );
    let st = t.fs.tree_status().await.unwrap();
    assert_eq!((st.files, st.dirty, st.clean), (1, 1, 0));

    upload(&t, ino).await;
    let Content::Stored { file, .. } = t.db.content(ino).unwrap() else {
        panic!("stored")
    };
    assert_eq!(get(ID_XATTR).await.unwrap(), file.to_string().into_bytes());
    let d = String::from_utf8(get(DURABILITY_XATTR).await.unwrap()).unwrap();
    let shards = manifest_of(&t, ino).await.segments.len() * 5;
    assert_eq!(
        d,
        format!(
            "on the network: {shards}/{shards} shards on other live nodes, survives 2 lost nodes"
        )
    );
    assert_eq!(get(STATE_XATTR).await.unwrap(), b"clean");
    let st = t.fs.tree_status().await.unwrap();
    assert_eq!((st.files, st.dirty, st.clean, st.failed), (1, 0, 1, 0));
    assert_eq!(st.worst.as_ref().map(|(p, _)| p.clone()), Some("/f".into()));
    assert!(st.errors.is_empty());
    assert!(st.to_string().contains("survives 2 lost nodes"), "{st}");

    // Read-only, and never listed.
    for name in [ID_XATTR, DURABILITY_XATTR, STATE_XATTR] {
        let e = t.fs.setxattr(ino, name, b"x", 0, OWNER).await.unwrap_err();
        assert_eq!(e.to_errno(), libc::EPERM);
        let e = t.fs.removexattr(ino, name).await.unwrap_err();
        assert_eq!(e.to_errno(), libc::EPERM);
    }
    assert!(t.fs.listxattr(ino).await.unwrap().is_empty());
    // A directory has neither.
    let dir =
        t.fs.mkdir(InodeNo::ROOT, OsStr::new("d"), 0o755, OWNER)
            .await
            .unwrap();
    assert_eq!(
        t.fs.getxattr(dir.ino, DURABILITY_XATTR)
            .await
            .unwrap_err()
            .to_errno(),
        libc::ENODATA
    );

    // Changed again: dirty, and says what is stored.
    let o = t.fs.open(ino, libc::O_WRONLY).await.unwrap();
    t.fs.write(ino, o.fh, 0, b"new").await.unwrap();
    let d = String::from_utf8(get(DURABILITY_XATTR).await.unwrap()).unwrap();
    assert!(
        d.starts_with("dirty: changes not stored yet (stored version: "),
        "{d}"
    );
    t.fs.release(ino, o.fh).await.unwrap();
}

/// Issue 26: small files synced together share packed objects; with the cache deleted each
/// reads back bit-exact fetching only the shards under its range; a record whose range its
/// pack cannot supply is that file's EIO alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_synced_together_share_packs_and_read_back_alone() {
    let net = Net::new();
    let t = TestFs::with_remote(Config::default(), net.remote());
    let mut files = Vec::new();
    for i in 0..400u32 {
        let bytes = data(1 + (i as usize * 7919) % 4096, i);
        let ino = t.write_file(&format!("f{i}"), &bytes).await;
        files.push((ino, bytes));
    }
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        t.fs.sync_tree(InodeNo::ROOT, |_| {}),
    )
    .await
    .expect("sync timed out")
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let mut objects = std::collections::BTreeMap::new();
    for (ino, bytes) in &files {
        let Content::Stored { file, len, .. } = t.db.content(*ino).unwrap() else {
            panic!("inode {ino} not stored");
        };
        assert_eq!(len, bytes.len() as u64);
        *objects.entry(file).or_insert(0u64) += len;
    }
    // A pack per upload slot at most, each far fewer than one object per file.
    assert!(
        objects.len() <= 8,
        "{} objects for 400 files",
        objects.len()
    );
    // The metadata DB counts each pack's live ranges.
    let live = t.db.live_objects().unwrap();
    for (file, bytes) in &objects {
        let l = live.iter().find(|(f, _)| f == file).unwrap().1;
        assert_eq!(l.bytes, *bytes);
    }
    // Each file is as safe as the segments under its range: on the network here.
    let d = String::from_utf8(t.fs.getxattr(files[3].0, DURABILITY_XATTR).await.unwrap()).unwrap();
    assert!(d.starts_with("on the network: 5/5 shards"), "{d}");

    let t = t.reopen(Config::default(), net.remote(), true).await;
    for (i, (ino, bytes)) in files.iter().enumerate() {
        let before = net.fetches();
        assert_eq!(&read_all(&t, *ino, 128 << 10).await, bytes, "file {i}");
        let fetched = net.fetches() - before;
        // The data shards under the range (two when it straddles a boundary), never the pack.
        assert!(fetched <= 2, "file {i}: {fetched} fetches");
    }

    // A range that is not one member of its pack: EIO for that file, the others unharmed.
    let (victim, other) = (files[10].0, files[11].0);
    let Content::Stored {
        file,
        key,
        offset,
        len,
    } = t.db.content(victim).unwrap()
    else {
        panic!("stored");
    };
    let t = t.reopen(Config::default(), net.remote(), true).await;
    for (offset, len) in [(offset + 1, len), (offset, len + 1), (u64::MAX - 1, 1)] {
        let grow = defs_core::namespace::SetAttr::default();
        t.db.save_written(victim, &grow, defs_core::namespace::Timestamp::new(9, 0))
            .unwrap();
        let g = t.db.begin_upload(victim).unwrap();
        let bad = Content::Stored {
            file,
            key,
            offset,
            len,
        };
        assert!(t.db.finish_upload(victim, g, bad).unwrap());
        let o = t.fs.open(victim, libc::O_RDONLY).await.unwrap();
        let e = t.fs.read(victim, o.fh, 0, 4096).await.unwrap_err();
        assert_eq!(e.to_errno(), libc::EIO, "{e}");
        assert!(e.to_string().contains("content range"), "{e}");
        t.fs.release(victim, o.fh).await.unwrap();
    }
    assert_eq!(read_all(&t, other, 4096).await, files[11].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserved_snapshots_name_is_found_not_listed_not_made_and_read_only_inside() {
    let net = Net::new();
    let remote = net.remote();
    let objects = remote.objects.clone().unwrap();
    let t = TestFs::with_remote(Config::default(), remote);
    let snap = OsStr::new(snapshots::SNAPSHOTS_NAME);
    // Not turned on: an ordinary name.
    assert_eq!(
        t.fs.lookup(InodeNo::ROOT, snap)
            .await
            .unwrap_err()
            .to_errno(),
        libc::ENOENT
    );
    t.fs.enable_snapshots(&t.path().join("meta"), objects);
    let dir = t.fs.lookup(InodeNo::ROOT, snap).await.unwrap();
    assert_eq!(dir.ino, snapshots::SNAPDIR);
    assert_eq!((dir.kind, dir.perm), (FileKind::Directory, 0o555));
    // Not in the root's listing; its own lists no version yet.
    let fh = t.fs.opendir(InodeNo::ROOT).await.unwrap();
    let names: Vec<_> = t.fs.readdir(InodeNo::ROOT, fh, 0, false).await.unwrap();
    assert!(names.iter().all(|e| e.name != *snap));
    let fh = t.fs.opendir(dir.ino).await.unwrap();
    let inside = t.fs.readdir(dir.ino, fh, 0, true).await.unwrap();
    let inside: Vec<_> = inside.iter().map(|e| e.name.clone()).collect();
    assert_eq!(inside, vec![".", ".."]);
    // EEXIST to make, EPERM to remove, EROFS inside.
    let errno = |r: Result<Attr>| r.unwrap_err().to_errno();
    assert_eq!(
        errno(t.fs.mkdir(InodeNo::ROOT, snap, 0o755, OWNER).await),
        libc::EEXIST
    );
    assert_eq!(
        errno(t.fs.symlink(InodeNo::ROOT, snap, b"x", OWNER).await),
        libc::EEXIST
    );
    let e = t.fs.rmdir(InodeNo::ROOT, snap).await.unwrap_err();
    assert_eq!(e.to_errno(), libc::EPERM);
    assert_eq!(
        errno(t.fs.mkdir(dir.ino, OsStr::new("x"), 0o755, OWNER).await),
        libc::EROFS
    );
    let e =
        t.fs.setattr(dir.ino, None, SetAttr::default())
            .await
            .unwrap_err();
    assert_eq!(e.to_errno(), libc::EROFS);
    // A version that is not listed is not there.
    assert_eq!(
        t.fs.lookup(dir.ino, OsStr::new("2026-12-07T145300Z"))
            .await
            .unwrap_err()
            .to_errno(),
        libc::ENOENT
    );
}
