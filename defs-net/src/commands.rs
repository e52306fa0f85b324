//! What the CLI's network commands do, shared by the control socket (a running node serves them)
//! and ephemeral runs (the CLI starts a node for one command): put, get, status, peers, id.
//! Each returns the text the CLI prints on stdout.

use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use defs_core::pipeline::{FileKey, LayoutConfig, Mode};
use defs_core::repair::{RepairStatus, Repairer};
use defs_core::types::FileId;

use crate::client::Client;
use crate::control::{ControlRequest, Handler, ProgressSink};
use crate::error::{Error, Result};
use crate::files::Existing;
use crate::node::NodeSpace;
use crate::transfer::Progress;

/// The answer to `defs sync` from a node that serves no mount.
pub const NO_MOUNT: &str = "this data dir's node serves no mount: `defs sync` waits for the \
    uploads of a running defs-mount (start one with `defs-mount MOUNTPOINT`)";

/// The answer to `defs repair` without file ids from a node that serves no mount.
pub const NO_MOUNT_REPAIR: &str = "this data dir's node serves no mount, so it knows no files \
    of its own: name them (`defs repair FILE_ID...`), or run it while defs-mount runs";

/// How often progress is sampled for the CLI.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// The layout for a put: `mode` and an optional `K+M`.
///
/// # Errors
/// [`Error::Malformed`] for an unknown mode.
pub fn layout_for(base: &LayoutConfig, mode: &str, rs: Option<(u8, u8)>) -> Result<LayoutConfig> {
    let mut cfg = base.clone();
    cfg.mode = mode.parse::<Mode>().map_err(|e| Error::Malformed {
        what: "mode",
        reason: format!("{e}"),
    })?;
    if let Some((k, m)) = rs {
        cfg.k = k;
        cfg.m = m;
        if cfg.mode == Mode::Auto {
            cfg.mode = Mode::RsSize;
        }
    }
    Ok(cfg)
}

/// Parses `K+M` (e.g. `3+2`).
pub fn parse_rs(text: &str) -> Option<(u8, u8)> {
    let (k, m) = text.split_once('+')?;
    Some((k.trim().parse().ok()?, m.trim().parse().ok()?))
}

/// Runs `work` while reporting `progress` to `sink` every [`PROGRESS_INTERVAL`].
async fn with_progress<T>(
    progress: &Arc<Progress>,
    sink: &(dyn Fn(u64, u64) + Send + Sync),
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        tokio::select! {
            r = &mut work => {
                let (d, t) = progress.get();
                sink(d, t);
                return r;
            }
            _ = tick.tick() => {
                let (d, t) = progress.get();
                sink(d, t);
            }
        }
    }
}

