//! Walks the parsed TOML tree against the schema and builds the domain types,
//! collecting every error instead of stopping at the first.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tlsinspect_pipeline::hostglob::HostGlob;
use toml::{Table, Value};

use super::error::{thousands, ConfigError, ConfigErrors, ItemRef};
use super::limits::*;
use super::walk::*;
use super::*;

/// Longest id accepted for policies and scopes (they appear in every log record).
const MAX_ID_LEN: usize = 64;

const TOP_KEYS: &[&str] = &[
    "appliance",
    "upstream",
    "policy",
    "ips",
    "webfilter",
    "appcontrol",
    "output",
    "console",
    "faults",
    "capture",
];
const CAPTURE_KEYS: &[&str] = &[
    "dir",
    "policies",
    "max_file_bytes",
    "max_files",
    "pcap_over_ip",
];
const FAULTS_KEYS: &[&str] = &["seed", "lan_in", "lan_out", "wan_in", "wan_out"];
const FAULT_KEYS: &[&str] = &[
    "loss",
    "duplicate",
    "reorder",
    "corrupt",
    "reorder_hold_ms",
    "delay_ms",
];
const CONSOLE_KEYS: &[&str] = &[
    "listen",
    "cert",
    "key",
    "admin_password_hash",
    "audit_log",
    "ca_dirs",
];
const APPLIANCE_KEYS: &[&str] = &[
    "mode",
    "lan",
    "wan",
    "cpus",
    "max_flows",
    "log",
    "control",
    "metrics",
    "flow_idle_timeout_secs",
    "tcp_buffer_bytes",
    "cert_cache_entries",
    "bypass_cache_entries",
    "pinning_bypass_clients",
    "stats_interval_secs",
    "state_dir",
    "max_intercept_memory",
    "max_half_open",
    "kernel_fast_path",
    "release_passed_flows",
    "health",
    "drain_secs",
];
const UPSTREAM_KEYS: &[&str] = &["roots", "extra_roots", "invalid_certificate", "crls"];
pub(crate) const POLICY_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "enabled",
    "ca_cert",
    "ca_key",
    "ca_chain",
    "tls13",
    "legacy_tls",
    "no_sni",
    "non_tls",
    "ech",
    "exclude_sni",
    "on_disable",
    "on_overload",
    "keylog",
    "scope",
];
pub(crate) const SCOPE_KEYS: &[&str] = &[
    "id",
    "description",
    "protocol",
    "source_ips",
    "source_ports",
    "destinations",
    "destination_ports",
];
const IPS_KEYS: &[&str] = &["rules", "mode", "address_groups", "port_groups"];
const WEBFILTER_KEYS: &[&str] = &["rule"];
const WEBFILTER_RULE_KEYS: &[&str] = &["host", "path", "methods", "action"];
const APPCONTROL_KEYS: &[&str] = &["signatures", "rule"];
const APPCONTROL_RULE_KEYS: &[&str] = &["app", "action", "verdict"];

const PASS_OR_INSPECT: &[(&str, PassOrInspect)] = &[
    ("passthrough", PassOrInspect::Passthrough),
    ("inspect", PassOrInspect::Inspect),
];
const PASS_OR_BLOCK: &[(&str, PassOrBlock)] = &[
    ("passthrough", PassOrBlock::Passthrough),
    ("block", PassOrBlock::Block),
];
const VERDICTS: &[(&str, Verdict)] = &[("allow", Verdict::Allow), ("deny", Verdict::Deny)];

fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty; an id is required".into());
    }
    if s.chars().count() > MAX_ID_LEN {
        return Err(format!(
            "is {} characters long; the limit is {MAX_ID_LEN}",
            s.chars().count()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "contains {:?}; an id may use letters, digits, '-', '_', '.' and ':'",
            c
        ));
    }
    Ok(())
}

fn interface_name(s: &str) -> Result<(), String> {
    // IFNAMSIZ is 16 including the terminating NUL.
    if s.is_empty() {
        Err("is empty; an interface name is required".into())
    } else if s.len() > 15 {
        Err(format!("is {} bytes long; the limit is 15", s.len()))
    } else if s == "." || s == ".." || s.contains(['/', '\0']) || s.chars().any(char::is_whitespace)
    {
        Err("is not a valid interface name".into())
    } else {
        Ok(())
    }
}

fn host_glob(s: &str) -> Result<HostGlob, String> {
    HostGlob::new(s).map_err(|e| e.to_string())
}

fn path_glob(s: &str) -> Result<String, String> {
    if !(s.starts_with('/') || s.starts_with('*')) {
        Err("must start with '/' or '*'".into())
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("contains whitespace or a control character".into())
    } else {
        Ok(s.to_string())
    }
}

/// A rule's optional glob `key`, checked by `check`; absent means `*`.
fn glob_key<T>(
    r: &Tbl<'_>,
    cx: &mut Cx,
    key: &str,
    check: fn(&str) -> Result<T, String>,
) -> Option<T> {
    match r.string(cx, key, false) {
        None if r.t.contains_key(key) => None,
        None => check("*").ok(),
        Some(v) => match check(v) {
            Ok(g) => Some(g),
            Err(e) => {
                r.fail(cx, key, format_args!("{} {e}", quote(v)));
                None
            }
        },
    }
}

fn method(s: &str) -> Result<String, String> {
    // RFC 9110 token characters.
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if s.is_empty() || s.len() > 32 || !s.chars().all(tchar) {
        Err("is not an HTTP method (a token of at most 32 characters such as \"POST\")".into())
    } else {
        Ok(s.to_ascii_uppercase())
    }
}

fn app_name(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if let Some(c) = lower
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?}; a name uses letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(lower)
}

fn source_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>().map_err(|_| {
        if s.contains('/') {
            "is not an IP address; source_ips takes single addresses (IPv4 or IPv6), not networks"
                .to_string()
        } else {
            "is not an IPv4 or IPv6 address".to_string()
        }
    })
}

