//! `tlsinspect policy`.

use std::process::ExitCode;

/// Runs `tlsinspect policy`.
pub fn run(cmd: super::PolicyCommand) -> anyhow::Result<ExitCode> {
    let _ = cmd;
    anyhow::bail!("`tlsinspect policy` is not built yet")
}

/// Runs `tlsinspect reload`.
pub fn reload(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let _ = config;
    anyhow::bail!("`tlsinspect reload` is not built yet")
}
