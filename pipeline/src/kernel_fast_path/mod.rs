//! The kernel fast path: out-of-scope TCP flows forwarded by a tc-BPF
//! program instead of the worker, as Suricata's bypass.
//!
//! How it works: a classifier at tc ingress of each port
//! ([`program::Hook::TcIngress`]) redirects to the other port every segment
//! whose directed 5-tuple is in a BPF hash map and that carries none of
//! SYN, FIN, RST; the packet sockets' filter ([`program::Hook::SocketFilter`])
//! does not copy those into the rings (packet taps run before tc ingress).
//! Everything else reaches the worker as before, so the worker still sees
//! every handshake and teardown segment of a listed flow, and that is what
//! this module's [`KernelFastPath`] follows, one per worker, sans-IO (the
//! map is behind [`FlowMap`]):
//!
//! - An out-of-scope initial SYN from the LAN side is remembered
//!   ([`KernelFastPath::on_syn`]); the flow is listed (both directions) when
//!   the server's SYN-ACK acknowledging it comes back. Listing at the SYN-ACK
//!   and not at the SYN: SYNs nobody answers (scans, floods towards
//!   out-of-scope addresses) never take a map slot, and nothing is lost, as
//!   the handshake goes through user space either way. Only a SYN seen from
//!   the LAN counts, so a forged SYN-ACK from the WAN cannot list anything.
//! - An RST from either side, or FINs from both sides, end it: the entries
//!   leave the map and the last segments (the final ACK among them) take
//!   the user-space fast path. A new initial SYN on the same addresses and
//!   ports ends it too (the old connection is over, and the new one may be
//!   in scope after a reload).
//! - [`KernelFastPath::housekeep`] (the worker's 250 ms housekeeping) reads
//!   the entries' last-seen stamps and counters, ends idle flows (the flow
//!   table's idle timeout) and adds what the program forwarded to the
//!   worker's counters. It visits at most [`SCAN_BUDGET`] flows per call,
//!   round-robin, so a full table costs a bounded number of syscalls per
//!   tick.
//! - Beyond the worker's share of the cap, or when the kernel map is full,
//!   a flow stays on the user-space fast path (counted).
//!
//! Races, all benign: the socket filter and the classifier do a lookup each;
//! a segment that crosses them while the worker inserts an entry is
//! forwarded twice (a duplicate segment), while the worker deletes one it is
//! neither copied nor redirected (lost; TCP retransmits it). Deletions
//! happen at an idle flow's expiry or after both FINs, when little is in
//! flight.

pub mod program;

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::flow::FlowKey;
use crate::frame::TcpFlags;
use crate::stats::Counters;

/// Flows [`KernelFastPath::housekeep`] reads from the map per call.
pub const SCAN_BUDGET: usize = 4096;
/// SYNs a worker remembers while their SYN-ACK is due: a SYN flood towards
/// out-of-scope addresses costs at most this many entries (about 100 bytes each).
pub const MAX_OPENING: usize = 65_536;
/// How long a SYN waits for its SYN-ACK (a retransmitted SYN restarts it).
pub const OPENING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A map key: one direction of a TCP flow, as the program builds it from
/// the headers (addresses and ports in network order, IPv4 addresses in
/// the first 4 bytes of their 16, the rest zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapKey(pub [u8; MapKey::LEN]);

impl MapKey {
    /// Bytes of a key.
    pub const LEN: usize = 40;
    /// Offset of the IP version (4 or 6).
    pub const VERSION: usize = 0;
    /// Offset of the IP protocol (6).
    pub const PROTO: usize = 1;
    /// Offset of the source and destination ports.
    pub const PORTS: usize = 4;
    /// Offset of the source address.
    pub const SRC: usize = 8;
    /// Offset of the destination address.
    pub const DST: usize = 24;

