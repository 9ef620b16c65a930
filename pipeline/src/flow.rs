//! The per-worker flow table: tracked TCP flows keyed by their 5-tuple.
//!
//! Each worker owns one table, so no lock is taken per packet. The key is
//! normalized (lower endpoint first) so both directions of a connection find
//! the same entry; the entry remembers which endpoint is the client. The
//! table is sans-IO: the caller passes `now` to every operation that ages
//! flows. Idle expiry uses a FIFO of `(deadline, key)` — with one timeout
//! for all flows deadlines are pushed in order, so expiry costs amortized
//! O(1) per flow per timeout period instead of a sweep over the whole table.
//! The entry count is capped; an insert beyond the cap fails with
//! [`Overflow`], which the worker counts before forwarding the frame
//! untracked.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use crate::api::FlowRecord;
use crate::classify::ScopeMatch;
use crate::frame::TcpFlags;
use crate::tcp::Release;

/// What the flow table needs of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHead {
    /// Sequence number.
    pub seq: u32,
    /// Payload length.
    pub len: usize,
    /// Flags.
    pub flags: TcpFlags,
}

/// Transport protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

/// A normalized 5-tuple: the lower `(address, port)` endpoint comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    lo: (u128, u16),
    hi: (u128, u16),
    proto: u8,
}

fn addr_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl FlowKey {
    /// Builds the key of a packet from `src` to `dst`; the reverse packet gets the same key.
    pub fn new(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> FlowKey {
        let a = (addr_bits(src), sport);
        let b = (addr_bits(dst), dport);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        FlowKey { lo, hi, proto }
    }
}

/// How far a tracked flow has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Teardown {
    /// The client sent a FIN.
    pub fin_from_client: bool,
    /// The server sent a FIN.
    pub fin_from_server: bool,
    /// Either side sent a RST.
    pub reset: bool,
}

impl Teardown {
    /// Whether the connection is over: FINs both ways, or a reset.
    pub fn finished(&self) -> bool {
        self.reset || (self.fin_from_client && self.fin_from_server)
    }
}

/// Stream bytes of one direction, counted by sequence-space progress so a
/// retransmitted segment is not counted twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamBytes {
    /// Sequence number just past the highest payload byte seen, once known.
    next: Option<u32>,
    /// Payload bytes the highest sequence number has advanced by.
    pub bytes: u64,
}

impl StreamBytes {
    /// The sequence number just past the highest byte seen, once known.
    pub fn next(&self) -> Option<u32> {
        self.next
    }

    /// How far a segment at `seq` with `len` payload bytes would move the
    /// stream forward (0 if not, or nothing seen yet).
    pub fn jump(&self, seq: u32, len: usize) -> u32 {
        let end = seq.wrapping_add(len as u32);
        self.next.map_or(0, |n| {
            let d = end.wrapping_sub(n);
            if (d as i32) > 0 {
                d
            } else {
                0
            }
        })
    }

    /// Counts from sequence number `next` on (a stream already under way).
    pub fn starting_at(next: u32) -> StreamBytes {
        StreamBytes {
            next: Some(next),
            bytes: 0,
        }
    }

    /// Accounts a segment starting at `seq` carrying `len` payload bytes
    /// (`syn`: the SYN occupies `seq` itself, payload starts one later;
    /// `fin`: the FIN occupies the sequence number after the payload).
    pub fn on_segment(&mut self, seq: u32, len: usize, syn: bool, fin: bool) {
        let start = if syn { seq.wrapping_add(1) } else { seq };
        let end = start.wrapping_add(len as u32);
        match self.next {
            // The first segment seen sets the origin; a SYN's payload counts.
            None => {
                self.next = Some(end);
                self.bytes += len as u64;
            }
            Some(next) => {
                // Serial-number arithmetic (RFC 1982): only forward progress
                // within half the sequence space counts.
                let advance = end.wrapping_sub(next) as i32;
                if advance > 0 {
                    self.next = Some(end);
                    self.bytes += advance as u64;
                }
            }
        }
        if fin && self.next == Some(end) {
            // Segments after the FIN carry its sequence number + 1; that
            // step is not a payload byte.
            self.next = Some(end.wrapping_add(1));
        }
    }
}

