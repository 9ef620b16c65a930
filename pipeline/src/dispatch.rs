//! What happens to one frame: the fast path, or a tracked in-scope flow.
//!
//! This is the sans-IO core of a worker. It gets parsed frames and `now`,
//! keeps the worker's flow table, and returns the [`Path`] a frame took; the
//! worker loop (`crate::worker`) does the receiving and forwarding. Keeping
//! the decision apart from the sockets lets it be tested with synthetic
//! frames and virtual time.
//!
//! What happens to a SYN: a TCP SYN (without ACK) arriving from the LAN side
//! is looked up in the current scope table. With an interception context
//! ([`Dispatcher::with_intercept`], what the appliance always sets), a match
//! starts an [`Connection`] from the SYN, which is NOT forwarded: the
//! flow terminates TCP on both legs itself. Every later packet of the flow,
//! in either direction, is fed to it and never forwarded; what the flow
//! sends goes into the dispatcher's outbox, which the worker drains into the
//! devices ([`Dispatcher::drain_tx`]) with the Ethernet header of the flow's
//! SYN re-applied (MACs swapped toward the client). The flow captures the
//! context of its birth, so a reload never changes its decision. Per-flow
//! timers live in one binary heap per worker ([`Dispatcher::run_timers`],
//! [`Dispatcher::next_timer`]); a heap entry is only pushed when a flow's
//! deadline moves earlier, so the heap holds about one entry per flow.
//! When a flow is finished (or idle too long, or at shutdown) its record goes
//! to the [`FlowLog`].
//!
//! Without an interception context (unit tests of the data plane alone) an
//! in-scope flow is only tracked: its frames are forwarded unchanged and
//! counted, and when it ends (FIN both ways, a RST, idle timeout or shutdown)
//! one record with action `pass` and reason `not_intercepting_yet` is written.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::api::{FlowAction, FlowLog, FlowMeta, FlowRecord};
use crate::classify::{ScopeMatch, ScopeTable};
use crate::conn::{ConnCtx, Connection};
use crate::flow::{Flow, FlowKey, FlowTable, Released, SegmentHead, PROTO_TCP};
use crate::frame::{EthView, FrameError, IpView, Payload, TcpView, Transport};
use crate::framing::{Framing, Received};
use crate::io::{Offload, RxMeta};
use crate::kernel_fast_path::KernelFastPath;
use crate::latency::Latency;
use crate::reason::Reason;
use crate::stats::Counters;
use crate::tcp::{Leg, Release, Rewrite, TcpFacts};
use crate::tls::decision::PassOrBlock;

/// Which NIC (or TUN) a frame arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// Toward the client hosts.
    Lan,
    /// Toward the gateway / servers.
    Wan,
}

impl Port {
    /// The side a frame from this side is forwarded to.
    pub fn other(self) -> Port {
        match self {
            Port::Lan => Port::Wan,
            Port::Wan => Port::Lan,
        }
    }
}

/// Which kind of fast-path traffic a frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastKind {
    /// ARP.
    Arp,
    /// UDP, QUIC included.
    Udp,
    /// ICMP / ICMPv6 (neighbour discovery).
    Icmp,
    /// TCP that no in-scope flow owns.
    Tcp,
    /// VLAN-tagged.
    Vlan,
    /// Anything else (other EtherTypes, IP protocols, fragments).
    Other,
}

/// The path a frame took, and so what the worker does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Forwarded untracked.
    Fast(FastKind),
    /// Belongs to a tracked in-scope flow (forwarded unchanged).
    InScope,
    /// Consumed by an intercepted flow: NOT forwarded (its output is in the outbox).
    Intercepted,
    /// Belongs to a passed flow released from its TCP legs: forward it
    /// after applying the rewrite to its IP packet, in place (the frame's
    /// TCP checksum is partial when its offload header says `NEEDS_CSUM`).
    Released(Rewrite),
    /// Did not parse; forwarded unchanged.
    Malformed(FrameError),
}

/// Maps the worker's monotonic clock to wall-clock time for log records.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    /// Pairs an `Instant` with the wall-clock time at that instant.
    pub fn new(instant: Instant, system: SystemTime) -> Clock {
        Clock { instant, system }
    }

    /// The wall-clock time of `now`.
    pub fn system(&self, now: Instant) -> SystemTime {
        self.system + now.saturating_duration_since(self.instant)
    }
}

/// An intercepted flow and what the worker needs to send its packets.
struct Held {
    flow: Connection,
    /// What goes in front of its packets toward each side.
    framing: Framing,
    born: Instant,
    last_seen: Instant,
    /// The deadline of this flow's live heap entry, if any.
    armed: Option<Instant>,
    /// Fed packets since it was last serviced (listed in `Dispatcher::pending`).
    pending: bool,
    /// Counted in `Dispatcher::half_open` (its handshake has not completed).
    half_open: bool,
}

/// A timer heap entry; ordered so that `BinaryHeap` pops the earliest first.
#[derive(Debug, Clone, Copy)]
struct Timer {
    at: Instant,
    key: FlowKey,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.cmp(&self.at)
    }
}

/// Frames the intercepted flows produced toward one side, waiting for the worker to send them.
#[derive(Debug, Default)]
struct SideQueue {
    buf: Vec<u8>,
    /// (start, length, offload header) of each frame in `buf`.
    frames: Vec<(usize, usize, Offload)>,
}

/// Frames the intercepted flows produced, one queue per side.
///
/// The order of frames toward one side is kept; the two sides are separate
/// devices, so nothing orders them against each other. A segment that
/// continues the last frame toward its side is merged into it (see
/// [`crate::gso`]), so a flow's burst leaves as one super-frame.
#[derive(Debug, Default)]
struct Outbox {
    lan: SideQueue,
    wan: SideQueue,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.lan.frames.is_empty() && self.wan.frames.is_empty()
    }

    /// Appends `packet` for `side` in its flow's `framing`; `offload`
    /// describes the bare IP packet. Returns whether it was merged into the
    /// previous frame instead.
    fn push(&mut self, side: Port, framing: &Framing, packet: &[u8], offload: Offload) -> bool {
        let q = match side {
            Port::Lan => &mut self.lan,
            Port::Wan => &mut self.wan,
        };
        let l2 = framing.header_len(side);
        if let Some(last) = q.frames.last_mut().filter(|_| !framing.tunnelled()) {
            if !offload.is_gso() && crate::gso::append(&mut q.buf, last.0, l2, &mut last.2, packet)
            {
                last.1 = q.buf.len() - last.0;
                return true;
            }
        }
        let start = q.buf.len();
        let mut offload = offload.shifted(l2 as u16);
        framing.write(side, packet, &mut q.buf);
        if framing.tunnelled() && offload.flags & Offload::NEEDS_CSUM != 0 {
            let (at, off) = (usize::from(offload.csum_start), offload.csum_offset);
            crate::geneve::complete_checksum(&mut q.buf[start..], at, usize::from(off));
            offload = Offload::default();
        }
        q.frames.push((start, q.buf.len() - start, offload));
        false
    }
}

/// What a received packet came with besides its IP bytes.
#[derive(Debug, Clone, Copy)]
struct Link<'a> {
    /// Its link header or encapsulation.
    framing: Received<'a>,
    /// Its checksum and segmentation state.
    offload: Offload,
}

/// The per-worker decision core.
pub struct Dispatcher {
    worker: u64,
    flows: FlowTable,
    next_flow: u64,
    scopes: Arc<ArcSwap<ScopeTable>>,
    log: Arc<dyn FlowLog>,
    clock: Clock,
    max_flows: usize,
    idle: Duration,
    intercept: Option<Arc<ArcSwap<ConnCtx>>>,
    /// This worker's share of `max_intercept_memory`, in bytes.
    memory_budget: usize,
    /// This worker's share of `max_half_open`.
    max_half_open: u64,
    /// Intercepted flows whose handshake has not completed, kept exact as
    /// flows are born, complete their handshakes and end.
    half_open: u64,
    /// `(deadline, key, flow id)` of the intercepted flows in push order:
    /// idle expiry in amortized O(1), as in [`FlowTable`].
    held_expiry: std::collections::VecDeque<(Instant, FlowKey, u64)>,
    held: hashbrown::HashMap<FlowKey, Held>,
    /// Intercepted flows whose TCP legs were dropped (ended or released).
    legs_freed: u64,
    /// `legs_freed` at the last heap trim (see `take_trim_hint`).
    trimmed_at: u64,
    timers: BinaryHeap<Timer>,
    outbox: Outbox,
    /// Flows fed packets in the current batch, to be serviced once each.
    pending: Vec<FlowKey>,
    /// The `now` of the latest packet fed to an intercepted flow.
    last_now: Instant,
    scratch: Vec<u8>,
    /// Release passed flows from their TCP legs (see [`crate::tcp::release`]).
    release: bool,
    due: Vec<Timer>,
    /// The worker's counters (published by the worker loop).
    pub counters: Counters,
    /// The worker's latency histograms (recorded as flows end, read by scrapes).
    latency: Arc<Mutex<Latency>>,
    /// Out-of-scope flows forwarded by the kernel (AF_PACKET with BPF), if on.
    kernel: Option<KernelFastPath>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("worker", &self.worker)
            .field("flows", &self.flows.len())
            .finish()
    }
}

impl Dispatcher {
    /// Creates the core of worker `worker` with a table of at most `max_flows` entries.
    pub fn new(
        worker: usize,
        max_flows: usize,
        idle_timeout: Duration,
        scopes: Arc<ArcSwap<ScopeTable>>,
        log: Arc<dyn FlowLog>,
        clock: Clock,
    ) -> Dispatcher {
        Dispatcher {
            worker: worker as u64,
            flows: FlowTable::new(max_flows, idle_timeout),
            next_flow: 0,
            scopes,
            log,
            clock,
            max_flows,
            idle: idle_timeout,
            intercept: None,
            memory_budget: usize::MAX,
            max_half_open: u64::MAX,
            half_open: 0,
            held_expiry: std::collections::VecDeque::new(),
            held: hashbrown::HashMap::new(),
            legs_freed: 0,
            trimmed_at: 0,
            timers: BinaryHeap::new(),
            outbox: Outbox::default(),
            pending: Vec::new(),
            last_now: clock.instant,
            scratch: Vec::with_capacity(2048),
            release: true,
            due: Vec::new(),
            counters: Counters::default(),
            latency: Arc::default(),
            kernel: None,
        }
    }

    /// The histograms this worker records its flows' latency into.
    pub fn latency(&self) -> Arc<Mutex<Latency>> {
        self.latency.clone()
    }

    /// Intercepts in-scope flows with the context `ctx` holds at each SYN.
    ///
    /// A reload stores a new context; flows keep the one they were born with.
    pub fn with_intercept(mut self, ctx: Arc<ArcSwap<ConnCtx>>) -> Dispatcher {
        self.intercept = Some(ctx);
        self
    }

