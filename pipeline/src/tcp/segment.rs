//! Reading the few TCP/IP facts the splice needs from a raw IP packet, and
//! crafting the one packet smoltcp cannot produce for us (the RST that
//! refuses a held SYN).
//!
//! Parsing goes through smoltcp's checked wire views (`new_checked` + `Repr::parse`
//! with checksum verification), so a truncated or corrupted packet is a typed
//! error, never a panic.
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, IpRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl,
    TcpPacket, TcpRepr, TcpSeqNumber,
};

/// Why a packet could not be read as a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// The IP header is truncated, malformed or has a bad checksum.
    #[error("malformed IP header")]
    Ip,
    /// The IP version nibble is neither 4 nor 6.
    #[error("IP version {0} is not supported")]
    Version(u8),
    /// The packet is not TCP (or IPv6 with extension headers in front of TCP).
    #[error("not a TCP packet (next header {0})")]
    NotTcp(u8),
    /// The TCP header is truncated, malformed or has a bad checksum.
    #[error("malformed TCP segment")]
    Tcp,
}

/// The facts of one TCP segment that the splice looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number, if the ACK flag is set.
    pub ack: Option<u32>,
    /// SYN flag.
    pub syn: bool,
    /// RST flag.
    pub rst: bool,
    /// FIN flag.
    pub fin: bool,
    /// Maximum segment size option.
    pub mss: Option<u16>,
    /// Window scale option (shift count).
    pub window_scale: Option<u8>,
    /// SACK-permitted option.
    pub sack_permitted: bool,
    /// Whether the timestamps option is present.
    pub timestamps: bool,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Segment {
    /// Whether this is an opening SYN (SYN without ACK, RST or FIN).
    pub fn is_opening_syn(&self) -> bool {
        self.syn && self.ack.is_none() && !self.rst && !self.fin
    }
}

/// Parses an IPv4 or IPv6 packet carrying TCP, verifying both checksums.
pub fn parse(packet: &[u8]) -> Result<Segment, PacketError> {
    parse_with(packet, true)
}

/// Like [`parse`]; the TCP checksum is verified only with `verify_tcp`
/// (false for a packet whose checksum the kernel verified or left partial).
pub fn parse_with(packet: &[u8], verify_tcp: bool) -> Result<Segment, PacketError> {
    let mut caps = ChecksumCapabilities::default();
    if !verify_tcp {
        caps.tcp = smoltcp::phy::Checksum::None;
    }
    let version = packet.first().map(|b| b >> 4).ok_or(PacketError::Ip)?;
    let (src, dst, payload): (IpAddress, IpAddress, &[u8]) = match version {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| PacketError::Ip)?;
            // smoltcp takes an IHL under 5 and reads TCP from inside the IP
            // header (found by the `tcp_segment` fuzz target).
            if ip.header_len() < 20 {
                return Err(PacketError::Ip);
            }
            let repr = Ipv4Repr::parse(&ip, &caps).map_err(|_| PacketError::Ip)?;
            if repr.next_header != IpProtocol::Tcp {
                return Err(PacketError::NotTcp(repr.next_header.into()));
            }
            // `payload()` honours the total-length field, dropping link padding.
            let hl = usize::from(ip.header_len());
            let end = hl + repr.payload_len;
            let payload = packet.get(hl..end).ok_or(PacketError::Ip)?;
            (repr.src_addr.into(), repr.dst_addr.into(), payload)
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).map_err(|_| PacketError::Ip)?;
            let repr = Ipv6Repr::parse(&ip).map_err(|_| PacketError::Ip)?;
            if repr.next_header != IpProtocol::Tcp {
                return Err(PacketError::NotTcp(repr.next_header.into()));
            }
            let payload = packet
                .get(40..40 + repr.payload_len)
                .ok_or(PacketError::Ip)?;
            (repr.src_addr.into(), repr.dst_addr.into(), payload)
        }
        v => return Err(PacketError::Version(v)),
    };
    let tcp = TcpPacket::new_checked(payload).map_err(|_| PacketError::Tcp)?;
    let repr = TcpRepr::parse(&tcp, &src, &dst, &caps).map_err(|_| PacketError::Tcp)?;
    Ok(Segment {
        src: SocketAddr::new(src.into(), repr.src_port),
        dst: SocketAddr::new(dst.into(), repr.dst_port),
        seq: repr.seq_number.0 as u32,
        ack: repr.ack_number.map(|a| a.0 as u32),
        syn: repr.control == TcpControl::Syn,
        rst: repr.control == TcpControl::Rst,
        fin: repr.control == TcpControl::Fin,
        mss: repr.max_seg_size,
        window_scale: repr.window_scale,
        sack_permitted: repr.sack_permitted,
        timestamps: repr.timestamp.is_some(),
        payload_len: repr.payload.len(),
    })
}

