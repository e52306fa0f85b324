//! Unit tests of `cache_store`.

use redb::{ReadableDatabase, ReadableTable};

use super::entry::{ENTRY_FIXED, RangeSet};
use super::*;

const T: ContentTag = ContentTag([5; 32]);

const BIG: CacheConfig = CacheConfig {
    budget_bytes: 1 << 30,
    reserve_bytes: 0,
};

fn ino(n: u64) -> InodeNo {
    InodeNo(n)
}

#[test]
fn range_set_coalesces_and_reports_gaps() {
    let mut r = RangeSet::default();
    assert_eq!(r.insert(10, 20), 10);
    assert_eq!(r.insert(30, 40), 10);
    assert_eq!(r.missing(0, 50), vec![0..10, 20..30, 40..50]);
    assert_eq!(r.insert(15, 35), 10); // overlaps both, fills the gap
    assert_eq!(r.map.len(), 1);
    assert_eq!(r.missing(0, 50), vec![0..10, 40..50]);
    assert_eq!(r.insert(40, 45), 5); // adjacent: merges
    assert_eq!(r.map.len(), 1);
    assert_eq!(r.missing(12, 44), vec![]);
    assert_eq!(r.insert(12, 44), 0);
    assert_eq!(r.bytes(), 35);
    assert_eq!(r.clip(25), 20);
    assert_eq!(r.missing(0, 30), vec![0..10, 25..30]);
    assert_eq!(r.missing(5, 5), vec![]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// The range set agrees with a bitmap model for any sequence of inserts and clips.
    #[test]
    fn range_set_matches_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..60, proptest::bool::ANY), 1..40)) {
        let mut set = RangeSet::default();
        let mut model = [false; 300];
        for (start, len, clip) in ops {
            if clip {
                set.clip(start);
                for b in model.iter_mut().skip(usize::try_from(start).unwrap()) {
                    *b = false;
                }
            } else {
                let before = model.iter().filter(|b| **b).count() as u64;
                let added = set.insert(start, start + len);
                for b in &mut model[usize::try_from(start).unwrap()..usize::try_from(start + len).unwrap()] {
                    *b = true;
                }
                let after = model.iter().filter(|b| **b).count() as u64;
                proptest::prop_assert_eq!(added, after - before);
            }
            proptest::prop_assert_eq!(set.bytes(), model.iter().filter(|b| **b).count() as u64);
            // Canonical form: sorted, disjoint, non-adjacent, non-empty.
            let mut prev: Option<u64> = None;
            for (s, e) in &set.map {
                proptest::prop_assert!(s < e);
                proptest::prop_assert!(prev.is_none_or(|p| *s > p));
                prev = Some(*e);
            }
            let missing = set.missing(0, 300);
            let mut expect = Vec::new();
            let mut i = 0;
            while i < 300 {
                if model[i] { i += 1; continue; }
                let j = (i..300).find(|j| model[*j]).unwrap_or(300);
                expect.push(i as u64..j as u64);
                i = j;
            }
            proptest::prop_assert_eq!(missing, expect);
        }
    }
}

#[test]
fn a_lost_index_is_refused_and_the_dirty_files_stay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = CacheStore::open(dir.path(), BIG).unwrap();
        cache.write(ino(7), 0, b"not uploaded yet").unwrap();
    }
    let index = dir.path().join("index.redb");
    fs::remove_file(&index).unwrap();
    let err = CacheStore::open(dir.path(), BIG).err().unwrap();
    assert!(matches!(err, Error::IndexLost { files: 1, .. }), "{err}");
    assert!(
        err.to_string().contains("Move the cache directory away"),
        "{err}"
    );
    assert!(!index.exists());
    assert_eq!(
        fs::read(dir.path().join("data/7")).unwrap(),
        b"not uploaded yet"
    );
    // Deleting the whole cache directory is the documented way out.
    fs::remove_dir_all(dir.path()).unwrap();
    CacheStore::open(dir.path(), BIG).unwrap();
}

