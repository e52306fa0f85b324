//! Real FUSE mounts through the `defs-mount` binary, for the `fuse_tests` feature: a mount in a
//! temp dir, unmounted (and its daemon waited for) when dropped.
//!
//! When /dev/fuse cannot be used, [`TestMount::new`] panics if `CI=true` (a CI run must never
//! skip the mount tests silently) and otherwise returns `None` after saying why on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bin;

/// How long an unmount may take to end the daemon. The daemon syncs the journal, gives running
/// uploads and the final namespace publish their grace, and exits: seconds when idle, but a
/// machine busy with parallel builds was seen to take 40 s (its fsyncs stall behind the
/// builds' writeback), so the bound is generous; a hung daemon still fails.
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether this machine can mount FUSE file systems, and if not, why.
pub fn fuse_unusable() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/fuse cannot be opened: {e}")),
    }
}

/// A temp dir with an empty `mnt`, or `None` (said on stderr) when FUSE is unusable outside CI.
///
/// # Panics
/// When FUSE is unusable and `CI=true`, or the dir cannot be made.
fn fresh_root() -> Option<tempfile::TempDir> {
    if let Some(why) = fuse_unusable() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("FUSE tests cannot run: {why} (CI=true: failing, not skipping)");
        }
        eprintln!("skipping a FUSE test: {why}");
        return None;
    }
    let root = tempfile::Builder::new()
        .prefix("defs-fuse-test")
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
    std::fs::create_dir(root.path().join("mnt")).unwrap_or_else(|e| panic!("mkdir mnt: {e}"));
    Some(root)
}

/// A mounted DeFS in a temporary directory.
#[derive(Debug)]
pub struct TestMount {
    root: tempfile::TempDir,
    options: Vec<String>,
    args: Vec<String>,
    mounted: bool,
}

impl TestMount {
    /// Mounts a fresh DeFS. `None` (with a note on stderr) when FUSE is unusable outside CI.
    ///
    /// # Panics
    /// When FUSE is unusable and `CI=true`, or when the mount fails.
    pub fn new() -> Option<TestMount> {
        Self::with_options(&[])
    }

    /// Like [`TestMount::new`], with `-o` options.
    ///
    /// # Panics
    /// As [`TestMount::new`].
    pub fn with_options(options: &[&str]) -> Option<TestMount> {
        Self::with_args(options, &[])
    }

    /// Like [`TestMount::with_options`], with more `defs-mount` arguments (e.g.
    /// `--bootstrap ADDR`). Every mount's node listens on 127.0.0.1 only and without mDNS, so
    /// tests never meet other nodes on the machine or the LAN.
    ///
    /// # Panics
    /// As [`TestMount::new`].
    pub fn with_args(options: &[&str], args: &[&str]) -> Option<TestMount> {
        Self::with_identity(options, args, args.contains(&"--bootstrap"))
    }

    /// Like [`TestMount::with_args`]; `test_identity` makes the data dir's identity at the test
    /// clusters' difficulty 0 first (else `defs-mount` makes one at the default difficulty, as
    /// `defs init` would, and its node then refuses the clusters' nodes).
    ///
    /// # Panics
    /// As [`TestMount::new`].
    pub fn with_identity(
        options: &[&str],
        args: &[&str],
        test_identity: bool,
    ) -> Option<TestMount> {
        let root = fresh_root()?;
        let mut m = TestMount {
            root,
            options: options.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            mounted: false,
        };
        if test_identity {
            // Peers refuse a node id that does not solve their identity puzzle, and a node asks
            // its own difficulty of its peers: a mount joining a test cluster (difficulty 0,
            // see `cluster::init`) needs an identity of the same difficulty.
            crate::cluster::init(&m.data_dir());
        }
        m.mount();
        Some(m)
    }

    /// A mount whose data dir `prepare` fills first (e.g. with only a copied `identity.key`),
    /// not mounted yet: [`TestMount::mount`] mounts it, [`TestMount::command`] runs
    /// `defs-mount` for a test that expects it to fail. `None` when FUSE is unusable outside CI
    /// (as [`TestMount::new`]).
    ///
    /// # Panics
    /// When FUSE is unusable and `CI=true`.
    pub fn prepared(args: &[&str], prepare: impl FnOnce(&Path)) -> Option<TestMount> {
        let root = fresh_root()?;
        let m = TestMount {
            root,
            options: Vec::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            mounted: false,
        };
        prepare(&m.data_dir());
        Some(m)
    }

