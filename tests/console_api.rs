//! The console's JSON API, as an operator's script or the pages use it:
//! HTTPS only, sessions, CSRF, the login limit, changes that go to the
//! config file (comments kept) and the audit log, validate's wording, CA
//! paths confined to the CA dirs, the certificate zip, and CLI changes
//! showing in the console.

mod console_kit;

use std::io::Read as _;
use std::process::Command;

use console_kit::{exe, Kit, PASSWORD};
use serde_json::{json, Value};

fn new_policy(kit: &Kit, id: &str) -> Value {
    let ca = kit.state.join("ca/office");
    if !ca.join("ca.crt").exists() {
        tlsinspect::pki::trial::create(
            &ca,
            tlsinspect::pki::KeyKind::EcdsaP256,
            std::time::SystemTime::now(),
        )
        .unwrap();
    }
    json!({
        "id": id,
        "name": "Office egress",
        "enabled": false,
        "ca_cert": ca.join("ca.crt"),
        "ca_key": ca.join("ca.key"),
        "tls13": "inspect",
        "scopes": [
            {"id": "sc-web", "source_ips": ["192.0.2.10", "192.0.2.11"], "source_ports": ["0/65535"],
             "destinations": ["203.0.113.0/24"], "destination_ports": ["443/443", "8443/8443"]}
        ]
    })
}

