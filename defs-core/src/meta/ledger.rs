//! The object ledger (schema 4): every stored object of this owner that exists on the network
//! (file contents and packs, namespace snapshots and segments) and the published seqs during
//! which a namespace names it, `born ≤ seq < dead`. What the garbage collector ([`crate::gc`])
//! reads to delete an object only when no kept version needs it (docs/namespace-publishing.md
//! §6, docs/format.md "Metadata DB").
//!
//! Rows change inside the write transactions that make an object live or dead, so a crash never
//! splits them:
//! - a file's content object becomes live when the first inode names a range of it (the
//!   `live_ranges` row appears: `meta::live`): `born` = the published seq + 1 (the first record
//!   that may name it; earlier records were cut before this transaction), `dead` = [`ALIVE`];
//! - it dies when the last inode lets go (the `live_ranges` row goes): `dead` = [`PENDING`],
//!   with `mark` = the LSN the DB had when that transaction began. A publish whose cut has
//!   LSN `L > mark` saw the death (the transaction committed before the cut was read), so its
//!   seq `S` does not name the object: the commit of `S` resolves `dead = S`. Deaths with
//!   `mark ≥ L` happened after the cut: `S` still names them; a later publish resolves them;
//! - namespace objects (snapshots and segments) get a row when stored, dead = [`PENDING`]
//!   (undecided); the commit of seq `S` sets every such row the record names [`ALIVE`] and
//!   every other one not yet dead to `dead = S`: a chain replaced by a new snapshot, and
//!   objects of publishes that never committed;
//! - an object no inode came to name (an upload that lost its race with a newer write, a pack
//!   whose every member was rewritten meanwhile) gets `born = dead`: no version needs it.
//!
//! `born` may be lower than the first seq that really names the object and `dead` higher than
//! the first that does not: either only keeps an object longer. Never the other way round.

use redb::{ReadableTable, Table, WriteTransaction};

use crate::error::{Error, Result};
use crate::types::FileId;

use super::schema::{DbContext, KEY_LSN, KEY_PUBLISHED_SEQ, LEDGER, LIVE_RANGES, META, counter};

/// `dead` of an object a namespace names now.
pub const ALIVE: u64 = u64::MAX;
/// `born`/`dead` not resolved to a seq yet.
pub const PENDING: u64 = u64::MAX - 1;
/// `mark` of a row whose death no LSN dates (a namespace object: decided by a commit).
const UNDATED: u64 = u64::MAX;

/// What an object of the ledger holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A file's content, or a pack of small files.
    File,
    /// A full namespace snapshot.
    Snapshot,
    /// A namespace segment.
    Segment,
}

impl ObjectKind {
    fn tag(self) -> u8 {
        match self {
            ObjectKind::File => 1,
            ObjectKind::Snapshot => 2,
            ObjectKind::Segment => 3,
        }
    }

    fn from_tag(tag: u8) -> Result<ObjectKind> {
        match tag {
            1 => Ok(ObjectKind::File),
            2 => Ok(ObjectKind::Snapshot),
            3 => Ok(ObjectKind::Segment),
            other => Err(Error::Corrupt {
                what: "object ledger",
                reason: format!("object kind {other}"),
            }),
        }
    }
}

/// The collector deleted every shard of the object and now deletes its manifest copies
/// (a flag bit in the stored kind byte).
const SHARDS_GONE: u8 = 0x80;

/// One row of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerRow {
    /// The object's file id.
    pub file: FileId,
    /// What it holds.
    pub kind: ObjectKind,
    /// The first published seq that may name it (or [`PENDING`]).
    pub born: u64,
    /// The first published seq that does not name it any more, [`ALIVE`] or [`PENDING`].
    pub dead: u64,
    /// For a pending death: the DB's LSN when it happened.
    pub mark: u64,
    /// The collector has deleted its shards (its manifest copies may remain).
    pub shards_gone: bool,
}

impl LedgerRow {
    /// Whether the garbage-collection rule lets the object go: born and dead resolved, dead,
    /// and no kept version `v` with `born ≤ v < dead`.
    pub fn collectible(&self, kept: &[u64]) -> bool {
        let resolved = self.born != PENDING && self.dead != PENDING && self.dead != ALIVE;
        resolved && !kept.iter().any(|&v| self.born <= v && v < self.dead)
    }
}

/// The stored value: kind (| flags), born, dead, mark.
type Value = (u8, u64, u64, u64);

