//! The one definition of "on the network" (docs/SEMANTICS.md, "When a file is on the network"):
//! [`Durability::assess`] judges a stored file version from its manifest's holders and the
//! network's [`Liveness`] now. Every place that tells the user how safe a file is — `defs sync`,
//! `defs status` (text and JSON), the `user.defs.durability` xattr, `defs put`'s summary and the
//! mount's upload log — goes through it.
//!
//! A version is **on the network** when, counting only shards whose holder is a node other than
//! this machine that is reachable now, every segment can be rebuilt, and can still be rebuilt
//! after losing any `promised` of those nodes, `promised` being the parity count of the geometry
//! it was written with. Shards on this machine never count: they do not survive losing it.
//!
//! A packed small file ([`Durability::assess_range`]) is judged by the segments of its pack that
//! hold its bytes: it is as safe as they are, whatever becomes of the pack's other segments.

use std::collections::HashSet;

use crate::manifest::{Manifest, SegmentEntry};
use crate::types::NodeId;

/// The nodes a durability figure may count, as the network layer sees them now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// This machine's node, when it stores shards: its shards do not count.
    pub local: Option<NodeId>,
    /// Nodes other than this machine that are reachable now (connected, identity accepted).
    pub live: HashSet<NodeId>,
}

impl Liveness {
    /// Whether `node` is a live holder other than this machine.
    pub fn counts(&self, node: &NodeId) -> bool {
        self.local.as_ref() != Some(node) && self.live.contains(node)
    }
}

/// How well one stored file version is protected now (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// Shards in the version.
    pub shards: usize,
    /// Shards with a live holder other than this machine.
    pub remote: usize,
    /// Shards whose only reachable holder is this machine.
    pub local_only: usize,
    /// Node losses the geometry promises to survive (its parity count).
    pub promised: usize,
    /// Losses of other nodes every segment survives, counting only live holders other than
    /// this machine; `None` when some segment cannot be rebuilt from them at all.
    pub survives: Option<usize>,
}

impl Durability {
    /// Judges `manifest` against `live`.
    pub fn assess(manifest: &Manifest, live: &Liveness) -> Durability {
        Self::assess_segments(manifest, &manifest.segments, live)
    }

    /// Judges the bytes `offset..offset + len` of `manifest`'s object (a file's content range,
    /// such as a member of a pack) against `live`: only the segments holding those bytes count.
    /// A range past the object's end counts the segments it does reach.
    pub fn assess_range(manifest: &Manifest, offset: u64, len: u64, live: &Liveness) -> Durability {
        let seg_size = manifest.geometry.segment_size().max(1);
        let count = manifest.segments.len();
        let first = usize::try_from(offset / seg_size)
            .unwrap_or(usize::MAX)
            .min(count);
        let last = offset
            .saturating_add(len)
            .div_ceil(seg_size)
            .try_into()
            .unwrap_or(usize::MAX)
            .clamp(first, count);
        Self::assess_segments(manifest, &manifest.segments[first..last], live)
    }

    fn assess_segments(
        manifest: &Manifest,
        segments: &[SegmentEntry],
        live: &Liveness,
    ) -> Durability {
        let need = usize::from(manifest.geometry.data_shards());
        let total = usize::from(manifest.geometry.total_shards());
        let mut d = Durability {
            shards: 0,
            remote: 0,
            local_only: 0,
            promised: total.saturating_sub(need),
            survives: None,
        };
        let mut worst: Option<Option<usize>> = None;
        // A hole has no shards: nothing of it can be lost.
        for segment in segments.iter().filter(|s| !s.is_hole()) {
            let holders: Vec<NodeId> = segment
                .shards
                .iter()
                .filter_map(|s| s.holders.iter().find(|h| live.counts(h)).copied())
                .collect();
            d.shards += segment.shards.len();
            d.remote += holders.len();
            d.local_only += segment
                .shards
                .iter()
                .filter(|s| {
                    !s.holders.iter().any(|h| live.counts(h))
                        && live.local.is_some_and(|l| s.holders.contains(&l))
                })
                .count();
            let this = (holders.len() >= need).then(|| survivable_losses(holders.iter(), need));
            worst = Some(match worst {
                None => this,
                Some(w) => w.zip(this).map(|(a, b)| a.min(b)),
            });
        }
        // A version without segments (an empty file) needs nothing from anyone.
        d.survives = worst.unwrap_or(Some(d.promised));
        d
    }

