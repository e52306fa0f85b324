//! The metadata DB's redo records: one logical record per mutating operation, appended to
//! `DIR/meta/meta.oplog` (see [`crate::oplog`]) inside the operation's write transaction, and
//! replayed at open for every LSN above the DB's `meta["lsn"]`.
//!
//! A record holds the operation and all its inputs (`now` included) plus what was not
//! deterministic when it ran: the inode number the allocator handed out. Replay calls the same
//! [`crate::meta::MetaDb`] method with the same inputs, forcing that inode number, and checks what the
//! method returns against what the record says it returned (inode numbers, generations,
//! whether an upload made the inode clean). A record that fails to decode or to replay is
//! [`Error::Corrupt`](crate::Error::Corrupt); it is never skipped. Payload layout: docs/format.md, "Metadata op log".

use crate::error::Result;
use crate::journal::entry::MAX_ERROR_LEN;
use crate::namespace::record::{Reader, put_time, put_u16, put_u32, put_u64};
use crate::namespace::types::{
    Content, FileKind, NewInode, RenameMode, SetAttr, Timestamp, XATTR_SIZE_MAX, XattrMode,
};
use crate::types::{FileId, Generation, InodeNo};

use super::repack::{REPACK_MAX_FILES, RepackMove};

/// The largest record payload: a set_xattr with the largest name and value, with room to
/// spare. Any larger length in a log is a torn or corrupt frame.
pub(crate) const MAX_RECORD: u32 = 128 * 1024;

/// One logged operation; borrowed slices point into the caller's arguments (when logging) or
/// into the record's payload (when replaying).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LogOp<'a> {
    Setattr {
        ino: InodeNo,
        set: SetAttr,
        now: Timestamp,
    },
    Create {
        parent: InodeNo,
        name: &'a [u8],
        init: NewInode,
        exclusive: bool,
        now: Timestamp,
        /// The inode created, or None when an existing file was returned.
        ino: Option<InodeNo>,
    },
    /// mkdir, mknod and symlink.
    Make {
        parent: InodeNo,
        name: &'a [u8],
        kind: FileKind,
        init: NewInode,
        now: Timestamp,
        target: &'a [u8],
        /// Device nodes' number; 0 for every other kind.
        rdev: u32,
        ino: InodeNo,
    },
    Link {
        ino: InodeNo,
        newparent: InodeNo,
        newname: &'a [u8],
        now: Timestamp,
    },
    Unlink {
        parent: InodeNo,
        name: &'a [u8],
        now: Timestamp,
    },
    Rmdir {
        parent: InodeNo,
        name: &'a [u8],
        now: Timestamp,
    },
    Rename {
        parent: InodeNo,
        name: &'a [u8],
        newparent: InodeNo,
        newname: &'a [u8],
        mode: RenameMode,
        now: Timestamp,
    },
    SetXattr {
        ino: InodeNo,
        name: &'a [u8],
        value: &'a [u8],
        mode: XattrMode,
        now: Timestamp,
    },
    RemoveXattr {
        ino: InodeNo,
        name: &'a [u8],
        now: Timestamp,
    },
    Purge {
        ino: InodeNo,
    },
    MarkDirty {
        ino: InodeNo,
        now: Timestamp,
        generation: Generation,
    },
    BeginUpload {
        ino: InodeNo,
        generation: Generation,
    },
    FinishUpload {
        ino: InodeNo,
        generation: Generation,
        content: Content,
        clean: bool,
    },
    UploadFailed {
        ino: InodeNo,
        generation: Generation,
        /// Already cut to [`MAX_ERROR_LEN`] (so replay stores exactly these bytes).
        reason: &'a str,
    },
    /// A compaction's switch of files to a new pack (see `meta::repack`).
    Repack {
        /// The intent the transaction removes.
        intent: u64,
        /// The new pack.
        file: FileId,
        /// Its file key.
        key: [u8; 32],
        /// Each file's move (at most [`REPACK_MAX_FILES`]).
        moves: Vec<RepackMove>,
        /// How many moves the files' state allowed (the rest had changed).
        switched: u64,
    },
    /// setattr and mark_dirty in one transaction (a written file's close or first write).
    SetattrDirty {
        ino: InodeNo,
        set: SetAttr,
        now: Timestamp,
        generation: Generation,
    },
}

