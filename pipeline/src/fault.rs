//! A fault-injecting [`Device`] middleware for labs and benches
//! (DESIGN.md §12): seeded loss, duplication, reordering, corruption and
//! delay, set separately for the frames a device receives and those it
//! transmits.
//!
//! It wraps any device and is invisible to the worker but for
//! [`Device::next_due`] (held frames wake it up) and [`Device::faults`] (what
//! was injected, for the counters). The same seed gives the same decisions
//! for the same sequence of frames, so a failing lab run can be replayed.
//!
//! What each fault does to one frame:
//! - loss: the frame is gone;
//! - duplication: it is delivered (or sent) twice;
//! - reordering: it is held back for [`Faults::reorder_hold`], so frames
//!   behind it overtake it;
//! - delay: every frame is held for [`Faults::delay`] (a longer path);
//! - corruption: one byte of its TCP/UDP segment is changed and the frame is
//!   marked as unverified (a partial checksum is completed first), as a bad
//!   wire would do it; super-frames are left alone. The receiver's
//!   checksum check must drop it.
//!
//! Nothing here is on the production path: the pipeline wraps its devices
//! only when the configuration asks for faults, and says so at start.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::io::{Device, Injected, Medium, Offload, RxMeta, VlanTag};

/// The faults of one direction of one device, as probabilities per frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Frames dropped.
    pub loss: f64,
    /// Frames delivered twice.
    pub duplicate: f64,
    /// Frames held back for `reorder_hold`, so that later ones overtake them.
    pub reorder: f64,
    /// Frames with one byte of their transport segment changed.
    pub corrupt: f64,
    /// How long a reordered frame is held back.
    pub reorder_hold: Duration,
    /// Added to every frame's way through.
    pub delay: Duration,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            reorder_hold: Duration::from_millis(2),
            delay: Duration::ZERO,
        }
    }
}

impl Faults {
    /// Whether this direction injects nothing.
    pub fn is_none(&self) -> bool {
        self.loss <= 0.0
            && self.duplicate <= 0.0
            && self.reorder <= 0.0
            && self.corrupt <= 0.0
            && self.delay.is_zero()
    }
}

/// Faults for both ports of the pipeline, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultPlan {
    /// Seed of the decisions (each device of each worker derives its own).
    pub seed: u64,
    /// Frames arriving on the LAN port.
    pub lan_in: Faults,
    /// Frames leaving by the LAN port.
    pub lan_out: Faults,
    /// Frames arriving on the WAN port.
    pub wan_in: Faults,
    /// Frames leaving by the WAN port.
    pub wan_out: Faults,
}

impl FaultPlan {
    /// Whether the plan injects anything at all.
    pub fn is_none(&self) -> bool {
        [self.lan_in, self.lan_out, self.wan_in, self.wan_out]
            .iter()
            .all(Faults::is_none)
    }
}

/// A frame held back, with when it is due and how it was to travel.
struct HeldFrame {
    due: Instant,
    frame: Vec<u8>,
    meta: RxMeta,
    tag: Option<VlanTag>,
}

/// Frames held back, ordered by due time (ties in arrival order).
#[derive(Default)]
struct HoldQueue(Vec<HeldFrame>);

impl HoldQueue {
    fn push(&mut self, h: HeldFrame) {
        let at = self.0.partition_point(|x| x.due <= h.due);
        self.0.insert(at, h);
    }

    fn pop_due(&mut self, now: Instant) -> Option<HeldFrame> {
        if self.0.first().is_some_and(|h| h.due <= now) {
            Some(self.0.remove(0))
        } else {
            None
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.0.first().map(|h| h.due)
    }
}

/// What to do with one copy of a frame.
#[derive(Clone, Copy)]
enum Fate {
    /// Pass it on now, unchanged.
    Now,
    /// Pass on a changed copy (corrupted), or hold a copy until `due`.
    Copy { corrupt: bool, due: Option<Instant> },
}

/// The per-direction decision state.
struct Direction {
    faults: Faults,
    held: HoldQueue,
}

impl Direction {
    fn new(faults: Faults) -> Direction {
        Direction {
            faults,
            held: HoldQueue::default(),
        }
    }

