//! The memory budget (issue 11, DESIGN.md §12): beyond
//! `max_intercept_memory` or `max_half_open`, new in-scope connections
//! follow the policy's `on_overload` instead of costing memory.
//!
//! What a user would check:
//! - with a budget smaller than one connection, an in-scope client is
//!   passed uninspected (it sees the origin's own chain) and the flow is
//!   logged as pass/overload with its policy and scope ids; after a reload
//!   to `on_overload = "block"` the same client is refused with a reset and
//!   logged as blocked/overload;
//! - under a storm of 100,000 in-scope SYNs (to an open server, a closed
//!   port and a silent address; and 400,000 hostile frames) against a small budget, a normal client's 50 MB download runs
//!   byte-identical during the storm, overloaded SYNs are counted, and the
//!   appliance's RSS stays within the budget plus a fixed overhead;
//! - 10,000 clients that connect and never send a hello: the first fill the
//!   budget, the rest are passed, RSS stays within the budget plus the same
//!   overhead, and a normal client's download works while they hold on.

mod lab;

use std::net::Ipv4Addr;
use std::time::Duration;

use lab::{LabMode, TestLab};

const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUT_OF_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// In the scope's destination range, but no host answers.
const SILENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);

fn with_appliance_keys(text: &str, keys: &str) -> String {
    text.replace("[appliance]\n", &format!("[appliance]\n{keys}\n"))
}

fn pass_then_block(mode: LabMode, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build(tag, mode, &[IN_SCOPE, OUT_OF_SCOPE], &[SERVER])?;
    let _nginx = t.start_nginx()?;
    let (config, log) = t.write_config(IN_SCOPE)?;
    let text = with_appliance_keys(
        &std::fs::read_to_string(&config)?,
        "max_intercept_memory = 1",
    );
    std::fs::write(&config, &text)?;
    let app = t.start_appliance(&config, OUT_OF_SCOPE, SERVER)?;

    // on_overload = "pass" (the default): uninspected, the origin's chain.
    let c = t.curl(
        IN_SCOPE,
        SERVER,
        "/index.html",
        &t.pki.origin_root,
        &t.path("p.html"),
        false,
    )?;
    assert_eq!(c.http_code, 200, "{mode:?}: {c:?}\n{}", app.stderr());
    assert!(
        c.issuer.contains(lab::pki::ORIGIN_ROOT_CN),
        "{mode:?}: {c:?}"
    );
    let passed = c.local_port;

    // on_overload = "block", by reload: refused at once.
    let text = text.replace(
        "id = \"pol-demo\"",
        "id = \"pol-demo\"\non_overload = \"block\"",
    );
    std::fs::write(&config, &text)?;
    let o = std::process::Command::new(lab::exe())
        .args(["reload", "--config", &config.display().to_string()])
        .output()?;
    assert!(o.status.success(), "{o:?}");
    let refused = t.curl(
        IN_SCOPE,
        SERVER,
        "/index.html",
        &t.pki.origin_root,
        &t.path("b.html"),
        false,
    );
    assert!(
        refused.as_ref().map_or(true, |c| c.http_code == 0),
        "{mode:?}: a blocked client got {refused:?}"
    );

    let report = t.stop_appliance(&app)?;
    assert!(lab::total(&report, "intercept_overload") >= 2, "{report}");
    assert_eq!(lab::total(&report, "intercepted_started"), 0, "{report}");
    let records = lab::read_log(&log)?;
    let overload: Vec<_> = records
        .iter()
        .filter(|r| r["event_type"] == "flow" && r["tlsinspect"]["reason"] == "overload")
        .collect();
    let pass = lab::flow_record(&records, passed)
        .filter(|r| r["tlsinspect"]["reason"] == "overload")
        .unwrap_or_else(|| panic!("{mode:?}: no overload record for the passed flow: {records:?}"));
    assert_eq!(pass["tlsinspect"]["action"], "pass", "{pass}");
    assert_eq!(pass["tlsinspect"]["policy_id"], "pol-demo", "{pass}");
    assert_eq!(pass["tlsinspect"]["scope_id"], "sc-https", "{pass}");
    assert!(
        overload
            .iter()
            .any(|r| r["tlsinspect"]["action"] == "blocked"),
        "{mode:?}: no blocked/overload record: {overload:?}"
    );
    Ok(())
}

