//! The web console and its HTTP API: every integration as a card, its run
//! history, each run's rejected rows (also as CSV), served by the daemon (or
//! `dropsync web`) on `[web] listen`.
//!
//! Reads go through their own DuckDB connections, cloned from the writer's
//! database: DuckDB gives each its own snapshot, so a page never waits for a
//! batch being applied and never shows half of one.

mod api;
mod auth;
mod config;
mod live;
mod pages;
mod rerun;
mod upload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use config::{AccessToken, AccessTokens, Role, WebConfig};

use crate::config::Config;
use crate::store::{Store, StoreError};

/// What every handler shares.
#[derive(Clone)]
pub struct Console {
    config: Arc<Config>,
    /// The connection read connections are cloned from; held only while
    /// cloning.
    reads: Arc<Mutex<Store>>,
    /// The tokens requests must show; none configured, none asked for.
    tokens: AccessTokens,
    /// Browsers signed in with a token.
    sessions: auth::SharedSessions,
    /// Whether the session cookie is marked `Secure` (`[web] public_url`
    /// is https).
    secure_cookies: bool,
    /// Hands work to the one thread that writes the store.
    queue: Option<Arc<dyn Fn(Job) -> bool + Send + Sync>>,
    /// Uploads accepted and not yet recorded as runs, by execution id.
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    max_upload_bytes: u64,
}

/// Work for the thread that writes the store.
pub type Job = Box<dyn FnOnce(&Store, &Config) + Send>;

/// An upload whose run is not in the history (yet).
#[derive(Debug, Clone)]
enum Pending {
    Queued {
        integration: String,
    },
    /// It never became a run: the message says why.
    Failed {
        integration: String,
        message: String,
    },
}

impl Console {
    /// A console over `reads`, a read connection to the daemon's store.
    pub fn new(config: Config, reads: Store, tokens: AccessTokens) -> Console {
        let web = config.web.clone().unwrap_or_default();
        Console {
            max_upload_bytes: web.max_upload_bytes.get(),
            secure_cookies: web.served_over_https(),
            config: Arc::new(config),
            reads: Arc::new(Mutex::new(reads)),
            tokens,
            sessions: Arc::default(),
            queue: None,
            pending: Arc::default(),
        }
    }

    /// The console, able to start runs through `submit`.
    pub fn with_queue(mut self, submit: impl Fn(Job) -> bool + Send + Sync + 'static) -> Console {
        self.queue = Some(Arc::new(submit));
        self
    }

    /// Queues `job` for the writer; an error when the daemon is stopping.
    fn submit(&self, job: Job) -> Result<(), ApiError> {
        match &self.queue {
            Some(submit) if submit(job) => Ok(()),
            _ => Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "stopping",
                message: "the daemon is stopping; nothing more is queued".into(),
            }),
        }
    }

    /// A connection of its own for one request, so no request waits for
    /// another's query. Opened off the async threads, as everything that
    /// touches the store is: a PostgreSQL session connects and answers by
    /// blocking, which an async thread must never do.
    async fn connection(&self) -> Result<Store, ApiError> {
        let reads = self.reads.clone();
        tokio::task::spawn_blocking(move || open_connection(&reads))
            .await
            .map_err(|_| ApiError::internal("the request stopped before it was answered"))?
    }

    /// Runs `read` on a connection of its own, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store, &Config) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let reads = self.reads.clone();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || read(&open_connection(&reads)?, &config))
            .await
            .map_err(|_| ApiError::internal("the request stopped before it was answered"))?
    }
}

/// A new connection to the store `reads` is connected to.
fn open_connection(reads: &Mutex<Store>) -> Result<Store, ApiError> {
    let base = reads.lock().unwrap_or_else(|p| p.into_inner());
    base.reader().map_err(ApiError::store)
}

/// Every route of the console and the API.
pub fn router(console: Console) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .merge(auth::routes())
        .merge(rerun::routes())
        .merge(live::routes())
        .merge(upload::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::authorize,
        ))
        .layer(axum::middleware::from_fn(same_site_only))
        .layer(axum::middleware::from_fn(uniform_errors))
        .with_state(console)
}

/// What axum answers on its own (a path or query it cannot read, a method
/// a route does not take) comes as plain text; it becomes the console's
/// own: JSON with a stable code under `/api/`, an HTML page elsewhere.
async fn uniform_errors(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let typed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json") || t.starts_with("text/html"));
    if typed {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let said = String::from_utf8_lossy(&body).trim().to_string();
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this address does not take that method".to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request is too large".to_string()),
        s if s.is_client_error() && !said.is_empty() => ("bad_request", said),
        s if s.is_client_error() => ("bad_request", "the request cannot be read".to_string()),
        _ => (
            "internal",
            "the console could not answer this request; its log says why".to_string(),
        ),
    };
    let error = ApiError {
        status,
        code,
        message,
    };
    if api {
        error.into_response()
    } else {
        pages::PageError::from(error).into_response()
    }
}

/// With `[web]` configured: the console over a read connection to `store`,
/// and its address, bound now so a taken port fails the start with a clear
/// message. The error names the token's variable or file, never its value.
pub fn bind(
    config: &Config,
    store: &Store,
) -> Result<Option<(std::net::TcpListener, Console)>, String> {
    let Some(web) = &config.web else {
        return Ok(None);
    };
    let tokens = web.tokens()?;
    let listener = std::net::TcpListener::bind(web.listen)
        .map_err(|e| format!("[web] cannot listen on {}: {e}", web.listen))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("[web] cannot listen on {}: {e}", web.listen))?;
    let reads = store.reader().map_err(|e| e.to_string())?;
    tracing::info!(
        address = %listener.local_addr().unwrap_or(web.listen),
        token = tokens.required(),
        "web console listening"
    );
    Ok(Some((
        listener,
        Console::new(config.clone(), reads, tokens),
    )))
}

/// Serves the console on `listener` until the task is dropped.
pub async fn serve(listener: std::net::TcpListener, console: Console) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the web console cannot start: {e}");
            return;
        }
    };
    // The peer's address lets failed sign-ins be counted per address.
    let service = router(console).into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, service).await {
        tracing::error!("the web console stopped: {e}");
    }
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    if path.starts_with("/api/") {
        ApiError::not_found("not_found", format!("no such endpoint: {path}")).into_response()
    } else {
        pages::not_found(path)
    }
}

/// A request that changes something must not come from another site's
/// page: a browser says where a request comes from (`Sec-Fetch-Site`,
/// `Origin`), and one from elsewhere is refused. Scripts (curl) send
/// neither and are let through, to the token check.
async fn same_site_only(request: Request, next: Next) -> Response {
    use axum::http::Method;
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    let cross_site = match text("sec-fetch-site") {
        Some(site) => !matches!(site, "same-origin" | "none"),
        None => match (text("origin"), text("host")) {
            (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
            (Some(_), None) => true,
            _ => false,
        },
    };
    if cross_site {
        return ApiError {
            status: StatusCode::FORBIDDEN,
            code: "cross_site",
            message: "a request from another site's page cannot change anything here".into(),
        }
        .into_response();
    }
    next.run(request).await
}

/// An answer that is not what was asked for: JSON with a stable code for
/// scripts and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code,
            message: message.into(),
        }
    }

    fn store(e: StoreError) -> ApiError {
        tracing::warn!("web console: {e}");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "store_unavailable",
            message: e.to_string(),
        }
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::store(e)
    }
}