    /// Runs `defs-mount` with `extra` arguments (e.g. `--force`, `-o ro`) and returns its
    /// output (stdout then stderr).
    ///
    /// # Panics
    /// When it fails.
    pub fn mount_with(&mut self, extra: &[&str]) -> String {
        let out = self
            .command()
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("running defs-mount: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "defs-mount {extra:?} failed ({}): {text}\nlog:\n{}",
            out.status,
            self.log()
        );
        self.mounted = true;
        text
    }

    /// `defs sync` of the whole mount, which must succeed and say the namespace is published.
    ///
    /// # Panics
    /// When it fails or publishes nothing.
    pub fn sync_published(&self) {
        let o = self
            .defs()
            .arg("sync")
            .arg(self.mnt())
            .output()
            .unwrap_or_else(|e| panic!("running defs sync: {e}"));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(0), "{said}\nlog:\n{}", self.log());
        assert!(said.contains("namespace published (seq "), "{said}");
    }

    /// Mounts the (unmounted) data dir of `m` again with other options.
    ///
    /// # Panics
    /// When the mount fails.
    pub fn reuse(mut m: TestMount, options: &[&str]) -> TestMount {
        assert!(!m.mounted, "unmount first");
        m.options = options.iter().map(|s| s.to_string()).collect();
        m.mount();
        m
    }

    /// The mount point.
    pub fn mnt(&self) -> PathBuf {
        self.root.path().join("mnt")
    }

    /// A path inside the mount.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt().join(rel)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A scratch directory next to the mount (not inside it).
    pub fn scratch(&self) -> PathBuf {
        let p = self.root.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir scratch: {e}"));
        p
    }

    /// The `defs-mount` command for this mount, without running it.
    pub fn command(&self) -> Command {
        let mut cmd = bin("defs-mount");
        cmd.arg(self.mnt()).arg("--data-dir").arg(self.data_dir());
        cmd.args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]);
        cmd.args(&self.args);
        for o in &self.options {
            cmd.arg("-o").arg(o);
        }
        cmd
    }

    /// A `defs` command for this mount's data dir (it talks to the mount's control socket).
    pub fn defs(&self) -> Command {
        crate::cluster::defs(&self.data_dir())
    }

    /// Runs `defs-mount` (which returns once the mount is ready).
    ///
    /// # Panics
    /// When it fails.
    pub fn mount(&mut self) {
        let out = self
            .command()
            .output()
            .unwrap_or_else(|e| panic!("running defs-mount: {e}"));
        assert!(
            out.status.success(),
            "defs-mount failed ({}): {}\nlog:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.mounted = true;
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("logs/defs-mount.log")).unwrap_or_default()
    }

    /// The serving daemon's pid.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data_dir().join("defs-mount.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Unmounts with `fusermount3 -u` and waits until the daemon has exited.
    ///
    /// # Panics
    /// When the unmount fails or the daemon does not exit within [`UNMOUNT_TIMEOUT`].
    pub fn unmount(&mut self) {
        let pid = self.pid();
        self.unmount_nowait();
        if let Some(pid) = pid {
            self.wait_daemon_exit(pid);
        }
    }

    /// Waits until the daemon `pid` of this mount has exited.
    ///
    /// # Panics
    /// When it does not within [`UNMOUNT_TIMEOUT`]; the message ends with its log's last lines.
    pub fn wait_daemon_exit(&self, pid: i32) {
        if !exited_within(pid, UNMOUNT_TIMEOUT) {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "defs-mount (pid {pid}) did not exit within {UNMOUNT_TIMEOUT:?} of its unmount; \
                 its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// Unmounts with `fusermount3 -u` and returns at once, while the daemon may still be
    /// shutting down.
    ///
    /// # Panics
    /// When the unmount fails.
    pub fn unmount_nowait(&mut self) {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(self.mnt())
            .output()
            .unwrap_or_else(|e| panic!("running fusermount3: {e}"));
        assert!(
            out.status.success(),
            "fusermount3 -u failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = false;
    }

    /// Unmounts and mounts the same data dir again.
    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// SIGKILLs the daemon (a crash) and clears the dead mount, ready for [`TestMount::mount`].
    ///
    /// # Panics
    /// When there is no daemon to kill.
    pub fn crash(&mut self) {
        let pid = self.pid().unwrap_or_else(|| panic!("no defs-mount.pid"));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
        wait_exit(pid, UNMOUNT_TIMEOUT);
        self.crash_cleanup();
    }

    /// Clears the dead mount a killed daemon left (`fusermount3 -u -z`).
    pub fn crash_cleanup(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(self.mnt())
            .status();
        self.mounted = false;
    }

    /// Whether the mount point is still a mount.
    pub fn is_mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mnt = self.mnt();
        let mnt = mnt.to_string_lossy();
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(mnt.as_ref()))
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if self.mounted {
            let pid = self.pid();
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(self.mnt())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(self.mnt())
                    .status();
            }
            if let Some(pid) = pid {
                self.wait_daemon_exit(pid);
            }
        }
    }
}

