//! The configuration file (DESIGN.md §3): TOML in, validated immutable types out.
//!
//! Why it is built this way: an operator must see every mistake in a file at
//! once, and a typo must never silently change what the appliance does. serde's
//! derive stops at the first unknown key or wrong type, so the file is parsed by
//! serde (`toml`) only into its generic tree (`toml::Table`, the raw form), and
//! `build` walks that tree key by key against the schema, collecting every
//! unknown key, wrong type, bad value and exceeded limit with the file, policy,
//! scope and field it belongs to. Only a file without a single error becomes a
//! [`Config`]; its policies sit in an `Arc<[Policy]>` so the data plane can swap
//! them whole on reload.
//!
//! Relative paths are resolved against the directory of the config file here;
//! the files themselves (CAs, rules, signatures) are loaded by their owners.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tlsinspect_pipeline::hostglob::HostGlob;

pub use crate::log::output::{OutputKind, OutputSpec};

mod build;
mod error;
mod lint;
mod walk;

/// The keys of a `[[policy]]` table (the console's list is checked against it).
#[cfg(test)]
pub(crate) use build::POLICY_KEYS;
/// The keys of a `[[policy.scope]]` table.
pub(crate) use build::SCOPE_KEYS;
pub use error::{thousands, ConfigError, ConfigErrors, ItemRef};

/// The limits of DESIGN.md §3, as the seed product documents them.
pub mod limits {
    /// Scopes per policy.
    pub const MAX_SCOPES_PER_POLICY: usize = 10;
    /// Source IP addresses per scope.
    pub const MAX_SOURCE_IPS: usize = 1_000;
    /// Source port ranges per scope.
    pub const MAX_SOURCE_PORTS: usize = 100;
    /// Destination address objects (addresses or CIDRs) per scope.
    pub const MAX_DESTINATIONS: usize = 100;
    /// Destination port ranges per scope.
    pub const MAX_DESTINATION_PORTS: usize = 100;
    /// Sum of the quota of all policies.
    pub const MAX_TOTAL_QUOTA: u64 = 20_000;
}

/// Defaults of the optional keys.
pub mod defaults {
    /// `appliance.max_flows`.
    pub const MAX_FLOWS: usize = 1_000_000;
    /// `appliance.max_half_open`.
    pub const MAX_HALF_OPEN: usize = 100_000;

    /// `appliance.max_intercept_memory`: a quarter of the machine's RAM
    /// (1 GiB when /proc/meminfo cannot be read).
    pub fn max_intercept_memory() -> u64 {
        let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        total_kib.map_or(1 << 30, |k| k * 1024 / 4)
    }
    /// `appliance.flow_idle_timeout_secs`.
    pub const FLOW_IDLE_TIMEOUT_SECS: u64 = 300;
    /// `appliance.tcp_buffer_bytes`.
    pub const TCP_BUFFER_BYTES: usize = 65_536;
    /// `appliance.cert_cache_entries`.
    pub const CERT_CACHE_ENTRIES: usize = 10_000;
    /// `appliance.bypass_cache_entries`.
    pub const BYPASS_CACHE_ENTRIES: usize = 10_000;
    /// `appliance.pinning_bypass_clients`.
    pub const PINNING_BYPASS_CLIENTS: u32 = 3;
    /// `appliance.log`: the unit's `LogsDirectory=tlsinspect` (configs/systemd/).
    pub const LOG: &str = "/var/log/tlsinspect/eve.json";
    /// `appliance.control`: the unit's `RuntimeDirectory=tlsinspect`.
    pub const CONTROL: &str = "/run/tlsinspect/control.sock";
    /// `appliance.stats_interval_secs`: how often a `stats` record is logged.
    pub const STATS_INTERVAL_SECS: u64 = 60;
    /// `appliance.drain_secs`: how long SIGTERM drains in GENEVE mode (DESIGN.md §13).
    pub const DRAIN_SECS: u64 = 30;
    /// `appliance.state_dir`.
    pub const STATE_DIR: &str = "/var/lib/tlsinspect";
    /// `console.listen`.
    pub const CONSOLE_LISTEN: &str = "127.0.0.1:9443";
    /// `console.audit_log`, relative to `appliance.state_dir`.
    pub const CONSOLE_AUDIT_LOG: &str = "console-audit.jsonl";
    /// `console.ca_dirs`, relative to `appliance.state_dir`.
    pub const CONSOLE_CA_DIR: &str = "ca";
}