/// One tracked flow.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Appliance-unique id.
    pub id: u64,
    /// The endpoint that sent the initial SYN.
    pub client: SocketAddr,
    /// The endpoint the SYN went to.
    pub server: SocketAddr,
    /// The scope that selected the flow when its SYN was seen; a later reload
    /// does not change it.
    pub scope: ScopeMatch,
    /// When the SYN was seen.
    pub created: Instant,
    /// When the last packet was seen.
    pub last_seen: Instant,
    /// TCP stream bytes from client to server.
    pub toserver: StreamBytes,
    /// TCP stream bytes from server to client.
    pub toclient: StreamBytes,
    /// Frames in either direction.
    pub frames: u64,
    /// FIN/RST bookkeeping.
    pub teardown: Teardown,
    /// Set for a passed flow released from its TCP legs: how its packets
    /// are rewritten, and its traffic-log record.
    pub released: Option<Box<Released>>,
    /// Ended, kept until this instant so late packets (the last ACK, a
    /// retransmitted FIN) are still rewritten.
    pub linger_until: Option<Instant>,
}

/// What a released flow carries in the flow table.
#[derive(Debug, Clone)]
pub struct Released {
    /// The rewrite of its packets, both directions.
    pub rewrite: Release,
    /// Its record as of the release, completed and written when the flow
    /// ends (then `None`).
    pub record: Option<FlowRecord>,
    /// What goes in front of its packets toward each side (the dispatcher's outbox).
    pub framing: crate::framing::Framing,
    /// When the intercepted flow was born (for `on_disable = "interrupt"`).
    pub born: Instant,
    /// Its latency, recorded once the server's first bytes are forwarded.
    pub timings: Option<crate::latency::FlowTimings>,
}

impl Flow {
    /// Creates a flow from its opening SYN.
    pub fn new(
        id: u64,
        client: SocketAddr,
        server: SocketAddr,
        scope: ScopeMatch,
        now: Instant,
    ) -> Flow {
        Flow {
            id,
            client,
            server,
            scope,
            created: now,
            last_seen: now,
            toserver: StreamBytes::default(),
            toclient: StreamBytes::default(),
            frames: 0,
            teardown: Teardown::default(),
            released: None,
            linger_until: None,
        }
    }

    /// Whether a packet from `src` travels toward the server.
    pub fn is_from_client(&self, src: IpAddr, sport: u16) -> bool {
        self.client.ip() == src && self.client.port() == sport
    }

    /// Accounts one TCP segment and its flags; returns whether the flow is now finished.
    pub fn on_segment(&mut self, from_client: bool, seg: SegmentHead, now: Instant) -> bool {
        self.last_seen = now;
        self.frames += 1;
        let (fin, rst) = (seg.flags.fin(), seg.flags.rst());
        if from_client {
            self.toserver
                .on_segment(seg.seq, seg.len, seg.flags.syn(), fin);
            self.teardown.fin_from_client |= fin;
        } else {
            self.toclient
                .on_segment(seg.seq, seg.len, seg.flags.syn(), fin);
            self.teardown.fin_from_server |= fin;
        }
        self.teardown.reset |= rst;
        self.teardown.finished()
    }

    /// Stream bytes client to server.
    pub fn bytes_toserver(&self) -> u64 {
        self.toserver.bytes
    }

    /// Stream bytes server to client.
    pub fn bytes_toclient(&self) -> u64 {
        self.toclient.bytes
    }

    /// Lifetime from SYN to the last packet seen.
    pub fn duration(&self) -> Duration {
        self.last_seen.saturating_duration_since(self.created)
    }
}

/// An insert was refused because the table is at its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("flow table full ({cap} flows)")]
pub struct Overflow {
    /// The cap in force.
    pub cap: usize,
}

