//! In-memory tests of the two-leg state machine: a real rustls client and a
//! real rustls server with [`TlsPair`] between them, byte buffers as wire.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, Connection, ServerConfig};

use super::*;
use crate::api::{Alert, InspectReport};
use crate::testkit::{issuer_cn, pattern, roots, Ca, PassInspector, Seen, TestMinter};
use crate::tls::client_hello;

const DEST: ([u8; 4], u16) = ([203, 0, 113, 10], 443);

/// The lab of one test: CAs, minter, inspector.
struct Lab {
    origin_ca: Ca,
    minter: Arc<TestMinter>,
    seen: Arc<Mutex<Seen>>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            origin_ca: Ca::new("Origin Root CA"),
            minter: Arc::new(TestMinter::new()),
            seen: Arc::new(Mutex::new(Seen::default())),
        }
    }

    fn params(&self, invalid: InvalidCertPolicy, tls13: bool) -> TlsPairParams {
        TlsPairParams {
            upstream: UpstreamTls::new(roots(&[&self.origin_ca]), invalid).unwrap(),
            minter: self.minter.clone(),
            inspector: Arc::new(PassInspector(self.seen.clone())),
            meta: FlowMeta {
                flow_id: 7,
                src: SocketAddr::from(([192, 0, 2, 10], 40000)),
                dest: SocketAddr::from(DEST),
                policy_id: Arc::from("pol-test"),
                scope_id: Arc::from("sc-test"),
                sni: None,
                alpn: None,
                tunnel: None,
            },
            tls13,
            now: SystemTime::now(),
        }
    }

    fn server(&self, names: &[&str], tls13: bool, alpn: &[&[u8]]) -> ServerConfig {
        let (cert, key) = self
            .origin_ca
            .leaf(names, ExtendedKeyUsagePurpose::ServerAuth);
        let b = if tls13 {
            ServerConfig::builder()
        } else {
            ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        };
        let mut c = b
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        c
    }

    fn client(
        &self,
        trusted: &[&Ca],
        versions: &[&'static SupportedProtocolVersion],
    ) -> ClientConfig {
        let mut c = ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots(trusted))
            .with_no_client_auth();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        c
    }
}

/// A client, a server and the state machine between them, over byte buffers.
struct Wire {
    client: Connection,
    server: Connection,
    mitm: Option<TlsPair>,
    params: Option<TlsPairParams>,
    held: Vec<u8>,
    chunk: usize,
    /// Take the appliance's output with `write_to_*` into slots of this
    /// size (a send ring with that much room per poll) instead of `poll_to_*`.
    window: Option<usize>,
    events: Vec<Event>,
    client_err: Option<rustls::Error>,
    server_err: Option<rustls::Error>,
    client_got: Vec<u8>,
    server_got: Vec<u8>,
    client_bytes_sent: Vec<u8>,
}

/// What the appliance has for one side: everything through `poll`, or
/// one `window`-sized slot at a time through `write` (each slot filled as
/// far as the bytes go, as a send ring would be).
fn take_output(
    window: Option<usize>,
    poll: impl FnOnce(&mut Vec<u8>) -> usize,
    mut write: impl FnMut(&mut [u8]) -> usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    match window {
        None => {
            poll(&mut out);
        }
        Some(w) => loop {
            let mut slot = vec![0u8; w];
            let n = write(&mut slot);
            assert!(n <= w);
            out.extend_from_slice(&slot[..n]);
            if n == 0 {
                break;
            }
        },
    }
    out
}

/// Feeds `data` to a peer in chunks, collecting its plaintext into `got`.
fn feed_into(
    conn: &mut Connection,
    data: &[u8],
    chunk: usize,
    err: &mut Option<rustls::Error>,
    got: &mut Vec<u8>,
) {
    for c in data.chunks(chunk) {
        let mut rd = c;
        while !rd.is_empty() {
            if err.is_some() {
                return;
            }
            conn.read_tls(&mut rd).unwrap();
            if let Err(e) = conn.process_new_packets() {
                *err = Some(e);
            }
            read_plain(conn, got);
        }
    }
}

fn feed(conn: &mut Connection, data: &[u8], chunk: usize, err: &mut Option<rustls::Error>) {
    feed_into(conn, data, chunk, err, &mut Vec::new());
}