    /// Whether the version is on the network by the one definition.
    pub fn on_network(&self) -> bool {
        self.survives.is_some_and(|s| s >= self.promised)
    }

    /// Whether `self` is less protected than `than`.
    pub fn is_worse(&self, than: &Durability) -> bool {
        let frac = |d: &Durability| (d.remote as u128) * (than.shards.max(1) as u128);
        let other = (than.remote as u128) * (self.shards.max(1) as u128);
        (self.on_network(), self.survives.map(|s| s + 1), frac(self))
            < (than.on_network(), than.survives.map(|s| s + 1), other)
    }
}

fn lost(n: usize) -> String {
    if n == 1 {
        "1 lost node".into()
    } else {
        format!("{n} lost nodes")
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.on_network() {
            "on the network"
        } else {
            "not on the network"
        };
        write!(
            f,
            "{verdict}: {}/{} shards on other live nodes",
            self.remote, self.shards
        )?;
        if self.local_only > 0 {
            write!(f, ", {} only on this machine", self.local_only)?;
        }
        match self.survives {
            Some(s) if s >= self.promised => write!(f, ", survives {}", lost(s)),
            Some(s) => write!(
                f,
                ", survives {}, not the {} promised",
                lost(s),
                self.promised
            ),
            None if self.local_only > 0 => write!(
                f,
                "; cannot be rebuilt without this machine: losing it loses the file"
            ),
            None => write!(
                f,
                "; too few to rebuild until more holders are reachable again"
            ),
        }
    }
}