    /// The key of TCP segments from `src` to `dst`. `None` if the address
    /// families differ.
    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Option<MapKey> {
        let mut k = [0u8; Self::LEN];
        k[Self::PROTO] = 6;
        k[Self::PORTS..Self::PORTS + 2].copy_from_slice(&sport.to_be_bytes());
        k[Self::PORTS + 2..Self::PORTS + 4].copy_from_slice(&dport.to_be_bytes());
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                k[Self::VERSION] = 4;
                k[Self::SRC..Self::SRC + 4].copy_from_slice(&s.octets());
                k[Self::DST..Self::DST + 4].copy_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                k[Self::VERSION] = 6;
                k[Self::SRC..Self::SRC + 16].copy_from_slice(&s.octets());
                k[Self::DST..Self::DST + 16].copy_from_slice(&d.octets());
            }
            _ => return None,
        }
        Some(MapKey(k))
    }

    /// The key of the other direction.
    pub fn reverse(&self) -> MapKey {
        let mut k = self.0;
        k[Self::PORTS..Self::PORTS + 2].copy_from_slice(&self.0[Self::PORTS + 2..Self::PORTS + 4]);
        k[Self::PORTS + 2..Self::PORTS + 4].copy_from_slice(&self.0[Self::PORTS..Self::PORTS + 2]);
        k[Self::SRC..Self::SRC + 16].copy_from_slice(&self.0[Self::DST..Self::DST + 16]);
        k[Self::DST..Self::DST + 16].copy_from_slice(&self.0[Self::SRC..Self::SRC + 16]);
        MapKey(k)
    }
}

/// A map value: what to do with a direction, and what the program did.
///
/// `action` leaves room for later kinds of flow (a released intercepted
/// flow needs a sequence-number offset: a new action and fields after
/// these); the program forwards only [`MapValue::FORWARD`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapValue {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last segment redirected.
    pub last_seen_ns: u64,
    /// Segments (or super-frames) redirected.
    pub packets: u64,
    /// Bytes redirected (whole frames).
    pub bytes: u64,
    /// What the program does with the direction's segments.
    pub action: u32,
}

impl MapValue {
    /// Bytes of a value.
    pub const LEN: usize = 32;
    /// Offset of `last_seen_ns`.
    pub const LAST_SEEN: usize = 0;
    /// Offset of `packets`.
    pub const PACKETS: usize = 8;
    /// Offset of `bytes`.
    pub const BYTES: usize = 16;
    /// Offset of `action`.
    pub const ACTION: usize = 24;
    /// Redirect unchanged to the other port.
    pub const FORWARD: u32 = 1;

    /// A new entry for a direction forwarded unchanged, stamped `now_ns`.
    pub fn forward(now_ns: u64) -> MapValue {
        MapValue {
            last_seen_ns: now_ns,
            action: Self::FORWARD,
            ..MapValue::default()
        }
    }

    /// The value's bytes in host order, as the program reads them.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.last_seen_ns.to_ne_bytes());
        b[8..16].copy_from_slice(&self.packets.to_ne_bytes());
        b[16..24].copy_from_slice(&self.bytes.to_ne_bytes());
        b[24..28].copy_from_slice(&self.action.to_ne_bytes());
        b
    }

    /// Reads a value the program may have updated.
    pub fn from_bytes(b: &[u8; Self::LEN]) -> MapValue {
        let u = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or_default());
        MapValue {
            last_seen_ns: u(0),
            packets: u(8),
            bytes: u(16),
            action: u32::from_ne_bytes([b[24], b[25], b[26], b[27]]),
        }
    }
}

/// Why an entry could not be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InsertError {
    /// The map holds its maximum number of entries.
    #[error("the kernel map is full")]
    Full,
    /// Another failure of the kernel.
    #[error("{0}")]
    Os(#[from] io::Error),
}

/// The kernel map the programs read, as the bookkeeping uses it (the real
/// one is a [`KernelMap`]; tests use an in-memory one).
pub trait FlowMap: Send + Sync {
    /// Adds or replaces the entry of `key`.
    fn insert(&self, key: &MapKey, value: &MapValue) -> Result<(), InsertError>;
    /// The entry of `key`, if any.
    fn get(&self, key: &MapKey) -> Option<MapValue>;
    /// Deletes the entry of `key`, if any.
    fn remove(&self, key: &MapKey);
    /// The programs' clock (`bpf_ktime_get_ns`: CLOCK_MONOTONIC), in nanoseconds.
    fn now_ns(&self) -> u64;
}

/// The BPF hash map the programs read: [`MapKey`] to [`MapValue`].
pub type KernelMap = crate::io::bpf::BpfMap<{ MapKey::LEN }, { MapValue::LEN }>;

impl FlowMap for KernelMap {
    fn insert(&self, key: &MapKey, value: &MapValue) -> Result<(), InsertError> {
        self.update(&key.0, &value.to_bytes())
            .map_err(|e| match e.kind() {
                // E2BIG: the map holds its maximum number of entries.
                io::ErrorKind::ArgumentListTooLong => InsertError::Full,
                _ => InsertError::Os(e),
            })
    }

