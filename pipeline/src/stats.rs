//! Data-plane counters.
//!
//! Each worker counts in plain `u64` fields it alone owns and publishes them
//! once per batch with relaxed stores into its own [`SharedCounters`], which
//! [`crate::Pipeline::stats`] reads and sums. The per-packet path thus does no
//! atomic read-modify-write and shares no cache line with other workers.

use std::ops::AddAssign;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Counters of one worker, or their sum over all workers.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        /// A worker's counters as published for readers on other threads.
        #[derive(Debug, Default)]
        pub(crate) struct SharedCounters {
            $($name: AtomicU64,)*
        }

        impl SharedCounters {
            /// Publishes a snapshot (single writer: the owning worker).
            pub(crate) fn publish(&self, c: &Counters) {
                $(self.$name.store(c.$name, Ordering::Relaxed);)*
            }

            /// Reads the last published snapshot.
            pub(crate) fn read(&self) -> Counters {
                Counters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl AddAssign<&Counters> for Counters {
            fn add_assign(&mut self, o: &Counters) {
                $(self.$name += o.$name;)*
            }
        }
    };
}

counters! {
    /// Frames (AF_PACKET) or packets (TUN) received on either side.
    rx_frames,
    /// Bytes received on either side.
    rx_bytes,
    /// Frames forwarded by the fast path (untracked).
    fast_frames,
    /// Bytes forwarded by the fast path.
    fast_bytes,
    /// Fast path: ARP.
    fast_arp,
    /// Fast path: UDP (QUIC included).
    fast_udp,
    /// Fast path: ICMP and ICMPv6 (neighbour discovery included).
    fast_icmp,
    /// Fast path: TCP not belonging to an in-scope flow.
    fast_tcp,
    /// Fast path: VLAN-tagged frames (tag in the frame or stripped by the kernel).
    fast_vlan,
    /// Fast path: other EtherTypes, IP protocols and fragments.
    fast_other,
    /// Frames of tracked in-scope flows.
    inscope_frames,
    /// Bytes of tracked in-scope flows (whole frames).
    inscope_bytes,
    /// In-scope flows started (SYN matched a scope).
    flows_started,
    /// In-scope flows ended and logged.
    flows_ended,
    /// Flows in the tables now.
    flows_active,
    /// In-scope SYNs not tracked because the flow table was full.
    flow_overflow,
    /// Frames that failed to parse (forwarded unchanged).
    malformed,
    /// Malformed: a header cut short or a length field beyond the frame.
    malformed_truncated,
    /// Malformed: an impossible version or header-length field.
    malformed_bad_field,
    /// Malformed: more VLAN tags or IPv6 extension headers than we walk.
    malformed_too_deep,
    /// Fast-path TCP segments merged into the flow's previous frame (a super-frame).
    fast_coalesced,
    /// Segments of intercepted flows merged into the previous frame (a super-frame).
    intercept_tx_coalesced,
    /// Super-frames received (a GRO/TSO frame standing for several segments).
    rx_gso_frames,
    /// Super-frames transmitted (forwarded whole, or made by an intercepted flow).
    tx_gso_frames,
    /// Received TCP segments whose checksum the kernel had verified or left
    /// for the transmitter (so we did not check it).
    rx_csum_trusted,
    /// Segments of intercepted flows dropped for a wrong TCP checksum.
    rx_bad_checksum,
    /// Fault injection (`[faults]`, labs only): frames dropped.
    fault_lost,
    /// Fault injection: extra copies of frames delivered or sent.
    fault_duplicated,
    /// Fault injection: frames held back so that later ones overtook them.
    fault_reordered,
    /// Fault injection: frames with a byte changed in their TCP segment.
    fault_corrupted,
    /// Frames lost on receive (ring overflow, or truncated by the ring).
    rx_dropped,
    /// Frames handed to a device for transmission.
    tx_frames,
    /// Frames the kernel refused or dropped on transmit.
    tx_dropped,
    /// Transmit calls that failed with an unexpected error.
    tx_errors,
    /// Frames a VLAN tag was restored into on forward.
    vlan_restored,
    /// TUN: packets handed to the owning worker.
    handoff_out,
    /// TUN: packets received from another worker.
    handoff_in,
    /// TUN: packets forwarded untracked because the owner's queue was full.
    handoff_overflow,
    /// AF_PACKET: frames the fanout delivered to a worker other than the hash owner (expected 0).
    misrouted,
    /// In-scope flows handed to the interception driver (TCP terminated on both legs).
    intercepted_started,
    /// Intercepted flows ended and logged.
    intercepted_ended,
    /// In-scope SYNs the interception driver refused (forwarded untracked).
    intercept_start_errors,
    /// Intercepted flows reset because the code handling them panicked (a
    /// bug below us: a TCP stack, TLS or an engine); other flows go on.
    intercept_panics,
    /// IP packets the intercepted flows' TCP legs sent.
    intercept_tx_packets,
    /// Intercepted flows reset because their policy was disabled with `on_disable = "interrupt"`.
    intercept_interrupted,
    /// Half-open intercepted flows replaced by a new SYN of the client on
    /// the same addresses and ports (another ISN: the client gave up on it).
    intercept_superseded,
    /// In-scope SYNs beyond the memory budget or the half-open cap (passed
    /// or refused by the policy's `on_overload`).
    intercept_overload,
    /// Intercepted flows whose handshake has not completed yet (gauge,
    /// refreshed by the expiry scan).
    intercept_half_open,
    /// Kernel fast path: out-of-scope flows listed in the BPF map.
    kernel_flows_listed,
    /// Kernel fast path: listed flows taken out of the map (FIN, RST, idle, new SYN, shutdown).
    kernel_flows_ended,
    /// Kernel fast path: listed flows ended by the idle timeout.
    kernel_ended_idle,
    /// Kernel fast path: flows left on the user-space fast path because the map was full.
    kernel_map_full,
    /// Kernel fast path: flows left on the user-space fast path by another map error.
    kernel_map_errors,
    /// Kernel fast path: SYNs beyond the worker's share of the flow cap (user-space fast path).
    kernel_over_cap,
    /// Kernel fast path: frames the tc program redirected (summed from the map at housekeeping).
    kernel_packets,
    /// Kernel fast path: bytes the tc program redirected (whole frames).
    kernel_bytes,
    /// Passed flows released from their TCP legs to the fast path (their
    /// later packets cross with a constant-offset rewrite).
    intercept_released,
    /// Frames of released flows forwarded (rewritten).
    released_frames,
    /// Bytes of released flows forwarded (IP packets).
    released_bytes,
    /// Pure ACKs (no payload, no other flag) the intercepted flows' legs sent.
    intercept_tx_acks,
    /// Times the worker slept in poll(2) and woke up (events, timers or the
    /// housekeeping tick).
    wakeups,
    /// GENEVE mode: frames received from the load balancer and decapsulated.
    geneve_frames,
    /// GENEVE mode: frames on the interface that were not GENEVE (left to the kernel).
    geneve_not_ours,
    /// GENEVE mode: dropped, lengths inconsistent or truncated.
    geneve_bad_length,
    /// GENEVE mode: dropped, version other than 0.
    geneve_bad_version,
    /// GENEVE mode: dropped, control (OAM) packets.
    geneve_control,
    /// GENEVE mode: dropped, an option marked critical.
    geneve_critical_option,
    /// GENEVE mode: dropped, inner protocol not IPv4/IPv6.
    geneve_bad_protocol,
    /// GENEVE mode: dropped, outer packet fragmented, IPv6 or VLAN-tagged.
    geneve_bad_outer,
}

