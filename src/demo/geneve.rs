//! GENEVE (RFC 8926) as the lab's load balancer speaks it, and the lab's
//! GENEVE peers: a reflector standing in for an appliance, and a probe that
//! sends malformed headers.
//!
//! The appliance's own codec lives in the pipeline crate; this one belongs
//! to the test lab so the lab can check the appliance against an
//! independent reading of the RFC and of what AWS's gateway load balancer
//! sends (option class `0x0108`: type 1 the endpoint id, type 2 the
//! attachment id, each 8 bytes, type 3 the 4-byte flow cookie).
//!
//! The header is a zero-copy view in the smoltcp manner: [`Packet`] over any
//! `AsRef<[u8]>`, checked by [`Packet::new_checked`] before any field is
//! read, with [`Repr`] to build one.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The UDP port GENEVE is sent to.
pub const PORT: u16 = 6081;
/// Protocol type of an inner IPv4 packet (an EtherType).
pub const PROTO_IPV4: u16 = 0x0800;
/// Protocol type of an inner IPv6 packet.
pub const PROTO_IPV6: u16 = 0x86dd;
/// The option class AWS's gateway load balancer uses.
pub const AWS_CLASS: u16 = 0x0108;
/// AWS option type: the gateway load balancer endpoint id (8 bytes).
pub const AWS_ENDPOINT_ID: u8 = 1;
/// AWS option type: the attachment id (8 bytes).
pub const AWS_ATTACHMENT_ID: u8 = 2;
/// AWS option type: the flow cookie (4 bytes).
pub const AWS_FLOW_COOKIE: u8 = 3;
/// Option types with this bit set are critical: a receiver that does not
/// know one must drop the packet (RFC 8926 §3.5).
pub const CRITICAL_TYPE: u8 = 0x80;

mod field {
    use std::ops::Range;
    /// Version (2 bits) and options length in 4-byte words (6 bits).
    pub const VER_OPT_LEN: usize = 0;
    /// O (control packet) and C (critical options present) bits.
    pub const FLAGS: usize = 1;
    pub const PROTOCOL: Range<usize> = 2..4;
    /// VNI (24 bits) and a reserved byte.
    pub const VNI: Range<usize> = 4..7;
    pub const HEADER_LEN: usize = 8;
}

/// Why bytes are not a GENEVE packet the lab accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than the 8-byte fixed header.
    #[error("GENEVE header truncated ({0} bytes)")]
    Truncated(usize),
    /// A version other than 0.
    #[error("GENEVE version {0} (only 0 exists)")]
    Version(u8),
    /// The options length points past the end of the packet.
    #[error("GENEVE options of {options} bytes in a packet of {len}")]
    OptionsBeyondPacket {
        /// Options length the header states.
        options: usize,
        /// Bytes there are.
        len: usize,
    },
    /// An option's own length runs past the options area.
    #[error("GENEVE option at offset {0} runs past the options")]
    OptionBeyondOptions(usize),
    /// An inner protocol other than IPv4 and IPv6.
    #[error("GENEVE protocol type {0:#06x} (not IPv4 or IPv6)")]
    Protocol(u16),
    /// The inner packet's version nibble disagrees with the protocol type.
    #[error("GENEVE protocol type {0:#06x} carries another IP version")]
    InnerVersion(u16),
}

/// One TLV option, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt<'a> {
    /// Option class.
    pub class: u16,
    /// Option type (high bit: critical).
    pub typ: u8,
    /// The option's data (a multiple of 4 bytes).
    pub data: &'a [u8],
}

impl Opt<'_> {
    /// Whether a receiver that does not know the option must drop the packet.
    pub fn critical(&self) -> bool {
        self.typ & CRITICAL_TYPE != 0
    }

    /// Bytes of the option on the wire.
    pub fn wire_len(&self) -> usize {
        4 + self.data.len()
    }
}

