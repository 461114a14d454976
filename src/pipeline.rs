//! One file through every stage: staged file -> parse -> validate (polars)
//! -> diff and apply (DuckDB) -> run record. Each stage hands the next a
//! value; this module only decides what happens between them (duplicates,
//! the error policy, recording failures).

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::{
    BooleanChunked, ChunkFullNull, CompatLevel, DataFrame, IntoColumn, ParquetReader, PolarsError,
    SchemaExt, SerReader, UInt64Chunked,
};

use crate::config::{Config, ErrorPolicy, IntegrationConfig, Mode, OnError};
use crate::memory::KeptWhileReading;
use crate::progress::{self, Event, Stage};
use crate::schema::{
    self, ComputedFields, Dataset, MetricsSpec, RowError, StoredColumn, ValidRows,
};
use crate::source::StagedFile;
use crate::store::{
    ApplyRequest, ChangeSet, FailureKind, Outcome, Prefiltered, RAW_HASH, ROW_HASH, RunRecord,
    RunStatus, Store, StoreError, StoredHashes, TargetTable,
};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    #[error("integration `{}`: {message}", crate::config::echo(.integration))]
    Integration {
        integration: String,
        message: String,
    },
    #[error(transparent)]
    Handoff(#[from] HandoffError),
    #[error(transparent)]
    Computed(#[from] schema::ComputedError),
    /// A run failed, and recording that in the history failed too.
    #[error("{error}; and the failure could not be recorded in the history: {record}")]
    Unrecorded {
        error: Box<PipelineError>,
        record: StoreError,
    },
}

/// Why the validated rows could not be handed to DuckDB. An I/O failure
/// names the file, the operation and the OS error (a full disk, an I/O
/// error), whichever layer it surfaced in.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("cannot {operation} the hand-off file {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot encode the validated rows as Parquet into {path}: {message}")]
    Encode { path: PathBuf, message: String },
}

/// An integration with everything resolved: its dataset, mode and table.
#[derive(Debug, Clone)]
pub struct Integration {
    pub name: String,
    pub config: IntegrationConfig,
    pub dataset: Dataset,
    pub mode: Mode,
    /// The schema its files are read with (for wide results, one column per metric).
    pub file_schema: schema::TableSchema,
    pub metrics: Option<MetricsSpec>,
    /// Its calculated fields, checked against the dataset's schema.
    pub computed: Option<ComputedFields>,
    pub target: TargetTable,
}

impl Integration {
    pub fn resolve(config: &Config, name: &str) -> Result<Integration, PipelineError> {
        let integration =
            config
                .integration(name)
                .map_err(|message| PipelineError::Integration {
                    integration: name.to_string(),
                    message,
                })?;
        Integration::from_config(name, integration, config.store.schemas.as_deref())
    }

    pub fn from_config(
        name: &str,
        config: &IntegrationConfig,
        schemas: Option<&std::path::Path>,
    ) -> Result<Integration, PipelineError> {
        let dataset = Dataset::load(&config.dataset, schemas)?;
        Integration::with_dataset(name, config, dataset)
    }

    /// The integration over `dataset`, already loaded (loading compiles
    /// its patterns: the overview loads each dataset once for all the
    /// integrations of it).
    pub fn with_dataset(
        name: &str,
        config: &IntegrationConfig,
        dataset: Dataset,
    ) -> Result<Integration, PipelineError> {
        let mode = config.mode.unwrap_or_else(|| dataset.default_mode());
        let fail = |message: String| PipelineError::Integration {
            integration: name.to_string(),
            message,
        };
        let metrics = dataset.schema.dropsync.metrics.then(|| MetricsSpec {
            layout: config.layout,
            metrics: config.metrics.clone(),
        });
        if let Some(spec) = &metrics
            && spec.layout == crate::config::ResultsLayout::Wide
            && spec.metrics.is_empty()
        {
            return Err(fail(
                "a wide results report needs its metrics declared in [integrations.NAME.metrics]"
                    .into(),
            ));
        }
        if metrics.is_none() && !config.metrics.is_empty() {
            return Err(fail(format!(
                "`metrics` applies to results datasets only, not `{}`",
                dataset.name
            )));
        }
        let (columns, key) = match &metrics {
            Some(_) => (schema::results::stored_columns(), schema::results::key()),
            None => {
                let mut columns: Vec<StoredColumn> = dataset
                    .schema
                    .fields
                    .iter()
                    .map(|f| StoredColumn {
                        name: f.name.clone(),
                        sql_type: f.kind.sql_type(),
                    })
                    .collect();
                if dataset.schema.keeps_extra_columns() {
                    columns.push(StoredColumn {
                        name: schema::ATTRIBUTES.to_string(),
                        sql_type: "VARCHAR",
                    });
                }
                (columns, dataset.schema.primary_key())
            }
        };
        if key.is_empty() {
            return Err(fail(format!(
                "dataset `{}` has no primaryKey: dropsync needs one to tell rows apart",
                dataset.name
            )));
        }
        if metrics.is_some() && !config.computed.is_empty() {
            return Err(fail(
                "`computed` applies to datasets of records, not to typed results".into(),
            ));
        }
        let computed = ComputedFields::check(&dataset.schema, &config.computed, &config.columns)
            .map_err(fail)?;
        let file_schema = match (&metrics, &computed) {
            (Some(spec), _) => spec.file_schema(&dataset.schema),
            (None, Some(computed)) => computed.file_schema(&dataset.schema),
            (None, None) => dataset.schema.clone(),
        };
        Ok(Integration {
            name: name.to_string(),
            target: TargetTable {
                name: config.table_name().to_string(),
                columns,
                key,
            },
            config: config.clone(),
            dataset,
            mode,
            file_schema,
            metrics,
            computed,
        })
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Ingest,
    Schedule,
    Watch,
    /// A staged copy synced again, without the source.
    Replay,
    /// An integration whose worker died mid-run, synced again by another
    /// worker of a shared store.
    Takeover,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Ingest => "ingest",
            Trigger::Schedule => "schedule",
            Trigger::Watch => "watch",
            Trigger::Replay => "replay",
            Trigger::Takeover => "takeover",
        }
    }
}

/// How one invocation runs files.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub force: bool,
    pub dry_run: bool,
    pub trigger: Trigger,
    /// Whether the file was asked for by name or date (a repeat is then
    /// recorded as skipped rather than passed over).
    pub explicit: bool,
    /// Folder files modified more recently than this are left for a later
    /// run: the daemon's guard against picking up a file still being copied.
    pub folder_min_age: std::time::Duration,
    /// The execution id the run is to have, when one was promised before it
    /// started (an upload through the web API answers with it at once).
    pub execution_id: Option<uuid::Uuid>,
}

/// What happened to one file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    pub record: RunRecord,
    pub changes: Option<ChangeSet>,
    /// The first row errors, for a summary.
    pub errors: Vec<RowError>,
    pub ignored_columns: Vec<String>,
    pub dry_run: bool,
}

/// How many row errors a report carries for printing.
const REPORT_ERRORS: usize = 5;

/// How many changed keys of each kind a dry run shows, with their fields
/// (the console's re-run preview shows them all; the command line, a few).
pub const DRY_RUN_SAMPLE: usize = 20;

/// Syncs one staged file. `None`: the content was already applied and the
/// file was not asked for explicitly, so nothing is recorded.
pub fn sync_file(
    store: &Store,
    config: &Config,
    integration: &Integration,
    file: &StagedFile,
    opts: RunOptions,
) -> Result<Option<RunReport>, PipelineError> {
    sync_file_with(store, config, integration, file, opts, None)
}