#[test]
fn sparse_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    cache.write(ino(7), 1_000_000, b"far away").unwrap();
    cache.write(ino(7), 0, b"start").unwrap();
    assert_eq!(cache.read(ino(7), 0, 5).unwrap().unwrap(), b"start");
    assert_eq!(
        cache.read(ino(7), 1_000_000, 8).unwrap().unwrap(),
        b"far away"
    );
    assert_eq!(cache.read(ino(7), 0, 6).unwrap(), None);
    assert_eq!(
        cache.missing(ino(7), 0, 1_000_010),
        vec![5..1_000_000, 1_000_008..1_000_010]
    );
    assert_eq!(cache.read(ino(8), 0, 1).unwrap(), None);
    assert_eq!(cache.missing(ino(8), 3, 4), vec![3..7]);
    // Overlapping writes: the last one wins, the range counts once.
    cache.write(ino(7), 2, b"ARTED").unwrap();
    assert_eq!(cache.read(ino(7), 0, 7).unwrap().unwrap(), b"stARTED");
    assert_eq!(cache.usage().dirty_bytes, 7 + 8);
    // The file is sparse: far less on disk than its length.
    let meta = fs::metadata(cache.path(7)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() * 512 < 100_000, "{} blocks", meta.blocks());
}

#[test]
fn clean_data_is_evicted_lru_first_and_dirty_data_stays() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheStore::open(
        dir.path(),
        CacheConfig {
            budget_bytes: 3000,
            reserve_bytes: 0,
        },
    )
    .unwrap();
    let k = vec![7u8; 1000];
    cache.write(ino(1), 0, &vec![1u8; 5000]).unwrap(); // dirty, over budget: allowed
    assert!(cache.fill(ino(2), T, 0, &k).unwrap());
    assert!(cache.fill(ino(3), T, 0, &k).unwrap());
    assert!(cache.fill(ino(4), T, 0, &k).unwrap());
    // Touch 2 so 3 is the least recently used.
    cache.read(ino(2), 0, 10).unwrap().unwrap();
    assert!(cache.fill(ino(5), T, 0, &k).unwrap());
    assert_eq!(
        cache.read(ino(3), 0, 1).unwrap(),
        None,
        "3 was least recently used"
    );
    assert!(cache.read(ino(2), 0, 1).unwrap().is_some());
    assert!(cache.read(ino(4), 0, 1).unwrap().is_some());
    assert!(cache.read(ino(5), 0, 1).unwrap().is_some());
    assert!(
        cache.read(ino(1), 0, 5000).unwrap().is_some(),
        "dirty never evicted"
    );
    assert!(!cache.path(3).exists());
    let u = cache.usage();
    assert_eq!((u.clean_bytes, u.dirty_bytes), (3000, 5000));
    // Larger than the whole budget: not cached, nothing evicted.
    assert!(!cache.fill(ino(6), T, 0, &vec![0u8; 4000]).unwrap());
    assert_eq!(cache.usage().clean_bytes, 3000);
    // Once clean, the big file is evictable.
    cache.mark_clean(ino(1), ContentTag([9; 32]), cache.changes(ino(1)));
    cache.evict_to_budget().unwrap();
    assert!(cache.usage().clean_bytes <= 3000);
    assert_eq!(
        cache.read(ino(1), 0, 1).unwrap(),
        None,
        "oldest clean entry went first"
    );
}

#[test]
fn a_write_racing_an_uploads_end_keeps_the_entry_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        budget_bytes: 1 << 20,
        reserve_bytes: 0,
    };
    let cache = CacheStore::open(dir.path(), config).unwrap();
    cache.write(ino(1), 0, b"uploaded").unwrap();
    // The upload begins here, then a write lands before it marks the entry clean.
    let changes = cache.changes(ino(1));
    cache.write(ino(1), 8, b" and newer").unwrap();
    cache.mark_clean(ino(1), ContentTag([9; 32]), changes);
    assert!(cache.is_dirty(ino(1)), "the newer bytes stay pinned");
    assert_eq!(cache.usage().dirty_bytes, 18);
    // The next upload covers them.
    cache.mark_clean(ino(1), ContentTag([9; 32]), cache.changes(ino(1)));
    assert!(!cache.is_dirty(ino(1)));
}

