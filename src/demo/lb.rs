//! The test lab's gateway load balancer (`lab-helper lb`, DESIGN.md §13).
//!
//! It behaves as AWS's GWLB does toward its targets, so the fleet tests see
//! what a cloud deployment sees:
//!
//! - It taps the client-side and server-side ports with AF_PACKET (the
//!   kernel of its namespace drops every IP packet at tc ingress, so nothing
//!   else moves them) and sends each packet GENEVE-encapsulated (RFC 8926)
//!   over UDP to one appliance, with AWS's option class `0x0108`: endpoint
//!   id, attachment id, and a flow cookie per flow and direction. The
//!   outer UDP goes to port 6081 from a source port the flow hash picks
//!   (a pool of sockets from [`SRC_PORT_BASE`], RFC 8926's entropy
//!   recommendation); the kernel builds the outer headers. Its UDP checksum
//!   is the kernel's, not 0 as AWS sends it: zero needs `SO_NO_CHECK`, a
//!   socket option no crate of ours wraps safely; RFC 8926 allows both and
//!   an appliance must accept both. Returns are accepted on every pool port
//!   (an appliance that swaps the ports) and on 6081 (one that answers to
//!   the GENEVE port). It carries only what crosses it, as a cloud route
//!   table hands a GWLB: from the client side what is not for the client
//!   prefix, from the server side what is (its own addresses never).
//! - Flows are sticky: keyed by the canonical (symmetric) 5-tuple, assigned
//!   by a hash of it to one of the healthy appliances, both directions to the
//!   same one; an assigned flow stays on its appliance when that turns
//!   unhealthy (GWLB lets existing flows drain), and is forgotten after 350 s
//!   idle. An unhealthy appliance gets no new flows; with none healthy a new
//!   flow's packets are dropped and counted.
//! - What comes back is checked before it is delivered: a valid header, the
//!   options byte-identical to those sent for that flow and direction, the
//!   VNI unchanged, the outer source the flow's appliance. Refused packets
//!   are dropped and counted, so a test sees why a download failed.
//! - Health checks are HTTP `GET /health` every 500 ms, 1 s timeout; two
//!   consecutive failures make an appliance unhealthy, one success healthy.
//!   An appliance starts unhealthy ("initial") until its first check passes.
//!
//! Super-frames the kernel hands the tap (TSO on the senders, GRO on the
//! ports: the lab's "offloads on") are cut into MTU-sized segments with
//! complete checksums first, as the network between a real GWLB and its
//! clients would have carried them; an inner packet larger than the
//! delivering port's MTU is cut the same way on the way out.
//!
//! The decisions live in [`Balancer`], which takes `now` and touches no
//! socket; [`run`] is the I/O shell around it (plain threads and blocking
//! std sockets; see [`Shell::capture_loop`] for why the taps poll).

use std::collections::HashMap;
use std::hash::Hasher as _;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tlsinspect_pipeline::frame::{parse_ip, IpView, Transport};
use tlsinspect_pipeline::gso;
use tlsinspect_pipeline::io::afpacket::{AfPacket, Fanout, RingConfig};
use tlsinspect_pipeline::io::{Device as _, Offload, RxMeta};

use super::geneve::{self, Packet, Repr};

/// Flows idle longer than this are forgotten (GWLB's TCP idle timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(350);
/// Interval between health checks of one appliance.
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// A health check not answered within this fails.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive failed checks that make an appliance unhealthy.
pub const UNHEALTHY_AFTER: u32 = 2;
/// Most flows the table holds; new flows beyond it are dropped and counted.
pub const MAX_FLOWS: usize = 65_536;
/// First UDP source port of the pool the flow hash picks from.
pub const SRC_PORT_BASE: u16 = 49_152;

/// Which way a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Captured on the client-side port, bound for a server.
    ToServer,
    /// Captured on the server-side port, bound for a client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// The canonical 5-tuple: the same for both directions of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    proto: u8,
    lo: (IpAddr, u16),
    hi: (IpAddr, u16),
}

impl FlowKey {
    /// The key of a parsed packet; ports count for TCP and UDP only (a
    /// 3-tuple for the rest, as GWLB does).
    pub fn of(ip: &IpView<'_>, raw: &[u8]) -> FlowKey {
        let proto = match ip.src {
            IpAddr::V4(_) => raw.get(9).copied().unwrap_or(0),
            IpAddr::V6(_) => raw.get(6).copied().unwrap_or(0),
        };
        let (sp, dp) = match ip.transport {
            Transport::Tcp(t) => (t.src_port, t.dst_port),
            Transport::Udp {
                src_port, dst_port, ..
            } => (src_port, dst_port),
            _ => (0, 0),
        };
        let (a, b) = ((ip.src, sp), (ip.dst, dp));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        FlowKey { proto, lo, hi }
    }

    /// The symmetric flow hash: of the canonical tuple, so both directions
    /// agree. SipHash with fixed keys, the same in every run.
    pub fn hash32(&self) -> u32 {
        #[allow(deprecated)] // SipHasher: stable keys across runs are the point.
        let mut h = std::hash::SipHasher::new_with_keys(0x7469_6e73, 0x6c62);
        h.write_u8(self.proto);
        for (ip, port) in [self.lo, self.hi] {
            match ip {
                IpAddr::V4(a) => h.write(&a.octets()),
                IpAddr::V6(a) => h.write(&a.octets()),
            }
            h.write_u16(port);
        }
        let v = h.finish();
        (v ^ (v >> 32)) as u32
    }
}