/// `sync_file`, with the stored rows' hashes already being read
/// (`StoredRows::start`, called before the file was fetched).
pub fn sync_file_with(
    store: &Store,
    config: &Config,
    integration: &Integration,
    file: &StagedFile,
    opts: RunOptions,
    stored_rows: Option<StoredRows>,
) -> Result<Option<RunReport>, PipelineError> {
    let mut run = RunRecord::new(
        &integration.name,
        &integration.dataset.name,
        integration.mode.as_str(),
        opts.trigger.as_str(),
    );
    if let Some(id) = opts.execution_id {
        run.execution_id = id.to_string();
    }
    run.file_name = Some(file.name.clone());
    run.staged_path = Some(file.path.display().to_string());
    run.content_hash = Some(file.content_hash.clone());
    run.file_size = Some(file.size as i64);
    run.business_date = Some(file.business_date);
    run.forced = opts.force;
    let _in_progress = (!opts.dry_run).then(|| {
        crate::activity::begin(
            &integration.name,
            Some(&run.execution_id),
            Some(&file.name),
            crate::activity::Stage::Validating,
        )
    });
    let report = |run: RunRecord, changes, errors: Vec<RowError>, ignored| RunReport {
        record: run,
        changes,
        errors: errors.into_iter().take(REPORT_ERRORS).collect(),
        ignored_columns: ignored,
        dry_run: opts.dry_run,
    };

    if !opts.force {
        match prior(
            store,
            &integration.name,
            &file.content_hash,
            file.business_date,
        )? {
            Prior::Applied(previous) => {
                if !opts.explicit {
                    return Ok(None);
                }
                run.status = RunStatus::Skipped;
                run.message = Some(format!(
                    "the same content was already applied by run {} ({}); use --force to apply it again",
                    previous.execution_id,
                    previous.file_name.as_deref().unwrap_or("?")
                ));
                run.completed_at = Some(crate::store::now());
                if !opts.dry_run {
                    store.finish_run(&run, &[])?;
                }
                return Ok(Some(report(run, None, Vec::new(), Vec::new())));
            }
            Prior::Settled { .. } if !opts.explicit => return Ok(None),
            Prior::Settled {
                failed_attempts, ..
            } => run.attempt = failed_attempts + 1,
            Prior::Retry { attempt } => run.attempt = attempt,
            Prior::New => {}
        }
    }
    if integration.mode == Mode::Snapshot
        && !opts.force
        && let Some(latest) = store.latest_applied_date(&integration.name)?
        && latest > file.business_date
    {
        run.status = RunStatus::Skipped;
        run.message = Some(format!(
            "a newer snapshot ({latest}) is already applied; applying {} would roll the data back. Use --force to apply it anyway",
            file.business_date
        ));
        run.completed_at = Some(crate::store::now());
        if !opts.dry_run {
            store.finish_run(&run, &[])?;
        }
        return Ok(Some(report(run, None, Vec::new(), Vec::new())));
    }

    // Read while the run is recorded and the file opened, unless they
    // have been since before the file was fetched.
    let stored_rows = match stored_rows {
        Some(stored_rows) => Some(stored_rows),
        None => StoredRows::start(store, integration, &file.name)?,
    };
    let writeback = if opts.dry_run {
        None
    } else {
        store.insert_run(&run)?;
        Some(crate::source::start_writeback(file))
    };
    let result = validate_and_apply(
        store,
        config,
        integration,
        file,
        (writeback, stored_rows),
        opts,
        &mut run,
    );
    match result {
        Ok((changes, errors, ignored)) => Ok(Some(report(run, changes, errors, ignored))),
        Err(e) => {
            // The batch rolled back; say so in the history. Nothing was
            // wrong with the file as far as anyone knows: the store, the
            // disk or the hand-off failed, so a later scan tries it again.
            run.status = RunStatus::Failed;
            run.failure = Some(FailureKind::Transient);
            run.message = Some(with_retry_note(e.to_string(), run.attempt));
            run.completed_at = Some(crate::store::now());
            if opts.dry_run {
                return Err(e);
            }
            if let Err(record) = store.finish_run(&run, &[]) {
                // The cause comes first: it is what went wrong.
                return Err(PipelineError::Unrecorded {
                    error: Box::new(e),
                    record,
                });
            }
            // Recorded: report it as the failed run it is, with what happens next.
            Ok(Some(report(run, None, Vec::new(), Vec::new())))
        }
    }
}

/// How many times scans try a file whose runs failed for a transient
/// reason, counting the first run. Past this, it waits for a person.
pub const RETRY_ATTEMPTS: i64 = 3;

/// What the history says about one file (its content, for its business
/// date) before it runs.
#[derive(Debug)]
pub enum Prior {
    /// Never run.
    New,
    /// Its content is what the integration holds for its business date:
    /// running it again would change nothing.
    Applied(Box<RunRecord>),
    /// Its last runs failed for a transient reason, fewer than
    /// `RETRY_ATTEMPTS` times: a scan tries it again, as this attempt.
    Retry { attempt: i64 },
    /// It had its run and scans leave it alone: refused for its content,
    /// skipped, replaced by another file of its date, or out of retries
    /// (`failed_attempts` transient failures in a row). A person decides.
    Settled {
        last: Box<RunRecord>,
        failed_attempts: i64,
    },
}

/// Looks a file up in the history. The same content is not applied twice
/// for the same business date; the same bytes for another date are that
/// date's file, and are applied (a repeat of an older export can undo what
/// came between, and a delta must record the newer date it speaks for).
pub fn prior(
    store: &Store,
    integration: &str,
    content_hash: &str,
    date: NaiveDate,
) -> Result<Prior, StoreError> {
    if let Some(applied) = store.applied_for_date(integration, date)?
        && applied.content_hash.as_deref() == Some(content_hash)
    {
        return Ok(Prior::Applied(Box::new(applied)));
    }
    let runs = store.runs_of_file(integration, content_hash, date, RETRY_ATTEMPTS as usize + 1)?;
    let failed_attempts = runs
        .iter()
        .take_while(|r| {
            r.status == RunStatus::Interrupted
                || (r.status == RunStatus::Failed && r.failure == Some(FailureKind::Transient))
        })
        .count() as i64;
    Ok(match runs.into_iter().next() {
        None => Prior::New,
        Some(_) if (1..RETRY_ATTEMPTS).contains(&failed_attempts) => Prior::Retry {
            attempt: failed_attempts + 1,
        },
        Some(last) => Prior::Settled {
            last: Box::new(last),
            failed_attempts,
        },
    })
}

/// A transient failure's message, with what happens next.
fn with_retry_note(message: String, attempt: i64) -> String {
    if attempt < RETRY_ATTEMPTS {
        format!(
            "{message} (attempt {attempt} of {RETRY_ATTEMPTS}; the next scheduled run tries again)"
        )
    } else {
        format!(
            "{message} (attempt {attempt} of {RETRY_ATTEMPTS}; not retried any more: run it with --date or ingest)"
        )
    }
}

type Applied = (Option<ChangeSet>, Vec<RowError>, Vec<String>);

