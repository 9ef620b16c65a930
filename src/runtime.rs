//! A validated config turned into what the data plane runs on: its scope
//! table, its pipeline settings, the restart-only settings a reload cannot
//! change. Starting and reloading live in [`crate::appliance`].
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
use tlsinspect_pipeline::{DeviceMode, KernelFastPathMode, PipelineConfig, Stats};

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
        Mode::Geneve => DeviceMode::Geneve {
            iface: a.lan.clone(),
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
        kernel_fast_path: match a.kernel_fast_path {
            config::KernelFastPath::Auto => KernelFastPathMode::Auto,
            config::KernelFastPath::Off => KernelFastPathMode::Off,
        },
        release_passed_flows: a.release_passed_flows,
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
    type Show = fn(&config::Appliance) -> String;
    const FIELDS: [(&str, Show); 18] = [
        ("mode", |a| format!("{:?}", a.mode)),
        ("lan", |a| a.lan.clone()),
        ("wan", |a| a.wan.clone()),
        ("cpus", |a| format!("{:?}", a.cpus)),
        ("max_flows", |a| a.max_flows.to_string()),
        ("flow_idle_timeout", |a| {
            format!("{:?}", a.flow_idle_timeout)
        }),
        ("max_intercept_memory", |a| {
            a.max_intercept_memory.to_string()
        }),
        ("max_half_open", |a| a.max_half_open.to_string()),
        ("kernel_fast_path", |a| format!("{:?}", a.kernel_fast_path)),
        ("release_passed_flows", |a| {
            a.release_passed_flows.to_string()
        }),
        ("tcp_buffer_bytes", |a| a.tcp_buffer_bytes.to_string()),
        ("bypass_cache_entries", |a| {
            a.bypass_cache_entries.to_string()
        }),
        ("pinning_bypass_clients", |a| {
            a.pinning_bypass_clients.to_string()
        }),
        ("log", |a| a.log.display().to_string()),
        ("control", |a| a.control.display().to_string()),
        ("metrics", |a| format!("{:?}", a.metrics)),
        ("health", |a| format!("{:?}", a.health)),
        ("drain_secs", |a| a.drain.as_secs().to_string()),
    ];
    let mut out: Vec<String> = FIELDS
        .iter()
        .filter_map(|(name, show)| {
            let (a, b) = (show(&old.appliance), show(&new.appliance));
            (a != b).then(|| format!("appliance.{name}: {a} -> {b}"))
        })
        .collect();
    for (changed, section) in [
        (old.capture != new.capture, "[capture]"),
        (old.faults != new.faults, "[faults]"),
        (old.outputs != new.outputs, "[[output]]"),
    ] {
        if changed {
            out.push(format!("{section}: changed"));
        }
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
