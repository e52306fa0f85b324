//! Compaction's bookkeeping in the metadata DB (schema 5), inside the transactions that change
//! what the namespace names (layer 2; the collector's compaction, `gc::compact`, reads it):
//!
//! - `pack_deaths`: for each pack that lost a member and stays live, when the last member left
//!   (`mark` = the DB's LSN then; `dead` = the first published seq that does not name that
//!   member, [`ledger::PENDING`] until a publish resolves it exactly as the ledger resolves an
//!   object's death). A kept version `v` with `born ≤ v < dead` may still name a member that is
//!   gone now, so while one exists the pack's dead bytes count as live (compacting it would
//!   free nothing until that version expires). The row goes when the pack dies.
//! - `repacks`: a compaction's intent, written (durably) before any shard of the new pack is
//!   stored: every shard id it stores and its manifest id. The transaction that switches the
//!   files to the new pack removes the row, so a row that remains names an object no inode
//!   names and no version needs (a crash or a failure between the first store and the switch):
//!   the collector deletes those shards and removes the row.
//! - [`RepackMove`]: one file's switch from its old pack range to the new pack, what the
//!   op log's repack record carries (tag 17, docs/format.md).

use redb::{ReadableTable, WriteTransaction};

use crate::error::{Error, Result};
use crate::types::{FileId, InodeNo, ShardId};

use super::ledger::PENDING;
use super::schema::{DbContext, KEY_LSN, META, PACK_DEATHS, REPACKS, counter};

/// Most files one repack switches (one op-log record: [`RepackMove::ENCODED_LEN`] bytes each,
/// well inside the record limit).
pub const REPACK_MAX_FILES: usize = 1024;

/// When a pack that stays live last lost a member (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackDeath {
    /// The DB's LSN when it happened.
    pub mark: u64,
    /// The first published seq that does not name that member, or [`PENDING`].
    pub dead: u64,
}

/// One file moved by a repack: its content was `old_file[old_offset..old_offset + len]` and
/// becomes `len` bytes at `new_offset` of the new pack, if it still is what the repack copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepackMove {
    /// The inode.
    pub ino: InodeNo,
    /// The pack its content was copied from.
    pub old_file: FileId,
    /// Where its bytes were in that pack.
    pub old_offset: u64,
    /// How many.
    pub len: u64,
    /// Where they are in the new pack.
    pub new_offset: u64,
}

impl RepackMove {
    /// Bytes of one move in an op-log record.
    pub const ENCODED_LEN: usize = 8 + 32 + 8 + 8 + 8;
}

fn key_of(bytes: &[u8], what: &'static str) -> Result<FileId> {
    <[u8; 32]>::try_from(bytes)
        .map(FileId)
        .map_err(|_| Error::Corrupt {
            what,
            reason: format!("a key of {} bytes", bytes.len()),
        })
}

/// A member left `pack`, which stays live: dated now, resolved by the next publish.
pub(crate) fn member_left_in(txn: &WriteTransaction, pack: &FileId) -> Result<()> {
    let mark = {
        let meta = txn.open_table(META).ctx("opening the meta table")?;
        counter(&meta, KEY_LSN)?
    };
    let mut table = txn.open_table(PACK_DEATHS).ctx("opening pack_deaths")?;
    table
        .insert(&pack.0[..], (mark, PENDING))
        .ctx("writing pack_deaths")?;
    Ok(())
}

/// `pack` died (no inode names it): the ledger takes over.
pub(crate) fn pack_died_in(txn: &WriteTransaction, pack: &FileId) -> Result<()> {
    let mut table = txn.open_table(PACK_DEATHS).ctx("opening pack_deaths")?;
    table.remove(&pack.0[..]).ctx("writing pack_deaths")?;
    Ok(())
}

/// The record of `seq`, cut at LSN `cut_lsn`, is committed: member deaths it saw get `seq`.
pub(crate) fn resolve_in(txn: &WriteTransaction, seq: u64, cut_lsn: u64) -> Result<()> {
    let mut table = txn.open_table(PACK_DEATHS).ctx("opening pack_deaths")?;
    let mut changed = Vec::new();
    for item in table.iter().ctx("listing pack_deaths")? {
        let (k, v) = item.ctx("listing pack_deaths")?;
        let (mark, dead) = v.value();
        if dead == PENDING && mark < cut_lsn {
            changed.push((key_of(k.value(), "pack_deaths table")?, mark));
        }
    }
    for (pack, mark) in changed {
        table
            .insert(&pack.0[..], (mark, seq))
            .ctx("writing pack_deaths")?;
    }
    Ok(())
}

