//! Paged reads of the history for the web console and its HTTP API: runs
//! filtered by integration, status and date, and a run's rejected rows a
//! page at a time, so a run with a million of them is never loaded whole.

use chrono::NaiveDate;

use super::history::COLUMNS;
use super::{DbError, Row, RunRecord, RunStatus, Store, StoreError};
use crate::schema::RowError;

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub integration: Option<String>,
    pub status: Option<RunStatus>,
    /// Runs started on or after this day (UTC).
    pub from: Option<NaiveDate>,
    /// Runs started on or before this day (UTC).
    pub to: Option<NaiveDate>,
}

/// One page of runs, newest first, and how many match in all.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunPage {
    pub runs: Vec<RunRecord>,
    pub total: u64,
    pub limit: usize,
    pub offset: usize,
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<RunStatus, String> {
        [
            RunStatus::Running,
            RunStatus::Success,
            RunStatus::Partial,
            RunStatus::Failed,
            RunStatus::Skipped,
            RunStatus::Interrupted,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| {
            format!(
                "`{s}` is not a run status (running, success, partial, failed, skipped, interrupted)"
            )
        })
    }
}

impl Store {
    /// A second connection to the same database, for reads. DuckDB gives
    /// each connection its own snapshot, so a read never waits for a batch
    /// being applied on the writer's connection and never sees half of one.
    pub fn reader(&self) -> Result<Store, StoreError> {
        let db = self
            .db()
            .try_clone()
            .map_err(self.query_error("opening a connection to read"))?;
        Ok(Store {
            db,
            path: self.path().to_path_buf(),
            read_only: self.read_only,
            // A reader records no runs, so it makes no events.
            notifiers: Vec::new(),
            subscribers: Vec::new(),
            memory: Default::default(),
        })
    }

    /// The runs `filter` selects, newest first: `limit` of them from `offset`.
    pub fn runs_page(
        &self,
        filter: &RunFilter,
        limit: usize,
        offset: usize,
    ) -> Result<RunPage, StoreError> {
        let context = "reading history";
        let status = filter.status.map(RunStatus::as_str);
        let condition =
            "(?1::VARCHAR IS NULL OR integration = ?1) AND (?2::VARCHAR IS NULL OR status = ?2)
             AND (?3::DATE IS NULL OR started_at >= CAST(?3 AS DATE))
             AND (?4::DATE IS NULL OR started_at < CAST(?4 AS DATE) + INTERVAL '1 day')";
        let args: super::db::Params<'_> = &[&filter.integration, &status, &filter.from, &filter.to];
        let total: i64 = self
            .db()
            .value(
                &format!("SELECT count(*) FROM dropsync_runs WHERE {condition}"),
                args,
            )
            .map_err(self.query_error(context))?;
        let runs = self.read_runs(
            &format!(
                "SELECT {COLUMNS} FROM dropsync_runs WHERE {condition}
                 ORDER BY started_at DESC, execution_id DESC LIMIT {limit} OFFSET {offset}"
            ),
            args,
            context,
        )?;
        Ok(RunPage {
            runs,
            total: total.max(0) as u64,
            limit,
            offset,
        })
    }

    /// The run with exactly this execution id, if there is one.
    pub fn find_run(&self, execution_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let runs = self.read_runs(
            &format!("SELECT {COLUMNS} FROM dropsync_runs WHERE execution_id = ? LIMIT 1"),
            &[&execution_id],
            "reading a run",
        )?;
        Ok(runs.into_iter().next())
    }

    /// A page of a run's rejected rows in file order, and how many match in
    /// all. `search` keeps rows whose key, field, message or raw text
    /// contains it (any case).
    pub fn row_errors_page(
        &self,
        execution_id: &str,
        search: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<RowError>, u64), StoreError> {
        let context = "reading row errors";
        // Fields are joined with a control character no search holds, so a
        // match never spans two of them.
        let condition = "execution_id = ?1 AND (?2::VARCHAR IS NULL OR
               strpos(lower(coalesce(record_key, '') || chr(1) || coalesce(field, '') || chr(1)
                 || message || chr(1) || coalesce(raw, '')), lower(?2)) > 0)";
        let search = search.filter(|s| !s.is_empty());
        let total: i64 = self
            .db()
            .value(
                &format!("SELECT count(*) FROM dropsync_row_errors WHERE {condition}"),
                &[&execution_id, &search],
            )
            .map_err(self.query_error(context))?;
        // A run's rows are numbered 0, 1, 2... in file order as they are
        // recorded, so without a search a page is a range of positions:
        // DuckDB skips the row groups outside it instead of sorting the
        // run's million rows to throw away all but a page.
        let page = match search {
            None => format!(
                "AND position >= {offset} AND position < {end} ORDER BY position",
                end = offset.saturating_add(limit)
            ),
            Some(_) => format!("ORDER BY position LIMIT {limit} OFFSET {offset}"),
        };
        let errors = self
            .db()
            .query(
                &format!(
                    "SELECT line, record_key, field, message, raw FROM dropsync_row_errors
                     WHERE {condition} {page}"
                ),
                &[&execution_id, &search],
            )
            .and_then(|rows| rows.iter().map(row_error).collect())
            .map_err(self.query_error(context))?;
        Ok((errors, total.max(0) as u64))
    }

    /// A run's rejected rows in file order, `chunk` at a time, each chunk
    /// handed to `each` until it returns false; memory holds one chunk.
    pub fn each_row_error_chunk(
        &self,
        execution_id: &str,
        chunk: usize,
        mut each: impl FnMut(Vec<RowError>) -> bool,
    ) -> Result<(), StoreError> {
        let context = "reading row errors";
        let sql = format!(
            "SELECT line, record_key, field, message, raw, position FROM dropsync_row_errors
             WHERE execution_id = ? AND position > ? ORDER BY position LIMIT {chunk}"
        );
        // Keyset paging on the position: each chunk costs the same, however
        // deep into the run's rows it is.
        let mut after = -1i64;
        loop {
            let rows = self
                .db()
                .query(&sql, &[&execution_id, &after])
                .map_err(self.query_error(context))?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.get::<i64>(5).map_err(self.query_error(context))?;
            let errors: Vec<RowError> = rows
                .iter()
                .map(row_error)
                .collect::<Result<_, _>>()
                .map_err(self.query_error(context))?;
            let full = errors.len() == chunk;
            if !each(errors) || !full {
                return Ok(());
            }
        }
    }
}

fn row_error(r: &Row) -> Result<RowError, DbError> {
    Ok(RowError {
        line: r.get::<i64>(0)?.max(0) as u64,
        key: r.get(1)?,
        field: r.get(2)?,
        message: r.get(3)?,
        raw: r.get::<Option<String>>(4)?.unwrap_or_default(),
    })
}
