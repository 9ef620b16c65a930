//! The appliance binary in the lab intercepting in-scope TLS (issue 4):
//! real curl and openssl clients, nginx as the origin, the demo config
//! (`tls13 = "inspect"`, `ech = "inspect"`, the lab's policy CA).
//!
//! What a user would check: the in-scope client sees a chain issued by the
//! policy CA (HTTP/1.1 and HTTP/2, ALPN mirrored), a 50 MB download arrives
//! byte-identical, an out-of-scope client sees the origin's real issuer, the
//! traffic log has an `inspected` record with the policy, scope, SNI, the
//! verified upstream certificate and the byte counts; after a reload to
//! `tls13 = "passthrough"` a new in-scope connection sees the origin's chain
//! and is logged as pass/tls13; a closed in-scope port is refused at once;
//! plain HTTP on the in-scope port is relayed (`non_tls`); an upstream
//! certificate for the wrong name still fails at the client
//! (`invalid_certificate = "untrusted"`); an mTLS origin stays reachable
//! (bypass cache + replay); 40 parallel connections are all inspected;
//! disabling the policy (`on_disable = "interrupt"`) resets a running
//! download. In af_packet and tun mode, with one and with two workers.

mod lab;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use lab::{LabMode, TestLab};
use serde_json::Value;

/// In scope of `pol-demo` / `sc-https` (configs/demo.toml).
const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUT_OF_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SERVER_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
/// An in-scope port nothing listens on.
const CLOSED_PORT: u16 = 9443;
/// An in-scope port where nginx requires a client certificate.
const MTLS_PORT: u16 = 8443;

/// Starts a second nginx on `SERVER_A:MTLS_PORT` that requires a client
/// certificate issued by the lab's policy CA; returns (client cert, key).
fn start_mtls_origin(t: &TestLab) -> anyhow::Result<(String, String)> {
    let root = t.path("mtls");
    for d in ["tmp", "logs", "html"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(root.join("html/index.html"), "hello from the mTLS origin\n")?;
    let r = root.display();
    // The client's certificate, from the policy CA (any CA nginx trusts would do).
    let key = format!("{r}/client.key");
    let csr = format!("{r}/client.csr");
    let cert = format!("{r}/client.pem");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let o = std::process::Command::new("openssl").args(args).output()?;
        anyhow::ensure!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(())
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-subj",
        "/CN=lab client",
        "-out",
        &csr,
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &t.pki.policy_ca_cert.display().to_string(),
        "-CAkey",
        &t.pki.policy_ca_key.display().to_string(),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &cert,
    ])?;
    let conf = format!(
        "daemon off;\nmaster_process off;\nuser root;\npid {r}/nginx.pid;\nerror_log {r}/logs/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {r}/logs/access.log;\n  client_body_temp_path {r}/tmp/body;\n  proxy_temp_path {r}/tmp/proxy;\n\
           fastcgi_temp_path {r}/tmp/fastcgi;\n  uwsgi_temp_path {r}/tmp/uwsgi;\n  scgi_temp_path {r}/tmp/scgi;\n\
           server {{\n    listen {SERVER_A}:{MTLS_PORT} ssl;\n    server_name {};\n    ssl_certificate {};\n    ssl_certificate_key {};\n\
             ssl_client_certificate {};\n    ssl_verify_client on;\n    root {r}/html;\n  }}\n}}\n",
        lab::SERVER_NAME,
        t.pki.origin_cert.display(),
        t.pki.origin_key.display(),
        t.pki.policy_ca_cert.display(),
    );
    let conf_path = format!("{r}/nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = t.lab.command(
        t.lab.server_ns(),
        "nginx",
        &[
            "-p",
            &r.to_string(),
            "-c",
            &conf_path,
            "-e",
            &format!("{r}/logs/error.log"),
        ],
    );
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let pid = t.lab.spawn("mTLS nginx", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t
        .lab
        .exec(
            t.lab.server_ns(),
            "sh",
            &["-c", &format!("ss -ltn | grep -q {SERVER_A}:{MTLS_PORT}")],
        )
        .is_ok_and(|o| o.status.success())
    {
        anyhow::ensure!(
            t.lab.is_running(pid) && Instant::now() < deadline,
            "the mTLS nginx did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((cert, key))
}

/// The flow record of the connection from IN_SCOPE:`port` to `server`
/// begun at or after `since`: a client port the kernel reused for another
/// connection cannot match in its place.
fn find(
    records: &[Value],
    port: u16,
    server: (Ipv4Addr, u16),
    since: SystemTime,
) -> Option<&Value> {
    lab::connection_record(records, (IN_SCOPE, port), server, since)
}

/// The `event` record (tls) of that connection, by its flow id.
fn find_event<'r>(
    records: &'r [Value],
    event: &str,
    port: u16,
    server: (Ipv4Addr, u16),
    since: SystemTime,
) -> Option<&'r Value> {
    lab::event_of(records, event, find(records, port, server, since)?)
}

