//! Unit tests of `shard_store`.

use std::collections::HashSet;

use super::counters::FILLING;
use super::entry::{ENTRY_FIXED_V1, ENTRY_VERSION_FILES};
use super::*;
use std::io::Write;

const BIG: Quotas = Quotas {
    capacity: 1 << 30,
    per_owner: 0,
};

fn shard(seed: u32, len: usize) -> (ShardId, Vec<u8>) {
    let mut bytes = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    (ShardId(*blake3::hash(&bytes).as_bytes()), bytes)
}

const ALICE: NodeId = NodeId([1; 32]);
const BOB: NodeId = NodeId([2; 32]);

/// The pack file and offset of `id`'s record.
fn record_of(store: &ShardStore, id: &ShardId) -> (PathBuf, u64) {
    let at = store.entry(id).unwrap().unwrap().at;
    (store.pack_path(at.pack), at.offset)
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

/// Every record found by walking the packs of the store in `dir`.
fn all_records(dir: &Path) -> Vec<(u32, u64, ShardId)> {
    let mut out = Vec::new();
    for (n, path) in pack::pack_files(&dir.join("packs")).unwrap() {
        for (offset, head) in pack::records(&path).unwrap() {
            out.push((n, offset, head.id));
        }
    }
    out
}

#[test]
fn put_get_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    let (id, bytes) = shard(1, 5000);
    assert_eq!(store.put(id, ALICE, &bytes).unwrap(), PutOutcome::Stored);
    assert_eq!(store.get(&id).unwrap(), bytes);
    assert_eq!(store.get_range(&id, 100, 50).unwrap(), &bytes[100..150]);
    assert_eq!(store.get_range(&id, 4990, 50).unwrap(), &bytes[4990..]);
    assert!(store.get_range(&id, 5001, 1).is_err());
    let meta = store.has(&id).unwrap().unwrap();
    assert_eq!(meta.len, 5000);
    assert_eq!(meta.crc, crc32fast::hash(&bytes));
    assert_eq!(meta.owners, vec![ALICE]);
    assert_eq!(store.usage().used, 5000);
    assert_eq!(
        store.put(id, ALICE, &bytes).unwrap(),
        PutOutcome::AlreadyStored
    );
    assert_eq!(store.owner_usage(&ALICE), 5000);
    let (other, _) = shard(2, 10);
    assert!(matches!(
        store.get(&other),
        Err(Error::ShardNotFound { .. })
    ));
    assert!(store.has(&other).unwrap().is_none());
}

#[test]
fn wrong_hash_is_refused_before_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    let (id, mut bytes) = shard(1, 100);
    bytes[0] ^= 1;
    let err = store.put(id, ALICE, &bytes).unwrap_err();
    assert!(
        matches!(err, Error::HashMismatch { expected, .. } if expected == id),
        "{err}"
    );
    assert_eq!(store.usage().shards, 0);
    assert_eq!(fs::read_dir(dir.path().join("packs")).unwrap().count(), 0);
}

#[test]
fn corrupt_shard_is_refused_on_read_and_reported_by_scrub() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    let (id, bytes) = shard(1, 1000);
    let (good, good_bytes) = shard(2, 1000);
    store.put(good, ALICE, &good_bytes).unwrap();
    store.put(id, ALICE, &bytes).unwrap();
    let (path, offset) = record_of(&store, &id);
    write_at(&path, offset + HEADER_LEN + 500, &[bytes[500] ^ 0x40]);
    let err = store.get(&id).unwrap_err();
    assert!(
        matches!(err, Error::CorruptShard { id: i, .. } if i == id),
        "{err}"
    );
    assert!(err.to_string().contains(&id.to_hex()), "{err}");
    assert!(store.get_range(&id, 0, 10).is_err());
    let report = store.scrub().unwrap();
    assert_eq!(report.corrupt, vec![id]);
    assert!(report.missing.is_empty());
    assert_eq!(report.checked, 2);
    // A header that does not match the index is corrupt too.
    write_at(&path, offset + 8, &[0x55]);
    assert!(matches!(
        store.get(&id),
        Err(Error::CorruptShard {
            reason: "record header does not match the index",
            ..
        })
    ));
    // A pack cut short in the record is missing the shard.
    write_at(&path, offset + 8, &id.0[..1]);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(offset + HEADER_LEN + 999)
        .unwrap();
    assert!(matches!(
        store.get(&id),
        Err(Error::CorruptShard {
            reason: RECORD_MISSING,
            ..
        })
    ));
    assert_eq!(store.scrub().unwrap().missing, vec![id]);
    // A re-put of the right bytes repairs it, in a new record.
    store.put(id, ALICE, &bytes).unwrap();
    assert_eq!(store.get(&id).unwrap(), bytes);
    assert_ne!(record_of(&store, &id).1, offset);
    assert_eq!(store.get(&good).unwrap(), good_bytes);
    assert!(store.scrub().unwrap().is_clean());
    assert_eq!(store.usage().used, 2000);
}

