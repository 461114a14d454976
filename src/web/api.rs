//! The JSON API under `/api`: the same records `status --json`,
//! `history --json` and `show --json` print, paged, and a run's rejected
//! rows as CSV.

use std::collections::HashMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDate;

use super::{ApiError, Console};
use crate::config::Config;
use crate::schema::RowError;
use crate::store::{RunFilter, RunRecord, RunStatus, Store};

pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/api/integrations", get(integrations))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/errors.csv", get(errors_csv))
}

/// Most runs or rejected rows one page holds.
pub(super) const MAX_PAGE: usize = 1000;
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
    let store = console.connection()?;
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

/// A cell a spreadsheet would run as a formula (`=HYPERLINK(...)` in a
/// rejected row's text) gets a leading `'`, so opening the download runs
/// nothing.
pub(super) fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// The run with execution id `id`, or a 404 that says so.
pub(super) fn find_run(store: &Store, id: &str) -> Result<RunRecord, ApiError> {
    store.find_run(id)?.ok_or_else(|| {
        ApiError::not_found(
            "run_not_found",
            format!("no run has the execution id `{id}`"),
        )
    })
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
    Ok((limit, number(offset_name)?.unwrap_or(0)))
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
