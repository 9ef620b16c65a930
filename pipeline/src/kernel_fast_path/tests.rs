use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::flow::PROTO_TCP;

/// An in-memory map with the kernel's behaviours that matter: a capacity
/// (E2BIG when full) and a clock the test moves.
#[derive(Default)]
struct MemMap {
    entries: Mutex<std::collections::HashMap<MapKey, MapValue>>,
    max: usize,
    now: AtomicU64,
}

impl MemMap {
    fn new(max: usize) -> Arc<MemMap> {
        Arc::new(MemMap {
            max,
            now: AtomicU64::new(1_000),
            ..MemMap::default()
        })
    }
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
    fn advance(&self, d: Duration) {
        self.now.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    /// What the tc program does for one frame of `len` bytes.
    fn redirect(&self, key: &MapKey, len: u64) -> bool {
        let mut e = self.entries.lock().unwrap();
        match e.get_mut(key) {
            Some(v) if v.action == MapValue::FORWARD => {
                v.last_seen_ns = self.now.load(Ordering::Relaxed);
                v.packets += 1;
                v.bytes += len;
                true
            }
            _ => false,
        }
    }
}

impl FlowMap for MemMap {
    fn insert(&self, key: &MapKey, value: &MapValue) -> Result<(), InsertError> {
        let mut e = self.entries.lock().unwrap();
        if !e.contains_key(key) && e.len() >= self.max {
            return Err(InsertError::Full);
        }
        e.insert(*key, *value);
        Ok(())
    }
    fn get(&self, key: &MapKey) -> Option<MapValue> {
        self.entries.lock().unwrap().get(key).copied()
    }
    fn remove(&self, key: &MapKey) {
        self.entries.lock().unwrap().remove(key);
    }
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
}

const IDLE: Duration = Duration::from_secs(300);
const SYN: TcpFlags = TcpFlags(TcpFlags::SYN);
const SYN_ACK: TcpFlags = TcpFlags(TcpFlags::SYN | TcpFlags::ACK);
const ACK: TcpFlags = TcpFlags(TcpFlags::ACK);
const FIN_ACK: TcpFlags = TcpFlags(TcpFlags::FIN | TcpFlags::ACK);
const RST: TcpFlags = TcpFlags(TcpFlags::RST);

struct Conn {
    key: FlowKey,
    client: (IpAddr, u16),
    server: (IpAddr, u16),
}

fn conn(port: u16) -> Conn {
    let c = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
    let s = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    Conn {
        key: FlowKey::new(PROTO_TCP, c, port, s, 80),
        client: (c, port),
        server: (s, 80),
    }
}

fn fwd(c: &Conn) -> MapKey {
    MapKey::tcp(c.client.0, c.client.1, c.server.0, c.server.1).unwrap()
}

/// SYN from the client (ISN 100), SYN-ACK from the server acking it.
fn open(k: &mut KernelFastPath, c: &Conn, n: &mut Counters) {
    k.on_syn(c.key, c.client, c.server, 100, n);
    k.on_segment(c.key, c.server, c.client, SYN_ACK, 101, n);
}

#[test]
fn map_keys_are_what_the_program_builds() {
    let k = MapKey::tcp(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20)),
        0x1234,
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
        443,
    )
    .unwrap();
    let mut want = [0u8; 40];
    want[0] = 4;
    want[1] = 6;
    want[4..8].copy_from_slice(&[0x12, 0x34, 0x01, 0xbb]);
    want[8..12].copy_from_slice(&[192, 0, 2, 20]);
    want[24..28].copy_from_slice(&[203, 0, 113, 10]);
    assert_eq!(k.0, want);
    assert_eq!(k.reverse().reverse(), k);
    assert_eq!(&k.reverse().0[4..8], &[0x01, 0xbb, 0x12, 0x34]);
    let v6 = MapKey::tcp(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        1,
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
        2,
    )
    .unwrap();
    assert_eq!(v6.0[0], 6);
    assert_eq!(&v6.0[8..10], &[0x20, 0x01]);
    assert_eq!(v6.0[39], 2);
    assert!(MapKey::tcp(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        1,
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        2
    )
    .is_none());
    let v = MapValue {
        last_seen_ns: 7,
        packets: 8,
        bytes: 9,
        action: MapValue::FORWARD,
    };
    assert_eq!(MapValue::from_bytes(&v.to_bytes()), v);
    assert_eq!(
        &v.to_bytes()[MapValue::ACTION..MapValue::ACTION + 4],
        &1u32.to_ne_bytes()
    );
}

