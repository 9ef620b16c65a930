//! The network-namespace lab: client ─ appliance ─ server, built with `ip`.
//!
//! One implementation serves the integration tests, `tlsinspect demo` and the
//! end-to-end benchmark, so that what the tests prove is what the demo shows.
//! It shells out to iproute2 (and ethtool when present) instead of talking
//! netlink itself: the commands are the ones an operator would type, errors
//! come back with the exact command that failed, and no `unsafe` is needed.
//!
//! # Topology
//!
//! ```text
//!  client ns               appliance ns                     server ns ("router")
//!  c0: 192.0.2.10/24 ... ─ lan [appliance] wan ─ s0 ........ lo: 203.0.113.10/32, .11, ...
//! ```
//!
//! The clients always use `192.0.2.0/24` with the gateway `192.0.2.1` for
//! `203.0.113.0/24`. Where that gateway lives depends on the mode:
//!
//! - [`LabMode::AfPacket`] and [`LabMode::Bridge`]: the appliance is a
//!   bump in the wire, so client and router share one L2 segment through it.
//!   The router's `s0` carries `192.0.2.1/24`; `lan`/`wan` have no addresses.
//!   In `Bridge` mode a kernel bridge `br0` joins `lan` and `wan` (the
//!   benchmark's reference); in `AfPacket` mode the appliance bridges them.
//! - [`LabMode::Tun`]: the appliance ns is an L3 hop. `lan` carries
//!   `192.0.2.1/24`, `wan` `198.51.100.1/24`, the router's `s0`
//!   `198.51.100.2/24` with a route back to `192.0.2.0/24`. Policy routing
//!   sends what arrives on `lan` into the TUN device `tlan` and what arrives on
//!   `wan` into `twan`; what the appliance writes to `twan` is routed out of
//!   `wan`, what it writes to `tlan` out of `lan` (rp_filter off everywhere).
//! - [`LabMode::Geneve`]: a fleet behind a gateway load balancer (DESIGN.md
//!   §13). No appliance sits between client and router; a load-balancer
//!   namespace does, and two appliance namespaces hang off it:
//!
//!   ```text
//!    client ns            lb ns                                   router ns
//!    c0 192.0.2.10/24 ─ lbc 192.0.2.1/24   lbs 198.51.100.1/25 ─ s0 198.51.100.2/25
//!                         lbbr 198.51.100.129/25 (bridge, MTU 9000)
//!                          ├ lba0 ─ lan 198.51.100.131/25  appliance ns 0
//!                          └ lba1 ─ lan 198.51.100.132/25  appliance ns 1
//!   ```
//!
//!   The kernel of the lb ns neither routes nor answers client or server IP
//!   packets (`ip_forward` 0 and a tc ingress drop of IP on `lbc`/`lbs`;
//!   ARP still reaches it, so the neighbours resolve their gateway): only
//!   the load balancer (`tlsinspect lab-helper lb`, [`crate::demo::lb`]),
//!   which taps `lbc`/`lbs` with AF_PACKET before tc ingress, moves them,
//!   GENEVE-encapsulated to an appliance's `lan` and back. IPv6 is off on
//!   every link of this mode, so nothing but the test's traffic moves.
//!
//! Offloads follow DESIGN.md §8, in two settings ([`Offloads`]): "off"
//! (GRO/LRO off on the appliance ports, tx checksum offload — hence TSO —
//! off on the veth peers `c0`/`s0`, so every frame the appliance sees is
//! MTU-sized with a complete checksum) and "on" (the kernel's defaults as
//! real NICs and VMs run them: GRO on the ports, checksum offload, TSO and
//! GSO on the peers, so the appliance sees 64 KiB super-frames with partial
//! checksums).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// The gateway address the clients route `203.0.113.0/24` through.
pub const CLIENT_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The appliance's `wan` address in TUN mode.
pub const TUN_WAN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The router's `s0` address in TUN mode.
pub const TUN_ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The load balancer's server-side address (`lbs`) in GENEVE mode.
pub const FLEET_LB_SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The router's `s0` address in GENEVE mode.
pub const FLEET_ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The load balancer's GENEVE address (the bridge `lbbr`) in GENEVE mode.
pub const FLEET_LB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 129);
/// The appliances' `lan` addresses in GENEVE mode, one per appliance namespace.
pub const FLEET_APPLIANCE_ADDRS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 131),
    Ipv4Addr::new(198, 51, 100, 132),
];
/// MTU of the links GENEVE crosses (the bridge and the appliance links):
/// room for a 1500-byte inner packet and the encapsulation (and jumbo
/// frames, as cloud networks between a GWLB and its targets have).
pub const FLEET_TUNNEL_MTU: u32 = 9000;

