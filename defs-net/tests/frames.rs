//! A live node refuses a shard-protocol frame whose length prefix is over the limit, by the
//! prefix alone (it neither allocates nor waits for the body), and stays healthy.

use std::io;
use std::time::{Duration, Instant};

use defs_core::identity::Identity;
use defs_net::devnet::DEVNET_DIFFICULTY;
use defs_net::node::keypair;
use defs_net::protocol::{MAX_FRAME_LEN, SHARD_PROTOCOL};
use defs_net::test_utils::TestCluster;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, OutboundFailure, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, noise, tcp, yamux};

use crate::util::timeout;

/// Writes requests as raw bytes (no framing of its own) and reads whatever comes back, up to
/// 1 KiB.
#[derive(Clone, Default)]
struct RawCodec;

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
        // Header only, and the stream stays open: a node that waited for the body would hang.
        io.write_all(&req).await?;
        io.flush().await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_frame_is_refused_by_its_prefix_and_the_node_stays_healthy() {
    let cluster = TestCluster::start(1).await;
    let target = &cluster.net.node(0).unwrap();
    let identity = Identity::generate(DEVNET_DIFFICULTY);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair(&identity).unwrap())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::<RawCodec>::new(
                [(
                    StreamProtocol::new(SHARD_PROTOCOL),
                    ProtocolSupport::Outbound,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
            )
        })
        .unwrap()
        .build();
    let peer = target.node.peer_id();
    swarm.dial(target.addrs[0].clone()).unwrap();

    // A prefix one byte over the limit, then a few body bytes, then silence.
    let mut frame = (MAX_FRAME_LEN + 1).to_le_bytes().to_vec();
    frame.extend_from_slice(&[1, 2, 3, 4]);
    let started = Instant::now();
    let id = swarm.behaviour_mut().send_request(&peer, frame);
    let outcome = timeout(async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    ..
                }) if request_id == id => return Err(error),
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return Ok(response),
                _ => {}
            }
        }
    })
    .await;
    let took = started.elapsed();
    match outcome {
        Err(OutboundFailure::Io(_)) | Err(OutboundFailure::ConnectionClosed) => {}
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
