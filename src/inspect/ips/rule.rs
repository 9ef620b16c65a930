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
///
/// Request-side and response-side variants of the same Suricata keyword
/// (`http.header`, `http.content_type`, `file.data`, ...) are separate
/// buffers: the parser picks the side from the rule's `flow` direction, as
/// Suricata does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buffer {
    /// The reassembled TCP payload of one direction (no sticky buffer); for
    /// `tls` rules, the ClientHello's records.
    Raw = 0,
    /// `http.uri`: the normalized request path and query.
    Uri,
    /// `http.uri.raw`: the request target as sent.
    UriRaw,
    /// `http.host`: the Host header / `:authority`, lower-cased.
    Host,
    /// `http.host.raw`: the Host header as sent.
    HostRaw,
    /// `http.method`.
    Method,
    /// `http.header`: `Name: value\r\n` lines of the request headers.
    Header,
    /// `http.header.raw`: the request header block as sent.
    HeaderRaw,
    /// `http.user_agent`.
    UserAgent,
    /// `http.request_body` / `file.data` to the server: decoded request body.
    RequestBody,
    /// `http.cookie` of a request: the Cookie header value.
    Cookie,
    /// `http.content_type` of a request.
    ContentType,
    /// `http.content_len` of a request.
    ContentLen,
    /// `http.referer`.
    Referer,
    /// `http.accept`.
    Accept,
    /// `http.accept_enc`.
    AcceptEnc,
    /// `http.accept_lang`.
    AcceptLang,
    /// `http.connection` of a request.
    Connection,
    /// `http.request_line`: `GET /x HTTP/1.1`.
    RequestLine,
    /// `http.header_names` of a request: `\r\nName\r\n...\r\n\r\n`.
    HeaderNames,
    /// `http.start` of a request: request line, headers, blank line.
    Start,
    /// `http.protocol` of a request: `HTTP/1.1`.
    Protocol,
    /// `http.response_body` / `file.data` to the client: the response body.
    ResponseBody,
    /// `http.stat_code`: the response status as three digits.
    StatCode,
    /// `http.stat_msg`: the reason phrase.
    StatMsg,
    /// `http.header` of a response.
    ResponseHeader,
    /// `http.header.raw` of a response.
    ResponseHeaderRaw,
    /// `http.response_line`: `HTTP/1.1 200 OK`.
    ResponseLine,
    /// `http.server`.
    Server,
    /// `http.location`.
    Location,
    /// `http.content_type` of a response.
    RespContentType,
    /// `http.content_len` of a response.
    RespContentLen,
    /// `http.cookie` of a response: the Set-Cookie header value.
    RespCookie,
    /// `http.header_names` of a response.
    RespHeaderNames,
    /// `http.start` of a response.
    RespStart,
    /// `http.protocol` of a response.
    RespProtocol,
    /// `http.connection` of a response.
    RespConnection,
    /// `tls.sni`: the ClientHello's server name.
    Sni,
    /// `ja4.hash`: the ClientHello's JA4 fingerprint.
    Ja4,
    /// `ja3.hash`: lower-case hex MD5 of the ClientHello's JA3 string.
    Ja3Hash,
    /// `ja3.string`: the ClientHello's JA3 string.
    Ja3String,
    /// `tls.cert_subject`: the upstream leaf's subject, `CN=.., O=..`.
    CertSubject,
    /// `tls.cert_issuer`: the upstream leaf's issuer.
    CertIssuer,
    /// `tls.cert_serial`: `00:AB:..`.
    CertSerial,
    /// `tls.cert_fingerprint`: SHA-1 of the leaf, `ab:cd:..`.
    CertFingerprint,
    /// `tls.certs`: each certificate of the upstream chain (DER), in turn.
    Certs,
}

/// Number of [`Buffer`] kinds.
pub const BUFFERS: usize = 46;