/// A GENEVE header (and what follows) over a byte buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking anything (for building a packet).
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps untrusted bytes: the fixed header is there, the version is 0,
    /// the options lie within the packet and every option within them, and
    /// the inner packet is IPv4 or IPv6 as the protocol type says.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet { buffer };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER_LEN {
            return Err(Error::Truncated(b.len()));
        }
        if self.version() != 0 {
            return Err(Error::Version(self.version()));
        }
        let header = self.header_len();
        if header > b.len() {
            return Err(Error::OptionsBeyondPacket {
                options: header - field::HEADER_LEN,
                len: b.len(),
            });
        }
        let opts = &b[field::HEADER_LEN..header];
        let mut at = 0;
        while at < opts.len() {
            let len = opts
                .get(at + 3)
                .map(|l| 4 + 4 * usize::from(l & 0x1f))
                .ok_or(Error::OptionBeyondOptions(at))?;
            if at + len > opts.len() {
                return Err(Error::OptionBeyondOptions(at));
            }
            at += len;
        }
        let want = match self.protocol() {
            PROTO_IPV4 => 4,
            PROTO_IPV6 => 6,
            other => return Err(Error::Protocol(other)),
        };
        if b.get(header).map(|v| v >> 4) != Some(want) {
            return Err(Error::InnerVersion(self.protocol()));
        }
        Ok(())
    }

    /// The version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_OPT_LEN] >> 6
    }

    /// Bytes of the fixed header and the options.
    pub fn header_len(&self) -> usize {
        field::HEADER_LEN + 4 * usize::from(self.buffer.as_ref()[field::VER_OPT_LEN] & 0x3f)
    }

    /// The O bit: a control packet, not data.
    pub fn oam(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & 0x80 != 0
    }

    /// The C bit: critical options are present.
    pub fn critical(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & 0x40 != 0
    }

    /// The inner protocol type (an EtherType).
    pub fn protocol(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PROTOCOL];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The 24-bit virtual network identifier.
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The options area, as bytes (to compare headers byte for byte).
    pub fn options_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..self.header_len()]
    }

    /// The options, in order. Only for a checked packet.
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: self.options_bytes(),
        }
    }

    /// The inner packet.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// Iterator over the options of a checked [`Packet`].
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = Opt<'a>;

    fn next(&mut self) -> Option<Opt<'a>> {
        let h = self.rest.get(..4)?;
        let len = 4 * usize::from(h[3] & 0x1f);
        let data = self.rest.get(4..4 + len)?;
        let opt = Opt {
            class: u16::from_be_bytes([h[0], h[1]]),
            typ: h[2],
            data,
        };
        self.rest = &self.rest[4 + len..];
        Some(opt)
    }
}

/// A GENEVE header to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// The 24-bit VNI.
    pub vni: u32,
    /// Inner protocol type.
    pub protocol: u16,
    /// The options, already in wire form (see [`emit_option`]).
    pub options: Vec<u8>,
}

impl Repr {
    /// Bytes of the header.
    pub fn buffer_len(&self) -> usize {
        field::HEADER_LEN + self.options.len()
    }

    /// Appends the header to `out`.
    ///
    /// The options must be whole 4-byte words and at most 252 bytes (the
    /// 6-bit length field); the C bit is set when a critical option is among them.
    pub fn emit(&self, out: &mut Vec<u8>) {
        debug_assert!(self.options.len() % 4 == 0 && self.options.len() <= 252);
        let critical = Packet::new_unchecked(self.options_packet())
            .options()
            .any(|o| o.critical());
        out.push((self.options.len() / 4) as u8 & 0x3f);
        out.push(if critical { 0x40 } else { 0 });
        out.extend_from_slice(&self.protocol.to_be_bytes());
        out.extend_from_slice(&self.vni.to_be_bytes()[1..]);
        out.push(0);
        out.extend_from_slice(&self.options);
    }

    /// A header-only packet of these options, to walk them.
    fn options_packet(&self) -> Vec<u8> {
        let mut b = vec![(self.options.len() / 4) as u8 & 0x3f, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&self.options);
        b
    }
}

/// Appends one option (`data` padded to whole words, at most 124 bytes) to `out`.
pub fn emit_option(out: &mut Vec<u8>, class: u16, typ: u8, data: &[u8]) {
    let words = data.len().div_ceil(4);
    out.extend_from_slice(&class.to_be_bytes());
    out.push(typ);
    out.push((words as u8) & 0x1f);
    out.extend_from_slice(data);
    out.resize(out.len() + (words * 4 - data.len()), 0);
}

