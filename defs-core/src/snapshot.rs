//! Namespace snapshots: the whole namespace (inodes with their content references, directory
//! entries with their cookies, xattrs) as one byte stream that the pipeline can store like a
//! file, and the restore of a namespace from it. The cache and the dirty journal are not part of
//! it. Byte layout in docs/format.md ("Namespace snapshot").
//!
//! Writing streams from one read transaction to a [`Write`]; restoring streams from a [`Read`]
//! into one write transaction that is committed only after every record and every cross-record
//! invariant has been checked and the trailing BLAKE3 hash matches. Every length is checked
//! against a limit before anything is allocated; nothing recurses.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use redb::ReadableTable;

use crate::error::{Error, Result};
use crate::meta::MetaDb;
use crate::meta::schema::{
    COOKIES, DIRENTS, DbContext, INODES, JOURNAL, KEY_LSN, KEY_NEXT_INO, META, ORPHANS, XATTRS,
};
use crate::namespace::record::{InodeRecord, Reader, put_u32, put_u64};
use crate::namespace::types::{
    Content, FileKind, NAME_MAX, XATTR_NAME_MAX, XATTR_SIZE_MAX, check_name,
};
use crate::types::InodeNo;

/// The first 8 bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"DEFSNS\x00\x01";
/// The format version this build writes. Version 2 may hold inode kinds 5-7 (device nodes and
/// sockets); the layout is version 1's, so this build reads both.
pub const SNAPSHOT_VERSION: u32 = 2;
/// The oldest format version this build reads.
pub const OLDEST_SNAPSHOT_VERSION: u32 = 1;
/// The largest record payload: an xattr with the largest value and name plus its framing. Any
/// larger length in a stream is corruption.
pub const MAX_RECORD_LEN: u32 = (XATTR_SIZE_MAX + XATTR_NAME_MAX + 64) as u32;

const TAG_INODE: u8 = 1;
const TAG_DIRENT: u8 = 2;
const TAG_XATTR: u8 = 3;
const TAG_END: u8 = 0xFF;

/// What a snapshot held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Inodes (orphans are never included).
    pub inodes: u64,
    /// Directory entries.
    pub dirents: u64,
    /// Extended attributes.
    pub xattrs: u64,
    /// Bytes of the whole stream.
    pub bytes: u64,
    /// The stream's last 32 bytes: BLAKE3 of every byte before them. A root record names a
    /// snapshot by it (with its length), so a reader can check the object it fetched.
    pub trailer: [u8; 32],
}

fn io_err(e: std::io::Error) -> Error {
    Error::io("namespace snapshot stream", e)
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Corrupt {
        what: "namespace snapshot",
        reason: reason.into(),
    }
}

/// A writer that hashes and counts what passes through.
struct HashWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        self.inner.write_all(data).map_err(io_err)
    }

    /// The stream's header: magic, version, `next_ino`.
    fn header(&mut self, next_ino: u64) -> Result<()> {
        let mut head = SNAPSHOT_MAGIC.to_vec();
        put_u32(&mut head, SNAPSHOT_VERSION);
        put_u64(&mut head, next_ino);
        self.put(&head)
    }

    /// A dirent record: (parent, name) → (child, kind, cookie).
    fn dirent(
        &mut self,
        buf: &mut Vec<u8>,
        (parent, name): (u64, &[u8]),
        (child, kind, cookie): (u64, u8, u64),
    ) -> Result<()> {
        buf.clear();
        put_u64(buf, parent);
        // Names are at most NAME_MAX (255) bytes: checked on every insert.
        buf.push(u8::try_from(name.len()).map_err(|_| bad("name over 255 bytes"))?);
        buf.extend_from_slice(name);
        put_u64(buf, child);
        buf.push(kind);
        put_u64(buf, cookie);
        self.record(TAG_DIRENT, buf)
    }

    /// An xattr record.
    fn xattr(&mut self, buf: &mut Vec<u8>, ino: u64, name: &[u8], value: &[u8]) -> Result<()> {
        buf.clear();
        put_u64(buf, ino);
        buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
        buf.extend_from_slice(name);
        put_u32(buf, value.len() as u32);
        buf.extend_from_slice(value);
        self.record(TAG_XATTR, buf)
    }

    /// The end record with `stats`' counts, then the hash; returns `stats` with the stream's
    /// length and trailer.
    fn finish(mut self, mut stats: SnapshotStats) -> Result<SnapshotStats> {
        let mut buf = Vec::with_capacity(24);
        put_u64(&mut buf, stats.inodes);
        put_u64(&mut buf, stats.dirents);
        put_u64(&mut buf, stats.xattrs);
        self.record(TAG_END, &buf)?;
        let hash = self.hasher.finalize();
        self.inner.write_all(hash.as_bytes()).map_err(io_err)?;
        self.inner.flush().map_err(io_err)?;
        stats.bytes = self.bytes + 32;
        stats.trailer = *hash.as_bytes();
        Ok(stats)
    }

    fn record(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD_LEN)
            .ok_or(Error::TooLarge {
                what: "namespace snapshot record",
                size: payload.len() as u64,
                limit: u64::from(MAX_RECORD_LEN),
            })?;
        let mut head = [0u8; 5];
        head[0] = tag;
        head[1..].copy_from_slice(&len.to_le_bytes());
        self.put(&head)?;
        self.put(payload)
    }
}

