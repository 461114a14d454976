//! Which files a `run` syncs, and in what order: every integration's new
//! files (or those of one business date), oldest date first, and on each
//! date a dataset before the datasets that refer to it.

use chrono::NaiveDate;

use crate::config::Config;
use crate::pipeline::{self, Integration, PipelineError, Prior, RunOptions, RunReport, Trigger};
use crate::progress;
use crate::source::{self, Candidate, Source, SourceError, StagedFile};
use crate::store::{FailureKind, RunRecord, RunStatus};
use crate::store::{Store, Taken};

/// What to sync.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Integrations by name; all when empty.
    pub integrations: Vec<String>,
    /// Only files whose business date is in this range, both ends included
    /// (asked for explicitly: a repeat is recorded as skipped). A date the
    /// source no longer has is replayed from its staged copy.
    pub dates: Option<(NaiveDate, NaiveDate)>,
    /// Per integration, only the newest new file (catching up with
    /// `catch_up = "latest"`).
    pub latest_only: bool,
}

/// A file to sync: at the source, or already staged.
enum Item {
    Fetch(Candidate),
    Staged(StagedFile),
}

impl Item {
    fn name(&self) -> &str {
        match self {
            Item::Fetch(c) => &c.name,
            Item::Staged(s) => &s.name,
        }
    }
}

/// One file's outcome, or why it could not be synced at all.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOutcome {
    Ran(Box<RunReport>),
    Error {
        integration: String,
        file: Option<String>,
        error: String,
    },
}

/// Runs the selection, one file at a time. A failure in one file is
/// reported and the run goes on.
pub fn run(
    store: &Store,
    config: &Config,
    selection: &Selection,
    opts: RunOptions,
    mut on_file: impl FnMut(&FileOutcome),
) -> Result<Vec<FileOutcome>, PipelineError> {
    let names: Vec<String> = if selection.integrations.is_empty() {
        config.integrations.keys().cloned().collect()
    } else {
        selection.integrations.clone()
    };
    let all: Vec<Integration> = config
        .integrations
        .keys()
        .map(|n| Integration::resolve(config, n))
        .collect::<Result<_, _>>()?;
    let mut chosen = Vec::new();
    for name in &names {
        chosen.push(Integration::resolve(config, name)?);
    }

    source::clean_staging(&config.store.staging);
    source::prune_staging(&config.store.staging, config.store.keep_staged_days.get());
    let mut outcomes = Vec::new();
    // Each integration is taken for the whole run (listing included), so no
    // other worker of a shared store syncs it meanwhile; one another worker
    // is syncing is left to it. A dry run applies nothing and takes nothing.
    let mut holds = Vec::new();
    if !opts.dry_run {
        let mut free = Vec::with_capacity(chosen.len());
        for integration in chosen {
            match store.take(&integration.name)? {
                Taken::Held(hold) => {
                    holds.push(hold);
                    free.push(integration);
                }
                Taken::Busy { worker } => {
                    let outcome = busy(&integration.name, None, &worker);
                    on_file(&outcome);
                    outcomes.push(outcome);
                }
            }
        }
        chosen = free;
    }
    let mut queue: Vec<(NaiveDate, usize, String, usize, Item)> = Vec::new();
    let sources: Vec<Result<Box<dyn Source>, SourceError>> = chosen
        .iter()
        .map(|i| source::open(&i.config, opts.folder_min_age))
        .collect();
    let in_range = |d: NaiveDate| {
        selection
            .dates
            .is_none_or(|(from, to)| from <= d && d <= to)
    };
    for (index, integration) in chosen.iter().enumerate() {
        let listed = match &sources[index] {
            Ok(source) => source.list(),
            Err(e) => Err(SourceError::Remote {
                message: e.to_string(),
                transient: false,
            }),
        };
        let rank = pipeline::dependency_rank(integration, &all);
        let mut items: Vec<(NaiveDate, Item)> = Vec::new();
        match listed {
            Ok(candidates) => items.extend(
                candidates
                    .into_iter()
                    .filter(|c| in_range(c.business_date))
                    .map(|c| (c.business_date, Item::Fetch(c))),
            ),
            Err(e) => {
                let outcome = failed(store, integration, None, opts, e.to_string());
                on_file(&outcome);
                outcomes.push(outcome);
            }
        }
        // Dates asked for that the source no longer has: their staged copies.
        if let Some((from, to)) = selection.dates {
            let staged = store.staged_files(&integration.name, from, to)?;
            for file in staged {
                let listed = items.iter().any(|(d, _)| *d == file.business_date);
                if !listed && file.path.is_file() {
                    items.push((file.business_date, Item::Staged(file)));
                }
            }
        }
        if selection.latest_only
            && let Some(newest) = items.iter().map(|(d, _)| *d).max()
        {
            items.retain(|(d, _)| *d == newest);
        }
        for (date, item) in items {
            queue.push((date, rank, integration.name.clone(), index, item));
        }
    }
    queue.sort_by(|a, b| (a.0, a.1, &a.2, a.4.name()).cmp(&(b.0, b.1, &b.2, b.4.name())));
    let opts = RunOptions {
        explicit: opts.explicit || selection.dates.is_some(),
        ..opts
    };
    // An execution id promised before the run started (a re-run asked for
    // in the console) belongs to the first file; any other gets its own.
    let mut promised = opts.execution_id;
    for (_, _, _, index, item) in queue {
        let integration = &chosen[index];
        let opts = RunOptions {
            execution_id: promised.take(),
            ..opts
        };
        let done = match item {
            Item::Staged(staged) => {
                let opts = RunOptions {
                    trigger: Trigger::Replay,
                    ..opts
                };
                if let Err(e) = source::verify_staged(&staged) {
                    let outcome = FileOutcome::Error {
                        integration: integration.name.clone(),
                        file: Some(staged.name.clone()),
                        error: e.to_string(),
                    };
                    on_file(&outcome);
                    outcomes.push(outcome);
                    continue;
                }
                match pipeline::sync_file(store, config, integration, &staged, opts) {
                    Ok(Some(report)) => vec![FileOutcome::Ran(Box::new(report))],
                    Ok(None) => Vec::new(),
                    Err(e) => vec![FileOutcome::Error {
                        integration: integration.name.clone(),
                        file: Some(staged.name.clone()),
                        error: e.to_string(),
                    }],
                }
            }
            Item::Fetch(candidate) => {
                let Ok(source) = &sources[index] else {
                    continue;
                };
                sync_candidate(
                    store,
                    config,
                    integration,
                    source.as_ref(),
                    &candidate,
                    opts,
                )
            }
        };
        for outcome in done {
            on_file(&outcome);
            outcomes.push(outcome);
        }
    }
    drop(holds);
    Ok(outcomes)
}

