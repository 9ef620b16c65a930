//! The verdict core both HTTP handlers share.
//!
//! [`Core`] holds what every protocol handler of a flow needs (engines,
//! alerts, the report, the IPS scratch and flowbits) and decides requests and
//! responses: web filter, application control and the IPS phases. The
//! HTTP/1.1 handler (`http1`) and the HTTP/2 handler (`http2`) describe their
//! messages as a [`Txn`] and call the same methods, so the verdicts are
//! identical whichever protocol carried them; [`verdicts`] turns rule matches
//! into alerts for the TLS handshake rules too.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use tlsinspect_pipeline::api::{Alert, HttpTxn, InspectReport};

use super::appid::RequestFacts;
use super::ips::{
    app_event, Action, Activity, Buffer, Buffers, EvalCtx, FlowBits, Mode, Phase, Ruleset, Scratch,
};
use super::webfilter::Verdict;
use super::Shared;

/// What the IPS decided for one inspection step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpsOutcome {
    /// Nothing blocks.
    Continue,
    /// A drop rule matched in prevent mode.
    Drop,
    /// A reject rule matched in prevent mode.
    Reject,
}

/// Facts of one HTTP transaction, kept while its response is outstanding.
#[derive(Debug, Default)]
pub(crate) struct Txn {
    pub method: String,
    pub host: String,
    pub target: Vec<u8>,
    pub uri: Vec<u8>,
    pub header_buf: Vec<u8>,
    pub ua: Option<Vec<u8>>,
    pub app: Option<(String, String)>,
    /// Index into the report's `http` list, when recorded.
    pub log: Option<usize>,
    pub status: Option<u16>,
    pub resp_header_buf: Vec<u8>,
    /// The request's other head buffers some rule wants (cookie, start, ...).
    pub req_extra: Vec<(Buffer, Vec<u8>)>,
    /// The `app-layer-event` bits the request raised.
    pub req_events: u32,
    /// The response's other head buffers some rule wants.
    pub resp_extra: Vec<(Buffer, Vec<u8>)>,
    /// The response body held for `file.data` rules (up to the limit).
    pub resp_body: Vec<u8>,
    /// Sids already raised on this transaction's response.
    pub resp_sids: HashSet<u64>,
    /// Whether any response-body rule could still match this response.
    pub resp_body_scan: bool,
    /// The body rules have run on this response.
    pub resp_body_done: bool,
}

