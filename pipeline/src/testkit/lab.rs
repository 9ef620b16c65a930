//! The in-memory lab: a test PKI and a caching minter, inspectors, a log
//! sink, and a client host and a server host, each a smoltcp stack with
//! real rustls connections (or raw bytes), with a [`Connection`] (or the
//! test's dispatcher) between them, in virtual time.
//!
//! Shared by the unit tests and `benches/intercept.rs` (included there with
//! `#[path]`), so it names items only through `crate::{api, classify,
//! conn, tcp, tls}`, which the bench re-exports at its root.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, Connection as TlsConn, RootCertStore, ServerConfig};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{Socket, SocketBuffer, State};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpCidr};

use crate::api::{
    Alert, CertMinter, ConnAction, Direction, Emit, FlowInspector, FlowLog, FlowMeta, FlowRecord,
    InspectReport, Inspector, MintError, MintRequest,
};
use crate::classify::ScopeMatch;
use crate::conn::{ConnCtx, Connection};
use crate::tcp::queue_dev::QueueDev;
use crate::tcp::{FlowConfig, Leg};
use crate::tls::bypass::{BypassCache, BypassConfig};
use crate::tls::decision::TlsPolicy;
use crate::tls::pair::{InvalidCertPolicy, UpstreamTls};

// ------------------------------------------------------------------ PKI

/// A CA made with rcgen.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Issues an ECDSA P-256 leaf for `names` with the given EKU.
    pub fn leaf(
        &self,
        names: &[&str],
        eku: ExtendedKeyUsagePurpose,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), der)
    }

    /// A CRL of this CA revoking `serials`.
    pub fn crl(&self, serials: &[u64]) -> rustls::pki_types::CertificateRevocationListDer<'static> {
        let now = time::OffsetDateTime::now_utc();
        let p = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(7),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        p.signed_by(&self.cert, &self.key).unwrap().der().clone()
    }
}

pub fn roots(cas: &[&Ca]) -> Arc<RootCertStore> {
    let mut r = RootCertStore::empty();
    for ca in cas {
        r.add(ca.der()).unwrap();
    }
    Arc::new(r)
}

/// Forged chains by (upstream leaf DER, verified).
type MintCache = HashMap<(Vec<u8>, bool), Arc<CertifiedKey>>;

/// One request the test minter served.
pub struct Minted {
    pub sni: Option<String>,
    pub verified: bool,
    pub key_type: crate::api::LeafKeyType,
    pub upstream_subject: String,
}

/// A minter signing with the policy CA (or the untrusted CA for unverified
/// upstreams), caching per upstream leaf as the real minter does; every
/// request is recorded.
pub struct TestMinter {
    pub policy: Ca,
    pub untrusted: Ca,
    cache: Mutex<MintCache>,
    pub minted: AtomicU64,
    pub requests: Mutex<Vec<Minted>>,
}

impl TestMinter {
    pub fn new() -> TestMinter {
        TestMinter {
            policy: Ca::new("Test Policy CA"),
            untrusted: Ca::new("Untrusted Issuer"),
            cache: Mutex::new(HashMap::new()),
            minted: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
        }
    }
}

