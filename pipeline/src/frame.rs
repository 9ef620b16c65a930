//! Zero-copy views over the frames a worker receives.
//!
//! A worker needs only a handful of facts from a frame to decide its path:
//! the VLAN tags, the IP addresses, the transport ports and the TCP flags. The
//! parsers here borrow the received bytes (nothing is copied or allocated),
//! lean on `smoltcp::wire`'s checked views for the fixed headers, and return a
//! typed [`FrameError`] for anything truncated or inconsistent, because every
//! byte on the wire is untrusted. The worker counts those errors and forwards
//! the frame unchanged: a bump in the wire must not be the reason a frame it
//! does not understand disappears.
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use smoltcp::wire::{
    ArpPacket, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    UdpPacket,
};

/// EtherType of an 802.1Q customer VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of an 802.1ad service VLAN tag (QinQ outer tag).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Most VLAN tags accepted in front of the payload; deeper stacks are malformed.
pub const MAX_VLAN_TAGS: usize = 2;
/// Most IPv6 extension headers walked before the transport header.
const MAX_IPV6_EXT_HEADERS: usize = 8;

/// The layer a [`FrameError`] was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet II header.
    Ethernet,
    /// 802.1Q / 802.1ad tag.
    Vlan,
    /// ARP payload.
    Arp,
    /// IPv4 header.
    Ipv4,
    /// IPv6 header or one of its extension headers.
    Ipv6,
    /// TCP header.
    Tcp,
    /// UDP header.
    Udp,
}

/// Why a frame could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The buffer ends inside a header, or a length field points past its end.
    #[error("{0:?} header truncated or length field beyond the frame")]
    Truncated(Layer),
    /// A version or header-length field holds an impossible value.
    #[error("{0:?} header field out of range")]
    BadField(Layer),
    /// More VLAN tags or IPv6 extension headers than we walk.
    #[error("{0:?} header chain too deep")]
    TooDeep(Layer),
}

/// VLAN tags found in the frame, outermost first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VlanTags {
    /// Number of tags present (0..=[`MAX_VLAN_TAGS`]).
    pub count: u8,
    /// Tag control information (PCP, DEI, VID) of the outermost tag.
    pub outer_tci: u16,
}

/// TCP flags as carried in the header's flag byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN flag bit.
    pub const FIN: u8 = 0x01;
    /// SYN flag bit.
    pub const SYN: u8 = 0x02;
    /// RST flag bit.
    pub const RST: u8 = 0x04;
    /// PSH flag bit.
    pub const PSH: u8 = 0x08;
    /// ACK flag bit.
    pub const ACK: u8 = 0x10;

    /// Whether FIN is set.
    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    /// Whether SYN is set.
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    /// Whether RST is set.
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    /// Whether ACK is set.
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
    /// Whether this is the opening segment of a handshake (SYN without ACK).
    pub fn is_initial_syn(self) -> bool {
        self.syn() && !self.ack()
    }
}

/// A parsed TCP segment header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpView<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Flag byte.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Segment payload (borrowed from the frame).
    pub payload: &'a [u8],
}

/// The transport layer of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// A TCP segment.
    Tcp(TcpView<'a>),
    /// A UDP datagram (QUIC included).
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Datagram payload.
        payload: &'a [u8],
    },
    /// ICMPv4 or ICMPv6 (neighbour discovery included).
    Icmp,
    /// A non-first fragment, or a first fragment whose transport header we do
    /// not read: both directions of a flow must be treated alike, and later
    /// fragments carry no ports.
    Fragment,
    /// Any other protocol number.
    Other(u8),
}

/// A parsed IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpView<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Length of the IP packet per its own length fields (link padding excluded).
    pub len: usize,
    /// The transport layer.
    pub transport: Transport<'a>,
}

impl IpView<'_> {
    /// The TCP segment, if this packet carries one.
    pub fn tcp(&self) -> Option<&TcpView<'_>> {
        match &self.transport {
            Transport::Tcp(t) => Some(t),
            _ => None,
        }
    }
}

