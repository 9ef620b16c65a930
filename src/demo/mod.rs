//! `tlsinspect demo` and the lab it runs in.
//!
//! The demo is built from the same pieces as the integration tests — the
//! namespace topology in [`lab`], the lab PKI in [`pki`], the peers in
//! [`probe`] — so it shows what the tests prove. Everything it reports is
//! read back from what really happened: the peers' own observations (printed
//! as JSON by the hidden `lab-helper` subcommands running inside the
//! namespaces) and the appliance's traffic log. It claims nothing it did not
//! observe.

pub mod geneve;
pub mod lab;
pub mod lb;
pub mod lb_process;
pub mod pki;
pub mod probe;
pub mod storm;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use serde_json::Value;

use lab::{Lab, LabMode, LabSpec};
use probe::{FetchResult, PingResult, UdpResult};

/// The demo's configuration template (placeholders `@NAME@`).
pub const DEMO_CONFIG_TEMPLATE: &str = include_str!("../../configs/demo.toml");

/// Engine settings the demo appends to its configuration.
const DEMO_ENGINES: &str = include_str!("../../configs/demo-engines.toml");

/// The project's default IPS rules, written next to the demo's configuration.
const DEFAULT_RULES: &str = include_str!("../../configs/rules/default.rules");

/// A second name the lab origin answers for, so the shipped GitHub
/// signatures identify the demo's app-control requests.
const GITHUB_NAME: &str = "github.com";

/// Values substituted into [`DEMO_CONFIG_TEMPLATE`] (and the test configs).
#[derive(Debug, Clone)]
pub struct ConfigVars<'a> {
    /// `af_packet` or `tun`.
    pub mode: &'a str,
    /// Client-side device.
    pub lan: &'a str,
    /// Server-side device.
    pub wan: &'a str,
    /// Traffic log path.
    pub log: &'a Path,
    /// Control socket path.
    pub control: &'a Path,
    /// Upstream roots PEM.
    pub roots: &'a Path,
    /// Policy CA certificate.
    pub ca_cert: &'a Path,
    /// Policy CA key.
    pub ca_key: &'a Path,
    /// The in-scope client address.
    pub in_scope: Ipv4Addr,
}

/// Fills in a config template.
pub fn render_config(template: &str, v: &ConfigVars<'_>) -> String {
    template
        .replace("@MODE@", v.mode)
        .replace("@LAN@", v.lan)
        .replace("@WAN@", v.wan)
        .replace("@LOG@", &v.log.display().to_string())
        .replace("@CONTROL@", &v.control.display().to_string())
        .replace("@ROOTS@", &v.roots.display().to_string())
        .replace("@CA_CERT@", &v.ca_cert.display().to_string())
        .replace("@CA_KEY@", &v.ca_key.display().to_string())
        .replace("@IN_SCOPE@", &v.in_scope.to_string())
}

const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUT_OF_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SERVER_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const SERVER_NAME: &str = "www.example.com";
const UDP_ECHO_PORT: u16 = 7;

/// Runs a hidden helper inside `ns` and parses the JSON line it prints.
fn helper<T: DeserializeOwned>(
    lab: &Lab,
    ns: &str,
    exe: &Path,
    args: &[&str],
) -> anyhow::Result<T> {
    let mut full = vec!["lab-helper"];
    full.extend_from_slice(args);
    let out = lab.exec(ns, &exe.display().to_string(), &full)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .with_context(|| format!("parsing the output of lab-helper {args:?}: {text:?}"))
}

