//! The collector over the in-memory network: an object goes only when no kept version names
//! it, every shard and manifest copy of it leaves every node, what stays reads back, and a run
//! that fails (or is dropped) after any step is finished by the next one.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::durability::Liveness;
use crate::identity::Identity;
use crate::meta::ledger::{ALIVE, PENDING};
use crate::namespace::{Content, NewInode, Timestamp};
use crate::object::{ManifestStore, MemorySource};
use crate::pipeline::LayoutConfig;
use crate::publish::{PublishConfig, Publisher};
use crate::remote::memory::MemoryClient;
use crate::remote::{BoxFuture, Holders, OutShard, ShardClient, StoredSegment};
use crate::root_record::WriterId;
use crate::types::InodeNo;

const O: NewInode = NewInode {
    perm: 0o644,
    uid: 1,
    gid: 1,
};

fn t() -> Timestamp {
    Timestamp::new(1_700_000_000, 0)
}

/// A hook run by the next store (once).
type StoreHook = Box<dyn FnOnce() + Send>;

/// A network whose deletes fail once `allowed` of them have gone through, whose stores hang
/// forever once `stores` of them have gone through (a process killed there), which runs
/// `hook` at the next store, and which remembers every shard id stored.
struct Flaky {
    inner: Arc<MemoryClient>,
    allowed: AtomicUsize,
    stores: AtomicUsize,
    hook: std::sync::Mutex<Option<StoreHook>>,
    stored_ids: std::sync::Mutex<Vec<ShardId>>,
}

impl ShardClient for Flaky {
    fn store_segment(
        &self,
        shards: Vec<OutShard>,
        parity: usize,
    ) -> BoxFuture<'_, Result<StoredSegment>> {
        Box::pin(async move {
            if let Some(hook) = self.hook.lock().unwrap().take() {
                hook();
            }
            let ok = self
                .stores
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if !ok {
                return futures::future::pending().await;
            }
            self.stored_ids
                .lock()
                .unwrap()
                .extend(shards.iter().map(|s| s.id));
            self.inner.store_segment(shards, parity).await
        })
    }
    fn fetch(&self, id: ShardId, holders: Vec<NodeId>) -> BoxFuture<'_, Result<Vec<u8>>> {
        self.inner.fetch(id, holders)
    }
    fn lookup(&self, ids: Vec<ShardId>) -> BoxFuture<'_, Result<Holders>> {
        self.inner.lookup(ids)
    }
    fn delete(&self, id: ShardId, holders: Vec<NodeId>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let ok = self
                .allowed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if !ok {
                return Err(crate::Error::Remote {
                    op: "delete",
                    shard: id,
                    reason: "injected failure".into(),
                });
            }
            self.inner.delete(id, holders).await
        })
    }
    fn storage_peers(&self) -> BoxFuture<'_, Result<usize>> {
        self.inner.storage_peers()
    }
    fn capacity(&self) -> BoxFuture<'_, Result<u64>> {
        self.inner.capacity()
    }
    fn liveness(&self) -> BoxFuture<'_, Result<Liveness>> {
        self.inner.liveness()
    }
}

