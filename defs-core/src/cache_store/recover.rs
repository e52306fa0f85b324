//! Opening the cache: the index rows loaded, the op log replayed over them when it was written
//! during this boot, and the data files reconciled with the rows (files without a row removed,
//! rows without a file dropped, ranges clipped to each file's length).

use std::collections::HashMap;
use std::fs;

use redb::{ReadableDatabase, ReadableTable};

use super::entry::Entry;
use super::log::CacheRec;
use super::{CacheStore, INDEX};
use crate::error::{Error, Result};
use crate::oplog::Tail;

impl CacheStore {
    pub(super) fn recover(&self, recovered: crate::oplog::Recovered) -> Result<()> {
        let mut loaded: Vec<(u64, Entry)> = Vec::new();
        let mut drop_keys: Vec<u64> = Vec::new();
        {
            let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
            txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            txn.commit().map_err(|e| self.idx_err(e))?;
            let txn = self.db.begin_read().map_err(|e| self.idx_err(e))?;
            let table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            for row in table.iter().map_err(|e| self.idx_err(e))? {
                let (k, v) = row.map_err(|e| self.idx_err(e))?;
                match Entry::decode(v.value()) {
                    Some(entry) => loaded.push((k.value(), entry)),
                    None => {
                        tracing::warn!(ino = k.value(), "dropping undecodable cache index entry");
                        drop_keys.push(k.value());
                    }
                }
            }
        }
        // Replay the log: changes since the last checkpoint that the index may not have.
        let mut loaded: HashMap<u64, Entry> = loaded.into_iter().collect();
        if recovered.same_boot {
            for rec in &recovered.records {
                let change = CacheRec::decode(&rec.payload).ok_or_else(|| Error::Corrupt {
                    what: "cache op log",
                    reason: format!(
                        "record {} does not decode (deleting {} loses clean data and writes not yet uploaded)",
                        rec.lsn,
                        self.dir.display()
                    ),
                })?;
                if let Some(ino) = change.apply(&mut loaded) {
                    drop_keys.push(ino);
                }
            }
            if let Tail::Torn { offset, reason } = &recovered.tail {
                tracing::info!(offset, %reason, "cache op log: ignoring a torn tail");
            }
        } else if !recovered.records.is_empty() {
            tracing::info!(
                records = recovered.records.len(),
                "cache op log from an earlier boot ignored: unsynced ranges are forgotten"
            );
        }
        let mut inner = self.lock();
        let mut rewrite: Vec<u64> = Vec::new();
        for (ino, mut entry) in loaded {
            let len = match fs::metadata(self.path(ino)) {
                Ok(m) => m.len(),
                Err(_) => {
                    drop_keys.push(ino);
                    continue;
                }
            };
            if entry.ranges.end() > len {
                entry.ranges.clip(len);
                entry.pending = true;
            }
            entry.bytes = entry.ranges.bytes();
            if entry.pending {
                rewrite.push(ino);
            }
            inner.account(entry.dirty, entry.bytes);
            inner.entries.insert(ino, entry);
        }
        // Least recently used first into the LRU.
        let mut clean: Vec<(u64, u64)> = inner
            .entries
            .iter()
            .filter(|(_, e)| !e.dirty)
            .map(|(ino, e)| (e.last_used, *ino))
            .collect();
        clean.sort_unstable();
        for (_, ino) in clean {
            inner.lru.put(ino, ());
        }
        // Files without an entry hold bytes never recorded (written, never synced): remove.
        let data = self.dir.join("data");
        for file in fs::read_dir(&data).map_err(|e| Error::io(&data, e))? {
            let path = file.map_err(|e| Error::io(&data, e))?.path();
            let ino = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok());
            if !ino.is_some_and(|ino| inner.entries.contains_key(&ino)) {
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        let txn = self.db.begin_write().map_err(|e| self.idx_err(e))?;
        {
            let mut table = txn.open_table(INDEX).map_err(|e| self.idx_err(e))?;
            for ino in &drop_keys {
                table.remove(ino).map_err(|e| self.idx_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.idx_err(e))?;
        // Checkpoint: fsync the files of replayed and clipped entries, commit them, empty the
        // log.
        debug_assert!(
            rewrite
                .iter()
                .all(|i| inner.entries.get(i).is_none_or(|e| e.pending))
        );
        self.flush_locked(&mut inner)
    }
}
