//! `DIR/config.toml`: reading it (missing file = defaults; unknown keys and bad values are
//! errors naming the setting) and writing the commented default that `defs init` creates.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use defs_core::Config;

/// Reads the config file at `path`; a missing file gives the defaults.
///
/// # Errors
/// When the file cannot be read, is not valid TOML, has an unknown key or a bad value.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    parse(&text).with_context(|| format!("bad config file {}", path.display()))
}

/// Reads a config file's text: TOML with only known keys, every value valid.
///
/// # Errors
/// When the text is not valid TOML, has an unknown key or a bad value.
pub fn parse(text: &str) -> anyhow::Result<Config> {
    let config: Config = toml::from_str(text)?;
    config.validate()?;
    Ok(config)
}

/// The default config as a commented TOML document: every setting, its default and its meaning.
/// Parsing it gives exactly [`Config::default`] (a test checks).
pub fn default_toml() -> String {
    toml_of(&Config::default())
}

/// [`default_toml`] with the puzzle difficulty set to `difficulty`: what `defs init --difficulty`
/// writes, so that the node asks its peers the same work it did itself.
pub fn initial_toml(difficulty: u8) -> String {
    let mut c = Config::default();
    c.identity.puzzle_difficulty = difficulty;
    toml_of(&c)
}

