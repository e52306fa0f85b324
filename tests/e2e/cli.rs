//! The command-line contract: exit codes and messages of the real `defs` binary.

use defs_tests::bin;

#[test]
fn bad_usage_exits_with_code_2() {
    let out = bin("defs").arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-command"));
}
