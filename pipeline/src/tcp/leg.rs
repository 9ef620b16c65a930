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
