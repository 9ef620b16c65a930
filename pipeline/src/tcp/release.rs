//! A passed connection released from its two TCP legs, sans-IO.
//!
//! After a `pass` decision the legs of a splice carry the same bytes in the
//! same order: what the client leg reads, the server leg writes, and back.
//! Only the numbering differs: each leg's smoltcp socket chose its own
//! initial sequence number, its own window scale and its own timestamp
//! clock. Once every byte a leg took responsibility for has been delivered
//! and acknowledged, those differences are constants, and the connection can
//! leave user-space TCP: each later packet crosses the fast path with its
//! sequence and acknowledgement numbers (and SACK edges) shifted by a fixed
//! offset, its window re-expressed in the receiver's scale and its
//! timestamps shifted, the TCP checksum updated incrementally (RFC 1624) or
//! left alone when it is only the pseudo-header sum (`NEEDS_CSUM`: none of
//! the rewritten fields are in it). DESIGN.md §4 allows either this rewrite
//! or steering smoltcp's ISNs; steering would still leave the window scale
//! and the timestamp clock to rewrite (smoltcp derives its scale from its
//! buffer size, and a peer's clock is its own), so every packet would be
//! touched anyway, and one constant-offset rewrite does all of it.
//!
//! [`Splice::release`](super::Splice::release) says when
//! a splice may be released and computes the [`Release`]; the dispatcher
//! applies it to every later packet with [`Release::apply`].

#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use super::checksum::{csum_add, csum_fold, tcp_span};

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
/// The ACK flag.
pub const ACK: u8 = 0x10;

const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WSCALE: u8 = 3;
const OPT_SACK: u8 = 5;
const OPT_TIMESTAMPS: u8 = 8;

/// The largest window scale shift RFC 7323 allows.
const MAX_WSCALE: u8 = 14;

/// What the release logic reads of one TCP segment; nothing is verified
/// (the checksum was checked, or trusted, before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFacts {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful with [`ACK`] in `flags`).
    pub ack: u32,
    /// The flags byte (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    pub flags: u8,
    /// The window field as sent (not scaled).
    pub window: u16,
    /// Payload bytes.
    pub payload_len: u32,
    /// MSS option.
    pub mss: Option<u16>,
    /// Window scale option (shift count, capped at 14).
    pub wscale: Option<u8>,
    /// Timestamps option: (TSval, TSecr).
    pub ts: Option<(u32, u32)>,
}

impl TcpFacts {
    /// Reads the TCP header of a plain IPv4/IPv6 TCP packet; `None` for
    /// anything else or a header that does not fit.
    pub fn parse(packet: &[u8]) -> Option<TcpFacts> {
        Self::read(packet, true)
    }

    /// [`parse`](Self::parse) without the options (`mss`, `wscale` and
    /// `ts` stay `None`): the fixed header, for a per-packet path.
    pub fn parse_header(packet: &[u8]) -> Option<TcpFacts> {
        Self::read(packet, false)
    }

    fn read(packet: &[u8], options: bool) -> Option<TcpFacts> {
        let (off, len, _) = tcp_span(packet)?;
        let tcp = packet.get(off..off + len)?;
        let hl = header_len(tcp)?;
        let mut f = TcpFacts {
            seq: be32(tcp, 4)?,
            ack: be32(tcp, 8)?,
            flags: *tcp.get(13)?,
            window: be16(tcp, 14)?,
            payload_len: (len - hl) as u32,
            ..TcpFacts::default()
        };
        if !options {
            return Some(f);
        }
        let opts = tcp.get(20..hl)?;
        for_each_option(opts, |kind, at, len| match (kind, opts.get(at..at + len)) {
            (OPT_MSS, Some(&[a, b])) => f.mss = Some(u16::from_be_bytes([a, b])),
            (OPT_WSCALE, Some(&[shift])) => f.wscale = Some(shift.min(MAX_WSCALE)),
            (OPT_TIMESTAMPS, Some(&[v0, v1, v2, v3, e0, e1, e2, e3])) => {
                let v = u32::from_be_bytes([v0, v1, v2, v3]);
                let e = u32::from_be_bytes([e0, e1, e2, e3]);
                f.ts = Some((v, e));
            }
            _ => {}
        });
        Some(f)
    }

