//! Unit tests of `meta`.

use super::alloc::allocate_ino;
use super::schema::{KEY_NEXT_INO, KEY_SCHEMA};
use super::*;
use crate::namespace::{Content, RenameMode};
use crate::testutil::{check_invariants, dump};
use crate::types::Generation;

#[test]
fn open_refuses_a_newer_schema_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        MetaDb::open_with(dir.path(), None)
            .unwrap()
            .close()
            .unwrap();
        let db = Database::open(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(KEY_SCHEMA, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = MetaDb::open_with(dir.path(), None).unwrap_err();
    assert!(matches!(err, Error::SchemaTooNew { found, supported, .. }
        if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION));
    assert!(err.to_string().contains("upgrade DeFS"), "{err}");
}

#[test]
fn a_write_that_panics_gives_its_inode_numbers_back_and_the_db_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let state = |db: &MetaDb| {
        let a = db.ino_alloc().lock().unwrap();
        (a.next, a.reserved)
    };
    let before = state(&db);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.write(
            |_: &()| -> redo::LogOp<'static> { unreachable!("never logged") },
            |txn| {
                allocate_ino(txn, db.ino_alloc())?;
                panic!("a bug inside an operation");
            },
        )
    }));
    assert!(panicked.is_err());
    assert_eq!(
        state(&db),
        before,
        "the allocator went back with the transaction"
    );
    // Neither the writer lock nor the allocator is left unusable.
    assert_eq!(create_f(&db, 0o644), InodeNo(InodeNo::ROOT.0 + 1));
}

#[test]
fn open_migrates_an_older_schema() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A version-0 DB: the meta table only.
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let mut meta = txn.open_table(META).unwrap();
        meta.insert(KEY_SCHEMA, 0).unwrap();
        meta.insert(KEY_NEXT_INO, 2).unwrap();
        drop(meta);
        let mut inodes = txn.open_table(INODES).unwrap();
        let root = InodeRecord::new(
            FileKind::Directory,
            &NewInode {
                perm: 0o755,
                uid: 0,
                gid: 0,
            },
            Timestamp::default(),
            Some(InodeNo::ROOT),
        );
        inodes.insert(1, root.encode().as_slice()).unwrap();
        drop(inodes);
        txn.commit().unwrap();
    }
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let v = db.read(|txn| meta_value(txn, KEY_SCHEMA)).unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    assert!(db.readdir(InodeNo::ROOT, 0, 10).unwrap().is_empty());
}

#[test]
fn a_schema_1_db_and_its_log_open_converted_and_then_hold_device_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let init = NewInode {
        perm: 0o640,
        uid: 7,
        gid: 8,
    };
    let now = Timestamp::new(3, 4);
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let d = db.mkdir(InodeNo::ROOT, b"d", &init, now).unwrap().ino;
    db.set_xattr(d, b"user.k", b"v", crate::namespace::XattrMode::Any, now)
        .unwrap();
    db.sync().unwrap();
    // Left in the log only (a crash of the process): replayed by the converted DB.
    let fifo = db.mknod(d, b"p", FileKind::Fifo, 0, &init, now).unwrap();
    let img = crash_image(dir.path());
    drop(db);
    let dir = img;
    // The DB as a version-1 build left it (same layout, older version number).
    {
        let raw = Database::open(dir.path().join(DB_FILE)).unwrap();
        let txn = raw.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(KEY_SCHEMA, 1).unwrap();
        txn.commit().unwrap();
    }
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    assert_eq!(
        db.read(|txn| meta_value(txn, KEY_SCHEMA)).unwrap(),
        SCHEMA_VERSION
    );
    assert_eq!(db.lookup(InodeNo::ROOT, b"d").unwrap().ino, d);
    assert_eq!(db.get_xattr(d, b"user.k").unwrap(), b"v");
    assert_eq!(db.lookup(d, b"p").unwrap(), fifo);
    let dev = db
        .mknod(d, b"null", FileKind::CharDevice, 0x0103, &init, now)
        .unwrap();
    drop(db);
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let again = db.lookup(d, b"null").unwrap();
    assert_eq!((again.kind, again.rdev), (FileKind::CharDevice, 0x0103));
    assert_eq!(again, dev);
}

