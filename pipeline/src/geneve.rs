//! GENEVE (RFC 8926) as a gateway load balancer speaks it (DESIGN.md §13).
//!
//! In `mode = "geneve"` every frame the appliance handles arrives on one
//! interface as Ethernet / IPv4 / UDP to port 6081 / GENEVE / an inner IPv4
//! or IPv6 packet, and everything it sends leaves the same way, back to the
//! load balancer. This module is the sans-IO part: [`parse`] validates the
//! encapsulation of a received frame and says where its inner packet starts,
//! [`swap_outer`] turns a received frame into the frame that returns it (the
//! outer MAC and IP addresses swapped, nothing else touched: both checksums
//! are sums of the swapped fields, so they stay valid), and [`Encap::write`]
//! wraps a packet the appliance makes itself in a stored header.
//!
//! What is kept unchanged, as AWS and Alibaba Cloud GWLB require: the VNI,
//! every option of every class (0x0108 carries the endpoint, attachment and
//! flow cookie), the UDP ports. What is refused (counted, dropped, never
//! forwarded): a version other than 0, lengths that do not add up, control
//! (OAM) packets, an option marked critical (we understand none), inner
//! protocols other than IPv4 and IPv6, fragmented or IPv6 outer packets
//! and VLAN-tagged outer frames.
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use crate::frame::put;

/// The UDP port GENEVE is sent to.
pub const PORT: u16 = 6081;
/// GENEVE protocol type of an inner IPv4 packet.
pub const PROTO_IPV4: u16 = 0x0800;
/// GENEVE protocol type of an inner IPv6 packet.
pub const PROTO_IPV6: u16 = 0x86dd;
/// Bytes of the outer Ethernet header (no VLAN tag).
const ETH: usize = 14;
/// Bytes of the fixed GENEVE header.
const FIXED: usize = 8;
/// Longest encapsulation: Ethernet, IPv4 with options, UDP, GENEVE with 252 bytes of options.
pub const MAX_HEADER: usize = ETH + 60 + 8 + FIXED + 252;

/// Why a frame is not a GENEVE packet the appliance handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GeneveError {
    /// Not IPv4/UDP to port 6081 at all: the host's own traffic (ARP, the
    /// health check), left to the kernel.
    #[error("not a GENEVE packet")]
    NotGeneve,
    /// A header ends past the frame, or a length field disagrees with it.
    #[error("truncated or inconsistent lengths")]
    Length,
    /// A GENEVE version other than 0.
    #[error("GENEVE version is not 0")]
    Version,
    /// A control (OAM) packet: nothing to forward.
    #[error("GENEVE control packet")]
    Control,
    /// An option marked critical: we would have to understand it.
    #[error("critical GENEVE option")]
    Critical,
    /// An inner protocol other than IPv4 and IPv6 (inner Ethernet included).
    #[error("inner protocol is not IPv4 or IPv6")]
    Protocol,
    /// A fragment of the outer packet, an IPv6 or a VLAN-tagged outer frame.
    #[error("outer packet fragmented, IPv6 or VLAN-tagged")]
    Outer,
}

impl GeneveError {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            GeneveError::NotGeneve => "not_geneve",
            GeneveError::Length => "length",
            GeneveError::Version => "version",
            GeneveError::Control => "control",
            GeneveError::Critical => "critical_option",
            GeneveError::Protocol => "protocol",
            GeneveError::Outer => "outer",
        }
    }
}

/// Where the parts of a received GENEVE frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// Offset of the inner IP packet (= the length of the encapsulation).
    pub inner: usize,
    /// Offset of the outer UDP header.
    pub udp: usize,
    /// The virtual network identifier.
    pub vni: u32,
    /// The sender of the frame: the load balancer.
    pub peer: Ipv4Addr,
    /// The inner protocol ([`PROTO_IPV4`] or [`PROTO_IPV6`]).
    pub proto: u16,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Validates the encapsulation of `frame` (an Ethernet frame).
