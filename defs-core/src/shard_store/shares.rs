//! Share records a storage node keeps (`crate::share`): table `shares` in the shard index,
//! recipient NodeId ‖ owner NodeId ‖ share id → the newest verified record's bytes. Replaced
//! only under [`admit`] (forward only; a revocation is final), compared and replaced in one
//! durable write transaction. Keyed by recipient first, so a recipient's records are one range.

use redb::{ReadableDatabase, TableDefinition};

use super::ShardStore;
use crate::error::Result;
use crate::root_record::Admit;
use crate::share::record::{ShareRecord, admit};
use crate::types::NodeId;

/// Recipient ‖ owner ‖ share id → share record bytes.
const SHARES: TableDefinition<&[u8; 80], &[u8]> = TableDefinition::new("shares");

fn key(record: &ShareRecord) -> [u8; 80] {
    let mut k = [0u8; 80];
    k[..32].copy_from_slice(&record.recipient().0);
    k[32..64].copy_from_slice(&record.owner().0);
    k[64..].copy_from_slice(&record.share().0);
    k
}

impl ShardStore {
    /// The share records held for `recipient`, at most `limit`, in key order. A held record
    /// that no longer verifies (damage on this disk) is logged and left out.
    ///
    /// # Errors
    /// [`crate::Error::StoreIndex`] when the index cannot be read.
    pub fn shares_for(&self, recipient: &NodeId, limit: usize) -> Result<Vec<ShareRecord>> {
        let txn = self.db.begin_read().map_err(|e| self.idx_err(e))?;
        let table = match txn.open_table(SHARES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.idx_err(e)),
        };
        let mut lo = [0u8; 80];
        lo[..32].copy_from_slice(&recipient.0);
        let mut hi = [0xFFu8; 80];
        hi[..32].copy_from_slice(&recipient.0);
        let mut out = Vec::new();
        for item in table
            .range::<&[u8; 80]>(&lo..=&hi)
            .map_err(|e| self.idx_err(e))?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| self.idx_err(e))?;
            match ShareRecord::verify(v.value(), 0) {
                Ok(r) if key(&r) == *k.value() => out.push(r),
                Ok(_) => {
                    tracing::warn!(%recipient, "share record stored under another key; ignored")
                }
                Err(e) => {
                    tracing::warn!(%recipient, error = %e, "stored share record no longer verifies; ignored");
                }
            }
        }
        Ok(out)
    }

    /// Keeps `record` if it supersedes the one held for its share ([`admit`]), durably.
    ///
    /// # Errors
    /// [`crate::Error::ShareRollback`], [`crate::Error::ShareRevoked`]: nothing changes;
    /// [`crate::Error::StoreIndex`] when the index fails.
    pub fn put_share(&self, record: &ShareRecord) -> Result<Admit> {
        let k = key(record);
        self.put_admitted(SHARES, &k, record.as_bytes(), |held| {
            let held = held.and_then(|b| ShareRecord::verify(b, 0).ok());
            admit(held.as_ref(), record)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Quotas;
    use super::*;
    use crate::Error;
    use crate::identity::Identity;
    use crate::share::ShareId;
    use crate::share::testing::record as rec;

    fn open(dir: &std::path::Path) -> ShardStore {
        let quotas = Quotas {
            capacity: 1 << 20,
            per_owner: 0,
        };
        ShardStore::open(dir, quotas).unwrap()
    }

    #[test]
    fn share_records_go_forward_only_stop_at_revocation_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            Identity::generate(0),
            Identity::generate(0),
            Identity::generate(0),
        );
        {
            let store = open(dir.path());
            assert!(store.shares_for(&b.node_id(), 64).unwrap().is_empty());
            let r2 = rec(&a, &b, 1, 2, false);
            assert_eq!(store.put_share(&r2).unwrap(), Admit::Store);
            assert_eq!(store.put_share(&r2).unwrap(), Admit::Same);
            assert!(matches!(
                store.put_share(&rec(&a, &b, 1, 1, false)),
                Err(Error::ShareRollback { .. })
            ));
            store.put_share(&rec(&a, &b, 2, 1, false)).unwrap();
            store.put_share(&rec(&a, &c, 1, 1, false)).unwrap();
            let got = store.shares_for(&b.node_id(), 64).unwrap();
            assert_eq!(got.len(), 2);
            assert!(got.iter().all(|r| r.recipient() == b.node_id()));
            assert_eq!(store.shares_for(&b.node_id(), 1).unwrap().len(), 1);
            store.put_share(&rec(&a, &b, 1, 3, true)).unwrap();
        }
        let store = open(dir.path());
        assert!(matches!(
            store.put_share(&rec(&a, &b, 1, 4, false)),
            Err(Error::ShareRevoked { .. })
        ));
        let got = store.shares_for(&b.node_id(), 64).unwrap();
        assert!(
            got.iter()
                .any(|r| r.share() == ShareId([1; 16]) && r.revoked())
        );
        assert_eq!(store.shares_for(&c.node_id(), 64).unwrap().len(), 1);
    }
}
