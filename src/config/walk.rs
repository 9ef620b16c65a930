//! The generic part of reading a config file: a TOML table with its place
//! in the file (policy, scope, key prefix), typed getters that report a
//! wrong type, a missing key or an unknown one (with a suggestion) as a
//! `ConfigError` with file, policy, scope and field, and the collector of
//! all errors of a file. `build.rs` turns the tables into the domain types
//! with it.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::error::{thousands, ConfigError, ItemRef};

/// Collects errors for one file and knows where relative paths start.
pub(super) struct Cx {
    pub(super) file: PathBuf,
    pub(super) base: PathBuf,
    pub(super) errors: Vec<ConfigError>,
}

impl Cx {
    pub(super) fn push(&mut self, at: &At, field: String, message: String) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            policy: at.policy.clone(),
            scope: at.scope.clone(),
            field,
            message,
        });
    }

    pub(super) fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

/// Where in the file a table sits: its policy, its scope and the key prefix.
#[derive(Debug, Clone, Default)]
pub(super) struct At {
    pub(super) policy: Option<ItemRef>,
    pub(super) scope: Option<ItemRef>,
    pub(super) prefix: String,
}

/// A table of the file together with its location.
pub(super) struct Tbl<'t> {
    pub(super) t: &'t Table,
    pub(super) at: At,
    /// For the entries of an array of tables outside policies
    /// (`webfilter.rule #2`): named before "missing"/"unknown key" messages.
    pub(super) label: Option<String>,
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// A short rendering of an offending value for messages.
pub(super) fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => quote(s),
        Value::Array(a) => return format!("an array of {} entries", a.len()),
        Value::Table(_) => return "a table".to_string(),
        other => other.to_string(),
    };
    truncate(s)
}

pub(super) fn quote(s: &str) -> String {
    truncate(format!("\"{}\"", s.escape_debug()))
}

