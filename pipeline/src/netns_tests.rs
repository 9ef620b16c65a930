//! End-to-end tests of the pipeline in network namespaces the tests create.
//!
//! Topology (AF_PACKET): client ns `c0` 192.0.2.1/24 ─ veth ─ `alan` [appliance
//! ns] `awan` ─ veth ─ `s0` 192.0.2.254/24 in the server ns, which also holds
//! 203.0.113.10 (the client routes 203.0.113.0/24 via 192.0.2.254). The
//! appliance bridges `alan` and `awan`; client and server are real kernel
//! TCP/UDP stacks driven by threads that entered the namespaces. Requires
//! root and iproute2/ethtool; every namespace is removed on drop, also when
//! an assertion fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::classify::{ScopeSpec, ScopeTable};
use crate::io::afpacket::{RingConfig, RingVersion};
use crate::io::enter_netns;
use crate::run::{DeviceMode, Pipeline, PipelineConfig};
use crate::testkit::MemLog;

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends a VLAN 100 tagged frame from the client's port and checks it leaves
/// the appliance on the server's port still tagged (in its bytes, or as the
/// tag the receiving kernel stripped into the ring header).
fn vlan_probe(lab: &Lab) {
    use crate::io::afpacket::{AfPacket, Fanout};
    use crate::io::Device;
    // The probe's own sockets use the V3 layout, the appliance's the default.
    let ring = RingConfig {
        version: RingVersion::V3,
        block_size: 65536,
        block_count: 4,
        retire_ms: 1,
        frame_size: 2048,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rx = in_ns(&lab.s, move || {
        let mut dev = AfPacket::open("s0", ring, Fanout::None, &[]).unwrap();
        ready_tx.send(()).unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let mut found = None;
            dev.recv(64, |f, meta| {
                if f.windows(10).any(|w| w == b"vlan-probe") {
                    let in_bytes =
                        (f.len() > 16 && f[12..16] == [0x81, 0x00, 0x00, 100]).then_some(100);
                    found = Some(meta.vlan.map(|v| v.tci & 0x0fff).or(in_bytes));
                }
            })
            .unwrap();
            if let Some(tag) = found {
                return tag;
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!("tagged probe frame never reached the server port")
    });
    ready_rx.recv().unwrap();
    in_ns(&lab.c, move || {
        let mut dev = AfPacket::open("c0", ring, Fanout::None, &[]).unwrap();
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0x11, 0x81, 0x00, 0x00, 100, 0x88, 0xb5]);
        f.extend_from_slice(b"vlan-probe");
        f.resize(64, 0);
        for _ in 0..3 {
            dev.send(&f, &crate::io::Offload::default()).unwrap();
            dev.flush().unwrap();
            thread::sleep(Duration::from_millis(20));
        }
    })
    .join()
    .unwrap();
    assert_eq!(rx.join().unwrap(), Some(100), "VLAN tag lost on forward");
}

