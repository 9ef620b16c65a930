//! TLS interception benchmark: the appliance against sslsplit, side by side
//! in one invocation (DESIGN.md §9, issue 4 deliverable 9).
//!
//! Both interceptors run in the appliance namespace of the same lab
//! topology, pinned with `taskset` to the same single core, against the same
//! origin (nginx in the server namespace) and the same client (this binary
//! re-executed as `__loadgen` in the client namespace); origin and client
//! are pinned to the other cores. sslsplit runs in static-destination mode
//! (no iptables/nft on this machine for a transparent REDIRECT): the client
//! connects to its listener `192.0.2.2:8443` on the bridge `br0` of a
//! kernel-bridged lab, and it forwards to `203.0.113.10:443`. The appliance
//! runs in AF_PACKET mode with a policy inspecting `192.0.2.10 ->
//! 203.0.113.0/24:443`, `tls13 = "inspect"`.
//!
//! Each run checks the issuer of the certificate the client saw: the lab
//! policy CA (both interceptors sign with it) means intercepting; the lab
//! origin root means the flow was relayed, and the column says so.
//!
//! CPU time is utime+stime from `/proc/<pid>/stat` of the interceptor and
//! its descendants (sslsplit forks a privilege-separation child).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tlsinspect::demo::lab::{self, Lab, LabMode, LabSpec};
use tlsinspect::demo::pki::{self, LabPki};

use crate::loadgen::LoadResult;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// sslsplit's listener on the kernel bridge of its lab.
const SSLSPLIT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const SSLSPLIT_PORT: u16 = 8443;
const SNI: &str = "www.example.com";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Knobs, from the environment.
struct Knobs {
    seconds: u64,
    concurrency: u64,
    bulk_mb: u64,
    bulk_conns: u64,
    idle: u64,
    core: usize,
    tls12: bool,
    only: Option<String>,
    /// The appliance's IPS rules; [`Rules::EtOpen`] compares it without
    /// rules and with the ET Open set instead of against sslsplit.
    rules: Rules,
    /// Rounds of the rules comparison (columns alternate within a round).
    rounds: u64,
}

/// Which IPS rules the appliance runs (`LAB_BENCH_RULES`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rules {
    /// No `[ips]` section.
    None,
    /// `1`: the shipped `configs/rules/default.rules`, prevent mode.
    Default,
    /// `et`: the ET Open HTTP and TLS fixture set, prevent mode.
    EtOpen,
}

/// The ET Open rule files the rules comparison loads.
const ET_OPEN_RULES: [&str; 2] = [
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/et-open/et-open-http.rules"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/et-open/et-open-tls.rules"
    ),
];

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            seconds: env_u64("LAB_BENCH_SECONDS", 10),
            concurrency: env_u64("LAB_BENCH_CONCURRENCY", 32),
            bulk_mb: env_u64("LAB_BENCH_BULK_MB", 200),
            bulk_conns: env_u64("LAB_BENCH_BULK_CONNS", 1),
            idle: env_u64("LAB_BENCH_IDLE_CONNS", 10_000),
            core: env_u64("LAB_BENCH_CORE", 0) as usize,
            tls12: std::env::var("LAB_BENCH_TLS").is_ok_and(|v| v == "1.2"),
            only: std::env::var("LAB_BENCH_ONLY").ok(),
            rules: match std::env::var("LAB_BENCH_RULES").as_deref() {
                Ok("1") => Rules::Default,
                Ok("et") => Rules::EtOpen,
                _ => Rules::None,
            },
            rounds: env_u64("LAB_BENCH_ROUNDS", 1).max(1),
        }
    }

    /// Cores for the peers (client, origin): every core but the interceptor's.
    fn peer_cores(&self) -> String {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let others: Vec<String> = (0..n)
            .filter(|&c| c != self.core)
            .map(|c| c.to_string())
            .collect();
        if others.is_empty() {
            self.core.to_string()
        } else {
            others.join(",")
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sslsplit,
    Appliance(Rules),
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sslsplit => "sslsplit",
            Engine::Appliance(Rules::EtOpen) => "appliance-et",
            Engine::Appliance(_) => "appliance",
        }
    }
}

/// Everything measured for one interceptor.
#[derive(Default)]
struct Column {
    /// Issuer DN -> connections, over all runs.
    issuers: BTreeMap<String, u64>,
    suites: BTreeMap<String, u64>,
    errors: Vec<String>,
    conns_per_s: Option<f64>,
    cpu_us_per_conn: Option<f64>,
    rate_util: Option<f64>,
    bulk_mb_per_s: Option<f64>,
    cpu_ms_per_mb: Option<f64>,
    bulk_util: Option<f64>,
    bulk_mismatch: u64,
    /// Frames per MB of the bulk run at the ports: to the client, from the
    /// client, to the server, from the server.
    bulk_frames_per_mb: Option<[f64; 4]>,
    /// h2load (nghttp2), HTTP/1.1 keep-alive GET /: requests/s and
    /// interceptor CPU per request.
    h2load_req_per_s: Option<f64>,
    h2load_cpu_us_per_req: Option<f64>,
    /// Added latency p50/p99 (µs, histogram bucket bounds; appliance only).
    latency_us: Option<(f64, f64)>,
    idle_held: Option<u64>,
    idle_secs: Option<f64>,
    rss_base_kib: Option<u64>,
    rss_idle_kib: Option<u64>,
    /// The appliance's own log line of its rule load: rules loaded,
    /// skipped, milliseconds, prefilter.
    rule_load: Option<RuleLoad>,
    /// IPS alerts raised over the run (`tlsinspect_ips_alerts`, all sids).
    alerts: Option<u64>,
}

