//! What a data dir recovered from the key alone learns of the lost machine's garbage: the
//! objects its kept versions (`/.snapshots`) name that the namespace no longer does. The lost
//! machine's ledger rows were never published; without this, the collector here would never
//! delete those objects once their versions expire (docs/namespace-publishing.md §6).
//!
//! ```text
//!  DIR/meta/ledger.derive (written by recovery)
//!   ─▶ per kept version: load its chain into DIR/meta/derive.new (checked as recovery does)
//!      ─▶ the content objects its namespace names (live_ranges), its snapshot and segments
//!   ─▶ one transaction: a ledger row for each object without one, born 0, dead = the newest
//!      kept seq that names it + 1
//!   ─▶ ledger.derive removed
//! ```
//!
//! Any version that cannot be loaded stops the step with nothing written (the marker stays,
//! the next run tries again): a row derived without every version could let the collector go
//! before a version that needs the object expires. Rows are only ever added, never changed, so
//! a crash anywhere repeats the step harmlessly.
//!
//! Not learned: objects of states the lost machine had stopped keeping but not yet collected
//! (no record names them any more); they stay on the network.

use std::collections::HashMap;

use tracing::info;

use super::Publisher;
use super::chain::load_chain;
use super::files::{LEDGER_DERIVE, blocking, remove_durably};
use crate::error::Result;
use crate::meta::MetaDb;
use crate::meta::ledger::ObjectKind;
use crate::types::FileId;

/// The scratch directory under `DIR/meta` a kept version is loaded into.
const DERIVE_DIR: &str = "derive.new";

impl Publisher {
    /// In a data dir recovered from the key alone (`ledger.derive` present): gives every object
    /// the kept versions name and the ledger lacks a row, so that the collector deletes it once
    /// no kept version needs it. Returns the rows added (0 when there was nothing to learn).
    ///
    /// # Errors
    /// The fetch and load errors of a kept version (nothing is written then; the next call
    /// tries again); Db, Io.
    ///
    /// # Cancel safety
    /// Safe: rows are added in one transaction at the end, and the marker goes after it.
    pub async fn derive_recovered_garbage(&self) -> Result<u64> {
        if !self.dir.join(LEDGER_DERIVE).exists() {
            return Ok(0);
        }
        let list = {
            let mut st = self.state.lock().await;
            self.load_versions(&mut st).await?
        };
        let mut newest: HashMap<FileId, (ObjectKind, u64)> = HashMap::new();
        let mut note = |file: FileId, kind: ObjectKind, seq: u64| {
            let e = newest.entry(file).or_insert((kind, seq));
            e.1 = e.1.max(seq);
        };
        let staging = self.dir.join(DERIVE_DIR);
        for v in &list {
            note(v.snapshot.file, ObjectKind::Snapshot, v.seq);
            for s in &v.segments {
                note(s.file, ObjectKind::Segment, v.seq);
            }
            load_chain(&staging, &self.objects, &v.snapshot, &v.segments, v.seq).await?;
            let dir = staging.clone();
            let files = blocking(move || {
                let db = MetaDb::open_with(&dir, None)?;
                let files = db.live_objects();
                db.close()?;
                let _ = std::fs::remove_dir_all(&dir);
                files
            })
            .await?;
            for (f, _) in files {
                note(f, ObjectKind::File, v.seq);
            }
        }
        let rows: Vec<(FileId, ObjectKind, u64)> = newest
            .into_iter()
            .map(|(file, (kind, seq))| (file, kind, seq))
            .collect();
        let db = self.db.clone();
        let dir = self.dir.clone();
        let added = blocking(move || {
            let added = db.note_kept_objects(&rows)?;
            remove_durably(&dir, LEDGER_DERIVE)?;
            Ok(added)
        })
        .await?;
        info!(
            versions = list.len(),
            added, "recovered ledger: the objects the kept versions name are known"
        );
        Ok(added)
    }
}
