//! The metadata DB's schema: the redb table definitions and the keys of the `meta` table, the
//! schema version check and migration a DB goes through when it is opened, and the reading of
//! counters. Record layouts are in [`crate::namespace::record`] and [`crate::journal`]; byte
//! layouts in docs/format.md ("Metadata DB").

use std::path::Path;

use redb::{
    Database, Key, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle, Value, WriteTransaction,
};

use crate::error::{Error, Result};
use crate::namespace::record::InodeRecord;
use crate::namespace::types::{FileKind, NewInode, Timestamp};
use crate::types::InodeNo;

/// The schema version this build writes. Bump it with every change to a table or a record
/// layout, add a step to `migrate` (below), and a row to docs/format.md's history.
pub const SCHEMA_VERSION: u64 = 5;

/// Counters and the schema version.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// ino → encoded [`InodeRecord`].
pub(crate) const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
/// (parent ino, name) → (child ino, kind tag, cookie).
pub(crate) const DIRENTS: TableDefinition<(u64, &[u8]), (u64, u8, u64)> =
    TableDefinition::new("dirents");
/// (parent ino, cookie) → name: readdir order and stable cookies.
pub(crate) const COOKIES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("cookies");
/// (ino, name) → value.
pub(crate) const XATTRS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("xattrs");
/// ino → encoded dirty record (see [`crate::journal`]).
pub(crate) const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// ino → () for inodes whose link count reached 0 and which wait for [`MetaDb::purge`](crate::meta::MetaDb::purge).
pub(crate) const ORPHANS: TableDefinition<u64, ()> = TableDefinition::new("orphans");

/// Object file id (32 bytes) → (inodes naming a range of it, bytes of those ranges): see
/// `meta::live`. Schema 3.
pub(crate) const LIVE_RANGES: TableDefinition<&[u8], (u64, u64)> =
    TableDefinition::new("live_ranges");

/// Object file id (32 bytes) → (kind | flags u8, born u64, dead u64, mark u64): the object
/// ledger, see `meta::ledger`. Schema 4.
pub(crate) const LEDGER: TableDefinition<&[u8], (u8, u64, u64, u64)> =
    TableDefinition::new("objects");

/// Pack file id (32 bytes) → (mark u64, dead u64): when a member of a pack that stays live last
/// left it (see `meta::repack`). Schema 5.
pub(crate) const PACK_DEATHS: TableDefinition<&[u8], (u64, u64)> =
    TableDefinition::new("pack_deaths");

/// Repack intent id → the ids of every shard (and manifest) a compaction stored or is storing
/// for a pack no inode names yet (see `meta::repack`). Schema 5.
pub(crate) const REPACKS: TableDefinition<u64, &[u8]> = TableDefinition::new("repacks");

/// Key in [`META`]: the schema version.
pub(crate) const KEY_SCHEMA: &str = "schema_version";
/// Key in [`META`]: the next inode number to hand out. Never reused, so inode numbers are
/// stable for a file's life and never name two files across restarts.
pub(crate) const KEY_NEXT_INO: &str = "next_ino";
/// Key in [`META`]: the LSN of the last logged operation this DB state includes.
pub(crate) const KEY_LSN: &str = "lsn";

/// Key in [`META`]: the sequence number of the last root record this DB's namespace was
/// published under (or recovered from); 0 before the first.
pub(crate) const KEY_PUBLISHED_SEQ: &str = "published_seq";
/// Key in [`META`]: the LSN the last published namespace was cut at. An LSN above it means
/// operations not yet published.
pub(crate) const KEY_PUBLISHED_LSN: &str = "published_lsn";

/// Adds context to redb's many error types.
pub(crate) trait DbContext<T> {
    /// Wraps the error into [`Error::Db`] with `context`.
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T, E: Into<redb::Error>> DbContext<T> for std::result::Result<T, E> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|e| Error::Db {
            context,
            source: Box::new(e.into()),
        })
    }
}

