//! Re-running one business date of an integration, from the API or the
//! console: first as a dry run that shows the change set (counts and
//! sampled field-level changes), then, once confirmed, for real.
//!
//! Both go through the writer's queue and `sync::run` with that date, as
//! `dropsync run --date D [--dry-run]` does: the preview is the command
//! line's dry run (computed in the batch's transaction, rolled back), so
//! what it shows is what the re-run would apply.

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::api::known_integration;
use super::pages::{PageError, encode, page, status_badge};
use super::{ApiError, Console, Pending};
use crate::config::Config;
use crate::pipeline::{RunOptions, Trigger};
use crate::schema::RowError;
use crate::store::{ChangeSet, RunStatus, Sample, Store};
use crate::sync::{FileOutcome, Selection};

pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/api/integrations/{name}/rerun", post(api_rerun))
        .route(
            "/integrations/{name}/rerun",
            get(preview_page).post(confirm_page),
        )
}

/// `POST /api/integrations/NAME/rerun`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RerunRequest {
    /// `YYYY-MM-DD`; kept as text so a malformed one gets our message.
    date: String,
    #[serde(default)]
    dry_run: bool,
    /// Apply even content already applied, or a snapshot older than the
    /// one held (as `run --force`).
    #[serde(default)]
    force: bool,
}

/// What re-running a date would do.
#[derive(Debug, Serialize)]
pub(super) struct Preview {
    integration: String,
    date: NaiveDate,
    force: bool,
    dry_run: bool,
    files: Vec<FilePreview>,
}

/// What re-running one file of the date would do.
#[derive(Debug, Serialize)]
struct FilePreview {
    file: Option<String>,
    /// How the run would end; `None` when the file could not be read at all
    /// (`error` says why).
    status: Option<RunStatus>,
    message: Option<String>,
    error: Option<String>,
    rows: i64,
    rejected: i64,
    counts: Counts,
    /// Sampled changed keys, each with the fields it changes.
    changes: Vec<Sample>,
    /// The first rejected rows.
    rejected_rows: Vec<RowError>,
}

/// How many keys each kind of change would touch.
#[derive(Debug, Default, Serialize)]
struct Counts {
    insert: u64,
    update: u64,
    delete: u64,
    unchanged: u64,
    duplicate: u64,
    stale: u64,
    subscribe: u64,
    unsubscribe: u64,
}

impl From<&ChangeSet> for Counts {
    fn from(c: &ChangeSet) -> Counts {
        Counts {
            insert: c.inserted,
            update: c.updated,
            delete: c.deleted,
            unchanged: c.unchanged,
            duplicate: c.duplicates,
            stale: c.stale,
            subscribe: c.subscribed,
            unsubscribe: c.unsubscribed,
        }
    }
}

async fn api_rerun(
    State(console): State<Console>,
    Path(name): Path<String>,
    body: Result<axum::Json<RerunRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let axum::Json(request) = body.map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "{}; send {{\"date\": \"2026-11-03\", \"dry_run\": true}}",
                e.body_text()
            ),
        )
    })?;
    let date = business_date(&request.date)?;
    if request.dry_run {
        let preview = preview(&console, &name, date, request.force).await?;
        return Ok(axum::Json(preview).into_response());
    }
    let id = queue_rerun(&console, &name, date, request.force)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({
            "execution_id": id,
            "integration": name,
            "date": date,
            "status": "queued",
            "status_url": format!("/api/executions/{id}"),
        })),
    )
        .into_response())
}

fn business_date(text: &str) -> Result<NaiveDate, ApiError> {
    crate::pipeline::parse_date(text.trim())
        .map_err(|message| ApiError::bad_request("invalid_date", format!("date: {message}")))
}

/// Runs the date as a dry run on the writer, after the batch in flight.
async fn preview(
    console: &Console,
    name: &str,
    date: NaiveDate,
    force: bool,
) -> Result<Preview, ApiError> {
    known_integration(&console.config, name)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let integration = name.to_string();
    console.submit(Box::new(move |store, config| {
        let _ = tx.send(dry_run(store, config, &integration, date, force));
    }))?;
    let files = rx
        .await
        .map_err(|_| ApiError::internal("the daemon stopped before the preview was computed"))??;
    if files.is_empty() {
        return Err(no_file(name, date));
    }
    Ok(Preview {
        integration: name.to_string(),
        date,
        force,
        dry_run: true,
        files,
    })
}

fn no_file(name: &str, date: NaiveDate) -> ApiError {
    ApiError::not_found(
        "no_file_for_date",
        format!(
            "integration `{name}` has no file for the business date {date}: none at its source and no staged copy"
        ),
    )
}

