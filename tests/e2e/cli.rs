//! The command-line contract: exit codes and messages of the real `defs` binary.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use defs_tests::bin;

/// Runs `defs ARGS --data-dir DIR` with a low puzzle difficulty where it applies.
pub(crate) fn defs(args: &[&str], dir: &Path) -> Output {
    bin("defs")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("DEFS_DATA_DIR")
        .output()
        .unwrap_or_else(|e| panic!("cannot run defs: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn bad_usage_exits_with_code_2() {
    let out = bin("defs").arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-command"));
}

#[test]
fn init_creates_a_0600_key_a_0700_dir_and_a_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = defs(&["init", "--difficulty", "4"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let key_mode = fs::metadata(dir.join("identity.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let dir_mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let config = fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.contains("budget_bytes"), "{config}");
}

#[test]
fn init_twice_refuses_with_exit_1_and_keeps_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert_eq!(
        defs(&["init", "--difficulty", "0"], dir).status.code(),
        Some(0)
    );
    let key = fs::read(dir.join("identity.key")).unwrap();
    let out = defs(&["init", "--difficulty", "0"], dir);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(dir.join("identity.key")).unwrap(), key);
}

#[test]
fn id_prints_a_64_hex_node_id_matching_init() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let init = defs(&["init", "--difficulty", "0"], dir);
    assert_eq!(init.status.code(), Some(0));
    let out = defs(&["id"], dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let id = stdout
        .split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no 64-hex id in {stdout:?}"));
    assert!(text(&init.stdout).contains(id));
    // The public key: 33 bytes compressed, 66 hex.
    assert!(
        stdout
            .split_whitespace()
            .any(|w| w.len() == 66 && w.chars().all(|c| c.is_ascii_hexdigit()))
    );
}

#[test]
fn id_refuses_a_world_readable_key_with_a_chmod_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert_eq!(
        defs(&["init", "--difficulty", "0"], dir).status.code(),
        Some(0)
    );
    let key = dir.join("identity.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = defs(&["id"], dir);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(err.contains(&key.display().to_string()), "{err}");
}

#[test]
fn id_without_init_fails_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = defs(&["id"], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("defs init"));
}

#[test]
fn data_dir_defaults_to_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("from-env");
    let out = bin("defs")
        .args(["init", "--difficulty", "0"])
        .env("DEFS_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.join("identity.key").is_file());
    let xdg = tmp.path().join("xdg");
    let out = bin("defs")
        .args(["init", "--difficulty", "0"])
        .env_remove("DEFS_DATA_DIR")
        .env("XDG_DATA_HOME", &xdg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(xdg.join("defs/identity.key").is_file());
}

/// A node whose shard index is gone refuses to start, says why and how out, and leaves the
/// packs as they were (opening would have discarded them).
#[test]
fn a_node_with_a_lost_shard_index_refuses_to_start_and_keeps_its_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = defs(&["init", "--difficulty", "4"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let packs = dir.join("shards/packs");
    fs::create_dir_all(&packs).unwrap();
    let pack = packs.join("00000000.pack");
    fs::write(&pack, vec![7u8; 8192]).unwrap();
    let out = defs(
        &["node", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
        &dir,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("index.redb is missing or empty"),
        "{stderr}"
    );
    assert!(
        stderr.contains("move the packs and data directories away"),
        "{stderr}"
    );
    assert!(!stderr.contains("another defs node"), "{stderr}");
    assert_eq!(fs::read(&pack).unwrap(), vec![7u8; 8192]);
    assert!(!dir.join("shards/index.redb").exists());
}
