//! The per-policy key log: TLS secrets of both legs in the NSS key log
//! format (what `SSLKEYLOGFILE` holds), so that Wireshark or tshark can
//! decrypt a capture of either leg (DESIGN.md §11).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An append-only key log file, mode 0600.
pub struct KeyLogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl std::fmt::Debug for KeyLogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLogFile")
            .field("path", &self.path)
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl KeyLogFile {
    /// Opens (creating it and its directory) the key log at `path`; an
    /// existing file is narrowed to mode 0600.
    pub fn open(path: &Path) -> io::Result<KeyLogFile> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(ctx)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(ctx)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(ctx)?;
        Ok(KeyLogFile {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = format!("{label} {} {}\n", hex(client_random), hex(secret));
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            log::warn!("key log {}: {e}", self.path.display());
        }
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::KeyLog;

    #[test]
    fn writes_nss_lines_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/pol.keys");
        let k = KeyLogFile::open(&path).unwrap();
        k.log("CLIENT_TRAFFIC_SECRET_0", &[0xab; 32], &[0x01, 0x02]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("CLIENT_TRAFFIC_SECRET_0 {} 0102\n", "ab".repeat(32))
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
