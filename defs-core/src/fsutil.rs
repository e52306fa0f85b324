//! Small filesystem helpers shared by the local stores: the durability steps every
//! temp-file-then-rename protocol needs.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Fsyncs a directory, making the creations, renames and removals of entries in it durable.
///
/// # Errors
/// [`Error::Io`] naming `dir`.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