    /// Bounds what the intercepted flows may hold: `memory` bytes (see
    /// [`ConnCtx::flow_memory`]) and `half_open` flows whose handshake
    /// has not completed. Beyond either, a new in-scope connection follows
    /// its policy's `on_overload`.
    pub fn with_limits(mut self, memory: usize, half_open: usize) -> Dispatcher {
        self.memory_budget = memory;
        self.max_half_open = half_open as u64;
        self
    }

    /// Releases passed flows from their TCP legs once everything they hold
    /// is delivered (on by default; off keeps every passed byte on the legs,
    /// for comparison benches).
    pub fn with_release(mut self, on: bool) -> Dispatcher {
        self.release = on;
        self
    }

    /// Hands every frame the intercepted flows produced to `send`, in order, and empties the outbox.
    ///
    /// On AF_PACKET the frames carry their Ethernet header; on TUN they are bare IP packets.
    pub fn drain_tx(&mut self, mut send: impl FnMut(Port, &[u8], &Offload)) {
        self.service_pending();
        for (side, q) in [
            (Port::Lan, &mut self.outbox.lan),
            (Port::Wan, &mut self.outbox.wan),
        ] {
            for (start, len, offload) in &q.frames {
                send(side, &q.buf[*start..*start + *len], offload);
            }
            q.frames.clear();
            q.buf.clear();
        }
    }

    /// Whether frames wait in the outbox (or flows that were fed packets
    /// still have to be serviced).
    pub fn has_tx(&self) -> bool {
        !self.outbox.is_empty() || !self.pending.is_empty()
    }

    /// Services every intercepted flow that was fed packets since the last
    /// call: what they send goes to the outbox.
    ///
    /// A flow is serviced once per receive batch however many of its
    /// packets the batch held, so it answers a burst with one cumulative
    /// ACK and its output leaves in as few (super-)frames as possible. The
    /// worker calls this after each batch; `drain_tx` calls it too.
    pub fn service_pending(&mut self) {
        let now = self.last_now;
        let mut pending = std::mem::take(&mut self.pending);
        for key in pending.drain(..) {
            if let Some(h) = self.held.get_mut(&key) {
                h.pending = false;
            }
            self.service(key, now);
        }
        self.pending = pending;
    }

