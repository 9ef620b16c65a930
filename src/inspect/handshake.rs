//! The TLS rules, run on the handshake of every in-scope connection.
//!
//! The data plane calls [`Inspector::on_tls`](tlsinspect_pipeline::api::Inspector::on_tls)
//! twice per TLS connection: with the ClientHello when it takes the §4
//! decision (for passed and blocked flows too), and with the upstream chain
//! once the server leg of an inspected flow has it. The first call runs the
//! `tls` rules to the server that look only at the hello (`tls.sni`,
//! `ja4.hash`, `tls.version`, raw hello bytes); the second the rules that
//! need the certificate or are to the client, with the hello's buffers
//! available too, so a rule fires at most once per connection.
//!
//! These verdicts are logged, never enforced: the decision is the data
//! plane's, and a `drop` TLS rule is recorded as an alert.

use tlsinspect_pipeline::api::{Alert, FlowMeta, TlsHandshake};

use super::flow::verdicts;
use super::ips::tls::CertBuffers;
use super::ips::{Buffer, Buffers, EvalCtx, FlowBits, Mode, Phase, Proto, Scratch};
use super::Shared;

pub(crate) fn on_tls(shared: &Shared, meta: &FlowMeta, hs: &TlsHandshake<'_>) -> Vec<Alert> {
    let ips = &shared.ips;
    let phase = if hs.upstream_chain.is_some() {
        Phase::TlsCert
    } else {
        Phase::TlsHello
    };
    if ips.phase_empty(phase) {
        return Vec::new();
    }
    let mut bufs = Buffers::default();
    if let Some(sni) = &hs.hello.sni {
        bufs.set(Buffer::Sni, sni.as_bytes());
    }
    if !hs.hello.ja4.is_empty() {
        bufs.set(Buffer::Ja4, hs.hello.ja4.as_bytes());
    }
    if !hs.hello_bytes.is_empty() {
        bufs.set(Buffer::Raw, hs.hello_bytes);
    }
    let chain: Vec<&[u8]> = hs
        .upstream_chain
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref())
        .collect();
    let leaf = chain.first().map(|d| CertBuffers::from_der(d));
    if let Some(l) = &leaf {
        if !l.subject.is_empty() {
            bufs.set(Buffer::CertSubject, l.subject.as_bytes());
            bufs.set(Buffer::CertIssuer, l.issuer.as_bytes());
            bufs.set(Buffer::CertSerial, l.serial.as_bytes());
        }
        bufs.set(Buffer::CertFingerprint, l.fingerprint.as_bytes());
    }
    bufs.set_certs(&chain);
    let client = (meta.src.ip(), meta.src.port());
    let server = (meta.dest.ip(), meta.dest.port());
    let to_server = phase == Phase::TlsHello;
    let active = |id: u32| {
        let r = ips.rule(id);
        r.proto == Proto::Tls
            && if to_server {
                r.applies(client, server, true)
            } else {
                // Certificate rules are written either way round: from the
                // server (`$EXTERNAL_NET any -> $HOME_NET any`), or as a
                // hello rule that also wants the certificate.
                r.applies(server, client, false)
                    || (!r.flow.to_client && r.applies(client, server, true))
            }
    };
    let (src, dst) = if to_server {
        (client.0, server.0)
    } else {
        (server.0, client.0)
    };
    let mut bits = FlowBits::default();
    let mut ctx = EvalCtx {
        bits: &mut bits,
        src,
        dst,
        tls_version: Some(hs.hello.highest_version()),
    };
    let mut hits = Vec::new();
    ips.eval(
        phase,
        &bufs,
        &active,
        &mut Scratch::default(),
        &mut ctx,
        &mut hits,
    );
    let mut out = Vec::new();
    if !hits.is_empty() {
        // Handshake verdicts are never enforced here: log them as alerts.
        verdicts(ips, Mode::Detect, &hits, src, dst, None, &mut out);
    }
    out
}
