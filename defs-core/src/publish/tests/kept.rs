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
