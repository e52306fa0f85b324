//! Placement: which peers get the shards of one segment. Peers are chosen at random, weighted by
//! a score built from what this node has measured about them (free capacity, bandwidth, RTT,
//! uptime, recent failures) and spread over zones. Shards of one segment go to distinct peers;
//! with fewer peers than shards they are spread as evenly as possible, and [`Placement`] says how
//! many node losses the segment then survives.
//!
//! A storage node is also a candidate for its own client (the [`Candidate::local`] one), so a
//! lone node still works. It is a last resort: used only when there are fewer remote candidates
//! than shards, and then it takes the fewest shards of the spread (it is last in the round-robin
//! order). Losing this machine loses what it holds, and the tolerance counts it like any peer.

use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Half-life of a recorded failure in the score: 5 minutes, so a peer that failed once is
/// avoided for a while but not forever.
pub const FAILURE_HALF_LIFE: Duration = Duration::from_secs(300);

/// Half-life of a failed audit in the score: one day. A holder that could not prove it keeps a
/// shard it acknowledged lost data; that is remembered far longer than a slow transfer.
pub const AUDIT_FAILURE_HALF_LIFE: Duration = Duration::from_secs(86_400);

/// Uptime after which a peer counts as fully established in its score: one hour.
pub const FULL_UPTIME: Duration = Duration::from_secs(3600);

/// Bandwidth that gives a neutral bandwidth factor: 50 MB/s.
pub const REFERENCE_BANDWIDTH: f64 = 50e6;

/// RTT that halves the RTT factor: 50 ms.
pub const REFERENCE_RTT_MS: f64 = 50.0;

/// What this node knows about a peer, for scoring.
#[derive(Debug, Clone)]
pub struct PeerStats {
    /// When the peer was first seen connected in this run.
    pub since: Instant,
    /// Last ping RTT.
    pub rtt: Option<Duration>,
    /// Measured transfer bandwidth (bytes/s), exponentially weighted.
    pub bandwidth: Option<f64>,
    /// Recent failures, decayed with [`FAILURE_HALF_LIFE`].
    failures: f64,
    failures_at: Instant,
    /// Failed audits, decayed with [`AUDIT_FAILURE_HALF_LIFE`].
    audit_failures: f64,
    audit_failures_at: Instant,
    /// Free bytes the peer reported.
    pub free: Option<u64>,
    /// The peer's zone label, if it has one.
    pub zone: Option<String>,
}

impl PeerStats {
    /// A peer seen for the first time now.
    pub fn new(now: Instant) -> Self {
        PeerStats {
            since: now,
            rtt: None,
            bandwidth: None,
            failures: 0.0,
            failures_at: now,
            audit_failures: 0.0,
            audit_failures_at: now,
            free: None,
            zone: None,
        }
    }

    /// Decayed failure count at `now`.
    pub fn failures(&self, now: Instant) -> f64 {
        let dt = now
            .saturating_duration_since(self.failures_at)
            .as_secs_f64();
        self.failures * 0.5f64.powf(dt / FAILURE_HALF_LIFE.as_secs_f64())
    }

    /// Records a failed transfer (timeout, refusal, bad data).
    pub fn record_failure(&mut self, now: Instant, weight: f64) {
        self.failures = self.failures(now) + weight;
        self.failures_at = now;
    }

    /// Decayed failed-audit count at `now`.
    pub fn audit_failures(&self, now: Instant) -> f64 {
        let dt = now
            .saturating_duration_since(self.audit_failures_at)
            .as_secs_f64();
        self.audit_failures * 0.5f64.powf(dt / AUDIT_FAILURE_HALF_LIFE.as_secs_f64())
    }

    /// Records a failed audit: each one divides the score by about four.
    pub fn record_audit_failure(&mut self, now: Instant) {
        self.audit_failures = self.audit_failures(now) + 1.0;
        self.audit_failures_at = now;
    }

