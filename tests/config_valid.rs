//! Valid configurations: the shipped files validate, defaults follow the seed
//! product, relative paths resolve against the file's directory, `validate`
//! prints what an operator needs, and no input makes the parser panic.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tlsinspect::cli::validate::{render, render_report};
use tlsinspect::config::{
    self, InvalidCertificate, IpsMode, Mode, OnDisable, PassOrBlock, PassOrInspect, PortRange,
    Roots, Verdict,
};

const REFERENCE: &str = "configs/tlsinspect.toml";

#[test]
fn reference_config_validates_and_inspects_tls13_and_ech() {
    let c = config::load(Path::new(REFERENCE)).unwrap_or_else(|e| panic!("{e}"));
    let p = c.policy("pol-office").unwrap();
    assert_eq!(p.tls13, PassOrInspect::Inspect);
    assert_eq!(p.ech, PassOrInspect::Inspect);
    assert_eq!(p.ca_cert, Path::new("configs/ca/office-ca.crt"));
    assert_eq!(p.ca_key, Path::new("configs/ca/office-ca.key"));
    assert_eq!(
        c.ips.rules,
        vec![PathBuf::from("configs/rules/default.rules")]
    );
    assert_eq!(c.ips.mode, IpsMode::Prevent);
    assert_eq!(
        c.appcontrol.signatures,
        Some(PathBuf::from("configs/apps.toml"))
    );
    assert_eq!(c.appcontrol.rules[0].app, "github");
    assert_eq!(c.appcontrol.rules[0].action.as_deref(), Some("upload"));
    assert_eq!(c.appcontrol.rules[0].verdict, Verdict::Deny);
    assert_eq!(c.webfilter[0].methods, vec!["POST", "PUT"]);
    assert_eq!(c.webfilter[0].action, Verdict::Deny);
    assert_eq!(c.appliance.metrics, Some("127.0.0.1:9273".parse().unwrap()));
    assert!(c.quota() > 0 && c.quota() <= 20_000);
    // Nothing in the shipped file deserves a warning.
    assert_eq!(c.warnings(), Vec::<String>::new());
    // The comment next to `ech` explains GREASE and the retry (DESIGN §4).
    let text = std::fs::read_to_string(REFERENCE).unwrap();
    assert!(text.contains("GREASE") && text.contains("RFC 9849"));
}

#[test]
fn tuning_examples_validate() {
    for f in ["configs/tuning/1-core.toml", "configs/tuning/2-core.toml"] {
        let c = config::load(Path::new(f)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.appliance.cpus.is_empty(), "{f}");
    }
    let one = config::load(Path::new("configs/tuning/1-core.toml")).unwrap();
    assert_eq!(one.appliance.cpus, vec![0]);
    let two = config::load(Path::new("configs/tuning/2-core.toml")).unwrap();
    assert_eq!(two.appliance.cpus, vec![0, 1]);
}

#[test]
fn geneve_mode_takes_one_interface_and_its_health_settings() {
    let c = config::load(Path::new("tests/configs/valid_geneve.toml")).unwrap();
    let a = &c.appliance;
    assert_eq!(a.mode, Mode::Geneve);
    assert_eq!((a.lan.as_str(), a.wan.as_str()), ("eth1", ""));
    assert_eq!(a.health, Some("0.0.0.0:8081".parse().unwrap()));
    assert_eq!(a.drain, Duration::from_secs(10));
    let d = config::load(Path::new("tests/configs/valid_minimal.toml")).unwrap();
    assert_eq!(
        (d.appliance.health, d.appliance.drain),
        (None, Duration::from_secs(30))
    );
}

