//! End-to-end throughput: iperf3 through the appliance (af_packet, one
//! worker core) against a kernel bridge in the same lab topology with the
//! same offload settings, measured in the same run (DESIGN.md §9), at both
//! offload settings of §8. Three things cross: the kernel bridge (the
//! reference), the appliance's fast path (iperf3 selected by no scope), and
//! a passed in-scope flow (iperf3 selected by the policy; not TLS, so the
//! `non_tls = "passthrough"` row passes it and, once its first bytes are
//! delivered, releases it to the fast path with its sequence numbers
//! rewritten, like every passed flow). For the appliance runs it reports CPU
//! per MB, frames, leg ACKs and worker wake-ups per MB, and the passed
//! flows' added latency (p50/p99 from the appliance's histograms). Two more
//! rows compare the fast path with two iperf3 streams on one worker and on
//! two workers (`cpus = [0, 1]`): CPU per MB should not grow with workers.
//! These appliance rows run with `kernel_fast_path = "off"`, so the fast
//! path is the user-space one; a last row measures the kernel fast path
//! (the default `"auto"`: the no-scope flow redirected by the tc-BPF program
//! once its handshake crossed the worker) beside them and the bridge. Its
//! forwarding runs in the kernel's softirq on the senders' cores, not in the
//! appliance's threads, so its appliance CPU per MB is the workers' share
//! (handshake and teardown) only.
//!
//! Two GENEVE rows put one appliance in `mode = "geneve"` behind the lab's
//! gateway load balancer (`LabMode::Geneve`, DESIGN.md §13) beside the
//! bridge-mode rows of the same round: the fast path and the passed flow
//! as above, the same offload setting, `kernel_fast_path = "off"` on both
//! sides (geneve mode has only the user-space path). The load balancer is a
//! user-space test helper (one AF_PACKET tap per side, one UDP datagram per
//! packet), so it is measured too: its CPU per MB, and both processes'
//! busy share of a core. Where it spends more per MB than the appliance it
//! bounds the throughput, and the appliance's CPU per MB is the comparison
//! that means something; the output says which it is.
//!
//! `cargo bench --bench lab -- intercept` runs the TLS interception
//! benchmark instead (appliance against sslsplit, see `intercept.rs`);
//! `cargo bench --bench lab -- geneve` runs only the GENEVE rows and the
//! bridge-mode rows they are compared with.
//!
//! Run as root: `cargo bench --bench lab` (env: `LAB_BENCH_SECONDS`, default
//! 10 per run; `LAB_BENCH_ROUNDS`, default 3, alternating bridge and
//! appliance so drift on a shared machine hits both alike; `LAB_BENCH_STREAMS`,
//! default 1; `LAB_BENCH_PERF=FILE`, record a `perf` profile of the
//! appliance into FILE during its runs; `LAB_BENCH_GENEVE`, default 1, 0
//! leaves the GENEVE rows out). Prints each run, the medians and the ratio appliance / bridge.

mod intercept;
mod loadgen;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tlsinspect::demo::lab::{self, Lab, LabMode, LabSpec};
use tlsinspect::demo::lb_process::LbProcess;
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

/// CPU time of each thread of `pid` so far (from schedstat): (thread id,
/// nanoseconds).
fn thread_cpu_ns(pid: u32) -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let ns = s.split_whitespace().next()?.parse::<u64>().ok()?;
            Some((t.file_name().to_string_lossy().into_owned(), ns))
        })
        .collect()
}

/// The CPU time of all threads of a [`thread_cpu_ns`] sample.
fn total_ns(sample: &[(String, u64)]) -> u64 {
    sample.iter().map(|t| t.1).sum()
}

/// Busy share of a core over `wall` seconds between two [`thread_cpu_ns`]
/// samples: the whole process and its busiest thread.
fn busy(before: &[(String, u64)], after: &[(String, u64)], wall: f64) -> (f64, f64) {
    let deltas: Vec<u64> = after
        .iter()
        .map(|(tid, ns)| {
            let was = before.iter().find(|b| &b.0 == tid).map_or(0, |b| b.1);
            ns.saturating_sub(was)
        })
        .collect();
    let share = |ns: u64| ns as f64 / 1e9 / wall;
    (
        share(deltas.iter().sum()),
        share(deltas.iter().copied().max().unwrap_or(0)),
    )
}

