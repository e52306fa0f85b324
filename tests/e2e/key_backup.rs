//! `defs key split` and `defs key combine` through the real binary: shares on stdout and in
//! files, the rebuilt key byte for byte, every refusal with its exit code, and a file stored
//! with `defs put` fetched again by a data dir that holds only the rebuilt key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};

use defs_tests::bin;
use defs_tests::cluster::{Cluster, defs as defs_env, init as cluster_init, out, text};

use crate::cli::defs;

/// Runs `defs ARGS --data-dir DIR` with `input` on stdin.
fn defs_stdin(args: &[&str], dir: &Path, input: &str) -> Output {
    let mut child = bin("defs")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("DEFS_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run defs: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to defs's stdin: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for defs: {e}"))
}

fn init(dir: &Path) {
    let o = defs(&["init", "--difficulty", "3"], dir);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// `defs key split` to stdout: the share lines (header comments dropped).
fn split(dir: &Path, shares: &str, threshold: &str) -> Vec<String> {
    let o = defs(
        &["key", "split", "--shares", shares, "--threshold", threshold],
        dir,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("# DeFS identity key shares"), "{stdout}");
    assert!(stdout.contains("defs key combine"), "{stdout}");
    stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn combine(dir: &Path, shares: &[&str]) -> Output {
    let mut args = vec!["key", "combine"];
    args.extend_from_slice(shares);
    defs(&args, dir)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn any_three_of_five_printed_shares_rebuild_the_key_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    init(&a);
    let key = fs::read(a.join("identity.key")).unwrap();
    let shares = split(&a, "5", "3");
    assert_eq!(shares.len(), 5, "{shares:?}");
    for (i, set) in [[0, 1, 2], [4, 2, 0], [1, 3, 4]].iter().enumerate() {
        let b = tmp.path().join(format!("b{i}"));
        let picked: Vec<&str> = set.iter().map(|&i| shares[i].as_str()).collect();
        let o = combine(&b, &picked);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("not yet recovered"), "{}", text(&o));
        let rebuilt = b.join("identity.key");
        assert_eq!(fs::read(&rebuilt).unwrap(), key);
        assert_eq!(mode(&rebuilt), 0o600);
        assert_eq!(mode(&b), 0o700);
        // `defs id` reads it: the same node id as the original.
        assert_eq!(defs(&["id"], &b).stdout, defs(&["id"], &a).stdout);
    }
}

#[test]
fn shares_in_files_and_on_stdin_combine_and_an_existing_key_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    init(&a);
    let key = fs::read(a.join("identity.key")).unwrap();
    let out_dir = tmp.path().join("shares");
    let out_arg = out_dir.display().to_string();
    let split_args = [
        "key",
        "split",
        "--shares",
        "4",
        "--threshold",
        "2",
        "--out-dir",
        &out_arg,
    ];
    let o = defs(&split_args, &a);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut files: Vec<_> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4);
    assert_eq!(mode(&out_dir), 0o700);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
        assert!(text(&o).contains(&f.display().to_string()), "{}", text(&o));
    }

    // Two files as arguments.
    let b = tmp.path().join("b");
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let o = combine(&b, &[&paths[3], &paths[0]]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(fs::read(b.join("identity.key")).unwrap(), key);

    // Combining again into the same dir: the same key is already there, nothing changes.
    let o = combine(&b, &[&paths[1], &paths[2]]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("already holds this identity"),
        "{}",
        text(&o)
    );

    // Stdin, with the header comments of the files and blank lines.
    let c = tmp.path().join("c");
    let input = format!(
        "{}\n\n{}",
        fs::read_to_string(&files[1]).unwrap(),
        fs::read_to_string(&files[2]).unwrap()
    );
    let o = defs_stdin(&["key", "combine"], &c, &input);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(fs::read(c.join("identity.key")).unwrap(), key);

    // Another identity's dir: refused, its key untouched.
    let other = tmp.path().join("other");
    init(&other);
    let other_key = fs::read(other.join("identity.key")).unwrap();
    let o = combine(&other, &[&paths[0], &paths[1]]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("another identity"), "{}", text(&o));
    assert_eq!(fs::read(other.join("identity.key")).unwrap(), other_key);
}

