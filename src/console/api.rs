//! The JSON API (`/api/v1/...`, described by `openapi.json`), and the
//! views of policies and certificates the pages share with it.
// Handlers and their helpers answer with an HTTP response on either side of
// a Result (a refusal is a page or a JSON error); boxing it would only add
// an allocation to the refusal path.
#![allow(clippy::result_large_err)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::auth::{LoginError, Session};
use super::change::{self, ChangeError, Committed, Edit, Problem};
use super::records::{self, LogParams, LogQuery};
use super::server::{self, api_error, Ax, Peer, St};
use super::State;
use crate::config::{limits, Config};
use crate::pki::{CaSummary, PolicyCa};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A policy as the list shows it.
#[derive(Debug)]
pub struct PolicyView {
    /// The `[[policy]]` table as JSON (keys as in the file).
    pub json: Value,
    /// Validated id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Whether it selects connections.
    pub enabled: bool,
    /// Its quota and its scopes' (id, quota).
    pub quota: u64,
    /// Scope ids and quotas.
    pub scopes: Vec<(String, u64)>,
    /// Its CA, or why it does not load.
    pub ca: Result<CaSummary, String>,
}

/// Every policy of the file, as it is now.
#[derive(Debug)]
pub struct Overview {
    /// The validated file.
    pub config: Config,
    /// Its policies in file order.
    pub policies: Vec<PolicyView>,
    /// Quota of all policies.
    pub total: u64,
}

/// Reads the file and each policy's CA.
pub fn overview(state: &State) -> Result<Overview, ChangeError> {
    let config = state.config()?;
    let doc = crate::control::edit::load(&state.config_path)?;
    let now = SystemTime::now();
    let policies = config
        .policies
        .iter()
        .map(|p| PolicyView {
            json: change::policy_json(&doc, &p.id),
            id: p.id.to_string(),
            name: p.name.clone(),
            description: p.description.clone(),
            enabled: p.enabled,
            quota: p.quota(),
            scopes: p
                .scopes
                .iter()
                .map(|s| (s.id.to_string(), s.quota()))
                .collect(),
            ca: PolicyCa::load(&p.ca_cert, &p.ca_key, &p.ca_chain, now)
                .map(|c| c.summary())
                .map_err(|e| e.to_string()),
        })
        .collect();
    let total = config.quota();
    Ok(Overview {
        config,
        policies,
        total,
    })
}

fn view_json(p: &PolicyView) -> Value {
    let mut v = p.json.clone();
    v["quota"] = json!(p.quota);
    v["ca"] = match &p.ca {
        Ok(s) => json!({
            "subject": s.subject, "key_type": s.key_type, "not_before": s.not_before,
            "not_after": s.not_after, "days_left": s.days_left, "warnings": s.warnings,
            "reminder": s.days_left < 365,
        }),
        Err(e) => json!({ "error": e }),
    };
    v
}

/// The response of a failed change.
pub fn change_error(e: ChangeError) -> Response {
    let (status, errors) = match e {
        ChangeError::NotFound(m) => (StatusCode::NOT_FOUND, json!([{ "message": m }])),
        ChangeError::Conflict(m) => (StatusCode::CONFLICT, json!([{ "message": m }])),
        ChangeError::Io(m) => (StatusCode::INTERNAL_SERVER_ERROR, json!([{ "message": m }])),
        ChangeError::Invalid(p) => (StatusCode::BAD_REQUEST, json!(p)),
    };
    (status, Json(json!({ "errors": errors }))).into_response()
}

/// The session of an API request; with `csrf`, also its `X-CSRF-Token`.
fn authed(state: &State, headers: &HeaderMap, csrf: bool) -> Result<Session, Response> {
    let Some((_, s)) = server::session(state, headers) else {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "not logged in: POST /api/v1/login first",
        ));
    };
    if csrf {
        let given = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if !server::csrf_ok(&s, given) {
            return Err(api_error(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token header (the csrf_token of the login answer)",
            ));
        }
    }
    Ok(s)
}