/// One run's result.
struct Run {
    gbps: f64,
    /// Appliance CPU milliseconds per MB received by iperf3 (appliance runs only).
    ms_per_mb: Option<f64>,
    /// Frames the appliance transmitted per MB (appliance runs only).
    frames_per_mb: Option<f64>,
    /// Pure ACKs its TCP legs sent and worker wake-ups, per MB.
    acks_per_mb: Option<f64>,
    wakeups_per_mb: Option<f64>,
    /// Added latency (first byte in to first byte out) of the intercepted
    /// flows, p50 and p99 upper bucket bounds in µs, both directions.
    latency_us: Option<(f64, f64)>,
    /// The load balancer's CPU milliseconds per MB (GENEVE runs only).
    lb_ms_per_mb: Option<f64>,
    /// Busy share of one core during the iperf3 run, the whole process and
    /// its busiest thread: appliance, load balancer.
    app_busy: Option<(f64, f64)>,
    lb_busy: Option<(f64, f64)>,
    /// Super-frames the load balancer cut into segments.
    lb_super_frames: Option<u64>,
}

/// A counter of the appliance's `total:` line at exit.
fn total(report: &str, name: &str) -> f64 {
    report
        .lines()
        .filter_map(|l| l.trim().strip_prefix("total:"))
        .flat_map(|l| l.split(','))
        .find_map(|kv| {
            let mut it = kv.split_whitespace();
            (it.next() == Some(name)).then(|| it.next()?.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// The `q` quantile of a Prometheus histogram's `_bucket` series summed
/// over its label sets: the upper bound of the first bucket holding it.
fn quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let prefix = format!("{name}_bucket{{");
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix(&prefix) else {
            continue;
        };
        let le = rest.split("le=\"").nth(1)?.split('"').next()?;
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        let n: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        match buckets.iter_mut().find(|b| b.0 == le) {
            Some(b) => b.1 += n,
            None => buckets.push((le, n)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last()?.1;
    if count <= 0.0 {
        return None;
    }
    buckets.iter().find(|b| b.1 >= q * count).map(|b| b.0)
}

/// What iperf3's flow crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A kernel bridge.
    Bridge,
    /// The appliance, the flow in no scope.
    Fast,
    /// The appliance, the flow in scope and passed (`non_tls`).
    Passed,
    /// The appliance's fast path, two streams, one worker.
    FastTwoStreams,
    /// The same with two workers (`cpus = [0, 1]`).
    FastTwoWorkers,
    /// The appliance, the flow in no scope, the kernel fast path.
    Kernel,
    /// One appliance in geneve mode behind the lab's load balancer, the
    /// flow in no scope (user-space fast path).
    Geneve,
    /// The same, the flow in scope and passed (`non_tls`).
    GenevePassed,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Bridge => "kernel bridge",
            Target::Fast => "appliance fast path",
            Target::Passed => "appliance, passed in-scope",
            Target::FastTwoStreams => "fast path, 2 streams, 1 worker",
            Target::FastTwoWorkers => "fast path, 2 streams, 2 workers",
            Target::Kernel => "appliance kernel fast path",
            Target::Geneve => "geneve appliance fast path",
            Target::GenevePassed => "geneve appliance, passed in-scope",
        }
    }

    fn lab_mode(self) -> LabMode {
        match self {
            Target::Bridge => LabMode::Bridge,
            Target::Geneve | Target::GenevePassed => LabMode::Geneve,
            _ => LabMode::AfPacket,
        }
    }
}

/// One measurement: builds the lab, starts what the target needs, runs iperf3.
fn measure(
    target: Target,
    offloads: lab::Offloads,
    dir: &Path,
    seconds: u64,
    streams: u64,
) -> anyhow::Result<Run> {
    let mode = target.lab_mode();
    let lab = Lab::build(LabSpec {
        offloads,
        prefix: lab::unique_prefix(&format!("bench{}", mode.as_str())),
        mode,
        clients: vec![CLIENT],
        servers: vec![SERVER],
    })?;
    for n in lab.notes() {
        eprintln!("note: {n}");
    }
    let mut appliance = None;
    let mut lb = None;
    // The fleet's first appliance; the load balancer is given only it.
    let member = lab.fleet().and_then(|f| f.appliances.first()).cloned();
    if mode != LabMode::Bridge {
        let pki = tlsinspect::demo::pki::create(&dir.join("pki"), &["www.example.com"])?;
        let (lan, wan) = lab.appliance_ports();
        let config = tlsinspect::demo::render_config(
            tlsinspect::demo::DEMO_CONFIG_TEMPLATE,
            &tlsinspect::demo::ConfigVars {
                mode: mode.as_str(),
                lan,
                wan,
                log: &dir.join("traffic.jsonl"),
                control: &dir.join("control.sock"),
                roots: &pki.origin_root,
                ca_cert: &pki.policy_ca_cert,
                ca_key: &pki.policy_ca_key,
                // Fast: no scope matches the iperf3 flow. Passed: the
                // client and iperf3's port are in scope.
                in_scope: if matches!(target, Target::Passed | Target::GenevePassed) {
                    CLIENT
                } else {
                    Ipv4Addr::new(192, 0, 2, 99)
                },
            },
        )
        .replace(
            "destination_ports = [\"443/443\"]",
            "destination_ports = [\"443/443\", \"5201/5201\"]",
        )
        .replace("\ncontrol = ", "\nmetrics = \"127.0.0.1:9273\"\ncontrol = ")
        .replace(
            "cpus = [0]",
            if target == Target::FastTwoWorkers {
                "cpus = [0, 1]"
            } else {
                "cpus = [0]"
            },
        );
        // The kernel fast path is the default ("auto"); the other appliance
        // rows measure the user-space paths.
        let setting = if target == Target::Kernel {
            "auto"
        } else {
            "off"
        };
        let config = config.replace(
            "\ncontrol = ",
            &format!("\nkernel_fast_path = \"{setting}\"\ncontrol = "),
        );
        if !config.contains("kernel_fast_path = ") {
            bail!("the demo config has no control line to put kernel_fast_path before");
        }
        // Geneve mode (as tests/lab_fleet.rs configures a member): `lan`
        // only, health checks on its address, no drain at SIGTERM.
        let config = match &member {
            Some(m) => config
                .lines()
                .filter(|l| !l.starts_with("wan = "))
                .map(|l| match l.starts_with("control = ") {
                    true => format!("health = \"{}:8081\"\ndrain_secs = 0\n{l}\n", m.addr),
                    false => format!("{l}\n"),
                })
                .collect(),
            None => config,
        };
        let path = dir.join("bench.toml");
        std::fs::write(&path, config)?;
        let ns = member
            .as_ref()
            .map_or(lab.appliance_ns(), |m| m.ns.as_str());
        let mut cmd = lab.command(ns, exe(), &["run", "--config", &path.display().to_string()]);
        cmd.stdout(std::fs::File::create(dir.join("appliance.out"))?)
            .stderr(std::fs::File::create(dir.join("appliance.err"))?);
        appliance = Some(lab.spawn("appliance", cmd)?);
    }
    if let Some(m) = &member {
        let l = LbProcess::start(&lab, &exe(), dir, &[m.addr], &[])?;
        l.wait_healthy(&lab, Duration::from_secs(20))
            .with_context(|| {
                let err = std::fs::read_to_string(dir.join("appliance.err")).unwrap_or_default();
                format!("appliance stderr: {}", err.trim())
            })?;
        lb = Some(l);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ping_once(&lab)? {
        if Instant::now() > deadline {
            let err = std::fs::read_to_string(dir.join("appliance.err")).unwrap_or_default();
            let lb_err = lb.as_ref().map(LbProcess::stderr).unwrap_or_default();
            bail!(
                "{}: no ping crossed the appliance ns within 20 s; appliance stderr: {}; load balancer stderr: {}",
                mode.as_str(),
                err.trim(),
                lb_err.trim()
            );
        }
    }

    if target == Target::Kernel {
        let err = std::fs::read_to_string(dir.join("appliance.err")).unwrap_or_default();
        if !err.contains("kernel fast path: on") {
            bail!("the kernel fast path is not on: {}", err.trim());
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
    let cpu_before = appliance.map(thread_cpu_ns);
    let lb_before = lb.as_ref().map(|l| thread_cpu_ns(l.pid));
    let started = Instant::now();
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
    let wall = started.elapsed().as_secs_f64();
    let (lb_cpu, lb_busy) = match (&lb, lb_before) {
        (Some(l), Some(before)) => {
            let after = thread_cpu_ns(l.pid);
            (
                Some(total_ns(&after).saturating_sub(total_ns(&before))),
                Some(busy(&before, &after, wall)),
            )
        }
        _ => (None, None),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing iperf3 -J output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 output without end.sum_received: {v}"))?;
    if let Some(mut p) = perf {
        let _ = p.wait();
    }
    let bytes = v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
    let mb = bytes / 1e6;
    let (mut ms_per_mb, mut frames_per_mb, mut acks_per_mb, mut wakeups_per_mb) =
        (None, None, None, None);
    let mut latency_us = None;
    let mut app_busy = None;
    if let (Some(pid), Some(before)) = (appliance, cpu_before) {
        let after = thread_cpu_ns(pid);
        let cpu = total_ns(&after).saturating_sub(total_ns(&before));
        app_busy = Some(busy(&before, &after, wall));
        if let Ok(m) = lab.exec(
            lab.appliance_ns(),
            "curl",
            &["-sS", "http://127.0.0.1:9273/metrics"],
        ) {
            let m = String::from_utf8_lossy(&m.stdout);
            let name = "tlsinspect_added_latency_seconds";
            if let (Some(a), Some(b)) = (quantile(&m, name, 0.5), quantile(&m, name, 0.99)) {
                latency_us = Some((a * 1e6, b * 1e6));
            }
        }
        lab.stop(pid, "TERM", Duration::from_secs(20))?;
        let report = std::fs::read_to_string(dir.join("appliance.out")).unwrap_or_default();
        let frames: f64 = report
            .split("tx_frames ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if mb > 0.0 {
            ms_per_mb = Some(cpu as f64 / 1e6 / mb);
            frames_per_mb = Some(frames / mb);
            acks_per_mb = Some(total(&report, "intercept_tx_acks") / mb);
            wakeups_per_mb = Some(total(&report, "wakeups") / mb);
        }
        eprintln!("appliance report:\n{}", report.trim());
    }
    let mut lb_super_frames = None;
    if let Some(l) = &lb {
        let s = l.stop(&lab)?;
        lb_super_frames = Some(s.totals.super_frames);
        let t = &s.totals;
        eprintln!(
            "load balancer: captured {} + {}, super-frames {}, delivered {} + {}, send errors {}, tx dropped {}, refused returns {}",
            t.captured_client,
            t.captured_server,
            t.super_frames,
            t.delivered_client,
            t.delivered_server,
            t.send_errors,
            t.tx_dropped,
            t.malformed_returns
                + t.option_mismatches
                + t.vni_mismatches
                + t.wrong_source_returns
                + t.unknown_flow_returns
        );
    }
    Ok(Run {
        gbps: bps / 1e9,
        ms_per_mb,
        frames_per_mb,
        acks_per_mb,
        wakeups_per_mb,
        latency_us,
        lb_ms_per_mb: lb_cpu.filter(|_| mb > 0.0).map(|c| c as f64 / 1e6 / mb),
        app_busy,
        lb_busy,
        lb_super_frames,
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
    iperf3(args.iter().any(|a| a == "geneve"))
}

/// One offload setting's results: every round's run, per target.
type Results = Vec<(Target, Vec<Run>)>;

/// The runs of `t` in one offload setting's results (none if it did not run).
fn runs_of(runs: &[(Target, Vec<Run>)], t: Target) -> &[Run] {
    runs.iter().find(|r| r.0 == t).map_or(&[], |r| &r.1)
}

/// The iperf3 benchmark (fast path against a kernel bridge); with
/// `geneve_only`, the GENEVE rows and the bridge-mode rows they are
/// compared with.
fn iperf3(geneve_only: bool) -> anyhow::Result<()> {
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
    let geneve = geneve_only || env_u64("LAB_BENCH_GENEVE", 1) != 0;
    let dir = tempfile::Builder::new()
        .prefix("tlsinspect-bench-")
        .tempdir()?;
    // Each GENEVE row runs right after the bridge-mode row it is compared
    // with, so the two see the same moment of a shared machine.
    let targets: Vec<Target> = if geneve_only {
        vec![
            Target::Fast,
            Target::Geneve,
            Target::Passed,
            Target::GenevePassed,
        ]
    } else {
        let mut t = vec![Target::Bridge, Target::Fast];
        t.extend(geneve.then_some(Target::Geneve));
        t.push(Target::Passed);
        t.extend(geneve.then_some(Target::GenevePassed));
        t.extend([
            Target::FastTwoStreams,
            Target::FastTwoWorkers,
            Target::Kernel,
        ]);
        t
    };
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average before the run:     {}", load.trim());
    }
    let mut table = Vec::new();
    for offloads in [lab::Offloads::Off, lab::Offloads::On] {
        // Per target, every round's run.
        let mut runs: Results = targets.iter().map(|&t| (t, Vec::new())).collect();
        for round in 1..=rounds {
            for (i, &t) in targets.iter().enumerate() {
                let n = match t {
                    Target::FastTwoStreams | Target::FastTwoWorkers => streams.max(2),
                    _ => streams,
                };
                let r = measure(t, offloads, dir.path(), seconds, n)?;
                let mut cost = match (r.ms_per_mb, r.frames_per_mb) {
                    (Some(c), Some(f)) => format!(", CPU {c:.2} ms/MB, {f:.0} frames/MB"),
                    _ => String::new(),
                };
                if let (Some(a), Some(w)) = (r.acks_per_mb, r.wakeups_per_mb) {
                    cost += &format!(", {a:.1} leg ACKs/MB, {w:.1} wake-ups/MB");
                }
                if let Some((p50, p99)) = r.latency_us {
                    cost += &format!(", added latency p50 <= {p50:.0} us, p99 <= {p99:.0} us");
                }
                if let (Some(l), Some(a), Some(b)) = (r.lb_ms_per_mb, r.app_busy, r.lb_busy) {
                    cost += &format!(
                        ", load balancer {l:.2} ms/MB; busy share of a core (busiest thread): appliance {:.0}% ({:.0}%), load balancer {:.0}% ({:.0}%)",
                        a.0 * 100.0,
                        a.1 * 100.0,
                        b.0 * 100.0,
                        b.1 * 100.0
                    );
                }
                println!(
                    "{}, round {round}: {:32} {:6.2} Gbit/s{cost}",
                    offloads.as_str(),
                    t.name(),
                    r.gbps
                );
                runs[i].1.push(r);
            }
        }
        table.push((offloads, runs));
    }
    let med = |runs: &[Run], f: fn(&Run) -> Option<f64>| {
        let mut v: Vec<f64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    let fmt = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let gbps = |r: &Run| Some(r.gbps);
    let cpu = |r: &Run| r.ms_per_mb;
    let frames = |r: &Run| r.frames_per_mb;
    println!("\niperf3 TCP, {streams} stream(s), {seconds} s x {rounds} rounds, 1 appliance worker; medians");
    if targets.contains(&Target::Bridge) {
        println!("| offloads | kernel bridge | fast path | ratio (target >= 0.9) | passed in-scope | passed CPU/MB vs fast (target <= 1.2) | fast ms/MB | passed ms/MB | fast frames/MB | passed frames/MB | passed leg ACKs/MB | passed wake-ups/MB |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (o, runs) in &table {
            let (b, f, p) = (
                runs_of(runs, Target::Bridge),
                runs_of(runs, Target::Fast),
                runs_of(runs, Target::Passed),
            );
            println!(
            "| {} | {} Gbit/s | {} Gbit/s | {} | {} Gbit/s | {} | {} | {} | {} | {} | {} | {} |",
            o.as_str(),
            fmt(med(b, gbps), 2),
            fmt(med(f, gbps), 2),
            fmt(div(med(f, gbps), med(b, gbps)), 2),
            fmt(med(p, gbps), 2),
            fmt(div(med(p, cpu), med(f, cpu)), 2),
            fmt(med(f, cpu), 2),
            fmt(med(p, cpu), 2),
            fmt(med(f, frames), 0),
            fmt(med(p, frames), 0),
            fmt(med(p, |r| r.acks_per_mb), 1),
            fmt(med(p, |r| r.wakeups_per_mb), 1),
        );
        }
    }
    if targets.contains(&Target::FastTwoWorkers) {
        println!(
            "\nTwo workers against one, fast path, 2 iperf3 streams (target: CPU/MB within 10 %)"
        );
        println!("| offloads | 1 worker | 2 workers | 1 worker ms/MB | 2 workers ms/MB | ratio |");
        println!("|---|---|---|---|---|---|");
        for (o, runs) in &table {
            let (one, two) = (
                runs_of(runs, Target::FastTwoStreams),
                runs_of(runs, Target::FastTwoWorkers),
            );
            println!(
                "| {} | {} Gbit/s | {} Gbit/s | {} | {} | {} |",
                o.as_str(),
                fmt(med(one, gbps), 2),
                fmt(med(two, gbps), 2),
                fmt(med(one, cpu), 2),
                fmt(med(two, cpu), 2),
                fmt(div(med(two, cpu), med(one, cpu)), 2),
            );
        }
    }
    if targets.contains(&Target::Kernel) {
        println!(
            "\nKernel fast path (tc-BPF) beside the user-space fast path and the bridge, 1 stream"
        );
        println!("| offloads | kernel bridge | kernel fast path | ratio (target >= 0.9) | user-space fast path | ratio | kernel fast ms/MB | kernel fast frames/MB | fast ms/MB | fast frames/MB |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (o, runs) in &table {
            let (b, f, k) = (
                runs_of(runs, Target::Bridge),
                runs_of(runs, Target::Fast),
                runs_of(runs, Target::Kernel),
            );
            println!(
                "| {} | {} Gbit/s | {} Gbit/s | {} | {} Gbit/s | {} | {} | {} | {} | {} |",
                o.as_str(),
                fmt(med(b, gbps), 2),
                fmt(med(k, gbps), 2),
                fmt(div(med(k, gbps), med(b, gbps)), 2),
                fmt(med(f, gbps), 2),
                fmt(div(med(f, gbps), med(b, gbps)), 2),
                fmt(med(k, cpu), 3),
                fmt(med(k, frames), 1),
                fmt(med(f, cpu), 2),
                fmt(med(f, frames), 0),
            );
        }
    }
    if geneve {
        geneve_table(&table);
    }
    println!("\nAdded latency of the passed in-scope flows (histogram bucket bounds, all rounds' medians)");
    for (o, runs) in &table {
        let p = runs_of(runs, Target::Passed);
        println!(
            "{}: p50 <= {} us, p99 <= {} us",
            o.as_str(),
            fmt(med(p, |r| r.latency_us.map(|l| l.0)), 0),
            fmt(med(p, |r| r.latency_us.map(|l| l.1)), 0),
        );
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average after the run:      {}", load.trim());
    }
    Ok(())
}

/// The GENEVE rows beside the bridge-mode rows of the same rounds, with
/// the load balancer's share and which of the two bounds the throughput.
fn geneve_table(table: &[(lab::Offloads, Results)]) {
    let med = |runs: &[Run], f: fn(&Run) -> Option<f64>| {
        let mut v: Vec<f64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    let fmt = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}%", v * 100.0));
    // The process's busy share and its busiest thread's, "55% (48%)".
    let busy = |runs: &[Run], f: fn(&Run) -> Option<(f64, f64)>| {
        let mut all: Vec<f64> = runs.iter().filter_map(|r| f(r).map(|b| b.0)).collect();
        let mut one: Vec<f64> = runs.iter().filter_map(|r| f(r).map(|b| b.1)).collect();
        match all.is_empty() {
            true => "-".to_owned(),
            false => format!(
                "{} ({})",
                pct(Some(median(&mut all))),
                pct(Some(median(&mut one)))
            ),
        }
    };
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let gbps = |r: &Run| Some(r.gbps);
    let cpu = |r: &Run| r.ms_per_mb;
    let lb_cpu = |r: &Run| r.lb_ms_per_mb;
    let wakeups = |r: &Run| r.wakeups_per_mb;
    println!("\nOne appliance in geneve mode behind the lab's load balancer against the bridge-mode (af_packet) appliance, same rounds, same offloads, user-space fast path; medians");
    println!("| offloads | flow | bridge mode | geneve | geneve/bridge | bridge ms/MB | geneve ms/MB | geneve/bridge ms/MB | load balancer ms/MB | bridge wake-ups/MB | geneve wake-ups/MB | appliance busy (busiest thread) | load balancer busy (busiest thread) | bound by |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut lb_bound = false;
    let mut cut = false;
    // The largest geneve / bridge-mode ratio of wake-ups per MB.
    let mut wake_ratio: f64 = 0.0;
    for (o, runs) in table {
        for (flow, bridge, tunnel) in [
            ("fast path", Target::Fast, Target::Geneve),
            ("passed in-scope", Target::Passed, Target::GenevePassed),
        ] {
            let (b, g) = (runs_of(runs, bridge), runs_of(runs, tunnel));
            cut |= g.iter().any(|r| r.lb_super_frames > Some(0));
            if g.is_empty() {
                continue;
            }
            let (app, lb) = (med(g, cpu), med(g, lb_cpu));
            let (wb, wg) = (med(b, wakeups), med(g, wakeups));
            if let Some(r) = div(wg, wb) {
                wake_ratio = wake_ratio.max(r);
            }
            // Both run on the same shared cores: the one that spends more
            // CPU per MB takes the larger share of them and sets the rate.
            let bound = match (app, lb) {
                (Some(a), Some(l)) if l > a => {
                    lb_bound = true;
                    format!("load balancer ({:.1}x the appliance's CPU/MB)", l / a)
                }
                (Some(_), Some(_)) => "appliance".to_owned(),
                _ => "-".to_owned(),
            };
            println!(
                "| {} | {flow} | {} Gbit/s | {} Gbit/s | {} | {} | {} | {} | {} | {} | {} | {} | {} | {bound} |",
                o.as_str(),
                fmt(med(b, gbps), 2),
                fmt(med(g, gbps), 2),
                fmt(div(med(g, gbps), med(b, gbps)), 2),
                fmt(med(b, cpu), 2),
                fmt(app, 2),
                fmt(div(app, med(b, cpu)), 2),
                fmt(lb, 2),
                fmt(wb, 1),
                fmt(wg, 1),
                busy(g, |r| r.app_busy),
                busy(g, |r| r.lb_busy),
            );
        }
    }
    if lb_bound {
        println!("The lab's user-space load balancer (one UDP datagram per packet, super-frames cut to MTU segments) costs more CPU per MB than the appliance: it bounds the GENEVE throughput, so compare the appliance's CPU per MB, not the Gbit/s.");
    }
    if wake_ratio >= 2.0 {
        println!("The geneve appliance woke up to {wake_ratio:.0}x as often per MB as the bridge-mode one: the load balancer hands it a trickle, so its batches are small and part of its CPU per MB is per-wake-up cost a faster load balancer would spread over more bytes.");
    }
    if cut {
        println!("The load balancer cut super-frames into MTU-sized segments before encapsulating them (offloads on), so the geneve appliance saw 1500-byte packets where the bridge-mode one sees super-frames.");
    }
}
