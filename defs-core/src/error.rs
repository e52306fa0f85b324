//! The one error type of defs-core. Each variant says what happened and to what: the shard, the
//! path, the inode, the limit. The FUSE layer maps variants to errno in one place; the CLI prints
//! them with `{:#}`.
//!
//! Variants are grouped by the module that raises them.

use std::io;
use std::path::PathBuf;

use crate::types::{NodeId, ShardId};

/// Shorthand for results in defs-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in defs-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- I/O, shared by every store --------------------------------------------------------
    /// An operating-system I/O error on a named file.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A size field or an input exceeds its limit. Checked both when encoding and when decoding.
    #[error("{what} is too large: {size} bytes, the limit is {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    // ---- identity ----------------------------------------------------------------------------
    /// The identity key file is accessible to group or others.
    #[error(
        "identity key {} is accessible to group or others (mode {mode:03o}); \
         run `chmod 600 {}` if it is really yours, or create a new identity",
        path.display(),
        path.display()
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The identity key file is not a valid DeFS key file.
    #[error("{} is not a usable identity key: {reason}", path.display())]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An identity key file already exists where a new one was to be created.
    #[error("an identity already exists at {}; refusing to overwrite it", path.display())]
    KeyFileExists {
        /// The existing key file.
        path: PathBuf,
    },

    /// A signature does not verify for the given key, message and domain.
    #[error("bad signature (domain {domain})")]
    BadSignature {
        /// The signature domain that was checked.
        domain: &'static str,
    },

    /// Bytes that should be a compressed secp256k1 public key (or secret scalar) are not one.
    #[error("not a valid secp256k1 key")]
    BadPublicKey,

    /// A NodeId does not solve the identity puzzle at the required difficulty.
    #[error(
        "node {node_id} does not solve the identity puzzle: {bits} leading zero bits, {difficulty} required"
    )]
    PuzzleNotSolved {
        /// The node.
        node_id: NodeId,
        /// The required difficulty (leading zero bits).
        difficulty: u8,
        /// The leading zero bits it has.
        bits: u32,
    },

    // ---- root record (root_record) -------------------------------------------------------------
    /// Bytes offered as a root record are not a valid one, or its body does not open.
    #[error("not a valid root record: {reason}")]
    BadRootRecord {
        /// What is wrong.
        reason: String,
    },

    /// A root record that does not supersede the one already held for its owner: a lower
    /// sequence number, or the same one with other bytes (no rollback).
    #[error(
        "root record of {owner} refused: seq {offered} does not supersede seq {held} already held \
         (no rollback)"
    )]
    RootRollback {
        /// The owner.
        owner: NodeId,
        /// The sequence number already held.
        held: u64,
        /// The sequence number offered.
        offered: u64,
    },

    // ---- share records (share) -----------------------------------------------------------------
    /// Bytes offered as a share record are not a valid one (forged, malformed, addressed to
    /// someone else), or its body does not open.
    #[error("not a valid share record: {reason}")]
    BadShareRecord {
        /// What is wrong.
        reason: String,
    },

    /// A share record for a share its owner has revoked: the revocation is final.
    #[error("share {share} of {owner} was revoked by its owner; no later record of it is accepted")]
    ShareRevoked {
        /// The owner.
        owner: NodeId,
        /// The share id, hex.
        share: String,
    },

    /// A share record that does not supersede the one held for its share: a lower seq, or the
    /// same seq with other bytes (a replay of an older version).
    #[error(
        "share record {share} of {owner} refused: seq {offered} does not supersede seq {held} \
         already held (no rollback)"
    )]
    ShareRollback {
        /// The owner.
        owner: NodeId,
        /// The share id, hex.
        share: String,
        /// The sequence number already held.
        held: u64,
        /// The sequence number offered.
        offered: u64,
    },

    /// No place to keep or find an owner's root record could be reached.
    #[error("no place to keep or find the root record of {owner} could be reached: {reason}")]
    RootUnreachable {
        /// The owner.
        owner: NodeId,
        /// Why, with the peers tried.
        reason: String,
    },

    // ---- key shares (identity::keyshare) -------------------------------------------------------
    /// A key share's text is malformed, or was altered: its checksum does not match.
    #[error("not a valid key share: {reason}")]
    BadKeyShare {
        /// What is wrong, e.g. which character is not base32.
        reason: String,
    },

    /// Fewer distinct key shares than the split's threshold.
    #[error("{have} share(s) given, but this key was split so that {need} are needed")]
    TooFewKeyShares {
        /// Distinct shares given.
        have: usize,
        /// The split's threshold.
        need: u8,
    },

    /// Key shares of different identities or of different splits of one identity.
    #[error(
        "share {first} and share {other} come from different splits and cannot be combined; \
         give only shares whose identity and split code match"
    )]
    MixedKeyShares {
        /// The first share given, described (number, identity, split code, threshold).
        first: String,
        /// A share that does not match it.
        other: String,
    },

    /// The same share number given twice.
    #[error("share S{index} was given more than once; give each share once")]
    DuplicateKeyShare {
        /// The share number.
        index: u8,
    },

    /// The shares combine to a key that is not the identity they name: one was altered in a way
    /// its checksum did not catch.
    #[error(
        "the shares do not rebuild identity {expected}: they combine to {found}; \
         at least one share is not what `defs key split` wrote"
    )]
    KeyShareMismatch {
        /// The identity tag the shares carry (node id prefix).
        expected: String,
        /// The node id of the key they combine to, or "no valid key".
        found: String,
    },

    // ---- pipeline and manifest ---------------------------------------------------------------
    /// A shard's bytes do not verify (CRC, hash, or authentication tag).
    #[error("shard {id} is corrupt: {reason}")]
    CorruptShard {
        /// The shard.
        id: ShardId,
        /// Which check failed.
        reason: &'static str,
    },

    /// A key does not open what it should: a manifest sealed for another owner, or a file key
    /// that is not this manifest's. (Authenticated encryption cannot tell a wrong key from
    /// damaged bytes; a sealed manifest is fetched by its id, so damage is caught before this.)
    #[error("wrong {what}: the manifest does not open with it (or its bytes are damaged)")]
    WrongKey {
        /// Which key: "wrap key" or "file key".
        what: &'static str,
    },

    /// A manifest in a format version this build does not know.
    #[error("unknown manifest format version {found}; this build reads version {supported}")]
    UnknownManifestVersion {
        /// The version in the bytes.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },

    /// Manifest bytes that do not parse or do not hold together.
    #[error("malformed manifest: {what}")]
    MalformedManifest {
        /// What is wrong.
        what: &'static str,
    },

    /// A file's content names a range its object cannot supply (a namespace record that does
    /// not fit its manifest: corrupt, or made by something else than this build).
    #[error("content range {offset}+{len} of an object of {size} bytes: {reason}")]
    BadContentRange {
        /// Where the range starts in the object.
        offset: u64,
        /// Its length.
        len: u64,
        /// The object's size.
        size: u64,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// Fewer good shards of a segment than Reed-Solomon needs to rebuild it.
    #[error("segment {segment}: too few good shards to rebuild it: need {need}, have {have}")]
    TooFewShards {
        /// The segment.
        segment: u64,
        /// Shards needed (k, or 1 for replicated segments).
        need: u16,
        /// Good shards found (present, CRC and authentication tag verified).
        have: u16,
    },

    /// A layout setting (or a manifest's geometry) outside what the pipeline supports.
    #[error("invalid layout: {reason}")]
    InvalidLayout {
        /// What is out of range, with the range.
        reason: String,
    },

    /// This binary was built with the `simd` feature (AVX2 Reed-Solomon kernels) and this CPU
    /// lacks AVX2; running the kernels would die on SIGILL.
    #[error(
        "this CPU has no AVX2, which this build's Reed-Solomon code needs; \
         rebuild defs without the `simd` feature (--no-default-features)"
    )]
    CpuWithoutAvx2,

    /// The operating system's random number generator failed.
    #[error("no randomness from the operating system: {reason}")]
    Random {
        /// The OS error, as text.
        reason: String,
    },

    /// Reading the input or writing the output stream of the pipeline failed.
    #[error("I/O error while {what}: {source}")]
    Stream {
        /// What the pipeline was doing: "reading the file", "writing decoded bytes".
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    // ---- metadata DB and namespace -----------------------------------------------------------
    /// A name or inode does not exist (ENOENT).
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for: a name in a directory, an inode.
        what: String,
    },

    /// The name already exists (EEXIST).
    #[error("already exists: {what}")]
    AlreadyExists {
        /// The name and its directory.
        what: String,
    },

    /// A directory to be removed or replaced still has entries (ENOTEMPTY).
    #[error("directory inode {ino} is not empty")]
    NotEmpty {
        /// The directory.
        ino: u64,
    },

    /// A directory was needed but the inode is something else (ENOTDIR).
    #[error("inode {ino} is not a directory")]
    NotADirectory {
        /// The inode.
        ino: u64,
    },

    /// The operation does not apply to a directory (EISDIR).
    #[error("inode {ino} is a directory")]
    IsADirectory {
        /// The inode.
        ino: u64,
    },

    /// A file name is longer than [`crate::namespace::NAME_MAX`] bytes (ENAMETOOLONG).
    #[error("name is {len} bytes long, the limit is {limit}")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },

    /// An argument is invalid for this operation (EINVAL).
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What was wrong.
        what: String,
    },

    /// The operation is not permitted on this kind of inode, e.g. a hard link to a directory
    /// (EPERM).
    #[error("operation not permitted: {what}")]
    NotPermitted {
        /// What was refused.
        what: String,
    },

    /// The extended attribute does not exist (ENODATA).
    #[error("inode {ino} has no extended attribute {name:?}")]
    NoXattr {
        /// The inode.
        ino: u64,
        /// The attribute's name (lossy UTF-8).
        name: String,
    },

    /// An extended attribute's value is larger than [`crate::namespace::XATTR_SIZE_MAX`], or
    /// the inode's attribute list would exceed [`crate::namespace::XATTR_LIST_MAX`] (E2BIG).
    #[error("extended attribute too large: {size} bytes, the limit is {limit}")]
    XattrTooLarge {
        /// The size that was asked for.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// An extended attribute's name is empty or longer than
    /// [`crate::namespace::XATTR_NAME_MAX`] bytes (ERANGE, as Linux answers).
    #[error("extended attribute name is {len} bytes long; it must be 1 to {limit}")]
    XattrNameInvalid {
        /// The name's length.
        len: usize,
        /// The limit.
        limit: usize,
    },

    /// The metadata DB (redb) failed. The DB refuses further commits after an I/O failure;
    /// reopen it to recover (EIO).
    #[error("metadata DB: {context}: {source}")]
    Db {
        /// What the DB was doing.
        context: &'static str,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },

    /// The metadata DB was written by a newer DeFS with a schema this build does not know (EIO).
    #[error(
        "the metadata DB at {} has schema version {found}, this DeFS supports up to {supported}: \
         upgrade DeFS (the DB was not changed)",
        path.display()
    )]
    SchemaTooNew {
        /// The DB's directory or file.
        path: PathBuf,
        /// The version found in the DB.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },

    /// The metadata DB's records are inconsistent or a snapshot is malformed (EIO).
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being read: "inode record", "namespace snapshot", ...
        what: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// A previous durable commit failed; the DB no longer claims durability until reopened
    /// (EIO).
    #[error("metadata DB: an earlier durable commit failed ({reason}); reopen the DB")]
    NotDurable {
        /// The first failure.
        reason: String,
    },

    /// The DB was closed (EIO).
    #[error("metadata DB is closed")]
    Closed,
    // ---- journal, cache store, shard store ---------------------------------------------------
    /// The shard is not stored here.
    #[error("shard {id} is not stored here")]
    ShardNotFound {
        /// The shard.
        id: ShardId,
    },

    /// An owner would exceed its quota on this node.
    #[error("owner {owner} would exceed its quota: {used} bytes stored, the quota is {quota}")]
    QuotaExceeded {
        /// The owner.
        owner: NodeId,
        /// Bytes it has stored already.
        used: u64,
        /// Its quota.
        quota: u64,
    },

    /// Every storage node tried that answered refused a shard because the owner's quota there
    /// (or the node) is full: the owner may store no more on the network until space is freed.
    #[error(
        "quota exceeded: storage nodes refused shard {shard} because this identity's quota (or the node) is full ({nodes} tried); last: {last}"
    )]
    QuotaRefused {
        /// The shard.
        shard: ShardId,
        /// How many nodes were tried.
        nodes: u32,
        /// The last node's refusal.
        last: String,
    },

    /// The store has no room for another shard.
    #[error("the shard store is full: {used} of {capacity} bytes used")]
    StoreFull {
        /// Bytes stored.
        used: u64,
        /// The capacity.
        capacity: u64,
    },

    /// Someone who does not own a shard asked to delete it.
    #[error("{requester} does not own shard {id}")]
    NotOwner {
        /// The shard.
        id: ShardId,
        /// Who asked.
        requester: NodeId,
    },

    /// Bytes offered as a shard do not hash to its id.
    #[error("shard bytes hash to {actual}, not to their id {expected}")]
    HashMismatch {
        /// The id they were offered under.
        expected: ShardId,
        /// BLAKE3 of the bytes.
        actual: ShardId,
    },

    /// The index database of a local store (shard store, cache store) failed.
    #[error("store index {}: {source}", path.display())]
    StoreIndex {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },

    /// A local store's index is gone while its data files still hold data. Opening would
    /// start an empty index and discard every file it does not list, so the store refuses.
    #[error(
        "{} is missing or empty, but {files} file(s) in {} still hold data; refusing to open, \
         which would discard them. {way_out}",
        index.display(),
        data.display()
    )]
    IndexLost {
        /// The index file that is missing or empty.
        index: PathBuf,
        /// The directory of data files (packs, cache files).
        data: PathBuf,
        /// How many non-empty data files it holds.
        files: usize,
        /// What the user can do instead, and what it costs.
        way_out: &'static str,
    },

    /// A write would eat into the free space kept in reserve on the local disk (ENOSPC).
    #[error(
        "no space for {needed} more bytes in {}: {available} bytes free, {reserve} kept in reserve",
        path.display()
    )]
    NoSpace {
        /// The directory whose filesystem is full.
        path: PathBuf,
        /// Bytes the write needed.
        needed: u64,
        /// Bytes free on the filesystem (or left in the budget).
        available: u64,
        /// Bytes kept free.
        reserve: u64,
    },

    // ---- config ------------------------------------------------------------------------------
    /// A configuration value is out of range or inconsistent.
    #[error("invalid setting {field}: {reason}")]
    InvalidConfig {
        /// The setting, as `section.field`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    // ---- namespace publishing and recovery (publish) ------------------------------------------
    /// No published namespace of this identity could be loaded: none is held by the places
    /// asked, or every candidate was refused (each reason is in `detail`).
    #[error("no namespace found for {owner}: {detail}")]
    NoNamespace {
        /// The identity.
        owner: NodeId,
        /// What was found and why each candidate was refused.
        detail: String,
    },

    // ---- remote (the ShardClient trait; raised by its implementations) ------------------------
    /// A remote shard operation failed: the network could not store, fetch, find or delete.
    #[error("{op} of shard {shard} failed: {reason}")]
    Remote {
        /// The operation: "store", "fetch", "lookup", "delete".
        op: &'static str,
        /// The shard.
        shard: ShardId,
        /// Why, with the peers tried.
        reason: String,
    },
}

impl Error {
    /// Wraps a redb error with the database it happened on.
    pub fn store_index(path: impl Into<PathBuf>, source: impl Into<redb::Error>) -> Self {
        Error::StoreIndex {
            path: path.into(),
            source: Box::new(source.into()),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
