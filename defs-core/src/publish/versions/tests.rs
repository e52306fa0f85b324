//! Kept versions: the keep and retention rules with fake times, the versions object's round
//! trip and its refusal of bad input.

use super::*;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

fn obj(n: u8) -> ObjectRef {
    ObjectRef {
        file: FileId([n; 32]),
        len: 1000 + u64::from(n),
        trailer: [n ^ 0x55; 32],
    }
}

/// Version `seq` at `time_ms`, its state a snapshot `seq` with `segs` segments.
fn v(seq: u64, time_ms: u64, segs: u8) -> Version {
    Version {
        seq,
        time_ms,
        snapshot: obj(seq as u8),
        segments: (0..segs).map(|i| obj(100 + i)).collect(),
    }
}

fn seqs(list: &[Version]) -> Vec<u64> {
    list.iter().map(|v| v.seq).collect()
}

#[test]
fn the_first_state_of_each_bucket_is_kept_and_sync_and_release_always() {
    let r = Retention::default();
    let s = obj(9);
    // Nothing kept yet: the first state is.
    assert!(keeps(Why::Change, &[], &s, &[], 10 * HOUR_MS, &r));
    let list = vec![v(1, 10 * HOUR_MS + 5, 0)];
    // Same hour: a change is not kept, a sync or a release is.
    assert!(!keeps(
        Why::Change,
        &list,
        &s,
        &[],
        10 * HOUR_MS + 60_000,
        &r
    ));
    assert!(keeps(Why::Sync, &list, &s, &[], 10 * HOUR_MS + 60_000, &r));
    assert!(keeps(
        Why::Release,
        &list,
        &s,
        &[],
        10 * HOUR_MS + 60_000,
        &r
    ));
    // The next hour: the first change is kept.
    assert!(keeps(Why::Change, &list, &s, &[], 11 * HOUR_MS, &r));
    // The newest kept state again (a sync with nothing changed): not kept twice.
    let same = &list[0];
    assert!(!keeps(
        Why::Sync,
        &list,
        &same.snapshot,
        &same.segments,
        12 * HOUR_MS,
        &r
    ));
    // Another bucket size.
    let r5 = Retention {
        every_secs: 300,
        ..r
    };
    assert!(keeps(
        Why::Change,
        &list,
        &s,
        &[],
        10 * HOUR_MS + 300_000,
        &r5
    ));
}

#[test]
fn retention_keeps_the_newest_n_none_older_than_the_days_and_the_current_always() {
    let r = Retention {
        keep_versions: 3,
        keep_days: 30,
        every_secs: 3600,
    };
    let now = 100 * DAY_MS;
    let list: Vec<Version> = (1..=6).map(|s| v(s, now - (7 - s) * DAY_MS, 0)).collect();
    // Count: the newest 3.
    let cur = v(6, 0, 0);
    let got = retain(list.clone(), (&cur.snapshot, &cur.segments), now, &r);
    assert_eq!(seqs(&got), vec![4, 5, 6]);
    // Age: a version 31 days old goes, one of 30 days stays.
    let aged = vec![v(1, now - 31 * DAY_MS, 0), v(2, now - 30 * DAY_MS, 0)];
    let got = retain(aged.clone(), (&cur.snapshot, &cur.segments), now, &r);
    assert_eq!(seqs(&got), vec![2]);
    // The current state stays whatever its age or rank.
    let old_cur = v(1, 0, 0);
    let got = retain(aged, (&old_cur.snapshot, &old_cur.segments), now, &r);
    assert_eq!(seqs(&got), vec![1, 2]);
    let got = retain(list, (&obj(1), &[]), now, &r);
    assert_eq!(seqs(&got), vec![1, 4, 5, 6]);
    // keep_days 0: age drops none.
    let r0 = Retention { keep_days: 0, ..r };
    let ancient = vec![v(1, 0, 0)];
    assert_eq!(seqs(&retain(ancient, (&obj(9), &[]), now, &r0)), vec![1]);
}

