//! The mount's life: defs-mount's refusals and exit codes, clean unmounts on signals and on
//! `fusermount3 -u`, `-f`, and the `mount.defs` form that /etc/fstab uses.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use defs_tests::bin;
use defs_tests::mount::{TestMount, UNMOUNT_TIMEOUT, wait_exit};

use super::mount;

#[test]
fn defs_mount_refuses_a_missing_or_non_empty_mountpoint_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = bin("defs-mount")
        .arg(&missing)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains(&format!("mountpoint {} does not exist", missing.display())),
        "{msg}"
    );

    let full = dir.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    let out = bin("defs-mount")
        .arg(&full)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
}

#[test]
fn defs_mount_refuses_unknown_options_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin("defs-mount")
        .arg(dir.path())
        .args(["-o", "no_such_option"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_option"));
}

#[test]
fn sigterm_and_sigint_unmount_cleanly_and_keep_the_data() {
    let mut m = mount!();
    for (i, signal) in [nix::sys::signal::SIGTERM, nix::sys::signal::SIGINT]
        .into_iter()
        .enumerate()
    {
        fs::write(m.path(format!("f{i}")), b"kept").unwrap();
        let pid = m.pid().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
        wait_exit(pid, UNMOUNT_TIMEOUT);
        assert!(!m.is_mounted(), "unmounted after {signal}");
        assert!(m.log().contains("unmounted cleanly"), "{}", m.log());
        m.mount();
    }
    assert_eq!(fs::read(m.path("f0")).unwrap(), b"kept");
    assert_eq!(fs::read(m.path("f1")).unwrap(), b"kept");
}

#[test]
fn fusermount_u_ends_the_daemon_cleanly() {
    let mut m = mount!();
    fs::write(m.path("f"), b"x").unwrap();
    m.unmount(); // fusermount3 -u, then waits for the daemon to exit
    assert!(m.log().contains("unmounted cleanly"));
    assert!(!m.data_dir().join("defs-mount.pid").exists());
    // defs-mount created the identity the data dir lacked, mode 0600.
    let key = fs::metadata(m.data_dir().join("identity.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn a_mount_right_after_fusermount_u_waits_for_the_old_daemon_to_let_go() {
    let mut m = mount!();
    fs::write(m.path("f"), b"first mount").unwrap();
    for _ in 0..3 {
        let old = m.pid().unwrap();
        m.unmount_nowait();
        m.mount(); // at once: it waits for the old daemon instead of failing on its stores
        assert_ne!(m.pid(), Some(old));
        assert_eq!(fs::read(m.path("f")).unwrap(), b"first mount");
    }
    // A lock held by someone else for a second: the mount waits for it, then serves.
    m.unmount();
    let lock = fs::File::create(m.data_dir().join("node.lock")).unwrap();
    lock.lock().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(lock);
    });
    let started = std::time::Instant::now();
    m.mount();
    assert!(started.elapsed() >= Duration::from_millis(900));
    release.join().unwrap();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"first mount");
}

#[test]
fn a_mount_refuses_with_a_clear_message_while_another_process_holds_the_data_dir() {
    let mut m = mount!();
    m.unmount();
    // Held for longer than a mount waits (10 s): a process that hangs in its shutdown.
    let lock = fs::File::create(m.data_dir().join("node.lock")).unwrap();
    lock.lock().unwrap();
    let out = m.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still shutting down"), "{err}");
    assert!(!m.is_mounted());
    drop(lock);
    m.mount();
}

#[test]
fn mount_options_reach_the_kernel() {
    let Some(m) = TestMount::with_options(&["allow_other,fsname=mydefs", "threads=2"]) else {
        return;
    };
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let mnt = m.mnt();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
        .unwrap();
    assert!(line.starts_with("mydefs "), "{line}");
    assert!(
        line.contains("allow_other") && line.contains("default_permissions"),
        "{line}"
    );
    // The type is fuse.defs, so findmnt and mount -a recognise a DeFS mount.
    assert!(line.contains(" fuse.defs "), "{line}");
}

#[test]
fn a_mount_whose_daemon_was_killed_is_refused_with_advice() {
    let mut m = mount!();
    let pid = m.pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    wait_exit(pid, UNMOUNT_TIMEOUT);
    let out = m.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("stale mount") && msg.contains("fusermount3 -u"),
        "{msg}"
    );
    m.crash_cleanup();
    m.mount();
}

#[test]
fn foreground_mode_serves_until_sigint() {
    let Some(probe) = TestMount::new() else {
        return;
    };
    // Reuse the probe's temp dir layout with a second mount point served in the foreground.
    let mnt = probe.scratch().join("fg");
    fs::create_dir(&mnt).unwrap();
    let mut child = bin("defs-mount")
        .arg(&mnt)
        .arg("--data-dir")
        .arg(probe.scratch().join("fgdata"))
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .arg("-f")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !probe.scratch().join("fgdata/defs-mount.pid").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "foreground mount never got ready"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "defs-mount -f exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(mnt.join("x"), b"fg").unwrap();
    assert_eq!(fs::read(mnt.join("x")).unwrap(), b"fg");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(fs::read_dir(&mnt).unwrap().next().is_none(), "unmounted");
}

#[test]
fn mount_defs_works_in_the_form_mount_8_calls_it_from_fstab() {
    let Some(probe) = TestMount::new() else {
        return;
    };
    let scratch = probe.scratch();
    // mount.defs is a symlink to defs-mount (installed as /sbin/mount.defs).
    let helper = scratch.join("mount.defs");
    std::os::unix::fs::symlink(defs_tests::bin_dir().join("defs-mount"), &helper).unwrap();
    let mnt = scratch.join("fstab-mnt");
    fs::create_dir(&mnt).unwrap();
    let data = scratch.join("fstab-data");
    // fstab passes no --no-mdns: keep the mount's node on loopback through its config.
    fs::create_dir(&data).unwrap();
    fs::write(
        data.join("config.toml"),
        "[node]\nmdns = false\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n",
    )
    .unwrap();
    // What mount(8) runs for: DATA_DIR MNT defs defaults,_netdev,nofail 0 0
    let out = Command::new(&helper)
        .arg(&data)
        .arg(&mnt)
        .args(["-o", "rw,defaults,_netdev,nofail"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(mnt.join("f"), b"from fstab").unwrap();
    assert!(data.join("meta").is_dir(), "SOURCE is the data dir");
    let pid: i32 = fs::read_to_string(data.join("defs-mount.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_exit(pid, UNMOUNT_TIMEOUT);
    // -f (fake) does nothing; bad usage is exit 2.
    assert!(
        Command::new(&helper)
            .arg(&data)
            .arg(&mnt)
            .arg("-f")
            .status()
            .unwrap()
            .success()
    );
    assert!(fs::read_dir(&mnt).unwrap().next().is_none());
    assert_eq!(
        Command::new(&helper).arg(&data).status().unwrap().code(),
        Some(2)
    );
}
