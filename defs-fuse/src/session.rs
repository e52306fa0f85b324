//! Mounting: turns a [`FuseFs`] into a live kernel mount served by several threads, and takes it
//! down again.
//!
//! ```text
//!  mount() ── fuser::Session::new (mount(2) or fusermount3, then the INIT handshake) ──▶ live
//!     └── thread "defs-fuse-session": Session::run ── n_threads workers (clone_fd) ──▶ FuseFs
//!  Mounted::unmount() ── umount(2) / fusermount3 -u ─▶ workers see ENODEV ─▶ run() returns
//!  external `umount` / `fusermount3 -u`            ─▶ the same, and Mounted::wait() returns
//! ```
//!
//! fuser's `AutoUnmount` is not used: it hung on unmount as root. The mount helper unmounts on
//! SIGINT/SIGTERM instead, after the core has made the journal durable.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;

use defs_core::sync::{Arc, Mutex};
use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use tracing::{info, warn};

use crate::fuse::FuseFs;

/// What tells the kernel to drop cached entries and inodes ([`Mounted::notifier`]).
pub use fuser::Notifier;

/// Session threads serving requests. Two: requests that wait on the network leave the session
/// threads (see [`crate::fuse`]), so threads are only for serving local requests in parallel.
/// Two keep two processes' metadata going at once; four cost `rsync -a` 5-8 % of its speed
/// (the kernel wakes the waiting threads in turn, so every request met a cold thread) for
/// nothing on the two-core machines DeFS is measured on (`performance.md`).
pub const DEFAULT_THREADS: usize = 2;

/// How a filesystem is mounted.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// `-o ro`: the kernel refuses every change (EROFS).
    pub read_only: bool,
    /// `-o allow_other`: users other than the mounting one may use the mount (needs
    /// `user_allow_other` in /etc/fuse.conf for non-root mounts).
    pub allow_other: bool,
    /// The source name shown by `mount` and `df` (`fsname=`).
    pub fsname: String,
    /// Session threads ([`DEFAULT_THREADS`]).
    pub threads: usize,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            read_only: false,
            allow_other: false,
            fsname: "defs".into(),
            threads: DEFAULT_THREADS,
        }
    }
}

impl MountConfig {
    fn fuser_config(&self) -> Config {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(self.fsname.clone()),
            // The type shows as `fuse.defs` (findmnt, mount -a). fuser's `Subtype` reaches only
            // fusermount3; as a plain option `subtype=defs` also reaches the kernel when root
            // mounts /dev/fuse directly, and fusermount3 takes it as its own.
            MountOption::CUSTOM("subtype=defs".into()),
            // The kernel checks mode bits and ownership, exactly as on a local disk.
            MountOption::DefaultPermissions,
            MountOption::NoDev,
            MountOption::NoSuid,
            if self.read_only {
                MountOption::RO
            } else {
                MountOption::RW
            },
        ];
        config.acl = if self.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(self.threads.max(1));
        // Each thread reads its own cloned /dev/fuse descriptor: no lock between them.
        config.clone_fd = true;
        config
    }
}

/// A live mount. Dropping it does not unmount: call [`Mounted::unmount`], or [`Mounted::wait`]
/// for an unmount from outside (or from an [`Unmounter`]).
#[derive(Debug)]
pub struct Mounted {
    unmounter: Unmounter,
    notifier: Notifier,
    thread: JoinHandle<io::Result<()>>,
}

/// Unmounts a [`Mounted`] from another thread or task (a signal handler). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Unmounter {
    mountpoint: PathBuf,
    inner: Arc<Mutex<SessionUnmounter>>,
}

impl Unmounter {
    /// Unmounts. When the mount is busy (a process still has a file open in it), detaches it
    /// lazily instead: it disappears from the namespace at once and the session ends when the
    /// last user lets go. Unmounting twice is harmless.
    ///
    /// # Errors
    /// The unmount failed even lazily.
    pub fn unmount(&self) -> io::Result<()> {
        let result = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unmount();
        if let Err(e) = result {
            warn!(error = %e, mountpoint = %self.mountpoint.display(), "unmount failed; detaching lazily");
            lazy_unmount(&self.mountpoint)?;
        }
        Ok(())
    }
}

/// Mounts `fs` at `mountpoint` and starts serving it. Returns once the kernel handshake is done,
/// so the mount is usable when this returns.
///
/// # Errors
/// The mount(2)/fusermount3 failure or a failed handshake (e.g. no /dev/fuse, no permission,
/// not a directory).
pub fn mount(fs: FuseFs, mountpoint: &Path, config: &MountConfig) -> io::Result<Mounted> {
    let mut session = Session::new(fs, mountpoint, &config.fuser_config())?;
    let unmounter = session.unmount_callable();
    let notifier = session.notifier();
    let thread = std::thread::Builder::new()
        .name("defs-fuse-session".into())
        .spawn(move || session.run())?;
    info!(mountpoint = %mountpoint.display(), threads = config.threads, "mounted");
    Ok(Mounted {
        unmounter: Unmounter {
            mountpoint: mountpoint.to_path_buf(),
            inner: Arc::new(Mutex::new(unmounter)),
        },
        notifier,
        thread,
    })
}

impl Mounted {
    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.unmounter.mountpoint
    }

    /// A handle that unmounts this mount from elsewhere.
    pub fn unmounter(&self) -> Unmounter {
        self.unmounter.clone()
    }

    /// A handle that tells the kernel to drop cached entries and inodes (a read-only mount
    /// following a namespace changed elsewhere). Never call it from a request handler.
    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }

    /// Whether the session has ended (someone unmounted it).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Unmounts (see [`Unmounter::unmount`]) and waits for the session threads to end.
    ///
    /// # Errors
    /// The unmount failed even lazily, or the session ended with an error.
    pub fn unmount(self) -> io::Result<()> {
        self.unmounter.unmount()?;
        self.wait()
    }

    /// Waits until the session ends (after an unmount from here or from outside).
    ///
    /// # Errors
    /// The session's own error, or its thread panicked.
    pub fn wait(self) -> io::Result<()> {
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => Err(io::Error::other("the FUSE session thread panicked")),
        }
    }
}

/// `fusermount3 -u -z` (which works for root and for the mounting user), else `umount -l`.
fn lazy_unmount(mountpoint: &Path) -> io::Result<()> {
    let attempts: [(&str, &[&str]); 2] = [("fusermount3", &["-u", "-z"]), ("umount", &["-l"])];
    let mut last = io::Error::other("no unmount tool ran");
    for (tool, args) in attempts {
        match Command::new(tool).args(args).arg(mountpoint).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                last = io::Error::other(format!(
                    "{tool} {} {}: {}",
                    args.join(" "),
                    mountpoint.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