#[test]
fn listed_at_the_syn_ack_and_ended_after_both_fins() {
    let map = MemMap::new(100);
    let mut k = KernelFastPath::new(map.clone(), 10, IDLE);
    let mut n = Counters::default();
    let c = conn(40000);
    k.on_syn(c.key, c.client, c.server, 100, &mut n);
    assert_eq!(map.len(), 0, "not at the SYN");
    // A SYN-ACK that does not acknowledge the SYN lists nothing.
    k.on_segment(c.key, c.server, c.client, SYN_ACK, 555, &mut n);
    assert_eq!(map.len(), 0);
    k.on_segment(c.key, c.server, c.client, SYN_ACK, 101, &mut n);
    assert_eq!(map.len(), 2, "both directions");
    assert_eq!(n.kernel_flows_listed, 1);
    assert!(map.redirect(&fwd(&c), 1500));
    assert!(map.redirect(&fwd(&c).reverse(), 66));
    // A FIN from one side keeps it listed; the other side's FIN ends it.
    k.on_segment(c.key, c.client, c.server, FIN_ACK, 0, &mut n);
    k.on_segment(c.key, c.client, c.server, FIN_ACK, 0, &mut n);
    assert_eq!(map.len(), 2, "one side's FIN (even twice) is half a close");
    k.on_segment(c.key, c.server, c.client, FIN_ACK, 0, &mut n);
    assert_eq!(map.len(), 0);
    assert_eq!(k.listed(), 0);
    assert_eq!((n.kernel_packets, n.kernel_bytes), (2, 1566));
    assert_eq!(n.kernel_flows_ended, 1);
    // The final ACK finds nothing, and the same ports open again.
    k.on_segment(c.key, c.client, c.server, ACK, 0, &mut n);
    open(&mut k, &c, &mut n);
    assert_eq!(map.len(), 2);
    assert_eq!(n.kernel_flows_listed, 2);
}

#[test]
fn a_syn_ack_without_a_lan_syn_lists_nothing() {
    let map = MemMap::new(100);
    let mut k = KernelFastPath::new(map.clone(), 10, IDLE);
    let mut n = Counters::default();
    let c = conn(40001);
    k.on_segment(c.key, c.server, c.client, SYN_ACK, 101, &mut n);
    // The SYN-ACK must come from the server: one "from" the client is not it.
    k.on_syn(c.key, c.client, c.server, 100, &mut n);
    k.on_segment(c.key, c.client, c.server, SYN_ACK, 101, &mut n);
    assert_eq!(map.len(), 0);
    assert!(!k.listed.contains_key(&c.key));
}

#[test]
fn rst_and_a_new_syn_end_a_flow() {
    let map = MemMap::new(100);
    let mut k = KernelFastPath::new(map.clone(), 10, IDLE);
    let mut n = Counters::default();
    let c = conn(40002);
    open(&mut k, &c, &mut n);
    k.on_segment(c.key, c.server, c.client, RST, 0, &mut n);
    assert_eq!(map.len(), 0);
    open(&mut k, &c, &mut n);
    assert_eq!(map.len(), 2);
    // A new initial SYN on the same ports (seen on the user-space path: SYNs are never redirected).
    k.on_segment(c.key, c.client, c.server, SYN, 0, &mut n);
    assert_eq!(map.len(), 0);
    assert_eq!(n.kernel_flows_ended, 2);
    open(&mut k, &c, &mut n);
    k.on_syn(c.key, c.client, c.server, 900, &mut n);
    assert_eq!(map.len(), 0, "on_syn supersedes a listed flow as well");
}

