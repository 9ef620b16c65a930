//! The running appliance: a validated config turned into what the data plane
//! runs on, the pipeline started, reloads applied.
//!
//! The config types and the pipeline's types are kept apart on purpose (the
//! pipeline knows nothing of TOML, policies or CAs); this module is the one
//! place that translates between them, so `run`, reload over SIGHUP and
//! reload over the control socket all compile scopes the same way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context as _;
use tlsinspect_pipeline::classify::{ScopeSpec, ScopeTable};
use tlsinspect_pipeline::{DeviceMode, Pipeline, PipelineConfig, Stats};

use crate::config::{self, Config, Mode};
use crate::control::metrics::{MetricsSource, Sample};
use crate::control::{ControlHandler, Request, Response};
use crate::log::{JsonLog, Rotation};

/// The scopes of the ENABLED policies, in precedence order (policy order in
/// the file, then scope order).
pub fn scope_specs(cfg: &Config) -> Vec<ScopeSpec> {
    cfg.policies
        .iter()
        .filter(|p| p.enabled)
        .flat_map(|p| {
            p.scopes.iter().map(move |s| ScopeSpec {
                policy_id: p.id.clone(),
                scope_id: s.id.clone(),
                source_ips: s.source_ips.clone(),
                source_ports: s.source_ports.iter().map(|r| (r.start, r.end)).collect(),
                destinations: s.destinations.clone(),
                destination_ports: s
                    .destination_ports
                    .iter()
                    .map(|r| (r.start, r.end))
                    .collect(),
            })
        })
        .collect()
}

/// The compiled scope table of `cfg`.
pub fn compile_scopes(cfg: &Config) -> Arc<ScopeTable> {
    Arc::new(ScopeTable::compile(&scope_specs(cfg)))
}

/// The pipeline's settings from the `[appliance]` section.
pub fn pipeline_config(cfg: &Config) -> PipelineConfig {
    let a = &cfg.appliance;
    let mode = match a.mode {
        Mode::AfPacket => DeviceMode::AfPacket {
            lan: a.lan.clone(),
            wan: a.wan.clone(),
        },
        Mode::Tun => DeviceMode::Tun {
            lan: a.lan.clone(),
            wan: a.wan.clone(),
        },
    };
    PipelineConfig {
        mode,
        cpus: a.cpus.clone(),
        max_flows: a.max_flows,
        flow_idle_timeout: a.flow_idle_timeout,
    }
}

/// Loads a config file, with all its errors in the message.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    config::load(path)
        .map_err(|e| anyhow::anyhow!("{} is not a valid configuration:\n{e}", path.display()))
}

/// Loads the CAs of the enabled policies, so a broken CA stops the start
/// (not the first intercepted connection), and returns their warnings.
pub fn check_cas(cfg: &Config) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    for p in cfg.policies.iter().filter(|p| p.enabled) {
        let ca = crate::pki::PolicyCa::load(&p.ca_cert, &p.ca_key, &p.ca_chain, SystemTime::now())
            .with_context(|| {
                format!("policy {:?}: loading its CA {}", p.id, p.ca_cert.display())
            })?;
        let s = ca.summary();
        for w in s.warnings {
            warnings.push(format!("policy {:?}: CA {}: {w}", p.id, s.subject));
        }
    }
    Ok(warnings)
}

/// Settings that only take effect on a restart, as `name: old -> new`.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.appliance, &new.appliance);
    let mut out = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("appliance.{name}: {a} -> {b}"));
        }
    };
    cmp("mode", format!("{:?}", o.mode), format!("{:?}", n.mode));
    cmp("lan", o.lan.clone(), n.lan.clone());
    cmp("wan", o.wan.clone(), n.wan.clone());
    cmp("cpus", format!("{:?}", o.cpus), format!("{:?}", n.cpus));
    cmp(
        "max_flows",
        o.max_flows.to_string(),
        n.max_flows.to_string(),
    );
    cmp(
        "flow_idle_timeout",
        format!("{:?}", o.flow_idle_timeout),
        format!("{:?}", n.flow_idle_timeout),
    );
    cmp(
        "log",
        o.log.display().to_string(),
        n.log.display().to_string(),
    );
    cmp(
        "control",
        o.control.display().to_string(),
        n.control.display().to_string(),
    );
    cmp(
        "metrics",
        format!("{:?}", o.metrics),
        format!("{:?}", n.metrics),
    );
    out
}

/// The counters of `c` that are not zero, as `name value` pairs joined by
/// commas (read from the `Debug` form so new counters show up unasked).
pub fn nonzero_counters(c: &tlsinspect_pipeline::Counters) -> String {
    let dbg = format!("{c:?}");
    let inner = dbg
        .split_once('{')
        .map(|(_, r)| r.trim_end_matches('}'))
        .unwrap_or_default();
    let pairs: Vec<String> = inner
        .split(',')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, v)| !k.is_empty() && *v != "0" && !v.is_empty())
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if pairs.is_empty() {
        "all zero".to_owned()
    } else {
        pairs.join(", ")
    }
}

/// A multi-line report of `stats` for the operator.
pub fn format_stats(stats: &Stats, cpus: &[usize]) -> String {
    let mut out = format!("total: {}", nonzero_counters(&stats.total));
    if stats.workers.len() > 1 {
        for (i, w) in stats.workers.iter().enumerate() {
            let cpu = cpus
                .get(i)
                .map_or_else(|| "?".to_owned(), |c| c.to_string());
            out.push_str(&format!(
                "\nworker {i} (cpu {cpu}): {}",
                nonzero_counters(w)
            ));
        }
    }
    out
}

