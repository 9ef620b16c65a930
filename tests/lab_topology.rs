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