fn destination(s: &str) -> Result<IpNet, String> {
    if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_| {
            "is not a CIDR network (prefix length at most 32 for IPv4, 128 for IPv6)".to_string()
        })?;
        if net.trunc() != net {
            return Err(format!(
                "has host bits set; the network is \"{}\"",
                net.trunc()
            ));
        }
        Ok(net)
    } else {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| "is not an IP address or CIDR network (IPv4 or IPv6)".to_string())
    }
}

fn port_range(s: &str) -> Result<PortRange, String> {
    s.parse::<PortRange>().map_err(|e| e.to_string())
}

/// Builds a `Config` from text, or returns every error found.
pub(super) fn build(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    // A bare file name has an empty parent: its relative paths stay relative
    // to the current directory, which is where the file is.
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut cx = Cx {
        file: path.to_path_buf(),
        base,
        errors: Vec::new(),
    };
    let root: Table = match text.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            let place = match e.span() {
                Some(span) => {
                    let before = &text.as_bytes()[..span.start.min(text.len())];
                    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
                    format!("line {line}, column {col}: ")
                }
                None => String::new(),
            };
            let msg = e.message().trim().replace('\n', " ");
            cx.push(
                &At::default(),
                String::new(),
                format!("is not valid TOML: {place}{msg}"),
            );
            return Err(ConfigErrors(cx.errors));
        }
    };

    let top = Tbl::new(&root, At::default());
    top.known(&mut cx, TOP_KEYS);

    let appliance = match top.sub(&mut cx, "appliance") {
        Some(t) => appliance(&mut cx, t),
        None => {
            if !root.contains_key("appliance") {
                top.missing(&mut cx, "appliance");
            }
            None
        }
    };
    let upstream = match top.sub(&mut cx, "upstream") {
        Some(t) => upstream(&mut cx, t),
        None => Some(Upstream {
            roots: Roots::System,
            extra_roots: Vec::new(),
            crls: Vec::new(),
            invalid_certificate: InvalidCertificate::Untrusted,
        }),
    };
    let policies = policies(&mut cx, &top);
    let ips = match top.sub(&mut cx, "ips") {
        Some(t) => ips(&mut cx, t),
        None => Some(Ips {
            rules: Vec::new(),
            mode: IpsMode::Detect,
            address_groups: Vec::new(),
            port_groups: Vec::new(),
        }),
    };
    let webfilter = match top.sub(&mut cx, "webfilter") {
        Some(t) => webfilter(&mut cx, t),
        None => Some(Vec::new()),
    };
    let appcontrol = match top.sub(&mut cx, "appcontrol") {
        Some(t) => appcontrol(&mut cx, t),
        None => Some(AppControl::default()),
    };
    let outputs = outputs(&mut cx, &top);
    let state_dir = appliance.as_ref().map(|a| a.state_dir.clone());
    let console = match top.sub(&mut cx, "console") {
        // Without a valid [appliance] the defaults under state_dir are
        // unknown; its errors are reported already.
        Some(t) => state_dir.and_then(|dir| console(&mut cx, t, &dir).map(Some)),
        None => Some(None),
    };
    let capture = match top.sub(&mut cx, "capture") {
        Some(t) => capture(&mut cx, t, policies.as_deref()).map(Some),
        None => Some(None),
    };
    let faults = match top.sub(&mut cx, "faults") {
        Some(t) => faults(&mut cx, t),
        None => Some(Default::default()),
    };

    if !cx.errors.is_empty() {
        return Err(ConfigErrors(cx.errors));
    }
    match (
        appliance, upstream, policies, ips, webfilter, appcontrol, outputs, console, faults,
        capture,
    ) {
        (
            Some(appliance),
            Some(upstream),
            Some(policies),
            Some(ips),
            Some(webfilter),
            Some(appcontrol),
            Some(outputs),
            Some(console),
            Some(faults),
            Some(capture),
        ) => Ok(Config {
            path: path.to_path_buf(),
            appliance,
            upstream,
            policies: policies.into(),
            ips,
            webfilter,
            appcontrol,
            outputs,
            console,
            faults,
            capture,
        }),
        // Every `None` above comes with an error; this arm guards that invariant
        // without a panic.
        _ => Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            policy: None,
            scope: None,
            field: String::new(),
            message: "could not be validated (internal error: a section failed without a message)"
                .into(),
        }])),
    }
}

