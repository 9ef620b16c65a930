//! The running appliance's control plane: a validated config turned into
//! CAs, minter, upstream trust, decision settings, bypass cache, engines,
//! traffic log and scope table; reload, status and metrics on top.
//!
//! Why one struct: start-up, SIGHUP and the control socket must build and
//! check a config in exactly the same way, and a reload must either replace
//! everything a new connection depends on or nothing. [`Appliance::reload`]
//! therefore builds a complete [`build::Built`] first (CAs included) and only
//! then swaps it in; any error leaves the running state untouched. What a
//! new intercepted flow is born with (minter, engines, upstream trust,
//! per-policy settings) is one `ConnCtx` behind an `ArcSwap`: a reload
//! stores a new one built from its own objects, and a flow already running
//! keeps the context, CA and rules it was created with until it ends.
//!
//! Restart-only settings (`runtime::restart_only_changes`) are compared with
//! the configuration the process started with, which is what runs, so every
//! reload reports them until a restart and none applies them silently.

pub mod build;
pub mod flowlog;
mod metrics;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tlsinspect_pipeline::conn::ConnCtx;
use tlsinspect_pipeline::io::afpacket::RingConfig;
use tlsinspect_pipeline::tcp::FlowConfig;
use tlsinspect_pipeline::tls::bypass::BypassCache;
use tlsinspect_pipeline::{Pipeline, Stats};

use crate::capture::{Capture, CapturingInspector};
use crate::config::Config;
use crate::control::metrics::{HttpServer, MetricsServer, Reply};
use crate::control::{ControlHandler, ControlServer, Request, Response};
use crate::inspect::Engines;
use crate::log::EveLog;
use crate::pki::Minter;
use crate::runtime;

pub use build::{Built, LoadedCa};
pub use flowlog::CountingLog;

/// What is running now, replaced whole by a reload.
struct Running {
    /// The configuration last loaded (at start or by a reload).
    config: Config,
    /// The minter and engines new flows are born with (for the metrics).
    minter: Arc<Minter>,
    engines: Arc<Engines>,
    cas: Vec<LoadedCa>,
    root_count: usize,
    ips_loaded: usize,
    ips_skipped: usize,
    warnings: Vec<String>,
    loaded_at: SystemTime,
}

/// A started appliance: control-plane state and, unless started without
/// packet I/O, the data-plane pipeline.
pub struct Appliance {
    path: PathBuf,
    started: Instant,
    /// The configuration the process started with: its restart-only
    /// settings are the ones in force.
    boot: Config,
    /// Also serializes reloads.
    running: Mutex<Running>,
    pipeline: Option<Pipeline>,
    log: Arc<CountingLog>,
    bypass: Arc<BypassCache>,
    /// `[capture]`, started once (restart-only): it wraps every reload's engines.
    capture: Option<Arc<Capture>>,
    /// What the workers give each new intercepted flow; replaced on reload.
    intercept: Arc<ArcSwap<ConnCtx>>,
    flow_ids: Arc<AtomicU64>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Set by SIGTERM in GENEVE mode: health checks fail, flows go on.
    draining: AtomicBool,
    /// Health checks answered 200 and 503.
    health_answers: [AtomicU64; 2],
}

impl std::fmt::Debug for Appliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appliance")
            .field("path", &self.path)
            .field("pipeline", &self.pipeline.is_some())
            .finish()
    }
}

impl Appliance {
    /// Builds the control plane for `cfg` (read from `path`), opens the
    /// traffic log and starts the pipeline.
    ///
    /// Warnings (CA validity under a year, skipped IPS rules, the roots
    /// fallback) are logged at `warn` level and kept for `status`.
    pub fn start(path: &Path, cfg: Config) -> anyhow::Result<Appliance> {
        Self::assemble(path, cfg, true)
    }

    /// Like [`Appliance::start`] without opening any device or starting
    /// workers: the control socket, reload and metrics work, no packet
    /// moves. For tests and for checking a deployment's control plane.
    pub fn start_without_dataplane(path: &Path, cfg: Config) -> anyhow::Result<Appliance> {
        Self::assemble(path, cfg, false)
    }

