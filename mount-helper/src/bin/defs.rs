//! `defs`: the DeFS command line (init, id, node, put, get, sync, status, peers).
//!
//! Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
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
    /// Print the node id and public key.
    Id {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Print the version of this build.
    Version,
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { dir, difficulty } => {
            identity_cmd::init(&data_dir::resolve(dir.data_dir)?, difficulty)
        }
        Command::Id { dir } => identity_cmd::show(&data_dir::resolve(dir.data_dir)?),
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
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("defs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