/// The options AWS's gateway load balancer sends with a flow's direction:
/// endpoint id, attachment id, flow cookie.
pub fn aws_options(endpoint_id: u64, attachment_id: u64, cookie: u32) -> Vec<u8> {
    let mut o = Vec::with_capacity(32);
    emit_option(
        &mut o,
        AWS_CLASS,
        AWS_ENDPOINT_ID,
        &endpoint_id.to_be_bytes(),
    );
    emit_option(
        &mut o,
        AWS_CLASS,
        AWS_ATTACHMENT_ID,
        &attachment_id.to_be_bytes(),
    );
    emit_option(&mut o, AWS_CLASS, AWS_FLOW_COOKIE, &cookie.to_be_bytes());
    o
}

/// Runs the stand-in appliance until killed: every GENEVE datagram received
/// on `listen` goes back unchanged to its sender (so the outer addresses are
/// swapped by construction), and `GET /health` on `health` answers 200, or
/// 503 while `drain_file` exists.
///
/// It does not parse what it reflects: the load balancer's checks of what
/// comes back are what the lab tests, and a reflector that fixed headers up
/// would hide their failures.
pub fn reflect(
    listen: SocketAddr,
    health: SocketAddr,
    drain_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(listen).with_context(|| format!("binding {listen}"))?;
    let raw = socket2::SockRef::from(&sock);
    // Bursts of a 64 KiB super-frame's segments arrive back to back.
    let _ = raw.set_recv_buffer_size(4 << 20);
    let _ = raw.set_send_buffer_size(4 << 20);
    let listener = TcpListener::bind(health).with_context(|| format!("binding {health}"))?;
    std::thread::spawn(move || serve_health(&listener, drain_file.as_deref()));
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = sock.recv_from(&mut buf).context("receiving GENEVE")?;
        // A full socket buffer on the way back is loss, as on a real network.
        let _ = sock.send_to(&buf[..n], from);
    }
}

/// Answers health checks one at a time (they come every 500 ms per balancer).
fn serve_health(listener: &TcpListener, drain_file: Option<&Path>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&req);
        let status = if !line.starts_with("GET /health ") {
            "404 Not Found"
        } else if drain_file.is_some_and(Path::exists) {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let body = format!("{status}\n");
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// One malformed packet the probe sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MalformedCase {
    /// What is wrong with it.
    pub case: String,
    /// Its length.
    pub bytes: usize,
}

/// What [`send_malformed`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MalformedResult {
    /// The packets sent, in order.
    pub sent: Vec<MalformedCase>,
    /// Datagrams that came back within the wait (an appliance must answer none).
    pub replies: u64,
}

/// The malformed packets: each would be a valid GENEVE packet carrying a
/// TCP SYN from 192.0.2.10 to 203.0.113.10:443 but for one fault.
pub fn malformed_packets() -> Vec<(&'static str, Vec<u8>)> {
    let inner = syn_packet();
    let good = |options: Vec<u8>| {
        let mut p = Vec::new();
        Repr {
            vni: 1,
            protocol: PROTO_IPV4,
            options,
        }
        .emit(&mut p);
        p.extend_from_slice(&inner);
        p
    };
    let aws = aws_options(1, 2, 3);
    let mut bad_version = good(aws.clone());
    bad_version[0] |= 0x40;
    // 63 words of options claimed, 32 bytes there plus the inner packet.
    let mut beyond = good(aws.clone());
    beyond[0] |= 0x3f;
    let mut option_beyond = good(aws.clone());
    // The cookie option (the last, at 8 + 24) claims 31 words.
    option_beyond[8 + 24 + 3] = 0x1f;
    let mut critical_opts = aws.clone();
    emit_option(&mut critical_opts, AWS_CLASS, CRITICAL_TYPE | 0x05, &[0; 4]);
    let critical = good(critical_opts);
    let mut bad_protocol = good(aws.clone());
    bad_protocol[2..4].copy_from_slice(&0x6558u16.to_be_bytes());
    let truncated = good(aws)[..6].to_vec();
    vec![
        ("bad_version", bad_version),
        ("options_beyond_packet", beyond),
        ("option_beyond_options", option_beyond),
        ("unknown_critical_option", critical),
        ("bad_protocol_type", bad_protocol),
        ("truncated_header", truncated),
    ]
}

