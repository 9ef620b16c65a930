//! HTTP/1.1 message framing for one direction of a connection.
//!
//! Heads are parsed with `httparse`; the framing (content-length, chunked,
//! read-until-close, pipelining, upgrade/CONNECT) is ours, because the
//! inspector must know where each message ends in the byte stream to hold,
//! forward or swallow exactly that message. The parser never copies bodies:
//! it reports ranges of the caller's input, so the caller can forward the raw
//! bytes (chunk framing included) and scan the decoded payload.
//!
//! Every event carries the offset in the current input where its bytes end;
//! bytes between two event ends belong to the later event (framing such as
//! chunk-size lines), bytes after the last event belong to whatever message
//! is in progress.

#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::ops::Range;

use tlsinspect_pipeline::api::Direction;

use crate::inspect::text::normalize_uri;

/// Caps on what the parser buffers for one message.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request or response head (request line and headers).
    pub max_head: usize,
    /// Most headers in one head.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_headers: 128,
        }
    }
}

/// Why a byte stream is not HTTP/1.1 the parser can follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Http1Error {
    /// The head grew past [`Limits::max_head`] without ending.
    #[error("message head exceeds {0} bytes")]
    HeadTooLarge(usize),
    /// `httparse` rejected the head.
    #[error("malformed message head: {0}")]
    BadHead(String),
    /// Content-Length is not a number or appears with differing values.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// A chunk-size line is not hexadecimal or is too long.
    #[error("invalid chunk size line")]
    BadChunk,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    /// Method as sent, e.g. `POST`.
    pub method: String,
    /// Request target exactly as sent.
    pub target: Vec<u8>,
    /// Normalized path (percent-decoded, dot segments removed) plus query.
    pub uri: Vec<u8>,
    /// Host header (lower-cased, port kept), empty when absent.
    pub host: String,
    /// Header fields in order; names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The head's bytes as received, for forwarding.
    pub raw: Vec<u8>,
}

impl RequestHead {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header_of(&self.headers, name)
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Header fields in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The head's bytes as received.
    pub raw: Vec<u8>,
}

impl ResponseHead {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header_of(&self.headers, name)
    }
}

fn header_of<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Something the parser found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete request head; `end` is where it ends in this input.
    Request {
        /// The head.
        head: Box<RequestHead>,
        /// End offset in the input.
        end: usize,
    },
    /// A complete response head (1xx included; those have no body and no `End`).
    Response {
        /// The head.
        head: Box<ResponseHead>,
        /// End offset in the input.
        end: usize,
    },
    /// Decoded body bytes at this range of the input.
    Body(Range<usize>),
    /// The current message is complete at `end`.
    End {
        /// End offset in the input.
        end: usize,
    },
    /// Opaque bytes after an upgrade or CONNECT; no more HTTP on this side.
    Tunnel(Range<usize>),
}

impl Event {
    /// Offset in the input where this event's bytes end.
    pub fn end(&self) -> usize {
        match self {
            Event::Request { end, .. } | Event::Response { end, .. } | Event::End { end } => *end,
            Event::Body(r) | Event::Tunnel(r) => r.end,
        }
    }
}

/// What a response will look like, learned from the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// An ordinary request.
    Normal,
    /// HEAD: the response never has a body.
    Head,
    /// CONNECT: a 2xx response turns the connection into a tunnel.
    Connect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Tunnel,
    Failed,
}

/// Streaming HTTP/1.1 parser for one direction.
#[derive(Debug)]
pub struct Parser {
    direction: Direction,
    limits: Limits,
    state: State,
    /// Bytes of an incomplete head, chunk-size line or trailer section.
    buf: Vec<u8>,
    /// After this message, switch to tunnel (request with Upgrade/CONNECT).
    tunnel_after: bool,
    /// Methods of forwarded requests whose responses are outstanding.
    expect: VecDeque<Expect>,
}

impl Parser {
    /// Creates a parser of the messages sent in `direction`.
    pub fn new(direction: Direction, limits: Limits) -> Self {
        Parser {
            direction,
            limits,
            state: State::Head,
            buf: Vec::new(),
            tunnel_after: false,
            expect: VecDeque::new(),
        }
    }

    /// Tells a response parser what the next outstanding request was.
    pub fn expect_response(&mut self, e: Expect) {
        // Bounded by the number of pipelined requests the request side
        // accepted; cap anyway so a flood of requests cannot grow it.
        if self.expect.len() < 1024 {
            self.expect.push_back(e);
        }
    }

    /// Whether the parser has given up on this side (after an error).
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Whether this side is an opaque tunnel now.
    pub fn is_tunnel(&self) -> bool {
        self.state == State::Tunnel
    }

    /// Whether a message is in progress (bytes seen since the last `End`).
    pub fn mid_message(&self) -> bool {
        !(self.state == State::Head && self.buf.is_empty())
    }

