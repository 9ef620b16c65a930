//! The console's view of traffic-log records: the Log audit filters and
//! the fields the pages show.
//!
//! This is the one file of the console that knows the record's field names
//! (`src/log/record.rs` writes them; `src/log/query.rs` filters on them).
//! The filters `tlsinspect logs` has are delegated to [`Filter`]; the ones
//! only the console has (reason, address, a time range) and the columns the
//! pages show are here.

use std::io::BufReader;
use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::log::query::{self, Filter};

/// Records per page by default, and the most a page or API call returns.
pub const PAGE: usize = 50;
/// The most records `limit` may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// The Log audit filters as the form and the API send them (empty = unset).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct LogParams {
    /// Only records newer than this duration (`10m`, `2h`, `1d`).
    pub since: Option<String>,
    /// Start of the time range (RFC 3339, or `YYYY-MM-DDTHH:MM` UTC as a
    /// browser's datetime-local field sends it).
    pub from: Option<String>,
    /// End of the time range.
    pub until: Option<String>,
    /// Policy id.
    pub policy: Option<String>,
    /// Scope id.
    pub scope: Option<String>,
    /// `inspected`, `pass` or `blocked`.
    pub action: Option<String>,
    /// Decision reason (`inspected`, `tls13`, `excluded`, ...).
    pub reason: Option<String>,
    /// SNI glob.
    pub sni: Option<String>,
    /// Client or server address.
    pub addr: Option<String>,
    /// 1-based page.
    pub page: Option<String>,
    /// Records per page.
    pub limit: Option<String>,
}

fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A parsed Log audit query.
#[derive(Debug)]
pub struct LogQuery {
    filter: Filter,
    reason: Option<String>,
    addr: Option<IpAddr>,
    from: Option<SystemTime>,
    until: Option<SystemTime>,
    /// 1-based page.
    pub page: usize,
    /// Records per page.
    pub limit: usize,
}

fn instant(field: &str, s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.into());
    }
    // datetime-local: no seconds, no offset; taken as UTC (the log's zone).
    let with = if s.len() == 16 {
        format!("{s}:00Z")
    } else {
        format!("{s}Z")
    };
    OffsetDateTime::parse(&with, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| format!("{field} {s:?} is not a time (RFC 3339 such as 2026-12-01T10:00:00Z)"))
}

impl LogQuery {
    /// Checks `p`; `now` anchors `since`.
    pub fn new(p: &LogParams, now: SystemTime) -> Result<LogQuery, String> {
        let filter = Filter::new(
            set(&p.policy),
            set(&p.scope),
            set(&p.action),
            set(&p.sni),
            set(&p.since),
            now,
        )
        .map_err(|e| e.to_string().replace("--", ""))?;
        let addr = match set(&p.addr) {
            None => None,
            Some(a) => Some(
                a.parse::<IpAddr>()
                    .map_err(|_| format!("addr {a:?} is not an IPv4 or IPv6 address"))?,
            ),
        };
        let num = |field: &str, v: &Option<String>, default: usize, max: usize| match set(v) {
            None => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!("{field} {s:?} must be a number from 1 to {max}")),
            },
        };
        Ok(LogQuery {
            filter,
            reason: set(&p.reason).map(str::to_owned),
            addr,
            from: set(&p.from).map(|s| instant("from", s)).transpose()?,
            until: set(&p.until).map(|s| instant("until", s)).transpose()?,
            page: num("page", &p.page, 1, 1_000_000)?,
            limit: num("limit", &p.limit, PAGE, MAX_LIMIT)?,
        })
    }

    fn matches(&self, rec: &Value) -> bool {
        let r = Record(rec);
        if let Some(reason) = &self.reason {
            if r.ext("reason") != Some(reason.as_str()) {
                return false;
            }
        }
        if let Some(a) = self.addr {
            let a = a.to_string();
            if r.str("src_ip") != Some(a.as_str()) && r.str("dest_ip") != Some(a.as_str()) {
                return false;
            }
        }
        if self.from.is_some() || self.until.is_some() {
            let Some(t) = r.time() else { return false };
            if self.from.is_some_and(|f| t < f) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }
}

/// One page of matching records, newest first.
#[derive(Debug, Default)]
pub struct LogPage {
    /// The records of the page.
    pub records: Vec<Value>,
    /// All records that matched.
    pub total: usize,
    /// Lines of the file that were not JSON objects.
    pub malformed: usize,
}

/// Every record of the log at `path` that `q` matches, newest first.
pub fn matching(path: &Path, q: &LogQuery) -> std::io::Result<(Vec<Value>, usize)> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let scan = query::scan(BufReader::new(file), &q.filter)?;
    let mut records: Vec<Value> = scan.records.into_iter().filter(|r| q.matches(r)).collect();
    records.reverse();
    Ok((records, scan.malformed_lines.len()))
}

/// The page `q` asks for.
pub fn page(path: &Path, q: &LogQuery) -> std::io::Result<LogPage> {
    let (records, malformed) = matching(path, q)?;
    let total = records.len();
    let start = (q.page - 1).saturating_mul(q.limit);
    Ok(LogPage {
        records: records.into_iter().skip(start).take(q.limit).collect(),
        total,
        malformed,
    })
}

/// Read access to a record's fields by what the pages call them.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a>(pub &'a Value);

