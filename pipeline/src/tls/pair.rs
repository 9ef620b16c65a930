//! The two-leg TLS state machine of an inspected connection.
//!
//! [`TlsPair`] sits between the client's TCP leg and the server's TCP leg
//! and speaks TLS on both: a rustls client toward the server and, once the
//! server has shown its certificate, a rustls server toward the client with a
//! chain forged by the [`CertMinter`]. Plaintext in between flows through a
//! [`FlowInspector`].
//!
//! It is sans-IO in the quinn style: no sockets, no clock, no threads. Bytes
//! and end-of-stream from the legs go in through `handle_*`; bytes to send
//! and events come out through `poll_*`. The wall-clock time used to check
//! certificate validity is passed to [`TlsPair::new`].
//!
//! # Call order
//!
//! 1. The worker peeks the ClientHello ([`crate::tls::client_hello::parse`]),
//!    takes the [`crate::tls::decision::decide`] for it and, for
//!    `Action::Inspect`, connects the server leg and calls [`TlsPair::new`]
//!    with every byte the client has sent so far. Nothing has been sent to
//!    the client yet.
//! 2. After `new` and after every `handle_*` call, drain in this order:
//!    [`TlsPair::poll_event`] until `None`, then
//!    [`TlsPair::poll_to_server`] and [`TlsPair::poll_to_client`], and
//!    write what they return to the respective TCP leg; or, without that
//!    copy, let [`TlsPair::write_to_server`] / [`TlsPair::write_to_client`]
//!    fill the free space of the leg's send buffer, and leave the rest in
//!    rustls ([`TlsPair::wants_write_to_server`] says whether any is left).
//! 3. Feed bytes from the server with [`TlsPair::handle_server_bytes`] and
//!    from the client with [`TlsPair::handle_client_bytes`]; a FIN from a
//!    leg with [`TlsPair::handle_server_eof`] /
//!    [`TlsPair::handle_client_eof`].
//! 4. Events tell the worker what to do with the TCP legs:
//!    * [`Event::Established`]: both handshakes done, relaying.
//!    * [`Event::BypassAndReplay`]: the server cannot be intercepted. Put the
//!      (SNI, destination) into the bypass cache, drop the server leg, open a
//!      fresh one, write `replay` (the client's bytes so far, ClientHello
//!      included) to it and relay the flow as pass. The client has not seen
//!      a byte from us, so it cannot tell.
//!    * [`Event::ClientRejected`]: the client refused our verified chain
//!      (pinning): report it to the bypass cache and close both legs.
//!    * [`Event::Blocked`]: the upstream certificate failed verification and
//!      `invalid_certificate = "block"`: an alert is queued for the client;
//!      send it, then close both legs.
//!    * [`Event::CloseServer`] / [`Event::CloseClient`]: after sending what
//!      is queued for that leg, shut down its write side (FIN).
//!    * [`Event::Finished`]: both directions are closed.
//!    * [`Event::Reset`] and [`Event::Failed`]: send what is queued, then
//!      reset both legs.
//!
//! Every output is produced in response to an input, so the worker applies
//! backpressure simply by not feeding a leg while the opposite leg's send
//! buffer is full.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{Acceptor, NoServerSessionStorage};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, Error as TlsError, ServerConfig,
    ServerConnection, SupportedProtocolVersion,
};

use crate::api::{
    CertMinter, ConnAction, Direction, Emit, FlowInspector, FlowMeta, Inspector, LeafKeyType,
    MintError, MintRequest, TlsInfo, UpstreamCertInfo,
};
use crate::tls::bypass::BypassReason;
use crate::tls::client_hello::{version_name, ClientHello};
pub use crate::tls::rustls_parts::UpstreamTls;
use crate::tls::rustls_parts::{ClientAuthRecorder, FixedCert, FixedTime, RecordingVerifier};

/// What to do when the upstream certificate does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidCertPolicy {
    /// Forge with the separate untrusted issuer, so the client fails exactly
    /// as it would have without the appliance.
    #[default]
    Untrusted,
    /// Refuse the connection with a TLS alert.
    Block,
}

