//! The `redis` output: `RPUSH key line` (mode `list`) or `PUBLISH key line`
//! (mode `channel`), as Suricata's redis output does.
//!
//! Why RESP by hand rather than a client crate: the output needs two
//! commands on one blocking connection whose timeouts and reconnects the
//! output thread controls; a client crate's connection management and its
//! dependencies would buy nothing here. The one parser involved, of the
//! integer/status/error reply lines, is [`parse_reply`], fuzzed.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};

use super::socket::IO_TIMEOUT;
use super::Sink;

/// How records reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// `RPUSH key record`: a list consumers pop from.
    List,
    /// `PUBLISH key record`: a channel subscribers listen on.
    Channel,
}

/// One reply line of Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `:N`, the list length (RPUSH) or receivers (PUBLISH).
    Integer(i64),
    /// `-ERR ...`: the command was refused.
    Error(String),
}

/// Longest reply line accepted; ours are integers or short errors.
const MAX_REPLY: usize = 4096;

/// Parses one reply at the start of `buf`: `Ok(Some((reply, used)))`,
/// `Ok(None)` when more bytes are needed, `Err` when it is not a reply to
/// RPUSH or PUBLISH.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > MAX_REPLY {
            Err(format!("reply line longer than {MAX_REPLY} bytes"))
        } else {
            Ok(None)
        };
    };
    if end > MAX_REPLY {
        return Err(format!("reply line longer than {MAX_REPLY} bytes"));
    }
    let text =
        std::str::from_utf8(&buf[1..end.max(1)]).map_err(|_| "reply is not UTF-8".to_string())?;
    let reply = match buf.first() {
        Some(b'+') => Reply::Status(text.to_string()),
        Some(b'-') => Reply::Error(text.to_string()),
        Some(b':') => Reply::Integer(
            text.parse()
                .map_err(|_| format!("integer reply {text:?} is not a number"))?,
        ),
        Some(b) => return Err(format!("unexpected reply type {:?}", char::from(*b))),
        None => return Err("empty reply line".into()),
    };
    Ok(Some((reply, end + 2)))
}

/// Encodes one command as a RESP array of bulk strings.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A connection to Redis, made on first use and after errors.
pub struct RedisSink {
    address: String,
    mode: RedisMode,
    key: String,
    conn: Option<BufReader<TcpStream>>,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("address", &self.address)
            .field("mode", &self.mode)
            .field("key", &self.key)
            .finish()
    }
}

impl RedisSink {
    /// A sink pushing to `key` at `address` (`host:port`).
    pub fn new(address: String, mode: RedisMode, key: String) -> RedisSink {
        RedisSink {
            address,
            mode,
            key,
            conn: None,
        }
    }

    fn connect(&self) -> io::Result<BufReader<TcpStream>> {
        let addr = self.address.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing")
        })?;
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(BufReader::new(s))
    }

    fn send(&mut self, line: &[u8]) -> io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let Some(conn) = &mut self.conn else {
            return Ok(());
        };
        let verb: &[u8] = match self.mode {
            RedisMode::List => b"RPUSH",
            RedisMode::Channel => b"PUBLISH",
        };
        conn.get_mut()
            .write_all(&encode_command(&[verb, self.key.as_bytes(), line]))?;
        let mut reply = Vec::new();
        loop {
            let n = conn.read_until(b'\n', &mut reply)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            match parse_reply(&reply) {
                Ok(Some((Reply::Error(e), _))) => {
                    // Refused (wrong key type, out of memory): retrying the
                    // same record would fail again, so it is dropped.
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
    }
}

impl Sink for RedisSink {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        self.send(line).map_err(|e| {
            self.conn = None;
            io::Error::new(e.kind(), format!("redis {}: {e}", self.address))
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

    #[test]
    fn replies_parse_at_every_prefix() {
        let buf = b":17\r\n";
        for n in 0..buf.len() {
            assert_eq!(parse_reply(&buf[..n]), Ok(None), "prefix {n}");
        }
        assert_eq!(parse_reply(buf), Ok(Some((Reply::Integer(17), 5))));
        assert_eq!(
            parse_reply(b"-WRONGTYPE Operation\r\n"),
            Ok(Some((Reply::Error("WRONGTYPE Operation".into()), 22)))
        );
        assert_eq!(
            parse_reply(b"+OK\r\nrest"),
            Ok(Some((Reply::Status("OK".into()), 5)))
        );
        assert!(parse_reply(b"$3\r\nabc\r\n").is_err());
        assert!(parse_reply(b":x\r\n").is_err());
        assert!(parse_reply(b"\r\n").is_err());
        assert!(parse_reply(&vec![b':'; MAX_REPLY + 2]).is_err());
    }

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(
            encode_command(&[b"RPUSH", b"k", b"{}"]),
            b"*3\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n$2\r\n{}\r\n"
        );
    }
}
