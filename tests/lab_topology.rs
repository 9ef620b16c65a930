//! The lab itself, with a kernel bridge in the appliance namespace instead of
//! the appliance: proves the topology, nginx, curl and the built-in peers
//! work, so a failing appliance test points at the appliance.

mod lab;

use std::net::Ipv4Addr;

use lab::{LabMode, TestLab};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SERVER2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

#[test]
fn kernel_bridge_lab_carries_ping_udp_and_https() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build("bridge", LabMode::Bridge, &[CLIENT], &[SERVER, SERVER2])?;
    let ns = t.lab.namespaces();
    for n in &ns {
        assert!(
            std::path::Path::new("/run/netns").join(n).exists(),
            "namespace {n} missing"
        );
    }

    let p = t.ping(CLIENT, SERVER2, 2)?;
    assert_eq!(p.received, 2, "ping through the kernel bridge: {p:?}");

    t.start_udp_echo(SERVER, 7007)?;
    let u = t.udp(CLIENT, 41000, SERVER, 7007, "bridge lab")?;
    assert!(u.echoed, "UDP echo through the kernel bridge: {u:?}");

    let nginx = t.start_nginx()?;
    let out = t.path("small.html");
    let c = t.curl(
        CLIENT,
        SERVER2,
        "/index.html",
        &t.pki.origin_root,
        &out,
        true,
    )?;
    assert_eq!(c.http_code, 200);
    assert_eq!(c.http_version, "2");
    assert_eq!(c.ssl_verify_result, 0);
    assert!(
        c.issuer.contains(lab::pki::ORIGIN_ROOT_CN),
        "issuer {:?}",
        c.issuer
    );
    assert_eq!(std::fs::read_to_string(&out)?, "hello from nginx\n");
    let access = std::fs::read_to_string(&nginx.access_log)?;
    assert!(
        access.contains("GET /index.html HTTP/2.0"),
        "access log: {access}"
    );

    // openssl s_client sees the same real chain.
    let s = t.s_client(CLIENT, SERVER, &t.pki.origin_root, &[])?;
    assert!(s.success, "{}", s.output);
    assert!(
        s.issuers()
            .first()
            .is_some_and(|i| i.contains(lab::pki::ORIGIN_ROOT_CN)),
        "{:?}\n{}",
        s.issuers(),
        s.output
    );
    let s = t.s_client(CLIENT, SERVER, &t.pki.policy_ca_cert, &[])?;
    assert!(
        !s.success,
        "s_client verified nginx against the wrong root: {}",
        s.output
    );

    // The demo's built-in origin and client (no nginx/curl), over the same lab.
    let mut cmd = t.lab.command(
        t.lab.server_ns(),
        lab::exe(),
        &[
            "lab-helper",
            "origin",
            "--cert",
            &t.pki.origin_cert.display().to_string(),
            "--key",
            &t.pki.origin_key.display().to_string(),
            "--listen",
            &format!("{SERVER}:8443"),
        ],
    );
    cmd.stdout(std::process::Stdio::null());
    t.lab.spawn("origin", cmd)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let f: lab::probe::FetchResult = t.helper(
        t.lab.client_ns(),
        &[
            "fetch",
            "--source",
            &CLIENT.to_string(),
            "--connect",
            &format!("{SERVER}:8443"),
            "--sni",
            lab::SERVER_NAME,
            "--ca",
            &t.pki.origin_root.display().to_string(),
            "--path",
            "/bytes/3000000",
        ],
    )?;
    assert!(f.ok, "built-in fetch: {f:?}");
    assert_eq!(f.status, Some(200));
    assert_eq!(f.body_len, 3_000_000);
    assert_eq!(
        f.body_sha256.as_deref(),
        Some(lab::probe::sha256_hex(&lab::probe::pattern_bytes(3_000_000)).as_str())
    );
    assert!(
        f.chain[0].issuer.contains(lab::pki::ORIGIN_ROOT_CN),
        "{f:?}"
    );
    // Not trusting the origin's root must fail the handshake.
    let bad: lab::probe::FetchResult = t.helper(
        t.lab.client_ns(),
        &[
            "fetch",
            "--source",
            &CLIENT.to_string(),
            "--connect",
            &format!("{SERVER}:8443"),
            "--sni",
            lab::SERVER_NAME,
            "--ca",
            &t.pki.policy_ca_cert.display().to_string(),
        ],
    )?;
    assert!(
        !bad.ok,
        "fetch trusting only the policy CA succeeded: {bad:?}"
    );

    // Cleanup on drop removes the namespaces.
    drop(t);
    for n in &ns {
        assert!(
            !std::path::Path::new("/run/netns").join(n).exists(),
            "namespace {n} left behind"
        );
    }
    Ok(())
}

/// The TUN lab's policy routing, as the kernel resolves it: what enters on
/// `lan` goes into `tlan`, what the appliance writes to `twan` leaves by
/// `wan` toward the router, and the reverse.
#[test]
fn tun_lab_routes_each_port_through_its_tun_device() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build("tunroute", LabMode::Tun, &[CLIENT], &[SERVER])?;
    let a = t.lab.appliance_ns().to_owned();
    let route = |args: &[&str]| -> anyhow::Result<String> {
        let mut full = vec!["-n", &a, "route", "get"];
        full.extend_from_slice(args);
        let o = tlsinspect::demo::lab::run_cmd(std::process::Command::new("ip").args(&full))?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let (c, s) = (CLIENT.to_string(), SERVER.to_string());
    let r = route(&[&s, "from", &c, "iif", "lan"])?;
    assert!(r.contains("dev tlan"), "client->server on lan: {r}");
    let r = route(&[&s, "from", &c, "iif", "twan"])?;
    assert!(
        r.contains("via 198.51.100.2 dev wan"),
        "client->server out of twan: {r}"
    );
    let r = route(&[&c, "from", &s, "iif", "wan"])?;
    assert!(r.contains("dev twan"), "server->client on wan: {r}");
    let r = route(&[&c, "from", &s, "iif", "tlan"])?;
    assert!(r.contains("dev lan"), "server->client out of tlan: {r}");
    for tun in ["tlan", "twan"] {
        let o = t.lab.exec(&a, "ip", &["-d", "link", "show", tun])?;
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("tun type tun") && text.contains("multi_queue"),
            "{tun}: {text}"
        );
    }
    Ok(())
}
