//! Logging never blocks a worker (issue 11, DESIGN.md §7/§12): the traffic
//! log lives on a tiny filesystem that fills up during the run.
//!
//! What a user would check: once the disk is full, connections keep being
//! inspected at full speed (40 more, and a 50 MB download byte-identical),
//! the appliance stays up, and at shutdown it reports how many records the
//! file output could not write (its write errors).

mod lab;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab::{LabMode, TestLab};

const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// A tmpfs mounted for the test; unmounted on drop, also when it fails.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: PathBuf, bytes: usize) -> anyhow::Result<SmallFs> {
        std::fs::create_dir_all(&dir)?;
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tlsinspect-test")
            .arg(&dir)
            .status()?;
        anyhow::ensure!(st.success(), "mount tmpfs on {}: {st}", dir.display());
        Ok(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_log_disk_never_stalls_forwarding() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build("fd", LabMode::AfPacket, &[IN_SCOPE], &[SERVER])?;
    let nginx = t.start_nginx()?;
    let fs = SmallFs::mount(t.path("logfs"), 32 * 1024)?;
    let log = fs.0.join("traffic.jsonl");
    let (config, _) = t.write_config(IN_SCOPE)?;
    let text = std::fs::read_to_string(&config)?;
    let text = text.replace(
        &t.path("traffic.jsonl").display().to_string(),
        &log.display().to_string(),
    );
    std::fs::write(&config, text)?;
    let app = t.start_appliance(&config, IN_SCOPE, SERVER)?;
    let ca = &t.pki.policy_ca_cert;

    // Enough connections to fill 32 KiB of records several times over.
    let started = Instant::now();
    for i in 0..40 {
        let c = t.curl(
            IN_SCOPE,
            SERVER,
            "/index.html",
            ca,
            &t.path("i.html"),
            i % 2 == 0,
        )?;
        assert_eq!(c.http_code, 200, "request {i}: {c:?}\n{}", app.stderr());
        assert!(c.issuer.contains(lab::pki::POLICY_CA_CN), "{c:?}");
    }
    let used = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(
        used > 16 * 1024,
        "the log did not fill the disk: {used} bytes"
    );
    // The disk is full now; forwarding goes on.
    let out = t.path("big.bin");
    let c = t.curl(IN_SCOPE, SERVER, "/big.bin", ca, &out, false)?;
    assert_eq!(c.http_code, 200, "{c:?}");
    assert_eq!(lab::sha256_file(&out)?, nginx.big_sha256);
    for i in 0..10 {
        let c = t.curl(
            IN_SCOPE,
            SERVER,
            "/index.html",
            ca,
            &t.path("j.html"),
            false,
        )?;
        assert_eq!(c.http_code, 200, "request {i} after the disk filled: {c:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "requests slowed down: {:?}",
        started.elapsed()
    );

    let report = t.stop_appliance(&app)?;
    let file_line = report
        .lines()
        .find(|l| l.starts_with("traffic-log output file"))
        .unwrap_or_else(|| panic!("no file output line in the report: {report}"));
    // Records the full disk refused are reported as write errors.
    let lost: u64 = file_line
        .split(", ")
        .find_map(|p| p.strip_suffix(" write errors"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(lost > 0, "the full disk's losses are reported: {report}");
    drop(fs);
    Ok(())
}
