//! HTTP/2 observation and enforcement on one connection.
//!
//! Frames are followed in both directions; flow control is left to the
//! endpoints. Two things are deliberately not pass-through:
//!
//! * Request HEADERS toward the server are re-encoded by us. A denied
//!   stream's HEADERS must never reach the server, and simply dropping a
//!   header block would desynchronise the server's HPACK table from the
//!   client's; owning the encoding toward the server keeps both consistent
//!   whatever we drop. We encode every field as a literal without indexing
//!   (never-indexed for credentials), so the server's dynamic table stays
//!   empty and its SETTINGS_HEADER_TABLE_SIZE can never be exceeded; the cost
//!   is a few hundred bytes per request of lost header compression. A request is held (HEADERS and DATA)
//!   until decided, bounded so that the client's flow-control window can
//!   never be exhausted by our holding.
//! * A denied stream is answered toward the client with a `403` HEADERS frame
//!   whose header block uses only literals without indexing, so the client's
//!   HPACK table (owned by the server's encoder) is untouched. No DATA frame is
//!   sent: it would consume connection flow-control credit the server does
//!   not know about. The 403 of a denied upload waits for the end of its body
//!   (up to `DENIED_BODY_MAX`, then with RST_STREAM NO_ERROR), and every
//!   request DATA frame we discard is refunded to the client with a
//!   connection WINDOW_UPDATE, since the server never sees it.
//!
//! Everything else (SETTINGS, PING, WINDOW_UPDATE, responses) is forwarded
//! byte for byte at frame boundaries.

#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::ops::Range;

use loona_hpack::encoder::encode_integer_into;
use loona_hpack::Decoder;
use tlsinspect_pipeline::api::{Direction, Emit};

use super::text::normalize_uri;
use super::verdict::{Core, IpsOutcome, Txn};
use super::EngineLimits;

/// The client connection preface (RFC 9113 §3.4).
pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;
/// Largest frame we buffer (the client may allow up to 16 MiB; real peers use 16 KiB).
const MAX_FRAME: usize = 1 << 20;
/// Most request bytes held across all undecided streams; below the 65,535
/// byte initial connection window so a client can always make progress.
const MAX_HELD_TOTAL: usize = 48 * 1024;
/// Largest header block (all fragments) we collect.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Request body bytes of a denied stream we discard before answering.
/// A denied upload's 403 waits until the client has sent its body (up to
/// this much): curl 7.88 fails a transfer whose 403 arrives while it is still
/// uploading (it either stops sending and waits for a close, or errors out
/// on a RST_STREAM), and a real server answers after the body anyway.
/// Beyond this, the 403 goes out with RST_STREAM (NO_ERROR) to stop it.
const DENIED_BODY_MAX: usize = 16 * 1024;

/// Writes a frame header.
pub fn frame_header(out: &mut Vec<u8>, len: usize, ty: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// A frame in the input: buffered (it straddled chunks) or a range of the input.
enum FrameRef {
    Owned(Vec<u8>),
    In(Range<usize>),
}

impl FrameRef {
    /// The frame, `data` being the input it was cut from.
    fn frame<'a>(&'a self, data: &'a [u8]) -> Option<Frame<'a>> {
        Frame::parse(match self {
            FrameRef::Owned(v) => v,
            FrameRef::In(r) => data.get(r.clone())?,
        })
    }
}

/// One whole frame: its bytes, header fields and payload.
#[derive(Clone, Copy)]
struct Frame<'a> {
    raw: &'a [u8],
    ty: u8,
    flags: u8,
    sid: u32,
    body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Reads the 9-byte header of `raw`; `None` if it is shorter.
    fn parse(raw: &'a [u8]) -> Option<Self> {
        let [_, _, _, ty, flags, s0, s1, s2, s3, body @ ..] = raw else {
            return None;
        };
        Some(Frame {
            raw,
            ty: *ty,
            flags: *flags,
            sid: u32::from_be_bytes([*s0, *s1, *s2, *s3]) & 0x7fff_ffff,
            body,
        })
    }
}