/// `defs put`: stores the file and returns the text to print (the file id on the last line).
///
/// # Errors
/// Everything [`Client::put_file`] returns.
pub async fn put(
    client: &Client,
    path: &Path,
    layout: &LayoutConfig,
    sink: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<String> {
    let progress = Progress::new();
    let report = with_progress(
        &progress,
        sink,
        client.put_file(path, layout, Some(progress.clone())),
    )
    .await?;
    let mut out = String::new();
    let d = &report.durability;
    let _ = writeln!(
        out,
        "{}{d} ({} storage node(s) were usable)",
        if d.on_network() { "" } else { "warning: " },
        report.peers
    );
    let _ = write!(out, "{}", report.file);
    Ok(out)
}

/// `defs get`: fetches the file into `out` (replacing a file there only with `force`);
/// returns a one-line summary.
///
/// # Errors
/// [`Error::Malformed`] for a bad id; everything [`Client::get_file_into`] returns.
pub async fn get(
    client: &Client,
    file: &str,
    out: &Path,
    force: bool,
    sink: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<String> {
    let id = FileId::from_hex(file.trim()).ok_or_else(|| Error::Malformed {
        what: "file id",
        reason: format!("{file:?} is not 64 hex digits"),
    })?;
    let progress = Progress::new();
    let size = with_progress(
        &progress,
        sink,
        client.get_file_into(
            id,
            out,
            if force {
                Existing::Replace
            } else {
                Existing::Keep
            },
            Some(progress.clone()),
        ),
    )
    .await?;
    Ok(format!("{size} bytes written to {}", out.display()))
}

/// `s` as a JSON string literal (quoted and escaped).
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// How a peer is connected: `direct`, `relayed` (only through a relay), `direct+relayed`
/// (both, e.g. while DCUtR's direct connection replaces the relayed one) or `none`.
fn link(p: &crate::node::PeerSnapshot) -> &'static str {
    match (p.direct > 0, p.relayed > 0) {
        (true, false) => "direct",
        (false, true) => "relayed",
        (true, true) => "direct+relayed",
        (false, false) => "none",
    }
}

/// `defs status`'s reachability object.
fn reach_json(r: &crate::node::ReachReport) -> String {
    format!(
        "{{\"reachability\":{},\"public_addr\":{},\"relays\":[{}],\"relaying_for\":{},\"relay_circuits\":{},\"direct_connections\":{},\"relayed_connections\":{},\"hole_punches\":{},\"hole_punch_failures\":{}}}",
        json_str(&r.reachability.to_string()),
        r.public_addr
            .as_ref()
            .map_or("null".into(), |a| json_str(&a.to_string())),
        r.relays
            .iter()
            .map(|p| json_str(&p.to_string()))
            .collect::<Vec<_>>()
            .join(","),
        r.relaying_for,
        r.circuits,
        r.direct_connections,
        r.relayed_connections,
        r.hole_punches,
        r.hole_punch_failures,
    )
}

/// Relays' peer ids, comma separated.
fn relay_list(relays: &[libp2p::PeerId]) -> String {
    relays
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `defs status`'s reachability lines.
fn reach_text(out: &mut String, r: &crate::node::ReachReport) {
    let how = match (r.reachability, &r.public_addr) {
        (crate::node::Reachability::Public, Some(a)) => format!("public (dialled back at {a})"),
        (crate::node::Reachability::Private, _) if r.relays.is_empty() => {
            "private (behind a NAT or firewall; no relay reservation yet)".to_string()
        }
        (crate::node::Reachability::Private, _) => format!(
            "private (behind a NAT or firewall), reachable through {} relay(s): {}",
            r.relays.len(),
            relay_list(&r.relays)
        ),
        (crate::node::Reachability::Unknown, _) if !r.relays.is_empty() => format!(
            "unknown (not yet found public or private); a reservation on {} relay(s), so that \
             lookup answers reach it: {}",
            r.relays.len(),
            relay_list(&r.relays)
        ),
        (reach, _) => reach.to_string(),
    };
    let _ = writeln!(out, "reachability:   {how}");
    let _ = writeln!(
        out,
        "connections:    {} direct, {} relayed; hole punches {} ok, {} failed",
        r.direct_connections, r.relayed_connections, r.hole_punches, r.hole_punch_failures
    );
    if r.relaying_for > 0 || r.circuits > 0 {
        let _ = writeln!(
            out,
            "relay service:  {} reservation(s), {} relayed connection(s) open",
            r.relaying_for, r.circuits
        );
    }
}

/// `defs peers`: known peers as a table or JSON.
///
/// # Errors
/// [`Error::Closed`].
pub async fn peers(client: &Client, json: bool) -> Result<String> {
    let mut list = client.node().peers().await?;
    list.sort_by(|a, b| b.connected.cmp(&a.connected).then(a.peer.cmp(&b.peer)));
    let mut out = String::new();
    if json {
        out.push('[');
        for (i, p) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"peer\":{},\"node_id\":{},\"connected\":{},\"storage\":{},\"rtt_ms\":{},\"bandwidth\":{},\"score\":{:.4},\"capacity\":{},\"used\":{},\"zone\":{},\"puzzle_ok\":{},\"refused\":{},\"link\":{},\"addrs\":[{}]}}",
                json_str(&p.peer.to_string()),
                p.node_id.map_or("null".into(), |n| json_str(&n.to_hex())),
                p.connected,
                p.storage,
                p.rtt.map_or("null".into(), |r| format!(
                    "{:.3}",
                    r.as_secs_f64() * 1000.0
                )),
                p.bandwidth.map_or("null".into(), |b| format!("{b:.0}")),
                p.score,
                p.info
                    .as_ref()
                    .map_or("null".into(), |i| i.capacity.to_string()),
                p.info
                    .as_ref()
                    .map_or("null".into(), |i| i.used.to_string()),
                p.info.as_ref().map_or("null".into(), |i| json_str(&i.zone)),
                p.puzzle_ok,
                p.refused.as_deref().map_or("null".into(), json_str),
                json_str(link(p)),
                p.addrs
                    .iter()
                    .map(|a| json_str(&a.to_string()))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        out.push(']');
    } else {
        for p in &list {
            let _ = writeln!(
                out,
                "{}  {}  {}  rtt={}  score={:.3}  {}",
                p.peer,
                match link(p) {
                    "none" => "known".to_string(),
                    l => format!("connected ({l})"),
                },
                match (&p.refused, p.storage) {
                    (Some(why), _) => format!("refused: {why}"),
                    (None, true) => "storage".to_string(),
                    (None, false) => "client".to_string(),
                },
                p.rtt
                    .map_or("-".into(), |r| format!("{:.1}ms", r.as_secs_f64() * 1000.0)),
                p.score,
                p.info
                    .as_ref()
                    .map_or(String::new(), |i| format!("used={}/{}", i.used, i.capacity)),
            );
        }
        if list.is_empty() {
            out.push_str("no peers\n");
        }
        // Bootstrap addresses that gave no usable peer, and why.
        for r in client.node().bootstrap().await? {
            if let Some(problem) = r.problem() {
                let _ = writeln!(out, "bootstrap {}: {problem}", r.addr);
            }
        }
    }
    Ok(out.trim_end().to_string())
}

/// What `defs status` says about protection, in one plain line (`None` when shards can go to
/// other machines).
fn protection(storage_peers: usize, local_store: bool) -> Option<&'static str> {
    match (storage_peers, local_store) {
        (0, true) => Some(
            "no storage peers: shards stay on this node, so nothing is protected against losing this machine",
        ),
        (0, false) => Some(
            "no storage peers and no local store: nothing can be stored until a storage peer connects",
        ),
        _ => None,
    }
}

/// `defs status`: this node, its peers, the network's capacity and whether anything is protected
/// against losing this machine.
///
/// # Errors
/// [`Error::Closed`].
pub async fn status(client: &Client, json: bool) -> Result<String> {
    status_with(client, json, None).await
}

/// [`status`] for a node that also knows files (a mount): `files_not_on_network` says why some
/// of them are not on the network (by [`defs_core::durability`]'s one definition), which makes
/// `protected` false and becomes the warning when the node has none of its own.
///
/// # Errors
/// [`Error::Closed`].
pub async fn status_with(
    client: &Client,
    json: bool,
    files_not_on_network: Option<String>,
) -> Result<String> {
    // The owner's use and quota on each node as of now (each peer at most USAGE_TIMEOUT).
    client.refresh_usage().await?;
    let s = client.node().status().await?;
    let usable = s.storage_peers + usize::from(s.info.storage);
    let node_warning = protection(s.storage_peers, s.info.storage);
    let protected = node_warning.is_none() && files_not_on_network.is_none();
    let warning: Option<String> = node_warning.map(String::from).or(files_not_on_network);
    let warning = warning.as_deref();
    let mut out = String::new();
    if json {
        let _ = write!(
            out,
            "{{\"peer\":{},\"node_id\":{},\"listen\":[{}],\"connected_peers\":{},\"storage_peers\":{},\"usable_storage_nodes\":{},\"storage\":{},\"capacity\":{},\"used\":{},\"shards\":{},\"network_capacity\":{},\"network_free\":{},\"protected\":{},\"warning\":{},\"pairing\":{},\"audits\":{},\"reach\":{},\"owner\":{}}}",
            json_str(&s.peer.to_string()),
            json_str(&s.node_id.to_hex()),
            s.listen
                .iter()
                .map(|a| json_str(&a.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            s.connected,
            s.storage_peers,
            usable,
            s.info.storage,
            s.info.capacity,
            s.info.used,
            s.info.shards,
            s.network_capacity,
            s.network_free,
            protected,
            warning.map_or("null".into(), json_str),
            s.pairing.as_ref().map_or("null".into(), pairing_json),
            audits_json(&s.audits),
            reach_json(&s.reach),
            owner_json(&s.owner_space),
        );
    } else {
        let _ = writeln!(out, "peer id:        {}", s.peer);
        let _ = writeln!(out, "node id:        {}", s.node_id);
        for a in &s.listen {
            let _ = writeln!(out, "listening:      {a}");
        }
        let _ = writeln!(
            out,
            "peers:          {} connected, {} storage",
            s.connected, s.storage_peers
        );
        reach_text(&mut out, &s.reach);
        if s.info.storage {
            let _ = writeln!(
                out,
                "local store:    {} shards, {} of {} bytes used",
                s.info.shards, s.info.used, s.info.capacity
            );
        }
        let _ = writeln!(
            out,
            "network:        {usable} storage node(s) usable{}, {} of {} bytes free",
            if s.info.storage {
                " (this one included)"
            } else {
                ""
            },
            s.network_free,
            s.network_capacity
        );
        owner_text(&mut out, &s.owner_space);
        if let Some(p) = &s.pairing {
            pairing_text(&mut out, p);
        }
        audits_text(&mut out, &s.audits);
        if let Some(w) = warning {
            let _ = writeln!(out, "warning:        {w}");
        }
    }
    Ok(out.trim_end().to_string())
}

/// Totals of this owner's space over the nodes [`crate::node::owner_room`] counts: bytes it
/// stores there, and the bytes it may still store (`None` before any has reported).
fn owner_totals(space: &[NodeSpace]) -> (u64, Option<u64>) {
    let remote = space.iter().any(|n| !n.local);
    let stored = space
        .iter()
        .filter(|n| n.local != remote)
        .filter_map(|n| n.usage.map(|u| u.used))
        .fold(0, u64::saturating_add);
    (stored, crate::node::owner_room(space))
}

/// One node's quota in words: "quota N bytes" or "no quota".
fn quota_words(quota: u64) -> String {
    if quota == 0 {
        "no per-owner quota".into()
    } else {
        format!("quota {quota} bytes")
    }
}

/// The lines of `defs status` on this identity's space: what it stores on each storage node
/// and its quota there, and the totals.
fn owner_text(out: &mut String, space: &[NodeSpace]) {
    let remote = space.iter().any(|n| !n.local);
    let (stored, room) = owner_totals(space);
    let counted = space.iter().filter(|n| n.local != remote).count();
    let room = room.map_or("unknown (no node has reported yet)".to_string(), |r| {
        format!("{r} more bytes fit")
    });
    let _ = writeln!(
        out,
        "your space:     {stored} bytes stored on {counted} node(s); {room} (shard bytes, before redundancy)"
    );
    for n in space {
        let who = match (n.local, n.node_id) {
            (true, _) => "this node".to_string(),
            (false, Some(id)) => format!("node {}", short_hex(&id.to_hex())),
            (false, None) => format!("peer {}", n.peer),
        };
        let line = match n.usage {
            Some(u) => format!(
                "{} bytes stored, {}, {} more fit (node: {} of {} bytes free)",
                u.used,
                quota_words(u.quota),
                u.room(),
                u.capacity.saturating_sub(u.node_used),
                u.capacity
            ),
            None => match n.space {
                Some((capacity, used)) => format!(
                    "has not told this identity's use (an older node); {} of {capacity} bytes free",
                    capacity.saturating_sub(used)
                ),
                None => "has not reported its space yet".into(),
            },
        };
        let note = if n.local && remote {
            " [not counted: a last resort, not the network]"
        } else {
            ""
        };
        let _ = writeln!(out, "  {who}: {line}{note}");
    }
}

/// The first 16 hex digits of an id, for a line that names many nodes.
fn short_hex(hex: &str) -> &str {
    &hex[..hex.len().min(16)]
}

/// `defs status --json`'s `owner` object: totals and one entry per node.
fn owner_json(space: &[NodeSpace]) -> String {
    let (stored, room) = owner_totals(space);
    let remote = space.iter().any(|n| !n.local);
    let nodes: Vec<String> = space
        .iter()
        .map(|n| {
            let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
            format!(
                "{{\"peer\":{},\"node_id\":{},\"local\":{},\"counted\":{},\"stored\":{},\"quota\":{},\"room\":{},\"capacity\":{},\"used\":{}}}",
                json_str(&n.peer.to_string()),
                n.node_id.map_or("null".into(), |id| json_str(&id.to_hex())),
                n.local,
                n.local != remote,
                opt(n.usage.map(|u| u.used)),
                opt(n.usage.map(|u| u.quota)),
                if n.usage.is_some() || n.space.is_some() {
                    n.room().to_string()
                } else {
                    "null".into()
                },
                opt(n.space.map(|(c, _)| c)),
                opt(n.space.map(|(_, u)| u)),
            )
        })
        .collect();
    format!(
        "{{\"stored\":{stored},\"room\":{},\"nodes\":[{}]}}",
        room.map_or("null".to_string(), |r| r.to_string()),
        nodes.join(",")
    )
}

/// Seconds from `ms` (since the epoch) to now, for "… s ago".
fn ago(ms: u64) -> u64 {
    crate::node::now_ms().saturating_sub(ms) / 1000
}

/// The pairing lines of `defs status`.
fn pairing_text(out: &mut String, p: &crate::pairing::Report) {
    match p.partner {
        None => {
            let _ = writeln!(
                out,
                "pairing:        no partner yet: this node's shards have no mirror"
            );
        }
        Some(partner) => {
            let beat = match p.last_beat_ms {
                0 => "no heartbeat answered yet".to_string(),
                ms => format!("last heartbeat {} s ago", ago(ms)),
            };
            let _ = writeln!(
                out,
                "pairing:        partner {partner} (since {} s), {beat}",
                ago(p.partner_since_ms)
            );
            let mirror = if p.complete {
                format!(
                    "complete: {} shards ({} bytes) mirrored on the partner",
                    p.primary_shards, p.primary_bytes
                )
            } else if p.checking {
                format!(
                    "being brought up to date: {} shards known missing on the partner so far",
                    p.lag_shards
                )
            } else {
                format!("lag: {} shards not on the partner yet", p.lag_shards)
            };
            let _ = writeln!(out, "mirror:         {mirror}");
            if p.lies > 0 {
                let _ = writeln!(
                    out,
                    "warning:        the partner failed {} proof(s) of its mirror",
                    p.lies
                );
            }
        }
    }
    for (ward, bytes) in &p.wards {
        let _ = writeln!(out, "mirror kept:    for {ward}, {bytes} bytes");
    }
}

/// The pairing object of `defs status --json`.
fn pairing_json(p: &crate::pairing::Report) -> String {
    let wards: Vec<String> = p
        .wards
        .iter()
        .map(|(w, b)| format!("{{\"peer\":{},\"bytes\":{b}}}", json_str(&w.to_string())))
        .collect();
    format!(
        "{{\"partner\":{},\"partner_since_ms\":{},\"last_heartbeat_ms\":{},\"mirror_complete\":{},\"mirror_checking\":{},\"mirror_lag_shards\":{},\"primary_shards\":{},\"primary_bytes\":{},\"partner_mirrored_bytes\":{},\"sent_shards\":{},\"sent_bytes\":{},\"control_bytes\":{},\"partner_failed_proofs\":{},\"wards\":[{}]}}",
        p.partner
            .map_or("null".into(), |x| json_str(&x.to_string())),
        p.partner_since_ms,
        p.last_beat_ms,
        p.complete,
        p.checking,
        p.lag_shards,
        p.primary_shards,
        p.primary_bytes,
        p.partner_mirrored_bytes,
        p.sent_shards,
        p.sent_bytes,
        p.control_bytes,
        p.lies,
        wards.join(",")
    )
}

fn verdict_text(v: &crate::audit::Verdict) -> &str {
    match v {
        crate::audit::Verdict::Passed => "passed",
        crate::audit::Verdict::Failed(why) | crate::audit::Verdict::Unreachable(why) => why,
    }
}

/// The audit lines of `defs status` (none when no audit ran).
fn audits_text(out: &mut String, a: &crate::audit::Summary) {
    if a.last_ms == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "audits:         {} proved, {} failed, {} holder(s) unreachable; last {} s ago",
        a.passed,
        a.failed,
        a.unreachable,
        ago(a.last_ms)
    );
    for f in &a.recent_failures {
        let _ = writeln!(
            out,
            "audit failed:   shard {} on node {} ({} s ago): {}",
            f.id,
            f.holder,
            ago(f.at_ms),
            verdict_text(&f.verdict)
        );
    }
}

/// The audits object of `defs status --json`.
fn audits_json(a: &crate::audit::Summary) -> String {
    let failures: Vec<String> = a
        .recent_failures
        .iter()
        .map(|f| {
            format!(
                "{{\"shard\":{},\"node\":{},\"at_ms\":{},\"reason\":{}}}",
                json_str(&f.id.to_hex()),
                json_str(&f.holder.to_hex()),
                f.at_ms,
                json_str(verdict_text(&f.verdict))
            )
        })
        .collect();
    format!(
        "{{\"passed\":{},\"failed\":{},\"unreachable\":{},\"last_ms\":{},\"recent_failures\":[{}]}}",
        a.passed,
        a.failed,
        a.unreachable,
        a.last_ms,
        failures.join(",")
    )
}

/// `defs id`: peer id and node id.
pub fn id(client: &Client) -> String {
    format!(
        "peer id: {}\nnode id: {}",
        client.node().peer_id(),
        client.node().node_id()
    )
}

/// The file ids of a `defs repair` request, parsed.
///
/// # Errors
/// [`Error::Malformed`] naming the first id that is not 64 hex digits.
pub fn repair_ids(files: &[String]) -> Result<Vec<(FileId, Option<FileKey>)>> {
    files
        .iter()
        .map(|f| {
            FileId::from_hex(f.trim())
                .map(|id| (id, None))
                .ok_or_else(|| Error::Malformed {
                    what: "file id",
                    reason: format!("{f:?} is not 64 hex digits"),
                })
        })
        .collect()
}

/// `defs repair`: checks `files` (file keys where known, else opened with the owner's key) and
/// repairs what lost holders, reporting files done of total to `sink`. Returns the summary;
/// fails (naming what is wrong) when a segment is lost or a repair failed.
///
/// # Errors
/// [`Error::Control`] with the summary when anything is left unrepaired.
pub async fn repair(
    repairer: &Repairer,
    files: Vec<(FileId, Option<FileKey>)>,
    sink: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<String> {
    let n = files.len();
    let before = repairer.status();
    let after = repairer.run_pass(files, sink).await;
    let restored = after.shards_restored - before.shards_restored;
    let bytes = after.bytes_restored - before.bytes_restored;
    let mut out = format!(
        "{n} file(s) checked: {} segment(s) healthy, {} degraded, {} lost; {restored} shard(s)          ({bytes} bytes) re-created on other nodes",
        after.healthy, after.degraded, after.lost
    );
    if after.lost == 0 && after.backlog == 0 && after.errors.is_empty() {
        return Ok(out);
    }
    for e in &after.errors {
        let _ = write!(out, "\n{e}");
    }
    Err(Error::Control(out))
}

/// Repair as `defs status` prints it: one line, then the newest errors.
pub fn repair_text(s: &RepairStatus) -> String {
    let mut out = format!(
        "repair:         {} segment(s) healthy, {} degraded, {} repairing, {} lost; backlog {}; \
         {} shard(s) ({} bytes) re-created; bandwidth {}",
        s.healthy,
        s.degraded,
        s.repairing,
        s.lost,
        s.backlog,
        s.shards_restored,
        s.bytes_restored,
        if s.bandwidth == 0 {
            "unpaced".to_string()
        } else {
            format!("{} bytes/s", s.bandwidth)
        }
    );
    let _ = write!(
        out,
        "{}",
        match (s.running, s.last_pass) {
            (true, _) => format!(
                " (checking: {} of {} files)",
                s.files_checked, s.files_total
            ),
            (false, None) => " (no check yet)".to_string(),
            (false, Some(t)) => format!(
                " (last check {} s ago)",
                t.elapsed().map_or(0, |d| d.as_secs())
            ),
        }
    );
    for e in s.errors.iter().rev().take(5) {
        let _ = write!(out, "\nrepair error:   {e}");
    }
    out
}

/// Repair as `defs status --json` carries it (the `repair` object).
pub fn repair_json(s: &RepairStatus) -> String {
    format!(
        "{{\"running\":{},\"files_checked\":{},\"files_total\":{},\"healthy\":{},\"degraded\":{},\"repairing\":{},\"lost\":{},\"backlog\":{},\"shards_restored\":{},\"bytes_restored\":{},\"bandwidth\":{},\"last_check_secs_ago\":{},\"errors\":[{}]}}",
        s.running,
        s.files_checked,
        s.files_total,
        s.healthy,
        s.degraded,
        s.repairing,
        s.lost,
        s.backlog,
        s.shards_restored,
        s.bytes_restored,
        s.bandwidth,
        s.last_pass.map_or("null".into(), |t| t
            .elapsed()
            .map_or(0, |d| d.as_secs())
            .to_string()),
        s.errors
            .iter()
            .map(|e| json_str(e))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Serves control-socket requests with a client and the node's default layout.
#[derive(Debug, Clone)]
pub struct Commands {
    /// The client of the running node.
    pub client: Client,
    /// The layout settings from the node's config.
    pub layout: LayoutConfig,
    /// The owner's repair, over the data dir's manifest store.
    pub repairer: Arc<Repairer>,
}

impl Commands {
    async fn run(&self, req: ControlRequest, progress: ProgressSink) -> Result<String> {
        let sink = move |d, t| progress.report(d, t);
        match req {
            ControlRequest::Id => Ok(id(&self.client)),
            ControlRequest::Status { json } => status(&self.client, json).await,
            ControlRequest::Peers { json } => peers(&self.client, json).await,
            ControlRequest::Put { path, mode, rs } => {
                let layout = layout_for(&self.layout, &mode, rs)?;
                put(&self.client, Path::new(&path), &layout, &sink).await
            }
            ControlRequest::Get {
                file_id,
                out,
                force,
            } => get(&self.client, &file_id, Path::new(&out), force, &sink).await,
            ControlRequest::Sync { .. } | ControlRequest::Audit | ControlRequest::Gc => {
                Err(Error::Control(NO_MOUNT.into()))
            }
            ControlRequest::Repair { files } if files.is_empty() => {
                Err(Error::Control(NO_MOUNT_REPAIR.into()))
            }
            ControlRequest::Repair { files } => {
                repair(&self.repairer, repair_ids(&files)?, &sink).await
            }
        }
    }
}

impl Handler for Commands {
    fn handle(
        &self,
        req: ControlRequest,
        progress: ProgressSink,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send + '_>> {
        Box::pin(async move { self.run(req, progress).await.map_err(|e| format!("{e:#}")) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rs_and_json_helpers() {
        assert_eq!(parse_rs("3+2"), Some((3, 2)));
        assert_eq!(parse_rs("3"), None);
        assert_eq!(json_str("a\"b\n"), "\"a\\\"b\\u000a\"");
    }

    #[test]
    fn status_says_plainly_when_nothing_is_protected() {
        let alone = protection(0, true).unwrap();
        assert!(alone.contains("nothing is protected against losing this machine"));
        assert!(
            protection(0, false)
                .unwrap()
                .contains("nothing can be stored")
        );
        assert_eq!(protection(2, true), None);
    }
}
