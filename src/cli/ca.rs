//! `tlsinspect ca ...`: create, show and export CA certificates.

use std::process::ExitCode;
use std::time::SystemTime;

use crate::pki;

/// Runs `tlsinspect ca trial`.
pub fn trial(out: &std::path::Path, key: super::CaKeyArg) -> anyhow::Result<ExitCode> {
    let kind = match key {
        super::CaKeyArg::EcdsaP256 => pki::KeyKind::EcdsaP256,
        super::CaKeyArg::Rsa2048 => pki::KeyKind::Rsa2048,
    };
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

/// Runs `tlsinspect ca export`.
pub fn export(
    config: &std::path::Path,
    policy: &str,
    out: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let _ = (config, policy, out);
    anyhow::bail!("`tlsinspect ca export` is not built yet")
}
