//! One writer per identity: this module owns the decision whether a data dir may mount an
//! identity writable, given the newest root record the network holds for it
//! (docs/namespace-publishing.md §5). No I/O: the mount asks the network and this module
//! decides, so every case is tested without one.
//!
//! ```text
//!  newest record            local state                 forced   →  decision
//!  none                     any                         any      →  as is
//!  ours (writer id)         any                         any      →  as is
//!  another's, lease 0       at its seq                  any      →  as is (then claim)
//!  another's, lease 0       behind, nothing unpublished any      →  catch up (then claim)
//!  another's, lease 0       behind, unpublished changes any      →  refused: changes would be lost
//!  another's, lease > 0     any                         no       →  refused: held elsewhere
//!  another's, lease > 0     (as lease 0 above)          waited   →  as lease 0
//! ```
//!
//! "Forced" means `--force` waited until the newest seq stayed unchanged for the lease plus
//! [`FORCE_MARGIN`] of this machine's monotonic clock: wall clocks of two machines are never
//! compared.

use std::time::Duration;

use crate::root_record::{RootBody, RootRecord, WriterId};

/// What `--force` waits beyond the dead writer's lease before it takes over: 30 s, enough for
/// a publish the dead machine had in flight to land (a record put waits at most seconds per
/// peer) and for clock rates of two machines to differ, since only our monotonic clock counts.
pub const FORCE_MARGIN: Duration = Duration::from_secs(30);

/// Who holds an identity's write lease, by the newest record the network has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    /// No record: nobody ever published this namespace (or nobody could be found).
    Free,
    /// The newest record is this data dir's (its writer id).
    Ours {
        /// Its seq.
        seq: u64,
    },
    /// Another data dir published the newest record and released the lease (it unmounted).
    Released {
        /// Its seq.
        seq: u64,
        /// The writer's host name.
        writer_name: String,
    },
    /// Another data dir holds the lease.
    Held {
        /// Its seq.
        seq: u64,
        /// The writer's host name.
        writer_name: String,
        /// The lease the record carries, in seconds.
        lease_secs: u32,
    },
}

impl Lease {
    /// The lease the newest record (`newest`) gives, seen by writer `me`.
    pub fn of(newest: Option<(&RootRecord, &RootBody)>, me: WriterId) -> Lease {
        match newest {
            None => Lease::Free,
            Some((r, b)) if b.writer == me => Lease::Ours { seq: r.seq() },
            Some((r, b)) if b.lease_secs == 0 => Lease::Released {
                seq: r.seq(),
                writer_name: b.writer_name.clone(),
            },
            Some((r, b)) => Lease::Held {
                seq: r.seq(),
                writer_name: b.writer_name.clone(),
                lease_secs: b.lease_secs,
            },
        }
    }

    /// The newest seq (0: none).
    pub fn seq(&self) -> u64 {
        match self {
            Lease::Free => 0,
            Lease::Ours { seq } | Lease::Released { seq, .. } | Lease::Held { seq, .. } => *seq,
        }
    }
}

/// How a writable mount starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritableStart {
    /// The local namespace is the one to write on.
    AsIs,
    /// The network has a newer namespace from another writer and nothing local is unpublished:
    /// load it first (as a read-only follower would), then write on it.
    CatchUp,
}

/// Why a writable mount is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// Another data dir holds the lease.
    HeldElsewhere {
        /// The newest seq.
        seq: u64,
        /// The writer's host name.
        writer_name: String,
        /// Its lease in seconds.
        lease_secs: u32,
    },
    /// Another writer published past this data dir's state, and this data dir has changes it
    /// never published: writing on either would lose the other's.
    BehindWithChanges {
        /// The newest seq.
        seq: u64,
        /// Its writer's host name.
        writer_name: String,
        /// The seq this data dir's state was published as (0: never).
        local_seq: u64,
    },
}

