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

/// A network whose deletes fail once `allowed` of them have gone through.
struct Flaky {
    inner: Arc<MemoryClient>,
    allowed: AtomicUsize,
}

impl ShardClient for Flaky {
    fn store_segment(
        &self,
        shards: Vec<OutShard>,
        parity: usize,
    ) -> BoxFuture<'_, Result<StoredSegment>> {
        self.inner.store_segment(shards, parity)
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
    {
        let raw = redb::Database::open(dir.path().join(crate::meta::DB_FILE)).unwrap();
        let txn = raw.begin_write().unwrap();
        txn.open_table(crate::meta::schema::META)
            .unwrap()
            .insert(crate::meta::schema::KEY_SCHEMA, 3)
            .unwrap();
        txn.delete_table(crate::meta::schema::LEDGER).unwrap();
        txn.commit().unwrap();
    }
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let rows = db.ledger().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].file, rows[0].born, rows[0].dead), (f, 0, ALIVE));
}