fn drain(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

fn read_plain(conn: &mut Connection, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 8192];
    let mut any = false;
    loop {
        match conn.reader().read(&mut buf) {
            Ok(0) => return any,
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                any = true;
            }
            Err(_) => return any,
        }
    }
}

impl Wire {
    fn new(
        client: ClientConfig,
        server: ServerConfig,
        params: TlsPairParams,
        chunk: usize,
    ) -> Wire {
        let name = ServerName::try_from("origin.test").unwrap();
        let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
        client.set_buffer_limit(None);
        let mut server = ServerConnection::new(Arc::new(server)).unwrap();
        server.set_buffer_limit(None);
        Wire {
            client: client.into(),
            server: server.into(),
            mitm: None,
            params: Some(params),
            held: Vec::new(),
            chunk,
            window: None,
            events: Vec::new(),
            client_err: None,
            server_err: None,
            client_got: Vec::new(),
            server_got: Vec::new(),
            client_bytes_sent: Vec::new(),
        }
    }

    fn collect_events(&mut self) {
        if let Some(m) = self.mitm.as_mut() {
            while let Some(e) = m.poll_event() {
                self.events.push(e);
            }
        }
    }

    /// Moves bytes until nothing moves any more.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut progress = false;
            let out = drain(&mut self.client);
            self.client_bytes_sent.extend_from_slice(&out);
            self.held.extend_from_slice(&out);
            if self.mitm.is_none() {
                if let Ok(Some(h)) = client_hello::parse(&self.held) {
                    let params = self.params.take().unwrap();
                    self.mitm = Some(TlsPair::new(params, &h, &self.held).unwrap());
                    self.held.clear();
                    progress = true;
                }
            } else if !self.held.is_empty() {
                let held = std::mem::take(&mut self.held);
                for c in held.chunks(self.chunk) {
                    self.mitm.as_mut().unwrap().handle_client_bytes(c);
                    self.collect_events();
                }
                progress = true;
            }
            if let Some(m) = self.mitm.as_mut() {
                let window = self.window;
                let to_s = {
                    let m = std::cell::RefCell::new(m);
                    take_output(
                        window,
                        |v| m.borrow_mut().poll_to_server(v),
                        |b| m.borrow_mut().write_to_server(b),
                    )
                };
                if !to_s.is_empty() {
                    progress = true;
                    feed_into(
                        &mut self.server,
                        &to_s,
                        self.chunk,
                        &mut self.server_err,
                        &mut self.server_got,
                    );
                }
                let s_out = drain(&mut self.server);
                if !s_out.is_empty() {
                    progress = true;
                    for c in s_out.chunks(self.chunk) {
                        self.mitm.as_mut().unwrap().handle_server_bytes(c);
                        self.collect_events();
                    }
                }
                self.collect_events();
                let to_c = {
                    let m = std::cell::RefCell::new(self.mitm.as_mut().unwrap());
                    take_output(
                        window,
                        |v| m.borrow_mut().poll_to_client(v),
                        |b| m.borrow_mut().write_to_client(b),
                    )
                };
                if !to_c.is_empty() {
                    progress = true;
                    feed_into(
                        &mut self.client,
                        &to_c,
                        self.chunk,
                        &mut self.client_err,
                        &mut self.client_got,
                    );
                }
            }
            progress |= read_plain(&mut self.client, &mut self.client_got);
            progress |= read_plain(&mut self.server, &mut self.server_got);
            if !progress {
                return;
            }
        }
        panic!("the wire never settled");
    }

    fn mitm(&self) -> &TlsPair {
        self.mitm.as_ref().unwrap()
    }

    fn has(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

/// Runs a full inspected connection and checks what a user would see.
fn end_to_end(tls13: bool, chunk: usize, up: usize, down: usize) {
    end_to_end_through(tls13, chunk, up, down, None)
}

/// [`end_to_end`], the appliance's output taken `window` bytes at a time.
fn end_to_end_through(tls13: bool, chunk: usize, up: usize, down: usize, window: Option<usize>) {
    let lab = Lab::new();
    let versions: &[&'static SupportedProtocolVersion] = if tls13 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS12]
    };
    let client = lab.client(&[&lab.minter.policy], versions);
    let server = lab.server(&["origin.test"], true, &[b"h2", b"http/1.1"]);
    let mut w = Wire::new(
        client,
        server,
        lab.params(InvalidCertPolicy::Untrusted, tls13),
        chunk,
    );
    w.window = window;
    w.pump();
    assert!(w.client_err.is_none(), "client: {:?}", w.client_err);
    assert!(w.server_err.is_none(), "server: {:?}", w.server_err);
    assert!(
        matches!(w.events.first(), Some(Event::Established)),
        "{:?}",
        w.events
    );
    assert!(!w.client.is_handshaking() && !w.server.is_handshaking());

    // The client saw a chain issued by the policy CA, and h2 was mirrored.
    let peer = w.client.peer_certificates().unwrap();
    assert_eq!(peer.len(), 1, "leaf only, never the root");
    assert_eq!(issuer_cn(&peer[0]), "Test Policy CA");
    assert_eq!(w.client.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(w.server.alpn_protocol(), Some(&b"h2"[..]));
    let want = if tls13 {
        rustls::ProtocolVersion::TLSv1_3
    } else {
        rustls::ProtocolVersion::TLSv1_2
    };
    assert_eq!(w.client.protocol_version(), Some(want));
    assert_eq!(w.server.protocol_version(), Some(want));

    // Plaintext both ways, byte-identical.
    let req = pattern(up, 1);
    let resp = pattern(down, 2);
    w.client.writer().write_all(&req).unwrap();
    w.pump();
    w.server.writer().write_all(&resp).unwrap();
    w.pump();
    assert!(
        w.server_got == req,
        "request differs ({} of {} bytes)",
        w.server_got.len(),
        up
    );
    assert!(
        w.client_got == resp,
        "response differs ({} of {} bytes)",
        w.client_got.len(),
        down
    );
    assert_eq!(w.mitm().plaintext_bytes(), (up as u64, down as u64));

    // The log record's TLS details.
    let info = w.mitm().tls_info().clone();
    let v = if tls13 { "TLS 1.3" } else { "TLS 1.2" };
    assert_eq!(info.sni.as_deref(), Some("origin.test"));
    assert_eq!(info.version.as_deref(), Some(v));
    assert_eq!(info.upstream_version.as_deref(), Some(v));
    assert!(
        info.cipher.as_deref().unwrap().contains("AES_128_GCM"),
        "{:?}",
        info.cipher
    );
    assert_eq!(info.alpn.as_deref(), Some("h2"));
    assert!(info
        .ja4
        .as_deref()
        .unwrap()
        .starts_with(if tls13 { "t13d" } else { "t12d" }));
    let uc = info.upstream_cert.unwrap();
    assert!(uc.verified && uc.error.is_none());
    assert_eq!(uc.subject, "CN=origin.test");
    assert_eq!(uc.issuer, "CN=Origin Root CA");
    assert!(uc.not_after.starts_with("4096-"), "{}", uc.not_after);
    let reqs = lab.minter.requests.lock().unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].sni.as_deref(), Some("origin.test"));
    assert!(reqs[0].verified);
    assert_eq!(reqs[0].key_type, LeafKeyType::EcdsaP256);
    assert_eq!(
        reqs[0].upstream_subject, "CN=origin.test",
        "the real server's leaf"
    );
    drop(reqs);
    let seen = lab.seen.lock().unwrap();
    assert_eq!(
        seen.meta.as_ref().unwrap().alpn.as_deref(),
        Some(&b"h2"[..])
    );
    drop(seen);

    // Orderly close: client first, then server.
    w.client.send_close_notify();
    w.pump();
    assert!(w.has(|e| matches!(e, Event::CloseServer)));
    w.server.send_close_notify();
    w.pump();
    assert!(w.has(|e| matches!(e, Event::CloseClient)));
    assert!(
        matches!(w.events.last(), Some(Event::Finished)),
        "{:?}",
        w.events
    );
    assert!(w.mitm().is_done());
    assert_eq!(
        lab.seen.lock().unwrap().eof,
        vec![Direction::ToServer, Direction::ToClient]
    );
}