/// Creates the tables and the root directory in a new DB, checks the schema version of an
/// existing one, and migrates an older one step by step.
/// `derive` fills a derived table inside the migration's transaction for the step from the
/// version it is given (2 → 3: `live_ranges` counted from the inodes; 3 → 4: the object ledger
/// from `live_ranges`); it is passed in because that counting belongs to a layer above this one
/// (`meta::live`, `meta::ledger`).
pub(crate) fn init_or_migrate(db: &Database, path: &Path, derive: Derive) -> Result<()> {
    let txn = db.begin_write().ctx("beginning schema check")?;
    let found = {
        let meta = txn.open_table(META).ctx("opening the meta table")?;
        let v = meta.get(KEY_SCHEMA).ctx("reading the schema version")?;
        v.map(|v| v.value())
    };
    match found {
        None => {
            create_tables(&txn)?;
            let mut meta = txn.open_table(META).ctx("opening the meta table")?;
            meta.insert(KEY_SCHEMA, SCHEMA_VERSION)
                .ctx("writing the schema version")?;
            meta.insert(KEY_NEXT_INO, InodeNo::ROOT.0 + 1)
                .ctx("writing next_ino")?;
            let mut inodes = txn.open_table(INODES).ctx("opening inodes")?;
            let root = InodeRecord::new(
                FileKind::Directory,
                &NewInode {
                    perm: 0o755,
                    uid: 0,
                    gid: 0,
                },
                Timestamp::default(),
                Some(InodeNo::ROOT),
            );
            inodes
                .insert(InodeNo::ROOT.0, root.encode().as_slice())
                .ctx("writing the root inode")?;
        }
        Some(found) if found > SCHEMA_VERSION => {
            txn.abort().ctx("aborting schema check")?;
            return Err(Error::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Some(found) => {
            migrate(&txn, found, derive)?;
            let mut meta = txn.open_table(META).ctx("opening the meta table")?;
            meta.insert(KEY_SCHEMA, SCHEMA_VERSION)
                .ctx("writing the schema version")?;
        }
    }
    txn.commit().ctx("committing schema check")
}

fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(INODES).ctx("creating inodes")?;
    txn.open_table(DIRENTS).ctx("creating dirents")?;
    txn.open_table(COOKIES).ctx("creating cookies")?;
    txn.open_table(XATTRS).ctx("creating xattrs")?;
    txn.open_table(JOURNAL).ctx("creating journal")?;
    txn.open_table(ORPHANS).ctx("creating orphans")?;
    txn.open_table(LIVE_RANGES).ctx("creating live_ranges")?;
    txn.open_table(LEDGER).ctx("creating the ledger")?;
    txn.open_table(PACK_DEATHS).ctx("creating pack_deaths")?;
    txn.open_table(REPACKS).ctx("creating repacks")?;
    Ok(())
}

/// Fills the table derived by the step from the given schema version inside a write transaction
/// (see [`init_or_migrate`]).
pub(crate) type Derive = fn(&WriteTransaction, u64) -> Result<()>;

/// Brings a DB at schema `from` up to [`SCHEMA_VERSION`], one step per version, inside the
/// opening transaction (so a failed migration changes nothing).
fn migrate(txn: &WriteTransaction, from: u64, derive: Derive) -> Result<()> {
    let mut version = from;
    while version < SCHEMA_VERSION {
        match version {
            // Version 0 never shipped a layout of its own: it is a DB whose creation was
            // interrupted before the tables existed. Creating them is the whole step.
            0 => create_tables(txn)?,
            // Version 2 adds inode kinds 5-7 (character and block devices, sockets) and op-log
            // record tag 16 that makes them. Every table and record keeps its layout, so the
            // records of a version-1 DB are valid version-2 records as they are: the step only
            // records the new version, which makes an older build refuse the DB
            // (`SchemaTooNew`) instead of calling a device node's record corrupt.
            1 => {}
            // Version 3 adds the `live_ranges` table (live ranges per stored object), counted from
            // the inodes the DB holds.
            2 => derive(txn, 2)?,
            // Version 4 adds the object ledger (`objects`), filled from `live_ranges`: every
            // object the namespace names, born at seq 0 (any version may name it).
            3 => {
                txn.open_table(LEDGER).ctx("creating the ledger")?;
                derive(txn, 3)?;
            }
            // Version 5 adds `pack_deaths` (when a pack last lost a member) and `repacks`
            // (compactions under way), both empty, and op-log record tag 17 (a repack's
            // content switch) that an older build could not replay. Packs that lost members
            // before the step have no `pack_deaths` row: they become candidates for
            // compaction when they next lose one.
            4 => {
                txn.open_table(PACK_DEATHS).ctx("creating pack_deaths")?;
                txn.open_table(REPACKS).ctx("creating repacks")?;
            }
            other => {
                return Err(Error::Corrupt {
                    what: "metadata DB schema",
                    reason: format!("no migration from schema version {other}"),
                });
            }
        }
        version += 1;
    }
    Ok(())
}

/// Reads a counter from the meta table (0 when absent).
pub(crate) fn meta_value(txn: &ReadTransaction, key: &str) -> Result<u64> {
    counter(&txn.open_table(META).ctx("opening the meta table")?, key)
}

/// A counter of an open meta table, read or write (0 when absent).
pub(crate) fn counter(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64> {
    Ok(meta.get(key).ctx("reading meta")?.map_or(0, |v| v.value()))
}

/// What one table of the metadata DB holds, in redb's own figures (a diagnostic:
/// [`MetaDb::table_usage`](crate::meta::MetaDb::table_usage)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableUsage {
    /// The table's name.
    pub name: String,
    /// Its entries.
    pub entries: u64,
    /// Bytes of its keys and values.
    pub stored_bytes: u64,
    /// Bytes of keys in branch pages and other B-tree metadata.
    pub metadata_bytes: u64,
    /// Bytes lost to fragmentation in its pages.
    pub fragmented_bytes: u64,
    /// Its leaf and branch pages.
    pub pages: u64,
}

fn usage_of<K: Key + 'static, V: Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<TableUsage> {
    let table = txn.open_table(def).ctx("opening a table")?;
    let stats = table.stats().ctx("reading a table's stats")?;
    Ok(TableUsage {
        name: def.name().to_string(),
        entries: table.len().ctx("counting a table")?,
        stored_bytes: stats.stored_bytes(),
        metadata_bytes: stats.metadata_bytes(),
        fragmented_bytes: stats.fragmented_bytes(),
        pages: stats.leaf_pages() + stats.branch_pages(),
    })
}

/// [`TableUsage`] of every table.
pub(crate) fn table_usage(txn: &ReadTransaction) -> Result<Vec<TableUsage>> {
    Ok(vec![
        usage_of(txn, META)?,
        usage_of(txn, INODES)?,
        usage_of(txn, DIRENTS)?,
        usage_of(txn, COOKIES)?,
        usage_of(txn, XATTRS)?,
        usage_of(txn, JOURNAL)?,
        usage_of(txn, ORPHANS)?,
        usage_of(txn, LIVE_RANGES)?,
        usage_of(txn, LEDGER)?,
        usage_of(txn, PACK_DEATHS)?,
        usage_of(txn, REPACKS)?,
    ])
}
