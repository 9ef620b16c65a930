//! The per-connection driver of an in-scope TCP connection, sans-IO.
//!
//! An [`Connection`] glues the parts of DESIGN.md §1 and §4 together for
//! one connection: the transparent TCP splice ([`Splice`]), the
//! ClientHello peek, the decision table, the two-leg TLS state machine
//! ([`TlsPair`]) and the traffic-log record. A worker owns one per
//! intercepted connection and only moves IP packets and time in and out; all
//! protocol work happens here, so the whole path — a real rustls client, the
//! appliance, a real rustls server, each on its own TCP stack — can be tested
//! in memory, in virtual time, deterministically.
//!
//! It is built quinn-style, like the parts it drives: no sockets, no clock,
//! no threads. Time comes in as `now` (a monotonic [`Instant`]); the wall
//! clock for certificate checks and log timestamps is derived from the
//! `SystemTime` given at birth plus the monotonic time elapsed since.
//!
//! # Call order
//!
//! 1. An in-scope client SYN: [`Connection::new`]`(ctx, scope, syn, syn_checksum_trusted, seed, now, wall)`.
//!    The flow captures the context (and with it the policy's decision
//!    settings) it is born with: a reload that swaps the worker's context
//!    never changes the decision of an existing flow.
//! 2. Every IP packet of the connection: [`handle_packet`](Connection::handle_packet)`(side, packet, now)`
//!    (`Leg::Client` for packets from the client, `Leg::Server` for
//!    packets from the server).
//! 3. After 1, 2 or 4: [`poll_transmit`](Connection::poll_transmit)`(now)`
//!    until `None`, sending each packet toward its side (re-applying that
//!    side's L2 header). The work the packets of 2 made possible happens
//!    there, so a worker feeds a whole receive batch through 2 first and
//!    then calls 3 once: the flow reads its legs once per batch.
//! 4. When the instant of [`poll_timeout`](Connection::poll_timeout) has
//!    passed: [`handle_timeout`](Connection::handle_timeout)`(now)`, then 3.
//! 5. Once [`is_finished`](Connection::is_finished) (or when the worker
//!    gives up on the flow: idle timeout, shutdown),
//!    [`finish`](Connection::finish)`(now)` and write the record with
//!    `ctx.log.record(&rec)`. Alerts of the inspection engines are written to
//!    `ctx.log.alert` as they happen, from inside 2 and 4.
//!
//! # Life of a flow
//!
//! `Peeking` (both TCP legs up, the client's first bytes peeked, not consumed,
//! until the parser answers, the hello cap is reached, the server speaks
//! first or [`ConnCtx::hello_timeout`] passes) → the decision of
//! DESIGN.md §4, taken once, then one of:
//!
//! * pass: the legs are spliced; the bytes already peeked (the ClientHello)
//!   were never consumed, so they are relayed unchanged like the rest;
//! * block: a TLS `access_denied` alert then FIN to the client for a TLS
//!   hello, an RST for non-TLS bytes; the server leg is closed;
//! * inspect: ciphertext of each leg goes through [`TlsPair`], read where
//!   it lies in the leg's receive ring; the records it produces are written
//!   straight into the opposite leg's send ring and wait in rustls while that
//!   ring is full, and a leg is read only while nothing waits for the
//!   opposite one (backpressure);
//! * an mTLS or unsupported server found while inspecting: the pair goes into
//!   the bypass cache, the server leg is replaced by a fresh TCP connection
//!   from the client's address ([`Splice::reconnect_server`]), every
//!   byte the client sent so far is replayed on it and the flow is spliced.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::AlertDescription;
use smoltcp::socket::tcp::{RecvError, State as TcpState};

use crate::api::{
    CertMinter, FlowAction, FlowLog, FlowMeta, FlowRecord, InspectReport, Inspector, TlsHandshake,
    TlsInfo,
};
use crate::classify::ScopeMatch;
use crate::reason::Reason;
use crate::tcp::{FlowConfig, FlowError, FlowEvent, Leg, Release, Splice, StreamError, TcpFacts};
use crate::tls::bypass::{BypassCache, BypassReason};
use crate::tls::client_hello::{self, version_name, ClientHello, MAX_HELLO_BYTES};
use crate::tls::decision::{self, Action, Decision, TlsPolicy};
use crate::tls::pair::{self as tls_intercept, Event, TlsPair, TlsPairParams, UpstreamTls};

