//! Crash recovery: after SIGKILL of the daemon, mounting again finds every file that was
//! closed before the kill intact.

use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use defs_tests::mount::{generate_tree, pseudo_random};

use super::mount;

#[test]
fn sigkill_during_a_copy_keeps_every_file_closed_before_the_kill() {
    let mut m = mount!();
    let dir = m.path("copy");
    fs::create_dir(&dir).unwrap();
    let closed: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (closed, stop, dir) = (closed.clone(), stop.clone(), dir.clone());
        std::thread::spawn(move || {
            for i in 0..100_000usize {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("f{i:06}");
                let size = (i * 7919) % 200_000;
                let result = (|| {
                    let mut f = fs::File::create(dir.join(&name))?;
                    f.write_all(&pseudo_random(i as u64, size))?;
                    // close(2): FUSE flush; its result is the one that counts.
                    nix::unistd::close(std::os::fd::OwnedFd::from(f)).map_err(std::io::Error::from)
                })();
                match result {
                    Ok(()) => closed.lock().unwrap().push((name, size)),
                    Err(_) => break, // the daemon is gone
                }
            }
        })
    };
    // Let it copy for a while, also through a cp -a running alongside.
    let src = m.scratch().join("src");
    generate_tree(&src, 200);
    let mut cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(m.path("cp-copy"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    m.crash();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let _ = cp.wait();
    let closed = closed.lock().unwrap().clone();
    assert!(
        closed.len() > 10,
        "only {} files were written before the kill",
        closed.len()
    );

    m.mount();
    for (name, size) in &closed {
        let data = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name} lost: {e}"));
        let seed: u64 = name[1..].parse().unwrap();
        assert!(data == pseudo_random(seed, *size), "{name} is not intact");
    }
    // The mount is fully usable after recovery.
    fs::write(m.path("after"), b"ok").unwrap();
    assert_eq!(fs::read(m.path("after")).unwrap(), b"ok");
}
