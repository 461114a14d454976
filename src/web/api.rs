//! The JSON API under `/api`: the same records `status --json`,
//! `history --json` and `show --json` print, paged, and a run's rejected
//! rows as CSV.

use std::collections::HashMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;

use super::{ApiError, Console, Pending};
use crate::config::Config;
use crate::schema::RowError;
use crate::store::{RunFilter, RunRecord, RunStatus, Store, spreadsheet_safe};

pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/api/integrations", get(integrations))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/errors.csv", get(errors_csv))
        .route("/api/integrations/{name}/sync", post(sync_now))
        .route("/api/integrations/{name}/files", post(upload))
}

/// Most runs or rejected rows one page holds.
pub(super) const MAX_PAGE: usize = 1000;
/// The deepest a page may start: far past any history, and small enough
/// for every SQL engine's OFFSET.
const MAX_OFFSET: usize = 1_000_000_000_000;
/// Rejected rows a CSV download reads from the store at a time.
const CSV_CHUNK: usize = 5000;

type Params = Query<HashMap<String, String>>;

async fn integrations(State(console): State<Console>) -> Result<Response, ApiError> {
    let cards = console
        .read(|store, config| {
            crate::status::cards(Some(store), config, chrono::Utc::now())
                .map_err(|e| ApiError::internal(e.to_string()))
        })
        .await?;
    Ok(axum::Json(cards).into_response())
}

async fn runs(State(console): State<Console>, Query(params): Params) -> Result<Response, ApiError> {
    let filter = run_filter(&params, &console.config)?;
    let (limit, offset) = paging(&params, "limit", "offset", 50)?;
    let page = console
        .read(move |store, _| Ok(store.runs_page(&filter, limit, offset)?))
        .await?;
    Ok(axum::Json(page).into_response())
}

async fn run(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    // `show` lists 20 rejected rows unless asked for more; so does this.
    let (limit, offset) = paging(&params, "errors", "errors_offset", 20)?;
    let search = params.get("q").cloned();
    if let Some(pending) = console.pending_run(&id).await? {
        return Ok(pending);
    }
    let (run, errors, total) = console
        .read(move |store, _| {
            let run = find_run(store, &id)?;
            let (errors, total) =
                store.row_errors_page(&run.execution_id, search.as_deref(), limit, offset)?;
            Ok((run, errors, total))
        })
        .await?;
    Ok(axum::Json(serde_json::json!({
        "run": run,
        "errors": errors,
        "errors_total": total,
        "errors_limit": limit,
        "errors_offset": offset,
    }))
    .into_response())
}

/// Every rejected row of a run as CSV, read from the store a chunk at a
/// time while it is sent, so a run with a million of them never sits in
/// memory.
async fn errors_csv(
    State(console): State<Console>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = console.read(move |store, _| find_run(store, &id)).await?;
    let store = console.connection().await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let execution_id = run.execution_id.clone();
    tokio::task::spawn_blocking(move || {
        let header = csv_chunk(&[], true);
        if tx.blocking_send(Ok(header)).is_err() {
            return;
        }
        let result = store.each_row_error_chunk(&execution_id, CSV_CHUNK, |rows| {
            tx.blocking_send(Ok(csv_chunk(&rows, false))).is_ok()
        });
        if let Err(e) = result {
            tracing::warn!("web console: rejected rows of {execution_id}: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let file_name = format!("rejected-rows-{}.csv", run.execution_id);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

impl Console {
    /// An upload's answer while its run is not in the history: queued, or
    /// why it never became a run. `None` once the history has it.
    async fn pending_run(&self, id: &str) -> Result<Option<Response>, ApiError> {
        let body = match self.pending_state(id).await? {
            None => return Ok(None),
            Some(Pending::Queued { integration }) => serde_json::json!({
                "execution_id": id, "integration": integration, "status": "queued",
            }),
            Some(Pending::Failed {
                integration,
                message,
            }) => serde_json::json!({
                "execution_id": id, "integration": integration, "status": "error", "message": message,
            }),
        };
        Ok(Some(axum::Json(body).into_response()))
    }

    /// What became of an execution promised before its run started, while
    /// the history does not have it: queued, or why it never became a run.
    pub(super) async fn pending_state(&self, id: &str) -> Result<Option<Pending>, ApiError> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        let Some(pending) = pending else {
            return Ok(None);
        };
        let wanted = id.to_string();
        if self
            .read(move |store, _| Ok(store.find_run(&wanted)?))
            .await?
            .is_some()
        {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            return Ok(None);
        }
        Ok(Some(pending))
    }

    pub(super) fn set_pending(&self, id: &str, state: Pending) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), state);
    }
}

/// `POST /api/integrations/NAME/sync`: sync the integration's new files now,
/// on the daemon's worker, after the batch in flight.
async fn sync_now(
    State(console): State<Console>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    queue_sync(&console, &name)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "integration": name, "status": "queued" })),
    )
        .into_response())
}

