//! `tlsinspect ca trial`.

use std::process::ExitCode;

/// Runs `tlsinspect ca trial`.
pub fn trial(out: &std::path::Path, key: super::CaKeyArg) -> anyhow::Result<ExitCode> {
    let _ = (out, key);
    anyhow::bail!("`tlsinspect ca trial` is not built yet")
}

/// Runs `tlsinspect ca show`.
pub fn show(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let _ = file;
    anyhow::bail!("`tlsinspect ca show` is not built yet")
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
