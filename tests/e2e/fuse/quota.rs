//! Quotas (issue 22, item 4): storage nodes that give the owner a small quota; writing past it
//! fails with EDQUOT at fsync, nothing written before is lost, and `defs status` and `df` show
//! the owner's use, quota and room, true against the nodes' own shard stores.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use defs_tests::cluster::{Cluster, disable_pairing, out, set_owner_quota, shard_records, text};
use defs_tests::mount::{TestMount, bootstrap_args, pseudo_random, wait_exit};

use super::errno;

/// Each node's quota for the owner: 4.5 MiB, room for four files of [`FILE`] (1 MiB of shards
/// each per node) and the small objects around them (manifests, namespace), not for a fifth.
const QUOTA: u64 = 9 << 19;

/// A file's size: 2 MiB, one Reed-Solomon segment of 2 data shards of 1 MiB and 1 parity shard
/// (the layout `auto` picks for three storage peers), so one shard of 1 MiB on each node.
const FILE: usize = 2 << 20;

/// Data and total shards of the layout big files get over three peers (2+1): df divides the
/// owner's room by this redundancy.
const DATA_SHARDS: u64 = 2;
const TOTAL_SHARDS: u64 = 3;

/// How long the figures may take to settle (the mount publishes its namespace a few seconds
/// after changes stop, which stores small objects under the same quota).
const SETTLE: Duration = Duration::from_secs(60);

/// Bytes of shards the node with data dir `dir` holds (here all of them the one owner's).
fn stored_on(dir: &Path) -> u64 {
    shard_records(dir).iter().map(|(_, _, h)| h.len).sum()
}

/// The number after the first `"key":` in `json`; `None` for `null` or when absent.
fn field(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The entry of `defs status --json`'s `owner.nodes` for the peer `peer`.
fn node_entry<'a>(json: &'a str, peer: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"peer\":\"{peer}\",\"node_id\""))?;
    let end = json[at..].find('}')? + at;
    Some(&json[at..end])
}

/// (available, fragment size) of the mount, as `df` gets them.
fn df(mnt: &Path) -> (u64, u64) {
    let st = nix::sys::statvfs::statvfs(mnt).unwrap_or_else(|e| panic!("statvfs: {e}"));
    (
        st.blocks_available() * st.fragment_size(),
        st.fragment_size(),
    )
}

