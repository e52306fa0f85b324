//! A generic append-only redo log ("op log") that puts a process-crash-safe record of each
//! operation in front of a store whose own commits are not yet durable.
//!
//! Each record is appended with a single `pwrite(2)` at the end of the valid records and no
//! fsync: the kernel's page cache keeps it across a crash of the *process* (SIGKILL, panic,
//! abort), which is what the log is for. [`OpLog::sync`] fsyncs it when an owner wants power-loss
//! durability from the log itself. Each owner writes a durable checkpoint of its own state and
//! then [`OpLog::reset`]s the log, naming the last LSN the checkpoint covers (the new *base*).
//!
//! File layout (docs/format.md, "Op log"): a 48-byte header (magic, version, owner kind, boot
//! id, base LSN, CRC32 of the header) and then frames of `len u32 ‖ crc32 u32 ‖ lsn u64 ‖
//! payload`, every integer little-endian. The CRC covers `len ‖ lsn ‖ payload`. LSNs are
//! consecutive from `base + 1`. Reading stops cleanly at the first frame that is short, has a
//! length of 0 or over the owner's limit (checked before allocating), fails its CRC, or does not
//! carry the next LSN: after a crash such a tail is normal (a torn write, or stale bytes behind a
//! reset) and everything before it is intact. A bad *header* is an error, never silently
//! ignored.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The first 8 bytes of every op log.
pub const MAGIC: [u8; 8] = *b"DEFSOPLG";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: u64 = 48;
/// Bytes of a frame before its payload: length, CRC32, LSN.
pub const FRAME_HEAD: usize = 16;

/// One record read back from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its log sequence number.
    pub lsn: u64,
    /// The owner's bytes.
    pub payload: Vec<u8>,
}

/// How reading a log ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// At the end of the file, on a frame boundary.
    Clean,
    /// At a frame that was torn, corrupt or stale (normal after a crash); the bytes from
    /// `offset` on were ignored.
    Torn {
        /// Where the ignored bytes start.
        offset: u64,
        /// Why the frame there was refused.
        reason: String,
    },
}

/// What [`OpLog::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The LSN the last checkpoint covered: records start at `base_lsn + 1`.
    pub base_lsn: u64,
    /// Whether the log was written during the current boot of the OS (so it can only have
    /// missed a process crash, never an OS crash or power loss). False when either boot id is
    /// unknown.
    pub same_boot: bool,
    /// The valid records, in LSN order, consecutive from `base_lsn + 1`.
    pub records: Vec<LogRecord>,
    /// How reading ended.
    pub tail: Tail,
}

/// An open op log. Not synchronised: the owner keeps it behind its own lock, so that records
/// are appended in LSN order.
#[derive(Debug)]
pub struct OpLog {
    file: File,
    path: PathBuf,
    kind: [u8; 4],
    max_payload: u32,
    /// End of the valid records: the next frame goes here.
    len: u64,
    /// LSN of the last valid record (the base when there is none).
    last_lsn: u64,
    /// Reused frame buffer.
    buf: Vec<u8>,
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        what: "op log",
        reason: format!("{}: {reason}", path.display()),
    }
}

/// The OS boot id (`/proc/sys/kernel/random/boot_id`) as 16 bytes; all zeros when unknown.
pub fn boot_id() -> [u8; 16] {
    let mut out = [0u8; 16];
    let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
        return out;
    };
    let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    if hex.len() != 32 {
        return [0; 16];
    }
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        out[i] = digit(pair[0]) << 4 | digit(pair[1]);
    }
    out
}

fn frame_crc(len: u32, lsn: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&lsn.to_le_bytes());
    h.update(payload);
    h.finalize()
}

pub(crate) fn header(kind: [u8; 4], boot: [u8; 16], base_lsn: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&kind);
    h[16..32].copy_from_slice(&boot);
    h[32..40].copy_from_slice(&base_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[..40]);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    h
}

