//! What rules remember between inspection steps.
//!
//! `flowbits` live with the flow ([`FlowBits`], one small bit set per flow,
//! no locking). `xbits` and `threshold`/`detection_filter` counters are kept
//! per host for the whole appliance ([`HostState`]): they are touched only
//! when a rule using them matches, which is rare next to the packet rate, so
//! one mutex is cheaper than anything cleverer. The table is bounded; what
//! could not be tracked is counted, and a rule whose counter cannot be kept
//! alerts (a suppressed alert would hide an attack, an extra one only costs
//! a log line).
//!
//! Time comes from a [`Clock`] given at construction (milliseconds), so
//! tests drive it; the appliance uses the monotonic clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::rule::{BitCmd, Threshold, ThresholdKind, Track};

/// A millisecond clock.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The monotonic clock in milliseconds since the first call.
pub fn monotonic() -> Clock {
    let t0 = Instant::now();
    Arc::new(move || t0.elapsed().as_millis() as u64)
}

/// The flowbits and flowints of one flow, by interned id.
#[derive(Debug, Clone, Default)]
pub struct FlowBits {
    words: Vec<u64>,
    /// `flowint` values; `None`: not set. As many as the rule set names.
    ints: Vec<Option<u32>>,
}

impl FlowBits {
    /// Whether bit `id` is set.
    pub fn get(&self, id: u32) -> bool {
        let (w, b) = (id as usize / 64, id % 64);
        self.words.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    /// Applies a set/unset/toggle to bit `id`.
    pub fn apply(&mut self, cmd: BitCmd, id: u32) {
        let (w, b) = (id as usize / 64, id % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        match cmd {
            BitCmd::Set => self.words[w] |= 1 << b,
            BitCmd::Unset => self.words[w] &= !(1 << b),
            BitCmd::Toggle => self.words[w] ^= 1 << b,
            BitCmd::IsSet | BitCmd::IsNotSet => {}
        }
    }

    /// The value of flowint `id`, if set.
    pub fn int(&self, id: u32) -> Option<u32> {
        self.ints.get(id as usize).copied().flatten()
    }

    /// Sets flowint `id` to `v`.
    pub fn set_int(&mut self, id: u32, v: u32) {
        let i = id as usize;
        if self.ints.len() <= i {
            self.ints.resize(i + 1, None);
        }
        self.ints[i] = Some(v);
    }
}

/// Whose counter or bit: one address, an (unordered) pair, or the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    One(IpAddr),
    Pair(IpAddr, IpAddr),
    Rule,
}

fn key(track: Track, src: IpAddr, dst: IpAddr) -> Key {
    match track {
        Track::Src => Key::One(src),
        Track::Dst => Key::One(dst),
        Track::Pair => Key::Pair(src.min(dst), src.max(dst)),
        Track::Rule => Key::Rule,
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    count: u64,
}

#[derive(Debug, Default)]
struct Tables {
    /// (xbit id, key) -> expiry (ms).
    xbits: HashMap<(u32, Key), u64>,
    /// (rule id, key) -> window.
    windows: HashMap<(u32, Key), (Window, u64)>,
}

/// Host-tracked state shared by every flow: xbits and threshold windows.
pub struct HostState {
    clock: Clock,
    cap: usize,
    tables: Mutex<Tables>,
    untracked: AtomicU64,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("cap", &self.cap)
            .field("untracked", &self.untracked)
            .finish_non_exhaustive()
    }
}

impl Default for HostState {
    fn default() -> Self {
        HostState::new(monotonic(), 100_000)
    }
}

impl HostState {
    /// State with `clock` and at most `cap` entries per table.
    pub fn new(clock: Clock, cap: usize) -> Self {
        HostState {
            clock,
            cap,
            tables: Mutex::new(Tables::default()),
            untracked: AtomicU64::new(0),
        }
    }

    /// Entries that could not be stored because the tables were full.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether xbit `id` is set for the tracked host(s).
    pub fn xbit_isset(&self, id: u32, track: Track, src: IpAddr, dst: IpAddr) -> bool {
        let now = (self.clock)();
        self.lock()
            .xbits
            .get(&(id, key(track, src, dst)))
            .is_some_and(|&exp| exp > now)
    }