#[test]
fn idle_flows_expire_and_busy_ones_stay() {
    let map = MemMap::new(100);
    let mut k = KernelFastPath::new(map.clone(), 10, Duration::from_secs(10));
    let mut n = Counters::default();
    let (busy, quiet) = (conn(40003), conn(40004));
    open(&mut k, &busy, &mut n);
    open(&mut k, &quiet, &mut n);
    // A SYN never answered is forgotten too.
    let lone = conn(40005);
    k.on_syn(lone.key, lone.client, lone.server, 1, &mut n);
    for _ in 0..4 {
        map.advance(Duration::from_secs(3));
        assert!(map.redirect(&fwd(&busy), 100));
        k.housekeep(&mut n);
    }
    assert_eq!(k.listed(), 1);
    assert_eq!(map.len(), 2);
    assert!(map.get(&fwd(&busy)).is_some());
    assert!(k.opening.is_empty());
    assert_eq!(n.kernel_ended_idle, 1);
    assert_eq!(n.kernel_packets, 4, "read at each scan, counted once");
    assert_eq!(n.kernel_bytes, 400);
    k.finish(&mut n);
    assert_eq!(map.len(), 0);
    assert_eq!(n.kernel_flows_ended, 2);
}

#[test]
fn beyond_the_cap_or_a_full_map_flows_stay_in_user_space() {
    let map = MemMap::new(3);
    let mut k = KernelFastPath::new(map.clone(), 2, IDLE);
    let mut n = Counters::default();
    let (a, b, c) = (conn(1), conn(2), conn(3));
    open(&mut k, &a, &mut n);
    open(&mut k, &b, &mut n);
    // The second flow's reverse entry did not fit: its first one is taken back.
    assert_eq!(n.kernel_map_full, 1);
    assert_eq!(map.len(), 2);
    assert_eq!(k.listed(), 1);
    open(&mut k, &c, &mut n);
    assert_eq!(n.kernel_map_full, 2);
    k.on_syn(conn(4).key, conn(4).client, conn(4).server, 1, &mut n);
    k.on_syn(conn(5).key, conn(5).client, conn(5).server, 1, &mut n);
    assert_eq!(n.kernel_over_cap, 1);
}

#[test]
fn the_scan_reads_a_bounded_number_per_call_and_visits_all() {
    let map = MemMap::new(usize::MAX);
    let flows = SCAN_BUDGET + 100;
    let mut k = KernelFastPath::new(map.clone(), flows, Duration::from_secs(10));
    let mut n = Counters::default();
    for p in 0..flows {
        open(&mut k, &conn(p as u16 + 1), &mut n);
    }
    map.advance(Duration::from_secs(11));
    k.housekeep(&mut n);
    assert_eq!(k.listed(), 100);
    k.housekeep(&mut n);
    assert_eq!(k.listed(), 0);
    assert_eq!(map.len(), 0);
    assert!(k.scan.is_empty());
}

/// An Ethernet/IPv4/TCP frame (no checksums: the programs do not check them).
fn v4_frame(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    ihl: u8,
    frag: u16,
) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let opt = usize::from(ihl - 5) * 4;
    let mut ip = vec![0u8; 20 + opt];
    ip[0] = 0x40 | ihl;
    ip[2..4].copy_from_slice(&((20 + opt + 20 + 100) as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    f.extend_from_slice(&tcp);
    f.extend_from_slice(&[0xab; 100]);
    f
}

fn v6_frame(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, next: u8, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&120u16.to_be_bytes());
    ip[6] = next;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    f.extend_from_slice(&tcp);
    f.extend_from_slice(&[0xcd; 100]);
    f
}