#[test]
fn defaults_follow_the_seed_product() {
    let c = config::load(Path::new("tests/configs/valid_minimal.toml")).unwrap();
    let a = &c.appliance;
    assert_eq!(a.mode, Mode::AfPacket);
    assert_eq!(a.max_flows, 1_000_000);
    assert_eq!(a.metrics, None);
    assert_eq!(a.flow_idle_timeout, Duration::from_secs(300));
    assert_eq!(a.tcp_buffer_bytes, 65_536);
    assert_eq!(a.cert_cache_entries, 10_000);
    assert_eq!(a.bypass_cache_entries, 10_000);
    assert_eq!(a.pinning_bypass_clients, 3);
    assert_eq!(c.upstream.roots, Roots::System);
    assert!(c.upstream.extra_roots.is_empty());
    assert_eq!(
        c.upstream.invalid_certificate,
        InvalidCertificate::Untrusted
    );
    assert_eq!(c.ips.mode, IpsMode::Detect);
    assert!(c.ips.rules.is_empty() && c.webfilter.is_empty() && c.appcontrol.rules.is_empty());
    let p = &c.policies[0];
    assert_eq!(&*p.id, "pol-a");
    assert_eq!(p.name, "pol-a");
    assert!(p.enabled);
    assert_eq!(p.tls13, PassOrInspect::Passthrough);
    assert_eq!(p.ech, PassOrInspect::Passthrough);
    assert_eq!(p.no_sni, PassOrInspect::Passthrough);
    assert_eq!(p.legacy_tls, PassOrBlock::Passthrough);
    assert_eq!(p.non_tls, PassOrBlock::Passthrough);
    assert_eq!(p.on_disable, OnDisable::Interrupt);
    assert!(p.ca_chain.is_empty() && p.exclude_sni.is_empty());
    let s = &p.scopes[0];
    assert_eq!((&*s.id, s.index), ("sc-1", 1));
    assert_eq!(
        s.source_ports,
        vec![PortRange {
            start: 0,
            end: 65535
        }]
    );
    assert_eq!(
        s.destination_ports,
        vec![PortRange {
            start: 443,
            end: 443
        }]
    );
    // With the defaults, validate warns that TLS 1.3 and ECH clients are not inspected.
    let w = c.warnings().join("\n");
    assert!(w.contains("tls13 = \"passthrough\""), "{w}");
    assert!(w.contains("ech = \"passthrough\""), "{w}");
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let c = config::load(Path::new("tests/configs/valid_paths.toml")).unwrap();
    let d = Path::new("tests/configs");
    assert_eq!(
        c.appliance.log,
        Path::new("/var/log/tlsinspect/traffic.jsonl")
    );
    assert_eq!(c.appliance.control, d.join("control.sock"));
    assert_eq!(c.upstream.roots, Roots::Bundle(d.join("pki/roots.pem")));
    assert_eq!(
        c.upstream.extra_roots,
        vec![d.join("pki/extra.pem"), PathBuf::from("/etc/ssl/other.pem")]
    );
    let p = &c.policies[0];
    assert_eq!(p.ca_cert, d.join("ca/ca.crt"));
    assert_eq!(p.ca_key, d.join("ca/ca.key"));
    assert_eq!(p.ca_chain, vec![d.join("ca/root.crt")]);
    assert_eq!(
        c.ips.rules,
        vec![d.join("rules/a.rules"), PathBuf::from("/opt/rules/b.rules")]
    );
    assert_eq!(c.appcontrol.signatures, Some(d.join("apps.toml")));
    // Parsing text as if it came from an absolute path resolves against that directory.
    let text = std::fs::read_to_string("tests/configs/valid_minimal.toml").unwrap();
    let c = config::parse(&text, Path::new("/etc/tlsinspect/tlsinspect.toml")).unwrap();
    assert_eq!(
        c.policies[0].ca_cert,
        Path::new("/etc/tlsinspect/ca/ca.crt")
    );
    // A bare file name resolves against the current directory.
    let c = config::parse(&text, Path::new("tlsinspect.toml")).unwrap();
    assert_eq!(c.policies[0].ca_cert, Path::new("ca/ca.crt"));
}

