//! Suricata-language rule families on real traffic in the lab (issue 14):
//! curl as the client, nginx as the origin, the appliance in between with the
//! demo config, `[ips.address_groups]` and a rule file in ET Open's style.
//!
//! What a user would check, in the traffic log: a `file.data` rule on a
//! response body, an `endswith` SNI rule on a TLS 1.3 flow the appliance
//! passes (excluded by `exclude_sni`), a `flowbits` pair (a silent setter on
//! the request, the alert on its response) and a `threshold` limit (three
//! matching requests, one alert), a `flowint` count over the requests of one
//! connection, a `pcre` look-ahead on a response body and raw content beside
//! HTTP buffers (the request as sent), a `ja3.hash` rule naming the JA3 of
//! curl's own ClientHello (captured in the lab first) and one naming another
//! — each alert with its sid, policy and scope.

mod lab;

use std::net::Ipv4Addr;

use lab::{LabMode, TestLab};
use serde_json::Value;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PROBE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Excluded from inspection: its TLS 1.3 flow is passed.
const PASSED_NAME: &str = "cdn.tracker.bad.example";

const RULES: &str = r#"alert http $EXTERNAL_NET any -> $HOME_NET any (msg:"LAB file.data response body"; flow:established,to_client; http.stat_code; content:"200"; file.data; content:"hello from"; startswith; fast_pattern; content:"nginx"; distance:0; sid:9100001; rev:1;)
alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"LAB SNI endswith"; flow:established,to_server; tls.sni; dotprefix; content:".bad.example"; endswith; fast_pattern; nocase; sid:9100002; rev:1;)
alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"LAB flowbits setter"; flow:established,to_server; http.method; content:"GET"; http.uri; content:"/api/flag"; bsize:9; flowbits:set,lab.flag; flowbits:noalert; sid:9100003; rev:1;)
alert http $EXTERNAL_NET any -> $HOME_NET any (msg:"LAB flowbits checker"; flow:established,to_client; flowbits:isset,lab.flag; http.stat_code; content:"200"; file.data; content:"api ok"; sid:9100004; rev:1;)
alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"LAB threshold limit"; flow:established,to_server; http.uri; content:"/api/probe"; startswith; threshold:type limit, track by_src, count 1, seconds 300; sid:9100005; rev:1;)
alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"LAB flowint counter"; flow:established,to_server; http.uri; content:"/api/probe"; startswith; flowint:lab.probes,+,1; flowbits:noalert; sid:9100006; rev:1;)
alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"LAB flowint third probe"; flow:established,to_server; http.uri; content:"/api/probe"; startswith; flowint:lab.probes,==,3; sid:9100007; rev:1;)
alert http $EXTERNAL_NET any -> $HOME_NET any (msg:"LAB pcre look-ahead"; flow:established,to_client; file.data; content:"hello from"; pcre:"/^hello from (?!apache)nginx(?=\n)/"; sid:9100008; rev:1;)
alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"LAB raw beside http"; flow:established,to_server; content:"GET /api/raw1 HTTP/1.1|0d 0a|"; startswith; http.method; content:"GET"; http.uri; content:"/api/raw"; sid:9100009; rev:1;)
"#;

fn sid(a: &Value) -> Option<u64> {
    a["alert"]["signature_id"].as_u64()
}