struct Env {
    _dir: tempfile::TempDir,
    net: Arc<MemoryClient>,
    flaky: Arc<Flaky>,
    db: Arc<MetaDb>,
    objects: Arc<Objects>,
    publisher: Publisher,
    gc: Collector,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let identity = Arc::new(Identity::generate(0));
        let net = Arc::new(MemoryClient::new(5));
        let flaky = Arc::new(Flaky {
            inner: net.clone(),
            allowed: AtomicUsize::new(usize::MAX),
            stores: AtomicUsize::new(usize::MAX),
            hook: std::sync::Mutex::new(None),
            stored_ids: std::sync::Mutex::new(Vec::new()),
        });
        let meta = dir.path().join("meta");
        let db = Arc::new(MetaDb::open_with(&meta, None).unwrap());
        let layout = LayoutConfig {
            small_file_max: 4096,
            ..LayoutConfig::default()
        };
        let objects = Arc::new(Objects::new(
            flaky.clone(),
            identity.manifest_wrap_key(),
            layout,
            Some(ManifestStore::open(&meta.join("manifests")).unwrap()),
        ));
        let publisher = Publisher::open(
            &meta,
            db.clone(),
            objects.clone(),
            net.clone(),
            identity,
            PublishConfig {
                writer: WriterId([1; 16]),
                writer_name: "gc-test".into(),
                lease_secs: 300,
            },
        )
        .unwrap();
        let gc = Collector::new(db.clone(), objects.clone(), GcConfig::default());
        Env {
            _dir: dir,
            net,
            flaky,
            db,
            objects,
            publisher,
            gc,
        }
    }

    /// Stores `data` as `ino`'s content (an upload that wins).
    async fn upload(&self, ino: InodeNo, data: &[u8]) -> FileId {
        crate::testutil::upload(&self.db, &self.objects, ino, data).await
    }

    fn create(&self, name: &[u8]) -> InodeNo {
        self.db
            .create(InodeNo::ROOT, name, &O, true, t())
            .unwrap()
            .0
            .ino
    }

    fn delete(&self, name: &[u8], ino: InodeNo) {
        self.db.unlink(InodeNo::ROOT, name, t()).unwrap();
        self.db.purge(ino).unwrap();
    }

    async fn publish(&self) -> u64 {
        self.publisher.publish_now().await.unwrap().seq
    }

    fn row(&self, file: FileId) -> Option<LedgerRow> {
        self.db
            .ledger()
            .unwrap()
            .into_iter()
            .find(|r| r.file == file)
    }

    /// Shard ids of `file` (its manifest's shards and the manifest itself).
    async fn shard_ids(&self, file: FileId) -> Vec<ShardId> {
        crate::testutil::shard_ids(&self.objects, file).await
    }

    /// How many of `ids` some node still holds.
    async fn held(&self, ids: &[ShardId]) -> usize {
        crate::testutil::held(&self.net, ids).await
    }

    /// Reads `file` back whole through the network.
    async fn read(&self, file: FileId) -> Vec<u8> {
        let (m, key) = self.objects.open_owned(file).await.unwrap();
        self.objects
            .read_covering(file, &m, &key, 0, m.size)
            .await
            .unwrap()
            .1
    }
}

/// Makes the closed DB in `dir` look like one of schema `version`: the number written, and
/// `drop` removing the tables that version did not have.
fn as_older_schema(
    dir: &std::path::Path,
    version: u64,
    drop: impl FnOnce(&redb::WriteTransaction),
) {
    let raw = redb::Database::open(dir.join(crate::meta::DB_FILE)).unwrap();
    let txn = raw.begin_write().unwrap();
    txn.open_table(crate::meta::schema::META)
        .unwrap()
        .insert(crate::meta::schema::KEY_SCHEMA, version)
        .unwrap();
    drop(&txn);
    txn.commit().unwrap();
}

fn data(byte: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| byte ^ (i % 251) as u8).collect()
}

#[test]
fn the_rule_keeps_what_a_kept_version_names() {
    let row = |born, dead| LedgerRow {
        file: FileId([0; 32]),
        kind: ObjectKind::File,
        born,
        dead,
        mark: 0,
        shards_gone: false,
    };
    assert!(!row(1, ALIVE).collectible(&[]));
    assert!(!row(1, PENDING).collectible(&[]));
    assert!(!row(PENDING, 3).collectible(&[]));
    assert!(row(1, 3).collectible(&[3, 4]));
    assert!(!row(1, 3).collectible(&[2, 4]));
    assert!(!row(1, 3).collectible(&[1]));
    assert!(row(1, 3).collectible(&[0]));
    // Never named by any version.
    assert!(row(5, 5).collectible(&[5]));
}