/// A reader that hashes what it returns.
struct HashReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<R: Read> HashReader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bad("truncated")
            } else {
                io_err(e)
            }
        })?;
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// One framed record: (tag, payload).
    fn record(&mut self, buf: &mut Vec<u8>) -> Result<u8> {
        let mut head = [0u8; 5];
        self.exact(&mut head)?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_RECORD_LEN {
            return Err(bad(format!(
                "record of {len} bytes (limit {MAX_RECORD_LEN})"
            )));
        }
        buf.clear();
        buf.resize(len as usize, 0);
        self.exact(buf)?;
        Ok(head[0])
    }
}

/// Per-inode facts restore keeps to check the whole namespace at the end.
struct Seen {
    kind: FileKind,
    nlink: u32,
    size: u64,
    parent: u64,
    next_cookie: u64,
    links: u32,
    entries: u64,
    subdirs: u32,
}

impl MetaDb {
    /// Writes the whole namespace (not the cache, not the journal, no orphans) to `w`, from one
    /// consistent read transaction, as it is *published*: a dirty file (one in the journal)
    /// shows its last stored content and that content's length (0 when it has none), never a
    /// size whose bytes are only in this machine's cache. A namespace restored from it
    /// therefore names only bytes that are on the network (docs/namespace-publishing.md, D3).
    ///
    /// # Errors
    /// Io (the writer), Db, Corrupt.
    pub fn write_snapshot(&self, w: impl Write) -> Result<SnapshotStats> {
        self.write_snapshot_cut(w).map(|(stats, _)| stats)
    }

