//! `defs`: the DeFS command line (init, id, key, node, put, get, sync, repair, status, peers,
//! devnet).
//!
//! Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use defs_net::commands::parse_rs;
use defs_net::control::ControlRequest;
use mount_helper::cli::{self, UsageError};
use mount_helper::net_cmd::{self, NetOptions, NodeOptions, parse_size};
use mount_helper::{data_dir, identity_cmd, key_cmd, logging, mount_state};

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
    /// A peer to join through, ending in /p2p/PEER_ID (repeatable); remembered in
    /// DIR/config.toml once it has answered.
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
            listen: Vec::new(),
        }
    }
}

/// Options of the commands that start a client-only node when no node runs for the data dir.
#[derive(clap::Args, Debug)]
struct ClientArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Where this command's client-only node listens (repeatable) [default: config.toml's
    /// client_listen, 127.0.0.1 on a random port]
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
}

impl From<ClientArgs> for NetOptions {
    fn from(a: ClientArgs) -> Self {
        NetOptions {
            listen: a.listen,
            ..a.net.into()
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
    /// Back up the identity as Shamir shares on paper, or rebuild identity.key from them.
    #[command(subcommand)]
    Key(KeyCommand),
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
        net: ClientArgs,
    },
    /// Fetch, verify and decrypt a file into OUT (OUT appears only once everything verified;
    /// an existing OUT is left as it is unless --force).
    Get {
        /// The file id `defs put` printed.
        file_id: String,
        /// Where to write the file (its directory must exist).
        out: PathBuf,
        /// Replace OUT when it already exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        net: ClientArgs,
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
    /// Check the owner's files now and repair what lost holders: shards whose nodes are gone
    /// are re-created from the others and stored on other nodes (a running mount also does this
    /// in the background). Exits 1 naming segments that could not be repaired.
    Repair {
        /// Files to check (ids `defs put` printed) [default: every file of the running mount]
        file_ids: Vec<String>,
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        net: ClientArgs,
    },
    /// Ask every holder of the running mount's files to prove it still keeps each shard
    /// (a proof of one random 1 KiB chunk per shard, checked against the shard's id). Exits 1
    /// naming each shard a holder could not prove.
    Audit {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Publish the running mount's namespace, then delete from the peers every stored object
    /// (old file versions, deleted files, superseded namespace snapshots) that no kept version
    /// names any more. The mount also does this in the background (`[gc] interval_secs`).
    Gc {
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
        net: ClientArgs,
    },
    /// Known peers with their scores.
    Peers {
        #[command(flatten)]
        dir: DataDirArg,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: ClientArgs,
    },
    /// Run N storage nodes on 127.0.0.1 in this process (trying DeFS on one machine).
    Devnet {
        #[command(flatten)]
        dir: DataDirArg,
        /// Number of storage nodes (1 to 64).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=64))]
        nodes: u16,
        /// Capacity of each node, e.g. 10G.
        #[arg(long, value_parser = parse_size, default_value = "10G")]
        capacity: u64,
        /// Identity puzzle difficulty of the nodes and of what they ask of peers; the default
        /// is what `defs init` writes, so a data dir made by `defs init` works with the devnet.
        #[arg(long, default_value_t = defs_core::identity::DEFAULT_PUZZLE_DIFFICULTY, value_parser = clap::value_parser!(u8).range(0..=i64::from(defs_core::identity::MAX_PUZZLE_DIFFICULTY)))]
        difficulty: u8,
    },
    /// Link /sbin/mount.defs to the defs-mount next to this defs, so that mount(8) and
    /// /etc/fstab mount DeFS (run as root).
    InstallHelper {
        /// Where mount(8) looks for helpers.
        #[arg(long, value_name = "DIR", default_value = mount_helper::install::HELPER_DIR)]
        dir: PathBuf,
        /// Replace a mount.defs that is not a link to this defs-mount.
        #[arg(long)]
        force: bool,
    },
    /// Print the version of this build.
    Version,
}

/// `defs key …`: the key backup (logic in `mount_helper::key_cmd`).
#[derive(clap::Subcommand, Debug)]
enum KeyCommand {
    /// Split identity.key into N printable shares, any T of which rebuild it (Shamir).
    Split {
        #[command(flatten)]
        dir: DataDirArg,
        /// How many shares to make (N, 2 to 255).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(2..=255))]
        shares: u8,
        /// How many shares rebuild the key (T, 2 to N).
        #[arg(long, value_name = "T", value_parser = clap::value_parser!(u8).range(2..=255))]
        threshold: u8,
        /// Write each share to its own file (mode 0600) in D instead of printing them.
        #[arg(long, value_name = "D")]
        out_dir: Option<PathBuf>,
    },
    /// Rebuild identity.key (mode 0600) from any T shares; never replaces an existing key.
    Combine {
        /// A share's text, a file holding shares (one per line, # comments), or - for stdin
        /// [default: stdin]
        #[arg(value_name = "SHARE")]
        shares: Vec<String>,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

fn parse_rs_arg(s: &str) -> Result<(u8, u8), String> {
    parse_rs(s).ok_or_else(|| format!("{s:?} is not K+M (e.g. 3+2)"))
}

async fn network(dir: DataDirArg, net: ClientArgs, req: ControlRequest) -> anyhow::Result<String> {
    net_cmd::run(&data_dir::resolve(dir.data_dir)?, &net.into(), req).await
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { dir, difficulty } => {
            identity_cmd::init(&data_dir::resolve(dir.data_dir)?, difficulty)
        }
        Command::Id { dir } => identity_cmd::show(&data_dir::resolve(dir.data_dir)?),
        Command::Key(KeyCommand::Split {
            dir,
            shares,
            threshold,
            out_dir,
        }) => {
            if threshold > shares {
                return Err(UsageError(format!(
                    "--threshold {threshold} is more than --shares {shares}"
                ))
                .into());
            }
            let dir = data_dir::resolve(dir.data_dir)?;
            key_cmd::split(&dir, threshold, shares, out_dir.as_deref())
        }
        Command::Key(KeyCommand::Combine { shares, dir }) => {
            key_cmd::combine(&data_dir::resolve(dir.data_dir)?, &shares)
        }
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
            cli::check_put_source(&file)?;
            let path = net_cmd::absolute(&file)?.display().to_string();
            let out = network(dir, net, ControlRequest::Put { path, mode, rs }).await?;
            println!("{out}");
            Ok(())
        }
        Command::Get {
            file_id,
            out,
            force,
            dir,
            net,
        } => {
            cli::check_get_output(&out, force)?;
            let out = net_cmd::absolute(&out)?.display().to_string();
            let req = ControlRequest::Get {
                file_id,
                out,
                force,
            };
            let text = network(dir, net, req).await?;
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
        Command::Repair { file_ids, dir, net } => {
            let out = network(dir, net, ControlRequest::Repair { files: file_ids }).await?;
            println!("{out}");
            Ok(())
        }
        Command::Gc { dir } => {
            let dir = data_dir::resolve(dir.data_dir)?;
            let out = net_cmd::run(&dir, &NetOptions::default(), ControlRequest::Gc).await?;
            println!("{out}");
            Ok(())
        }
        Command::Audit { dir } => {
            let dir = data_dir::resolve(dir.data_dir)?;
            let out = net_cmd::run(&dir, &NetOptions::default(), ControlRequest::Audit).await?;
            println!("{out}");
            Ok(())
        }
        Command::Status { dir, json, net } => {
            let path = data_dir::resolve(dir.data_dir.clone())?;
            if defs_net::control::connect(&path).await.is_none() {
                // No daemon answers: say what its last mount left behind (on stderr, so that
                // --json stays one document).
                for note in mount_state::leftovers(&path) {
                    eprintln!("warning: {note}");
                }
            }
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
                usize::from(nodes),
                capacity,
                difficulty,
            )
            .await
        }
        Command::InstallHelper { dir, force } => {
            let target = mount_helper::install::sibling_defs_mount()?;
            println!(
                "{}",
                mount_helper::install::install_helper(&dir, &target, force)?
            );
            Ok(())
        }
        Command::Version => {
            println!("defs {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

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
            eprintln!("defs: error: {}", cli::error_text(&e));
            if cli::is_usage(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