/// Queues a sync of `name`'s new files on the writer.
pub(super) fn queue_sync(console: &Console, name: &str) -> Result<(), ApiError> {
    known_integration(&console.config, name)?;
    let integration = name.to_string();
    console.submit(Box::new(move |store, config| {
        let selection = crate::sync::Selection {
            integrations: vec![integration.clone()],
            dates: None,
            latest_only: false,
        };
        let opts = crate::pipeline::RunOptions {
            force: false,
            dry_run: false,
            trigger: crate::pipeline::Trigger::Manual,
            explicit: false,
            folder_min_age: std::time::Duration::ZERO,
            execution_id: None,
        };
        tracing::info!(integration, "sync asked for in the web console");
        if let Err(e) = crate::sync::run(store, config, &selection, opts, |_| {}) {
            tracing::error!(integration, "sync failed: {e}");
        }
    }))
}

/// `POST /api/integrations/NAME/files?name=FILE`: the request body is a
/// file for the integration, ingested as `dropsync ingest` would. It is
/// streamed to disk (never held in memory) up to `max_upload_bytes`, then
/// queued; the answer (202) carries the execution id its run will have.
async fn upload(
    State(console): State<Console>,
    Path(integration): Path<String>,
    Query(params): Params,
    body: Body,
) -> Result<Response, ApiError> {
    known_integration(&console.config, &integration)?;
    let name = upload_name(params.get("name").map(String::as_str))?;
    let id = accept_upload(&console, &integration, &name, body.into_data_stream()).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({
            "execution_id": id,
            "integration": integration,
            "status": "queued",
            "status_url": format!("/api/executions/{id}"),
        })),
    )
        .into_response())
}

/// Streams an uploaded file named `name` (checked by `upload_name`) to
/// staging and queues its ingest; the execution id its run will have. The
/// API's raw body and the console's form both come through here.
pub(super) async fn accept_upload<E: std::fmt::Display>(
    console: &Console,
    integration: &str,
    name: &str,
    content: impl futures_util::Stream<Item = Result<Bytes, E>>,
) -> Result<String, ApiError> {
    known_integration(&console.config, integration)?;
    let execution_id = uuid::Uuid::now_v7();
    // The file keeps its own name (the pattern reads its business date from
    // it) inside a directory of the upload's own: the name, checked to be a
    // plain file name, is never a path.
    let dir = console
        .config
        .store
        .staging
        .join(".uploads")
        .join(execution_id.to_string());
    let path = dir.join(name);
    let written = receive(content, &dir, &path, console.max_upload_bytes).await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e);
    }
    let id = execution_id.to_string();
    console.set_pending(
        &id,
        Pending::Queued {
            integration: integration.to_string(),
        },
    );
    let pending = console.pending.clone();
    let (job_id, job_integration, name) = (id.clone(), integration.to_string(), name.to_string());
    let job_dir = dir.clone();
    let queued = console.submit(Box::new(move |store, config| {
        let opts = crate::pipeline::RunOptions {
            force: false,
            dry_run: false,
            trigger: crate::pipeline::Trigger::Ingest,
            explicit: true,
            folder_min_age: std::time::Duration::ZERO,
            execution_id: Some(execution_id),
        };
        let outcome = crate::sync::ingest(store, config, &job_integration, &path, opts);
        let failed = match outcome {
            Ok(crate::sync::FileOutcome::Ran(_)) => None,
            Ok(crate::sync::FileOutcome::Error { error, .. }) => Some(error),
            Err(e) => Some(e.to_string()),
        };
        if let Some(message) = failed {
            tracing::warn!(integration = job_integration, "upload {name}: {message}");
            pending.lock().unwrap_or_else(|p| p.into_inner()).insert(
                job_id,
                Pending::Failed {
                    integration: job_integration,
                    message,
                },
            );
        }
        let _ = std::fs::remove_dir_all(&job_dir);
    }));
    if let Err(e) = queued {
        console
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e);
    }
    Ok(id)
}

/// The uploaded file's name: a plain file name, or a clear refusal.
pub(super) fn upload_name(name: Option<&str>) -> Result<String, ApiError> {
    let name = name.map(str::trim).unwrap_or_default();
    let plain = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ' ' | '+'));
    if !plain {
        return Err(ApiError::bad_request(
            "invalid_file_name",
            format!(
                "name: `{name}` is not a plain file name (letters, digits, `.`, `_`, `-`; no path, not starting with `.`); send ?name=accounts_20261103.csv"
            ),
        ));
    }
    Ok(name.to_string())
}

