//! A subtree's view: the namespace below one directory as a snapshot stream of its own (the
//! format of [`MetaDb::write_snapshot`], checked by the same restore), with that directory as
//! the root. A share hands the recipient this view (`crate::share`), so it holds nothing from
//! outside the subtree: no inode, name or xattr, and no content key of an object that also
//! holds bytes of other files (the caller maps such contents to copies of their own first).
//!
//! Inode numbers are kept, except the subtree's directory, which becomes
//! [`InodeNo::ROOT`]; a hard-linked file's link count is its names inside the subtree. The walk
//! is a loop over a queue, never recursion; memory is proportional to the subtree.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;

/// One xattr of the subtree: (inode, name) → value.
type Xattr = ((u64, Vec<u8>), Vec<u8>);

use super::{HashWriter, SnapshotStats, TAG_INODE, published_size};
use crate::error::{Error, Result};
use crate::meta::MetaDb;
use crate::meta::schema::{DIRENTS, DbContext, INODES, JOURNAL, KEY_NEXT_INO, META, XATTRS};
use crate::namespace::record::{InodeRecord, put_u64};
use crate::namespace::types::{Content, FileKind};
use crate::types::InodeNo;

/// One directory entry of the subtree: (parent, name) → (child, kind, cookie).
type Dirent = ((u64, Vec<u8>), (u64, u8, u64));

/// The subtree below `root`, read in one transaction.
struct Subtree {
    next_ino: u64,
    /// Inodes by their number in the view (the subtree's root is 1).
    inodes: BTreeMap<u64, InodeRecord>,
    dirents: Vec<Dirent>,
    xattrs: Vec<Xattr>,
}

impl MetaDb {
    /// The distinct stored contents of the files below directory `root` (as they are
    /// published: a dirty file's last stored content), for the caller to decide which need a
    /// copy of their own before [`MetaDb::write_view`].
    ///
    /// # Errors
    /// `NotADirectory` when `root` is not a directory; `NotFound`; Db; Corrupt.
    pub fn view_contents(&self, root: InodeNo) -> Result<Vec<Content>> {
        let tree = self.subtree(root)?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for rec in tree.inodes.values() {
            if let Content::Stored {
                file, offset, len, ..
            } = rec.content
                && seen.insert((file, offset, len))
            {
                out.push(rec.content.clone());
            }
        }
        Ok(out)
    }

