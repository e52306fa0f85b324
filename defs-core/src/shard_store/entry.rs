//! The shard index's rows: what is promised about a stored shard ([`ShardMeta`]) and where its
//! record is ([`Location`]), and their encoding in `index.redb` (layout in docs/format.md,
//! "Shard store"), including the version-1 rows of the older one-file-per-shard layout.

use crate::types::NodeId;

/// The most owners one shard may have. Identical ciphertext under different owners only happens
/// for replicated objects shared on purpose; the cap bounds the index entry's size.
pub const MAX_OWNERS: usize = 256;

/// Version of the index entry encoding (first byte of every value). Version 1 (no location,
/// one file per shard) is read only to move an old store into packs.
pub(super) const ENTRY_VERSION: u8 = 2;
pub(super) const ENTRY_VERSION_FILES: u8 = 1;
/// Fixed part of a version-1 entry: version 1, length 8, CRC 4, stored-at 8, owner count 2.
pub(super) const ENTRY_FIXED_V1: usize = 23;
/// Fixed part of a version-2 entry: the version-1 fields, then pack 4 and offset 8.
pub(super) const ENTRY_FIXED: usize = ENTRY_FIXED_V1 + 12;

/// What the index records about a stored shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMeta {
    /// Length in bytes.
    pub len: u64,
    /// CRC32 (IEEE) of the bytes.
    pub crc: u32,
    /// When it was first stored, in seconds since the Unix epoch.
    pub stored_at: u64,
    /// The nodes that stored it and may delete it (sorted, no duplicates, never empty).
    pub owners: Vec<NodeId>,
}

/// Where a shard's record is: a pack and the offset of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) pack: u32,
    pub(super) offset: u64,
}

impl Location {
    /// The place of a shard whose bytes were already gone when an old store was moved into
    /// packs: no pack has this number, so reads report the shard missing.
    pub(super) const NOWHERE: Location = Location {
        pack: u32::MAX,
        offset: 0,
    };
}

/// One index entry: what is promised about a shard, and where its record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) meta: ShardMeta,
    pub(super) at: Location,
}

impl Entry {
    /// `version 2 ‖ len u64 ‖ crc u32 ‖ stored-at u64 ‖ owner count u16 ‖ pack u32 ‖ offset u64
    /// ‖ owners (32 bytes each)`, all little-endian.
    pub(super) fn encode(&self) -> Vec<u8> {
        let m = &self.meta;
        let mut out = Vec::with_capacity(ENTRY_FIXED + 32 * m.owners.len());
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&m.len.to_le_bytes());
        out.extend_from_slice(&m.crc.to_le_bytes());
        out.extend_from_slice(&m.stored_at.to_le_bytes());
        // Bounded by MAX_OWNERS (256) on every insert.
        let count = u16::try_from(m.owners.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&self.at.pack.to_le_bytes());
        out.extend_from_slice(&self.at.offset.to_le_bytes());
        for owner in &m.owners {
            out.extend_from_slice(&owner.0);
        }
        out
    }

    /// Decodes a version-2 entry, or a version-1 one (whose location is `None`).
    pub(super) fn decode_any(bytes: &[u8]) -> Option<(ShardMeta, Option<Location>)> {
        let fixed = match *bytes.first()? {
            ENTRY_VERSION => ENTRY_FIXED,
            ENTRY_VERSION_FILES => ENTRY_FIXED_V1,
            _ => return None,
        };
        if bytes.len() < fixed {
            return None;
        }
        let u64_at = |i: usize| bytes[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        let len = u64_at(1)?;
        let crc = u32::from_le_bytes(bytes[9..13].try_into().ok()?);
        let stored_at = u64_at(13)?;
        let count = usize::from(u16::from_le_bytes(bytes[21..23].try_into().ok()?));
        if count == 0 || count > MAX_OWNERS || bytes.len() != fixed + 32 * count {
            return None;
        }
        let at = (fixed == ENTRY_FIXED)
            .then(|| {
                let pack = u32::from_le_bytes(bytes[23..27].try_into().ok()?);
                Some(Location {
                    pack,
                    offset: u64_at(27)?,
                })
            })
            .flatten();
        let owners = bytes[fixed..]
            .chunks_exact(32)
            .map(|c| c.try_into().ok().map(NodeId))
            .collect::<Option<Vec<_>>>()?;
        let meta = ShardMeta {
            len,
            crc,
            stored_at,
            owners,
        };
        Some((meta, at))
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Entry> {
        match Entry::decode_any(bytes)? {
            (meta, Some(at)) => Some(Entry { meta, at }),
            (_, None) => None,
        }
    }
}