#[test]
fn bad_shares_are_refused_with_exit_1_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    init(&a);
    let shares = split(&a, "5", "3");
    let again = split(&a, "5", "3");
    let b = tmp.path().join("b");
    init(&b);
    let others = split(&b, "5", "3");

    // One character of the value changed (a digit becomes another digit).
    let mut altered = shares[2].clone();
    // The last 9 characters are the checksum; before them, the value's last two groups.
    let pos = altered.len() - 18;
    let c = altered.as_bytes()[pos];
    let new = if c == b'7' { "8" } else { "7" };
    altered.replace_range(pos..pos + 1, new);

    let fresh = tmp.path().join("fresh");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![&shares[0], &shares[1]], "3 are needed"),
        (vec![&shares[0], &shares[1], &altered], "checksum"),
        (vec![&shares[0], &shares[1], &again[2]], "different splits"),
        (vec![&shares[0], &shares[1], &others[2]], "different splits"),
        (vec![&shares[0], &shares[1], &shares[1]], "more than once"),
        (
            vec![&shares[0], &shares[1], "no-such-file"],
            "no file of that name",
        ),
        (vec![], "no shares given"),
    ];
    for (args, expected) in cases {
        let o = if args.is_empty() {
            defs_stdin(&["key", "combine"], &fresh, "# nothing\n")
        } else {
            combine(&fresh, &args)
        };
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(expected), "{args:?}: {}", text(&o));
        assert!(!fresh.exists(), "{args:?} created the data dir");
    }
}

#[test]
fn bad_split_arguments_exit_2_and_no_identity_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    init(&a);
    for args in [
        &["key", "split", "--shares", "3", "--threshold", "4"][..],
        &["key", "split", "--shares", "3", "--threshold", "1"],
        &["key", "split", "--shares", "256", "--threshold", "2"],
        &["key", "split", "--threshold", "2"],
    ] {
        let o = defs(args, &a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{args:?} printed shares");
    }
    let o = defs(
        &["key", "split", "--shares", "3", "--threshold", "2"],
        &tmp.path().join("none"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("defs init"), "{}", text(&o));
}

/// What the README's "Back up your key" promises today: a file stored with `defs put` is fetched
/// again, by its file id, from a data dir that holds nothing but the key rebuilt from shares.
#[test]
fn a_rebuilt_key_alone_gets_back_a_file_stored_with_put() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let owner = base.path().join("owner");
    // Puzzle difficulty 0, as the cluster's nodes: each side asks its own difficulty of peers.
    cluster_init(&owner);
    let src = base.path().join("src");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&src, &data).unwrap();
    let mut put = defs_env(&owner);
    put.arg("put").arg(&src).args(["--rs", "2+1", "--no-mdns"]);
    for a in &cluster.addrs {
        put.args(["--bootstrap", a]);
    }
    let o = out(&mut put);
    assert!(o.status.success(), "put: {}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let id = stdout.lines().last().unwrap().trim().to_owned();

    let shares = split(&owner, "3", "2");
    let restored = base.path().join("restored");
    let o = combine(&restored, &[&shares[2], &shares[0]]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let names: Vec<_> = fs::read_dir(&restored)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["identity.key"], "nothing but the key");
    // The test network's nodes solve no puzzle; a node asks its peers the difficulty of its
    // config (default 10, which real peers made by `defs init` solve).
    fs::write(
        restored.join("config.toml"),
        "[identity]\npuzzle_difficulty = 0\n",
    )
    .unwrap();

    let dst = base.path().join("dst");
    let mut get = defs_env(&restored);
    get.arg("get").arg(&id).arg(&dst).arg("--no-mdns");
    for a in &cluster.addrs {
        get.args(["--bootstrap", a]);
    }
    let o = out(&mut get);
    assert!(o.status.success(), "get: {}", text(&o));
    assert!(fs::read(&dst).unwrap() == data);
}