impl Buffer {
    /// All buffers, in index order.
    pub const ALL: [Buffer; BUFFERS] = [
        Buffer::Raw,
        Buffer::Uri,
        Buffer::UriRaw,
        Buffer::Host,
        Buffer::HostRaw,
        Buffer::Method,
        Buffer::Header,
        Buffer::HeaderRaw,
        Buffer::UserAgent,
        Buffer::RequestBody,
        Buffer::Cookie,
        Buffer::ContentType,
        Buffer::ContentLen,
        Buffer::Referer,
        Buffer::Accept,
        Buffer::AcceptEnc,
        Buffer::AcceptLang,
        Buffer::Connection,
        Buffer::RequestLine,
        Buffer::HeaderNames,
        Buffer::Start,
        Buffer::Protocol,
        Buffer::ResponseBody,
        Buffer::StatCode,
        Buffer::StatMsg,
        Buffer::ResponseHeader,
        Buffer::ResponseHeaderRaw,
        Buffer::ResponseLine,
        Buffer::Server,
        Buffer::Location,
        Buffer::RespContentType,
        Buffer::RespContentLen,
        Buffer::RespCookie,
        Buffer::RespHeaderNames,
        Buffer::RespStart,
        Buffer::RespProtocol,
        Buffer::RespConnection,
        Buffer::Sni,
        Buffer::Ja4,
        Buffer::Ja3Hash,
        Buffer::Ja3String,
        Buffer::CertSubject,
        Buffer::CertIssuer,
        Buffer::CertSerial,
        Buffer::CertFingerprint,
        Buffer::Certs,
    ];

    /// Whether the buffer is filled from a response.
    pub fn is_response(self) -> bool {
        (Buffer::ResponseBody as usize..=Buffer::RespConnection as usize).contains(&(self as usize))
    }

    /// Whether the buffer is filled from the TLS handshake.
    pub fn is_tls(self) -> bool {
        self as usize >= Buffer::Sni as usize
    }

    /// Whether the buffer comes from the upstream certificate chain.
    pub fn is_cert(self) -> bool {
        self as usize >= Buffer::CertSubject as usize
    }

    /// The response-side buffer of a keyword that names either side
    /// (`http.header` in a `flow:to_client` rule is the response's headers).
    pub fn to_response(self) -> Buffer {
        match self {
            Buffer::Header => Buffer::ResponseHeader,
            Buffer::HeaderRaw => Buffer::ResponseHeaderRaw,
            Buffer::RequestBody => Buffer::ResponseBody,
            Buffer::Cookie => Buffer::RespCookie,
            Buffer::ContentType => Buffer::RespContentType,
            Buffer::ContentLen => Buffer::RespContentLen,
            Buffer::Connection => Buffer::RespConnection,
            Buffer::HeaderNames => Buffer::RespHeaderNames,
            Buffer::Start => Buffer::RespStart,
            Buffer::Protocol => Buffer::RespProtocol,
            other => other,
        }
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
    /// `startswith`: the match begins at the start of the buffer.
    pub startswith: bool,
    /// `endswith`: the match ends at the end of the buffer.
    pub endswith: bool,
    /// `fast_pattern` was given.
    pub fast_pattern: bool,
    /// Searcher for this literal, built once at load.
    pub searcher: Option<AhoCorasick>,
    /// Positions taken from `byte_extract` variables at match time.
    pub vars: PosVars,
}

/// Most `byte_extract` variables one rule may define.
pub const MAX_VARS: usize = 8;

/// The values of a rule's `byte_extract` variables during one match.
pub type VarValues = [u64; MAX_VARS];

/// Which of a content's positions name a `byte_extract` variable (its
/// slot); the field itself then holds a placeholder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosVars {
    /// `offset:<var>`.
    pub offset: Option<u8>,
    /// `depth:<var>`.
    pub depth: Option<u8>,
    /// `distance:<var>`.
    pub distance: Option<u8>,
    /// `within:<var>`.
    pub within: Option<u8>,
}