    fn get(&self, key: &MapKey) -> Option<MapValue> {
        self.lookup(&key.0).map(|b| MapValue::from_bytes(&b))
    }

    fn remove(&self, key: &MapKey) {
        self.delete(&key.0);
    }

    fn now_ns(&self) -> u64 {
        crate::io::bpf::monotonic_ns()
    }
}

/// An out-of-scope SYN waiting for its SYN-ACK.
#[derive(Debug, Clone, Copy)]
struct Opening {
    /// Client to server.
    key: MapKey,
    isn: u32,
    at_ns: u64,
}

/// A listed flow.
#[derive(Debug, Clone, Copy)]
struct Listed {
    /// Client to server (the reverse is the other entry).
    key: MapKey,
    /// FIN seen from the client, from the server.
    fin: [bool; 2],
    listed_ns: u64,
    /// Counters of both entries at the last read (to add only the increase).
    packets: u64,
    bytes: u64,
    /// Tells this listing from an earlier one of the same key in the scan queue.
    generation: u64,
}

/// Why a listed flow left the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Fin,
    Rst,
    Idle,
    Superseded,
    Shutdown,
}

/// One worker's kernel fast path bookkeeping: which of its flows are
/// listed in the map, how far their teardown came, when they go.
pub struct KernelFastPath {
    map: Arc<dyn FlowMap>,
    /// Flows (opening and listed together) this worker may hold.
    cap: usize,
    idle_ns: u64,
    opening: HashMap<FlowKey, Opening>,
    listed: HashMap<FlowKey, Listed>,
    /// Round-robin order of the housekeeping scan: (flow, generation).
    scan: VecDeque<(FlowKey, u64)>,
    next_generation: u64,
}

impl std::fmt::Debug for KernelFastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelFastPath")
            .field("opening", &self.opening.len())
            .field("listed", &self.listed.len())
            .finish()
    }
}