fn header_value(headers: &[(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case(name) {
            match &mut out {
                // Repeated fields are joined as one value, as libhtp does.
                Some(o) => {
                    o.extend_from_slice(b", ");
                    o.extend_from_slice(v);
                }
                None => out = Some(v.clone()),
            }
        }
    }
    out
}

/// The head buffers besides method/uri/host/header that some rule of
/// `phase` wants, built from the start line, the fields and the raw head.
///
/// Spelled as Suricata builds them: `http.header_names` is
/// `\r\nName\r\n...\r\n\r\n`, `http.start` the start line, the
/// `Name: value` lines and a blank line, `http.header.raw` the head after
/// the start line as received.
pub(crate) fn head_buffers(
    ips: &Ruleset,
    phase: Phase,
    response: bool,
    start_line: &[u8],
    headers: &[(String, Vec<u8>)],
    raw: Option<&[u8]>,
) -> Vec<(Buffer, Vec<u8>)> {
    let side = |b: Buffer| if response { b.to_response() } else { b };
    let mut out = Vec::new();
    let want = |b: Buffer| ips.wants(phase, b);
    let fields: &[(Buffer, &str)] = if response {
        &[
            (Buffer::Server, "server"),
            (Buffer::Location, "location"),
            (Buffer::RespContentType, "content-type"),
            (Buffer::RespContentLen, "content-length"),
            (Buffer::RespCookie, "set-cookie"),
            (Buffer::RespConnection, "connection"),
        ]
    } else {
        &[
            (Buffer::Cookie, "cookie"),
            (Buffer::ContentType, "content-type"),
            (Buffer::ContentLen, "content-length"),
            (Buffer::Referer, "referer"),
            (Buffer::Accept, "accept"),
            (Buffer::AcceptEnc, "accept-encoding"),
            (Buffer::AcceptLang, "accept-language"),
            (Buffer::Connection, "connection"),
            (Buffer::HostRaw, "host"),
        ]
    };
    for &(b, name) in fields {
        if want(b) {
            if let Some(v) = header_value(headers, name) {
                out.push((b, v));
            }
        }
    }
    let line = if response {
        Buffer::ResponseLine
    } else {
        Buffer::RequestLine
    };
    if want(line) {
        out.push((line, start_line.to_vec()));
    }
    let words: Vec<&[u8]> = start_line.splitn(3, |&c| c == b' ').collect();
    if want(side(Buffer::Protocol)) {
        let proto = if response {
            words.first()
        } else {
            words.get(2)
        };
        if let Some(p) = proto {
            out.push((side(Buffer::Protocol), p.to_vec()));
        }
    }
    if response && want(Buffer::StatMsg) {
        if let Some(m) = words.get(2) {
            out.push((Buffer::StatMsg, m.to_vec()));
        }
    }
    if want(side(Buffer::HeaderNames)) {
        let mut v = b"\r\n".to_vec();
        for (n, _) in headers {
            v.extend_from_slice(n.as_bytes());
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"\r\n");
        out.push((side(Buffer::HeaderNames), v));
    }
    if want(side(Buffer::Start)) {
        let mut v = start_line.to_vec();
        v.extend_from_slice(b"\r\n");
        v.extend_from_slice(&header_lines(headers));
        v.extend_from_slice(b"\r\n");
        out.push((side(Buffer::Start), v));
    }
    if want(side(Buffer::HeaderRaw)) {
        if let Some(raw) = raw {
            let after = raw
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(raw.len(), |p| p + 2);
            out.push((side(Buffer::HeaderRaw), raw[after..].to_vec()));
        }
    }
    // The raw content of a rule beside its HTTP buffers: the message's head
    // as received, as Suricata matches such content on the stream; the held
    // body (de-chunked: chunk-size lines are not in it) joins it when the
    // rules run on it. An HTTP/2 message has no bytes of its own on the
    // stream (frames, HPACK), so none.
    if want(Buffer::Raw) {
        if let Some(raw) = raw {
            out.push((Buffer::Raw, raw.to_vec()));
        }
    }
    out
}

/// The `app-layer-event` bits of an HTTP/1 request head: a
/// `Transfer-Encoding` none of whose codings is `chunked` is libhtp's
/// `invalid_transfer_encoding_value_in_request`.
fn request_events(headers: &[(String, Vec<u8>)]) -> u32 {
    let mut events = 0;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("transfer-encoding")
            && !v
                .split(|&b| b == b',')
                .any(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        {
            events |= app_event::HTTP_INVALID_TE_REQUEST;
        }
    }
    events
}

/// The raw head among a message's extra buffers, joined with `body`.
fn raw_with_body(extra: &[(Buffer, Vec<u8>)], body: &[u8]) -> Option<Vec<u8>> {
    let (_, head) = extra.iter().find(|(b, _)| *b == Buffer::Raw)?;
    Some([head.as_slice(), body].concat())
}

/// State shared by the protocol handlers of one flow.
pub(crate) struct Core {
    pub shared: Arc<Shared>,
    activity: Activity,
    scratch: Scratch,
    hits: Vec<u32>,
    /// A `pass` rule matched: no more IPS on this flow.
    ips_passed: bool,
    new_alerts: Vec<Alert>,
    report: InspectReport,
    raw_sids: HashSet<u64>,
    /// The flow's flowbits.
    bits: FlowBits,
    client: IpAddr,
    server: IpAddr,
    /// Whether any raw-stream rule applies to [to server, to client].
    raw_active: [bool; 2],
    pub is_http: bool,
    /// Stream bytes the client and the server have sent so far
    /// (`stream_size`).
    stream_bytes: [u64; 2],
    /// Size of the chunk a raw-stream step inspects (`dsize`).
    chunk_len: Option<usize>,
}

fn header_lines(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum());
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Core {
    pub fn new(shared: Arc<Shared>, client: (IpAddr, u16), server: (IpAddr, u16)) -> Self {
        let activity = shared.ips.activity(client, server);
        let mut raw_active = [false; 2];
        for id in shared.ips.raw_rule_ids() {
            raw_active[0] |= activity.to_server(id);
            raw_active[1] |= activity.to_client(id);
        }
        Core {
            raw_active,
            shared,
            activity,
            scratch: Scratch::default(),
            hits: Vec::new(),
            ips_passed: false,
            new_alerts: Vec::new(),
            report: InspectReport::default(),
            raw_sids: HashSet::new(),
            bits: FlowBits::default(),
            client: client.0,
            server: server.0,
            is_http: false,
            stream_bytes: [0, 0],
            chunk_len: None,
        }
    }

    /// The alerts raised since the last call.
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.new_alerts)
    }

    /// The flow's report, handed over when the flow ends.
    pub fn take_report(&mut self) -> InspectReport {
        std::mem::take(&mut self.report)
    }

    fn alert(&mut self, a: Alert) {
        if self.report.alerts.len() < self.shared.limits.max_alerts {
            self.report.alerts.push(a.clone());
            self.new_alerts.push(a);
        }
    }

    /// Raises a protocol anomaly (engine `http`).
    pub fn anomaly(&mut self, msg: String, action: &str) {
        self.alert(Alert {
            engine: "http",
            sid: 0,
            msg,
            action: action.to_string(),
            ..Alert::default()
        });
    }

    /// Starts a transaction: identifies the app and records it for the log.
    pub fn new_txn(
        &mut self,
        method: &str,
        host: &str,
        target: &[u8],
        uri: Vec<u8>,
        headers: &[(String, Vec<u8>)],
        raw_head: Option<&[u8]>,
    ) -> Txn {
        let app = self
            .shared
            .apps
            .identify(&RequestFacts {
                method,
                host,
                uri: &uri,
                headers,
            })
            .map(|s| (s.app.clone(), s.action.clone()));
        if let Some((a, _)) = &app {
            self.report.app = Some(a.clone());
        }
        let log = (self.report.http.len() < self.shared.limits.max_txns).then(|| {
            self.report.http.push(HttpTxn {
                method: method.to_string(),
                host: host.to_string(),
                url: String::from_utf8_lossy(target).into_owned(),
                status: None,
                app: app.clone(),
            });
            self.report.http.len() - 1
        });
        let ua = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
            .map(|(_, v)| v.clone());
        let start_line = match raw_head.and_then(|r| r.split(|&c| c == b'\n').next()) {
            Some(l) => l.strip_suffix(b"\r").unwrap_or(l).to_vec(),
            None => [method.as_bytes(), b" ", target, b" HTTP/2"].concat(),
        };
        let req_extra = head_buffers(
            &self.shared.ips,
            Phase::Request,
            false,
            &start_line,
            headers,
            raw_head,
        );
        // libhtp's events exist for HTTP/1 (raw_head), not for HTTP/2.
        let req_events = if raw_head.is_some() {
            request_events(headers)
        } else {
            0
        };
        Txn {
            method: method.to_string(),
            host: host.to_string(),
            target: target.to_vec(),
            header_buf: header_lines(headers),
            req_extra,
            req_events,
            uri,
            ua,
            app,
            log,
            ..Txn::default()
        }
    }

    /// Records the response status of `txn` in the report.
    pub fn set_status(&mut self, txn: &mut Txn, status: u16) {
        txn.status = Some(status);
        if let Some(i) = txn.log {
            if let Some(t) = self.report.http.get_mut(i) {
                t.status = Some(status);
            }
        }
    }

    /// Records a response head of `txn`: status and the head buffers.
    pub fn response_head(
        &mut self,
        txn: &mut Txn,
        status: u16,
        headers: &[(String, Vec<u8>)],
        raw_head: Option<&[u8]>,
    ) {
        self.set_status(txn, status);
        txn.resp_header_buf = header_lines(headers);
        let start_line = match raw_head.and_then(|r| r.split(|&c| c == b'\n').next()) {
            Some(l) => l.strip_suffix(b"\r").unwrap_or(l).to_vec(),
            None => format!("HTTP/2 {status:03}").into_bytes(),
        };
        txn.resp_extra = head_buffers(
            &self.shared.ips,
            Phase::Response,
            true,
            &start_line,
            headers,
            raw_head,
        );
        txn.resp_body.clear();
        txn.resp_body_done = false;
    }

    /// Web filter then application control on a request head.
    ///
    /// Returns the block-page reason when the request is denied.
    pub fn policy(&mut self, txn: &Txn) -> Option<String> {
        if let Some((i, Verdict::Deny)) =
            self.shared
                .webfilter
                .decide(&txn.method, &txn.host, &txn.uri)
        {
            let msg = format!(
                "web filter rule {i} denies {} {}{}",
                txn.method,
                txn.host,
                String::from_utf8_lossy(&txn.target)
            );
            self.alert(Alert {
                engine: "webfilter",
                sid: i as u64,
                msg: msg.clone(),
                action: "deny".into(),
                ..Alert::default()
            });
            return Some(msg);
        }
        if let Some((app, action)) = &txn.app {
            if let Some((i, Verdict::Deny)) = self.shared.appcontrol.decide(app, action) {
                let msg = format!("application control rule {i} denies {app}/{action}");
                self.alert(Alert {
                    engine: "appcontrol",
                    sid: i as u64,
                    msg: msg.clone(),
                    action: "deny".into(),
                    ..Alert::default()
                });
                return Some(msg);
            }
        }
        None
    }

    fn request_buffers<'a>(txn: &'a Txn, bufs: &mut Buffers<'a>) {
        bufs.set(Buffer::Uri, &txn.uri);
        bufs.set(Buffer::UriRaw, &txn.target);
        bufs.set(Buffer::Host, txn.host.as_bytes());
        bufs.set(Buffer::Method, txn.method.as_bytes());
        bufs.set(Buffer::Header, &txn.header_buf);
        if let Some(ua) = &txn.ua {
            bufs.set(Buffer::UserAgent, ua);
        }
        for (b, v) in &txn.req_extra {
            bufs.set(*b, v);
        }
        bufs.set_events(txn.req_events);
    }

    /// Runs the request-phase IPS rules on a request (and its held body).
    pub fn ips_request(&mut self, txn: &Txn, body: Option<&[u8]>) -> IpsOutcome {
        if self.ips_passed || self.shared.ips.phase_empty(Phase::Request) {
            return IpsOutcome::Continue;
        }
        let body = body.filter(|b| !b.is_empty());
        let raw = body.and_then(|b| raw_with_body(&txn.req_extra, b));
        let mut bufs = Buffers::default();
        Self::request_buffers(txn, &mut bufs);
        if let Some(b) = body {
            bufs.set(Buffer::RequestBody, b);
        }
        if let Some(r) = &raw {
            bufs.set(Buffer::Raw, r);
        }
        self.run(Phase::Request, &bufs, true, None)
    }

    /// Runs the response-phase rules on a response head (`chunk` = `None`),
    /// or holds a body chunk for the body rules.
    ///
    /// Body rules (`file.data`) see the body from its first byte, as in
    /// Suricata, up to `max_response_body`: they run once, when the body
    /// ends ([`Core::ips_response_end`]) or reaches that limit. Running them
    /// once on the whole buffer is what makes `depth`, `endswith`, `bsize`
    /// and `isdataat` mean the same however the body was split into chunks.
    pub fn ips_response(&mut self, txn: &mut Txn, chunk: Option<&[u8]>) -> IpsOutcome {
        if self.ips_passed {
            return IpsOutcome::Continue;
        }
        let ips = self.shared.ips.clone();
        if ips.phase_empty(Phase::Response) {
            return IpsOutcome::Continue;
        }
        match chunk {
            None => {
                let mut sids = std::mem::take(&mut txn.resp_sids);
                let status = txn.status.map(|s| format!("{s:03}")).unwrap_or_default();
                let (o, scan) = {
                    let mut bufs = Buffers::default();
                    Self::response_buffers(txn, &status, &mut bufs);
                    // At the head: decide once whether the body needs holding
                    // (for the body rules, or for raw content beside HTTP
                    // buffers, which the body extends).
                    let scan = [Buffer::ResponseBody, Buffer::Raw]
                        .into_iter()
                        .any(|b| ips.could_need(Phase::Response, b, &bufs, &mut self.scratch));
                    (
                        self.run(Phase::Response, &bufs, false, Some(&mut sids)),
                        scan,
                    )
                };
                txn.resp_sids = sids;
                txn.resp_body_scan = scan;
                o
            }
            Some(c) => {
                if !txn.resp_body_scan || txn.resp_body_done {
                    return IpsOutcome::Continue;
                }
                let max = self.shared.limits.max_response_body;
                let take = c.len().min(max.saturating_sub(txn.resp_body.len()));
                txn.resp_body.extend_from_slice(&c[..take]);
                if txn.resp_body.len() >= max {
                    return self.ips_response_end(txn);
                }
                IpsOutcome::Continue
            }
        }
    }

    /// The response body of `txn` ended: runs the body rules once on it.
    pub fn ips_response_end(&mut self, txn: &mut Txn) -> IpsOutcome {
        if self.ips_passed || !txn.resp_body_scan || txn.resp_body_done {
            return IpsOutcome::Continue;
        }
        txn.resp_body_done = true;
        if txn.resp_body.is_empty() {
            return IpsOutcome::Continue;
        }
        let body = std::mem::take(&mut txn.resp_body);
        let mut sids = std::mem::take(&mut txn.resp_sids);
        let status = txn.status.map(|s| format!("{s:03}")).unwrap_or_default();
        let raw = raw_with_body(&txn.resp_extra, &body);
        let o = {
            let mut bufs = Buffers::default();
            Self::response_buffers(txn, &status, &mut bufs);
            bufs.set(Buffer::ResponseBody, &body);
            if let Some(r) = &raw {
                bufs.set(Buffer::Raw, r);
            }
            self.run(Phase::Response, &bufs, false, Some(&mut sids))
        };
        txn.resp_sids = sids;
        o
    }

    fn response_buffers<'a>(txn: &'a Txn, status: &'a str, bufs: &mut Buffers<'a>) {
        Self::request_buffers(txn, bufs);
        // Raw content in the response phase means the response's bytes.
        bufs.unset(Buffer::Raw);
        if txn.status.is_some() {
            bufs.set(Buffer::StatCode, status.as_bytes());
        }
        bufs.set(Buffer::ResponseHeader, &txn.resp_header_buf);
        for (b, v) in &txn.resp_extra {
            bufs.set(*b, v);
        }
    }

    /// Runs the raw-stream rules over `window` (tail of the previous chunk
    /// + this one, whose size `dsize` compares with: `chunk`).
    pub fn ips_raw(&mut self, to_server: bool, window: &[u8], chunk: usize) -> IpsOutcome {
        if self.ips_passed {
            return IpsOutcome::Continue;
        }
        let mut bufs = Buffers::default();
        bufs.set(Buffer::Raw, window);
        let mut sids = std::mem::take(&mut self.raw_sids);
        self.chunk_len = Some(chunk);
        let o = self.run(Phase::Raw, &bufs, to_server, Some(&mut sids));
        self.chunk_len = None;
        self.raw_sids = sids;
        o
    }

    /// Counts stream bytes of one direction for `stream_size`.
    pub fn count_stream(&mut self, to_server: bool, n: usize) {
        let i = usize::from(!to_server);
        self.stream_bytes[i] = self.stream_bytes[i].saturating_add(n as u64);
    }

    /// Whether raw-stream rules could apply to this direction at all.
    pub fn raw_wanted(&self, to_server: bool) -> bool {
        !self.ips_passed && self.raw_active[usize::from(!to_server)]
    }

    fn run(
        &mut self,
        phase: Phase,
        bufs: &Buffers<'_>,
        to_server: bool,
        dedupe: Option<&mut HashSet<u64>>,
    ) -> IpsOutcome {
        let ips = self.shared.ips.clone();
        self.hits.clear();
        let activity = &self.activity;
        let is_http = self.is_http;
        let active = |id: u32| {
            let r = ips.rule(id);
            let proto_ok = match r.proto {
                super::ips::Proto::Any => true,
                super::ips::Proto::Http => is_http,
                super::ips::Proto::Tls => false,
            };
            proto_ok
                && if to_server {
                    activity.to_server(id)
                } else {
                    activity.to_client(id)
                }
        };
        let (src, dst) = if to_server {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let mut ctx = EvalCtx {
            bits: &mut self.bits,
            src,
            dst,
            tls_version: None,
            ssl_state: None,
            stream_bytes: Some((self.stream_bytes[0], self.stream_bytes[1])),
            chunk_len: self.chunk_len,
        };
        ips.eval(
            phase,
            bufs,
            &active,
            &mut self.scratch,
            &mut ctx,
            &mut self.hits,
        );
        if self.hits.is_empty() {
            return IpsOutcome::Continue;
        }
        let hits = std::mem::take(&mut self.hits);
        let mut alerts = Vec::new();
        let (outcome, passed) =
            verdicts(&ips, self.shared.mode, &hits, src, dst, dedupe, &mut alerts);
        self.ips_passed |= passed;
        for a in alerts {
            self.alert(a);
        }
        self.hits = hits;
        outcome
    }
}

