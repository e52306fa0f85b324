//! Past versions (issue 17 item 5): a tree written through a mount over real `defs node`
//! processes on 127.0.0.1 and `defs sync`ed, then 10 files changed and synced again:
//! `/.snapshots` lists both versions, the old one reads the old bytes exactly (also after a
//! cache wipe), nothing in it can be written (EROFS) and the reserved name cannot be made
//! (EEXIST); a fresh data dir holding only `identity.key` mounts the new tree and still lists
//! and reads both versions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use defs_tests::cluster::{Cluster, out, text};
use defs_tests::mount::{TestMount, pseudo_random, run};

use defs_tests::mount::{bootstrap_args, key_only};

/// Publishing only when asked (`defs sync`, unmount): each synced state is one version.
const QUIET: &str = "[namespace]\npublish_debounce_secs = 600\nmax_staleness_secs = 600\n";

/// 3 directories of 8 files, sizes from a few bytes to 300 KiB (small, packed and coded ones).
fn write_tree(dst: &Path) {
    for d in 0..3 {
        let dir = dst.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        for f in 0..8 {
            let size = [3, 700, 5000, 40_000, 300_000][(d * 8 + f) % 5];
            fs::write(
                dir.join(format!("f{f}")),
                pseudo_random((d * 10 + f) as u64, size),
            )
            .unwrap_or_else(|e| panic!("write: {e}"));
        }
    }
}

/// The 10 files changed between the versions.
fn change_ten(dst: &Path) {
    for i in 0..10 {
        let path = dst.join(format!("d{}/f{}", i % 3, i / 3));
        fs::write(&path, pseudo_random(1000 + i as u64, 2000 + i * 999))
            .unwrap_or_else(|e| panic!("rewrite {}: {e}", path.display()));
    }
}

fn sync(m: &TestMount) {
    let o = out(m.defs().arg("sync").arg(m.mnt()));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
}

/// The names under `/.snapshots`, sorted (oldest first: they are UTC times).
fn versions(m: &TestMount) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(m.path(".snapshots"))
        .unwrap_or_else(|e| panic!("listing /.snapshots: {e}\nlog:\n{}", m.log()))
        .map(|e| match e {
            Ok(e) => e.file_name().to_string_lossy().into_owned(),
            Err(e) => panic!("reading /.snapshots: {e}"),
        })
        .collect();
    names.sort();
    names
}

fn same_tree(a: &Path, b: &Path) {
    run(Command::new("diff").arg("-r").arg(a).arg(b));
}

fn errno_of(r: std::io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Both versions listed and each one the tree it was synced as.
fn check_versions(m: &TestMount, old: &Path, new: &Path, when: &str) -> Vec<PathBuf> {
    let names = versions(m);
    assert_eq!(names.len(), 2, "{when}: {names:?}\nlog:\n{}", m.log());
    let dirs: Vec<PathBuf> = names
        .iter()
        .map(|n| m.path(".snapshots").join(n).join("dst"))
        .collect();
    same_tree(old, &dirs[0]);
    same_tree(new, &dirs[1]);
    dirs
}

#[test]
fn snapshots_list_both_synced_versions_read_only_and_after_recovery_from_the_key() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let args = bootstrap_args(&cluster);
    let Some(mut m) = TestMount::prepared(&args, |d| {
        defs_tests::cluster::init(d);
        // `defs init` wrote every setting: change the two in place.
        let config = d.join("config.toml");
        let text = fs::read_to_string(&config).unwrap_or_else(|e| panic!("config: {e}"));
        let text = text
            .replace(
                "publish_debounce_secs = 3\n",
                "publish_debounce_secs = 600\n",
            )
            .replace("max_staleness_secs = 60\n", "max_staleness_secs = 600\n");
        assert!(text.contains("max_staleness_secs = 600"), "{text}");
        fs::write(&config, text).unwrap_or_else(|e| panic!("config: {e}"));
    }) else {
        return;
    };
    m.mount();
    // The host's copies of both states, outside the mount.
    let (old, new) = (base.path().join("old"), base.path().join("new"));
    write_tree(&old);
    write_tree(&m.path("dst"));
    sync(&m);
    change_ten(&m.path("dst"));
    run(Command::new("cp").arg("-a").arg(&old).arg(&new));
    change_ten(&new);
    sync(&m);

    // The root lists only the tree; /.snapshots is found by name.
    let root: Vec<String> = fs::read_dir(m.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(root, vec!["dst".to_string()]);
    let dirs = check_versions(&m, &old, &new, "after two syncs");
    same_tree(&new, &m.path("dst"));

    // Read-only: writing, creating, removing inside a version; the reserved name.
    let file = dirs[0].join("d0/f0");
    assert_eq!(errno_of(fs::write(&file, b"x")), Some(libc::EROFS), "write");
    assert_eq!(
        errno_of(fs::create_dir(dirs[0].join("new"))),
        Some(libc::EROFS),
        "mkdir"
    );
    assert_eq!(
        errno_of(fs::remove_file(&file)),
        Some(libc::EROFS),
        "unlink"
    );
    assert_eq!(
        errno_of(fs::create_dir(m.path(".snapshots"))),
        Some(libc::EEXIST),
        "mkdir /.snapshots"
    );
    assert_eq!(
        errno_of(fs::rename(m.path("dst/d2"), m.path(".snapshots"))),
        Some(libc::EEXIST),
        "rename onto /.snapshots"
    );
    same_tree(&old, &dirs[0]);

    // After a cache wipe the old bytes come from the network, from the old manifests.
    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();
    check_versions(&m, &old, &new, "after a cache wipe");
    let key = fs::read(m.data_dir().join("identity.key")).unwrap();
    m.unmount();
    drop(m);

    // The machine is lost: a fresh data dir with only the key.
    let Some(mut r) = TestMount::prepared(&args, |d| key_only(d, &key, QUIET)) else {
        return;
    };
    r.mount();
    assert!(
        r.log().contains("namespace recovered from the network"),
        "log:\n{}",
        r.log()
    );
    same_tree(&new, &r.path("dst"));
    check_versions(&r, &old, &new, "after recovery from the key");
    r.unmount();
}
