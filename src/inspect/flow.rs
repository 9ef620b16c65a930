//! Per-flow inspection: protocol detection, HTTP/1.1 request holding,
//! response scanning, raw-stream IPS and the flow's report.
//!
//! [`Core`] holds what every protocol handler needs (engines, alerts, the
//! report, the IPS scratch); the HTTP/1.1 handler lives here and the HTTP/2
//! handler in `http2.rs`, both deciding requests through the same `Core`
//! methods so the verdicts are identical whichever protocol carried them.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use tlsinspect_pipeline::api::{
    Alert, ConnAction, Direction, Emit, FlowInspector, FlowMeta, HttpTxn, InspectReport,
};

use super::appid::RequestFacts;
use super::http1::{self, Event, Expect, Side};
use super::http2;
use super::ips::{
    app_event, Action, Activity, Buffer, Buffers, EvalCtx, FlowBits, Mode, Phase, Ruleset, Scratch,
};
use super::text::html_escape;
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

/// The short HTML body of a block page.
pub(crate) fn block_html(reason: &str) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body>\n<h1>Access blocked</h1>\n<p>",
    );
    html_escape(reason, &mut s);
    s.push_str("</p>\n<p>This request was blocked by the network's security policy (tlsinspect).</p>\n</body></html>\n");
    s
}

/// A complete HTTP/1.1 403 response carrying the block page.
pub(crate) fn block_page_h1(reason: &str, close: bool) -> Vec<u8> {
    let body = block_html(reason);
    let mut r = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        body.len()
    );
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.push_str(&body);
    r.into_bytes()
}

impl Core {
    fn new(shared: Arc<Shared>, client: (IpAddr, u16), server: (IpAddr, u16)) -> Self {
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

/// Protocol state of a flow.
enum Proto {
    /// Waiting for enough client bytes to recognise the protocol.
    Detect(Vec<u8>),
    Http1(Box<H1>),
    Http2(Box<http2::H2>),
    /// Not HTTP: raw-stream rules only.
    Raw,
}

/// The per-flow inspector handed to the data plane.
pub(crate) struct Flow {
    core: Core,
    proto: Proto,
    raw_tail: [Vec<u8>; 2],
    /// Bytes of each direction the raw-stream rules have seen.
    raw_seen: [usize; 2],
    /// After a reset verdict nothing more is forwarded.
    dead: bool,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Flow {
    pub(crate) fn new(shared: Arc<Shared>, meta: &FlowMeta) -> Self {
        let core = Core::new(
            shared,
            (meta.src.ip(), meta.src.port()),
            (meta.dest.ip(), meta.dest.port()),
        );
        let proto = match meta.alpn.as_deref() {
            Some(b"h2") => Proto::Http2(Box::new(http2::H2::new(&core.shared.limits))),
            _ => Proto::Detect(Vec::new()),
        };
        let mut f = Flow {
            core,
            proto,
            raw_tail: [Vec::new(), Vec::new()],
            raw_seen: [0, 0],
            dead: false,
        };
        if matches!(f.proto, Proto::Http2(_)) {
            f.core.is_http = true;
        }
        f
    }

    /// Scans raw bytes; false when the flow must be reset.
    fn raw_scan(&mut self, dir: Direction, data: &[u8], out: &mut Emit) -> bool {
        // Every byte passes here once (held detection bytes only when
        // they are replayed), in stream order.
        self.core
            .count_stream(dir == Direction::ToServer, data.len());
        if !self.core.raw_wanted(dir == Direction::ToServer) || data.is_empty() {
            return true;
        }
        let i = if dir == Direction::ToServer { 0 } else { 1 };
        let depth = self.core.shared.limits.stream_depth;
        let take = data.len().min(depth.saturating_sub(self.raw_seen[i]));
        if take == 0 {
            return true;
        }
        self.raw_seen[i] += take;
        let data = &data[..take];
        let mut window = std::mem::take(&mut self.raw_tail[i]);
        window.extend_from_slice(data);
        let o = self.core.ips_raw(dir == Direction::ToServer, &window, take);
        let keep = self.core.shared.limits.stream_overlap.min(window.len());
        window.drain(..window.len() - keep);
        self.raw_tail[i] = window;
        if o != IpsOutcome::Continue {
            self.kill(out);
            return false;
        }
        true
    }

    fn kill(&mut self, out: &mut Emit) {
        self.dead = true;
        out.to_server.clear();
        out.to_client.clear();
        out.action = ConnAction::Reset;
    }

    /// Recognises HTTP/2 (`Some(true)`), "not HTTP/2" (`Some(false)`: HTTP/1.x
    /// or something else, see [`Flow::is_http_method_start`]) or needs more bytes.
    fn detect(buf: &[u8]) -> Option<bool> {
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] == H2_PREFACE[..n] {
            return (n == H2_PREFACE.len()).then_some(true);
        }
        // Still a plausible method token without its space: wait for more.
        let token = buf.len() <= 16 && buf.iter().all(|b| b.is_ascii_uppercase() || *b == b'-');
        if !buf.contains(&b' ') && token {
            return None;
        }
        Some(false)
    }

    fn is_http_method_start(buf: &[u8]) -> bool {
        match buf.iter().position(|&b| b == b' ') {
            Some(e) => {
                e > 0
                    && e <= 16
                    && buf[..e]
                        .iter()
                        .all(|b| b.is_ascii_uppercase() || *b == b'-')
            }
            None => false,
        }
    }
}

impl FlowInspector for Flow {
    fn on_data(&mut self, dir: Direction, data: &[u8], out: &mut Emit) {
        if self.dead {
            return;
        }
        if let Proto::Detect(buf) = &mut self.proto {
            if dir == Direction::ToClient {
                // Server spoke first: not HTTP.
                let held = std::mem::take(buf);
                self.proto = Proto::Raw;
                if !held.is_empty() {
                    self.on_data(Direction::ToServer, &held, out);
                    if self.dead {
                        return;
                    }
                }
            } else {
                buf.extend_from_slice(data);
                match Self::detect(buf) {
                    None => return,
                    Some(h2) => {
                        let held = std::mem::take(buf);
                        self.proto = if h2 {
                            self.core.is_http = true;
                            Proto::Http2(Box::new(http2::H2::new(&self.core.shared.limits)))
                        } else if Self::is_http_method_start(&held) {
                            self.core.is_http = true;
                            Proto::Http1(Box::new(H1::new(&self.core.shared.limits)))
                        } else {
                            Proto::Raw
                        };
                        return self.on_data(Direction::ToServer, &held, out);
                    }
                }
            }
        }
        if !self.raw_scan(dir, data, out) {
            return;
        }
        let reset = match &mut self.proto {
            Proto::Raw | Proto::Detect(_) => {
                match dir {
                    Direction::ToServer => out.to_server.extend_from_slice(data),
                    Direction::ToClient => out.to_client.extend_from_slice(data),
                }
                false
            }
            Proto::Http1(h) => h.on_data(&mut self.core, dir, data, out),
            Proto::Http2(h) => h.on_data(&mut self.core, dir, data, out),
        };
        if reset {
            self.kill(out);
        }
    }

    fn on_eof(&mut self, dir: Direction, out: &mut Emit) {
        if self.dead {
            return;
        }
        if let Proto::Detect(buf) = &mut self.proto {
            // A short non-HTTP exchange: treat what was held as raw.
            let held = std::mem::take(buf);
            self.proto = Proto::Raw;
            if !held.is_empty() {
                self.on_data(Direction::ToServer, &held, out);
            }
            return;
        }
        if let Proto::Http1(h) = &mut self.proto {
            h.on_eof(&mut self.core, dir, out);
        }
    }

    fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.core.new_alerts)
    }

