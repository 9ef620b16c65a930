//! The transparent splice of one intercepted TCP connection.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use smoltcp::socket::tcp::{RecvError, State};
use smoltcp::time::Instant as SmolInstant;

use super::leg::{Endpoint, LegParams};
use super::release::{Release, Rewrite, TcpFacts, ACK, RST, SYN};
use super::segment::{self, PacketError, Segment};
use crate::io::Offload;

/// One of the two legs of a spliced connection.
///
/// `Client` is the leg between the client and the appliance (where the
/// appliance impersonates the server); `Server` is the leg between the
/// appliance and the real server (where it impersonates the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The client-facing leg.
    Client,
    /// The server-facing leg.
    Server,
}

impl Leg {
    /// The other leg.
    pub fn other(self) -> Leg {
        match self {
            Leg::Client => Leg::Server,
            Leg::Server => Leg::Client,
        }
    }
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leg::Client => "client",
            Leg::Server => "server",
        })
    }
}

/// Sizes and timeouts of a splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// Receive buffer per leg in bytes; also the largest window advertised.
    pub rx_buffer: usize,
    /// Transmit buffer per leg in bytes; bounds unacknowledged + unsent data.
    pub tx_buffer: usize,
    /// IP MTU of the links (the MSS each leg advertises derives from it).
    pub mtu: usize,
    /// How long the server leg may stay unanswered before the flow is dropped
    /// silently (the client then times out on its own, as without us).
    pub connect_timeout: Duration,
    /// How long the client may take to complete its handshake once it got
    /// our SYN-ACK; past it both legs are reset.
    pub accept_timeout: Duration,
    /// The devices complete TCP checksums ([`Offload::NEEDS_CSUM`]): the
    /// legs leave them partial instead of summing every byte they send.
    /// Use [`Splice::poll_transmit_offload`] then.
    pub offload: bool,
}

impl FlowConfig {
    /// Default buffer size per direction per leg (16 KiB; see the module docs
    /// for the memory/throughput trade-off).
    pub const DEFAULT_BUFFER_BYTES: usize = 16 * 1024;

    /// A configuration whose rx and tx buffers are all `bytes` long.
    pub fn with_buffer_bytes(bytes: usize) -> FlowConfig {
        FlowConfig {
            rx_buffer: bytes,
            tx_buffer: bytes,
            ..FlowConfig::default()
        }
    }
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            rx_buffer: Self::DEFAULT_BUFFER_BYTES,
            tx_buffer: Self::DEFAULT_BUFFER_BYTES,
            mtu: 1500,
            // BSD's classic connection-establishment timer; longer than the
            // ~21 s of Windows clients and above Linux's last SYN retry (63 s).
            connect_timeout: Duration::from_secs(75),
            accept_timeout: Duration::from_secs(75),
            offload: false,
        }
    }
}

/// Where a splice is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The server leg's SYN is out; the client's SYN is held unanswered.
    Connecting,
    /// The server answered; the client got its SYN-ACK and has not ACKed yet.
    Accepting,
    /// Both legs are established (either may since have half-closed).
    Established,
    /// The server refused (RST); the client was sent an RST. Terminal.
    Refused,
    /// The server never answered; nothing was sent to the client. Terminal.
    TimedOut,
    /// Both legs are closed (or in TIME-WAIT). Terminal.
    Closed,
}

/// Something the owner of a splice has to react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent {
    /// The server leg is established (the client's SYN-ACK is on its way).
    ServerConnected,
    /// Both legs are established: the streams are usable.
    Connected,
    /// The server refused the connection; the client has been sent an RST.
    Refused,
    /// The server did not answer within `connect_timeout`.
    ConnectTimedOut,
    /// The client did not complete its handshake within `accept_timeout`;
    /// both legs were reset.
    AcceptTimedOut,
    /// The peer of this leg finished sending (FIN); buffered data is still
    /// readable. The owner usually answers with `close(side.other())` once
    /// it has forwarded everything.
    Finished(Leg),
    /// The peer of this leg reset the connection. The owner usually answers
    /// with `abort(side.other())`.
    Reset(Leg),
    /// Both legs are closed; the flow can be dropped once `poll_transmit`
    /// returns `None`.
    Closed,
}

/// An IP packet to put on the wire toward one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The side the packet goes to (the client or the server).
    pub side: Leg,
    /// The complete IP packet (IPv4 or IPv6 header, TCP header, payload).
    pub packet: Vec<u8>,
}

/// Why a splice could not be started from a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The packet is not a readable TCP/IP packet.
    #[error("client SYN: {0}")]
    Packet(#[from] PacketError),
    /// The packet is TCP but not an opening SYN.
    #[error("client packet is not an opening SYN")]
    NotSyn,
    /// An address or port of the SYN cannot be used (unspecified, multicast,
    /// broadcast, port 0).
    #[error("client SYN {src} -> {dst} has an unusable address")]
    Unaddressable {
        /// The SYN's source.
        src: SocketAddr,
        /// The SYN's destination.
        dst: SocketAddr,
    },
}

/// Why a stream operation did not move bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The leg is not established yet.
    #[error("{0} leg: not connected yet")]
    NotConnected(Leg),
    /// The peer finished sending and every byte has been read.
    #[error("{0} leg: peer finished sending")]
    Finished(Leg),
    /// The leg is closed for this operation (reset, aborted, or our half closed).
    #[error("{0} leg: stream closed")]
    Closed(Leg),
}

/// Per-leg bookkeeping for turning socket states into events.
#[derive(Debug, Clone, Copy)]
struct Track {
    prev: State,
    fin: bool,
    closed: bool,
    aborted: bool,
}

impl Track {
    fn new() -> Track {
        Track {
            prev: State::Closed,
            fin: false,
            closed: false,
            aborted: false,
        }
    }
}

