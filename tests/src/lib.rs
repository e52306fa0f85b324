//! Shared helpers for the end-to-end tests in `e2e/`: locating the built binaries, temporary data
//! dirs, clusters of real nodes on 127.0.0.1, and the random-operation driver `fsx`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cluster;
#[cfg(feature = "fuse_tests")]
pub mod fsx;
#[cfg(feature = "fuse_tests")]
pub mod mount;

use std::path::PathBuf;
use std::process::Command;

/// The directory holding the workspace's binaries for this build profile: `DEFS_BIN_DIR` if set,
/// else the profile directory this test executable was built into (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DEFS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A command for one of the workspace's binaries (`defs`, `defs-mount`, `mount.defs`).
///
/// # Panics
/// When the binary has not been built: `ci/test` builds them (`cargo build --bins`) before the
/// tests run, and a test without its binary must fail loudly, not skip.
pub fn bin(name: &str) -> Command {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    Command::new(path)
}
