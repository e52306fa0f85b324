//! The data dir: where it is and what lives in it (`identity.key`, `config.toml`, `meta/`,
//! `cache/`, `shards/`, `logs/`).
//!
//! Chosen by `--data-dir`, else `$DEFS_DATA_DIR` (both handled by clap), else
//! `$XDG_DATA_HOME/defs`, else `~/.local/share/defs`.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The identity key file inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";
/// The config file inside the data dir.
pub const CONFIG_FILE: &str = "config.toml";
/// The metadata directory inside the data dir.
pub const META_DIR: &str = "meta";
/// `meta/NEW`: "this identity starts an empty namespace here". Written with a new identity
/// (`defs init`); a copied key lacks it, so a mount without a metadata DB recovers the
/// namespace from the network instead of mounting an empty tree over it. Removed once the
/// metadata DB exists.
pub const NEW_NAMESPACE_MARKER: &str = "NEW";

/// Writes `DIR/meta/NEW` (see [`NEW_NAMESPACE_MARKER`]).
///
/// # Errors
/// When the directory or the file cannot be created.
pub fn mark_new_namespace(dir: &Path) -> anyhow::Result<()> {
    let meta = dir.join(META_DIR);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&meta)
        .with_context(|| format!("cannot create {}", meta.display()))?;
    let marker = meta.join(NEW_NAMESPACE_MARKER);
    std::fs::write(
        &marker,
        "this identity was created here: its namespace starts empty\n",
    )
    .with_context(|| format!("cannot write {}", marker.display()))
}

/// The data dir: `explicit` when given, else the XDG default.
///
/// # Errors
/// When no data dir was given and neither `$XDG_DATA_HOME` nor `$HOME` is set.
pub fn resolve(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
        // The XDG spec says relative paths are invalid and must be ignored.
        if xdg.is_absolute() {
            return Ok(xdg.join("defs"));
        }
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".local/share/defs")),
        _ => bail!("no data dir: pass --data-dir DIR or set DEFS_DATA_DIR (HOME is not set)"),
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing dir is kept as it is, with a
/// warning when group or others can enter it.
///
/// # Errors
/// When the directory cannot be created or is not a directory.
pub fn create(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:03o}"), "data dir is accessible to group or others; consider chmod 700");
    }
    Ok(())
}
