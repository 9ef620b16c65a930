//! JSON encoding of traffic-log records (DESIGN.md §7).

use std::time::SystemTime;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tlsinspect_pipeline::api::{Alert, FlowMeta, FlowRecord, InspectReport, TlsInfo};

/// Formats a timestamp as RFC 3339 UTC with microseconds, as EVE does.
pub fn format_timestamp(ts: SystemTime) -> String {
    let dt = OffsetDateTime::from(ts);
    let micros = dt.microsecond();
    let dt = dt.replace_nanosecond(micros * 1_000).unwrap_or(dt);
    dt.format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

fn put_meta(obj: &mut Map<String, Value>, meta: &FlowMeta) {
    obj.insert("flow_id".into(), json!(meta.flow_id));
    obj.insert("src_ip".into(), json!(meta.src.ip().to_string()));
    obj.insert("src_port".into(), json!(meta.src.port()));
    obj.insert("dest_ip".into(), json!(meta.dest.ip().to_string()));
    obj.insert("dest_port".into(), json!(meta.dest.port()));
    obj.insert("policy_id".into(), json!(&*meta.policy_id));
    obj.insert("scope_id".into(), json!(&*meta.scope_id));
}

fn tls_value(tls: &TlsInfo) -> Value {
    let mut obj = Map::new();
    obj.insert("sni".into(), json!(tls.sni));
    obj.insert("version".into(), json!(tls.version));
    obj.insert("upstream_version".into(), json!(tls.upstream_version));
    obj.insert("cipher".into(), json!(tls.cipher));
    obj.insert("alpn".into(), json!(tls.alpn));
    obj.insert("ja4".into(), json!(tls.ja4));
    if let Some(cert) = &tls.upstream_cert {
        obj.insert(
            "upstream_cert".into(),
            json!({
                "subject": cert.subject,
                "issuer": cert.issuer,
                "not_after": cert.not_after,
                "verified": cert.verified,
                "error": cert.error,
            }),
        );
    }
    Value::Object(obj)
}

fn alert_value(alert: &Alert) -> Value {
    json!({
        "engine": alert.engine,
        "sid": alert.sid,
        "msg": alert.msg,
        "action": alert.action,
    })
}

fn put_inspection(obj: &mut Map<String, Value>, report: &InspectReport) {
    let http: Vec<Value> = report
        .http
        .iter()
        .map(|t| {
            let mut h = json!({
                "http_method": t.method,
                "hostname": t.host,
                "url": t.url,
                "status": t.status,
            });
            if let Some((app, action)) = &t.app {
                h["app"] = json!({ "name": app, "action": action });
            }
            h
        })
        .collect();
    obj.insert("http".into(), Value::Array(http));
    obj.insert("app".into(), json!(report.app));
    obj.insert(
        "alerts".into(),
        Value::Array(report.alerts.iter().map(alert_value).collect()),
    );
}

/// The JSON object of a finished flow (`event_type` = `flow`).
pub fn flow_json(rec: &FlowRecord) -> Value {
    let mut obj = Map::new();
    obj.insert("timestamp".into(), json!(format_timestamp(rec.timestamp)));
    obj.insert("event_type".into(), json!("flow"));
    put_meta(&mut obj, &rec.meta);
    obj.insert("proto".into(), json!(rec.proto));
    obj.insert("action".into(), json!(rec.action.as_str()));
    obj.insert("reason".into(), json!(rec.reason));
    if let Some(tls) = &rec.tls {
        obj.insert("tls".into(), tls_value(tls));
    }
    obj.insert("bytes_toserver".into(), json!(rec.bytes_toserver));
    obj.insert("bytes_toclient".into(), json!(rec.bytes_toclient));
    obj.insert("duration_ms".into(), json!(rec.duration_ms));
    if let Some(report) = &rec.inspection {
        put_inspection(&mut obj, report);
    }
    Value::Object(obj)
}

/// The JSON object of an alert raised on a flow (`event_type` = `alert`).
pub fn alert_json(meta: &FlowMeta, alert: &Alert, ts: SystemTime) -> Value {
    let mut obj = Map::new();
    obj.insert("timestamp".into(), json!(format_timestamp(ts)));
    obj.insert("event_type".into(), json!("alert"));
    put_meta(&mut obj, meta);
    obj.insert("proto".into(), json!("TCP"));
    if let Some(sni) = &meta.sni {
        obj.insert("tls".into(), json!({ "sni": &**sni }));
    }
    obj.insert("alert".into(), alert_value(alert));
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};
    use tlsinspect_pipeline::api::{FlowAction, HttpTxn, UpstreamCertInfo};

    fn meta() -> FlowMeta {
        FlowMeta {
            flow_id: 42,
            src: "192.0.2.10:40000".parse().unwrap(),
            dest: "203.0.113.5:443".parse().unwrap(),
            policy_id: Arc::from("pol-office"),
            scope_id: Arc::from("sc-web"),
            sni: Some(Arc::from("www.example.com")),
            alpn: None,
        }
    }

    #[test]
    fn flow_record_has_eve_field_names() {
        let rec = FlowRecord {
            timestamp: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            meta: meta(),
            proto: "TCP",
            action: FlowAction::Inspected,
            reason: "inspected".into(),
            tls: Some(TlsInfo {
                sni: Some("www.example.com".into()),
                version: Some("TLSv1.3".into()),
                upstream_cert: Some(UpstreamCertInfo {
                    subject: "CN=www.example.com".into(),
                    verified: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            bytes_toserver: 10,
            bytes_toclient: 20,
            duration_ms: 5,
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
        };
        let v = flow_json(&rec);
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["src_ip"], "192.0.2.10");
        assert_eq!(v["dest_port"], 443);
        assert_eq!(v["policy_id"], "pol-office");
        assert_eq!(v["scope_id"], "sc-web");
        assert_eq!(v["action"], "inspected");
        assert_eq!(v["tls"]["upstream_cert"]["verified"], true);
        assert_eq!(v["http"][0]["app"]["name"], "github");
        assert_eq!(v["bytes_toclient"], 20);
    }

    #[test]
    fn alert_record_names_rule_policy_and_scope() {
        let alert = Alert {
            engine: "ips",
            sid: 1000001,
            msg: "path traversal".into(),
            action: "drop".into(),
        };
        let v = alert_json(&meta(), &alert, UNIX_EPOCH);
        assert_eq!(v["event_type"], "alert");
        assert_eq!(v["alert"]["sid"], 1000001);
        assert_eq!(v["policy_id"], "pol-office");
        assert_eq!(v["scope_id"], "sc-web");
    }
}
