//! The web console and its HTTP API: every integration as a card, its run
//! history, each run's rejected rows (also as CSV), served by the daemon (or
//! `dropsync web`) on `[web] listen`.
//!
//! Reads go through their own DuckDB connections, cloned from the writer's
//! database: DuckDB gives each its own snapshot, so a page never waits for a
//! batch being applied and never shows half of one.

mod api;
mod config;
mod pages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use config::{AccessToken, WebConfig};

use crate::config::Config;
use crate::store::{Store, StoreError};

/// What every handler shares.
#[derive(Clone)]
pub struct Console {
    config: Arc<Config>,
    /// The connection read connections are cloned from; held only while
    /// cloning.
    reads: Arc<Mutex<Store>>,
    token: Option<AccessToken>,
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

/// The name of the cookie a signed-in browser carries.
const SESSION_COOKIE: &str = "dropsync_session";

impl Console {
    /// A console over `reads`, a read connection to the daemon's store.
    pub fn new(config: Config, reads: Store, token: Option<AccessToken>) -> Console {
        Console {
            max_upload_bytes: config
                .web
                .as_ref()
                .map_or(WebConfig::default().max_upload_bytes, |w| {
                    w.max_upload_bytes
                }),
            config: Arc::new(config),
            reads: Arc::new(Mutex::new(reads)),
            token,
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
    /// another's query.
    fn connection(&self) -> Result<Store, ApiError> {
        let base = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        base.reader().map_err(ApiError::store)
    }

    /// Runs `read` on a connection of its own, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store, &Config) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.connection()?;
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || read(&store, &config))
            .await
            .map_err(|_| ApiError::internal("the request stopped before it was answered"))?
    }
}

/// Every route of the console and the API.
pub fn router(console: Console) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            require_token,
        ))
        .layer(axum::middleware::from_fn(same_site_only))
        .with_state(console)
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
    let token = web.token()?;
    let listener = std::net::TcpListener::bind(web.listen)
        .map_err(|e| format!("[web] cannot listen on {}: {e}", web.listen))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("[web] cannot listen on {}: {e}", web.listen))?;
    let reads = store.reader().map_err(|e| e.to_string())?;
    tracing::info!(
        address = %listener.local_addr().unwrap_or(web.listen),
        token = token.is_some(),
        "web console listening"
    );
    Ok(Some((listener, Console::new(config.clone(), reads, token))))
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
    if let Err(e) = axum::serve(listener, router(console)).await {
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

/// With a token configured, every request but the sign-in page and the
/// stylesheet must carry it: the API as `Authorization: Bearer TOKEN`, a
/// browser as the session cookie the sign-in form sets.
async fn require_token(State(console): State<Console>, request: Request, next: Next) -> Response {
    let Some(token) = &console.token else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/login" || path.starts_with("/assets/") {
        return next.run(request).await;
    }
    if carries_token(request.headers(), token) {
        return next.run(request).await;
    }
    if path.starts_with("/api/") {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "this console needs a token: send `Authorization: Bearer TOKEN`".into(),
        }
        .into_response()
    } else {
        pages::to_login(request.uri())
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

fn carries_token(headers: &HeaderMap, token: &AccessToken) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|offered| token.matches(offered.trim())) {
        return true;
    }
    let session = token.session_value();
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == SESSION_COOKIE && value == session)
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
