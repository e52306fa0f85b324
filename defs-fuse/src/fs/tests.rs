//! The core without a kernel: handles, journal, orphans, readdir offsets, the flusher.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use defs_core::namespace::Content;
use defs_core::sync::Arc;
use defs_core::types::InodeNo;

use super::error::ToErrno;
use super::*;
use crate::flusher::{DEBOUNCE, FlushError, Uploader};
use crate::test_utils::{OWNER, ScriptedUploader, Step, TestFs};

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn dirty(t: &TestFs) -> Vec<InodeNo> {
    t.db.dirty_inodes()
        .unwrap()
        .into_iter()
        .map(|r| r.ino)
        .collect()
}

#[tokio::test]
async fn every_write_is_in_the_journal_and_its_size_in_the_db_when_it_returns() {
    let t = TestFs::new(Config::default(), None);
    let (attr, o) =
        t.fs.create(InodeNo::ROOT, name("f"), 0o644, libc::O_RDWR, OWNER)
            .await
            .unwrap();
    // A new file is dirty from its creation, in the create's own transaction.
    assert_eq!(dirty(&t), vec![attr.ino], "dirty before the first write");
    // Each write saves its size and mtime in the DB before it returns: no close needed.
    t.fs.write(attr.ino, o.fh, 10, b"hello").await.unwrap();
    assert_eq!(t.db.getattr(attr.ino).unwrap().size, 15);
    t.fs.write(attr.ino, o.fh, 15, b"!").await.unwrap();
    let stored = t.db.getattr(attr.ino).unwrap();
    assert_eq!(stored.size, 16);
    assert_eq!(stored.mtime, t.fs.getattr(attr.ino).await.unwrap().mtime);
    // A restart finds the same (the crash of the process: `meta::tests::
    // a_deferred_size_survives_a_crash_of_the_process`, `fuse::crash`).
    let t = t.restart(Config::default(), None).await;
    assert_eq!(t.db.getattr(attr.ino).unwrap().size, 16);
    assert_eq!(dirty(&t), vec![attr.ino]);
    let o = t.fs.open(attr.ino, libc::O_RDWR).await.unwrap();
    assert_eq!(
        t.fs.read(attr.ino, o.fh, 0, 100).await.unwrap(),
        b"\0\0\0\0\0\0\0\0\0\0hello!"
    );
    t.fs.release(attr.ino, o.fh).await.unwrap();
    // No uploader: the file stays dirty, and says so.
    assert_eq!(dirty(&t), vec![attr.ino]);
    let state = t.fs.getxattr(attr.ino, STATE_XATTR).await.unwrap();
    assert!(
        String::from_utf8(state)
            .unwrap()
            .starts_with("dirty (no network")
    );
    assert!(
        t.fs.listxattr(attr.ino).await.unwrap().is_empty(),
        "never listed"
    );
    let e =
        t.fs.setxattr(attr.ino, STATE_XATTR, b"clean", 0, OWNER)
            .await
            .unwrap_err();
    assert_eq!(e.to_errno(), libc::EPERM);
}

#[tokio::test]
async fn an_unlinked_file_lives_until_its_last_handle_and_lookup_are_gone() {
    let t = TestFs::new(Config::default(), None);
    let (attr, o) =
        t.fs.create(InodeNo::ROOT, name("f"), 0o644, libc::O_RDWR, OWNER)
            .await
            .unwrap();
    t.fs.write(attr.ino, o.fh, 0, b"data").await.unwrap();
    t.fs.unlink(InodeNo::ROOT, name("f")).await.unwrap();
    assert_eq!(t.fs.read(attr.ino, o.fh, 0, 4).await.unwrap(), b"data");
    t.fs.release(attr.ino, o.fh).await.unwrap();
    // The kernel still holds the create's lookup.
    assert!(t.db.getattr(attr.ino).is_ok());
    t.fs.forget(attr.ino, 1);
    assert_eq!(
        t.db.getattr(attr.ino).unwrap_err().to_errno(),
        libc::ENOENT,
        "purged"
    );
    assert!(dirty(&t).is_empty(), "its journal entry went with it");
}

#[tokio::test]
async fn orphans_left_by_a_crash_are_purged_at_the_next_start() {
    let t = TestFs::new(Config::default(), None);
    let (attr, o) =
        t.fs.create(InodeNo::ROOT, name("f"), 0o644, libc::O_RDWR, OWNER)
            .await
            .unwrap();
    t.fs.write(attr.ino, o.fh, 0, b"data").await.unwrap();
    t.fs.unlink(InodeNo::ROOT, name("f")).await.unwrap();
    // Restart with the handle still open (a crash leaves it so).
    let t = t.restart(Config::default(), None).await;
    assert!(t.db.getattr(attr.ino).is_err());
    assert!(t.db.orphans().unwrap().is_empty());
}

#[tokio::test]
async fn a_truncate_during_an_upload_keeps_the_file_dirty_with_its_new_size() {
    let t = TestFs::new(Config::default(), None);
    let ino = t.write_file("f", b"hello world").await;
    // An upload began and read the 11 bytes; the truncate lands before it finishes.
    let uploading = t.db.begin_upload(ino).unwrap();
    let set = SetAttr {
        size: Some(5),
        ..Default::default()
    };
    assert_eq!(t.fs.setattr(ino, None, set).await.unwrap().size, 5);
    let stored = Content::Stored {
        file: defs_core::types::FileId([1; 32]),
        key: [1; 32],
        offset: 0,
        len: 11,
    };
    assert!(
        !t.db.finish_upload(ino, uploading, stored).unwrap(),
        "the older upload cannot stand for the file"
    );
    assert_eq!(dirty(&t), vec![ino]);
    assert_eq!(t.fs.getattr(ino).await.unwrap().size, 5);
    assert_eq!(t.db.content(ino).unwrap(), Content::Empty);
}

