//! `tlsinspect validate`.

use std::process::ExitCode;

/// Runs `tlsinspect validate`.
pub fn run(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let _ = config;
    anyhow::bail!("`tlsinspect validate` is not built yet")
}
