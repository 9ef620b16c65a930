//! The fleet lab (DESIGN.md §13, issue 15): the test lab's gateway load
//! balancer with two GENEVE reflectors standing in for appliances, so a
//! failing fleet test of the appliance points at the appliance.
//!
//! What a user of the lab would check, with the offloads off and on: a
//! 50 MB download through the fleet arrives byte-identical; 40 concurrent
//! connections are spread over both appliances, every packet came back with
//! the options it was sent with, from the appliance it was sent to; once an
//! appliance's health check fails, new connections go to the other one
//! while a download already running through the draining one completes
//! byte-identical; malformed GENEVE sent to the balancer is counted and
//! dropped.

mod lab;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use lab::{LbStats, Offloads, TestLab};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn assert_clean(s: &LbStats, when: &str) {
    let t = &s.totals;
    assert_eq!(t.option_mismatches, 0, "{when}: option mismatches: {s:#?}");
    assert_eq!(t.vni_mismatches, 0, "{when}: VNI mismatches: {s:#?}");
    assert_eq!(
        t.wrong_source_returns, 0,
        "{when}: wrong-source returns: {s:#?}"
    );
    assert_eq!(t.malformed_returns, 0, "{when}: malformed returns: {s:#?}");
}

fn fleet_lb(offloads: Offloads, tag: &str) -> anyhow::Result<()> {
    let t = TestLab::build(tag, lab::LabMode::Geneve, &[CLIENT], &[SERVER])?;
    let fleet = t.fleet()?.clone();
    assert_eq!(fleet.appliances.len(), 2);
    let nginx = t.start_nginx()?;
    let reflectors = (0..2)
        .map(|i| t.start_reflector(i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Nothing but the load balancer moves packets across its namespace:
    // without it no ping crosses and the gateway does not answer.
    for to in [SERVER, tlsinspect::demo::lab::CLIENT_GATEWAY] {
        let p = t.helper::<lab::PingResult>(
            t.lab.client_ns(),
            &[
                "ping",
                "--source",
                &CLIENT.to_string(),
                "--to",
                &to.to_string(),
                "--count",
                "1",
                "--timeout-ms",
                "300",
            ],
        )?;
        assert_eq!(p.received, 0, "ping {to} without the load balancer: {p:?}");
    }
    let lb = t.start_lb(&[])?;
    let s = t.wait_health(&lb, &[true, true])?;
    assert!(
        s.appliances.iter().all(|a| a.transitions == 1),
        "each appliance became healthy once: {s:#?}"
    );
    // With it, a ping crosses (a 3-tuple flow); the gateway still does not
    // answer, and the balancer does not carry what is addressed to it.
    let p = t.ping(CLIENT, SERVER, 2)?;
    assert_eq!(p.received, 2, "ping through the fleet: {p:?}");
    let p = t.ping(CLIENT, tlsinspect::demo::lab::CLIENT_GATEWAY, 1)?;
    assert_eq!(p.received, 0, "the gateway answered: {p:?}");
    t.wait_lb(&lb, Duration::from_secs(3), |s| s.totals.not_routed >= 1)?;

    // A 50 MB download, byte-identical, carried whole by its appliance.
    let out = t.path("big.bin");
    let c = t.curl(CLIENT, SERVER, "/big.bin", &t.pki.origin_root, &out, false)?;
    assert_eq!(c.http_code, 200, "{c:?}");
    assert_eq!(
        lab::sha256_file(&out)?,
        nginx.big_sha256,
        "50 MB through the fleet"
    );
    std::fs::remove_file(&out)?;
    // At most 1500-byte inner packets: 50 MB is at least 35,000 of them,
    // all returned (the stats file lags by up to 500 ms).
    let s = t.wait_lb(&lb, Duration::from_secs(3), |s| {
        lab::lb_flow(s, CLIENT, c.local_port, SERVER)
            .is_some_and(|f| f.returned_to_client >= 35_000)
    })?;
    let f = lab::lb_flow(&s, CLIENT, c.local_port, SERVER).expect("waited for above");
    assert!(f.to_client >= f.returned_to_client, "download flow {f:?}");
    assert!(f.returned_to_server > 0, "download flow {f:?}");
    // The offload setting is the one named: super-frames reach the
    // balancer's taps only with the offloads on.
    match offloads {
        Offloads::Off => assert_eq!(s.totals.super_frames, 0, "{:?}", s.totals),
        Offloads::On => assert!(s.totals.super_frames > 0, "{:?}", s.totals),
    }
    assert_clean(&s, "after the download");

    // 40 concurrent connections land on both appliances.
    let ports = t.concurrent_fetches(CLIENT, SERVER, &t.pki.origin_root, 40, "spread")?;
    // Every curl is done, but the stats file is written every 500 ms: wait
    // for a snapshot with both directions of every flow returned.
    let s = t.wait_lb(&lb, Duration::from_secs(3), |s| {
        ports.iter().all(|&p| {
            lab::lb_flow(s, CLIENT, p, SERVER)
                .is_some_and(|f| f.returned_to_client > 0 && f.returned_to_server > 0)
        })
    })?;
    let mut per_appliance = BTreeMap::new();
    for &p in &ports {
        let f = lab::lb_flow(&s, CLIENT, p, SERVER).expect("waited for above");
        assert!(
            f.returned_to_client > 0 && f.returned_to_server > 0,
            "flow both ways {f:?}"
        );
        *per_appliance.entry(f.appliance).or_insert(0u32) += 1;
    }
    assert_eq!(
        per_appliance.len(),
        2,
        "40 connections over both appliances: {per_appliance:?}"
    );
    for a in &s.appliances {
        assert!(
            a.flows_assigned >= 1 && a.packets_received > 0,
            "appliance {a:?}"
        );
    }
    assert_clean(&s, "after 40 connections");

    // A slow download, then its appliance drains.
    let slow_out = t.path("slow.bin");
    let slow_w = slow_out.with_extension("w");
    let slow = t.slow_download(CLIENT, SERVER, &t.pki.origin_root, "5M", &slow_out)?;
    let known: Vec<u16> = ports.iter().copied().chain([c.local_port]).collect();
    let slow_flow = t.wait_download(&lb, SERVER, &known)?;
    let slow_port = lab::lb_client_port(&slow_flow);
    let draining = slow_flow.appliance;
    let other = 1 - draining;
    std::fs::write(&reflectors[draining].drain_file, "draining\n")?;
    let mut healthy = [true, true];
    healthy[draining] = false;
    let s = t.wait_health(&lb, &healthy)?;
    let assigned_before = s.appliances[draining].flows_assigned;
    let slow_at_drain = lab::lb_flow(&s, CLIENT, slow_port, SERVER)
        .expect("the slow flow is in the table")
        .returned_to_client;

    let new_ports = t.concurrent_fetches(CLIENT, SERVER, &t.pki.origin_root, 20, "drained")?;
    assert!(
        t.lab.is_running(slow),
        "the slow download was still running while new connections were made"
    );
    let s = t.wait_lb(&lb, Duration::from_secs(3), |s| {
        new_ports
            .iter()
            .all(|&p| lab::lb_flow(s, CLIENT, p, SERVER).is_some())
    })?;
    for &p in &new_ports {
        let f = lab::lb_flow(&s, CLIENT, p, SERVER).expect("waited for above");
        assert_eq!(
            f.appliance, other,
            "new connection from port {p} went to the healthy appliance: {f:?}"
        );
    }
    assert_eq!(
        s.appliances[draining].flows_assigned, assigned_before,
        "the draining appliance got no new flows: {s:#?}"
    );
    assert!(!s.appliances[draining].healthy);

    let status = t.lab.wait(slow, Duration::from_secs(60))?;
    assert!(status.success(), "slow curl exited with {status}");
    let w = std::fs::read_to_string(&slow_w)?;
    assert!(w.starts_with("200 "), "slow curl -w {w:?}");
    assert_eq!(
        lab::sha256_file(&slow_out)?,
        nginx.big_sha256,
        "the download through the draining appliance"
    );
    let s = lb.stats()?;
    let f = lab::lb_flow(&s, CLIENT, slow_port, SERVER).expect("the slow flow is in the table");
    assert_eq!(
        f.appliance, draining,
        "the slow flow stayed on its appliance"
    );
    assert!(
        f.returned_to_client > slow_at_drain + 10_000,
        "the draining appliance kept carrying it ({slow_at_drain} then {f:?})"
    );
    assert_clean(&s, "after the drain");

    // Healthy again after one passing check.
    std::fs::remove_file(&reflectors[draining].drain_file)?;
    t.wait_health(&lb, &[true, true])?;

    // Malformed GENEVE to the balancer: each counted and dropped, none answered.
    let from = SocketAddr::from((fleet.appliances[0].addr, 0));
    let to = SocketAddr::from((tlsinspect::demo::lab::FLEET_LB_ADDR, 6081));
    let before = lb.stats()?.totals;
    let m = t.geneve_malformed(
        &fleet.appliances[0].ns,
        from,
        to,
        Duration::from_millis(300),
    )?;
    assert_eq!(m.sent.len(), 6, "{m:?}");
    assert_eq!(m.replies, 0, "{m:?}");
    let s = t.wait_lb(&lb, Duration::from_secs(3), |s| {
        s.totals.malformed_returns >= before.malformed_returns + 5
    })?;
    // Five do not parse; the one with an unknown critical option parses but
    // carries a flow the balancer never sent.
    assert_eq!(s.totals.malformed_returns, before.malformed_returns + 5);
    assert_eq!(
        s.totals.unknown_flow_returns,
        before.unknown_flow_returns + 1
    );

    let s = t.stop_lb(&lb)?;
    assert_eq!(s.totals.option_mismatches, 0, "{s:#?}");
    assert_eq!(s.totals.wrong_source_returns, 0, "{s:#?}");
    Ok(())
}

#[test]
fn fleet_lb_offloads_off() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    lab::with_offloads(Offloads::Off, || fleet_lb(Offloads::Off, "fleet"))
}

#[test]
fn fleet_lb_offloads_on() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    lab::with_offloads(Offloads::On, || fleet_lb(Offloads::On, "fleeto"))
}