fn put_bytes16(w: &mut Vec<u8>, b: &[u8]) {
    // Names (≤ 255) and symlink targets (≤ 4095) are checked before an operation runs.
    put_u16(w, u16::try_from(b.len()).unwrap_or(u16::MAX));
    w.extend_from_slice(b);
}

fn put_bytes32(w: &mut Vec<u8>, b: &[u8]) {
    put_u32(w, u32::try_from(b.len()).unwrap_or(u32::MAX));
    w.extend_from_slice(b);
}

/// The kinds a `make_node` record (tag 16) carries: those added with schema version 2. Tag 3
/// keeps the layout it had before them, so a log written by an older build replays unchanged.
fn is_node(kind: FileKind) -> bool {
    matches!(
        kind,
        FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket
    )
}

fn put_init(w: &mut Vec<u8>, n: &NewInode) {
    put_u16(w, n.perm);
    put_u32(w, n.uid);
    put_u32(w, n.gid);
}

fn rename_tag(m: RenameMode) -> u8 {
    match m {
        RenameMode::Replace => 0,
        RenameMode::NoReplace => 1,
        RenameMode::Exchange => 2,
    }
}

fn xattr_tag(m: XattrMode) -> u8 {
    match m {
        XattrMode::Any => 0,
        XattrMode::Create => 1,
        XattrMode::Replace => 2,
    }
}

