//! `defs`: the DeFS command line (init, id, node, put, get, sync, status, peers).
//!
//! Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.

use std::process::ExitCode;

use clap::Parser;

/// DeFS: a decentralized, encrypted, erasure-coded filesystem.
#[derive(Parser, Debug)]
#[command(name = "defs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the version of this build.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("defs {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
