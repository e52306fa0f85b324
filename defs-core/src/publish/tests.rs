//! Publishing and recovery over the in-memory network: a namespace published from one data dir
//! comes back whole in another from the key alone; a publish interrupted after each step
//! resumes after a reopen; every bad input of issue 17 is refused and recovery falls back to
//! the newest record that verifies, leaving no DB behind when none does.

use std::sync::atomic::{AtomicBool, AtomicU8};

use tokio::sync::Notify;

use super::*;
use crate::durability::Liveness;
use crate::namespace::{Content, FileKind, NewInode, SetAttr, Timestamp, XattrMode};
use crate::pipeline::LayoutConfig;
use crate::remote::memory::MemoryClient;
use crate::remote::{BoxFuture, Holders, OutShard, ShardClient, StoredSegment};
use crate::snapshot::SNAPSHOT_MAGIC;
use crate::snapshot::segment;
use crate::testutil::{dump_published, rewrite};
use crate::types::{FileId, InodeNo, NodeId, ShardId};

const O: NewInode = NewInode {
    perm: 0o640,
    uid: 1000,
    gid: 100,
};

fn t() -> Timestamp {
    Timestamp::new(1_700_000_000, 5)
}

const NODES: usize = 5;

/// A shard network that can be made to stop answering stores (a put that never ends), and
/// says when a store reached it.
struct Gate {
    inner: Arc<MemoryClient>,
    hang: AtomicBool,
    reached: Notify,
}

impl Gate {
    async fn maybe_hang(&self) {
        if self.hang.load(Ordering::SeqCst) {
            self.reached.notify_one();
            futures::future::pending::<()>().await;
        }
    }
}

impl ShardClient for Gate {
    fn store_segment(
        &self,
        shards: Vec<OutShard>,
        parity: usize,
    ) -> BoxFuture<'_, Result<StoredSegment>> {
        Box::pin(async move {
            self.maybe_hang().await;
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
        self.inner.delete(id, holders)
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

/// Root places that can be made to hang before (1) or after (2) keeping a record.
struct RootGate {
    inner: Arc<MemoryClient>,
    mode: AtomicU8,
    reached: Notify,
}

impl RootStore for RootGate {
    fn put_root(&self, record: Vec<u8>) -> BoxFuture<'_, Result<usize>> {
        Box::pin(async move {
            let mode = self.mode.load(Ordering::SeqCst);
            if mode == 1 {
                self.reached.notify_one();
                futures::future::pending::<()>().await;
            }
            let copies = self.inner.put_root(record).await?;
            if mode == 2 {
                self.reached.notify_one();
                futures::future::pending::<()>().await;
            }
            Ok(copies)
        })
    }
    fn find_roots(&self, owner: NodeId) -> BoxFuture<'_, Result<Vec<Vec<u8>>>> {
        self.inner.find_roots(owner)
    }
}

/// One identity's data dir publishing to a shared in-memory network.
struct Env {
    dir: tempfile::TempDir,
    identity: Arc<Identity>,
    net: Arc<MemoryClient>,
    shards: Arc<Gate>,
    roots: Arc<RootGate>,
    db: Arc<MetaDb>,
}

impl Env {
    fn new() -> Env {
        Env::with(
            Arc::new(Identity::generate(0)),
            Arc::new(MemoryClient::new(NODES)),
        )
    }

    fn with(identity: Arc<Identity>, net: Arc<MemoryClient>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(MetaDb::open_with(&dir.path().join("meta"), None).unwrap());
        Env {
            shards: Arc::new(Gate {
                inner: net.clone(),
                hang: AtomicBool::new(false),
                reached: Notify::new(),
            }),
            roots: Arc::new(RootGate {
                inner: net.clone(),
                mode: AtomicU8::new(0),
                reached: Notify::new(),
            }),
            dir,
            identity,
            net,
            db,
        }
    }

    fn meta(&self) -> PathBuf {
        self.dir.path().join("meta")
    }

    fn objects(&self) -> Arc<Objects> {
        objects_for(&self.identity, self.shards.clone())
    }

    fn publisher(&self) -> Publisher {
        self.publisher_as(9)
    }

    /// A publisher whose writer id is `writer` repeated (another data dir's, when not 9).
    fn publisher_as(&self, writer: u8) -> Publisher {
        Publisher::open(
            &self.meta(),
            self.db.clone(),
            self.objects(),
            self.roots.clone(),
            self.identity.clone(),
            PublishConfig {
                writer: WriterId([writer; 16]),
                writer_name: format!("host-{writer}"),
                lease_secs: 300,
            },
        )
        .unwrap()
    }