#[test]
fn sync_and_group_commit_make_writes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), Some(Duration::from_millis(20))).unwrap();
    let n = NewInode {
        perm: 0o644,
        uid: 1,
        gid: 2,
    };
    db.create(InodeNo::ROOT, b"a", &n, true, Timestamp::default())
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let durable = *db.inner.state.durable.lock().unwrap();
    assert!(durable >= 1, "group commit did not run");
    db.sync().unwrap();
    db.close().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    assert!(db.lookup(InodeNo::ROOT, b"a").is_ok());
}

/// The record as redb holds it, without deferred changes laid over.
fn stored(db: &MetaDb, ino: InodeNo) -> InodeRecord {
    db.read(|txn| load(&txn.open_table(INODES).unwrap(), ino))
        .unwrap()
}

/// A fresh DB in its own directory holding one file, mode 0600.
fn db_with_file_0600() -> (tempfile::TempDir, MetaDb, InodeNo) {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let f = create_f(&db, 0o600);
    (dir, db, f)
}

/// Creates `/f` owned by root with `perm`.
fn create_f(db: &MetaDb, perm: u16) -> InodeNo {
    let init = NewInode {
        perm,
        uid: 0,
        gid: 0,
    };
    let (f, _) = db
        .create(InodeNo::ROOT, b"f", &init, true, Timestamp::new(1, 0))
        .unwrap();
    f.ino
}

/// What a crash of the process would leave of the DB open in `dir`: its files as they are.
fn crash_image(dir: &Path) -> tempfile::TempDir {
    let img = tempfile::tempdir().unwrap();
    for name in [DB_FILE, LOG_FILE] {
        std::fs::copy(dir.join(name), img.path().join(name)).unwrap();
    }
    img
}

/// A fresh DB holding a file whose chmod 0644 waits to be applied.
fn deferred_chmod_644() -> (tempfile::TempDir, MetaDb, InodeNo) {
    let (dir, db, f) = db_with_file_0600();
    let set = SetAttr {
        perm: Some(0o644),
        ..Default::default()
    };
    db.setattr(f, &set, Timestamp::new(2, 0)).unwrap();
    assert_eq!(stored(&db, f).perm, 0o600);
    (dir, db, f)
}

#[test]
fn a_setattr_without_a_size_waits_for_the_next_write_and_is_seen_at_once() {
    let (_dir, db, f) = db_with_file_0600();
    let set = SetAttr {
        perm: Some(0o644),
        mtime: Some(Timestamp::new(5, 0)),
        ..Default::default()
    };
    let attr = db.setattr(f, &set, Timestamp::new(2, 0)).unwrap();
    assert_eq!(attr.perm, 0o644);
    // No redb commit ...
    assert_eq!(stored(&db, f).perm, 0o600);
    // ... but every read sees it.
    assert_eq!(db.getattr(f).unwrap(), attr);
    assert_eq!(db.lookup(InodeNo::ROOT, b"f").unwrap(), attr);
    // A second change lays over the first.
    let set = SetAttr {
        perm: Some(0o640),
        ..Default::default()
    };
    let attr = db.setattr(f, &set, Timestamp::new(3, 0)).unwrap();
    assert_eq!(
        (attr.perm, attr.mtime, attr.ctime),
        (0o640, Timestamp::new(5, 0), Timestamp::new(3, 0))
    );
    assert_eq!(db.getattr(f).unwrap(), attr);
    // The next write transaction applies both, in order, before its own change.
    let now = Timestamp::new(4, 0);
    db.rename(
        InodeNo::ROOT,
        b"f",
        InodeNo::ROOT,
        b"g",
        RenameMode::Replace,
        now,
    )
    .unwrap();
    assert_eq!(stored(&db, f).perm, 0o640);
    assert_eq!(db.getattr(f).unwrap().mtime, Timestamp::new(5, 0));
    // A setattr with a size is a write transaction of its own, as before.
    let set = SetAttr {
        size: Some(0),
        perm: Some(0o600),
        ..Default::default()
    };
    db.setattr(f, &set, Timestamp::new(6, 0)).unwrap();
    assert_eq!(stored(&db, f).perm, 0o600);
}