pub fn parse(frame: &[u8]) -> Result<Tunnel, GeneveError> {
    use GeneveError::*;
    match be16(frame, 12) {
        Some(0x0800) => {}
        // IPv6 to our port: a load balancer speaking IPv6 outside, which
        // we do not support (GWLBs send IPv4); any other IPv6 is the host's.
        Some(0x86dd) if frame.get(ETH + 6) == Some(&17) && be16(frame, ETH + 42) == Some(PORT) => {
            return Err(Outer);
        }
        _ => return Err(NotGeneve),
    }
    let ip = frame.get(ETH..).ok_or(NotGeneve)?;
    let (&vihl, &proto) = (ip.first().ok_or(NotGeneve)?, ip.get(9).ok_or(NotGeneve)?);
    if vihl >> 4 != 4 || proto != 17 {
        return Err(NotGeneve);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(be16(ip, 2).ok_or(NotGeneve)?);
    let frag = be16(ip, 6).ok_or(NotGeneve)?;
    let dport = be16(ip, ihl + 2);
    if dport != Some(PORT) {
        // A first fragment carries the port; later ones do not. Either way
        // a fragmented outer packet is not ours to reassemble.
        return Err(if frag & 0x3fff != 0 { Outer } else { NotGeneve });
    }
    if frag & 0x3fff != 0 {
        return Err(Outer);
    }
    if ihl < 20 || total < ihl + 8 || total > ip.len() {
        return Err(Length);
    }
    let ip = ip.get(..total).ok_or(Length)?;
    let udp_len = usize::from(be16(ip, ihl + 4).ok_or(Length)?);
    if udp_len < 8 + FIXED || ihl + udp_len > total {
        return Err(Length);
    }
    let g = ip.get(ihl + 8..ihl + udp_len).ok_or(Length)?;
    let Some(&[b0, b1, p0, p1, v0, v1, v2, _]) = g.get(..FIXED) else {
        return Err(Length);
    };
    if b0 >> 6 != 0 {
        return Err(Version);
    }
    let opt_len = usize::from(b0 & 0x3f) * 4;
    if FIXED + opt_len > g.len() {
        return Err(Length);
    }
    if b1 & 0x80 != 0 {
        return Err(Control);
    }
    let mut opts = g.get(FIXED..FIXED + opt_len).ok_or(Length)?;
    while !opts.is_empty() {
        // Class (2 bytes), type (critical bit first), length in 4-byte words.
        let (Some(&kind), Some(&words)) = (opts.get(2), opts.get(3)) else {
            return Err(Length);
        };
        let rest = opts
            .get(4 + usize::from(words & 0x1f) * 4..)
            .ok_or(Length)?;
        if kind & 0x80 != 0 {
            return Err(Critical);
        }
        opts = rest;
    }
    // The C bit promises a critical option; we walked them all above.
    let proto = u16::from_be_bytes([p0, p1]);
    let inner = g.get(FIXED + opt_len..).ok_or(Length)?;
    let version = inner.first().map(|b| b >> 4);
    match (proto, version) {
        (PROTO_IPV4, Some(4)) | (PROTO_IPV6, Some(6)) => {}
        (PROTO_IPV4 | PROTO_IPV6, _) => return Err(Length),
        _ => return Err(Protocol),
    }
    let Some(&[s0, s1, s2, s3]) = ip.get(12..16) else {
        return Err(Length);
    };
    Ok(Tunnel {
        inner: ETH + ihl + 8 + FIXED + opt_len,
        udp: ETH + ihl,
        vni: u32::from_be_bytes([0, v0, v1, v2]),
        peer: Ipv4Addr::new(s0, s1, s2, s3),
        proto,
    })
}

/// The ones'-complement sum of `b` (folded, not inverted).
fn ones(b: &[u8]) -> u16 {
    crate::tcp::checksum::csum_fold(crate::tcp::checksum::csum_add(0, b))
}

/// Turns a received frame into the frame that sends it back: destination
/// and source MAC swapped, outer IPv4 source and destination swapped. The
/// IPv4 and UDP checksums are sums over the swapped fields and stay valid.
pub fn swap_outer(frame: &mut [u8]) {
    if frame.len() < ETH + 20 {
        return;
    }
    for i in 0..6 {
        frame.swap(i, 6 + i);
    }
    for i in 0..4 {
        frame.swap(ETH + 12 + i, ETH + 16 + i);
    }
}

/// Completes a partial checksum (the kernel's `NEEDS_CSUM`: the field at
/// `start + offset` holds the pseudo-header sum) over `buf[start..]`.
///
/// Inside a tunnel nobody completes it later: a packet socket's offload
/// header describes the outer packet to the kernel, and a virtual link
/// (veth) hands a partial checksum to the receiver as it is, so the load
/// balancer would forward the inner packet with a wrong checksum.
pub fn complete_checksum(buf: &mut [u8], start: usize, offset: usize) {
    let at = start + offset;
    let Some(region) = buf
        .get(start..)
        .filter(|r| !r.is_empty() && at + 2 <= buf.len())
    else {
        return;
    };
    let c = match !ones(region) {
        0 => 0xffff, // the same value in ones' complement; UDP needs this one
        c => c,
    };
    put(buf, at, &c.to_be_bytes());
}

/// Marks the outer UDP checksum of a frame whose inner packet was changed
/// in place as absent (0, allowed for UDP over IPv4), unless the kernel
/// completes it on transmit (`partial_at_udp`).
pub fn inner_changed(frame: &mut [u8], t: &Tunnel, partial_at_udp: bool) {
    if partial_at_udp {
        return;
    }
    if let Some(c) = frame.get_mut(t.udp + 6..t.udp + 8) {
        c.copy_from_slice(&[0, 0]);
    }
}

/// The stored encapsulation of one direction of a flow: the header of a
/// frame received from the load balancer, swapped (so it addresses the load
/// balancer), to put in front of the packets the appliance makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encap {
    header: Box<[u8]>,
    udp: usize,
}