    fn assemble(path: &Path, cfg: Config, dataplane: bool) -> anyhow::Result<Appliance> {
        let built = Built::from_config(&cfg, SystemTime::now())?;
        for w in cfg.warnings().iter().chain(&built.warnings) {
            log::warn!("{w}");
        }
        let outputs =
            Arc::new(EveLog::open(&cfg.log_outputs()).context("opening the traffic-log outputs")?);
        let log = Arc::new(CountingLog::new(outputs));
        let bypass = Arc::new(BypassCache::new(build::bypass_config(&cfg.appliance)));
        let Built {
            cas,
            minter,
            upstream,
            root_count,
            tls_policies,
            engines,
            ips_report,
            warnings,
            scopes,
            ..
        } = built;
        let minter = Arc::new(minter);
        let flow_ids = Arc::new(AtomicU64::new(1));
        let capture = match &cfg.capture {
            Some(c) => Some(Capture::start(c).context("starting [capture]")?),
            None => None,
        };
        let ctx = ConnCtx {
            minter: minter.clone(),
            inspector: inspector_of(&engines, capture.as_ref()),
            log: log.clone(),
            bypass: bypass.clone(),
            upstream: (*upstream).clone(),
            policies: tls_policies,
            flow_ids: flow_ids.clone(),
            tcp: flow_config(&cfg),
            hello_timeout: ConnCtx::DEFAULT_HELLO_TIMEOUT,
        };
        let intercept = Arc::new(ArcSwap::from_pointee(ctx));
        let pipeline = if dataplane {
            Some(
                Pipeline::start_intercepting(
                    runtime::pipeline_config(&cfg),
                    RingConfig::default(),
                    scopes.clone(),
                    log.clone(),
                    Some(intercept.clone()),
                )
                .with_context(|| {
                    format!(
                        "starting the pipeline ({:?} lan {} wan {}, cpus {:?})",
                        cfg.appliance.mode,
                        cfg.appliance.lan,
                        cfg.appliance.wan,
                        cfg.appliance.cpus
                    )
                })?,
            )
        } else {
            None
        };
        let mut all_warnings = cfg.warnings();
        all_warnings.extend(warnings);
        Ok(Appliance {
            path: path.to_owned(),
            started: Instant::now(),
            boot: cfg.clone(),
            running: Mutex::new(Running {
                minter,
                engines,
                cas,
                root_count,
                ips_loaded: ips_report.loaded,
                ips_skipped: ips_report.skipped.len(),
                warnings: all_warnings,
                loaded_at: SystemTime::now(),
                config: cfg,
            }),
            pipeline,
            log,
            bypass,
            capture,
            intercept,
            flow_ids,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            health_answers: [AtomicU64::new(0), AtomicU64::new(0)],
        })
    }

    /// The config file it runs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the running configuration.
    pub fn config(&self) -> Config {
        self.lock().config.clone()
    }

    /// Warnings of the running configuration (start-up or last reload).
    pub fn warnings(&self) -> Vec<String> {
        self.lock().warnings.clone()
    }

    /// The context the data plane gives each new intercepted flow: the
    /// minter, engines and settings of the configuration loaded last.
    pub fn intercept_ctx(&self) -> Arc<ConnCtx> {
        self.intercept.load_full()
    }

    /// Re-reads the config file, builds and checks everything (CAs, roots,
    /// rules), then swaps it in for new connections.
    ///
    /// On any error the running configuration stays in force and the error
    /// is returned. Flows already running keep their decision.
    pub fn reload(&self) -> anyhow::Result<String> {
        let r = self.reload_inner();
        match &r {
            Ok(_) => self.reloads_ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.reloads_failed.fetch_add(1, Ordering::Relaxed),
        };
        r
    }