    /// Whether any of `flags` is set.
    pub fn has(&self, flags: u8) -> bool {
        self.flags & flags != 0
    }

    /// The sequence number just past this segment (payload, SYN and FIN
    /// each take their place in the sequence space).
    pub fn end(&self) -> u32 {
        let ctl = u32::from(self.has(SYN)) + u32::from(self.has(FIN));
        self.seq.wrapping_add(self.payload_len).wrapping_add(ctl)
    }
}

/// Whether a TCP/IP packet is a pure ACK (no payload, no flag but ACK),
/// read from the fixed header only.
pub fn is_pure_ack(packet: &[u8]) -> bool {
    let Some((off, len, _)) = tcp_span(packet) else {
        return false;
    };
    let Some(tcp) = packet.get(off..off + len) else {
        return false;
    };
    tcp.get(13) == Some(&ACK) && header_len(tcp) == Some(len)
}

/// The header length of a TCP segment, when it is one (20 to 60 bytes,
/// within the segment).
fn header_len(tcp: &[u8]) -> Option<usize> {
    let hl = usize::from(tcp.get(12)? >> 4) * 4;
    (hl >= 20 && hl <= tcp.len()).then_some(hl)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..)?.first_chunk().map(|c| u16::from_be_bytes(*c))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..)?.first_chunk().map(|c| u32::from_be_bytes(*c))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(c) = b.get_mut(at..).and_then(|s| s.first_chunk_mut()) {
        *c = v.to_be_bytes();
    }
}

/// Adds `delta` to the 32-bit big-endian word at `at`.
fn add32(b: &mut [u8], at: usize, delta: u32) {
    if let Some(c) = b.get_mut(at..).and_then(|s| s.first_chunk_mut::<4>()) {
        *c = u32::from_be_bytes(*c).wrapping_add(delta).to_be_bytes();
    }
}

/// Calls `f(kind, start, len)` for the body of every well-formed option of
/// a TCP options area (`opts[start..start + len]`); stops at the
/// end-of-list option or at the first malformed one.
pub(crate) fn for_each_option(opts: &[u8], mut f: impl FnMut(u8, usize, usize)) {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            OPT_END => break,
            OPT_NOP => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                f(kind, i + 2, len - 2);
                i += len;
            }
        }
    }
}

/// The rewrite of one direction of a released connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Added to the sequence number.
    pub seq: u32,
    /// Added to the acknowledgement number and to every SACK edge.
    pub ack: u32,
    /// Added to (TSval, TSecr), when both legs use timestamps.
    pub ts: Option<(u32, u32)>,
    /// The scale of the window field as the sender wrote it.
    pub shift_in: u8,
    /// The scale the receiver reads the window field with.
    pub shift_out: u8,
}

impl Rewrite {
    /// The window field for the receiver: the same number of bytes in its
    /// scale, rounded up so a small open window never reads as closed, and
    /// capped at what the field holds.
    fn window(&self, field: u16) -> u16 {
        if self.shift_in == self.shift_out {
            return field;
        }
        let bytes = u64::from(field) << self.shift_in;
        let unit = 1u64 << self.shift_out;
        let scaled = bytes.div_ceil(unit);
        u16::try_from(scaled).unwrap_or(u16::MAX)
    }