fn selection(integration: &str, date: NaiveDate) -> Selection {
    Selection {
        integrations: vec![integration.to_string()],
        dates: Some((date, date)),
        latest_only: false,
    }
}

/// `dropsync run INTEGRATION --date D --dry-run`, file by file.
fn dry_run(
    store: &Store,
    config: &Config,
    integration: &str,
    date: NaiveDate,
    force: bool,
) -> Result<Vec<FilePreview>, ApiError> {
    let opts = RunOptions {
        force,
        dry_run: true,
        trigger: Trigger::Manual,
        explicit: true,
        folder_min_age: std::time::Duration::ZERO,
        execution_id: None,
    };
    let outcomes = crate::sync::run(store, config, &selection(integration, date), opts, |_| {})
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(outcomes.into_iter().map(file_preview).collect())
}

fn file_preview(outcome: FileOutcome) -> FilePreview {
    match outcome {
        FileOutcome::Ran(report) => {
            let changes = report.changes.unwrap_or_default();
            FilePreview {
                file: report.record.file_name,
                status: Some(report.record.status),
                message: report.record.message,
                error: None,
                rows: report.record.input_rows,
                rejected: report.record.error_rows,
                counts: Counts::from(&changes),
                changes: changes.samples,
                rejected_rows: report.errors,
            }
        }
        FileOutcome::Error { file, error, .. } => FilePreview {
            file,
            status: None,
            message: None,
            error: Some(error),
            rows: 0,
            rejected: 0,
            counts: Counts::default(),
            changes: Vec::new(),
            rejected_rows: Vec::new(),
        },
    }
}

/// Queues the re-run on the writer; the execution id its (first) run will
/// have. What never becomes a run (no file any more, an unreachable source)
/// is kept as the execution's failure, for its status page.
fn queue_rerun(
    console: &Console,
    name: &str,
    date: NaiveDate,
    force: bool,
) -> Result<String, ApiError> {
    known_integration(&console.config, name)?;
    let execution_id = uuid::Uuid::now_v7();
    let id = execution_id.to_string();
    console.set_pending(
        &id,
        Pending::Queued {
            integration: name.to_string(),
        },
    );
    let pending = console.pending.clone();
    let (job_id, integration) = (id.clone(), name.to_string());
    let queued = console.submit(Box::new(move |store, config| {
        let opts = RunOptions {
            force,
            dry_run: false,
            trigger: Trigger::Manual,
            explicit: true,
            folder_min_age: std::time::Duration::ZERO,
            execution_id: Some(execution_id),
        };
        tracing::info!(integration, %date, "re-run asked for in the web console");
        let outcomes =
            crate::sync::run(store, config, &selection(&integration, date), opts, |_| {});
        if matches!(store.find_run(&job_id), Ok(Some(_))) {
            return;
        }
        let message = match outcomes {
            Err(e) => e.to_string(),
            Ok(outcomes) => match outcomes.into_iter().next() {
                None => no_file(&integration, date).message,
                Some(FileOutcome::Error { error, .. }) => error,
                Some(FileOutcome::Ran(report)) => report.record.message.unwrap_or_else(|| {
                    format!("the run was recorded as {}", report.record.execution_id)
                }),
            },
        };
        tracing::warn!(integration, %date, "re-run: {message}");
        pending.lock().unwrap_or_else(|p| p.into_inner()).insert(
            job_id,
            Pending::Failed {
                integration,
                message,
            },
        );
    }));
    if let Err(e) = queued {
        console
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        return Err(e);
    }
    Ok(id)
}

/// The form's fields: `date`, and `force` when ticked.
#[derive(Debug, Deserialize)]
struct RerunForm {
    #[serde(default)]
    date: String,
    #[serde(default)]
    force: Option<String>,
}

/// `GET /integrations/NAME/rerun?date=D`: the preview, with a button that
/// confirms it.
async fn preview_page(
    State(console): State<Console>,
    Path(name): Path<String>,
    Query(form): Query<RerunForm>,
) -> Result<Response, PageError> {
    known_integration(&console.config, &name)?;
    // A preview changes nothing, but it takes the writer's turn and reads
    // the source: it is for those who may re-run.
    if !super::auth::viewer().may_operate() {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "read_only",
            message: "a read-only token can look, not re-run".into(),
        }
        .into());
    }
    let date = business_date(&form.date)?;
    let force = form.force.is_some();
    let preview = preview(&console, &name, date, force).await?;
    Ok(page(
        &format!("Re-run {date} · {name}"),
        false,
        preview_view(&preview),
    )
    .into_response())
}

