//! The traits the control plane implements for the data plane.
//!
//! They are kept deliberately narrow: the data plane hands over facts it has
//! observed (a ClientHello, an upstream certificate, plaintext bytes, a closed
//! flow) and gets back data (a certificate chain, bytes to forward, nothing).
//! No trait here does I/O on behalf of the data plane, which keeps the worker
//! loop the only place that touches sockets and the clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use crate::reason::Reason;

/// Which key type the forged leaf must carry.
///
/// ECDSA P-256 is the default; RSA-2048 is used only when the ClientHello
/// offers no ECDSA signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeafKeyType {
    /// ECDSA over P-256 with SHA-256.
    EcdsaP256,
    /// RSA with a 2048-bit modulus, PKCS#1 v1.5 / PSS with SHA-256.
    Rsa2048,
}

/// Everything the minter needs to forge a leaf for one connection.
#[derive(Debug, Clone)]
pub struct MintRequest<'a> {
    /// Id of the policy whose CA signs the leaf.
    pub policy_id: &'a str,
    /// The server name the client asked for, if any.
    pub sni: Option<&'a str>,
    /// The upstream server's leaf certificate, as received on the server leg.
    pub upstream_leaf: &'a CertificateDer<'a>,
    /// Whether the upstream chain verified against the configured roots.
    /// When false the leaf is issued by the separate untrusted issuer, so the
    /// client fails the way it would have without the appliance.
    pub upstream_verified: bool,
    /// Key type of the forged leaf.
    pub key_type: LeafKeyType,
}

/// Why a forged chain could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The request names a policy the minter has no CA for.
    #[error("no CA is loaded for policy {0:?}")]
    UnknownPolicy(String),
    /// The upstream certificate could not be parsed.
    #[error("upstream certificate is malformed: {0}")]
    BadUpstreamCertificate(String),
    /// Signing or key handling failed inside the minter.
    #[error("minting failed: {0}")]
    Internal(String),
}

/// Forges certificate chains for intercepted connections.
pub trait CertMinter: Send + Sync {
    /// Returns the chain (leaf first, sub-CAs after, never the root) and the
    /// leaf's private key for the server leg toward the client.
    fn mint(&self, req: &MintRequest<'_>) -> Result<Arc<CertifiedKey>, MintError>;
}

/// The direction plaintext travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client toward the server (requests).
    ToServer,
    /// From the server toward the client (responses).
    ToClient,
}

/// Identity of an intercepted or logged flow.
#[derive(Debug, Clone)]
pub struct FlowMeta {
    /// Appliance-unique flow id.
    pub flow_id: u64,
    /// Client address and port.
    pub src: SocketAddr,
    /// Server address and port.
    pub dest: SocketAddr,
    /// Policy that selected the flow.
    pub policy_id: Arc<str>,
    /// Scope within the policy that selected the flow.
    pub scope_id: Arc<str>,
    /// SNI of the ClientHello, when known.
    pub sni: Option<Arc<str>>,
    /// Negotiated ALPN toward the client, when known.
    pub alpn: Option<Arc<[u8]>>,
    /// The GENEVE tunnel the flow came through (`mode = "geneve"`).
    pub tunnel: Option<TunnelInfo>,
}

/// The tunnel of a flow seen through a gateway load balancer, so that a
/// fleet's logs can be joined with the load balancer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelInfo {
    /// The GENEVE virtual network identifier.
    pub vni: u32,
    /// The load balancer's (outer source) address.
    pub peer: std::net::IpAddr,
}

/// What the inspector wants done with the connection as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnAction {
    /// Keep relaying.
    #[default]
    Continue,
    /// Close both legs gracefully after the queued output is sent.
    Close,
    /// Reset both legs at once (IPS drop/reject of a connection).
    Reset,
}

/// Output of an inspector step: bytes to forward in each direction.
#[derive(Debug, Default)]
pub struct Emit {
    /// Plaintext to send to the server.
    pub to_server: Vec<u8>,
    /// Plaintext to send to the client.
    pub to_client: Vec<u8>,
    /// Connection-level action.
    pub action: ConnAction,
}

/// A verdict of an inspection engine, for the log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alert {
    /// Engine that raised it: `ips`, `webfilter` or `appcontrol`.
    pub engine: &'static str,
    /// Rule identifier (IPS sid, or the index of a web filter / app rule).
    pub sid: u64,
    /// Human-readable message.
    pub msg: String,
    /// What was done: `alert`, `drop`, `reject`, `deny`, `pass`.
    pub action: String,
    /// Rule revision (IPS `rev`; 0 where rules have none).
    pub rev: u32,
    /// Rule category (IPS `classtype`), if any.
    pub category: Option<String>,
    /// Rule severity (IPS `priority`, 1 = highest), if any.
    pub severity: Option<u8>,
}

/// One HTTP request seen on an inspected flow, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpTxn {
    /// Request method.
    pub method: String,
    /// Host header or `:authority`.
    pub host: String,
    /// Request target as sent.
    pub url: String,
    /// Response status, when a response was seen.
    pub status: Option<u16>,
    /// Identified application and action, if any.
    pub app: Option<(String, String)>,
}

