//! Where a put reads its bytes ([`Source`]: memory or a file, with its data ranges) and how a
//! segment's holes are found ([`find_extents`], [`read_segment`]).

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{HOLE_BLOCK, all_zero};
use crate::manifest::Extent;

/// Where a put reads its bytes.
pub trait Source: Send + Sync + 'static {
    /// Fills `buf` with the bytes at `offset`.
    ///
    /// # Errors
    /// When the bytes cannot be read or the source is shorter than `offset + buf.len()`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The parts of `offset..offset + len` that may hold data (sorted, inside it); everything
    /// else is known to read as zeros (holes). The default: all of it.
    ///
    /// # Errors
    /// When the layout cannot be read.
    fn data_ranges(&self, offset: u64, len: u64) -> Result<Vec<Range<u64>>> {
        Ok(std::iter::once(offset..offset + len).collect())
    }
}

/// The data extents of a segment buffer `data` whose bytes outside `ranges` (segment offsets)
/// are known zeros: runs of [`HOLE_BLOCK`]s holding a non-zero byte, at most
/// [`MAX_EXTENTS`](crate::manifest::MAX_EXTENTS) (the closest runs are merged). `None` when the
/// whole segment is one run (dense: stored as before holes existed).
pub(super) fn find_extents(data: &[u8], ranges: &[Range<u64>]) -> Option<Vec<Extent>> {
    let len = data.len();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for r in ranges {
        let (a, b) = (r.start as usize, (r.end as usize).min(len));
        // Whole blocks of the segment, so neighbouring ranges meet on block edges.
        let mut at = a / HOLE_BLOCK * HOLE_BLOCK;
        while at < b {
            let end = (at + HOLE_BLOCK).min(len);
            let block = &data[at.max(a)..end.min(b)];
            if !all_zero(block) {
                match runs.last_mut() {
                    Some(last) if last.1 >= at => last.1 = last.1.max(end),
                    _ => runs.push((at, end)),
                }
            }
            at = end;
        }
    }
    // Too many runs: close the smallest gaps first.
    let mut gap = HOLE_BLOCK;
    while runs.len() > crate::manifest::MAX_EXTENTS {
        gap *= 2;
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(runs.len());
        for r in runs {
            match merged.last_mut() {
                Some(last) if r.0 - last.1 < gap => last.1 = r.1,
                _ => merged.push(r),
            }
        }
        runs = merged;
    }
    if runs == [(0, len)] {
        return None;
    }
    Some(
        runs.into_iter()
            // Segments are at most 256 MiB: offsets fit in u32.
            .map(|(a, b)| Extent {
                start: a as u32,
                len: (b - a) as u32,
            })
            .collect(),
    )
}

/// Bytes in memory as a [`Source`] (a pack assembled from small files' cached bytes).
#[derive(Debug, Clone, Default)]
pub struct MemorySource(pub Vec<u8>);

impl Source for MemorySource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| {
                Error::io("bytes in memory", std::io::ErrorKind::UnexpectedEof.into())
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A file on disk as a [`Source`].
#[derive(Debug)]
pub struct FileSource {
    file: File,
    path: PathBuf,
}

impl FileSource {
    /// Opens `path` for reading.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be opened.
    pub fn open(path: &Path) -> Result<FileSource> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(FileSource {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The file's current length.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn size(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len())
    }
}

impl Source for FileSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(e.kind(), "the file shrank while it was being stored")
            } else {
                e
            };
            Error::io(&self.path, e)
        })
    }

    fn data_ranges(&self, offset: u64, len: u64) -> Result<Vec<Range<u64>>> {
        crate::fsutil::data_runs(&self.file, offset, offset.saturating_add(len))
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads segment `offset..offset + len` of `source` into `data` and finds its data extents
/// ([`find_extents`]): only the source's data ranges are read, and when the segment has holes
/// its data bytes are moved to the front of `data`, in order (the stored bytes). Returns the
/// extents (`None`: dense, `data` is the segment).
pub(super) fn read_segment(
    source: &dyn Source,
    offset: u64,
    len: usize,
    data: &mut Vec<u8>,
) -> Result<Option<Vec<Extent>>> {
    let end = offset + len as u64;
    // Clipped to the segment and sorted, whatever the source answered.
    let mut ranges: Vec<Range<u64>> = source
        .data_ranges(offset, len as u64)?
        .into_iter()
        .filter(|r| r.start < end && r.end > offset && r.start < r.end)
        .map(|r| r.start.max(offset) - offset..r.end.min(end) - offset)
        .collect();
    ranges.sort_by_key(|r| r.start);
    // The buffer is reused: zeroed only in the holes between ranges and where it grows.
    data.resize(len, 0);
    let mut at = 0;
    for r in &ranges {
        let (a, b) = (r.start as usize, r.end as usize);
        data[at.min(a)..a].fill(0);
        source.read_at(offset + r.start, &mut data[a..b])?;
        at = at.max(b);
    }
    data[at.min(len)..].fill(0);
    let extents = find_extents(data, &ranges);
    if let Some(list) = &extents {
        // Stored offsets never pass segment offsets (extents are sorted): moving each run
        // forward never overwrites a run not yet moved.
        let mut to = 0;
        for e in list {
            let (a, n) = (e.start as usize, e.len as usize);
            data.copy_within(a..a + n, to);
            to += n;
        }
        data.truncate(to);
    }
    Ok(extents)
}
