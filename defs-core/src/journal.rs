//! The dirty journal: which inodes hold data that is not yet stored (only in their cache
//! file), since when, which generation's upload is in flight, and the last upload failure. It
//! lives in the metadata DB (`journal` table), so it commits with the namespace and survives
//! crashes on the same terms (see [`crate::meta`]).
//!
//! Generations: every inode carries a [`Generation`]. [`MetaDb::mark_dirty`] moves it forward
//! whenever new data could otherwise be mistaken for data already being uploaded; an upload
//! records the generation it read ([`MetaDb::begin_upload`]) and [`MetaDb::finish_upload`] marks
//! the inode clean only if the generation is still the same. So an upload finishing for an old
//! generation never marks newer data clean.
//!
//! Ordering rule for the writer (the FUSE layer): put the bytes into the cache file first, then
//! call `save_written` (or `mark_dirty`), then acknowledge the write. The flusher calls
//! `begin_upload` before it reads the cache file. Either the write's mark comes after
//! `begin_upload` (and moves the generation, so the upload cannot mark it clean) or before (and
//! the upload reads its bytes).

pub(crate) mod entry;

use redb::ReadableTable;

use crate::error::{Error, Result};
use crate::meta::MetaDb;
use crate::meta::live::LiveRanges;
use crate::meta::redo::LogOp;
use crate::meta::repack;
use crate::meta::schema::{DbContext, INODES, JOURNAL, LIVE_RANGES};
use crate::namespace::record::InodeRecord;
use crate::namespace::tables::load;
use crate::namespace::types::{Attr, Content, SetAttr, Timestamp};
use crate::types::{FileId, Generation, InodeNo};
pub use entry::{DirtyRecord, MAX_ERROR_LEN};
use entry::{JournalEntry, cut, dirty, mark_dirty_in};

impl MetaDb {
    /// Records that `ino` holds data not yet stored, and returns the generation that data
    /// belongs to. Cheap (a read) when the inode is already dirty and no upload of its current
    /// generation is in flight; otherwise one write that moves the generation forward. See the
    /// module doc for the ordering rule.
    ///
    /// # Errors
    /// NotFound.
    pub fn mark_dirty(&self, ino: InodeNo, now: Timestamp) -> Result<Generation> {
        if let Some(g) = self.dirty_already(ino)? {
            return Ok(g);
        }
        self.write(
            |generation| LogOp::MarkDirty {
                ino,
                now,
                generation: *generation,
            },
            |txn| mark_dirty_in(txn, ino, now),
        )
    }

    /// [`MetaDb::setattr`] and [`MetaDb::mark_dirty`] in one transaction (one redo record):
    /// the size and times a write (or truncate) leaves, recorded as unsaved data in the same
    /// step, so an upload that read the older size can never stand for the file.
    /// Returns the attributes and the generation the data belongs to.
    ///
    /// # Errors
    /// As [`MetaDb::setattr`].
    pub fn setattr_dirty(
        &self,
        ino: InodeNo,
        set: &SetAttr,
        now: Timestamp,
    ) -> Result<(Attr, Generation)> {
        self.write(
            |(_, generation): &(Attr, Generation)| LogOp::SetattrDirty {
                ino,
                set: *set,
                now,
                generation: *generation,
            },
            |txn| {
                let attr = self.setattr_in(txn, ino, set, now)?;
                let generation = mark_dirty_in(txn, ino, now)?;
                Ok((attr, generation))
            },
        )
    }

    /// What a write saves (the file's size and times), as [`MetaDb::setattr_dirty`] does. When the journal already holds the file dirty with no
    /// upload of its generation in flight, marking it again would change nothing and any
    /// upload must begin after this change (`begin_upload` is a write transaction, which
    /// applies deferred changes first), so the change is deferred (see [`crate::meta`]) rather
    /// than committed. Returns the attributes.
    ///
    /// # Errors
    /// As [`MetaDb::setattr`].
    pub fn save_written(&self, ino: InodeNo, set: &SetAttr, now: Timestamp) -> Result<Attr> {
        if let Some(attr) = self.defer_setattr(ino, set, now, true)? {
            return Ok(attr);
        }
        self.setattr_dirty(ino, set, now).map(|(attr, _)| attr)
    }

