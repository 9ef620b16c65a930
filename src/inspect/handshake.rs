//! The TLS rules, run on the handshake of every in-scope connection.
//!
//! The data plane calls [`Inspector::on_tls`](tlsinspect_pipeline::api::Inspector::on_tls)
//! twice per TLS connection: with the ClientHello when it takes the §4
//! decision (for passed and blocked flows too), and with the upstream chain
//! once the server leg of an inspected flow has it. The first call runs the
//! `tls` rules to the server that look only at the hello (`tls.sni`,
//! `ja4.hash`, `ja3.hash`, `ja3.string`, `tls.version`, raw hello bytes,
//! `ssl_state:client_hello`); the second the rules that
//! need the certificate, are to the client or hold at `ssl_state:server_hello`
//! (the certificate comes in the server's hello flight), with the hello's
//! buffers available too, so a rule fires at most once per connection.
//!
//! These verdicts are logged, never enforced: the decision is the data
//! plane's, and a `drop` TLS rule is recorded as an alert.

use tlsinspect_pipeline::api::{Alert, FlowMeta, TlsHandshake};

use super::ips::rule::ssl_state;
use super::ips::tls::{ja3_hash, ja3_string, CertBuffers};
use super::ips::{Buffer, Buffers, EvalCtx, FlowBits, Mode, Phase, Proto, Scratch};
use super::verdict::verdicts;
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
    let wants_ja3 = ips.wants(phase, Buffer::Ja3String) || ips.wants(phase, Buffer::Ja3Hash);
    let ja3 = wants_ja3.then(|| ja3_string(hs.hello));
    let ja3h = ja3.as_deref().map(ja3_hash);
    if let (Some(s), Some(h)) = (&ja3, &ja3h) {
        bufs.set(Buffer::Ja3String, s.as_bytes());
        bufs.set(Buffer::Ja3Hash, h.as_bytes());
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
        ssl_state: Some(if to_server {
            ssl_state::CLIENT_HELLO
        } else {
            ssl_state::SERVER_HELLO
        }),
        stream_bytes: None,
        chunk_len: None,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::CertificateDer;
    use tlsinspect_pipeline::api::{Inspector, TlsHandshake};
    use tlsinspect_pipeline::tls::ClientHello;

    use crate::inspect::flow::tests::meta;
    use crate::inspect::{AppControl, AppTable, Engines, Mode, Ruleset, Vars, WebFilter};

    fn engines(rules: &str) -> Engines {
        let (set, rep) = Ruleset::from_text(rules, "t", &Vars::default());
        assert!(rep.problems().is_empty(), "{:?}", rep.problems());
        Engines::new(
            WebFilter::default(),
            AppTable::default(),
            AppControl::default(),
            Arc::new(set),
            Mode::Prevent,
        )
    }

    fn hello(sni: &str) -> ClientHello {
        ClientHello {
            len: 0,
            legacy_version: 0x0303,
            sni: Some(sni.into()),
            alpn: vec![b"h2".to_vec()],
            supported_versions: vec![0x0304, 0x0303],
            cipher_suites: vec![0x1301],
            extensions: vec![0, 43],
            signature_algorithms: vec![0x0403],
            supported_groups: vec![0x001d],
            ec_point_formats: vec![0],
            ech: false,
            ja4: "t13d0102h2_aaaaaaaaaaaa_bbbbbbbbbbbb".into(),
        }
    }

    const RULES: &str = r#"alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"sni"; flow:established,to_server; tls.sni; dotprefix; content:".bad.example"; endswith; fast_pattern; nocase; sid:7000001; rev:1;)
alert tls any any -> any any (msg:"tls13 hello"; flow:to_server; tls.version:1.3; tls.sni; content:"bad"; sid:7000002; rev:1;)
alert tls any any -> any any (msg:"old hello"; flow:to_server; tls.version:1.0; tls.sni; content:"bad"; sid:7000003; rev:1;)
alert tls $EXTERNAL_NET any -> $HOME_NET any (msg:"cert"; flow:established,to_client; tls.cert_subject; content:"CN=www.bad.example"; tls.cert_issuer; content:"O=Evil CA"; sid:7000004; rev:1;)
alert tls $EXTERNAL_NET any -> $HOME_NET any (msg:"certs der"; flow:to_client; tls.certs; content:"Evil CA"; sid:7000005; rev:1;)
alert tls any any -> any any (msg:"ja4"; flow:to_server; ja4.hash; content:"t13d0102h2_"; startswith; sid:7000006; rev:1;)"#;

    fn chain() -> Vec<CertificateDer<'static>> {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Evil CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["www.bad.example".into()]).unwrap();
        leaf.distinguished_name = rcgen::DistinguishedName::new();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "www.bad.example");
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        vec![leaf.der().clone(), ca_cert.der().clone()]
    }

    fn sids(a: &[tlsinspect_pipeline::api::Alert]) -> Vec<u64> {
        let mut v: Vec<u64> = a.iter().map(|a| a.sid).collect();
        v.sort();
        v
    }

    #[test]
    fn hello_rules_fire_at_the_decision_and_cert_rules_with_the_chain() {
        let e = engines(RULES);
        let mut m = meta(None);
        m.src = "10.0.0.7:40000".parse().unwrap(); // in the default HOME_NET
        let h = hello("www.bad.example");
        let at_hello = e.on_tls(
            &m,
            &TlsHandshake {
                hello: &h,
                hello_bytes: b"\x16\x03\x01",
                upstream_chain: None,
            },
        );
        assert_eq!(sids(&at_hello), [7000001, 7000002, 7000006]);
        // TLS verdicts are logged, not enforced.
        assert!(at_hello
            .iter()
            .all(|a| a.action == "alert" && a.engine == "ips"));
        let c = chain();
        let at_cert = e.on_tls(
            &m,
            &TlsHandshake {
                hello: &h,
                hello_bytes: &[],
                upstream_chain: Some(&c),
            },
        );
        assert_eq!(
            sids(&at_cert),
            [7000004, 7000005],
            "hello rules do not fire twice"
        );
        // The domain itself, not a look-alike.
        let other = hello("notbad.example");
        let a = e.on_tls(
            &m,
            &TlsHandshake {
                hello: &other,
                hello_bytes: &[],
                upstream_chain: None,
            },
        );
        assert_eq!(sids(&a), [7000002, 7000006], "sid 7000001 needs the dot");
        // Header addresses apply: a client outside HOME_NET is not matched by sid 1.
        let a = e.on_tls(
            &meta(None),
            &TlsHandshake {
                hello: &h,
                hello_bytes: &[],
                upstream_chain: None,
            },
        );
        assert!(!sids(&a).contains(&7000001));
        let counts = e.ips_alert_counts();
        assert!(
            counts.contains(&(7000001, 1)) && counts.contains(&(7000006, 3)),
            "{counts:?}"
        );
    }

    #[test]
    fn ja3_and_ssl_state_rules_at_their_steps() {
        let h = hello("www.bad.example");
        // The hash the rule names is the one of this hello, derived here.
        let hash = crate::inspect::ips::tls::ja3_hash(&crate::inspect::ips::tls::ja3_string(&h));
        let rules = format!(
            r#"alert tls any any -> any any (msg:"ja3"; flow:to_server; ja3.hash; content:"{hash}"; sid:7100001; rev:1;)
alert tls any any -> any any (msg:"ja3 other"; flow:to_server; ja3_hash; content:"00000000000000000000000000000000"; sid:7100002; rev:1;)
alert tls any any -> any any (msg:"ja3 string"; ja3.string; content:"771,4865,0-43,29,0"; startswith; sid:7100003; rev:1;)
alert tls any any -> any any (msg:"at hello"; ssl_state:client_hello; tls.sni; content:"bad"; sid:7100004; rev:1;)
alert tls any any -> any any (msg:"at server hello"; ssl_state:server_hello; tls.sni; content:"bad"; sid:7100005; rev:1;)
alert tls any any -> any any (msg:"not at hello"; ssl_state:!client_hello; tls.sni; content:"bad"; sid:7100006; rev:1;)"#
        );
        let e = engines(&rules);
        let m = meta(None);
        let at_hello = e.on_tls(
            &m,
            &TlsHandshake {
                hello: &h,
                hello_bytes: &[],
                upstream_chain: None,
            },
        );
        assert_eq!(sids(&at_hello), [7100001, 7100003, 7100004]);
        let c = chain();
        let at_cert = e.on_tls(
            &m,
            &TlsHandshake {
                hello: &h,
                hello_bytes: &[],
                upstream_chain: Some(&c),
            },
        );
        assert_eq!(sids(&at_cert), [7100005, 7100006]);
    }
}
