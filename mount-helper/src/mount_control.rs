//! The control socket of `defs-mount`: defs-net's [`Commands`] (status, peers, put, get) plus
//! what only a mount answers — `Sync { path }` and a mount section in `Status`. This is the glue
//! between defs-net and defs-fuse, which never import each other.
//!
//! ```text
//!  defs sync PATH ──Sync{path}──► MountCommands ── resolve PATH in the mount ──► Fs::sync_tree
//!                 ◄──Progress (bytes)*, Done | Failed(paths + last errors)──┘
//!  defs status    ──Status──────► Commands::status (node) + Fs::upload_status (journal)
//!                                 + Fs::tree_status (whole tree: states, least protected
//!                                   file, errors, damaged shards found on read)
//! ```

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use defs_core::object::Durability;
use defs_fuse::flusher::FlushError;
use defs_fuse::follower::{FollowState, FollowTrigger};
use defs_fuse::fs::{Fs, SyncReport, TreeStatus, UploadStatus, damaged_line, damaged_summary};
use defs_fuse::publisher::{PublishState, PublishTrigger};
use defs_net::Node;
use defs_net::commands::{self, Commands, json_str};
use defs_net::control::{ControlRequest, Handler, ProgressSink};

/// Failed files named in a `defs sync` failure message (the count includes all of them).
const SYNC_FAILURES_SHOWN: usize = 10;

/// Serves the mount's control socket.
#[derive(Debug)]
pub struct MountCommands {
    /// The node's commands.
    pub commands: Commands,
    /// The node (for its peer count).
    pub node: Node,
    /// The mounted filesystem.
    pub fs: Fs,
    /// Where it is mounted (absolute, canonical).
    pub mountpoint: PathBuf,
    /// The namespace's publish trigger (writable mounts).
    pub publisher: Option<PublishTrigger>,
    /// The namespace's follow trigger (mounts asked to be read-only).
    pub follower: Option<FollowTrigger>,
    /// The mount's audits (`defs audit`).
    pub auditor: crate::audits::Auditor,
    /// The garbage collector (writable mounts).
    pub gc: Option<crate::gc::GarbageCollector>,
}

impl Handler for MountCommands {
    fn handle(
        &self,
        req: ControlRequest,
        progress: ProgressSink,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            match req {
                ControlRequest::Sync { path } => self.sync(path, progress).await,
                ControlRequest::Status { json } => self.status(json).await,
                ControlRequest::Repair { files } => self.repair(files, progress).await,
                ControlRequest::Audit => self.auditor.full_round().await,
                ControlRequest::Gc => match &self.gc {
                    Some(gc) => gc.run_now().await,
                    None => Err(
                        "a read-only mount collects no garbage: run `defs gc` where the \
                                 identity is mounted writable"
                            .into(),
                    ),
                },
                other => self.commands.handle(other, progress).await,
            }
        })
    }
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

