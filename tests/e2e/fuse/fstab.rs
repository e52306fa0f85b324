//! DeFS through mount(8) and an fstab line (issue 25): `defs install-helper` puts
//! `/sbin/mount.defs` in place, `mount -T FSTAB MOUNTPOINT` mounts it, the mount shows as type
//! `fuse.defs` with the data dir as its source, and `mount -a` leaves it alone once mounted.
//! Uses a temporary fstab (`mount -T`), never /etc/fstab. And what a mount says about a bad
//! bootstrap address, and `defs status` after `kill -9` of a mount.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use defs_tests::bin;
use defs_tests::cluster::{defs, out, text};
use defs_tests::mount::{TestMount, UNMOUNT_TIMEOUT, fuse_unusable, wait_exit};

/// Puts `/sbin/mount.defs` back as it was when dropped.
struct HelperGuard {
    link: PathBuf,
    before: Option<PathBuf>,
}

impl Drop for HelperGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.link);
        if let Some(target) = &self.before {
            let _ = std::os::unix::fs::symlink(target, &self.link);
        }
    }
}

/// The mount table line of `mnt`: (source, type).
fn mount_of(mnt: &Path) -> Option<(String, String)> {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE,FSTYPE", "--mountpoint"])
        .arg(mnt)
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (src, ty) = line.split_once(char::is_whitespace)?;
    Some((src.trim().to_string(), ty.trim().to_string()))
}

#[test]
fn r25_an_fstab_line_mounts_through_mount_and_mount_a_leaves_it_alone() {
    if let Some(why) = fuse_unusable() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "FUSE tests cannot run: {why} (CI=true: failing, not skipping)"
        );
        eprintln!("skipping a FUSE test: {why}");
        return;
    }
    let link = Path::new("/sbin/mount.defs");
    let _guard = HelperGuard {
        link: link.to_path_buf(),
        before: fs::read_link(link).ok(),
    };
    let o = out(bin("defs").args(["install-helper", "--force"]));
    assert!(o.status.success(), "install-helper: {}", text(&o));
    assert_eq!(
        fs::canonicalize(link).unwrap(),
        fs::canonicalize(defs_tests::bin_dir().join("defs-mount")).unwrap()
    );
    let help = out(Command::new(link).arg("--help"));
    assert!(help.status.success(), "{}", text(&help));
    assert!(
        text(&help).contains("bootstrap=MULTIADDR"),
        "{}",
        text(&help)
    );

    let root = tempfile::Builder::new()
        .prefix("defs-fstab")
        .tempdir()
        .unwrap();
    let root = fs::canonicalize(root.path()).unwrap();
    let (data, mnt) = (root.join("data"), root.join("mnt"));
    fs::create_dir(&mnt).unwrap();
    let fstab = root.join("fstab");
    fs::write(
        &fstab,
        format!(
            "# a DeFS line, as README shows\n{} {} defs defaults,noauto,_netdev,no_mdns,listen=/ip4/127.0.0.1/tcp/0 0 0\n",
            data.display(),
            mnt.display()
        ),
    )
    .unwrap();
    let o = out(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
    assert!(o.status.success(), "mount -T: {}", text(&o));
    let mounted = mount_of(&mnt);
    let pid: i32 = fs::read_to_string(data.join("defs-mount.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let unmount = |mnt: &Path| {
        let _ = Command::new("umount").arg(mnt).status();
        wait_exit(pid, UNMOUNT_TIMEOUT);
    };
    if mounted != Some((data.display().to_string(), "fuse.defs".to_string())) {
        unmount(&mnt);
        panic!("mount table says {mounted:?}");
    }
    fs::write(mnt.join("hello.txt"), b"through fstab").unwrap();

    // Already mounted: `mount -a` must not run the helper again (noauto is not in the way:
    // `mount -a` skips noauto lines, so check with a line without it too).
    let auto = root.join("fstab-auto");
    fs::write(
        &auto,
        fs::read_to_string(&fstab).unwrap().replace("noauto,", ""),
    )
    .unwrap();
    let o = out(Command::new("mount").arg("-a").arg("-T").arg(&auto));
    let again = out(Command::new("mount")
        .arg("-a")
        .arg("-v")
        .arg("-T")
        .arg(&auto));
    unmount(&mnt);
    assert!(o.status.success(), "mount -a: {}", text(&o));
    assert!(
        text(&again).contains("already mounted"),
        "mount -a -v: {}",
        text(&again)
    );
    // The file is in the data dir's cache; mounting again shows it.
    let o = out(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
    assert!(o.status.success(), "mount -T again: {}", text(&o));
    let pid2: i32 = fs::read_to_string(data.join("defs-mount.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let content = fs::read(mnt.join("hello.txt"));
    let _ = Command::new("umount").arg(&mnt).status();
    wait_exit(pid2, UNMOUNT_TIMEOUT);
    assert_eq!(content.unwrap(), b"through fstab");
}

#[test]
fn r25_status_after_kill_9_names_the_dead_mount_and_its_stale_pid_file() {
    let Some(mut m) = TestMount::new() else {
        return;
    };
    let pid = m.pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_exit(pid, UNMOUNT_TIMEOUT);
    let o = out(defs(&m.data_dir()).args(["status", "--no-mdns"]));
    m.crash_cleanup();
    let t = text(&o);
    assert!(
        t.contains(&format!("pid {pid}")) && t.contains("is gone") && t.contains("removed it"),
        "{t}"
    );
    assert!(
        t.contains(&format!("{} is still mounted", m.mnt().display()))
            && t.contains("fusermount3 -u"),
        "{t}"
    );
    assert!(!m.data_dir().join("defs-mount.pid").exists());
}

#[test]
fn r25_a_mount_warns_of_a_bootstrap_that_cannot_be_dialled_and_does_not_save_it() {
    let Some(mut m) = TestMount::new() else {
        return;
    };
    m.unmount();
    let config = m.data_dir().join("config.toml");
    let before = fs::read_to_string(&config).unwrap_or_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!(
        "/ip4/127.0.0.1/tcp/{port}/p2p/16Uiu2HAm7Jg77WdVcf8VvAQGGtejgDfHjMyeyH6f349ce6Z7XeDh"
    );
    let o = out(m.command().args(["--bootstrap", &addr]));
    let pid = m.pid();
    let _ = Command::new("fusermount3").arg("-u").arg(m.mnt()).status();
    if let Some(pid) = pid {
        wait_exit(pid, UNMOUNT_TIMEOUT);
    }
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("warning") && t.contains(&addr) && t.contains("connection refused"),
        "{t}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap_or_default(), before);
    // Without a peer id it is bad usage, before any daemon starts.
    let o = out(m
        .command()
        .args(["--bootstrap", &format!("/ip4/127.0.0.1/tcp/{port}")]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("has no /p2p/"), "{}", text(&o));
    assert!(!m.is_mounted());
}
