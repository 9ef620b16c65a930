//! Decrypted traffic for the tools people use (DESIGN.md §11): with a
//! policy's `keylog` on, tshark decrypts a capture of the client leg with
//! the key log and reads the HTTP request (host, method, URI); without the
//! key log it cannot. The key log is mode 0600 and the appliance warns at
//! start while it is on.

mod lab;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::{LabMode, TestLab};

const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn http_requests(pcap: &std::path::Path, keylog: Option<&std::path::Path>) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap);
    if let Some(k) = keylog {
        cmd.arg("-o")
            .arg(format!("tls.keylog_file:{}", k.display()));
    }
    let out = cmd
        .args(["-Y", "http.request", "-T", "fields"])
        .args([
            "-e",
            "http.host",
            "-e",
            "http.request.method",
            "-e",
            "http.request.uri",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("tshark (tests/run.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tshark_decrypts_the_client_leg_with_the_key_log() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build("kl", LabMode::AfPacket, &[IN_SCOPE], &[SERVER])?;
    let _nginx = t.start_nginx()?;
    let (config, log) = t.write_config(IN_SCOPE)?;
    let keys = t.path("keys/pol-demo.keys");
    let text = std::fs::read_to_string(&config)?.replacen(
        "id = \"pol-demo\"",
        &format!("id = \"pol-demo\"\nkeylog = \"{}\"", keys.display()),
        1,
    );
    std::fs::write(&config, text)?;

    let pcap = t.path("client-leg.pcap");
    let mut cmd = t.lab.command(
        t.lab.client_ns(),
        "tshark",
        &[
            "-q",
            "-i",
            "c0",
            "-f",
            "tcp port 443",
            "-w",
            &pcap.display().to_string(),
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let tshark = t.lab.spawn("tshark", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&pcap).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "tshark did not start capturing");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));

    let app = t.start_appliance(&config, IN_SCOPE, SERVER)?;
    assert!(
        app.stderr().contains("keylog is on"),
        "no warning at start: {}",
        app.stderr()
    );
    let c = t.curl(
        IN_SCOPE,
        SERVER,
        "/index.html",
        &t.pki.policy_ca_cert,
        &t.path("index.html"),
        false,
    )?;
    assert_eq!(c.http_code, 200, "{c:?}");
    std::thread::sleep(Duration::from_millis(500));
    t.lab.stop(tshark, "INT", Duration::from_secs(10))?;
    t.stop_appliance(&app)?;
    let records = lab::read_log(&log)?;
    assert!(records
        .iter()
        .any(|r| r["event_type"] == "flow" && r["tlsinspect"]["action"] == "inspected"));

    let mode = std::fs::metadata(&keys)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key log mode");
    let key_text = std::fs::read_to_string(&keys)?;
    let randoms: std::collections::HashSet<&str> = key_text
        .lines()
        .filter(|l| {
            // TLS 1.3 traffic secrets, or the TLS 1.2 master secret.
            l.starts_with("CLIENT_TRAFFIC_SECRET_0 ") || l.starts_with("CLIENT_RANDOM ")
        })
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    assert_eq!(randoms.len(), 2, "both legs' secrets: {key_text}");

    let plain = http_requests(&pcap, Some(&keys));
    assert_eq!(
        plain.trim(),
        format!("{}\tGET\t/index.html", lab::SERVER_NAME),
        "tshark with the key log"
    );
    assert_eq!(
        http_requests(&pcap, None).trim(),
        "",
        "without the key log the capture is opaque"
    );
    Ok(())
}
