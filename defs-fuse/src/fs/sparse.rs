//! Holes: `lseek(SEEK_DATA | SEEK_HOLE)`, `fallocate` (punch, allocate) and the bytes a file
//! takes (`st_blocks`), each answered from the real layout.
//!
//! - A dirty file is all in its cache file, which is sparse: its layout is the cache file's
//!   (`SEEK_DATA`/`SEEK_HOLE`, `st_blocks` of the cache file).
//! - A clean stored file's layout is its manifest's data extents (the cache file, filled
//!   sparsely from them, has the same holes where it holds bytes). `st_blocks` reads the
//!   manifest only from this machine (memory or the local manifest store), never from the
//!   network: without it, the size rounded up answers, as before holes were kept.

use defs_core::cache_store::Seek;
use defs_core::namespace::{self, Attr, Content, FileKind};
use defs_core::pipeline::FileKey;
use defs_core::types::InodeNo;

use super::{Error, FileHandle, Fs, Result, lock};

/// Stored versions whose allocated bytes [`Allocated`] remembers before it starts afresh: a
/// `stat` of a clean file then costs a map lookup, not a manifest read.
const ALLOCATED_MEMO: usize = 1 << 16;

impl Fs {
    /// `attr` with the bytes its content takes, for regular files (see the module doc).
    pub(super) fn with_allocated(&self, mut attr: Attr) -> Attr {
        if attr.kind == FileKind::RegularFile {
            attr.allocated = self.allocated(attr.ino);
        }
        attr
    }

    fn allocated(&self, ino: InodeNo) -> Option<u64> {
        if self.inner.cache.is_dirty(ino) {
            return self.inner.cache.allocated(ino).ok();
        }
        match self.inner.db.content(ino).ok()? {
            Content::Empty => Some(0),
            Content::Stored {
                file,
                key,
                offset,
                len,
            } => {
                if let Some(n) = lock(&self.inner.allocated).memo.get(&(file, offset, len)) {
                    return Some(*n);
                }
                let objects = self.inner.objects.as_ref()?;
                let manifest = objects.manifest_local(file, &FileKey::from_bytes(key))?;
                let n = manifest.allocated(offset, offset + len);
                let mut a = lock(&self.inner.allocated);
                if a.memo.len() >= ALLOCATED_MEMO {
                    a.memo.clear();
                }
                a.memo.insert((file, offset, len), n);
                Some(n)
            }
        }
    }

    /// `lseek(fd, offset, SEEK_DATA | SEEK_HOLE)`: the first data (or hole) byte at or after
    /// `offset`; the end of the file counts as a hole.
    ///
    /// # Errors
    /// NoSuchOffset (ENXIO) at or past the end, or for `SEEK_DATA` with only holes after
    /// `offset`; Invalid for another `whence` (the kernel answers those itself); BadHandle;
    /// Fetch when a clean file's manifest cannot be had.
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn lseek(
        &self,
        ino: InodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
    ) -> Result<i64> {
        self.file_handle(ino, fh)?;
        let what = match whence {
            libc::SEEK_DATA => Seek::Data,
            libc::SEEK_HOLE => Seek::Hole,
            _ => {
                return Err(Error::Invalid {
                    what: "lseek whence other than SEEK_DATA or SEEK_HOLE",
                });
            }
        };
        let none = || Error::NoSuchOffset {
            ino,
            offset,
            what: match what {
                Seek::Data => "data",
                Seek::Hole => "hole",
            },
        };
        let size = self.getattr(ino).await?.size;
        let from = u64::try_from(offset).map_err(|_| none())?;
        if from >= size {
            return Err(none());
        }
        let found = if self.inner.cache.is_dirty(ino) {
            self.inner.cache.seek(ino, from, what)?
        } else if let Some(stored) = self.stored_content(ino).await? {
            let (base, end) = (stored.offset, stored.offset + stored.len);
            let m = &stored.manifest;
            match what {
                Seek::Data => m.next_data(base + from, end).map(|at| at - base),
                Seek::Hole => Some(m.next_hole(base + from, end) - base),
            }
        } else {
            // Nothing stored and nothing dirty: all data, as Linux's generic answer.
            Some(match what {
                Seek::Data => from,
                Seek::Hole => size,
            })
        };
        let at = match (what, found) {
            (Seek::Data, Some(at)) if at < size => at,
            (Seek::Data, _) => return Err(none()),
            // Past the stored length (a file grown since) or the end of the cache file: the
            // virtual hole at the end of the file.
            (Seek::Hole, at) => at.unwrap_or(size).min(size),
        };
        i64::try_from(at).map_err(|_| none())
    }

    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)`: bytes `offset..offset + length` (clipped at the end
    /// of the file) read as zeros and take no space, in the cache file now and, from the next
    /// upload, on the network. mtime and ctime change, as on ext4.
    ///
    /// # Errors
    /// As [`Fs::write`] (the first change of a stored file fetches it first).
    ///
    /// # Cancel safety
    /// Not cancel safe once the punch began (the file is dirty either way).
    pub(super) async fn punch_hole(&self, ino: InodeNo, offset: u64, length: u64) -> Result<()> {
        if self.write_may_wait(ino) {
            let size = self.inner.db.getattr(ino)?.size;
            self.fetch_before_change(ino, size).await?;
        }
        let _serial = self.write_lock(ino);
        let size = self.inner.db.getattr(ino)?.size;
        let end = offset.saturating_add(length).min(size);
        if offset >= end {
            return Ok(());
        }
        self.inner.cache.punch(ino, offset, end - offset)?;
        let now = namespace::Timestamp::now();
        let set = namespace::SetAttr {
            mtime: Some(now),
            ctime: Some(now),
            ..Default::default()
        };
        self.inner.db.save_written(ino, &set, now)?;
        lock(&self.inner.inodes).entry(ino).or_default().changed = true;
        Ok(())
    }

    /// `fallocate` mode 0 or `KEEP_SIZE` after any size change: blocks reserved in the cache
    /// file of a dirty file, as ext4 reserves them (a clean file's layout is its manifest's,
    /// which a reservation does not change).
    pub(super) fn reserve(&self, ino: InodeNo, mode: i32, offset: u64, length: u64) -> Result<()> {
        if self.inner.cache.is_dirty(ino) {
            self.inner.cache.allocate(ino, mode, offset, length)?;
        }
        Ok(())
    }
}
