//! The in-memory reference file system the random-op driver ([`super`]) checks a mount against:
//! a tree of files, directories and symlinks with the errno Linux answers for every refused
//! operation, and the attributes a mount must show (kind, permission bits, link count, size,
//! content, symlink target, `user.*` xattrs, and mtime once a program set it explicitly).

use std::collections::BTreeMap;

use super::op::{Op, XattrFlag};

/// An errno value.
pub type Errno = i32;

/// A node of the model, named by its own counter (the mount's inode numbers are mapped to it).
pub type Id = u64;

/// The root directory's id.
pub const ROOT: Id = 0;

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A directory and its entries.
    Dir(BTreeMap<String, Id>),
    /// A symbolic link and its target (always dangling: see [`super::dangling_target`]).
    Symlink(String),
}

/// One inode of the model.
#[derive(Clone, Debug)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
    pub perm: u32,
    /// Links from directories (regular files and symlinks; a directory's is computed).
    pub links: u32,
    /// `user.*` extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The mtime a program set with `utimensat`, until the next change that moves it.
    pub mtime: Option<(i64, i64)>,
}

impl Node {
    fn new(kind: Kind, perm: u32) -> Node {
        Node {
            kind,
            perm,
            links: 1,
            xattrs: BTreeMap::new(),
            mtime: None,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }
}

/// What a successful operation returns that the driver compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing beyond success.
    Done,
    /// A file's whole content.
    Bytes(Vec<u8>),
    /// A directory's entry names, sorted.
    Names(Vec<String>),
}

/// The reference file system.
#[derive(Clone, Debug)]
pub struct Model {
    nodes: BTreeMap<Id, Node>,
    next: Id,
    umask: u32,
    /// Open descriptors: slot → the file it holds (which lives on while held, even unlinked).
    held: BTreeMap<u8, Id>,
}

/// A path's components ("" is the root).
pub fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// Whether `inner` lies strictly below `outer` (component-wise).
fn strictly_below(inner: &str, outer: &str) -> bool {
    let (i, o) = (components(inner), components(outer));
    i.len() > o.len() && i[..o.len()] == o[..]
}