/// How the appliance namespace joins its two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabMode {
    /// L2 bump in the wire: the appliance bridges `lan` and `wan` with AF_PACKET.
    AfPacket,
    /// L3: persistent multi-queue TUN devices `tlan`/`twan` with policy routing.
    Tun,
    /// Reference: a kernel bridge `br0` joins `lan` and `wan` (no appliance).
    Bridge,
    /// A fleet: a load-balancer ns between client and router sends every
    /// flow GENEVE-encapsulated to one of two appliance namespaces, each
    /// with one port `lan` (DESIGN.md §13).
    Geneve,
}

impl LabMode {
    /// Short name, used in namespace names and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LabMode::AfPacket => "af_packet",
            LabMode::Tun => "tun",
            LabMode::Bridge => "bridge",
            LabMode::Geneve => "geneve",
        }
    }
}

/// The offload setting of the lab's ports (DESIGN.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Offloads {
    /// Every frame MTU-sized with a complete checksum.
    #[default]
    Off,
    /// The kernel's defaults: GRO on the appliance ports, TSO/GSO and
    /// checksum offload on the peers.
    On,
}

impl Offloads {
    /// Short name, for messages and bench tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Offloads::Off => "offloads off",
            Offloads::On => "offloads on",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// The offload setting of the ports.
    pub offloads: Offloads,
    /// Namespace name prefix; see [`unique_prefix`].
    pub prefix: String,
    /// How the appliance ns joins its ports.
    pub mode: LabMode,
    /// Client addresses (all in `192.0.2.0/24`, not `.1`).
    pub clients: Vec<Ipv4Addr>,
    /// Server addresses (all in `203.0.113.0/24`).
    pub servers: Vec<Ipv4Addr>,
}

/// A prefix unique to this process and call, `tag` saying which test made it.
///
/// Namespace names end up as `<prefix>-c`, `-a`, `-s` (in a fleet `-c`,
/// `-l` for the load balancer, `-a0`, `-a1`, `-s`); the process id and a
/// counter keep parallel tests (and parallel test binaries) apart.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    format!("ti-{tag}-{}-{n}", std::process::id())
}

/// A process started inside a namespace of the lab.
#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
}

/// One appliance of a fleet ([`LabMode::Geneve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetMember {
    /// Its namespace.
    pub ns: String,
    /// The address of its one port `lan`, where GENEVE and health checks arrive.
    pub addr: Ipv4Addr,
}

/// The load balancer's side of a fleet lab ([`LabMode::Geneve`]).
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The load balancer's namespace.
    pub lb_ns: String,
    /// The appliances, in the order the load balancer numbers them.
    pub appliances: Vec<FleetMember>,
}

/// A built lab. Dropping it kills every process it started (by PID) and
/// deletes its namespaces (by name), also when a test panics.
#[derive(Debug)]
pub struct Lab {
    spec: LabSpec,
    client_ns: String,
    appliance_ns: String,
    server_ns: String,
    fleet: Option<Fleet>,
    procs: Mutex<Vec<Proc>>,
    notes: Vec<String>,
    keep: bool,
}