fn appliance(cx: &mut Cx, t: &Table) -> Option<Appliance> {
    let a = Tbl::new(
        t,
        At {
            prefix: "appliance.".into(),
            ..At::default()
        },
    );
    a.known(cx, APPLIANCE_KEYS);
    let mut ok = true;

    let mode = match a.choice(
        cx,
        "mode",
        &[
            ("af_packet", Mode::AfPacket),
            ("tun", Mode::Tun),
            ("geneve", Mode::Geneve),
        ],
    ) {
        Ok(Some(m)) => Some(m),
        Ok(None) => {
            a.missing(cx, "mode");
            None
        }
        Err(()) => None,
    };
    let iface = |key: &str, cx: &mut Cx| -> Option<String> {
        let s = a.string(cx, key, true)?;
        match interface_name(s) {
            Ok(()) => Some(s.to_string()),
            Err(e) => {
                a.fail(cx, key, format_args!("{} {e}", quote(s)));
                None
            }
        }
    };
    let lan = iface("lan", cx);
    let wan = if mode == Some(Mode::Geneve) {
        // One interface: the load balancer's packets come and go on `lan`.
        if a.t.contains_key("wan") {
            a.fail(
                cx,
                "wan",
                "is not used with mode = \"geneve\" (the load balancer reaches lan only); remove it",
            );
            None
        } else {
            Some(String::new())
        }
    } else {
        iface("wan", cx)
    };
    if let (Some(l), Some(w)) = (&lan, &wan) {
        if l == w {
            a.fail(
                cx,
                "wan",
                format_args!("is {}, the same interface as appliance.lan", quote(w)),
            );
            ok = false;
        }
    }

    let cpus = match a.array(cx, "cpus", "an array of core numbers", false) {
        // Absent: one worker per core the machine has.
        None if !a.t.contains_key("cpus") => Some(
            (0..std::thread::available_parallelism().map_or(1, |n| n.get().min(1024))).collect(),
        ),
        None => None,
        Some([]) => {
            a.fail(cx, "cpus", "is empty; list at least one core");
            None
        }
        Some(items) if items.len() > 1024 => {
            a.fail(
                cx,
                "cpus",
                format_args!(
                    "has {} entries; the limit is 1,024",
                    thousands(items.len() as u64)
                ),
            );
            None
        }
        Some(items) => {
            let mut cpus = Vec::with_capacity(items.len());
            let mut good = true;
            for (i, v) in items.iter().enumerate() {
                let entry = format!("cpus #{}", i + 1);
                match v {
                    Value::Integer(n) if (0..1024).contains(n) => {
                        let n = *n as usize;
                        if cpus.contains(&n) {
                            a.fail(
                                cx,
                                &entry,
                                format_args!("is core {n} again; each core may be listed once"),
                            );
                            good = false;
                        }
                        cpus.push(n);
                    }
                    Value::Integer(n) => {
                        a.fail(
                            cx,
                            &entry,
                            format_args!("is {}; core numbers are 0..=1023", signed(*n)),
                        );
                        good = false;
                    }
                    other => {
                        a.fail(
                            cx,
                            &entry,
                            format_args!(
                                "must be an integer, found {} {}",
                                kind(other),
                                show(other)
                            ),
                        );
                        good = false;
                    }
                }
            }
            good.then_some(cpus)
        }
    };

    let int = |key: &str, min: i64, max: i64, default: u64, cx: &mut Cx| -> Option<u64> {
        match a.int(cx, key, min, max) {
            Ok(v) => Some(v.map_or(default, |v| v as u64)),
            Err(()) => None,
        }
    };
    let max_flows = int("max_flows", 1, 100_000_000, defaults::MAX_FLOWS as u64, cx);
    let idle = int(
        "flow_idle_timeout_secs",
        1,
        86_400,
        defaults::FLOW_IDLE_TIMEOUT_SECS,
        cx,
    );
    let tcp_buffer = int(
        "tcp_buffer_bytes",
        4_096,
        16 * 1024 * 1024,
        defaults::TCP_BUFFER_BYTES as u64,
        cx,
    );
    let cert_cache = int(
        "cert_cache_entries",
        1,
        10_000_000,
        defaults::CERT_CACHE_ENTRIES as u64,
        cx,
    );
    let bypass_cache = int(
        "bypass_cache_entries",
        1,
        10_000_000,
        defaults::BYPASS_CACHE_ENTRIES as u64,
        cx,
    );
    let pinning = int(
        "pinning_bypass_clients",
        1,
        1_000,
        u64::from(defaults::PINNING_BYPASS_CLIENTS),
        cx,
    );
    let max_half_open = int(
        "max_half_open",
        1,
        100_000_000,
        defaults::MAX_HALF_OPEN as u64,
        cx,
    );
    let max_intercept_memory = match a.t.get("max_intercept_memory") {
        None => Some(defaults::max_intercept_memory()),
        Some(Value::Integer(n)) if *n >= 1 => Some(*n as u64),
        Some(Value::String(s)) => match parse_size::parse_size(s) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                a.fail(
                    cx,
                    "max_intercept_memory",
                    format_args!(
                        "{} is not a size such as \"4GiB\", \"512MiB\" or a number of bytes",
                        quote(s)
                    ),
                );
                None
            }
        },
        Some(v) => {
            a.wrong_type(cx, "max_intercept_memory", "a size such as \"4GiB\"", v);
            None
        }
    };
    let kernel_fast_path = a.choice_or(
        cx,
        "kernel_fast_path",
        &[("auto", KernelFastPath::Auto), ("off", KernelFastPath::Off)],
        KernelFastPath::Auto,
    );
    let release_passed_flows = a.boolean(cx, "release_passed_flows").unwrap_or(true);
    let stats_interval = int(
        "stats_interval_secs",
        0,
        86_400,
        defaults::STATS_INTERVAL_SECS,
        cx,
    );

    let path_or = |key: &str, default: &str, cx: &mut Cx| {
        if a.t.contains_key(key) {
            a.path(cx, key, true)
        } else {
            Some(PathBuf::from(default))
        }
    };
    let log = path_or("log", defaults::LOG, cx);
    let control = path_or("control", defaults::CONTROL, cx);
    let state_dir = if a.t.contains_key("state_dir") {
        a.path(cx, "state_dir", true)
    } else {
        Some(PathBuf::from(defaults::STATE_DIR))
    };
    let metrics = match a.string(cx, "metrics", false) {
        None => Ok(None),
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(addr) => Ok(Some(addr)),
            Err(_) => {
                a.fail(
                    cx,
                    "metrics",
                    format_args!(
                        "{} is not an address:port such as \"127.0.0.1:9273\" or \"[::1]:9273\"",
                        quote(s)
                    ),
                );
                Err(())
            }
        },
    };
    if a.t.get("metrics").is_some_and(|v| !v.is_str()) {
        ok = false;
    }
    let health = match a.string(cx, "health", false) {
        None => Ok(None),
        Some(s) => match socket_addr(s) {
            Ok(addr) => Ok(Some(addr)),
            Err(e) => {
                a.fail(cx, "health", format_args!("{} {e}", quote(s)));
                Err(())
            }
        },
    };
    if a.t.get("health").is_some_and(|v| !v.is_str()) {
        ok = false;
    }
    let drain = int("drain_secs", 0, 3_600, defaults::DRAIN_SECS, cx);

    Some(Appliance {
        mode: mode?,
        lan: lan?,
        wan: wan?,
        cpus: cpus?,
        max_flows: max_flows? as usize,
        max_intercept_memory: usize::try_from(max_intercept_memory?).unwrap_or(usize::MAX),
        max_half_open: max_half_open? as usize,
        release_passed_flows,
        log: log?,
        control: control?,
        metrics: metrics.ok()?,
        flow_idle_timeout: Duration::from_secs(idle?),
        tcp_buffer_bytes: tcp_buffer? as usize,
        cert_cache_entries: cert_cache? as usize,
        bypass_cache_entries: bypass_cache? as usize,
        pinning_bypass_clients: pinning? as u32,
        stats_interval: Duration::from_secs(stats_interval?),
        kernel_fast_path: kernel_fast_path?,
        state_dir: state_dir?,
        health: health.ok()?,
        drain: Duration::from_secs(drain?),
    })
    .filter(|_| ok)
}

