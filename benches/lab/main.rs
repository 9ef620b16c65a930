//! End-to-end throughput: iperf3 through the appliance (af_packet, one
//! worker core) against a kernel bridge in the same lab topology with the
//! same offload settings, measured in the same run (DESIGN.md §9).
//!
//! `cargo bench --bench lab -- intercept` runs the TLS interception
//! benchmark instead (appliance against sslsplit, see `intercept.rs`).
//!
//! Run as root: `cargo bench --bench lab` (env: `LAB_BENCH_SECONDS`, default
//! 10 per run; `LAB_BENCH_ROUNDS`, default 3, alternating bridge and
//! appliance so drift on a shared machine hits both alike; `LAB_BENCH_STREAMS`,
//! default 1; `LAB_BENCH_PERF=FILE`, record a `perf` profile of the
//! appliance into FILE during its runs). Prints each run, the medians and the ratio appliance / bridge.

mod intercept;
mod loadgen;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tlsinspect::demo::lab::{self, Lab, LabMode, LabSpec};
use tlsinspect::demo::probe::PingResult;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tlsinspect"))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ping_once(lab: &Lab) -> anyhow::Result<bool> {
    let out = lab.exec(
        lab.client_ns(),
        &exe().display().to_string(),
        &[
            "lab-helper",
            "ping",
            "--source",
            &CLIENT.to_string(),
            "--to",
            &SERVER.to_string(),
            "--count",
            "1",
            "--timeout-ms",
            "300",
        ],
    )?;
    let p: PingResult = serde_json::from_slice(&out.stdout)?;
    Ok(p.received == 1)
}

/// CPU time of all threads of `pid` so far (from schedstat, nanoseconds).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// One run's result.
struct Run {
    gbps: f64,
    /// Appliance CPU nanoseconds per forwarded frame (appliance runs only).
    ns_per_frame: Option<f64>,
}

