//! Broadcast index lookup: when a manifest's recorded holders fail, a client publishes an
//! [`Ask`](crate::protocol::Ask) ("who holds these shard ids?") on the gossipsub topic
//! [`LOOKUP_TOPIC`]. Storage nodes that hold some of the ids answer the asker directly with a
//! [`Request::Holders`](crate::protocol::Request::Holders) on the shard protocol, never on the
//! topic; the client then fetches from them. Asks are bounded ([`MAX_IDS`](crate::protocol::MAX_IDS)
//! ids) and rate-limited per asker by [`AskLimiter`].

use std::collections::HashMap;
use std::time::Instant;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// The gossipsub topic of lookup asks.
pub const LOOKUP_TOPIC: &str = "/defs/lookup/1";

/// Asks per second a node answers from one asker (sustained). A reader asks once per segment
/// whose holders all failed; 20/s covers a fast sequential read.
pub const ASKS_PER_SECOND: f64 = 20.0;

/// Burst of asks a node answers from one asker.
pub const ASK_BURST: f64 = 40.0;

/// Askers tracked by the limiter; beyond this the stalest are forgotten.
pub const MAX_TRACKED_ASKERS: usize = 1024;

/// A token bucket per asker.
#[derive(Debug, Default)]
pub struct AskLimiter {
    buckets: HashMap<PeerId, (f64, Instant)>,
}

impl AskLimiter {
    /// Whether an ask from `peer` at `now` is answered (and takes a token if so).
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        if !self.buckets.contains_key(&peer)
            && self.buckets.len() >= MAX_TRACKED_ASKERS
            && let Some(old) = self
                .buckets
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(p, _)| *p)
        {
            self.buckets.remove(&old);
        }
        let (tokens, last) = self.buckets.entry(peer).or_insert((ASK_BURST, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * ASKS_PER_SECOND;
        *tokens = (*tokens + refill).min(ASK_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Asks per second this node publishes at most (sustained): below what peers answer from one
/// asker ([`ASKS_PER_SECOND`]), so that a burst of lookups (a read after churn, a repair pass)
/// is spread out instead of going unanswered. An ask over the budget waits for a token.
pub const OWN_ASKS_PER_SECOND: f64 = ASKS_PER_SECOND * 0.8;

/// Burst of asks this node publishes at once (half of what peers accept, [`ASK_BURST`]).
pub const OWN_ASK_BURST: f64 = ASK_BURST / 2.0;

/// Paces this node's own asks ([`OWN_ASKS_PER_SECOND`], [`OWN_ASK_BURST`]).
#[derive(Debug)]
pub struct AskPacer {
    tokens: f64,
    last: Instant,
}

impl AskPacer {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> AskPacer {
        AskPacer {
            tokens: OWN_ASK_BURST,
            last: now,
        }
    }

    /// Whether an ask may be published at `now`; [`AskPacer::take`] once it was (an ask that
    /// found no peer to go to costs nothing).
    pub fn ready(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * OWN_ASKS_PER_SECOND;
        self.tokens = (self.tokens + refill).min(OWN_ASK_BURST);
        self.last = now;
        self.tokens >= 1.0
    }

    /// Counts a published ask.
    pub fn take(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// Whether an address is worth giving to others or dialing: not unspecified (`0.0.0.0`).
pub fn dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn asks_beyond_the_burst_are_refused_then_refill() {
        let mut l = AskLimiter::default();
        let p = PeerId::random();
        let t = Instant::now();
        let allowed = (0..100).filter(|_| l.allow(p, t)).count();
        assert_eq!(allowed, ASK_BURST as usize);
        assert!(l.allow(p, t + Duration::from_millis(100)));
        // Another asker has its own bucket.
        assert!(l.allow(PeerId::random(), t));
    }

    #[test]
    fn unspecified_addresses_are_not_dialable() {
        assert!(!dialable(&"/ip4/0.0.0.0/tcp/1".parse().unwrap()));
        assert!(dialable(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()));
    }
}