impl MountCommands {
    /// `defs sync [PATH]`.
    async fn sync(&self, path: Option<String>, progress: ProgressSink) -> Result<String, String> {
        let path = path.map_or_else(|| self.mountpoint.clone(), PathBuf::from);
        let Ok(rel) = path.strip_prefix(&self.mountpoint) else {
            return Err(format!(
                "{} is not inside the mount at {}",
                path.display(),
                self.mountpoint.display()
            ));
        };
        let root = self
            .fs
            .resolve(rel)
            .map_err(|e| format!("{} in the mount: {e}", path.display()))?;
        // Uploads need somewhere to go: with no storage peer nothing written can leave this
        // machine, and waiting for retries would only hide that.
        let peers = match self.node.status().await {
            Ok(s) => s.storage_peers,
            Err(e) => return Err(format!("the mount's node: {e}")),
        };
        if peers == 0 {
            let pending = self.fs.pending(root).map_err(|e| format!("{e}"))?;
            if pending.files_total > 0 {
                return Err(format!(
                    "no storage peers are connected: {} holds {} ({} bytes) that can only \
                     stay in the local cache, on this machine, until a peer is reachable \
                     (mount with --bootstrap MULTIADDR, see `defs peers`)",
                    path.display(),
                    plural(pending.files_total, "dirty file"),
                    pending.bytes_total
                ));
            }
        }
        let report = self
            .fs
            .sync_tree(root, |p| progress.report(p.bytes_done, p.bytes_total))
            .await
            .map_err(|e| match e {
                defs_fuse::fs::Error::Flush(FlushError::NoUploader { .. }) => format!(
                    "this mount has no network to upload to: the dirty files under {} stay in \
                     the local cache",
                    path.display()
                ),
                e => format!("syncing {}: {e}", path.display()),
            })?;
        // Uploaded is not enough: each file must be on the network by the one definition,
        // judged now against which holders are reachable.
        let judge = || async {
            self.fs
                .tree_status_under(root, Path::new("/").join(rel))
                .await
                .map_err(|e| format!("checking {}: {e}", path.display()))
        };
        let mut tree = judge().await?;
        if report.is_clean() && !tree.kept_here.is_empty() {
            // A shard that went to this machine while a node did not answer (too few peers
            // left for the layout; issue 20) keeps its file off the network even once every
            // node is back. Repair moves such shards onto other nodes now (the mount's own pass
            // runs only every `[repair] interval_secs`); then the files are judged again. Files
            // short of holders that are down are left alone: nowhere better is known for them.
            let ids = tree.kept_here.iter().map(|f| (*f, None)).collect();
            if let Err(e) = commands::repair(&self.commands.repairer, ids, &|_, _| {}).await {
                tracing::info!(error = %format!("{e:#}"), "sync: repair of files kept on this machine left some");
            }
            tree = judge().await?;
        }
        let files = sync_outcome(&self.mountpoint, &path, &report, &tree)?;
        // The files are on the network; the names that lead to them must be too.
        let Some(publisher) = &self.publisher else {
            return Ok(files);
        };
        match publisher.publish_now().await {
            Ok(p) => Ok(format!(
                "{files}\nnamespace published (seq {}, kept by {} other node(s))",
                p.seq, p.copies
            )),
            Err(e) => Err(format!(
                "{files}\nbut the namespace (the names and directories that lead to them) is \
                 not on the network: {e}"
            )),
        }
    }

    /// `defs status`: the node's status and the mount's write-back cache.
    async fn status(&self, json: bool) -> Result<String, String> {
        let mount = self.fs.upload_status().map_err(|e| format!("{e}"))?;
        let tree = self.fs.tree_status().await.map_err(|e| format!("{e}"))?;
        let node = commands::status_with(&self.commands.client, json, not_on_network(&tree))
            .await
            .map_err(|e| format!("{e:#}"))?;
        // After the node's status, which refreshed the owner's figures on every node: the
        // same space statfs (df) reports now.
        let space = self
            .fs
            .statfs()
            .await
            .map(|st| {
                let frsize = u64::from(st.frsize.max(1));
                (
                    st.bavail.saturating_mul(frsize),
                    st.blocks.saturating_mul(frsize),
                )
            })
            .map_err(|e| format!("{e}"))?;
        let published = match &self.publisher {
            Some(p) => Some(p.status().await),
            None => None,
        };
        let followed = match &self.follower {
            Some(f) => Some(f.status().await),
            None => None,
        };
        if json {
            let Some(open) = node.strip_suffix('}') else {
                return Err("the node's status is not a JSON object".into());
            };
            let Some(mount) = mount_json(&self.mountpoint, &mount)
                .strip_suffix('}')
                .map(String::from)
            else {
                return Err("the mount's status is not a JSON object".into());
            };
            return Ok(format!(
                "{open},\"mount\":{mount},\"space\":{{\"available\":{},\"size\":{}}},\"tree\":{},\"repair\":{},\"namespace\":{},\"gc\":{}}}}}",
                space.0,
                space.1,
                tree_json(&self.mountpoint, &tree),
                commands::repair_json(&self.commands.repairer.status()),
                namespace_json(published.as_ref(), followed.as_ref()),
                self.gc
                    .as_ref()
                    .map_or_else(|| "null".to_string(), |g| g.status_json())
            ));
        }
        let mut out = format!(
            "{node}\n{}{}{}\n{}\n{}",
            mount_text(&self.mountpoint, &mount),
            space_text(space),
            tree_text(&self.mountpoint, &tree).trim_end(),
            commands::repair_text(&self.commands.repairer.status()),
            namespace_text(published.as_ref(), followed.as_ref())
        );
        if let Some(gc) = &self.gc {
            out.push('\n');
            out.push_str(&gc.status_text());
        }
        Ok(out)
    }

