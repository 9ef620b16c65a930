//! A long run (issue 11, DESIGN.md §12): many inspected connections through
//! one appliance, its RSS and open descriptors sampled along the way.
//!
//! CI runs 50,000 connections (a full handshake each, `GET /index.html`,
//! every one verified against the policy CA) and checks what an operator
//! watching a long-lived appliance would: every connection succeeds and is
//! inspected, and after the warm-up RSS grows by less than 5 % and the
//! descriptor count not at all. `LAB_LONG_RUN_CONNS=1000000` makes it the
//! long bench; the curve is printed either way (`--nocapture`).

mod lab;

use std::net::Ipv4Addr;

use lab::{LabMode, TestLab};

const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const WARM_UP: u64 = 5_000;
const STEP: u64 = 5_000;

#[test]
fn rss_and_descriptors_stay_flat_over_a_long_run() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let total: u64 = std::env::var("LAB_LONG_RUN_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let t = TestLab::build("long", LabMode::AfPacket, &[IN_SCOPE], &[SERVER])?;
    let _nginx = t.start_nginx()?;
    let (config, _log) = t.write_config(IN_SCOPE)?;
    let app = t.start_appliance(&config, IN_SCOPE, SERVER)?;
    let ca = t.pki.policy_ca_cert.display().to_string();
    let connect = format!("{SERVER}:443");

    let mut done = 0u64;
    let mut curve = Vec::new();
    let mut warm = None;
    while done < total {
        let n = if done == 0 {
            WARM_UP.min(total)
        } else {
            STEP.min(total - done)
        };
        let r: serde_json::Value = t.helper(
            t.lab.client_ns(),
            &[
                "fetch-loop",
                "--source",
                &IN_SCOPE.to_string(),
                "--connect",
                &connect,
                "--sni",
                lab::SERVER_NAME,
                "--ca",
                &ca,
                "--path",
                "/index.html",
                "--count",
                &n.to_string(),
                "--concurrency",
                "4",
            ],
        )?;
        assert_eq!(
            r["failed"],
            0,
            "after {done} connections: {r}\n{}",
            app.stderr()
        );
        assert_eq!(r["ok"], n, "{r}");
        let issuers = r["issuers"].as_object().cloned().unwrap_or_default();
        assert!(
            issuers.len() == 1 && issuers.keys().all(|k| k.contains(lab::pki::POLICY_CA_CN)),
            "every connection is inspected: {issuers:?}"
        );
        done += n;
        let point = (
            done,
            lab::rss_kib(app.pid)?,
            lab::open_fds(app.pid),
            r["elapsed_ms"].clone(),
        );
        eprintln!(
            "long run: {} connections, RSS {} KiB, {} fds, last {n} in {} ms",
            point.0, point.1, point.2, point.3
        );
        if warm.is_none() {
            warm = Some((point.1, point.2));
        }
        curve.push(point);
    }
    let report = t.stop_appliance(&app)?;
    let (warm_rss, warm_fds) = warm.unwrap_or_default();
    let (_, last_rss, last_fds, _) = curve.last().cloned().unwrap_or_default();
    let ended = lab::total(&report, "intercepted_ended");
    // The start-up probe and the warm-up are all the appliance saw besides.
    assert!(
        ended >= total,
        "{ended} intercepted flows ended of {total}: {report}"
    );
    assert!(
        last_rss * 100 <= warm_rss * 105,
        "RSS grew from {warm_rss} KiB after the warm-up to {last_rss} KiB: {curve:?}"
    );
    assert!(
        last_fds <= warm_fds,
        "descriptors grew from {warm_fds} to {last_fds}: {curve:?}"
    );
    Ok(())
}