/// What an Ethernet frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// An ARP packet.
    Arp,
    /// An IPv4 or IPv6 packet.
    Ip(IpView<'a>),
    /// Any other EtherType (LLDP, STP via LLC, MPLS, ...).
    Other(u16),
}

/// A parsed Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthView<'a> {
    /// VLAN tags in the frame bytes.
    pub vlan: VlanTags,
    /// The payload after the tags.
    pub payload: Payload<'a>,
}

impl EthView<'_> {
    /// The IP packet, if the frame carries one.
    pub fn ip(&self) -> Option<&IpView<'_>> {
        match &self.payload {
            Payload::Ip(ip) => Some(ip),
            _ => None,
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Writes `bytes` into `buf` at `at`, where they fit.
pub(crate) fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(d) = buf.get_mut(at..at + bytes.len()) {
        d.copy_from_slice(bytes);
    }
}

/// Parses an Ethernet II frame, its VLAN tags and the IP/transport headers.
pub fn parse_ethernet(buf: &[u8]) -> Result<EthView<'_>, FrameError> {
    let eth =
        EthernetFrame::new_checked(buf).map_err(|_| FrameError::Truncated(Layer::Ethernet))?;
    let mut ethertype = u16::from(eth.ethertype());
    // The header of an Ethernet II frame is 14 bytes; tags follow the source MAC.
    let mut at = 14usize;
    let mut vlan = VlanTags::default();
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if usize::from(vlan.count) == MAX_VLAN_TAGS {
            return Err(FrameError::TooDeep(Layer::Vlan));
        }
        let tci = be16(buf, at).ok_or(FrameError::Truncated(Layer::Vlan))?;
        let inner = be16(buf, at + 2).ok_or(FrameError::Truncated(Layer::Vlan))?;
        if vlan.count == 0 {
            vlan.outer_tci = tci;
        }
        vlan.count += 1;
        ethertype = inner;
        at += 4;
    }
    let rest = buf.get(at..).ok_or(FrameError::Truncated(Layer::Vlan))?;
    let payload = match EthernetProtocol::from(ethertype) {
        EthernetProtocol::Arp => {
            ArpPacket::new_checked(rest).map_err(|_| FrameError::Truncated(Layer::Arp))?;
            Payload::Arp
        }
        EthernetProtocol::Ipv4 => Payload::Ip(parse_ipv4(rest)?),
        EthernetProtocol::Ipv6 => Payload::Ip(parse_ipv6(rest)?),
        _ => Payload::Other(ethertype),
    };
    Ok(EthView { vlan, payload })
}

/// Parses a bare IP packet (as read from a TUN device), by its version nibble.
pub fn parse_ip(buf: &[u8]) -> Result<IpView<'_>, FrameError> {
    match buf.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(buf),
        Some(6) => parse_ipv6(buf),
        Some(_) => Err(FrameError::BadField(Layer::Ipv4)),
        None => Err(FrameError::Truncated(Layer::Ipv4)),
    }
}

/// Parses an IPv4 header and its transport header.
pub fn parse_ipv4(buf: &[u8]) -> Result<IpView<'_>, FrameError> {
    let ip = Ipv4Packet::new_checked(buf).map_err(|_| FrameError::Truncated(Layer::Ipv4))?;
    if ip.version() != 4 || ip.header_len() < 20 {
        return Err(FrameError::BadField(Layer::Ipv4));
    }
    let src = IpAddr::V4(ip.src_addr());
    let dst = IpAddr::V4(ip.dst_addr());
    let len = usize::from(ip.total_len());
    let transport = if ip.more_frags() || ip.frag_offset() != 0 {
        Transport::Fragment
    } else {
        parse_transport(ip.next_header(), ip.payload())?
    };
    Ok(IpView {
        src,
        dst,
        len,
        transport,
    })
}