/// A fake filesystem of `total` bytes whose only user is the cache's data files.
fn fake_disk(total: u64) -> FreeSpaceProbe {
    Box::new(move |dir: &Path| {
        let mut used = 0;
        for f in fs::read_dir(dir.join("data"))? {
            used += f?.metadata()?.len();
        }
        Ok(total.saturating_sub(used))
    })
}

#[test]
fn free_space_is_read_again_only_when_little_is_left_or_the_reading_is_old() {
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let probe = |total: u64| -> FreeSpaceProbe {
        let reads = std::sync::Arc::clone(&reads);
        let disk = fake_disk(total);
        Box::new(move |dir: &Path| {
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            disk(dir)
        })
    };
    let count = || reads.load(std::sync::atomic::Ordering::Relaxed);
    // Plenty of room: one reading serves a burst of writes.
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheStore::open_with_probe(dir.path(), BIG, probe(1 << 40)).unwrap();
    for i in 0..10 {
        cache.write(ino(i), 0, &[1; 4096]).unwrap();
    }
    assert_eq!(count(), 1);
    std::thread::sleep(FREE_RECHECK);
    cache.write(ino(1), 0, &[2; 4096]).unwrap();
    assert_eq!(count(), 2, "an old reading is taken again");
    // Within FREE_SLACK of the reserve: every write reads the free space.
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheStore::open_with_probe(dir.path(), BIG, probe(FREE_SLACK)).unwrap();
    let before = count();
    for i in 0..10 {
        cache.write(ino(i), 0, &[1; 4096]).unwrap();
    }
    assert_eq!(count() - before, 10);
}

#[test]
fn writes_fail_with_enospc_before_the_reserve_after_evicting_clean_data() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheStore::open_with_probe(
        dir.path(),
        CacheConfig {
            budget_bytes: 1 << 20,
            reserve_bytes: 4_000,
        },
        fake_disk(10_000),
    )
    .unwrap();
    assert!(cache.fill(ino(1), T, 0, &[1; 3000]).unwrap());
    cache.write(ino(2), 0, &[2; 2000]).unwrap();
    // 5000 used, 5000 free, 4000 reserved: 1000 more fit without eviction.
    cache.write(ino(2), 2000, &[2; 1000]).unwrap();
    assert!(cache.read(ino(1), 0, 1).unwrap().is_some());
    // 2500 more fit only once the clean inode 1 is evicted.
    cache.write(ino(2), 3000, &[2; 2500]).unwrap();
    assert_eq!(cache.read(ino(1), 0, 1).unwrap(), None);
    // 5500 used, 4500 free, 4000 reserved: 1000 more is too much, nothing left to evict.
    let err = cache.write(ino(2), 5500, &[2; 1000]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoSpace {
                needed: 1000,
                available: 4500,
                reserve: 4000,
                ..
            }
        ),
        "{err}"
    );
    // Dirty data intact; a fill that does not fit is simply not cached.
    assert_eq!(cache.read(ino(2), 0, 5500).unwrap().unwrap().len(), 5500);
    assert!(!cache.fill(ino(3), T, 0, &[3; 1000]).unwrap());
    // Overwriting already-cached bytes needs no new space.
    cache.write(ino(2), 0, &[9; 1000]).unwrap();
}

#[test]
fn enospc_with_a_reserve_larger_than_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheStore::open(
        dir.path(),
        CacheConfig {
            budget_bytes: 1 << 20,
            reserve_bytes: u64::MAX / 2,
        },
    )
    .unwrap();
    let err = cache.write(ino(1), 0, b"x").unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("reserve"), "{err}");
    assert!(!cache.fill(ino(1), T, 0, b"x").unwrap());
}