#[tokio::test]
async fn a_deleted_file_goes_once_no_kept_version_names_it() {
    let env = Env::new();
    let (a, b) = (env.create(b"a"), env.create(b"b"));
    let fa = env.upload(a, &data(1, 300_000)).await;
    let fb = env.upload(b, &data(2, 5_000)).await;
    let s1 = env.publish().await;
    let ids_a = env.shard_ids(fa).await;
    assert_eq!(env.held(&ids_a).await, ids_a.len());

    env.delete(b"a", a);
    // Dead, but no publish saw it yet: nothing may go.
    assert_eq!(env.row(fa).unwrap().dead, PENDING);
    env.gc.run(&[s1]).await.unwrap();
    assert_eq!(env.held(&ids_a).await, ids_a.len());

    let s2 = env.publish().await;
    assert_eq!(env.row(fa).unwrap().dead, s2);
    // Version s1 is kept: it names a.
    let st = env.gc.run(&[s1, s2]).await.unwrap();
    assert_eq!(st.deleted_objects, 0);
    assert_eq!(st.kept_objects, 1);
    assert_eq!(env.held(&ids_a).await, ids_a.len());

    // s1 dropped from the kept set: a goes, every shard and manifest copy of it.
    let before = env.net.stored();
    let st = env.gc.run(&[s2]).await.unwrap();
    assert_eq!(st.deleted_objects, 1, "{st:?}");
    assert!(st.deleted_bytes > 300_000);
    assert_eq!(env.held(&ids_a).await, 0);
    assert!(env.net.stored() < before);
    assert!(env.row(fa).is_none());
    // b is untouched and reads back bit-exact.
    assert_eq!(env.read(fb).await, data(2, 5_000));
    assert_eq!(env.row(fb).unwrap().dead, ALIVE);
    // Nothing more to do.
    assert_eq!(env.gc.run(&[s2]).await.unwrap().pending_objects, 0);
}

#[tokio::test]
async fn an_overwritten_version_and_a_replaced_snapshot_go() {
    let env = Env::new();
    let a = env.create(b"a");
    let old = env.upload(a, &data(3, 20_000)).await;
    let s1 = env.publish().await;
    let snap1 = env
        .db
        .ledger()
        .unwrap()
        .into_iter()
        .find(|r| r.kind == ObjectKind::Snapshot)
        .unwrap();
    assert_eq!((snap1.born, snap1.dead), (s1, ALIVE));
    let new = env.upload(a, &data(4, 30_000)).await;
    let s2 = env.publish().await;
    assert_eq!(env.row(old).unwrap().dead, s2);
    let old_ids = env.shard_ids(old).await;
    env.gc.run(&[s2]).await.unwrap();
    assert_eq!(env.held(&old_ids).await, 0);
    assert_eq!(env.read(new).await, data(4, 30_000));
    // The chain of s2 is alive; an object stored for a publish that named it stays.
    for r in env.db.ledger().unwrap() {
        if r.kind != ObjectKind::File {
            assert_eq!(r.dead, ALIVE, "{r:?}");
        }
    }
}

#[tokio::test]
async fn an_upload_that_lost_its_race_is_needed_by_no_version() {
    let env = Env::new();
    let a = env.create(b"a");
    env.upload(a, &data(5, 1_000)).await;
    let s1 = env.publish().await;
    // An upload of a generation that a newer write overtook: finish_upload refuses it.
    env.db.mark_dirty(a, t()).unwrap();
    let g = env.db.begin_upload(a).unwrap();
    let stale = env
        .objects
        .put(Arc::new(MemorySource(data(6, 1_000))), 1_000, None, &|_| {})
        .await
        .unwrap();
    env.db.mark_dirty(a, t()).unwrap();
    let content = Content::Stored {
        file: stale.file,
        key: *stale.key.as_bytes(),
        offset: 0,
        len: 1_000,
    };
    assert!(!env.db.finish_upload(a, g, content).unwrap());
    env.db.note_unnamed(&[stale.file]).unwrap();
    let ids = env.shard_ids(stale.file).await;
    env.gc.run(&[s1]).await.unwrap();
    assert_eq!(env.held(&ids).await, 0);
}