#[test]
fn sessions_csrf_changes_audit_and_validate_wording() -> anyhow::Result<()> {
    let kit = Kit::start()?;
    let mut anon = kit.client();

    // No session: 401 with a JSON error, for reads and writes alike.
    let r = anon.get("/api/v1/policies")?;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.json()?["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("not logged in"));
    assert_eq!(
        anon.post_json("/api/v1/policies", &json!({}), Some("x"))?
            .status,
        401
    );
    // Pages send the browser to the login form instead.
    let r = anon.get("/policies")?;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/login")),
        "{}",
        r.text
    );
    // The OpenAPI document is public and names the endpoints of DESIGN.md §10.
    let doc = anon.get("/api/v1/openapi.json")?.json()?;
    for p in [
        "/api/v1/login",
        "/api/v1/policies/{id}",
        "/api/v1/policies/{id}/certificate",
        "/api/v1/logs",
        "/api/v1/ca/trial",
        "/api/v1/status",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi.json lacks {p}");
    }

    // Wrong password: 401 and no cookie.
    let r = anon.post_json("/api/v1/login", &json!({"password": "wrong"}), None)?;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());

    // Login: the cookie is HttpOnly, Secure, SameSite=Strict and expires.
    let mut c = kit.client();
    let r = c.post_json("/api/v1/login", &json!({"password": PASSWORD}), None)?;
    assert_eq!(r.status, 200, "{}", r.text);
    let cookie = r.header("set-cookie").unwrap().to_owned();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=28800",
        "Path=/",
    ] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let csrf = r.json()?["csrf_token"].as_str().unwrap().to_owned();
    assert!(csrf.len() >= 32);

    // The policy made with the CLI is there, with its quota and CA.
    let list = c.get("/api/v1/policies")?.json()?;
    assert_eq!(list["policies"][0]["id"], "pol-cli");
    assert_eq!(list["policies"][0]["quota"], 1);
    assert_eq!(list["quota_total"], 1);
    assert_eq!(list["quota_limit"], 20_000);
    assert!(list["policies"][0]["ca"]["subject"]
        .as_str()
        .unwrap()
        .contains("tlsinspect trial CA"));

    // A change without the CSRF token (or with a wrong one) is refused and changes nothing.
    let before = std::fs::read_to_string(&kit.config)?;
    let body = new_policy(&kit, "pol-office");
    assert_eq!(c.post_json("/api/v1/policies", &body, None)?.status, 403);
    assert_eq!(
        c.post_json("/api/v1/policies", &body, Some("0123"))?.status,
        403
    );
    assert_eq!(std::fs::read_to_string(&kit.config)?, before);

    // With it: 201, the file has the policy and still its comments, the
    // running appliance reloaded it, and the audit log says who did what.
    let r = c.post_json("/api/v1/policies", &body, Some(&csrf))?;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json()?;
    assert_eq!(v["reloaded"], true, "{v}");
    assert_eq!(v["policy"]["quota"], 4);
    let text = std::fs::read_to_string(&kit.config)?;
    assert!(text.contains("# operator's header comment"), "{text}");
    assert!(
        text.contains("id = \"pol-cli\"            # made with the CLI"),
        "{text}"
    );
    let cfg = tlsinspect::config::load(&kit.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(cfg.policy("pol-office").unwrap().scopes[0].quota(), 4);
    assert!(
        kit.app.config().policy("pol-office").is_some(),
        "not reloaded"
    );
    let audit = kit.audit_entries();
    let created = audit
        .iter()
        .find(|e| e["action"] == "policy.create")
        .expect("audit entry");
    assert_eq!(created["from"], "127.0.0.1");
    assert_eq!(created["target"], "pol-office");
    assert!(created["before"].is_null());
    assert_eq!(created["after"]["scopes"][0]["id"], "sc-web");
    // UTC, in the traffic log's (Suricata's) timestamp format.
    let when = created["timestamp"].as_str().unwrap();
    assert!(
        tlsinspect::log::record::parse_timestamp(when).is_some() && when.ends_with("+0000"),
        "{when}"
    );
    // Creating it again is a conflict.
    assert_eq!(
        c.post_json("/api/v1/policies", &body, Some(&csrf))?.status,
        409
    );

    // Over the quota: 400 with exactly validate's message, and nothing written.
    let mut big = body.clone();
    let ips: Vec<String> = (1..=201).map(|i| format!("2001:db8::{i:x}")).collect();
    let ports: Vec<String> = (1..=100).map(|p| format!("{p}/{p}")).collect();
    big["scopes"][0]["source_ips"] = json!(ips);
    big["scopes"][0]["destination_ports"] = json!(ports);
    let before = std::fs::read_to_string(&kit.config)?;
    let r = c.send_json(
        "PUT",
        "/api/v1/policies/pol-office",
        Some(&big),
        Some(&csrf),
    )?;
    assert_eq!(r.status, 400, "{}", r.text);
    let errors = r.json()?["errors"].clone();
    let msg = errors[0]["message"].as_str().unwrap();
    let mut doc: toml_edit::DocumentMut = before.parse()?;
    let t = tlsinspect::console::change::policy_table(&big, &kit.config, 2).unwrap();
    tlsinspect::control::edit::put_policy_in(&mut doc, &kit.config, Some("pol-office"), t)?;
    let expected = tlsinspect::config::parse(&doc.to_string(), &kit.config)
        .unwrap_err()
        .to_string();
    assert_eq!(msg, expected);
    assert!(
        msg.contains("quota of all policies together is 20,101")
            && msg.contains("the limit is 20,000"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&kit.config)?, before);
    // A bad value names policy, scope and field as validate does.
    let mut bad = body.clone();
    bad["scopes"][0]["source_ports"] = json!(["80/70000"]);
    let r = c.send_json(
        "PUT",
        "/api/v1/policies/pol-office",
        Some(&bad),
        Some(&csrf),
    )?;
    assert_eq!(r.status, 400);
    let e = &r.json()?["errors"][0];
    assert_eq!(e["policy"], "pol-office");
    assert_eq!(e["scope_index"], 1);
    assert!(e["message"].as_str().unwrap().contains("policy \"pol-office\" scope #1 \"sc-web\": source_ports #1 \"80/70000\" has end 70000, out of range"), "{e}");

    // CA files outside [console] ca_dirs are refused (traversal, absolute, symlink).
    std::os::unix::fs::symlink("/etc", kit.state.join("ca/escape"))?;
    for path in [
        "../../../../etc/passwd",
        "/etc/ssl/private/ssl-cert-snakeoil.key",
        &format!("{}/ca/office/../../../tlsinspect.toml", kit.state.display()),
        &format!("{}/ca/escape/passwd", kit.state.display()),
    ] {
        let mut b = body.clone();
        b["ca_cert"] = json!(path);
        let r = c.send_json("PUT", "/api/v1/policies/pol-office", Some(&b), Some(&csrf))?;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        let e = &r.json()?["errors"][0];
        assert_eq!(e["field"], "ca_cert", "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("[console] ca_dirs"),
            "{e}"
        );
    }
    // Keys the console does not offer are refused (a path the appliance would write).
    let mut b = body.clone();
    b["keylog"] = json!("/etc/cron.d/x");
    let r = c.send_json("PUT", "/api/v1/policies/pol-office", Some(&b), Some(&csrf))?;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("unknown key \\\"keylog\\\""), "{}", r.text);
    // Garbage bodies get 400, never a 5xx.
    let r = c.send_json("PUT", "/api/v1/policies/pol-office", None, Some(&csrf))?;
    assert_eq!(r.status, 400, "{}", r.text);

    // The certificate zip: one .crt per certificate, bundle.pem, install notes.
    let r = c.get("/api/v1/policies/pol-office/certificate")?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/zip"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(r.body.clone()))?;
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    assert!(
        names.contains(&"pol-office/00-issuing-ca.crt".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"pol-office/bundle.pem".to_owned()),
        "{names:?}"
    );
    let mut notes = String::new();
    zip.by_name("pol-office/INSTALL.txt")?
        .read_to_string(&mut notes)?;
    for os in [
        "Debian / Ubuntu",
        "RHEL",
        "SUSE",
        "Fedora",
        "Windows",
        "Firefox",
        "Kubernetes",
    ] {
        assert!(notes.contains(os), "install notes lack {os}");
    }
    let mut crt = String::new();
    zip.by_name("pol-office/00-issuing-ca.crt")?
        .read_to_string(&mut crt)?;
    let issued = std::fs::read_to_string(kit.state.join("ca/office/ca.crt"))?;
    assert_eq!(crt.trim(), issued.trim());

    // Enable, then delete is refused while enabled (409), allowed once disabled.
    let r = c.post_json(
        "/api/v1/policies/pol-office/enable",
        &json!({}),
        Some(&csrf),
    )?;
    assert_eq!(
        (r.status, &r.json()?["policy"]["enabled"]),
        (200, &json!(true)),
        "{}",
        r.text
    );
    assert!(kit.app.config().policy("pol-office").unwrap().enabled);
    let r = c.send_json("DELETE", "/api/v1/policies/pol-office", None, Some(&csrf))?;
    assert_eq!(r.status, 409, "{}", r.text);

    // A change made with the CLI shows in the console.
    let out = Command::new(exe())
        .args(["policy", "disable", "pol-office", "--config"])
        .arg(&kit.config)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.get("/api/v1/policies/pol-office")?.json()?["enabled"],
        false
    );
    assert!(
        !kit.app.config().policy("pol-office").unwrap().enabled,
        "CLI reload over the socket"
    );

    let r = c.send_json("DELETE", "/api/v1/policies/pol-office", None, Some(&csrf))?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(c.get("/api/v1/policies/pol-office")?.status, 404);
    let del = kit
        .audit_entries()
        .into_iter()
        .find(|e| e["action"] == "policy.delete")
        .unwrap();
    assert_eq!(del["before"]["id"], "pol-office");
    assert!(del["after"].is_null());

    // The trial certificate is offered once.
    let r = c.post_json("/api/v1/ca/trial", &json!({}), Some(&csrf))?;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json()?["ca_cert"]
        .as_str()
        .unwrap()
        .ends_with("ca/trial/ca.crt"));
    let r = c.post_json("/api/v1/ca/trial", &json!({}), Some(&csrf))?;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("only once"));

    // Logout ends the session.
    assert_eq!(
        c.post_json("/api/v1/logout", &json!({}), Some(&csrf))?
            .status,
        200
    );
    let mut old = kit.client();
    old.cookie = Some(cookie.split(';').next().unwrap().to_owned());
    assert_eq!(old.get("/api/v1/policies")?.status, 401);
    Ok(())
}

