//! End-to-end tests of [`Connection`] in memory: a smoltcp client host
//! with a real rustls client, a smoltcp server host with a real rustls
//! server, the flow between them exchanging IP packets, virtual time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::api::FlowAction;
use crate::hostglob::HostGlob;
use crate::testkit::*;
use crate::tls::decision::{PassOrBlock, PassOrInspect, TlsPolicy};

const LIMIT: Duration = Duration::from_secs(60);

fn tls_client(trust_policy_ca: bool, tls12_only: bool) -> ClientApp {
    ClientApp::Tls {
        trust_policy_ca,
        tls12_only,
        client_auth: false,
    }
}

fn tls_server() -> ServerApp {
    ServerApp::Tls {
        tls12_only: false,
        require_client_auth: false,
    }
}

fn inspected(tls12: bool, size: usize) {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let up = pattern(size, 1);
    let down = pattern(size, 2);
    let mut net = lab.net(
        ctx,
        tls_client(true, tls12),
        tls_server(),
        up.clone(),
        down.clone(),
    );
    let rec = net.run_and_finish(LIMIT);
    let c = net.client_app();
    assert!(c.tls_err.is_none(), "client TLS error: {:?}", c.tls_err);
    let chain = net.client.peer_chain(0);
    assert_eq!(
        issuer_cn(&chain[0]),
        "Test Policy CA",
        "client saw our chain"
    );
    assert!(
        c.got == down,
        "download byte-identical ({} of {})",
        c.got.len(),
        down.len()
    );
    let s = net.server_app();
    assert!(
        s.got == up,
        "upload byte-identical ({} of {})",
        s.got.len(),
        up.len()
    );
    assert!(net.flow.is_finished(), "both legs closed");

    assert_eq!(rec.action, FlowAction::Inspected);
    assert_eq!(rec.reason.as_str(), "inspected");
    assert_eq!(&*rec.meta.policy_id, "pol-1");
    assert_eq!(&*rec.meta.scope_id, "scope-a");
    assert_eq!(rec.meta.src, CLIENT.parse::<SocketAddr>().unwrap());
    assert_eq!(rec.meta.dest, SERVER.parse::<SocketAddr>().unwrap());
    assert_eq!(rec.meta.sni.as_deref(), Some(SNI));
    let tls = rec.tls.expect("tls info");
    let v = if tls12 { "TLS 1.2" } else { "TLS 1.3" };
    assert_eq!(tls.version.as_deref(), Some(v));
    assert_eq!(tls.upstream_version.as_deref(), Some(v));
    assert_eq!(tls.alpn.as_deref(), Some("http/1.1"));
    assert!(tls.cipher.unwrap().contains("AES_128_GCM"));
    let up_cert = tls.upstream_cert.expect("upstream cert");
    assert!(up_cert.verified, "{:?}", up_cert.error);
    assert!(up_cert.issuer.contains("Origin Root CA"));
    assert!(rec.bytes_toserver > size as u64 && rec.bytes_toclient > size as u64);
    assert!(rec.inspection.is_some());
    let seen = lab.seen.lock().unwrap();
    assert_eq!((seen.to_server, seen.to_client), (size as u64, size as u64));
    assert_eq!(seen.meta.as_ref().unwrap().scope_id.as_ref(), "scope-a");
}

#[test]
fn tls13_inspected_end_to_end_1mb() {
    inspected(false, 1 << 20);
}

#[test]
fn tls12_inspected_end_to_end() {
    inspected(true, 200_000);
}

/// The bytes the server received and those the client sent match, and the
/// client saw the origin's own chain.
fn assert_passed_unchanged(net: &Net, up: &[u8], down: &[u8]) {
    let c = net.client_app();
    assert!(c.tls_err.is_none(), "client TLS error: {:?}", c.tls_err);
    let chain = net.client.peer_chain(0);
    assert_eq!(
        issuer_cn(&chain[0]),
        "Origin Root CA",
        "client saw the origin"
    );
    assert!(c.got == down);
    assert!(net.server_app().got == up);
}