/// A TCP SYN from 192.0.2.10:40000 to 203.0.113.10:443 with valid checksums.
fn syn_packet() -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4([192, 0, 2, 10], [203, 0, 113, 10], 64)
        .tcp(40000, 443, 1, 64240)
        .syn();
    let mut p = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut p, &[])
        .expect("writing to a Vec does not fail");
    p
}

/// Sends each of [`malformed_packets`] from `source` to `to`, then counts
/// what comes back within `wait`.
pub fn send_malformed(
    source: SocketAddr,
    to: SocketAddr,
    wait: Duration,
) -> anyhow::Result<MalformedResult> {
    let sock = UdpSocket::bind(source).with_context(|| format!("binding {source}"))?;
    let mut sent = Vec::new();
    for (case, p) in malformed_packets() {
        sock.send_to(&p, to)
            .with_context(|| format!("sending {case} to {to}"))?;
        sent.push(MalformedCase {
            case: case.to_owned(),
            bytes: p.len(),
        });
    }
    let deadline = Instant::now() + wait;
    let mut replies = 0;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv_from(&mut buf) {
            Ok(_) => replies += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(MalformedResult { sent, replies })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(options: Vec<u8>, inner: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        Repr {
            vni: 0x12_3456,
            protocol: PROTO_IPV4,
            options,
        }
        .emit(&mut p);
        p.extend_from_slice(inner);
        p
    }

    #[test]
    fn aws_header_round_trips() {
        let inner = syn_packet();
        let p = packet(aws_options(0x1122_3344_5566_7788, 9, 0xdead_beef), &inner);
        assert_eq!(p.len(), 8 + 32 + inner.len());
        let g = Packet::new_checked(&p[..]).unwrap();
        assert_eq!(g.version(), 0);
        assert_eq!(g.vni(), 0x12_3456);
        assert_eq!(g.protocol(), PROTO_IPV4);
        assert!(!g.critical() && !g.oam());
        assert_eq!(g.header_len(), 40);
        assert_eq!(g.payload(), &inner[..]);
        let opts: Vec<Opt<'_>> = g.options().collect();
        assert_eq!(opts.len(), 3);
        assert_eq!((opts[0].class, opts[0].typ), (AWS_CLASS, AWS_ENDPOINT_ID));
        assert_eq!(opts[0].data, &0x1122_3344_5566_7788u64.to_be_bytes());
        assert_eq!((opts[1].typ, opts[1].data.len()), (AWS_ATTACHMENT_ID, 8));
        assert_eq!(opts[2].typ, AWS_FLOW_COOKIE);
        assert_eq!(opts[2].data, &0xdead_beefu32.to_be_bytes());
    }

    #[test]
    fn every_prefix_is_an_error_never_a_panic() {
        let p = packet(aws_options(1, 2, 3), &syn_packet());
        for n in 0..=40 {
            assert!(Packet::new_checked(&p[..n]).is_err(), "prefix {n}");
        }
        for n in 41..=p.len() {
            assert!(Packet::new_checked(&p[..n]).is_ok(), "prefix {n}");
        }
    }

    #[test]
    fn malformed_packets_are_each_refused_for_their_fault() {
        let got: Vec<(&str, Error)> = malformed_packets()
            .into_iter()
            .filter_map(|(case, p)| Packet::new_checked(&p[..]).err().map(|e| (case, e)))
            .collect();
        assert_eq!(
            got.len(),
            5,
            "all but the critical option fail the parse: {got:?}"
        );
        assert!(matches!(got[0].1, Error::Version(1)));
        assert!(matches!(got[1].1, Error::OptionsBeyondPacket { .. }));
        assert!(matches!(got[2].1, Error::OptionBeyondOptions(24)));
        assert!(matches!(got[3].1, Error::Protocol(0x6558)));
        assert!(matches!(got[4].1, Error::Truncated(6)));
        let (_, crit) = &malformed_packets()[3];
        let g = Packet::new_checked(&crit[..]).unwrap();
        assert!(g.critical(), "C bit set with a critical option");
        assert!(g.options().any(|o| o.critical() && o.class == AWS_CLASS));
    }
}
