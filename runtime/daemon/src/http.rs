//! The daemon's HTTP server: health, readiness, metrics and a read-only view
//! of its status and last plan.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `ok` while the process serves at all |
//! | `GET /readyz` | 200 `ready` once the configuration is loaded and the last AWS contact succeeded, else 503 and a one-line reason |
//! | `GET /metrics` | [`Metrics::encode`], Prometheus text format 0.0.4 |
//! | `GET /v1/status` | the daemon's status document (JSON) |
//! | `GET /v1/plan` | the last plan, the same JSON as `engine check --format json`; 404 before the first run |
//!
//! Nothing else is served: other paths are 404, other methods 405 (`HEAD`
//! is answered like `GET`, without a body). When a token is configured, the
//! `/v1/*` routes require `Authorization: Bearer <token>` and answer 401 with
//! `WWW-Authenticate: Bearer` otherwise; the probes and `/metrics` stay open
//! (they reveal no user, key or plan).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, Metrics};

/// How long [`serve`] lets in-flight requests finish after its shutdown
/// token is cancelled before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Largest token file [`read_token_file`] reads.
const MAX_TOKEN_FILE: u64 = 4096;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// What the HTTP server shows, updated by the daemon.
#[derive(Debug)]
pub struct Shared {
    pub metrics: Metrics,
    /// JSON text of GET /v1/status, replaced by the daemon whenever it changes.
    pub status: RwLock<String>,
    /// JSON text of the last plan (same document as `engine check --format json`), None before the first run.
    pub plan: RwLock<Option<String>>,
    /// Configuration loaded (set once at start).
    pub config_loaded: AtomicBool,
    /// Last AWS contact succeeded.
    pub aws_ok: AtomicBool,
    /// What the events queue consumer reports, for the status document.
    pub events: std::sync::Mutex<crate::events::EventsStatus>,
    /// Told when `events` changed, so the status is published again.
    pub events_changed: tokio::sync::Notify,
}

impl Shared {
    /// Not ready, status `{}`, no plan.
    pub fn new(metrics: Metrics) -> Self {
        Shared {
            metrics,
            status: RwLock::new("{}".to_owned()),
            plan: RwLock::new(None),
            config_loaded: AtomicBool::new(false),
            aws_ok: AtomicBool::new(false),
            events: std::sync::Mutex::new(crate::events::EventsStatus::default()),
            events_changed: tokio::sync::Notify::new(),
        }
    }

    /// Replaces the JSON of `GET /v1/status`.
    pub fn set_status(&self, json: String) {
        *self.status.write().unwrap_or_else(|e| e.into_inner()) = json;
    }

    /// Replaces the JSON of `GET /v1/plan`.
    pub fn set_plan(&self, json: String) {
        *self.plan.write().unwrap_or_else(|e| e.into_inner()) = Some(json);
    }
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    token: Option<Arc<str>>,
}

/// The routes described in the module documentation. `token`: when `Some`,
/// the bearer token `/v1/*` requires.
pub fn router(shared: Arc<Shared>, token: Option<String>) -> Router {
    let state = AppState {
        shared,
        token: token.map(Arc::from),
    };
    let v1 = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/plan", get(plan))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(v1)
        .fallback(not_found)
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled. Then it
/// stops accepting, lets requests in flight finish, and returns; after
/// [`SHUTDOWN_GRACE`] it returns even if a connection is still open.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    token: Option<String>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(shared, token);
    let signal = shutdown.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { signal.cancelled_owned().await })
        .into_future();
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        biased;
        result = server => result,
        () = deadline => Ok(()),
    }
}

/// Whether `addr` is a loopback address (127.0.0.0/8, ::1, or an
/// IPv4-mapped loopback address).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Reads a bearer token from `path`: surrounding whitespace trimmed. Refuses
/// a missing or unreadable file, an empty token, a token with spaces or
/// control characters, and, on Unix, a file that group or others may read or
/// write (the error says so; `chmod 600` it).
pub fn read_token_file(path: &Path) -> Result<String, String> {
    use std::io::Read;

    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open token file {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat token file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("token file {shown} is not a regular file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "token file {shown} is readable or writable by group or others (mode {mode:04o}); \
                 restrict it with `chmod 600 {shown}`"
            ));
        }
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!(
            "token file {shown} is larger than {MAX_TOKEN_FILE} bytes"
        ));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("token file {shown} is empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "token in {shown} must be printable ASCII without spaces"
        ));
    }
    Ok(token.to_owned())
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT)], body).into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok")
}

async fn readyz(State(state): State<AppState>) -> Response {
    let config = state.shared.config_loaded.load(Ordering::Acquire);
    let aws = state.shared.aws_ok.load(Ordering::Acquire);
    match (config, aws) {
        (true, true) => text(StatusCode::OK, "ready"),
        (false, true) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: configuration not loaded",
        ),
        (true, false) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: last AWS contact failed",
        ),
        (false, false) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: configuration not loaded; last AWS contact failed",
        ),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.shared.metrics.encode(),
    )
        .into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    let body = state
        .shared
        .status
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    json(StatusCode::OK, body)
}

async fn plan(State(state): State<AppState>) -> Response {
    let body = state
        .shared
        .plan
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match body {
        Some(body) => json(StatusCode::OK, body),
        None => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"no run yet"}"#.to_owned(),
        ),
    }
}

async fn not_found(_uri: Uri) -> Response {
    text(StatusCode::NOT_FOUND, "not found")
}

/// Middleware of the `/v1/*` routes: the bearer token, when one is set.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.token.as_deref() else {
        return next.run(request).await;
    };
    match bearer(request.headers()) {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        given => {
            let challenge = if given.is_some() {
                r#"Bearer error="invalid_token""#
            } else {
                "Bearer"
            };
            let mut response = json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"unauthorized"}"#.to_owned(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            response
        }
    }
}

/// The credentials of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive), if there is exactly one such header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(credentials.trim())
}

/// Compares in time that depends only on the length of `expected`.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn bearer_parses() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer(&h), None);
    }
}