    /// Rewrites one IP packet of this direction in place. With
    /// `checksum_partial` the TCP checksum field holds only the
    /// pseudo-header sum (a `NEEDS_CSUM` frame) and is left as it is;
    /// otherwise it is updated for the changed header words, so a segment
    /// that arrived corrupted stays corrupted. Returns `false` (packet
    /// untouched) for anything but a plain IPv4/IPv6 TCP packet.
    pub fn apply(&self, packet: &mut [u8], checksum_partial: bool) -> bool {
        let Some((off, len, _)) = tcp_span(packet) else {
            return false;
        };
        let Some(tcp) = packet.get_mut(off..off + len) else {
            return false;
        };
        let Some(hl) = header_len(tcp) else {
            return false;
        };
        let mut before = [0u8; 60];
        let (Some(hdr), Some(saved)) = (tcp.get_mut(..hl), before.get_mut(..hl)) else {
            return false;
        };
        saved.copy_from_slice(hdr);
        let flags = hdr.get(13).copied().unwrap_or_default();
        add32(hdr, 4, self.seq);
        if flags & ACK != 0 {
            add32(hdr, 8, self.ack);
        }
        if flags & SYN == 0 {
            // A SYN's window is never scaled (RFC 7323 §2.2).
            if let Some(w) = be16(hdr, 14) {
                put16(hdr, 14, self.window(w));
            }
        }
        // SACK edges and timestamps, at most 8 options (40 bytes of them).
        let mut edits = [(0u8, 0usize, 0usize); 8];
        let mut n = 0;
        if let Some(opts) = hdr.get_mut(20..) {
            for_each_option(opts, |kind, at, len| {
                if kind == OPT_SACK || kind == OPT_TIMESTAMPS {
                    if let Some(slot) = edits.get_mut(n) {
                        *slot = (kind, at, len);
                        n += 1;
                    }
                }
            });
            for &(kind, at, len) in edits.iter().take(n) {
                let Some(body) = opts.get_mut(at..at + len) else {
                    continue;
                };
                match (kind, self.ts) {
                    (OPT_SACK, _) => {
                        for edge in body.chunks_exact_mut(4) {
                            add32(edge, 0, self.ack);
                        }
                    }
                    (_, Some((val, ecr))) if len == 8 => {
                        add32(body, 0, val);
                        add32(body, 4, ecr);
                    }
                    _ => {}
                }
            }
        }
        if !checksum_partial {
            // RFC 1624 eqn. 3 over the whole header, checksum field excluded.
            put16(saved, 16, 0);
            let old = csum_fold(csum_add(0, saved));
            let hc = be16(hdr, 16).unwrap_or_default();
            put16(hdr, 16, 0);
            let new = csum_fold(csum_add(0, hdr));
            let sum = u64::from(!hc) + u64::from(!old) + u64::from(new);
            put16(hdr, 16, !csum_fold(sum));
        }
        true
    }
}

