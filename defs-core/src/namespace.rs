//! The namespace: inodes, directory entries and xattrs with POSIX semantics, each operation one
//! atomic transaction on the [`MetaDb`]. Refusals are typed [`Error`] variants, each with one
//! errno (named in the variant's doc). Callers pass the time explicitly (`now`) wherever POSIX
//! says a timestamp changes, so behaviour is deterministic and testable.
//!
//! "." and ".." are the FUSE layer's business: [`MetaDb::readdir`] lists only real entries and
//! [`MetaDb::parent_of`] gives a directory's parent for "..".
//!
//! Unlinking the last name of an inode (or rmdir, or a rename over it) does not delete it: it
//! becomes an *orphan* (nlink 0, listed by [`MetaDb::orphans`]) so that open handles keep
//! working. The FUSE layer calls [`MetaDb::purge`] when the kernel forgets the inode, and purges
//! every orphan at mount (no handle survives a restart).

pub(crate) mod record;
pub(crate) mod tables;
#[cfg(test)]
mod tests;
pub(crate) mod txn;
pub(crate) mod types;

use redb::{ReadableTable, WriteTransaction};

use crate::error::{Error, Result};
use crate::meta::MetaDb;
use crate::meta::redo::LogOp;
use crate::meta::schema::{COOKIES, DIRENTS, DbContext, INODES, ORPHANS, XATTRS};
use crate::types::InodeNo;
use tables::{Tables, load};
use txn::{apply_set, create_in, purge_in};
pub use types::{
    Attr, Content, DirEntry, FileKind, NAME_MAX, NewInode, RenameMode, SYMLINK_MAX, SetAttr,
    Timestamp, Unlinked, XATTR_LIST_MAX, XATTR_NAME_MAX, XATTR_SIZE_MAX, XattrMode,
};
use types::{
    check_name, check_rdev, check_xattr_name, corrupt, exists, invalid, lossy, no_xattr,
    not_found_name,
};

impl MetaDb {
    /// Finds `name` in directory `parent`.
    ///
    /// # Errors
    /// NotFound, NotADirectory, NameTooLong, InvalidArgument (empty, ".", "..", '/' or NUL).
    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<Attr> {
        check_name(name)?;
        self.read_attr(
            |d, lsn| d.created_lookup(lsn, parent, name),
            |txn| {
                let inodes = txn.open_table(INODES).ctx("opening inodes")?;
                let dirents = txn.open_table(DIRENTS).ctx("opening dirents")?;
                let p = load(&inodes, parent)?;
                if p.kind != FileKind::Directory {
                    return Err(Error::NotADirectory { ino: parent.0 });
                }
                let child = dirents
                    .get((parent.0, name))
                    .ctx("reading a dirent")?
                    .map(|v| v.value().0)
                    .ok_or_else(|| not_found_name(parent, name))?;
                Ok((InodeNo(child), load(&inodes, InodeNo(child))?))
            },
        )
    }

    /// The attributes of `ino` (orphans included).
    ///
    /// # Errors
    /// NotFound.
    pub fn getattr(&self, ino: InodeNo) -> Result<Attr> {
        self.read_attr(
            |d, lsn| d.created_attr(lsn, ino),
            |txn| {
                let inodes = txn.open_table(INODES).ctx("opening inodes")?;
                Ok((ino, load(&inodes, ino)?))
            },
        )
    }

    /// The stored content of `ino`.
    ///
    /// # Errors
    /// NotFound.
    pub fn content(&self, ino: InodeNo) -> Result<Content> {
        self.read_record(ino, |rec| Ok(rec.content.clone()))
    }

    /// A directory's parent (the root is its own parent), for "..".
    ///
    /// # Errors
    /// NotFound, NotADirectory.
    pub fn parent_of(&self, dir: InodeNo) -> Result<InodeNo> {
        self.read_record(dir, |rec| {
            if rec.kind != FileKind::Directory {
                return Err(Error::NotADirectory { ino: dir.0 });
            }
            Ok(InodeNo(rec.parent))
        })
    }