impl Content {
    /// Whether the match position depends on the previous match.
    pub fn relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

/// Steps fancy-regex may backtrack per search before giving up (no match),
/// as Suricata's PCRE `match-limit` bounds a search: untrusted bytes must
/// not buy unbounded CPU.
pub const BACKTRACK_LIMIT: usize = 100_000;

/// A byte range of a match: start, end.
pub type Span = (usize, usize);

/// A compiled `pcre` expression.
///
/// Most expressions compile to the regex crate's automata, which run in
/// time linear in the input. The few that need backtracking — look-around
/// and backreferences, which the automata cannot express — run on
/// fancy-regex in byte mode (ASCII classes, `.` any byte but newline, as
/// PCRE without its UTF flag), bounded by [`BACKTRACK_LIMIT`].
#[derive(Debug, Clone)]
pub enum Regex {
    /// Linear-time automata.
    Automata(regex::bytes::Regex),
    /// Look-around or backreferences.
    Backtracking(Box<fancy_regex::Regex>),
}

impl Regex {
    /// The first match starting at or after `at` (`^` still means the start
    /// of `hay`): its byte range.
    pub fn find_at(&self, hay: &[u8], at: usize) -> Option<(usize, usize)> {
        match self {
            Regex::Automata(re) => re.find_at(hay, at).map(|m| (m.start(), m.end())),
            // An exceeded backtrack limit is no match, as in Suricata.
            Regex::Backtracking(re) => re
                .find_from_pos(hay, at)
                .ok()
                .flatten()
                .map(|m| (m.start(), m.end())),
        }
    }

    /// Whether the expression matches anywhere in `hay`.
    pub fn is_match(&self, hay: &[u8]) -> bool {
        self.find_at(hay, 0).is_some()
    }

    /// The first match at or after `at` and its first capture group (when
    /// the expression has one and it took part).
    pub fn captures_at(&self, hay: &[u8], at: usize) -> Option<(Span, Option<Span>)> {
        match self {
            Regex::Automata(re) => {
                let c = re.captures_at(hay, at)?;
                let whole = c.get(0)?;
                Some((
                    (whole.start(), whole.end()),
                    c.get(1).map(|g| (g.start(), g.end())),
                ))
            }
            Regex::Backtracking(re) => {
                let c = re.captures_from_pos(hay, at).ok()??;
                let whole = c.get(0)?;
                Some((
                    (whole.start(), whole.end()),
                    c.get(1).map(|g| (g.start(), g.end())),
                ))
            }
        }
    }
}

/// One `pcre` keyword.
#[derive(Debug, Clone)]
pub struct Pcre {
    /// The compiled expression.
    pub re: Regex,
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

/// A numeric comparison (`bsize`, `urilen`, `dsize` forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `N`.
    Eq(u64),
    /// `!N`.
    Ne(u64),
    /// `<N`.
    Lt(u64),
    /// `<=N`.
    Le(u64),
    /// `>N`.
    Gt(u64),
    /// `>=N`.
    Ge(u64),
    /// `A<>B`: strictly between.
    Between(u64, u64),
}

impl Cmp {
    /// Whether `v` satisfies the comparison.
    pub fn holds(self, v: u64) -> bool {
        match self {
            Cmp::Eq(n) => v == n,
            Cmp::Ne(n) => v != n,
            Cmp::Lt(n) => v < n,
            Cmp::Le(n) => v <= n,
            Cmp::Gt(n) => v > n,
            Cmp::Ge(n) => v >= n,
            Cmp::Between(a, b) => a < v && v < b,
        }
    }
}

/// How `byte_test` / `byte_jump` read a number from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRead {
    /// Bytes to read.
    pub nbytes: usize,
    /// From the previous match instead of the buffer start.
    pub relative: bool,
    /// Offset from that position (may be negative when relative).
    pub offset: i64,
    /// Little-endian (binary reads).
    pub little: bool,
    /// `string,hex|dec|oct`: the bytes are digits in this base.
    pub string_base: Option<u32>,
    /// `bitmask`.
    pub bitmask: Option<u64>,
    /// The offset is this `byte_extract` variable's value (`offset` unused).
    pub offset_var: Option<u8>,
}

