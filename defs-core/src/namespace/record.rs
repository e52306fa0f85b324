//! The inode record as stored in the `inodes` table, and the little-endian byte helpers shared
//! with the snapshot format. Layout in docs/format.md ("Metadata DB").

use crate::error::{Error, Result};
use crate::namespace::types::{Attr, Content, FileKind, NewInode, SYMLINK_MAX, Timestamp};
use crate::types::{FileId, Generation, InodeNo};

/// Version byte at the start of every encoded inode record.
const RECORD_VERSION: u8 = 1;

/// One inode, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InodeRecord {
    pub(crate) kind: FileKind,
    pub(crate) perm: u16,
    pub(crate) nlink: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) rdev: u32,
    /// Bytes for files, the target's length for symlinks, the number of entries for directories.
    pub(crate) size: u64,
    pub(crate) atime: Timestamp,
    pub(crate) mtime: Timestamp,
    pub(crate) ctime: Timestamp,
    pub(crate) generation: Generation,
    /// Directories: the parent (the root is its own parent). 0 for other kinds.
    pub(crate) parent: u64,
    /// Directories: the cookie the next entry gets (cookies start at 1).
    pub(crate) next_cookie: u64,
    pub(crate) content: Content,
    /// Symlinks: the target.
    pub(crate) target: Vec<u8>,
}

impl InodeRecord {
    /// A new inode with nlink 1 (files) or 2 (directories), all times `now`.
    pub(crate) fn new(
        kind: FileKind,
        init: &NewInode,
        now: Timestamp,
        parent: Option<InodeNo>,
    ) -> InodeRecord {
        InodeRecord {
            kind,
            perm: init.perm & 0o7777,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            uid: init.uid,
            gid: init.gid,
            rdev: 0,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            generation: Generation(0),
            parent: parent.map_or(0, |p| p.0),
            next_cookie: 1,
            content: Content::Empty,
            target: Vec::new(),
        }
    }

    /// A directory's side of a new entry of `kind`: counts it in the size (and nlink, for a
    /// subdirectory), sets mtime and ctime, and returns the entry's readdir cookie.
    pub(crate) fn add_child(&mut self, kind: FileKind, now: Timestamp) -> Result<u64> {
        let cookie = self.next_cookie;
        self.next_cookie = cookie
            .checked_add(1)
            .ok_or_else(|| super::corrupt("directory cookies exhausted"))?;
        self.size += 1;
        if kind == FileKind::Directory {
            self.nlink += 1;
        }
        self.mtime = now;
        self.ctime = now;
        Ok(cookie)
    }

