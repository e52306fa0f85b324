//! Root records a storage node keeps for owners (`docs/namespace-publishing.md` §2): table
//! `roots` in the shard index, owner NodeId → the newest verified record's bytes. One record per
//! owner, replaced only under the no-rollback rule ([`admit`]), compared and replaced in one
//! durable write transaction, so once a node has acknowledged seq N it never answers with less.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::ShardStore;
use crate::error::Result;
use crate::root_record::{Admit, RootRecord, admit};
use crate::types::NodeId;

/// Owner NodeId → root record bytes.
const ROOTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("roots");

impl ShardStore {
    /// The root record held for `owner`, if any. A held record that no longer verifies (damage
    /// on this disk) is logged and treated as absent.
    ///
    /// # Errors
    /// [`crate::Error::StoreIndex`] when the index cannot be read.
    pub fn root(&self, owner: &NodeId) -> Result<Option<RootRecord>> {
        let txn = self.db.begin_read().map_err(|e| self.idx_err(e))?;
        let table = match txn.open_table(ROOTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.idx_err(e)),
        };
        let held = table.get(&owner.0).map_err(|e| self.idx_err(e))?;
        Ok(held.and_then(|v| held_record(owner, v.value())))
    }

    /// Keeps `record` as its owner's root record if it supersedes the one held ([`admit`]):
    /// read, compare and replace in one write transaction, durable before this returns.
    ///
    /// # Errors
    /// [`crate::Error::RootRollback`] when the held record is newer (or the same seq with other
    /// bytes): nothing changes; [`crate::Error::StoreIndex`] when the index fails.
    pub fn put_root(&self, record: &RootRecord) -> Result<Admit> {
        let owner = record.owner();
        self.put_admitted(ROOTS, &owner.0, record.as_bytes(), |held| {
            let held = held.and_then(|b| held_record(&owner, b));
            admit(held.as_ref(), record)
        })
    }

    /// The compare-and-replace both record tables use: reads the bytes held under `key`, asks
    /// `decide`, and on [`Admit::Store`] writes `bytes` and commits durably (redb commits with
    /// immediate durability unless told otherwise); otherwise changes nothing.
    pub(super) fn put_admitted<K: redb::Key + 'static>(
        &self,
        table: TableDefinition<K, &[u8]>,
        key: K::SelfType<'_>,
        bytes: &[u8],
        decide: impl FnOnce(Option<&[u8]>) -> Result<Admit>,
    ) -> Result<Admit>
    where
        for<'a> K::SelfType<'a>: Copy,
    {
        let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
        let verdict = {
            let mut table = txn.open_table(table).map_err(|e| self.idx_err(e))?;
            let held = table
                .get(key)
                .map_err(|e| self.idx_err(e))?
                .map(|v| v.value().to_vec());
            let verdict = decide(held.as_deref())?;
            if verdict == Admit::Store {
                table.insert(key, bytes).map_err(|e| self.idx_err(e))?;
            }
            verdict
        };
        if verdict == Admit::Store {
            txn.commit().map_err(|e| self.idx_err(e))?;
        } else {
            txn.abort().map_err(|e| self.idx_err(e))?;
        }
        Ok(verdict)
    }
}

/// The record stored for `owner`, re-checked (a record was verified before it was stored, at
/// the difficulty then in force; this catches damage, not policy).
fn held_record(owner: &NodeId, bytes: &[u8]) -> Option<RootRecord> {
    match RootRecord::verify(bytes, 0) {
        Ok(r) if r.owner() == *owner => Some(r),
        Ok(r) => {
            tracing::warn!(%owner, found = %r.owner(), "root record stored under another owner; ignored");
            None
        }
        Err(e) => {
            tracing::warn!(%owner, error = %e, "stored root record no longer verifies; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Quotas;
    use super::*;
    use crate::Error;
    use crate::identity::Identity;
    use crate::root_record::testing::record;

    const QUOTAS: Quotas = Quotas {
        capacity: 1 << 20,
        per_owner: 0,
    };

    #[test]
    fn root_records_are_replaced_only_forward_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Identity::generate(0), Identity::generate(0));
        let (a1, a2, a3) = (record(&a, 1), record(&a, 2), record(&a, 3));
        {
            let store = ShardStore::open(dir.path(), QUOTAS).unwrap();
            assert_eq!(store.root(&a.node_id()).unwrap(), None);
            assert_eq!(store.put_root(&a2).unwrap(), Admit::Store);
            assert_eq!(store.put_root(&a2).unwrap(), Admit::Same);
            let err = store.put_root(&a1).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::RootRollback {
                        held: 2,
                        offered: 1,
                        ..
                    }
                ),
                "{err}"
            );
            let other_bytes = record(&a, 2);
            assert!(matches!(
                store.put_root(&other_bytes),
                Err(Error::RootRollback { .. })
            ));
            assert_eq!(store.put_root(&record(&b, 1)).unwrap(), Admit::Store);
            assert_eq!(store.root(&a.node_id()).unwrap(), Some(a2.clone()));
        }
        let store = ShardStore::open(dir.path(), QUOTAS).unwrap();
        assert_eq!(store.root(&a.node_id()).unwrap(), Some(a2));
        assert_eq!(store.root(&b.node_id()).unwrap().map(|r| r.seq()), Some(1));
        assert_eq!(store.put_root(&a3).unwrap(), Admit::Store);
        assert_eq!(store.root(&a.node_id()).unwrap(), Some(a3));
    }
}
