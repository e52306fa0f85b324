//! Namespace tests: POSIX edge cases one by one, and a model-based property test against the
//! in-memory reference model in `testutil`.

use proptest::prelude::*;

use super::*;
use crate::testutil::{Model, OWNER, Op, Rng, apply_db, check_invariants, code, time};

fn db() -> (tempfile::TempDir, MetaDb) {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    (dir, db)
}

const ROOT: InodeNo = InodeNo::ROOT;

#[test]
fn exclusive_create_refuses_an_existing_name() {
    let (_d, db) = db();
    let t = time(1);
    let (a, created) = db.create(ROOT, b"tmp", &OWNER, true, t).unwrap();
    assert!(created);
    assert_eq!(
        code(&db.create(ROOT, b"tmp", &OWNER, true, t).unwrap_err()),
        "EEXIST"
    );
    let (b, created) = db.create(ROOT, b"tmp", &OWNER, false, t).unwrap();
    assert!(!created);
    assert_eq!(a, b);
    db.mkdir(ROOT, b"d", &OWNER, t).unwrap();
    assert_eq!(
        code(&db.create(ROOT, b"d", &OWNER, false, t).unwrap_err()),
        "EISDIR"
    );
}

#[test]
fn names_over_255_bytes_are_refused() {
    let (_d, db) = db();
    let long = vec![b'x'; 256];
    assert_eq!(
        code(&db.create(ROOT, &long, &OWNER, true, time(1)).unwrap_err()),
        "ENAMETOOLONG"
    );
    assert_eq!(code(&db.lookup(ROOT, &long).unwrap_err()), "ENAMETOOLONG");
    db.create(ROOT, &long[..255], &OWNER, true, time(1))
        .unwrap();
}

#[test]
fn rmdir_of_a_non_empty_directory_is_refused_and_nlink_counts_subdirs() {
    let (_d, db) = db();
    let d = db.mkdir(ROOT, b"d", &OWNER, time(1)).unwrap();
    let e = db.mkdir(d.ino, b"e", &OWNER, time(2)).unwrap();
    assert_eq!(db.getattr(d.ino).unwrap().nlink, 3);
    assert_eq!(db.getattr(ROOT).unwrap().nlink, 3);
    assert_eq!(
        code(&db.rmdir(ROOT, b"d", time(3)).unwrap_err()),
        "ENOTEMPTY"
    );
    assert_eq!(db.parent_of(e.ino).unwrap(), d.ino);
    db.rmdir(d.ino, b"e", time(4)).unwrap();
    db.rmdir(ROOT, b"d", time(5)).unwrap();
    assert_eq!(db.getattr(ROOT).unwrap().nlink, 2);
    assert_eq!(db.getattr(ROOT).unwrap().mtime, time(5));
    check_invariants(&db).unwrap();
}

#[test]
fn hard_links_count_and_survive_unlink_of_one_name() {
    let (_d, db) = db();
    let (a, _) = db.create(ROOT, b"a", &OWNER, true, time(1)).unwrap();
    let l = db.link(a.ino, ROOT, b"b", time(2)).unwrap();
    assert_eq!(l.nlink, 2);
    assert_eq!(l.ctime, time(2));
    assert_eq!(db.unlink(ROOT, b"a", time(3)).unwrap().nlink, 1);
    assert_eq!(db.lookup(ROOT, b"b").unwrap().ino, a.ino);
    let gone = db.unlink(ROOT, b"b", time(4)).unwrap();
    assert_eq!(gone.nlink, 0);
    // Still there for open handles, until purged.
    assert_eq!(db.getattr(a.ino).unwrap().nlink, 0);
    assert_eq!(db.orphans().unwrap(), vec![a.ino]);
    db.purge(a.ino).unwrap();
    assert_eq!(code(&db.getattr(a.ino).unwrap_err()), "ENOENT");
    let d = db.mkdir(ROOT, b"d", &OWNER, time(5)).unwrap();
    assert_eq!(
        code(&db.link(d.ino, ROOT, b"e", time(6)).unwrap_err()),
        "EPERM"
    );
    check_invariants(&db).unwrap();
}

