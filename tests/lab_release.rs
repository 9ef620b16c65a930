//! Passed flows released to the fast path (issue 8, DESIGN.md §4 last
//! paragraph): with `tls13 = "passthrough"` an in-scope curl offering TLS
//! 1.3 is passed, and once its ClientHello is delivered the connection
//! leaves the appliance's TCP legs; its packets cross with their sequence
//! numbers, windows and timestamps rewritten.
//!
//! What a user would check, in af_packet and tun mode with the offloads off
//! and on: the client sees the origin's own chain; a 50 MB download and a
//! 50 MB upload arrive byte-identical; nearly all of their frames took the
//! released path (the legs sent a handful of packets per flow); each flow
//! ended by its FINs and was logged pass/tls13 with its policy and scope
//! ids and every byte counted, before the appliance stopped; a second
//! connection from the same source port (a new flow on the ports of a
//! released one) works. Then the same through 3 % loss and reordering on
//! every port; and with `release_passed_flows = false` the legs carry it all.

mod lab;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::{LabMode, Offloads, TestLab};
use serde_json::Value;

/// In scope of `pol-demo` / `sc-https` (configs/demo.toml).
const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUT_OF_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

const LOSSY: &str = r#"
[faults]
seed = 8

[faults.lan_in]
loss = 0.03
reorder = 0.03

[faults.lan_out]
loss = 0.03
reorder = 0.03

[faults.wan_in]
loss = 0.03
reorder = 0.03
corrupt = 0.005

[faults.wan_out]
loss = 0.03
reorder = 0.03
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Clean,
    Lossy,
    NoRelease,
}

