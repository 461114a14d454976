//! Who may use the console, and what they may do.
//!
//! With no token configured (loopback only), everyone may do everything.
//! With one, every request shows a token: scripts as `Authorization:
//! Bearer TOKEN`, browsers as a session cookie the sign-in form sets. The
//! cookie holds a random session id, never the token; the session, and the
//! role of the token that opened it, live in this process only, so a
//! restart signs everyone out. A read-only token's sessions and requests
//! may look at everything and change nothing.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Form, FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;

use super::config::Role;
use super::{ApiError, Console};

/// The name of the cookie a signed-in browser carries.
const SESSION_COOKIE: &str = "dropsync_session";
/// How long a sign-in lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions kept at once; past it the oldest are forgotten, so a
/// flood of sign-ins cannot grow memory without end.
const MAX_SESSIONS: usize = 10_000;
/// Failed sign-ins one address may make within `FAILURE_WINDOW` before it
/// must wait.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Every failed sign-in is answered this late, so guessing is slow.
const FAILURE_DELAY: Duration = Duration::from_secs(1);

/// Who is asking: what they may do, and whether they signed in with a
/// token (so the pages offer to sign out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub role: Role,
    pub signed_in: bool,
}

impl Viewer {
    pub fn may_operate(self) -> bool {
        self.role == Role::Operate
    }
}

tokio::task_local! {
    /// The viewer of the request being answered, for the page frame and
    /// its buttons.
    static VIEWER: Viewer;
}

/// The viewer of the request being answered; outside a request (or on
/// the sign-in page) nobody signed in, who may do nothing.
pub fn viewer() -> Viewer {
    VIEWER.try_with(|v| *v).unwrap_or(Viewer {
        role: Role::Read,
        signed_in: false,
    })
}

/// The sessions browsers signed in with, and recent failed sign-ins.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    role: Role,
    expires: Instant,
}

impl Sessions {
    /// A new session for `role`; its id is 256 random bits.
    fn open(&self, role: Role) -> Result<String, ApiError> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ApiError::internal("no randomness for a session id"))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| s.expires > now);
        while open.len() >= MAX_SESSIONS {
            let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            open.remove(&oldest);
        }
        open.insert(
            id.clone(),
            Session {
                role,
                expires: now + SESSION_LIFETIME,
            },
        );
        Ok(id)
    }

    fn role_of(&self, id: &str) -> Option<Role> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.role)
    }

    fn close(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Whether `address` failed too often lately to try again now.
    fn locked_out(&self, address: IpAddr) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let recent = failures.entry(address).or_default();
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
        {
            recent.pop_front();
        }
        recent.len() >= MAX_FAILURES
    }

    fn failed(&self, address: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Forget addresses whose failures are all old, to bound memory.
        let now = Instant::now();
        failures.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.duration_since(*t) <= FAILURE_WINDOW)
        });
        failures.entry(address).or_default().push_back(now);
    }
}

pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

/// Every request passes here first. With tokens configured it must carry
/// one (or a session); a read-only one may only read. The viewer is then
/// known to the handler and the page it renders.
pub(super) async fn authorize(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Response {
    if !console.tokens.required() {
        let open = Viewer {
            role: Role::Operate,
            signed_in: false,
        };
        return VIEWER.scope(open, next.run(request)).await;
    }
    let path = request.uri().path();
    if path == "/login" || path.starts_with("/assets/") {
        return next.run(request).await;
    }
    let Some(role) = role_of(&console, request.headers()) else {
        if path.starts_with("/api/") {
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "this console needs a token: send `Authorization: Bearer TOKEN`".into(),
            }
            .into_response();
        }
        return to_login(request.uri());
    };
    let changes_something = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if role == Role::Read && changes_something && path != "/logout" {
        let refusal = ApiError {
            status: StatusCode::FORBIDDEN,
            code: "read_only",
            message: "this token is read-only: it can look at everything but not start syncs, uploads or re-runs".into(),
        };
        return if path.starts_with("/api/") {
            refusal.into_response()
        } else {
            super::pages::PageError::from(refusal).into_response()
        };
    }
    let viewer = Viewer {
        role,
        signed_in: true,
    };
    VIEWER.scope(viewer, next.run(request)).await
}