#[test]
fn missing_file_is_reported_by_scrub_and_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (id, bytes) = shard(1, 1000);
    let pack = {
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        store.put(id, ALICE, &bytes).unwrap();
        record_of(&store, &id).0
    };
    fs::remove_file(pack).unwrap();
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    assert_eq!(store.recovery().missing, vec![id]);
    let report = store.scrub().unwrap();
    assert_eq!(report.missing, vec![id]);
    assert!(matches!(
        store.get(&id),
        Err(Error::CorruptShard {
            reason: RECORD_MISSING,
            ..
        })
    ));
    // Still counted (the owner's repair re-places it); a re-put restores it.
    assert_eq!(store.usage().shards, 1);
    store.put(id, ALICE, &bytes).unwrap();
    assert_eq!(store.get(&id).unwrap(), bytes);
}

#[test]
fn a_lost_index_is_refused_and_the_packs_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (id, bytes) = shard(1, 1000);
    {
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        store.put(id, ALICE, &bytes).unwrap();
    }
    let index = dir.path().join("index.redb");
    let before = all_records(dir.path());
    for lose in [
        |p: &Path| fs::remove_file(p).unwrap(),
        |p: &Path| File::create(p).map(drop).unwrap(),
    ] {
        let saved = fs::read(&index).unwrap();
        lose(&index);
        let err = ShardStore::open(dir.path(), BIG).err().unwrap();
        assert!(matches!(err, Error::IndexLost { files: 1, .. }), "{err}");
        assert!(err.to_string().contains("refusing"), "{err}");
        assert!(err.to_string().contains("missing or empty"), "{err}");
        assert_eq!(all_records(dir.path()), before, "the packs are untouched");
        // Once the index is back, the shard reads again.
        fs::write(&index, saved).unwrap();
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        assert_eq!(store.get(&id).unwrap(), bytes);
    }
    // Shards of the old one-file-per-shard layout count as well.
    let legacy = dir.path().join("data").join("ab").join("old-shard");
    fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    fs::write(&legacy, b"an old shard").unwrap();
    fs::rename(dir.path().join("packs"), dir.path().join("packs.kept")).unwrap();
    fs::remove_file(&index).unwrap();
    let err = ShardStore::open(dir.path(), BIG).err().unwrap();
    assert!(matches!(err, Error::IndexLost { files: 1, .. }), "{err}");
    assert_eq!(fs::read(&legacy).unwrap(), b"an old shard");
    fs::rename(dir.path().join("packs.kept"), dir.path().join("packs")).unwrap();
    fs::remove_dir_all(dir.path().join("data")).unwrap();
    // Moving the packs away (the other way out) starts the node empty.
    fs::rename(dir.path().join("packs"), dir.path().join("packs.old")).unwrap();
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    assert_eq!(store.usage().shards, 0);
}

#[test]
fn owner_quota_and_capacity_have_their_own_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(
        dir.path(),
        Quotas {
            capacity: 3000,
            per_owner: 2000,
        },
    )
    .unwrap();
    let (a, ab) = shard(1, 1500);
    let (b, bb) = shard(2, 1000);
    let (c, cb) = shard(3, 1000);
    store.put(a, ALICE, &ab).unwrap();
    let err = store.put(b, ALICE, &bb).unwrap_err();
    assert!(
        matches!(err, Error::QuotaExceeded { owner, used: 1500, quota: 2000 } if owner == ALICE),
        "{err}"
    );
    store.put(b, BOB, &bb).unwrap();
    let err = store.put(c, BOB, &cb).unwrap_err();
    assert!(
        matches!(
            err,
            Error::StoreFull {
                used: 2500,
                capacity: 3000
            }
        ),
        "{err}"
    );
    assert!(store.has(&c).unwrap().is_none());
    // Sharing an existing shard charges the owner but not the capacity.
    assert!(matches!(
        store.put(b, ALICE, &bb),
        Err(Error::QuotaExceeded { .. })
    ));
    assert!(matches!(
        store.put(a, BOB, &ab),
        Err(Error::QuotaExceeded { .. })
    ));
    assert_eq!(store.usage().used, 2500);
}

