//! Decrypted traffic as pcap (issue 10, DESIGN.md §11): `[capture]` in the
//! lab, with PCAP-over-IP on.
//!
//! What a user would check: after inspected curl requests (a GET and a
//! POST over HTTP/1.1), tshark reads the HTTP requests — host, URI, method
//! — back from the pcap files, with the client's real address and port and
//! the server's; a PCAP-over-IP client (socat in the appliance namespace)
//! received the same requests live; a connection of a policy that is not
//! captured is not in the files.

mod lab;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use lab::{LabMode, TestLab};

const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUT_OF_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PCAP_OVER_IP: &str = "127.0.0.1:57012";

/// `src dport host uri method` of every HTTP request tshark finds in `file`.
fn requests(file: &Path) -> anyhow::Result<Vec<String>> {
    let o = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args([
            "-d",
            "tcp.port==443,http",
            "-Y",
            "http.request",
            "-T",
            "fields",
        ])
        .args([
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "tcp.dstport",
        ])
        .args([
            "-e",
            "http.host",
            "-e",
            "http.request.uri",
            "-e",
            "http.request.method",
        ])
        .output()?;
    anyhow::ensure!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>().join(" "))
        .collect())
}

fn capture(mode: LabMode, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build(tag, mode, &[IN_SCOPE, OUT_OF_SCOPE], &[SERVER])?;
    let _nginx = t.start_nginx()?;
    let (config, _log) = t.write_config(IN_SCOPE)?;
    let dir = t.path("pcap");
    let text = std::fs::read_to_string(&config)?
        + &format!(
            "\n[capture]\ndir = \"{}\"\npolicies = [\"pol-demo\"]\nmax_file_bytes = 10_000_000\nmax_files = 3\npcap_over_ip = \"{PCAP_OVER_IP}\"\n",
            dir.display()
        );
    std::fs::write(&config, text)?;
    let app = t.start_appliance(&config, OUT_OF_SCOPE, SERVER)?;
    assert!(app.stderr().contains("[capture] is on"), "{}", app.stderr());

    // A live PCAP-over-IP reader inside the appliance namespace.
    let live = t.path("live.pcap");
    let mut cmd = t.lab.command(
        t.lab.appliance_ns(),
        "socat",
        &[
            "-u",
            &format!("TCP:{PCAP_OVER_IP}"),
            &format!("CREATE:{}", live.display()),
        ],
    );
    cmd.stdout(std::process::Stdio::null());
    let reader = t.lab.spawn("pcap-over-ip reader", cmd)?;
    std::thread::sleep(Duration::from_millis(500));

    let ca = t.pki.policy_ca_cert.display().to_string();
    let c = t.curl(
        IN_SCOPE,
        SERVER,
        "/index.html",
        &t.pki.policy_ca_cert,
        &t.path("i.html"),
        false,
    )?;
    assert_eq!(c.http_code, 200, "{mode:?}: {c:?}");
    assert!(c.issuer.contains(lab::pki::POLICY_CA_CN), "{c:?}");
    let get_port = c.local_port;
    let o = t.lab.exec(
        t.lab.client_ns(),
        "curl",
        &[
            "-sS",
            "--http1.1",
            "--interface",
            &IN_SCOPE.to_string(),
            "--cacert",
            &ca,
            "--resolve",
            &format!("{}:443:{SERVER}", lab::SERVER_NAME),
            "-d",
            "item=42",
            "-w",
            "%{http_code} %{local_port}",
            "-o",
            "/dev/null",
            &format!("https://{}/api/items?page=2", lab::SERVER_NAME),
        ],
    )?;
    let w = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut it = w.split_whitespace();
    assert_eq!(it.next(), Some("200"), "{mode:?}: POST: {w}");
    let post_port: u16 = it.next().unwrap_or_default().parse()?;
    // Out of scope (the origin's chain): not inspected, so not captured.
    let c = t.curl(
        OUT_OF_SCOPE,
        SERVER,
        "/index.html",
        &t.pki.origin_root,
        &t.path("o.html"),
        false,
    )?;
    assert_eq!(c.http_code, 200, "{c:?}");

    let report = t.stop_appliance(&app)?;
    assert!(report.contains("capture: "), "{report}");
    let _ = t.lab.stop(reader, "TERM", Duration::from_secs(5));

    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert!(!files.is_empty(), "no pcap file in {}", dir.display());
    let mut seen = Vec::new();
    for f in &files {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(f)?.permissions().mode() & 0o777, 0o600);
        seen.extend(requests(f)?);
        // Well-formed sessions: nothing for Wireshark's TCP analysis to flag
        // (no retransmission, lost segment, out-of-order or bad checksum).
        let o = std::process::Command::new("tshark")
            .args(["-n", "-o", "tcp.check_checksum:TRUE", "-r"])
            .arg(f)
            .args(["-Y", "tcp.analysis.flags || tcp.checksum.status == 0"])
            .output()?;
        let flagged = String::from_utf8_lossy(&o.stdout);
        assert!(flagged.trim().is_empty(), "{mode:?}: {flagged}");
    }
    let want_get = format!(
        "{IN_SCOPE} {get_port} {SERVER} 443 {} /index.html GET",
        lab::SERVER_NAME
    );
    let want_post = format!(
        "{IN_SCOPE} {post_port} {SERVER} 443 {} /api/items?page=2 POST",
        lab::SERVER_NAME
    );
    assert!(
        seen.contains(&want_get),
        "{mode:?}: {want_get:?} not in {seen:?}"
    );
    assert!(
        seen.contains(&want_post),
        "{mode:?}: {want_post:?} not in {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.starts_with(&OUT_OF_SCOPE.to_string())),
        "{mode:?}: an uninspected connection was captured: {seen:?}"
    );
    let live_seen = requests(&live)?;
    assert!(
        live_seen.contains(&want_get),
        "{mode:?}: live: {live_seen:?}"
    );
    assert!(
        live_seen.contains(&want_post),
        "{mode:?}: live: {live_seen:?}"
    );
    Ok(())
}

#[test]
fn capture_af_packet() -> anyhow::Result<()> {
    capture(LabMode::AfPacket, "cap-af")
}

#[test]
fn capture_tun() -> anyhow::Result<()> {
    capture(LabMode::Tun, "cap-tun")
}
