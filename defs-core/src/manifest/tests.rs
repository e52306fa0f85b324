use super::*;
use proptest::prelude::*;

fn arb_manifest() -> impl Strategy<Value = Manifest> {
    let geometry = prop_oneof![
        (1u8..=4, 1u32..=64).prop_map(|(c, s)| Geometry::replicated(c, s).unwrap()),
        (1u8..=6, 0u8..=4, 1u32..=64)
            .prop_map(|(k, m, s)| Geometry::reed_solomon(k, m, s).unwrap()),
    ];
    (geometry, 0u64..400, any::<[u8; 16]>(), any::<u64>()).prop_map(|(g, size, v, seed)| {
        let mut rng = seed;
        let mut next = move || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            rng
        };
        let count = g.segment_count(size);
        let segments = (0..count)
            .map(|i| {
                let len = if i + 1 == count {
                    size - g.segment_size() * i
                } else {
                    g.segment_size()
                } as u32;
                // A third of the segments carry extents (some of them none: holes).
                let extents = (next() % 3 == 0).then(|| {
                    let mut list = Vec::new();
                    let mut at = u64::from((next() % 3) as u8);
                    while at < u64::from(len) {
                        let n = 1 + next() % 5;
                        let end = (at + n).min(u64::from(len));
                        list.push(Extent {
                            start: at as u32,
                            len: (end - at) as u32,
                        });
                        at = end + 1 + next() % 4;
                    }
                    list
                });
                let stored = match &extents {
                    Some(l) => l.iter().map(|e| e.len).sum(),
                    None => len,
                };
                let shard_len = if stored == 0 { 0 } else { g.shard_len(stored) };
                let shard_count = if stored == 0 { 0 } else { g.total_shards() };
                let shards = (0..shard_count)
                    .map(|_| ShardEntry {
                        id: ShardId([next() as u8; 32]),
                        len: shard_len + 16,
                        crc: next() as u32,
                        nonce: [next() as u8; 12],
                        holders: (0..next() % 3)
                            .map(|_| NodeId([next() as u8; 32]))
                            .collect(),
                    })
                    .collect();
                SegmentEntry {
                    len,
                    shard_len,
                    shards,
                    extents,
                }
            })
            .collect();
        // Every other manifest a pack: members of up to 50 bytes with gaps of up to 2.
        let pack = (size > 0 && next() % 2 == 0).then(|| {
            let mut members = Vec::new();
            let mut at = 0;
            while at < size {
                let len = 1 + next() % (size - at).min(50);
                members.push(PackRange { offset: at, len });
                at += len + next() % 3;
            }
            members
        });
        Manifest {
            version: VersionId(v),
            size,
            geometry: g,
            segments,
            pack,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn body_round_trips_and_encoded_len_is_exact(m in arb_manifest()) {
        let body = m.encode_body().unwrap();
        prop_assert_eq!(body.len(), m.encoded_len());
        prop_assert_eq!(Manifest::decode_body(&body).unwrap(), m);
    }

    #[test]
    fn truncated_or_extended_bodies_are_errors(m in arb_manifest(), cut in any::<prop::sample::Index>(), extra in 1usize..8) {
        let body = m.encode_body().unwrap();
        let cut = cut.index(body.len());
        prop_assert!(Manifest::decode_body(&body[..cut]).is_err());
        let mut longer = body.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert!(Manifest::decode_body(&longer).is_err());
    }

    #[test]
    fn perturbed_bodies_never_panic(m in arb_manifest(), at in any::<prop::sample::Index>(), val in any::<u8>()) {
        let mut body = m.encode_body().unwrap();
        let i = at.index(body.len());
        body[i] = val;
        let _ = Manifest::decode_body(&body);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::decode_body(&bytes);
        let mut with_magic = BODY_MAGIC.to_vec();
        with_magic.extend_from_slice(&1u16.to_le_bytes());
        with_magic.extend_from_slice(&bytes);
        let _ = Manifest::decode_body(&with_magic);
        let _ = Manifest::open(&bytes, &WrapKey::from_bytes([1; 32]));
    }

    #[test]
    fn sealed_round_trips(m in arb_manifest()) {
        let key = FileKey::from_bytes([4; 32]);
        let wrap = WrapKey::from_bytes([5; 32]);
        let sealed = m.seal(&key, &wrap).unwrap();
        prop_assert_eq!(sealed.id, FileId(*blake3::hash(&sealed.bytes).as_bytes()));
        let (back, back_key) = Manifest::open(&sealed.bytes, &wrap).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back_key, key.clone());
        prop_assert_eq!(Manifest::open_with_key(&sealed.bytes, &key).unwrap(), m);
    }
}

fn sample() -> Manifest {
    let g = Geometry::reed_solomon(2, 1, 8).unwrap();
    let segments = (0..2)
        .map(|i| {
            let len = if i == 0 { 16 } else { 4 };
            SegmentEntry {
                len,
                shard_len: g.shard_len(len),
                shards: (0..3)
                    .map(|_| ShardEntry {
                        id: ShardId([1; 32]),
                        len: g.shard_len(len) + 16,
                        crc: 0,
                        nonce: [0; 12],
                        holders: vec![],
                    })
                    .collect(),
                extents: None,
            }
        })
        .collect();
    Manifest {
        version: VersionId([3; 16]),
        size: 20,
        geometry: g,
        segments,
        pack: None,
    }
}

#[test]
fn wrong_keys_are_clear_errors() {
    let m = sample();
    let sealed = m
        .seal(&FileKey::from_bytes([1; 32]), &WrapKey::from_bytes([2; 32]))
        .unwrap();
    assert!(matches!(
        Manifest::open(&sealed.bytes, &WrapKey::from_bytes([3; 32])),
        Err(Error::WrongKey { what: "wrap key" })
    ));
    assert!(matches!(
        Manifest::open_with_key(&sealed.bytes, &FileKey::from_bytes([3; 32])),
        Err(Error::WrongKey { what: "file key" })
    ));
    let msg = Manifest::open(&sealed.bytes, &WrapKey::from_bytes([3; 32]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("wrong wrap key"), "{msg}");
}

#[test]
fn unknown_versions_are_named() {
    let m = sample();
    let mut body = m.encode_body().unwrap();
    body[4] = 9;
    assert!(matches!(
        Manifest::decode_body(&body),
        Err(Error::UnknownManifestVersion {
            found: 9,
            supported: BODY_VERSION
        })
    ));
    let mut sealed = m
        .seal(&FileKey::from_bytes([1; 32]), &WrapKey::from_bytes([2; 32]))
        .unwrap()
        .bytes;
    sealed[8] = 2;
    assert!(matches!(
        Manifest::open(&sealed, &WrapKey::from_bytes([2; 32])),
        Err(Error::UnknownManifestVersion {
            found: 2,
            supported: 1
        })
    ));
}

fn packed(members: &[(u64, u64)]) -> Manifest {
    let mut m = sample();
    m.pack = Some(
        members
            .iter()
            .map(|&(offset, len)| PackRange { offset, len })
            .collect(),
    );
    m
}

#[test]
fn a_plain_manifest_is_still_written_as_v1_and_a_pack_as_v2() {
    let plain = sample().encode_body().unwrap();
    assert_eq!(plain[4..6], BODY_VERSION_DENSE.to_le_bytes());
    let m = packed(&[(0, 5), (5, 10), (16, 4)]);
    let body = m.encode_body().unwrap();
    assert_eq!(body[4..6], BODY_VERSION_PACK.to_le_bytes());
    assert_eq!(Manifest::decode_body(&body).unwrap(), m);
    // The directory ends the body: count, then (offset, len) pairs.
    let dir = &body[body.len() - 4 - 3 * 16..];
    assert_eq!(dir[..4], 3u32.to_le_bytes());
}

#[test]
fn malformed_pack_directories_are_refused() {
    for (members, what) in [
        (&[(0, 5), (4, 3)][..], "overlap"),
        (&[(5, 5), (0, 3)][..], "out of order"),
        (&[(0, 5), (10, 11)][..], "past the object"),
        (&[(0, 0)][..], "empty pack member"),
        (&[][..], "without members"),
        (&[(u64::MAX, 2)][..], "past the object"),
    ] {
        let m = packed(members);
        let err = m.encode_body().unwrap_err().to_string();
        assert!(err.contains(what), "{members:?}: {err}");
        // The same directory in bytes (written past the encoder's check) is refused too.
        let mut body = sample().encode_body().unwrap();
        body[4..6].copy_from_slice(&BODY_VERSION_PACK.to_le_bytes());
        body.extend_from_slice(&(members.len() as u32).to_le_bytes());
        for (o, l) in members {
            body.extend_from_slice(&o.to_le_bytes());
            body.extend_from_slice(&l.to_le_bytes());
        }
        let err = Manifest::decode_body(&body).unwrap_err().to_string();
        assert!(err.contains(what), "{members:?}: {err}");
    }
    // A member count larger than the bytes present: refused before allocating.
    let mut body = sample().encode_body().unwrap();
    body[4..6].copy_from_slice(&BODY_VERSION_PACK.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(Manifest::decode_body(&body).is_err());
}

#[test]
fn content_ranges_must_be_one_member_of_a_pack() {
    let m = packed(&[(0, 5), (5, 10), (16, 4)]);
    for ok in [(0, 5), (5, 10), (16, 4)] {
        m.check_range(ok.0, ok.1).unwrap();
    }
    for (offset, len, why) in [
        (0, 6, "not one member"),
        (5, 5, "not one member"),
        (3, 4, "not one member"),
        (15, 1, "not one member"),
        (16, 5, "runs past the end"),
        (u64::MAX, 2, "overflows"),
    ] {
        let err = m.check_range(offset, len).unwrap_err();
        assert!(
            matches!(err, Error::BadContentRange { .. }) && err.to_string().contains(why),
            "{offset}+{len}: {err}"
        );
    }
    // An object that is not a pack: any range inside it.
    let plain = sample();
    plain.check_range(0, 20).unwrap();
    plain.check_range(3, 4).unwrap();
    assert!(plain.check_range(0, 21).is_err());
}

#[test]
fn oversized_counts_are_refused_before_allocating() {
    let m = sample();
    let mut body = m.encode_body().unwrap();
    // Segment count field: claim 2^40 segments.
    body[38..46].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(
        Manifest::decode_body(&body),
        Err(Error::MalformedManifest { .. })
    ));
    // A size that would need more segments than present.
    let mut body = m.encode_body().unwrap();
    body[22..30].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(Manifest::decode_body(&body).is_err());
    // Holder count over the limit.
    let mut body = m.encode_body().unwrap();
    let first_holder_count = BODY_HEADER_LEN + SEGMENT_HEADER_LEN + SHARD_ENTRY_LEN - 1;
    body[first_holder_count] = 200;
    assert!(Manifest::decode_body(&body).is_err());
    // Shard length that disagrees with the segment.
    let mut body = m.encode_body().unwrap();
    body[BODY_HEADER_LEN + 4..BODY_HEADER_LEN + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Manifest::decode_body(&body).is_err());
    let huge = vec![0u8; MAX_BODY_LEN + 1];
    assert!(matches!(
        Manifest::decode_body(&huge),
        Err(Error::TooLarge { .. })
    ));
}

/// `sample()` with its first segment sparse: data at 2..5 and 9..12, the second a hole.
fn sparse_sample() -> Manifest {
    let mut m = sample();
    let extents = vec![Extent { start: 2, len: 3 }, Extent { start: 9, len: 3 }];
    let g = m.geometry;
    let seg = &mut m.segments[0];
    seg.shard_len = g.shard_len(6);
    for sh in &mut seg.shards {
        sh.len = seg.shard_len + 16;
    }
    seg.extents = Some(extents);
    m.segments[1].extents = Some(Vec::new());
    m.segments[1].shard_len = 0;
    m.segments[1].shards.clear();
    m
}

#[test]
fn dense_manifests_stay_v1_and_sparse_ones_are_v3() {
    let body = sample().encode_body().unwrap();
    assert_eq!(u16::from_le_bytes([body[4], body[5]]), 1);
    let m = sparse_sample();
    let body = m.encode_body().unwrap();
    assert_eq!(u16::from_le_bytes([body[4], body[5]]), 3);
    assert_eq!(body.len(), m.encoded_len());
    assert_eq!(Manifest::decode_body(&body).unwrap(), m);
    assert_eq!(m.segments[0].stored_len(), 6);
    assert!(m.segments[1].is_hole());
}

#[test]
fn a_pack_with_holes_is_v3_and_carries_its_directory() {
    // v3 without a pack ends with a zero member count.
    let body = sparse_sample().encode_body().unwrap();
    assert_eq!(body[body.len() - 4..], 0u32.to_le_bytes());
    let mut m = sparse_sample();
    m.pack = Some(vec![
        PackRange { offset: 0, len: 5 },
        PackRange { offset: 9, len: 7 },
    ]);
    let body = m.encode_body().unwrap();
    assert_eq!(u16::from_le_bytes([body[4], body[5]]), BODY_VERSION);
    assert_eq!(body.len(), m.encoded_len());
    assert_eq!(Manifest::decode_body(&body).unwrap(), m);
    // The directory is still checked in v3.
    let mut bad = body.clone();
    let at = bad.len() - 2 * 16 + 8;
    bad[at..at + 8].copy_from_slice(&100u64.to_le_bytes());
    assert!(Manifest::decode_body(&bad).is_err());
}

#[test]
fn holes_overlapping_data_or_past_the_size_are_refused() {
    let bad = |extents: Vec<Extent>| {
        // A valid body whose extents the caller patches in place (same count and sum).
        let mut m = sparse_sample();
        let body = m.encode_body().unwrap();
        m.segments[0].extents = Some(extents);
        (body, m)
    };
    for (extents, what) in [
        (
            vec![Extent { start: 2, len: 3 }, Extent { start: 4, len: 3 }],
            "overlap",
        ),
        (
            vec![Extent { start: 2, len: 3 }, Extent { start: 5, len: 3 }],
            "touch",
        ),
        (
            vec![Extent { start: 9, len: 3 }, Extent { start: 2, len: 3 }],
            "order",
        ),
        (
            vec![Extent { start: 2, len: 0 }, Extent { start: 9, len: 6 }],
            "empty",
        ),
        (
            vec![Extent { start: 2, len: 3 }, Extent { start: 14, len: 3 }],
            "past",
        ),
    ] {
        let (mut body, m) = bad(extents.clone());
        assert!(m.encode_body().is_err(), "{what}: encoding must refuse");
        // The first segment's extent list starts after its header and flag and count.
        let at = BODY_HEADER_LEN + SEGMENT_HEADER_LEN + 1 + 4;
        for (i, e) in extents.iter().enumerate() {
            body[at + 8 * i..at + 8 * i + 4].copy_from_slice(&e.start.to_le_bytes());
            body[at + 8 * i + 4..at + 8 * i + 8].copy_from_slice(&e.len.to_le_bytes());
        }
        let err = Manifest::decode_body(&body).unwrap_err();
        assert!(
            matches!(err, Error::MalformedManifest { .. }),
            "{what}: {err}"
        );
    }
    // A hole that claims shards.
    let mut m = sparse_sample();
    m.segments[1].shards = m.segments[0].shards.clone();
    assert!(m.encode_body().is_err());
}

#[test]
fn sparse_segments_map_between_file_and_stored_bytes() {
    let m = sparse_sample();
    let seg = &m.segments[0];
    assert_eq!(seg.stored_offset(0), 0);
    assert_eq!(seg.stored_offset(3), 1);
    assert_eq!(seg.stored_offset(7), 3);
    assert_eq!(seg.stored_offset(16), 6);
    let stored = [1u8, 2, 3, 4, 5, 6];
    let mut out = Vec::new();
    seg.expand_into(0..16, 0, &stored, &mut out).unwrap();
    assert_eq!(out, [0, 0, 1, 2, 3, 0, 0, 0, 0, 4, 5, 6, 0, 0, 0, 0]);
    // Only stored bytes 3..6 fetched: 0..9 is not all known, 5..16 is.
    assert_eq!(seg.known_around(10..11, 3..6), 5..16);
    let mut out = Vec::new();
    seg.expand_into(5..16, 3, &stored[3..], &mut out).unwrap();
    assert_eq!(out, [0, 0, 0, 0, 4, 5, 6, 0, 0, 0, 0]);
    assert!(
        seg.expand_into(0..16, 3, &stored[3..], &mut Vec::new())
            .is_err()
    );
    // A hole knows everything from nothing.
    assert_eq!(m.segments[1].known_around(1..2, 0..0), 0..4);
}
