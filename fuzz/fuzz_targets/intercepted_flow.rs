//! Fuzzes `Connection::handle_packet` with hostile packets in every
//! phase of an intercepted connection.
//!
//! Each input is a scenario (an `arbitrary` structure): the policy, the
//! client (a real rustls client, or raw bytes starting with one of the
//! captured ClientHellos of `pipeline/src/tls/testdata/`, possibly edited or
//! cut), the server (rustls, raw, closed or silent), the flow's TCP settings,
//! then a list of operations: rounds of the in-memory network (the
//! intercept testkit's smoltcp hosts) with seeded loss, duplication,
//! reordering and corruption; virtual time jumps; packets injected from
//! either side (crafted segments near the real sequence numbers, mutated
//! copies of the last real packet, raw bytes); the worker giving up. After
//! the operations the network runs until the connection is over, as far as
//! virtual time allows. So the flow meets hostile input while its server leg
//! connects, while it accepts the client, while the hello is held, while the
//! upstream TLS leg is set up, while relaying and while closing.
//!
//! The harness plays the worker's part exactly: a client SYN that
//! supersedes the flow ends it, a finished flow is dropped, `handle_timeout`
//! runs only once `poll_timeout` has passed, offloaded checksums are
//! completed before a packet leaves. Besides "no panic" it checks what must
//! hold whatever the input:
//!
//! * every packet the flow sends parses with verified checksums, and every
//!   one but an RST carries the flow's own addresses in the right direction
//!   (no appliance address, no other connection);
//! * after the flow is aborted it sends nothing but RSTs;
//! * the record's byte counters never exceed the TCP payload the flow was
//!   given from that side; an undecided flow carries an undecided reason, a
//!   decided one does not; the duration is the virtual time it lived;
//! * the flow's memory stays bounded;
//! * without hostile input, faults or time jumps, a TLS client trusting the
//!   policy CA gets its download byte for byte and the connection ends.
#![no_main]
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

pub use tlsinspect_pipeline::{api, classify, conn, tls};

#[path = "../../pipeline/src/tcp/queue_dev.rs"]
pub mod queue_dev;

/// `crate::tcp` as the testkit sees it inside the library's own tests.
pub mod tcp {
    pub use super::queue_dev;
    pub use tlsinspect_pipeline::tcp::*;
}

#[allow(unused_imports)]
#[path = "../../pipeline/src/testkit/lab.rs"]
mod testkit;

use conn::ConnCtx;
use tcp::segment::{self, Segment};
use tcp::{FlowConfig, Leg};
use testkit::{smol, BlockInspector, ClientApp, Lab, MemLog, Net, PassInspector, ServerApp};
use tls::bypass::{BypassCache, BypassConfig};
use tls::decision::{PassOrBlock, PassOrInspect, TlsPolicy};
use tls::pair::{InvalidCertPolicy, UpstreamTls};
use tlsinspect_pipeline::hostglob::HostGlob;
use tlsinspect_pipeline::io::Offload;
use tlsinspect_pipeline::reason::Reason;

/// The captured ClientHellos (the same files as `../shared/testdata/client-hellos`).
const HELLOS: [&[u8]; 7] = [
    include_bytes!("../../pipeline/src/tls/testdata/chromium.bin"),
    include_bytes!("../../pipeline/src/tls/testdata/firefox.bin"),
    include_bytes!("../../pipeline/src/tls/testdata/curl.bin"),
    include_bytes!("../../pipeline/src/tls/testdata/curl-tls12.bin"),
    include_bytes!("../../pipeline/src/tls/testdata/openssl.bin"),
    include_bytes!("../../pipeline/src/tls/testdata/openssl-nosni.bin"),
    include_bytes!("../../pipeline/src/tls/testdata/python-urllib.bin"),
];