impl CertMinter for TestMinter {
    fn mint(&self, req: &MintRequest<'_>) -> Result<Arc<CertifiedKey>, MintError> {
        let (_, up) = x509_parser::parse_x509_certificate(req.upstream_leaf)
            .map_err(|e| MintError::BadUpstreamCertificate(e.to_string()))?;
        self.requests.lock().unwrap().push(Minted {
            sni: req.sni.map(str::to_string),
            verified: req.upstream_verified,
            key_type: req.key_type,
            upstream_subject: up.subject().to_string(),
        });
        let key = (req.upstream_leaf.to_vec(), req.upstream_verified);
        if let Some(c) = self.cache.lock().unwrap().get(&key) {
            return Ok(c.clone());
        }
        let mut names: Vec<String> = up
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        x509_parser::extensions::GeneralName::DNSName(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(sni) = req.sni {
            if !names.iter().any(|n| n == sni) {
                names.push(sni.to_string());
            }
        }
        if names.is_empty() {
            names.push("unnamed.test".into());
        }
        let ca = if req.upstream_verified {
            &self.policy
        } else {
            &self.untrusted
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (cert, k) = ca.leaf(&names, ExtendedKeyUsagePurpose::ServerAuth);
        let k = rustls::crypto::aws_lc_rs::sign::any_supported_type(&k)
            .map_err(|e| MintError::Internal(e.to_string()))?;
        let ck = Arc::new(CertifiedKey::new(vec![cert], k));
        self.minted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.cache.lock().unwrap().insert(key, ck.clone());
        Ok(ck)
    }
}

// ------------------------------------------------------------------ inspectors, log

/// Plaintext seen by the pass-through inspector.
#[derive(Default)]
pub struct Seen {
    pub to_server: u64,
    pub to_client: u64,
    pub flows: u64,
    pub meta: Option<FlowMeta>,
    /// The directions whose end of stream the inspector saw, in order.
    pub eof: Vec<Direction>,
}

/// Relays everything unchanged, counting it.
pub struct PassInspector(pub Arc<Mutex<Seen>>);
struct PassFlow(Arc<Mutex<Seen>>);

impl Inspector for PassInspector {
    fn new_flow(&self, meta: &FlowMeta) -> Box<dyn FlowInspector> {
        let mut s = self.0.lock().unwrap();
        s.flows += 1;
        s.meta = Some(meta.clone());
        Box::new(PassFlow(self.0.clone()))
    }
}

impl FlowInspector for PassFlow {
    fn on_data(&mut self, dir: Direction, data: &[u8], out: &mut Emit) {
        let mut s = self.0.lock().unwrap();
        match dir {
            Direction::ToServer => {
                s.to_server += data.len() as u64;
                out.to_server.extend_from_slice(data);
            }
            Direction::ToClient => {
                s.to_client += data.len() as u64;
                out.to_client.extend_from_slice(data);
            }
        }
    }
    fn on_eof(&mut self, dir: Direction, _out: &mut Emit) {
        self.0.lock().unwrap().eof.push(dir);
    }
    fn take_alerts(&mut self) -> Vec<Alert> {
        Vec::new()
    }
    fn finish(&mut self) -> InspectReport {
        InspectReport::default()
    }
}

/// Panics on the first request bytes containing `panic`; relays the rest.
pub struct PanicInspector;
struct PanicFlow;

impl Inspector for PanicInspector {
    fn new_flow(&self, _meta: &FlowMeta) -> Box<dyn FlowInspector> {
        Box::new(PanicFlow)
    }
}

impl FlowInspector for PanicFlow {
    fn on_data(&mut self, dir: Direction, data: &[u8], out: &mut Emit) {
        if dir == Direction::ToServer && data.windows(5).any(|w| w == b"panic") {
            panic!("test: an engine bug on this flow");
        }
        match dir {
            Direction::ToServer => out.to_server.extend_from_slice(data),
            Direction::ToClient => out.to_client.extend_from_slice(data),
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

/// A policy passing every kind of hello.
pub fn pass_all() -> TlsPolicy {
    use crate::tls::decision::{PassOrBlock, PassOrInspect};
    TlsPolicy {
        non_tls: PassOrBlock::Pass,
        ech: PassOrInspect::Pass,
        exclude_sni: vec![],
        legacy_tls: PassOrBlock::Pass,
        tls13: PassOrInspect::Pass,
        no_sni: PassOrInspect::Pass,
        on_overload: PassOrBlock::Pass,
    }
}

/// A policy inspecting every TLS hello (legacy versions blocked).
pub fn inspect_all() -> TlsPolicy {
    use crate::tls::decision::{PassOrBlock, PassOrInspect};
    TlsPolicy {
        non_tls: PassOrBlock::Pass,
        ech: PassOrInspect::Inspect,
        exclude_sni: vec![],
        legacy_tls: PassOrBlock::Block,
        tls13: PassOrInspect::Inspect,
        no_sni: PassOrInspect::Inspect,
        on_overload: PassOrBlock::Pass,
    }
}

pub const BLOCK_PAGE: &[u8] =
    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\nConnection: close\r\n\r\nblocked";

/// Answers the first request with a 403, raises an alert and closes.
pub struct BlockInspector;
struct BlockFlow {
    alerts: Vec<Alert>,
    all: Vec<Alert>,
    done: bool,
}

impl Inspector for BlockInspector {
    fn new_flow(&self, _meta: &FlowMeta) -> Box<dyn FlowInspector> {
        Box::new(BlockFlow {
            alerts: Vec::new(),
            all: Vec::new(),
            done: false,
        })
    }
}

impl FlowInspector for BlockFlow {
    fn on_data(&mut self, dir: Direction, _data: &[u8], out: &mut Emit) {
        if dir == Direction::ToServer && !self.done {
            self.done = true;
            let a = Alert {
                engine: "webfilter",
                sid: 1,
                msg: "test deny".into(),
                action: "deny".into(),
                ..Alert::default()
            };
            self.alerts.push(a.clone());
            self.all.push(a);
            out.to_client.extend_from_slice(BLOCK_PAGE);
            out.action = ConnAction::Close;
        }
    }
    fn on_eof(&mut self, _dir: Direction, _out: &mut Emit) {}
    fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }
    fn finish(&mut self) -> InspectReport {
        InspectReport {
            alerts: self.all.clone(),
            ..InspectReport::default()
        }
    }
}

/// A log keeping records and alerts in memory.
#[derive(Default)]
pub struct MemLog {
    pub alerts: Mutex<Vec<(u64, Alert)>>,
    pub records: Mutex<Vec<FlowRecord>>,
}

impl FlowLog for MemLog {
    fn record(&self, rec: &FlowRecord) {
        self.records.lock().unwrap().push(rec.clone());
    }
    fn alert(&self, meta: &FlowMeta, alert: &Alert, _timestamp: SystemTime) {
        self.alerts
            .lock()
            .unwrap()
            .push((meta.flow_id, alert.clone()));
    }
}

// ------------------------------------------------------------------ hosts

/// The application on one TCP connection of a host.
pub struct App {
    handle: SocketHandle,
    /// TLS, or raw bytes when `None`.
    pub tls: Option<TlsConn>,
    server_cfg: Option<Arc<ServerConfig>>,
    /// Plaintext to send.
    pub out: Vec<u8>,
    pub sent: usize,
    /// Plaintext received.
    pub got: Vec<u8>,
    /// Close once everything is sent and this much was received.
    pub expect: usize,
    cipher: Vec<u8>,
    closed: bool,
    /// The peer's end of stream (TCP FIN or close_notify) was seen.
    pub eof: bool,
    pub tls_err: Option<rustls::Error>,
    /// The TCP connection was reset or refused.
    pub reset: bool,
    was_open: bool,
}

/// A plain smoltcp host: one client socket, or several listening ones.
pub struct Host {
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The host's link: packets it will receive (`rx`) and has sent (`tx`).
    pub dev: QueueDev,
    pub apps: Vec<App>,
}

impl Host {
    fn new(ip: std::net::IpAddr, gw: std::net::IpAddr, seed: u64) -> Host {
        let mut dev = QueueDev::new(1500);
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, SmolInstant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(ip.into(), 24)).unwrap();
        });
        if let (std::net::IpAddr::V4(g), true) = (gw, ip.is_ipv4()) {
            iface.routes_mut().add_default_ipv4_route(g).unwrap();
        }
        Host {
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            apps: Vec::new(),
        }
    }

    fn socket(buf: usize) -> Socket<'static> {
        let s = Socket::new(
            SocketBuffer::new(vec![0u8; buf]),
            SocketBuffer::new(vec![0u8; buf]),
        );
        // No TCP timestamps (no tsval generator): smoltcp (host side) sizes
        // segments from the peer MSS and then adds the 12-byte option, which
        // would exceed the 1500-byte MTU and be dropped by its own interface.
        s
    }

