//! Issue 25: README.md's walk-through ("Try it on one machine: a devnet") runs as written. The
//! test reads its `sh` blocks from README.md itself and runs them, in order, in one bash shell
//! — devnet, init, put, get, peers, mount, cp, rsync, sync, status, unmount — with the built
//! binaries on PATH and HOME in a temp dir, so the README cannot rot.

use std::path::Path;
use std::process::Command;

use defs_tests::cluster::text;

/// The heading of the walk-through's section in README.md.
const SECTION: &str = "## Try it on one machine: a devnet";

/// The walk-through may take this long at most (coreutils `timeout` ends it after that).
const SCRIPT_TIMEOUT_SECS: u32 = 300;

/// The bodies of the ```sh blocks of README.md's walk-through section, in order.
fn walk_through(readme: &str) -> Vec<String> {
    let start = readme
        .find(SECTION)
        .unwrap_or_else(|| panic!("README.md has no {SECTION:?} section"));
    let section = &readme[start + SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + "```sh\n".len()..];
        let end = body
            .find("```")
            .unwrap_or_else(|| panic!("an unclosed ```sh block in README.md"));
        blocks.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    blocks
}

#[test]
fn the_readme_walk_through_runs_as_written() {
    if let Some(why) = defs_tests::mount::fuse_unusable() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("FUSE tests cannot run: {why} (CI=true: failing, not skipping)");
        }
        eprintln!("skipping a FUSE test: {why}");
        return;
    }
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", readme_path.display()));
    let blocks = walk_through(&readme);
    let script = blocks.join("\n");
    // The walk-through covers what the issue asks a newcomer to see work.
    for step in [
        "defs devnet",
        "defs init",
        "defs put",
        "defs get",
        "defs peers",
        "defs-mount",
        "cp -a",
        "rsync",
        "defs sync",
        "defs status",
        "fusermount3 -u",
    ] {
        assert!(script.contains(step), "the walk-through lost `{step}`");
    }
    // Every node it starts stays on 127.0.0.1 without mDNS (the devnet does by itself).
    for line in script.lines().filter(|l| l.contains("defs-mount ")) {
        assert!(
            line.contains("--no-mdns") && line.contains("/ip4/127.0.0.1/"),
            "{line}"
        );
    }

    let home = tempfile::Builder::new()
        .prefix("defs-readme")
        .tempdir()
        .unwrap();
    // Not part of the README: whatever happens, leave no mount or devnet behind.
    let harness = "set -euo pipefail\n\
        cleanup() { fusermount3 -u \"$HOME/defs\" 2>/dev/null || true; \
        kill $(jobs -p) 2>/dev/null || true; wait; }\n\
        trap cleanup EXIT\nset -x\n";
    let path = format!(
        "{}:{}",
        defs_tests::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("timeout")
        .arg(SCRIPT_TIMEOUT_SECS.to_string())
        .args(["bash", "-c"])
        .arg(format!("{harness}{script}"))
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("PATH", path)
        .env_remove("DEFS_DATA_DIR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("running bash: {e}"));
    let all = text(&o);
    let log = std::fs::read_to_string(home.path().join("defs-data/logs/defs-mount.log"))
        .unwrap_or_default();
    assert!(o.status.success(), "{all}\nmount log:\n{log}");
    // What it printed is true: the put found the whole devnet through one address, spread the
    // file over it, and sync and the durability attribute say the copies are on the network.
    assert!(all.contains("network: 5 storage peer(s)"), "{all}");
    assert!(
        all.contains("on the network: ") && all.contains("survives 2 lost nodes"),
        "{all}"
    );
    assert!(all.contains("every file there is on the network"), "{all}");
    // The tree was published, and a data dir holding only the key mounted all of it again.
    assert!(all.contains("namespace published (seq "), "{all}");
    assert!(all.contains("the whole tree is back"), "{all}");
    assert!(!all.contains("warning: not on the network"), "{all}");
    assert!(
        all.contains("user.defs.durability=\"on the network: "),
        "{all}"
    );
}

#[test]
fn the_walk_through_is_found_in_the_readme() {
    let readme = "## Try it on one machine: a devnet\n\ntext\n\n```sh\na\nb\n```\n\n```sh\nc\n```\n\n## Next\n\n```sh\nd\n```\n";
    assert_eq!(walk_through(readme), vec!["a\nb\n", "c\n"]);
}

/// README's first command: `ci/try` (with the built binaries, `DEFS_BIN_DIR`) starts a devnet,
/// mounts DeFS at `~/defs` over it, and what is copied in syncs to the network.
#[test]
fn ci_try_mounts_defs_over_a_devnet() {
    if let Some(why) = defs_tests::mount::fuse_unusable() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("FUSE tests cannot run: {why} (CI=true: failing, not skipping)");
        }
        eprintln!("skipping a FUSE test: {why}");
        return;
    }
    let home = tempfile::Builder::new()
        .prefix("defs-try")
        .tempdir()
        .unwrap();
    let try_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/try");
    let mnt = home.path().join("defs");
    let with_env = |c: &mut Command| {
        c.env("HOME", home.path())
            .env("DEFS_BIN_DIR", defs_tests::bin_dir())
            .env("DEFS_DATA_DIR", home.path().join("defs-try/data"))
            .env_remove("RUST_LOG");
    };
    let mut c = Command::new("timeout");
    c.arg(SCRIPT_TIMEOUT_SECS.to_string()).arg(&try_script);
    with_env(&mut c);
    let o = c.output().unwrap_or_else(|e| panic!("running ci/try: {e}"));
    // Whatever happened: unmount and stop the devnet ci/try started.
    let stop = || {
        let _ = Command::new("fusermount3").arg("-u").arg(&mnt).output();
        if let Ok(pid) = std::fs::read_to_string(home.path().join("defs-try/devnet.pid"))
            && let Ok(pid) = pid.trim().parse::<u32>()
        {
            // The devnet process this test started through ci/try, by its id.
            let _ = Command::new("kill").arg(pid.to_string()).output();
        }
    };
    if !o.status.success() {
        stop();
        panic!("ci/try failed: {}", text(&o));
    }
    assert!(
        text(&o).contains("over a devnet of 5 storage nodes"),
        "{}",
        text(&o)
    );
    std::fs::write(mnt.join("hello.txt"), b"hello").unwrap();
    let mut sync = defs_tests::bin("defs");
    sync.arg("sync").arg(&mnt);
    with_env(&mut sync);
    let s = sync.output().unwrap();
    stop();
    assert!(s.status.success(), "{}", text(&s));
    assert!(
        text(&s).contains("every file there is on the network"),
        "{}",
        text(&s)
    );
}