    /// The generation when `ino` is dirty and no upload of its generation is in flight (then
    /// marking it dirty changes nothing), else `None`.
    fn dirty_already(&self, ino: InodeNo) -> Result<Option<Generation>> {
        self.read_or_created(
            ino,
            |txn| {
                let inodes = txn.open_table(INODES).ctx("opening inodes")?;
                let rec = load(&inodes, ino)?;
                let journal = txn.open_table(JOURNAL).ctx("opening journal")?;
                Ok(dirty(&journal, ino, &rec)?.then_some(rec.generation))
            },
            // Dirty from its create, and no upload is in flight: one begins with a write
            // transaction, which would have committed the create.
            |d, op| Ok(Some(d.created_record(op)?.generation)),
        )
    }

    /// `ino`'s journal record, or `None` when it is clean: one lookup, for callers asking
    /// about one file (`user.defs.state`), where [`MetaDb::dirty_inodes`] reads them all.
    ///
    /// # Errors
    /// NotFound (no such inode), Db, Corrupt.
    pub fn dirty_record(&self, ino: InodeNo) -> Result<Option<DirtyRecord>> {
        self.settle_creates()?;
        self.read(|txn| {
            let inodes = txn.open_table(INODES).ctx("opening inodes")?;
            let rec = load(&inodes, ino)?;
            let journal = txn.open_table(JOURNAL).ctx("opening journal")?;
            let Some(v) = journal.get(ino.0).ctx("reading the journal")? else {
                return Ok(None);
            };
            Ok(Some(DirtyRecord::new(ino, &rec, v.value())?))
        })
    }

    /// Every dirty inode, in inode order.
    ///
    /// # Errors
    /// Db, Corrupt.
    pub fn dirty_inodes(&self) -> Result<Vec<DirtyRecord>> {
        self.settle_creates()?;
        self.read(|txn| {
            let inodes = txn.open_table(INODES).ctx("opening inodes")?;
            let journal = txn.open_table(JOURNAL).ctx("opening journal")?;
            let mut out = Vec::new();
            for item in journal.iter().ctx("listing the journal")? {
                let (k, v) = item.ctx("listing the journal")?;
                let ino = InodeNo(k.value());
                out.push(DirtyRecord::new(ino, &load(&inodes, ino)?, v.value())?);
            }
            Ok(out)
        })
    }

    /// The live ranges of every stored object the namespace names, by object (see
    /// [`crate::meta::live`]): what a collector compares with each object's size.
    ///
    /// # Errors
    /// Db; Corrupt when a key is not a file id.
    pub fn live_objects(&self) -> Result<Vec<(FileId, LiveRanges)>> {
        self.read(|txn| {
            let table = txn.open_table(LIVE_RANGES).ctx("opening live_ranges")?;
            let mut out = Vec::new();
            for item in table.iter().ctx("listing live_ranges")? {
                let (k, v) = item.ctx("listing live_ranges")?;
                let id = <[u8; 32]>::try_from(k.value()).map_err(|_| Error::Corrupt {
                    what: "live_ranges table",
                    reason: format!("a key of {} bytes", k.value().len()),
                })?;
                let (files, bytes) = v.value();
                out.push((FileId(id), LiveRanges { files, bytes }));
            }
            Ok(out)
        })
    }

    /// Records that an upload of `ino`'s current generation starts, and returns that
    /// generation. Call it before reading the cache file.
    ///
    /// # Errors
    /// NotFound; InvalidArgument if the inode is clean.
    pub fn begin_upload(&self, ino: InodeNo) -> Result<Generation> {
        self.write(
            |generation| LogOp::BeginUpload {
                ino,
                generation: *generation,
            },
            |txn| {
                let inodes = txn.open_table(INODES).ctx("opening inodes")?;
                let rec = load(&inodes, ino)?;
                let mut journal = txn.open_table(JOURNAL).ctx("opening journal")?;
                let mut e = journal
                    .get(ino.0)
                    .ctx("reading the journal")?
                    .map(|e| JournalEntry::decode(e.value()))
                    .transpose()?
                    .ok_or_else(|| Error::InvalidArgument {
                        what: format!("upload of clean inode {ino}"),
                    })?;
                e.uploading = Some(rec.generation);
                journal
                    .insert(ino.0, e.encode().as_slice())
                    .ctx("writing the journal")?;
                Ok(rec.generation)
            },
        )
    }