#[tokio::test]
async fn a_run_that_fails_after_any_delete_is_finished_by_the_next() {
    // Fail after 0, 1, 2, … deletes: every prefix of the work, then a clean run.
    for allowed in 0..6 {
        let env = Env::new();
        let a = env.create(b"a");
        let fa = env.upload(a, &data(7, 200_000)).await;
        env.publish().await;
        let ids = env.shard_ids(fa).await;
        env.delete(b"a", a);
        let s2 = env.publish().await;
        env.flaky.allowed.store(allowed, Ordering::SeqCst);
        let st = env.gc.run(&[s2]).await.unwrap();
        if st.deleted_objects == 0 {
            assert!(!st.errors.is_empty());
            assert!(env.row(fa).is_some(), "the row goes last");
        }
        // A restart: a new collector (its memory is gone), the same ledger.
        let gc = Collector::new(env.db.clone(), env.objects.clone(), GcConfig::default());
        env.flaky.allowed.store(usize::MAX, Ordering::SeqCst);
        gc.run(&[s2]).await.unwrap();
        assert_eq!(env.held(&ids).await, 0, "allowed {allowed}");
        assert!(env.row(fa).is_none());
    }
}

#[tokio::test]
async fn a_dropped_run_is_repeated_and_loses_nothing_live() {
    let env = Env::new();
    let (a, b) = (env.create(b"a"), env.create(b"b"));
    let fa = env.upload(a, &data(8, 400_000)).await;
    let fb = env.upload(b, &data(9, 400_000)).await;
    env.publish().await;
    env.delete(b"a", a);
    let s2 = env.publish().await;
    let ids = env.shard_ids(fa).await;
    // Dropped at its first await points, several times over.
    let kept = [s2];
    for _ in 0..3 {
        let run = env.gc.run(&kept);
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), run).await;
    }
    env.gc.run(&[s2]).await.unwrap();
    assert_eq!(env.held(&ids).await, 0);
    assert_eq!(env.read(fb).await, data(9, 400_000));
}

#[tokio::test]
async fn the_ledger_survives_a_reopen_and_a_migrated_db_counts_what_lives() {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let (attr, _) = db.create(InodeNo::ROOT, b"x", &O, true, t()).unwrap();
    let g = db.begin_upload(attr.ino).unwrap();
    let f = FileId([7; 32]);
    let content = Content::Stored {
        file: f,
        key: [0; 32],
        offset: 0,
        len: 3,
    };
    assert!(db.finish_upload(attr.ino, g, content).unwrap());
    let row = db.ledger().unwrap()[0];
    assert_eq!((row.file, row.born, row.dead), (f, 1, ALIVE));
    db.close().unwrap();
    // A schema-3 DB: no ledger table.
    as_older_schema(dir.path(), 3, |txn| {
        txn.delete_table(crate::meta::schema::LEDGER).unwrap();
    });
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let rows = db.ledger().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].file, rows[0].born, rows[0].dead), (f, 0, ALIVE));
}

// Compaction (issue 26 item 2).

use crate::gc::compact::{PackCandidate, live_share, repack_due};
use crate::manifest::PackRange;
use crate::meta::live::LiveRanges;
use crate::meta::repack::PackDeath;

impl Env {
    /// Stores `files` (inode, bytes) as one pack, each file committed as a range of it.
    async fn upload_pack(&self, files: &[(InodeNo, Vec<u8>)]) -> FileId {
        let mut bytes = Vec::new();
        let mut members = Vec::new();
        let mut gens = Vec::new();
        for (ino, data) in files {
            self.db.mark_dirty(*ino, t()).unwrap();
            gens.push(self.db.begin_upload(*ino).unwrap());
            members.push(PackRange {
                offset: bytes.len() as u64,
                len: data.len() as u64,
            });
            bytes.extend_from_slice(data);
        }
        let stored = self
            .objects
            .put_pack(Arc::new(MemorySource(bytes)), members.clone(), &|_| {})
            .await
            .unwrap();
        for (((ino, _), g), m) in files.iter().zip(gens).zip(members) {
            let content = Content::Stored {
                file: stored.file,
                key: *stored.key.as_bytes(),
                offset: m.offset,
                len: m.len,
            };
            assert!(self.db.finish_upload(*ino, g, content).unwrap());
        }
        stored.file
    }

    /// `n` files named f0, f1, … of a few KiB each, packed together.
    async fn packed_files(&self, n: usize) -> (FileId, Vec<(InodeNo, Vec<u8>)>) {
        let files: Vec<(InodeNo, Vec<u8>)> = (0..n)
            .map(|i| {
                let ino = self.create(format!("f{i}").as_bytes());
                (ino, data(i as u8, 1000 + i * 37))
            })
            .collect();
        let pack = self.upload_pack(&files).await;
        (pack, files)
    }