/// Namespaces removed on drop.
pub(crate) struct Lab {
    pub(crate) c: String,
    pub(crate) a: String,
    pub(crate) s: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.c, &self.a, &self.s] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Lab {
    fn x(&self, ns: &str, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// Client ─ appliance (two bare ports) ─ server.
    pub(crate) fn bridged(tag: &str) -> Lab {
        let lab = Lab::namespaces(tag);
        sh(&[
            "ip", "link", "add", "c0", "netns", &lab.c, "type", "veth", "peer", "name", "alan",
            "netns", &lab.a,
        ]);
        sh(&[
            "ip", "link", "add", "awan", "netns", &lab.a, "type", "veth", "peer", "name", "s0",
            "netns", &lab.s,
        ]);
        // The appliance's ports carry no addresses and send nothing themselves.
        lab.x(
            &lab.a,
            &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
        );
        lab.x(
            &lab.a,
            &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
        );
        for port in ["alan", "awan"] {
            lab.x(&lab.a, &["ip", "link", "set", port, "up"]);
            lab.x(&lab.a, &["ethtool", "-K", port, "gro", "off", "lro", "off"]);
        }
        lab.x(&lab.c, &["ip", "link", "set", "lo", "up"]);
        lab.x(&lab.c, &["ip", "addr", "add", "192.0.2.1/24", "dev", "c0"]);
        lab.x(&lab.c, &["ip", "link", "set", "c0", "up"]);
        lab.x(&lab.c, &["ethtool", "-K", "c0", "tx", "off"]);
        lab.x(
            &lab.c,
            &["ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.254"],
        );
        lab.x(&lab.s, &["ip", "link", "set", "lo", "up"]);
        lab.x(
            &lab.s,
            &["ip", "addr", "add", "203.0.113.10/32", "dev", "lo"],
        );
        lab.x(
            &lab.s,
            &["ip", "addr", "add", "192.0.2.254/24", "dev", "s0"],
        );
        lab.x(&lab.s, &["ip", "link", "set", "s0", "up"]);
        lab.x(&lab.s, &["ethtool", "-K", "s0", "tx", "off"]);
        lab
    }
}

impl Lab {
    fn namespaces(tag: &str) -> Lab {
        let p = format!("tpp{}{tag}", std::process::id());
        let lab = Lab {
            c: format!("{p}c"),
            a: format!("{p}a"),
            s: format!("{p}s"),
        };
        for ns in [&lab.c, &lab.a, &lab.s] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
        }
        lab
    }

    /// Client ─ router with two multi-queue TUNs in the forwarding path ─ server.
    ///
    /// Policy routing in the appliance namespace sends what arrives from the
    /// client into `tlan`, what the appliance writes into `twan` on to the
    /// server, and the reverse likewise (`aser` → `twan`, `tlan` → `alan`).
    pub(crate) fn routed(tag: &str) -> Lab {
        let lab = Lab::namespaces(tag);
        let (c, a, s) = (&lab.c, &lab.a, &lab.s);
        sh(&[
            "ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "alan", "netns",
            a,
        ]);
        sh(&[
            "ip", "link", "add", "aser", "netns", a, "type", "veth", "peer", "name", "s0", "netns",
            s,
        ]);
        for kv in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ] {
            lab.x(a, &["sysctl", "-qw", kv]);
        }
        for t in ["tlan", "twan"] {
            lab.x(
                a,
                &[
                    "ip",
                    "tuntap",
                    "add",
                    "dev",
                    t,
                    "mode",
                    "tun",
                    "multi_queue",
                ],
            );
            lab.x(a, &["ip", "link", "set", t, "up"]);
        }
        lab.x(a, &["ip", "addr", "add", "192.0.2.254/24", "dev", "alan"]);
        lab.x(a, &["ip", "addr", "add", "198.51.100.1/24", "dev", "aser"]);
        for i in ["alan", "aser"] {
            lab.x(a, &["ip", "link", "set", i, "up"]);
            lab.x(
                a,
                &["sysctl", "-qw", &format!("net.ipv4.conf.{i}.rp_filter=0")],
            );
        }
        for (iif, table, route) in [
            ("alan", "101", vec!["default", "dev", "tlan"]),
            (
                "twan",
                "102",
                vec!["default", "via", "198.51.100.2", "dev", "aser"],
            ),
            ("aser", "103", vec!["default", "dev", "twan"]),
            ("tlan", "104", vec!["192.0.2.0/24", "dev", "alan"]),
        ] {
            lab.x(a, &["ip", "rule", "add", "iif", iif, "lookup", table]);
            let mut r = vec!["ip", "route", "add"];
            r.extend(route);
            r.extend(["table", table]);
            lab.x(a, &r);
        }
        lab.x(c, &["ip", "link", "set", "lo", "up"]);
        lab.x(c, &["ip", "addr", "add", "192.0.2.1/24", "dev", "c0"]);
        lab.x(c, &["ip", "link", "set", "c0", "up"]);
        lab.x(c, &["ip", "route", "add", "default", "via", "192.0.2.254"]);
        lab.x(s, &["ip", "link", "set", "lo", "up"]);
        lab.x(s, &["ip", "addr", "add", "203.0.113.10/32", "dev", "lo"]);
        lab.x(s, &["ip", "addr", "add", "198.51.100.2/24", "dev", "s0"]);
        lab.x(s, &["ip", "link", "set", "s0", "up"]);
        lab.x(
            s,
            &["ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.1"],
        );
        lab
    }
}

