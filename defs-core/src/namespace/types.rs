//! The namespace's vocabulary: the values its operations take and return (attributes, kinds,
//! timestamps, the setattr and rename choices), the Linux limits on names and xattrs, and the
//! checks and errors every layer above shares. No DB access: everything else in the metadata
//! layers builds on this.

use crate::error::{Error, Result};
use crate::types::{FileId, Generation, InodeNo};

/// Longest file name, in bytes (Linux NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Longest symlink target, in bytes (Linux PATH_MAX including the NUL is 4096).
pub const SYMLINK_MAX: usize = 4095;
/// Longest xattr name, in bytes (Linux XATTR_NAME_MAX).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest xattr value, in bytes (Linux XATTR_SIZE_MAX).
pub const XATTR_SIZE_MAX: usize = 65536;
/// Largest xattr name list of one inode, counting a NUL after each name (Linux XATTR_LIST_MAX).
pub const XATTR_LIST_MAX: usize = 65536;

/// A point in time, to the nanosecond, relative to the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, always below 1,000,000,000.
    pub nanos: u32,
}

impl Timestamp {
    /// A timestamp; `nanos` beyond a second carry into `secs`.
    pub fn new(secs: i64, nanos: u32) -> Timestamp {
        Timestamp {
            secs: secs.saturating_add(i64::from(nanos / 1_000_000_000)),
            nanos: nanos % 1_000_000_000,
        }
    }

    /// The system clock now.
    pub fn now() -> Timestamp {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    Timestamp { secs, nanos: 0 }
                } else {
                    Timestamp {
                        secs: secs - 1,
                        nanos: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }
}

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// A regular file.
    RegularFile,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device node; its device number is [`Attr::rdev`].
    CharDevice,
    /// A block device node; its device number is [`Attr::rdev`].
    BlockDevice,
    /// A Unix domain socket's name (what `bind(2)` of an `AF_UNIX` path makes).
    Socket,
}

impl FileKind {
    /// The byte stored on disk.
    pub(crate) fn tag(self) -> u8 {
        match self {
            FileKind::RegularFile => 1,
            FileKind::Directory => 2,
            FileKind::Symlink => 3,
            FileKind::Fifo => 4,
            FileKind::CharDevice => 5,
            FileKind::BlockDevice => 6,
            FileKind::Socket => 7,
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<FileKind> {
        Some(match tag {
            1 => FileKind::RegularFile,
            2 => FileKind::Directory,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::CharDevice,
            6 => FileKind::BlockDevice,
            7 => FileKind::Socket,
            _ => return None,
        })
    }

    /// A device node, the only kind with a device number.
    pub fn is_device(self) -> bool {
        matches!(self, FileKind::CharDevice | FileKind::BlockDevice)
    }

    /// An object the kernel gives its meaning (a fifo, device node or socket): DeFS stores only
    /// its name and attributes, never content (the kernel opens it without asking DeFS).
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket
        )
    }
}

/// A file's stored content: nothing yet, or a byte range of a stored object (a file's own
/// object has offset 0; packed small files share one object).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Content {
    /// Never uploaded (or truncated to nothing and uploaded as such).
    #[default]
    Empty,
    /// Bytes `offset..offset + len` of the object whose sealed manifest is `file`.
    Stored {
        /// The object's file id.
        file: FileId,
        /// The object's file key (becomes `pipeline::keys::FileKey` when that lands:
        /// `FileKey::from_bytes(key)`).
        key: [u8; 32],
        /// Where this file's bytes start inside the object.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

/// An inode's attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// The inode number.
    pub ino: InodeNo,
    /// What it is.
    pub kind: FileKind,
    /// Permission bits (mode & 0o7777).
    pub perm: u16,
    /// Hard links; for directories 2 + subdirectories; 0 for an orphan.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Bytes for files, the target's length for symlinks, the number of entries for directories.
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last content change.
    pub mtime: Timestamp,
    /// Last attribute change.
    pub ctime: Timestamp,
    /// Device number of a device node, in the kernel's 32-bit encoding (major in bits 8..20,
    /// minor in bits 0..8 and 20..32; what FUSE carries); 0 for every other kind.
    pub rdev: u32,
    /// The content generation (see [`crate::journal`]).
    pub generation: Generation,
    /// Bytes allocated to the content (what `st_blocks` counts), when the layer answering knows
    /// them (the mount does, from the cache file or the manifest); `None`: the size, rounded up.
    pub allocated: Option<u64>,
}