/// A request the demo sends: client, SNI, method, path, extra header, body.
type DemoRequest = (
    Ipv4Addr,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// A demo request and what it observed.
struct Probe {
    what: String,
    src: Ipv4Addr,
    src_port: Option<u16>,
    dst: SocketAddr,
    outcome: String,
    /// Method and target of an HTTP request, to look it up in the origin's log.
    request: Option<(String, String)>,
}

fn rule(title: &str) {
    println!(
        "\n== {title} {}",
        "=".repeat(70usize.saturating_sub(title.len()))
    );
}

/// Runs `tlsinspect demo`.
pub fn run(keep: bool) -> anyhow::Result<()> {
    if !lab::is_root() {
        bail!("`tlsinspect demo` needs root: it creates network namespaces (try: sudo tlsinspect demo)");
    }
    if !lab::have_program("ip") {
        bail!("`tlsinspect demo` needs iproute2's `ip` command on PATH");
    }
    let exe = std::env::current_exe().context("locating the tlsinspect binary")?;
    let dir = std::env::temp_dir().join(format!("tlsinspect-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(&exe, &dir, keep);
    if keep {
        println!("\nfiles kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(exe: &Path, dir: &Path, keep: bool) -> anyhow::Result<()> {
    rule("lab");
    let pki = pki::create(
        &dir.join("pki"),
        &[
            SERVER_NAME,
            GITHUB_NAME,
            &SERVER_A.to_string(),
            &SERVER_B.to_string(),
        ],
    )?;
    println!(
        "lab PKI (made just now with rcgen) in {}",
        dir.join("pki").display()
    );
    println!(
        "  origin certificate for {SERVER_NAME}, issued by \"{}\"",
        pki::ORIGIN_ROOT_CN
    );
    println!("  policy CA \"{}\" for policy pol-demo", pki::POLICY_CA_CN);

    let mut lab = Lab::build(LabSpec {
        offloads: lab::Offloads::On,
        prefix: lab::unique_prefix("demo"),
        mode: LabMode::AfPacket,
        clients: vec![IN_SCOPE, OUT_OF_SCOPE],
        servers: vec![SERVER_A, SERVER_B],
    })?;
    if keep {
        lab.keep();
    }
    println!(
        "namespaces: {} (clients {IN_SCOPE}, {OUT_OF_SCOPE}) ─ {} (appliance, af_packet bridge lan<->wan) ─ {} (router 192.0.2.1, servers {SERVER_A}, {SERVER_B})",
        lab.client_ns(),
        lab.appliance_ns(),
        lab.server_ns()
    );
    for note in lab.notes() {
        println!("  note: {note}");
    }

    // The origin and the UDP echo, in the server ns.
    let exe_s = exe.display().to_string();
    let cert = pki.origin_cert.display().to_string();
    let key = pki.origin_key.display().to_string();
    let a443 = format!("{SERVER_A}:443");
    let b443 = format!("{SERVER_B}:443");
    let origin_log = std::fs::File::create(dir.join("origin.log"))?;
    let mut cmd = lab.command(
        lab.server_ns(),
        &exe_s,
        &[
            "lab-helper",
            "origin",
            "--cert",
            &cert,
            "--key",
            &key,
            "--listen",
            &a443,
            "--listen",
            &b443,
        ],
    );
    cmd.stdout(Stdio::null()).stderr(origin_log);
    lab.spawn("HTTPS origin", cmd)?;
    let echo = format!("{SERVER_A}:{UDP_ECHO_PORT}");
    let mut cmd = lab.command(
        lab.server_ns(),
        &exe_s,
        &["lab-helper", "udp-echo", "--listen", &echo],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    lab.spawn("UDP echo", cmd)?;
    println!(
        "origin: HTTPS on {a443} and {b443} ({SERVER_NAME}), UDP echo on {echo} (built-in peers)"
    );

    // The appliance, in the appliance ns.
    let log_path = dir.join("traffic.jsonl");
    let config_path = dir.join("demo.toml");
    let (lan, wan) = lab.appliance_ports();
    let config = render_config(
        DEMO_CONFIG_TEMPLATE,
        &ConfigVars {
            mode: "af_packet",
            lan,
            wan,
            log: &log_path,
            control: &dir.join("control.sock"),
            roots: &pki.origin_root,
            ca_cert: &pki.policy_ca_cert,
            ca_key: &pki.policy_ca_key,
            in_scope: IN_SCOPE,
        },
    );
    // The console, on the appliance namespace's loopback; its certificate
    // and first password are made in the demo's state dir.
    let control_line = format!("control = \"{}\"\n", dir.join("control.sock").display());
    let config = config.replacen(
        &control_line,
        &format!(
            "{control_line}state_dir = \"{}\"\n",
            dir.join("state").display()
        ),
        1,
    );
    let config = format!("{config}\n{DEMO_ENGINES}\n[console]\nlisten = \"{DEMO_CONSOLE}\"\n");
    std::fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    std::fs::create_dir_all(dir.join("rules"))?;
    std::fs::write(dir.join("rules/default.rules"), DEFAULT_RULES)?;
    let appliance_out = dir.join("appliance.out");
    let appliance_err = dir.join("appliance.err");
    let cfg = config_path.display().to_string();
    let mut cmd = lab.command(lab.appliance_ns(), &exe_s, &["run", "--config", &cfg]);
    cmd.stdout(std::fs::File::create(&appliance_out)?)
        .stderr(std::fs::File::create(&appliance_err)?);
    let appliance = lab.spawn("appliance", cmd)?;
    println!("appliance: tlsinspect run --config {cfg}  (pid {appliance})");
    println!("  policy pol-demo / scope sc-https: source {IN_SCOPE}, destinations 203.0.113.0/24, port 443");
    println!("  tls13 = \"inspect\", ech = \"inspect\": in-scope TLS is terminated and re-signed by the policy CA");
    println!("  (the demo's clients trust both the origin root and the policy CA, as a managed client would)");
    println!("  engines: IPS prevent with the default rules; web filter denies POST/PUT to www.example.com/upload/*;");
    println!("           app control denies github/upload (a git push), shipped app signatures");

    // Wait until frames cross the appliance: nothing passes the lab until it bridges.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if !lab.is_running(appliance) {
            let err = std::fs::read_to_string(&appliance_err).unwrap_or_default();
            bail!("the appliance exited during start-up:\n{}", err.trim());
        }
        let p: PingResult = helper(
            &lab,
            lab.client_ns(),
            exe,
            &[
                "ping",
                "--source",
                &OUT_OF_SCOPE.to_string(),
                "--to",
                &SERVER_A.to_string(),
                "--count",
                "1",
                "--timeout-ms",
                "300",
            ],
        )?;
        if p.received > 0 {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "no frame crossed the appliance within 15 s of its start (see {})",
                appliance_err.display()
            );
        }
    }

    show_console(dir, &appliance_err, lab.appliance_ns());

    rule("requests");
    let mut probes = Vec::new();
    for src in [IN_SCOPE, OUT_OF_SCOPE] {
        let p: PingResult = helper(
            &lab,
            lab.client_ns(),
            exe,
            &[
                "ping",
                "--source",
                &src.to_string(),
                "--to",
                &SERVER_A.to_string(),
                "--count",
                "3",
            ],
        )?;
        let rtt = p.rtt_us.iter().copied().max().unwrap_or(0);
        probes.push(Probe {
            what: "ping".into(),
            src,
            src_port: None,
            dst: SocketAddr::new(SERVER_A.into(), 0),
            outcome: format!("{}/{} replies (max rtt {} µs)", p.received, p.sent, rtt),
            request: None,
        });
    }
    let u: UdpResult = helper(
        &lab,
        lab.client_ns(),
        exe,
        &[
            "udp-send",
            "--source",
            &format!("{IN_SCOPE}:40007"),
            "--to",
            &echo,
            "--payload",
            "hello over UDP",
        ],
    )?;
    probes.push(Probe {
        what: "UDP datagram".into(),
        src: IN_SCOPE,
        src_port: Some(40007),
        dst: echo.parse()?,
        outcome: if u.echoed {
            format!("echoed back unchanged (rtt {} µs)", u.rtt_us.unwrap_or(0))
        } else {
            "no echo".into()
        },
        request: None,
    });
    let ca = pki.origin_root.display().to_string();
    let policy_ca = pki.policy_ca_cert.display().to_string();
    let expect_sha = probe::sha256_hex(&probe::pattern_bytes(1 << 20));
    // (client, SNI, method, path, extra header, body)
    let requests: [DemoRequest; 8] = [
        (IN_SCOPE, SERVER_NAME, "GET", "/", None, None),
        (IN_SCOPE, SERVER_NAME, "GET", "/bytes/1048576", None, None),
        (OUT_OF_SCOPE, SERVER_NAME, "GET", "/", None, None),
        // Web filter: an upload to /upload/ is answered 403 by the appliance.
        (
            IN_SCOPE,
            SERVER_NAME,
            "POST",
            "/upload/report.csv",
            None,
            Some("quarterly,numbers\n1,2\n"),
        ),
        // IPS (default rules, prevent): path traversal and a card number in
        // an upload are dropped: the connection is reset.
        (
            IN_SCOPE,
            SERVER_NAME,
            "GET",
            "/static/../../etc/passwd",
            None,
            None,
        ),
        (
            IN_SCOPE,
            SERVER_NAME,
            "POST",
            "/api/notes",
            None,
            Some("note=card 4111 1111 1111 1111 exp 12/29"),
        ),
        // App identification and control with the shipped signatures.
        (IN_SCOPE, GITHUB_NAME, "GET", "/octo/repo", None, None),
        (
            IN_SCOPE,
            GITHUB_NAME,
            "POST",
            "/octo/repo.git/git-receive-pack",
            Some("Content-Type: application/x-git-receive-pack-request"),
            Some("0000"),
        ),
    ];
    for (src, sni, method, path, header, body) in requests {
        let src_s = src.to_string();
        let mut args = vec![
            "fetch",
            "--source",
            &src_s,
            "--connect",
            &a443,
            "--sni",
            sni,
            "--ca",
            &ca,
            "--ca",
            &policy_ca,
            "--method",
            method,
            "--path",
            path,
        ];
        if let Some(h) = header {
            args.extend(["--header", h]);
        }
        if let Some(b) = body {
            args.extend(["--body", b]);
        }
        let f: FetchResult = helper(&lab, lab.client_ns(), exe, &args)?;
        let issuer = f.chain.first().map(|c| c.issuer.as_str()).unwrap_or("?");
        // Who signed what the client saw tells whether we were in the middle.
        let verdict = if issuer.contains(pki::POLICY_CA_CN) {
            "INTERCEPTED: the leaf was forged by the appliance and signed by the policy CA"
        } else if issuer.contains(pki::ORIGIN_ROOT_CN) {
            "not intercepted: the origin's own certificate"
        } else {
            "unexpected issuer"
        };
        let outcome = if f.ok {
            let body = if path.starts_with("/bytes/") {
                if f.body_sha256.as_deref() == Some(expect_sha.as_str()) {
                    format!("{} bytes, sha256 identical to the origin's", f.body_len)
                } else {
                    format!("{} bytes, sha256 DIFFERS from the origin's", f.body_len)
                }
            } else {
                format!("body {:?}", f.body_head)
            };
            let chain: Vec<String> = f
                .chain
                .iter()
                .map(|c| format!("\"{}\" issued by \"{}\"", c.subject, c.issuer))
                .collect();
            format!(
                "HTTP {} over {} ({}), certificate issued by \"{issuer}\", {body}\n  {verdict}\n  chain presented (leaf first): {}",
                f.status.unwrap_or(0),
                f.tls_version.as_deref().unwrap_or("?"),
                f.alpn.as_deref().unwrap_or("no ALPN"),
                chain.join(" <- "),
            )
        } else {
            format!(
                "no HTTP answer: {} (certificate issued by \"{issuer}\")",
                f.error.unwrap_or_default()
            )
        };
        probes.push(Probe {
            what: format!("HTTPS {method} https://{sni}{path}"),
            src,
            src_port: Some(f.local_port),
            dst: a443.parse()?,
            outcome,
            request: Some((method.to_string(), path.to_string())),
        });
    }

    rule("appliance shutdown");
    let status = lab.stop(appliance, "TERM", Duration::from_secs(15))?;
    let out = std::fs::read_to_string(&appliance_out).unwrap_or_default();
    let err = std::fs::read_to_string(&appliance_err).unwrap_or_default();
    println!("appliance exited with {status}; its report:");
    for line in out.lines().chain(err.lines()) {
        println!("  | {line}");
    }

    let records = read_log(&log_path)?;
    let origin_log = std::fs::read_to_string(dir.join("origin.log")).unwrap_or_default();
    rule("what happened");
    for p in &probes {
        let (src, dst) = match p.src_port {
            Some(port) => (format!("{}:{port}", p.src), p.dst.to_string()),
            None => (p.src.to_string(), p.dst.ip().to_string()),
        };
        println!("{} from {src} to {dst}", p.what);
        println!("  client saw: {}", p.outcome);
        if let Some((method, path)) = &p.request {
            let needle = format!(": {method} {path} (");
            if origin_log.lines().any(|l| l.contains(&needle)) {
                println!("  origin: received the request");
            } else {
                println!("  origin: NEVER received the request");
            }
        }
        let mine: Vec<&Value> = records
            .iter()
            .filter(|r| {
                r["src_ip"].as_str() == Some(&p.src.to_string())
                    && r["dest_ip"].as_str() == Some(&p.dst.ip().to_string())
                    && (p.src_port.is_none() || r["src_port"].as_u64() == p.src_port.map(u64::from))
                    && (p.what != "ping"
                        || r["proto"]
                            .as_str()
                            .is_some_and(|x| x.eq_ignore_ascii_case("icmp")))
            })
            .collect();
        if mine.is_empty() {
            println!(
                "  path: fast path — matched no scope, forwarded unchanged, no traffic-log record"
            );
        }
        for r in mine {
            print_record(r);
        }
    }
    println!(
        "\ntraffic log: {} record(s) in {}",
        records.len(),
        log_path.display()
    );

    if keep {
        rule("kept");
        println!(
            "the lab is still there; remove it with:\n{}",
            lab.teardown_commands()
        );
    } else {
        drop(lab);
        println!("\nlab removed (namespaces and processes).");
    }
    Ok(())
}

/// Prints one EVE record as a line of explanation and the record itself.
fn print_record(r: &Value) {
    let ext = &r["tlsinspect"];
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    match r["event_type"].as_str().unwrap_or("?") {
        "alert" => {
            let a = &r["alert"];
            println!(
                "  alert: {} rule {} \"{}\" -> {} (EVE gid {}, {}) (policy {}, scope {})",
                s(&ext["engine"]),
                a["signature_id"],
                s(&a["signature"]),
                s(&ext["verdict"]),
                a["gid"],
                s(&a["action"]),
                s(&ext["policy_id"]),
                s(&ext["scope_id"]),
            );
        }
        "tls" => {
            let t = &r["tls"];
            println!(
                "  tls:  sni {}, {} (client {} {}, server {}), {} / {}; upstream certificate issued by \"{}\" (verified: {}), subject \"{}\"",
                s(&t["sni"]),
                s(&t["version"]),
                s(&ext["client"]["version"]),
                s(&ext["client"]["cipher"]),
                s(&ext["upstream"]["version"]),
                s(&ext["action"]),
                s(&ext["reason"]),
                s(&t["issuerdn"]),
                ext["upstream"]["verified"],
                s(&t["subject"]),
            );
        }
        "http" => {
            let h = &r["http"];
            let app = match ext.get("app") {
                Some(a) if a.is_object() => format!(", app {}/{}", s(&a["name"]), s(&a["action"])),
                _ => String::new(),
            };
            println!(
                "  http: {} {}{} {} -> {}{app}",
                s(&h["http_method"]),
                s(&h["hostname"]),
                s(&h["url"]),
                s(&h["protocol"]),
                match &h["status"] {
                    Value::Null => "no response (never reached the server)".to_string(),
                    v => v.to_string(),
                }
            );
        }
        "flow" => {
            let f = &r["flow"];
            println!(
                "  path: in scope {}/{} — action \"{}\", reason \"{}\"; {} bytes to the server, {} to the client, {} ms",
                s(&ext["policy_id"]),
                s(&ext["scope_id"]),
                s(&ext["action"]),
                s(&ext["reason"]),
                f["bytes_toserver"],
                f["bytes_toclient"],
                ext["duration_ms"],
            );
        }
        other => println!("  {other}:"),
    }
    println!("  log:  {r}");
}

/// Where the demo's console listens, inside the appliance namespace.
const DEMO_CONSOLE: &str = "127.0.0.1:9443";

/// Prints where the demo's console is, once the appliance says it serves.
fn show_console(dir: &Path, appliance_err: &Path, ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let err = std::fs::read_to_string(appliance_err).unwrap_or_default();
        if let Some(l) = err
            .lines()
            .find(|l| l.contains("console on https://") || l.contains("console not started"))
        {
            break l.to_owned();
        }
        if Instant::now() > deadline {
            break String::new();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let state = dir.join("state");
    let pw = std::fs::read_to_string(crate::console::auth::first_password_path(&state))
        .unwrap_or_default();
    match line.split_once("console on ") {
        Some((_, rest)) => {
            println!("console: {rest}");
            println!(
                "  in the appliance namespace {ns}; first password {} ({})",
                pw.trim(),
                crate::console::auth::first_password_path(&state).display()
            );
            println!("  with --keep, open it from this host at https://{DEMO_CONSOLE}/ after:");
            println!("    socat TCP-LISTEN:9443,bind=127.0.0.1,fork,reuseaddr EXEC:'ip netns exec {ns} socat STDIO TCP:{DEMO_CONSOLE}'");
        }
        None if !line.is_empty() => println!("console: {line}"),
        None => println!("console: the appliance did not report its console within 5 s"),
    }
}

/// Reads a JSON-lines traffic log; a missing file is an empty log.
pub fn read_log(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("reading the traffic log {}", path.display()))
        }
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a JSON record", path.display(), i + 1))
        })
        .collect()
}
