//! Pairing state shared by the actor (inbound `Pair`, `Heartbeat`, `Mirror` frames) and the
//! pairing task: settings, partner and wards, the report `defs status` shows, and the state
//! file. See [`crate::pairing`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use defs_core::shard_store::ShardStore;
use defs_core::types::{NodeId, ShardId};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::protocol::{ErrorCode, Request, Response};
use crate::service::Op;

/// How often the pairing task wakes: heartbeats, mirror work and ward expiry are checked
/// on this tick (1 s: a second of mirror lag is nothing next to a partner timeout).
pub const TICK: Duration = Duration::from_secs(1);

/// Default time between heartbeats to the partner: 30 s (about 120 B each way; 2 × 120
/// heartbeats an hour).
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// Default silence after which a partner (or a ward) is given up: 5 minutes, ten missed
/// heartbeats, long enough that a restart does not look like a death.
pub const PARTNER_TIMEOUT: Duration = Duration::from_secs(300);

/// Default bandwidth for mirror copies: 4 MiB/s, a fraction of a home uplink's burst and
/// enough to mirror 10 GiB in under an hour.
pub const MIRROR_BANDWIDTH: u64 = 4 << 20;

/// Default time between full passes over the store (ids compared with the partner's): one
/// hour; 36 B per shard and pass.
pub const RESCAN: Duration = Duration::from_secs(3600);

/// Default time between audits of the partner's mirror: 5 minutes.
pub const VERIFY_EVERY: Duration = Duration::from_secs(300);

/// Wards (nodes mirroring to this one) a node accepts by default.
pub const MAX_WARDS: usize = 4;

/// Failed proofs after which a partner is dropped as a liar.
pub const MAX_LIES: u32 = 3;

/// New shards queued for mirroring; beyond this the next pass finds them.
pub const NEW_QUEUE: usize = 4096;

/// How long a dropped partner is not chosen again: 30 minutes.
pub const AVOID_FOR: Duration = Duration::from_secs(1800);

/// Confirmed mirror copies kept as audit candidates.
pub(super) const VERIFY_SAMPLE: usize = 64;

/// The state file's name in a data dir.
pub const STATE_FILE: &str = "pairing";

/// The first line of the state file.
pub(super) const STATE_MAGIC: &str = "defs-pairing 1";

/// Pairing settings (`[pairing]` in `config.toml`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the pairing state lives (`DIR/pairing`).
    pub state: PathBuf,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Silence after which a partner or ward is given up.
    pub partner_timeout: Duration,
    /// Bytes/s of mirror copies sent at most.
    pub mirror_bandwidth: u64,
    /// Time between full passes over the store.
    pub rescan: Duration,
    /// Time between audits of the partner's mirror.
    pub verify_every: Duration,
    /// Wards accepted at most.
    pub max_wards: usize,
}

impl Config {
    /// The defaults, with the state file at `state`.
    pub fn new(state: PathBuf) -> Config {
        Config {
            state,
            heartbeat: HEARTBEAT,
            partner_timeout: PARTNER_TIMEOUT,
            mirror_bandwidth: MIRROR_BANDWIDTH,
            rescan: RESCAN,
            verify_every: VERIFY_EVERY,
            max_wards: MAX_WARDS,
        }
    }
}

/// The pseudo-owner under which a node keeps `ward`'s mirror copies.
pub fn marker(ward: &NodeId) -> NodeId {
    let mut h = blake3::Hasher::new();
    h.update(b"defs mirror v1");
    h.update(&ward.0);
    NodeId(*h.finalize().as_bytes())
}