fn intercept(mode: LabMode, tag: &str, workers: usize) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build(tag, mode, &[IN_SCOPE, OUT_OF_SCOPE], &[SERVER_A, SERVER_B])?;
    let nginx = t.start_nginx()?;
    let (config, log) = t.write_config(IN_SCOPE)?;
    let text = std::fs::read_to_string(&config)?;
    assert!(text.contains("tls13 = \"inspect\"") && text.contains("ech = \"inspect\""));
    // A second, closed port in the same scope.
    let text = text.replace(
        "destination_ports = [\"443/443\"]",
        &format!(
            "destination_ports = [\"443/443\", \"{CLOSED_PORT}/{CLOSED_PORT}\", \"{MTLS_PORT}/{MTLS_PORT}\"]"
        ),
    );
    // Both directions of a flow must reach the worker that owns it.
    let cpus: Vec<String> = (0..workers).map(|c| c.to_string()).collect();
    let text = text.replace("cpus = [0]", &format!("cpus = [{}]", cpus.join(", ")));
    std::fs::write(&config, text)?;
    let app = t.start_appliance(&config, OUT_OF_SCOPE, SERVER_A)?;
    let policy_ca = &t.pki.policy_ca_cert;
    let origin_root = &t.pki.origin_root;

    // (a) In scope, HTTP/1.1 and HTTP/2: the policy CA's chain, 200, the body.
    let mut inspected = Vec::new();
    for http2 in [false, true] {
        let out = t.path(&format!("index-{http2}.html"));
        let since = SystemTime::now();
        let c = t.curl(IN_SCOPE, SERVER_A, "/index.html", policy_ca, &out, http2)?;
        assert_eq!(c.http_code, 200, "{mode:?}: {c:?}\n{}", app.stderr());
        assert_eq!(c.ssl_verify_result, 0, "{mode:?}: {c:?}");
        assert!(
            c.issuer.contains(lab::pki::POLICY_CA_CN),
            "{mode:?}: in-scope issuer {:?}",
            c.issuer
        );
        assert_eq!(c.http_version, if http2 { "2" } else { "1.1" }, "{c:?}");
        assert_eq!(std::fs::read_to_string(&out)?, "hello from nginx\n");
        inspected.push((c.local_port, SERVER_A, since));
    }
    // The same client trusting only the origin root refuses our chain.
    let refused = t.curl(
        IN_SCOPE,
        SERVER_A,
        "/index.html",
        origin_root,
        &t.path("refused.html"),
        false,
    );
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|c| c.http_code != 200),
        "{mode:?}: a client not trusting the policy CA got through: {refused:?}"
    );
    // openssl s_client sees the forged leaf issued by the policy CA.
    let s = t.s_client(IN_SCOPE, SERVER_A, policy_ca, &[])?;
    assert!(s.success, "{mode:?}: s_client: {}", s.output);
    let issuers = s.issuers();
    assert!(
        issuers
            .first()
            .is_some_and(|i| i.contains(lab::pki::POLICY_CA_CN)),
        "{mode:?}: s_client chain issuers {issuers:?}"
    );

    // A 50 MB download through the inspection, byte-identical.
    let big = t.path("big.bin");
    let started = Instant::now();
    let since = SystemTime::now();
    let c = t.curl(IN_SCOPE, SERVER_B, "/big.bin", policy_ca, &big, false)?;
    let took = started.elapsed();
    assert_eq!(c.http_code, 200, "{mode:?}: {c:?}");
    assert!(c.issuer.contains(lab::pki::POLICY_CA_CN), "{c:?}");
    assert_eq!(std::fs::metadata(&big)?.len(), 50 << 20);
    assert_eq!(
        lab::sha256_file(&big)?,
        nginx.big_sha256,
        "{mode:?}: the 50 MB body differs"
    );
    std::fs::remove_file(&big)?;
    eprintln!("{mode:?}: 50 MB inspected download took {took:?}");
    inspected.push((c.local_port, SERVER_B, since));

    // 40 connections, 20 at a time, all inspected and all answered.
    let url = format!("https://{}/index.html", lab::SERVER_NAME);
    let resolve = format!("{}:443:{SERVER_A}", lab::SERVER_NAME);
    let ca = policy_ca.display().to_string();
    let src = IN_SCOPE.to_string();
    let mut args: Vec<&str> = vec![
        "-sS",
        "--max-time",
        "60",
        "-Z",
        "--parallel-max",
        "20",
        "--http1.1",
        "--no-keepalive",
        "-H",
        "Connection: close",
        "--interface",
        &src,
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-w",
        "%{http_code} %{local_port}\n",
    ];
    for _ in 0..40 {
        args.extend(["-o", "/dev/null", &url]);
    }
    let parallel_since = SystemTime::now();
    let o = t.lab.exec(t.lab.client_ns(), "curl", &args)?;
    let parallel_until = SystemTime::now();
    let w = String::from_utf8_lossy(&o.stdout).into_owned();
    let ports: std::collections::HashSet<&str> =
        w.lines().filter_map(|l| l.strip_prefix("200 ")).collect();
    assert_eq!(ports.len(), 40, "{mode:?}: parallel requests: {w}");

    // (b) Out of scope: the origin's real chain.
    let c = t.curl(
        OUT_OF_SCOPE,
        SERVER_A,
        "/index.html",
        origin_root,
        &t.path("oos.html"),
        true,
    )?;
    assert_eq!(c.http_code, 200, "{mode:?}: {c:?}");
    assert!(
        c.issuer.contains(lab::pki::ORIGIN_ROOT_CN),
        "{mode:?}: out-of-scope issuer {:?}",
        c.issuer
    );
    let oos_port = c.local_port;

    // (e) A closed in-scope port: the server's RST reaches curl at once.
    let started = Instant::now();
    let o = t
        .lab
        .command(
            t.lab.client_ns(),
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "--interface",
                &IN_SCOPE.to_string(),
                &format!("https://{SERVER_A}:{CLOSED_PORT}/"),
            ],
        )
        .output()?;
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(7), "{mode:?}: curl said {err}");
    assert!(
        err.contains("Connection refused") || err.contains("Couldn't connect"),
        "{mode:?}: {err}"
    );
    assert!(
        took < Duration::from_secs(3),
        "{mode:?}: refusal took {took:?}"
    );

    // Plain HTTP on the in-scope port: non_tls = "passthrough" relays it
    // unchanged, so nginx itself answers (400: plain HTTP to an HTTPS port).
    let plain_since = SystemTime::now();
    let o = t.lab.exec(
        t.lab.client_ns(),
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "--interface",
            &IN_SCOPE.to_string(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{local_port}",
            &format!("http://{SERVER_A}:443/"),
        ],
    )?;
    let w = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut it = w.split_whitespace();
    assert_eq!(it.next(), Some("400"), "{mode:?}: plain HTTP: {w}");
    let plain_port: u16 = it.next().unwrap_or_default().parse()?;

    // An upstream certificate that does not verify (wrong name): forged with
    // the untrusted issuer, so the client fails although it trusts our CA.
    let o = t
        .lab
        .command(
            t.lab.client_ns(),
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "--interface",
                &IN_SCOPE.to_string(),
                "--cacert",
                &policy_ca.display().to_string(),
                "--resolve",
                &format!("wrong.example.net:443:{SERVER_A}"),
                "https://wrong.example.net/",
            ],
        )
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(60), "{mode:?}: wrong name: {err}");

    // A server that asks for a client certificate: the first connection is
    // still served (bypass-cached, the hello replayed on a fresh server leg,
    // passed), so the client sees the origin's chain and authenticates; the
    // next one passes from the bypass cache.
    let (client_cert, client_key) = start_mtls_origin(&t)?;
    let bundle = t.path("bundle.pem");
    std::fs::write(
        &bundle,
        [std::fs::read(origin_root)?, std::fs::read(policy_ca)?].concat(),
    )?;
    let mut mtls_ports = Vec::new();
    for _ in 0..2 {
        let since = SystemTime::now();
        let o = t.lab.exec(
            t.lab.client_ns(),
            "curl",
            &[
                "-sS",
                "-v",
                "--max-time",
                "20",
                "--http1.1",
                "--interface",
                &IN_SCOPE.to_string(),
                "--cacert",
                &bundle.display().to_string(),
                "--cert",
                &client_cert,
                "--key",
                &client_key,
                "--resolve",
                &format!("{}:{MTLS_PORT}:{SERVER_A}", lab::SERVER_NAME),
                "-w",
                "%{http_code} %{local_port}",
                "-o",
                "/dev/null",
                &format!("https://{}:{MTLS_PORT}/", lab::SERVER_NAME),
            ],
        )?;
        let w = String::from_utf8_lossy(&o.stdout).into_owned();
        let verbose = String::from_utf8_lossy(&o.stderr).into_owned();
        let mut it = w.split_whitespace();
        assert_eq!(it.next(), Some("200"), "{mode:?}: mTLS: {w} {verbose}");
        assert!(
            verbose.contains(lab::pki::ORIGIN_ROOT_CN),
            "{mode:?}: mTLS client should see the origin chain: {verbose}"
        );
        mtls_ports.push((it.next().unwrap_or_default().parse::<u16>()?, since));
    }

    // (d) Reload with tls13 = "passthrough": a NEW connection is passed and
    // sees the origin's chain.
    let text =
        std::fs::read_to_string(&config)?.replace("tls13 = \"inspect\"", "tls13 = \"passthrough\"");
    std::fs::write(&config, text)?;
    t.lab.signal(app.pid, "HUP")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.stderr().contains("SIGHUP: reloaded") {
        assert!(
            Instant::now() < deadline,
            "{mode:?}: no reload logged: {}",
            app.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pass_since = SystemTime::now();
    let c = t.curl(
        IN_SCOPE,
        SERVER_A,
        "/index.html",
        origin_root,
        &t.path("pass.html"),
        false,
    )?;
    assert_eq!(c.http_code, 200, "{mode:?}: {c:?}");
    assert!(
        c.issuer.contains(lab::pki::ORIGIN_ROOT_CN),
        "{mode:?}: passthrough issuer {:?}",
        c.issuer
    );
    let pass_port = c.local_port;

    // on_disable = "interrupt" (the demo config): disabling the policy
    // resets a flow that is still running, at once.
    let slow_out = t.path("slow.bin");
    let slow_err = t.path("slow.err");
    let mut cmd = t.lab.command(
        t.lab.client_ns(),
        "curl",
        &[
            "-sS",
            "--max-time",
            "60",
            "--limit-rate",
            "2M",
            "--interface",
            &IN_SCOPE.to_string(),
            "--cacert",
            &origin_root.display().to_string(),
            "--resolve",
            &format!("{}:443:{SERVER_B}", lab::SERVER_NAME),
            "-o",
            &slow_out.display().to_string(),
            &format!("https://{}/big.bin", lab::SERVER_NAME),
        ],
    );
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&slow_err)?);
    let slow = t.lab.spawn("slow curl", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::metadata(&slow_out).map_or(0, |m| m.len()) < 1 << 20 {
        assert!(
            Instant::now() < deadline && t.lab.is_running(slow),
            "{mode:?}: the slow download did not start: {}",
            std::fs::read_to_string(&slow_err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&config)?.replace("enabled = true", "enabled = false");
    std::fs::write(&config, text)?;
    t.lab.signal(app.pid, "HUP")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.lab.is_running(slow) {
        assert!(
            Instant::now() < deadline,
            "{mode:?}: the running flow was not interrupted: {}",
            app.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = t.lab.stop(slow, "TERM", Duration::from_secs(5))?;
    let err = std::fs::read_to_string(&slow_err).unwrap_or_default();
    // Reset while receiving (56) or while its TLS stack was sending (55).
    assert!(
        matches!(status.code(), Some(55 | 56)) && err.contains("Connection reset by peer"),
        "{mode:?}: curl {status}: {err}"
    );
    assert!(
        std::fs::metadata(&slow_out)?.len() < 50 << 20,
        "{mode:?}: completed anyway"
    );
    assert!(app
        .stderr()
        .contains("interrupting the running flows of disabled policy pol-demo"));

    let counters = t.stop_appliance(&app)?;
    let records = lab::read_log(&log)?;
    assert!(
        counters.contains("intercept_interrupted 1") && counters.contains("intercepted_started "),
        "{mode:?}: final counters: {counters}"
    );

    // (c) The inspected records.
    for (port, server, since) in &inspected {
        let r = find(&records, *port, (*server, 443), *since).unwrap_or_else(|| {
            panic!("{mode:?}: no record for port {port} -> {server} in {records:#?}\n{counters}")
        });
        assert_eq!(r["tlsinspect"]["action"], "inspected", "{r:#}");
        assert_eq!(r["tlsinspect"]["policy_id"], "pol-demo", "{r:#}");
        assert_eq!(r["tlsinspect"]["scope_id"], "sc-https", "{r:#}");
        assert_eq!(r["dest_port"], 443, "{r:#}");
        assert_eq!(r["tls"]["sni"], lab::SERVER_NAME, "{r:#}");
        let tls = find_event(&records, "tls", *port, (*server, 443), *since)
            .unwrap_or_else(|| panic!("{mode:?}: no tls record for port {port}"));
        assert_eq!(tls["tlsinspect"]["upstream"]["verified"], true, "{tls:#}");
        assert!(
            tls["tls"]["issuerdn"]
                .as_str()
                .is_some_and(|i| i.contains(lab::pki::ORIGIN_ROOT_CN)),
            "{tls:#}"
        );
        assert!(
            r["flow"]["bytes_toserver"].as_u64().unwrap_or(0) > 0,
            "{r:#}"
        );
        let down = r["flow"]["bytes_toclient"].as_u64().unwrap_or(0);
        if *server == SERVER_B {
            assert!(down >= 50 << 20, "{r:#}");
        } else {
            assert!(down > 0, "{r:#}");
        }
    }
    let parallel = records
        .iter()
        .filter(|r| {
            r["event_type"] == "flow"
                && r["tlsinspect"]["action"] == "inspected"
                && r["src_ip"] == IN_SCOPE.to_string()
                && ports.contains(r["src_port"].to_string().as_str())
                && r["dest_ip"] == SERVER_A.to_string()
                && lab::flow_start(r).is_some_and(|s| s >= parallel_since && s <= parallel_until)
        })
        .count();
    assert_eq!(parallel, 40, "{mode:?}: records of the parallel requests");
    let r = find(&records, pass_port, (SERVER_A, 443), pass_since)
        .unwrap_or_else(|| panic!("{mode:?}: no record of the passed flow in {records:#?}"));
    assert_eq!(
        (&r["tlsinspect"]["action"], &r["tlsinspect"]["reason"]),
        (&Value::from("pass"), &Value::from("tls13")),
        "{r:#}"
    );
    assert_eq!(r["tlsinspect"]["policy_id"], "pol-demo", "{r:#}");
    assert!(
        !records
            .iter()
            .any(|r| r["src_ip"] == OUT_OF_SCOPE.to_string() && r["src_port"] == oos_port),
        "{mode:?}: the out-of-scope flow was logged"
    );
    let r = find(&records, plain_port, (SERVER_A, 443), plain_since)
        .unwrap_or_else(|| panic!("{mode:?}: no record of the plain HTTP flow in {records:#?}"));
    assert_eq!(
        (&r["tlsinspect"]["action"], &r["tlsinspect"]["reason"]),
        (&Value::from("pass"), &Value::from("non_tls")),
        "{r:#}"
    );
    let r = records
        .iter()
        .find(|r| r["event_type"] == "tls" && r["tls"]["sni"] == "wrong.example.net")
        .unwrap_or_else(|| panic!("{mode:?}: no record of the wrong-name flow in {records:#?}"));
    assert_eq!(r["tlsinspect"]["reason"], "invalid_certificate", "{r:#}");
    assert_eq!(r["tlsinspect"]["upstream"]["verified"], false, "{r:#}");
    let reasons: Vec<&Value> = mtls_ports
        .iter()
        .map(|(p, since)| {
            &find(&records, *p, (SERVER_A, MTLS_PORT), *since).expect("mTLS record")["tlsinspect"]
                ["reason"]
        })
        .collect();
    assert_eq!(
        reasons,
        ["client_auth", "bypass_cache"],
        "{mode:?}: mTLS records"
    );
    let refused = records
        .iter()
        .find(|r| r["event_type"] == "flow" && r["dest_port"] == CLOSED_PORT)
        .unwrap_or_else(|| panic!("{mode:?}: no record of the refused flow in {records:#?}"));
    assert_eq!(
        refused["tlsinspect"]["reason"], "server_refused",
        "{refused:#}"
    );
    Ok(())
}

#[test]
fn intercept_af_packet() -> anyhow::Result<()> {
    intercept(LabMode::AfPacket, "icaf", 1)
}

#[test]
fn intercept_af_packet_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || {
        intercept(LabMode::AfPacket, "icafo", 1)
    })
}

#[test]
fn intercept_tun() -> anyhow::Result<()> {
    intercept(LabMode::Tun, "ictun", 1)
}

#[test]
fn intercept_tun_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || intercept(LabMode::Tun, "ictuno", 1))
}

/// Two workers: the fanout (af_packet) or the handoff (tun) brings both
/// directions of every intercepted flow to its owner.
#[test]
fn intercept_two_workers() -> anyhow::Result<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return Ok(());
    }
    intercept(LabMode::AfPacket, "ic2af", 2)?;
    intercept(LabMode::Tun, "ic2tun", 2)
}

#[test]
fn intercept_two_workers_offloads_on() -> anyhow::Result<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return Ok(());
    }
    lab::with_offloads(lab::Offloads::On, || {
        intercept(LabMode::AfPacket, "ic2afo", 2)?;
        intercept(LabMode::Tun, "ic2tuno", 2)
    })
}