/// Shared per-worker settings and services of intercepted flows.
///
/// Built by the control plane from the configuration and swapped whole on
/// reload; each flow keeps the `Arc` it was born with.
pub struct ConnCtx {
    /// Forges the chains shown to clients.
    pub minter: Arc<dyn CertMinter>,
    /// Creates the plaintext inspector of each inspected flow.
    pub inspector: Arc<dyn Inspector>,
    /// Where engine alerts are written as they happen.
    pub log: Arc<dyn FlowLog>,
    /// The learned bypass cache, shared by all workers.
    pub bypass: Arc<BypassCache>,
    /// Server-leg TLS settings (roots, `invalid_certificate`).
    pub upstream: UpstreamTls,
    /// Decision settings per policy id.
    pub policies: HashMap<Arc<str>, Arc<TlsPolicy>>,
    /// Appliance-wide flow id allocator.
    pub flow_ids: Arc<AtomicU64>,
    /// TCP buffer sizes and handshake timeouts of both legs.
    pub tcp: FlowConfig,
    /// How long the client may take to send its first bytes (and complete
    /// its ClientHello) once connected; then the bytes are judged non-TLS.
    pub hello_timeout: Duration,
}

impl ConnCtx {
    /// Default for [`ConnCtx::hello_timeout`].
    pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
    /// Charged per flow for its two TLS sessions and the engines' state
    /// beyond the TCP buffers (see [`ConnCtx::flow_memory`]).
    pub const SESSION_ALLOWANCE: usize = 96 * 1024;

    /// What one intercepted flow is charged against the memory budget
    /// (`max_intercept_memory`): the receive and send buffers of both legs
    /// (allocated whole at the SYN), the held ClientHello, and a fixed
    /// allowance for the TLS sessions and the engines. Data an engine holds
    /// beyond that (a large HTTP/2 header block) is bounded by the engine's
    /// own limits, not charged here.
    pub fn flow_memory(&self) -> usize {
        2 * (self.tcp.rx_buffer + self.tcp.tx_buffer) + MAX_HELLO_BYTES + Self::SESSION_ALLOWANCE
    }
}

impl std::fmt::Debug for ConnCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnCtx")
            .field("policies", &self.policies.keys().collect::<Vec<_>>())
            .field("tcp", &self.tcp)
            .field("hello_timeout", &self.hello_timeout)
            .finish_non_exhaustive()
    }
}

/// Why a flow could not be started from a SYN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The SYN is unusable (see [`FlowError`]).
    #[error(transparent)]
    Tcp(#[from] FlowError),
    /// The scope names a policy the context has no settings for.
    #[error("policy {0:?} selected the flow but has no TLS decision settings")]
    UnknownPolicy(Arc<str>),
}

/// Bytes produced for a leg that its TCP send buffer has not taken yet.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    off: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.off >= self.buf.len()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.off = 0;
    }

    /// Pushes what fits into `side`'s send buffer; returns whether any moved.
    fn flush(&mut self, tcp: &mut Splice, side: Leg) -> bool {
        if self.is_empty() {
            return false;
        }
        match tcp.send(side, &self.buf[self.off..]) {
            Ok(n) if n > 0 => {
                self.off += n;
                if self.is_empty() {
                    self.clear();
                }
                true
            }
            _ => false,
        }
    }
}

/// What the flow is doing with the bytes of its legs.
enum Mode {
    /// Waiting for both legs, then for the ClientHello.
    Peeking,
    /// Relaying unchanged.
    Pass,
    /// Refusing: queued output for the client, then close.
    Block,
    /// Terminating TLS on both legs.
    Inspect(Box<TlsPair>),
    /// Nothing more to relay; waiting for the legs to close.
    Done,
}

/// What to do with a leg once its pending output is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Close,
    Abort,
}

/// The driver of one in-scope connection. See the [module docs](self).
pub struct Connection {
    ctx: Arc<ConnCtx>,
    policy: Arc<TlsPolicy>,
    tcp: Splice,
    mode: Mode,
    meta: FlowMeta,
    born: Instant,
    /// When the server leg, then the client leg, completed its handshake.
    server_up: Option<Instant>,
    client_up: Option<Instant>,
    wall0: SystemTime,
    hello_deadline: Option<Instant>,
    hello: Option<ClientHello>,
    decision: Option<Decision>,
    action: Option<FlowAction>,
    reason: Option<Reason>,
    tls: Option<TlsInfo>,
    report: Option<InspectReport>,
    to_server: Pending,
    to_client: Pending,
    after_server: After,
    after_client: After,
    /// The end of the client's stream was handed to the TLS machine / splice.
    client_eof: bool,
    server_eof: bool,
    bytes_toserver: u64,
    bytes_toclient: u64,
    error: Option<String>,
    /// The upstream chain was handed to [`Inspector::on_tls`].
    chain_seen: bool,
    /// Packets arrived since the last [`drive`](Self::drive).
    fed: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("flow_id", &self.meta.flow_id)
            .field("tcp", &self.tcp)
            .field("decision", &self.decision)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Hands everything `side`'s peer sent to `f` where it lies, in the leg's
/// receive ring (at most two contiguous runs), and consumes it: the inspected
/// path reads TLS without copying it out first.
///
/// `Ok(0)` when nothing is buffered; the errors of [`Splice::recv`].
fn recv_in_place(
    tcp: &mut Splice,
    side: Leg,
    mut f: impl FnMut(&[u8]),
) -> Result<usize, StreamError> {
    tcp.with_socket(side, |s| {
        let mut total = 0;
        for _ in 0..2 {
            match s.recv(|data| {
                f(data);
                (data.len(), data.len())
            }) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) if total > 0 => break,
                Err(RecvError::Finished) => return Err(StreamError::Finished(side)),
                Err(_) => {
                    return Err(match s.state() {
                        TcpState::SynSent | TcpState::SynReceived | TcpState::Listen => {
                            StreamError::NotConnected(side)
                        }
                        _ => StreamError::Closed(side),
                    })
                }
            }
        }
        Ok(total)
    })?
}