/// Runs `f` on a thread inside namespace `ns`.
pub(crate) fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let ns = ns.to_owned();
    thread::spawn(move || {
        enter_netns(&ns).expect("enter namespace");
        f()
    })
}

fn scopes() -> Arc<ScopeTable> {
    Arc::new(ScopeTable::compile(&[ScopeSpec {
        policy_id: "corp".into(),
        scope_id: "web".into(),
        source_ips: vec!["192.0.2.1".parse().unwrap()],
        source_ports: vec![],
        destinations: vec!["203.0.113.0/24".parse().unwrap()],
        destination_ports: vec![(8443, 8443)],
    }]))
}

/// A TCP server that answers each connection with its request twice, and a UDP echo.
fn servers(lab: &Lab) {
    in_ns(&lab.s, || {
        for port in [8443u16, 8080] {
            let l = TcpListener::bind(("203.0.113.10", port)).unwrap();
            thread::spawn(move || {
                for conn in l.incoming() {
                    let Ok(mut c) = conn else { continue };
                    thread::spawn(move || {
                        let mut buf = Vec::new();
                        if c.read_to_end(&mut buf).is_ok() {
                            let _ = c.write_all(&buf);
                            let _ = c.write_all(&buf);
                        }
                    });
                }
            });
        }
        let u = UdpSocket::bind("203.0.113.10:5353").unwrap();
        thread::spawn(move || {
            let mut b = [0u8; 2048];
            while let Ok((n, from)) = u.recv_from(&mut b) {
                let _ = u.send_to(&b[..n], from);
            }
        });
    })
    .join()
    .unwrap();
}

/// One request/response exchange; returns the client's local port.
fn exchange(port: u16, len: usize) -> u16 {
    let server: SocketAddr = ("203.0.113.10".parse::<std::net::IpAddr>().unwrap(), port).into();
    let mut c = TcpStream::connect_timeout(&server, Duration::from_secs(5))
        .expect("connect through the appliance");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    c.write_all(&data).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), 2 * len);
    assert!(
        back[..len] == data[..] && back[len..] == data[..],
        "content changed in transit"
    );
    c.local_addr().unwrap().port()
}

fn start(lab: &Lab, mode: DeviceMode, cpus: Vec<usize>, log: Arc<MemLog>) -> Pipeline {
    start_ring(lab, mode, cpus, log, RingConfig::default())
}

