use super::*;
use crate::identity::puzzle_bits;

fn body(segments: usize) -> RootBody {
    RootBody {
        writer: WriterId([7; 16]),
        lease_secs: 300,
        writer_name: "laptop".into(),
        snapshot: ObjectRef {
            file: FileId([1; 32]),
            len: 123_456,
            trailer: [2; 32],
        },
        segments: (0..segments)
            .map(|i| ObjectRef {
                file: FileId([10 + i as u8; 32]),
                len: 900 + i as u64,
                trailer: [20 + i as u8; 32],
            })
            .collect(),
        versions: Some(FileId([3; 32])),
        kept: true,
    }
}

#[test]
fn a_signed_record_verifies_and_its_body_round_trips() {
    let id = Identity::generate(2);
    let b = body(3);
    let rec = RootRecord::sign(&id, 42, 1_765_000_000_000, &b).unwrap();
    let got = RootRecord::verify(rec.as_bytes(), 2).unwrap();
    assert_eq!(got, rec);
    assert_eq!(got.owner(), id.node_id());
    assert_eq!(got.seq(), 42);
    assert_eq!(got.time_ms(), 1_765_000_000_000);
    assert_eq!(got.open_body(&id).unwrap(), b);
    // No versions object and no flag survive too.
    let plain = RootBody {
        versions: None,
        kept: false,
        segments: vec![],
        lease_secs: 0,
        writer_name: String::new(),
        ..b
    };
    let rec = RootRecord::sign(&id, 1, 0, &plain).unwrap();
    let got = RootRecord::verify(rec.as_bytes(), 0).unwrap();
    assert_eq!(got.open_body(&id).unwrap(), plain);
}

#[test]
fn the_largest_body_fits_and_larger_ones_are_refused_when_encoding() {
    let id = Identity::generate(0);
    let mut b = body(MAX_SEGMENTS);
    b.writer_name = "é".repeat(MAX_WRITER_NAME / 2);
    assert_eq!(b.encode().unwrap().len(), MAX_BODY_LEN);
    let rec = RootRecord::sign(&id, 1, 0, &b).unwrap();
    assert!(rec.as_bytes().len() <= MAX_RECORD_LEN);
    assert_eq!(
        RootRecord::verify(rec.as_bytes(), 0)
            .unwrap()
            .open_body(&id)
            .unwrap(),
        b
    );
    let mut long_name = b.clone();
    long_name.writer_name.push('x');
    assert!(matches!(long_name.encode(), Err(Error::TooLarge { .. })));
    let mut many = body(MAX_SEGMENTS + 1);
    assert!(matches!(many.encode(), Err(Error::TooLarge { .. })));
    many.segments.truncate(1);
    many.segments[0].len = u64::from(u32::MAX) + 1;
    assert!(matches!(many.encode(), Err(Error::TooLarge { .. })));
    assert!(RootRecord::sign(&id, 1, 0, &many).is_err());
}

#[test]
fn sequence_number_zero_is_refused() {
    let id = Identity::generate(0);
    assert!(matches!(
        RootRecord::sign(&id, 0, 0, &body(0)),
        Err(Error::BadRootRecord { .. })
    ));
    // Forge one: seq 0 re-signed by the owner is still refused.
    let rec = RootRecord::sign(&id, 1, 0, &body(0)).unwrap();
    let mut bytes = rec.into_bytes();
    bytes[43..51].copy_from_slice(&0u64.to_le_bytes());
    let at = bytes.len() - SIG_LEN;
    let sig = id.sign(SignDomain::RootRecord, &bytes[..at]);
    bytes[at..].copy_from_slice(&sig.0);
    let err = RootRecord::verify(&bytes, 0).unwrap_err();
    assert!(err.to_string().contains("sequence number 0"), "{err}");
}

