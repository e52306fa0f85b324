//! Kept versions through the publisher: which states a publish keeps, the versions object a
//! record names, what a recovered data dir knows of them, and that a kept version restores
//! into a DB of its own with its own contents.

use super::*;
use crate::publish::versions::{self, Retention};

/// `n` more files in a new directory `name`, each stored with content byte `byte`.
fn change(db: &MetaDb, name: &[u8], n: usize, byte: u8) {
    let d = db.mkdir(InodeNo::ROOT, name, &O, t()).unwrap();
    for i in 0..n {
        let (f, _) = db
            .create(d.ino, format!("f{i}").as_bytes(), &O, true, t())
            .unwrap();
        store(db, f.ino, byte, 100 + i as u64);
    }
}

fn local_seqs(meta: &Path) -> Vec<u64> {
    let (_, list) = versions::read_local(meta).unwrap().unwrap();
    list.iter().map(|v| v.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_keep_versions_that_a_recovered_dir_lists_and_restores_with_their_own_contents() {
    let env = Env::new();
    tree(&env.db);
    let p = env.publisher();
    let first = p.publish_sync().await.unwrap();
    assert_eq!(first.seq, 1);
    let old = dump_published(&env.db);
    assert_eq!(local_seqs(&env.meta()), vec![1]);

    change(&env.db, b"more", 10, 7);
    // A debounced publish within the hour of the first: not kept.
    let mid = p.publish_now().await.unwrap();
    assert_eq!(mid.seq, 2);
    assert_eq!(local_seqs(&env.meta()), vec![1]);
    // `defs sync` with nothing changed since: the same state, now kept, under a new seq.
    let synced = p.publish_sync().await.unwrap();
    assert_eq!(
        (synced.seq, synced.uploaded > 0),
        (3, true),
        "only the versions object"
    );
    assert_eq!(synced.snapshot, mid.snapshot);
    assert_eq!(local_seqs(&env.meta()), vec![1, 3]);
    // Kept already: another sync re-sends the record.
    assert_eq!(p.publish_sync().await.unwrap().seq, 3);
    assert_eq!(p.kept_seqs().await.unwrap(), vec![1, 3]);

    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 3);
    let meta = dir.path().join("meta");
    assert_eq!(local_seqs(&meta), vec![1, 3]);
    let (_, list) = versions::read_local(&meta).unwrap().unwrap();
    let objects = objects_for(&env.identity, env.net.clone());
    let v1 = versions::restore(&meta, &objects, &list[0]).await.unwrap();
    let db1 = versions::open_restored(&v1).unwrap();
    assert_eq!(
        dump_published(&db1),
        old,
        "version 1 is the state synced first"
    );
    assert!(db1.lookup(InodeNo::ROOT, b"more").is_err());
    let v3 = versions::restore(&meta, &objects, &list[1]).await.unwrap();
    let db3 = versions::open_restored(&v3).unwrap();
    assert_eq!(dump_published(&db3), dump_published(&env.db));
    // Restored once: the next restore reuses the DB.
    assert_eq!(
        versions::restore(&meta, &objects, &list[0]).await.unwrap(),
        v1
    );
    drop((db1, db3));
    versions::remove_restored_but(&meta, &[3]);
    assert!(!v1.exists() && v3.exists());

    // The recovered dir's publisher knows the kept versions and numbers on.
    let mut env2 = Env::with(env.identity.clone(), env.net.clone());
    env2.dir = dir;
    env2.reopen();
    let p2 = env2.publisher();
    assert_eq!(p2.kept_seqs().await.unwrap(), vec![1, 3]);
    change(&env2.db, b"later", 1, 9);
    let next = p2.publish_sync().await.unwrap();
    assert_eq!(next.seq, 4);
    assert_eq!(p2.kept_seqs().await.unwrap(), vec![1, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_the_oldest_past_keep_versions() {
    let env = Env::new();
    tree(&env.db);
    let retention = Retention {
        keep_versions: 2,
        ..Retention::default()
    };
    let p = env.publisher().with_retention(retention);
    for i in 0..4u8 {
        change(&env.db, format!("d{i}").as_bytes(), 1, i);
        p.publish_sync().await.unwrap();
    }
    assert_eq!(local_seqs(&env.meta()), vec![3, 4]);
    assert_eq!(p.kept_seqs().await.unwrap(), vec![3, 4]);
    // A publish that keeps nothing new still names the list.
    change(&env.db, b"quiet", 1, 5);
    let q = p.publish_now().await.unwrap();
    assert_eq!(p.kept_seqs().await.unwrap(), vec![3, 4, q.seq]);
    assert_eq!(local_seqs(&env.meta()), vec![3, 4]);
}

/// Signs record `seq` naming the last record's chain and versions object `versions`.
async fn record_with_versions(env: &Env, seq: u64, versions: Option<FileId>) {
    let bytes = std::fs::read(env.meta().join(ROOT_RECORD)).unwrap();
    let last = RootRecord::verify(&bytes, 0).unwrap();
    let mut body = last.open_body(&env.identity).unwrap();
    body.versions = versions;
    let rec = RootRecord::sign(&env.identity, seq, now_ms(), &body).unwrap();
    env.net.put_root(rec.into_bytes()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_mounts_the_tree_when_the_versions_object_is_foreign_or_damaged() {
    let env = Env::new();
    tree(&env.db);
    env.publisher().publish_sync().await.unwrap();

    // Another owner's versions object, on the same network.
    let other = Env::with(Arc::new(Identity::generate(0)), env.net.clone());
    let list = vec![versions::Version {
        seq: 1,
        time_ms: 5,
        snapshot: ObjectRef {
            file: FileId([1; 32]),
            len: 1,
            trailer: [0; 32],
        },
        segments: vec![],
    }];
    let (foreign, _) = versions::store(&other.objects(), &list).await.unwrap();
    let err = versions::fetch(&env.objects(), foreign).await.unwrap_err();
    assert!(!err.to_string().is_empty());
    record_with_versions(&env, 2, Some(foreign)).await;
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 2, "the tree mounts without its versions");
    assert!(
        versions::read_local(&dir.path().join("meta"))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        dump_published(&open_recovered(&dir)),
        dump_published(&env.db)
    );

    // A truncated versions object of this owner: refused when fetched, clearly.
    let plain = versions::encode(&list).unwrap();
    let cut = plain[..plain.len() - 1].to_vec();
    let size = cut.len() as u64;
    let stored = env
        .objects()
        .put(Arc::new(MemSource(cut)), size, None, &|_| {})
        .await
        .unwrap();
    let err = versions::fetch(&env.objects(), stored.file)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("versions object"), "{err}");
    record_with_versions(&env, 3, Some(stored.file)).await;
    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 3);
    assert!(
        versions::read_local(&dir.path().join("meta"))
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flipped_newest_snapshot_makes_recovery_load_the_newest_kept_version() {
    let env = Env::new();
    tree(&env.db);
    let p = env.publisher();
    assert_eq!(p.publish_sync().await.unwrap().seq, 1);
    change(&env.db, b"more", 3, 7);
    assert_eq!(p.publish_sync().await.unwrap().seq, 2);
    let synced = dump_published(&env.db);
    // Seq 3 names a full snapshot of a later state with one bit flipped, and the same list of
    // kept versions; every holder takes it, so no older record is left anywhere.
    change(&env.db, b"late", 1, 8);
    let mut snap = Vec::new();
    env.db.write_snapshot(&mut snap).unwrap();
    let mid = snap.len() / 2;
    snap[mid] ^= 0x10;
    let trailer: [u8; 32] = snap[snap.len() - 32..].try_into().unwrap();
    let len = snap.len() as u64;
    let stored = env
        .objects()
        .put(Arc::new(MemSource(snap)), len, None, &|_| {})
        .await
        .unwrap();
    let last = std::fs::read(env.meta().join(ROOT_RECORD)).unwrap();
    let mut body = RootRecord::verify(&last, 0)
        .unwrap()
        .open_body(&env.identity)
        .unwrap();
    assert!(body.versions.is_some());
    body.snapshot = ObjectRef {
        file: stored.file,
        len,
        trailer,
    };
    body.segments.clear();
    let rec = RootRecord::sign(&env.identity, 3, now_ms(), &body).unwrap();
    assert_eq!(env.net.put_root(rec.into_bytes()).await.unwrap(), NODES);

    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    let got = got.unwrap();
    assert_eq!((got.seq, got.kept_version), (2, true));
    assert_eq!(got.refused.len(), 1, "{:?}", got.refused);
    assert_eq!(got.refused[0].seq, Some(3));
    assert!(
        got.refused[0].reason.contains("hash mismatch"),
        "{:?}",
        got.refused
    );
    assert_eq!(dump_published(&open_recovered(&dir)), synced);
    let meta = dir.path().join("meta");
    assert_eq!(read_seen(&meta).unwrap(), 3);
    assert_eq!(local_seqs(&meta), vec![1, 2]);
    // A kept version's state is no base for a segment on seq 3's chain: none is kept.
    let states: Vec<_> = std::fs::read_dir(&meta)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("published-"))
        .collect();
    assert!(states.is_empty(), "{states:?}");

    // The recovered dir publishes above the seq seen, a full snapshot, and a fresh recovery
    // loads that.
    let mut env2 = Env::with(env.identity.clone(), env.net.clone());
    env2.dir = dir;
    env2.reopen();
    change(&env2.db, b"after", 1, 9);
    let next = env2.publisher().publish_sync().await.unwrap();
    assert_eq!((next.seq, next.segments), (4, 0));
    let (dir3, got) = recover_fresh(&env.identity, &env.net).await;
    let got = got.unwrap();
    assert_eq!((got.seq, got.kept_version), (4, false));
    assert_eq!(
        dump_published(&open_recovered(&dir3)),
        dump_published(&env2.db)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_dir_learns_the_lost_machines_garbage_and_collects_it_when_its_version_expires()
{
    use crate::gc::{Collector, GcConfig};
    use crate::testutil::{held, shard_ids, upload};
    let env = Env::new();
    let (f, _) = env.db.create(InodeNo::ROOT, b"f", &O, true, t()).unwrap();
    let old = upload(&env.db, &env.objects(), f.ino, &[1; 20_000]).await;
    let p = env.publisher();
    assert_eq!(p.publish_sync().await.unwrap().seq, 1);
    // Rewritten: the old content is named by version 1 only. The machine is lost before any
    // collection, with the old content's ledger row.
    let new = upload(&env.db, &env.objects(), f.ino, &[2; 20_000]).await;
    assert_eq!(p.publish_sync().await.unwrap().seq, 2);
    assert!(env.db.ledger().unwrap().iter().any(|r| r.file == old));
    let ids = shard_ids(&env.objects(), old).await;
    assert_eq!(held(&env.net, &ids).await, ids.len());

    let (dir, got) = recover_fresh(&env.identity, &env.net).await;
    assert_eq!(got.unwrap().seq, 2);
    let mut env2 = Env::with(env.identity.clone(), env.net.clone());
    env2.dir = dir;
    env2.reopen();
    assert!(env2.meta().join(LEDGER_DERIVE).exists());
    assert!(
        !env2.db.ledger().unwrap().iter().any(|r| r.file == old),
        "the lost machine's rows were not published"
    );
    let p2 = env2.publisher().with_retention(Retention {
        keep_versions: 1,
        ..Retention::default()
    });
    // The old content; version 1's snapshot is the base of the current chain (a row already).
    assert_eq!(p2.derive_recovered_garbage().await.unwrap(), 1);
    let row = env2
        .db
        .ledger()
        .unwrap()
        .into_iter()
        .find(|r| r.file == old);
    let row = row.unwrap();
    assert_eq!((row.born, row.dead), (0, 2));
    assert!(!env2.meta().join(LEDGER_DERIVE).exists());
    assert_eq!(
        p2.derive_recovered_garbage().await.unwrap(),
        0,
        "learned once"
    );

    // Version 1 is kept: the old content stays.
    let gc = Collector::new(env2.db.clone(), env2.objects(), GcConfig::default());
    assert_eq!(p2.kept_seqs().await.unwrap(), vec![1, 2]);
    gc.run(&[1, 2]).await.unwrap();
    assert_eq!(held(&env.net, &ids).await, ids.len());
    // A sync keeping one version: version 1 expires, and the old content leaves every node.
    env2.db.mkdir(InodeNo::ROOT, b"later", &O, t()).unwrap();
    assert_eq!(p2.publish_sync().await.unwrap().seq, 3);
    let kept = p2.kept_seqs().await.unwrap();
    assert_eq!(kept, vec![3]);
    gc.run(&kept).await.unwrap();
    let rows = env2.db.ledger().unwrap();
    assert!(!rows.iter().any(|r| r.file == old), "its row went last");
    assert!(rows.iter().any(|r| r.file == new));
    assert_eq!(
        held(&env.net, &ids).await,
        0,
        "every shard and manifest copy left"
    );
    // What the tree names still reads back whole.
    let objects = env2.objects();
    let (m, key) = objects.open_owned(new).await.unwrap();
    let (_, bytes) = objects
        .read_covering(new, &m, &key, 0, m.size)
        .await
        .unwrap();
    assert_eq!(bytes, vec![2; 20_000]);
}