impl Lab {
    /// Creates the namespaces, links, addresses, routes and offload settings.
    pub fn build(spec: LabSpec) -> anyhow::Result<Lab> {
        for ip in &spec.clients {
            let o = ip.octets();
            if o[..3] != [192, 0, 2] || o[3] == 1 || o[3] == 0 || o[3] == 255 {
                bail!("lab client address {ip} is not a host of 192.0.2.0/24 other than .1");
            }
        }
        for ip in &spec.servers {
            if ip.octets()[..3] != [203, 0, 113] {
                bail!("lab server address {ip} is not in 203.0.113.0/24");
            }
        }
        let fleet = (spec.mode == LabMode::Geneve).then(|| Fleet {
            lb_ns: format!("{}-l", spec.prefix),
            appliances: FLEET_APPLIANCE_ADDRS
                .iter()
                .enumerate()
                .map(|(i, addr)| FleetMember {
                    ns: format!("{}-a{i}", spec.prefix),
                    addr: *addr,
                })
                .collect(),
        });
        let mut lab = Lab {
            client_ns: format!("{}-c", spec.prefix),
            // In a fleet the first appliance is "the" appliance, so helpers
            // written for one appliance (start it, read its files) still work.
            appliance_ns: match &fleet {
                Some(f) => f.appliances[0].ns.clone(),
                None => format!("{}-a", spec.prefix),
            },
            server_ns: format!("{}-s", spec.prefix),
            fleet,
            spec,
            procs: Mutex::new(Vec::new()),
            notes: Vec::new(),
            keep: false,
        };
        // A namespace left over from a crashed run with the same name would
        // make `ip netns add` fail; it is ours by construction of the name.
        for ns in lab.all_namespaces() {
            if Path::new("/run/netns").join(&ns).exists() {
                let _ = run_cmd(Command::new("ip").args(["netns", "del", &ns]));
            }
        }
        lab.setup().with_context(|| {
            format!(
                "building the {} lab {}",
                lab.spec.mode.as_str(),
                lab.spec.prefix
            )
        })?;
        Ok(lab)
    }

    fn setup(&mut self) -> anyhow::Result<()> {
        if self.spec.mode == LabMode::Geneve {
            return self.setup_fleet();
        }
        let (c, a, s) = (
            self.client_ns.clone(),
            self.appliance_ns.clone(),
            self.server_ns.clone(),
        );
        for ns in [&c, &a, &s] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Created inside the appliance ns with the peer straight in the
        // neighbour ns, so no name ever exists in the root namespace.
        ip(&[
            "-n", &a, "link", "add", "lan", "type", "veth", "peer", "name", "c0", "netns", &c,
        ])?;
        ip(&[
            "-n", &a, "link", "add", "wan", "type", "veth", "peer", "name", "s0", "netns", &s,
        ])?;

        for client in &self.spec.clients {
            ip(&[
                "-n",
                &c,
                "addr",
                "add",
                &format!("{client}/24"),
                "dev",
                "c0",
            ])?;
        }
        ip(&["-n", &c, "link", "set", "c0", "up"])?;
        ip(&[
            "-n",
            &c,
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            &CLIENT_GATEWAY.to_string(),
        ])?;

        for server in &self.spec.servers {
            ip(&[
                "-n",
                &s,
                "addr",
                "add",
                &format!("{server}/32"),
                "dev",
                "lo",
            ])?;
        }
        ip(&["-n", &s, "link", "set", "s0", "up"])?;

        for port in ["lan", "wan"] {
            ip(&["-n", &a, "link", "set", port, "up"])?;
        }
        match self.spec.mode {
            LabMode::AfPacket | LabMode::Bridge => {
                ip(&[
                    "-n",
                    &s,
                    "addr",
                    "add",
                    &format!("{CLIENT_GATEWAY}/24"),
                    "dev",
                    "s0",
                ])?;
                // The bump in the wire must not answer or route anything itself.
                self.sysctl(&a, "net.ipv4.ip_forward", "0")?;
                for port in ["lan", "wan"] {
                    self.sysctl(&a, &format!("net.ipv6.conf.{port}.disable_ipv6"), "1")?;
                }
                if self.spec.mode == LabMode::Bridge {
                    ip(&["-n", &a, "link", "add", "br0", "type", "bridge"])?;
                    ip(&["-n", &a, "link", "set", "lan", "master", "br0"])?;
                    ip(&["-n", &a, "link", "set", "wan", "master", "br0"])?;
                    ip(&["-n", &a, "link", "set", "br0", "up"])?;
                }
            }
            LabMode::Geneve => unreachable!("built by setup_fleet"),
            LabMode::Tun => {
                ip(&[
                    "-n",
                    &s,
                    "addr",
                    "add",
                    &format!("{TUN_ROUTER_ADDR}/24"),
                    "dev",
                    "s0",
                ])?;
                ip(&[
                    "-n",
                    &s,
                    "route",
                    "add",
                    "192.0.2.0/24",
                    "via",
                    &TUN_WAN_ADDR.to_string(),
                ])?;
                ip(&[
                    "-n",
                    &a,
                    "addr",
                    "add",
                    &format!("{CLIENT_GATEWAY}/24"),
                    "dev",
                    "lan",
                ])?;
                ip(&[
                    "-n",
                    &a,
                    "addr",
                    "add",
                    &format!("{TUN_WAN_ADDR}/24"),
                    "dev",
                    "wan",
                ])?;
                for tun in ["tlan", "twan"] {
                    ip(&[
                        "-n",
                        &a,
                        "tuntap",
                        "add",
                        "dev",
                        tun,
                        "mode",
                        "tun",
                        "multi_queue",
                    ])?;
                    ip(&["-n", &a, "link", "set", tun, "up"])?;
                }
                self.sysctl(&a, "net.ipv4.ip_forward", "1")?;
                for dev in ["all", "default", "lan", "wan", "tlan", "twan"] {
                    self.sysctl(&a, &format!("net.ipv4.conf.{dev}.rp_filter"), "0")?;
                }
                // iif-based policy routing: each port feeds its TUN device,
                // and each TUN device's output leaves by the other port.
                let rules: [(&str, &str, &[&str]); 4] = [
                    ("lan", "100", &["default", "dev", "tlan"]),
                    (
                        "twan",
                        "101",
                        &["default", "via", "198.51.100.2", "dev", "wan"],
                    ),
                    ("wan", "102", &["default", "dev", "twan"]),
                    ("tlan", "103", &["192.0.2.0/24", "dev", "lan"]),
                ];
                for (iif, table, route) in rules {
                    ip(&[
                        "-n", &a, "rule", "add", "iif", iif, "lookup", table, "pref", table,
                    ])?;
                    let mut args = vec!["-n", &a, "route", "add"];
                    args.extend_from_slice(route);
                    args.extend_from_slice(&["table", table]);
                    ip(&args)?;
                }
            }
        }
        self.tune_offloads()?;
        Ok(())
    }

