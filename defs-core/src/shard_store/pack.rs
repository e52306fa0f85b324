//! Pack files: the on-disk form of stored shards (`DIR/shards/packs/<n>.pack`).
//!
//! A pack is an append-only file of records. Each record starts on an [`ALIGN`] boundary with a
//! [`HEADER_LEN`]-byte header (magic, shard id, length, CRC32) followed by the shard's bytes.
//! Deleting a shard punches a hole over its record, so the space goes back to the filesystem
//! without rewriting the pack; what lies between records is holes (zeros) or the debris of an
//! interrupted put, which the store punches at open. The header makes a pack readable without
//! the index ([`records`]): tools, tests and a rebuilt index can see what a pack holds.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::types::ShardId;

/// Bytes of a record header.
pub const HEADER_LEN: u64 = 64;
/// Records start on multiples of this (the filesystem block), so punching one record's range
/// frees whole blocks and never touches a neighbour.
pub const ALIGN: u64 = 4096;
/// A pack stops taking new records once it would grow past this.
pub const PACK_LIMIT: u64 = 1 << 30;

const MAGIC: [u8; 8] = *b"DEFSHRD1";

/// What a record header says about the shard after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The shard's id (BLAKE3 of its bytes).
    pub id: ShardId,
    /// Length of the bytes after the header.
    pub len: u64,
    /// CRC32 of those bytes.
    pub crc: u32,
}

impl RecordHeader {
    /// `magic 8 ‖ id 32 ‖ len u64 LE ‖ crc u32 LE ‖ 12 zero bytes`.
    pub(super) fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[..8].copy_from_slice(&MAGIC);
        out[8..40].copy_from_slice(&self.id.0);
        out[40..48].copy_from_slice(&self.len.to_le_bytes());
        out[48..52].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// `None` unless `bytes` is a well-formed header.
    pub(super) fn decode(bytes: &[u8; HEADER_LEN as usize]) -> Option<RecordHeader> {
        if bytes[..8] != MAGIC || bytes[52..].iter().any(|b| *b != 0) {
            return None;
        }
        Some(RecordHeader {
            id: ShardId(bytes[8..40].try_into().ok()?),
            len: u64::from_le_bytes(bytes[40..48].try_into().ok()?),
            crc: u32::from_le_bytes(bytes[48..52].try_into().ok()?),
        })
    }
}

/// Where the record after one of `len` bytes at `offset` may start.
pub(super) fn record_end(offset: u64, len: u64) -> u64 {
    (offset + HEADER_LEN + len).div_ceil(ALIGN) * ALIGN
}

/// File name of pack number `n`.
pub(super) fn pack_name(n: u32) -> String {
    format!("{n:08x}.pack")
}

/// The pack number a file name stands for, if it is one of ours.
pub(super) fn parse_pack_name(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".pack")?;
    (hex.len() == 8)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Writes one record (header, then bytes) at `offset`. Not durable until the caller syncs the
/// file (`fdatasync` also covers the file's new length).
pub(super) fn write_record(
    file: &File,
    offset: u64,
    head: &RecordHeader,
    bytes: &[u8],
) -> io::Result<()> {
    file.write_all_at(&head.encode(), offset)?;
    file.write_all_at(bytes, offset + HEADER_LEN)
}

