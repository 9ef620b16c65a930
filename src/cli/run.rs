//! `tlsinspect run`.

use std::process::ExitCode;

/// Runs `tlsinspect run`.
pub fn run(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let _ = config;
    anyhow::bail!("`tlsinspect run` is not built yet")
}