/// Whether a data dir whose state is published as `local_seq` (with unpublished changes when
/// `local_changes`) may mount writable under `lease`; `forced` when `--force` waited out the
/// lease (see the module doc for the table).
///
/// # Errors
/// The refusal, with what the message needs.
pub fn writable_start(
    lease: &Lease,
    local_seq: u64,
    local_changes: bool,
    forced: bool,
) -> Result<WritableStart, LeaseRefusal> {
    let (seq, writer_name) = match lease {
        Lease::Free | Lease::Ours { .. } => return Ok(WritableStart::AsIs),
        Lease::Held {
            seq,
            writer_name,
            lease_secs,
        } if !forced => {
            return Err(LeaseRefusal::HeldElsewhere {
                seq: *seq,
                writer_name: writer_name.clone(),
                lease_secs: *lease_secs,
            });
        }
        Lease::Held {
            seq, writer_name, ..
        }
        | Lease::Released { seq, writer_name } => (*seq, writer_name),
    };
    if local_seq >= seq {
        return Ok(WritableStart::AsIs);
    }
    if local_changes {
        return Err(LeaseRefusal::BehindWithChanges {
            seq,
            writer_name: writer_name.clone(),
            local_seq,
        });
    }
    Ok(WritableStart::CatchUp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::root_record::{ObjectRef, RootBody};
    use crate::types::FileId;

    fn record(id: &Identity, seq: u64, writer: u8, lease_secs: u32) -> (RootRecord, RootBody) {
        let body = RootBody {
            writer: WriterId([writer; 16]),
            lease_secs,
            writer_name: format!("host{writer}"),
            snapshot: ObjectRef {
                file: FileId([1; 32]),
                len: 100,
                trailer: [2; 32],
            },
            segments: vec![],
            versions: None,
            kept: false,
        };
        let rec = RootRecord::sign(id, seq, 1, &body).unwrap();
        (rec, body)
    }

    fn lease_of(r: &(RootRecord, RootBody), me: u8) -> Lease {
        Lease::of(Some((&r.0, &r.1)), WriterId([me; 16]))
    }

    #[test]
    fn the_newest_record_says_who_holds_the_lease() {
        let id = Identity::generate(0);
        assert_eq!(Lease::of(None, WriterId([1; 16])), Lease::Free);
        assert_eq!(
            lease_of(&record(&id, 7, 1, 300), 1),
            Lease::Ours { seq: 7 },
            "our writer id, whatever the lease"
        );
        assert_eq!(lease_of(&record(&id, 7, 1, 0), 1), Lease::Ours { seq: 7 });
        assert_eq!(
            lease_of(&record(&id, 7, 2, 0), 1),
            Lease::Released {
                seq: 7,
                writer_name: "host2".into()
            }
        );
        assert_eq!(
            lease_of(&record(&id, 7, 2, 300), 1),
            Lease::Held {
                seq: 7,
                writer_name: "host2".into(),
                lease_secs: 300
            }
        );
    }

    #[test]
    fn a_lease_held_elsewhere_refuses_a_writable_mount_unless_forced() {
        let held = Lease::Held {
            seq: 9,
            writer_name: "laptop".into(),
            lease_secs: 300,
        };
        assert_eq!(
            writable_start(&held, 9, false, false),
            Err(LeaseRefusal::HeldElsewhere {
                seq: 9,
                writer_name: "laptop".into(),
                lease_secs: 300
            }),
            "even a data dir at the same seq"
        );
        assert_eq!(
            writable_start(&held, 9, false, true),
            Ok(WritableStart::AsIs)
        );
        assert_eq!(
            writable_start(&held, 4, false, true),
            Ok(WritableStart::CatchUp)
        );
        assert!(matches!(
            writable_start(&held, 4, true, true),
            Err(LeaseRefusal::BehindWithChanges { local_seq: 4, .. })
        ));
    }

    #[test]
    fn a_released_lease_lets_a_current_dir_write_and_a_behind_one_catch_up_or_refuse() {
        let released = Lease::Released {
            seq: 12,
            writer_name: "desk".into(),
        };
        assert_eq!(
            writable_start(&released, 12, true, false),
            Ok(WritableStart::AsIs),
            "local changes on top of the newest state are this dir's to publish"
        );
        assert_eq!(
            writable_start(&released, 11, false, false),
            Ok(WritableStart::CatchUp)
        );
        assert_eq!(
            writable_start(&released, 0, true, false),
            Err(LeaseRefusal::BehindWithChanges {
                seq: 12,
                writer_name: "desk".into(),
                local_seq: 0
            })
        );
    }

    #[test]
    fn no_record_or_our_own_never_refuses() {
        for lease in [Lease::Free, Lease::Ours { seq: 3 }] {
            for (local, changes, forced) in [(0, true, false), (1, false, true), (9, true, true)] {
                assert_eq!(
                    writable_start(&lease, local, changes, forced),
                    Ok(WritableStart::AsIs)
                );
            }
        }
    }
}
