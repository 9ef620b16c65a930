//! Coalescing a flow's consecutive TCP segments into one super-frame, sans-IO.
//!
//! The cost of moving a byte through the appliance is mostly the kernel's
//! per-frame work (one skb per `sendmmsg` message, the peer's receive path
//! run in our syscall on veth). An intercepted flow's TCP legs emit
//! MTU-sized segments; handing the kernel one 64 KiB frame with a GSO header
//! instead of 44 of them cuts that work by the same factor, and the kernel
//! (or the NIC, with TSO) cuts the frame up again only where a link needs
//! it. This is what wireguard-go and gVisor do on their TUN devices.
//!
//! [`append`] merges a segment into the super-frame that ends the TX buffer
//! when it continues it exactly: same addresses, ports, ACK, window and
//! options, the next sequence number, at most the first segment's size, and
//! no flag a GSO frame could not carry on every piece (SYN, RST, URG; a FIN
//! only on the last). The super-frame's TCP checksum becomes the
//! pseudo-header sum with `NEEDS_CSUM`, which the transmitter completes.
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use smoltcp::wire::Ipv4Packet;

use crate::frame::put;
use crate::io::Offload;
use crate::tcp::checksum::{fill_tcp_checksum, fill_tcp_pseudo};

/// Largest IP packet (IPv4 total length, IPv6 payload length fits too).
const MAX_IP_LEN: usize = 65_535;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const URG: u8 = 0x20;

/// Where the parts of a plain TCP/IP packet are (no IPv6 extension headers).
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    ip_hl: usize,
    tcp_hl: usize,
    /// IP header + TCP header + payload.
    len: usize,
    seq: u32,
    flags: u8,
}

impl Layout {
    fn payload(&self) -> usize {
        self.len - self.ip_hl - self.tcp_hl
    }
}

fn layout(p: &[u8]) -> Option<Layout> {
    let first = *p.first()?;
    let (v6, ip_hl, len) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
            // No fragments, TCP only.
            let frag = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]) & 0x3fff;
            if *p.get(9)? != 6 || ihl < 20 || frag != 0 {
                return None;
            }
            (false, ihl, total)
        }
        6 => {
            let plen = usize::from(u16::from_be_bytes([*p.get(4)?, *p.get(5)?]));
            if *p.get(6)? != 6 {
                return None;
            }
            (true, 40, 40 + plen)
        }
        _ => return None,
    };
    if len > p.len() || len < ip_hl + 20 {
        return None;
    }
    let tcp: &[u8; 20] = p.get(ip_hl..)?.first_chunk()?;
    let tcp_hl = usize::from(tcp[12] >> 4) * 4;
    if tcp_hl < 20 || ip_hl + tcp_hl > len {
        return None;
    }
    Some(Layout {
        v6,
        ip_hl,
        tcp_hl,
        len,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        flags: tcp[13],
    })
}

/// Whether the IP headers of two packets of one flow agree but for the
/// fields each packet has its own of (lengths, id, checksum, flow label).
fn same_ip(a: &[u8], b: &[u8], v6: bool) -> bool {
    // Both are whole TCP/IP packets (see `layout`): at least 40 bytes.
    let (Some(a), Some(b)) = (a.first_chunk::<40>(), b.first_chunk::<40>()) else {
        return false;
    };
    if v6 {
        a[0] == b[0] && a[6..40] == b[6..40]
    } else {
        a[0..2] == b[0..2] && a[6..10] == b[6..10] && a[12..20] == b[12..20]
    }
}

/// Whether the TCP headers agree but for sequence number, checksum and PSH/FIN.
fn same_tcp(a: &[u8], b: &[u8], hl: usize) -> bool {
    let (Some(fa), Some(fb)) = (a.first_chunk::<20>(), b.first_chunk::<20>()) else {
        return false;
    };
    fa[0..4] == fb[0..4]
        && fa[8..13] == fb[8..13]
        && (fa[13] & !(PSH | FIN)) == (fb[13] & !(PSH | FIN))
        && fa[14..16] == fb[14..16]
        && a.get(20..hl) == b.get(20..hl)
}

