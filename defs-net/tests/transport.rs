//! The TCP security protocols a node offers and accepts (`[node] tcp_security`): a default node
//! accepts TLS 1.3 and noise peers alike, a client that speaks only noise stores and fetches
//! whole files through default nodes, and a node limited to TLS refuses a noise-only peer with
//! a negotiation error. (QUIC: `quic.rs`.)

use std::sync::Arc;
use std::time::Duration;

use defs_core::config::TcpSecurity;
use defs_core::identity::Identity;
use defs_core::pipeline::LayoutConfig;
use defs_net::commands::layout_for;
use defs_net::devnet::DEVNET_DIFFICULTY;
use defs_net::node::keypair;
use defs_net::protocol::codec::ShardCodec;
use defs_net::protocol::{Request, Response};
use defs_net::test_utils::TestCluster;
use defs_net::{Config, Multiaddr, Node};
use libp2p::{noise, tcp, tls, yamux};

use crate::util::{Bare, NoAnswer, answer, hash_file, random_file, timeout};

type ShardSwarm = libp2p::Swarm<Bare<ShardCodec>>;

/// A bare swarm of a new identity that speaks the shard protocol over TCP with one security
/// protocol only.
fn swarm_with(security: TcpSecurity) -> ShardSwarm {
    let key = keypair(&Identity::generate(DEVNET_DIFFICULTY)).unwrap();
    let behaviour = |_: &libp2p::identity::Keypair| Bare::new(ShardCodec::default());
    let builder = libp2p::SwarmBuilder::with_existing_identity(key).with_tokio();
    match security {
        TcpSecurity::Tls => builder
            .with_tcp(
                tcp::Config::default(),
                tls::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .build(),
        TcpSecurity::Noise => builder
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .build(),
    }
}

/// Dials `addr` and asks its node for `Info`: the answer, or the reason the connection failed.
async fn ask_info(swarm: &mut ShardSwarm, addr: Multiaddr) -> Result<Response, String> {
    let peer = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("{addr} has no /p2p/"),
    };
    swarm.dial(addr).unwrap();
    let id = swarm.behaviour_mut().rr.send_request(&peer, Request::Info);
    answer(swarm, id).await.map_err(|e| match e {
        NoAnswer::Dial(why) => why,
        NoAnswer::Request(e) => e.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_default_node_accepts_tls_and_noise_peers() {
    let cluster = TestCluster::start(1).await;
    let addr = cluster.net.node(0).unwrap().addrs[0].clone();
    for security in [TcpSecurity::Tls, TcpSecurity::Noise] {
        let mut swarm = swarm_with(security);
        match ask_info(&mut swarm, addr.clone()).await {
            Ok(Response::Info(info)) => assert!(info.storage, "{security:?}: {info:?}"),
            other => panic!("{security:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_noise_only_client_puts_and_gets_through_default_nodes() {
    let cluster = TestCluster::start(3).await;
    let identity = Arc::new(Identity::generate(DEVNET_DIFFICULTY));
    let client = timeout(
        cluster
            .net
            .client_with_security(identity, &[TcpSecurity::Noise]),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 3 << 20, 47);
    let layout = layout_for(&LayoutConfig::default(), "rs-size", Some((2, 1))).unwrap();
    let report = timeout(client.put_file(&src, &layout, None)).await.unwrap();
    assert_eq!(report.peers, 3);
    let out = dir.path().join("out");
    timeout(client.get_file(report.file, &out, None))
        .await
        .unwrap();
    assert_eq!(hash_file(&out), hash_file(&src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_only_node_refuses_a_noise_only_peer_and_serves_a_tls_one() {
    let identity = Identity::generate(DEVNET_DIFFICULTY);
    let node = Node::spawn(
        &identity,
        Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            mdns: false,
            peer_difficulty: DEVNET_DIFFICULTY,
            tcp_security: vec![TcpSecurity::Tls],
            ..Config::default()
        },
    )
    .await
    .unwrap();
    let addr = node.wait_listening(Duration::from_secs(30)).await.unwrap()[0].clone();

    let err = ask_info(&mut swarm_with(TcpSecurity::Noise), addr.clone())
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("negotiat"), "{err}");
    // The same node answers a TLS peer (a client node: it refuses to store, by a reason).
    match ask_info(&mut swarm_with(TcpSecurity::Tls), addr).await {
        Ok(Response::Error(e)) => assert!(e.message.contains("does not store"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    node.shutdown().await;
}
