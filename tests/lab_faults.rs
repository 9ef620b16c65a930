//! Transfers through a bad network (issue 11, DESIGN.md §12): the appliance
//! in the lab with its ports wrapped in the fault-injecting middleware
//! (`[faults]`): 5 % loss, 5 % reordering and 1 % duplication of the frames
//! in both directions of both ports, so on both TCP legs of an inspected
//! connection, plus 1 % corruption of what each port receives.
//!
//! What a user would check, in af_packet and tun mode: a 50 MB download and
//! a 50 MB upload, both inspected (the policy CA's chain), arrive
//! byte-identical; the corrupted segments were dropped by the appliance and
//! counted (`rx_bad_checksum`), the faults it injected are counted; both
//! flows are logged as inspected with their policy and scope ids.

mod lab;

use std::net::Ipv4Addr;

use lab::{LabMode, TestLab};

/// In scope of `pol-demo` / `sc-https` (configs/demo.toml).
const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUT_OF_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

const FAULTS: &str = r#"
[faults]
seed = 20261203

[faults.lan_in]
loss = 0.05
reorder = 0.05
duplicate = 0.01
corrupt = 0.01

[faults.lan_out]
loss = 0.05
reorder = 0.05
duplicate = 0.01

[faults.wan_in]
loss = 0.05
reorder = 0.05
duplicate = 0.01
corrupt = 0.01

[faults.wan_out]
loss = 0.05
reorder = 0.05
duplicate = 0.01
"#;

fn faults_lab(mode: LabMode, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build(tag, mode, &[IN_SCOPE, OUT_OF_SCOPE], &[SERVER])?;
    let nginx = t.start_nginx()?;
    let (config, log) = t.write_config(IN_SCOPE)?;
    let text = std::fs::read_to_string(&config)? + FAULTS;
    std::fs::write(&config, text)?;
    let app = t.start_appliance(&config, OUT_OF_SCOPE, SERVER)?;
    assert!(app.stderr().contains("[faults] is set"), "{}", app.stderr());
    let ca = &t.pki.policy_ca_cert;

    // Download.
    let out = t.path("down.bin");
    let c = t.curl(IN_SCOPE, SERVER, "/big.bin", ca, &out, false)?;
    assert_eq!(c.http_code, 200, "{mode:?}: {c:?}\n{}", app.stderr());
    assert!(c.issuer.contains(lab::pki::POLICY_CA_CN), "{c:?}");
    assert_eq!(
        lab::sha256_file(&out)?,
        nginx.big_sha256,
        "{mode:?}: the download differs"
    );
    let down_port = c.local_port;

    // Upload: nginx stores the PUT body (DAV) under its document root.
    let o = t.lab.exec(
        t.lab.client_ns(),
        "curl",
        &[
            "-sS",
            "--max-time",
            "300",
            "--http1.1",
            "--interface",
            &IN_SCOPE.to_string(),
            "--cacert",
            &ca.display().to_string(),
            "--resolve",
            &format!("{}:443:{SERVER}", lab::SERVER_NAME),
            "-T",
            &out.display().to_string(),
            "-w",
            "%{http_code} %{local_port}",
            "-o",
            "/dev/null",
            &format!("https://{}/put/up.bin", lab::SERVER_NAME),
        ],
    )?;
    let w = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut it = w.split_whitespace();
    assert_eq!(it.next(), Some("201"), "{mode:?}: upload: {w}");
    let up_port: u16 = it.next().unwrap_or_default().parse()?;
    assert_eq!(
        lab::sha256_file(&t.nginx_html().join("put/up.bin"))?,
        nginx.big_sha256,
        "{mode:?}: the upload differs"
    );

    let stdout = t.stop_appliance(&app)?;
    eprintln!(
        "{mode:?}: {}",
        stdout
            .lines()
            .find(|l| l.starts_with("total: "))
            .unwrap_or("")
    );
    let get = |k: &str| lab::total(&stdout, k);
    for k in [
        "fault_lost",
        "fault_duplicated",
        "fault_reordered",
        "fault_corrupted",
    ] {
        assert!(get(k) > 100, "{mode:?}: {k} = {}: {stdout}", get(k));
    }
    // Corrupted segments of the inspected flows were seen and dropped.
    assert!(get("rx_bad_checksum") > 0, "{mode:?}: {stdout}");
    assert!(get("rx_bad_checksum") <= get("fault_corrupted"), "{stdout}");

    let records = lab::read_log(&log)?;
    lab::assert_inspected_flow(&records, down_port);
    let up = lab::assert_inspected_flow(&records, up_port);
    assert!(
        up["flow"]["bytes_toserver"].as_u64().unwrap_or(0) > 50 << 20,
        "{mode:?}: {up}"
    );
    Ok(())
}

#[test]
fn faults_af_packet() -> anyhow::Result<()> {
    faults_lab(LabMode::AfPacket, "flt-af")
}

#[test]
fn faults_tun() -> anyhow::Result<()> {
    faults_lab(LabMode::Tun, "flt-tun")
}