/// One flow the balancer carries.
#[derive(Debug, Clone)]
struct Flow {
    appliance: usize,
    hash: u32,
    /// The client-side and server-side endpoints, as first seen.
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    /// The GENEVE options sent with each direction, to compare returns with.
    options: [Vec<u8>; 2],
    packets: [u64; 2],
    returned: [u64; 2],
    last_seen: Instant,
}

/// One appliance behind the balancer and what it was given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApplianceStats {
    /// Its GENEVE and health-check address.
    pub addr: String,
    /// Whether it gets new flows.
    pub healthy: bool,
    /// Changes of `healthy` (the first passing check counts: appliances start unhealthy).
    pub transitions: u64,
    /// Health checks passed and failed.
    pub checks_passed: u64,
    pub checks_failed: u64,
    /// Flows assigned to it since the start.
    pub flows_assigned: u64,
    /// Flows assigned to it in the table now.
    pub active_flows: u64,
    /// GENEVE datagrams sent to it and their UDP payload bytes.
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// GENEVE datagrams received from it (accepted or not) and their bytes.
    pub packets_received: u64,
    pub bytes_received: u64,
}

/// One flow in the stats file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowStats {
    /// IP protocol number.
    pub proto: u8,
    /// Client-side endpoint, `addr:port`.
    pub client: String,
    /// Server-side endpoint, `addr:port`.
    pub server: String,
    /// Index of its appliance in `appliances`.
    pub appliance: usize,
    /// Packets sent toward the appliance, per direction.
    pub to_server: u64,
    pub to_client: u64,
    /// Packets of it delivered after the appliance returned them.
    pub returned_to_server: u64,
    pub returned_to_client: u64,
    /// Milliseconds since its last packet.
    pub idle_ms: u64,
}

/// Totals of the balancer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    /// IP packets taken from the client-side and server-side ports.
    pub captured_client: u64,
    pub captured_server: u64,
    /// Frames on the ports that were not IP for someone else (ARP, other MACs, VLANs).
    pub ignored: u64,
    /// Captured packets that did not parse as IP.
    pub unparsable: u64,
    /// Captured packets not bound for the other side (see [`Refusal::NotRouted`]).
    pub not_routed: u64,
    /// Captured super-frames (GSO/GRO, the "offloads on" setting) cut into segments.
    pub super_frames: u64,
    /// New flows' packets dropped: no healthy appliance.
    pub no_healthy_appliance: u64,
    /// New flows' packets dropped: the flow table is full.
    pub flow_table_full: u64,
    /// Flows forgotten after the idle timeout.
    pub flows_expired: u64,
    /// Datagrams the UDP socket refused (buffer full).
    pub send_errors: u64,
    /// Returns that are not valid GENEVE (version, lengths, protocol type,
    /// inner packet).
    pub malformed_returns: u64,
    /// Returns whose options differ from those sent for that flow and direction.
    pub option_mismatches: u64,
    /// Returns with another VNI than the one sent.
    pub vni_mismatches: u64,
    /// Returns from an address other than the flow's appliance.
    pub wrong_source_returns: u64,
    /// Returns of a flow the balancer does not carry.
    pub unknown_flow_returns: u64,
    /// Inner packets delivered to the client-side and server-side ports.
    pub delivered_client: u64,
    pub delivered_server: u64,
    /// Inner packets too large for the port that could not be cut.
    pub oversize_drops: u64,
    /// Frames the ports refused on transmit.
    pub tx_dropped: u64,
}

/// The stats file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LbStats {
    /// The VNI it sends.
    pub vni: u32,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Whether this is the file written at exit.
    pub final_write: bool,
    pub appliances: Vec<ApplianceStats>,
    pub totals: Totals,
    /// Flows in the table now, at most 10,000 of them.
    pub flows: Vec<FlowStats>,
}

/// What a balancer stamps on every packet.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The 24-bit VNI.
    pub vni: u32,
    /// AWS option type 1.
    pub endpoint_id: u64,
    /// AWS option type 2.
    pub attachment_id: u64,
}

/// Where to send an encapsulated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encapsulated {
    /// Index of the appliance.
    pub appliance: usize,
    /// Its GENEVE address.
    pub to: SocketAddrV4,
    /// The flow hash (the UDP source port is picked from it).
    pub hash: u32,
}

/// Why a packet was not sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not IP.
    Unparsable,
    /// Not for the other side: a client's packet to the client prefix (the
    /// balancer's own address among it), a server's to anywhere else. Cloud
    /// route tables send a GWLB only what crosses it.
    NotRouted,
    /// A new flow and no healthy appliance.
    NoHealthyAppliance,
    /// A new flow and a full table.
    TableFull,
    /// Returned: not valid GENEVE.
    Malformed,
    /// Returned: a flow the balancer does not carry.
    UnknownFlow,
    /// Returned: not from the flow's appliance.
    WrongSource,
    /// Returned: another VNI.
    VniMismatch,
    /// Returned: other options than were sent.
    OptionMismatch,
}

