//! Live updates: the stage of every run in progress, pushed to open pages
//! as server-sent events (`GET /api/events`), and an execution's status for
//! scripts that poll (`GET /api/executions/ID`): queued, in progress with
//! its stage, or finished with its status and counts.
//!
//! The stages come from `crate::progress`, in memory; how a run ended comes
//! from the history, read on a connection of the console's own, so neither
//! waits for the batch being applied.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use maud::{Markup, html};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, Console, Pending};
use crate::activity::{self, Activity, Change, Stage};
use crate::store::{RunRecord, RunStatus};

pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/api/events", get(events))
        .route("/api/executions/{id}", get(execution))
}

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// Accepted, waiting for the batch in flight.
    Queued,
    InProgress,
    Finished,
}

/// An execution, as `GET /api/executions/ID` and the event stream tell it.
#[derive(Debug, Serialize)]
struct Execution {
    execution_id: Option<String>,
    integration: String,
    state: Phase,
    /// While in progress.
    stage: Option<Stage>,
    file: Option<String>,
    /// Once finished: the run's status, or `error` when it never became a
    /// run (`message` says why).
    status: Option<&'static str>,
    message: Option<String>,
    counts: Option<Counts>,
    /// The run's page, once the history has it.
    run_url: Option<String>,
}

#[derive(Debug, Serialize)]
struct Counts {
    rows: i64,
    applied: i64,
    rejected: i64,
    skipped: i64,
    inserted: i64,
    updated: i64,
    deleted: i64,
    unchanged: i64,
    subscribed: i64,
    unsubscribed: i64,
}

impl Execution {
    fn running(a: &Activity) -> Execution {
        Execution {
            execution_id: a.execution_id.clone(),
            integration: a.integration.clone(),
            state: Phase::InProgress,
            stage: Some(a.stage),
            file: a.file.clone(),
            status: None,
            message: None,
            counts: None,
            run_url: a.execution_id.as_ref().map(|id| format!("/runs/{id}")),
        }
    }

    fn of_run(r: RunRecord) -> Execution {
        let running = r.status == RunStatus::Running;
        Execution {
            run_url: Some(format!("/runs/{}", r.execution_id)),
            integration: r.integration,
            state: if running {
                Phase::InProgress
            } else {
                Phase::Finished
            },
            stage: None,
            file: r.file_name,
            status: (!running).then(|| r.status.as_str()),
            message: r.message,
            counts: Some(Counts {
                rows: r.input_rows,
                applied: r.success_rows,
                rejected: r.error_rows,
                skipped: r.skipped_rows,
                inserted: r.inserted,
                updated: r.updated,
                deleted: r.deleted,
                unchanged: r.unchanged,
                subscribed: r.subscribed,
                unsubscribed: r.unsubscribed,
            }),
            execution_id: Some(r.execution_id),
        }
    }

    fn pending(id: &str, pending: Pending) -> Execution {
        let (integration, failure) = match pending {
            Pending::Queued { integration } => (integration, None),
            Pending::Failed {
                integration,
                message,
            } => (integration, Some(message)),
        };
        Execution {
            execution_id: Some(id.to_string()),
            integration,
            state: if failure.is_some() {
                Phase::Finished
            } else {
                Phase::Queued
            },
            stage: None,
            file: None,
            status: failure.is_some().then_some("error"),
            message: failure,
            counts: None,
            run_url: None,
        }
    }
}

/// `GET /api/executions/ID`.
async fn execution(
    State(console): State<Console>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(activity) = activity::of_execution(&id) {
        return Ok(axum::Json(Execution::running(&activity)).into_response());
    }
    if let Some(pending) = console.pending_state(&id).await? {
        return Ok(axum::Json(Execution::pending(&id, pending)).into_response());
    }
    let wanted = id.clone();
    let run = console
        .read(move |store, _| Ok(store.find_run(&wanted)?))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "execution_not_found",
                format!("no execution has the id `{id}`"),
            )
        })?;
    Ok(axum::Json(Execution::of_run(run)).into_response())
}

/// `GET /api/events`: every run in progress now, then each change as it
/// happens (event `run`, data an execution as `/api/executions/ID` gives
/// it). A watcher too slow to keep up gets `lagged` and should reload.
async fn events(
    State(console): State<Console>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = activity::watch();
    let now: Vec<Result<Event, Infallible>> = activity::current()
        .iter()
        .map(|a| Ok(event(&Execution::running(a))))
        .collect();
    let later =
        futures_util::stream::unfold((changes, console), |(mut changes, console)| async move {
            let next = match changes.recv().await {
                Ok(Change::Stage(activity)) => event(&Execution::running(&activity)),
                Ok(Change::Finished {
                    integration,
                    execution_id,
                }) => event(&finished(&console, integration, execution_id).await),
                Err(RecvError::Lagged(_)) => Event::default().event("lagged").data("{}"),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(next), (changes, console)))
        });
    Sse::new(futures_util::stream::iter(now).chain(later))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn event(execution: &Execution) -> Event {
    Event::default()
        .event("run")
        .json_data(execution)
        .unwrap_or_else(|_| Event::default().event("lagged").data("{}"))
}

/// How a run that just ended came out, from the history.
async fn finished(console: &Console, integration: String, id: Option<String>) -> Execution {
    let run = match id.clone() {
        Some(id) => console
            .read(move |store, _| Ok(store.find_run(&id)?))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    run.map(Execution::of_run).unwrap_or(Execution {
        execution_id: id,
        integration,
        state: Phase::Finished,
        stage: None,
        file: None,
        status: None,
        message: None,
        counts: None,
        run_url: None,
    })
}

/// A card's status badge: the stage while a run is in progress, else how
/// the last run ended. The page's script keeps it current.
pub(super) fn card_badge(integration: &str, last: Option<RunStatus>) -> Markup {
    let (class, text) = match (activity::of_integration(integration), last) {
        (Some(a), _) => ("running", format!("in progress: {}", a.stage.as_str())),
        (None, None) => ("none", "never ran".to_string()),
        (None, Some(RunStatus::Running)) => ("running", "in progress".to_string()),
        (None, Some(s)) => (s.as_str(), s.as_str().to_string()),
    };
    html! {
        span class={ "badge badge-" (class) } data-live-integration=(integration) role="status" { (text) }
    }
}