#[test]
fn overload_pass_then_block_af_packet() -> anyhow::Result<()> {
    pass_then_block(LabMode::AfPacket, "ovl-af")
}

#[test]
fn overload_pass_then_block_tun() -> anyhow::Result<()> {
    pass_then_block(LabMode::Tun, "ovl-tun")
}

/// A lab whose appliance runs with a memory budget of `budget_mib` MiB
/// (and `edit` applied to its config), warmed up by one inspected request.
struct BudgetLab {
    t: TestLab,
    nginx: lab::Nginx,
    log: std::path::PathBuf,
    app: lab::Appliance,
    /// RSS after the warm-up.
    rss_start: u64,
}

fn budget_lab(
    tag: &str,
    budget_mib: u64,
    edit: impl FnOnce(String) -> String,
) -> anyhow::Result<BudgetLab> {
    let t = TestLab::build(tag, LabMode::AfPacket, &[IN_SCOPE, OUT_OF_SCOPE], &[SERVER])?;
    let nginx = t.start_nginx()?;
    let (config, log) = t.write_config(IN_SCOPE)?;
    let text = with_appliance_keys(
        &std::fs::read_to_string(&config)?,
        &format!("max_intercept_memory = \"{budget_mib}MiB\""),
    );
    std::fs::write(&config, edit(text))?;
    let app = t.start_appliance(&config, OUT_OF_SCOPE, SERVER)?;
    let c = t.curl(
        IN_SCOPE,
        SERVER,
        "/index.html",
        &t.pki.policy_ca_cert,
        &t.path("w.html"),
        false,
    )?;
    assert_eq!(c.http_code, 200, "{c:?}");
    let rss_start = lab::rss_kib(app.pid)?;
    Ok(BudgetLab {
        t,
        nginx,
        log,
        app,
        rss_start,
    })
}

/// Opens `argv[3]` connections from `argv[1]` to `argv[2]`:443, sends
/// nothing, prints one JSON line, then holds them until stdin closes.
const IDLE_CLIENTS: &str = r#"
import json, resource, socket, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
held, failed = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.bind((src, 0))
        s.connect((dst, 443))
        held.append(s)
    except OSError:
        failed += 1
        s.close()
print(json.dumps({"connected": len(held), "failed": failed}), flush=True)
sys.stdin.read()
"#;

#[test]
fn idle_clients_beyond_the_budget_are_passed_not_held() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    const BUDGET_MIB: u64 = 8;
    const CLIENTS: u64 = 10_000;
    let BudgetLab {
        t,
        nginx,
        log,
        app,
        rss_start,
    } = budget_lab("ovl-idle", BUDGET_MIB, |text| text)?;

    let script = t.path("idle.py");
    std::fs::write(&script, IDLE_CLIENTS)?;
    let out = t.path("idle.out");
    let mut cmd = t.lab.command(
        t.lab.client_ns(),
        "python3",
        &[
            &script.display().to_string(),
            &IN_SCOPE.to_string(),
            &SERVER.to_string(),
            &CLIENTS.to_string(),
        ],
    );
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&out)?);
    let idle = t.lab.spawn("idle clients", cmd)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let summary: serde_json::Value = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(v) = text.lines().find_map(|l| serde_json::from_str(l).ok()) {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle clients never connected"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(summary["connected"], CLIENTS, "{summary}");
    let rss_held = lab::rss_kib(app.pid)?;

    // A normal download while they hold on: passed (the budget is full),
    // byte-identical.
    let got = t.path("during.bin");
    let c = t.curl(
        IN_SCOPE,
        SERVER,
        "/big.bin",
        &t.pki.origin_root,
        &got,
        false,
    )?;
    assert_eq!(
        c.http_code,
        200,
        "{c:?}
{}",
        app.stderr()
    );
    assert_eq!(lab::sha256_file(&got)?, nginx.big_sha256);
    let _ = t.lab.stop(idle, "TERM", Duration::from_secs(10));

    let report = t.stop_appliance(&app)?;
    eprintln!("RSS {rss_start} KiB at start, {rss_held} KiB with {CLIENTS} idle clients; {report}");
    let overloaded = lab::total(&report, "intercept_overload");
    assert!(
        overloaded + 100 >= CLIENTS,
        "{overloaded} overloaded: {report}"
    );
    let limit = rss_start + BUDGET_MIB * 1024 + 48 * 1024;
    assert!(
        rss_held < limit,
        "RSS {rss_held} KiB with idle clients, over {limit} KiB"
    );
    let records = lab::read_log(&log)?;
    let passed = records
        .iter()
        .filter(|r| r["tlsinspect"]["reason"] == "overload" && r["tlsinspect"]["action"] == "pass")
        .count() as u64;
    assert!(passed + 100 >= CLIENTS, "{passed} pass/overload records");
    Ok(())
}

