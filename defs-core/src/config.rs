//! The settings of a DeFS data dir (`DIR/config.toml`): every setting, its default and its
//! meaning. This module owns the struct and the defaults; reading and writing the TOML file
//! happens in mount-helper (library crates do not read config files).
//!
//! Every section and field is optional in the file: a missing field takes its default, an
//! unknown field is an error (a typo must not silently fall back to a default).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::{DEFAULT_PUZZLE_DIFFICULTY, MAX_PUZZLE_DIFFICULTY};
use crate::pipeline::LayoutConfig;

/// One GiB, for the defaults below.
const GIB: u64 = 1 << 30;

/// Everything configurable in a data dir.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The local cache of file contents (`DIR/cache`).
    pub cache: CacheSettings,
    /// This machine as a storage node and peer.
    pub node: NodeSettings,
    /// Identity creation.
    pub identity: IdentitySettings,
    /// How files are cut into shards (`pipeline::LayoutConfig`, validated by the pipeline).
    pub layout: LayoutConfig,
    /// The mounted filesystem (`defs-mount`).
    pub mount: MountSettings,
    /// `[repair]`: the owner's repair of lost shards.
    pub repair: RepairSettings,
    /// Publishing the namespace and recovering it (`docs/namespace-publishing.md`).
    pub namespace: NamespaceSettings,
    /// Pairing of storage nodes (`defs node`, `defs-mount`).
    pub pairing: PairingSettings,
    /// Audits of the holders of the mount's files (`defs-mount`).
    pub audit: AuditSettings,
    /// `[gc]`: deleting objects no kept version names (`defs-mount`, `defs gc`).
    pub gc: GcSettings,
}

impl Config {
    /// Checks the values for consistency (ranges, non-empty lists where required).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.identity.puzzle_difficulty > MAX_PUZZLE_DIFFICULTY {
            return bad(
                "identity.puzzle_difficulty",
                format!(
                    "{} is above the maximum {MAX_PUZZLE_DIFFICULTY}",
                    self.identity.puzzle_difficulty
                ),
            );
        }
        let sec = &self.node.tcp_security;
        if sec.is_empty() || (1..sec.len()).any(|i| sec[..i].contains(&sec[i])) {
            return bad(
                "node.tcp_security",
                "must list \"tls\" and/or \"noise\", each at most once".into(),
            );
        }
        let n = &self.namespace;
        if n.publish_debounce_secs == 0 {
            return bad(
                "namespace.publish_debounce_secs",
                "must be at least 1".into(),
            );
        }
        if n.max_staleness_secs < n.publish_debounce_secs {
            return bad(
                "namespace.max_staleness_secs",
                format!(
                    "{} is below namespace.publish_debounce_secs ({})",
                    n.max_staleness_secs, n.publish_debounce_secs
                ),
            );
        }
        if n.lease_secs < MIN_LEASE_SECS {
            return bad(
                "namespace.lease_secs",
                format!("{} is below the minimum {MIN_LEASE_SECS}", n.lease_secs),
            );
        }
        let max = crate::publish::versions::MAX_VERSIONS;
        if n.keep_versions == 0 || n.keep_versions as usize > max {
            return bad(
                "namespace.keep_versions",
                format!("{} is not within 1..={max}", n.keep_versions),
            );
        }
        if n.version_every_secs == 0 {
            return bad("namespace.version_every_secs", "must be at least 1".into());
        }
        if n.follow_secs == 0 {
            return bad("namespace.follow_secs", "must be at least 1".into());
        }
        let p = &self.pairing;
        if p.heartbeat_secs == 0 {
            return bad("pairing.heartbeat_secs", "must be at least 1".into());
        }
        if p.partner_timeout_secs <= p.heartbeat_secs {
            return bad(
                "pairing.partner_timeout_secs",
                format!(
                    "{} must be longer than the heartbeat ({} s)",
                    p.partner_timeout_secs, p.heartbeat_secs
                ),
            );
        }
        if p.mirror_bandwidth_bytes == 0 {
            return bad(
                "pairing.mirror_bandwidth_bytes",
                "must be above 0 (set enabled = false to stop mirroring)".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.gc.repack_below) {
            return bad(
                "gc.repack_below",
                format!(
                    "{} is not a share within 0 (no compaction) and 1",
                    self.gc.repack_below
                ),
            );
        }
        if !(self.audit.per_gib_hour.is_finite() && self.audit.per_gib_hour >= 0.0) {
            return bad(
                "audit.per_gib_hour",
                format!("{} is not a number of audits >= 0", self.audit.per_gib_hour),
            );
        }
        if self.audit.interval_secs == 0 {
            return bad("audit.interval_secs", "must be at least 1".into());
        }
        self.layout.validate().map_err(|e| Error::InvalidConfig {
            field: "layout",
            reason: e.to_string(),
        })?;
        Ok(())
    }
}

