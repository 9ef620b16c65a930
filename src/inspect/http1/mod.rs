//! The HTTP/1.1 handler of a flow: holds each request until the verdict
//! core has decided it, forwards or answers it with a block page in request
//! order, and scans responses as they pass.
//!
//! The wire framing is [`parser`]'s; the decisions are the verdict core's
//! (`verdict::Core`), shared with HTTP/2.

pub mod parser;

use std::collections::VecDeque;

use tlsinspect_pipeline::api::{ConnAction, Direction, Emit};

use super::text::html_escape;
use super::verdict::{Core, IpsOutcome, Txn};
use parser::{Event, Expect, Parser};

/// The short HTML body of a block page.
fn block_html(reason: &str) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body>\n<h1>Access blocked</h1>\n<p>",
    );
    html_escape(reason, &mut s);
    s.push_str("</p>\n<p>This request was blocked by the network's security policy (tlsinspect).</p>\n</body></html>\n");
    s
}

/// A complete HTTP/1.1 403 response carrying the block page.
fn block_page_h1(reason: &str, close: bool) -> Vec<u8> {
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
    req: Parser,
    resp: Parser,
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
    pub(super) fn new(limits: &super::EngineLimits) -> Self {
        H1 {
            req: Parser::new(Direction::ToServer, limits.http1),
            resp: Parser::new(Direction::ToClient, limits.http1),
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

    pub(super) fn on_data(
        &mut self,
        core: &mut Core,
        dir: Direction,
        data: &[u8],
        out: &mut Emit,
    ) -> bool {
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

    pub(super) fn on_eof(&mut self, core: &mut Core, dir: Direction, out: &mut Emit) {
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