/// Lets `fill` write into the free space of `side`'s send ring (at most two
/// contiguous runs) and queues what it wrote; `fill` returns how many bytes
/// it wrote into the slice it was given. Returns the total.
fn send_in_place(tcp: &mut Splice, side: Leg, mut fill: impl FnMut(&mut [u8]) -> usize) -> usize {
    tcp.with_socket(side, |s| {
        let mut total = 0;
        for _ in 0..2 {
            match s.send(|buf| {
                let n = fill(buf);
                (n, n)
            }) {
                Ok(n) if n > 0 => total += n,
                _ => break,
            }
        }
        total
    })
    .unwrap_or(0)
}

impl Connection {
    /// Starts a flow from the client's opening SYN selected by `scope`.
    ///
    /// `seed` must be random per flow (TCP initial sequence numbers); `wall`
    /// is the wall-clock time at `now`. Nothing is sent to the client yet:
    /// the first `poll_transmit` yields the SYN toward the server.
    pub fn new(
        ctx: Arc<ConnCtx>,
        scope: &ScopeMatch,
        syn: &[u8],
        syn_checksum_trusted: bool,
        seed: u64,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Connection, StartError> {
        let policy = ctx
            .policies
            .get(&scope.policy_id)
            .cloned()
            .ok_or_else(|| StartError::UnknownPolicy(scope.policy_id.clone()))?;
        let tcp = Splice::from_syn_checked(syn, syn_checksum_trusted, &ctx.tcp, seed, now)?;
        let meta = FlowMeta {
            flow_id: ctx.flow_ids.fetch_add(1, Ordering::Relaxed),
            src: tcp.client_addr(),
            dest: tcp.server_addr(),
            policy_id: scope.policy_id.clone(),
            scope_id: scope.scope_id.clone(),
            sni: None,
            alpn: None,
            tunnel: None,
        };
        Ok(Connection {
            ctx,
            policy,
            tcp,
            mode: Mode::Peeking,
            meta,
            born: now,
            server_up: None,
            client_up: None,
            wall0: wall,
            hello_deadline: None,
            hello: None,
            decision: None,
            action: None,
            reason: None,
            tls: None,
            report: None,
            to_server: Pending::default(),
            to_client: Pending::default(),
            after_server: After::Nothing,
            after_client: After::Nothing,
            client_eof: false,
            server_eof: false,
            bytes_toserver: 0,
            bytes_toclient: 0,
            error: None,
            chain_seen: false,
            fed: false,
        })
    }

    /// Marks the flow as seen through `tunnel` (its records and alerts say
    /// so); called before its first packet is handled.
    pub fn seen_through(mut self, tunnel: Option<crate::api::TunnelInfo>) -> Connection {
        self.meta.tunnel = tunnel;
        self
    }

    /// Identity of the flow (addresses, policy, scope, SNI once known).
    pub fn meta(&self) -> &FlowMeta {
        &self.meta
    }

    /// The client's address and port.
    pub fn client_addr(&self) -> SocketAddr {
        self.tcp.client_addr()
    }

    /// The server's address and port.
    pub fn server_addr(&self) -> SocketAddr {
        self.tcp.server_addr()
    }

    /// Whether the TCP handshake of either leg is still under way.
    pub fn is_half_open(&self) -> bool {
        self.tcp.is_half_open()
    }

    /// Whether a new opening SYN replaces this flow
    /// (see [`Splice::superseded_by_syn`]).
    pub fn superseded_by_syn(&self, src: std::net::IpAddr, port: u16, seq: u32) -> bool {
        self.tcp.superseded_by_syn(src, port, seq)
    }

    /// Gives way to a new connection on the same addresses and ports: an
    /// undecided flow is logged as one whose client never completed its
    /// handshake. Then [`abort`](Self::abort) and [`finish`](Self::finish).
    pub fn supersede(&mut self) {
        self.end_undecided(Reason::ClientTimeout);
    }

    /// The §4 decision, once taken.
    pub fn decision(&self) -> Option<Decision> {
        self.decision
    }

    /// Memory held by the TCP legs (buffers included) and the queued output.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.tcp.memory_bytes()
            + self.to_server.buf.capacity()
            + self.to_client.buf.capacity()
    }