#[test]
fn tls13_passthrough_relays_the_origin_unchanged() {
    let lab = Lab::new();
    let policy = TlsPolicy {
        tls13: PassOrInspect::Pass,
        ..inspect_all()
    };
    let ctx = lab.ctx(policy, lab.pass_inspector());
    let (up, down) = (pattern(100_000, 3), pattern(300_000, 4));
    let mut net = lab.net(
        ctx,
        tls_client(false, false),
        tls_server(),
        up.clone(),
        down.clone(),
    );
    let rec = net.run_and_finish(LIMIT);
    assert_passed_unchanged(&net, &up, &down);
    assert_eq!(rec.action, FlowAction::Pass);
    assert_eq!(rec.reason.as_str(), "tls13");
    assert_eq!(rec.tls.unwrap().sni.as_deref(), Some(SNI));
    assert_eq!(lab.seen.lock().unwrap().flows, 0, "nothing inspected");
    assert!(rec.bytes_toserver > 100_000 && rec.bytes_toclient > 300_000);
}

#[test]
fn excluded_sni_passes() {
    let lab = Lab::new();
    let policy = TlsPolicy {
        exclude_sni: vec![HostGlob::new("*.test").unwrap()],
        ..inspect_all()
    };
    let ctx = lab.ctx(policy, lab.pass_inspector());
    let (up, down) = (pattern(1000, 5), pattern(5000, 6));
    let mut net = lab.net(
        ctx,
        tls_client(false, false),
        tls_server(),
        up.clone(),
        down.clone(),
    );
    let rec = net.run_and_finish(LIMIT);
    assert_passed_unchanged(&net, &up, &down);
    assert_eq!(
        (rec.action, rec.reason.as_str()),
        (FlowAction::Pass, "excluded")
    );
}

#[test]
fn non_tls_passes_byte_identical() {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let up = b"GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n".to_vec();
    let down = pattern(70_000, 7);
    let mut net = lab.net(
        ctx,
        ClientApp::Raw,
        ServerApp::Raw,
        up.clone(),
        down.clone(),
    );
    let rec = net.run_and_finish(LIMIT);
    assert_eq!(net.server_app().got, up);
    assert!(net.client_app().got == down);
    assert_eq!(
        (rec.action, rec.reason.as_str()),
        (FlowAction::Pass, "non_tls")
    );
    assert!(rec.tls.is_none());
    assert_eq!(rec.bytes_toserver, up.len() as u64);
    assert_eq!(rec.bytes_toclient, down.len() as u64);
}

#[test]
fn non_tls_blocked_gets_a_reset() {
    let lab = Lab::new();
    let policy = TlsPolicy {
        non_tls: PassOrBlock::Block,
        ..inspect_all()
    };
    let ctx = lab.ctx(policy, lab.pass_inspector());
    let up = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    let mut net = lab.net(ctx, ClientApp::Raw, ServerApp::Raw, up, b"hello".to_vec());
    let rec = net.run_and_finish(LIMIT);
    assert!(net.client_app().reset, "client was reset");
    assert!(net.client_app().got.is_empty());
    assert!(
        net.server.apps.iter().all(|a| a.got.is_empty()),
        "server got nothing"
    );
    assert_eq!(
        (rec.action, rec.reason.as_str()),
        (FlowAction::Blocked, "non_tls")
    );
    assert!(net.flow.is_finished());
}

#[test]
fn server_speaking_first_is_non_tls() {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let banner = b"220 smtp.origin.test ESMTP\r\n".to_vec();
    let mut net = lab.net(
        ctx,
        ClientApp::Raw,
        ServerApp::Raw,
        Vec::new(),
        banner.clone(),
    );
    // The client says nothing until it has the banner; expect 0 from it.
    net.server.apps[0].expect = 0;
    net.server.apps[1].expect = 0;
    let rec = net.run_and_finish(LIMIT);
    assert_eq!(net.client_app().got, banner);
    assert_eq!(rec.reason.as_str(), "non_tls");
}

#[test]
fn ech_hello_passes_unchanged() {
    let lab = Lab::new();
    let policy = TlsPolicy {
        ech: PassOrInspect::Pass,
        ..inspect_all()
    };
    let ctx = lab.ctx(policy, lab.pass_inspector());
    let hello = include_bytes!("../tls/testdata/chromium.bin").to_vec();
    let mut net = lab.net(
        ctx,
        ClientApp::Raw,
        ServerApp::Raw,
        hello.clone(),
        Vec::new(),
    );
    let rec = net.run_and_finish(LIMIT);
    assert_eq!(net.server_app().got, hello, "hello relayed byte for byte");
    assert_eq!((rec.action, rec.reason.as_str()), (FlowAction::Pass, "ech"));
    let tls = rec.tls.unwrap();
    assert!(tls.ja4.is_some());
    assert!(tls.sni.is_some());
}