    fn app(handle: SocketHandle, tls: Option<TlsConn>, out: Vec<u8>, expect: usize) -> App {
        App {
            handle,
            tls,
            server_cfg: None,
            out,
            sent: 0,
            got: Vec::new(),
            expect,
            cipher: Vec::new(),
            closed: false,
            eof: false,
            tls_err: None,
            reset: false,
            was_open: false,
        }
    }

    /// Moves application bytes in and out of every socket; returns whether any moved.
    pub fn apps_step(&mut self) -> bool {
        let mut progress = false;
        for app in &mut self.apps {
            let s = self.sockets.get_mut::<Socket>(app.handle);
            if s.is_active() {
                app.was_open = true;
            }
            if app.was_open && s.state() == State::Closed && !app.closed && !app.eof {
                app.reset = true;
            }
            if app.was_open && s.state() == State::Listen {
                continue;
            }
            if !s.is_active() && s.recv_queue() == 0 {
                continue;
            }
            if app.tls.is_none() {
                if let Some(cfg) = &app.server_cfg {
                    app.tls = Some(rustls::ServerConnection::new(cfg.clone()).unwrap().into());
                }
            }
            // In.
            let mut buf = [0u8; 16 * 1024];
            loop {
                match s.recv_slice(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        progress = true;
                        match app.tls.as_mut() {
                            Some(c) => {
                                let mut rd = &buf[..n];
                                // After a fatal error rustls must not be fed
                                // again (it asserts so); the rest is dropped.
                                while !rd.is_empty() && app.tls_err.is_none() {
                                    if c.read_tls(&mut rd).is_err() {
                                        break;
                                    }
                                    if let Err(e) = c.process_new_packets() {
                                        app.tls_err.get_or_insert(e);
                                        break;
                                    }
                                    read_plain(c, &mut app.got, &mut app.eof);
                                }
                            }
                            None => app.got.extend_from_slice(&buf[..n]),
                        }
                    }
                    Err(smoltcp::socket::tcp::RecvError::Finished) => {
                        if !app.eof {
                            progress = true;
                        }
                        app.eof = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            // Out.
            if let Some(c) = app.tls.as_mut() {
                if app.tls_err.is_none() && app.cipher.len() < 32 * 1024 && app.sent < app.out.len()
                {
                    let end = (app.sent + 16 * 1024).min(app.out.len());
                    let n = c.writer().write(&app.out[app.sent..end]).unwrap_or(0);
                    app.sent += n;
                    progress |= n > 0;
                }
                while c.wants_write() {
                    if c.write_tls(&mut app.cipher).unwrap_or(0) == 0 {
                        break;
                    }
                }
            } else if app.sent < app.out.len() {
                app.cipher.extend_from_slice(&app.out[app.sent..]);
                app.sent = app.out.len();
            }
            if !app.cipher.is_empty() && s.may_send() {
                let n = s.send_slice(&app.cipher).unwrap_or(0);
                app.cipher.drain(..n);
                progress |= n > 0;
            }
            let handshaking = app.tls.as_ref().is_some_and(|c| c.is_handshaking());
            let done_sending = app.sent >= app.out.len() && app.cipher.is_empty();
            let want_close = app.tls_err.is_some()
                || (done_sending && !handshaking && (app.got.len() >= app.expect || app.eof));
            if want_close && !app.closed && s.may_send() {
                if let Some(c) = app.tls.as_mut() {
                    if app.tls_err.is_none() {
                        c.send_close_notify();
                    }
                    while c.wants_write() {
                        if c.write_tls(&mut app.cipher).unwrap_or(0) == 0 {
                            break;
                        }
                    }
                    let n = s.send_slice(&app.cipher).unwrap_or(0);
                    app.cipher.drain(..n);
                    if !app.cipher.is_empty() {
                        continue;
                    }
                }
                s.close();
                app.closed = true;
                progress = true;
            }
        }
        progress
    }

    pub fn debug(&self) -> String {
        self.apps
            .iter()
            .map(|a| {
                let s = self.sockets.get::<Socket>(a.handle);
                let d = format!("{s:?}");
                let d = d
                    .find("timeout:")
                    .map(|i| d[i..].chars().take(900).collect::<String>())
                    .unwrap_or_default();
                format!(
                    "[{} {} sq={} rq={} win={} cipher={}]",
                    d,
                    s.state(),
                    s.send_queue(),
                    s.recv_queue(),
                    s.recv_capacity(),
                    a.cipher.len()
                )
            })
            .collect()
    }

    /// Runs the host's TCP/IP stack: receives `dev.rx`, sends into `dev.tx`.
    pub fn poll(&mut self, t: SmolInstant) {
        self.iface.poll(t, &mut self.dev, &mut self.sockets);
    }

    /// When the host's stack next needs a `poll` (retransmissions, delayed ACKs).
    pub fn poll_at(&mut self, t: SmolInstant) -> Option<SmolInstant> {
        self.iface.poll_at(t, &self.sockets)
    }

    /// The certificate chain the TLS peer presented.
    pub fn peer_chain(&self, app: usize) -> Vec<CertificateDer<'static>> {
        self.apps[app]
            .tls
            .as_ref()
            .and_then(|c| c.peer_certificates())
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default()
    }
}

fn read_plain(c: &mut TlsConn, into: &mut Vec<u8>, eof: &mut bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.reader().read(&mut buf) {
            Ok(0) => {
                *eof = true;
                return;
            }
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(_) => return,
        }
    }
}