fn validate_and_apply(
    store: &Store,
    config: &Config,
    integration: &Integration,
    file: &StagedFile,
    (writeback, stored_rows): (Option<crate::source::Writeback>, Option<StoredRows>),
    opts: RunOptions,
    run: &mut RunRecord,
) -> Result<Applied, PipelineError> {
    let fail = |run: &mut RunRecord,
                failure: FailureKind,
                message: String,
                errors: Vec<RowError>|
     -> Result<Applied, PipelineError> {
        run.status = RunStatus::Failed;
        run.failure = Some(failure);
        run.message = Some(match failure {
            FailureKind::Transient => with_retry_note(message, run.attempt),
            FailureKind::Content => message,
        });
        run.completed_at = Some(crate::store::now());
        if !opts.dry_run {
            store.finish_run(run, &errors)?;
        }
        Ok((None, errors, Vec::new()))
    };
    let _in_flight = progress::file(&file.name, Some(file.size));
    progress::report(Event::Stage(Stage::Parsing));
    let started = std::time::Instant::now();
    // Removed when this function returns, whichever way: a failed write
    // (a full disk) must not leave a half-written file keeping it full.
    let mut parts = HandoffParts::new(
        &config.store.staging,
        &run.execution_id,
        store.db().duck().is_some(),
    );
    parts.stored_rows = stored_rows;
    let reading = schema::formats::DropReading::of(&integration.config);
    let read = if reads_in_chunks(integration, &file.name, &reading) {
        read_in_chunks(store, config, integration, file, &reading, &mut parts)
    } else {
        read_whole(store, config, integration, file, &reading, &mut parts)
    };
    let mut valid = match read {
        Ok(valid) => valid,
        // A file that cannot be read may read next time; one that reads
        // but is malformed will not.
        Err(ReadFailure::Drop(e)) if e.is_transient() => {
            return fail(run, FailureKind::Transient, e.to_string(), Vec::new());
        }
        Err(ReadFailure::Drop(e)) => {
            return fail(run, FailureKind::Content, e.to_string(), Vec::new());
        }
        Err(ReadFailure::Content(message)) => {
            return fail(run, FailureKind::Content, message, Vec::new());
        }
        Err(ReadFailure::Pipeline(e)) => return Err(e),
    };
    stage_done("read", started);
    progress::report(Event::Stage(Stage::Diffing));
    run.input_rows = valid.input_rows as i64;
    run.error_rows = valid.error_rows as i64;
    run.skipped_rows = valid.skipped_rows as i64;
    run.success_rows = valid
        .input_rows
        .saturating_sub(valid.error_rows + valid.skipped_rows) as i64;
    if let Some(message) = policy_breach(&integration.config, &valid) {
        run.success_rows = 0;
        let Validated {
            mut errors,
            ignored_columns,
            ..
        } = valid;
        let message = keep_error_sample(message, &mut errors, run.error_rows);
        let (changes, errors, _) = fail(run, FailureKind::Content, message, errors)?;
        return Ok((changes, errors, ignored_columns));
    }

    crate::activity::enter(&integration.name, crate::activity::Stage::Diffing);
    progress::report(Event::Rows(valid.handed_off));
    let started = std::time::Instant::now();
    let handoff = parts.handoff();
    store.limit_memory(&spill_directory(&config.store.staging))?;
    let req = ApplyRequest {
        integration: &integration.name,
        table: &integration.target,
        mode: integration.mode,
        status: integration.dataset.schema.dropsync.status.as_ref(),
        rows: &handoff,
        protected_keys: &valid.rejected_keys,
        max_delete_ratio: integration.config.max_delete_ratio,
        force: opts.force,
        dry_run: opts.dry_run,
        sample: if opts.dry_run { DRY_RUN_SAMPLE } else { 0 },
        prefiltered: parts.unmatched().map(|unmatched| Prefiltered {
            valid_rows: valid.handed_off,
            unmatched,
        }),
    };
    run.status = if valid.error_rows > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Success
    };
    if valid.error_rows > 0 {
        run.message = Some(format!("{} rejected", crate::rows(valid.error_rows)));
    }
    let ignored_note = (!valid.ignored_columns.is_empty()).then(|| {
        format!(
            "columns not in the schema, kept in _attributes: {}",
            valid.ignored_columns.join(", ")
        )
    });
    for note in [
        valid.format_note.take(),
        valid.header_note.take(),
        ignored_note,
    ]
    .into_iter()
    .flatten()
    {
        run.message = Some(match run.message.take() {
            Some(m) => format!("{m}; {note}"),
            None => note,
        });
    }
    if let Some(writeback) = writeback
        && let Err(e) = writeback.wait(file)
    {
        // The disk failed, not the file: a later run may succeed.
        return fail(run, FailureKind::Transient, e.to_string(), Vec::new());
    }
    let outcome = store.apply(&req, run, &valid.errors);
    drop(parts);
    stage_done("diff and apply", started);
    let Validated {
        errors,
        ignored_columns,
        ..
    } = valid;
    match outcome? {
        Outcome::Applied(changes) => {
            if let Err(e) = store.flush() {
                unflushed(store, run, e);
            }
            Ok((Some(changes), errors, ignored_columns))
        }
        Outcome::DryRun(changes) => Ok((Some(changes), errors, ignored_columns)),
        Outcome::Refused { changes, reason } => {
            run.success_rows = 0;
            let (_, errors, _) = fail(run, FailureKind::Content, reason, errors)?;
            Ok((Some(changes), errors, ignored_columns))
        }
    }
}

/// Why a file cannot be read when it carries a column of the integration's
/// calculated fields: it would say one thing and the expression another.
/// (A schema whose fields must match the header exactly refuses it already,
/// as a column the file should not have.)
pub fn computed_in_file(integration: &Integration, raw: &schema::RawTable) -> Option<String> {
    let computed = integration.computed.as_ref()?;
    let column = raw.ignored_columns.iter().find(|c| computed.contains(c))?;
    Some(format!(
        "the file has a column `{column}`, which integration `{}` computes (computed.{column}); a field is read from the file or computed, not both: remove it from the file or from `computed`",
        integration.name
    ))
}

/// What validation made of a file, whichever way it was read; its valid
/// rows are already in the hand-off parts.
struct Validated {
    input_rows: u64,
    error_rows: u64,
    skipped_rows: u64,
    /// Rows handed off.
    handed_off: u64,
    /// Every row error kept, in line order.
    errors: Vec<RowError>,
    /// Keys of rejected rows: a snapshot does not delete them.
    rejected_keys: Vec<String>,
    ignored_columns: Vec<String>,
    /// What the run's message says about how the file was read.
    format_note: Option<String>,
    header_note: Option<String>,
}

/// Why a file could not be read and validated.
enum ReadFailure {
    /// The file itself: transient or not, as the error says.
    Drop(schema::formats::DropError),
    /// The file reads, but is refused as a whole for what it holds.
    Content(String),
    /// Anything else (the store, the hand-off).
    Pipeline(PipelineError),
}

impl<E: Into<PipelineError>> From<E> for ReadFailure {
    fn from(e: E) -> ReadFailure {
        ReadFailure::Pipeline(e.into())
    }
}

/// The chunk size a CSV file is read, validated and handed off in. Memory
/// follows it, not the file: a chunk's text, its parsed and typed columns
/// and its Parquet encoding take a few times its size at once, and the next
/// chunk is parsed while one is validated. 16 MB keeps each chunk large
/// enough for two threads to parse it side by side (`MIN_STRETCH` is 4 MB)
/// and small enough that a 1M-row export (78 MB) spans five chunks, so
/// parsing one overlaps validating another for most of the file: against
/// 64 MB, the read of that file took 1,063 ms instead of 1,146 ms and the
/// sync peaked at 411 MB instead of 505 MB (medians of 5, interleaved).
/// `DROPSYNC_CHUNK_BYTES` sets another size (tests use tiny ones so small
/// files span many chunks).
const CHUNK_BYTES: usize = 16 << 20;