/// The local cache of file contents: see `cache_store`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Bytes of file content the cache keeps before evicting clean data (least recently used
    /// first). Dirty data is never evicted, so the cache may exceed this while uploads are
    /// pending. Default 10 GiB.
    pub budget_bytes: u64,
    /// Bytes of free space always left on the cache's filesystem: a write that would eat into it
    /// first evicts clean data, then fails with ENOSPC, long before the disk is really full.
    /// Default 1 GiB.
    pub reserve_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            budget_bytes: 10 * GIB,
            reserve_bytes: GIB,
        }
    }
}

impl From<&CacheSettings> for crate::cache_store::CacheConfig {
    fn from(c: &CacheSettings) -> Self {
        crate::cache_store::CacheConfig {
            budget_bytes: c.budget_bytes,
            reserve_bytes: c.reserve_bytes,
        }
    }
}

/// This machine as a storage node and peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Bytes of other people's shards this node stores (`DIR/shards`), in total. Default 10 GiB.
    pub capacity_bytes: u64,
    /// Bytes any one owner may store on this node. Default 0 = no per-owner limit beyond the
    /// capacity.
    pub owner_quota_bytes: u64,
    /// Multiaddrs to listen on. Default: every IPv4 interface, a random port, TCP and QUIC.
    pub listen: Vec<String>,
    /// Multiaddrs (with `/p2p/<peer id>`) of peers to join through. Bootstrap peers given on the
    /// command line are remembered here. Default: none.
    pub bootstrap: Vec<String>,
    /// Discover peers on the local network with mDNS. Default on.
    pub mdns: bool,
    /// Multiaddrs a one-shot command (`defs put/get/status/peers` with no node running for the
    /// data dir) listens on while it runs. It dials out to its peers, so it needs no public
    /// listener. Default (also when empty): 127.0.0.1, a random TCP port (reachable from this
    /// machine only).
    pub client_listen: Vec<String>,
    /// Count addresses in private ranges (10/8, 172.16/12, 192.168/16, …) as reachable for
    /// AutoNAT: peers then dial such an address back to confirm this node reachable, and this
    /// node does the same for them. Off by default, because on the internet a private address
    /// is reachable only inside its own LAN; on for a LAN of nodes without global addresses (and
    /// the test bed `ci/netbed`), where nodes must still learn which of them are behind a NAT.
    pub private_ips_reachable: bool,
    /// The security protocols of TCP connections, in the order this node proposes them when it
    /// dials; it accepts any of them when dialled. Default `["noise", "tls"]`: noise costs no
    /// more CPU per byte than libp2p's TLS here (which negotiates ChaCha20-Poly1305 too;
    /// `docs/performance.md`), TLS for peers that prefer it. QUIC connections always use TLS 1.3.
    pub tcp_security: Vec<TcpSecurity>,
}

/// A security protocol of TCP connections (`[node] tcp_security`). Both authenticate the peer's
/// libp2p key and encrypt every byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpSecurity {
    /// TLS 1.3 (libp2p's `/tls/1.0.0`) through rustls and aws-lc; libp2p-tls 0.7 offers
    /// ChaCha20-Poly1305 first, then AES-GCM.
    Tls,
    /// Noise XX (libp2p's `/noise`), ChaCha20-Poly1305.
    Noise,
}

impl TcpSecurity {
    /// The name config.toml uses.
    pub fn name(self) -> &'static str {
        match self {
            TcpSecurity::Tls => "tls",
            TcpSecurity::Noise => "noise",
        }
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            capacity_bytes: 10 * GIB,
            owner_quota_bytes: 0,
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".to_owned(),
                "/ip4/0.0.0.0/udp/0/quic-v1".to_owned(),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            client_listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
            private_ips_reachable: false,
            tcp_security: vec![TcpSecurity::Noise, TcpSecurity::Tls],
        }
    }
}

