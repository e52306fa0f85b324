//! Root records on storage nodes and in the DHT: kept newest first, found again, never rolled
//! back; forged, foreign, under-puzzle and garbage records refused with their own codes; a
//! restarted node keeps what it acknowledged; the DHT alone finds a record.

use std::sync::Arc;
use std::time::Duration;

use defs_core::identity::{Identity, puzzle_bits};
use defs_core::remote::RootStore;
use defs_core::root_record::RootRecord;
use defs_net::devnet::{DEVNET_DIFFICULTY, start_storage_node};
use defs_net::protocol::{ErrorCode, Request, Response};
use defs_net::test_utils::{TEST_CAPACITY, TestCluster};
use defs_net::{Client, Error};

use crate::util::timeout;

fn record(id: &Identity, seq: u64) -> Vec<u8> {
    defs_core::root_record::testing::record(id, seq).into_bytes()
}

fn seqs(found: &[Vec<u8>]) -> Vec<u64> {
    let mut s: Vec<u64> = found
        .iter()
        .map(|b| RootRecord::verify(b, 0).unwrap().seq())
        .collect();
    s.sort();
    s.dedup();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn root_records_are_kept_newest_first_and_never_rolled_back() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    let id = client.identity().clone();
    let owner = id.node_id();
    assert!(
        timeout(client.find_roots(owner)).await.unwrap().is_empty(),
        "nothing yet"
    );
    let (r1, r2) = (record(&id, 1), record(&id, 2));
    assert_eq!(timeout(client.put_root(r1.clone())).await.unwrap(), 3);
    assert_eq!(seqs(&timeout(client.find_roots(owner)).await.unwrap()), [1]);
    assert_eq!(timeout(client.put_root(r2.clone())).await.unwrap(), 3);
    // A resend of the same bytes is acknowledged again (a publisher's retry).
    assert_eq!(timeout(client.put_root(r2.clone())).await.unwrap(), 3);
    let found = timeout(client.find_roots(owner)).await.unwrap();
    assert_eq!(found, vec![r2.clone()], "every node and the DHT hold seq 2");

    // Rollback: seq 1 again, and seq 2 with other bytes. The error names the newer seq.
    for stale in [r1, record(&id, 2)] {
        let err = timeout(client.put_root(stale)).await.unwrap_err();
        assert!(
            matches!(
                err,
                defs_core::Error::RootRollback {
                    held: 2,
                    offered: _,
                    ..
                }
            ),
            "{err}"
        );
    }
    // Another reader (a fresh machine with the same key, once this one is gone) finds seq 2.
    client.node().shutdown().await;
    drop(client);
    let other = cluster.client_for(id.clone()).await;
    assert_eq!(timeout(other.find_roots(owner)).await.unwrap(), vec![r2]);
}