    /// `defs repair [FILE_ID...]`: the named objects, or every stored file of the mount, checked
    /// and repaired now in the foreground (files checked are the progress).
    async fn repair(&self, files: Vec<String>, progress: ProgressSink) -> Result<String, String> {
        let ids = if files.is_empty() {
            self.fs
                .stored_objects()
                .map_err(|e| format!("listing the mount's files: {e}"))?
                .into_iter()
                .map(|(f, k)| (f, Some(k)))
                .collect()
        } else {
            commands::repair_ids(&files).map_err(|e| format!("{e:#}"))?
        };
        commands::repair(&self.commands.repairer, ids, &|d, t| {
            progress.report(d, t);
        })
        .await
        .map_err(|e| format!("{e:#}"))
    }
}

/// The mount's space line of `defs status`: what `df MOUNT` shows, bytes.
fn space_text((available, size): (u64, u64)) -> String {
    format!(
        "space:          {available} bytes available of {size} (df: what this identity may still store, after redundancy)\n"
    )
}

/// The namespace line of `defs status`: what of the tree's names is on the network (a
/// writable mount), or which published namespace the mount shows (a read-only one).
fn namespace_text(p: Option<&PublishState>, f: Option<&FollowState>) -> String {
    let Some(p) = p else {
        let Some(f) = f else {
            return "namespace: read-only mount, not published from here".into();
        };
        let mut line = format!(
            "namespace: read-only mount following the published namespace (seq {}",
            f.seq
        );
        if let Some(w) = &f.writer_name {
            let _ = write!(line, ", written on {w}");
        }
        let _ = write!(line, "; checked every {} s)", f.every.as_secs());
        if let Some(e) = &f.error {
            let _ = write!(line, "; the last check failed: {e}");
        }
        return line;
    };
    if p.lost {
        return "namespace: lease lost: local changes are not published (another machine took \
                over the write lease of this identity; a newer record exists)"
            .into();
    }
    let mut line = if p.published_seq == 0 {
        "namespace: not published yet".to_string()
    } else {
        format!("namespace: published as seq {}", p.published_seq)
    };
    if let Some(last) = &p.last {
        let _ = write!(line, " (kept by {} other node(s))", last.copies);
    }
    if p.pending {
        line.push_str("; changes since then are not published yet");
    }
    if let Some(e) = &p.error {
        let _ = write!(line, "; the last publish failed: {e}");
    }
    line
}

/// [`namespace_text`] as JSON.
fn namespace_json(p: Option<&PublishState>, f: Option<&FollowState>) -> String {
    let Some(p) = p else {
        let Some(f) = f else {
            return "{\"published\":false,\"read_only\":true}".into();
        };
        return format!(
            "{{\"published\":false,\"read_only\":true,\"following_seq\":{},\"writer\":{},\"error\":{}}}",
            f.seq,
            f.writer_name
                .as_deref()
                .map_or_else(|| "null".to_string(), json_str),
            f.error
                .as_deref()
                .map_or_else(|| "null".to_string(), json_str)
        );
    };
    format!(
        "{{\"read_only\":false,\"published_seq\":{},\"copies\":{},\"pending\":{},\"lost\":{},\"error\":{}}}",
        p.published_seq,
        p.last.as_ref().map_or(0, |l| l.copies),
        p.pending,
        p.lost,
        p.error
            .as_deref()
            .map_or_else(|| "null".to_string(), json_str)
    )
}