    /// `ino`'s content read back through its manifest.
    async fn read_file(&self, ino: InodeNo) -> Vec<u8> {
        let Content::Stored {
            file, offset, len, ..
        } = self.db.getattr_content(ino)
        else {
            panic!("inode {ino} has no stored content");
        };
        let (m, key) = self.objects.open_owned(file).await.unwrap();
        m.check_range(offset, len).unwrap();
        let (start, bytes) = self
            .objects
            .read_covering(file, &m, &key, offset, len)
            .await
            .unwrap();
        let from = (offset - start) as usize;
        bytes[from..from + len as usize].to_vec()
    }

    fn content(&self, ino: InodeNo) -> Content {
        self.db.getattr_content(ino)
    }
}

impl MetaDb {
    fn getattr_content(&self, ino: InodeNo) -> Content {
        self.read(|txn| {
            let inodes =
                txn.open_table(crate::meta::schema::INODES)
                    .map_err(|e| crate::Error::Db {
                        context: "test",
                        source: Box::new(e.into()),
                    })?;
            crate::namespace::tables::load(&inodes, ino).map(|r| r.content)
        })
        .unwrap()
    }
}

fn candidate(live: u64, born: u64, dead: u64) -> PackCandidate {
    PackCandidate {
        file: FileId([1; 32]),
        live: LiveRanges {
            files: 1,
            bytes: live,
        },
        born,
        death: PackDeath { mark: 0, dead },
    }
}

#[test]
fn the_live_share_counts_dead_bytes_a_kept_version_may_name_as_live() {
    // 100 of 1000 bytes live, the member that left died at seq 5, the pack born at seq 2.
    let c = candidate(100, 2, 5);
    assert!((live_share(&c, 1000, &[5, 6]) - 0.1).abs() < 1e-9);
    assert!(repack_due(&c, 1000, &[5, 6], 0.5));
    // A kept version 2 ≤ v < 5 may name the member that left: all of it counts.
    assert_eq!(live_share(&c, 1000, &[4, 6]), 1.0);
    assert!(!repack_due(&c, 1000, &[4, 6], 0.5));
    assert_eq!(live_share(&c, 1000, &[2]), 1.0);
    // A version older than the pack names none of it.
    assert!(repack_due(&c, 1000, &[1, 5], 0.5));
    // A death no publish resolved yet: the current version may still name the member.
    assert_eq!(live_share(&candidate(100, 2, PENDING), 1000, &[7]), 1.0);
    // The threshold: 0 is off; a share at the threshold is not below it.
    assert!(!repack_due(&c, 1000, &[6], 0.0));
    assert!(!repack_due(&candidate(500, 2, 5), 1000, &[6], 0.5));
    assert!(repack_due(&candidate(499, 2, 5), 1000, &[6], 0.5));
    // Never above 1, and an empty pack is not due.
    assert_eq!(live_share(&candidate(2000, 2, 5), 1000, &[6]), 1.0);
    assert_eq!(live_share(&c, 0, &[6]), 1.0);
}