    /// The earliest instant an intercepted flow's timer is due.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|t| t.at)
    }

    /// Runs the timers of intercepted flows due at `now`.
    ///
    /// Timers a flow arms while being run wait for the next call, so a flow
    /// cannot keep the worker here.
    pub fn run_timers(&mut self, now: Instant) {
        while self.timers.peek().is_some_and(|t| t.at <= now) {
            if let Some(t) = self.timers.pop() {
                self.due.push(t);
            }
        }
        let mut due = std::mem::take(&mut self.due);
        for t in due.drain(..) {
            let Some(h) = self.held.get_mut(&t.key) else {
                continue;
            };
            // An entry superseded by an earlier one is stale.
            if h.armed != Some(t.at) {
                continue;
            }
            h.armed = None;
            if catch_unwind(AssertUnwindSafe(|| h.flow.handle_timeout(now))).is_err() {
                self.fail_held(t.key, now);
                continue;
            }
            self.service(t.key, now);
        }
        self.due = due;
    }

    /// Sends what an intercepted flow produced, ends it if finished, re-arms
    /// its timer. A panic in the flow's code ends that flow alone
    /// ([`fail_held`](Self::fail_held)).
    fn service(&mut self, key: FlowKey, now: Instant) {
        if catch_unwind(AssertUnwindSafe(|| self.service_flow(key, now))).is_err() {
            self.fail_held(key, now);
        }
    }

    fn service_flow(&mut self, key: FlowKey, now: Instant) {
        let Some(h) = self.held.get_mut(&key) else {
            return;
        };
        while let Some((leg, offload)) = h.flow.poll_transmit_offload(now, &mut self.scratch) {
            let side = match leg {
                Leg::Client => Port::Lan,
                Leg::Server => Port::Wan,
            };
            if crate::tcp::release::is_pure_ack(&self.scratch) {
                self.counters.intercept_tx_acks += 1;
            }
            if self.outbox.push(side, &h.framing, &self.scratch, offload) {
                self.counters.intercept_tx_coalesced += 1;
            }
            self.counters.intercept_tx_packets += 1;
        }
        if h.half_open && !h.flow.is_half_open() {
            h.half_open = false;
            self.half_open = self.half_open.saturating_sub(1);
            self.counters.intercept_half_open = self.half_open;
        }
        if h.flow.is_finished() {
            if let Some(h) = self.take_held(&key) {
                self.end_intercepted(h, now);
            }
            return;
        }
        if self.release && h.flow.is_releasable() {
            if let Some(rel) = h.flow.release(None, now) {
                if let Some(h) = self.take_held(&key) {
                    self.release_flow(key, h, rel, now);
                }
                return;
            }
        }
        if let Some(d) = h.flow.poll_timeout() {
            if h.armed.is_none_or(|a| d < a) {
                h.armed = Some(d);
                self.timers.push(Timer { at: d, key });
            }
        }
    }

    /// Ends an intercepted flow whose handling panicked (a bug in a TCP
    /// stack, TLS or an engine), so that one flow's bug never stops the
    /// worker's others: both legs are reset and the flow is logged with
    /// reason `internal_error`; the panic message went to stderr.
    fn fail_held(&mut self, key: FlowKey, now: Instant) {
        self.counters.intercept_panics += 1;
        let Some(mut h) = self.take_held(&key) else {
            return;
        };
        let (id, client, server) = (
            h.flow.meta().flow_id,
            h.flow.client_addr(),
            h.flow.server_addr(),
        );
        log::error!(
            "worker {}: flow {id} ({client} -> {server}) panicked; it is reset and logged with reason internal_error, the other flows go on",
            self.worker
        );
        let ended = catch_unwind(AssertUnwindSafe(|| {
            h.flow.fail();
            self.abort_intercepted(h, now);
        }));
        if ended.is_err() {
            log::error!(
                "worker {}: flow {id} panicked again while being reset; its record is lost",
                self.worker
            );
            self.legs_freed += 1;
            self.counters.flows_ended += 1;
            self.counters.intercepted_ended += 1;
            self.counters.flows_active = (self.flows.len() + self.held.len()) as u64;
        }
    }

    /// Resets both legs of a flow the worker gives up on, sends the RSTs, ends it.
    fn abort_intercepted(&mut self, mut h: Held, now: Instant) {
        h.flow.abort();
        while let Some((leg, offload)) = h.flow.poll_transmit_offload(now, &mut self.scratch) {
            let side = match leg {
                Leg::Client => Port::Lan,
                Leg::Server => Port::Wan,
            };
            if self.outbox.push(side, &h.framing, &self.scratch, offload) {
                self.counters.intercept_tx_coalesced += 1;
            }
            self.counters.intercept_tx_packets += 1;
        }
        self.end_intercepted(h, now);
    }

    /// Interrupts (resets) every intercepted flow of `policies` born before `before`.
    ///
    /// For `on_disable = "interrupt"`: flows born after the policy was
    /// re-enabled are left alone.
    pub fn interrupt(&mut self, policies: &[Arc<str>], before: Instant, now: Instant) {
        let hit: Vec<FlowKey> = self
            .held
            .iter()
            .filter(|(_, h)| h.born < before && policies.contains(&h.flow.meta().policy_id))
            .map(|(k, _)| *k)
            .collect();
        for k in hit {
            if let Some(h) = self.take_held(&k) {
                self.counters.intercept_interrupted += 1;
                self.abort_intercepted(h, now);
            }
        }
        let mut released = Vec::new();
        self.flows.remove_where(
            |f| {
                f.released.as_deref().is_some_and(|r| {
                    r.record.is_some() && r.born < before && policies.contains(&f.scope.policy_id)
                })
            },
            |f| released.push(f),
        );
        for f in released {
            self.counters.intercept_interrupted += 1;
            self.reset_released(&f);
            self.end(f, now);
        }
    }

    /// Removes an intercepted flow from the table, keeping the half-open count.
    fn take_held(&mut self, key: &FlowKey) -> Option<Held> {
        let h = self.held.remove(key)?;
        if h.half_open {
            self.half_open = self.half_open.saturating_sub(1);
            self.counters.intercept_half_open = self.half_open;
        }
        Some(h)
    }

    /// Moves a passed flow from its TCP legs to the flow table, where its
    /// packets are rewritten by `rel`; its record is written when it ends.
    /// Its latency is recorded now, or, when the server had not answered
    /// yet, once its first bytes are forwarded.
    fn release_flow(&mut self, key: FlowKey, mut h: Held, rel: Release, now: Instant) {
        let timings = h.flow.timings();
        let pending = timings.to_client.is_none().then_some(timings);
        if pending.is_none() {
            if let Ok(mut l) = self.latency.lock() {
                l.record(&timings);
            }
        }
        let record = h.flow.finish(now);
        self.counters.intercept_released += 1;
        self.legs_freed += 1;
        let scope = ScopeMatch {
            policy_id: record.meta.policy_id.clone(),
            scope_id: record.meta.scope_id.clone(),
        };
        let mut flow = Flow::new(record.meta.flow_id, rel.client, rel.server, scope, now);
        // Reordered segments right after the release still count.
        flow.toserver = crate::flow::StreamBytes::starting_at(rel.client_seq);
        flow.toclient = crate::flow::StreamBytes::starting_at(rel.server_seq);
        flow.released = Some(Box::new(Released {
            rewrite: rel,
            record: Some(record),
            framing: h.framing,
            born: h.born,
            timings: pending,
        }));
        // An entry left on these ports (a lingering released flow) gives way.
        if let Some(old) = self.flows.remove(&key) {
            self.end(old, now);
        }
        if let Err(e) = self.flows.insert(key, flow) {
            // Cannot happen: the held flow counted against the same cap.
            log::warn!("worker {}: releasing {key:?}: {e}", self.worker);
        }
    }

    /// Accounts a packet of a released flow; the caller forwards it with
    /// the rewrite returned in [`Path::Released`].
    ///
    /// Its checksum is not verified (the end host does that) unless the
    /// flow's bookkeeping would act on it: a FIN, RST or SYN, or a segment
    /// that moves its stream further than its own length (after a gap,
    /// which is rare without loss). A corrupted segment is still forwarded
    /// but counts for nothing, so a flipped bit can neither end the flow
    /// nor inflate its byte counts.
    fn forward_released(
        &mut self,
        key: FlowKey,
        from_client: bool,
        seg: SegmentHead,
        raw: &[u8],
        trusted: bool,
        now: Instant,
    ) -> Path {
        let Some(flow) = self.flows.get_mut(&key) else {
            return Path::Fast(FastKind::Tcp);
        };
        let Some(rel) = flow.released.as_deref() else {
            return Path::InScope;
        };
        let (rewrite, stream) = if from_client {
            (rel.rewrite.to_server, &flow.toserver)
        } else {
            (rel.rewrite.to_client, &flow.toclient)
        };
        let suspicious = seg.flags.fin()
            || seg.flags.rst()
            || seg.flags.syn()
            || stream.jump(seg.seq, seg.len) as usize > seg.len;
        if !trusted && suspicious && !crate::tcp::checksum::tcp_checksum_ok(raw) {
            self.counters.rx_bad_checksum += 1;
            return Path::Released(rewrite);
        }
        let done = flow.on_segment(from_client, seg, now);
        if let Some(rel) = flow
            .released
            .as_deref_mut()
            .filter(|_| !from_client && seg.len > 0)
        {
            if let Some(mut t) = rel.timings.take() {
                // The server's first bytes: forwarded in this step.
                t.to_client = Some(Instant::now().saturating_duration_since(now));
                if let Ok(mut l) = self.latency.lock() {
                    l.record(&t);
                }
            }
        }
        self.counters.released_frames += 1;
        self.counters.released_bytes += raw.len() as u64;
        if done && flow.linger_until.is_none() {
            // Written now; the entry stays a little for the last ACKs.
            let record = flow.released.as_mut().and_then(|r| r.record.take());
            let (toserver, toclient, lived) = (
                flow.bytes_toserver(),
                flow.bytes_toclient(),
                flow.duration(),
            );
            self.flows.linger(&key, now, RELEASED_LINGER);
            if let Some(rec) = record {
                self.write_released(rec, toserver, toclient, lived, now);
            }
        }
        Path::Released(rewrite)
    }

    /// Resets both ends of a released flow the appliance gives up on (idle
    /// timeout, shutdown, an interrupted policy): each gets an RST at the
    /// sequence number it expects, so it takes it at once.
    fn reset_released(&mut self, flow: &Flow) {
        let Some(rel) = flow.released.as_deref().filter(|r| r.record.is_some()) else {
            return; // not released, or ended already
        };
        let (client, server) = (flow.client, flow.server);
        // The next number each end expects: its peer's stream so far, in
        // the numbering the end sees.
        let expects =
            |s: &crate::flow::StreamBytes, rw: &Rewrite| s.next().map(|n| n.wrapping_add(rw.seq));
        for (side, src, dst, seq) in [
            (
                Port::Lan,
                server,
                client,
                expects(&flow.toclient, &rel.rewrite.to_client),
            ),
            (
                Port::Wan,
                client,
                server,
                expects(&flow.toserver, &rel.rewrite.to_server),
            ),
        ] {
            let Some(seq) = seq else { continue };
            let rst = crate::tcp::segment::reset(src, dst, seq);
            self.outbox
                .push(side, &rel.framing, &rst, Offload::default());
            self.counters.intercept_tx_packets += 1;
        }
    }

    /// Completes and writes the record of a released flow.
    fn write_released(
        &mut self,
        mut rec: FlowRecord,
        toserver: u64,
        toclient: u64,
        lived: Duration,
        now: Instant,
    ) {
        rec.bytes_toserver += toserver;
        rec.bytes_toclient += toclient;
        rec.duration_ms += u64::try_from(lived.as_millis()).unwrap_or(u64::MAX);
        rec.timestamp = self.clock.system(now);
        self.log.record(&rec);
        self.counters.flows_ended += 1;
        self.counters.intercepted_ended += 1;
    }

    fn end_intercepted(&mut self, mut h: Held, now: Instant) {
        let timings = h.flow.timings();
        if let Ok(mut l) = self.latency.lock() {
            l.record(&timings);
        }
        let rec = match catch_unwind(AssertUnwindSafe(|| h.flow.finish(now))) {
            Ok(rec) => rec,
            Err(_) => {
                // An engine's end-of-flow work panicked: the record is
                // written without it.
                self.counters.intercept_panics += 1;
                h.flow.fail();
                h.flow.finish(now)
            }
        };
        self.log.record(&rec);
        self.legs_freed += 1;
        self.counters.flows_ended += 1;
        self.counters.intercepted_ended += 1;
        self.counters.flows_active = (self.flows.len() + self.held.len()) as u64;
    }

    /// Decides the path of an Ethernet frame (AF_PACKET).
    ///
    /// `frame` is the whole frame `parsed` was parsed from.
    pub fn on_ethernet(
        &mut self,
        side: Port,
        frame: &[u8],
        parsed: Result<EthView<'_>, FrameError>,
        meta: RxMeta,
        now: Instant,
    ) -> Path {
        let wire_len = frame.len();
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += wire_len as u64;
        let path = match parsed {
            Err(e) => Path::Malformed(e),
            // Tagged traffic belongs to another broadcast domain; it is
            // bridged as-is (the tag restored if the kernel stripped it).
            Ok(_) if meta.vlan.is_some() => Path::Fast(FastKind::Vlan),
            Ok(eth) if eth.vlan.count > 0 => Path::Fast(FastKind::Vlan),
            Ok(eth) => match eth.payload {
                Payload::Arp => Path::Fast(FastKind::Arp),
                Payload::Other(_) => Path::Fast(FastKind::Other),
                Payload::Ip(ip) => {
                    // Untagged (tagged frames took the branch above): the
                    // IP packet follows the 14-byte Ethernet header.
                    let raw = frame.get(14..).unwrap_or_default();
                    let framing = frame
                        .get(..12)
                        .and_then(|m| <[u8; 12]>::try_from(m).ok())
                        .map_or(Received::Ip, Received::Ethernet);
                    self.ip_path(
                        side,
                        &ip,
                        raw,
                        Link {
                            framing,
                            offload: meta.offload,
                        },
                        now,
                    )
                }
            },
        };
        self.count(path, wire_len);
        path
    }

    /// Decides the path of a bare IP packet (TUN).
    ///
    /// `packet` is the whole packet `parsed` was parsed from.
    pub fn on_ip(
        &mut self,
        side: Port,
        packet: &[u8],
        parsed: Result<IpView<'_>, FrameError>,
        meta: RxMeta,
        now: Instant,
    ) -> Path {
        let wire_len = packet.len();
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += wire_len as u64;
        let path = match parsed {
            Err(e) => Path::Malformed(e),
            Ok(ip) => self.ip_path(
                side,
                &ip,
                packet,
                Link {
                    framing: Received::Ip,
                    offload: meta.offload,
                },
                now,
            ),
        };
        self.count(path, wire_len);
        path
    }

    /// Decides the path of a GENEVE frame (`mode = "geneve"`): `frame` is
    /// the whole frame as received, `t` where its parts are, `parsed` its
    /// inner packet (`frame[t.inner..]`) parsed, `offload` the checksum
    /// state of the inner packet. A frame the worker forwards it swaps back
    /// toward its load balancer ([`crate::geneve::swap_outer`]) afterwards.
    ///
    /// Both directions arrive on one interface, so the side is the
    /// packet's role: a TCP SYN without ACK comes from the client ("LAN"),
    /// everything else may come from either end, and only SYNs ask.
    pub fn on_geneve(
        &mut self,
        frame: &[u8],
        t: crate::geneve::Tunnel,
        parsed: Result<IpView<'_>, FrameError>,
        offload: Offload,
        now: Instant,
    ) -> Path {
        let wire_len = frame.len();
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += wire_len as u64;
        self.counters.geneve_frames += 1;
        let inner = frame.get(t.inner..).unwrap_or_default();
        let path = match parsed {
            Err(e) => Path::Malformed(e),
            Ok(ip) => {
                let side = match ip.transport {
                    Transport::Tcp(tcp) if tcp.flags.is_initial_syn() => Port::Lan,
                    _ => Port::Wan,
                };
                let link = Link {
                    framing: Received::Geneve(frame, t),
                    offload,
                };
                self.ip_path(side, &ip, inner, link, now)
            }
        };
        self.count(path, wire_len);
        path
    }

    fn count(&mut self, path: Path, len: usize) {
        let c = &mut self.counters;
        match path {
            Path::InScope | Path::Intercepted => {
                c.inscope_frames += 1;
                c.inscope_bytes += len as u64;
                return;
            }
            // Counted by `forward_released`.
            Path::Released(_) => return,
            Path::Malformed(e) => {
                c.malformed += 1;
                match e {
                    FrameError::Truncated(_) => c.malformed_truncated += 1,
                    FrameError::BadField(_) => c.malformed_bad_field += 1,
                    FrameError::TooDeep(_) => c.malformed_too_deep += 1,
                }
            }
            Path::Fast(kind) => match kind {
                FastKind::Arp => c.fast_arp += 1,
                FastKind::Udp => c.fast_udp += 1,
                FastKind::Icmp => c.fast_icmp += 1,
                FastKind::Tcp => c.fast_tcp += 1,
                FastKind::Vlan => c.fast_vlan += 1,
                FastKind::Other => c.fast_other += 1,
            },
        }
        c.fast_frames += 1;
        c.fast_bytes += len as u64;
    }

    fn ip_path(
        &mut self,
        side: Port,
        ip: &IpView<'_>,
        raw: &[u8],
        link: Link<'_>,
        now: Instant,
    ) -> Path {
        if link.offload.is_gso() {
            self.counters.rx_gso_frames += 1;
        }
        match ip.transport {
            Transport::Tcp(tcp) => {
                // The packet without link padding.
                let raw = raw.get(..ip.len).unwrap_or(raw);
                self.on_tcp(side, ip, &tcp, raw, link, now)
            }
            Transport::Udp { .. } => Path::Fast(FastKind::Udp),
            Transport::Icmp => Path::Fast(FastKind::Icmp),
            Transport::Fragment | Transport::Other(_) => Path::Fast(FastKind::Other),
        }
    }

    /// A TCP segment: part of a tracked flow, the SYN of a new in-scope flow, or fast path.
    fn on_tcp(
        &mut self,
        side: Port,
        ip: &IpView<'_>,
        tcp: &TcpView<'_>,
        raw: &[u8],
        link: Link<'_>,
        now: Instant,
    ) -> Path {
        let Link { framing, offload } = link;
        let key = FlowKey::new(PROTO_TCP, ip.src, tcp.src_port, ip.dst, tcp.dst_port);
        let seg = SegmentHead {
            seq: tcp.seq,
            len: tcp.payload.len(),
            flags: tcp.flags,
        };
        // (No hashing for the fast path while nothing is intercepted.)
        if let Some(h) = (!self.held.is_empty())
            .then(|| self.held.get_mut(&key))
            .flatten()
        {
            // A new attempt of the client (another ISN) on the addresses and
            // ports of a flow whose handshake never completed, or that is
            // over: the old flow gives way, as a host's stack would, and the
            // SYN starts a new flow below.
            if tcp.flags.is_initial_syn() && h.flow.superseded_by_syn(ip.src, tcp.src_port, tcp.seq)
            {
                if let Some(mut old) = self.take_held(&key) {
                    self.counters.intercept_superseded += 1;
                    old.flow.supersede();
                    self.abort_intercepted(old, now);
                }
            } else {
                let client = h.flow.client_addr();
                let from = if ip.src == client.ip() && tcp.src_port == client.port() {
                    Leg::Client
                } else {
                    h.framing.learn_from_server(framing);
                    Leg::Server
                };
                h.last_seen = now;
                if offload.checksum_trusted() {
                    self.counters.rx_csum_trusted += 1;
                } else if !crate::tcp::checksum::tcp_checksum_ok(raw) {
                    // Corrupted on the way: dropped, as a host would; the
                    // peer retransmits. Checked once here, not by the leg.
                    self.counters.rx_bad_checksum += 1;
                    return Path::Intercepted;
                }
                // A packet that acknowledges all a passed flow's leg sent
                // releases the flow and is the first to cross rewritten.
                if self.release && h.flow.is_releasable() {
                    let rel = catch_unwind(AssertUnwindSafe(|| {
                        TcpFacts::parse(raw).and_then(|f| h.flow.release(Some((from, &f)), now))
                    }));
                    let Ok(rel) = rel else {
                        self.fail_held(key, now);
                        return Path::Intercepted;
                    };
                    if let Some(rel) = rel {
                        if let Some(h) = self.take_held(&key) {
                            self.release_flow(key, h, rel, now);
                        }
                        // The checksum was checked (or trusted) above.
                        let trusted = true;
                        return self.forward_released(
                            key,
                            from == Leg::Client,
                            seg,
                            raw,
                            trusted,
                            now,
                        );
                    }
                }
                let fed = catch_unwind(AssertUnwindSafe(|| {
                    h.flow.handle_packet_checked(from, raw, true, now)
                }));
                if fed.is_err() {
                    self.fail_held(key, now);
                    return Path::Intercepted;
                }
                self.last_now = now;
                if !h.pending {
                    h.pending = true;
                    self.pending.push(key);
                }
                return Path::Intercepted;
            }
        }
        let released = self
            .flows
            .get_mut(&key)
            .filter(|f| f.released.is_some())
            .map(|f| f.is_from_client(ip.src, tcp.src_port));
        match released {
            // A client's new connection on the ports of a released flow
            // (ended, or given up on by the client): the old entry goes.
            Some(_)
                if side == Port::Lan
                    && tcp.flags.is_initial_syn()
                    && (offload.checksum_trusted()
                        || crate::tcp::checksum::tcp_checksum_ok(raw)) =>
            {
                if let Some(old) = self.flows.remove(&key) {
                    self.end(old, now);
                }
            }
            Some(from_client) => {
                return self.forward_released(
                    key,
                    from_client,
                    seg,
                    raw,
                    offload.checksum_trusted(),
                    now,
                );
            }
            _ => {}
        }
        if let Some(flow) = self.flows.get_mut(&key) {
            let from_client = flow.is_from_client(ip.src, tcp.src_port);
            let done = flow.on_segment(from_client, seg, now);
            if done {
                if let Some(flow) = self.flows.remove(&key) {
                    self.end(flow, now);
                }
            }
            return Path::InScope;
        }
        self.kernel_segment(key, ip, tcp);
        // Only a client's opening SYN from the LAN side can start a flow.
        if side != Port::Lan || !tcp.flags.is_initial_syn() {
            return Path::Fast(FastKind::Tcp);
        }
        let scopes = self.scopes.load();
        let Some(m) = scopes.lookup(ip.src, tcp.src_port, ip.dst, tcp.dst_port) else {
            self.kernel_syn(key, ip, tcp);
            return Path::Fast(FastKind::Tcp);
        };
        let m = m.clone();
        drop(scopes);
        if let Some(ctx) = &self.intercept {
            if self.flows.len() + self.held.len() >= self.max_flows {
                self.counters.flow_overflow += 1;
                return Path::Fast(FastKind::Tcp);
            }
            let ctx = ctx.load_full();
            let half_open = self.half_open;
            let memory = (self.held.len() + 1).saturating_mul(ctx.flow_memory());
            if memory > self.memory_budget || half_open >= self.max_half_open {
                return self.overload(&ctx, &m, raw, Framing::of(framing), now);
            }
            let framing = Framing::of(framing);
            let born = catch_unwind(AssertUnwindSafe(|| {
                Connection::new(
                    ctx,
                    &m,
                    raw,
                    offload.checksum_trusted(),
                    random_seed(),
                    now,
                    self.clock.system(now),
                )
            }));
            let Ok(flow) = born else {
                // Nothing was created: the SYN crosses untracked, as on a start error.
                self.counters.intercept_panics += 1;
                self.counters.intercept_start_errors += 1;
                return Path::Fast(FastKind::Tcp);
            };
            let flow = flow.map(|f| f.seen_through(framing.tunnel()));
            return match flow {
                Ok(flow) => {
                    let flow_id = flow.meta().flow_id;
                    self.held.insert(
                        key,
                        Held {
                            flow,
                            framing,
                            born: now,
                            last_seen: now,
                            armed: None,
                            pending: false,
                            half_open: true,
                        },
                    );
                    self.half_open += 1;
                    self.counters.intercept_half_open = self.half_open;
                    self.held_expiry.push_back((now + self.idle, key, flow_id));
                    self.compact_held_expiry();
                    self.counters.flows_started += 1;
                    self.counters.intercepted_started += 1;
                    self.counters.flows_active = (self.flows.len() + self.held.len()) as u64;
                    self.service(key, now);
                    Path::Intercepted
                }
                Err(e) => {
                    if self.counters.intercept_start_errors == 0 {
                        log::warn!("worker {}: cannot intercept {key:?}: {e}", self.worker);
                    }
                    self.counters.intercept_start_errors += 1;
                    Path::Fast(FastKind::Tcp)
                }
            };
        }
        self.next_flow += 1;
        let id = (self.worker << 48) | self.next_flow;
        let client = SocketAddr::new(ip.src, tcp.src_port);
        let server = SocketAddr::new(ip.dst, tcp.dst_port);
        let mut flow = Flow::new(id, client, server, m, now);
        flow.on_segment(true, seg, now);
        match self.flows.insert(key, flow) {
            Ok(_) => {
                self.counters.flows_started += 1;
                self.counters.flows_active = self.flows.len() as u64;
                Path::InScope
            }
            Err(_) => {
                self.counters.flow_overflow += 1;
                Path::Fast(FastKind::Tcp)
            }
        }
    }

    /// An in-scope SYN beyond the memory budget or the half-open cap: counted,
    /// logged with reason `overload`, and forwarded untouched (`on_overload =
    /// "pass"`: the connection runs uninspected, its later packets take the
    /// fast path) or refused with a reset to the client ("block").
    fn overload(
        &mut self,
        ctx: &ConnCtx,
        m: &ScopeMatch,
        syn: &[u8],
        framing: Framing,
        now: Instant,
    ) -> Path {
        self.counters.intercept_overload += 1;
        let block = ctx
            .policies
            .get(&m.policy_id)
            .is_some_and(|p| p.on_overload == PassOrBlock::Block);
        let Ok(seg) = crate::tcp::segment::parse_with(syn, false) else {
            return Path::Fast(FastKind::Tcp);
        };
        self.log.record(&FlowRecord {
            timestamp: self.clock.system(now),
            meta: FlowMeta {
                flow_id: ctx
                    .flow_ids
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                src: seg.src,
                dest: seg.dst,
                policy_id: m.policy_id.clone(),
                scope_id: m.scope_id.clone(),
                sni: None,
                alpn: None,
                tunnel: framing.tunnel(),
            },
            proto: "TCP",
            action: if block {
                FlowAction::Blocked
            } else {
                FlowAction::Pass
            },
            reason: Reason::Overload,
            tls: None,
            bytes_toserver: 0,
            bytes_toclient: 0,
            duration_ms: 0,
            inspection: None,
        });
        if !block {
            return Path::Fast(FastKind::Tcp);
        }
        let rst = crate::tcp::segment::refusal_rst(&seg);
        self.outbox
            .push(Port::Lan, &framing, &rst, Offload::default());
        self.counters.intercept_tx_packets += 1;
        Path::Intercepted
    }

    /// Forwards the out-of-scope flows through the kernel fast path `k`
    /// (see [`crate::kernel_fast_path`]).
    pub fn with_kernel_fast_path(mut self, k: KernelFastPath) -> Dispatcher {
        self.kernel = Some(k);
        self
    }

    /// An out-of-scope initial SYN from the LAN side: a candidate for the kernel fast path.
    fn kernel_syn(&mut self, key: FlowKey, ip: &IpView<'_>, tcp: &TcpView<'_>) {
        if let Some(k) = &mut self.kernel {
            let (src, dst) = ((ip.src, tcp.src_port), (ip.dst, tcp.dst_port));
            k.on_syn(key, src, dst, tcp.seq, &mut self.counters);
        }
    }

    /// A TCP segment of no tracked flow: the handshake, teardown and
    /// lifetime of the kernel fast path's flows (the program hands their
    /// SYN, FIN and RST segments to user space).
    fn kernel_segment(&mut self, key: FlowKey, ip: &IpView<'_>, tcp: &TcpView<'_>) {
        if let Some(k) = self.kernel.as_mut().filter(|k| k.is_tracking()) {
            let (src, dst) = ((ip.src, tcp.src_port), (ip.dst, tcp.dst_port));
            k.on_segment(key, src, dst, tcp.flags, tcp.ack, &mut self.counters);
        }
    }

    /// The kernel fast path's periodic scan (idle flows, forwarded counts).
    pub fn housekeep_kernel_fast_path(&mut self) {
        if let Some(k) = &mut self.kernel {
            k.housekeep(&mut self.counters);
        }
    }

    /// Takes this worker's flows off the kernel fast path (shutdown).
    pub fn finish_kernel_fast_path(&mut self) {
        if let Some(k) = &mut self.kernel {
            k.finish(&mut self.counters);
        }
    }

    /// Ends flows idle for the timeout (intercepted ones reset at both ends).
    pub fn expire(&mut self, now: Instant) {
        let mut ended = Vec::new();
        self.flows.expire(now, |f| ended.push(f));
        for f in ended {
            self.reset_released(&f);
            self.end(f, now);
        }
        let idle = self.idle;
        let mut stale = Vec::new();
        while let Some(&(deadline, key, id)) = self.held_expiry.front() {
            if deadline > now {
                break;
            }
            self.held_expiry.pop_front();
            let Some(h) = self.held.get(&key) else {
                continue;
            };
            if h.flow.meta().flow_id != id {
                continue; // the key now belongs to a newer flow with its own entry
            }
            let due = h.last_seen + idle;
            if due <= now {
                stale.push(key);
            } else {
                // Seen since it was queued: requeue at its real deadline.
                self.held_expiry.push_back((due, key, id));
            }
        }
        self.counters.intercept_half_open = self.half_open;
        // Flows are stored inline (about 2.7 KiB each): after a burst, give
        // the table's empty slots back instead of keeping its peak.
        let cap = self.held.capacity();
        if cap > 1024 && self.held.len() < cap / 4 {
            self.held.shrink_to(self.held.len() * 2);
        }
        for k in stale {
            if let Some(h) = self.take_held(&k) {
                self.abort_intercepted(h, now);
            }
        }
    }

    /// Keeps the intercepted flows' expiry queue bounded when many end
    /// before their deadline: drops the entries of flows that are gone.
    fn compact_held_expiry(&mut self) {
        if self.held_expiry.len() > 2 * self.held.len().max(1024) {
            let held = &self.held;
            self.held_expiry
                .retain(|(_, key, id)| held.get(key).is_some_and(|h| h.flow.meta().flow_id == *id));
        }
    }

    /// Whether enough intercepted flows ended since the last heap trim that
    /// the worker should give free heap back to the OS
    /// ([`crate::io::trim_heap`]): 1,024 or more, or 64 or more once a burst
    /// is over (64 flows or fewer still held), so the memory of the burst's
    /// last flows goes back too.
    pub fn take_trim_hint(&mut self) -> bool {
        let ended = self.legs_freed;
        let since = ended.saturating_sub(self.trimmed_at);
        if since >= 1024 || (since >= 64 && self.held.len() <= 64) {
            self.trimmed_at = ended;
            return true;
        }
        false
    }

    /// Ends every flow (shutdown), logging each; intercepted ones are reset at
    /// both ends (the RSTs wait in the outbox).
    pub fn finish(&mut self, now: Instant) {
        let mut ended = Vec::new();
        self.flows.drain(|f| ended.push(f));
        for f in ended {
            self.reset_released(&f);
            self.end(f, now);
        }
        // The state of these connections dies with the worker: reset both
        // ends rather than leave them waiting.
        let held: Vec<Held> = self.held.drain().map(|(_, h)| h).collect();
        self.held_expiry.clear();
        self.half_open = 0;
        self.counters.intercept_half_open = 0;
        for h in held {
            self.abort_intercepted(h, now);
        }
        self.timers.clear();
    }

    /// Number of tracked and intercepted flows.
    pub fn active_flows(&self) -> usize {
        self.flows.len() + self.held.len()
    }

    fn end(&mut self, mut flow: Flow, now: Instant) {
        if let Some(rel) = flow.released.as_mut() {
            if let Some(t) = rel.timings.take() {
                if let Ok(mut l) = self.latency.lock() {
                    l.record(&t);
                }
            }
            if let Some(rec) = rel.record.take() {
                let (s, c, d) = (
                    flow.bytes_toserver(),
                    flow.bytes_toclient(),
                    flow.duration(),
                );
                self.write_released(rec, s, c, d, now);
            }
            self.counters.flows_active = (self.flows.len() + self.held.len()) as u64;
            return;
        }
        self.counters.flows_ended += 1;
        self.counters.flows_active = (self.flows.len() + self.held.len()) as u64;
        let rec = FlowRecord {
            timestamp: self.clock.system(now),
            meta: FlowMeta {
                flow_id: flow.id,
                src: flow.client,
                dest: flow.server,
                policy_id: flow.scope.policy_id.clone(),
                scope_id: flow.scope.scope_id.clone(),
                sni: None,
                alpn: None,
                tunnel: None,
            },
            proto: "TCP",
            action: FlowAction::Pass,
            reason: Reason::NotInterceptingYet,
            tls: None,
            bytes_toserver: flow.bytes_toserver(),
            bytes_toclient: flow.bytes_toclient(),
            duration_ms: flow.duration().as_millis() as u64,
            inspection: None,
        };
        self.log.record(&rec);
    }
}