#[tokio::test]
async fn truncate_marks_dirty_and_cuts_the_cache_file() {
    let t = TestFs::new(Config::default(), None);
    let ino = t.write_file("f", &[7u8; 10_000]).await;
    let set = SetAttr {
        size: Some(100),
        ..Default::default()
    };
    assert_eq!(t.fs.setattr(ino, None, set).await.unwrap().size, 100);
    let o = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(
        t.fs.read(ino, o.fh, 0, 1 << 20).await.unwrap(),
        vec![7u8; 100]
    );
    let set = SetAttr {
        size: Some(200),
        ..Default::default()
    };
    t.fs.setattr(ino, None, set).await.unwrap();
    let data = t.fs.read(ino, o.fh, 0, 1 << 20).await.unwrap();
    assert_eq!(&data[..100], &[7u8; 100][..]);
    assert_eq!(&data[100..], &[0u8; 100][..]);
}

#[tokio::test]
async fn readdir_offsets_continue_after_any_entry() {
    let t = TestFs::new(Config::default(), None);
    for i in 0..10 {
        t.write_file(&format!("f{i}"), b"").await;
    }
    let dh = t.fs.opendir(InodeNo::ROOT).await.unwrap();
    let all = t.fs.readdir(InodeNo::ROOT, dh, 0, true).await.unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    assert_eq!(&names[..2], &[".", ".."]);
    assert_eq!(names.len(), 12);
    assert!(all.iter().all(|e| e.attr.is_some()));
    for (i, e) in all.iter().enumerate() {
        let rest =
            t.fs.readdir(InodeNo::ROOT, dh, e.cookie, false)
                .await
                .unwrap();
        assert_eq!(rest.len(), all.len() - i - 1, "after {:?}", e.name);
    }
    t.fs.releasedir(InodeNo::ROOT, dh).await.unwrap();
    assert_eq!(
        t.fs.readdir(InodeNo::ROOT, dh, 0, false)
            .await
            .unwrap_err()
            .to_errno(),
        libc::EBADF
    );
}

#[tokio::test]
async fn a_read_only_core_refuses_changes_with_erofs() {
    let config = Config {
        read_only: true,
        ..Default::default()
    };
    let t = TestFs::new(config, None);
    let e =
        t.fs.create(InodeNo::ROOT, name("f"), 0o644, libc::O_RDWR, OWNER)
            .await
            .unwrap_err();
    assert_eq!(e.to_errno(), libc::EROFS);
    let e =
        t.fs.mkdir(InodeNo::ROOT, name("d"), 0o755, OWNER)
            .await
            .unwrap_err();
    assert_eq!(e.to_errno(), libc::EROFS);
}