#[test]
fn rename_flags_and_subtree_rule() {
    let (_d, db) = db();
    let t = time(1);
    let a = db.mkdir(ROOT, b"a", &OWNER, t).unwrap();
    let b = db.mkdir(a.ino, b"b", &OWNER, t).unwrap();
    let (f, _) = db.create(ROOT, b"f", &OWNER, true, t).unwrap();
    let (g, _) = db.create(ROOT, b"g", &OWNER, true, t).unwrap();
    let e = |r: crate::Result<Option<Unlinked>>| code(&r.unwrap_err());
    assert_eq!(
        e(db.rename(ROOT, b"a", b.ino, b"x", RenameMode::Replace, t)),
        "EINVAL"
    );
    assert_eq!(
        e(db.rename(ROOT, b"a", a.ino, b"x", RenameMode::Replace, t)),
        "EINVAL"
    );
    assert_eq!(
        e(db.rename(ROOT, b"f", ROOT, b"g", RenameMode::NoReplace, t)),
        "EEXIST"
    );
    assert_eq!(
        e(db.rename(ROOT, b"f", ROOT, b"zz", RenameMode::Exchange, t)),
        "ENOENT"
    );
    assert_eq!(
        e(db.rename(ROOT, b"f", ROOT, b"a", RenameMode::Replace, t)),
        "EISDIR"
    );
    assert_eq!(
        e(db.rename(ROOT, b"a", ROOT, b"f", RenameMode::Replace, t)),
        "ENOTDIR"
    );
    // Over a file: the old file loses its name.
    let gone = db
        .rename(ROOT, b"f", ROOT, b"g", RenameMode::Replace, time(2))
        .unwrap();
    assert_eq!(
        gone,
        Some(Unlinked {
            ino: g.ino,
            nlink: 0
        })
    );
    assert_eq!(db.lookup(ROOT, b"g").unwrap().ino, f.ino);
    // Exchange a file and a directory across directories.
    db.rename(ROOT, b"g", a.ino, b"b", RenameMode::Exchange, time(3))
        .unwrap();
    assert_eq!(db.lookup(ROOT, b"g").unwrap().ino, b.ino);
    assert_eq!(db.lookup(a.ino, b"b").unwrap().ino, f.ino);
    assert_eq!(db.parent_of(b.ino).unwrap(), ROOT);
    assert_eq!(db.getattr(a.ino).unwrap().nlink, 2);
    // Over an empty directory.
    let c = db.mkdir(ROOT, b"c", &OWNER, t).unwrap();
    db.rename(ROOT, b"g", ROOT, b"c", RenameMode::Replace, time(4))
        .unwrap();
    assert_eq!(db.getattr(c.ino).unwrap().nlink, 0);
    check_invariants(&db).unwrap();
}

#[test]
fn readdir_cookies_stay_valid_while_the_directory_changes() {
    let (_d, db) = db();
    for i in 0..10u8 {
        db.create(ROOT, &[b'a' + i], &OWNER, true, time(1)).unwrap();
    }
    let first = db.readdir(ROOT, 0, 4).unwrap();
    assert_eq!(first.len(), 4);
    // Remove an entry already listed and one not yet listed; add one.
    db.unlink(ROOT, b"a", time(2)).unwrap();
    db.unlink(ROOT, b"f", time(2)).unwrap();
    db.create(ROOT, b"z", &OWNER, true, time(2)).unwrap();
    let rest = db.readdir(ROOT, first[3].cookie, 100).unwrap();
    let names: Vec<_> = first.iter().chain(&rest).map(|e| e.name.clone()).collect();
    let expect: Vec<Vec<u8>> = [b"a", b"b", b"c", b"d", b"e", b"g", b"h", b"i", b"j", b"z"]
        .iter()
        .map(|n| n.to_vec())
        .collect();
    assert_eq!(names, expect);
    assert!(db.readdir(ROOT, u64::MAX, 10).unwrap().is_empty());
}