/// How long an ended released flow keeps its entry so that its last
/// packets (the final ACK, a retransmitted FIN or RST) are still rewritten:
/// longer than a few retransmissions of a FIN, far shorter than 2*MSL.
const RELEASED_LINGER: Duration = Duration::from_secs(10);

/// A random seed for a flow's TCP initial sequence numbers.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // The system RNG failing is not a reason to refuse traffic; the
        // clock's nanoseconds still make sequence numbers hard to guess.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ 0x9e37_79b9_7f4a_7c15;
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
pub(crate) mod tests {

    use super::*;
    use crate::classify::ScopeSpec;
    use crate::frame::{parse_ethernet, parse_ip, TcpFlags};
    use crate::testkit::packets as ft;
    use crate::testkit::{self, MemLog};

    fn scopes(dport: u16) -> Arc<ScopeTable> {
        Arc::new(ScopeTable::compile(&[ScopeSpec {
            policy_id: "corp".into(),
            scope_id: "web".into(),
            source_ips: vec!["192.0.2.10".parse().unwrap()],
            source_ports: vec![],
            destinations: vec!["203.0.113.0/24".parse().unwrap()],
            destination_ports: vec![(dport, dport)],
        }]))
    }

    struct Rig {
        d: Dispatcher,
        log: Arc<MemLog>,
        table: Arc<ArcSwap<ScopeTable>>,
        t0: Instant,
        seq: std::collections::HashMap<(u16, bool), u32>,
    }

