//! The network commands of `defs`: `node` (a storage node in the foreground, with its control
//! socket and `DIR/addrs`), `put`, `get`, `status`, `peers` (through the running node's control
//! socket, else through a client-only node started for the command) and `devnet`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use defs_core::Identity;
use defs_core::object::{ManifestStore, Objects};
use defs_core::pipeline::{LayoutConfig, choose};
use defs_core::repair::Repairer;
use defs_core::shard_store::{Quotas, ShardStore};
use defs_net::commands::{self, layout_for};
use defs_net::control::{self, ControlRequest, ControlServer};
use defs_net::devnet::{self, Devnet, DevnetConfig};
use defs_net::{Client, Multiaddr, Node};
use tokio_util::sync::CancellationToken;

use crate::{bootstrap, data_dir};

/// How long a starting node or mount waits for the process that served the same data dir
/// before to finish shutting down: after its control socket closes it may still be releasing
/// the stores (10 s covers a loaded machine; beyond it the start fails with a message).
const DIR_LOCK_WAIT: Duration = Duration::from_secs(10);

/// The file in `DIR` whose exclusive lock the serving process holds until it exits.
pub const DIR_LOCK_FILE: &str = "node.lock";

/// The exclusive lock on a data dir (`DIR/node.lock`, flock(2)): one process at a time opens
/// its stores. Released when dropped, or when the process dies.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Takes the lock of `dir`, waiting up to [`DIR_LOCK_WAIT`] for a process that is still
    /// shutting down.
    ///
    /// # Errors
    /// When the lock file cannot be opened, or another process still holds the lock after the
    /// wait.
    pub async fn acquire(dir: &Path) -> anyhow::Result<DirLock> {
        let path = dir.join(DIR_LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening the data dir lock {}", path.display()))?;
        let deadline = tokio::time::Instant::now() + DIR_LOCK_WAIT;
        let mut announced = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e)
                        .with_context(|| format!("locking the data dir lock {}", path.display()));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "another process still holds {} after {} s: a defs node or defs-mount of {} \
                     is still shutting down (or hangs); wait for it to exit, or stop it",
                    path.display(),
                    DIR_LOCK_WAIT.as_secs(),
                    dir.display()
                );
            }
            if !announced {
                tracing::info!(lock = %path.display(), "waiting for the previous process of this data dir to exit");
                announced = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Network options of a command.
#[derive(Debug, Clone, Default)]
pub struct NetOptions {
    /// `--bootstrap` addresses.
    pub bootstrap: Vec<String>,
    /// `--no-mdns`.
    pub no_mdns: bool,
    /// `--listen` of a one-shot command: where its client-only node listens
    /// (`[node] client_listen` of config.toml when empty).
    pub listen: Vec<String>,
}

fn parse_addrs(list: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .with_context(|| format!("bad multiaddr {a:?}"))
        })
        .collect()
}

/// The config, every bootstrap address to dial (`--bootstrap` first; each must end in
/// `/p2p/PEER_ID`), and warnings about config.toml's addresses that were left out. New
/// `--bootstrap` addresses are remembered in config.toml only once they have answered
/// ([`bootstrap::remember_answered`]).
fn config_and_bootstrap(
    dir: &Path,
    net: &NetOptions,
) -> anyhow::Result<(defs_core::Config, Vec<Multiaddr>, Vec<String>)> {
    let config = crate::config_file::load(&dir.join(data_dir::CONFIG_FILE))?;
    let (all, warnings) = bootstrap::plan(&net.bootstrap, &config.node.bootstrap)?;
    Ok((config, all, warnings))
}

fn load_identity(dir: &Path) -> anyhow::Result<Identity> {
    let key = dir.join(data_dir::IDENTITY_FILE);
    if !key.exists() {
        bail!(
            "no identity at {}: run `defs init --data-dir {}` first",
            key.display(),
            dir.display()
        );
    }
    Identity::load(&key).context("cannot load the identity")
}