#[test]
fn kept_seqs_are_the_kept_versions_and_the_current_record_ascending() {
    let list = vec![v(3, 0, 0), v(7, 0, 0)];
    assert_eq!(kept_seqs(&list, 9), vec![3, 7, 9]);
    assert_eq!(kept_seqs(&list, 7), vec![3, 7]);
    assert_eq!(kept_seqs(&[], 0), Vec::<u64>::new());
}

#[test]
fn a_versions_object_round_trips() {
    let list = vec![v(1, 5, 0), v(4, HOUR_MS, 3), v(9, DAY_MS, 64)];
    let bytes = encode(&list).unwrap();
    assert_eq!(&bytes[..8], b"DEFSVERS");
    assert_eq!(decode(&bytes).unwrap(), list);
    assert_eq!(
        decode(&encode(&[]).unwrap()).unwrap(),
        Vec::<Version>::new()
    );
}

#[test]
fn every_truncation_and_bit_flip_of_a_versions_object_is_refused() {
    let bytes = encode(&[v(1, 5, 1), v(2, 6, 0)]).unwrap();
    for n in 0..bytes.len() {
        let err = decode(&bytes[..n]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Corrupt {
                    what: "versions object",
                    ..
                }
            ),
            "{n}: {err}"
        );
    }
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            assert!(
                decode(&b).is_err(),
                "flip of bit {bit} of byte {i} accepted"
            );
        }
    }
}

/// `body` with a correct trailer: a writer's bug, not damage, must still be refused.
fn sealed(mut body: Vec<u8>) -> Vec<u8> {
    let h = blake3::hash(&body);
    body.extend_from_slice(h.as_bytes());
    body
}

#[test]
fn a_well_hashed_but_malformed_versions_object_is_refused() {
    let good = encode(&[v(2, 5, 0), v(3, 6, 0)]).unwrap();
    let body = good[..good.len() - 32].to_vec();
    // Seqs out of order.
    let swapped = encode(&[v(3, 5, 0), v(2, 6, 0)]).unwrap();
    assert!(
        decode(&swapped)
            .unwrap_err()
            .to_string()
            .contains("out of order")
    );
    // A count above the limit.
    let mut b = body.clone();
    b[12..16].copy_from_slice(&1000u32.to_le_bytes());
    assert!(
        decode(&sealed(b))
            .unwrap_err()
            .to_string()
            .contains("limit")
    );
    // Bytes after the list.
    let mut b = body.clone();
    b.push(0);
    assert!(
        decode(&sealed(b))
            .unwrap_err()
            .to_string()
            .contains("after")
    );
    // Another layout version.
    let mut b = body;
    b[8] = 2;
    assert!(
        decode(&sealed(b))
            .unwrap_err()
            .to_string()
            .contains("version 2")
    );
    // Too many versions to encode.
    let many: Vec<Version> = (1..=256).map(|s| v(s, s, 0)).collect();
    assert!(matches!(encode(&many), Err(Error::TooLarge { .. })));
}

#[test]
fn utc_names_are_the_records_time_to_the_second() {
    assert_eq!(utc_name(0), "1970-01-01T000000Z");
    // 2026-12-07 14:53:00.999 UTC.
    assert_eq!(utc_name(1_796_655_180_999), "2026-12-07T145300Z");
    // A leap day.
    assert_eq!(utc_name(951_782_400_000), "2000-02-29T000000Z");
}

#[test]
fn the_local_copy_round_trips_and_a_damaged_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read_local(dir.path()).unwrap().is_none());
    let list = vec![v(1, 5, 2)];
    let plain = encode(&list).unwrap();
    write_local(dir.path(), FileId([7; 32]), &plain).unwrap();
    let (file, got) = read_local(dir.path()).unwrap().unwrap();
    assert_eq!((file, got), (FileId([7; 32]), list));
    let path = dir.path().join(VERSIONS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(read_local(dir.path()).is_err());
    std::fs::write(&path, [1u8; 10]).unwrap();
    assert!(read_local(dir.path()).is_err());
}