    /// Builds the [`LabMode::Geneve`] topology (see the module docs).
    fn setup_fleet(&mut self) -> anyhow::Result<()> {
        let fleet = self
            .fleet
            .clone()
            .context("a fleet lab without its fleet")?;
        let (c, s, l) = (
            self.client_ns.clone(),
            self.server_ns.clone(),
            fleet.lb_ns.clone(),
        );
        let mut all = vec![c.clone(), s.clone(), l.clone()];
        all.extend(fleet.appliances.iter().map(|m| m.ns.clone()));
        for ns in &all {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // Only the test's IPv4 traffic: no router solicitations or
            // neighbour discovery for the load balancer to carry.
            self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
            self.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        ip(&[
            "-n", &l, "link", "add", "lbc", "type", "veth", "peer", "name", "c0", "netns", &c,
        ])?;
        ip(&[
            "-n", &l, "link", "add", "lbs", "type", "veth", "peer", "name", "s0", "netns", &s,
        ])?;
        let mtu = FLEET_TUNNEL_MTU.to_string();
        ip(&[
            "-n", &l, "link", "add", "lbbr", "mtu", &mtu, "type", "bridge",
        ])?;
        for (i, m) in fleet.appliances.iter().enumerate() {
            let port = format!("lba{i}");
            ip(&[
                "-n", &l, "link", "add", &port, "mtu", &mtu, "type", "veth", "peer", "name", "lan",
                "netns", &m.ns,
            ])?;
            ip(&["-n", &l, "link", "set", &port, "master", "lbbr"])?;
            ip(&["-n", &l, "link", "set", &port, "up"])?;
            ip(&["-n", &m.ns, "link", "set", "lan", "mtu", &mtu])?;
            ip(&[
                "-n",
                &m.ns,
                "addr",
                "add",
                &format!("{}/25", m.addr),
                "dev",
                "lan",
            ])?;
            ip(&["-n", &m.ns, "link", "set", "lan", "up"])?;
        }

        for client in &self.spec.clients {
            ip(&[
                "-n",
                &c,
                "addr",
                "add",
                &format!("{client}/24"),
                "dev",
                "c0",
            ])?;
        }
        ip(&["-n", &c, "link", "set", "c0", "up"])?;
        ip(&[
            "-n",
            &c,
            "route",
            "add",
            "default",
            "via",
            &CLIENT_GATEWAY.to_string(),
        ])?;

        for server in &self.spec.servers {
            ip(&[
                "-n",
                &s,
                "addr",
                "add",
                &format!("{server}/32"),
                "dev",
                "lo",
            ])?;
        }
        ip(&[
            "-n",
            &s,
            "addr",
            "add",
            &format!("{FLEET_ROUTER_ADDR}/25"),
            "dev",
            "s0",
        ])?;
        ip(&["-n", &s, "link", "set", "s0", "up"])?;
        ip(&[
            "-n",
            &s,
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            &FLEET_LB_SERVER_ADDR.to_string(),
        ])?;

        for (dev, addr) in [
            ("lbc", format!("{CLIENT_GATEWAY}/24")),
            ("lbs", format!("{FLEET_LB_SERVER_ADDR}/25")),
            ("lbbr", format!("{FLEET_LB_ADDR}/25")),
        ] {
            ip(&["-n", &l, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", &l, "link", "set", dev, "up"])?;
        }
        self.sysctl(&l, "net.ipv4.ip_forward", "0")?;
        for dev in ["lbc", "lbs"] {
            self.drop_ip_at_ingress(&l, dev)?;
        }
        self.tune_offloads()
    }

    /// Makes the kernel of `ns` drop every IPv4 packet arriving on `dev`
    /// before its IP layer sees it; AF_PACKET taps run earlier and still get
    /// them, and ARP is not IP, so the kernel keeps answering it.
    ///
    /// `matchall` with `gact` is the plain way; kernels built without those
    /// modules (this lab's CI kernel among them) get the same drop from a
    /// one-instruction classic BPF program in direct-action mode
    /// (`ret #2`, `TC_ACT_SHOT`).
    fn drop_ip_at_ingress(&mut self, ns: &str, dev: &str) -> anyhow::Result<()> {
        let tc = |args: &[&str]| {
            run_cmd(
                Command::new("ip")
                    .args(["netns", "exec", ns, "tc"])
                    .args(args),
            )
            .map(|_| ())
        };
        tc(&["qdisc", "add", "dev", dev, "clsact"])?;
        let filter = [
            "filter", "add", "dev", dev, "ingress", "protocol", "ip", "pref", "1",
        ];
        let matchall = [&filter[..], &["matchall", "action", "drop"]].concat();
        if tc(&matchall).is_ok() {
            return Ok(());
        }
        let bpf = [&filter[..], &["bpf", "da", "bytecode", "1,6 0 0 2"]].concat();
        tc(&bpf).with_context(|| format!("no tc ingress drop on {dev} (matchall nor bpf)"))?;
        self.notes.push(format!(
            "tc matchall/gact unavailable: IP dropped on {dev} by a classic BPF filter"
        ));
        Ok(())
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
        run_cmd(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ]))
        .map(|_| ())
    }

    fn tune_offloads(&mut self) -> anyhow::Result<()> {
        if !have_program("ethtool") {
            self.notes.push(
                "ethtool is not installed: offloads left at their defaults (GRO may merge frames)"
                    .into(),
            );
            return Ok(());
        }
        let (c, a, s) = (
            self.client_ns.clone(),
            self.appliance_ns.clone(),
            self.server_ns.clone(),
        );
        if let Some(fleet) = self.fleet.clone() {
            return self.tune_fleet_offloads(&fleet);
        }
        if self.spec.offloads == Offloads::On {
            // Explicitly the defaults, so a host with other defaults for
            // new veths still gets the setting the tests name.
            for port in ["lan", "wan"] {
                ethtool(&a, &[port, "gro", "on"])?;
            }
            for (ns, port) in [(&c, "c0"), (&s, "s0")] {
                ethtool(ns, &[port, "tx", "on", "tso", "on", "gso", "on"])?;
            }
            return Ok(());
        }
        for port in ["lan", "wan"] {
            ethtool(&a, &[port, "gro", "off"])?;
            // veths report LRO as "off [fixed]"; asking again is an error on
            // some ethtool versions, so a failure here is only noted.
            if ethtool(&a, &[port, "lro", "off"]).is_err() {
                self.notes
                    .push(format!("LRO on {port} is fixed (already off)"));
            }
        }
        ethtool(&c, &["c0", "tx", "off"])?;
        ethtool(&s, &["s0", "tx", "off"])?;
        Ok(())
    }

    /// A fleet's ports and their peers: the load balancer's capture ports
    /// `lbc`/`lbs` and each appliance's `lan` play the appliance ports of
    /// §8; `c0`/`s0` and the bridge ports `lba<i>` are their peers.
    fn tune_fleet_offloads(&mut self, fleet: &Fleet) -> anyhow::Result<()> {
        let mut ports = vec![(fleet.lb_ns.clone(), "lbc"), (fleet.lb_ns.clone(), "lbs")];
        ports.extend(fleet.appliances.iter().map(|m| (m.ns.clone(), "lan")));
        let mut peers = vec![
            (self.client_ns.clone(), "c0".to_owned()),
            (self.server_ns.clone(), "s0".to_owned()),
        ];
        peers.extend((0..fleet.appliances.len()).map(|i| (fleet.lb_ns.clone(), format!("lba{i}"))));
        let on = self.spec.offloads == Offloads::On;
        for (ns, port) in &ports {
            ethtool(ns, &[port, "gro", if on { "on" } else { "off" }])?;
            if !on && ethtool(ns, &[port, "lro", "off"]).is_err() {
                self.notes
                    .push(format!("LRO on {port} is fixed (already off)"));
            }
        }
        for (ns, peer) in &peers {
            if on {
                ethtool(ns, &[peer, "tx", "on", "tso", "on", "gso", "on"])?;
            } else {
                ethtool(ns, &[peer, "tx", "off"])?;
            }
        }
        Ok(())
    }

    /// The fleet of a [`LabMode::Geneve`] lab (`None` in the other modes).
    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    /// The load balancer's namespace ([`LabMode::Geneve`] only).
    pub fn lb_ns(&self) -> Option<&str> {
        self.fleet.as_ref().map(|f| f.lb_ns.as_str())
    }

    /// The mode the lab was built in.
    pub fn mode(&self) -> LabMode {
        self.spec.mode
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.spec.prefix
    }

    /// Namespace of the clients.
    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    /// Namespace of the appliance (in a fleet, of the first appliance).
    pub fn appliance_ns(&self) -> &str {
        &self.appliance_ns
    }

    /// Namespace of the server-side router and servers.
    pub fn server_ns(&self) -> &str {
        &self.server_ns
    }

    /// The client, appliance and server namespaces (in a fleet the first
    /// appliance's; [`Lab::all_namespaces`] has every one).
    pub fn namespaces(&self) -> [String; 3] {
        [
            self.client_ns.clone(),
            self.appliance_ns.clone(),
            self.server_ns.clone(),
        ]
    }

    /// Every namespace of the lab: the three of [`Lab::namespaces`] and, in
    /// a fleet, the load balancer's and every appliance's.
    pub fn all_namespaces(&self) -> Vec<String> {
        let mut all = vec![self.client_ns.clone()];
        match &self.fleet {
            Some(f) => {
                all.push(f.lb_ns.clone());
                all.extend(f.appliances.iter().map(|m| m.ns.clone()));
            }
            None => all.push(self.appliance_ns.clone()),
        }
        all.push(self.server_ns.clone());
        all
    }

    /// Client addresses.
    pub fn clients(&self) -> &[Ipv4Addr] {
        &self.spec.clients
    }

    /// Server addresses.
    pub fn servers(&self) -> &[Ipv4Addr] {
        &self.spec.servers
    }

    /// The `(lan, wan)` device names the appliance config must name.
    pub fn appliance_ports(&self) -> (&'static str, &'static str) {
        match self.spec.mode {
            LabMode::Tun => ("tlan", "twan"),
            // In a fleet `lan` is the one port; `wan` is named but unused.
            LabMode::AfPacket | LabMode::Bridge | LabMode::Geneve => ("lan", "wan"),
        }
    }

    /// Things the builder could not do and worked around (e.g. no ethtool).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Leaves namespaces and processes in place when the lab is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Runs `program args` inside `ns` to completion; fails on a non-zero exit.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        run_cmd(&mut self.command(ns, program, args))
    }