    /// The fates of the copies of one frame (none when it is lost).
    fn decide(&self, rng: &mut StdRng, now: Instant, counts: &mut Injected) -> [Option<Fate>; 2] {
        let f = &self.faults;
        if f.is_none() {
            return [Some(Fate::Now), None];
        }
        let hit = |rng: &mut StdRng, p: f64| p > 0.0 && rng.gen_bool(p.min(1.0));
        if hit(rng, f.loss) {
            counts.lost += 1;
            return [None, None];
        }
        let mut one = |rng: &mut StdRng| {
            let corrupt = hit(rng, f.corrupt);
            let reorder = hit(rng, f.reorder);
            if reorder {
                counts.reordered += 1;
            }
            let hold = f.delay
                + if reorder {
                    f.reorder_hold
                } else {
                    Duration::ZERO
                };
            if !corrupt && hold.is_zero() {
                Fate::Now
            } else {
                Fate::Copy {
                    corrupt,
                    due: (!hold.is_zero()).then(|| now + hold),
                }
            }
        };
        let first = one(rng);
        let second = if hit(rng, f.duplicate) {
            counts.duplicated += 1;
            Some(one(rng))
        } else {
            None
        };
        [Some(first), second]
    }
}

/// A device with faults injected into what it receives and transmits.
pub struct FaultyDevice<D: Device> {
    inner: D,
    rng: StdRng,
    rx: Direction,
    tx: Direction,
    injected: Injected,
}

impl<D: Device> FaultyDevice<D> {
    /// Wraps `inner`: `rx` applies to the frames it receives, `tx` to those
    /// sent through it; `seed` makes the decisions repeatable.
    pub fn new(inner: D, rx: Faults, tx: Faults, seed: u64) -> FaultyDevice<D> {
        FaultyDevice {
            inner,
            rng: StdRng::seed_from_u64(seed),
            rx: Direction::new(rx),
            tx: Direction::new(tx),
            injected: Injected::default(),
        }
    }

    /// Sends the transmit frames that are due.
    fn release_tx(&mut self, now: Instant) -> io::Result<()> {
        while let Some(h) = self.tx.held.pop_due(now) {
            self.send_inner(&h.frame, h.tag, &h.meta.offload)?;
        }
        Ok(())
    }

    /// Hands one frame to the wrapped device, tagged or not.
    fn send_inner(
        &mut self,
        frame: &[u8],
        tag: Option<VlanTag>,
        offload: &Offload,
    ) -> io::Result<()> {
        match tag {
            Some(tag) => self.inner.send_tagged(frame, tag, offload),
            None => self.inner.send(frame, offload),
        }
    }

    /// Sends `frame` through the transmit faults (tagged or not).
    fn send_faulty(
        &mut self,
        frame: &[u8],
        tag: Option<VlanTag>,
        offload: &Offload,
    ) -> io::Result<()> {
        let now = Instant::now();
        let medium = self.inner.medium();
        let fates = self.tx.decide(&mut self.rng, now, &mut self.injected);
        for fate in fates.into_iter().flatten() {
            match fate {
                Fate::Now => self.send_inner(frame, tag, offload)?,
                Fate::Copy { corrupt, due } => {
                    let mut copy = frame.to_vec();
                    let mut offload = *offload;
                    if corrupt && corrupt_frame(&mut copy, medium, &mut offload, &mut self.rng) {
                        self.injected.corrupted += 1;
                    }
                    match due {
                        Some(due) => self.tx.held.push(HeldFrame {
                            due,
                            frame: copy,
                            meta: RxMeta {
                                vlan: None,
                                offload,
                            },
                            tag,
                        }),
                        None => self.send_inner(&copy, tag, &offload)?,
                    }
                }
            }
        }
        Ok(())
    }
}

impl<D: Device> Device for FaultyDevice<D> {
    fn medium(&self) -> Medium {
        self.inner.medium()
    }

