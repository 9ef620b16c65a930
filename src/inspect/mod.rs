//! Inspection engines on decrypted plaintext, behind the pipeline's
//! [`Inspector`] trait.
//!
//! Everything here is sans-IO: the data plane hands over plaintext chunks and
//! sends what lands in [`Emit`]. Per flow, the protocol is recognised from
//! ALPN or the first client bytes (HTTP/1.1, HTTP/2, or anything else, which
//! only the raw-stream IPS rules see). For HTTP, a request is held until it
//! is decided: the web filter and application control decide on the head,
//! the IPS on the head plus the body (held up to a cap), so a denied or
//! dropped request never reaches the server. Responses are never held: they
//! are scanned as they pass, because holding downloads would cost memory
//! per flow and latency for every user.
//!
//! Constructors the control plane calls: [`WebFilter::new`],
//! [`AppTable::load`], [`AppControl::new`], [`Ruleset::load_files`], then
//! [`Engines::new`].

pub mod appid;
mod flow;
mod handshake;
pub mod http1;
pub mod http2;
pub mod ips;
pub mod text;
mod verdict;
pub mod webfilter;

use std::sync::Arc;

use tlsinspect_pipeline::api::{Alert, FlowInspector, FlowMeta, Inspector, TlsHandshake};

pub use appid::{AppControl, AppRule, AppTable};
pub use ips::{LoadReport, Mode, Ruleset, Vars};
pub use webfilter::{Verdict, WebFilter, WebRule};

/// Bounds on what one flow may hold or record.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    /// HTTP/1.1 head limits.
    pub http1: http1::parser::Limits,
    /// Request body bytes held for inspection before the request is released;
    /// beyond this the request is decided on what was seen and the rest streams
    /// through uninspected by body rules (as Suricata's request-body-limit).
    pub max_request_body: usize,
    /// Bytes of the previous chunk kept in front of the next when scanning a
    /// stream, so patterns split across chunks still match.
    pub stream_overlap: usize,
    /// Bytes per direction of a flow the raw-stream rules inspect
    /// (Suricata's stream reassembly depth, 1 MiB by default); the rest of a
    /// long transfer streams through unscanned by them.
    pub stream_depth: usize,
    /// Response body bytes `file.data` rules inspect (Suricata's
    /// response-body-limit); the rest of a large body streams through.
    pub max_response_body: usize,
    /// HTTP transactions recorded per flow for the log.
    pub max_txns: usize,
    /// Alerts recorded per flow for the log.
    pub max_alerts: usize,
    /// Concurrent HTTP/2 streams tracked per connection.
    pub max_h2_streams: usize,
    /// Bytes held per connection for HTTP/2 (undecided streams' frames).
    pub max_h2_held: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            http1: http1::parser::Limits::default(),
            max_request_body: 256 * 1024,
            stream_overlap: 1024,
            max_response_body: 100 * 1024,
            stream_depth: 1024 * 1024,
            max_txns: 1000,
            max_alerts: 1000,
            max_h2_streams: 256,
            max_h2_held: 4 * 1024 * 1024,
        }
    }
}

/// The engines configured for the appliance; creates per-flow inspectors.
#[derive(Debug, Clone)]
pub struct Engines {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) webfilter: WebFilter,
    pub(crate) apps: AppTable,
    pub(crate) appcontrol: AppControl,
    pub(crate) ips: Arc<Ruleset>,
    pub(crate) mode: Mode,
    pub(crate) limits: EngineLimits,
}

impl Engines {
    /// Builds the engines from their compiled parts.
    ///
    /// `mode` decides whether IPS `drop`/`reject` rules block; the web filter
    /// and application control always enforce.
    pub fn new(
        webfilter: WebFilter,
        apps: AppTable,
        appcontrol: AppControl,
        ips: Arc<Ruleset>,
        mode: Mode,
    ) -> Self {
        Self::with_limits(
            webfilter,
            apps,
            appcontrol,
            ips,
            mode,
            EngineLimits::default(),
        )
    }

    /// Like [`Engines::new`] with explicit per-flow limits.
    pub fn with_limits(
        webfilter: WebFilter,
        apps: AppTable,
        appcontrol: AppControl,
        ips: Arc<Ruleset>,
        mode: Mode,
        limits: EngineLimits,
    ) -> Self {
        Engines {
            shared: Arc::new(Shared {
                webfilter,
                apps,
                appcontrol,
                ips,
                mode,
                limits,
            }),
        }
    }

    /// IPS alerts raised per sid by these engines' rule set.
    pub fn ips_alert_counts(&self) -> Vec<(u64, u64)> {
        self.shared.ips.alert_counts()
    }

    /// Engines that inspect nothing and pass every byte (for benchmarks).
    pub fn pass_through() -> Self {
        Self::new(
            WebFilter::default(),
            AppTable::default(),
            AppControl::default(),
            Arc::new(Ruleset::default()),
            Mode::Detect,
        )
    }
}

impl Inspector for Engines {
    fn new_flow(&self, meta: &FlowMeta) -> Box<dyn FlowInspector> {
        Box::new(flow::Flow::new(self.shared.clone(), meta))
    }

    fn on_tls(&self, meta: &FlowMeta, tls: &TlsHandshake<'_>) -> Vec<Alert> {
        handshake::on_tls(&self.shared, meta, tls)
    }
}
