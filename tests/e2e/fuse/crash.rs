//! Crash testing (issue 20), over a mount on three real storage nodes:
//!
//! - the mount's daemon SIGKILLed at random moments while a writer copies files (mixed sizes,
//!   some fsynced, some rewritten in place, some replaced by rename), cycle after cycle: after
//!   each remount every file closed before the kill is intact, and no file holds bytes that were
//!   never written (docs/SEMANTICS.md, "Durability"); at the end `defs sync` stores everything
//!   and, with the cache deleted, every file reads back from the nodes;
//! - a storage node SIGKILLed during `defs sync`'s uploads, cycle after cycle: sync's verdict is
//!   true (exit 0: every file reads back with that node still down and the cache deleted), the
//!   killed node's shard store verifies clean before it restarts, and after it returns `defs
//!   sync` succeeds.
//!
//! CI runs a few cycles of each; `ci/crash` runs 20 (`DEFS_CRASH_CYCLES`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use defs_tests::cluster::{Cluster, out, text};
use defs_tests::fsx::Rng;
use defs_tests::mount::{TestMount, UNMOUNT_TIMEOUT, mount_on, pseudo_random, wait_exit};

/// Cycles a crash test runs: `DEFS_CRASH_CYCLES`, else `ci` (CI's few).
fn cycles(ci: usize) -> usize {
    std::env::var("DEFS_CRASH_CYCLES").map_or(ci, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("DEFS_CRASH_CYCLES: {s:?} is not a number"))
    })
}

/// The seed of a crash test's random choices: `DEFS_CRASH_SEED`, else a fixed one.
fn seed() -> u64 {
    std::env::var("DEFS_CRASH_SEED").map_or(20, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("DEFS_CRASH_SEED: {s:?} is not a number"))
    })
}

/// One complete version of a file: its bytes are `pseudo_random(seed, size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    seed: u64,
    size: usize,
}

impl Version {
    fn bytes(self) -> Vec<u8> {
        pseudo_random(self.seed, self.size)
    }
}

/// The change the writer had started and not finished when the daemon died.
#[derive(Clone, Debug)]
enum InFlight {
    /// Writing a new file.
    New { name: String, new: Version },
    /// Rewriting `name` in place (`O_TRUNC`), which held `old`.
    InPlace {
        name: String,
        old: Version,
        new: Version,
    },
    /// Writing `tmp`, then renaming it over `name` (which held `old`).
    Replace {
        tmp: String,
        name: String,
        old: Version,
        new: Version,
    },
}

/// What the writer has done: every file it finished (closed, and fsynced when it chose to) and
/// the change it was in the middle of.
#[derive(Debug, Default)]
struct Journal {
    done: BTreeMap<String, Version>,
    in_flight: Option<InFlight>,
    /// Files an earlier kill left half-written, with the bytes they held after that recovery
    /// (nothing writes them again, so they must keep those bytes).
    leftovers: BTreeMap<String, Vec<u8>>,
    fsynced: usize,
}

impl Journal {
    /// After a verified recovery: what the change in flight left becomes known state (a
    /// half-written file a leftover with the bytes it holds now; a replaced file the version
    /// it holds).
    fn settle(&mut self, dir: &Path) {
        let read = |name: &str| fs::read(dir.join(name)).ok();
        match self.in_flight.take() {
            Some(InFlight::New { name, .. }) => {
                if let Some(b) = read(&name) {
                    self.leftovers.insert(name, b);
                }
            }
            Some(InFlight::InPlace { name, .. }) => {
                self.done.remove(&name);
                if let Some(b) = read(&name) {
                    self.leftovers.insert(name, b);
                }
            }
            Some(InFlight::Replace { tmp, name, new, .. }) => {
                if read(&name).is_some_and(|b| b == new.bytes()) {
                    self.done.insert(name, new);
                }
                if let Some(b) = read(&tmp) {
                    self.leftovers.insert(tmp, b);
                }
            }
            None => {}
        }
    }
}

/// The journal, even if a writer panicked holding it.
fn lock(journal: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    journal
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A file of mixed size: mostly small, some of hundreds of KiB, a few of megabytes.
fn size(rng: &mut Rng) -> usize {
    let n = match rng.below(50) {
        0 => (1 << 20) + rng.below(2 << 20),
        1..=9 => (32 << 10) + rng.below(480 << 10),
        _ => rng.below(32 << 10),
    };
    usize::try_from(n).unwrap_or(0)
}

/// Writes `v` to `path` (`O_TRUNC` when it exists), fsyncing first when `fsync`, then closes
/// it with close(2) (FUSE flush: its result is the one that counts).
fn write_version(path: &Path, v: Version, fsync: bool) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(&v.bytes())?;
    if fsync {
        f.sync_all()?;
    }
    nix::unistd::close(std::os::fd::OwnedFd::from(f)).map_err(std::io::Error::from)
}