fn start_ring(
    lab: &Lab,
    mode: DeviceMode,
    cpus: Vec<usize>,
    log: Arc<MemLog>,
    ring: RingConfig,
) -> Pipeline {
    let cfg = PipelineConfig {
        mode,
        cpus,
        max_flows: 10_000,
        flow_idle_timeout: Duration::from_secs(60),
        faults: Default::default(),
        max_intercept_memory: usize::MAX,
        max_half_open: usize::MAX,
        // These tests are about the user-space fast path (its counters,
        // its throughput); the kernel one has its own lab test.
        kernel_fast_path: crate::KernelFastPathMode::Off,
        release_passed_flows: true,
    };
    in_ns(&lab.a, move || {
        Pipeline::start_with_ring(cfg, ring, scopes(), log).expect("pipeline starts")
    })
    .join()
    .unwrap()
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Both directions of every in-scope flow reach one worker: each of 40 flows
/// is logged once with the exact byte counts of both directions, the
/// fanout spread flows over both workers, and no frame arrived at a worker
/// other than its hash owner. UDP, ICMP, ARP, out-of-scope TCP and VLAN
/// traffic cross unchanged.
#[test]
fn af_packet_bridge_is_symmetric_and_forwards_everything() {
    let lab = Lab::bridged("ap");
    let log = Arc::new(MemLog::default());
    let cpus = if thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        vec![0, 1]
    } else {
        vec![0]
    };
    let nworkers = cpus.len();
    let p = start(
        &lab,
        DeviceMode::AfPacket {
            lan: "alan".into(),
            wan: "awan".into(),
        },
        cpus,
        log.clone(),
    );
    servers(&lab);

    let expected: Vec<(u16, usize)> = in_ns(&lab.c, || {
        let mut v = Vec::new();
        for i in 0..40 {
            let len = 1000 + i * 977;
            v.push((exchange(8443, len), len));
        }
        // Out of scope: another port.
        exchange(8080, 5000);
        // UDP echo.
        let u = UdpSocket::bind("192.0.2.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.send_to(b"quic-like datagram", "203.0.113.10:5353")
            .unwrap();
        let mut b = [0u8; 64];
        let (n, _) = u.recv_from(&mut b).expect("UDP echo through the appliance");
        assert_eq!(&b[..n], b"quic-like datagram");
        // ICMP: a datagram to a closed port comes back as "port unreachable".
        let closed = UdpSocket::bind("192.0.2.1:0").unwrap();
        closed
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        closed.connect("203.0.113.10:9").unwrap();
        closed.send(b"anyone?").unwrap();
        let e = closed
            .recv(&mut b)
            .expect_err("closed port answers with ICMP");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        v
    })
    .join()
    .unwrap();
    vlan_probe(&lab);
    wait_for(
        || p.stats().total.flows_ended == 40,
        "40 flows to end by FIN",
    );
    let stats = p.shutdown();
    let t = stats.total;
    let recs = log.records.lock().unwrap();
    assert_eq!(
        recs.len(),
        40,
        "one record per in-scope flow, none for out-of-scope"
    );
    for (port, len) in expected {
        let r = recs
            .iter()
            .find(|r| r.meta.src.port() == port)
            .expect("record for every flow");
        assert_eq!((&*r.meta.policy_id, &*r.meta.scope_id), ("corp", "web"));
        assert_eq!(r.reason.as_str(), "not_intercepting_yet");
        assert_eq!(r.meta.dest, "203.0.113.10:8443".parse().unwrap());
        assert_eq!(
            (r.bytes_toserver, r.bytes_toclient),
            (len as u64, 2 * len as u64),
            "bytes of flow {port}: a direction went to another worker"
        );
    }
    assert_eq!(
        t.misrouted, 0,
        "fanout delivered frames to a non-owner: {stats:?}"
    );
    assert_eq!(t.malformed, 0);
    assert!(
        t.fast_udp >= 2 && t.fast_icmp >= 1 && t.fast_arp >= 2 && t.fast_tcp >= 10,
        "{t:?}"
    );
    assert!(t.fast_vlan >= 1, "{t:?}");
    if nworkers > 1 {
        for (i, w) in stats.workers.iter().enumerate() {
            assert!(w.flows_started > 0, "worker {i} got no flow: {stats:?}");
        }
    }
    assert_eq!(
        t.tx_frames + t.fast_coalesced,
        t.rx_frames,
        "every received frame was forwarded (alone or merged into its flow's previous one)"
    );
}

/// TUN mode: the same guarantees as the AF_PACKET test, with the kernel
/// choosing the queue. Packets that arrive at a worker other than their
/// flow's owner are handed over; the count is printed for the report.
#[test]
fn tun_mode_keeps_flows_on_their_owner() {
    let lab = Lab::routed("tn");
    let log = Arc::new(MemLog::default());
    let cpus = if thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        vec![0, 1]
    } else {
        vec![0]
    };
    let nworkers = cpus.len();
    let p = start(
        &lab,
        DeviceMode::Tun {
            lan: "tlan".into(),
            wan: "twan".into(),
        },
        cpus,
        log.clone(),
    );
    servers(&lab);
    let expected: Vec<(u16, usize)> = in_ns(&lab.c, || {
        let mut v = Vec::new();
        for i in 0..40 {
            let len = 1000 + i * 977;
            v.push((exchange(8443, len), len));
        }
        exchange(8080, 5000);
        let u = UdpSocket::bind("192.0.2.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.send_to(b"datagram", "203.0.113.10:5353").unwrap();
        let mut b = [0u8; 64];
        let (n, _) = u.recv_from(&mut b).expect("UDP echo through the TUN pair");
        assert_eq!(&b[..n], b"datagram");
        v
    })
    .join()
    .unwrap();
    wait_for(
        || p.stats().total.flows_ended == 40,
        "40 flows to end by FIN",
    );
    let stats = p.shutdown();
    let t = stats.total;
    let recs = log.records.lock().unwrap();
    assert_eq!(recs.len(), 40);
    for (port, len) in expected {
        let r = recs
            .iter()
            .find(|r| r.meta.src.port() == port)
            .expect("record for every flow");
        assert_eq!((&*r.meta.policy_id, &*r.meta.scope_id), ("corp", "web"));
        assert_eq!(
            (r.bytes_toserver, r.bytes_toclient),
            (len as u64, 2 * len as u64),
            "flow {port}"
        );
    }
    assert_eq!(t.handoff_in, t.handoff_out);
    assert_eq!(t.handoff_overflow, 0);
    assert!(t.fast_udp >= 2 && t.fast_tcp >= 10, "{t:?}");
    if nworkers > 1 {
        for (i, w) in stats.workers.iter().enumerate() {
            assert!(w.flows_started > 0, "worker {i} got no flow: {stats:?}");
        }
    }
    eprintln!(
        "TUN handoff: {} of {} packets ({:.1}%) moved to their owner; in-scope frames {}",
        t.handoff_out,
        t.rx_frames,
        100.0 * t.handoff_out as f64 / t.rx_frames.max(1) as f64,
        t.inscope_frames
    );
}

/// Bulk TCP throughput client → server for `secs` seconds; returns Gbit/s.
fn bulk(lab: &Lab, port: u16, secs: f64) -> f64 {
    let stop = in_ns(&lab.s, move || {
        let l = TcpListener::bind(("203.0.113.10", port)).unwrap();
        thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        })
    })
    .join()
    .unwrap();
    let sent = in_ns(&lab.c, move || {
        let mut c = TcpStream::connect(("203.0.113.10", port)).unwrap();
        let buf = vec![0x5au8; 1 << 18];
        let t = Instant::now();
        let mut total = 0u64;
        while t.elapsed().as_secs_f64() < secs {
            c.write_all(&buf).unwrap();
            total += buf.len() as u64;
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
        (total, t.elapsed().as_secs_f64())
    })
    .join()
    .unwrap();
    let received = stop.join().unwrap();
    assert_eq!(received, sent.0, "bytes lost in transit");
    received as f64 * 8.0 / sent.1 / 1e9
}

