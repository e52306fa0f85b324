//! The namespace changes made inside a caller's write transaction, with no DB handle: the
//! committed operation ([`MetaDb::create`](crate::meta::MetaDb::create), [`MetaDb::purge`](crate::meta::MetaDb::purge), [`MetaDb::setattr`](crate::meta::MetaDb::setattr)), a deferred
//! change that a later transaction applies, and replay all run this same code.

use redb::WriteTransaction;

use crate::error::{Error, Result};
use crate::meta::alloc::InoAlloc;
use crate::meta::schema::{DbContext, INODES, JOURNAL, ORPHANS, XATTRS};
use crate::namespace::record::InodeRecord;
use crate::namespace::tables::{Tables, load};
use crate::namespace::types::{
    Attr, Content, FileKind, NewInode, SetAttr, Timestamp, exists, invalid,
};
use crate::sync::Mutex;
use crate::types::InodeNo;

/// The changes of [`MetaDb::create`](crate::meta::MetaDb::create) inside the caller's write transaction; also how a
/// deferred create reaches redb, with the allocator forced to its logged inode number.
pub(crate) fn create_in(
    txn: &WriteTransaction,
    alloc: &Mutex<InoAlloc>,
    parent: InodeNo,
    name: &[u8],
    init: &NewInode,
    exclusive: bool,
    now: Timestamp,
) -> Result<(Attr, bool)> {
    let mut t = Tables::new(txn, alloc);
    t.live_dir(parent)?;
    if let Some((child, _, _)) = t.dirent(parent, name)? {
        if exclusive {
            return Err(exists(parent, name));
        }
        let rec = t.rec(InodeNo(child))?;
        if rec.kind == FileKind::Directory {
            return Err(Error::IsADirectory { ino: child });
        }
        return Ok((rec.attr(InodeNo(child)), false));
    }
    let mut attr = t.make(parent, name, FileKind::RegularFile, init, now, &[], 0)?;
    t.flush()?;
    // A new file is unsaved data from its first moment (even empty, it must reach the network
    // as a file): dirty now, in this commit, so that its writes and close have no journal
    // change of their own to commit.
    attr.generation = crate::journal::entry::mark_dirty_in(txn, attr.ino, now)?;
    Ok((attr, true))
}

pub(crate) fn purge_in(txn: &WriteTransaction, ino: InodeNo) -> Result<Content> {
    let mut inodes = txn.open_table(INODES).ctx("opening inodes")?;
    let rec = load(&inodes, ino)?;
    if rec.nlink != 0 {
        return Err(invalid("purge of an inode that still has links"));
    }
    inodes.remove(ino.0).ctx("removing an inode")?;
    let mut orphans = txn.open_table(ORPHANS).ctx("opening orphans")?;
    orphans.remove(ino.0).ctx("removing an orphan")?;
    let mut journal = txn.open_table(JOURNAL).ctx("opening journal")?;
    journal.remove(ino.0).ctx("removing a journal entry")?;
    let mut xattrs = txn.open_table(XATTRS).ctx("opening xattrs")?;
    xattrs
        .retain_in((ino.0, &[][..])..(ino.0 + 1, &[][..]), |_, _| false)
        .ctx("removing xattrs")?;
    crate::meta::live::replace_in(txn, &rec.content, &Content::Empty)?;
    Ok(rec.content)
}

/// The changes of [`MetaDb::setattr`](crate::meta::MetaDb::setattr) on `ino`'s record.
pub(crate) fn apply_set(
    rec: &mut InodeRecord,
    ino: InodeNo,
    set: &SetAttr,
    now: Timestamp,
) -> Result<()> {
    if let Some(size) = set.size {
        match rec.kind {
            FileKind::RegularFile => {}
            FileKind::Directory => return Err(Error::IsADirectory { ino: ino.0 }),
            _ => return Err(invalid("size of a symlink, fifo, device node or socket")),
        }
        if size != rec.size {
            rec.size = size;
            rec.mtime = now;
        }
    }
    if let Some(perm) = set.perm {
        rec.perm = perm & 0o7777;
    }
    if let Some(uid) = set.uid {
        rec.uid = uid;
    }
    if let Some(gid) = set.gid {
        rec.gid = gid;
    }
    if let Some(atime) = set.atime {
        rec.atime = atime;
    }
    if let Some(mtime) = set.mtime {
        rec.mtime = mtime;
    }
    rec.ctime = set.ctime.unwrap_or(now);
    Ok(())
}
