//! TCP/IP checksums (RFC 1071): verifying a received segment, completing
//! one smoltcp emitted, or leaving the pseudo-header sum for a device that
//! completes it (`NEEDS_CSUM`). One implementation for the TCP legs and the
//! super-frame code (`crate::gso`).
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use crate::frame::put;

/// Adds `data` to a one's-complement accumulator, 8 bytes at a time.
///
/// RFC 1071 §2: the sum may be taken over wider words and folded later; the
/// big-endian load keeps the 16-bit words in network order.
pub(crate) fn csum_add(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let (sum, carry) = acc.overflowing_add(u64::from_be_bytes(w));
        acc = sum + u64::from(carry);
    }
    for p in chunks.remainder().chunks(2) {
        // An odd last byte is the high half of a word padded with zero.
        let word = match *p {
            [hi, lo] => u16::from_be_bytes([hi, lo]),
            [hi] => u16::from_be_bytes([hi, 0]),
            _ => 0,
        };
        let (sum, carry) = acc.overflowing_add(u64::from(word));
        acc = sum + u64::from(carry);
    }
    acc
}

pub(crate) fn csum_fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header sum (RFC 9293 §3.1) over the addresses, the protocol
/// and the segment length.
///
/// Every word goes through `csum_add`'s end-around carry: a plain `+` on the
/// accumulator overflows for addresses like 255.255.255.255 (the
/// `tcp_segment` fuzz target found it: a panic with overflow checks, a
/// checksum off by one without).
fn pseudo_sum(addresses: &[u8], proto: u8, len: usize) -> u64 {
    let [hi, lo] = (len as u16).to_be_bytes();
    csum_add(csum_add(0, addresses), &[0, proto, hi, lo])
}

/// Locates the TCP segment of an IP packet: (offset, length, pseudo-header sum).
/// `None` for anything that is not plain IPv4/IPv6 + TCP.
pub(crate) fn tcp_span(packet: &[u8]) -> Option<(usize, usize, u64)> {
    const TCP: u8 = 6;
    let first = *packet.first()?;
    match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            if *packet.get(9)? != TCP || ihl < 20 || total < ihl + 20 || total > packet.len() {
                return None;
            }
            let len = total - ihl;
            Some((ihl, len, pseudo_sum(packet.get(12..20)?, TCP, len)))
        }
        6 => {
            let len = usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
            if *packet.get(6)? != TCP || len < 20 || 40 + len > packet.len() {
                return None;
            }
            Some((40, len, pseudo_sum(packet.get(8..40)?, TCP, len)))
        }
        _ => None,
    }
}

/// Whether a TCP/IP packet's TCP checksum is right. Non-TCP packets pass
/// (smoltcp handles or drops them).
pub(crate) fn tcp_checksum_ok(packet: &[u8]) -> bool {
    match tcp_span(packet) {
        Some((off, len, pseudo)) => packet
            .get(off..off + len)
            .is_some_and(|segment| csum_fold(csum_add(pseudo, segment)) == 0xffff),
        None => true,
    }
}

/// Writes the pseudo-header sum (not complemented) into the TCP checksum
/// field, for a device that completes the checksum (`NEEDS_CSUM`).
pub(crate) fn fill_tcp_pseudo(packet: &mut [u8]) {
    if let Some((off, _, pseudo)) = tcp_span(packet) {
        put(packet, off + 16, &csum_fold(pseudo).to_be_bytes());
    }
}

/// Fills in the TCP checksum of a packet smoltcp just emitted (with a zero checksum field).
pub(crate) fn fill_tcp_checksum(packet: &mut [u8]) {
    if let Some((off, len, pseudo)) = tcp_span(packet) {
        put(packet, off + 16, &[0, 0]);
        if let Some(segment) = packet.get(off..off + len) {
            let sum = !csum_fold(csum_add(pseudo, segment));
            put(packet, off + 16, &sum.to_be_bytes());
        }
    }
}

/// Fills in both checksums of a crafted IPv4 or IPv6 TCP packet: the IPv4
/// header's (smoltcp) and the TCP segment's. For the lab's packet tools; a
/// packet whose IPv4 header lengths do not fit the buffer gets only the TCP
/// checksum, if any.
pub fn fill_checksums(packet: &mut [u8]) {
    if packet.first().is_some_and(|b| b >> 4 == 4) {
        if let Ok(mut ip) = smoltcp::wire::Ipv4Packet::new_checked(&mut *packet) {
            ip.fill_checksum();
        }
    }
    fill_tcp_checksum(packet);
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::tcp::segment;

    #[test]
    fn matches_smoltcp_on_crafted_segments() {
        // refusal_rst is built with smoltcp's own checksum code.
        for (src, dst) in [
            ("192.0.2.10:40000", "203.0.113.5:443"),
            ("[2001:db8:1::10]:40000", "[2001:db8:2::5]:443"),
        ] {
            let syn = segment::Segment {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                seq: 0x0102_0304,
                ack: None,
                syn: true,
                rst: false,
                fin: false,
                mss: None,
                window_scale: None,
                sack_permitted: false,
                timestamps: false,
                payload_len: 0,
            };
            let mut p = segment::refusal_rst(&syn);
            assert!(tcp_checksum_ok(&p));
            let (off, _, _) = tcp_span(&p).unwrap();
            let good = [p[off + 16], p[off + 17]];
            fill_tcp_checksum(&mut p);
            assert_eq!([p[off + 16], p[off + 17]], good);
            p[off + 5] ^= 1;
            assert!(!tcp_checksum_ok(&p));
        }
    }

    #[test]
    fn pseudo_header_of_all_ones_addresses_does_not_overflow() {
        // The input the `tcp_segment` fuzz target found: 255.255.255.255 to
        // 255.255.255.255 (and the IPv6 all-ones pair), checked against
        // smoltcp's own checksum code.
        for (src, dst) in [
            ("255.255.255.255:40000", "255.255.255.255:443"),
            (
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:40000",
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:443",
            ),
        ] {
            let syn = segment::Segment {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                seq: 0xffff_ffff,
                ack: None,
                syn: true,
                rst: false,
                fin: false,
                mss: None,
                window_scale: None,
                sack_permitted: false,
                timestamps: false,
                payload_len: 0,
            };
            let mut p = segment::refusal_rst(&syn);
            assert!(tcp_checksum_ok(&p), "{src}");
            let (off, _, _) = tcp_span(&p).unwrap();
            let good = [p[off + 16], p[off + 17]];
            fill_tcp_checksum(&mut p);
            assert_eq!([p[off + 16], p[off + 17]], good, "{src}");
        }
    }
}
