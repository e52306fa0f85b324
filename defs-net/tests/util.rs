//! Shared helpers: random files, streaming hashes, timeouts.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Every test operation ends after this.
pub(crate) const T: Duration = Duration::from_secs(120);

/// Writes `size` pseudo-random bytes (xorshift, seeded) to `path` in 1 MiB chunks.
pub(crate) fn random_file(path: &Path, size: u64, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// BLAKE3 of a file, streamed.
pub(crate) fn hash_file(path: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    *h.finalize().as_bytes()
}

/// Runs `f` with the test timeout.
pub(crate) async fn timeout<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f)
        .await
        .expect("test step timed out")
}

/// Peak resident memory of this process (VmHWM), bytes.
pub(crate) fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A bare peer's behaviour: the shard protocol through codec `C`, and ping, which a DeFS node
/// requires of its peers (it closes a connection whose peer does not answer pings).
#[derive(libp2p::swarm::NetworkBehaviour)]
pub(crate) struct Bare<C: libp2p::request_response::Codec + Clone + Send + 'static> {
    pub(crate) rr: libp2p::request_response::Behaviour<C>,
    pub(crate) ping: libp2p::ping::Behaviour,
}

impl<C: libp2p::request_response::Codec<Protocol = libp2p::StreamProtocol> + Clone + Send + 'static>
    Bare<C>
{
    /// The shard protocol (outbound only) through `codec`, and ping.
    pub(crate) fn new(codec: C) -> Self {
        Bare {
            rr: libp2p::request_response::Behaviour::with_codec(
                codec,
                [(
                    libp2p::StreamProtocol::new(defs_net::protocol::SHARD_PROTOCOL),
                    libp2p::request_response::ProtocolSupport::Outbound,
                )],
                libp2p::request_response::Config::default().with_request_timeout(T),
            ),
            ping: libp2p::ping::Behaviour::default(),
        }
    }
}

/// Why a bare peer's request got no answer.
#[derive(Debug)]
pub(crate) enum NoAnswer {
    /// The connection could not be made (the reason, as libp2p gives it).
    Dial(String),
    /// The request failed on an established connection.
    Request(libp2p::request_response::OutboundFailure),
}

/// Waits for the answer to request `id` of a bare peer (or why there is none).
pub(crate) async fn answer<C>(
    swarm: &mut libp2p::Swarm<Bare<C>>,
    id: libp2p::request_response::OutboundRequestId,
) -> Result<C::Response, NoAnswer>
where
    C: libp2p::request_response::Codec<Protocol = libp2p::StreamProtocol> + Clone + Send + 'static,
{
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;
    timeout(async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return Err(NoAnswer::Dial(format!("{error:#}")));
                }
                SwarmEvent::Behaviour(BareEvent::Rr(Event::OutboundFailure {
                    request_id,
                    error,
                    ..
                })) if request_id == id => return Err(NoAnswer::Request(error)),
                SwarmEvent::Behaviour(BareEvent::Rr(Event::Message {
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                })) if request_id == id => return Ok(response),
                _ => {}
            }
        }
    })
    .await
}
