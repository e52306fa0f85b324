//! The inode number allocator: numbers handed out from a block reserved in the `meta` table
//! (one DB write per [`INO_BLOCK`] creates), rolled back with a transaction that does not
//! commit, and forced to the logged number during replay.

use redb::{ReadableTable, WriteTransaction};

use crate::error::{Error, Result};
use crate::meta::schema::{DbContext, KEY_NEXT_INO, META};
use crate::sync::Mutex;
use crate::types::InodeNo;

/// How many inode numbers one write of `next_ino` reserves. Creating a file then costs no write
/// to the meta table, except once per this many files; a restart skips the unused rest of a
/// block (numbers are never reused, gaps are harmless).
pub const INO_BLOCK: u64 = 1024;

/// The in-memory inode number allocator: `next..reserved` are reserved in the DB.
#[derive(Debug, Default)]
pub(crate) struct InoAlloc {
    pub(crate) next: u64,
    pub(crate) reserved: u64,
    /// Replay only: `Some(Some(ino))` hands out exactly `ino`, `Some(None)` refuses to
    /// allocate (the logged operation did not).
    pub(crate) forced: Option<Option<u64>>,
}

/// Puts the allocator back where it was when dropped armed: a write transaction that did not
/// commit must not keep numbers or a reservation it never wrote (after a restart the DB's
/// `next_ino` would be below numbers already handed out).
pub(crate) struct AllocRollback<'a> {
    alloc: &'a Mutex<InoAlloc>,
    saved: Option<(u64, u64)>,
}

impl<'a> AllocRollback<'a> {
    pub(crate) fn new(alloc: &'a Mutex<InoAlloc>) -> Self {
        let saved = alloc.lock().map(|a| (a.next, a.reserved)).ok();
        AllocRollback { alloc, saved }
    }

    /// The transaction committed: keep what it allocated.
    pub(crate) fn disarm(&mut self) {
        self.saved = None;
    }
}

impl Drop for AllocRollback<'_> {
    fn drop(&mut self) {
        if let Some((next, reserved)) = self.saved {
            let mut a = self
                .alloc
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            a.next = next;
            a.reserved = reserved;
        }
    }
}

/// Hands out the next inode number, persisting a new reservation in `txn` when the current one
/// is used up. [`MetaDb::write`](crate::meta::MetaDb::write) rolls the allocator back with an aborted transaction, so a
/// number is never handed out that the transaction using it did not see reserved.
pub(crate) fn allocate_ino(txn: &WriteTransaction, alloc: &Mutex<InoAlloc>) -> Result<InodeNo> {
    let mut a = alloc.lock().map_err(|_| Error::Closed)?;
    if let Some(forced) = a.forced {
        let ino = forced.ok_or_else(|| Error::InvalidArgument {
            what: "replay allocated an inode number the logged operation did not".into(),
        })?;
        a.forced = Some(None);
        // The original run wrote a new reservation in this very operation exactly when the
        // number it handed out was not below the persisted next_ino (see below): do the same,
        // so the replayed state is byte-identical.
        let mut meta = txn.open_table(META).ctx("opening the meta table")?;
        let persisted = meta
            .get(KEY_NEXT_INO)
            .ctx("reading next_ino")?
            .map_or(0, |v| v.value());
        if ino >= persisted {
            let reserve = ino.checked_add(INO_BLOCK).ok_or_else(|| Error::Corrupt {
                what: "meta table",
                reason: "inode numbers exhausted".into(),
            })?;
            meta.insert(KEY_NEXT_INO, reserve).ctx("writing next_ino")?;
        }
        return Ok(InodeNo(ino));
    }
    if a.next >= a.reserved {
        let mut meta = txn.open_table(META).ctx("opening the meta table")?;
        let persisted = meta
            .get(KEY_NEXT_INO)
            .ctx("reading next_ino")?
            .map(|v| v.value())
            .ok_or_else(|| Error::Corrupt {
                what: "meta table",
                reason: "next_ino is missing".into(),
            })?;
        let next = a.next.max(persisted);
        let reserve = next.checked_add(INO_BLOCK).ok_or_else(|| Error::Corrupt {
            what: "meta table",
            reason: "inode numbers exhausted".into(),
        })?;
        meta.insert(KEY_NEXT_INO, reserve).ctx("writing next_ino")?;
        a.next = next;
        a.reserved = reserve;
    }
    let ino = a.next;
    a.next += 1;
    Ok(InodeNo(ino))
}
