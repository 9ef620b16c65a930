//! A storm of hostile IPv4/TCP packets for the lab (`lab-helper storm`).
//!
//! Sent from the client namespace through a raw socket (`IPPROTO_RAW`, so
//! the packets leave as written; the kernel fills only the IP checksum and
//! total length), toward the appliance's LAN port. One packet in five is a
//! well-formed in-scope SYN from a random source port that the client's own
//! stack never opened — its kernel answers the appliance's SYN-ACK with an
//! RST, as after a spoofed SYN. The others are the garbage a hostile LAN
//! sends: truncated TCP headers, option garbage, stray data on random ports
//! and first fragments of SYNs.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

/// What a storm sent, by kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormResult {
    /// Well-formed opening SYNs from random source ports.
    pub syns: u64,
    /// TCP headers whose data offset points past the packet.
    pub truncated: u64,
    /// SYNs whose options are random bytes.
    pub bad_options: u64,
    /// ACKs carrying data on connections that do not exist.
    pub stray_data: u64,
    /// First fragments of SYNs (more-fragments set).
    pub fragments: u64,
    /// Packets the kernel refused to send.
    pub send_errors: u64,
}

/// An IPv4 header (no options) for `payload_len` bytes of TCP.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize, frag: u16) -> Vec<u8> {
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, 6, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}

