//! The store's counters, kept in memory and rebuilt from the index at open: bytes and shards
//! in use (the capacity quota), each owner's bytes (the per-owner quota), the shards being
//! written, and the packs being filled with where each one's next record goes.

use std::collections::{HashMap, HashSet};

use super::entry::Location;
use super::pack::record_end;
use crate::types::{NodeId, ShardId};

/// Packs filled at once. A put takes the one with the fewest writes in flight, so concurrent
/// puts write and sync different files: an `fdatasync` waits for every dirty page of its file,
/// and ext4 serialises writes to one inode (with one shared pack, a 1 GiB put was a quarter
/// slower than with a file per shard).
pub(super) const FILLING: usize = 8;

/// Counters kept in memory, rebuilt from the index at open.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Bytes of indexed shards plus those being written (reserved before the write).
    pub(super) used: u64,
    pub(super) shards: u64,
    pub(super) per_owner: HashMap<NodeId, u64>,
    /// New shards whose record and index entry are being written outside the lock.
    pub(super) writing: HashSet<ShardId>,
    /// The packs new records go to (at most [`FILLING`]; one more is started only when every
    /// one has a write in flight).
    pub(super) filling: Vec<Filling>,
    /// The number the next new pack gets.
    pub(super) next_pack: u32,
    /// A pack takes no new record past this ([`PACK_LIMIT`](super::pack::PACK_LIMIT); smaller in tests).
    pub(super) limit: u64,
    /// Records (indexed or being written) per pack; a pack at 0 that is not being filled is
    /// removed.
    pub(super) live: HashMap<u32, u64>,
    /// Packs left empty when their filling slot moved on; the store removes their files.
    pub(super) retired: Vec<u32>,
}

/// A pack being filled: where its next record starts, and how many writes to it are under way.
#[derive(Clone, Copy, Debug)]
pub(super) struct Filling {
    pub(super) pack: u32,
    pub(super) end: u64,
    pub(super) writes: u32,
}

impl Counters {
    /// Takes the place of the next `len`-byte record in the least busy pack being filled,
    /// starting a pack when all are busy or one is full. The caller calls
    /// [`written`](Self::written) when the write is over. The returned flag says the pack file
    /// must be created first.
    pub(super) fn reserve(&mut self, len: u64) -> (Location, bool) {
        let idle = self.filling.iter().position(|f| f.writes == 0);
        let i = match idle {
            Some(i) => i,
            None if self.filling.len() < FILLING => {
                self.filling.push(Filling {
                    pack: self.next_pack,
                    end: 0,
                    writes: 0,
                });
                self.next_pack = self.next_pack.saturating_add(1);
                self.filling.len() - 1
            }
            None => (0..self.filling.len())
                .min_by_key(|&i| self.filling[i].writes)
                .unwrap_or(0),
        };
        let (next_pack, limit) = (self.next_pack, self.limit);
        let f = &mut self.filling[i];
        if f.end > 0 && record_end(f.end, len) > limit {
            if self.live.get(&f.pack) == Some(&0) {
                self.live.remove(&f.pack);
                self.retired.push(f.pack);
            }
            f.pack = next_pack;
            f.end = 0;
            f.writes = 0;
            self.next_pack = self.next_pack.saturating_add(1);
        }
        let at = Location {
            pack: f.pack,
            offset: f.end,
        };
        f.end = record_end(f.end, len);
        f.writes += 1;
        *self.live.entry(at.pack).or_default() += 1;
        (at, at.offset == 0)
    }

    /// The write of a record reserved in `pack` is over (done or failed).
    pub(super) fn written(&mut self, pack: u32) {
        if let Some(f) = self.filling.iter_mut().find(|f| f.pack == pack) {
            f.writes = f.writes.saturating_sub(1);
        }
    }

    /// Stops filling `pack`, whose file could not be created; the next write starts another.
    pub(super) fn abandon(&mut self, pack: u32) {
        self.filling.retain(|f| f.pack != pack);
        self.release(pack);
    }

    /// Forgets one record of `pack`; true when the pack is left empty and is not being filled.
    pub(super) fn release(&mut self, pack: u32) -> bool {
        let Some(n) = self.live.get_mut(&pack) else {
            return false;
        };
        *n = n.saturating_sub(1);
        if *n > 0 || self.filling.iter().any(|f| f.pack == pack) {
            return false;
        }
        self.live.remove(&pack);
        true
    }

    pub(super) fn charge(&mut self, owner: NodeId, len: u64) {
        *self.per_owner.entry(owner).or_default() += len;
    }

    pub(super) fn refund(&mut self, owner: &NodeId, len: u64) {
        if let Some(used) = self.per_owner.get_mut(owner) {
            *used = used.saturating_sub(len);
            if *used == 0 {
                self.per_owner.remove(owner);
            }
        }
    }
}