/// The operator of a `byte_test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOp {
    /// `<`.
    Lt,
    /// `>`.
    Gt,
    /// `=`.
    Eq,
    /// `<=`.
    Le,
    /// `>=`.
    Ge,
    /// `&`: any bit of the value set.
    And,
    /// `^`: bitwise xor is non-zero.
    Xor,
}

/// A buffer condition in rule order.
#[derive(Debug, Clone)]
pub enum Item {
    /// A literal.
    Content(Content),
    /// A regular expression.
    Pcre(Pcre),
    /// `isdataat`: data exists at `n` (from the previous match if relative).
    IsDataAt {
        /// Position.
        n: usize,
        /// From the previous match.
        relative: bool,
        /// `isdataat:!`.
        negated: bool,
        /// `n` is this `byte_extract` variable's value.
        n_var: Option<u8>,
    },
    /// `bsize` / `urilen`: the buffer's length.
    Size(Cmp),
    /// `byte_test`.
    ByteTest {
        /// How to read the number.
        read: ByteRead,
        /// Operator.
        op: ByteOp,
        /// `!` before the operator.
        negated: bool,
        /// The value compared against.
        value: u64,
        /// `value` is this `byte_extract` variable's value.
        value_var: Option<u8>,
    },
    /// `byte_extract`: reads a number into a variable of the rule and
    /// moves the match position past the bytes read.
    ByteExtract {
        /// How to read the number.
        read: ByteRead,
        /// `multiplier`.
        multiplier: u64,
        /// `align 2|4`: round the value up to a multiple (0: none).
        align: u8,
        /// The variable's slot.
        var: u8,
    },
    /// `byte_jump`: moves the match position by the number read.
    ByteJump {
        /// How to read the number.
        read: ByteRead,
        /// `multiplier`.
        multiplier: u64,
        /// `post_offset`.
        post_offset: i64,
        /// `align`: round up to a multiple of 4.
        align: bool,
        /// `from_beginning`: jump from the buffer start.
        from_beginning: bool,
    },
    /// `base64_decode` with the conditions of its `base64_data`: the
    /// decoded bytes must satisfy `data` (a buffer of their own, as
    /// Suricata's `base64_data`).
    Base64 {
        /// `bytes`: most input bytes decoded (none: the rest of the buffer).
        bytes: Option<usize>,
        /// `offset` from the buffer start, or from the previous match.
        offset: usize,
        /// `relative`.
        relative: bool,
        /// Conditions on the decoded data, in rule order.
        data: Vec<Item>,
    },
}

/// The conditions a rule puts on one buffer.
#[derive(Debug, Clone)]
pub struct Group {
    /// The buffer.
    pub buffer: Buffer,
    /// `dotprefix` transform: the buffer is inspected with a `.` in front.
    pub dotprefix: bool,
    /// Conditions in rule order.
    pub items: Vec<Item>,
}

/// What a `flowbits` / `xbits` keyword does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitCmd {
    /// `set`.
    Set,
    /// `unset`.
    Unset,
    /// `toggle`.
    Toggle,
    /// `isset`.
    IsSet,
    /// `isnotset`.
    IsNotSet,
}

impl BitCmd {
    /// Whether the command is a condition (evaluated before the match).
    pub fn is_check(self) -> bool {
        matches!(self, BitCmd::IsSet | BitCmd::IsNotSet)
    }
}

/// One `flowbits` keyword: names are interned into `ids` at compile time.
#[derive(Debug, Clone)]
pub struct FlowBit {
    /// Command.
    pub cmd: BitCmd,
    /// Bit names.
    pub names: Vec<String>,
    /// `a|b` (any) instead of `a&b` (all) for checks.
    pub any: bool,
    /// Interned ids of `names`.
    pub ids: Vec<u32>,
}