#[tokio::test]
async fn unsupported_operations_have_an_errno_and_are_counted() {
    let t = TestFs::new(Config::default(), None);
    let (attr, o) =
        t.fs.create(InodeNo::ROOT, name("f"), 0o644, libc::O_RDWR, OWNER)
            .await
            .unwrap();
    let e =
        t.fs.fallocate(attr.ino, o.fh, 0, 10, libc::FALLOC_FL_COLLAPSE_RANGE)
            .await
            .unwrap_err();
    assert_eq!(e.to_errno(), libc::EOPNOTSUPP);
    assert_eq!(
        t.fs.counters()
            .unsupported
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Issue 24: a dirty file's holes (beyond a write, grown by truncate, punched) are what
/// `lseek` and `st_blocks` see, from the sparse cache file.
#[tokio::test]
async fn holes_of_a_dirty_file_are_seen_by_lseek_and_st_blocks() {
    let t = TestFs::new(Config::default(), None);
    let (attr, o) =
        t.fs.create(InodeNo::ROOT, name("sparse"), 0o644, libc::O_RDWR, OWNER)
            .await
            .unwrap();
    let (ino, fh) = (attr.ino, o.fh);
    let mib = 1u64 << 20;
    t.fs.write(ino, fh, 0, &[7u8; 8192]).await.unwrap();
    t.fs.write(ino, fh, mib, &[9u8; 4096]).await.unwrap();
    let set = SetAttr {
        size: Some(4 * mib),
        ..Default::default()
    };
    t.fs.setattr(ino, Some(fh), set).await.unwrap();
    let seek = |off: i64, whence: i32| t.fs.lseek(ino, fh, off, whence);
    assert_eq!(seek(0, libc::SEEK_DATA).await.unwrap(), 0);
    assert_eq!(seek(0, libc::SEEK_HOLE).await.unwrap(), 8192);
    assert_eq!(seek(8192, libc::SEEK_DATA).await.unwrap(), mib as i64);
    assert_eq!(
        seek(mib as i64, libc::SEEK_HOLE).await.unwrap(),
        mib as i64 + 4096
    );
    assert_eq!(
        seek(mib as i64 + 4096, libc::SEEK_HOLE).await.unwrap(),
        mib as i64 + 4096
    );
    let e = seek(mib as i64 + 4096, libc::SEEK_DATA).await.unwrap_err();
    assert_eq!(e.to_errno(), libc::ENXIO);
    assert_eq!(
        seek(4 * mib as i64, libc::SEEK_HOLE)
            .await
            .unwrap_err()
            .to_errno(),
        libc::ENXIO
    );
    assert_eq!(
        seek(-1, libc::SEEK_DATA).await.unwrap_err().to_errno(),
        libc::ENXIO
    );
    let allocated = t.fs.getattr(ino).await.unwrap().allocated.unwrap();
    assert!((12_288..=65_536).contains(&allocated), "{allocated}");
    // Punch the first 8 KiB: no data before 1 MiB, fewer blocks, zeros read back.
    t.fs.fallocate(
        ino,
        fh,
        0,
        8192,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .await
    .unwrap();
    assert_eq!(seek(0, libc::SEEK_DATA).await.unwrap(), mib as i64);
    let after = t.fs.getattr(ino).await.unwrap();
    assert_eq!(after.size, 4 * mib, "KEEP_SIZE keeps the size");
    assert!(after.allocated.unwrap() < allocated);
    assert_eq!(t.fs.read(ino, fh, 0, 8192).await.unwrap(), vec![0u8; 8192]);
    assert_eq!(
        t.fs.read(ino, fh, mib, 4096).await.unwrap(),
        vec![9u8; 4096]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_nodes_and_sockets_are_made_by_mknod_and_survive_a_restart_and_a_cache_wipe() {
    let t = TestFs::new(Config::default(), None);
    // (name, mode, rdev given, kind, rdev stored): mknod(2) ignores the number for a
    // non-device.
    let made = [
        (
            "null",
            libc::S_IFCHR | 0o666,
            0x0103,
            FileKind::CharDevice,
            0x0103,
        ),
        ("whiteout", libc::S_IFCHR, 0, FileKind::CharDevice, 0),
        (
            "sda1",
            libc::S_IFBLK | 0o660,
            0x0801,
            FileKind::BlockDevice,
            0x0801,
        ),
        // Major 4095, minor 2^20 - 1: every bit of the kernel's 32-bit encoding.
        (
            "big",
            libc::S_IFBLK | 0o600,
            u32::MAX,
            FileKind::BlockDevice,
            u32::MAX,
        ),
        (
            "S.agent",
            libc::S_IFSOCK | 0o700,
            0x0801,
            FileKind::Socket,
            0,
        ),
        ("pipe", libc::S_IFIFO | 0o644, 7, FileKind::Fifo, 0),
    ];
    for (n, mode, rdev, kind, stored) in made {
        let a =
            t.fs.mknod(InodeNo::ROOT, name(n), mode, rdev, OWNER)
                .await
                .unwrap();
        assert_eq!(
            (
                a.kind,
                a.rdev,
                u32::from(a.perm),
                a.uid,
                a.gid,
                a.size,
                a.nlink
            ),
            (kind, stored, mode & 0o7777, OWNER.uid, OWNER.gid, 0, 1),
            "{n}"
        );
        assert_eq!(t.fs.getattr(a.ino).await.unwrap(), a, "{n}");
    }
    // Nothing to upload: only regular files are dirty.
    assert!(dirty(&t).is_empty());
    for mode in [libc::S_IFDIR | 0o755, libc::S_IFLNK | 0o777] {
        let e =
            t.fs.mknod(InodeNo::ROOT, name("x"), mode, 0, OWNER)
                .await
                .unwrap_err();
        assert_eq!(e.to_errno(), libc::EINVAL, "{mode:o}");
    }
    // Mode, owner, times and xattrs as on any inode; a size is not theirs.
    let null = t.fs.lookup(InodeNo::ROOT, name("null")).await.unwrap();
    let mtime = defs_core::namespace::Timestamp::new(1_700_000_000, 123_456_789);
    let set = SetAttr {
        perm: Some(0o620),
        uid: Some(5),
        gid: Some(6),
        mtime: Some(TimeSet::At(mtime)),
        ..SetAttr::default()
    };
    t.fs.setattr(null.ino, None, set).await.unwrap();
    t.fs.setxattr(null.ino, b"user.k", b"v", 0, OWNER)
        .await
        .unwrap();
    let sock = t.fs.lookup(InodeNo::ROOT, name("S.agent")).await.unwrap();
    t.fs.setxattr(sock.ino, b"trusted.t", b"w", 0, OWNER)
        .await
        .unwrap();
    let set = SetAttr {
        size: Some(1),
        ..SetAttr::default()
    };
    let e = t.fs.setattr(null.ino, None, set).await.unwrap_err();
    assert_eq!(e.to_errno(), libc::EINVAL);
    // A hard link is another name of the same node.
    t.fs.link(null.ino, InodeNo::ROOT, name("null2"))
        .await
        .unwrap();

    let t = t
        .reopen(
            Config::default(),
            crate::upload::Remote::uploader(None),
            true,
        )
        .await;
    for (n, mode, _, kind, stored) in made {
        let a = t.fs.lookup(InodeNo::ROOT, name(n)).await.unwrap();
        assert_eq!((a.kind, a.rdev), (kind, stored), "{n}");
        if n != "null" {
            assert_eq!(u32::from(a.perm), mode & 0o7777, "{n}");
        }
    }
    let a = t.fs.lookup(InodeNo::ROOT, name("null2")).await.unwrap();
    assert_eq!(
        (a.ino, a.perm, a.uid, a.gid, a.mtime, a.nlink),
        (null.ino, 0o620, 5, 6, mtime, 2)
    );
    assert_eq!(t.fs.getxattr(null.ino, b"user.k").await.unwrap(), b"v");
    assert_eq!(t.fs.getxattr(sock.ino, b"trusted.t").await.unwrap(), b"w");
    t.fs.unlink(InodeNo::ROOT, name("S.agent")).await.unwrap();
    let e =
        t.fs.lookup(InodeNo::ROOT, name("S.agent"))
            .await
            .unwrap_err();
    assert_eq!(e.to_errno(), libc::ENOENT);
}

#[test]
fn every_namespace_refusal_has_its_errno() {
    use defs_core::Error as E;
    let cases: Vec<(E, i32)> = vec![
        (E::NotFound { what: "x".into() }, libc::ENOENT),
        (E::AlreadyExists { what: "x".into() }, libc::EEXIST),
        (E::NotEmpty { ino: 2 }, libc::ENOTEMPTY),
        (E::NotADirectory { ino: 2 }, libc::ENOTDIR),
        (E::IsADirectory { ino: 2 }, libc::EISDIR),
        (
            E::NameTooLong {
                len: 300,
                limit: 255,
            },
            libc::ENAMETOOLONG,
        ),
        (E::InvalidArgument { what: "x".into() }, libc::EINVAL),
        (E::NotPermitted { what: "x".into() }, libc::EPERM),
        (
            E::NoXattr {
                ino: 2,
                name: "user.x".into(),
            },
            libc::ENODATA,
        ),
        (E::XattrTooLarge { size: 1, limit: 0 }, libc::E2BIG),
        (E::XattrNameInvalid { len: 0, limit: 255 }, libc::ERANGE),
        (E::Closed, libc::EIO),
        (
            E::NoSpace {
                path: "/data/cache".into(),
                needed: 1,
                available: 0,
                reserve: 1 << 30,
            },
            libc::ENOSPC,
        ),
        (
            E::io("/cache/1", std::io::Error::from_raw_os_error(libc::ENOSPC)),
            libc::ENOSPC,
        ),
    ];
    for (e, errno) in cases {
        assert_eq!(e.to_errno(), errno, "{e}");
    }
}

// ---- the flusher ---------------------------------------------------------------------------

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn uploader(u: &ScriptedUploader) -> Option<Arc<dyn Uploader>> {
    Some(Arc::new(u.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_within_the_debounce_upload_once_and_the_upload_keeps_mtime_and_size() {
    let u = ScriptedUploader::new(&[]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let ino = t.write_file("f", b"one").await;
    // Reopen and rewrite within the debounce (a save dance).
    let o = t.fs.open(ino, libc::O_WRONLY).await.unwrap();
    t.fs.write(ino, o.fh, 0, b"two!").await.unwrap();
    t.fs.release(ino, o.fh).await.unwrap();
    let before = t.fs.getattr(ino).await.unwrap();
    wait_until("the upload", || dirty(&t).is_empty()).await;
    let attempts = u.attempts();
    assert_eq!(attempts.len(), 1, "one upload for both closes");
    assert_eq!(attempts[0].2, b"two!");
    let after = t.fs.getattr(ino).await.unwrap();
    assert_eq!((after.size, after.mtime), (before.size, before.mtime));
    assert!(matches!(
        t.db.content(ino).unwrap(),
        Content::Stored { len: 4, .. }
    ));
    // Uploaded; with no network to judge it by, not claimed to be on the network.
    let state = t.fs.getxattr(ino, STATE_XATTR).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&state),
        "clean; not known to be on the network: no network is configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_file_never_written_is_dirty_until_its_close_uploads_it() {
    let u = ScriptedUploader::new(&[]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let (attr, o) =
        t.fs.create(InodeNo::ROOT, name("touched"), 0o644, libc::O_WRONLY, OWNER)
            .await
            .unwrap();
    assert_eq!(dirty(&t), vec![attr.ino]);
    assert_eq!(
        t.fs.getxattr(attr.ino, STATE_XATTR).await.unwrap(),
        b"dirty"
    );
    t.fs.release(attr.ino, o.fh).await.unwrap();
    wait_until("the upload", || dirty(&t).is_empty()).await;
    assert_eq!(t.db.content(attr.ino).unwrap(), Content::Empty);
    assert_eq!(
        t.fs.getxattr(attr.ino, STATE_XATTR).await.unwrap(),
        b"clean"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regular_file_made_by_mknod_is_dirty_at_once_and_uploads_without_a_close() {
    let u = ScriptedUploader::new(&[]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let fifo =
        t.fs.mknod(InodeNo::ROOT, name("pipe"), libc::S_IFIFO | 0o644, 0, OWNER)
            .await
            .unwrap();
    let file =
        t.fs.mknod(InodeNo::ROOT, name("made"), libc::S_IFREG | 0o644, 0, OWNER)
            .await
            .unwrap();
    // Dirty at once (the upload waits out the debounce)...
    assert_eq!(dirty(&t), vec![file.ino]);
    // ...and no handle was opened, so no close: mknod itself schedules the upload.
    wait_until("the upload", || dirty(&t).is_empty()).await;
    assert_eq!(t.db.content(file.ino).unwrap(), Content::Empty);
    assert_eq!(
        t.fs.getxattr(file.ino, STATE_XATTR).await.unwrap(),
        b"clean"
    );
    assert_eq!(
        t.fs.getxattr(fifo.ino, STATE_XATTR).await.unwrap(),
        b"clean"
    );
}

/// An access ACL in the kernel's xattr form: version 2, then (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[tokio::test]
async fn an_access_acl_sets_the_mode_and_only_one_beyond_the_mode_is_stored() {
    const ACL: &[u8] = b"system.posix_acl_access";
    const NONE: u32 = u32::MAX;
    let t = TestFs::new(Config::default(), None);
    let ino = t.write_file("f", b"x").await;
    let set = SetAttr {
        perm: Some(0o4644),
        ..Default::default()
    };
    t.fs.setattr(ino, None, set).await.unwrap();
    // An extended ACL (a named user and a mask) is kept as it is.
    let extended = acl(&[
        (0x01, 6, NONE),
        (0x02, 4, 1000),
        (0x04, 4, NONE),
        (0x10, 4, NONE),
        (0x20, 4, NONE),
    ]);
    t.fs.setxattr(ino, ACL, &extended, 0, OWNER).await.unwrap();
    assert_eq!(t.fs.getxattr(ino, ACL).await.unwrap(), extended);
    // Owner rwx, group r-x, other none: what cp -a sets for a 0750 file. The mode takes the
    // bits (setuid stays), and the ACL stored before is gone, as on ext4.
    let minimal = acl(&[(0x01, 7, NONE), (0x04, 5, NONE), (0x20, 0, NONE)]);
    t.fs.setxattr(ino, ACL, &minimal, 0, OWNER).await.unwrap();
    assert_eq!(t.fs.getattr(ino).await.unwrap().perm, 0o4750);
    let err = t.fs.getxattr(ino, ACL).await.unwrap_err();
    assert_eq!(err.to_errno(), libc::ENODATA);
    // Like a chmod: another user may not (kernels before 6.2 leave that check to us), and an
    // owner outside the file's group loses setgid.
    let stranger = Owner {
        uid: OWNER.uid + 1,
        gid: OWNER.gid,
    };
    let open_to_all = acl(&[(0x01, 7, NONE), (0x04, 7, NONE), (0x20, 7, NONE)]);
    let err =
        t.fs.setxattr(ino, ACL, &open_to_all, 0, stranger)
            .await
            .unwrap_err();
    assert_eq!(err.to_errno(), libc::EPERM);
    assert_eq!(t.fs.getattr(ino).await.unwrap().perm, 0o4750);
    let set = SetAttr {
        perm: Some(0o2750),
        ..Default::default()
    };
    t.fs.setattr(ino, None, set).await.unwrap();
    let outside = Owner {
        uid: OWNER.uid,
        gid: OWNER.gid + 1,
    };
    t.fs.setxattr(ino, ACL, &minimal, 0, outside).await.unwrap();
    assert_eq!(t.fs.getattr(ino).await.unwrap().perm, 0o750);
    // Not minimal (a mask entry, an out-of-range perm, a short value): stored as bytes (the
    // first, a valid ACL, sets the mode it already has).
    for value in [
        acl(&[
            (0x01, 7, NONE),
            (0x04, 5, NONE),
            (0x10, 5, NONE),
            (0x20, 0, NONE),
        ]),
        acl(&[(0x01, 8, NONE), (0x04, 5, NONE), (0x20, 0, NONE)]),
        minimal[..minimal.len() - 1].to_vec(),
    ] {
        t.fs.setxattr(ino, ACL, &value, 0, OWNER).await.unwrap();
        assert_eq!(t.fs.getxattr(ino, ACL).await.unwrap(), value);
        assert_eq!(t.fs.getattr(ino).await.unwrap().perm, 0o750);
    }
    // An extended ACL sets the mode's bits too, as on ext4 (`rsync -A` relies on it): the
    // owner entry, the mask (not the group entry), the other entry.
    let extended = acl(&[
        (0x01, 6, NONE),
        (0x02, 7, 1000),
        (0x04, 4, NONE),
        (0x10, 7, NONE),
        (0x20, 1, NONE),
    ]);
    t.fs.setxattr(ino, ACL, &extended, 0, OWNER).await.unwrap();
    assert_eq!(t.fs.getxattr(ino, ACL).await.unwrap(), extended);
    assert_eq!(t.fs.getattr(ino).await.unwrap().perm, 0o671);
    // Another user may not set one either; nothing changes.
    let err =
        t.fs.setxattr(ino, ACL, &open_to_all, 0, stranger)
            .await
            .unwrap_err();
    assert_eq!(err.to_errno(), libc::EPERM);
    assert_eq!(t.fs.getattr(ino).await.unwrap().perm, 0o671);
    assert_eq!(t.fs.getxattr(ino, ACL).await.unwrap(), extended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_keeps_the_file_dirty_and_records_why() {
    let u = ScriptedUploader::new(&[Step::Fail]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let ino = t.write_file("f", b"data").await;
    wait_until("the failed attempt", || !u.attempts().is_empty()).await;
    wait_until("the failure record", || {
        t.db.dirty_inodes().unwrap().iter().any(|r| r.failures == 1)
    })
    .await;
    let state = String::from_utf8(t.fs.getxattr(ino, STATE_XATTR).await.unwrap()).unwrap();
    assert!(
        state.contains("1 failed uploads, last: scripted failure"),
        "{state}"
    );
    let rec = t.db.dirty_inodes().unwrap().remove(0);
    assert_eq!(rec.ino, ino);
    assert!(rec.last_error.unwrap().contains("scripted failure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_an_upload_keeps_the_file_dirty_and_uploads_again() {
    let u = ScriptedUploader::new(&[Step::Block]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let ino = t.write_file("f", b"old").await;
    u.started().await;
    let o = t.fs.open(ino, libc::O_WRONLY).await.unwrap();
    t.fs.write(ino, o.fh, 0, b"new").await.unwrap();
    t.fs.release(ino, o.fh).await.unwrap();
    u.release();
    wait_until("the second upload", || u.attempts().len() == 2).await;
    wait_until("clean", || dirty(&t).is_empty()).await;
    assert_eq!(u.attempts()[1].2, b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_file_cancels_its_upload() {
    let u = ScriptedUploader::new(&[Step::Block]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let ino = t.write_file("f", b"doomed").await;
    u.started().await;
    t.fs.unlink(InodeNo::ROOT, name("f")).await.unwrap();
    t.fs.forget(ino, 1);
    tokio::time::sleep(DEBOUNCE).await;
    assert!(
        u.attempts().is_empty(),
        "the blocked upload was cancelled, not finished"
    );
    assert!(t.db.getattr(ino).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_uploader_files_stay_dirty_and_fsync_network_says_so() {
    let config = Config {
        fsync: FsyncMode::Network,
        ..Default::default()
    };
    let t = TestFs::new(config, None);
    let (attr, o) =
        t.fs.create(InodeNo::ROOT, name("f"), 0o644, libc::O_RDWR, OWNER)
            .await
            .unwrap();
    t.fs.write(attr.ino, o.fh, 0, b"x").await.unwrap();
    let e = t.fs.fsync(attr.ino, o.fh, false).await.unwrap_err();
    assert!(
        matches!(e, Error::Flush(FlushError::NoUploader { .. })),
        "{e}"
    );
    assert_eq!(e.to_errno(), libc::EIO);
    assert_eq!(dirty(&t), vec![attr.ino]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_files_resume_uploading_after_a_restart() {
    let t = TestFs::new(Config::default(), None);
    let ino = t.write_file("f", b"survivor").await;
    let u = ScriptedUploader::new(&[]);
    let t = t.restart(Config::default(), uploader(&u)).await;
    wait_until("the resumed upload", || dirty(&t).is_empty()).await;
    assert_eq!(u.attempts()[0].0, ino);
    assert_eq!(u.attempts()[0].2, b"survivor");
}

// ---- sync, status, shutdown grace, cache pressure -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_tree_uploads_only_the_subtree_now_and_reports_progress() {
    let u = ScriptedUploader::new(&[]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let a =
        t.fs.mkdir(InodeNo::ROOT, name("a"), 0o755, OWNER)
            .await
            .unwrap();
    let deep = t.fs.mkdir(a.ino, name("deep"), 0o755, OWNER).await.unwrap();
    let b =
        t.fs.mkdir(InodeNo::ROOT, name("b"), 0o755, OWNER)
            .await
            .unwrap();
    let f1 = t.write_file_in(a.ino, "one", b"11").await;
    let f2 = t.write_file_in(deep.ino, "two", b"2222").await;
    let other = t.write_file_in(b.ino, "three", b"333").await;
    assert_eq!(t.fs.resolve(Path::new("a/deep/two")).unwrap(), f2);
    assert!(t.fs.resolve(Path::new("a/../b")).is_err());

    let started = tokio::time::Instant::now();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let report =
        t.fs.sync_tree(a.ino, move |p| s2.lock().unwrap().push(p))
            .await
            .unwrap();
    assert!(started.elapsed() < DEBOUNCE, "no debounce for a sync");
    assert!(report.is_clean());
    assert_eq!((report.files, report.bytes), (2, 6));
    let dirty_now = dirty(&t);
    assert!(!dirty_now.contains(&f1) && !dirty_now.contains(&f2));
    assert!(dirty_now.contains(&other), "outside the synced subtree");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.first().map(|p| (p.files_done, p.files_total)),
        Some((0, 2))
    );
    let last = *seen.last().unwrap();
    assert_eq!(
        (last.files_done, last.bytes_done, last.bytes_total),
        (2, 6, 6)
    );

    // A single file, and then nothing left to do.
    let report = t.fs.sync_tree(other, |_| {}).await.unwrap();
    assert_eq!(report.files, 1);
    assert!(dirty(&t).is_empty());
    let report = t.fs.sync_tree(InodeNo::ROOT, |_| {}).await.unwrap();
    assert_eq!((report.files, report.is_clean()), (0, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_tree_includes_open_files_with_their_unsaved_size() {
    let u = ScriptedUploader::new(&[]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let (attr, o) =
        t.fs.create(InodeNo::ROOT, name("open"), 0o644, libc::O_RDWR, OWNER)
            .await
            .unwrap();
    t.fs.write(attr.ino, o.fh, 0, b"still open").await.unwrap();
    let report = t.fs.sync_tree(InodeNo::ROOT, |_| {}).await.unwrap();
    assert!(report.is_clean());
    assert_eq!(u.attempts()[0].2, b"still open");
    t.fs.release(attr.ino, o.fh).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_tree_reports_a_file_that_keeps_failing_with_its_path_and_error() {
    let u = ScriptedUploader::new(&[Step::Fail; SYNC_ATTEMPTS as usize]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let d =
        t.fs.mkdir(InodeNo::ROOT, name("d"), 0o755, OWNER)
            .await
            .unwrap();
    let ino = t.write_file_in(d.ino, "bad", b"x").await;
    let report = t.fs.sync_tree(InodeNo::ROOT, |_| {}).await.unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].ino, ino);
    assert_eq!(report.failed[0].path, Path::new("d/bad"));
    assert!(report.failed[0].error.contains("scripted failure"));
    assert_eq!(dirty(&t), vec![ino], "a failed upload never marks clean");

    // status lists it with its path and error.
    let s = t.fs.upload_status().unwrap();
    assert_eq!((s.failed_files, s.failed_bytes, s.dirty_files()), (1, 1, 1));
    assert_eq!(s.failed[0].path.as_deref(), Some(Path::new("d/bad")));
    assert!(s.failed[0].failures >= SYNC_ATTEMPTS);
    assert!(
        s.failed[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("scripted")
    );
    assert!(s.has_network);
    // The script is used up: the next sync succeeds.
    assert!(t.fs.sync_tree(ino, |_| {}).await.unwrap().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_tree_without_a_network_refuses_only_when_something_is_dirty() {
    let t = TestFs::new(Config::default(), None);
    assert!(
        t.fs.sync_tree(InodeNo::ROOT, |_| {})
            .await
            .unwrap()
            .is_clean()
    );
    t.write_file("f", b"local only").await;
    let e = t.fs.sync_tree(InodeNo::ROOT, |_| {}).await.unwrap_err();
    assert!(
        matches!(e, Error::Flush(FlushError::NoUploader { .. })),
        "{e}"
    );
    let s = t.fs.upload_status().unwrap();
    assert_eq!(
        (s.waiting_files, s.waiting_bytes, s.has_network),
        (1, 10, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_an_upload_in_flight() {
    let u = ScriptedUploader::new(&[Step::Block]);
    let t = TestFs::new(Config::default(), uploader(&u));
    t.write_file("f", b"12345").await;
    u.started().await;
    let s = t.fs.upload_status().unwrap();
    assert_eq!((s.uploading_files, s.uploading_bytes), (1, 5));
    u.release();
    wait_until("clean", || dirty(&t).is_empty()).await;
    assert_eq!(t.fs.upload_status().unwrap().dirty_files(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_running_upload_within_the_grace_period() {
    let u = ScriptedUploader::new(&[Step::Block]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let ino = t.write_file("f", b"finish me").await;
    u.started().await;
    let u2 = u.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        u2.release();
    });
    t.fs.shutdown_within(Duration::from_secs(10)).await.unwrap();
    assert!(dirty(&t).is_empty(), "the running upload finished");
    assert_eq!(u.attempts()[0].0, ino);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_what_the_grace_period_does_not_cover_and_it_resumes() {
    let u = ScriptedUploader::new(&[Step::Block, Step::Block]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let ino = t.write_file("f", b"later").await;
    t.write_file("g", b"also later").await;
    wait_until("both uploads running", || {
        t.db.dirty_inodes()
            .unwrap()
            .iter()
            .all(|r| r.uploading.is_some())
    })
    .await;
    let started = tokio::time::Instant::now();
    t.fs.shutdown_within(Duration::from_millis(100))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(dirty(&t).len(), 2, "both stay dirty in the journal");
    let u = ScriptedUploader::new(&[]);
    let t = t.restart(Config::default(), uploader(&u)).await;
    wait_until("the resumed uploads", || dirty(&t).is_empty()).await;
    assert!(u.attempts().iter().any(|a| a.0 == ino));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_cache_pressure_closed_files_upload_without_the_debounce() {
    let budget = 1000;
    let u = ScriptedUploader::new(&[]);
    let t = TestFs::with_budget(Config::default(), Remote::uploader(uploader(&u)), budget);
    // Below pressure: the debounce holds the upload back.
    t.write_file("small", &[1; 100]).await;
    tokio::time::sleep(DEBOUNCE / 4).await;
    assert!(u.attempts().is_empty(), "debounced");
    // Over half the budget dirty: this close and the waiting one start at once.
    let started = tokio::time::Instant::now();
    t.write_file("big", &[2; 600]).await;
    wait_until("both uploads", || u.attempts().len() == 2).await;
    assert!(
        started.elapsed() < DEBOUNCE / 2,
        "pressure skips the debounce ({:?})",
        started.elapsed()
    );
}

// Paused clock, moved by hand (`advance`): deterministic, instant, and a flusher that spins
// cannot stall the test (sleeping would wait for an idle runtime that never comes).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn due_files_waiting_for_an_upload_slot_do_not_wake_the_flusher() {
    let slots = crate::flusher::MAX_CONCURRENT_UPLOADS;
    let (u, t) = every_slot_blocked(3).await;
    // Every slot is blocked and three files are past their deadline: nothing to do until an
    // upload finishes.
    let before = t.fs.flusher().wakeups();
    advance_by(DEBOUNCE).await;
    let woken = t.fs.flusher().wakeups() - before;
    assert!(
        woken < 3,
        "the flusher woke {woken} times in {DEBOUNCE:?} with nothing it could do"
    );
    for _ in 0..slots {
        u.release();
    }
    advance_until("every upload", DEBOUNCE * 10, || dirty(&t).is_empty()).await;
    assert_eq!(u.attempts().len(), slots + 3);
}

/// A mount (on a paused clock) whose every upload slot holds a blocked upload, with `due` more
/// closed files due behind them. Uploads after those continue at once.
async fn every_slot_blocked(due: usize) -> (ScriptedUploader, TestFs) {
    let slots = crate::flusher::MAX_CONCURRENT_UPLOADS;
    let u = ScriptedUploader::new(&vec![Step::Block; slots]);
    let t = TestFs::new(Config::default(), uploader(&u));
    for i in 0..slots + due {
        t.write_file(&format!("f{i}"), b"data").await;
    }
    advance_until("every slot taken", DEBOUNCE * 3, || uploading(&t) == slots).await;
    (u, t)
}

/// The step of [`advance_by`] and [`advance_until`]: fine enough for the flusher's timings.
const TICK: Duration = Duration::from_millis(10);

/// Moves the paused clock `by`, tick by tick, letting the other tasks run after each tick.
async fn advance_by(by: Duration) {
    let mut moved = Duration::ZERO;
    while moved < by {
        tokio::time::advance(TICK).await;
        moved += TICK;
    }
}

/// Moves the paused clock tick by tick until `cond` holds; fails after `limit`.
async fn advance_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let mut moved = Duration::ZERO;
    while !cond() {
        assert!(moved < limit, "{what}: not after {limit:?}");
        tokio::time::advance(TICK).await;
        moved += TICK;
    }
}

fn uploading(t: &TestFs) -> usize {
    t.db.dirty_inodes()
        .unwrap()
        .iter()
        .filter(|r| r.uploading.is_some())
        .count()
}

/// A tree copy: closes a new file every `QUIET / 5` until `until`.
async fn keep_closing(t: &TestFs, until: tokio::time::Instant) {
    let mut i = 0;
    while tokio::time::Instant::now() < until {
        t.write_file(&format!("g{i}"), b"x").await;
        i += 1;
        advance_by(crate::flusher::QUIET / 5).await;
    }
}

// Paused clock, moved by hand: the deferral of 30 s runs in an instant.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn while_files_keep_closing_uploads_wait_for_quiet_then_go_one_at_a_time() {
    use crate::flusher::{BUSY_DEFER, BUSY_UPLOADS, MAX_CONCURRENT_UPLOADS};
    let u = ScriptedUploader::new(&[Step::Block; MAX_CONCURRENT_UPLOADS + 2]);
    let t = TestFs::new(Config::default(), uploader(&u));
    for i in 0..MAX_CONCURRENT_UPLOADS + 2 {
        t.write_file(&format!("f{i}"), b"data").await;
    }
    let start = tokio::time::Instant::now();
    // The copy goes on past the first files' deadline: nothing uploads meanwhile.
    keep_closing(&t, start + DEBOUNCE * 3).await;
    assert_eq!(uploading(&t), 0, "uploads wait while files keep closing");
    // Still busy past the deferral: one at a time.
    keep_closing(&t, start + DEBOUNCE + BUSY_DEFER + DEBOUNCE).await;
    assert_eq!(uploading(&t), BUSY_UPLOADS, "then one at a time");
    // Quiet: the other slots open.
    advance_until("the other slots once quiet", DEBOUNCE, || {
        uploading(&t) == MAX_CONCURRENT_UPLOADS
    })
    .await;
    advance_until("every upload", Duration::from_secs(60), || {
        u.release();
        dirty(&t).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_sync_does_not_wait_for_quiet() {
    let u = ScriptedUploader::new(&[]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let ino = t.write_file("f", b"data").await;
    let start = tokio::time::Instant::now();
    let busy = keep_closing(&t, start + DEBOUNCE * 5);
    let sync = async {
        t.fs.flusher().upload_now(ino).await.unwrap();
        tokio::time::Instant::now() - start
    };
    let ((), took) = tokio::join!(busy, sync);
    assert!(took < DEBOUNCE, "upload_now ran at once ({took:?})");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_file_waited_for_uploads_before_the_files_that_are_merely_due() {
    let slots = crate::flusher::MAX_CONCURRENT_UPLOADS;
    let (u, t) = every_slot_blocked(6).await;
    // Six files are due behind the blocked uploads; then someone syncs a newer file.
    let synced = t.write_file("synced", b"now").await;
    let flusher = t.fs.flusher().clone();
    let sync = tokio::spawn(async move { flusher.upload_now(synced).await });
    advance_by(TICK).await;
    u.release();
    advance_until("the sync", DEBOUNCE, || sync.is_finished()).await;
    sync.await.unwrap().unwrap();
    let started: Vec<InodeNo> = u.attempts().iter().map(|a| a.0).collect();
    assert_eq!(
        started.get(1),
        Some(&synced),
        "the released upload, then the synced file before any due one: {started:?}"
    );
    for _ in 0..slots {
        u.release();
    }
    advance_until("every upload", DEBOUNCE * 10, || dirty(&t).is_empty()).await;
    assert_eq!(u.attempts().len(), slots + 7);
}

// ---- model check ---------------------------------------------------------------------------

mod model {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Write { offset: u64, len: usize, seed: u8 },
        Truncate { size: u64 },
        Read { offset: u64, len: u32 },
        Reopen,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..300_000, 1usize..70_000, any::<u8>())
                .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
            1 => (0u64..400_000).prop_map(|size| Op::Truncate { size }),
            2 => (0u64..400_000, 1u32..100_000).prop_map(|(offset, len)| Op::Read { offset, len }),
            1 => Just(Op::Reopen),
            1 => Just(Op::Restart),
        ]
    }

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_add((i % 251) as u8))
            .collect()
    }

    async fn check(ops: Vec<Op>) {
        let mut t = TestFs::new(Config::default(), None);
        let ino = t.write_file("f", b"").await;
        let mut fh = t.fs.open(ino, libc::O_RDWR).await.unwrap().fh;
        let mut model: Vec<u8> = Vec::new();
        let changed = ops
            .iter()
            .any(|op| matches!(op, Op::Write { .. } | Op::Truncate { .. }));
        for op in ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let data = bytes(seed, len);
                    t.fs.write(ino, fh, offset, &data).await.unwrap();
                    let end = offset as usize + len;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[offset as usize..end].copy_from_slice(&data);
                }
                Op::Truncate { size } => {
                    let set = SetAttr {
                        size: Some(size),
                        ..Default::default()
                    };
                    t.fs.setattr(ino, Some(fh), set).await.unwrap();
                    model.resize(size as usize, 0);
                }
                Op::Read { offset, len } => {
                    let got = t.fs.read(ino, fh, offset, len).await.unwrap();
                    let start = (offset as usize).min(model.len());
                    let end = (offset as usize + len as usize).min(model.len());
                    assert!(got == model[start..end], "read {offset}+{len}");
                }
                Op::Reopen | Op::Restart => {
                    t.fs.release(ino, fh).await.unwrap();
                    if matches!(op, Op::Restart) {
                        t = t.restart(Config::default(), None).await;
                    }
                    fh = t.fs.open(ino, libc::O_RDWR).await.unwrap().fh;
                }
            }
            assert_eq!(t.fs.getattr(ino).await.unwrap().size, model.len() as u64);
        }
        let all = t.fs.read(ino, fh, 0, u32::MAX).await.unwrap();
        assert!(all == model, "final contents");
        if changed {
            assert_eq!(
                dirty(&t),
                vec![ino],
                "changed files stay dirty without an uploader"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn file_contents_follow_a_model_through_writes_truncates_reopens_and_restarts(
            ops in proptest::collection::vec(op(), 1..25)
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(check(ops));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_uploader_stores_what_reads_back_from_the_network() {
    use defs_core::object::Objects;
    use defs_core::pipeline::{FileKey, LayoutConfig, WrapKey};
    use defs_core::remote::memory::MemoryClient;

    let client = Arc::new(MemoryClient::new(5));
    let objects = Arc::new(Objects::new(
        client.clone(),
        WrapKey::from_bytes([3; 32]),
        LayoutConfig::default(),
        None,
    ));
    let t = TestFs::with_remote(
        Config::default(),
        crate::upload::Remote::objects(objects.clone()),
    );
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let ino = t.write_file("big", &data).await;
    let empty = t.write_file("empty", b"").await;
    wait_until("the uploads", || dirty(&t).is_empty()).await;
    assert!(client.stored() > 0, "shards reached the network");
    let Content::Stored {
        file,
        key,
        offset,
        len,
    } = t.db.content(ino).unwrap()
    else {
        panic!("not stored");
    };
    assert_eq!((offset, len), (0, data.len() as u64));
    let key = FileKey::from_bytes(key);
    let manifest = objects.manifest(file, &key).await.unwrap();
    let (start, back) = objects
        .read_covering(file, &manifest, &key, 0, len)
        .await
        .unwrap();
    assert_eq!((start, back), (0, data));
    assert_eq!(t.db.content(empty).unwrap(), Content::Empty);
    assert_eq!(t.fs.getxattr(ino, STATE_XATTR).await.unwrap(), b"clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_an_open_file_never_leaves_it_clean_and_short() {
    // The periodic scan (or cache pressure) may upload a file that is still open for writing.
    // The upload takes every write before it (begin_upload applies the deferred sizes); a
    // write after it must leave the file dirty, so the full bytes are uploaded later.
    let u = ScriptedUploader::new(&[]);
    let t = TestFs::new(Config::default(), uploader(&u));
    let (attr, o) =
        t.fs.create(InodeNo::ROOT, name("open"), 0o644, libc::O_WRONLY, OWNER)
            .await
            .unwrap();
    let ino = attr.ino;
    t.fs.write(ino, o.fh, 0, b"first").await.unwrap();
    t.fs.write(ino, o.fh, 5, b" part").await.unwrap();
    // What the scan does: upload now, while the file is open.
    t.fs.flusher().upload_now(ino).await.unwrap();
    assert!(dirty(&t).is_empty(), "uploaded as written so far");
    t.fs.write(ino, o.fh, 10, b", second").await.unwrap();
    assert_eq!(dirty(&t), vec![ino], "the next write made it dirty again");
    t.fs.release(ino, o.fh).await.unwrap();
    wait_until("the full upload", || dirty(&t).is_empty()).await;
    assert_eq!(
        u.attempts()[0].2,
        b"first part",
        "the upload of the open file"
    );
    let last = u.attempts().last().cloned().unwrap();
    assert_eq!(last.2, b"first part, second");
    assert!(matches!(
        t.db.content(ino).unwrap(),
        Content::Stored { len: 18, .. }
    ));
}
