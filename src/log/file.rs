//! The traffic-log file sink: appends JSON lines, rotates by size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use tlsinspect_pipeline::api::{Alert, FlowLog, FlowMeta, FlowRecord};

use super::record;

/// When and how far the log is rotated.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// Rotate once the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`log.1` .. `log.N`).
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 256 * 1024 * 1024,
            keep: 5,
        }
    }
}

struct Inner {
    file: File,
    size: u64,
}

/// A [`FlowLog`] writing JSON lines to a file.
///
/// Each record is serialized outside the lock and written with a single
/// `write_all` of a complete line, so concurrent workers never interleave
/// partial lines and a reader (`tail -f`, `tlsinspect logs`) always sees
/// whole records. Write errors are counted, never propagated into the data
/// plane: a full disk must not stop traffic.
pub struct JsonLog {
    path: PathBuf,
    rotation: Rotation,
    inner: Mutex<Inner>,
    write_errors: AtomicU64,
    records: AtomicU64,
}

impl std::fmt::Debug for JsonLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLog").field("path", &self.path).finish()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl JsonLog {
    /// Opens (creating it and its directory if needed) the log at `path`.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<JsonLog> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                fs::create_dir_all(dir).map_err(|e| {
                    io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
                })?;
            }
        }
        let file = open_append(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(JsonLog {
            path: path.to_path_buf(),
            rotation,
            inner: Mutex::new(Inner { file, size }),
            write_errors: AtomicU64::new(0),
            records: AtomicU64::new(0),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Writes that failed (disk full, file removed under us, ...).
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    fn rotated_name(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self, inner: &mut Inner) -> io::Result<()> {
        if self.rotation.keep == 0 {
            inner.file.set_len(0)?;
            inner.size = 0;
            return Ok(());
        }
        for n in (1..self.rotation.keep).rev() {
            let from = self.rotated_name(n);
            if from.exists() {
                fs::rename(&from, self.rotated_name(n + 1))?;
            }
        }
        fs::rename(&self.path, self.rotated_name(1))?;
        inner.file = open_append(&self.path)?;
        inner.size = 0;
        Ok(())
    }

    /// Appends one JSON value as a line.
    pub fn write_value(&self, value: &serde_json::Value) {
        let mut line = match serde_json::to_vec(value) {
            Ok(line) => line,
            Err(_) => {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        line.push(b'\n');
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if inner.size > 0 && inner.size + line.len() as u64 > self.rotation.max_bytes {
            if let Err(e) = self.rotate(&mut inner) {
                log::warn!("rotating {}: {e}", self.path.display());
                self.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        match inner.file.write_all(&line) {
            Ok(()) => {
                inner.size += line.len() as u64;
                self.records.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl FlowLog for JsonLog {
    fn record(&self, rec: &FlowRecord) {
        self.write_value(&record::flow_json(rec));
    }

    fn alert(&self, meta: &FlowMeta, alert: &Alert, timestamp: SystemTime) {
        self.write_value(&record::alert_json(meta, alert, timestamp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_whole_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/traffic.jsonl");
        let log = JsonLog::open(
            &path,
            Rotation {
                max_bytes: 100,
                keep: 2,
            },
        )
        .unwrap();
        for i in 0..10 {
            log.write_value(&json!({ "n": i, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" }));
        }
        assert_eq!(log.records(), 10);
        let current = fs::read_to_string(&path).unwrap();
        let first = fs::read_to_string(log.rotated_name(1)).unwrap();
        assert!(log.rotated_name(2).exists());
        assert!(!log.rotated_name(3).exists(), "keep = 2 bounds the files");
        for text in [&current, &first] {
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(v["n"].is_number());
            }
        }
        let last: serde_json::Value =
            serde_json::from_str(current.lines().last().unwrap()).unwrap();
        assert_eq!(last["n"], 9);
    }

    #[test]
    fn concurrent_writers_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let log = std::sync::Arc::new(JsonLog::open(&path, Rotation::default()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        log.write_value(&json!({ "t": t, "i": i, "body": "y".repeat(300) }));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2000);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}
