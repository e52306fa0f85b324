//! Both ends of a share's view: the owner cuts the subtree's view ([`MetaDb::write_view`]),
//! gives every packed member in it a copy of its own (a pack's key would open its neighbours
//! too), and stores the view as an ordinary object with a fresh random key ([`store_view`]);
//! the recipient fetches the view a record names, checks its length and trailer, and restores
//! it into a DB of its own ([`open_view`]). File contents stay where they are: the view names
//! them with their own file keys, which open exactly those files' manifests and shards.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::record::ShareBody;
use crate::error::{Error, Result};
use crate::meta::MetaDb;
use crate::namespace::Content;
use crate::object::{MemorySource, Objects};
use crate::pipeline::FileKey;
use crate::types::{FileId, InodeNo};

/// The largest view a recipient fetches: 256 MiB (about a million entries).
pub const MAX_VIEW_LEN: u64 = 256 << 20;

/// Copies made for a share's view: (pack, offset, len) → the member's own object and key.
pub type Copies = BTreeMap<(FileId, u64, u64), (FileId, [u8; 32])>;

/// Stores the view of the subtree below `subtree` and returns the body a record names
/// (`root_seq` is the caller's: the owner's published seq). Packed members get a copy of
/// their own the first time (`copies` remembers them across calls).
///
/// # Errors
/// `NotADirectory`/`NotFound` for `subtree`; the reads and puts' errors.
///
/// # Cancel safety
/// Dropping the future abandons the put; copies made so far are in `copies`.
pub async fn store_view(
    db: &MetaDb,
    objects: &Objects,
    subtree: InodeNo,
    root_seq: u64,
    copies: &mut Copies,
) -> Result<ShareBody> {
    for content in db.view_contents(subtree)? {
        let Content::Stored {
            file,
            key,
            offset,
            len,
        } = content
        else {
            continue;
        };
        if copies.contains_key(&(file, offset, len)) {
            continue;
        }
        let fk = FileKey::from_bytes(key);
        let manifest = objects.manifest(file, &fk).await?;
        if manifest.pack.is_none() {
            continue;
        }
        let bytes = objects
            .read_exact(file, &manifest, &fk, offset, len, "packed file")
            .await?;
        let stored = objects
            .put(Arc::new(MemorySource(bytes)), len, None, &|_| {})
            .await?;
        copies.insert((file, offset, len), (stored.file, *stored.key.as_bytes()));
    }
    let mut plain = Vec::new();
    let stats = db.write_view(subtree, &mut plain, &|c| {
        Ok(match c {
            Content::Stored {
                file, offset, len, ..
            } => match copies.get(&(*file, *offset, *len)) {
                Some((copy, key)) => Content::Stored {
                    file: *copy,
                    key: *key,
                    offset: 0,
                    len: *len,
                },
                None => c.clone(),
            },
            Content::Empty => Content::Empty,
        })
    })?;
    let stored = objects
        .put(Arc::new(MemorySource(plain)), stats.bytes, None, &|_| {})
        .await?;
    Ok(ShareBody {
        subtree: subtree.0,
        view: stored.file,
        view_key: *stored.key.as_bytes(),
        view_len: stats.bytes,
        view_trailer: stats.trailer,
        root_seq,
    })
}

/// Fetches the view `body` names with its key, checks its length and trailer, and restores it
/// into a new DB in `dir` (which must not hold one). Returns the DB.
///
/// # Errors
/// [`Error::Corrupt`] ("share view") for a view of another length or trailer, or one over
/// [`MAX_VIEW_LEN`]; `WrongKey` when the key does not open the view's manifest; the fetch's
/// and the restore's errors (a view that is not a consistent tree).
pub async fn open_view(objects: &Objects, body: &ShareBody, dir: &Path) -> Result<MetaDb> {
    let bad = |reason: String| Error::Corrupt {
        what: "share view",
        reason,
    };
    if body.view_len > MAX_VIEW_LEN {
        return Err(bad(format!(
            "{} bytes (limit {MAX_VIEW_LEN})",
            body.view_len
        )));
    }
    let key = FileKey::from_bytes(body.view_key);
    let manifest = objects.manifest(body.view, &key).await?;
    if manifest.size != body.view_len {
        return Err(bad(format!(
            "{} is {} bytes, the record says {}",
            body.view, manifest.size, body.view_len
        )));
    }
    let plain = objects
        .read_all(body.view, &manifest, &key, "share view")
        .await?;
    if plain.len() < 32 || plain[plain.len() - 32..] != body.view_trailer {
        return Err(bad(format!(
            "{} does not end with the trailer the record names",
            body.view
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let db = MetaDb::open_with(dir, None)?;
    db.restore_snapshot(plain.as_slice())?;
    Ok(db)
}