    /// [`MetaDb::write_snapshot`], also returning the LSN of the state written: every operation
    /// up to it is in the snapshot, none after it.
    pub(crate) fn write_snapshot_cut(&self, w: impl Write) -> Result<(SnapshotStats, u64)> {
        let mut out = HashWriter {
            inner: w,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        let mut stats = SnapshotStats::default();
        let mut lsn = 0;
        // One read transaction sees the whole namespace only once deferred changes are in it.
        self.flush_deferred()?;
        self.read(|txn| {
            let meta = txn.open_table(META).ctx("opening meta")?;
            let next_ino = meta
                .get(KEY_NEXT_INO)
                .ctx("reading next_ino")?
                .map_or(0, |v| v.value());
            lsn = meta
                .get(KEY_LSN)
                .ctx("reading lsn")?
                .map_or(0, |v| v.value());
            out.header(next_ino)?;
            let orphans = txn.open_table(ORPHANS).ctx("opening orphans")?;
            let journal = txn.open_table(JOURNAL).ctx("opening journal")?;
            let mut buf = Vec::new();
            for item in txn
                .open_table(INODES)
                .ctx("opening inodes")?
                .iter()
                .ctx("listing inodes")?
            {
                let (k, v) = item.ctx("listing inodes")?;
                if orphans.get(k.value()).ctx("reading orphans")?.is_some() {
                    continue;
                }
                let mut rec = InodeRecord::decode(v.value())?;
                if rec.kind == FileKind::RegularFile
                    && journal.get(k.value()).ctx("reading journal")?.is_some()
                {
                    rec.size = published_size(&rec.content);
                }
                buf.clear();
                put_u64(&mut buf, k.value());
                rec.encode_body(&mut buf);
                out.record(TAG_INODE, &buf)?;
                stats.inodes += 1;
            }
            for item in txn
                .open_table(DIRENTS)
                .ctx("opening dirents")?
                .iter()
                .ctx("listing dirents")?
            {
                let (k, v) = item.ctx("listing dirents")?;
                let (parent, name) = k.value();
                out.dirent(&mut buf, (parent, name), v.value())?;
                stats.dirents += 1;
            }
            for item in txn
                .open_table(XATTRS)
                .ctx("opening xattrs")?
                .iter()
                .ctx("listing xattrs")?
            {
                let (k, v) = item.ctx("listing xattrs")?;
                let (ino, name) = k.value();
                if orphans.get(ino).ctx("reading orphans")?.is_some() {
                    continue;
                }
                out.xattr(&mut buf, ino, name, v.value())?;
                stats.xattrs += 1;
            }
            Ok(())
        })?;
        Ok((out.finish(stats)?, lsn))
    }

    /// Replaces the namespace with the one in snapshot `r`, atomically: on any error (a
    /// truncated, garbled or inconsistent snapshot, a failing reader) nothing changes. The
    /// result is durable when this returns. Refused while any inode is dirty or orphaned (their
    /// data or handles would be lost).
    ///
    /// # Errors
    /// Corrupt (the snapshot), Io (the reader), InvalidArgument (dirty or orphaned inodes),
    /// Db, NotDurable.
    pub fn restore_snapshot(&self, r: impl Read) -> Result<SnapshotStats> {
        self.restore_in_place(r, None)
    }

    /// [`MetaDb::restore_snapshot`] of the state root record `seq` names, recorded as that
    /// record's published state in the same transaction (a follower's apply: a crash leaves
    /// the old state or the new one with its seq, never the new one counted as a local change).
    ///
    /// # Errors
    /// As [`MetaDb::restore_snapshot`].
    pub(crate) fn restore_published(&self, r: impl Read, seq: u64) -> Result<SnapshotStats> {
        self.restore_in_place(r, Some(seq))
    }

    fn restore_in_place(&self, r: impl Read, published: Option<u64>) -> Result<SnapshotStats> {
        let stats = self.write_durable(published, |txn| {
            let busy = txn
                .open_table(JOURNAL)
                .ctx("opening journal")?
                .first()
                .ctx("reading journal")?
                .is_some()
                || txn
                    .open_table(ORPHANS)
                    .ctx("opening orphans")?
                    .first()
                    .ctx("reading orphans")?
                    .is_some();
            if busy {
                return Err(Error::InvalidArgument {
                    what: "restore over a namespace with dirty or orphaned inodes".into(),
                });
            }
            txn.open_table(INODES)
                .ctx("opening inodes")?
                .retain(|_, _| false)
                .ctx("clearing inodes")?;
            txn.open_table(DIRENTS)
                .ctx("opening dirents")?
                .retain(|_, _| false)
                .ctx("clearing dirents")?;
            txn.open_table(COOKIES)
                .ctx("opening cookies")?
                .retain(|_, _| false)
                .ctx("clearing cookies")?;
            txn.open_table(XATTRS)
                .ctx("opening xattrs")?
                .retain(|_, _| false)
                .ctx("clearing xattrs")?;
            let stats = load_snapshot(txn, r)?;
            crate::meta::live::rebuild_in(txn)?;
            crate::meta::ledger::reconcile_in(txn)?;
            // Under the writer lock: no create (deferred ones included) may take a number
            // from the reservation made for the namespace this replaces.
            self.forget_ino_reservation();
            Ok(stats)
        })?;
        self.sync()?;
        Ok(stats)
    }
}

/// The size the network can back for a file whose content is `content`: what that content
/// holds, or nothing.
pub(crate) fn published_size(content: &Content) -> u64 {
    match content {
        Content::Stored { len, .. } => *len,
        Content::Empty => 0,
    }
}

/// Opens a snapshot stream: reads and checks its header (magic, a version this build reads).
/// Returns the hashing reader positioned at the first record, and `next_ino`.
fn open_stream<R: Read>(r: R) -> Result<(HashReader<R>, u64)> {
    let mut input = HashReader {
        inner: r,
        hasher: blake3::Hasher::new(),
        bytes: 0,
    };
    let mut head = [0u8; 20];
    input.exact(&mut head)?;
    if head[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a namespace snapshot (bad magic)"));
    }
    let mut hr = Reader::new(&head[8..], "namespace snapshot");
    let version = hr.u32()?;
    if !(OLDEST_SNAPSHOT_VERSION..=SNAPSHOT_VERSION).contains(&version) {
        return Err(bad(format!(
            "format version {version}; this DeFS reads versions \
             {OLDEST_SNAPSHOT_VERSION} to {SNAPSHOT_VERSION}"
        )));
    }
    Ok((input, hr.u64()?))
}

fn load_snapshot(txn: &redb::WriteTransaction, r: impl Read) -> Result<SnapshotStats> {
    let (mut input, next_ino) = open_stream(r)?;
    let mut inodes = txn.open_table(INODES).ctx("opening inodes")?;
    let mut dirents = txn.open_table(DIRENTS).ctx("opening dirents")?;
    let mut cookies = txn.open_table(COOKIES).ctx("opening cookies")?;
    let mut xattrs = txn.open_table(XATTRS).ctx("opening xattrs")?;
    let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
    let mut stats = SnapshotStats::default();
    let mut buf = Vec::new();
    // Records come in sections (inodes, dirents, xattrs), each sorted by key: this is what makes
    // duplicate keys detectable without remembering every key.
    let mut section = TAG_INODE;
    let mut last_dirent: Option<(u64, Vec<u8>)> = None;
    let mut last_xattr: Option<(u64, Vec<u8>)> = None;
    loop {
        let tag = input.record(&mut buf)?;
        if tag != TAG_END && (tag < section || tag > TAG_XATTR) {
            return Err(bad(format!("record tag {tag} out of order")));
        }
        if tag != TAG_END {
            section = tag;
        }
        let mut p = Reader::new(&buf, "namespace snapshot");
        match tag {
            TAG_INODE => {
                let ino = p.u64()?;
                let rec = InodeRecord::decode_body(&mut p)?;
                p.finish()?;
                if ino == 0 || ino >= next_ino {
                    return Err(bad(format!("inode {ino} outside 1..{next_ino}")));
                }
                if seen.last_key_value().is_some_and(|(&l, _)| l >= ino) {
                    return Err(bad(format!("inode {ino} out of order")));
                }
                if rec.nlink == 0 {
                    return Err(bad(format!("inode {ino} has no links")));
                }
                if rec.kind == FileKind::Symlink && rec.size != rec.target.len() as u64 {
                    return Err(bad(format!(
                        "symlink {ino}: size is not the target's length"
                    )));
                }
                inodes
                    .insert(ino, rec.encode().as_slice())
                    .ctx("writing an inode")?;
                seen.insert(
                    ino,
                    Seen {
                        kind: rec.kind,
                        nlink: rec.nlink,
                        size: rec.size,
                        parent: rec.parent,
                        next_cookie: rec.next_cookie,
                        links: 0,
                        entries: 0,
                        subdirs: 0,
                    },
                );
                stats.inodes += 1;
            }
            TAG_DIRENT => {
                let parent = p.u64()?;
                let len = p.u8()? as usize;
                let name = p.bytes(len)?.to_vec();
                let child = p.u64()?;
                let kind = p.u8()?;
                let cookie = p.u64()?;
                p.finish()?;
                if len > NAME_MAX {
                    return Err(bad("name too long"));
                }
                check_name(&name).map_err(|e| bad(format!("dirent name: {e}")))?;
                let key = (parent, name);
                if last_dirent.as_ref().is_some_and(|l| *l >= key) {
                    return Err(bad("dirents out of order or duplicated"));
                }
                let (parent, name) = key;
                let c = seen
                    .get_mut(&child)
                    .ok_or_else(|| bad(format!("dirent names missing inode {child}")))?;
                if c.kind.tag() != kind {
                    return Err(bad(format!("dirent kind differs from inode {child}")));
                }
                c.links = c.links.saturating_add(1);
                let child_is_dir = c.kind == FileKind::Directory;
                let child_parent = c.parent;
                let pr = seen
                    .get_mut(&parent)
                    .filter(|s| s.kind == FileKind::Directory)
                    .ok_or_else(|| bad(format!("dirent in missing directory {parent}")))?;
                if cookie == 0 || cookie >= pr.next_cookie {
                    return Err(bad(format!("cookie {cookie} out of range")));
                }
                pr.entries += 1;
                if child_is_dir {
                    pr.subdirs = pr.subdirs.saturating_add(1);
                    if child_parent != parent {
                        return Err(bad(format!("directory {child}: parent pointer differs")));
                    }
                }
                dirents
                    .insert((parent, name.as_slice()), (child, kind, cookie))
                    .ctx("writing a dirent")?;
                if cookies
                    .insert((parent, cookie), name.as_slice())
                    .ctx("writing a cookie")?
                    .is_some()
                {
                    return Err(bad(format!("cookie {cookie} used twice in {parent}")));
                }
                last_dirent = Some((parent, name));
                stats.dirents += 1;
            }
            TAG_XATTR => {
                let ino = p.u64()?;
                let nlen = p.u16()? as usize;
                if nlen == 0 || nlen > XATTR_NAME_MAX {
                    return Err(bad(format!("xattr name of {nlen} bytes")));
                }
                let name = p.bytes(nlen)?.to_vec();
                let vlen = p.u32()? as usize;
                if vlen > XATTR_SIZE_MAX {
                    return Err(bad(format!("xattr value of {vlen} bytes")));
                }
                let value = p.bytes(vlen)?;
                p.finish()?;
                if !seen.contains_key(&ino) {
                    return Err(bad(format!("xattr of missing inode {ino}")));
                }
                let key = (ino, name);
                if last_xattr.as_ref().is_some_and(|l| *l >= key) {
                    return Err(bad("xattrs out of order or duplicated"));
                }
                xattrs
                    .insert((ino, key.1.as_slice()), value)
                    .ctx("writing an xattr")?;
                last_xattr = Some(key);
                stats.xattrs += 1;
            }
            TAG_END => {
                let counts = (p.u64()?, p.u64()?, p.u64()?);
                p.finish()?;
                if counts != (stats.inodes, stats.dirents, stats.xattrs) {
                    return Err(bad("record counts differ from the trailer"));
                }
                break;
            }
            other => return Err(bad(format!("unknown record tag {other}"))),
        }
    }
    let computed = input.hasher.finalize();
    let mut hash = [0u8; 32];
    input.exact(&mut hash)?;
    if computed.as_bytes() != &hash {
        return Err(bad("hash mismatch"));
    }
    let mut extra = [0u8; 1];
    match input.inner.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return Err(bad("bytes after the end")),
        Err(e) => return Err(io_err(e)),
    }
    check_tree(&seen)?;
    let mut meta = txn.open_table(META).ctx("opening meta")?;
    meta.insert(KEY_NEXT_INO, next_ino)
        .ctx("writing next_ino")?;
    stats.bytes = input.bytes;
    stats.trailer = hash;
    Ok(stats)
}