/// What `defs status` shows of pairing.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The partner holding our mirror.
    pub partner: Option<PeerId>,
    /// When it became our partner (ms since the epoch).
    pub partner_since_ms: u64,
    /// Its last answered heartbeat (ms since the epoch; 0: none yet).
    pub last_beat_ms: u64,
    /// Whether a full pass has found every primary shard on the partner, and nothing is
    /// waiting since.
    pub complete: bool,
    /// A pass over the store is running.
    pub checking: bool,
    /// Primary shards known not to be on the partner yet (queued, or found missing by the
    /// running pass and not sent yet).
    pub lag_shards: u64,
    /// Primary shards and bytes counted by the last complete pass.
    pub primary_shards: u64,
    /// See `primary_shards`.
    pub primary_bytes: u64,
    /// What the partner says it mirrors for us (its last heartbeat answer).
    pub partner_mirrored_bytes: u64,
    /// Nodes whose mirror we keep, with the bytes kept for each.
    pub wards: Vec<(PeerId, u64)>,
    /// Mirror copies sent since start, and their bytes.
    pub sent_shards: u64,
    /// See `sent_shards`.
    pub sent_bytes: u64,
    /// Bytes of pairing traffic other than mirror copies (heartbeats, pair asks, id lists,
    /// audits of the partner), both ways, since start.
    pub control_bytes: u64,
    /// Failed proofs by the current partner.
    pub lies: u32,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) partner: Option<(PeerId, u64)>,
    pub(super) wards: HashMap<PeerId, Instant>,
    pub(super) report: Report,
}

/// Pairing state shared by the actor (inbound frames) and the pairing task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) cfg: Config,
    state: Mutex<State>,
    /// New primary shards, for the task to mirror soon.
    stored: mpsc::Sender<ShardId>,
    /// A new shard did not fit in `stored`: the task starts a pass.
    pub(super) overflow: AtomicBool,
    /// A peer's node id (`node::node_id_of`, passed in so that this module needs no node).
    node_of: fn(&PeerId) -> Option<NodeId>,
}

/// What the actor does with an inbound pairing frame.
pub(crate) enum Inbound {
    /// Answer at once.
    Reply(Response),
    /// Run this store operation (a mirror copy) and answer with its outcome.
    Op(Op),
}

impl Shared {
    /// Loads the state file (a missing one is a fresh start; a damaged one is logged and
    /// replaced).
    pub(crate) fn open(
        cfg: Config,
        stored: mpsc::Sender<ShardId>,
        node_of: fn(&PeerId) -> Option<NodeId>,
    ) -> Shared {
        let mut state = State::default();
        match std::fs::read_to_string(&cfg.state) {
            Ok(text) => match parse_state(&text) {
                Ok((partner, wards)) => {
                    let now = Instant::now();
                    state.partner = partner;
                    state.wards = wards.into_iter().map(|w| (w, now)).collect();
                    if let Some((p, _)) = partner {
                        info!(partner = %p, wards = state.wards.len(), "pairing state loaded");
                    }
                }
                Err(why) => warn!(
                    path = %cfg.state.display(),
                    reason = %why,
                    "pairing state unreadable: starting unpaired (the file is rewritten at the next change)"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %cfg.state.display(), error = %e, "pairing state unreadable: starting unpaired")
            }
        }
        Shared {
            cfg,
            state: Mutex::new(state),
            stored,
            overflow: AtomicBool::new(false),
            node_of,
        }
    }

    /// An owner stored `id` here (called on the blocking pool after the store is durable).
    pub(crate) fn stored(&self, id: ShardId) {
        if self.stored.try_send(id).is_err() {
            self.overflow.store(true, Ordering::Relaxed);
        }
    }

    /// The markers ([`marker`]) of this node's wards now: the pseudo-owners of the mirror
    /// copies it keeps.
    pub(crate) fn ward_markers(&self) -> std::collections::HashSet<NodeId> {
        self.lock()
            .wards
            .keys()
            .filter_map(self.node_of)
            .map(|n| marker(&n))
            .collect()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the state file (temp, fsync, rename): partner and wards.
    pub(super) fn save(&self, st: &State) {
        let mut text = format!("{STATE_MAGIC}\n");
        if let Some((p, since)) = st.partner {
            text.push_str(&format!("partner {p} {since}\n"));
        }
        let mut wards: Vec<String> = st.wards.keys().map(|w| w.to_string()).collect();
        wards.sort();
        for w in wards {
            text.push_str(&format!("ward {w}\n"));
        }
        let path = &self.cfg.state;
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut &f, text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            warn!(path = %path.display(), error = %e, "cannot save the pairing state; it is kept in memory and saved at the next change");
        }
    }