impl Encap {
    /// The header of the received frame `frame` whose tunnel is `t`, swapped.
    pub fn of(frame: &[u8], t: &Tunnel) -> Option<Encap> {
        let mut header: Box<[u8]> = frame.get(..t.inner)?.into();
        swap_outer(&mut header);
        Some(Encap { header, udp: t.udp })
    }

    /// Bytes before the inner packet.
    pub fn len(&self) -> usize {
        self.header.len()
    }

    /// Never true: a header has at least its fixed parts.
    pub fn is_empty(&self) -> bool {
        self.header.is_empty()
    }

    /// Appends `packet` wrapped in this header to `out`: outer lengths and
    /// the IPv4 checksum set for it, the UDP checksum 0 (none, as GWLB
    /// sends), the protocol type that of the packet's IP version.
    pub fn write(&self, packet: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.header);
        out.extend_from_slice(packet);
        let Some(f) = out.get_mut(start..) else {
            return;
        };
        let u = self.udp;
        let ip_total = (f.len() - ETH) as u16;
        let udp_len = (f.len() - u) as u16;
        put(f, ETH + 2, &ip_total.to_be_bytes());
        put(f, ETH + 10, &[0, 0]);
        let sum = f.get(ETH..u).map_or(0, ones);
        put(f, ETH + 10, &(!sum).to_be_bytes());
        put(f, u + 4, &udp_len.to_be_bytes());
        put(f, u + 6, &[0, 0]);
        let proto = if packet.first().map(|b| b >> 4) == Some(6) {
            PROTO_IPV6
        } else {
            PROTO_IPV4
        };
        put(f, u + 8 + 2, &proto.to_be_bytes());
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A GENEVE frame from 198.51.100.129 (the load balancer) to .131 with
    /// AWS's three options (class 0x0108) around `inner`.
    pub(crate) fn frame(inner: &[u8], vni: u32) -> Vec<u8> {
        frame_with(inner, vni, [9; 4])
    }

