//! Issue 18: `defs audit` on a mount finds a shard a node damaged behind its daemon's back, the
//! holder's score drops, and `defs status` shows the failure and the node's pair partner.

use std::fs;
use std::os::unix::fs::FileExt;

use defs_tests::cluster::{Cluster, out, shard_records, text};
use defs_tests::mount::{mount_on, pseudo_random};

/// The score `defs peers --json` gives the peer whose id is `peer`.
fn score(json: &str, peer: &str) -> f64 {
    let at = json
        .find(&format!("\"peer\":\"{peer}\""))
        .unwrap_or_else(|| panic!("{peer} not in {json}"));
    let rest = &json[at..];
    let s = rest
        .find("\"score\":")
        .map(|i| &rest[i + 8..])
        .unwrap_or_else(|| panic!("no score in {rest}"));
    let end = s.find(',').unwrap_or(s.len());
    s[..end]
        .parse()
        .unwrap_or_else(|e| panic!("score {}: {e}", &s[..end]))
}

#[test]
fn defs_audit_finds_bytes_flipped_behind_a_nodes_back_and_its_score_drops() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 4);
    let Some(m) = mount_on(&cluster) else { return };
    fs::write(m.path("f"), pseudo_random(18, 3 << 20)).unwrap();
    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());

    // Every holder proves every shard.
    let o = out(m.defs().arg("audit"));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
    assert!(text(&o).contains(" 0 failed"), "{}", text(&o));

    // Node 0 flips bytes in every shard it keeps, behind its daemon's back.
    let records = shard_records(&cluster.dirs[0]);
    assert!(!records.is_empty(), "node 0 holds shards");
    for (pack, offset, head) in &records {
        let f = fs::OpenOptions::new().write(true).open(pack).unwrap();
        let at = offset + defs_core::shard_store::pack::HEADER_LEN + head.len / 2;
        f.write_all_at(&[0x5A; 16], at).unwrap();
    }
    let node0 = cluster.addrs[0].rsplit('/').next().unwrap().to_string();
    let before = text(&out(m.defs().args(["peers", "--json"])));

    let o = out(m.defs().arg("audit"));
    assert_eq!(o.status.code(), Some(1), "{}\nlog:\n{}", text(&o), m.log());
    let t = text(&o);
    assert!(t.contains("failed: shard"), "{t}");
    assert!(t.contains("corrupt"), "the holder's refusal says why: {t}");

    let after = text(&out(m.defs().args(["peers", "--json"])));
    let (b, a) = (score(&before, &node0), score(&after, &node0));
    assert!(a < b * 0.5, "node 0's score: {b} before, {a} after");

    let o = out(m.defs().arg("status"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("audit failed:   shard"), "{t}");
    // The mount's node pairs within a few heartbeat ticks (polled, generous bound).
    let mut t = t;
    for _ in 0..120 {
        if t.contains("pairing:        partner") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        t = text(&out(m.defs().arg("status")));
    }
    assert!(t.contains("pairing:        partner"), "{t}");
    let o = out(m.defs().args(["status", "--json"]));
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(json.contains("\"audits\":{\"passed\":"), "{json}");
    assert!(json.contains("\"pairing\":{\"partner\":\""), "{json}");
}