/// The commented config document for the settings of `c` that it documents.
fn toml_of(c: &Config) -> String {
    let list = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", items.join(", "))
    };
    format!(
        r#"# DeFS settings for this data dir. Every setting is optional: delete a line to get its
# default back. Sizes are in bytes. Unknown keys are an error.

[cache]
# Bytes of file content cached locally (DIR/cache) before clean data is evicted, least recently
# used first. Dirty data (not yet uploaded) is never evicted.
budget_bytes = {budget}
# Free space always kept on the cache's filesystem: writes fail with ENOSPC before eating into it.
reserve_bytes = {reserve}

[node]
# Bytes of other people's shards this node stores (DIR/shards), in total.
capacity_bytes = {capacity}
# Bytes any one owner may store here; 0 = only the total capacity applies.
owner_quota_bytes = {owner_quota}
# Multiaddrs to listen on.
listen = {listen}
# Peers to join through (multiaddrs with /p2p/<peer id>). `--bootstrap` adds to this list.
bootstrap = {bootstrap}
# Discover peers on the local network with mDNS.
mdns = {mdns}
# Multiaddrs a one-shot command (defs put/get/status/peers with no node running for this data
# dir) listens on while it runs; `--listen` overrides. It dials out to its peers, so the
# default listens on this machine only (an empty list means the same).
client_listen = {client_listen}
# Count private addresses (10/8, 172.16/12, 192.168/16, ...) as reachable when peers check this
# node's reachability (AutoNAT) and it checks theirs: on for a LAN without global addresses.
private_ips_reachable = {private_ips}
# Security of TCP connections, in the order this node proposes them when it dials ("noise":
# Noise XX; "tls": TLS 1.3; both ChaCha20-Poly1305, noise measured no dearer). Any listed one is
# accepted when dialled. QUIC connections always use TLS 1.3.
tcp_security = {tcp_security}

[identity]
# Work puzzle: leading zero bits of BLAKE3(NodeId) a new identity must have, and the minimum
# this node asks of its peers. Each bit doubles the work.
puzzle_difficulty = {difficulty}

[layout]
# auto | file | slice | rs-size | rs-ratio
mode = "{mode}"
# Reed-Solomon data shards per segment.
k = {k}
# Reed-Solomon parity shards per segment (rs-size).
m = {m}
# Parity shards as a fraction of k (rs-ratio).
parity_ratio = {ratio:?}
# Slice size for slice mode.
slice_size = {slice}
# Shard size for Reed-Solomon modes.
shard_size = {shard}
# Largest file that auto mode keeps whole.
small_file_max = {small}
# Copies of each replicated object (file and slice modes).
copies = {copies}
# Auto mode: pack small files that upload together into shared Reed-Solomon objects
# (false: each small file is stored whole, `copies` times).
pack_small_files = {pack}

[mount]
# Seconds defs-mount waits at unmount for uploads already running; files not uploaded by then
# stay dirty in the local journal and upload at the next mount.
shutdown_grace_secs = {grace}

[repair]
# Seconds between the mount's background checks of every stored file (holders alive, lost
# shards re-created on other nodes); 0 turns them off (`defs repair` still runs).
interval_secs = {repair_interval}
# Bytes per second repair may move (shards fetched plus shards stored); 0 = unpaced.
bandwidth_bytes = {repair_bandwidth}
# Shards of a segment without a live holder that start its repair (at most parity - 1 apply,
# so a segment is repaired before it is down to the k shards that rebuild it).
missing_threshold = {repair_threshold}

[namespace]
# The directory tree is published to the network (encrypted, signed) this many seconds after the
# last change, and at the latest max_staleness_secs after a change under a steady stream.
publish_debounce_secs = {debounce}
max_staleness_secs = {staleness}
# Seconds a published record holds the write lease (renewed every third of it while mounted):
# another machine's writable mount of this identity is refused meanwhile, and --force there waits
# until the record has not changed for this long plus 30 s.
lease_secs = {lease}
# Seconds between a read-only mount's (-o ro) looks for a newer namespace published elsewhere.
follow_secs = {follow}
# Seconds a mount without a metadata DB waits for a storage peer to recover the tree from.
recover_wait_secs = {recover_wait}
# Past versions of the tree, read-only under MOUNT/.snapshots/<UTC time>/: every `defs sync`,
# the unmount and the first publish of each version_every_secs are kept; at most keep_versions
# (1-255, the newest) and none older than keep_days (0: no age limit).
keep_versions = {keep_versions}
keep_days = {keep_days}
version_every_secs = {version_every}

[pairing]
# Pair this storage node with a partner that keeps a mirror of its shards (and keep theirs).
enabled = {pair_enabled}
# Seconds between heartbeats to the partner.
heartbeat_secs = {heartbeat}
# Seconds of silence after which the partner is replaced and mirrored to again.
partner_timeout_secs = {partner_timeout}
# Bytes per second of mirror copies sent at most.
mirror_bandwidth_bytes = {mirror_bw}
# Seconds between full comparisons of this store with the partner's mirror.
rescan_secs = {rescan}
# Nodes whose mirror this node keeps at most.
max_wards = {max_wards}

[audit]
# Proofs of storage asked of the holders of the mount's files, per hour per GiB stored;
# 0 turns background audits off.
per_gib_hour = {audit_rate:?}
# Seconds between background audit rounds.
interval_secs = {audit_interval}

[gc]
# Seconds between the writable mount's garbage collector runs (compaction, then deletes of what
# no kept version names); 0 turns background runs off (`defs gc` still runs one).
interval_secs = {gc_interval}
# Objects deleted at most per run (the rest waits for the next).
max_objects = {gc_max_objects}
# A pack of small files whose live share (bytes of files still named by the tree or a kept
# version, over the pack's bytes) is below this is repacked: its live files move into a new
# pack and the old one is deleted. 0 turns compaction off.
repack_below = {repack_below:?}
"#,
        budget = c.cache.budget_bytes,
        reserve = c.cache.reserve_bytes,
        capacity = c.node.capacity_bytes,
        owner_quota = c.node.owner_quota_bytes,
        listen = list(&c.node.listen),
        bootstrap = list(&c.node.bootstrap),
        mdns = c.node.mdns,
        client_listen = list(&c.node.client_listen),
        private_ips = c.node.private_ips_reachable,
        tcp_security = list(
            &c.node
                .tcp_security
                .iter()
                .map(|s| s.name().to_owned())
                .collect::<Vec<_>>()
        ),
        difficulty = c.identity.puzzle_difficulty,
        mode = c.layout.mode,
        k = c.layout.k,
        m = c.layout.m,
        ratio = c.layout.parity_ratio,
        slice = c.layout.slice_size,
        shard = c.layout.shard_size,
        small = c.layout.small_file_max,
        copies = c.layout.copies,
        pack = c.layout.pack_small_files,
        grace = c.mount.shutdown_grace_secs,
        repair_interval = c.repair.interval_secs,
        repair_bandwidth = c.repair.bandwidth_bytes,
        repair_threshold = c.repair.missing_threshold,
        debounce = c.namespace.publish_debounce_secs,
        staleness = c.namespace.max_staleness_secs,
        lease = c.namespace.lease_secs,
        follow = c.namespace.follow_secs,
        recover_wait = c.namespace.recover_wait_secs,
        keep_versions = c.namespace.keep_versions,
        keep_days = c.namespace.keep_days,
        version_every = c.namespace.version_every_secs,
        pair_enabled = c.pairing.enabled,
        heartbeat = c.pairing.heartbeat_secs,
        partner_timeout = c.pairing.partner_timeout_secs,
        mirror_bw = c.pairing.mirror_bandwidth_bytes,
        rescan = c.pairing.rescan_secs,
        max_wards = c.pairing.max_wards,
        audit_rate = c.audit.per_gib_hour,
        audit_interval = c.audit.interval_secs,
        gc_interval = c.gc.interval_secs,
        gc_max_objects = c.gc.max_objects,
        repack_below = c.gc.repack_below,
    )
}