/// The role of the bearer token or session cookie `headers` carry.
fn role_of(console: &Console, headers: &HeaderMap) -> Option<Role> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(role) = bearer.and_then(|offered| console.tokens.role_of(offered.trim())) {
        return Some(role);
    }
    session_id(headers).and_then(|id| console.sessions.role_of(&id))
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

/// To the sign-in form, which brings the browser back here afterwards.
pub(super) fn to_login(uri: &Uri) -> Response {
    let back = uri.path_and_query().map_or("/", |p| p.as_str());
    Redirect::to(&format!("/login?next={}", super::pages::encode(back))).into_response()
}

/// Where to go after signing in: a path on this console, never another
/// site (`//host` or `https://host` would be one).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(serde::Deserialize)]
struct SignIn {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login_form(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let next = local_path(params.get("next").map(String::as_str));
    if !console.tokens.required() || role_of(&console, &headers).is_some() {
        return Redirect::to(&next).into_response();
    }
    sign_in_page(&next, None).into_response()
}

fn sign_in_page(next: &str, problem: Option<&str>) -> maud::Markup {
    super::pages::page(
        "Sign in",
        false,
        html! {
            section.signin {
                h1 { "Sign in" }
                p.muted { "This console asks for the access token its administrator configured." }
                @if let Some(problem) = problem {
                    p.problem role="alert" { (problem) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Access token" }
                    input #token type="password" name="token" required autofocus
                        autocomplete="current-password";
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// `POST /login`: a correct token opens a session and sets its cookie; a
/// wrong one is answered late, and an address that keeps failing waits.
/// The log says that a sign-in failed and from where, never what was sent.
async fn login(State(console): State<Console>, request: Request) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let Ok(Form(form)) = Form::<SignIn>::from_request(request, &()).await else {
        return (
            StatusCode::BAD_REQUEST,
            sign_in_page("/", Some("The sign-in form was not sent whole; try again.")),
        )
            .into_response();
    };
    let next = local_path(form.next.as_deref());
    if !console.tokens.required() {
        return Redirect::to(&next).into_response();
    }
    if console.sessions.locked_out(address) {
        tracing::warn!(%address, "sign-in refused: too many failed attempts");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, FAILURE_WINDOW.as_secs().to_string())],
            sign_in_page(
                &next,
                Some(
                    "Too many failed sign-ins from your address. Wait ten minutes, then try again.",
                ),
            ),
        )
            .into_response();
    }
    let Some(role) = console.tokens.role_of(form.token.trim()) else {
        console.sessions.failed(address);
        tracing::warn!(%address, "sign-in failed: wrong token");
        tokio::time::sleep(FAILURE_DELAY).await;
        return (
            StatusCode::UNAUTHORIZED,
            sign_in_page(&next, Some("That token is not right.")),
        )
            .into_response();
    };
    let id = match console.sessions.open(role) {
        Ok(id) => id,
        Err(e) => return super::pages::PageError::from(e).into_response(),
    };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if console.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    with_cookie(Redirect::to(&next).into_response(), &cookie)
}

/// `POST /logout`: forgets the session and clears the cookie.
async fn logout(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        console.sessions.close(&id);
    }
    let cookie = format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if console.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    with_cookie(Redirect::to("/login").into_response(), &cookie)
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    // A redirect after a form is a 303: the browser follows it with a GET.
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
}

/// The console's sessions, shared by every request.
pub(super) type SharedSessions = Arc<Sessions>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_signing_in() {
        assert_eq!(local_path(Some("/runs/x?q=1")), "/runs/x?q=1");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn sessions_are_random_and_closable() {
        let sessions = Sessions::default();
        let a = sessions.open(Role::Read).unwrap();
        let b = sessions.open(Role::Operate).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(sessions.role_of(&a), Some(Role::Read));
        assert_eq!(sessions.role_of(&b), Some(Role::Operate));
        sessions.close(&a);
        assert_eq!(sessions.role_of(&a), None);
    }

    #[test]
    fn an_address_that_keeps_failing_waits() {
        let sessions = Sessions::default();
        let address = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..MAX_FAILURES {
            assert!(!sessions.locked_out(address));
            sessions.failed(address);
        }
        assert!(sessions.locked_out(address));
        assert!(!sessions.locked_out(IpAddr::from([10, 0, 0, 2])));
    }
}