    /// A `Command` that runs `program args` inside `ns` (not yet started).
    pub fn command(
        &self,
        ns: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program).args(args);
        cmd
    }

    /// Starts `cmd` (from [`Lab::command`]) in the background, tracked by PID.
    ///
    /// Returns the PID; `ip netns exec` execs the program, so it is the PID
    /// of the program itself.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> anyhow::Result<u32> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let pid = child.id();
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Proc {
                name: name.to_owned(),
                child,
            });
        Ok(pid)
    }

    /// Sends `signal` (e.g. `TERM`) to a process this lab started and waits
    /// up to `timeout` for it to exit (then kills it). Returns its exit status.
    pub fn stop(
        &self,
        pid: u32,
        signal: &str,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let idx = procs
            .iter()
            .position(|p| p.child.id() == pid)
            .with_context(|| format!("process {pid} was not started by this lab"))?;
        let mut p = procs.swap_remove(idx);
        drop(procs);
        if p.child.try_wait()?.is_none() {
            run_cmd(Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]))?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = p.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = p.child.kill();
                let _ = p.child.wait();
                bail!(
                    "{} (pid {pid}) did not exit within {timeout:?} of SIG{signal}",
                    p.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for a process this lab started to exit by
    /// itself (then kills it and fails). Returns its exit status.
    pub fn wait(&self, pid: u32, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
                let idx = procs
                    .iter()
                    .position(|p| p.child.id() == pid)
                    .with_context(|| format!("process {pid} was not started by this lab"))?;
                if let Some(status) = procs[idx].child.try_wait()? {
                    procs.swap_remove(idx);
                    return Ok(status);
                }
                if Instant::now() >= deadline {
                    let mut p = procs.swap_remove(idx);
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    bail!("{} (pid {pid}) did not exit within {timeout:?}", p.name);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (e.g. `HUP`) to a running process this lab started.
    pub fn signal(&self, pid: u32, signal: &str) -> anyhow::Result<()> {
        if !self.is_running(pid) {
            bail!("process {pid} is not a running process of this lab");
        }
        run_cmd(Command::new("kill").args([&format!("-{signal}"), &pid.to_string()])).map(|_| ())
    }

    /// Whether a process this lab started is still running.
    pub fn is_running(&self, pid: u32) -> bool {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs
            .iter_mut()
            .find(|p| p.child.id() == pid)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// Commands that remove this lab by hand (printed by `demo --keep`).
    pub fn teardown_commands(&self) -> String {
        let mut s = String::new();
        for p in self.procs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(s, "kill {}    # {}", p.child.id(), p.name);
        }
        for ns in self.all_namespaces() {
            let _ = writeln!(s, "ip netns del {ns}");
        }
        s
    }

    fn cleanup(&mut self) {
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for mut p in procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        for ns in self.all_namespaces() {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            // Forget the children so their handles do not outlive us as zombies' owners.
            self.procs.lock().unwrap_or_else(|e| e.into_inner()).clear();
            return;
        }
        self.cleanup();
    }
}

/// Runs `ip args`.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_cmd(Command::new("ip").args(args)).map(|_| ())
}

fn ethtool(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    run_cmd(
        Command::new("ip")
            .args(["netns", "exec", ns, "ethtool", "-K"])
            .args(args),
    )
    .map(|_| ())
}

/// Runs a command to completion; a non-zero exit becomes an error naming the
/// command and carrying its stderr.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Whether `program` is found on `PATH`.
pub fn have_program(program: &str) -> bool {
    find_program(program).is_some()
}

/// Full path of `program` on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether the current process runs as root (uid 0), read from /proc.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
