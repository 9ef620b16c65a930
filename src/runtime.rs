//! The running appliance: a validated config turned into what the data plane
//! runs on, the pipeline started, reloads applied.
//!
//! The config types and the pipeline's types are kept apart on purpose (the
//! pipeline knows nothing of TOML, policies or CAs); this module is the one
//! place that translates between them, so `run`, reload over SIGHUP and
//! reload over the control socket all compile scopes the same way.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use tlsinspect_pipeline::classify::{ScopeSpec, ScopeTable};
use tlsinspect_pipeline::{DeviceMode, PipelineConfig, Stats};

use crate::config::{self, Config, Mode};

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
        faults: cfg.faults,
        max_intercept_memory: a.max_intercept_memory,
        max_half_open: a.max_half_open,
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

/// Settings that only take effect on a restart, as `name: old -> new`;
/// `old` is the configuration the process started with.
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
        "max_intercept_memory",
        o.max_intercept_memory.to_string(),
        n.max_intercept_memory.to_string(),
    );
    cmp(
        "max_half_open",
        o.max_half_open.to_string(),
        n.max_half_open.to_string(),
    );
    cmp(
        "tcp_buffer_bytes",
        o.tcp_buffer_bytes.to_string(),
        n.tcp_buffer_bytes.to_string(),
    );
    cmp(
        "bypass_cache_entries",
        o.bypass_cache_entries.to_string(),
        n.bypass_cache_entries.to_string(),
    );
    cmp(
        "pinning_bypass_clients",
        o.pinning_bypass_clients.to_string(),
        n.pinning_bypass_clients.to_string(),
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
    if old.capture != new.capture {
        out.push("[capture]: changed".into());
    }
    if old.faults != new.faults {
        out.push("[faults]: changed".into());
    }
    if old.outputs != new.outputs {
        out.push("[[output]]: changed".into());
    }
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