    fn recv<F: FnMut(&mut [u8], RxMeta)>(&mut self, budget: usize, mut f: F) -> io::Result<usize> {
        let now = Instant::now();
        let medium = self.inner.medium();
        let mut n = 0;
        while let Some(mut h) = self.rx.held.pop_due(now) {
            f(&mut h.frame, h.meta);
            n += 1;
        }
        let (rng, rx, injected) = (&mut self.rng, &mut self.rx, &mut self.injected);
        n += self.inner.recv(budget, |frame, meta| {
            let fates = rx.decide(rng, now, injected);
            for (i, fate) in fates.into_iter().enumerate() {
                let Some(fate) = fate else { continue };
                // `f` may rewrite the frame in place: a duplicate still to
                // come gets the frame as it arrived.
                let last = fates[i + 1..].iter().all(Option::is_none);
                match fate {
                    Fate::Now if last => f(frame, meta),
                    Fate::Now => f(&mut frame.to_vec(), meta),
                    Fate::Copy { corrupt, due } => {
                        let mut copy = frame.to_vec();
                        let mut meta = meta;
                        if corrupt && corrupt_frame(&mut copy, medium, &mut meta.offload, rng) {
                            injected.corrupted += 1;
                        }
                        match due {
                            Some(due) => rx.held.push(HeldFrame {
                                due,
                                frame: copy,
                                meta,
                                tag: None,
                            }),
                            None => f(&mut copy, meta),
                        }
                    }
                }
            }
        })?;
        Ok(n)
    }

    fn send(&mut self, frame: &[u8], offload: &Offload) -> io::Result<()> {
        if self.tx.faults.is_none() {
            return self.inner.send(frame, offload);
        }
        self.send_faulty(frame, None, offload)
    }

    fn send_tagged(&mut self, frame: &[u8], tag: VlanTag, offload: &Offload) -> io::Result<()> {
        if self.tx.faults.is_none() {
            return self.inner.send_tagged(frame, tag, offload);
        }
        self.send_faulty(frame, Some(tag), offload)
    }

    fn send_segment(&mut self, frame: &[u8], offload: &Offload) -> io::Result<bool> {
        if self.tx.faults.is_none() {
            return self.inner.send_segment(frame, offload);
        }
        // Each segment meets its own fate: no merging.
        self.send_faulty(frame, None, offload).map(|()| false)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.release_tx(Instant::now())?;
        self.inner.flush()
    }

    fn tx_dropped(&self) -> u64 {
        self.inner.tx_dropped()
    }

    fn rx_dropped(&mut self) -> u64 {
        self.inner.rx_dropped()
    }

    fn fd(&self) -> RawFd {
        self.inner.fd()
    }

