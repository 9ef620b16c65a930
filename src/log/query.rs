//! Filtering traffic-log records, as the seed product's log audit page does.

use std::io::BufRead;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tlsinspect_pipeline::hostglob::{HostGlob, HostGlobError};

/// Why a query could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// `--since` is not a duration.
    #[error("--since {value:?} is not a duration (examples: 30s, 10m, 2h, 1d): {reason}")]
    BadSince {
        /// What was given.
        value: String,
        /// Why it did not parse.
        reason: String,
    },
    /// `--action` is not one of the three actions.
    #[error("--action {0:?} is not one of inspected, pass, blocked")]
    BadAction(String),
    /// `--sni` is not a host glob.
    #[error("--sni {value:?} {reason}")]
    BadSni {
        /// What was given.
        value: String,
        /// Why it is refused.
        reason: HostGlobError,
    },
}

/// Which records to keep. Every set field must match.
#[derive(Debug, Default)]
pub struct Filter {
    /// Policy id, exact.
    pub policy: Option<String>,
    /// Scope id, exact.
    pub scope: Option<String>,
    /// `inspected`, `pass` or `blocked`.
    pub action: Option<String>,
    /// Glob on the SNI (`*.example.com`).
    pub sni: Option<HostGlob>,
    /// Only records at or after this instant.
    pub since: Option<SystemTime>,
}

impl Filter {
    /// Builds a filter from command-line strings; `now` anchors `--since`.
    pub fn new(
        policy: Option<&str>,
        scope: Option<&str>,
        action: Option<&str>,
        sni: Option<&str>,
        since: Option<&str>,
        now: SystemTime,
    ) -> Result<Filter, QueryError> {
        if let Some(a) = action {
            if !matches!(a, "inspected" | "pass" | "blocked") {
                return Err(QueryError::BadAction(a.to_string()));
            }
        }
        let since = match since {
            None => None,
            Some(s) => {
                let d: Duration =
                    humantime::parse_duration(s).map_err(|e| QueryError::BadSince {
                        value: s.to_string(),
                        reason: e.to_string(),
                    })?;
                Some(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH))
            }
        };
        Ok(Filter {
            policy: policy.map(str::to_string),
            scope: scope.map(str::to_string),
            action: action.map(str::to_string),
            sni: sni
                .map(|g| {
                    HostGlob::new(g).map_err(|reason| QueryError::BadSni {
                        value: g.to_string(),
                        reason,
                    })
                })
                .transpose()?,
            since,
        })
    }

    /// Whether `rec` passes every set condition.
    ///
    /// Policy, scope and action are read from the record's `tlsinspect`
    /// object; `--action` therefore selects `tls` and `flow` records, the
    /// ones that carry the decision.
    pub fn matches(&self, rec: &Value) -> bool {
        let field = |name: &str| {
            rec.get(super::record::EXTENSION)
                .and_then(|x| x.get(name))
                .and_then(Value::as_str)
        };
        if let Some(p) = &self.policy {
            if field("policy_id") != Some(p.as_str()) {
                return false;
            }
        }
        if let Some(s) = &self.scope {
            if field("scope_id") != Some(s.as_str()) {
                return false;
            }
        }
        if let Some(a) = &self.action {
            if field("action") != Some(a.as_str()) {
                return false;
            }
        }
        if let Some(glob) = &self.sni {
            let sni = rec
                .get("tls")
                .and_then(|t| t.get("sni"))
                .and_then(Value::as_str);
            match sni {
                Some(sni) if glob.matches(sni) => {}
                _ => return false,
            }
        }
        if let Some(since) = self.since {
            let ts = rec
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(super::record::parse_timestamp);
            match ts {
                Some(ts) if ts >= since => {}
                _ => return false,
            }
        }
        true
    }
}

/// Result of scanning a log.
#[derive(Debug, Default)]
pub struct Scan {
    /// Records that matched, in file order.
    pub records: Vec<Value>,
    /// Lines that were not JSON objects (reported, not fatal).
    pub malformed_lines: Vec<usize>,
}

/// Reads JSON lines from `input` and keeps those matching `filter`.
pub fn scan(input: impl BufRead, filter: &Filter) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    for (idx, line) in input.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(v) if v.is_object() => {
                if filter.matches(&v) {
                    out.records.push(v);
                }
            }
            _ => out.malformed_lines.push(idx + 1),
        }
    }
    Ok(out)
}