    /// The report for `defs status`.
    pub(crate) fn report(&self, store: &ShardStore) -> Report {
        let st = self.lock();
        let mut r = st.report.clone();
        r.partner = st.partner.map(|p| p.0);
        r.partner_since_ms = st.partner.map_or(0, |p| p.1);
        r.wards = st
            .wards
            .keys()
            .map(|w| {
                let bytes = (self.node_of)(w).map_or(0, |n| store.owner_usage(&marker(&n)));
                (*w, bytes)
            })
            .collect();
        r.wards.sort_by_key(|w| w.0.to_bytes());
        r
    }

    /// The actor's answer to a pairing frame from `peer`.
    pub(crate) fn on_request(&self, peer: PeerId, request: Request, store: &ShardStore) -> Inbound {
        let Some(node) = (self.node_of)(&peer) else {
            return Inbound::Reply(Response::error(
                ErrorCode::BadRequest,
                "pairing needs a secp256k1 peer id",
            ));
        };
        let mut st = self.lock();
        match request {
            Request::Pair => {
                if !st.wards.contains_key(&peer) && st.wards.len() >= self.cfg.max_wards {
                    debug!(peer = %peer, "pair refused: full");
                    return Inbound::Reply(Response::error(
                        ErrorCode::PairFull,
                        format!(
                            "this node keeps mirrors for {} nodes already",
                            st.wards.len()
                        ),
                    ));
                }
                if st.wards.insert(peer, Instant::now()).is_none() {
                    info!(ward = %peer, "a node paired with us: we keep its mirror");
                    self.save(&st);
                }
                Inbound::Reply(Response::Ack)
            }
            Request::Heartbeat { primary_bytes } => match st.wards.get_mut(&peer) {
                Some(seen) => {
                    *seen = Instant::now();
                    let mirrored_bytes = store.owner_usage(&marker(&node));
                    debug!(ward = %peer, primary_bytes, mirrored_bytes, "heartbeat");
                    Inbound::Reply(Response::Beat { mirrored_bytes })
                }
                None => Inbound::Reply(not_paired()),
            },
            Request::Mirror {
                id,
                owners,
                crc,
                data,
            } => match st.wards.get_mut(&peer) {
                Some(seen) => {
                    *seen = Instant::now();
                    Inbound::Op(Op::Mirror {
                        id,
                        owners,
                        marker: marker(&node),
                        crc,
                        data,
                    })
                }
                None => Inbound::Reply(not_paired()),
            },
            _ => Inbound::Reply(Response::error(
                ErrorCode::BadRequest,
                "not a pairing frame",
            )),
        }
    }
}

fn not_paired() -> Response {
    Response::error(
        ErrorCode::NotPaired,
        "not paired with this node (any more): send Pair first",
    )
}

/// The state file's content: the partner (peer, since ms) and the wards.
type Saved = (Option<(PeerId, u64)>, Vec<PeerId>);

/// Parses the state file.
pub(super) fn parse_state(text: &str) -> std::result::Result<Saved, String> {
    let mut lines = text.lines();
    if lines.next() != Some(STATE_MAGIC) {
        return Err(format!("the first line is not `{STATE_MAGIC}`"));
    }
    let (mut partner, mut wards) = (None, Vec::new());
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let peer = |s: &str| {
            s.parse::<PeerId>()
                .map_err(|e| format!("line {}: bad peer id: {e}", n + 2))
        };
        match f.as_slice() {
            ["partner", p, since] => {
                let since = since
                    .parse::<u64>()
                    .map_err(|e| format!("line {}: bad time: {e}", n + 2))?;
                partner = Some((peer(p)?, since));
            }
            ["ward", w] => wards.push(peer(w)?),
            [] => {}
            _ => return Err(format!("line {}: unknown line `{line}`", n + 2)),
        }
    }
    Ok((partner, wards))
}
