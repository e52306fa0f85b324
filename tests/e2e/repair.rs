//! `defs repair` with real `defs node` processes (issue 18): shards of nodes that left are
//! re-created on the others, so the file survives losing more nodes than its parity count.

use std::path::Path;
use std::process::Command;

use defs_tests::cluster::{Cluster, defs, init, out, shard_records, text};

fn with_bootstrap(mut c: Command, addrs: &[String]) -> Command {
    c.arg("--no-mdns");
    for a in addrs {
        c.args(["--bootstrap", a]);
    }
    c
}

fn random_file(path: &Path, size: usize, seed: u64) {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn defs_repair_re_creates_the_shards_of_nodes_that_left() {
    let base = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(base.path(), 7);
    let client = base.path().join("client");
    init(&client);
    let src = base.path().join("src");
    random_file(&src, 6 << 20, 18);

    let mut put = defs(&client);
    put.arg("put").arg(&src).args(["--rs", "3+2"]);
    let o = out(&mut with_bootstrap(put, &cluster.addrs));
    assert!(o.status.success(), "put: {}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();

    // Two holders leave (SIGKILL), then a repair; then two more. Without the repair some
    // segments would be down to fewer than the 3 shards that rebuild them.
    let holders: Vec<usize> = (0..7)
        .filter(|&i| !shard_records(&cluster.dirs[i]).is_empty())
        .collect();
    assert!(holders.len() >= 5, "{holders:?}");
    let mut gone = Vec::new();
    for &i in &holders[..2] {
        cluster.nodes[i].0.kill().unwrap();
        let _ = cluster.nodes[i].0.wait();
        gone.push(i);
    }
    let live = |gone: &[usize]| -> Vec<String> {
        (0..7)
            .filter(|i| !gone.contains(i))
            .map(|i| cluster.addrs[i].clone())
            .collect()
    };
    let mut repair = defs(&client);
    repair.arg("repair").arg(&id);
    let o = out(&mut with_bootstrap(repair, &live(&gone)));
    let said = text(&o);
    assert!(o.status.success(), "repair: {said}");
    assert!(said.contains("1 file(s) checked"), "{said}");
    assert!(!said.contains(" 0 shard(s)"), "nothing re-created: {said}");

    // A second repair finds nothing to do.
    let mut again = defs(&client);
    again.arg("repair").arg(&id);
    let o = out(&mut with_bootstrap(again, &live(&gone)));
    assert!(o.status.success(), "second repair: {}", text(&o));
    assert!(text(&o).contains(" 0 shard(s)"), "{}", text(&o));

    for &i in &holders[2..4] {
        cluster.nodes[i].0.kill().unwrap();
        let _ = cluster.nodes[i].0.wait();
        gone.push(i);
    }
    let dst = base.path().join("dst");
    let mut get = defs(&client);
    get.arg("get").arg(&id).arg(&dst);
    let o = out(&mut with_bootstrap(get, &live(&gone)));
    assert!(
        o.status.success(),
        "get after 4 of 7 nodes left: {}",
        text(&o)
    );
    assert!(std::fs::read(&dst).unwrap() == std::fs::read(&src).unwrap());

    // Without file ids and without a mount there is nothing to check: exit 1, saying why.
    let mut bare = defs(&client);
    bare.arg("repair");
    let o = out(&mut bare);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FILE_ID"), "{}", text(&o));
}
