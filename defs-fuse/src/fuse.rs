//! The fuser adapter: implements [`fuser::Filesystem`] by decoding each request's arguments,
//! calling the async core ([`crate::fs::Fs`]) and replying with its result or its errno.
//!
//! Nothing here decides anything about files: every rule lives in `fs.rs`, which tests drive
//! without a kernel. Each request runs in a `tracing` span carrying `req` and `ino`; errors are
//! logged at the level [`ToErrno::level`] chooses.
//!
//! fuser calls these handlers on `n_threads` session threads (see [`crate::session`]). A
//! request that never waits on the network (lookups, namespace changes, attributes) runs its
//! future to completion on the session thread with the runtime handle. One that may wait
//! (read, write, setattr, fsync, statfs, getxattr, fallocate: uncached bytes, the first
//! change of a stored file, `sync=network`, the network's capacity, durability) is polled
//! once on the session thread and answered at once when it needs nothing more; otherwise it
//! moves to the runtime, which answers the kernel when it completes, and the session thread
//! goes back to the next request (libfuse's design: fuser's replies may be sent from any
//! thread). So reads waiting for peers never hold up a `stat` or `readdir`, however many there
//! are and however few session threads.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use defs_core::namespace::{Attr, FileKind, Timestamp};
use defs_core::types::InodeNo;
use fuser::{
    AccessFlags, Errno, FileAttr, FileType, Filesystem, FopenFlags, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{Instrument, Level as TraceLevel, debug, error, field, span, warn};

use crate::fs::error::{Error, Level, ToErrno};
use crate::fs::{FileHandle, Fs, Opened, Owner, SetAttr, StatFs, TimeSet};

/// How long the kernel may cache attributes and directory entries. One second: long enough that
/// `ls -l` of a big directory does not re-ask for every entry, short enough that a change seen by
/// another process shows up at once in practice.
pub const ATTR_TTL: Duration = Duration::from_secs(1);

/// The largest write the kernel sends in one request: 1 MiB, so a sequential copy costs one
/// request per MiB instead of one per 128 KiB page run.
pub const MAX_WRITE: u32 = 1 << 20;

/// Block size reported by `stat` and `statfs`.
pub const BLOCK_SIZE: u32 = 4096;

/// The fuser `Filesystem`: an [`Fs`] plus the runtime its futures run on.
#[derive(Debug)]
pub struct FuseFs {
    fs: Fs,
    rt: tokio::runtime::Handle,
}

impl FuseFs {
    /// Wraps `fs`; requests run their futures on `rt`.
    pub fn new(fs: Fs, rt: tokio::runtime::Handle) -> FuseFs {
        FuseFs { fs, rt }
    }

    /// The span a request runs in.
    fn span(op: &'static str, req: &Request, ino: u64) -> tracing::Span {
        span!(
            TraceLevel::DEBUG,
            "fuse",
            op,
            req = req.unique().0,
            ino,
            errno = field::Empty
        )
    }

    /// Runs one request's future inside a span, on the runtime.
    fn run<T>(
        &self,
        op: &'static str,
        req: &Request,
        ino: u64,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Errno> {
        let span = Self::span(op, req, ino);
        let result = self.rt.block_on(fut.instrument(span.clone()));
        errno_of(&span, result)
    }

    /// Runs one request (see [`FuseFs::run`]) and answers the kernel with its result.
    fn reply<T>(
        &self,
        op: &'static str,
        req: &Request,
        ino: u64,
        fut: impl Future<Output = Result<T, Error>>,
        reply: impl Answer<T>,
    ) {
        answer(self.run(op, req, ino, fut), reply);
    }

    /// Runs one request that may wait on the network: polled once here and answered at once
    /// when it completes without waiting, else moved to the runtime, which answers when it is
    /// done (see the module doc).
    fn reply_or_spawn<T: Send + 'static>(
        &self,
        op: &'static str,
        req: &Request,
        ino: u64,
        fut: impl Future<Output = Result<T, Error>> + Send + 'static,
        reply: impl Answer<T> + Send + 'static,
    ) {
        let span = Self::span(op, req, ino);
        let mut fut = Box::pin(fut.instrument(span.clone()));
        let polled = {
            // Inside the runtime's context: the future may touch timers and sockets. The waker
            // is a no-op: a future left pending is polled again by the runtime at once, with
            // the task's waker, and registers that one (every future re-registers on each poll).
            let _context = self.rt.enter();
            fut.as_mut()
                .poll(&mut Context::from_waker(std::task::Waker::noop()))
        };
        match polled {
            Poll::Ready(result) => answer(errno_of(&span, result), reply),
            Poll::Pending => {
                self.rt.spawn(async move {
                    let result = fut.await;
                    answer(errno_of(&span, result), reply);
                });
            }
        }
    }

    /// An operation DeFS does not implement: counted, logged, answered with `errno`.
    fn unsupported(&self, op: &'static str, errno: i32) -> Errno {
        self.fs.count_unsupported(op);
        debug!(op, errno, "unsupported operation");
        Errno::from_i32(errno)
    }
}

/// A request's result with its error logged (at the error's level, in the request's span) and
/// turned into its errno.
fn errno_of<T>(span: &tracing::Span, result: Result<T, Error>) -> Result<T, Errno> {
    result.map_err(|e| {
        let errno = e.to_errno();
        span.record("errno", errno);
        let _enter = span.enter();
        match e.level() {
            Level::Debug => debug!(errno, error = %e, "refused"),
            Level::Warn => warn!(errno, error = %e, "refused"),
            Level::Error => error!(errno, error = %format!("{e:#}"), "failed"),
        }
        Errno::from_i32(errno)
    })
}

/// Answers the kernel with a request's value or errno.
fn answer<T>(result: Result<T, Errno>, reply: impl Answer<T>) {
    match result {
        Ok(value) => reply.answer(value),
        Err(errno) => reply.fail(errno),
    }
}

fn owner(req: &Request) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn ino(i: INodeNo) -> InodeNo {
    InodeNo(i.0)
}

fn fh(h: fuser::FileHandle) -> FileHandle {
    FileHandle(h.0)
}

fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::new(t.secs.unsigned_abs(), t.nanos.min(999_999_999));
    if t.secs >= 0 {
        UNIX_EPOCH + nanos
    } else {
        // A time before 1970: secs is negative and nanos counts forward from it.
        let back = Duration::from_secs(t.secs.unsigned_abs());
        UNIX_EPOCH - back + Duration::from_nanos(u64::from(t.nanos.min(999_999_999)))
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(st) => TimeSet::At(timestamp(st)),
    }
}

