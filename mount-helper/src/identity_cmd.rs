//! `defs init` and `defs id`: create and show this data dir's identity (and load it for other
//! commands).

use std::path::Path;

use anyhow::{Context, bail};
use defs_core::Identity;
use defs_core::types::to_hex;

use crate::{config_file, data_dir};

/// `defs init`: creates the data dir (mode 0700), the identity key (mode 0600) solving the puzzle
/// at `difficulty` (default: the config file's, else the built-in default) and the commented
/// default `config.toml` (with that difficulty, which the node then also asks of its peers).
/// Prints the node id.
///
/// # Errors
/// When an identity already exists in `dir`, or anything cannot be created.
pub fn init(dir: &Path, difficulty: Option<u8>) -> anyhow::Result<()> {
    let key = dir.join(data_dir::IDENTITY_FILE);
    if key.symlink_metadata().is_ok() {
        bail!(
            "an identity already exists at {}; refusing to overwrite it (use another --data-dir)",
            key.display()
        );
    }
    data_dir::create(dir)?;
    let config_path = dir.join(data_dir::CONFIG_FILE);
    let config = config_file::load(&config_path)?;
    let difficulty = difficulty.unwrap_or(config.identity.puzzle_difficulty);
    let started = std::time::Instant::now();
    let identity = Identity::create(&key, difficulty)
        .with_context(|| format!("cannot create the identity in {}", dir.display()))?;
    tracing::debug!(
        difficulty,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "puzzle solved"
    );
    // The difficulty chosen here is also what this node asks of its peers.
    config_file::write_new(&config_path, &config_file::initial_toml(difficulty))?;
    // A new identity has no namespace on the network: its first mount starts empty.
    data_dir::mark_new_namespace(dir)?;
    println!("created identity in {}", dir.display());
    println!("node id    {}", identity.node_id());
    Ok(())
}

/// `defs id`: prints the node id (hex) and the compressed public key (hex).
///
/// # Errors
/// When there is no identity or the key file is unusable (e.g. group-readable).
pub fn show(dir: &Path) -> anyhow::Result<()> {
    let identity = load(dir)?;
    let peer = defs_net::node::keypair(&identity)?.public().to_peer_id();
    println!("node id    {}", identity.node_id());
    println!("peer id    {peer}");
    println!("public key {}", to_hex(&identity.public().to_bytes()));
    Ok(())
}

/// Loads the data dir's identity, saying what to run when there is none.
///
/// # Errors
/// When there is no identity or the key file is unusable (e.g. group-readable).
pub fn load(dir: &Path) -> anyhow::Result<Identity> {
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
