//! What each integration has fetched: name, size and modification time at
//! the source, and the content hash. A nightly scan recognises a file it has
//! already synced from this alone, without reading (or downloading) it again.

use chrono::NaiveDateTime;

use super::{Store, StoreError, now};
use crate::source::{Candidate, StagedFile};

impl Store {
    /// The content hash of `candidate` when it was fetched before unchanged
    /// (same name, size and modification time).
    pub fn fetched_hash(
        &self,
        integration: &str,
        candidate: &Candidate,
    ) -> Result<Option<String>, StoreError> {
        let Some(modified) = candidate.modified else {
            return Ok(None);
        };
        self.db()
            .query_opt(
                "SELECT content_hash FROM dropsync_fetched
                 WHERE integration = ? AND name = ? AND size = ? AND modified = ?
                 ORDER BY fetched_at DESC LIMIT 1",
                &[&integration, &candidate.name, &candidate.size, &modified],
            )
            .and_then(|row| row.map(|r| r.get::<String>(0)).transpose())
            .map_err(self.query_error("looking up fetched files"))
    }

    /// Remembers that `candidate` was fetched as `staged`.
    pub fn record_fetched(
        &self,
        integration: &str,
        candidate: &Candidate,
        staged: &StagedFile,
    ) -> Result<(), StoreError> {
        let modified: Option<NaiveDateTime> = candidate.modified;
        self.db()
            .execute(
                "INSERT INTO dropsync_fetched (integration, name, size, modified, content_hash, fetched_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
                &[&integration, &candidate.name, &staged.size, &modified, &staged.content_hash, &now()],
            )
            .map(drop)
            .map_err(self.query_error("remembering a fetched file"))
    }
}