#[test]
fn shared_shard_lives_until_its_last_owner_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    let (id, bytes) = shard(1, 100);
    store.put(id, ALICE, &bytes).unwrap();
    assert_eq!(store.put(id, BOB, &bytes).unwrap(), PutOutcome::OwnerAdded);
    assert_eq!(store.usage().used, 100);
    assert_eq!(store.owner_usage(&BOB), 100);
    store.delete(&id, ALICE).unwrap();
    assert_eq!(store.get(&id).unwrap(), bytes);
    assert_eq!(store.has(&id).unwrap().unwrap().owners, vec![BOB]);
    let (pack, offset) = record_of(&store, &id);
    store.delete(&id, BOB).unwrap();
    assert!(matches!(store.get(&id), Err(Error::ShardNotFound { .. })));
    // The record's blocks went back to the filesystem.
    assert!(pack::records(&pack).unwrap().is_empty());
    let file = File::open(&pack).unwrap();
    assert!(!has_data(&file, offset, offset + pack::ALIGN).unwrap());
    assert_eq!(store.usage().used, 0);
    assert!(matches!(
        store.delete(&id, BOB),
        Err(Error::ShardNotFound { .. })
    ));
}

#[test]
fn non_owner_delete_is_refused_and_the_shard_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    let (id, bytes) = shard(1, 100);
    store.put(id, ALICE, &bytes).unwrap();
    let err = store.delete(&id, BOB).unwrap_err();
    assert!(
        matches!(err, Error::NotOwner { id: i, .. } if i == id),
        "{err}"
    );
    assert_eq!(store.get(&id).unwrap(), bytes);
    assert_eq!(store.has(&id).unwrap().unwrap().owners, vec![ALICE]);
}

#[test]
fn reopen_keeps_shards_and_counters_and_removes_debris() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_bytes) = shard(1, 700);
    let (b, b_bytes) = shard(2, 5000);
    let (c, c_bytes) = shard(3, 300);
    let (pack, b_at, end) = {
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        for (id, bytes) in [(a, &a_bytes), (b, &b_bytes), (c, &c_bytes)] {
            store.put(id, ALICE, bytes).unwrap();
        }
        let (pack, b_at) = record_of(&store, &b);
        store.delete(&b, ALICE).unwrap();
        (pack, b_at, store.lock().filling[0].end)
    };
    // Debris of interrupted operations: a delete that committed but did not punch (b's
    // record back in place), a put that wrote its record but did not commit (at the end),
    // and a pack nothing in the index points into.
    let head = |id, bytes: &[u8]| RecordHeader {
        id,
        len: bytes.len() as u64,
        crc: crc32fast::hash(bytes),
    };
    let file = OpenOptions::new().write(true).open(&pack).unwrap();
    pack::write_record(&file, b_at, &head(b, &b_bytes), &b_bytes).unwrap();
    let (d, d_bytes) = shard(4, 900);
    pack::write_record(&file, end, &head(d, &d_bytes), &d_bytes).unwrap();
    let stray = dir.path().join("packs").join(pack::pack_name(7));
    fs::write(&stray, b"whatever").unwrap();

    let store = ShardStore::open(dir.path(), BIG).unwrap();
    assert_eq!(
        store.recovery().orphans_removed,
        3,
        "{:?}",
        store.recovery()
    );
    assert!(store.recovery().missing.is_empty());
    assert!(!stray.exists());
    let found: Vec<ShardId> = all_records(dir.path()).iter().map(|r| r.2).collect();
    assert_eq!(found, vec![a, c]);
    assert_eq!(store.get(&a).unwrap(), a_bytes);
    assert_eq!(store.get(&c).unwrap(), c_bytes);
    assert_eq!(
        store.usage(),
        Usage {
            used: 1000,
            capacity: 1 << 30,
            shards: 2
        }
    );
    assert_eq!(store.owner_usage(&ALICE), 1000);
    assert!(store.has(&b).unwrap().is_none());
    assert!(store.has(&d).unwrap().is_none());
    // New records go after the last indexed one.
    store.put(d, ALICE, &d_bytes).unwrap();
    assert_eq!(store.get(&d).unwrap(), d_bytes);
    let (d_pack, _) = record_of(&store, &d);
    assert_eq!(d_pack, pack);
    // A clean reopen finds nothing to do.
    drop(store);
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    assert_eq!(store.recovery(), &Recovery::default());
}