/// Merges the IP packet `seg` into the one that ends `buf` at `start`
/// (`buf[start..]`, preceded by `l2` bytes of link header) when it continues
/// it; `offload` is that frame's header and is updated. Returns whether `seg`
/// was merged (otherwise nothing changed).
pub fn append(
    buf: &mut Vec<u8>,
    start: usize,
    l2: usize,
    offload: &mut Offload,
    seg: &[u8],
) -> bool {
    let Some(head) = buf.get(start + l2..) else {
        return false;
    };
    let (Some(a), Some(b)) = (layout(head), layout(seg)) else {
        return false;
    };
    if a.v6 != b.v6 || a.ip_hl != b.ip_hl || a.tcp_hl != b.tcp_hl || head.len() != a.len {
        return false;
    }
    let (Some(tcp_a), Some(tcp_b), Some(payload)) = (
        head.get(a.ip_hl..),
        seg.get(b.ip_hl..),
        seg.get(b.ip_hl + b.tcp_hl..b.len),
    ) else {
        return false;
    };
    let (pa, pb) = (a.payload(), b.payload());
    // The frame so far: whole segments of `size` bytes each.
    let size = if offload.is_gso() {
        usize::from(offload.gso_size)
    } else {
        pa
    };
    if pa == 0
        || pb == 0
        || pb > size
        || pa % size != 0
        || a.flags & (SYN | RST | URG | FIN) != 0
        || b.flags & (SYN | RST | URG) != 0
        || b.seq != a.seq.wrapping_add(pa as u32)
        || a.len + pb > MAX_IP_LEN
        || !same_ip(head, seg, a.v6)
        || !same_tcp(tcp_a, tcp_b, a.tcp_hl)
    {
        return false;
    }
    buf.extend_from_slice(payload);
    if let Some(p) = buf.get_mut(start + l2..) {
        set_ip_len(p, a.v6, a.len + pb);
        if let Some(flags) = p.get_mut(a.ip_hl + 13) {
            *flags |= b.flags & (PSH | FIN);
        }
        // The pseudo-header sum, not complemented: the transmitter adds the
        // segment's own sum and complements (Linux's CHECKSUM_PARTIAL).
        fill_tcp_pseudo(p);
    }
    *offload = Offload {
        flags: Offload::NEEDS_CSUM,
        gso_type: if a.v6 {
            Offload::GSO_TCPV6
        } else {
            Offload::GSO_TCPV4
        },
        hdr_len: (l2 + a.ip_hl + a.tcp_hl) as u16,
        gso_size: size as u16,
        csum_start: (l2 + a.ip_hl) as u16,
        csum_offset: 16,
    };
    true
}

/// Writes the IP length of a packet of `len` bytes (headers included) and,
/// for IPv4, its header checksum.
fn set_ip_len(p: &mut [u8], v6: bool, len: usize) {
    if v6 {
        put(p, 4, &((len - 40) as u16).to_be_bytes());
    } else {
        put(p, 2, &(len as u16).to_be_bytes());
        Ipv4Packet::new_unchecked(&mut *p).fill_checksum();
    }
}

