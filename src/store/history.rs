//! The history of runs: one record per attempt to sync one file, with its
//! status, counts and row errors.

use chrono::{NaiveDate, NaiveDateTime};
use duckdb::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now};
use crate::schema::RowError;

/// How a run ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Success,
    Partial,
    Failed,
    Skipped,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> RunStatus {
        match s {
            "running" => RunStatus::Running,
            "success" => RunStatus::Success,
            "partial" => RunStatus::Partial,
            "skipped" => RunStatus::Skipped,
            "interrupted" => RunStatus::Interrupted,
            _ => RunStatus::Failed,
        }
    }
}

/// Why a run failed, which decides whether a later scan tries it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Something around the file failed (the disk, the store, the server):
    /// the same file may well go through next time, so scans retry it.
    Transient,
    /// The file itself was refused (its rows, its header, the mass-delete
    /// guard): the same bytes will fail the same way, so it waits for a
    /// person (a corrected file, `--force`, or `--date`).
    Content,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Content => "content",
        }
    }

    fn parse(s: &str) -> Option<FailureKind> {
        match s {
            "transient" => Some(FailureKind::Transient),
            "content" => Some(FailureKind::Content),
            _ => None,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run, as the history keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub execution_id: String,
    pub integration: String,
    pub dataset: String,
    pub mode: String,
    pub trigger: String,
    pub status: RunStatus,
    /// For a failed run: whether trying the same file again may help.
    #[serde(default)]
    pub failure: Option<FailureKind>,
    /// Which attempt at this file (content and business date) this run is:
    /// 1, or more when a scan retried it after a transient failure.
    #[serde(default = "first_attempt")]
    pub attempt: i64,
    pub message: Option<String>,
    pub file_name: Option<String>,
    pub source: Option<String>,
    pub staged_path: Option<String>,
    pub content_hash: Option<String>,
    pub file_size: Option<i64>,
    pub business_date: Option<NaiveDate>,
    pub forced: bool,
    pub input_rows: i64,
    pub success_rows: i64,
    pub error_rows: i64,
    pub skipped_rows: i64,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub unchanged: i64,
    pub subscribed: i64,
    pub unsubscribed: i64,
    pub started_at: NaiveDateTime,
    pub completed_at: Option<NaiveDateTime>,
}

fn first_attempt() -> i64 {
    1
}

impl RunRecord {
    /// A new run, not yet started in the store.
    pub fn new(integration: &str, dataset: &str, mode: &str, trigger: &str) -> RunRecord {
        RunRecord {
            execution_id: uuid::Uuid::now_v7().to_string(),
            integration: integration.to_string(),
            dataset: dataset.to_string(),
            mode: mode.to_string(),
            trigger: trigger.to_string(),
            status: RunStatus::Running,
            failure: None,
            attempt: 1,
            message: None,
            file_name: None,
            source: None,
            staged_path: None,
            content_hash: None,
            file_size: None,
            business_date: None,
            forced: false,
            input_rows: 0,
            success_rows: 0,
            error_rows: 0,
            skipped_rows: 0,
            inserted: 0,
            updated: 0,
            deleted: 0,
            unchanged: 0,
            subscribed: 0,
            unsubscribed: 0,
            started_at: now(),
            completed_at: None,
        }
    }
}

pub(super) const COLUMNS: &str = "execution_id, integration, dataset, mode, trigger, status, message, file_name, source,
    staged_path, content_hash, file_size, business_date, forced, input_rows, success_rows, error_rows,
    skipped_rows, inserted, updated, deleted, unchanged, subscribed, unsubscribed, started_at, completed_at,
    failure, attempt";

/// How many columns `COLUMNS` names.
pub(super) const COLUMN_COUNT: usize = 28;

pub(super) fn from_row(r: &duckdb::Row<'_>) -> duckdb::Result<RunRecord> {
    Ok(RunRecord {
        execution_id: r.get(0)?,
        integration: r.get(1)?,
        dataset: r.get(2)?,
        mode: r.get(3)?,
        trigger: r.get(4)?,
        status: RunStatus::parse(&r.get::<_, String>(5)?),
        message: r.get(6)?,
        file_name: r.get(7)?,
        source: r.get(8)?,
        staged_path: r.get(9)?,
        content_hash: r.get(10)?,
        file_size: r.get(11)?,
        business_date: r.get(12)?,
        forced: r.get(13)?,
        input_rows: r.get(14)?,
        success_rows: r.get(15)?,
        error_rows: r.get(16)?,
        skipped_rows: r.get(17)?,
        inserted: r.get(18)?,
        updated: r.get(19)?,
        deleted: r.get(20)?,
        unchanged: r.get(21)?,
        subscribed: r.get(22)?,
        unsubscribed: r.get(23)?,
        started_at: r.get(24)?,
        completed_at: r.get(25)?,
        failure: r
            .get::<_, Option<String>>(26)?
            .as_deref()
            .and_then(FailureKind::parse),
        attempt: r.get::<_, Option<i64>>(27)?.unwrap_or(1),
    })
}

impl Store {
    /// A run as it stands: read-only, no writer holds the store, so a run
    /// still recorded `running` is one a stopped process left behind.
    pub(super) fn as_seen(&self, run: duckdb::Result<RunRecord>) -> duckdb::Result<RunRecord> {
        let mut run = run?;
        if self.read_only && run.status == RunStatus::Running {
            run.status = RunStatus::Interrupted;
            run.message = Some(super::INTERRUPTED.to_string());
        }
        Ok(run)
    }

    /// Records a run. A run recorded `running` that never finishes is marked
    /// `interrupted` the next time the store is opened.
    pub fn insert_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        insert_run(self.conn(), run)
            .map(drop)
            .map_err(self.query_error("recording a run"))
    }

    /// Writes a run's final state, its row errors, and the events it makes
    /// with their deliveries (see `outbox`), in the caller's transaction.
    pub(crate) fn finish_run_in(&self, run: &RunRecord, errors: &[RowError]) -> duckdb::Result<()> {
        let conn = self.conn();
        let events = self.events_for_run(run)?;
        self.enqueue_in(&events, None)?;
        conn.execute(
            "DELETE FROM dropsync_runs WHERE execution_id = ?",
            [&run.execution_id],
        )?;
        insert_run(conn, run)?;
        let mut appender = conn.appender("dropsync_row_errors")?;
        for (position, e) in errors.iter().enumerate() {
            appender.append_row(params![
                run.execution_id,
                position as i64,
                e.line as i64,
                e.key,
                e.field,
                e.message,
                e.raw
            ])?;
        }
        appender.flush()
    }

    /// Records a run that ends without touching any target table (skipped,
    /// or failed before applying), with its row errors, in one transaction.
    pub fn finish_run(&self, run: &RunRecord, errors: &[RowError]) -> Result<(), StoreError> {
        let result = self
            .conn()
            .execute_batch("BEGIN TRANSACTION")
            .and_then(|_| self.finish_run_in(run, errors))
            .and_then(|_| self.conn().execute_batch("COMMIT"));
        if let Err(e) = result {
            let _ = self.conn().execute_batch("ROLLBACK");
            return Err(self.query_error("recording a run")(e));
        }
        Ok(())
    }

    /// Runs, newest first.
    pub fn runs(
        &self,
        integration: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM dropsync_runs WHERE (? IS NULL OR integration = ?)
             ORDER BY started_at DESC, execution_id DESC LIMIT {limit}"
        );
        let mut stmt = self
            .conn()
            .prepare(&sql)
            .map_err(self.query_error("reading history"))?;
        let rows = stmt
            .query_map(params![integration, integration], |r| {
                self.as_seen(from_row(r))
            })
            .map_err(self.query_error("reading history"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.query_error("reading history"))
    }

    /// The run whose execution id is, or uniquely contains, `id`.
    pub fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM dropsync_runs WHERE execution_id = ? OR contains(execution_id, ?)
             ORDER BY (execution_id = ?) DESC LIMIT 2"
        );
        let mut stmt = self
            .conn()
            .prepare(&sql)
            .map_err(self.query_error("reading a run"))?;
        let found: Vec<RunRecord> = stmt
            .query_map(params![id, id, id], |r| self.as_seen(from_row(r)))
            .map_err(self.query_error("reading a run"))?
            .collect::<Result<_, _>>()
            .map_err(self.query_error("reading a run"))?;
        let other = |message: String| StoreError::Other {
            path: self.path().to_path_buf(),
            message,
        };
        match found.as_slice() {
            [] => Err(other(format!(
                "no run has the execution id `{id}` (see `dropsync history`)"
            ))),
            [one] => Ok(one.clone()),
            [first, ..] if first.execution_id == id => Ok(first.clone()),
            _ => Err(other(format!(
                "`{id}` matches several runs; give more of the execution id"
            ))),
        }
    }

    /// A run's row errors, in line order; at most `limit`.
    pub fn row_errors(
        &self,
        execution_id: &str,
        limit: usize,
    ) -> Result<Vec<RowError>, StoreError> {
        let sql = format!(
            "SELECT line, record_key, field, message, raw FROM dropsync_row_errors
             WHERE execution_id = ? ORDER BY position LIMIT {limit}"
        );
        let mut stmt = self
            .conn()
            .prepare(&sql)
            .map_err(self.query_error("reading row errors"))?;
        let rows = stmt
            .query_map([execution_id], |r| {
                Ok(RowError {
                    line: r.get::<_, i64>(0)? as u64,
                    key: r.get(1)?,
                    field: r.get(2)?,
                    message: r.get(3)?,
                    raw: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                })
            })
            .map_err(self.query_error("reading row errors"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.query_error("reading row errors"))
    }

    /// The latest run of `integration` that finished with `content_hash`
    /// (applied, failed or skipped; an interrupted run does not count),
    /// applied ones first.
    pub fn run_with_content(
        &self,
        integration: &str,
        content_hash: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM dropsync_runs WHERE integration = ? AND content_hash = ?
               AND status IN ('success', 'partial', 'failed', 'skipped')
             ORDER BY (status IN ('success', 'partial')) DESC, started_at DESC LIMIT 1"
        );
        let mut stmt = self
            .conn()
            .prepare(&sql)
            .map_err(self.query_error("looking up content"))?;
        let mut rows = stmt
            .query_map(params![integration, content_hash], from_row)
            .map_err(self.query_error("looking up content"))?;
        rows.next()
            .transpose()
            .map_err(self.query_error("looking up content"))
    }

    /// The run whose content is what `integration` holds for `date`: the
    /// latest applied run of that business date.
    pub fn applied_for_date(
        &self,
        integration: &str,
        date: NaiveDate,
    ) -> Result<Option<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM dropsync_runs WHERE integration = ? AND business_date = ?
               AND status IN ('success', 'partial')
             ORDER BY started_at DESC, execution_id DESC LIMIT 1"
        );
        let mut stmt = self
            .conn()
            .prepare(&sql)
            .map_err(self.query_error("looking up the applied file of a date"))?;
        let mut rows = stmt
            .query_map(params![integration, date], from_row)
            .map_err(self.query_error("looking up the applied file of a date"))?;
        rows.next()
            .transpose()
            .map_err(self.query_error("looking up the applied file of a date"))
    }

    /// The finished (or interrupted) runs of one file, its content for its
    /// business date, newest first; at most `limit`.
    pub fn runs_of_file(
        &self,
        integration: &str,
        content_hash: &str,
        date: NaiveDate,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM dropsync_runs
             WHERE integration = ? AND content_hash = ? AND business_date = ? AND status <> 'running'
             ORDER BY started_at DESC, execution_id DESC LIMIT {limit}"
        );
        let mut stmt = self
            .conn()
            .prepare(&sql)
            .map_err(self.query_error("looking up a file's runs"))?;
        let rows = stmt
            .query_map(params![integration, content_hash, date], from_row)
            .map_err(self.query_error("looking up a file's runs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.query_error("looking up a file's runs"))
    }

    /// For each business date in `from..=to`, the latest staged copy that
    /// `integration` ran (applied, or failed after staging).
    pub fn staged_files(
        &self,
        integration: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<crate::source::StagedFile>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT file_name, staged_path, content_hash, file_size, business_date
                 FROM dropsync_runs
                 WHERE integration = ? AND business_date BETWEEN ? AND ?
                   AND staged_path IS NOT NULL AND content_hash IS NOT NULL
                   AND status IN ('success', 'partial', 'failed')
                 QUALIFY row_number() OVER (PARTITION BY business_date ORDER BY started_at DESC) = 1
                 ORDER BY business_date",
            )
            .map_err(self.query_error("looking up staged files"))?;
        let rows = stmt
            .query_map(params![integration, from, to], |r| {
                Ok(crate::source::StagedFile {
                    name: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    path: std::path::PathBuf::from(r.get::<_, String>(1)?),
                    content_hash: r.get(2)?,
                    size: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                    business_date: r.get(4)?,
                })
            })
            .map_err(self.query_error("looking up staged files"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.query_error("looking up staged files"))
    }

    /// What freshness needs of `integration`'s history: when its applied
    /// files arrived (from `since` on; a replay is no arrival), when it first
    /// ran, and how its last decisive run ended.
    pub fn arrivals(
        &self,
        integration: &str,
        since: NaiveDateTime,
    ) -> Result<crate::freshness::Arrivals, StoreError> {
        use crate::freshness::{Arrivals, LastOutcome, utc};
        let context = "reading arrivals";
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT started_at FROM dropsync_runs
                 WHERE integration = ? AND status IN ('success', 'partial')
                   AND trigger <> 'replay' AND started_at >= ?
                 ORDER BY started_at",
            )
            .map_err(self.query_error(context))?;
        let applied = stmt
            .query_map(params![integration, since], |r| {
                r.get::<_, NaiveDateTime>(0)
            })
            .map_err(self.query_error(context))?
            .map(|t| t.map(utc))
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.query_error(context))?;
        let first_run: Option<NaiveDateTime> = self
            .conn()
            .query_row(
                "SELECT min(started_at) FROM dropsync_runs WHERE integration = ?",
                [integration],
                |r| r.get(0),
            )
            .map_err(self.query_error(context))?;
        // A run still `running` is in progress, unless nothing holds the
        // store for writing: then a stopped process left it behind.
        let decisive = if self.read_only {
            "('success', 'partial', 'failed', 'interrupted', 'running')"
        } else {
            "('success', 'partial', 'failed', 'interrupted')"
        };
        let last_outcome = self
            .conn()
            .query_row(
                &format!(
                    "SELECT execution_id, status, started_at FROM dropsync_runs
                     WHERE integration = ? AND status IN {decisive}
                     ORDER BY started_at DESC, execution_id DESC LIMIT 1"
                ),
                [integration],
                |r| {
                    let status = RunStatus::parse(&r.get::<_, String>(1)?);
                    Ok(LastOutcome {
                        execution_id: r.get(0)?,
                        failed: !matches!(status, RunStatus::Success | RunStatus::Partial),
                        at: utc(r.get(2)?),
                    })
                },
            )
            .map(Some)
            .or_else(|e| match e {
                duckdb::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(self.query_error(context))?;
        Ok(Arrivals {
            applied,
            first_run: first_run.map(utc),
            last_outcome,
        })
    }

    /// The newest business date applied for `integration`.
    pub fn latest_applied_date(&self, integration: &str) -> Result<Option<NaiveDate>, StoreError> {
        self.conn()
            .query_row(
                "SELECT max(business_date) FROM dropsync_runs
                 WHERE integration = ? AND status IN ('success', 'partial')",
                [integration],
                |r| r.get(0),
            )
            .map_err(self.query_error("reading the latest applied date"))
    }
}

fn insert_run(conn: &duckdb::Connection, run: &RunRecord) -> duckdb::Result<usize> {
    let placeholders = vec!["?"; COLUMN_COUNT].join(", ");
    conn.execute(
        &format!("INSERT INTO dropsync_runs ({COLUMNS}) VALUES ({placeholders})"),
        params![
            run.execution_id,
            run.integration,
            run.dataset,
            run.mode,
            run.trigger,
            run.status.as_str(),
            run.message,
            run.file_name,
            run.source,
            run.staged_path,
            run.content_hash,
            run.file_size,
            run.business_date,
            run.forced,
            run.input_rows,
            run.success_rows,
            run.error_rows,
            run.skipped_rows,
            run.inserted,
            run.updated,
            run.deleted,
            run.unchanged,
            run.subscribed,
            run.unsubscribed,
            run.started_at,
            run.completed_at,
            run.failure.map(FailureKind::as_str),
            run.attempt,
        ],
    )
}
