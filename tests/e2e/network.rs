//! Real `defs node` processes on 127.0.0.1 and the real `defs put` / `defs get` binaries.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use defs_tests::cluster::{defs, init, start_node, wait_for_addr};

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                n += 1;
            }
        }
    }
    n
}

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
    let victim = dirs[4].join("shards");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_files(&victim) == 0 {
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
