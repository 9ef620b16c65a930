//! The appliance's log outputs in the lab: a file, redis-server and rsyslogd
//! (TCP) inside the appliance namespace. Killing Redis and rsyslog mid-run
//! loses no flow from the data plane: every later connection still works,
//! every flow is in the file output, and the shutdown report counts what
//! the dead outputs dropped.

mod lab;

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lab::{LabMode, TestLab};

const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const REDIS_PORT: &str = "6390";
const SYSLOG_PORT: &str = "6514";

#[test]
fn dead_outputs_never_cost_a_flow() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build("lo", LabMode::AfPacket, &[IN_SCOPE], &[SERVER])?;
    let _nginx = t.start_nginx()?;
    let (config, log) = t.write_config(IN_SCOPE)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!(
        r#"
[[output]]
type = "file"
path = "{log}"

[[output]]
type = "redis"
address = "127.0.0.1:{REDIS_PORT}"
key = "eve"

[[output]]
type = "syslog"
address = "tcp://127.0.0.1:{SYSLOG_PORT}"
"#,
        log = log.display()
    ));
    std::fs::write(&config, text)?;

    let ns = t.lab.appliance_ns().to_string();
    let mut cmd = t.lab.command(
        &ns,
        "redis-server",
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            REDIS_PORT,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let redis = t.lab.spawn("redis-server", cmd)?;
    let syslog_out = t.path("syslog.log");
    let rs_conf = t.path("rsyslog.conf");
    std::fs::write(
        &rs_conf,
        format!(
            "global(workDirectory=\"{dir}\")\nmodule(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{SYSLOG_PORT}\")\n\
             template(name=\"m\" type=\"string\" string=\"%app-name% %msg%\\n\")\n\
             action(type=\"omfile\" file=\"{out}\" template=\"m\")\n",
            dir = t.path("").display(),
            out = syslog_out.display()
        ),
    )?;
    let rs_pid = t.path("rsyslogd.pid");
    let mut cmd = t.lab.command(
        &ns,
        "rsyslogd",
        &[
            "-n",
            "-f",
            &rs_conf.display().to_string(),
            "-i",
            &rs_pid.display().to_string(),
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let rsyslog = t.lab.spawn("rsyslogd", cmd)?;
    let llen = || -> u64 {
        t.lab
            .exec(&ns, "redis-cli", &["-p", REDIS_PORT, "LLEN", "eve"])
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while t
        .lab
        .exec(&ns, "redis-cli", &["-p", REDIS_PORT, "PING"])
        .map_or(true, |o| {
            !String::from_utf8_lossy(&o.stdout).contains("PONG")
        })
    {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let app = t.start_appliance(&config, IN_SCOPE, SERVER)?;
    let mut ports = Vec::new();
    let mut fetch = |i: usize| -> anyhow::Result<()> {
        let c = t.curl(
            IN_SCOPE,
            SERVER,
            "/index.html",
            &t.pki.policy_ca_cert,
            &t.path(&format!("index-{i}.html")),
            i % 2 == 0,
        )?;
        assert_eq!(c.http_code, 200, "request {i}: {c:?}");
        ports.push(c.local_port);
        Ok(())
    };
    for i in 0..5 {
        fetch(i)?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while llen() < 5 || std::fs::read_to_string(&syslog_out).map_or(0, |s| s.lines().count()) < 5 {
        assert!(
            Instant::now() < deadline,
            "records did not reach redis ({}) and rsyslog",
            llen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let syslog_text = std::fs::read_to_string(&syslog_out)?;
    assert!(
        syslog_text.lines().all(|l| l.starts_with("tlsinspect {")),
        "{syslog_text}"
    );

    // Both servers die; the data plane does not notice.
    t.lab.stop(redis, "KILL", Duration::from_secs(5))?;
    t.lab.stop(rsyslog, "KILL", Duration::from_secs(5))?;
    let started = Instant::now();
    for i in 5..10 {
        fetch(i)?;
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "requests slowed down: {:?}",
        started.elapsed()
    );
    let report = t.stop_appliance(&app)?;

    let records = lab::read_log(&log)?;
    for port in &ports {
        assert!(
            records.iter().any(|r| r["event_type"] == "flow"
                && r["src_port"] == *port
                && r["tlsinspect"]["action"] == "inspected"),
            "no flow record for port {port} in the file output"
        );
    }
    let redis_line = report
        .lines()
        .find(|l| l.starts_with("traffic-log output redis"))
        .unwrap_or_else(|| panic!("no redis line in the report: {report}"));
    let dropped: u64 = redis_line
        .split(", ")
        .find_map(|p| p.strip_suffix(" dropped"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        dropped > 0,
        "the dead output's drops are reported: {report}"
    );
    let file_line = report
        .lines()
        .find(|l| l.starts_with("traffic-log output file"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(file_line.contains(" 0 dropped"), "{report}");
    Ok(())
}