/// Splits a byte stream into whole frames, buffering at most one partial frame.
#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
}

/// The payload length of the frame `h` starts with, once its whole 9-byte
/// header is there.
fn frame_len(h: &[u8]) -> Option<usize> {
    let [a, b, c, _, _, _, _, _, _, ..] = h else {
        return None;
    };
    Some((usize::from(*a) << 16) | (usize::from(*b) << 8) | usize::from(*c))
}

impl Framer {
    fn split(&mut self, data: &[u8], out: &mut Vec<FrameRef>) -> Result<(), String> {
        let mut pos = 0;
        if !self.buf.is_empty() {
            pos = 9usize.saturating_sub(self.buf.len()).min(data.len());
            self.buf.extend_from_slice(data.get(..pos).unwrap_or(data));
            let Some(len) = frame_len(&self.buf) else {
                return Ok(());
            };
            if len > MAX_FRAME {
                return Err(format!("frame of {len} bytes exceeds {MAX_FRAME}"));
            }
            let need = 9 + len - self.buf.len();
            let n = need.min(data.len() - pos);
            self.buf
                .extend_from_slice(data.get(pos..pos + n).unwrap_or_default());
            pos += n;
            if self.buf.len() < 9 + len {
                return Ok(());
            }
            out.push(FrameRef::Owned(std::mem::take(&mut self.buf)));
        }
        while let Some(len) = data.get(pos..).and_then(frame_len) {
            if len > MAX_FRAME {
                return Err(format!("frame of {len} bytes exceeds {MAX_FRAME}"));
            }
            if data.len() - pos < 9 + len {
                break;
            }
            out.push(FrameRef::In(pos..pos + 9 + len));
            pos += 9 + len;
        }
        self.buf
            .extend_from_slice(data.get(pos..).unwrap_or_default());
        Ok(())
    }
}

/// Payload of a HEADERS or DATA frame without padding and priority fields.
fn payload<'a>(frame: &Frame<'a>) -> Option<&'a [u8]> {
    let mut p = frame.body;
    let mut pad = 0usize;
    if (frame.ty == DATA || frame.ty == HEADERS) && frame.flags & PADDED != 0 {
        let (n, rest) = p.split_first()?;
        pad = usize::from(*n);
        p = rest;
    }
    if frame.ty == HEADERS && frame.flags & PRIORITY_FLAG != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SState {
    /// Undecided: frames are held.
    Held,
    /// Allowed: frames are forwarded.
    Forward,
    /// Denied: frames from the client are discarded.
    Denied,
}

enum HeldFrame {
    Headers(Vec<(Vec<u8>, Vec<u8>)>, bool),
    Raw(Vec<u8>),
}

struct Stream {
    state: SState,
    txn: Option<Box<Txn>>,
    held: Vec<HeldFrame>,
    held_bytes: usize,
    body: Vec<u8>,
    /// The client finished sending (END_STREAM seen).
    client_done: bool,
    /// The response has ended or the stream was reset.
    resp_done: bool,
    /// Request body bytes discarded since the stream was denied.
    discarded: usize,
    /// Denied, and the 403 waits for the end of the request body.
    answer_pending: bool,
}

/// A header block being collected (HEADERS + CONTINUATION).
struct Block {
    stream: u32,
    end_stream: bool,
    frag: Vec<u8>,
}