/// Reads the header at `offset`; `Ok(None)` when the bytes there are not a header or the file
/// ends first.
pub(super) fn read_header(file: &File, offset: u64) -> io::Result<Option<RecordHeader>> {
    let mut head = [0u8; HEADER_LEN as usize];
    match file.read_exact_at(&mut head, offset) {
        Ok(()) => Ok(RecordHeader::decode(&head)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// The complete records in the pack at `path`, by offset: every aligned offset is tried, so a
/// damaged or punched record costs its neighbours nothing. For tools and tests; the store
/// itself goes by its index.
///
/// # Errors
/// I/O errors opening or reading the pack.
pub fn records(path: &Path) -> io::Result<Vec<(u64, RecordHeader)>> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + HEADER_LEN <= size {
        match read_header(&file, offset)? {
            // Compared with what is left, not summed: a damaged length near u64::MAX would
            // overflow the sum (and, wrapped, send the walk backwards for ever).
            Some(head) if head.len <= size - offset - HEADER_LEN => {
                out.push((offset, head));
                offset = record_end(offset, head.len);
            }
            _ => offset += ALIGN,
        }
    }
    Ok(out)
}

/// The pack files in `dir` by number (files with other names are not listed).
///
/// # Errors
/// I/O errors reading `dir`.
pub fn pack_files(dir: &Path) -> io::Result<Vec<(u32, std::path::PathBuf)>> {
    let mut packs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(n) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_pack_name)
        {
            packs.push((n, path));
        }
    }
    packs.sort();
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let head = RecordHeader {
            id: ShardId([7; 32]),
            len: 1 << 20,
            crc: 0xdead_beef,
        };
        let enc = head.encode();
        assert_eq!(RecordHeader::decode(&enc), Some(head));
        assert_eq!(RecordHeader::decode(&[0; 64]), None);
        let mut bad = enc;
        bad[0] ^= 1;
        assert_eq!(RecordHeader::decode(&bad), None);
        let mut bad = enc;
        bad[60] = 1;
        assert_eq!(RecordHeader::decode(&bad), None);
    }

    #[test]
    fn names_and_record_bounds() {
        assert_eq!(pack_name(0x2a), "0000002a.pack");
        assert_eq!(parse_pack_name("0000002a.pack"), Some(0x2a));
        for bad in ["2a.pack", "0000002a", "0000002g.pack", "0000002a.pack.tmp"] {
            assert_eq!(parse_pack_name(bad), None, "{bad}");
        }
        assert_eq!(record_end(0, 0), ALIGN);
        assert_eq!(record_end(0, ALIGN - HEADER_LEN), ALIGN);
        assert_eq!(record_end(ALIGN, ALIGN - HEADER_LEN + 1), 3 * ALIGN);
    }

    #[test]
    fn records_walks_past_holes_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(pack_name(0));
        let file = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let a = RecordHeader {
            id: ShardId([1; 32]),
            len: 5000,
            crc: 1,
        };
        let b = RecordHeader {
            id: ShardId([2; 32]),
            len: 10,
            crc: 2,
        };
        write_record(&file, 0, &a, &[9; 5000]).unwrap();
        file.sync_data().unwrap();
        // Garbage where a record could start, then a record after a gap.
        file.write_all_at(b"not a header", record_end(0, 5000))
            .unwrap();
        write_record(&file, 5 * ALIGN, &b, &[8; 10]).unwrap();
        // A header whose bytes run past the end is not a record.
        let cut = RecordHeader {
            id: ShardId([3; 32]),
            len: 1 << 20,
            crc: 3,
        };
        file.write_all_at(&cut.encode(), 6 * ALIGN).unwrap();
        assert_eq!(records(&path).unwrap(), vec![(0, a), (5 * ALIGN, b)]);
    }

    /// Issue 20 (fuzzing, target `shard_pack`): a header whose length is near u64::MAX
    /// overflowed `offset + HEADER_LEN + len` (a panic with overflow checks, a walk that went
    /// backwards without them).
    #[test]
    fn r20_a_length_near_u64_max_is_not_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(pack_name(0));
        let file = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let huge = RecordHeader {
            id: ShardId([4; 32]),
            len: u64::MAX - 10,
            crc: 4,
        };
        let b = RecordHeader {
            id: ShardId([5; 32]),
            len: 10,
            crc: 5,
        };
        file.write_all_at(&huge.encode(), 0).unwrap();
        write_record(&file, ALIGN, &b, &[7; 10]).unwrap();
        assert_eq!(records(&path).unwrap(), vec![(ALIGN, b)]);
    }
}
