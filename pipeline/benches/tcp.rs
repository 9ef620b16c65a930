//! The transparent TCP splice in memory: bulk throughput and flow setup cost.
//!
//! Two plain smoltcp hosts (client, server) exchange IP packets through a
//! `Splice` in virtual time. `iter_custom` times only the calls into
//! the flow, so the numbers are the splice's own cost (both legs: ingress,
//! egress, checksums, the relay copy); the hosts' work is excluded.
//! `bulk_e2e` times the whole loop, hosts included, for comparison.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{Socket, SocketBuffer, State};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpCidr};
use tlsinspect_pipeline::tcp::{FlowConfig, Leg, Phase, Splice, StreamError};

#[path = "../src/tcp/queue_dev.rs"]
mod queue_dev;
use queue_dev::QueueDev;

struct Host {
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    dev: QueueDev,
}

impl Host {
    fn new(ip: IpAddr, gw: IpAddr, buf: usize) -> Host {
        let mut dev = QueueDev::new(1500);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut dev,
            SmolInstant::ZERO,
        );
        iface.update_ip_addrs(|a| a.push(IpCidr::new(ip.into(), 24)).unwrap());
        if let IpAddr::V4(g) = gw {
            iface.routes_mut().add_default_ipv4_route(g).unwrap();
        }
        let socket = Socket::new(
            SocketBuffer::new(vec![0u8; buf]),
            SocketBuffer::new(vec![0u8; buf]),
        );
        let mut sockets = SocketSet::new(Vec::new());
        let handle = sockets.add(socket);
        Host {
            iface,
            sockets,
            handle,
            dev,
        }
    }
    fn socket(&mut self) -> &mut Socket<'static> {
        self.sockets.get_mut::<Socket>(self.handle)
    }
}

struct Net {
    t0: Instant,
    now: Instant,
    client: Host,
    server: Host,
    flow: Option<Splice>,
    cfg: FlowConfig,
    /// Time spent inside the flow's methods.
    flow_time: Duration,
    down_left: usize,
    down_recv: usize,
}

const CLIENT: &str = "192.0.2.10:40000";
const SERVER: &str = "203.0.113.5:443";

impl Net {
    fn new(cfg: FlowConfig, host_buf: usize) -> Net {
        let c: SocketAddr = CLIENT.parse().unwrap();
        let s: SocketAddr = SERVER.parse().unwrap();
        let mut client = Host::new(c.ip(), "192.0.2.1".parse().unwrap(), host_buf);
        let mut server = Host::new(s.ip(), "203.0.113.1".parse().unwrap(), host_buf);
        let cx = client.iface.context();
        client
            .sockets
            .get_mut::<Socket>(client.handle)
            .connect(cx, s, c.port())
            .unwrap();
        server.socket().listen(s.port()).unwrap();
        let t0 = Instant::now();
        Net {
            t0,
            now: t0,
            client,
            server,
            flow: None,
            cfg,
            flow_time: Duration::ZERO,
            down_left: 0,
            down_recv: 0,
        }
    }

    fn smol(&self) -> SmolInstant {
        SmolInstant::from_micros((self.now - self.t0).as_micros() as i64)
    }

    fn round(&mut self, chunk: &[u8]) -> bool {
        // Virtual time moves on a little every round, as a real worker's
        // batches would (a frozen clock defeats cubic's 100 ms update
        // throttle and smoltcp's timers).
        self.now += Duration::from_micros(10);
        let t = self.smol();
        let mut moved = false;
        // server app writes, client app reads
        let s = self.server.socket();
        if s.may_send() && self.down_left > 0 {
            let n = s
                .send_slice(&chunk[..self.down_left.min(chunk.len())])
                .unwrap();
            self.down_left -= n;
        }
        // The client app discards what it receives (no copy, no scratch buffer).
        let c = self.client.socket();
        while let Ok(n @ 1..) = c.recv(|d| (d.len(), d.len())) {
            self.down_recv += n;
        }
        self.client
            .iface
            .poll(t, &mut self.client.dev, &mut self.client.sockets);
        self.server
            .iface
            .poll(t, &mut self.server.dev, &mut self.server.sockets);
        let from_client = std::mem::take(&mut self.client.dev.tx);
        let from_server = std::mem::take(&mut self.server.dev.tx);
        moved |= !from_client.is_empty() || !from_server.is_empty();

        let start = Instant::now();
        let now = self.now;
        for p in &from_client {
            match self.flow.as_mut() {
                Some(f) => f.handle_packet(Leg::Client, p, now),
                None => self.flow = Some(Splice::from_syn(p, &self.cfg, 42, now).unwrap()),
            }
        }
        let mut to_client = Vec::new();
        let mut to_server = Vec::new();
        if let Some(f) = self.flow.as_mut() {
            for p in &from_server {
                f.handle_packet(Leg::Server, p, now);
            }
            f.handle_timeout(now);
            loop {
                if f.phase() == Phase::Established {
                    for from in [Leg::Server, Leg::Client] {
                        if let Err(StreamError::Finished(s)) = f.splice(from) {
                            f.close(s.other());
                        }
                    }
                }
                let mut sent = false;
                let mut buf = Vec::with_capacity(1500);
                while let Some(side) = f.poll_transmit_into(now, &mut buf) {
                    sent = true;
                    match side {
                        Leg::Client => to_client.push(std::mem::take(&mut buf)),
                        Leg::Server => to_server.push(std::mem::take(&mut buf)),
                    }
                }
                while f.poll_event().is_some() {}
                if !sent {
                    break;
                }
            }
        }
        self.flow_time += start.elapsed();
        moved |= !to_client.is_empty() || !to_server.is_empty();
        self.client.dev.rx.extend(to_client);
        self.server.dev.rx.extend(to_server);
        moved
    }

