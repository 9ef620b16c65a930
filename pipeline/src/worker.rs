//! The worker thread: one per configured core, pinned, owning its flows.
//!
//! A worker owns one queue of each side (a fanout member socket per NIC, or
//! a TUN queue per interface) and moves frames from one to the other in
//! batches: receive up to a budget from a side, decide each frame's path
//! with the sans-IO [`Dispatcher`], queue it on the other side, flush once
//! per batch. It reads the clock once per batch and waits on `mio` only when
//! both sides are drained. Forwarding takes no lock and allocates nothing;
//! what does is off that path: a frame handed to another worker is copied
//! into the handoff queue, and a flow's latency goes into the worker's own
//! histograms behind a mutex that only a metrics scrape also takes.
//!
//! Flow ownership: with AF_PACKET the fanout program already steers both
//! directions to the owner (frames arriving elsewhere are counted as
//! `misrouted`, expected 0). With TUN the kernel picks the queue; a packet
//! whose symmetric hash names another worker is copied to that worker over
//! a bounded channel (`handoff_*` counters). The kernel then learns the
//! flow's queue from our writes (the TUN flow table records the queue that
//! last wrote a flow), so usually only the first packets of a flow move.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::dispatch::{Dispatcher, Path, Port};
use crate::frame::{parse_ethernet, parse_ip, Transport};
use crate::geneve::{self, GeneveError};
use crate::io::{Device, Medium, Offload, RxMeta};
use crate::stats::SharedCounters;
use crate::steer::{packet_hash, worker_of};
use crate::tcp::Rewrite;

/// Frames taken from one side before turning to the other.
const BUDGET: usize = 256;
/// How often idle flows are expired.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// How long a worker keeps polling its queues after the last frame before it sleeps.
const SPIN: Duration = Duration::from_micros(50);
/// Capacity of a worker's handoff queue.
pub(crate) const HANDOFF_QUEUE: usize = 4096;

const LAN: Token = Token(0);
const WAN: Token = Token(1);
pub(crate) const WAKE: Token = Token(2);

/// Requests to interrupt (reset) the intercepted flows of disabled policies.
///
/// Each entry: (sequence number, policy id, flows born before this instant).
/// The pipeline keeps the most recent [`Interrupts::KEEP`] entries; a worker
/// applies those newer than the last it saw at its next housekeeping.
#[derive(Debug, Default)]
pub(crate) struct Interrupts {
    pub(crate) entries: Vec<(u64, Arc<str>, Instant)>,
}

impl Interrupts {
    pub(crate) const KEEP: usize = 256;
}

/// A packet moved to the worker that owns its flow, with its offload state.
pub(crate) type Handoff = (Port, Vec<u8>, Offload);

/// A peer worker's handoff queue and wake-up handle.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) tx: Sender<Handoff>,
    pub(crate) waker: Arc<Waker>,
}

/// Everything a worker thread owns.
pub(crate) struct Worker<D: Device> {
    pub(crate) index: usize,
    pub(crate) lan: D,
    pub(crate) wan: D,
    pub(crate) poll: Poll,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) shared: Arc<SharedCounters>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) handoff_rx: Receiver<Handoff>,
    pub(crate) peers: Vec<Peer>,
    pub(crate) interrupts: Arc<ArcSwap<Interrupts>>,
    /// `mode = "geneve"`: `lan` receives the load balancer's GENEVE frames,
    /// `wan` is a send-only socket on the same interface.
    pub(crate) geneve: bool,
}

/// The per-batch state the receive closure needs besides the receiving device.
struct Ctx<'a> {
    index: usize,
    workers: usize,
    medium: Medium,
    geneve: bool,
    dispatcher: &'a mut Dispatcher,
    peers: &'a [Peer],
    wake: &'a mut [bool],
    now: Instant,
}

