//! The lab's load balancer as a running process of a fleet lab.
//!
//! [`crate::demo::lb`] is the load balancer itself; this starts it as
//! `tlsinspect lab-helper lb` inside the load-balancer namespace of a
//! [`LabMode::Geneve`](crate::demo::lab::LabMode::Geneve) lab, waits for its
//! stats file, watches its health checks and stops it. It lives in the
//! library rather than beside the integration tests so the end-to-end
//! benchmark (`benches/lab`), which cannot use the tests' helpers, starts
//! the balancer the same way they do.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::lab::{Lab, FLEET_LB_ADDR};
use super::lb::{read_stats, LbStats};

/// A running `lab-helper lb`, started by [`LbProcess::start`].
#[derive(Debug)]
pub struct LbProcess {
    /// Its PID (the lab kills it on drop if it still runs).
    pub pid: u32,
    /// Its stats JSON (see [`LbStats`]).
    pub stats: PathBuf,
    /// Creating this file stops it, as SIGTERM does.
    pub stop_file: PathBuf,
    err: PathBuf,
}

impl LbProcess {
    /// Starts the load balancer of the fleet lab `lab` with the program
    /// `exe` (the `tlsinspect` binary), sending to `appliances` (GENEVE and
    /// health-check addresses, in order; a subset of the fleet's is fine),
    /// with `extra` arguments (e.g. `["--vni", "7"]`). Its files go into
    /// `dir`. Waits for its first stats file; the appliances start
    /// unhealthy (see [`LbProcess::wait_healthy`]).
    pub fn start(
        lab: &Lab,
        exe: &Path,
        dir: &Path,
        appliances: &[Ipv4Addr],
        extra: &[&str],
    ) -> anyhow::Result<LbProcess> {
        let lb_ns = lab
            .lb_ns()
            .context("not a fleet lab (build it with LabMode::Geneve)")?;
        if appliances.is_empty() {
            bail!("a load balancer needs at least one appliance");
        }
        let client_mac = mac(lab, lab.client_ns(), "c0")?;
        let server_mac = mac(lab, lab.server_ns(), "s0")?;
        let stats = dir.join("lb-stats.json");
        let stop_file = dir.join("lb.stop");
        let err = dir.join("lb.err");
        // A previous run's files would pass for this one's.
        for f in [&stats, &stop_file] {
            match std::fs::remove_file(f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", f.display()))
                }
                _ => {}
            }
        }
        let local = FLEET_LB_ADDR.to_string();
        let stats_s = stats.display().to_string();
        let stop_s = stop_file.display().to_string();
        let addrs: Vec<String> = appliances.iter().map(Ipv4Addr::to_string).collect();
        let mut args = vec![
            "lab-helper",
            "lb",
            "--client-mac",
            &client_mac,
            "--server-mac",
            &server_mac,
            "--local",
            &local,
            "--stats",
            &stats_s,
            "--stop-file",
            &stop_s,
        ];
        for a in &addrs {
            args.extend_from_slice(&["--appliance", a]);
        }
        args.extend_from_slice(extra);
        let mut cmd = lab.command(lb_ns, exe, &args);
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&err)?);
        let pid = lab.spawn("load balancer", cmd)?;
        let lb = LbProcess {
            pid,
            stats,
            stop_file,
            err,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while lb.stats().is_err() {
            if !lab.is_running(pid) {
                bail!("the load balancer exited during start-up: {}", lb.stderr());
            }
            if Instant::now() > deadline {
                bail!(
                    "the load balancer wrote no stats within 10 s: {}",
                    lb.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(lb)
    }

    /// Its latest stats.
    pub fn stats(&self) -> anyhow::Result<LbStats> {
        read_stats(&self.stats)
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits up to `timeout` until every appliance passed its health check
    /// and returns the stats; fails with the last stats seen.
    pub fn wait_healthy(&self, lab: &Lab, timeout: Duration) -> anyhow::Result<LbStats> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats()?;
            if !s.appliances.is_empty() && s.appliances.iter().all(|a| a.healthy) {
                return Ok(s);
            }
            if !lab.is_running(self.pid) {
                bail!("the load balancer exited: {}", self.stderr());
            }
            if Instant::now() > deadline {
                bail!("appliances not healthy within {timeout:?}: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it with SIGTERM and returns its final stats.
    pub fn stop(&self, lab: &Lab) -> anyhow::Result<LbStats> {
        let status = lab.stop(self.pid, "TERM", Duration::from_secs(10))?;
        if !status.success() {
            bail!("the load balancer exited with {status}: {}", self.stderr());
        }
        let s = self.stats()?;
        if !s.final_write {
            bail!("the load balancer did not write its stats at exit");
        }
        Ok(s)
    }
}

/// The MAC address of `dev` in `ns`.
fn mac(lab: &Lab, ns: &str, dev: &str) -> anyhow::Result<String> {
    let o = lab.exec(ns, "cat", &[&format!("/sys/class/net/{dev}/address")])?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}
