//! `tlsinspect ca ...`: create, show and export CA certificates.

use std::process::ExitCode;
use std::time::SystemTime;

use crate::pki;

/// Runs `tlsinspect ca trial`.
pub fn trial(out: &std::path::Path, kind: pki::KeyKind) -> anyhow::Result<ExitCode> {
    let (cert, key) = pki::trial::create(out, kind, SystemTime::now())?;
    println!("created a trial CA unique to this install:");
    println!("  certificate: {}", cert.display());
    println!(
        "  private key: {} (mode 0600; keep it secret)",
        key.display()
    );
    println!();
    print!("{}", pki::show::describe_file(&cert, SystemTime::now())?);
    println!();
    println!(
        "Use it in a policy with ca_cert = \"{}\" and ca_key = \"{}\",",
        cert.display(),
        key.display()
    );
    println!(
        "and install {} in the clients' trust stores (see README).",
        cert.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `tlsinspect ca show`.
pub fn show(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    print!("{}", pki::show::describe_file(file, SystemTime::now())?);
    Ok(ExitCode::SUCCESS)
}

/// Runs `tlsinspect ca export`: writes the policy's CA chain for installing in clients.
pub fn export(
    config: &std::path::Path,
    policy: &str,
    out: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let cfg = match crate::config::load(config) {
        Ok(cfg) => cfg,
        Err(errors) => anyhow::bail!("{errors}"),
    };
    let Some(p) = cfg.policies.iter().find(|p| &*p.id == policy) else {
        let known: Vec<&str> = cfg.policies.iter().map(|p| &*p.id).collect();
        anyhow::bail!(
            "{}: no policy with id {policy:?} (policies: {})",
            config.display(),
            known.join(", ")
        );
    };
    let ca = pki::PolicyCa::load(&p.ca_cert, &p.ca_key, &p.ca_chain, SystemTime::now())
        .map_err(|e| anyhow::anyhow!("{}: policy {policy}: {e}", config.display()))?;
    for w in ca.summary().warnings {
        eprintln!("warning: policy {policy}: {w}");
    }
    let files = pki::export::export_chain(&ca, out)?;
    println!(
        "exported the CA chain of policy {policy} ({}):",
        ca.summary().subject
    );
    for f in &files {
        println!("  {}", f.display());
    }
    println!();
    println!("Install the .crt files (one certificate each) in the clients' trust stores,");
    println!(
        "or {} where a bundle is accepted; see README.",
        pki::export::BUNDLE_FILE
    );
    Ok(ExitCode::SUCCESS)
}