/// The capped flow table of one worker.
#[derive(Debug)]
pub struct FlowTable {
    flows: HashMap<FlowKey, Flow>,
    /// `(deadline, key, flow id)` in push order; stale entries are skipped.
    expiry: VecDeque<(Instant, FlowKey, u64)>,
    /// The same for ended flows kept a little longer ([`FlowTable::linger`]).
    lingering: VecDeque<(Instant, FlowKey, u64)>,
    cap: usize,
    idle: Duration,
}

impl FlowTable {
    /// Creates a table holding at most `cap` flows, expiring them after `idle` without packets.
    pub fn new(cap: usize, idle: Duration) -> FlowTable {
        FlowTable {
            // Reserve a modest start; hashbrown grows as needed up to the cap.
            flows: HashMap::with_capacity(cap.min(4096)),
            expiry: VecDeque::with_capacity(cap.min(4096)),
            lingering: VecDeque::new(),
            cap,
            idle,
        }
    }

    /// Number of tracked flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The cap on entries.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The flow with this key.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        self.flows.get_mut(key)
    }

    /// Inserts a new flow, or fails when the table is full; an existing entry is kept.
    pub fn insert(&mut self, key: FlowKey, flow: Flow) -> Result<&mut Flow, Overflow> {
        if !self.flows.contains_key(&key) {
            if self.flows.len() >= self.cap {
                return Err(Overflow { cap: self.cap });
            }
            self.expiry
                .push_back((flow.last_seen + self.idle, key, flow.id));
            self.compact_expiry();
        }
        Ok(self.flows.entry(key).or_insert(flow))
    }

    /// Removes a flow (it finished).
    pub fn remove(&mut self, key: &FlowKey) -> Option<Flow> {
        self.flows.remove(key)
    }

    /// Keeps an ended flow for `linger` more (see [`Flow::linger_until`]);
    /// [`expire`](Self::expire) then drops it without passing it on.
    pub fn linger(&mut self, key: &FlowKey, now: Instant, linger: Duration) {
        if let Some(flow) = self.flows.get_mut(key) {
            if flow.linger_until.is_none() {
                flow.linger_until = Some(now + linger);
                self.lingering.push_back((now + linger, *key, flow.id));
            }
        }
    }

    /// Removes every flow idle for the timeout at `now`, passing each to `f`;
    /// lingering flows past their time are dropped.
    pub fn expire(&mut self, now: Instant, mut f: impl FnMut(Flow)) {
        while let Some(&(until, key, id)) = self.lingering.front() {
            if until > now {
                break;
            }
            self.lingering.pop_front();
            if self.flows.get(&key).is_some_and(|fl| fl.id == id) {
                self.flows.remove(&key);
            }
        }
        while let Some(&(deadline, key, id)) = self.expiry.front() {
            if deadline > now {
                break;
            }
            self.expiry.pop_front();
            let Some(flow) = self.flows.get(&key) else {
                continue;
            };
            if flow.id != id {
                continue; // the key was reused by a newer flow with its own entry
            }
            let due = flow.last_seen + self.idle;
            if due <= now {
                if let Some(flow) = self.flows.remove(&key) {
                    f(flow);
                }
            } else {
                // Seen since it was queued: requeue at its real deadline.
                self.expiry.push_back((due, key, id));
            }
        }
    }

    /// The flows for which `pick` is true, removed and passed to `f`.
    pub fn remove_where(&mut self, mut pick: impl FnMut(&Flow) -> bool, mut f: impl FnMut(Flow)) {
        let keys: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, fl)| pick(fl))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(fl) = self.flows.remove(&k) {
                f(fl);
            }
        }
    }

    /// Removes every flow, passing each to `f` (shutdown).
    pub fn drain(&mut self, mut f: impl FnMut(Flow)) {
        self.expiry.clear();
        self.lingering.clear();
        for (_, flow) in self.flows.drain() {
            f(flow);
        }
    }

    /// Keeps the expiry queue bounded when many flows end by FIN/RST before
    /// their deadline: drop entries whose flow is gone.
    fn compact_expiry(&mut self) {
        if self.expiry.len() > 2 * self.cap.max(1024) {
            let flows = &self.flows;
            self.expiry
                .retain(|(_, key, id)| flows.get(key).is_some_and(|f| f.id == *id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn flow(id: u64, c: &str, s: &str, now: Instant) -> (FlowKey, Flow) {
        let (c, s) = (sa(c), sa(s));
        let m = ScopeMatch {
            policy_id: "p".into(),
            scope_id: "s".into(),
        };
        (
            FlowKey::new(PROTO_TCP, c.ip(), c.port(), s.ip(), s.port()),
            Flow::new(id, c, s, m, now),
        )
    }

    #[test]
    fn key_is_direction_independent() {
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        let s: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            FlowKey::new(6, c, 1000, s, 443),
            FlowKey::new(6, s, 443, c, 1000)
        );
        assert_ne!(
            FlowKey::new(6, c, 1000, s, 443),
            FlowKey::new(6, c, 1001, s, 443)
        );
        assert_ne!(
            FlowKey::new(6, c, 1000, s, 443),
            FlowKey::new(17, c, 1000, s, 443)
        );
        // Same address, ports swapped: still one flow.
        assert_eq!(FlowKey::new(6, c, 1, c, 2), FlowKey::new(6, c, 2, c, 1));
        let c6: IpAddr = "2001:db8::1".parse().unwrap();
        let s6: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(
            FlowKey::new(6, c6, 5, s6, 443),
            FlowKey::new(6, s6, 443, c6, 5)
        );
    }

    #[test]
    fn cap_refuses_and_counts_nothing_else() {
        let now = Instant::now();
        let mut t = FlowTable::new(2, Duration::from_secs(60));
        let (k1, f1) = flow(1, "192.0.2.1:1000", "203.0.113.1:443", now);
        let (k2, f2) = flow(2, "192.0.2.1:1001", "203.0.113.1:443", now);
        let (k3, f3) = flow(3, "192.0.2.1:1002", "203.0.113.1:443", now);
        t.insert(k1, f1.clone()).unwrap();
        t.insert(k2, f2).unwrap();
        assert_eq!(t.insert(k3, f3).unwrap_err(), Overflow { cap: 2 });
        // Re-inserting an existing key (SYN retransmit) keeps the first entry.
        assert_eq!(t.insert(k1, Flow { id: 99, ..f1 }).unwrap().id, 1);
        assert_eq!(t.len(), 2);
        t.remove(&k1);
        assert!(t
            .insert(k3, flow(3, "192.0.2.1:1002", "203.0.113.1:443", now).1)
            .is_ok());
    }

    #[test]
    fn idle_flows_expire_and_busy_ones_stay() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(30);
        let mut t = FlowTable::new(10, idle);
        let (k1, f1) = flow(1, "192.0.2.1:1000", "203.0.113.1:443", t0);
        let (k2, f2) = flow(2, "192.0.2.2:1000", "203.0.113.1:443", t0);
        t.insert(k1, f1).unwrap();
        t.insert(k2, f2).unwrap();
        // Flow 2 sees traffic at t0+20s.
        t.get_mut(&k2)
            .unwrap()
            .on_segment(true, seg(1, 10, 0x10), t0 + Duration::from_secs(20));
        let mut gone = Vec::new();
        t.expire(t0 + Duration::from_secs(29), |f| gone.push(f.id));
        assert!(gone.is_empty());
        t.expire(t0 + Duration::from_secs(30), |f| gone.push(f.id));
        assert_eq!(gone, vec![1]);
        t.expire(t0 + Duration::from_secs(49), |f| gone.push(f.id));
        assert_eq!(gone, vec![1]);
        t.expire(t0 + Duration::from_secs(50), |f| gone.push(f.id));
        assert_eq!(gone, vec![1, 2]);
        assert!(t.is_empty());
    }

    #[test]
    fn reused_key_is_not_expired_by_old_entry() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(10, Duration::from_secs(10));
        let (k, f) = flow(1, "192.0.2.1:1000", "203.0.113.1:443", t0);
        t.insert(k, f).unwrap();
        t.remove(&k);
        let (k, f) = flow(
            2,
            "192.0.2.1:1000",
            "203.0.113.1:443",
            t0 + Duration::from_secs(5),
        );
        t.insert(k, f).unwrap();
        let mut gone = Vec::new();
        t.expire(t0 + Duration::from_secs(10), |f| gone.push(f.id));
        assert!(
            gone.is_empty(),
            "old queue entry must not expire the new flow"
        );
        t.expire(t0 + Duration::from_secs(15), |f| gone.push(f.id));
        assert_eq!(gone, vec![2]);
    }

    #[test]
    fn teardown_and_byte_accounting() {
        let t0 = Instant::now();
        let (_, mut f) = flow(1, "192.0.2.1:1000", "203.0.113.1:443", t0);
        assert!(f.is_from_client("192.0.2.1".parse().unwrap(), 1000));
        assert!(!f.is_from_client("203.0.113.1".parse().unwrap(), 443));
        assert!(!f.on_segment(true, seg(1000, 0, 0x02), t0)); // SYN
        assert!(!f.on_segment(false, seg(9000, 0, 0x12), t0)); // SYN-ACK
        assert!(!f.on_segment(true, seg(1001, 100, 0x10), t0));
        assert!(!f.on_segment(true, seg(1001, 100, 0x10), t0), "retransmit");
        assert!(!f.on_segment(false, seg(9001, 3000, 0x10), t0));
        assert!(!f.on_segment(false, seg(12001, 2000, 0x11), t0)); // data + FIN
        assert!(!f.on_segment(false, seg(9001, 1000, 0x10), t0), "old data");
        assert!(
            !f.on_segment(false, seg(14002, 0, 0x10), t0),
            "ACK after FIN"
        );
        assert!(f.on_segment(true, seg(1101, 0, 0x11), t0 + Duration::from_millis(1500)));
        assert_eq!((f.bytes_toserver(), f.bytes_toclient()), (100, 5000));
        assert_eq!(f.duration(), Duration::from_millis(1500));
        let (_, mut g) = flow(2, "192.0.2.1:1001", "203.0.113.1:443", t0);
        assert!(g.on_segment(false, seg(5, 0, 0x14), t0), "RST ends a flow");
    }

    fn seg(seq: u32, len: usize, flags: u8) -> SegmentHead {
        SegmentHead {
            seq,
            len,
            flags: TcpFlags(flags),
        }
    }

    #[test]
    fn stream_bytes_wrap_around_the_sequence_space() {
        let mut b = StreamBytes::default();
        b.on_segment(u32::MAX - 10, 0, true, false);
        b.on_segment(u32::MAX - 9, 100, false, false);
        b.on_segment(90, 50, false, true);
        b.on_segment(u32::MAX - 9, 100, false, false);
        // ACKs after the FIN carry FIN + 1.
        b.on_segment(141, 0, false, false);
        b.on_segment(140, 0, false, true);
        assert_eq!(b.bytes, 150);
        // Beyond 4 GiB in total.
        let mut big = StreamBytes::default();
        let mut seq = 7u32;
        big.on_segment(seq, 0, true, false);
        seq = seq.wrapping_add(1);
        for _ in 0..100_000 {
            big.on_segment(seq, 65_000, false, false);
            seq = seq.wrapping_add(65_000);
        }
        assert_eq!(big.bytes, 6_500_000_000);
    }

    #[test]
    fn expiry_queue_stays_bounded_under_churn() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(4, Duration::from_secs(3600));
        for i in 0..20_000u32 {
            let (k, f) = flow(
                u64::from(i),
                &format!("192.0.2.1:{}", i % 60000),
                "203.0.113.1:443",
                t0,
            );
            t.insert(k, f).unwrap();
            t.remove(&k);
        }
        assert!(
            t.expiry.len() <= 2 * 1024 + 1,
            "queue grew to {}",
            t.expiry.len()
        );
    }
}