    fn next_due(&self) -> Option<Instant> {
        match (self.rx.held.next_due(), self.tx.held.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn faults(&self) -> Injected {
        self.injected
    }
}

/// Changes one byte of the frame's TCP segment and marks its checksum as
/// unverified (completing a partial one first), so that the receiver's
/// check fails. Returns whether it did: super-frames and frames that are
/// not plain IPv4/IPv6 TCP are left unchanged.
fn corrupt_frame(
    frame: &mut [u8],
    medium: Medium,
    offload: &mut Offload,
    rng: &mut StdRng,
) -> bool {
    if offload.is_gso() {
        return false;
    }
    let l2 = match medium {
        Medium::Ethernet => 14,
        Medium::Ip => 0,
    };
    let Some(packet) = frame.get_mut(l2..) else {
        return false;
    };
    let Some((off, len, _)) = crate::tcp::checksum::tcp_span(packet) else {
        return false;
    };
    if offload.flags & Offload::NEEDS_CSUM != 0 {
        crate::tcp::checksum::fill_tcp_checksum(packet);
    }
    offload.flags = 0;
    offload.csum_start = 0;
    offload.csum_offset = 0;
    let at = off + rng.gen_range(0..len);
    packet[at] ^= rng.gen_range(1..=255u8);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A device over queues: `rx` is received, sends land in `sent`.
    #[derive(Default)]
    struct Mem {
        rx: VecDeque<Vec<u8>>,
        sent: Vec<Vec<u8>>,
    }

    impl Device for Mem {
        fn medium(&self) -> Medium {
            Medium::Ip
        }
        fn recv<F: FnMut(&mut [u8], RxMeta)>(
            &mut self,
            budget: usize,
            mut f: F,
        ) -> io::Result<usize> {
            let mut n = 0;
            while n < budget {
                let Some(mut p) = self.rx.pop_front() else {
                    break;
                };
                f(&mut p, RxMeta::default());
                n += 1;
            }
            Ok(n)
        }
        fn send(&mut self, frame: &[u8], _: &Offload) -> io::Result<()> {
            self.sent.push(frame.to_vec());
            Ok(())
        }
        fn send_tagged(&mut self, frame: &[u8], _: VlanTag, o: &Offload) -> io::Result<()> {
            self.send(frame, o)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn tx_dropped(&self) -> u64 {
            0
        }
        fn fd(&self) -> RawFd {
            -1
        }
    }

    /// An IPv4/TCP packet whose payload is `n` as 4 bytes, checksums filled.
    fn packet(n: u32) -> Vec<u8> {
        let (c, s) = (([192, 0, 2, 10], 40000), ([203, 0, 113, 10], 443));
        let mut p =
            crate::testkit::packets::ipv4_tcp_full(c, s, 0x18, (0, 0), 0, &[], &n.to_be_bytes());
        crate::tcp::fill_checksums(&mut p);
        p
    }

    fn id(p: &[u8]) -> u32 {
        u32::from_be_bytes([p[40], p[41], p[42], p[43]])
    }

    fn receive_all(d: &mut FaultyDevice<Mem>) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            d.recv(usize::MAX, |p, _| got.push(p.to_vec())).unwrap();
            if d.inner.rx.is_empty() && d.next_due().is_none() {
                return got;
            }
            assert!(Instant::now() < deadline, "held frames never came due");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn faulty(rx: Faults, n: u32, seed: u64) -> FaultyDevice<Mem> {
        let mut mem = Mem::default();
        mem.rx.extend((0..n).map(packet));
        FaultyDevice::new(mem, rx, Faults::default(), seed)
    }

    #[test]
    fn no_faults_pass_every_frame_in_order() {
        let mut d = faulty(Faults::default(), 100, 1);
        let got: Vec<u32> = receive_all(&mut d).iter().map(|p| id(p)).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(d.faults(), Injected::default());
    }

    #[test]
    fn loss_duplication_and_reordering_are_counted_and_seeded() {
        let f = Faults {
            loss: 0.05,
            duplicate: 0.01,
            reorder: 0.05,
            ..Faults::default()
        };
        let mut a = faulty(f, 10_000, 7);
        let got: Vec<u32> = receive_all(&mut a).iter().map(|p| id(p)).collect();
        let inj = a.faults();
        assert_eq!(got.len() as u64, 10_000 - inj.lost + inj.duplicated);
        assert!((350..=650).contains(&inj.lost), "{inj:?}");
        assert!((50..=150).contains(&inj.duplicated), "{inj:?}");
        assert!(inj.reordered > 300, "{inj:?}");
        let out_of_order = got.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(out_of_order > 0, "nothing overtook a held frame");
        // The same seed, the same frames: the same decisions.
        let mut b = faulty(f, 10_000, 7);
        let mut seen: Vec<u32> = receive_all(&mut b).iter().map(|p| id(p)).collect();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        seen.sort_unstable();
        assert_eq!(seen, sorted);
        assert_eq!(b.faults(), inj);
    }

    #[test]
    fn a_corrupted_frame_fails_its_checksum_and_is_marked_unverified() {
        let f = Faults {
            corrupt: 1.0,
            ..Faults::default()
        };
        let mut d = faulty(f, 200, 3);
        let mut got = Vec::new();
        d.recv(usize::MAX, |p, m| got.push((p.to_vec(), m)))
            .unwrap();
        assert_eq!(got.len(), 200);
        for (p, m) in &got {
            assert!(!m.offload.checksum_trusted());
            assert!(!crate::tcp::checksum::tcp_checksum_ok(p), "{p:?}");
            assert_eq!(&p[..20], &packet(0)[..20], "the IP header is untouched");
        }
        assert_eq!(d.faults().corrupted, 200);
    }

    #[test]
    fn transmit_faults_hold_frames_until_flush_after_their_delay() {
        let f = Faults {
            delay: Duration::from_millis(5),
            ..Faults::default()
        };
        let mut d = FaultyDevice::new(Mem::default(), Faults::default(), f, 1);
        for i in 0..10 {
            d.send(&packet(i), &Offload::default()).unwrap();
        }
        d.flush().unwrap();
        assert!(d.inner.sent.is_empty(), "delayed frames left at once");
        assert!(d.next_due().is_some());
        std::thread::sleep(Duration::from_millis(6));
        d.flush().unwrap();
        let ids: Vec<u32> = d.inner.sent.iter().map(|p| id(p)).collect();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
        assert!(d.next_due().is_none());
    }
}