    /// Writes the view of the subtree below directory `root` to `w`, each stored content
    /// passed through `content` (which may name a copy of its own instead).
    ///
    /// # Errors
    /// As [`MetaDb::view_contents`]; whatever `content` returns; Io (the writer).
    pub fn write_view(
        &self,
        root: InodeNo,
        w: impl Write,
        content: &dyn Fn(&Content) -> Result<Content>,
    ) -> Result<SnapshotStats> {
        let tree = self.subtree(root)?;
        let mut out = HashWriter {
            inner: w,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        let mut stats = SnapshotStats::default();
        out.header(tree.next_ino)?;
        let mut buf = Vec::new();
        for (ino, rec) in &tree.inodes {
            let mut rec = rec.clone();
            if matches!(rec.content, Content::Stored { .. }) {
                rec.content = content(&rec.content)?;
            }
            buf.clear();
            put_u64(&mut buf, *ino);
            rec.encode_body(&mut buf);
            out.record(TAG_INODE, &buf)?;
            stats.inodes += 1;
        }
        for ((parent, name), value) in &tree.dirents {
            out.dirent(&mut buf, (*parent, name), *value)?;
            stats.dirents += 1;
        }
        for ((ino, name), value) in &tree.xattrs {
            out.xattr(&mut buf, *ino, name, value)?;
            stats.xattrs += 1;
        }
        out.finish(stats)
    }

    fn subtree(&self, root: InodeNo) -> Result<Subtree> {
        self.flush_deferred()?;
        let view_ino = |ino: u64| if ino == root.0 { InodeNo::ROOT.0 } else { ino };
        self.read(|txn| {
            let next_ino = txn
                .open_table(META)
                .ctx("opening meta")?
                .get(KEY_NEXT_INO)
                .ctx("reading next_ino")?
                .map_or(0, |v| v.value());
            let inodes = txn.open_table(INODES).ctx("opening inodes")?;
            let dirents = txn.open_table(DIRENTS).ctx("opening dirents")?;
            let xattrs = txn.open_table(XATTRS).ctx("opening xattrs")?;
            let journal = txn.open_table(JOURNAL).ctx("opening journal")?;
            let read_inode =
                |ino: u64| -> Result<InodeRecord> {
                    let v = inodes.get(ino).ctx("reading an inode")?.ok_or_else(|| {
                        Error::NotFound {
                            what: format!("inode {ino}"),
                        }
                    })?;
                    InodeRecord::decode(v.value())
                };
            let top = read_inode(root.0)?;
            if top.kind != FileKind::Directory {
                return Err(Error::NotADirectory { ino: root.0 });
            }
            let mut tree = Subtree {
                next_ino,
                inodes: BTreeMap::new(),
                dirents: Vec::new(),
                xattrs: Vec::new(),
            };
            let mut names: BTreeMap<u64, u32> = BTreeMap::new();
            let mut queue = VecDeque::from([root.0]);
            let mut dirs = vec![root.0];
            while let Some(dir) = queue.pop_front() {
                for item in dirents
                    .range((dir, &[][..])..(dir + 1, &[][..]))
                    .ctx("listing a directory")?
                {
                    let (k, v) = item.ctx("listing a directory")?;
                    let (child, kind, cookie) = v.value();
                    let name = k.value().1.to_vec();
                    if kind == FileKind::Directory.tag() {
                        queue.push_back(child);
                        dirs.push(child);
                    }
                    *names.entry(child).or_default() += 1;
                    tree.dirents
                        .push(((view_ino(dir), name), (view_ino(child), kind, cookie)));
                }
            }
            let mut members: BTreeSet<u64> = names.keys().copied().collect();
            members.extend(dirs.iter().copied());
            for ino in members {
                let mut rec = read_inode(ino)?;
                if rec.kind == FileKind::Directory {
                    rec.parent = view_ino(rec.parent);
                    if ino == root.0 {
                        rec.parent = InodeNo::ROOT.0;
                    }
                } else {
                    rec.nlink = names.get(&ino).copied().unwrap_or(1);
                    if rec.kind == FileKind::RegularFile
                        && journal.get(ino).ctx("reading journal")?.is_some()
                    {
                        rec.size = published_size(&rec.content);
                    }
                }
                for item in xattrs
                    .range((ino, &[][..])..(ino + 1, &[][..]))
                    .ctx("listing xattrs")?
                {
                    let (k, v) = item.ctx("listing xattrs")?;
                    tree.xattrs
                        .push(((view_ino(ino), k.value().1.to_vec()), v.value().to_vec()));
                }
                tree.inodes.insert(view_ino(ino), rec);
            }
            tree.dirents.sort_by(|a, b| a.0.cmp(&b.0));
            tree.xattrs.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(tree)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::MetaDb;
    use crate::error::Error;
    use crate::namespace::{Content, NewInode, Timestamp, XattrMode};
    use crate::testutil::check_invariants;
    use crate::types::{FileId, InodeNo};

    const O: NewInode = NewInode {
        perm: 0o640,
        uid: 3,
        gid: 4,
    };

    fn stored(db: &MetaDb, ino: InodeNo, n: u8) {
        let t = Timestamp::new(5, 0);
        let g = db.mark_dirty(ino, t).unwrap();
        db.begin_upload(ino).unwrap();
        let content = Content::Stored {
            file: FileId([n; 32]),
            key: [n; 32],
            offset: 0,
            len: 10,
        };
        db.finish_upload(ino, g, content).unwrap();
    }

    #[test]
    fn a_view_holds_the_subtree_only_with_its_directory_as_root() {
        let t = Timestamp::new(1, 0);
        let a = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(a.path(), None).unwrap();
        let outside = db.create(InodeNo::ROOT, b"secret", &O, true, t).unwrap().0;
        stored(&db, outside.ino, 1);
        db.set_xattr(outside.ino, b"user.s", b"no", XattrMode::Any, t)
            .unwrap();
        let shared = db.mkdir(InodeNo::ROOT, b"shared", &O, t).unwrap();
        let sub = db.mkdir(shared.ino, b"sub", &O, t).unwrap();
        let f = db.create(sub.ino, b"f", &O, true, t).unwrap().0;
        stored(&db, f.ino, 2);
        db.set_xattr(f.ino, b"user.k", b"v", XattrMode::Any, t)
            .unwrap();
        // A hard link with one name inside and one outside: one link in the view.
        db.link(f.ino, InodeNo::ROOT, b"f-outside", t).unwrap();
        db.symlink(shared.ino, b"l", b"../secret", &O, t).unwrap();

        assert_eq!(
            db.view_contents(shared.ino).unwrap(),
            vec![Content::Stored {
                file: FileId([2; 32]),
                key: [2; 32],
                offset: 0,
                len: 10
            }]
        );
        let mut bytes = Vec::new();
        let stats = db
            .write_view(shared.ino, &mut bytes, &|c| Ok(c.clone()))
            .unwrap();
        assert_eq!(stats.bytes, bytes.len() as u64);
        assert_eq!((stats.inodes, stats.dirents, stats.xattrs), (4, 3, 1));
        let b = tempfile::tempdir().unwrap();
        let view = MetaDb::open_with(b.path(), None).unwrap();
        view.restore_snapshot(bytes.as_slice()).unwrap();
        check_invariants(&view).unwrap();
        let sub2 = view.lookup(InodeNo::ROOT, b"sub").unwrap();
        assert_eq!(sub2.ino, sub.ino);
        let f2 = view.lookup(sub2.ino, b"f").unwrap();
        assert_eq!((f2.ino, f2.nlink), (f.ino, 1));
        assert_eq!(db.getattr(f.ino).unwrap().nlink, 2);
        assert_eq!(view.get_xattr(f2.ino, b"user.k").unwrap(), b"v");
        assert!(view.lookup(InodeNo::ROOT, b"secret").is_err());
        assert!(view.getattr(outside.ino).is_err());
        assert_eq!(
            view.readlink(view.lookup(InodeNo::ROOT, b"l").unwrap().ino)
                .unwrap(),
            b"../secret"
        );
        // A substitute content is what the view names.
        let copy = Content::Stored {
            file: FileId([9; 32]),
            key: [9; 32],
            offset: 0,
            len: 10,
        };
        let mut bytes = Vec::new();
        db.write_view(shared.ino, &mut bytes, &|_| Ok(copy.clone()))
            .unwrap();
        view.restore_snapshot(bytes.as_slice()).unwrap();
        assert_eq!(view.content(f.ino).unwrap(), copy);
        // Not a directory; not there.
        assert!(matches!(
            db.write_view(f.ino, Vec::new(), &|c| Ok(c.clone())),
            Err(Error::NotADirectory { .. })
        ));
        assert!(db.view_contents(InodeNo(9999)).is_err());
    }

    #[test]
    fn a_view_of_the_root_is_the_whole_published_namespace() {
        let t = Timestamp::new(1, 0);
        let a = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(a.path(), None).unwrap();
        let d = db.mkdir(InodeNo::ROOT, b"d", &O, t).unwrap();
        let f = db.create(d.ino, b"f", &O, true, t).unwrap().0;
        stored(&db, f.ino, 3);
        let mut whole = Vec::new();
        db.write_snapshot(&mut whole).unwrap();
        let mut view = Vec::new();
        db.write_view(InodeNo::ROOT, &mut view, &|c| Ok(c.clone()))
            .unwrap();
        assert_eq!(view, whole);
    }
}