/// Cuts a super-frame (`frame` with its `offload` header) into the segments
/// a receiver would see, with complete checksums: what the kernel's GSO does.
///
/// Used by the tests and the fuzz target to check what [`append`] made.
pub fn segment(frame: &[u8], offload: &Offload, l2: usize) -> Vec<Vec<u8>> {
    let Some(ip) = frame.get(l2..) else {
        return Vec::new();
    };
    let Some(a) = layout(ip) else {
        return vec![frame.to_vec()];
    };
    let size = if offload.is_gso() {
        usize::from(offload.gso_size).max(1)
    } else {
        a.payload().max(1)
    };
    let hdr = l2 + a.ip_hl + a.tcp_hl;
    let (Some(header), Some(payload)) = (frame.get(..hdr), frame.get(hdr..l2 + a.len)) else {
        return vec![frame.to_vec()];
    };
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(size).collect()
    };
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut s = Vec::with_capacity(hdr + chunk.len());
        s.extend_from_slice(header);
        s.extend_from_slice(chunk);
        if let Some(p) = s.get_mut(l2..) {
            let len = a.ip_hl + a.tcp_hl + chunk.len();
            let seq = a.seq.wrapping_add((i * size) as u32);
            if !a.v6 {
                if let Some(&[hi, lo]) = p.get(4..6) {
                    let id = u16::from_be_bytes([hi, lo]).wrapping_add(i as u16);
                    put(p, 4, &id.to_be_bytes());
                }
            }
            set_ip_len(p, a.v6, len);
            let t = a.ip_hl;
            put(p, t + 4, &seq.to_be_bytes());
            if let Some(flags) = p.get_mut(t + 13).filter(|_| i + 1 < n) {
                *flags &= !(PSH | FIN);
            }
            fill_tcp_checksum(p);
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::io::TxBatch;
    use crate::tcp::checksum::tcp_checksum_ok;
    use crate::testkit::packets as ft;

    fn seg(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        ft::ipv4_tcp_seq(
            [192, 0, 2, 10],
            40000,
            [203, 0, 113, 5],
            443,
            flags,
            seq,
            payload,
        )
    }

    const ACK: u8 = 0x10;

    #[test]
    fn consecutive_full_segments_merge_and_segment_back_identically() {
        let parts: Vec<Vec<u8>> = (0..5u32)
            .map(|i| {
                let len = if i == 4 { 300 } else { 1000 };
                let payload: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
                let flags = if i == 4 { ACK | PSH } else { ACK };
                seg(1000 + i * 1000, flags, &payload)
            })
            .collect();
        let mut buf = b"0123456789abcd".to_vec();
        buf.extend_from_slice(&parts[0]);
        let mut off = Offload::default();
        for p in &parts[1..] {
            assert!(append(&mut buf, 0, 14, &mut off, p));
        }
        assert!(off.is_gso());
        assert_eq!(off.gso_size, 1000);
        assert_eq!(usize::from(off.hdr_len), 14 + 40);
        let back = segment(&buf, &off, 14);
        assert_eq!(back.len(), 5);
        // Ids and checksums are each segment's own; the rest is identical.
        let norm = |p: &[u8]| {
            let mut p = p.to_vec();
            for i in [4, 5, 10, 11, 36, 37] {
                p[i] = 0;
            }
            p
        };
        for (b, p) in back.iter().zip(&parts) {
            assert_eq!(&b[..14], b"0123456789abcd");
            let ip = &b[14..];
            assert_eq!(norm(ip), norm(p));
            assert!(
                Ipv4Packet::new_checked(ip).unwrap().verify_checksum(),
                "IP header checksum"
            );
            assert!(tcp_checksum_ok(ip), "TCP checksum");
        }
        // A segment after a short one, or out of order, does not merge.
        assert!(!append(
            &mut buf,
            0,
            14,
            &mut off,
            &seg(5300, ACK, &[1; 10])
        ));
    }

    #[test]
    fn gaps_flags_and_other_flows_are_refused() {
        let first = seg(1, ACK, &[0; 100]);
        let cases = [
            seg(102, ACK, &[0; 100]),      // gap
            seg(101, ACK | SYN, &[0; 10]), // SYN
            seg(101, ACK | RST, &[0; 10]), // RST
            seg(101, ACK, &[0; 101]),      // larger than the first
            seg(101, ACK, &[]),            // pure ACK
            ft::ipv4_tcp_seq(
                [192, 0, 2, 11],
                40000,
                [203, 0, 113, 5],
                443,
                ACK,
                101,
                &[0; 10],
            ),
        ];
        for c in &cases {
            let mut buf = first.clone();
            let mut off = Offload::default();
            assert!(!append(&mut buf, 0, 0, &mut off, c));
            assert_eq!(buf, first);
            assert_eq!(off, Offload::default());
        }
        // A FIN may end a super-frame; nothing follows it.
        let mut buf = first.clone();
        let mut off = Offload::default();
        assert!(append(
            &mut buf,
            0,
            0,
            &mut off,
            &seg(101, ACK | FIN, &[0; 50])
        ));
        assert!(!append(&mut buf, 0, 0, &mut off, &seg(151, ACK, &[0; 50])));
    }

    #[test]
    fn garbage_never_panics() {
        let first = seg(1, ACK, &[0; 100]);
        for n in 0..first.len() {
            let mut buf = first.clone();
            let mut off = Offload::default();
            let _ = append(&mut buf, 0, 0, &mut off, &first[..n]);
            let mut cut = first[..n].to_vec();
            let _ = append(&mut cut, 0, 0, &mut off, &first);
            let _ = segment(&first[..n], &off, 0);
        }
    }

    fn eth_frame(macs: &[u8; 12], seq: u32, len: usize) -> Vec<u8> {
        let ip = ft::ipv4_tcp_seq(
            [192, 0, 2, 10],
            1,
            [203, 0, 113, 5],
            2,
            0x10,
            seq,
            &vec![7; len],
        );
        let mut f = macs.to_vec();
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f
    }

    #[test]
    fn tx_batch_merges_a_flows_next_segment_only_under_the_same_link_header() {
        let macs = [1u8; 12];
        let mut b = TxBatch::new(1 << 16, 4).coalescing(append);
        let first = eth_frame(&macs, 100, 1000);
        b.push(&[&Offload::default().to_bytes(), &first]);
        assert!(b.append_segment(&eth_frame(&macs, 1100, 1000), 14));
        assert!(b.append_segment(&eth_frame(&macs, 2100, 500), 14));
        let other = [2u8; 12];
        assert!(
            !b.append_segment(&eth_frame(&other, 2600, 500), 14),
            "other MACs"
        );
        let all: Vec<&[u8]> = b.frames().collect();
        assert_eq!(all.len(), 1);
        let mut hdr = [0u8; Offload::LEN];
        hdr.copy_from_slice(&all[0][..Offload::LEN]);
        let off = Offload::from_bytes(&hdr);
        assert!(off.is_gso() && off.flags == Offload::NEEDS_CSUM);
        assert_eq!(
            (off.gso_size, off.csum_start, off.hdr_len),
            (1000, 14 + 20, 14 + 40)
        );
        assert_eq!(all[0].len(), Offload::LEN + 14 + 40 + 2500);
        let segs = segment(&all[0][Offload::LEN..], &off, 14);
        assert_eq!(
            segs.iter().map(Vec::len).collect::<Vec<_>>(),
            [1054, 1054, 554]
        );
    }
}
