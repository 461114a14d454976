//! The console's HTML pages, rendered on the server with maud (which
//! escapes every value it writes, so a rejected row holding `<script>` is
//! shown as text). One stylesheet and one small script, compiled into the
//! binary: no CDN, nothing fetched from elsewhere.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use super::api::{find_run, paging, run_filter};
use super::{ApiError, Console};
use crate::status::Card;
use crate::store::{RunPage, RunRecord, RunStatus};

const STYLE: &str = include_str!("assets/style.css");
const LIVE: &str = include_str!("assets/live.js");

pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/", get(overview))
        .route("/integrations/{name}", get(integration))
        .route("/runs/{id}", get(run))
        .route("/integrations/{name}/sync", post(sync_now))
        .route("/assets/style.css", get(|| asset(STYLE, "text/css")))
        .route("/assets/live.js", get(|| asset(LIVE, "text/javascript")))
}

async fn asset(text: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        text,
    )
        .into_response()
}

/// A page, or the same page saying what went wrong.
type PageResult = Result<Markup, PageError>;

pub(super) struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        let title = match e.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST => "That request cannot be answered",
            _ => "Something went wrong",
        };
        let body = page(
            title,
            false,
            html! {
                section.notice role="alert" {
                    h1 { (title) }
                    p { (e.message) }
                    p { a href="/" { "Back to the integrations" } }
                }
            },
        );
        (e.status, body).into_response()
    }
}

pub(super) fn not_found(path: &str) -> Response {
    PageError(ApiError::not_found(
        "not_found",
        format!("there is no page at {path}"),
    ))
    .into_response()
}

/// The frame every page shares. `live` pages refresh themselves while the
/// browser shows them.
pub(super) fn page(title: &str, live: bool, content: Markup) -> Markup {
    let viewer = super::auth::viewer();
    // A read-only viewer's buttons that would change something are hidden
    // (the stylesheet hides every POST form but signing out); the server
    // refuses such requests anyway.
    let read_only = viewer.signed_in && !viewer.may_operate();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · dropsync" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/live.js" defer {}
            }
            body class=[read_only.then_some("read-only")] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "dropsync" }
                    nav aria-label="Main" { a href="/" { "Integrations" } }
                    @if viewer.signed_in {
                        @if read_only { span.role { "read-only" } }
                        form.signout method="post" action="/logout" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main data-live=[live.then_some("5")] { (content) }
            }
        }
    }
}

async fn overview(State(console): State<Console>) -> PageResult {
    let cards = console
        .read(|store, config| {
            crate::status::cards(Some(store), config, chrono::Utc::now())
                .map_err(|e| ApiError::internal(e.to_string()))
        })
        .await?;
    let problems = cards.iter().filter(|c| c.freshness.is_problem()).count();
    Ok(page(
        "Integrations",
        true,
        html! {
            div.heading {
                h1 { "Integrations" }
                p.muted {
                    (cards.len()) " configured"
                    @if problems > 0 { " · " strong.bad { (problems) " need a look" } }
                }
            }
            @if cards.is_empty() {
                p { "No integration is configured yet." }
            }
            ul.cards #cards data-live-part {
                @for card in &cards { li { (card_view(card)) } }
            }
        },
    ))
}