impl Ctx<'_> {
    /// Decides one frame's path and forwards it to `out`, or hands it to its owner.
    fn handle<D: Device>(
        &mut self,
        side: Port,
        frame: &mut [u8],
        meta: RxMeta,
        out: &mut D,
        handed: bool,
    ) {
        let len = frame.len();
        if self.geneve {
            return self.handle_geneve(side, frame, meta, out, handed);
        }
        match self.medium {
            Medium::Ethernet => {
                let parsed = parse_ethernet(frame);
                if self.workers > 1 && meta.vlan.is_none() {
                    let untagged = parsed.as_ref().ok().filter(|e| e.vlan.count == 0);
                    // Only TCP and UDP: their flows have an owner. (Other IP
                    // traffic, such as MLD reports behind an IPv6 extension
                    // header, is forwarded by whichever worker gets it.)
                    let flow = untagged.and_then(|e| e.ip()).filter(|ip| {
                        matches!(ip.transport, Transport::Tcp(_) | Transport::Udp { .. })
                    });
                    if let Some(ip) = flow {
                        // The fanout program hashes from the IP header on,
                        // which follows the 14-byte Ethernet header here.
                        if worker_of(packet_hash(ip, &frame[14..]), self.workers) != self.index {
                            self.dispatcher.counters.misrouted += 1;
                        }
                    }
                }
                let path = self
                    .dispatcher
                    .on_ethernet(side, frame, parsed, meta, self.now);
                match path {
                    Path::Intercepted => return,
                    Path::Released(rw) => return self.forward_rewritten(frame, rw, 14, meta, out),
                    _ => {}
                }
            }
            Medium::Ip => {
                let parsed = parse_ip(frame);
                if !handed && self.workers > 1 {
                    if let Ok(ip) = &parsed {
                        let owner = worker_of(packet_hash(ip, frame), self.workers);
                        match self.hand_over(owner, side, frame, meta) {
                            Some(true) => return,
                            Some(false) => {
                                // Forwarded untracked rather than lost.
                                self.dispatcher.counters.rx_frames += 1;
                                self.dispatcher.counters.rx_bytes += len as u64;
                                self.dispatcher.counters.fast_frames += 1;
                                self.dispatcher.counters.fast_bytes += len as u64;
                                self.forward(frame, meta, out);
                                return;
                            }
                            None => {}
                        }
                    }
                }
                let path = self.dispatcher.on_ip(side, frame, parsed, meta, self.now);
                match path {
                    Path::Intercepted => return,
                    Path::Released(rw) => return self.forward_rewritten(frame, rw, 0, meta, out),
                    _ => {}
                }
            }
        }
        self.forward(frame, meta, out);
    }

    /// Hands a copy of `frame` to worker `owner` unless that is this one
    /// (`None`): `Some(true)` when queued, `Some(false)` (counted) when the
    /// owner's queue is full.
    fn hand_over(&mut self, owner: usize, side: Port, frame: &[u8], meta: RxMeta) -> Option<bool> {
        if owner == self.index {
            return None;
        }
        match self.peers[owner]
            .tx
            .try_send((side, frame.to_vec(), meta.offload))
        {
            Ok(()) => {
                self.dispatcher.counters.handoff_out += 1;
                self.wake[owner] = true;
                Some(true)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dispatcher.counters.handoff_overflow += 1;
                Some(false)
            }
        }
    }

    /// A frame in GENEVE mode: decapsulated, its inner packet handled as in
    /// the bridge modes, and whatever is forwarded sent back to the load
    /// balancer with the outer addresses swapped (in place, in the ring).
    fn handle_geneve<D: Device>(
        &mut self,
        side: Port,
        frame: &mut [u8],
        meta: RxMeta,
        out: &mut D,
        handed: bool,
    ) {
        let t = match geneve::parse(frame) {
            Ok(t) if !meta.offload.is_gso() => t,
            // A super-frame of UDP: its segments cannot be told apart here.
            Ok(_) => return self.dispatcher.counters.geneve_refused(GeneveError::Outer),
            Err(e) => return self.dispatcher.counters.geneve_refused(e),
        };
        let o = meta.offload;
        let partial = o.flags & Offload::NEEDS_CSUM != 0;
        let inner_partial = partial && usize::from(o.csum_start) >= t.inner;
        let inner = if inner_partial {
            Offload {
                flags: Offload::NEEDS_CSUM,
                csum_start: o.csum_start - t.inner as u16,
                csum_offset: o.csum_offset,
                ..Offload::default()
            }
        } else {
            Offload::default()
        };
        let parsed = parse_ip(&frame[t.inner..]);
        if !handed && self.workers > 1 {
            // The load balancer's outer header says nothing about the flow:
            // the owner is the inner packet's, as in TUN mode.
            if let Ok(ip) = &parsed {
                let owner = worker_of(packet_hash(ip, &frame[t.inner..]), self.workers);
                // Handled here when the owner's queue is full, rather than lost.
                if self.hand_over(owner, side, frame, meta) == Some(true) {
                    return;
                }
            }
        }
        let path = self.dispatcher.on_geneve(frame, t, parsed, inner, self.now);
        if path == Path::Intercepted {
            return;
        }
        // Everything else goes back to the load balancer it came from.
        geneve::swap_outer(frame);
        let mut meta = meta;
        if let Path::Released(rw) = path {
            rw.apply(&mut frame[t.inner..], inner_partial);
            let at_udp = partial && usize::from(o.csum_start) == t.udp;
            geneve::inner_changed(frame, &t, at_udp);
        }
        if inner_partial {
            // Nobody past us completes it (see `geneve::complete_checksum`).
            let (at, off) = (usize::from(o.csum_start), usize::from(o.csum_offset));
            geneve::complete_checksum(frame, at, off);
            geneve::inner_changed(frame, &t, false);
            meta.offload = Offload::default();
        }
        self.forward(frame, meta, out);
    }

    /// Forwards a frame of a released flow, its TCP header rewritten in
    /// place (the IP packet starts `l2` bytes in).
    fn forward_rewritten<D: Device>(
        &mut self,
        frame: &mut [u8],
        rw: Rewrite,
        l2: usize,
        meta: RxMeta,
        out: &mut D,
    ) {
        let partial = meta.offload.flags & Offload::NEEDS_CSUM != 0;
        if let Some(ip) = frame.get_mut(l2..) {
            rw.apply(ip, partial);
        }
        self.forward(frame, meta, out);
    }

    fn forward<D: Device>(&mut self, frame: &[u8], meta: RxMeta, out: &mut D) {
        let c = &mut self.dispatcher.counters;
        let offload = meta.offload.for_forward();
        if offload.is_gso() {
            c.tx_gso_frames += 1;
        }
        let r = match meta.vlan {
            Some(tag) if self.medium == Medium::Ethernet => {
                c.vlan_restored += 1;
                out.send_tagged(frame, tag, &offload)
            }
            _ if is_tcp(self.medium, frame) => match out.send_segment(frame, &offload) {
                Ok(true) => {
                    c.fast_coalesced += 1;
                    return;
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            },
            _ => out.send(frame, &offload),
        };
        match r {
            Ok(()) => c.tx_frames += 1,
            Err(e) => {
                if c.tx_errors == 0 {
                    log::warn!("worker: transmit failed: {e}");
                }
                c.tx_errors += 1;
            }
        }
    }
}