/// Writes the commented default config to `path` unless a file is already there (kept as is).
/// Returns whether it wrote one.
///
/// # Errors
/// When the file cannot be written.
pub fn write_default(path: &Path) -> anyhow::Result<bool> {
    write_new(path, &default_toml())
}

/// Writes `text` to a new config file at `path` (mode 0600, synced) unless a file is already
/// there (kept as is). Returns whether it wrote one.
///
/// # Errors
/// When the file cannot be written.
pub fn write_new(path: &Path, text: &str) -> anyhow::Result<bool> {
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// Adds `addrs` to the `[node] bootstrap` list of the config file at `path` (created with the
/// defaults when missing), keeping every other line and comment as it is. Returns whether the
/// file changed.
///
/// # Errors
/// When the file cannot be read, parsed or written.
pub fn remember_bootstrap(path: &Path, addrs: &[String]) -> anyhow::Result<bool> {
    let mut config = load(path)?;
    let new: Vec<&String> = addrs
        .iter()
        .filter(|a| !config.node.bootstrap.contains(a))
        .collect();
    if new.is_empty() {
        return Ok(false);
    }
    write_default(path)?;
    config.node.bootstrap.extend(new.into_iter().cloned());
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let items: Vec<String> = config
        .node
        .bootstrap
        .iter()
        .map(|s| format!("{s:?}"))
        .collect();
    let line = format!("bootstrap = [{}]", items.join(", "));
    let mut in_node = false;
    let mut replaced = false;
    let mut out: Vec<String> = Vec::new();
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with('[') {
            if in_node && !replaced {
                out.push(line.clone());
                replaced = true;
            }
            in_node = t.starts_with("[node]");
        }
        if in_node && t.starts_with("bootstrap") && t[9..].trim_start().starts_with('=') {
            out.push(line.clone());
            replaced = true;
            continue;
        }
        out.push(l.to_string());
    }
    if !replaced {
        if !in_node {
            out.push("[node]".into());
        }
        out.push(line);
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, out.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    // The result must still parse to what we meant.
    let check = load(path)?;
    anyhow::ensure!(
        check.node.bootstrap == config.node.bootstrap,
        "could not record the bootstrap peers in {}",
        path.display()
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_peers_are_remembered_without_losing_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(remember_bootstrap(&path, &["/ip4/1.2.3.4/tcp/1".into()]).unwrap());
        assert!(!remember_bootstrap(&path, &["/ip4/1.2.3.4/tcp/1".into()]).unwrap());
        assert!(remember_bootstrap(&path, &["/ip4/1.2.3.4/tcp/2".into()]).unwrap());
        let c = load(&path).unwrap();
        assert_eq!(c.node.bootstrap.len(), 2);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("# Peers to join through")
        );
    }

    #[test]
    fn default_toml_parses_to_the_defaults() {
        let parsed: Config = toml::from_str(&default_toml()).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn initial_toml_carries_the_chosen_puzzle_difficulty() {
        let parsed: Config = toml::from_str(&initial_toml(3)).unwrap();
        let mut want = Config::default();
        want.identity.puzzle_difficulty = 3;
        assert_eq!(parsed, want);
    }

    #[test]
    fn missing_file_gives_defaults_and_bad_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(load(&path).unwrap(), Config::default());
        std::fs::write(&path, "[cache]\nbudget_bytez = 1\n").unwrap();
        let msg = format!("{:#}", load(&path).unwrap_err());
        assert!(msg.contains("budget_bytez"), "{msg}");
        std::fs::write(&path, "[layout]\nmode = \"raid\"\n").unwrap();
        let msg = format!("{:#}", load(&path).unwrap_err());
        assert!(msg.contains("raid") && msg.contains("rs-size"), "{msg}");
        std::fs::write(&path, "[node]\nmdns = false\n").unwrap();
        let c = load(&path).unwrap();
        assert!(!c.node.mdns);
        assert_eq!(c.cache, Config::default().cache);
    }

    #[test]
    fn write_default_keeps_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(write_default(&path).unwrap());
        std::fs::write(&path, "[node]\nmdns = false\n").unwrap();
        assert!(!write_default(&path).unwrap());
        assert!(!load(&path).unwrap().node.mdns);
    }
}