fn chunk_bytes() -> usize {
    std::env::var("DROPSYNC_CHUNK_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CHUNK_BYTES)
}

/// Reads a drop whole (a spreadsheet, JSON, an archive, another encoding,
/// a results report), validates it, and hands its valid rows off.
fn read_whole(
    store: &Store,
    config: &Config,
    integration: &Integration,
    file: &StagedFile,
    reading: &schema::formats::DropReading<'_>,
    parts: &mut HandoffParts,
) -> Result<Validated, ReadFailure> {
    let started = std::time::Instant::now();
    let read =
        schema::formats::read_drop(&file.path, &file.name, reading, &integration.file_schema)
            .map_err(ReadFailure::Drop)?;
    let raw = read.table;
    stage_done("parse", started);
    progress::report(Event::Bytes(file.size));
    progress::report(Event::Stage(Stage::Validating));
    let started = std::time::Instant::now();
    if let Some(message) = computed_in_file(integration, &raw) {
        return Err(ReadFailure::Content(message));
    }
    let keep_errors = errors_to_describe(&integration.config.on_error, raw.records);
    let ctx = schema::validate::Context {
        references: references(store, config, &integration.file_schema)?,
        repeats_are_duplicates: integration.mode == Mode::Append,
        key_checked_later: integration.metrics.is_some(),
        keep_errors: Some(keep_errors),
    };
    let mut valid = schema::validate(&raw, &integration.file_schema, &ctx);
    if let Some(spec) = &integration.metrics {
        valid = spec.to_long(valid, &raw, file.business_date);
    }
    if let Some(computed) = &integration.computed {
        let scratch = config.store.staging.join(".work");
        valid = computed.add_to(valid, &raw, &scratch, keep_errors)?;
    }
    let header_note = raw.header_note();
    drop(raw);
    stage_done("validate", started);
    let started = std::time::Instant::now();
    parts.write(&mut valid.frame, None, &[])?;
    stage_done("hand-off", started);
    let ValidRows {
        frame,
        errors,
        input_rows,
        error_rows,
        skipped_rows,
        rejected_keys,
        ignored_columns,
        ..
    } = valid;
    Ok(Validated {
        input_rows,
        error_rows,
        skipped_rows,
        handed_off: frame.height() as u64,
        errors,
        rejected_keys,
        ignored_columns,
        format_note: read.note,
        header_note,
    })
}

/// How many validated chunks may wait for the writer (see `read_in_chunks`).
const VALIDATED_QUEUED: usize = 4;

/// One chunk of a file as handed off: where it lies in the file, and which
/// of its records are in its hand-off part.
struct HandedChunk {
    start: u64,
    end: u64,
    first_line: u64,
    /// For each row of its part, its index among the chunk's kept records.
    rows: Vec<u32>,
    /// Kept records left out as repeats of an earlier event (append mode).
    skipped: Vec<u32>,
}

/// Reads a plain CSV file a chunk at a time: parses and validates each
/// chunk, writes its valid rows as the next hand-off part, and keeps its
/// row errors. The rules across rows see the whole file through
/// `FileChecks`; rows they reject after their chunk was handed off (every
/// copy of a key repeated in a later chunk, a reference no row of the file
/// answered) are taken out of their parts at the end and described from
/// their chunk, read again.
fn read_in_chunks(
    store: &Store,
    config: &Config,
    integration: &Integration,
    file: &StagedFile,
    reading: &schema::formats::DropReading<'_>,
    parts: &mut HandoffParts,
) -> Result<Validated, ReadFailure> {
    let hash_records = parts.hashed && reads_raw_rows(integration);
    for leave_out_unchanged in [hash_records, false] {
        let raw = RawReading {
            hash_records,
            leave_out_unchanged,
        };
        if let Some(valid) = read_chunks(store, config, integration, file, reading, parts, raw)? {
            return Ok(valid);
        }
        // A record left out as unchanged shares its key with another (or
        // the like): the file is read again with every record kept, so
        // that each copy is told as the rules say.
        tracing::debug!(file = %file.name, "a record found unchanged cannot be left out: reading the file again");
        parts.start_over()?;
    }
    // A read that leaves nothing out always ends with its rows.
    Err(ReadFailure::Content(format!(
        "{}: the file could not be read with every record kept",
        file.name
    )))
}

/// Whether the file `name` is read a chunk at a time (`read_in_chunks`),
/// else whole (`read_whole`): plain UTF-8 CSV, not typed metrics.
fn reads_in_chunks(
    integration: &Integration,
    name: &str,
    reading: &schema::formats::DropReading<'_>,
) -> bool {
    integration.metrics.is_none() && schema::formats::is_plain_csv(name, reading)
}

/// Whether a snapshot sync of `integration` may leave out records by their
/// raw hash (`schema::raw_rows`): when a record's row, once read, depends
/// on its bytes alone, and the rules across rows need no more of it than
/// its key and its references to other rows' keys, as written. References
/// to other datasets (their rows change), unique keys (compared by
/// value), calculated fields, and keys or references compared by their
/// typed spelling (`01` is `1`) need every record read.
fn reads_raw_rows(integration: &Integration) -> bool {
    let schema = &integration.file_schema;
    let key = schema.primary_key();
    let text = |names: &[String]| {
        names
            .iter()
            .all(|name| schema.field(name).is_some_and(|field| field.kind.is_text()))
    };
    integration.mode == Mode::Snapshot
        && integration.computed.is_none()
        && schema.unique_keys.is_empty()
        && !key.is_empty()
        && text(&key)
        && schema.foreign_keys.iter().all(|fk| {
            fk.reference.resource.is_empty()
                && fk.reference.fields.to_vec() == key
                && text(&fk.fields.to_vec())
        })
}

/// How `read_chunks` reads records by their raw hash.
#[derive(Clone, Copy)]
struct RawReading {
    /// Hash each record, for the row to keep.
    hash_records: bool,
    /// Leave out, as unchanged, records whose hash a stored row has.
    leave_out_unchanged: bool,
}

/// A chunk's valid rows, as the writer gets them.
struct ValidChunk {
    frame: DataFrame,
    /// The raw hash of each row of `frame`, when records are hashed.
    raw_hashes: Option<Vec<u64>>,
    /// The row hashes of the stored rows the chunk's records left out as
    /// unchanged matched.
    unchanged: Vec<u64>,
}

/// `read_in_chunks`, reading records by their raw hash as `raw` says.
/// `None` when a record left out as unchanged turned out to share its key
/// with another record, or to refer to a key no record has, or matched a
/// hash several stored rows have: the file must be read again, every
/// record kept.
fn read_chunks(
    store: &Store,
    config: &Config,
    integration: &Integration,
    file: &StagedFile,
    reading: &schema::formats::DropReading<'_>,
    parts: &mut HandoffParts,
    raw: RawReading,
) -> Result<Option<Validated>, ReadFailure> {
    let schema = &integration.file_schema;
    let policy = &integration.config.on_error;
    let drop_error = |e: schema::ParseError| ReadFailure::Drop(e.into());
    let mut chunks = schema::CsvChunks::open(
        &file.path,
        &file.name,
        reading.csv,
        reading.columns,
        schema,
        chunk_bytes(),
    )
    .map_err(drop_error)?;
    if raw.hash_records {
        chunks.hash_records(
            &format!("{:?}", integration.mode),
            schema::validate::compared_field_indexes(schema),
        );
    }
    // How many rows validation describes depends on how many the file has,
    // known only at its end: the count of its line ends bounds it (records
    // hold at least one each, quoted fields may hold more).
    let records_at_most = match policy.policy {
        OnError::Reject => 0,
        OnError::Skip => file
            .line_ends
            .map_or_else(|| line_ends(&file.path), Ok)
            .map_err(|source| {
                drop_error(schema::ParseError::Io {
                    file: file.name.clone(),
                    source,
                })
            })?
            .saturating_add(1),
    };
    let describe = errors_to_describe(policy, records_at_most);
    let tolerated_at_most = tolerated_rows(policy, records_at_most);
    let ctx = schema::validate::Context {
        references: references(store, config, schema)?,
        repeats_are_duplicates: integration.mode == Mode::Append,
        key_checked_later: false,
        keep_errors: Some(describe),
    };
    let mut checks = schema::FileChecks::new(schema);
    let mut out = Validated {
        input_rows: 0,
        error_rows: 0,
        skipped_rows: 0,
        handed_off: 0,
        errors: Vec::new(),
        rejected_keys: Vec::new(),
        ignored_columns: chunks.header().ignored_columns.clone(),
        format_note: None,
        header_note: schema::header_note(&chunks.header().renamed_columns),
    };
    // Past this many error rows the file is refused whatever the rest
    // holds: it keeps only the first row errors (one more than the sample,
    // so the message still says the sample was cut).
    let refused_sample = REFUSED_ERRORS_KEPT + 1;
    let mut handed = Vec::new();
    let scratch = config.store.staging.join(".work");
    // The next chunk is parsed while this one is validated and the one
    // before it is written out: three stages at once keep both cores busy
    // where one stage alone leaves one idle, and none waits for the slowest
    // of the other two. The parsed chunk is handed over, never queued; up to
    // `VALIDATED_QUEUED` validated ones may wait for the writer, which is
    // the fastest stage but starts late on a snapshot sync (it reads the
    // stored rows' hashes first): meanwhile validation goes on, not the
    // reading of hashes alone. So at most seven chunks are in memory,
    // three once the writer keeps up.
    let (parsed, next_parsed) = std::sync::mpsc::sync_channel(0);
    let (validated, next_validated) = std::sync::mpsc::sync_channel::<ValidChunk>(VALIDATED_QUEUED);
    // The stored rows' raw hashes, from the writer to the parser, which
    // waits for them before its first chunk when it leaves records out.
    let (raw_index, next_raw_index) = std::sync::mpsc::sync_channel(1);
    let leave_out = raw.leave_out_unchanged;
    let writing = &mut *parts;
    // A snapshot sync leaves out the rows it finds unchanged among the
    // stored ones: the writer reads their hashes, on a connection of its
    // own, while the first chunk is parsed and validated.
    let stored_rows = (writing.hashed && integration.mode == Mode::Snapshot)
        .then(|| store.reader())
        .transpose()?;
    let (consumed, written, chunks) = std::thread::scope(|scope| {
        let preloaded = writing.stored_rows.take().filter(|_| leave_out);
        let writer = scope.spawn(move || -> Result<Option<KeptWhileReading>, ReadFailure> {
            let mut kept = None;
            if let Some(reader) = stored_rows {
                let stored = match preloaded {
                    Some(preloaded) => preloaded.wait(),
                    // Read here only when no record is left out.
                    None => StoredHashes::load(
                        &reader,
                        &integration.target.name,
                        &integration.name,
                        None,
                    ),
                };
                // The parser goes on (leaving nothing out) if this failed.
                let mut stored = stored?;
                let index = stored.as_mut().and_then(|stored| stored.index.take());
                // Records are left out: chunk after chunk, the read makes
                // and frees blocks of the same few sizes, which the heap
                // keeps for the next chunk until the read is done. (A
                // first load hands every row on, in blocks of all sizes,
                // and kept, they would only add to its peak.)
                kept = index.is_some().then(crate::memory::keep_while_reading);
                let _ = raw_index.send(index.map(std::sync::Arc::new));
                // Built while the parser reads the first chunk.
                writing.stored = stored.map(|stored| stored.table());
            }
            drop(raw_index);
            for (index, mut chunk) in next_validated.into_iter().enumerate() {
                let started = std::time::Instant::now();
                writing.write(&mut chunk.frame, chunk.raw_hashes, &chunk.unchanged)?;
                chunk_done("hand-off", index, started);
            }
            Ok(kept)
        });
        let parser = scope.spawn(move || {
            let mut chunks = chunks;
            if leave_out {
                if let Err(e) = chunks.read_next() {
                    let _ = parsed.send(Err(e));
                    return chunks;
                }
                if let Ok(Some(index)) = next_raw_index.recv() {
                    chunks.leave_out_unchanged(index);
                }
            }
            for index in 0.. {
                let started = std::time::Instant::now();
                let next = chunks.next_chunk();
                chunk_done("parse", index, started);
                let last = !matches!(next, Ok(Some(_)));
                // The reader stopped (it failed, or is done): so does parsing.
                if parsed.send(next).is_err() || last {
                    break;
                }
            }
            chunks
        });
        let consumed = (|| -> Result<(), ReadFailure> {
            let next_parsed = next_parsed;
            while let Some(mut chunk) = next_parsed
                .recv()
                .map_err(|_| ReadFailure::Content("the file's parser stopped".to_string()))?
                .map_err(drop_error)?
            {
                let started = std::time::Instant::now();
                if handed.is_empty()
                    && let Some(message) = computed_in_file(integration, &chunk.table)
                {
                    return Err(ReadFailure::Content(message));
                }
                let (mut valid, skipped) =
                    schema::validate_chunk(&chunk.table, schema, &ctx, &mut checks);
                // Calculated fields are per row: each chunk gets its own.
                if let Some(computed) = &integration.computed {
                    valid = computed.add_to(valid, &chunk.table, &scratch, describe)?;
                }
                chunk_done("validate", handed.len(), started);
                // Noted by the checks across rows: only their stored rows
                // are still wanted, by the writer.
                let unchanged = std::mem::take(&mut chunk.table.unchanged.stored);
                let handed_unchanged = unchanged.len();
                out.input_rows += valid.input_rows;
                out.error_rows += valid.error_rows;
                out.skipped_rows += valid.skipped_rows;
                out.handed_off += (valid.frame.height() + unchanged.len()) as u64;
                out.errors.append(&mut valid.errors);
                if out.error_rows > tolerated_at_most && out.errors.len() > refused_sample {
                    out.errors.truncate(refused_sample);
                }
                let room = describe.saturating_sub(out.rejected_keys.len());
                out.rejected_keys
                    .extend(valid.rejected_keys.drain(..).take(room));
                let hashes = &chunk.table.raw_hashes;
                let raw_hashes = (raw.hash_records && hashes.len() == chunk.table.lines.len())
                    .then(|| valid.rows.iter().map(|&row| hashes[row as usize]).collect());
                let handed_chunk = ValidChunk {
                    frame: valid.frame,
                    raw_hashes,
                    unchanged,
                };
                // The writer stopped: it failed, and says why once joined.
                if validated.send(handed_chunk).is_err() {
                    return Ok(());
                }
                handed.push(HandedChunk {
                    start: chunk.start,
                    end: chunk.end,
                    first_line: chunk.first_line,
                    rows: valid.rows,
                    skipped,
                });
                if handed.len() == 1 && chunk.end < file.size {
                    // The rest of the file is likely made of rows like these.
                    let per_row =
                        (chunk.end - chunk.start) as f64 / chunk.table.records.max(1) as f64;
                    let mut rows = (file.size as f64 / per_row.max(1.0) * 1.05) as u64;
                    if records_at_most > 0 {
                        rows = rows.min(records_at_most);
                    }
                    // And most likely left out as often.
                    let share = |n: usize| {
                        (rows as f64 * n as f64 / chunk.table.records.max(1) as f64) as usize
                    };
                    checks.expect_rows(
                        rows as usize,
                        share(handed_unchanged),
                        share(checks.left_out_refs()),
                    );
                }
                progress::report(Event::Bytes(chunk.end));
                progress::report(Event::Rows(chunk.table.records));
            }
            Ok(())
        })();
        drop(validated);
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let chunks = parser
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (consumed, written, chunks)
    });
    let _kept = written?;
    consumed?;
    if checks.must_read_again() || parts.marks_shared {
        return Ok(None);
    }
    let late = checks.finish();
    if late.is_empty() {
        return Ok(Some(out));
    }
    // Rows the whole file rejects after their chunk was handed off.
    let refused = |out: &Validated| out.error_rows > tolerated_at_most;
    let mut gone: Vec<Vec<u32>> = vec![Vec::new(); handed.len()];
    let mut counted: foldhash::HashSet<(u32, u32)> = Default::default();
    for issue in &late {
        let at = issue.at;
        let chunk = &handed[at.chunk as usize];
        if !counted.insert((at.chunk, at.row)) {
            continue;
        }
        if let Ok(index) = chunk.rows.binary_search(&at.row) {
            gone[at.chunk as usize].push(index as u32);
            out.error_rows += 1;
        } else if chunk.skipped.binary_search(&at.row).is_ok() {
            // A repeat that is also invalid counts as rejected, not skipped.
            out.skipped_rows -= 1;
            out.error_rows += 1;
        }
    }
    for (part, rows) in gone.iter_mut().enumerate() {
        if !rows.is_empty() {
            rows.sort_unstable();
            out.handed_off -= rows.len() as u64;
            parts.drop_rows(part, rows)?;
        }
    }
    // Described from their chunks read again, one at a time; a refused file
    // describes only what can still be among its first errors.
    if refused(&out) && out.errors.len() > refused_sample {
        out.errors.truncate(refused_sample);
    }
    let cutoff = (refused(&out) && out.errors.len() >= refused_sample)
        .then(|| out.errors.last().map_or(0, |e| e.line));
    let mut late = late;
    late.sort_by_key(|i| (i.at.chunk, i.at.line));
    let mut at = 0;
    while at < late.len() {
        let chunk_index = late[at].at.chunk;
        let end = late[at..]
            .iter()
            .position(|i| i.at.chunk != chunk_index)
            .map_or(late.len(), |n| at + n);
        let wanted: Vec<&schema::LateIssue> = late[at..end]
            .iter()
            .filter(|i| cutoff.is_none_or(|line| i.at.line <= line))
            .collect();
        if !wanted.is_empty() {
            let chunk = &handed[chunk_index as usize];
            let raw = chunks
                .reread(chunk.start, chunk.end, chunk.first_line)
                .map_err(drop_error)?;
            for issue in wanted {
                let (error, stored_key) = schema::describe_late(&raw, schema, issue);
                out.errors.push(error);
                if out.rejected_keys.len() < describe {
                    out.rejected_keys.extend(stored_key);
                }
            }
        }
        at = end;
    }
    schema::sort_errors(&mut out.errors, schema);
    Ok(Some(out))
}

/// How many line ends the file at `path` has.
fn line_ends(path: &Path) -> io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut count = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => return Ok(count),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        count += memchr::memchr_iter(b'\n', &buffer[..n]).count() as u64;
    }
}

