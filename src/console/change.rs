//! Every change the console makes, on the path of `tlsinspect policy`:
//! edit the file in place (`control::edit`), validate the result as
//! `validate` does, write it atomically, audit it, reload.
//!
//! The JSON form of a policy is the `[[policy]]` table with its keys as in
//! the config file and `scopes` holding the `[[policy.scope]]` tables. Only
//! the keys listed here are taken from the browser: a key added to the
//! config later (a path the appliance writes to, say) is not settable from
//! the console until it is listed, so nothing the browser sends can make
//! the appliance write outside the config file and the state dir.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table};

use super::State;
use crate::config::{self, ConfigError, ConfigErrors, ItemRef};
use crate::control::edit::{self, EditError};
use crate::control::{ControlHandler, Request};
use crate::pki::PolicyCa;

/// Policy keys the console accepts: an explicit list, not the config's
/// (`config::POLICY_KEYS`), so that a key added to the config later is not
/// settable from the browser until someone decides it should be.
pub const POLICY_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "enabled",
    "ca_cert",
    "ca_key",
    "ca_chain",
    "tls13",
    "legacy_tls",
    "no_sni",
    "non_tls",
    "ech",
    "exclude_sni",
    "on_disable",
    "scopes",
];
// Scope keys the console accepts: all of the config's (none names a file).
use crate::config::SCOPE_KEYS;
/// Keys naming CA files, checked against `[console] ca_dirs`.
const CA_KEYS: &[&str] = &["ca_cert", "ca_key", "ca_chain"];
/// Largest JSON body accepted for a policy (1,000 addresses x 10 scopes fit).
pub const MAX_BODY: usize = 1 << 20;

/// One problem, with the fields `validate` reports; `message` is the line
/// `validate` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The configuration file.
    pub file: String,
    /// Policy id, if the problem is in a policy.
    pub policy: Option<String>,
    /// 1-based position of the policy in the file.
    pub policy_index: Option<usize>,
    /// Scope id, if the problem is in a scope.
    pub scope: Option<String>,
    /// 1-based position of the scope in its policy.
    pub scope_index: Option<usize>,
    /// Key path of the field (`source_ips[3]` is written `source_ips #4`).
    pub field: String,
    /// The whole message, as `validate` prints it.
    pub message: String,
}

impl From<&ConfigError> for Problem {
    fn from(e: &ConfigError) -> Problem {
        Problem {
            file: e.file.display().to_string(),
            policy: e.policy.as_ref().and_then(|p| p.id.clone()),
            policy_index: e.policy.as_ref().map(|p| p.index),
            scope: e.scope.as_ref().and_then(|s| s.id.clone()),
            scope_index: e.scope.as_ref().map(|s| s.index),
            field: e.field.clone(),
            message: e.to_string(),
        }
    }
}

/// Why a change was not made.
#[derive(Debug)]
pub enum ChangeError {
    /// No policy with that id (404).
    NotFound(String),
    /// The change would make an invalid file, or is refused (400).
    Invalid(Vec<Problem>),
    /// The change conflicts with the state (an enabled policy deleted, an id
    /// taken, the trial CA made already) (409).
    Conflict(String),
    /// The file could not be read or written (500).
    Io(String),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::NotFound(m) | ChangeError::Conflict(m) | ChangeError::Io(m) => {
                f.write_str(m)
            }
            ChangeError::Invalid(p) => {
                let lines: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
                f.write_str(&lines.join("\n"))
            }
        }
    }
}

impl From<EditError> for ChangeError {
    fn from(e: EditError) -> ChangeError {
        match e {
            EditError::NoSuchPolicy { .. } => ChangeError::NotFound(e.to_string()),
            EditError::StillEnabled { .. } => ChangeError::Conflict(e.to_string()),
            other => ChangeError::Io(other.to_string()),
        }
    }
}

impl From<ConfigErrors> for ChangeError {
    fn from(e: ConfigErrors) -> ChangeError {
        ChangeError::Invalid(e.errors().iter().map(Problem::from).collect())
    }
}

/// A problem located in policy `id` at `index`, worded as `validate` words it.
fn problem(file: &Path, id: &str, index: usize, field: &str, message: String) -> Problem {
    Problem::from(&ConfigError {
        file: file.to_path_buf(),
        policy: Some(ItemRef {
            index,
            id: Some(id.to_owned()).filter(|s| !s.is_empty()),
        }),
        scope: None,
        field: field.to_owned(),
        message,
    })
}

