//! The control socket: a Unix stream socket speaking one JSON request and
//! one JSON response per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest request accepted; a request is a few dozen bytes.
pub const MAX_REQUEST: u64 = 4096;

/// A command sent to the running appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Re-read the configuration file and apply it to new connections.
    Reload,
    /// Report state: policies as running, counters.
    Status,
}

/// The appliance's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the command succeeded.
    pub ok: bool,
    /// What happened, or what went wrong.
    pub message: String,
    /// Command-specific data.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    /// A success with a message.
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            ok: true,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    /// A failure with a message.
    pub fn err(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }
}

/// What the running appliance does for each command.
pub trait ControlHandler: Send + Sync {
    /// Handles one request.
    fn handle(&self, req: &Request) -> Response;
}

/// The listening side of the control socket, served by one thread.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .finish()
    }
}

fn serve_one(stream: UnixStream, handler: &dyn ControlHandler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    serve(&stream, &stream, handler)
}

/// Answers the one request of a control connection: reads a line (at most
/// 4 KiB) from `input`, has `handler` handle it and writes the JSON answer
/// line to `output`.
///
/// What the socket thread does on each connection, apart from the socket
/// itself; the `control_request` fuzz target drives it with bytes.
pub fn serve(
    input: impl Read,
    mut output: impl Write,
    handler: &dyn ControlHandler,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    BufReader::new(input.take(MAX_REQUEST)).read_until(b'\n', &mut line)?;
    let resp = match serde_json::from_slice::<Request>(line.trim_ascii()) {
        Ok(req) => handler.handle(&req),
        Err(e) => Response::err(format!("malformed control request: {e}")),
    };
    let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    out.push(b'\n');
    output.write_all(&out)
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket; mode 0600, root only) and
    /// serves requests with `handler` until dropped.
    pub fn bind(path: &Path, handler: Arc<dyn ControlHandler>) -> std::io::Result<ControlServer> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        if path.exists() {
            // A live appliance answers; refuse to steal its socket.
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "control socket {} is in use by another running appliance",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            if let Err(e) = serve_one(stream, &*handler) {
                                log::warn!("control socket: {e}");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => {
                            log::warn!("control socket accept: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one request to the appliance listening on `path`.
pub fn request(path: &Path, req: &Request) -> std::io::Result<Response> {
    let stream = UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "no appliance answers on control socket {}: {e}",
                path.display()
            ),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    out.push(b'\n');
    (&stream).write_all(&out)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    serde_json::from_str(line.trim()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed answer on {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    struct Counter(AtomicU32);

    impl ControlHandler for Counter {
        fn handle(&self, req: &Request) -> Response {
            match req {
                Request::Reload => {
                    let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
                    Response::ok(format!("reloaded {n}"))
                }
                Request::Status => Response::ok("fine"),
            }
        }
    }

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let server = ControlServer::bind(&path, Arc::new(Counter(AtomicU32::new(0)))).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            request(&path, &Request::Reload).unwrap().message,
            "reloaded 1"
        );
        assert_eq!(
            request(&path, &Request::Reload).unwrap().message,
            "reloaded 2"
        );
        // Garbage gets an error answer and the server keeps serving.
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"\x00\xffnot json\n").unwrap();
        let mut answer = String::new();
        BufReader::new(&s).read_line(&mut answer).unwrap();
        assert!(answer.contains("malformed control request"), "{answer}");
        assert!(request(&path, &Request::Status).unwrap().ok);
        // A second appliance must not steal a live socket.
        let err = ControlServer::bind(&path, Arc::new(Counter(AtomicU32::new(0)))).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(server);
        assert!(!path.exists());
        let err = request(&path, &Request::Status).unwrap_err();
        assert!(err.to_string().contains("no appliance answers"));
    }
}