/// Protocol anomalies the HTTP parser raises, as `app-layer-event` names
/// them (bits of [`Rule::app_events`] and of the inspected message).
pub mod app_event {
    /// `http.invalid_transfer_encoding_value_in_request`: the request has a
    /// `Transfer-Encoding` field none of whose codings is `chunked`, as
    /// libhtp (Suricata's HTTP/1 parser) flags it.
    pub const HTTP_INVALID_TE_REQUEST: u32 = 1;

    /// The bit of an event name, if this engine raises that event.
    pub fn by_name(name: &str) -> Option<u32> {
        match name {
            "http.invalid_transfer_encoding_value_in_request" => Some(HTTP_INVALID_TE_REQUEST),
            _ => None,
        }
    }
}

/// What a `flowint` does with the flow's integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    /// `=`: set it.
    Set,
    /// `+`: add (an unset integer starts at the operand).
    Add,
    /// `-`: subtract (only from a set integer).
    Sub,
    /// `<`, `<=`, `>`, `>=`, `==`, `!=`: compare (an unset integer never
    /// compares true).
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `isset`.
    IsSet,
    /// `notset` / `isnotset`.
    NotSet,
}

impl IntOp {
    /// Whether the operation is a condition (evaluated before the match).
    pub fn is_check(self) -> bool {
        !matches!(self, IntOp::Set | IntOp::Add | IntOp::Sub)
    }
}

/// The operand of a `flowint`: a number or another flowint of the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntValue {
    /// A literal.
    Number(u32),
    /// Another flowint's name (its interned id in [`FlowInt::ids`]).
    Var(String),
}

/// One `flowint` keyword (Suricata's flow integers, `u32` as there):
/// names are interned into `ids` at compile time.
#[derive(Debug, Clone)]
pub struct FlowInt {
    /// The integer's name.
    pub name: String,
    /// The operation.
    pub op: IntOp,
    /// The operand (none for `isset`/`notset`).
    pub value: Option<IntValue>,
    /// Interned ids: of `name`, then of the operand when it is a name.
    pub ids: Vec<u32>,
}

/// Whose address an `xbits` bit or a threshold counter is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// `ip_src` / `by_src`.
    Src,
    /// `ip_dst` / `by_dst`.
    Dst,
    /// `ip_pair` / `by_both`.
    Pair,
    /// `by_rule`: one counter for the rule.
    Rule,
}

/// One `xbits` keyword (host-tracked bits shared by all flows).
#[derive(Debug, Clone)]
pub struct XBit {
    /// Command.
    pub cmd: BitCmd,
    /// Bit name.
    pub name: String,
    /// Whose address the bit is kept for.
    pub track: Track,
    /// `expire` seconds (for `set`/`toggle`); Suricata's default is 30.
    pub expire: u64,
}

/// `threshold` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdKind {
    /// Alert on the first `count` matches per window.
    Limit,
    /// Alert on every `count`-th match in a window.
    Threshold,
    /// Alert once per window, at the `count`-th match.
    Both,
    /// `detection_filter`: alert on every match after the `count`-th in a window.
    DetectionFilter,
}

/// A `threshold` or `detection_filter` keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    /// Type.
    pub kind: ThresholdKind,
    /// Counter per source, destination, pair or rule.
    pub track: Track,
    /// `count`.
    pub count: u64,
    /// `seconds`.
    pub seconds: u64,
}

/// `tls.version` / `ssl_version` condition: the versions that match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsVersions {
    /// Wire versions (`0x0303` = TLS 1.2); empty = any.
    pub versions: Vec<u16>,
}

/// The handshake steps `ssl_state` names, as bits of its flags.
pub mod ssl_state {
    /// `client_hello`: the ClientHello step.
    pub const CLIENT_HELLO: u8 = 1;
    /// `server_hello`: the server's hello flight (the certificate step).
    pub const SERVER_HELLO: u8 = 2;
}