#[test]
fn full_packs_roll_over_and_empty_ones_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 4 * pack::ALIGN;
    let store = ShardStore::open_with(dir.path(), BIG, limit).unwrap();
    let shards: Vec<_> = (0..10).map(|i| shard(i, 3000)).collect();
    for (id, bytes) in &shards {
        store.put(*id, ALICE, bytes).unwrap();
    }
    let packs = || pack::pack_files(&dir.path().join("packs")).unwrap();
    assert_eq!(packs().len(), 3, "four records per pack");
    // Emptying the first pack removes it; the one being filled stays even when empty.
    for (id, _) in &shards[..4] {
        store.delete(id, ALICE).unwrap();
    }
    assert_eq!(packs().iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2]);
    for (id, _) in &shards[8..] {
        store.delete(id, ALICE).unwrap();
    }
    assert_eq!(packs().len(), 2);
    drop(store);
    let store = ShardStore::open_with(dir.path(), BIG, limit).unwrap();
    // The empty pack being filled had no indexed record, so open removed it.
    assert_eq!(store.recovery().orphans_removed, 1);
    for (id, bytes) in &shards[4..8] {
        assert_eq!(&store.get(id).unwrap(), bytes);
    }
    let (id, bytes) = shard(99, 10);
    store.put(id, ALICE, &bytes).unwrap();
    // Pack 1 is full, so the next record starts pack 2 again.
    assert_eq!(record_of(&store, &id).0, store.pack_path(2));
    assert!(store.scrub().unwrap().is_clean());
}

#[test]
fn concurrent_writes_go_to_different_packs() {
    let mut c = Counters {
        limit: PACK_LIMIT,
        ..Counters::default()
    };
    // One writer at a time keeps to one pack.
    for i in 0..3 {
        let (at, new) = c.reserve(100);
        assert_eq!((at.pack, at.offset, new), (0, i * pack::ALIGN, i == 0));
        c.written(at.pack);
    }
    // Writes in flight at once each get a pack of their own, up to FILLING.
    let ats: Vec<Location> = (0..FILLING).map(|_| c.reserve(100).0).collect();
    let packs: HashSet<u32> = ats.iter().map(|a| a.pack).collect();
    assert_eq!(packs.len(), FILLING);
    // Then they share the least busy one.
    c.written(ats[3].pack);
    assert_eq!(c.reserve(100).0.pack, ats[3].pack);
    let (at, new) = c.reserve(100);
    assert!(!new && packs.contains(&at.pack));
    // A pack being filled stays when emptied.
    assert!(!c.release(0));
    // A pack whose file could not be created is given up: the next write starts another.
    let mut c = Counters {
        limit: PACK_LIMIT,
        ..Counters::default()
    };
    let (at, new) = c.reserve(100);
    assert!(new);
    c.abandon(at.pack);
    assert!(c.live.is_empty());
    let (next, new) = c.reserve(100);
    assert!(new && next.pack != at.pack && next.offset == 0);
}

/// One shard of an old-layout store: id, bytes (for the entry), what its file holds (none:
/// no file).
type OldShard<'a> = (ShardId, &'a [u8], Option<&'a [u8]>);