/// Every pack death row.
pub(crate) fn deaths(
    table: &impl ReadableTable<&'static [u8], (u64, u64)>,
) -> Result<Vec<(FileId, PackDeath)>> {
    let mut out = Vec::new();
    for item in table.iter().ctx("listing pack_deaths")? {
        let (k, v) = item.ctx("listing pack_deaths")?;
        let (mark, dead) = v.value();
        out.push((
            key_of(k.value(), "pack_deaths table")?,
            PackDeath { mark, dead },
        ));
    }
    Ok(out)
}

/// Removes the death rows of `packs` (packs no longer live: the rows are stale).
pub(crate) fn forget_deaths_in(txn: &WriteTransaction, packs: &[FileId]) -> Result<()> {
    let mut table = txn.open_table(PACK_DEATHS).ctx("opening pack_deaths")?;
    for p in packs {
        table.remove(&p.0[..]).ctx("writing pack_deaths")?;
    }
    Ok(())
}

/// Largest intent value: the ids of a 4 MiB pack's shards are a few KiB; anything near this is
/// a corrupt row.
const MAX_INTENT_BYTES: usize = 16 << 20;

fn decode_ids(bytes: &[u8]) -> Result<Vec<ShardId>> {
    if !bytes.len().is_multiple_of(32) || bytes.len() > MAX_INTENT_BYTES {
        return Err(Error::Corrupt {
            what: "repacks table",
            reason: format!("an intent of {} bytes", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(ShardId))
        .collect())
}

/// A new repack intent with no shards yet; returns its id.
pub(crate) fn intent_new_in(txn: &WriteTransaction) -> Result<u64> {
    let mut table = txn.open_table(REPACKS).ctx("opening repacks")?;
    let id = table
        .last()
        .ctx("reading repacks")?
        .map_or(1, |(k, _)| k.value().saturating_add(1));
    table.insert(id, &[][..]).ctx("writing repacks")?;
    Ok(id)
}

/// Adds `ids` to intent `id` (before they are stored).
pub(crate) fn intent_add_in(txn: &WriteTransaction, id: u64, ids: &[ShardId]) -> Result<()> {
    let mut table = txn.open_table(REPACKS).ctx("opening repacks")?;
    let mut bytes = table
        .get(id)
        .ctx("reading repacks")?
        .map(|v| v.value().to_vec())
        .ok_or_else(|| Error::Corrupt {
            what: "repacks table",
            reason: format!("intent {id} is gone while its pack is stored"),
        })?;
    for s in ids {
        bytes.extend_from_slice(&s.0);
    }
    table.insert(id, bytes.as_slice()).ctx("writing repacks")?;
    Ok(())
}

/// Removes intent `id` (its pack was switched to, or its shards deleted).
pub(crate) fn intent_remove_in(txn: &WriteTransaction, id: u64) -> Result<()> {
    let mut table = txn.open_table(REPACKS).ctx("opening repacks")?;
    table.remove(id).ctx("writing repacks")?;
    Ok(())
}

/// Every intent and its shard ids.
pub(crate) fn intents(
    table: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Vec<(u64, Vec<ShardId>)>> {
    let mut out = Vec::new();
    for item in table.iter().ctx("listing repacks")? {
        let (k, v) = item.ctx("listing repacks")?;
        out.push((k.value(), decode_ids(v.value())?));
    }
    Ok(out)
}

/// Whether `content` is still exactly what a repack copied for `m`: the same pack, offset and
/// length. Any write that landed since (a rewrite, a truncate to a new upload, a delete and
/// reuse) gave the inode other content, so its new state wins and the copy is left unnamed.
pub fn still_names(content: &crate::namespace::types::Content, m: &RepackMove) -> bool {
    matches!(
        content,
        crate::namespace::types::Content::Stored { file, offset, len, .. }
            if *file == m.old_file && *offset == m.old_offset && *len == m.len
    )
}