fn card_view(card: &Card) -> Markup {
    let f = &card.freshness;
    html! {
        article.card {
            header {
                h2 { a href={ "/integrations/" (card.integration) } { (card.integration) } }
                (super::live::card_badge(&card.integration, card.last_run.as_ref().map(|r| r.status)))
            }
            dl.facts {
                dt { "Dataset" } dd { (card.dataset) " · " (card.mode) }
                dt { "Source" } dd.wrap { (card.source) }
                dt { "Schedule" }
                dd {
                    @match (&card.schedule, &card.next_run) {
                        (Some(s), Some(next)) => { (s) " · next " (time(next)) }
                        (Some(s), None) => { (s) " · never fires again" }
                        (None, _) => { "none (by hand or a watched folder)" }
                    }
                }
                @if f.expect.is_some() || f.is_problem() {
                    dt { "Freshness" }
                    dd {
                        span class={ "fresh fresh-" (f.state) } { (f.state) }
                        @if let Some(expect) = &f.expect { " · " (expect) }
                        @if let Some(late) = f.late_secs { " · late by " (crate::freshness::human_duration(late)) }
                    }
                }
            }
            @match &card.last_run {
                Some(r) => {
                    p.last {
                        "Last run " (time(&r.started_at.and_utc())) " (" (r.trigger) ")"
                        @if let Some(file) = &r.file_name { br; span.wrap { (file) } }
                    }
                    (counts(r))
                    @if let Some(m) = &r.message { p.message { (m) } }
                    p { a href={ "/runs/" (r.execution_id) } { "Open this run" } }
                }
                None => { p.last { "Never ran." } }
            }
            @if super::auth::viewer().may_operate() {
                form.actions method="post" action={ "/integrations/" (card.integration) "/sync" } {
                    button type="submit" { "Sync now" }
                }
            }
        }
    }
}

pub(super) fn status_badge(status: Option<RunStatus>) -> Markup {
    let (class, text) = match status {
        None => ("none", "never ran"),
        Some(RunStatus::Running) => ("running", "in progress"),
        Some(s) => (s.as_str(), s.as_str()),
    };
    html! { span class={ "badge badge-" (class) } { (text) } }
}

fn counts(r: &RunRecord) -> Markup {
    html! {
        ul.counts aria-label="Counts" {
            li { span { "rows" } strong { (r.input_rows) } }
            li { span { "applied" } strong { (r.success_rows) } }
            li class=[(r.error_rows > 0).then_some("bad")] { span { "rejected" } strong { (r.error_rows) } }
            li { span { "skipped" } strong { (r.skipped_rows) } }
            li { span { "inserted" } strong { "+" (r.inserted) } }
            li { span { "updated" } strong { "~" (r.updated) } }
            li { span { "deleted" } strong { "−" (r.deleted) } }
            @if r.subscribed > 0 || r.unsubscribed > 0 {
                li { span { "subscribed" } strong { (r.subscribed) } }
                li { span { "unsubscribed" } strong { (r.unsubscribed) } }
            }
        }
    }
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) } }
}

/// The "Sync now" button: queues the sync (the same as the API's), then
/// back to the integration's page, which shows the run as it goes.
async fn sync_now(
    State(console): State<Console>,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    super::api::queue_sync(&console, &name)?;
    Ok(Redirect::to(&format!("/integrations/{}", encode(&name))).into_response())
}

async fn integration(
    State(console): State<Console>,
    Path(name): Path<String>,
    Query(mut params): Query<HashMap<String, String>>,
) -> PageResult {
    params.insert("integration".into(), name.clone());
    let filter = run_filter(&params, &console.config)?;
    let (limit, offset) = paging(&params, "limit", "offset", 50)?;
    let wanted = name.clone();
    let (card, page_of_runs) = console
        .read(move |store, config| {
            // Only this integration's card: the others' would cost a few
            // queries each for nothing.
            let mut one = config.clone();
            one.integrations.retain(|name, _| *name == wanted);
            let card = crate::status::cards(Some(store), &one, chrono::Utc::now())
                .map_err(|e| ApiError::internal(e.to_string()))?
                .into_iter()
                .next();
            Ok((card, store.runs_page(&filter, limit, offset)?))
        })
        .await?;
    let chosen = |key: &str| params.get(key).cloned().unwrap_or_default();
    let status = chosen("status");
    Ok(page(
        &name,
        true,
        html! {
            nav.crumbs aria-label="Breadcrumb" { a href="/" { "Integrations" } " / " (name) }
            div #card data-live-part { @if let Some(card) = &card { (card_view(card)) } }
            // Only for those who may change something (the server refuses
            // the others anyway).
            @if super::auth::viewer().may_operate() {
                div.panels {
                    (super::upload::form(&name, console.max_upload_bytes))
                    (super::rerun::form(&name))
                }
            }
            h2 { "History" }
            form.filters method="get" action={ "/integrations/" (name) } {
                label { "Status "
                    select name="status" {
                        option value="" selected[status.is_empty()] { "any" }
                        @for s in ["running", "success", "partial", "failed", "skipped", "interrupted"] {
                            option value=(s) selected[status == s] { (s) }
                        }
                    }
                }
                label { "From " input type="date" name="from" value=(chosen("from")); }
                label { "To " input type="date" name="to" value=(chosen("to")); }
                button type="submit" { "Filter" }
            }
            div #history data-live-part {
                (runs_table(&page_of_runs))
                (pager(&format!("/integrations/{name}"), &params, "offset", page_of_runs.limit, page_of_runs.offset, page_of_runs.total))
            }
        },
    ))
}

