//! Config types mapped onto the control-plane objects the data plane uses.
//!
//! Each mapping is a small pure-ish function so it can be unit-tested on its
//! own; [`Built::from_config`] runs them all and is the single definition of
//! "this config is good enough to run", shared by start-up and reload.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use tlsinspect_pipeline::classify::ScopeTable;
use tlsinspect_pipeline::tls::bypass::BypassConfig;
use tlsinspect_pipeline::tls::decision::{PassOrBlock, PassOrInspect, TlsPolicy};
use tlsinspect_pipeline::tls::pair::{InvalidCertPolicy, UpstreamTls};

use crate::config::{self, Config, Policy, Roots};
use crate::inspect::{self, AppControl, AppTable, Engines, LoadReport, Ruleset, Vars, WebFilter};
use crate::pki::{CaSummary, Minter, PolicyCa};

/// The application signatures shipped with the binary, used when
/// `[appcontrol] signatures` is not set (the same file as `configs/apps.toml`).
pub const SHIPPED_APPS: &str = include_str!("../../configs/apps.toml");

/// How long a learned bypass entry lives.
pub const BYPASS_TTL: Duration = Duration::from_secs(3600);

/// One loaded policy CA with what start-up and metrics report about it.
#[derive(Debug, Clone)]
pub struct LoadedCa {
    /// Policy id.
    pub policy: Arc<str>,
    /// The CA, ready to sign.
    pub ca: Arc<PolicyCa>,
    /// Subject, validity and warnings.
    pub summary: CaSummary,
    /// Earliest notAfter of the CA and its chain, Unix seconds, so days
    /// left can be computed at scrape time.
    pub not_after_unix: i64,
}

/// Every control-plane object built from one config.
#[derive(Debug)]
pub struct Built {
    /// CAs of the policies that loaded, in config order.
    pub cas: Vec<LoadedCa>,
    /// The leaf minter over those CAs.
    pub minter: Minter,
    /// Server-leg trust and the invalid-certificate policy.
    pub upstream: Arc<UpstreamTls>,
    /// Number of trust anchors in `upstream`.
    pub root_count: usize,
    /// Decision settings per policy id (every policy, enabled or not).
    pub tls_policies: HashMap<Arc<str>, Arc<TlsPolicy>>,
    /// The inspection engines.
    pub engines: Arc<Engines>,
    /// What the IPS rule loader reported.
    pub ips_report: LoadReport,
    /// The compiled scopes of the enabled policies.
    pub scopes: Arc<ScopeTable>,
    /// Things the operator should know that do not stop the appliance.
    pub warnings: Vec<String>,
}

impl Built {
    /// Builds everything `cfg` describes; fails (naming policy, file and
    /// field) on anything that would make the appliance run wrongly.
    ///
    /// Broken or unsupported IPS rules are warnings: the other rules load.
    pub fn from_config(cfg: &Config, now: SystemTime) -> anyhow::Result<Built> {
        let mut warnings = Vec::new();
        let cas = load_cas(cfg, now, &mut warnings)?;
        let minter = Minter::new(
            cas.iter()
                .map(|c| (c.policy.clone(), c.ca.clone()))
                .collect(),
            cfg.appliance.cert_cache_entries,
        )
        .context("creating the certificate minter")?;
        let (roots, root_warnings) = upstream_roots(&cfg.upstream)?;
        warnings.extend(root_warnings);
        let root_count = roots.len();
        let crls = upstream_crls(&cfg.upstream)?;
        let mut upstream =
            UpstreamTls::with_crls(Arc::new(roots), crls, invalid_cert_policy(&cfg.upstream))
                .map_err(|e| anyhow::anyhow!("[upstream]: {e}"))?;
        for p in cfg.policies.iter() {
            if let Some(path) = &p.keylog {
                let k = crate::log::keylog::KeyLogFile::open(path)
                    .map_err(|e| anyhow::anyhow!("policy {:?}: keylog: opening {e}", &*p.id))?;
                upstream = upstream.with_keylog(p.id.clone(), Arc::new(k));
            }
        }
        let mut tls_policies = HashMap::new();
        for p in cfg.policies.iter() {
            tls_policies.insert(p.id.clone(), Arc::new(tls_policy(p)));
        }
        let (engines, ips_report) = engines(cfg)?;
        warnings.extend(
            ips_report
                .problems()
                .into_iter()
                .map(|p| format!("[ips] {p}")),
        );
        Ok(Built {
            cas,
            minter,
            upstream: Arc::new(upstream),
            root_count,
            tls_policies,
            engines: Arc::new(engines),
            ips_report,
            scopes: crate::runtime::compile_scopes(cfg),
            warnings,
        })
    }
}

