//! `defs`: the DeFS command line (init, id, node, put, get, sync, status, peers, devnet).
//!
//! Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use defs_net::commands::parse_rs;
use defs_net::control::ControlRequest;
use mount_helper::net_cmd::{self, NetOptions, NodeOptions, parse_size};
use mount_helper::{data_dir, identity_cmd, logging};

/// DeFS: a decentralized, encrypted, erasure-coded filesystem.
#[derive(Parser, Debug)]
#[command(name = "defs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the data dir is (shared by every command that uses one).
#[derive(clap::Args, Debug)]
struct DataDirArg {
    /// The data dir [default: $XDG_DATA_HOME/defs or ~/.local/share/defs]
    #[arg(long, value_name = "DIR", env = "DEFS_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// Options of every command that needs the network.
#[derive(clap::Args, Debug)]
struct NetArgs {
    /// A peer to join through (repeatable); remembered in DIR/config.toml.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Do not discover peers on the local network with mDNS.
    #[arg(long)]
    no_mdns: bool,
}

impl From<NetArgs> for NetOptions {
    fn from(a: NetArgs) -> Self {
        NetOptions {
            bootstrap: a.bootstrap,
            no_mdns: a.no_mdns,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Create the identity (key file mode 0600) and a default config.toml.
    Init {
        #[command(flatten)]
        dir: DataDirArg,
        /// Work puzzle difficulty (leading zero bits) [default: from config.toml, else built in]
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=i64::from(defs_core::identity::MAX_PUZZLE_DIFFICULTY)))]
        difficulty: Option<u8>,
    },
    /// Print the node id, peer id and public key.
    Id {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Run a storage node in the foreground; writes its addresses to DIR/addrs.
    Node {
        #[command(flatten)]
        dir: DataDirArg,
        /// Address to listen on (repeatable) [default: from config.toml]
        #[arg(long = "listen", value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// Bytes offered to others, e.g. 10G [default: from config.toml]
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
        /// Zone label (rack, site): shards of one segment prefer different zones.
        #[arg(long, default_value = "")]
        zone: String,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Store a file on the network; prints its file id on the last line of stdout.
    Put {
        /// The file.
        file: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
        /// Storage mode: auto, file, slice, rs-size, rs-ratio.
        #[arg(long, default_value = "auto")]
        mode: String,
        /// Reed-Solomon data+parity shards, e.g. 3+2 (implies rs-size with mode auto).
        #[arg(long, value_name = "K+M", value_parser = parse_rs_arg)]
        rs: Option<(u8, u8)>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Fetch, verify and decrypt a file into OUT (OUT appears only once everything verified).
    Get {
        /// The file id `defs put` printed.
        file_id: String,
        /// Where to write the file.
        out: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Wait until everything written under PATH in the mount is uploaded to the network
    /// (run it after rsync or cp to know the copy is off this machine). Exits 1 naming the
    /// files whose upload keeps failing.
    Sync {
        /// A file or directory inside the mount [default: the mountpoint of the data dir's mount]
        path: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// This node, its peers and capacity, and whether anything is protected; with a running
    /// mount, its dirty, uploading and failed files.
    Status {
        #[command(flatten)]
        dir: DataDirArg,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Known peers with their scores.
    Peers {
        #[command(flatten)]
        dir: DataDirArg,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Run N storage nodes on 127.0.0.1 in this process (trying DeFS on one machine).
    Devnet {
        #[command(flatten)]
        dir: DataDirArg,
        /// Number of storage nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Capacity of each node, e.g. 10G.
        #[arg(long, value_parser = parse_size, default_value = "10G")]
        capacity: u64,
        /// Identity puzzle difficulty of the nodes and of what they ask of peers; the default
        /// is what `defs init` writes, so a data dir made by `defs init` works with the devnet.
        #[arg(long, default_value_t = defs_core::identity::DEFAULT_PUZZLE_DIFFICULTY, value_parser = clap::value_parser!(u8).range(0..=i64::from(defs_core::identity::MAX_PUZZLE_DIFFICULTY)))]
        difficulty: u8,
    },
    /// Print the version of this build.
    Version,
}

fn parse_rs_arg(s: &str) -> Result<(u8, u8), String> {
    parse_rs(s).ok_or_else(|| format!("{s:?} is not K+M (e.g. 3+2)"))
}

async fn network(dir: DataDirArg, net: NetArgs, req: ControlRequest) -> anyhow::Result<String> {
    net_cmd::run(&data_dir::resolve(dir.data_dir)?, &net.into(), req).await
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { dir, difficulty } => {
            identity_cmd::init(&data_dir::resolve(dir.data_dir)?, difficulty)
        }
        Command::Id { dir } => identity_cmd::show(&data_dir::resolve(dir.data_dir)?),
        Command::Node {
            dir,
            listen,
            capacity,
            zone,
            net,
        } => {
            let opts = NodeOptions {
                listen,
                capacity,
                zone,
                net: net.into(),
            };
            net_cmd::node(&data_dir::resolve(dir.data_dir)?, opts).await
        }
        Command::Put {
            file,
            dir,
            mode,
            rs,
            net,
        } => {
            let path = net_cmd::absolute(&file)?.display().to_string();
            let out = network(dir, net, ControlRequest::Put { path, mode, rs }).await?;
            println!("{out}");
            Ok(())
        }
        Command::Get {
            file_id,
            out,
            dir,
            net,
        } => {
            let out = net_cmd::absolute(&out)?.display().to_string();
            let text = network(dir, net, ControlRequest::Get { file_id, out }).await?;
            eprintln!("{text}");
            Ok(())
        }
        Command::Sync { path, dir } => {
            let path = match path {
                None => None,
                Some(p) => Some(
                    std::fs::canonicalize(&p)
                        .map_err(|e| UsageError(format!("{}: {e}", p.display())))?
                        .display()
                        .to_string(),
                ),
            };
            let dir = data_dir::resolve(dir.data_dir)?;
            let out =
                net_cmd::run(&dir, &NetOptions::default(), ControlRequest::Sync { path }).await?;
            println!("{out}");
            Ok(())
        }
        Command::Status { dir, json, net } => {
            println!(
                "{}",
                network(dir, net, ControlRequest::Status { json }).await?
            );
            Ok(())
        }
        Command::Peers { dir, json, net } => {
            println!(
                "{}",
                network(dir, net, ControlRequest::Peers { json }).await?
            );
            Ok(())
        }
        Command::Devnet {
            dir,
            nodes,
            capacity,
            difficulty,
        } => {
            net_cmd::devnet(
                &data_dir::resolve(dir.data_dir)?,
                nodes,
                capacity,
                difficulty,
            )
            .await
        }
        Command::Version => {
            println!("defs {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

/// Bad usage found after parsing (a path that does not exist): exit code 2.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    // Bad usage exits with 2 inside parse().
    let cli = Cli::parse();
    logging::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("defs: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("defs: error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
