//! Packet crafting for the tests: IPv4 and IPv6 TCP and UDP packets and
//! Ethernet frames, built byte by byte (so a test sets every field,
//! malformed ones included), or emitted by smoltcp as a kernel would.

use std::net::Ipv6Addr;

use crate::frame::TcpFlags;

/// Builds an IPv4 TCP packet (no options) with the given flags and payload.
pub fn ipv4_tcp(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    ipv4_tcp_seq(src, sport, dst, dport, flags, 1000, payload)
}

/// Builds an IPv4 TCP packet with an explicit sequence number.
pub fn ipv4_tcp_seq(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    ipv4_tcp_full(
        (src, sport),
        (dst, dport),
        flags,
        (seq, 0),
        65535,
        &[],
        payload,
    )
}

/// Builds an IPv4 TCP packet with every field given: `(seq, ack)`, the
/// window, the options area `opts` (a multiple of 4 bytes) and the
/// payload. Checksums are left 0 (see `crate::tcp::fill_checksums`).
pub fn ipv4_tcp_full(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    flags: u8,
    (seq, ack): (u32, u32),
    window: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0, "TCP options come in 4-byte words");
    let header = 20 + opts.len();
    let total = 20 + header + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.0);
    p[16..20].copy_from_slice(&dst.0);
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((header / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    t[20..header].copy_from_slice(opts);
    t[header..].copy_from_slice(payload);
    p
}

/// A checksummed TCP/IPv4 segment as a kernel sends it (smoltcp emits it):
/// window 64240, MSS 1460, window scale 7, no payload.
pub fn emitted(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    control: smoltcp::wire::TcpControl,
    seq: u32,
    ack: Option<u32>,
) -> Vec<u8> {
    emitted_between(src.into(), dst.into(), control, seq, ack, false)
}

/// [`emitted`] between any IPv4 or IPv6 addresses, SACK permitted or not.
pub fn emitted_between(
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    control: smoltcp::wire::TcpControl,
    seq: u32,
    ack: Option<u32>,
    sack_permitted: bool,
) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, IpProtocol, IpRepr, TcpPacket, TcpRepr, TcpSeqNumber};
    let (s, d): (IpAddress, IpAddress) = (src.ip().into(), dst.ip().into());
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64240,
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let ip = IpRepr::new(s, d, IpProtocol::Tcp, tcp.buffer_len(), 64);
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0u8; ip.buffer_len()];
    ip.emit(&mut buf[..], &caps);
    let hl = ip.header_len();
    tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[hl..]), &s, &d, &caps);
    buf
}

/// Builds an IPv6 UDP packet.
pub fn ipv6_udp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let payload = b"quic-ish";
    let ulen = 8 + payload.len();
    let mut p = vec![0u8; 40 + ulen];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(ulen as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&sport.to_be_bytes());
    p[42..44].copy_from_slice(&dport.to_be_bytes());
    p[44..46].copy_from_slice(&(ulen as u16).to_be_bytes());
    p[48..].copy_from_slice(payload);
    p
}

/// Builds an IPv6 TCP packet with one hop-by-hop extension header.
pub fn ipv6_tcp_hbh(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let mut tcp = ipv4_tcp([0; 4], sport, [0; 4], dport, TcpFlags::SYN, b"")[20..].to_vec();
    let mut ext = vec![6u8, 0, 1, 4, 0, 0, 0, 0]; // next=TCP, len 0, PadN
    ext.append(&mut tcp);
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(ext.len() as u16).to_be_bytes());
    p[6] = 0; // hop-by-hop
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p.extend_from_slice(&ext);
    p
}

/// Wraps an L3 packet in Ethernet with `tags` VLAN tags.
pub fn ether(ethertype: u16, tags: &[(u16, u16)], l3: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

pub fn arp() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&[2, 0, 0, 0, 0, 1, 192, 0, 2, 10]);
    a.extend_from_slice(&[0, 0, 0, 0, 0, 0, 203, 0, 113, 1]);
    ether(0x0806, &[], &a)
}

pub fn samples() -> Vec<Vec<u8>> {
    let v6a: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let v6b: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    let syn = ipv4_tcp([192, 0, 2, 10], 40000, [203, 0, 113, 5], 443, 0x02, b"");
    let data = ipv4_tcp(
        [203, 0, 113, 5],
        443,
        [192, 0, 2, 10],
        40000,
        0x18,
        b"hello",
    );
    vec![
        ether(0x0800, &[], &syn),
        ether(0x0800, &[], &data),
        ether(0x0800, &[(0x8100, 0x2064)], &syn),
        ether(0x0800, &[(0x88a8, 0x0010), (0x8100, 0x0020)], &data),
        ether(0x86dd, &[], &ipv6_udp(v6a, 5353, v6b, 443)),
        ether(0x86dd, &[], &ipv6_tcp_hbh(v6a, 5353, v6b, 443)),
        arp(),
    ]
}