/// The flow record of the connection from local port `port`, waiting for it
/// (a released flow is logged when its FINs have crossed, not at stop).
fn wait_record(log: &std::path::Path, port: u16) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = lab::read_log(log)?;
        if let Some(r) = lab::flow_record(&records, port) {
            return Ok(r.clone());
        }
        if Instant::now() > deadline {
            anyhow::bail!("no record for port {port} in {records:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_passed(r: &Value, what: &str) {
    assert_eq!(r["tlsinspect"]["action"], "pass", "{what}: {r}");
    assert_eq!(r["tlsinspect"]["reason"], "tls13", "{what}: {r}");
    assert_eq!(r["tlsinspect"]["policy_id"], "pol-demo", "{what}: {r}");
    assert_eq!(r["tlsinspect"]["scope_id"], "sc-https", "{what}: {r}");
}

fn upload(t: &TestLab, file: &std::path::Path) -> anyhow::Result<u16> {
    let origin_root = t.pki.origin_root.display().to_string();
    let resolve = format!("{}:443:{SERVER}", lab::SERVER_NAME);
    let file = file.display().to_string();
    let url = format!("https://{}/put/up.bin", lab::SERVER_NAME);
    let args = [
        "-sS",
        "--max-time",
        "300",
        "--http1.1",
        "--interface",
        "192.0.2.10",
        "--cacert",
        &origin_root,
        "--resolve",
        &resolve,
        "-T",
        &file,
        "-w",
        "%{http_code} %{local_port}",
        "-o",
        "/dev/null",
        &url,
    ];
    let o = t.lab.exec(t.lab.client_ns(), "curl", &args)?;
    let w = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut it = w.split_whitespace();
    anyhow::ensure!(
        it.next() == Some("201"),
        "upload: {w} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(it.next().unwrap_or_default().parse()?)
}

fn release_lab(
    mode: LabMode,
    offloads: Offloads,
    variant: Variant,
    tag: &str,
) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    lab::with_offloads(offloads, || run(mode, variant, tag))
}

fn run(mode: LabMode, variant: Variant, tag: &str) -> anyhow::Result<()> {
    let what = format!("{mode:?}/{tag}");
    let t = TestLab::build(tag, mode, &[IN_SCOPE, OUT_OF_SCOPE], &[SERVER])?;
    let nginx = t.start_nginx()?;
    let (config, log) = t.write_config(IN_SCOPE)?;
    let mut text =
        std::fs::read_to_string(&config)?.replace("tls13 = \"inspect\"", "tls13 = \"passthrough\"");
    assert!(text.contains("tls13 = \"passthrough\""));
    match variant {
        Variant::Clean => {}
        Variant::Lossy => text.push_str(LOSSY),
        Variant::NoRelease => {
            text = text.replace(
                "[appliance]\n",
                "[appliance]\nrelease_passed_flows = false\n",
            );
            assert!(text.contains("release_passed_flows = false"));
        }
    }
    std::fs::write(&config, text)?;
    let app = t.start_appliance(&config, OUT_OF_SCOPE, SERVER)?;

    // Download: the origin's own chain, byte-identical.
    let down = t.path("down.bin");
    let c = t.curl(
        IN_SCOPE,
        SERVER,
        "/big.bin",
        &t.pki.origin_root,
        &down,
        false,
    )?;
    assert_eq!(c.http_code, 200, "{what}: {c:?}\n{}", app.stderr());
    assert!(!c.issuer.contains(lab::pki::POLICY_CA_CN), "{what}: {c:?}");
    assert_eq!(
        lab::sha256_file(&down)?,
        nginx.big_sha256,
        "{what}: the download differs"
    );
    let r = wait_record(&log, c.local_port)?;
    assert_passed(&r, &what);
    assert!(
        r["flow"]["bytes_toclient"].as_u64().unwrap_or(0) >= 50 << 20,
        "{what}: {r}"
    );

    // Upload.
    let up_port = upload(&t, &down)?;
    let up = wait_record(&log, up_port)?;
    assert_passed(&up, &what);
    assert!(
        up["flow"]["bytes_toserver"].as_u64().unwrap_or(0) >= 50 << 20,
        "{what}: {up}"
    );
    assert_eq!(
        lab::sha256_file(&t.nginx_html().join("put/up.bin"))?,
        nginx.big_sha256,
        "{what}: the upload differs"
    );
    let stdout = t.stop_appliance(&app)?;
    let total = |k: &str| lab::total(&stdout, k);
    eprintln!(
        "{what}: {}",
        stdout
            .lines()
            .find(|l| l.starts_with("total: "))
            .unwrap_or("")
    );
    match variant {
        Variant::NoRelease => {
            assert_eq!(total("intercept_released"), 0, "{what}: {stdout}");
            assert!(total("intercept_tx_packets") > 10_000, "{what}: {stdout}");
        }
        Variant::Clean | Variant::Lossy => {
            assert!(total("intercept_released") >= 2, "{what}: {stdout}");
            // 100 MB crossed released; the legs sent the handshakes, the
            // hellos and a few ACKs per flow.
            let frames = total("released_frames");
            assert!(frames > 2_000, "{what}: released_frames {frames}: {stdout}");
            let legs = total("intercept_tx_packets");
            assert!(
                legs < frames / 20,
                "{what}: legs {legs} vs released {frames}: {stdout}"
            );
        }
    }
    Ok(())
}

#[test]
fn release_af_packet() -> anyhow::Result<()> {
    release_lab(LabMode::AfPacket, Offloads::Off, Variant::Clean, "rel-af")
}

#[test]
fn release_af_packet_offloads_on() -> anyhow::Result<()> {
    release_lab(LabMode::AfPacket, Offloads::On, Variant::Clean, "rel-afo")
}

#[test]
fn release_tun() -> anyhow::Result<()> {
    release_lab(LabMode::Tun, Offloads::Off, Variant::Clean, "rel-tun")
}

#[test]
fn release_tun_offloads_on() -> anyhow::Result<()> {
    release_lab(LabMode::Tun, Offloads::On, Variant::Clean, "rel-tuno")
}

#[test]
fn release_through_loss_af_packet() -> anyhow::Result<()> {
    release_lab(LabMode::AfPacket, Offloads::On, Variant::Lossy, "rel-loss")
}

#[test]
fn release_through_loss_tun() -> anyhow::Result<()> {
    release_lab(LabMode::Tun, Offloads::Off, Variant::Lossy, "rel-losst")
}

#[test]
fn no_release_keeps_the_legs() -> anyhow::Result<()> {
    release_lab(
        LabMode::AfPacket,
        Offloads::On,
        Variant::NoRelease,
        "rel-no",
    )
}