fn curl(
    t: &TestLab,
    host: &str,
    paths: &[&str],
    insecure: bool,
) -> anyhow::Result<std::process::Output> {
    let mut args: Vec<String> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            args.push("--next".into());
        }
        args.extend(
            [
                "-sS",
                "--max-time",
                "10",
                "--interface",
                &CLIENT.to_string(),
                "--resolve",
                &format!("{host}:443:{SERVER}"),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}\\n",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        if insecure {
            args.push("-k".into());
        } else {
            args.push("--cacert".into());
            args.push(t.pki.policy_ca_cert.display().to_string());
        }
        args.push(format!("https://{host}{p}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(t.lab.command(t.lab.client_ns(), "curl", &args).output()?)
}

/// curl's ClientHello to `host`, as a local listener in the client's
/// namespace receives it (curl gives up waiting for a ServerHello).
fn capture_curl_hello(t: &TestLab, host: &str) -> anyhow::Result<Vec<u8>> {
    let ns = t.lab.client_ns();
    let up = t
        .lab
        .command(ns, "ip", &["link", "set", "lo", "up"])
        .status()?;
    anyhow::ensure!(up.success(), "lo up in {ns}");
    let file = t.path("curl-hello.bin");
    let listener = t.lab.command(
        ns,
        "socat",
        &[
            "-u",
            "TCP-LISTEN:4443,bind=127.0.0.1,reuseaddr",
            &format!("CREATE:{}", file.display()),
        ],
    );
    t.lab.spawn("hello capture", listener)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let _ = t
            .lab
            .command(
                ns,
                "curl",
                &[
                    "-sS",
                    "-k",
                    "--max-time",
                    "2",
                    "--resolve",
                    &format!("{host}:4443:127.0.0.1"),
                    &format!("https://{host}:4443/"),
                ],
            )
            .output()?;
        let bytes = std::fs::read(&file).unwrap_or_default();
        if !bytes.is_empty() || std::time::Instant::now() > deadline {
            return Ok(bytes);
        }
    }
}