/// Bulk TCP through the appliance (one worker) against a kernel bridge in
/// the same topology. Run in release: `cargo test --release -p
/// tlsinspect-pipeline --lib throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run explicitly in release"]
fn throughput_vs_kernel_bridge() {
    let lab = Lab::bridged("tp");
    let secs = 4.0;
    let mut results = Vec::new();
    for (k, version) in [RingVersion::V2, RingVersion::V3].into_iter().enumerate() {
        let ring = RingConfig {
            version,
            ..RingConfig::default()
        };
        let mode = DeviceMode::AfPacket {
            lan: "alan".into(),
            wan: "awan".into(),
        };
        let p = start_ring(&lab, mode, vec![1], Arc::new(MemLog::default()), ring);
        // Warm-up (ARP, slow start), then measure.
        let base = 9000 + 10 * k as u16;
        bulk(&lab, base, 0.5);
        let gbps = bulk(&lab, base + 1, secs);
        let rtt = rtt_us(&lab, base + 2, 500);
        let stats = p.shutdown();
        results.push((
            version,
            gbps,
            rtt,
            stats.total.tx_dropped,
            stats.total.rx_dropped,
        ));
    }
    lab.x(&lab.a, &["ip", "link", "add", "br0", "type", "bridge"]);
    lab.x(&lab.a, &["ip", "link", "set", "alan", "master", "br0"]);
    lab.x(&lab.a, &["ip", "link", "set", "awan", "master", "br0"]);
    lab.x(&lab.a, &["ip", "link", "set", "br0", "up"]);
    bulk(&lab, 9100, 0.5);
    let bridge = bulk(&lab, 9101, secs);
    let bridge_rtt = rtt_us(&lab, 9102, 500);
    for (v, gbps, rtt, txd, rxd) in results {
        eprintln!(
            "{v:?}: {gbps:.2} Gbit/s ({:.2} of bridge), RTT {rtt:.0} us; tx_dropped {txd} rx_dropped {rxd}",
            gbps / bridge
        );
    }
    eprintln!("kernel bridge: {bridge:.2} Gbit/s, RTT {bridge_rtt:.0} us");
}

