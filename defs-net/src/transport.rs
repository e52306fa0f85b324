//! The node's transports, chosen in one place ([`build`]): TCP with TLS 1.3 or noise and yamux,
//! and QUIC. Which one carries a connection follows from the address dialled (`/tcp/…` or
//! `/udp/…/quic-v1`) and, on TCP, from the security protocols the two ends share: the dialler
//! proposes them in the order of [`TcpSecurity`] (`[node] tcp_security` in config.toml) and
//! the listener accepts any it has.
//!
//! Why noise first: shards are bulk bytes, and a connection's cipher is paid once per byte at
//! each end. Measured side by side (`docs/performance.md`, "Transports side by side"), TCP +
//! noise costs the least CPU per GiB; libp2p-tls 0.7 hard-codes ChaCha20-Poly1305 as its first
//! cipher suite, so TLS pays the same cipher plus its record layer, and QUIC pays per-packet work
//! on top. TLS stays selectable (for peers that want it, and for when AES-GCM can be chosen);
//! QUIC for reachability over UDP. Both authenticate the peer's libp2p key, as DESIGN §3 asks.

use std::io;

use defs_core::config::TcpSecurity;
use futures::future::{BoxFuture, Either};
use futures::{AsyncRead, AsyncWrite, FutureExt, TryFutureExt};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::{PeerId, identity, noise, quic, tcp, tls, yamux};

use crate::error::{Error, Result};

/// The swarm's transport: TCP (security negotiated from `security`, then yamux) or QUIC.
///
/// # Errors
/// [`Error::Setup`] when `security` is empty or a key cannot make a TLS certificate or noise
/// keys.
pub fn build(
    key: &identity::Keypair,
    security: &[TcpSecurity],
) -> Result<Boxed<(PeerId, StreamMuxerBox)>> {
    let upgrade = Security::new(key, security)?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(libp2p::core::upgrade::Version::V1Lazy)
        .authenticate(upgrade)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let quic = quic::tokio::Transport::new(quic::Config::new(key))
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
    Ok(quic
        .or_transport(tcp)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// The TCP security upgrade: the protocols of `order`, proposed in that order when dialling and
/// all accepted when listening.
#[derive(Clone)]
struct Security {
    tls: tls::Config,
    noise: noise::Config,
    order: Vec<TcpSecurity>,
}

impl Security {
    fn new(key: &identity::Keypair, order: &[TcpSecurity]) -> Result<Self> {
        if order.is_empty() {
            return Err(Error::Setup("no TCP security protocol configured".into()));
        }
        Ok(Security {
            tls: tls::Config::new(key).map_err(|e| Error::Setup(format!("tls: {e}")))?,
            noise: noise::Config::new(key).map_err(|e| Error::Setup(format!("noise: {e}")))?,
            order: order.to_vec(),
        })
    }
}

/// A security protocol's multistream-select name.
#[derive(Debug, Clone, Copy)]
struct Name(TcpSecurity);

impl Name {
    fn protocol(self) -> &'static str {
        match self.0 {
            TcpSecurity::Tls => "/tls/1.0.0",
            TcpSecurity::Noise => "/noise",
        }
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.protocol()
    }
}

impl UpgradeInfo for Security {
    type Info = Name;
    type InfoIter = Vec<Name>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.order.iter().copied().map(Name).collect()
    }
}

/// A secured TCP stream: TLS or noise.
type Secured<C> = Either<tls::TlsStream<C>, noise::Output<C>>;

/// A secured stream's future, boxed, with the protocol's error as an `io::Error`.
type Upgrading<C> = BoxFuture<'static, io::Result<(PeerId, Secured<C>)>>;

/// A TLS handshake as a [`Secured`] one.
fn tls_side<C, F, E>(f: F) -> Upgrading<C>
where
    C: Send + 'static,
    F: std::future::Future<Output = std::result::Result<(PeerId, tls::TlsStream<C>), E>>
        + Send
        + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    f.map_ok(|(p, s)| (p, Either::Left(s)))
        .map_err(io::Error::other)
        .boxed()
}

/// A noise handshake as a [`Secured`] one.
fn noise_side<C, F, E>(f: F) -> Upgrading<C>
where
    C: Send + 'static,
    F: std::future::Future<Output = std::result::Result<(PeerId, noise::Output<C>), E>>
        + Send
        + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    f.map_ok(|(p, s)| (p, Either::Right(s)))
        .map_err(io::Error::other)
        .boxed()
}

impl<C> InboundConnectionUpgrade<C> for Security
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Secured<C>);
    type Error = io::Error;
    type Future = Upgrading<C>;

    fn upgrade_inbound(self, io: C, name: Name) -> Self::Future {
        match name.0 {
            TcpSecurity::Tls => tls_side(self.tls.upgrade_inbound(io, name.protocol())),
            TcpSecurity::Noise => noise_side(self.noise.upgrade_inbound(io, name.protocol())),
        }
    }
}

impl<C> OutboundConnectionUpgrade<C> for Security
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Secured<C>);
    type Error = io::Error;
    type Future = Upgrading<C>;

    fn upgrade_outbound(self, io: C, name: Name) -> Self::Future {
        match name.0 {
            TcpSecurity::Tls => tls_side(self.tls.upgrade_outbound(io, name.protocol())),
            TcpSecurity::Noise => noise_side(self.noise.upgrade_outbound(io, name.protocol())),
        }
    }
}