fn json_body(body: &Bytes) -> Result<Value, Response> {
    if body.len() > change::MAX_BODY {
        return Err(api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", change::MAX_BODY),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })
}

fn committed(status: StatusCode, c: Committed, policy: Value) -> Response {
    (
        status,
        Json(json!({ "policy": policy, "reloaded": c.reloaded, "message": c.message })),
    )
        .into_response()
}

type R = Result<Response, Response>;

// Handlers that take no body still extract it (`_body: Bytes`): a request
// body left unread makes hyper close the connection after the answer, and a
// client reusing it (keep-alive) then sees it reset.

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Checks a login from `peer`; the session cookie and CSRF token, or the refusal.
pub fn do_login(state: &State, peer: &Peer, password: &str) -> Result<(String, Session), Response> {
    let Some(console) = state.console_config() else {
        return Err(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no [console] section",
        ));
    };
    match state.auth.login(&console, peer.0.ip(), password) {
        Ok(ok) => {
            state
                .audit
                .record(peer.0.ip(), "login", "admin", Value::Null, Value::Null);
            Ok(ok)
        }
        Err(LoginError::Wrong) => {
            state.audit.record(
                peer.0.ip(),
                "login.failed",
                "admin",
                Value::Null,
                Value::Null,
            );
            Err(api_error(StatusCode::UNAUTHORIZED, "wrong password"))
        }
        Err(LoginError::Limited(wait)) => {
            let mut r = api_error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed logins from {}; try again in {wait} s",
                    peer.0.ip()
                ),
            );
            if let Ok(v) = wait.to_string().parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Err(r)
        }
    }
}

/// `POST /api/v1/login` {"password"}.
pub async fn login(Ax(state): St, Extension(peer): Extension<Peer>, body: Bytes) -> R {
    let v = json_body(&body)?;
    let Some(pw) = v.get("password").and_then(Value::as_str) else {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "the body must be {\"password\": \"...\"}",
        ));
    };
    let (token, s) = do_login(&state, &peer, pw)?;
    Ok((
        [(header::SET_COOKIE, server::session_cookie(&token))],
        Json(
            json!({ "csrf_token": s.csrf, "expires_in": super::auth::SESSION_LIFETIME.as_secs() }),
        ),
    )
        .into_response())
}

/// `POST /api/v1/logout`.
pub async fn logout(Ax(state): St, headers: HeaderMap, _body: Bytes) -> R {
    authed(&state, &headers, true)?;
    if let Some(t) = server::cookie_token(&headers) {
        state.auth.logout(&t);
    }
    Ok((
        [(header::SET_COOKIE, server::clear_cookie())],
        Json(json!({ "ok": true })),
    )
        .into_response())
}

/// `GET /api/v1/status`.
pub async fn status(Ax(state): St, headers: HeaderMap) -> R {
    authed(&state, &headers, false)?;
    let (summary, data) = state.app.status();
    Ok(Json(json!({ "summary": summary, "status": data })).into_response())
}

/// `GET /api/v1/policies`.
pub async fn list(Ax(state): St, headers: HeaderMap) -> R {
    authed(&state, &headers, false)?;
    let o = overview(&state).map_err(change_error)?;
    Ok(Json(json!({
        "policies": o.policies.iter().map(view_json).collect::<Vec<_>>(),
        "quota_total": o.total,
        "quota_limit": limits::MAX_TOTAL_QUOTA,
    }))
    .into_response())
}

fn find_view(state: &State, id: &str) -> Result<Value, Response> {
    let o = overview(state).map_err(change_error)?;
    o.policies
        .iter()
        .find(|p| p.id == id)
        .map(view_json)
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, format!("no policy with id {id:?}")))
}

/// `GET /api/v1/policies/{id}`.
pub async fn show(Ax(state): St, headers: HeaderMap, Path(id): Path<String>) -> R {
    authed(&state, &headers, false)?;
    Ok(Json(find_view(&state, &id)?).into_response())
}