/// Loads the CAs: an enabled policy's CA must load; a disabled policy's CA
/// that fails only warns (it is checked again when the policy is enabled,
/// because enabling reloads).
fn load_cas(
    cfg: &Config,
    now: SystemTime,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<LoadedCa>> {
    let mut out = Vec::new();
    for p in cfg.policies.iter() {
        let ca = match PolicyCa::load(&p.ca_cert, &p.ca_key, &p.ca_chain, now) {
            Ok(ca) => ca,
            Err(e) if p.enabled => bail!(
                "policy {:?}: its CA (ca_cert {}, ca_key {}) does not load: {e}",
                p.id,
                p.ca_cert.display(),
                p.ca_key.display()
            ),
            Err(e) => {
                warnings.push(format!(
                    "policy {:?} is disabled and its CA (ca_cert {}) does not load: {e}; \
                     enabling it will be refused until this is fixed",
                    p.id,
                    p.ca_cert.display()
                ));
                continue;
            }
        };
        let summary = ca.summary();
        for w in &summary.warnings {
            warnings.push(format!(
                "policy {:?}: CA {} ({}): {w}",
                p.id,
                summary.subject,
                p.ca_cert.display()
            ));
        }
        // The earliest notAfter of the CA and its chain: the day forged
        // chains stop verifying.
        let not_after_unix = unix(ca.valid_until());
        out.push(LoadedCa {
            policy: p.id.clone(),
            ca: Arc::new(ca),
            summary,
            not_after_unix,
        });
    }
    Ok(out)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The decision settings of one policy (DESIGN.md §4).
pub fn tls_policy(p: &Policy) -> TlsPolicy {
    let pass_or_block = |v: config::PassOrBlock| match v {
        config::PassOrBlock::Passthrough => PassOrBlock::Pass,
        config::PassOrBlock::Block => PassOrBlock::Block,
    };
    let pass_or_inspect = |v: config::PassOrInspect| match v {
        config::PassOrInspect::Passthrough => PassOrInspect::Pass,
        config::PassOrInspect::Inspect => PassOrInspect::Inspect,
    };
    TlsPolicy {
        non_tls: pass_or_block(p.non_tls),
        ech: pass_or_inspect(p.ech),
        exclude_sni: p.exclude_sni.clone(),
        legacy_tls: pass_or_block(p.legacy_tls),
        tls13: pass_or_inspect(p.tls13),
        no_sni: pass_or_inspect(p.no_sni),
        on_overload: pass_or_block(p.on_overload),
    }
}

/// `[upstream] invalid_certificate`.
pub fn invalid_cert_policy(u: &config::Upstream) -> InvalidCertPolicy {
    match u.invalid_certificate {
        config::InvalidCertificate::Untrusted => InvalidCertPolicy::Untrusted,
        config::InvalidCertificate::Block => InvalidCertPolicy::Block,
    }
}

/// Reads every certificate of a PEM file; an empty file is an error.
fn pem_certs(path: &Path, field: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("[upstream] {field} {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "[upstream] {field} {}: no PEM certificate in the file",
            path.display()
        );
    }
    Ok(certs)
}

/// The CRLs of `[upstream] crls`: each entry a PEM file or a glob of the
/// file name (`crl/*.pem`); every matched file must hold at least one CRL.
pub fn upstream_crls(
    u: &config::Upstream,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateRevocationListDer;
    let mut out = Vec::new();
    for entry in &u.crls {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let files: Vec<std::path::PathBuf> = if name.contains(['*', '?']) {
            let dir = entry.parent().unwrap_or(Path::new("."));
            let glob = wildmatch::WildMatch::new(name);
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| anyhow::anyhow!("[upstream] crls {}: {e}", entry.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| glob.matches(n))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("[upstream] crls {}: matches no file", entry.display());
            }
            files
        } else {
            vec![entry.clone()]
        };
        for f in files {
            let crls = CertificateRevocationListDer::pem_file_iter(&f)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("[upstream] crls {}: {e}", f.display()))?;
            if crls.is_empty() {
                bail!(
                    "[upstream] crls {}: no PEM X509 CRL in the file",
                    f.display()
                );
            }
            out.extend(crls);
        }
    }
    Ok(out)
}

/// Adds `certs` to `store`; a certificate that is not a usable trust anchor
/// is an error naming the file.
fn add_all(
    store: &mut RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    path: &Path,
    field: &str,
) -> anyhow::Result<()> {
    let (_, bad) = store.add_parsable_certificates(certs);
    if bad > 0 {
        bail!(
            "[upstream] {field} {}: {bad} certificate(s) are not usable trust anchors",
            path.display()
        );
    }
    Ok(())
}