/// The programs in the real kernel (root only): the verifier accepts them,
/// and over crafted frames (`BPF_PROG_TEST_RUN`) they redirect and skip
/// exactly the listed directions' segments without SYN/FIN/RST, count them
/// in the map, and pass everything else.
#[test]
fn the_kernel_accepts_the_programs_and_they_pick_the_listed_segments() {
    use crate::io::bpf::{BpfProgram, ProgramType};
    use program::{build, to_bytes, Hook};
    if !crate::io::bpf::is_root() {
        eprintln!("skipped: needs root (bpf(2))");
        return;
    }
    let map = KernelMap::create("test_flows", 16).expect("map");
    let tc = BpfProgram::load(
        ProgramType::SchedCls,
        "test_tc",
        &to_bytes(&build(Hook::TcIngress { to_ifindex: 1 }, map.fd())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let filter = BpfProgram::load(
        ProgramType::SocketFilter,
        "test_filter",
        &to_bytes(&build(Hook::SocketFilter, map.fd())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (c, s) = ([192, 0, 2, 20], [203, 0, 113, 10]);
    let key = MapKey::tcp(
        IpAddr::V4(Ipv4Addr::from(c)),
        40000,
        IpAddr::V4(Ipv4Addr::from(s)),
        443,
    )
    .unwrap();
    map.insert(&key, &MapValue::forward(0)).unwrap();
    let (c6, s6) = (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10),
    );
    let key6 = MapKey::tcp(IpAddr::V6(c6), 40000, IpAddr::V6(s6), 443).unwrap();
    map.insert(&key6, &MapValue::forward(0)).unwrap();
    // An entry with another action is not forwarded.
    let other = MapKey::tcp(
        IpAddr::V4(Ipv4Addr::from(c)),
        40001,
        IpAddr::V4(Ipv4Addr::from(s)),
        443,
    )
    .unwrap();
    map.insert(
        &other,
        &MapValue {
            action: 0,
            ..MapValue::default()
        },
    )
    .unwrap();
    const TC_ACT_REDIRECT: u32 = 7;
    let run = |f: &[u8]| {
        let tc = tc
            .test_run(f)
            .unwrap_or_else(|e| panic!("tc, {} bytes: {e}", f.len()));
        let mut shifted = vec![0u8; 14];
        shifted.extend_from_slice(f);
        let copy = filter
            .test_run(&shifted)
            .unwrap_or_else(|e| panic!("filter, {} bytes: {e}", f.len()));
        (tc, copy)
    };
    let ack = TcpFlags::ACK;
    let listed = v4_frame(c, 40000, s, 443, ack | 0x08, 5, 0x4000);
    assert_eq!(run(&listed), (TC_ACT_REDIRECT, 0), "listed, DF set");
    let v = map.get(&key).unwrap();
    assert_eq!((v.packets, v.bytes), (1, listed.len() as u64));
    assert!(v.last_seen_ns > 0);
    assert_eq!(
        run(&v6_frame(c6, 40000, s6, 443, 6, ack)),
        (TC_ACT_REDIRECT, 0)
    );
    assert_eq!(map.get(&key6).unwrap().packets, 1);
    let passed = [
        (
            "reverse direction not listed",
            v4_frame(s, 443, c, 40000, ack, 5, 0),
        ),
        ("SYN", v4_frame(c, 40000, s, 443, TcpFlags::SYN, 5, 0)),
        ("FIN", v4_frame(c, 40000, s, 443, ack | TcpFlags::FIN, 5, 0)),
        ("RST", v4_frame(c, 40000, s, 443, TcpFlags::RST, 5, 0)),
        ("IP options", v4_frame(c, 40000, s, 443, ack, 6, 0)),
        ("more fragments", v4_frame(c, 40000, s, 443, ack, 5, 0x2000)),
        (
            "fragment offset",
            v4_frame(c, 40000, s, 443, ack, 5, 0x0001),
        ),
        ("other action", v4_frame(c, 40001, s, 443, ack, 5, 0)),
        (
            "IPv6 extension header",
            v6_frame(c6, 40000, s6, 443, 0, ack),
        ),
        (
            "IPv6 FIN",
            v6_frame(c6, 40000, s6, 443, 6, ack | TcpFlags::FIN),
        ),
    ];
    for (what, f) in &passed {
        assert_eq!(run(f), (0, u32::MAX), "{what}");
    }
    // Short frames: every prefix of a listed frame the test run takes
    // (it refuses those without a whole IPv4 header) is passed whole while
    // its headers are cut, and picked once they are complete.
    let mut ran = 0;
    for n in 14..listed.len() {
        let Ok(tc_r) = tc.test_run(&listed[..n]) else {
            assert!(n < 34, "test run refused {n} bytes");
            continue;
        };
        ran += 1;
        let mut shifted = vec![0u8; 14];
        shifted.extend_from_slice(&listed[..n]);
        let copy = filter.test_run(&shifted).unwrap();
        if n < 54 {
            assert_eq!((tc_r, copy), (0, u32::MAX), "prefix {n}");
        } else {
            assert_eq!((tc_r, copy), (TC_ACT_REDIRECT, 0), "prefix {n}");
        }
    }
    assert!(ran >= listed.len() - 34);
    let mut vlan = listed.clone();
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    assert_eq!(run(&vlan), (0, u32::MAX), "an 802.1Q tag in the frame");
    assert_eq!(map.get(&other).unwrap().packets, 0);
}

/// A program the verifier refuses comes back with the errno and the
/// verifier's own words (root only).
#[test]
fn a_refused_program_reports_the_verifier_log() {
    use crate::io::bpf::{BpfProgram, ProgramType};
    use program::{to_bytes, Asm, Reg, Size};
    if !crate::io::bpf::is_root() {
        eprintln!("skipped: needs root (bpf(2))");
        return;
    }
    // Reads R0 before anything wrote it.
    let mut a = Asm::new();
    a.load(Size::W, Reg::R0, Reg::R0, 0).exit();
    let e = BpfProgram::load(
        ProgramType::SocketFilter,
        "test_bad",
        &to_bytes(&a.finish().unwrap()),
    )
    .expect_err("the verifier refuses a read through an uninitialized register");
    assert_eq!(e.source.raw_os_error(), Some(libc::EACCES), "{e}");
    assert!(e.log.contains("R0 !read_ok"), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("test_bad") && text.contains("verifier log"),
        "{text}"
    );
}

/// The dispatcher's hooks: an out-of-scope connection from the LAN is
/// listed at its SYN-ACK and leaves at the FINs; an in-scope one, and one
/// opened from the WAN side, never are; every frame still takes its path
/// as without the kernel fast path.
#[test]
fn the_dispatcher_lists_out_of_scope_lan_connections_only() {
    use crate::classify::{ScopeSpec, ScopeTable};
    use crate::dispatch::{Clock, Dispatcher, FastKind, Path, Port};
    use crate::frame::parse_ethernet;
    use crate::io::RxMeta;
    use crate::testkit::packets as ft;
    use arc_swap::ArcSwap;
    use std::time::{Instant, SystemTime};

    let map = MemMap::new(100);
    let scopes = ScopeTable::compile(&[ScopeSpec {
        policy_id: "corp".into(),
        scope_id: "web".into(),
        source_ips: vec!["192.0.2.10".parse().unwrap()],
        source_ports: vec![],
        destinations: vec!["203.0.113.0/24".parse().unwrap()],
        destination_ports: vec![(443, 443)],
    }]);
    let t0 = Instant::now();
    let log = Arc::new(crate::testkit::MemLog::default());
    let mut d = Dispatcher::new(
        0,
        100,
        IDLE,
        Arc::new(ArcSwap::from_pointee(scopes)),
        log.clone(),
        Clock::new(t0, SystemTime::UNIX_EPOCH),
    )
    .with_kernel_fast_path(KernelFastPath::new(map.clone(), 100, IDLE));
    let mut feed = |side: Port,
                    src: [u8; 4],
                    sport: u16,
                    dst: [u8; 4],
                    dport: u16,
                    flags: u8,
                    seq: u32,
                    ack: u32| {
        let mut pkt = ft::ipv4_tcp_seq(src, sport, dst, dport, flags, seq, b"");
        pkt[28..32].copy_from_slice(&ack.to_be_bytes());
        let f = ft::ether(0x0800, &[], &pkt);
        d.on_ethernet(side, &f, parse_ethernet(&f), RxMeta::default(), t0)
    };
    let (out, inside, server) = ([192, 0, 2, 20], [192, 0, 2, 10], [203, 0, 113, 5]);
    let fast = Path::Fast(FastKind::Tcp);
    let (syn, syn_ack, ack, fin) = (
        TcpFlags::SYN,
        TcpFlags::SYN | TcpFlags::ACK,
        TcpFlags::ACK,
        TcpFlags::FIN | TcpFlags::ACK,
    );
    assert_eq!(feed(Port::Lan, out, 40000, server, 443, syn, 100, 0), fast);
    assert_eq!(map.len(), 0);
    assert_eq!(
        feed(Port::Wan, server, 443, out, 40000, syn_ack, 7000, 101),
        fast
    );
    assert_eq!(map.len(), 2);
    assert_eq!(
        feed(Port::Lan, out, 40000, server, 443, ack, 101, 7001),
        fast
    );
    assert_eq!(
        feed(Port::Lan, out, 40000, server, 443, fin, 101, 7001),
        fast
    );
    assert_eq!(
        feed(Port::Wan, server, 443, out, 40000, fin, 7001, 102),
        fast
    );
    assert_eq!(map.len(), 0);
    // In scope: tracked by the flow table, never listed.
    assert_eq!(
        feed(Port::Lan, inside, 40001, server, 443, syn, 100, 0),
        Path::InScope
    );
    assert_eq!(
        feed(Port::Wan, server, 443, inside, 40001, syn_ack, 7000, 101),
        Path::InScope
    );
    // Opened from the WAN side: not ours to list.
    assert_eq!(feed(Port::Wan, server, 5000, out, 22, syn, 1, 0), fast);
    assert_eq!(feed(Port::Lan, out, 22, server, 5000, syn_ack, 9, 2), fast);
    assert_eq!(map.len(), 0);
    assert_eq!(d.counters.kernel_flows_listed, 1);
    assert_eq!(d.counters.kernel_flows_ended, 1);
    assert_eq!(d.counters.flows_started, 1);
}

#[test]
fn a_syn_flood_costs_a_bounded_number_of_entries() {
    let map = MemMap::new(usize::MAX);
    let mut k = KernelFastPath::new(map.clone(), 1_000_000, IDLE);
    let mut n = Counters::default();
    let s = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    for i in 0..(MAX_OPENING as u32 + 1000) {
        let c = IpAddr::V4(Ipv4Addr::from(0xc000_0200 | (i >> 16)));
        let port = i as u16;
        let key = FlowKey::new(PROTO_TCP, c, port, s, 80);
        k.on_syn(key, (c, port), (s, 80), i, &mut n);
    }
    assert_eq!(k.opening.len(), MAX_OPENING);
    assert_eq!(n.kernel_over_cap, 1000);
    // Unanswered, they are forgotten after OPENING_TIMEOUT.
    map.advance(OPENING_TIMEOUT);
    k.housekeep(&mut n);
    assert!(k.opening.is_empty());
    assert_eq!(map.len(), 0);
}