#[test]
fn writing_past_the_owner_quota_fails_with_edquot_and_status_and_df_show_the_true_figures() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_prepared(base.path(), 3, |d| {
        disable_pairing(d);
        set_owner_quota(d, QUOTA);
    });
    let Some(mut m) = TestMount::with_args(&["sync=network"], &bootstrap_args(&cluster)) else {
        return;
    };

    // All three nodes take part from the first file on (the layout depends on how many).
    wait_for_storage_peers(&m, 3);

    // Write until the network refuses: each file fsynced (sync=network waits for its upload).
    let mut kept = Vec::new();
    let mut refused = None;
    for i in 0..8u64 {
        let data = pseudo_random(i + 1, FILE);
        let path = m.path(format!("f{i}"));
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        match f.sync_all() {
            Ok(()) => kept.push((path, data)),
            Err(e) => {
                assert_eq!(errno(&e), libc::EDQUOT, "{e}\nlog:\n{}", m.log());
                refused = Some((path, data));
                break;
            }
        }
    }
    let Some((refused_path, refused_data)) = refused else {
        panic!("8 files of 2 MiB never met the quota\nlog:\n{}", m.log());
    };
    assert_eq!(
        kept.len(),
        4,
        "files stored before EDQUOT\nlog:\n{}",
        m.log()
    );
    assert!(
        m.log()
            .contains("upload refused: this identity's quota is full on the storage nodes"),
        "no clear log line:\n{}",
        m.log()
    );
    // The refused file is whole in the mount (dirty, in the local cache), and says why.
    assert_eq!(fs::read(&refused_path).unwrap(), refused_data);
    let state = xattr_state(&refused_path);
    assert!(
        state
            .as_deref()
            .is_some_and(|s| s.contains("quota exceeded")),
        "{state:?}"
    );

    // `defs status` and df against what the nodes' shard stores hold: read the stores before
    // and after, and take the figures once nothing moved in between.
    let peers: Vec<&str> = cluster
        .addrs
        .iter()
        .map(|a| a.rsplit("/p2p/").next().unwrap_or(a))
        .collect();
    let deadline = Instant::now() + SETTLE;
    let (json, status, avail, frsize, stored) = loop {
        let before: Vec<u64> = cluster.dirs.iter().map(|d| stored_on(d)).collect();
        let o = out(m.defs().args(["status", "--json"]));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let json = String::from_utf8_lossy(&o.stdout).to_string();
        let (avail, frsize) = df(&m.mnt());
        let status = text(&out(m.defs().arg("status")));
        let after: Vec<u64> = cluster.dirs.iter().map(|d| stored_on(d)).collect();
        let agree = peers
            .iter()
            .zip(&after)
            .all(|(p, s)| node_entry(&json, p).and_then(|e| field(e, "stored")) == Some(*s));
        if before == after && agree {
            break (json, status, avail, frsize, after);
        }
        assert!(
            Instant::now() < deadline,
            "status never agreed with the nodes' stores {after:?}:\n{json}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut room = 0;
    for (peer, s) in peers.iter().zip(&stored) {
        let e = node_entry(&json, peer).unwrap_or_else(|| panic!("no entry for {peer}:\n{json}"));
        assert!(*s >= 4 << 20 && *s <= QUOTA, "{s} bytes on {peer}");
        assert_eq!(field(e, "quota"), Some(QUOTA), "{e}");
        assert_eq!(field(e, "room"), Some(QUOTA - s), "{e}");
        assert!(e.contains("\"counted\":true"), "{e}");
        room += QUOTA - s;
    }
    let owner = &json[json.find("\"owner\":{").unwrap_or(0)..];
    assert_eq!(field(owner, "stored"), Some(stored.iter().sum()), "{json}");
    assert_eq!(field(owner, "room"), Some(room), "{json}");
    // df: the room over the redundancy, in whole blocks; the status says the same.
    let want = room * DATA_SHARDS / TOTAL_SHARDS / frsize * frsize;
    assert_eq!(avail, want, "df available, room {room}");
    assert!(
        avail < FILE as u64,
        "the refused file would not fit: {avail}"
    );
    let space = &json[json.find("\"space\":{").unwrap_or(0)..];
    assert_eq!(field(space, "available"), Some(want), "{json}");
    assert!(status.contains(&format!("quota {QUOTA} bytes")), "{status}");
    assert!(status.contains("your space:"), "{status}");
    assert!(
        status.contains(&format!("space:          {want} bytes available")),
        "{status}"
    );

    // With sync=local, fsync still reports that the network refused the file (EDQUOT) once
    // its upload, retried at the next mount, is refused again; its bytes stay whole.
    unmount_patiently(&mut m);
    let mut m = TestMount::reuse(m, &[]);
    wait_for_storage_peers(&m, 3);
    let f = fs::OpenOptions::new()
        .append(true)
        .open(&refused_path)
        .unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        match f.sync_all() {
            Err(e) if errno(&e) == libc::EDQUOT => break,
            r => assert!(
                Instant::now() < deadline,
                "fsync never said EDQUOT: {r:?}\nlog:\n{}",
                m.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(f);
    assert_eq!(fs::read(&refused_path).unwrap(), refused_data);

    // Everything stored before the refusal reads back from the nodes with the cache wiped.
    fs::remove_file(&refused_path).unwrap();
    unmount_patiently(&mut m);
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();
    for (path, data) in &kept {
        assert!(
            fs::read(path).unwrap() == *data,
            "{} changed\nlog:\n{}",
            path.display(),
            m.log()
        );
    }
}

/// How long an unmount may take here: the daemon's FUSE session was once seen to end 80 s
/// after `fusermount3 -u` had returned, on a loaded machine (cause not found yet; its log then
/// shows nothing between the unmount and the session's end).
const UNMOUNT_PATIENCE: Duration = Duration::from_secs(150);

/// Unmounts and waits (up to [`UNMOUNT_PATIENCE`]) until the daemon has exited.
fn unmount_patiently(m: &mut TestMount) {
    let pid = m.pid();
    m.unmount_nowait();
    if let Some(pid) = pid {
        wait_exit(pid, UNMOUNT_PATIENCE);
    }
}

/// Waits until the mount's node has `n` storage peers.
fn wait_for_storage_peers(m: &TestMount, n: usize) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let o = out(m.defs().args(["status", "--json"]));
        if String::from_utf8_lossy(&o.stdout).contains(&format!("\"storage_peers\":{n},")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never {n} storage peers: {}\nlog:\n{}",
            text(&o),
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `user.defs.state` of `path`.
fn xattr_state(path: &Path) -> Option<String> {
    let o = std::process::Command::new("getfattr")
        .args(["-n", "user.defs.state", "--only-values"])
        .arg(path)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).to_string())
}