/// Waits until process `pid` has exited.
///
/// # Panics
/// After `timeout`.
pub fn wait_exit(pid: i32, timeout: Duration) {
    assert!(
        exited_within(pid, timeout),
        "process {pid} did not exit within {timeout:?}"
    );
}

/// Whether process `pid` exits (or is a zombie) within `timeout`.
pub fn exited_within(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let pid = nix::unistd::Pid::from_raw(pid);
    while nix::sys::signal::kill(pid, None).is_ok() {
        // A zombie still answers kill(0); it is gone for our purposes once it is not running.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.split(' ').nth(2) == Some("Z") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Runs a command, panicking with its output unless it succeeds; returns its stdout.
///
/// # Panics
/// When the command cannot run or fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift64*), so test data is incompressible and
/// reproducible without a rand dependency.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Generates a source tree of `files` regular files under `dir`: mostly small (0 B to 16 KiB),
/// some medium (64 KiB to 1 MiB), three large (up to 20 MiB), plus symlinks, hard links, empty
/// directories and odd names (spaces, UTF-8, a leading dash, 255 bytes). Returns the number of
/// regular files written.
///
/// # Panics
/// On any I/O error.
pub fn generate_tree(dir: &Path, files: usize) -> usize {
    use std::os::unix::fs::symlink;
    let must = |r: std::io::Result<()>, what: &str| r.unwrap_or_else(|e| panic!("{what}: {e}"));
    must(std::fs::create_dir_all(dir), "mkdir tree");
    let odd = [
        "with space.txt",
        "ünïcödé-名前.bin",
        "-leading-dash",
        "tab\there",
        "semi;colon&amp",
        "quote'\"s",
    ];
    let long = "L".repeat(255);
    let mut written = 0;
    for i in 0..files {
        let sub = dir.join(format!("d{:02}/s{:01}", i % 40, i % 3));
        must(std::fs::create_dir_all(&sub), "mkdir sub");
        let size = match i {
            0 => 20 << 20,
            1 => 8 << 20,
            2 => 4 << 20,
            _ if i % 25 == 0 => 64 * 1024 + (i * 7919) % (960 * 1024),
            _ if i % 10 == 0 => 0,
            _ => (i * 104_729) % (16 * 1024),
        };
        let name = match i {
            3..=8 => odd[i - 3].to_string(),
            9 => long.clone(),
            _ => format!("f{i:05}.dat"),
        };
        must(
            std::fs::write(sub.join(&name), pseudo_random(i as u64 + 1, size)),
            "write file",
        );
        written += 1;
        if i % 40 == 5 {
            must(symlink(&name, sub.join(format!("link{i}"))), "symlink");
            must(
                symlink("/nonexistent/dangling", sub.join(format!("dangling{i}"))),
                "symlink",
            );
        }
        if i % 100 == 7 {
            must(
                std::fs::hard_link(sub.join(&name), sub.join(format!("hard{i}"))),
                "hard link",
            );
        }
        if i % 100 == 11 {
            must(
                std::fs::create_dir_all(dir.join(format!("empty{i}/nested"))),
                "empty dir",
            );
        }
    }
    written
}

/// What a checksum dry run (`rsync -aHAXSc --numeric-ids`) of `src` onto `dst` would still
/// change; "" when `dst` holds it all: contents, modes, owners, times, hard links, ACLs, xattrs
/// and every file kind.
///
/// # Panics
/// When rsync fails.
pub fn left_to_copy(src: &Path, dst: &Path) -> String {
    let mut s = src.as_os_str().to_owned();
    s.push("/");
    run(Command::new("rsync")
        .args(["-aHAXSc", "--dry-run", "--itemize-changes", "--numeric-ids"])
        .arg(s)
        .arg(dst))
}

/// `rsync -aHAXS --numeric-ids src/ dst`: its output (whatever its exit status).
///
/// # Panics
/// When rsync cannot be started.
pub fn rsync_copy(src: &Path, dst: &Path) -> std::process::Output {
    let mut s = src.as_os_str().to_owned();
    s.push("/");
    Command::new("rsync")
        .args(["-aHAXS", "--numeric-ids"])
        .arg(s)
        .arg(dst)
        .output()
        .unwrap_or_else(|e| panic!("running rsync: {e}"))
}

/// `diff -r --no-dereference a b` must find no difference.
///
/// # Panics
/// When it does.
pub fn assert_same_tree(a: &Path, b: &Path) {
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b));
}