    fn rig(max_flows: usize) -> Rig {
        let log = Arc::new(MemLog::default());
        let table = Arc::new(ArcSwap::new(scopes(443)));
        let t0 = Instant::now();
        let d = Dispatcher::new(
            3,
            max_flows,
            Duration::from_secs(30),
            table.clone(),
            log.clone(),
            Clock::new(t0, SystemTime::UNIX_EPOCH),
        );
        Rig {
            d,
            log,
            table,
            t0,
            seq: Default::default(),
        }
    }

    const C: [u8; 4] = [192, 0, 2, 10];
    const S: [u8; 4] = [203, 0, 113, 5];

    fn tcp(
        r: &mut Rig,
        side: Port,
        from_client: bool,
        cport: u16,
        flags: u8,
        payload: &[u8],
        at_ms: u64,
    ) -> Path {
        // Sequence numbers as a real stream would carry them.
        let next =
            r.seq
                .entry((cport, from_client))
                .or_insert(if from_client { 1000 } else { 5000 });
        let seq = *next;
        *next = next.wrapping_add(
            payload.len() as u32 + u32::from(flags & (TcpFlags::SYN | TcpFlags::FIN) != 0),
        );
        let pkt = if from_client {
            ft::ipv4_tcp_seq(C, cport, S, 443, flags, seq, payload)
        } else {
            ft::ipv4_tcp_seq(S, 443, C, cport, flags, seq, payload)
        };
        let frame = ft::ether(0x0800, &[], &pkt);
        let now = r.t0 + Duration::from_millis(at_ms);
        r.d.on_ethernet(side, &frame, parse_ethernet(&frame), RxMeta::default(), now)
    }

    const SYN: u8 = TcpFlags::SYN;
    const SYNACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
    const ACK: u8 = TcpFlags::ACK;
    const FINACK: u8 = TcpFlags::FIN | TcpFlags::ACK;