/// A `host:port` socket address, as `metrics` and `console.listen` take.
fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        "is not an address:port such as \"127.0.0.1:9443\" or \"[::1]:9443\"".to_string()
    })
}

fn console(cx: &mut Cx, t: &Table, state_dir: &Path) -> Option<Console> {
    let c = Tbl::new(
        t,
        At {
            prefix: "console.".into(),
            ..At::default()
        },
    );
    c.known(cx, CONSOLE_KEYS);
    let listen = match c.string(cx, "listen", false) {
        None if c.t.contains_key("listen") => None,
        None => defaults::CONSOLE_LISTEN.parse().ok(),
        Some(s) => match socket_addr(s) {
            Ok(a) => Some(a),
            Err(e) => {
                c.fail(cx, "listen", format_args!("{} {e}", quote(s)));
                None
            }
        },
    };
    let cert = c.path(cx, "cert", false);
    let key = c.path(cx, "key", false);
    let bad_path = |k: &str| c.t.contains_key(k) && !c.t.get(k).is_some_and(Value::is_str);
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(Some((cert, key))),
        (None, None) if !bad_path("cert") && !bad_path("key") => Some(None),
        (Some(_), None) if !c.t.contains_key("key") => {
            c.fail(
                cx,
                "key",
                "is missing; console.cert and console.key go together",
            );
            None
        }
        (None, Some(_)) if !c.t.contains_key("cert") => {
            c.fail(
                cx,
                "cert",
                "is missing; console.cert and console.key go together",
            );
            None
        }
        _ => None,
    };
    let hash = match c.string(cx, "admin_password_hash", false) {
        None if c.t.contains_key("admin_password_hash") => None,
        None => Some(None),
        Some(s) if s.starts_with("$argon2id$") && s.len() < 512 => Some(Some(s.to_string())),
        Some(s) => {
            // Show only the start: the rest may be a secret pasted by mistake.
            let shown: String = s.chars().take(12).collect();
            c.fail(
                cx,
                "admin_password_hash",
                format_args!(
                    "\"{}...\" is not an argon2id hash (\"$argon2id$...\"); write one with: tlsinspect console passwd --config FILE",
                    shown.escape_debug()
                ),
            );
            None
        }
    };
    let audit_log = if c.t.contains_key("audit_log") {
        c.path(cx, "audit_log", true)
    } else {
        Some(state_dir.join(defaults::CONSOLE_AUDIT_LOG))
    };
    let ca_dirs = if c.t.contains_key("ca_dirs") {
        c.paths(cx, "ca_dirs")
    } else {
        Some(vec![state_dir.join(defaults::CONSOLE_CA_DIR)])
    };
    if ca_dirs.as_ref().is_some_and(Vec::is_empty) {
        c.fail(
            cx,
            "ca_dirs",
            "is empty; list at least one directory (the trial CA is made in the first)",
        );
        return None;
    }
    Some(Console {
        listen: listen?,
        tls: tls?,
        admin_password_hash: hash?,
        audit_log: audit_log?,
        ca_dirs: ca_dirs?,
    })
}

/// `[capture]` (DESIGN.md §11): where and how much decrypted traffic is kept.
fn capture(cx: &mut Cx, t: &Table, policies: Option<&[Policy]>) -> Option<Capture> {
    let c = Tbl::new(
        t,
        At {
            prefix: "capture.".into(),
            ..At::default()
        },
    );
    c.known(cx, CAPTURE_KEYS);
    let dir = c.path(cx, "dir", true);
    let selected = match c.array(cx, "policies", "an array of policy ids", false) {
        None if c.t.contains_key("policies") => None,
        None => Some(None),
        Some(items) => c
            .each_str(cx, "policies", items, |s| match policies {
                Some(ps) if !ps.iter().any(|p| &*p.id == s) => {
                    Err("names no [[policy]] of this file".to_string())
                }
                _ => Ok(Arc::<str>::from(s)),
            })
            .map(Some),
    };
    let int =
        |key: &str, min: i64, max: i64, default: u64, cx: &mut Cx| match c.int(cx, key, min, max) {
            Ok(v) => Some(v.map_or(default, |v| v as u64)),
            Err(()) => None,
        };
    let max_file_bytes = int("max_file_bytes", 10_000, 1 << 40, 100_000_000, cx);
    let max_files = int("max_files", 1, 100_000, 10, cx);
    let pcap_over_ip = match c.string(cx, "pcap_over_ip", false) {
        None if c.t.contains_key("pcap_over_ip") => None,
        None => Some(None),
        Some(s) => match socket_addr(s) {
            Ok(a) => Some(Some(a)),
            Err(e) => {
                c.fail(cx, "pcap_over_ip", format_args!("{} {e}", quote(s)));
                None
            }
        },
    };
    Some(Capture {
        dir: dir?,
        policies: selected?,
        max_file_bytes: max_file_bytes?,
        max_files: max_files? as usize,
        pcap_over_ip: pcap_over_ip?,
    })
}

