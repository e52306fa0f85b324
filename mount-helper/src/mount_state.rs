//! What is left of a data dir's mount when its daemon is gone (`kill -9`, a crash): the pid
//! file `DIR/defs-mount.pid` and the kernel's mount entry, which then answers "Transport
//! endpoint is not connected". `defs status` says both, and what to do.

use std::path::{Path, PathBuf};

/// The serving daemon's process id, in `DIR` while it serves (scripts and tests signal it).
pub const PID_FILE: &str = "defs-mount.pid";

/// The kernel's mount table of this process.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// What `source` a DeFS mount of `dir` carries in the mount table: the data dir as mounted
/// (`defs-mount`, or the fstab line's first field), `defs` for the default data dir, or the
/// `defs:DIR` of earlier builds.
fn is_source_of(source: &str, dir: &Path, default_dir: Option<&Path>) -> bool {
    let path = Path::new(source.strip_prefix("defs:").unwrap_or(source));
    if path == dir || std::fs::canonicalize(path).is_ok_and(|p| p == dir) {
        return true;
    }
    (source == "defs" || source == "none") && default_dir == Some(dir)
}

/// Undoes the octal escapes (`\040` for a space) of a mountinfo field.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mountpoints of FUSE mounts of `dir` in a mountinfo text.
fn mounts_in(mountinfo: &str, dir: &Path, default_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mountpoint) = head.split(' ').nth(4) else {
            continue;
        };
        let mut t = tail.split(' ');
        let (Some(fstype), Some(source)) = (t.next(), t.next()) else {
            continue;
        };
        if (fstype == "fuse" || fstype.starts_with("fuse."))
            && is_source_of(&unescape(source), dir, default_dir)
        {
            found.push(PathBuf::from(unescape(mountpoint)));
        }
    }
    found
}

/// FUSE mounts of the data dir `dir` in this process's mount table.
pub fn mounts_of(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let default_dir = crate::data_dir::resolve(None)
        .ok()
        .and_then(|d| std::fs::canonicalize(d).ok());
    match std::fs::read_to_string(MOUNTINFO) {
        Ok(text) => mounts_in(&text, &dir, default_dir.as_deref()),
        Err(_) => Vec::new(),
    }
}

/// Whether process `pid` is alive (not a zombie) and is a `defs-mount`.
fn is_defs_mount(pid: i32) -> bool {
    let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    });
    running
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "defs-mount" || comm.trim() == "mount.defs")
}

/// The pid of a `defs-mount` of `dir` whose mount is already gone while the process still runs:
/// it was unmounted (`fusermount3 -u`) and is shutting down (its pid file names a live
/// `defs-mount` other than this process, and no FUSE mount of `dir` is left). Its control
/// socket may answer for a moment longer; a new mount waits for it instead of refusing.
pub fn unmounted_daemon(dir: &Path) -> Option<i32> {
    let pid = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    let own = i32::try_from(std::process::id()).ok();
    (Some(pid) != own && is_defs_mount(pid) && mounts_of(dir).is_empty()).then_some(pid)
}

/// When no daemon answers for `dir` (its control socket is silent): what is left of its
/// last mount, as lines for the user, each saying what to do. Removes a pid file whose process
/// is gone (and says so). Empty when nothing is left.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let pid_file = dir.join(PID_FILE);
    if let Ok(text) = std::fs::read_to_string(&pid_file) {
        match text.trim().parse::<i32>() {
            Ok(pid) if is_defs_mount(pid) => notes.push(format!(
                "defs-mount (pid {pid}, from {}) is running but its control socket does not \
                 answer: it may be starting, stopping or hung; if it stays so, stop it with \
                 `kill {pid}`",
                pid_file.display()
            )),
            pid => {
                let who =
                    pid.map_or_else(|_| "an unreadable pid".to_string(), |p| format!("pid {p}"));
                let removed = match std::fs::remove_file(&pid_file) {
                    Ok(()) => "removed it".to_string(),
                    Err(e) => format!("could not remove it: {e}"),
                };
                notes.push(format!(
                    "the defs-mount of {} is gone ({who} in {} is not running: it was killed or \
                     crashed); {removed}",
                    dir.display(),
                    pid_file.display()
                ));
            }
        }
    }
    for mp in mounts_of(dir) {
        notes.push(format!(
            "{} is still mounted but no defs-mount serves it (\"Transport endpoint is not \
             connected\"): run `fusermount3 -u {}` (or `umount`), then mount it again; files \
             closed before the daemon died are kept in {} and upload once mounted",
            mp.display(),
            mp.display(),
            dir.display()
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_mounts_of_a_data_dir_are_found_in_mountinfo() {
        let text = "\
36 35 98:0 / /mnt/a rw,nosuid,nodev - fuse.defs /var/lib/defs rw,user_id=0,group_id=0
37 35 98:1 / /mnt/b\\040c rw - fuse defs:/var/lib/defs rw
38 35 98:2 / /home rw - ext4 /var/lib/defs rw
39 35 98:3 / /mnt/other rw - fuse.defs /var/lib/other rw
40 35 98:4 / /mnt/d rw - fuse.defs defs rw";
        let dir = Path::new("/var/lib/defs");
        assert_eq!(
            mounts_in(text, dir, None),
            vec![PathBuf::from("/mnt/a"), PathBuf::from("/mnt/b c")]
        );
        assert_eq!(mounts_in(text, dir, Some(dir)).len(), 3);
    }

    #[test]
    fn only_a_live_defs_mount_without_its_mount_counts_as_unmounted() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(unmounted_daemon(dir.path()), None, "no pid file");
        std::fs::write(dir.path().join(PID_FILE), "999999999\n").unwrap();
        assert_eq!(unmounted_daemon(dir.path()), None, "a dead process");
        std::fs::write(
            dir.path().join(PID_FILE),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(
            unmounted_daemon(dir.path()),
            None,
            "this process, not a defs-mount"
        );
        std::fs::write(dir.path().join(PID_FILE), "garbage\n").unwrap();
        assert_eq!(unmounted_daemon(dir.path()), None, "an unreadable pid");
    }

    #[test]
    fn a_pid_file_of_a_dead_process_is_reported_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PID_FILE), "999999999\n").unwrap();
        let notes = leftovers(dir.path());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("is gone") && notes[0].contains("removed it"),
            "{notes:?}"
        );
        assert!(!dir.path().join(PID_FILE).exists());
        assert!(leftovers(dir.path()).is_empty());
    }
}