    fn finish(&mut self) -> InspectReport {
        std::mem::take(&mut self.core.report)
    }
}

// ------------------------------------------------------------------ HTTP/1.1

/// What the request side does with the bytes of the current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqState {
    /// Between requests (a head is being buffered by the parser).
    Idle,
    /// Holding the request until it is decided.
    Hold,
    /// Decided and allowed: stream the rest.
    Forward,
    /// Denied: discard the rest of this request.
    Swallow,
    /// The request side failed or was refused: discard everything.
    Refused,
}

/// A request in order, for matching responses and placing block pages.
enum Slot {
    /// Forwarded to the server; its response is outstanding.
    Forwarded(Box<Txn>),
    /// Answered by us with this response; `close` ends the connection after it.
    Denied { page: Vec<u8>, close: bool },
}

/// HTTP/1.1 state of a flow.
pub(crate) struct H1 {
    req: http1::Parser,
    resp: http1::Parser,
    state: ReqState,
    hold: Vec<u8>,
    body: Vec<u8>,
    cur: Option<Box<Txn>>,
    /// Whether the held request asked for `100 Continue`.
    expect_continue: bool,
    queue: VecDeque<Slot>,
    /// Transaction of the response being received.
    resp_txn: Option<Box<Txn>>,
    /// Response side stopped parsing (error): pass through.
    resp_failed: bool,
    max_body: usize,
    events: Vec<Event>,
}

impl H1 {
    fn new(limits: &super::EngineLimits) -> Self {
        H1 {
            req: http1::Parser::new(Side::Request, limits.http1),
            resp: http1::Parser::new(Side::Response, limits.http1),
            state: ReqState::Idle,
            hold: Vec::new(),
            body: Vec::new(),
            cur: None,
            expect_continue: false,
            queue: VecDeque::new(),
            resp_txn: None,
            resp_failed: false,
            max_body: limits.max_request_body,
            events: Vec::new(),
        }
    }

