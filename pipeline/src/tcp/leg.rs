//! One leg of a splice: a tiny smoltcp Interface with exactly one TCP socket.
//!
//! Each leg owns its own `Interface` + one-slot `SocketSet`, so processing a
//! packet costs O(1) whatever the number of flows (smoltcp walks every socket
//! of a set on each packet). The interface is `Medium::Ip`, owns the address
//! it impersonates (the client's on the server leg, the server's on the
//! client leg) and has AnyIP on, so no address of the appliance ever appears
//! on the wire. Packets move in and out through [`OneShot`], a device that
//! holds at most one received packet and accepts at most one transmitted one
//! per call, which keeps the leg free of queues and allocation.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp::{CongestionControl, Socket, SocketBuffer, State};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::checksum::{fill_tcp_checksum, fill_tcp_pseudo, tcp_checksum_ok, tcp_span};
use super::release::{TcpFacts, ACK, FIN, RST, SYN};
use crate::io::Offload;

thread_local! {
    /// The TCP timestamp clock (ms) for the leg being driven on this thread.
    ///
    /// smoltcp takes the tsval generator as a bare `fn() -> u32`, so the
    /// sans-IO `now` is handed over through this cell, set before every call
    /// into smoltcp.
    static TSVAL_NOW: Cell<u32> = const { Cell::new(0) };
}

fn tsval() -> u32 {
    TSVAL_NOW.with(Cell::get)
}

/// A device that carries at most one packet in and one packet out per use.
struct OneShot<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut Vec<u8>,
    tx_used: bool,
    mtu: usize,
    /// Leave TCP checksums partial (pseudo-header sum) for the device to complete.
    partial: bool,
}

/// Longest IP + TCP header smoltcp emits: IPv6 (40 bytes; no IPv4 options)
/// and a TCP header with the most options (60).
const MAX_HEADERS: usize = 40 + 60;

struct Rx<'a>(&'a [u8]);

struct Tx<'a> {
    buf: &'a mut Vec<u8>,
    used: &'a mut bool,
    partial: bool,
}

impl RxToken for Rx<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        *self.used = true;
        // The buffer is reused from packet to packet. smoltcp writes every
        // byte of the payload, but not every byte of the headers (the padding
        // after an end-of-options, the checksum field we fill below), so only
        // the headers are zeroed: a memset of the whole packet cost as much
        // as the copy of its payload.
        let old = self.buf.len();
        self.buf.truncate(len);
        self.buf.resize(len, 0);
        let headers = len.min(old).min(MAX_HEADERS);
        self.buf[..headers].fill(0);
        let r = f(&mut self.buf[..]);
        if self.partial {
            fill_tcp_pseudo(self.buf);
        } else {
            fill_tcp_checksum(self.buf);
        }
        r
    }
}

impl Device for OneShot<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx<'_>, Tx<'_>)> {
        if self.tx_used {
            return None;
        }
        let packet = self.rx.take()?;
        Some((
            Rx(packet),
            Tx {
                buf: self.tx,
                used: &mut self.tx_used,
                partial: self.partial,
            },
        ))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        if self.tx_used {
            return None;
        }
        Some(Tx {
            buf: self.tx,
            used: &mut self.tx_used,
            partial: self.partial,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        // TCP checksums are verified and filled in by this module
        // (`tcp_checksum_ok`, `fill_tcp_checksum`), 8 bytes at a time: 5% fewer
        // instructions for the whole splice than smoltcp's loop (callgrind,
        // 16 MiB through it; a carry-free 32-bit loop was worse).
        caps.checksum.tcp = Checksum::None;
        caps.max_transmission_unit = self.mtu;
        // max_burst_size stays None: smoltcp would clamp the advertised
        // window to burst*MSS, throttling the peer.
        caps
    }
}

/// One TCP endpoint impersonating `local`, in its own tiny interface.
pub(crate) struct Endpoint {
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    mtu: usize,
    /// Egress packets leave with partial TCP checksums (see [`Offload`]).
    partial_csum: bool,
    /// Offset added to the flow clock for TCP timestamps (random per leg).
    ts_offset: u32,
    window: WindowEdge,
}

/// The right edge of the receive window a leg last advertised.
///
/// smoltcp 0.12 accepts bytes beyond it (up to its buffer's capacity), and
/// its next ACK then panics on a sequence-number underflow
/// (`last_scaled_window`). A peer can send such bytes legitimately: each
/// ACK floors the free space to the window shift, so the edge moves left by
/// up to 2^shift - 1 bytes from one ACK to the next while the peer may
/// still fill the window it was told before. Bytes beyond the edge are
/// trimmed before smoltcp sees them, as RFC 9293 (3.10.7.4) has a receiver
/// do; the peer retransmits them once the window opens. (smoltcp 0.13+
/// trims itself, but its RFC 6298 minimum RTO of one second, without SACK
/// recovery, collapses transfers on lossy paths: the lab's 5 % loss test.)
#[derive(Default)]
struct WindowEdge {
    /// Sequence number just past the last advertised window.
    edge: Option<u32>,
    /// The window scale this leg offered in its SYN or SYN-ACK.
    ours: Option<u8>,
    /// Whether the peer's SYN offered window scaling too.
    peer_scales: bool,
}

impl WindowEdge {
    /// Learns from a segment the leg sent.
    fn sent(&mut self, packet: &[u8]) {
        let Some(f) = TcpFacts::parse_header(packet) else {
            return;
        };
        if f.flags & RST != 0 {
            return;
        }
        if f.flags & SYN != 0 {
            self.ours = TcpFacts::parse(packet).and_then(|f| f.wscale);
        }
        if f.flags & ACK != 0 {
            // RFC 7323: the window of a SYN is never scaled.
            let shift = match (f.flags & SYN, self.ours, self.peer_scales) {
                (0, Some(s), true) => s,
                _ => 0,
            };
            self.edge = Some(f.ack.wrapping_add(u32::from(f.window) << shift));
        }
    }