#[tokio::test]
async fn a_sparse_pack_is_repacked_the_rest_reads_back_and_the_old_pack_goes() {
    let env = Env::new();
    let (old, files) = env.packed_files(20).await;
    let s1 = env.publish().await;
    let old_ids = env.shard_ids(old).await;
    // Delete 16 of 20: about a fifth stays.
    for (i, (ino, _)) in files.iter().enumerate().skip(4) {
        env.delete(format!("f{i}").as_bytes(), *ino);
    }
    // Not published yet: the current version names the deleted files, nothing is due.
    let r = env.gc.compact(&[s1]).await.unwrap();
    assert_eq!((r.due, r.files), (0, 0), "{r:?}");
    let s2 = env.publish().await;
    // Version s1 is kept and names the deleted files: repacking would free nothing.
    let r = env.gc.compact(&[s1, s2]).await.unwrap();
    assert_eq!((r.due, r.files), (0, 0), "{r:?}");
    // Only s2 kept: repacked.
    let r = env.gc.compact(&[s2]).await.unwrap();
    assert_eq!(
        (r.due, r.files, r.new_packs, r.emptied),
        (1, 4, 1, 1),
        "{r:?}"
    );
    let new = match env.content(files[0].0) {
        Content::Stored { file, .. } => file,
        Content::Empty => panic!("no content"),
    };
    assert_ne!(new, old);
    for (ino, bytes) in &files[..4] {
        assert!(matches!(env.content(*ino), Content::Stored { file, .. } if file == new));
        assert_eq!(&env.read_file(*ino).await, bytes);
    }
    // The old pack dies with the publish of the switch and goes at the next run.
    assert_eq!(env.row(old).unwrap().dead, PENDING);
    let s3 = env.publish().await;
    assert_eq!(env.row(old).unwrap().dead, s3);
    let st = env.gc.run(&[s3]).await.unwrap();
    assert_eq!(st.deleted_objects, 1, "{st:?}");
    assert_eq!(env.held(&old_ids).await, 0);
    assert_eq!(env.row(new).unwrap().dead, ALIVE);
    // The new pack is full: nothing more to do.
    let r = env.gc.compact(&[s3]).await.unwrap();
    assert_eq!((r.due, r.files), (0, 0), "{r:?}");
    for (ino, bytes) in &files[..4] {
        assert_eq!(&env.read_file(*ino).await, bytes);
    }
}

#[tokio::test]
async fn files_rewritten_or_deleted_during_a_repack_keep_their_new_state() {
    let env = Env::new();
    let (old, files) = env.packed_files(10).await;
    for (i, (ino, _)) in files.iter().enumerate().skip(3) {
        env.delete(format!("f{i}").as_bytes(), *ino);
    }
    env.publish().await;
    let s2 = env.publish().await;
    // While the new pack is being stored: f0 is rewritten (its upload lands), f1 deleted.
    let (db, f0, f1) = (env.db.clone(), files[0].0, files[1].0);
    let rewritten = Content::Stored {
        file: FileId([9; 32]),
        key: [9; 32],
        offset: 0,
        len: 5,
    };
    let landed = rewritten.clone();
    *env.flaky.hook.lock().unwrap() = Some(Box::new(move || {
        db.mark_dirty(f0, t()).unwrap();
        let g = db.begin_upload(f0).unwrap();
        assert!(db.finish_upload(f0, g, landed).unwrap());
        db.unlink(InodeNo::ROOT, b"f1", t()).unwrap();
        db.purge(f1).unwrap();
    }));
    let r = env.gc.compact(&[s2]).await.unwrap();
    assert_eq!((r.due, r.new_packs, r.files), (1, 1, 1), "{r:?}");
    assert_eq!(env.content(f0), rewritten);
    let new = match env.content(files[2].0) {
        Content::Stored { file, .. } => file,
        Content::Empty => panic!("no content"),
    };
    assert_ne!(new, old);
    assert_eq!(env.read_file(files[2].0).await, files[2].1);
    // The old pack is named by nothing now; the new one by f2 alone, its two other members
    // (never named) dated as dead bytes.
    assert_eq!(env.row(old).unwrap().dead, PENDING);
    assert_eq!(env.row(new).unwrap().dead, ALIVE);
    let (cands, _) = env.db.pack_candidates().unwrap();
    assert!(cands.iter().any(|c| c.file == new && c.live.files == 1));
}

#[tokio::test]
async fn a_repack_whose_every_file_changed_meanwhile_is_needed_by_no_version() {
    let env = Env::new();
    let (_, more) = env.packed_files_named("g", 6).await;
    for (i, (ino, _)) in more.iter().enumerate().skip(1) {
        env.delete(format!("g{i}").as_bytes(), *ino);
    }
    env.publish().await;
    let s4 = env.publish().await;
    let (db, g0) = (env.db.clone(), more[0].0);
    *env.flaky.hook.lock().unwrap() = Some(Box::new(move || {
        db.unlink(InodeNo::ROOT, b"g0", t()).unwrap();
        db.purge(g0).unwrap();
    }));
    let before = env.flaky.stored_ids.lock().unwrap().len();
    let r = env.gc.compact(&[s4]).await.unwrap();
    assert_eq!(r.files, 0, "{r:?}");
    let copy: Vec<ShardId> = env.flaky.stored_ids.lock().unwrap()[before..].to_vec();
    assert!(!copy.is_empty());
    let s5 = env.publish().await;
    env.gc.run(&[s5]).await.unwrap();
    assert_eq!(env.held(&copy).await, 0);
}