/// What one leg's segments said on the wire, for [`Splice::release`].
///
/// "Local" is the appliance's end of the leg, "peer" the real host's.
#[derive(Debug, Clone, Copy, Default)]
struct Wire {
    /// Our SYN (server leg) or SYN-ACK (client leg): ISN, window scale, timestamps.
    local_isn: Option<u32>,
    local_wscale: Option<u8>,
    local_ts: bool,
    /// The peer's SYN or SYN-ACK.
    peer_isn: Option<u32>,
    peer_wscale: Option<u8>,
    peer_ts: bool,
    /// The latest TSval the peer sent.
    peer_tsval: Option<u32>,
    /// The highest sequence number just past a segment of the peer.
    peer_end: Option<u32>,
    /// Stream bytes read from this leg and written to it.
    read: u64,
    written: u64,
}

impl Wire {
    fn scaling(&self) -> bool {
        self.local_wscale.is_some() && self.peer_wscale.is_some()
    }

    fn timestamps(&self) -> bool {
        self.local_ts && self.peer_ts
    }

    /// The next sequence number we send, once our ISN is known.
    fn snd_nxt(&self) -> Option<u32> {
        Some(
            self.local_isn?
                .wrapping_add(1)
                .wrapping_add(self.written as u32),
        )
    }

    /// The next sequence number of the peer we expect, once its ISN is known.
    fn rcv_nxt(&self) -> Option<u32> {
        Some(
            self.peer_isn?
                .wrapping_add(1)
                .wrapping_add(self.read as u32),
        )
    }

    /// Notes a segment that arrived from the peer.
    fn on_ingress(&mut self, f: &TcpFacts) {
        if f.has(SYN) {
            self.peer_isn = Some(f.seq);
            self.peer_wscale = f.wscale;
            self.peer_ts = f.ts.is_some();
        }
        let later =
            |new: u32, old: Option<u32>| old.is_none_or(|o| (new.wrapping_sub(o) as i32) > 0);
        if let Some((val, _)) = f.ts {
            if later(val, self.peer_tsval) || self.peer_tsval == Some(val) {
                self.peer_tsval = Some(val);
            }
        }
        if !f.has(RST) && later(f.end(), self.peer_end) {
            self.peer_end = Some(f.end());
        }
    }

    /// Notes a segment this leg sent.
    fn on_egress(&mut self, f: &TcpFacts) {
        if f.has(SYN) {
            self.local_isn = Some(f.seq);
            self.local_wscale = f.wscale;
            self.local_ts = f.ts.is_some();
        }
    }
}

/// A transparent TCP splice for one intercepted connection, sans-IO.
///
/// Born from the client's SYN. The server leg connects first, sourced from
/// the client's address; the client's SYN is held and answered only once the
/// server has answered (or refused). After that the owner moves bytes between
/// the two legs' streams. See the [module docs](super) for the call order.
pub struct Splice {
    cfg: FlowConfig,
    client: SocketAddr,
    server: SocketAddr,
    /// The client's (latest) SYN, as parsed.
    syn: Segment,
    /// The client's SYN packet, held until the client leg takes it.
    held_syn: Vec<u8>,
    phase: Phase,
    /// Flow clock origin: smoltcp instants are offsets from it.
    epoch: Instant,
    last_now: SmolInstant,
    /// End of the current handshake wait (connect or accept).
    deadline: Option<SmolInstant>,
    seed: u64,
    /// MSS to announce in the server leg's SYN (the client's), if it had one.
    mirrored_mss: Option<u16>,
    server_leg: Endpoint,
    /// A fresh server leg is connecting (see `reconnect_server`).
    server_reconnecting: bool,
    client_leg: Option<Endpoint>,
    server_track: Track,
    client_track: Track,
    out: VecDeque<Transmit>,
    events: VecDeque<FlowEvent>,
    next_egress: Leg,
    /// When bytes first arrived from each leg's peer ([`side_index`]).
    first_rx: [Option<SmolInstant>; 2],
    /// When bytes were first queued toward each leg's peer.
    first_tx: [Option<SmolInstant>; 2],
    /// What each leg's segments said ([`side_index`]).
    wire: [Wire; 2],
    /// The MSS the server announced (the client leg announces no more).
    server_mss: Option<u16>,
}

/// Index of a leg in per-leg arrays.
fn side_index(side: Leg) -> usize {
    match side {
        Leg::Client => 0,
        Leg::Server => 1,
    }
}

impl fmt::Debug for Splice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Splice")
            .field("client", &self.client)
            .field("server", &self.server)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

const IPV4_TCP_HEADERS: usize = 20 + 20;
const IPV6_TCP_HEADERS: usize = 40 + 20;
/// Floor for the MSS mirrored from the client, so a tiny announced MSS
/// cannot make the server send us a flood of tiny segments.
const MIN_MIRRORED_MSS: u16 = 536;

impl Splice {
    /// Starts a splice from the client's opening SYN.
    ///
    /// `seed` must be random per flow: it seeds the initial sequence numbers
    /// of both legs. Nothing is sent to the client here; the first
    /// `poll_transmit` yields the SYN toward the server.
    pub fn from_syn(
        packet: &[u8],
        cfg: &FlowConfig,
        seed: u64,
        now: Instant,
    ) -> Result<Splice, FlowError> {
        Self::from_syn_checked(packet, false, cfg, seed, now)
    }