/// Mean round trip of 1-byte request/response over TCP, in microseconds.
fn rtt_us(lab: &Lab, port: u16, rounds: u32) -> f64 {
    in_ns(&lab.s, move || {
        let l = TcpListener::bind(("203.0.113.10", port)).unwrap();
        thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_nodelay(true).unwrap();
            let mut b = [0u8; 1];
            while c.read_exact(&mut b).is_ok() {
                if c.write_all(&b).is_err() {
                    break;
                }
            }
        });
    })
    .join()
    .unwrap();
    in_ns(&lab.c, move || {
        let mut c = TcpStream::connect(("203.0.113.10", port)).unwrap();
        c.set_nodelay(true).unwrap();
        let mut b = [7u8; 1];
        let t = Instant::now();
        for _ in 0..rounds {
            c.write_all(&b).unwrap();
            c.read_exact(&mut b).unwrap();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    })
    .join()
    .unwrap()
}

/// CPU nanoseconds used so far by this process's threads named `name`.
fn thread_cpu_ns(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Alternating A/B of the fast path against a kernel bridge: several rounds
/// of bridge, appliance V2, appliance V3 back to back; prints medians, ratios
/// and the worker thread's CPU time per GB forwarded (load-robust). Knobs:
/// `AB_ROUNDS` (5), `AB_SECS` (3), `AB_V3_BLOCK` (V3 block bytes, 262144). Run in release: `cargo test --release -p
/// tlsinspect-pipeline --lib fastpath_ab -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run explicitly in release"]
fn fastpath_ab_vs_kernel_bridge() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let rounds = env("AB_ROUNDS", 5);
    let secs = env("AB_SECS", 3) as f64;
    let v3_block = env("AB_V3_BLOCK", 256 * 1024) as u32;
    let lab = Lab::bridged("ab");
    let mut port = 9200u16;
    let mut next_port = || {
        port += 1;
        port
    };
    let (mut br, mut v2, mut v3) = (Vec::new(), Vec::new(), Vec::new());
    let (mut v2_cpu, mut v3_cpu) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        lab.x(&lab.a, &["ip", "link", "add", "br0", "type", "bridge"]);
        lab.x(&lab.a, &["ip", "link", "set", "alan", "master", "br0"]);
        lab.x(&lab.a, &["ip", "link", "set", "awan", "master", "br0"]);
        lab.x(&lab.a, &["ip", "link", "set", "br0", "up"]);
        bulk(&lab, next_port(), 0.3);
        let b = bulk(&lab, next_port(), secs);
        lab.x(&lab.a, &["ip", "link", "del", "br0"]);
        br.push(b);
        let mut line = format!("round {round}: bridge {b:.2}");
        for version in [RingVersion::V2, RingVersion::V3] {
            let mut ring = RingConfig {
                version,
                ..RingConfig::default()
            };
            if version == RingVersion::V3 {
                // Same ring bytes, smaller blocks if asked (fill and retire sooner).
                ring.block_size = v3_block;
                ring.block_count = (8 << 20) / v3_block;
            }
            let mode = DeviceMode::AfPacket {
                lan: "alan".into(),
                wan: "awan".into(),
            };
            let p = start_ring(&lab, mode, vec![1], Arc::new(MemLog::default()), ring);
            bulk(&lab, next_port(), 0.3);
            let cpu0 = thread_cpu_ns("tlsinspect-w0");
            let g = bulk(&lab, next_port(), secs);
            let cpu = (thread_cpu_ns("tlsinspect-w0") - cpu0) as f64 / 1e9;
            let stats = p.shutdown();
            // CPU seconds of the worker per GB (1e9 bytes) of payload moved.
            let per_gb = cpu / (g * secs / 8.0);
            line += &format!(
                ", {version:?} {g:.2} ({:.2}) cpu {per_gb:.3} s/GB drops tx {} rx {}",
                g / b,
                stats.total.tx_dropped,
                stats.total.rx_dropped
            );
            match version {
                RingVersion::V2 => (v2.push(g), v2_cpu.push(per_gb)),
                RingVersion::V3 => (v3.push(g), v3_cpu.push(per_gb)),
            };
        }
        eprintln!("{line}");
    }
    let (mb, m2, m3) = (median(&mut br), median(&mut v2), median(&mut v3));
    eprintln!(
        "medians over {rounds} rounds of {secs}s: bridge {mb:.2} Gbit/s; V2 {m2:.2} Gbit/s ratio {:.2} cpu {:.3} s/GB; V3 {m3:.2} Gbit/s ratio {:.2} cpu {:.3} s/GB",
        m2 / mb,
        median(&mut v2_cpu),
        m3 / mb,
        median(&mut v3_cpu)
    );
}