    fn reload_inner(&self) -> anyhow::Result<String> {
        let mut cur = self.lock();
        let new = runtime::load_config(&self.path)?;
        let built = Built::from_config(&new, SystemTime::now())?;
        let restart = runtime::restart_only_changes(&self.boot, &new);

        // Everything a new flow reads is swapped before the scope table, so
        // a flow selected by a new scope finds its policy's CA and settings.
        // Flows born earlier hold the previous context, CA and rules.
        let minter = Arc::new(built.minter.continuing(&cur.minter));
        self.intercept.store(Arc::new(ConnCtx {
            minter: minter.clone(),
            inspector: inspector_of(&built.engines, self.capture.as_ref()),
            log: self.log.clone(),
            bypass: self.bypass.clone(),
            upstream: (*built.upstream).clone(),
            policies: built.tls_policies,
            flow_ids: self.flow_ids.clone(),
            // Restart-only: the legs keep the buffers the workers started with.
            tcp: flow_config(&self.boot),
            hello_timeout: ConnCtx::DEFAULT_HELLO_TIMEOUT,
        }));
        if let Some(p) = &self.pipeline {
            p.set_scopes(built.scopes.clone());
            // A policy enabled before and disabled (or deleted) now, with
            // on_disable = "interrupt": its running flows are reset.
            let stopped = interrupted_policies(&cur.config, &new);
            if !stopped.is_empty() {
                log::info!(
                    "interrupting the running flows of disabled polic{} {}",
                    if stopped.len() == 1 { "y" } else { "ies" },
                    stopped.iter().map(|p| &**p).collect::<Vec<_>>().join(", ")
                );
                p.interrupt_policies(&stopped);
            }
        }

        let enabled: Vec<&str> = new
            .policies
            .iter()
            .filter(|p| p.enabled)
            .map(|p| &*p.id)
            .collect();
        let scopes = built.scopes.len();
        let mut msg = format!(
            "reloaded {}: {} enabled polic{} ({}) with {scopes} scope(s) now select new connections",
            self.path.display(),
            enabled.len(),
            if enabled.len() == 1 { "y" } else { "ies" },
            enabled.join(", ")
        );
        let mut warnings = new.warnings();
        warnings.extend(built.warnings);
        for w in &warnings {
            msg.push_str(&format!("\nwarning: {w}"));
        }
        if !restart.is_empty() {
            msg.push_str(&format!(
                "\nnot applied until a restart: {}",
                restart.join(", ")
            ));
        }
        *cur = Running {
            config: new,
            minter,
            engines: built.engines,
            cas: built.cas,
            root_count: built.root_count,
            ips_loaded: built.ips_report.loaded,
            ips_skipped: built.ips_report.skipped.len(),
            warnings,
            loaded_at: SystemTime::now(),
        };
        Ok(msg)
    }

    /// Starts draining: health checks answer 503 from now on, so a load
    /// balancer sends no new flows; the flows it already sends go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the appliance is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether a worker of the data plane has stopped.
    pub fn workers_stopped(&self) -> bool {
        self.pipeline.as_ref().is_some_and(|p| !p.workers_running())
    }

    /// Answers a health check: whether the workers run and the appliance
    /// is not draining (counted for the metrics).
    pub fn health_check(&self) -> bool {
        let up = !self.draining()
            && self
                .pipeline
                .as_ref()
                .is_some_and(Pipeline::workers_running);
        self.health_answers[usize::from(!up)].fetch_add(1, Ordering::Relaxed);
        up
    }

    /// Health checks answered (200, 503).
    pub fn health_answers(&self) -> (u64, u64) {
        (
            self.health_answers[0].load(Ordering::Relaxed),
            self.health_answers[1].load(Ordering::Relaxed),
        )
    }

    /// Data-plane counters, when the pipeline runs.
    pub fn stats(&self) -> Option<Stats> {
        self.pipeline.as_ref().map(Pipeline::stats)
    }

    /// The data plane's latency histograms (merged over the workers).
    pub fn latency(&self) -> Option<tlsinspect_pipeline::latency::Latency> {
        self.pipeline.as_ref().map(Pipeline::latency)
    }

    /// The counting traffic log.
    pub fn flow_log(&self) -> &Arc<CountingLog> {
        &self.log
    }

    /// Writes an EVE `stats` event to the traffic log now.
    pub fn log_stats(&self) {
        let event = flowlog::stats_event(
            self.stats().as_ref(),
            &self.log,
            self.started.elapsed(),
            SystemTime::now(),
        );
        self.log.outputs().write_value(&event);
    }

    /// When the appliance started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Certificate minting counters since start-up.
    pub fn mint_stats(&self) -> crate::pki::MintStats {
        self.lock().minter.stats()
    }

    /// IPS alerts per sid raised by the rule set loaded last (since its load).
    pub fn ips_alert_counts(&self) -> Vec<(u64, u64)> {
        let engines = self.lock().engines.clone();
        engines.ips_alert_counts()
    }

