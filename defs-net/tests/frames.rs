//! A live node refuses a shard-protocol frame whose length prefix is over the limit, by the
//! prefix alone (it neither allocates nor waits for the body), answers frames of another wire
//! version, garbage and truncated frames with a refusal that says why, and stays healthy: other
//! transfers, on the same node at the same time, go on.

use std::io;
use std::time::{Duration, Instant};

use defs_core::identity::Identity;
use defs_net::devnet::DEVNET_DIFFICULTY;
use defs_net::node::keypair;
use defs_net::protocol::{ErrorCode, MAX_FRAME_LEN, RemoteError, Request, Response, WIRE_VERSION};
use defs_net::test_utils::TestCluster;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::{self, OutboundFailure};
use libp2p::{StreamProtocol, noise, tcp, yamux};

use crate::util::{Bare, NoAnswer, answer, timeout};

/// Writes requests as raw bytes (no framing of its own) and reads whatever comes back, up to
/// 1 KiB. With `close`, the request's write side is closed after the bytes (the node sees the
/// end of the stream); without, it stays open.
#[derive(Clone, Default)]
struct RawCodec {
    close: bool,
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("outbound only"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(1024).read_to_end(&mut buf).await?;
        if buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no response"));
        }
        Ok(buf)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        if self.close {
            io.close().await
        } else {
            io.flush().await
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(io::Error::other("outbound only"))
    }
}

type RawSwarm = libp2p::Swarm<Bare<RawCodec>>;

/// A bare peer of a new identity that speaks the shard protocol through [`RawCodec`], dialling
/// `addr`.
fn raw_swarm(close: bool, addr: libp2p::Multiaddr) -> RawSwarm {
    let identity = Identity::generate(DEVNET_DIFFICULTY);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair(&identity).unwrap())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| Bare::new(RawCodec { close }))
        .unwrap()
        .build();
    swarm.dial(addr).unwrap();
    swarm
}

/// Sends `frame` to `peer` and waits for the answer's bytes or the failure.
async fn exchange(
    swarm: &mut RawSwarm,
    peer: libp2p::PeerId,
    frame: Vec<u8>,
) -> Result<Vec<u8>, NoAnswer> {
    let id = swarm.behaviour_mut().rr.send_request(&peer, frame);
    answer(swarm, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_frame_is_refused_by_its_prefix_and_the_node_stays_healthy() {
    let cluster = TestCluster::start(1).await;
    let target = &cluster.net.node(0).unwrap();
    let peer = target.node.peer_id();
    let mut swarm = raw_swarm(false, target.addrs[0].clone());

    // A prefix one byte over the limit, then a few body bytes, then silence (the stream stays
    // open: a node that waited for the body would hang).
    let mut frame = (MAX_FRAME_LEN + 1).to_le_bytes().to_vec();
    frame.extend_from_slice(&[1, 2, 3, 4]);
    let started = Instant::now();
    let outcome = exchange(&mut swarm, peer, frame).await;
    let took = started.elapsed();
    match outcome {
        Err(NoAnswer::Request(OutboundFailure::Io(_) | OutboundFailure::ConnectionClosed)) => {}
        other => panic!("expected the node to drop the stream, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(10),
        "the node waited {took:?}: it did not refuse by the prefix"
    );

    // The node still serves: a normal request from a normal client works.
    let client = cluster.client().await;
    let data = vec![9u8; 4096];
    let shard = defs_core::types::ShardId(*blake3::hash(&data).as_bytes());
    timeout(client.store_on(peer, shard, data.clone()))
        .await
        .unwrap();
    assert_eq!(timeout(client.fetch_from(peer, shard)).await.unwrap(), data);
    assert!(!target.node.is_closed());
}

/// A frame of `body` with its length prefix.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(body.len()).unwrap().to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// The refusal a node answered with, from a raw answer.
fn refusal(answer: &[u8]) -> RemoteError {
    assert!(answer.len() >= 4, "short answer {answer:?}");
    match Response::decode(answer[4..].to_vec()).unwrap() {
        Response::Error(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_versions_garbage_and_truncated_frames_get_a_reason_and_harm_no_transfer() {
    let cluster = TestCluster::start(1).await;
    let target = &cluster.net.node(0).unwrap();
    let peer = target.node.peer_id();
    let client = cluster.client().await;
    let data = vec![5u8; 1 << 20];
    let shard = defs_core::types::ShardId(*blake3::hash(&data).as_bytes());
    timeout(client.store_on(peer, shard, data.clone()))
        .await
        .unwrap();
    // A well-behaved client keeps fetching while the bad frames arrive.
    let fetching = {
        let (client, data) = (client.clone(), data.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                assert_eq!(timeout(client.fetch_from(peer, shard)).await.unwrap(), data);
            }
        })
    };

    // A fetch frame of wire version 2 (a newer peer) and of version 0.
    let mut fetch = Request::Fetch {
        id: shard,
        range: None,
    }
    .encode()
    .unwrap()
    .header;
    let mut swarm = raw_swarm(false, target.addrs[0].clone());
    for version in [WIRE_VERSION + 1, 0] {
        fetch[0] = version;
        let e = refusal(&exchange(&mut swarm, peer, framed(&fetch)).await.unwrap());
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(
            e.message
                .contains(&format!("unsupported wire version {version}")),
            "{e:?}"
        );
    }
    // Garbage: an unknown tag, then random bytes.
    let e = refusal(
        &exchange(&mut swarm, peer, framed(&[WIRE_VERSION, 0xEE, 1, 2, 3]))
            .await
            .unwrap(),
    );
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("tag"), "{e:?}");
    let noise: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let e = refusal(&exchange(&mut swarm, peer, framed(&noise)).await.unwrap());
    assert_eq!(e.code, ErrorCode::BadRequest);
    // A fetch cut short: its prefix announces more than the stream carries before it ends.
    let mut swarm = raw_swarm(true, target.addrs[0].clone());
    fetch[0] = WIRE_VERSION;
    let mut cut = framed(&fetch);
    cut[0] += 10;
    let e = refusal(&exchange(&mut swarm, peer, cut).await.unwrap());
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("truncated"), "{e:?}");

    fetching.await.unwrap();
    assert!(!target.node.is_closed());
}
