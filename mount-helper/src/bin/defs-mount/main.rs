//! `defs-mount MOUNTPOINT [--data-dir DIR] [--listen ADDR]... [--bootstrap ADDR]... [-f]
//! [-o OPTIONS]`: mounts DeFS and runs the data dir's storage node in the same process (its
//! shard store, `DIR/addrs`, and `DIR/control.sock`, through which `defs status`, `defs sync`,
//! `defs put/get` and `defs peers` reach it). Called as `mount.defs` (a symlink), it takes
//! mount(8)'s arguments instead (see `fstab.rs`).
//!
//! Start: refuse a data dir another node or mount serves → node (shard store, listen, bootstrap,
//! `DIR/addrs`) → filesystem → mount → control socket → ready. Stop (signal or unmount from
//! outside): journal durable → unmount → flusher (uploads already running get
//! `[mount] shutdown_grace_secs`; the rest stay dirty for the next mount) → node.
//!
//! Without `-f` it starts itself again in the background (with `-f` and a readiness socket),
//! waits until the mount is live, and exits 0 — or prints the daemon's error and exits 1. The
//! daemon logs to `DIR/logs/defs-mount.log` (filter: `RUST_LOG`, default `info`). SIGINT and
//! SIGTERM make the journal durable, unmount, and exit 0; `fusermount3 -u` / `umount` from
//! outside end it the same way.
//!
//! Exit codes: 0 success, 1 the mount failed (the message says why), 2 bad usage.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use defs_core::repair::Repairer;
use defs_core::sync::Arc;
use defs_fuse::fs::{self, FsyncMode};
use defs_fuse::fuse::FuseFs;
use defs_fuse::session::{self, MountConfig};
use mount_helper::cli::{error_text, is_usage};
use mount_helper::mount_control::MountCommands;
use mount_helper::net_cmd::{DirLock, NetOptions, NodeOptions, StorageNode};
use mount_helper::{data_dir, identity_cmd, namespace};
use tracing::{error, info, warn};

/// How long the launcher waits for the daemon to report the mount ready. Opening a large
/// metadata DB and the mount handshake take well under a second; a data dir without one first
/// waits for a peer (`namespace.recover_wait_secs`, 30 s by default) and fetches its namespace
/// from the network: five minutes cover a large tree on a slow link.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// The log file inside `DIR/logs`.
const LOG_FILE: &str = "defs-mount.log";

use mount_helper::mount_state::PID_FILE;

/// Mount DeFS at MOUNTPOINT (like sshfs: returns once the mount is ready; -f stays in the
/// foreground).
#[derive(Parser, Debug)]
#[command(name = "defs-mount", version, about)]
struct Cli {
    /// Where to mount: an existing, empty directory.
    mountpoint: PathBuf,

    /// The data directory (identity, config, metadata DB, cache, logs).
    /// Default: $DEFS_DATA_DIR, else $XDG_DATA_HOME/defs, else ~/.local/share/defs.
    #[arg(long, env = "DEFS_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Stay in the foreground (logs also go to stderr).
    #[arg(short = 'f', long)]
    foreground: bool,

    /// Mount options, comma separated: ro, rw, allow_other, sync=local|network, fsname=NAME,
    /// threads=N, and the flags below as bootstrap=MULTIADDR (repeatable), listen=MULTIADDR
    /// (repeatable), no_mdns, force, data_dir=DIR; fstab-only options (defaults, noauto, user,
    /// nofail, _netdev, x-*, ...) are accepted and ignored.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,

    /// Listen address of the mount's node (multiaddr; repeatable) [default: from config.toml].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,

    /// A peer to join through (multiaddr ending in /p2p/PEER_ID; repeatable); remembered in
    /// DIR/config.toml.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,

    /// Do not discover peers on the local network with mDNS.
    #[arg(long)]
    no_mdns: bool,

    /// Mount read-only (as -o ro): on a machine other than the writer's, the mount follows the
    /// namespace the writable mount publishes ([namespace] follow_secs).
    #[arg(long)]
    read_only: bool,

    /// Take the write lease of a writable mount elsewhere that is dead (as -o force): waits
    /// until its last record has not changed for its lease plus 30 s, then takes over.
    #[arg(long)]
    force: bool,

