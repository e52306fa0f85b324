//! `defs`: the DeFS command line (init, id, node, put, get, status, peers, devnet).
//!
//! Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.
//! Commands that need the network use the running node of the data dir through its control
//! socket; with no node running they start one for the duration of the command.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use defs_core::config::Config as FileConfig;
use defs_core::identity::Identity;
use defs_core::shard_store::{Quotas, ShardStore};
use defs_net::Multiaddr;
use defs_net::commands::{self, layout_for, parse_rs};
use defs_net::control::{self, ControlRequest, ControlServer};
use defs_net::devnet::{self, Devnet, DevnetConfig};
use defs_net::{Client, Node};
use tokio_util::sync::CancellationToken;

/// DeFS: a decentralized, encrypted, erasure-coded filesystem.
#[derive(Parser, Debug)]
#[command(name = "defs", version, about)]
struct Cli {
    /// The data dir (identity, config, shards, control socket). Default: $DEFS_DATA_DIR, else
    /// the XDG data dir (~/.local/share/defs).
    #[arg(long, global = true, env = "DEFS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Network options shared by every command that needs the network.
#[derive(clap::Args, Debug, Clone, Default)]
struct NetArgs {
    /// A peer to join through (repeatable); remembered in DIR/config.toml.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Do not discover peers on the LAN with mDNS.
    #[arg(long)]
    no_mdns: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Create the identity (key file mode 0600) and a default config.toml.
    Init {
        /// Work-puzzle difficulty (leading zero bits); default from config.toml.
        #[arg(long)]
        difficulty: Option<u8>,
    },
    /// Print the peer id and node id.
    Id,
    /// Run a storage node in the foreground; writes its addresses to DIR/addrs.
    Node {
        /// Address to listen on (repeatable).
        #[arg(long = "listen", value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// Bytes offered to others (e.g. 10G, 500M).
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
        /// Zone label for placement diversity (rack, site).
        #[arg(long, default_value = "")]
        zone: String,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Store a file on the network; prints its file id on the last line.
    Put {
        /// The file.
        file: PathBuf,
        /// Storage mode: auto, file, slice, rs-size, rs-ratio.
        #[arg(long, default_value = "auto")]
        mode: String,
        /// Reed-Solomon data+parity shards, e.g. 3+2.
        #[arg(long, value_parser = parse_rs_arg)]
        rs: Option<(u8, u8)>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Fetch, verify and decrypt a file into OUT.
    Get {
        /// The file id `defs put` printed.
        file_id: String,
        /// Where to write it (appears only once everything verified).
        out: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Peers, capacity, and whether anything is protected.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Known peers.
    Peers {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Run N storage nodes on 127.0.0.1 in this process, for trying DeFS on one machine.
    Devnet {
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Capacity of each node (e.g. 10G).
        #[arg(long, value_parser = parse_size, default_value = "10G")]
        capacity: u64,
    },
    /// Print the version of this build.
    Version,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let mult = match unit.trim_end_matches("IB").trim_end_matches('B') {
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

fn parse_rs_arg(s: &str) -> Result<(u8, u8), String> {
    parse_rs(s).ok_or_else(|| format!("{s:?} is not K+M (e.g. 3+2)"))
}

fn data_dir(cli: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = cli {
        return Ok(d.clone());
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("defs"));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow!("neither --data-dir, DEFS_DATA_DIR nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".local/share/defs"))
}

fn load_config(dir: &Path) -> Result<FileConfig> {
    let path = dir.join("config.toml");
    let cfg: FileConfig = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    cfg.validate()
        .with_context(|| format!("in {}", path.display()))?;
    Ok(cfg)
}

fn save_config(dir: &Path, cfg: &FileConfig) -> Result<()> {
    let path = dir.join("config.toml");
    let tmp = dir.join(".config.toml.tmp");
    let text = toml::to_string_pretty(cfg).context("serializing config")?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn parse_addrs(list: &[String]) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .with_context(|| format!("bad multiaddr {a:?}"))
        })
        .collect()
}

/// Bootstrap peers: the command line's, remembered in config.toml, plus the remembered ones.
fn bootstrap(dir: &Path, cfg: &mut FileConfig, net: &NetArgs) -> Result<Vec<Multiaddr>> {
    let given = parse_addrs(&net.bootstrap)?;
    let mut changed = false;
    for a in &net.bootstrap {
        if !cfg.node.bootstrap.contains(a) {
            cfg.node.bootstrap.push(a.clone());
            changed = true;
        }
    }
    if changed && dir.join("identity.key").exists() {
        save_config(dir, cfg)?;
    }
    let mut all = given;
    for a in parse_addrs(&cfg.node.bootstrap)? {
        if !all.contains(&a) {
            all.push(a);
        }
    }
    Ok(all)
}

fn load_identity(dir: &Path) -> Result<Identity> {
    let key = dir.join("identity.key");
    if !key.exists() {
        bail!(
            "no identity in {}: run `defs init --data-dir {}` first",
            dir.display(),
            dir.display()
        );
    }
    Ok(Identity::load(&key)?)
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new() -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
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

/// Starts a client-only node for one command and waits for storage peers.
async fn ephemeral(dir: &Path, net: &NetArgs) -> Result<Client> {
    let mut cfg = load_config(dir)?;
    let identity = Arc::new(load_identity(dir)?);
    let boot = bootstrap(dir, &mut cfg, net)?;
    let mdns = cfg.node.mdns && !net.no_mdns;
    let config = defs_net::Config {
        listen: vec!["/ip4/0.0.0.0/tcp/0".parse()?],
        bootstrap: boot.clone(),
        mdns,
        store: None,
        ..defs_net::Config::default()
    };
    let node = Node::spawn(&identity, config).await?;
    // Wait for every bootstrap peer (or what mDNS finds), then a moment for the rest of the
    // network to be discovered through them.
    let want = boot.len().max(1);
    let have = node
        .wait_for_storage_peers(want, Duration::from_secs(10))
        .await?;
    if have > 0 {
        node.wait_for_storage_peers(usize::MAX, Duration::from_millis(500))
            .await?;
    }
    Ok(Client::new(node, identity))
}

/// Runs a network command through the running node's control socket, or an ephemeral node.
async fn network_command(dir: &Path, net: &NetArgs, req: ControlRequest) -> Result<String> {
    let bar = Bar::new();
    let show = matches!(req, ControlRequest::Put { .. } | ControlRequest::Get { .. });
    let on_progress = |d, t| {
        if show {
            bar.update(d, t)
        }
    };
    if let Some(stream) = control::connect(dir).await {
        let out = control::call(stream, &req, on_progress).await;
        bar.finish();
        return Ok(out?);
    }
    let client = ephemeral(dir, net).await?;
    let cfg = load_config(dir)?;
    let layout = cfg.layout.to_layout_config()?;
    let sink = |d, t| {
        if show {
            bar.update(d, t)
        }
    };
    let out = match req {
        ControlRequest::Id => Ok(commands::id(&client)),
        ControlRequest::Status { json } => commands::status(&client, json).await,
        ControlRequest::Peers { json } => commands::peers(&client, json).await,
        ControlRequest::Put { path, mode, rs } => {
            let layout = layout_for(&layout, &mode, rs)?;
            commands::put(&client, Path::new(&path), &layout, &sink).await
        }
        ControlRequest::Get { file_id, out } => {
            commands::get(&client, &file_id, Path::new(&out), &sink).await
        }
    };
    bar.finish();
    client.node().shutdown().await;
    Ok(out?)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()?.join(p))
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

async fn run_node(
    dir: &Path,
    listen: Vec<String>,
    capacity: Option<u64>,
    zone: String,
    net: NetArgs,
) -> Result<()> {
    let mut cfg = load_config(dir)?;
    let identity = load_identity(dir)?;
    let boot = bootstrap(dir, &mut cfg, &net)?;
    let listen = if listen.is_empty() {
        parse_addrs(&cfg.node.listen)?
    } else {
        parse_addrs(&listen)?
    };
    let capacity = capacity.unwrap_or(cfg.node.capacity_bytes);
    let store = ShardStore::open(
        &dir.join("shards"),
        Quotas {
            capacity,
            per_owner: cfg.node.owner_quota_bytes,
        },
    )?;
    let node = Node::spawn(
        &identity,
        defs_net::Config {
            listen,
            bootstrap: boot,
            mdns: cfg.node.mdns && !net.no_mdns,
            store: Some(store),
            capacity,
            zone,
            ..defs_net::Config::default()
        },
    )
    .await?;
    let addrs = node.wait_listening(Duration::from_secs(10)).await?;
    devnet::write_addrs(dir, &addrs)?;
    let cancel = CancellationToken::new();
    let handler = Arc::new(commands::Commands {
        client: Client::new(node.clone(), Arc::new(identity)),
        layout: cfg.layout.to_layout_config()?,
    });
    let _server = ControlServer::bind(dir, handler, cancel.clone()).await?;
    eprintln!("defs node {} listening on:", node.peer_id());
    for a in &addrs {
        eprintln!("  {a}");
    }
    wait_for_signal().await;
    cancel.cancel();
    node.shutdown().await;
    let _ = std::fs::remove_file(dir.join(control::SOCKET_NAME));
    Ok(())
}

async fn run_devnet(dir: &Path, nodes: usize, capacity: u64) -> Result<()> {
    let dir = dir.join("devnet");
    let net = Devnet::start(&DevnetConfig {
        nodes,
        dir: dir.clone(),
        capacity,
        capacities: Vec::new(),
        gossip_heartbeat: Duration::from_secs(1),
    })
    .await?;
    println!("devnet: {nodes} storage nodes in {}", dir.display());
    for a in net.bootstrap() {
        println!("bootstrap: {a}");
    }
    if let Some(first) = net.bootstrap().first() {
        println!(
            "try:  defs --data-dir /tmp/me init && defs --data-dir /tmp/me put FILE --no-mdns --bootstrap {first}"
        );
    }
    wait_for_signal().await;
    drop(net);
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let dir = data_dir(&cli.data_dir)?;
    match cli.command {
        Command::Version => println!("defs {}", env!("CARGO_PKG_VERSION")),
        Command::Init { difficulty } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let cfg = load_config(&dir)?;
            let d = difficulty.unwrap_or(cfg.identity.puzzle_difficulty);
            let id = Identity::create(&dir.join("identity.key"), d)?;
            if !dir.join("config.toml").exists() {
                save_config(&dir, &cfg)?;
            }
            let peer = defs_net::node::keypair(&id)?.public().to_peer_id();
            println!("peer id: {peer}\nnode id: {}", id.node_id());
        }
        Command::Id => {
            let id = load_identity(&dir)?;
            let peer = defs_net::node::keypair(&id)?.public().to_peer_id();
            println!("peer id: {peer}\nnode id: {}", id.node_id());
        }
        Command::Node {
            listen,
            capacity,
            zone,
            net,
        } => run_node(&dir, listen, capacity, zone, net).await?,
        Command::Put {
            file,
            mode,
            rs,
            net,
        } => {
            let path = absolute(&file)?;
            let out = network_command(
                &dir,
                &net,
                ControlRequest::Put {
                    path: path.display().to_string(),
                    mode,
                    rs,
                },
            )
            .await?;
            println!("{out}");
        }
        Command::Get { file_id, out, net } => {
            let out_path = absolute(&out)?;
            let text = network_command(
                &dir,
                &net,
                ControlRequest::Get {
                    file_id,
                    out: out_path.display().to_string(),
                },
            )
            .await?;
            eprintln!("{text}");
        }
        Command::Status { json, net } => {
            println!(
                "{}",
                network_command(&dir, &net, ControlRequest::Status { json }).await?
            )
        }
        Command::Peers { json, net } => {
            println!(
                "{}",
                network_command(&dir, &net, ControlRequest::Peers { json }).await?
            )
        }
        Command::Devnet { nodes, capacity } => run_devnet(&dir, nodes, capacity).await?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Node { .. } | Command::Devnet { .. } => "info",
        _ => "warn",
    };
    init_tracing(default_log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