/// A `SystemTime` as seconds and nanoseconds since the epoch (negative seconds before 1970).
pub(crate) fn timestamp(st: SystemTime) -> Timestamp {
    match st.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let mut secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let mut nanos = d.subsec_nanos();
            if nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            Timestamp { secs, nanos }
        }
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::RegularFile => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.allocated.unwrap_or(a.size).div_ceil(512),
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: system_time(a.ctime),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn generation(a: &Attr) -> fuser::Generation {
    // The inode generation for NFS-style handles: DeFS never reuses an inode number, so 0 is
    // always right.
    let _ = a;
    fuser::Generation(0)
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        // readdirplus: one request fills a directory listing with attributes, so `ls -l` and
        // rsync's scan do not send a lookup per entry.
        let wanted =
            fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO;
        if config.add_capabilities(wanted).is_err() {
            warn!("the kernel does not offer readdirplus");
        }
        // Directory operations in parallel (the namespace serialises its own writes).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        // Exact timestamps: the kernel passes utimensat's nanoseconds through.
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.rt.block_on(self.fs.unmounting()) {
            error!(error = %format!("{e:#}"), "flushing the journal at unmount failed");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply(
            "lookup",
            req,
            parent.0,
            self.fs.lookup(ino(parent), name),
            Lookup(reply),
        );
    }

    fn forget(&self, _req: &Request, i: INodeNo, nlookup: u64) {
        self.fs.forget(ino(i), nlookup);
    }

    fn getattr(&self, req: &Request, i: INodeNo, _fh: Option<fuser::FileHandle>, reply: ReplyAttr) {
        self.reply("getattr", req, i.0, self.fs.getattr(ino(i)), reply);
    }

    fn setattr(
        &self,
        req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        handle: Option<fuser::FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            perm: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            ctime: ctime.map(timestamp),
        };
        let fs = self.fs.clone();
        let fut = async move { fs.setattr(ino(i), handle.map(fh), set).await };
        self.reply_or_spawn("setattr", req, i.0, fut, reply);
    }

    fn readlink(&self, req: &Request, i: INodeNo, reply: ReplyData) {
        self.reply("readlink", req, i.0, self.fs.readlink(ino(i)), reply);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let fut = self.fs.mknod(ino(parent), name, mode, rdev, owner(req));
        self.reply("mknod", req, parent.0, fut, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let fut = self
            .fs
            .mkdir(ino(parent), name, (mode & 0o7777) as u16, owner(req));
        self.reply("mkdir", req, parent.0, fut, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.reply(
            "unlink",
            req,
            parent.0,
            self.fs.unlink(ino(parent), name),
            reply,
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.reply(
            "rmdir",
            req,
            parent.0,
            self.fs.rmdir(ino(parent), name),
            reply,
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let fut = self.fs.symlink(
            ino(parent),
            link_name,
            target.as_os_str().as_bytes(),
            owner(req),
        );
        self.reply("symlink", req, parent.0, fut, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let fut = self
            .fs
            .rename(ino(parent), name, ino(newparent), newname, flags.bits());
        self.reply("rename", req, parent.0, fut, reply);
    }

    fn link(
        &self,
        req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply(
            "link",
            req,
            i.0,
            self.fs.link(ino(i), ino(newparent), newname),
            reply,
        );
    }

    fn open(&self, req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.reply("open", req, i.0, self.fs.open(ino(i), flags.0), reply);
    }

    fn read(
        &self,
        req: &Request,
        i: INodeNo,
        handle: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        let fut = async move { fs.read(ino(i), fh(handle), offset, size).await };
        self.reply_or_spawn("read", req, i.0, fut, reply);
    }

    fn write(
        &self,
        req: &Request,
        i: INodeNo,
        handle: fuser::FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.fs.write_may_wait(ino(i)) {
            // The first change of a stored file fetches what is not cached: off this thread,
            // with its own copy of the bytes.
            let fs = self.fs.clone();
            let data = data.to_vec();
            let fut = async move { fs.write(ino(i), fh(handle), offset, &data).await };
            self.reply_or_spawn("write", req, i.0, fut, reply);
        } else {
            let fut = self.fs.write(ino(i), fh(handle), offset, data);
            self.reply("write", req, i.0, fut, reply);
        }
    }

    /// `close(2)` has nothing to save: every write saved its size, mtime and dirty mark before
    /// it was acknowledged, and write errors are reported by the writes (no writeback cache).
    /// ENOSYS makes the kernel stop sending FLUSH, so a close costs no round trip.
    fn flush(
        &self,
        _req: &Request,
        _i: INodeNo,
        _handle: fuser::FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn release(
        &self,
        req: &Request,
        i: INodeNo,
        handle: fuser::FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.reply(
            "release",
            req,
            i.0,
            self.fs.release(ino(i), fh(handle)),
            reply,
        );
    }

    fn fsync(
        &self,
        req: &Request,
        i: INodeNo,
        handle: fuser::FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let fut = async move { fs.fsync(ino(i), fh(handle), datasync).await };
        self.reply_or_spawn("fsync", req, i.0, fut, reply);
    }

    fn opendir(&self, req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.reply("opendir", req, i.0, self.fs.opendir(ino(i)), reply);
    }

    fn readdir(
        &self,
        req: &Request,
        i: INodeNo,
        handle: fuser::FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let fut = self.fs.readdir(ino(i), fh(handle), offset, false);
        match self.run("readdir", req, i.0, fut) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(INodeNo(e.ino.0), e.cookie, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        i: INodeNo,
        handle: fuser::FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let fut = self.fs.readdir(ino(i), fh(handle), offset, true);
        match self.run("readdirplus", req, i.0, fut) {
            Ok(entries) => {
                for e in entries {
                    let Some(attr) = e.attr else { continue };
                    let full = reply.add(
                        INodeNo(e.ino.0),
                        e.cookie,
                        &e.name,
                        &ATTR_TTL,
                        &file_attr(&attr),
                        generation(&attr),
                    );
                    if full {
                        break;
                    }
                    // The kernel now holds a lookup reference on every entry but "." and "..".
                    if e.name != "." && e.name != ".." {
                        self.fs.remember(e.ino);
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        req: &Request,
        i: INodeNo,
        handle: fuser::FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.reply(
            "releasedir",
            req,
            i.0,
            self.fs.releasedir(ino(i), fh(handle)),
            reply,
        );
    }

    fn fsyncdir(
        &self,
        req: &Request,
        i: INodeNo,
        _handle: fuser::FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.reply("fsyncdir", req, i.0, self.fs.fsyncdir(ino(i)), reply);
    }

    fn statfs(&self, req: &Request, i: INodeNo, reply: ReplyStatfs) {
        let fs = self.fs.clone();
        self.reply_or_spawn("statfs", req, i.0, async move { fs.statfs().await }, reply);
    }

    fn setxattr(
        &self,
        req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 {
            // Only macOS resource forks use a position.
            reply.error(self.unsupported("setxattr(position)", libc::EINVAL));
            return;
        }
        let fut = self
            .fs
            .setxattr(ino(i), name.as_bytes(), value, flags, owner(req));
        self.reply("setxattr", req, i.0, fut, reply);
    }

    fn getxattr(&self, req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let fs = self.fs.clone();
        let name = name.as_bytes().to_vec();
        let fut = async move { fs.getxattr(ino(i), &name).await };
        self.reply_or_spawn("getxattr", req, i.0, fut, XattrReply(reply, size));
    }

    fn listxattr(&self, req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        let fut = self.fs.listxattr(ino(i));
        self.reply("listxattr", req, i.0, fut, XattrReply(reply, size));
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.reply(
            "removexattr",
            req,
            i.0,
            self.fs.removexattr(ino(i), name.as_bytes()),
            reply,
        );
    }

    fn access(&self, req: &Request, i: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel has already checked the mode bits; access only needs
        // the inode to exist.
        let fut = async { self.fs.getattr(ino(i)).await.map(drop) };
        self.reply("access", req, i.0, fut, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let fut = self.fs.create(ino(parent), name, mode, flags, owner(req));
        self.reply("create", req, parent.0, fut, reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        i: INodeNo,
        handle: fuser::FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let fut = async move { fs.fallocate(ino(i), fh(handle), offset, length, mode).await };
        self.reply_or_spawn("fallocate", req, i.0, fut, reply);
    }

    fn lseek(
        &self,
        req: &Request,
        i: INodeNo,
        handle: fuser::FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let fs = self.fs.clone();
        let fut = async move { fs.lseek(ino(i), fh(handle), offset, whence).await };
        self.reply_or_spawn("lseek", req, i.0, fut, reply);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: fuser::FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: fuser::FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // ENOSYS: the kernel falls back to reading and writing through the page cache.
        reply.error(self.unsupported("copy_file_range", libc::ENOSYS));
    }

    fn bmap(&self, _req: &Request, _ino: INodeNo, _bs: u32, _idx: u64, reply: fuser::ReplyBmap) {
        reply.error(self.unsupported("bmap", libc::ENOSYS));
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: fuser::FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(self.unsupported("ioctl", libc::ENOTTY));
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: fuser::FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: fuser::ReplyLock,
    ) {
        // Not reached: without FUSE_POSIX_LOCKS the kernel keeps locks locally.
        reply.error(self.unsupported("getlk", libc::ENOSYS));
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: fuser::FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(self.unsupported("setlk", libc::ENOSYS));
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: fuser::FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        reply.error(self.unsupported("poll", libc::ENOSYS));
    }
}

fn fopen_flags(keep_cache: bool) -> FopenFlags {
    if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

/// A fuser reply that can carry the core's result `T` to the kernel, or an errno.
trait Answer<T> {
    fn answer(self, value: T);
    fn fail(self, errno: Errno);
}

/// Implements [`Answer`] for a reply type: `|reply, value| how to answer`.
macro_rules! answer {
    ($reply:ty, $t:ty, |$r:ident, $v:ident| $body:expr) => {
        impl Answer<$t> for $reply {
            fn answer(self, $v: $t) {
                let $r = self;
                $body
            }
            fn fail(self, errno: Errno) {
                self.error(errno)
            }
        }
    };
}

answer!(ReplyEntry, Attr, |r, a| r.entry(
    &ATTR_TTL,
    &file_attr(&a),
    generation(&a)
));
answer!(ReplyAttr, Attr, |r, a| r.attr(&ATTR_TTL, &file_attr(&a)));
answer!(ReplyEmpty, (), |r, _v| r.ok());
answer!(ReplyData, Vec<u8>, |r, d| r.data(&d));
answer!(ReplyWrite, u32, |r, n| r.written(n));
answer!(ReplyLseek, i64, |r, at| r.offset(at));
answer!(ReplyOpen, Opened, |r, o| r
    .opened(fuser::FileHandle(o.fh.0), fopen_flags(o.keep_cache)));
answer!(ReplyOpen, FileHandle, |r, h| r
    .opened(fuser::FileHandle(h.0), FopenFlags::empty()));
answer!(ReplyCreate, (Attr, Opened), |r, v| r.created(
    &ATTR_TTL,
    &file_attr(&v.0),
    generation(&v.0),
    fuser::FileHandle(v.1.fh.0),
    fopen_flags(v.1.keep_cache)
));
answer!(ReplyStatfs, StatFs, |r, s| r.statfs(
    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize
));

/// A lookup's reply: a missing name is answered with a negative entry (inode 0) that the
/// kernel caches for [`ATTR_TTL`], like a found one. A bare ENOENT is not cached, so every
/// `stat` of a missing name, then the `open(O_CREAT)` and the `rename` onto it, would each ask
/// again: rsync makes three lookups of each name it is about to create. Names only appear
/// through this mount, whose kernel updates the cached entry itself when it creates one.
struct Lookup(ReplyEntry);

impl Answer<Attr> for Lookup {
    fn answer(self, attr: Attr) {
        self.0.answer(attr);
    }
    fn fail(self, errno: Errno) {
        if errno == Errno::ENOENT {
            let none = FileAttr {
                ino: INodeNo(0),
                size: 0,
                blocks: 0,
                atime: UNIX_EPOCH,
                mtime: UNIX_EPOCH,
                ctime: UNIX_EPOCH,
                crtime: UNIX_EPOCH,
                kind: FileType::RegularFile,
                perm: 0,
                nlink: 0,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: BLOCK_SIZE,
                flags: 0,
            };
            self.0.entry(&ATTR_TTL, &none, fuser::Generation(0));
        } else {
            self.0.error(errno);
        }
    }
}

/// A getxattr/listxattr reply and the caller's buffer size: size 0 asks for the length; a
/// too-small buffer is ERANGE.
struct XattrReply(ReplyXattr, u32);

impl Answer<Vec<u8>> for XattrReply {
    fn answer(self, value: Vec<u8>) {
        let XattrReply(reply, size) = self;
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        if size == 0 {
            reply.size(len);
        } else if len <= size {
            reply.data(&value);
        } else {
            reply.error(Errno::ERANGE);
        }
    }
    fn fail(self, errno: Errno) {
        self.0.error(errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_before_and_after_the_epoch() {
        for (secs, nanos) in [
            (0i64, 0u32),
            (1_700_000_000, 123_456_789),
            (-1, 500),
            (-86_400, 0),
        ] {
            let t = Timestamp { secs, nanos };
            let back = timestamp(system_time(t));
            assert_eq!((back.secs, back.nanos), (secs, nanos));
        }
    }
}
