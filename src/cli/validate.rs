//! `tlsinspect validate`: check a configuration and print what it will do.
//!
//! The report is built as a `String` by [`render`] so tests can assert on it;
//! [`run`] only loads, prints and picks the exit status. The per-policy CA
//! status (subject, key type, validity) comes from the pki module through the
//! `ca_status` callback, so this file does not depend on how CAs are loaded.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{
    self, limits, thousands, Config, InvalidCertificate, IpsMode, Mode, OnDisable, PassOrBlock,
    PassOrInspect, Policy, Roots, Verdict,
};
use crate::pki::PolicyCa;

/// Lines describing a policy's CA, inserted into the policy's block of the report.
pub type CaStatus<'a> = &'a dyn Fn(&Policy) -> Vec<String>;

/// How many entries of a scope list are printed before "... and N more".
const SHOWN_ENTRIES: usize = 10;

/// Runs `tlsinspect validate --config FILE`: 0 and the report on stdout, or
/// 1 and every error on stderr.
pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = match config::load(config) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(fail(config, errors.len()));
        }
    };
    // CAs are loaded exactly as `run` will load them, so a config that
    // validates also starts.
    let now = std::time::SystemTime::now();
    let mut summaries = std::collections::HashMap::new();
    let mut ca_errors = Vec::new();
    let mut ca_warnings = Vec::new();
    for p in cfg.policies.iter() {
        match PolicyCa::load(&p.ca_cert, &p.ca_key, &p.ca_chain, now) {
            Ok(ca) => {
                let summary = ca.summary();
                for w in &summary.warnings {
                    ca_warnings.push(format!("policy {:?}: CA: {w}", &*p.id));
                }
                summaries.insert(p.id.clone(), summary);
            }
            Err(e) => ca_errors.push(format!(
                "{}: policy {:?}: CA: {e}",
                cfg.path.display(),
                &*p.id
            )),
        }
    }
    if !ca_errors.is_empty() {
        for e in &ca_errors {
            eprintln!("{e}");
        }
        return Ok(fail(config, ca_errors.len()));
    }
    // Everything else `run` builds from the file (upstream roots, SNI
    // exclusions, IPS rules, app signatures) is built here the same way.
    let ips_report;
    match crate::appliance::build::Built::from_config(&cfg, now) {
        Ok(built) => {
            ips_report = Some(built.ips_report.clone());
            for w in built.warnings {
                if !ca_warnings.contains(&w) && !w.contains(": CA") {
                    ca_warnings.push(w);
                }
            }
        }
        Err(e) => {
            eprintln!("{}: {e:#}", cfg.path.display());
            return Ok(fail(config, 1));
        }
    }
    let ca_status = |p: &Policy| -> Vec<String> {
        match summaries.get(&p.id) {
            Some(s) => vec![
                format!("CA: {} ({})", s.subject, s.key_type),
                format!(
                    "CA validity: {} .. {} ({} days left)",
                    s.not_before,
                    s.not_after,
                    thousands(s.days_left.max(0) as u64)
                ),
            ],
            None => Vec::new(),
        }
    };
    print!("{}", render_report(&cfg, Some(&ca_status), &ca_warnings));
    if let Some(r) = &ips_report {
        print!("{}", render_ips(r));
    }
    Ok(ExitCode::SUCCESS)
}

/// The IPS rule files: loaded and skipped-by-keyword per file, and the matcher.
pub fn render_ips(r: &crate::inspect::LoadReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ips rules: {} loaded, {} skipped; prefilter {}",
        thousands(r.loaded as u64),
        thousands(r.skipped.len() as u64),
        crate::inspect::ips::MATCHER
    );
    for f in &r.files {
        let total = f.loaded + f.skipped_total();
        let pct = if total == 0 {
            100.0
        } else {
            100.0 * f.loaded as f64 / total as f64
        };
        let _ = writeln!(
            o,
            "  {}: {} of {} loaded ({pct:.1} %)",
            f.path,
            thousands(f.loaded as u64),
            thousands(total as u64)
        );
        for (k, n) in &f.skipped {
            let _ = writeln!(o, "    skipped {}: {k}", thousands(*n as u64));
        }
    }
    for e in &r.file_errors {
        let _ = writeln!(o, "  {e}");
    }
    o
}

fn fail(config: &Path, n: usize) -> ExitCode {
    eprintln!(
        "{}: {} error{}; the configuration is not valid",
        config.display(),
        thousands(n as u64),
        if n == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

fn pass_or_inspect(v: PassOrInspect) -> &'static str {
    match v {
        PassOrInspect::Passthrough => "passthrough",
        PassOrInspect::Inspect => "inspect",
    }
}

fn pass_or_block(v: PassOrBlock) -> &'static str {
    match v {
        PassOrBlock::Passthrough => "passthrough",
        PassOrBlock::Block => "block",
    }
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
    }
}

