//! Messages that say what happened, to what, and what to do (issue 25): the real `defs` binary
//! on local mistakes, before any network work.

use std::path::Path;

use defs_tests::cluster::{defs, init, out, text};

fn me(base: &Path) -> std::path::PathBuf {
    let d = base.join("me");
    init(&d);
    d
}

#[test]
fn r25_put_of_a_missing_file_names_it() {
    let base = tempfile::tempdir().unwrap();
    let dir = me(base.path());
    let missing = base.path().join("nosuch.jpg");
    let o = out(defs(&dir).arg("put").arg(&missing).arg("--no-mdns"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!("{}: no such file", missing.display()))
            && t.contains("nothing was stored"),
        "{t}"
    );
    assert!(!t.contains("refused") && !t.contains("I/O error"), "{t}");
}

#[test]
fn r25_get_into_a_missing_directory_names_the_directory() {
    let base = tempfile::tempdir().unwrap();
    let dir = me(base.path());
    let out_path = base.path().join("no/such/dir/copy.jpg");
    let o = out(defs(&dir)
        .args(["get", &"ab".repeat(32)])
        .arg(&out_path)
        .arg("--no-mdns"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!(
            "its directory {} does not exist",
            base.path().join("no/such/dir").display()
        )),
        "{t}"
    );
    assert!(!t.contains("defs-partial"), "{t}");
}

#[test]
fn r25_devnet_with_no_nodes_is_bad_usage() {
    let base = tempfile::tempdir().unwrap();
    let o = out(defs(base.path()).args(["devnet", "--nodes", "0"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--nodes"), "{}", text(&o));
}

#[test]
fn r25_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let base = tempfile::tempdir().unwrap();
    let dir = me(base.path());
    let o = out(defs(&dir)
        .env("RUST_LOG", "info")
        .args(["status", "--no-mdns"]));
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("INFO"), "no log lines to check: {err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in a piped log: {err:?}"
    );
}

#[test]
fn r25_a_locked_store_is_said_once() {
    let base = tempfile::tempdir().unwrap();
    let dir = me(base.path());
    // Another process holds the shard store's index (as a stuck node would).
    let _held = defs_core::shard_store::ShardStore::open(
        &dir.join("shards"),
        defs_core::shard_store::Quotas {
            capacity: 1 << 30,
            per_owner: 0,
        },
    )
    .unwrap();
    let o = out(defs(&dir).args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("cannot open the shard store"), "{t}");
    let lock = "Database already open";
    assert_eq!(t.matches(lock).count(), 1, "{t}");
}