    /// An upload of generation `generation` of `ino` is stored as `content`. If that is still
    /// the inode's generation, the content is recorded and the inode is clean (`true`).
    /// Otherwise (newer data arrived, or the inode was purged) nothing changes but the
    /// in-flight mark, and the caller should discard the uploaded object (`false`). Attributes
    /// (mtime, size) are never touched.
    ///
    /// # Errors
    /// Db, Corrupt.
    pub fn finish_upload(
        &self,
        ino: InodeNo,
        generation: Generation,
        content: Content,
    ) -> Result<bool> {
        let logged = content.clone();
        self.write(
            move |clean| LogOp::FinishUpload {
                ino,
                generation,
                content: logged,
                clean: *clean,
            },
            |txn| {
                let mut inodes = txn.open_table(INODES).ctx("opening inodes")?;
                let Some(bytes) = inodes.get(ino.0).ctx("reading an inode")? else {
                    return Ok(false);
                };
                let mut rec = InodeRecord::decode(bytes.value())?;
                drop(bytes);
                let mut journal = txn.open_table(JOURNAL).ctx("opening journal")?;
                let Some(mut e) = journal
                    .get(ino.0)
                    .ctx("reading the journal")?
                    .map(|e| JournalEntry::decode(e.value()))
                    .transpose()?
                else {
                    return Ok(false);
                };
                if rec.generation == generation {
                    crate::meta::live::replace_in(txn, &rec.content, &content)?;
                    rec.content = content;
                    inodes
                        .insert(ino.0, rec.encode().as_slice())
                        .ctx("writing an inode")?;
                    journal.remove(ino.0).ctx("writing the journal")?;
                    return Ok(true);
                }
                if e.uploading == Some(generation) {
                    e.uploading = None;
                    journal
                        .insert(ino.0, e.encode().as_slice())
                        .ctx("writing the journal")?;
                }
                Ok(false)
            },
        )
    }

    /// Switches the files of a repack to the new pack `file` (key `key`) in one logged
    /// transaction: each move whose inode still names exactly the range it was copied from
    /// ([`repack::still_names`]) gets the new range; any other (rewritten, deleted, truncated
    /// since) keeps its state. Removes repack intent `intent`, and records the new pack as
    /// named by nothing when no move applied (or as having lost members when some did not).
    /// Returns how many files switched. Attributes, generations and dirty marks are untouched:
    /// the bytes are the same.
    ///
    /// # Errors
    /// InvalidArgument for more than [`repack::REPACK_MAX_FILES`] moves; Db, Corrupt.
    pub fn switch_repacked(
        &self,
        intent: u64,
        file: FileId,
        key: [u8; 32],
        moves: &[repack::RepackMove],
    ) -> Result<u64> {
        if moves.len() > repack::REPACK_MAX_FILES {
            return Err(Error::InvalidArgument {
                what: format!(
                    "a repack of {} files (at most {})",
                    moves.len(),
                    repack::REPACK_MAX_FILES
                ),
            });
        }
        self.write(
            |switched| LogOp::Repack {
                intent,
                file,
                key,
                moves: moves.to_vec(),
                switched: *switched,
            },
            |txn| {
                let mut inodes = txn.open_table(INODES).ctx("opening inodes")?;
                let mut switched = 0u64;
                for m in moves {
                    let Some(bytes) = inodes.get(m.ino.0).ctx("reading an inode")? else {
                        continue;
                    };
                    let mut rec = InodeRecord::decode(bytes.value())?;
                    drop(bytes);
                    if !repack::still_names(&rec.content, m) {
                        continue;
                    }
                    let new = Content::Stored {
                        file,
                        key,
                        offset: m.new_offset,
                        len: m.len,
                    };
                    crate::meta::live::replace_in(txn, &rec.content, &new)?;
                    rec.content = new;
                    inodes
                        .insert(m.ino.0, rec.encode().as_slice())
                        .ctx("writing an inode")?;
                    switched += 1;
                }
                drop(inodes);
                if switched == 0 {
                    crate::meta::ledger::unnamed_in(txn, &file)?;
                } else if switched < moves.len() as u64 {
                    repack::member_left_in(txn, &file)?;
                }
                repack::intent_remove_in(txn, intent)?;
                Ok(switched)
            },
        )
    }

    /// An upload of generation `generation` of `ino` failed: the inode stays dirty, the reason
    /// is kept for `defs status` (cut to [`MAX_ERROR_LEN`] bytes) and the failure counted.
    ///
    /// # Errors
    /// Db, Corrupt.
    pub fn upload_failed(&self, ino: InodeNo, generation: Generation, reason: &str) -> Result<()> {
        self.upload_failed_cut(ino, generation, &cut(reason))
    }

