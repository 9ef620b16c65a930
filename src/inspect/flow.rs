//! The per-flow inspector handed to the data plane: recognises the
//! protocol from ALPN or the first client bytes, hands the plaintext to the
//! HTTP/1.1 or HTTP/2 handler, runs the raw-stream IPS rules over every
//! byte, and gives the flow's alerts and report back.

use std::sync::Arc;

use tlsinspect_pipeline::api::{
    Alert, ConnAction, Direction, Emit, FlowInspector, FlowMeta, InspectReport,
};

use super::http1::H1;
use super::http2::{self, H2};
use super::verdict::{Core, IpsOutcome};
use super::Shared;

/// Protocol state of a flow.
enum Proto {
    /// Waiting for enough client bytes to recognise the protocol.
    Detect(Vec<u8>),
    Http1(Box<H1>),
    Http2(Box<H2>),
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

impl Flow {
    pub(crate) fn new(shared: Arc<Shared>, meta: &FlowMeta) -> Self {
        let core = Core::new(
            shared,
            (meta.src.ip(), meta.src.port()),
            (meta.dest.ip(), meta.dest.port()),
        );
        let proto = match meta.alpn.as_deref() {
            Some(b"h2") => Proto::Http2(Box::new(H2::new(&core.shared.limits))),
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
        let n = buf.len().min(http2::PREFACE.len());
        if buf[..n] == http2::PREFACE[..n] {
            return (n == http2::PREFACE.len()).then_some(true);
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
                            Proto::Http2(Box::new(H2::new(&self.core.shared.limits)))
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
        self.core.take_alerts()
    }

    fn finish(&mut self) -> InspectReport {
        self.core.take_report()
    }
}

#[cfg(test)]
#[path = "flow_tests.rs"]
pub(crate) mod tests;