/// The balancer's state and decisions, sans-IO.
#[derive(Debug)]
pub struct Balancer {
    id: Identity,
    appliances: Vec<ApplianceStats>,
    /// The appliances' addresses, by index (`appliances[i].addr` as text).
    addrs: Vec<Ipv4Addr>,
    failures: Vec<u32>,
    flows: HashMap<FlowKey, Flow>,
    totals: Totals,
    started: Instant,
    client_prefix: Ipv4Net,
}

impl Balancer {
    /// A balancer for `appliances` (all unhealthy until checked); packets
    /// bound for `client_prefix` are delivered to the client side.
    pub fn new(
        id: Identity,
        appliances: &[Ipv4Addr],
        client_prefix: Ipv4Net,
        now: Instant,
    ) -> Balancer {
        Balancer {
            id,
            appliances: appliances
                .iter()
                .map(|a| ApplianceStats {
                    addr: a.to_string(),
                    ..ApplianceStats::default()
                })
                .collect(),
            addrs: appliances.to_vec(),
            failures: vec![0; appliances.len()],
            flows: HashMap::new(),
            totals: Totals::default(),
            started: now,
            client_prefix,
        }
    }

    fn addr(&self, i: usize) -> Ipv4Addr {
        self.addrs[i]
    }

    /// Records a health check of appliance `i`.
    pub fn health(&mut self, i: usize, ok: bool) {
        let a = &mut self.appliances[i];
        let was = a.healthy;
        if ok {
            a.checks_passed += 1;
            self.failures[i] = 0;
            a.healthy = true;
        } else {
            a.checks_failed += 1;
            self.failures[i] += 1;
            if self.failures[i] >= UNHEALTHY_AFTER {
                a.healthy = false;
            }
        }
        if a.healthy != was {
            a.transitions += 1;
        }
    }

    /// Encapsulates the IP packet `packet`, travelling `dir`, into `out`
    /// (cleared first) and says where it goes.
    pub fn encapsulate(
        &mut self,
        packet: &[u8],
        dir: Direction,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Encapsulated, Refusal> {
        let ip = parse_ip(packet).map_err(|_| {
            self.totals.unparsable += 1;
            Refusal::Unparsable
        })?;
        let packet = &packet[..ip.len.min(packet.len())];
        if self.direction_to(ip.dst) != dir {
            self.totals.not_routed += 1;
            return Err(Refusal::NotRouted);
        }
        let key = FlowKey::of(&ip, packet);
        if !self.flows.contains_key(&key) {
            self.new_flow(key, &ip, dir, now)?;
        }
        let flow = self.flows.get_mut(&key).expect("inserted above");
        flow.last_seen = now;
        flow.packets[dir.index()] += 1;
        out.clear();
        Repr {
            vni: self.id.vni,
            protocol: if matches!(ip.src, IpAddr::V4(_)) {
                geneve::PROTO_IPV4
            } else {
                geneve::PROTO_IPV6
            },
            options: flow.options[dir.index()].clone(),
        }
        .emit(out);
        out.extend_from_slice(packet);
        let (appliance, hash) = (flow.appliance, flow.hash);
        let a = &mut self.appliances[appliance];
        a.packets_sent += 1;
        a.bytes_sent += out.len() as u64;
        Ok(Encapsulated {
            appliance,
            to: SocketAddrV4::new(self.addr(appliance), geneve::PORT),
            hash,
        })
    }

    fn new_flow(
        &mut self,
        key: FlowKey,
        ip: &IpView<'_>,
        dir: Direction,
        now: Instant,
    ) -> Result<(), Refusal> {
        if self.flows.len() >= MAX_FLOWS {
            self.totals.flow_table_full += 1;
            return Err(Refusal::TableFull);
        }
        let healthy: Vec<usize> = (0..self.appliances.len())
            .filter(|&i| self.appliances[i].healthy)
            .collect();
        if healthy.is_empty() {
            self.totals.no_healthy_appliance += 1;
            return Err(Refusal::NoHealthyAppliance);
        }
        let hash = key.hash32();
        let appliance = healthy[hash as usize % healthy.len()];
        self.appliances[appliance].flows_assigned += 1;
        let ports = match ip.transport {
            Transport::Tcp(t) => (t.src_port, t.dst_port),
            Transport::Udp {
                src_port, dst_port, ..
            } => (src_port, dst_port),
            _ => (0, 0),
        };
        let (src, dst) = ((ip.src, ports.0), (ip.dst, ports.1));
        let (client, server) = match dir {
            Direction::ToServer => (src, dst),
            Direction::ToClient => (dst, src),
        };
        let cookie = || rand::random::<u32>();
        let options = [
            geneve::aws_options(self.id.endpoint_id, self.id.attachment_id, cookie()),
            geneve::aws_options(self.id.endpoint_id, self.id.attachment_id, cookie()),
        ];
        self.flows.insert(
            key,
            Flow {
                appliance,
                hash,
                client,
                server,
                options,
                packets: [0; 2],
                returned: [0; 2],
                last_seen: now,
            },
        );
        Ok(())
    }

    /// Checks a GENEVE datagram an appliance sent from `from` and returns
    /// the inner packet and which way it goes on.
    pub fn decapsulate<'a>(
        &mut self,
        from: Ipv4Addr,
        datagram: &'a [u8],
        now: Instant,
    ) -> Result<(Direction, &'a [u8]), Refusal> {
        if let Some(i) = self.addrs.iter().position(|&a| a == from) {
            let a = &mut self.appliances[i];
            a.packets_received += 1;
            a.bytes_received += datagram.len() as u64;
        }
        let Ok(g) = Packet::new_checked(datagram) else {
            self.totals.malformed_returns += 1;
            return Err(Refusal::Malformed);
        };
        let inner = &datagram[g.header_len()..];
        let Ok(ip) = parse_ip(inner) else {
            self.totals.malformed_returns += 1;
            return Err(Refusal::Malformed);
        };
        let inner = &inner[..ip.len.min(inner.len())];
        let key = FlowKey::of(&ip, inner);
        let dir = self.direction_to(ip.dst);
        let Some(flow) = self.flows.get_mut(&key) else {
            self.totals.unknown_flow_returns += 1;
            return Err(Refusal::UnknownFlow);
        };
        let appliance = flow.appliance;
        if self.addrs[appliance] != from {
            self.totals.wrong_source_returns += 1;
            return Err(Refusal::WrongSource);
        }
        if g.vni() != self.id.vni {
            self.totals.vni_mismatches += 1;
            return Err(Refusal::VniMismatch);
        }
        if g.options_bytes() != flow.options[dir.index()] {
            self.totals.option_mismatches += 1;
            return Err(Refusal::OptionMismatch);
        }
        flow.returned[dir.index()] += 1;
        flow.last_seen = now;
        match dir {
            Direction::ToClient => self.totals.delivered_client += 1,
            Direction::ToServer => self.totals.delivered_server += 1,
        }
        Ok((dir, inner))
    }

