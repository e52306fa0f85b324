//! A backup that exits 0 (issue 24): `rsync -aHAXS --numeric-ids` of a home-like tree that
//! holds every file kind — regular, sparse and empty files, directories, symlinks (dangling
//! too), hard links, a fifo, character and block devices, a Unix socket, user, trusted and
//! security xattrs, access and default POSIX ACLs, other owners — onto a mount over real
//! `defs node` processes on 127.0.0.1. Then a checksum dry run must find nothing to copy: at
//! once, after a remount, after `defs sync`, and after the local cache is deleted (file bytes
//! then come back from the nodes). Holes stay holes: the sparse image takes its data, not its
//! size, every time.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use defs_tests::cluster::{Cluster, out, text};
use defs_tests::mount::{TestMount, left_to_copy, mount_on, pseudo_random, rsync_copy, run};

/// Builds the tree at `src`.
fn home_tree(src: &Path) {
    use nix::sys::stat::{Mode, SFlag, mknod};
    let p = |rel: &str| src.join(rel);
    let must = |r: std::io::Result<()>, what: &str| r.unwrap_or_else(|e| panic!("{what}: {e}"));
    for d in [
        ".config/app",
        ".cache",
        ".gnupg",
        ".ssh",
        "Documents/empty",
        "Pictures",
        "VMs",
        "dev",
    ] {
        must(fs::create_dir_all(p(d)), d);
    }
    let deep: String = (0..40).map(|i| format!("d{i}/")).collect();
    must(fs::create_dir_all(p(&deep)), "deep");
    must(fs::write(p(&format!("{deep}bottom")), b"deep"), "bottom");

    must(fs::write(p(".bashrc"), b"export EDITOR=vi\n"), ".bashrc");
    must(
        fs::write(p("Documents/report.txt"), pseudo_random(1, 5000)),
        "report",
    );
    must(fs::write(p("Documents/empty.txt"), b""), "empty file");
    must(
        fs::write(p("Pictures/photo.jpg"), pseudo_random(2, 3 << 20)),
        "photo",
    );
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff.txt");
    must(fs::write(p("Documents").join(odd), b"latin-1"), "odd name");
    must(
        fs::write(p(&format!("Documents/{}", "n".repeat(255))), b"x"),
        "long name",
    );
    must(
        fs::write(p(".ssh/id_ed25519"), b"-----BEGIN KEY-----\n"),
        "key",
    );
    must(
        fs::set_permissions(p(".ssh/id_ed25519"), fs::Permissions::from_mode(0o600)),
        "chmod key",
    );
    must(
        fs::set_permissions(p(".ssh"), fs::Permissions::from_mode(0o700)),
        "chmod .ssh",
    );
    must(
        fs::set_permissions(p(".bashrc"), fs::Permissions::from_mode(0o4755)),
        "setuid",
    );

    // A sparse disk image: 64 MiB long, two short runs of data.
    must(
        fs::File::create(p("VMs/disk.img")).and_then(|img| {
            img.set_len(64 << 20)?;
            std::os::unix::fs::FileExt::write_all_at(&img, &pseudo_random(3, 4096), 0)?;
            std::os::unix::fs::FileExt::write_all_at(&img, &pseudo_random(4, 1 << 20), 32 << 20)
        }),
        "sparse image",
    );

    must(
        fs::hard_link(p("Documents/report.txt"), p("Documents/report-link.txt")),
        "hard link",
    );
    must(
        symlink("../Documents/report.txt", p(".config/report")),
        "relative symlink",
    );
    must(
        symlink("/etc/hostname", p(".config/hostname")),
        "absolute symlink",
    );
    must(
        symlink("nowhere/at/all", p(".config/dangling")),
        "dangling symlink",
    );

    nix::unistd::mkfifo(&p(".cache/fifo"), Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    let node = |rel: &str, kind, major, minor, mode| {
        mknod(
            &p(rel),
            kind,
            Mode::from_bits_truncate(mode),
            libc::makedev(major, minor),
        )
        .unwrap_or_else(|e| panic!("mknod {rel}: {e}"));
    };
    node("dev/null", SFlag::S_IFCHR, 1, 3, 0o666);
    node("dev/sda", SFlag::S_IFBLK, 8, 0, 0o660);
    node("dev/whiteout", SFlag::S_IFCHR, 0, 0, 0o000);
    // The agent's socket stays behind when the agent is gone, as after a logout.
    must(
        std::os::unix::net::UnixListener::bind(p(".gnupg/S.gpg-agent")).map(drop),
        "bind",
    );
    // A hard link to a device node.
    must(
        fs::hard_link(p("dev/null"), p("dev/null-too")),
        "device link",
    );

    let xattr = |name: &str, value: &str, rel: &str| {
        run(Command::new("setfattr")
            .args(["-h", "-n", name, "-v", value])
            .arg(p(rel)));
    };
    xattr("user.comment", "quarterly", "Documents/report.txt");
    xattr("user.dir", "0x00ff00", "Documents");
    xattr("trusted.overlay.opaque", "y", ".config");
    xattr("trusted.k", "on a device", "dev/sda");
    xattr("security.test", "label", "Pictures/photo.jpg");
    run(Command::new("setfacl")
        .args(["-m", "u:1000:r--,g:100:rw-"])
        .arg(p("Documents/report.txt")));
    run(Command::new("setfacl")
        .args(["-d", "-m", "g:100:rwx"])
        .arg(p("Documents")));

    for (rel, uid) in [
        (".ssh", 1000),
        (".ssh/id_ed25519", 1000),
        ("Pictures/photo.jpg", 4321),
        ("dev/sda", 6),
        (".gnupg/S.gpg-agent", 1000),
    ] {
        must(std::os::unix::fs::lchown(p(rel), Some(uid), Some(uid)), rel);
    }
}

fn assert_nothing_left(m: &TestMount, src: &Path, when: &str) {
    let left = left_to_copy(src, &m.path("dst"));
    assert_eq!(left, "", "rsync -c finds changes {when}\nlog:\n{}", m.log());
    // Spelled out, so no rsync option could have skipped them: every kind is there.
    let kind = |rel: &str| {
        fs::symlink_metadata(m.path("dst").join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    assert!(kind(".gnupg/S.gpg-agent").file_type().is_socket(), "{when}");
    assert!(kind(".cache/fifo").file_type().is_fifo(), "{when}");
    let null = kind("dev/null");
    assert!(null.file_type().is_char_device(), "{when}");
    assert_eq!(
        (null.rdev(), null.nlink()),
        (libc::makedev(1, 3), 2),
        "{when}"
    );
    let sda = kind("dev/sda");
    assert!(sda.file_type().is_block_device(), "{when}");
    assert_eq!((sda.rdev(), sda.uid()), (libc::makedev(8, 0), 6), "{when}");
    // Holes survive the round trip: the 64 MiB image holds 1 MiB + 4 KiB of data (issue 24).
    let img = kind("VMs/disk.img");
    assert_eq!(img.len(), 64 << 20, "{when}");
    assert!(
        img.blocks() * 512 <= 2 << 20,
        "the sparse image takes {} bytes {when}",
        img.blocks() * 512
    );
}

#[test]
fn rsync_ahaxs_of_a_home_with_every_file_kind_exits_0_and_a_checksum_run_finds_nothing() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    let src = m.scratch().join("home");
    home_tree(&src);

    let o = rsync_copy(&src, &m.path("dst"));
    assert_eq!(
        o.status.code(),
        Some(0),
        "rsync -aHAXS: {}\nlog:\n{}",
        text(&o),
        m.log()
    );
    assert_nothing_left(&m, &src, "right after the copy");

    m.remount();
    assert_nothing_left(&m, &src, "after a remount");

    let o = out(m.defs().arg("sync").arg(m.mnt()));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
    assert_nothing_left(&m, &src, "after defs sync");

    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();
    assert_nothing_left(&m, &src, "after the cache was deleted");
}