/// Most bytes held from the client while the server leg is being set up.
///
/// A client sends only its hello (and perhaps a ChangeCipherSpec) before
/// the server answers; more than this is refused rather than buffered.
pub const MAX_EARLY_CLIENT_BYTES: usize = 64 * 1024;

/// Most bytes held from the server while the client leg is handshaking.
pub const MAX_EARLY_SERVER_BYTES: usize = 256 * 1024;

/// Why an interception failed, and on which leg.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsPairError {
    /// TLS failure on the leg toward the server.
    #[error("server leg: {0}")]
    ServerLeg(TlsError),
    /// TLS failure on the leg toward the client.
    #[error("client leg: {0}")]
    ClientLeg(TlsError),
    /// The server closed the connection before its handshake completed.
    #[error("server leg: the server closed during the handshake")]
    ServerClosed,
    /// The client closed the connection before its handshake completed.
    #[error("client leg: the client closed during the handshake")]
    ClientClosed,
    /// The client sent more than [`MAX_EARLY_CLIENT_BYTES`] before the
    /// server leg was up.
    #[error("client leg: more than {MAX_EARLY_CLIENT_BYTES} bytes before the server answered")]
    ClientOverrun,
    /// The server sent more than [`MAX_EARLY_SERVER_BYTES`] before the
    /// client leg was up.
    #[error("server leg: more than {MAX_EARLY_SERVER_BYTES} bytes before the client leg was up")]
    ServerOverrun,
    /// The minter could not forge a chain.
    #[error("internal: forging the certificate chain: {0}")]
    Mint(#[from] MintError),
    /// A configuration the state machine built was refused by rustls.
    #[error("internal: {0}")]
    Config(TlsError),
}

/// Something the worker must act on; see the module docs for what each means.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Both legs completed their handshakes; plaintext is being relayed.
    Established,
    /// Pass this flow instead: bypass-cache the pair and replay `replay` on
    /// a fresh server leg.
    BypassAndReplay {
        /// Why the server cannot be intercepted.
        reason: BypassReason,
        /// Every byte the client has sent so far, ClientHello first.
        replay: Vec<u8>,
    },
    /// The client refused our chain although the upstream one verified.
    ClientRejected {
        /// The alert the client sent, or `None` when it just closed.
        alert: Option<AlertDescription>,
    },
    /// The upstream certificate failed verification under `block`.
    Blocked {
        /// The verification error.
        error: String,
    },
    /// Shut down the write side of the server leg after draining it.
    CloseServer,
    /// Shut down the write side of the client leg after draining it.
    CloseClient,
    /// Both directions are closed; the flow is over.
    Finished,
    /// The inspector asked for both legs to be reset.
    Reset,
    /// The interception failed; reset both legs.
    Failed(TlsPairError),
}

/// A queued fatal alert record, for refusing a client before any handshake.
///
/// Also what the worker sends for `Action::Block` of a TLS hello.
pub fn alert_record(desc: AlertDescription) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, u8::from(desc)]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Handshaking with the server; the client's bytes are held.
    ServerHandshake,
    /// Handshaking with the client over the forged chain.
    ClientHandshake,
    /// Relaying plaintext through the inspector.
    Relay,
    /// Over: bypassed, rejected, blocked, failed or finished.
    Done,
}

/// Everything [`TlsPair::new`] needs besides the hello.
pub struct TlsPairParams {
    /// Server-leg settings shared by all connections.
    pub upstream: UpstreamTls,
    /// Forges the chain shown to the client.
    pub minter: Arc<dyn CertMinter>,
    /// Creates the plaintext inspector once both legs are up.
    pub inspector: Arc<dyn Inspector>,
    /// Identity of the flow (policy, scope, addresses).
    pub meta: FlowMeta,
    /// Whether TLS 1.3 may be used on the legs (the decision's `tls13`).
    pub tls13: bool,
    /// Wall-clock time for certificate validity checks.
    pub now: SystemTime,
}