/// HTTP/2 state of one connection.
pub struct H2 {
    preface_left: usize,
    c_framer: Framer,
    s_framer: Framer,
    dec_req: Decoder<'static>,
    dec_resp: Decoder<'static>,
    c_block: Option<Block>,
    s_block: Option<Block>,
    streams: HashMap<u32, Stream>,
    /// Highest client stream id seen.
    last_stream: u32,
    /// Recently denied streams (bounded): late frames for them are dropped,
    /// since the server never saw these streams.
    denied: std::collections::VecDeque<u32>,
    /// Frames toward the client waiting for a frame boundary.
    inject: Vec<u8>,
    /// The server's first frame (its SETTINGS) has been forwarded.
    server_started: bool,
    /// The server's SETTINGS_MAX_FRAME_SIZE (limits frames we send it).
    server_max_frame: usize,
    /// The server's SETTINGS_INITIAL_WINDOW_SIZE: a client cannot send more
    /// body than this on a stream before the server reads, so holding more
    /// would deadlock.
    server_initial_window: usize,
    max_streams: usize,
    max_body: usize,
    /// Server-to-client parsing gave up: forward raw.
    s_failed: bool,
    /// Client-to-server parsing gave up (not HTTP/2): forward raw.
    c_failed: bool,
    frames: Vec<FrameRef>,
}

impl H2 {
    /// Creates the state for a new connection.
    pub fn new(limits: &EngineLimits) -> Self {
        let mut dec_req = Decoder::new();
        dec_req.set_max_allowed_table_size(64 * 1024);
        let mut dec_resp = Decoder::new();
        dec_resp.set_max_allowed_table_size(64 * 1024);
        H2 {
            preface_left: PREFACE.len(),
            c_framer: Framer::default(),
            s_framer: Framer::default(),
            dec_req,
            dec_resp,
            c_block: None,
            s_block: None,
            streams: HashMap::new(),
            last_stream: 0,
            denied: std::collections::VecDeque::new(),
            inject: Vec::new(),
            server_started: false,
            server_max_frame: 16384,
            server_initial_window: 65535,
            max_streams: limits.max_h2_streams,
            max_body: limits.max_request_body.min(MAX_HELD_TOTAL),
            s_failed: false,
            c_failed: false,
            frames: Vec::new(),
        }
    }

    /// Handles plaintext in `dir`; true when the connection must be reset.
    pub(crate) fn on_data(
        &mut self,
        core: &mut Core,
        dir: Direction,
        data: &[u8],
        out: &mut Emit,
    ) -> bool {
        match dir {
            Direction::ToServer => self.client_bytes(core, data, out),
            Direction::ToClient => self.server_bytes(core, data, out),
        }
    }

    fn client_bytes(&mut self, core: &mut Core, mut data: &[u8], out: &mut Emit) -> bool {
        if self.c_failed {
            out.to_server.extend_from_slice(data);
            return false;
        }
        if self.preface_left > 0 {
            let expected = PREFACE.get(PREFACE.len() - self.preface_left..);
            let n = self.preface_left.min(data.len());
            if !expected.is_some_and(|e| data.iter().zip(e).all(|(a, b)| a == b)) {
                core.anomaly(
                    "HTTP/2 connection preface is malformed; passing uninspected".into(),
                    "alert",
                );
                self.c_failed = true;
                out.to_server.extend_from_slice(data);
                return false;
            }
            out.to_server
                .extend_from_slice(data.get(..n).unwrap_or(data));
            self.preface_left -= n;
            data = data.get(n..).unwrap_or_default();
        }
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        if let Err(e) = self.c_framer.split(data, &mut frames) {
            core.anomaly(format!("HTTP/2 request side: {e}"), "drop");
            return true;
        }
        let mut reset = false;
        for f in frames.drain(..) {
            // The framer cuts whole frames only.
            let Some(frame) = f.frame(data) else {
                continue;
            };
            if self.client_frame(core, frame, out) {
                reset = true;
                break;
            }
        }
        self.frames = frames;
        if !reset {
            self.flush_inject(out);
        }
        reset
    }