pub(super) fn truncate(mut s: String) -> String {
    const MAX: usize = 80;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

pub(super) fn signed(n: i64) -> String {
    if n < 0 {
        format!("-{}", thousands(n.unsigned_abs()))
    } else {
        thousands(n as u64)
    }
}

pub(super) fn one_of<T>(opts: &[(&str, T)]) -> String {
    let names: Vec<String> = opts.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    match names.len() {
        0 => String::new(),
        1 => names[0].clone(),
        n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

/// Edit distance, bounded in cost by only being called on short keys.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(super) fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    if key.len() > 64 {
        return None;
    }
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (distance(&lower, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

impl<'t> Tbl<'t> {
    pub(super) fn new(t: &'t Table, at: At) -> Self {
        Tbl { t, at, label: None }
    }

    /// A table that is entry `index` of the array of tables `name`.
    pub(super) fn entry(t: &'t Table, name: &str, index: usize) -> Self {
        let label = format!("{name} #{index}");
        Tbl {
            t,
            at: At {
                prefix: format!("{label} "),
                ..At::default()
            },
            label: Some(label),
        }
    }

    pub(super) fn field(&self, key: &str) -> String {
        format!("{}{}", self.at.prefix, key)
    }

    /// Reports `"<field> <rest>"`.
    pub(super) fn fail(&self, cx: &mut Cx, key: &str, rest: impl Display) {
        let field = self.field(key);
        cx.push(&self.at, field.clone(), format!("{field} {rest}"));
    }

    /// Reports every key of the table that the schema does not know.
    pub(super) fn known(&self, cx: &mut Cx, known: &[&str]) {
        for key in self.t.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let field = self.field(key);
            let (label, shown) = match &self.label {
                Some(l) => (format!("{l}: "), key.to_string()),
                None => (String::new(), field.clone()),
            };
            let hint = match suggest(key, known) {
                Some(k) if self.label.is_some() => format!(" (did you mean \"{k}\"?)"),
                Some(k) => format!(" (did you mean \"{}\"?)", self.field(k)),
                None => String::new(),
            };
            cx.push(
                &self.at,
                field,
                format!(
                    "{label}unknown key {}{hint}; the keys here are: {}",
                    quote(&shown),
                    known.join(", ")
                ),
            );
        }
    }

    pub(super) fn missing(&self, cx: &mut Cx, key: &str) {
        let field = self.field(key);
        let message = match &self.label {
            Some(l) => format!("{l}: missing required key \"{key}\""),
            None => format!("missing required key \"{field}\""),
        };
        cx.push(&self.at, field, message);
    }

    pub(super) fn wrong_type(&self, cx: &mut Cx, key: &str, expected: &str, v: &Value) {
        let found = match v {
            Value::Array(_) | Value::Table(_) => show(v),
            _ => format!("{} {}", kind(v), show(v)),
        };
        self.fail(cx, key, format_args!("must be {expected}, found {found}"));
    }

    pub(super) fn string(&self, cx: &mut Cx, key: &str, required: bool) -> Option<&'t str> {
        match self.t.get(key) {
            None => {
                if required {
                    self.missing(cx, key);
                }
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(v) => {
                self.wrong_type(cx, key, "a string", v);
                None
            }
        }
    }

    pub(super) fn boolean(&self, cx: &mut Cx, key: &str) -> Option<bool> {
        match self.t.get(key) {
            None => None,
            Some(Value::Boolean(b)) => Some(*b),
            Some(v) => {
                self.wrong_type(cx, key, "true or false", v);
                None
            }
        }
    }

    /// An integer within `min..=max`; `Err(())` when present but invalid.
    pub(super) fn int(
        &self,
        cx: &mut Cx,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, ()> {
        match self.t.get(key) {
            None => Ok(None),
            Some(Value::Integer(n)) if (min..=max).contains(n) => Ok(Some(*n)),
            Some(Value::Integer(n)) => {
                self.fail(
                    cx,
                    key,
                    format_args!(
                        "is {}; it must be between {} and {}",
                        signed(*n),
                        signed(min),
                        signed(max)
                    ),
                );
                Err(())
            }
            Some(v) => {
                self.wrong_type(cx, key, "an integer", v);
                Err(())
            }
        }
    }

    /// A fraction between 0 and 1 (a float, or the integers 0 and 1);
    /// `Err(())` when present but invalid.
    pub(super) fn fraction(&self, cx: &mut Cx, key: &str) -> Result<Option<f64>, ()> {
        let x = match self.t.get(key) {
            None => return Ok(None),
            Some(Value::Float(x)) => *x,
            Some(Value::Integer(n)) => *n as f64,
            Some(v) => {
                self.wrong_type(cx, key, "a number between 0 and 1", v);
                return Err(());
            }
        };
        if (0.0..=1.0).contains(&x) {
            Ok(Some(x))
        } else {
            self.fail(cx, key, format_args!("is {x}; it must be between 0 and 1"));
            Err(())
        }
    }

    /// One of a fixed set of strings; `Err(())` when present but invalid.
    pub(super) fn choice<T: Copy>(
        &self,
        cx: &mut Cx,
        key: &str,
        opts: &[(&str, T)],
    ) -> Result<Option<T>, ()> {
        match self.t.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => match opts.iter().find(|(n, _)| n == s) {
                Some((_, t)) => Ok(Some(*t)),
                None => {
                    self.fail(
                        cx,
                        key,
                        format_args!("is {}; it must be {}", quote(s), one_of(opts)),
                    );
                    Err(())
                }
            },
            Some(v) => {
                self.wrong_type(cx, key, &one_of(opts), v);
                Err(())
            }
        }
    }

    /// A choice with a default when absent; `None` when invalid.
    pub(super) fn choice_or<T: Copy>(
        &self,
        cx: &mut Cx,
        key: &str,
        opts: &[(&str, T)],
        default: T,
    ) -> Option<T> {
        self.choice(cx, key, opts)
            .ok()
            .map(|v| v.unwrap_or(default))
    }

    pub(super) fn array(
        &self,
        cx: &mut Cx,
        key: &str,
        expected: &str,
        required: bool,
    ) -> Option<&'t [Value]> {
        match self.t.get(key) {
            None => {
                if required {
                    self.missing(cx, key);
                }
                None
            }
            Some(Value::Array(a)) => Some(a),
            Some(v) => {
                self.wrong_type(cx, key, expected, v);
                None
            }
        }
    }

    /// Checks each string of a list with `check`, reporting at most
    /// `SHOWN_PER_LIST` bad entries and a count of the rest. `None` if any was bad.
    pub(super) fn each_str<T>(
        &self,
        cx: &mut Cx,
        key: &str,
        items: &'t [Value],
        mut check: impl FnMut(&'t str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity(items.len());
        let mut bad = 0usize;
        for (i, v) in items.iter().enumerate() {
            let entry = format!("{key} #{}", i + 1);
            let msg = match v {
                Value::String(s) => match check(s) {
                    Ok(t) => {
                        out.push(t);
                        continue;
                    }
                    Err(msg) => format!("{} {msg}", quote(s)),
                },
                other => format!("must be a string, found {} {}", kind(other), show(other)),
            };
            bad += 1;
            if bad <= SHOWN_PER_LIST {
                self.fail(cx, &entry, msg);
            }
        }
        if bad > SHOWN_PER_LIST {
            self.fail(
                cx,
                key,
                format_args!(
                    "has {} more invalid entries not shown",
                    thousands((bad - SHOWN_PER_LIST) as u64)
                ),
            );
        }
        (bad == 0).then_some(out)
    }

    /// A path, resolved against the config file's directory.
    pub(super) fn path(&self, cx: &mut Cx, key: &str, required: bool) -> Option<PathBuf> {
        let s = self.string(cx, key, required)?;
        match check_path(s) {
            Ok(()) => Some(cx.resolve(s)),
            Err(e) => {
                self.fail(cx, key, format_args!("{} {e}", quote(s)));
                None
            }
        }
    }

    pub(super) fn paths(&self, cx: &mut Cx, key: &str) -> Option<Vec<PathBuf>> {
        let items = self.array(cx, key, "an array of paths", false)?;
        let checked = self.each_str(cx, key, items, |s| check_path(s).map(|()| s))?;
        Some(checked.into_iter().map(|s| cx.resolve(s)).collect())
    }

    pub(super) fn sub(&self, cx: &mut Cx, key: &str) -> Option<&'t Table> {
        match self.t.get(key) {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(v) => {
                self.wrong_type(cx, key, &format!("a table ([{}])", self.field(key)), v);
                None
            }
        }
    }

    /// An array of tables (`[[key]]`); elements of another type are reported and skipped.
    pub(super) fn tables(&self, cx: &mut Cx, key: &str) -> Vec<(usize, &'t Table)> {
        let expected = format!("an array of tables ([[{}]])", self.field(key));
        match self.t.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    match v {
                        Value::Table(t) => out.push((i + 1, t)),
                        other => self.fail(
                            cx,
                            &format!("{key} #{}", i + 1),
                            format_args!("must be a table, found {} {}", kind(other), show(other)),
                        ),
                    }
                }
                out
            }
            Some(v) => {
                self.wrong_type(cx, key, &expected, v);
                Vec::new()
            }
        }
    }
}

/// Element errors shown per list before the rest are summarised, so a list of
/// 5,000 bad entries yields a readable report rather than 5,000 lines.
pub(super) const SHOWN_PER_LIST: usize = 10;

pub(super) fn check_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("is empty; a path is required".into())
    } else if s.contains('\0') {
        Err("contains a NUL character".into())
    } else {
        Ok(())
    }
}