/// The key of a data dir's node on the network: the one in `DIR/node.key` when there is one,
/// else the identity's own. A data dir that starts from a copy of an identity used elsewhere
/// (a key, no metadata DB, no `meta/NEW`, no shard store yet) gets its own `node.key` (solving
/// the puzzle at `difficulty`), so that two machines of one identity are two nodes: the same
/// peer id twice would make each unreachable for the network while the other runs (a read-only
/// follower next to the writer, a second writable mount being refused). Data dirs that ever
/// stored shards keep the node id their holders are recorded under.
fn node_identity(
    dir: &Path,
    owner: &Arc<Identity>,
    difficulty: u8,
) -> anyhow::Result<Arc<Identity>> {
    let path = dir.join(NODE_KEY_FILE);
    if path.exists() {
        return Identity::load(&path)
            .map(Arc::new)
            .with_context(|| format!("loading the node key {}", path.display()));
    }
    let meta = dir.join(data_dir::META_DIR);
    let copied = !meta.join(defs_core::meta::DB_FILE).exists()
        && !meta.join(data_dir::NEW_NAMESPACE_MARKER).exists()
        && !dir.join("shards").exists();
    if !copied {
        return Ok(owner.clone());
    }
    let node = Identity::create(&path, difficulty)
        .with_context(|| format!("creating the node key {}", path.display()))?;
    tracing::info!(node = %node.node_id(), "a copied identity: this data dir's node gets its own key (DIR/node.key)");
    Ok(Arc::new(node))
}