impl KernelFastPath {
    /// Bookkeeping over `map` for at most `cap` flows, ending those idle for `idle`.
    pub fn new(map: Arc<dyn FlowMap>, cap: usize, idle: std::time::Duration) -> KernelFastPath {
        KernelFastPath {
            map,
            cap,
            idle_ns: u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX),
            opening: HashMap::new(),
            listed: HashMap::new(),
            scan: VecDeque::new(),
            next_generation: 0,
        }
    }

    /// Whether any flow is opening or listed (else segments need no lookup).
    pub fn is_tracking(&self) -> bool {
        !self.opening.is_empty() || !self.listed.is_empty()
    }

    /// Listed flows.
    pub fn listed(&self) -> usize {
        self.listed.len()
    }

    /// An out-of-scope initial SYN from the LAN side, from `src` to `dst`.
    pub fn on_syn(
        &mut self,
        key: FlowKey,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        isn: u32,
        c: &mut Counters,
    ) {
        if let Some(l) = self.listed.remove(&key) {
            self.end(l, End::Superseded, c);
        }
        let full =
            self.opening.len() + self.listed.len() >= self.cap || self.opening.len() >= MAX_OPENING;
        if full && !self.opening.contains_key(&key) {
            c.kernel_over_cap += 1;
            return;
        }
        let Some(mk) = MapKey::tcp(src.0, src.1, dst.0, dst.1) else {
            return;
        };
        let at_ns = self.map.now_ns();
        self.opening.insert(
            key,
            Opening {
                key: mk,
                isn,
                at_ns,
            },
        );
    }

    /// Any other TCP segment on the user-space fast path, from `src` to `dst`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_segment(
        &mut self,
        key: FlowKey,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        flags: TcpFlags,
        ack: u32,
        c: &mut Counters,
    ) {
        if flags.is_initial_syn() {
            // A new connection on the ports (from either side): the old one is over.
            if let Some(l) = self.listed.remove(&key) {
                self.end(l, End::Superseded, c);
            }
            self.opening.remove(&key);
            return;
        }
        if flags.syn() && flags.ack() {
            let Some(o) = self.opening.get(&key).copied() else {
                return;
            };
            let server_to_client = MapKey::tcp(src.0, src.1, dst.0, dst.1);
            if server_to_client != Some(o.key.reverse()) || ack != o.isn.wrapping_add(1) {
                return;
            }
            self.opening.remove(&key);
            self.list(key, o.key, c);
            return;
        }
        let Some(l) = self.listed.get_mut(&key) else {
            return;
        };
        if flags.rst() {
            if let Some(l) = self.listed.remove(&key) {
                self.end(l, End::Rst, c);
            }
            return;
        }
        if flags.fin() {
            let from_client = MapKey::tcp(src.0, src.1, dst.0, dst.1) == Some(l.key);
            l.fin[usize::from(!from_client)] = true;
            if l.fin == [true, true] {
                if let Some(l) = self.listed.remove(&key) {
                    self.end(l, End::Fin, c);
                }
            }
        }
    }

    fn list(&mut self, key: FlowKey, fwd: MapKey, c: &mut Counters) {
        let now = self.map.now_ns();
        let value = MapValue::forward(now);
        let inserted = self.map.insert(&fwd, &value).and_then(|()| {
            self.map.insert(&fwd.reverse(), &value).inspect_err(|_| {
                self.map.remove(&fwd);
            })
        });
        match inserted {
            Ok(()) => {}
            Err(InsertError::Full) => {
                c.kernel_map_full += 1;
                return;
            }
            Err(InsertError::Os(e)) => {
                if c.kernel_map_errors == 0 {
                    log::warn!("kernel fast path: cannot list a flow: {e}");
                }
                c.kernel_map_errors += 1;
                return;
            }
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        self.listed.insert(
            key,
            Listed {
                key: fwd,
                fin: [false; 2],
                listed_ns: now,
                packets: 0,
                bytes: 0,
                generation,
            },
        );
        self.scan.push_back((key, generation));
        c.kernel_flows_listed += 1;
    }

    /// Adds what the program forwarded since the last read; returns the
    /// latest last-seen stamp of both directions.
    fn read(&self, l: &mut Listed, c: &mut Counters) -> u64 {
        let mut last = l.listed_ns;
        let (mut packets, mut bytes) = (0u64, 0u64);
        for k in [l.key, l.key.reverse()] {
            if let Some(v) = self.map.get(&k) {
                last = last.max(v.last_seen_ns);
                packets = packets.saturating_add(v.packets);
                bytes = bytes.saturating_add(v.bytes);
            }
        }
        // Counters only grow while the entry lives; a smaller value means
        // someone else replaced it: count from there.
        c.kernel_packets += packets.saturating_sub(l.packets);
        c.kernel_bytes += bytes.saturating_sub(l.bytes);
        l.packets = packets;
        l.bytes = bytes;
        last
    }

    fn end(&mut self, mut l: Listed, why: End, c: &mut Counters) {
        self.read(&mut l, c);
        self.map.remove(&l.key);
        self.map.remove(&l.key.reverse());
        c.kernel_flows_ended += 1;
        match why {
            End::Idle => c.kernel_ended_idle += 1,
            End::Fin | End::Rst | End::Superseded | End::Shutdown => {}
        }
    }

    /// The periodic scan: forgets SYNs unanswered for [`OPENING_TIMEOUT`] (or the idle timeout if shorter),
    /// reads up to [`SCAN_BUDGET`] listed flows' counters and ends those idle
    /// for the timeout.
    pub fn housekeep(&mut self, c: &mut Counters) {
        let now = self.map.now_ns();
        let idle = self.idle_ns;
        let wait = idle.min(OPENING_TIMEOUT.as_nanos() as u64);
        self.opening
            .retain(|_, o| now.saturating_sub(o.at_ns) < wait);
        for _ in 0..SCAN_BUDGET.min(self.scan.len()) {
            let Some((key, generation)) = self.scan.pop_front() else {
                break;
            };
            let Some(mut l) = self
                .listed
                .get(&key)
                .copied()
                .filter(|l| l.generation == generation)
            else {
                continue;
            };
            let last = self.read(&mut l, c);
            if now.saturating_sub(last) >= idle {
                self.listed.remove(&key);
                self.end(l, End::Idle, c);
            } else {
                self.listed.insert(key, l);
                self.scan.push_back((key, generation));
            }
        }
    }

    /// Takes every flow out of the map (shutdown), counting what was forwarded.
    pub fn finish(&mut self, c: &mut Counters) {
        let all: Vec<Listed> = self.listed.drain().map(|(_, l)| l).collect();
        for l in all {
            self.end(l, End::Shutdown, c);
        }
        self.opening.clear();
        self.scan.clear();
    }
}

/// The kernel side of the fast path, attached to both ports: the flow map,
/// the packet sockets' filter, and a classifier at each port's tc ingress
/// (detached when this is dropped).
#[derive(Debug)]
pub struct Attached {
    map: Arc<KernelMap>,
    filter: crate::io::bpf::BpfProgram,
    hooks: [TcHook; 2],
    entries: u32,
}