/// An integration another worker of the shared store is syncing: left to
/// it, which is no failure of the file.
fn busy(integration: &str, file: Option<&str>, worker: &str) -> FileOutcome {
    FileOutcome::Error {
        integration: integration.to_string(),
        file: file.map(str::to_string),
        error: format!(
            "integration {integration} is being synced by worker {worker} right now; nothing done here (try again once it is done)"
        ),
    }
}

/// A failure to reach or read the source, recorded in the history as a
/// failed run (with the server's reply), unless this is a dry run.
fn failed(
    store: &Store,
    integration: &Integration,
    candidate: Option<&Candidate>,
    opts: RunOptions,
    message: String,
) -> FileOutcome {
    let mut run = RunRecord::new(
        &integration.name,
        &integration.dataset.name,
        integration.mode.as_str(),
        opts.trigger.as_str(),
    );
    run.status = RunStatus::Failed;
    // The source failed, not the file: every scan lists and fetches afresh,
    // so the next one tries again.
    run.failure = Some(FailureKind::Transient);
    run.message = Some(message.clone());
    if let Some(c) = candidate {
        run.file_name = Some(c.name.clone());
        run.source = Some(c.location.display().to_string());
        run.file_size = Some(c.size as i64);
        run.business_date = Some(c.business_date);
    }
    run.completed_at = Some(crate::store::now());
    if !opts.dry_run
        && let Err(e) = store.finish_run(&run, &[])
    {
        return FileOutcome::Error {
            integration: integration.name.clone(),
            file: candidate.map(|c| c.name.clone()),
            error: format!("{message}; and it could not be recorded: {e}"),
        };
    }
    FileOutcome::Ran(Box::new(RunReport {
        record: run,
        changes: None,
        errors: Vec::new(),
        ignored_columns: Vec::new(),
        dry_run: opts.dry_run,
    }))
}