/// Whether redb itself holds `ino` (a deferred create is not there yet).
fn in_redb(db: &MetaDb, ino: InodeNo) -> bool {
    db.read(|txn| {
        Ok(txn
            .open_table(INODES)
            .unwrap()
            .get(ino.0)
            .unwrap()
            .is_some())
    })
    .unwrap()
}

/// A DB whose first file (`/f`, which reserved inode numbers) is committed, and a second,
/// `/g`, whose create waits.
fn deferred_create_g() -> (tempfile::TempDir, MetaDb, InodeNo) {
    let (dir, db, _) = db_with_file_0600();
    let init = NewInode {
        perm: 0o640,
        uid: 7,
        gid: 8,
    };
    let (g, created) = db
        .create(InodeNo::ROOT, b"g", &init, true, Timestamp::new(2, 0))
        .unwrap();
    assert!(created);
    assert!(!in_redb(&db, g.ino), "the create waits");
    (dir, db, g.ino)
}

#[test]
fn a_create_waits_for_the_next_write_and_is_seen_at_once_by_every_reader() {
    let (_dir, db, g) = deferred_create_g();
    let attr = db.getattr(g).unwrap();
    assert_eq!(
        (
            attr.kind, attr.perm, attr.uid, attr.gid, attr.size, attr.nlink
        ),
        (FileKind::RegularFile, 0o640, 7, 8, 0, 1)
    );
    assert_eq!(attr.generation, Generation(1));
    assert_eq!(db.lookup(InodeNo::ROOT, b"g").unwrap(), attr);
    // The parent counts the entry and took the create's time.
    let root = db.getattr(InodeNo::ROOT).unwrap();
    assert_eq!(
        (root.size, root.mtime, root.ctime),
        (2, attr.mtime, attr.ctime)
    );
    assert_eq!(db.content(g).unwrap(), Content::Empty);
    assert!(matches!(
        db.get_xattr(g, b"user.x"),
        Err(Error::NoXattr { .. })
    ));
    assert!(db.list_xattr(g).unwrap().is_empty());
    assert!(matches!(db.readlink(g), Err(Error::InvalidArgument { .. })));
    assert!(matches!(db.parent_of(g), Err(Error::NotADirectory { .. })));
    assert!(!in_redb(&db, g), "none of these readers commits it");
    // Dirty from its create: marking it again changes nothing.
    assert_eq!(
        db.mark_dirty(g, Timestamp::new(3, 0)).unwrap(),
        Generation(1)
    );
    // A second create of the name: refused (exclusive) or the same file, as committed.
    let init = NewInode {
        perm: 0o600,
        uid: 0,
        gid: 0,
    };
    assert!(matches!(
        db.create(InodeNo::ROOT, b"g", &init, true, Timestamp::new(3, 0)),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(!in_redb(&db, g), "a refused operation changes nothing");
    assert_eq!(db.getattr(g).unwrap(), attr);
    let (again, created) = db
        .create(InodeNo::ROOT, b"g", &init, false, Timestamp::new(3, 0))
        .unwrap();
    assert!(!created);
    assert_eq!(again, attr);
    assert!(
        in_redb(&db, g),
        "its write transaction applied the create first"
    );
}

#[test]
fn changes_to_a_waiting_create_lay_over_it_and_reach_redb_in_order() {
    let (_dir, db, g) = deferred_create_g();
    let chmod = SetAttr {
        perm: Some(0o644),
        ..Default::default()
    };
    db.setattr(g, &chmod, Timestamp::new(3, 0)).unwrap();
    let written = SetAttr {
        size: Some(12),
        mtime: Some(Timestamp::new(4, 0)),
        ctime: Some(Timestamp::new(4, 0)),
        ..Default::default()
    };
    let attr = db.save_written(g, &written, Timestamp::new(4, 0)).unwrap();
    assert_eq!((attr.perm, attr.size), (0o644, 12));
    assert!(!in_redb(&db, g), "both waited with the create");
    assert_eq!(db.getattr(g).unwrap(), attr);
    // readdir sees every name: it commits what waits first.
    let names: Vec<_> = db
        .readdir(InodeNo::ROOT, 0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [b"f".to_vec(), b"g".to_vec()]);
    assert!(in_redb(&db, g));
    assert_eq!(db.getattr(g).unwrap(), attr);
    assert_eq!(stored(&db, g).attr(g), attr);
    check_invariants(&db).unwrap();
}

#[test]
fn deferred_creates_leave_the_state_committed_ones_leave() {
    // The same operations on two DBs, one committing what waits after each: the same
    // tables in the end.
    let run = |settle: bool| {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(dir.path(), None).unwrap();
        let init = NewInode {
            perm: 0o644,
            uid: 1,
            gid: 2,
        };
        let sub = db
            .mkdir(InodeNo::ROOT, b"d", &init, Timestamp::new(1, 0))
            .unwrap()
            .ino;
        for i in 0..40u32 {
            let parent = if i % 3 == 0 { InodeNo::ROOT } else { sub };
            let now = Timestamp::new(10 + i64::from(i), i);
            let name = format!("f{i}");
            let (a, _) = db
                .create(parent, name.as_bytes(), &init, true, now)
                .unwrap();
            let set = SetAttr {
                size: Some(u64::from(i)),
                mtime: Some(now),
                ..Default::default()
            };
            db.save_written(a.ino, &set, now).unwrap();
            if i % 7 == 0 {
                db.unlink(parent, name.as_bytes(), now).unwrap();
            }
            if settle {
                db.flush_deferred().unwrap();
            }
        }
        let text = dump(&db);
        check_invariants(&db).unwrap();
        (dir, text)
    };
    let (_a, waited) = run(false);
    let (_b, committed) = run(true);
    assert_eq!(waited, committed);
}

#[test]
fn a_deferred_create_survives_a_crash_of_the_process() {
    let (dir, db, g) = deferred_create_g();
    let attr = db.getattr(g).unwrap();
    let img = crash_image(dir.path());
    let copy = MetaDb::open_with(img.path(), None).unwrap();
    assert_eq!(copy.lookup(InodeNo::ROOT, b"g").unwrap(), attr);
    assert!(in_redb(&copy, g), "replayed and checkpointed");
    check_invariants(&copy).unwrap();
    drop(copy);
    drop(db);
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    assert_eq!(db.getattr(g).unwrap(), attr);
}

#[test]
fn a_deferred_create_already_committed_is_read_from_redb() {
    // The gap between a write transaction's commit and its forgetting what it applied:
    // the list still holds the create, and a truncate committed after it must show.
    let (_dir, db, g) = deferred_create_g();
    let applied = db.inner.deferred.lock().unwrap().entries.clone();
    let set = SetAttr {
        size: Some(5),
        ..Default::default()
    };
    db.setattr(g, &set, Timestamp::new(3, 0)).unwrap();
    db.inner.deferred.lock().unwrap().entries = applied;
    assert_eq!(db.getattr(g).unwrap().size, 5);
    assert_eq!(db.lookup(InodeNo::ROOT, b"g").unwrap().size, 5);
    assert_eq!(db.getattr(InodeNo::ROOT).unwrap().size, 2);
}

#[test]
fn a_deferred_change_already_committed_is_not_laid_over_again() {
    // The gap between a write transaction's commit and its forgetting the deferred changes
    // it applied: the list still holds the chmod 644 the record already includes, and a
    // later committed chmod 600 must not be undone by laying it over again.
    let (_dir, db, f) = deferred_chmod_644();
    let applied = db.inner.deferred.lock().unwrap().entries.clone();
    let set = SetAttr {
        size: Some(1),
        perm: Some(0o600),
        ..Default::default()
    };
    db.setattr(f, &set, Timestamp::new(3, 0)).unwrap();
    db.inner.deferred.lock().unwrap().entries = applied;
    assert_eq!(db.getattr(f).unwrap().perm, 0o600);
    assert_eq!(db.lookup(InodeNo::ROOT, b"f").unwrap().perm, 0o600);
    // And a change deferred now starts from the committed record.
    let touch = SetAttr {
        mtime: Some(Timestamp::new(9, 0)),
        ..Default::default()
    };
    assert_eq!(
        db.setattr(f, &touch, Timestamp::new(9, 0)).unwrap().perm,
        0o600
    );
}

#[test]
fn a_deferred_setattr_survives_a_crash_of_the_process_and_reaches_redb_at_a_checkpoint() {
    let (dir, db, f) = deferred_chmod_644();
    // A crash now: the files as they are on disk, the change only in the log.
    let img = crash_image(dir.path());
    let copy = MetaDb::open_with(img.path(), None).unwrap();
    assert_eq!(copy.getattr(f).unwrap().perm, 0o644);
    assert_eq!(stored(&copy, f).perm, 0o644);
    drop(copy);
    // A checkpoint applies it before it drops the log.
    db.sync().unwrap();
    assert_eq!(stored(&db, f).perm, 0o644);
    db.close().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    assert_eq!(stored(&db, f).perm, 0o644);
}

#[test]
fn a_new_file_is_dirty_and_its_written_size_waits_unless_an_upload_is_in_flight() {
    let (_dir, db, f) = db_with_file_0600();
    // Dirty in the create's own commit, at generation 1.
    let dirty = db.dirty_inodes().unwrap();
    assert_eq!(dirty.len(), 1);
    assert_eq!((dirty[0].ino, dirty[0].generation), (f, Generation(1)));
    let size = |n| SetAttr {
        size: Some(n),
        mtime: Some(Timestamp::new(7, 0)),
        ..Default::default()
    };
    // Dirty, no upload in flight: the close's size waits (no commit), seen at once.
    let attr = db.save_written(f, &size(10), Timestamp::new(7, 0)).unwrap();
    assert_eq!(attr.size, 10);
    assert_eq!(stored(&db, f).size, 0);
    assert_eq!(db.getattr(f).unwrap().size, 10);
    // begin_upload is a write transaction: it applies the size before reading it.
    let g = db.begin_upload(f).unwrap();
    assert_eq!((g, stored(&db, f).size), (Generation(1), 10));
    // With that upload in flight a new size is part of newer content: committed with a new
    // generation, so the upload cannot mark the file clean.
    db.save_written(f, &size(20), Timestamp::new(8, 0)).unwrap();
    assert_eq!(stored(&db, f).size, 20);
    let content = Content::Stored {
        file: crate::types::FileId([1; 32]),
        key: [2; 32],
        offset: 0,
        len: 10,
    };
    assert!(!db.finish_upload(f, g, content.clone()).unwrap());
    assert_eq!(db.dirty_inodes().unwrap()[0].generation, Generation(2));
    // A clean file's saved size is committed and makes it dirty again.
    let g = db.begin_upload(f).unwrap();
    assert!(db.finish_upload(f, g, content).unwrap());
    assert!(db.dirty_inodes().unwrap().is_empty());
    db.save_written(f, &size(30), Timestamp::new(9, 0)).unwrap();
    assert_eq!(stored(&db, f).size, 30);
    assert_eq!(db.dirty_inodes().unwrap().len(), 1);
}

#[test]
fn a_deferred_size_survives_a_crash_of_the_process() {
    let (dir, db, f) = db_with_file_0600();
    let set = SetAttr {
        size: Some(4096),
        ..Default::default()
    };
    db.save_written(f, &set, Timestamp::new(2, 0)).unwrap();
    assert_eq!(stored(&db, f).size, 0);
    let img = crash_image(dir.path());
    let copy = MetaDb::open_with(img.path(), None).unwrap();
    assert_eq!(stored(&copy, f).size, 4096);
    assert_eq!(copy.dirty_inodes().unwrap()[0].ino, f);
}

#[test]
fn a_snapshot_includes_deferred_setattrs() {
    let (_dir, db, f) = deferred_chmod_644();
    let mut snap = Vec::new();
    db.write_snapshot(&mut snap).unwrap();
    let other = tempfile::tempdir().unwrap();
    let restored = MetaDb::open_with(other.path(), None).unwrap();
    restored.restore_snapshot(snap.as_slice()).unwrap();
    assert_eq!(restored.getattr(f).unwrap().perm, 0o644);
}

#[test]
fn live_ranges_follow_uploads_and_purges_through_replay_and_migration() {
    let dir = tempfile::tempdir().unwrap();
    let init = NewInode {
        perm: 0o644,
        uid: 1,
        gid: 2,
    };
    let now = Timestamp::new(5, 0);
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let pack = crate::types::FileId([1; 32]);
    let own = crate::types::FileId([2; 32]);
    let stored = |file, offset, len| Content::Stored {
        file,
        key: [0; 32],
        offset,
        len,
    };
    let mut inos = Vec::new();
    for (name, offset, len) in [(&b"a"[..], 0, 10), (b"b", 10, 20)] {
        let (attr, _) = db.create(InodeNo::ROOT, name, &init, true, now).unwrap();
        let g = db.begin_upload(attr.ino).unwrap();
        assert!(
            db.finish_upload(attr.ino, g, stored(pack, offset, len))
                .unwrap()
        );
        inos.push(attr.ino);
    }
    let live = |db: &MetaDb| -> Vec<(crate::types::FileId, u64, u64)> {
        let mut v: Vec<_> = db
            .live_objects()
            .unwrap()
            .into_iter()
            .map(|(f, l)| (f, l.files, l.bytes))
            .collect();
        v.sort();
        v
    };
    assert_eq!(live(&db), vec![(pack, 2, 30)]);
    // "a" rewritten into its own object: the pack keeps "b" alone.
    let grow = crate::namespace::SetAttr {
        size: Some(11),
        ..Default::default()
    };
    db.save_written(inos[0], &grow, now).unwrap();
    let g = db.begin_upload(inos[0]).unwrap();
    assert!(db.finish_upload(inos[0], g, stored(own, 0, 11)).unwrap());
    assert_eq!(live(&db), vec![(pack, 1, 20), (own, 1, 11)]);
    // "b" deleted: nothing names the pack any more.
    db.unlink(InodeNo::ROOT, b"b", now).unwrap();
    db.purge(inos[1]).unwrap();
    assert_eq!(live(&db), vec![(own, 1, 11)]);
    // The same state after a crash (replayed from the redo log) ...
    let img = crash_image(dir.path());
    drop(db);
    let db = MetaDb::open_with(img.path(), None).unwrap();
    assert_eq!(live(&db), vec![(own, 1, 11)]);
    db.sync().unwrap();
    drop(db);
    // ... and counted from the inodes when a schema-2 DB (no live_ranges table) is opened.
    {
        let raw = Database::open(img.path().join(DB_FILE)).unwrap();
        let txn = raw.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(KEY_SCHEMA, 2).unwrap();
        txn.delete_table(super::schema::LIVE_RANGES).unwrap();
        txn.commit().unwrap();
    }
    let db = MetaDb::open_with(img.path(), None).unwrap();
    assert_eq!(live(&db), vec![(own, 1, 11)]);
}