/// Common name of a DER certificate's issuer.
pub fn issuer_cn(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    let cn = c
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_string();
    cn
}

/// Deterministic pseudo-random bytes.
pub fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

// ------------------------------------------------------------------ the lab

pub const CLIENT: &str = "192.0.2.10:40000";
pub const SERVER: &str = "203.0.113.5:443";
pub const SNI: &str = "origin.test";

/// PKI, services and settings shared by the connections of one test.
pub struct Lab {
    pub origin_ca: Ca,
    pub minter: Arc<TestMinter>,
    pub seen: Arc<Mutex<Seen>>,
    pub log: Arc<MemLog>,
    pub bypass: Arc<BypassCache>,
    pub flow_ids: Arc<AtomicU64>,
    /// Origin server configs by (tls12_only, require_client_auth), made once.
    server_cfgs: Mutex<HashMap<(bool, bool), Arc<ServerConfig>>>,
}

/// What the client host runs.
pub enum ClientApp {
    /// A rustls client trusting these CAs, offering these versions.
    Tls {
        trust_policy_ca: bool,
        tls12_only: bool,
        client_auth: bool,
    },
    /// Raw bytes.
    Raw,
}

/// What the server host runs.
pub enum ServerApp {
    Tls {
        tls12_only: bool,
        require_client_auth: bool,
    },
    Raw,
    /// TLS with a certificate from a CA nobody trusts.
    Untrusted,
    /// Nothing listens: the host refuses.
    Closed,
}