    #[test]
    fn in_scope_flow_is_tracked_and_logged_once_at_fin() {
        let mut r = rig(100);
        assert_eq!(
            tcp(&mut r, Port::Lan, true, 40000, SYN, b"", 0),
            Path::InScope
        );
        assert_eq!(
            tcp(&mut r, Port::Wan, false, 40000, SYNACK, b"", 1),
            Path::InScope
        );
        assert_eq!(
            tcp(
                &mut r,
                Port::Lan,
                true,
                40000,
                ACK,
                b"GET / HTTP/1.1\r\n\r\n",
                2
            ),
            Path::InScope
        );
        assert_eq!(
            tcp(&mut r, Port::Wan, false, 40000, ACK, &[7u8; 1000], 3),
            Path::InScope
        );
        assert_eq!(
            tcp(&mut r, Port::Wan, false, 40000, FINACK, b"", 4),
            Path::InScope
        );
        assert!(
            r.log.records.lock().unwrap().is_empty(),
            "no record before the flow ends"
        );
        assert_eq!(
            tcp(&mut r, Port::Lan, true, 40000, FINACK, b"", 1204),
            Path::InScope
        );
        // The last ACK is no longer tracked.
        assert_eq!(
            tcp(&mut r, Port::Wan, false, 40000, ACK, b"", 1205),
            Path::Fast(FastKind::Tcp)
        );
        let recs = r.log.records.lock().unwrap();
        assert_eq!(recs.len(), 1);
        let rec = &recs[0];
        assert_eq!((&*rec.meta.policy_id, &*rec.meta.scope_id), ("corp", "web"));
        assert_eq!(rec.action, FlowAction::Pass);
        assert_eq!(rec.reason.as_str(), "not_intercepting_yet");
        assert_eq!(rec.meta.src, "192.0.2.10:40000".parse().unwrap());
        assert_eq!(rec.meta.dest, "203.0.113.5:443".parse().unwrap());
        assert_eq!((rec.bytes_toserver, rec.bytes_toclient), (18, 1000));
        assert_eq!(rec.duration_ms, 1204);
        assert_eq!(rec.meta.flow_id >> 48, 3, "flow id carries the worker");
        assert_eq!(
            rec.timestamp,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1204)
        );
        let c = r.d.counters;
        assert_eq!((c.flows_started, c.flows_ended, c.flows_active), (1, 1, 0));
        assert_eq!((c.inscope_frames, c.fast_tcp), (6, 1));
    }

    #[test]
    fn out_of_scope_and_wan_syns_take_the_fast_path() {
        let mut r = rig(100);
        let pkt = ft::ipv4_tcp(C, 40000, S, 80, SYN, b"");
        let f = ft::ether(0x0800, &[], &pkt);
        assert_eq!(
            r.d.on_ethernet(Port::Lan, &f, parse_ethernet(&f), RxMeta::default(), r.t0),
            Path::Fast(FastKind::Tcp)
        );
        // A SYN entering from the WAN side is never a client of ours.
        assert_eq!(
            tcp(&mut r, Port::Wan, true, 40001, SYN, b"", 0),
            Path::Fast(FastKind::Tcp)
        );
        // Mid-stream traffic of a flow we never saw open.
        assert_eq!(
            tcp(&mut r, Port::Lan, true, 40002, ACK, b"x", 0),
            Path::Fast(FastKind::Tcp)
        );
        assert_eq!(r.d.counters.flows_started, 0);
    }

    #[test]
    fn rst_ends_the_flow() {
        let mut r = rig(100);
        tcp(&mut r, Port::Lan, true, 1, SYN, b"", 0);
        tcp(&mut r, Port::Wan, false, 1, TcpFlags::RST | ACK, b"", 5);
        assert_eq!(r.log.records.lock().unwrap().len(), 1);
    }

    #[test]
    fn idle_timeout_and_shutdown_write_records() {
        let mut r = rig(100);
        tcp(&mut r, Port::Lan, true, 1, SYN, b"", 0);
        tcp(&mut r, Port::Lan, true, 2, SYN, b"", 20_000);
        r.d.expire(r.t0 + Duration::from_secs(31));
        assert_eq!(
            r.log.records.lock().unwrap().len(),
            1,
            "only the first flow was idle 30 s"
        );
        r.d.finish(r.t0 + Duration::from_secs(32));
        let recs = r.log.records.lock().unwrap();
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(|r| r.reason == Reason::NotInterceptingYet));
        assert_eq!(r.d.active_flows(), 0);
    }

    #[test]
    fn overflow_is_counted_and_forwarded() {
        let mut r = rig(2);
        for port in 1..=5 {
            let p = tcp(&mut r, Port::Lan, true, port, SYN, b"", 0);
            assert_eq!(
                p,
                if port <= 2 {
                    Path::InScope
                } else {
                    Path::Fast(FastKind::Tcp)
                }
            );
        }
        assert_eq!(r.d.counters.flow_overflow, 3);
        assert_eq!(r.d.counters.flows_active, 2);
    }

    #[test]
    fn reload_affects_only_new_flows() {
        let mut r = rig(100);
        tcp(&mut r, Port::Lan, true, 1, SYN, b"", 0);
        // Reload: port 443 no longer in scope.
        r.table.store(scopes(8443));
        assert_eq!(
            tcp(&mut r, Port::Lan, true, 1, ACK, b"data", 1),
            Path::InScope,
            "existing flow keeps its match"
        );
        assert_eq!(
            tcp(&mut r, Port::Lan, true, 2, SYN, b"", 2),
            Path::Fast(FastKind::Tcp),
            "new flow sees the reload"
        );
        r.d.finish(r.t0);
        let recs = r.log.records.lock().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(&*recs[0].meta.scope_id, "web");
    }

    fn drain(d: &mut Dispatcher) -> Vec<(Port, Vec<u8>)> {
        let mut v = Vec::new();
        d.drain_tx(|side, f, _| v.push((side, f.to_vec())));
        v
    }

    /// Flags byte and sequence number of the TCP segment in an untagged IPv4 frame.
    fn tcp_of(frame: &[u8]) -> (u8, u32) {
        let t = &frame[14 + 20..];
        (t[13], u32::from_be_bytes([t[4], t[5], t[6], t[7]]))
    }

    #[test]
    fn intercepted_flow_consumes_frames_and_reapplies_l2_per_side() {
        use smoltcp::wire::TcpControl;

        let (mut d, log, t0) = intercept_lab(1, Duration::from_secs(30), testkit::inspect_all());

        // The client's SYN: consumed, and our own SYN leaves toward the WAN
        // with the SYN frame's Ethernet header.
        let syn = ft::emitted((C, 40000), (S, 443), TcpControl::Syn, 7000, None);
        let frame = ft::ether(0x0800, &[], &syn);
        let p = feed(&mut d, Port::Lan, &frame, t0);
        assert_eq!(p, Path::Intercepted);
        let out = drain(&mut d);
        assert_eq!(out.len(), 1, "{out:?}");
        let (side, ours) = &out[0];
        assert_eq!(*side, Port::Wan);
        assert_eq!(&ours[..14], &frame[..14], "WAN header as the client's SYN");
        assert_eq!(&ours[14 + 12..14 + 20], &syn[12..20], "client's addresses");
        let (flags, our_isn) = tcp_of(ours);
        assert_eq!(flags & 0x12, 0x02, "a SYN");
        assert!(
            d.next_timer().is_some(),
            "the server leg's retransmit timer"
        );
        assert_eq!(d.active_flows(), 1);

        // The client retransmits its SYN: still consumed, never forwarded.
        let p = feed(&mut d, Port::Lan, &frame, t0);
        assert_eq!(p, Path::Intercepted);
        assert!(drain(&mut d).iter().all(|(s, _)| *s == Port::Wan));

        // The server answers: the client gets its SYN-ACK toward the LAN,
        // with the MACs swapped.
        let synack = ft::emitted(
            (S, 443),
            (C, 40000),
            TcpControl::Syn,
            90_000,
            Some(our_isn.wrapping_add(1)),
        );
        let mut back = ft::ether(0x0800, &[], &synack);
        back[..6].copy_from_slice(&frame[6..12]);
        back[6..12].copy_from_slice(&frame[..6]);
        let ms = Duration::from_millis(1);
        let p = feed(&mut d, Port::Wan, &back, t0 + ms);
        assert_eq!(p, Path::Intercepted);
        let out = drain(&mut d);
        let to_client: Vec<_> = out.iter().filter(|(s, _)| *s == Port::Lan).collect();
        assert_eq!(to_client.len(), 1, "{out:?}");
        let f = &to_client[0].1;
        assert_eq!(&f[..6], &frame[6..12], "to the client's MAC");
        assert_eq!(&f[6..12], &frame[..6], "from the gateway's MAC");
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(tcp_of(f).0 & 0x12, 0x12, "a SYN-ACK");
        assert_eq!(&f[14 + 12..14 + 16], &S, "from the server's address");
        // Waiting for the client's ACK: the next timer is in the future (no busy loop).
        assert!(d.next_timer().is_some_and(|t| t > t0 + ms));
        let c = d.counters;
        assert_eq!((c.intercepted_started, c.fast_tcp), (1, 0));
        assert!(log.records.lock().unwrap().is_empty());

        // Shutdown writes the flow's record with its policy and scope.
        d.finish(t0 + 2 * ms);
        let recs = log.records.lock().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(
            (&*recs[0].meta.policy_id, &*recs[0].meta.scope_id),
            ("pol-1", "sc-1")
        );
        assert_eq!(recs[0].meta.src, "192.0.2.10:40000".parse().unwrap());
        assert_eq!(d.active_flows(), 0);
        assert_eq!(d.next_timer(), None);
    }

    #[test]
    fn geneve_frames_are_handled_inside_and_answered_with_their_direction_s_header() {
        use crate::geneve::{self, tests::frame_with};
        use smoltcp::wire::TcpControl;

        let (mut d, log, t0) = intercept_lab(1, Duration::from_secs(30), testkit::pass_all());
        let lb = std::net::Ipv4Addr::new(198, 51, 100, 129);
        let received = |inner: &[u8], cookie: [u8; 4]| {
            let f = frame_with(inner, 77, cookie);
            let t = geneve::parse(&f).unwrap();
            (f, t)
        };
        let feed = |d: &mut Dispatcher, f: &[u8], t: geneve::Tunnel, now: Instant| {
            let parsed = crate::frame::parse_ip(&f[t.inner..]);
            d.on_geneve(f, t, parsed, Offload::default(), now)
        };
        // What the load balancer gets back, parsed as it would: from the appliance.
        let at_lb = |f: &[u8]| {
            let t = geneve::parse(f).unwrap();
            assert_eq!(
                (t.vni, t.peer),
                (77, std::net::Ipv4Addr::new(198, 51, 100, 131))
            );
            (f.to_vec(), t)
        };

        // The client's SYN, through the tunnel: consumed; our SYN toward the
        // server goes back to the load balancer in the SYN's encapsulation.
        let syn = ft::emitted((C, 40000), (S, 443), TcpControl::Syn, 7000, None);
        let (f, t) = received(&syn, [1, 1, 1, 1]);
        assert_eq!(feed(&mut d, &f, t, t0), Path::Intercepted);
        let out = drain(&mut d);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, Port::Wan);
        assert_eq!(&out[0].1[30..34], &lb.octets(), "to the load balancer");
        let (back, bt) = at_lb(&out[0].1);
        assert_eq!(
            &back[bt.udp + 8..bt.inner],
            &f[t.udp + 8..t.inner],
            "VNI and options"
        );
        let inner = &back[bt.inner..];
        assert_eq!(&inner[12..20], &syn[12..20], "the client's addresses");
        assert!(crate::tcp::checksum::tcp_checksum_ok(inner));
        let our_isn = u32::from_be_bytes(inner[24..28].try_into().unwrap());

        // The server answers with its own flow cookie: the client's SYN-ACK
        // leaves in the encapsulation of the server's direction.
        let synack = ft::emitted(
            (S, 443),
            (C, 40000),
            TcpControl::Syn,
            90_000,
            Some(our_isn.wrapping_add(1)),
        );
        let (f2, t2) = received(&synack, [2, 2, 2, 2]);
        let ms = Duration::from_millis(1);
        assert_eq!(feed(&mut d, &f2, t2, t0 + ms), Path::Intercepted);
        let out = drain(&mut d);
        let to_client: Vec<_> = out.iter().filter(|(s, _)| *s == Port::Lan).collect();
        assert_eq!(to_client.len(), 1, "{out:?}");
        let (back, bt) = at_lb(&to_client[0].1);
        assert_eq!(&back[bt.udp + 8..bt.inner], &f2[t2.udp + 8..t2.inner]);
        assert_eq!(
            &back[bt.inner + 12..bt.inner + 16],
            &S,
            "from the server's address"
        );

        // Traffic of no flow crosses as it came, back to the load balancer.
        let mut udp = syn.clone();
        udp[9] = 17;
        let udp_len = (udp.len() - 20) as u16;
        udp[24..26].copy_from_slice(&udp_len.to_be_bytes());
        let (f3, t3) = received(&udp, [3; 4]);
        assert_eq!(feed(&mut d, &f3, t3, t0), Path::Fast(FastKind::Udp));
        let (f4, t4) = received(&syn[..10], [3; 4]);
        assert!(matches!(feed(&mut d, &f4, t4, t0), Path::Malformed(_)));
        assert_eq!(d.counters.geneve_frames, 4);

        // The record says which tunnel the flow came through.
        d.finish(t0 + 2 * ms);
        let recs = log.records.lock().unwrap();
        assert_eq!(recs.len(), 1);
        let tunnel = recs[0].meta.tunnel.expect("tunnel");
        assert_eq!((tunnel.vni, tunnel.peer), (77, std::net::IpAddr::V4(lb)));
    }

    /// Worker `worker`'s dispatcher intercepting 192.0.2.10 →
    /// 203.0.113.0/24:443 (`pol-1`/`sc-1`) under `policy`, logging to memory.
    fn intercept_lab(
        worker: usize,
        idle: Duration,
        policy: crate::tls::decision::TlsPolicy,
    ) -> (Dispatcher, Arc<MemLog>, Instant) {
        let kit = crate::testkit::Lab::new();
        let ctx = kit.ctx(policy, kit.pass_inspector());
        dispatcher_for(worker, idle, ctx, SystemTime::UNIX_EPOCH)
    }

    /// Worker `worker`'s dispatcher intercepting 192.0.2.10 →
    /// 203.0.113.0/24:443 (`pol-1`/`sc-1`) with `ctx`, logging to memory,
    /// its wall clock starting at `wall`.
    fn dispatcher_for(
        worker: usize,
        idle: Duration,
        ctx: Arc<ConnCtx>,
        wall: SystemTime,
    ) -> (Dispatcher, Arc<MemLog>, Instant) {
        let ctx = Arc::new(ArcSwap::new(ctx));
        let log = Arc::new(MemLog::default());
        let table = Arc::new(ArcSwap::new(Arc::new(ScopeTable::compile(&[ScopeSpec {
            policy_id: "pol-1".into(),
            scope_id: "sc-1".into(),
            source_ips: vec!["192.0.2.10".parse().unwrap()],
            source_ports: vec![],
            destinations: vec!["203.0.113.0/24".parse().unwrap()],
            destination_ports: vec![(443, 443)],
        }]))));
        let t0 = Instant::now();
        let d = Dispatcher::new(worker, 100, idle, table, log.clone(), Clock::new(t0, wall))
            .with_intercept(ctx);
        (d, log, t0)
    }

    /// Feeds one Ethernet frame from `side`.
    fn feed(d: &mut Dispatcher, side: Port, frame: &[u8], now: Instant) -> Path {
        d.on_ethernet(side, frame, parse_ethernet(frame), RxMeta::default(), now)
    }

    /// Feeds the client's SYN (ISN `isn`) and the server's SYN-ACK; returns
    /// the client leg's SYN-ACK sequence number.
    fn to_accepting(d: &mut Dispatcher, port: u16, isn: u32, now: Instant) -> u32 {
        use smoltcp::wire::TcpControl;
        let syn = ft::emitted((C, port), (S, 443), TcpControl::Syn, isn, None);
        let frame = ft::ether(0x0800, &[], &syn);
        assert_eq!(feed(d, Port::Lan, &frame, now), Path::Intercepted);
        let out = drain(d);
        let (_, ours) = out.iter().find(|(s, _)| *s == Port::Wan).expect("our SYN");
        let our_isn = tcp_of(ours).1;
        let synack = ft::emitted(
            (S, 443),
            (C, port),
            TcpControl::Syn,
            90_000,
            Some(our_isn.wrapping_add(1)),
        );
        let back = ft::ether(0x0800, &[], &synack);
        feed(d, Port::Wan, &back, now);
        let out = drain(d);
        let (_, f) = out
            .iter()
            .find(|(s, f)| *s == Port::Lan && tcp_of(f).0 & 0x12 == 0x12)
            .expect("the client's SYN-ACK");
        tcp_of(f).1
    }

    /// A crafted TCP/IPv4 segment with flags `flags` and a payload, in an
    /// Ethernet frame.
    fn segment_frame(
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = ft::emitted(src, dst, smoltcp::wire::TcpControl::None, seq, Some(ack));
        p.extend_from_slice(payload);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[20 + 13] = flags;
        crate::tcp::fill_checksums(&mut p);
        ft::ether(0x0800, &[], &p)
    }

    /// Feeds a frame that must take the released path; returns it as the
    /// worker forwards it (rewritten in place).
    fn released(d: &mut Dispatcher, side: Port, frame: &[u8], now: Instant) -> Vec<u8> {
        let Path::Released(rw) = feed(d, side, frame, now) else {
            panic!("not released");
        };
        let mut out = frame.to_vec();
        assert!(rw.apply(&mut out[14..], false));
        out
    }

    #[test]
    fn a_passed_flow_is_released_and_its_packets_cross_rewritten() {
        use smoltcp::wire::TcpControl;
        let (mut d, log, t0) = intercept_lab(0, Duration::from_secs(300), testkit::pass_all());
        let port = 40300;
        let syn = ft::emitted((C, port), (S, 443), TcpControl::Syn, 5000, None);
        feed(&mut d, Port::Lan, &ft::ether(0x0800, &[], &syn), t0);
        let ours = drain(&mut d);
        let our_isn = tcp_of(&ours.iter().find(|(s, _)| *s == Port::Wan).unwrap().1).1;
        let synack = ft::emitted(
            (S, 443),
            (C, port),
            TcpControl::Syn,
            90_000,
            Some(our_isn + 1),
        );
        feed(&mut d, Port::Wan, &ft::ether(0x0800, &[], &synack), t0);
        let out = drain(&mut d);
        let (_, f) = out
            .iter()
            .find(|(s, f)| *s == Port::Lan && tcp_of(f).0 & 0x12 == 0x12)
            .expect("the client's SYN-ACK");
        let client_isn = tcp_of(f).1;
        // The client's first bytes are not TLS: passed (non_tls).
        let req = b"GET / HTTP/1.0\r\n\r\n";
        let (psh_ack, fin_ack) = (0x18, 0x11);
        let c1 = segment_frame((C, port), (S, 443), psh_ack, 5001, client_isn + 1, req);
        assert_eq!(feed(&mut d, Port::Lan, &c1, t0), Path::Intercepted);
        let out = drain(&mut d);
        let (_, sent) = out
            .iter()
            .find(|(s, f)| *s == Port::Wan && f.len() > 54)
            .expect("the request on the server leg");
        assert_eq!(tcp_of(sent).1, our_isn + 1);
        assert!(sent.ends_with(req));
        assert_eq!(
            d.counters.intercept_released, 0,
            "the request is not acknowledged yet"
        );
        // The server's answer acknowledges the request: the flow is released
        // on it, and it crosses with the client leg's numbers.
        let resp = b"HTTP/1.0 200 OK\r\n\r\nhi";
        let ack_req = our_isn + 1 + req.len() as u32;
        let s1 = segment_frame((S, 443), (C, port), psh_ack, 90_001, ack_req, resp);
        let fwd = released(&mut d, Port::Wan, &s1, t0);
        assert_eq!(d.counters.intercept_released, 1);
        assert_eq!(&fwd[..12], &s1[..12], "the frame keeps its link header");
        let seg = crate::tcp::segment::parse(&fwd[14..]).expect("a valid checksum");
        assert_eq!(seg.seq, client_isn + 1);
        assert_eq!(seg.ack, Some(5001 + req.len() as u32));
        assert!(fwd.ends_with(resp));
        // The client's ACK and FIN cross with the server leg's numbers.
        let c2 = segment_frame(
            (C, port),
            (S, 443),
            fin_ack,
            5001 + req.len() as u32,
            client_isn + 1 + resp.len() as u32,
            b"",
        );
        let fwd = released(&mut d, Port::Lan, &c2, t0);
        let seg = crate::tcp::segment::parse(&fwd[14..]).unwrap();
        assert_eq!(seg.seq, ack_req);
        assert_eq!(seg.ack, Some(90_001 + resp.len() as u32));
        assert!(log.records.lock().unwrap().is_empty());
        // The server's FIN ends it: logged with every byte, then the entry
        // lingers for the last ACK.
        let s2 = segment_frame(
            (S, 443),
            (C, port),
            fin_ack,
            90_001 + resp.len() as u32,
            ack_req + 1,
            b"",
        );
        released(&mut d, Port::Wan, &s2, t0);
        {
            let recs = log.records.lock().unwrap();
            assert_eq!(recs.len(), 1);
            assert_eq!(
                (recs[0].action, recs[0].reason.as_str()),
                (FlowAction::Pass, "non_tls")
            );
            assert_eq!(recs[0].bytes_toserver, req.len() as u64);
            assert_eq!(recs[0].bytes_toclient, resp.len() as u64);
            assert_eq!(&*recs[0].meta.policy_id, "pol-1");
        }
        let last = segment_frame(
            (C, port),
            (S, 443),
            0x10,
            5002 + req.len() as u32,
            client_isn + 2 + resp.len() as u32,
            b"",
        );
        released(&mut d, Port::Lan, &last, t0);
        // A new connection on the same ports is a new intercepted flow.
        let syn2 = ft::emitted((C, port), (S, 443), TcpControl::Syn, 777_000, None);
        assert_eq!(
            feed(&mut d, Port::Lan, &ft::ether(0x0800, &[], &syn2), t0),
            Path::Intercepted
        );
        assert_eq!(
            log.records.lock().unwrap().len(),
            1,
            "the ended flow is not logged twice"
        );
        d.expire(t0 + Duration::from_secs(11));
        assert_eq!(d.active_flows(), 1);
    }

    #[test]
    fn a_client_reset_ends_a_half_open_flow_at_once() {
        use smoltcp::wire::TcpControl;
        let (mut d, log, t0) = intercept_lab(0, Duration::from_secs(300), testkit::pass_all());
        // (A host without the connection answers the SYN-ACK with seq = its ACK.)
        to_accepting(&mut d, 40100, 5000, t0);
        d.expire(t0);
        assert_eq!(d.counters.intercept_half_open, 1);
        // The client never opened this connection (a spoofed SYN): its
        // stack answers our SYN-ACK with an RST.
        let rst = ft::emitted((C, 40100), (S, 443), TcpControl::Rst, 5001, None);
        let frame = ft::ether(0x0800, &[], &rst);
        feed(&mut d, Port::Lan, &frame, t0);
        let out = drain(&mut d);
        assert!(
            out.iter()
                .any(|(s, f)| *s == Port::Wan && tcp_of(f).0 & 0x04 != 0),
            "the server leg is reset: {out:?}"
        );
        assert_eq!(
            d.active_flows(),
            0,
            "gone at once, not after the accept timeout"
        );
        d.expire(t0);
        assert_eq!(d.counters.intercept_half_open, 0);
        let recs = log.records.lock().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].reason.as_str(), "reset");
    }

    #[test]
    fn a_new_syn_replaces_a_half_open_flow_on_its_ports() {
        use smoltcp::wire::TcpControl;
        let (mut d, log, t0) = intercept_lab(0, Duration::from_secs(300), testkit::pass_all());
        to_accepting(&mut d, 40200, 5000, t0);
        let ms = Duration::from_millis(1);
        // A retransmission of the same SYN stays with the flow.
        let syn = ft::emitted((C, 40200), (S, 443), TcpControl::Syn, 5000, None);
        let frame = ft::ether(0x0800, &[], &syn);
        feed(&mut d, Port::Lan, &frame, t0 + ms);
        drain(&mut d);
        assert_eq!(d.counters.intercept_superseded, 0);
        assert!(log.records.lock().unwrap().is_empty());
        // A new attempt (another ISN) on the same ports starts a new flow:
        // the old one is logged and a new SYN leaves toward the server.
        let syn = ft::emitted((C, 40200), (S, 443), TcpControl::Syn, 777_000, None);
        let frame = ft::ether(0x0800, &[], &syn);
        let p = feed(&mut d, Port::Lan, &frame, t0 + 2 * ms);
        assert_eq!(p, Path::Intercepted);
        let out = drain(&mut d);
        assert!(
            out.iter()
                .any(|(s, f)| *s == Port::Wan && tcp_of(f).0 & 0x12 == 0x02),
            "a fresh SYN to the server: {out:?}"
        );
        assert_eq!(d.counters.intercept_superseded, 1);
        assert_eq!(d.counters.intercepted_started, 2);
        assert_eq!(d.active_flows(), 1);
        let recs = log.records.lock().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].reason.as_str(), "client_timeout");
    }

    #[test]
    fn malformed_frames_are_counted_by_kind() {
        let (mut d, _log, t0) = intercept_lab(0, Duration::from_secs(300), testkit::pass_all());
        // An IPv4 header cut short; an impossible IP version.
        let mut short = ft::ether(0x0800, &[], &[0x45, 0, 0, 40]);
        short.truncate(18);
        let mut v7 = [0u8; 40];
        v7[..4].copy_from_slice(&[0x75, 0, 0, 40]);
        let bad = ft::ether(0x0800, &[], &v7);
        for f in [&short, &bad] {
            d.on_ethernet(Port::Lan, f, parse_ethernet(f), RxMeta::default(), t0);
        }
        let c = d.counters;
        assert_eq!(c.malformed, 2);
        assert_eq!(
            c.malformed_truncated + c.malformed_bad_field + c.malformed_too_deep,
            2
        );
        assert_eq!(c.malformed_bad_field, 1, "{c:?}");
    }

    #[test]
    fn interrupt_resets_only_flows_of_the_policy_born_before() {
        use smoltcp::wire::TcpControl;

        let (mut d, log, t0) = intercept_lab(0, Duration::from_secs(300), testkit::pass_all());
        let ms = Duration::from_millis(1);
        let syn = ft::emitted((C, 40002), (S, 443), TcpControl::Syn, 1, None);
        let frame = ft::ether(0x0800, &[], &syn);
        feed(&mut d, Port::Lan, &frame, t0);
        drain(&mut d);
        // Another policy, or a request older than the flow: untouched.
        d.interrupt(&["pol-2".into()], t0 + ms, t0 + ms);
        d.interrupt(&["pol-1".into()], t0, t0 + ms);
        assert_eq!(d.active_flows(), 1);
        assert!(drain(&mut d).is_empty());
        // The policy's flow: the server never answered, so the client's
        // held SYN is refused with an RST; logged.
        d.interrupt(&["pol-1".into()], t0 + ms, t0 + 2 * ms);
        assert_eq!(d.active_flows(), 0);
        let out = drain(&mut d);
        assert!(
            out.iter()
                .any(|(side, f)| *side == Port::Lan && tcp_of(f).0 & 0x04 != 0),
            "an RST to the client: {out:?}"
        );
        assert_eq!(log.records.lock().unwrap().len(), 1);
        assert_eq!(d.counters.intercept_interrupted, 1);
    }

    #[test]
    fn beyond_the_memory_budget_or_the_half_open_cap_new_flows_follow_on_overload() {
        use crate::tls::decision::TlsPolicy;
        use smoltcp::wire::TcpControl;
        let syn_frame = |port: u16| {
            let syn = ft::emitted((C, port), (S, 443), TcpControl::Syn, 7, None);
            ft::ether(0x0800, &[], &syn)
        };
        // Half-open cap of 2: the third SYN is passed, untouched.
        let (d, log, t0) = intercept_lab(0, Duration::from_secs(300), testkit::pass_all());
        let mut d = d.with_limits(usize::MAX, 2);
        for port in [41000, 41001] {
            assert_eq!(
                feed(&mut d, Port::Lan, &syn_frame(port), t0),
                Path::Intercepted
            );
        }
        assert_eq!(
            feed(&mut d, Port::Lan, &syn_frame(41002), t0),
            Path::Fast(FastKind::Tcp)
        );
        assert_eq!(d.counters.intercept_overload, 1);
        {
            let recs = log.records.lock().unwrap();
            let rec = recs.last().expect("the overloaded SYN is logged");
            assert_eq!(
                (rec.action, rec.reason.as_str()),
                (FlowAction::Pass, "overload")
            );
            assert_eq!(
                (&*rec.meta.policy_id, &*rec.meta.scope_id),
                ("pol-1", "sc-1")
            );
            assert_eq!(rec.meta.src.port(), 41002);
        }
        // The expiry scan counts the half-open flows: still two, still full.
        d.expire(t0 + Duration::from_secs(1));
        assert_eq!(d.counters.intercept_half_open, 2);
        assert_eq!(
            feed(&mut d, Port::Lan, &syn_frame(41003), t0),
            Path::Fast(FastKind::Tcp)
        );

        // A budget smaller than one flow, on_overload = "block": the client
        // gets a reset at once and nothing reaches the server.
        let policy = TlsPolicy {
            on_overload: PassOrBlock::Block,
            ..testkit::pass_all()
        };
        let (d, log, t0) = intercept_lab(0, Duration::from_secs(300), policy);
        let mut d = d.with_limits(1, usize::MAX);
        assert_eq!(
            feed(&mut d, Port::Lan, &syn_frame(42000), t0),
            Path::Intercepted
        );
        let out = drain(&mut d);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, Port::Lan);
        assert_ne!(tcp_of(&out[0].1).0 & 0x04, 0, "a RST toward the client");
        assert_eq!(d.counters.intercepted_started, 0);
        let recs = log.records.lock().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(
            (recs[0].action, recs[0].reason.as_str()),
            (FlowAction::Blocked, "overload")
        );
    }

    /// Moves packets (TUN framing) between the hosts and the dispatcher,
    /// timers in virtual time, until nothing moves or 60 s passed; returns
    /// the time reached. The hosts' clock starts at `t0`.
    fn exchange(
        d: &mut Dispatcher,
        client: &mut crate::testkit::Host,
        server: &mut crate::testkit::Host,
        t0: Instant,
        start: Instant,
    ) -> Instant {
        let mut now = start;
        while now < start + Duration::from_secs(60) {
            let t = crate::testkit::smol(t0, now);
            let mut moved = client.apps_step() | server.apps_step();
            client.poll(t);
            server.poll(t);
            for (host, port) in [(&mut *client, Port::Lan), (&mut *server, Port::Wan)] {
                for p in std::mem::take(&mut host.dev.tx) {
                    d.on_ip(port, &p, parse_ip(&p), RxMeta::default(), now);
                    moved = true;
                }
            }
            d.service_pending();
            d.drain_tx(|port, p, _| {
                moved = true;
                match port {
                    Port::Lan => client.dev.rx.push_back(p.to_vec()),
                    Port::Wan => server.dev.rx.push_back(p.to_vec()),
                }
            });
            if moved {
                continue;
            }
            let mut next = d.next_timer();
            for host in [&mut *client, &mut *server] {
                if let Some(at) = host.poll_at(t) {
                    let at = t0 + Duration::from_micros(at.total_micros() as u64);
                    next = Some(next.map_or(at, |n: Instant| n.min(at)));
                }
            }
            let Some(next) = next else { break };
            now = next.max(now + Duration::from_micros(1));
            d.run_timers(now);
        }
        now
    }

    /// A panic in one flow's handling (here an engine's) resets that flow
    /// alone and logs it with reason `internal_error`; the worker goes on
    /// and the next connection is inspected end to end.
    #[test]
    fn a_flow_that_panics_is_reset_and_logged_and_the_worker_goes_on() {
        use crate::testkit::{self, ClientApp, ServerApp};
        let kit = testkit::Lab::new();
        let ctx = kit.ctx(testkit::inspect_all(), Arc::new(testkit::PanicInspector));
        let (mut d, log, t0) = dispatcher_for(0, Duration::from_secs(300), ctx, SystemTime::now());
        let client = || ClientApp::Tls {
            trust_policy_ca: true,
            tls12_only: false,
            client_auth: false,
        };
        let origin = || ServerApp::Tls {
            tls12_only: false,
            require_client_auth: false,
        };
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();

        let request = b"GET /panic HTTP/1.1\r\n\r\n".to_vec();
        let (mut c, mut s) = kit.hosts(client(), origin(), request, answer.clone());
        let now = exchange(&mut d, &mut c, &mut s, t0, t0);
        assert!(c.apps[0].reset, "the client's connection was reset");
        assert!(c.apps[0].got.is_empty());
        assert!(
            s.apps.iter().all(|a| a.got.is_empty()),
            "nothing reached the origin"
        );
        assert_eq!(d.counters.intercept_panics, 1);
        assert_eq!(d.active_flows(), 0);
        {
            let recs = log.records.lock().unwrap();
            assert_eq!(recs.len(), 1, "{recs:?}");
            assert_eq!(recs[0].reason.as_str(), "internal_error");
            assert_eq!(recs[0].meta.policy_id.as_ref(), "pol-1");
        }

        let request = b"GET /fine HTTP/1.1\r\n\r\n".to_vec();
        let (mut c, mut s) = kit.hosts(client(), origin(), request.clone(), answer.clone());
        let now = exchange(&mut d, &mut c, &mut s, t0, now);
        assert_eq!(c.apps[0].got, answer, "the next connection is served");
        assert!(!c.apps[0].reset);
        assert!(s.apps.iter().any(|a| a.got == request));
        let chain = c.peer_chain(0);
        assert_eq!(testkit::issuer_cn(&chain[0]), "Test Policy CA", "inspected");
        d.finish(now);
        assert_eq!(d.counters.intercept_panics, 1);
        assert_eq!(log.records.lock().unwrap().len(), 2);
    }

    #[test]
    fn intercepted_timers_fire_and_tun_packets_carry_no_l2() {
        use smoltcp::wire::TcpControl;

        let (mut d, _log, t0) = intercept_lab(0, Duration::from_secs(300), testkit::pass_all());
        let syn = ft::emitted((C, 40001), (S, 443), TcpControl::Syn, 1, None);
        assert_eq!(
            d.on_ip(Port::Lan, &syn, parse_ip(&syn), RxMeta::default(), t0),
            Path::Intercepted
        );
        let first = drain(&mut d);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1[0] >> 4, 4, "a bare IP packet on TUN");
        // The silent server: the SYN is retransmitted when the timer is due.
        let mut sent = first.len();
        let mut now = t0;
        for _ in 0..20 {
            let Some(at) = d.next_timer() else { break };
            now = at.max(now);
            d.run_timers(now);
            sent += drain(&mut d).len();
        }
        assert!(sent >= 2, "SYN retransmitted by the timer ({sent})");
        assert!(now > t0);
    }

    #[test]
    fn every_fast_path_kind_and_malformed() {
        let mut r = rig(100);
        let s = ft::samples();
        let now = r.t0;
        let mut path = |f: &[u8], meta| r.d.on_ethernet(Port::Lan, f, parse_ethernet(f), meta, now);
        assert_eq!(path(&s[6], RxMeta::default()), Path::Fast(FastKind::Arp));
        assert_eq!(path(&s[4], RxMeta::default()), Path::Fast(FastKind::Udp));
        assert_eq!(
            path(&s[2], RxMeta::default()),
            Path::Fast(FastKind::Vlan),
            "in-scope SYN but tagged"
        );
        let stripped = crate::io::VlanTag {
            tpid: 0x8100,
            tci: 5,
        };
        assert_eq!(
            path(
                &s[0],
                RxMeta {
                    vlan: Some(stripped),
                    ..RxMeta::default()
                }
            ),
            Path::Fast(FastKind::Vlan)
        );
        assert!(matches!(
            path(&s[0][..30], RxMeta::default()),
            Path::Malformed(_)
        ));
        let lldp = ft::ether(0x88cc, &[], &[0; 40]);
        assert_eq!(path(&lldp, RxMeta::default()), Path::Fast(FastKind::Other));
        let c = r.d.counters;
        assert_eq!(
            (
                c.fast_arp,
                c.fast_udp,
                c.fast_vlan,
                c.malformed,
                c.fast_other
            ),
            (1, 1, 2, 1, 1)
        );
        assert_eq!(c.fast_frames, 6);
        assert_eq!(c.rx_frames, 6);
        // TUN packets go through the same decision.
        let pkt = ft::ipv4_tcp(C, 7, S, 443, SYN, b"");
        assert_eq!(
            r.d.on_ip(Port::Lan, &pkt, parse_ip(&pkt), RxMeta::default(), now),
            Path::InScope
        );
    }
}
