//! Paged reads of the history for the web console and its HTTP API: runs
//! filtered by integration, status and date, and a run's rejected rows a
//! page at a time, so a run with a million of them is never loaded whole.

use chrono::NaiveDate;
use duckdb::params;

use super::history::{COLUMNS, from_row};
use super::{RunRecord, RunStatus, Store, StoreError};
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
        let conn = self.conn().try_clone().map_err(|source| StoreError::Open {
            path: self.path().to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(Store {
            conn,
            path: self.path().to_path_buf(),
            read_only: self.read_only,
            // A reader records no runs, so it makes no events.
            notifiers: Vec::new(),
            subscribers: Vec::new(),
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
        let condition = "($1 IS NULL OR integration = $1) AND ($2 IS NULL OR status = $2)
             AND ($3 IS NULL OR started_at >= CAST($3 AS DATE))
             AND ($4 IS NULL OR started_at < CAST($4 AS DATE) + INTERVAL 1 DAY)";
        let args = params![filter.integration, status, filter.from, filter.to];
        let total: i64 = self
            .conn()
            .query_row(
                &format!("SELECT count(*) FROM dropsync_runs WHERE {condition}"),
                args,
                |r| r.get(0),
            )
            .map_err(self.query_error(context))?;
        let mut stmt = self
            .conn()
            .prepare(&format!(
                "SELECT {COLUMNS} FROM dropsync_runs WHERE {condition}
                 ORDER BY started_at DESC, execution_id DESC LIMIT {limit} OFFSET {offset}"
            ))
            .map_err(self.query_error(context))?;
        let runs = stmt
            .query_map(args, |r| self.as_seen(from_row(r)))
            .map_err(self.query_error(context))?
            .collect::<Result<_, _>>()
            .map_err(self.query_error(context))?;
        Ok(RunPage {
            runs,
            total: total.max(0) as u64,
            limit,
            offset,
        })
    }

    /// The run with exactly this execution id, if there is one.
    pub fn find_run(&self, execution_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let context = "reading a run";
        let mut stmt = self
            .conn()
            .prepare(&format!(
                "SELECT {COLUMNS} FROM dropsync_runs WHERE execution_id = ? LIMIT 1"
            ))
            .map_err(self.query_error(context))?;
        let mut rows = stmt
            .query_map([execution_id], |r| self.as_seen(from_row(r)))
            .map_err(self.query_error(context))?;
        rows.next().transpose().map_err(self.query_error(context))
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
        let condition = "execution_id = $1 AND ($2 IS NULL OR
               contains(lower(coalesce(record_key, '') || chr(0) || coalesce(field, '') || chr(0)
                 || message || chr(0) || coalesce(raw, '')), lower($2)))";
        let search = search.filter(|s| !s.is_empty());
        let total: i64 = self
            .conn()
            .query_row(
                &format!("SELECT count(*) FROM dropsync_row_errors WHERE {condition}"),
                params![execution_id, search],
                |r| r.get(0),
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
        let mut stmt = self
            .conn()
            .prepare(&format!(
                "SELECT line, record_key, field, message, raw FROM dropsync_row_errors
                 WHERE {condition} {page}"
            ))
            .map_err(self.query_error(context))?;
        let errors = stmt
            .query_map(params![execution_id, search], row_error)
            .map_err(self.query_error(context))?
            .collect::<Result<_, _>>()
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
        let mut stmt = self
            .conn()
            .prepare(&format!(
                "SELECT line, record_key, field, message, raw, position FROM dropsync_row_errors
                 WHERE execution_id = ? AND position > ? ORDER BY position LIMIT {chunk}"
            ))
            .map_err(self.query_error(context))?;
        // Keyset paging on the position: each chunk costs the same, however
        // deep into the run's rows it is.
        let mut after = -1i64;
        loop {
            let mut last = None;
            let rows: Vec<RowError> = stmt
                .query_map(params![execution_id, after], |r| {
                    last = Some(r.get::<_, i64>(5)?);
                    row_error(r)
                })
                .map_err(self.query_error(context))?
                .collect::<Result<_, _>>()
                .map_err(self.query_error(context))?;
            let Some(last) = last else { return Ok(()) };
            after = last;
            let full = rows.len() == chunk;
            if !each(rows) || !full {
                return Ok(());
            }
        }
    }
}

fn row_error(r: &duckdb::Row<'_>) -> duckdb::Result<RowError> {
    Ok(RowError {
        line: r.get::<_, i64>(0)?.max(0) as u64,
        key: r.get(1)?,
        field: r.get(2)?,
        message: r.get(3)?,
        raw: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
    })
}
