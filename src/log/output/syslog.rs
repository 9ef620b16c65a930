//! The `syslog` output: RFC 5424 messages to the local socket (`/dev/log`,
//! datagrams), to `udp://host:port` (one datagram each) or to
//! `tcp://host:port` (octet-counted framing, RFC 6587 §3.4.1).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::SystemTime;

use time::macros::format_description;
use time::OffsetDateTime;

use super::socket::IO_TIMEOUT;
use super::Sink;

/// Where syslog messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A local datagram socket such as `/dev/log`.
    Local(PathBuf),
    /// `udp://host:port`.
    Udp(String),
    /// `tcp://host:port`.
    Tcp(String),
}

/// Checks that `s` is `host:port` with a non-empty host and a port 1..=65535.
pub fn check_host_port(s: &str) -> Result<(), String> {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(format!("\"{}\" is not host:port", s.escape_debug())),
    }
}

impl SyslogTarget {
    /// Parses `/dev/log`, `udp://127.0.0.1:514` or `tcp://[::1]:601`.
    pub fn parse(s: &str) -> Result<SyslogTarget, String> {
        let host_port = |rest: &str| -> Result<String, String> {
            check_host_port(rest)
                .map(|()| rest.to_string())
                .map_err(|_| {
                    format!(
                        "needs host:port after the scheme (\"{}\" has none)",
                        rest.escape_debug()
                    )
                })
        };
        if let Some(rest) = s.strip_prefix("udp://") {
            host_port(rest).map(SyslogTarget::Udp)
        } else if let Some(rest) = s.strip_prefix("tcp://") {
            host_port(rest).map(SyslogTarget::Tcp)
        } else if s.starts_with('/') {
            Ok(SyslogTarget::Local(PathBuf::from(s)))
        } else {
            Err("must be a socket path such as \"/dev/log\", \"udp://host:port\" or \"tcp://host:port\"".into())
        }
    }
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTarget::Local(p) => write!(f, "{}", p.display()),
            SyslogTarget::Udp(a) => write!(f, "udp://{a}"),
            SyslogTarget::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Syslog facility names and numbers (RFC 5424 §6.2.1).
pub const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Severity `informational`; alerts are sent as `warning`.
const SEV_INFO: u8 = 6;
const SEV_WARNING: u8 = 4;

enum Conn {
    Local(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// The machine's name for the HOSTNAME field ("-" when unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".into())
}

/// Builds one RFC 5424 message around a JSON line.
pub fn format_message(
    facility: u8,
    line: &[u8],
    hostname: &str,
    pid: u32,
    now: SystemTime,
) -> Vec<u8> {
    // A cheap look for the event type, without parsing the line again.
    const ALERT: &[u8] = b"\"event_type\":\"alert\"";
    let severity = if line.windows(ALERT.len()).any(|w| w == ALERT) {
        SEV_WARNING
    } else {
        SEV_INFO
    };
    let ts = OffsetDateTime::from(now)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .unwrap_or_else(|_| "-".into());
    let mut msg = format!(
        "<{}>1 {ts} {hostname} tlsinspect {pid} eve - ",
        u16::from(facility) * 8 + u16::from(severity)
    )
    .into_bytes();
    msg.extend_from_slice(line);
    msg
}

/// A connection to a syslog receiver, made on first use and after errors.
pub struct SyslogSink {
    target: SyslogTarget,
    facility: u8,
    hostname: String,
    pid: u32,
    conn: Option<Conn>,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("target", &self.target)
            .field("facility", &self.facility)
            .finish()
    }
}

fn resolve(a: &str) -> io::Result<SocketAddr> {
    a.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{a}: no address")))
}

impl SyslogSink {
    /// A sink for `target` with the numeric `facility`.
    pub fn new(target: SyslogTarget, facility: u8) -> SyslogSink {
        SyslogSink {
            target,
            facility,
            hostname: hostname(),
            pid: std::process::id(),
            conn: None,
        }
    }

    fn connect(&self) -> io::Result<Conn> {
        Ok(match &self.target {
            SyslogTarget::Local(p) => {
                let s = UnixDatagram::unbound()?;
                s.connect(p)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Conn::Local(s)
            }
            SyslogTarget::Udp(a) => {
                let addr = resolve(a)?;
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().map_err(io::Error::other)?
                } else {
                    "[::]:0".parse().map_err(io::Error::other)?
                };
                let s = UdpSocket::bind(bind)?;
                s.connect(addr)?;
                Conn::Udp(s)
            }
            SyslogTarget::Tcp(a) => {
                let s = TcpStream::connect_timeout(&resolve(a)?, IO_TIMEOUT)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
        })
    }

    fn send(&mut self, line: &[u8]) -> io::Result<()> {
        let msg = format_message(
            self.facility,
            line,
            &self.hostname,
            self.pid,
            SystemTime::now(),
        );
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        match &mut self.conn {
            Some(Conn::Local(s)) => s.send(&msg).map(drop),
            Some(Conn::Udp(s)) => s.send(&msg).map(drop),
            Some(Conn::Tcp(s)) => {
                let mut framed = format!("{} ", msg.len()).into_bytes();
                framed.extend_from_slice(&msg);
                s.write_all(&framed)
            }
            None => Ok(()),
        }
    }
}

impl Sink for SyslogSink {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        self.send(line).map_err(|e| {
            self.conn = None;
            io::Error::new(e.kind(), format!("syslog {}: {e}", self.target))
        })
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.conn = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn messages_are_rfc5424() {
        let ts = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let m = format_message(21, br#"{"event_type":"flow","x":1}"#, "fw1", 42, ts);
        assert_eq!(
            String::from_utf8(m).unwrap(),
            r#"<174>1 2023-11-14T22:13:20.123456Z fw1 tlsinspect 42 eve - {"event_type":"flow","x":1}"#
        );
        let m = format_message(21, br#"{"event_type":"alert","x":1}"#, "fw1", 42, ts);
        assert!(m.starts_with(b"<172>1 "), "alerts are warnings");
    }

    #[test]
    fn targets_parse_or_explain() {
        assert_eq!(
            SyslogTarget::parse("/dev/log"),
            Ok(SyslogTarget::Local("/dev/log".into()))
        );
        assert_eq!(
            SyslogTarget::parse("udp://127.0.0.1:514"),
            Ok(SyslogTarget::Udp("127.0.0.1:514".into()))
        );
        assert_eq!(
            SyslogTarget::parse("tcp://[::1]:601"),
            Ok(SyslogTarget::Tcp("[::1]:601".into()))
        );
        assert!(SyslogTarget::parse("udp://127.0.0.1").is_err());
        assert!(SyslogTarget::parse("tcp://:601").is_err());
        assert!(SyslogTarget::parse("127.0.0.1:514").is_err());
    }
}