/// Link counts, directory sizes, one name per directory, and every directory reachable from the
/// root through parent pointers (no cycles).
fn check_tree(seen: &BTreeMap<u64, Seen>) -> Result<()> {
    let root = seen
        .get(&InodeNo::ROOT.0)
        .filter(|r| r.kind == FileKind::Directory)
        .ok_or_else(|| bad("no root directory"))?;
    if root.links != 0 || root.parent != InodeNo::ROOT.0 {
        return Err(bad("the root has a name or a parent"));
    }
    for (&ino, s) in seen {
        if s.kind == FileKind::Directory {
            if ino != InodeNo::ROOT.0 && s.links != 1 {
                return Err(bad(format!("directory {ino} has {} names", s.links)));
            }
            if s.size != s.entries || u64::from(s.nlink) != 2 + u64::from(s.subdirs) {
                return Err(bad(format!("directory {ino}: size or nlink wrong")));
            }
        } else if s.nlink != s.links {
            return Err(bad(format!(
                "inode {ino}: nlink {} but {} names",
                s.nlink, s.links
            )));
        }
    }
    // Walk up from each directory; `good` holds directories known to reach the root.
    let mut good = std::collections::BTreeSet::from([InodeNo::ROOT.0]);
    let limit = seen.len();
    for (&ino, s) in seen {
        if s.kind != FileKind::Directory {
            continue;
        }
        let mut path = Vec::new();
        let mut cur = ino;
        while !good.contains(&cur) {
            if path.len() > limit {
                return Err(bad(format!("directory {ino} is in a cycle")));
            }
            path.push(cur);
            cur = seen.get(&cur).map(|s| s.parent).unwrap_or(0);
        }
        good.extend(path);
    }
    Ok(())
}