    /// Which way a packet to `dst` travels: toward the clients for the
    /// client prefix, else toward the servers.
    fn direction_to(&self, dst: IpAddr) -> Direction {
        match dst {
            IpAddr::V4(d) if self.client_prefix.contains(&d) => Direction::ToClient,
            _ => Direction::ToServer,
        }
    }

    /// Forgets flows idle longer than [`IDLE_TIMEOUT`].
    pub fn expire(&mut self, now: Instant) {
        let before = self.flows.len();
        self.flows
            .retain(|_, f| now.saturating_duration_since(f.last_seen) <= IDLE_TIMEOUT);
        self.totals.flows_expired += (before - self.flows.len()) as u64;
    }

    /// Counts a packet captured on a port.
    pub fn count_captured(&mut self, dir: Direction) {
        match dir {
            Direction::ToServer => self.totals.captured_client += 1,
            Direction::ToClient => self.totals.captured_server += 1,
        }
    }

    /// The totals, for the I/O shell's own counting.
    pub fn totals_mut(&mut self) -> &mut Totals {
        &mut self.totals
    }

    /// What the stats file shows.
    pub fn stats(&self, now: Instant) -> LbStats {
        let mut appliances = self.appliances.clone();
        for f in self.flows.values() {
            appliances[f.appliance].active_flows += 1;
        }
        let ep = |(ip, port): (IpAddr, u16)| SocketAddr::new(ip, port).to_string();
        let mut flows: Vec<FlowStats> = self
            .flows
            .iter()
            .take(10_000)
            .map(|(k, f)| FlowStats {
                proto: k.proto,
                client: ep(f.client),
                server: ep(f.server),
                appliance: f.appliance,
                to_server: f.packets[0],
                to_client: f.packets[1],
                returned_to_server: f.returned[0],
                returned_to_client: f.returned[1],
                idle_ms: now.saturating_duration_since(f.last_seen).as_millis() as u64,
            })
            .collect();
        flows.sort_by(|a, b| (&a.client, &a.server).cmp(&(&b.client, &b.server)));
        LbStats {
            vni: self.id.vni,
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            final_write: false,
            appliances,
            totals: self.totals.clone(),
            flows,
        }
    }
}

/// How `lab-helper lb` is set up.
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// The client-side port (`lbc`).
    pub client_iface: String,
    /// The server-side port (`lbs`).
    pub server_iface: String,
    /// Inner packets to these addresses leave by the client-side port.
    pub client_prefix: Ipv4Net,
    /// The MAC address of the client-side neighbour (`c0`).
    pub client_mac: [u8; 6],
    /// The MAC address of the server-side neighbour (`s0`).
    pub server_mac: [u8; 6],
    /// The balancer's GENEVE address.
    pub local: Ipv4Addr,
    /// The appliances' GENEVE addresses.
    pub appliances: Vec<Ipv4Addr>,
    /// TCP port of their health check (`GET /health`).
    pub health_port: u16,
    /// VNI and AWS ids to send.
    pub identity: Identity,
    /// How many UDP source ports the flow hash picks from.
    pub src_ports: u16,
    /// Where the stats JSON goes (replaced whole, at least every second).
    pub stats: PathBuf,
    /// The balancer stops when this file appears (or on SIGTERM/SIGINT).
    pub stop_file: Option<PathBuf>,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        bail!("MAC address {s:?} is not six hex bytes");
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("MAC address {s:?}"))?;
    }
    Ok(mac)
}

fn sys_net(iface: &str, file: &str) -> anyhow::Result<String> {
    let path = format!("/sys/class/net/{iface}/{file}");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .to_owned())
}