    /// Sends block pages that are now at the front of the response order.
    fn flush_denied(&mut self, out: &mut Emit) {
        if self.resp_txn.is_some() {
            return;
        }
        while let Some(Slot::Denied { .. }) = self.queue.front() {
            if let Some(Slot::Denied { page, close }) = self.queue.pop_front() {
                out.to_client.extend_from_slice(&page);
                if close {
                    out.action = ConnAction::Close;
                    self.queue.clear();
                    return;
                }
            }
        }
    }

    fn deny(&mut self, page: Vec<u8>, close: bool, out: &mut Emit) {
        if self.queue.len() < 1024 {
            self.queue.push_back(Slot::Denied { page, close });
        }
        self.flush_denied(out);
    }

    /// Decides the held request; true when the connection must be reset.
    fn decide(&mut self, core: &mut Core, complete: bool, out: &mut Emit) -> bool {
        let Some(mut txn) = self.cur.take() else {
            return false;
        };
        let body = (!self.body.is_empty()).then_some(self.body.as_slice());
        let o = core.ips_request(&txn, body);
        self.body.clear();
        match o {
            IpsOutcome::Drop => {
                self.hold.clear();
                return true;
            }
            IpsOutcome::Reject => {
                self.hold.clear();
                core.set_status(&mut txn, 403);
                self.state = ReqState::Refused;
                self.deny(
                    block_page_h1("blocked by an intrusion prevention rule", true),
                    true,
                    out,
                );
                return false;
            }
            IpsOutcome::Continue => {}
        }
        out.to_server.append(&mut self.hold);
        let expect = if txn.method.eq_ignore_ascii_case("HEAD") {
            Expect::Head
        } else if txn.method.eq_ignore_ascii_case("CONNECT") {
            Expect::Connect
        } else {
            Expect::Normal
        };
        self.resp.expect_response(expect);
        if self.queue.len() < 1024 {
            self.queue.push_back(Slot::Forwarded(txn));
        }
        self.state = if complete {
            ReqState::Idle
        } else {
            ReqState::Forward
        };
        false
    }

    fn on_data(&mut self, core: &mut Core, dir: Direction, data: &[u8], out: &mut Emit) -> bool {
        match dir {
            Direction::ToServer => self.on_request_bytes(core, data, out),
            Direction::ToClient => self.on_response_bytes(core, data, out),
        }
    }