/// Why not everything in `t` is on the network, in one line (`None` when it all is).
fn not_on_network(t: &TreeStatus) -> Option<String> {
    if t.on_network() {
        return None;
    }
    let mut parts = Vec::new();
    if t.not_on_network > 0 {
        parts.push(format!(
            "{} not on the network",
            plural(t.not_on_network, "stored file")
        ));
    }
    let waiting = t.dirty + t.uploading + t.failed;
    if waiting > 0 {
        parts.push(format!("{} not uploaded yet", plural(waiting, "file")));
    }
    Some(format!(
        "{} (see the tree section, `defs sync`)",
        parts.join(", ")
    ))
}

/// The text `defs sync` prints, or its failure message: every file under `path` must have
/// uploaded (`r`) and be on the network now (`t`, the subtree's status after the uploads).
fn sync_outcome(
    mountpoint: &Path,
    path: &Path,
    r: &SyncReport,
    t: &TreeStatus,
) -> Result<String, String> {
    if r.is_clean() && t.on_network() {
        let least = t.worst.as_ref().map_or(String::new(), |(p, d)| {
            format!(
                "; least protected: {} ({d})",
                in_mount(mountpoint, p).display()
            )
        });
        return Ok(format!(
            "{} ({} bytes) under {} uploaded: every file there is on the network{least}",
            plural(r.files, "dirty file"),
            r.bytes,
            path.display()
        ));
    }
    let mut msg = String::new();
    if !r.is_clean() {
        let _ = write!(
            msg,
            "{} of {} under {} could not be uploaded (they stay dirty and are retried in the \
             background):",
            r.failed.len(),
            plural(r.files, "dirty file"),
            path.display()
        );
        for f in r.failed.iter().take(SYNC_FAILURES_SHOWN) {
            let _ = write!(msg, "\n  {}: {}", path.join(&f.path).display(), f.error);
        }
        if r.failed.len() > SYNC_FAILURES_SHOWN {
            let _ = write!(
                msg,
                "\n  … and {} more",
                r.failed.len() - SYNC_FAILURES_SHOWN
            );
        }
    }
    let unprotected = t.not_on_network;
    if unprotected > 0 {
        if !msg.is_empty() {
            msg.push('\n');
        }
        let _ = write!(
            msg,
            "{} under {} {} not on the network:",
            plural(unprotected, "file"),
            path.display(),
            if unprotected == 1 { "is" } else { "are" }
        );
        for (p, why) in t.unprotected.iter().take(SYNC_FAILURES_SHOWN) {
            let _ = write!(msg, "\n  {}: {why}", in_mount(mountpoint, p).display());
        }
        if unprotected as usize > SYNC_FAILURES_SHOWN {
            let _ = write!(
                msg,
                "\n  … and {} more (`defs status` lists them)",
                unprotected as usize - SYNC_FAILURES_SHOWN
            );
        }
    } else if r.is_clean() {
        // Written meanwhile, or dirty files that appeared after the sync started.
        let _ = write!(
            msg,
            "{} under {} changed while syncing and {} not on the network yet; run `defs sync` again",
            plural(t.dirty + t.uploading + t.failed, "file"),
            path.display(),
            if t.dirty + t.uploading + t.failed == 1 {
                "is"
            } else {
                "are"
            }
        );
    }
    Err(msg)
}

/// The mount section of `defs status`.
pub fn mount_text(mountpoint: &Path, s: &UploadStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mount:          {}", mountpoint.display());
    let _ = writeln!(
        out,
        "dirty:          {} ({} bytes) not yet on the network",
        plural(s.dirty_files(), "file"),
        s.dirty_bytes()
    );
    let _ = writeln!(
        out,
        "  waiting:      {} ({} bytes)",
        plural(s.waiting_files, "file"),
        s.waiting_bytes
    );
    let _ = writeln!(
        out,
        "  uploading:    {} ({} bytes)",
        plural(s.uploading_files, "file"),
        s.uploading_bytes
    );
    let _ = writeln!(
        out,
        "  failed:       {} ({} bytes)",
        plural(s.failed_files, "file"),
        s.failed_bytes
    );
    for f in &s.failed {
        let path = f.path.as_ref().map_or_else(
            || format!("(unlinked inode {})", f.ino),
            |p| mountpoint.join(p).display().to_string(),
        );
        let _ = writeln!(
            out,
            "    {path}: {} failed uploads, last: {}",
            f.failures,
            f.last_error.as_deref().unwrap_or("?")
        );
    }
    if s.failed_files > s.failed.len() as u64 {
        let _ = writeln!(
            out,
            "    … and {} more",
            s.failed_files - s.failed.len() as u64
        );
    }
    let _ = writeln!(
        out,
        "cache:          {} bytes clean + {} bytes dirty, budget {} bytes",
        s.cache.clean_bytes, s.cache.dirty_bytes, s.cache.budget_bytes
    );
    if !s.has_network && s.dirty_files() > 0 {
        let _ = writeln!(
            out,
            "warning:        this mount has no network: dirty files stay in the local cache"
        );
    }
    out
}

