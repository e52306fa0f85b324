//! Two writers of one identity: machines racing for a released lease, and an old writer cut
//! off from the network that publishes the seq a new holder took (docs/namespace-publishing.md
//! §5). Exactly one record stands for each seq every reader agrees on; the other writer is
//! refused with a clear error and stops, and its changes stay in its own data dir.

use super::*;

/// A second data dir of `a`'s identity recovered from the network, and its publisher with
/// writer id `writer`.
async fn machine(a: &Env, writer: u8) -> (Env, Publisher) {
    let (dir, got) = recover_fresh(&a.identity, &a.net).await;
    got.unwrap();
    let mut m = Env::with(a.identity.clone(), a.net.clone());
    m.dir = dir;
    m.reopen();
    let p = m.publisher_as(writer);
    (m, p)
}

/// A fresh recovery of `a`'s identity loads seq `seq`, whose root has `has` and not `lacks`.
async fn recovers(a: &Env, seq: u64, has: &[u8], lacks: &[u8]) {
    let (fresh, got) = recover_fresh(&a.identity, &a.net).await;
    assert_eq!(got.unwrap().seq, seq);
    let r = open_recovered(&fresh);
    assert!(r.lookup(InodeNo::ROOT, has).is_ok());
    assert!(r.lookup(InodeNo::ROOT, lacks).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_machines_racing_for_a_released_lease_exactly_one_wins_the_other_is_refused() {
    let a = Env::new();
    tree(&a.db);
    let pa = a.publisher();
    pa.publish_now().await.unwrap();
    assert_eq!(pa.release().await.unwrap().seq, 2);
    let (b, pb) = machine(&a, 3).await;
    let db_b = &b.db;
    let (c, pc) = machine(&a, 4).await;
    let db_c = &c.db;
    // Both saw the release; both claim at once (as two `defs-mount`s do at start).
    let (rb, rc) = tokio::join!(pb.renew(), pc.renew());
    let (winner, (won, win_db), (loser, lose_db), err) = match (rb, rc) {
        (Ok(w), Err(e)) => (w, (&pb, db_b), (&pc, db_c), e),
        (Err(e), Ok(w)) => (w, (&pc, db_c), (&pb, db_b), e),
        (b, c) => panic!("exactly one claim must win: {b:?} / {c:?}"),
    };
    assert_eq!(winner.seq, 3);
    assert!(
        matches!(
            err,
            Error::RootRollback {
                held: 3,
                offered: 3,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("seq 3"), "{msg}");
    // The loser has stopped: a later change is refused too, and it never collects.
    lose_db.mkdir(InodeNo::ROOT, b"loser", &O, t()).unwrap();
    assert!(matches!(
        loser.publish_now().await.unwrap_err(),
        Error::RootRollback { .. }
    ));
    assert!(!loser.holds_newest().await.unwrap());
    assert!(!loser.may_collect().await);
    // ... and its change is still in its own DB, not lost, not published.
    assert!(lose_db.lookup(InodeNo::ROOT, b"loser").is_ok());
    // The winner writes on; a fresh recovery shows the winner's namespace.
    win_db.mkdir(InodeNo::ROOT, b"winner", &O, t()).unwrap();
    assert_eq!(won.publish_now().await.unwrap().seq, 4);
    recovers(&a, 4, b"winner", b"loser").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_writer_publishing_the_seq_a_new_holder_took_is_refused_and_loses_nothing() {
    let a = Env::new();
    tree(&a.db);
    let pa = a.publisher();
    assert_eq!(pa.publish_now().await.unwrap().seq, 1);
    // B takes over (--force after A's lease ran out: A is cut off, not dead).
    let (b, pb) = machine(&a, 3).await;
    let db_b = &b.db;
    assert_eq!(pb.renew().await.unwrap().seq, 2);
    db_b.mkdir(InodeNo::ROOT, b"by-b", &O, t()).unwrap();
    // A, unaware, publishes its own seq 2 where B's is held: refused as a rollback.
    a.db.mkdir(InodeNo::ROOT, b"by-a", &O, t()).unwrap();
    let err = pa.publish_now().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::RootRollback {
                held: 2,
                offered: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(!pa.may_collect().await);
    assert!(matches!(
        pa.publish_now().await.unwrap_err(),
        Error::RootRollback { .. }
    ));
    // Nothing lost: A's change is in A's DB; the network still names B's seq 2.
    assert!(a.db.lookup(InodeNo::ROOT, b"by-a").is_ok());
    for i in 0..NODES {
        let held = a.net.root_on(i, a.identity.node_id()).unwrap();
        let rec = RootRecord::verify(&held, 0).unwrap();
        assert_eq!(rec.seq(), 2);
        assert_eq!(
            rec.open_body(&a.identity).unwrap().writer,
            WriterId([3; 16])
        );
    }
    assert_eq!(pb.publish_now().await.unwrap().seq, 3);
    recovers(&a, 3, b"by-b", b"by-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_records_of_one_seq_from_a_partition_are_a_conflict_every_reader_resolves_alike() {
    let a = Env::new();
    tree(&a.db);
    let pa = a.publisher();
    assert_eq!(pa.publish_now().await.unwrap().seq, 1);
    // A partition: B's takeover reaches nodes 0-2, A's own seq 2 (with a change) nodes 3-4.
    let (b, pb) = machine(&a, 3).await;
    let db_b = &b.db;
    for i in 3..NODES {
        a.net.set_up(i, false);
    }
    assert_eq!(pb.renew().await.unwrap().seq, 2);
    for i in 0..NODES {
        a.net.set_up(i, i >= 3);
    }
    a.db.mkdir(InodeNo::ROOT, b"by-a", &O, t()).unwrap();
    assert_eq!(pa.publish_now().await.unwrap().seq, 2);
    for i in 0..NODES {
        a.net.set_up(i, true);
    }
    // Healed: both seq-2 records are found. Each reader loads the same one and refuses the
    // other as a conflict, saying so.
    let mut loaded = Vec::new();
    for _ in 0..2 {
        let (fresh, got) = recover_fresh(&a.identity, &a.net).await;
        let got = got.unwrap();
        assert_eq!(got.seq, 2);
        let conflict: Vec<_> = got
            .dropped
            .iter()
            .filter(|d| d.reason.contains("a conflict: seq 2 names two records"))
            .collect();
        assert_eq!(conflict.len(), 1, "{:?}", got.dropped);
        assert!(conflict[0].reason.contains("host-3") && conflict[0].reason.contains("host-9"));
        loaded.push(dump_published(&open_recovered(&fresh)));
    }
    assert_eq!(loaded[0], loaded[1], "every reader picks the same record");
    // Nothing lost: A's change is in A's DB whichever was picked. The next record of either
    // writer (B writes on) supersedes both on every node, and the other writer is then refused.
    assert!(a.db.lookup(InodeNo::ROOT, b"by-a").is_ok());
    db_b.mkdir(InodeNo::ROOT, b"by-b", &O, t()).unwrap();
    assert_eq!(pb.publish_now().await.unwrap().seq, 3);
    let err = pa.publish_now().await;
    match err {
        Err(Error::RootRollback { held: 3, .. }) => {}
        other => panic!("A must be refused once B published seq 3: {other:?}"),
    }
    let (fresh, got) = recover_fresh(&a.identity, &a.net).await;
    assert_eq!(got.unwrap().seq, 3);
    assert!(
        open_recovered(&fresh)
            .lookup(InodeNo::ROOT, b"by-b")
            .is_ok()
    );
}