/// A TCP header with `options` (padded to 4 bytes) and `payload`.
fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut opts = options.to_vec();
    while opts.len() % 4 != 0 {
        opts.push(0);
    }
    let doff = ((20 + opts.len()) / 4) as u8;
    let mut t = Vec::with_capacity(20 + opts.len() + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[doff << 4, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    t.extend_from_slice(&opts);
    t.extend_from_slice(payload);
    t
}

/// An IPv4 packet around `segment`, with correct checksums.
fn packet(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> Vec<u8> {
    let mut p = ipv4(src, dst, segment.len(), 0);
    p.extend_from_slice(segment);
    tlsinspect_pipeline::tcp::fill_checksums(&mut p);
    p
}

/// MSS 1460, SACK permitted, window scale 7: what a Linux client offers.
const SYN_OPTIONS: [u8; 10] = [2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7];

/// Sends `count` packets from `source` toward `to`:`port`, by kind in turn.
pub fn storm(
    source: Ipv4Addr,
    to: Ipv4Addr,
    port: u16,
    count: u64,
    seed: u64,
) -> anyhow::Result<StormResult> {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))?;
    let dest = SocketAddr::V4(SocketAddrV4::new(to, 0)).into();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut r = StormResult::default();
    for i in 0..count {
        let isn: u32 = rng.gen();
        // Above the well-known ports, like a client's ephemeral range.
        let sport: u16 = rng.gen_range(1024..=u16::MAX);
        let syn = |options: &[u8]| tcp(sport, port, isn, 0, SYN, options, &[]);
        let pkt = match i % 5 {
            0 => {
                r.syns += 1;
                packet(source, to, &syn(&SYN_OPTIONS))
            }
            1 => {
                r.truncated += 1;
                // Data offset 15 (60 bytes) on a 24-byte segment.
                let mut t = syn(&[1, 1, 1, 1]);
                t[12] = 0xf0;
                packet(source, to, &t)
            }
            2 => {
                r.bad_options += 1;
                let mut garbage = [0u8; 16];
                rng.fill(&mut garbage[..]);
                packet(source, to, &syn(&garbage))
            }
            3 => {
                r.stray_data += 1;
                let mut data = [0u8; 64];
                rng.fill(&mut data[..]);
                let ack: u32 = rng.gen();
                packet(
                    source,
                    to,
                    &tcp(sport, port, isn, ack, ACK | PSH, &[], &data),
                )
            }
            _ => {
                r.fragments += 1;
                // The first 8 bytes of a SYN's TCP header, more fragments to come.
                let mut p = ipv4(source, to, 8, 0x2000);
                p.extend_from_slice(&syn(&SYN_OPTIONS)[..8]);
                p
            }
        };
        if sock.send_to(&pkt, &dest).is_err() {
            r.send_errors += 1;
        }
        if i % 32 == 31 {
            // Paced a little: a storm, not a benchmark of the veth.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    Ok(r)
}

/// What an Ethernet-level storm sent, by kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct L2StormResult {
    /// In-scope SYNs under a stack of five VLAN tags (802.1ad and 802.1Q).
    pub vlan_stacked: u64,
    /// IPv4 headers with a header length below 20 bytes.
    pub short_ihl: u64,
    /// IPv4 headers with a header length beyond the frame.
    pub long_ihl: u64,
    /// IP version fields that are neither 4 nor 6.
    pub bad_version: u64,
    /// An Ethernet header announcing IPv4 and nothing after it.
    pub empty_ip: u64,
    /// Frames the kernel refused to send.
    pub send_errors: u64,
}

/// Sends `count` hostile Ethernet frames out of `iface` (in the client
/// namespace, toward the appliance's LAN port), by kind in turn: what an
/// IP-level raw socket cannot send because the kernel fixes or refuses it.
pub fn l2_storm(
    iface: &str,
    source: Ipv4Addr,
    to: Ipv4Addr,
    port: u16,
    count: u64,
    seed: u64,
) -> anyhow::Result<L2StormResult> {
    use tlsinspect_pipeline::io::afpacket::{AfPacket, Fanout, RingConfig};
    use tlsinspect_pipeline::io::{Device as _, Offload};
    let mut dev = AfPacket::open(iface, RingConfig::default(), Fanout::None, &[])?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut r = L2StormResult::default();
    // Broadcast from a locally administered address: it crosses a bridge.
    let macs: [u8; 12] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0b];
    for i in 0..count {
        let sport: u16 = rng.gen_range(1024..=u16::MAX);
        let syn = packet(
            source,
            to,
            &tcp(sport, port, rng.gen(), 0, 0x02, &SYN_OPTIONS, &[]),
        );
        let mut f = macs.to_vec();
        match i % 5 {
            0 => {
                r.vlan_stacked += 1;
                for (tpid, vid) in [
                    (0x88a8u16, 100u16),
                    (0x8100, 200),
                    (0x8100, 300),
                    (0x8100, 400),
                    (0x8100, 500),
                ] {
                    f.extend_from_slice(&tpid.to_be_bytes());
                    f.extend_from_slice(&vid.to_be_bytes());
                }
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                f.extend_from_slice(&syn);
            }
            1 => {
                r.short_ihl += 1;
                let mut p = syn.clone();
                p[0] = 0x43;
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                f.extend_from_slice(&p);
            }
            2 => {
                r.long_ihl += 1;
                let mut p = syn[..24].to_vec();
                p[0] = 0x4f;
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                f.extend_from_slice(&p);
            }
            3 => {
                r.bad_version += 1;
                let mut p = syn.clone();
                p[0] = 0x75;
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                f.extend_from_slice(&p);
            }
            _ => {
                r.empty_ip += 1;
                f.extend_from_slice(&0x0800u16.to_be_bytes());
            }
        }
        if dev.send(&f, &Offload::default()).is_err() {
            r.send_errors += 1;
        }
        if i % 32 == 31 {
            if dev.flush().is_err() {
                r.send_errors += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    if dev.flush().is_err() {
        r.send_errors += 1;
    }
    r.send_errors += dev.tx_dropped();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_syn_is_a_valid_opening_syn() {
        let p = packet(
            Ipv4Addr::new(192, 0, 2, 10),
            Ipv4Addr::new(203, 0, 113, 10),
            &tcp(40000, 443, 7, 0, 0x02, &SYN_OPTIONS, &[]),
        );
        let seg = tlsinspect_pipeline::tcp::segment::parse(&p).expect("parses with its checksum");
        assert!(seg.is_opening_syn());
        assert_eq!(seg.seq, 7);
    }
}
