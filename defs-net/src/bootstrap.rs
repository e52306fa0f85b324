//! What became of each bootstrap address a node was given: still being dialled, answered (by
//! which peer, and whether this node refuses it), or failed, with the reason in words a user
//! can act on ("connection refused: nothing listens on that port", "the node there has peer id
//! X, not Y"). The node's actor records the outcome of each bootstrap dial by its connection
//! id; [`crate::Node::bootstrap`] reports them.

use std::io;

use defs_core::identity::puzzle_bits;
use defs_core::types::NodeId;
use libp2p::core::transport::TransportError;
use libp2p::swarm::DialError;
use libp2p::{Multiaddr, PeerId};

/// What became of one bootstrap address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The dial has not finished yet.
    Dialling,
    /// A node answered there (a connection was established).
    Answered {
        /// The node that answered.
        peer: PeerId,
        /// Why this node refuses it, when it does (see [`refusal`]).
        refused: Option<String>,
        /// It stores shards for others (known once it has identified itself).
        storage: bool,
    },
    /// The dial failed.
    Failed(String),
}

/// One bootstrap address and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The address as given.
    pub addr: Multiaddr,
    /// What became of it.
    pub outcome: Outcome,
}

impl Report {
    /// Whether the address answered with a node this node accepts: worth remembering.
    pub fn answered(&self) -> bool {
        matches!(&self.outcome, Outcome::Answered { refused: None, .. })
    }

    /// Whether a node answered there, accepted or refused: the network can be explored
    /// through it.
    pub fn reached(&self) -> bool {
        matches!(&self.outcome, Outcome::Answered { .. })
    }

    /// Whether the dial is over (answered or failed).
    pub fn settled(&self) -> bool {
        !matches!(self.outcome, Outcome::Dialling)
    }

    /// Why the address gives this node no usable peer, in words; `None` when it does.
    pub fn problem(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Dialling => Some("no answer yet (still dialling)".into()),
            Outcome::Answered {
                refused: Some(why), ..
            } => Some(format!("answered, but refused: {why}")),
            Outcome::Answered { storage: false, .. } => {
                Some("answered, but it is not a storage node".into())
            }
            Outcome::Answered { .. } => None,
            Outcome::Failed(why) => Some(why.clone()),
        }
    }
}

/// Why this node refuses a peer, or `None` when it accepts it: its node id must solve the
/// identity puzzle at `difficulty` (`identity.puzzle_difficulty` in config.toml).
pub fn refusal(node_id: Option<&NodeId>, difficulty: u8) -> Option<String> {
    match node_id {
        None => Some("its peer id is not a secp256k1 key, so it has no DeFS node id".to_string()),
        Some(n) => {
            let bits = puzzle_bits(n);
            (bits < u32::from(difficulty)).then(|| {
                format!(
                    "its node id solves the identity puzzle to {bits} bits, this node asks for \
                     {difficulty} (identity.puzzle_difficulty in config.toml)"
                )
            })
        }
    }
}

/// Why a dial failed, in words for the user.
pub fn dial_failure(e: &DialError) -> String {
    match e {
        DialError::WrongPeerId { obtained, .. } => format!(
            "wrong peer id: the node there is {obtained}, not the /p2p/ id of the address (the \
             address is mistyped or out of date; the node prints its addresses when it starts)"
        ),
        DialError::LocalPeerId { .. } => "that address is this node itself".into(),
        DialError::NoAddresses => "there is no address to dial".into(),
        DialError::Aborted => "the dial was aborted (this node is stopping)".into(),
        DialError::DialPeerConditionFalse(_) => {
            "not dialled: already connected to that peer or dialling it".into()
        }
        DialError::Denied { cause } => format!("this node denied the connection: {cause}"),
        DialError::Transport(list) => {
            let mut reasons: Vec<String> = list.iter().map(|(_, e)| transport_failure(e)).collect();
            reasons.dedup();
            if reasons.is_empty() {
                "the dial failed".into()
            } else {
                reasons.join("; ")
            }
        }
    }
}

fn transport_failure(e: &TransportError<io::Error>) -> String {
    match e {
        TransportError::MultiaddrNotSupported(a) => {
            format!("this node cannot dial {a} (a protocol it does not speak)")
        }
        TransportError::Other(e) => io_failure(e),
    }
}

