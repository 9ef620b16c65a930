//! `tlsinspect logs`: query a traffic log.

use std::fs::File;
use std::io::{BufReader, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;

use crate::log::query::{scan, table_row, Filter};

/// Runs `tlsinspect logs`.
pub fn run(args: &super::LogsArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter::new(
        args.policy.as_deref(),
        args.scope.as_deref(),
        args.action.as_deref(),
        args.sni.as_deref(),
        args.since.as_deref(),
        SystemTime::now(),
    )?;
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let result = scan(BufReader::new(file), &filter)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for rec in &result.records {
        if args.json {
            writeln!(out, "{rec}")?;
        } else {
            writeln!(out, "{}", table_row(rec))?;
        }
    }
    if !result.malformed_lines.is_empty() {
        let shown: Vec<String> = result
            .malformed_lines
            .iter()
            .take(10)
            .map(usize::to_string)
            .collect();
        eprintln!(
            "tlsinspect: {}: {} line(s) are not JSON records and were skipped (lines {}{})",
            args.file.display(),
            result.malformed_lines.len(),
            shown.join(", "),
            if result.malformed_lines.len() > 10 {
                ", ..."
            } else {
                ""
            }
        );
    }
    if !args.json {
        eprintln!("{} record(s)", result.records.len());
    }
    Ok(ExitCode::SUCCESS)
}