/// `path` (as [`TreeStatus`] gives it, absolute within the mount) under the mountpoint.
fn in_mount(mountpoint: &Path, path: &Path) -> PathBuf {
    mountpoint.join(path.strip_prefix("/").unwrap_or(path))
}

/// The whole tree's part of `defs status`.
pub fn tree_text(mountpoint: &Path, t: &TreeStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tree:           {} ({} bytes) in {}",
        plural(t.files, "file"),
        t.bytes,
        plural(t.directories, "directory").replace("directorys", "directories")
    );
    let _ = writeln!(
        out,
        "  states:       {} clean, {} dirty, {} uploading, {} failed",
        t.clean, t.dirty, t.uploading, t.failed
    );
    match &t.worst {
        Some((p, d)) => {
            let _ = writeln!(
                out,
                "  least protected: {} ({d})",
                in_mount(mountpoint, p).display()
            );
        }
        None => {
            let _ = writeln!(out, "  least protected: (nothing stored)");
        }
    }
    for (p, why) in &t.unprotected {
        let _ = writeln!(
            out,
            "  not on the network: {}: {why}",
            in_mount(mountpoint, p).display()
        );
    }
    for (p, reason) in &t.errors {
        let _ = writeln!(
            out,
            "  error:        {}: {reason}",
            in_mount(mountpoint, p).display()
        );
    }
    if !t.damaged.is_empty() {
        let _ = writeln!(out, "damaged:        {}:", damaged_summary(t.damaged.len()));
        for (p, d) in &t.damaged {
            let p = p.as_deref().map(|p| in_mount(mountpoint, p));
            let _ = writeln!(out, "  {}", damaged_line(p.as_deref(), d));
        }
    }
    out
}

/// The whole tree's part of `defs status --json`.
pub fn tree_json(mountpoint: &Path, t: &TreeStatus) -> String {
    let path = |p: &Path| json_str(&in_mount(mountpoint, p).display().to_string());
    let worst = t.worst.as_ref().map_or("null".into(), |(p, d)| {
        format!("{{\"path\":{},{}}}", path(p), durability_json(d))
    });
    let unprotected: Vec<String> = t
        .unprotected
        .iter()
        .map(|(p, why)| format!("{{\"path\":{},\"why\":{}}}", path(p), json_str(why)))
        .collect();
    let errors: Vec<String> = t
        .errors
        .iter()
        .map(|(p, r)| format!("{{\"path\":{},\"error\":{}}}", path(p), json_str(r)))
        .collect();
    let damaged: Vec<String> = t
        .damaged
        .iter()
        .map(|(p, d)| {
            let at =
                d.at.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |x| x.as_secs());
            format!(
                "{{\"path\":{},\"file\":{},\"segment\":{},\"index\":{},\"shard\":{},\
                 \"holder\":{},\"reason\":{},\"at\":{at}}}",
                p.as_deref().map_or("null".into(), path),
                json_str(&d.file.to_string()),
                d.segment,
                d.index,
                json_str(&d.shard.to_string()),
                d.holder.map_or("null".into(), |h| json_str(&h.to_string())),
                json_str(&d.reason),
            )
        })
        .collect();
    format!(
        "{{\"files\":{},\"directories\":{},\"bytes\":{},\"clean\":{},\"dirty\":{},\
         \"uploading\":{},\"failed\":{},\"on_network\":{},\"not_on_network\":{},\
         \"least_protected\":{worst},\"unprotected\":[{}],\"errors\":[{}],\"damaged\":[{}]}}",
        t.files,
        t.directories,
        t.bytes,
        t.clean,
        t.dirty,
        t.uploading,
        t.failed,
        t.on_network(),
        t.not_on_network,
        unprotected.join(","),
        errors.join(","),
        damaged.join(","),
    )
}