/// Whether a frame is an untagged IPv4/IPv6 packet carrying TCP (cheap
/// check of the fixed header bytes; the merge itself checks everything).
fn is_tcp(medium: Medium, frame: &[u8]) -> bool {
    let ip = match medium {
        Medium::Ethernet => match frame.get(12..14) {
            Some([0x08, 0x00]) | Some([0x86, 0xdd]) => &frame[14..],
            _ => return false,
        },
        Medium::Ip => frame,
    };
    match ip.first().map(|b| b >> 4) {
        Some(4) => ip.get(9) == Some(&6),
        Some(6) => ip.get(6) == Some(&6),
        _ => false,
    }
}

impl<D: Device> Worker<D> {
    /// Runs until the stop flag is set, then ends every flow and returns.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let medium = self.lan.medium();
        let workers = self.peers.len();
        self.poll
            .registry()
            .register(&mut SourceFd(&self.lan.fd()), LAN, Interest::READABLE)?;
        self.poll
            .registry()
            .register(&mut SourceFd(&self.wan.fd()), WAN, Interest::READABLE)?;
        let mut events = Events::with_capacity(16);
        let mut wake = vec![false; workers];
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        let mut last_active = Instant::now();
        let mut interrupts_seen = self.interrupts.load().entries.last().map_or(0, |e| e.0);
        let mut result = Ok(());
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut ctx = Ctx {
                index: self.index,
                workers,
                medium,
                geneve: self.geneve,
                dispatcher: &mut self.dispatcher,
                peers: &self.peers,
                wake: &mut wake,
                now,
            };
            let wan = &mut self.wan;
            let from_lan = self
                .lan
                .recv(BUDGET, |f, m| ctx.handle(Port::Lan, f, m, wan, false));
            let lan = &mut self.lan;
            let from_wan = self
                .wan
                .recv(BUDGET, |f, m| ctx.handle(Port::Wan, f, m, lan, false));
            let mut handed = 0;
            while let Ok((side, mut pkt, offload)) = self.handoff_rx.try_recv() {
                ctx.dispatcher.counters.handoff_in += 1;
                let out = match side {
                    Port::Lan => &mut self.wan,
                    Port::Wan => &mut self.lan,
                };
                let meta = RxMeta {
                    vlan: None,
                    offload,
                };
                ctx.handle(side, &mut pkt, meta, out, true);
                handed += 1;
                if handed >= BUDGET {
                    break;
                }
            }
            for (i, w) in wake.iter_mut().enumerate() {
                if std::mem::take(w) {
                    let _ = self.peers[i].waker.wake();
                }
            }
            // Intercepted flows: those fed packets in this batch (once each),
            // due timers, then everything they produced.
            self.dispatcher.service_pending();
            self.dispatcher.run_timers(now);
            let produced = self.dispatcher.has_tx();
            self.send_intercepted();
            let flushed = self.lan.flush().and(self.wan.flush());
            let (n_lan, n_wan) = match (from_lan, from_wan, flushed) {
                (Ok(a), Ok(b), Ok(())) => (a, b),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    log::error!("worker {}: device failed, stopping: {e}", self.index);
                    result = Err(e);
                    break;
                }
            };
            if now >= next_housekeeping {
                self.apply_interrupts(&mut interrupts_seen, now);
                self.dispatcher.expire(now);
                self.dispatcher.housekeep_kernel_fast_path();
                if self.dispatcher.take_trim_hint() {
                    crate::io::trim_heap();
                }
                self.send_intercepted();
                self.dispatcher.counters.rx_dropped = self.lan.rx_dropped() + self.wan.rx_dropped();
                self.count_faults();
                next_housekeeping = now + HOUSEKEEPING;
            }
            self.publish();
            let busy = n_lan >= BUDGET || n_wan >= BUDGET || handed >= BUDGET;
            if n_lan + n_wan + handed > 0 || produced {
                last_active = now;
            }
            // Under load, frames arrive microseconds apart: polling the rings
            // for a short while before sleeping saves a wake-up per frame.
            if !busy && now.saturating_duration_since(last_active) < SPIN {
                std::hint::spin_loop();
                continue;
            }
            if !busy {
                // Sleep until housekeeping, the earliest flow timer or a
                // frame a device holds back.
                let wake_at = [
                    self.dispatcher.next_timer(),
                    self.lan.next_due(),
                    self.wan.next_due(),
                ]
                .into_iter()
                .flatten()
                .fold(next_housekeeping, Instant::min);
                let timeout = wake_at.saturating_duration_since(Instant::now());
                self.dispatcher.counters.wakeups += 1;
                if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                    if e.kind() != io::ErrorKind::Interrupted {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        // Frames already queued go out; every flow gets its record.
        let _ = self.lan.flush();
        let _ = self.wan.flush();
        self.dispatcher.finish(Instant::now());
        self.dispatcher.finish_kernel_fast_path();
        self.send_intercepted();
        let _ = self.lan.flush();
        let _ = self.wan.flush();
        self.dispatcher.counters.rx_dropped = self.lan.rx_dropped() + self.wan.rx_dropped();
        self.count_faults();
        self.publish();
        result
    }

    /// Copies what fault-injecting devices did into the counters.
    fn count_faults(&mut self) {
        let f = self.lan.faults() + self.wan.faults();
        let c = &mut self.dispatcher.counters;
        c.fault_lost = f.lost;
        c.fault_duplicated = f.duplicated;
        c.fault_reordered = f.reordered;
        c.fault_corrupted = f.corrupted;
    }

    /// Resets the flows of policies disabled with `on_disable = "interrupt"` since the last call.
    fn apply_interrupts(&mut self, seen: &mut u64, now: Instant) {
        let list = self.interrupts.load();
        let last = *seen;
        for (seq, policy, before) in list.entries.iter().filter(|e| e.0 > last) {
            self.dispatcher
                .interrupt(std::slice::from_ref(policy), *before, now);
            *seen = (*seen).max(*seq);
        }
    }

    /// Queues the frames of intercepted flows on their devices (sent by the next flush).
    fn send_intercepted(&mut self) {
        let (lan, wan) = (&mut self.lan, &mut self.wan);
        let (mut sent, mut failed) = (0u64, 0u64);
        let mut first_error = None;
        self.dispatcher.drain_tx(|side, frame, offload| {
            let dev = match side {
                Port::Lan => &mut *lan,
                Port::Wan => &mut *wan,
            };
            match dev.send(frame, offload) {
                Ok(()) => sent += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        });
        let c = &mut self.dispatcher.counters;
        if let Some(e) = first_error {
            if c.tx_errors == 0 {
                log::warn!(
                    "worker {}: transmit of an intercepted flow's packet failed: {e}",
                    self.index
                );
            }
        }
        c.tx_frames += sent;
        c.tx_errors += failed;
    }

    fn publish(&mut self) {
        let active = self.dispatcher.active_flows() as u64;
        let c = &mut self.dispatcher.counters;
        c.tx_dropped = self.lan.tx_dropped() + self.wan.tx_dropped();
        c.flows_active = active;
        self.shared.publish(&self.dispatcher.counters);
    }
}
