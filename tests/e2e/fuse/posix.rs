//! docs/SEMANTICS.md, statement by statement. Test names follow the document's sections.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};

use defs_tests::mount::pseudo_random;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use super::{errno, mount};

/// Opens `p` to read and write, creating it if it is missing and keeping what it holds.
fn open_rw(p: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap_or_else(|e| panic!("opening {}: {e}", p.display()))
}

// ---- create, open -----------------------------------------------------------------------------

#[test]
fn create_excl_makes_a_file_visible_at_once_and_refuses_an_existing_name_with_eexist() {
    let m = mount!();
    let p = m.path("tmp.XXXX");
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    // Visible at once, before any write or close.
    assert!(fs::metadata(&p).unwrap().is_file());
    assert!(
        fs::read_dir(m.mnt())
            .unwrap()
            .any(|e| e.unwrap().file_name() == "tmp.XXXX")
    );
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap_err();
    assert_eq!(errno(&e), libc::EEXIST);
    drop(f);
}

#[test]
fn a_name_seen_missing_is_found_at_once_after_it_is_made() {
    // The kernel caches "missing" for 1 s; making the name through the mount must not wait.
    let m = mount!();
    let p = m.path("soon");
    assert_eq!(errno(&fs::metadata(&p).unwrap_err()), libc::ENOENT);
    fs::write(&p, b"x").unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 1);
    fs::remove_file(&p).unwrap();
    assert_eq!(errno(&fs::metadata(&p).unwrap_err()), libc::ENOENT);
    let tmp = m.path(".soon.tmp");
    assert_eq!(errno(&fs::metadata(&tmp).unwrap_err()), libc::ENOENT);
    fs::write(&tmp, b"yy").unwrap();
    fs::rename(&tmp, &p).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 2);
    assert_eq!(errno(&fs::metadata(&tmp).unwrap_err()), libc::ENOENT);
}

#[test]
fn names_longer_than_255_bytes_are_enametoolong() {
    let m = mount!();
    let e = File::create(m.path("x".repeat(256))).unwrap_err();
    assert_eq!(errno(&e), libc::ENAMETOOLONG);
    File::create(m.path("x".repeat(255))).unwrap();
}

#[test]
fn opening_a_missing_file_is_enoent_and_a_directory_for_writing_is_eisdir() {
    let m = mount!();
    assert_eq!(
        errno(&File::open(m.path("missing")).unwrap_err()),
        libc::ENOENT
    );
    fs::create_dir(m.path("d")).unwrap();
    let e = OpenOptions::new()
        .write(true)
        .open(m.path("d"))
        .unwrap_err();
    assert_eq!(errno(&e), libc::EISDIR);
}

// ---- write, read, truncate, append, mmap ---------------------------------------------------

#[test]
fn stat_after_close_shows_the_final_size_and_mtime() {
    let m = mount!();
    let p = m.path("f");
    let mut f = File::create(&p).unwrap();
    f.write_all(&pseudo_random(1, 300_000)).unwrap();
    drop(f);
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.len(), 300_000);
    let age = std::time::SystemTime::now()
        .duration_since(md.modified().unwrap())
        .unwrap_or_default();
    assert!(age.as_secs() < 30, "mtime is the write's time");
}

#[test]
fn random_writes_match_a_model_file() {
    let m = mount!();
    let p = m.path("random");
    let f = open_rw(&p);
    let mut model: Vec<u8> = Vec::new();
    let mut x = 12345u64;
    for i in 0..300u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 33) % (3 << 20);
        let len = ((x >> 13) % 70_000) as usize + 1;
        let data = pseudo_random(i, len);
        f.write_all_at(&data, off).unwrap();
        let end = off as usize + len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&data);
        if i % 50 == 49 {
            // Reads in between see every write so far.
            let mut back = vec![0; model.len()];
            f.read_exact_at(&mut back, 0).unwrap();
            assert!(back == model, "after {i} writes");
        }
    }
    drop(f);
    assert!(fs::read(&p).unwrap() == model);
}

