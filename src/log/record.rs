//! Suricata EVE encoding of traffic-log records (DESIGN.md §7).
//!
//! One finished flow becomes several EVE events, as Suricata writes them:
//! a `tls` event (when a ClientHello was seen), one `http` event per
//! request, then the `flow` event; alerts are written as `alert` events
//! when raised, and `stats` events periodically. Every field outside the
//! `tlsinspect` object is one of Suricata's own (its `etc/schema.json`), so
//! Filebeat's Suricata module, Evebox, Arkime or a jq script read the log
//! unchanged; what EVE has no field for (policy and scope, our decision and
//! its reason, the two legs' versions, the upstream verification, the app)
//! lives under `tlsinspect`, present in every record of an in-scope flow.

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;
use tlsinspect_pipeline::api::{Alert, FlowAction, FlowMeta, FlowRecord, HttpTxn, TlsInfo};

/// The extension object holding what EVE has no field for.
pub const EXTENSION: &str = "tlsinspect";

/// Alert `gid` of IPS rules: Suricata's own default generator.
pub const GID_IPS: u64 = 1;
/// Alert `gid` of web-filter verdicts (`signature_id` = rule number).
pub const GID_WEBFILTER: u64 = 8001;
/// Alert `gid` of application-control verdicts (`signature_id` = rule number).
pub const GID_APPCONTROL: u64 = 8002;
/// Alert `gid` of HTTP protocol anomalies found by the parsers.
pub const GID_HTTP: u64 = 8003;

/// Formats a timestamp as Suricata does: local-offset-free UTC with
/// microseconds and a numeric offset, `2026-12-02T12:00:00.123456+0000`.
pub fn format_timestamp(ts: SystemTime) -> String {
    let dt = OffsetDateTime::from(ts);
    let fmt = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+0000"
    );
    dt.format(&fmt)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000000+0000"))
}

/// Parses a timestamp written by [`format_timestamp`] (or RFC 3339).
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let fmt = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond][offset_hour sign:mandatory][offset_minute]"
    );
    OffsetDateTime::parse(s, &fmt)
        .or_else(|_| OffsetDateTime::parse(s, &Rfc3339))
        .ok()
        .map(SystemTime::from)
}

/// An RFC 3339 certificate date as EVE's `tls.notbefore`/`notafter`
/// (`2026-12-02T12:00:00`, UTC, no zone).
fn tls_date(rfc3339: &str) -> Option<String> {
    let dt = OffsetDateTime::parse(rfc3339, &Rfc3339).ok()?;
    dt.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]"
    ))
    .ok()
}

/// Suricata's spelling of a protocol version (`TLS 1.2`, `TLSv1`, `SSLv3`).
fn eve_version(v: &str) -> String {
    match v {
        "TLS 1.0" | "TLSv1.0" => "TLSv1".into(),
        "TLS 1.1" | "TLSv1.1" => "TLS 1.1".into(),
        "TLSv1.2" => "TLS 1.2".into(),
        "TLSv1.3" => "TLS 1.3".into(),
        "SSL 3.0" => "SSLv3".into(),
        other => other.into(),
    }
}

/// The fields every event of a flow starts with, and its `tlsinspect` object.
fn head(
    event_type: &str,
    ts: SystemTime,
    meta: &FlowMeta,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut obj = Map::new();
    obj.insert("timestamp".into(), json!(format_timestamp(ts)));
    obj.insert("flow_id".into(), json!(meta.flow_id));
    obj.insert("event_type".into(), json!(event_type));
    obj.insert("src_ip".into(), json!(meta.src.ip().to_string()));
    obj.insert("src_port".into(), json!(meta.src.port()));
    obj.insert("dest_ip".into(), json!(meta.dest.ip().to_string()));
    obj.insert("dest_port".into(), json!(meta.dest.port()));
    obj.insert("proto".into(), json!("TCP"));
    let mut ext = Map::new();
    ext.insert("policy_id".into(), json!(&*meta.policy_id));
    ext.insert("scope_id".into(), json!(&*meta.scope_id));
    if let Some(t) = meta.tunnel {
        // Seen through a gateway load balancer: its GENEVE VNI and address,
        // to join a fleet's logs with the load balancer's.
        ext.insert(
            "geneve".into(),
            json!({"vni": t.vni, "load_balancer": t.peer.to_string()}),
        );
    }
    (obj, ext)
}

