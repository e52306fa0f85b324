//! The changes that wait for a write transaction: logged and visible at once, in redb only
//! once the next write transaction or checkpoint applies them (the module doc of
//! [`crate::meta`], "Deferred changes"). This module owns the waiting list and how a reader
//! lays it over what redb holds; `meta.rs` owns when changes join the list and when they leave.
//!
//! ```text
//!  MetaDb::defer_setattr ──┐ (writer lock held: ordered among the commits, LSN = last + 1)
//!  MetaDb::defer_create  ──┴▶ Deferred.entries (LSN order) ──▶ next write txn / checkpoint:
//!                                   │                          apply all, commit, forget, epoch += 1
//!  getattr, lookup, content, … ─────┘ read at the DB's LSN, lay the entries above it over
//! ```

use crate::error::{Error, Result};
use crate::namespace::record::InodeRecord;
use crate::namespace::txn::apply_set;
use crate::namespace::types::{Attr, FileKind, NewInode, SetAttr, Timestamp};
use crate::types::{Generation, InodeNo};

/// The waiting changes, in LSN order.
#[derive(Default)]
pub(crate) struct Deferred {
    /// In LSN order.
    pub(crate) entries: Vec<DeferredOp>,
    /// Moves whenever entries are applied to redb, so a reader can tell that the records it read
    /// may already include the entries it copied before.
    pub(crate) epoch: u64,
}

/// One deferred operation: its logged inputs.
#[derive(Clone, Debug)]
pub(crate) struct DeferredOp {
    pub(crate) lsn: u64,
    /// The inode changed (a setattr) or made (a create).
    pub(crate) ino: InodeNo,
    pub(crate) now: Timestamp,
    pub(crate) change: Change,
}

/// What a deferred operation does.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// [`crate::MetaDb::setattr`] without a size, or the size and times
    /// [`crate::MetaDb::save_written`] saves for a dirty file.
    Set(SetAttr),
    /// [`crate::MetaDb::create`] of a regular file `name` in `parent` (which held no such name):
    /// the file is dirty from its first moment.
    Create {
        parent: InodeNo,
        name: Vec<u8>,
        init: NewInode,
        exclusive: bool,
    },
}

impl DeferredOp {
    /// Whether this creates `name` in `parent`.
    pub(crate) fn creates_name(&self, parent: InodeNo, name: &[u8]) -> bool {
        matches!(&self.change, Change::Create { parent: p, name: n, .. } if *p == parent && n == name)
    }

    /// Whether this creates inode `ino`.
    pub(crate) fn creates_ino(&self, ino: InodeNo) -> bool {
        matches!(self.change, Change::Create { .. }) && self.ino == ino
    }
}

impl Deferred {
    /// Lays the waiting changes of `ino` over `rec`, a record read at `db_lsn` (the DB's
    /// `meta["lsn"]` in the same transaction), in LSN order: its setattrs, and for a directory
    /// the entries waiting creates add to it. Changes at or below `db_lsn` are already in the
    /// record: a transaction that applied them has committed but not yet forgotten them, and
    /// applying them again would undo what committed after them (a deferred chmod over a later
    /// committed one, a deferred size over a truncate).
    pub(crate) fn lay_over(&self, ino: InodeNo, db_lsn: u64, rec: &mut InodeRecord) -> Result<()> {
        for e in self.entries.iter().filter(|e| e.lsn > db_lsn) {
            match &e.change {
                Change::Set(set) if e.ino == ino => apply_set(rec, ino, set, e.now)?,
                Change::Create { parent, .. } if *parent == ino => {
                    rec.add_child(FileKind::RegularFile, e.now)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The waiting create that `pick` chooses among those a read at `db_lsn` does not hold yet.
    pub(crate) fn pending_create(
        &self,
        db_lsn: u64,
        pick: impl Fn(&DeferredOp) -> bool,
    ) -> Option<&DeferredOp> {
        self.entries
            .iter()
            .find(|e| e.lsn > db_lsn && matches!(e.change, Change::Create { .. }) && pick(e))
    }

    /// Whether any create waits (readers of whole tables commit them first).
    pub(crate) fn has_creates(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.change, Change::Create { .. }))
    }

    /// The attributes of `ino` when a create that a read at `db_lsn` does not hold made it.
    pub(crate) fn created_attr(&self, db_lsn: u64, ino: InodeNo) -> Option<Result<Attr>> {
        let op = self.pending_create(db_lsn, |e| e.creates_ino(ino))?;
        Some(self.created_record(op).map(|rec| rec.attr(ino)))
    }

    /// What a lookup of `name` in `parent` finds among the creates a read at `db_lsn` does not
    /// hold: the new file, or NotADirectory when `parent` is itself such a file.
    pub(crate) fn created_lookup(
        &self,
        db_lsn: u64,
        parent: InodeNo,
        name: &[u8],
    ) -> Option<Result<Attr>> {
        if self
            .pending_create(db_lsn, |e| e.creates_ino(parent))
            .is_some()
        {
            return Some(Err(Error::NotADirectory { ino: parent.0 }));
        }
        let op = self.pending_create(db_lsn, |e| e.creates_name(parent, name))?;
        Some(self.created_record(op).map(|rec| rec.attr(op.ino)))
    }

    /// The record the waiting create `op` makes, with the setattrs that followed it laid over.
    pub(crate) fn created_record(&self, op: &DeferredOp) -> Result<InodeRecord> {
        let Change::Create { init, .. } = &op.change else {
            return Err(Error::InvalidArgument {
                what: "a deferred setattr read as a create".into(),
            });
        };
        let mut rec = new_file_record(init, op.now)?;
        for e in self
            .entries
            .iter()
            .filter(|e| e.lsn > op.lsn && e.ino == op.ino)
        {
            if let Change::Set(set) = &e.change {
                apply_set(&mut rec, op.ino, set, e.now)?;
            }
        }
        Ok(rec)
    }
}

/// The record [`crate::MetaDb::create`] leaves for a new regular file: a new inode's, one
/// generation on, because the create marks it dirty (`journal::mark_dirty_in` moves the
/// generation of an inode without a journal entry).
pub(crate) fn new_file_record(init: &NewInode, now: Timestamp) -> Result<InodeRecord> {
    let mut rec = InodeRecord::new(FileKind::RegularFile, init, now, None);
    rec.generation =
        Generation(
            rec.generation
                .0
                .checked_add(1)
                .ok_or_else(|| Error::InvalidArgument {
                    what: "generation counter exhausted".into(),
                })?,
        );
    Ok(rec)
}