#[test]
fn xattr_flags_and_limits() {
    let (_d, db) = db();
    let (a, _) = db.create(ROOT, b"a", &OWNER, true, time(1)).unwrap();
    let e = |r: crate::Result<()>| code(&r.unwrap_err());
    assert_eq!(
        e(db.set_xattr(a.ino, b"user.x", b"1", XattrMode::Replace, time(2))),
        "ENODATA"
    );
    db.set_xattr(a.ino, b"user.x", b"1", XattrMode::Create, time(2))
        .unwrap();
    assert_eq!(
        e(db.set_xattr(a.ino, b"user.x", b"2", XattrMode::Create, time(2))),
        "EEXIST"
    );
    db.set_xattr(a.ino, b"user.x", b"2", XattrMode::Replace, time(3))
        .unwrap();
    assert_eq!(db.get_xattr(a.ino, b"user.x").unwrap(), b"2");
    assert_eq!(db.getattr(a.ino).unwrap().ctime, time(3));
    let big = vec![0; XATTR_SIZE_MAX + 1];
    assert_eq!(
        e(db.set_xattr(a.ino, b"user.y", &big, XattrMode::Any, time(4))),
        "E2BIG"
    );
    assert_eq!(
        e(db.set_xattr(a.ino, &[b'n'; 256], b"", XattrMode::Any, time(4))),
        "ERANGE"
    );
    db.set_xattr(
        a.ino,
        b"system.posix_acl_access",
        &[2, 0, 0, 0],
        XattrMode::Any,
        time(4),
    )
    .unwrap();
    assert_eq!(
        db.list_xattr(a.ino).unwrap(),
        vec![b"system.posix_acl_access".to_vec(), b"user.x".to_vec()]
    );
    db.remove_xattr(a.ino, b"user.x", time(5)).unwrap();
    assert_eq!(e(db.remove_xattr(a.ino, b"user.x", time(5))), "ENODATA");
    assert_eq!(
        code(&db.get_xattr(a.ino, b"user.x").unwrap_err()),
        "ENODATA"
    );
    // The list limit: 65536 bytes of names with their NULs.
    let mut n = 0;
    let err = loop {
        let name = format!("user.{n:0>250}");
        if let Err(err) = db.set_xattr(a.ino, name.as_bytes(), b"", XattrMode::Any, time(6)) {
            break err;
        }
        n += 1;
    };
    assert_eq!(code(&err), "E2BIG");
    assert_eq!(n, (XATTR_LIST_MAX - 24) / 256);
}

#[test]
fn setattr_times_to_the_nanosecond_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ino;
    {
        let db = MetaDb::open_with(dir.path(), None).unwrap();
        let (a, _) = db.create(ROOT, b"a", &OWNER, true, time(1)).unwrap();
        ino = a.ino;
        let set = SetAttr {
            perm: Some(0o4755),
            uid: Some(7),
            gid: Some(8),
            size: Some(12345),
            atime: Some(Timestamp::new(-5, 123_456_789)),
            mtime: Some(Timestamp::new(1_234_567_890, 999_999_999)),
            ctime: None,
        };
        let got = db.setattr(ino, &set, time(2)).unwrap();
        assert_eq!(got.ctime, time(2));
        db.symlink(ROOT, b"s", b"../target", &OWNER, time(3))
            .unwrap();
        db.close().unwrap();
    }
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    let a = db.lookup(ROOT, b"a").unwrap();
    assert_eq!(a.ino, ino);
    assert_eq!((a.perm, a.uid, a.gid, a.size), (0o4755, 7, 8, 12345));
    assert_eq!(a.atime, Timestamp::new(-5, 123_456_789));
    assert_eq!(a.mtime, Timestamp::new(1_234_567_890, 999_999_999));
    let s = db.lookup(ROOT, b"s").unwrap();
    assert_eq!(db.readlink(s.ino).unwrap(), b"../target");
    assert_eq!(s.size, 9);
    // A new inode never reuses a number.
    let (b, _) = db.create(ROOT, b"b", &OWNER, true, time(4)).unwrap();
    assert!(b.ino.0 > s.ino.0);
}