fn finish(mut obj: Map<String, Value>, ext: Map<String, Value>) -> Value {
    obj.insert(EXTENSION.into(), Value::Object(ext));
    Value::Object(obj)
}

fn insert_some(obj: &mut Map<String, Value>, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        obj.insert(key.into(), v.into());
    }
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The `app_proto` of an inspected flow, from the ALPN toward the client.
fn app_proto(rec: &FlowRecord) -> &'static str {
    match (&rec.tls, rec.meta.alpn.as_deref()) {
        (None, _) => "failed",
        (Some(_), _) if rec.action != FlowAction::Inspected => "tls",
        (Some(_), Some(b"h2")) => "http2",
        (Some(_), _) if rec.inspection.as_ref().is_some_and(|r| !r.http.is_empty()) => "http",
        (Some(_), _) => "tls",
    }
}

/// The `tls` event of a flow whose ClientHello was seen.
pub fn tls_json(rec: &FlowRecord, tls: &TlsInfo) -> Value {
    let (mut obj, mut ext) = head("tls", rec.timestamp, &rec.meta);
    obj.insert("app_proto".into(), json!("tls"));
    let mut t = Map::new();
    insert_some(&mut t, "sni", tls.sni.clone());
    insert_some(&mut t, "version", tls.version.as_deref().map(eve_version));
    if let Some(c) = &tls.upstream_cert {
        insert_some(&mut t, "subject", nonempty(&c.subject));
        insert_some(&mut t, "issuerdn", nonempty(&c.issuer));
        insert_some(&mut t, "serial", nonempty(&c.serial));
        insert_some(&mut t, "fingerprint", nonempty(&c.fingerprint));
        insert_some(&mut t, "notbefore", tls_date(&c.not_before));
        insert_some(&mut t, "notafter", tls_date(&c.not_after));
    }
    insert_some(&mut t, "ja4", tls.ja4.clone());
    obj.insert("tls".into(), Value::Object(t));

    ext.insert("action".into(), json!(rec.action.as_str()));
    ext.insert("reason".into(), json!(rec.reason.as_str()));
    let mut client = Map::new();
    insert_some(
        &mut client,
        "version",
        tls.version.as_deref().map(eve_version),
    );
    insert_some(&mut client, "cipher", tls.cipher.clone());
    insert_some(&mut client, "alpn", tls.alpn.clone());
    ext.insert("client".into(), Value::Object(client));
    let mut upstream = Map::new();
    insert_some(
        &mut upstream,
        "version",
        tls.upstream_version.as_deref().map(eve_version),
    );
    if let Some(c) = &tls.upstream_cert {
        upstream.insert("verified".into(), json!(c.verified));
        insert_some(&mut upstream, "error", c.error.clone());
    }
    if !upstream.is_empty() {
        ext.insert("upstream".into(), Value::Object(upstream));
    }
    finish(obj, ext)
}

/// One `http` event per request of an inspected flow.
pub fn http_json(rec: &FlowRecord, txn: &HttpTxn) -> Value {
    let (mut obj, mut ext) = head("http", rec.timestamp, &rec.meta);
    let h2 = rec.meta.alpn.as_deref() == Some(b"h2");
    obj.insert("app_proto".into(), json!(if h2 { "http2" } else { "http" }));
    let mut h = Map::new();
    h.insert("hostname".into(), json!(txn.host));
    h.insert("url".into(), json!(txn.url));
    h.insert("http_method".into(), json!(txn.method));
    h.insert(
        "protocol".into(),
        json!(if h2 { "HTTP/2" } else { "HTTP/1.1" }),
    );
    insert_some(&mut h, "status", txn.status);
    obj.insert("http".into(), Value::Object(h));
    if let Some(sni) = &rec.meta.sni {
        obj.insert("tls".into(), json!({ "sni": &**sni }));
    }
    if let Some((app, action)) = &txn.app {
        ext.insert("app".into(), json!({ "name": app, "action": action }));
    }
    finish(obj, ext)
}