/// The writer: changes files in `dir` until `stop` or an error (the daemon is gone), recording
/// each in `journal` before it starts and after it finishes.
fn writer(dir: &Path, cycle: usize, mut rng: Rng, journal: &Mutex<Journal>, stop: &AtomicBool) {
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // Now and then a quiet moment, so the flusher starts uploads the kill may then cut.
        if rng.one_in(40) {
            std::thread::sleep(Duration::from_millis(1200));
        }
        let new = Version {
            seed: rng.next_u64(),
            size: size(&mut rng),
        };
        let fsync = rng.one_in(4);
        let existing: Vec<(String, Version)> = {
            let j = lock(journal);
            j.done.iter().map(|(n, v)| (n.clone(), *v)).collect()
        };
        let pick = usize::try_from(rng.below(existing.len() as u64)).unwrap_or(0);
        let change = match (rng.below(8), existing.get(pick)) {
            (0, Some((name, old))) => InFlight::InPlace {
                name: name.clone(),
                old: *old,
                new,
            },
            (1, Some((name, old))) => InFlight::Replace {
                tmp: format!(".tmp-{cycle}-{i}"),
                name: name.clone(),
                old: *old,
                new,
            },
            _ => InFlight::New {
                name: format!("c{cycle:02}-f{i:05}"),
                new,
            },
        };
        lock(journal).in_flight = Some(change.clone());
        let result = match &change {
            InFlight::New { name, new } | InFlight::InPlace { name, new, .. } => {
                write_version(&dir.join(name), *new, fsync)
            }
            InFlight::Replace { tmp, name, new, .. } => write_version(&dir.join(tmp), *new, fsync)
                .and_then(|()| fs::rename(dir.join(tmp), dir.join(name))),
        };
        if result.is_err() {
            return; // the daemon is gone: the change stays in flight
        }
        let mut j = lock(journal);
        let (InFlight::New { name, new }
        | InFlight::InPlace { name, new, .. }
        | InFlight::Replace { name, new, .. }) = change;
        j.done.insert(name, new);
        j.in_flight = None;
        j.fsynced += usize::from(fsync);
        drop(j);
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// Whether `got` is a mix of `versions`' bytes and zeros (what a file being written at a crash
/// may hold): no longer than the longest, each byte one of theirs at its offset or zero.
fn is_mix(got: &[u8], versions: &[Version]) -> bool {
    let all: Vec<Vec<u8>> = versions.iter().map(|v| v.bytes()).collect();
    got.len() <= all.iter().map(Vec::len).max().unwrap_or(0)
        && got
            .iter()
            .enumerate()
            .all(|(i, b)| *b == 0 || all.iter().any(|v| v.get(i) == Some(b)))
}

/// Checks `dir` against `journal` after a crash: every finished file intact (or, the one being
/// replaced, its old or new version whole; the one rewritten in place, a mix of both), and no
/// other name except the in-flight file, holding only bytes the writer wrote.
fn verify(dir: &Path, journal: &Journal, when: &str) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{when}: listing {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{when}: {e}"))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    for name in &names {
        let got =
            fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{when}: reading {name}: {e}"));
        let ok = match (&journal.in_flight, journal.done.get(name)) {
            (Some(InFlight::InPlace { name: n, old, new }), _) if n == name => {
                is_mix(&got, &[*old, *new])
            }
            (
                Some(InFlight::Replace {
                    name: n, old, new, ..
                }),
                _,
            ) if n == name => got == old.bytes() || got == new.bytes(),
            (Some(InFlight::Replace { tmp, new, .. }), _) if tmp == name => is_mix(&got, &[*new]),
            (Some(InFlight::New { name: n, new }), None) if n == name => is_mix(&got, &[*new]),
            (_, Some(v)) => got == v.bytes(),
            (_, None) if journal.leftovers.contains_key(name) => journal.leftovers[name] == got,
            (_, None) => panic!(
                "{when}: {name} was never written (in flight: {:?})",
                journal.in_flight
            ),
        };
        assert!(
            ok,
            "{when}: {name} holds {} bytes that are not what was written (done: {:?}, in flight: {:?})",
            got.len(),
            journal.done.get(name),
            journal.in_flight
        );
    }
    for name in journal.done.keys().chain(journal.leftovers.keys()) {
        assert!(
            names.binary_search(name).is_ok(),
            "{when}: {name}, finished (or recovered) before the kill, is gone"
        );
    }
}

