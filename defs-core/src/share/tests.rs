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

mod views {
    use std::sync::Arc;

    use super::*;
    use crate::MetaDb;
    use crate::manifest::PackRange;
    use crate::namespace::{Content, NewInode, Timestamp};
    use crate::object::{MemorySource, Objects};
    use crate::pipeline::{FileKey, LayoutConfig, WrapKey};
    use crate::remote::memory::MemoryClient;
    use crate::share::publish::{Copies, open_view, store_view};
    use crate::types::InodeNo;

    const O: NewInode = NewInode {
        perm: 0o644,
        uid: 1,
        gid: 1,
    };

    fn data(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn objects(client: &Arc<MemoryClient>, wrap: u8) -> Objects {
        Objects::new(
            client.clone(),
            WrapKey::from_bytes([wrap; 32]),
            LayoutConfig::default(),
            None,
        )
    }

    /// A file `name` in `dir` whose stored content is `content`.
    fn file(db: &MetaDb, dir: InodeNo, name: &[u8], content: Content) -> InodeNo {
        let ino = db
            .create(dir, name, &O, true, Timestamp::new(1, 0))
            .unwrap()
            .0
            .ino;
        let g = db.mark_dirty(ino, Timestamp::new(1, 0)).unwrap();
        db.begin_upload(ino).unwrap();
        db.finish_upload(ino, g, content).unwrap();
        ino
    }

    async fn put(objects: &Objects, bytes: &[u8]) -> Content {
        let s = objects
            .put(
                Arc::new(MemorySource(bytes.to_vec())),
                bytes.len() as u64,
                None,
                &|_| {},
            )
            .await
            .unwrap();
        Content::Stored {
            file: s.file,
            key: *s.key.as_bytes(),
            offset: 0,
            len: bytes.len() as u64,
        }
    }

    /// The bytes of `name` in the recipient's view, read with the recipient's own objects.
    async fn read(view: &MetaDb, objects: &Objects, path: &[&[u8]]) -> Vec<u8> {
        let mut ino = InodeNo::ROOT;
        for name in path {
            ino = view.lookup(ino, name).unwrap().ino;
        }
        let Content::Stored {
            file,
            key,
            offset,
            len,
        } = view.content(ino).unwrap()
        else {
            panic!("no content")
        };
        let key = FileKey::from_bytes(key);
        let m = objects.manifest(file, &key).await.unwrap();
        let all = objects.read_all(file, &m, &key, "test").await.unwrap();
        all[offset as usize..(offset + len) as usize].to_vec()
    }

    fn opened(r: &ShareRecord, who: &Identity) -> ShareBody {
        let r = ShareRecord::verify(r.as_bytes(), 0).unwrap();
        match r.open(who).unwrap() {
            Opened::Live { body, .. } => body,
            Opened::Revoked => panic!("revoked"),
        }
    }

    #[tokio::test]
    async fn a_recipient_reads_the_shared_subtree_bit_exact_follows_it_and_nothing_else() {
        let client = Arc::new(MemoryClient::new(4));
        let (owner_objects, bob_objects) = (objects(&client, 7), objects(&client, 8));
        let (alice, bob, eve) = (id(), id(), id());
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open_with(&dir.path().join("owner"), None).unwrap();

        let shared = db
            .mkdir(InodeNo::ROOT, b"shared", &O, Timestamp::new(1, 0))
            .unwrap()
            .ino;
        let a = data(1, 300_000);
        file(&db, shared, b"a", put(&owner_objects, &a).await);
        let secret = data(2, 5_000);
        file(
            &db,
            InodeNo::ROOT,
            b"secret",
            put(&owner_objects, &secret).await,
        );
        // A pack holding one file inside the share and one outside it.
        let (inside, outside) = (data(3, 1_000), data(4, 1_500));
        let mut packed = inside.clone();
        packed.extend_from_slice(&outside);
        let members = vec![
            PackRange {
                offset: 0,
                len: 1_000,
            },
            PackRange {
                offset: 1_000,
                len: 1_500,
            },
        ];
        let pack = owner_objects
            .put_pack(Arc::new(MemorySource(packed)), members, &|_| {})
            .await
            .unwrap();
        let in_pack = |offset, len| Content::Stored {
            file: pack.file,
            key: *pack.key.as_bytes(),
            offset,
            len,
        };
        file(&db, shared, b"small", in_pack(0, 1_000));
        file(&db, InodeNo::ROOT, b"other", in_pack(1_000, 1_500));

        let mut copies = Copies::new();
        let key = [9u8; 32];
        let share = ShareId([5; 16]);
        let body = store_view(&db, &owner_objects, shared, 1, &mut copies)
            .await
            .unwrap();
        let sign = |seq: u64, body: &ShareBody| {
            let grant = Grant::Live { key: &key, body };
            ShareRecord::sign(&alice, bob.public(), share, seq, seq, "shared", grant).unwrap()
        };
        let r1 = sign(1, &body);

        let view = open_view(&bob_objects, &opened(&r1, &bob), &dir.path().join("bob1"))
            .await
            .unwrap();
        assert_eq!(read(&view, &bob_objects, &[b"a"]).await, a);
        assert_eq!(read(&view, &bob_objects, &[b"small"]).await, inside);
        // The packed file is named by a copy of its own, never by the pack and its key.
        let small = view.lookup(InodeNo::ROOT, b"small").unwrap().ino;
        match view.content(small).unwrap() {
            Content::Stored { file, .. } => assert_ne!(file, pack.file),
            Content::Empty => panic!("no content"),
        }
        assert!(view.lookup(InodeNo::ROOT, b"secret").is_err());
        assert!(view.lookup(InodeNo::ROOT, b"other").is_err());
        assert!(view.lookup(InodeNo::ROOT, b"shared").is_err());
        // A third identity opens nothing.
        assert!(
            ShareRecord::verify(r1.as_bytes(), 0)
                .unwrap()
                .open(&eve)
                .is_err()
        );

        // The owner adds a file: the next record names a view that has it.
        let b = data(5, 70_000);
        file(&db, shared, b"b", put(&owner_objects, &b).await);
        let body2 = store_view(&db, &owner_objects, shared, 2, &mut copies)
            .await
            .unwrap();
        let r2 = sign(2, &body2);
        assert_eq!(admit(Some(&r1), &r2).unwrap(), Admit::Store);
        let view2 = open_view(&bob_objects, &opened(&r2, &bob), &dir.path().join("bob2"))
            .await
            .unwrap();
        assert_eq!(read(&view2, &bob_objects, &[b"b"]).await, b);
        assert_eq!(read(&view2, &bob_objects, &[b"a"]).await, a);

        // Revoked, then a file written: the revocation names no view, and no record Bob can
        // open names the new file.
        let gone =
            ShareRecord::sign(&alice, bob.public(), share, 3, 3, "shared", Grant::Revoked).unwrap();
        assert_eq!(admit(Some(&r2), &gone).unwrap(), Admit::Store);
        assert_eq!(gone.open(&bob).unwrap(), Opened::Revoked);
        file(
            &db,
            shared,
            b"after",
            put(&owner_objects, &data(6, 9_000)).await,
        );
        assert!(view2.lookup(InodeNo::ROOT, b"after").is_err());
        // A replay of the old live record is refused once the revocation is held.
        assert!(matches!(
            admit(Some(&gone), &r2),
            Err(Error::ShareRevoked { .. })
        ));

        // A record naming a view with another trailer (a forged or swapped body) is refused.
        let mut wrong = body2;
        wrong.view_trailer[0] ^= 1;
        assert!(
            open_view(&bob_objects, &wrong, &dir.path().join("bob3"))
                .await
                .is_err()
        );
        let mut wrong = body2;
        wrong.view_key[0] ^= 1;
        assert!(
            open_view(&bob_objects, &wrong, &dir.path().join("bob4"))
                .await
                .is_err()
        );
    }
}
