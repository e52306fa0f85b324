//! Eviction: clean inodes dropped least recently used first, to keep clean bytes within the
//! budget and free space above the reserve. Dirty data is never evicted.

use super::{CacheStore, Inner};
use crate::error::{Error, Result};

impl CacheStore {
    /// Evicts least recently used clean inodes other than `keep` until `fits` says enough.
    pub(super) fn evict_until(
        &self,
        inner: &mut Inner,
        keep: Option<u64>,
        mut fits: impl FnMut(&Inner) -> bool,
    ) -> Result<()> {
        let mut victims = Vec::new();
        let mut skipped = Vec::new();
        let mut freed = 0u64;
        while !fits(inner) {
            let Some((ino, ())) = inner.lru.pop_lru() else {
                break;
            };
            if Some(ino) == keep {
                skipped.push(ino);
                continue;
            }
            let bytes = inner.entries.get(&ino).map_or(0, |e| e.bytes);
            // Account now so `fits` sees the freed space; drop_entries does the real work.
            inner.clean_bytes = inner.clean_bytes.saturating_sub(bytes);
            if let Some(e) = inner.entries.get_mut(&ino) {
                e.bytes = 0;
            }
            freed += bytes;
            victims.push(ino);
        }
        for ino in skipped {
            // Put it back as most recently used (it is the one being accessed).
            inner.lru.put(ino, ());
        }
        if !victims.is_empty() {
            tracing::debug!(
                inodes = victims.len(),
                bytes = freed,
                "evicting clean cache data"
            );
        }
        self.drop_entries(inner, &victims)
    }

    /// Evicts clean data, least recently used first, until clean bytes are within the budget.
    ///
    /// # Errors
    /// [`Error::StoreIndex`], [`Error::Io`].
    pub fn evict_to_budget(&self) -> Result<()> {
        let mut inner = self.lock();
        let budget = self.config.budget_bytes;
        self.evict_until(&mut inner, None, |i| i.clean_bytes <= budget)
    }

    pub(super) fn has_disk_room(&self, needed: u64) -> Result<(bool, u64)> {
        let free = (self.free_space)(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        Ok((
            free >= needed.saturating_add(self.config.reserve_bytes),
            free,
        ))
    }
}