/// The innermost I/O error kind of a transport error (they come wrapped in upgrade errors),
/// said plainly for the common cases; the whole chain otherwise.
fn io_failure(e: &io::Error) -> String {
    /// The next error down: an `io::Error`'s payload (its `source()` skips it), else the
    /// source.
    fn next<'a>(
        s: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a (dyn std::error::Error + 'static)> {
        match s.downcast_ref::<io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        }
    }
    let mut kind = e.kind();
    let mut texts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            kind = io.kind();
        }
        let t = s.to_string();
        if !texts.iter().any(|x| x.contains(&t)) {
            texts.push(t);
        }
        cur = next(s);
    }
    // The whole dial (connect and handshake) ran past libp2p's connection timeout: the
    // address took the connection but never answered as a libp2p node, or dropped it silently.
    if texts.iter().any(|t| t == LIBP2P_TIMEOUT) {
        return "no answer (timed out): nothing DeFS-like answered there (the host is down, a \
                firewall drops the connection, or something else listens on that port)"
            .into();
    }
    // libp2p's `Either` errors hide their inner error from `source()`: take the OS error
    // number the text carries ("Connection refused (os error 111)").
    if kind == io::ErrorKind::Other
        && let Some(n) = texts.iter().find_map(|t| os_error(t))
    {
        kind = io::Error::from_raw_os_error(n).kind();
    }
    match kind {
        io::ErrorKind::ConnectionRefused => {
            "connection refused: nothing listens on that port (is the node running? is the port \
             right?)"
                .into()
        }
        io::ErrorKind::TimedOut => {
            "no answer (timed out): the host is down, or a firewall drops the connection".into()
        }
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            "the host is unreachable from here (no route)".into()
        }
        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => format!(
            "the other side closed the connection during the handshake (not a DeFS node, or it \
             refused us): {}",
            texts.join(": ")
        ),
        _ => texts.join(": "),
    }
}

/// How libp2p's `TransportTimeoutError::Timeout` shows (its `Display`); the swarm's boxed
/// transport hides its type behind its inner error type, so it is recognised by its text.
const LIBP2P_TIMEOUT: &str = "Timeout has been reached";

/// The `N` of "(os error N)" in an error text.
fn os_error(text: &str) -> Option<i32> {
    let rest = &text[text.find("(os error ")? + "(os error ".len()..];
    rest[..rest.find(')')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_failures_say_what_happened() {
        let refused = DialError::Transport(vec![(
            "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            TransportError::Other(io::Error::other(io::Error::from(
                io::ErrorKind::ConnectionRefused,
            ))),
        )]);
        assert!(dial_failure(&refused).starts_with("connection refused"));
        // As libp2p reports it: the OS error only in the text.
        let hidden = DialError::Transport(vec![(
            "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            TransportError::Other(io::Error::other("Connection refused (os error 111)")),
        )]);
        assert!(
            dial_failure(&hidden).starts_with("connection refused"),
            "{}",
            dial_failure(&hidden)
        );
        // libp2p's own dial timeout, as the swarm's boxed transport reports it.
        let timeout = DialError::Transport(vec![(
            "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            TransportError::Other(io::Error::other(
                libp2p::core::transport::timeout::TransportTimeoutError::<io::Error>::Timeout,
            )),
        )]);
        let said = dial_failure(&timeout);
        assert!(
            said.starts_with("no answer (timed out): nothing DeFS-like answered there"),
            "{said}"
        );
        let wrong = DialError::WrongPeerId {
            obtained: PeerId::random(),
            address: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
        };
        assert!(dial_failure(&wrong).starts_with("wrong peer id"));
    }

    #[test]
    fn refusals_name_the_puzzle_bits_and_the_setting() {
        let id = NodeId([0xff; 32]);
        let bits = puzzle_bits(&id);
        let ask = u8::try_from(bits + 1).unwrap();
        let why = refusal(Some(&id), ask).unwrap();
        assert!(
            why.contains(&format!("to {bits} bits")) && why.contains(&format!("asks for {ask}")),
            "{why}"
        );
        assert!(why.contains("identity.puzzle_difficulty"));
        assert_eq!(refusal(Some(&id), ask - 1), None);
        assert!(refusal(None, 0).unwrap().contains("secp256k1"));
    }
}