#[test]
fn tls_block_sends_an_alert() {
    let lab = Lab::new();
    let policy = TlsPolicy {
        legacy_tls: PassOrBlock::Block,
        ..inspect_all()
    };
    let ctx = lab.ctx(policy, lab.pass_inspector());
    // A TLS 1.1-only ClientHello: the curl TLS 1.2 capture with its version lowered.
    let mut hello = include_bytes!("../tls/testdata/curl-tls12.bin").to_vec();
    let h = crate::tls::client_hello::parse(&hello).unwrap().unwrap();
    assert!(
        h.supported_versions.is_empty(),
        "capture has no supported_versions"
    );
    hello[9] = 0x03;
    hello[10] = 0x02;
    let mut net = lab.net(ctx, ClientApp::Raw, ServerApp::Raw, hello, Vec::new());
    let rec = net.run_and_finish(LIMIT);
    assert_eq!(
        (rec.action, rec.reason.as_str()),
        (FlowAction::Blocked, "legacy_tls"),
        "{rec:?}"
    );
    assert_eq!(
        net.client_app().got,
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49]
    );
    assert!(net.server.apps.iter().all(|a| a.got.is_empty()));
    assert_eq!(
        (rec.action, rec.reason.as_str()),
        (FlowAction::Blocked, "legacy_tls")
    );
}

#[test]
fn server_rst_refuses_the_client_at_once() {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let mut net = lab.net(
        ctx,
        tls_client(true, false),
        ServerApp::Closed,
        vec![1],
        vec![],
    );
    let started = net.now;
    let rec = net.run_and_finish(LIMIT);
    assert!(net.client_app().reset, "client got an RST");
    assert!(
        net.now - started < Duration::from_secs(1),
        "refused quickly"
    );
    assert_eq!(rec.reason.as_str(), "server_refused");
    assert!(net.flow.is_finished());
}

#[test]
fn mtls_server_is_bypassed_and_replayed_in_the_same_connection() {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let client = ClientApp::Tls {
        trust_policy_ca: true,
        tls12_only: false,
        client_auth: true,
    };
    let server = ServerApp::Tls {
        tls12_only: false,
        require_client_auth: true,
    };
    let (up, down) = (pattern(50_000, 8), pattern(80_000, 9));
    let mut net = lab.net(ctx.clone(), client, server, up.clone(), down.clone());
    let rec = net.run_and_finish(LIMIT);
    assert_passed_unchanged(&net, &up, &down);
    assert_eq!(
        (rec.action, rec.reason.as_str()),
        (FlowAction::Pass, "client_auth")
    );
    let dest: SocketAddr = SERVER.parse().unwrap();
    assert!(lab.bypass.contains(Some(SNI), dest, Instant::now()));
    // The first server connection was reset, the second carried the flow.
    assert!(net.server.apps.iter().filter(|a| a.got == up).count() == 1);

    // The next connection passes from the cache.
    let mut net = lab.net(
        ctx,
        ClientApp::Tls {
            trust_policy_ca: true,
            tls12_only: false,
            client_auth: true,
        },
        ServerApp::Tls {
            tls12_only: false,
            require_client_auth: true,
        },
        up.clone(),
        down.clone(),
    );
    let rec = net.run_and_finish(LIMIT);
    assert_passed_unchanged(&net, &up, &down);
    assert_eq!(
        (rec.action, rec.reason.as_str()),
        (FlowAction::Pass, "bypass_cache")
    );
}

#[test]
fn client_rejecting_our_certificate_counts_toward_pinning() {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let mut net = lab.net(
        ctx,
        tls_client(false, false),
        tls_server(),
        vec![1; 10],
        vec![2; 10],
    );
    let rec = net.run_and_finish(LIMIT);
    assert!(
        net.client_app().tls_err.is_some(),
        "client refused our chain"
    );
    assert_eq!(rec.reason.as_str(), "pinning");
    assert!(net.flow.is_finished());
    let dest: SocketAddr = SERVER.parse().unwrap();
    // pinning_clients = 2 in the lab: one client is not enough.
    assert!(!lab.bypass.contains(Some(SNI), dest, Instant::now()));
    assert_eq!(lab.bypass.stats().rejections, 1);
}