fn list<T: ToString>(items: &[T]) -> String {
    let mut parts: Vec<String> = items
        .iter()
        .take(SHOWN_ENTRIES)
        .map(ToString::to_string)
        .collect();
    if items.len() > SHOWN_ENTRIES {
        parts.push(format!(
            "... and {} more",
            thousands((items.len() - SHOWN_ENTRIES) as u64)
        ));
    }
    if parts.is_empty() {
        "(none)".to_string()
    } else {
        parts.join(", ")
    }
}

fn paths(items: &[std::path::PathBuf]) -> String {
    let shown: Vec<String> = items.iter().map(|p| p.display().to_string()).collect();
    list(&shown)
}

/// Renders the report of a valid configuration: appliance, upstream, each
/// policy with its settings, CA status (from `ca_status`, if given) and scopes,
/// the quota per scope, per policy and in total, the engines and the warnings.
pub fn render(cfg: &Config, ca_status: Option<CaStatus<'_>>) -> String {
    render_report(cfg, ca_status, &[])
}

/// Like [`render`], with more warnings (e.g. a CA with less than a year left)
/// listed after the configuration's own.
pub fn render_report(
    cfg: &Config,
    ca_status: Option<CaStatus<'_>>,
    extra_warnings: &[String],
) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(o, "configuration: {} (valid)", cfg.path.display());
    let a = &cfg.appliance;
    let mode = match a.mode {
        Mode::AfPacket => "af_packet",
        Mode::Tun => "tun",
        Mode::Geneve => "geneve",
    };
    let _ = writeln!(
        o,
        "appliance: mode {mode}, lan {}, wan {}, cpus [{}] ({} worker{}), max_flows {}",
        a.lan,
        if a.wan.is_empty() { "-" } else { &a.wan },
        a.cpus
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        a.cpus.len(),
        if a.cpus.len() == 1 { "" } else { "s" },
        thousands(a.max_flows as u64)
    );
    let _ = writeln!(
        o,
        "  log {}, control {}, metrics {}",
        a.log.display(),
        a.control.display(),
        a.metrics
            .map_or_else(|| "off".to_string(), |m| m.to_string())
    );
    if a.mode == Mode::Geneve || a.health.is_some() {
        let _ = writeln!(
            o,
            "  health {}, SIGTERM drains {} s (geneve mode only)",
            a.health
                .map_or_else(|| "off".to_string(), |h| h.to_string()),
            a.drain.as_secs()
        );
    }
    let _ = writeln!(
        o,
        "  flow_idle_timeout {} s, tcp_buffer {} bytes, cert_cache {} entries, bypass_cache {} entries, pinning_bypass_clients {}",
        thousands(a.flow_idle_timeout.as_secs()),
        thousands(a.tcp_buffer_bytes as u64),
        thousands(a.cert_cache_entries as u64),
        thousands(a.bypass_cache_entries as u64),
        a.pinning_bypass_clients
    );
    let u = &cfg.upstream;
    let _ = writeln!(
        o,
        "upstream: roots {}, extra_roots {}, invalid_certificate {}",
        match &u.roots {
            Roots::System => "system".to_string(),
            Roots::Bundle(p) => p.display().to_string(),
        },
        paths(&u.extra_roots),
        match u.invalid_certificate {
            InvalidCertificate::Untrusted => "untrusted",
            InvalidCertificate::Block => "block",
        }
    );

    for p in cfg.policies.iter() {
        o.push('\n');
        render_policy(&mut o, p, ca_status);
    }

    let _ = writeln!(
        o,
        "\nquota: {} of {} ({} polic{}, {} scope{})",
        thousands(cfg.quota()),
        thousands(limits::MAX_TOTAL_QUOTA),
        cfg.policies.len(),
        if cfg.policies.len() == 1 { "y" } else { "ies" },
        cfg.scopes().count(),
        if cfg.scopes().count() == 1 { "" } else { "s" }
    );

    let _ = writeln!(
        o,
        "ips: mode {}, rules {}",
        match cfg.ips.mode {
            IpsMode::Detect => "detect",
            IpsMode::Prevent => "prevent",
        },
        paths(&cfg.ips.rules)
    );
    let _ = writeln!(
        o,
        "webfilter: {} rule{} (first match wins, default allow)",
        cfg.webfilter.len(),
        if cfg.webfilter.len() == 1 { "" } else { "s" }
    );
    for (i, r) in cfg.webfilter.iter().enumerate() {
        let methods = if r.methods.is_empty() {
            "any method".to_string()
        } else {
            r.methods.join(",")
        };
        let _ = writeln!(
            o,
            "  #{} {} {} host {} path {}",
            i + 1,
            verdict(r.action),
            methods,
            r.host,
            r.path
        );
    }
    let _ = writeln!(
        o,
        "appcontrol: signatures {}, {} rule{} (first match wins, default allow)",
        cfg.appcontrol
            .signatures
            .as_ref()
            .map_or_else(|| "built-in".to_string(), |p| p.display().to_string()),
        cfg.appcontrol.rules.len(),
        if cfg.appcontrol.rules.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    for (i, r) in cfg.appcontrol.rules.iter().enumerate() {
        let _ = writeln!(
            o,
            "  #{} {} {}/{}",
            i + 1,
            verdict(r.verdict),
            r.app,
            r.action.as_deref().unwrap_or("*")
        );
    }

    let mut warnings = cfg.warnings();
    warnings.extend(host_warnings(cfg));
    warnings.extend(extra_warnings.iter().cloned());
    if warnings.is_empty() {
        let _ = writeln!(o, "\nwarnings: none");
    } else {
        let _ = writeln!(o, "\nwarnings ({}):", warnings.len());
        for w in &warnings {
            let _ = writeln!(o, "  - {w}");
        }
    }
    o
}