fn runs_table(page: &RunPage) -> Markup {
    html! {
        @if page.runs.is_empty() {
            p.muted { "No run matches." }
        } @else {
            div.scroll {
                table.runs {
                    caption.visually-hidden { "Runs, newest first" }
                    thead { tr {
                        th scope="col" { "Started" } th scope="col" { "Date" } th scope="col" { "File" }
                        th scope="col" { "Status" } th.num scope="col" { "Rows" } th.num scope="col" { "Rejected" }
                        th.num scope="col" { "+ / ~ / −" }
                    } }
                    tbody {
                        @for r in &page.runs {
                            tr {
                                td { a href={ "/runs/" (r.execution_id) } { (r.started_at.format("%Y-%m-%d %H:%M:%S")) } }
                                td { @if let Some(d) = r.business_date { (d) } }
                                td.wrap { (r.file_name.as_deref().unwrap_or("-")) }
                                td { (status_badge(Some(r.status))) }
                                td.num { (r.input_rows) }
                                td.num { (r.error_rows) }
                                td.num { "+" (r.inserted) " ~" (r.updated) " −" (r.deleted) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Previous and next links that keep the other query parameters.
fn pager(
    path: &str,
    params: &HashMap<String, String>,
    offset_name: &str,
    limit: usize,
    offset: usize,
    total: u64,
) -> Markup {
    let link = |to: usize| {
        let mut query: Vec<(String, String)> = params
            .iter()
            .filter(|(k, v)| {
                k.as_str() != offset_name && k.as_str() != "integration" && !v.is_empty()
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        query.sort();
        query.push((offset_name.to_string(), to.to_string()));
        let text: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        format!("{path}?{}", text.join("&"))
    };
    let shown_to = (offset + limit).min(total as usize);
    html! {
        nav.pager aria-label="Pages" {
            span.muted { @if total == 0 { "none" } @else { (offset + 1) "–" (shown_to) " of " (total) } }
            @if offset > 0 { a href=(link(offset.saturating_sub(limit))) rel="prev" { "← Newer" } }
            @if (shown_to as u64) < total { a href=(link(offset + limit)) rel="next" { "Older →" } }
        }
    }
}

/// Percent-encodes a query value.
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn run(
    State(console): State<Console>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> PageResult {
    let (limit, offset) = paging(&params, "errors", "errors_offset", 50)?;
    let search = params.get("q").cloned().unwrap_or_default();
    if let Some(pending) = console.pending_state(&id).await? {
        return Ok(pending_view(&id, &pending));
    }
    let q = search.clone();
    let (run, errors, total) = console
        .read(move |store, _| {
            let run = find_run(store, &id)?;
            let (errors, total) = store.row_errors_page(
                &run.execution_id,
                Some(q.as_str()).filter(|s| !s.is_empty()),
                limit,
                offset,
            )?;
            Ok((run, errors, total))
        })
        .await?;
    let title = format!("Run {}", run.execution_id);
    Ok(page(
        &title,
        run.status == RunStatus::Running,
        html! {
            nav.crumbs aria-label="Breadcrumb" {
                a href="/" { "Integrations" } " / "
                a href={ "/integrations/" (run.integration) } { (run.integration) } " / run"
            }
            div.heading {
                h1 { "Run " code { (run.execution_id) } }
                (status_badge(Some(run.status)))
            }
            @if let Some(m) = &run.message { p.message { (m) } }
            (counts(&run))
            dl.facts.wide {
                dt { "File" } dd.wrap { (run.file_name.as_deref().unwrap_or("-")) }
                dt { "Business date" } dd { @if let Some(d) = run.business_date { (d) } @else { "-" } }
                dt { "Trigger" } dd { (run.trigger) @if run.forced { " (forced)" } }
                dt { "Dataset" } dd { (run.dataset) " · " (run.mode) }
                dt { "Started" } dd { (time(&run.started_at.and_utc())) }
                dt { "Finished" } dd { @if let Some(t) = run.completed_at { (time(&t.and_utc())) } @else { "not yet" } }
                @if let Some(f) = run.failure { dt { "Failure" } dd { (f.as_str()) ", attempt " (run.attempt) } }
                @if let Some(h) = &run.content_hash { dt { "Content" } dd.wrap { code { (h) } } }
            }
            h2 #rejected { "Rejected rows" }
            div.toolbar {
                form.filters method="get" action={ "/runs/" (run.execution_id) "#rejected" } role="search" {
                    label { "Search " input type="search" name="q" value=(search) placeholder="key, field, message or text"; }
                    button type="submit" { "Search" }
                }
                a.button href={ "/api/runs/" (run.execution_id) "/errors.csv" } download { "Download rejected rows as CSV" }
            }
            @if errors.is_empty() {
                p.muted { @if search.is_empty() { "No row was rejected." } @else { "No rejected row matches." } }
            } @else {
                div.scroll {
                    table.errors {
                        caption.visually-hidden { "Rejected rows, in file order" }
                        thead { tr {
                            th.num scope="col" { "Line" } th scope="col" { "Key" } th scope="col" { "Field" }
                            th scope="col" { "Message" } th scope="col" { "Row" }
                        } }
                        tbody {
                            @for e in &errors {
                                // The labels head each cell where a phone's
                                // width stacks the table (see the stylesheet).
                                tr {
                                    td.num data-label="Line" { (e.line) }
                                    td.wrap data-label="Key" { (e.key.as_deref().unwrap_or("")) }
                                    td data-label="Field" { (e.field.as_deref().unwrap_or("")) }
                                    td data-label="Message" { (e.message) }
                                    td data-label="Row" { code.raw { (e.raw) } }
                                }
                            }
                        }
                    }
                }
            }
            (pager(&format!("/runs/{}", run.execution_id), &params, "errors_offset", limit, offset, total))
        },
    ))
}

/// An execution whose run is not in the history: queued behind the batch
/// in flight (the page refreshes itself until the run shows), or why it
/// never became a run.
fn pending_view(id: &str, pending: &super::Pending) -> Markup {
    let (integration, failure) = match pending {
        super::Pending::Queued { integration } => (integration, None),
        super::Pending::Failed {
            integration,
            message,
        } => (integration, Some(message)),
    };
    page(
        &format!("Execution {id}"),
        failure.is_none(),
        html! {
            nav.crumbs aria-label="Breadcrumb" {
                a href="/" { "Integrations" } " / "
                a href={ "/integrations/" (encode(integration)) } { (integration) } " / run"
            }
            div.heading {
                h1 { "Run " code { (id) } }
                @match failure {
                    None => span.badge.badge-running data-live-execution=(id) role="status" { "queued" },
                    Some(_) => span.badge.badge-failed { "error" },
                }
            }
            @match failure {
                None => p.muted { "Waiting for its turn: runs go one at a time. This page updates by itself." },
                Some(message) => p.message role="alert" { (message) },
            }
        },
    )
}