fn rule_families(mode: LabMode, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build_with_names(tag, mode, &[CLIENT, PROBE], &[SERVER], &[PASSED_NAME])?;
    let _nginx = t.start_nginx()?;
    // The JA3 of this lab's curl, from its hello as captured: the rule
    // must fire on curl's connections; one naming the JA3 with another
    // TLS version must not.
    let hello_bytes = capture_curl_hello(&t, lab::SERVER_NAME)?;
    let hello = tlsinspect_pipeline::tls::client_hello::parse(&hello_bytes)
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("no ClientHello captured: {hello_bytes:?}"))?;
    let ja3 = tlsinspect::inspect::ips::tls::ja3_string(&hello);
    let hash = tlsinspect::inspect::ips::tls::ja3_hash(&ja3);
    let (_, rest) = ja3.split_once(',').unwrap();
    let other = tlsinspect::inspect::ips::tls::ja3_hash(&format!("770,{rest}"));
    let rules = t.path("lab.rules");
    std::fs::write(
        &rules,
        format!(
            r#"{RULES}alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"LAB ja3 of curl"; flow:established,to_server; ja3.hash; content:"{hash}"; sid:9100010; rev:1;)
alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"LAB ja3 of another client"; flow:established,to_server; ja3.hash; content:"{other}"; sid:9100011; rev:1;)
"#
        ),
    )?;
    let (config, log) = t.write_config(CLIENT)?;
    let mut text = std::fs::read_to_string(&config)?;
    assert!(text.contains("exclude_sni = []"), "demo config changed");
    text = text.replace(
        "exclude_sni = []",
        "exclude_sni = [\"*.tracker.bad.example\"]",
    );
    text.push_str(&format!(
        "\n[ips]\nrules = [\"{}\"]\nmode = \"detect\"\n\n[ips.address_groups]\nHOME_NET = \"[192.0.2.0/24]\"\n",
        rules.display()
    ));
    std::fs::write(&config, text)?;
    let app = t.start_appliance(&config, PROBE, SERVER)?;

    let o = curl(
        &t,
        lab::SERVER_NAME,
        &[
            "/index.html",
            "/api/probe1",
            "/api/probe2",
            "/api/probe3",
            "/api/flag",
        ],
        false,
    )?;
    let codes = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        codes,
        "200\n200\n200\n200\n200\n",
        "{o:?}\n{}",
        app.stderr()
    );
    // A second connection without the setter: the checker stays silent.
    let o = curl(&t, lab::SERVER_NAME, &["/api/other"], false)?;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200\n", "{o:?}");
    // HTTP/1.1 requests, whose bytes as sent the raw content sees: one
    // matches, the other's request line differs.
    for path in ["/api/raw1", "/api/raw2"] {
        let o = t
            .lab
            .command(
                t.lab.client_ns(),
                "curl",
                &[
                    "-sS",
                    "--http1.1",
                    "--max-time",
                    "10",
                    "--interface",
                    &CLIENT.to_string(),
                    "--resolve",
                    &format!("{}:443:{SERVER}", lab::SERVER_NAME),
                    "--cacert",
                    &t.pki.policy_ca_cert.display().to_string(),
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}\\n",
                    &format!("https://{}{path}", lab::SERVER_NAME),
                ],
            )
            .output()?;
        assert_eq!(String::from_utf8_lossy(&o.stdout), "200\n", "{o:?}");
    }
    // The passed flow: curl's hello offers TLS 1.3 (Debian's nginx 1.22
    // then settles on 1.2), and nginx's own certificate reaches curl.
    let o = curl(&t, PASSED_NAME, &["/index.html"], true)?;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200\n", "{o:?}");

    t.stop_appliance(&app)?;
    let records = lab::read_log(&log)?;
    let alerts: Vec<&Value> = records
        .iter()
        .filter(|r| r["event_type"] == "alert")
        .collect();
    let of = |s: u64| -> Vec<&Value> {
        alerts
            .iter()
            .copied()
            .filter(|a| sid(a) == Some(s))
            .collect()
    };
    for a in &alerts {
        assert_eq!(a["tlsinspect"]["policy_id"], "pol-demo", "{a:#}");
        assert_eq!(a["tlsinspect"]["scope_id"], "sc-https", "{a:#}");
        assert_eq!(a["src_ip"], CLIENT.to_string(), "{a:#}");
    }
    let body = of(9100001);
    assert_eq!(
        body.len(),
        1,
        "{mode:?}: file.data alert once (index.html): {alerts:#?}"
    );
    let sni = of(9100002);
    assert_eq!(
        sni.len(),
        1,
        "{mode:?}: SNI alert on the passed flow: {alerts:#?}"
    );
    let passed = records
        .iter()
        .find(|r| r["event_type"] == "flow" && r["src_port"] == sni[0]["src_port"]);
    let passed = passed.unwrap_or_else(|| panic!("no flow record of the SNI alert: {records:#?}"));
    let action = passed["tlsinspect"]["action"].as_str();
    assert_eq!(action, Some("pass"), "{passed:#}");
    // The flow's `tls` event holds the hello's version (the highest offered on a pass).
    let tls = records
        .iter()
        .find(|r| r["event_type"] == "tls" && r["src_port"] == sni[0]["src_port"])
        .unwrap_or_else(|| panic!("no tls event of the SNI alert's flow: {records:#?}"));
    let offered = tls["tls"]["version"].as_str().unwrap_or_default();
    assert!(
        offered.contains("1.3"),
        "the hello offered TLS 1.3: {tls:#}"
    );
    assert!(of(9100003).is_empty(), "noalert setter logged: {alerts:#?}");
    assert_eq!(
        of(9100004).len(),
        1,
        "{mode:?}: flowbits pair fires once: {alerts:#?}"
    );
    assert_eq!(
        of(9100005).len(),
        1,
        "{mode:?}: threshold limit 1 of 3: {alerts:#?}"
    );
    assert!(
        of(9100006).is_empty(),
        "noalert counter logged: {alerts:#?}"
    );
    assert_eq!(
        of(9100007).len(),
        1,
        "{mode:?}: flowint reaches 3 on the third probe only: {alerts:#?}"
    );
    assert_eq!(
        of(9100008).len(),
        1,
        "{mode:?}: pcre look-ahead on index.html's body: {alerts:#?}"
    );
    // Every curl connection above is a fresh process with the options that
    // shape the hello as in the capture (ALPN values and the SNI name are
    // not part of JA3).
    let ja3_alerts = of(9100010);
    assert!(
        !ja3_alerts.is_empty(),
        "{mode:?}: ja3.hash {hash} of curl ({ja3}): {alerts:#?}"
    );
    assert!(of(9100011).is_empty(), "{mode:?}: other ja3: {alerts:#?}");
    // Once: /api/raw2 matches the http buffers but not the raw request line.
    assert_eq!(
        of(9100009).len(),
        1,
        "{mode:?}: raw content beside http buffers: {alerts:#?}"
    );
    Ok(())
}

#[test]
fn rule_families_af_packet() -> anyhow::Result<()> {
    rule_families(LabMode::AfPacket, "rules")
}

#[test]
fn rule_families_af_packet_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || {
        rule_families(LabMode::AfPacket, "ruleso")
    })
}
