//! The mount's namespace on the network (`docs/namespace-publishing.md` §3-5): recovering it
//! from the key alone when the data dir has no metadata DB, the one-writer check of a writable
//! mount (refusal, `--force` takeover, catching up with another writer's newer namespace),
//! starting the publish trigger of a writable mount, and the follow trigger of a read-only one.
//!
//! A data dir without `meta/meta.redb` is either new (`meta/NEW`, written with its identity, or
//! `--new-namespace`): its mount starts empty; or it holds a key copied from elsewhere: the mount
//! fetches the newest namespace that verifies and mounts it, or exits non-zero saying why. It
//! never mounts an empty tree over a namespace that exists.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use defs_core::meta::DB_FILE;
use defs_core::object::Objects;
use defs_core::publish::lease::FORCE_MARGIN;
use defs_core::publish::{
    Follower, Lease, LeaseRefusal, PublishConfig, Publisher, ROOT_RECORD, WritableStart, recover,
    writable_start,
};
use defs_core::remote::RootStore;
use defs_core::root_record::{MAX_WRITER_NAME, RootBody, RootRecord, WriterId};
use defs_core::sync::Arc;
use defs_fuse::follower::FollowTrigger;
use defs_fuse::publisher::{PublishTrigger, Timing};
use tracing::{info, warn};

use crate::data_dir::{META_DIR, NEW_NAMESPACE_MARKER};
use crate::net_cmd::StorageNode;

/// This data dir's writer id (16 random bytes), made once.
const WRITER_ID_FILE: &str = "writer.id";

/// What the mount does with its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The metadata DB is there: mount it.
    Existing,
    /// A new identity (or `--new-namespace`): the mount starts an empty namespace.
    New,
    /// Recovered from the network; `Some(reason)` when a newer record could not be loaded and
    /// an older state was (the mount is then read-only).
    Recovered {
        /// The seq recovered.
        seq: u64,
        /// Entries (inodes) in it.
        inodes: u64,
        /// Why the newest published state was not loaded, when it was not.
        older: Option<String>,
    },
}

/// Makes sure `DIR/meta` holds the namespace to mount: nothing to do when the metadata DB
/// exists; an empty start for a new identity; else recovery from the network.
///
/// # Errors
/// No storage peer within `recover_wait_secs`, no namespace found, or recovery failed: each
/// with what was tried; nothing is mounted then.
pub async fn prepare(
    dir: &Path,
    node: &StorageNode,
    objects: &Objects,
    new_namespace: bool,
) -> anyhow::Result<Start> {
    let meta_dir = dir.join(META_DIR);
    if meta_dir.join(DB_FILE).exists() {
        return Ok(Start::Existing);
    }
    if new_namespace || meta_dir.join(NEW_NAMESPACE_MARKER).exists() {
        return Ok(Start::New);
    }
    let owner = node.identity.node_id();
    let settings = &node.config.namespace;
    let wait = Duration::from_secs(settings.recover_wait_secs);
    info!(%owner, wait_secs = settings.recover_wait_secs, "no metadata DB: recovering the namespace from the network");
    let peers = node.node.wait_for_storage_peers(1, wait).await?;
    if peers == 0 {
        bail!(
            "no storage peer reachable within {} s: cannot fetch the namespace of {owner} (this \
             data dir has its key but no metadata DB); nothing was mounted. Give a peer with \
             --bootstrap MULTIADDR, or run defs-mount --new-namespace if this identity never \
             stored files",
            settings.recover_wait_secs
        );
    }
    let roots: &dyn RootStore = &node.client;
    let difficulty = node.config.identity.puzzle_difficulty;
    let got = match recover(&meta_dir, &node.identity, objects, roots, difficulty).await {
        Ok(r) => r,
        Err(defs_core::Error::NoNamespace { detail, .. }) => bail!(
            "no namespace found for {owner} among {peers} storage peer(s) and the DHT ({detail}); \
             nothing was mounted. If this identity never stored files, run defs-mount \
             --new-namespace"
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e)).with_context(|| {
                format!("recovering the namespace of {owner}; nothing was mounted")
            });
        }
    };
    let older = got.refused.first().map(|r| {
        format!(
            "seq {} could not be loaded ({}); mounted seq {}{} read-only",
            r.seq.map_or_else(|| "?".into(), |s| s.to_string()),
            r.reason,
            got.seq,
            if got.kept_version {
                " (a kept version)"
            } else {
                ""
            }
        )
    });
    if let Some(o) = &older {
        warn!(%owner, "{o}");
    }
    info!(%owner, seq = got.seq, inodes = got.stats.inodes, "namespace recovered from the network");
    Ok(Start::Recovered {
        seq: got.seq,
        inodes: got.stats.inodes,
        older,
    })
}

