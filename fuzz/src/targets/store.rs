//! Targets for what the network and the disk hand back: manifests, shards, pack files, root
//! records, namespace snapshots and segments.

use std::sync::{Mutex, OnceLock};

use defs_core::manifest::Manifest;
use defs_core::pipeline::decode::{decode_segment, decrypt_shard};
use defs_core::root_record::{RootBody, RootRecord};
use defs_core::shard_store::pack::{self, ALIGN, HEADER_LEN};
use defs_core::snapshot::segment::{SegmentHead, apply_chain, check_segment, trailer_of};
use defs_core::{MetaDb, SignDomain};

use super::{PER_BYTE, SLACK, must, sealed_or_raw, verdict};
use crate::alloc::bounded;
use crate::{Verdict, fixtures, scratch};

/// A manifest, as a plain body (any version: v1 dense, v2 pack directory, v3 extents) and as a
/// sealed envelope opened with the fixture owner's wrap key. An accepted body re-encodes to
/// exactly its bytes (or, written in an earlier body version, to the same manifest),
/// `encoded_len` tells that length, and a sealed one re-seals and re-opens to the same manifest.
pub fn manifest(data: &[u8]) -> Verdict {
    let body = bounded("manifest body", data.len(), PER_BYTE, SLACK, || {
        Manifest::decode_body(data)
    });
    if let Ok(m) = &body {
        let bytes = must("a decoded manifest does not encode", m.encode_body());
        assert_eq!(
            m.encoded_len(),
            bytes.len(),
            "encoded_len is not the body's length"
        );
        // A later body version can say all an earlier one can (a v3 body without extents is a
        // v1 manifest), and the encoder writes the earliest that fits: the bytes are the input's
        // when the versions agree, the value always.
        if data.get(4..6) == Some(&m.body_version().to_le_bytes()[..]) {
            assert_eq!(bytes, data, "manifest body round trip changed the bytes");
        } else {
            let again = Manifest::decode_body(&bytes);
            assert_eq!(
                again.ok().as_ref(),
                Some(m),
                "manifest body round trip changed it"
            );
        }
    }
    let wrap = fixtures::wrap_key();
    let sealed = bounded("sealed manifest", data.len(), PER_BYTE, SLACK, || {
        Manifest::open(data, &wrap)
    });
    if let Ok((m, key)) = &sealed {
        let again = m
            .seal(key, &wrap)
            .and_then(|s| Manifest::open(&s.bytes, &wrap));
        assert_eq!(
            again.ok().map(|(m, _)| m).as_ref(),
            Some(m),
            "re-sealed manifest differs"
        );
    }
    if body.is_ok() || sealed.is_ok() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

/// Shard verification on the read path. The input is `segment u8 ‖ index u8 ‖ missing u8 ‖
/// bytes`: in segment `segment` (mod the count) of the fixture file, shard `index` (mod the
/// shard count) is replaced by `bytes` and the shards whose bit is set in `missing` are left
/// out. `decrypt_shard` accepts `bytes` only when they are the stored shard itself, and
/// `decode_segment` returns the segment's true bytes or an error, never anything else.
pub fn shard_verify(data: &[u8]) -> Verdict {
    if data.len() < 3 {
        return Verdict::Refused;
    }
    let (manifest, segments, plain) = fixtures::encoded_file();
    let key = fixtures::file_key();
    let seg = &segments[usize::from(data[0]) % segments.len()];
    let index = usize::from(data[1]) % seg.shards.len();
    let bytes = &data[3..];
    let original = &seg.shards[index].bytes;
    let one = bounded("shard", bytes.len(), 2, SLACK, || {
        decrypt_shard(manifest, &key, seg.index, index as u16, bytes.to_vec())
    });
    assert_eq!(
        one.is_ok(),
        bytes == original.as_slice(),
        "a shard other than the stored one verified, or the stored one failed: {one:?}"
    );
    let shards = seg
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if data[2] & (1 << i) != 0 {
                None
            } else if i == index {
                Some(bytes.to_vec())
            } else {
                Some(s.bytes.clone())
            }
        })
        .collect();
    let whole = decode_segment(manifest, &key, seg.index, shards);
    let seg_size = manifest.geometry.segment_size() as usize;
    let start = seg.index as usize * seg_size;
    let want = &plain[start..start + seg.len as usize];
    match &whole {
        Ok(got) => assert_eq!(
            got, want,
            "a segment decoded to bytes that were never written"
        ),
        Err(defs_core::Error::TooFewShards { .. }) => {}
        Err(e) => panic!("decoding a segment with bad shards failed otherwise: {e}"),
    }
    verdict(&whole)
}

/// A pack file (`DIR/shards/packs/N.pack`) as the store's tools read it without the index:
/// every record found starts on an [`ALIGN`] boundary, after the previous one, and lies whole
/// inside the file.
pub fn shard_pack(data: &[u8]) -> Verdict {
    let path = scratch::write("fuzz.pack", data);
    let r = bounded("pack records", data.len(), PER_BYTE, SLACK, || {
        pack::records(&path)
    });
    let size = data.len() as u64;
    let mut next = 0u64;
    if let Ok(records) = &r {
        for (offset, head) in records {
            assert!(
                offset % ALIGN == 0 && *offset >= next,
                "record at {offset} out of place"
            );
            let end = offset
                .checked_add(HEADER_LEN)
                .and_then(|e| e.checked_add(head.len));
            assert!(
                end.is_some_and(|e| e <= size),
                "record at {offset} runs past the file"
            );
            next = offset + HEADER_LEN + head.len;
        }
    }
    verdict(&r)
}