/// Unmounts `m`, whose files are all clean: the daemon must exit within
/// [`UNMOUNT_TIMEOUT`] (it has nothing left to upload); the failure shows the end of its log.
fn unmount_in_time(m: &mut TestMount, when: &str) {
    let pid = m.pid();
    let started = Instant::now();
    m.unmount_nowait();
    if let Some(pid) = pid {
        wait_exit(pid, 4 * UNMOUNT_TIMEOUT);
    }
    let took = started.elapsed();
    let log = m.log();
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    assert!(
        took < UNMOUNT_TIMEOUT,
        "{when}: the daemon took {took:?} to exit after the unmount; its log ends:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn sigkill_during_a_copy_keeps_every_file_closed_before_the_kill() {
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 3);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    let dir = m.path("copy");
    fs::create_dir(&dir).unwrap();
    let seed = seed();
    let mut rng = Rng::new(seed);
    let journal = Arc::new(Mutex::new(Journal::default()));
    let n = cycles(3);
    for cycle in 0..n {
        let stop = Arc::new(AtomicBool::new(false));
        let w = {
            let (dir, journal, stop) = (dir.clone(), journal.clone(), stop.clone());
            let rng = Rng::new(rng.next_u64());
            std::thread::spawn(move || writer(&dir, cycle, rng, &journal, &stop))
        };
        let delay = 200 + rng.below(2800);
        std::thread::sleep(Duration::from_millis(delay));
        m.crash();
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        m.mount();
        let when = format!("seed {seed}, cycle {cycle} (killed after {delay} ms)");
        let mut j = lock(&journal);
        verify(&dir, &j, &when);
        eprintln!(
            "crash: {when}: {} files intact ({} fsynced), in flight: {:?}",
            j.done.len(),
            j.fsynced,
            j.in_flight
        );
        j.settle(&dir);
    }
    let j = lock(&journal);
    assert!(
        j.done.len() >= n,
        "only {} files were written in {n} cycles",
        j.done.len()
    );
    // What the kills interrupted, uploads included, completes: everything reaches the nodes and
    // reads back from them alone.
    let o = out(m.defs().arg("sync").arg(m.mnt()));
    assert_eq!(o.status.code(), Some(0), "{}\nlog:\n{}", text(&o), m.log());
    unmount_in_time(
        &mut m,
        &format!("seed {seed}, after {n} crashes and a sync"),
    );
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();
    verify(
        &dir,
        &j,
        &format!("seed {seed}, after sync and a cache wipe"),
    );
    fs::write(m.path("after"), b"ok").unwrap();
    assert_eq!(fs::read(m.path("after")).unwrap(), b"ok");
}

/// Files of `batch` under `dir`: `(relative name, bytes)`.
fn batch(rng: &mut Rng, cycle: usize) -> Vec<(String, Vec<u8>)> {
    (0..24)
        .map(|i| {
            let len = size(rng);
            (
                format!("n{cycle:02}/f{i:02}"),
                pseudo_random(rng.next_u64(), len),
            )
        })
        .collect()
}

/// Opens the shard store of the stopped node in `dir`, checks that every shard in its index is
/// there, passes its CRC, and hashes to its id. Returns how many shards it holds.
fn verify_store(dir: &Path, when: &str) -> usize {
    use defs_core::shard_store::{Quotas, ShardStore};
    let store = ShardStore::open(
        &dir.join("shards"),
        Quotas {
            capacity: u64::MAX,
            per_owner: 0,
        },
    )
    .unwrap_or_else(|e| panic!("{when}: opening the killed node's store: {e}"));
    let report = store
        .scrub()
        .unwrap_or_else(|e| panic!("{when}: scrub: {e}"));
    assert!(report.is_clean(), "{when}: scrub found {report:?}");
    let mut n = 0;
    let mut after = None;
    loop {
        let page = store
            .list(after.as_ref(), 256)
            .unwrap_or_else(|e| panic!("{when}: listing shards: {e}"));
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        for (id, _) in &page {
            let bytes = store
                .get(id)
                .unwrap_or_else(|e| panic!("{when}: reading shard {id:?}: {e}"));
            assert_eq!(
                blake3::hash(&bytes).as_bytes(),
                &id.0,
                "{when}: shard {id:?}"
            );
            n += 1;
        }
    }
    n
}

/// Reads every file of `files` through the mount: each must be bit-exact.
fn read_back(m: &TestMount, files: &[(String, Vec<u8>)], when: &str) {
    for (rel, bytes) in files {
        let got = fs::read(m.path(rel)).unwrap_or_else(|e| panic!("{when}: {rel}: {e}"));
        assert!(got == *bytes, "{when}: {rel} reads back other bytes");
    }
}