#[test]
fn range_index_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = CacheStore::open(dir.path(), BIG).unwrap();
        cache.write(ino(1), 100, b"dirty").unwrap();
        cache.sync(ino(1)).unwrap();
        assert!(cache.fill(ino(2), T, 0, b"clean").unwrap());
        assert!(cache.validate(ino(2), T).unwrap());
        cache.flush().unwrap();
    }
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    assert_eq!(cache.read(ino(1), 100, 5).unwrap().unwrap(), b"dirty");
    assert_eq!(cache.missing(ino(1), 0, 200), vec![0..100, 105..200]);
    assert!(cache.is_dirty(ino(1)));
    assert_eq!(cache.read(ino(2), 0, 5).unwrap().unwrap(), b"clean");
    assert!(!cache.is_dirty(ino(2)));
    let u = cache.usage();
    assert_eq!((u.clean_bytes, u.dirty_bytes, u.inodes), (5, 5, 2));
    // An old content version is discarded; the same one kept; dirty data kept regardless.
    assert!(cache.validate(ino(2), ContentTag([5; 32])).unwrap());
    assert!(cache.validate(ino(1), ContentTag([6; 32])).unwrap());
    assert!(!cache.validate(ino(2), ContentTag([6; 32])).unwrap());
    assert_eq!(cache.read(ino(2), 0, 5).unwrap(), None);
    assert!(!cache.path(2).exists());
}

/// Simulates a crash of the process: the store is dropped without its final flush.
fn crash(cache: CacheStore) {
    let mut cache = cache;
    cache.flush_on_drop = false;
}

#[test]
fn a_process_crash_keeps_unsynced_ranges_and_stray_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = CacheStore::open(dir.path(), BIG).unwrap();
        cache.write(ino(1), 0, b"0123456789").unwrap();
        cache.sync(ino(1)).unwrap();
        cache.write(ino(1), 10, b"abc").unwrap();
        cache.write(ino(3), 0, b"never synced").unwrap();
        cache.write(ino(4), 0, b"gone").unwrap();
        cache.remove(ino(4)).unwrap();
        cache.write(ino(4), 100, b"back").unwrap();
        assert!(cache.fill(ino(5), T, 0, b"clean").unwrap());
        cache.truncate(ino(1), 12).unwrap();
        crash(cache);
    }
    // A file nobody recorded is removed.
    fs::write(dir.path().join("data/99"), b"stray").unwrap();
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    assert_eq!(cache.read(ino(1), 0, 12).unwrap().unwrap(), b"0123456789ab");
    assert_eq!(cache.missing(ino(1), 0, 13), vec![12..13]);
    assert_eq!(cache.read(ino(3), 0, 12).unwrap().unwrap(), b"never synced");
    assert_eq!(cache.missing(ino(4), 0, 104), vec![0..100]);
    assert_eq!(cache.read(ino(5), 0, 5).unwrap().unwrap(), b"clean");
    assert!(cache.is_dirty(ino(1)) && cache.is_dirty(ino(3)) && !cache.is_dirty(ino(5)));
    assert!(!dir.path().join("data/99").exists());
    let u = cache.usage();
    assert_eq!(
        (u.clean_bytes, u.dirty_bytes, u.inodes),
        (5, 12 + 12 + 4, 4)
    );
    // Recovery checkpointed: the log is empty and the index holds everything.
    assert_eq!(
        fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
        crate::oplog::HEADER_LEN
    );
    crash(cache);
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    assert_eq!(cache.read(ino(3), 0, 12).unwrap().unwrap(), b"never synced");
}

#[test]
fn a_log_from_an_earlier_boot_is_ignored_and_unsynced_ranges_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = CacheStore::open(dir.path(), BIG).unwrap();
        cache.write(ino(1), 0, b"0123456789").unwrap();
        cache.sync(ino(1)).unwrap();
        cache.write(ino(1), 10, b"abc").unwrap();
        cache.write(ino(3), 0, b"never synced").unwrap();
        crash(cache);
    }
    as_if_rebooted(dir.path());
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    assert_eq!(cache.read(ino(1), 0, 10).unwrap().unwrap(), b"0123456789");
    assert_eq!(cache.missing(ino(1), 0, 13), vec![10..13]);
    assert_eq!(cache.read(ino(3), 0, 1).unwrap(), None);
    assert!(!dir.path().join("data/3").exists());
}