#[test]
fn scopes_iterate_in_precedence_order_and_match() {
    let text = r#"
[appliance]
mode = "tun"
lan = "tun-lan"
wan = "tun-wan"
cpus = [0]
log = "l"
control = "c"

[[policy]]
id = "pol-b"
ca_cert = "c"
ca_key = "k"
  [[policy.scope]]
  id = "s1"
  source_ips = ["192.0.2.1"]
  source_ports = ["0/65535"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443", "8000/8999"]
  [[policy.scope]]
  id = "s2"
  source_ips = ["192.0.2.2"]
  source_ports = ["0/65535"]
  destinations = ["0.0.0.0/0"]
  destination_ports = ["443/443"]

[[policy]]
id = "pol-a"
ca_cert = "c"
ca_key = "k"
  [[policy.scope]]
  id = "s1"
  source_ips = ["192.0.2.1"]
  source_ports = ["0/65535"]
  destinations = ["0.0.0.0/0"]
  destination_ports = ["0/65535"]
"#;
    let c = config::parse(text, Path::new("x.toml")).unwrap();
    let order: Vec<(String, String)> = c
        .scopes()
        .map(|(p, s)| (p.id.to_string(), s.id.to_string()))
        .collect();
    assert_eq!(
        order,
        [("pol-b", "s1"), ("pol-b", "s2"), ("pol-a", "s1")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let first = |src, sport, dst, dport| {
        c.scopes()
            .find(|(_, s)| s.matches(ip(src), sport, ip(dst), dport))
            .map(|(p, s)| format!("{}/{}", p.id, s.id))
    };
    assert_eq!(
        first("192.0.2.1", 5000, "203.0.113.9", 8443),
        Some("pol-b/s1".into())
    );
    assert_eq!(
        first("192.0.2.1", 5000, "203.0.113.9", 9000),
        Some("pol-a/s1".into())
    );
    assert_eq!(
        first("192.0.2.1", 5000, "198.51.100.1", 443),
        Some("pol-a/s1".into())
    );
    assert_eq!(first("192.0.2.3", 5000, "203.0.113.9", 443), None);
}

fn reference() -> config::Config {
    config::load(Path::new(REFERENCE)).unwrap()
}

#[test]
fn render_lists_policies_scopes_and_quota() {
    let c = reference();
    let out = render(&c, None);
    assert!(
        out.contains("policy \"pol-office\" (Office egress): enabled"),
        "{out}"
    );
    assert!(out.contains("settings: tls13 inspect, ech inspect, legacy_tls passthrough, no_sni passthrough, non_tls passthrough, on_disable interrupt"), "{out}");
    assert!(
        out.contains("scope #1 \"sc-web\": office hosts to the web"),
        "{out}"
    );
    assert!(
        out.contains("source_ips (3): 192.0.2.10, 192.0.2.11, 2001:db8:10::10"),
        "{out}"
    );
    assert!(out.contains("quota: 3 x 1 x 2 x 2 = 12"), "{out}");
    assert!(out.contains("scope #2 \"sc-lab-servers\""), "{out}");
    assert!(out.contains("policy quota: 13 (2 scopes)"), "{out}");
    assert!(out.contains("quota: 13 of 20,000"), "{out}");
    assert!(out.contains("warnings: none"), "{out}");
}

#[test]
fn render_inserts_the_ca_block_of_each_policy() {
    let c = reference();
    let ca = |p: &config::Policy| {
        vec![
            format!("CA subject: CN=test CA for {}", p.id),
            "CA key: ECDSA P-256".to_string(),
        ]
    };
    let out = render(&c, Some(&ca));
    let ca_at = out
        .find("  CA subject: CN=test CA for pol-office")
        .expect(&out);
    let policy_at = out.find("policy \"pol-office\"").unwrap();
    let scope_at = out.find("scope #1 \"sc-web\"").unwrap();
    assert!(policy_at < ca_at && ca_at < scope_at, "{out}");
    assert!(out.contains("  CA key: ECDSA P-256\n"), "{out}");
    let out = render_report(
        &c,
        Some(&ca),
        &["policy \"pol-office\": CA expires in 30 days".into()],
    );
    assert!(
        out.contains("warnings (1):\n  - policy \"pol-office\": CA expires in 30 days\n"),
        "{out}"
    );
}

#[test]
fn warnings_disabled_policy_tls13_passthrough_and_shadowed_scope() {
    let text = r#"
[appliance]
mode = "af_packet"
lan = "eth1"
wan = "eth2"
cpus = [0]
log = "l"
control = "c"
metrics = "0.0.0.0:9273"

[[policy]]
id = "pol-wide"
ca_cert = "c"
ca_key = "k"
tls13 = "inspect"
ech = "inspect"
  [[policy.scope]]
  id = "all-web"
  source_ips = ["192.0.2.1", "192.0.2.2"]
  source_ports = ["0/1023", "1024/65535"]
  destinations = ["0.0.0.0/0"]
  destination_ports = ["443/443"]
  [[policy.scope]]
  id = "narrow"
  source_ips = ["192.0.2.2", "192.0.2.2"]
  source_ports = ["40000/50000"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443"]

[[policy]]
id = "pol-off"
enabled = false
ca_cert = "c"
ca_key = "k"
ech = "inspect"
  [[policy.scope]]
  id = "other"
  source_ips = ["192.0.2.9"]
  source_ports = ["0/65535"]
  destinations = ["0.0.0.0/0"]
  destination_ports = ["443/443"]

[[webfilter.rule]]
action = "allow"
[[webfilter.rule]]
host = "x.example"
action = "deny"
"#;
    let c = config::parse(text, Path::new("w.toml")).unwrap();
    let out = render(&c, None);
    assert!(
        out.contains("policy \"pol-off\" (pol-off): DISABLED"),
        "{out}"
    );
    let warn = |frag: &str| {
        assert!(
            out.lines()
                .any(|l| l.starts_with("  - ") && l.contains(frag)),
            "no warning containing {frag:?} in:\n{out}"
        )
    };
    warn("policy \"pol-off\" is disabled");
    warn("policy \"pol-off\": tls13 = \"passthrough\": every client offering TLS 1.3");
    warn("policy \"pol-wide\" scope #2 \"narrow\" is shadowed entirely by policy \"pol-wide\" scope #1 \"all-web\"");
    warn("policy \"pol-wide\" scope #2 \"narrow\": source_ips has 1 duplicate entry (first: 192.0.2.2)");
    warn("webfilter.rule #2 is never reached: rule #1 matches every request");
    warn("appliance.metrics listens on 0.0.0.0:9273");
    // pol-wide inspects TLS 1.3 and ECH: no such warning for it.
    assert!(!out.contains("policy \"pol-wide\": tls13"), "{out}");
    assert!(!out.contains("policy \"pol-wide\": ech"), "{out}");
    // The disabled policy's scope shadows nothing and is not shadowed.
    assert!(!out.contains("\"other\" is shadowed"), "{out}");
    assert!(out.contains("quota: 7 of 20,000"), "{out}");
}

/// The operator's path: copy the reference config, make a trial CA where it
/// points, validate. The CA block shows the trial CA.
#[test]
fn binary_validates_the_reference_config_with_a_trial_ca() {
    let bin = env!("CARGO_BIN_EXE_tlsinspect");
    let dir = tempfile::tempdir().unwrap();
    // The reference config refers to the shipped rules and app signatures
    // next to it: copy them along, as an operator installing /etc/tlsinspect would.
    let conf = dir.path().join("tlsinspect.toml");
    std::fs::copy(REFERENCE, &conf).unwrap();
    std::fs::copy("configs/apps.toml", dir.path().join("apps.toml")).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::copy(
        "configs/rules/default.rules",
        dir.path().join("rules/default.rules"),
    )
    .unwrap();
    let ca_dir = dir.path().join("ca");
    let out = Command::new(bin)
        .args(["ca", "trial", "--out"])
        .arg(&ca_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(ca_dir.join("ca.crt"), ca_dir.join("office-ca.crt")).unwrap();
    std::fs::rename(ca_dir.join("ca.key"), ca_dir.join("office-ca.key")).unwrap();

    let out = Command::new(bin)
        .args(["validate", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    assert!(stdout.contains("(valid)"), "{stdout}");
    assert!(stdout.contains("quota: 13 of 20,000"), "{stdout}");
    assert!(stdout.contains("CN=tlsinspect trial CA"), "{stdout}");
    assert!(stdout.contains("(ECDSA P-256)"), "{stdout}");
    assert!(stdout.contains("days left)"), "{stdout}");

    // Without the CA files the same config is refused, naming policy and file.
    std::fs::remove_file(ca_dir.join("office-ca.crt")).unwrap();
    let out = Command::new(bin)
        .args(["validate", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policy \"pol-office\": CA: cannot read CA certificate"),
        "{stderr}"
    );
    assert!(stderr.contains("office-ca.crt"), "{stderr}");
}

/// Every prefix of the reference config (cut at every character boundary)
/// parses to a config or to errors, never a panic, and errors always name the file.
#[test]
fn every_prefix_of_the_reference_config_never_panics() {
    let text = std::fs::read_to_string(REFERENCE).unwrap();
    let path = Path::new("prefix.toml");
    let mut accepted = 0;
    for cut in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
        match config::parse(&text[..cut], path) {
            Ok(c) => {
                accepted += 1;
                let _ = render(&c, None);
            }
            Err(e) => {
                assert!(!e.is_empty());
                assert!(e
                    .errors()
                    .iter()
                    .all(|x| x.to_string().starts_with("prefix.toml: ")));
            }
        }
    }
    assert!(accepted > 0, "the whole file must be accepted at least");
}

/// Corrupting each line of the reference config in turn (removing it,
/// duplicating it, replacing values with other types) never panics.
#[test]
fn line_mutations_of_the_reference_config_never_panic() {
    let text = std::fs::read_to_string(REFERENCE).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let path = Path::new("m.toml");
    for i in 0..lines.len() {
        let mut variants = Vec::new();
        let mut drop = lines.clone();
        drop.remove(i);
        variants.push(drop.join("\n"));
        if let Some((k, _)) = lines[i].split_once('=') {
            for v in [
                "1",
                "-1",
                "true",
                "[]",
                "[1, \"a\"]",
                "{}",
                "\"\"",
                "1.5",
                "1979-05-27",
            ] {
                let mut m = lines.clone();
                let repl = format!("{k}= {v}");
                m[i] = &repl;
                variants.push(m.join("\n"));
            }
        }
        for v in variants {
            let _ = config::parse(&v, path).map(|c| render(&c, None));
        }
    }
}

/// Deeply nested arrays and inline tables are refused by the TOML parser's
/// depth limit instead of overflowing the stack.
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for text in [
        format!("x = {}1{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("x = {}1{}", "{a = ".repeat(100_000), "}".repeat(100_000)),
        "[a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z]\n".repeat(100),
        format!("[{}]", "a.".repeat(50_000) + "a"),
    ] {
        let e = config::parse(&text, Path::new("deep.toml")).unwrap_err();
        assert!(!e.is_empty());
    }
}
