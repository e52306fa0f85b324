//! Issue 25: what DeFS says about safety is true. A file is "on the network" only by the one
//! definition of docs/SEMANTICS.md ("When a file is on the network"): shards on this machine do
//! not count, and holders count only while they are reachable.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use defs_core::identity::{DEFAULT_PUZZLE_DIFFICULTY, puzzle_ok};
use defs_core::types::NodeId;
use defs_tests::cluster::{Cluster, Proc, defs, out, text};
use defs_tests::mount::{TestMount, mount_on, pseudo_random};

/// How long a killed holder may take to stop counting, as docs/SEMANTICS.md states it: at once
/// when its connection closes (a killed process's socket is closed by the kernel), else within
/// a failed ping (15 s); plus the time to poll the xattr on a loaded machine.
const GONE_BOUND: Duration = Duration::from_secs(20);

/// How long a returning holder may take to count again: a node restart plus the redial wait
/// (at most `REDIAL_MAX`, 15 s), with room for a loaded machine.
const BACK_BOUND: Duration = Duration::from_secs(45);

fn xattr(path: &Path, name: &str) -> String {
    defs_tests::mount::run(
        Command::new("getfattr")
            .args(["-n", name, "--only-values"])
            .arg(path),
    )
}

/// Polls `user.defs.durability` of `path` until `want` holds, for at most `bound`; returns
/// how long it took.
fn wait_durability(path: &Path, bound: Duration, want: impl Fn(&str) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let d = xattr(path, "user.defs.durability");
        if want(&d) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "after {:?}: user.defs.durability = {d}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node id of the data dir `dir`, from `defs id`.
fn node_id(dir: &Path) -> NodeId {
    let o = out(defs(dir).arg("id"));
    let t = text(&o);
    let hex = t
        .lines()
        .find_map(|l| l.strip_prefix("node id"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no node id in {t}"));
    NodeId::from_hex(hex).unwrap_or_else(|| panic!("bad node id {hex}"))
}

#[test]
fn with_every_peer_refused_sync_fails_naming_the_file_and_status_says_unprotected() {
    // The case: nodes whose identities do not solve the puzzle the mount asks (its
    // data dir has the default difficulty, as `defs init` makes it) are all refused, so the
    // file lands in the mount's own store only.
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    // A difficulty-0 identity solves the default puzzle by chance (1 in 1024): leave out such
    // a node, so that every peer of this mount is refused.
    let refused: Vec<&str> = cluster
        .dirs
        .iter()
        .zip(&cluster.addrs)
        .filter(|(d, _)| !puzzle_ok(&node_id(d), DEFAULT_PUZZLE_DIFFICULTY))
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(!refused.is_empty());
    let mut args = Vec::new();
    for a in &refused {
        args.extend(["--bootstrap", a]);
    }
    let Some(m) = TestMount::with_identity(&[], &args, false) else {
        return;
    };
    let p = m.path("photo.jpg");
    fs::write(&p, pseudo_random(1, 100_000)).unwrap();
    // It uploads to the mount's own store and becomes clean, but not on the network.
    let start = Instant::now();
    while !xattr(&p, "user.defs.state").starts_with("clean") {
        assert!(start.elapsed() < Duration::from_secs(30), "never uploaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = xattr(&p, "user.defs.state");
    assert!(state.starts_with("clean; not on the network: "), "{state}");
    let d = xattr(&p, "user.defs.durability");
    assert!(d.contains("only on this machine"), "{d}");
    assert!(d.contains("losing it loses the file"), "{d}");

    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("1 file under"), "{t}");
    assert!(t.contains("is not on the network"), "{t}");
    assert!(
        t.contains(&format!("{}: not on the network", p.display())),
        "{t}"
    );

    let o = out(m.defs().args(["status", "--json"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(json.contains("\"protected\":false"), "{json}");
    assert!(
        json.contains("\"on_network\":false,\"not_on_network\":1"),
        "{json}"
    );
    let o = out(m.defs().arg("status"));
    let t = text(&o);
    assert!(t.contains("not on the network: "), "{t}");
    let o = out(m.defs().arg("peers"));
    assert!(text(&o).contains("refused"), "{}", text(&o));
}

/// Restarts the node of data dir `dir` at its previous address `addr` (same port).
fn restart(dir: &Path, addr: &str) -> Proc {
    let listen = addr.split("/p2p/").next().unwrap_or(addr);
    Proc(
        defs(dir)
            .args(["node", "--no-mdns", "--listen", listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("restarting a node: {e}")),
    )
}

#[test]
fn killed_holders_lower_the_durability_figure_and_returning_ones_raise_it() {
    let base = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(base.path(), 5);
    let Some(m) = mount_on(&cluster) else { return };
    // 4 MiB: auto layout, Reed-Solomon 3+2 over the five nodes (every node holds shards).
    let p = m.path("big");
    fs::write(&p, pseudo_random(2, 4 << 20)).unwrap();
    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
    let d = xattr(&p, "user.defs.durability");
    assert!(d.starts_with("on the network: "), "{d}");
    assert!(d.ends_with("survives 2 lost nodes"), "{d}");

    for i in [1, 2] {
        let _ = cluster.nodes[i].0.kill();
        let _ = cluster.nodes[i].0.wait();
    }
    let gone = wait_durability(&p, GONE_BOUND, |d| {
        d.contains("survives 0 lost nodes, not the 2 promised")
    });
    eprintln!("two holders killed: the durability figure dropped after {gone:?}");
    assert_eq!(
        xattr(&p, "user.defs.state").split(';').next(),
        Some("clean")
    );
    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not the 2 promised"), "{}", text(&o));

    for i in [1, 2] {
        cluster.nodes[i] = restart(&cluster.dirs[i], &cluster.addrs[i]);
    }
    let back = wait_durability(&p, BACK_BOUND, |d| {
        d.starts_with("on the network: ") && d.ends_with("survives 2 lost nodes")
    });
    eprintln!("the two holders restarted: the durability figure rose again after {back:?}");
    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// How long a silent holder (alive, but answering nothing) may take to stop counting: a failed
/// ping closes its connection within `PING_INTERVAL + PING_TIMEOUT` (15 s), plus polling.
const SILENT_BOUND: Duration = Duration::from_secs(25);

/// Sends `signal` (e.g. "STOP") to the node process `p`.
fn signal(p: &Proc, signal: &str) {
    let o = out(Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(p.0.id().to_string()));
    assert!(o.status.success(), "kill -{signal}: {}", text(&o));
}

#[test]
fn a_silent_holder_stops_counting_within_the_ping_bound_and_counts_again_when_it_answers() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 5);
    let Some(m) = mount_on(&cluster) else { return };
    let p = m.path("big");
    fs::write(&p, pseudo_random(3, 4 << 20)).unwrap();
    let o = out(m.defs().arg("sync"));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
    // Stopped, not killed: its connections stay open, only pings go unanswered.
    signal(&cluster.nodes[3], "STOP");
    let gone = wait_durability(&p, SILENT_BOUND, |d| {
        d.contains("survives 1 lost node, not the 2 promised")
    });
    eprintln!("a holder went silent: the durability figure dropped after {gone:?}");
    signal(&cluster.nodes[3], "CONT");
    let back = wait_durability(&p, BACK_BOUND, |d| d.ends_with("survives 2 lost nodes"));
    eprintln!("the silent holder answers again: the figure rose after {back:?}");
}