/// Maps `len` bytes of `file` shared and writable, writes `data` at `offset` through the
/// mapping, msyncs and unmaps.
///
/// # Panics
/// When a call fails.
#[allow(unsafe_code)]
pub fn mmap_write(file: &std::fs::File, len: usize, offset: usize, data: &[u8]) {
    use nix::sys::mman::{MapFlags, MsFlags, ProtFlags, mmap, msync, munmap};
    assert!(offset + data.len() <= len);
    let size = std::num::NonZeroUsize::new(len).unwrap_or(std::num::NonZeroUsize::MIN);
    // SAFETY: a fresh shared mapping of a file we hold open; we write only within `len` bytes
    // and unmap before returning, so no reference outlives the mapping.
    unsafe {
        let ptr = mmap(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            file,
            0,
        )
        .unwrap_or_else(|e| panic!("mmap: {e}"));
        let bytes = std::slice::from_raw_parts_mut(ptr.as_ptr().cast::<u8>(), len);
        bytes[offset..offset + data.len()].copy_from_slice(data);
        msync(ptr, len, MsFlags::MS_SYNC).unwrap_or_else(|e| panic!("msync: {e}"));
        munmap(ptr, len).unwrap_or_else(|e| panic!("munmap: {e}"));
    }
}

/// Mounts a fresh DeFS with `--bootstrap` to every node of `cluster`; `None` when FUSE is
/// unusable outside CI (as [`TestMount::new`]).
#[cfg(feature = "fuse_tests")]
pub fn mount_on(cluster: &crate::cluster::Cluster) -> Option<TestMount> {
    let mut args = Vec::new();
    for a in &cluster.addrs {
        args.push("--bootstrap");
        args.push(a.as_str());
    }
    TestMount::with_args(&[], &args)
}

/// Fills a data dir with only a copy of `key` and the test network's config (its nodes'
/// identities solve a puzzle of difficulty 0, which a default config would refuse), plus
/// `extra` config lines: a second machine of the same identity.
///
/// # Panics
/// When the files cannot be written.
pub fn key_only(dir: &Path, key: &[u8], extra: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir data dir: {e}"));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("identity.key"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, key))
        .unwrap_or_else(|e| panic!("copying the key: {e}"));
    std::fs::write(
        dir.join("config.toml"),
        format!("[identity]\npuzzle_difficulty = 0\n{extra}"),
    )
    .unwrap_or_else(|e| panic!("writing config.toml: {e}"));
}

/// `--bootstrap ADDR` for every node of `cluster`.
#[cfg(feature = "fuse_tests")]
pub fn bootstrap_args(cluster: &crate::cluster::Cluster) -> Vec<&str> {
    cluster
        .addrs
        .iter()
        .flat_map(|a| ["--bootstrap", a.as_str()])
        .collect()
}