/// A validated configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was loaded from, as named to `load`.
    pub path: PathBuf,
    /// `[appliance]`: interfaces, workers, tables, files.
    pub appliance: Appliance,
    /// `[upstream]`: how server certificates are verified.
    pub upstream: Upstream,
    /// `[[policy]]` in file order, which is their precedence.
    pub policies: Arc<[Policy]>,
    /// `[ips]`.
    pub ips: Ips,
    /// `[[webfilter.rule]]` in file order; the first match wins, default allow.
    pub webfilter: Vec<WebFilterRule>,
    /// `[appcontrol]`.
    pub appcontrol: AppControl,
    /// `[[output]]` in file order; empty means one file at `appliance.log`.
    pub outputs: Vec<OutputSpec>,
    /// `[console]`; `None` (no section): no console.
    pub console: Option<Console>,
    /// `[faults]`: faults injected into the devices, for labs and benches
    /// only (DESIGN.md §12); none without the section.
    pub faults: tlsinspect_pipeline::fault::FaultPlan,
    /// `[capture]`: decrypted traffic as pcap; `None` (no section): off.
    pub capture: Option<Capture>,
}

/// `[capture]`: the plaintext of inspected connections as synthetic TCP
/// sessions in rotating pcap files, optionally served as PCAP-over-IP
/// (DESIGN.md §11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// Directory of the pcap files (resolved path).
    pub dir: PathBuf,
    /// Policies whose inspected connections are captured; `None`: all.
    pub policies: Option<Vec<Arc<str>>>,
    /// A file is closed and the next one started beyond this size.
    pub max_file_bytes: u64,
    /// Files kept; the oldest is deleted beyond it.
    pub max_files: usize,
    /// TCP address where PCAP-over-IP clients get the live stream.
    pub pcap_over_ip: Option<SocketAddr>,
}

/// `[console]`: the operator console (web UI and JSON API, DESIGN.md §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// Certificate and key (PEM, resolved paths); `None`: a console
    /// certificate made at first start under `[appliance] state_dir`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// argon2id PHC string written by `tlsinspect console passwd`; `None`:
    /// the first password made at first start under the state dir.
    pub admin_password_hash: Option<String>,
    /// Audit log of every change made through the console (JSON lines).
    pub audit_log: PathBuf,
    /// Directories whose CAs the console may offer and put in a policy
    /// (resolved paths). The trial CA is made in the first one.
    pub ca_dirs: Vec<PathBuf>,
}

impl Config {
    /// The traffic-log outputs in force: `[[output]]`, or one file output
    /// at `[appliance] log` when there is none.
    pub fn log_outputs(&self) -> Vec<OutputSpec> {
        if self.outputs.is_empty() {
            vec![OutputSpec::file(self.appliance.log.clone())]
        } else {
            self.outputs.clone()
        }
    }
}

/// How frames reach the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// L2 bridge between two NICs (`"af_packet"`).
    AfPacket,
    /// L3 between two TUN devices (`"tun"`).
    Tun,
    /// Behind a gateway load balancer: GENEVE on `lan` only (`"geneve"`, DESIGN.md §13).
    Geneve,
}

/// Whether out-of-scope TCP flows may be forwarded in the kernel (`appliance.kernel_fast_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFastPath {
    /// Try the tc-BPF fast path; fall back to user space, saying why (`"auto"`).
    Auto,
    /// The user-space fast path only (`"off"`).
    Off,
}

/// `[appliance]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Appliance {
    /// Frame I/O mode.
    pub mode: Mode,
    /// Client-side interface.
    pub lan: String,
    /// Internet-side interface (empty in GENEVE mode, which has one).
    pub wan: String,
    /// One pinned worker per listed core, in order.
    pub cpus: Vec<usize>,
    /// Flow-table cap (all workers together).
    pub max_flows: usize,
    /// Bytes the intercepted connections may hold (legs' buffers, held
    /// hellos, the engines' allowance), all workers together.
    pub max_intercept_memory: usize,
    /// Intercepted connections whose TCP handshake has not completed, all
    /// workers together.
    pub max_half_open: usize,
    /// Passed in-scope connections leave the TCP legs once their
    /// ClientHello is delivered (DESIGN.md §4); false keeps them on the legs.
    pub release_passed_flows: bool,
    /// Traffic log file.
    pub log: PathBuf,
    /// Control socket.
    pub control: PathBuf,
    /// Prometheus endpoint; `None` disables it.
    pub metrics: Option<SocketAddr>,
    /// A flow without packets for this long is forgotten.
    pub flow_idle_timeout: Duration,
    /// Send and receive buffer size of each intercepted TCP leg.
    pub tcp_buffer_bytes: usize,
    /// Capacity of the forged-certificate cache.
    pub cert_cache_entries: usize,
    /// Capacity of the learned (SNI, destination) bypass cache.
    pub bypass_cache_entries: usize,
    /// Distinct clients that must reject our certificate before a
    /// destination is bypassed as pinned.
    pub pinning_bypass_clients: u32,
    /// Interval of the periodic `stats` record; zero disables it.
    pub stats_interval: Duration,
    /// Whether to try the kernel fast path (af_packet mode).
    pub kernel_fast_path: KernelFastPath,
    /// Where the appliance keeps what it makes itself (the console's
    /// certificate, first password and trial CA).
    pub state_dir: PathBuf,
    /// Where `GET /health` is served for a load balancer's health checks.
    pub health: Option<SocketAddr>,
    /// GENEVE mode: how long SIGTERM drains (health 503, flows carried on)
    /// before the process stops.
    pub drain: Duration,
}