    /// Changes attributes; ctime becomes `now` unless given.
    ///
    /// A change without a size is logged and kept in memory until the next write transaction
    /// or checkpoint applies it (one log append instead of a redb commit; see "Deferred
    /// attribute changes" in [`crate::meta`]): visible at once and as durable as any other
    /// operation.
    ///
    /// # Errors
    /// NotFound; IsADirectory (size of a directory); InvalidArgument (size of anything but a regular file).
    pub fn setattr(&self, ino: InodeNo, set: &SetAttr, now: Timestamp) -> Result<Attr> {
        if set.size.is_none()
            && let Some(attr) = self.defer_setattr(ino, set, now, false)?
        {
            return Ok(attr);
        }
        self.write(
            |_| LogOp::Setattr {
                ino,
                set: *set,
                now,
            },
            |txn| self.setattr_in(txn, ino, set, now),
        )
    }

    /// The changes of [`MetaDb::setattr`], inside the caller's write transaction.
    pub(crate) fn setattr_in(
        &self,
        txn: &WriteTransaction,
        ino: InodeNo,
        set: &SetAttr,
        now: Timestamp,
    ) -> Result<Attr> {
        let mut t = Tables::new(txn, self.ino_alloc());
        let rec = t.rec(ino)?;
        apply_set(rec, ino, set, now)?;
        let attr = rec.attr(ino);
        t.flush()?;
        Ok(attr)
    }

    /// Creates a regular file. With `exclusive` (O_EXCL) an existing name is refused;
    /// without, an existing non-directory is returned as is. The bool says whether it was
    /// created.
    ///
    /// # Errors
    /// AlreadyExists (exclusive), IsADirectory (existing directory), NotFound (parent missing
    /// or removed), NotADirectory, NameTooLong, InvalidArgument.
    pub fn create(
        &self,
        parent: InodeNo,
        name: &[u8],
        init: &NewInode,
        exclusive: bool,
        now: Timestamp,
    ) -> Result<(Attr, bool)> {
        check_name(name)?;
        // A new name waits for the next commit like a setattr: `cp -a` then commits once per
        // many files instead of once per file.
        if let Some(attr) = self.defer_create(parent, name, init, exclusive, now)? {
            return Ok((attr, true));
        }
        self.write(
            |(attr, created): &(Attr, bool)| LogOp::Create {
                parent,
                name,
                init: *init,
                exclusive,
                now,
                ino: created.then_some(attr.ino),
            },
            |txn| create_in(txn, self.ino_alloc(), parent, name, init, exclusive, now),
        )
    }

    /// Creates a directory.
    ///
    /// # Errors
    /// AlreadyExists, NotFound, NotADirectory, NameTooLong, InvalidArgument.
    pub fn mkdir(
        &self,
        parent: InodeNo,
        name: &[u8],
        init: &NewInode,
        now: Timestamp,
    ) -> Result<Attr> {
        self.make_new(parent, name, FileKind::Directory, init, now, &[], 0)
    }

    /// Creates a regular file, a fifo, a device node with device number `rdev`, or a socket.
    /// Who may make a device node is the kernel's business (it asks for CAP_MKNOD before the
    /// request reaches a filesystem).
    ///
    /// # Errors
    /// InvalidArgument for a directory or symlink, or a device number on a non-device;
    /// otherwise as [`MetaDb::mkdir`].
    pub fn mknod(
        &self,
        parent: InodeNo,
        name: &[u8],
        kind: FileKind,
        rdev: u32,
        init: &NewInode,
        now: Timestamp,
    ) -> Result<Attr> {
        if !(kind == FileKind::RegularFile || kind.is_special()) {
            return Err(invalid("mknod of a directory or symlink"));
        }
        check_rdev(kind, rdev).map_err(invalid)?;
        self.make_new(parent, name, kind, init, now, &[], rdev)
    }

