//! The kernel fast path in the lab (issue 8, item 3): in af_packet mode an
//! out-of-scope HTTPS download crosses the appliance byte-identical, carried
//! by the tc-BPF program (its byte counters hold the transfer; the workers'
//! user-space fast path sees only the handshake and teardown), the FINs take
//! the flow out of the map, and a second connection on the same addresses
//! and ports is listed anew. With `kernel_fast_path = "off"` the same
//! downloads take the user-space fast path, as they do in tun mode, which
//! says so at start. Both offload settings.

mod lab;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::{LabMode, TestLab};

const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUT_OF_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The client port of both downloads.
const CLIENT_PORT: u16 = 40123;
const BIG: u64 = 50 << 20;

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `setting` is `kernel_fast_path`'s value; the kernel path is expected
/// where it is "auto" in af_packet mode.
fn kernel_fast_path(mode: LabMode, setting: &str, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let kernel = mode == LabMode::AfPacket && setting == "auto";
    let t = TestLab::build(tag, mode, &[IN_SCOPE, OUT_OF_SCOPE], &[SERVER])?;
    let nginx = t.start_nginx()?;
    let (config, _log) = t.write_config(IN_SCOPE)?;
    let text = std::fs::read_to_string(&config)?.replace(
        "\ncontrol = ",
        &format!("\nmetrics = \"127.0.0.1:9273\"\nkernel_fast_path = \"{setting}\"\ncontrol = "),
    );
    assert!(text.contains("kernel_fast_path = "));
    std::fs::write(&config, text)?;
    let app = t.start_appliance(&config, OUT_OF_SCOPE, SERVER)?;
    let said = if kernel {
        "kernel fast path: on"
    } else if mode == LabMode::Tun {
        "kernel fast path: off (tun mode)"
    } else {
        "kernel fast path: off (kernel_fast_path = \"off\")"
    };
    assert!(
        app.stderr().contains(said),
        "start-up does not say {said:?}: {}",
        app.stderr()
    );
    let scrape = || -> anyhow::Result<String> {
        let m = t.lab.exec(
            t.lab.appliance_ns(),
            "curl",
            &["-sS", "http://127.0.0.1:9273/metrics"],
        )?;
        Ok(String::from_utf8_lossy(&m.stdout).into_owned())
    };

    // Two downloads from the same client port: the server closes first
    // (`Connection: close`), so the client's port is free again at once.
    for round in 1..=2u64 {
        let out = t.path(&format!("big-{round}.bin"));
        let resolve = format!("{}:443:{SERVER}", lab::SERVER_NAME);
        let url = format!("https://{}/big.bin", lab::SERVER_NAME);
        let o = t.lab.exec(
            t.lab.client_ns(),
            "curl",
            &[
                "-sS",
                "--max-time",
                "120",
                "--interface",
                &OUT_OF_SCOPE.to_string(),
                "--local-port",
                &CLIENT_PORT.to_string(),
                "--cacert",
                &t.pki.origin_root.display().to_string(),
                "--resolve",
                &resolve,
                "--http1.1",
                "-H",
                "Connection: close",
                "-o",
                &out.display().to_string(),
                "-w",
                "%{http_code} %{local_port}",
                &url,
            ],
        )?;
        let w = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        assert_eq!(
            w,
            format!("200 {CLIENT_PORT}"),
            "round {round}: curl said {w:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(std::fs::metadata(&out)?.len(), BIG);
        assert_eq!(
            lab::sha256_file(&out)?,
            nginx.big_sha256,
            "round {round}: the 50 MB body differs"
        );
        std::fs::remove_file(&out)?;
        if kernel {
            // Both FINs crossed the workers: the flow left the map.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let m = scrape()?;
                let listed = metric(&m, "tlsinspect_kernel_flows_listed_total ");
                let ended = metric(&m, "tlsinspect_kernel_flows_ended_total ");
                if listed == round && ended == round {
                    let bytes = metric(&m, "tlsinspect_bytes_total{path=\"kernel\"} ");
                    assert!(
                        bytes >= round * BIG,
                        "round {round}: the program forwarded {bytes} bytes: {m}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: listed {listed}, ended {ended} (want {round} each): {m}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    let report = t.stop_appliance(&app)?;
    eprintln!("{tag}: {report}");
    let kernel_bytes = lab::total(&report, "kernel_bytes");
    let fast_bytes = lab::total(&report, "fast_bytes");
    if kernel {
        assert_eq!(lab::total(&report, "kernel_flows_listed"), 2, "{report}");
        assert_eq!(lab::total(&report, "kernel_flows_ended"), 2, "{report}");
        assert!(kernel_bytes >= 2 * BIG, "{report}");
        assert!(lab::total(&report, "kernel_packets") > 0, "{report}");
        // The workers saw the handshakes, the teardowns, the probes' pings
        // and what crossed while an entry was being added: a small part.
        assert!(
            fast_bytes < kernel_bytes / 20,
            "user-space fast path carried {fast_bytes} bytes beside the kernel's {kernel_bytes}: {report}"
        );
    } else {
        assert_eq!(kernel_bytes, 0, "{report}");
        assert_eq!(lab::total(&report, "kernel_flows_listed"), 0, "{report}");
        assert!(fast_bytes >= 2 * BIG, "{report}");
    }
    assert_eq!(lab::total(&report, "kernel_map_full"), 0, "{report}");
    let access = std::fs::read_to_string(&nginx.access_log)?;
    assert_eq!(access.matches("GET /big.bin").count(), 2, "{access}");
    Ok(())
}

#[test]
fn kernel_fast_path_af_packet() -> anyhow::Result<()> {
    kernel_fast_path(LabMode::AfPacket, "auto", "kfp")
}

#[test]
fn kernel_fast_path_af_packet_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || {
        kernel_fast_path(LabMode::AfPacket, "auto", "kfpo")
    })
}

#[test]
fn kernel_fast_path_off_af_packet() -> anyhow::Result<()> {
    kernel_fast_path(LabMode::AfPacket, "off", "kfpx")
}

#[test]
fn kernel_fast_path_off_af_packet_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || {
        kernel_fast_path(LabMode::AfPacket, "off", "kfpxo")
    })
}

#[test]
fn kernel_fast_path_auto_in_tun_mode_is_the_user_space_one() -> anyhow::Result<()> {
    kernel_fast_path(LabMode::Tun, "auto", "kfpt")
}

#[test]
fn kernel_fast_path_auto_in_tun_mode_is_the_user_space_one_offloads_on() -> anyhow::Result<()> {
    lab::with_offloads(lab::Offloads::On, || {
        kernel_fast_path(LabMode::Tun, "auto", "kfpto")
    })
}