/// The server-leg trust anchors of `[upstream]`, with warnings.
///
/// `roots = "system"` reads the operating system's store; only when that is
/// empty (a minimal container) are the bundled Mozilla roots used, with a
/// warning, so an appliance never silently trusts a different set than the
/// host it runs on.
pub fn upstream_roots(u: &config::Upstream) -> anyhow::Result<(RootCertStore, Vec<String>)> {
    let mut store = RootCertStore::empty();
    let mut warnings = Vec::new();
    match &u.roots {
        Roots::System => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                warnings.push(format!("[upstream] roots = \"system\": {e}"));
            }
            let (good, _bad) = store.add_parsable_certificates(native.certs);
            if good == 0 {
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                warnings.push(format!(
                    "[upstream] roots = \"system\": the system trust store is empty; \
                     using the {} Mozilla roots built into tlsinspect instead",
                    store.len()
                ));
            }
        }
        Roots::Bundle(path) => {
            let certs = pem_certs(path, "roots")?;
            add_all(&mut store, certs, path, "roots")?;
        }
    }
    for path in &u.extra_roots {
        let certs = pem_certs(path, "extra_roots")?;
        add_all(&mut store, certs, path, "extra_roots")?;
    }
    Ok((store, warnings))
}

/// The bypass cache settings of `[appliance]`.
pub fn bypass_config(a: &config::Appliance) -> BypassConfig {
    BypassConfig {
        capacity: a.bypass_cache_entries,
        ttl: BYPASS_TTL,
        pinning_clients: a.pinning_bypass_clients,
    }
}

/// Suricata's vars for the rules: `[ips.address_groups]` / `[ips.port_groups]`
/// over Suricata's defaults, where the default `HOME_NET` is RFC 1918 plus
/// every source address the policies' scopes select (their clients are the
/// home network whatever addresses they have).
pub fn ips_vars(cfg: &Config) -> anyhow::Result<Vars> {
    let mut home: Vec<ipnet::IpNet> = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    for p in cfg.policies.iter() {
        for s in &p.scopes {
            home.extend(s.source_ips.iter().map(|ip| ipnet::IpNet::from(*ip)));
        }
    }
    let home = ipnet::IpNet::aggregate(&home);
    let list: Vec<String> = home.iter().map(|n| n.to_string()).collect();
    Vars::with_groups(
        Some(format!("[{}]", list.join(","))),
        &cfg.ips.address_groups,
        &cfg.ips.port_groups,
    )
    .map_err(|e| {
        let (kind, name, why) = &e[0];
        anyhow::anyhow!("[ips.{kind}] {name} = {why}")
    })
}

/// The inspection engines of `[ips]`, `[[webfilter.rule]]` and `[appcontrol]`.
///
/// Rule problems come back in the report; only an unreadable or invalid
/// app-signature file is an error (there is no sensible partial table).
pub fn engines(cfg: &Config) -> anyhow::Result<(Engines, LoadReport)> {
    let verdict = |v: config::Verdict| match v {
        config::Verdict::Allow => inspect::Verdict::Allow,
        config::Verdict::Deny => inspect::Verdict::Deny,
    };
    let webfilter = WebFilter::new(
        cfg.webfilter
            .iter()
            .map(|r| inspect::WebRule {
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                verdict: verdict(r.action),
            })
            .collect(),
    );
    let apps = match &cfg.appcontrol.signatures {
        Some(path) => AppTable::load(path)
            .with_context(|| format!("[appcontrol] signatures {}", path.display()))?,
        None => AppTable::from_toml(SHIPPED_APPS, "<built-in configs/apps.toml>")
            .context("the built-in application signatures")?,
    };
    let appcontrol = AppControl::new(
        cfg.appcontrol
            .rules
            .iter()
            .map(|r| inspect::AppRule {
                app: r.app.clone(),
                action: r.action.clone().unwrap_or_else(|| "*".to_owned()),
                verdict: verdict(r.verdict),
            })
            .collect(),
    );
    let (ruleset, report) = Ruleset::load_files(&cfg.ips.rules, &ips_vars(cfg)?);
    let mode = match cfg.ips.mode {
        config::IpsMode::Detect => inspect::Mode::Detect,
        config::IpsMode::Prevent => inspect::Mode::Prevent,
    };
    Ok((
        Engines::new(webfilter, apps, appcontrol, Arc::new(ruleset), mode),
        report,
    ))
}