/// How a classifier is attached at a port's tc ingress.
#[derive(Debug)]
enum TcHook {
    /// A tcx link (Linux 6.6+), detached when dropped.
    Tcx { _link: crate::io::bpf::TcLink },
    /// A filter on a clsact qdisc (older kernels), deleted when dropped.
    Clsact { _filter: crate::io::bpf::TcFilter },
}

/// Which attachment to use (both: tcx, else clsact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Either,
    #[cfg(test)]
    Clsact,
}

fn hook(
    prog: &crate::io::bpf::BpfProgram,
    ifindex: u32,
    iface: &str,
    via: Via,
) -> Result<TcHook, AttachError> {
    let tcx = match via {
        Via::Either => match prog.attach_tc_ingress(ifindex) {
            Ok(l) => return Ok(TcHook::Tcx { _link: l }),
            Err(e) => Some(e),
        },
        #[cfg(test)]
        Via::Clsact => None,
    };
    crate::io::bpf::TcFilter::attach(prog, ifindex, "tlsi_redirect")
        .map(|f| TcHook::Clsact { _filter: f })
        .map_err(|e| AttachError {
            step: format!("attaching at tc ingress of {iface}"),
            source: match tcx {
                Some(t) => format!("{t}; clsact: {e}").into(),
                None => Box::new(e),
            },
        })
}

/// Why the kernel fast path could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct AttachError {
    /// What was being done.
    pub step: String,
    /// The kernel's answer (for a refused program, with the verifier log).
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl Attached {
    /// Creates the map (two entries per flow, `max_flows` flows), loads the
    /// programs and attaches a classifier at ingress of `lan` and `wan`,
    /// each redirecting to the other.
    pub fn attach(lan: &str, wan: &str, max_flows: usize) -> Result<Attached, AttachError> {
        Self::attach_via(lan, wan, max_flows, Via::Either)
    }

    pub(crate) fn attach_via(
        lan: &str,
        wan: &str,
        max_flows: usize,
        via: Via,
    ) -> Result<Attached, AttachError> {
        use crate::io::bpf::{BpfProgram, ProgramType};
        use program::{build, to_bytes, Hook};
        fn at<E: std::error::Error + Send + Sync + 'static>(
            step: impl Into<String>,
        ) -> impl FnOnce(E) -> AttachError {
            let step = step.into();
            move |e| AttachError {
                step,
                source: Box::new(e),
            }
        }
        let lan_idx = crate::io::ifindex(lan).map_err(at(format!("interface {lan}")))?;
        let wan_idx = crate::io::ifindex(wan).map_err(at(format!("interface {wan}")))?;
        let entries = u32::try_from(max_flows.saturating_mul(2)).unwrap_or(u32::MAX);
        let map = Arc::new(KernelMap::create("tlsi_flows", entries).map_err(at("flow map"))?);
        let filter = BpfProgram::load(
            ProgramType::SocketFilter,
            "tlsi_filter",
            &to_bytes(&build(Hook::SocketFilter, map.fd())),
        )
        .map_err(at("socket filter"))?;
        let classifier = |to_ifindex| {
            BpfProgram::load(
                ProgramType::SchedCls,
                "tlsi_redirect",
                &to_bytes(&build(Hook::TcIngress { to_ifindex }, map.fd())),
            )
        };
        let to_wan = classifier(wan_idx).map_err(at("tc classifier"))?;
        let to_lan = classifier(lan_idx).map_err(at("tc classifier"))?;
        let lan_hook = hook(&to_wan, lan_idx, lan, via)?;
        let wan_hook = hook(&to_lan, wan_idx, wan, via)?;
        Ok(Attached {
            map,
            filter,
            hooks: [lan_hook, wan_hook],
            entries,
        })
    }

    /// How the classifiers are attached, for the start-up line.
    pub fn attachment(&self) -> &'static str {
        match self.hooks[0] {
            TcHook::Tcx { .. } => "tcx",
            TcHook::Clsact { .. } => "clsact",
        }
    }

    /// The map, for the workers' bookkeeping.
    pub fn map(&self) -> Arc<dyn FlowMap> {
        self.map.clone()
    }

    /// The filter every packet socket of both ports must carry.
    pub fn filter(&self) -> &crate::io::bpf::BpfProgram {
        &self.filter
    }

    /// The map's capacity in entries (two per flow).
    pub fn entries(&self) -> u32 {
        self.entries
    }
}

#[cfg(test)]
mod tests;