    /// The state for `tlsinspect policy list` and `Status`: a one-line
    /// summary and the details as JSON.
    pub fn status(&self) -> (String, serde_json::Value) {
        let cur = self.lock();
        let uptime = self.started.elapsed().as_secs();
        let enabled: Vec<&str> = cur
            .config
            .policies
            .iter()
            .filter(|p| p.enabled)
            .map(|p| &*p.id)
            .collect();
        let disabled: Vec<&str> = cur
            .config
            .policies
            .iter()
            .filter(|p| !p.enabled)
            .map(|p| &*p.id)
            .collect();
        let flows: u64 = self.log.flows().iter().map(|(_, n)| n).sum();
        let mint = cur.minter.stats();
        let bypass = self.bypass.stats();
        let now = SystemTime::now();
        let summary = format!(
            "up {uptime}s{}; enabled: {}; disabled: {}; {flows} flow(s) logged",
            if self.pipeline.is_none() {
                " (control plane only, no packet I/O)"
            } else {
                ""
            },
            if enabled.is_empty() {
                "none".to_owned()
            } else {
                enabled.join(", ")
            },
            if disabled.is_empty() {
                "none".to_owned()
            } else {
                disabled.join(", ")
            },
        );
        let policies: Vec<serde_json::Value> = cur
            .config
            .policies
            .iter()
            .map(|p| {
                let ca = cur.cas.iter().find(|c| c.policy == p.id);
                serde_json::json!({
                    "id": &*p.id,
                    "name": p.name,
                    "enabled": p.enabled,
                    "scopes": p.scopes.iter().map(|s| &*s.id).collect::<Vec<_>>(),
                    "ca_subject": ca.map(|c| c.summary.subject.clone()),
                    "ca_days_left": ca.map(|c| metrics::days_left(c.not_after_unix, now)),
                })
            })
            .collect();
        let data = serde_json::json!({
            "config": self.path.display().to_string(),
            "uptime_secs": uptime,
            "dataplane": self.pipeline.is_some(),
            "loaded_at": crate::log::record::format_timestamp(cur.loaded_at),
            "enabled_policies": enabled,
            "disabled_policies": disabled,
            "policies": policies,
            "warnings": cur.warnings,
            "upstream_roots": cur.root_count,
            "ips_rules_loaded": cur.ips_loaded,
            "ips_rules_skipped": cur.ips_skipped,
            "counters": {
                "flows_logged": flows,
                "log_records": self.log.outputs().counts().iter().map(|c| c.written).sum::<u64>(),
                "log_dropped": self.log.outputs().dropped(),
                "cert_cache_hits": mint.hits,
                "cert_cache_misses": mint.misses,
                "cert_cache_entries": mint.entries,
                "bypass_cache_entries": bypass.entries,
                "reloads_ok": self.reloads_ok.load(Ordering::Relaxed),
                "reloads_failed": self.reloads_failed.load(Ordering::Relaxed),
                "pipeline": self.stats().map(|s| runtime::nonzero_counters(&s.total)),
            },
        });
        (summary, data)
    }

    /// Stops the workers (if any) and returns their final counters.
    pub fn shutdown(self) -> Option<Stats> {
        let stats = self.pipeline.map(Pipeline::shutdown);
        if let Some(c) = &self.capture {
            c.shutdown();
        }
        stats
    }

    /// `[capture]`, when on.
    pub fn capture(&self) -> Option<Arc<Capture>> {
        self.capture.clone()
    }
}

/// Policies enabled in `old` that `new` disables or deletes, whose running
/// flows are to be reset (`on_disable = "interrupt"`, as set in `old`).
fn interrupted_policies(old: &Config, new: &Config) -> Vec<Arc<str>> {
    old.policies
        .iter()
        .filter(|p| p.enabled && p.on_disable == crate::config::OnDisable::Interrupt)
        .filter(|p| !new.policies.iter().any(|n| n.id == p.id && n.enabled))
        .map(|p| Arc::<str>::from(&*p.id))
        .collect()
}

