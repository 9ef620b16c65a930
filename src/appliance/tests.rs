//! Tests of the config -> control-plane mappings and of reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tlsinspect_pipeline::api::{Direction, Emit, FlowMeta, Inspector};
use tlsinspect_pipeline::hostglob::HostGlob;
use tlsinspect_pipeline::tls::decision::{PassOrBlock, PassOrInspect};

use super::build::{self, Built};
use super::Appliance;
use crate::config::{self, Config};

fn ca_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/ca")
}

/// A config in a temp dir with the test CA; `extra` is appended (policy
/// keys first, then sections).
fn config_text(policy_keys: &str, sections: &str) -> String {
    let ca = ca_dir();
    format!(
        r#"
[appliance]
mode = "af_packet"
lan = "eth1"
wan = "eth2"
cpus = [0]
log = "traffic.jsonl"
control = "control.sock"

[upstream]
roots = "{ca}/ca.crt"

[[policy]]
id = "pol-a"
ca_cert = "{ca}/ca.crt"
ca_key = "{ca}/ca.key"
{policy_keys}
  [[policy.scope]]
  id = "sc-1"
  source_ips = ["192.0.2.10"]
  source_ports = ["0/65535"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443"]

{sections}
"#,
        ca = ca.display()
    )
}

fn parse(dir: &Path, text: &str) -> Config {
    let path = dir.join("t.toml");
    std::fs::write(&path, text).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn err_of(r: anyhow::Result<Built>) -> String {
    format!("{:#}", r.expect_err("must fail"))
}

#[test]
fn exclude_sni_and_settings_map_onto_the_tls_policy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = parse(
        dir.path(),
        &config_text(
            r#"exclude_sni = ["*.bank.example", "Pay.Example"]
tls13 = "inspect"
ech = "inspect"
non_tls = "block"
legacy_tls = "block"
no_sni = "inspect""#,
            "",
        ),
    );
    let built = Built::from_config(&cfg, SystemTime::now()).unwrap();
    let p = &built.tls_policies["pol-a"];
    assert_eq!(
        p.exclude_sni,
        vec![
            HostGlob::new("*.bank.example").unwrap(),
            HostGlob::new("pay.example").unwrap()
        ]
    );
    assert!(p.exclude_sni.iter().any(|g| g.matches("www.bank.example")));
    assert!(!p.exclude_sni.iter().any(|g| g.matches("bank.example")));
    assert!(p.exclude_sni.iter().any(|g| g.matches("pay.example")));
    assert_eq!(p.tls13, PassOrInspect::Inspect);
    assert_eq!(p.ech, PassOrInspect::Inspect);
    assert_eq!(p.no_sni, PassOrInspect::Inspect);
    assert_eq!(p.non_tls, PassOrBlock::Block);
    assert_eq!(p.legacy_tls, PassOrBlock::Block);

    // Defaults are the seed product's: everything passes.
    let cfg = parse(dir.path(), &config_text("", ""));
    let built = Built::from_config(&cfg, SystemTime::now()).unwrap();
    let p = &built.tls_policies["pol-a"];
    assert!(p.exclude_sni.is_empty());
    assert_eq!(p.tls13, PassOrInspect::Pass);
    assert_eq!(p.ech, PassOrInspect::Pass);
    assert_eq!(p.non_tls, PassOrBlock::Pass);
}

#[test]
fn an_exclude_sni_the_host_glob_grammar_refuses_is_refused_with_policy_and_index() {
    let dir = tempfile::tempdir().unwrap();
    // The config checks exclude_sni with the matcher's own grammar, so a
    // pattern is either refused when loading or honoured when matching.
    let path = dir.path().join("t.toml");
    let text = config_text(r#"exclude_sni = ["ok.example", "*b.example"]"#, "");
    std::fs::write(&path, &text).unwrap();
    let e = config::load(&path).unwrap_err().to_string();
    assert!(e.contains("\"pol-a\""), "{e}");
    assert!(e.contains("exclude_sni #2"), "{e}");
    assert!(e.contains("*b.example"), "{e}");
    // An inner '*' is a glob the matcher honours.
    let cfg = parse(
        dir.path(),
        &config_text(r#"exclude_sni = ["ok.example", "a*b.example"]"#, ""),
    );
    let built = Built::from_config(&cfg, SystemTime::now()).unwrap();
    let p = &built.tls_policies["pol-a"];
    assert!(p.exclude_sni.iter().any(|g| g.matches("axyb.example")));
    assert!(!p.exclude_sni.iter().any(|g| g.matches("a.b.example")));
}

#[test]
fn roots_from_a_bundle_plus_extra_roots() {
    let dir = tempfile::tempdir().unwrap();
    // Two CA certificates in one bundle file.
    let bundle = dir.path().join("bundle.pem");
    let ca_pem = std::fs::read_to_string(ca_dir().join("ca.crt")).unwrap();
    let second = crate::pki::trial::create(
        &dir.path().join("second"),
        crate::pki::KeyKind::EcdsaP256,
        SystemTime::now(),
    )
    .unwrap()
    .0;
    let second_pem = std::fs::read_to_string(&second).unwrap();
    std::fs::write(&bundle, format!("{ca_pem}{second_pem}")).unwrap();

    let cfg = parse(dir.path(), &config_text("", ""));
    let mut up = cfg.upstream.clone();
    up.roots = config::Roots::Bundle(bundle.clone());
    let (store, warnings) = build::upstream_roots(&up).unwrap();
    assert_eq!(store.len(), 2);
    assert!(warnings.is_empty(), "{warnings:?}");

    let third = crate::pki::trial::create(
        &dir.path().join("third"),
        crate::pki::KeyKind::EcdsaP256,
        SystemTime::now(),
    )
    .unwrap()
    .0;
    up.extra_roots = vec![third];
    let (store, _) = build::upstream_roots(&up).unwrap();
    assert_eq!(store.len(), 3);

    // A file without a certificate is an error naming field and file.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    up.extra_roots = vec![empty.clone()];
    let e = format!("{:#}", build::upstream_roots(&up).unwrap_err());
    assert!(e.contains("extra_roots"), "{e}");
    assert!(e.contains(&empty.display().to_string()), "{e}");
    up.extra_roots.clear();
    up.roots = config::Roots::Bundle(dir.path().join("missing.pem"));
    let e = format!("{:#}", build::upstream_roots(&up).unwrap_err());
    assert!(e.contains("missing.pem"), "{e}");

    // "system": never an empty store (system store, else the bundled roots).
    up.roots = config::Roots::System;
    let (store, _) = build::upstream_roots(&up).unwrap();
    assert!(store.len() > 10, "{} roots", store.len());
}

fn meta() -> FlowMeta {
    FlowMeta {
        flow_id: 7,
        src: "192.0.2.10:40000".parse::<SocketAddr>().unwrap(),
        dest: "203.0.113.5:443".parse::<SocketAddr>().unwrap(),
        policy_id: "pol-a".into(),
        scope_id: "sc-1".into(),
        sni: Some("files.example.com".into()),
        alpn: None,
        tunnel: None,
    }
}

fn request(engines: &dyn Inspector, req: &[u8]) -> (Emit, Vec<tlsinspect_pipeline::api::Alert>) {
    let mut f = engines.new_flow(&meta());
    let mut out = Emit::default();
    f.on_data(Direction::ToServer, req, &mut out);
    let alerts = f.take_alerts();
    (out, alerts)
}

#[test]
fn engines_start_with_one_bad_rule_reported_and_the_good_ones_active() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("site.rules");
    std::fs::write(
        &rules,
        concat!(
            "alert http any any -> any any (msg:\"secret path\"; http.uri; content:\"/secret\"; sid:9000001; rev:1;)\n",
            "alert http any any -> any any (msg:\"unsupported\"; http.uri; content:\"/x\"; lua:script.lua; sid:9000002; rev:1;)\n",
            "alert http any any -> any any (msg:\"broken\"; content:\"unterminated; sid:9000003;)\n",
        ),
    )
    .unwrap();
    let sections = format!(
        r#"[ips]
rules = ["{}", "{}"]
mode = "detect"

[[webfilter.rule]]
host = "*.example.com"
path = "/upload/*"
methods = ["POST"]
action = "deny"
"#,
        rules.display(),
        dir.path().join("absent.rules").display()
    );
    let cfg = parse(dir.path(), &config_text("", &sections));
    let built = Built::from_config(&cfg, SystemTime::now()).unwrap();
    assert_eq!(built.ips_report.loaded, 1);
    assert_eq!(built.ips_report.skipped.len(), 2, "{:?}", built.ips_report);
    let w = built.warnings.join("\n");
    assert!(w.contains("sid 9000002") && w.contains("lua"), "{w}");
    assert!(w.contains("site.rules:3"), "{w}");
    assert!(w.contains("absent.rules"), "{w}");

    // The good rule alerts, in detect mode the request still goes through.
    let (out, alerts) = request(
        &*built.engines,
        b"GET /secret HTTP/1.1\r\nHost: files.example.com\r\n\r\n",
    );
    assert!(alerts.iter().any(|a| a.sid == 9000001), "{alerts:?}");
    assert!(out.to_server.starts_with(b"GET /secret"));

    // The web-filter rule from the config answers 403, nothing to the server.
    let (out, _) = request(
        &*built.engines,
        b"POST /upload/a HTTP/1.1\r\nHost: files.example.com\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(out.to_server.is_empty());
    assert!(
        out.to_client.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&out.to_client)
    );
}

#[test]
fn appcontrol_rules_and_the_built_in_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = parse(
        dir.path(),
        &config_text(
            "",
            r#"[[appcontrol.rule]]
app = "github"
action = "upload"
verdict = "deny"
"#,
        ),
    );
    let (engines, _) = build::engines(&cfg).unwrap();
    let shipped = crate::inspect::AppTable::from_toml(build::SHIPPED_APPS, "x").unwrap();
    assert!(shipped.signatures().iter().any(|s| s.app == "github"));
    // A git push is github/upload in the shipped table: denied.
    let (out, _) = request(
        &engines,
        b"POST /o/r.git/git-receive-pack HTTP/1.1\r\nHost: github.com\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(out.to_server.is_empty());
    assert!(out.to_client.starts_with(b"HTTP/1.1 403"));
    // Browsing passes.
    let (out, _) = request(&engines, b"GET /o/r HTTP/1.1\r\nHost: github.com\r\n\r\n");
    assert!(out.to_server.starts_with(b"GET /o/r"));

    // A signatures file that does not exist is an error naming it.
    let mut cfg = cfg;
    cfg.appcontrol.signatures = Some(dir.path().join("apps-missing.toml"));
    let e = format!("{:#}", build::engines(&cfg).unwrap_err());
    assert!(e.contains("apps-missing.toml"), "{e}");
}

#[test]
fn an_enabled_policy_with_a_broken_ca_stops_the_start_a_disabled_one_warns() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text("", "").replace(
        &format!("{}/ca.key", ca_dir().display()),
        &dir.path().join("nokey.key").display().to_string(),
    );
    let cfg = parse(dir.path(), &text);
    let e = err_of(Built::from_config(&cfg, SystemTime::now()));
    assert!(e.contains("\"pol-a\""), "{e}");
    assert!(e.contains("nokey.key"), "{e}");

    let cfg = parse(
        dir.path(),
        &text.replace("id = \"pol-a\"", "id = \"pol-a\"\nenabled = false"),
    );
    let built = Built::from_config(&cfg, SystemTime::now()).unwrap();
    assert!(built.cas.is_empty());
    assert!(built
        .warnings
        .iter()
        .any(|w| w.contains("pol-a") && w.contains("disabled")));
    assert_eq!(built.scopes.len(), 0, "a disabled policy selects nothing");
}

#[test]
fn reload_swaps_on_success_and_keeps_the_old_state_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    let good = config_text("", "")
        .replace(
            "traffic.jsonl",
            &dir.path().join("traffic.jsonl").display().to_string(),
        )
        .replace(
            "control.sock",
            &dir.path().join("c.sock").display().to_string(),
        );
    std::fs::write(&path, &good).unwrap();
    let app = Appliance::start_without_dataplane(&path, config::load(&path).unwrap()).unwrap();
    // What a flow born now holds, for its whole life.
    let born = app.intercept_ctx();
    assert!(born.policies["pol-a"].exclude_sni.is_empty());

    let excluding = good.replace(
        "id = \"pol-a\"",
        "id = \"pol-a\"\nexclude_sni = [\"*.bank.example\"]",
    );
    std::fs::write(&path, &excluding).unwrap();
    let msg = app.reload().unwrap();
    assert!(msg.contains("reloaded") && msg.contains("pol-a"), "{msg}");
    // New flows get the new settings; the flow born before keeps its own,
    // and its own minter and engines (not ones swapped underneath it).
    let after = app.intercept_ctx();
    assert_eq!(after.policies["pol-a"].exclude_sni.len(), 1);
    assert!(born.policies["pol-a"].exclude_sni.is_empty());
    assert!(!Arc::ptr_eq(&born.minter, &after.minter));
    assert!(!Arc::ptr_eq(&born.inspector, &after.inspector));

    std::fs::write(&path, good.replace("ca.key", "gone.key")).unwrap();
    let e = format!("{:#}", app.reload().unwrap_err());
    assert!(e.contains("gone.key"), "{e}");
    assert!(
        Arc::ptr_eq(&app.intercept_ctx(), &after),
        "a failed reload changes nothing"
    );

    // A restart-only setting is reported on this reload and every later
    // one, and new flows keep the buffers the workers started with.
    let bigger = excluding.replace("[appliance]\n", "[appliance]\ntcp_buffer_bytes = 131072\n");
    assert_ne!(bigger, excluding);
    std::fs::write(&path, &bigger).unwrap();
    for _ in 0..2 {
        let msg = app.reload().unwrap();
        assert!(
            msg.contains("not applied until a restart: appliance.tcp_buffer_bytes"),
            "{msg}"
        );
        assert_eq!(
            app.intercept_ctx().tcp.rx_buffer,
            born.tcp.rx_buffer,
            "tcp_buffer_bytes was applied by a reload"
        );
    }
    let (_, status) = app.status();
    assert_eq!(status["counters"]["reloads_ok"], 3);
    assert_eq!(status["counters"]["reloads_failed"], 1);
    assert_eq!(status["enabled_policies"][0], "pol-a");
}