impl LogOp<'_> {
    /// The record tag (docs/format.md).
    fn tag(&self) -> u8 {
        match self {
            LogOp::Setattr { .. } => 1,
            LogOp::Create { .. } => 2,
            LogOp::Make { kind, .. } if is_node(*kind) => 16,
            LogOp::Make { .. } => 3,
            LogOp::Link { .. } => 4,
            LogOp::Unlink { .. } => 5,
            LogOp::Rmdir { .. } => 6,
            LogOp::Rename { .. } => 7,
            LogOp::SetXattr { .. } => 8,
            LogOp::RemoveXattr { .. } => 9,
            LogOp::Purge { .. } => 10,
            LogOp::MarkDirty { .. } => 11,
            LogOp::BeginUpload { .. } => 12,
            LogOp::FinishUpload { .. } => 13,
            LogOp::UploadFailed { .. } => 14,
            LogOp::SetattrDirty { .. } => 15,
            LogOp::Repack { .. } => 17,
        }
    }

    /// The name of the operation, for error messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            LogOp::Setattr { .. } => "setattr",
            LogOp::Create { .. } => "create",
            LogOp::Make { .. } => "mkdir/mknod/symlink",
            LogOp::Link { .. } => "link",
            LogOp::Unlink { .. } => "unlink",
            LogOp::Rmdir { .. } => "rmdir",
            LogOp::Rename { .. } => "rename",
            LogOp::SetXattr { .. } => "set_xattr",
            LogOp::RemoveXattr { .. } => "remove_xattr",
            LogOp::Purge { .. } => "purge",
            LogOp::MarkDirty { .. } => "mark_dirty",
            LogOp::BeginUpload { .. } => "begin_upload",
            LogOp::FinishUpload { .. } => "finish_upload",
            LogOp::UploadFailed { .. } => "upload_failed",
            LogOp::SetattrDirty { .. } => "setattr_dirty",
            LogOp::Repack { .. } => "switch_repacked",
        }
    }

    /// The inode number the operation allocated, if any.
    pub(crate) fn allocated(&self) -> Option<InodeNo> {
        match self {
            LogOp::Create { ino, .. } => *ino,
            LogOp::Make { ino, .. } => Some(*ino),
            _ => None,
        }
    }

    /// Appends the payload to `w`.
    pub(crate) fn encode(&self, w: &mut Vec<u8>) {
        w.push(self.tag());
        match self {
            LogOp::Setattr { ino, set, now } => put_setattr(w, *ino, set, *now),
            LogOp::SetattrDirty {
                ino,
                set,
                now,
                generation,
            } => {
                put_setattr(w, *ino, set, *now);
                put_u64(w, generation.0);
            }
            LogOp::Create {
                parent,
                name,
                init,
                exclusive,
                now,
                ino,
            } => {
                put_u64(w, parent.0);
                put_bytes16(w, name);
                put_init(w, init);
                w.push(u8::from(*exclusive));
                put_time(w, *now);
                put_u64(w, ino.map_or(0, |i| i.0));
            }
            LogOp::Make {
                parent,
                name,
                kind,
                init,
                now,
                target,
                rdev,
                ino,
            } => {
                put_u64(w, parent.0);
                put_bytes16(w, name);
                w.push(kind.tag());
                if is_node(*kind) {
                    put_u32(w, *rdev);
                }
                put_init(w, init);
                put_time(w, *now);
                put_bytes16(w, target);
                put_u64(w, ino.0);
            }
            LogOp::Link {
                ino,
                newparent,
                newname,
                now,
            } => {
                put_u64(w, ino.0);
                put_u64(w, newparent.0);
                put_bytes16(w, newname);
                put_time(w, *now);
            }
            LogOp::Unlink { parent, name, now } | LogOp::Rmdir { parent, name, now } => {
                put_u64(w, parent.0);
                put_bytes16(w, name);
                put_time(w, *now);
            }
            LogOp::Rename {
                parent,
                name,
                newparent,
                newname,
                mode,
                now,
            } => {
                put_u64(w, parent.0);
                put_bytes16(w, name);
                put_u64(w, newparent.0);
                put_bytes16(w, newname);
                w.push(rename_tag(*mode));
                put_time(w, *now);
            }
            LogOp::SetXattr {
                ino,
                name,
                value,
                mode,
                now,
            } => {
                put_u64(w, ino.0);
                put_bytes16(w, name);
                put_bytes32(w, value);
                w.push(xattr_tag(*mode));
                put_time(w, *now);
            }
            LogOp::RemoveXattr { ino, name, now } => {
                put_u64(w, ino.0);
                put_bytes16(w, name);
                put_time(w, *now);
            }
            LogOp::Purge { ino } => put_u64(w, ino.0),
            LogOp::MarkDirty {
                ino,
                now,
                generation,
            } => {
                put_u64(w, ino.0);
                put_time(w, *now);
                put_u64(w, generation.0);
            }
            LogOp::BeginUpload { ino, generation } => {
                put_u64(w, ino.0);
                put_u64(w, generation.0);
            }
            LogOp::FinishUpload {
                ino,
                generation,
                content,
                clean,
            } => {
                put_u64(w, ino.0);
                put_u64(w, generation.0);
                match content {
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
                w.push(u8::from(*clean));
            }
            LogOp::UploadFailed {
                ino,
                generation,
                reason,
            } => {
                put_u64(w, ino.0);
                put_u64(w, generation.0);
                put_bytes32(w, reason.as_bytes());
            }
            LogOp::Repack {
                intent,
                file,
                key,
                moves,
                switched,
            } => {
                put_u64(w, *intent);
                w.extend_from_slice(&file.0);
                w.extend_from_slice(key);
                // At most REPACK_MAX_FILES, checked by the operation before it runs.
                put_u32(w, u32::try_from(moves.len()).unwrap_or(u32::MAX));
                for m in moves {
                    put_u64(w, m.ino.0);
                    w.extend_from_slice(&m.old_file.0);
                    put_u64(w, m.old_offset);
                    put_u64(w, m.len);
                    put_u64(w, m.new_offset);
                }
                put_u64(w, *switched);
            }
        }
    }

    /// Decodes a payload; every length is checked against its limit before use.
    pub(crate) fn decode(payload: &[u8]) -> Result<LogOp<'_>> {
        let mut r = Reader::new(payload, "metadata op log record");
        let ino = |r: &mut Reader<'_>| r.u64().map(InodeNo);
        let op = match r.u8()? {
            1 => {
                let (ino, set, now) = setattr_fields(&mut r)?;
                LogOp::Setattr { ino, set, now }
            }
            15 => {
                let (ino, set, now) = setattr_fields(&mut r)?;
                LogOp::SetattrDirty {
                    ino,
                    set,
                    now,
                    generation: Generation(r.u64()?),
                }
            }
            2 => {
                let parent = ino(&mut r)?;
                let name = bytes16(&mut r)?;
                let init = init(&mut r)?;
                let exclusive = flag(&mut r)?;
                let now = r.time()?;
                let created = r.u64()?;
                LogOp::Create {
                    parent,
                    name,
                    init,
                    exclusive,
                    now,
                    ino: (created != 0).then_some(InodeNo(created)),
                }
            }
            t @ (3 | 16) => {
                let parent = ino(&mut r)?;
                let name = bytes16(&mut r)?;
                let tag = r.u8()?;
                let kind =
                    FileKind::from_tag(tag).ok_or_else(|| r.bad(format!("unknown kind {tag}")))?;
                if is_node(kind) != (t == 16) {
                    return Err(r.bad(format!("kind {tag} in a record of tag {t}")));
                }
                let rdev = if t == 16 { r.u32()? } else { 0 };
                if let Err(reason) = crate::namespace::types::check_rdev(kind, rdev) {
                    return Err(r.bad(format!("{reason} (rdev {rdev:#x})")));
                }
                LogOp::Make {
                    parent,
                    name,
                    kind,
                    init: init(&mut r)?,
                    now: r.time()?,
                    target: bytes16(&mut r)?,
                    rdev,
                    ino: ino(&mut r)?,
                }
            }
            4 => LogOp::Link {
                ino: ino(&mut r)?,
                newparent: ino(&mut r)?,
                newname: bytes16(&mut r)?,
                now: r.time()?,
            },
            t @ (5 | 6) => {
                let parent = ino(&mut r)?;
                let name = bytes16(&mut r)?;
                let now = r.time()?;
                if t == 5 {
                    LogOp::Unlink { parent, name, now }
                } else {
                    LogOp::Rmdir { parent, name, now }
                }
            }
            7 => {
                let parent = ino(&mut r)?;
                let name = bytes16(&mut r)?;
                let newparent = ino(&mut r)?;
                let newname = bytes16(&mut r)?;
                let mode = match r.u8()? {
                    0 => RenameMode::Replace,
                    1 => RenameMode::NoReplace,
                    2 => RenameMode::Exchange,
                    t => return Err(r.bad(format!("rename mode {t}"))),
                };
                LogOp::Rename {
                    parent,
                    name,
                    newparent,
                    newname,
                    mode,
                    now: r.time()?,
                }
            }
            8 => {
                let ino = ino(&mut r)?;
                let name = bytes16(&mut r)?;
                let len = r.u32()? as usize;
                if len > XATTR_SIZE_MAX {
                    return Err(r.bad(format!("xattr value of {len} bytes")));
                }
                let value = r.bytes(len)?;
                let mode = match r.u8()? {
                    0 => XattrMode::Any,
                    1 => XattrMode::Create,
                    2 => XattrMode::Replace,
                    t => return Err(r.bad(format!("xattr mode {t}"))),
                };
                LogOp::SetXattr {
                    ino,
                    name,
                    value,
                    mode,
                    now: r.time()?,
                }
            }
            9 => LogOp::RemoveXattr {
                ino: ino(&mut r)?,
                name: bytes16(&mut r)?,
                now: r.time()?,
            },
            10 => LogOp::Purge { ino: ino(&mut r)? },
            11 => LogOp::MarkDirty {
                ino: ino(&mut r)?,
                now: r.time()?,
                generation: Generation(r.u64()?),
            },
            12 => LogOp::BeginUpload {
                ino: ino(&mut r)?,
                generation: Generation(r.u64()?),
            },
            13 => {
                let ino = ino(&mut r)?;
                let generation = Generation(r.u64()?);
                let content = match r.u8()? {
                    0 => Content::Empty,
                    1 => Content::Stored {
                        file: FileId(r.array::<32>()?),
                        key: r.array::<32>()?,
                        offset: r.u64()?,
                        len: r.u64()?,
                    },
                    t => return Err(r.bad(format!("content tag {t}"))),
                };
                LogOp::FinishUpload {
                    ino,
                    generation,
                    content,
                    clean: flag(&mut r)?,
                }
            }
            14 => {
                let ino = ino(&mut r)?;
                let generation = Generation(r.u64()?);
                let len = r.u32()? as usize;
                if len > MAX_ERROR_LEN + 3 {
                    return Err(r.bad(format!("upload error reason of {len} bytes")));
                }
                let reason = std::str::from_utf8(r.bytes(len)?)
                    .map_err(|_| r.bad("upload error reason is not UTF-8".into()))?;
                LogOp::UploadFailed {
                    ino,
                    generation,
                    reason,
                }
            }
            17 => {
                let intent = r.u64()?;
                let file = FileId(r.array::<32>()?);
                let key = r.array::<32>()?;
                let n = r.u32()? as usize;
                if n > REPACK_MAX_FILES {
                    return Err(r.bad(format!("a repack of {n} files")));
                }
                let mut moves = Vec::with_capacity(n);
                for _ in 0..n {
                    moves.push(RepackMove {
                        ino: ino(&mut r)?,
                        old_file: FileId(r.array::<32>()?),
                        old_offset: r.u64()?,
                        len: r.u64()?,
                        new_offset: r.u64()?,
                    });
                }
                LogOp::Repack {
                    intent,
                    file,
                    key,
                    moves,
                    switched: r.u64()?,
                }
            }
            t => return Err(r.bad(format!("unknown operation tag {t}"))),
        };
        r.finish()?;
        Ok(op)
    }
}

