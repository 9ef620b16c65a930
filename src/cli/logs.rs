//! `tlsinspect logs`.

use std::process::ExitCode;

/// Runs `tlsinspect logs`.
pub fn run(args: &super::LogsArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("`tlsinspect logs` is not built yet")
}
