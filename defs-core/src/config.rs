//! The settings of a DeFS data dir (`DIR/config.toml`): every setting, its default and its
//! meaning. This module owns the struct and the defaults; reading and writing the TOML file
//! happens in mount-helper (library crates do not read config files).
//!
//! Every section and field is optional in the file: a missing field takes its default, an
//! unknown field is an error (a typo must not silently fall back to a default).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::{DEFAULT_PUZZLE_DIFFICULTY, MAX_PUZZLE_DIFFICULTY};

/// One MiB, for the defaults below.
const MIB: u64 = 1 << 20;
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
    /// How files are cut into shards.
    pub layout: LayoutSettings,
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
        let l = &self.layout;
        if !LayoutSettings::MODES.contains(&l.mode.as_str()) {
            return bad(
                "layout.mode",
                format!(
                    "{:?} is not one of {}",
                    l.mode,
                    LayoutSettings::MODES.join(", ")
                ),
            );
        }
        if l.k == 0 {
            return bad("layout.k", "must be at least 1".into());
        }
        if usize::from(l.k) + usize::from(l.m) > 256 {
            return bad(
                "layout.m",
                format!("k + m = {} exceeds 256", u16::from(l.k) + u16::from(l.m)),
            );
        }
        if !(l.parity_ratio.is_finite() && l.parity_ratio >= 0.0 && l.parity_ratio <= 4.0) {
            return bad(
                "layout.parity_ratio",
                format!("{} is not in 0.0..=4.0", l.parity_ratio),
            );
        }
        if l.shard_size == 0 {
            return bad("layout.shard_size", "must be positive".into());
        }
        if l.slice_size == 0 {
            return bad("layout.slice_size", "must be positive".into());
        }
        if l.copies == 0 {
            return bad("layout.copies", "must be at least 1".into());
        }
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

/// How files are cut into shards. Mirrors the pipeline's `LayoutConfig` field by field, as plain
/// serde values; the pipeline converts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayoutSettings {
    /// `auto` (default: picks by file size and peer count), `file` (small file kept whole,
    /// replicated), `slice` (fixed slices, replicated), `rs-size` (fixed k+m), `rs-ratio`
    /// (parity as a ratio of k).
    pub mode: String,
    /// Data shards per segment for Reed-Solomon modes. Default 4.
    pub k: u8,
    /// Parity shards per segment for `rs-size`. Default 2.
    pub m: u8,
    /// Parity shards as a fraction of k for `rs-ratio` (m = ceil(k × ratio)). Default 0.5.
    pub parity_ratio: f64,
    /// Slice size in bytes for `slice` mode. Default 4 MiB.
    pub slice_size: u64,
    /// Shard size in bytes for Reed-Solomon modes (a segment is k shards). Default 1 MiB.
    pub shard_size: u32,
    /// Largest file, in bytes, that `auto` keeps whole (`file` mode). Default 256 KiB.
    pub small_file_max: u64,
    /// Copies kept of each replicated object (`file` and `slice` modes). Default 3.
    pub copies: u8,
}

impl LayoutSettings {
    /// The accepted values of [`mode`](Self::mode).
    pub const MODES: [&'static str; 5] = ["auto", "file", "slice", "rs-size", "rs-ratio"];
}

impl Default for LayoutSettings {
    fn default() -> Self {
        LayoutSettings {
            mode: "auto".to_owned(),
            k: 4,
            m: 2,
            parity_ratio: 0.5,
            slice_size: 4 * MIB,
            shard_size: 1 << 20,
            small_file_max: 256 * 1024,
            copies: 3,
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
        c.layout.mode = "raid5".into();
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidConfig {
                field: "layout.mode",
                ..
            })
        ));
        let mut c = Config::default();
        c.layout.k = 0;
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidConfig {
                field: "layout.k",
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
}
