//! How a file is cut into segments and shards: the storage [`Mode`]s, their settings
//! ([`LayoutConfig`]), the resulting [`Geometry`], and the `auto` policy in [`choose`].
//!
//! A file is a sequence of segments of [`Geometry::segment_size`] bytes (the last one shorter).
//! A Reed-Solomon segment becomes `k` data shards (the plain bytes, zero-padded to equal length)
//! and `m` parity shards; a replicated segment becomes `copies` shards, each the whole segment
//! encrypted under its own key. Every shard of a segment goes to a distinct peer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Most data shards, parity shards or copies per segment (as in the seed system).
pub const MAX_SHARDS: u8 = 100;
/// Largest shard (and slice, and whole-file shard): 64 MiB, the slice-size bound of the seed system.
pub const MAX_SHARD_SIZE: u32 = 64 << 20;
/// Smallest slice in `slice` mode: 1 MiB (smaller slices cost a network put each for little gain).
pub const MIN_SLICE_SIZE: u32 = 1 << 20;
/// Smallest configurable Reed-Solomon shard size: 4 KiB (one page; below it per-shard overhead
/// of 53 manifest bytes, a put and a 16-byte tag dominate).
pub const MIN_SHARD_SIZE: u32 = 4 << 10;
/// Largest segment (k × shard size): 256 MiB. The pipeline holds one segment per worker in
/// memory, so this bounds its memory.
pub const MAX_SEGMENT_SIZE: u64 = 256 << 20;

/// How a file's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Choose by file size and by the number of peers (see [`choose`]).
    #[default]
    Auto,
    /// The whole file as one shard, replicated `copies` times.
    File,
    /// Fixed-size slices, each replicated `copies` times.
    Slice,
    /// Reed-Solomon with fixed `k` data and `m` parity shards.
    RsSize,
    /// Reed-Solomon with `k` data shards and `m = ceil(k × parity_ratio)` parity shards.
    RsRatio,
}

impl Mode {
    /// The name used in config files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::File => "file",
            Mode::Slice => "slice",
            Mode::RsSize => "rs-size",
            Mode::RsRatio => "rs-ratio",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => Mode::Auto,
            "file" => Mode::File,
            "slice" => Mode::Slice,
            "rs-size" => Mode::RsSize,
            "rs-ratio" => Mode::RsRatio,
            _ => {
                return Err(Error::InvalidLayout {
                    reason: format!("unknown mode {s:?} (auto, file, slice, rs-size, rs-ratio)"),
                });
            }
        })
    }
}

/// The layout settings (the `[layout]` table of the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayoutConfig {
    /// The storage mode.
    pub mode: Mode,
    /// Data shards per segment (`rs-size`, `rs-ratio`; the target of `auto`), 1..=100.
    pub k: u8,
    /// Parity shards per segment (`rs-size`; the target of `auto`), 0..=100.
    pub m: u8,
    /// Parity shards as a fraction of data shards (`rs-ratio`), 0.0..=10.0.
    pub parity_ratio: f64,
    /// Slice size in `slice` mode, 1 MiB..=64 MiB.
    pub slice_size: u32,
    /// Reed-Solomon shard size, 4 KiB..=64 MiB; a segment is `k × shard_size`.
    pub shard_size: u32,
    /// Files up to this size are stored whole and replicated in `auto` mode.
    pub small_file_max: u64,
    /// Copies of each replicated shard (`file`, `slice`, small files in `auto`), 1..=100.
    pub copies: u8,
    /// In `auto` mode, pack files up to `small_file_max` that upload together into shared
    /// Reed-Solomon objects ([`pack_layout`]) instead of replicating each one whole.
    pub pack_small_files: bool,
}

/// Shard size of packed objects: 64 KiB less the 80 bytes a shard costs on a storage node beyond
/// its plain bytes (the 16-byte AEAD tag and the 64-byte record header of the node's pack
/// file), so a full shard fills sixteen 4 KiB blocks exactly; small enough that a read of one
/// packed small file fetches about 64 KiB per data shard its range touches, not a megabyte.
pub const PACK_SHARD_SIZE: u32 = (64 << 10) - 80;

/// The layout of a packed object: `auto`'s large-file policy (Reed-Solomon over the peers
/// there are; one replicated copy with a single peer) whatever the pack's size, with
/// [`PACK_SHARD_SIZE`] shards.
pub fn pack_layout(cfg: &LayoutConfig) -> LayoutConfig {
    LayoutConfig {
        mode: Mode::Auto,
        small_file_max: 0,
        shard_size: PACK_SHARD_SIZE,
        ..cfg.clone()
    }
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig {
            mode: Mode::Auto,
            k: 10,
            m: 4,
            parity_ratio: 0.4,
            slice_size: 4 << 20,
            shard_size: 1 << 20,
            small_file_max: 1 << 20,
            copies: 3,
            pack_small_files: true,
        }
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidLayout { reason }
}