/// `[upstream]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Trust anchors for server certificates.
    pub roots: Roots,
    /// More PEM files added to the roots.
    pub extra_roots: Vec<PathBuf>,
    /// PEM CRLs (files, or globs of the file name) checked against upstream
    /// chains (resolved paths).
    pub crls: Vec<PathBuf>,
    /// What to do when a server certificate does not verify.
    pub invalid_certificate: InvalidCertificate,
}

/// Trust anchors for server certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's trust store (`"system"`).
    System,
    /// A PEM bundle (resolved path).
    Bundle(PathBuf),
}

/// What to do when a server certificate does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidCertificate {
    /// Forge with a separate untrusted issuer, so the client fails as it would without us.
    Untrusted,
    /// Block the connection.
    Block,
}

/// A setting whose choices are pass through or inspect (`tls13`, `no_sni`, `ech`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOrInspect {
    /// Relay the original bytes untouched.
    Passthrough,
    /// Terminate and inspect.
    Inspect,
}

/// A setting whose choices are pass through or block (`legacy_tls`, `non_tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOrBlock {
    /// Relay the original bytes untouched.
    Passthrough,
    /// Refuse the connection (TLS alert / TCP RST), logged.
    Block,
}

/// What happens to existing inspected flows when their policy is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisable {
    /// Reset them (the seed product's behaviour).
    Interrupt,
    /// Let them finish.
    Drain,
}

/// `[[policy]]`: a CA, decision settings and up to 10 scopes.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Unique, stable id, printed in every log record.
    pub id: Arc<str>,
    /// Display name (defaults to the id).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Whether its scopes select connections.
    pub enabled: bool,
    /// Issuing CA certificate (resolved path).
    pub ca_cert: PathBuf,
    /// Issuing CA key (resolved path).
    pub ca_key: PathBuf,
    /// Certificates above the issuing CA, if it is a sub-CA (resolved paths).
    pub ca_chain: Vec<PathBuf>,
    /// Hellos offering TLS 1.3.
    pub tls13: PassOrInspect,
    /// Hellos offering nothing newer than TLS 1.1.
    pub legacy_tls: PassOrBlock,
    /// Hellos without SNI.
    pub no_sni: PassOrInspect,
    /// In-scope TCP that is not TLS.
    pub non_tls: PassOrBlock,
    /// Hellos carrying an ECH extension.
    pub ech: PassOrInspect,
    /// Server names that are never decrypted.
    pub exclude_sni: Vec<HostGlob>,
    /// Existing inspected flows when the policy is disabled.
    pub on_disable: OnDisable,
    /// New connections beyond `max_intercept_memory` or `max_half_open`:
    /// forwarded uninspected (the default) or refused.
    pub on_overload: PassOrBlock,
    /// TLS secrets of both legs in the NSS key log format (resolved path); off when `None`.
    pub keylog: Option<PathBuf>,
    /// Scopes in file order.
    pub scopes: Vec<Scope>,
}

impl Policy {
    /// Quota used by this policy: the sum of its scopes' quotas.
    pub fn quota(&self) -> u64 {
        self.scopes.iter().map(Scope::quota).sum()
    }
}

/// `[[policy.scope]]`: which TCP connections a policy selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Unique within its policy.
    pub id: Arc<str>,
    /// 1-based position within its policy, as printed in messages (`scope #1` is the first).
    pub index: usize,
    /// Free text.
    pub description: String,
    /// Client addresses (exact).
    pub source_ips: Vec<IpAddr>,
    /// Client port ranges.
    pub source_ports: Vec<PortRange>,
    /// Server addresses or networks (an address is a /32 or /128).
    pub destinations: Vec<IpNet>,
    /// Server port ranges.
    pub destination_ports: Vec<PortRange>,
}

impl Scope {
    /// Quota of the scope: source IPs × source port ranges × destinations × destination port ranges.
    pub fn quota(&self) -> u64 {
        [
            self.source_ips.len(),
            self.source_ports.len(),
            self.destinations.len(),
            self.destination_ports.len(),
        ]
        .iter()
        .map(|&n| n as u64)
        .product()
    }