/// The two-leg TLS state machine of one inspected connection.
pub struct TlsPair {
    phase: Phase,
    provider: Arc<CryptoProvider>,
    time: Arc<FixedTime>,
    versions: &'static [&'static SupportedProtocolVersion],
    minter: Arc<dyn CertMinter>,
    inspector_factory: Arc<dyn Inspector>,
    meta: FlowMeta,
    key_type: LeafKeyType,
    hello_len: usize,
    /// Client bytes received before the client leg exists.
    held: Vec<u8>,
    /// Server bytes received while the client leg is handshaking.
    server_held: Vec<u8>,
    server: ClientConnection,
    verifier: Arc<RecordingVerifier>,
    client_auth: Arc<ClientAuthRecorder>,
    client: Option<ServerConnection>,
    inspector: Option<Box<dyn FlowInspector>>,
    /// The inspector's output for the record being relayed; emptied after
    /// each record, its buffers kept.
    emit: Emit,
    /// Raw records for the client sent without a client-leg connection (alerts).
    raw_to_client: Vec<u8>,
    events: VecDeque<Event>,
    info: TlsInfo,
    /// We have closed toward the server (the client finished sending).
    toserver_closed: bool,
    /// We have closed toward the client (the server finished sending).
    toclient_closed: bool,
    /// The server closed while the client leg was still handshaking.
    server_eof_pending: bool,
    plaintext_toserver: u64,
    plaintext_toclient: u64,
    keylog: Option<Arc<dyn rustls::KeyLog>>,
}

impl std::fmt::Debug for TlsPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPair")
            .field("phase", &self.phase)
            .field("flow_id", &self.meta.flow_id)
            .field("info", &self.info)
            .finish()
    }
}

static TLS13_AND_12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
static TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

const PINNING_ALERTS: &[AlertDescription] = &[
    AlertDescription::UnknownCA,
    AlertDescription::BadCertificate,
    AlertDescription::CertificateUnknown,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateRevoked,
];

