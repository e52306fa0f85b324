//! The owner's holder record: where shards of a stored object are now, when that differs from
//! what its sealed manifest says. A manifest is content-addressed (its hash is the file id), so
//! the holders it names are fixed when it is stored; repair re-places shards (byte-identical,
//! same ids) and lookups find shards that moved. Both are kept here, beside the local manifest
//! copy (`DIR/meta/manifests/<file id>.holders`, format in `docs/format.md`, "Holder record
//! v1"), and [`apply`] lays them over the manifest when it is opened, so reads, `defs status`
//! and `user.defs.durability` all see the holders as they are now.
//!
//! Holders are hints: a broadcast lookup is the truth. A damaged or unreadable record is
//! ignored (with a log line) and the manifest's own holders apply.

use crate::error::{Error, Result};
use crate::manifest::{MAX_HOLDERS, Manifest};
use crate::types::NodeId;

/// Magic of a holder record file.
pub const HOLDERS_MAGIC: [u8; 4] = *b"DFHR";

/// The holder record format version this build writes and reads.
pub const HOLDERS_VERSION: u16 = 1;

/// Most entries in one holder record: one per shard of the largest manifest is far below
/// this; a hostile length can never make us allocate more.
pub const MAX_HOLDER_ENTRIES: u32 = 1 << 24;

/// The current holders of one shard (replacing what the manifest names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderUpdate {
    /// The segment.
    pub segment: u64,
    /// The shard's index in the segment.
    pub index: u16,
    /// The nodes that hold it now (at most [`MAX_HOLDERS`]).
    pub holders: Vec<NodeId>,
}

fn malformed(what: &'static str) -> Error {
    Error::MalformedManifest { what }
}

/// A bounds-checked reader over untrusted bytes.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(malformed("truncated holder record"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// The record's bytes: header, entries, then BLAKE3 of everything before.
pub(crate) fn encode(updates: &[HolderUpdate]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + updates.len() * (11 + 32) + 32);
    out.extend_from_slice(&HOLDERS_MAGIC);
    out.extend_from_slice(&HOLDERS_VERSION.to_le_bytes());
    out.extend_from_slice(&(updates.len() as u32).to_le_bytes());
    for u in updates {
        out.extend_from_slice(&u.segment.to_le_bytes());
        out.extend_from_slice(&u.index.to_le_bytes());
        let n = u.holders.len().min(MAX_HOLDERS);
        out.push(n as u8);
        for h in &u.holders[..n] {
            out.extend_from_slice(&h.0);
        }
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Parses a record; any damage is an error, never a panic.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<HolderUpdate>> {
    let body_len = bytes
        .len()
        .checked_sub(32)
        .ok_or(malformed("holder record shorter than its checksum"))?;
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum {
        return Err(malformed("holder record checksum mismatch"));
    }
    let mut r = Cursor(body);
    if r.take(4)? != HOLDERS_MAGIC {
        return Err(malformed("not a holder record (bad magic)"));
    }
    if u16::from_le_bytes(r.array()?) != HOLDERS_VERSION {
        return Err(malformed("unknown holder record version"));
    }
    let count = u32::from_le_bytes(r.array()?);
    // Each entry takes at least 11 bytes: the count is bounded by the bytes present.
    if count > MAX_HOLDER_ENTRIES || count as usize > body_len / 11 {
        return Err(malformed("holder record count exceeds the bytes present"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let segment = u64::from_le_bytes(r.array()?);
        let index = u16::from_le_bytes(r.array()?);
        let n = usize::from(r.take(1)?[0]);
        if n > MAX_HOLDERS {
            return Err(malformed("more holders than MAX_HOLDERS"));
        }
        let mut holders = Vec::with_capacity(n);
        for _ in 0..n {
            holders.push(NodeId(r.array()?));
        }
        out.push(HolderUpdate {
            segment,
            index,
            holders,
        });
    }
    if !r.0.is_empty() {
        return Err(malformed("trailing bytes after the holder record"));
    }
    Ok(out)
}

/// Adds `new` to `into`: a shard's latest entry replaces an earlier one.
pub(crate) fn merge(into: &mut Vec<HolderUpdate>, new: Vec<HolderUpdate>) {
    for u in new {
        match into
            .iter_mut()
            .find(|x| x.segment == u.segment && x.index == u.index)
        {
            Some(x) => x.holders = u.holders,
            None => into.push(u),
        }
    }
}

/// Lays `updates` over `manifest`'s holders; entries naming a shard it does not have are
/// skipped (a record that does not belong to this manifest changes nothing it should not).
pub(crate) fn apply(manifest: &mut Manifest, updates: &[HolderUpdate]) {
    for u in updates {
        if let Some(shard) = usize::try_from(u.segment)
            .ok()
            .and_then(|s| manifest.segments.get_mut(s))
            .and_then(|seg| seg.shards.get_mut(usize::from(u.index)))
        {
            shard.holders = u.holders.iter().take(MAX_HOLDERS).copied().collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<HolderUpdate> {
        vec![
            HolderUpdate {
                segment: 0,
                index: 3,
                holders: vec![NodeId([1; 32]), NodeId([2; 32])],
            },
            HolderUpdate {
                segment: 7,
                index: 0,
                holders: Vec::new(),
            },
        ]
    }

    #[test]
    fn a_record_round_trips_and_damage_is_an_error_not_a_panic() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes).unwrap(), sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flipped byte {i}");
        }
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let mut all = sample();
        merge(
            &mut all,
            vec![HolderUpdate {
                segment: 0,
                index: 3,
                holders: vec![NodeId([9; 32])],
            }],
        );
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].holders, vec![NodeId([9; 32])]);
    }
}
