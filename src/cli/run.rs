//! `tlsinspect run`: the appliance process.
//!
//! Signals are registered before anything starts, so a SIGTERM that arrives
//! during start-up still ends in a clean shutdown. The main thread waits
//! for signals and watches the workers: one that stops (a device error, a
//! panic outside any single flow) ends the process with exit status 1, for
//! the service manager to restart it. The workers, the control socket and
//! the metrics endpoint run on their own threads. In GENEVE mode the first SIGTERM
//! drains (DESIGN.md §13): health checks answer 503 for `drain_secs` while
//! the flows the load balancer still sends are carried, then it stops.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::appliance::{Appliance, Services};
use crate::console::Console;
use crate::runtime;

/// How long SIGTERM drains: `drain_secs` in GENEVE mode (a load balancer
/// deregisters the appliance meanwhile), `None` otherwise or when 0.
fn cfg_drain(app: &Appliance) -> Option<std::time::Duration> {
    let a = app.config().appliance;
    (a.mode == crate::config::Mode::Geneve && !a.drain.is_zero()).then_some(a.drain)
}

/// Runs `tlsinspect run`.
pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .try_init();
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;

    let cfg = runtime::load_config(config)?;
    let control_path = cfg.appliance.control.clone();
    let cpus = cfg.appliance.cpus.clone();
    let summary = format!(
        "{:?} {}, {} worker(s) on cpus {:?}, {} enabled polic(ies), {} scope(s), log {}, IPS prefilter {}",
        cfg.appliance.mode,
        if cfg.appliance.wan.is_empty() {
            format!("on {}", cfg.appliance.lan)
        } else {
            format!("lan {} wan {}", cfg.appliance.lan, cfg.appliance.wan)
        },
        cfg.appliance.cpus.len(),
        cfg.appliance.cpus,
        cfg.policies.iter().filter(|p| p.enabled).count(),
        runtime::scope_specs(&cfg).len(),
        cfg.appliance.log.display(),
        crate::inspect::ips::MATCHER
    );
    let console_cfg = cfg.clone();
    // Warnings (config, CA validity, skipped IPS rules) are logged by start.
    let app = Arc::new(Appliance::start(config, cfg)?);
    let services = Services::start(&app)?;
    // The console is off the packet path: if it cannot start, the appliance
    // forwards and inspects all the same.
    let console = match console_cfg.console.is_some() {
        false => None,
        true => match Console::start(app.clone(), &console_cfg) {
            Ok(c) => {
                log::info!(
                    "console on https://{}/ (certificate SHA-256 {})",
                    c.addr(),
                    c.fingerprint()
                );
                Some(c)
            }
            Err(e) => {
                log::error!("console not started: {e:#}; forwarding is not affected");
                None
            }
        },
    };
    if let Some(addr) = services.metrics_addr() {
        log::info!("metrics on http://{addr}/metrics");
    }
    log::info!(
        "running: {summary}; control socket {}",
        control_path.display()
    );

    if let Some(addr) = services.health_addr() {
        log::info!("health checks on http://{addr}/health");
    }
    let drains = cfg_drain(&app);
    let mut drain_until: Option<std::time::Instant> = None;
    let mut worker_stopped = false;
    loop {
        let Some(sig) = signals.pending().next() else {
            if drain_until.is_some_and(|until| std::time::Instant::now() >= until) {
                log::info!("drained: shutting down");
                break;
            }
            if app.workers_stopped() {
                // A worker that stopped (device error, or a panic outside
                // any one flow) leaves its share of the traffic unserved:
                // exit non-zero so the service manager starts us afresh.
                log::error!("a worker stopped (see above): shutting down with exit status 1");
                worker_stopped = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        };
        match sig {
            SIGTERM if drain_until.is_none() && drains.is_some() => {
                let secs = drains.unwrap_or_default();
                app.drain();
                drain_until = Some(std::time::Instant::now() + secs);
                log::info!(
                    "signal {sig}: draining for {} s (health checks answer 503, running flows go on); a second SIGTERM or a SIGINT stops at once",
                    secs.as_secs()
                );
            }
            SIGHUP => {
                // logrotate's postrotate: the file outputs open their path anew.
                app.flow_log().outputs().reopen();
                match app.reload() {
                    Ok(msg) => log::info!("SIGHUP: {msg} (log outputs reopened)"),
                    Err(e) => log::error!(
                        "SIGHUP: reload failed, the previous configuration stays in force: {e:#} (log outputs reopened)"
                    ),
                }
            }
            _ => {
                log::info!("signal {sig}: shutting down");
                break;
            }
        }
    }

    drop(console);
    services.stop();
    let log = app.flow_log().clone();
    let app = Arc::try_unwrap(app)
        .map_err(|_| anyhow::anyhow!("internal: the appliance is still referenced at shutdown"))?;
    let started = app.started();
    let capture = app.capture();
    let stats = app.shutdown();
    // A last `stats` event with the final counters, as Suricata writes at exit.
    log.outputs()
        .write_value(&crate::appliance::flowlog::stats_event(
            stats.as_ref(),
            &log,
            started.elapsed(),
            std::time::SystemTime::now(),
        ));
    // Counted after the workers stopped: flows still open were logged (and
    // reset) during the shutdown.
    let outputs = log.outputs().close();
    let records: u64 = outputs.iter().map(|c| c.written).sum();
    println!(
        "tlsinspect stopped. Final counters:\n{}\ntraffic-log records written: {records}",
        stats.map_or_else(
            || "no data plane".to_owned(),
            |s| runtime::format_stats(&s, &cpus)
        )
    );
    for c in &outputs {
        println!(
            "traffic-log output {}: {} written, {} dropped, {} write errors",
            c.name, c.written, c.dropped, c.errors
        );
        if c.dropped > 0 {
            log::warn!(
                "traffic-log output {} dropped {} record(s) (queue full, refused, or undeliverable at shutdown)",
                c.name,
                c.dropped
            );
        }
    }
    if let Some(c) = capture {
        println!("{}", c.report());
    }
    Ok(if worker_stopped {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