/// Operations per input, and network rounds per operation.
const MAX_OPS: usize = 48;
const MAX_ROUNDS: u8 = 24;
/// Virtual time and rounds the final settling may take.
const SETTLE_TIME: Duration = Duration::from_secs(240);
const SETTLE_ROUNDS: usize = 600;
/// A flow holds its legs' buffers plus one read chunk per direction of
/// queued output (backpressure); anything near this is a leak.
const MAX_FLOW_MEMORY: usize = 1 << 20;

#[derive(Arbitrary, Debug)]
struct Input {
    policy: Policy,
    client: Client,
    server: Server,
    /// Nothing reaches the server host: it never answers.
    silent_server: bool,
    /// The production setting: partial checksums toward the device.
    offload: bool,
    /// 4 KiB TCP buffers, smaller than the browsers' hellos.
    small_buffers: bool,
    block_inspector: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Policy {
    non_tls_block: bool,
    ech_inspect: bool,
    exclude: Exclude,
    legacy_block: bool,
    tls13_pass: bool,
    no_sni_pass: bool,
    block_invalid: bool,
}

#[derive(Arbitrary, Debug)]
enum Exclude {
    Nothing,
    Origin,
    Captured,
    Everything,
}

#[derive(Arbitrary, Debug)]
enum Client {
    Tls {
        distrust_policy_ca: bool,
        tls12_only: bool,
        client_auth: bool,
    },
    /// One of [`HELLOS`], edited (`(offset, xor)`), cut, then more bytes.
    Hello {
        which: u8,
        edits: Vec<(u16, u8)>,
        cut: Option<u16>,
        then: Vec<u8>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Server {
    Tls {
        tls12_only: bool,
        require_client_auth: bool,
    },
    Raw(Vec<u8>),
    Closed,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Client,
    Server,
}

impl Peer {
    fn side(self) -> Leg {
        match self {
            Peer::Client => Leg::Client,
            Peer::Server => Leg::Server,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Rounds of the network, through a fault injector if given.
    Run { rounds: u8, fault: Option<Fault> },
    /// Virtual time passes.
    Advance { ms: u16 },
    /// Virtual time jumps to the next timer of the flow or a host.
    NextTimer,
    /// A hostile packet from one side.
    Inject {
        from: Peer,
        checksum_trusted: bool,
        packet: Hostile,
    },
    /// The worker gives up on the flow (idle timeout, shutdown).
    Abort,
}

/// Per-packet probabilities, in 256ths.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Fault {
    seed: u32,
    loss: u8,
    duplicate: u8,
    reorder: u8,
    corrupt: u8,
}

#[derive(Arbitrary, Debug)]
enum Hostile {
    /// A segment near the connection's real sequence numbers.
    Segment {
        flags: u8,
        seq_delta: i16,
        ack_delta: i16,
        window: u16,
        options: Vec<u8>,
        payload: Vec<u8>,
        bad_checksum: bool,
        tuple: Tuple,
    },
    /// The last real packet from that side, edited (checksums fixed or not).
    Mutate {
        at: u16,
        xor: u8,
        cut: Option<u16>,
        fix_checksums: bool,
    },
    /// The last real packet from that side again.
    Replay,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Tuple {
    Flow,
    /// Another source port: not this connection.
    OtherPort,
    /// Another source address.
    OtherAddress,
}

fn idx(side: Leg) -> usize {
    match side {
        Leg::Client => 0,
        Leg::Server => 1,
    }
}

/// Why the harness stopped feeding the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A new client SYN replaced it (the worker's supersede).
    Superseded,
    /// It reported `is_finished` and was dropped.
    Finished,
    /// The worker aborted it.
    Aborted,
}

struct Harness {
    net: Net,
    client: SocketAddr,
    server: SocketAddr,
    silent_server: bool,
    /// The last real packet each host sent.
    last_real: [Option<Vec<u8>>; 2],
    /// The next sequence number of each host (from its packets) and of the
    /// flow toward each host (from the flow's packets).
    host_next: [u32; 2],
    flow_next: [u32; 2],
    /// TCP payload bytes handed to the flow from each side.
    given: [u64; 2],
    rng: u64,
    end: Option<End>,
}

fn next_seq(s: &Segment) -> u32 {
    s.seq
        .wrapping_add(s.payload_len as u32)
        .wrapping_add(u32::from(s.syn))
        .wrapping_add(u32::from(s.fin))
}

impl Harness {
    fn rand(&mut self) -> u8 {
        // xorshift64*: deterministic per input.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
    }

    /// Applies a fault injector to a batch of packets in flight. Only
    /// packets toward the flow are corrupted: the fuzz build's smoltcp skips
    /// checksums (`cfg(fuzzing)`), so the hosts would take corrupted bytes
    /// that a real stack drops, and feed them to their TLS peers.
    fn faults(
        &mut self,
        mut batch: Vec<Vec<u8>>,
        fault: Option<Fault>,
        toward_flow: bool,
    ) -> Vec<Vec<u8>> {
        let Some(f) = fault else { return batch };
        let mut out = Vec::with_capacity(batch.len());
        for mut p in batch.drain(..) {
            if self.rand() < f.loss {
                continue;
            }
            if toward_flow && self.rand() < f.corrupt && !p.is_empty() {
                let at = usize::from(self.rand()) * p.len() / 256;
                p[at] ^= self.rand() | 1;
            }
            if self.rand() < f.duplicate {
                out.push(p.clone());
            }
            out.push(p);
            if out.len() >= 2 && self.rand() < f.reorder {
                let n = out.len();
                out.swap(n - 1, n - 2);
            }
        }
        out
    }

    /// Hands one packet from `side` to the flow, as the worker would.
    fn deliver(&mut self, side: Leg, packet: &[u8], trusted: bool) {
        if self.end.is_some() {
            return;
        }
        let seg = segment::parse_with(packet, !trusted).ok();
        if let (Leg::Client, Some(s)) = (side, &seg) {
            if s.is_opening_syn()
                && self
                    .net
                    .flow
                    .superseded_by_syn(s.src.ip(), s.src.port(), s.seq)
            {
                self.net.flow.supersede();
                self.abort();
                self.end = Some(End::Superseded);
                return;
            }
        }
        self.given[idx(side)] += segment::parse_with(packet, false)
            .map(|s| s.payload_len as u64)
            .unwrap_or(packet.len() as u64);
        self.net
            .flow
            .handle_packet_checked(side, packet, trusted, self.net.now);
    }

    /// Drains the flow's output toward the hosts, checking each packet.
    fn transmit(&mut self, fault: Option<Fault>) -> bool {
        if self.end.is_some() {
            return false;
        }
        let mut sent: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let mut buf = Vec::new();
        while let Some((side, offload)) =
            self.net.flow.poll_transmit_offload(self.net.now, &mut buf)
        {
            if offload.flags & Offload::NEEDS_CSUM != 0 {
                tcp::fill_checksums(&mut buf);
            }
            let seg = self.check_sent(side, &buf);
            if !seg.rst {
                self.flow_next[idx(side)] = next_seq(&seg);
            }
            sent[idx(side)].push(std::mem::take(&mut buf));
            assert!(
                sent[0].len() + sent[1].len() < 10_000,
                "the flow keeps transmitting"
            );
        }
        let any = !sent[0].is_empty() || !sent[1].is_empty();
        let [to_client, to_server] = sent;
        for p in self.faults(to_client, fault, false) {
            self.net.client.dev.rx.push_back(p);
        }
        if !self.silent_server {
            for p in self.faults(to_server, fault, false) {
                self.net.server.dev.rx.push_back(p);
            }
        }
        assert!(
            self.net.flow.memory_bytes() < MAX_FLOW_MEMORY,
            "flow memory {} bytes",
            self.net.flow.memory_bytes()
        );
        if self.net.flow.is_finished() {
            self.end = Some(End::Finished);
        }
        any
    }

    /// A packet the flow sends toward `side` must be well-formed and, but
    /// for an RST answering a stray packet, on the flow's own addresses.
    fn check_sent(&self, side: Leg, p: &[u8]) -> Segment {
        let seg = segment::parse(p)
            .unwrap_or_else(|e| panic!("the flow sent a malformed packet toward {side:?}: {e}"));
        if !seg.rst {
            let (src, dst) = match side {
                Leg::Client => (self.server, self.client),
                Leg::Server => (self.client, self.server),
            };
            assert_eq!((seg.src, seg.dst), (src, dst), "packet toward {side:?}");
        }
        seg
    }

    /// One round of the network: the hosts run, their packets go to the
    /// flow, the flow's packets go to the hosts.
    fn round(&mut self, fault: Option<Fault>) -> bool {
        if self.end.is_some() {
            return false;
        }
        let t = smol(self.net.t0, self.net.now);
        let mut progress = self.net.client.apps_step() | self.net.server.apps_step();
        self.net.client.poll(t);
        self.net.server.poll(t);
        let from_client = std::mem::take(&mut self.net.client.dev.tx);
        let from_server = std::mem::take(&mut self.net.server.dev.tx);
        for (side, batch) in [(Leg::Client, from_client), (Leg::Server, from_server)] {
            for p in self.faults(batch, fault, true) {
                progress = true;
                if let Ok(s) = segment::parse(&p) {
                    self.host_next[idx(side)] = next_seq(&s);
                }
                self.deliver(side, &p, false);
                self.last_real[idx(side)] = Some(p);
            }
        }
        progress |= self.transmit(fault);
        progress
    }

    /// The earliest timer of the flow and both hosts.
    fn next_timer(&mut self) -> Option<Instant> {
        let t = smol(self.net.t0, self.net.now);
        let mut next = self.net.flow.poll_timeout();
        for host in [&mut self.net.client, &mut self.net.server] {
            if let Some(at) = host.poll_at(t) {
                let at = self.net.t0 + Duration::from_micros(at.total_micros().max(0) as u64);
                next = Some(next.map_or(at, |n: Instant| n.min(at)));
            }
        }
        next
    }

    /// Moves virtual time to `at` and runs the flow's timers if due.
    fn advance_to(&mut self, at: Instant) {
        if self.end.is_some() {
            return;
        }
        self.net.now = self.net.now.max(at);
        if self
            .net
            .flow
            .poll_timeout()
            .is_some_and(|t| t <= self.net.now)
        {
            self.net.flow.handle_timeout(self.net.now);
        }
        self.transmit(None);
    }

    /// The worker gives up: both legs reset, and nothing but RSTs may leave.
    fn abort(&mut self) {
        // What the flow queued before is sent as it is; what follows the abort is RSTs.
        self.drain(false);
        self.net.flow.abort();
        self.drain(true);
        self.end.get_or_insert(End::Aborted);
    }

    /// Sends what the flow has queued nowhere, checking each packet.
    fn drain(&mut self, only_rst: bool) {
        let mut buf = Vec::new();
        let mut n = 0;
        while let Some((side, offload)) =
            self.net.flow.poll_transmit_offload(self.net.now, &mut buf)
        {
            if offload.flags & Offload::NEEDS_CSUM != 0 {
                tcp::fill_checksums(&mut buf);
            }
            let seg = self.check_sent(side, &buf);
            assert!(
                seg.rst || !only_rst,
                "an aborted flow sent a non-RST toward {side:?}: {seg:?}"
            );
            n += 1;
            assert!(n < 10_000, "the flow keeps transmitting");
        }
    }

    fn inject(&mut self, from: Peer, trusted: bool, hostile: &Hostile) {
        let side = from.side();
        let packet = match hostile {
            Hostile::Segment {
                flags,
                seq_delta,
                ack_delta,
                window,
                options,
                payload,
                bad_checksum,
                tuple,
            } => {
                let (mut src, dst) = match side {
                    Leg::Client => (self.client, self.server),
                    Leg::Server => (self.server, self.client),
                };
                match tuple {
                    Tuple::Flow => {}
                    Tuple::OtherPort => src.set_port(src.port().wrapping_add(1).max(1)),
                    Tuple::OtherAddress => src.set_ip([192, 0, 2, 99].into()),
                }
                let seq = self.host_next[idx(side)].wrapping_add(*seq_delta as u32);
                let ack = self.flow_next[idx(side)].wrapping_add(*ack_delta as u32);
                let mut p = craft(src, dst, seq, ack, *flags, *window, options, payload);
                if *bad_checksum {
                    p[36] ^= 0x5a;
                }
                p
            }
            Hostile::Mutate {
                at,
                xor,
                cut,
                fix_checksums,
            } => {
                let Some(mut p) = self.last_real[idx(side)].clone() else {
                    return;
                };
                if !p.is_empty() {
                    let i = usize::from(*at) % p.len();
                    p[i] ^= *xor;
                }
                if let Some(c) = cut {
                    p.truncate(usize::from(*c) % (p.len() + 1));
                }
                if *fix_checksums {
                    tcp::fill_checksums(&mut p);
                }
                p
            }
            Hostile::Replay => match &self.last_real[idx(side)] {
                Some(p) => p.clone(),
                None => return,
            },
            Hostile::Raw(bytes) => bytes.clone(),
        };
        self.deliver(side, &packet, trusted);
        self.transmit(None);
    }

    fn run(&mut self, ops: &[Op]) {
        for op in ops.iter().take(MAX_OPS) {
            match op {
                Op::Run { rounds, fault } => {
                    if let Some(f) = fault {
                        self.rng ^= u64::from(f.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        self.rng |= 1;
                    }
                    for _ in 0..(*rounds % MAX_ROUNDS).max(1) {
                        if !self.round(*fault) {
                            break;
                        }
                    }
                }
                Op::Advance { ms } => {
                    let at = self.net.now + Duration::from_millis(u64::from(*ms));
                    self.advance_to(at);
                }
                Op::NextTimer => {
                    if let Some(at) = self.next_timer() {
                        self.advance_to(at.max(self.net.now + Duration::from_micros(1)));
                    }
                }
                Op::Inject {
                    from,
                    checksum_trusted,
                    packet,
                } => self.inject(*from, *checksum_trusted, packet),
                Op::Abort => {
                    if self.end.is_none() {
                        self.abort();
                    }
                }
            }
            if self.end.is_some() {
                return;
            }
        }
        // Let the connection run to its end, as far as virtual time allows.
        let deadline = self.net.now + SETTLE_TIME;
        for _ in 0..SETTLE_ROUNDS {
            if self.end.is_some() {
                return;
            }
            if self.round(None) {
                continue;
            }
            match self.next_timer() {
                Some(at) if at <= deadline => {
                    self.advance_to(at.max(self.net.now + Duration::from_micros(1)))
                }
                _ => break,
            }
        }
        if self.end.is_none() {
            self.abort();
        }
    }
}

/// An IPv4 TCP segment with both checksums right.
#[allow(clippy::too_many_arguments)]
fn craft(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        unreachable!("the lab is IPv4");
    };
    let mut opts = options[..options.len().min(40)].to_vec();
    opts.resize(opts.len().div_ceil(4) * 4, 0);
    let payload = &payload[..payload.len().min(1400)];
    let tcp_len = 20 + opts.len() + payload.len();
    let total = 20 + tcp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    p.push(((20 + opts.len()) as u8 / 4) << 4);
    p.push(flags);
    p.extend_from_slice(&window.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&opts);
    p.extend_from_slice(payload);
    tcp::fill_checksums(&mut p);
    p
}

fn policy(p: &Policy) -> TlsPolicy {
    let exclude = match p.exclude {
        Exclude::Nothing => vec![],
        Exclude::Origin => vec![HostGlob::new(testkit::SNI).unwrap()],
        Exclude::Captured => vec![HostGlob::new("*.test").unwrap()],
        Exclude::Everything => vec![HostGlob::new("*").unwrap()],
    };
    let pass_or = |b: bool| {
        if b {
            PassOrBlock::Block
        } else {
            PassOrBlock::Pass
        }
    };
    let inspect_unless = |pass: bool| {
        if pass {
            PassOrInspect::Pass
        } else {
            PassOrInspect::Inspect
        }
    };
    TlsPolicy {
        non_tls: pass_or(p.non_tls_block),
        ech: inspect_unless(!p.ech_inspect),
        exclude_sni: exclude,
        legacy_tls: pass_or(p.legacy_block),
        tls13: inspect_unless(p.tls13_pass),
        no_sni: inspect_unless(p.no_sni_pass),
        on_overload: PassOrBlock::Pass,
    }
}

thread_local! {
    /// The PKI (CAs, the caching minter, the origin's configs) is made once;
    /// everything with state a flow could leave behind (bypass cache, log,
    /// upstream TLS settings) is fresh per input.
    static LAB: RefCell<Option<Lab>> = const { RefCell::new(None) };
}

fn scenario(input: &Input, lab: &Lab) {
    let tcp = FlowConfig {
        offload: input.offload,
        ..if input.small_buffers {
            FlowConfig::with_buffer_bytes(4096)
        } else {
            FlowConfig::default()
        }
    };
    let invalid = if input.policy.block_invalid {
        InvalidCertPolicy::Block
    } else {
        InvalidCertPolicy::Untrusted
    };
    let inspector: Arc<dyn api::Inspector> = if input.block_inspector {
        Arc::new(BlockInspector)
    } else {
        Arc::new(PassInspector(Arc::new(Mutex::new(Default::default()))))
    };
    let mut policies = HashMap::new();
    policies.insert(Arc::<str>::from("pol-1"), Arc::new(policy(&input.policy)));
    let ctx = Arc::new(ConnCtx {
        minter: lab.minter.clone(),
        inspector,
        log: Arc::new(MemLog::default()),
        bypass: Arc::new(BypassCache::new(BypassConfig {
            pinning_clients: 2,
            ..BypassConfig::default()
        })),
        upstream: UpstreamTls::new(testkit::roots(&[&lab.origin_ca]), invalid).unwrap(),
        policies,
        flow_ids: lab.flow_ids.clone(),
        tcp,
        hello_timeout: ConnCtx::DEFAULT_HELLO_TIMEOUT,
    });
    let (client_app, up) = match &input.client {
        Client::Tls {
            distrust_policy_ca,
            tls12_only,
            client_auth,
        } => (
            ClientApp::Tls {
                trust_policy_ca: !distrust_policy_ca,
                tls12_only: *tls12_only,
                client_auth: *client_auth,
            },
            b"GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n".to_vec(),
        ),
        Client::Hello {
            which,
            edits,
            cut,
            then,
        } => {
            let mut h = HELLOS[usize::from(*which) % HELLOS.len()].to_vec();
            for (at, xor) in edits.iter().take(16) {
                let i = usize::from(*at) % h.len();
                h[i] ^= xor;
            }
            if let Some(c) = cut {
                h.truncate(usize::from(*c) % (h.len() + 1));
            }
            h.extend_from_slice(&then[..then.len().min(4096)]);
            (ClientApp::Raw, h)
        }
        Client::Raw(b) => (ClientApp::Raw, b[..b.len().min(4096)].to_vec()),
    };
    let (server_app, down) = match &input.server {
        Server::Tls {
            tls12_only,
            require_client_auth,
        } => (
            ServerApp::Tls {
                tls12_only: *tls12_only,
                require_client_auth: *require_client_auth,
            },
            testkit::pattern(3000, 7),
        ),
        Server::Raw(b) => (ServerApp::Raw, b[..b.len().min(4096)].to_vec()),
        Server::Closed => (ServerApp::Closed, Vec::new()),
    };
    let net = lab.net(ctx, client_app, server_app, up.clone(), down.clone());
    let (client, server) = (net.flow.client_addr(), net.flow.server_addr());
    let mut h = Harness {
        net,
        client,
        server,
        silent_server: input.silent_server,
        last_real: [None, None],
        host_next: [0; 2],
        flow_next: [0; 2],
        given: [0; 2],
        rng: 0x9e37_79b9_7f4a_7c15,
        end: None,
    };
    h.transmit(None);
    h.run(&input.ops);

    let decision = h.net.flow.decision();
    let rec = h.net.flow.finish(h.net.now);
    assert!(
        rec.bytes_toserver <= h.given[0],
        "{} bytes to the server counted, {} given by the client ({:?})",
        rec.bytes_toserver,
        h.given[0],
        h.end
    );
    assert!(
        rec.bytes_toclient <= h.given[1],
        "{} bytes to the client counted, {} given by the server ({:?})",
        rec.bytes_toclient,
        h.given[1],
        h.end
    );
    let undecided = [
        Reason::Undecided,
        Reason::ServerRefused,
        Reason::ServerTimeout,
        Reason::ClientTimeout,
        Reason::Reset,
    ];
    match decision {
        None => assert!(
            undecided.contains(&rec.reason),
            "undecided flow logged as {:?}",
            rec.reason
        ),
        Some(_) => assert_ne!(
            rec.reason,
            Reason::Undecided,
            "decided flow logged undecided"
        ),
    }
    let lived = h.net.now.saturating_duration_since(h.net.t0).as_millis() as u64;
    assert_eq!(rec.duration_ms, lived, "duration of the record");

    // Without hostile input, faults or time jumps, a TLS client that trusts
    // the policy CA gets its download from a TLS server byte for byte,
    // inspected or passed, and the connection ends.
    let benign = !input.silent_server
        && !input.block_inspector
        && input
            .ops
            .iter()
            .take(MAX_OPS)
            .all(|op| matches!(op, Op::Run { fault: None, .. }));
    if let (
        true,
        Client::Tls {
            distrust_policy_ca: false,
            client_auth: false,
            ..
        },
        Server::Tls {
            require_client_auth: false,
            ..
        },
    ) = (benign, &input.client, &input.server)
    {
        assert_eq!(h.end, Some(End::Finished), "benign connection did not end");
        assert!(
            [Reason::Inspected, Reason::Tls13, Reason::Excluded].contains(&rec.reason),
            "benign connection logged {:?}",
            rec.reason
        );
        assert!(h.net.client_app().got == down, "download corrupted");
        assert!(h.net.server_app().got == up, "upload corrupted");
    }
    if trace() {
        // One line per input, to see which paths a corpus reaches:
        // `TLSINSPECT_FUZZ_TRACE=1 cargo fuzz run intercepted_flow <corpus> -- -runs=0`.
        let client = match &input.client {
            Client::Tls { .. } => "tls",
            Client::Hello { .. } => "hello",
            Client::Raw(_) => "raw",
        };
        let server = match &input.server {
            Server::Tls { .. } => "tls",
            Server::Raw(_) => "raw",
            Server::Closed => "closed",
        };
        eprintln!(
            "trace: client={client} server={server}{} action={:?} reason={} end={:?} toserver={} toclient={} ops={}",
            if input.silent_server { "(silent)" } else { "" },
            rec.action,
            rec.reason.as_str(),
            h.end,
            rec.bytes_toserver,
            rec.bytes_toclient,
            input.ops.len(),
        );
    }
}

fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("TLSINSPECT_FUZZ_TRACE").is_some())
}

fuzz_target!(|input: Input| {
    LAB.with(|lab| {
        let mut lab = lab.borrow_mut();
        let lab = lab.get_or_insert_with(Lab::new);
        scenario(&input, lab);
    });
});
