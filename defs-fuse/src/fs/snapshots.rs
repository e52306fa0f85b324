//! `/.snapshots`: the kept versions of the tree, read-only. This module owns the reserved name,
//! the inode numbers of the versions, restoring a version's DB on first lookup, and answering
//! lookups, attributes, listings, symlinks, xattrs and file contents from that DB
//! (`docs/SEMANTICS.md` "Past versions", `docs/namespace-publishing.md` §6).
//!
//! ```text
//!  lookup(ROOT, ".snapshots") ── no real entry of that name ──▶ SNAPDIR (slot 0)
//!  readdir(SNAPDIR) ◀── DIR/meta/versions.list (the publisher and recovery keep it)
//!  lookup(SNAPDIR, "2026-12-07T145300Z") ──▶ slot s ──▶ versions::restore (first time) ──▶
//!        DIR/meta/versions/<seq>/meta.redb, opened ──▶ its root as 1<<63 | s<<40 | 1
//!  every other op on 1<<63 | s<<40 | i ──▶ that DB's inode i; contents through the same
//!        Objects and cache as the live tree, from that version's manifests
//! ```
//!
//! Inode numbers: bit 63 set, the slot in bits 40..48, the version's own inode number below
//! (live inode numbers are allocated from 1 upwards and never come near bit 40). A slot is
//! given to a version the first time it is listed and stays its own while it is kept; a slot
//! is used again only after all 255 have been given out, and the cache entries of a reused
//! inode number are checked against the content they hold (another tag is discarded).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use defs_core::cache_store::ContentTag;
use defs_core::namespace::{Attr, Content, FileKind, Timestamp};
use defs_core::object::Objects;
use defs_core::publish::versions::{self, Version};
use defs_core::sync::{Arc, Mutex};
use defs_core::types::InodeNo;
use defs_core::{Error as CoreError, MetaDb};
use tracing::{info, warn};

use super::error::{Error, Result};
use super::types::{DirEntry, READDIR_BATCH, lock};

/// The reserved name in the root.
pub const SNAPSHOTS_NAME: &str = ".snapshots";
/// Bit 63: an inode of `/.snapshots`.
const VERSION_BIT: u64 = 1 << 63;
/// The slot's place in an inode number.
const SLOT_SHIFT: u32 = 40;
/// A version's own inode numbers stay below 2^40.
const LOCAL_MASK: u64 = (1 << SLOT_SHIFT) - 1;
/// The `.snapshots` directory itself (slot 0).
pub const SNAPDIR: InodeNo = InodeNo(VERSION_BIT | 1);

/// Whether `ino` is in `/.snapshots`.
pub fn is_version(ino: InodeNo) -> bool {
    ino.0 & VERSION_BIT != 0
}

/// Whether `name` in `parent` is the reserved name.
pub(super) fn is_reserved(parent: InodeNo, name: &OsStr) -> bool {
    parent == InodeNo::ROOT && name == SNAPSHOTS_NAME
}

fn slot_of(ino: InodeNo) -> u8 {
    ((ino.0 >> SLOT_SHIFT) & 0xFF) as u8
}

fn local(ino: InodeNo) -> InodeNo {
    InodeNo(ino.0 & LOCAL_MASK)
}

fn outer(slot: u8, ino: InodeNo) -> Result<InodeNo> {
    if ino.0 > LOCAL_MASK {
        return Err(CoreError::Corrupt {
            what: "kept version",
            reason: format!("inode {ino} is above 2^40"),
        }
        .into());
    }
    Ok(InodeNo(
        VERSION_BIT | (u64::from(slot) << SLOT_SHIFT) | ino.0,
    ))
}

fn not_found(what: String) -> Error {
    CoreError::NotFound { what }.into()
}

/// One listed version.
#[derive(Debug)]
struct Slot {
    version: Version,
    name: String,
    /// Its DB, once restored and opened.
    db: Option<Arc<MetaDb>>,
}

#[derive(Debug, Default)]
struct Slots {
    by_slot: HashMap<u8, Slot>,
    /// The last slot given out.
    last: u8,
}

/// The kept versions of a mount (see the module doc).
#[derive(Debug)]
pub(crate) struct Snapshots {
    meta_dir: PathBuf,
    objects: Arc<Objects>,
    slots: Mutex<Slots>,
    /// One restore at a time (two lookups of a new version restore it once).
    restoring: tokio::sync::Mutex<()>,
}

impl Snapshots {
    pub(crate) fn new(meta_dir: PathBuf, objects: Arc<Objects>) -> Snapshots {
        Snapshots {
            meta_dir,
            objects,
            slots: Mutex::new(Slots::default()),
            restoring: tokio::sync::Mutex::new(()),
        }
    }