    /// Creates a symlink to `target` (stored as given, never resolved).
    ///
    /// # Errors
    /// NotFound for an empty target (as Linux), NameTooLong for a target over
    /// [`SYMLINK_MAX`]; otherwise as [`MetaDb::mkdir`].
    pub fn symlink(
        &self,
        parent: InodeNo,
        name: &[u8],
        target: &[u8],
        init: &NewInode,
        now: Timestamp,
    ) -> Result<Attr> {
        if target.is_empty() {
            return Err(Error::NotFound {
                what: "empty symlink target".into(),
            });
        }
        if target.len() > SYMLINK_MAX {
            return Err(Error::NameTooLong {
                len: target.len(),
                limit: SYMLINK_MAX,
            });
        }
        self.make_new(parent, name, FileKind::Symlink, init, now, target, 0)
    }

    /// Makes an inode of any kind but a regular file's `create`: `target` for a symlink,
    /// `rdev` for a device node (checked by the callers).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn make_new(
        &self,
        parent: InodeNo,
        name: &[u8],
        kind: FileKind,
        init: &NewInode,
        now: Timestamp,
        target: &[u8],
        rdev: u32,
    ) -> Result<Attr> {
        check_name(name)?;
        self.write(
            |attr: &Attr| LogOp::Make {
                parent,
                name,
                kind,
                init: *init,
                now,
                target,
                rdev,
                ino: attr.ino,
            },
            |txn| {
                let mut t = Tables::new(txn, self.ino_alloc());
                t.live_dir(parent)?;
                if t.dirent(parent, name)?.is_some() {
                    return Err(exists(parent, name));
                }
                let mut attr = t.make(parent, name, kind, init, now, target, rdev)?;
                t.flush()?;
                if kind == FileKind::RegularFile {
                    // As in `create`: a new file must reach the network even if never written.
                    attr.generation = crate::journal::entry::mark_dirty_in(txn, attr.ino, now)?;
                }
                Ok(attr)
            },
        )
    }

    /// A symlink's target.
    ///
    /// # Errors
    /// NotFound; InvalidArgument if `ino` is not a symlink.
    pub fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        self.read_record(ino, |rec| {
            if rec.kind != FileKind::Symlink {
                return Err(invalid("readlink of a non-symlink"));
            }
            Ok(rec.target.clone())
        })
    }

    /// Adds a hard link `newparent/newname` to `ino`.
    ///
    /// # Errors
    /// NotPermitted for a directory; NotFound (inode missing or orphaned, parent missing);
    /// AlreadyExists; NotADirectory; NameTooLong; InvalidArgument.
    pub fn link(
        &self,
        ino: InodeNo,
        newparent: InodeNo,
        newname: &[u8],
        now: Timestamp,
    ) -> Result<Attr> {
        check_name(newname)?;
        self.write(
            |_| LogOp::Link {
                ino,
                newparent,
                newname,
                now,
            },
            |txn| {
                let mut t = Tables::new(txn, self.ino_alloc());
                let rec = t.rec(ino)?;
                if rec.kind == FileKind::Directory {
                    return Err(Error::NotPermitted {
                        what: format!("hard link to directory {ino}"),
                    });
                }
                if rec.nlink == 0 {
                    return Err(Error::NotFound {
                        what: format!("inode {ino} (unlinked)"),
                    });
                }
                if rec.nlink == u32::MAX {
                    return Err(Error::NotPermitted {
                        what: format!("inode {ino} has the most links possible"),
                    });
                }
                let kind = rec.kind;
                t.live_dir(newparent)?;
                if t.dirent(newparent, newname)?.is_some() {
                    return Err(exists(newparent, newname));
                }
                t.add_entry(newparent, newname, ino, kind, now)?;
                let rec = t.rec(ino)?;
                rec.nlink += 1;
                rec.ctime = now;
                let attr = rec.attr(ino);
                t.flush()?;
                Ok(attr)
            },
        )
    }

    /// Removes the name `parent/name` of a non-directory.
    ///
    /// # Errors
    /// NotFound, IsADirectory, NotADirectory, NameTooLong, InvalidArgument.
    pub fn unlink(&self, parent: InodeNo, name: &[u8], now: Timestamp) -> Result<Unlinked> {
        check_name(name)?;
        self.write(
            |_| LogOp::Unlink { parent, name, now },
            |txn| {
                let mut t = Tables::new(txn, self.ino_alloc());
                t.dir(parent)?;
                let (child, kind, cookie) = t
                    .dirent(parent, name)?
                    .ok_or_else(|| not_found_name(parent, name))?;
                if kind == FileKind::Directory.tag() {
                    return Err(Error::IsADirectory { ino: child });
                }
                t.remove_entry(parent, name, cookie, FileKind::from_tag(kind), now)?;
                let out = t.drop_link(InodeNo(child), now)?;
                t.flush()?;
                Ok(out)
            },
        )
    }

    /// Removes the empty directory `parent/name`.
    ///
    /// # Errors
    /// NotFound, NotADirectory, NotEmpty, NameTooLong, InvalidArgument.
    pub fn rmdir(&self, parent: InodeNo, name: &[u8], now: Timestamp) -> Result<Unlinked> {
        check_name(name)?;
        self.write(
            |_| LogOp::Rmdir { parent, name, now },
            |txn| {
                let mut t = Tables::new(txn, self.ino_alloc());
                t.dir(parent)?;
                let (child, kind, cookie) = t
                    .dirent(parent, name)?
                    .ok_or_else(|| not_found_name(parent, name))?;
                if kind != FileKind::Directory.tag() {
                    return Err(Error::NotADirectory { ino: child });
                }
                if t.rec(InodeNo(child))?.size != 0 {
                    return Err(Error::NotEmpty { ino: child });
                }
                t.remove_entry(parent, name, cookie, Some(FileKind::Directory), now)?;
                let out = t.drop_link(InodeNo(child), now)?;
                t.flush()?;
                Ok(out)
            },
        )
    }

    /// Renames `parent/name` to `newparent/newname`, atomically. A moved entry gets a new
    /// readdir cookie in its (new) directory; exchanged entries keep theirs.
    ///
    /// Returns the inode that lost its name when a destination was replaced.
    ///
    /// # Errors
    /// NotFound (source; destination with Exchange), AlreadyExists (NoReplace),
    /// InvalidArgument (a directory into its own subtree), NotADirectory / IsADirectory (kind
    /// mismatch with the replaced destination), NotEmpty (replaced directory), NameTooLong.
    pub fn rename(
        &self,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        mode: RenameMode,
        now: Timestamp,
    ) -> Result<Option<Unlinked>> {
        check_name(name)?;
        check_name(newname)?;
        self.write(
            |_| LogOp::Rename {
                parent,
                name,
                newparent,
                newname,
                mode,
                now,
            },
            |txn| {
                let mut t = Tables::new(txn, self.ino_alloc());
                t.dir(parent)?;
                t.live_dir(newparent)?;
                let (src, src_kind, src_cookie) = t
                    .dirent(parent, name)?
                    .ok_or_else(|| not_found_name(parent, name))?;
                let dst = t.dirent(newparent, newname)?;
                match (mode, dst) {
                    (RenameMode::Exchange, None) => return Err(not_found_name(newparent, newname)),
                    (RenameMode::NoReplace, Some(_)) => return Err(exists(newparent, newname)),
                    _ => {}
                }
                if let Some((d, _, _)) = dst
                    && d == src
                {
                    // Two names of one inode (or one name): POSIX says do nothing.
                    return Ok(None);
                }
                let src_is_dir = src_kind == FileKind::Directory.tag();
                if src_is_dir && t.is_within(newparent, InodeNo(src))? {
                    return Err(invalid("rename of a directory into its own subtree"));
                }
                if mode == RenameMode::Exchange
                    && let Some((d, dk, _)) = dst
                    && dk == FileKind::Directory.tag()
                    && t.is_within(parent, InodeNo(d))?
                {
                    return Err(invalid("exchange of a directory with its own subtree"));
                }
                let out = match (mode, dst) {
                    (RenameMode::Exchange, Some((d, dk, d_cookie))) => {
                        t.exchange(
                            (parent, name, src, src_kind, src_cookie),
                            (newparent, newname, d, dk, d_cookie),
                            now,
                        )?;
                        None
                    }
                    (_, Some((d, dk, d_cookie))) => {
                        let dst_is_dir = dk == FileKind::Directory.tag();
                        if src_is_dir && !dst_is_dir {
                            return Err(Error::NotADirectory { ino: d });
                        }
                        if !src_is_dir && dst_is_dir {
                            return Err(Error::IsADirectory { ino: d });
                        }
                        if dst_is_dir && t.rec(InodeNo(d))?.size != 0 {
                            return Err(Error::NotEmpty { ino: d });
                        }
                        t.remove_entry(newparent, newname, d_cookie, FileKind::from_tag(dk), now)?;
                        let gone = t.drop_link(InodeNo(d), now)?;
                        t.move_entry(
                            parent, name, src_cookie, newparent, newname, src, src_kind, now,
                        )?;
                        Some(gone)
                    }
                    (_, None) => {
                        t.move_entry(
                            parent, name, src_cookie, newparent, newname, src, src_kind, now,
                        )?;
                        None
                    }
                };
                t.flush()?;
                Ok(out)
            },
        )
    }

    /// Up to `max` entries of `dir` whose cookie is greater than `after` (0 starts), in
    /// cookie order.
    ///
    /// # Errors
    /// NotFound, NotADirectory.
    pub fn readdir(&self, dir: InodeNo, after: u64, max: usize) -> Result<Vec<DirEntry>> {
        self.settle_creates()?;
        self.read(|txn| {
            let inodes = txn.open_table(INODES).ctx("opening inodes")?;
            let dirents = txn.open_table(DIRENTS).ctx("opening dirents")?;
            let cookies = txn.open_table(COOKIES).ctx("opening cookies")?;
            let rec = load(&inodes, dir)?;
            if rec.kind != FileKind::Directory {
                return Err(Error::NotADirectory { ino: dir.0 });
            }
            let mut out = Vec::new();
            let Some(start) = after.checked_add(1) else {
                return Ok(out);
            };
            for item in cookies
                .range((dir.0, start)..=(dir.0, u64::MAX))
                .ctx("listing a directory")?
            {
                if out.len() >= max {
                    break;
                }
                let (k, v) = item.ctx("listing a directory")?;
                let cookie = k.value().1;
                let name = v.value().to_vec();
                let (child, kind, _) = dirents
                    .get((dir.0, name.as_slice()))
                    .ctx("reading a dirent")?
                    .map(|v| v.value())
                    .ok_or_else(|| corrupt("cookie without a dirent"))?;
                let kind = FileKind::from_tag(kind).ok_or_else(|| corrupt("dirent kind"))?;
                out.push(DirEntry {
                    name,
                    ino: InodeNo(child),
                    kind,
                    cookie,
                });
            }
            Ok(out)
        })
    }

    /// Sets the xattr `name` of `ino` to `value`.
    ///
    /// # Errors
    /// NotFound; XattrNameInvalid (ERANGE); XattrTooLarge (E2BIG) for a value over
    /// [`XATTR_SIZE_MAX`] or a name list over [`XATTR_LIST_MAX`]; AlreadyExists (Create);
    /// NoXattr (Replace).
    pub fn set_xattr(
        &self,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
        now: Timestamp,
    ) -> Result<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::XattrTooLarge {
                size: value.len(),
                limit: XATTR_SIZE_MAX,
            });
        }
        self.write(
            |_| LogOp::SetXattr {
                ino,
                name,
                value,
                mode,
                now,
            },
            |txn| {
                let mut t = Tables::new(txn, self.ino_alloc());
                t.rec(ino)?.ctime = now;
                let mut xattrs = txn.open_table(XATTRS).ctx("opening xattrs")?;
                let exists = xattrs.get((ino.0, name)).ctx("reading an xattr")?.is_some();
                match (mode, exists) {
                    (XattrMode::Create, true) => {
                        return Err(Error::AlreadyExists {
                            what: format!("xattr {:?} of inode {ino}", lossy(name)),
                        });
                    }
                    (XattrMode::Replace, false) => return Err(no_xattr(ino, name)),
                    _ => {}
                }
                if !exists {
                    let mut list = name.len() + 1;
                    for item in xattrs
                        .range((ino.0, &[][..])..(ino.0 + 1, &[][..]))
                        .ctx("listing xattrs")?
                    {
                        let (k, _) = item.ctx("listing xattrs")?;
                        list += k.value().1.len() + 1;
                    }
                    if list > XATTR_LIST_MAX {
                        return Err(Error::XattrTooLarge {
                            size: list,
                            limit: XATTR_LIST_MAX,
                        });
                    }
                }
                xattrs
                    .insert((ino.0, name), value)
                    .ctx("writing an xattr")?;
                drop(xattrs);
                t.flush()
            },
        )
    }

    /// The value of xattr `name` of `ino`.
    ///
    /// # Errors
    /// NotFound, NoXattr (ENODATA), XattrNameInvalid (ERANGE).
    pub fn get_xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        self.read_xattrs(
            ino,
            |xattrs| {
                xattrs
                    .get((ino.0, name))
                    .ctx("reading an xattr")?
                    .map(|v| v.value().to_vec())
                    .ok_or_else(|| no_xattr(ino, name))
            },
            || Err(no_xattr(ino, name)),
        )
    }

    /// The names of `ino`'s xattrs, in byte order.
    ///
    /// # Errors
    /// NotFound.
    pub fn list_xattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>> {
        self.read_xattrs(
            ino,
            |xattrs| {
                let mut out = Vec::new();
                for item in xattrs
                    .range((ino.0, &[][..])..(ino.0 + 1, &[][..]))
                    .ctx("listing xattrs")?
                {
                    let (k, _) = item.ctx("listing xattrs")?;
                    out.push(k.value().1.to_vec());
                }
                Ok(out)
            },
            || Ok(Vec::new()),
        )
    }

    /// Reads the xattrs table with `f` once `ino` is known to exist; a file whose create
    /// waits has none (`none` answers for it): a create makes no xattrs, and setting one is a
    /// write transaction, which would have committed the create.
    fn read_xattrs<T>(
        &self,
        ino: InodeNo,
        f: impl Fn(&redb::ReadOnlyTable<(u64, &'static [u8]), &'static [u8]>) -> Result<T>,
        none: impl Fn() -> Result<T>,
    ) -> Result<T> {
        self.read_or_created(
            ino,
            |txn| {
                let inodes = txn.open_table(INODES).ctx("opening inodes")?;
                load(&inodes, ino)?;
                f(&txn.open_table(XATTRS).ctx("opening xattrs")?)
            },
            |_, _| none(),
        )
    }

    /// Removes xattr `name` of `ino`.
    ///
    /// # Errors
    /// NotFound, NoXattr (ENODATA), XattrNameInvalid (ERANGE).
    pub fn remove_xattr(&self, ino: InodeNo, name: &[u8], now: Timestamp) -> Result<()> {
        check_xattr_name(name)?;
        self.write(
            |_| LogOp::RemoveXattr { ino, name, now },
            |txn| {
                let mut t = Tables::new(txn, self.ino_alloc());
                t.rec(ino)?.ctime = now;
                let mut xattrs = txn.open_table(XATTRS).ctx("opening xattrs")?;
                if xattrs
                    .remove((ino.0, name))
                    .ctx("removing an xattr")?
                    .is_none()
                {
                    return Err(no_xattr(ino, name));
                }
                drop(xattrs);
                t.flush()
            },
        )
    }

    /// Inodes with no links left, waiting for [`MetaDb::purge`].
    ///
    /// # Errors
    /// Db.
    pub fn orphans(&self) -> Result<Vec<InodeNo>> {
        self.read(|txn| {
            let orphans = txn.open_table(ORPHANS).ctx("opening orphans")?;
            let mut out = Vec::new();
            for item in orphans.iter().ctx("listing orphans")? {
                out.push(InodeNo(item.ctx("listing orphans")?.0.value()));
            }
            Ok(out)
        })
    }

    /// Deletes an orphan for good: its record, xattrs and journal entry. Returns its content so
    /// the caller can drop the cache file and, later, the stored object.
    ///
    /// # Errors
    /// NotFound; InvalidArgument if the inode still has links.
    pub fn purge(&self, ino: InodeNo) -> Result<Content> {
        self.write(|_| LogOp::Purge { ino }, |txn| purge_in(txn, ino))
    }
}