impl Counters {
    /// Counts a frame GENEVE mode could not take.
    pub fn geneve_refused(&mut self, e: crate::geneve::GeneveError) {
        use crate::geneve::GeneveError as E;
        let c = match e {
            E::NotGeneve => &mut self.geneve_not_ours,
            E::Length => &mut self.geneve_bad_length,
            E::Version => &mut self.geneve_bad_version,
            E::Control => &mut self.geneve_control,
            E::Critical => &mut self.geneve_critical_option,
            E::Protocol => &mut self.geneve_bad_protocol,
            E::Outer => &mut self.geneve_bad_outer,
        };
        *c += 1;
    }

    /// GENEVE frames dropped, by reason, with the metrics label of each.
    pub fn geneve_dropped(&self) -> [(&'static str, u64); 6] {
        use crate::geneve::GeneveError as E;
        [
            (E::Length.as_str(), self.geneve_bad_length),
            (E::Version.as_str(), self.geneve_bad_version),
            (E::Control.as_str(), self.geneve_control),
            (E::Critical.as_str(), self.geneve_critical_option),
            (E::Protocol.as_str(), self.geneve_bad_protocol),
            (E::Outer.as_str(), self.geneve_bad_outer),
        ]
    }
}

/// Counters of the whole pipeline, per worker and summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sum over all workers.
    pub total: Counters,
    /// One entry per worker, in `cpus` order.
    pub workers: Vec<Counters>,
}

impl Stats {
    pub(crate) fn from_workers(workers: Vec<Counters>) -> Stats {
        let mut total = Counters::default();
        for w in &workers {
            total += w;
        }
        Stats { total, workers }
    }
}