    /// Like [`from_syn`](Self::from_syn); with `checksum_trusted` the SYN's
    /// TCP checksum is not verified (see [`Offload::checksum_trusted`]).
    pub fn from_syn_checked(
        packet: &[u8],
        checksum_trusted: bool,
        cfg: &FlowConfig,
        seed: u64,
        now: Instant,
    ) -> Result<Splice, FlowError> {
        let syn = segment::parse_with(packet, !checksum_trusted)?;
        if !syn.is_opening_syn() {
            return Err(FlowError::NotSyn);
        }
        // smoltcp's notion of unicast, which a leg's interface asserts for the
        // address it takes on: a SYN to or from 255.255.255.255 panicked there
        // (found by the `tcp_segment` fuzz target).
        let usable =
            |a: SocketAddr| a.port() != 0 && smoltcp::wire::IpAddress::from(a.ip()).is_unicast();
        if !usable(syn.src) || !usable(syn.dst) {
            return Err(FlowError::Unaddressable {
                src: syn.src,
                dst: syn.dst,
            });
        }
        let headers = if syn.src.is_ipv4() {
            IPV4_TCP_HEADERS
        } else {
            IPV6_TCP_HEADERS
        };
        // The MSS our SYN announces to the server: the client's (so the
        // server sees what it would see without us), floored so a tiny
        // announced MSS cannot make the server flood us with tiny segments,
        // and never above what our own link carries.
        let link_mss = u16::try_from(cfg.mtu.saturating_sub(headers)).unwrap_or(u16::MAX);
        let mirrored_mss = syn.mss.map(|m| m.max(MIN_MIRRORED_MSS).min(link_mss));
        let t0 = SmolInstant::ZERO;
        let mut server_leg = Endpoint::new(
            &LegParams {
                local_ip: syn.src.ip(),
                mtu: cfg.mtu,
                rx_buffer: cfg.rx_buffer,
                tx_buffer: cfg.tx_buffer,
                timestamps: syn.timestamps,
                seed,
                partial_csum: cfg.offload,
            },
            t0,
        );
        if !server_leg.connect(syn.src, syn.dst) {
            return Err(FlowError::Unaddressable {
                src: syn.src,
                dst: syn.dst,
            });
        }
        Ok(Splice {
            cfg: *cfg,
            client: syn.src,
            server: syn.dst,
            syn,
            held_syn: packet.to_vec(),
            phase: Phase::Connecting,
            epoch: now,
            last_now: t0,
            deadline: Some(t0 + smol_duration(cfg.connect_timeout)),
            seed,
            mirrored_mss,
            server_leg,
            server_reconnecting: false,
            client_leg: None,
            server_track: Track::new(),
            client_track: Track::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_egress: Leg::Server,
            first_rx: [None; 2],
            first_tx: [None; 2],
            wire: [Wire::default(); 2],
            server_mss: None,
        })
    }

    /// The client's address and port (the source of the SYN).
    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    /// The server's address and port (the destination of the SYN).
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// The client's opening SYN as parsed (options included).
    pub fn client_syn(&self) -> &Segment {
        &self.syn
    }

    /// Where the splice is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the TCP handshake of either leg is still under way.
    pub fn is_half_open(&self) -> bool {
        matches!(self.phase, Phase::Connecting | Phase::Accepting)
    }

    /// Whether an opening SYN from `src`:`port` with sequence number `seq`
    /// starts a new connection that replaces this one: the client gave up
    /// on a handshake it never completed (another ISN), or this connection
    /// is over on the client's side (closed, TIME-WAIT, refused, timed out).
    ///
    /// A retransmission of the SYN this flow was born with never does; in
    /// `Connecting` the flow absorbs a new ISN itself (see `handle_packet`).
    pub fn superseded_by_syn(&self, src: IpAddr, port: u16, seq: u32) -> bool {
        if src != self.client.ip() || port != self.client.port() || seq == self.syn.seq {
            return false;
        }
        match self.phase {
            Phase::Connecting => false,
            Phase::Accepting | Phase::Refused | Phase::TimedOut | Phase::Closed => true,
            Phase::Established => self.client_leg.as_ref().is_some_and(|l| {
                matches!(l.state(), State::Closed | State::TimeWait | State::Listen)
            }),
        }
    }

    /// Whether the flow is over and has nothing left to send: the owner may drop it.
    ///
    /// Legs in TIME-WAIT count as closed: a middlebox need not keep 2*MSL of
    /// state per connection, and a late retransmitted FIN is harmless.
    pub fn is_finished(&self) -> bool {
        self.out.is_empty()
            && matches!(self.phase, Phase::Refused | Phase::TimedOut | Phase::Closed)
    }