fn render_policy(o: &mut String, p: &Policy, ca_status: Option<CaStatus<'_>>) {
    let _ = writeln!(
        o,
        "policy \"{}\" ({}): {}",
        p.id,
        p.name,
        if p.enabled { "enabled" } else { "DISABLED" }
    );
    if !p.description.is_empty() {
        let _ = writeln!(o, "  description: {}", p.description);
    }
    let _ = writeln!(
        o,
        "  settings: tls13 {}, ech {}, legacy_tls {}, no_sni {}, non_tls {}, on_disable {}",
        pass_or_inspect(p.tls13),
        pass_or_inspect(p.ech),
        pass_or_block(p.legacy_tls),
        pass_or_inspect(p.no_sni),
        pass_or_block(p.non_tls),
        match p.on_disable {
            OnDisable::Interrupt => "interrupt",
            OnDisable::Drain => "drain",
        }
    );
    let _ = writeln!(o, "  exclude_sni: {}", list(&p.exclude_sni));
    let _ = writeln!(o, "  ca_cert: {}", p.ca_cert.display());
    let _ = writeln!(o, "  ca_key: {}", p.ca_key.display());
    let _ = writeln!(o, "  ca_chain: {}", paths(&p.ca_chain));
    if let Some(ca) = ca_status {
        for line in ca(p) {
            let _ = writeln!(o, "  {line}");
        }
    }
    for s in &p.scopes {
        let _ = write!(o, "  scope #{} \"{}\"", s.index, s.id);
        if s.description.is_empty() {
            o.push('\n');
        } else {
            let _ = writeln!(o, ": {}", s.description);
        }
        let _ = writeln!(o, "    protocol: tcp");
        let _ = writeln!(
            o,
            "    source_ips ({}): {}",
            s.source_ips.len(),
            list(&s.source_ips)
        );
        let _ = writeln!(
            o,
            "    source_ports ({}): {}",
            s.source_ports.len(),
            list(&s.source_ports)
        );
        let _ = writeln!(
            o,
            "    destinations ({}): {}",
            s.destinations.len(),
            list(&s.destinations)
        );
        let _ = writeln!(
            o,
            "    destination_ports ({}): {}",
            s.destination_ports.len(),
            list(&s.destination_ports)
        );
        let _ = writeln!(
            o,
            "    quota: {} x {} x {} x {} = {}",
            thousands(s.source_ips.len() as u64),
            s.source_ports.len(),
            s.destinations.len(),
            s.destination_ports.len(),
            thousands(s.quota())
        );
    }
    let _ = writeln!(
        o,
        "  policy quota: {} ({} scope{})",
        thousands(p.quota()),
        p.scopes.len(),
        if p.scopes.len() == 1 { "" } else { "s" }
    );
}

/// Warnings about this machine rather than the file: cores that do not exist.
fn host_warnings(cfg: &Config) -> Vec<String> {
    let Ok(n) = std::thread::available_parallelism() else {
        return Vec::new();
    };
    cfg.appliance
        .cpus
        .iter()
        .filter(|&&c| c >= n.get())
        .map(|c| {
            format!(
                "appliance.cpus lists core {c}, but this machine offers {} core{} to tlsinspect",
                n.get(),
                if n.get() == 1 { "" } else { "s" }
            )
        })
        .collect()
}