/// The inspector new flows get: the engines, behind the capture when on.
fn inspector_of(
    engines: &Arc<Engines>,
    capture: Option<&Arc<Capture>>,
) -> Arc<dyn tlsinspect_pipeline::api::Inspector> {
    match capture {
        Some(c) => Arc::new(CapturingInspector::new(engines.clone(), c.clone())),
        None => engines.clone(),
    }
}

/// The legs' TCP settings of `cfg` (a restart-only part of it).
fn flow_config(cfg: &Config) -> FlowConfig {
    // The data plane's devices (AF_PACKET, TUN) always carry offload
    // headers, so the legs leave TCP checksums to the kernel.
    FlowConfig {
        offload: true,
        ..FlowConfig::with_buffer_bytes(cfg.appliance.tcp_buffer_bytes)
    }
}

impl ControlHandler for Appliance {
    fn handle(&self, req: &Request) -> Response {
        match req {
            Request::Reload => match self.reload() {
                Ok(msg) => {
                    log::info!("{msg}");
                    Response::ok(msg)
                }
                Err(e) => {
                    let msg =
                        format!("reload failed, the previous configuration stays in force: {e:#}");
                    log::error!("{msg}");
                    Response::err(msg)
                }
            },
            Request::Status => {
                let (msg, data) = self.status();
                let mut r = Response::ok(msg);
                r.data = data;
                r
            }
        }
    }
}

/// The periodic `stats` writer: its stop flag and thread.
type StatsThread = (
    Arc<(Mutex<bool>, std::sync::Condvar)>,
    std::thread::JoinHandle<()>,
);

/// The control socket and metrics endpoint of a running appliance; both
/// stop when this is dropped.
#[derive(Debug)]
pub struct Services {
    /// Held for its `Drop`, which removes the socket.
    _control: ControlServer,
    metrics: Option<MetricsServer>,
    health: Option<HttpServer>,
    stats: Option<StatsThread>,
}

impl Services {
    /// Binds the control socket and, if configured, the metrics endpoint of
    /// `app`'s running config.
    pub fn start(app: &Arc<Appliance>) -> anyhow::Result<Services> {
        let cfg = app.config();
        let path = &cfg.appliance.control;
        let control = ControlServer::bind(path, app.clone())
            .with_context(|| format!("opening the control socket {}", path.display()))?;
        let metrics = match cfg.appliance.metrics {
            Some(addr) => Some(
                MetricsServer::start(addr, app.clone())
                    .with_context(|| format!("starting the metrics endpoint {addr}"))?,
            ),
            None => None,
        };
        let health = match cfg.appliance.health {
            Some(addr) => {
                let app = app.clone();
                Some(
                    HttpServer::start(addr, "health", move |method, target| {
                        match (method, target) {
                            ("GET" | "HEAD", "/health") if app.health_check() => {
                                Reply::text("200 OK", "ok\n")
                            }
                            ("GET" | "HEAD", "/health") if app.draining() => {
                                Reply::text("503 Service Unavailable", "draining\n")
                            }
                            ("GET" | "HEAD", "/health") => {
                                Reply::text("503 Service Unavailable", "workers stopped\n")
                            }
                            _ => Reply::text("404 Not Found", "only GET /health is served here\n"),
                        }
                    })
                    .with_context(|| format!("starting the health endpoint {addr}"))?,
                )
            }
            None => None,
        };
        let interval = cfg.appliance.stats_interval;
        let stats = if interval.is_zero() {
            None
        } else {
            let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
            let (stop2, app2) = (stop.clone(), app.clone());
            let thread = std::thread::Builder::new()
                .name("stats".into())
                .spawn(move || {
                    let (lock, cvar) = &*stop2;
                    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        let (guard, _) = cvar
                            .wait_timeout(stopped, interval)
                            .unwrap_or_else(|e| e.into_inner());
                        stopped = guard;
                        if *stopped {
                            return;
                        }
                        app2.log_stats();
                    }
                })
                .context("starting the stats thread")?;
            Some((stop, thread))
        };
        Ok(Services {
            _control: control,
            metrics,
            health,
            stats,
        })
    }

    /// Where the health endpoint listens, if enabled.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().map(HttpServer::addr)
    }

    /// Where the metrics endpoint listens, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::addr)
    }

    /// Stops both servers and the stats thread (same as dropping).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.stats.take() {
            *stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            stop.1.notify_all();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
