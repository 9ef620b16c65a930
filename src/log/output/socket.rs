//! The `unix_stream` and `unix_dgram` outputs: one JSON line per write or
//! datagram to a local socket (what Suricata's outputs of the same names do).

use std::io::{self, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use super::Sink;

/// How long a write may block before the connection is given up.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A stream or datagram connection to a local socket, made on first use
/// and made again after any error.
pub struct UnixSink {
    path: PathBuf,
    datagram: bool,
    stream: Option<UnixStream>,
    dgram: Option<UnixDatagram>,
}

impl std::fmt::Debug for UnixSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixSink")
            .field("path", &self.path)
            .field("datagram", &self.datagram)
            .finish()
    }
}

impl UnixSink {
    /// A sink for `path`; `datagram` selects SOCK_DGRAM.
    pub fn new(path: PathBuf, datagram: bool) -> UnixSink {
        UnixSink {
            path,
            datagram,
            stream: None,
            dgram: None,
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.stream = None;
        self.dgram = None;
        io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
    }

    fn send(&mut self, line: &[u8]) -> io::Result<()> {
        if self.datagram {
            if self.dgram.is_none() {
                let s = UnixDatagram::unbound()?;
                s.connect(&self.path)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                self.dgram = Some(s);
            }
            if let Some(s) = &self.dgram {
                s.send(line)?;
            }
        } else {
            if self.stream.is_none() {
                let s = UnixStream::connect(&self.path)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                self.stream = Some(s);
            }
            if let Some(s) = &mut self.stream {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(line);
                buf.push(b'\n');
                s.write_all(&buf)?;
            }
        }
        Ok(())
    }
}

impl Sink for UnixSink {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        self.send(line).map_err(|e| self.fail(e))
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.stream = None;
        self.dgram = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    #[test]
    fn stream_and_datagram_deliver_lines_and_reconnect() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("s.sock");
        let listener = UnixListener::bind(&sp).unwrap();
        let mut sink = UnixSink::new(sp.clone(), false);
        sink.write(b"{\"a\":1}").unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut r = io::BufReader::new(conn);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "{\"a\":1}\n");

        let dp = dir.path().join("d.sock");
        let server = UnixDatagram::bind(&dp).unwrap();
        let mut sink = UnixSink::new(dp.clone(), true);
        sink.write(b"{\"b\":2}").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"{\"b\":2}");
        // The receiver goes away: an error; it comes back: delivered again.
        drop(server);
        std::fs::remove_file(&dp).unwrap();
        assert!(sink.write(b"{\"c\":3}").is_err());
        let server = UnixDatagram::bind(&dp).unwrap();
        sink.write(b"{\"d\":4}").unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"{\"d\":4}");
    }
}