/// Removes `meta/NEW` once the metadata DB exists: from then on, a lost DB is recovered from
/// the network, never replaced by an empty one.
pub fn namespace_exists(dir: &Path) {
    let marker = dir.join(META_DIR).join(NEW_NAMESPACE_MARKER);
    match std::fs::remove_file(&marker) {
        Ok(()) => info!("first mount of this identity: its namespace now exists"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(error = %e, path = %marker.display(), "removing the new-namespace marker failed")
        }
    }
}

/// This data dir's writer id, made (random, durable) on first use.
///
/// # Errors
/// When `DIR/writer.id` cannot be read or written, or is damaged.
pub fn writer_id(dir: &Path) -> anyhow::Result<WriterId> {
    let path = dir.join(WRITER_ID_FILE);
    match std::fs::read(&path) {
        Ok(b) => {
            let id: [u8; 16] = b.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!("{} is damaged ({} bytes, not 16)", path.display(), b.len())
            })?;
            Ok(WriterId(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut id = [0u8; 16];
            getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let tmp = dir.join(".writer.id.tmp");
            std::fs::write(&tmp, id)
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(WriterId(id))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// This machine's host name (at most [`MAX_WRITER_NAME`] bytes), shown to a refused writer.
pub fn host_name() -> String {
    let mut name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into());
    while name.len() > MAX_WRITER_NAME {
        name.pop();
    }
    name
}

/// How a writable mount's lease check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The network has a record of this identity: the mount claims the lease with a record of
    /// its own before it serves a write.
    Claim,
    /// No record (a namespace never published) or nobody to ask: nothing to claim.
    Unclaimed,
}

/// The follower of the mount's namespace (reads only; also what a writable mount catches up
/// with).
pub fn follower(dir: &Path, node: &StorageNode, db: Arc<defs_core::MetaDb>) -> Follower {
    Follower::new(
        &dir.join(META_DIR),
        db,
        node.objects.clone(),
        Arc::new(node.client.clone()),
        node.identity.clone(),
        node.config.identity.puzzle_difficulty,
    )
}

/// The one-writer check of a writable mount (docs/namespace-publishing.md §5): refuses when
/// another data dir holds the lease (unless `force`, which first waits the lease out, telling
/// `note` what it waits for and how long), or when another writer published past this data
/// dir's state while it holds unpublished changes; loads a newer namespace of another writer
/// first when nothing local is unpublished.
///
/// # Errors
/// The refusal, with what to do; a failed catch-up.
pub async fn check_lease(
    dir: &Path,
    node: &StorageNode,
    db: Arc<defs_core::MetaDb>,
    force: bool,
    note: &mut dyn FnMut(Duration, &str),
) -> anyhow::Result<LeaseOutcome> {
    let owner = node.identity.node_id();
    let me = writer_id(dir)?;
    let settings = &node.config.namespace;
    // A data dir that published (or recovered) before has a namespace on a network: give its
    // peers the time a recovery gets to connect. A new one has nothing to compare with yet.
    if dir.join(META_DIR).join(ROOT_RECORD).exists()
        && node
            .node
            .wait_for_storage_peers(1, Duration::from_secs(settings.recover_wait_secs))
            .await?
            == 0
    {
        warn!(%owner, "no storage peer reachable: the write lease could not be checked");
        return Ok(LeaseOutcome::Unclaimed);
    }
    let follower = follower(dir, node, db);
    let newest = match follower.newest().await {
        Ok(n) => n,
        Err(defs_core::Error::RootUnreachable { reason, .. }) => {
            warn!(%owner, %reason, "the write lease could not be checked");
            return Ok(LeaseOutcome::Unclaimed);
        }
        Err(e) => return Err(e).context("looking up the namespace's newest record"),
    };
    let Some((mut rec, mut body)) = newest else {
        return Ok(LeaseOutcome::Unclaimed);
    };
    let mut lease = Lease::of(Some((&rec, &body)), me);
    if let (true, Lease::Held { .. }) = (force, &lease) {
        (rec, body) = wait_out(&follower, rec, body, note).await?;
        lease = Lease::of(Some((&rec, &body)), me);
    }
    let local_seq = follower.local_seq()?;
    let local_changes = follower.local_changes()?;
    match writable_start(&lease, local_seq, local_changes, force) {
        Ok(WritableStart::AsIs) => {}
        Ok(WritableStart::CatchUp) => {
            info!(%owner, seq = rec.seq(), writer = %body.writer_name, local_seq, "loading the newer namespace another machine published before writing on it");
            follower.apply(&rec, &body).await.with_context(|| {
                format!(
                    "loading seq {} (published on {}) before mounting writable; nothing was \
                     mounted",
                    rec.seq(),
                    body.writer_name
                )
            })?;
        }
        Err(LeaseRefusal::HeldElsewhere {
            seq,
            writer_name,
            lease_secs,
        }) => bail!(
            "{owner} is mounted writable on {writer_name} (seq {seq}, lease {lease_secs} s): \
             use -o ro, or --force if that machine is dead"
        ),
        Err(LeaseRefusal::BehindWithChanges {
            seq,
            writer_name,
            local_seq,
        }) => bail!(
            "{owner} was written on {writer_name} since this data dir's state (seq {seq} there, \
             seq {local_seq} here), and this data dir has changes it never published: mounting \
             it writable would lose one or the other. Mount it with -o ro to copy those changes \
             out, then move {} aside and mount again to load the network's namespace",
            dir.join(META_DIR).display()
        ),
    }
    Ok(LeaseOutcome::Claim)
}

/// `--force`: waits until the newest seq has stayed at `rec`'s for its lease plus
/// [`FORCE_MARGIN`] of this machine's monotonic clock (no wall clock of two machines is ever
/// compared), asking the network every few seconds; returns the record read last, after the
/// wait.
///
/// # Errors
/// When the seq moved (the writer is alive) or the network could not be read at the end.
async fn wait_out(
    follower: &Follower,
    rec: RootRecord,
    body: RootBody,
    note: &mut dyn FnMut(Duration, &str),
) -> anyhow::Result<(RootRecord, RootBody)> {
    let seq = rec.seq();
    let lease = Duration::from_secs(u64::from(body.lease_secs));
    let wait = lease + FORCE_MARGIN;
    note(
        wait,
        &format!(
            "--force: {} holds the write lease (seq {seq}, lease {} s); waiting {} s (the lease \
             plus {} s) for seq {seq} to stay unchanged before taking over",
            body.writer_name,
            lease.as_secs(),
            wait.as_secs(),
            FORCE_MARGIN.as_secs()
        ),
    );
    let step = (lease / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let start = tokio::time::Instant::now();
    loop {
        let left = wait.saturating_sub(start.elapsed());
        tokio::time::sleep(step.min(left).max(Duration::from_millis(100))).await;
        let newest = follower
            .newest()
            .await
            .context("--force: reading the newest record during the wait")?;
        match newest {
            Some((r, b)) if r.seq() != seq => bail!(
                "--force: {} published seq {} during the wait: that machine is alive and \
                 writing; not taking over (use -o ro here, or unmount it there)",
                b.writer_name,
                r.seq()
            ),
            Some((r, b)) if start.elapsed() >= wait => {
                info!(
                    seq,
                    waited_secs = start.elapsed().as_secs(),
                    "--force: the lease ran out; taking over"
                );
                return Ok((r, b));
            }
            Some(_) => {}
            None => bail!("--force: the record of seq {seq} is no longer found; not taking over"),
        }
    }
}

/// Starts publishing the namespace of a writable mount; with `claim`, first publishes a record
/// of this writer (the lease taken before anything is written).
///
/// # Errors
/// When the writer id or the publisher's files (`meta/root.record`, `root.next`, `root.seen`)
/// cannot be read; when the claim finds a newer record (another machine took the lease first).
pub async fn start_publisher(
    dir: &Path,
    node: &StorageNode,
    db: Arc<defs_core::MetaDb>,
    objects: Arc<Objects>,
    claim: LeaseOutcome,
) -> anyhow::Result<PublishTrigger> {
    let settings = &node.config.namespace;
    let config = PublishConfig {
        writer: writer_id(dir)?,
        writer_name: host_name(),
        lease_secs: settings.lease_secs,
    };
    let roots: Arc<dyn RootStore> = Arc::new(node.client.clone());
    let publisher = Publisher::open(
        &dir.join(META_DIR),
        db.clone(),
        objects,
        roots,
        node.identity.clone(),
        config,
    )
    .context("opening the namespace publisher")?
    .with_retention(settings.retention());
    if claim == LeaseOutcome::Claim {
        match publisher.renew().await {
            Ok(p) => info!(seq = p.seq, copies = p.copies, "write lease taken"),
            Err(e @ defs_core::Error::RootRollback { .. }) => {
                return Err(anyhow::Error::new(e)).context(
                    "another machine took the write lease of this identity first; nothing was \
                     mounted (use -o ro)",
                );
            }
            // Retried by the trigger's renewal.
            Err(e) => warn!(error = %e, "taking the write lease failed; retrying"),
        }
    }
    Ok(PublishTrigger::spawn(
        db,
        Arc::new(publisher),
        Arc::new(node.client.clone()),
        node.identity.node_id(),
        Timing {
            debounce: Duration::from_secs(settings.publish_debounce_secs),
            max_staleness: Duration::from_secs(settings.max_staleness_secs),
            lease: Duration::from_secs(u64::from(settings.lease_secs)),
        },
    ))
}

/// Starts following the namespace under a read-only mount (`follow_secs`); `notifier` tells
/// the kernel what changed.
pub fn start_follower(
    dir: &Path,
    node: &StorageNode,
    db: Arc<defs_core::MetaDb>,
    fs: defs_fuse::fs::Fs,
    notifier: Option<defs_fuse::session::Notifier>,
) -> FollowTrigger {
    FollowTrigger::spawn(
        Arc::new(follower(dir, node, db)),
        fs,
        notifier,
        Duration::from_secs(node.config.namespace.follow_secs),
    )
}
