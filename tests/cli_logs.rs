//! `tlsinspect logs` through the real binary: filters, table and JSON output.

use std::process::Command;

const LOG: &str = r#"{"timestamp":"2026-11-24T10:00:00.000000+0000","flow_id":1,"event_type":"flow","src_ip":"192.0.2.10","src_port":40000,"dest_ip":"203.0.113.5","dest_port":443,"proto":"TCP","app_proto":"tls","flow":{"bytes_toserver":100,"bytes_toclient":2000,"state":"closed"},"tls":{"sni":"www.example.com"},"tlsinspect":{"policy_id":"pol-office","scope_id":"sc-web","action":"inspected","reason":"inspected","duration_ms":12}}
{"timestamp":"2026-11-24T10:00:01.000000+0000","flow_id":2,"event_type":"flow","src_ip":"192.0.2.11","src_port":40001,"dest_ip":"203.0.113.6","dest_port":443,"proto":"TCP","app_proto":"tls","flow":{"bytes_toserver":1,"bytes_toclient":2,"state":"closed"},"tls":{"sni":"login.bank.example"},"tlsinspect":{"policy_id":"pol-office","scope_id":"sc-web","action":"pass","reason":"excluded","duration_ms":3}}
{"timestamp":"2026-11-24T10:00:02.000000+0000","flow_id":1,"event_type":"alert","src_ip":"192.0.2.10","src_port":40000,"dest_ip":"203.0.113.5","dest_port":443,"proto":"TCP","tls":{"sni":"www.example.com"},"alert":{"action":"blocked","gid":1,"signature_id":1000001,"rev":1,"signature":"path traversal","category":"web-application-attack","severity":1},"tlsinspect":{"policy_id":"pol-office","scope_id":"sc-web","engine":"ips","verdict":"drop"}}
garbage line
"#;

fn tlsinspect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tlsinspect"))
        .args(args)
        .output()
        .expect("run tlsinspect")
}

#[test]
fn logs_filters_by_action_and_sni() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traffic.jsonl");
    std::fs::write(&path, LOG).unwrap();
    let p = path.to_str().unwrap();

    let out = tlsinspect(&["logs", p, "--action", "pass", "--json"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["tls"]["sni"], "login.bank.example");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("1 line(s) are not JSON records"),
        "{stderr}"
    );
    assert!(stderr.contains("lines 4"), "{stderr}");

    let out = tlsinspect(&[
        "logs",
        p,
        "--sni",
        "*.EXAMPLE.com",
        "--policy",
        "pol-office",
    ]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains("flow inspected (inspected)"), "{table}");
    assert!(table.contains("pol-office/sc-web"));

    // Alerts carry policy and scope too and show in the table.
    let out = tlsinspect(&["logs", p, "--scope", "sc-web"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("alert blocked 1:1000001 path traversal"),
        "{table}"
    );
}

#[test]
fn logs_errors_name_the_problem() {
    let out = tlsinspect(&["logs", "/nonexistent/traffic.jsonl"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("opening /nonexistent/traffic.jsonl"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    std::fs::write(&path, LOG).unwrap();
    let out = tlsinspect(&["logs", path.to_str().unwrap(), "--since", "soon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("--since \"soon\""));
}