    /// Closes and reopens the DB, as a restart of the mount does.
    fn reopen(&mut self) {
        let path = self.meta();
        // The old handle must be gone before the file is opened again.
        let old = std::mem::replace(
            &mut self.db,
            Arc::new(MetaDb::open_with(&self.dir.path().join("scratch"), None).unwrap()),
        );
        Arc::try_unwrap(old).unwrap().close().unwrap();
        self.db = Arc::new(MetaDb::open_with(&path, None).unwrap());
    }
}

fn objects_for(identity: &Identity, client: Arc<dyn ShardClient>) -> Arc<Objects> {
    let layout = LayoutConfig {
        small_file_max: 4096,
        ..LayoutConfig::default()
    };
    Arc::new(Objects::new(
        client,
        identity.manifest_wrap_key(),
        layout,
        None,
    ))
}

/// Marks `ino` clean with a stored content of `len` bytes.
fn store(db: &MetaDb, ino: InodeNo, byte: u8, len: u64) {
    let g = db.mark_dirty(ino, t()).unwrap();
    db.begin_upload(ino).unwrap();
    let content = Content::Stored {
        file: FileId([byte; 32]),
        key: [byte; 32],
        offset: 0,
        len,
    };
    assert!(db.finish_upload(ino, g, content).unwrap());
}

/// Every kind of entry, a hard link, an xattr, a clean file and a dirty one over stored bytes.
/// Returns the dirty file.
fn tree(db: &MetaDb) -> InodeNo {
    let d = db.mkdir(InodeNo::ROOT, b"docs", &O, t()).unwrap();
    let (f, _) = db.create(d.ino, b"a.txt", &O, true, t()).unwrap();
    store(db, f.ino, 1, 10);
    db.link(f.ino, InodeNo::ROOT, b"hard", t()).unwrap();
    db.symlink(d.ino, b"s", b"a.txt", &O, t()).unwrap();
    db.set_xattr(f.ino, b"user.k", b"value", XattrMode::Any, t())
        .unwrap();
    db.mknod(InodeNo::ROOT, b"fifo", FileKind::Fifo, 0, &O, t())
        .unwrap();
    let (g, _) = db.create(InodeNo::ROOT, b"dirty", &O, true, t()).unwrap();
    store(db, g.ino, 2, 5);
    let grow = SetAttr {
        size: Some(100),
        ..SetAttr::default()
    };
    db.setattr_dirty(g.ino, &grow, t()).unwrap();
    g.ino
}

/// Recovers `identity`'s namespace into a fresh data dir over `net`.
async fn recover_fresh(
    identity: &Identity,
    net: &Arc<MemoryClient>,
) -> (tempfile::TempDir, Result<Recovered>) {
    let dir = tempfile::tempdir().unwrap();
    let got = recover_into(&dir.path().join("meta"), identity, net).await;
    (dir, got)
}

async fn recover_into(
    meta: &Path,
    identity: &Identity,
    net: &Arc<MemoryClient>,
) -> Result<Recovered> {
    let objects = objects_for(identity, net.clone());
    recover(meta, identity, &objects, net.as_ref(), 0).await
}

fn open_recovered(dir: &tempfile::TempDir) -> MetaDb {
    MetaDb::open_with(&dir.path().join("meta"), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_namespace_recovers_whole_on_a_fresh_data_dir_from_the_key_alone() {
    let env = Env::new();
    let dirty = tree(&env.db);
    let p = env.publisher();
    assert!(p.changed().unwrap());
    let published = p.publish_now().await.unwrap();
    assert_eq!((published.seq, published.copies), (1, NODES));
    assert!(published.uploaded > 0);
    assert!(!p.changed().unwrap());
    assert_eq!(p.published_seq(), 1);

    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    let got = got.unwrap();
    assert_eq!(got.seq, 1);
    assert!(got.refused.is_empty() && got.dropped.is_empty());
    let restored = open_recovered(&dir);
    assert_eq!(dump_published(&restored), dump_published(&env.db));
    // The dirty file shows its last stored content, never bytes only the lost machine had.
    assert_eq!(restored.getattr(dirty).unwrap().size, 5);
    assert_eq!(env.db.getattr(dirty).unwrap().size, 100);
    let hard = restored.lookup(InodeNo::ROOT, b"hard").unwrap();
    assert_eq!(hard.nlink, 2);
    assert_eq!(
        restored.get_xattr(hard.ino, b"user.k").unwrap(),
        b"value".to_vec()
    );
    // The recovered dir knows what it was published as: a publisher there numbers on.
    drop(restored);
    assert_eq!(read_seen(&dir.path().join("meta")).unwrap(), 1);
    assert!(!dir.path().join("meta").join(recover::STAGING_DIR).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_namespace_resends_its_record_and_a_change_publishes_the_next_seq() {
    let env = Env::new();
    tree(&env.db);
    let p = env.publisher();
    let first = p.publish_now().await.unwrap();
    let stored = env.net.stored();
    let again = p.publish_now().await.unwrap();
    assert_eq!((again.seq, again.uploaded), (1, 0));
    assert_eq!(again.snapshot, first.snapshot);
    assert_eq!(env.net.stored(), stored, "nothing uploaded");

    env.db.mkdir(InodeNo::ROOT, b"new", &O, t()).unwrap();
    assert!(p.changed().unwrap());
    let next = p.publish_now().await.unwrap();
    assert_eq!((next.seq, next.segments), (2, 1));
    assert_eq!(next.snapshot, first.snapshot);
    assert!(next.uploaded > 0);
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 2);
    assert!(open_recovered(&dir).lookup(InodeNo::ROOT, b"new").is_ok());
}

/// What a crash leaves, for each step a publish can be interrupted after.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// During the snapshot's upload.
    Upload,
    /// After `root.next` was written, before any place kept it.
    Signed,
    /// After the places kept it, before the commit.
    Sent,
}

async fn interrupted_publish_resumes_after_a_reopen(step: Step) {
    let mut env = Env::new();
    tree(&env.db);
    {
        let p = env.publisher();
        match step {
            Step::Upload => env.shards.hang.store(true, Ordering::SeqCst),
            Step::Signed => env.roots.mode.store(1, Ordering::SeqCst),
            Step::Sent => env.roots.mode.store(2, Ordering::SeqCst),
        }
        let reached = async {
            match step {
                Step::Upload => env.shards.reached.notified().await,
                _ => env.roots.reached.notified().await,
            }
        };
        tokio::select! {
            r = p.publish_now() => panic!("{step:?}: the publish ended: {r:?}"),
            () = reached => {}
        }
        // The future is dropped here, mid-step: the process dies.
    }
    let pending = env.meta().join(ROOT_NEXT);
    let held = env.net.root_on(0, env.identity.node_id());
    match step {
        Step::Upload => assert!(!pending.exists() && held.is_none()),
        Step::Signed => assert!(pending.exists() && held.is_none()),
        Step::Sent => assert!(pending.exists() && held.is_some()),
    }
    let signed = std::fs::read(&pending).ok();
    env.shards.hang.store(false, Ordering::SeqCst);
    env.roots.mode.store(0, Ordering::SeqCst);
    env.reopen();
    let p = env.publisher();
    let published = p.publish_now().await.unwrap();
    assert_eq!(published.seq, 1, "{step:?}: no seq is skipped or reused");
    assert!(!pending.exists());
    let on_net = env.net.root_on(0, env.identity.node_id()).unwrap();
    if let Some(signed) = signed {
        // The record signed before the crash is the one sent: a seq never names two states.
        assert_eq!(on_net, signed[8..]);
    }
    assert_eq!(std::fs::read(env.meta().join(ROOT_RECORD)).unwrap(), on_net);
    assert!(!p.changed().unwrap());
    env.db.mkdir(InodeNo::ROOT, b"after", &O, t()).unwrap();
    assert_eq!(p.publish_now().await.unwrap().seq, 2);
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 2);
    assert_eq!(
        dump_published(&open_recovered(&dir)),
        dump_published(&env.db)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_dropped_during_the_upload_resumes_after_a_reopen() {
    interrupted_publish_resumes_after_a_reopen(Step::Upload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_dropped_after_signing_resends_the_same_record_after_a_reopen() {
    interrupted_publish_resumes_after_a_reopen(Step::Signed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_dropped_after_sending_commits_after_a_reopen() {
    interrupted_publish_resumes_after_a_reopen(Step::Sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_commit_before_the_rename_loses_nothing() {
    let mut env = Env::new();
    tree(&env.db);
    let rec = env.publisher().publish_now().await.unwrap();
    // The state a crash between the durable commit and the rename leaves.
    let bytes = std::fs::read(env.meta().join(ROOT_RECORD)).unwrap();
    let mut pending = env.db.lsn().unwrap().to_le_bytes().to_vec();
    pending.extend_from_slice(&bytes);
    std::fs::write(env.meta().join(ROOT_NEXT), pending).unwrap();
    env.reopen();
    let p = env.publisher();
    let again = p.publish_now().await.unwrap();
    assert_eq!((again.seq, again.uploaded), (rec.seq, 0));
    assert!(!env.meta().join(ROOT_NEXT).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_publisher_of_the_same_identity_is_refused_and_stops() {
    let a = Env::new();
    tree(&a.db);
    a.publisher().publish_now().await.unwrap();
    let b = Env::with(a.identity.clone(), a.net.clone());
    b.db.mkdir(InodeNo::ROOT, b"elsewhere", &O, t()).unwrap();
    let pb = b.publisher();
    let err = pb.publish_now().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::RootRollback {
                held: 1,
                offered: 1,
                ..
            }
        ),
        "{err}"
    );
    let again = pb.publish_now().await.unwrap_err();
    assert!(matches!(again, Error::RootRollback { .. }), "{again}");
    // The first namespace is what the network still names.
    let (dir, got) = recover_fresh(&a.identity, &a.net).await;
    assert_eq!(got.unwrap().seq, 1);
    assert!(
        open_recovered(&dir)
            .lookup(InodeNo::ROOT, b"elsewhere")
            .is_err()
    );
}

// ---- bad input: every case refused, recovery falls back to the newest record that verifies ----

/// A published namespace (seq 1) and its snapshot's plaintext.
async fn published() -> (Env, Vec<u8>) {
    let env = Env::new();
    tree(&env.db);
    env.publisher().publish_now().await.unwrap();
    let mut snap = Vec::new();
    env.db.write_snapshot(&mut snap).unwrap();
    (env, snap)
}

/// The holders that keep the older record in the bad-input tests.
const STALE: [usize; 2] = [3, 4];

/// Stores `plain` as an object and signs record `seq` naming it with length `len` and the
/// trailer `plain` ends with: what a broken or hostile writer holding the key could publish.
async fn publish_object(env: &Env, seq: u64, plain: Vec<u8>, len: u64) -> Vec<u8> {
    let trailer: [u8; 32] = plain[plain.len() - 32..].try_into().unwrap();
    let size = plain.len() as u64;
    let stored = env
        .objects()
        .put(Arc::new(MemSource(plain)), size, None, &|_| {})
        .await
        .unwrap();
    let body = RootBody {
        writer: WriterId([9; 16]),
        lease_secs: 300,
        writer_name: "test-host".into(),
        snapshot: ObjectRef {
            file: stored.file,
            len,
            trailer,
        },
        segments: Vec::new(),
        versions: None,
        kept: false,
    };
    let rec = RootRecord::sign(&env.identity, seq, now_ms(), &body).unwrap();
    // Two holders miss the new record and keep the one before it (stale, not lost).
    for i in STALE {
        env.net.set_up(i, false);
    }
    env.net.put_root(rec.as_bytes().to_vec()).await.unwrap();
    for i in STALE {
        env.net.set_up(i, true);
    }
    rec.into_bytes()
}

/// Recovery over `env`'s network refuses seq 2 (naming `why`) and loads seq 1 whole.
async fn falls_back_to_seq_1(env: &Env, why: &str) {
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    let got = got.unwrap();
    assert_eq!(got.seq, 1);
    assert_eq!(got.refused.len(), 1, "{:?}", got.refused);
    assert_eq!(got.refused[0].seq, Some(2));
    assert!(got.refused[0].reason.contains(why), "{:?}", got.refused);
    assert_eq!(
        dump_published(&open_recovered(&dir)),
        dump_published(&env.db)
    );
    // The newest seq that verified is remembered: a publisher here numbers above it.
    assert_eq!(read_seen(&dir.path().join("meta")).unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_snapshot_is_refused_and_recovery_falls_back() {
    let (env, snap) = published().await;
    let cut = snap[..snap.len() - 40].to_vec();
    let len = cut.len() as u64;
    publish_object(&env, 2, cut, len).await;
    falls_back_to_seq_1(&env, "namespace snapshot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_shorter_than_its_record_says_is_refused() {
    let (env, snap) = published().await;
    let len = snap.len() as u64 + 1;
    publish_object(&env, 2, snap, len).await;
    falls_back_to_seq_1(&env, "its record says").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flipped_snapshot_is_refused_and_recovery_falls_back() {
    let (env, mut snap) = published().await;
    let mid = snap.len() / 2;
    snap[mid] ^= 0x10;
    let len = snap.len() as u64;
    publish_object(&env, 2, snap, len).await;
    falls_back_to_seq_1(&env, "hash mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_naming_an_inode_twice_is_refused_and_recovery_falls_back() {
    let (env, snap) = published().await;
    assert_eq!(snap[..8], SNAPSHOT_MAGIC);
    let mut twice = false;
    let bad = rewrite(&snap, |rec| {
        let mut out = rec.to_vec();
        if rec[0] == 1 && !twice {
            twice = true;
            out.extend_from_slice(rec);
        }
        if rec[0] == 0xFF {
            // The end record counts it: only the repetition is wrong.
            let inodes = u64::from_le_bytes(rec[5..13].try_into().unwrap()) + 1;
            out[5..13].copy_from_slice(&inodes.to_le_bytes());
        }
        Some(out)
    });
    let len = bad.len() as u64;
    publish_object(&env, 2, bad, len).await;
    falls_back_to_seq_1(&env, "out of order").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_a_cycle_of_directories_is_refused_and_recovery_falls_back() {
    let (env, _) = published().await;
    // root → a → b; then a moved under b by rewriting the records consistently (names, parent
    // pointers, sizes, link counts): only the walk to the root can see the cycle.
    let db = MetaDb::open_with(&env.dir.path().join("cycle"), None).unwrap();
    let a = db.mkdir(InodeNo::ROOT, b"a", &O, t()).unwrap().ino;
    let b = db.mkdir(a, b"b", &O, t()).unwrap().ino;
    let mut snap = Vec::new();
    db.write_snapshot(&mut snap).unwrap();
    let mut moved = None;
    let bad = rewrite(&snap, |rec| {
        let mut out = rec.to_vec();
        match rec[0] {
            1 => {
                let ino = u64::from_le_bytes(rec[5..13].try_into().unwrap());
                let mut r = crate::namespace::record::Reader::new(&rec[13..], "test");
                let mut ir = crate::namespace::record::InodeRecord::decode_body(&mut r).unwrap();
                if ino == InodeNo::ROOT.0 {
                    ir.size = 0;
                    ir.nlink = 2;
                } else if ino == a.0 {
                    ir.parent = b.0;
                } else if ino == b.0 {
                    ir.size = 1;
                    ir.nlink = 3;
                    ir.next_cookie = 2;
                }
                out.truncate(13);
                ir.encode_body(&mut out);
                let len = (out.len() - 5) as u32;
                out[1..5].copy_from_slice(&len.to_le_bytes());
            }
            2 => {
                // The dirent (root, "a") becomes (b, "a"); dirents stay sorted by (parent,
                // name), so it goes after (a, "b").
                let parent = u64::from_le_bytes(rec[5..13].try_into().unwrap());
                if parent == InodeNo::ROOT.0 {
                    out[5..13].copy_from_slice(&b.0.to_le_bytes());
                    moved = Some(out);
                    return None;
                }
                out.extend(moved.take().unwrap());
            }
            _ => {}
        }
        Some(out)
    });
    let len = bad.len() as u64;
    publish_object(&env, 2, bad, len).await;
    falls_back_to_seq_1(&env, "cycle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_records_are_dropped_with_their_reason() {
    let (env, _) = published().await;
    let owner = env.identity.node_id();
    let good = env.net.root_on(0, owner).unwrap();
    // A forged seq: the header says 9, the signature was made over 1.
    let mut forged = good.clone();
    forged[43] = 9;
    env.net.plant_root(0, owner, forged);
    // Another owner's perfectly valid record, offered for this owner.
    let other = Env::with(Arc::new(Identity::generate(0)), env.net.clone());
    tree(&other.db);
    other.publisher().publish_now().await.unwrap();
    let foreign = env.net.root_on(1, other.identity.node_id()).unwrap();
    env.net.plant_root(1, owner, foreign);
    // Garbage.
    env.net.plant_root(2, owner, b"DEFSROOT garbage".to_vec());
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    let got = got.unwrap();
    assert_eq!(got.seq, 1);
    assert!(got.refused.is_empty());
    let reasons: Vec<&str> = got.dropped.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("signature")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("another owner")),
        "{reasons:?}"
    );
    assert_eq!(
        dump_published(&open_recovered(&dir)),
        dump_published(&env.db)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_older_record_is_refused_below_the_seq_seen_here() {
    let (env, _) = published().await;
    let owner = env.identity.node_id();
    let seq1 = env.net.root_on(0, owner).unwrap();
    env.db.mkdir(InodeNo::ROOT, b"second", &O, t()).unwrap();
    env.publisher().publish_now().await.unwrap();
    // This dir once saw seq 2; every peer now replays seq 1.
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    raise_seen(&meta, 2).unwrap();
    for i in 0..NODES {
        env.net.plant_root(i, owner, seq1.clone());
    }
    let err = recover_into(&meta, &env.identity, &env.net)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoNamespace { .. }), "{err}");
    assert!(err.to_string().contains("rollback"), "{err}");
    assert!(
        !meta.join(crate::meta::DB_FILE).exists(),
        "no DB is left behind"
    );
    assert!(!meta.join(recover::STAGING_DIR).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_that_loads_leaves_no_db_and_says_why() {
    let env = Env::new();
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    let err = got.unwrap_err();
    assert!(err.to_string().contains("no peer holds"), "{err}");
    assert!(!dir.path().join("meta").join(crate::meta::DB_FILE).exists());

    let mut snap = Vec::new();
    env.db.write_snapshot(&mut snap).unwrap();
    snap[30] ^= 1;
    let len = snap.len() as u64;
    publish_object(&env, 1, snap, len).await;
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    let err = got.unwrap_err();
    assert!(err.to_string().contains("seq 1"), "{err}");
    assert!(!dir.path().join("meta").join(crate::meta::DB_FILE).exists());
    assert!(!dir.path().join("meta").join(recover::STAGING_DIR).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_never_touches_an_existing_db() {
    let (env, _) = published().await;
    let objects = env.objects();
    let err = recover(&env.meta(), &env.identity, &objects, env.net.as_ref(), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
}

#[test]
fn a_damaged_pending_record_is_an_error_not_a_fresh_start() {
    let env = Env::new();
    std::fs::write(env.meta().join(ROOT_NEXT), b"12345678 not a record").unwrap();
    let err = Publisher::open(
        &env.meta(),
        env.db.clone(),
        objects_for(&env.identity, env.net.clone()),
        env.net.clone(),
        env.identity.clone(),
        PublishConfig {
            writer: WriterId::default(),
            writer_name: String::new(),
            lease_secs: 300,
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadRootRecord { .. }), "{err}");
}

// ---- incremental segments ----------------------------------------------------------------------

/// `n` files spread over 20 directories.
fn many_files(db: &MetaDb, n: usize) -> Vec<InodeNo> {
    let dirs: Vec<InodeNo> = (0..20)
        .map(|d| {
            db.mkdir(InodeNo::ROOT, format!("dir-{d}").as_bytes(), &O, t())
                .unwrap()
                .ino
        })
        .collect();
    (0..n)
        .map(|f| {
            let (a, _) = db
                .create(
                    dirs[f % 20],
                    format!("file-{f:05}.txt").as_bytes(),
                    &O,
                    true,
                    t(),
                )
                .unwrap();
            store(db, a.ino, (f % 251) as u8, 1000 + f as u64);
            a.ino
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_file_change_publishes_a_segment_under_64_kib_and_recovers() {
    let env = Env::new();
    let files = many_files(&env.db, 2000);
    let p = env.publisher();
    let full = p.publish_now().await.unwrap();
    assert_eq!(full.segments, 0);
    // One file rewritten and stored again (a new content, size and mtime).
    store(&env.db, files[1234], 7, 4321);
    let one = p.publish_now().await.unwrap();
    assert_eq!((one.seq, one.segments), (2, 1));
    assert_eq!(
        one.snapshot, full.snapshot,
        "the snapshot is not uploaded again"
    );
    // The measured segment: the target is 64 KiB on the wire before RS.
    assert!(
        one.uploaded < 1024,
        "{} bytes published for one changed file (snapshot {} bytes)",
        one.uploaded,
        full.uploaded
    );
    eprintln!(
        "one-file change: segment {} bytes; full snapshot {} bytes",
        one.uploaded, full.uploaded
    );
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 2);
    let restored = open_recovered(&dir);
    assert_eq!(dump_published(&restored), dump_published(&env.db));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_64_segments_the_next_publish_is_a_full_snapshot() {
    let env = Env::new();
    tree(&env.db);
    let p = env.publisher();
    p.publish_now().await.unwrap();
    for i in 0..segment::MAX_CHAIN {
        env.db
            .mkdir(InodeNo::ROOT, format!("d{i}").as_bytes(), &O, t())
            .unwrap();
        let got = p.publish_now().await.unwrap();
        assert_eq!(got.segments, i + 1);
    }
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 65);
    assert_eq!(
        dump_published(&open_recovered(&dir)),
        dump_published(&env.db)
    );
    env.db.mkdir(InodeNo::ROOT, b"last", &O, t()).unwrap();
    let compacted = p.publish_now().await.unwrap();
    assert_eq!(compacted.segments, 0);
    assert!(compacted.uploaded > 1000);
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 66);
    assert_eq!(
        dump_published(&open_recovered(&dir)),
        dump_published(&env.db)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_past_a_quarter_of_the_snapshot_are_compacted() {
    let env = Env::new();
    let files = many_files(&env.db, 100);
    let big = vec![0x5a; 60 * 1024];
    for f in &files {
        env.db
            .set_xattr(*f, b"user.big", &big, XattrMode::Any, t())
            .unwrap();
    }
    let p = env.publisher();
    let mut snapshot = p.publish_now().await.unwrap().uploaded;
    assert!(snapshot > 4 * COMPACT_MIN_BYTES, "{snapshot}");
    let (mut chained, mut compactions) = (0u64, 0);
    for round in 0..8u8 {
        for f in &files[usize::from(round) * 8..usize::from(round) * 8 + 8] {
            let value = vec![round; 60 * 1024];
            env.db
                .set_xattr(*f, b"user.big", &value, XattrMode::Any, t())
                .unwrap();
        }
        let got = p.publish_now().await.unwrap();
        if got.segments == 0 {
            compactions += 1;
            snapshot = got.uploaded;
            chained = 0;
        } else {
            chained += got.uploaded;
        }
        // The bound: segments never outgrow a quarter of their snapshot (or 1 MiB).
        assert!(chained <= COMPACT_MIN_BYTES.max(snapshot / COMPACT_RATIO));
    }
    assert!((1..8).contains(&compactions), "{compactions}");
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    got.unwrap();
    assert_eq!(
        dump_published(&open_recovered(&dir)),
        dump_published(&env.db)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_segment_makes_recovery_fall_back_to_the_record_before() {
    let env = Env::new();
    tree(&env.db);
    let p = env.publisher();
    p.publish_now().await.unwrap();
    let seq1 = dump_published(&env.db);
    env.db.mkdir(InodeNo::ROOT, b"later", &O, t()).unwrap();
    for i in STALE {
        env.net.set_up(i, false);
    }
    p.publish_now().await.unwrap();
    for i in STALE {
        env.net.set_up(i, true);
    }
    // The segment's manifest is lost from every node: that state cannot be read.
    let (_, body) = read_record(&env.meta().join(ROOT_RECORD), &env.identity)
        .unwrap()
        .unwrap();
    let seg = body.segments[0].file;
    let everyone: Vec<NodeId> = (0..NODES).map(|i| env.net.node(i)).collect();
    env.net.delete(ShardId(seg.0), everyone).await.unwrap();
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    let got = got.unwrap();
    assert_eq!(got.seq, 1);
    assert_eq!(got.refused.len(), 1, "{:?}", got.refused);
    assert_eq!(dump_published(&open_recovered(&dir)), seq1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_data_dir_publishes_segments_on_the_chain_it_recovered() {
    let a = Env::new();
    tree(&a.db);
    let pa = a.publisher();
    pa.publish_now().await.unwrap();
    a.db.mkdir(InodeNo::ROOT, b"from-a", &O, t()).unwrap();
    assert_eq!(pa.publish_now().await.unwrap().segments, 1);

    // Machine A is lost; B has only the key.
    let mut b = Env::with(a.identity.clone(), a.net.clone());
    let meta = b.meta();
    let scratch = std::mem::replace(
        &mut b.db,
        Arc::new(MetaDb::open_with(&b.dir.path().join("scratch"), None).unwrap()),
    );
    drop(scratch);
    std::fs::remove_dir_all(&meta).unwrap();
    assert_eq!(
        recover_into(&meta, &b.identity, &b.net).await.unwrap().seq,
        2
    );
    b.db = Arc::new(MetaDb::open_with(&meta, None).unwrap());
    let pb = b.publisher();
    assert!(!pb.changed().unwrap());
    let same = pb.publish_now().await.unwrap();
    assert_eq!((same.seq, same.uploaded), (2, 0));
    b.db.mkdir(InodeNo::ROOT, b"from-b", &O, t()).unwrap();
    let next = pb.publish_now().await.unwrap();
    assert_eq!((next.seq, next.segments), (3, 2));
    assert!(next.uploaded < 1024, "{}", next.uploaded);
    let (dir, got) = recover_fresh(&a.identity, &a.net).await;
    assert_eq!(got.unwrap().seq, 3);
    let c = open_recovered(&dir);
    assert_eq!(dump_published(&c), dump_published(&b.db));
    assert!(c.lookup(InodeNo::ROOT, b"from-a").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_written_only_to_the_cache_publish_no_new_record() {
    let env = Env::new();
    let dirty = tree(&env.db);
    let p = env.publisher();
    p.publish_now().await.unwrap();
    let grow = SetAttr {
        size: Some(4096),
        ..SetAttr::default()
    };
    env.db.save_written(dirty, &grow, t()).unwrap();
    assert!(p.changed().unwrap());
    let again = p.publish_now().await.unwrap();
    assert_eq!((again.seq, again.uploaded), (1, 0));
    assert!(!p.changed().unwrap());
    // Once the bytes are stored, the new size is published.
    store(&env.db, dirty, 3, 4096);
    let next = p.publish_now().await.unwrap();
    assert_eq!((next.seq, next.segments), (2, 1));
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    got.unwrap();
    assert_eq!(open_recovered(&dir).getattr(dirty).unwrap().size, 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_naming_a_chain_with_a_segment_missing_from_the_middle_is_refused() {
    let env = Env::new();
    tree(&env.db);
    let p = env.publisher();
    p.publish_now().await.unwrap();
    for name in [&b"one"[..], b"two", b"three"] {
        env.db.mkdir(InodeNo::ROOT, name, &O, t()).unwrap();
        p.publish_now().await.unwrap();
    }
    let (_, body) = read_record(&env.meta().join(ROOT_RECORD), &env.identity)
        .unwrap()
        .unwrap();
    assert_eq!(body.segments.len(), 3);
    // The owner's key signs a record whose chain lacks segment 2.
    let mut holed = body.clone();
    holed.segments.remove(1);
    let rec = RootRecord::sign(&env.identity, 5, now_ms(), &holed).unwrap();
    for i in STALE {
        env.net.set_up(i, false);
    }
    env.net.put_root(rec.into_bytes()).await.unwrap();
    for i in STALE {
        env.net.set_up(i, true);
    }
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    let got = got.unwrap();
    assert_eq!(got.seq, 4);
    assert_eq!(got.refused.len(), 1);
    assert!(
        got.refused[0].reason.contains("missing"),
        "{:?}",
        got.refused
    );
    assert_eq!(
        dump_published(&open_recovered(&dir)),
        dump_published(&env.db)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_publishes_lease_0_and_the_next_publish_takes_the_lease_again_without_upload() {
    let env = Env::new();
    tree(&env.db);
    let p = env.publisher();
    p.publish_now().await.unwrap();
    let released = p.release().await.unwrap();
    assert_eq!((released.seq, released.uploaded), (2, 0));
    let lease = |env: &Env| {
        read_record(&env.meta().join(ROOT_RECORD), &env.identity)
            .unwrap()
            .unwrap()
            .1
            .lease_secs
    };
    assert_eq!(lease(&env), 0);
    // Released twice: nothing new.
    assert_eq!(p.release().await.unwrap().seq, 2);
    let taken = p.publish_now().await.unwrap();
    assert_eq!((taken.seq, taken.uploaded), (3, 0));
    assert_eq!(lease(&env), 300);
    // The renewals kept the chain's local state: the next change is a segment.
    env.db.mkdir(InodeNo::ROOT, b"after", &O, t()).unwrap();
    let next = p.publish_now().await.unwrap();
    assert_eq!((next.seq, next.segments), (4, 1));
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 4);
    assert_eq!(
        dump_published(&open_recovered(&dir)),
        dump_published(&env.db)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redo_log_left_without_its_db_is_moved_aside_not_replayed() {
    let (env, _) = published().await;
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    // What a lost DB leaves when only meta.redb was deleted: its log, of no use now.
    std::fs::write(meta.join(crate::meta::LOG_FILE), b"a log of another DB").unwrap();
    recover_into(&meta, &env.identity, &env.net).await.unwrap();
    let orphaned = meta.join(format!("{}.orphaned", crate::meta::LOG_FILE));
    assert_eq!(std::fs::read(orphaned).unwrap(), b"a log of another DB");
    let restored = MetaDb::open_with(&meta, None).unwrap();
    assert_eq!(dump_published(&restored), dump_published(&env.db));
}

mod kept;
mod writers;
// ---- one writer, read-only followers (docs/namespace-publishing.md §5) ----

/// A second data dir of `a`'s identity, recovered from the network, and its follower.
async fn follower_of(a: &Env) -> (tempfile::TempDir, Arc<MetaDb>, Follower) {
    let (dir, got) = recover_fresh(&a.identity, &a.net).await;
    got.unwrap();
    let db = Arc::new(open_recovered(&dir));
    let follower = Follower::new(
        &dir.path().join("meta"),
        db.clone(),
        objects_for(&a.identity, a.net.clone()),
        a.net.clone(),
        a.identity.clone(),
        0,
    );
    (dir, db, follower)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_applies_segments_renewals_and_new_snapshots_and_says_what_changed() {
    let a = Env::new();
    tree(&a.db);
    let p = a.publisher();
    p.publish_now().await.unwrap();
    let (dir, db, f) = follower_of(&a).await;
    assert!(f.poll().await.unwrap().is_none(), "nothing newer");
    assert!(!f.local_changes().unwrap());

    // A new directory with a file: one segment; the follower applies it.
    let d = a.db.mkdir(InodeNo::ROOT, b"new", &O, t()).unwrap();
    let (file, _) = a.db.create(d.ino, b"f", &O, true, t()).unwrap();
    store(&a.db, file.ino, 7, 3);
    assert_eq!(p.publish_now().await.unwrap().segments, 1);
    let got = f.poll().await.unwrap().unwrap();
    assert_eq!((got.seq, got.writer_name.as_str()), (2, "host-9"));
    assert_eq!(dump_published(&db), dump_published(&a.db));
    assert!(got.changes.contains(&segment::Changed::Dirent {
        parent: InodeNo::ROOT.0,
        name: b"new".to_vec()
    }));
    assert!(got.changes.contains(&segment::Changed::Inode {
        ino: file.ino.0,
        content: true,
        gone: false
    }));
    assert!(
        !f.local_changes().unwrap(),
        "an applied state is no local change"
    );

    // New content for the file, and a chmod elsewhere: only the file's content is stale.
    store(&a.db, file.ino, 8, 4);
    let chmod = SetAttr {
        perm: Some(0o600),
        ..SetAttr::default()
    };
    a.db.setattr(d.ino, &chmod, t()).unwrap();
    p.publish_now().await.unwrap();
    let got = f.poll().await.unwrap().unwrap();
    assert!(got.changes.contains(&segment::Changed::Inode {
        ino: file.ino.0,
        content: true,
        gone: false
    }));
    assert!(got.changes.contains(&segment::Changed::Inode {
        ino: d.ino.0,
        content: false,
        gone: false
    }));
    assert_eq!(dump_published(&db), dump_published(&a.db));

    // A lease renewal names the same namespace: a record, no object, nothing changes.
    let stored = a.net.stored();
    let renewed = p.renew().await.unwrap();
    assert_eq!((renewed.seq, renewed.uploaded), (4, 0));
    assert_eq!(a.net.stored(), stored, "a renewal stores no object");
    let got = f.poll().await.unwrap().unwrap();
    assert_eq!(got.seq, 4);
    assert!(got.changes.is_empty());

    // Without its local state the follower fetches the whole chain again; a removal shows.
    a.db.unlink(d.ino, b"f", t()).unwrap();
    p.publish_now().await.unwrap();
    let meta = dir.path().join("meta");
    std::fs::remove_file(meta.join(files::state_file(4))).unwrap();
    let got = f.poll().await.unwrap().unwrap();
    assert_eq!(got.seq, 5);
    assert!(got.changes.contains(&segment::Changed::Inode {
        ino: file.ino.0,
        content: true,
        gone: true
    }));
    assert_eq!(dump_published(&db), dump_published(&a.db));
    assert!(meta.join(files::state_file(5)).exists());
    assert!(!meta.join(follow::FOLLOW_DIR).exists());
    assert_eq!(read_seen(&meta).unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_never_overwrites_changes_that_were_not_published() {
    let a = Env::new();
    tree(&a.db);
    let p = a.publisher();
    p.publish_now().await.unwrap();
    let (_dir, db, f) = follower_of(&a).await;
    db.mkdir(InodeNo::ROOT, b"only-here", &O, t()).unwrap();
    assert!(f.local_changes().unwrap());
    a.db.mkdir(InodeNo::ROOT, b"there", &O, t()).unwrap();
    p.publish_now().await.unwrap();
    let err = f.poll().await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(db.lookup(InodeNo::ROOT, b"only-here").is_ok());
    assert!(db.lookup(InodeNo::ROOT, b"there").is_err());
    assert_eq!(f.local_seq().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_claims_the_lease_with_a_record_and_the_old_writer_stops() {
    let a = Env::new();
    tree(&a.db);
    let pa = a.publisher();
    pa.publish_now().await.unwrap();
    assert!(pa.holds_newest().await.unwrap());
    let (dir, db, f) = follower_of(&a).await;
    let newest = f.newest().await.unwrap().unwrap();
    assert_eq!(
        Lease::of(Some((&newest.0, &newest.1)), WriterId([3; 16])),
        Lease::Held {
            seq: 1,
            writer_name: "host-9".into(),
            lease_secs: 300
        }
    );
    // B takes over (as --force does once the lease ran out): its claim is a record only.
    let pb = Publisher::open(
        &dir.path().join("meta"),
        db.clone(),
        objects_for(&a.identity, a.net.clone()),
        a.net.clone(),
        a.identity.clone(),
        PublishConfig {
            writer: WriterId([3; 16]),
            writer_name: "host-3".into(),
            lease_secs: 300,
        },
    )
    .unwrap();
    let stored = a.net.stored();
    let claim = pb.renew().await.unwrap();
    assert_eq!((claim.seq, claim.uploaded), (2, 0));
    assert_eq!(a.net.stored(), stored);
    assert!(pb.holds_newest().await.unwrap());
    assert!(!pa.holds_newest().await.unwrap(), "A is behind now");
    // A's next publish finds B's record: A stops, and never holds the lease again.
    a.db.mkdir(InodeNo::ROOT, b"late", &O, t()).unwrap();
    let err = pa.publish_now().await.unwrap_err();
    assert!(matches!(err, Error::RootRollback { .. }), "{err}");
    assert!(!pa.holds_newest().await.unwrap());
    // B writes on; a fresh recovery sees B's namespace without A's late change.
    db.mkdir(InodeNo::ROOT, b"by-b", &O, t()).unwrap();
    assert_eq!(pb.publish_now().await.unwrap().seq, 3);
    let (fresh, got) = recover_fresh(&a.identity, &a.net).await;
    assert_eq!(got.unwrap().seq, 3);
    let r = open_recovered(&fresh);
    assert!(r.lookup(InodeNo::ROOT, b"by-b").is_ok());
    assert!(r.lookup(InodeNo::ROOT, b"late").is_err());
}
