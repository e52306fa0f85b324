//! `defs install-helper`: puts `mount.defs` where mount(8) looks for helpers (`/sbin`), as a
//! symbolic link to the `defs-mount` installed next to this `defs`. A link rather than a copy,
//! so that upgrading `defs-mount` (`cargo install --path mount-helper`) upgrades the helper
//! too; found from this executable rather than `$PATH`, which `sudo` resets.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::usage;

/// Where mount(8) (util-linux) looks for `mount.TYPE` helpers first.
pub const HELPER_DIR: &str = "/sbin";

/// The helper's file name: mount(8) runs `mount.defs` for fstab lines of type `defs`.
pub const HELPER_NAME: &str = "mount.defs";

/// The `defs-mount` next to the running executable.
///
/// # Errors
/// When there is none.
pub fn sibling_defs_mount() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let target = dir.join("defs-mount");
    if !target.is_file() {
        anyhow::bail!(
            "no defs-mount next to {}: install both binaries together (cargo install --path \
             mount-helper, or cargo build --release --workspace --bins)",
            exe.display()
        );
    }
    Ok(target)
}

/// Links `dir/mount.defs` to `target`. Returns what it did, for the user. An existing link to
/// `target` is left as is; anything else there is replaced only with `force`.
///
/// # Errors
/// When something else is there (without `force`), or the link cannot be made (not root).
pub fn install_helper(dir: &Path, target: &Path, force: bool) -> anyhow::Result<String> {
    let link = dir.join(HELPER_NAME);
    if let Ok(meta) = link.symlink_metadata() {
        let points_to = std::fs::read_link(&link).ok();
        if points_to.as_deref() == Some(target) {
            return Ok(format!(
                "{} already links to {}: nothing to do",
                link.display(),
                target.display()
            ));
        }
        if !force {
            let what = match &points_to {
                Some(p) => format!("a link to {}", p.display()),
                None if meta.is_file() => "a file".to_string(),
                None => "something else".to_string(),
            };
            return Err(usage(format!(
                "{} already exists ({what}); pass --force to replace it with a link to {}",
                link.display(),
                target.display()
            )));
        }
    }
    // A new link under a temporary name, renamed over the old one: never a moment without one.
    let tmp = dir.join(format!(".{HELPER_NAME}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    symlink(target, &tmp).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (run it as root: sudo defs install-helper)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot create {}: {e}{hint}", link.display())
    })?;
    if let Err(e) = std::fs::rename(&tmp, &link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot create {}", link.display()));
    }
    Ok(format!(
        "installed {} -> {}: mount(8) now mounts fstab lines of type defs (mount.defs --help \
         lists the options)",
        link.display(),
        target.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_link_is_made_kept_and_replaced_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("defs-mount");
        std::fs::write(&target, b"").unwrap();
        let msg = install_helper(dir.path(), &target, false).unwrap();
        assert!(msg.starts_with("installed"), "{msg}");
        let link = dir.path().join(HELPER_NAME);
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        let again = install_helper(dir.path(), &target, false).unwrap();
        assert!(again.contains("nothing to do"), "{again}");
        let other = dir.path().join("other");
        let e = install_helper(dir.path(), &other, false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        install_helper(dir.path(), &other, true).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), other);
    }
}