    fn client_frame(&mut self, core: &mut Core, frame: Frame<'_>, out: &mut Emit) -> bool {
        let Frame { ty, flags, sid, .. } = frame;
        if let Some(block) = self.c_block.as_mut() {
            if ty != CONTINUATION || sid != block.stream {
                core.anomaly(
                    "HTTP/2 header block interrupted by another frame".into(),
                    "drop",
                );
                return true;
            }
            if block.frag.len() + frame.body.len() > MAX_HEADER_BLOCK {
                core.anomaly(
                    format!("HTTP/2 request header block exceeds {MAX_HEADER_BLOCK} bytes"),
                    "drop",
                );
                return true;
            }
            block.frag.extend_from_slice(frame.body);
            if flags & END_HEADERS != 0 {
                return self.client_headers(core, out);
            }
            return false;
        }
        if ty != HEADERS
            && sid != 0
            && !self.streams.contains_key(&sid)
            && self.denied.contains(&sid)
        {
            // A late frame (DATA, WINDOW_UPDATE, RST_STREAM) of a denied stream.
            if ty == DATA {
                self.refund(&frame);
            }
            return false;
        }
        match ty {
            HEADERS => {
                let Some(p) = payload(&frame) else {
                    core.anomaly("HTTP/2 HEADERS frame has bad padding".into(), "drop");
                    return true;
                };
                self.c_block = Some(Block {
                    stream: sid,
                    end_stream: flags & END_STREAM != 0,
                    frag: p.to_vec(),
                });
                if flags & END_HEADERS != 0 {
                    return self.client_headers(core, out);
                }
                false
            }
            DATA => {
                let Some(st) = self.streams.get_mut(&sid) else {
                    out.to_server.extend_from_slice(frame.raw);
                    return false;
                };
                let end = flags & END_STREAM != 0;
                let mut refund = 0;
                match st.state {
                    SState::Forward => out.to_server.extend_from_slice(frame.raw),
                    SState::Denied => {
                        refund = frame.body.len();
                        st.discarded += refund;
                    }
                    SState::Held => {
                        st.held.push(HeldFrame::Raw(frame.raw.to_vec()));
                        st.held_bytes += frame.raw.len();
                        if let Some(p) = payload(&frame) {
                            st.body.extend_from_slice(p);
                        }
                    }
                }
                if end {
                    st.client_done = true;
                }
                // Some(reset): the pending 403 goes out now.
                let mut answer = None;
                if st.state == SState::Denied && st.answer_pending {
                    if st.client_done {
                        answer = Some(false);
                    } else if st.discarded > DENIED_BODY_MAX {
                        // Late frames find the sid among the denied and are dropped.
                        st.client_done = true;
                        answer = Some(true);
                    }
                    st.answer_pending = answer.is_none();
                }
                let held = st.state == SState::Held;
                let limit = self.max_body.min(self.server_initial_window).max(1);
                let (done, over) = (st.client_done, st.body.len() >= limit);
                if refund > 0 {
                    self.refund(&frame);
                }
                if let Some(reset) = answer {
                    self.deny_stream(sid, reset, "");
                }
                if held && (done || over || self.held_total() > MAX_HELD_TOTAL) {
                    if over || !done {
                        core.anomaly(
                            format!(
                                "HTTP/2 request body beyond {} bytes is not inspected",
                                self.max_body
                            ),
                            "alert",
                        );
                    }
                    if self.decide(core, sid, out) {
                        return true;
                    }
                }
                self.reap(sid);
                false
            }
            PRIORITY | RST_STREAM | WINDOW_UPDATE if sid != 0 => {
                match self.streams.get_mut(&sid).map(|s| s.state) {
                    Some(SState::Denied) => {
                        if ty == RST_STREAM {
                            if let Some(s) = self.streams.get_mut(&sid) {
                                s.client_done = true;
                                s.resp_done = true;
                                s.answer_pending = false;
                            }
                        }
                    }
                    Some(SState::Held) => {
                        if ty == RST_STREAM {
                            // The client cancelled a request the server never saw.
                            self.streams.remove(&sid);
                        } else if let Some(s) = self.streams.get_mut(&sid) {
                            s.held.push(HeldFrame::Raw(frame.raw.to_vec()));
                        }
                    }
                    _ => {
                        if ty == RST_STREAM {
                            if let Some(s) = self.streams.get_mut(&sid) {
                                s.client_done = true;
                                s.resp_done = true;
                            }
                        }
                        out.to_server.extend_from_slice(frame.raw);
                    }
                }
                self.reap(sid);
                false
            }
            _ => {
                out.to_server.extend_from_slice(frame.raw);
                false
            }
        }
    }