impl From<&NodeSettings> for crate::shard_store::Quotas {
    fn from(n: &NodeSettings) -> Self {
        crate::shard_store::Quotas {
            capacity: n.capacity_bytes,
            per_owner: n.owner_quota_bytes,
        }
    }
}

/// The mounted filesystem (`defs-mount`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MountSettings {
    /// Seconds the flusher may spend at unmount finishing the uploads already running; what is
    /// not done by then stays dirty in the local journal and resumes at the next mount.
    /// Default 30: most single-file uploads finish well within it, and an unmount (or a system
    /// shutdown, which waits on it) must not hang for long.
    pub shutdown_grace_secs: u64,
}

impl Default for MountSettings {
    fn default() -> Self {
        MountSettings {
            shutdown_grace_secs: 30,
        }
    }
}

/// `[repair]`: how the owner's node repairs its files' lost shards (see [`crate::repair`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepairSettings {
    /// Seconds between the mount's background checks of every stored file; 0 turns the
    /// background repair off (`defs repair` still runs).
    pub interval_secs: u64,
    /// Bytes per second repair may move (shards fetched plus shards stored); 0 = unpaced.
    pub bandwidth_bytes: u64,
    /// Shards of a segment without a live holder that start its repair (clamped so that
    /// repair starts while more than `k` shards are left).
    pub missing_threshold: u8,
}

impl Default for RepairSettings {
    fn default() -> Self {
        RepairSettings {
            interval_secs: 600,
            bandwidth_bytes: 20 << 20,
            missing_threshold: 1,
        }
    }
}

impl From<&RepairSettings> for crate::repair::RepairConfig {
    fn from(r: &RepairSettings) -> Self {
        crate::repair::RepairConfig {
            missing_threshold: usize::from(r.missing_threshold),
            bandwidth: r.bandwidth_bytes,
        }
    }
}

/// The shortest write lease a config may ask for, in seconds: 3, so the publisher's renewal
/// (a root record every third of the lease, no object) is at most one a second, the trigger's
/// tick. Short leases are for tests of `--force`; real ones are minutes (300 by default).
pub const MIN_LEASE_SECS: u32 = 3;

/// Publishing the namespace (`defs-mount`) and recovering it from the key alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceSettings {
    /// Seconds after the last change before the namespace is published. Default 3: a burst of
    /// changes (a `cp -r`) becomes one publish, and a single change is on the network soon.
    pub publish_debounce_secs: u64,
    /// The longest a change waits for a publish under a steady stream of changes, in seconds.
    /// Default 60.
    pub max_staleness_secs: u64,
    /// How long a published record holds the write lease, in seconds (renewed every third of
    /// it while mounted). Default 300.
    pub lease_secs: u32,
    /// How long a mount without a metadata DB waits for a storage peer before it gives up
    /// recovering the namespace, in seconds. Default 30.
    pub recover_wait_secs: u64,
    /// Kept versions of the tree (`/.snapshots`) at most, the newest; 1..=255. Default 48.
    pub keep_versions: u32,
    /// No kept version older than this many days (0: no age limit). Default 30.
    pub keep_days: u32,
    /// The first state published in each period of this many seconds is kept (besides every
    /// `defs sync` and the release at unmount). Default 3600.
    pub version_every_secs: u64,
    /// How often a read-only mount (`-o ro`) looks for a newer namespace published by the
    /// writable mount elsewhere, in seconds. Default 30.
    pub follow_secs: u64,
}

impl NamespaceSettings {
    /// The retention of kept versions these settings ask for.
    pub fn retention(&self) -> crate::publish::versions::Retention {
        crate::publish::versions::Retention {
            keep_versions: self.keep_versions,
            keep_days: self.keep_days,
            every_secs: self.version_every_secs,
        }
    }
}

impl Default for NamespaceSettings {
    fn default() -> Self {
        NamespaceSettings {
            publish_debounce_secs: 3,
            max_staleness_secs: 60,
            lease_secs: 300,
            recover_wait_secs: 30,
            keep_versions: 48,
            keep_days: 30,
            version_every_secs: 3600,
            follow_secs: 30,
        }
    }
}