/// What the engines learned about a flow, reported when it closes.
#[derive(Debug, Clone, Default)]
pub struct InspectReport {
    /// HTTP requests in order.
    pub http: Vec<HttpTxn>,
    /// The application most recently identified on the flow.
    pub app: Option<String>,
    /// Every verdict other than a silent allow.
    pub alerts: Vec<Alert>,
}

/// Per-flow plaintext handler created by an [`Inspector`].
///
/// Sans-IO: bytes in, bytes out. The data plane calls `on_data` for every
/// chunk of decrypted plaintext and sends whatever lands in `out`. An
/// implementation may hold bytes back (to see a whole request head) and
/// may answer the client itself (a block page).
pub trait FlowInspector: Send {
    /// Feeds plaintext travelling in `dir`.
    fn on_data(&mut self, dir: Direction, data: &[u8], out: &mut Emit);
    /// The sender of `dir` closed its side; flush what is held.
    fn on_eof(&mut self, dir: Direction, out: &mut Emit);
    /// Verdicts raised since the last call, to be logged at once as alerts.
    fn take_alerts(&mut self) -> Vec<Alert>;
    /// The flow ended; the summary for its traffic-log record.
    fn finish(&mut self) -> InspectReport;
}

/// The TLS handshake of an in-scope connection, as the engines see it.
#[derive(Debug, Clone, Copy)]
pub struct TlsHandshake<'a> {
    /// The parsed ClientHello.
    pub hello: &'a crate::tls::ClientHello,
    /// The ClientHello's records, as the client sent them.
    pub hello_bytes: &'a [u8],
    /// The upstream chain, leaf first; `None` until the server leg has it
    /// (and always for passed and blocked flows).
    pub upstream_chain: Option<&'a [CertificateDer<'static>]>,
}

/// Creates a [`FlowInspector`] for each inspected flow.
pub trait Inspector: Send + Sync {
    /// Starts inspection of one flow.
    fn new_flow(&self, meta: &FlowMeta) -> Box<dyn FlowInspector>;

    /// Looks at the handshake of every in-scope TLS connection, inspected or
    /// passed: once with the ClientHello when the decision is taken, and once
    /// more with the upstream chain when the server leg has received it.
    /// Returns the alerts to log.
    fn on_tls(&self, _meta: &FlowMeta, _tls: &TlsHandshake<'_>) -> Vec<Alert> {
        Vec::new()
    }
}

/// What happened to a flow, as one traffic-log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    /// Decrypted, inspected and re-encrypted.
    Inspected,
    /// Relayed unchanged.
    Pass,
    /// Refused (TLS alert or TCP reset).
    Blocked,
}

impl FlowAction {
    /// The log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowAction::Inspected => "inspected",
            FlowAction::Pass => "pass",
            FlowAction::Blocked => "blocked",
        }
    }
}

/// The upstream certificate as seen on the server leg.
#[derive(Debug, Clone, Default)]
pub struct UpstreamCertInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// Serial number, colon-separated upper-case hex bytes (as Suricata logs it).
    pub serial: String,
    /// SHA-1 of the DER, colon-separated lower-case hex (as Suricata logs it).
    pub fingerprint: String,
    /// Whether it verified against the configured roots.
    pub verified: bool,
    /// Verification error, if any.
    pub error: Option<String>,
}

/// TLS details of a flow.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// SNI from the ClientHello.
    pub sni: Option<String>,
    /// Version negotiated with the client (or the highest offered, for a pass).
    pub version: Option<String>,
    /// Version negotiated with the server.
    pub upstream_version: Option<String>,
    /// Cipher suite negotiated with the client.
    pub cipher: Option<String>,
    /// ALPN negotiated with the client.
    pub alpn: Option<String>,
    /// JA4 fingerprint of the ClientHello.
    pub ja4: Option<String>,
    /// Upstream certificate.
    pub upstream_cert: Option<UpstreamCertInfo>,
}

/// One traffic-log record, written when a flow closes.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    /// When the flow ended.
    pub timestamp: SystemTime,
    /// Identity of the flow.
    pub meta: FlowMeta,
    /// Transport protocol, `TCP` for now.
    pub proto: &'static str,
    /// What was done.
    pub action: FlowAction,
    /// Which decision rule decided (DESIGN.md §4), or what ended the flow.
    pub reason: Reason,
    /// TLS details, when the flow carried TLS.
    pub tls: Option<TlsInfo>,
    /// Bytes from client to server.
    pub bytes_toserver: u64,
    /// Bytes from server to client.
    pub bytes_toclient: u64,
    /// Lifetime of the flow in milliseconds.
    pub duration_ms: u64,
    /// What the inspection engines found, for inspected flows.
    pub inspection: Option<InspectReport>,
}

/// Sink for traffic-log records and alerts.
pub trait FlowLog: Send + Sync {
    /// Writes the record of a finished flow.
    fn record(&self, rec: &FlowRecord);
    /// Writes an alert as its own record at the moment it is raised.
    fn alert(&self, meta: &FlowMeta, alert: &Alert, timestamp: SystemTime);
}