/// Fetches and syncs one file; then, when its run succeeded, lets the source
/// leave, delete or archive it.
fn sync_candidate(
    store: &Store,
    config: &Config,
    integration: &Integration,
    source: &dyn Source,
    candidate: &Candidate,
    opts: RunOptions,
) -> Vec<FileOutcome> {
    // Done with the file when its content has been applied: by this run,
    // or before (a repeat passed over now, which a failed archive or delete
    // may have left behind).
    let applied_before = |hash: &str| {
        store
            .run_with_content(&integration.name, hash)
            .ok()
            .flatten()
            .is_some_and(|r| matches!(r.status, RunStatus::Success | RunStatus::Partial))
    };
    // The hash of the content, when it has been applied.
    let (mut outcomes, done) = match sync_one(store, config, integration, source, candidate, opts) {
        Synced::PassedOver {
            applied,
            content_hash,
        } => (Vec::new(), applied.then_some(content_hash)),
        Synced::Outcome(outcome) => {
            let done = match &outcome {
                FileOutcome::Ran(r) => match r.record.status {
                    RunStatus::Success | RunStatus::Partial => r.record.content_hash.clone(),
                    // A repeat of applied content, or an older snapshot.
                    RunStatus::Skipped => r
                        .record
                        .content_hash
                        .clone()
                        .filter(|hash| applied_before(hash)),
                    _ => None,
                },
                FileOutcome::Error { .. } => None,
            };
            (vec![outcome], done)
        }
        Synced::Repeat { content_hash } => (
            Vec::new(),
            applied_before(&content_hash).then_some(content_hash),
        ),
    };
    if let Some(content_hash) = done
        && !opts.dry_run
        && let Err(e) = source.finish(candidate, &content_hash)
    {
        outcomes.push(FileOutcome::Error {
            integration: integration.name.clone(),
            file: Some(candidate.name.clone()),
            error: format!("synced, but the after-sync action failed: {e}"),
        });
    }
    outcomes
}

/// What became of one candidate.
enum Synced {
    /// Ran (or failed) and reported.
    Outcome(FileOutcome),
    /// Fetched before, unchanged, and its content has had its run: not read again.
    PassedOver { applied: bool, content_hash: String },
    /// Fetched, but its content has had its run before; nothing recorded.
    Repeat { content_hash: String },
}

fn sync_one(
    store: &Store,
    config: &Config,
    integration: &Integration,
    source: &dyn Source,
    candidate: &Candidate,
    opts: RunOptions,
) -> Synced {
    let error = |e: String| {
        Synced::Outcome(FileOutcome::Error {
            integration: integration.name.clone(),
            file: Some(candidate.name.clone()),
            error: e,
        })
    };
    // A file fetched before, unchanged, whose content has had its run, is
    // passed over without reading it again, unless its run failed for a
    // transient reason and it has retries left.
    if !opts.force && !opts.explicit {
        let seen = store
            .fetched_hash(&integration.name, candidate)
            .and_then(|hash| match hash {
                Some(hash) => {
                    pipeline::prior(store, &integration.name, &hash, candidate.business_date)
                        .map(|prior| Some((prior, hash)))
                }
                None => Ok(None),
            });
        match seen {
            Ok(Some((Prior::Applied(_), content_hash))) => {
                return Synced::PassedOver {
                    applied: true,
                    content_hash,
                };
            }
            Ok(Some((
                Prior::Settled {
                    last,
                    failed_attempts,
                },
                content_hash,
            ))) => {
                if failed_attempts >= pipeline::RETRY_ATTEMPTS {
                    tracing::warn!(
                        integration = %integration.name,
                        file = %candidate.name,
                        attempts = failed_attempts,
                        "not retried: its runs failed every time; run it with --date or ingest"
                    );
                }
                return Synced::PassedOver {
                    applied: matches!(last.status, RunStatus::Success | RunStatus::Partial),
                    content_hash,
                };
            }
            Ok(Some((Prior::Retry { attempt }, _))) => {
                tracing::info!(
                    integration = %integration.name,
                    file = %candidate.name,
                    attempt,
                    "retrying a file whose last run failed for a transient reason"
                );
            }
            Ok(Some((Prior::New, _)) | None) => {}
            Err(e) => return error(e.to_string()),
        }
    }
    let promised = opts.execution_id.map(|id| id.to_string());
    let _in_progress = (!opts.dry_run).then(|| {
        crate::activity::begin(
            &integration.name,
            promised.as_deref(),
            Some(&candidate.name),
            crate::activity::Stage::Fetching,
        )
    });
    let staging = config.store.staging.join(&integration.name);
    let started = std::time::Instant::now();
    let _in_flight = progress::file(&candidate.name, Some(candidate.size));
    progress::report(progress::Event::Stage(progress::Stage::Fetching));
    // The stored rows' hashes are read while the file is fetched.
    let stored_rows = match pipeline::StoredRows::start(store, integration, &candidate.name) {
        Ok(stored_rows) => stored_rows,
        Err(e) => return error(e.to_string()),
    };
    let staged = match source.fetch(candidate, &staging) {
        Ok(staged) => staged,
        Err(e) => {
            return Synced::Outcome(failed(
                store,
                integration,
                Some(candidate),
                opts,
                e.to_string(),
            ));
        }
    };
    pipeline::stage_done("fetch", started);
    // What the history says was fetched must be on disk first: a staged
    // copy a power loss took would otherwise never be fetched again.
    if !opts.dry_run
        && let Err(e) = source::make_durable(&staged)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                store
                    .record_fetched(&integration.name, candidate, &staged)
                    .map_err(|e| e.to_string())
            })
    {
        return error(e);
    }
    match pipeline::sync_file_with(store, config, integration, &staged, opts, stored_rows) {
        Ok(Some(report)) => Synced::Outcome(FileOutcome::Ran(Box::new(report))),
        Ok(None) => Synced::Repeat {
            content_hash: staged.content_hash,
        },
        Err(e) => error(e.to_string()),
    }
}