    /// Records a successful transfer of `bytes` in `took`.
    pub fn record_success(&mut self, bytes: u64, took: Duration) {
        // Tiny transfers measure latency, not bandwidth.
        if bytes < 64 * 1024 || took.is_zero() {
            return;
        }
        let bw = bytes as f64 / took.as_secs_f64();
        self.bandwidth = Some(match self.bandwidth {
            None => bw,
            Some(old) => 0.8 * old + 0.2 * bw,
        });
    }

    /// The peer's score at `now`: positive, higher is better, 1.0 for an unknown peer.
    /// `need` is the bytes about to be placed; a peer known to lack them scores 0.
    pub fn score(&self, now: Instant, need: u64) -> f64 {
        let capacity = match self.free {
            None => 1.0,
            Some(free) if free < need => return 0.0,
            Some(free) => 0.5 + (1.0 + free as f64 / (1u64 << 30) as f64).ln().min(4.0) / 2.0,
        };
        let bandwidth = self
            .bandwidth
            .map_or(1.0, |bw| (bw / REFERENCE_BANDWIDTH).clamp(0.25, 4.0));
        let rtt = self.rtt.map_or(1.0, |r| {
            1.0 / (1.0 + r.as_secs_f64() * 1000.0 / REFERENCE_RTT_MS)
        });
        let uptime = 0.5
            + 0.5
                * (now.saturating_duration_since(self.since).as_secs_f64()
                    / FULL_UPTIME.as_secs_f64())
                .min(1.0);
        let failures = 1.0 / (1.0 + self.failures(now)).powi(2);
        let audits = 1.0 / (1.0 + self.audit_failures(now)).powi(2);
        capacity * bandwidth * rtt * uptime * failures * audits
    }
}

/// A peer that may receive shards, with its score.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerId,
    /// Its score (see [`PeerStats::score`]); 0 excludes it.
    pub score: f64,
    /// Its zone, if known: shards of one segment prefer different zones.
    pub zone: Option<String>,
    /// This is the node's own shard store (no network round trip).
    pub local: bool,
}

/// Where the shards of one segment go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// One peer per shard, in shard order.
    pub peers: Vec<PeerId>,
    /// How many distinct peers hold the segment.
    pub distinct: usize,
    /// How many peers may be lost with the segment still readable.
    pub fault_tolerance: usize,
}

/// Weight of a candidate sharing a zone with an already chosen peer (zone diversity).
const SAME_ZONE_PENALTY: f64 = 0.25;

/// A uniform random number in [0, 1).
fn uniform() -> f64 {
    // getrandom only fails on broken platforms; a fixed value then still gives a valid choice.
    let x = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Chooses peers for `n` shards of which any `n - m` rebuild the segment. Distinct peers,
/// random, weighted by score with a penalty for repeating a zone. Candidates with score 0 are
/// never chosen. With fewer usable candidates than `n`, every candidate is used and the shards
/// spread round-robin (as evenly as possible). The local candidate is used only when there are
/// fewer usable remote candidates than `n`, and then last, so it holds no more shards of the
/// segment than any remote peer. An empty result means no usable candidate.
pub fn choose(candidates: &[Candidate], n: usize, m: usize) -> Placement {
    let mut pool: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.score > 0.0 && !c.local)
        .collect();
    let local = candidates.iter().find(|c| c.score > 0.0 && c.local);
    let mut order: Vec<&Candidate> = Vec::with_capacity(n.min(pool.len()));
    while order.len() < n && !pool.is_empty() {
        let weight = |c: &Candidate| {
            let same_zone =
                c.zone.is_some() && order.iter().any(|o| o.zone.is_some() && o.zone == c.zone);
            if same_zone {
                c.score * SAME_ZONE_PENALTY
            } else {
                c.score
            }
        };
        let total: f64 = pool.iter().map(|c| weight(c)).sum();
        let mut x = uniform() * total;
        let mut pick = pool.len() - 1;
        for (i, c) in pool.iter().enumerate() {
            let w = weight(c);
            if x < w {
                pick = i;
                break;
            }
            x -= w;
        }
        order.push(pool.swap_remove(pick));
    }
    if order.len() < n
        && let Some(local) = local
    {
        order.push(local);
    }
    if order.is_empty() {
        return Placement {
            peers: Vec::new(),
            distinct: 0,
            fault_tolerance: 0,
        };
    }
    let peers: Vec<PeerId> = (0..n).map(|i| order[i % order.len()].peer).collect();
    let distinct = order.len();
    Placement {
        fault_tolerance: fault_tolerance(&peers, m),
        peers,
        distinct,
    }
}