/// The kernel fast path's fallback attachment for kernels without tcx: a
/// clsact qdisc and a direct-action `bpf` filter at ingress of both ports,
/// made over rtnetlink and removed on drop; a clsact qdisc someone else
/// made stays.
#[test]
fn kernel_fast_path_clsact_attachment_is_made_and_removed() {
    use crate::kernel_fast_path::{Attached, Via};
    let lab = Lab::bridged("kc");
    lab.x(&lab.a, &["tc", "qdisc", "add", "dev", "awan", "clsact"]);
    in_ns(&lab.a, || {
        let tc = |args: &[&str]| {
            let o = Command::new("tc").args(args).output().expect("tc");
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let k =
            Attached::attach_via("alan", "awan", 16, Via::Clsact).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.attachment(), "clsact");
        for dev in ["alan", "awan"] {
            assert!(tc(&["qdisc", "show", "dev", dev]).contains("clsact"));
            let f = tc(&["filter", "show", "dev", dev, "ingress"]);
            assert!(
                f.contains("tlsi_redirect") && f.contains("direct-action"),
                "{dev}: {f}"
            );
        }
        drop(k);
        assert!(!tc(&["qdisc", "show", "dev", "alan"]).contains("clsact"));
        assert!(tc(&["qdisc", "show", "dev", "awan"]).contains("clsact"));
        for dev in ["alan", "awan"] {
            let f = tc(&["filter", "show", "dev", dev, "ingress"]);
            assert!(!f.contains("tlsi_redirect"), "{dev}: {f}");
        }
    })
    .join()
    .unwrap();
}