impl CacheStore {
    /// The inode numbers the index holds rows for.
    fn db_entries(&self) -> Vec<u64> {
        let txn = self.db.begin_read().unwrap();
        let table = txn.open_table(INDEX).unwrap();
        table
            .iter()
            .unwrap()
            .map(|r| r.unwrap().0.value())
            .collect()
    }
}

/// Rewrites the log's header as if the log had been written before a reboot: the next
/// open ignores it, as after a power loss.
fn as_if_rebooted(dir: &Path) {
    let path = dir.join(LOG_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let base = u64::from_le_bytes(bytes[32..40].try_into().unwrap());
    bytes[..crate::oplog::HEADER_LEN as usize]
        .copy_from_slice(&crate::oplog::header(LOG_KIND, [9; 16], base));
    fs::write(&path, &bytes).unwrap();
}

#[test]
fn a_removal_commits_with_the_next_checkpoint_and_a_power_loss_never_shows_old_bytes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = CacheStore::open(dir.path(), BIG).unwrap();
        for i in 1..=3 {
            cache.write(ino(i), 0, b"0123456789").unwrap();
        }
        cache.flush().unwrap();
        for i in 1..=3 {
            cache.remove(ino(i)).unwrap();
        }
        // An inode never cached has no row: nothing to log or wait for.
        let log_len = || fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        let before = log_len();
        cache.remove(ino(9)).unwrap();
        assert_eq!(log_len(), before);
        // The rows wait for the checkpoint; memory and the files are done at once.
        assert_eq!(cache.usage().inodes, 0);
        assert!(!dir.path().join("data/1").exists());
        assert_eq!(cache.db_entries().len(), 3);
        // An inode that gets a file again has its old row deleted first, also when an
        // entry without a file came before it.
        cache.mark_dirty(ino(3));
        cache.write(ino(3), 0, b"new").unwrap();
        assert_eq!(cache.db_entries().len(), 2);
        crash(cache);
    }
    // A power loss: the log is ignored, the index has the rows of 1 and 2 and an old
    // version of nothing else. Their files are gone, so their rows are dropped; 3's bytes
    // were never synced, so they are forgotten, and the old ones are not claimed.
    as_if_rebooted(dir.path());
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    assert_eq!(cache.read(ino(1), 0, 10).unwrap(), None);
    assert_eq!(cache.read(ino(2), 0, 10).unwrap(), None);
    assert_eq!(cache.read(ino(3), 0, 10).unwrap(), None);
    assert_eq!(cache.usage().inodes, 0);
    crash(cache);

    // A process crash replays the removals; a checkpoint deletes the rows.
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    cache.write(ino(4), 0, b"four").unwrap();
    cache.write(ino(5), 0, b"five").unwrap();
    cache.flush().unwrap();
    cache.remove(ino(4)).unwrap();
    crash(cache);
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    assert_eq!(cache.read(ino(4), 0, 4).unwrap(), None);
    assert_eq!(cache.read(ino(5), 0, 4).unwrap().unwrap(), b"five");
    cache.remove(ino(5)).unwrap();
    cache.flush().unwrap();
    assert!(cache.db_entries().is_empty());
}