#[test]
fn truncate_shrinks_and_extends_with_zeros() {
    let m = mount!();
    let p = m.path("t");
    fs::write(&p, pseudo_random(2, 100_000)).unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(1000).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 1000);
    f.set_len(5000).unwrap();
    drop(f);
    let data = fs::read(&p).unwrap();
    assert_eq!(data.len(), 5000);
    assert_eq!(&data[..1000], &pseudo_random(2, 100_000)[..1000]);
    assert!(data[1000..].iter().all(|b| *b == 0));
    // truncate(2) by path, and O_TRUNC.
    nix::unistd::truncate(&p, 10).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 10);
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
}

#[test]
fn append_and_o_append_write_at_the_end() {
    let m = mount!();
    let p = m.path("log");
    fs::write(&p, b"one\n").unwrap();
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"two\n").unwrap();
    // Another writer extends the file meanwhile; O_APPEND still lands at the (new) end.
    let mut b = OpenOptions::new().write(true).open(&p).unwrap();
    b.seek(SeekFrom::End(0)).unwrap();
    b.write_all(b"three\n").unwrap();
    a.write_all(b"four\n").unwrap();
    drop((a, b));
    assert_eq!(fs::read(&p).unwrap(), b"one\ntwo\nthree\nfour\n");
}

#[test]
fn sparse_files_read_zeros_in_their_holes() {
    let m = mount!();
    let p = m.path("sparse");
    let f = File::create(&p).unwrap();
    f.write_all_at(b"end", 50 << 20).unwrap();
    drop(f);
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.len(), (50 << 20) + 3);
    let mut f = File::open(&p).unwrap();
    let mut buf = vec![1u8; 1 << 20];
    f.seek(SeekFrom::Start(10 << 20)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
}

#[test]
fn fallocate_allocates_punches_holes_and_other_modes_are_eopnotsupp() {
    use nix::fcntl::{FallocateFlags as F, fallocate};
    let m = mount!();
    let p = m.path("falloc");
    let f = open_rw(&p);
    // Mode 0 extends the size and reserves blocks, as on ext4.
    fallocate(&f, F::empty(), 0, 1 << 20).unwrap();
    let meta = fs::metadata(&p).unwrap();
    assert_eq!(meta.len(), 1 << 20);
    assert!(meta.blocks() * 512 >= 1 << 20, "{} blocks", meta.blocks());
    // KEEP_SIZE reserves past the end without growing.
    fallocate(&f, F::FALLOC_FL_KEEP_SIZE, 1 << 20, 4096).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 20);
    // A punched range reads as zeros and frees its blocks; the size stays.
    f.write_all_at(&[7u8; 65536], 0).unwrap();
    let before = fs::metadata(&p).unwrap().blocks();
    fallocate(
        &f,
        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
        0,
        1 << 20,
    )
    .unwrap();
    let after = fs::metadata(&p).unwrap();
    assert_eq!(after.len(), 1 << 20);
    assert!(
        after.blocks() < before,
        "{} → {} blocks",
        before,
        after.blocks()
    );
    let mut buf = vec![1u8; 65536];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    // Collapse, insert, zero range, unshare: EOPNOTSUPP.
    for mode in [
        F::FALLOC_FL_COLLAPSE_RANGE,
        F::FALLOC_FL_INSERT_RANGE,
        F::FALLOC_FL_ZERO_RANGE,
        F::FALLOC_FL_UNSHARE_RANGE,
    ] {
        let e = fallocate(&f, mode, 0, 4096).unwrap_err();
        assert_eq!(e as i32, libc::EOPNOTSUPP, "{mode:?}");
    }
}

#[test]
fn shared_writable_mmap_reaches_the_file() {
    let m = mount!();
    let p = m.path("mapped");
    fs::write(&p, vec![b'a'; 3 * 4096]).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    defs_tests::mount::mmap_write(&f, 3 * 4096, 4096 + 10, b"MAPPED");
    drop(f);
    let data = fs::read(&p).unwrap();
    assert_eq!(&data[4096 + 10..4096 + 16], b"MAPPED");
    assert_eq!(data.len(), 3 * 4096);
    assert!(data[..4096].iter().all(|b| *b == b'a'));
}

