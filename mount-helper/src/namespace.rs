//! The mount's namespace on the network (`docs/namespace-publishing.md` §3-4): recovering it
//! from the key alone when the data dir has no metadata DB, and starting the publish trigger
//! of a writable mount.
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
use defs_core::publish::{PublishConfig, Publisher, recover};
use defs_core::remote::RootStore;
use defs_core::root_record::{MAX_WRITER_NAME, WriterId};
use defs_core::sync::Arc;
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
            "seq {} could not be loaded ({}); mounted seq {} read-only",
            r.seq.map_or_else(|| "?".into(), |s| s.to_string()),
            r.reason,
            got.seq
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

/// Starts publishing the namespace of a writable mount.
///
/// # Errors
/// When the writer id or the publisher's files (`meta/root.record`, `root.next`, `root.seen`)
/// cannot be read.
pub fn start_publisher(
    dir: &Path,
    node: &StorageNode,
    db: Arc<defs_core::MetaDb>,
    objects: Arc<Objects>,
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