/// A tapped port: its AF_PACKET socket, addresses and MTU.
struct Port {
    dev: Mutex<AfPacket>,
    mac: [u8; 6],
    neighbour: [u8; 6],
    mtu: usize,
    /// Which way what is captured here travels.
    dir: Direction,
}

impl Port {
    fn open(iface: &str, neighbour: [u8; 6], dir: Direction) -> anyhow::Result<Port> {
        // 8 MiB of ring per port: the lab's bursts are a few super-frames.
        let ring = RingConfig {
            block_count: 8,
            ..RingConfig::default()
        };
        let dev = AfPacket::open(iface, ring, Fanout::None, &[])
            .with_context(|| format!("tapping {iface}"))?;
        Ok(Port {
            dev: Mutex::new(dev),
            mac: parse_mac(&sys_net(iface, "address")?)?,
            neighbour,
            mtu: sys_net(iface, "mtu")?.parse().context("MTU")?,
            dir,
        })
    }

    /// Sends the IP packet `ip` to the neighbour now, cut to the MTU if it
    /// is TCP; counts what it cannot send.
    fn deliver(&self, ip: &[u8], totals: &mut Totals) -> std::io::Result<()> {
        let ethertype: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        let mut frame = Vec::with_capacity(14 + ip.len());
        frame.extend_from_slice(&self.neighbour);
        frame.extend_from_slice(&self.mac);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(ip);
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        if ip.len() <= self.mtu {
            dev.send(&frame, &Offload::default())?;
            return dev.flush();
        }
        let headers = parse_ip(ip)
            .ok()
            .and_then(|v| Some(ip.len() - v.tcp()?.payload.len()))
            .filter(|&h| h < self.mtu);
        let Some(headers) = headers else {
            totals.oversize_drops += 1;
            return Ok(());
        };
        let offload = Offload {
            gso_type: if ethertype == 0x0800 {
                Offload::GSO_TCPV4
            } else {
                Offload::GSO_TCPV6
            },
            gso_size: (self.mtu - headers) as u16,
            ..Offload::default()
        };
        for seg in gso::segment(&frame, &offload, 14) {
            dev.send(&seg, &Offload::default())?;
        }
        dev.flush()
    }
}

/// Completes a checksum the sender left to the NIC (`NEEDS_CSUM`): the
/// ones'-complement sum from `csum_start` to the end, which already holds
/// the pseudo-header sum in the checksum field.
fn complete_checksum(frame: &mut [u8], o: &Offload) {
    let start = usize::from(o.csum_start);
    let at = start + usize::from(o.csum_offset);
    if at + 2 > frame.len() {
        return;
    }
    let mut sum: u64 = 0;
    for c in frame[start..].chunks(2) {
        sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[at..at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// What the I/O threads share.
struct Shell {
    bal: Mutex<Balancer>,
    client: Port,
    server: Port,
    /// Sockets of the source-port pool: each sends the flows whose hash
    /// picks its port and receives what appliances send back to that port.
    pool: Vec<UdpSocket>,
    stop: Arc<AtomicBool>,
    failure: Mutex<Option<anyhow::Error>>,
}

impl Shell {
    fn bal(&self) -> std::sync::MutexGuard<'_, Balancer> {
        self.bal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, e: anyhow::Error) {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Takes the frames of one port's ring: IP for someone else, cut into
    /// segments with complete checksums, each encapsulated and sent.
    ///
    /// The AF_PACKET device only reads without blocking, and a readiness
    /// wait on its descriptor would need `unsafe` outside the
    /// `tlsinspect-io` crate (tokio's `AsyncFd` constructors are `unsafe`
    /// now), so an empty ring backs off: a few yields, then sleeps
    /// doubling from 20 us to 1 ms.
    /// Under load the ring is never empty; idle, it costs ~1,000 wakeups a
    /// second, and the first packet after a pause waits up to 1 ms.
    fn capture_loop(&self, port: &Port) {
        const BUDGET: usize = 128;
        let mut idle = 0u32;
        let mut parts: Vec<Vec<u8>> = Vec::with_capacity(BUDGET);
        let mut out = Vec::with_capacity(65_536);
        while !self.stopping() {
            parts.clear();
            let (mut frames, mut supers) = (0usize, 0u64);
            let got =
                port.dev
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .recv(BUDGET, |frame, meta| {
                        frames += usize::from(take_frame(port, frame, meta, &mut parts));
                        supers += u64::from(meta.offload.is_gso());
                    });
            let n = match got {
                Ok(n) => n,
                Err(e) => return self.fail(anyhow::Error::from(e).context("tapping a port")),
            };
            if n == 0 {
                idle = idle.saturating_add(1);
                if idle < 8 {
                    std::thread::yield_now();
                } else {
                    let us = (20u64 << (idle - 8).min(6)).min(1000);
                    std::thread::sleep(Duration::from_micros(us));
                }
                continue;
            }
            idle = 0;
            let now = Instant::now();
            let mut bal = self.bal();
            bal.totals_mut().ignored += (n - frames) as u64;
            bal.totals_mut().super_frames += supers;
            for part in &parts {
                bal.count_captured(port.dir);
                let Ok(e) = bal.encapsulate(&part[14..], port.dir, now, &mut out) else {
                    continue;
                };
                let sock = &self.pool[(e.hash >> 16) as usize % self.pool.len()];
                if sock.send_to(&out, e.to).is_err() {
                    bal.totals_mut().send_errors += 1;
                }
            }
        }
    }

    /// Receives what appliances send to `sock` and delivers the inner packets.
    fn return_loop(&self, sock: &UdpSocket) {
        let mut buf = vec![0u8; 65_536];
        while !self.stopping() {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return self.fail(anyhow::Error::from(e).context("receiving GENEVE")),
            };
            let SocketAddr::V4(from) = from else { continue };
            let mut bal = self.bal();
            let Ok((dir, inner)) = bal.decapsulate(*from.ip(), &buf[..n], Instant::now()) else {
                continue;
            };
            let port = match dir {
                Direction::ToServer => &self.server,
                Direction::ToClient => &self.client,
            };
            if let Err(e) = port.deliver(inner, bal.totals_mut()) {
                drop(bal);
                return self.fail(anyhow::Error::from(e).context("delivering a returned packet"));
            }
        }
    }

    /// Checks appliance `i` at `addr` every [`HEALTH_INTERVAL`].
    fn health_loop(&self, i: usize, addr: SocketAddrV4) {
        let mut next = Instant::now();
        while !self.stopping() {
            let ok = check(addr);
            self.bal().health(i, ok);
            next += HEALTH_INTERVAL;
            let now = Instant::now();
            if next < now {
                next = now;
            }
            std::thread::sleep(next - now);
        }
    }

    fn port_drops(&self) -> u64 {
        [&self.client, &self.server]
            .iter()
            .map(|p| p.dev.lock().unwrap_or_else(|e| e.into_inner()).tx_dropped())
            .sum()
    }

    fn stats(&self, now: Instant) -> LbStats {
        let mut s = self.bal().stats(now);
        s.totals.tx_dropped = self.port_drops();
        s
    }
}

/// Copies what the balancer carries out of a received frame: IPv4/IPv6 to
/// this port's MAC, untagged, as MTU-sized segments with complete
/// checksums. Returns whether it took the frame.
fn take_frame(port: &Port, frame: &mut [u8], meta: RxMeta, parts: &mut Vec<Vec<u8>>) -> bool {
    let ours = frame.len() > 14
        && frame[..6] == port.mac
        && meta.vlan.is_none()
        && matches!(u16::from_be_bytes([frame[12], frame[13]]), 0x0800 | 0x86dd);
    if !ours {
        return false;
    }
    let o = meta.offload;
    if o.is_gso() {
        parts.extend(gso::segment(frame, &o, 14));
        return true;
    }
    if o.flags & Offload::NEEDS_CSUM != 0 {
        complete_checksum(frame, &o);
    }
    parts.push(frame.to_vec());
    true
}

/// One `GET /health` within [`HEALTH_TIMEOUT`]: true for a 200.
fn check(addr: SocketAddrV4) -> bool {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::V4(addr), HEALTH_TIMEOUT)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left))?;
        s.set_write_timeout(Some(left))?;
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            match s.read(&mut buf)? {
                0 => break,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&head);
        let mut it = line.split_whitespace();
        Ok(it.next().is_some_and(|v| v.starts_with("HTTP/1.")) && it.next() == Some("200"))
    };
    attempt().unwrap_or(false)
}