#[test]
fn a_ca_with_less_than_a_year_left_warns_at_start_and_shows_its_days_in_the_metrics() {
    use crate::control::metrics::MetricsSource as _;
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("short.crt"), dir.path().join("short.key"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "100", "-subj", "/CN=short-lived test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let ca = ca_dir().display().to_string();
    let text = config_text("", "")
        .replace(
            &format!("ca_cert = \"{ca}/ca.crt\""),
            &format!("ca_cert = \"{}\"", crt.display()),
        )
        .replace(
            &format!("ca_key = \"{ca}/ca.key\""),
            &format!("ca_key = \"{}\"", key.display()),
        )
        .replace(
            "traffic.jsonl",
            &dir.path().join("traffic.jsonl").display().to_string(),
        );
    let path = dir.path().join("t.toml");
    std::fs::write(&path, &text).unwrap();
    let app = Appliance::start_without_dataplane(&path, config::load(&path).unwrap()).unwrap();
    let w = app.warnings().join("\n");
    assert!(
        w.contains("\"pol-a\"") && w.contains("less than one year"),
        "{w}"
    );
    let left = app
        .samples()
        .into_iter()
        .find(|s| s.name == "ca_validity_remaining_seconds")
        .map(|s| (s.labels.clone(), s.value / 86_400.0))
        .unwrap();
    assert_eq!(left.0, vec![("policy".to_owned(), "pol-a".to_owned())]);
    assert!((98.0..=100.0).contains(&left.1), "{left:?}");
}

#[test]
fn upstream_crls_load_by_glob_and_refuse_what_is_not_a_crl() {
    let dir = tempfile::tempdir().unwrap();
    let crls = dir.path().join("crl");
    std::fs::create_dir(&crls).unwrap();
    let with = |entry: &str| {
        config_text("", "").replace(
            &format!("roots = \"{}/ca.crt\"\n", ca_dir().display()),
            &format!(
                "roots = \"{}/ca.crt\"\ncrls = [\"{entry}\"]\n",
                ca_dir().display()
            ),
        )
    };
    // A glob that matches nothing yet.
    let glob = format!("{}/*.pem", crls.display());
    let cfg = parse(dir.path(), &with(&glob));
    let e = err_of(Built::from_config(&cfg, SystemTime::now()));
    assert!(e.contains("matches no file"), "{e}");
    // A certificate where a CRL belongs.
    std::fs::copy(ca_dir().join("ca.crt"), crls.join("a.pem")).unwrap();
    let e = err_of(Built::from_config(&cfg, SystemTime::now()));
    assert!(e.contains("a.pem") && e.contains("no PEM X509 CRL"), "{e}");
    // A real CRL of the test CA (openssl, as an operator makes one).
    std::fs::remove_file(crls.join("a.pem")).unwrap();
    let db = dir.path().join("index.txt");
    std::fs::write(&db, "").unwrap();
    let number = dir.path().join("crlnumber");
    std::fs::write(&number, "01\n").unwrap();
    let conf = dir.path().join("ca.cnf");
    std::fs::write(
        &conf,
        format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {}\ncrlnumber = {}\ndefault_md = sha256\n\
             default_crl_days = 30\ncrl_extensions = ext\n[ext]\nauthorityKeyIdentifier = keyid:always\n",
            db.display(),
            number.display()
        ),
    )
    .unwrap();
    let st = std::process::Command::new("openssl")
        .args(["ca", "-gencrl", "-config"])
        .arg(&conf)
        .arg("-cert")
        .arg(ca_dir().join("ca.crt"))
        .arg("-keyfile")
        .arg(ca_dir().join("ca.key"))
        .arg("-out")
        .arg(crls.join("test-ca.pem"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let n = build::upstream_crls(&cfg.upstream).unwrap().len();
    assert_eq!(n, 1);
    Built::from_config(&cfg, SystemTime::now()).unwrap();
}
