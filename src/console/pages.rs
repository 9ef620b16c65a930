//! The server-rendered pages (maud). Every page works without JavaScript:
//! switches and deletes are forms, confirmations are pages, the record's
//! JSON is a `<details>`; `console.js` only recomputes the quota while the
//! operator types.
// Handlers and their helpers answer with an HTTP response on either side of
// a Result (a refusal is a page or a JSON error); boxing it would only add
// an allocation to the refusal path.
#![allow(clippy::result_large_err)]

use std::time::SystemTime;

use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use serde_json::{json, Value};
use tlsinspect_pipeline::reason::Reason;

use super::api::{self, Overview, PolicyView};
use super::auth::Session;
use super::change::{self, ChangeError, Edit, Problem};
use super::dashboard;
use super::records::{self, LogParams, LogQuery, Record};
use super::server::{self, Ax, Peer, St};
use super::State;
use crate::config::{limits, thousands};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

type R = Result<Response, Response>;

/// `GET /assets/console.css`.
pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// `GET /assets/console.js`.
pub async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

fn page_session(state: &State, headers: &HeaderMap) -> Result<Session, Response> {
    server::session(state, headers)
        .map(|(_, s)| s)
        .ok_or_else(|| Redirect::to("/login").into_response())
}

fn form_session(state: &State, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let s = page_session(state, headers)?;
    if !server::csrf_ok(&s, Some(csrf)) {
        return Err((
            StatusCode::FORBIDDEN,
            html_page(
                "Refused",
                Some(&s),
                "",
                html! { div.error role="alert" { "The form's CSRF token is missing or stale. Reload the page and try again." } },
            ),
        )
            .into_response());
    }
    Ok(s)
}