impl LayoutConfig {
    /// Checks every setting against its bounds.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_SHARDS).contains(&self.k) {
            return Err(invalid(format!("k = {} (1..={MAX_SHARDS})", self.k)));
        }
        if self.m > MAX_SHARDS {
            return Err(invalid(format!("m = {} (0..={MAX_SHARDS})", self.m)));
        }
        if !(1..=MAX_SHARDS).contains(&self.copies) {
            return Err(invalid(format!(
                "copies = {} (1..={MAX_SHARDS})",
                self.copies
            )));
        }
        if !(0.0..=10.0).contains(&self.parity_ratio) {
            return Err(invalid(format!(
                "parity_ratio = {} (0.0..=10.0)",
                self.parity_ratio
            )));
        }
        if !(MIN_SLICE_SIZE..=MAX_SHARD_SIZE).contains(&self.slice_size) {
            return Err(invalid(format!(
                "slice_size = {} ({MIN_SLICE_SIZE}..={MAX_SHARD_SIZE})",
                self.slice_size
            )));
        }
        if !(MIN_SHARD_SIZE..=MAX_SHARD_SIZE).contains(&self.shard_size) {
            return Err(invalid(format!(
                "shard_size = {} ({MIN_SHARD_SIZE}..={MAX_SHARD_SIZE})",
                self.shard_size
            )));
        }
        Ok(())
    }
}

/// What protects a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Redundancy {
    /// `copies` shards, each the whole segment under its own key; any one suffices.
    Replicated {
        /// 1..=100.
        copies: u8,
    },
    /// `k` data shards and `m` parity shards; any `k` suffice.
    ReedSolomon {
        /// Data shards, 1..=100.
        k: u8,
        /// Parity shards, 0..=100.
        m: u8,
    },
}

/// The shape of a stored file version: its redundancy and shard size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// What protects each segment.
    pub redundancy: Redundancy,
    /// The shard size of a full segment (plain bytes, before the 16-byte tag).
    pub shard_size: u32,
}

impl Geometry {
    /// Replicated segments of `shard_size` bytes.
    pub fn replicated(copies: u8, shard_size: u32) -> Result<Geometry> {
        let g = Geometry {
            redundancy: Redundancy::Replicated { copies },
            shard_size,
        };
        g.validate().map(|()| g)
    }

    /// Reed-Solomon `k`+`m` with shards of `shard_size` bytes.
    pub fn reed_solomon(k: u8, m: u8, shard_size: u32) -> Result<Geometry> {
        let g = Geometry {
            redundancy: Redundancy::ReedSolomon { k, m },
            shard_size,
        };
        g.validate().map(|()| g)
    }

    /// Checks the counts and sizes against the pipeline's limits (also for decoded manifests).
    pub fn validate(&self) -> Result<()> {
        match self.redundancy {
            Redundancy::Replicated { copies } if !(1..=MAX_SHARDS).contains(&copies) => {
                return Err(invalid(format!("copies = {copies} (1..={MAX_SHARDS})")));
            }
            Redundancy::ReedSolomon { k, m }
                if !(1..=MAX_SHARDS).contains(&k) || m > MAX_SHARDS =>
            {
                return Err(invalid(format!(
                    "{k}+{m} shards (k 1..={MAX_SHARDS}, m 0..={MAX_SHARDS})"
                )));
            }
            _ => {}
        }
        if !(1..=MAX_SHARD_SIZE).contains(&self.shard_size) {
            return Err(invalid(format!(
                "shard size {} (1..={MAX_SHARD_SIZE})",
                self.shard_size
            )));
        }
        if self.segment_size() > MAX_SEGMENT_SIZE {
            return Err(invalid(format!(
                "segment size {} (k × shard size) over {MAX_SEGMENT_SIZE}",
                self.segment_size()
            )));
        }
        Ok(())
    }

    /// Shards needed to read a segment: k, or 1 for replicated segments.
    pub fn data_shards(&self) -> u8 {
        match self.redundancy {
            Redundancy::Replicated { .. } => 1,
            Redundancy::ReedSolomon { k, .. } => k,
        }
    }

