//! Bootstrap addresses and where one-shot commands listen (issue 25): a bootstrap that cannot
//! be used is reported at once with the address and the reason, and never saved to
//! config.toml; one that answered is; `defs peers` says why a refused peer is refused; a
//! client-only node listens on 127.0.0.1 unless told otherwise.

use std::net::TcpListener;
use std::path::Path;

use defs_tests::cluster::{defs, init, out, start_node, text, wait_for_addr};

/// A 127.0.0.1 TCP port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("binding a port: {e}"))
        .port()
}

/// The peer id at the end of an address.
fn peer_id(addr: &str) -> &str {
    addr.rsplit_once("/p2p/")
        .unwrap_or_else(|| panic!("no /p2p/ in {addr}"))
        .1
}

/// A real node's address `addr` with the peer id of `other`.
fn another_peer_id(addr: &str, other: &str) -> String {
    let base = &addr[..addr.len() - peer_id(addr).len()];
    format!("{base}{}", peer_id(other))
}

fn config(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("config.toml"))
        .unwrap_or_else(|e| panic!("reading config.toml: {e}"))
}

/// `defs put FILE --no-mdns --bootstrap ADDR` for the data dir `me`.
fn put_via(me: &Path, file: &Path, addr: &str) -> std::process::Output {
    out(defs(me)
        .arg("put")
        .arg(file)
        .args(["--no-mdns", "--bootstrap", addr]))
}

fn small_file(dir: &Path) -> std::path::PathBuf {
    let f = dir.join("photo.jpg");
    std::fs::write(&f, b"not really a photo").unwrap_or_else(|e| panic!("writing: {e}"));
    f
}

#[test]
fn r25_a_bootstrap_without_a_peer_id_is_bad_usage_and_not_saved() {
    let base = tempfile::tempdir().unwrap();
    let me = base.path().join("me");
    init(&me);
    let before = config(&me);
    let file = small_file(base.path());
    let o = out(defs(&me).arg("put").arg(&file).args([
        "--no-mdns",
        "--bootstrap",
        "/ip4/127.0.0.1/tcp/1",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("/ip4/127.0.0.1/tcp/1 has no /p2p/"), "{t}");
    assert_eq!(config(&me), before);
}

#[test]
fn r25_a_closed_port_is_reported_with_the_address_and_not_saved() {
    let base = tempfile::tempdir().unwrap();
    let me = base.path().join("me");
    init(&me);
    let before = config(&me);
    let file = small_file(base.path());
    // A real peer id, so only the port is wrong.
    let node_dir = base.path().join("n0");
    let _node = start_node(&node_dir, None);
    let real = wait_for_addr(&node_dir);
    let addr = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{}",
        closed_port(),
        peer_id(&real)
    );
    let o = put_via(&me, &file, &addr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("no storage peers are reachable"), "{t}");
    assert!(t.contains(&addr) && t.contains("connection refused"), "{t}");
    assert_eq!(
        config(&me),
        before,
        "a bootstrap that never answered was saved"
    );
}

#[test]
fn r25_a_wrong_peer_id_and_a_refused_puzzle_are_told_apart_and_not_saved() {
    let base = tempfile::tempdir().unwrap();
    let (a, b) = (base.path().join("n0"), base.path().join("n1"));
    let _na = start_node(&a, None);
    let _nb = start_node(&b, None);
    let (addr_a, addr_b) = (wait_for_addr(&a), wait_for_addr(&b));
    let me = base.path().join("me");
    init(&me);
    let before = config(&me);
    let file = small_file(base.path());

    let wrong = another_peer_id(&addr_a, &addr_b);
    let o = put_via(&me, &file, &wrong);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(&wrong) && t.contains("wrong peer id"), "{t}");
    assert_eq!(config(&me), before);

    // This client asks more of its peers than the nodes' ids solve (difficulty 0 identities
    // have 0 to a few bits; 30 is beyond them but for one in a billion).
    let strict = config(&me).replace("puzzle_difficulty = 0", "puzzle_difficulty = 30");
    assert_ne!(
        strict, before,
        "config.toml has no puzzle_difficulty = 0 line"
    );
    std::fs::write(me.join("config.toml"), &strict).unwrap();
    let o = put_via(&me, &file, &addr_a);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&addr_a) && t.contains("refused") && t.contains("asks for 30"),
        "{t}"
    );
    assert_eq!(config(&me), strict, "a refused bootstrap was saved");
    // `defs peers` says why.
    let o = out(defs(&me).args(["peers", "--no-mdns", "--bootstrap", &addr_a]));
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("refused: its node id solves the identity puzzle to")
            && t.contains("identity.puzzle_difficulty"),
        "{t}"
    );
}