/// A batch committed, but the store file could not be written to disk: the
/// run is reported failed, never a success, and the history says so when
/// the store still accepts writes. (A failed fsync cannot be retried
/// safely; DuckDB refuses further writes after one.)
fn unflushed(store: &Store, run: &mut RunRecord, error: StoreError) {
    let date = run
        .business_date
        .map(|d| format!(" --date {d}"))
        .unwrap_or_default();
    let mut message = format!(
        "the changes were committed, but {error}. They may not survive a power loss: check the disk, then sync this file again (dropsync run {}{date}: skipped if the store has it, applied if not)",
        run.integration
    );
    run.status = RunStatus::Failed;
    // The disk failed, not the file: a later scan may try it again.
    run.failure = Some(FailureKind::Transient);
    run.completed_at = Some(crate::store::now());
    run.message = Some(message.clone());
    if let Err(record) = store.finish_run(run, &[]) {
        // DuckDB refuses every write after a failed flush; its first line says so.
        let record = record.to_string();
        message.push_str(&format!(
            "; the history still says success: {}",
            record.lines().next().unwrap_or_default()
        ));
        run.message = Some(message);
    }
}

/// A stage done for one chunk of a file read in chunks.
fn chunk_done(stage: &str, chunk: usize, started: std::time::Instant) {
    tracing::debug!(
        stage,
        chunk,
        ms = started.elapsed().as_millis() as u64,
        "stage done"
    );
}

