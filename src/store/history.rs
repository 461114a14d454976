//! The history of runs: one record per attempt to sync one file, with its
//! status, counts and row errors.

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::db::ToValue;
use super::{Db, DbError, Row, Store, StoreError, Value, now};
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

pub(super) fn from_row(r: &Row) -> Result<RunRecord, DbError> {
    Ok(RunRecord {
        execution_id: r.get(0)?,
        integration: r.get(1)?,
        dataset: r.get(2)?,
        mode: r.get(3)?,
        trigger: r.get(4)?,
        status: RunStatus::parse(&r.get::<String>(5)?),
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
            .get::<Option<String>>(26)?
            .as_deref()
            .and_then(FailureKind::parse),
        attempt: r.get::<Option<i64>>(27)?.unwrap_or(1),
    })
}

impl Store {
    /// A run as it stands: read-only, no writer holds the store, so a run
    /// still recorded `running` is one a stopped process left behind.
    pub(super) fn as_seen(&self, run: RunRecord) -> RunRecord {
        let mut run = run;
        if self.read_only && run.status == RunStatus::Running {
            run.status = RunStatus::Interrupted;
            run.message = Some(super::INTERRUPTED.to_string());
        }
        run
    }

    /// Runs read by `sql`, which selects `COLUMNS`.
    pub(super) fn read_runs(
        &self,
        sql: &str,
        params: super::db::Params<'_>,
        context: &str,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.db()
            .query(sql, params)
            .and_then(|rows| rows.iter().map(from_row).collect::<Result<Vec<_>, _>>())
            .map(|runs| runs.into_iter().map(|r| self.as_seen(r)).collect())
            .map_err(self.query_error(context))
    }

