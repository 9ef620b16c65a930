//! Every event type the appliance writes is valid Suricata EVE once its
//! `tlsinspect` object is removed (python3-jsonschema against Suricata's own
//! schema), and carries the policy and scope ids. The lab tests run the same
//! check on every record of their runs (`lab::read_log`).

mod eve;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tlsinspect::log::record::{self, StatsSnapshot};
use tlsinspect_pipeline::api::{
    Alert, FlowAction, FlowMeta, FlowRecord, HttpTxn, InspectReport, TlsInfo, UpstreamCertInfo,
};
use tlsinspect_pipeline::reason::Reason;

fn meta(alpn: Option<&[u8]>) -> FlowMeta {
    FlowMeta {
        flow_id: 7,
        src: "192.0.2.10:40000".parse().unwrap(),
        dest: "[2001:db8::5]:443".parse().unwrap(),
        policy_id: Arc::from("pol-office"),
        scope_id: Arc::from("sc-web"),
        sni: Some(Arc::from("www.example.com")),
        alpn: alpn.map(Arc::from),
        tunnel: None,
    }
}

#[test]
fn every_event_type_is_valid_eve() {
    let now = SystemTime::now();
    let mut records = Vec::new();
    for (action, reason, alpn, inspected) in [
        (
            FlowAction::Inspected,
            Reason::Inspected,
            Some(&b"h2"[..]),
            true,
        ),
        (
            FlowAction::Inspected,
            Reason::Inspected,
            Some(&b"http/1.1"[..]),
            true,
        ),
        (FlowAction::Pass, Reason::Tls13, None, false),
        (FlowAction::Blocked, Reason::NonTls, None, false),
    ] {
        let rec = FlowRecord {
            timestamp: now,
            meta: meta(alpn),
            proto: "TCP",
            action,
            reason,
            tls: (action != FlowAction::Blocked).then(|| TlsInfo {
                sni: Some("www.example.com".into()),
                version: Some("TLS 1.3".into()),
                upstream_version: inspected.then(|| "TLS 1.2".into()),
                cipher: inspected.then(|| "TLS13_AES_128_GCM_SHA256".into()),
                alpn: alpn.map(|a| String::from_utf8_lossy(a).into_owned()),
                ja4: Some("t13d1516h2_8daaf6152771_e5627efa2ab1".into()),
                upstream_cert: inspected.then(|| UpstreamCertInfo {
                    subject: "CN=www.example.com".into(),
                    issuer: "CN=Lab Origin Root".into(),
                    not_before: "2026-01-01T00:00:00Z".into(),
                    not_after: "2027-01-01T00:00:00Z".into(),
                    serial: "0A:1B".into(),
                    fingerprint: "00:11:22".into(),
                    verified: false,
                    error: Some("UnknownIssuer".into()),
                }),
            }),
            bytes_toserver: 1_000,
            bytes_toclient: 50_000,
            duration_ms: 1_234,
            inspection: inspected.then(|| InspectReport {
                http: vec![
                    HttpTxn {
                        method: "GET".into(),
                        host: "www.example.com".into(),
                        url: "/index.html".into(),
                        status: Some(200),
                        app: Some(("github".into(), "browse".into())),
                    },
                    HttpTxn {
                        method: "POST".into(),
                        host: "www.example.com".into(),
                        url: "/upload/x".into(),
                        status: None,
                        app: None,
                    },
                ],
                app: Some("github".into()),
                alerts: vec![Alert::default()],
            }),
        };
        records.extend(record::flow_events(&rec));
    }
    for (engine, action) in [
        ("ips", "drop"),
        ("ips", "alert"),
        ("webfilter", "deny"),
        ("appcontrol", "deny"),
        ("http", "alert"),
    ] {
        let alert = Alert {
            engine,
            sid: 1_000_050,
            rev: 3,
            msg: "card number in an upload".into(),
            action: action.into(),
            category: (engine == "ips").then(|| "policy-violation".into()),
            severity: Some(2),
        };
        records.push(record::alert_json(&meta(None), &alert, now));
    }
    records.push(record::stats_json(
        &StatsSnapshot {
            uptime_secs: 61,
            pkts: 10,
            bytes: 1_000,
            flows_total: 3,
            flows_active: 1,
            flows_by_action: vec![("inspected", 2), ("pass", 1)],
            alerts: 5,
            log_dropped: 0,
        },
        now + Duration::from_secs(1),
    ));
    let types: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["event_type"].as_str())
        .collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["alert", "flow", "http", "stats", "tls"]
    );
    eve::assert_valid(&records);
}

#[test]
fn the_check_fails_on_records_that_are_not_eve() {
    // The validator is real: a field Suricata does not have is refused.
    let bad = serde_json::json!({
        "timestamp": "2026-12-02T12:00:00.000000+0000",
        "event_type": "flow",
        "src_ip": "192.0.2.10",
        "policy_id": "pol-office",
        "tlsinspect": { "policy_id": "pol-office", "scope_id": "sc-web" },
    });
    let r = std::panic::catch_unwind(|| eve::assert_valid(&[bad]));
    let msg = r
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("policy_id"), "{msg}");
}