impl Env {
    async fn packed_files_named(
        &self,
        prefix: &str,
        n: usize,
    ) -> (FileId, Vec<(InodeNo, Vec<u8>)>) {
        let files: Vec<(InodeNo, Vec<u8>)> = (0..n)
            .map(|i| {
                let ino = self.create(format!("{prefix}{i}").as_bytes());
                (ino, data(100 + i as u8, 2000 + i * 11))
            })
            .collect();
        let pack = self.upload_pack(&files).await;
        (pack, files)
    }

    /// Every shard id the ledger's objects name (their shards and manifests).
    async fn named_ids(&self) -> HashSet<ShardId> {
        let mut out = HashSet::new();
        for row in self.db.ledger().unwrap() {
            out.extend(self.shard_ids(row.file).await);
        }
        out
    }
}

#[tokio::test]
async fn a_repack_killed_at_any_store_loses_nothing_and_the_next_run_leaks_nothing() {
    // Killed (its future dropped for good) after 0, 1, 2, … stores of the new pack.
    for stores in 0..8 {
        let env = Env::new();
        let (_, files) = env.packed_files(40).await;
        for (i, (ino, _)) in files.iter().enumerate().skip(5) {
            env.delete(format!("f{i}").as_bytes(), *ino);
        }
        env.publish().await;
        let s2 = env.publish().await;
        let before_compaction = env.flaky.stored_ids.lock().unwrap().len();
        env.flaky.stores.store(stores, Ordering::SeqCst);
        let killed =
            tokio::time::timeout(std::time::Duration::from_millis(300), env.gc.compact(&[s2]))
                .await;
        env.flaky.stores.store(usize::MAX, Ordering::SeqCst);
        // A restart: a new collector, the same DB and network.
        let gc = Collector::new(env.db.clone(), env.objects.clone(), GcConfig::default());
        if killed.is_err() {
            assert_eq!(env.db.repack_intents().unwrap().len(), 1, "stores {stores}");
        }
        // Every file reads back, whichever pack it names now.
        for (ino, bytes) in &files[..5] {
            assert_eq!(&env.read_file(*ino).await, bytes, "stores {stores}");
        }
        let r = gc.compact(&[s2]).await.unwrap();
        if killed.is_err() {
            assert_eq!(r.cleared, 1, "stores {stores}: {r:?}");
        }
        assert!(env.db.repack_intents().unwrap().is_empty());
        let s3 = env.publish().await;
        gc.run(&[s3]).await.unwrap();
        for (ino, bytes) in &files[..5] {
            assert_eq!(&env.read_file(*ino).await, bytes, "stores {stores}");
        }
        // Nothing the compactions stored is left that no object of the ledger names.
        let named = env.named_ids().await;
        let stored: Vec<ShardId> =
            env.flaky.stored_ids.lock().unwrap()[before_compaction..].to_vec();
        let mut leaked = Vec::new();
        for id in stored {
            if !named.contains(&id) && env.held(&[id]).await > 0 {
                leaked.push(id);
            }
        }
        assert!(leaked.is_empty(), "stores {stores}: leaked {leaked:?}");
    }
}

#[tokio::test]
async fn a_db_at_schema_4_gains_the_compaction_tables() {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    db.close().unwrap();
    as_older_schema(dir.path(), 4, |txn| {
        txn.delete_table(crate::meta::schema::PACK_DEATHS).unwrap();
        txn.delete_table(crate::meta::schema::REPACKS).unwrap();
    });
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    assert!(db.repack_intents().unwrap().is_empty());
    assert!(db.pack_candidates().unwrap().0.is_empty());
}