impl OpLog {
    /// Opens the log at `path` for an owner of `kind` (4 bytes naming the owner, so that one
    /// owner never reads another's log), creating it (empty, base 0) if missing, and reads its
    /// valid records. The log is then positioned after them; owners normally replay them, write
    /// a checkpoint and [`reset`](Self::reset).
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Corrupt`] for a header that is short, has another magic, kind or
    /// a newer version, or fails its CRC (an empty file counts as a new log).
    pub fn open(path: &Path, kind: [u8; 4], max_payload: u32) -> Result<(OpLog, Recovered)> {
        let exists = match std::fs::metadata(path) {
            Ok(m) => m.len() > 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(path, e)),
        };
        if !exists {
            create_atomically(path, kind)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 16, &file);
        let mut head = [0u8; HEADER_LEN as usize];
        if read_full(&mut reader, &mut head).map_err(|e| Error::io(path, e))? != head.len() {
            return Err(corrupt(path, "header truncated"));
        }
        if head[..8] != MAGIC {
            return Err(corrupt(path, "not an op log (bad magic)"));
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if version != VERSION {
            return Err(corrupt(
                path,
                format!("version {version} (this build reads {VERSION}; upgrade DeFS)"),
            ));
        }
        let stored_crc = u32::from_le_bytes([head[40], head[41], head[42], head[43]]);
        if crc32fast::hash(&head[..40]) != stored_crc {
            return Err(corrupt(path, "header CRC mismatch"));
        }
        if head[12..16] != kind {
            return Err(corrupt(
                path,
                format!(
                    "belongs to {:?}, not {:?}",
                    String::from_utf8_lossy(&head[12..16]),
                    String::from_utf8_lossy(&kind)
                ),
            ));
        }
        let mut boot = [0u8; 16];
        boot.copy_from_slice(&head[16..32]);
        let mut base = [0u8; 8];
        base.copy_from_slice(&head[32..40]);
        let base_lsn = u64::from_le_bytes(base);
        let now_boot = boot_id();
        let same_boot = boot != [0; 16] && boot == now_boot;

        let mut records = Vec::new();
        let mut offset = HEADER_LEN;
        let mut last_lsn = base_lsn;
        let tail = loop {
            let mut fh = [0u8; FRAME_HEAD];
            match read_full(&mut reader, &mut fh).map_err(|e| Error::io(path, e))? {
                FRAME_HEAD => {}
                0 => break Tail::Clean,
                _ => {
                    break Tail::Torn {
                        offset,
                        reason: "frame header cut short".into(),
                    };
                }
            }
            let len = u32::from_le_bytes([fh[0], fh[1], fh[2], fh[3]]);
            let crc = u32::from_le_bytes([fh[4], fh[5], fh[6], fh[7]]);
            let mut lsn_bytes = [0u8; 8];
            lsn_bytes.copy_from_slice(&fh[8..16]);
            let lsn = u64::from_le_bytes(lsn_bytes);
            if len == 0 || len > max_payload {
                break Tail::Torn {
                    offset,
                    reason: format!("frame length {len} (limit {max_payload})"),
                };
            }
            if Some(lsn) != last_lsn.checked_add(1) {
                break Tail::Torn {
                    offset,
                    reason: format!("LSN {lsn} where {} was next", last_lsn.wrapping_add(1)),
                };
            }
            let mut payload = vec![0u8; len as usize];
            if read_full(&mut reader, &mut payload).map_err(|e| Error::io(path, e))?
                != payload.len()
            {
                break Tail::Torn {
                    offset,
                    reason: "payload cut short".into(),
                };
            }
            if frame_crc(len, lsn, &payload) != crc {
                break Tail::Torn {
                    offset,
                    reason: "CRC mismatch".into(),
                };
            }
            offset += FRAME_HEAD as u64 + u64::from(len);
            last_lsn = lsn;
            records.push(LogRecord { lsn, payload });
        };
        drop(reader);
        let log = OpLog {
            file,
            path: path.to_path_buf(),
            kind,
            max_payload,
            len: offset,
            last_lsn,
            buf: Vec::new(),
        };
        Ok((
            log,
            Recovered {
                base_lsn,
                same_boot,
                records,
                tail,
            },
        ))
    }

    /// Appends the record `last_lsn() + 1` with one `pwrite(2)` and no fsync, and returns its
    /// LSN. On an error nothing counts as appended (the next record overwrites whatever part
    /// was written).
    ///
    /// # Errors
    /// [`Error::TooLarge`] for an empty or over-long payload (nothing written); [`Error::Io`].
    pub fn append(&mut self, payload: &[u8]) -> Result<u64> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l > 0 && l <= self.max_payload)
            .ok_or(Error::TooLarge {
                what: "op log record",
                size: payload.len() as u64,
                limit: u64::from(self.max_payload),
            })?;
        let lsn = self
            .last_lsn
            .checked_add(1)
            .ok_or_else(|| corrupt(&self.path, "log sequence numbers exhausted"))?;
        self.buf.clear();
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf
            .extend_from_slice(&frame_crc(len, lsn, payload).to_le_bytes());
        self.buf.extend_from_slice(&lsn.to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.file
            .write_all_at(&self.buf, self.len)
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += self.buf.len() as u64;
        self.last_lsn = lsn;
        Ok(lsn)
    }

    /// Takes back the last appended record (its owner's commit failed): the file is cut
    /// before it. `end` and `lsn` are [`len`](Self::len) and [`last_lsn`](Self::last_lsn) as
    /// they were before the append.
    ///
    /// # Errors
    /// [`Error::Io`] (the in-memory position is rolled back regardless, so the next append
    /// overwrites the record).
    pub fn rollback(&mut self, end: u64, lsn: u64) -> Result<()> {
        self.len = end;
        self.last_lsn = lsn;
        self.file.set_len(end).map_err(|e| Error::io(&self.path, e))
    }

    /// fsyncs the log (data only): every appended record survives power loss.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Drops every record: the owner has made a durable checkpoint covering LSNs up to
    /// `base_lsn`, and the next record will be `base_lsn + 1`. Not fsync'd: if the reset is
    /// lost in a crash, the old records carry LSNs ≤ the checkpoint, which owners skip.
    ///
    /// # Errors
    /// [`Error::Io`]; the log must then not be appended to until a reset succeeds.
    pub fn reset(&mut self, base_lsn: u64) -> Result<()> {
        // Cut first: a crash between the two steps leaves either the old header over no
        // records or the new header over nothing — both empty logs.
        self.file
            .set_len(HEADER_LEN)
            .map_err(|e| Error::io(&self.path, e))?;
        self.file
            .write_all_at(&header(self.kind, boot_id(), base_lsn), 0)
            .map_err(|e| Error::io(&self.path, e))?;
        self.len = HEADER_LEN;
        self.last_lsn = base_lsn;
        Ok(())
    }

    /// Bytes of valid log (header included).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// LSN of the last record (the base when there is none).
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes a new empty log under a temporary name and renames it into place, so a crash never
/// leaves a log with a half-written header.
fn create_atomically(path: &Path, kind: [u8; 4]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all_at(&header(kind, boot_id(), 0), 0)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent() {
        crate::fsutil::fsync_dir(dir)?;
    }
    Ok(())
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests;