    /// Shards stored per segment: k + m, or the number of copies.
    pub fn total_shards(&self) -> u16 {
        match self.redundancy {
            Redundancy::Replicated { copies } => u16::from(copies),
            Redundancy::ReedSolomon { k, m } => u16::from(k) + u16::from(m),
        }
    }

    /// Plain bytes per full segment.
    pub fn segment_size(&self) -> u64 {
        u64::from(self.data_shards()) * u64::from(self.shard_size)
    }

    /// The shard length of a segment holding `segment_len` plain bytes (the last segment of a
    /// file is shorter, and so are its shards). 0 for an empty segment.
    pub fn shard_len(&self, segment_len: u32) -> u32 {
        segment_len.div_ceil(u32::from(self.data_shards()))
    }

    /// Segments of a file of `size` bytes.
    pub fn segment_count(&self, size: u64) -> u64 {
        size.div_ceil(self.segment_size().max(1))
    }
}

/// The peers that can hold distinct shards: at least this node.
fn distinct(peers: usize) -> u8 {
    u8::try_from(peers.clamp(1, usize::from(MAX_SHARDS))).unwrap_or(MAX_SHARDS)
}

/// Reed-Solomon counts for `n` distinct holders aiming at `k`+`m`: unchanged if `k + m ≤ n`,
/// else `n` shards with parity in the same proportion rounded up (at least 1 when `n ≥ 2`).
fn clamp_rs(k: u8, m: u8, n: u8) -> (u8, u8) {
    let total = u16::from(k) + u16::from(m);
    if total <= u16::from(n) {
        return (k, m);
    }
    if n <= 1 {
        return (1, 0);
    }
    let want = (u16::from(n) * u16::from(m)).div_ceil(total.max(1));
    let m2 = u8::try_from(want.clamp(1, u16::from(n) - 1)).unwrap_or(1);
    let m2 = if m == 0 { 0 } else { m2 };
    (n - m2, m2)
}