#[test]
fn blocking_inspector_answers_403_and_logs_the_alert() {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), std::sync::Arc::new(BlockInspector));
    let req = b"GET /evil HTTP/1.1\r\nHost: origin.test\r\n\r\n".to_vec();
    let mut net = lab.net(
        ctx,
        tls_client(true, false),
        tls_server(),
        req,
        vec![0; 100],
    );
    let rec = net.run_and_finish(LIMIT);
    assert_eq!(net.client_app().got, BLOCK_PAGE);
    assert!(
        net.server.apps.iter().all(|a| a.got.is_empty()),
        "nothing reached the server"
    );
    assert_eq!(rec.action, FlowAction::Inspected);
    let alerts = lab.log.alerts.lock().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].0, rec.meta.flow_id);
    assert_eq!(alerts[0].1.action, "deny");
    assert_eq!(rec.inspection.unwrap().alerts.len(), 1);
    assert!(net.flow.is_finished());
}

#[test]
fn unknown_policy_is_refused_at_start() {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let scope = crate::classify::ScopeMatch {
        policy_id: "nope".into(),
        scope_id: "s".into(),
    };
    let r = super::Connection::new(
        ctx,
        &scope,
        &[0u8; 40],
        false,
        1,
        Instant::now(),
        std::time::SystemTime::now(),
    );
    assert!(matches!(r, Err(super::StartError::UnknownPolicy(_))));
}

#[test]
fn a_flow_keeps_the_policy_it_was_born_with() {
    let lab = Lab::new();
    let passing = TlsPolicy {
        tls13: PassOrInspect::Pass,
        ..inspect_all()
    };
    let old_ctx = lab.ctx(passing, lab.pass_inspector());
    let mut old = lab.net(
        old_ctx,
        tls_client(false, false),
        tls_server(),
        vec![1; 10],
        vec![2; 10],
    );
    // A reload: the worker now starts new flows with another context; the
    // flow above (born, its hello not even sent yet) keeps its own.
    let new_ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let mut new = lab.net(
        new_ctx,
        tls_client(true, false),
        tls_server(),
        vec![1; 10],
        vec![2; 10],
    );
    let old_rec = old.run_and_finish(LIMIT);
    let new_rec = new.run_and_finish(LIMIT);
    assert_eq!(
        (old_rec.action, old_rec.reason.as_str()),
        (FlowAction::Pass, "tls13")
    );
    assert_eq!(issuer_cn(&old.client.peer_chain(0)[0]), "Origin Root CA");
    assert_eq!(
        (new_rec.action, new_rec.reason.as_str()),
        (FlowAction::Inspected, "inspected")
    );
    assert_ne!(old_rec.meta.flow_id, new_rec.meta.flow_id);
}

#[test]
fn a_silent_client_is_judged_non_tls_after_the_hello_timeout() {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let mut net = lab.net(ctx, ClientApp::Raw, ServerApp::Raw, Vec::new(), Vec::new());
    // Both sides wait for a byte that never comes.
    net.client.apps[0].expect = 1;
    for a in &mut net.server.apps {
        a.expect = 1;
    }
    net.run(Duration::from_secs(5));
    assert!(net.flow.decision().is_none(), "still peeking at 5 s");
    net.run(Duration::from_secs(10));
    let d = net
        .flow
        .decision()
        .expect("decided after the hello timeout");
    assert_eq!(d.reason.as_str(), "non_tls");
    let rec = net.flow.finish(net.now);
    assert_eq!(
        (rec.action, rec.reason.as_str()),
        (FlowAction::Pass, "non_tls")
    );
    assert!(rec.duration_ms >= 10_000);
}

#[test]
fn an_untrusted_upstream_fails_at_the_client_as_without_us() {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());
    let mut net = lab.net(
        ctx,
        tls_client(true, false),
        ServerApp::Untrusted,
        vec![1; 10],
        vec![2; 10],
    );
    let rec = net.run_and_finish(LIMIT);
    // The client trusts our policy CA, yet refuses: the chain is the untrusted issuer's.
    let err = net.client_app().tls_err.clone().expect("client refused");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(net.server.apps.iter().all(|a| a.got.is_empty()));
    assert_eq!(rec.reason.as_str(), "invalid_certificate");
    let up = rec.tls.unwrap().upstream_cert.unwrap();
    assert!(!up.verified);
    assert!(up.issuer.contains("Rogue CA"));
    assert!(net.flow.is_finished());
}