    fn on_request_bytes(&mut self, core: &mut Core, data: &[u8], out: &mut Emit) -> bool {
        if self.state == ReqState::Refused {
            return false;
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let res = self.req.push(data, &mut events);
        let mut cursor = 0usize;
        let mut reset = false;
        for ev in events.drain(..) {
            let end = ev.end();
            let seg = &data[cursor..end];
            cursor = end;
            match ev {
                Event::Request { head, .. } => {
                    let txn = core.new_txn(
                        &head.method,
                        &head.host,
                        &head.target,
                        head.uri.clone(),
                        &head.headers,
                        Some(&head.raw),
                    );
                    let has_body = head
                        .header("content-length")
                        .is_some_and(|v| v.trim_ascii() != b"0")
                        || head.header("transfer-encoding").is_some();
                    let expect_continue = head
                        .header("expect")
                        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
                    if let Some(reason) = core.policy(&txn) {
                        let mut txn = txn;
                        core.set_status(&mut txn, 403);
                        // If the client waits for 100 Continue, it will not send
                        // the body we would have to swallow; after a denied
                        // upgrade or CONNECT it would send tunnel bytes. Close.
                        let tunnel = head.method.eq_ignore_ascii_case("CONNECT")
                            || head.header("upgrade").is_some();
                        let close = (expect_continue && has_body) || tunnel;
                        self.state = ReqState::Swallow;
                        self.deny(block_page_h1(&reason, close), close, out);
                        if close {
                            self.state = ReqState::Refused;
                        }
                        continue;
                    }
                    self.cur = Some(Box::new(txn));
                    self.hold.clear();
                    self.hold.extend_from_slice(&head.raw);
                    self.body.clear();
                    self.state = ReqState::Hold;
                    self.expect_continue = expect_continue && has_body;
                    if self.expect_continue && self.queue.is_empty() && self.resp_txn.is_none() {
                        // We hold the body for inspection, so we answer the
                        // client's Expect ourselves and strip it toward the server.
                        out.to_client
                            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        self.hold = strip_expect(&head.raw);
                    }
                }
                Event::Body(r) => match self.state {
                    ReqState::Hold => {
                        self.hold.extend_from_slice(seg);
                        self.body.extend_from_slice(&data[r]);
                        if self.body.len() >= self.max_body || self.hold.len() >= 2 * self.max_body
                        {
                            core.anomaly(
                                format!(
                                    "request body exceeds {} bytes; the rest is not inspected",
                                    self.max_body
                                ),
                                "alert",
                            );
                            if self.decide(core, false, out) {
                                reset = true;
                                break;
                            }
                        }
                    }
                    ReqState::Forward => out.to_server.extend_from_slice(seg),
                    _ => {}
                },
                Event::End { .. } => match self.state {
                    ReqState::Hold => {
                        self.hold.extend_from_slice(seg);
                        if self.decide(core, true, out) {
                            reset = true;
                            break;
                        }
                    }
                    ReqState::Forward => {
                        out.to_server.extend_from_slice(seg);
                        self.state = ReqState::Idle;
                    }
                    ReqState::Swallow => self.state = ReqState::Idle,
                    ReqState::Idle | ReqState::Refused => {}
                },
                Event::Tunnel(_) => out.to_server.extend_from_slice(seg),
                Event::Response { .. } => {}
            }
            if self.state == ReqState::Refused {
                break;
            }
        }
        self.events = events;
        if reset {
            return true;
        }
        if self.state != ReqState::Refused {
            let rest = &data[cursor.min(data.len())..];
            if self.req.is_tunnel() {
                out.to_server.extend_from_slice(rest);
            } else {
                match self.state {
                    ReqState::Hold => self.hold.extend_from_slice(rest),
                    ReqState::Forward => out.to_server.extend_from_slice(rest),
                    _ => {}
                }
            }
        }
        if let Err(e) = res {
            core.anomaly(format!("malformed HTTP/1.1 request: {e}"), "reject");
            self.state = ReqState::Refused;
            self.hold.clear();
            self.cur = None;
            let body = "malformed request\n";
            let page = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            self.deny(page.into_bytes(), true, out);
        }
        false
    }

    fn on_response_bytes(&mut self, core: &mut Core, data: &[u8], out: &mut Emit) -> bool {
        if self.resp_failed {
            out.to_client.extend_from_slice(data);
            return false;
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let res = self.resp.push(data, &mut events);
        let mut cursor = 0usize;
        let mut reset = false;
        for ev in events.drain(..) {
            match ev {
                Event::Response { head, end } => {
                    if (100..200).contains(&head.status) && head.status != 101 {
                        continue;
                    }
                    let mut txn = match self.queue.front() {
                        Some(Slot::Forwarded(_)) => match self.queue.pop_front() {
                            Some(Slot::Forwarded(t)) => t,
                            _ => Box::default(),
                        },
                        _ => Box::default(),
                    };
                    core.response_head(&mut txn, head.status, &head.headers, Some(&head.raw));
                    if core.ips_response(&mut txn, None) != IpsOutcome::Continue {
                        reset = true;
                        break;
                    }
                    self.resp_txn = Some(txn);
                    let _ = end;
                }
                Event::Body(r) => {
                    if let Some(txn) = self.resp_txn.as_mut() {
                        if core.ips_response(txn, Some(&data[r])) != IpsOutcome::Continue {
                            reset = true;
                            break;
                        }
                    }
                }
                Event::End { end } => {
                    out.to_client.extend_from_slice(&data[cursor..end]);
                    cursor = end;
                    if let Some(mut txn) = self.resp_txn.take() {
                        if core.ips_response_end(&mut txn) != IpsOutcome::Continue {
                            reset = true;
                            break;
                        }
                    }
                    self.flush_denied(out);
                }
                Event::Tunnel(_) | Event::Request { .. } => {}
            }
        }
        self.events = events;
        if reset {
            return true;
        }
        out.to_client
            .extend_from_slice(&data[cursor.min(data.len())..]);
        if let Err(e) = res {
            core.anomaly(
                format!("malformed HTTP/1.1 response: {e}; passing the rest uninspected"),
                "alert",
            );
            self.resp_failed = true;
        }
        false
    }

    fn on_eof(&mut self, core: &mut Core, dir: Direction, out: &mut Emit) {
        if dir == Direction::ToClient {
            let mut ev = Vec::new();
            self.resp.finish(&mut ev, 0);
            if !ev.is_empty() {
                // A body delimited by the close: its rules still run (an
                // outcome cannot reset a connection that is closing).
                if let Some(mut txn) = self.resp_txn.take() {
                    let _ = core.ips_response_end(&mut txn);
                }
                self.flush_denied(out);
            }
        } else if self.state == ReqState::Hold {
            // The client gave up mid-request: the partial request is dropped.
            self.cur = None;
            self.hold.clear();
            core.anomaly(
                "client closed during an incomplete request; not forwarded".into(),
                "drop",
            );
        }
    }
}

fn strip_expect(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let is_expect = line.len() > 7 && line[..7].eq_ignore_ascii_case(b"expect:");
        if !is_expect {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
#[path = "flow_tests.rs"]
pub(crate) mod tests;