/// This data dir's own node key, when its identity is a copy (see [`node_identity`]).
pub const NODE_KEY_FILE: &str = "node.key";

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// A bar of bytes (`files` false) or of files checked.
    fn new(show: bool, files: bool) -> Bar {
        if !show || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(if files {
            "{bar:40} {pos}/{len} files checked, eta {eta}"
        } else {
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        }) {
            bar.set_style(style);
        }
        Bar(Some(bar))
    }
    fn update(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// How many storage peers are enough for `req` to start without settling, if any: a put needs
/// one peer per shard of its geometry, and once more peers would not change that geometry
/// (an explicit `--rs K+M`, or an auto layout already at its full width), waiting for them only
/// delays the put. Later segments still place on peers that arrive meanwhile.
fn enough_peers(req: &ControlRequest, base: &LayoutConfig) -> Option<usize> {
    /// More peers than any geometry has shards.
    const MANY: usize = 1 << 10;
    let ControlRequest::Put { path, mode, rs } = req else {
        return None;
    };
    let size = std::fs::metadata(path).ok()?.len();
    let layout = layout_for(base, mode, *rs).ok()?;
    let widest = choose(size, MANY, &layout).ok()?;
    let shards = usize::from(widest.total_shards());
    (choose(size, shards, &layout).ok()? == widest).then_some(shards)
}

/// Starts a client-only node for one command and waits for storage peers, at most
/// [`defs_net::node::DISCOVERY_TIMEOUT`] in all: for its bootstrap dials
/// ([`bootstrap::wait`]), then, when one reached a node or mDNS is on, until the network found
/// through them has settled ([`Node::discover`]) or `enough` storage peers are there; says on
/// stderr what it found. Bootstrap addresses that give no usable peer are reported on stderr;
/// with `needs_peers` and no storage peer at all the command fails, naming each address and
/// why.
async fn ephemeral(
    dir: &Path,
    config: &defs_core::Config,
    bootstrap: Vec<Multiaddr>,
    net: &NetOptions,
    enough: Option<usize>,
    needs_peers: bool,
) -> anyhow::Result<Client> {
    let identity = Arc::new(load_identity(dir)?);
    let mdns = config.node.mdns && !net.no_mdns;
    // An empty list would make the node listen everywhere (its default): loopback instead.
    let loopback = ["/ip4/127.0.0.1/tcp/0".to_string()];
    let listen = match (&net.listen[..], &config.node.client_listen[..]) {
        ([], []) => &loopback[..],
        ([], configured) => configured,
        (given, _) => given,
    };
    let node = Node::spawn(
        &identity,
        defs_net::Config {
            listen: parse_addrs(listen)?,
            bootstrap,
            mdns,
            store: None,
            peer_difficulty: config.identity.puzzle_difficulty,
            private_ips_reachable: config.node.private_ips_reachable,
            tcp_security: config.node.tcp_security.clone(),
            ..defs_net::Config::default()
        },
    )
    .await?;
    let started = std::time::Instant::now();
    match find_network(&node, started, mdns, enough).await {
        Ok((found, reports)) => {
            if let Err(e) = bootstrap::remember_answered(dir, &net.bootstrap, &reports) {
                eprintln!("warning: {}", crate::cli::error_text(&e));
            }
            let have = found.map_or(0, |f| f.storage);
            if have == 0 && needs_peers {
                node.shutdown().await;
                return Err(bootstrap::no_peers(&reports, mdns, started.elapsed()));
            }
            for line in bootstrap::problems(&reports) {
                eprintln!("warning: {line}");
            }
            if let Some(found) = found {
                eprintln!(
                    "network: {found}, found through {} in {:.2} s",
                    sources(&reports, mdns),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(Client::new(node, identity))
        }
        Err(e) => {
            node.shutdown().await;
            Err(e.into())
        }
    }
}

/// Waits for the network of a node started at `started`, until
/// [`defs_net::node::DISCOVERY_TIMEOUT`] after that: its bootstrap dials
/// ([`bootstrap::wait`]), then, when one reached a node or mDNS is on, the network found
/// through them ([`Node::discover`], `None` when skipped). Returns it and what became of each
/// bootstrap address by then.
async fn find_network(
    node: &Node,
    started: std::time::Instant,
    mdns: bool,
    enough: Option<usize>,
) -> defs_net::Result<(
    Option<defs_net::node::Discovery>,
    Vec<defs_net::bootstrap::Report>,
)> {
    let deadline = tokio::time::Instant::from_std(started) + defs_net::node::DISCOVERY_TIMEOUT;
    let reports = bootstrap::wait(node, deadline, mdns).await?;
    if !mdns && !reports.iter().any(defs_net::bootstrap::Report::reached) {
        return Ok((None, reports));
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let found = node.discover(left, enough).await?;
    // Dials that were still running may have ended meanwhile.
    Ok((Some(found), node.bootstrap().await?))
}

/// Where a one-shot node's network came from, for its "found through" line: the bootstrap
/// addresses that reached a node, and mDNS when it is on.
fn sources(reports: &[defs_net::bootstrap::Report], mdns: bool) -> String {
    let reached = reports.iter().filter(|r| r.reached()).count();
    match (reached, mdns) {
        (0, true) => "mDNS (the local network)".to_string(),
        (n, true) => format!("{n} bootstrap address(es) and mDNS"),
        (n, false) => format!("{n} bootstrap address(es)"),
    }
}

/// Runs a network command through the running node's control socket, or a client-only node.
/// Returns the text for stdout.
///
/// # Errors
/// When the command fails; the message says why.
pub async fn run(dir: &Path, net: &NetOptions, req: ControlRequest) -> anyhow::Result<String> {
    let bar = Bar::new(
        matches!(
            req,
            ControlRequest::Put { .. }
                | ControlRequest::Get { .. }
                | ControlRequest::Sync { .. }
                | ControlRequest::Repair { .. }
        ),
        matches!(req, ControlRequest::Repair { .. }),
    );
    if let ControlRequest::Repair { files } = &req
        && files.is_empty()
        && control::connect(dir).await.is_none()
    {
        bail!(
            "no defs-mount is running for {}: `defs repair` without file ids checks the files of \
             a running mount; name the files to check (`defs repair FILE_ID...`) or mount first",
            dir.display()
        );
    }
    if matches!(
        req,
        ControlRequest::Sync { .. } | ControlRequest::Audit | ControlRequest::Gc
    ) {
        // Only a running mount has uploads to wait for, or files to audit: never start a node
        // for it.
        let Some(stream) = control::connect(dir).await else {
            if req == ControlRequest::Gc {
                bail!(
                    "no defs-mount is running for {}: only a writable mount collects garbage",
                    dir.display()
                );
            }
            if req == ControlRequest::Audit {
                bail!(
                    "no defs-mount is running for {}: only a mount knows which files to audit",
                    dir.display()
                );
            }
            bail!(
                "no defs-mount is running for {}: nothing to sync (dirty files of an earlier \
                 mount upload when it is mounted again)",
                dir.display()
            );
        };
        let out = control::call(stream, &req, |d, t| bar.update(d, t)).await;
        bar.finish();
        return Ok(out?);
    }
    let (config, bootstrap, warnings) = config_and_bootstrap(dir, net)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if let Some(stream) = control::connect(dir).await {
        let new: Vec<&String> = net
            .bootstrap
            .iter()
            .filter(|a| !config.node.bootstrap.contains(a))
            .collect();
        if !new.is_empty() {
            eprintln!(
                "warning: the node running for {} does not dial --bootstrap given to this \
                 command, so it was not saved: give it to the node at its start (defs node / \
                 defs-mount --bootstrap), which remembers it once it answers",
                dir.display()
            );
        }
        let out = control::call(stream, &req, |d, t| bar.update(d, t)).await;
        bar.finish();
        return Ok(out?);
    }
    let enough = enough_peers(&req, &config.layout);
    let needs_peers = matches!(
        req,
        ControlRequest::Put { .. } | ControlRequest::Get { .. } | ControlRequest::Repair { .. }
    );
    let client = ephemeral(dir, &config, bootstrap, net, enough, needs_peers).await?;
    let layout = config.layout.clone();
    let sink = |d, t| bar.update(d, t);
    let out = match req {
        ControlRequest::Id => Ok(commands::id(&client)),
        ControlRequest::Status { json } => commands::status(&client, json).await,
        ControlRequest::Peers { json } => commands::peers(&client, json).await,
        ControlRequest::Put { path, mode, rs } => match layout_for(&layout, &mode, rs) {
            Ok(layout) => commands::put(&client, Path::new(&path), &layout, &sink).await,
            Err(e) => Err(e),
        },
        ControlRequest::Get {
            file_id,
            out,
            force,
        } => commands::get(&client, &file_id, Path::new(&out), force, &sink).await,
        // Answered above.
        ControlRequest::Sync { .. } | ControlRequest::Audit | ControlRequest::Gc => {
            Err(defs_net::Error::Control(commands::NO_MOUNT.into()))
        }
        ControlRequest::Repair { files } => match commands::repair_ids(&files) {
            Ok(ids) => match repair_over(dir, &client, &config) {
                Ok((_, repairer)) => commands::repair(&repairer, ids, &sink).await,
                Err(e) => {
                    client.node().shutdown().await;
                    return Err(e);
                }
            },
            Err(e) => Err(e),
        },
    };
    bar.finish();
    client.node().shutdown().await;
    Ok(out?)
}

/// `path` made absolute against the current dir (the running node has another one).
///
/// # Errors
/// When the current dir is unknown.
pub fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    // Also drops `.` components: `./copy.jpg` is shown as DIR/copy.jpg, not DIR/./copy.jpg.
    Ok(std::path::absolute(p)?)
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Settings of `defs node` from the command line.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `--listen` (config.toml's when empty).
    pub listen: Vec<String>,
    /// `--capacity` (config.toml's when absent).
    pub capacity: Option<u64>,
    /// `--zone`.
    pub zone: String,
    /// Bootstrap and mDNS.
    pub net: NetOptions,
}

/// The object layer over `client` with the data dir's manifest store (`DIR/meta/manifests`),
/// and the owner's repair over it, as `config.toml` sets it.
///
/// # Errors
/// When the manifest store cannot be opened.
pub fn repair_over(
    dir: &Path,
    client: &Client,
    config: &defs_core::Config,
) -> anyhow::Result<(Arc<Objects>, Arc<Repairer>)> {
    let manifests_dir = dir.join("meta").join("manifests");
    let manifests = ManifestStore::open(&manifests_dir)
        .with_context(|| format!("opening {}", manifests_dir.display()))?;
    let objects = Arc::new(Objects::new(
        Arc::new(client.clone()),
        client.identity().manifest_wrap_key(),
        config.layout.clone(),
        Some(manifests),
    ));
    let repairer = Arc::new(Repairer::new(objects.clone(), (&config.repair).into()));
    Ok((objects, repairer))
}

/// A storage node running for a data dir: the start-up `defs node` and `defs-mount` share.
///
/// [`StorageNode::start`] refuses a data dir another node or mount serves (its control socket
/// answers), waits for one still shutting down (the dir's [`DirLock`]), remembers
/// `--bootstrap` in `DIR/config.toml`, opens `DIR/shards`, starts the libp2p node (mDNS as
/// configured) and writes `DIR/addrs`; [`StorageNode::serve_control`] then binds
/// `DIR/control.sock` with the caller's handler; [`StorageNode::shutdown`] stops both.
#[derive(Debug)]
pub struct StorageNode {
    /// The node.
    pub node: Node,
    /// A client of the node, signing as this data dir's identity.
    pub client: Client,
    /// The data dir's identity.
    pub identity: Arc<Identity>,
    /// The data dir's settings.
    pub config: defs_core::Config,
    /// The full addresses the node listens on (as written to `DIR/addrs`).
    pub addrs: Vec<Multiaddr>,
    /// The object layer over this node, keeping manifests and holder records in
    /// `DIR/meta/manifests`: one per process, so that repair's holder updates are what every
    /// reader and durability figure sees.
    pub objects: Arc<Objects>,
    /// The owner's repair over `objects`.
    pub repairer: Arc<Repairer>,
    /// Bootstrap addresses that gave no usable peer by the end of the start (its wait for the
    /// bootstrap dials and the network found through them), and config.toml addresses left
    /// out: one line each, with the reason.
    pub bootstrap_problems: Vec<String>,
    dir: PathBuf,
    cancel: CancellationToken,
    serving: bool,
    lock: Arc<DirLock>,
}

/// How long a stopping node waits for the stores it already admitted to finish (after it has
/// begun refusing new ones): 5 s, a few shards' disk syncs on a slow disk.
pub const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// The pairing settings of `config.toml` for the node of `dir` (`None`: pairing off).
pub fn pairing_config(
    dir: &Path,
    p: &defs_core::config::PairingSettings,
) -> Option<defs_net::pairing::Config> {
    p.enabled.then(|| defs_net::pairing::Config {
        heartbeat: Duration::from_secs(p.heartbeat_secs),
        partner_timeout: Duration::from_secs(p.partner_timeout_secs),
        mirror_bandwidth: p.mirror_bandwidth_bytes,
        rescan: Duration::from_secs(p.rescan_secs),
        max_wards: p.max_wards as usize,
        ..defs_net::pairing::Config::new(dir.join(defs_net::pairing::STATE_FILE))
    })
}

/// How long a starting node may take to report its listen addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

impl StorageNode {
    /// Starts the storage node of `dir`.
    ///
    /// # Errors
    /// When another node or mount serves `dir`, there is no identity, an address is bad, the
    /// shard store cannot be opened, or the node cannot listen.
    pub async fn start(dir: &Path, opts: &NodeOptions) -> anyhow::Result<StorageNode> {
        refuse_if_running(dir).await?;
        let lock = Arc::new(DirLock::acquire(dir).await?);
        let identity = Arc::new(load_identity(dir)?);
        let (config, bootstrap, mut bootstrap_problems) = config_and_bootstrap(dir, &opts.net)?;
        let node_key = node_identity(dir, &identity, config.identity.puzzle_difficulty)?;
        let listen = if opts.listen.is_empty() {
            parse_addrs(&config.node.listen)?
        } else {
            parse_addrs(&opts.listen)?
        };
        let capacity = opts.capacity.unwrap_or(config.node.capacity_bytes);
        let shards = dir.join("shards");
        let store = ShardStore::open(
            &shards,
            Quotas {
                capacity,
                per_owner: config.node.owner_quota_bytes,
            },
        )
        .map_err(|e| {
            // Only a failure to open the index hints at another process holding it.
            let hint = if matches!(e, defs_core::Error::StoreIndex { .. }) {
                format!(
                    " (is another defs node or defs-mount using {}?)",
                    dir.display()
                )
            } else {
                String::new()
            };
            anyhow::Error::new(e).context(format!(
                "cannot open the shard store {}{hint}",
                shards.display()
            ))
        })?;
        let node = Node::spawn(
            &node_key,
            defs_net::Config {
                listen,
                bootstrap,
                mdns: config.node.mdns && !opts.net.no_mdns,
                store: Some(store),
                capacity,
                zone: opts.zone.clone(),
                peer_difficulty: config.identity.puzzle_difficulty,
                pairing: pairing_config(dir, &config.pairing),
                private_ips_reachable: config.node.private_ips_reachable,
                tcp_security: config.node.tcp_security.clone(),
                ..defs_net::Config::default()
            },
        )
        .await?;
        let addrs = match node.wait_listening(LISTEN_TIMEOUT).await {
            Ok(a) => a,
            Err(e) => {
                node.shutdown().await;
                return Err(e.into());
            }
        };
        devnet::write_addrs(dir, &addrs)?;
        let started = tokio::time::Instant::now();
        let reports = bootstrap::wait(&node, started + bootstrap::REPORT_WAIT, false).await?;
        let reports = if reports.iter().any(defs_net::bootstrap::Report::reached) {
            // Serve (and place shards) only once the network found through the bootstrap
            // peers has settled, so that the first uploads spread over all of it.
            let left = (started + defs_net::node::DISCOVERY_TIMEOUT)
                .saturating_duration_since(tokio::time::Instant::now());
            let found = node.discover(left, None).await?;
            tracing::info!(%found, "network found through the bootstrap peers");
            // Dials still running at the first look may have ended meanwhile.
            node.bootstrap().await?
        } else {
            reports
        };
        bootstrap_problems.extend(bootstrap::problems(&reports));
        // New addresses are remembered as they answer, also after the start.
        if !opts.net.bootstrap.is_empty() {
            tokio::spawn(bootstrap::watch_and_remember(
                dir.to_path_buf(),
                node.clone(),
                opts.net.bootstrap.clone(),
            ));
        }
        let client = Client::new(node.clone(), identity.clone());
        let (objects, repairer) = repair_over(dir, &client, &config)?;
        Ok(StorageNode {
            objects,
            repairer,
            client,
            node,
            identity,
            config,
            addrs,
            bootstrap_problems,
            dir: dir.to_path_buf(),
            cancel: CancellationToken::new(),
            serving: false,
            lock,
        })
    }

    /// The data dir's lock, for a caller whose stores may outlive this node (a mount's tasks):
    /// the dir stays locked until every clone is dropped.
    pub fn dir_lock(&self) -> Arc<DirLock> {
        self.lock.clone()
    }

    /// The network commands (`defs status/peers/put/get/repair`) over this node.
    pub fn commands(&self) -> commands::Commands {
        commands::Commands {
            client: self.client.clone(),
            layout: self.config.layout.clone(),
            repairer: self.repairer.clone(),
        }
    }

    /// Serves `DIR/control.sock` with `handler` until [`StorageNode::shutdown`].
    ///
    /// # Errors
    /// When the socket cannot be bound or another node answers on it.
    pub async fn serve_control(
        &mut self,
        handler: Arc<dyn control::Handler>,
    ) -> anyhow::Result<()> {
        ControlServer::bind(&self.dir, handler, self.cancel.clone()).await?;
        self.serving = true;
        Ok(())
    }

    /// Stops serving `DIR/control.sock` (the node runs on): a mount that is shutting down
    /// answers no more commands, and the next mount of the dir does not take it for a live one.
    pub fn stop_control(&mut self) {
        self.cancel.cancel();
        if self.serving {
            let _ = std::fs::remove_file(self.dir.join(control::SOCKET_NAME));
            self.serving = false;
        }
    }

    /// Stops the control socket and the node: first no new shards (refused with a reason, so
    /// owners store them elsewhere), then up to [`DRAIN_WAIT`] for stores already admitted to
    /// reach the disk, then the node.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        match self.node.drain(DRAIN_WAIT).await {
            Ok(0) | Err(_) => {}
            Ok(n) => tracing::warn!(running = n, "stopping with stores still running"),
        }
        self.node.shutdown().await;
        if self.serving {
            let _ = std::fs::remove_file(self.dir.join(control::SOCKET_NAME));
        }
    }
}

/// Refuses a data dir whose control socket answers: a `defs node` or `defs-mount` serves it.
///
/// # Errors
/// When one does.
pub async fn refuse_if_running(dir: &Path) -> anyhow::Result<()> {
    if control::connect(dir).await.is_some() {
        bail!(
            "a defs node or defs-mount is already running for {} (its control socket {} answers); \
             stop it first, or talk to it with `defs status --data-dir {}`",
            dir.display(),
            dir.join(control::SOCKET_NAME).display(),
            dir.display()
        );
    }
    Ok(())
}

/// `defs node`: a storage node in the foreground until SIGINT/SIGTERM.
///
/// # Errors
/// When the node cannot start (no identity, a port in use, another node on this data dir).
pub async fn node(dir: &Path, opts: NodeOptions) -> anyhow::Result<()> {
    let mut node = StorageNode::start(dir, &opts).await?;
    node.serve_control(Arc::new(node.commands())).await?;
    eprintln!("defs node {} listening on:", node.node.peer_id());
    for a in &node.addrs {
        eprintln!("  {a}");
    }
    for p in &node.bootstrap_problems {
        eprintln!("warning: {p}");
    }
    wait_for_signal().await;
    node.shutdown().await;
    Ok(())
}

/// `defs devnet`: `nodes` storage nodes on 127.0.0.1 in this process until SIGINT/SIGTERM.
///
/// # Errors
/// When the nodes cannot start.
pub async fn devnet(dir: &Path, nodes: usize, capacity: u64, difficulty: u8) -> anyhow::Result<()> {
    let dir = dir.join("devnet");
    let net = Devnet::start(&DevnetConfig {
        nodes,
        dir: dir.clone(),
        capacity,
        capacities: Vec::new(),
        gossip_heartbeat: Duration::from_secs(1),
        quic: false,
        difficulty,
        pairing: Some(defs_net::pairing::Config::new(PathBuf::new())),
    })
    .await?;
    println!("devnet: {nodes} storage nodes, data in {}", dir.display());
    for a in net.bootstrap() {
        println!("bootstrap: {a}");
    }
    if let Some(first) = net.bootstrap().first() {
        println!(
            "try: defs init --data-dir /tmp/me && defs put FILE --data-dir /tmp/me --no-mdns --bootstrap {first}"
        );
    }
    wait_for_signal().await;
    drop(net);
    Ok(())
}

/// Parses a size: plain bytes or with a K/M/G/T suffix (powers of 1024), e.g. `10G`.
///
/// # Errors
/// A message for clap.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let mult = match unit.trim_end_matches('B').trim_end_matches('I') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?}")),
            };
            (&s[..i], mult)
        }
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("1X").is_err());
    }

    #[test]
    fn a_put_starts_once_more_peers_would_not_change_its_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"x").unwrap();
        let put = |path: &Path, rs| ControlRequest::Put {
            path: path.display().to_string(),
            mode: "auto".into(),
            rs,
        };
        let base = LayoutConfig::default();
        // An explicit K+M needs K+M peers, whatever else is around.
        assert_eq!(enough_peers(&put(&big, Some((3, 2))), &base), Some(5));
        // Auto: the default 10+4 for a big file, three whole copies for a small one.
        assert_eq!(enough_peers(&put(&big, None), &base), Some(14));
        assert_eq!(enough_peers(&put(&small, None), &base), Some(3));
        // Nothing to size, or not a put: settle as usual.
        assert_eq!(
            enough_peers(&put(&dir.path().join("gone"), None), &base),
            None
        );
        let get = ControlRequest::Get {
            file_id: String::new(),
            out: String::new(),
            force: false,
        };
        assert_eq!(enough_peers(&get, &base), None);
    }
}
