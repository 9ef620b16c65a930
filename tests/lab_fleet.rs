//! A fleet of two appliances in `mode = "geneve"` behind the lab's gateway
//! load balancer (DESIGN.md §13, issue 15), with the offloads off and on.
//!
//! What an operator scaling out would check: curl and openssl through the
//! fleet see the policy CA's chain and a 50 MB download arrives
//! byte-identical; 40 concurrent connections are carried by both
//! appliances, each appliance's log holds both directions of its own flows
//! and nothing of the other's, and every record names the VNI and the load
//! balancer; malformed GENEVE is counted and dropped and the appliance goes
//! on; `GET /health` answers 200, and after SIGTERM 503 while the appliance
//! drains: the load balancer sends new flows to the other appliance while a
//! download running through the draining one completes byte-identical.

mod lab;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lab::{Offloads, TestLab};
use serde_json::Value;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The load balancer's VNI (`lab-helper lb --vni`).
const VNI: u32 = 0x00_5a_17;
/// A name the policy excludes: its connections are passed, then released
/// from the TCP legs to the fast path inside the tunnel.
const PASSED_NAME: &str = "passed.example.com";
/// How long SIGTERM drains in the test.
const DRAIN_SECS: u64 = 20;

/// The appliance config of fleet member `i`: the demo policy, GENEVE on
/// its `lan`, health checks on its address, its own log and control socket.
fn member_config(t: &TestLab, i: usize, addr: Ipv4Addr) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (base, _) = t.write_config(CLIENT)?;
    let text = std::fs::read_to_string(&base)?;
    let log = t.path(&format!("traffic-{i}.jsonl"));
    let control = t.path(&format!("control-{i}.sock"));
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("wan = ") {
            continue; // one interface in geneve mode
        }
        if line.starts_with("cpus = ") && i == 1 {
            // Two workers: the load balancer's outer header says nothing of
            // the flow, so a frame reaching the wrong one is handed over.
            out.push_str("cpus = [0, 1]\n");
            continue;
        }
        if line.starts_with("exclude_sni = ") {
            out.push_str(&format!("exclude_sni = [{PASSED_NAME:?}]\n"));
            continue;
        }
        if line.starts_with("log = ") {
            out.push_str(&format!("log = {:?}\n", log.display().to_string()));
        } else if line.starts_with("control = ") {
            out.push_str(&format!(
                "control = {:?}\nhealth = \"{addr}:8081\"\ndrain_secs = {DRAIN_SECS}\n",
                control.display().to_string()
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        out.contains("mode = \"geneve\"") && out.contains("health = "),
        "{out}"
    );
    let path = t.path(&format!("tlsinspect-{i}.toml"));
    std::fs::write(&path, out)?;
    Ok((path, log))
}

/// The flow records of `log` by client port, waiting up to 10 s until
/// every port of `ports` has one.
fn records_for(log: &Path, ports: &[u16]) -> anyhow::Result<BTreeMap<u16, Value>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recs: BTreeMap<u16, Value> = lab::read_log(log)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["event_type"] == "flow")
            .filter_map(|r| Some((u16::try_from(r["src_port"].as_u64()?).ok()?, r)))
            .collect();
        if ports.iter().all(|p| recs.contains_key(p)) || Instant::now() > deadline {
            return Ok(recs);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An inspected flow of the demo policy, both directions seen, through the tunnel.
fn assert_tunnelled_inspected(rec: &Value, who: &str) {
    assert_eq!(rec["tlsinspect"]["action"], "inspected", "{who}: {rec}");
    assert_eq!(rec["tlsinspect"]["policy_id"], "pol-demo", "{who}: {rec}");
    assert_eq!(rec["tlsinspect"]["scope_id"], "sc-https", "{who}: {rec}");
    let g = &rec["tlsinspect"]["geneve"];
    assert_eq!(g["vni"], VNI, "{who}: {rec}");
    assert_eq!(
        g["load_balancer"],
        tlsinspect::demo::lab::FLEET_LB_ADDR.to_string(),
        "{who}: {rec}"
    );
    assert!(
        rec["flow"]["bytes_toserver"].as_u64() > Some(0)
            && rec["flow"]["bytes_toclient"].as_u64() > Some(0),
        "{who}: both directions crossed this appliance: {rec}"
    );
}

/// `GET /health` of `addr` from the load balancer's namespace: the status code.
fn health(t: &TestLab, addr: Ipv4Addr) -> anyhow::Result<String> {
    let ns = t.fleet()?.lb_ns.clone();
    let o = t.lab.exec(
        &ns,
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
            &format!("http://{addr}:8081/health"),
        ],
    )?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

fn fleet(tag: &str) -> anyhow::Result<()> {
    let t = TestLab::build_with_names(
        tag,
        lab::LabMode::Geneve,
        &[CLIENT],
        &[SERVER],
        &[PASSED_NAME],
    )?;
    let fleet = t.fleet()?.clone();
    let nginx = t.start_nginx()?;
    let mut apps = Vec::new();
    let mut logs = Vec::new();
    for (i, m) in fleet.appliances.iter().enumerate() {
        let (cfg, log) = member_config(&t, i, m.addr)?;
        apps.push(t.start_appliance_in(&m.ns, &cfg)?);
        logs.push(log);
    }
    let lb = t.start_lb(&["--vni", &VNI.to_string()])?;
    t.wait_health(&lb, &[true, true])
        .with_context(|| format!("appliance 0: {}", apps[0].stderr()))?;
    for m in &fleet.appliances {
        assert_eq!(health(&t, m.addr)?, "200", "GET /health of {}", m.addr);
    }
    let policy_ca = &t.pki.policy_ca_cert;

    // openssl and curl through the fleet see the policy CA's chain.
    let s = t.s_client(CLIENT, SERVER, policy_ca, &[])?;
    assert!(
        s.success,
        "s_client: {}\nappliance 0: {}\nappliance 1: {}\nload balancer: {:#?}",
        s.output,
        apps[0].stderr(),
        apps[1].stderr(),
        lb.stats()?.totals
    );
    let issuers = s.issuers();
    assert!(
        issuers
            .first()
            .is_some_and(|i| i.contains(lab::pki::POLICY_CA_CN)),
        "s_client chain issuers {issuers:?}"
    );
    let big = t.path("big.bin");
    let c = t.curl(CLIENT, SERVER, "/big.bin", policy_ca, &big, false)?;
    assert_eq!(c.http_code, 200, "{c:?}");
    assert_eq!(
        lab::sha256_file(&big)?,
        nginx.big_sha256,
        "50 MB through the fleet"
    );
    std::fs::remove_file(&big)?;

    // A passed connection leaves the TCP legs inside the tunnel too: its
    // 50 MB cross rewritten by the fast path, byte-identical, with the
    // origin's own chain.
    let passed = t.path("passed.bin");
    let o = t.lab.exec(
        t.lab.client_ns(),
        "curl",
        &[
            "-sS",
            "--max-time",
            "60",
            "--interface",
            &CLIENT.to_string(),
            "--cacert",
            &t.pki.origin_root.display().to_string(),
            "--resolve",
            &format!("{PASSED_NAME}:443:{SERVER}"),
            "-o",
            &passed.display().to_string(),
            "-w",
            "%{http_code} %{local_port}",
            &format!("https://{PASSED_NAME}/big.bin"),
        ],
    )?;
    let w = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(w.starts_with("200 "), "passed download: {w:?}");
    assert_eq!(
        lab::sha256_file(&passed)?,
        nginx.big_sha256,
        "50 MB passed through the fleet"
    );
    std::fs::remove_file(&passed)?;
    let passed_port: u16 = w.split_whitespace().nth(1).unwrap_or("0").parse()?;
    let s = t.wait_lb(&lb, Duration::from_secs(3), |s| {
        lab::lb_flow(s, CLIENT, passed_port, SERVER).is_some()
    })?;
    let passed_on = lab::lb_flow(&s, CLIENT, passed_port, SERVER)
        .expect("waited for above")
        .appliance;

    // 40 concurrent connections: both appliances carry flows, each logs
    // both directions of its own flows and nothing of the other's.
    let ports = t.concurrent_fetches(CLIENT, SERVER, &t.pki.policy_ca_cert, 40, "spread")?;
    let s = t.wait_lb(&lb, Duration::from_secs(3), |s| {
        ports
            .iter()
            .all(|&p| lab::lb_flow(s, CLIENT, p, SERVER).is_some())
    })?;
    let recs: Vec<BTreeMap<u16, Value>> = logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            let mine: Vec<u16> = ports
                .iter()
                .copied()
                .filter(|&p| lab::lb_flow(&s, CLIENT, p, SERVER).is_some_and(|f| f.appliance == i))
                .collect();
            records_for(log, &mine)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut carried = [0usize; 2];
    for &p in &ports {
        let i = lab::lb_flow(&s, CLIENT, p, SERVER)
            .expect("waited for above")
            .appliance;
        carried[i] += 1;
        let rec = recs[i]
            .get(&p)
            .unwrap_or_else(|| panic!("appliance {i} has no record of port {p}"));
        assert_tunnelled_inspected(rec, &format!("appliance {i}, port {p}"));
        assert!(
            !recs[1 - i].contains_key(&p),
            "appliance {} also logged port {p}, carried by appliance {i}",
            1 - i
        );
    }
    assert!(
        carried.iter().all(|&n| n > 0),
        "40 connections over both: {carried:?}"
    );
    assert_eq!(
        s.totals.option_mismatches + s.totals.wrong_source_returns,
        0,
        "{s:#?}"
    );

    // Malformed GENEVE to appliance 0: counted by reason, never answered,
    // and the appliance goes on.
    let m = t.geneve_malformed(
        &fleet.lb_ns,
        SocketAddr::from((tlsinspect::demo::lab::FLEET_LB_ADDR, 0)),
        SocketAddr::from((fleet.appliances[0].addr, 6081)),
        Duration::from_millis(300),
    )?;
    assert_eq!((m.sent.len(), m.replies), (6, 0), "{m:?}");
    let again =
        t.concurrent_fetches(CLIENT, SERVER, &t.pki.policy_ca_cert, 6, "after-malformed")?;
    assert_eq!(again.len(), 6);

    // Drain: a slow download runs through one appliance, which gets SIGTERM.
    let slow_out = t.path("slow.bin");
    let slow_w = slow_out.with_extension("w");
    let slow = t.slow_download(CLIENT, SERVER, &t.pki.policy_ca_cert, "6M", &slow_out)?;
    let known: Vec<u16> = ports
        .iter()
        .chain(&again)
        .copied()
        .chain([c.local_port, passed_port])
        .collect();
    let slow_flow = t.wait_download(&lb, SERVER, &known)?;
    let draining = slow_flow.appliance;
    let other = 1 - draining;
    t.lab.signal(apps[draining].pid, "TERM")?;
    let mut healthy = [true, true];
    healthy[draining] = false;
    let s = t.wait_health(&lb, &healthy)?;
    assert_eq!(health(&t, fleet.appliances[draining].addr)?, "503");
    let assigned_before = s.appliances[draining].flows_assigned;
    let new_ports = t.concurrent_fetches(CLIENT, SERVER, &t.pki.policy_ca_cert, 10, "drained")?;
    assert!(
        t.lab.is_running(slow),
        "the slow download still ran while new connections were made"
    );
    let s = t.wait_lb(&lb, Duration::from_secs(3), |s| {
        new_ports
            .iter()
            .all(|&p| lab::lb_flow(s, CLIENT, p, SERVER).is_some())
    })?;
    for &p in &new_ports {
        assert_eq!(
            lab::lb_flow(&s, CLIENT, p, SERVER)
                .expect("waited")
                .appliance,
            other,
            "port {p}"
        );
    }
    assert_eq!(s.appliances[draining].flows_assigned, assigned_before);
    let other_recs = records_for(&logs[other], &new_ports)?;
    for &p in &new_ports {
        let rec = other_recs
            .get(&p)
            .unwrap_or_else(|| panic!("appliance {other} has no record of port {p}"));
        assert_tunnelled_inspected(
            rec,
            &format!("appliance {other}, port {p} after the drain began"),
        );
    }
    let status = t.lab.wait(slow, Duration::from_secs(40))?;
    assert!(status.success(), "slow curl exited with {status}");
    let w = std::fs::read_to_string(&slow_w)?;
    assert!(w.starts_with("200 "), "slow curl -w {w:?}");
    assert_eq!(
        lab::sha256_file(&slow_out)?,
        nginx.big_sha256,
        "the download through the draining appliance"
    );
    let slow_port: u16 = w.split_whitespace().nth(1).unwrap_or("0").parse()?;

    // The draining appliance stops by itself once drain_secs have passed.
    let status = t
        .lab
        .wait(apps[draining].pid, Duration::from_secs(DRAIN_SECS + 15))?;
    assert!(
        status.success(),
        "drained appliance: {status}: {}",
        apps[draining].stderr()
    );
    let err = apps[draining].stderr();
    assert!(err.contains("draining for"), "{err}");
    let report = apps[draining].stdout();
    let recs = records_for(&logs[draining], &[slow_port])?;
    let rec = recs.get(&slow_port).expect("the slow flow's record");
    assert_tunnelled_inspected(rec, "the drained download");
    assert!(
        rec["flow"]["bytes_toclient"].as_u64() > Some(50_000_000),
        "{rec}"
    );
    if draining == 0 {
        assert_malformed_counted(&report);
    }

    // The other appliance: a second SIGTERM stops it at once.
    let app = &apps[other];
    t.lab.signal(app.pid, "TERM")?;
    std::thread::sleep(Duration::from_millis(300));
    t.lab.signal(app.pid, "TERM")?;
    let status = t.lab.wait(app.pid, Duration::from_secs(10))?;
    assert!(status.success(), "{status}: {}", app.stderr());
    let report = app.stdout();
    // The passed download crossed released: its frames rewritten by the
    // fast path of the appliance that carried it.
    let released = lab::total(&apps[passed_on].stdout(), "released_frames");
    assert!(
        released > 2_000,
        "released frames {released}: {}",
        apps[passed_on].stdout()
    );
    let recs = records_for(&logs[passed_on], &[passed_port])?;
    let rec = recs.get(&passed_port).expect("the passed flow's record");
    assert_eq!(rec["tlsinspect"]["action"], "pass", "{rec}");
    assert_eq!(rec["tlsinspect"]["reason"], "excluded", "{rec}");
    assert_eq!(rec["tlsinspect"]["geneve"]["vni"], VNI, "{rec}");
    assert!(
        rec["flow"]["bytes_toclient"].as_u64() > Some(50_000_000),
        "{rec}"
    );
    // Three 50 MB downloads crossed the fleet, some on each appliance.
    let frames = [apps[0].stdout(), apps[1].stdout()].map(|r| lab::total(&r, "geneve_frames"));
    assert!(
        frames.iter().sum::<u64>() > 100_000 && frames.iter().all(|&n| n > 100),
        "GENEVE frames per appliance {frames:?}"
    );
    let handed = lab::total(&apps[1].stdout(), "handoff_out");
    assert!(
        handed > 0,
        "appliance 1's two workers handed frames over: {}",
        apps[1].stdout()
    );
    if other == 0 {
        assert_malformed_counted(&report);
    }
    let s = t.stop_lb(&lb)?;
    assert_eq!(
        s.totals.option_mismatches + s.totals.wrong_source_returns,
        0,
        "{s:#?}"
    );
    Ok(())
}

/// Appliance 0's final counters show the probe's six malformed packets by reason.
fn assert_malformed_counted(report: &str) {
    let n = |k| lab::total(report, k);
    assert_eq!(n("geneve_bad_version"), 1, "{report}");
    assert_eq!(n("geneve_critical_option"), 1, "{report}");
    assert_eq!(n("geneve_bad_protocol"), 1, "{report}");
    assert_eq!(n("geneve_bad_length"), 3, "{report}");
}

#[test]
fn fleet_offloads_off() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    lab::with_offloads(Offloads::Off, || fleet("gfleet"))
}

#[test]
fn fleet_offloads_on() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    lab::with_offloads(Offloads::On, || fleet("gfleeto"))
}