    fn held_total(&self) -> usize {
        self.streams.values().map(|s| s.held_bytes).sum()
    }

    /// Decodes a complete request header block and acts on it.
    fn client_headers(&mut self, core: &mut Core, out: &mut Emit) -> bool {
        let Some(block) = self.c_block.take() else {
            return false;
        };
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut total = 0usize;
        let r = self.dec_req.decode_with_cb(&block.frag, |n, v| {
            total += n.len() + v.len() + 32;
            if total <= MAX_HEADER_BLOCK {
                fields.push((n.into_owned(), v.into_owned()));
            }
        });
        if let Err(e) = r {
            core.anomaly(format!("HTTP/2 request HPACK error: {e:?}"), "drop");
            return true;
        }
        if total > MAX_HEADER_BLOCK {
            core.anomaly(
                format!("HTTP/2 decoded request headers exceed {MAX_HEADER_BLOCK} bytes"),
                "drop",
            );
            return true;
        }
        let sid = block.stream;
        if !self.streams.contains_key(&sid) && self.denied.contains(&sid) {
            // Trailers of a denied stream: decoded (to keep HPACK in sync), dropped.
            return false;
        }
        if let Some(st) = self.streams.get_mut(&sid) {
            // Trailers on an existing stream.
            match st.state {
                SState::Forward => emit_headers(
                    self.server_max_frame,
                    sid,
                    &fields,
                    block.end_stream,
                    &mut out.to_server,
                ),
                SState::Held => {
                    st.held_bytes += block.frag.len();
                    st.held.push(HeldFrame::Headers(fields, block.end_stream));
                }
                SState::Denied => {}
            }
            if block.end_stream {
                st.client_done = true;
                if st.state == SState::Held {
                    return self.decide(core, sid, out);
                }
                if std::mem::take(&mut st.answer_pending) {
                    self.deny_stream(sid, false, "");
                }
            }
            self.reap(sid);
            return false;
        }
        // A new stream: streams must reach the server in id order, so any
        // request still held is decided now on what it has sent.
        let held: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.state == SState::Held)
            .map(|(k, _)| *k)
            .collect();
        for h in held {
            if self.decide(core, h, out) {
                return true;
            }
        }
        self.last_stream = self.last_stream.max(sid);
        if self.streams.len() >= self.max_streams {
            core.anomaly(
                format!(
                    "more than {} concurrent HTTP/2 streams; stream {sid} refused",
                    self.max_streams
                ),
                "deny",
            );
            // REFUSED_STREAM: the client may retry; the server never saw it.
            let mut f = Vec::new();
            frame_header(&mut f, 4, RST_STREAM, 0, sid);
            f.extend_from_slice(&7u32.to_be_bytes());
            self.inject.extend_from_slice(&f);
            if self.denied.len() >= 1024 {
                self.denied.pop_front();
            }
            self.denied.push_back(sid);
            return false;
        }
        let mut method = "";
        let mut path: &[u8] = b"";
        let mut authority: Option<&[u8]> = None;
        let mut host_hdr: Option<&[u8]> = None;
        let mut regular: Vec<(String, Vec<u8>)> = Vec::new();
        for (n, v) in &fields {
            match n.as_slice() {
                b":method" => method = std::str::from_utf8(v).unwrap_or(""),
                b":path" => path = v,
                b":authority" => authority = Some(v),
                b":scheme" | b":protocol" => {}
                _ => {
                    if n.as_slice() == b"host" {
                        host_hdr = Some(v);
                    }
                    regular.push((String::from_utf8_lossy(n).into_owned(), v.clone()));
                }
            }
        }
        let host = String::from_utf8_lossy(authority.or(host_hdr).unwrap_or(b""))
            .trim()
            .to_ascii_lowercase();
        let method = method.to_string();
        let path = path.to_vec();
        let uri = normalize_uri(&path);
        let mut txn = core.new_txn(&method, &host, &path, uri, &regular, None);
        if let Some(reason) = core.policy(&txn) {
            core.set_status(&mut txn, 403);
            // A client announcing 100-continue waits for us: answer now.
            let expects = regular.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case(b"100-continue")
            });
            let wait = !block.end_stream && !expects;
            if !wait {
                self.deny_stream(sid, !block.end_stream, &reason);
            }
            self.streams.insert(
                sid,
                Stream {
                    state: SState::Denied,
                    txn: None,
                    held: Vec::new(),
                    held_bytes: 0,
                    body: Vec::new(),
                    client_done: block.end_stream || !wait,
                    resp_done: true,
                    discarded: 0,
                    answer_pending: wait,
                },
            );
            self.reap(sid);
            return false;
        }
        let held_bytes = block.frag.len();
        self.streams.insert(
            sid,
            Stream {
                state: SState::Held,
                txn: Some(Box::new(txn)),
                held: vec![HeldFrame::Headers(fields, block.end_stream)],
                held_bytes,
                body: Vec::new(),
                client_done: block.end_stream,
                resp_done: false,
                discarded: 0,
                answer_pending: false,
            },
        );
        if block.end_stream {
            return self.decide(core, sid, out);
        }
        false
    }

    /// Queues a 403 toward the client on `sid`, and with `reset` a
    /// RST_STREAM (NO_ERROR): the response is complete and the rest of the
    /// request body is not wanted (RFC 9113 §8.1).
    fn deny_stream(&mut self, sid: u32, reset: bool, _reason: &str) {
        // Literals without indexing: `:status: 403` (name index 8),
        // `content-length: 0` (name index 28), `cache-control: no-store` (24).
        let mut block = vec![0x08, 3, b'4', b'0', b'3'];
        block.extend_from_slice(&[0x0f, 28 - 15, 1, b'0']);
        block.extend_from_slice(&[0x0f, 24 - 15, 8]);
        block.extend_from_slice(b"no-store");
        let mut f = Vec::new();
        frame_header(&mut f, block.len(), HEADERS, END_HEADERS | END_STREAM, sid);
        f.extend_from_slice(&block);
        if reset {
            frame_header(&mut f, 4, RST_STREAM, 0, sid);
            f.extend_from_slice(&0u32.to_be_bytes());
        }
        self.inject.extend_from_slice(&f);
    }

    /// Gives the client back the connection flow-control credit of a DATA
    /// frame that the server never sees: the server will never send a
    /// WINDOW_UPDATE for it, and without this every discarded byte would
    /// shrink the client's connection window until the connection stalls.
    fn refund(&mut self, frame: &Frame<'_>) {
        let len = frame.body.len();
        if len > 0 {
            frame_header(&mut self.inject, 4, WINDOW_UPDATE, 0, 0);
            self.inject.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }

    /// Decides a held stream; true when the connection must be reset.
    fn decide(&mut self, core: &mut Core, sid: u32, out: &mut Emit) -> bool {
        let Some(st) = self.streams.get_mut(&sid) else {
            return false;
        };
        if st.state != SState::Held {
            return false;
        }
        let Some(mut txn) = st.txn.take() else {
            return false;
        };
        let body = std::mem::take(&mut st.body);
        let o = core.ips_request(&txn, (!body.is_empty()).then_some(body.as_slice()));
        match o {
            IpsOutcome::Drop => return true,
            IpsOutcome::Reject => {
                core.set_status(&mut txn, 403);
                st.state = SState::Denied;
                let held = std::mem::take(&mut st.held);
                st.held_bytes = 0;
                st.resp_done = true;
                // Decided on all of the body or beyond the inspected part:
                // a client still sending is stopped.
                let sending = !st.client_done;
                st.client_done = true;
                self.deny_stream(sid, sending, "blocked by an intrusion prevention rule");
                for h in &held {
                    if let Some(f) = match h {
                        HeldFrame::Raw(f) => Frame::parse(f).filter(|f| f.ty == DATA),
                        HeldFrame::Headers(..) => None,
                    } {
                        self.refund(&f);
                    }
                }
                self.reap(sid);
                return false;
            }
            IpsOutcome::Continue => {}
        }
        st.state = SState::Forward;
        st.txn = Some(txn);
        st.held_bytes = 0;
        let held = std::mem::take(&mut st.held);
        for h in held {
            match h {
                HeldFrame::Headers(fields, end) => {
                    emit_headers(self.server_max_frame, sid, &fields, end, &mut out.to_server)
                }
                HeldFrame::Raw(f) => out.to_server.extend_from_slice(&f),
            }
        }
        false
    }

    fn reap(&mut self, sid: u32) {
        if let Some(s) = self.streams.get(&sid) {
            if s.client_done && s.resp_done {
                if s.state == SState::Denied {
                    if self.denied.len() >= 1024 {
                        self.denied.pop_front();
                    }
                    self.denied.push_back(sid);
                }
                self.streams.remove(&sid);
            }
        }
    }

    fn flush_inject(&mut self, out: &mut Emit) {
        // Only whole frames are ever emitted toward the client, so between
        // frames is always a boundary, except inside a header block.
        if !self.inject.is_empty()
            && self.server_started
            && !self.s_failed
            && self.s_block.is_none()
        {
            out.to_client.append(&mut self.inject);
        }
    }

    fn server_bytes(&mut self, core: &mut Core, data: &[u8], out: &mut Emit) -> bool {
        if self.s_failed {
            out.to_client.extend_from_slice(data);
            return false;
        }
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        if let Err(e) = self.s_framer.split(data, &mut frames) {
            core.anomaly(
                format!("HTTP/2 response side: {e}; passing uninspected"),
                "alert",
            );
            self.s_failed = true;
            out.to_client.extend_from_slice(data);
            return false;
        }
        let mut reset = false;
        for f in frames.drain(..) {
            // The framer cuts whole frames only.
            let Some(frame) = f.frame(data) else {
                continue;
            };
            if self.server_frame(core, frame) {
                reset = true;
                break;
            }
            out.to_client.extend_from_slice(frame.raw);
            self.server_started = true;
            self.flush_inject(out);
        }
        self.frames = frames;
        if self.s_failed {
            // Whatever is buffered goes out as is.
            out.to_client.append(&mut self.s_framer.buf);
        }
        reset
    }

    /// Observes one server frame; true when the connection must be reset.
    fn server_frame(&mut self, core: &mut Core, frame: Frame<'_>) -> bool {
        let Frame { ty, flags, sid, .. } = frame;
        let header_end = match (ty, self.s_block.as_mut()) {
            (CONTINUATION, Some(b)) if b.stream == sid => {
                if b.frag.len() + frame.raw.len() > MAX_HEADER_BLOCK {
                    core.anomaly(
                        "HTTP/2 response header block too large; passing uninspected".into(),
                        "alert",
                    );
                    self.s_failed = true;
                    return false;
                }
                b.frag.extend_from_slice(frame.body);
                flags & END_HEADERS != 0
            }
            (HEADERS, None) => {
                let Some(p) = payload(&frame) else {
                    core.anomaly("HTTP/2 response HEADERS has bad padding".into(), "alert");
                    self.s_failed = true;
                    return false;
                };
                self.s_block = Some(Block {
                    stream: sid,
                    end_stream: flags & END_STREAM != 0,
                    frag: p.to_vec(),
                });
                flags & END_HEADERS != 0
            }
            (_, Some(_)) => {
                core.anomaly(
                    "HTTP/2 response header block interrupted; passing uninspected".into(),
                    "alert",
                );
                self.s_failed = true;
                return false;
            }
            (DATA, None) => {
                let end = flags & END_STREAM != 0;
                if let (Some(st), Some(p)) = (self.streams.get_mut(&sid), payload(&frame)) {
                    if let Some(txn) = st.txn.as_mut() {
                        if !p.is_empty() && core.ips_response(txn, Some(p)) != IpsOutcome::Continue
                        {
                            return true;
                        }
                        if end && core.ips_response_end(txn) != IpsOutcome::Continue {
                            return true;
                        }
                    }
                    if end {
                        st.resp_done = true;
                    }
                }
                self.reap(sid);
                return false;
            }
            (RST_STREAM, None) => {
                if let Some(st) = self.streams.get_mut(&sid) {
                    st.resp_done = true;
                    st.client_done = true;
                }
                self.reap(sid);
                return false;
            }
            (SETTINGS, None) if flags & 0x1 == 0 => {
                let settings = frame.body.chunks_exact(6).map(<[u8; 6]>::try_from);
                for [i0, i1, v0, v1, v2, v3] in settings.filter_map(Result::ok) {
                    let id = u16::from_be_bytes([i0, i1]);
                    let v = u32::from_be_bytes([v0, v1, v2, v3]) as usize;
                    if id == 5 && (16384..=16_777_215).contains(&v) {
                        self.server_max_frame = v;
                    }
                    if id == 4 {
                        self.server_initial_window = v;
                    }
                }
                return false;
            }
            _ => return false,
        };
        if !header_end {
            return false;
        }
        let Some(block) = self.s_block.take() else {
            return false;
        };
        let mut status: Option<u16> = None;
        let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let r = self.dec_resp.decode_with_cb(&block.frag, |n, v| {
            if n.as_ref() == b":status" {
                status = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok());
            } else if size < MAX_HEADER_BLOCK {
                size += n.len() + v.len() + 4;
                fields.push((String::from_utf8_lossy(&n).into_owned(), v.to_vec()));
            }
        });
        if let Err(e) = r {
            core.anomaly(
                format!("HTTP/2 response HPACK error: {e:?}; passing uninspected"),
                "alert",
            );
            self.s_failed = true;
            return false;
        }
        if let Some(st) = self.streams.get_mut(&block.stream) {
            if let (Some(txn), Some(s)) = (st.txn.as_mut(), status) {
                if s >= 200 {
                    core.response_head(txn, s, &fields, None);
                    if core.ips_response(txn, None) != IpsOutcome::Continue {
                        return true;
                    }
                }
            }
            if block.end_stream {
                st.resp_done = true;
            }
        }
        self.reap(block.stream);
        false
    }
}