/// A root record (from any storage peer or the DHT), and a root record body. The first byte
/// chooses whether the record is taken as it is or signed by the fixture owner first (so the
/// checks after the signature are reached). A record that verifies keeps its bytes, and its
/// body, opened with the fixture owner's key, re-encodes and decodes to the same body; a body
/// that decodes re-encodes to exactly its bytes.
pub fn root_record(data: &[u8]) -> Verdict {
    let Some(bytes) = sealed_or_raw(data, |rest| {
        fixtures::identity()
            .sign(SignDomain::RootRecord, rest)
            .0
            .to_vec()
    }) else {
        return Verdict::Refused;
    };
    let record = bounded("root record", bytes.len(), PER_BYTE, SLACK, || {
        RootRecord::verify(&bytes, 0)
    });
    if let Ok(rec) = &record {
        assert_eq!(rec.as_bytes(), bytes, "a verified record is not its bytes");
        if let Ok(body) = rec.open_body(fixtures::identity()) {
            let again = body.encode().and_then(|b| RootBody::decode(&b));
            assert_eq!(again.ok().as_ref(), Some(&body), "opened body round trip");
        }
    }
    let body = bounded("root body", data.len(), PER_BYTE, SLACK, || {
        RootBody::decode(data)
    });
    if let Ok(b) = &body {
        let bytes = must("a decoded root body does not encode", b.encode());
        assert_eq!(bytes, data, "root body round trip changed the bytes");
    }
    if record.is_ok() || body.is_ok() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

/// The scratch metadata DB snapshots are restored into (one per process).
fn scratch_db() -> &'static Mutex<MetaDb> {
    static DB: OnceLock<Mutex<MetaDb>> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = scratch::path("restore-db");
        let _ = std::fs::remove_dir_all(&dir);
        let opened = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| MetaDb::open_with(&dir, None).map_err(|e| e.to_string()));
        match opened {
            Ok(db) => Mutex::new(db),
            Err(e) => panic!("cannot open the scratch metadata DB: {e}"),
        }
    })
}

/// Restores `bytes` into the scratch DB; when it is accepted, the snapshot written back from
/// the DB restores again and writes the same bytes (restore and write are inverse).
fn restore_checked(bytes: &[u8]) -> Verdict {
    let db = match scratch_db().lock() {
        Ok(db) => db,
        Err(poisoned) => poisoned.into_inner(),
    };
    // redb's pages and caches make the bound looser than a pure decoder's, but a length field
    // taken on trust would still exceed it by orders of magnitude.
    let r = bounded("snapshot restore", bytes.len(), PER_BYTE, 4 << 20, || {
        db.restore_snapshot(bytes)
    });
    if r.is_ok() {
        let mut once = Vec::new();
        must(
            "a restored namespace cannot be written",
            db.write_snapshot(&mut once),
        );
        must(
            "a snapshot written from a restored namespace does not restore",
            db.restore_snapshot(once.as_slice()),
        );
        let mut twice = Vec::new();
        must(
            "a restored namespace cannot be written",
            db.write_snapshot(&mut twice),
        );
        assert!(once == twice, "restore → write is not stable");
    }
    verdict(&r)
}

/// BLAKE3 of `bytes`: the trailer that ends snapshots and segments.
fn trailer(bytes: &[u8]) -> Vec<u8> {
    blake3::hash(bytes).as_bytes().to_vec()
}

/// A namespace snapshot (published by the owner, fetched from the network, or the base of a
/// recovery) restored into a scratch metadata DB. The first byte chooses whether the stream is
/// taken as it is or given its true trailer first (so the checks behind the hash are reached).
pub fn snapshot(data: &[u8]) -> Verdict {
    match sealed_or_raw(data, trailer) {
        Some(stream) => restore_checked(&stream),
        None => Verdict::Refused,
    }
}

/// A namespace segment applied as the first of a chain to the fixture snapshot (the first byte:
/// taken as it is, or given its true trailer first). When the chain applies, the publisher's own
/// check of the segment agrees, and the result restores like any snapshot.
pub fn snapshot_segment(data: &[u8]) -> Verdict {
    let Some(data) = sealed_or_raw(data, trailer) else {
        return Verdict::Refused;
    };
    let data = data.as_slice();
    let base = fixtures::base_snapshot();
    let Some(trailer) = trailer_of(base) else {
        panic!("the fixture snapshot has no trailer");
    };
    let mut out = Vec::new();
    let segments = [data.to_vec()];
    let r = bounded(
        "segment",
        data.len(),
        PER_BYTE,
        SLACK + base.len() * 4,
        || apply_chain(base.as_slice(), &trailer, &segments, &mut out),
    );
    if let Ok(stats) = &r {
        let head = SegmentHead {
            base: trailer,
            index: 1,
            prev: trailer,
            next_ino: 0,
        };
        must(
            "a segment that applies fails the publisher's check",
            check_segment(base.as_slice(), data, &head, &stats.trailer),
        );
        restore_checked(&out);
    }
    verdict(&r)
}