fn put_setattr(w: &mut Vec<u8>, ino: InodeNo, set: &SetAttr, now: Timestamp) {
    put_u64(w, ino.0);
    let flags = u8::from(set.perm.is_some())
        | u8::from(set.uid.is_some()) << 1
        | u8::from(set.gid.is_some()) << 2
        | u8::from(set.size.is_some()) << 3
        | u8::from(set.atime.is_some()) << 4
        | u8::from(set.mtime.is_some()) << 5
        | u8::from(set.ctime.is_some()) << 6;
    w.push(flags);
    if let Some(v) = set.perm {
        put_u16(w, v);
    }
    if let Some(v) = set.uid {
        put_u32(w, v);
    }
    if let Some(v) = set.gid {
        put_u32(w, v);
    }
    if let Some(v) = set.size {
        put_u64(w, v);
    }
    for t in [set.atime, set.mtime, set.ctime].into_iter().flatten() {
        put_time(w, t);
    }
    put_time(w, now);
}

/// The fields [`put_setattr`] wrote: inode, changes, now.
fn setattr_fields(r: &mut Reader<'_>) -> Result<(InodeNo, SetAttr, Timestamp)> {
    let ino = InodeNo(r.u64()?);
    let flags = r.u8()?;
    if flags >= 1 << 7 {
        return Err(r.bad(format!("setattr flags {flags:#x}")));
    }
    let has = |bit: u8| flags & (1 << bit) != 0;
    // Fields in the order put_setattr writes them, each only when its flag is set.
    let set = SetAttr {
        perm: has(0).then(|| r.u16()).transpose()?,
        uid: has(1).then(|| r.u32()).transpose()?,
        gid: has(2).then(|| r.u32()).transpose()?,
        size: has(3).then(|| r.u64()).transpose()?,
        atime: has(4).then(|| r.time()).transpose()?,
        mtime: has(5).then(|| r.time()).transpose()?,
        ctime: has(6).then(|| r.time()).transpose()?,
    };
    Ok((ino, set, r.time()?))
}