/// Owner and permissions of a new inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewInode {
    /// Permission bits (masked to 0o7777).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The attributes `setattr` changes; `None` leaves one alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (masked to 0o7777).
    pub perm: Option<u16>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (regular files only). A change also sets mtime to `now` unless `mtime` is given.
    pub size: Option<u64>,
    /// New access time (resolve UTIME_NOW to a time before calling).
    pub atime: Option<Timestamp>,
    /// New modification time.
    pub mtime: Option<Timestamp>,
    /// New change time; `None` sets it to `now`, as every setattr does.
    pub ctime: Option<Timestamp>,
}

/// How rename treats an existing destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace it (a file, or an empty directory when the source is a directory).
    #[default]
    Replace,
    /// RENAME_NOREPLACE: refuse with [`Error::AlreadyExists`].
    NoReplace,
    /// RENAME_EXCHANGE: swap the two entries; both must exist.
    Exchange,
}

/// How set_xattr treats an existing attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XattrMode {
    /// Create or replace.
    #[default]
    Any,
    /// XATTR_CREATE: refuse with [`Error::AlreadyExists`] if it exists.
    Create,
    /// XATTR_REPLACE: refuse with [`Error::NoXattr`] if it does not.
    Replace,
}

/// One directory entry, as readdir lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The name.
    pub name: Vec<u8>,
    /// The child.
    pub ino: InodeNo,
    /// The child's kind.
    pub kind: FileKind,
    /// Pass this back to continue after this entry. Cookies of a directory's entries never
    /// change while the entry exists, and are never reused: a listing continued after any
    /// change sees every entry that existed throughout exactly once.
    pub cookie: u64,
}

/// What unlink, rmdir or a replacing rename did to the inode that lost a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unlinked {
    /// The inode.
    pub ino: InodeNo,
    /// Its remaining links (0: it is now an orphan; purge it when no handle needs it).
    pub nlink: u32,
}

/// Checks that a device number belongs where it is: device nodes may have any (every `u32` is
/// some major and minor, and 0:0 is an overlayfs whiteout), every other kind has 0.
pub(crate) fn check_rdev(kind: FileKind, rdev: u32) -> std::result::Result<(), &'static str> {
    if rdev != 0 && !kind.is_device() {
        return Err("a device number on an inode that is not a device node");
    }
    Ok(())
}

/// Checks a file name: 1..=NAME_MAX bytes, not "." or "..", no '/' or NUL.
pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong {
            len: name.len(),
            limit: NAME_MAX,
        });
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&b| b == b'/' || b == 0)
    {
        return Err(invalid(
            "file name (empty, \".\", \"..\", or with '/' or NUL)",
        ));
    }
    Ok(())
}

pub(crate) fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Error::XattrNameInvalid {
            len: name.len(),
            limit: XATTR_NAME_MAX,
        });
    }
    Ok(())
}

pub(crate) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

pub(crate) fn not_found_name(parent: InodeNo, name: &[u8]) -> Error {
    Error::NotFound {
        what: format!("{:?} in directory {parent}", lossy(name)),
    }
}

pub(crate) fn exists(parent: InodeNo, name: &[u8]) -> Error {
    Error::AlreadyExists {
        what: format!("{:?} in directory {parent}", lossy(name)),
    }
}

pub(crate) fn no_xattr(ino: InodeNo, name: &[u8]) -> Error {
    Error::NoXattr {
        ino: ino.0,
        name: lossy(name),
    }
}

pub(crate) fn invalid(what: &str) -> Error {
    Error::InvalidArgument { what: what.into() }
}

pub(crate) fn corrupt(reason: &str) -> Error {
    Error::Corrupt {
        what: "metadata DB",
        reason: reason.into(),
    }
}