/// Syncs a file handed over on the command line, as if it had been dropped.
pub fn ingest(
    store: &Store,
    config: &Config,
    integration: &str,
    path: &std::path::Path,
    opts: RunOptions,
) -> Result<FileOutcome, PipelineError> {
    ingest_with(
        store,
        config,
        integration,
        &path.display().to_string(),
        opts,
        |pattern, staging| source::stage_local(path, pattern, staging),
    )
}

/// What a client of the daemon said of the file whose content it sends.
#[derive(Debug, Clone)]
pub struct ReceivedFile {
    /// The file's name (no directory).
    pub name: String,
    pub size: u64,
    /// Its modification time (UTC), for the business date when the name has none.
    pub modified: Option<chrono::NaiveDateTime>,
}

/// Syncs a file whose content a client of the daemon sent, as if it had
/// been dropped; the client opened it, the daemon never opens its path.
pub fn ingest_received(
    store: &Store,
    config: &Config,
    integration: &str,
    file: &ReceivedFile,
    content: &mut dyn std::io::Read,
    opts: RunOptions,
) -> Result<FileOutcome, PipelineError> {
    ingest_with(
        store,
        config,
        integration,
        &file.name,
        opts,
        |pattern, staging| {
            source::stage_received(
                content,
                &file.name,
                file.size,
                file.modified,
                pattern,
                staging,
            )
        },
    )
}

fn ingest_with(
    store: &Store,
    config: &Config,
    integration: &str,
    shown_as: &str,
    opts: RunOptions,
    stage: impl FnOnce(&source::FilePattern, &std::path::Path) -> Result<StagedFile, SourceError>,
) -> Result<FileOutcome, PipelineError> {
    let integration = Integration::resolve(config, integration)?;
    let _hold = if opts.dry_run {
        None
    } else {
        match store.take(&integration.name)? {
            Taken::Held(hold) => Some(hold),
            Taken::Busy { worker } => {
                return Ok(busy(&integration.name, Some(shown_as), &worker));
            }
        }
    };
    source::clean_staging(&config.store.staging);
    let pattern =
        source::FilePattern::parse(&integration.config.pattern).map_err(SourceError::from);
    let started = std::time::Instant::now();
    let shown_name = std::path::Path::new(shown_as)
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let promised = opts.execution_id.map(|id| id.to_string());
    let _in_progress = (!opts.dry_run).then(|| {
        crate::activity::begin(
            &integration.name,
            promised.as_deref(),
            Some(&shown_name),
            crate::activity::Stage::Fetching,
        )
    });
    let _in_flight = progress::file(&shown_name, None);
    progress::report(progress::Event::Stage(progress::Stage::Fetching));
    // The stored rows' hashes are read while the file is staged.
    let stored_rows = pipeline::StoredRows::start(store, &integration, &shown_name)?;
    let staged = pattern.and_then(|p| stage(&p, &config.store.staging.join(&integration.name)));
    let staged = match staged {
        Ok(s) => s,
        Err(e) => {
            return Ok(FileOutcome::Error {
                integration: integration.name.clone(),
                file: Some(shown_as.to_string()),
                error: e.to_string(),
            });
        }
    };
    pipeline::stage_done("fetch", started);
    let opts = RunOptions {
        explicit: true,
        ..opts
    };
    Ok(
        match pipeline::sync_file_with(store, config, &integration, &staged, opts, stored_rows)? {
            Some(report) => FileOutcome::Ran(Box::new(report)),
            // Explicit runs always report; say so plainly if one ever does not.
            None => FileOutcome::Error {
                integration: integration.name.clone(),
                file: Some(shown_as.to_string()),
                error: "the file's content was already applied".into(),
            },
        },
    )
}