/// The `flow` event written when a flow ends.
pub fn flow_json(rec: &FlowRecord) -> Value {
    let (mut obj, mut ext) = head("flow", rec.timestamp, &rec.meta);
    obj.insert("app_proto".into(), json!(app_proto(rec)));
    let start = rec
        .timestamp
        .checked_sub(Duration::from_millis(rec.duration_ms))
        .unwrap_or(rec.timestamp);
    let alerted = rec
        .inspection
        .as_ref()
        .is_some_and(|r| !r.alerts.is_empty());
    obj.insert(
        "flow".into(),
        json!({
            "bytes_toserver": rec.bytes_toserver,
            "bytes_toclient": rec.bytes_toclient,
            "start": format_timestamp(start),
            "end": format_timestamp(rec.timestamp),
            "age": rec.duration_ms / 1000,
            "state": "closed",
            "alerted": alerted,
            "action": if rec.action == FlowAction::Blocked { "drop" } else { "pass" },
        }),
    );
    if let Some(sni) = rec.tls.as_ref().and_then(|t| t.sni.as_ref()) {
        obj.insert("tls".into(), json!({ "sni": sni }));
    }
    ext.insert("action".into(), json!(rec.action.as_str()));
    ext.insert("reason".into(), json!(rec.reason.as_str()));
    ext.insert("duration_ms".into(), json!(rec.duration_ms));
    if let Some(app) = rec.inspection.as_ref().and_then(|r| r.app.as_ref()) {
        let action = rec
            .inspection
            .iter()
            .flat_map(|r| r.http.iter().rev())
            .find_map(|t| t.app.as_ref().filter(|(a, _)| a == app))
            .map(|(_, action)| action.clone());
        ext.insert("app".into(), json!({ "name": app, "action": action }));
    }
    finish(obj, ext)
}

/// Every event of a finished flow, in the order Suricata writes them:
/// `tls`, the `http` requests, then `flow`.
pub fn flow_events(rec: &FlowRecord) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(tls) = &rec.tls {
        out.push(tls_json(rec, tls));
    }
    if let Some(report) = &rec.inspection {
        out.extend(report.http.iter().map(|t| http_json(rec, t)));
    }
    out.push(flow_json(rec));
    out
}

/// Whether a verdict let the traffic through (EVE `allowed`) or not (`blocked`).
fn blocked(action: &str) -> bool {
    matches!(action, "drop" | "reject" | "deny")
}

/// The `alert` event of a verdict raised on a flow.
pub fn alert_json(meta: &FlowMeta, alert: &Alert, ts: SystemTime) -> Value {
    let (mut obj, mut ext) = head("alert", ts, meta);
    let gid = match alert.engine {
        "ips" => GID_IPS,
        "webfilter" => GID_WEBFILTER,
        "appcontrol" => GID_APPCONTROL,
        _ => GID_HTTP,
    };
    let category = alert.category.clone().unwrap_or_else(|| {
        match alert.engine {
            "webfilter" => "Web filter",
            "appcontrol" => "Application control",
            "ips" => "Not Suspicious Traffic",
            _ => "Generic Protocol Command Decode",
        }
        .to_string()
    });
    obj.insert(
        "alert".into(),
        json!({
            "action": if blocked(&alert.action) { "blocked" } else { "allowed" },
            "gid": gid,
            "signature_id": alert.sid,
            "rev": alert.rev,
            "signature": alert.msg,
            "category": category,
            // Suricata's default when neither priority nor classtype set one.
            "severity": alert.severity.unwrap_or(3),
        }),
    );
    if let Some(sni) = &meta.sni {
        obj.insert("app_proto".into(), json!("tls"));
        obj.insert("tls".into(), json!({ "sni": &**sni }));
    }
    ext.insert("engine".into(), json!(alert.engine));
    ext.insert("verdict".into(), json!(alert.action));
    finish(obj, ext)
}