pub(crate) fn stage_done(stage: &str, started: std::time::Instant) {
    tracing::debug!(
        stage,
        ms = started.elapsed().as_millis() as u64,
        "stage done"
    );
}

/// Row errors a refused file keeps in the history: enough to see what went
/// wrong, not every row of a file whose dates all switched format.
pub const REFUSED_ERRORS_KEPT: usize = 1000;

/// How many rejected rows the policy applies a file of `input_rows` with.
fn tolerated_rows(policy: &ErrorPolicy, input_rows: u64) -> u64 {
    match policy.policy {
        OnError::Reject => 0,
        OnError::Skip => policy
            .max_rows
            .unwrap_or(u64::MAX)
            .min((policy.max_ratio * input_rows as f64).floor() as u64),
    }
}

/// How many row errors validation describes in full: every one a file the
/// policy still applies can have (its rejected rows are all recorded), and
/// at least the sample a refused file keeps.
fn errors_to_describe(policy: &ErrorPolicy, input_rows: u64) -> usize {
    let tolerated = tolerated_rows(policy, input_rows);
    usize::try_from(tolerated.saturating_add(1))
        .unwrap_or(usize::MAX)
        .max(REFUSED_ERRORS_KEPT)
}

/// Cuts a refused file's row errors to a sample, and says so.
fn keep_error_sample(message: String, errors: &mut Vec<RowError>, error_rows: i64) -> String {
    if errors.len() <= REFUSED_ERRORS_KEPT {
        return message;
    }
    errors.truncate(REFUSED_ERRORS_KEPT);
    errors.shrink_to_fit();
    format!(
        "{message}; the history keeps the first {} row errors, of {} rejected in all",
        REFUSED_ERRORS_KEPT,
        crate::rows(error_rows.max(0) as u64)
    )
}

/// Why the rejected rows fail the whole file under the integration's policy.
fn policy_breach(config: &IntegrationConfig, valid: &Validated) -> Option<String> {
    let errors = valid.error_rows;
    if errors == 0 {
        return None;
    }
    let policy = &config.on_error;
    if policy.policy == OnError::Reject {
        return Some(format!(
            "{errors} of {} rows failed validation; on_error.policy = \"reject\" refuses the file",
            valid.input_rows
        ));
    }
    if let Some(max) = policy.max_rows
        && errors > max
    {
        return Some(format!(
            "{errors} of {} rows failed validation, more than on_error.max_rows ({max}); nothing applied",
            valid.input_rows
        ));
    }
    let share = errors as f64 / valid.input_rows.max(1) as f64;
    if share > policy.max_ratio {
        return Some(format!(
            "{errors} of {} rows failed validation ({:.1}%, more than on_error.max_ratio {:.1}%); nothing applied",
            valid.input_rows,
            share * 100.0,
            policy.max_ratio * 100.0
        ));
    }
    None
}