fn html_page(title: &str, session: Option<&Session>, active: &str, body: Markup) -> Response {
    let nav = [
        ("policies", "/policies", "Policies"),
        ("logs", "/logs", "Log audit"),
        ("dashboard", "/dashboard", "Dashboard"),
    ];
    let m = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tlsinspect" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/policies" { "tlsinspect" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            @for (key, href, label) in nav {
                                a href=(href) aria-current=[(key == active).then_some("page")] { (label) }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf_token" value=(s.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    };
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

fn problems_box(problems: &[&Problem]) -> Markup {
    html! {
        @if !problems.is_empty() {
            div.error role="alert" {
                p { strong { "Not saved:" } }
                ul { @for p in problems { li { (p.message) } } }
            }
        }
    }
}

fn error_box(e: &ChangeError) -> Markup {
    match e {
        ChangeError::Invalid(p) => problems_box(&p.iter().collect::<Vec<_>>()),
        other => html! { div.error role="alert" { (other.to_string()) } },
    }
}

fn status_of(e: &ChangeError) -> StatusCode {
    match e {
        ChangeError::NotFound(_) => StatusCode::NOT_FOUND,
        ChangeError::Conflict(_) => StatusCode::CONFLICT,
        ChangeError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ChangeError::Invalid(_) => StatusCode::BAD_REQUEST,
    }
}

// ---- login ----------------------------------------------------------------

/// `GET /login`.
pub async fn login_page(Ax(state): St, headers: HeaderMap) -> Response {
    if server::session(&state, &headers).is_some() {
        return Redirect::to("/policies").into_response();
    }
    login_form(None, StatusCode::OK)
}

fn login_form(error: Option<&str>, status: StatusCode) -> Response {
    let mut r = html_page(
        "Log in",
        None,
        "",
        html! {
            form.card.login method="post" action="/login" {
                @if let Some(e) = error { div.error role="alert" { (e) } }
                label for="password" { "Admin password" }
                input #password type="password" name="password" autocomplete="current-password" required autofocus;
                button.primary type="submit" { "Log in" }
                p.hint { "First start: the password is in the state dir's console/first-password file (" code { "tlsinspect console info" } " shows where)." }
            }
        },
    );
    *r.status_mut() = status;
    r
}

/// Login form fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    password: String,
}

/// `POST /login`.
pub async fn login_submit(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    Form(f): Form<LoginForm>,
) -> Response {
    match api::do_login(&state, &peer, &f.password) {
        Ok((token, _)) => (
            [(header::SET_COOKIE, server::session_cookie(&token))],
            Redirect::to("/policies"),
        )
            .into_response(),
        Err(resp) => {
            let status = resp.status();
            let msg = if status == StatusCode::TOO_MANY_REQUESTS {
                "Too many failed logins from your address; wait and try again."
            } else {
                "Wrong password."
            };
            login_form(Some(msg), status)
        }
    }
}

/// A form that carries only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf_token: String,
}

/// `POST /logout`.
pub async fn logout(Ax(state): St, headers: HeaderMap, Form(f): Form<CsrfForm>) -> R {
    form_session(&state, &headers, &f.csrf_token)?;
    if let Some(t) = server::cookie_token(&headers) {
        state.auth.logout(&t);
    }
    Ok((
        [(header::SET_COOKIE, server::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response())
}

// ---- policies list --------------------------------------------------------

fn quota_text(n: u64) -> String {
    format!("{} of {}", thousands(n), thousands(limits::MAX_TOTAL_QUOTA))
}

fn ca_cell(p: &PolicyView) -> Markup {
    match &p.ca {
        Ok(s) => html! {
            div { (s.subject) }
            div.muted { "valid until " (s.not_after) " (" (s.days_left) " days)" }
            @if s.days_left < 365 {
                div.warn role="note" { "Less than one year of validity left: renew the CA." }
            }
        },
        Err(e) => html! { div.error { (e) } },
    }
}

/// Notices after a redirect (fixed texts; the query only picks one).
#[derive(Debug, Deserialize, Default)]
pub struct Notice {
    #[serde(default)]
    done: Option<String>,
}

fn notice_text(n: &Notice) -> Option<&'static str> {
    Some(match n.done.as_deref()? {
        "enabled" => "Policy enabled: new connections in its scopes are inspected now.",
        "disabled" => "Policy disabled: new connections pass uninspected now.",
        "deleted" => "Policy deleted.",
        "saved" => "Saved.",
        _ => return None,
    })
}

fn policies_page(
    state: &State,
    s: &Session,
    notice: Option<&str>,
    error: Option<&ChangeError>,
) -> Response {
    let o = match api::overview(state) {
        Ok(o) => o,
        Err(e) => {
            let mut r = html_page("Policies", Some(s), "policies", error_box(&e));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return r;
        }
    };
    let (running, _) = state.app.status();
    let body = html! {
        @if let Some(n) = notice { div.notice role="status" { (n) } }
        @if let Some(e) = error { (error_box(e)) }
        div.toolbar {
            a.button.primary href="/policies/new" { "Create TLS inspection policy" }
            p { "Quota used: " strong #quota-total { (quota_text(o.total)) } }
        }
        p.muted { "Running appliance: " (running) }
        @if o.policies.is_empty() {
            p { "No policies yet." }
        } @else {
            div.scroll {
            table.policies {
                caption.visually-hidden { "TLS inspection policies" }
                thead { tr { th scope="col" { "Policy" } th scope="col" { "Certificate" } th scope="col" { "Quota" } th scope="col" { "Scopes" } th scope="col" { "Enabled" } th scope="col" { "Actions" } } }
                tbody {
                    @for p in &o.policies {
                        tr id=(format!("policy-{}", p.id)) {
                            td {
                                div { strong { (p.name) } }
                                div.muted { "ID " code { (p.id) } }
                                @if !p.description.is_empty() { div.muted { (p.description) } }
                            }
                            td { (ca_cell(p)) }
                            td.num.quota { (quota_text(p.quota)) }
                            td { @for (id, q) in &p.scopes { div { code { (id) } " " span.muted { (thousands(*q)) } } } }
                            td {
                                form method="post" action=(format!("/policies/{}/{}", p.id, if p.enabled { "disable" } else { "enable" })) {
                                    input type="hidden" name="csrf_token" value=(s.csrf);
                                    button.switch type="submit" role="switch" aria-checked=(p.enabled)
                                        aria-label=(format!("Inspection of policy {}", p.id)) {
                                        span.knob {} span.state { @if p.enabled { "On" } @else { "Off" } }
                                    }
                                }
                            }
                            td.actions {
                                a href=(format!("/policies/{}/edit", p.id)) { "Edit" }
                                a href=(format!("/policies/{}/settings", p.id)) { "Settings" }
                                a href=(format!("/policies/{}/certificate", p.id)) download { "Download certificate" }
                                @if p.enabled {
                                    span.disabled title="Disable the policy first" aria-disabled="true" { "Delete" }
                                } @else {
                                    a.danger href=(format!("/policies/{}/delete", p.id)) { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
            }
        }
    };
    html_page("Policies", Some(s), "policies", body)
}

/// `GET /policies`.
pub async fn policies(Ax(state): St, headers: HeaderMap, Query(n): Query<Notice>) -> R {
    let s = page_session(&state, &headers)?;
    Ok(policies_page(&state, &s, notice_text(&n), None))
}

async fn toggle(
    state: &State,
    peer: Peer,
    headers: HeaderMap,
    id: &str,
    csrf: &str,
    on: bool,
) -> R {
    let s = form_session(state, &headers, csrf)?;
    match change::commit(state, peer.0.ip(), Edit::SetEnabled(id, on)) {
        Ok(_) => Ok(Redirect::to(if on {
            "/policies?done=enabled"
        } else {
            "/policies?done=disabled"
        })
        .into_response()),
        Err(e) => {
            let mut r = policies_page(state, &s, None, Some(&e));
            *r.status_mut() = status_of(&e);
            Ok(r)
        }
    }
}

/// `POST /policies/{id}/enable`.
pub async fn enable(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> R {
    toggle(&state, peer, headers, &id, &f.csrf_token, true).await
}

/// `POST /policies/{id}/disable`.
pub async fn disable(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> R {
    toggle(&state, peer, headers, &id, &f.csrf_token, false).await
}

/// `GET /policies/{id}/delete`: the confirmation.
pub async fn delete_confirm(Ax(state): St, headers: HeaderMap, Path(id): Path<String>) -> R {
    let s = page_session(&state, &headers)?;
    let body = html! {
        div.card {
            p { "Delete policy " code { (id) } "? Its scopes stop selecting connections and it is removed from the configuration file. This cannot be undone." }
            form method="post" action=(format!("/policies/{id}/delete")) {
                input type="hidden" name="csrf_token" value=(s.csrf);
                button.danger type="submit" { "Delete policy" }
                " "
                a.button href="/policies" { "Cancel" }
            }
        }
    };
    Ok(html_page("Delete policy", Some(&s), "policies", body))
}

/// `POST /policies/{id}/delete`.
pub async fn delete(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> R {
    let s = form_session(&state, &headers, &f.csrf_token)?;
    match change::commit(&state, peer.0.ip(), Edit::Delete(&id)) {
        Ok(_) => Ok(Redirect::to("/policies?done=deleted").into_response()),
        Err(e) => {
            let mut r = policies_page(&state, &s, None, Some(&e));
            *r.status_mut() = status_of(&e);
            Ok(r)
        }
    }
}

/// `GET /policies/{id}/certificate`: the zip.
pub async fn certificate(Ax(state): St, headers: HeaderMap, Path(id): Path<String>) -> R {
    let s = page_session(&state, &headers)?;
    match api::certificate_zip(&state, &id) {
        Ok(bytes) => Ok(api::zip_response(&id, bytes)),
        Err(e) => {
            let mut r = policies_page(&state, &s, None, Some(&e));
            *r.status_mut() = status_of(&e);
            Ok(r)
        }
    }
}

// ---- step 1: name, description, certificate -------------------------------

fn steps(current: u8, id: Option<&str>) -> Markup {
    let names = [
        "Associate certificate",
        "Configure inspection range",
        "Review",
    ];
    html! {
        ol.steps aria-label="Steps" {
            @for (i, n) in names.iter().enumerate() {
                @let step = i as u8 + 1;
                li aria-current=[(step == current).then_some("step")] class=[(step < current).then_some("done")] {
                    @match (step, id) {
                        (1, Some(id)) if step != current => a href=(format!("/policies/{id}/edit")) { (step) ". " (n) },
                        (2, Some(id)) if step != current => a href=(format!("/policies/{id}/scopes")) { (step) ". " (n) },
                        (3, Some(id)) if step != current => a href=(format!("/policies/{id}/review")) { (step) ". " (n) },
                        _ => span { (step) ". " (n) },
                    }
                }
            }
        }
    }
}

/// Step 1 form fields.
#[derive(Debug, Deserialize, Default)]
pub struct Step1Form {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// A CA certificate path from the offered list, or `trial`.
    #[serde(default)]
    ca: String,
}

fn step1_page(
    state: &State,
    s: &Session,
    existing: Option<&PolicyView>,
    f: &Step1Form,
    error: Option<&ChangeError>,
) -> Response {
    let console = state.console_config();
    let cas = console
        .as_ref()
        .map(|c| change::available_cas(&c.ca_dirs))
        .unwrap_or_default();
    let trial = console.as_ref().is_some_and(change::trial_offered);
    let dirs: Vec<String> = console
        .as_ref()
        .map(|c| c.ca_dirs.iter().map(|d| d.display().to_string()).collect())
        .unwrap_or_default();
    let current_ca = existing
        .and_then(|p| p.json.get("ca_cert"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let selected = if f.ca.is_empty() {
        current_ca.clone().unwrap_or_default()
    } else {
        f.ca.clone()
    };
    let action = match existing {
        Some(p) => format!("/policies/{}/edit", p.id),
        None => "/policies/new".into(),
    };
    let body = html! {
        (steps(1, existing.map(|p| p.id.as_str())))
        @if let Some(e) = error { (error_box(e)) }
        form.card method="post" action=(action) {
            input type="hidden" name="csrf_token" value=(s.csrf);
            @if let Some(p) = existing {
                p { "Policy ID " code { (p.id) } " (shown in every log record; it does not change)" }
            } @else {
                label for="id" { "Policy ID" }
                input #id name="id" required maxlength="64" pattern="[A-Za-z0-9._:\\-]+" value=(f.id) aria-describedby="id-hint";
                p.hint #id-hint { "Letters, digits, '-', '_', '.', ':'. Printed in every log record; it cannot be changed later." }
            }
            label for="name" { "Policy name" }
            input #name name="name" maxlength="200" value=(f.name);
            label for="ca" { "Associate TLS certificate" }
            select #ca name="ca" required aria-describedby="ca-hint" {
                option value="" { "Select a certificate" }
                @if let Some(cur) = &current_ca {
                    @if !cas.iter().any(|c| c.ca_cert.display().to_string() == *cur) {
                        option value=(cur) selected[selected == *cur] { "Current: " (cur) }
                    }
                }
                @for c in &cas {
                    @let v = c.ca_cert.display().to_string();
                    option value=(v) selected[selected == v] {
                        (c.subject) " — until " (c.not_after) " (" (c.days_left) " days)"
                    }
                }
                @if trial {
                    option value="trial" selected[selected == "trial"] { "Apply for a trial certificate" }
                }
            }
            div.hint #ca-hint {
                p { "A CA certificate (basicConstraints CA, keyCertSign) with an RSA ≥ 2048-bit or ECDSA P-256 key; SM2 and other algorithms are refused. Put yours (X.crt beside X.key) in " @for (i, d) in dirs.iter().enumerate() { @if i > 0 { ", " } code { (d) } } "." }
                @if trial { p { "The trial certificate is a CA made on this appliance for testing; it can be applied for once. Use your own CA in production." } }
                @for c in &cas { @if c.days_left < 365 { p.warn { (c.subject) ": less than one year of validity left." } } }
            }
            label for="description" { "Description" }
            textarea #description name="description" rows="2" maxlength="1000" { (f.description) }
            div.buttons { button.primary type="submit" { "Next" } " " a.button href="/policies" { "Cancel" } }
        }
    };
    let title = if existing.is_some() {
        "Edit TLS inspection policy"
    } else {
        "Create TLS inspection policy"
    };
    let mut r = html_page(title, Some(s), "policies", body);
    if let Some(e) = error {
        *r.status_mut() = status_of(e);
    }
    r
}

/// `GET /policies/new`.
pub async fn step1_new(Ax(state): St, headers: HeaderMap) -> R {
    let s = page_session(&state, &headers)?;
    Ok(step1_page(&state, &s, None, &Step1Form::default(), None))
}

fn find_policy(state: &State, id: &str) -> Result<(Overview, usize), ChangeError> {
    let o = api::overview(state)?;
    let i = o
        .policies
        .iter()
        .position(|p| p.id == id)
        .ok_or_else(|| ChangeError::NotFound(format!("no policy with id {id:?}")))?;
    Ok((o, i))
}

/// The session of a form posted for policy `id` (CSRF checked) and the
/// policies with the position of `id`.
fn policy_post(
    state: &State,
    headers: &HeaderMap,
    csrf: &str,
    id: &str,
) -> Result<(Session, Overview, usize), Response> {
    let s = form_session(state, headers, csrf)?;
    let (o, i) = find_policy(state, id).map_err(|e| not_found(state, &s, &e))?;
    Ok((s, o, i))
}

fn not_found(state: &State, s: &Session, e: &ChangeError) -> Response {
    let mut r = policies_page(state, s, None, Some(e));
    *r.status_mut() = status_of(e);
    r
}

/// `GET /policies/{id}/edit`.
pub async fn step1_edit(Ax(state): St, headers: HeaderMap, Path(id): Path<String>) -> R {
    let s = page_session(&state, &headers)?;
    let (o, i) = find_policy(&state, &id).map_err(|e| not_found(&state, &s, &e))?;
    let p = &o.policies[i];
    let f = Step1Form {
        name: p
            .json
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        description: p.description.clone(),
        ..Default::default()
    };
    Ok(step1_page(&state, &s, Some(p), &f, None))
}

/// The CA paths of a step-1 choice (making the trial CA if it is chosen).
fn chosen_ca(state: &State, peer: Peer, ca: &str) -> Result<(String, String), ChangeError> {
    if ca == "trial" {
        let (c, k) = change::make_trial_ca(state, peer.0.ip())?;
        return Ok((c.display().to_string(), k.display().to_string()));
    }
    if ca.is_empty() {
        return Err(ChangeError::Conflict(
            "Select a certificate for the policy.".into(),
        ));
    }
    let p = std::path::Path::new(ca);
    let key = p.with_extension("key");
    Ok((ca.to_owned(), key.display().to_string()))
}

/// `POST /policies/new`: creates the policy (disabled) and goes to step 2.
pub async fn step1_create(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(f): Form<Step1Form>,
) -> R {
    let s = form_session(&state, &headers, &f.csrf_token)?;
    let result = chosen_ca(&state, peer, &f.ca).and_then(|(cert, key)| {
        let mut v = json!({ "id": f.id.trim(), "enabled": false, "ca_cert": cert, "ca_key": key });
        if !f.name.trim().is_empty() {
            v["name"] = json!(f.name.trim());
        }
        if !f.description.trim().is_empty() {
            v["description"] = json!(f.description.trim());
        }
        change::commit(&state, peer.0.ip(), Edit::Create(&v))
    });
    match result {
        Ok(_) => {
            Ok(Redirect::to(&format!("/policies/{}/scopes?add=1", f.id.trim())).into_response())
        }
        Err(e) => Ok(step1_page(&state, &s, None, &f, Some(&e))),
    }
}

/// `POST /policies/{id}/edit`.
pub async fn step1_update(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Step1Form>,
) -> R {
    let (s, o, i) = policy_post(&state, &headers, &f.csrf_token, &id)?;
    let mut v = o.policies[i].json.clone();
    let current = v
        .get("ca_cert")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let result = if f.ca == current {
        Ok(())
    } else {
        chosen_ca(&state, peer, &f.ca).map(|(c, k)| {
            v["ca_cert"] = json!(c);
            v["ca_key"] = json!(k);
            if let Some(m) = v.as_object_mut() {
                m.remove("ca_chain");
            }
        })
    };
    let set = |v: &mut Value, k: &str, val: &str| {
        if let Some(m) = v.as_object_mut() {
            if val.trim().is_empty() {
                m.remove(k);
            } else {
                m.insert(k.into(), json!(val.trim()));
            }
        }
    };
    set(&mut v, "name", &f.name);
    set(&mut v, "description", &f.description);
    match result.and_then(|()| change::commit(&state, peer.0.ip(), Edit::Replace(&id, &v))) {
        Ok(_) => Ok(Redirect::to(&format!("/policies/{id}/scopes")).into_response()),
        Err(e) => Ok(step1_page(&state, &s, Some(&o.policies[i]), &f, Some(&e))),
    }
}

// ---- step 2: inspection scopes --------------------------------------------

/// One scope form of step 2.
#[derive(Debug, Deserialize, Default, Clone)]
pub struct ScopeForm {
    #[serde(default)]
    csrf_token: String,
    /// `save` or `delete`.
    #[serde(default)]
    op: String,
    /// 0-based position of the scope (its count for a new one).
    #[serde(default)]
    index: usize,
    #[serde(default)]
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    source_ips: String,
    #[serde(default)]
    source_ports: String,
    #[serde(default)]
    destinations: String,
    #[serde(default)]
    destination_ports: String,
}

/// Entries of a list field: separated by commas, spaces or new lines.
fn entries(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

fn list_text(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

impl ScopeForm {
    fn from_json(index: usize, v: &Value) -> ScopeForm {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        ScopeForm {
            index,
            id: s("id"),
            description: s("description"),
            source_ips: list_text(v.get("source_ips")),
            source_ports: list_text(v.get("source_ports")),
            destinations: list_text(v.get("destinations")),
            destination_ports: list_text(v.get("destination_ports")),
            ..Default::default()
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id.trim(),
            "protocol": "tcp",
            "source_ips": entries(&self.source_ips),
            "source_ports": entries(&self.source_ports),
            "destinations": entries(&self.destinations),
            "destination_ports": entries(&self.destination_ports),
        });
        if !self.description.trim().is_empty() {
            v["description"] = json!(self.description.trim());
        }
        v
    }

    fn quota(&self) -> u64 {
        [
            &self.source_ips,
            &self.source_ports,
            &self.destinations,
            &self.destination_ports,
        ]
        .iter()
        .map(|s| entries(s).len() as u64)
        .product()
    }
}

fn scope_box(s: &Session, id: &str, f: &ScopeForm, saved: bool, problems: &[&Problem]) -> Markup {
    let n = f.index + 1;
    let field = |name: &'static str,
                 label: &'static str,
                 hint: &'static str,
                 value: &str,
                 max: usize| {
        let fid = format!("s{n}-{name}");
        html! {
            div.field {
                label for=(fid) { (label) }
                textarea id=(fid) name=(name) rows="2" data-list=(name) aria-describedby=(format!("{fid}-hint")) { (value) }
                p.hint id=(format!("{fid}-hint")) { (hint) " Up to " (thousands(max as u64)) "; separate with commas or new lines. " span data-count=(name) {} }
            }
        }
    };
    html! {
        section.card.scope id=(format!("scope-{n}")) data-scope aria-labelledby=(format!("scope-{n}-h")) {
            div.scope-head {
                h2 id=(format!("scope-{n}-h")) { "Inspection scope " (n) }
                @if saved { span.badge { "Saved" } }
                span.quota { "Quota " strong data-scope-quota { (thousands(f.quota())) } }
            }
            (problems_box(problems))
            form method="post" action=(format!("/policies/{id}/scopes")) {
                input type="hidden" name="csrf_token" value=(s.csrf);
                input type="hidden" name="index" value=(f.index);
                div.grid {
                    div.field {
                        label for=(format!("s{n}-id")) { "Scope ID" }
                        input id=(format!("s{n}-id")) name="id" required maxlength="64" value=(f.id);
                    }
                    div.field {
                        label for=(format!("s{n}-protocol")) { "Protocol type" }
                        select id=(format!("s{n}-protocol")) name="protocol" { option value="tcp" selected { "TCP" } }
                    }
                }
                div.grid {
                    (field("source_ips", "Source IP addresses", "Client addresses (IPv4 or IPv6), one address each.", &f.source_ips, limits::MAX_SOURCE_IPS))
                    (field("source_ports", "Source ports", "start/end, e.g. 0/65535 for all ports, 8080/8080 for one.", &f.source_ports, limits::MAX_SOURCE_PORTS))
                    (field("destinations", "Destination IP addresses", "Addresses or CIDR blocks, e.g. 203.0.113.0/24; 0.0.0.0/0 for all.", &f.destinations, limits::MAX_DESTINATIONS))
                    (field("destination_ports", "Destination ports", "start/end, e.g. 443/443.", &f.destination_ports, limits::MAX_DESTINATION_PORTS))
                }
                label for=(format!("s{n}-description")) { "Description" }
                input id=(format!("s{n}-description")) name="description" maxlength="1000" value=(f.description);
                div.buttons {
                    button.primary type="submit" name="op" value="save" { "Save" }
                    @if saved {
                        " "
                        button.danger type="submit" name="op" value="delete" formnovalidate
                            aria-label=(format!("Delete inspection scope {n}")) { "Delete scope" }
                    }
                }
            }
        }
    }
}

/// `?add=1` shows a new, unsaved scope form.
#[derive(Debug, Deserialize, Default)]
pub struct AddQuery {
    #[serde(default)]
    add: Option<String>,
}

fn step2_page(
    state: &State,
    s: &Session,
    id: &str,
    pending: Option<(&ScopeForm, &ChangeError)>,
    add: bool,
) -> Response {
    let (o, i) = match find_policy(state, id) {
        Ok(x) => x,
        Err(e) => return not_found(state, s, &e),
    };
    let p = &o.policies[i];
    let saved: Vec<ScopeForm> = p
        .json
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, v)| ScopeForm::from_json(i, v))
                .collect()
        })
        .unwrap_or_default();
    let others = o.total - p.quota;
    let problems: Vec<&Problem> = match pending {
        Some((_, ChangeError::Invalid(ps))) => ps.iter().collect(),
        _ => Vec::new(),
    };
    let pending_index = pending.map(|(f, _)| f.index);
    let scoped = |idx: usize| -> Vec<&Problem> {
        problems
            .iter()
            .copied()
            .filter(|p| p.scope_index == Some(idx + 1))
            .collect()
    };
    let general: Vec<&Problem> = problems
        .iter()
        .copied()
        .filter(|p| {
            p.scope_index.is_none()
                || p.scope_index
                    .is_some_and(|i| Some(i - 1) != pending_index && i > saved.len() + 1)
        })
        .collect();
    let show_new = add || pending_index == Some(saved.len());
    let new_form = match pending {
        Some((f, _)) if f.index == saved.len() => f.clone(),
        _ => ScopeForm {
            index: saved.len(),
            id: format!("scope-{}", saved.len() + 1),
            source_ports: "0/65535".into(),
            destinations: "0.0.0.0/0".into(),
            destination_ports: "443/443".into(),
            ..Default::default()
        },
    };
    let body = html! {
        (steps(2, Some(id)))
        div.card.quotas data-others=(others) data-limit=(limits::MAX_TOTAL_QUOTA) {
            p { "The total quota of all inspection scopes is " strong { (thousands(limits::MAX_TOTAL_QUOTA)) } ". A scope's quota is source IPs × source port ranges × destination addresses × destination port ranges; a policy's is the sum of its scopes'." }
            p { "This policy: " strong data-policy-quota { (thousands(p.quota)) }
                " · All policies: " strong data-total-quota { (quota_text(o.total)) } }
        }
        @if let Some((_, e)) = pending {
            @if !matches!(e, ChangeError::Invalid(_)) { (error_box(e)) }
        }
        (problems_box(&general))
        @for f in &saved {
            @if pending_index == Some(f.index) {
                @if let Some((pf, _)) = pending { (scope_box(s, id, pf, true, &scoped(f.index))) }
            } @else {
                (scope_box(s, id, f, true, &[]))
            }
        }
        @if show_new && saved.len() < limits::MAX_SCOPES_PER_POLICY {
            (scope_box(s, id, &new_form, false, &scoped(saved.len())))
        }
        div.buttons {
            @if saved.len() < limits::MAX_SCOPES_PER_POLICY && !show_new {
                a.button href=(format!("/policies/{id}/scopes?add=1#scope-{}", saved.len() + 1)) { "Add an inspection scope" }
            } @else if saved.len() >= limits::MAX_SCOPES_PER_POLICY {
                span.muted { "A policy has at most " (limits::MAX_SCOPES_PER_POLICY) " inspection scopes." }
            }
            " "
            a.button.primary href=(format!("/policies/{id}/review")) { "Next" }
        }
    };
    let mut r = html_page("Configure inspection range", Some(s), "policies", body);
    if let Some((_, e)) = pending {
        *r.status_mut() = status_of(e);
    }
    r
}

/// `GET /policies/{id}/scopes`.
pub async fn step2(
    Ax(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<AddQuery>,
) -> R {
    let s = page_session(&state, &headers)?;
    Ok(step2_page(&state, &s, &id, None, q.add.is_some()))
}

/// `POST /policies/{id}/scopes`: save or delete one scope.
pub async fn step2_submit(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ScopeForm>,
) -> R {
    let (s, o, i) = policy_post(&state, &headers, &f.csrf_token, &id)?;
    let mut v = o.policies[i].json.clone();
    let mut scopes: Vec<Value> = v
        .get("scopes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if f.op == "delete" {
        if f.index < scopes.len() {
            scopes.remove(f.index);
        }
    } else if f.index < scopes.len() {
        scopes[f.index] = f.to_json();
    } else {
        scopes.push(f.to_json());
    }
    v["scopes"] = Value::Array(scopes);
    match change::commit(&state, peer.0.ip(), Edit::Replace(&id, &v)) {
        Ok(_) => Ok(
            Redirect::to(&format!("/policies/{id}/scopes#scope-{}", f.index + 1)).into_response(),
        ),
        Err(e) => Ok(step2_page(&state, &s, &id, Some((&f, &e)), false)),
    }
}

// ---- step 3: review -------------------------------------------------------

/// `GET /policies/{id}/review`.
pub async fn step3(Ax(state): St, headers: HeaderMap, Path(id): Path<String>) -> R {
    let s = page_session(&state, &headers)?;
    let (o, i) = find_policy(&state, &id).map_err(|e| not_found(&state, &s, &e))?;
    let p = &o.policies[i];
    let cfg = o.config.policy(&id);
    let body = html! {
        (steps(3, Some(&id)))
        div.card {
            p.big { "Policy ID " code #policy-id { (p.id) } }
            p.muted { "This ID is written in every traffic-log record of the policy (policy_id), with the scope's ID (scope_id)." }
            dl.review {
                dt { "Name" } dd { (p.name) }
                dt { "Description" } dd { (p.description) }
                dt { "Certificate" } dd { (ca_cell(p)) }
                dt { "Status" } dd { @if p.enabled { "Enabled" } @else { "Disabled — install the certificate on the clients, then enable it in the policy list." } }
                dt { "Quota" } dd { (quota_text(p.quota)) }
                @if let Some(c) = cfg {
                    dt { "TLS 1.3" } dd { (format!("{:?}", c.tls13).to_lowercase()) }
                    dt { "ECH" } dd { (format!("{:?}", c.ech).to_lowercase()) }
                }
            }
        }
        @if let Some(c) = cfg {
            div.scroll {
            table {
                caption { "Inspection scopes" }
                thead { tr { th scope="col" { "Scope ID" } th scope="col" { "Source IPs" } th scope="col" { "Source ports" } th scope="col" { "Destinations" } th scope="col" { "Destination ports" } th scope="col" { "Quota" } } }
                tbody {
                    @for sc in &c.scopes {
                        tr {
                            td { code { (sc.id) } }
                            td { (sc.source_ips.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")) }
                            td { (sc.source_ports.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")) }
                            td { (sc.destinations.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")) }
                            td { (sc.destination_ports.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")) }
                            td.num { (thousands(sc.quota())) }
                        }
                    }
                }
            }
            }
        }
        div.buttons {
            a.button href=(format!("/policies/{id}/certificate")) download { "Download certificate" }
            " " a.button href=(format!("/policies/{id}/settings")) { "Decision settings" }
            " " a.button.primary href="/policies" { "Done" }
        }
    };
    Ok(html_page("Review the policy", Some(&s), "policies", body))
}

// ---- decision settings ----------------------------------------------------

/// The decision settings form.
#[derive(Debug, Deserialize, Default)]
pub struct SettingsForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    tls13: String,
    #[serde(default)]
    ech: String,
    #[serde(default)]
    legacy_tls: String,
    #[serde(default)]
    no_sni: String,
    #[serde(default)]
    non_tls: String,
    #[serde(default)]
    exclude_sni: String,
    #[serde(default)]
    on_disable: String,
}

/// (key, label, choices, default, why the default is what it is).
const SETTINGS: &[(&str, &str, &[&str], &str, &str)] = &[
    ("tls13", "TLS 1.3", &["passthrough", "inspect"], "passthrough",
     "The default follows the product we replace, which cannot decrypt TLS 1.3. Every current browser, curl and openssl offer TLS 1.3, so with \"passthrough\" almost nothing is inspected: choose \"inspect\" to inspect them (tlsinspect terminates TLS 1.3)."),
    ("ech", "Encrypted Client Hello (ECH)", &["passthrough", "inspect"], "passthrough",
     "Browsers put a GREASE ECH extension in nearly every hello, indistinguishable from real ECH; \"passthrough\" (the seed's behaviour) leaves all such browser traffic uninspected. \"inspect\" terminates on the outer SNI: a GREASE client simply continues, a client with real ECH retries without it (RFC 9849) and that retry is inspected."),
    ("legacy_tls", "Legacy TLS (nothing newer than TLS 1.1)", &["passthrough", "block"], "passthrough",
     "Passed by default so old devices keep working; choose \"block\" to refuse TLS 1.0/1.1 (logged with reason legacy_tls)."),
    ("no_sni", "Hellos without SNI", &["passthrough", "inspect"], "passthrough",
     "The seed requires an SNI to inspect. \"inspect\" takes the names from the upstream certificate instead."),
    ("non_tls", "In-scope TCP that is not TLS", &["passthrough", "block"], "passthrough",
     "A scope selects ports, not protocols; passing what is not TLS keeps e.g. plain HTTP on 8443 working. \"block\" resets it."),
    ("on_disable", "When the policy is disabled", &["interrupt", "drain"], "interrupt",
     "The seed interrupts existing inspected connections when inspection is turned off; \"drain\" lets them finish and only new connections pass."),
];

fn settings_page(
    state: &State,
    s: &Session,
    id: &str,
    error: Option<&ChangeError>,
    saved: bool,
) -> Response {
    let (o, i) = match find_policy(state, id) {
        Ok(x) => x,
        Err(e) => return not_found(state, s, &e),
    };
    let p = &o.policies[i];
    let current = |k: &str, d: &str| {
        p.json
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or(d)
            .to_owned()
    };
    let exclude = list_text(p.json.get("exclude_sni"));
    let body = html! {
        p { "Policy " code { (id) } ". These decide, from the ClientHello, what an in-scope connection gets; the log records which rule decided (reason). Changes act on new connections at once." }
        @if saved { div.notice role="status" { "Saved." } }
        @if let Some(e) = error { (error_box(e)) }
        form.card method="post" action=(format!("/policies/{id}/settings")) {
            input type="hidden" name="csrf_token" value=(s.csrf);
            @for (key, label, choices, default, why) in SETTINGS {
                @let cur = current(key, default);
                fieldset {
                    legend { (label) }
                    @for c in choices.iter() {
                        label.radio {
                            input type="radio" name=(key) value=(c) checked[cur == *c];
                            " " (c) @if c == default { " (default)" }
                        }
                    }
                    p.hint { (why) }
                }
            }
            label for="exclude_sni" { "Never decrypt these server names (exclude_sni)" }
            textarea #exclude_sni name="exclude_sni" rows="3" aria-describedby="exclude-hint" { (exclude) }
            p.hint #exclude-hint { "Host globs such as *.bank.example, one per line. Empty by default: privacy-sensitive destinations (banking, health) are yours to list." }
            div.buttons { button.primary type="submit" { "Save settings" } " " a.button href="/policies" { "Back" } }
        }
    };
    let mut r = html_page("Decision settings", Some(s), "policies", body);
    if let Some(e) = error {
        *r.status_mut() = status_of(e);
    }
    r
}

/// `GET /policies/{id}/settings`.
pub async fn settings(
    Ax(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> R {
    let s = page_session(&state, &headers)?;
    Ok(settings_page(
        &state,
        &s,
        &id,
        None,
        n.done.as_deref() == Some("saved"),
    ))
}

/// `POST /policies/{id}/settings`.
pub async fn settings_submit(
    Ax(state): St,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<SettingsForm>,
) -> R {
    let (s, o, i) = policy_post(&state, &headers, &f.csrf_token, &id)?;
    let mut v = o.policies[i].json.clone();
    for (key, val) in [
        ("tls13", &f.tls13),
        ("ech", &f.ech),
        ("legacy_tls", &f.legacy_tls),
        ("no_sni", &f.no_sni),
        ("non_tls", &f.non_tls),
        ("on_disable", &f.on_disable),
    ] {
        if !val.is_empty() {
            v[key] = json!(val);
        }
    }
    let ex = entries(&f.exclude_sni);
    if let Some(m) = v.as_object_mut() {
        if ex.is_empty() {
            m.remove("exclude_sni");
        } else {
            m.insert("exclude_sni".into(), json!(ex));
        }
    }
    match change::commit(&state, peer.0.ip(), Edit::Replace(&id, &v)) {
        Ok(_) => Ok(Redirect::to(&format!("/policies/{id}/settings?done=saved")).into_response()),
        Err(e) => Ok(settings_page(&state, &s, &id, Some(&e), false)),
    }
}

// ---- log audit ------------------------------------------------------------

fn query_string(p: &LogParams, page: Option<usize>) -> String {
    let mut parts = Vec::new();
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={}", urlencode(v)));
        }
    };
    add("since", &p.since);
    add("from", &p.from);
    add("until", &p.until);
    add("policy", &p.policy);
    add("scope", &p.scope);
    add("action", &p.action);
    add("reason", &p.reason);
    add("sni", &p.sni);
    add("addr", &p.addr);
    add("limit", &p.limit);
    if let Some(n) = page {
        parts.push(format!("page={n}"));
    }
    parts.join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /logs`.
pub async fn logs(Ax(state): St, headers: HeaderMap, Query(p): Query<LogParams>) -> R {
    let s = page_session(&state, &headers)?;
    let policies: Vec<String> = state
        .config()
        .map(|c| c.policies.iter().map(|p| p.id.to_string()).collect())
        .unwrap_or_default();
    let path = state.app.config().appliance.log;
    let result = LogQuery::new(&p, SystemTime::now()).and_then(|q| {
        records::page(&path, &q)
            .map(|pg| (q, pg))
            .map_err(|e| format!("reading {}: {e}", path.display()))
    });
    let val = |o: &Option<String>| o.clone().unwrap_or_default();
    let body = html! {
        form.card.filters method="get" action="/logs" aria-label="Filters" {
            div.grid {
                div.field { label for="since" { "Last" } input #since name="since" placeholder="e.g. 15m, 2h, 1d" value=(val(&p.since)); }
                div.field { label for="from" { "From (UTC)" } input #from type="datetime-local" name="from" value=(val(&p.from)); }
                div.field { label for="until" { "Until (UTC)" } input #until type="datetime-local" name="until" value=(val(&p.until)); }
                div.field { label for="policy" { "Policy" }
                    select #policy name="policy" { option value="" { "any" } @for id in &policies { option value=(id) selected[p.policy.as_deref() == Some(id.as_str())] { (id) } } } }
                div.field { label for="scope" { "Scope" } input #scope name="scope" value=(val(&p.scope)); }
                div.field { label for="action" { "Action" }
                    select #action name="action" { option value="" { "any" } @for a in ["inspected", "pass", "blocked"] { option value=(a) selected[p.action.as_deref() == Some(a)] { (a) } } } }
                div.field { label for="reason" { "Reason" }
                    select #reason name="reason" { option value="" { "any" } @for a in Reason::ALL.iter().map(|r| r.as_str()) { option value=(a) selected[p.reason.as_deref() == Some(a)] { (a) } } } }
                div.field { label for="sni" { "SNI" } input #sni name="sni" placeholder="*.example.com" value=(val(&p.sni)); }
                div.field { label for="addr" { "Address" } input #addr name="addr" placeholder="client or server IP" value=(val(&p.addr)); }
            }
            div.buttons { button.primary type="submit" { "Search" } " " a.button href="/logs" { "Reset" } }
        }
        @match &result {
            Err(e) => div.error role="alert" { (e) },
            Ok((q, pg)) => {
                div.toolbar {
                    p { (pg.total) " matching record(s), newest first" @if pg.malformed > 0 { "; " (pg.malformed) " malformed line(s) skipped" } }
                    a.button href=(format!("/logs/export?{}", query_string(&p, None))) download { "Export (JSON lines)" }
                }
                div.scroll {
                table.logs {
                    caption.visually-hidden { "Traffic-log records" }
                    thead { tr { th scope="col" { "Time" } th scope="col" { "Policy / scope" } th scope="col" { "Action" } th scope="col" { "Reason" } th scope="col" { "Source" } th scope="col" { "Destination" } th scope="col" { "SNI" } th scope="col" { "Bytes up/down" } th scope="col" { "Record" } } }
                    tbody {
                        @for rec in &pg.records {
                            @let r = Record(rec);
                            tr.record {
                                td { (r.timestamp()) }
                                td { code { (r.policy()) } " / " code { (r.scope()) } }
                                td { span class=(format!("tag {}", r.action())) { (r.action()) } @if r.event_type() != "flow" { " " span.muted { (r.event_type()) } } }
                                td { (r.reason()) }
                                td { (r.source()) }
                                td { (r.destination()) }
                                td.sni { (r.sni().unwrap_or("-")) }
                                td.num { @let (u, d) = r.bytes(); (thousands(u)) " / " (thousands(d)) }
                                td { details { summary { "JSON" } pre { (serde_json::to_string_pretty(rec).unwrap_or_default()) } } }
                            }
                        }
                    }
                }
                }
                @let pages = pg.total.div_ceil(q.limit).max(1);
                nav.pager aria-label="Pages" {
                    @if q.page > 1 { a href=(format!("/logs?{}", query_string(&p, Some(q.page - 1)))) rel="prev" { "← Newer" } }
                    span { "Page " (q.page) " of " (pages) }
                    @if q.page < pages { a href=(format!("/logs?{}", query_string(&p, Some(q.page + 1)))) rel="next" { "Older →" } }
                }
            }
        }
    };
    let mut r = html_page("Log audit", Some(&s), "logs", body);
    if result.is_err() {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(r)
}

/// `GET /logs/export`: the matching records as JSON lines.
pub async fn logs_export(Ax(state): St, headers: HeaderMap, Query(mut p): Query<LogParams>) -> R {
    page_session(&state, &headers)?;
    p.page = None;
    p.limit = Some(records::MAX_LIMIT.to_string());
    let q = LogQuery::new(&p, SystemTime::now())
        .map_err(|e| (StatusCode::BAD_REQUEST, e).into_response())?;
    let path = state.app.config().appliance.log;
    let (recs, _) = records::matching(&path, &q)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())?;
    let mut out = String::new();
    for r in recs.iter().rev() {
        out.push_str(&r.to_string());
        out.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tlsinspect-logs.jsonl\"",
            ),
        ],
        out,
    )
        .into_response())
}

// ---- dashboard ------------------------------------------------------------

/// `GET /dashboard`.
pub async fn dashboard(Ax(state): St, headers: HeaderMap) -> R {
    let s = page_session(&state, &headers)?;
    let now = SystemTime::now();
    let (summary, status) = state.app.status();
    let (bits, conns) = state.samples.rates(now);
    let log = state.app.config().appliance.log;
    let sum = dashboard::summarise(&log, now);
    let policies = status["policies"].as_array().cloned().unwrap_or_default();
    let bypass = status["counters"]["bypass_cache_entries"]
        .as_u64()
        .unwrap_or(0);
    let body = html! {
        p.muted { (summary) }
        @if !status["dataplane"].as_bool().unwrap_or(false) {
            div.warn role="note" { "No data plane in this process: the throughput and connection charts stay empty." }
        }
        div.cards {
            div.card.stat { h2 { "Bypass cache" } p.big #bypass-size { (bypass) } p.muted { "learned (SNI, destination) pairs that pass (mTLS, pinning)" } }
            @for p in &policies {
                div.card.stat {
                    h2 { "CA of " code { (p["id"].as_str().unwrap_or("-")) } }
                    @match p["ca_days_left"].as_i64() {
                        Some(d) => {
                            p class=(if d < 365 { "big warn" } else { "big" }) { (d) " days left" }
                            @if d < 365 { p.warn { "Less than one year: renew the CA." } }
                        },
                        None => p.muted { "not loaded (policy disabled or CA not loaded at start)" },
                    }
                }
            }
        }
        div.charts {
            (dashboard::line_chart("tp", "Throughput", "bit/s", &bits))
            (dashboard::line_chart("cps", "New connections", "/s", &conns))
            @match &sum {
                Ok(sm) => (dashboard::actions_chart(&sm.per_minute)),
                Err(e) => div.error { "reading " (log.display()) ": " (e) },
            }
        }
        @if let Ok(sm) = &sum {
            div.grid {
                table {
                    caption { "Top SNIs, last " (dashboard::MINUTES) " minutes" }
                    thead { tr { th scope="col" { "SNI" } th scope="col" { "Connections" } } }
                    tbody { @for (n, c) in &sm.top_snis { tr { td { (n) } td.num { (c) } } } @if sm.top_snis.is_empty() { tr { td colspan="2" { "none" } } } }
                }
                table {
                    caption { "Alerts, last " (dashboard::MINUTES) " minutes" }
                    thead { tr { th scope="col" { "Alert" } th scope="col" { "Count" } } }
                    tbody { @for (n, c) in &sm.top_alerts { tr { td { (n) } td.num { (c) } } } @if sm.top_alerts.is_empty() { tr { td colspan="2" { "none" } } } }
                }
            }
        }
        (PreEscaped(""))
    };
    Ok(html_page("Dashboard", Some(&s), "dashboard", body))
}
