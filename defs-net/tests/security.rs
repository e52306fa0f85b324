//! Refused requests: forged or missing signatures, deletes by non-owners, replays, oversized
//! messages, full quotas.

use std::sync::Arc;

use defs_core::identity::{Identity, SignDomain};
use defs_core::types::ShardId;
use defs_net::devnet::DEVNET_DIFFICULTY;
use defs_net::protocol::{Auth, ErrorCode, MAX_SHARD_LEN, Request};
use defs_net::test_utils::TestCluster;
use defs_net::{Client, Error, PeerId};

use crate::util::timeout;

fn shard(n: usize, seed: u8) -> (ShardId, Vec<u8>) {
    let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
    (ShardId(*blake3::hash(&data).as_bytes()), data)
}

fn code(e: &Error) -> Option<ErrorCode> {
    e.remote_code()
}

/// Sends `node` a raw `Store` request, bypassing the client's own signing and checks.
async fn store(
    client: &Client,
    node: PeerId,
    id: ShardId,
    auth: Auth,
    crc: u32,
    data: Vec<u8>,
) -> Result<(), Error> {
    let request = Request::Store {
        id,
        auth,
        crc,
        data: data.into(),
    };
    client.node().request(node, request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_missing_and_replayed_signatures_are_refused() {
    let cluster = TestCluster::start(2).await;
    let client = cluster.client().await;
    let node = cluster.net.node(0).unwrap().node.peer_id();
    let (id, data) = shard(10_000, 1);
    let crc = crc32fast::hash(&data);

    // A zero ("missing") signature.
    let mut auth = client.auth(SignDomain::StoreShard, &id, data.len() as u32);
    auth.signature = [0; 64];
    let err = store(&client, node, id, auth, crc, data.clone())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadSignature), "{err}");

    // Signed for another shard length.
    let auth = client.auth(SignDomain::StoreShard, &id, 5);
    let err = store(&client, node, id, auth, crc, data.clone())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadSignature), "{err}");

    // A delete signature used for a store (wrong domain).
    let auth = client.auth(SignDomain::DeleteShard, &id, data.len() as u32);
    let err = store(&client, node, id, auth, crc, data.clone())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadSignature), "{err}");

    // Someone else's public key with our signature.
    let other = Identity::generate(0);
    let mut auth = client.auth(SignDomain::StoreShard, &id, data.len() as u32);
    auth.public_key = other.public().to_bytes();
    let err = store(&client, node, id, auth, crc, data.clone())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadSignature), "{err}");

    // Garbage public key.
    let auth = Auth {
        public_key: [7; 33],
        timestamp_ms: defs_net::node::now_ms(),
        nonce: [1; 16],
        signature: [1; 64],
    };
    let err = store(&client, node, id, auth, crc, data.clone())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadSignature), "{err}");

    // Nothing was stored.
    assert_eq!(client.has(node, vec![id]).await.unwrap(), vec![None]);

    // A valid store, then its exact replay.
    let auth = client.auth(SignDomain::StoreShard, &id, data.len() as u32);
    store(&client, node, id, auth.clone(), crc, data.clone())
        .await
        .unwrap();
    let err = store(&client, node, id, auth, crc, data.clone())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Replay), "{err}");

    // Bad CRC (damaged in transit) and bytes that do not hash to the id.
    let auth = client.auth(SignDomain::StoreShard, &id, data.len() as u32);
    let err = store(&client, node, id, auth, crc ^ 1, data.clone())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Corrupt), "{err}");
    let (_, other_data) = shard(10_000, 2);
    let auth = client.auth(SignDomain::StoreShard, &id, other_data.len() as u32);
    let err = store(
        &client,
        node,
        id,
        auth,
        crc32fast::hash(&other_data),
        other_data,
    )
    .await
    .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Corrupt), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_owner_may_delete() {
    let cluster = TestCluster::start(2).await;
    let owner = cluster.client().await;
    let thief = cluster
        .client_for(Arc::new(Identity::generate(DEVNET_DIFFICULTY)))
        .await;
    let node = cluster.net.node(1).unwrap().node.peer_id();
    let (id, data) = shard(50_000, 3);
    timeout(owner.store_on(node, id, data.clone()))
        .await
        .unwrap();

    let err = timeout(thief.delete_on(node, id)).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::NotOwner), "{err}");
    assert_eq!(
        thief.fetch_from(node, id).await.unwrap(),
        data,
        "shard intact"
    );

    // A forged delete signature.
    let mut auth = owner.auth(SignDomain::DeleteShard, &id, 0);
    auth.signature[10] ^= 1;
    let err = owner
        .node()
        .request(node, Request::Delete { id, auth })
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadSignature), "{err}");

    timeout(owner.delete_on(node, id)).await.unwrap();
    assert_eq!(owner.has(node, vec![id]).await.unwrap(), vec![None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_shards_are_refused_before_sending() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let node = cluster.net.node(0).unwrap().node.peer_id();
    let data = vec![0u8; MAX_SHARD_LEN as usize + 1];
    let err = client
        .store_on(node, ShardId([1; 32]), data)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_quota_is_a_distinct_error_and_placement_moves_on() {
    let cluster = TestCluster::start_with_capacities(&[64 << 10, 1 << 30, 1 << 30, 1 << 30]).await;
    let client = cluster.client().await;
    let small = cluster.net.node(0).unwrap().node.peer_id();
    let (id, data) = shard(200_000, 4);
    let err = timeout(client.store_on(small, id, data)).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::QuotaFull), "{err}");

    // Whole files still go through, around the full node.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    crate::util::random_file(&src, 1 << 20, 8);
    let layout =
        defs_net::commands::layout_for(&Default::default(), "rs-size", Some((2, 1))).unwrap();
    let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();
    let out = dir.path().join("out");
    timeout(client.get_file(report.file, &out, None))
        .await
        .unwrap();
    assert_eq!(crate::util::hash_file(&out), crate::util::hash_file(&src));
}

