//! The publisher's and recovery's files in `DIR/meta` (docs/format.md, "Namespace publishing:
//! local files"): their names, the durable write and removal every one of them goes through,
//! `root.seen`, and the local copies of published states.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;

/// The directory under `DIR/meta` where a cut's snapshot is written before it is stored.
pub const PUBLISH_DIR: &str = "publish";
/// A record signed and about to be sent, not yet committed: `cut LSN u64 LE ‖ record`.
pub const ROOT_NEXT: &str = "root.next";
/// The last record committed (published, or recovered from).
pub const ROOT_RECORD: &str = "root.record";
/// The highest seq this data dir has seen verify for its identity (decimal text): a reader
/// refuses candidates below it (no rollback) and a publisher numbers above it.
pub const ROOT_SEEN: &str = "root.seen";

/// Present in a recovered data dir until its ledger has learned what the kept versions it
/// recovered name ([`super::Publisher::derive_recovered_garbage`]).
pub const LEDGER_DERIVE: &str = "ledger.derive";

/// Writes `bytes` to `dir/name` durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&path, e));
    }
    fsync_dir(dir)
}

/// Removes `dir/name` (gone already is fine) and makes that durable.
pub(crate) fn remove_durably(dir: &Path, name: &str) -> Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir.join(name), e)),
        _ => fsync_dir(dir),
    }
}

/// The local copy of the published state of record `seq`: the full snapshot (plaintext) the
/// chain of that record yields.
pub(crate) fn state_file(seq: u64) -> String {
    format!("published-{seq}.snap")
}

/// Removes the local published states other than `seq`'s.
pub(crate) fn remove_states_but(dir: &Path, seq: u64) -> Result<()> {
    let keep = state_file(seq);
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("published-") && name.ends_with(".snap") && name != keep {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The last 32 bytes of the file at `path` (fewer when it is shorter).
pub(crate) fn tail(path: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(32)))
        .map_err(|e| Error::io(path, e))?;
    let mut out = Vec::with_capacity(32);
    f.read_to_end(&mut out).map_err(|e| Error::io(path, e))?;
    Ok(out)
}

/// The seq in `root.seen` (0 when absent).
pub(crate) fn read_seen(dir: &Path) -> Result<u64> {
    let path = dir.join(ROOT_SEEN);
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|_| Error::Corrupt {
            what: "root.seen",
            reason: format!("{s:?} is not a sequence number"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Raises `root.seen` to `seq` (never lowers it).
pub(crate) fn raise_seen(dir: &Path, seq: u64) -> Result<()> {
    if read_seen(dir)? < seq {
        write_durably(dir, ROOT_SEEN, seq.to_string().as_bytes())?;
    }
    Ok(())
}

/// Runs a blocking step (file I/O, fsync, the DB) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::io(
            "a blocking publish step",
            std::io::Error::other(e.to_string()),
        )
    })?
}

/// Bytes in memory as a [`crate::object::Source`] (a segment on its way to the network).
pub(crate) struct MemSource(pub(crate) Vec<u8>);

impl crate::object::Source for MemSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|at| self.0.get(at..at.checked_add(buf.len())?))
            .ok_or_else(|| {
                Error::io(
                    "a namespace segment",
                    std::io::ErrorKind::UnexpectedEof.into(),
                )
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}