pub struct Net {
    pub t0: Instant,
    pub now: Instant,
    pub client: Host,
    pub server: Host,
    pub flow: Connection,
    pub packets: usize,
    /// Real (not virtual) time spent inside the flow's methods.
    pub flow_time: Duration,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    pub fn new() -> Lab {
        Lab {
            origin_ca: Ca::new("Origin Root CA"),
            minter: Arc::new(TestMinter::new()),
            seen: Arc::new(Mutex::new(Seen::default())),
            log: Arc::new(MemLog::default()),
            bypass: Arc::new(BypassCache::new(BypassConfig {
                pinning_clients: 2,
                ..BypassConfig::default()
            })),
            flow_ids: Arc::new(AtomicU64::new(1)),
            server_cfgs: Mutex::new(HashMap::new()),
        }
    }

    /// A context with one policy `pol-1` using `policy`.
    pub fn ctx(&self, policy: TlsPolicy, inspector: Arc<dyn Inspector>) -> Arc<ConnCtx> {
        let mut policies = HashMap::new();
        policies.insert(Arc::<str>::from("pol-1"), Arc::new(policy));
        Arc::new(ConnCtx {
            minter: self.minter.clone(),
            inspector,
            log: self.log.clone(),
            bypass: self.bypass.clone(),
            upstream: UpstreamTls::new(roots(&[&self.origin_ca]), InvalidCertPolicy::Untrusted)
                .unwrap(),
            policies,
            flow_ids: self.flow_ids.clone(),
            tcp: FlowConfig::default(),
            hello_timeout: ConnCtx::DEFAULT_HELLO_TIMEOUT,
        })
    }

