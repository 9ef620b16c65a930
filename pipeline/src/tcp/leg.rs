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
        self.buf.clear();
        // Zero-filled: smoltcp need not write every byte (checksum field included).
        self.buf.resize(len, 0);
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
pub(crate) struct Leg {
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    mtu: usize,
    /// Egress packets leave with partial TCP checksums (see [`Offload`]).
    partial_csum: bool,
    /// Offset added to the flow clock for TCP timestamps (random per leg).
    ts_offset: u32,
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

impl Leg {
    /// Creates the interface and its single, still closed, socket.
    pub(crate) fn new(p: &LegParams, now: SmolInstant) -> Leg {
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
        Leg {
            iface,
            sockets,
            handle,
            mtu: p.mtu,
            partial_csum: p.partial_csum,
            ts_offset: (p.seed >> 32) as u32,
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
        let ms = (now.total_millis() as u64 as u32).wrapping_add(self.ts_offset);
        TSVAL_NOW.with(|c| c.set(ms));
    }

    /// Feeds one IP packet; a reply smoltcp sends at once (an RST for a
    /// segment no socket accepts, a challenge ACK) lands in `reply`.
    /// Returns whether `reply` was filled.
    /// With `checksum_trusted` the TCP checksum is not verified.
    pub(crate) fn ingress(
        &mut self,
        packet: &[u8],
        checksum_trusted: bool,
        now: SmolInstant,
        reply: &mut Vec<u8>,
    ) -> bool {
        if !checksum_trusted && !tcp_checksum_ok(packet) {
            // A corrupted segment is dropped, as a host would; the peer retransmits.
            return false;
        }
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
        dev.tx_used
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

/// Adds `data` to a one's-complement accumulator, 8 bytes at a time.
///
/// RFC 1071 §2: the sum may be taken over wider words and folded later; the
/// big-endian load keeps the 16-bit words in network order.
fn csum_add(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let (sum, carry) = acc.overflowing_add(u64::from_be_bytes(w));
        acc = sum + u64::from(carry);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        let (sum, carry) = acc.overflowing_add(u64::from(u16::from_be_bytes([p[0], p[1]])));
        acc = sum + u64::from(carry);
    }
    if let [last] = pairs.remainder() {
        let (sum, carry) = acc.overflowing_add(u64::from(*last) << 8);
        acc = sum + u64::from(carry);
    }
    acc
}

fn csum_fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Locates the TCP segment of an IP packet: (offset, length, pseudo-header sum).
/// `None` for anything that is not plain IPv4/IPv6 + TCP.
fn tcp_span(packet: &[u8]) -> Option<(usize, usize, u64)> {
    const TCP: u8 = 6;
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            if *packet.get(9)? != TCP || ihl < 20 || total < ihl + 20 || total > packet.len() {
                return None;
            }
            let len = total - ihl;
            let pseudo = csum_add(0, &packet[12..20]) + u64::from(TCP) + len as u64;
            Some((ihl, len, pseudo))
        }
        6 => {
            let len = usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
            if *packet.get(6)? != TCP || len < 20 || 40 + len > packet.len() {
                return None;
            }
            let pseudo = csum_add(0, &packet[8..40]) + u64::from(TCP) + len as u64;
            Some((40, len, pseudo))
        }
        _ => None,
    }
}

/// Whether a TCP/IP packet's TCP checksum is right. Non-TCP packets pass
/// (smoltcp handles or drops them).
fn tcp_checksum_ok(packet: &[u8]) -> bool {
    match tcp_span(packet) {
        Some((off, len, pseudo)) => csum_fold(csum_add(pseudo, &packet[off..off + len])) == 0xffff,
        None => true,
    }
}

/// Writes the pseudo-header sum (not complemented) into the TCP checksum
/// field, for a device that completes the checksum (`NEEDS_CSUM`).
fn fill_tcp_pseudo(packet: &mut [u8]) {
    if let Some((off, _, pseudo)) = tcp_span(packet) {
        let sum = csum_fold(pseudo);
        packet[off + 16..off + 18].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Fills in the TCP checksum of a packet smoltcp just emitted (with a zero checksum field).
fn fill_tcp_checksum(packet: &mut [u8]) {
    if let Some((off, len, pseudo)) = tcp_span(packet) {
        packet[off + 16] = 0;
        packet[off + 17] = 0;
        let sum = !csum_fold(csum_add(pseudo, &packet[off..off + len]));
        packet[off + 16..off + 18].copy_from_slice(&sum.to_be_bytes());
    }
}

#[cfg(test)]
mod checksum_tests {
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
}
