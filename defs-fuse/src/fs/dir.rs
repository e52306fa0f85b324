//! Directory handles on the core: opendir, readdir (with attributes for readdirplus), releasedir
//! and fsyncdir.

use super::*;

impl Fs {
    /// Opens a directory.
    ///
    /// # Errors
    /// NotFound, NotADirectory.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped opendir may leak a handle until unmount.
    pub async fn opendir(&self, ino: InodeNo) -> Result<FileHandle> {
        let attr = self.getattr(ino).await?;
        if attr.kind != FileKind::Directory {
            return Err(defs_core::Error::NotADirectory { ino: ino.0 }.into());
        }
        Ok(self.new_handle(Handle::Dir { ino }))
    }

    /// Entries of directory `ino` after `offset` (0 starts; "." and ".." first). With `plus`,
    /// each entry carries its attributes; the caller counts a lookup for each entry it passes
    /// on ([`Fs::remember`]).
    ///
    /// # Errors
    /// BadHandle, NotFound, NotADirectory.
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn readdir(
        &self,
        ino: InodeNo,
        fh: FileHandle,
        offset: u64,
        plus: bool,
    ) -> Result<Vec<DirEntry>> {
        match lock(&self.inner.handles).get(&fh) {
            Some(Handle::Dir { ino: hino }) if *hino == ino => {}
            _ => return Err(Error::BadHandle { ino, fh }),
        }
        if snapshots::is_version(ino) {
            let root = self.root_attr()?;
            return self.snapshots(ino)?.readdir(ino, offset, plus, &root).await;
        }
        let db = &self.inner.db;
        let mut out = Vec::new();
        // Offsets: 1 is ".", 2 is "..", cookie + 2 is a DB entry.
        if offset < 1 {
            let attr = if plus {
                Some(self.getattr(ino).await?)
            } else {
                None
            };
            out.push(DirEntry {
                ino,
                cookie: 1,
                kind: FileKind::Directory,
                name: ".".into(),
                attr,
            });
        }
        if offset < 2 {
            let parent = db.parent_of(ino)?;
            let attr = if plus {
                Some(self.getattr(parent).await?)
            } else {
                None
            };
            out.push(DirEntry {
                ino: parent,
                cookie: 2,
                kind: FileKind::Directory,
                name: "..".into(),
                attr,
            });
        }
        for e in db.readdir(ino, offset.saturating_sub(2), READDIR_BATCH)? {
            let attr = if plus {
                match db.getattr(e.ino) {
                    Ok(a) => Some(a),
                    // Removed since the listing was read: skip it.
                    Err(_) => continue,
                }
            } else {
                None
            };
            out.push(DirEntry {
                ino: e.ino,
                cookie: e.cookie + 2,
                kind: e.kind,
                name: OsStr::from_bytes(&e.name).to_os_string(),
                attr,
            });
        }
        Ok(out)
    }

    /// Closes a directory handle.
    ///
    /// # Errors
    /// BadHandle.
    ///
    /// # Cancel safety
    /// Safe.
    pub async fn releasedir(&self, ino: InodeNo, fh: FileHandle) -> Result<()> {
        match lock(&self.inner.handles).remove(&fh) {
            Some(Handle::Dir { .. }) => Ok(()),
            _ => Err(Error::BadHandle { ino, fh }),
        }
    }

    /// fsync of a directory: the namespace is durable on the local disk.
    ///
    /// # Errors
    /// The DB's sync failed.
    ///
    /// # Cancel safety
    /// Safe.
    pub async fn fsyncdir(&self, ino: InodeNo) -> Result<()> {
        let _ = ino;
        self.inner.db.sync()?;
        Ok(())
    }
}
