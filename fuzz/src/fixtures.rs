//! The fixed things targets check their inputs against, made the same way in every process so
//! that a seed written by one run means the same in the next: an owner identity, a file
//! encoded under a fixed key, and a small namespace's snapshot.

use std::sync::OnceLock;

use defs_core::namespace::{NewInode, Timestamp, XattrMode};
use defs_core::pipeline::{EncodedSegment, Encoder, FileKey, Geometry, WrapKey};
use defs_core::types::{InodeNo, VersionId};
use defs_core::{Identity, Manifest, MetaDb};

use crate::scratch;
use crate::targets::must;

/// The owner of every record and key file the targets make and open.
pub(crate) fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| must("identity", Identity::from_secret_bytes(&[0x42; 32])))
}

/// The wrap key sealed manifests are opened with.
pub(crate) fn wrap_key() -> WrapKey {
    identity().manifest_wrap_key()
}

/// The file key of [`encoded_file`].
pub(crate) fn file_key() -> FileKey {
    FileKey::from_bytes([7; 32])
}

/// A 700-byte file under [`file_key`] as Reed-Solomon 2+1 with 64-byte shards: six segments of
/// up to 128 bytes, three shards each. Returns its manifest, encoded segments and plain bytes.
pub(crate) fn encoded_file() -> &'static (Manifest, Vec<EncodedSegment>, Vec<u8>) {
    static FILE: OnceLock<(Manifest, Vec<EncodedSegment>, Vec<u8>)> = OnceLock::new();
    FILE.get_or_init(|| {
        let plain: Vec<u8> = (0..700u32).map(|i| (i * 7 % 251) as u8).collect();
        let geometry = must("geometry", Geometry::reed_solomon(2, 1, 64));
        let key = file_key();
        let mut segments = Vec::new();
        let manifest = must(
            "encoded file",
            Encoder::new(geometry, &key, VersionId([3; 16])).encode(plain.as_slice(), |s| {
                segments.push(s);
                Ok(())
            }),
        );
        (manifest, segments, plain)
    })
}

/// A small namespace (directories, files, a hard link, a symlink, xattrs) made with fixed
/// times, and its snapshot: the base the segment target applies its inputs to.
pub(crate) fn base_snapshot() -> &'static Vec<u8> {
    static SNAP: OnceLock<Vec<u8>> = OnceLock::new();
    SNAP.get_or_init(|| {
        let dir = scratch::path("base-db");
        let _ = std::fs::remove_dir_all(&dir);
        must("base dir", std::fs::create_dir_all(&dir));
        let db = must("base db", MetaDb::open_with(&dir, None));
        populate(&db, 0);
        let mut out = Vec::new();
        must("base snapshot", db.write_snapshot(&mut out));
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
        out
    })
}

/// Makes a few entries in `db`, the names and times varied by `round`.
pub(crate) fn populate(db: &MetaDb, round: u32) {
    let t = |n: i64| Timestamp {
        secs: 1_700_000_000 + n + i64::from(round) * 100,
        nanos: 5,
    };
    let init = NewInode {
        perm: 0o755,
        uid: 1000,
        gid: 1000,
    };
    let dir = must(
        "mkdir",
        db.mkdir(InodeNo::ROOT, format!("dir{round}").as_bytes(), &init, t(1)),
    );
    let (file, _) = must("create", db.create(dir.ino, b"file", &init, true, t(2)));
    must(
        "link",
        db.link(
            file.ino,
            InodeNo::ROOT,
            format!("link{round}").as_bytes(),
            t(3),
        ),
    );
    must(
        "symlink",
        db.symlink(dir.ino, b"sym", b"../elsewhere", &init, t(4)),
    );
    must(
        "xattr",
        db.set_xattr(file.ino, b"user.note", b"seed value", XattrMode::Any, t(5)),
    );
}