/// Parses an IPv6 header, walks its extension headers and parses the transport header.
pub fn parse_ipv6(buf: &[u8]) -> Result<IpView<'_>, FrameError> {
    let ip = Ipv6Packet::new_checked(buf).map_err(|_| FrameError::Truncated(Layer::Ipv6))?;
    if ip.version() != 6 {
        return Err(FrameError::BadField(Layer::Ipv6));
    }
    let src = IpAddr::V6(ip.src_addr());
    let dst = IpAddr::V6(ip.dst_addr());
    let len = ip.total_len();
    let mut next = ip.next_header();
    let mut rest = ip.payload();
    let mut walked = 0;
    loop {
        match next {
            IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                let nh = *rest.first().ok_or(FrameError::Truncated(Layer::Ipv6))?;
                let hlen =
                    (usize::from(*rest.get(1).ok_or(FrameError::Truncated(Layer::Ipv6))?) + 1) * 8;
                rest = rest.get(hlen..).ok_or(FrameError::Truncated(Layer::Ipv6))?;
                next = IpProtocol::from(nh);
            }
            IpProtocol::Ipv6Frag => {
                let nh = *rest.first().ok_or(FrameError::Truncated(Layer::Ipv6))?;
                let off_m = be16(rest, 2).ok_or(FrameError::Truncated(Layer::Ipv6))?;
                let after = rest.get(8..).ok_or(FrameError::Truncated(Layer::Ipv6))?;
                // Offset in the top 13 bits, M flag in bit 0: anything but an
                // atomic fragment is passed on without reading ports.
                if off_m & 0xfff9 != 0 {
                    return Ok(IpView {
                        src,
                        dst,
                        len,
                        transport: Transport::Fragment,
                    });
                }
                rest = after;
                next = IpProtocol::from(nh);
            }
            _ => break,
        }
        walked += 1;
        if walked > MAX_IPV6_EXT_HEADERS {
            return Err(FrameError::TooDeep(Layer::Ipv6));
        }
    }
    let transport = parse_transport(next, rest)?;
    Ok(IpView {
        src,
        dst,
        len,
        transport,
    })
}