    /// [`MetaDb::upload_failed`] with a reason already cut to [`MAX_ERROR_LEN`] (what the redo
    /// log records and replays, so a replayed reason is byte-identical).
    pub(crate) fn upload_failed_cut(
        &self,
        ino: InodeNo,
        generation: Generation,
        reason: &str,
    ) -> Result<()> {
        self.write(
            |_| LogOp::UploadFailed {
                ino,
                generation,
                reason,
            },
            |txn| {
                let mut journal = txn.open_table(JOURNAL).ctx("opening journal")?;
                let Some(mut e) = journal
                    .get(ino.0)
                    .ctx("reading the journal")?
                    .map(|e| JournalEntry::decode(e.value()))
                    .transpose()?
                else {
                    return Ok(());
                };
                if e.uploading == Some(generation) {
                    e.uploading = None;
                }
                e.failures = e.failures.saturating_add(1);
                e.last_error = Some(reason.to_string());
                journal
                    .insert(ino.0, e.encode().as_slice())
                    .ctx("writing the journal")?;
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::NewInode;
    use crate::types::FileId;

    const N: NewInode = NewInode {
        perm: 0o644,
        uid: 0,
        gid: 0,
    };

    fn stored(b: u8) -> Content {
        Content::Stored {
            file: FileId([b; 32]),
            key: [b; 32],
            offset: 0,
            len: 1,
        }
    }

    #[test]
    fn an_old_generation_finishing_never_marks_newer_data_clean() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(dir.path(), None).unwrap();
        let t = Timestamp::new(5, 0);
        let (a, _) = db.create(InodeNo::ROOT, b"f", &N, true, t).unwrap();
        let g1 = db.mark_dirty(a.ino, t).unwrap();
        assert_eq!(
            db.mark_dirty(a.ino, t).unwrap(),
            g1,
            "already dirty: same generation"
        );
        assert_eq!(db.begin_upload(a.ino).unwrap(), g1);
        let g2 = db.mark_dirty(a.ino, Timestamp::new(6, 0)).unwrap();
        assert!(g2 > g1);
        assert!(!db.finish_upload(a.ino, g1, stored(1)).unwrap());
        assert_eq!(db.content(a.ino).unwrap(), Content::Empty);
        let d = db.dirty_inodes().unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].since, t);
        assert_eq!(d[0].uploading, None);
        assert_eq!(d[0].generation, g2);
        assert_eq!(db.begin_upload(a.ino).unwrap(), g2);
        db.upload_failed(a.ino, g2, &"x".repeat(5000)).unwrap();
        let d = db.dirty_inodes().unwrap();
        assert_eq!(d[0].failures, 1);
        assert!(d[0].last_error.as_ref().unwrap().len() <= MAX_ERROR_LEN + 3);
        // One inode's record is the same as in the whole list.
        assert_eq!(db.dirty_record(a.ino).unwrap().as_ref(), d.first());
        assert_eq!(db.begin_upload(a.ino).unwrap(), g2);
        assert!(db.finish_upload(a.ino, g2, stored(2)).unwrap());
        assert!(db.dirty_inodes().unwrap().is_empty());
        assert_eq!(db.dirty_record(a.ino).unwrap(), None);
        assert!(matches!(
            db.dirty_record(InodeNo(a.ino.0 + 100)),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(db.content(a.ino).unwrap(), stored(2));
        assert!(db.begin_upload(a.ino).is_err(), "clean inode");
        // mtime is untouched by uploads.
        assert_eq!(db.getattr(a.ino).unwrap().mtime, t);
    }

    #[test]
    fn purge_drops_the_journal_entry() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(dir.path(), None).unwrap();
        let t = Timestamp::new(5, 0);
        let (a, _) = db.create(InodeNo::ROOT, b"f", &N, true, t).unwrap();
        let g = db.mark_dirty(a.ino, t).unwrap();
        db.unlink(InodeNo::ROOT, b"f", t).unwrap();
        assert_eq!(db.orphans().unwrap(), vec![a.ino]);
        db.purge(a.ino).unwrap();
        assert!(db.dirty_inodes().unwrap().is_empty());
        assert!(!db.finish_upload(a.ino, g, stored(1)).unwrap());
    }

    #[test]
    fn journal_record_decoder_rejects_truncations() {
        let e = JournalEntry {
            since: Timestamp::new(1, 2),
            uploading: Some(Generation(3)),
            failures: 4,
            last_error: Some("boom".into()),
        };
        let b = e.encode();
        assert_eq!(JournalEntry::decode(&b).unwrap(), e);
        for n in 0..b.len() {
            assert!(JournalEntry::decode(&b[..n]).is_err());
        }
    }
}
