//! The compiled form of one IPS rule.
//!
//! A rule is parsed once into this shape; the matcher only walks it. Each
//! content and pcre sits in the list of the buffer it inspects (the sticky
//! buffer in force when it was written), in rule order, because relative
//! modifiers (`distance`, `within`, pcre `R`) refer to the previous match in
//! the same buffer.

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use std::net::IpAddr;

/// What a rule does when it matches (in prevent mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Stop inspecting the flow; suppress other verdicts of the same step.
    Pass,
    /// Block: the request never reaches the server, the connection is reset.
    Drop,
    /// Block and answer: reset, and for HTTP a 403 to the client first.
    Reject,
    /// Log only.
    Alert,
}

impl Action {
    /// The rule-language and log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Reject => "reject",
            Action::Alert => "alert",
        }
    }
}

/// The data a content or pcre looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buffer {
    /// The reassembled TCP payload of one direction (no sticky buffer).
    Raw = 0,
    /// `http.uri`: the normalized request path and query.
    Uri,
    /// `http.uri.raw`: the request target as sent.
    UriRaw,
    /// `http.host`: the Host header / `:authority`, lower-cased.
    Host,
    /// `http.method`.
    Method,
    /// `http.header`: `Name: value\r\n` lines of the request headers.
    Header,
    /// `http.user_agent`.
    UserAgent,
    /// `http.request_body`: decoded request body (dechunked).
    RequestBody,
    /// `http.response_body`: decoded response body.
    ResponseBody,
    /// `http.stat_code`: the response status as three digits.
    StatCode,
    /// `http.response_header`: `Name: value\r\n` lines of the response headers.
    ResponseHeader,
}

/// Number of [`Buffer`] kinds.
pub const BUFFERS: usize = 11;

impl Buffer {
    /// All buffers, in index order.
    pub const ALL: [Buffer; BUFFERS] = [
        Buffer::Raw,
        Buffer::Uri,
        Buffer::UriRaw,
        Buffer::Host,
        Buffer::Method,
        Buffer::Header,
        Buffer::UserAgent,
        Buffer::RequestBody,
        Buffer::ResponseBody,
        Buffer::StatCode,
        Buffer::ResponseHeader,
    ];

    /// Whether the buffer is filled from a response.
    pub fn is_response(self) -> bool {
        matches!(
            self,
            Buffer::ResponseBody | Buffer::StatCode | Buffer::ResponseHeader
        )
    }
}

/// One `content` keyword with its modifiers.
#[derive(Debug, Clone)]
pub struct Content {
    /// The literal bytes.
    pub pattern: Vec<u8>,
    /// `nocase`.
    pub nocase: bool,
    /// `content:!"..."`.
    pub negated: bool,
    /// `offset`.
    pub offset: Option<usize>,
    /// `depth`.
    pub depth: Option<usize>,
    /// `distance` (may be negative).
    pub distance: Option<i64>,
    /// `within`.
    pub within: Option<usize>,
    /// `fast_pattern` was given.
    pub fast_pattern: bool,
    /// Searcher for this literal, built once at load.
    pub searcher: Option<AhoCorasick>,
}

impl Content {
    /// Whether the match position depends on the previous match.
    pub fn relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

/// One `pcre` keyword.
#[derive(Debug, Clone)]
pub struct Pcre {
    /// The compiled expression.
    pub re: regex::bytes::Regex,
    /// `pcre:!"..."`.
    pub negated: bool,
    /// `R`: search from the end of the previous match.
    pub relative: bool,
    /// tlsinspect extension `luhn;`: the match (or its first group) must be
    /// a number passing the Luhn check.
    pub luhn: bool,
    /// The expression as written, for reports.
    pub source: String,
}

/// A content or pcre in a buffer's list.
#[derive(Debug, Clone)]
pub enum Item {
    /// A literal.
    Content(Content),
    /// A regular expression.
    Pcre(Pcre),
}

/// A set of addresses: `any` when `include` is empty, minus `exclude`.
#[derive(Debug, Clone, Default)]
pub struct AddrSet {
    /// Networks that match (empty = any).
    pub include: Vec<IpNet>,
    /// Networks that never match.
    pub exclude: Vec<IpNet>,
}

impl AddrSet {
    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        (self.include.is_empty() || self.include.iter().any(|n| n.contains(&ip)))
            && !self.exclude.iter().any(|n| n.contains(&ip))
    }
}

/// A set of ports: `any` when `include` is empty, minus `exclude`.
#[derive(Debug, Clone, Default)]
pub struct PortSet {
    /// Inclusive ranges that match (empty = any).
    pub include: Vec<(u16, u16)>,
    /// Inclusive ranges that never match.
    pub exclude: Vec<(u16, u16)>,
}

impl PortSet {
    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        (self.include.is_empty() || self.include.iter().any(|&(a, b)| (a..=b).contains(&port)))
            && !self.exclude.iter().any(|&(a, b)| (a..=b).contains(&port))
    }
}

/// Which protocol the header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `tcp`, `ip`, `any`: every inspected stream.
    Any,
    /// `http`, `http1`, `http2`: only streams parsed as HTTP.
    Http,
}

/// The `flow` keyword.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowOpts {
    /// `to_server` / `from_client`.
    pub to_server: bool,
    /// `to_client` / `from_server`.
    pub to_client: bool,
}

/// A parsed, compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Action.
    pub action: Action,
    /// Protocol of the header.
    pub proto: Proto,
    /// Source addresses.
    pub src: AddrSet,
    /// Source ports.
    pub sport: PortSet,
    /// Destination addresses.
    pub dst: AddrSet,
    /// Destination ports.
    pub dport: PortSet,
    /// `<>` instead of `->`.
    pub bidirectional: bool,
    /// `flow` options.
    pub flow: FlowOpts,
    /// `sid`.
    pub sid: u64,
    /// `rev`.
    pub rev: u32,
    /// `msg`.
    pub msg: String,
    /// `classtype`.
    pub classtype: Option<String>,
    /// `priority`.
    pub priority: Option<u8>,
    /// Items per buffer, in rule order within each buffer.
    pub groups: Vec<(Buffer, Vec<Item>)>,
    /// The literal the prefilter keys on, and its buffer.
    pub fast_pattern: Option<(Buffer, Vec<u8>)>,
    /// Where the rule was defined, `file:line`.
    pub origin: String,
}

impl Rule {
    /// Whether the rule inspects anything a response fills.
    pub fn uses_response(&self) -> bool {
        self.groups.iter().any(|(b, _)| b.is_response())
    }

    /// Whether the rule inspects the raw stream.
    pub fn uses_raw(&self) -> bool {
        self.groups.iter().any(|(b, _)| *b == Buffer::Raw)
    }

    /// Whether the header and `flow` let the rule see data from `from` to `to`.
    pub fn applies(&self, from: (IpAddr, u16), to: (IpAddr, u16), to_server: bool) -> bool {
        if (self.flow.to_server && !to_server) || (self.flow.to_client && to_server) {
            return false;
        }
        let fwd = self.src.contains(from.0)
            && self.sport.contains(from.1)
            && self.dst.contains(to.0)
            && self.dport.contains(to.1);
        fwd || (self.bidirectional
            && self.src.contains(to.0)
            && self.sport.contains(to.1)
            && self.dst.contains(from.0)
            && self.dport.contains(from.1))
    }
}