/// Streams `content` into `path` a chunk at a time, refusing an empty file
/// and one over `limit`.
async fn receive<E: std::fmt::Display>(
    content: impl futures_util::Stream<Item = Result<Bytes, E>>,
    dir: &std::path::Path,
    path: &std::path::Path,
    limit: u64,
) -> Result<(), ApiError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| ApiError::internal(format!("cannot store the upload: {e}"));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = std::pin::pin!(content);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("upload_interrupted", format!("the upload stopped: {e}"))
        })?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "upload_too_large",
                message: format!("the file is larger than max_upload_bytes ({limit} bytes)"),
            });
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    if size == 0 {
        return Err(ApiError::bad_request(
            "empty_upload",
            "the upload is empty: send a file with something in it",
        ));
    }
    file.sync_all().await.map_err(io)?;
    Ok(())
}

pub(super) fn known_integration(config: &Config, name: &str) -> Result<(), ApiError> {
    config
        .integration(name)
        .map(drop)
        .map_err(|message| ApiError::not_found("integration_not_found", message))
}

fn csv_chunk(rows: &[RowError], with_header: bool) -> Bytes {
    let mut out = csv::Writer::from_writer(Vec::new());
    if with_header {
        let _ = out.write_record(["line", "key", "field", "message", "row"]);
    }
    for row in rows {
        let line = row.line.to_string();
        let _ = out.write_record([
            line.as_str(),
            &spreadsheet_safe(row.key.as_deref().unwrap_or_default()),
            &spreadsheet_safe(row.field.as_deref().unwrap_or_default()),
            &spreadsheet_safe(&row.message),
            &spreadsheet_safe(&row.raw),
        ]);
    }
    Bytes::from(out.into_inner().unwrap_or_default())
}

/// The run with execution id `id`, or a 404 that says so; an id that
/// cannot be one (execution ids are letters, digits, `-` and `_`) is a 400.
pub(super) fn find_run(store: &Store, id: &str) -> Result<RunRecord, ApiError> {
    run_id(id)?;
    store.find_run(id)?.ok_or_else(|| {
        ApiError::not_found(
            "run_not_found",
            format!("no run has the execution id `{id}`"),
        )
    })
}

/// `id` if it can be an execution id.
pub(super) fn run_id(id: &str) -> Result<&str, ApiError> {
    let plain = !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if plain {
        Ok(id)
    } else {
        let shown: String = id.chars().take(100).collect();
        Err(ApiError::bad_request(
            "invalid_run_id",
            format!(
                "`{shown}` is not an execution id (letters, digits, `-` and `_`, as `dropsync history` lists them)"
            ),
        ))
    }
}

/// The filter the query parameters `integration`, `status`, `from` and `to`
/// describe.
pub(super) fn run_filter(
    params: &HashMap<String, String>,
    config: &Config,
) -> Result<RunFilter, ApiError> {
    let given = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let integration = match given("integration") {
        Some(name) => {
            config
                .integration(name)
                .map_err(|message| ApiError::not_found("integration_not_found", message))?;
            Some(name.to_string())
        }
        None => None,
    };
    let status = given("status")
        .map(|s| s.parse::<RunStatus>())
        .transpose()
        .map_err(|message| ApiError::bad_request("invalid_status", format!("status: {message}")))?;
    let date = |name: &str| -> Result<Option<NaiveDate>, ApiError> {
        given(name)
            .map(crate::pipeline::parse_date)
            .transpose()
            .map_err(|message| ApiError::bad_request("invalid_date", format!("{name}: {message}")))
    };
    let (from, to) = (date("from")?, date("to")?);
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(ApiError::bad_request(
            "invalid_date",
            format!("from ({from}) is after to ({to})"),
        ));
    }
    Ok(RunFilter {
        integration,
        status,
        from,
        to,
    })
}

/// A page size and offset from the query, `default` rows unless asked.
pub(super) fn paging(
    params: &HashMap<String, String>,
    limit_name: &str,
    offset_name: &str,
    default: usize,
) -> Result<(usize, usize), ApiError> {
    let number = |name: &str| -> Result<Option<usize>, ApiError> {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_paging",
                        format!("{name}: `{v}` is not a whole number"),
                    )
                })
            })
            .transpose()
    };
    let limit = number(limit_name)?.unwrap_or(default);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_paging",
            format!("{limit_name} must be between 1 and {MAX_PAGE}"),
        ));
    }
    let offset = number(offset_name)?.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::bad_request(
            "invalid_paging",
            format!("{offset_name} must be at most {MAX_OFFSET}"),
        ));
    }
    Ok((limit, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised() {
        assert_eq!(spreadsheet_safe("=1+2"), "'=1+2");
        assert_eq!(spreadsheet_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("plain"), "plain");
    }
}