    /// The origin's TLS config: a leaf for [`SNI`] from the origin root.
    pub fn server_cfg(&self, tls12_only: bool, require_client_auth: bool) -> Arc<ServerConfig> {
        let mut cache = self.server_cfgs.lock().unwrap();
        cache
            .entry((tls12_only, require_client_auth))
            .or_insert_with(|| {
                let (cert, key) = self
                    .origin_ca
                    .leaf(&[SNI], ExtendedKeyUsagePurpose::ServerAuth);
                let b = if tls12_only {
                    ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
                } else {
                    ServerConfig::builder()
                };
                let b = if require_client_auth {
                    let v =
                        rustls::server::WebPkiClientVerifier::builder(roots(&[&self.origin_ca]))
                            .build()
                            .unwrap();
                    b.with_client_cert_verifier(v)
                } else {
                    b.with_no_client_auth()
                };
                let mut c = b.with_single_cert(vec![cert], key).unwrap();
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(c)
            })
            .clone()
    }

    pub fn pass_inspector(&self) -> Arc<dyn Inspector> {
        Arc::new(PassInspector(self.seen.clone()))
    }

    /// Client and server hosts with their applications, and the flow
    /// between them, created from the client's SYN.
    pub fn net(
        &self,
        ctx: Arc<ConnCtx>,
        client_app: ClientApp,
        server_app: ServerApp,
        up: Vec<u8>,
        down: Vec<u8>,
    ) -> Net {
        let (mut client, server) = self.hosts(client_app, server_app, up, down);
        let t0 = Instant::now();
        // The client's SYN starts the flow.
        client.poll(SmolInstant::ZERO);
        let syn = client.dev.tx.remove(0);
        let scope = ScopeMatch {
            policy_id: Arc::from("pol-1"),
            scope_id: Arc::from("scope-a"),
        };
        let flow = Connection::new(ctx, &scope, &syn, false, 0x1234_5678, t0, SystemTime::now())
            .expect("flow from SYN");
        Net {
            t0,
            now: t0,
            client,
            server,
            flow,
            packets: 0,
            flow_time: Duration::ZERO,
        }
    }