    /// The kept versions now (`versions.list`), each with its slot and name, oldest first.
    /// Versions no longer kept lose their slot, DB and restored files.
    fn refresh(&self) -> Result<Vec<(u8, String)>> {
        let list = match versions::read_local(&self.meta_dir) {
            Ok(l) => l.map(|(_, l)| l).unwrap_or_default(),
            Err(e) => {
                warn!(error = %e, "the local list of kept versions is unreadable; /.snapshots is empty");
                Vec::new()
            }
        };
        let mut slots = lock(&self.slots);
        let gone: Vec<u8> = slots
            .by_slot
            .iter()
            .filter(|(_, s)| !list.iter().any(|v| v.seq == s.version.seq))
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            slots.by_slot.remove(k);
        }
        if !gone.is_empty() {
            let keep: Vec<u64> = slots.by_slot.values().map(|s| s.version.seq).collect();
            versions::remove_restored_but(&self.meta_dir, &keep);
        }
        let mut out: Vec<(u8, String)> = Vec::with_capacity(list.len());
        for v in list {
            let have = slots
                .by_slot
                .iter()
                .find(|(_, s)| s.version.seq == v.seq)
                .map(|(k, s)| (*k, s.name.clone()));
            if let Some(entry) = have {
                out.push(entry);
                continue;
            }
            let Some(slot) = (1..=255u8)
                .map(|i| slots.last.wrapping_add(i))
                .find(|s| *s != 0 && !slots.by_slot.contains_key(s))
            else {
                break;
            };
            let mut name = v.name();
            if out.iter().any(|(_, n)| *n == name) {
                // Two versions in one second: the later is told apart by its seq.
                name = format!("{name}-{}", v.seq);
            }
            slots.last = slot;
            out.push((slot, name.clone()));
            slots.by_slot.insert(
                slot,
                Slot {
                    version: v,
                    name,
                    db: None,
                },
            );
        }
        Ok(out)
    }

    /// The DB of `slot`, restored (fetched) the first time.
    async fn db(&self, slot: u8) -> Result<Arc<MetaDb>> {
        let version = {
            let slots = lock(&self.slots);
            let s = slots
                .by_slot
                .get(&slot)
                .ok_or_else(|| not_found(format!("kept version in slot {slot}")))?;
            if let Some(db) = &s.db {
                return Ok(db.clone());
            }
            s.version.clone()
        };
        let _one = self.restoring.lock().await;
        if let Some(db) = lock(&self.slots)
            .by_slot
            .get(&slot)
            .and_then(|s| s.db.clone())
        {
            return Ok(db);
        }
        let dir = versions::restore(&self.meta_dir, &self.objects, &version).await?;
        let db = Arc::new(versions::open_restored(&dir)?);
        info!(seq = version.seq, "kept version restored for /.snapshots");
        let mut slots = lock(&self.slots);
        match slots.by_slot.get_mut(&slot) {
            Some(s) if s.version.seq == version.seq => {
                s.db = Some(db.clone());
                Ok(db)
            }
            _ => Err(not_found(format!("kept version {}", version.seq))),
        }
    }

    /// The attributes of `/.snapshots`, shaped after the live root's.
    fn snapdir_attr(&self, root: &Attr, count: usize) -> Attr {
        let newest = lock(&self.slots)
            .by_slot
            .values()
            .map(|s| s.version.time_ms)
            .max()
            .unwrap_or(0);
        let t = timestamp(newest);
        Attr {
            ino: SNAPDIR,
            kind: FileKind::Directory,
            perm: 0o555,
            nlink: 2 + u32::try_from(count).unwrap_or(u32::MAX - 2),
            size: count as u64,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: 0,
            allocated: None,
            ..*root
        }
    }

    /// The attributes of version `slot`'s root for a listing of `/.snapshots`: its own once
    /// restored; before, shaped after the live root with the version's time, so that `ls -l`
    /// of `/.snapshots` does not fetch every version (a lookup restores it).
    fn listed_attr(&self, slot: u8, root: &Attr) -> Result<Attr> {
        let (db, time_ms) = {
            let slots = lock(&self.slots);
            let s = slots
                .by_slot
                .get(&slot)
                .ok_or_else(|| not_found(format!("kept version in slot {slot}")))?;
            (s.db.clone(), s.version.time_ms)
        };
        if let Some(db) = db {
            return Self::mapped(slot, db.getattr(InodeNo::ROOT)?);
        }
        let t = timestamp(time_ms);
        Ok(Attr {
            ino: outer(slot, InodeNo::ROOT)?,
            perm: 0o555,
            atime: t,
            mtime: t,
            ctime: t,
            allocated: None,
            ..*root
        })
    }

    /// `attr` of slot `slot`'s DB, with its inode number in the mount.
    fn mapped(slot: u8, mut attr: Attr) -> Result<Attr> {
        attr.ino = outer(slot, attr.ino)?;
        attr.allocated = None;
        Ok(attr)
    }

    pub(crate) async fn getattr(&self, ino: InodeNo, root: &Attr) -> Result<Attr> {
        if ino == SNAPDIR {
            let count = self.refresh()?.len();
            return Ok(self.snapdir_attr(root, count));
        }
        let slot = slot_of(ino);
        let db = self.db(slot).await?;
        Self::mapped(slot, db.getattr(local(ino))?)
    }

    pub(crate) async fn lookup(&self, parent: InodeNo, name: &OsStr) -> Result<Attr> {
        if parent == SNAPDIR {
            let listed = self.refresh()?;
            let Some((slot, _)) = listed.iter().find(|(_, n)| OsStr::new(n) == name) else {
                return Err(not_found(format!("{name:?} in /{SNAPSHOTS_NAME}")));
            };
            let db = self.db(*slot).await?;
            return Self::mapped(*slot, db.getattr(InodeNo::ROOT)?);
        }
        let slot = slot_of(parent);
        let db = self.db(slot).await?;
        Self::mapped(slot, db.lookup(local(parent), name.as_bytes())?)
    }

    pub(crate) async fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        let db = self.db(slot_of(ino)).await?;
        Ok(db.readlink(local(ino))?)
    }

    pub(crate) async fn get_xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        if ino == SNAPDIR {
            return Err(CoreError::NoXattr {
                ino: ino.0,
                name: String::from_utf8_lossy(name).into(),
            }
            .into());
        }
        let db = self.db(slot_of(ino)).await?;
        Ok(db.get_xattr(local(ino), name)?)
    }

    pub(crate) async fn list_xattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>> {
        if ino == SNAPDIR {
            return Ok(Vec::new());
        }
        let db = self.db(slot_of(ino)).await?;
        Ok(db.list_xattr(local(ino))?)
    }

    /// The stored content of a version's file, and the cache tag it is cached under.
    pub(crate) fn content(&self, ino: InodeNo) -> Result<Content> {
        let slot = slot_of(ino);
        let db = lock(&self.slots)
            .by_slot
            .get(&slot)
            .and_then(|s| s.db.clone())
            .ok_or_else(|| not_found(format!("kept version in slot {slot}")))?;
        Ok(db.content(local(ino))?)
    }

    /// Entries of `ino` (a directory of `/.snapshots`) after `offset`, as `Fs::readdir`.
    pub(crate) async fn readdir(
        &self,
        ino: InodeNo,
        offset: u64,
        plus: bool,
        root: &Attr,
    ) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let dot = |ino: InodeNo, cookie: u64, name: &str, attr: Option<Attr>| DirEntry {
            ino,
            cookie,
            kind: FileKind::Directory,
            name: name.into(),
            attr,
        };
        if ino == SNAPDIR {
            let listed = self.refresh()?;
            if offset < 1 {
                let attr = plus.then(|| self.snapdir_attr(root, listed.len()));
                out.push(dot(SNAPDIR, 1, ".", attr));
            }
            if offset < 2 {
                out.push(dot(InodeNo::ROOT, 2, "..", plus.then_some(*root)));
            }
            for (i, (slot, name)) in listed.iter().enumerate() {
                let cookie = i as u64 + 3;
                if cookie <= offset {
                    continue;
                }
                let vroot = outer(*slot, InodeNo::ROOT)?;
                let attr = if plus {
                    Some(self.listed_attr(*slot, root)?)
                } else {
                    None
                };
                out.push(dot(vroot, cookie, name, attr));
            }
            return Ok(out);
        }
        let slot = slot_of(ino);
        let db = self.db(slot).await?;
        let here = local(ino);
        if offset < 1 {
            let attr = if plus {
                Some(Self::mapped(slot, db.getattr(here)?)?)
            } else {
                None
            };
            out.push(dot(ino, 1, ".", attr));
        }
        if offset < 2 {
            let (parent, attr) = if here == InodeNo::ROOT {
                (SNAPDIR, plus.then(|| self.snapdir_attr(root, 0)))
            } else {
                let p = db.parent_of(here)?;
                let attr = if plus {
                    Some(Self::mapped(slot, db.getattr(p)?)?)
                } else {
                    None
                };
                (outer(slot, p)?, attr)
            };
            out.push(dot(parent, 2, "..", attr));
        }
        for e in db.readdir(here, offset.saturating_sub(2), READDIR_BATCH)? {
            let attr = if plus {
                Some(Self::mapped(slot, db.getattr(e.ino)?)?)
            } else {
                None
            };
            out.push(DirEntry {
                ino: outer(slot, e.ino)?,
                cookie: e.cookie + 2,
                kind: e.kind,
                name: OsStr::from_bytes(&e.name).to_os_string(),
                attr,
            });
        }
        Ok(out)
    }
}

/// `ms` since the epoch as a timestamp.
fn timestamp(ms: u64) -> Timestamp {
    Timestamp::new(
        i64::try_from(ms / 1000).unwrap_or(0),
        ((ms % 1000) * 1_000_000) as u32,
    )
}

/// The cache tag a version's file is cached under: that of its stored content.
pub(crate) fn tag_of(content: &Content) -> Option<ContentTag> {
    match content {
        Content::Stored { file, .. } => Some(ContentTag::from(*file)),
        _ => None,
    }
}