/// `[faults]` (DESIGN.md §12): a seed and one table per port and direction.
fn faults(cx: &mut Cx, t: &Table) -> Option<tlsinspect_pipeline::fault::FaultPlan> {
    use tlsinspect_pipeline::fault::{FaultPlan, Faults};
    let f = Tbl::new(
        t,
        At {
            prefix: "faults.".into(),
            ..At::default()
        },
    );
    f.known(cx, FAULTS_KEYS);
    let seed = f.int(cx, "seed", 0, i64::MAX).ok()?.unwrap_or(1) as u64;
    let mut direction = |key: &str| -> Option<Faults> {
        let Some(t) = f.sub(cx, key) else {
            return (!f.t.contains_key(key)).then(Faults::default);
        };
        let d = Tbl::new(
            t,
            At {
                prefix: format!("faults.{key}."),
                ..At::default()
            },
        );
        d.known(cx, FAULT_KEYS);
        let mut out = Faults::default();
        let mut ok = true;
        for (name, slot) in [
            ("loss", &mut out.loss),
            ("duplicate", &mut out.duplicate),
            ("reorder", &mut out.reorder),
            ("corrupt", &mut out.corrupt),
        ] {
            match d.fraction(cx, name) {
                Ok(Some(x)) => *slot = x,
                Ok(None) => {}
                Err(()) => ok = false,
            }
        }
        for (name, slot) in [
            ("reorder_hold_ms", &mut out.reorder_hold),
            ("delay_ms", &mut out.delay),
        ] {
            match d.int(cx, name, 0, 10_000) {
                Ok(Some(ms)) => *slot = Duration::from_millis(ms as u64),
                Ok(None) => {}
                Err(()) => ok = false,
            }
        }
        ok.then_some(out)
    };
    let (lan_in, lan_out) = (direction("lan_in"), direction("lan_out"));
    let (wan_in, wan_out) = (direction("wan_in"), direction("wan_out"));
    Some(FaultPlan {
        seed,
        lan_in: lan_in?,
        lan_out: lan_out?,
        wan_in: wan_in?,
        wan_out: wan_out?,
    })
}

fn upstream(cx: &mut Cx, t: &Table) -> Option<Upstream> {
    let u = Tbl::new(
        t,
        At {
            prefix: "upstream.".into(),
            ..At::default()
        },
    );
    u.known(cx, UPSTREAM_KEYS);
    let roots = match u.string(cx, "roots", false) {
        None if u.t.contains_key("roots") => None,
        None | Some("system") => Some(Roots::System),
        Some(s) => match check_path(s) {
            Ok(()) => Some(Roots::Bundle(cx.resolve(s))),
            Err(e) => {
                u.fail(
                    cx,
                    "roots",
                    format_args!("{} {e}; use \"system\" or a PEM bundle path", quote(s)),
                );
                None
            }
        },
    };
    let crls = if u.t.contains_key("crls") {
        u.paths(cx, "crls")
    } else {
        Some(Vec::new())
    };
    let extra_roots = if u.t.contains_key("extra_roots") {
        u.paths(cx, "extra_roots")
    } else {
        Some(Vec::new())
    };
    let invalid_certificate = u.choice_or(
        cx,
        "invalid_certificate",
        &[
            ("untrusted", InvalidCertificate::Untrusted),
            ("block", InvalidCertificate::Block),
        ],
        InvalidCertificate::Untrusted,
    );
    Some(Upstream {
        roots: roots?,
        extra_roots: extra_roots?,
        crls: crls?,
        invalid_certificate: invalid_certificate?,
    })
}

/// Validates all policies, their ids and the total quota.
fn policies(cx: &mut Cx, top: &Tbl<'_>) -> Option<Vec<Policy>> {
    let tables = top.tables(cx, "policy");
    let mut out = Vec::with_capacity(tables.len());
    let mut all_ok = true;
    let mut first_index: HashMap<String, usize> = HashMap::new();
    let mut quotas: Vec<(String, u64)> = Vec::new();
    for (index, t) in tables {
        let (policy, quota, id) = policy(cx, t, index);
        if let Some(id) = id.as_ref().filter(|id| !id.is_empty()) {
            if let Some(first) = first_index.get(id) {
                cx.push(
                    &At {
                        policy: Some(ItemRef {
                            index,
                            id: Some(id.clone()),
                        }),
                        ..At::default()
                    },
                    "id".into(),
                    format!(
                        "id \"{}\" of policy #{index} is already used by policy #{first}; policy ids must be unique",
                        id.escape_debug()
                    ),
                );
                all_ok = false;
            } else {
                first_index.insert(id.clone(), index);
            }
        }
        let label = match &id {
            Some(id) if !id.is_empty() => format!("\"{}\"", id.escape_debug()),
            _ => format!("#{index}"),
        };
        quotas.push((label, quota));
        match policy {
            Some(p) => out.push(p),
            None => all_ok = false,
        }
    }
    let total: u64 = quotas
        .iter()
        .map(|(_, q)| q)
        .fold(0u64, |a, q| a.saturating_add(*q));
    if total > MAX_TOTAL_QUOTA {
        let mut parts: Vec<String> = quotas
            .iter()
            .filter(|(_, q)| *q > 0)
            .take(20)
            .map(|(l, q)| format!("{l} {}", thousands(*q)))
            .collect();
        if quotas.iter().filter(|(_, q)| *q > 0).count() > 20 {
            parts.push("...".into());
        }
        cx.push(
            &At::default(),
            "policy".into(),
            format!(
                "quota of all policies together is {} ({}); the limit is {}",
                thousands(total),
                parts.join(" + "),
                thousands(MAX_TOTAL_QUOTA)
            ),
        );
        all_ok = false;
    }
    all_ok.then_some(out)
}