/// What the appliance logged when it loaded its rules.
#[derive(Clone, Debug)]
struct RuleLoad {
    loaded: u64,
    skipped: u64,
    ms: f64,
    prefilter: String,
}

impl RuleLoad {
    /// Parses `ips: N rules loaded, M skipped, from F file(s) in X ms
    /// (prefilter P)` out of the appliance's stderr.
    fn from_log(log: &str) -> Option<RuleLoad> {
        let l = log
            .lines()
            .find_map(|l| l.split_once("ips: ").map(|(_, r)| r))?;
        let (loaded, rest) = l.split_once(" rules loaded, ")?;
        let (skipped, rest) = rest.split_once(" skipped, ")?;
        let (_, rest) = rest.split_once(" in ")?;
        let (ms, rest) = rest.split_once(" ms (prefilter ")?;
        Some(RuleLoad {
            loaded: loaded.trim().parse().ok()?,
            skipped: skipped.trim().parse().ok()?,
            ms: ms.trim().parse().ok()?,
            prefilter: rest.trim_end_matches(')').to_owned(),
        })
    }
}

impl Column {
    fn absorb(&mut self, what: &str, r: &LoadResult) {
        for (k, v) in &r.issuers {
            *self.issuers.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.suites {
            *self.suites.entry(k.clone()).or_default() += v;
        }
        if r.errors > 0 {
            self.errors.push(format!(
                "{what}: {} failed connection(s), first: {}",
                r.errors,
                r.first_error.as_deref().unwrap_or("?")
            ));
        }
    }

    /// What the client's certificates say about this column.
    fn verdict(&self) -> &'static str {
        let policy = self.issuers.keys().any(|i| i.contains(pki::POLICY_CA_CN));
        let origin = self.issuers.keys().any(|i| i.contains(pki::ORIGIN_ROOT_CN));
        match (policy, origin) {
            (true, false) => "intercepting (leaf issued by the policy CA)",
            (false, true) => "NOT INTERCEPTING YET (client saw the origin's certificate)",
            (true, true) => "MIXED (some connections saw the origin's certificate)",
            (false, false) => "no certificate observed",
        }
    }

    fn intercepting(&self) -> bool {
        self.verdict().starts_with("intercepting")
    }
}

/// Clock ticks per second for /proc stat times.
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                    out.extend(c.split_whitespace().filter_map(|v| v.parse::<u32>().ok()));
                }
            }
        }
        i += 1;
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// utime+stime of `pid` and its descendants, seconds.
fn cpu_s(pid: u32, tck: f64) -> f64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // Fields after the ")" that closes the command name: state is
            // field 3, utime 14, stime 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((u + st) / tck)
        })
        .sum()
}

/// VmRSS of `pid` and its descendants, KiB.
fn rss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// Packets counted by the appliance namespace's ports: (lan tx, lan rx, wan tx, wan rx).
///
/// A super-frame counts once, so this is what the kernel handles per frame.
fn port_packets(lab: &Lab) -> [u64; 4] {
    let (lan, wan) = lab.appliance_ports();
    let mut out = [0u64; 4];
    for (i, (dev, dir)) in [(lan, "tx"), (lan, "rx"), (wan, "tx"), (wan, "rx")]
        .into_iter()
        .enumerate()
    {
        let path = format!("/sys/class/net/{dev}/statistics/{dir}_packets");
        out[i] = lab
            .exec(lab.appliance_ns(), "cat", &[&path])
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0);
    }
    out
}

/// The interceptor under test, running in its lab.
struct Setup {
    lab: Lab,
    pid: u32,
    connect: String,
    dir: PathBuf,
}

fn sysctls(lab: &Lab, ns: &str) -> anyhow::Result<()> {
    for kv in [
        "net.ipv4.ip_local_port_range=10000 65000",
        "net.ipv4.tcp_tw_reuse=1",
        "net.core.somaxconn=8192",
        "net.ipv4.tcp_max_syn_backlog=8192",
    ] {
        lab.exec(ns, "sysctl", &["-q", "-w", kv])?;
    }
    Ok(())
}