    /// The attributes FUSE reports.
    pub(crate) fn attr(&self, ino: InodeNo) -> Attr {
        Attr {
            ino,
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            rdev: self.rdev,
            generation: self.generation,
            allocated: None,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(128 + self.target.len());
        w.push(RECORD_VERSION);
        self.encode_body(&mut w);
        w
    }

    /// The record without its version byte (the snapshot carries its own version).
    pub(crate) fn encode_body(&self, w: &mut Vec<u8>) {
        w.push(self.kind.tag());
        put_u16(w, self.perm);
        put_u32(w, self.nlink);
        put_u32(w, self.uid);
        put_u32(w, self.gid);
        put_u32(w, self.rdev);
        put_u64(w, self.size);
        for t in [self.atime, self.mtime, self.ctime] {
            put_time(w, t);
        }
        put_u64(w, self.generation.0);
        put_u64(w, self.parent);
        put_u64(w, self.next_cookie);
        match &self.content {
            Content::Empty => w.push(0),
            Content::Stored {
                file,
                key,
                offset,
                len,
            } => {
                w.push(1);
                w.extend_from_slice(&file.0);
                w.extend_from_slice(key);
                put_u64(w, *offset);
                put_u64(w, *len);
            }
        }
        // The target is at most SYMLINK_MAX bytes, checked by symlink() and the decoders.
        put_u32(w, u32::try_from(self.target.len()).unwrap_or(u32::MAX));
        w.extend_from_slice(&self.target);
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<InodeRecord> {
        let mut r = Reader::new(bytes, "inode record");
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(r.bad(format!("unknown record version {version}")));
        }
        let rec = Self::decode_body(&mut r)?;
        r.finish()?;
        Ok(rec)
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<InodeRecord> {
        let kind_tag = r.u8()?;
        let kind = FileKind::from_tag(kind_tag)
            .ok_or_else(|| r.bad(format!("unknown file kind {kind_tag}")))?;
        let perm = r.u16()?;
        if perm & !0o7777 != 0 {
            return Err(r.bad(format!("mode bits {perm:o} outside 0o7777")));
        }
        let nlink = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let rdev = r.u32()?;
        let size = r.u64()?;
        let atime = r.time()?;
        let mtime = r.time()?;
        let ctime = r.time()?;
        let generation = Generation(r.u64()?);
        let parent = r.u64()?;
        let next_cookie = r.u64()?;
        let content = match r.u8()? {
            0 => Content::Empty,
            1 => {
                let file = FileId(r.array::<32>()?);
                let key = r.array::<32>()?;
                let offset = r.u64()?;
                let len = r.u64()?;
                Content::Stored {
                    file,
                    key,
                    offset,
                    len,
                }
            }
            other => return Err(r.bad(format!("unknown content tag {other}"))),
        };
        let target_len = r.u32()?;
        if u64::from(target_len) > SYMLINK_MAX as u64 {
            return Err(r.bad(format!("symlink target of {target_len} bytes")));
        }
        let target = r.bytes(target_len as usize)?.to_vec();
        if kind != FileKind::Symlink && !target.is_empty() {
            return Err(r.bad("a target on a non-symlink".into()));
        }
        if let Err(reason) = super::types::check_rdev(kind, rdev) {
            return Err(r.bad(format!("{reason} ({kind:?}, rdev {rdev:#x})")));
        }
        Ok(InodeRecord {
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev,
            size,
            atime,
            mtime,
            ctime,
            generation,
            parent,
            next_cookie,
            content,
            target,
        })
    }
}

pub(crate) fn put_u16(w: &mut Vec<u8>, v: u16) {
    w.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_time(w: &mut Vec<u8>, t: Timestamp) {
    w.extend_from_slice(&t.secs.to_le_bytes());
    w.extend_from_slice(&t.nanos.to_le_bytes());
}

/// A bounds-checked little-endian reader over a byte slice.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader {
            bytes,
            pos: 0,
            what,
        }
    }

    pub(crate) fn bad(&self, reason: String) -> Error {
        Error::Corrupt {
            what: self.what,
            reason: format!("{reason} (at byte {})", self.pos),
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.bad(format!("truncated: {n} more bytes needed")))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn time(&mut self) -> Result<Timestamp> {
        let secs = i64::from_le_bytes(self.array()?);
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(self.bad(format!("nanoseconds {nanos} out of range")));
        }
        Ok(Timestamp { secs, nanos })
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.pos != self.bytes.len() {
            return Err(self.bad(format!("{} trailing bytes", self.bytes.len() - self.pos)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_rejects_every_truncation() {
        let mut rec = InodeRecord::new(
            FileKind::Symlink,
            &NewInode {
                perm: 0o777,
                uid: 5,
                gid: 6,
            },
            Timestamp::new(-3, 999_999_999),
            None,
        );
        rec.target = b"../x/y".to_vec();
        rec.size = 6;
        rec.content = Content::Stored {
            file: FileId([7; 32]),
            key: [9; 32],
            offset: 10,
            len: 20,
        };
        let bytes = rec.encode();
        assert_eq!(InodeRecord::decode(&bytes).unwrap(), rec);
        for n in 0..bytes.len() {
            assert!(InodeRecord::decode(&bytes[..n]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(InodeRecord::decode(&long).is_err());
    }
}