/// Writes the stats file whole (a reader never sees half of it).
pub fn write_stats(path: &Path, stats: &LbStats) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(stats)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Reads a stats file [`run`] wrote.
pub fn read_stats(path: &Path) -> anyhow::Result<LbStats> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Runs the load balancer until SIGTERM/SIGINT or the stop file, writing
/// the stats file every 500 ms and at exit.
///
/// Threads: one per tapped port (capture), one per UDP socket (returns),
/// one per appliance (health checks); this one writes the stats.
pub fn run(cfg: LbConfig) -> anyhow::Result<()> {
    if cfg.appliances.is_empty() {
        bail!("a load balancer needs at least one appliance");
    }
    if cfg.src_ports == 0 || cfg.src_ports > 1024 {
        bail!("--src-ports must be 1..=1024");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&signalled))?;
    }
    let bind = |port: u16| -> anyhow::Result<UdpSocket> {
        let addr = SocketAddrV4::new(cfg.local, port);
        let s = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
        let raw = socket2::SockRef::from(&s);
        let _ = raw.set_send_buffer_size(4 << 20);
        let _ = raw.set_recv_buffer_size(4 << 20);
        // Receivers wake up to see the stop flag.
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(s)
    };
    let pool = (0..cfg.src_ports)
        .map(|i| bind(SRC_PORT_BASE + i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // For appliances that answer to the GENEVE port rather than swapping ports.
    let listener = bind(geneve::PORT)?;
    let started = Instant::now();
    let shell = Shell {
        bal: Mutex::new(Balancer::new(
            cfg.identity.clone(),
            &cfg.appliances,
            cfg.client_prefix,
            started,
        )),
        client: Port::open(&cfg.client_iface, cfg.client_mac, Direction::ToServer)?,
        server: Port::open(&cfg.server_iface, cfg.server_mac, Direction::ToClient)?,
        pool,
        stop,
        failure: Mutex::new(None),
    };
    std::thread::scope(|scope| {
        let shell = &shell;
        scope.spawn(|| shell.capture_loop(&shell.client));
        scope.spawn(|| shell.capture_loop(&shell.server));
        let listener = &listener;
        scope.spawn(move || shell.return_loop(listener));
        for sock in &shell.pool {
            scope.spawn(move || shell.return_loop(sock));
        }
        for (i, a) in cfg.appliances.iter().enumerate() {
            let addr = SocketAddrV4::new(*a, cfg.health_port);
            scope.spawn(move || shell.health_loop(i, addr));
        }
        let mut last_write: Option<Instant> = None;
        let result = loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            if last_write.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(500)) {
                shell.bal().expire(now);
                if let Err(e) = write_stats(&cfg.stats, &shell.stats(now)) {
                    shell.fail(e);
                }
                last_write = Some(now);
            }
            if let Some(e) = shell
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                break Err(e);
            }
            if signalled.load(Ordering::Relaxed)
                || cfg.stop_file.as_deref().is_some_and(Path::exists)
            {
                break Ok(());
            }
        };
        shell.stop.store(true, Ordering::Relaxed);
        let mut stats = shell.stats(Instant::now());
        stats.final_write = true;
        write_stats(&cfg.stats, &stats)?;
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A0: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 131);
    const A1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 132);

    fn balancer(now: Instant) -> Balancer {
        let mut b = Balancer::new(
            Identity {
                vni: 77,
                endpoint_id: 1,
                attachment_id: 2,
            },
            &[A0, A1],
            "192.0.2.0/24".parse().unwrap(),
            now,
        );
        b.health(0, true);
        b.health(1, true);
        b
    }

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1000)
            .ack(1);
        let mut p = Vec::new();
        builder.write(&mut p, b"data").unwrap();
        p
    }

    fn request(port: u16) -> Vec<u8> {
        tcp([192, 0, 2, 10], port, [203, 0, 113, 10], 443)
    }

    fn response(port: u16) -> Vec<u8> {
        tcp([203, 0, 113, 10], 443, [192, 0, 2, 10], port)
    }

    fn encap(b: &mut Balancer, p: &[u8], dir: Direction, now: Instant) -> (Encapsulated, Vec<u8>) {
        let mut out = Vec::new();
        let e = b.encapsulate(p, dir, now, &mut out).unwrap();
        (e, out)
    }

    /// Opens a flow from the first client port whose hash puts it on
    /// appliance `a` (both healthy) and returns the port.
    fn port_on(b: &mut Balancer, a: usize, now: Instant) -> u16 {
        let p = (40_000..41_000)
            .find(|&p| {
                FlowKey::of(&parse_ip(&request(p)).unwrap(), &request(p)).hash32() % 2 == a as u32
            })
            .unwrap();
        let (e, _) = encap(b, &request(p), Direction::ToServer, now);
        assert_eq!(e.appliance, a);
        p
    }

    #[test]
    fn both_directions_of_a_flow_go_to_one_appliance_with_their_own_cookie() {
        let now = Instant::now();
        let mut b = balancer(now);
        let mut seen = [0; 2];
        for port in 40_000..40_064 {
            let (up, up_bytes) = encap(&mut b, &request(port), Direction::ToServer, now);
            let (down, down_bytes) = encap(&mut b, &response(port), Direction::ToClient, now);
            assert_eq!(up.appliance, down.appliance, "port {port}");
            assert_eq!(up.hash, down.hash);
            seen[up.appliance] += 1;
            let (u, d) = (
                Packet::new_checked(&up_bytes[..]).unwrap(),
                Packet::new_checked(&down_bytes[..]).unwrap(),
            );
            assert_eq!((u.vni(), u.protocol()), (77, geneve::PROTO_IPV4));
            assert_eq!(u.payload(), &request(port)[..]);
            // Same endpoint and attachment ids, a cookie per direction.
            assert_eq!(u.options_bytes()[..24], d.options_bytes()[..24]);
            assert_ne!(u.options_bytes()[24..], d.options_bytes()[24..]);
            // Each direction keeps its header.
            let (_, again) = encap(&mut b, &request(port), Direction::ToServer, now);
            assert_eq!(again, up_bytes);
        }
        assert!(seen[0] > 0 && seen[1] > 0, "64 flows over both: {seen:?}");
        let s = b.stats(now);
        assert_eq!(s.flows.len(), 64);
        assert_eq!(
            s.appliances[0].flows_assigned + s.appliances[1].flows_assigned,
            64
        );
    }

    #[test]
    fn returns_are_checked_then_delivered_toward_their_side() {
        let now = Instant::now();
        let mut b = balancer(now);
        let port = port_on(&mut b, 1, now);
        let (_, up) = encap(&mut b, &request(port), Direction::ToServer, now);
        let (_, down) = encap(&mut b, &response(port), Direction::ToClient, now);

        let (dir, inner) = b.decapsulate(A1, &up, now).unwrap();
        assert_eq!((dir, inner), (Direction::ToServer, &request(port)[..]));
        let (dir, _) = b.decapsulate(A1, &down, now).unwrap();
        assert_eq!(dir, Direction::ToClient);

        assert_eq!(b.decapsulate(A0, &up, now), Err(Refusal::WrongSource));
        let mut swapped = up.clone();
        swapped[8 + 24..8 + 32].copy_from_slice(&down[8 + 24..8 + 32]);
        assert_eq!(
            b.decapsulate(A1, &swapped, now),
            Err(Refusal::OptionMismatch)
        );
        let mut vni = up.clone();
        vni[6] ^= 1;
        assert_eq!(b.decapsulate(A1, &vni, now), Err(Refusal::VniMismatch));
        assert_eq!(b.decapsulate(A1, &up[..20], now), Err(Refusal::Malformed));
        let mut unknown = Vec::new();
        Repr {
            vni: 77,
            protocol: geneve::PROTO_IPV4,
            options: Vec::new(),
        }
        .emit(&mut unknown);
        unknown.extend_from_slice(&request(port + 1));
        assert_eq!(b.decapsulate(A1, &unknown, now), Err(Refusal::UnknownFlow));

        let t = b.stats(now).totals;
        assert_eq!(
            (
                t.wrong_source_returns,
                t.option_mismatches,
                t.vni_mismatches,
                t.malformed_returns,
                t.unknown_flow_returns,
                t.delivered_client,
                t.delivered_server
            ),
            (1, 1, 1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn an_unhealthy_appliance_keeps_its_flows_and_gets_no_new_ones() {
        let now = Instant::now();
        let mut b = balancer(now);
        let old = port_on(&mut b, 0, now);
        b.health(0, false);
        assert!(
            b.stats(now).appliances[0].healthy,
            "one failure is not enough"
        );
        b.health(0, false);
        let s = b.stats(now);
        assert!(!s.appliances[0].healthy);
        assert_eq!(s.appliances[0].transitions, 2, "up at start, then down");
        for port in 41_000..41_050 {
            let (e, _) = encap(&mut b, &request(port), Direction::ToServer, now);
            assert_eq!(e.appliance, 1, "new flow from {port}");
        }
        let (e, _) = encap(&mut b, &response(old), Direction::ToClient, now);
        assert_eq!(e.appliance, 0, "the existing flow stays");
        b.health(0, true);
        assert!(b.stats(now).appliances[0].healthy, "one success is enough");

        b.health(0, false);
        b.health(0, false);
        b.health(1, false);
        b.health(1, false);
        let mut out = Vec::new();
        assert_eq!(
            b.encapsulate(&request(42_000), Direction::ToServer, now, &mut out),
            Err(Refusal::NoHealthyAppliance)
        );
    }

    #[test]
    fn an_inner_ipv6_packet_is_sent_as_such_and_comes_back() {
        let now = Instant::now();
        let mut b = balancer(now);
        let builder = etherparse::PacketBuilder::ipv6(
            [
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ],
            [
                0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20,
            ],
            64,
        )
        .udp(5353, 53);
        let mut p = Vec::new();
        builder.write(&mut p, b"query").unwrap();
        let (e, out) = encap(&mut b, &p, Direction::ToServer, now);
        let g = Packet::new_checked(&out[..]).unwrap();
        assert_eq!(g.protocol(), geneve::PROTO_IPV6);
        assert_eq!(g.payload(), &p[..]);
        let from = b.addr(e.appliance);
        assert_eq!(
            b.decapsulate(from, &out, now),
            Ok((Direction::ToServer, &p[..]))
        );
    }

    #[test]
    fn idle_flows_are_forgotten_after_350_s() {
        let now = Instant::now();
        let mut b = balancer(now);
        encap(&mut b, &request(40_000), Direction::ToServer, now);
        encap(&mut b, &request(40_001), Direction::ToServer, now);
        let later = now + Duration::from_secs(200);
        encap(&mut b, &response(40_001), Direction::ToClient, later);
        b.expire(now + IDLE_TIMEOUT);
        // (a client's packet to its own prefix, e.g. the gateway, is not carried)
        let mut out = Vec::new();
        let gw = tcp([192, 0, 2, 10], 40_002, [192, 0, 2, 1], 80);
        assert_eq!(
            b.encapsulate(&gw, Direction::ToServer, now, &mut out),
            Err(Refusal::NotRouted)
        );
        assert_eq!(
            b.encapsulate(&request(40_003), Direction::ToClient, now, &mut out),
            Err(Refusal::NotRouted)
        );
        assert_eq!(b.stats(now).flows.len(), 2);
        b.expire(now + IDLE_TIMEOUT + Duration::from_secs(1));
        let s = b.stats(later);
        assert_eq!(s.flows.len(), 1);
        assert_eq!(s.flows[0].client, "192.0.2.10:40001");
        assert_eq!(s.totals.flows_expired, 1);
    }

    #[test]
    fn a_checksum_left_to_the_nic_is_completed() {
        let p = request(40_000);
        let sum = u16::from_be_bytes([p[36], p[37]]);
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&p);
        let o = Offload {
            flags: Offload::NEEDS_CSUM,
            csum_start: 14 + 20,
            csum_offset: 16,
            ..Offload::default()
        };
        // The field seeded with the pseudo-header sum, as the kernel leaves it.
        let mut seeded = frame.clone();
        let pseudo_sum = {
            let mut s: u32 = 0;
            for c in p[12..20].chunks(2) {
                s += u32::from(u16::from_be_bytes([c[0], c[1]]));
            }
            s += 6 + (p.len() as u32 - 20);
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            s as u16
        };
        seeded[50..52].copy_from_slice(&pseudo_sum.to_be_bytes());
        complete_checksum(&mut seeded, &o);
        assert_eq!(u16::from_be_bytes([seeded[50], seeded[51]]), sum);
    }
}