fn start_nginx(lab: &Lab, pki: &LabPki, dir: &Path, k: &Knobs) -> anyhow::Result<()> {
    let root = dir.join("nginx");
    let html = root.join("html");
    for d in ["html", "tmp", "logs"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let bulk = html.join("bulk.bin");
    if !bulk.exists() {
        std::fs::write(
            &bulk,
            tlsinspect::demo::probe::pattern_bytes((k.bulk_mb as usize) << 20),
        )?;
    }
    std::fs::write(html.join("index.html"), "hello from nginx\n")?;
    let r = root.display();
    let conns = k.idle * 2 + 4096;
    let conf = format!(
        "daemon off;\nmaster_process off;\nuser root;\nworker_rlimit_nofile {nofile};\npid {r}/nginx.pid;\n\
         error_log {r}/logs/error.log crit;\nevents {{ worker_connections {conns}; multi_accept on; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {r}/tmp/body;\n  proxy_temp_path {r}/tmp/proxy;\n\
           fastcgi_temp_path {r}/tmp/fastcgi;\n  uwsgi_temp_path {r}/tmp/uwsgi;\n  scgi_temp_path {r}/tmp/scgi;\n\
           types {{ text/html html; application/octet-stream bin; }}\n\
           client_header_timeout 600s;\n  keepalive_timeout 600s;\n  keepalive_requests 1000000;\n\
           ssl_session_cache off;\n  ssl_session_tickets off;\n  ssl_protocols TLSv1.2 TLSv1.3;\n\
           server {{\n    listen {SERVER}:443 ssl backlog=8192;\n    server_name {SNI};\n\
             ssl_certificate {};\n    ssl_certificate_key {};\n    root {};\n  }}\n}}\n",
        pki.origin_cert.display(),
        pki.origin_key.display(),
        html.display(),
        nofile = conns * 2,
    );
    let conf_path = root.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let peer = k.peer_cores();
    let mut cmd = lab.command(
        lab.server_ns(),
        "taskset",
        &[
            "-c",
            &peer,
            "nginx",
            "-p",
            &r.to_string(),
            "-c",
            &conf_path.display().to_string(),
            "-e",
            &format!("{r}/logs/error.log"),
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let pid = lab.spawn("nginx", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = lab
            .exec(
                lab.server_ns(),
                "curl",
                &[
                    "-sS",
                    "-o",
                    "/dev/null",
                    "--cacert",
                    &pki.origin_root.display().to_string(),
                    "--resolve",
                    &format!("{SNI}:443:{SERVER}"),
                    &format!("https://{SNI}/"),
                ],
            )
            .is_ok();
        if ok {
            return Ok(());
        }
        if !lab.is_running(pid) || Instant::now() > deadline {
            let log = std::fs::read_to_string(root.join("logs/error.log")).unwrap_or_default();
            bail!("nginx did not come up: {log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(engine: Engine, pki: &LabPki, dir: &Path, k: &Knobs) -> anyhow::Result<Setup> {
    let dir = dir.join(engine.name());
    std::fs::create_dir_all(&dir)?;
    let lab = Lab::build(LabSpec {
        offloads: lab::Offloads::Off,
        prefix: lab::unique_prefix(&format!("ssl{}", engine.name())),
        mode: match engine {
            Engine::Sslsplit => LabMode::Bridge,
            Engine::Appliance(_) => LabMode::AfPacket,
        },
        clients: vec![CLIENT],
        servers: vec![SERVER],
    })?;
    for n in lab.notes() {
        eprintln!("note: {n}");
    }
    sysctls(&lab, lab.client_ns())?;
    sysctls(&lab, lab.server_ns())?;
    sysctls(&lab, lab.appliance_ns())?;
    start_nginx(&lab, pki, &dir, k)?;
    let core = k.core.to_string();
    let (pid, connect) = match engine {
        Engine::Sslsplit => {
            let a = lab.appliance_ns().to_owned();
            lab.exec(
                &a,
                "ip",
                &["addr", "add", &format!("{SSLSPLIT_ADDR}/24"), "dev", "br0"],
            )?;
            lab.exec(
                &a,
                "ip",
                &[
                    "route",
                    "add",
                    "203.0.113.0/24",
                    "via",
                    &lab::CLIENT_GATEWAY.to_string(),
                ],
            )?;
            // An ECDSA P-256 leaf key, like the appliance's forged leaves
            // (sslsplit's default is a fresh RSA-2048 key).
            let leaf = dir.join("leaf.key");
            if std::env::var("LAB_BENCH_SSLSPLIT_LEAF").as_deref() != Ok("rsa") {
                let kp = rcgen::KeyPair::generate()?;
                std::fs::write(&leaf, kp.serialize_pem())?;
            }
            let (ca_key, ca_cert, leaf_s) = (
                pki.policy_ca_key.display().to_string(),
                pki.policy_ca_cert.display().to_string(),
                leaf.display().to_string(),
            );
            let mut args = vec!["-c", &core, "sslsplit", "-k", &ca_key, "-c", &ca_cert];
            if leaf.exists() {
                args.extend_from_slice(&["-K", &leaf_s]);
            }
            let (l_addr, l_port, s_addr) = (
                SSLSPLIT_ADDR.to_string(),
                SSLSPLIT_PORT.to_string(),
                SERVER.to_string(),
            );
            args.extend_from_slice(&["ssl", &l_addr, &l_port, &s_addr, "443"]);
            let mut cmd = lab.command(&a, "taskset", &args);
            cmd.stdout(std::fs::File::create(dir.join("sslsplit.out"))?)
                .stderr(std::fs::File::create(dir.join("sslsplit.err"))?);
            let pid = lab.spawn("sslsplit", cmd)?;
            (pid, format!("{SSLSPLIT_ADDR}:{SSLSPLIT_PORT}"))
        }
        Engine::Appliance(rules) => {
            let (lan, wan) = lab.appliance_ports();
            let config = tlsinspect::demo::render_config(
                tlsinspect::demo::DEMO_CONFIG_TEMPLATE,
                &tlsinspect::demo::ConfigVars {
                    mode: "af_packet",
                    lan,
                    wan,
                    log: &dir.join("traffic.jsonl"),
                    control: &dir.join("control.sock"),
                    roots: &pki.origin_root,
                    ca_cert: &pki.policy_ca_cert,
                    ca_key: &pki.policy_ca_key,
                    in_scope: CLIENT,
                },
            )
            .replace(
                "max_flows = 10_000",
                &format!("max_flows = {}", k.idle * 2 + 10_000),
            )
            .replace("cpus = [0]", &format!("cpus = [{}]", k.core))
            // The added-latency histograms are read from the metrics.
            .replace("\ncontrol = ", "\nmetrics = \"127.0.0.1:9273\"\ncontrol = ");
            let config = match std::env::var("LAB_BENCH_TCP_BUFFER") {
                Ok(b) => config.replace(
                    "[appliance]\n",
                    &format!("[appliance]\ntcp_buffer_bytes = {b}\n"),
                ),
                Err(_) => config,
            };
            let files: &[&str] = match rules {
                Rules::None => &[],
                Rules::Default => &[concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/configs/rules/default.rules"
                )],
                Rules::EtOpen => &ET_OPEN_RULES,
            };
            let config = if files.is_empty() {
                config
            } else {
                let list: Vec<String> = files.iter().map(|f| format!("{f:?}")).collect();
                format!(
                    "{config}\n[ips]\nrules = [{}]\nmode = \"prevent\"\n",
                    list.join(", ")
                )
            };
            let path = dir.join("bench.toml");
            std::fs::write(&path, config)?;
            let exe = PathBuf::from(env!("CARGO_BIN_EXE_tlsinspect"));
            let (exe_s, path_s) = (exe.display().to_string(), path.display().to_string());
            let mut cmd = lab.command(
                lab.appliance_ns(),
                "taskset",
                &["-c", &core, &exe_s, "run", "--config", &path_s],
            );
            cmd.stdout(std::fs::File::create(dir.join("appliance.out"))?)
                .stderr(std::fs::File::create(dir.join("appliance.err"))?);
            let pid = lab.spawn("appliance", cmd)?;
            (pid, format!("{SERVER}:443"))
        }
    };
    let s = Setup {
        lab,
        pid,
        connect,
        dir,
    };
    // Ready when one verified HTTPS request gets through.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if !s.lab.is_running(s.pid) {
            bail!(
                "{} exited during start-up: {}",
                engine.name(),
                s.stderr().trim()
            );
        }
        match loadgen(
            &s,
            pki,
            k,
            "rate",
            &["--seconds", "0.2", "--concurrency", "1"],
        ) {
            Ok(r) if r.ok > 0 => break,
            Ok(r) if Instant::now() > deadline => bail!(
                "{}: no HTTPS request got through within 20 s: {}; stderr: {}",
                engine.name(),
                r.first_error.unwrap_or_default(),
                s.stderr().trim()
            ),
            Err(e) if Instant::now() > deadline => return Err(e),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    Ok(s)
}

impl Drop for Setup {
    /// Kills the interceptor's descendants by PID (sslsplit's
    /// privilege-separation child outlives a killed parent); the lab then
    /// kills the interceptor itself and removes the namespaces.
    fn drop(&mut self) {
        // Graceful first: sslsplit's parent stops and reaps its child on TERM.
        let kids = tree(self.pid);
        let _ = self.lab.stop(self.pid, "TERM", Duration::from_secs(5));
        for p in kids.into_iter().filter(|&p| p != self.pid) {
            let alive = std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
            });
            if !alive {
                continue;
            }
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Setup {
    fn stderr(&self) -> String {
        ["sslsplit.err", "appliance.err"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok())
            .collect()
    }
}

fn loadgen_cmd(
    s: &Setup,
    pki: &LabPki,
    k: &Knobs,
    mode: &str,
    extra: &[&str],
) -> std::process::Command {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (root, ca) = (
        pki.origin_root.display().to_string(),
        pki.policy_ca_cert.display().to_string(),
    );
    let peer = k.peer_cores();
    let mut args = vec![
        "-c",
        &peer,
        &exe,
        "__loadgen",
        mode,
        "--connect",
        &s.connect,
        "--sni",
        SNI,
        "--ca",
        &root,
        "--ca",
        &ca,
    ];
    if k.tls12 {
        args.push("--tls12");
    }
    args.extend_from_slice(extra);
    s.lab.command(s.lab.client_ns(), "taskset", &args)
}

fn loadgen(
    s: &Setup,
    pki: &LabPki,
    k: &Knobs,
    mode: &str,
    extra: &[&str],
) -> anyhow::Result<LoadResult> {
    let out = lab::run_cmd(&mut loadgen_cmd(s, pki, k, mode, extra))?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .with_context(|| format!("parsing the load generator's output {text:?}"))
}

/// Kills the `hold` client by PID if the harness fails while it runs.
struct HoldGuard(Child);

impl Drop for HoldGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(engine: Engine, pki: &LabPki, dir: &Path, k: &Knobs) -> anyhow::Result<Column> {
    let s = start(engine, pki, dir, k)?;
    let tck = clk_tck();
    let mut col = Column {
        rule_load: RuleLoad::from_log(&s.stderr()),
        ..Column::default()
    };
    let secs = k.seconds.to_string();

    // (a) new connections per second.
    let c0 = cpu_s(s.pid, tck);
    let r = loadgen(
        &s,
        pki,
        k,
        "rate",
        &[
            "--seconds",
            &secs,
            "--concurrency",
            &k.concurrency.to_string(),
            "--path",
            "/",
        ],
    )?;
    let cpu = cpu_s(s.pid, tck) - c0;
    col.absorb("rate", &r);
    if r.ok > 0 {
        col.conns_per_s = Some(r.ok as f64 / r.elapsed_s);
        col.cpu_us_per_conn = Some(cpu * 1e6 / r.ok as f64);
        col.rate_util = Some(cpu / r.elapsed_s);
    }
    eprintln!(
        "{}: rate: {} conns in {:.1} s, {} errors, interceptor CPU {cpu:.2} s",
        engine.name(),
        r.ok,
        r.elapsed_s,
        r.errors
    );

    // (b) bulk.
    // Optional profile of the appliance during the bulk downloads.
    let perf = match (engine, std::env::var_os("LAB_BENCH_PERF")) {
        (Engine::Appliance(_), Some(out)) => Some(
            std::process::Command::new("perf")
                .args(["record", "-F", "999", "-g", "-p", &s.pid.to_string(), "-o"])
                .arg(&out)
                .args(["--", "sleep", &secs])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf record")?,
        ),
        _ => None,
    };
    let p0 = port_packets(&s.lab);
    let c0 = cpu_s(s.pid, tck);
    let r = loadgen(
        &s,
        pki,
        k,
        "bulk",
        &[
            "--seconds",
            &secs,
            "--conns",
            &k.bulk_conns.to_string(),
            "--path",
            "/bulk.bin",
        ],
    )?;
    let cpu = cpu_s(s.pid, tck) - c0;
    let p1 = port_packets(&s.lab);
    if let Some(mut p) = perf {
        let _ = p.wait();
    }
    col.absorb("bulk", &r);
    col.bulk_mismatch = r.mismatched_downloads;
    if r.bytes > 0 {
        let mb = r.bytes as f64 / 1e6;
        col.bulk_mb_per_s = Some(mb / r.elapsed_s);
        col.cpu_ms_per_mb = Some(cpu * 1e3 / mb);
        col.bulk_util = Some(cpu / r.elapsed_s);
        let per_mb: Vec<f64> = (0..4)
            .map(|i| p1[i].saturating_sub(p0[i]) as f64 / mb)
            .collect();
        col.bulk_frames_per_mb = Some([per_mb[0], per_mb[1], per_mb[2], per_mb[3]]);
    }
    eprintln!(
        "{}: bulk: {} downloads, {:.0} MB in {:.1} s, interceptor CPU {cpu:.2} s",
        engine.name(),
        r.ok,
        r.bytes as f64 / 1e6,
        r.elapsed_s
    );

    // (c) a standard generator: h2load (Debian's nghttp2-client), HTTP/1.1
    // keep-alive requests over `concurrency` connections (sslsplit does
    // not speak h2 to its clients; both get the same protocol).
    if lab::have_program("h2load") {
        // The name in the URL (SNI www.example.com), the address of the interceptor.
        let url = format!("https://{SNI}/");
        let connect_to = match engine {
            Engine::Sslsplit => format!("--connect-to={SSLSPLIT_ADDR}:{SSLSPLIT_PORT}"),
            Engine::Appliance(_) => format!("--connect-to={SERVER}:443"),
        };
        let c0 = cpu_s(s.pid, tck);
        let out = s.lab.exec(
            s.lab.client_ns(),
            "taskset",
            &[
                "-c",
                &k.peer_cores(),
                "h2load",
                "--h1",
                "-c",
                &k.concurrency.to_string(),
                "-D",
                &secs,
                &connect_to,
                &url,
            ],
        )?;
        let cpu = cpu_s(s.pid, tck) - c0;
        let text = String::from_utf8_lossy(&out.stdout);
        let req_s = text
            .lines()
            .find_map(|l| l.strip_prefix("finished in "))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|v| v.trim_end_matches(" req/s").parse::<f64>().ok());
        let done = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("requests: "))
            .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" succeeded")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        col.h2load_req_per_s = req_s;
        if done > 0.0 {
            col.h2load_cpu_us_per_req = Some(cpu * 1e6 / done);
        }
        eprintln!(
            "{}: h2load: {done} requests, {req_s:?} req/s, interceptor CPU {cpu:.2} s",
            engine.name()
        );
    }
    if let Engine::Appliance(rules) = engine {
        if let Ok(m) = s.lab.exec(
            s.lab.appliance_ns(),
            "curl",
            &["-sS", "http://127.0.0.1:9273/metrics"],
        ) {
            let m = String::from_utf8_lossy(&m.stdout);
            let name = "tlsinspect_added_latency_seconds";
            if let (Some(a), Some(b)) = (
                super::quantile(&m, name, 0.5),
                super::quantile(&m, name, 0.99),
            ) {
                col.latency_us = Some((a * 1e6, b * 1e6));
            }
            if rules != Rules::None {
                col.alerts = Some(
                    m.lines()
                        .filter(|l| l.starts_with("tlsinspect_ips_alerts"))
                        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                        .sum(),
                );
            }
        }
    }

    // (c) memory with idle connections.
    if k.idle > 0 {
        std::thread::sleep(Duration::from_secs(1));
        let base = rss_kib(s.pid);
        let mut cmd = loadgen_cmd(
            &s,
            pki,
            k,
            "hold",
            &[
                "--count",
                &k.idle.to_string(),
                "--concurrency",
                &k.concurrency.to_string(),
            ],
        );
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut guard = HoldGuard(cmd.spawn().context("starting the hold client")?);
        let stdout = guard.0.stdout.take().context("hold client stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let r: LoadResult = serde_json::from_str(line.trim())
            .with_context(|| format!("parsing the hold client's output {line:?}"))?;
        // Let the interceptor settle (buffers of the last handshakes).
        std::thread::sleep(Duration::from_secs(1));
        let held = rss_kib(s.pid);
        col.absorb("idle", &r);
        col.idle_held = Some(r.ok);
        col.idle_secs = Some(r.elapsed_s);
        col.rss_base_kib = Some(base);
        col.rss_idle_kib = Some(held);
        eprintln!(
            "{}: idle: {} connections held ({} failed) after {:.1} s, RSS {base} -> {held} KiB",
            engine.name(),
            r.ok,
            r.errors,
            r.elapsed_s
        );
        drop(guard.0.stdin.take());
        drop(guard);
    }
    if !s.lab.is_running(s.pid) {
        col.errors.push(format!(
            "{} died during the run: {}",
            engine.name(),
            s.stderr().trim()
        ));
    }
    Ok(col)
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn kib_per_conn(c: &Column) -> Option<f64> {
    let (b, h, n) = (c.rss_base_kib?, c.rss_idle_kib?, c.idle_held?);
    (n > 0).then(|| (h.saturating_sub(b)) as f64 / n as f64)
}

/// The hard open-file limit of this process (from /proc/self/limits).
fn nofile_hard() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("Max open files"))?;
            l.split_whitespace().nth(4)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// Runs the interception benchmark and prints the table.
pub fn run() -> anyhow::Result<()> {
    if !lab::is_root() {
        bail!("the interception benchmark needs root (network namespaces)");
    }
    for p in ["sslsplit", "nginx", "taskset", "curl", "prlimit"] {
        if !lab::have_program(p) {
            bail!("the interception benchmark needs {p} on PATH");
        }
    }
    let k = Knobs::from_env();
    // 2 fds per held connection in sslsplit, 1 in the client and nginx;
    // the children inherit the limit. Raising the hard limit needs
    // CAP_SYS_RESOURCE; without it sslsplit's idle count is capped below.
    let want = (k.idle * 2 + 4096).min(1_048_576);
    let raised = lab::run_cmd(std::process::Command::new("prlimit").args([
        "--pid",
        &std::process::id().to_string(),
        &format!("--nofile={want}:{want}"),
    ]))
    .is_ok();
    let nofile = nofile_hard();
    if !raised {
        // At least use all of the hard limit.
        let _ = lab::run_cmd(std::process::Command::new("prlimit").args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={nofile}:{nofile}"),
        ]));
        println!(
            "note: could not raise the open-file limit to {want} (no CAP_SYS_RESOURCE); using the hard limit {nofile}"
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("tlsinspect-sslbench-")
        .tempdir()?;
    let pki = pki::create(&dir.path().join("pki"), &[SNI, &SERVER.to_string()])?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    if k.rules == Rules::EtOpen {
        return run_rules(&k, &pki, dir.path(), &load_before);
    }

    let mut cols = Vec::new();
    for engine in [Engine::Sslsplit, Engine::Appliance(k.rules)] {
        if k.only.as_deref().is_some_and(|o| o != engine.name()) {
            cols.push(Column::default());
            continue;
        }
        let mut ek = Knobs::from_env();
        if engine == Engine::Sslsplit && ek.idle * 2 + 256 > nofile {
            ek.idle = nofile.saturating_sub(256) / 2;
            println!(
                "note: sslsplit needs 2 descriptors per connection: its idle run holds {} connections (open-file limit {nofile})",
                ek.idle
            );
        }
        cols.push(match measure(engine, &pki, dir.path(), &ek) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e:#}", engine.name());
                Column {
                    errors: vec![format!("{e:#}")],
                    ..Column::default()
                }
            }
        });
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (s, a) = (&cols[0], &cols[1]);

    println!(
        "\nTLS interception, interceptor pinned to core {} (taskset), client and nginx origin on cores {}",
        k.core,
        k.peer_cores()
    );
    println!(
        "rate: {} s, {} concurrent clients, full handshakes (no resumption), GET / (17 B); bulk: {} conn(s) of keep-alive GET /bulk.bin ({} MiB) for {} s; idle: up to {} connections\n",
        k.seconds, k.concurrency, k.bulk_conns, k.bulk_mb, k.seconds, k.idle
    );
    let row = |name: &str, sv: String, av: String, r: String, t: &str| {
        println!("{name:<30} {sv:>14} {av:>14} {r:>12}   {t}");
    };
    let num = |name: &str, sv: Option<f64>, av: Option<f64>, digits: usize, t: &str| {
        row(name, fmt(sv, digits), fmt(av, digits), ratio(av, sv), t);
    };
    row(
        "",
        "sslsplit".into(),
        "appliance".into(),
        "app/sslsplit".into(),
        "target",
    );
    num("new conns/s", s.conns_per_s, a.conns_per_s, 0, "");
    num(
        "CPU per conn (µs)",
        s.cpu_us_per_conn,
        a.cpu_us_per_conn,
        0,
        "ratio <= 0.50",
    );
    row(
        "  = conns/s per full core",
        fmt(s.cpu_us_per_conn.map(|c| 1e6 / c), 0),
        fmt(a.cpu_us_per_conn.map(|c| 1e6 / c), 0),
        ratio(
            a.cpu_us_per_conn.map(|c| 1e6 / c),
            s.cpu_us_per_conn.map(|c| 1e6 / c),
        ),
        "",
    );
    row(
        "  interceptor core busy",
        fmt(s.rate_util.map(|u| u * 100.0), 0) + "%",
        fmt(a.rate_util.map(|u| u * 100.0), 0) + "%",
        String::new(),
        "",
    );
    num(
        "bulk MB/s",
        s.bulk_mb_per_s,
        a.bulk_mb_per_s,
        0,
        "appliance >= 500",
    );
    num(
        "CPU per MB (ms)",
        s.cpu_ms_per_mb,
        a.cpu_ms_per_mb,
        3,
        "ratio <= 0.33",
    );
    row(
        "  = MB/s per full core",
        fmt(s.cpu_ms_per_mb.map(|c| 1e3 / c), 0),
        fmt(a.cpu_ms_per_mb.map(|c| 1e3 / c), 0),
        ratio(
            a.cpu_ms_per_mb.map(|c| 1e3 / c),
            s.cpu_ms_per_mb.map(|c| 1e3 / c),
        ),
        "appliance >= 1000",
    );
    row(
        "  interceptor core busy",
        fmt(s.bulk_util.map(|u| u * 100.0), 0) + "%",
        fmt(a.bulk_util.map(|u| u * 100.0), 0) + "%",
        String::new(),
        "",
    );
    num(
        "h2load req/s (HTTP/1.1)",
        s.h2load_req_per_s,
        a.h2load_req_per_s,
        0,
        "",
    );
    num(
        "  CPU per request (µs)",
        s.h2load_cpu_us_per_req,
        a.h2load_cpu_us_per_req,
        1,
        "",
    );
    row(
        "added latency p50/p99 (µs)",
        "-".into(),
        a.latency_us
            .map_or("-".into(), |(p50, p99)| format!("{p50:.0}/{p99:.0}")),
        String::new(),
        "histogram bucket bounds",
    );
    let frames = |c: &Column, i: usize| c.bulk_frames_per_mb.map(|f| f[i]);
    for (i, name) in [
        "  frames/MB to client",
        "  frames/MB from client",
        "  frames/MB to server",
        "  frames/MB from server",
    ]
    .into_iter()
    .enumerate()
    {
        row(
            name,
            fmt(frames(s, i), 0),
            fmt(frames(a, i), 0),
            ratio(frames(a, i), frames(s, i)),
            "",
        );
    }
    row(
        "idle conns held",
        s.idle_held.map_or("-".into(), |v| v.to_string()),
        a.idle_held.map_or("-".into(), |v| v.to_string()),
        String::new(),
        "",
    );
    row(
        "RSS before -> held (KiB)",
        s.rss_base_kib
            .zip(s.rss_idle_kib)
            .map_or("-".into(), |(b, h)| format!("{b}->{h}")),
        a.rss_base_kib
            .zip(a.rss_idle_kib)
            .map_or("-".into(), |(b, h)| format!("{b}->{h}")),
        String::new(),
        "",
    );
    row(
        "RSS per idle conn (KiB)",
        fmt(kib_per_conn(s), 1),
        fmt(kib_per_conn(a), 1),
        ratio(kib_per_conn(a), kib_per_conn(s)),
        "appliance <= 96",
    );
    println!();
    for (name, c) in [("sslsplit", s), ("appliance", a)] {
        println!("{name}: {}", c.verdict());
        for (i, n) in &c.issuers {
            println!("  issuer seen: {i}  ({n} sampled connections)");
        }
        for (v, n) in &c.suites {
            println!("  negotiated:  {v}  ({n})");
        }
        if c.bulk_mismatch > 0 {
            println!("  BULK CONTENT MISMATCH in {} download(s)", c.bulk_mismatch);
        }
        for e in &c.errors {
            println!("  error: {e}");
        }
    }
    if !a.intercepting() && a.conns_per_s.is_some() {
        println!(
            "\nNOTE: the appliance column measured a relay, not interception: its numbers are not comparable yet."
        );
    }
    println!("\nload average before: {}", load_before.trim());
    println!("load average after:  {}", load_after.trim());
    Ok(())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One column from its rounds: the medians of the rate, bulk and h2load
/// figures, everything else from the last round, certificates and errors
/// of all rounds.
fn combine(mut runs: Vec<Column>) -> Column {
    let pick = |f: fn(&Column) -> Option<f64>, runs: &[Column]| {
        median(runs.iter().filter_map(f).collect())
    };
    let conns_per_s = pick(|c| c.conns_per_s, &runs);
    let cpu_us_per_conn = pick(|c| c.cpu_us_per_conn, &runs);
    let rate_util = pick(|c| c.rate_util, &runs);
    let bulk_mb_per_s = pick(|c| c.bulk_mb_per_s, &runs);
    let cpu_ms_per_mb = pick(|c| c.cpu_ms_per_mb, &runs);
    let bulk_util = pick(|c| c.bulk_util, &runs);
    let h2load_req_per_s = pick(|c| c.h2load_req_per_s, &runs);
    let h2load_cpu_us_per_req = pick(|c| c.h2load_cpu_us_per_req, &runs);
    let load_ms = pick(|c| c.rule_load.as_ref().map(|l| l.ms), &runs);
    let Some(mut out) = runs.pop() else {
        return Column::default();
    };
    for r in runs {
        for (k, v) in r.issuers {
            *out.issuers.entry(k).or_default() += v;
        }
        for (k, v) in r.suites {
            *out.suites.entry(k).or_default() += v;
        }
        out.errors.extend(r.errors);
        out.bulk_mismatch += r.bulk_mismatch;
        out.alerts = match (out.alerts, r.alerts) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
    if let (Some(l), Some(ms)) = (out.rule_load.as_mut(), load_ms) {
        l.ms = ms;
    }
    Column {
        conns_per_s,
        cpu_us_per_conn,
        rate_util,
        bulk_mb_per_s,
        cpu_ms_per_mb,
        bulk_util,
        h2load_req_per_s,
        h2load_cpu_us_per_req,
        ..out
    }
}

/// A table row: name, the figure of a column, decimals, target.
type Row = (
    &'static str,
    fn(&Column) -> Option<f64>,
    usize,
    &'static str,
);

fn print_row(name: &str, a: String, b: String, r: String, t: &str) {
    println!("{name:<30} {a:>14} {b:>14} {r:>12}   {t}");
}

/// The rules comparison (`LAB_BENCH_RULES=et`): the appliance without IPS
/// rules and with the full ET Open HTTP + TLS set, each in a fresh lab,
/// alternating for LAB_BENCH_ROUNDS rounds; medians and their ratios.
fn run_rules(k: &Knobs, pki: &LabPki, dir: &Path, load_before: &str) -> anyhow::Result<()> {
    let engines = [
        Engine::Appliance(Rules::None),
        Engine::Appliance(Rules::EtOpen),
    ];
    let mut runs: [Vec<Column>; 2] = Default::default();
    for round in 0..k.rounds {
        for (i, engine) in engines.into_iter().enumerate() {
            let d = dir.join(format!("round{round}"));
            runs[i].push(match measure(engine, pki, &d, k) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{} (round {round}): {e:#}", engine.name());
                    Column {
                        errors: vec![format!("round {round}: {e:#}")],
                        ..Column::default()
                    }
                }
            });
        }
    }
    let per_round: Vec<(Option<f64>, Option<f64>)> = runs[0]
        .iter()
        .zip(&runs[1])
        .map(|(n, e)| {
            (
                e.cpu_us_per_conn.zip(n.cpu_us_per_conn).map(|(e, n)| e / n),
                e.cpu_ms_per_mb.zip(n.cpu_ms_per_mb).map(|(e, n)| e / n),
            )
        })
        .collect();
    let [none, et] = runs;
    let (n, e) = (combine(none), combine(et));
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    println!(
        "\nIPS rules: the appliance without rules and with the ET Open HTTP + TLS set, pinned to core {} (taskset), client and nginx origin on cores {}",
        k.core,
        k.peer_cores()
    );
    println!(
        "{} round(s), medians; rate: {} s, {} concurrent clients, full handshakes, GET / (17 B); bulk: {} conn(s) of keep-alive GET /bulk.bin ({} MiB) for {} s; idle: up to {} connections\n",
        k.rounds, k.seconds, k.concurrency, k.bulk_conns, k.bulk_mb, k.seconds, k.idle
    );
    print_row(
        "",
        "no rules".into(),
        "ET Open".into(),
        "ET/none".into(),
        "target",
    );
    let rows: [Row; 10] = [
        ("new conns/s", |c| c.conns_per_s, 0, ""),
        (
            "CPU per conn (µs)",
            |c| c.cpu_us_per_conn,
            0,
            "ratio <= 1.20",
        ),
        (
            "  = conns/s per full core",
            |c| c.cpu_us_per_conn.map(|v| 1e6 / v),
            0,
            "",
        ),
        (
            "  interceptor core busy (%)",
            |c| c.rate_util.map(|u| u * 100.0),
            0,
            "",
        ),
        ("bulk MB/s", |c| c.bulk_mb_per_s, 0, ""),
        ("CPU per MB (ms)", |c| c.cpu_ms_per_mb, 3, "ratio <= 1.50"),
        (
            "  = MB/s per full core",
            |c| c.cpu_ms_per_mb.map(|v| 1e3 / v),
            0,
            "",
        ),
        (
            "  interceptor core busy (%)",
            |c| c.bulk_util.map(|u| u * 100.0),
            0,
            "",
        ),
        ("h2load req/s (HTTP/1.1)", |c| c.h2load_req_per_s, 0, ""),
        ("  CPU per request (µs)", |c| c.h2load_cpu_us_per_req, 1, ""),
    ];
    for (name, f, prec, target) in rows {
        print_row(
            name,
            fmt(f(&n), prec),
            fmt(f(&e), prec),
            ratio(f(&e), f(&n)),
            target,
        );
    }
    let lat = |c: &Column| {
        c.latency_us
            .map_or("-".into(), |(p50, p99)| format!("{p50:.0}/{p99:.0}"))
    };
    print_row(
        "added latency p50/p99 (µs)",
        lat(&n),
        lat(&e),
        String::new(),
        "histogram bucket bounds",
    );
    let frames = |c: &Column, i: usize| c.bulk_frames_per_mb.map(|f| f[i]);
    for (i, name) in [
        "  frames/MB to client",
        "  frames/MB from client",
        "  frames/MB to server",
        "  frames/MB from server",
    ]
    .into_iter()
    .enumerate()
    {
        print_row(
            name,
            fmt(frames(&n, i), 0),
            fmt(frames(&e, i), 0),
            ratio(frames(&e, i), frames(&n, i)),
            "",
        );
    }
    print_row(
        "RSS per idle conn (KiB)",
        fmt(kib_per_conn(&n), 1),
        fmt(kib_per_conn(&e), 1),
        ratio(kib_per_conn(&e), kib_per_conn(&n)),
        "",
    );
    let load = e.rule_load.clone();
    print_row(
        "rules loaded / skipped",
        "-".into(),
        load.as_ref()
            .map_or("-".into(), |l| format!("{}/{}", l.loaded, l.skipped)),
        String::new(),
        "",
    );
    print_row(
        "rule load time (ms)",
        "-".into(),
        fmt(load.as_ref().map(|l| l.ms), 1),
        String::new(),
        "< 2000 (appliance's own log line)",
    );
    print_row(
        "prefilter",
        "-".into(),
        load.as_ref().map_or("-".into(), |l| l.prefilter.clone()),
        String::new(),
        "",
    );
    print_row(
        "IPS alerts raised",
        "-".into(),
        e.alerts.map_or("-".into(), |a| a.to_string()),
        String::new(),
        "",
    );
    if per_round.len() > 1 {
        for (i, (c, b)) in per_round.iter().enumerate() {
            println!(
                "round {i}: ET/none CPU per conn {}, CPU per MB {}",
                c.map_or("-".into(), |v| format!("{v:.2}")),
                b.map_or("-".into(), |v| format!("{v:.2}"))
            );
        }
    }
    println!();
    for (name, c) in [("no rules", &n), ("ET Open", &e)] {
        println!("{name}: {}", c.verdict());
        for (i, n) in &c.issuers {
            println!("  issuer seen: {i}  ({n} sampled connections)");
        }
        for (v, n) in &c.suites {
            println!("  negotiated:  {v}  ({n})");
        }
        if c.bulk_mismatch > 0 {
            println!("  BULK CONTENT MISMATCH in {} download(s)", c.bulk_mismatch);
        }
        for e in &c.errors {
            println!("  error: {e}");
        }
    }
    if e.rule_load.is_none() {
        println!("\nNOTE: no rule-load line in the ET column's appliance log: its rules may not have loaded.");
    }
    println!("\nload average before: {}", load_before.trim());
    println!("load average after:  {}", load_after.trim());
    Ok(())
}