/// Validates one policy; returns it (if valid), its quota as written and its id.
fn policy(cx: &mut Cx, t: &Table, index: usize) -> (Option<Policy>, u64, Option<String>) {
    let written_id = match t.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let p = Tbl::new(
        t,
        At {
            policy: Some(ItemRef {
                index,
                id: written_id.clone(),
            }),
            ..At::default()
        },
    );
    p.known(cx, POLICY_KEYS);
    let id = p.string(cx, "id", true).and_then(|s| match check_id(s) {
        Ok(()) => Some(s),
        Err(e) => {
            p.fail(cx, "id", format_args!("{} {e}", quote(s)));
            None
        }
    });
    let name = p.string(cx, "name", false);
    let description = p.string(cx, "description", false);
    let enabled = p.boolean(cx, "enabled");
    let enabled_ok = !p.t.contains_key("enabled") || enabled.is_some();
    let ca_cert = p.path(cx, "ca_cert", true);
    let ca_key = p.path(cx, "ca_key", true);
    let ca_chain = if p.t.contains_key("ca_chain") {
        p.paths(cx, "ca_chain")
    } else {
        Some(Vec::new())
    };
    let tls13 = p.choice_or(cx, "tls13", PASS_OR_INSPECT, PassOrInspect::Passthrough);
    let legacy_tls = p.choice_or(cx, "legacy_tls", PASS_OR_BLOCK, PassOrBlock::Passthrough);
    let no_sni = p.choice_or(cx, "no_sni", PASS_OR_INSPECT, PassOrInspect::Passthrough);
    let non_tls = p.choice_or(cx, "non_tls", PASS_OR_BLOCK, PassOrBlock::Passthrough);
    let ech = p.choice_or(cx, "ech", PASS_OR_INSPECT, PassOrInspect::Passthrough);
    let on_overload = p.choice_or(
        cx,
        "on_overload",
        &[
            ("pass", PassOrBlock::Passthrough),
            ("block", PassOrBlock::Block),
        ],
        PassOrBlock::Passthrough,
    );
    let on_disable = p.choice_or(
        cx,
        "on_disable",
        &[
            ("interrupt", OnDisable::Interrupt),
            ("drain", OnDisable::Drain),
        ],
        OnDisable::Interrupt,
    );
    let keylog = if p.t.contains_key("keylog") {
        p.path(cx, "keylog", true).map(Some)
    } else {
        Some(None)
    };
    let exclude_sni = match p.array(cx, "exclude_sni", "an array of host globs", false) {
        None if p.t.contains_key("exclude_sni") => None,
        None => Some(Vec::new()),
        Some(items) => p.each_str(cx, "exclude_sni", items, host_glob),
    };

    let scope_tables = p.tables(cx, "scope");
    let mut scopes_ok =
        p.t.get("scope")
            .is_none_or(|v| matches!(v, Value::Array(a) if a.iter().all(Value::is_table)));
    if scope_tables.len() > MAX_SCOPES_PER_POLICY {
        cx.push(
            &p.at,
            "scope".into(),
            format!(
                "has {} scopes; the limit is {MAX_SCOPES_PER_POLICY}",
                thousands(scope_tables.len() as u64)
            ),
        );
        scopes_ok = false;
    }
    let mut scopes = Vec::with_capacity(scope_tables.len());
    let mut quota = 0u64;
    let mut first_index: HashMap<String, usize> = HashMap::new();
    for (sindex, st) in scope_tables {
        let (scope, q, sid) = scope(cx, &p.at, st, sindex);
        quota = quota.saturating_add(q);
        if let Some(sid) = sid.filter(|sid| !sid.is_empty()) {
            if let Some(first) = first_index.get(&sid) {
                cx.push(
                    &At {
                        scope: Some(ItemRef {
                            index: sindex,
                            id: Some(sid.clone()),
                        }),
                        ..p.at.clone()
                    },
                    "id".into(),
                    format!(
                        "id \"{}\" is already used by scope #{first} of this policy; scope ids must be unique within a policy",
                        sid.escape_debug()
                    ),
                );
                scopes_ok = false;
            } else {
                first_index.insert(sid, sindex);
            }
        }
        match scope {
            Some(s) => scopes.push(s),
            None => scopes_ok = false,
        }
    }

    let policy = (|| {
        let id = id?;
        Some(Policy {
            id: Arc::from(id),
            name: name.unwrap_or(id).to_string(),
            description: description.unwrap_or_default().to_string(),
            enabled: enabled.unwrap_or(true),
            ca_cert: ca_cert?,
            ca_key: ca_key?,
            ca_chain: ca_chain?,
            tls13: tls13?,
            legacy_tls: legacy_tls?,
            no_sni: no_sni?,
            non_tls: non_tls?,
            ech: ech?,
            exclude_sni: exclude_sni?,
            on_disable: on_disable?,
            on_overload: on_overload?,
            keylog: keylog?,
            scopes,
        })
    })();
    let valid = enabled_ok
        && scopes_ok
        && (name.is_some() || !p.t.contains_key("name"))
        && (description.is_some() || !p.t.contains_key("description"));
    (policy.filter(|_| valid), quota, written_id)
}

/// Validates one scope; returns it (if valid), its quota as written and its id.
fn scope(
    cx: &mut Cx,
    policy_at: &At,
    t: &Table,
    index: usize,
) -> (Option<Scope>, u64, Option<String>) {
    let written_id = match t.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let s = Tbl::new(
        t,
        At {
            scope: Some(ItemRef {
                index,
                id: written_id.clone(),
            }),
            ..policy_at.clone()
        },
    );
    s.known(cx, SCOPE_KEYS);
    let id = s.string(cx, "id", true).and_then(|v| match check_id(v) {
        Ok(()) => Some(v),
        Err(e) => {
            s.fail(cx, "id", format_args!("{} {e}", quote(v)));
            None
        }
    });
    let description = s.string(cx, "description", false);
    let description_ok = description.is_some() || !t.contains_key("description");
    let protocol_ok = match s.string(cx, "protocol", false) {
        None => !t.contains_key("protocol"),
        Some("tcp") => true,
        Some(other) => {
            s.fail(
                cx,
                "protocol",
                format_args!("is {}; only \"tcp\" is accepted", quote(other)),
            );
            false
        }
    };

    let mut counts = [0u64; 4];
    let source_ips = scope_list(
        cx,
        &s,
        "source_ips",
        MAX_SOURCE_IPS,
        source_ip,
        &mut counts[0],
    );
    let source_ports = scope_list(
        cx,
        &s,
        "source_ports",
        MAX_SOURCE_PORTS,
        port_range,
        &mut counts[1],
    );
    let destinations = scope_list(
        cx,
        &s,
        "destinations",
        MAX_DESTINATIONS,
        destination,
        &mut counts[2],
    );
    let destination_ports = scope_list(
        cx,
        &s,
        "destination_ports",
        MAX_DESTINATION_PORTS,
        port_range,
        &mut counts[3],
    );
    let quota = counts.iter().fold(1u64, |a, n| a.saturating_mul(*n));

    let scope = (|| {
        Some(Scope {
            id: Arc::from(id?),
            index,
            description: description.unwrap_or_default().to_string(),
            source_ips: source_ips?,
            source_ports: source_ports?,
            destinations: destinations?,
            destination_ports: destination_ports?,
        })
    })();
    (
        scope.filter(|_| description_ok && protocol_ok),
        quota,
        written_id,
    )
}