fn preview_view(p: &Preview) -> Markup {
    let name = &p.integration;
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/" { "Integrations" } " / "
            a href={ "/integrations/" (encode(name)) } { (name) } " / re-run"
        }
        div.heading {
            h1 { "Re-run " (p.date) }
            span.badge.badge-none { "dry run" }
        }
        p.muted {
            "Nothing has been changed yet. This is what re-running the file of "
            (p.date) " would do" @if p.force { ", forced" } "."
        }
        @for f in &p.files { (file_view(f)) }
        form.actions.confirm method="post" action={ "/integrations/" (encode(name)) "/rerun" } {
            input type="hidden" name="date" value=(p.date);
            @if p.force { input type="hidden" name="force" value="on"; }
            button type="submit" { "Confirm re-run" }
            a.button.secondary href={ "/integrations/" (encode(name)) } { "Cancel" }
        }
    }
}

fn file_view(f: &FilePreview) -> Markup {
    let c = &f.counts;
    html! {
        section.preview aria-label={ "File " (f.file.as_deref().unwrap_or("?")) } {
            h2.wrap { (f.file.as_deref().unwrap_or("(no file)")) }
            @match f.status {
                Some(status) => {
                    p { "Would end as " (status_badge(Some(status))) }
                }
                None => { p { span.badge.badge-failed { "cannot run" } } }
            }
            @if let Some(e) = &f.error { p.message role="alert" { (e) } }
            @if let Some(m) = &f.message { p.message { (m) } }
            ul.counts aria-label="Changes it would make" {
                li { span { "rows" } strong { (f.rows) } }
                li class=[(f.rejected > 0).then_some("bad")] { span { "rejected" } strong { (f.rejected) } }
                li { span { "inserts" } strong { "+" (c.insert) } }
                li { span { "updates" } strong { "~" (c.update) } }
                li { span { "deletes" } strong { "−" (c.delete) } }
                li { span { "unchanged" } strong { (c.unchanged) } }
                @if c.duplicate > 0 { li { span { "duplicates" } strong { (c.duplicate) } } }
                @if c.stale > 0 { li { span { "stale" } strong { (c.stale) } } }
                @if c.subscribe > 0 || c.unsubscribe > 0 {
                    li { span { "subscribes" } strong { (c.subscribe) } }
                    li { span { "unsubscribes" } strong { (c.unsubscribe) } }
                }
            }
            @if !f.changes.is_empty() {
                h3 { "Sampled changes" }
                div.scroll {
                    table.changes {
                        caption.visually-hidden { "Sampled changes: key, field, old value, new value" }
                        thead { tr {
                            th scope="col" { "Change" } th scope="col" { "Key" } th scope="col" { "Field" }
                            th scope="col" { "Old value" } th scope="col" { "New value" }
                        } }
                        tbody {
                            @for s in &f.changes {
                                @if s.fields.is_empty() {
                                    tr { td { (s.kind) } td.wrap { (s.key) } td {} td {} td {} }
                                }
                                @for (n, field) in s.fields.iter().enumerate() {
                                    tr class=[(n == 0).then_some("first")] {
                                        td { @if n == 0 { (s.kind) } }
                                        td.wrap { @if n == 0 { (s.key) } }
                                        td { (field.field) }
                                        td.wrap { (value(field.old.as_deref())) }
                                        td.wrap { (value(field.new.as_deref())) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !f.rejected_rows.is_empty() {
                h3 { "First rejected rows" }
                ul.rejected {
                    @for e in &f.rejected_rows {
                        li { "line " (e.line) @if let Some(k) = &e.key { " [" (k) "]" } ": " (e.message) }
                    }
                }
            }
        }
    }
}

fn value(v: Option<&str>) -> Markup {
    match v {
        Some(v) => html! { code.raw { (v) } },
        None => html! { span.muted { "(empty)" } },
    }
}

/// The "Re-run date" form on an integration's page: it asks for the
/// preview first.
pub(super) fn form(name: &str) -> Markup {
    html! {
        form.panel method="get" action={ "/integrations/" (encode(name)) "/rerun" } {
            h2 { "Re-run a date" }
            p.muted { "See what re-running a business date's file would change before it does." }
            div.row {
                label for="rerun-date" { "Business date" }
                input #rerun-date type="date" name="date" required;
            }
            div.row {
                input #rerun-force type="checkbox" name="force";
                label for="rerun-force" { "Apply even if already applied or older than what is held (force)" }
            }
            button type="submit" { "Preview re-run" }
        }
    }
}

/// `POST /integrations/NAME/rerun` (the preview's button): queues the
/// re-run and shows its execution.
async fn confirm_page(
    State(console): State<Console>,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<RerunForm>,
) -> Result<Response, PageError> {
    let date = business_date(&form.date)?;
    let id = queue_rerun(&console, &name, date, form.force.is_some())?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}