/// What a committed change did.
#[derive(Debug, Clone, Serialize)]
pub struct Committed {
    /// Whether the running appliance took the new file.
    pub reloaded: bool,
    /// The reload's message (or why it failed; the file is changed anyway
    /// and applies at the next successful reload or start).
    pub message: String,
}

/// The JSON form of a TOML item (`scope` becomes `scopes`).
pub fn item_json(item: &Item) -> Value {
    match item {
        Item::None => Value::Null,
        Item::Value(v) => value_json(v),
        Item::Table(t) => table_json(t),
        Item::ArrayOfTables(a) => Value::Array(a.iter().map(table_json).collect()),
    }
}

fn value_json(v: &toml_edit::Value) -> Value {
    use toml_edit::Value as V;
    match v {
        V::String(s) => Value::String(s.value().clone()),
        V::Integer(i) => Value::from(*i.value()),
        V::Float(f) => serde_json::Number::from_f64(*f.value()).map_or(Value::Null, Value::Number),
        V::Boolean(b) => Value::Bool(*b.value()),
        V::Datetime(d) => Value::String(d.value().to_string()),
        V::Array(a) => Value::Array(a.iter().map(value_json).collect()),
        V::InlineTable(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_owned(), value_json(v)))
                .collect(),
        ),
    }
}

/// The JSON form of a `[[policy]]` (or scope) table.
pub fn table_json(t: &Table) -> Value {
    let mut m = Map::new();
    for (k, item) in t.iter() {
        let key = if k == "scope" { "scopes" } else { k };
        m.insert(key.to_owned(), item_json(item));
    }
    Value::Object(m)
}

/// The JSON form of policy `id` in `doc`, or null.
pub fn policy_json(doc: &DocumentMut, id: &str) -> Value {
    edit::find(doc, id)
        .and_then(|i| doc["policy"].as_array_of_tables()?.get(i).map(table_json))
        .unwrap_or(Value::Null)
}

fn toml_value(v: &Value) -> Result<toml_edit::Value, String> {
    Ok(match v {
        Value::Null => return Err("is null; leave the key out for its default".into()),
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.into(),
            (None, Some(f)) => f.into(),
            _ => return Err(format!("is {n}, out of range")),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            let mut a = Array::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Array(_) | Value::Object(_) => {
                        return Err(format!("#{} must be a string, number or boolean", i + 1))
                    }
                    other => a.push(toml_value(other)?),
                }
            }
            toml_edit::Value::Array(a)
        }
        Value::Object(_) => return Err("must not be an object".into()),
    })
}

fn unknown(key: &str, known: &[&str]) -> String {
    format!(
        "unknown key \"{}\"; the keys here are: {}",
        key.escape_debug(),
        known.join(", ")
    )
}

/// Turns the JSON form of a policy into a `[[policy]]` table (scopes as
/// its `scope` array of tables). Types and values are left to the config
/// validation, which words them as `validate` does; here only the shape:
/// an object, known keys, no nested objects.
///
/// `file` and `index` (the policy's position in the file) locate the problems.
pub fn policy_table(v: &Value, file: &Path, index: usize) -> Result<Table, Vec<Problem>> {
    let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
    let p = |field: &str, msg: String| problem(file, id, index, field, msg);
    let Some(obj) = v.as_object() else {
        return Err(vec![p(
            "",
            "must be a JSON object (the [[policy]] table)".into(),
        )]);
    };
    let mut problems = Vec::new();
    let mut t = Table::new();
    for (k, val) in obj {
        if !POLICY_KEYS.contains(&k.as_str()) {
            problems.push(p(k, unknown(k, POLICY_KEYS)));
            continue;
        }
        if k == "scopes" {
            let Some(items) = val.as_array() else {
                problems.push(p(k, "scopes must be an array of scope objects".into()));
                continue;
            };
            let mut scopes = ArrayOfTables::new();
            for (i, s) in items.iter().enumerate() {
                let at = format!("scopes #{}", i + 1);
                let Some(so) = s.as_object() else {
                    problems.push(p(
                        &at,
                        format!("{at} must be an object (a [[policy.scope]] table)"),
                    ));
                    continue;
                };
                let mut st = Table::new();
                for (sk, sv) in so {
                    let field = format!("{at} {sk}");
                    if !SCOPE_KEYS.contains(&sk.as_str()) {
                        problems.push(p(&field, format!("{at}: {}", unknown(sk, SCOPE_KEYS))));
                        continue;
                    }
                    match toml_value(sv) {
                        Ok(tv) => {
                            st.insert(sk, Item::Value(tv));
                        }
                        Err(e) => problems.push(p(&field, format!("{field} {e}"))),
                    }
                }
                scopes.push(st);
            }
            if !scopes.is_empty() {
                t.insert("scope", Item::ArrayOfTables(scopes));
            }
            continue;
        }
        match toml_value(val) {
            Ok(tv) => {
                t.insert(k, Item::Value(tv));
            }
            Err(e) => problems.push(p(k, format!("{k} {e}"))),
        }
    }
    if problems.is_empty() {
        Ok(t)
    } else {
        Err(problems)
    }
}