fn run_model(seed: u64, len: usize) {
    let (_d, db) = db();
    let mut model = Model::new();
    let mut rng = Rng(seed);
    for i in 0..len {
        let op = Op::random(&mut rng, false);
        let now = time(i as u64);
        let want = model.apply(&op, now);
        let got = apply_db(&db, &op, now);
        assert_eq!(got, want, "op {i}: {op:?}");
        if i % 16 == 0 {
            check_invariants(&db).unwrap_or_else(|e| panic!("op {i}: {e}"));
        }
    }
    check_invariants(&db).unwrap();
    // Every inode and every directory listing agrees at the end.
    for ino in 1..16 {
        for op in [Op::Getattr(ino), Op::Readdir(ino), Op::ListXattr(ino)] {
            assert_eq!(
                apply_db(&db, &op, time(0)),
                model.apply(&op, time(0)),
                "{op:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn namespace_matches_the_reference_model(seed in any::<u64>(), len in 1usize..200) {
        run_model(seed, len);
    }
}

#[test]
fn many_threads_share_one_db() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MetaDb>();
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(
        MetaDb::open_with(dir.path(), Some(std::time::Duration::from_millis(5))).unwrap(),
    );
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let d = db.mkdir(ROOT, &[b'd', b'0' + t], &OWNER, time(1)).unwrap();
                for i in b'A'..b'A' + 50 {
                    let (a, _) = db
                        .create(ROOT, &[b'f', b'0' + t, i], &OWNER, true, time(2))
                        .unwrap();
                    db.link(a.ino, d.ino, &[i], time(3)).unwrap();
                    db.mark_dirty(a.ino, time(4)).unwrap();
                    if i.is_multiple_of(2) {
                        db.unlink(ROOT, &[b'f', b'0' + t, i], time(5)).unwrap();
                    }
                }
                db.sync().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    check_invariants(&db).unwrap();
    assert_eq!(db.getattr(ROOT).unwrap().size, 4 + 4 * 25);
    assert_eq!(db.dirty_inodes().unwrap().len(), 200);
}

#[test]
fn mknod_makes_every_special_kind_and_refuses_a_device_number_on_a_non_device() {
    let (_d, db) = db();
    let t = time(1);
    for (name, kind, rdev) in [
        (&b"p"[..], FileKind::Fifo, 0),
        (b"c", FileKind::CharDevice, 0x0103),
        (b"b", FileKind::BlockDevice, u32::MAX),
        (b"s", FileKind::Socket, 0),
        (b"f", FileKind::RegularFile, 0),
    ] {
        let a = db.mknod(ROOT, name, kind, rdev, &OWNER, t).unwrap();
        assert_eq!((a.kind, a.rdev, a.size, a.nlink), (kind, rdev, 0, 1));
        assert_eq!(db.lookup(ROOT, name).unwrap(), db.getattr(a.ino).unwrap());
    }
    for (kind, rdev) in [
        (FileKind::Socket, 1),
        (FileKind::Fifo, 0x0103),
        (FileKind::RegularFile, 7),
        (FileKind::Directory, 0),
        (FileKind::Symlink, 0),
    ] {
        let e = db.mknod(ROOT, b"x", kind, rdev, &OWNER, t).unwrap_err();
        assert_eq!(code(&e), "EINVAL", "{kind:?} {rdev}");
    }
    assert!(db.lookup(ROOT, b"x").is_err());
    let c = db.lookup(ROOT, b"c").unwrap();
    let size = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    assert_eq!(code(&db.setattr(c.ino, &size, t).unwrap_err()), "EINVAL");
    check_invariants(&db).unwrap();
}

/// Issue 24, "Bad input": a device or socket record that a bad disk or a buggy build left
/// with an impossible mode or device number is refused when read, with the reason; every
/// other inode, the directory holding it and later changes are unaffected.
#[test]
fn an_impossible_device_or_socket_record_is_refused_when_read_and_nothing_else_is_harmed() {
    let dir = tempfile::tempdir().unwrap();
    let t = time(1);
    let (sock, dev, file) = {
        let db = MetaDb::open_with(dir.path(), None).unwrap();
        let s = db
            .mknod(ROOT, b"s", FileKind::Socket, 0, &OWNER, t)
            .unwrap();
        let c = db
            .mknod(ROOT, b"c", FileKind::CharDevice, 0x0103, &OWNER, t)
            .unwrap();
        let (f, _) = db.create(ROOT, b"f", &OWNER, true, t).unwrap();
        db.set_xattr(f.ino, b"user.k", b"v", XattrMode::Any, t)
            .unwrap();
        (s.ino, c.ino, f.ino)
    };
    {
        let raw = redb::Database::open(dir.path().join(crate::meta::DB_FILE)).unwrap();
        let txn = raw.begin_write().unwrap();
        {
            let mut inodes = txn.open_table(INODES).unwrap();
            let mut s = load(&inodes, sock).unwrap();
            s.rdev = 0x0801;
            let mut c = load(&inodes, dev).unwrap();
            c.perm = 0o170_644;
            inodes.insert(sock.0, s.encode().as_slice()).unwrap();
            inodes.insert(dev.0, c.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let db = MetaDb::open_with(dir.path(), None).unwrap();
    for (ino, name, why) in [
        (
            sock,
            &b"s"[..],
            "device number on an inode that is not a device node",
        ),
        (dev, b"c", "mode bits 170644 outside 0o7777"),
    ] {
        for e in [
            db.getattr(ino).unwrap_err(),
            db.lookup(ROOT, name).unwrap_err(),
        ] {
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(why), "{e}");
        }
        // A change that would rewrite it fails whole.
        assert!(db.unlink(ROOT, name, t).is_err());
    }
    assert_eq!(db.readdir(ROOT, 0, 10).unwrap().len(), 3);
    assert_eq!(db.getattr(file).unwrap().kind, FileKind::RegularFile);
    assert_eq!(db.get_xattr(file, b"user.k").unwrap(), b"v");
    db.create(ROOT, b"g", &OWNER, true, t).unwrap();
    db.mknod(ROOT, b"p", FileKind::Fifo, 0, &OWNER, t).unwrap();
    assert_eq!(db.readdir(ROOT, 0, 10).unwrap().len(), 5);
}
