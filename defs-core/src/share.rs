//! Sharing a subtree with another identity, read-only and revocable (issue 22). This module
//! owns the key wrap ([`wrap`]: ECDH on secp256k1 + HKDF-SHA256 + AES-256-GCM), the signed
//! share record and its no-rollback, revocation-is-final rule ([`record`]). Design: `docs/internals.md`, "Sharing"; bytes: `docs/format.md`, "Share record".
//!
//! ```text
//!  owner: subtree of the namespace ──▶ view (a namespace snapshot rooted at the subtree, an
//!         ordinary object with its own random file key) ──▶ share record {share key wrapped
//!         for the recipient; body sealed under the share key: view id, view key} ──▶ nodes
//!  recipient: records addressed to it ◀── nodes ──▶ unwrap ──▶ view ──▶ its own DB ──▶
//!         /.shared/<name>: file contents by their file keys, fetched lazily
//! ```

pub mod record;
pub mod wrap;

pub use record::{Admit, Grant, Opened, ShareBody, ShareId, ShareRecord};

#[cfg(test)]
mod tests;