    fn smol(&self, now: Instant) -> SmolInstant {
        let d = now.saturating_duration_since(self.epoch);
        SmolInstant::from_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    fn std_instant(&self, t: SmolInstant) -> Instant {
        self.epoch + Duration::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
    }

    /// Processes one IP packet that arrived from `from` (the client or the server).
    ///
    /// Packets are not required to belong to the flow; ones that don't are
    /// answered the way a host would (an RST from the address they were sent to).
    pub fn handle_packet(&mut self, from: Leg, packet: &[u8], now: Instant) {
        self.handle_packet_checked(from, packet, false, now);
    }

    /// Like [`handle_packet`](Self::handle_packet); with `checksum_trusted`
    /// the TCP checksum is not verified (the kernel verified it, or the
    /// packet comes from this host's stack with the checksum left to the
    /// transmitter: see [`crate::io::Offload`]).
    pub fn handle_packet_checked(
        &mut self,
        from: Leg,
        packet: &[u8],
        checksum_trusted: bool,
        now: Instant,
    ) {
        let t = self.smol(now);
        self.last_now = t;
        self.check_deadlines(t);
        match (from, self.phase) {
            (Leg::Client, Phase::Connecting) => {
                // Only the SYN exists on this leg yet: a retransmission is
                // absorbed, a new attempt (another ISN) replaces the held one.
                if let Ok(seg) = segment::parse_with(packet, !checksum_trusted) {
                    if seg.is_opening_syn()
                        && seg.src == self.client
                        && seg.dst == self.server
                        && seg.seq != self.syn.seq
                    {
                        self.syn = seg;
                        self.held_syn.clear();
                        self.held_syn.extend_from_slice(packet);
                    }
                }
                return;
            }
            (Leg::Client, Phase::Refused) => {
                // A host with a closed port answers every SYN, including a
                // retransmission after our first RST was lost.
                if let Ok(seg) = segment::parse_with(packet, !checksum_trusted) {
                    if seg.is_opening_syn() && seg.src == self.client && seg.dst == self.server {
                        self.out.push_back(Transmit {
                            side: Leg::Client,
                            packet: segment::refusal_rst(&seg),
                        });
                    }
                }
                return;
            }
            (_, Phase::Refused | Phase::TimedOut) => return,
            _ => {}
        }
        if let Some(f) = TcpFacts::parse(packet) {
            if from == Leg::Server && f.has(SYN) {
                self.server_mss = f.mss;
            }
            self.wire[side_index(from)].on_ingress(&f);
        }
        let mut reply = Vec::new();
        let replied = match from {
            Leg::Server if self.phase == Phase::Connecting || self.server_reconnecting => {
                // The SYN-ACK: adjust its MSS for smoltcp (see `peer_mss_for_smoltcp`).
                let mut synack = packet.to_vec();
                let link = self.link_mss();
                segment::rewrite_syn_mss(&mut synack, |m, ts| peer_mss_for_smoltcp(m, ts, link));
                self.server_leg
                    .ingress(&synack, checksum_trusted, t, &mut reply)
            }
            Leg::Server => self
                .server_leg
                .ingress(packet, checksum_trusted, t, &mut reply),
            Leg::Client => match self.client_leg.as_mut() {
                Some(leg) => leg.ingress(packet, checksum_trusted, t, &mut reply),
                None => false,
            },
        };
        if replied {
            self.out.push_back(Transmit {
                side: from,
                packet: reply,
            });
        }
        if self.first_rx[side_index(from)].is_none() && self.recv_queue(from) > 0 {
            self.first_rx[side_index(from)] = Some(t);
        }
        self.update(t);
    }

    /// Runs the flow's own timers (handshake deadlines); smoltcp's timers run
    /// inside `poll_transmit`. Call when `poll_timeout`'s instant has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.smol(now);
        self.last_now = t;
        self.check_deadlines(t);
    }