    /// The flow's handshake times and added latency so far.
    pub fn timings(&self) -> crate::latency::FlowTimings {
        let (to_server, to_client) = self.tcp.added_latency();
        crate::latency::FlowTimings {
            server_handshake: self
                .server_up
                .map(|t| t.saturating_duration_since(self.born)),
            client_handshake: match (self.server_up, self.client_up) {
                (Some(s), Some(c)) => Some(c.saturating_duration_since(s)),
                _ => None,
            },
            to_server,
            to_client,
        }
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.wall0 + now.saturating_duration_since(self.born)
    }

    /// Processes one IP packet that arrived from `from`.
    pub fn handle_packet(&mut self, from: Leg, packet: &[u8], now: Instant) {
        self.handle_packet_checked(from, packet, false, now);
    }

    /// Like [`handle_packet`](Self::handle_packet), without verifying the
    /// TCP checksum when `checksum_trusted` (see [`crate::io::Offload`]).
    pub fn handle_packet_checked(
        &mut self,
        from: Leg,
        packet: &[u8],
        checksum_trusted: bool,
        now: Instant,
    ) {
        self.tcp
            .handle_packet_checked(from, packet, checksum_trusted, now);
        // The work the packet makes possible waits for the next
        // poll_transmit: a worker feeds a whole receive batch first, so the
        // legs are read once per batch (whole TLS records, one cumulative
        // ACK) instead of once per segment.
        self.fed = true;
    }