#[test]
fn writes_through_a_read_only_descriptor_are_ebadf() {
    let m = mount!();
    let p = m.path("ro");
    fs::write(&p, b"x").unwrap();
    let f = File::open(&p).unwrap();
    assert_eq!(errno(&f.write_at(b"y", 0).unwrap_err()), libc::EBADF);
}

#[test]
fn fsync_and_fdatasync_succeed() {
    let m = mount!();
    let mut f = File::create(m.path("synced")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    File::open(m.mnt()).unwrap().sync_all().unwrap();
}

// ---- unlink, rename ----------------------------------------------------------------------------

#[test]
fn an_unlinked_open_file_stays_readable_and_writable_until_closed() {
    let m = mount!();
    let p = m.path("gone");
    fs::write(&p, b"still here").unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert_eq!(errno(&fs::metadata(&p).unwrap_err()), libc::ENOENT);
    f.write_at(b"STILL", 0).unwrap();
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"STILL here");
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    drop(f);
    assert!(fs::read_dir(m.mnt()).unwrap().next().is_none());
}

#[test]
fn rename_over_an_existing_file_is_atomic_even_while_either_is_open_and_dirty() {
    let m = mount!();
    let (a, b) = (m.path("new"), m.path("target"));
    fs::write(&b, b"old contents").unwrap();
    let mut reader = File::open(&b).unwrap();
    let mut w = File::create(&a).unwrap();
    w.write_all(b"new contents").unwrap();
    // Rename while the source is open and dirty.
    fs::rename(&a, &b).unwrap();
    w.write_all(b" + more").unwrap();
    drop(w);
    assert_eq!(fs::read(&b).unwrap(), b"new contents + more");
    assert_eq!(errno(&fs::metadata(&a).unwrap_err()), libc::ENOENT);
    // The replaced file is still readable through its open descriptor.
    let mut old = String::new();
    reader.read_to_string(&mut old).unwrap();
    assert_eq!(old, "old contents");
}

#[test]
fn rename_refusals_have_their_errno() {
    let m = mount!();
    fs::create_dir_all(m.path("d/sub")).unwrap();
    fs::write(m.path("d/sub/f"), b"x").unwrap();
    fs::create_dir(m.path("e")).unwrap();
    fs::write(m.path("f"), b"x").unwrap();
    let err = |a: &str, b: &str| errno(&fs::rename(m.path(a), m.path(b)).unwrap_err());
    assert_eq!(err("d", "d/sub/into"), libc::EINVAL, "into its own subtree");
    assert_eq!(err("e", "d"), libc::ENOTEMPTY, "over a non-empty directory");
    assert_eq!(err("f", "e"), libc::EISDIR, "a file over a directory");
    assert_eq!(err("e", "f"), libc::ENOTDIR, "a directory over a file");
    assert_eq!(err("missing", "x"), libc::ENOENT);
    // Over an empty directory works.
    fs::create_dir(m.path("empty")).unwrap();
    fs::rename(m.path("e"), m.path("empty")).unwrap();
}

