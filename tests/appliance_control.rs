//! The appliance's control plane without packet I/O: the real binary's
//! `policy disable` and `reload` against the control socket of an appliance
//! assembled in this process, and the Prometheus endpoint it serves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tlsinspect::appliance::{Appliance, Services};
use tlsinspect::control::socket::{request, Request};
use tlsinspect_pipeline::api::{FlowAction, FlowMeta, FlowRecord};
use tlsinspect_pipeline::reason::Reason;

fn conf(dir: &Path) -> String {
    format!(
        r#"[appliance]
mode = "af_packet"
lan = "eth1"
wan = "eth2"
cpus = [0]
log = "{dir}/traffic.jsonl"
control = "{dir}/control.sock"
metrics = "127.0.0.1:0"

[upstream]
roots = "ca/ca.crt"

[[policy]]
id = "pol-a"
name = "Office"
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
exclude_sni = ["*.bank.example"]
  [[policy.scope]]
  id = "sc-1"
  source_ips = ["192.0.2.10"]
  source_ports = ["0/65535"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443"]

[[policy]]
id = "pol-b"
name = "Lab"
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
  [[policy.scope]]
  id = "sc-lab"
  source_ips = ["192.0.2.20"]
  source_ports = ["0/65535"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443"]
"#,
        dir = dir.display()
    )
}

fn bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tlsinspect"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the sample `series` (name, and labels when it has any).
fn value(body: &str, series: &str) -> f64 {
    let line = body
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|r| r.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Runs `promtool check metrics` (Debian package prometheus) on the body
/// of a scrape: names, suffixes, units and HELP/TYPE as Prometheus asks.
fn promtool_check(response: &str) {
    let body = response.split_once("\r\n\r\n").map_or(response, |(_, b)| b);
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: tests/run.sh does");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca_days_left() -> i64 {
    let pem = std::fs::read("tests/configs/ca/ca.crt").unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = p.parse_x509().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (cert.validity().not_after.timestamp() - now).div_euclid(86_400)
}

#[test]
fn reload_policy_disable_refused_reload_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    std::fs::create_dir(&ca).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(format!("tests/configs/ca/{f}"), ca.join(f)).unwrap();
    }
    let path = dir.path().join("appliance.toml");
    let text = conf(dir.path());
    std::fs::write(&path, &text).unwrap();
    let c = path.to_str().unwrap();
    let cfg = tlsinspect::config::load(&path).unwrap();
    let control = cfg.appliance.control.clone();

    let app = Arc::new(Appliance::start_without_dataplane(&path, cfg).unwrap());
    let services = Services::start(&app).unwrap();
    let metrics = services.metrics_addr().expect("metrics configured");

    let status = request(&control, &Request::Status).unwrap();
    assert!(status.ok);
    assert_eq!(
        status.data["enabled_policies"],
        serde_json::json!(["pol-a", "pol-b"])
    );

    // `policy disable` edits the file and the running appliance reloads it.
    let (code, out, err) = bin(&["policy", "disable", "pol-b", "--config", c]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("running appliance: reloaded"), "{out}");
    assert!(out.contains("1 enabled policy (pol-a)"), "{out}");
    let status = request(&control, &Request::Status).unwrap();
    assert_eq!(
        status.data["enabled_policies"],
        serde_json::json!(["pol-a"])
    );
    assert_eq!(
        status.data["disabled_policies"],
        serde_json::json!(["pol-b"])
    );
    let (code, out, _) = bin(&["policy", "list", "--config", c]);
    assert_eq!(code, 0);
    assert!(
        out.contains("running appliance: up ") && out.contains("disabled: pol-b"),
        "{out}"
    );

    // `reload` of an unchanged file succeeds.
    let (code, out, err) = bin(&["reload", "--config", c]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reloaded"), "{out}");

    // A config whose CA key is gone: the file parses, the appliance refuses
    // it with the error and keeps running the previous one.
    let edited = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edited.replace("ca/ca.key", "ca/missing.key")).unwrap();
    let (code, out, err) = bin(&["reload", "--config", c]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("refused the reload"), "{err}");
    assert!(
        err.contains("previous configuration stays in force"),
        "{err}"
    );
    assert!(
        err.contains("missing.key") && err.contains("pol-a"),
        "{err}"
    );
    // Enabling pol-b with that broken file is refused too, pol-b stays off
    // in the running appliance.
    let (code, _, err) = bin(&["policy", "enable", "pol-b", "--config", c]);
    assert_ne!(code, 0);
    assert!(err.contains("missing.key"), "{err}");
    let status = request(&control, &Request::Status).unwrap();
    assert_eq!(
        status.data["enabled_policies"],
        serde_json::json!(["pol-a"])
    );
    // A file that does not even parse: refused the same way.
    std::fs::write(&path, "[appliance\n").unwrap();
    let resp = request(&control, &Request::Reload).unwrap();
    assert!(!resp.ok);
    assert!(resp.message.contains("appliance.toml"), "{}", resp.message);
    let status = request(&control, &Request::Status).unwrap();
    assert_eq!(
        status.data["enabled_policies"],
        serde_json::json!(["pol-a"])
    );
    assert_eq!(status.data["counters"]["reloads_ok"], 2);
    assert_eq!(status.data["counters"]["reloads_failed"], 3);

    // A flow record from the data plane is counted and written.
    app.intercept_ctx().log.record(&FlowRecord {
        timestamp: SystemTime::now(),
        meta: FlowMeta {
            flow_id: 42,
            src: "192.0.2.10:40000".parse().unwrap(),
            dest: "203.0.113.5:443".parse().unwrap(),
            policy_id: "pol-a".into(),
            scope_id: "sc-1".into(),
            sni: Some("www.example.com".into()),
            alpn: None,
            tunnel: None,
        },
        proto: "TCP",
        action: FlowAction::Pass,
        reason: Reason::Tls13,
        tls: None,
        bytes_toserver: 517,
        bytes_toclient: 4000,
        duration_ms: 12,
        inspection: None,
    });
    // The output thread writes it within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(dir.path().join("traffic.jsonl")).unwrap_or_default();
        if !log.is_empty() || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rec: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(rec["event_type"], "flow");
    assert_eq!(rec["tlsinspect"]["policy_id"], "pol-a");
    assert_eq!(rec["tlsinspect"]["scope_id"], "sc-1");
    assert_eq!(rec["tlsinspect"]["reason"], "tls13");

    let body = scrape(metrics);
    assert_eq!(
        value(
            &body,
            "tlsinspect_flows_total{policy=\"pol-a\",scope=\"sc-1\",action=\"pass\",reason=\"tls13\"}"
        ),
        1.0
    );
    let shown = value(
        &body,
        "tlsinspect_ca_validity_remaining_seconds{policy=\"pol-a\"}",
    ) / 86_400.0;
    let days = ca_days_left();
    assert!((shown as i64 - days).abs() <= 1, "{shown} vs {days}");
    assert!(days > 3000, "the test CA runs to 2036");
    assert_eq!(
        value(&body, "tlsinspect_policy_enabled{policy=\"pol-a\"}"),
        1.0
    );
    assert_eq!(
        value(&body, "tlsinspect_policy_enabled{policy=\"pol-b\"}"),
        0.0
    );
    let log_series = format!(
        "{{output=\"file\",target=\"file {}\"}}",
        dir.path().join("traffic.jsonl").display()
    );
    assert_eq!(
        value(&body, &format!("tlsinspect_log_records_total{log_series}")),
        1.0
    );
    assert_eq!(
        value(
            &body,
            &format!("tlsinspect_log_dropped_records_total{log_series}")
        ),
        0.0
    );
    promtool_check(&body);
    assert_eq!(value(&body, "tlsinspect_cert_cache_hits_total"), 0.0);
    assert_eq!(value(&body, "tlsinspect_bypass_cache_entries"), 0.0);
    assert_eq!(
        value(&body, "tlsinspect_reloads_total{result=\"failed\"}"),
        3.0
    );

    services.stop();
    assert!(!control.exists(), "the control socket is removed on stop");
    let app = Arc::try_unwrap(app).unwrap();
    assert!(app.shutdown().is_none());
}

#[test]
fn run_refuses_to_start_naming_the_policy_and_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    std::fs::create_dir(&ca).unwrap();
    std::fs::copy("tests/configs/ca/ca.crt", ca.join("ca.crt")).unwrap();
    // The policies' key file holds a certificate, not a key.
    std::fs::copy("tests/configs/ca/ca.crt", ca.join("ca.key")).unwrap();
    let path = dir.path().join("appliance.toml");
    std::fs::write(&path, conf(dir.path())).unwrap();
    let (code, out, err) = bin(&["run", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("\"pol-a\""), "{err}");
    assert!(err.contains("ca/ca.key"), "{err}");
    assert!(
        !dir.path().join("control.sock").exists(),
        "nothing was started"
    );
    assert!(!err.contains("starting the pipeline"), "{err}");
}
