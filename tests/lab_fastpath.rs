//! The appliance binary in the lab, fast path and pass relay (issues 3, 4):
//! ping, UDP and HTTPS cross it unchanged in both af_packet and tun mode; the
//! in-scope client's TLS 1.3 connections, with `tls13 = "passthrough"`, are
//! terminated at TCP level and relayed unchanged (the origin's certificate,
//! a byte-identical 50 MB body) and logged as `pass` / `tls13` with their
//! policy and scope, while out-of-scope flows leave no record.
//! (Interception itself: `tests/lab_intercept.rs`.)

mod lab;

use std::net::Ipv4Addr;

use lab::{LabMode, TestLab};

/// In scope of `pol-demo` / `sc-https` (configs/demo.toml).
const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUT_OF_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SERVER_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

fn fast_path(mode: LabMode, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build(tag, mode, &[IN_SCOPE, OUT_OF_SCOPE], &[SERVER_A, SERVER_B])?;
    let nginx = t.start_nginx()?;
    t.start_udp_echo(SERVER_B, 7007)?;
    let (config, log) = t.write_config(IN_SCOPE)?;
    // The metrics endpoint listens inside the appliance ns only.
    let text = std::fs::read_to_string(&config)?
        .replace("\ncontrol = ", "\nmetrics = \"127.0.0.1:9273\"\ncontrol = ")
        .replace("tls13 = \"inspect\"", "tls13 = \"passthrough\"");
    assert!(text.contains("tls13 = \"passthrough\""));
    std::fs::write(&config, text)?;
    let app = t.start_appliance(&config, OUT_OF_SCOPE, SERVER_A)?;

    for client in [IN_SCOPE, OUT_OF_SCOPE] {
        let p = t.ping(client, SERVER_B, 3)?;
        assert_eq!(p.received, 3, "{mode:?}: ping from {client}: {p:?}");
        let u = t.udp(client, 41000, SERVER_B, 7007, &format!("udp from {client}"))?;
        assert!(u.echoed, "{mode:?}: UDP echo from {client}: {u:?}");
    }

    let mut in_scope_ports = Vec::new();
    for (client, http2) in [(IN_SCOPE, false), (OUT_OF_SCOPE, true)] {
        let small = t.path(&format!("index-{client}.html"));
        let c = t.curl(
            client,
            SERVER_A,
            "/index.html",
            &t.pki.origin_root,
            &small,
            http2,
        )?;
        assert_eq!(c.http_code, 200, "{mode:?}: {client}: {c:?}");
        assert_eq!(c.ssl_verify_result, 0, "{mode:?}: {client}: {c:?}");
        // The server's real certificate: issued by the lab's origin root.
        assert!(
            c.issuer.contains(lab::pki::ORIGIN_ROOT_CN),
            "{mode:?}: {client}: issuer {:?}",
            c.issuer
        );
        assert_eq!(c.http_version, if http2 { "2" } else { "1.1" });
        assert_eq!(std::fs::read_to_string(&small)?, "hello from nginx\n");

        let big = t.path(&format!("big-{client}.bin"));
        let c2 = t.curl(
            client,
            SERVER_B,
            "/big.bin",
            &t.pki.origin_root,
            &big,
            http2,
        )?;
        assert_eq!(c2.http_code, 200, "{mode:?}: {client}: {c2:?}");
        assert_eq!(std::fs::metadata(&big)?.len(), 50 << 20);
        assert_eq!(
            lab::sha256_file(&big)?,
            nginx.big_sha256,
            "{mode:?}: {client}: 50 MB body differs"
        );
        std::fs::remove_file(&big)?;
        if client == IN_SCOPE {
            in_scope_ports.push((c.local_port, SERVER_A));
            in_scope_ports.push((c2.local_port, SERVER_B));
        }
    }

    let m = t.lab.exec(
        t.lab.appliance_ns(),
        "curl",
        &["-sS", "http://127.0.0.1:9273/metrics"],
    )?;
    let metrics = String::from_utf8_lossy(&m.stdout);
    // Bytes, not frames: with offloads on, 50 MB cross in ~1,000 super-frames.
    // The in-scope downloads are passed (TLS 1.3 passthrough): released from
    // the TCP legs once their hello was delivered, they cross rewritten.
    let bytes = |path: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("tlsinspect_bytes_total{{path=\"{path}\"}} ")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        bytes("released") > 50 << 20 && bytes("in_scope") < 1 << 20,
        "{mode:?}: released and in-scope bytes in the metrics: {metrics}"
    );
    // The intercepted flows that ended are in the latency histograms.
    let count = |series: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    for series in [
        "tlsinspect_handshake_seconds_count{leg=\"server\"} ",
        "tlsinspect_handshake_seconds_count{leg=\"client\"} ",
        "tlsinspect_added_latency_seconds_count{direction=\"to_server\"} ",
        "tlsinspect_added_latency_seconds_count{direction=\"to_client\"} ",
    ] {
        assert!(count(series) >= 1, "{mode:?}: {series}in {metrics}");
    }

    // Reload (SIGHUP) with the policy disabled: new in-scope connections
    // are no longer selected, so they leave no record.
    let text = std::fs::read_to_string(&config)?.replace("enabled = true", "enabled = false");
    std::fs::write(&config, text)?;
    t.lab.signal(app.pid, "HUP")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.stderr().contains("SIGHUP: reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "{mode:?}: no reload logged: {}",
            app.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let after = t.curl(
        IN_SCOPE,
        SERVER_A,
        "/index.html",
        &t.pki.origin_root,
        &t.path("after.html"),
        false,
    )?;
    assert_eq!(after.http_code, 200);

    let counters = t.stop_appliance(&app)?;
    let records = lab::read_log(&log)?;
    for (port, server) in &in_scope_ports {
        let found = records.iter().any(|r| {
            r["src_ip"] == IN_SCOPE.to_string()
                && r["src_port"] == *port
                && r["dest_ip"] == server.to_string()
                && r["dest_port"] == 443
                && r["event_type"] == "flow"
                && r["tlsinspect"]["action"] == "pass"
                && r["tlsinspect"]["reason"] == "tls13"
                && r["tlsinspect"]["policy_id"] == "pol-demo"
                && r["tlsinspect"]["scope_id"] == "sc-https"
        });
        assert!(
            found,
            "{mode:?}: no pass/tls13 record for {IN_SCOPE}:{port} -> {server}:443 in {records:#?}\nappliance said: {counters}"
        );
    }
    assert!(
        !records
            .iter()
            .any(|r| r["src_port"] == after.local_port && r["src_ip"] == IN_SCOPE.to_string()),
        "{mode:?}: a connection after disabling the policy was still selected: {records:#?}"
    );
    let strays: Vec<_> = records
        .iter()
        .filter(|r| {
            r["src_ip"] == OUT_OF_SCOPE.to_string() || r["dest_ip"] == OUT_OF_SCOPE.to_string()
        })
        .collect();
    assert!(
        strays.is_empty(),
        "{mode:?}: out-of-scope flows were logged: {strays:#?}"
    );
    // The UDP flow of the in-scope client is not TCP and so never in scope.
    assert!(
        !records.iter().any(|r| r["dest_port"] == 7007),
        "{mode:?}: the UDP flow was logged: {records:#?}"
    );

    let access = std::fs::read_to_string(&nginx.access_log)?;
    assert_eq!(
        access.matches("GET /big.bin").count(),
        2,
        "{mode:?}: access log: {access}"
    );
    Ok(())
}

#[test]
fn fast_path_af_packet() -> anyhow::Result<()> {
    fast_path(LabMode::AfPacket, "fpaf")
}

#[test]
fn fast_path_af_packet_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || fast_path(LabMode::AfPacket, "fpafo"))
}

#[test]
fn fast_path_tun() -> anyhow::Result<()> {
    fast_path(LabMode::Tun, "fptun")
}

#[test]
fn fast_path_tun_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || fast_path(LabMode::Tun, "fptuno"))
}