/// Known key values for the schema's references to other datasets.
fn references(
    store: &Store,
    config: &Config,
    schema: &schema::TableSchema,
) -> Result<HashMap<String, foldhash::HashSet<String>>, PipelineError> {
    let mut out = HashMap::new();
    for fk in &schema.foreign_keys {
        let resource = &fk.reference.resource;
        if resource.is_empty() || out.contains_key(resource) {
            continue;
        }
        let mut tables: Vec<&str> = config
            .integrations
            .values()
            .filter(|i| &i.dataset == resource)
            .map(|i| i.table_name())
            .collect();
        if tables.is_empty() {
            tables.push(resource);
        }
        tables.sort();
        tables.dedup();
        let mut known = foldhash::HashSet::default();
        for table in tables {
            known.extend(store.key_values(table, &fk.reference.fields.to_vec())?);
        }
        out.insert(resource.clone(), known);
    }
    Ok(out)
}

/// Where DuckDB spills what does not fit its memory limit while it diffs
/// and applies: inside the staging directory, the store's own scratch
/// space, beside the hand-off files but not among them.
fn spill_directory(staging: &Path) -> PathBuf {
    staging.join(".spill")
}

/// The Parquet files one batch's valid rows travel in from polars to
/// DuckDB, one per chunk of the file. They live only as long as the batch:
/// dropping this removes them.
struct HandoffParts {
    dir: PathBuf,
    execution_id: String,
    parts: Vec<PathBuf>,
    /// Whether each row goes with the hash of its values (`_row_hash`),
    /// which a DuckDB store keeps with the row.
    hashed: bool,
    /// The hashes of the rows the integration holds, for a snapshot sync
    /// against them: a row found among them is unchanged and not written.
    stored: Option<StoredHashes>,
    /// For each part, the rows of its frame it holds, when some were left
    /// out as unchanged.
    kept: Vec<Option<Vec<u32>>>,
    /// The stored rows' hashes, being read since before the file was.
    stored_rows: Option<StoredRows>,
    /// Whether a record left out as unchanged matched a hash several
    /// stored rows have (`StoredHashes::mark`).
    marks_shared: bool,
}

/// The hashes of the rows a snapshot sync compares the file with (and
/// their raw hashes), read on a thread of their own from before the file
/// is fetched (or the run recorded), so that the file's first chunk does
/// not wait for them. Dropped unused (the file is a repeat), the read
/// stops at its next batch of rows, and is waited for.
pub struct StoredRows {
    load: Option<std::thread::JoinHandle<StoredRowsLoad>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

type StoredRowsLoad = Result<Option<crate::store::LoadedHashes>, crate::store::StoreError>;

impl StoredRows {
    /// Starts reading them, when the file `name` is read in chunks by a
    /// snapshot sync that may leave out records as unchanged, on a DuckDB
    /// store.
    pub fn start(
        store: &Store,
        integration: &Integration,
        name: &str,
    ) -> Result<Option<StoredRows>, PipelineError> {
        let reading = schema::formats::DropReading::of(&integration.config);
        if store.db().duck().is_none()
            || !reads_raw_rows(integration)
            || !reads_in_chunks(integration, name, &reading)
        {
            return Ok(None);
        }
        let reader = store.reader()?;
        let (table, name) = (integration.target.name.clone(), integration.name.clone());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        Ok(Some(StoredRows {
            load: Some(std::thread::spawn(move || {
                StoredHashes::load(&reader, &table, &name, Some(&stopped))
            })),
            stop,
        }))
    }

    fn wait(mut self) -> StoredRowsLoad {
        self.load
            .take()
            .expect("waited for once")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for StoredRows {
    fn drop(&mut self) {
        if let Some(load) = self.load.take() {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = load.join();
        }
    }
}

impl HandoffParts {
    fn new(staging: &Path, execution_id: &str, hashed: bool) -> HandoffParts {
        HandoffParts {
            dir: staging.join(".work"),
            execution_id: execution_id.to_string(),
            parts: Vec::new(),
            hashed,
            stored: None,
            kept: Vec::new(),
            stored_rows: None,
            marks_shared: false,
        }
    }

    /// The hashes of the stored rows no row of the file matched, when the
    /// rows that matched one were left out.
    fn unmatched(&self) -> Option<Vec<u64>> {
        self.stored.as_ref().map(StoredHashes::unmatched)
    }

    /// The parts written so far, as the store reads them.
    fn handoff(&self) -> crate::store::Handoff {
        crate::store::Handoff {
            parts: self.parts.clone(),
        }
    }

    /// Removes the parts written so far, to write them all again.
    fn start_over(&mut self) -> Result<(), HandoffError> {
        for path in self.parts.drain(..) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(source) if source.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(HandoffError::Io {
                        operation: "remove",
                        path,
                        source,
                    });
                }
            }
        }
        self.kept.clear();
        self.stored = None;
        self.marks_shared = false;
        Ok(())
    }

