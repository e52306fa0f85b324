//! Real `defs node` processes on 127.0.0.1 and the real `defs put` / `defs get` binaries.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use defs_tests::cluster::{
    Proc, defs, disable_pairing, init, shard_records, spawn_node_on, start_node, wait_for_addr,
    wait_for_addr_of,
};

fn random_file(path: &PathBuf, size: usize) {
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| panic!("create: {e}"));
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write: {e}"));
        left -= n;
    }
}

#[test]
fn put_survives_a_node_killed_mid_transfer_and_get_verifies() {
    let base = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..5).map(|i| base.path().join(format!("n{i}"))).collect();
    let mut nodes = vec![start_node(&dirs[0], None)];
    let first = wait_for_addr(&dirs[0]);
    for d in &dirs[1..] {
        nodes.push(start_node(d, Some(&first)));
    }
    let addrs: Vec<String> = dirs.iter().map(|d| wait_for_addr(d)).collect();

    let client = base.path().join("client");
    init(&client);
    let src = base.path().join("src");
    random_file(&src, 48 << 20);

    let mut put = defs(&client);
    put.arg("put").arg(&src).args(["--rs", "3+2", "--no-mdns"]);
    for a in &addrs {
        put.args(["--bootstrap", a]);
    }
    let put = put
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // SIGKILL node 4 as soon as it has received shards: the put is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while shard_records(&dirs[4]).is_empty() {
        assert!(Instant::now() < deadline, "node 4 never received a shard");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut killed = nodes.pop().unwrap();
    killed.0.kill().unwrap(); // SIGKILL
    let _ = killed.0.wait();
    std::mem::forget(killed);

    let out = put.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "put failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout.lines().last().unwrap().trim().to_string();
    assert_eq!(id.len(), 64, "file id on the last line: {stdout}");

    let dst = base.path().join("dst");
    let mut get = defs(&client);
    get.arg("get").arg(&id).arg(&dst).arg("--no-mdns");
    for a in &addrs[..4] {
        get.args(["--bootstrap", a]);
    }
    let out = get.output().unwrap();
    assert!(
        out.status.success(),
        "get failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&dst).unwrap() == std::fs::read(&src).unwrap());

    // A file id nobody has: a clear failure with exit code 1.
    let mut get = defs(&client);
    get.arg("get")
        .arg("ab".repeat(32))
        .arg(base.path().join("none"))
        .arg("--no-mdns");
    get.args(["--bootstrap", &addrs[0]]);
    let out = get.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert!(!base.path().join("none").exists());
}

/// DESIGN §5: with no peers at all DeFS still works; shards stay on the local node and
/// `defs status` says plainly that nothing is protected against losing this machine.
#[test]
fn a_lone_node_stores_locally_and_status_says_nothing_is_protected() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("alone");
    let _node = start_node(&dir, None);
    wait_for_addr(&dir);
    // The control socket appears right after the addresses file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("control.sock").exists() {
        assert!(Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let src = base.path().join("src");
    random_file(&src, 3 << 20);
    let out = defs(&dir).arg("put").arg(&src).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("warning: not on the network: 0/")
            && stdout.contains("losing it loses the file"),
        "{stdout}"
    );
    let id = stdout.lines().last().unwrap().trim().to_string();
    assert!(!shard_records(&dir).is_empty(), "nothing stored locally");

    let dst = base.path().join("dst");
    let out = defs(&dir).arg("get").arg(&id).arg(&dst).output().unwrap();
    assert!(
        out.status.success(),
        "get failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&dst).unwrap() == std::fs::read(&src).unwrap());

    let out = defs(&dir).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("nothing is protected against losing this machine"),
        "{text}"
    );
}

/// Sets `[node] tcp_security` of the data dir `dir` (made by `init`) to `list` (TOML).
fn set_tcp_security(dir: &std::path::Path, list: &str) {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut done = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("tcp_security = ") {
                done = true;
                format!("tcp_security = {list}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(done, "no tcp_security in {}", path.display());
    std::fs::write(&path, lines.join("\n") + "\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Issue 19: every selectable transport carries real transfers between real processes. The
/// nodes accept TLS only on TCP (so a TCP transfer that works went over TLS 1.3) and listen on
/// QUIC too: a default client (noise first) falls back to TLS and puts and gets over it, then
/// gets over QUIC, and a client that speaks only noise is refused, naming why. (Noise between willing peers: defs-net's
/// `transport` tests.)
#[test]
fn tls_and_quic_carry_put_and_get_and_a_noise_only_client_is_told_why_not() {
    let base = tempfile::tempdir().unwrap();
    let listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"];
    let dirs: Vec<PathBuf> = (0..3).map(|i| base.path().join(format!("n{i}"))).collect();
    let mut nodes: Vec<Proc> = Vec::new();
    for d in &dirs {
        init(d);
        disable_pairing(d);
        set_tcp_security(d, r#"["tls"]"#);
        let first = nodes.first().map(|_| wait_for_addr(&dirs[0]));
        nodes.push(spawn_node_on(d, first.as_deref(), &listen));
    }
    let tcp: Vec<String> = dirs.iter().map(|d| wait_for_addr(d)).collect();
    let quic: Vec<String> = dirs
        .iter()
        .map(|d| wait_for_addr_of(d, "/quic-v1/"))
        .collect();
    let src = base.path().join("src");
    random_file(&src, 5 << 20);
    let run = |client: &std::path::Path, args: &[&str], boot: &[String]| {
        let mut c = defs(client);
        c.args(args).arg("--no-mdns");
        for a in boot {
            c.args(["--bootstrap", a]);
        }
        c.output().unwrap()
    };

    let tls = base.path().join("tls");
    init(&tls);
    let put = run(&tls, &["put", src.to_str().unwrap(), "--rs", "2+1"], &tcp);
    let stdout = String::from_utf8_lossy(&put.stdout);
    assert!(
        put.status.success(),
        "put over TLS: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let id = stdout.lines().last().unwrap().trim().to_string();
    // The same owner (only its key opens the file) gets it over TCP, then over QUIC.
    for (name, boot) in [("out-tcp", &tcp), ("out-quic", &quic)] {
        let out = base.path().join(name);
        let get = run(&tls, &["get", &id, out.to_str().unwrap()], boot);
        assert!(
            get.status.success(),
            "{}",
            String::from_utf8_lossy(&get.stderr)
        );
        assert!(std::fs::read(&out).unwrap() == std::fs::read(&src).unwrap());
    }

    let noise = base.path().join("noise");
    init(&noise);
    set_tcp_security(&noise, r#"["noise"]"#);
    let out = base.path().join("out-noise");
    let get = run(&noise, &["get", &id, out.to_str().unwrap()], &tcp[..1]);
    let err = String::from_utf8_lossy(&get.stderr);
    assert_eq!(get.status.code(), Some(1), "{err}");
    assert!(err.contains(&tcp[0]), "names the address: {err}");
    assert!(err.to_lowercase().contains("negotiat"), "says why: {err}");
    assert!(!out.exists());
    drop(nodes);
}