#[test]
fn rename_noreplace_and_exchange() {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    let m = mount!();
    fs::write(m.path("a"), b"A").unwrap();
    fs::write(m.path("b"), b"B").unwrap();
    let e = renameat2(
        AT_FDCWD,
        &m.path("a"),
        AT_FDCWD,
        &m.path("b"),
        RenameFlags::RENAME_NOREPLACE,
    )
    .unwrap_err();
    assert_eq!(e as i32, libc::EEXIST);
    renameat2(
        AT_FDCWD,
        &m.path("a"),
        AT_FDCWD,
        &m.path("b"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(fs::read(m.path("a")).unwrap(), b"B");
    assert_eq!(fs::read(m.path("b")).unwrap(), b"A");
}

// ---- directories ------------------------------------------------------------------------------

#[test]
fn mkdir_rmdir_and_empty_directories_persist_across_remount() {
    let mut m = mount!();
    fs::create_dir_all(m.path("a/b/c")).unwrap();
    fs::write(m.path("a/b/file"), b"x").unwrap();
    assert_eq!(
        errno(&fs::create_dir(m.path("a")).unwrap_err()),
        libc::EEXIST
    );
    assert_eq!(
        errno(&fs::remove_dir(m.path("a/b")).unwrap_err()),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(&fs::remove_dir(m.path("a/b/file")).unwrap_err()),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(&fs::remove_file(m.path("a/b")).unwrap_err()),
        libc::EISDIR
    );
    assert_eq!(fs::metadata(m.path("a")).unwrap().nlink(), 3);
    m.remount();
    assert!(fs::metadata(m.path("a/b/c")).unwrap().is_dir());
    fs::remove_dir(m.path("a/b/c")).unwrap();
    assert_eq!(
        errno(&fs::metadata(m.path("a/b/c")).unwrap_err()),
        libc::ENOENT
    );
}

#[test]
fn readdir_lists_every_entry_once_while_the_directory_changes() {
    let m = mount!();
    for i in 0..1500 {
        File::create(m.path(format!("entry-{i:04}-{}", "n".repeat(60)))).unwrap();
    }
    let mut seen: Vec<String> = Vec::new();
    for (i, e) in fs::read_dir(m.mnt()).unwrap().enumerate() {
        seen.push(e.unwrap().file_name().into_string().unwrap());
        if i == 100 {
            // Changes during the listing: entries that exist throughout appear exactly once.
            File::create(m.path("late")).unwrap();
            fs::remove_file(m.path(format!("entry-0000-{}", "n".repeat(60)))).unwrap();
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no entry twice");
    for i in 1..1500 {
        assert!(seen.contains(&format!("entry-{i:04}-{}", "n".repeat(60))));
    }
}

// ---- attributes --------------------------------------------------------------------------------

#[test]
fn utimensat_is_exact_to_the_nanosecond_on_files_directories_and_symlinks() {
    let mut m = mount!();
    fs::write(m.path("f"), b"x").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    symlink("f", m.path("l")).unwrap();
    let at = TimeSpec::new(1_000_000_000, 123_456_789);
    let mt = TimeSpec::new(1_234_567_890, 987_654_321);
    for name in ["f", "d", "l"] {
        utimensat(
            nix::fcntl::AT_FDCWD,
            &m.path(name),
            &at,
            &mt,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    let check = |m: &defs_tests::mount::TestMount| {
        for name in ["f", "d", "l"] {
            let md = fs::symlink_metadata(m.path(name)).unwrap();
            assert_eq!(
                (md.mtime(), md.mtime_nsec()),
                (1_234_567_890, 987_654_321),
                "{name}"
            );
            assert_eq!(
                (md.atime(), md.atime_nsec()),
                (1_000_000_000, 123_456_789),
                "{name}"
            );
        }
    };
    check(&m);
    m.remount();
    check(&m);
}

#[test]
fn chmod_and_chown_persist_and_inode_numbers_are_stable_across_remount() {
    let mut m = mount!();
    let p = m.path("f");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    let before = fs::metadata(&p).unwrap();
    assert_eq!(before.mode() & 0o7777, 0o640);
    assert_eq!((before.uid(), before.gid()), (1234, 5678));
    m.remount();
    let after = fs::metadata(&p).unwrap();
    assert_eq!(after.ino(), before.ino());
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!((after.uid(), after.gid()), (1234, 5678));
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec())
    );
}

#[test]
fn permissions_are_enforced_by_the_kernel() {
    // allow_other, so that another user may enter the mount at all; then the mode bits decide.
    let m = mount!("allow_other");
    let parent = m.mnt().parent().unwrap().to_path_buf();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |args: &[&str], path: &std::path::Path| {
        std::process::Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--clear-groups"])
            .args(args)
            .arg(path)
            .output()
            .unwrap()
    };
    let public = m.path("public");
    fs::write(&public, b"hello").unwrap();
    let out = as_user(&["cat"], &public);
    assert_eq!(
        out.stdout,
        b"hello",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let private = m.path("private");
    fs::write(&private, b"secret").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&private, Some(4321), Some(4321)).unwrap();
    let out = as_user(&["cat"], &private);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));

    // Only root may give a file away, even its owner may not.
    std::os::unix::fs::chown(&public, Some(1000), Some(1000)).unwrap();
    let out = as_user(&["chown", "2000"], &public);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A directory without write permission refuses new entries.
    let out = as_user(&["touch"], &m.path("new-file"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}

// ---- links -------------------------------------------------------------------------------------

#[test]
fn symlinks_and_hard_links() {
    let mut m = mount!();
    fs::write(m.path("target"), b"T").unwrap();
    symlink("target", m.path("sym")).unwrap();
    symlink("/nowhere/at/all", m.path("dangling")).unwrap();
    fs::hard_link(m.path("target"), m.path("hard")).unwrap();
    assert_eq!(
        fs::read_link(m.path("sym")).unwrap().to_str(),
        Some("target")
    );
    assert_eq!(fs::read(m.path("sym")).unwrap(), b"T");
    assert_eq!(fs::metadata(m.path("target")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(m.path("hard")).unwrap().ino(),
        fs::metadata(m.path("target")).unwrap().ino()
    );
    fs::create_dir(m.path("dir")).unwrap();
    assert_eq!(
        errno(&fs::hard_link(m.path("dir"), m.path("dir2")).unwrap_err()),
        libc::EPERM
    );
    assert_eq!(
        errno(&fs::read_link(m.path("target")).unwrap_err()),
        libc::EINVAL
    );
    m.remount();
    assert_eq!(
        fs::read_link(m.path("dangling")).unwrap().to_str(),
        Some("/nowhere/at/all")
    );
    fs::remove_file(m.path("target")).unwrap();
    assert_eq!(fs::read(m.path("hard")).unwrap(), b"T");
    assert_eq!(fs::metadata(m.path("hard")).unwrap().nlink(), 1);
}

/// The kind, device number, mode and owner of `p`, as `stat` reports them.
fn node(p: &std::path::Path) -> (&'static str, u64, u32, u32, u32) {
    use std::os::unix::fs::FileTypeExt;
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let t = md.file_type();
    let kind = if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "char"
    } else if t.is_block_device() {
        "block"
    } else if t.is_socket() {
        "socket"
    } else {
        "other"
    };
    (kind, md.rdev(), md.mode() & 0o7777, md.uid(), md.gid())
}

#[test]
fn every_file_kind_is_made_by_mknod_and_keeps_its_kind_and_device_number_across_remount() {
    use nix::sys::stat::{Mode, SFlag, mknod};
    let mut m = mount!();
    let mode = |bits| Mode::from_bits_truncate(bits);
    nix::unistd::mkfifo(&m.path("fifo"), mode(0o644)).unwrap();
    mknod(
        &m.path("null"),
        SFlag::S_IFCHR,
        mode(0o666),
        libc::makedev(1, 3),
    )
    .unwrap();
    mknod(
        &m.path("sda1"),
        SFlag::S_IFBLK,
        mode(0o660),
        libc::makedev(8, 1),
    )
    .unwrap();
    // The largest major and minor the kernel's 32-bit device number holds.
    let big = libc::makedev(4095, (1 << 20) - 1);
    mknod(&m.path("big"), SFlag::S_IFBLK, mode(0o600), big).unwrap();
    // A socket is what bind(2) of an AF_UNIX path makes; it works while its listener lives
    // (the kernel connects by inode, the file system only stores the name).
    let listener = std::os::unix::net::UnixListener::bind(m.path("S.agent")).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect(m.path("S.agent")).unwrap();
    client.write_all(b"hi").unwrap();
    let mut got = [0u8; 2];
    listener.accept().unwrap().0.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");

    // Owner, mode, times and xattrs as on any inode (user.* names are the kernel's to refuse
    // on special files, as on ext4; trusted.* are stored).
    std::os::unix::fs::chown(m.path("sda1"), Some(1000), Some(6)).unwrap();
    for (name, mode) in [
        ("fifo", 0o644),
        ("null", 0o620),
        ("sda1", 0o660),
        ("big", 0o600),
        ("S.agent", 0o711),
    ] {
        fs::set_permissions(m.path(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    let mt = TimeSpec::new(1_234_567_890, 987_654_321);
    utimensat(
        nix::fcntl::AT_FDCWD,
        &m.path("S.agent"),
        &mt,
        &mt,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    defs_tests::mount::run(
        std::process::Command::new("setfattr")
            .args(["-n", "trusted.k", "-v", "v"])
            .arg(m.path("big")),
    );
    // The mount is nodev: a device node stored in it opens no device.
    let e = File::open(m.path("null")).unwrap_err();
    assert_eq!(errno(&e), libc::EACCES, "{e}");
    // The kernel's refusals, as on ext4: user.* xattrs on special files, a truncate.
    let o = std::process::Command::new("setfattr")
        .args(["-n", "user.k", "-v", "v"])
        .arg(m.path("null"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
        "{o:?}"
    );
    let e = nix::unistd::truncate(&m.path("sda1"), 0).unwrap_err();
    assert_eq!(e as i32, libc::EINVAL);

    let expect = [
        ("fifo", ("fifo", 0, 0o644, 0, 0)),
        ("null", ("char", libc::makedev(1, 3), 0o620, 0, 0)),
        ("sda1", ("block", libc::makedev(8, 1), 0o660, 1000, 6)),
        ("big", ("block", big, 0o600, 0, 0)),
        ("S.agent", ("socket", 0, 0o711, 0, 0)),
    ];
    let check = |m: &defs_tests::mount::TestMount| {
        for (name, want) in expect {
            assert_eq!(node(&m.path(name)), want, "{name}");
        }
        let md = fs::symlink_metadata(m.path("S.agent")).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_234_567_890, 987_654_321));
        let v = defs_tests::mount::run(
            std::process::Command::new("getfattr")
                .args(["-n", "trusted.k", "--only-values"])
                .arg(m.path("big")),
        );
        assert_eq!(v, "v");
    };
    check(&m);
    drop(client);
    drop(listener);
    m.remount();
    check(&m);
    // They go as any name goes.
    for name in ["fifo", "null", "sda1", "big", "S.agent"] {
        fs::remove_file(m.path(name)).unwrap();
    }
    assert_eq!(fs::read_dir(m.mnt()).unwrap().count(), 0);
}

/// Only a caller with CAP_MKNOD makes device nodes: the kernel refuses everyone else before a
/// file system sees the request, on DeFS as on the host's file system; fifos and sockets are
/// anyone's.
#[test]
fn mknod_of_a_device_is_refused_to_non_root_as_on_the_host_file_system() {
    let m = mount!("allow_other");
    let host = m.scratch().join("host");
    fs::create_dir(&host).unwrap();
    let shared = m.path("shared");
    fs::create_dir(&shared).unwrap();
    for (dir, mode) in [
        (m.mnt().parent().unwrap(), 0o755),
        (m.scratch().as_path(), 0o755),
        (&host, 0o777),
        (&shared, 0o777),
    ] {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
    let as_user = |args: &[&str], dir: &std::path::Path, name: &str| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--clear-groups", "mknod"])
            .arg(dir.join(name))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).replace(&dir.display().to_string(), "DIR"),
        )
    };
    for (name, args) in [
        ("c", &["c", "1", "3"][..]),
        ("b", &["b", "8", "1"][..]),
        ("p", &["p"][..]),
    ] {
        let on_host = as_user(args, &host, name);
        let on_defs = as_user(args, &shared, name);
        assert_eq!(on_defs, on_host, "mknod {name}");
        assert_eq!(on_defs.0, name == "p", "{on_defs:?}");
        if name != "p" {
            assert!(on_defs.1.contains("Operation not permitted"), "{on_defs:?}");
        }
    }
    // Root makes both kinds of device on either.
    for (name, kind) in [("c", "char"), ("b", "block")] {
        for dir in [&host, &shared] {
            defs_tests::mount::run(
                std::process::Command::new("mknod")
                    .arg(dir.join(name))
                    .args([&name[..1], "1", "3"]),
            );
            assert_eq!(node(&dir.join(name)).0, kind);
        }
    }
}

// ---- extended attributes -----------------------------------------------------------------------

#[test]
fn xattrs_round_trip_and_refusals_have_their_errno() {
    let mut m = mount!();
    let p = m.path("x");
    fs::write(&p, b"x").unwrap();
    let set = |name: &str, value: &str, extra: &[&str]| {
        std::process::Command::new("setfattr")
            .args(extra)
            .args(["-n", name, "-v", value])
            .arg(&p)
            .output()
            .unwrap()
    };
    assert!(set("user.one", "1", &[]).status.success());
    assert!(set("user.two", "0x00ff", &[]).status.success());
    m.remount();
    let out = defs_tests::mount::run(
        std::process::Command::new("getfattr")
            .args(["-d", "-e", "hex"])
            .arg(&p),
    );
    assert!(out.contains("user.one=0x31"), "{out}");
    assert!(out.contains("user.two=0x00ff"), "{out}");
    let get = std::process::Command::new("getfattr")
        .args(["-n", "user.missing"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&get.stderr).contains("No such attribute"));
    assert!(
        std::process::Command::new("setfattr")
            .args(["-x", "user.one"])
            .arg(&p)
            .status()
            .unwrap()
            .success()
    );
    let out = defs_tests::mount::run(std::process::Command::new("getfattr").arg("-d").arg(&p));
    assert!(!out.contains("user.one"));
}

#[test]
fn posix_acl_xattrs_are_stored_as_opaque_bytes() {
    let m = mount!();
    let p = m.path("acl");
    fs::write(&p, b"x").unwrap();
    let setfattr = |hex: &str| {
        defs_tests::mount::run(
            std::process::Command::new("setfattr")
                .args(["-n", "system.posix_acl_access", "-v", hex])
                .arg(&p),
        )
    };
    let getfattr = || {
        std::process::Command::new("getfattr")
            .args(["-n", "system.posix_acl_access", "-e", "hex"])
            .arg(&p)
            .output()
            .unwrap()
    };
    // An extended ACL (USER_OBJ rw, USER 1000 r, GROUP_OBJ r, MASK r, OTHER r) is kept as is.
    let acl = "0x0200000001000600ffffffff02000400e803000004000400ffffffff10000400ffffffff20000400ffffffff";
    setfattr(acl);
    let out = getfattr();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(acl),
        "{out:?}"
    );
    // A minimal one (USER_OBJ rwx, GROUP_OBJ r-x, OTHER none: what `cp -a` sets) becomes the
    // mode's permission bits and replaces the stored ACL, as on ext4.
    setfattr("0x0200000001000700ffffffff04000500ffffffff20000000ffffffff");
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    let out = getfattr();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such attribute"),
        "{out:?}"
    );
}

// ---- statfs, read-only -------------------------------------------------------------------------

#[test]
fn statfs_reports_real_nonzero_capacity() {
    let m = mount!();
    let st = nix::sys::statvfs::statvfs(&m.mnt()).unwrap();
    assert!(st.blocks() > 0 && st.blocks_available() > 0);
    assert!(st.fragment_size() > 0);
    assert_eq!(st.name_max(), 255);
}

#[test]
fn a_read_only_mount_refuses_every_change_with_erofs() {
    let mut m = mount!();
    fs::write(m.path("f"), b"x").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    m.unmount();
    let mut ro = defs_tests::mount::TestMount::reuse(m, &["ro"]);
    assert_eq!(fs::read(ro.path("f")).unwrap(), b"x");
    let erofs = |r: std::io::Result<()>| assert_eq!(errno(&r.unwrap_err()), libc::EROFS);
    erofs(fs::write(ro.path("g"), b"x"));
    erofs(OpenOptions::new().write(true).open(ro.path("f")).map(drop));
    erofs(fs::create_dir(ro.path("e")));
    erofs(fs::remove_file(ro.path("f")));
    erofs(fs::rename(ro.path("f"), ro.path("h")));
    erofs(fs::set_permissions(
        ro.path("f"),
        fs::Permissions::from_mode(0o600),
    ));
    ro.unmount();
}

#[test]
fn open_for_write_with_o_trunc_and_o_creat_mode() {
    let m = mount!();
    let p = m.path("moded");
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&p)
        .unwrap();
    drop(f);
    // The process umask applies, as on a local disk.
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
}

// ---- upload state ------------------------------------------------------------------------------

#[test]
fn with_no_peers_a_file_is_stored_on_the_local_node_and_its_durability_says_so() {
    // The mount's node has no peers: DESIGN §5, the shards stay on this machine's own store,
    // the file becomes clean, and its state and durability say it is not on the network
    // (issue 25: kept on this machine only), and `defs sync` fails naming it.
    let m = mount!();
    let p = m.path("f");
    fs::write(&p, b"x").unwrap();
    let xattr = |name: &str| {
        defs_tests::mount::run(
            std::process::Command::new("getfattr")
                .args(["-n", name, "--only-values"])
                .arg(&p),
        )
    };
    assert!(
        ["dirty", "uploading"]
            .iter()
            .any(|s| xattr("user.defs.state").starts_with(s)),
        "{}",
        xattr("user.defs.state")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !xattr("user.defs.state").starts_with("clean") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            xattr("user.defs.state")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let state = xattr("user.defs.state");
    assert!(state.starts_with("clean; not on the network"), "{state}");
    let durability = xattr("user.defs.durability");
    assert!(
        durability.starts_with(
            "not on the network: 0/1 shards on other live nodes, 1 only on this machine"
        ),
        "{durability}"
    );
    let o = defs_tests::cluster::out(m.defs().arg("sync"));
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        defs_tests::cluster::text(&o)
    );
    assert!(
        defs_tests::cluster::text(&o).contains(&format!("{}: not on the network", p.display())),
        "{}",
        defs_tests::cluster::text(&o)
    );
    assert_eq!(xattr("user.defs.id").len(), 64);
    // Not listed, so rsync -X / cp -a never copy them; read-only.
    let all = defs_tests::mount::run(std::process::Command::new("getfattr").arg("-d").arg(&p));
    assert!(!all.contains("defs."), "{all}");
    let out = std::process::Command::new("setfattr")
        .args(["-n", "user.defs.state", "-v", "dirty"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
}

// ---- not supported -----------------------------------------------------------------------------

#[test]
fn unsupported_operations_answer_as_documented() {
    use nix::unistd::{Whence, lseek};
    let m = mount!();
    let p = m.path("f");
    let f = File::create(&p).unwrap();
    f.write_all_at(b"tail", 1 << 20).unwrap();
    // SEEK_DATA/SEEK_HOLE answer from the layout: the hole before the tail is a hole.
    assert_eq!(lseek(&f, 0, Whence::SeekData).unwrap(), 1 << 20);
    assert_eq!(lseek(&f, 0, Whence::SeekHole).unwrap(), 0);
    assert_eq!(lseek(&f, 1 << 20, Whence::SeekHole).unwrap(), (1 << 20) + 4);
    // copy_file_range works (std::io::copy uses it; the kernel copies through the page cache).
    let mut out = File::create(m.path("copy")).unwrap();
    let mut src = File::open(&p).unwrap();
    let n = std::io::copy(&mut src, &mut out).unwrap();
    assert_eq!(n, (1 << 20) + 4);
    drop(out);
    assert_eq!(fs::read(m.path("copy")).unwrap(), fs::read(&p).unwrap());
    // ioctl: refused; FS_IOC_GETFLAGS (lsattr) reaches the program as EOPNOTSUPP.
    let out = std::process::Command::new("lsattr")
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not supported"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Locks are the kernel's, local to this machine.
    let g = File::open(&p).unwrap();
    nix::fcntl::Flock::lock(g, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
}