    /// Runs the timers; call once `poll_timeout`'s instant has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tcp.handle_timeout(now);
        if self.hello_deadline.is_some_and(|d| now >= d) {
            self.hello_deadline = None;
            if matches!(self.mode, Mode::Peeking) {
                // Nothing recognisable in time: judged as non-TLS.
                self.decide(None, now);
            }
        }
        self.drive(now);
    }

    /// The next instant at which `handle_timeout` must run, if any.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let tcp = self.tcp.poll_timeout();
        match (tcp, self.hello_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next IP packet to send and the side it goes to; call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(Leg, Vec<u8>)> {
        let mut buf = Vec::new();
        let side = self.poll_transmit_into(now, &mut buf)?;
        Some((side, buf))
    }

    /// Like [`poll_transmit`](Self::poll_transmit), writing into `buf`
    /// (replaced) so a worker can reuse one buffer.
    pub fn poll_transmit_into(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Leg> {
        self.poll_transmit_offload(now, buf).map(|(side, _)| side)
    }

    /// Like [`poll_transmit_into`](Self::poll_transmit_into), also returning
    /// the packet's checksum state (partial when the flow's
    /// [`FlowConfig::offload`](crate::tcp::FlowConfig::offload) is on).
    pub fn poll_transmit_offload(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
    ) -> Option<(Leg, crate::io::Offload)> {
        if std::mem::take(&mut self.fed) {
            self.drive(now);
        }
        if let Some(t) = self.tcp.poll_transmit_offload(now, buf) {
            return Some(t);
        }
        // Timers inside smoltcp may have moved states (events to act on),
        // and sent data may have made room for queued output.
        self.drive(now);
        self.tcp.poll_transmit_offload(now, buf)
    }

    /// Resets both legs at once: one RST to each end on the next `poll_transmit`.
    ///
    /// For a worker giving up on the flow (idle timeout, shutdown, the
    /// interruption of a disabled policy) so neither end waits for a
    /// connection that no longer exists; [`finish`](Self::finish) then
    /// writes the record as usual.
    pub fn abort(&mut self) {
        self.tcp.abort(Leg::Client);
        self.tcp.abort(Leg::Server);
    }

    /// Marks a connection whose handling panicked: its TLS and engine
    /// state is dropped unread and its record says `internal_error`. The
    /// worker then [`abort`](Self::abort)s it like any flow it gives up on.
    pub fn fail(&mut self) {
        self.mode = Mode::Done;
        self.hello_deadline = None;
        self.reason = Some(Reason::InternalError);
        self.action.get_or_insert(FlowAction::Pass);
        self.error = Some("the flow's handling panicked".into());
    }

    /// Whether the flow is passed and only relays its legs' bytes, with
    /// nothing of its own queued: it may leave its TCP legs (see
    /// [`release`](Self::release)).
    pub fn is_releasable(&self) -> bool {
        matches!(self.mode, Mode::Pass)
            && self.to_server.is_empty()
            && !self.client_eof
            && !self.server_eof
    }

    /// Whether a passed flow can be released from its TCP legs now, and
    /// how its later packets are rewritten; see
    /// [`Splice::release`] for `trigger`. The caller then drops
    /// the flow (after taking its record with [`finish`](Self::finish))
    /// and forwards its packets, the trigger first, rewritten.
    pub fn release(&self, trigger: Option<(Leg, &TcpFacts)>, now: Instant) -> Option<Release> {
        if !self.is_releasable() {
            return None;
        }
        self.tcp.release(trigger, now)
    }

    /// Whether the connection is over on both legs with nothing left to send.
    pub fn is_finished(&self) -> bool {
        self.tcp.is_finished()
    }

    /// Ends the flow and returns its traffic-log record.
    ///
    /// May be called before [`is_finished`](Self::is_finished) (idle
    /// timeout, shutdown); the flow must be dropped afterwards.
    pub fn finish(&mut self, now: Instant) -> FlowRecord {
        self.log_alerts(now);
        if let Mode::Inspect(ic) = &mut self.mode {
            self.tls = Some(ic.tls_info().clone());
            self.meta.alpn = ic.meta().alpn.clone();
            if self.report.is_none() {
                self.report = ic.finish();
            }
        }
        if let Some(e) = &self.error {
            log::debug!("flow {}: {e}", self.meta.flow_id);
        }
        FlowRecord {
            timestamp: self.wall(now),
            meta: self.meta.clone(),
            proto: "TCP",
            action: self.action.unwrap_or(FlowAction::Pass),
            reason: self.reason.unwrap_or(Reason::Undecided),
            tls: self.tls.clone(),
            bytes_toserver: self.bytes_toserver,
            bytes_toclient: self.bytes_toclient,
            duration_ms: u64::try_from(now.saturating_duration_since(self.born).as_millis())
                .unwrap_or(u64::MAX),
            inspection: self.report.take(),
        }
    }

    /// Does all the work the latest input made possible.
    fn drive(&mut self, now: Instant) {
        // Bounded: every round either moves bytes or changes mode, and the
        // buffers are finite; the cap only guards against a logic slip.
        for _ in 0..256 {
            let mut progress = self.tcp_events(now);
            progress |= match self.mode {
                Mode::Peeking => self.peek(now),
                Mode::Pass => self.pump_pass(),
                Mode::Block | Mode::Done => self.pump_out(),
                Mode::Inspect(_) => self.pump_inspect(now),
            };
            if !progress {
                break;
            }
        }
    }

    /// Reacts to the splice's events; returns whether anything happened.
    fn tcp_events(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(ev) = self.tcp.poll_event() {
            any = true;
            match ev {
                FlowEvent::Connected => {
                    self.client_up.get_or_insert(now);
                    if matches!(self.mode, Mode::Peeking) && self.decision.is_none() {
                        self.hello_deadline = Some(now + self.ctx.hello_timeout);
                    }
                }
                FlowEvent::Refused => self.end_undecided(Reason::ServerRefused),
                FlowEvent::ConnectTimedOut => {
                    if self.decision.is_some() {
                        // The fresh server leg of a replay never answered:
                        // the client must not wait forever on a dead leg.
                        self.tcp.abort(Leg::Client);
                        self.error = Some("server leg: the reconnection timed out".into());
                        self.mode = Mode::Done;
                    }
                    self.end_undecided(Reason::ServerTimeout);
                }
                FlowEvent::AcceptTimedOut => self.end_undecided(Reason::ClientTimeout),
                FlowEvent::Reset(side) => {
                    self.tcp.abort(side.other());
                    if let Mode::Inspect(ic) = &mut self.mode {
                        self.tls = Some(ic.tls_info().clone());
                        self.meta.alpn = ic.meta().alpn.clone();
                        self.report = ic.finish();
                    }
                    self.end_undecided(Reason::Reset);
                    self.mode = Mode::Done;
                    self.hello_deadline = None;
                }
                FlowEvent::ServerConnected => {
                    self.server_up.get_or_insert(now);
                }
                FlowEvent::Finished(_) | FlowEvent::Closed => {}
            }
        }
        any
    }

    fn end_undecided(&mut self, why: Reason) {
        if self.reason.is_none() {
            self.reason = Some(why);
            self.action = Some(FlowAction::Pass);
        }
        if matches!(self.mode, Mode::Peeking) {
            self.mode = Mode::Done;
            self.hello_deadline = None;
        }
    }

    /// Peeks the client's first bytes until the hello parser can answer.
    fn peek(&mut self, now: Instant) -> bool {
        if self.hello_deadline.is_none() {
            return false; // legs not up yet
        }
        let queued = self.tcp.recv_queue(Leg::Client);
        // A server that speaks first (SMTP, SSH, ...) is not TLS.
        let server_spoke = self.tcp.recv_queue(Leg::Server) > 0;
        let mut buf = vec![0u8; queued.min(MAX_HELLO_BYTES)];
        let (n, client_done) = match self.tcp.peek(Leg::Client, &mut buf) {
            Ok(n) => (n, false),
            Err(StreamError::Finished(_)) => (0, true),
            Err(StreamError::NotConnected(_)) => return false,
            Err(StreamError::Closed(_)) => (0, true),
        };
        let server_done = matches!(
            self.tcp.peek(Leg::Server, &mut []),
            Err(StreamError::Finished(_) | StreamError::Closed(_))
        );
        let parsed = if n == 0 {
            Err(client_hello::Incomplete { needed: 1 })
        } else {
            client_hello::parse(&buf[..n])
        };
        match parsed {
            Ok(hello) => {
                let h = hello.clone();
                self.decide(hello, now);
                if let Some(hello) = &h {
                    let hs = TlsHandshake {
                        hello,
                        hello_bytes: &buf[..n],
                        upstream_chain: None,
                    };
                    self.log_tls(&hs, now);
                }
                true
            }
            Err(_) if server_spoke || client_done || server_done => {
                self.decide(None, now);
                true
            }
            // The hello cannot grow past the cap or the receive buffer.
            Err(_) if n >= MAX_HELLO_BYTES || n >= self.ctx.tcp.rx_buffer => {
                self.decide(None, now);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes the §4 decision once and sets the flow on its path.
    fn decide(&mut self, hello: Option<ClientHello>, now: Instant) {
        self.hello_deadline = None;
        let dest = self.meta.dest;
        let bypass = self.ctx.bypass.clone();
        let d = decision::decide(hello.as_ref(), &self.policy, |sni| {
            bypass.contains(sni, dest, now)
        });
        self.decision = Some(d);
        self.reason = Some(d.reason);
        if let Some(h) = &hello {
            self.meta.sni = h.sni.as_deref().map(Arc::from);
            self.tls = Some(TlsInfo {
                sni: h.sni.clone(),
                version: Some(version_name(h.highest_version())),
                ja4: Some(h.ja4.clone()),
                ..TlsInfo::default()
            });
        }
        match d.action {
            Action::Pass => {
                self.action = Some(FlowAction::Pass);
                self.mode = Mode::Pass;
            }
            Action::Block => {
                self.action = Some(FlowAction::Blocked);
                if hello.is_some() {
                    self.to_client
                        .buf
                        .extend_from_slice(&tls_intercept::alert_record(
                            AlertDescription::AccessDenied,
                        ));
                    self.after_client = After::Close;
                    self.after_server = After::Close;
                } else {
                    self.after_client = After::Abort;
                    self.after_server = After::Abort;
                }
                self.mode = Mode::Block;
            }
            Action::Inspect { tls13 } => {
                self.action = Some(FlowAction::Inspected);
                let Some(h) = hello else {
                    // decide() only inspects a parsed hello.
                    self.mode = Mode::Pass;
                    return;
                };
                self.hello = Some(h);
                self.start_inspect(tls13, now);
            }
        }
    }

    fn start_inspect(&mut self, tls13: bool, now: Instant) {
        let Some(hello) = self.hello.as_ref() else {
            return;
        };
        // Consume what was peeked: from now on the TLS machine owns the bytes.
        let mut bytes = vec![0u8; self.tcp.recv_queue(Leg::Client)];
        let n = self.tcp.recv(Leg::Client, &mut bytes).unwrap_or(0);
        bytes.truncate(n);
        self.bytes_toserver += n as u64;
        let params = TlsPairParams {
            upstream: self.ctx.upstream.clone(),
            minter: self.ctx.minter.clone(),
            inspector: self.ctx.inspector.clone(),
            meta: self.meta.clone(),
            tls13,
            now: self.wall(now),
        };
        match TlsPair::new(params, hello, &bytes) {
            Ok(ic) => {
                self.mode = Mode::Inspect(Box::new(ic));
                self.drain_intercept(now);
            }
            Err(e) => {
                // Nothing was consumed by a TLS peer yet; refuse cleanly.
                self.error = Some(e.to_string());
                self.reason = Some(Reason::TlsError);
                self.action = Some(FlowAction::Blocked);
                self.to_client
                    .buf
                    .extend_from_slice(&tls_intercept::alert_record(
                        AlertDescription::InternalError,
                    ));
                self.after_client = After::Close;
                self.after_server = After::Abort;
                self.mode = Mode::Block;
            }
        }
    }

    /// Pass: flush the replay (if any) first, then splice both ways.
    fn pump_pass(&mut self) -> bool {
        let mut progress = self.to_server.flush(&mut self.tcp, Leg::Server);
        if self.to_server.is_empty() && !self.client_eof {
            match self.tcp.splice(Leg::Client) {
                Ok(n) => {
                    progress |= n > 0;
                    self.bytes_toserver += n as u64;
                }
                Err(StreamError::Finished(_)) => {
                    self.client_eof = true;
                    self.tcp.close(Leg::Server);
                    progress = true;
                }
                Err(_) => {}
            }
        }
        if !self.server_eof {
            match self.tcp.splice(Leg::Server) {
                Ok(n) => {
                    progress |= n > 0;
                    self.bytes_toclient += n as u64;
                }
                Err(StreamError::Finished(_)) => {
                    self.server_eof = true;
                    self.tcp.close(Leg::Client);
                    progress = true;
                }
                Err(_) => {}
            }
        }
        progress
    }

    /// Block / Done: send what is queued, then close or abort as planned;
    /// discard whatever the peers still send.
    fn pump_out(&mut self) -> bool {
        let mut progress = false;
        for side in [Leg::Client, Leg::Server] {
            if recv_in_place(&mut self.tcp, side, |_| {}).is_ok_and(|n| n > 0) {
                progress = true;
            }
        }
        progress |= self.flush_and_after();
        progress
    }

    /// Whether bytes for `side` wait to be queued on its leg: in the
    /// [`Pending`] queue or, while inspecting, in the TLS machine.
    fn unsent(&self, side: Leg) -> bool {
        let pending = match side {
            Leg::Server => &self.to_server,
            Leg::Client => &self.to_client,
        };
        !pending.is_empty()
            || match &self.mode {
                Mode::Inspect(ic) => match side {
                    Leg::Server => ic.wants_write_to_server(),
                    Leg::Client => ic.wants_write_to_client(),
                },
                _ => false,
            }
    }

    /// Flushes both queues and applies a pending close/abort once a queue is empty.
    ///
    /// While inspecting, the TLS machine writes its records straight into
    /// the legs' send rings once the [`Pending`] queue ahead of them is empty.
    fn flush_and_after(&mut self) -> bool {
        let mut progress = self.to_server.flush(&mut self.tcp, Leg::Server);
        progress |= self.to_client.flush(&mut self.tcp, Leg::Client);
        if let Mode::Inspect(ic) = &mut self.mode {
            if self.to_server.is_empty() && ic.wants_write_to_server() {
                progress |=
                    send_in_place(&mut self.tcp, Leg::Server, |b| ic.write_to_server(b)) > 0;
            }
            if self.to_client.is_empty() && ic.wants_write_to_client() {
                progress |=
                    send_in_place(&mut self.tcp, Leg::Client, |b| ic.write_to_client(b)) > 0;
            }
        }
        for side in [Leg::Server, Leg::Client] {
            let unsent = self.unsent(side);
            let after = match side {
                Leg::Server => &mut self.after_server,
                Leg::Client => &mut self.after_client,
            };
            if unsent || *after == After::Nothing {
                continue;
            }
            match *after {
                After::Close => self.tcp.close(side),
                // Let the queued bytes leave before the RST discards them.
                After::Abort if self.tcp.send_queue(side) == 0 => self.tcp.abort(side),
                _ => continue,
            }
            *after = After::Nothing;
            progress = true;
        }
        progress
    }

    /// Inspect: ciphertext in from each leg, TLS machine, ciphertext out.
    fn pump_inspect(&mut self, now: Instant) -> bool {
        let mut progress = self.flush_and_after();
        progress |= self.feed_intercept();
        if progress {
            self.drain_intercept(now);
            self.flush_and_after();
        }
        progress
    }

    /// Reads each leg once into the TLS machine, honouring backpressure.
    ///
    /// The TLS machine reads the ciphertext where it lies in the leg's
    /// receive ring: whole records, everything the batch brought.
    fn feed_intercept(&mut self) -> bool {
        let mut progress = false;
        // Read a leg only while the opposite queue is drained (backpressure).
        let read_client = !self.client_eof && !self.unsent(Leg::Server);
        let read_server = !self.server_eof && !self.unsent(Leg::Client);
        let Mode::Inspect(ic) = &mut self.mode else {
            return false;
        };
        if read_client {
            match recv_in_place(&mut self.tcp, Leg::Client, |b| ic.handle_client_bytes(b)) {
                Ok(0) => {}
                Ok(n) => {
                    self.bytes_toserver += n as u64;
                    progress = true;
                }
                Err(StreamError::Finished(_) | StreamError::Closed(_)) => {
                    self.client_eof = true;
                    ic.handle_client_eof();
                    progress = true;
                }
                Err(StreamError::NotConnected(_)) => {}
            }
        }
        if read_server {
            match recv_in_place(&mut self.tcp, Leg::Server, |b| ic.handle_server_bytes(b)) {
                Ok(0) => {}
                Ok(n) => {
                    self.bytes_toclient += n as u64;
                    progress = true;
                }
                Err(StreamError::Finished(_) | StreamError::Closed(_)) => {
                    self.server_eof = true;
                    ic.handle_server_eof();
                    progress = true;
                }
                Err(StreamError::NotConnected(_)) => {}
            }
        }
        progress
    }

    fn log_alerts(&mut self, now: Instant) {
        let wall = self.wall(now);
        if let Mode::Inspect(ic) = &mut self.mode {
            for a in ic.take_alerts() {
                self.ctx.log.alert(ic.meta(), &a, wall);
            }
        }
    }

    /// The engines' alerts on a handshake, logged at once.
    fn log_tls(&self, hs: &TlsHandshake<'_>, now: Instant) {
        for a in self.ctx.inspector.on_tls(&self.meta, hs) {
            self.ctx.log.alert(&self.meta, &a, self.wall(now));
        }
    }

    /// Takes the TLS machine's events and output.
    fn drain_intercept(&mut self, now: Instant) {
        self.log_alerts(now);
        let Mode::Inspect(ic) = &mut self.mode else {
            return;
        };
        if let (false, Some(chain), Some(hello)) =
            (self.chain_seen, ic.upstream_chain(), &self.hello)
        {
            self.chain_seen = true;
            let hs = TlsHandshake {
                hello,
                hello_bytes: &[],
                upstream_chain: Some(chain),
            };
            let wall = self.wall0 + now.saturating_duration_since(self.born);
            for a in self.ctx.inspector.on_tls(&self.meta, &hs) {
                self.ctx.log.alert(&self.meta, &a, wall);
            }
        }
        let mut bypass = None;
        while let Some(ev) = ic.poll_event() {
            match ev {
                Event::Established => {
                    self.meta.alpn = ic.meta().alpn.clone();
                }
                Event::BypassAndReplay {
                    reason: why,
                    replay,
                } => {
                    bypass = Some((why, replay));
                }
                Event::ClientRejected { alert } => {
                    let sni = ic.tls_info().sni.clone();
                    let client = self.meta.src.ip();
                    self.ctx
                        .bypass
                        .report_rejection(sni.as_deref(), self.meta.dest, client, now);
                    self.reason = Some(Reason::Pinning);
                    self.error = Some(format!("client rejected our certificate: {alert:?}"));
                    self.after_client = After::Close;
                    self.after_server = After::Close;
                }
                Event::Blocked { error } => {
                    self.reason = Some(Reason::InvalidCertificate);
                    self.action = Some(FlowAction::Blocked);
                    self.error = Some(error);
                    self.after_client = After::Close;
                    self.after_server = After::Close;
                }
                Event::CloseServer => self.after_server = After::Close,
                Event::CloseClient => self.after_client = After::Close,
                Event::Finished => {}
                Event::Reset => {
                    self.reason = Some(Reason::Ips);
                    self.action = Some(FlowAction::Blocked);
                    self.after_client = After::Abort;
                    self.after_server = After::Abort;
                }
                Event::Failed(e) => {
                    let unverified = ic
                        .tls_info()
                        .upstream_cert
                        .as_ref()
                        .is_some_and(|c| !c.verified);
                    self.reason = Some(if unverified {
                        Reason::InvalidCertificate
                    } else {
                        Reason::TlsError
                    });
                    self.error = Some(e.to_string());
                    self.after_client = After::Abort;
                    self.after_server = After::Abort;
                }
            }
        }
        if let Some((why, replay)) = bypass {
            return self.bypass_and_replay(why, replay, now);
        }
        if ic.is_done() {
            // What the TLS machine still holds (an alert, close_notify)
            // outlives it in the queues.
            ic.poll_to_server(&mut self.to_server.buf);
            ic.poll_to_client(&mut self.to_client.buf);
            self.tls = Some(ic.tls_info().clone());
            self.meta.alpn = ic.meta().alpn.clone();
            self.report = ic.finish();
            self.mode = Mode::Done;
        }
    }

    /// The server cannot be intercepted: cache it, reconnect, replay, pass.
    fn bypass_and_replay(&mut self, why: BypassReason, replay: Vec<u8>, now: Instant) {
        let sni = self.hello.as_ref().and_then(|h| h.sni.clone());
        self.ctx
            .bypass
            .insert(sni.as_deref(), self.meta.dest, why, now);
        if let Mode::Inspect(ic) = &self.mode {
            self.tls = Some(ic.tls_info().clone());
        }
        self.reason = Some(match why {
            BypassReason::ClientAuth => Reason::ClientAuth,
            _ => Reason::UnsupportedServer,
        });
        self.action = Some(FlowAction::Pass);
        // Whatever was meant for the old server leg dies with it.
        self.to_server.clear();
        self.after_server = After::Nothing;
        self.server_eof = false;
        // Stream bytes the server sent on the old leg were never relayed.
        self.bytes_toclient = 0;
        if self.tcp.reconnect_server(now).is_ok() {
            self.to_server.buf = replay;
            self.mode = Mode::Pass;
        } else {
            self.error = Some("could not reopen the server leg".into());
            self.reason = Some(Reason::TlsError);
            self.after_client = After::Abort;
            self.after_server = After::Abort;
            self.mode = Mode::Done;
        }
    }
}
