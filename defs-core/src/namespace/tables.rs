//! The tables one namespace write transaction works on, opened lazily, with the inode records
//! it touches cached and written back once by [`Tables::flush`] (so an operation that touches
//! one inode through several roles — a rename inside one directory — cannot lose an update).

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, WriteTransaction};

use crate::error::{Error, Result};
use crate::meta::alloc::{InoAlloc, allocate_ino};
use crate::meta::schema::{COOKIES, DIRENTS, DbContext, INODES, ORPHANS};
use crate::namespace::record::InodeRecord;
use crate::namespace::types::{Attr, FileKind, NewInode, Timestamp, Unlinked, corrupt};
use crate::sync::Mutex;
use crate::types::InodeNo;

type Dirent = (u64, u8, u64);

pub(crate) struct Tables<'t> {
    txn: &'t WriteTransaction,
    alloc: &'t Mutex<InoAlloc>,
    inodes: Option<Table<'t, u64, &'static [u8]>>,
    dirents: Option<Table<'t, (u64, &'static [u8]), Dirent>>,
    cookies: Option<Table<'t, (u64, u64), &'static [u8]>>,
    orphans: Option<Table<'t, u64, ()>>,
    /// Records read or changed in this transaction; `None` marks a deleted one.
    recs: BTreeMap<u64, InodeRecord>,
}

impl<'t> Tables<'t> {
    pub(crate) fn new(txn: &'t WriteTransaction, alloc: &'t Mutex<InoAlloc>) -> Self {
        Tables {
            txn,
            alloc,
            inodes: None,
            dirents: None,
            cookies: None,
            orphans: None,
            recs: BTreeMap::new(),
        }
    }

    fn inodes(&mut self) -> Result<&mut Table<'t, u64, &'static [u8]>> {
        if self.inodes.is_none() {
            self.inodes = Some(self.txn.open_table(INODES).ctx("opening inodes")?);
        }
        self.inodes.as_mut().ok_or(Error::Closed)
    }