pub mod segment;
mod view;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::{Content, NewInode, SetAttr, Timestamp, XattrMode};
    use crate::testutil::{check_invariants, dump, dump_published, rewrite};
    use crate::types::FileId;

    const O: NewInode = NewInode {
        perm: 0o640,
        uid: 3,
        gid: 4,
    };

    fn big_namespace(db: &MetaDb) {
        let t = |i: u64| Timestamp::new(1_600_000_000 + i as i64, (i * 13) as u32);
        let mut dirs = vec![InodeNo::ROOT];
        for i in 0..100u64 {
            let parent = dirs[(i as usize * 7) % dirs.len()];
            dirs.push(
                db.mkdir(parent, format!("d{i}").as_bytes(), &O, t(i))
                    .unwrap()
                    .ino,
            );
        }
        let mut n = 0u64;
        while n < 10_000 {
            let parent = dirs[(n as usize) % dirs.len()];
            let name = format!("file-{n}-{}", "x".repeat((n % 200) as usize));
            match n % 10 {
                0 => {
                    db.symlink(
                        parent,
                        name.as_bytes(),
                        format!("../t/{n}").as_bytes(),
                        &O,
                        t(n),
                    )
                    .unwrap();
                }
                1 => {
                    let target = db.lookup(dirs[1], b"link-target").or_else(|_| {
                        db.create(dirs[1], b"link-target", &O, true, t(n))
                            .map(|a| a.0)
                    });
                    db.link(target.unwrap().ino, parent, name.as_bytes(), t(n))
                        .unwrap();
                }
                2 => {
                    let (kind, rdev) = match n % 40 {
                        2 => (FileKind::Fifo, 0),
                        12 => (FileKind::CharDevice, n as u32),
                        22 => (FileKind::BlockDevice, u32::MAX - n as u32),
                        _ => (FileKind::Socket, 0),
                    };
                    db.mknod(parent, name.as_bytes(), kind, rdev, &O, t(n))
                        .unwrap();
                }
                _ => {
                    let (a, _) = db.create(parent, name.as_bytes(), &O, true, t(n)).unwrap();
                    let set = SetAttr {
                        size: Some(n),
                        mtime: Some(t(n + 1)),
                        ..SetAttr::default()
                    };
                    db.setattr(a.ino, &set, t(n + 2)).unwrap();
                    if n.is_multiple_of(3) {
                        db.set_xattr(a.ino, b"user.n", &n.to_le_bytes(), XattrMode::Any, t(n))
                            .unwrap();
                    }
                    if n.is_multiple_of(7) {
                        let g = db.mark_dirty(a.ino, t(n)).unwrap();
                        db.begin_upload(a.ino).unwrap();
                        let content = Content::Stored {
                            file: FileId([n as u8; 32]),
                            key: [7; 32],
                            offset: n,
                            len: n,
                        };
                        db.finish_upload(a.ino, g, content).unwrap();
                    }
                }
            }
            n += 1;
        }
    }

    #[test]
    fn snapshot_round_trips_a_namespace_of_10000_entries() {
        let a = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(a.path(), None).unwrap();
        big_namespace(&db);
        let mut bytes = Vec::new();
        let stats = db.write_snapshot(&mut bytes).unwrap();
        assert_eq!(stats.bytes, bytes.len() as u64);
        assert!(stats.dirents > 10_000, "{stats:?}");
        let b = tempfile::tempdir().unwrap();
        let restored = MetaDb::open_with(b.path(), None).unwrap();
        let got = restored.restore_snapshot(bytes.as_slice()).unwrap();
        assert_eq!(
            (got.inodes, got.dirents, got.xattrs),
            (stats.inodes, stats.dirents, stats.xattrs)
        );
        check_invariants(&restored).unwrap();
        assert_eq!(dump_published(&restored), dump_published(&db));
    }

    #[test]
    fn truncated_or_garbled_snapshots_are_errors_and_change_nothing() {
        let a = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(a.path(), None).unwrap();
        let t = Timestamp::new(1, 0);
        let d = db.mkdir(InodeNo::ROOT, b"d", &O, t).unwrap();
        let (f, _) = db.create(d.ino, b"f", &O, true, t).unwrap();
        db.link(f.ino, InodeNo::ROOT, b"g", t).unwrap();
        db.symlink(d.ino, b"s", b"f", &O, t).unwrap();
        db.set_xattr(f.ino, b"user.a", b"v", XattrMode::Any, t)
            .unwrap();
        let mut bytes = Vec::new();
        db.write_snapshot(&mut bytes).unwrap();

        let b = tempfile::tempdir().unwrap();
        let target = MetaDb::open_with(b.path(), None).unwrap();
        target.mkdir(InodeNo::ROOT, b"keep", &O, t).unwrap();
        let before = dump(&target);
        for n in 0..bytes.len() {
            assert!(
                target.restore_snapshot(&bytes[..n]).is_err(),
                "truncated at {n}"
            );
        }
        let mut x = 0x1234_5678_u64;
        for i in 0..bytes.len() {
            let mut g = bytes.clone();
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            g[i] ^= 1 << (x >> 61);
            assert!(
                target.restore_snapshot(g.as_slice()).is_err(),
                "flip at {i}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(target.restore_snapshot(longer.as_slice()).is_err());
        for len in [0usize, 1, 7, 100, 5000] {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            assert!(target.restore_snapshot(garbage.as_slice()).is_err());
        }
        assert_eq!(dump(&target), before);
        target.restore_snapshot(bytes.as_slice()).unwrap();
        assert_eq!(dump_published(&target), dump_published(&db));
    }

    /// Records that are well-framed and correctly hashed but describe a broken tree are refused
    /// by the structural checks (the hash cannot catch a hostile writer).
    #[test]
    fn a_consistently_hashed_but_inconsistent_snapshot_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(a.path(), None).unwrap();
        let t = Timestamp::new(1, 0);
        db.create(InodeNo::ROOT, b"f", &O, true, t).unwrap();
        let mut bytes = Vec::new();
        db.write_snapshot(&mut bytes).unwrap();
        // Drop the dirent record (tag 2) and re-hash: the file's nlink no longer matches.
        let out = rewrite(&bytes, |rec| {
            if rec[0] == TAG_END {
                let mut end = rec.to_vec();
                end[5 + 8..5 + 16].copy_from_slice(&0u64.to_le_bytes());
                Some(end)
            } else {
                (rec[0] != TAG_DIRENT).then(|| rec.to_vec())
            }
        });
        let b = tempfile::tempdir().unwrap();
        let target = MetaDb::open_with(b.path(), None).unwrap();
        let err = target.restore_snapshot(out.as_slice()).unwrap_err();
        assert!(err.to_string().contains("nlink"), "{err}");
    }

    #[test]
    fn a_version_1_snapshot_restores_and_device_nodes_round_trip() {
        let a = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(a.path(), None).unwrap();
        let t = Timestamp::new(1, 0);
        let (f, _) = db.create(InodeNo::ROOT, b"f", &O, true, t).unwrap();
        db.mknod(InodeNo::ROOT, b"p", FileKind::Fifo, 0, &O, t)
            .unwrap();
        let mut v1 = Vec::new();
        db.write_snapshot(&mut v1).unwrap();
        assert_eq!(v1[8..12], SNAPSHOT_VERSION.to_le_bytes());
        // What a version-1 build wrote for the same namespace: only the version differs.
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let v1 = rewrite(&v1, |rec| Some(rec.to_vec()));
        let b = tempfile::tempdir().unwrap();
        let restored = MetaDb::open_with(b.path(), None).unwrap();
        restored.restore_snapshot(v1.as_slice()).unwrap();
        assert_eq!(dump_published(&restored), dump_published(&db));
        assert_eq!(restored.getattr(f.ino).unwrap(), f);

        for (name, kind, rdev) in [
            (&b"null"[..], FileKind::CharDevice, 0x0103),
            (b"sda", FileKind::BlockDevice, 0x0800),
            (b"whiteout", FileKind::CharDevice, 0),
            (b"S.gpg-agent", FileKind::Socket, 0),
        ] {
            db.mknod(InodeNo::ROOT, name, kind, rdev, &O, t).unwrap();
        }
        let mut v2 = Vec::new();
        db.write_snapshot(&mut v2).unwrap();
        let c = tempfile::tempdir().unwrap();
        let restored = MetaDb::open_with(c.path(), None).unwrap();
        restored.restore_snapshot(v2.as_slice()).unwrap();
        check_invariants(&restored).unwrap();
        assert_eq!(dump_published(&restored), dump_published(&db));
        let null = restored.lookup(InodeNo::ROOT, b"null").unwrap();
        assert_eq!((null.kind, null.rdev), (FileKind::CharDevice, 0x0103));

        let newer = {
            let mut b = v2.clone();
            b[8..12].copy_from_slice(&(SNAPSHOT_VERSION + 1).to_le_bytes());
            rewrite(&b, |rec| Some(rec.to_vec()))
        };
        let err = restored.restore_snapshot(newer.as_slice()).unwrap_err();
        assert!(err.to_string().contains("format version 3"), "{err}");
    }

    /// A hostile or broken writer's socket or fifo with a device number, or a device node with
    /// file type bits in its mode: refused when read, with the reason, and the target DB is
    /// unchanged.
    #[test]
    fn a_snapshot_with_an_impossible_device_or_socket_record_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(a.path(), None).unwrap();
        let t = Timestamp::new(1, 0);
        let sock = db
            .mknod(InodeNo::ROOT, b"sock", FileKind::Socket, 0, &O, t)
            .unwrap();
        let dev = db
            .mknod(InodeNo::ROOT, b"dev", FileKind::BlockDevice, 0x0801, &O, t)
            .unwrap();
        let mut bytes = Vec::new();
        db.write_snapshot(&mut bytes).unwrap();
        let b = tempfile::tempdir().unwrap();
        let target = MetaDb::open_with(b.path(), None).unwrap();
        target.mkdir(InodeNo::ROOT, b"keep", &O, t).unwrap();
        let before = dump(&target);
        // Inode record payload: ino u64, kind u8, perm u16, nlink, uid, gid, rdev (u32 each),
        // size u64; in the framed record 5 bytes further.
        let patch = |ino: InodeNo, at: usize, value: &[u8]| {
            rewrite(&bytes, |rec| {
                let mut rec = rec.to_vec();
                if rec[0] == TAG_INODE && rec[5..13] == ino.0.to_le_bytes() {
                    rec[5 + at..5 + at + value.len()].copy_from_slice(value);
                }
                Some(rec)
            })
        };
        for (bad, why) in [
            (
                patch(sock.ino, 23, &0x0103u32.to_le_bytes()),
                "device number on an inode that is not a device node",
            ),
            // The device's kind byte made a fifo's: a fifo with a device number.
            (
                patch(dev.ino, 8, &[FileKind::Fifo.tag()]),
                "device number on an inode that is not a device node",
            ),
            (patch(sock.ino, 9, &0o170_000u16.to_le_bytes()), "mode bits"),
        ] {
            let err = target.restore_snapshot(bad.as_slice()).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(why), "{err}");
            assert_eq!(dump(&target), before);
        }
    }
}
