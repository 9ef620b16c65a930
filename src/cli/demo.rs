//! `tlsinspect demo`.

use std::process::ExitCode;

/// Runs `tlsinspect demo`.
pub fn run(keep: bool) -> anyhow::Result<ExitCode> {
    let _ = keep;
    anyhow::bail!("`tlsinspect demo` is not built yet")
}