    /// Applies a set/unset/toggle of xbit `id`, expiring `expire` seconds from now.
    pub fn xbit_apply(
        &self,
        id: u32,
        cmd: BitCmd,
        track: Track,
        expire: u64,
        src: IpAddr,
        dst: IpAddr,
    ) {
        let now = (self.clock)();
        let k = (id, key(track, src, dst));
        let mut t = self.lock();
        let set = t.xbits.get(&k).is_some_and(|&e| e > now);
        let want = match cmd {
            BitCmd::Set => true,
            BitCmd::Unset => false,
            BitCmd::Toggle => !set,
            BitCmd::IsSet | BitCmd::IsNotSet => return,
        };
        if !want {
            t.xbits.remove(&k);
            return;
        }
        if t.xbits.len() >= self.cap && !t.xbits.contains_key(&k) {
            t.xbits.retain(|_, e| *e > now);
            if t.xbits.len() >= self.cap {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        t.xbits
            .insert(k, now.saturating_add(expire.saturating_mul(1000)));
    }

    /// Counts a match of rule `id` under its threshold; whether it alerts.
    ///
    /// Suricata's semantics: `limit` alerts on the first `count` matches of
    /// a window, `threshold` on every `count`-th, `both` once per window at
    /// the `count`-th, `detection_filter` on every match after the
    /// `count`-th. A window opens at the first match and lasts `seconds`.
    pub fn threshold_alerts(&self, id: u32, th: &Threshold, src: IpAddr, dst: IpAddr) -> bool {
        let now = (self.clock)();
        let span = th.seconds.saturating_mul(1000);
        let k = (id, key(th.track, src, dst));
        let mut t = self.lock();
        if t.windows.len() >= self.cap && !t.windows.contains_key(&k) {
            t.windows.retain(|_, (_, end)| *end > now);
            if t.windows.len() >= self.cap {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        let (w, end) = t.windows.entry(k).or_insert((
            Window {
                start: now,
                count: 0,
            },
            now.saturating_add(span),
        ));
        if now.saturating_sub(w.start) >= span {
            *w = Window {
                start: now,
                count: 0,
            };
            *end = now.saturating_add(span);
        }
        w.count += 1;
        match th.kind {
            ThresholdKind::Limit => w.count <= th.count,
            ThresholdKind::Threshold => {
                if w.count >= th.count {
                    w.count = 0;
                    true
                } else {
                    false
                }
            }
            ThresholdKind::Both => w.count == th.count,
            ThresholdKind::DetectionFilter => w.count > th.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn clock() -> (Arc<AtomicU64>, Clock) {
        let t = Arc::new(AtomicU64::new(0));
        let c = t.clone();
        (t, Arc::new(move || c.load(Ordering::Relaxed)))
    }

    fn th(kind: ThresholdKind, count: u64) -> Threshold {
        Threshold {
            kind,
            track: Track::Src,
            count,
            seconds: 60,
        }
    }

    fn run(kind: ThresholdKind, count: u64, n: usize) -> Vec<bool> {
        let (_, c) = clock();
        let h = HostState::new(c, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "203.0.113.1".parse().unwrap();
        (0..n)
            .map(|_| h.threshold_alerts(0, &th(kind, count), a, b))
            .collect()
    }

    #[test]
    fn threshold_kinds_follow_suricata() {
        use ThresholdKind::*;
        let t = true;
        let f = false;
        assert_eq!(run(Limit, 2, 5), [t, t, f, f, f]);
        assert_eq!(run(Threshold, 2, 5), [f, t, f, t, f]);
        assert_eq!(run(Both, 2, 5), [f, t, f, f, f]);
        assert_eq!(run(DetectionFilter, 2, 5), [f, f, t, t, t]);
    }

    #[test]
    fn windows_expire_and_tracks_separate() {
        let (t, c) = clock();
        let h = HostState::new(c, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a2: IpAddr = "192.0.2.2".parse().unwrap();
        let s: IpAddr = "203.0.113.1".parse().unwrap();
        let lim = th(ThresholdKind::Limit, 1);
        assert!(h.threshold_alerts(0, &lim, a, s));
        assert!(!h.threshold_alerts(0, &lim, a, s));
        assert!(h.threshold_alerts(0, &lim, a2, s), "other source");
        assert!(h.threshold_alerts(1, &lim, a, s), "other rule");
        t.store(59_999, Ordering::Relaxed);
        assert!(!h.threshold_alerts(0, &lim, a, s));
        t.store(60_000, Ordering::Relaxed);
        assert!(h.threshold_alerts(0, &lim, a, s), "new window");
    }

    #[test]
    fn xbits_expire_track_and_stay_bounded() {
        let (t, c) = clock();
        let h = HostState::new(c, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let s: IpAddr = "203.0.113.1".parse().unwrap();
        h.xbit_apply(0, BitCmd::Set, Track::Src, 10, a, s);
        assert!(h.xbit_isset(0, Track::Src, a, s));
        assert!(
            h.xbit_isset(0, Track::Dst, s, a),
            "same host as destination"
        );
        assert!(!h.xbit_isset(0, Track::Src, s, a));
        h.xbit_apply(1, BitCmd::Set, Track::Pair, 10, a, s);
        assert!(h.xbit_isset(1, Track::Pair, s, a), "pairs are unordered");
        h.xbit_apply(2, BitCmd::Set, Track::Src, 10, a, s);
        assert_eq!(h.untracked(), 1);
        t.store(10_000, Ordering::Relaxed);
        assert!(!h.xbit_isset(0, Track::Src, a, s), "expired");
        h.xbit_apply(2, BitCmd::Set, Track::Src, 10, a, s);
        assert!(
            h.xbit_isset(2, Track::Src, a, s),
            "expired entries make room"
        );
        h.xbit_apply(2, BitCmd::Toggle, Track::Src, 10, a, s);
        assert!(!h.xbit_isset(2, Track::Src, a, s));
    }

    #[test]
    fn flowbits() {
        let mut b = FlowBits::default();
        assert!(!b.get(70));
        b.apply(BitCmd::Set, 70);
        assert!(b.get(70) && !b.get(6));
        b.apply(BitCmd::Toggle, 70);
        assert!(!b.get(70));
        b.apply(BitCmd::Toggle, 3);
        b.apply(BitCmd::Unset, 3);
        assert!(!b.get(3));
    }
}