#[test]
fn cache_log_records_round_trip_and_garbage_is_refused() {
    let recs = [
        CacheRec::Add {
            ino: 2,
            start: 3,
            end: 4,
            dirty: true,
            create: Some(T),
        },
        CacheRec::Add {
            ino: 2,
            start: 3,
            end: 4,
            dirty: false,
            create: None,
        },
        CacheRec::Truncate {
            ino: 5,
            size: 6,
            old_end: 7,
            create: true,
        },
        CacheRec::Drop { ino: 7 },
        CacheRec::MarkDirty {
            ino: 8,
            create: false,
        },
        CacheRec::MarkClean { ino: 9, tag: T },
        CacheRec::Adopt { ino: 10, tag: T },
    ];
    for r in recs {
        let b = r.encode();
        assert!(b.len() <= MAX_LOG_RECORD as usize);
        assert_eq!(CacheRec::decode(&b), Some(r));
        for cut in 0..b.len() {
            assert_eq!(CacheRec::decode(&b[..cut]), None);
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(CacheRec::decode(&longer), None);
    }
    assert_eq!(CacheRec::decode(&[0; 9]), None);
}

#[test]
fn a_log_record_that_does_not_decode_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(CacheStore::open(dir.path(), BIG).unwrap());
    {
        let (mut log, _) =
            OpLog::open(&dir.path().join(LOG_FILE), LOG_KIND, MAX_LOG_RECORD).unwrap();
        log.append(&[42; 9]).unwrap();
    }
    let err = CacheStore::open(dir.path(), BIG).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("does not decode"), "{err}");
}

#[test]
fn fill_never_overwrites_cached_bytes_and_drops_old_versions() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    cache.write(ino(1), 2, b"NEW").unwrap();
    assert!(cache.fill(ino(1), T, 0, b"old stored").unwrap());
    assert_eq!(cache.read(ino(1), 0, 10).unwrap().unwrap(), b"olNEWtored");
    assert!(cache.is_dirty(ino(1)));
    assert!(cache.fill(ino(2), T, 0, b"version one").unwrap());
    assert!(cache.fill(ino(2), ContentTag([6; 32]), 0, b"v2").unwrap());
    assert_eq!(cache.missing(ino(2), 0, 11), vec![2..11]);
    assert_eq!(cache.read(ino(2), 0, 2).unwrap().unwrap(), b"v2");
    assert_eq!(cache.usage().clean_bytes, 2);
}

#[test]
fn truncate_shrinks_and_grows() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    cache.write(ino(1), 0, b"hello world").unwrap();
    cache.truncate(ino(1), 5).unwrap();
    assert_eq!(cache.read(ino(1), 0, 5).unwrap().unwrap(), b"hello");
    assert_eq!(cache.missing(ino(1), 0, 11), vec![5..11]);
    assert_eq!(fs::metadata(cache.path(1)).unwrap().len(), 5);
    cache.truncate(ino(1), 8).unwrap();
    assert_eq!(cache.read(ino(1), 0, 8).unwrap().unwrap(), b"hello\0\0\0");
    assert_eq!(cache.usage().dirty_bytes, 8);
    cache.truncate(ino(1), 0).unwrap();
    assert_eq!(cache.usage().dirty_bytes, 0);
    assert_eq!(cache.read(ino(1), 0, 0).unwrap().unwrap(), b"");
    // Truncating a clean entry pins it dirty.
    assert!(cache.fill(ino(2), T, 0, b"abcdef").unwrap());
    cache.truncate(ino(2), 3).unwrap();
    assert!(cache.is_dirty(ino(2)));
    let u = cache.usage();
    assert_eq!((u.clean_bytes, u.dirty_bytes), (0, 3));
    // The shrink is durable at once.
    drop(cache);
    let cache = CacheStore::open(dir.path(), BIG).unwrap();
    assert_eq!(cache.missing(ino(2), 0, 6), vec![3..6]);
    cache.remove(ino(2)).unwrap();
    assert_eq!(cache.usage().inodes, 1);
    assert!(!cache.path(2).exists());
}

#[test]
fn index_entry_round_trips_and_rejects_garbage() {
    let mut e = Entry::new(ContentTag([3; 32]));
    e.ranges.insert(5, 10);
    e.ranges.insert(20, 30);
    e.bytes = 15;
    e.dirty = true;
    e.pending = false;
    let enc = e.encode();
    assert_eq!(Entry::decode(&enc), Some(e));
    for cut in 0..enc.len() {
        assert_eq!(Entry::decode(&enc[..cut]), None);
    }
    let mut bad = enc.clone();
    bad[ENTRY_FIXED] = 25; // first range starts after it ends
    assert_eq!(Entry::decode(&bad), None);
    let mut bad = enc;
    bad[33] = 7;
    assert_eq!(Entry::decode(&bad), None);
}