/// Sends node `peer` a raw `PutRoot`, bypassing the client's own checks.
async fn raw_put(client: &Client, peer: defs_net::PeerId, record: Vec<u8>) -> Result<(), Error> {
    match client
        .node()
        .request(peer, Request::PutRoot { record })
        .await?
    {
        Response::Ack => Ok(()),
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_refuse_forged_foreign_weak_and_garbage_root_records() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let node = cluster.net.node(0).unwrap().node.peer_id();
    let id = client.identity().clone();
    let good = record(&id, 5);

    // A flipped signature bit.
    let mut forged = good.clone();
    let n = forged.len();
    forged[n - 3] ^= 0x10;
    let err = timeout(raw_put(&client, node, forged)).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::BadSignature), "{err}");

    // Another owner's key in the header of this owner's signed record.
    let thief = Identity::generate(DEVNET_DIFFICULTY);
    let mut foreign = good.clone();
    foreign[10..43].copy_from_slice(&thief.public().to_bytes());
    let err = timeout(raw_put(&client, node, foreign)).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::BadSignature), "{err}");

    // An owner whose identity does not solve the node's puzzle.
    let weak = loop {
        let w = Identity::generate(0);
        if puzzle_bits(&w.node_id()) < u32::from(DEVNET_DIFFICULTY) {
            break w;
        }
    };
    let err = timeout(raw_put(&client, node, record(&weak, 1)))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::PuzzleNotSolved), "{err}");

    // Garbage, and a truncated record.
    for bad in [vec![0x42; 300], good[..good.len() - 1].to_vec()] {
        let err = timeout(raw_put(&client, node, bad)).await.unwrap_err();
        assert_eq!(err.remote_code(), Some(ErrorCode::BadRequest), "{err}");
    }

    // Nothing of that was kept; the good one is, and an older one is then refused.
    let ask = Request::GetRoot {
        owner: id.node_id(),
    };
    let err = timeout(client.node().request(node, ask.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::NotFound), "{err}");
    timeout(raw_put(&client, node, good.clone())).await.unwrap();
    let err = timeout(raw_put(&client, node, record(&id, 4)))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::Rollback), "{err}");
    match timeout(client.node().request(node, ask)).await.unwrap() {
        Response::Root(bytes) => assert_eq!(bytes, good),
        other => panic!("{other:?}"),
    }

    // Oversize: refused before it is sent (and by the node's decoder, see protocol tests).
    let huge = vec![0; defs_net::protocol::MAX_ROOT_LEN + 1];
    let err = timeout(raw_put(&client, node, huge)).await.unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_keeps_the_root_record_it_acknowledged() {
    let mut cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    let id = client.identity().clone();
    let r3 = record(&id, 3);
    assert_eq!(timeout(client.put_root(r3.clone())).await.unwrap(), 2);
    cluster.net.kill(0).await;
    let dir = cluster.dir.path().join("node-0");
    let restarted = timeout(start_storage_node(
        &dir,
        TEST_CAPACITY,
        cluster.net.bootstrap(),
        Duration::from_millis(200),
        false,
        DEVNET_DIFFICULTY,
        None,
    ))
    .await
    .unwrap();
    // Ask the restarted node's own store (a request to itself runs the same service).
    let own = Client::new(restarted.node.clone(), restarted.identity.clone());
    let answer = timeout(own.node().request(
        restarted.node.peer_id(),
        Request::GetRoot {
            owner: id.node_id(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(answer, Response::Root(r3));
    restarted.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dht_alone_finds_a_root_record_and_refuses_a_rollback() {
    let cluster = TestCluster::start(3).await;
    let owner_id = Arc::new(Identity::generate(DEVNET_DIFFICULTY));
    let owner = owner_id.node_id();
    // Only the DHT gets seq 2: no node keeps it in its store.
    let writer = cluster.client_for(owner_id.clone()).await;
    timeout(writer.node().dht_put(record(&owner_id, 2)))
        .await
        .unwrap();
    // Quorum::One answers after the first node took it: wait until all three hold it (asked
    // by a machine of another identity, whose own DHT store is empty).
    let probe = cluster.client().await;
    let mut copies = 0;
    for _ in 0..100 {
        copies = timeout(probe.node().dht_get(owner)).await.unwrap().len();
        if copies == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(copies, 3, "every DHT node holds seq 2");
    // One machine per identity at a time: the same peer id twice confuses the nodes.
    writer.node().shutdown().await;
    drop(writer);
    // Another machine offers seq 1 to the DHT: its own store had nothing, so it sends it,
    // and the DHT nodes' filter refuses the rollback.
    let stale = cluster.client_for(owner_id.clone()).await;
    let _ = timeout(stale.node().dht_put(record(&owner_id, 1))).await;
    stale.node().shutdown().await;
    drop(stale);
    // A third machine finds seq 2 through the DHT only (the nodes answer "not found").
    let reader = cluster.client_for(owner_id.clone()).await;
    let found = timeout(reader.find_roots(owner)).await.unwrap();
    assert_eq!(seqs(&found), [2], "{} candidates", found.len());
    // The DHT put refuses forged records before sending.
    let mut forged = record(&owner_id, 3);
    forged[50] ^= 1;
    assert!(timeout(reader.node().dht_put(forged)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_storage_peer_a_root_record_cannot_be_put_or_found() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let id = client.identity().clone();
    drop(cluster);
    // The client's only peer is gone: wait until it notices.
    for _ in 0..100 {
        if client.node().candidates(0).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = timeout(client.put_root(record(&id, 1))).await.unwrap_err();
    assert!(
        matches!(err, defs_core::Error::RootUnreachable { .. }),
        "{err}"
    );
    let err = timeout(client.find_roots(id.node_id())).await.unwrap_err();
    assert!(
        matches!(err, defs_core::Error::RootUnreachable { .. }),
        "{err}"
    );
}