impl TlsPair {
    /// Starts the server leg for a hello the decision chose to inspect.
    ///
    /// `client_bytes` is everything the client has sent so far; it starts
    /// with the complete ClientHello `hello` was parsed from. The server
    /// leg's ClientHello is ready in [`TlsPair::poll_to_server`] at once.
    pub fn new(
        params: TlsPairParams,
        hello: &ClientHello,
        client_bytes: &[u8],
    ) -> Result<TlsPair, TlsPairError> {
        let TlsPairParams {
            upstream,
            minter,
            inspector,
            meta,
            tls13,
            now,
        } = params;
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let time = Arc::new(FixedTime(UnixTime::since_unix_epoch(since_epoch)));
        let versions = if tls13 { TLS13_AND_12 } else { TLS12_ONLY };
        let verifier = Arc::new(RecordingVerifier {
            inner: upstream.verifier.clone(),
            block: upstream.invalid_certificate == InvalidCertPolicy::Block,
            ignore_name: hello.sni.is_none(),
            outcome: Mutex::new(None),
        });
        let client_auth = Arc::new(ClientAuthRecorder::default());
        let mut cfg = ClientConfig::builder_with_details(upstream.provider.clone(), time.clone())
            .with_protocol_versions(versions)
            .map_err(TlsPairError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(client_auth.clone());
        let keylog = upstream.keylogs.get(&meta.policy_id).cloned();
        if let Some(k) = &keylog {
            cfg.key_log = k.clone();
        }
        cfg.alpn_protocols = hello.alpn.clone();
        // A resumed session would skip the certificate, and with it the
        // verification result and the upstream leaf the minter mirrors.
        cfg.resumption = Resumption::disabled();
        let name = match &hello.sni {
            Some(s) => ServerName::try_from(s.clone())
                .map_err(|e| TlsPairError::Config(TlsError::General(e.to_string())))?,
            // An IP address name makes rustls send no SNI, as the client did.
            None => ServerName::from(meta.dest.ip()),
        };
        let mut server =
            ClientConnection::new(Arc::new(cfg), name).map_err(TlsPairError::ServerLeg)?;
        server.set_buffer_limit(None);
        let info = TlsInfo {
            sni: hello.sni.clone(),
            ja4: Some(hello.ja4.clone()),
            ..TlsInfo::default()
        };
        let mut held = Vec::with_capacity(client_bytes.len());
        held.extend_from_slice(client_bytes);
        Ok(TlsPair {
            phase: Phase::ServerHandshake,
            provider: upstream.provider.clone(),
            time,
            versions,
            minter,
            inspector_factory: inspector,
            meta,
            key_type: hello.leaf_key_type(),
            hello_len: hello.len,
            held,
            server_held: Vec::new(),
            server,
            verifier,
            client_auth,
            client: None,
            inspector: None,
            emit: Emit::default(),
            raw_to_client: Vec::new(),
            events: VecDeque::new(),
            info,
            toserver_closed: false,
            toclient_closed: false,
            server_eof_pending: false,
            plaintext_toserver: 0,
            plaintext_toclient: 0,
            keylog,
        })
    }

    /// TLS details for the traffic log, filled in as the legs progress.
    pub fn tls_info(&self) -> &TlsInfo {
        &self.info
    }

    /// Identity of the flow, with the negotiated ALPN once established.
    pub fn meta(&self) -> &FlowMeta {
        &self.meta
    }

    /// The upstream server's chain, leaf first, once the server leg has it.
    pub fn upstream_chain(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.server.peer_certificates()
    }

    /// Whether the state machine has nothing more to do.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Plaintext bytes relayed (to the server, to the client).
    pub fn plaintext_bytes(&self) -> (u64, u64) {
        (self.plaintext_toserver, self.plaintext_toclient)
    }

    /// Verdicts the inspector raised since the last call.
    pub fn take_alerts(&mut self) -> Vec<crate::api::Alert> {
        self.inspector
            .as_mut()
            .map(|i| i.take_alerts())
            .unwrap_or_default()
    }

    /// Ends inspection and returns the inspector's summary, if it ran.
    pub fn finish(&mut self) -> Option<crate::api::InspectReport> {
        self.inspector.as_mut().map(|i| i.finish())
    }

    /// Next event for the worker, in the order they happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Appends the bytes to send to the server to `out`; returns how many.
    pub fn poll_to_server(&mut self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        while self.server.wants_write() {
            match self.server.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        out.len() - start
    }

    /// Appends the bytes to send to the client to `out`; returns how many.
    pub fn poll_to_client(&mut self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.append(&mut self.raw_to_client);
        if let Some(c) = self.client.as_mut() {
            while c.wants_write() {
                match c.write_tls(out) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        out.len() - start
    }

    /// Whether TLS bytes for the server wait to be sent.
    pub fn wants_write_to_server(&self) -> bool {
        self.server.wants_write()
    }

    /// Whether TLS bytes for the client wait to be sent.
    pub fn wants_write_to_client(&self) -> bool {
        !self.raw_to_client.is_empty() || self.client.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Writes as many of the bytes for the server as fit into `out` (the
    /// free space of the server leg's send buffer); returns how many.
    ///
    /// The same bytes [`poll_to_server`](Self::poll_to_server) would
    /// return, without an intermediate buffer.
    pub fn write_to_server(&mut self, out: &mut [u8]) -> usize {
        write_tls_into(&mut self.server, out)
    }

    /// Writes as many of the bytes for the client as fit into `out`;
    /// returns how many. See [`write_to_server`](Self::write_to_server).
    pub fn write_to_client(&mut self, out: &mut [u8]) -> usize {
        let raw = self.raw_to_client.len().min(out.len());
        if raw > 0 {
            out[..raw].copy_from_slice(&self.raw_to_client[..raw]);
            self.raw_to_client.drain(..raw);
            if !self.raw_to_client.is_empty() {
                return raw;
            }
        }
        match self.client.as_mut() {
            Some(c) => raw + write_tls_into(c, &mut out[raw..]),
            None => raw,
        }
    }

    /// Feeds bytes received from the server.
    pub fn handle_server_bytes(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.phase {
                Phase::Done => return,
                Phase::ClientHandshake => {
                    // Server data before the client leg is up (a banner,
                    // tickets) waits, bounded, so rustls' plaintext buffer
                    // cannot overflow while nobody reads it.
                    if self.server_held.len() + data.len() > MAX_EARLY_SERVER_BYTES {
                        return self.fail(TlsPairError::ServerOverrun);
                    }
                    return self.server_held.extend_from_slice(data);
                }
                Phase::ServerHandshake | Phase::Relay => {}
            }
            if let Err(e) = self.server.read_tls(&mut data) {
                let e = TlsError::General(format!("reading records: {e}"));
                return self.server_failed(e);
            }
            if let Err(e) = self.server.process_new_packets() {
                return self.server_failed(e);
            }
            self.server_progress();
        }
    }

    /// The server closed its side of the TCP connection.
    pub fn handle_server_eof(&mut self) {
        match self.phase {
            Phase::Done => return,
            // Bytes it sent may still be held: relay them once the client
            // leg is up, then the close.
            Phase::ClientHandshake => {
                self.server_eof_pending = true;
                return;
            }
            Phase::ServerHandshake | Phase::Relay => {}
        }
        // A zero-length read tells rustls the transport is at EOF.
        let _ = self.server.read_tls(&mut &[][..]);
        if let Err(e) = self.server.process_new_packets() {
            return self.server_failed(e);
        }
        match self.phase {
            Phase::ServerHandshake if self.client_auth.requested.load(Ordering::Relaxed) => {
                self.bypass(BypassReason::ClientAuth)
            }
            Phase::ServerHandshake => self.fail(TlsPairError::ServerClosed),
            Phase::Relay => {
                self.server_progress();
                self.server_eof();
            }
            Phase::ClientHandshake | Phase::Done => {}
        }
    }

    /// Feeds bytes received from the client (after those given to `new`).
    pub fn handle_client_bytes(&mut self, mut data: &[u8]) {
        match self.phase {
            Phase::Done => {}
            Phase::ServerHandshake => {
                if self.held.len() + data.len() > MAX_EARLY_CLIENT_BYTES {
                    return self.fail(TlsPairError::ClientOverrun);
                }
                self.held.extend_from_slice(data);
            }
            Phase::ClientHandshake | Phase::Relay => {
                while !data.is_empty() && self.phase != Phase::Done {
                    let Some(c) = self.client.as_mut() else {
                        return;
                    };
                    if let Err(e) = c.read_tls(&mut data) {
                        let e = TlsError::General(format!("reading records: {e}"));
                        return self.client_failed(e);
                    }
                    if let Err(e) = c.process_new_packets() {
                        return self.client_failed(e);
                    }
                    self.client_progress();
                }
            }
        }
    }

    /// The client closed its side of the TCP connection.
    pub fn handle_client_eof(&mut self) {
        match self.phase {
            Phase::Done => {}
            Phase::ServerHandshake => self.fail(TlsPairError::ClientClosed),
            Phase::ClientHandshake => self.client_rejected(None, TlsPairError::ClientClosed),
            Phase::Relay => {
                if let Some(c) = self.client.as_mut() {
                    let _ = c.read_tls(&mut &[][..]);
                    if let Err(e) = c.process_new_packets() {
                        return self.client_failed(e);
                    }
                }
                self.client_progress();
                self.client_eof();
            }
        }
    }

    fn fail(&mut self, e: TlsPairError) {
        self.phase = Phase::Done;
        self.events.push_back(Event::Failed(e));
    }

    fn bypass(&mut self, reason: BypassReason) {
        self.phase = Phase::Done;
        self.events.push_back(Event::BypassAndReplay {
            reason,
            replay: std::mem::take(&mut self.held),
        });
    }

    fn server_failed(&mut self, e: TlsError) {
        if self.phase != Phase::ServerHandshake {
            return self.fail(TlsPairError::ServerLeg(e));
        }
        if self.client_auth.requested.load(Ordering::Relaxed) {
            return self.bypass(BypassReason::ClientAuth);
        }
        let verify_failed = matches!(
            &*self
                .verifier
                .outcome
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            Some(Err(_))
        );
        if verify_failed && self.verifier.block {
            self.record_upstream_cert();
            self.raw_to_client
                .extend_from_slice(&alert_record(AlertDescription::AccessDenied));
            self.phase = Phase::Done;
            self.events.push_back(Event::Blocked {
                error: e.to_string(),
            });
            return;
        }
        match &e {
            TlsError::PeerIncompatible(_)
            | TlsError::AlertReceived(
                AlertDescription::ProtocolVersion
                | AlertDescription::HandshakeFailure
                | AlertDescription::InsufficientSecurity,
            ) => self.bypass(BypassReason::UnsupportedServer),
            TlsError::AlertReceived(AlertDescription::CertificateRequired) => {
                self.bypass(BypassReason::ClientAuth)
            }
            _ => self.fail(TlsPairError::ServerLeg(e)),
        }
    }

    fn client_failed(&mut self, e: TlsError) {
        if self.phase == Phase::ClientHandshake {
            if let TlsError::AlertReceived(a) = &e {
                if PINNING_ALERTS.contains(a) {
                    let a = *a;
                    return self.client_rejected(Some(a), TlsPairError::ClientLeg(e));
                }
            }
        }
        self.fail(TlsPairError::ClientLeg(e))
    }

    /// The client refused our chain: pinning when the upstream verified,
    /// the intended outcome of forging with the untrusted issuer otherwise.
    fn client_rejected(&mut self, alert: Option<AlertDescription>, e: TlsPairError) {
        let verified = self.info.upstream_cert.as_ref().is_some_and(|c| c.verified);
        self.phase = Phase::Done;
        self.events.push_back(if verified {
            Event::ClientRejected { alert }
        } else {
            Event::Failed(e)
        });
    }

    fn record_upstream_cert(&mut self) {
        let outcome = self
            .verifier
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut info = self
            .server
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|leaf| describe_cert(leaf))
            .unwrap_or_default();
        match outcome {
            Some(Ok(())) => info.verified = true,
            Some(Err(e)) => info.error = Some(e.to_string()),
            None => info.error = Some("not verified".into()),
        }
        self.info.upstream_version = self
            .server
            .protocol_version()
            .map(|v| version_name(u16::from(v)));
        self.info.upstream_cert = Some(info);
    }

    fn server_progress(&mut self) {
        match self.phase {
            Phase::ServerHandshake => {
                if self.client_auth.requested.load(Ordering::Relaxed) {
                    return self.bypass(BypassReason::ClientAuth);
                }
                if !self.server.is_handshaking() {
                    self.start_client_leg();
                }
            }
            Phase::Relay => self.relay(Direction::ToClient),
            Phase::ClientHandshake | Phase::Done => {}
        }
    }

    fn client_progress(&mut self) {
        match self.phase {
            Phase::ClientHandshake => {
                if self.client.as_ref().is_some_and(|c| !c.is_handshaking()) {
                    self.established();
                }
            }
            Phase::Relay => self.relay(Direction::ToServer),
            Phase::ServerHandshake | Phase::Done => {}
        }
    }

    /// The server leg is up: forge the chain and answer the client's hello.
    fn start_client_leg(&mut self) {
        self.record_upstream_cert();
        let Some(leaf) = self
            .server
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
        else {
            return self.fail(TlsPairError::ServerLeg(TlsError::NoCertificatesPresented));
        };
        let verified = self.info.upstream_cert.as_ref().is_some_and(|c| c.verified);
        let req = MintRequest {
            policy_id: &self.meta.policy_id,
            sni: self.info.sni.as_deref(),
            upstream_leaf: &leaf,
            upstream_verified: verified,
            key_type: self.key_type,
        };
        let chain = match self.minter.mint(&req) {
            Ok(c) => c,
            Err(e) => {
                self.raw_to_client
                    .extend_from_slice(&alert_record(AlertDescription::InternalError));
                return self.fail(TlsPairError::Mint(e));
            }
        };
        let cfg = match ServerConfig::builder_with_details(self.provider.clone(), self.time.clone())
            .with_protocol_versions(self.versions)
        {
            Ok(b) => b,
            Err(e) => return self.fail(TlsPairError::Config(e)),
        };
        let mut cfg = cfg
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(FixedCert(chain)));
        // Mirror the server's choice so the client speaks what the server does.
        cfg.alpn_protocols = self
            .server
            .alpn_protocol()
            .map(|p| vec![p.to_vec()])
            .unwrap_or_default();
        cfg.ignore_client_order = true;
        // Each connection gets its own config, so tickets could never be
        // redeemed: don't issue them.
        cfg.send_tls13_tickets = 0;
        cfg.session_storage = Arc::new(NoServerSessionStorage {});
        if let Some(k) = &self.keylog {
            cfg.key_log = k.clone();
        }

        let mut acceptor = Acceptor::default();
        let held = std::mem::take(&mut self.held);
        let (hello, rest) = held.split_at(self.hello_len.min(held.len()));
        let mut rd = hello;
        let accepted = loop {
            if let Err(e) = acceptor.read_tls(&mut rd) {
                return self.fail(TlsPairError::ClientLeg(TlsError::General(e.to_string())));
            }
            match acceptor.accept() {
                Ok(Some(a)) => break a,
                Ok(None) if rd.is_empty() => {
                    let e = TlsError::General("ClientHello incomplete for the acceptor".into());
                    return self.fail(TlsPairError::ClientLeg(e));
                }
                Ok(None) => {}
                Err((e, mut alert)) => {
                    let _ = alert.write_all(&mut self.raw_to_client);
                    return self.fail(TlsPairError::ClientLeg(e));
                }
            }
        };
        let mut conn = match accepted.into_connection(Arc::new(cfg)) {
            Ok(c) => c,
            Err((e, mut alert)) => {
                let _ = alert.write_all(&mut self.raw_to_client);
                return self.fail(TlsPairError::ClientLeg(e));
            }
        };
        conn.set_buffer_limit(None);
        self.client = Some(conn);
        self.phase = Phase::ClientHandshake;
        let rest = rest.to_vec();
        self.handle_client_bytes(&rest);
    }

    /// Both legs are up: record the client leg and start relaying.
    fn established(&mut self) {
        let Some(c) = self.client.as_ref() else {
            return;
        };
        self.info.version = c.protocol_version().map(|v| version_name(u16::from(v)));
        self.info.cipher = c
            .negotiated_cipher_suite()
            .map(|s| s.suite().as_str().unwrap_or("unknown").to_string());
        let alpn = c.alpn_protocol().map(<[u8]>::to_vec);
        self.info.alpn = alpn
            .as_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        self.meta.alpn = alpn.map(Arc::from);
        if self.meta.sni.is_none() {
            self.meta.sni = self.info.sni.as_deref().map(Arc::from);
        }
        self.inspector = Some(self.inspector_factory.new_flow(&self.meta));
        self.phase = Phase::Relay;
        self.events.push_back(Event::Established);
        // Either side may have sent application data already.
        self.relay(Direction::ToServer);
        self.relay(Direction::ToClient);
        let held = std::mem::take(&mut self.server_held);
        self.handle_server_bytes(&held);
        if self.server_eof_pending {
            self.server_eof_pending = false;
            self.handle_server_eof();
        }
    }

    /// Moves decrypted plaintext travelling in `dir` through the inspector.
    ///
    /// The inspector reads each decrypted record where rustls keeps it
    /// (`BufRead::fill_buf`), so a record is not copied on its way to the
    /// inspector, and its output goes through one [`Emit`] reused for the
    /// life of the connection, so the pass-through path allocates nothing
    /// per record.
    fn relay(&mut self, dir: Direction) {
        loop {
            if self.phase != Phase::Relay {
                return;
            }
            let mut reader = match dir {
                Direction::ToServer => match self.client.as_mut() {
                    Some(c) => c.reader(),
                    None => return,
                },
                Direction::ToClient => self.server.reader(),
            };
            let read = match reader.fill_buf() {
                // Ok(empty): close_notify received.
                Ok(chunk) if !chunk.is_empty() => {
                    if let Some(i) = self.inspector.as_mut() {
                        i.on_data(dir, chunk, &mut self.emit);
                    }
                    Ok(chunk.len())
                }
                other => other.map(<[u8]>::len),
            };
            match read {
                Ok(0) => {
                    return match dir {
                        Direction::ToServer => self.client_eof(),
                        Direction::ToClient => self.server_eof(),
                    };
                }
                Ok(n) => {
                    reader.consume(n);
                    match dir {
                        Direction::ToServer => self.plaintext_toserver += n as u64,
                        Direction::ToClient => self.plaintext_toclient += n as u64,
                    }
                    self.apply();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // UnexpectedEof: the transport closed without close_notify.
                Err(_) => {
                    return match dir {
                        Direction::ToServer => self.client_eof(),
                        Direction::ToClient => self.server_eof(),
                    };
                }
            }
        }
    }

    /// Acts on what the inspector put into `self.emit`, then empties it
    /// (keeping its buffers for the next record).
    fn apply(&mut self) {
        let emit = &mut self.emit;
        if !emit.to_server.is_empty() && !self.toserver_closed {
            // Unlimited buffer (set in new), so the write is never short.
            let _ = self.server.writer().write_all(&emit.to_server);
        }
        if !emit.to_client.is_empty() && !self.toclient_closed {
            if let Some(c) = self.client.as_mut() {
                let _ = c.writer().write_all(&emit.to_client);
            }
        }
        emit.to_server.clear();
        emit.to_client.clear();
        let action = std::mem::take(&mut emit.action);
        match action {
            ConnAction::Continue => {}
            ConnAction::Close => {
                self.close_toward_server();
                self.close_toward_client();
            }
            ConnAction::Reset => {
                self.phase = Phase::Done;
                self.events.push_back(Event::Reset);
            }
        }
    }

    /// The client finished sending: flush the inspector and close toward the server.
    fn client_eof(&mut self) {
        if self.toserver_closed || self.phase != Phase::Relay {
            return;
        }
        if let Some(i) = self.inspector.as_mut() {
            i.on_eof(Direction::ToServer, &mut self.emit);
        }
        self.apply();
        self.close_toward_server();
    }

    /// The server finished sending: flush the inspector and close toward the client.
    fn server_eof(&mut self) {
        if self.toclient_closed || self.phase != Phase::Relay {
            return;
        }
        if let Some(i) = self.inspector.as_mut() {
            i.on_eof(Direction::ToClient, &mut self.emit);
        }
        self.apply();
        self.close_toward_client();
    }

    fn close_toward_server(&mut self) {
        if self.toserver_closed {
            return;
        }
        self.toserver_closed = true;
        self.server.send_close_notify();
        self.events.push_back(Event::CloseServer);
        self.maybe_finished();
    }

    fn close_toward_client(&mut self) {
        if self.toclient_closed {
            return;
        }
        self.toclient_closed = true;
        if let Some(c) = self.client.as_mut() {
            c.send_close_notify();
        }
        self.events.push_back(Event::CloseClient);
        self.maybe_finished();
    }

    fn maybe_finished(&mut self) {
        if self.toserver_closed && self.toclient_closed && self.phase == Phase::Relay {
            self.phase = Phase::Done;
            self.events.push_back(Event::Finished);
        }
    }
}

/// Moves `conn`'s queued TLS records into `out` as far as they fit.
fn write_tls_into<D>(conn: &mut rustls::ConnectionCommon<D>, out: &mut [u8]) -> usize {
    let mut n = 0;
    while n < out.len() && conn.wants_write() {
        match conn.write_tls(&mut &mut out[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// Subject, issuer, validity, serial and fingerprint of a DER certificate, for the log.
fn describe_cert(der: &CertificateDer<'_>) -> UpstreamCertInfo {
    let rfc3339 = |ts: i64| {
        time::OffsetDateTime::from_unix_timestamp(ts)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    };
    let hex = |bytes: &[u8], upper: bool| {
        let parts: Vec<String> = bytes
            .iter()
            .map(|b| {
                if upper {
                    format!("{b:02X}")
                } else {
                    format!("{b:02x}")
                }
            })
            .collect();
        parts.join(":")
    };
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => {
            let sha1 = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
                der.as_ref(),
            );
            UpstreamCertInfo {
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                not_after: rfc3339(cert.validity().not_after.timestamp()),
                not_before: rfc3339(cert.validity().not_before.timestamp()),
                serial: hex(cert.raw_serial(), true),
                fingerprint: hex(sha1.as_ref(), false),
                verified: false,
                error: None,
            }
        }
        Err(e) => UpstreamCertInfo {
            error: Some(format!("unparsable certificate: {e}")),
            ..UpstreamCertInfo::default()
        },
    }
}

#[cfg(test)]
#[path = "pair_tests.rs"]
mod tests;