/// `defs sync` of the whole mount until it exits 0 (a returning node takes a moment to be
/// dialled again), at most `tries` times.
fn sync_until_ok(m: &TestMount, tries: usize, when: &str) {
    for t in 0.. {
        let o = out(m.defs().arg("sync").arg(m.mnt()));
        if o.status.code() == Some(0) {
            return;
        }
        assert!(
            t + 1 < tries,
            "{when}: defs sync failed {tries} times: {}\nlog:\n{}",
            text(&o),
            m.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Sends `signal` to node `i` of `cluster`.
fn signal(cluster: &Cluster, i: usize, signal: nix::sys::signal::Signal) {
    let pid = i32::try_from(cluster.nodes[i].0.id()).unwrap_or(i32::MAX);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .unwrap_or_else(|e| panic!("signal {signal} to node {i}: {e}"));
}

/// Regression (issue 20): a file whose upload met a node that stopped answering got that
/// node's shard placed on this machine (no other peer was left for it); with the node back,
/// `defs sync` kept exiting 1 ("1 only on this machine") until the mount's repair pass, up to
/// ten minutes later. Sync now repairs the files it finds off the network.
#[test]
fn r20_a_shard_kept_on_this_machine_during_an_outage_reaches_a_node_at_the_next_sync() {
    use nix::sys::signal::Signal;
    let base = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(base.path(), 4);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    // The mount sees four storage peers: the layout wants one shard on each.
    fs::write(m.path("warm"), b"x").unwrap();
    sync_until_ok(&m, 10, "before the outage");
    // Node 3 stops answering but stays connected: the upload picks it, times out, and keeps
    // that shard on this machine.
    signal(&cluster, 3, Signal::SIGSTOP);
    // Large enough for Reed-Solomon (2+2 over four peers), not whole-file copies.
    let bytes = pseudo_random(3, 3 << 20);
    fs::write(m.path("f"), &bytes).unwrap();
    let o = out(m.defs().arg("sync").arg(m.path("f")));
    signal(&cluster, 3, Signal::SIGCONT);
    let verdict = text(&o);
    assert_eq!(o.status.code(), Some(1), "{verdict}");
    assert!(verdict.contains("only on this machine"), "{verdict}");
    // The node answers again: sync alone brings the file onto the network.
    sync_until_ok(&m, 10, "after the node resumed");
    let d = std::process::Command::new("getfattr")
        .args(["-n", "user.defs.durability", "--only-values"])
        .arg(m.path("f"))
        .output()
        .unwrap();
    let d = String::from_utf8_lossy(&d.stdout);
    assert!(d.starts_with("on the network: "), "{d}");
    assert_eq!(fs::read(m.path("f")).unwrap(), bytes);
    unmount_in_time(&mut m, "after the sync");
}

#[test]
fn a_storage_node_killed_during_uploads_leaves_sync_truthful_and_its_store_intact() {
    let base = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(base.path(), 4);
    let Some(mut m) = mount_on(&cluster) else {
        return;
    };
    let seed = seed();
    let mut rng = Rng::new(seed ^ 0x6e6f6465);
    let mut all: Vec<(String, Vec<u8>)> = Vec::new();
    for cycle in 0..cycles(2) {
        let files = batch(&mut rng, cycle);
        fs::create_dir(m.path(format!("n{cycle:02}"))).unwrap();
        for (rel, bytes) in &files {
            fs::write(m.path(rel), bytes).unwrap();
        }
        all.extend(files);
        let victim = usize::try_from(rng.below(4)).unwrap_or(0);
        let delay = 50 + rng.below(1500);
        let when = format!("seed {seed}, cycle {cycle} (node {victim} killed after {delay} ms)");
        let sync = m
            .defs()
            .arg("sync")
            .arg(m.mnt())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        cluster.kill(victim);
        let o = sync.wait_with_output().unwrap();
        let verdict = text(&o);
        match o.status.code() {
            Some(0) => {}
            Some(1) => assert!(
                verdict.contains(m.mnt().to_string_lossy().as_ref()),
                "{when}: defs sync failed without naming a file: {verdict}"
            ),
            other => panic!("{when}: defs sync exited {other:?}: {verdict}"),
        }
        // Exit 0 says every file is on the network without the killed node: each must read back
        // from the live nodes with nothing cached. After exit 1 too, one lost node loses nothing.
        m.unmount();
        fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
        m.mount();
        let exit = o.status.code();
        read_back(&m, &all, &format!("{when}, after sync exited {exit:?}"));
        let shards = verify_store(&cluster.dirs[victim], &when);
        eprintln!(
            "crash: {when}: sync exit {:?}; the killed node held {shards} shards, all intact",
            o.status.code()
        );
        cluster.restart(victim);
        sync_until_ok(&m, 5, &format!("{when}, after the node returned"));
    }
    m.unmount();
    fs::remove_dir_all(m.data_dir().join("cache")).unwrap();
    m.mount();
    read_back(
        &m,
        &all,
        &format!("seed {seed}, at the end, from the nodes"),
    );
}