/// Builds the RST|ACK a refusing host sends in answer to `syn`.
///
/// Addressed from the SYN's destination to its source, with `ack = isn + 1`
/// and `seq = 0`: RFC 9293 §3.10.7.3 makes a SYN-SENT client accept an RST
/// whose ACK acknowledges its SYN, so the client reports "connection refused"
/// at once.
pub fn refusal_rst(syn: &Segment) -> Vec<u8> {
    rst(syn.dst, syn.src, 0, Some(syn.seq.wrapping_add(1)))
}

/// Builds a bare RST from `src` to `dst` with sequence number `seq`: what
/// ends a connection the appliance gives up on once its own TCP legs are
/// gone (a released flow), `seq` being the next number `dst` expects so it
/// takes the reset at once (RFC 5961 §3.2).
pub fn reset(src: SocketAddr, dst: SocketAddr, seq: u32) -> Vec<u8> {
    rst(src, dst, seq, None)
}

/// An RST (RST|ACK with `ack`) from `src` to `dst`, both checksums filled.
fn rst(src: SocketAddr, dst: SocketAddr, seq: u32, ack: Option<u32>) -> Vec<u8> {
    let (s, d): (IpAddress, IpAddress) = (src.ip().into(), dst.ip().into());
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let ip = IpRepr::new(s, d, IpProtocol::Tcp, tcp.buffer_len(), 64);
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0u8; ip.buffer_len()];
    ip.emit(buf.as_mut_slice(), &caps);
    if let Some(segment) = buf.get_mut(ip.header_len()..) {
        tcp.emit(&mut TcpPacket::new_unchecked(segment), &s, &d, &caps);
    }
    buf
}

/// Rewrites the MSS option of a SYN or SYN-ACK in place, fixing the TCP
/// checksum. `f(mss, has_timestamps)` returns the new value. Returns whether
/// an MSS option was found (and rewritten).
///
/// Used on SYNs only, so recomputing the whole checksum costs nothing that matters.
pub(crate) fn rewrite_syn_mss(packet: &mut [u8], f: impl FnOnce(u16, bool) -> u16) -> bool {
    edit_options(packet, |opts| {
        let (mut mss_at, mut timestamps) = (None, false);
        walk_options(opts, |kind, at, len| {
            if kind == 2 && len == 4 {
                mss_at = Some(at + 2);
            }
            timestamps |= kind == 8;
        });
        let Some(mss) = mss_at
            .and_then(|at| opts.get_mut(at..at + 2))
            .and_then(|b| <&mut [u8; 2]>::try_from(b).ok())
        else {
            return false;
        };
        *mss = f(u16::from_be_bytes(*mss), timestamps).to_be_bytes();
        true
    })
}

/// Replaces the timestamps option of a SYN with NOPs, fixing the TCP
/// checksum: the client leg then answers without timestamps, as the server
/// did (so a released connection uses them on both legs or on neither).
/// Returns whether there was one.
pub(crate) fn strip_syn_timestamps(packet: &mut [u8]) -> bool {
    edit_options(packet, |opts| {
        let mut found = None;
        walk_options(opts, |kind, at, len| {
            if kind == 8 {
                found = Some((at, len));
            }
        });
        let Some(option) = found.and_then(|(at, len)| opts.get_mut(at..at + len)) else {
            return false;
        };
        option.fill(1);
        true
    })
}

/// Calls `f(kind, at, len)` for each well-formed option (`opts[at..at + len]`
/// is the whole option, kind and length bytes included).
fn walk_options(opts: &[u8], mut f: impl FnMut(u8, usize, usize)) {
    super::release::for_each_option(opts, |kind, body, len| f(kind, body - 2, len + 2));
}

/// Runs `edit` on the TCP options of an IPv4/IPv6 packet and, when it says
/// it changed them, recomputes the TCP checksum. Returns what `edit` returned.
fn edit_options(packet: &mut [u8], edit: impl FnOnce(&mut [u8]) -> bool) -> bool {
    let (start, end, src, dst): (usize, usize, IpAddress, IpAddress) =
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let Ok(ip) = Ipv4Packet::new_checked(&*packet) else {
                    return false;
                };
                if ip.header_len() < 20 {
                    return false;
                }
                (
                    usize::from(ip.header_len()),
                    usize::from(ip.total_len()),
                    ip.src_addr().into(),
                    ip.dst_addr().into(),
                )
            }
            Some(6) => {
                let Ok(ip) = Ipv6Packet::new_checked(&*packet) else {
                    return false;
                };
                (
                    40,
                    40 + usize::from(ip.payload_len()),
                    ip.src_addr().into(),
                    ip.dst_addr().into(),
                )
            }
            _ => return false,
        };
    let Some(bytes) = packet.get_mut(start..end) else {
        return false;
    };
    let Ok(mut tcp) = TcpPacket::new_checked(bytes) else {
        return false;
    };
    if !edit(tcp.options_mut()) {
        return false;
    }
    tcp.fill_checksum(&src, &dst);
    true
}