/// One of the four counted lists of a scope: required, non-empty, within its
/// limit, every entry valid. `count` receives the number of entries as written.
fn scope_list<T>(
    cx: &mut Cx,
    s: &Tbl<'_>,
    key: &str,
    limit: usize,
    check: fn(&str) -> Result<T, String>,
    count: &mut u64,
) -> Option<Vec<T>> {
    let items = s.array(cx, key, "an array of strings", true)?;
    *count = items.len() as u64;
    let mut ok = true;
    if items.is_empty() {
        s.fail(cx, key, "is empty; a scope needs at least one entry");
        ok = false;
    }
    if items.len() > limit {
        s.fail(
            cx,
            key,
            format_args!(
                "has {} entries; the limit is {}",
                thousands(items.len() as u64),
                thousands(limit as u64)
            ),
        );
        ok = false;
    }
    let parsed = s.each_str(cx, key, items, check);
    parsed.filter(|_| ok)
}

fn ips(cx: &mut Cx, t: &Table) -> Option<Ips> {
    let i = Tbl::new(
        t,
        At {
            prefix: "ips.".into(),
            ..At::default()
        },
    );
    i.known(cx, IPS_KEYS);
    let rules = if t.contains_key("rules") {
        i.paths(cx, "rules")
    } else {
        Some(Vec::new())
    };
    let mode = i.choice_or(
        cx,
        "mode",
        &[("detect", IpsMode::Detect), ("prevent", IpsMode::Prevent)],
        IpsMode::Detect,
    );
    let mut groups: [Vec<(String, String)>; 2] = Default::default();
    let mut ok = true;
    for (slot, key) in ["address_groups", "port_groups"].into_iter().enumerate() {
        let Some(gt) = i.sub(cx, key) else {
            continue;
        };
        let g = Tbl::new(
            gt,
            At {
                prefix: format!("ips.{key}."),
                ..At::default()
            },
        );
        for (name, v) in gt {
            match v {
                Value::String(val) => groups[slot].push((name.clone(), val.clone())),
                other => {
                    g.wrong_type(
                        cx,
                        name,
                        "a string such as \"[192.0.2.0/24,!192.0.2.1]\"",
                        other,
                    );
                    ok = false;
                }
            }
        }
    }
    if let Err(errs) = crate::inspect::Vars::with_groups(None, &groups[0], &groups[1]) {
        for (kind, name, why) in errs {
            i.fail(cx, &format!("{kind}.{name}"), format_args!("= {why}"));
        }
        ok = false;
    }
    let [address_groups, port_groups] = groups;
    Some(Ips {
        rules: rules?,
        mode: mode?,
        address_groups,
        port_groups,
    })
    .filter(|_| ok)
}

fn webfilter(cx: &mut Cx, t: &Table) -> Option<Vec<WebFilterRule>> {
    let w = Tbl::new(
        t,
        At {
            prefix: "webfilter.".into(),
            ..At::default()
        },
    );
    w.known(cx, WEBFILTER_KEYS);
    let mut ok =
        w.t.get("rule")
            .is_none_or(|v| matches!(v, Value::Array(a) if a.iter().all(Value::is_table)));
    let mut rules = Vec::new();
    for (index, rt) in w.tables(cx, "rule") {
        let r = Tbl::entry(rt, "webfilter.rule", index);
        r.known(cx, WEBFILTER_RULE_KEYS);
        let host = glob_key(&r, cx, "host", host_glob);
        let path = glob_key(&r, cx, "path", path_glob);
        let methods = match r.array(cx, "methods", "an array of HTTP methods", false) {
            None if rt.contains_key("methods") => None,
            None => Some(Vec::new()),
            Some(items) => r.each_str(cx, "methods", items, method),
        };
        let action = match r.choice(cx, "action", VERDICTS) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                r.missing(cx, "action");
                None
            }
            Err(()) => None,
        };
        match (host, path, methods, action) {
            (Some(host), Some(path), Some(methods), Some(action)) => rules.push(WebFilterRule {
                host,
                path,
                methods,
                action,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(rules)
}

fn appcontrol(cx: &mut Cx, t: &Table) -> Option<AppControl> {
    let a = Tbl::new(
        t,
        At {
            prefix: "appcontrol.".into(),
            ..At::default()
        },
    );
    a.known(cx, APPCONTROL_KEYS);
    let signatures = match a.path(cx, "signatures", false) {
        None if t.contains_key("signatures") => Err(()),
        p => Ok(p),
    };
    let mut ok =
        a.t.get("rule")
            .is_none_or(|v| matches!(v, Value::Array(x) if x.iter().all(Value::is_table)));
    let mut rules = Vec::new();
    for (index, rt) in a.tables(cx, "rule") {
        let r = Tbl::entry(rt, "appcontrol.rule", index);
        r.known(cx, APPCONTROL_RULE_KEYS);
        let name = |key: &str, required: bool, cx: &mut Cx| -> Result<Option<String>, ()> {
            match r.string(cx, key, required) {
                None if required || rt.contains_key(key) => Err(()),
                None => Ok(None),
                Some(v) => match app_name(v) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) => {
                        r.fail(cx, key, format_args!("{} {e}", quote(v)));
                        Err(())
                    }
                },
            }
        };
        let app = name("app", true, cx);
        let action = name("action", false, cx);
        let verdict = match r.choice(cx, "verdict", VERDICTS) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                r.missing(cx, "verdict");
                None
            }
            Err(()) => None,
        };
        match (app, action, verdict) {
            (Ok(Some(app)), Ok(action), Some(verdict)) => rules.push(AppRule {
                app,
                action,
                verdict,
            }),
            _ => ok = false,
        }
    }
    Some(AppControl {
        signatures: signatures.ok()?,
        rules,
    })
    .filter(|_| ok)
}

const OUTPUT_KEYS: &[&str] = &[
    "type",
    "path",
    "max_bytes",
    "keep",
    "address",
    "facility",
    "mode",
    "key",
    "queue",
];