/// A started appliance: the pipeline, its log and the config it runs.
pub struct Appliance {
    path: PathBuf,
    config: Mutex<Config>,
    pipeline: Pipeline,
    log: Arc<JsonLog>,
}

impl std::fmt::Debug for Appliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appliance")
            .field("path", &self.path)
            .finish()
    }
}

impl Appliance {
    /// Opens the traffic log and starts the pipeline for `cfg`.
    pub fn start(path: &Path, cfg: Config) -> anyhow::Result<Appliance> {
        let log = Arc::new(
            JsonLog::open(&cfg.appliance.log, Rotation::default()).with_context(|| {
                format!("opening the traffic log {}", cfg.appliance.log.display())
            })?,
        );
        let scopes = compile_scopes(&cfg);
        let pipeline =
            Pipeline::start(pipeline_config(&cfg), scopes, log.clone()).with_context(|| {
                format!(
                    "starting the pipeline ({:?} lan {} wan {}, cpus {:?})",
                    cfg.appliance.mode, cfg.appliance.lan, cfg.appliance.wan, cfg.appliance.cpus
                )
            })?;
        Ok(Appliance {
            path: path.to_owned(),
            config: Mutex::new(cfg),
            pipeline,
            log,
        })
    }

    /// The config file it runs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the config file and swaps the scope table for new
    /// connections. On any error the running config stays in force.
    pub fn reload(&self) -> anyhow::Result<String> {
        let new = load_config(&self.path)?;
        let ca_warnings = check_cas(&new)?;
        let mut cur = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let restart = restart_only_changes(&cur, &new);
        let specs = scope_specs(&new);
        self.pipeline
            .set_scopes(Arc::new(ScopeTable::compile(&specs)));
        let enabled = new.policies.iter().filter(|p| p.enabled).count();
        *cur = new;
        let mut msg = format!(
            "reloaded {}: {enabled} enabled polic{} with {} scope(s) now select new connections",
            self.path.display(),
            if enabled == 1 { "y" } else { "ies" },
            specs.len()
        );
        for w in ca_warnings {
            msg.push_str(&format!("\nwarning: {w}"));
        }
        if !restart.is_empty() {
            msg.push_str(&format!(
                "\nnot applied until a restart: {}",
                restart.join(", ")
            ));
        }
        Ok(msg)
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.pipeline.stats()
    }

    /// Records written to the traffic log so far.
    pub fn log_records(&self) -> u64 {
        self.log.records()
    }

    /// Stops the workers and returns the final counters.
    pub fn shutdown(self) -> Stats {
        self.pipeline.shutdown()
    }
}

/// The Prometheus samples of a running [`Appliance`], read at scrape time.
pub struct Metrics(pub Arc<Appliance>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl MetricsSource for Metrics {
    fn samples(&self) -> Vec<Sample> {
        let stats = self.0.stats();
        let t = &stats.total;
        let mut out = vec![
            Sample::counter("frames", "Frames by data-plane path.", t.fast_frames)
                .label("path", "fast"),
            Sample::counter("frames", "Frames by data-plane path.", t.inscope_frames)
                .label("path", "in_scope"),
            Sample::counter("bytes", "Bytes by data-plane path.", t.fast_bytes)
                .label("path", "fast"),
            Sample::counter("bytes", "Bytes by data-plane path.", t.inscope_bytes)
                .label("path", "in_scope"),
            Sample::counter("rx_frames", "Frames received on lan and wan.", t.rx_frames),
            Sample::counter(
                "tx_frames",
                "Frames handed to a device for transmission.",
                t.tx_frames,
            ),
            Sample::counter(
                "tx_dropped",
                "Frames the kernel refused or dropped on transmit.",
                t.tx_dropped,
            ),
            Sample::counter(
                "tx_errors",
                "Transmit calls that failed unexpectedly.",
                t.tx_errors,
            ),
            Sample::counter(
                "malformed_frames",
                "Frames that failed to parse (forwarded unchanged).",
                t.malformed,
            ),
            Sample::counter("flows_started", "In-scope flows started.", t.flows_started),
            Sample::counter(
                "flows_ended",
                "In-scope flows ended and logged.",
                t.flows_ended,
            ),
            Sample::counter(
                "flow_overflow",
                "In-scope SYNs not tracked because the flow table was full.",
                t.flow_overflow,
            ),
            Sample::gauge(
                "flows_active",
                "Flows in the flow tables.",
                t.flows_active as f64,
            ),
            Sample::counter(
                "log_records",
                "Traffic-log records written.",
                self.0.log_records(),
            ),
        ];
        for (kind, v) in [
            ("arp", t.fast_arp),
            ("udp", t.fast_udp),
            ("icmp", t.fast_icmp),
            ("tcp", t.fast_tcp),
            ("vlan", t.fast_vlan),
            ("other", t.fast_other),
        ] {
            out.push(
                Sample::counter("fast_frames", "Fast-path frames by kind.", v).label("kind", kind),
            );
        }
        for (i, w) in stats.workers.iter().enumerate() {
            out.push(
                Sample::counter(
                    "worker_rx_frames",
                    "Frames received per worker.",
                    w.rx_frames,
                )
                .label("worker", i.to_string()),
            );
        }
        out
    }
}

/// Answers control-socket requests for a running [`Appliance`].
pub struct Control(pub Arc<Appliance>);

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

impl ControlHandler for Control {
    fn handle(&self, req: &Request) -> Response {
        match req {
            Request::Reload => match self.0.reload() {
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
                let mut r = Response::ok(format!("{:?}", self.0.stats()));
                r.data = serde_json::json!({
                    "config": self.0.path().display().to_string(),
                    "log_records": self.0.log_records(),
                });
                r
            }
        }
    }
}