/// A [`Durability`]'s fields as JSON object members (without braces).
fn durability_json(d: &Durability) -> String {
    format!(
        "\"on_network\":{},\"shards\":{},\"remote\":{},\"local_only\":{},\"promised\":{},\
         \"survives\":{},\"durability\":{}",
        d.on_network(),
        d.shards,
        d.remote,
        d.local_only,
        d.promised,
        d.survives.map_or("null".into(), |s| s.to_string()),
        json_str(&d.to_string())
    )
}

/// The mount section of `defs status --json`.
pub fn mount_json(mountpoint: &Path, s: &UploadStatus) -> String {
    let failed: Vec<String> = s
        .failed
        .iter()
        .map(|f| {
            format!(
                "{{\"ino\":{},\"path\":{},\"bytes\":{},\"failures\":{},\"last_error\":{}}}",
                f.ino.0,
                f.path.as_ref().map_or("null".into(), |p| json_str(
                    &mountpoint.join(p).display().to_string()
                )),
                f.bytes,
                f.failures,
                f.last_error.as_deref().map_or("null".into(), json_str),
            )
        })
        .collect();
    format!(
        "{{\"mountpoint\":{},\"network\":{},\"dirty_files\":{},\"dirty_bytes\":{},\
         \"waiting_files\":{},\"waiting_bytes\":{},\"uploading_files\":{},\"uploading_bytes\":{},\
         \"failed_files\":{},\"failed_bytes\":{},\"failed\":[{}],\
         \"cache\":{{\"clean_bytes\":{},\"dirty_bytes\":{},\"budget_bytes\":{}}}}}",
        json_str(&mountpoint.display().to_string()),
        s.has_network,
        s.dirty_files(),
        s.dirty_bytes(),
        s.waiting_files,
        s.waiting_bytes,
        s.uploading_files,
        s.uploading_bytes,
        s.failed_files,
        s.failed_bytes,
        failed.join(","),
        s.cache.clean_bytes,
        s.cache.dirty_bytes,
        s.cache.budget_bytes,
    )
}

#[cfg(test)]
mod tests {
    use defs_core::cache_store::Usage;
    use defs_core::types::InodeNo;
    use defs_fuse::fs::{DirtyFile, SyncFailure};

    use super::*;

    fn status() -> UploadStatus {
        UploadStatus {
            waiting_files: 2,
            waiting_bytes: 10,
            uploading_files: 1,
            uploading_bytes: 5,
            failed_files: 1,
            failed_bytes: 7,
            failed: vec![DirtyFile {
                ino: InodeNo(9),
                path: Some("d/x \"q\"".into()),
                bytes: 7,
                failures: 3,
                last_error: Some("no peer".into()),
            }],
            has_network: true,
            cache: Usage {
                clean_bytes: 1,
                dirty_bytes: 22,
                budget_bytes: 100,
                inodes: 4,
            },
        }
    }

    #[test]
    fn status_sections_show_counts_paths_and_errors() {
        let text = mount_text(Path::new("/mnt/defs"), &status());
        assert!(
            text.contains("4 files (22 bytes) not yet on the network"),
            "{text}"
        );
        assert!(text.contains("/mnt/defs/d/x \"q\": 3 failed uploads, last: no peer"));
        let json = mount_json(Path::new("/mnt/defs"), &status());
        assert!(
            json.contains("\"dirty_files\":4,\"dirty_bytes\":22"),
            "{json}"
        );
        assert!(
            json.contains("\"path\":\"/mnt/defs/d/x \\\"q\\\"\""),
            "{json}"
        );
        assert!(json.starts_with('{') && json.ends_with('}'));
    }