    /// The sender closed; a read-until-close body ends here.
    pub fn finish(&mut self, events: &mut Vec<Event>, at: usize) {
        if self.state == State::UntilClose {
            self.state = State::Head;
            events.push(Event::End { end: at });
        }
    }

    /// Parses `input`, appending events; an error leaves the parser failed.
    pub fn push(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<(), Http1Error> {
        let mut pos = 0usize;
        while let Some(rest @ [first, ..]) = input.get(pos..) {
            match self.state {
                State::Failed => return Ok(()),
                State::Tunnel => {
                    events.push(Event::Tunnel(pos..input.len()));
                    pos = input.len();
                }
                State::Head => {
                    // Skip empty lines between pipelined messages (RFC 9112 §2.2).
                    if self.buf.is_empty() && matches!(first, b'\r' | b'\n') {
                        pos += 1;
                        continue;
                    }
                    let start_scan = self.buf.len().saturating_sub(3);
                    let room = self.limits.max_head.saturating_sub(self.buf.len());
                    let take_max = rest.len().min(room + 1);
                    self.buf
                        .extend_from_slice(rest.get(..take_max).unwrap_or(rest));
                    match find_head_end(&self.buf, start_scan) {
                        Some(end) => {
                            let surplus = self.buf.len() - end;
                            self.buf.truncate(end);
                            pos += take_max - surplus;
                            let raw = std::mem::take(&mut self.buf);
                            if let Err(e) = self.on_head(raw, pos, events) {
                                self.state = State::Failed;
                                return Err(e);
                            }
                        }
                        None => {
                            pos += take_max;
                            if self.buf.len() > self.limits.max_head {
                                self.state = State::Failed;
                                return Err(Http1Error::HeadTooLarge(self.limits.max_head));
                            }
                        }
                    }
                }
                State::Length(rem) => {
                    let n = rem.min((input.len() - pos) as u64) as usize;
                    events.push(Event::Body(pos..pos + n));
                    pos += n;
                    let left = rem - n as u64;
                    if left == 0 {
                        self.end_message(pos, events);
                    } else {
                        self.state = State::Length(left);
                    }
                }
                State::UntilClose => {
                    events.push(Event::Body(pos..input.len()));
                    pos = input.len();
                }
                State::ChunkSize => {
                    let nl = rest.iter().position(|&b| b == b'\n');
                    let take = nl.map_or(rest.len(), |i| i + 1);
                    if self.buf.len() + take > 1024 {
                        self.state = State::Failed;
                        return Err(Http1Error::BadChunk);
                    }
                    self.buf.extend_from_slice(rest.get(..take).unwrap_or(rest));
                    pos += take;
                    if nl.is_some() {
                        let size = parse_chunk_size(&self.buf).ok_or(Http1Error::BadChunk);
                        self.buf.clear();
                        match size {
                            Ok(0) => self.state = State::Trailers,
                            Ok(n) => self.state = State::ChunkData(n),
                            Err(e) => {
                                self.state = State::Failed;
                                return Err(e);
                            }
                        }
                    }
                }
                State::ChunkData(rem) => {
                    let n = rem.min((input.len() - pos) as u64) as usize;
                    events.push(Event::Body(pos..pos + n));
                    pos += n;
                    let left = rem - n as u64;
                    self.state = if left == 0 {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkDataEnd => {
                    // CRLF after the chunk data (a bare LF is tolerated).
                    pos += 1;
                    if *first == b'\n' {
                        self.state = State::ChunkSize;
                    } else if *first != b'\r' {
                        self.state = State::Failed;
                        return Err(Http1Error::BadChunk);
                    }
                }
                State::Trailers => {
                    // Trailer section: lines until an empty line.
                    let nl = rest.iter().position(|&b| b == b'\n');
                    let take = nl.map_or(rest.len(), |i| i + 1);
                    if self.buf.len() + take > self.limits.max_head {
                        self.state = State::Failed;
                        return Err(Http1Error::HeadTooLarge(self.limits.max_head));
                    }
                    self.buf.extend_from_slice(rest.get(..take).unwrap_or(rest));
                    pos += take;
                    if nl.is_some() {
                        let line_empty = self.buf == b"\r\n" || self.buf == b"\n";
                        self.buf.clear();
                        if line_empty {
                            self.end_message(pos, events);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn end_message(&mut self, at: usize, events: &mut Vec<Event>) {
        events.push(Event::End { end: at });
        self.state = if self.tunnel_after {
            State::Tunnel
        } else {
            State::Head
        };
    }

    fn on_head(
        &mut self,
        raw: Vec<u8>,
        end: usize,
        events: &mut Vec<Event>,
    ) -> Result<(), Http1Error> {
        let mut storage = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        match self.direction {
            Direction::ToServer => {
                let mut req = httparse::Request::new(&mut storage);
                match req.parse(&raw) {
                    Ok(httparse::Status::Complete(_)) => {}
                    Ok(httparse::Status::Partial) => {
                        return Err(Http1Error::BadHead("incomplete head".into()))
                    }
                    Err(e) => return Err(Http1Error::BadHead(e.to_string())),
                }
                let method = req.method.unwrap_or("").to_string();
                let target = req.path.unwrap_or("").as_bytes().to_vec();
                let headers = collect_headers(req.headers);
                let framing = body_framing(&headers)?;
                let host = header_of(&headers, "host")
                    .map(|h| String::from_utf8_lossy(h).trim().to_ascii_lowercase())
                    .unwrap_or_default();
                let connect = method.eq_ignore_ascii_case("CONNECT");
                let upgrade = header_of(&headers, "upgrade").is_some();
                let uri = normalize_uri(&target);
                events.push(Event::Request {
                    head: Box::new(RequestHead {
                        method,
                        target,
                        uri,
                        host,
                        headers,
                        raw,
                    }),
                    end,
                });
                self.tunnel_after = connect || upgrade;
                match framing {
                    Framing::Chunked => self.state = State::ChunkSize,
                    Framing::Length(n) if n > 0 => self.state = State::Length(n),
                    _ => self.end_message(end, events),
                }
            }
            Direction::ToClient => {
                let mut resp = httparse::Response::new(&mut storage);
                match resp.parse(&raw) {
                    Ok(httparse::Status::Complete(_)) => {}
                    Ok(httparse::Status::Partial) => {
                        return Err(Http1Error::BadHead("incomplete head".into()))
                    }
                    Err(e) => return Err(Http1Error::BadHead(e.to_string())),
                }
                let status = resp.code.unwrap_or(0);
                let headers = collect_headers(resp.headers);
                let framing = body_framing(&headers)?;
                events.push(Event::Response {
                    head: Box::new(ResponseHead {
                        status,
                        headers,
                        raw,
                    }),
                    end,
                });
                if status == 101 {
                    self.state = State::Tunnel;
                    return Ok(());
                }
                if (100..200).contains(&status) {
                    // Interim response: the final one follows for the same request.
                    return Ok(());
                }
                let expect = self.expect.pop_front().unwrap_or(Expect::Normal);
                self.tunnel_after = expect == Expect::Connect && (200..300).contains(&status);
                let no_body = expect == Expect::Head || status == 204 || status == 304;
                if no_body || self.tunnel_after {
                    self.end_message(end, events);
                    return Ok(());
                }
                match framing {
                    Framing::Chunked => self.state = State::ChunkSize,
                    Framing::Length(0) => self.end_message(end, events),
                    Framing::Length(n) => self.state = State::Length(n),
                    Framing::None => self.state = State::UntilClose,
                }
            }
        }
        Ok(())
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn collect_headers(h: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

fn body_framing(headers: &[(String, Vec<u8>)]) -> Result<Framing, Http1Error> {
    let mut chunked = false;
    let mut length: Option<u64> = None;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked only counts as the final coding (RFC 9112 §6.3).
            let last = v.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = String::from_utf8_lossy(last)
                .trim()
                .eq_ignore_ascii_case("chunked");
        } else if n.eq_ignore_ascii_case("content-length") {
            let s = std::str::from_utf8(v).map_err(|_| Http1Error::BadContentLength)?;
            let n: u64 = s.trim().parse().map_err(|_| Http1Error::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Http1Error::BadContentLength);
            }
            length = Some(n);
        }
    }
    Ok(if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::None
    })
}

fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| match buf.get(i..)? {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|&b| b == b';').next().unwrap_or(line);
    let hex = std::str::from_utf8(hex).ok()?.trim();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// Events of one run, with body bytes resolved and adjacent bodies merged,
    /// so runs over different splits of the same input compare equal.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Flat {
        Req(RequestHead),
        Resp(ResponseHead),
        Body(Vec<u8>),
        End,
        Tunnel(Vec<u8>),
        Error(Http1Error),
    }

    fn push_flat(out: &mut Vec<Flat>, f: Flat) {
        match (out.last_mut(), f) {
            (Some(Flat::Body(a)), Flat::Body(b)) | (Some(Flat::Tunnel(a)), Flat::Tunnel(b)) => {
                a.extend_from_slice(&b)
            }
            (_, Flat::Body(b)) if b.is_empty() => {}
            (_, f) => out.push(f),
        }
    }

    pub(crate) fn run(direction: Direction, chunks: &[&[u8]], expect: &[Expect]) -> Vec<Flat> {
        let mut p = Parser::new(direction, Limits::default());
        for e in expect {
            p.expect_response(*e);
        }
        let mut out = Vec::new();
        let mut last_end = 0;
        for c in chunks {
            let mut ev = Vec::new();
            let r = p.push(c, &mut ev);
            for e in ev {
                assert!(e.end() <= c.len());
                match e {
                    Event::Request { head, .. } => push_flat(&mut out, Flat::Req(*head)),
                    Event::Response { head, .. } => push_flat(&mut out, Flat::Resp(*head)),
                    Event::Body(r) => push_flat(&mut out, Flat::Body(c[r].to_vec())),
                    Event::End { .. } => push_flat(&mut out, Flat::End),
                    Event::Tunnel(r) => push_flat(&mut out, Flat::Tunnel(c[r].to_vec())),
                }
            }
            if let Err(e) = r {
                out.push(Flat::Error(e));
                return out;
            }
            last_end = c.len();
        }
        let mut ev = Vec::new();
        p.finish(&mut ev, last_end);
        if !ev.is_empty() {
            push_flat(&mut out, Flat::End);
        }
        out
    }

    /// Checks that every split in two and byte-by-byte feeding give `whole`'s events.
    pub(crate) fn check_splits(direction: Direction, input: &[u8], expect: &[Expect]) -> Vec<Flat> {
        let whole = run(direction, &[input], expect);
        for i in 0..=input.len() {
            let split = run(direction, &[&input[..i], &input[i..]], expect);
            assert_eq!(split, whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(direction, &bytes, expect), whole, "byte by byte");
        whole
    }

    #[test]
    fn pipelined_requests_with_lengths_and_chunks() {
        let input = b"GET /a/../b%20c?q=1 HTTP/1.1\r\nHost: Example.COM\r\n\r\n\
POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello\
PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        let ev = check_splits(Direction::ToServer, input, &[]);
        assert_eq!(ev.len(), 8, "{ev:?}");
        let Flat::Req(r) = &ev[0] else { panic!() };
        assert_eq!(r.method, "GET");
        assert_eq!(r.host, "example.com");
        assert_eq!(r.target, b"/a/../b%20c?q=1");
        assert_eq!(r.uri, b"/b c?q=1");
        assert_eq!(ev[1], Flat::End);
        assert_eq!(ev[3], Flat::Body(b"hello".to_vec()));
        assert_eq!(ev[6], Flat::Body(b"abcde".to_vec()));
        assert_eq!(ev[7], Flat::End);
    }

    #[test]
    fn responses_head_connect_interim_and_close() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 200 OK\r\n\r\nuntil close";
        let ev = check_splits(
            Direction::ToClient,
            input,
            &[Expect::Normal, Expect::Head, Expect::Normal, Expect::Normal],
        );
        let kinds: Vec<&str> = ev
            .iter()
            .map(|e| match e {
                Flat::Resp(_) => "R",
                Flat::Body(_) => "B",
                Flat::End => "E",
                _ => "?",
            })
            .collect();
        assert_eq!(
            kinds,
            ["R", "R", "B", "E", "R", "E", "R", "E", "R", "B", "E"]
        );
        assert_eq!(ev[9], Flat::Body(b"until close".to_vec()));
    }

    #[test]
    fn upgrade_switches_both_sides_to_tunnel() {
        let req = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";
        let ev = check_splits(Direction::ToServer, req, &[]);
        assert_eq!(ev[2], Flat::Tunnel(b"\x81\x05hello".to_vec()));
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        let ev = check_splits(Direction::ToClient, resp, &[]);
        assert_eq!(ev[1], Flat::Tunnel(b"\x81\x02hi".to_vec()));
        let connect = b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01";
        let ev = check_splits(Direction::ToClient, connect, &[Expect::Connect]);
        assert_eq!(ev[2], Flat::Tunnel(b"\x16\x03\x01".to_vec()));
    }

    #[test]
    fn errors_are_typed_and_bounded() {
        let big = vec![b'a'; 70 * 1024];
        let ev = run(Direction::ToServer, &[b"GET / HTTP/1.1\r\nX: ", &big], &[]);
        assert_eq!(
            ev.last(),
            Some(&Flat::Error(Http1Error::HeadTooLarge(64 * 1024)))
        );
        let ev = check_splits(
            Direction::ToServer,
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &[],
        );
        assert_eq!(ev, vec![Flat::Error(Http1Error::BadContentLength)]);
        let ev = check_splits(
            Direction::ToServer,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            &[],
        );
        assert_eq!(ev.last(), Some(&Flat::Error(Http1Error::BadChunk)));
        let ev = check_splits(Direction::ToServer, b"\x00\x01 garbage\r\n\r\n", &[]);
        assert!(matches!(
            ev.last(),
            Some(Flat::Error(Http1Error::BadHead(_)))
        ));
    }

    #[test]
    fn every_prefix_never_panics() {
        let input = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n";
        for i in 0..=input.len() {
            run(Direction::ToServer, &[&input[..i]], &[]);
        }
    }
}