    /// Start an empty namespace in a data dir that has an identity but no metadata DB, instead
    /// of recovering the identity's namespace from the network (only for an identity that never
    /// stored files: a mount of the same key elsewhere would refuse this one's records).
    #[arg(long)]
    new_namespace: bool,

    /// Internal: the launcher's readiness socket (set when daemonizing).
    #[arg(long, hide = true)]
    ready_socket: Option<PathBuf>,
}

/// Parsed `-o` options.
#[derive(Debug, Default)]
struct Options {
    read_only: bool,
    allow_other: bool,
    fsync: FsyncMode,
    fsname: Option<String>,
    threads: Option<usize>,
    /// `bootstrap=`, as `--bootstrap`.
    bootstrap: Vec<String>,
    /// `listen=`, as `--listen`.
    listen: Vec<String>,
    /// `no_mdns`, as `--no-mdns`.
    no_mdns: bool,
    /// `data_dir=`, as `--data-dir`.
    data_dir: Option<PathBuf>,
    /// `force`, as `--force`.
    force: bool,
}

fn parse_options(list: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    for opt in list
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, value) {
            ("ro", None) => o.read_only = true,
            ("rw", None) => o.read_only = false,
            ("allow_other", None) => o.allow_other = true,
            ("default_permissions", None) => {} // always on
            ("sync", Some("local")) => o.fsync = FsyncMode::Local,
            ("sync", Some("network")) => o.fsync = FsyncMode::Network,
            ("fsname", Some(name)) if !name.is_empty() => o.fsname = Some(name.to_string()),
            ("threads", Some(n)) => match n.parse::<usize>() {
                Ok(n) if (1..=64).contains(&n) => o.threads = Some(n),
                _ => return Err(format!("threads={n}: expected a number from 1 to 64")),
            },
            ("bootstrap", Some(a)) if !a.is_empty() => o.bootstrap.push(a.to_string()),
            ("listen", Some(a)) if !a.is_empty() => o.listen.push(a.to_string()),
            ("no_mdns" | "nomdns", None) => o.no_mdns = true,
            ("force", None) => o.force = true,
            ("data_dir", Some(d)) if !d.is_empty() => o.data_dir = Some(PathBuf::from(d)),
            // Options mount(8) and fstab pass along that mean nothing to a FUSE daemon.
            (
                "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "owner" | "nofail"
                | "_netdev" | "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "atime"
                | "noatime" | "relatime" | "strictatime" | "nodiratime" | "async",
                None,
            ) => {}
            (k, _) if k.starts_with("x-") || k == "comment" => {}
            _ => return Err(format!("unknown mount option {opt:?}")),
        }
    }
    Ok(o)
}

/// `--data-dir`, else `$DEFS_DATA_DIR` (clap reads it), else the XDG data dir.
fn data_dir(cli: &Cli) -> Result<PathBuf> {
    data_dir::resolve(cli.data_dir.clone())
}

/// Makes sure the data dir has an identity: creates one as `defs init` does when there is
/// none (so `defs-mount` alone is enough to start), and checks an existing one loads (mode
/// 0600, valid key) so a bad key file is refused before anything is mounted.
fn ensure_identity(dir: &Path) -> Result<()> {
    let key = dir.join(data_dir::IDENTITY_FILE);
    if key.symlink_metadata().is_err() {
        return identity_cmd::init(dir, None)
            .with_context(|| format!("creating an identity in {}", dir.display()));
    }
    defs_core::Identity::load(&key)
        .with_context(|| format!("loading the identity {}", key.display()))?;
    Ok(())
}

