//! Real FUSE mounts through `defs-mount`: every statement of docs/SEMANTICS.md, the tools users
//! run (cp, rsync, tar, editors), a backup of every file kind, mount life cycle, and crash
//! recovery.
//!
//! Each test mounts its own DeFS in a temp dir and acts only through the kernel (std::fs, libc
//! calls through nix, and the real tools).

mod audit;
mod backup;
mod compaction;
mod crash;
mod fstab;
mod fsx;
mod gc;
mod holes;
mod lease;
mod lifecycle;
mod packing;
mod posix;
mod quota;
mod readme;
mod recovery;
mod remount;
mod safety;
mod sync;
mod tools;
mod versions;

/// Mounts a fresh DeFS, or returns from the test when FUSE is unusable outside CI.
macro_rules! mount {
    () => {
        match defs_tests::mount::TestMount::new() {
            Some(m) => m,
            None => return,
        }
    };
    ($($opt:expr),+) => {
        match defs_tests::mount::TestMount::with_options(&[$($opt),+]) {
            Some(m) => m,
            None => return,
        }
    };
}
pub(crate) use mount;

/// The errno of an io::Error.
pub(crate) fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}