    /// How many payload bytes of a received segment fit before the edge;
    /// `None` when all of it does (or nothing was advertised yet).
    fn fits(&mut self, packet: &[u8]) -> Option<(TcpFacts, u32)> {
        let f = TcpFacts::parse_header(packet)?;
        if f.flags & SYN != 0 {
            self.peer_scales = TcpFacts::parse(packet).is_some_and(|f| f.wscale.is_some());
            return None;
        }
        let edge = self.edge?;
        let end = f.seq.wrapping_add(f.payload_len);
        if f.payload_len == 0 || edge.wrapping_sub(end) as i32 >= 0 {
            return None;
        }
        let room = edge.wrapping_sub(f.seq) as i32;
        Some((f, room.clamp(0, f.payload_len as i32) as u32))
    }
}

/// `packet` with its TCP payload cut to its first `keep` bytes (and no
/// FIN), lengths and checksums made right.
fn trimmed(packet: &[u8], facts: &TcpFacts, keep: u32) -> Option<Vec<u8>> {
    let (off, len, _) = tcp_span(packet)?;
    let header = len - facts.payload_len as usize;
    let mut p = packet.get(..off + header + keep as usize)?.to_vec();
    let total = p.len();
    match p[0] >> 4 {
        4 => p[2..4].copy_from_slice(&u16::try_from(total).ok()?.to_be_bytes()),
        _ => p[4..6].copy_from_slice(&u16::try_from(total - 40).ok()?.to_be_bytes()),
    }
    p[off + 13] &= !FIN;
    super::fill_checksums(&mut p);
    Some(p)
}

/// How a leg's socket is set up.
pub(crate) struct LegParams {
    /// The address this leg answers for (never the appliance's).
    pub local_ip: IpAddr,
    /// IP MTU of this leg (the MSS we advertise is derived from it).
    pub mtu: usize,
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    pub timestamps: bool,
    pub seed: u64,
    /// Leave egress TCP checksums for the device to complete.
    pub partial_csum: bool,
}

impl Endpoint {
    /// Creates the interface and its single, still closed, socket.
    pub(crate) fn new(p: &LegParams, now: SmolInstant) -> Endpoint {
        let mut scratch = Vec::new();
        let mut dev = OneShot {
            rx: None,
            tx: &mut scratch,
            tx_used: false,
            mtu: p.mtu,
            partial: false,
        };
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = p.seed;
        let mut iface = Interface::new(cfg, &mut dev, now);
        iface.set_any_ip(true);
        let local: IpAddress = p.local_ip.into();
        iface.update_ip_addrs(|addrs| {
            let prefix = if p.local_ip.is_ipv4() { 32 } else { 128 };
            // Capacity is IFACE_MAX_ADDR_COUNT (2); the first push cannot fail.
            let _ = addrs.push(IpCidr::new(local, prefix));
        });
        // With Medium::Ip there is no neighbour resolution; smoltcp still wants
        // a route to any destination, so route everything "via ourselves".
        let routes = iface.routes_mut();
        let _ = match p.local_ip {
            IpAddr::V4(a) => routes.add_default_ipv4_route(a).map(|_| ()),
            IpAddr::V6(a) => routes.add_default_ipv6_route(a).map(|_| ()),
        };

        let mut socket = Socket::new(
            SocketBuffer::new(vec![0u8; p.rx_buffer]),
            SocketBuffer::new(vec![0u8; p.tx_buffer]),
        );
        socket.set_congestion_control(CongestionControl::Cubic);
        // The owner writes whole TLS records / relayed chunks; Nagle would
        // only add latency on top of the peer's delayed ACKs.
        socket.set_nagle_enabled(false);
        if p.timestamps {
            socket.set_tsval_generator(Some(tsval));
        }
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let handle = sockets.add(socket);
        Endpoint {
            iface,
            sockets,
            handle,
            mtu: p.mtu,
            partial_csum: p.partial_csum,
            ts_offset: (p.seed >> 32) as u32,
            window: WindowEdge::default(),
        }
    }

