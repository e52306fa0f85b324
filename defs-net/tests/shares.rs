//! Share records on storage nodes (issue 22): put by the owner near the recipient, listed by
//! the recipient, replaced only forward, final once revoked; forged, garbage, under-puzzle and
//! replayed records refused with their own codes.

use defs_core::identity::{Identity, puzzle_bits};
use defs_core::share::ShareRecord;
use defs_core::share::testing::record;
use defs_net::Client;
use defs_net::devnet::DEVNET_DIFFICULTY;
use defs_net::protocol::{ErrorCode, Request, Response};
use defs_net::test_utils::TestCluster;

use crate::util::timeout;

fn share(owner: &Identity, to: &Identity, seq: u64, revoked: bool) -> Vec<u8> {
    record(owner, to, 1, seq, revoked).as_bytes().to_vec()
}

fn seqs(found: &[Vec<u8>]) -> Vec<u64> {
    found
        .iter()
        .map(|b| ShareRecord::verify(b, 0).unwrap().seq())
        .collect()
}

async fn raw_put(client: &Client, peer: defs_net::PeerId, record: Vec<u8>) -> defs_net::Error {
    match client
        .node()
        .request(peer, Request::PutShare { record })
        .await
    {
        Err(e) => e,
        Ok(other) => panic!("accepted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn share_records_reach_their_recipient_go_forward_only_and_stop_at_revocation() {
    let cluster = TestCluster::start(3).await;
    let owner = cluster.client().await;
    let bob = std::sync::Arc::new(Identity::generate(DEVNET_DIFFICULTY));
    let recipient = cluster.client_for(bob.clone()).await;
    let a = owner.identity().clone();
    let listed = |c: &Client| {
        let c = c.clone();
        async move { timeout(c.find_share_records(bob_id(&c))).await.unwrap() }
    };
    fn bob_id(c: &Client) -> defs_core::types::NodeId {
        c.identity().node_id()
    }
    assert!(listed(&recipient).await.is_empty());
    assert_eq!(
        timeout(owner.put_share_record(share(&a, &bob, 1, false)))
            .await
            .unwrap(),
        3
    );
    assert_eq!(seqs(&listed(&recipient).await), [1]);
    let r2 = share(&a, &bob, 2, false);
    timeout(owner.put_share_record(r2.clone())).await.unwrap();
    assert_eq!(listed(&recipient).await, vec![r2]);
    // A replay of seq 1 is refused by every node.
    let err = timeout(owner.put_share_record(share(&a, &bob, 1, false)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no rollback"), "{err}");
    // Revoked: final, a later live record is refused as revoked.
    timeout(owner.put_share_record(share(&a, &bob, 3, true)))
        .await
        .unwrap();
    let err = timeout(owner.put_share_record(share(&a, &bob, 4, false)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            defs_net::Error::Core(defs_core::Error::ShareRevoked { .. })
        ),
        "{err}"
    );
    let now = listed(&recipient).await;
    assert_eq!(seqs(&now), [3]);
    assert!(ShareRecord::verify(&now[0], 0).unwrap().revoked());
    // Nothing is listed for a third identity.
    let eve = std::sync::Arc::new(Identity::generate(DEVNET_DIFFICULTY));
    let third = cluster.client_for(eve.clone()).await;
    assert!(
        timeout(third.find_share_records(eve.node_id()))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_refuse_forged_garbage_and_weak_share_records() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let node = cluster.net.node(0).unwrap().node.peer_id();
    let a = client.identity().clone();
    let bob = Identity::generate(0);
    let good = share(&a, &bob, 5, false);

    // Another owner's key put in the header of a's signed record.
    let mut forged = good.clone();
    forged[10..43].copy_from_slice(&Identity::generate(0).public().to_bytes());
    let err = timeout(raw_put(&client, node, forged)).await;
    assert_eq!(err.remote_code(), Some(ErrorCode::BadSignature), "{err}");
    // The recipient swapped: the signature covers it.
    let mut redirected = good.clone();
    redirected[43..76].copy_from_slice(&Identity::generate(0).public().to_bytes());
    let err = timeout(raw_put(&client, node, redirected)).await;
    assert_eq!(err.remote_code(), Some(ErrorCode::BadSignature), "{err}");
    for bad in [vec![0x42; 300], good[..good.len() - 1].to_vec()] {
        let err = timeout(raw_put(&client, node, bad)).await;
        assert_eq!(err.remote_code(), Some(ErrorCode::BadShareRecord), "{err}");
    }
    let weak = loop {
        let w = Identity::generate(0);
        if puzzle_bits(&w.node_id()) < u32::from(DEVNET_DIFFICULTY) {
            break w;
        }
    };
    let err = timeout(raw_put(&client, node, share(&weak, &bob, 1, false))).await;
    assert_eq!(err.remote_code(), Some(ErrorCode::PuzzleNotSolved), "{err}");
    // None of it is listed.
    let ask = Request::ListShares {
        recipient: bob.node_id(),
    };
    match timeout(client.node().request(node, ask)).await.unwrap() {
        Response::Shares(r) => assert!(r.is_empty(), "{} kept", r.len()),
        other => panic!("{other:?}"),
    }
}