/// One measurement: builds the lab, starts what the mode needs, runs iperf3.
fn measure(mode: LabMode, dir: &Path, seconds: u64, streams: u64) -> anyhow::Result<Run> {
    let lab = Lab::build(LabSpec {
        offloads: lab::Offloads::Off,
        prefix: lab::unique_prefix(&format!("bench{}", mode.as_str())),
        mode,
        clients: vec![CLIENT],
        servers: vec![SERVER],
    })?;
    for n in lab.notes() {
        eprintln!("note: {n}");
    }
    let mut appliance = None;
    if mode == LabMode::AfPacket {
        let pki = tlsinspect::demo::pki::create(&dir.join("pki"), &["www.example.com"])?;
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
                // No scope matches the iperf3 flow: this measures the fast path.
                in_scope: Ipv4Addr::new(192, 0, 2, 99),
            },
        );
        let path = dir.join("bench.toml");
        std::fs::write(&path, config)?;
        let mut cmd = lab.command(
            lab.appliance_ns(),
            exe(),
            &["run", "--config", &path.display().to_string()],
        );
        cmd.stdout(std::fs::File::create(dir.join("appliance.out"))?)
            .stderr(std::fs::File::create(dir.join("appliance.err"))?);
        appliance = Some(lab.spawn("appliance", cmd)?);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ping_once(&lab)? {
        if Instant::now() > deadline {
            let err = std::fs::read_to_string(dir.join("appliance.err")).unwrap_or_default();
            bail!(
                "{}: no ping crossed the appliance ns within 20 s; appliance stderr: {}",
                mode.as_str(),
                err.trim()
            );
        }
    }

    let mut cmd = lab.command(
        lab.server_ns(),
        "iperf3",
        &["-s", "-B", &SERVER.to_string(), "-p", "5201"],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    lab.spawn("iperf3 server", cmd)?;
    std::thread::sleep(Duration::from_millis(300));
    let cpu_before = appliance.map(cpu_ns);
    // Optional profile of the appliance during the measurement.
    let perf = match (appliance, std::env::var_os("LAB_BENCH_PERF")) {
        (Some(pid), Some(out)) => Some(
            std::process::Command::new("perf")
                .args(["record", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
                .arg(&out)
                .args(["--", "sleep", &seconds.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf record")?,
        ),
        _ => None,
    };
    let out = lab
        .exec(
            lab.client_ns(),
            "iperf3",
            &[
                "-c",
                &SERVER.to_string(),
                "-B",
                &CLIENT.to_string(),
                "-p",
                "5201",
                "-t",
                &seconds.to_string(),
                "-P",
                &streams.to_string(),
                "-J",
            ],
        )
        .context("running the iperf3 client")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing iperf3 -J output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 output without end.sum_received: {v}"))?;
    if let Some(mut p) = perf {
        let _ = p.wait();
    }
    let mut ns_per_frame = None;
    if let (Some(pid), Some(before)) = (appliance, cpu_before) {
        let cpu = cpu_ns(pid).saturating_sub(before);
        lab.stop(pid, "TERM", Duration::from_secs(20))?;
        let report = std::fs::read_to_string(dir.join("appliance.out")).unwrap_or_default();
        let frames: f64 = report
            .split("tx_frames ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if frames > 0.0 {
            ns_per_frame = Some(cpu as f64 / frames);
        }
        eprintln!("appliance report:\n{}", report.trim());
    }
    Ok(Run {
        gbps: bps / 1e9,
        ns_per_frame,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // The interception bench re-executes this binary as its TLS client.
    if let Some(i) = args.iter().position(|a| a == "__loadgen") {
        return loadgen::main(&args[i + 1..]);
    }
    if args.iter().any(|a| a == "--bench") && args.iter().any(|a| a == "intercept") {
        return intercept::run();
    }
    iperf3()
}

/// The iperf3 benchmark (fast path against a kernel bridge).
fn iperf3() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // useful either, so only run for real under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("lab bench: run with `cargo bench --bench lab` (as root)");
        return Ok(());
    }
    if !lab::is_root() || !lab::have_program("iperf3") {
        bail!("the lab benchmark needs root and iperf3");
    }
    let seconds = env_u64("LAB_BENCH_SECONDS", 10);
    let rounds = env_u64("LAB_BENCH_ROUNDS", 3);
    let streams = env_u64("LAB_BENCH_STREAMS", 1);
    let dir = tempfile::Builder::new()
        .prefix("tlsinspect-bench-")
        .tempdir()?;
    let (mut bridge, mut app, mut cost) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let b = measure(LabMode::Bridge, dir.path(), seconds, streams)?.gbps;
        println!("round {round}: kernel bridge           {b:6.2} Gbit/s");
        bridge.push(b);
        let r = measure(LabMode::AfPacket, dir.path(), seconds, streams)?;
        let per = r
            .ns_per_frame
            .map_or_else(String::new, |n| format!(", appliance CPU {n:.0} ns/frame"));
        println!(
            "round {round}: appliance (af_packet)   {:6.2} Gbit/s{per}",
            r.gbps
        );
        app.push(r.gbps);
        cost.extend(r.ns_per_frame);
    }
    let (b, a) = (median(&mut bridge), median(&mut app));
    println!("\niperf3 TCP, {streams} stream(s), {seconds} s x {rounds} rounds, GRO/LRO off on lan/wan, tx csum off on veth peers");
    println!("kernel bridge (median):          {b:.2} Gbit/s");
    println!("appliance, 1 worker (median):    {a:.2} Gbit/s");
    println!(
        "ratio appliance / bridge:        {:.3}  (target >= 0.9)",
        a / b
    );
    if !cost.is_empty() {
        println!(
            "appliance CPU per frame (median): {:.0} ns",
            median(&mut cost)
        );
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average after the run:      {}", load.trim());
    }
    Ok(())
}