    fn run_until(&mut self, chunk: &[u8], mut done: impl FnMut(&mut Net) -> bool) {
        let mut idle = 0;
        for _ in 0..10_000_000 {
            if done(self) {
                return;
            }
            if self.round(chunk) {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < 2 {
                continue;
            }
            // Jump to the next timer (delayed ACKs) in virtual time.
            let t = self.smol();
            let mut next = [
                self.client.iface.poll_at(t, &self.client.sockets),
                self.server.iface.poll_at(t, &self.server.sockets),
            ]
            .into_iter()
            .flatten()
            .map(|s| self.t0 + Duration::from_micros(s.total_micros().max(0) as u64))
            .min();
            if let Some(f) = self.flow.as_mut() {
                if let Some(ft) = f.poll_timeout() {
                    next = Some(next.map_or(ft, |n| n.min(ft)));
                }
            }
            self.now = match next {
                Some(n) if n > self.now => n,
                _ => self.now + Duration::from_millis(1),
            };
            idle = 0;
        }
        panic!("did not finish");
    }

    fn established(&mut self) -> bool {
        self.client.socket().state() == State::Established
            && self
                .flow
                .as_ref()
                .is_some_and(|f| f.phase() == Phase::Established)
    }
}

/// User + system CPU seconds of this process so far (Linux, 10 ms ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `TCP_BENCH_MEMORY=N [TCP_BENCH_BUF=bytes]`: establish N flows, pass 4 KB server->client through
/// each (a TLS handshake's worth), keep them idle, and print bytes per flow.
fn report_memory(n: usize, buf: usize, chunk: &[u8]) {
    let mut flows = Vec::with_capacity(n);
    let before = rss_bytes();
    for _ in 0..n {
        let mut net = Net::new(FlowConfig::with_buffer_bytes(buf), 8192);
        net.run_until(chunk, Net::established);
        net.down_left = 4000;
        net.run_until(chunk, |n| n.down_recv == 4000);
        flows.push(net.flow.take().unwrap());
    }
    let after = rss_bytes();
    let accounted: usize = flows.iter().map(Splice::memory_bytes).sum();
    println!(
        "memory, {n} idle flows, buffers {buf} B: RSS +{} B/flow, memory_bytes() {} B/flow",
        (after.saturating_sub(before)) / n,
        accounted / n
    );
}

fn bench(c: &mut Criterion) {
    let chunk = vec![0x5au8; 64 * 1024];
    if let Some(n) = std::env::var("TCP_BENCH_MEMORY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        // One size per process (`TCP_BENCH_BUF`, default 16 KiB), so one
        // run's freed pages do not flatter the next.
        let buf = std::env::var("TCP_BENCH_BUF")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(FlowConfig::DEFAULT_BUFFER_BYTES);
        report_memory(n, buf, &chunk);
        return;
    }
    // `TCP_BENCH_ONCE=MIB`: one transfer of MIB MiB, timed in process CPU
    // time (the wall clock is meaningless on a loaded shared machine), and a
    // target for callgrind / perf.
    if let Some(mib) = std::env::var("TCP_BENCH_ONCE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let len = mib << 20;
        let mut net = Net::new(FlowConfig::default(), 256 * 1024);
        net.run_until(&chunk, Net::established);
        net.flow_time = Duration::ZERO;
        net.down_left = len;
        let cpu0 = cpu_seconds();
        net.run_until(&chunk, |n| n.down_recv == len);
        let cpu = cpu_seconds() - cpu0;
        println!(
            "{mib} MiB server->client: {:.3} s process CPU (hosts + splice) = {:.2} Gb/s; flow calls {:?} wall",
            cpu,
            (len * 8) as f64 / cpu / 1e9,
            net.flow_time
        );
        return;
    }

    let mut g = c.benchmark_group("tcp_splice");
    const LEN: usize = 16 << 20;
    g.throughput(Throughput::Bytes(LEN as u64));
    for buf in [16 * 1024, 64 * 1024] {
        // Splice-only time: the flow's calls, hosts excluded.
        g.bench_with_input(BenchmarkId::new("bulk_flow_only", buf), &buf, |b, &buf| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut net = Net::new(FlowConfig::with_buffer_bytes(buf), 256 * 1024);
                    net.run_until(&chunk, Net::established);
                    net.flow_time = Duration::ZERO;
                    net.down_left = LEN;
                    net.run_until(&chunk, |n| n.down_recv == LEN);
                    total += net.flow_time;
                }
                total
            })
        });
        // Whole loop, both smoltcp hosts included.
        g.bench_with_input(BenchmarkId::new("bulk_e2e", buf), &buf, |b, &buf| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut net = Net::new(FlowConfig::with_buffer_bytes(buf), 256 * 1024);
                    net.run_until(&chunk, Net::established);
                    net.down_left = LEN;
                    let start = Instant::now();
                    net.run_until(&chunk, |n| n.down_recv == LEN);
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("tcp_setup");
    g.throughput(Throughput::Elements(1));
    // from_syn to both legs established (SYN, SYN-ACK, held SYN, SYN-ACK,
    // ACK), plus dropping the flow.
    g.bench_function("handshake_flow_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut net = Net::new(FlowConfig::default(), 4096);
                net.run_until(&chunk, Net::established);
                total += net.flow_time;
                let flow = black_box(net.flow.take());
                let start = Instant::now();
                drop(flow);
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