    /// The client host ([`CLIENT`], its application connecting to
    /// [`SERVER`] and sending `up`) and the server host (listening, answering
    /// `down`), not polled yet.
    pub fn hosts(
        &self,
        client_app: ClientApp,
        server_app: ServerApp,
        up: Vec<u8>,
        down: Vec<u8>,
    ) -> (Host, Host) {
        let client_addr: SocketAddr = CLIENT.parse().unwrap();
        let server_addr: SocketAddr = SERVER.parse().unwrap();
        let mut client = Host::new(client_addr.ip(), "192.0.2.1".parse().unwrap(), 11);
        let mut server = Host::new(server_addr.ip(), "203.0.113.1".parse().unwrap(), 12);
        let (up_len, down_len) = (up.len(), down.len());

        // Server.
        if !matches!(server_app, ServerApp::Closed) {
            let cfg = match &server_app {
                ServerApp::Tls {
                    tls12_only,
                    require_client_auth,
                } => Some(self.server_cfg(*tls12_only, *require_client_auth)),
                ServerApp::Untrusted => {
                    let rogue = Ca::new("Rogue CA");
                    let (cert, key) = rogue.leaf(&[SNI], ExtendedKeyUsagePurpose::ServerAuth);
                    let c = ServerConfig::builder()
                        .with_no_client_auth()
                        .with_single_cert(vec![cert], key)
                        .unwrap();
                    Some(Arc::new(c))
                }
                _ => None,
            };
            // Two listeners: a replayed connection arrives on a fresh one.
            for _ in 0..2 {
                let mut s = Host::socket(256 * 1024);
                s.listen(server_addr).unwrap();
                let h = server.sockets.add(s);
                let mut app = Host::app(h, None, down.clone(), up_len);
                app.server_cfg = cfg.clone();
                server.apps.push(app);
            }
        }

        // Client.
        let tls = match client_app {
            ClientApp::Tls {
                trust_policy_ca,
                tls12_only,
                client_auth,
            } => {
                let mut trusted = vec![&self.origin_ca];
                if trust_policy_ca {
                    trusted.push(&self.minter.policy);
                }
                let b = if tls12_only {
                    ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
                } else {
                    ClientConfig::builder()
                };
                let b = b.with_root_certificates(roots(&trusted));
                let mut c = if client_auth {
                    let (cert, key) = self
                        .origin_ca
                        .leaf(&["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
                    b.with_client_auth_cert(vec![cert], key).unwrap()
                } else {
                    b.with_no_client_auth()
                };
                c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                let name = ServerName::try_from(SNI).unwrap();
                Some(TlsConn::from(
                    rustls::ClientConnection::new(Arc::new(c), name).unwrap(),
                ))
            }
            ClientApp::Raw => None,
        };
        let mut s = Host::socket(256 * 1024);
        let cx = client.iface.context();
        s.connect(cx, server_addr, client_addr).unwrap();
        let h = client.sockets.add(s);
        client.apps.push(Host::app(h, tls, up, down_len));
        (client, server)
    }
}

/// `now` as the hosts' clock, which starts at `t0`.
pub fn smol(t0: Instant, now: Instant) -> SmolInstant {
    SmolInstant::from_micros((now - t0).as_micros() as i64)
}

impl Net {
    /// Runs the network until nothing moves, or `limit` of virtual time passes.
    pub fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        loop {
            let mut progress = false;
            let t = smol(self.t0, self.now);
            progress |= self.client.apps_step();
            progress |= self.server.apps_step();
            self.client.poll(t);
            self.server.poll(t);
            let started = Instant::now();
            for p in std::mem::take(&mut self.client.dev.tx) {
                self.flow.handle_packet(Leg::Client, &p, self.now);
                self.packets += 1;
                progress = true;
            }
            for p in std::mem::take(&mut self.server.dev.tx) {
                self.flow.handle_packet(Leg::Server, &p, self.now);
                self.packets += 1;
                progress = true;
            }
            while let Some((side, p)) = self.flow.poll_transmit(self.now) {
                progress = true;
                self.packets += 1;
                match side {
                    Leg::Client => self.client.dev.rx.push_back(p),
                    Leg::Server => self.server.dev.rx.push_back(p),
                }
            }
            self.flow_time += started.elapsed();
            if progress {
                continue;
            }
            // Let the applications see what the last poll delivered.
            let t = smol(self.t0, self.now);
            self.client.poll(t);
            self.server.poll(t);
            if self.client.apps_step() | self.server.apps_step() {
                continue;
            }
            // Quiet: advance virtual time to the next timer.
            let mut next: Option<Instant> = self.flow.poll_timeout();
            for host in [&mut self.client, &mut self.server] {
                if let Some(at) = host.poll_at(t) {
                    let at = self.t0 + Duration::from_micros(at.total_micros() as u64);
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            let Some(next) = next else { return };
            let next = next.max(self.now + Duration::from_micros(1));
            if next > end {
                return;
            }
            self.now = next;
            let started = Instant::now();
            self.flow.handle_timeout(self.now);
            self.flow_time += started.elapsed();
        }
    }

    /// Runs, then finishes the flow.
    pub fn run_and_finish(&mut self, limit: Duration) -> FlowRecord {
        self.run(limit);
        self.flow.finish(self.now)
    }

    pub fn client_app(&self) -> &App {
        &self.client.apps[0]
    }

    /// The server connection that carried the most data.
    pub fn server_app(&self) -> &App {
        self.server
            .apps
            .iter()
            .max_by_key(|a| (a.got.len() + a.sent, a.was_open))
            .unwrap_or(&self.server.apps[0])
    }
}