#[test]
fn tls13_end_to_end() {
    end_to_end(true, usize::MAX, 100_000, 1_000_000);
}

#[test]
fn tls12_end_to_end() {
    end_to_end(false, usize::MAX, 100_000, 1_000_000);
}

#[test]
fn tls13_in_small_chunks() {
    end_to_end(true, 7, 20_000, 50_000);
}

#[test]
fn tls12_byte_by_byte() {
    end_to_end(false, 1, 3_000, 5_000);
}

/// The records written straight into a send ring with little room (odd
/// sizes, so records and their headers are cut anywhere) arrive whole and
/// in order.
#[test]
fn output_written_into_a_small_send_window() {
    end_to_end_through(true, usize::MAX, 50_000, 200_000, Some(97));
    end_to_end_through(false, 1000, 20_000, 60_000, Some(1));
}

fn wrong_name(invalid: InvalidCertPolicy) -> (Wire, Lab) {
    let lab = Lab::new();
    let client = lab.client(
        &[&lab.minter.policy],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let server = lab.server(&["other.test"], true, &[]);
    let mut w = Wire::new(client, server, lab.params(invalid, true), 100);
    w.pump();
    (w, lab)
}

#[test]
fn wrong_name_untrusted_forges_with_the_untrusted_issuer() {
    let (w, lab) = wrong_name(InvalidCertPolicy::Untrusted);
    // The client fails the way it would without us: unknown issuer.
    assert!(
        matches!(
            w.client_err,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{:?}",
        w.client_err
    );
    let reqs = lab.minter.requests.lock().unwrap();
    assert!(!reqs[0].verified, "minted as unverified");
    assert_eq!(reqs[0].upstream_subject, "CN=other.test");
    let uc = w.mitm().tls_info().upstream_cert.clone().unwrap();
    assert!(!uc.verified);
    assert!(
        uc.error.as_deref().unwrap().contains("not valid for name"),
        "{:?}",
        uc.error
    );
    // Not pinning: the rejection of an untrusted forgery is expected.
    assert!(!w.has(|e| matches!(e, Event::ClientRejected { .. })));
    assert!(w.has(|e| matches!(e, Event::Failed(TlsPairError::ClientLeg(_)))));
}

/// An origin whose leaf (serial 4242) the origin CA's CRL lists, or not.
fn with_crl(revoked: &[u64]) -> (Wire, Lab) {
    let lab = Lab::new();
    let client = lab.client(&[&lab.minter.policy], &[&rustls::version::TLS13]);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["origin.test".to_string()]).unwrap();
    p.serial_number = Some(rcgen::SerialNumber::from(4242u64));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p
        .signed_by(&key, &lab.origin_ca.cert, &lab.origin_ca.key)
        .unwrap();
    let server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let mut params = lab.params(InvalidCertPolicy::Untrusted, true);
    params.upstream = UpstreamTls::with_crls(
        roots(&[&lab.origin_ca]),
        vec![lab.origin_ca.crl(revoked)],
        InvalidCertPolicy::Untrusted,
    )
    .unwrap();
    let mut w = Wire::new(client, server, params, 100);
    w.pump();
    (w, lab)
}

#[test]
fn a_revoked_upstream_certificate_is_invalid_and_an_unlisted_one_is_not() {
    let (w, _lab) = with_crl(&[4242]);
    let uc = w.mitm().tls_info().upstream_cert.clone().unwrap();
    assert!(!uc.verified);
    assert!(
        uc.error.as_deref().unwrap_or("").contains("Revoked"),
        "{:?}",
        uc.error
    );
    // The client fails as it would with the CRL: our leaf is untrusted.
    assert!(
        matches!(
            w.client_err,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{:?}",
        w.client_err
    );

    let (w, _lab) = with_crl(&[1, 2, 3]);
    let uc = w.mitm().tls_info().upstream_cert.clone().unwrap();
    assert!(uc.verified, "{:?}", uc.error);
    assert!(w.client_err.is_none(), "{:?}", w.client_err);
}

#[test]
fn wrong_name_block_sends_an_alert() {
    let (w, lab) = wrong_name(InvalidCertPolicy::Block);
    assert!(
        matches!(
            w.client_err,
            Some(rustls::Error::AlertReceived(AlertDescription::AccessDenied))
        ),
        "{:?}",
        w.client_err
    );
    assert!(
        w.has(|e| matches!(e, Event::Blocked { .. })),
        "{:?}",
        w.events
    );
    assert!(
        lab.minter.requests.lock().unwrap().is_empty(),
        "nothing forged"
    );
    assert!(!w.mitm().tls_info().upstream_cert.as_ref().unwrap().verified);
}

#[test]
fn server_requiring_client_auth_is_bypassed_and_replayed() {
    for tls13 in [true, false] {
        let lab = Lab::new();
        let client_ca = Ca::new("Client CA");
        let (ccert, ckey) = client_ca.leaf(&["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let versions: &[&'static SupportedProtocolVersion] = if tls13 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS12]
        };
        // An mTLS client that trusts the real origin.
        let client = ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots(&[&lab.origin_ca]))
            .with_client_auth_cert(vec![ccert], ckey)
            .unwrap();
        let (scert, skey) = lab
            .origin_ca
            .leaf(&["origin.test"], ExtendedKeyUsagePurpose::ServerAuth);
        let verifier = WebPkiClientVerifier::builder(roots(&[&client_ca]))
            .build()
            .unwrap();
        let server = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![scert], skey)
            .unwrap();
        let server = Arc::new(server);
        let mut w = Wire::new(
            client,
            (*server).clone(),
            lab.params(InvalidCertPolicy::Untrusted, tls13),
            usize::MAX,
        );
        w.pump();
        let replay = w
            .events
            .iter()
            .find_map(|e| match e {
                Event::BypassAndReplay {
                    reason: BypassReason::ClientAuth,
                    replay,
                } => Some(replay.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("tls13={tls13}: {:?}", w.events));
        assert_eq!(replay, w.client_bytes_sent, "the client's bytes, unchanged");
        assert!(lab.minter.requests.lock().unwrap().is_empty());

        // The worker replays on a fresh server leg and relays as pass: the
        // client completes mutual TLS with the real server.
        let mut fresh: Connection = ServerConnection::new(server).unwrap().into();
        let mut err = None;
        feed(&mut fresh, &replay, usize::MAX, &mut err);
        for _ in 0..20 {
            let s = drain(&mut fresh);
            feed(&mut w.client, &s, usize::MAX, &mut w.client_err);
            let c = drain(&mut w.client);
            feed(&mut fresh, &c, usize::MAX, &mut err);
        }
        assert!(
            err.is_none() && w.client_err.is_none(),
            "{err:?} {:?}",
            w.client_err
        );
        assert!(!w.client.is_handshaking());
        let peer = w.client.peer_certificates().unwrap();
        assert_eq!(
            issuer_cn(&peer[0]),
            "Origin Root CA",
            "the real certificate"
        );
        assert!(
            fresh.peer_certificates().is_some(),
            "the server saw the client certificate"
        );
    }
}

#[test]
fn server_speaking_only_tls13_to_a_tls12_inspection_is_bypassed() {
    let lab = Lab::new();
    let client = lab.client(&[&lab.minter.policy], &[&rustls::version::TLS12]);
    let (cert, key) = lab
        .origin_ca
        .leaf(&["origin.test"], ExtendedKeyUsagePurpose::ServerAuth);
    let server = ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let mut w = Wire::new(
        client,
        server,
        lab.params(InvalidCertPolicy::Untrusted, false),
        50,
    );
    w.pump();
    assert!(
        w.has(|e| matches!(
            e,
            Event::BypassAndReplay {
                reason: BypassReason::UnsupportedServer,
                ..
            }
        )),
        "{:?}",
        w.events
    );
    assert!(w.client_err.is_none(), "the client saw nothing from us");
}

#[test]
fn client_rejecting_our_certificate_is_reported() {
    let lab = Lab::new();
    // A pinning client: it trusts only the real origin CA.
    let client = lab.client(&[&lab.origin_ca], &[&rustls::version::TLS13]);
    let server = lab.server(&["origin.test"], true, &[]);
    let mut w = Wire::new(
        client,
        server,
        lab.params(InvalidCertPolicy::Untrusted, true),
        64,
    );
    w.pump();
    assert!(w.client_err.is_some());
    assert!(
        w.has(|e| matches!(
            e,
            Event::ClientRejected {
                alert: Some(AlertDescription::UnknownCA)
            }
        )),
        "{:?}",
        w.events
    );
}

#[test]
fn client_closing_right_after_our_flight_is_reported() {
    let lab = Lab::new();
    let mut fresh = Wire::new(
        lab.client(&[&lab.minter.policy], &[&rustls::version::TLS12]),
        lab.server(&["origin.test"], true, &[]),
        lab.params(InvalidCertPolicy::Untrusted, false),
        64,
    );
    // Drive by hand: hello in, server leg up, flight out, then a FIN.
    let hello = drain(&mut fresh.client);
    let h = client_hello::parse(&hello).unwrap().unwrap();
    let mut m = TlsPair::new(fresh.params.take().unwrap(), &h, &hello).unwrap();
    for _ in 0..10 {
        let mut to_s = Vec::new();
        m.poll_to_server(&mut to_s);
        feed(&mut fresh.server, &to_s, usize::MAX, &mut fresh.server_err);
        let s = drain(&mut fresh.server);
        m.handle_server_bytes(&s);
    }
    let mut flight = Vec::new();
    m.poll_to_client(&mut flight);
    assert!(!flight.is_empty(), "our ServerHello flight");
    m.handle_client_eof();
    let ev: Vec<Event> = std::iter::from_fn(|| m.poll_event()).collect();
    assert!(
        matches!(ev.as_slice(), [Event::ClientRejected { alert: None }]),
        "{ev:?}"
    );
}

#[test]
fn alert_records_are_well_formed() {
    assert_eq!(
        alert_record(AlertDescription::AccessDenied),
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49]
    );
}

#[test]
fn no_sni_is_inspected_with_the_upstream_names() {
    let lab = Lab::new();
    let mut client = lab.client(&[&lab.minter.policy], &[&rustls::version::TLS13]);
    client.enable_sni = false;
    let server = lab.server(&["origin.test"], true, &[]);
    let mut w = Wire::new(
        client,
        server,
        lab.params(InvalidCertPolicy::Untrusted, true),
        300,
    );
    w.pump();
    assert!(w.client_err.is_none(), "{:?}", w.client_err);
    assert!(w.has(|e| matches!(e, Event::Established)), "{:?}", w.events);
    // No SNI went upstream either, and the chain still counted as verified.
    let Connection::Server(srv) = &w.server else {
        unreachable!("the server side is a ServerConnection")
    };
    assert_eq!(srv.server_name(), None);
    let info = w.mitm().tls_info();
    assert_eq!(info.sni, None);
    assert!(info.upstream_cert.as_ref().unwrap().verified);
    assert_eq!(
        issuer_cn(&w.client.peer_certificates().unwrap()[0]),
        "Test Policy CA"
    );
}

/// An inspector that answers the first request itself and closes (a block page).
struct BlockPage;
struct BlockPageFlow;

impl Inspector for BlockPage {
    fn new_flow(&self, _meta: &FlowMeta) -> Box<dyn FlowInspector> {
        Box::new(BlockPageFlow)
    }
}

impl FlowInspector for BlockPageFlow {
    fn on_data(&mut self, dir: Direction, _data: &[u8], out: &mut Emit) {
        if dir == Direction::ToServer {
            out.to_client
                .extend_from_slice(b"HTTP/1.1 403 Forbidden\r\n\r\n");
            out.action = ConnAction::Close;
        }
    }
    fn on_eof(&mut self, _dir: Direction, _out: &mut Emit) {}
    fn take_alerts(&mut self) -> Vec<Alert> {
        Vec::new()
    }
    fn finish(&mut self) -> InspectReport {
        InspectReport::default()
    }
}

#[test]
fn inspector_verdicts_reach_the_legs() {
    let lab = Lab::new();
    let client = lab.client(&[&lab.minter.policy], &[&rustls::version::TLS13]);
    let server = lab.server(&["origin.test"], true, &[]);
    let mut params = lab.params(InvalidCertPolicy::Untrusted, true);
    params.inspector = Arc::new(BlockPage);
    let mut w = Wire::new(client, server, params, usize::MAX);
    w.pump();
    w.client
        .writer()
        .write_all(b"POST /upload HTTP/1.1\r\n\r\nsecret")
        .unwrap();
    w.pump();
    assert_eq!(w.client_got, b"HTTP/1.1 403 Forbidden\r\n\r\n");
    assert!(w.server_got.is_empty(), "nothing reached the server");
    assert!(
        w.has(|e| matches!(e, Event::CloseServer)) && w.has(|e| matches!(e, Event::CloseClient))
    );
    assert!(matches!(w.events.last(), Some(Event::Finished)));
}

/// The client leg accepts every captured real-world hello: browsers with
/// GREASE, ECH and post-quantum key shares included.
#[test]
fn captured_hellos_get_our_server_hello() {
    for (name, bytes) in client_hello::tests::ALL {
        let h = client_hello::parse(bytes).unwrap().unwrap();
        let lab = Lab::new();
        let sni = h.sni.clone().unwrap_or_else(|| "hello.test".into());
        let server = lab.server(&[&sni], true, &[b"http/1.1"]);
        let mut srv: Connection = ServerConnection::new(Arc::new(server)).unwrap().into();
        let tls13 = h.offers_tls13();
        let mut m =
            TlsPair::new(lab.params(InvalidCertPolicy::Untrusted, tls13), &h, bytes).unwrap();
        let mut err = None;
        for _ in 0..10 {
            let mut to_s = Vec::new();
            m.poll_to_server(&mut to_s);
            feed(&mut srv, &to_s, usize::MAX, &mut err);
            let s = drain(&mut srv);
            m.handle_server_bytes(&s);
        }
        assert!(err.is_none(), "{name}: {err:?}");
        let ev: Vec<Event> = std::iter::from_fn(|| m.poll_event()).collect();
        assert!(ev.is_empty(), "{name}: {ev:?}");
        let mut flight = Vec::new();
        m.poll_to_client(&mut flight);
        // A handshake record whose first message is a ServerHello.
        assert_eq!(flight[0], 0x16, "{name}");
        assert_eq!(flight[5], 0x02, "{name}: ServerHello");
        let v = if tls13 { "TLS 1.3" } else { "TLS 1.2" };
        assert_eq!(m.tls_info().upstream_version.as_deref(), Some(v), "{name}");
        assert_eq!(m.tls_info().ja4.as_deref(), Some(h.ja4.as_str()));
    }
}

#[test]
fn expired_upstream_is_judged_at_the_time_passed_in() {
    let lab = Lab::new();
    let client = lab.client(&[&lab.minter.policy], &[&rustls::version::TLS13]);
    let server = lab.server(&["origin.test"], true, &[]);
    let mut params = lab.params(InvalidCertPolicy::Untrusted, true);
    // rcgen certificates end in 4096; judge them from the year 4100.
    params.now = UNIX_EPOCH + std::time::Duration::from_secs(4100 * 31_557_600 - 1970 * 31_557_600);
    let mut w = Wire::new(client, server, params, usize::MAX);
    w.pump();
    let uc = w.mitm().tls_info().upstream_cert.clone().unwrap();
    assert!(!uc.verified);
    assert!(
        uc.error.as_deref().unwrap().contains("expired"),
        "{:?}",
        uc.error
    );
    assert!(matches!(
        w.client_err,
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        ))
    ));
}

#[test]
fn server_speaking_first_reaches_the_client() {
    for chunk in [usize::MAX, 50] {
        let lab = Lab::new();
        let client = lab.client(&[&lab.minter.policy], &[&rustls::version::TLS13]);
        let server = lab.server(&["origin.test"], true, &[]);
        let mut w = Wire::new(
            client,
            server,
            lab.params(InvalidCertPolicy::Untrusted, true),
            chunk,
        );
        // Sent by the server right after its handshake flight (0.5-RTT),
        // while our client leg is still handshaking.
        w.server
            .writer()
            .write_all(b"* OK IMAP4rev1 ready\r\n")
            .unwrap();
        w.pump();
        assert!(w.client_err.is_none(), "{:?}", w.client_err);
        assert_eq!(w.client_got, b"* OK IMAP4rev1 ready\r\n", "chunk {chunk}");
    }
}