/// The older layout in `dir`: a version-1 entry (owner ALICE, stored at 7) for each
/// `(id, bytes)`, and `data/ab/<id>` holding `file` when it is given.
fn old_layout(dir: &Path, shards: &[OldShard<'_>]) {
    let db = Database::create(dir.join("index.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(INDEX).unwrap();
        for (id, bytes, _) in shards {
            let mut v = vec![ENTRY_VERSION_FILES];
            v.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            v.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
            v.extend_from_slice(&7u64.to_le_bytes());
            v.extend_from_slice(&1u16.to_le_bytes());
            v.extend_from_slice(&ALICE.0);
            table.insert(&id.0, v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
    for (id, _, file) in shards {
        if let Some(file) = file {
            fs::create_dir_all(old_path(dir, id).parent().unwrap()).unwrap();
            fs::write(old_path(dir, id), file).unwrap();
        }
    }
}

fn old_path(dir: &Path, id: &ShardId) -> PathBuf {
    dir.join("data").join(&id.to_hex()[..2]).join(id.to_hex())
}

#[test]
fn a_store_of_one_file_per_shard_moves_into_packs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_bytes) = shard(1, 5000);
    let (b, b_bytes) = shard(2, 100);
    let (c, c_bytes) = shard(3, 100);
    // b's file is lost, c's has the wrong length; and temp debris.
    old_layout(
        dir.path(),
        &[
            (a, &a_bytes, Some(&a_bytes)),
            (b, &b_bytes, None),
            (c, &c_bytes, Some(&c_bytes[..50])),
        ],
    );
    fs::create_dir_all(dir.path().join("tmp")).unwrap();
    fs::write(dir.path().join("tmp/x.1"), b"half").unwrap();

    let store = ShardStore::open(dir.path(), BIG).unwrap();
    assert_eq!(store.recovery().migrated, 1);
    let mut missing = vec![b, c];
    missing.sort_unstable();
    assert_eq!(store.recovery().missing, missing);
    assert!(!dir.path().join("data").exists());
    assert!(!dir.path().join("tmp").exists());
    assert_eq!(store.get(&a).unwrap(), a_bytes);
    let meta = store.has(&a).unwrap().unwrap();
    assert_eq!((meta.stored_at, meta.owners), (7, vec![ALICE]));
    assert_eq!(store.usage().shards, 3);
    assert_eq!(store.scrub().unwrap().missing, missing);
    // Reopening keeps it all and migrates nothing again.
    drop(store);
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    assert_eq!(store.recovery().migrated, 0);
    assert_eq!(store.recovery().missing, missing);
    assert_eq!(store.get(&a).unwrap(), a_bytes);
}

#[test]
fn a_move_into_packs_that_fails_halfway_says_where_and_resumes_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut shards: Vec<(ShardId, Vec<u8>)> = (1..=3).map(|i| shard(i, 5000)).collect();
    // Entries are moved in id order; the last one's file cannot be read (a directory).
    shards.sort_by_key(|s| s.0);
    let (bad, bad_bytes) = shards[2].clone();
    let old: Vec<_> = shards
        .iter()
        .map(|(id, b)| (*id, &b[..], (*id != bad).then_some(&b[..])))
        .collect();
    old_layout(dir.path(), &old);
    fs::create_dir_all(old_path(dir.path(), &bad)).unwrap();

    let err = ShardStore::open(dir.path(), BIG).unwrap_err();
    assert!(
        err.to_string().contains(&bad.to_hex()),
        "the error names the file: {err}"
    );
    // Each shard is a batch of its own here (5000 bytes > MIGRATE_BATCH): the first two
    // are in packs and their old files gone; the third is untouched.
    for (id, _) in &shards[..2] {
        assert!(!old_path(dir.path(), id).exists());
    }
    assert!(old_path(dir.path(), &bad).is_dir());

    fs::remove_dir(old_path(dir.path(), &bad)).unwrap();
    fs::write(old_path(dir.path(), &bad), &bad_bytes).unwrap();
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    assert_eq!(store.recovery().migrated, 1);
    assert!(store.recovery().missing.is_empty());
    assert!(!dir.path().join("data").exists());
    for (id, bytes) in &shards {
        assert_eq!(&store.get(id).unwrap(), bytes);
    }
    assert_eq!(store.usage().shards, 3);
    assert!(store.scrub().unwrap().is_clean());
}

#[test]
fn index_entry_round_trips_and_rejects_garbage() {
    let entry = Entry {
        meta: ShardMeta {
            len: 5,
            crc: 7,
            stored_at: 9,
            owners: vec![ALICE, BOB],
        },
        at: Location {
            pack: 3,
            offset: 8192,
        },
    };
    assert_eq!(Entry::decode(&entry.encode()), Some(entry.clone()));
    let enc = entry.encode();
    for cut in 0..enc.len() {
        assert_eq!(Entry::decode(&enc[..cut]), None);
    }
    let mut bad = enc.clone();
    bad[0] = 3;
    assert_eq!(Entry::decode(&bad), None);
    // A version-1 entry decodes only for the move into packs.
    let mut v1 = enc[..ENTRY_FIXED_V1].to_vec();
    v1[0] = ENTRY_VERSION_FILES;
    v1.extend_from_slice(&ALICE.0);
    v1[21..23].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(Entry::decode(&v1), None);
    let (meta, at) = Entry::decode_any(&v1).unwrap();
    assert_eq!((meta.len, meta.owners, at), (5, vec![ALICE], None));
}

/// The crash test's child role (see `testutil::CrashChild`).
const CRASH_CHILD: &str = "shard_store::tests::crash_child";

/// The child: puts and deletes shards as fast as it can, printing each operation after it
/// returned, until it is killed.
#[test]
fn crash_child() {
    let Some((dir, seed)) = crate::testutil::crash_child_args(CRASH_CHILD) else {
        return;
    };
    let seed = seed as u32;
    // Small packs, so runs also cross pack rollovers and removals.
    let store = ShardStore::open_with(&dir, BIG, 16 * pack::ALIGN).unwrap();
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    // Three writers at once: concurrent puts fill several packs and share them.
    std::thread::scope(|s| {
        for t in 0..3u32 {
            let (store, say) = (&store, &say);
            s.spawn(move || {
                for i in 0..30_000u32 {
                    let n = (seed * 3 + t).wrapping_mul(30_000).wrapping_add(i);
                    let (id, bytes) = shard(n, 1000 + (n as usize % 7) * 3000);
                    store.put(id, ALICE, &bytes).unwrap();
                    say(format!("P {}", id.to_hex()));
                    if i % 3 == 2 {
                        let (old, _) = shard(n - 1, 1000 + ((n - 1) as usize % 7) * 3000);
                        say(format!("d {}", old.to_hex()));
                        store.delete(&old, ALICE).unwrap();
                        say(format!("D {}", old.to_hex()));
                    }
                }
            });
        }
    });
}

#[test]
fn crash_at_random_points_keeps_every_returned_put() {
    use std::collections::HashSet;
    use std::io::BufRead;
    use std::process::Stdio;
    let runs = 50;
    let mut total_puts = 0;
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let mut child =
            crate::testutil::CrashChild::spawn(CRASH_CHILD, dir.path(), run as u64, Stdio::piped());
        let stdout = child.0.stdout.take().unwrap();
        // Kill after a varying number of completed operations, plus a varying delay, so the
        // kill lands at every point of put and delete.
        let ops_before_kill = 1 + (run * 7) % 9;
        let delay_us = (run as u64 * 379) % 3000;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut log = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.starts_with("P ") || line.starts_with("d ") {
                log.push(line);
                if log.len() >= ops_before_kill {
                    break;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(delay_us));
        child.0.kill().unwrap();
        // Everything the child printed before dying returned to it.
        for line in lines {
            let Ok(line) = line else { break };
            if line.starts_with("P ") || line.starts_with("d ") {
                log.push(line);
            }
        }
        child.0.wait().unwrap();
        // Puts that returned, minus deletes that started (a delete that did not return may
        // or may not have happened).
        let mut live = HashSet::new();
        for line in &log {
            let id = ShardId::from_hex(&line[2..]).unwrap();
            if line.starts_with("P ") {
                live.insert(id);
            } else {
                live.remove(&id);
            }
        }
        total_puts += log.iter().filter(|l| l.starts_with("P ")).count();
        let store = ShardStore::open(dir.path(), BIG).unwrap();
        assert!(
            store.recovery().missing.is_empty(),
            "run {run}: {:?}",
            store.recovery()
        );
        for id in &live {
            let bytes = store.get(id).unwrap_or_else(|e| panic!("run {run}: {e}"));
            assert_eq!(ShardId(*blake3::hash(&bytes).as_bytes()), *id);
        }
        let report = store.scrub().unwrap();
        assert!(report.is_clean(), "run {run}: {report:?}");
        // No record in any pack that is not a verified shard indexed at that place.
        for (pack, offset, id) in all_records(dir.path()) {
            let entry = store.entry(&id).unwrap();
            assert_eq!(
                entry.map(|e| e.at),
                Some(Location { pack, offset }),
                "run {run}: unindexed record of {id} at {pack}:{offset}"
            );
            store.get(&id).unwrap();
        }
    }
    assert!(
        total_puts >= runs,
        "the children made progress: {total_puts} puts"
    );
}

#[test]
fn list_walks_every_shard_in_pages_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(dir.path(), BIG).unwrap();
    let mut ids: Vec<ShardId> = (0..10)
        .map(|i| {
            let (id, bytes) = shard(100 + i, 50);
            store.put(id, ALICE, &bytes).unwrap();
            id
        })
        .collect();
    ids.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(after.as_ref(), 3).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        assert!(
            page.iter()
                .all(|(_, m)| m.owners == vec![ALICE] && m.len == 50)
        );
        after = page.last().map(|(id, _)| *id);
        seen.extend(page.into_iter().map(|(id, _)| id));
    }
    assert_eq!(seen, ids);
}
