//! Sharing a subtree with another identity, read-only and revocable (issue 22). This module
//! owns the key wrap ([`wrap`]: ECDH on secp256k1 + HKDF-SHA256 + AES-256-GCM), the signed
//! share record and its no-rollback, revocation-is-final rule ([`record`]), and both ends of
//! the view a share hands over ([`publish`]). Design: `docs/internals.md`, "Sharing"; bytes: `docs/format.md`, "Share record".
//!
//! ```text
//!  owner: subtree of the namespace ──▶ view (a namespace snapshot rooted at the subtree, an
//!         ordinary object with its own random file key) ──▶ share record {share key wrapped
//!         for the recipient; body sealed under the share key: view id, view key} ──▶ nodes
//!  recipient: records addressed to it ◀── nodes ──▶ unwrap ──▶ view ──▶ its own DB ──▶
//!         /.shared/<name>: file contents by their file keys, fetched lazily
//! ```

pub mod publish;
pub mod record;
pub mod wrap;

pub use crate::root_record::Admit;
pub use record::{Grant, Opened, ShareBody, ShareId, ShareRecord};

/// Records for tests of the layers that store and find them.
#[cfg(any(test, feature = "test-utils"))]
pub mod testing {
    use super::*;
    use crate::Identity;
    use crate::types::FileId;

    /// `owner`'s record `seq` of share `[s; 16]` for `to`, named "docs", naming a view whose
    /// FileId is `seq` repeated; a revocation when `revoked`.
    ///
    /// # Panics
    /// For seq 0 or when the OS has no randomness.
    pub fn record(owner: &Identity, to: &Identity, s: u8, seq: u64, revoked: bool) -> ShareRecord {
        let body = ShareBody {
            subtree: 7,
            view: FileId([seq as u8; 32]),
            view_key: [4; 32],
            view_len: 100,
            view_trailer: [5; 32],
            root_seq: 1,
        };
        let grant = if revoked {
            Grant::Revoked
        } else {
            Grant::Live {
                key: &[6; 32],
                body: &body,
            }
        };
        match ShareRecord::sign(
            owner,
            to.public(),
            ShareId([s; 16]),
            seq,
            seq,
            "docs",
            grant,
        ) {
            Ok(r) => r,
            Err(e) => panic!("test share record: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
