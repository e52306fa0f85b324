use super::record::{MAX_RECORD_LEN, admit};
use super::*;
use crate::Identity;
use crate::error::Error;
use crate::types::FileId;

fn id() -> Identity {
    Identity::generate(0)
}

fn body(n: u8) -> ShareBody {
    ShareBody {
        subtree: 5,
        view: FileId([n; 32]),
        view_key: [n.wrapping_add(1); 32],
        view_len: 1234,
        view_trailer: [n.wrapping_add(2); 32],
        root_seq: 9,
    }
}

fn live(owner: &Identity, to: &Identity, share: ShareId, seq: u64, key: &[u8; 32]) -> ShareRecord {
    let b = body(seq as u8);
    ShareRecord::sign(
        owner,
        to.public(),
        share,
        seq,
        1000 * seq,
        "photos",
        Grant::Live { key, body: &b },
    )
    .unwrap()
}

#[test]
fn a_live_record_round_trips_and_opens_for_its_recipient() {
    let (alice, bob) = (id(), id());
    let key = [42u8; 32];
    let r = live(&alice, &bob, ShareId([1; 16]), 3, &key);
    let v = ShareRecord::verify(r.as_bytes(), 0).unwrap();
    assert_eq!(v, r);
    assert_eq!(v.owner(), alice.node_id());
    assert_eq!(v.recipient(), bob.node_id());
    assert_eq!((v.seq(), v.time_ms(), v.name()), (3, 3000, "photos"));
    assert!(!v.revoked());
    match v.open(&bob).unwrap() {
        Opened::Live { key: k, body: b } => {
            assert_eq!(*k, key);
            assert_eq!(b, body(3));
        }
        Opened::Revoked => panic!("live record opened as revoked"),
    }
}

#[test]
fn a_revocation_round_trips_without_key_or_body() {
    let (alice, bob) = (id(), id());
    let r = ShareRecord::sign(
        &alice,
        bob.public(),
        ShareId([2; 16]),
        4,
        1,
        "x",
        Grant::Revoked,
    )
    .unwrap();
    let v = ShareRecord::verify(r.as_bytes(), 0).unwrap();
    assert!(v.revoked());
    assert_eq!(v.open(&bob).unwrap(), Opened::Revoked);
}

#[test]
fn another_identity_cannot_open_a_record() {
    let (alice, bob, eve) = (id(), id(), id());
    let r = live(&alice, &bob, ShareId([1; 16]), 1, &[7; 32]);
    let err = r.open(&eve).unwrap_err();
    assert!(matches!(err, Error::BadShareRecord { .. }), "{err}");
    assert!(err.to_string().contains("addressed to"), "{err}");
}

#[test]
fn every_changed_byte_and_truncation_is_refused() {
    let (alice, bob) = (id(), id());
    let r = live(&alice, &bob, ShareId([1; 16]), 1, &[7; 32]);
    let bytes = r.as_bytes();
    for i in 0..bytes.len() {
        let mut t = bytes.to_vec();
        t[i] ^= 0x10;
        assert!(
            ShareRecord::verify(&t, 0).is_err(),
            "byte {i} changed was accepted"
        );
    }
    for n in 0..bytes.len() {
        assert!(
            ShareRecord::verify(&bytes[..n], 0).is_err(),
            "cut at {n} accepted"
        );
    }
    let mut long = bytes.to_vec();
    long.push(0);
    assert!(ShareRecord::verify(&long, 0).is_err());
    let huge = vec![0u8; MAX_RECORD_LEN + 1];
    assert!(matches!(
        ShareRecord::verify(&huge, 0),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn a_record_signed_by_another_key_is_forged() {
    let (alice, bob, mallory) = (id(), id(), id());
    let r = live(&alice, &bob, ShareId([1; 16]), 1, &[7; 32]);
    // Mallory re-signs Alice's record with her own key but leaves Alice as the owner.
    let mut t = r.as_bytes().to_vec();
    let signed = t.len() - record::SIG_LEN;
    let sig = mallory.sign(crate::SignDomain::ShareRecord, &t[..signed]);
    t[signed..].copy_from_slice(&sig.0);
    assert!(matches!(
        ShareRecord::verify(&t, 0),
        Err(Error::BadSignature { .. })
    ));
    // A root-record signature over the same bytes is another domain.
    let sig = alice.sign(crate::SignDomain::RootRecord, &t[..signed]);
    t[signed..].copy_from_slice(&sig.0);
    assert!(ShareRecord::verify(&t, 0).is_err());
}

#[test]
fn the_owner_puzzle_is_checked() {
    let (alice, bob) = (id(), id());
    let r = live(&alice, &bob, ShareId([1; 16]), 1, &[7; 32]);
    let bits = crate::identity::puzzle_bits(&alice.node_id());
    let too_hard = u8::try_from(bits + 1).unwrap();
    assert!(matches!(
        ShareRecord::verify(r.as_bytes(), too_hard),
        Err(Error::PuzzleNotSolved { .. })
    ));
}

#[test]
fn bad_names_and_self_shares_are_refused() {
    let (alice, bob) = (id(), id());
    let b = body(1);
    let g = Grant::Live {
        key: &[1; 32],
        body: &b,
    };
    for name in ["", ".", "..", "a/b", "a\0b", &"n".repeat(65)] {
        assert!(
            ShareRecord::sign(&alice, bob.public(), ShareId([1; 16]), 1, 0, name, g).is_err(),
            "{name:?}"
        );
    }
    assert!(ShareRecord::sign(&alice, alice.public(), ShareId([1; 16]), 1, 0, "a", g).is_err());
    assert!(ShareRecord::sign(&alice, bob.public(), ShareId([1; 16]), 0, 0, "a", g).is_err());
}

#[test]
fn replays_rollbacks_and_records_after_a_revocation_are_refused() {
    let (alice, bob) = (id(), id());
    let key = [7; 32];
    let s = ShareId([1; 16]);
    let r1 = live(&alice, &bob, s, 1, &key);
    let r2 = live(&alice, &bob, s, 2, &key);
    assert_eq!(admit(None, &r1).unwrap(), Admit::Store);
    assert_eq!(admit(Some(&r1), &r2).unwrap(), Admit::Store);
    assert_eq!(admit(Some(&r2), &r2).unwrap(), Admit::Same);
    assert!(matches!(
        admit(Some(&r2), &r1),
        Err(Error::ShareRollback {
            held: 2,
            offered: 1,
            ..
        })
    ));
    // The same seq with other bytes is a rollback too.
    let r2b = live(&alice, &bob, s, 2, &key);
    assert!(matches!(
        admit(Some(&r2), &r2b),
        Err(Error::ShareRollback { .. })
    ));
    let gone = ShareRecord::sign(&alice, bob.public(), s, 3, 0, "photos", Grant::Revoked).unwrap();
    assert_eq!(admit(Some(&r2), &gone).unwrap(), Admit::Store);
    assert_eq!(admit(Some(&gone), &gone).unwrap(), Admit::Same);
    let r4 = live(&alice, &bob, s, 4, &key);
    assert!(matches!(
        admit(Some(&gone), &r4),
        Err(Error::ShareRevoked { .. })
    ));
    // Another share's record is not comparable.
    let other = live(&alice, &bob, ShareId([9; 16]), 5, &key);
    assert!(matches!(
        admit(Some(&r1), &other),
        Err(Error::BadShareRecord { .. })
    ));
}