/// How many node losses a segment survives in the worst case, given the holder of each of its
/// shards and how many shards rebuild it: the most-loaded holders are lost first.
/// Generic over the holder's name (a `NodeId` here, a libp2p `PeerId` in placement).
pub fn survivable_losses<'a, H: PartialEq + Copy + 'a>(
    holders: impl Iterator<Item = &'a H>,
    need: usize,
) -> usize {
    let mut load: Vec<(H, usize)> = Vec::new();
    for holder in holders {
        match load.iter_mut().find(|(n, _)| n == holder) {
            Some((_, c)) => *c += 1,
            None => load.push((*holder, 1)),
        }
    }
    load.sort_by_key(|l| std::cmp::Reverse(l.1));
    let mut left: usize = load.iter().map(|(_, c)| c).sum();
    let mut lost = 0;
    for (_, c) in load {
        if left - c < need {
            break;
        }
        left -= c;
        lost += 1;
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{SegmentEntry, ShardEntry};
    use crate::pipeline::Geometry;
    use crate::types::{ShardId, VersionId};

    fn node(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    /// A 3+2 version of `segments` segments whose shard `j` is held by `holders(j)`.
    fn manifest(segments: usize, holders: impl Fn(usize) -> Vec<NodeId>) -> Manifest {
        let geometry = Geometry::reed_solomon(3, 2, 1 << 20).unwrap();
        Manifest {
            version: VersionId::default(),
            size: segments as u64,
            geometry,
            segments: (0..segments)
                .map(|_| SegmentEntry {
                    len: 1,
                    shard_len: 1,
                    shards: (0..5)
                        .map(|j| ShardEntry {
                            id: ShardId::default(),
                            len: 17,
                            crc: 0,
                            nonce: [0; 12],
                            holders: holders(j),
                        })
                        .collect(),
                    extents: None,
                })
                .collect(),
            pack: None,
        }
    }

    fn live(local: Option<u8>, nodes: &[u8]) -> Liveness {
        Liveness {
            local: local.map(node),
            live: nodes.iter().map(|i| node(*i)).collect(),
        }
    }

    #[test]
    fn five_live_other_holders_of_a_3_plus_2_file_are_on_the_network() {
        let m = manifest(2, |j| vec![node(j as u8 + 1)]);
        let d = Durability::assess(&m, &live(Some(9), &[1, 2, 3, 4, 5]));
        assert_eq!(d.survives, Some(2));
        assert!(d.on_network());
        assert_eq!(
            d.to_string(),
            "on the network: 10/10 shards on other live nodes, survives 2 lost nodes"
        );
    }

    #[test]
    fn a_packed_file_is_as_safe_as_the_segments_holding_its_range() {
        // Segment 0 on five live nodes, segment 1 only on this machine.
        let mut m = manifest(2, |j| vec![node(j as u8 + 1)]);
        for shard in &mut m.segments[1].shards {
            shard.holders = vec![node(9)];
        }
        let seg = m.geometry.segment_size();
        let now = live(Some(9), &[1, 2, 3, 4, 5]);
        assert!(!Durability::assess(&m, &now).on_network());
        let first = Durability::assess_range(&m, 10, 100, &now);
        assert!(first.on_network(), "{first}");
        assert_eq!(first.shards, 5);
        let second = Durability::assess_range(&m, seg + 10, 100, &now);
        assert!(!second.on_network(), "{second}");
        // A range across the boundary is as safe as the worse of the two.
        let both = Durability::assess_range(&m, seg - 10, 20, &now);
        assert_eq!((both.shards, both.on_network()), (10, false));
    }

    #[test]
    fn a_file_kept_on_this_machine_only_is_not_on_the_network() {
        let m = manifest(1, |_| vec![node(9)]);
        // The local node is "live" too; it still does not count.
        let d = Durability::assess(&m, &live(Some(9), &[9, 1]));
        assert_eq!((d.remote, d.local_only, d.survives), (0, 5, None));
        assert!(!d.on_network());
        assert!(
            d.to_string()
                .ends_with("cannot be rebuilt without this machine: losing it loses the file"),
            "{d}"
        );
    }

    #[test]
    fn holders_going_away_lower_the_figure_and_coming_back_raise_it() {
        let m = manifest(1, |j| vec![node(j as u8 + 1)]);
        let all = Durability::assess(&m, &live(None, &[1, 2, 3, 4, 5]));
        let one_gone = Durability::assess(&m, &live(None, &[1, 2, 3, 4]));
        let two_gone = Durability::assess(&m, &live(None, &[1, 2, 3]));
        let three_gone = Durability::assess(&m, &live(None, &[1, 2]));
        assert_eq!(all.survives, Some(2));
        assert_eq!(one_gone.survives, Some(1));
        assert!(!one_gone.on_network());
        assert!(
            one_gone.to_string().contains("not the 2 promised"),
            "{one_gone}"
        );
        assert_eq!(two_gone.survives, Some(0));
        assert_eq!(three_gone.survives, None);
        assert!(three_gone.to_string().contains("too few to rebuild"));
        assert!(three_gone.is_worse(&two_gone) && two_gone.is_worse(&one_gone));
        assert!(one_gone.is_worse(&all) && !all.is_worse(&one_gone));
    }

    #[test]
    fn shards_on_this_machine_and_on_other_nodes_count_only_the_others() {
        // Two remote nodes hold two shards each, this machine one: remote only, 4 shards of
        // which 3 rebuild; losing either remote node leaves 2.
        let m = manifest(1, |j| {
            vec![if j == 4 {
                node(9)
            } else {
                node(j as u8 % 2 + 1)
            }]
        });
        let d = Durability::assess(&m, &live(Some(9), &[1, 2]));
        assert_eq!((d.remote, d.local_only, d.survives), (4, 1, Some(0)));
        assert!(!d.on_network());
    }
}