/// The geometry of a file of `file_size` bytes with `peers` peers available (0 counts as 1: the
/// local node keeps everything).
///
/// Explicit modes store what was asked, except that replicated copies are clamped to the
/// number of distinct peers (two identical copies on one peer protect nothing). `auto`:
/// - `file_size ≤ small_file_max`: the file whole, `min(copies, peers)` copies;
/// - one peer: replicated slices, one copy;
/// - else Reed-Solomon `k`+`m` (default 10+4) with `shard_size` shards when `k + m ≤ peers`,
///   otherwise `peers` shards in total with the same parity proportion rounded up, at least one
///   parity shard (14 peers → 10+4, 5 → 3+2, 2 → 1+1).
pub fn choose(file_size: u64, peers: usize, cfg: &LayoutConfig) -> Result<Geometry> {
    cfg.validate()?;
    let n = distinct(peers);
    let whole_file = |copies: u8| -> Result<Geometry> {
        let size = u32::try_from(file_size.max(1))
            .ok()
            .filter(|s| *s <= MAX_SHARD_SIZE)
            .ok_or_else(|| {
                invalid(format!(
                    "file mode keeps a file whole in one shard of at most {MAX_SHARD_SIZE} bytes; \
                     this file has {file_size}: use slice or an rs mode"
                ))
            })?;
        Geometry::replicated(copies, size)
    };
    match cfg.mode {
        Mode::File => whole_file(cfg.copies.min(n)),
        Mode::Slice => Geometry::replicated(cfg.copies.min(n), cfg.slice_size),
        Mode::RsSize => Geometry::reed_solomon(cfg.k, cfg.m, cfg.shard_size),
        Mode::RsRatio => {
            let m = (f64::from(cfg.k) * cfg.parity_ratio).ceil();
            // In range: k ≤ 100 and ratio ≤ 10 give m ≤ 1000, clamped to MAX_SHARDS.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let m = m.clamp(0.0, f64::from(MAX_SHARDS)) as u8;
            Geometry::reed_solomon(cfg.k, m, cfg.shard_size)
        }
        Mode::Auto => {
            if file_size <= cfg.small_file_max {
                whole_file(cfg.copies.min(n))
            } else if n == 1 {
                Geometry::replicated(1, cfg.slice_size)
            } else {
                let (k, m) = clamp_rs(cfg.k, cfg.m.max(1), n);
                // Keep segments within the memory bound when k × shard size would exceed it.
                let max_shard =
                    u32::try_from(MAX_SEGMENT_SIZE / u64::from(k)).unwrap_or(MAX_SHARD_SIZE);
                Geometry::reed_solomon(k, m, cfg.shard_size.min(max_shard))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(g: Geometry) -> (u8, u8) {
        match g.redundancy {
            Redundancy::ReedSolomon { k, m } => (k, m),
            Redundancy::Replicated { .. } => panic!("expected RS, got {g:?}"),
        }
    }

    #[test]
    fn auto_policy_follows_peer_count() {
        let cfg = LayoutConfig::default();
        let big = 100 << 20;
        assert_eq!(rs(choose(big, 14, &cfg).unwrap()), (10, 4));
        assert_eq!(rs(choose(big, 50, &cfg).unwrap()), (10, 4));
        assert_eq!(rs(choose(big, 5, &cfg).unwrap()), (3, 2));
        assert_eq!(rs(choose(big, 2, &cfg).unwrap()), (1, 1));
        assert_eq!(rs(choose(big, 3, &cfg).unwrap()), (2, 1));
        for peers in 2..30 {
            let (k, m) = rs(choose(big, peers, &cfg).unwrap());
            assert!(usize::from(k) + usize::from(m) <= peers, "{peers}: {k}+{m}");
            assert!(m >= 1);
        }
        for peers in [0, 1] {
            let g = choose(big, peers, &cfg).unwrap();
            assert_eq!(g.redundancy, Redundancy::Replicated { copies: 1 });
        }
        assert_eq!(choose(big, 14, &cfg).unwrap().shard_size, 1 << 20);
    }

    #[test]
    fn auto_stores_small_files_whole_and_replicated() {
        let cfg = LayoutConfig::default();
        let g = choose(1000, 10, &cfg).unwrap();
        assert_eq!(g.redundancy, Redundancy::Replicated { copies: 3 });
        assert_eq!(g.shard_size, 1000);
        assert_eq!(g.segment_count(1000), 1);
        let g = choose(1 << 20, 2, &cfg).unwrap();
        assert_eq!(g.redundancy, Redundancy::Replicated { copies: 2 });
        let g = choose(0, 0, &cfg).unwrap();
        assert_eq!(g.redundancy, Redundancy::Replicated { copies: 1 });
        assert_eq!(g.segment_count(0), 0);
    }

    #[test]
    fn explicit_modes() {
        let mut cfg = LayoutConfig {
            mode: Mode::RsRatio,
            k: 8,
            parity_ratio: 0.25,
            ..LayoutConfig::default()
        };
        assert_eq!(rs(choose(5 << 20, 3, &cfg).unwrap()), (8, 2));
        cfg.mode = Mode::RsSize;
        cfg.m = 5;
        assert_eq!(rs(choose(5 << 20, 3, &cfg).unwrap()), (8, 5));
        cfg.mode = Mode::Slice;
        let g = choose(5 << 20, 10, &cfg).unwrap();
        assert_eq!(g.redundancy, Redundancy::Replicated { copies: 3 });
        assert_eq!(g.shard_size, 4 << 20);
        cfg.mode = Mode::File;
        assert!(matches!(
            choose(u64::from(MAX_SHARD_SIZE) + 1, 3, &cfg),
            Err(Error::InvalidLayout { .. })
        ));
    }

    #[test]
    fn bounds_are_enforced() {
        for bad in [
            LayoutConfig {
                k: 0,
                ..Default::default()
            },
            LayoutConfig {
                k: 101,
                ..Default::default()
            },
            LayoutConfig {
                m: 101,
                ..Default::default()
            },
            LayoutConfig {
                copies: 0,
                ..Default::default()
            },
            LayoutConfig {
                slice_size: (1 << 20) - 1,
                ..Default::default()
            },
            LayoutConfig {
                slice_size: (64 << 20) + 1,
                ..Default::default()
            },
            LayoutConfig {
                shard_size: 100,
                ..Default::default()
            },
            LayoutConfig {
                parity_ratio: -1.0,
                ..Default::default()
            },
            LayoutConfig {
                parity_ratio: f64::NAN,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(choose(10, 5, &bad), Err(Error::InvalidLayout { .. })),
                "{bad:?}"
            );
        }
        assert!(
            Geometry::reed_solomon(100, 100, 4 << 20).is_err(),
            "segment over 256 MiB"
        );
        assert!(Geometry::reed_solomon(100, 100, 1 << 16).is_ok());
        assert!(Geometry::replicated(1, 0).is_err());
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [
            Mode::Auto,
            Mode::File,
            Mode::Slice,
            Mode::RsSize,
            Mode::RsRatio,
        ] {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
        assert!("raid5".parse::<Mode>().is_err());
    }
}