fn key_of(bytes: &[u8]) -> Result<FileId> {
    <[u8; 32]>::try_from(bytes)
        .map(FileId)
        .map_err(|_| Error::Corrupt {
            what: "object ledger",
            reason: format!("a key of {} bytes", bytes.len()),
        })
}

/// Decodes one stored row.
pub(crate) fn decode(key: &[u8], (tag, born, dead, mark): Value) -> Result<LedgerRow> {
    Ok(LedgerRow {
        file: key_of(key)?,
        kind: ObjectKind::from_tag(tag & !SHARDS_GONE)?,
        born,
        dead,
        mark,
        shards_gone: tag & SHARDS_GONE != 0,
    })
}

fn encode(row: &LedgerRow) -> Value {
    let flags = if row.shards_gone { SHARDS_GONE } else { 0 };
    (row.kind.tag() | flags, row.born, row.dead, row.mark)
}

fn get(table: &Table<&[u8], Value>, file: &FileId) -> Result<Option<LedgerRow>> {
    table
        .get(&file.0[..])
        .ctx("reading the ledger")?
        .map(|v| decode(&file.0, v.value()))
        .transpose()
}

fn put(table: &mut Table<&[u8], Value>, row: &LedgerRow) -> Result<()> {
    table
        .insert(&row.file.0[..], encode(row))
        .ctx("writing the ledger")?;
    Ok(())
}

/// A row not being collected.
fn fresh(file: FileId, kind: ObjectKind, born: u64, dead: u64, mark: u64) -> LedgerRow {
    LedgerRow {
        file,
        kind,
        born,
        dead,
        mark,
        shards_gone: false,
    }
}

/// The seq the next record will carry at the earliest: what a birth now is dated.
fn next_seq(txn: &WriteTransaction) -> Result<u64> {
    let meta = txn.open_table(META).ctx("opening the meta table")?;
    Ok(counter(&meta, KEY_PUBLISHED_SEQ)?.saturating_add(1))
}

/// The LSN the DB had when this transaction began (its own commit gets a higher one).
fn lsn_now(txn: &WriteTransaction) -> Result<u64> {
    let meta = txn.open_table(META).ctx("opening the meta table")?;
    counter(&meta, KEY_LSN)
}

/// `file` became live (an inode names a range of it).
pub(crate) fn born_in(txn: &WriteTransaction, file: &FileId) -> Result<()> {
    let born = next_seq(txn)?;
    let mut table = txn.open_table(LEDGER).ctx("opening the ledger")?;
    let row = match get(&table, file)? {
        Some(mut row) => {
            if row.shards_gone {
                tracing::warn!(%file, "an object the collector is deleting became live again");
            }
            row.born = row.born.min(born);
            row.dead = ALIVE;
            row.mark = 0;
            row
        }
        None => fresh(*file, ObjectKind::File, born, ALIVE, 0),
    };
    put(&mut table, &row)
}

/// No inode names `file` any more: dead from the first publish that sees this transaction.
pub(crate) fn died_in(txn: &WriteTransaction, file: &FileId) -> Result<()> {
    let mark = lsn_now(txn)?;
    let mut table = txn.open_table(LEDGER).ctx("opening the ledger")?;
    let mut row = get(&table, file)?.unwrap_or(fresh(*file, ObjectKind::File, 0, ALIVE, 0));
    if row.dead == ALIVE {
        row.dead = PENDING;
        row.mark = mark;
        put(&mut table, &row)?;
    }
    Ok(())
}

/// `file` was stored but no inode came to name it (see the module doc): unless something names
/// it after all, no version needs it.
pub(crate) fn unnamed_in(txn: &WriteTransaction, file: &FileId) -> Result<()> {
    let live = txn.open_table(LIVE_RANGES).ctx("opening live_ranges")?;
    if live.get(&file.0[..]).ctx("reading live ranges")?.is_some() {
        return Ok(());
    }
    let seq = next_seq(txn)?;
    let mut table = txn.open_table(LEDGER).ctx("opening the ledger")?;
    if get(&table, file)?.is_none() {
        put(&mut table, &fresh(*file, ObjectKind::File, seq, seq, 0))?;
    }
    Ok(())
}

/// A namespace object was stored: undecided until a record names it or a commit passes it by.
pub(crate) fn stored_in(txn: &WriteTransaction, file: &FileId, kind: ObjectKind) -> Result<()> {
    let born = next_seq(txn)?;
    let mut table = txn.open_table(LEDGER).ctx("opening the ledger")?;
    if get(&table, file)?.is_none() {
        put(&mut table, &fresh(*file, kind, born, PENDING, UNDATED))?;
    }
    Ok(())
}