    fn dirents(&mut self) -> Result<&mut Table<'t, (u64, &'static [u8]), Dirent>> {
        if self.dirents.is_none() {
            self.dirents = Some(self.txn.open_table(DIRENTS).ctx("opening dirents")?);
        }
        self.dirents.as_mut().ok_or(Error::Closed)
    }

    fn cookies(&mut self) -> Result<&mut Table<'t, (u64, u64), &'static [u8]>> {
        if self.cookies.is_none() {
            self.cookies = Some(self.txn.open_table(COOKIES).ctx("opening cookies")?);
        }
        self.cookies.as_mut().ok_or(Error::Closed)
    }

    fn orphans(&mut self) -> Result<&mut Table<'t, u64, ()>> {
        if self.orphans.is_none() {
            self.orphans = Some(self.txn.open_table(ORPHANS).ctx("opening orphans")?);
        }
        self.orphans.as_mut().ok_or(Error::Closed)
    }

    /// The record of `ino` (NotFound if missing), cached for this transaction.
    pub(crate) fn rec(&mut self, ino: InodeNo) -> Result<&mut InodeRecord> {
        if !self.recs.contains_key(&ino.0) {
            let rec = load(self.inodes()?, ino)?;
            self.recs.insert(ino.0, rec);
        }
        self.recs.get_mut(&ino.0).ok_or(Error::Closed)
    }

    /// `ino` must be a directory.
    pub(crate) fn dir(&mut self, ino: InodeNo) -> Result<&mut InodeRecord> {
        let rec = self.rec(ino)?;
        if rec.kind != FileKind::Directory {
            return Err(Error::NotADirectory { ino: ino.0 });
        }
        Ok(rec)
    }

    /// `ino` must be a directory that has not been removed (new names go only there).
    pub(crate) fn live_dir(&mut self, ino: InodeNo) -> Result<&mut InodeRecord> {
        let rec = self.dir(ino)?;
        if rec.nlink == 0 {
            return Err(Error::NotFound {
                what: format!("directory {ino} (removed)"),
            });
        }
        Ok(rec)
    }

    pub(crate) fn dirent(&mut self, parent: InodeNo, name: &[u8]) -> Result<Option<Dirent>> {
        Ok(self
            .dirents()?
            .get((parent.0, name))
            .ctx("reading a dirent")?
            .map(|v| v.value()))
    }

    /// Whether `ino` is `ancestor` or lies below it (walks parent pointers up to the root).
    pub(crate) fn is_within(&mut self, ino: InodeNo, ancestor: InodeNo) -> Result<bool> {
        let mut cur = ino;
        // A tree deeper than this is a cycle (corruption), not a real tree.
        for _ in 0..1_000_000u32 {
            if cur == ancestor {
                return Ok(true);
            }
            if cur == InodeNo::ROOT {
                return Ok(false);
            }
            cur = InodeNo(self.dir(cur)?.parent);
        }
        Err(corrupt("directory parent pointers form a cycle"))
    }

    /// Allocates an inode of `kind` and names it `parent/name`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn make(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        kind: FileKind,
        init: &NewInode,
        now: Timestamp,
        target: &[u8],
        rdev: u32,
    ) -> Result<Attr> {
        let ino = allocate_ino(self.txn, self.alloc)?;
        // Numbers are never reused; one already in use means the allocator or the log is
        // wrong, and overwriting the inode would lose it silently.
        if self.recs.contains_key(&ino.0)
            || self.inodes()?.get(ino.0).ctx("reading an inode")?.is_some()
        {
            return Err(corrupt("a new inode number is already in use"));
        }
        let dir_parent = (kind == FileKind::Directory).then_some(parent);
        let mut rec = InodeRecord::new(kind, init, now, dir_parent);
        if kind == FileKind::Symlink {
            rec.target = target.to_vec();
            rec.size = target.len() as u64;
        }
        rec.rdev = rdev;
        let attr = rec.attr(ino);
        self.recs.insert(ino.0, rec);
        self.add_entry(parent, name, ino, kind, now)?;
        Ok(attr)
    }

    /// Adds the entry `parent/name → child` with the directory's next cookie; counts it in the
    /// parent's size (and nlink, for a subdirectory); sets the parent's mtime and ctime.
    pub(crate) fn add_entry(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        child: InodeNo,
        kind: FileKind,
        now: Timestamp,
    ) -> Result<()> {
        let cookie = self.dir(parent)?.add_child(kind, now)?;
        self.dirents()?
            .insert((parent.0, name), (child.0, kind.tag(), cookie))
            .ctx("writing a dirent")?;
        self.cookies()?
            .insert((parent.0, cookie), name)
            .ctx("writing a cookie")?;
        Ok(())
    }

    /// Removes the entry `parent/name`; the inverse of [`Tables::add_entry`].
    pub(crate) fn remove_entry(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        cookie: u64,
        kind: Option<FileKind>,
        now: Timestamp,
    ) -> Result<()> {
        self.dirents()?
            .remove((parent.0, name))
            .ctx("removing a dirent")?;
        self.cookies()?
            .remove((parent.0, cookie))
            .ctx("removing a cookie")?;
        let p = self.dir(parent)?;
        p.size = p.size.saturating_sub(1);
        if kind == Some(FileKind::Directory) {
            p.nlink = p.nlink.saturating_sub(1);
        }
        p.mtime = now;
        p.ctime = now;
        Ok(())
    }

    /// Drops one link of `ino` (whose entry is already gone); at zero it becomes an orphan.
    pub(crate) fn drop_link(&mut self, ino: InodeNo, now: Timestamp) -> Result<Unlinked> {
        let rec = self.rec(ino)?;
        rec.nlink = if rec.kind == FileKind::Directory {
            0
        } else {
            rec.nlink.saturating_sub(1)
        };
        rec.ctime = now;
        let nlink = rec.nlink;
        if nlink == 0 {
            self.orphans()?.insert(ino.0, ()).ctx("writing an orphan")?;
        }
        Ok(Unlinked { ino, nlink })
    }

    /// Moves the entry `parent/name` (inode `child`) to `newparent/newname` with a new cookie.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn move_entry(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        cookie: u64,
        newparent: InodeNo,
        newname: &[u8],
        child: u64,
        kind_tag: u8,
        now: Timestamp,
    ) -> Result<()> {
        let kind = FileKind::from_tag(kind_tag).ok_or_else(|| corrupt("dirent kind"))?;
        self.remove_entry(parent, name, cookie, Some(kind), now)?;
        self.add_entry(newparent, newname, InodeNo(child), kind, now)?;
        let rec = self.rec(InodeNo(child))?;
        rec.ctime = now;
        if kind == FileKind::Directory {
            rec.parent = newparent.0;
        }
        Ok(())
    }

    /// Swaps the inodes two entries name; each entry keeps its cookie.
    pub(crate) fn exchange(
        &mut self,
        a: (InodeNo, &[u8], u64, u8, u64),
        b: (InodeNo, &[u8], u64, u8, u64),
        now: Timestamp,
    ) -> Result<()> {
        let (pa, na, ia, ka, ca) = a;
        let (pb, nb, ib, kb, cb) = b;
        let dirents = self.dirents()?;
        dirents
            .insert((pa.0, na), (ib, kb, ca))
            .ctx("writing a dirent")?;
        dirents
            .insert((pb.0, nb), (ia, ka, cb))
            .ctx("writing a dirent")?;
        let dir = FileKind::Directory.tag();
        for (p, n_in, n_out) in [
            (pa, u32::from(kb == dir), u32::from(ka == dir)),
            (pb, u32::from(ka == dir), u32::from(kb == dir)),
        ] {
            let rec = self.dir(p)?;
            rec.nlink = rec.nlink.saturating_add(n_in).saturating_sub(n_out);
            rec.mtime = now;
            rec.ctime = now;
        }
        for (ino, kind, newparent) in [(ia, ka, pb), (ib, kb, pa)] {
            let rec = self.rec(InodeNo(ino))?;
            rec.ctime = now;
            if kind == dir {
                rec.parent = newparent.0;
            }
        }
        Ok(())
    }

    /// Writes every cached record back.
    pub(crate) fn flush(mut self) -> Result<()> {
        let recs = std::mem::take(&mut self.recs);
        let inodes = self.inodes()?;
        for (ino, rec) in recs {
            inodes
                .insert(ino, rec.encode().as_slice())
                .ctx("writing an inode")?;
        }
        Ok(())
    }
}

/// Reads and decodes an inode from any readable inodes table.
pub(crate) fn load(
    table: &impl ReadableTable<u64, &'static [u8]>,
    ino: InodeNo,
) -> Result<InodeRecord> {
    let guard = table
        .get(ino.0)
        .ctx("reading an inode")?
        .ok_or_else(|| Error::NotFound {
            what: format!("inode {ino}"),
        })?;
    InodeRecord::decode(guard.value())
}