/// Refuses a missing, non-directory, stale or non-empty mountpoint with a clear message.
fn check_mountpoint(mp: &Path) -> Result<()> {
    match std::fs::metadata(mp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mountpoint {} does not exist", mp.display())
        }
        // A dead daemon's mount answers ENOTCONN, or ECONNABORTED when the kernel aborted the
        // connection while requests were pending.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)) => bail!(
            "mountpoint {} is a stale mount whose daemon is gone (transport endpoint is not \
             connected): unmount it first with `fusermount3 -u {}`",
            mp.display(),
            mp.display()
        ),
        Err(e) => bail!("mountpoint {}: {e}", mp.display()),
        Ok(m) if !m.is_dir() => bail!("mountpoint {} is not a directory", mp.display()),
        Ok(_) => {}
    }
    let mut entries =
        std::fs::read_dir(mp).with_context(|| format!("reading mountpoint {}", mp.display()))?;
    if entries.next().is_some() {
        bail!("mountpoint {} is not empty", mp.display());
    }
    Ok(())
}

mod fstab;

fn main() -> ExitCode {
    let called_as = std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n.to_os_string()));
    let parsed = if called_as.as_deref() == Some(std::ffi::OsStr::new("mount.defs")) {
        match fstab::translate(std::env::args_os().skip(1)) {
            fstab::Call::Mount(args) => Cli::try_parse_from(args),
            fstab::Call::Fake => return ExitCode::SUCCESS,
            fstab::Call::Help => {
                println!("{}", fstab::HELP);
                return ExitCode::SUCCESS;
            }
            fstab::Call::Version => {
                println!("mount.defs (DeFS) {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            fstab::Call::Usage(msg) => {
                eprintln!("mount.defs: {msg}\n{}", fstab::USAGE);
                return ExitCode::from(2);
            }
        }
    } else {
        Cli::try_parse()
    };
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut cli = cli;
    let options = match parse_options(&cli.options).and_then(|o| merge_options(&mut cli, o)) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("defs-mount: {msg}");
            return ExitCode::from(2);
        }
    };
    // A bad --bootstrap is bad usage: said here, before any daemon starts.
    if let Err(e) = mount_helper::bootstrap::plan(&cli.bootstrap, &[]) {
        eprintln!("defs-mount: {}", error_text(&e));
        return ExitCode::from(2);
    }
    let result = match (&cli.ready_socket, cli.foreground) {
        (Some(socket), _) => daemon(&cli, &options, socket),
        (None, true) => serve(&cli, &options, None, true),
        (None, false) => launch(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("defs-mount: {}", error_text(&e));
            ExitCode::from(if is_usage(&e) { 2 } else { 1 })
        }
    }
}

/// Moves the `-o` forms of the command-line flags (`bootstrap=`, `listen=`, `no_mdns`,
/// `data_dir=`) into `cli`, so that both spellings mean the same (an fstab line has only
/// `-o`). A data dir given both ways must be the same one.
fn merge_options(cli: &mut Cli, mut o: Options) -> Result<Options, String> {
    for a in o.bootstrap.drain(..) {
        if !cli.bootstrap.contains(&a) {
            cli.bootstrap.push(a);
        }
    }
    for a in o.listen.drain(..) {
        if !cli.listen.contains(&a) {
            cli.listen.push(a);
        }
    }
    cli.no_mdns |= o.no_mdns;
    cli.force |= o.force;
    if cli.read_only {
        o.read_only = true;
    }
    if let Some(d) = o.data_dir.take() {
        match &cli.data_dir {
            Some(c) if std::path::absolute(c).ok() != std::path::absolute(&d).ok() => {
                return Err(format!(
                    "two data dirs: {} (the source or --data-dir) and data_dir={}; give one",
                    c.display(),
                    d.display()
                ));
            }
            _ => cli.data_dir = Some(d),
        }
    }
    Ok(o)
}