impl<'a> Record<'a> {
    fn str(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// A field of the `tlsinspect` extension object of an EVE record.
    fn ext(&self, key: &str) -> Option<&'a str> {
        self.0
            .get("tlsinspect")
            .and_then(|t| t.get(key))
            .and_then(Value::as_str)
    }

    fn ext_text(&self, key: &str) -> String {
        self.ext(key).unwrap_or("-").to_owned()
    }

    fn text(&self, key: &str) -> String {
        match self.0.get(key) {
            None | Some(Value::Null) => "-".into(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        }
    }

    /// When it was written.
    pub fn time(&self) -> Option<SystemTime> {
        self.str("timestamp")
            .and_then(crate::log::record::parse_timestamp)
    }

    /// The timestamp as written.
    pub fn timestamp(&self) -> String {
        self.text("timestamp")
    }

    /// `flow`, `alert`, ...
    pub fn event_type(&self) -> String {
        self.text("event_type")
    }

    /// Policy id.
    pub fn policy(&self) -> String {
        self.ext_text("policy_id")
    }

    /// Scope id.
    pub fn scope(&self) -> String {
        self.ext_text("scope_id")
    }

    /// `inspected`, `pass` or `blocked` (for alerts: the alert's action).
    pub fn action(&self) -> String {
        match self.ext("action") {
            Some(a) => a.to_owned(),
            None => self
                .0
                .get("alert")
                .and_then(|a| a.get("action"))
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned(),
        }
    }

    /// Decision reason.
    pub fn reason(&self) -> String {
        self.ext_text("reason")
    }

    /// The SNI, if any.
    pub fn sni(&self) -> Option<&'a str> {
        self.0
            .get("tls")
            .and_then(|t| t.get("sni"))
            .and_then(Value::as_str)
    }

    /// `ip:port` of the client.
    pub fn source(&self) -> String {
        format!("{}:{}", self.text("src_ip"), self.text("src_port"))
    }

    /// `ip:port` of the server.
    pub fn destination(&self) -> String {
        format!("{}:{}", self.text("dest_ip"), self.text("dest_port"))
    }

    /// Bytes client to server and back.
    pub fn bytes(&self) -> (u64, u64) {
        let flow = self.0.get("flow");
        let n = |k: &str| {
            flow.and_then(|f| f.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        (n("bytes_toserver"), n("bytes_toclient"))
    }

    /// Whether this is a flow record (one per connection).
    pub fn is_flow(&self) -> bool {
        self.str("event_type") == Some("flow")
    }

    /// Alert message of an alert record, or of the flow's alerts.
    pub fn alerts(&self) -> Vec<String> {
        self.0
            .get("alert")
            .and_then(|a| a.get("signature"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"timestamp":"2026-11-24T10:00:00.000000+0000","event_type":"flow","tlsinspect":{"policy_id":"p1","scope_id":"s1","action":"inspected","reason":"inspected"},"src_ip":"192.0.2.10","src_port":1,"dest_ip":"203.0.113.5","dest_port":443,"tls":{"sni":"www.example.com"},"flow":{"bytes_toserver":10,"bytes_toclient":20}}
{"timestamp":"2026-11-24T11:00:00.000000+0000","event_type":"flow","tlsinspect":{"policy_id":"p1","scope_id":"s2","action":"pass","reason":"tls13"},"src_ip":"192.0.2.11","src_port":2,"dest_ip":"203.0.113.6","dest_port":443}
garbage
"#;

    fn run(p: LogParams) -> LogPage {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.jsonl");
        std::fs::write(&f, LOG).unwrap();
        page(&f, &LogQuery::new(&p, SystemTime::now()).unwrap()).unwrap()
    }

    #[test]
    fn filters_pages_and_newest_first() {
        let all = run(LogParams::default());
        assert_eq!(all.total, 2);
        assert_eq!(all.malformed, 1);
        assert_eq!(Record(&all.records[0]).reason(), "tls13");
        let p = |f: fn(&mut LogParams)| {
            let mut q = LogParams::default();
            f(&mut q);
            run(q).total
        };
        assert_eq!(p(|q| q.reason = Some("tls13".into())), 1);
        assert_eq!(p(|q| q.addr = Some("203.0.113.5".into())), 1);
        assert_eq!(p(|q| q.from = Some("2026-11-24T10:30".into())), 1);
        assert_eq!(p(|q| q.until = Some("2026-11-24T10:30:00Z".into())), 1);
        assert_eq!(p(|q| q.policy = Some(String::new())), 2, "empty = unset");
        let mut q = LogParams {
            limit: Some("1".into()),
            page: Some("2".into()),
            ..Default::default()
        };
        let second = run(q.clone());
        assert_eq!((second.total, second.records.len()), (2, 1));
        let r = Record(&second.records[0]);
        assert_eq!(r.reason(), "inspected");
        assert_eq!(
            (r.policy(), r.scope(), r.action()),
            ("p1".into(), "s1".into(), "inspected".into())
        );
        assert_eq!(r.bytes(), (10, 20));
        q.limit = Some("0".into());
        assert!(LogQuery::new(&q, SystemTime::now())
            .unwrap_err()
            .contains("limit"));
        let bad = LogParams {
            addr: Some("nope".into()),
            ..Default::default()
        };
        assert!(LogQuery::new(&bad, SystemTime::now()).is_err());
    }
}