    /// Records a run. A run recorded `running` that never finishes is marked
    /// `interrupted` the next time the store is opened.
    pub fn insert_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        insert_run(self.db(), run)
            .map(drop)
            .map_err(self.query_error("recording a run"))
    }

    /// Writes a run's final state, its row errors, and the events it makes
    /// with their deliveries (see `outbox`), in the caller's transaction.
    pub(crate) fn finish_run_in(
        &self,
        run: &RunRecord,
        errors: &[RowError],
    ) -> Result<(), DbError> {
        let db = self.db();
        let events = self.events_for_run(run)?;
        self.enqueue_in(&events, None)?;
        db.execute(
            "DELETE FROM dropsync_runs WHERE execution_id = ?",
            &[&run.execution_id],
        )?;
        insert_run(db, run)?;
        db.insert_rows(
            "dropsync_row_errors",
            &[
                "execution_id",
                "position",
                "line",
                "record_key",
                "field",
                "message",
                "raw",
            ],
            errors.iter().enumerate().map(|(position, e)| {
                vec![
                    Value::Text(run.execution_id.clone()),
                    Value::Int(position as i64),
                    Value::Int(e.line as i64),
                    e.key.to_value(),
                    e.field.to_value(),
                    Value::Text(e.message.clone()),
                    Value::Text(e.raw.clone()),
                ]
            }),
        )?;
        Ok(())
    }

    /// Records a run that ends without touching any target table (skipped,
    /// or failed before applying), with its row errors, in one transaction.
    pub fn finish_run(&self, run: &RunRecord, errors: &[RowError]) -> Result<(), StoreError> {
        self.db()
            .in_transaction(|| self.finish_run_in(run, errors))
            .map_err(self.query_error("recording a run"))
    }

    /// Runs, newest first.
    pub fn runs(
        &self,
        integration: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM dropsync_runs WHERE (?1 IS NULL OR integration = ?1)
             ORDER BY started_at DESC, execution_id DESC LIMIT {limit}"
        );
        self.read_runs(&sql, &[&integration], "reading history")
    }

    /// The run whose execution id is, or uniquely contains, `id`.
    pub fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM dropsync_runs WHERE execution_id = ?1 OR strpos(execution_id, ?1) > 0
             ORDER BY (execution_id = ?1) DESC LIMIT 2"
        );
        let found = self.read_runs(&sql, &[&id], "reading a run")?;
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
        self.db()
            .query(&sql, &[&execution_id])
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(RowError {
                            line: r.get::<i64>(0)? as u64,
                            key: r.get(1)?,
                            field: r.get(2)?,
                            message: r.get(3)?,
                            raw: r.get::<Option<String>>(4)?.unwrap_or_default(),
                        })
                    })
                    .collect()
            })
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
        let context = "looking up content";
        let runs = self.read_runs(&sql, &[&integration, &content_hash], context)?;
        Ok(runs.into_iter().next())
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
        let context = "looking up the applied file of a date";
        let runs = self.read_runs(&sql, &[&integration, &date], context)?;
        Ok(runs.into_iter().next())
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
        self.read_runs(
            &sql,
            &[&integration, &content_hash, &date],
            "looking up a file's runs",
        )
    }

    /// For each business date in `from..=to`, the latest staged copy that
    /// `integration` ran (applied, or failed after staging).
    pub fn staged_files(
        &self,
        integration: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<crate::source::StagedFile>, StoreError> {
        self.db()
            .query(
                "SELECT file_name, staged_path, content_hash, file_size, business_date FROM (
                    SELECT *, row_number() OVER (PARTITION BY business_date ORDER BY started_at DESC) AS newest
                    FROM dropsync_runs
                    WHERE integration = ? AND business_date BETWEEN ? AND ?
                      AND staged_path IS NOT NULL AND content_hash IS NOT NULL
                      AND status IN ('success', 'partial', 'failed')
                 ) runs
                 WHERE newest = 1
                 ORDER BY business_date",
                &[&integration, &from, &to],
            )
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(crate::source::StagedFile {
                            name: r.get::<Option<String>>(0)?.unwrap_or_default(),
                            path: std::path::PathBuf::from(r.get::<String>(1)?),
                            content_hash: r.get(2)?,
                            size: r.get::<Option<i64>>(3)?.unwrap_or(0) as u64,
                            business_date: r.get(4)?,
                            line_ends: None,
                        })
                    })
                    .collect()
            })
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
        let db = self.db();
        let applied = db
            .query(
                "SELECT started_at FROM dropsync_runs
                 WHERE integration = ? AND status IN ('success', 'partial')
                   AND trigger <> 'replay' AND started_at >= ?
                 ORDER BY started_at",
                &[&integration, &since],
            )
            .and_then(|rows| {
                rows.iter()
                    .map(|r| r.get::<NaiveDateTime>(0).map(utc))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(self.query_error(context))?;
        let first_run: Option<NaiveDateTime> = db
            .value(
                "SELECT min(started_at) FROM dropsync_runs WHERE integration = ?",
                &[&integration],
            )
            .map_err(self.query_error(context))?;
        // A run still `running` is in progress, unless nothing holds the
        // store for writing: then a stopped process left it behind.
        let decisive = if self.read_only {
            "('success', 'partial', 'failed', 'interrupted', 'running')"
        } else {
            "('success', 'partial', 'failed', 'interrupted')"
        };
        let last_outcome = db
            .query_opt(
                &format!(
                    "SELECT execution_id, status, started_at FROM dropsync_runs
                     WHERE integration = ? AND status IN {decisive}
                     ORDER BY started_at DESC, execution_id DESC LIMIT 1"
                ),
                &[&integration],
            )
            .and_then(|row| {
                row.map(|r| {
                    let status = RunStatus::parse(&r.get::<String>(1)?);
                    Ok(LastOutcome {
                        execution_id: r.get(0)?,
                        failed: !matches!(status, RunStatus::Success | RunStatus::Partial),
                        at: utc(r.get(2)?),
                    })
                })
                .transpose()
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
        self.db()
            .value(
                "SELECT max(business_date) FROM dropsync_runs
                 WHERE integration = ? AND status IN ('success', 'partial')",
                &[&integration],
            )
            .map_err(self.query_error("reading the latest applied date"))
    }
}

fn insert_run(db: &Db, run: &RunRecord) -> Result<u64, DbError> {
    let placeholders = vec!["?"; COLUMN_COUNT].join(", ");
    db.execute(
        &format!("INSERT INTO dropsync_runs ({COLUMNS}) VALUES ({placeholders})"),
        &[
            &run.execution_id,
            &run.integration,
            &run.dataset,
            &run.mode,
            &run.trigger,
            &run.status.as_str(),
            &run.message,
            &run.file_name,
            &run.source,
            &run.staged_path,
            &run.content_hash,
            &run.file_size,
            &run.business_date,
            &run.forced,
            &run.input_rows,
            &run.success_rows,
            &run.error_rows,
            &run.skipped_rows,
            &run.inserted,
            &run.updated,
            &run.deleted,
            &run.unchanged,
            &run.subscribed,
            &run.unsubscribed,
            &run.started_at,
            &run.completed_at,
            &run.failure.map(FailureKind::as_str),
            &run.attempt,
        ],
    )
}