/// Pairing of storage nodes: each keeps a mirror of its store on a partner (defs-net
/// `pairing`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairingSettings {
    /// Pair with a partner and keep each other's mirror. Default on.
    pub enabled: bool,
    /// Seconds between heartbeats to the partner. Default 30.
    pub heartbeat_secs: u64,
    /// Seconds of silence after which a partner is replaced (and a ward's copies adopted).
    /// Default 300.
    pub partner_timeout_secs: u64,
    /// Bytes per second of mirror copies sent at most. Default 4 MiB/s.
    pub mirror_bandwidth_bytes: u64,
    /// Seconds between full comparisons of the store with the partner's mirror. Default 3600.
    pub rescan_secs: u64,
    /// Nodes whose mirror this node keeps at most. Default 4.
    pub max_wards: u32,
}

impl Default for PairingSettings {
    fn default() -> Self {
        PairingSettings {
            enabled: true,
            heartbeat_secs: 30,
            partner_timeout_secs: 300,
            mirror_bandwidth_bytes: 4 << 20,
            rescan_secs: 3600,
            max_wards: 4,
        }
    }
}

/// Audits: proofs that the holders of the mount's files still keep their shards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Audits per hour per GiB of the mount's stored shards. Default 4 (about 6 KiB of
    /// traffic per GiB per hour). 0 turns background audits off.
    pub per_gib_hour: f64,
    /// Seconds between background audit rounds. Default 600.
    pub interval_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            per_gib_hour: 4.0,
            interval_secs: 600,
        }
    }
}

/// `[gc]`: the garbage collector of a writable mount (see [`crate::gc`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcSettings {
    /// Seconds between background runs; 0 turns the background collector off (`defs gc` still
    /// runs). Default 600.
    pub interval_secs: u64,
    /// Objects deleted at most per run (the rest waits for the next). Default 1000.
    pub max_objects: u64,
    /// A pack whose live share (bytes of files still named, by the tree or a kept version,
    /// over the pack's bytes) is below this is repacked by the collector: its live files are
    /// copied into a new pack and the old one deleted. 0 turns compaction off. Default 0.5.
    pub repack_below: f64,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            interval_secs: 600,
            max_objects: 1000,
            repack_below: crate::gc::DEFAULT_REPACK_BELOW,
        }
    }
}

impl From<&GcSettings> for crate::gc::GcConfig {
    fn from(g: &GcSettings) -> Self {
        crate::gc::GcConfig {
            enabled: g.interval_secs > 0,
            interval: std::time::Duration::from_secs(g.interval_secs),
            max_objects: usize::try_from(g.max_objects).unwrap_or(usize::MAX),
            repack_below: g.repack_below,
        }
    }
}

/// Identity creation (`defs init`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySettings {
    /// Leading zero bits BLAKE3(NodeId) must have: the work puzzle a new identity solves, and the
    /// minimum this node demands of its peers. Default
    /// [`DEFAULT_PUZZLE_DIFFICULTY`].
    pub puzzle_difficulty: u8,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            puzzle_difficulty: DEFAULT_PUZZLE_DIFFICULTY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn settings_convert_to_store_limits() {
        let c = Config::default();
        let cache = crate::cache_store::CacheConfig::from(&c.cache);
        assert_eq!(cache.budget_bytes, 10 * GIB);
        assert_eq!(cache.reserve_bytes, GIB);
        let q = crate::shard_store::Quotas::from(&c.node);
        assert_eq!((q.capacity, q.per_owner), (10 * GIB, 0));
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut c = Config::default();
        c.layout.k = 0;
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidConfig {
                field: "layout",
                ..
            })
        ));
        let mut c = Config::default();
        c.identity.puzzle_difficulty = 200;
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidConfig {
                field: "identity.puzzle_difficulty",
                ..
            })
        ));
        let mut c = Config::default();
        c.layout.parity_ratio = f64::NAN;
        assert!(c.validate().is_err());
    }

    #[test]
    fn retention_settings_are_checked_and_convert() {
        let r = Config::default().namespace.retention();
        assert_eq!((r.keep_versions, r.keep_days, r.every_secs), (48, 30, 3600));
        for (keep, every, field) in [
            (0, 3600, "namespace.keep_versions"),
            (256, 3600, "namespace.keep_versions"),
            (48, 0, "namespace.version_every_secs"),
        ] {
            let mut c = Config::default();
            c.namespace.keep_versions = keep;
            c.namespace.version_every_secs = every;
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig { field: f, .. }) if f == field),
                "{keep} {every}"
            );
        }
        let mut c = Config::default();
        c.namespace.keep_versions = 255;
        c.namespace.keep_days = 0;
        c.validate().unwrap();
    }
}