    /// Writes `frame` as the next part, each row with its raw hash when
    /// records were hashed (`raw_hashes`, one a row of `frame`). The stored
    /// rows of `unchanged` (row hashes) are matched by records of the chunk
    /// left out as unchanged.
    fn write(
        &mut self,
        frame: &mut DataFrame,
        raw_hashes: Option<Vec<u64>>,
        unchanged: &[u64],
    ) -> Result<(), HandoffError> {
        // The first part keeps the name a batch's single file always had.
        let path = match self.parts.len() {
            0 => self.dir.join(format!("{}.parquet", self.execution_id)),
            n => self
                .dir
                .join(format!("{}-{n:05}.parquet", self.execution_id)),
        };
        if self.parts.is_empty() {
            std::fs::create_dir_all(&self.dir).map_err(|source| HandoffError::Io {
                operation: "create the directory of",
                path: path.clone(),
                source,
            })?;
        }
        // Listed before it is written: a half-written part is removed too.
        self.parts.push(path.clone());
        if !self.hashed {
            return write_parquet(&path, frame);
        }
        let encode = |e: PolarsError| HandoffError::Encode {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut hashes = crate::store::row_hashes(frame);
        let mut raw_hashes = raw_hashes;
        let mut left = None;
        if let Some(stored) = &mut self.stored {
            if !stored.mark(unchanged) {
                self.marks_shared = true;
            }
            let found = stored.match_rows(&hashes);
            let kept: Vec<u32> = (0..found.len() as u32)
                .filter(|&row| !found[row as usize])
                .collect();
            let left_out = kept.len() < found.len();
            if left_out {
                let keep: BooleanChunked = found.iter().map(|&f| !f).collect();
                left = Some(frame.filter(&keep).map_err(encode)?);
                hashes = kept.iter().map(|&row| hashes[row as usize]).collect();
                raw_hashes =
                    raw_hashes.map(|raw| kept.iter().map(|&row| raw[row as usize]).collect());
            }
            self.kept.push(left_out.then_some(kept));
        } else {
            self.kept.push(None);
        }
        let frame = left.as_mut().unwrap_or(frame);
        let raw_hashes = match raw_hashes {
            Some(raw) => UInt64Chunked::from_vec(RAW_HASH.into(), raw),
            None => UInt64Chunked::full_null(RAW_HASH.into(), hashes.len()),
        };
        frame
            .with_column(UInt64Chunked::from_vec(ROW_HASH.into(), hashes).into_column())
            .map_err(encode)?;
        frame
            .with_column(raw_hashes.into_column())
            .map_err(encode)?;
        write_parquet(&path, frame)
    }

    /// Leaves out of part `part` the rows at `rows` (ascending indices in
    /// it): rows found wrong only once the whole file was read.
    fn drop_rows(&mut self, part: usize, rows: &[u32]) -> Result<(), HandoffError> {
        // Rows of the frame left out as unchanged are not in the part. Such
        // a row rejected late leaves its stored row matched, not deleted:
        // its key is a rejected one, which a snapshot keeps anyway.
        let in_part: Vec<u32>;
        let rows = match self.kept.get(part) {
            Some(Some(kept)) => {
                in_part = rows
                    .iter()
                    .filter_map(|row| kept.binary_search(row).ok().map(|at| at as u32))
                    .collect();
                &in_part[..]
            }
            _ => rows,
        };
        if rows.is_empty() {
            return Ok(());
        }
        let path = self.parts[part].clone();
        let file = std::fs::File::open(&path).map_err(|source| HandoffError::Io {
            operation: "read back",
            path: path.clone(),
            source,
        })?;
        let encode = |e: PolarsError| HandoffError::Encode {
            path: path.clone(),
            message: e.to_string(),
        };
        let frame = ParquetReader::new(file).finish().map_err(encode)?;
        let mut gone = rows.iter().peekable();
        let keep: BooleanChunked = (0..frame.height() as u32)
            .map(|row| gone.next_if(|&&r| r == row).is_none())
            .collect();
        let mut frame = frame.filter(&keep).map_err(encode)?;
        write_parquet(&path, &mut frame)
    }
}

/// Encodes `frame` as Parquet for DuckDB to read once, whole: no
/// compression, no statistics (nothing filters on them), and plain pages
/// but for text of a few values. polars' writer would try a dictionary for
/// every column, whose hashing of each value cost half the hand-off's time,
/// mostly for columns of unique values that then go plain anyway.
fn encode_parquet(writer: &mut impl Write, frame: &mut DataFrame) -> Result<(), PolarsError> {
    use polars_parquet::write::{
        CompressionOptions, Encoding, FileWriter, StatisticsOptions, Version, WriteOptions,
        row_group_iter, to_parquet_schema,
    };
    let compat = CompatLevel::newest();
    frame.rechunk_mut();
    let schema = frame.schema().to_arrow(compat);
    let options = WriteOptions {
        statistics: StatisticsOptions::empty(),
        version: Version::V1,
        compression: CompressionOptions::Uncompressed,
        data_page_size: None,
    };
    let fields = to_parquet_schema(&schema)?.fields().to_vec();
    // One leaf a column: the hand-off's columns are flat. A column of a
    // few values (a plan, a status) keeps its dictionary: DuckDB then
    // hashes and compares each value once, not once a row.
    let encodings: polars_buffer::Buffer<Vec<Encoding>> = frame
        .columns()
        .iter()
        .map(|column| {
            vec![if few_values(column) {
                Encoding::RleDictionary
            } else {
                Encoding::Plain
            }]
        })
        .collect::<Vec<_>>()
        .into();
    let mut file = FileWriter::try_new(writer, schema, options)?;
    for batch in frame.iter_chunks(compat, false) {
        let rows = batch.len() as u64;
        if rows > 0 {
            file.write(
                rows,
                row_group_iter(batch, encodings.clone(), fields.clone(), options),
            )?;
        }
    }
    file.end(None)?;
    Ok(())
}

/// Whether a column's first thousand values are a few, repeated: text
/// only (numbers and dates are as cheap to read plain).
fn few_values(column: &polars::prelude::Column) -> bool {
    let Ok(text) = column.str() else {
        return false;
    };
    let mut seen: Vec<&str> = Vec::new();
    for value in text.iter().flatten().take(1000) {
        if !seen.contains(&value) {
            if seen.len() == 32 {
                return false;
            }
            seen.push(value);
        }
    }
    !seen.is_empty()
}

/// Writes `frame` to `path` as Parquet, naming the OS error when the disk fails.
fn write_parquet(path: &Path, frame: &mut DataFrame) -> Result<(), HandoffError> {
    let io_error = |operation, source| HandoffError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(|e| io_error("create", e))?;
    let mut writer = FirstErrorWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        error: None,
    };
    let encoded = encode_parquet(&mut writer, frame);
    let flushed = encoded.is_ok().then(|| writer.flush());
    // polars reports a failed write as a Parquet format error ("Invalid
    // thrift: transport error"): the OS error the writer saw is the cause.
    if let Some(source) = writer.error.take() {
        return Err(io_error("write", source));
    }
    if let Err(e) = encoded {
        return Err(HandoffError::Encode {
            path: path.to_path_buf(),
            message: e.to_string(),
        });
    }
    if let Some(Err(source)) = flushed {
        return Err(io_error("write", source));
    }
    Ok(())
}

impl Drop for HandoffParts {
    fn drop(&mut self) {
        for path in &self.parts {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot remove the hand-off file; the next run removes it"
                ),
            }
        }
    }
}

/// A writer that remembers the first error of its inner writer, so the OS
/// error survives a library that turns it into its own.
struct FirstErrorWriter<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W: Write> FirstErrorWriter<W> {
    fn keep(&mut self, e: io::Error) -> io::Error {
        if self.error.is_none() {
            self.error = Some(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            });
        }
        e
    }
}

impl<W: Write> Write for FirstErrorWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.keep(e))
    }
}

/// The order integrations must be synced in on one date: a dataset whose
/// rows refer to another's comes after it.
pub fn dependency_rank(integration: &Integration, all: &[Integration]) -> usize {
    fn rank(dataset: &Dataset, all: &[Integration], depth: usize) -> usize {
        if depth > 8 {
            return depth;
        }
        dataset
            .schema
            .foreign_keys
            .iter()
            .filter(|fk| !fk.reference.resource.is_empty())
            .map(|fk| {
                all.iter()
                    .filter(|i| i.dataset.name == fk.reference.resource)
                    .map(|i| 1 + rank(&i.dataset, all, depth + 1))
                    .max()
                    .unwrap_or(1)
            })
            .max()
            .unwrap_or(0)
    }
    rank(&integration.dataset, all, 0)
}

/// Business dates a file may be asked for by.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("`{s}` is not a date (expected YYYY-MM-DD)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_describes_every_error_a_file_may_be_applied_with() {
        let policy = |policy, max_rows, max_ratio| ErrorPolicy {
            policy,
            max_rows,
            max_ratio,
        };
        // Refused at the first bad row: a sample.
        assert_eq!(
            errors_to_describe(&policy(OnError::Reject, None, 0.1), 3_000_000),
            REFUSED_ERRORS_KEPT
        );
        // 10% of 3M rows may be bad and still applied: all of them.
        assert_eq!(
            errors_to_describe(&policy(OnError::Skip, None, 0.1), 3_000_000),
            300_001
        );
        assert_eq!(
            errors_to_describe(&policy(OnError::Skip, Some(5000), 0.1), 3_000_000),
            5001
        );
        assert_eq!(
            errors_to_describe(&policy(OnError::Skip, None, 0.1), 100),
            REFUSED_ERRORS_KEPT
        );
    }
}