    /// Whether a connection from `src:sport` to `dst:dport` falls in this scope.
    pub fn matches(&self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> bool {
        self.source_ips.contains(&src)
            && self.source_ports.iter().any(|r| r.contains(sport))
            && self.destinations.iter().any(|n| n.contains(&dst))
            && self.destination_ports.iter().any(|r| r.contains(dport))
    }
}

/// An inclusive port range, written `start/end` (`8080/8080`, `0/65535`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (>= start).
    pub end: u16,
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// Whether `other` lies entirely within this range.
    pub fn covers(&self, other: &PortRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.start, self.end)
    }
}

/// Why a `start/end` port range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Not two decimal numbers separated by `/`.
    #[error("is not a port range \"start/end\" (a single port is written \"8080/8080\", all ports \"0/65535\")")]
    Syntax,
    /// A bound above 65535.
    #[error("has {which} {value}, out of range; ports are 0..=65535")]
    OutOfRange {
        /// `start` or `end`.
        which: &'static str,
        /// The number as written (saturated).
        value: u64,
    },
    /// start > end.
    #[error("has start {start} greater than end {end}")]
    Reversed {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
}

impl std::str::FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn number(part: &str, which: &'static str) -> Result<u16, PortRangeError> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PortRangeError::Syntax);
            }
            // Saturate instead of overflowing so that the message shows a number.
            let value = part.bytes().fold(0u64, |acc, b| {
                acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
            });
            u16::try_from(value).map_err(|_| PortRangeError::OutOfRange { which, value })
        }
        let (a, b) = s.split_once('/').ok_or(PortRangeError::Syntax)?;
        let start = number(a, "start")?;
        let end = number(b, "end")?;
        if start > end {
            return Err(PortRangeError::Reversed { start, end });
        }
        Ok(PortRange { start, end })
    }
}

/// IPS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpsMode {
    /// Alert only.
    Detect,
    /// drop/reject rules act.
    Prevent,
}

/// `[ips]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ips {
    /// Rule files (resolved paths), loaded in order.
    pub rules: Vec<PathBuf>,
    /// Whether drop/reject rules act.
    pub mode: IpsMode,
    /// `[ips.address_groups]`: Suricata address vars (`HOME_NET`, ...), in file order.
    pub address_groups: Vec<(String, String)>,
    /// `[ips.port_groups]`: Suricata port vars (`HTTP_PORTS`, ...).
    pub port_groups: Vec<(String, String)>,
}

/// Verdict of a web-filter or application-control rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through.
    Allow,
    /// Refuse it (HTTP 403).
    Deny,
}

/// `[[webfilter.rule]]`: host glob + path glob + methods → verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebFilterRule {
    /// Host glob (`*.example.com`); `*` matches any host.
    pub host: HostGlob,
    /// Path glob (`/upload/*`); `*` matches any path.
    pub path: String,
    /// Methods (upper-case); empty means any method.
    pub methods: Vec<String>,
    /// What a matching request gets.
    pub action: Verdict,
}

/// `[appcontrol]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppControl {
    /// App-id signature file (resolved path); `None` uses the built-in table.
    pub signatures: Option<PathBuf>,
    /// `[[appcontrol.rule]]` in file order; the first match wins, default allow.
    pub rules: Vec<AppRule>,
}

/// `[[appcontrol.rule]]`: application (and optionally its action) → verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRule {
    /// Application name from the app-id signatures (`github`).
    pub app: String,
    /// Application action (`upload`); `None` matches every action of the app.
    pub action: Option<String>,
    /// What a matching request gets.
    pub verdict: Verdict,
}

impl Config {
    /// Quota used by all policies together (enabled or not).
    pub fn quota(&self) -> u64 {
        self.policies.iter().map(Policy::quota).sum()
    }

    /// Every scope with its policy, in precedence order (policy order, then scope order).
    pub fn scopes(&self) -> impl Iterator<Item = (&Policy, &Scope)> {
        self.policies
            .iter()
            .flat_map(|p| p.scopes.iter().map(move |s| (p, s)))
    }

    /// The policy with this id.
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| &*p.id == id)
    }

    /// Things that are valid but probably not what the operator wants.
    pub fn warnings(&self) -> Vec<String> {
        lint::warnings(self)
    }
}

/// Reads and validates a configuration file.
///
/// Every problem of the file is reported at once; `Display` of the error lists
/// them one per line, each naming the file, policy, scope, field, value and limit.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse(&text, path),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                policy: None,
                scope: None,
                field: String::new(),
                message: format!(
                    "is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            }])),
        },
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            policy: None,
            scope: None,
            field: String::new(),
            message: format!("cannot be read: {e}"),
        }])),
    }
}

/// Validates configuration text as if it had been read from `path`.
///
/// `path` names the file in errors, and its directory is the base of relative
/// paths in the text; the file itself is not read.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    build::build(text, path)
}
