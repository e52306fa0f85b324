//! Real `defs node` processes on 127.0.0.1 (no mDNS), killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bin;

/// How long a node may take to write `DIR/addrs`.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Kills its child on drop, so a failing test leaves no node running.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `defs` with `DEFS_DATA_DIR=dir` and quiet logs.
pub fn defs(dir: &Path) -> Command {
    let mut c = bin("defs");
    c.env("DEFS_DATA_DIR", dir).env("RUST_LOG", "warn");
    c
}

/// `defs init --difficulty 0` in `dir`.
///
/// # Panics
/// When it fails.
pub fn init(dir: &Path) {
    let out = defs(dir)
        .args(["init", "--difficulty", "0"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run defs: {e}"));
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first TCP address in `DIR/addrs`, waiting for the file to appear.
///
/// # Panics
/// After [`START_TIMEOUT`].
pub fn wait_for_addr(dir: &Path) -> String {
    wait_for_addr_of(dir, "/tcp/")
}

/// The first address in `DIR/addrs` that contains `proto` (`"/tcp/"`, `"/quic-v1/"`), waiting
/// for it to appear.
///
/// # Panics
/// After [`START_TIMEOUT`].
pub fn wait_for_addr_of(dir: &Path, proto: &str) -> String {
    let path = dir.join("addrs");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Some(line) = text.lines().find(|l| l.contains(proto))
        {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `defs node` on 127.0.0.1 (random port, no mDNS) in a fresh data dir `dir`.
///
/// # Panics
/// When it cannot start.
pub fn start_node(dir: &Path, bootstrap: Option<&str>) -> Proc {
    init(dir);
    spawn_node(dir, bootstrap)
}

/// Turns pairing off in the config of the data dir `dir` (made by [`init`]): a node that keeps
/// no partner's mirror, for tests that measure what the owner's files alone cost on the nodes.
///
/// # Panics
/// When the config cannot be read or written, or has no `[pairing]` switch.
pub fn disable_pairing(dir: &Path) {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let off = text.replacen("\nenabled = true\n", "\nenabled = false\n", 1);
    assert_ne!(off, text, "no pairing switch in {}", path.display());
    std::fs::write(&path, off).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Sets `[node] owner_quota_bytes` (what any one owner may store on the node) in the config of
/// the data dir `dir` (made by [`init`]).
///
/// # Panics
/// When the config cannot be read or written, or has no such setting.
pub fn set_owner_quota(dir: &Path, bytes: u64) {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let set = text.replacen(
        "\nowner_quota_bytes = 0\n",
        &format!("\nowner_quota_bytes = {bytes}\n"),
        1,
    );
    assert_ne!(set, text, "no owner_quota_bytes in {}", path.display());
    std::fs::write(&path, set).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Starts `defs node` (random port on 127.0.0.1, no mDNS) in the data dir `dir` made by
/// [`init`].
fn spawn_node(dir: &Path, bootstrap: Option<&str>) -> Proc {
    spawn_node_on(dir, bootstrap, &["/ip4/127.0.0.1/tcp/0"])
}

/// Starts `defs node` (no mDNS) listening on `listen` (addresses on 127.0.0.1) in the data dir
/// `dir` made by [`init`].
///
/// # Panics
/// When it cannot start.
pub fn spawn_node_on(dir: &Path, bootstrap: Option<&str>, listen: &[&str]) -> Proc {
    let mut c = defs(dir);
    c.args(["node", "--no-mdns"]);
    for a in listen {
        c.args(["--listen", a]);
    }
    if let Some(b) = bootstrap {
        c.args(["--bootstrap", b]);
    }
    Proc(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start defs node: {e}")),
    )
}

/// The shard records in the packs of the node with data dir `dir` (a node that has not opened
/// its store yet has none): `(pack file, record offset, header)`. Read straight from the files,
/// so it works while the node runs.
pub fn shard_records(
    dir: &Path,
) -> Vec<(PathBuf, u64, defs_core::shard_store::pack::RecordHeader)> {
    use defs_core::shard_store::pack;
    let packs = pack::pack_files(&dir.join("shards/packs")).unwrap_or_default();
    let mut out = Vec::new();
    for (_, path) in packs {
        // A pack removed meanwhile holds nothing.
        for (offset, head) in pack::records(&path).unwrap_or_default() {
            out.push((path.clone(), offset, head));
        }
    }
    out
}

/// `n` storage nodes on 127.0.0.1, the others bootstrapped from the first.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes (killed on drop).
    pub nodes: Vec<Proc>,
    /// Their data dirs.
    pub dirs: Vec<PathBuf>,
    /// Their TCP addresses with `/p2p/<id>`.
    pub addrs: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes with data dirs `base/n0`, `base/n1`, ….
    ///
    /// # Panics
    /// When a node does not start.
    pub fn start(base: &Path, n: usize) -> Cluster {
        Self::start_with(base, n, true)
    }

    /// `n` storage nodes as [`Cluster::start`] makes them, none of which pairs (keeps a
    /// partner's mirror): what is stored on them is the owners' shards alone.
    pub fn start_unpaired(base: &Path, n: usize) -> Cluster {
        Self::start_with(base, n, false)
    }

    fn start_with(base: &Path, n: usize, pairing: bool) -> Cluster {
        Self::start_prepared(base, n, |d| {
            if !pairing {
                disable_pairing(d);
            }
        })
    }

    /// `n` storage nodes as [`Cluster::start`] makes them, each data dir passed to `prepare`
    /// after `defs init` and before its node starts (e.g. to change its `config.toml`).
    ///
    /// # Panics
    /// When a node does not start.
    pub fn start_prepared(base: &Path, n: usize, prepare: impl Fn(&Path)) -> Cluster {
        let dirs: Vec<PathBuf> = (0..n).map(|i| base.join(format!("n{i}"))).collect();
        let mut nodes = Vec::with_capacity(n);
        let mut first = None;
        for d in &dirs {
            init(d);
            prepare(d);
            nodes.push(spawn_node(d, first.as_deref()));
            if first.is_none() {
                first = Some(wait_for_addr(d));
            }
        }
        let addrs = dirs.iter().map(|d| wait_for_addr(d)).collect();
        Cluster { nodes, dirs, addrs }
    }

    /// SIGKILLs node `i` (a crash: no goodbye, nothing flushed) and waits for it to be gone.
    ///
    /// # Panics
    /// When the kill fails.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i].0;
        node.kill()
            .unwrap_or_else(|e| panic!("kill -9 node {i}: {e}"));
        let _ = node.wait();
    }

    /// Starts node `i` again in its data dir, on the address it had (as a node configured with
    /// a fixed port comes back), bootstrapped from another node.
    ///
    /// # Panics
    /// When it does not start.
    pub fn restart(&mut self, i: usize) {
        let dir = self.dirs[i].clone();
        let listen = self.addrs[i]
            .split("/p2p/")
            .next()
            .unwrap_or("/ip4/127.0.0.1/tcp/0")
            .to_string();
        let other = self.addrs[(i + 1) % self.addrs.len()].clone();
        let _ = std::fs::remove_file(dir.join("addrs"));
        self.nodes[i] = spawn_node_on(&dir, Some(&other), &[listen.as_str()]);
        wait_for_addr(&dir);
    }
}

/// Runs `cmd` to completion and returns its output (whatever its exit status).
///
/// # Panics
/// When it cannot be started.
pub fn out(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// stdout then stderr of `o`, for assertions and failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