    pub(crate) fn socket(&mut self) -> &mut Socket<'static> {
        self.sockets.get_mut::<Socket>(self.handle)
    }

    pub(crate) fn socket_ref(&self) -> &Socket<'static> {
        self.sockets.get::<Socket>(self.handle)
    }

    pub(crate) fn state(&self) -> State {
        self.socket_ref().state()
    }

    /// Starts an active open from `local` to `remote`.
    pub(crate) fn connect(&mut self, local: SocketAddr, remote: SocketAddr) -> bool {
        let cx = self.iface.context();
        let socket = self.sockets.get_mut::<Socket>(self.handle);
        socket.connect(cx, remote, local).is_ok()
    }

    /// Starts listening on `local`.
    pub(crate) fn listen(&mut self, local: SocketAddr) -> bool {
        self.socket().listen(local).is_ok()
    }

    fn set_clock(&self, now: SmolInstant) {
        TSVAL_NOW.with(|c| c.set(self.tsval_at(now)));
    }

    /// The TSval this leg's segments carry at `now`.
    pub(crate) fn tsval_at(&self, now: SmolInstant) -> u32 {
        (now.total_millis() as u64 as u32).wrapping_add(self.ts_offset)
    }

    /// Feeds one IP packet; a reply smoltcp sends at once (an RST for a
    /// segment no socket accepts, a challenge ACK) lands in `reply`.
    /// Returns whether `reply` was filled.
    /// With `checksum_trusted` the TCP checksum is not verified.
    ///
    /// Anything but a plain IPv4/IPv6 TCP segment is dropped unanswered: the
    /// leg owns another host's address, and smoltcp would answer an ICMP
    /// echo, a UDP datagram or an unknown protocol (even an IPv4 header
    /// shorter than 20 bytes) in that host's name.
    pub(crate) fn ingress(
        &mut self,
        packet: &[u8],
        checksum_trusted: bool,
        now: SmolInstant,
        reply: &mut Vec<u8>,
    ) -> bool {
        if tcp_span(packet).is_none() {
            return false;
        }
        if !checksum_trusted && !tcp_checksum_ok(packet) {
            // A corrupted segment is dropped, as a host would; the peer retransmits.
            return false;
        }
        let cut = match self.window.fits(packet) {
            Some((facts, keep)) => match trimmed(packet, &facts, keep) {
                Some(p) => Some(p),
                None => return false,
            },
            None => None,
        };
        let packet = cut.as_deref().unwrap_or(packet);
        self.set_clock(now);
        let mut dev = OneShot {
            rx: Some(packet),
            tx: reply,
            tx_used: false,
            mtu: self.mtu,
            // Replies are queued with complete checksums.
            partial: false,
        };
        self.iface
            .poll_ingress_single(now, &mut dev, &mut self.sockets);
        let replied = dev.tx_used;
        if replied {
            self.window.sent(reply);
        }
        replied
    }

    /// Lets smoltcp send at most one packet (data, ACK, retransmission, FIN,
    /// RST) into `out`. Returns the packet's checksum state if it did.
    pub(crate) fn egress(&mut self, now: SmolInstant, out: &mut Vec<u8>) -> Option<Offload> {
        self.set_clock(now);
        let mut dev = OneShot {
            rx: None,
            tx: out,
            tx_used: false,
            mtu: self.mtu,
            partial: self.partial_csum,
        };
        self.iface.poll_egress(now, &mut dev, &mut self.sockets);
        if !dev.tx_used {
            return None;
        }
        self.window.sent(out);
        Some(match (self.partial_csum, tcp_span(out)) {
            (true, Some((off, _, _))) => Offload {
                flags: Offload::NEEDS_CSUM,
                csum_start: off as u16,
                csum_offset: 16,
                ..Offload::default()
            },
            _ => Offload::default(),
        })
    }

    /// When smoltcp next wants to be polled (retransmission, delayed ACK, ...).
    pub(crate) fn poll_at(&mut self, now: SmolInstant) -> Option<SmolInstant> {
        self.iface.poll_at(now, &self.sockets)
    }

    /// Heap bytes owned by this leg besides its inline size (socket slot and buffers).
    pub(crate) fn heap_bytes(&self) -> usize {
        let s = self.socket_ref();
        std::mem::size_of::<smoltcp::iface::SocketStorage<'static>>()
            + s.recv_capacity()
            + s.send_capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::release::TcpFacts;
    use crate::testkit::packets::ipv4_tcp_full;

    const PEER: ([u8; 4], u16) = ([192, 0, 2, 10], 40000);
    const LOCAL: ([u8; 4], u16) = ([203, 0, 113, 10], 443);

    fn from_peer(flags: u8, seq: u32, ack: u32, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut p = ipv4_tcp_full(PEER, LOCAL, flags, (seq, ack), 65535, opts, payload);
        crate::tcp::fill_checksums(&mut p);
        p
    }

    /// A peer that fills the window it was told, after the leg's next ACK
    /// moved the edge left (the free space floored to the window shift),
    /// gets the bytes beyond the edge trimmed, not accepted: smoltcp 0.12
    /// took them and its next ACK panicked (CI's stalled 50 MB download).
    #[test]
    fn bytes_beyond_the_advertised_window_are_trimmed() {
        let t0 = SmolInstant::ZERO;
        // 160 KiB of receive buffer: window shift 2.
        let mut leg = Endpoint::new(
            &LegParams {
                local_ip: IpAddr::from(LOCAL.0),
                mtu: 1500,
                rx_buffer: 160 * 1024,
                tx_buffer: 16 * 1024,
                timestamps: false,
                seed: 7,
                partial_csum: false,
            },
            t0,
        );
        assert!(leg.listen(SocketAddr::from(LOCAL)));
        let mut reply = Vec::new();
        // SYN: MSS 1460, window scale 7.
        let syn = from_peer(SYN, 1000, 0, &[2, 4, 5, 180, 1, 3, 3, 7], b"");
        leg.ingress(&syn, false, t0, &mut reply);
        let mut out = Vec::new();
        let synack = if reply.is_empty() {
            leg.egress(t0, &mut out).expect("SYN-ACK");
            TcpFacts::parse(&out).unwrap()
        } else {
            TcpFacts::parse(&reply).unwrap()
        };
        assert_eq!(synack.wscale, Some(2));
        let isn = synack.seq.wrapping_add(1);
        reply.clear();
        leg.ingress(&from_peer(ACK, 1001, isn, &[], b""), false, t0, &mut reply);
        assert_eq!(leg.state(), State::Established);
        // The peer fills the window in 60,001-byte segments (as a GRO
        // super-frame would carry them), the application reading nothing;
        // the leg's ACKs advertise the free space floored to 4 bytes.
        let mut seq = 1001u32;
        let mut queued = 0usize;
        let mut now = t0;
        let mut edge;
        loop {
            let mut ack = None;
            for _ in 0..4 {
                now += smoltcp::time::Duration::from_millis(50);
                out.clear();
                if leg.egress(now, &mut out).is_some() {
                    ack = TcpFacts::parse(&out).filter(|f| f.payload_len == 0).or(ack);
                }
            }
            if let Some(a) = ack {
                assert_eq!(a.ack, seq);
                edge = a.ack.wrapping_add(u32::from(a.window) << 2);
            } else {
                edge = seq.wrapping_add(u32::from(synack.window));
            }
            if edge - seq <= 60_001 {
                break;
            }
            let chunk = vec![b'a'; 60_001];
            reply.clear();
            leg.ingress(
                &from_peer(ACK, seq, isn, &[], &chunk),
                false,
                now,
                &mut reply,
            );
            seq += chunk.len() as u32;
            queued += chunk.len();
        }
        // The peer sends up to 3 bytes past that edge, in one segment.
        let big = vec![b'b'; (edge - seq) as usize + 3];
        reply.clear();
        leg.ingress(&from_peer(ACK, seq, isn, &[], &big), false, now, &mut reply);
        let mut acked = seq;
        for _ in 0..4 {
            now += smoltcp::time::Duration::from_millis(50);
            out.clear();
            if leg.egress(now, &mut out).is_some() {
                acked = TcpFacts::parse(&out).unwrap().ack;
            }
        }
        assert_eq!(
            acked, edge,
            "the bytes up to the edge are taken, not one more"
        );
        assert_eq!(
            leg.socket_ref().recv_queue(),
            queued + (edge - seq) as usize
        );
    }
}
