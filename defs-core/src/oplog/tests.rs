//! Op log tests: round trip, torn tails at every byte, stale records behind a reset, bad
//! headers, and (proptest) arbitrary damage — never a panic, always a valid prefix.

use super::*;

const KIND: [u8; 4] = *b"TEST";

fn payload(i: u64) -> Vec<u8> {
    (0..(1 + i % 40))
        .map(|b| (b as u8).wrapping_add(i as u8))
        .collect()
}

fn write_log(path: &Path, n: u64) -> Vec<u64> {
    let (mut log, rec) = OpLog::open(path, KIND, 1024).unwrap();
    assert!(rec.records.is_empty());
    let mut ends = vec![log.len()];
    for i in 1..=n {
        assert_eq!(log.append(&payload(i)).unwrap(), i);
        ends.push(log.len());
    }
    ends
}

#[test]
fn records_round_trip_and_reset_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    write_log(&path, 20);
    let (mut log, rec) = OpLog::open(&path, KIND, 1024).unwrap();
    assert_eq!(rec.tail, Tail::Clean);
    assert_eq!(rec.base_lsn, 0);
    assert!(rec.same_boot || boot_id() == [0; 16]);
    let lsns: Vec<u64> = rec.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (1..=20).collect::<Vec<_>>());
    for r in &rec.records {
        assert_eq!(r.payload, payload(r.lsn));
    }
    assert_eq!(log.last_lsn(), 20);
    log.sync().unwrap();
    log.reset(20).unwrap();
    assert!(log.is_empty());
    assert_eq!(log.append(b"next").unwrap(), 21);
    drop(log);
    let (_, rec) = OpLog::open(&path, KIND, 1024).unwrap();
    assert_eq!(rec.base_lsn, 20);
    assert_eq!(rec.records.len(), 1);
    assert_eq!(rec.records[0].lsn, 21);
}

#[test]
fn every_cut_of_the_file_gives_a_prefix_and_never_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let ends = write_log(&path, 8);
    let full = std::fs::read(&path).unwrap();
    for cut in HEADER_LEN as usize..=full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (log, rec) = OpLog::open(&path, KIND, 1024).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut as u64).count() as u64 - 1;
        assert_eq!(rec.records.len() as u64, whole, "cut at {cut}");
        assert_eq!(rec.tail == Tail::Clean, ends.contains(&(cut as u64)));
        // The next append goes right after the valid prefix.
        assert_eq!(log.len(), ends[whole as usize]);
    }
}

#[test]
fn a_rollback_or_stale_bytes_behind_a_reset_are_never_read_as_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    write_log(&path, 10);
    let stale = std::fs::read(&path).unwrap();
    let (mut log, _) = OpLog::open(&path, KIND, 1024).unwrap();
    log.reset(10).unwrap();
    log.append(b"eleven").unwrap();
    let end = log.len();
    log.append(b"twelve, rolled back").unwrap();
    log.rollback(end, 11).unwrap();
    drop(log);
    // Simulate a lost truncation: old records reappear behind the new one.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&stale[bytes.len()..]);
    std::fs::write(&path, &bytes).unwrap();
    let (_, rec) = OpLog::open(&path, KIND, 1024).unwrap();
    assert_eq!(rec.records.len(), 1);
    assert_eq!(rec.records[0].payload, b"eleven");
    assert!(matches!(rec.tail, Tail::Torn { .. }));
}

#[test]
fn bad_headers_are_clear_errors_and_an_empty_file_is_a_new_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    std::fs::write(&path, b"").unwrap();
    let (_, rec) = OpLog::open(&path, KIND, 1024).unwrap();
    assert!(rec.records.is_empty());
    let good = std::fs::read(&path).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..20].to_vec(), "truncated"),
        ([b"NOTALOG!".as_slice(), &good[8..]].concat(), "magic"),
        (
            {
                let mut b = good.clone();
                b[8] = 9;
                b
            },
            "version",
        ),
        (
            {
                let mut b = good.clone();
                b[33] ^= 1;
                b
            },
            "CRC",
        ),
    ];
    for (bytes, what) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let err = OpLog::open(&path, KIND, 1024).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{what}: {err}");
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    std::fs::write(&path, &good).unwrap();
    let err = OpLog::open(&path, *b"OTHR", 1024).unwrap_err();
    assert!(err.to_string().contains("belongs to"), "{err}");
}

#[test]
fn oversized_and_empty_payloads_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = OpLog::open(&dir.path().join("log"), KIND, 8).unwrap();
    assert!(matches!(log.append(&[0; 9]), Err(Error::TooLarge { .. })));
    assert!(matches!(log.append(&[]), Err(Error::TooLarge { .. })));
    assert!(log.is_empty());
    assert_eq!(log.append(&[1; 8]).unwrap(), 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
    /// Arbitrary damage after the header (overwritten bytes, a cut, appended garbage) never
    /// panics and always yields a prefix of the records written, byte for byte.
    #[test]
    fn damaged_logs_yield_a_prefix(
        n in 0u64..12,
        flips in proptest::collection::vec((0usize..2000, proptest::num::u8::ANY), 0..4),
        cut in proptest::option::of(0usize..2000),
        garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_log(&path, n);
        let mut bytes = std::fs::read(&path).unwrap();
        let h = HEADER_LEN as usize;
        for (at, v) in flips {
            let i = h + at % (bytes.len() - h + 1);
            if i < bytes.len() { bytes[i] = v; }
        }
        if let Some(c) = cut {
            bytes.truncate(h + c.min(bytes.len() - h));
        }
        bytes.extend_from_slice(&garbage);
        std::fs::write(&path, &bytes).unwrap();
        let (_, rec) = OpLog::open(&path, KIND, 1024).unwrap();
        for (i, r) in rec.records.iter().enumerate() {
            proptest::prop_assert_eq!(r.lsn, i as u64 + 1);
            proptest::prop_assert_eq!(&r.payload, &payload(r.lsn));
        }
    }

    /// Random bytes behind a valid header: no panic, no allocation beyond the limit.
    #[test]
    fn random_bytes_never_panic(garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_log(&path, 0);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&garbage);
        std::fs::write(&path, &bytes).unwrap();
        let _ = OpLog::open(&path, KIND, 64).unwrap();
    }
}