/// How a released connection's packets are rewritten, both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// The client (source of the SYN).
    pub client: SocketAddr,
    /// The server.
    pub server: SocketAddr,
    /// Packets from the client.
    pub to_server: Rewrite,
    /// Packets from the server.
    pub to_client: Rewrite,
    /// At the release: the next sequence number of the client's own
    /// stream, and of the server's (as each sends them), where the byte
    /// counts of the released flow start.
    pub client_seq: u32,
    /// See `client_seq`.
    pub server_seq: u32,
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::tcp::checksum::{fill_tcp_checksum, fill_tcp_pseudo, tcp_checksum_ok};
    use crate::testkit::packets::ipv4_tcp_full;

    /// An IPv4 TCP packet with the given options area and payload, checksum complete.
    fn packet(seq: u32, ack: u32, flags: u8, window: u16, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        let (c, s) = (([192, 0, 2, 10], 40000), ([203, 0, 113, 10], 443));
        let mut p = ipv4_tcp_full(c, s, flags, (seq, ack), window, opts, payload);
        fill_tcp_checksum(&mut p);
        p
    }

    fn ts_sack_opts(tsval: u32, tsecr: u32, left: u32, right: u32) -> Vec<u8> {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&tsval.to_be_bytes());
        o.extend_from_slice(&tsecr.to_be_bytes());
        o.extend_from_slice(&[1, 1, 5, 10]);
        o.extend_from_slice(&left.to_be_bytes());
        o.extend_from_slice(&right.to_be_bytes());
        o
    }

    #[test]
    fn rewrites_numbers_sack_timestamps_and_window_keeping_the_checksum_valid() {
        let rw = Rewrite {
            seq: 1000,
            ack: 0xffff_fff0, // -16, wrapping
            ts: Some((7, u32::MAX)),
            shift_in: 7,
            shift_out: 1,
        };
        let mut p = packet(
            u32::MAX - 10,
            500,
            ACK,
            100,
            &ts_sack_opts(42, 9, 600, 700),
            b"hello",
        );
        assert!(rw.apply(&mut p, false));
        assert!(tcp_checksum_ok(&p), "incremental update is exact");
        let f = TcpFacts::parse(&p).unwrap();
        assert_eq!(f.seq, (u32::MAX - 10).wrapping_add(1000));
        assert_eq!(f.ack, 484);
        assert_eq!(f.ts, Some((49, 8)));
        assert_eq!(f.window, (100u32 << 7 >> 1) as u16);
        let sack = &p[40 + 16..40 + 24];
        assert_eq!(sack, &[0, 0, 2, 0x48, 0, 0, 2, 0xac][..]); // 584, 684
        assert_eq!(f.payload_len, 5);
        assert_eq!(&p[p.len() - 5..], b"hello");
    }

    #[test]
    fn a_corrupted_segment_stays_corrupted_and_a_partial_checksum_is_left_alone() {
        let rw = Rewrite {
            seq: 5,
            ack: 6,
            ..Rewrite::default()
        };
        let mut p = packet(1, 2, ACK, 10, &[], b"data");
        let last = p.len() - 1;
        p[last] ^= 0x40;
        assert!(!tcp_checksum_ok(&p));
        rw.apply(&mut p, false);
        assert!(!tcp_checksum_ok(&p));

        let mut q = packet(1, 2, ACK, 10, &[], b"data");
        fill_tcp_pseudo(&mut q);
        let csum = q[36..38].to_vec();
        rw.apply(&mut q, true);
        assert_eq!(
            &q[36..38],
            &csum[..],
            "the pseudo-header sum does not cover seq/ack"
        );
        assert_eq!(TcpFacts::parse(&q).unwrap().seq, 6);
    }

    #[test]
    fn windows_round_up_and_saturate_and_syns_keep_theirs() {
        let rw = Rewrite {
            shift_in: 0,
            shift_out: 7,
            ..Rewrite::default()
        };
        assert_eq!(rw.window(1), 1, "a small open window never reads as closed");
        assert_eq!(rw.window(0), 0);
        assert_eq!(rw.window(256), 2);
        let up = Rewrite {
            shift_in: 14,
            shift_out: 0,
            ..Rewrite::default()
        };
        assert_eq!(up.window(1000), u16::MAX);
        let mut syn = packet(1, 0, SYN, 64240, &[], b"");
        up.apply(&mut syn, false);
        assert_eq!(TcpFacts::parse(&syn).unwrap().window, 64240);
        assert!(tcp_checksum_ok(&syn));
    }

    #[test]
    fn no_ack_flag_no_ack_rewrite_and_non_tcp_is_refused() {
        let rw = Rewrite {
            seq: 1,
            ack: 1,
            ..Rewrite::default()
        };
        let mut rst = packet(10, 77, RST, 0, &[], b"");
        rw.apply(&mut rst, false);
        let f = TcpFacts::parse(&rst).unwrap();
        assert_eq!((f.seq, f.ack), (11, 77));
        let mut udp = packet(1, 1, ACK, 1, &[], b"x");
        udp[9] = 17;
        let before = udp.clone();
        assert!(!rw.apply(&mut udp, false));
        assert_eq!(udp, before);
        // Every prefix of a packet parses or is refused, never panics.
        let p = packet(1, 2, ACK, 3, &ts_sack_opts(1, 2, 3, 4), b"abc");
        for n in 0..p.len() {
            let mut q = p[..n].to_vec();
            let _ = TcpFacts::parse(&q);
            let _ = rw.apply(&mut q, false);
        }
    }

    #[test]
    fn facts_of_a_syn() {
        let opts = [2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0];
        let p = packet(99, 0, SYN, 64240, &opts, b"");
        let f = TcpFacts::parse(&p).unwrap();
        assert_eq!((f.mss, f.wscale, f.ts), (Some(1460), Some(7), None));
        assert_eq!(f.end(), 100);
    }
}
