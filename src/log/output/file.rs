//! The `file` output: appends JSON lines, rotates by size, reopens on SIGHUP.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::Sink;

/// When and how far the log is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

fn open_append(path: &Path) -> io::Result<BufWriter<File>> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    Ok(BufWriter::with_capacity(64 * 1024, file))
}

/// A [`Sink`] writing JSON lines to a file.
///
/// Only the output thread writes, so lines never interleave; the buffer is
/// flushed whenever the queue runs empty, so a reader (`tail -f`,
/// `tlsinspect logs`) sees whole records within milliseconds. `reopen`
/// (SIGHUP) opens the path anew, which is what logrotate's default
/// `create` mode expects after it moved the file away.
pub struct FileSink {
    path: PathBuf,
    rotation: Rotation,
    file: Option<BufWriter<File>>,
    size: u64,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .finish()
    }
}

impl FileSink {
    /// Opens (creating it and its directory if needed) the log at `path`.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<FileSink> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                fs::create_dir_all(dir).map_err(|e| {
                    io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
                })?;
            }
        }
        let file = open_append(path)?;
        let size = file.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
        Ok(FileSink {
            path: path.to_path_buf(),
            rotation,
            file: Some(file),
            size,
        })
    }

    fn rotated_name(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            f.flush()?;
        }
        if self.rotation.keep == 0 {
            self.file = None;
            File::create(&self.path)?;
        } else {
            for n in (1..self.rotation.keep).rev() {
                let from = self.rotated_name(n);
                if from.exists() {
                    fs::rename(&from, self.rotated_name(n + 1))?;
                }
            }
            fs::rename(&self.path, self.rotated_name(1))?;
        }
        self.file = Some(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.rotation.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_append(&self.path)?),
        };
        let written = file.write_all(line).and_then(|()| file.write_all(b"\n"));
        if written.is_err() {
            // The buffer may hold part of the line: start over with a fresh
            // handle rather than append the rest of it later.
            self.file = None;
        } else {
            self.size += len;
        }
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        let _ = self.flush();
        self.file = Some(open_append(&self.path)?);
        self.size = self
            .file
            .as_ref()
            .and_then(|f| f.get_ref().metadata().ok())
            .map_or(0, |m| m.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/eve.json");
        let mut sink = FileSink::open(
            &path,
            Rotation {
                max_bytes: 100,
                keep: 2,
            },
        )
        .unwrap();
        for i in 0..10 {
            let line = format!(r#"{{"n":{i},"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#);
            sink.write(line.as_bytes()).unwrap();
        }
        sink.flush().unwrap();
        let current = fs::read_to_string(&path).unwrap();
        let first = fs::read_to_string(sink.rotated_name(1)).unwrap();
        assert!(sink.rotated_name(2).exists());
        assert!(!sink.rotated_name(3).exists(), "keep = 2 bounds the files");
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
    fn reopen_follows_logrotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eve.json");
        let mut sink = FileSink::open(&path, Rotation::default()).unwrap();
        sink.write(b"{\"n\":1}").unwrap();
        sink.flush().unwrap();
        // What logrotate does: move the file away, then signal.
        fs::rename(&path, dir.path().join("eve.json.1")).unwrap();
        sink.write(b"{\"n\":2}").unwrap();
        sink.reopen().unwrap();
        sink.write(b"{\"n\":3}").unwrap();
        sink.flush().unwrap();
        let old = fs::read_to_string(dir.path().join("eve.json.1")).unwrap();
        assert_eq!(old, "{\"n\":1}\n{\"n\":2}\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"n\":3}\n");
    }
}