    #[test]
    fn the_tree_section_shows_states_the_least_protected_file_and_damaged_shards() {
        use defs_core::object::{DamagedShard, Durability};
        use defs_core::types::{FileId, ShardId};
        let tree = TreeStatus {
            files: 3,
            directories: 2,
            bytes: 100,
            clean: 2,
            dirty: 1,
            worst: Some((
                "/d/a".into(),
                Durability {
                    shards: 5,
                    remote: 5,
                    local_only: 0,
                    promised: 2,
                    survives: Some(2),
                },
            )),
            errors: vec![("/d/b".into(), "upload failed".into())],
            damaged: vec![(
                Some("/d/a".into()),
                DamagedShard {
                    file: FileId([1; 32]),
                    segment: 3,
                    index: 0,
                    shard: ShardId([2; 32]),
                    holder: None,
                    reason: "CRC mismatch".into(),
                    at: std::time::UNIX_EPOCH,
                },
            )],
            ..TreeStatus::default()
        };
        let text = tree_text(Path::new("/mnt"), &tree);
        assert!(
            text.contains("3 files (100 bytes) in 2 directories"),
            "{text}"
        );
        assert!(
            text.contains("2 clean, 1 dirty, 0 uploading, 0 failed"),
            "{text}"
        );
        assert!(
            text.contains(
                "least protected: /mnt/d/a (on the network: 5/5 shards on other live nodes, \
                 survives 2 lost nodes)"
            ),
            "{text}"
        );
        assert!(
            text.contains("error:        /mnt/d/b: upload failed"),
            "{text}"
        );
        assert!(
            text.contains(
                "1 damaged shard found on read (rebuilt from parity):\n  /mnt/d/a: shard"
            ),
            "{text}"
        );
        let json = tree_json(Path::new("/mnt"), &tree);
        assert!(
            json.contains("\"least_protected\":{\"path\":\"/mnt/d/a\""),
            "{json}"
        );
        assert!(
            json.contains("\"damaged\":[{\"path\":\"/mnt/d/a\",\"file\":"),
            "{json}"
        );
        assert!(
            json.contains("\"holder\":null,\"reason\":\"CRC mismatch\",\"at\":0}"),
            "{json}"
        );
    }

    #[test]
    fn sync_failures_name_each_file_and_its_error() {
        let on_network = TreeStatus {
            files: 3,
            clean: 3,
            ..TreeStatus::default()
        };
        let ok = SyncReport {
            files: 3,
            bytes: 30,
            failed: vec![],
        };
        let m = Path::new("/m");
        let text = sync_outcome(m, m, &ok, &on_network).unwrap();
        assert!(text.contains("3 dirty files"), "{text}");
        assert!(
            text.contains("every file there is on the network"),
            "{text}"
        );
        let bad = SyncReport {
            files: 3,
            bytes: 30,
            failed: vec![SyncFailure {
                ino: InodeNo(5),
                path: "a/b".into(),
                error: "upload failed: no storage peers".into(),
            }],
        };
        let msg = sync_outcome(m, m, &bad, &on_network).unwrap_err();
        assert!(msg.contains("1 of 3 dirty files under /m"), "{msg}");
        assert!(
            msg.contains("/m/a/b: upload failed: no storage peers"),
            "{msg}"
        );
    }

    #[test]
    fn sync_fails_naming_each_file_that_is_not_on_the_network() {
        // Issue 25: uploaded to this machine's own store only is not "on the network".
        let local = TreeStatus {
            files: 1,
            clean: 1,
            not_on_network: 1,
            unprotected: vec![(
                "/a".into(),
                "not on the network: 0/1 shards on other live nodes, 1 only on this machine".into(),
            )],
            ..TreeStatus::default()
        };
        let ok = SyncReport {
            files: 1,
            bytes: 1,
            failed: vec![],
        };
        let m = Path::new("/m");
        let msg = sync_outcome(m, m, &ok, &local).unwrap_err();
        assert!(
            msg.contains("1 file under /m is not on the network:"),
            "{msg}"
        );
        assert!(
            msg.contains("/m/a: not on the network: 0/1 shards"),
            "{msg}"
        );
        assert_eq!(
            not_on_network(&local).as_deref(),
            Some("1 stored file not on the network (see the tree section, `defs sync`)")
        );
        assert!(tree_json(m, &local).contains("\"on_network\":false"));
    }
}
