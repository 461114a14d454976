//! The validated rows of one batch, as the store reads them: Parquet files
//! written by the pipeline, one per chunk of the file, which DuckDB reads
//! together as one relation. A list of files rather than one, so that the
//! pipeline never holds more than a chunk of rows; every part has the same
//! columns, in the same order.

use std::path::PathBuf;

/// The Parquet files one batch's valid rows are in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handoff {
    pub parts: Vec<PathBuf>,
}

impl Handoff {
    /// The rows as one DuckDB relation: `read_parquet(['a', 'b', ...])`.
    pub fn relation(&self) -> String {
        let files: Vec<String> = self
            .parts
            .iter()
            .map(|p| format!("'{}'", p.display().to_string().replace('\'', "''")))
            .collect();
        format!("read_parquet([{}])", files.join(", "))
    }
}

/// What DuckDB may hold in memory while it diffs and applies a batch; past
/// it, its joins, sorts and temporary tables spill to disk instead of
/// growing. DuckDB's own default is 80% of the machine's memory, which lets
/// one large sync take the machine from every other process. With 1 GB a
/// 10-million-row day-1 load and day-2 sync each peaked at 1.3 GB for the
/// whole process (the target is 2 GB); the price is spilling on the largest
/// loads. `DROPSYNC_DUCKDB_MEMORY` (e.g. `4GB`) sets another.
const MEMORY_LIMIT: &str = "1GB";

impl super::Store {
    /// Limits DuckDB's memory for the batches to come, spilling into
    /// `spill` (created owner-only: it holds the rows being applied).
    pub fn limit_memory(&self, spill: &std::path::Path) -> Result<(), super::StoreError> {
        crate::source::create_private_dir(spill).map_err(|e| super::StoreError::Other {
            path: self.path().to_path_buf(),
            message: format!("cannot create {}: {e}", spill.display()),
        })?;
        let configured = std::env::var("DROPSYNC_DUCKDB_MEMORY").ok();
        // A size such as `512MB` or `4GB`: digits and a unit, nothing to quote.
        let limit = configured
            .as_deref()
            .map(str::trim)
            .filter(|v| {
                !v.is_empty()
                    && v.starts_with(|c: char| c.is_ascii_digit())
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            })
            .unwrap_or(MEMORY_LIMIT);
        let spill = spill.display().to_string().replace('\'', "''");
        self.conn()
            .execute_batch(&format!(
                "SET memory_limit = '{limit}'; SET temp_directory = '{spill}';"
            ))
            .map_err(self.query_error("limiting DuckDB's memory"))
    }
}