/// Namespace objects a committed record names, known from the record itself (a DB migrated
/// from schema 3, or recovered): rows for those without one, alive from `seq` on.
pub(crate) fn known_in(
    txn: &WriteTransaction,
    seq: u64,
    named: &[(FileId, ObjectKind)],
) -> Result<()> {
    let mut table = txn.open_table(LEDGER).ctx("opening the ledger")?;
    for (file, kind) in named {
        if get(&table, file)?.is_none() {
            put(&mut table, &fresh(*file, *kind, seq, ALIVE, 0))?;
        }
    }
    Ok(())
}

/// The record of `seq`, cut at LSN `cut_lsn`, naming the namespace objects `named`, is
/// committed: resolves what it decides (see the module doc).
pub(crate) fn resolve_in(
    txn: &WriteTransaction,
    seq: u64,
    cut_lsn: u64,
    named: &[(FileId, ObjectKind)],
) -> Result<()> {
    let mut table = txn.open_table(LEDGER).ctx("opening the ledger")?;
    let mut changed = Vec::new();
    for item in table.iter().ctx("listing the ledger")? {
        let (k, v) = item.ctx("listing the ledger")?;
        let mut row = decode(k.value(), v.value())?;
        let before = row;
        match row.kind {
            ObjectKind::File => {
                if row.dead == PENDING && row.mark < cut_lsn {
                    row.dead = seq;
                }
            }
            ObjectKind::Snapshot | ObjectKind::Segment => {
                if named.iter().any(|(f, _)| *f == row.file) {
                    row.dead = ALIVE;
                    row.born = row.born.min(seq);
                } else if row.dead == ALIVE || row.dead == PENDING {
                    row.dead = seq;
                    row.born = row.born.min(seq);
                }
            }
        }
        if row != before {
            changed.push(row);
        }
    }
    for (file, kind) in named {
        if get(&table, file)?.is_none() {
            changed.push(fresh(*file, *kind, seq, ALIVE, 0));
        }
    }
    for row in &changed {
        put(&mut table, row)?;
    }
    Ok(())
}

/// Brings the ledger in line with `live_ranges` (the step to schema 4, a restored namespace):
/// every live object has a row (born 0: any version may name it), and every file row the
/// namespace no longer names dies now.
pub(crate) fn reconcile_in(txn: &WriteTransaction) -> Result<()> {
    let live = txn.open_table(LIVE_RANGES).ctx("opening live_ranges")?;
    let mut table = txn.open_table(LEDGER).ctx("opening the ledger")?;
    let mut live_ids = std::collections::HashSet::new();
    for item in live.iter().ctx("listing live_ranges")? {
        let (k, _) = item.ctx("listing live_ranges")?;
        live_ids.insert(key_of(k.value())?);
    }
    drop(live);
    let mark = lsn_now(txn)?;
    let mut changed = Vec::new();
    for item in table.iter().ctx("listing the ledger")? {
        let (k, v) = item.ctx("listing the ledger")?;
        let mut row = decode(k.value(), v.value())?;
        let named = live_ids.remove(&row.file);
        if row.kind != ObjectKind::File {
            continue;
        }
        if named && row.dead != ALIVE {
            row.dead = ALIVE;
            row.born = 0;
            changed.push(row);
        } else if !named && row.dead == ALIVE {
            row.dead = PENDING;
            row.mark = mark;
            changed.push(row);
        }
    }
    for file in live_ids {
        changed.push(fresh(file, ObjectKind::File, 0, ALIVE, 0));
    }
    for row in &changed {
        put(&mut table, row)?;
    }
    Ok(())
}

/// Marks `file`'s shards deleted (the collector's checkpoint before its manifest copies).
pub(crate) fn shards_gone_in(txn: &WriteTransaction, file: &FileId) -> Result<()> {
    let mut table = txn.open_table(LEDGER).ctx("opening the ledger")?;
    if let Some(mut row) = get(&table, file)? {
        row.shards_gone = true;
        put(&mut table, &row)?;
    }
    Ok(())
}

/// Removes `file`'s row if it is still collectible under `kept` (it may have become live again).
pub(crate) fn remove_in(txn: &WriteTransaction, file: &FileId, kept: &[u64]) -> Result<bool> {
    let mut table = txn.open_table(LEDGER).ctx("opening the ledger")?;
    match get(&table, file)? {
        Some(row) if row.collectible(kept) => {
            table.remove(&file.0[..]).ctx("removing a ledger row")?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