#[test]
fn a_syn_storm_against_a_small_budget_costs_no_memory_and_no_download() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    const BUDGET_MIB: u64 = 4;
    let BudgetLab {
        t,
        nginx,
        app,
        rss_start,
        ..
    } = budget_lab("ovl-st", BUDGET_MIB, |text| {
        text.replace(
            "destination_ports = [\"443/443\"]",
            "destination_ports = [\"443/443\", \"8443/8443\"]",
        )
    })?;

    let bundle = t.path("both.pem");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&t.pki.policy_ca_cert)?
            + &std::fs::read_to_string(&t.pki.origin_root)?,
    )?;
    // A download of the in-scope client (inspected or, once the budget is
    // full, passed: either way byte-identical) during the storm.
    let down = |from: Ipv4Addr, name: &str| {
        let out = t.path(name);
        let mut cmd = t.lab.command(
            t.lab.client_ns(),
            "curl",
            &[
                "-sS",
                "--max-time",
                "120",
                "--limit-rate",
                "10M",
                "--interface",
                &from.to_string(),
                "--cacert",
                &bundle.display().to_string(),
                "--resolve",
                &format!("{}:443:{SERVER}", lab::SERVER_NAME),
                "-o",
                &out.display().to_string(),
                &format!("https://{}/big.bin", lab::SERVER_NAME),
            ],
        );
        cmd.stdout(std::process::Stdio::null());
        (t.lab.spawn(name, cmd), out)
    };
    let (pid, out) = down(IN_SCOPE, "during.bin");
    let pid = pid?;
    let mut peak = rss_start;
    // 100,000 in-scope SYNs (one frame in five of each storm), in turn to
    // the open server, a closed port and a silent address of the scope.
    let mut syns = 0;
    for round in 0..10u64 {
        let (to, port) = match round % 3 {
            0 => (SERVER, "443"),
            1 => (SERVER, "8443"),
            _ => (SILENT, "443"),
        };
        let sent: serde_json::Value = t.helper(
            t.lab.client_ns(),
            &[
                "storm",
                "--source",
                &IN_SCOPE.to_string(),
                "--to",
                &to.to_string(),
                "--port",
                port,
                "--count",
                "50000",
                "--seed",
                &(21 + round).to_string(),
            ],
        )?;
        assert_eq!(sent["send_errors"], 0, "{sent}");
        syns += sent["syns"].as_u64().unwrap_or(0);
        peak = peak.max(lab::rss_kib(app.pid)?);
    }
    assert_eq!(syns, 100_000);
    let status = t.lab.stop(pid, "CONT", Duration::from_secs(120))?;
    assert!(
        status.success(),
        "the download during the storm failed: {status}"
    );
    assert_eq!(lab::sha256_file(&out)?, nginx.big_sha256);
    std::thread::sleep(Duration::from_secs(1));
    peak = peak.max(lab::rss_kib(app.pid)?);
    let report = t.stop_appliance(&app)?;
    eprintln!("RSS {rss_start} KiB at start, peak {peak} KiB; {report}");
    assert!(lab::total(&report, "intercept_overload") > 0, "{report}");
    // The budget plus a fixed overhead (allocator slack, the flow tables,
    // the 50 MB download's buffers).
    let limit = rss_start + BUDGET_MIB * 1024 + 48 * 1024;
    assert!(peak < limit, "RSS peaked at {peak} KiB, over {limit} KiB");
    Ok(())
}