/// Issue 22: a node answers `OwnerUsage` about the asking owner, and a shard every node refuses
/// for lack of room is a quota refusal (EDQUOT at the mount), not a generic failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_usage_tells_the_asker_its_figures_and_a_shard_nobody_takes_is_a_quota_refusal() {
    use defs_core::remote::{OutShard, ShardClient};
    let cluster = TestCluster::start_with_capacities(&[64 << 10, 64 << 10, 64 << 10]).await;
    let client = cluster.client().await;
    // Every node's first Info answer (asked at connection) is in before anything is stored: an
    // answer arriving after the first segment would show a node without room, which placement
    // then skips (no candidate: "no storage peers") instead of trying it. The next refresh is
    // INFO_REFRESH (30 s) away; this test takes well under a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let space = client.node().status().await.unwrap().owner_space;
        if space
            .iter()
            .filter(|s| !s.local && s.space.is_some())
            .count()
            == 3
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{space:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let peer = cluster.net.node(0).unwrap().node.peer_id();
    let (id, data) = shard(10_000, 9);
    timeout(client.store_on(peer, id, data)).await.unwrap();
    match timeout(client.node().request(peer, Request::OwnerUsage))
        .await
        .unwrap()
    {
        defs_net::protocol::Response::OwnerUsage(u) => {
            assert_eq!(u.used, 10_000, "{u:?}");
            assert_eq!(u.capacity, 64 << 10, "{u:?}");
            assert_eq!(u.node_used, 10_000, "{u:?}");
            assert_eq!(u.room(), (64 << 10) - 10_000, "{u:?}");
        }
        other => panic!("{other:?}"),
    }

    // A segment of three 40 kB shards fits once on the three nodes, not twice.
    let segment = |seed: u8| -> Vec<OutShard> {
        (0..3)
            .map(|i| {
                let (id, data) = shard(40_000, seed + i);
                OutShard::new(id, data)
            })
            .collect()
    };
    timeout(ShardClient::store_segment(&client, segment(20), 1))
        .await
        .unwrap();
    let err = timeout(ShardClient::store_segment(&client, segment(30), 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, defs_core::Error::QuotaRefused { .. }),
        "{err}"
    );
}