/// `[[output]]`: Suricata's outputs, several allowed (DESIGN.md §7).
fn outputs(cx: &mut Cx, top: &Tbl) -> Option<Vec<OutputSpec>> {
    use crate::log::output::{RedisMode, Rotation, SyslogTarget, DEFAULT_QUEUE, FACILITIES};
    const TYPES: &[(&str, &str)] = &[
        ("file", "file"),
        ("syslog", "syslog"),
        ("unix_stream", "unix_stream"),
        ("unix_dgram", "unix_dgram"),
        ("redis", "redis"),
    ];
    let mut ok = top
        .t
        .get("output")
        .is_none_or(|v| matches!(v, Value::Array(a) if a.iter().all(Value::is_table)));
    let mut out = Vec::new();
    for (index, ot) in top.tables(cx, "output") {
        let o = Tbl::entry(ot, "output", index);
        o.known(cx, OUTPUT_KEYS);
        let kind = match o.choice(cx, "type", TYPES) {
            Ok(Some(k)) => k,
            Ok(None) => {
                o.missing(cx, "type");
                ok = false;
                continue;
            }
            Err(()) => {
                ok = false;
                continue;
            }
        };
        let applies: &[&str] = match kind {
            "file" => &["path", "max_bytes", "keep"],
            "syslog" => &["address", "facility"],
            "unix_stream" | "unix_dgram" => &["path"],
            _ => &["address", "mode", "key"],
        };
        for &key in OUTPUT_KEYS
            .iter()
            .filter(|k| !matches!(**k, "type" | "queue"))
        {
            if ot.contains_key(key) && !applies.contains(&key) {
                o.fail(
                    cx,
                    key,
                    format_args!(
                        "does not apply to type \"{kind}\"; its keys are: type, queue, {}",
                        applies.join(", ")
                    ),
                );
                ok = false;
            }
        }
        let queue = match o.int(cx, "queue", 1, 1_000_000) {
            Ok(q) => q.map_or(DEFAULT_QUEUE, |q| q as usize),
            Err(()) => {
                ok = false;
                continue;
            }
        };
        let address = |cx: &mut Cx, default: &str| -> Option<String> {
            match o.string(cx, "address", false) {
                None if ot.contains_key("address") => None,
                None => Some(default.to_string()),
                Some(a) => Some(a.to_string()),
            }
        };
        let spec_kind = match kind {
            "file" => {
                let path = o.path(cx, "path", true);
                let def = Rotation::default();
                let max_bytes = o.int(cx, "max_bytes", 4_096, i64::MAX);
                let keep = o.int(cx, "keep", 0, 1_000);
                match (path, max_bytes, keep) {
                    (Some(path), Ok(m), Ok(k)) => Some(OutputKind::File {
                        path,
                        rotation: Rotation {
                            max_bytes: m.map_or(def.max_bytes, |m| m as u64),
                            keep: k.map_or(def.keep, |k| k as u32),
                        },
                    }),
                    _ => None,
                }
            }
            "syslog" => {
                let target = address(cx, "/dev/log").and_then(|a| match SyslogTarget::parse(&a) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        o.fail(cx, "address", format_args!("{} {e}", quote(&a)));
                        None
                    }
                });
                let facility = o.choice_or(cx, "facility", FACILITIES, 21);
                match (target, facility) {
                    (Some(target), Some(facility)) => Some(OutputKind::Syslog { target, facility }),
                    _ => None,
                }
            }
            "unix_stream" => o.path(cx, "path", true).map(OutputKind::UnixStream),
            "unix_dgram" => o.path(cx, "path", true).map(OutputKind::UnixDgram),
            _ => {
                let address =
                    address(cx, "127.0.0.1:6379").and_then(|a| match a.rsplit_once(':') {
                        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {
                            Some(a)
                        }
                        _ => {
                            o.fail(
                                cx,
                                "address",
                                format_args!(
                                    "{} is not host:port such as \"127.0.0.1:6379\"",
                                    quote(&a)
                                ),
                            );
                            None
                        }
                    });
                let mode = o.choice_or(
                    cx,
                    "mode",
                    &[("list", RedisMode::List), ("channel", RedisMode::Channel)],
                    RedisMode::List,
                );
                let key = match o.string(cx, "key", false) {
                    None if ot.contains_key("key") => None,
                    None => Some("tlsinspect".to_string()),
                    Some("") => {
                        o.fail(cx, "key", "is empty");
                        None
                    }
                    Some(k) => Some(k.to_string()),
                };
                match (address, mode, key) {
                    (Some(address), Some(mode), Some(key)) => {
                        Some(OutputKind::Redis { address, mode, key })
                    }
                    _ => None,
                }
            }
        };
        match spec_kind {
            Some(kind) => out.push(OutputSpec { kind, queue }),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(
            port_range("8080/8080"),
            Ok(PortRange {
                start: 8080,
                end: 8080
            })
        );
        assert_eq!(
            port_range("0/65535"),
            Ok(PortRange {
                start: 0,
                end: 65535
            })
        );
        assert!(port_range("443").unwrap_err().contains("start/end"));
        assert!(port_range("+1/2").is_err());
        assert!(port_range("1/-2").is_err());
        assert!(port_range("0/65536").unwrap_err().contains("end 65536"));
        assert!(port_range("99999999999999999999999/1")
            .unwrap_err()
            .contains("out of range"));
        assert!(port_range("9000/8000")
            .unwrap_err()
            .contains("start 9000 greater than end 8000"));
        assert!(port_range("1/2/3").is_err());
    }

    #[test]
    fn destinations_and_sources() {
        assert_eq!(
            destination("203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            destination("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert!(destination("203.0.113.7/24")
            .unwrap_err()
            .contains("203.0.113.0/24"));
        assert!(destination("203.0.113.0/33").is_err());
        assert!(source_ip("192.0.2.0/24")
            .unwrap_err()
            .contains("not networks"));
        assert!(source_ip("2001:db8::1").is_ok());
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("sorce_ips", SCOPE_KEYS), Some("source_ips"));
        assert_eq!(suggest("tls_13", POLICY_KEYS), Some("tls13"));
        assert_eq!(suggest("zzzzzz", POLICY_KEYS), None);
    }
}
