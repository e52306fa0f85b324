//! Live ranges per stored object: for every object the namespace names (a file's own object
//! or a pack of small files), how many inodes name a range of it and how many bytes those
//! ranges hold. What a garbage collector needs to find packs worth compacting (live bytes
//! well below the object's size) and objects nothing names any more (no row), kept in the
//! same write transactions that give or take an inode's content: `finish_upload`, `purge`,
//! a snapshot restore, and the schema 2 → 3 migration that counts an older DB. An object's row
//! appearing or going is its birth or death in the object ledger (`meta::ledger`), written in
//! the same transaction.

use redb::{ReadableTable, Table, WriteTransaction};

use crate::error::Result;
use crate::namespace::record::InodeRecord;
use crate::namespace::types::Content;
use crate::types::FileId;

use super::schema::{DbContext, INODES, LIVE_RANGES};
use super::{ledger, repack};

/// What the namespace holds of one stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveRanges {
    /// Inodes whose content is a range of the object.
    pub files: u64,
    /// Bytes of those ranges (each inode counted once; hard links are one inode).
    pub bytes: u64,
}

/// How a count change moved an object: from no inode to some, or from some to none.
#[derive(PartialEq, Eq)]
enum Moved {
    Born,
    Died,
    Neither,
}

fn add(
    table: &mut Table<&[u8], (u64, u64)>,
    file: &FileId,
    files: i64,
    bytes: i64,
) -> Result<Moved> {
    let (f0, b) = table
        .get(&file.0[..])
        .ctx("reading live ranges")?
        .map_or((0, 0), |v| v.value());
    let f = f0.saturating_add_signed(files);
    let b = b.saturating_add_signed(bytes);
    if f == 0 {
        table.remove(&file.0[..]).ctx("removing live ranges")?;
    } else {
        table
            .insert(&file.0[..], (f, b))
            .ctx("writing live ranges")?;
    }
    Ok(match (f0, f) {
        (0, 1..) => Moved::Born,
        (1.., 0) => Moved::Died,
        _ => Moved::Neither,
    })
}

/// Moves an inode's share from `old` to `new` content (either may be empty).
pub(crate) fn replace_in(txn: &WriteTransaction, old: &Content, new: &Content) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let mut table = txn.open_table(LIVE_RANGES).ctx("opening live_ranges")?;
    let mut died = None;
    let mut left = None;
    if let Content::Stored { file, len, .. } = old {
        match add(
            &mut table,
            file,
            -1,
            -i64::try_from(*len).unwrap_or(i64::MAX),
        )? {
            Moved::Died => died = Some(*file),
            // Other inodes still name it: a pack lost a member.
            _ => left = Some(*file),
        }
    }
    let mut born = None;
    if let Content::Stored { file, len, .. } = new
        && add(&mut table, file, 1, i64::try_from(*len).unwrap_or(i64::MAX))? == Moved::Born
    {
        born = Some(*file);
    }
    drop(table);
    if let Some(file) = died {
        ledger::died_in(txn, &file)?;
        repack::pack_died_in(txn, &file)?;
    }
    if let Some(file) = left {
        repack::member_left_in(txn, &file)?;
    }
    if let Some(file) = born {
        ledger::born_in(txn, &file)?;
    }
    Ok(())
}

/// The derived tables of a migration step from schema `from` (see `schema::init_or_migrate`).
pub(crate) fn derive(txn: &WriteTransaction, from: u64) -> Result<()> {
    match from {
        2 => rebuild_in(txn),
        _ => ledger::reconcile_in(txn),
    }
}

/// Counts the live ranges of every inode again (a restored namespace, a migrated DB). The
/// ledger is not touched: [`ledger::reconcile_in`] brings it in line afterwards.
pub(crate) fn rebuild_in(txn: &WriteTransaction) -> Result<()> {
    let mut table = txn.open_table(LIVE_RANGES).ctx("opening live_ranges")?;
    table.retain(|_, _| false).ctx("clearing live_ranges")?;
    let inodes = txn.open_table(INODES).ctx("opening inodes")?;
    for item in inodes.iter().ctx("listing inodes")? {
        let (_, v) = item.ctx("listing inodes")?;
        if let Content::Stored { file, len, .. } = InodeRecord::decode(v.value())?.content {
            add(&mut table, &file, 1, i64::try_from(len).unwrap_or(i64::MAX))?;
        }
    }
    Ok(())
}
