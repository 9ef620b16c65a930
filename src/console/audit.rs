//! The console's audit log: one JSON object per line for every change
//! (and every login), saying when, from where, what, and the policy before
//! and after.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::Context as _;
use serde_json::{json, Value};

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating it and its directory, mode 0600) the audit log.
    pub fn open(path: &Path) -> anyhow::Result<AuditLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("console: creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("console: opening the audit log {}", path.display()))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry. A failed write is logged, never fatal: the change
    /// it records has been made already.
    pub fn record(&self, from: IpAddr, action: &str, target: &str, before: Value, after: Value) {
        let entry = json!({
            "timestamp": crate::log::record::format_timestamp(SystemTime::now()),
            "from": from.to_string(),
            "user": "admin",
            "action": action,
            "target": target,
            "before": before,
            "after": after,
        });
        let mut line = entry.to_string();
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.sync_data()) {
            log::error!(
                "console: writing the audit log {}: {e}; entry: {}",
                self.path.display(),
                line.trim_end()
            );
        }
    }
}