/// The launcher: starts the daemon and waits for it to report the mount ready.
fn launch(cli: &Cli) -> Result<()> {
    let mountpoint = absolute(&cli.mountpoint)?;
    check_mountpoint(&mountpoint)?;
    let dir = absolute(&data_dir(cli)?)?;
    ensure_identity(&dir)?;
    let socket_path = std::env::temp_dir().join(format!(
        "defs-mount-{}-{}.sock",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    let _ = std::fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path)
        .with_context(|| format!("creating the readiness socket {}", socket_path.display()))?;
    let _cleanup = RemoveOnDrop(socket_path.clone());
    listener.set_nonblocking(true)?;

    let exe = std::env::current_exe().context("finding the defs-mount executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg(&mountpoint)
        .arg("--data-dir")
        .arg(&dir)
        .arg("-f")
        .arg("--ready-socket")
        .arg(&socket_path);
    for o in &cli.options {
        cmd.arg("-o").arg(o);
    }
    for l in &cli.listen {
        cmd.arg("--listen").arg(l);
    }
    for b in &cli.bootstrap {
        cmd.arg("--bootstrap").arg(b);
    }
    if cli.no_mdns {
        cmd.arg("--no-mdns");
    }
    if cli.new_namespace {
        cmd.arg("--new-namespace");
    }
    if cli.force {
        cmd.arg("--force");
    }
    if cli.read_only {
        cmd.arg("--read-only");
    }
    // The daemon keeps no terminal: its output goes to the log file, and it is in its own
    // process group so the terminal's Ctrl-C does not reach it.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().context("starting the mount daemon")?;
    let log = dir.join("logs").join(LOG_FILE);

    let deadline = Instant::now() + READY_TIMEOUT;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("waiting for the mount daemon"),
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the mount daemon exited ({status}) before the mount was ready; see {}",
                log.display()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the mount daemon did not get ready within {READY_TIMEOUT:?}; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    stream.set_nonblocking(false)?;
    // `warn MSG` lines (bootstrap addresses that gave no peer), `note SECS MSG` (a wait the
    // daemon announces, e.g. --force's: the deadline moves by it), then `ok` or `err MSG`.
    let mut deadline = deadline;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        reader.get_ref().set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1)),
        ))?;
        line.clear();
        reader.read_line(&mut line)?;
        match line.trim_end().split_once(' ') {
            Some(("warn", msg)) => eprintln!("defs-mount: warning: {msg}"),
            Some(("note", rest)) => {
                let (secs, msg) = rest.split_once(' ').unwrap_or(("0", rest));
                deadline += Duration::from_secs(secs.parse().unwrap_or(0));
                eprintln!("defs-mount: {msg}");
            }
            _ => break,
        }
    }
    match line.trim_end().split_once(' ') {
        _ if line.trim_end() == "ok" => Ok(()),
        Some(("err", msg)) => Err(anyhow!("{msg}")),
        _ => {
            let status = child.try_wait()?.map(|s| s.to_string()).unwrap_or_default();
            bail!(
                "the mount daemon stopped before the mount was ready {status}; see {}",
                log.display()
            )
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// The daemon: serves and reports readiness (or the error) on the launcher's socket.
fn daemon(cli: &Cli, options: &Options, socket: &Path) -> Result<()> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the launcher at {}", socket.display()))?;
    let ready = Ready(Some(stream));
    serve(cli, options, Some(ready), false)
}

/// The daemon's end of the readiness socket.
struct Ready(Option<UnixStream>);

impl Ready {
    /// A note for the launcher to print: the daemon waits `wait` more before it is ready.
    fn note(&mut self, wait: Duration, msg: &str) {
        if let Some(s) = self.0.as_mut() {
            let line = format!("note {} {}\n", wait.as_secs(), msg.replace('\n', " "));
            let _ = s.write_all(line.as_bytes());
        }
    }

    /// A warning for the launcher to print before the mount is ready.
    fn warn(&mut self, msg: &str) {
        if let Some(s) = self.0.as_mut() {
            let _ = s.write_all(format!("warn {}\n", msg.replace('\n', " ")).as_bytes());
        }
    }

    fn ok(&mut self) {
        if let Some(mut s) = self.0.take() {
            let _ = s.write_all(b"ok\n");
        }
    }

    fn err(&mut self, e: &anyhow::Error) {
        if let Some(mut s) = self.0.take() {
            let msg = error_text(e).replace('\n', " ");
            let _ = s.write_all(format!("err {msg}\n").as_bytes());
        }
    }
}

/// Mounts and serves until a signal or an unmount from outside.
fn serve(cli: &Cli, options: &Options, mut ready: Option<Ready>, to_stderr: bool) -> Result<()> {
    let result = serve_inner(cli, options, &mut ready, to_stderr);
    if let (Err(e), Some(r)) = (&result, ready.as_mut()) {
        r.err(e);
    }
    result
}

fn serve_inner(
    cli: &Cli,
    options: &Options,
    ready: &mut Option<Ready>,
    to_stderr: bool,
) -> Result<()> {
    let mountpoint = absolute(&cli.mountpoint)?;
    check_mountpoint(&mountpoint)?;
    let dir = absolute(&data_dir(cli)?)?;
    ensure_identity(&dir)?;
    init_logging(&dir, to_stderr)?;
    info!(mountpoint = %mountpoint.display(), data_dir = %dir.display(), version = env!("CARGO_PKG_VERSION"), "defs-mount starting");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("defs-rt")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let node_opts = NodeOptions {
        listen: cli.listen.clone(),
        capacity: None,
        zone: String::new(),
        net: NetOptions {
            bootstrap: cli.bootstrap.clone(),
            no_mdns: cli.no_mdns,
            listen: Vec::new(),
        },
    };
    let mut held = Held::default();
    let result = rt.block_on(run(
        &dir,
        &mountpoint,
        Flags {
            new_namespace: cli.new_namespace,
            force: cli.force,
        },
        options,
        &node_opts,
        ready,
        &mut held,
    ));
    if let Err(e) = &result {
        error!(error = %format!("{e:#}"), "defs-mount failed");
    }
    // Tasks of the runtime may still hold the stores: only once it is gone is the data dir
    // free for the next mount, and only then does the pid file say so.
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(held);
    result
}

/// What a serving daemon keeps until its runtime is gone: the data dir's lock, then the pid
/// file (removed last, so that a script waiting for it to vanish can mount again at once).
#[derive(Default)]
struct Held {
    lock: Option<Arc<DirLock>>,
    pid_file: Option<RemoveOnDrop>,
}

/// The namespace flags of a mount.
#[derive(Clone, Copy)]
struct Flags {
    new_namespace: bool,
    force: bool,
}

async fn run(
    dir: &Path,
    mountpoint: &Path,
    flags: Flags,
    options: &Options,
    node_opts: &NodeOptions,
    ready: &mut Option<Ready>,
    held: &mut Held,
) -> Result<()> {
    wait_for_unmounted_daemon(dir).await;
    // Refuses a data dir another node or mount serves, before anything is opened or mounted.
    let mut node = StorageNode::start(dir, node_opts)
        .await
        .context("starting the mount's storage node")?;
    held.lock = Some(node.dir_lock());
    info!(peer = %node.node.peer_id(), addrs = ?node.addrs, "node listening");
    for p in &node.bootstrap_problems {
        warn!(problem = %p, "bootstrap");
        // In the foreground the log on stderr says it already.
        if let Some(r) = ready.as_mut() {
            r.warn(p);
        }
    }
    let result = serve_mount(dir, mountpoint, flags, options, &mut node, ready, held).await;
    node.shutdown().await;
    info!("node stopped");
    result
}

/// How long a mount waits for the daemon of an earlier mount of the same dir, already unmounted,
/// to close its control socket (it does so first thing after its FUSE session ends; a loaded
/// machine may take a while to schedule it).
const UNMOUNTED_DAEMON_WAIT: Duration = Duration::from_secs(10);

/// Right after `fusermount3 -u` the old daemon may still answer on the control socket for a
/// moment: waits until it stops answering (then [`StorageNode::start`] waits for its data dir
/// lock) instead of taking it for a live mount. A daemon whose mount is still there is left to
/// [`StorageNode::start`] to refuse.
async fn wait_for_unmounted_daemon(dir: &Path) {
    let Some(pid) = mount_helper::mount_state::unmounted_daemon(dir) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + UNMOUNTED_DAEMON_WAIT;
    let mut announced = false;
    while defs_net::control::connect(dir).await.is_some()
        && tokio::time::Instant::now() < deadline
        && mount_helper::mount_state::unmounted_daemon(dir) == Some(pid)
    {
        if !announced {
            info!(
                pid,
                "waiting for the previous defs-mount of this data dir, already unmounted, to exit"
            );
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn serve_mount(
    dir: &Path,
    mountpoint: &Path,
    flags: Flags,
    options: &Options,
    node: &mut StorageNode,
    ready: &mut Option<Ready>,
    held: &mut Held,
) -> Result<()> {
    let settings = node.config.clone();
    let grace = Duration::from_secs(settings.mount.shutdown_grace_secs);
    let meta_dir = dir.join("meta");
    let cache_dir = dir.join("cache");
    // Uploads, lazy reads and repair go through the one object layer over the mount's own
    // node (manifests and holder records in DIR/meta/manifests).
    let objects = node.objects.clone();
    // No metadata DB: a new identity starts empty; a copied key recovers its namespace from the
    // network (or the mount fails saying why; never an empty tree over one that exists).
    let start = namespace::prepare(dir, node, &objects, flags.new_namespace).await?;
    let mut read_only = options.read_only;
    if let namespace::Start::Recovered {
        older: Some(why), ..
    } = &start
    {
        warn!("{why}");
        if let Some(r) = ready.as_mut() {
            r.warn(why);
        }
        read_only = true;
    }
    let db = Arc::new(
        defs_core::meta::MetaDb::open(&meta_dir)
            .with_context(|| format!("opening the metadata DB in {}", meta_dir.display()))?,
    );
    namespace::namespace_exists(dir);
    let cache = defs_core::cache_store::CacheStore::open(&cache_dir, (&settings.cache).into())
        .with_context(|| format!("opening the cache in {}", cache_dir.display()))?;
    let config = fs::Config {
        read_only,
        fsync: options.fsync,
    };
    // A writable mount checks that no other machine writes this identity (or waits out a
    // dead one's lease with --force), takes the lease, and publishes its namespace; a
    // read-only one follows the namespace published elsewhere once it is mounted.
    let publisher = if read_only {
        None
    } else {
        let mut note = |wait: Duration, msg: &str| {
            info!(wait_secs = wait.as_secs(), "{msg}");
            match ready.as_mut() {
                Some(r) => r.note(wait, msg),
                None => eprintln!("defs-mount: {msg}"),
            }
        };
        // A namespace that starts here was never published: nobody else can hold its lease.
        let claim = if start == namespace::Start::New {
            namespace::LeaseOutcome::Unclaimed
        } else {
            namespace::check_lease(dir, node, db.clone(), flags.force, &mut note).await?
        };
        Some(namespace::start_publisher(dir, node, db.clone(), objects.clone(), claim).await?)
    };
    let follow_db = db.clone();
    // The collector follows the publisher: only a writable mount deletes anything.
    let gc = publisher
        .as_ref()
        .map(|p| mount_helper::gc::GarbageCollector {
            collector: Arc::new(defs_core::gc::Collector::new(
                db.clone(),
                objects.clone(),
                (&settings.gc).into(),
            )),
            publisher: p.clone(),
        });
    let core = fs::Fs::new(
        db,
        Arc::new(cache),
        &cache_dir,
        config,
        fs::Remote::objects(objects.clone()),
    )
    .context("starting the filesystem")?;
    // Kept versions, read-only, under MOUNT/.snapshots.
    core.enable_snapshots(&meta_dir, objects);

    let mount_config = MountConfig {
        read_only,
        allow_other: options.allow_other,
        // The data dir as the mount's source: what an fstab line's first field says, so that
        // `mount -a` and `findmnt` match the mount to its line.
        fsname: options.fsname.clone().unwrap_or_else(|| {
            std::fs::canonicalize(dir)
                .unwrap_or_else(|_| dir.to_path_buf())
                .display()
                .to_string()
        }),
        threads: options.threads.unwrap_or(session::DEFAULT_THREADS),
    };
    // `defs sync PATH` sends a canonical path: compare it with the canonical mountpoint.
    let canonical = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("resolving {}", mountpoint.display()))?;
    let fuse = FuseFs::new(core.clone(), tokio::runtime::Handle::current());
    let mounted = tokio::task::block_in_place(|| session::mount(fuse, mountpoint, &mount_config))
        .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    let unmounter = mounted.unmounter();
    // Only a mount asked to be read-only follows: a fallback to an older state (above) must
    // not be replaced behind the user's back.
    let follower = options.read_only.then(|| {
        namespace::start_follower(dir, node, follow_db, core.clone(), Some(mounted.notifier()))
    });
    let _repair = background_repair(
        core.clone(),
        node.repairer.clone(),
        Duration::from_secs(settings.repair.interval_secs),
    );
    let _gc = gc
        .clone()
        .and_then(|g| g.spawn(Duration::from_secs(settings.gc.interval_secs)));
    let auditor = mount_helper::audits::Auditor {
        fs: core.clone(),
        client: node.client.clone(),
        settings: settings.audit.clone(),
        // A shard a holder cannot prove is checked for repair at once.
        on_failed: Some({
            let repairer = node.repairer.clone();
            std::sync::Arc::new(move |shard, holder| repairer.mark_lost(shard, holder))
        }),
    };
    let audit_stop = tokio_util::sync::CancellationToken::new();
    let _audits = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        auditor.clone().background(audit_stop.clone()),
    ));
    let _stop_audits = audit_stop.drop_guard();
    let handler = MountCommands {
        commands: node.commands(),
        node: node.node.clone(),
        fs: core.clone(),
        mountpoint: canonical,
        publisher: publisher.clone(),
        follower,
        auditor,
        gc,
    };
    if let Err(e) = node.serve_control(std::sync::Arc::new(handler)).await {
        let _ = tokio::task::spawn_blocking(move || unmounter.unmount()).await;
        core.shutdown().await.ok();
        return Err(e).context("serving the control socket");
    }
    // The handlers are in place before anyone learns the pid or that the mount is ready: a
    // signal sent at once must unmount, not kill the daemon with the mount left behind.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let pid_file = dir.join(PID_FILE);
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        warn!(error = %e, path = %pid_file.display(), "writing the pid file failed");
    }
    held.pid_file = Some(RemoveOnDrop(pid_file));
    if let Some(r) = ready.as_mut() {
        r.ok();
    }
    info!("mount ready");

    let mut session = tokio::task::spawn_blocking(move || mounted.wait());
    let ended = loop {
        tokio::select! {
            r = &mut session => break Some(r),
            _ = term.recv() => { info!(signal = "SIGTERM", "unmounting"); break None; }
            _ = int.recv() => { info!(signal = "SIGINT", "unmounting"); break None; }
            _ = hup.recv() => { info!(signal = "SIGHUP", "ignored"); }
        }
    };
    // Unmounted from outside (`fusermount3 -u`): answer no more commands at once, so that a mount
    // of this dir right after it waits for this daemon to let go instead of taking it for a
    // live one.
    if ended.is_some() {
        node.stop_control();
    }
    // A node that is going away takes no new shards from here on: owners store them elsewhere
    // at once instead of on a node that stops within the grace period.
    if let Err(e) = node.node.drain(Duration::ZERO).await {
        warn!(error = %e, "refusing new shards before shutdown failed");
    }
    let session_result = match ended {
        Some(r) => r,
        None => {
            // Dirty data safe in the journal first, then the unmount.
            if let Err(e) = core.unmounting().await {
                error!(error = %format!("{e:#}"), "making the journal durable before unmount failed");
            }
            let u = unmounter.clone();
            tokio::task::spawn_blocking(move || u.unmount())
                .await
                .context("unmount task")?
                .with_context(|| format!("unmounting {}", mountpoint.display()))?;
            session.await
        }
    };
    // Unmounted: answer no more commands (see above).
    node.stop_control();
    match session_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "the FUSE session ended with an error"),
        Err(e) => warn!(error = %e, "the FUSE session task failed"),
    }
    // The node stays up while running uploads finish (the caller stops it after this).
    core.shutdown_within(grace)
        .await
        .context("flushing the journal at unmount")?;
    // The final state with the lease released, so another machine may mount writable at once.
    if let Some(p) = publisher {
        match tokio::time::timeout(grace, p.release()).await {
            Ok(Ok(done)) => info!(
                seq = done.seq,
                copies = done.copies,
                "namespace published, lease released"
            ),
            Ok(Err(e)) => {
                warn!(error = %e, "publishing the namespace at unmount failed: the network keeps the last published state")
            }
            Err(_) => warn!(
                grace_secs = grace.as_secs(),
                "publishing the namespace at unmount did not finish in time: the network keeps the last published state"
            ),
        }
    }
    info!("unmounted cleanly");
    Ok(())
}