fn bytes16<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    let len = r.u16()?;
    r.bytes(usize::from(len))
}

fn init(r: &mut Reader<'_>) -> Result<NewInode> {
    Ok(NewInode {
        perm: r.u16()?,
        uid: r.u32()?,
        gid: r.u32()?,
    })
}

fn flag(r: &mut Reader<'_>) -> Result<bool> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        t => Err(r.bad(format!("flag byte {t}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn every_record_kind_round_trips_and_truncations_are_refused() {
        let n = NewInode {
            perm: 0o640,
            uid: 7,
            gid: 8,
        };
        let t = Timestamp::new(-5, 999_999_999);
        let ops = vec![
            LogOp::Setattr {
                ino: InodeNo(3),
                set: SetAttr {
                    perm: Some(0o7777),
                    uid: None,
                    gid: Some(2),
                    size: Some(u64::MAX),
                    atime: None,
                    mtime: Some(t),
                    ctime: Some(Timestamp::new(1, 2)),
                },
                now: t,
            },
            LogOp::Create {
                parent: InodeNo(1),
                name: b"a",
                init: n,
                exclusive: true,
                now: t,
                ino: Some(InodeNo(9)),
            },
            LogOp::Create {
                parent: InodeNo(1),
                name: b"a",
                init: n,
                exclusive: false,
                now: t,
                ino: None,
            },
            LogOp::Make {
                parent: InodeNo(1),
                name: b"l",
                kind: FileKind::Symlink,
                init: n,
                now: t,
                target: b"target",
                rdev: 0,
                ino: InodeNo(10),
            },
            LogOp::Make {
                parent: InodeNo(1),
                name: b"null",
                kind: FileKind::CharDevice,
                init: n,
                now: t,
                target: b"",
                rdev: 0x0103,
                ino: InodeNo(11),
            },
            LogOp::Make {
                parent: InodeNo(1),
                name: b"S.agent",
                kind: FileKind::Socket,
                init: n,
                now: t,
                target: b"",
                rdev: 0,
                ino: InodeNo(12),
            },
            LogOp::Link {
                ino: InodeNo(2),
                newparent: InodeNo(1),
                newname: b"x",
                now: t,
            },
            LogOp::Unlink {
                parent: InodeNo(1),
                name: b"x",
                now: t,
            },
            LogOp::Rmdir {
                parent: InodeNo(1),
                name: b"d",
                now: t,
            },
            LogOp::Rename {
                parent: InodeNo(1),
                name: b"a",
                newparent: InodeNo(4),
                newname: b"b",
                mode: RenameMode::Exchange,
                now: t,
            },
            LogOp::SetXattr {
                ino: InodeNo(2),
                name: b"user.x",
                value: &[7; 300],
                mode: XattrMode::Replace,
                now: t,
            },
            LogOp::RemoveXattr {
                ino: InodeNo(2),
                name: b"user.x",
                now: t,
            },
            LogOp::Purge { ino: InodeNo(5) },
            LogOp::MarkDirty {
                ino: InodeNo(2),
                now: t,
                generation: Generation(4),
            },
            LogOp::BeginUpload {
                ino: InodeNo(2),
                generation: Generation(4),
            },
            LogOp::FinishUpload {
                ino: InodeNo(2),
                generation: Generation(4),
                content: Content::Stored {
                    file: FileId([3; 32]),
                    key: [4; 32],
                    offset: 5,
                    len: 6,
                },
                clean: true,
            },
            LogOp::UploadFailed {
                ino: InodeNo(2),
                generation: Generation(4),
                reason: "peer gone…",
            },
            LogOp::Repack {
                intent: 3,
                file: FileId([5; 32]),
                key: [6; 32],
                moves: vec![
                    RepackMove {
                        ino: InodeNo(7),
                        old_file: FileId([8; 32]),
                        old_offset: 9,
                        len: 10,
                        new_offset: 0,
                    };
                    3
                ],
                switched: 2,
            },
            LogOp::SetattrDirty {
                ino: InodeNo(2),
                set: SetAttr {
                    size: Some(4096),
                    mtime: Some(t),
                    ctime: Some(t),
                    ..SetAttr::default()
                },
                now: t,
                generation: Generation(5),
            },
        ];
        for op in ops {
            let mut w = Vec::new();
            op.encode(&mut w);
            assert!(w.len() <= MAX_RECORD as usize);
            assert_eq!(LogOp::decode(&w).unwrap(), op);
            for cut in 0..w.len() {
                assert!(LogOp::decode(&w[..cut]).is_err(), "{op:?} cut at {cut}");
            }
            let mut longer = w.clone();
            longer.push(0);
            assert!(LogOp::decode(&longer).is_err());
        }
        assert!(LogOp::decode(&[99]).is_err());
        // The largest repack record fits the record limit; one file more is refused.
        let mv = RepackMove {
            ino: InodeNo(1),
            old_file: FileId([1; 32]),
            old_offset: 0,
            len: 1,
            new_offset: 0,
        };
        let mut w = Vec::new();
        LogOp::Repack {
            intent: 1,
            file: FileId([2; 32]),
            key: [3; 32],
            moves: vec![mv; REPACK_MAX_FILES],
            switched: 0,
        }
        .encode(&mut w);
        assert!(w.len() <= MAX_RECORD as usize, "{}", w.len());
        assert!(LogOp::decode(&w).is_ok());
        let mut over = Vec::new();
        LogOp::Repack {
            intent: 1,
            file: FileId([2; 32]),
            key: [3; 32],
            moves: vec![mv; REPACK_MAX_FILES + 1],
            switched: 0,
        }
        .encode(&mut over);
        assert!(LogOp::decode(&over).is_err());
    }

    #[test]
    fn a_make_record_whose_kind_tag_or_device_number_do_not_agree_is_refused() {
        let make = |kind, rdev| {
            let mut w = Vec::new();
            LogOp::Make {
                parent: InodeNo(1),
                name: b"n",
                kind,
                init: NewInode {
                    perm: 0o644,
                    uid: 0,
                    gid: 0,
                },
                now: Timestamp::new(1, 0),
                target: b"",
                rdev,
                ino: InodeNo(5),
            }
            .encode(&mut w);
            w
        };
        let refused = |w: &[u8], why: &str| {
            let e = LogOp::decode(w).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(why), "{e}");
        };
        // Tag 3 (mkdir/fifo/symlink, the layout older builds write) naming a device kind.
        let mut w = make(FileKind::Fifo, 0);
        assert_eq!((w[0], w[12]), (3, FileKind::Fifo.tag()));
        w[12] = FileKind::BlockDevice.tag();
        refused(&w, "kind 6 in a record of tag 3");
        // Tag 16 (device nodes, sockets) naming an older kind.
        let mut w = make(FileKind::CharDevice, 0x0103);
        assert_eq!((w[0], w[12]), (16, FileKind::CharDevice.tag()));
        w[12] = FileKind::RegularFile.tag();
        refused(&w, "kind 1 in a record of tag 16");
        // A socket with a device number.
        let mut w = make(FileKind::Socket, 0);
        w[13..17].copy_from_slice(&7u32.to_le_bytes());
        refused(&w, "device number on an inode that is not a device node");
    }
}