    /// The next instant at which `handle_timeout` + `poll_transmit` must run,
    /// if any (retransmissions, delayed ACKs, handshake deadlines).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if !self.out.is_empty() {
            return Some(self.std_instant(self.last_now));
        }
        if matches!(self.phase, Phase::Refused | Phase::TimedOut) {
            return None;
        }
        let now = self.last_now;
        let mut next = self.deadline;
        for at in [
            self.server_leg.poll_at(now),
            self.client_leg.as_mut().and_then(|l| l.poll_at(now)),
        ]
        .into_iter()
        .flatten()
        {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next.map(|t| self.std_instant(t))
    }

    /// Returns the next packet to send, if any; call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let mut buf = Vec::new();
        let side = self.poll_transmit_into(now, &mut buf)?;
        Some(Transmit { side, packet: buf })
    }

    /// Like [`poll_transmit`](Self::poll_transmit), writing the packet into
    /// `buf` (cleared first) so a worker can reuse one buffer for all flows.
    ///
    /// With [`FlowConfig::offload`] on, the packets' checksums are partial:
    /// use [`poll_transmit_offload`](Self::poll_transmit_offload) instead.
    pub fn poll_transmit_into(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Leg> {
        self.poll_transmit_offload(now, buf).map(|(side, _)| side)
    }

    /// Like [`poll_transmit_into`](Self::poll_transmit_into), also returning
    /// the checksum state of the packet for the device.
    pub fn poll_transmit_offload(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
    ) -> Option<(Leg, Offload)> {
        let t = self.smol(now);
        self.last_now = t;
        self.check_deadlines(t);
        if let Some(tx) = self.out.pop_front() {
            *buf = tx.packet;
            return Some((tx.side, Offload::default()));
        }
        if matches!(self.phase, Phase::Refused | Phase::TimedOut) {
            return None;
        }
        let order = [self.next_egress, self.next_egress.other()];
        for side in order {
            let sent = match side {
                Leg::Server => {
                    let sent = self.server_leg.egress(t, buf);
                    if sent.is_some()
                        && (self.phase == Phase::Connecting || self.server_reconnecting)
                    {
                        // Only SYNs leave the server leg now; give them the client's MSS.
                        if let Some(mss) = self.mirrored_mss {
                            segment::rewrite_syn_mss(buf, |ours, _| ours.min(mss));
                            // The rewrite made the checksum complete.
                            sent.map(|_| Offload::default())
                        } else {
                            sent
                        }
                    } else {
                        sent
                    }
                }
                Leg::Client => match self.client_leg.as_mut() {
                    Some(leg) => leg.egress(t, buf).map(|o| {
                        if self.phase == Phase::Accepting && self.clamp_synack_mss(buf) {
                            Offload::default()
                        } else {
                            o
                        }
                    }),
                    None => None,
                },
            };
            if let Some(offload) = sent {
                // SYNs (and their retransmissions) leave only during the handshakes.
                if self.is_half_open() || self.server_reconnecting {
                    if let Some(f) = TcpFacts::parse(buf).filter(|f| f.has(SYN)) {
                        self.wire[side_index(side)].on_egress(&f);
                    }
                }
                self.next_egress = side.other();
                self.update(t);
                return Some((side, offload));
            }
        }
        // smoltcp timers (TIME-WAIT expiry, RST after abort) may have moved
        // states without sending.
        self.update(t);
        None
    }

    /// Time from the first byte in to the first byte out, per direction:
    /// (client to server, server to client); `None` until both happened.
    pub fn added_latency(&self) -> (Option<Duration>, Option<Duration>) {
        let span = |rx: Option<SmolInstant>, tx: Option<SmolInstant>| match (rx, tx) {
            (Some(a), Some(b)) if b >= a => Some(Duration::from_micros((b - a).total_micros())),
            _ => None,
        };
        (
            span(self.first_rx[0], self.first_tx[1]),
            span(self.first_rx[1], self.first_tx[0]),
        )
    }

    /// Returns the next event, if any; call after `handle_packet` and `poll_transmit`.
    pub fn poll_event(&mut self) -> Option<FlowEvent> {
        self.events.pop_front()
    }

    fn check_deadlines(&mut self, t: SmolInstant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if t < deadline {
            return;
        }
        self.deadline = None;
        match self.phase {
            Phase::Connecting => {
                // Say nothing to anyone: the client times out as it would
                // without us, and a real client's stack would not RST the
                // server either.
                self.phase = Phase::TimedOut;
                self.held_syn = Vec::new();
                self.events.push_back(FlowEvent::ConnectTimedOut);
            }
            Phase::Accepting => {
                self.server_track.aborted = true;
                self.client_track.aborted = true;
                self.server_leg.socket().abort();
                if let Some(leg) = self.client_leg.as_mut() {
                    leg.socket().abort();
                }
                self.events.push_back(FlowEvent::AcceptTimedOut);
                self.update(t);
            }
            _ if self.server_reconnecting => {
                self.server_reconnecting = false;
                self.server_track.aborted = true;
                self.server_leg.socket().abort();
                self.events.push_back(FlowEvent::ConnectTimedOut);
                self.update(t);
            }
            _ => {}
        }
    }

    /// Turns socket state changes into phase transitions and events.
    fn update(&mut self, t: SmolInstant) {
        if self.server_reconnecting {
            match self.server_leg.state() {
                State::SynSent | State::SynReceived => {}
                State::Established => {
                    self.server_reconnecting = false;
                    self.deadline = None;
                    self.events.push_back(FlowEvent::ServerConnected);
                }
                // Refused or reset: `track` below reports Reset(Server).
                _ => {
                    self.server_reconnecting = false;
                    self.deadline = None;
                }
            }
        }
        match self.phase {
            Phase::Connecting => match self.server_leg.state() {
                State::Established => {
                    self.events.push_back(FlowEvent::ServerConnected);
                    self.accept_client(t);
                }
                State::Closed => {
                    // Only an RST moves SYN-SENT to CLOSED here (the connect
                    // timeout is ours, not smoltcp's).
                    self.phase = Phase::Refused;
                    self.deadline = None;
                    self.held_syn = Vec::new();
                    self.server_track.closed = true;
                    self.out.push_back(Transmit {
                        side: Leg::Client,
                        packet: segment::refusal_rst(&self.syn),
                    });
                    self.events.push_back(FlowEvent::Refused);
                }
                _ => {}
            },
            Phase::Accepting => {
                let client_state = self.client_leg.as_ref().map(Endpoint::state);
                let server_state = self.server_leg.state();
                if matches!(client_state, Some(State::Established | State::CloseWait)) {
                    self.phase = Phase::Established;
                    self.deadline = None;
                    self.events.push_back(FlowEvent::Connected);
                } else if matches!(client_state, Some(State::Closed | State::Listen))
                    && !self.client_track.aborted
                {
                    // The client reset its half-open connection (smoltcp
                    // returns a listening socket to LISTEN on that RST).
                    self.client_track.aborted = true;
                    self.server_track.aborted = true;
                    self.server_leg.socket().abort();
                    if let Some(leg) = self.client_leg.as_mut() {
                        // Out of LISTEN, so a later SYN cannot reopen it.
                        leg.socket().abort();
                    }
                    self.deadline = None;
                    self.events.push_back(FlowEvent::Reset(Leg::Client));
                } else if server_state == State::Closed && !self.server_track.aborted {
                    // The server went away before the client finished its handshake.
                    self.client_track.aborted = true;
                    self.server_track.aborted = true;
                    self.server_leg.socket().abort();
                    if let Some(leg) = self.client_leg.as_mut() {
                        leg.socket().abort();
                    }
                }
            }
            _ => {}
        }
        if matches!(
            self.phase,
            Phase::Accepting | Phase::Established | Phase::Closed
        ) {
            let s = self.server_leg.state();
            track(&mut self.server_track, s, Leg::Server, &mut self.events);
            let c = self
                .client_leg
                .as_ref()
                .map_or(State::Closed, Endpoint::state);
            track(&mut self.client_track, c, Leg::Client, &mut self.events);
            let done = |s: State| matches!(s, State::Closed | State::TimeWait);
            if self.phase != Phase::Closed && done(s) && done(c) {
                self.phase = Phase::Closed;
                self.deadline = None;
                self.events.push_back(FlowEvent::Closed);
            }
        }
    }

    /// The largest TCP payload one IP packet of our links carries.
    fn link_mss(&self) -> u16 {
        let headers = if self.client.is_ipv4() {
            IPV4_TCP_HEADERS
        } else {
            IPV6_TCP_HEADERS
        };
        u16::try_from(self.cfg.mtu.saturating_sub(headers)).unwrap_or(u16::MAX)
    }

    /// Hands the held SYN to a fresh client leg listening as the server.
    fn accept_client(&mut self, t: SmolInstant) {
        let mut leg = Endpoint::new(
            &LegParams {
                local_ip: self.server.ip(),
                mtu: self.cfg.mtu,
                rx_buffer: self.cfg.rx_buffer,
                tx_buffer: self.cfg.tx_buffer,
                // smoltcp drops timestamps itself if the SYN has none.
                timestamps: true,
                seed: self.seed.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15,
                partial_csum: self.cfg.offload,
            },
            t,
        );
        self.phase = Phase::Accepting;
        self.deadline = Some(t + smol_duration(self.cfg.accept_timeout));
        self.server_track.prev = self.server_leg.state();
        if leg.listen(self.server) {
            let link = self.link_mss();
            segment::rewrite_syn_mss(&mut self.held_syn, |m, ts| {
                peer_mss_for_smoltcp(m, ts, link)
            });
            // The client leg uses timestamps only if the server leg does,
            // so that a released connection's legs agree (see `release`).
            let server_ts = self.wire[side_index(Leg::Server)].peer_ts;
            if self.syn.timestamps && !server_ts {
                segment::strip_syn_timestamps(&mut self.held_syn);
            }
            let c = &mut self.wire[side_index(Leg::Client)];
            c.peer_isn = Some(self.syn.seq);
            c.peer_wscale = self.syn.window_scale;
            c.peer_ts = self.syn.timestamps && server_ts;
            c.peer_end = Some(self.syn.seq.wrapping_add(1));
            let mut reply = Vec::new();
            // The held SYN was checked when it arrived (or trusted then).
            if leg.ingress(&self.held_syn, true, t, &mut reply) {
                self.clamp_synack_mss(&mut reply);
                if let Some(f) = TcpFacts::parse(&reply).filter(|f| f.has(SYN)) {
                    self.wire[side_index(Leg::Client)].on_egress(&f);
                }
                self.out.push_back(Transmit {
                    side: Leg::Client,
                    packet: reply,
                });
            }
        }
        self.client_track.prev = leg.state();
        self.held_syn = Vec::new();
        self.client_leg = Some(leg);
    }

    fn leg_mut(&mut self, side: Leg) -> Result<&mut Endpoint, StreamError> {
        match side {
            Leg::Server => Ok(&mut self.server_leg),
            Leg::Client => self
                .client_leg
                .as_mut()
                .ok_or(StreamError::NotConnected(side)),
        }
    }

    /// Reads bytes the peer of `side` sent. `Ok(0)`: nothing buffered right now.
    pub fn recv(&mut self, side: Leg, buf: &mut [u8]) -> Result<usize, StreamError> {
        let socket = self.leg_mut(side)?.socket();
        match socket.recv_slice(buf) {
            Ok(n) => {
                self.wire[side_index(side)].read += n as u64;
                Ok(n)
            }
            Err(RecvError::Finished) => Err(StreamError::Finished(side)),
            Err(_) => Err(recv_state_error(socket.state(), side)),
        }
    }

    /// Copies buffered bytes of `side` into `buf` without consuming them
    /// (for peeking at a ClientHello). Returns how many were copied.
    pub fn peek(&mut self, side: Leg, buf: &mut [u8]) -> Result<usize, StreamError> {
        let socket = self.leg_mut(side)?.socket();
        match socket.peek_slice(buf) {
            Ok(n) => Ok(n),
            Err(RecvError::Finished) => Err(StreamError::Finished(side)),
            Err(_) => Err(recv_state_error(socket.state(), side)),
        }
    }

    /// Queues bytes to send to the peer of `side`; returns how many fit.
    pub fn send(&mut self, side: Leg, data: &[u8]) -> Result<usize, StreamError> {
        self.with_socket(side, |s| s.send_slice(data).map_err(|_| s.state()))?
            .map_err(|state| match state {
                State::SynSent | State::SynReceived | State::Listen => {
                    StreamError::NotConnected(side)
                }
                _ => StreamError::Closed(side),
            })
    }

    /// Moves as many buffered bytes as fit from `from`'s receive buffer to
    /// the other leg's send buffer, without an intermediate copy (pass mode).
    ///
    /// `Err(Finished(from))` once the peer of `from` finished and everything
    /// was moved: the owner then closes the other leg.
    pub fn splice(&mut self, from: Leg) -> Result<usize, StreamError> {
        let client = self
            .client_leg
            .as_mut()
            .ok_or(StreamError::NotConnected(Leg::Client))?;
        let (src, dst) = match from {
            Leg::Client => (client, &mut self.server_leg),
            Leg::Server => (&mut self.server_leg, client),
        };
        let dst = dst.socket();
        if !dst.may_send() {
            return Err(recv_state_error(dst.state(), from.other()));
        }
        let src = src.socket();
        let mut moved = 0;
        // A ring buffer hands out at most two contiguous runs.
        for _ in 0..2 {
            let r = src.recv(|data| {
                let n = dst.send_slice(data).unwrap_or(0);
                (n, n)
            });
            match r {
                Ok(0) => break,
                Ok(n) => moved += n,
                Err(RecvError::Finished) if moved == 0 => return Err(StreamError::Finished(from)),
                Err(RecvError::Finished) => break,
                Err(_) if moved == 0 => return Err(recv_state_error(src.state(), from)),
                Err(_) => break,
            }
        }
        self.wire[side_index(from)].read += moved as u64;
        self.wire[side_index(from.other())].written += moved as u64;
        if moved > 0 && self.first_tx[side_index(from.other())].is_none() {
            self.first_tx[side_index(from.other())] = Some(self.last_now);
        }
        Ok(moved)
    }

    /// Gives the client leg's SYN-ACK the server's MSS when it is smaller
    /// than ours, so the client never sends segments the server did not
    /// ask for (they cross unchanged once the flow is released). Returns
    /// whether the packet changed (its checksum is then complete).
    fn clamp_synack_mss(&self, packet: &mut [u8]) -> bool {
        let Some(mss) = self.server_mss else {
            return false;
        };
        if !TcpFacts::parse(packet).is_some_and(|f| f.has(SYN) && f.mss.is_some_and(|m| m > mss)) {
            return false;
        }
        segment::rewrite_syn_mss(packet, |ours, _| ours.min(mss))
    }

    /// Whether the connection can leave user-space TCP now, and how its
    /// later packets must be rewritten (see [`super::release`]).
    ///
    /// Only for a spliced connection (the owner relays bytes unchanged and
    /// has nothing of its own queued) whose legs are both established, with
    /// nothing buffered: every byte read from one leg was written to the
    /// other, every byte each peer sent was read (none held out of order)
    /// and every byte written was acknowledged. `trigger` is a packet that
    /// has arrived from a leg and was NOT handed to [`handle_packet`](Self::handle_packet):
    /// when it acknowledges everything that leg sent, the flow is released
    /// on it (the caller forwards it rewritten), which is how a flow whose
    /// server answers the ClientHello at once is released on that answer.
    /// A trigger with SYN or RST never releases.
    pub fn release(&self, trigger: Option<(Leg, &TcpFacts)>, now: Instant) -> Option<Release> {
        if self.phase != Phase::Established || self.server_reconnecting {
            return None;
        }
        if trigger.is_some_and(|(_, f)| f.has(SYN | RST)) {
            return None;
        }
        let client_leg = self.client_leg.as_ref()?;
        for (side, leg) in [(Leg::Client, client_leg), (Leg::Server, &self.server_leg)] {
            let sock = leg.socket_ref();
            if sock.state() != State::Established || sock.recv_queue() != 0 {
                return None;
            }
            let w = &self.wire[side_index(side)];
            if w.peer_end != w.rcv_nxt() {
                return None;
            }
            let acked = match trigger {
                Some((from, f)) if from == side => f.has(ACK) && Some(f.ack) == w.snd_nxt(),
                _ => sock.send_queue() == 0,
            };
            if !acked {
                return None;
            }
        }
        let [c, s] = self.wire;
        if c.read != s.written || s.read != c.written || c.timestamps() != s.timestamps() {
            return None;
        }
        let seq = s.snd_nxt()?.wrapping_sub(c.rcv_nxt()?);
        let ack = s.rcv_nxt()?.wrapping_sub(c.snd_nxt()?);
        let ts = if c.timestamps() {
            // The trigger carries its sender's latest TSval.
            let latest = |side: Leg, w: &Wire| match trigger {
                Some((from, f)) if from == side => f.ts.map(|t| t.0).or(w.peer_tsval),
                _ => w.peer_tsval,
            };
            let t = self.smol(now);
            // Each peer's clock continues where our leg's clock stood:
            // tsvals only move forward for the host that receives them.
            let d1 = self
                .server_leg
                .tsval_at(t)
                .wrapping_sub(latest(Leg::Client, &c)?);
            let d2 = client_leg
                .tsval_at(t)
                .wrapping_sub(latest(Leg::Server, &s)?);
            Some((d1, d2))
        } else {
            None
        };
        let shift = |w: &Wire, peer: bool| match (w.scaling(), peer) {
            (false, _) => 0,
            (true, true) => w.peer_wscale.unwrap_or(0),
            (true, false) => w.local_wscale.unwrap_or(0),
        };
        Some(Release {
            client: self.client,
            server: self.server,
            to_server: Rewrite {
                seq,
                ack,
                ts: ts.map(|(d1, d2)| (d1, d2.wrapping_neg())),
                shift_in: shift(&c, true),
                shift_out: shift(&s, false),
            },
            to_client: Rewrite {
                seq: ack.wrapping_neg(),
                ack: seq.wrapping_neg(),
                ts: ts.map(|(d1, d2)| (d2, d1.wrapping_neg())),
                shift_in: shift(&s, true),
                shift_out: shift(&c, false),
            },
            client_seq: c.rcv_nxt()?,
            server_seq: s.rcv_nxt()?,
        })
    }

    /// Bytes buffered for reading on `side`.
    pub fn recv_queue(&self, side: Leg) -> usize {
        self.leg_ref(side)
            .map_or(0, |l| l.socket_ref().recv_queue())
    }

    /// Free space in `side`'s send buffer.
    pub fn send_space(&self, side: Leg) -> usize {
        self.leg_ref(side).map_or(0, |l| {
            let s = l.socket_ref();
            if s.may_send() {
                s.send_capacity() - s.send_queue()
            } else {
                0
            }
        })
    }

    /// Bytes queued on `side` not yet acknowledged by its peer.
    pub fn send_queue(&self, side: Leg) -> usize {
        self.leg_ref(side)
            .map_or(0, |l| l.socket_ref().send_queue())
    }

    fn leg_ref(&self, side: Leg) -> Option<&Endpoint> {
        match side {
            Leg::Server => Some(&self.server_leg),
            Leg::Client => self.client_leg.as_ref(),
        }
    }

    /// Replaces the server leg by a fresh connection to the same server,
    /// again sourced from the client's address and port; the client leg is
    /// untouched.
    ///
    /// For a server that cannot be inspected (it asks for a client
    /// certificate, or speaks only versions we cannot terminate): the old
    /// server connection is reset (so the server forgets the 4-tuple before
    /// the new SYN), its unread bytes are discarded, and the owner replays the
    /// client's original ClientHello with `send(Leg::Server, ..)` once
    /// `FlowEvent::ServerConnected` arrives. A refusal then shows up as
    /// `Reset(Leg::Server)`, silence as `ConnectTimedOut`.
    pub fn reconnect_server(&mut self, now: Instant) -> Result<(), StreamError> {
        if self.phase != Phase::Established || self.server_reconnecting {
            return Err(StreamError::NotConnected(Leg::Server));
        }
        let t = self.smol(now);
        self.last_now = t;
        self.server_leg.socket().abort();
        let mut rst = Vec::new();
        if self.server_leg.egress(t, &mut rst).is_some() {
            self.out.push_back(Transmit {
                side: Leg::Server,
                packet: rst,
            });
        }
        // A new seed gives the new connection a new ISN.
        self.seed = self.seed.rotate_left(13) ^ 0xd1b5_4a32_d192_ed03;
        let mut leg = Endpoint::new(
            &LegParams {
                local_ip: self.client.ip(),
                mtu: self.cfg.mtu,
                rx_buffer: self.cfg.rx_buffer,
                tx_buffer: self.cfg.tx_buffer,
                timestamps: self.syn.timestamps,
                seed: self.seed,
                partial_csum: self.cfg.offload,
            },
            t,
        );
        if !leg.connect(self.client, self.server) {
            return Err(StreamError::Closed(Leg::Server));
        }
        self.server_leg = leg;
        self.wire[side_index(Leg::Server)] = Wire::default();
        self.server_track = Track {
            prev: State::SynSent,
            ..Track::new()
        };
        self.server_reconnecting = true;
        self.deadline = Some(t + smol_duration(self.cfg.connect_timeout));
        Ok(())
    }

    /// Half-closes `side`: a FIN follows the data already queued.
    pub fn close(&mut self, side: Leg) {
        if let Ok(leg) = self.leg_mut(side) {
            leg.socket().close();
        }
        let t = self.last_now;
        self.update(t);
    }

    /// Resets `side` at once (one RST goes out on the next `poll_transmit`).
    pub fn abort(&mut self, side: Leg) {
        match side {
            Leg::Server => self.server_track.aborted = true,
            Leg::Client => self.client_track.aborted = true,
        }
        if let Ok(leg) = self.leg_mut(side) {
            leg.socket().abort();
        }
        let t = self.last_now;
        self.update(t);
    }

    /// Client-leg shorthand for [`recv`](Self::recv).
    pub fn client_recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        self.recv(Leg::Client, buf)
    }

    /// Client-leg shorthand for [`send`](Self::send).
    pub fn client_send(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        self.send(Leg::Client, data)
    }

    /// Server-leg shorthand for [`recv`](Self::recv).
    pub fn server_recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        self.recv(Leg::Server, buf)
    }

    /// Server-leg shorthand for [`send`](Self::send).
    pub fn server_send(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        self.send(Leg::Server, data)
    }

    /// Bytes of memory this flow holds: its own struct, the sockets' slots
    /// and buffers, and whatever is queued (packets, events, the held SYN).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.server_leg.heap_bytes()
            + self.client_leg.as_ref().map_or(0, Endpoint::heap_bytes)
            + self.held_syn.capacity()
            + self.out.capacity() * std::mem::size_of::<Transmit>()
            + self.out.iter().map(|t| t.packet.capacity()).sum::<usize>()
            + self.events.capacity() * std::mem::size_of::<FlowEvent>()
    }

    /// Lends `side`'s socket to `f`, to read its receive ring and fill its
    /// send ring in place (the inspected path decrypts from one leg's ring
    /// and encrypts into the other's without a buffer in between). Bytes
    /// `f` queues count for [`added_latency`](Self::added_latency) as those
    /// of [`send`](Self::send) do.
    pub(crate) fn with_socket<R>(
        &mut self,
        side: Leg,
        f: impl FnOnce(&mut smoltcp::socket::tcp::Socket<'static>) -> R,
    ) -> Result<R, StreamError> {
        let now = self.last_now;
        let socket = self.leg_mut(side)?.socket();
        let (queued, buffered) = (socket.send_queue(), socket.recv_queue());
        let r = f(socket);
        let (sent, read) = (
            socket.send_queue().saturating_sub(queued),
            buffered.saturating_sub(socket.recv_queue()),
        );
        let first = &mut self.first_tx[side_index(side)];
        if first.is_none() && sent > 0 {
            *first = Some(now);
        }
        // Counted as `recv` counts (see `release`).
        let w = &mut self.wire[side_index(side)];
        w.written += sent as u64;
        w.read += read as u64;
        Ok(r)
    }
}