#[test]
fn failed_logins_are_rate_limited_per_source() -> anyhow::Result<()> {
    let kit = Kit::start()?;
    let mut c = kit.client();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            c.post_json("/api/v1/login", &json!({"password": "guess"}), None)?
                .status,
        );
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429]);
    // Even the right password is refused while limited, with Retry-After.
    let r = c.post_json("/api/v1/login", &json!({"password": PASSWORD}), None)?;
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse()?;
    assert!(wait > 0 && wait <= 900, "{wait}");
    // The form login says so too.
    let r = c.post_form("/login", &[("password", PASSWORD)])?;
    assert_eq!(r.status, 429);
    assert!(r.text.contains("Too many failed logins"));
    assert!(
        kit.audit_entries()
            .iter()
            .filter(|e| e["action"] == "login.failed")
            .count()
            >= 4
    );
    Ok(())
}

#[test]
fn https_only_and_console_info() -> anyhow::Result<()> {
    use std::io::Write as _;
    let kit = Kit::start()?;
    // Plain HTTP on the console's port gets no HTTP answer.
    let mut s = std::net::TcpStream::connect(kit.addr())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(15)))?;
    s.write_all(b"GET /api/v1/policies HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
        "{buf:?}"
    );
    // `console info` prints the fingerprint the browser will show.
    let out = Command::new(exe())
        .args(["console", "info", "--config"])
        .arg(&kit.config)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fp = tlsinspect::console::cert::fingerprint(&kit.cert_der);
    assert!(text.contains(&fp), "{text}");
    assert!(
        text.contains("console:      https://127.0.0.1:0/"),
        "{text}"
    );
    // `console passwd` from stdin writes an argon2id hash, keeping comments.
    let mut child = Command::new(exe())
        .args(["console", "passwd", "--config"])
        .arg(&kit.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a new long password\n")?;
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&kit.config)?;
    assert!(text.contains("# operator's header comment"));
    // The console checks the file as it is now: the new password works at once.
    let mut c = kit.client();
    assert_eq!(
        c.post_json("/api/v1/login", &json!({"password": PASSWORD}), None)?
            .status,
        401
    );
    assert_eq!(
        c.post_json(
            "/api/v1/login",
            &json!({"password": "a new long password"}),
            None
        )?
        .status,
        200
    );
    Ok(())
}