fn parse_transport(proto: IpProtocol, buf: &[u8]) -> Result<Transport<'_>, FrameError> {
    Ok(match proto {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(buf).map_err(|_| FrameError::Truncated(Layer::Tcp))?;
            Transport::Tcp(TcpView {
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
                // Byte 13 holds CWR..FIN; check_len guaranteed 20 bytes.
                flags: TcpFlags(*buf.get(13).ok_or(FrameError::Truncated(Layer::Tcp))?),
                seq: tcp.seq_number().0 as u32,
                ack: tcp.ack_number().0 as u32,
                payload: tcp.payload(),
            })
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(buf).map_err(|_| FrameError::Truncated(Layer::Udp))?;
            Transport::Udp {
                src_port: udp.src_port(),
                dst_port: udp.dst_port(),
                payload: udp.payload(),
            }
        }
        IpProtocol::Icmp | IpProtocol::Icmpv6 => Transport::Icmp,
        other => Transport::Other(u8::from(other)),
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::testkit::packets::*;

    #[test]
    fn parses_tcp_syn_over_ipv4() {
        let f = &samples()[0];
        let eth = parse_ethernet(f).unwrap();
        assert_eq!(eth.vlan.count, 0);
        let ip = eth.ip().unwrap();
        assert_eq!(ip.src, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(ip.dst, "203.0.113.5".parse::<IpAddr>().unwrap());
        let tcp = ip.tcp().unwrap();
        assert_eq!((tcp.src_port, tcp.dst_port), (40000, 443));
        assert!(tcp.flags.is_initial_syn());
        assert_eq!(tcp.seq, 1000);
    }

    #[test]
    fn parses_payload_and_flags() {
        let s = samples();
        let eth = parse_ethernet(&s[1]).unwrap();
        let tcp = *eth.ip().unwrap().tcp().unwrap();
        assert_eq!(tcp.payload, b"hello");
        assert!(tcp.flags.ack() && !tcp.flags.syn() && !tcp.flags.fin());
    }

    #[test]
    fn parses_vlan_and_qinq() {
        let s = samples();
        let one = parse_ethernet(&s[2]).unwrap();
        assert_eq!(
            one.vlan,
            VlanTags {
                count: 1,
                outer_tci: 0x2064
            }
        );
        assert!(one.ip().unwrap().tcp().is_some());
        let two = parse_ethernet(&s[3]).unwrap();
        assert_eq!(
            two.vlan,
            VlanTags {
                count: 2,
                outer_tci: 0x0010
            }
        );
        assert_eq!(two.ip().unwrap().tcp().unwrap().payload, b"hello");
        let three = ether(
            0x0800,
            &[(0x8100, 1), (0x8100, 2), (0x8100, 3)],
            &ipv4_tcp([1; 4], 1, [2; 4], 2, 2, b""),
        );
        assert_eq!(
            parse_ethernet(&three),
            Err(FrameError::TooDeep(Layer::Vlan))
        );
    }

    #[test]
    fn parses_ipv6_udp_and_extension_headers() {
        let s = samples();
        let udp = parse_ethernet(&s[4]).unwrap();
        match udp.ip().unwrap().transport {
            Transport::Udp {
                src_port,
                dst_port,
                payload,
            } => assert_eq!((src_port, dst_port, payload), (5353, 443, &b"quic-ish"[..])),
            other => panic!("expected UDP, got {other:?}"),
        }
        let tcp = parse_ethernet(&s[5]).unwrap();
        let t = tcp.ip().unwrap().tcp().unwrap();
        assert_eq!((t.src_port, t.dst_port), (5353, 443));
        assert_eq!(parse_ethernet(&s[6]).unwrap().payload, Payload::Arp);
    }

    #[test]
    fn fragments_carry_no_ports() {
        let mut p = ipv4_tcp([192, 0, 2, 1], 1, [203, 0, 113, 1], 2, 2, b"abcdefgh");
        p[6] = 0x20; // MF
        assert_eq!(parse_ipv4(&p).unwrap().transport, Transport::Fragment);
    }

    #[test]
    fn bad_fields_are_typed_errors() {
        let mut p = ipv4_tcp([192, 0, 2, 1], 1, [203, 0, 113, 1], 2, 2, b"");
        p[0] = 0x44; // IHL 4
        assert!(parse_ipv4(&p).is_err());
        let mut p = ipv4_tcp([192, 0, 2, 1], 1, [203, 0, 113, 1], 2, 2, b"");
        p[2..4].copy_from_slice(&1500u16.to_be_bytes()); // total length beyond buffer
        assert_eq!(parse_ipv4(&p), Err(FrameError::Truncated(Layer::Ipv4)));
        let mut p = ipv4_tcp([192, 0, 2, 1], 1, [203, 0, 113, 1], 2, 2, b"");
        p[32] = 0x30; // TCP data offset 3 words
        assert_eq!(parse_ipv4(&p), Err(FrameError::Truncated(Layer::Tcp)));
        assert_eq!(parse_ip(&[]), Err(FrameError::Truncated(Layer::Ipv4)));
        assert_eq!(parse_ip(&[0x10]), Err(FrameError::BadField(Layer::Ipv4)));
    }

    /// Every prefix of every sample parses to a value or a typed error, and a
    /// prefix that cuts a header is never accepted as the whole frame.
    #[test]
    fn every_prefix_is_an_error_or_a_view() {
        for s in samples() {
            let full = parse_ethernet(&s).unwrap();
            for n in 0..s.len() {
                match parse_ethernet(&s[..n]) {
                    Err(_) => {}
                    Ok(v) => assert_ne!(v, full, "prefix {n} of {} accepted", s.len()),
                }
            }
            // Ethernet padding after the IP packet is tolerated.
            let mut padded = s.clone();
            padded.extend_from_slice(&[0; 18]);
            assert!(parse_ethernet(&padded).is_ok());
        }
    }

    /// Pseudo-random bytes (xorshift, fixed seed) never panic the parser.
    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 128];
        for round in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Steer some rounds into the IP/TCP parsers.
            if round % 2 == 0 {
                buf[12..14].copy_from_slice(&[0x08, 0x00]);
                buf[14] = 0x45;
                buf[23] = 6;
            }
            let n = (x as usize) % buf.len();
            let _ = parse_ethernet(&buf[..n]);
            let _ = parse_ip(&buf[14..n.max(14)]);
        }
    }
}
