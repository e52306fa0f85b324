//! Scratch files for the targets whose decoders read from a path or a database: one directory
//! per process under `TMPDIR` (ci/fuzz points it at a tmpfs it removes afterwards), made once.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

/// The process's scratch directory.
///
/// # Panics
/// When `TMPDIR` is unusable: a fuzz run cannot start without it.
pub(crate) fn dir() -> &'static Path {
    DIR.get_or_init(
        || match tempfile::Builder::new().prefix("defs-fuzz-").tempdir() {
            Ok(d) => d,
            Err(e) => panic!("cannot make a scratch directory: {e}"),
        },
    )
    .path()
}

/// Removes the scratch directory (it lives in a static, which is never dropped). Only for the
/// end of a process's last target run: a later run would find the directory gone.
pub fn remove() {
    if let Some(d) = DIR.get() {
        let _ = std::fs::remove_dir_all(d.path());
    }
}

/// `name` in the scratch directory.
pub(crate) fn path(name: &str) -> PathBuf {
    dir().join(name)
}

/// Writes `bytes` to scratch file `name` (mode 0600), replacing it.
///
/// # Panics
/// When the scratch directory cannot be written.
pub(crate) fn write(name: &str, bytes: &[u8]) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = path(name);
    let _ = std::fs::remove_file(&p);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .and_then(|mut f| f.write_all(bytes));
    if let Err(e) = written {
        panic!("cannot write scratch file {}: {e}", p.display());
    }
    p
}
