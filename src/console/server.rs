//! HTTPS serving: the TLS accept loop on the console's runtime, the
//! routes, and the checks every request passes (session, CSRF token).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tower::ServiceExt as _;

use super::auth::{Session, COOKIE};
use super::{api, pages, State};

/// The client's address, put on every request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Shared state as handlers take it.
pub type St = axum::extract::State<Arc<State>>;
/// The extractor of [`St`], for patterns.
pub use axum::extract::State as Ax;

/// How long a client has for its TLS handshake and request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `stop` fires.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("console: {e}; no console");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(state.clone());
    let sampler = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(super::dashboard::SAMPLE_EVERY);
        loop {
            every.tick().await;
            sampler
                .samples
                .sample(sampler.app.stats(), SystemTime::now());
        }
    });
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let acceptor = acceptor.clone();
                    let app = app.clone();
                    tokio::spawn(async move {
                        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            // Plain HTTP, a scanner, a client that does not trust us yet.
                            _ => return,
                        };
                        let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(Peer(peer));
                            app.clone().oneshot(req)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HANDSHAKE_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(e) => {
                    log::warn!("console: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    set(h, "strict-transport-security", "max-age=31536000");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    resp
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/policies") }))
        .route("/login", get(pages::login_page).post(pages::login_submit))
        .route("/logout", post(pages::logout))
        .route("/policies", get(pages::policies))
        .route(
            "/policies/new",
            get(pages::step1_new).post(pages::step1_create),
        )
        .route(
            "/policies/{id}/edit",
            get(pages::step1_edit).post(pages::step1_update),
        )
        .route(
            "/policies/{id}/scopes",
            get(pages::step2).post(pages::step2_submit),
        )
        .route("/policies/{id}/review", get(pages::step3))
        .route(
            "/policies/{id}/settings",
            get(pages::settings).post(pages::settings_submit),
        )
        .route("/policies/{id}/enable", post(pages::enable))
        .route("/policies/{id}/disable", post(pages::disable))
        .route(
            "/policies/{id}/delete",
            get(pages::delete_confirm).post(pages::delete),
        )
        .route("/policies/{id}/certificate", get(pages::certificate))
        .route("/logs", get(pages::logs))
        .route("/logs/export", get(pages::logs_export))
        .route("/dashboard", get(pages::dashboard))
        .route("/assets/console.css", get(pages::css))
        .route("/assets/console.js", get(pages::js))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/login", post(api::login))
        .route("/api/v1/logout", post(api::logout))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/policies", get(api::list).post(api::create))
        .route(
            "/api/v1/policies/{id}",
            get(api::show).put(api::replace).delete(api::remove),
        )
        .route("/api/v1/policies/{id}/enable", post(api::enable))
        .route("/api/v1/policies/{id}/disable", post(api::disable))
        .route("/api/v1/policies/{id}/certificate", get(api::certificate))
        .route("/api/v1/ca/trial", post(api::trial))
        .route("/api/v1/logs", get(api::logs))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The session token of the request's cookie.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The request's live session.
pub fn session(state: &State, headers: &HeaderMap) -> Option<(String, Session)> {
    let token = cookie_token(headers)?;
    let s = state.auth.session(&token)?;
    Some((token, s))
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        super::auth::SESSION_LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// Whether `given` is the session's CSRF token (constant time).
pub fn csrf_ok(session: &Session, given: Option<&str>) -> bool {
    given.is_some_and(|g| {
        aws_lc_rs::constant_time::verify_slices_are_equal(g.as_bytes(), session.csrf.as_bytes())
            .is_ok()
    })
}

/// `{"errors":[{"message": ...}]}` with `status`.
pub fn api_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "errors": [ { "message": message.into() } ] })),
    )
        .into_response()
}