/// How long after the mount is ready its first background repair check starts: the node's
/// peers have connected by then, so holders that are merely slow to connect are not taken for
/// lost.
const FIRST_REPAIR_AFTER: Duration = Duration::from_secs(60);

/// Checks every stored file of the mount and repairs what lost holders, [`FIRST_REPAIR_AFTER`]
/// the start and then every `interval` (paced by `[repair] bandwidth_bytes`); off when
/// `interval` is zero. The task stops when the returned handle is dropped.
fn background_repair(
    fs: fs::Fs,
    repairer: Arc<Repairer>,
    interval: Duration,
) -> Option<tokio_util::task::AbortOnDropHandle<()>> {
    if interval.is_zero() {
        info!("background repair is off ([repair] interval_secs = 0)");
        return None;
    }
    let task = tokio::spawn(async move {
        tokio::time::sleep(FIRST_REPAIR_AFTER.min(interval)).await;
        loop {
            match fs.stored_objects() {
                Ok(files) => {
                    let files = files.into_iter().map(|(f, k)| (f, Some(k))).collect();
                    let s = repairer.run_pass(files, &|_, _| {}).await;
                    info!(
                        healthy = s.healthy,
                        degraded = s.degraded,
                        lost = s.lost,
                        restored = s.shards_restored,
                        "background repair check done"
                    );
                }
                Err(e) => warn!(error = %e, "background repair: listing the stored files failed"),
            }
            tokio::time::sleep(interval).await;
        }
    });
    Some(tokio_util::task::AbortOnDropHandle::new(task))
}