/// The MSS to hand smoltcp for a peer that announced `mss`.
///
/// smoltcp 0.12 sizes data segments as min(peer MSS, MTU - 40) and then adds
/// the 12-byte timestamps option on top, so with timestamps every full
/// segment would exceed the peer's MSS (and the path MTU) by 12 bytes.
/// Announcing 12 bytes less to smoltcp makes it send what Linux sends. The
/// peer's MSS is first clamped to our own link's (`link_mss`): a peer
/// announcing more than our link carries (e.g. 65495 on loopback-like
/// links) would otherwise still get segments of link MSS + 12 bytes.
fn peer_mss_for_smoltcp(mss: u16, timestamps: bool, link_mss: u16) -> u16 {
    let mss = mss.min(link_mss);
    if timestamps {
        mss.saturating_sub(12).max(64)
    } else {
        mss
    }
}

fn smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn recv_state_error(state: State, side: Leg) -> StreamError {
    match state {
        State::SynSent | State::SynReceived | State::Listen => StreamError::NotConnected(side),
        _ => StreamError::Closed(side),
    }
}

/// Emits `Finished`/`Reset` for one leg when its socket state says so.
fn track(tr: &mut Track, state: State, side: Leg, events: &mut VecDeque<FlowEvent>) {
    let prev = tr.prev;
    tr.prev = state;
    if !tr.fin
        && matches!(
            state,
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait
        )
    {
        tr.fin = true;
        events.push_back(FlowEvent::Finished(side));
    }
    if state == State::Closed && !tr.closed {
        tr.closed = true;
        // LAST-ACK and TIME-WAIT end in CLOSED normally; from anywhere else
        // (and unless we aborted it ourselves) CLOSED means an RST arrived.
        let normal = matches!(prev, State::LastAck | State::TimeWait | State::Closed);
        if !normal && !tr.aborted {
            events.push_back(FlowEvent::Reset(side));
        }
    }
}

#[cfg(test)]
mod mss_tests {
    use super::peer_mss_for_smoltcp;

    #[test]
    fn peer_mss_is_clamped_to_the_link_before_the_timestamp_allowance() {
        // A loopback-sized MSS with timestamps: smoltcp must get link MSS - 12.
        assert_eq!(peer_mss_for_smoltcp(65495, true, 1460), 1448);
        assert_eq!(peer_mss_for_smoltcp(65495, false, 1460), 1460);
        assert_eq!(peer_mss_for_smoltcp(1400, true, 1460), 1388);
        assert_eq!(peer_mss_for_smoltcp(1400, false, 1460), 1400);
        assert_eq!(peer_mss_for_smoltcp(20, true, 1460), 64);
    }
}
