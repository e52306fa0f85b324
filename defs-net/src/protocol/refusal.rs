//! A node's refusal as the wire carries it: the [`ErrorCode`] and its number, and the
//! [`RemoteError`] (code and message) a client gets back. The crate's error
//! ([`crate::Error::Remote`]) wraps it; the frame layout is in [`crate::protocol`].

/// Refusal codes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The shard is not held here.
    NotFound,
    /// Missing, malformed or forged signature, or the key is not the owner's.
    BadSignature,
    /// The requester is not the shard's owner.
    NotOwner,
    /// The node's quota (or the owner's share of it) is full.
    QuotaFull,
    /// A size limit was exceeded.
    TooLarge,
    /// The data does not match its id.
    Corrupt,
    /// A timestamp outside the window, or a nonce seen before.
    Replay,
    /// Too many requests.
    RateLimited,
    /// The node does not store shards for others.
    NotStorage,
    /// Malformed request.
    BadRequest,
    /// A local failure on the node (disk error).
    Internal,
    /// The requester's node id does not solve the identity work puzzle at the difficulty this
    /// node asks of its peers.
    PuzzleNotSolved,
    /// The node is shutting down and takes no new shards (it still serves what it holds until
    /// it stops): store elsewhere.
    ShuttingDown,
    /// A root record that does not supersede the one the node holds for its owner: a lower
    /// sequence number, or the same one with other bytes (no rollback).
    Rollback,
    /// A pairing frame (heartbeat, mirror copy) from a node that is not paired with this one
    /// (any more).
    NotPaired,
    /// This node keeps mirrors for as many partners as it takes; ask another.
    PairFull,
    /// Not a valid share record: forged, malformed, or its owner's puzzle unsolved.
    BadShareRecord,
    /// A record of a share its owner revoked: the revocation is final.
    ShareRevoked,
    /// A code this version does not know.
    Unknown(u16),
}

impl ErrorCode {
    pub(crate) fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotFound => 1,
            ErrorCode::BadSignature => 2,
            ErrorCode::NotOwner => 3,
            ErrorCode::QuotaFull => 4,
            ErrorCode::TooLarge => 5,
            ErrorCode::Corrupt => 6,
            ErrorCode::Replay => 7,
            ErrorCode::RateLimited => 8,
            ErrorCode::NotStorage => 9,
            ErrorCode::BadRequest => 10,
            ErrorCode::Internal => 11,
            ErrorCode::PuzzleNotSolved => 12,
            ErrorCode::ShuttingDown => 14,
            ErrorCode::Rollback => 13,
            // Pairing codes: well clear of codes other frames add.
            ErrorCode::NotPaired => 20,
            ErrorCode::PairFull => 21,
            ErrorCode::BadShareRecord => 16,
            ErrorCode::ShareRevoked => 17,
            ErrorCode::Unknown(c) => c,
        }
    }

    pub(crate) fn from_u16(c: u16) -> Self {
        match c {
            1 => ErrorCode::NotFound,
            2 => ErrorCode::BadSignature,
            3 => ErrorCode::NotOwner,
            4 => ErrorCode::QuotaFull,
            5 => ErrorCode::TooLarge,
            6 => ErrorCode::Corrupt,
            7 => ErrorCode::Replay,
            8 => ErrorCode::RateLimited,
            9 => ErrorCode::NotStorage,
            10 => ErrorCode::BadRequest,
            11 => ErrorCode::Internal,
            12 => ErrorCode::PuzzleNotSolved,
            14 => ErrorCode::ShuttingDown,
            13 => ErrorCode::Rollback,
            20 => ErrorCode::NotPaired,
            21 => ErrorCode::PairFull,
            16 => ErrorCode::BadShareRecord,
            17 => ErrorCode::ShareRevoked,
            c => ErrorCode::Unknown(c),
        }
    }
}

/// A refusal sent by a remote node, as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// What kind of refusal.
    pub code: ErrorCode,
    /// The remote's explanation (at most [`crate::protocol::MAX_ERROR_MESSAGE`] bytes).
    pub message: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}