/// HPACK-encodes `fields` as literals that never touch the dynamic table.
pub fn encode_literal_block(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
    for (n, v) in fields {
        let sensitive = matches!(
            n.as_slice(),
            b"authorization" | b"proxy-authorization" | b"cookie"
        );
        // 0000xxxx = literal without indexing, 0001xxxx = never indexed; index 0 = new name.
        out.push(if sensitive { 0x10 } else { 0x00 });
        for s in [n, v] {
            // Writing into a Vec cannot fail.
            let _ = encode_integer_into(s.len(), 7, 0, &mut out);
            out.extend_from_slice(s);
        }
    }
    out
}

/// HPACK-encodes `fields` and writes HEADERS (+ CONTINUATION) frames.
fn emit_headers(
    max_frame: usize,
    sid: u32,
    fields: &[(Vec<u8>, Vec<u8>)],
    end_stream: bool,
    out: &mut Vec<u8>,
) {
    let block = encode_literal_block(fields);
    let mut chunks = block.chunks(max_frame.max(1)).peekable();
    let mut first = true;
    if block.is_empty() {
        frame_header(
            out,
            0,
            HEADERS,
            END_HEADERS | if end_stream { END_STREAM } else { 0 },
            sid,
        );
        return;
    }
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        let mut flags = if last { END_HEADERS } else { 0 };
        let ty = if first {
            if end_stream {
                flags |= END_STREAM;
            }
            HEADERS
        } else {
            CONTINUATION
        };
        frame_header(out, c.len(), ty, flags, sid);
        out.extend_from_slice(c);
        first = false;
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
#[path = "http2_tests.rs"]
mod tests;