/// How many peers of `peers` (one per shard) may be lost while at most `m` shards are lost.
pub fn fault_tolerance(peers: &[PeerId], m: usize) -> usize {
    defs_core::durability::survivable_losses(peers.iter(), peers.len().saturating_sub(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|_| Candidate {
                peer: PeerId::random(),
                score: 1.0,
                zone: None,
                local: false,
            })
            .collect()
    }

    fn local() -> Candidate {
        Candidate {
            peer: PeerId::random(),
            score: 100.0,
            zone: None,
            local: true,
        }
    }

    #[test]
    fn the_local_store_is_a_last_resort_and_never_doubles_up_before_peers() {
        // Enough remote peers: the local store is not used, whatever its score.
        let mut c = cands(5);
        let me = local();
        c.push(me.clone());
        for _ in 0..50 {
            let p = choose(&c, 5, 2);
            assert!(!p.peers.contains(&me.peer));
            assert_eq!(p.fault_tolerance, 2);
        }
        // Two remote peers for five shards: the local store is the third holder and holds the
        // fewest shards (loads 2, 2, 1).
        let mut c = cands(2);
        c.push(me.clone());
        for _ in 0..50 {
            let p = choose(&c, 5, 2);
            assert_eq!(p.distinct, 3);
            assert_eq!(p.peers.iter().filter(|x| **x == me.peer).count(), 1);
            assert_eq!(p.fault_tolerance, 1);
        }
        // Alone: everything local, and that survives no loss at all.
        let p = choose(std::slice::from_ref(&me), 5, 2);
        assert_eq!(p.peers, vec![me.peer; 5]);
        assert_eq!(p.fault_tolerance, 0);
    }

    #[test]
    fn shards_of_a_segment_go_to_distinct_peers() {
        let c = cands(8);
        for _ in 0..100 {
            let p = choose(&c, 5, 2);
            let mut d = p.peers.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 5);
            assert_eq!(p.fault_tolerance, 2);
        }
    }

    #[test]
    fn fewer_peers_spread_evenly_and_report_reduced_tolerance() {
        let c = cands(3);
        let p = choose(&c, 5, 2);
        assert_eq!(p.distinct, 3);
        for cand in &c {
            let n = p.peers.iter().filter(|x| **x == cand.peer).count();
            assert!((1..=2).contains(&n));
        }
        // Loads 2,2,1 with m = 2: losing one peer (2 shards) is fine, two is not.
        assert_eq!(p.fault_tolerance, 1);
        let one = choose(&c[..1], 5, 2);
        assert_eq!(one.fault_tolerance, 0);
    }

    #[test]
    fn zero_score_peers_are_never_chosen_and_weights_matter() {
        let mut c = cands(4);
        c[0].score = 0.0;
        c[1].score = 100.0;
        let mut hits = 0;
        for _ in 0..200 {
            let p = choose(&c, 1, 0);
            assert_ne!(p.peers[0], c[0].peer);
            if p.peers[0] == c[1].peer {
                hits += 1;
            }
        }
        assert!(hits > 150, "{hits}");
    }

    #[test]
    fn failures_lower_the_score_and_decay() {
        let now = Instant::now();
        let mut s = PeerStats::new(now);
        let base = s.score(now, 0);
        s.record_failure(now, 1.0);
        assert!(s.score(now, 0) < base / 3.0);
        let later = now + FAILURE_HALF_LIFE * 20;
        assert!(s.failures(later) < 0.001);
        s.free = Some(10);
        assert_eq!(s.score(now, 11), 0.0);
    }
}