/// What a periodic `stats` event reports.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Frames received on both ports.
    pub pkts: u64,
    /// Bytes seen on both paths.
    pub bytes: u64,
    /// In-scope flows started.
    pub flows_total: u64,
    /// Flows in the tables now.
    pub flows_active: u64,
    /// Flows ended, by our action (`inspected`, `pass`, `blocked`).
    pub flows_by_action: Vec<(&'static str, u64)>,
    /// Alerts raised.
    pub alerts: u64,
    /// Traffic-log records dropped by the outputs so far.
    pub log_dropped: u64,
}

/// A periodic `stats` event.
pub fn stats_json(s: &StatsSnapshot, ts: SystemTime) -> Value {
    let by_action: Map<String, Value> = s
        .flows_by_action
        .iter()
        .map(|(a, n)| ((*a).to_string(), json!(n)))
        .collect();
    json!({
        "timestamp": format_timestamp(ts),
        "event_type": "stats",
        "stats": {
            "uptime": s.uptime_secs,
            "decoder": { "pkts": s.pkts, "bytes": s.bytes },
            "flow": { "total": s.flows_total, "tcp": s.flows_total, "active": s.flows_active },
            "detect": { "alert": s.alerts },
        },
        EXTENSION: {
            "flows": by_action,
            "log_dropped": s.log_dropped,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};
    use tlsinspect_pipeline::api::{InspectReport, UpstreamCertInfo};
    use tlsinspect_pipeline::reason::Reason;

    fn meta() -> FlowMeta {
        FlowMeta {
            flow_id: 42,
            src: "192.0.2.10:40000".parse().unwrap(),
            dest: "203.0.113.5:443".parse().unwrap(),
            policy_id: Arc::from("pol-office"),
            scope_id: Arc::from("sc-web"),
            sni: Some(Arc::from("www.example.com")),
            alpn: None,
            tunnel: None,
        }
    }

    pub(crate) fn inspected() -> FlowRecord {
        FlowRecord {
            timestamp: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            meta: meta(),
            proto: "TCP",
            action: FlowAction::Inspected,
            reason: Reason::Inspected,
            tls: Some(TlsInfo {
                sni: Some("www.example.com".into()),
                version: Some("TLS 1.3".into()),
                upstream_version: Some("TLS 1.3".into()),
                cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
                ja4: Some("t13d1516h2_8daaf6152771_02713d6af862".into()),
                upstream_cert: Some(UpstreamCertInfo {
                    subject: "CN=www.example.com".into(),
                    issuer: "CN=Origin CA".into(),
                    not_before: "2026-01-01T00:00:00Z".into(),
                    not_after: "2027-01-01T00:00:00Z".into(),
                    serial: "01:02".into(),
                    fingerprint: "aa:bb".into(),
                    verified: true,
                    error: None,
                }),
                ..Default::default()
            }),
            bytes_toserver: 10,
            bytes_toclient: 20,
            duration_ms: 2_500,
            inspection: Some(InspectReport {
                http: vec![HttpTxn {
                    method: "GET".into(),
                    host: "www.example.com".into(),
                    url: "/".into(),
                    status: Some(200),
                    app: Some(("github".into(), "browse".into())),
                }],
                app: Some("github".into()),
                alerts: vec![],
            }),
        }
    }

    #[test]
    fn timestamps_are_suricatas() {
        let ts = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(format_timestamp(ts), "2023-11-14T22:13:20.123456+0000");
        assert_eq!(parse_timestamp(&format_timestamp(ts)), Some(ts));
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20.5Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500))
        );
    }

    #[test]
    fn a_flow_through_a_load_balancer_carries_its_tunnel_on_every_event() {
        let mut rec = inspected();
        for v in flow_events(&rec) {
            assert!(v["tlsinspect"].get("geneve").is_none());
        }
        rec.meta.tunnel = Some(tlsinspect_pipeline::api::TunnelInfo {
            vni: 0x12_3456,
            peer: "198.51.100.129".parse().unwrap(),
        });
        for v in flow_events(&rec) {
            assert_eq!(v["tlsinspect"]["geneve"]["vni"], 0x12_3456);
            assert_eq!(v["tlsinspect"]["geneve"]["load_balancer"], "198.51.100.129");
        }
    }

    #[test]
    fn a_flow_becomes_tls_http_and_flow_events() {
        let ev = flow_events(&inspected());
        let types: Vec<&str> = ev
            .iter()
            .map(|v| v["event_type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["tls", "http", "flow"]);
        for v in &ev {
            assert_eq!(v["flow_id"], 42);
            assert_eq!(v["tlsinspect"]["policy_id"], "pol-office");
            assert_eq!(v["tlsinspect"]["scope_id"], "sc-web");
        }
        let tls = &ev[0];
        assert_eq!(tls["tls"]["version"], "TLS 1.3");
        assert_eq!(tls["tls"]["notafter"], "2027-01-01T00:00:00");
        assert_eq!(tls["tls"]["issuerdn"], "CN=Origin CA");
        assert_eq!(tls["tlsinspect"]["upstream"]["verified"], true);
        assert_eq!(tls["tlsinspect"]["action"], "inspected");
        let http = &ev[1];
        assert_eq!(http["http"]["http_method"], "GET");
        assert_eq!(http["http"]["status"], 200);
        assert_eq!(http["tlsinspect"]["app"]["action"], "browse");
        let flow = &ev[2];
        assert_eq!(flow["flow"]["bytes_toclient"], 20);
        assert_eq!(flow["flow"]["age"], 2);
        assert_eq!(flow["flow"]["start"], "2023-11-14T22:13:17.623456+0000");
        assert_eq!(flow["flow"]["action"], "pass");
        assert_eq!(flow["tlsinspect"]["app"]["name"], "github");
    }

    #[test]
    fn verdicts_are_suricata_alerts_with_their_own_gid() {
        let ips = Alert {
            engine: "ips",
            sid: 1000001,
            rev: 2,
            msg: "path traversal".into(),
            action: "drop".into(),
            category: Some("web-application-attack".into()),
            severity: Some(1),
        };
        let v = alert_json(&meta(), &ips, UNIX_EPOCH);
        assert_eq!(v["event_type"], "alert");
        assert_eq!(v["alert"]["signature_id"], 1000001);
        assert_eq!(v["alert"]["gid"], GID_IPS);
        assert_eq!(v["alert"]["action"], "blocked");
        assert_eq!(v["alert"]["severity"], 1);
        assert_eq!(v["tlsinspect"]["policy_id"], "pol-office");
        assert_eq!(v["tlsinspect"]["scope_id"], "sc-web");
        let wf = Alert {
            engine: "webfilter",
            sid: 2,
            msg: "deny".into(),
            action: "deny".into(),
            ..Alert::default()
        };
        let v = alert_json(&meta(), &wf, UNIX_EPOCH);
        assert_eq!(v["alert"]["gid"], GID_WEBFILTER);
        assert_eq!(v["tlsinspect"]["engine"], "webfilter");
        let detect = Alert {
            engine: "ips",
            action: "alert".into(),
            ..Alert::default()
        };
        assert_eq!(
            alert_json(&meta(), &detect, UNIX_EPOCH)["alert"]["action"],
            "allowed"
        );
    }
}