#[test]
fn a_forged_signature_is_refused() {
    let id = Identity::generate(0);
    let rec = RootRecord::sign(&id, 5, 0, &body(1)).unwrap();
    let mut bytes = rec.into_bytes();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    assert!(matches!(
        RootRecord::verify(&bytes, 0),
        Err(Error::BadSignature {
            domain: "root-record"
        })
    ));
    // A signature over the same bytes in another domain does not verify either.
    let at = n - SIG_LEN;
    let sig = id.sign(SignDomain::StoreShard, &bytes[..at]);
    bytes[at..].copy_from_slice(&sig.0);
    assert!(matches!(
        RootRecord::verify(&bytes, 0),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn another_owners_record_is_refused() {
    let owner = Identity::generate(0);
    let thief = Identity::generate(0);
    // The thief signs a record claiming the owner's key: the signature does not verify.
    let rec = RootRecord::sign(&thief, 9, 0, &body(0)).unwrap();
    let mut bytes = rec.clone().into_bytes();
    bytes[10..43].copy_from_slice(&owner.public().to_bytes());
    assert!(matches!(
        RootRecord::verify(&bytes, 0),
        Err(Error::BadSignature { .. })
    ));
    // The thief's own record verifies as the thief's, and does not open for the owner.
    let got = RootRecord::verify(rec.as_bytes(), 0).unwrap();
    assert_eq!(got.owner(), thief.node_id());
    let err = got.open_body(&owner).unwrap_err();
    assert!(err.to_string().contains("not of this identity"), "{err}");
    // Even with a matching owner check bypassed, the body key differs.
    let mut body_bytes = got.as_bytes()[HEADER_LEN..got.as_bytes().len() - SIG_LEN].to_vec();
    let nonce: [u8; 12] = field(got.as_bytes(), 63);
    assert!(
        open_in_place(
            &body_key(&owner),
            &nonce,
            &got.as_bytes()[..HEADER_LEN],
            &mut body_bytes
        )
        .is_err()
    );
}

#[test]
fn an_owner_below_the_puzzle_difficulty_is_refused() {
    let weak = loop {
        let id = Identity::generate(0);
        if puzzle_bits(&id.node_id()) < 6 {
            break id;
        }
    };
    let rec = RootRecord::sign(&weak, 1, 0, &body(0)).unwrap();
    assert!(matches!(
        RootRecord::verify(rec.as_bytes(), 6),
        Err(Error::PuzzleNotSolved { difficulty: 6, .. })
    ));
    RootRecord::verify(rec.as_bytes(), 0).unwrap();
}

#[test]
fn every_bit_flip_is_refused() {
    let id = Identity::generate(0);
    let rec = RootRecord::sign(&id, 3, 77, &body(1)).unwrap();
    let good = rec.as_bytes();
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut b = good.to_vec();
            b[i] ^= 1 << bit;
            assert!(
                RootRecord::verify(&b, 0).is_err(),
                "flip of bit {bit} of byte {i} verified"
            );
        }
    }
}

#[test]
fn every_truncation_and_extension_is_refused() {
    let id = Identity::generate(0);
    let rec = RootRecord::sign(&id, 3, 77, &body(2)).unwrap();
    let good = rec.as_bytes();
    for len in 0..good.len() {
        assert!(
            RootRecord::verify(&good[..len], 0).is_err(),
            "truncation to {len} verified"
        );
    }
    let mut longer = good.to_vec();
    longer.push(0);
    assert!(matches!(
        RootRecord::verify(&longer, 0),
        Err(Error::BadRootRecord { .. })
    ));
}

#[test]
fn oversize_records_and_bodies_are_refused_before_parsing() {
    let huge = vec![0u8; MAX_RECORD_LEN + 1];
    assert!(matches!(
        RootRecord::verify(&huge, 0),
        Err(Error::TooLarge {
            what: "root record",
            ..
        })
    ));
    // A header whose body length field claims more than the limit.
    let id = Identity::generate(0);
    let mut bytes = RootRecord::sign(&id, 1, 0, &body(0)).unwrap().into_bytes();
    bytes[59..63].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        RootRecord::verify(&bytes, 0),
        Err(Error::TooLarge {
            what: "sealed root record body",
            ..
        })
    ));
}

#[test]
fn a_body_that_does_not_parse_is_refused_without_panicking() {
    let good = body(2).encode().unwrap();
    for len in 0..good.len() {
        assert!(RootBody::decode(&good[..len]).is_err(), "length {len}");
    }
    let mut extra = good.clone();
    extra.push(0);
    assert!(RootBody::decode(&extra).is_err());
    let mut version = good.clone();
    version[0] = 2;
    assert!(RootBody::decode(&version).is_err());
    let mut flags = good.clone();
    *flags.last_mut().unwrap() = 0x80;
    assert!(RootBody::decode(&flags).is_err());
    let mut name = good.clone();
    name[21] = (MAX_WRITER_NAME + 1) as u8;
    assert!(RootBody::decode(&name).is_err());
    let mut utf8 = good;
    utf8[22] = 0xff;
    assert!(RootBody::decode(&utf8).is_err());
}

#[test]
fn admit_keeps_newer_acknowledges_resends_and_refuses_rollback() {
    let id = Identity::generate(0);
    let r5 = RootRecord::sign(&id, 5, 0, &body(0)).unwrap();
    let r5b = RootRecord::sign(&id, 5, 0, &body(0)).unwrap();
    let r6 = RootRecord::sign(&id, 6, 0, &body(0)).unwrap();
    assert_ne!(r5.as_bytes(), r5b.as_bytes(), "a fresh nonce per record");
    assert_eq!(admit(None, &r5).unwrap(), Admit::Store);
    assert_eq!(admit(Some(&r5), &r6).unwrap(), Admit::Store);
    assert_eq!(admit(Some(&r5), &r5.clone()).unwrap(), Admit::Same);
    for (held, offered) in [(&r6, &r5), (&r5, &r5b)] {
        match admit(Some(held), offered) {
            Err(Error::RootRollback {
                owner,
                held: h,
                offered: o,
            }) => {
                assert_eq!(owner, id.node_id());
                assert_eq!((h, o), (held.seq(), offered.seq()));
            }
            other => panic!("{other:?}"),
        }
    }
    let other = RootRecord::sign(&Identity::generate(0), 9, 0, &body(0)).unwrap();
    assert!(matches!(
        admit(Some(&r5), &other),
        Err(Error::BadRootRecord { .. })
    ));
}

#[test]
fn dht_keys_differ_per_owner() {
    let a = Identity::generate(0).node_id();
    let b = Identity::generate(0).node_id();
    assert_ne!(dht_key(&a), dht_key(&b));
    assert_eq!(dht_key(&a), dht_key(&a));
    assert_ne!(dht_key(&a), a.0);
}