/// Turns matched rules into alerts and the step's outcome.
///
/// A matching `pass` rule wins over the others of the step and stops the
/// IPS for the flow (the returned bool); `noalert` and thresholded matches
/// neither alert nor act; `dedupe` drops sids already raised in this scope.
pub(crate) fn verdicts(
    ips: &Ruleset,
    mode: Mode,
    hits: &[u32],
    src: IpAddr,
    dst: IpAddr,
    mut dedupe: Option<&mut HashSet<u64>>,
    out: &mut Vec<Alert>,
) -> (IpsOutcome, bool) {
    let mut outcome = IpsOutcome::Continue;
    let pass = hits
        .iter()
        .find(|&&h| ips.rule(h).action == Action::Pass && !ips.rule(h).noalert);
    let chosen: Vec<u32> = match pass {
        Some(&p) => vec![p],
        None => hits.to_vec(),
    };
    for h in chosen {
        let r = ips.rule(h);
        if let Some(seen) = dedupe.as_deref_mut() {
            if seen.contains(&r.sid) {
                continue;
            }
        }
        if !ips.should_alert(h, src, dst) {
            continue;
        }
        if let Some(seen) = dedupe.as_deref_mut() {
            seen.insert(r.sid);
        }
        let done = match (mode, r.action) {
            (_, Action::Pass) => "pass",
            (Mode::Prevent, Action::Drop) => {
                outcome = IpsOutcome::Drop;
                "drop"
            }
            (Mode::Prevent, Action::Reject) => {
                if outcome != IpsOutcome::Drop {
                    outcome = IpsOutcome::Reject;
                }
                "reject"
            }
            _ => "alert",
        };
        out.push(Alert {
            engine: "ips",
            sid: r.sid,
            msg: r.msg.clone(),
            action: done.to_string(),
            rev: r.rev,
            category: r.classtype.clone(),
            severity: r.priority,
        });
    }
    (outcome, pass.is_some())
}