impl Model {
    /// An empty tree whose creations apply `umask`.
    pub fn new(umask: u32) -> Model {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::new(Kind::Dir(BTreeMap::new()), 0o755));
        Model {
            nodes,
            next: ROOT + 1,
            umask,
            held: BTreeMap::new(),
        }
    }

    /// The slots holding an open descriptor.
    pub fn held_slots(&self) -> Vec<u8> {
        self.held.keys().copied().collect()
    }

    /// Closes the descriptor in `slot`: EBADF when there is none; an unlinked file goes with
    /// its last descriptor.
    fn release(&mut self, slot: u8) -> Result<(), Errno> {
        let id = self.held.remove(&slot).ok_or(libc::EBADF)?;
        if self.node(id).is_some_and(|n| n.links == 0) && !self.held.values().any(|h| *h == id) {
            self.nodes.remove(&id);
        }
        Ok(())
    }

    /// The size of the file held in `slot` (0 when none).
    pub fn held_size(&self, slot: u8) -> u64 {
        match self
            .held
            .get(&slot)
            .and_then(|id| self.node(*id))
            .map(|n| &n.kind)
        {
            Some(Kind::File(d)) => u64::try_from(d.len()).unwrap_or(0),
            _ => 0,
        }
    }

    /// The file the descriptor in `slot` holds.
    fn held_file(&mut self, slot: u8) -> Result<&mut Node, Errno> {
        let id = *self.held.get(&slot).ok_or(libc::EBADF)?;
        self.file_mut(id)
    }

    /// The node `id`, if it exists.
    pub fn node(&self, id: Id) -> Option<&Node> {
        self.nodes.get(&id)
    }

    fn node_mut(&mut self, id: Id) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("model: node {id} is referenced but missing"))
    }

    fn entries(&self, dir: Id) -> &BTreeMap<String, Id> {
        match self.nodes.get(&dir).map(|n| &n.kind) {
            Some(Kind::Dir(e)) => e,
            _ => panic!("model: {dir} is not a directory"),
        }
    }

    fn entries_mut(&mut self, dir: Id) -> &mut BTreeMap<String, Id> {
        match &mut self.node_mut(dir).kind {
            Kind::Dir(e) => e,
            _ => panic!("model: {dir} is not a directory"),
        }
    }

    /// The link count `stat` must show: stored for files and symlinks, 2 + subdirectories for
    /// a directory.
    pub fn nlink(&self, id: Id) -> u32 {
        let Some(node) = self.nodes.get(&id) else {
            return 0;
        };
        match &node.kind {
            Kind::Dir(e) => {
                let subdirs = e
                    .values()
                    .filter(|c| self.nodes.get(c).is_some_and(Node::is_dir))
                    .count();
                2 + u32::try_from(subdirs).unwrap_or(u32::MAX)
            }
            _ => node.links,
        }
    }

    /// Resolves every component but the last as a directory (the kernel's parent lookup):
    /// the parent's id and the last name. `None` as the name for the root itself.
    fn parent<'p>(&self, path: &'p str) -> Result<(Id, Option<&'p str>), Errno> {
        let comps = components(path);
        let Some((last, dirs)) = comps.split_last() else {
            return Ok((ROOT, None));
        };
        let mut cur = ROOT;
        for c in dirs {
            let Some(&id) = self.entries(cur).get(*c) else {
                return Err(libc::ENOENT);
            };
            match self.nodes.get(&id).map(|n| &n.kind) {
                Some(Kind::Dir(_)) => cur = id,
                // Every symlink of the model dangles.
                Some(Kind::Symlink(_)) => return Err(libc::ENOENT),
                _ => return Err(libc::ENOTDIR),
            }
        }
        Ok((cur, Some(last)))
    }

    /// The node at `path`, following a final symlink when `follow` (which then dangles).
    pub fn lookup(&self, path: &str, follow: bool) -> Result<Id, Errno> {
        let (dir, name) = self.parent(path)?;
        let Some(name) = name else { return Ok(dir) };
        let id = *self.entries(dir).get(name).ok_or(libc::ENOENT)?;
        if follow && matches!(self.nodes.get(&id).map(|n| &n.kind), Some(Kind::Symlink(_))) {
            return Err(libc::ENOENT);
        }
        Ok(id)
    }

    /// Every path of the tree with its node, parents before children ("" is the root).
    pub fn paths(&self) -> Vec<(String, Id)> {
        let mut out = vec![(String::new(), ROOT)];
        let mut i = 0;
        while i < out.len() {
            let (path, id) = out[i].clone();
            if let Some(Kind::Dir(e)) = self.nodes.get(&id).map(|n| &n.kind) {
                for (name, child) in e {
                    let p = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}/{name}")
                    };
                    out.push((p, *child));
                }
            }
            i += 1;
        }
        out
    }

    fn alloc(&mut self, node: Node) -> Id {
        let id = self.next;
        self.next += 1;
        self.nodes.insert(id, node);
        id
    }

    /// Makes a new node named by `path`: EEXIST when the name exists (a dangling symlink too).
    fn make(&mut self, path: &str, node: Node) -> Result<Id, Errno> {
        let (dir, name) = self.parent(path)?;
        let name = name.ok_or(libc::EEXIST)?;
        if self.entries(dir).contains_key(name) {
            return Err(libc::EEXIST);
        }
        let id = self.alloc(node);
        self.entries_mut(dir).insert(name.to_string(), id);
        self.node_mut(dir).mtime = None;
        Ok(id)
    }

    /// Drops one link of `id` (a removed name), forgetting it at the last.
    fn drop_link(&mut self, id: Id) {
        let node = self.node_mut(id);
        node.links = node.links.saturating_sub(1);
        let gone = node.is_dir() || node.links == 0;
        if gone && !self.held.values().any(|h| *h == id) {
            self.nodes.remove(&id);
        }
    }

    /// The regular file `id` (after following), or the errno for what it is instead.
    fn file_mut(&mut self, id: Id) -> Result<&mut Node, Errno> {
        let node = self.node_mut(id);
        match node.kind {
            Kind::File(_) => Ok(node),
            Kind::Dir(_) => Err(libc::EISDIR),
            Kind::Symlink(_) => Err(libc::ENOENT),
        }
    }

    /// Applies `op` as Linux (with a file system that follows POSIX) would.
    pub fn apply(&mut self, op: &Op) -> Result<Outcome, Errno> {
        match op {
            Op::Create { path, mode } => {
                let perm = mode & !self.umask & 0o7777;
                self.make(path, Node::new(Kind::File(Vec::new()), perm))?;
            }
            Op::Write {
                path,
                offset,
                len,
                seed,
            } => {
                let id = self.lookup(path, true)?;
                write_at(self.file_mut(id)?, *offset, *len, *seed);
            }
            Op::Truncate { path, len } => {
                let id = self.lookup(path, true)?;
                let node = self.file_mut(id)?;
                if let Kind::File(data) = &mut node.kind {
                    data.resize(to_usize(*len), 0);
                }
                node.mtime = None;
            }
            Op::Read { path } => {
                let id = self.lookup(path, true)?;
                let node = self.file_mut(id)?;
                if let Kind::File(data) = &node.kind {
                    return Ok(Outcome::Bytes(data.clone()));
                }
            }
            Op::Rename { from, to } => self.rename(from, to)?,
            Op::Link { from, to } => {
                let src = self.lookup(from, false)?;
                let (dir, name) = self.parent(to)?;
                let name = name.ok_or(libc::EEXIST)?;
                if self.entries(dir).contains_key(name) {
                    return Err(libc::EEXIST);
                }
                if self.node(src).is_some_and(Node::is_dir) {
                    return Err(libc::EPERM);
                }
                self.entries_mut(dir).insert(name.to_string(), src);
                self.node_mut(src).links += 1;
                self.node_mut(dir).mtime = None;
            }
            Op::Unlink { path } => {
                let (dir, name) = self.parent(path)?;
                let name = name.ok_or(libc::EISDIR)?;
                let id = *self.entries(dir).get(name).ok_or(libc::ENOENT)?;
                if self.node(id).is_some_and(Node::is_dir) {
                    return Err(libc::EISDIR);
                }
                self.entries_mut(dir).remove(name);
                self.drop_link(id);
                self.node_mut(dir).mtime = None;
            }
            Op::Mkdir { path, mode } => {
                let perm = mode & !self.umask & 0o777;
                self.make(path, Node::new(Kind::Dir(BTreeMap::new()), perm))?;
            }
            Op::Rmdir { path } => {
                let (dir, name) = self.parent(path)?;
                let name = name.ok_or(libc::EBUSY)?;
                let id = *self.entries(dir).get(name).ok_or(libc::ENOENT)?;
                match self.node(id).map(|n| &n.kind) {
                    Some(Kind::Dir(e)) if e.is_empty() => {}
                    Some(Kind::Dir(_)) => return Err(libc::ENOTEMPTY),
                    _ => return Err(libc::ENOTDIR),
                }
                self.entries_mut(dir).remove(name);
                self.drop_link(id);
                self.node_mut(dir).mtime = None;
            }
            Op::Symlink { target, path } => {
                self.make(path, Node::new(Kind::Symlink(target.clone()), 0o777))?;
            }
            Op::SetXattr {
                path,
                name,
                seed,
                len,
                flag,
            } => {
                let id = self.lookup(path, true)?;
                let node = self.node_mut(id);
                let exists = node.xattrs.contains_key(name);
                match flag {
                    XattrFlag::Create if exists => return Err(libc::EEXIST),
                    XattrFlag::Replace if !exists => return Err(libc::ENODATA),
                    _ => {}
                }
                node.xattrs
                    .insert(name.clone(), super::op::bytes(*seed, usize::from(*len)));
            }
            Op::RemoveXattr { path, name } => {
                let id = self.lookup(path, true)?;
                self.node_mut(id).xattrs.remove(name).ok_or(libc::ENODATA)?;
            }
            Op::Chmod { path, mode } => {
                let id = self.lookup(path, true)?;
                self.node_mut(id).perm = mode & 0o7777;
            }
            Op::Utimens { path, sec, nsec } => {
                let id = self.lookup(path, true)?;
                self.node_mut(id).mtime = Some((*sec, *nsec));
            }
            Op::Fsync { path } => {
                self.lookup(path, true)?;
            }
            Op::Stat { path } => {
                self.lookup(path, false)?;
            }
            Op::Readdir { path } => {
                let id = self.lookup(path, true)?;
                return match self.node(id).map(|n| &n.kind) {
                    Some(Kind::Dir(e)) => Ok(Outcome::Names(e.keys().cloned().collect())),
                    _ => Err(libc::ENOTDIR),
                };
            }
            Op::Open { path, slot } => {
                // A descriptor already in the slot is closed first.
                let _ = self.release(*slot);
                let id = self.lookup(path, true)?;
                self.file_mut(id)?;
                self.held.insert(*slot, id);
            }
            Op::WriteFd {
                slot,
                offset,
                len,
                seed,
            } => {
                let node = self.held_file(*slot)?;
                write_at(node, *offset, *len, *seed);
            }
            Op::ReadFd { slot } => {
                if let Kind::File(data) = &self.held_file(*slot)?.kind {
                    return Ok(Outcome::Bytes(data.clone()));
                }
            }
            Op::TruncateFd { slot, len } => {
                let node = self.held_file(*slot)?;
                if let Kind::File(data) = &mut node.kind {
                    data.resize(to_usize(*len), 0);
                }
                node.mtime = None;
            }
            Op::Close { slot } => self.release(*slot)?,
            Op::Settle => {}
            Op::Remount | Op::WipeCache => {
                for slot in self.held_slots() {
                    let _ = self.release(slot);
                }
            }
        }
        Ok(Outcome::Done)
    }

    /// rename(2), in the order Linux checks (`do_renameat2`, then `vfs_rename`): both parents,
    /// the source, a directory moved into itself (EINVAL), a target that is an ancestor of the
    /// source (ENOTEMPTY), the same inode (nothing to do), the kinds, a non-empty target.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let (odir, oname) = self.parent(from)?;
        let (ndir, nname) = self.parent(to)?;
        let oname = oname.ok_or(libc::EBUSY)?;
        let src = *self.entries(odir).get(oname).ok_or(libc::ENOENT)?;
        let nname = nname.ok_or(libc::EBUSY)?;
        let dst = self.entries(ndir).get(nname).copied();
        let src_dir = self.node(src).is_some_and(Node::is_dir);
        if src_dir && strictly_below(to, from) {
            return Err(libc::EINVAL);
        }
        if dst.is_some() && strictly_below(from, to) {
            return Err(libc::ENOTEMPTY);
        }
        if dst == Some(src) {
            return Ok(());
        }
        if let Some(dst) = dst {
            match (src_dir, self.node(dst).map(|n| &n.kind)) {
                (true, Some(Kind::Dir(e))) if !e.is_empty() => return Err(libc::ENOTEMPTY),
                (true, Some(Kind::Dir(_))) => {}
                (true, _) => return Err(libc::ENOTDIR),
                (false, Some(Kind::Dir(_))) => return Err(libc::EISDIR),
                (false, _) => {}
            }
            self.drop_link(dst);
        }
        self.entries_mut(odir).remove(oname);
        self.entries_mut(ndir).insert(nname.to_string(), src);
        self.node_mut(odir).mtime = None;
        self.node_mut(ndir).mtime = None;
        if src_dir && odir != ndir {
            // Its ".." changed: some file systems move its mtime.
            self.node_mut(src).mtime = None;
        }
        Ok(())
    }
}

/// `pwrite` of `len` bytes made from `seed` at `offset` into the regular file `node`.
fn write_at(node: &mut Node, offset: u64, len: u32, seed: u64) {
    if let Kind::File(data) = &mut node.kind {
        let (off, len) = (to_usize(offset), to_usize(u64::from(len)));
        if data.len() < off + len {
            data.resize(off + len, 0);
        }
        data[off..off + len].copy_from_slice(&super::op::bytes(seed, len));
        node.mtime = None;
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