/// The CA files the browser may name: inside one of `[console] ca_dirs`
/// (after resolving `..` and symbolic links), or the policy's current ones.
fn check_ca_paths(
    new: &Table,
    old: Option<&Value>,
    dirs: &[PathBuf],
    file: &Path,
    id: &str,
    index: usize,
) -> Vec<Problem> {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let allowed: Vec<PathBuf> = dirs.iter().filter_map(|d| d.canonicalize().ok()).collect();
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let mut out = Vec::new();
    for key in CA_KEYS {
        let Some(item) = new.get(key) else { continue };
        let values: Vec<&str> = match item.as_value() {
            Some(toml_edit::Value::String(s)) => vec![s.value().as_str()],
            Some(toml_edit::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => continue, // a wrong type is reported by the validation
        };
        for (i, s) in values.iter().enumerate() {
            let was = old.and_then(|o| o.get(*key)).is_some_and(|o| match o {
                Value::String(x) => x == s,
                Value::Array(a) => a.iter().any(|x| x.as_str() == Some(s)),
                _ => false,
            });
            if was {
                continue;
            }
            let field = if *key == "ca_chain" {
                format!("ca_chain #{}", i + 1)
            } else {
                (*key).to_owned()
            };
            let p = Path::new(s);
            let full = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            let inside = full
                .canonicalize()
                .ok()
                .is_some_and(|c| allowed.iter().any(|d| c.starts_with(d)));
            if !inside {
                let why = if full.exists() {
                    "is outside the directories the console may use"
                } else {
                    "does not exist in the directories the console may use"
                };
                out.push(problem(
                    file,
                    id,
                    index,
                    &field,
                    format!(
                        "{field} \"{}\" {why} ([console] ca_dirs: {})",
                        s.escape_debug(),
                        shown.join(", ")
                    ),
                ));
            }
        }
    }
    out
}

/// The policy id a JSON body names.
pub fn body_id(v: &Value) -> Option<&str> {
    v.get("id").and_then(Value::as_str)
}

/// What a console edit does to the document.
pub enum Edit<'a> {
    /// Append a new policy.
    Create(&'a Value),
    /// Replace policy `id` with a complete new form.
    Replace(&'a str, &'a Value),
    /// Switch policy `id` on or off.
    SetEnabled(&'a str, bool),
    /// Delete the disabled policy `id`.
    Delete(&'a str),
}

impl Edit<'_> {
    fn action(&self) -> &'static str {
        match self {
            Edit::Create(_) => "policy.create",
            Edit::Replace(..) => "policy.update",
            Edit::SetEnabled(_, true) => "policy.enable",
            Edit::SetEnabled(_, false) => "policy.disable",
            Edit::Delete(_) => "policy.delete",
        }
    }
}

/// Makes `edit` to the config file of `state` on behalf of `from`.
pub fn commit(state: &State, from: IpAddr, edit: Edit<'_>) -> Result<Committed, ChangeError> {
    let _serial = state.edit_lock.lock().unwrap_or_else(|e| e.into_inner());
    let path = state.config_path.as_path();
    let mut doc = edit::load(path)?;
    // The file must load before the console touches it, as for the CLI.
    let current = config::load(path)?;
    let console = current.console.clone();
    let dirs = console.map(|c| c.ca_dirs).unwrap_or_default();
    let count = current.policies.len();
    let target: String = match &edit {
        Edit::Create(v) => body_id(v).unwrap_or_default().to_owned(),
        Edit::Replace(id, _) | Edit::SetEnabled(id, _) | Edit::Delete(id) => (*id).to_owned(),
    };
    let before = policy_json(&doc, &target);
    match &edit {
        Edit::Create(v) => {
            if target.is_empty() {
                return Err(ChangeError::Invalid(vec![problem(
                    path,
                    "",
                    count + 1,
                    "id",
                    "missing required key \"id\"".into(),
                )]));
            }
            if edit::find(&doc, &target).is_some() {
                return Err(ChangeError::Conflict(format!(
                    "{}: a policy with id {target:?} exists already; policy ids must be unique",
                    path.display()
                )));
            }
            let t = policy_table(v, path, count + 1).map_err(ChangeError::Invalid)?;
            let bad = check_ca_paths(&t, None, &dirs, path, &target, count + 1);
            if !bad.is_empty() {
                return Err(ChangeError::Invalid(bad));
            }
            edit::put_policy_in(&mut doc, path, None, t)?;
        }
        Edit::Replace(id, v) => {
            let index = edit::find(&doc, id).ok_or_else(|| {
                ChangeError::NotFound(format!("{}: no policy with id {id:?}", path.display()))
            })? + 1;
            if let Some(other) = body_id(v).filter(|b| b != id) {
                return Err(ChangeError::Invalid(vec![problem(
                    path,
                    id,
                    index,
                    "id",
                    format!("id \"{}\" differs from the policy being changed; the id of a policy is stable (it is in every log record)", other.escape_debug()),
                )]));
            }
            let mut t = policy_table(v, path, index).map_err(ChangeError::Invalid)?;
            t.insert("id", toml_edit::value(*id));
            let bad = check_ca_paths(&t, Some(&before), &dirs, path, id, index);
            if !bad.is_empty() {
                return Err(ChangeError::Invalid(bad));
            }
            edit::put_policy_in(&mut doc, path, Some(id), t)?;
        }
        Edit::SetEnabled(id, on) => {
            edit::set_enabled_in(&mut doc, path, id, *on)?;
        }
        Edit::Delete(id) => edit::delete_policy_in(&mut doc, path, id)?,
    }
    let text = doc.to_string();
    let cfg = config::parse(&text, path)?;
    // The changed policy's CA is loaded as `run` and `validate` load it, so
    // a change that saves also reloads.
    if let (Some(p), false) = (cfg.policy(&target), matches!(edit, Edit::Delete(_))) {
        if let Err(e) = PolicyCa::load(&p.ca_cert, &p.ca_key, &p.ca_chain, SystemTime::now()) {
            let index = cfg.policies.iter().position(|q| q.id == p.id).unwrap_or(0) + 1;
            return Err(ChangeError::Invalid(vec![problem(
                path,
                &target,
                index,
                "ca_cert",
                format!("CA: {e}"),
            )]));
        }
    }
    edit::store(path, &doc)?;
    let after = policy_json(&doc, &target);
    state
        .audit
        .record(from, edit.action(), &target, before, after);
    let resp = state.app.handle(&Request::Reload);
    Ok(Committed {
        reloaded: resp.ok,
        message: resp.message,
    })
}

/// Where the trial CA is made: `<first ca_dir>/trial`.
pub fn trial_dir(console: &config::Console) -> Option<PathBuf> {
    console.ca_dirs.first().map(|d| d.join("trial"))
}

/// Whether "Apply for a trial certificate" is still offered (it is offered once).
pub fn trial_offered(console: &config::Console) -> bool {
    trial_dir(console).is_some_and(|d| !d.join(crate::pki::trial::CERT_FILE).exists())
}

/// Makes the install's trial CA (once); returns its certificate and key.
pub fn make_trial_ca(state: &State, from: IpAddr) -> Result<(PathBuf, PathBuf), ChangeError> {
    let _serial = state.edit_lock.lock().unwrap_or_else(|e| e.into_inner());
    let console = state
        .console_config()
        .ok_or_else(|| ChangeError::Io("the configuration has no [console] section".into()))?;
    let dir =
        trial_dir(&console).ok_or_else(|| ChangeError::Io("[console] ca_dirs is empty".into()))?;
    if !trial_offered(&console) {
        return Err(ChangeError::Conflict(format!(
            "the trial certificate was made already ({}); a trial certificate can be applied for only once",
            dir.join(crate::pki::trial::CERT_FILE).display()
        )));
    }
    let (cert, key) =
        crate::pki::trial::create(&dir, crate::pki::KeyKind::EcdsaP256, SystemTime::now())
            .map_err(|e| ChangeError::Io(e.to_string()))?;
    state.audit.record(
        from,
        "ca.trial",
        &cert.display().to_string(),
        Value::Null,
        serde_json::json!({ "ca_cert": cert, "ca_key": key }),
    );
    Ok((cert, key))
}

/// A CA the console can offer: a certificate and its key in one of the
/// `ca_dirs` that load as a policy CA.
#[derive(Debug, Clone, Serialize)]
pub struct CaChoice {
    /// Certificate file.
    pub ca_cert: PathBuf,
    /// Key file.
    pub ca_key: PathBuf,
    /// Subject.
    pub subject: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// Days of validity left.
    pub days_left: i64,
    /// Warnings (under a year left, ...).
    pub warnings: Vec<String>,
}

/// The CAs found in `dirs` (and their direct subdirectories): `X.crt`
/// beside `X.key`. Files that do not load as a CA are left out.
pub fn available_cas(dirs: &[PathBuf]) -> Vec<CaChoice> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut visit = |dir: &Path, out: &mut Vec<CaChoice>| {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for cert in entries {
            if cert.extension().and_then(|e| e.to_str()) != Some("crt") {
                continue;
            }
            let key = cert.with_extension("key");
            let inside = |p: &Path| p.canonicalize().is_ok_and(|c| c.starts_with(dir));
            if !key.is_file() || !inside(&cert) || !inside(&key) || !seen.insert(cert.clone()) {
                continue;
            }
            if let Ok(ca) = PolicyCa::load(&cert, &key, &[], SystemTime::now()) {
                let s = ca.summary();
                out.push(CaChoice {
                    ca_cert: cert,
                    ca_key: key,
                    subject: s.subject,
                    not_after: s.not_after,
                    days_left: s.days_left,
                    warnings: s.warnings,
                });
            }
        }
    };
    for d in dirs {
        let Ok(root) = d.canonicalize() else { continue };
        visit(&root, &mut out);
        if let Ok(rd) = std::fs::read_dir(&root) {
            // A symbolic link out of the CA dir is not followed.
            let mut subs: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir() && p.canonicalize().is_ok_and(|c| c.starts_with(&root)))
                .collect();
            subs.sort();
            for s in subs {
                visit(&s, &mut out);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_console_key_is_a_config_key() {
        for k in POLICY_KEYS {
            let k = if *k == "scopes" { "scope" } else { k };
            assert!(crate::config::POLICY_KEYS.contains(&k), "{k}");
        }
    }

    #[test]
    fn json_form_becomes_a_policy_table_and_back() {
        let v = json!({
            "id": "pol-a", "enabled": false, "ca_cert": "ca/a.crt", "ca_key": "ca/a.key",
            "scopes": [{"id": "s1", "source_ips": ["192.0.2.10"], "destination_ports": ["443/443"]}]
        });
        let t = policy_table(&v, Path::new("c.toml"), 1).unwrap();
        assert_eq!(table_json(&t), v);
    }

    #[test]
    fn unknown_keys_and_nested_objects_are_refused_with_validate_wording() {
        let v = json!({"id": "pol-a", "keylog": "/etc/shadow", "name": {"x": 1},
                       "scopes": [{"id": "s1", "sorce_ips": []}]});
        let errs = policy_table(&v, Path::new("c.toml"), 2).unwrap_err();
        let msgs: Vec<&str> = errs.iter().map(|p| p.message.as_str()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("c.toml: policy \"pol-a\": unknown key \"keylog\"")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("name must not be an object")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("scopes #1: unknown key \"sorce_ips\"")),
            "{msgs:?}"
        );
        assert!(policy_table(&json!([1]), Path::new("c.toml"), 1).is_err());
    }

    #[test]
    fn ca_paths_outside_the_allowed_dirs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("ca");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::write(allowed.join("x.crt"), "x").unwrap();
        std::fs::write(dir.path().join("outside.crt"), "x").unwrap();
        let file = dir.path().join("c.toml");
        let t = |cert: &str| {
            policy_table(
                &json!({"id": "p", "ca_cert": cert, "ca_key": "ca/x.crt"}),
                &file,
                1,
            )
            .unwrap()
        };
        let ok = check_ca_paths(
            &t("ca/x.crt"),
            None,
            std::slice::from_ref(&allowed),
            &file,
            "p",
            1,
        );
        assert!(ok.is_empty(), "{ok:?}");
        for bad in [
            "ca/../outside.crt",
            "/etc/passwd",
            "../../../../etc/shadow",
            "ca/nope.crt",
        ] {
            let errs = check_ca_paths(&t(bad), None, std::slice::from_ref(&allowed), &file, "p", 1);
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert_eq!(errs[0].field, "ca_cert");
            assert!(
                errs[0].message.contains("[console] ca_dirs"),
                "{}",
                errs[0].message
            );
        }
        // The policy's current CA stays allowed (a policy made with the CLI).
        let old = json!({"ca_cert": "/etc/passwd"});
        assert!(
            check_ca_paths(&t("/etc/passwd"), Some(&old), &[allowed], &file, "p", 1).is_empty()
        );
    }
}