/// `POST /api/v1/policies`: 201 with the policy.
pub async fn create(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> R {
    authed(&state, &headers, true)?;
    let v = json_body(&body)?;
    let c = change::commit(&state, peer.0.ip(), Edit::Create(&v)).map_err(change_error)?;
    let id = change::body_id(&v).unwrap_or_default().to_owned();
    Ok(committed(StatusCode::CREATED, c, find_view(&state, &id)?))
}

/// `PUT /api/v1/policies/{id}`.
pub async fn replace(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> R {
    authed(&state, &headers, true)?;
    let v = json_body(&body)?;
    let c = change::commit(&state, peer.0.ip(), Edit::Replace(&id, &v)).map_err(change_error)?;
    Ok(committed(StatusCode::OK, c, find_view(&state, &id)?))
}

/// `DELETE /api/v1/policies/{id}` (only a disabled policy).
pub async fn remove(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    _body: Bytes,
) -> R {
    authed(&state, &headers, true)?;
    let c = change::commit(&state, peer.0.ip(), Edit::Delete(&id)).map_err(change_error)?;
    Ok(committed(StatusCode::OK, c, Value::Null))
}

async fn toggle(state: Arc<State>, peer: Peer, headers: HeaderMap, id: String, on: bool) -> R {
    authed(&state, &headers, true)?;
    let c = change::commit(&state, peer.0.ip(), Edit::SetEnabled(&id, on)).map_err(change_error)?;
    Ok(committed(StatusCode::OK, c, find_view(&state, &id)?))
}

/// `POST /api/v1/policies/{id}/enable`.
pub async fn enable(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    _body: Bytes,
) -> R {
    toggle(state, peer, headers, id, true).await
}

/// `POST /api/v1/policies/{id}/disable`.
pub async fn disable(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    _body: Bytes,
) -> R {
    toggle(state, peer, headers, id, false).await
}

/// `POST /api/v1/ca/trial`: makes the install's trial CA (once).
pub async fn trial(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    _body: Bytes,
) -> R {
    authed(&state, &headers, true)?;
    let (cert, key) = change::make_trial_ca(&state, peer.0.ip()).map_err(change_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "ca_cert": cert, "ca_key": key })),
    )
        .into_response())
}

/// Install notes put in the certificate zip.
pub const INSTALL_NOTES: &str = include_str!("install-notes.txt");

/// The certificate zip of policy `id`: one `.crt` per certificate,
/// `bundle.pem` and `INSTALL.txt`.
pub fn certificate_zip(state: &State, id: &str) -> Result<Vec<u8>, ChangeError> {
    let cfg = state.config()?;
    let p = cfg
        .policy(id)
        .ok_or_else(|| ChangeError::NotFound(format!("no policy with id {id:?}")))?;
    let ca =
        PolicyCa::load(&p.ca_cert, &p.ca_key, &p.ca_chain, SystemTime::now()).map_err(|e| {
            ChangeError::Invalid(vec![Problem {
                file: cfg.path.display().to_string(),
                policy: Some(id.to_owned()),
                policy_index: None,
                scope: None,
                scope_index: None,
                field: "ca_cert".into(),
                message: format!("{}: policy {id:?}: CA: {e}", cfg.path.display()),
            }])
        })?;
    let io = |e: zip::result::ZipError| ChangeError::Io(format!("making the zip: {e}"));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    let mut files = crate::pki::export::chain_files(&ca);
    files.push(("INSTALL.txt".into(), INSTALL_NOTES.replace("{policy}", id)));
    for (name, text) in files {
        zip.start_file(format!("{id}/{name}"), opts).map_err(io)?;
        zip.write_all(text.as_bytes())
            .map_err(|e| ChangeError::Io(format!("making the zip: {e}")))?;
    }
    Ok(zip.finish().map_err(io)?.into_inner())
}

/// The download response of a certificate zip.
pub fn zip_response(id: &str, bytes: Vec<u8>) -> Response {
    let name: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}-certificate.zip\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /api/v1/policies/{id}/certificate`.
pub async fn certificate(Ax(state): St, headers: HeaderMap, Path(id): Path<String>) -> R {
    authed(&state, &headers, false)?;
    let bytes = certificate_zip(&state, &id).map_err(change_error)?;
    Ok(zip_response(&id, bytes))
}

/// `GET /api/v1/logs?since=&policy=&scope=&action=&reason=&sni=&limit=`.
pub async fn logs(Ax(state): St, headers: HeaderMap, Query(p): Query<LogParams>) -> R {
    authed(&state, &headers, false)?;
    let q =
        LogQuery::new(&p, SystemTime::now()).map_err(|e| api_error(StatusCode::BAD_REQUEST, e))?;
    let path = state.app.config().appliance.log;
    let page = records::page(&path, &q).map_err(|e| {
        api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading {}: {e}", path.display()),
        )
    })?;
    Ok(Json(json!({
        "records": page.records,
        "total": page.total,
        "page": q.page,
        "limit": q.limit,
        "malformed_lines": page.malformed,
    }))
    .into_response())
}
