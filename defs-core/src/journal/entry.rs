//! The journal table's rows: the dirty record of one inode ([`JournalEntry`] as stored,
//! [`DirtyRecord`] as reported) and the reads and writes of the table inside a caller's
//! transaction, shared by the namespace's operations (a new file is dirty from its create), the
//! deferred changes and the journal's own operations ([`crate::journal`]).

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::error::Result;
use crate::meta::schema::{DbContext, INODES, JOURNAL};
use crate::namespace::record::{InodeRecord, Reader, put_time, put_u32, put_u64};
use crate::namespace::tables::load;
use crate::namespace::types::{Timestamp, invalid};
use crate::types::{Generation, InodeNo};

/// Longest upload-failure reason kept, in bytes; a longer one is cut at a character boundary
/// and marked with "…". One reason per inode; the full error is in the logs.
pub const MAX_ERROR_LEN: usize = 1024;

/// Version byte of an encoded journal record.
const JOURNAL_RECORD_VERSION: u8 = 1;

/// One dirty inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyRecord {
    /// The inode.
    pub ino: InodeNo,
    /// When it became dirty (the first `mark_dirty` since it was last clean).
    pub since: Timestamp,
    /// Its current generation: the one an upload must carry to make it clean.
    pub generation: Generation,
    /// The generation of the upload in flight, if one is.
    pub uploading: Option<Generation>,
    /// Failed uploads since it became dirty.
    pub failures: u32,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

impl DirtyRecord {
    /// The record of `ino` (whose inode record is `rec`) from its encoded journal entry.
    pub(crate) fn new(ino: InodeNo, rec: &InodeRecord, entry: &[u8]) -> Result<DirtyRecord> {
        let e = JournalEntry::decode(entry)?;
        Ok(DirtyRecord {
            ino,
            since: e.since,
            generation: rec.generation,
            uploading: e.uploading,
            failures: e.failures,
            last_error: e.last_error,
        })
    }
}

/// The stored part of a [`DirtyRecord`] (the generation lives in the inode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JournalEntry {
    pub(crate) since: Timestamp,
    pub(crate) uploading: Option<Generation>,
    pub(crate) failures: u32,
    pub(crate) last_error: Option<String>,
}

impl JournalEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = vec![JOURNAL_RECORD_VERSION];
        put_time(&mut w, self.since);
        match self.uploading {
            None => w.push(0),
            Some(g) => {
                w.push(1);
                put_u64(&mut w, g.0);
            }
        }
        put_u32(&mut w, self.failures);
        let err = self.last_error.as_deref().unwrap_or("");
        // The reason is at most MAX_ERROR_LEN bytes (cut by upload_failed).
        put_u32(&mut w, u32::try_from(err.len()).unwrap_or(0));
        w.extend_from_slice(err.as_bytes());
        w.push(u8::from(self.last_error.is_some()));
        w
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<JournalEntry> {
        let mut r = Reader::new(bytes, "journal record");
        let v = r.u8()?;
        if v != JOURNAL_RECORD_VERSION {
            return Err(r.bad(format!("unknown journal record version {v}")));
        }
        let since = r.time()?;
        let uploading = match r.u8()? {
            0 => None,
            1 => Some(Generation(r.u64()?)),
            t => return Err(r.bad(format!("bad upload flag {t}"))),
        };
        let failures = r.u32()?;
        let len = r.u32()? as usize;
        if len > MAX_ERROR_LEN + 3 {
            return Err(r.bad(format!("error reason of {len} bytes")));
        }
        let text = String::from_utf8(r.bytes(len)?.to_vec())
            .map_err(|_| r.bad("error reason is not UTF-8".into()))?;
        let last_error = match r.u8()? {
            0 => None,
            _ => Some(text),
        };
        r.finish()?;
        Ok(JournalEntry {
            since,
            uploading,
            failures,
            last_error,
        })
    }
}

pub(crate) fn cut(reason: &str) -> String {
    if reason.len() <= MAX_ERROR_LEN {
        return reason.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

/// The changes of [`MetaDb::mark_dirty`](crate::meta::MetaDb::mark_dirty)'s slow path, inside the caller's write transaction:
/// a journal entry (kept if there is one), and a new generation when the inode was clean or an
/// upload of its generation is in flight.
pub(crate) fn mark_dirty_in(
    txn: &WriteTransaction,
    ino: InodeNo,
    now: Timestamp,
) -> Result<Generation> {
    let mut inodes = txn.open_table(INODES).ctx("opening inodes")?;
    let mut rec = load(&inodes, ino)?;
    let mut journal = txn.open_table(JOURNAL).ctx("opening journal")?;
    let old = journal
        .get(ino.0)
        .ctx("reading the journal")?
        .map(|e| JournalEntry::decode(e.value()))
        .transpose()?;
    let bump = old
        .as_ref()
        .is_none_or(|e| e.uploading == Some(rec.generation));
    if bump {
        rec.generation = Generation(
            rec.generation
                .0
                .checked_add(1)
                .ok_or_else(|| invalid("generation counter exhausted"))?,
        );
        inodes
            .insert(ino.0, rec.encode().as_slice())
            .ctx("writing an inode")?;
    }
    let entry = old.unwrap_or(JournalEntry {
        since: now,
        uploading: None,
        failures: 0,
        last_error: None,
    });
    journal
        .insert(ino.0, entry.encode().as_slice())
        .ctx("writing the journal")?;
    Ok(rec.generation)
}

/// Whether `ino` (whose record is `rec`) is dirty with no upload of its current generation in
/// flight: then marking it dirty again changes nothing.
pub(crate) fn dirty_in(txn: &ReadTransaction, ino: InodeNo, rec: &InodeRecord) -> Result<bool> {
    dirty(&txn.open_table(JOURNAL).ctx("opening journal")?, ino, rec)
}

/// [`dirty_in`] over any readable journal table.
pub(crate) fn dirty(
    journal: &impl ReadableTable<u64, &'static [u8]>,
    ino: InodeNo,
    rec: &InodeRecord,
) -> Result<bool> {
    let entry = journal.get(ino.0).ctx("reading the journal")?;
    Ok(match entry {
        Some(e) => JournalEntry::decode(e.value())?.uploading != Some(rec.generation),
        None => false,
    })
}