/// `ssl_state`: which handshake steps match, as Suricata evaluates it on
/// the state of the message just parsed: `(flags & current) ^ mask != 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslState {
    /// The states named.
    pub flags: u8,
    /// The states named with `!`.
    pub mask: u8,
}

impl SslState {
    /// Whether the condition holds at the step whose state is `current`.
    pub fn holds(self, current: u8) -> bool {
        (self.flags & current) ^ self.mask != 0
    }
}

/// Whose bytes `stream_size` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSide {
    /// `server`: bytes the server sent.
    Server,
    /// `client`: bytes the client sent.
    Client,
    /// `both`: each side's count satisfies the comparison.
    Both,
    /// `either`: one side's count does.
    Either,
}

/// `stream_size:<side>,<op>,<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSize {
    /// Whose bytes.
    pub side: StreamSide,
    /// The comparison.
    pub cmp: Cmp,
}

impl StreamSize {
    /// Whether the counts (client's, server's) satisfy the condition.
    pub fn holds(self, client: u64, server: u64) -> bool {
        match self.side {
            StreamSide::Server => self.cmp.holds(server),
            StreamSide::Client => self.cmp.holds(client),
            StreamSide::Both => self.cmp.holds(client) && self.cmp.holds(server),
            StreamSide::Either => self.cmp.holds(client) || self.cmp.holds(server),
        }
    }
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
    /// `tls`: the handshake of every in-scope TLS connection.
    Tls,
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
    /// Conditions per buffer, in rule order within each buffer.
    pub groups: Vec<Group>,
    /// `flowbits`, in rule order.
    pub flowbits: Vec<FlowBit>,
    /// `xbits`, in rule order.
    pub xbits: Vec<XBit>,
    /// `flowint`, in rule order.
    pub flowints: Vec<FlowInt>,
    /// `threshold` or `detection_filter`.
    pub threshold: Option<Threshold>,
    /// `noalert` (also `flowbits:noalert`): match for side effects only.
    pub noalert: bool,
    /// `tls.version` / `ssl_version`.
    pub tls_version: Option<TlsVersions>,
    /// `app-layer-event`: the [`app_event`] bits that must all be raised.
    pub app_events: u32,
    /// `ssl_state`.
    pub ssl_state: Option<SslState>,
    /// `dsize`: the size of the chunk of stream data inspected.
    pub dsize: Option<Cmp>,
    /// `stream_size`.
    pub stream_size: Option<StreamSize>,
    /// The literal the prefilter keys on, and its buffer.
    pub fast_pattern: Option<(Buffer, Vec<u8>)>,
    /// Where the rule was defined, `file:line`.
    pub origin: String,
}

impl Rule {
    /// Whether the rule inspects anything a response fills.
    pub fn uses_response(&self) -> bool {
        self.groups.iter().any(|g| g.buffer.is_response())
    }

    /// Whether the rule inspects the raw stream.
    pub fn uses_raw(&self) -> bool {
        self.groups.iter().any(|g| g.buffer == Buffer::Raw)
    }

    /// Whether the rule inspects an HTTP buffer (a request's or a
    /// response's, not the raw stream).
    pub fn uses_http(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.buffer != Buffer::Raw && !g.buffer.is_tls())
    }

    /// Whether the rule is evaluated on the TLS handshake.
    pub fn uses_tls(&self) -> bool {
        self.proto == Proto::Tls || self.groups.iter().any(|g| g.buffer.is_tls())
    }

    /// Whether the rule needs the upstream certificate (or is to the
    /// client, or its `ssl_state` holds only at the server's hello).
    pub fn uses_cert(&self) -> bool {
        self.flow.to_client
            || self.groups.iter().any(|g| g.buffer.is_cert())
            || self.ssl_state.is_some_and(|s| {
                s.holds(ssl_state::SERVER_HELLO) && !s.holds(ssl_state::CLIENT_HELLO)
            })
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