/// One line of the human-readable table for a record.
pub fn table_row(rec: &Value) -> String {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let ext = &rec[super::record::EXTENSION];
    let kind = s(&rec["event_type"]);
    let what = match kind.as_str() {
        "alert" => format!(
            "alert {} {}:{} {}",
            s(&rec["alert"]["action"]),
            s(&rec["alert"]["gid"]),
            s(&rec["alert"]["signature_id"]),
            s(&rec["alert"]["signature"])
        ),
        "http" => format!(
            "http {} {}{} {}",
            s(&rec["http"]["http_method"]),
            s(&rec["http"]["hostname"]),
            s(&rec["http"]["url"]),
            s(&rec["http"]["status"])
        ),
        "flow" => format!(
            "flow {} ({}) up={} down={}",
            s(&ext["action"]),
            s(&ext["reason"]),
            s(&rec["flow"]["bytes_toserver"]),
            s(&rec["flow"]["bytes_toclient"])
        ),
        "tls" => format!(
            "tls {} ({}) {}",
            s(&ext["action"]),
            s(&ext["reason"]),
            s(&rec["tls"]["version"])
        ),
        other => other.to_string(),
    };
    format!(
        "{}  {}/{}  {}:{} -> {}:{}  sni={}  {}",
        s(&rec["timestamp"]),
        s(&ext["policy_id"]),
        s(&ext["scope_id"]),
        s(&rec["src_ip"]),
        s(&rec["src_port"]),
        s(&rec["dest_ip"]),
        s(&rec["dest_port"]),
        s(&rec["tls"]["sni"]),
        what,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    const LOG: &str = r#"{"timestamp":"2026-11-24T10:00:00.000000+0000","event_type":"flow","tls":{"sni":"www.Example.com"},"tlsinspect":{"policy_id":"p1","scope_id":"s1","action":"inspected","reason":"inspected"}}
not json at all
{"timestamp":"2026-11-24T11:00:00.000000+0000","event_type":"flow","tls":{"sni":"api.bank.example"},"tlsinspect":{"policy_id":"p1","scope_id":"s2","action":"pass","reason":"tls13"}}
{"timestamp":"2026-11-24T11:30:00.000000+0000","event_type":"flow","tlsinspect":{"policy_id":"p2","scope_id":"s1","action":"blocked","reason":"non_tls"}}
"#;

    fn run(f: Filter) -> Vec<Value> {
        scan(LOG.as_bytes(), &f).unwrap().records
    }

    fn at(h: u8, m: u8) -> SystemTime {
        let t = format!("2026-11-24T{h:02}:{m:02}:00Z");
        OffsetDateTime::parse(&t, &Rfc3339).unwrap().into()
    }

    #[test]
    fn filters_combine() {
        let f = |p, s, a, sni, since| Filter::new(p, s, a, sni, since, at(12, 0)).unwrap();
        assert_eq!(run(f(None, None, None, None, None)).len(), 3);
        assert_eq!(run(f(Some("p1"), None, None, None, None)).len(), 2);
        assert_eq!(run(f(Some("p1"), Some("s2"), None, None, None)).len(), 1);
        assert_eq!(run(f(None, None, Some("blocked"), None, None)).len(), 1);
        let sni = run(f(None, None, None, Some("*.example.com"), None));
        assert_eq!(sni.len(), 1, "glob is case-insensitive");
        assert_eq!(sni[0]["tlsinspect"]["reason"], "inspected");
        assert_eq!(run(f(None, None, None, None, Some("45m"))).len(), 1);
        assert_eq!(run(f(None, None, None, None, Some("1h 30m"))).len(), 2);
    }

    #[test]
    fn malformed_lines_are_reported_not_fatal() {
        let scan = scan(LOG.as_bytes(), &Filter::default()).unwrap();
        assert_eq!(scan.malformed_lines, vec![2]);
        assert_eq!(scan.records.len(), 3);
    }

    #[test]
    fn bad_arguments_are_explained() {
        let e = Filter::new(None, None, Some("allowed"), None, None, at(0, 0)).unwrap_err();
        assert!(e.to_string().contains("inspected, pass, blocked"));
        let e = Filter::new(None, None, None, None, Some("yesterday"), at(0, 0)).unwrap_err();
        assert!(e.to_string().contains("--since \"yesterday\""));
        let e = Filter::new(None, None, None, Some("*bank*"), None, at(0, 0)).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("--sni \"*bank*\" has more than one '*'"));
    }
}