    /// Like [`frame`], with this flow cookie (option type 3).
    pub(crate) fn frame_with(inner: &[u8], vni: u32, cookie: [u8; 4]) -> Vec<u8> {
        let mut opts = Vec::new();
        for (ty, data) in [(1u8, &[7u8; 8][..]), (2, &[8u8; 8][..]), (3, &cookie[..])] {
            opts.extend_from_slice(&0x0108u16.to_be_bytes());
            opts.push(ty);
            opts.push((data.len() / 4) as u8);
            opts.extend_from_slice(data);
        }
        let mut g = vec![(opts.len() / 4) as u8, 0];
        let proto = if inner[0] >> 4 == 6 {
            PROTO_IPV6
        } else {
            PROTO_IPV4
        };
        g.extend_from_slice(&proto.to_be_bytes());
        g.extend_from_slice(&vni.to_be_bytes()[1..]);
        g.push(0);
        g.extend_from_slice(&opts);
        g.extend_from_slice(inner);
        let udp_len = (8 + g.len()) as u16;
        let mut f = vec![2, 0, 0, 0, 0, 0x31, 2, 0, 0, 0, 0, 0x29, 0x08, 0x00];
        let total = 20 + udp_len;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0]);
        f[14 + 2..14 + 4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[198, 51, 100, 129, 198, 51, 100, 131]);
        let sum = ones(&f[14..34]);
        f[24..26].copy_from_slice(&(!sum).to_be_bytes());
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&PORT.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&g);
        f
    }

    fn inner_v4() -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&[192, 0, 2, 10, 203, 0, 113, 10]);
        p.extend_from_slice(&[0u8; 20]);
        p
    }

    #[test]
    fn parses_aws_style_frames_and_finds_the_inner_packet() {
        let inner = inner_v4();
        let f = frame(&inner, 0x00ab_cdef);
        let t = parse(&f).unwrap();
        assert_eq!(t.vni, 0x00ab_cdef);
        assert_eq!(t.peer, Ipv4Addr::new(198, 51, 100, 129));
        assert_eq!(t.proto, PROTO_IPV4);
        assert_eq!(t.udp, 34);
        assert_eq!(&f[t.inner..], &inner[..]);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 6, 64];
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6.extend_from_slice(&[0u8; 28]);
        let t6 = parse(&frame(&v6, 1)).unwrap();
        assert_eq!(t6.proto, PROTO_IPV6);
    }

    #[test]
    fn swapping_returns_the_frame_to_its_sender_with_valid_checksums() {
        let f = frame(&inner_v4(), 5);
        let mut s = f.clone();
        swap_outer(&mut s);
        assert_eq!(&s[0..6], &f[6..12]);
        assert_eq!(&s[6..12], &f[0..6]);
        assert_eq!(&s[26..30], &f[30..34]);
        assert_eq!(&s[30..34], &f[26..30]);
        assert_eq!(ones(&s[14..34]), 0xffff);
        // Everything after the outer IP addresses (ports, VNI, options, inner) is unchanged.
        assert_eq!(&s[34..], &f[34..]);
    }

    #[test]
    fn a_stored_header_wraps_other_packets_with_their_lengths() {
        let f = frame(&inner_v4(), 77);
        let mut s = f.clone();
        swap_outer(&mut s);
        let t = parse(&f).unwrap();
        let e = Encap::of(&f, &t).unwrap();
        let mut pkt = inner_v4();
        pkt.extend_from_slice(&[0xaa; 100]);
        pkt[2..4].copy_from_slice(&140u16.to_be_bytes());
        let mut out = vec![0xee];
        e.write(&pkt, &mut out);
        let w = &out[1..];
        // It parses as a frame again (as the load balancer will), swapped back.
        let mut back = w.to_vec();
        swap_outer(&mut back);
        let t2 = parse(&back).unwrap();
        assert_eq!((t2.vni, t2.inner), (77, t.inner));
        assert_eq!(&back[t2.inner..], &pkt[..]);
        assert_eq!(ones(&w[14..34]), 0xffff);
        assert_eq!(&w[t.udp + 6..t.udp + 8], &[0, 0]);
        // The options are the received ones.
        assert_eq!(&w[t.udp + 8..t.inner], &f[t.udp + 8..t.inner]);
    }

    #[test]
    fn malformed_encapsulations_are_refused_by_reason() {
        let good = frame(&inner_v4(), 1);
        let g = 34 + 8; // GENEVE header offset
        let case = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            parse(&v)
        };
        assert_eq!(case(&|v| v[g] |= 0x40), Err(GeneveError::Version));
        assert_eq!(case(&|v| v[g + 1] |= 0x80), Err(GeneveError::Control));
        assert_eq!(case(&|v| v[g + 8 + 2] |= 0x80), Err(GeneveError::Critical));
        assert_eq!(case(&|v| v[g] = 0x3f), Err(GeneveError::Length));
        assert_eq!(case(&|v| v[g + 8 + 3] = 0x1f), Err(GeneveError::Length));
        assert_eq!(case(&|v| v[g + 2] = 0x65), Err(GeneveError::Protocol));
        assert_eq!(case(&|v| v[20] = 0x20), Err(GeneveError::Outer));
        assert_eq!(case(&|v| v[36] = 0), Err(GeneveError::NotGeneve));
        assert_eq!(case(&|v| v[12] = 0x86), Err(GeneveError::NotGeneve));
        assert_eq!(case(&|v| v.truncate(60)), Err(GeneveError::Length));
        assert_eq!(
            case(&|v| v[38..40].copy_from_slice(&[0, 9])),
            Err(GeneveError::Length)
        );
        // Every prefix of a good frame is refused without a panic.
        for n in 0..good.len() {
            assert!(parse(&good[..n]).is_err(), "prefix {n}");
        }
    }
}