/// Logs to `DIR/logs/defs-mount.log` (and stderr in the foreground), filtered by `RUST_LOG`.
fn init_logging(dir: &Path, to_stderr: bool) -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, fmt};

    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("creating the log directory {}", logs.display()))?;
    let path = logs.join(LOG_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let file_layer = fmt::layer()
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .with_filter(filter());
    let stderr_layer = to_stderr.then(|| {
        fmt::layer()
            .with_ansi(mount_helper::logging::stderr_colours())
            .with_writer(std::io::stderr)
            .with_filter(filter())
    });
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .map_err(|e| anyhow!("installing the logger: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_unknown_ones_are_refused() {
        let o = parse_options(&[
            "ro,allow_other".into(),
            "sync=network,defaults,_netdev".into(),
        ])
        .unwrap();
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.fsync, FsyncMode::Network);
        assert!(parse_options(&["bogus".into()]).is_err());
        assert!(parse_options(&["threads=0".into()]).is_err());
        assert_eq!(
            parse_options(&["threads=8".into()]).unwrap().threads,
            Some(8)
        );
        let o = parse_options(&["ro,force".into()]).unwrap();
        assert!(o.read_only && o.force);
    }

    #[test]
    fn the_flags_have_o_forms_for_fstab() {
        let o = parse_options(&[
            "no_mdns,bootstrap=/ip4/127.0.0.1/tcp/1/p2p/X,listen=/ip4/127.0.0.1/tcp/0".into(),
            "data_dir=/var/lib/defs".into(),
        ])
        .unwrap();
        let mut cli = Cli::try_parse_from([
            "defs-mount",
            "/mnt",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/1/p2p/X",
        ])
        .unwrap();
        merge_options(&mut cli, o).unwrap();
        assert!(cli.no_mdns);
        assert_eq!(cli.bootstrap, ["/ip4/127.0.0.1/tcp/1/p2p/X"]);
        assert_eq!(cli.listen, ["/ip4/127.0.0.1/tcp/0"]);
        assert_eq!(cli.data_dir, Some(PathBuf::from("/var/lib/defs")));
        // Two different data dirs are refused.
        let o = parse_options(&["data_dir=/b".into()]).unwrap();
        let mut cli = Cli::try_parse_from(["defs-mount", "/mnt", "--data-dir", "/a"]).unwrap();
        assert!(merge_options(&mut cli, o).is_err());
    }
}