#[test]
fn r25_a_bootstrap_that_answered_is_saved_and_a_client_listens_on_loopback() {
    let base = tempfile::tempdir().unwrap();
    let n = base.path().join("n0");
    let _node = start_node(&n, None);
    let addr = wait_for_addr(&n);
    let me = base.path().join("me");
    init(&me);
    let file = small_file(base.path());
    let o = put_via(&me, &file, &addr);
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    assert!(config(&me).contains(&addr), "{}", config(&me));

    // The client-only node of a one-shot command listens on 127.0.0.1 only, or where --listen
    // says.
    let o = out(defs(&me).args(["status", "--json", "--no-mdns"]));
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        t.contains("/ip4/127.0.0.1/tcp/") && !t.contains("0.0.0.0"),
        "{t}"
    );
    let port = closed_port();
    let o = out(defs(&me).args([
        "status",
        "--json",
        "--no-mdns",
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
    ]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("/ip4/127.0.0.1/tcp/{port}/")),
        "{}",
        text(&o)
    );

    // `defs get` leaves an existing OUT alone unless --force.
    let dst = base.path().join("copy.jpg");
    std::fs::write(&dst, b"mine").unwrap();
    let o = out(defs(&me).args(["get", &id]).arg(&dst).arg("--no-mdns"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already exists") && text(&o).contains("--force"));
    assert_eq!(std::fs::read(&dst).unwrap(), b"mine");
    let o = out(defs(&me)
        .args(["get", &id])
        .arg(&dst)
        .args(["--no-mdns", "--force"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&file).unwrap());
}

/// A put from a fresh data dir `base/me` with `--bootstrap` a fresh node's address (in the
/// second place when `good_first` is false) and `/ip4/127.0.0.1/tcp/PORT/p2p/<a random id>`.
/// Returns the output, the good address, the other one and the data dir.
fn put_beside_a_good_node(
    base: &Path,
    port: u16,
    good_first: bool,
) -> (std::process::Output, String, String, std::path::PathBuf) {
    let n = base.join("n0");
    let _node = start_node(&n, None);
    let good = wait_for_addr(&n);
    let other = format!(
        "/ip4/127.0.0.1/tcp/{port}/p2p/{}",
        defs_net::PeerId::random()
    );
    let me = base.join("me");
    init(&me);
    let file = small_file(base);
    let (a, b) = if good_first {
        (&good, &other)
    } else {
        (&other, &good)
    };
    let o = out(defs(&me).arg("put").arg(&file).args([
        "--no-mdns",
        "--bootstrap",
        a,
        "--bootstrap",
        b,
    ]));
    (o, good, other, me)
}

/// Review of issue 25: a refused address beside a good one neither holds the command up nor
/// counts as a source of the network; it is warned about.
#[test]
fn r25_a_refused_bootstrap_beside_a_good_one_is_warned_about_and_not_counted() {
    let base = tempfile::tempdir().unwrap();
    let (o, good, refused, me) = put_beside_a_good_node(base.path(), closed_port(), true);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("found through 1 bootstrap address(es)"),
        "counts the addresses that reached a node: {t}"
    );
    assert!(
        t.contains(&format!("warning: bootstrap {refused}: connection refused")),
        "{t}"
    );
    assert!(!t.contains("still arriving when the wait ended"), "{t}");
    assert!(config(&me).contains(&good) && !config(&me).contains(&refused));
}

/// A TCP listener on 127.0.0.1 that takes connections and never says a word (a host that
/// drops the handshake, or another program on the port); it stops when dropped.
struct Silent {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        use std::sync::atomic::{AtomicBool, Ordering};
        let l = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .unwrap_or_else(|e| panic!("binding a silent listener: {e}"));
        let port = l
            .local_addr()
            .unwrap_or_else(|e| panic!("its address: {e}"))
            .port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        Silent {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Review of issue 25: an address that takes the connection and never answers does not keep
/// the command waiting for it: the network found through the good address settles, and the
/// silent one is reported as not having answered.
#[test]
fn r25_a_silent_bootstrap_beside_a_good_one_does_not_hold_the_network_up() {
    let base = tempfile::tempdir().unwrap();
    let silent = Silent::start();
    let (o, _, quiet, me) = put_beside_a_good_node(base.path(), silent.port, false);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("network: 1 storage peer(s), found through 1 bootstrap address(es)"),
        "{t}"
    );
    assert!(
        !t.contains("still arriving when the wait ended"),
        "the network settled without the silent address: {t}"
    );
    assert!(
        t.contains(&format!("warning: bootstrap {quiet}: no answer")),
        "{t}"
    );
    assert!(
        !config(&me).contains(&quiet),
        "a silent bootstrap was saved"
    );
}
