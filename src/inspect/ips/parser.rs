//! Parser for the supported subset of the Suricata rule language.
//!
//! The rule text is untrusted (operators paste rules from feeds), so every
//! failure is a typed [`RuleError`] that names the keyword; the loader skips
//! that rule and reports it. A rule is compiled completely or not at all:
//! any keyword we do not implement makes the whole rule unsupported, because
//! a rule with a dropped condition would fire on traffic it was written to
//! ignore.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use ipnet::IpNet;

use super::rule::{
    ssl_state, Action, AddrSet, BitCmd, Buffer, ByteOp, ByteRead, Cmp, Content, FlowBit, FlowInt,
    FlowOpts, Group, IntOp, IntValue, Item, Pcre, PortSet, PosVars, Proto, Regex, Rule, SslState,
    StreamSide, StreamSize, Threshold, ThresholdKind, TlsVersions, Track, XBit, BACKTRACK_LIMIT,
    MAX_VARS,
};

/// Why a rule could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A keyword (or keyword value) this engine does not implement.
    #[error("unsupported keyword `{0}`")]
    Unsupported(String),
    /// The rule is malformed.
    #[error("{0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError::Invalid(msg.into()))
}

/// Address and port variables (`$HOME_NET`, `$HTTP_PORTS`, ...).
#[derive(Debug, Clone)]
pub struct Vars {
    /// Address variables by name without `$`.
    pub addresses: HashMap<String, String>,
    /// Port variables by name without `$`.
    pub ports: HashMap<String, String>,
}

impl Default for Vars {
    /// Suricata's shipped defaults (RFC 1918 is home, the rest external),
    /// except that `HTTP_PORTS` includes 443.
    fn default() -> Self {
        let mut a = HashMap::new();
        a.insert(
            "HOME_NET".into(),
            "[10.0.0.0/8,172.16.0.0/12,192.168.0.0/16]".into(),
        );
        a.insert("EXTERNAL_NET".into(), "!$HOME_NET".into());
        for v in [
            "HTTP_SERVERS",
            "SMTP_SERVERS",
            "SQL_SERVERS",
            "DNS_SERVERS",
            "TELNET_SERVERS",
            "AIM_SERVERS",
            "DC_SERVERS",
            "DNP3_SERVER",
            "DNP3_CLIENT",
            "MODBUS_CLIENT",
            "MODBUS_SERVER",
            "ENIP_CLIENT",
            "ENIP_SERVER",
        ] {
            a.insert(v.into(), "$HOME_NET".into());
        }
        let mut p = HashMap::new();
        for (k, v) in [
            // Suricata ships "80"; the HTTP this appliance inspects was
            // decrypted from 443, where the rules' `$HTTP_PORTS` must apply.
            ("HTTP_PORTS", "[80,443]"),
            ("SHELLCODE_PORTS", "!80"),
            ("ORACLE_PORTS", "1521"),
            ("SSH_PORTS", "22"),
            ("DNP3_PORTS", "20000"),
            ("MODBUS_PORTS", "502"),
            ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
            ("FTP_PORTS", "21"),
            ("GENEVE_PORTS", "6081"),
            ("VXLAN_PORTS", "4789"),
            ("TEREDO_PORTS", "3544"),
        ] {
            p.insert(k.into(), v.into());
        }
        Vars {
            addresses: a,
            ports: p,
        }
    }
}

impl Vars {
    /// Suricata's defaults with `HOME_NET` set to `home` (when given), then
    /// the operator's groups (`[ips.address_groups]`, `[ips.port_groups]`)
    /// on top; every group is checked to resolve, and each problem is
    /// returned as (`address_groups`|`port_groups`, name, reason).
    pub fn with_groups(
        home: Option<String>,
        addresses: &[(String, String)],
        ports: &[(String, String)],
    ) -> Result<Vars, Vec<(&'static str, String, String)>> {
        let mut v = Vars::default();
        if let Some(h) = home {
            v.addresses.insert("HOME_NET".into(), h);
        }
        let mut errs = Vec::new();
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !n.starts_with(|c: char| c.is_ascii_digit())
        };
        for (kind, list, map) in [
            ("address_groups", addresses, &mut v.addresses),
            ("port_groups", ports, &mut v.ports),
        ] {
            for (n, val) in list {
                if !name_ok(n) {
                    errs.push((
                        kind,
                        n.clone(),
                        "a group name is letters, digits and `_`".into(),
                    ));
                }
                map.insert(n.clone(), val.clone());
            }
        }
        for (n, val) in addresses {
            if let Err(e) = parse_addr(val, &v) {
                errs.push(("address_groups", n.clone(), format!("{val:?}: {e}")));
            }
        }
        for (n, val) in ports {
            if let Err(e) = parse_ports(val, &v) {
                errs.push(("port_groups", n.clone(), format!("{val:?}: {e}")));
            }
        }
        if errs.is_empty() {
            Ok(v)
        } else {
            Err(errs)
        }
    }
}

/// Splits `s` on top-level whitespace, keeping `[...]` groups together.
fn header_tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if c.is_whitespace() && depth <= 0 {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// Splits a `[a, ![b, c], d]` list body on top-level commas.
fn list_items(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out
}

fn parse_addr(s: &str, vars: &Vars) -> Result<AddrSet, RuleError> {
    let mut set = AddrSet::default();
    let mut any = false;
    addr_into(s.trim(), false, vars, 0, &mut set, &mut any)?;
    if any {
        set.include.clear();
    }
    Ok(set)
}

fn addr_into(
    s: &str,
    neg: bool,
    vars: &Vars,
    depth: u32,
    set: &mut AddrSet,
    any: &mut bool,
) -> Result<(), RuleError> {
    if depth > 8 {
        return invalid(format!("address `{s}` nests too deeply"));
    }
    if let Some(rest) = s.strip_prefix('!') {
        return addr_into(rest.trim(), !neg, vars, depth + 1, set, any);
    }
    if let Some(body) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        for item in list_items(body) {
            if item.is_empty() {
                return invalid(format!("empty item in address list `{s}`"));
            }
            addr_into(item, neg, vars, depth + 1, set, any)?;
        }
        return Ok(());
    }
    if let Some(name) = s.strip_prefix('$') {
        let Some(v) = vars.addresses.get(name) else {
            return invalid(format!("unknown address variable `${name}`"));
        };
        return addr_into(v.trim(), neg, vars, depth + 1, set, any);
    }
    if s.eq_ignore_ascii_case("any") {
        if neg {
            return invalid("`!any` matches nothing");
        }
        *any = true;
        return Ok(());
    }
    let net: IpNet = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<std::net::IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return invalid(format!("bad address `{s}`")),
        },
    };
    if neg {
        set.exclude.push(net);
    } else {
        set.include.push(net);
    }
    Ok(())
}

fn parse_ports(s: &str, vars: &Vars) -> Result<PortSet, RuleError> {
    let mut set = PortSet::default();
    let mut any = false;
    ports_into(s.trim(), false, vars, 0, &mut set, &mut any)?;
    if any {
        set.include.clear();
    }
    Ok(set)
}

fn ports_into(
    s: &str,
    neg: bool,
    vars: &Vars,
    depth: u32,
    set: &mut PortSet,
    any: &mut bool,
) -> Result<(), RuleError> {
    if depth > 8 {
        return invalid(format!("port `{s}` nests too deeply"));
    }
    if let Some(rest) = s.strip_prefix('!') {
        return ports_into(rest.trim(), !neg, vars, depth + 1, set, any);
    }
    if let Some(body) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        for item in list_items(body) {
            if item.is_empty() {
                return invalid(format!("empty item in port list `{s}`"));
            }
            ports_into(item, neg, vars, depth + 1, set, any)?;
        }
        return Ok(());
    }
    if let Some(name) = s.strip_prefix('$') {
        let Some(v) = vars.ports.get(name) else {
            return invalid(format!("unknown port variable `${name}`"));
        };
        return ports_into(v.trim(), neg, vars, depth + 1, set, any);
    }
    if s.eq_ignore_ascii_case("any") {
        if neg {
            return invalid("`!any` matches nothing");
        }
        *any = true;
        return Ok(());
    }
    let port = |p: &str, dflt: u16| -> Result<u16, RuleError> {
        if p.is_empty() {
            return Ok(dflt);
        }
        p.trim()
            .parse::<u16>()
            .map_err(|_| RuleError::Invalid(format!("bad port `{s}`")))
    };
    let range = match s.split_once(':') {
        Some((a, b)) => (port(a, 0)?, port(b, 65535)?),
        None => {
            let p = port(s, 0)?;
            if s.is_empty() {
                return invalid("empty port");
            }
            (p, p)
        }
    };
    if range.0 > range.1 {
        return invalid(format!("port range `{s}` is reversed"));
    }
    if neg {
        set.exclude.push(range);
    } else {
        set.include.push(range);
    }
    Ok(())
}

/// Splits the option section into `(keyword, value)` pairs.
fn split_options(s: &str) -> Result<Vec<(String, Option<String>)>, RuleError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push('\\');
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => return invalid("option section ends in a backslash"),
                }
            }
            '"' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            ';' if !in_quote => {
                let opt = cur.trim();
                if !opt.is_empty() {
                    out.push(split_kv(opt));
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if in_quote {
        return invalid("unterminated quote in options");
    }
    if !cur.trim().is_empty() {
        return invalid(format!("option `{}` is not terminated by `;`", cur.trim()));
    }
    Ok(out)
}

fn split_kv(opt: &str) -> (String, Option<String>) {
    match opt.split_once(':') {
        Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
        None => (opt.trim().to_string(), None),
    }
}

/// Strips surrounding quotes and resolves `\x` escapes.
fn unquote(v: &str) -> String {
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(v);
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Decodes a content string: quotes, `\` escapes and `|41 42|` hex runs.
fn content_bytes(v: &str) -> Result<(bool, Vec<u8>), RuleError> {
    let v = v.trim();
    let (negated, v) = match v.strip_prefix('!') {
        Some(r) => (true, r.trim()),
        None => (false, v),
    };
    let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return invalid(format!("content `{v}` is not quoted"));
    };
    let b = inner.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let Some(&n) = b.get(i + 1) else {
                    return invalid("content ends in a backslash");
                };
                out.push(n);
                i += 2;
            }
            b'|' => {
                let Some(close) = b[i + 1..].iter().position(|&c| c == b'|') else {
                    return invalid(format!("unterminated hex run in content `{inner}`"));
                };
                let hex: Vec<u8> = b[i + 1..i + 1 + close]
                    .iter()
                    .copied()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                if hex.len() % 2 != 0 {
                    return invalid(format!("odd number of hex digits in content `{inner}`"));
                }
                for pair in hex.chunks(2) {
                    let s = std::str::from_utf8(pair).unwrap_or("zz");
                    match u8::from_str_radix(s, 16) {
                        Ok(x) => out.push(x),
                        Err(_) => return invalid(format!("bad hex `{s}` in content")),
                    }
                }
                i += close + 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    if out.is_empty() {
        return invalid("empty content");
    }
    Ok((negated, out))
}

fn parse_pcre(v: &str) -> Result<(Pcre, Option<(Buffer, bool)>), RuleError> {
    let v = v.trim();
    let (negated, v) = match v.strip_prefix('!') {
        Some(r) => (true, r.trim()),
        None => (false, v),
    };
    let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return invalid(format!("pcre `{v}` is not quoted"));
    };
    let Some(body) = inner.strip_prefix('/') else {
        return invalid(format!("pcre `{inner}` does not start with `/`"));
    };
    let Some(last) = body.rfind('/') else {
        return invalid(format!("pcre `{inner}` has no closing `/`"));
    };
    let (pat, flags) = (&body[..last], &body[last + 1..]);
    let mut inline = String::new();
    let mut anchored = false;
    let mut relative = false;
    let mut buffer = None;
    for f in flags.chars() {
        match f {
            'i' | 's' | 'm' | 'x' => inline.push(f),
            'G' => inline.push('U'),
            'A' => anchored = true,
            // `E` ($ only at the very end) is the regex crate's `$`
            // without `m`; `B` (rawbytes) and `O` (override the PCRE match
            // limit) change nothing for a non-backtracking engine.
            'E' | 'B' | 'O' => {}
            'R' => relative = true,
            'U' => buffer = Some((Buffer::Uri, false)),
            'I' => buffer = Some((Buffer::UriRaw, false)),
            'H' => buffer = Some((Buffer::Header, true)),
            'D' => buffer = Some((Buffer::HeaderRaw, true)),
            'C' => buffer = Some((Buffer::Cookie, true)),
            'P' => buffer = Some((Buffer::RequestBody, false)),
            'Q' => buffer = Some((Buffer::ResponseBody, false)),
            'M' => buffer = Some((Buffer::Method, false)),
            'V' => buffer = Some((Buffer::UserAgent, false)),
            'W' => buffer = Some((Buffer::Host, false)),
            'Z' => buffer = Some((Buffer::HostRaw, false)),
            'S' => buffer = Some((Buffer::StatCode, false)),
            'Y' => buffer = Some((Buffer::StatMsg, false)),
            other => return Err(RuleError::Unsupported(format!("pcre flag `{other}`"))),
        }
    }
    // PCRE without the UTF flag matches bytes; so does a non-Unicode regex.
    let mut src = String::new();
    if !inline.is_empty() {
        src.push_str(&format!("(?{inline})"));
    }
    if anchored {
        src.push_str("\\A");
    }
    src.push_str(&format!("(?:{})", pcre_escapes(pat)));
    let re = compile_pcre(&src)
        .map_err(|line| RuleError::Unsupported(format!("pcre /{pat}/ ({line})")))?;
    Ok((
        Pcre {
            re,
            negated,
            relative,
            luhn: false,
            source: format!("/{pat}/{flags}"),
        },
        buffer,
    ))
}

/// Rewrites the PCRE syntax the regex crates read differently.
///
/// - In PCRE a backslash before any ASCII character that is not a letter or
///   digit makes it literal (`\>`, `\/`, `\"`, `\ `); the regex crates
///   accept only their own metacharacters escaped, and read `\<` and `\>`
///   as word boundaries. Other punctuation becomes `\xHH`, which they read
///   as that byte, inside a class or out.
/// - Outside a class, a `{` that does not open a quantifier (`{n}`,
///   `{n,}`, `{n,m}`, `{,m}`) is a literal `{` in PCRE; it is escaped.
///   `{,m}` is `{0,m}`, as PCRE2 reads it since 10.43.
fn pcre_escapes(pat: &str) -> String {
    // The regex crate's escapable metacharacters (regex-syntax
    // `is_meta_character`), which keep their escape.
    const META: &str = "\\.+*?()|[]{}^$#&-~";
    let mut out = String::with_capacity(pat.len());
    let chars: Vec<char> = pat.chars().collect();
    // Inside `[...]`; `class_start` is where its first member may be (a
    // `]` there is literal).
    let mut in_class = false;
    let mut class_start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                match chars.get(i + 1) {
                    Some(&n) if n.is_ascii() && !n.is_ascii_alphanumeric() && !META.contains(n) => {
                        out.push_str(&format!("\\x{:02X}", n as u32));
                    }
                    Some(&n) => {
                        out.push('\\');
                        out.push(n);
                        // `\x{e9}`, `\p{L}`, `\k{name}`: the braces are the
                        // escape's, not a quantifier.
                        if "xpPkgo".contains(n) && chars.get(i + 2) == Some(&'{') {
                            if let Some(n) = chars[i + 2..].iter().position(|&c| c == '}') {
                                out.extend(&chars[i + 2..=i + 2 + n]);
                                i += n + 1;
                            }
                        }
                    }
                    None => out.push('\\'),
                }
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                class_start = i;
                continue;
            }
            ']' if in_class && i != class_start => in_class = false,
            '{' if !in_class => {
                let close = chars[i + 1..].iter().position(|&c| c == '}');
                let quant = close.and_then(|n| {
                    let body: String = chars[i + 1..i + 1 + n].iter().collect();
                    let (lo, hi) = match body.split_once(',') {
                        Some((lo, hi)) => (lo, Some(hi)),
                        None => (body.as_str(), None),
                    };
                    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                    match hi {
                        None if digits(lo) => Some(format!("{{{lo}}}")),
                        Some(hi) if digits(lo) && (hi.is_empty() || digits(hi)) => {
                            Some(format!("{{{lo},{hi}}}"))
                        }
                        Some(hi) if lo.is_empty() && digits(hi) => Some(format!("{{0,{hi}}}")),
                        _ => None,
                    }
                    .map(|q| (q, n))
                });
                match quant {
                    Some((q, n)) => {
                        out.push_str(&q);
                        i += n + 2;
                    }
                    None => {
                        out.push_str("\\{");
                        i += 1;
                    }
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Compiles a pcre's expression (flags already inline): on the regex
/// crate's automata where it can be expressed, else — look-around,
/// backreferences — on fancy-regex in byte mode. `Err` is the line of the
/// error to report.
fn compile_pcre(src: &str) -> Result<Regex, String> {
    let err = match regex::bytes::RegexBuilder::new(src)
        .unicode(false)
        .size_limit(2 << 20)
        .dfa_size_limit(2 << 20)
        .build()
    {
        Ok(re) => return Ok(Regex::Automata(re)),
        Err(e) => e.to_string(),
    };
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("cannot compile")
        .to_string();
    // Only what the automata lack goes to the backtracker: `(?P=name)` is
    // an "unrecognized flag" to the regex crate.
    let backtracking = ["look-around", "backreference", "unrecognized flag"]
        .iter()
        .any(|w| line.contains(w));
    if !backtracking {
        return Err(line);
    }
    fancy_regex::RegexBuilder::new(src)
        .bytes_mode(fancy_regex::BytesMode::Ascii)
        .backtrack_limit(BACKTRACK_LIMIT)
        .delegate_size_limit(2 << 20)
        .build()
        .map(|re| Regex::Backtracking(Box::new(re)))
        .map_err(|e| format!("error: {e}"))
}

/// A sticky buffer keyword: the buffer, and whether a `flow:to_client` rule
/// means the response's side of it.
fn sticky(keyword: &str) -> Option<(Buffer, bool)> {
    Some(match keyword {
        "pkt_data" => (Buffer::Raw, false),
        "http.uri" => (Buffer::Uri, false),
        "http.uri.raw" => (Buffer::UriRaw, false),
        "http.host" => (Buffer::Host, false),
        "http.host.raw" => (Buffer::HostRaw, false),
        "http.method" => (Buffer::Method, false),
        "http.header" => (Buffer::Header, true),
        "http.header.raw" => (Buffer::HeaderRaw, true),
        "http.user_agent" => (Buffer::UserAgent, false),
        "http.request_body" | "http_client_body_sticky" => (Buffer::RequestBody, false),
        "file.data" | "file_data" => (Buffer::RequestBody, true),
        "http.cookie" => (Buffer::Cookie, true),
        "http.content_type" => (Buffer::ContentType, true),
        "http.content_len" => (Buffer::ContentLen, true),
        "http.referer" => (Buffer::Referer, false),
        "http.accept" => (Buffer::Accept, false),
        "http.accept_enc" => (Buffer::AcceptEnc, false),
        "http.accept_lang" => (Buffer::AcceptLang, false),
        "http.connection" => (Buffer::Connection, true),
        "http.request_line" => (Buffer::RequestLine, false),
        "http.header_names" => (Buffer::HeaderNames, true),
        "http.start" => (Buffer::Start, true),
        "http.protocol" => (Buffer::Protocol, true),
        "http.response_body" => (Buffer::ResponseBody, false),
        "http.stat_code" => (Buffer::StatCode, false),
        "http.stat_msg" => (Buffer::StatMsg, false),
        "http.response_header" => (Buffer::ResponseHeader, false),
        "http.response_line" => (Buffer::ResponseLine, false),
        "http.server" => (Buffer::Server, false),
        "http.location" => (Buffer::Location, false),
        "tls.sni" | "tls_sni" => (Buffer::Sni, false),
        "ja4.hash" => (Buffer::Ja4, false),
        "ja3.hash" | "ja3_hash" => (Buffer::Ja3Hash, false),
        "ja3.string" | "ja3_string" => (Buffer::Ja3String, false),
        "tls.cert_subject" | "tls_cert_subject" => (Buffer::CertSubject, false),
        "tls.cert_issuer" | "tls_cert_issuer" => (Buffer::CertIssuer, false),
        "tls.cert_serial" | "tls_cert_serial" => (Buffer::CertSerial, false),
        "tls.cert_fingerprint" | "tls_cert_fingerprint" => (Buffer::CertFingerprint, false),
        "tls.certs" => (Buffer::Certs, false),
        _ => return None,
    })
}

/// Legacy (Suricata 4 / Snort) content modifiers that move the previous content.
fn legacy_modifier(keyword: &str) -> Option<(Buffer, bool)> {
    Some(match keyword {
        "http_uri" => (Buffer::Uri, false),
        "http_raw_uri" => (Buffer::UriRaw, false),
        "http_host" => (Buffer::Host, false),
        "http_raw_host" => (Buffer::HostRaw, false),
        "http_method" => (Buffer::Method, false),
        "http_header" => (Buffer::Header, true),
        "http_raw_header" => (Buffer::HeaderRaw, true),
        "http_cookie" => (Buffer::Cookie, true),
        "http_content_type" => (Buffer::ContentType, true),
        "http_user_agent" => (Buffer::UserAgent, false),
        "http_client_body" => (Buffer::RequestBody, false),
        "http_server_body" => (Buffer::ResponseBody, false),
        "http_stat_code" => (Buffer::StatCode, false),
        "http_stat_msg" => (Buffer::StatMsg, false),
        _ => return None,
    })
}

fn num<T: std::str::FromStr>(kw: &str, v: Option<&str>) -> Result<T, RuleError> {
    let Some(v) = v else {
        return invalid(format!("`{kw}` needs a value"));
    };
    v.trim()
        .parse::<T>()
        .map_err(|_| RuleError::Invalid(format!("bad `{kw}` value `{v}`")))
}

/// A decimal, or `0x` hexadecimal, unsigned number.
fn unum(kw: &str, s: &str) -> Result<u64, RuleError> {
    let s = s.trim();
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse::<u64>(),
    };
    r.map_err(|_| RuleError::Invalid(format!("bad `{kw}` number `{s}`")))
}

fn inum(kw: &str, s: &str) -> Result<i64, RuleError> {
    let s = s.trim();
    match s.strip_prefix('-') {
        Some(r) => Ok(-(unum(kw, r)?.min(i64::MAX as u64) as i64)),
        None => Ok(unum(kw, s)?.min(i64::MAX as u64) as i64),
    }
}

/// Parses `N`, `<N`, `>N`, `<=N`, `>=N`, `!N`, `A<>B` (Suricata's integer forms).
fn parse_cmp(kw: &str, v: &str) -> Result<Cmp, RuleError> {
    let v = v.trim();
    if let Some((a, b)) = v.split_once("<>") {
        let (a, b) = (unum(kw, a)?, unum(kw, b)?);
        if a >= b {
            return invalid(format!("`{kw}` range `{v}` is empty"));
        }
        return Ok(Cmp::Between(a, b));
    }
    Ok(if let Some(r) = v.strip_prefix("<=") {
        Cmp::Le(unum(kw, r)?)
    } else if let Some(r) = v.strip_prefix(">=") {
        Cmp::Ge(unum(kw, r)?)
    } else if let Some(r) = v.strip_prefix('<') {
        Cmp::Lt(unum(kw, r)?)
    } else if let Some(r) = v.strip_prefix('>') {
        Cmp::Gt(unum(kw, r)?)
    } else if let Some(r) = v.strip_prefix('!') {
        Cmp::Ne(unum(kw, r)?)
    } else if let Some(r) = v.strip_prefix('=') {
        Cmp::Eq(unum(kw, r)?)
    } else {
        Cmp::Eq(unum(kw, v)?)
    })
}

fn parts(v: Option<&str>) -> Vec<&str> {
    v.unwrap_or("").split(',').map(str::trim).collect()
}

/// The flags shared by `byte_test` and `byte_jump` after their fixed fields.
fn byte_read(
    kw: &str,
    nbytes: &str,
    offset: &str,
    flags: &[&str],
    names: &[String],
) -> Result<(ByteRead, Vec<String>), RuleError> {
    let nbytes = unum(kw, nbytes)? as usize;
    let (offset, offset_var) = int_or_var(kw, offset, names)?;
    let mut read = ByteRead {
        nbytes,
        relative: false,
        offset,
        little: false,
        string_base: None,
        bitmask: None,
        offset_var,
    };
    let mut string = false;
    let mut rest = Vec::new();
    for f in flags {
        match *f {
            "relative" => read.relative = true,
            "big" => read.little = false,
            "little" => read.little = true,
            "string" => string = true,
            "hex" => read.string_base = Some(16),
            "dec" => read.string_base = Some(10),
            "oct" => read.string_base = Some(8),
            "dce" => return Err(RuleError::Unsupported(format!("{kw}:dce"))),
            f if f.starts_with("bitmask") => {
                read.bitmask = Some(unum(kw, f.trim_start_matches("bitmask"))?);
            }
            other => rest.push(other.to_string()),
        }
    }
    if string && read.string_base.is_none() {
        read.string_base = Some(10);
    }
    if !string && read.string_base.is_some() {
        return invalid(format!("`{kw}` names a base without `string`"));
    }
    let max = if read.string_base.is_some() { 23 } else { 8 };
    // `byte_test:0,...,string`: Suricata reads the whole number there
    // (strtoull with no length), as ET's `http.content_len` rules use it.
    let whole_number = nbytes == 0 && kw == "byte_test" && read.string_base.is_some();
    if (nbytes == 0 && !whole_number) || nbytes > max {
        return Err(RuleError::Unsupported(format!("{kw} of {nbytes} bytes")));
    }
    Ok((read, rest))
}

/// A number, or the name of a `byte_extract` variable defined earlier in
/// the rule (its slot; the number is then 0).
fn int_or_var(kw: &str, s: &str, names: &[String]) -> Result<(i64, Option<u8>), RuleError> {
    let s = s.trim();
    match names.iter().position(|n| n == s) {
        Some(slot) => Ok((0, Some(slot as u8))),
        None if s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') => invalid(format!(
            "`{kw}` names `{s}`, which no earlier byte_extract defines"
        )),
        None => Ok((inum(kw, s)?, None)),
    }
}

/// [`int_or_var`] for positions that cannot be negative.
fn uint_or_var(kw: &str, s: &str, names: &[String]) -> Result<(u64, Option<u8>), RuleError> {
    let s = s.trim();
    if s.starts_with('-') {
        return invalid(format!("`{kw}` value `{s}` is negative"));
    }
    let (n, var) = int_or_var(kw, s, names)?;
    Ok((n as u64, var))
}

/// `byte_extract:<bytes>,<offset>,<name>[,relative][,multiplier N]
/// [,big|little][,string[,hex|dec|oct]][,align 2|4][,bitmask X]`.
fn parse_byte_extract(v: Option<&str>, names: &mut Vec<String>) -> Result<Item, RuleError> {
    let p = parts(v);
    if p.len() < 3 {
        return invalid("`byte_extract` needs bytes, offset and a variable name");
    }
    let name = p[2];
    let name_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !name_ok {
        return invalid(format!("bad `byte_extract` variable name `{name}`"));
    }
    if names.iter().any(|n| n == name) {
        return invalid(format!("`byte_extract` variable `{name}` defined twice"));
    }
    if names.len() >= MAX_VARS {
        return invalid(format!("more than {MAX_VARS} byte_extract variables"));
    }
    if p[1].trim().starts_with(|c: char| c.is_ascii_alphabetic()) {
        return invalid("`byte_extract` offset must be a number");
    }
    let (read, rest) = byte_read("byte_extract", p[0], p[1], &p[3..], names)?;
    let (mut multiplier, mut align) = (1u64, 0u8);
    for f in rest {
        if let Some(m) = f.strip_prefix("multiplier") {
            multiplier = unum("byte_extract", m)?;
            if multiplier == 0 {
                return invalid("`byte_extract` multiplier 0");
            }
        } else if let Some(a) = f.strip_prefix("align") {
            align = match unum("byte_extract", a)? {
                2 => 2,
                4 => 4,
                other => return invalid(format!("`byte_extract` align {other} (2 or 4)")),
            };
        } else {
            return Err(RuleError::Unsupported(format!("byte_extract:{f}")));
        }
    }
    names.push(name.to_string());
    Ok(Item::ByteExtract {
        read,
        multiplier,
        align,
        var: (names.len() - 1) as u8,
    })
}

/// `ssl_state:a|b|!c`: client_hello and server_hello, the handshake steps
/// the engines see; `client_keyx`, `server_keyx` and `unknown` are never
/// seen (the appliance gets the hello and the upstream certificate, not the
/// key exchange), so a rule naming them is unsupported.
fn parse_ssl_state(v: Option<&str>) -> Result<SslState, RuleError> {
    let v = v.unwrap_or("").trim();
    if v.is_empty() {
        return invalid("`ssl_state` needs a state");
    }
    let (mut flags, mut mask) = (0u8, 0u8);
    for part in v.split('|') {
        let part = part.trim();
        let (neg, name) = match part.strip_prefix('!') {
            Some(n) => (true, n.trim()),
            None => (false, part),
        };
        let bit = match name {
            "client_hello" => ssl_state::CLIENT_HELLO,
            "server_hello" => ssl_state::SERVER_HELLO,
            "client_keyx" | "server_keyx" | "unknown" => {
                return Err(RuleError::Unsupported(format!("ssl_state:{name}")))
            }
            other => return invalid(format!("bad `ssl_state` state `{other}`")),
        };
        flags |= bit;
        if neg {
            mask |= bit;
        }
    }
    Ok(SslState { flags, mask })
}

/// `stream_size:<server|client|both|either>,<op>,<n>` with op one of
/// `>`, `<`, `=`, `!=`, `>=`, `<=`.
fn parse_stream_size(v: Option<&str>) -> Result<StreamSize, RuleError> {
    let p = parts(v);
    if p.len() != 3 {
        return invalid("`stream_size` needs side, operator and number");
    }
    let side = match p[0] {
        "server" => StreamSide::Server,
        "client" => StreamSide::Client,
        "both" => StreamSide::Both,
        "either" => StreamSide::Either,
        other => return invalid(format!("bad `stream_size` side `{other}`")),
    };
    let n = unum("stream_size", p[2])?;
    let cmp = match p[1] {
        ">" => Cmp::Gt(n),
        "<" => Cmp::Lt(n),
        "=" => Cmp::Eq(n),
        "!=" => Cmp::Ne(n),
        ">=" => Cmp::Ge(n),
        "<=" => Cmp::Le(n),
        other => return invalid(format!("bad `stream_size` operator `{other}`")),
    };
    Ok(StreamSize { side, cmp })
}

fn parse_byte_test(v: Option<&str>, names: &[String]) -> Result<Item, RuleError> {
    let p = parts(v);
    if p.len() < 4 {
        return invalid("`byte_test` needs bytes, operator, value and offset");
    }
    let (negated, op) = match p[1].strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, p[1]),
    };
    let op = match op {
        "<" => ByteOp::Lt,
        ">" => ByteOp::Gt,
        "=" => ByteOp::Eq,
        // A bare `!` is "not equal".
        "" if negated => ByteOp::Eq,
        "<=" => ByteOp::Le,
        ">=" => ByteOp::Ge,
        "&" => ByteOp::And,
        "^" => ByteOp::Xor,
        other => return invalid(format!("bad `byte_test` operator `{other}`")),
    };
    let (value, value_var) = uint_or_var("byte_test", p[2], names)?;
    let (read, rest) = byte_read("byte_test", p[0], p[3], &p[4..], names)?;
    if let Some(f) = rest.first() {
        return Err(RuleError::Unsupported(format!("byte_test:{f}")));
    }
    Ok(Item::ByteTest {
        read,
        op,
        negated,
        value,
        value_var,
    })
}

fn parse_byte_jump(v: Option<&str>, names: &[String]) -> Result<Item, RuleError> {
    let p = parts(v);
    if p.len() < 2 {
        return invalid("`byte_jump` needs bytes and offset");
    }
    let (read, rest) = byte_read("byte_jump", p[0], p[1], &p[2..], names)?;
    let (mut multiplier, mut post_offset) = (1u64, 0i64);
    let (mut align, mut from_beginning) = (false, false);
    for f in rest {
        if let Some(m) = f.strip_prefix("multiplier") {
            multiplier = unum("byte_jump", m)?;
        } else if let Some(m) = f.strip_prefix("post_offset") {
            post_offset = inum("byte_jump", m)?;
        } else {
            match f.as_str() {
                "align" => align = true,
                "from_beginning" => from_beginning = true,
                "from_end" => return Err(RuleError::Unsupported("byte_jump:from_end".into())),
                other => return Err(RuleError::Unsupported(format!("byte_jump:{other}"))),
            }
        }
    }
    Ok(Item::ByteJump {
        read,
        multiplier,
        post_offset,
        align,
        from_beginning,
    })
}

fn parse_isdataat(v: Option<&str>, names: &[String]) -> Result<Item, RuleError> {
    let p = parts(v);
    let (negated, n) = match p[0].strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, p[0]),
    };
    let (n, n_var) = uint_or_var("isdataat", n, names)?;
    let n = n as usize;
    let mut relative = false;
    for f in &p[1..] {
        match *f {
            "relative" => relative = true,
            "rawbytes" => {}
            other => return Err(RuleError::Unsupported(format!("isdataat:{other}"))),
        }
    }
    Ok(Item::IsDataAt {
        n,
        relative,
        negated,
        n_var,
    })
}

fn parse_bit_cmd(kw: &str, s: &str) -> Result<BitCmd, RuleError> {
    Ok(match s {
        "set" => BitCmd::Set,
        "unset" => BitCmd::Unset,
        "toggle" => BitCmd::Toggle,
        "isset" => BitCmd::IsSet,
        "isnotset" => BitCmd::IsNotSet,
        other => return Err(RuleError::Unsupported(format!("{kw}:{other}"))),
    })
}

fn parse_flowbits(v: Option<&str>, rule: &mut Rule) -> Result<(), RuleError> {
    let p = parts(v);
    if p == ["noalert"] {
        rule.noalert = true;
        return Ok(());
    }
    if p.len() != 2 || p[1].is_empty() {
        return invalid(format!("bad `flowbits` value `{}`", v.unwrap_or("")));
    }
    let cmd = parse_bit_cmd("flowbits", p[0])?;
    let any = p[1].contains('|');
    if any && p[1].contains('&') {
        return invalid("`flowbits` mixes `|` and `&`");
    }
    if any && !cmd.is_check() {
        return invalid("`flowbits` `|` only works with isset/isnotset");
    }
    let names: Vec<String> = p[1]
        .split(['|', '&'])
        .map(|n| n.trim().to_string())
        .collect();
    if names.iter().any(String::is_empty) {
        return invalid("empty flowbit name");
    }
    rule.flowbits.push(FlowBit {
        cmd,
        names,
        any,
        ids: Vec::new(),
    });
    Ok(())
}

/// `flowint:name,op[,value]`: `=`, `+`, `-` change the integer when the
/// rule matches; `<`, `<=`, `>`, `>=`, `==`, `!=`, `isset`, `notset`
/// (`isnotset`) are conditions. The operand is a number or another
/// flowint's name.
fn parse_flowint(v: Option<&str>) -> Result<FlowInt, RuleError> {
    let bad = || invalid(format!("bad `flowint` value `{}`", v.unwrap_or("")));
    let p = parts(v);
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if p.len() < 2 || !name_ok(p[0]) {
        return bad();
    }
    let op = match p[1] {
        "=" => IntOp::Set,
        "+" => IntOp::Add,
        "-" => IntOp::Sub,
        "<" => IntOp::Lt,
        "<=" => IntOp::Le,
        ">" => IntOp::Gt,
        ">=" => IntOp::Ge,
        "==" => IntOp::Eq,
        "!=" => IntOp::Ne,
        "isset" => IntOp::IsSet,
        "notset" | "isnotset" => IntOp::NotSet,
        _ => return bad(),
    };
    let value = match (op, p.get(2)) {
        (IntOp::IsSet | IntOp::NotSet, None) => None,
        (IntOp::IsSet | IntOp::NotSet, Some(_)) => return bad(),
        (_, Some(v)) if p.len() == 3 => Some(match v.parse::<u32>() {
            Ok(n) => IntValue::Number(n),
            Err(_)
                if name_ok(v) && (v.as_bytes()[0].is_ascii_alphabetic() || v.starts_with('_')) =>
            {
                IntValue::Var(v.to_string())
            }
            Err(_) => return bad(),
        }),
        _ => return bad(),
    };
    Ok(FlowInt {
        name: p[0].to_string(),
        op,
        value,
        ids: Vec::new(),
    })
}

fn parse_track(kw: &str, s: &str) -> Result<Track, RuleError> {
    Ok(match s {
        "ip_src" | "by_src" => Track::Src,
        "ip_dst" | "by_dst" => Track::Dst,
        "ip_pair" | "by_both" => Track::Pair,
        "by_rule" => Track::Rule,
        other => return Err(RuleError::Unsupported(format!("{kw} track {other}"))),
    })
}

fn parse_xbits(v: Option<&str>) -> Result<XBit, RuleError> {
    let p = parts(v);
    if p.len() < 3 {
        return invalid("`xbits` needs a command, a name and a track");
    }
    let cmd = parse_bit_cmd("xbits", p[0])?;
    let track = match p[2].strip_prefix("track") {
        Some(t) => parse_track("xbits", t.trim())?,
        None => return invalid("`xbits` third field is `track ip_src|ip_dst|ip_pair`"),
    };
    if track == Track::Rule {
        return invalid("xbits cannot track by_rule");
    }
    let mut expire = 30;
    for f in &p[3..] {
        match f.strip_prefix("expire") {
            Some(e) => expire = unum("xbits", e)?,
            None => return Err(RuleError::Unsupported(format!("xbits:{f}"))),
        }
    }
    if p[1].is_empty() {
        return invalid("empty xbit name");
    }
    Ok(XBit {
        cmd,
        name: p[1].to_string(),
        track,
        expire,
    })
}

fn parse_threshold(kw: &str, v: Option<&str>) -> Result<Threshold, RuleError> {
    let mut kind = (kw == "detection_filter").then_some(ThresholdKind::DetectionFilter);
    let (mut track, mut count, mut seconds) = (None, None, None);
    for f in parts(v) {
        let (k, val) = f.split_once(char::is_whitespace).unwrap_or((f, ""));
        let val = val.trim();
        match k {
            "type" if kw == "threshold" => {
                kind = Some(match val {
                    "limit" => ThresholdKind::Limit,
                    "threshold" => ThresholdKind::Threshold,
                    "both" => ThresholdKind::Both,
                    other => return Err(RuleError::Unsupported(format!("threshold type {other}"))),
                })
            }
            "track" => track = Some(parse_track(kw, val)?),
            "count" => count = Some(unum(kw, val)?),
            "seconds" => seconds = Some(unum(kw, val)?),
            other => return Err(RuleError::Unsupported(format!("{kw}:{other}"))),
        }
    }
    match (kind, track, count, seconds) {
        (Some(kind), Some(track), Some(count), Some(seconds)) if count > 0 => Ok(Threshold {
            kind,
            track,
            count,
            seconds,
        }),
        _ => invalid(format!("`{kw}` needs type, track, count > 0 and seconds")),
    }
}

fn tls_version(kw: &str, v: Option<&str>) -> Result<TlsVersions, RuleError> {
    let mut out = TlsVersions::default();
    for p in parts(v) {
        let ver = match p.to_ascii_lowercase().as_str() {
            "1.0" | "tls1.0" => 0x0301,
            "1.1" | "tls1.1" => 0x0302,
            "1.2" | "tls1.2" => 0x0303,
            "1.3" | "tls1.3" => 0x0304,
            "sslv3" | "3.0" => 0x0300,
            other => match other.strip_prefix("0x") {
                Some(h) => u16::from_str_radix(h, 16)
                    .map_err(|_| RuleError::Invalid(format!("bad `{kw}` value `{p}`")))?,
                None => return Err(RuleError::Unsupported(format!("{kw}:{p}"))),
            },
        };
        out.versions.push(ver);
    }
    Ok(out)
}

/// Parses one rule (a single logical line) into a compiled [`Rule`].
///
/// `origin` is `file:line`, kept in the rule for reports. On failure the sid
/// is returned alongside the error when it could be read.
pub fn parse_rule(line: &str, vars: &Vars, origin: &str) -> Result<Rule, (Option<u64>, RuleError)> {
    let sid = sniff_sid(line);
    parse_rule_inner(line, vars, origin).map_err(|e| (sid, e))
}

/// Finds `sid:N;` textually, so even a broken rule can be reported by sid.
fn sniff_sid(line: &str) -> Option<u64> {
    let idx = line.find("sid:")?;
    let prev = line[..idx].chars().last();
    if prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return None;
    }
    let rest = &line[idx + 4..];
    let end = rest.find(';').unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// One condition as parsed, before `flow` fixes which side dual buffers mean.
struct Parsed {
    buffer: Buffer,
    dual: bool,
    dotprefix: bool,
    item: Item,
}

/// The content a modifier applies to: the last content of the rule so far,
/// past any `bsize`/`isdataat`/`pcre` written after it (as Suricata looks
/// up the last content match).
fn last_content<'a>(items: &'a mut [Parsed], kw: &str) -> Result<&'a mut Content, RuleError> {
    // After `base64_data`, the last content is in the decoded data's list.
    let nested = matches!(
        items.last(),
        Some(Parsed {
            item: Item::Base64 { .. },
            ..
        })
    );
    if nested {
        if let Some(Parsed {
            item: Item::Base64 { data, .. },
            ..
        }) = items.last_mut()
        {
            return last_content_in(data.iter_mut().rev(), kw);
        }
        unreachable!("checked above");
    }
    last_content_in(items.iter_mut().rev().map(|p| &mut p.item), kw)
}

fn last_content_in<'a>(
    rev: impl Iterator<Item = &'a mut Item>,
    kw: &str,
) -> Result<&'a mut Content, RuleError> {
    for it in rev {
        match it {
            Item::Content(c) => return Ok(c),
            Item::Size(_) | Item::IsDataAt { .. } => {}
            _ => break,
        }
    }
    invalid(format!("`{kw}` does not follow a content"))
}

/// `base64_decode[:bytes N][, offset N][, relative]`.
fn parse_base64_decode(v: Option<&str>) -> Result<Item, RuleError> {
    let (mut bytes, mut offset, mut relative) = (None, 0usize, false);
    for part in v.unwrap_or("").split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, n) = part.split_once(char::is_whitespace).unwrap_or((part, ""));
        match k {
            "relative" if n.is_empty() => relative = true,
            "bytes" => {
                let b: usize = num("base64_decode bytes", Some(n.trim()))?;
                if b == 0 {
                    return invalid("base64_decode bytes 0");
                }
                bytes = Some(b);
            }
            "offset" => offset = num("base64_decode offset", Some(n.trim()))?,
            _ => return invalid(format!("base64_decode option `{part}`")),
        }
    }
    Ok(Item::Base64 {
        bytes,
        offset,
        relative,
        data: Vec::new(),
    })
}

/// The current sticky buffer.
#[derive(Clone, Copy)]
struct Cursor {
    buffer: Buffer,
    dual: bool,
    dotprefix: bool,
    /// After `base64_data`: conditions go to the decoded data of the last
    /// `base64_decode`.
    b64: bool,
}

fn parse_rule_inner(line: &str, vars: &Vars, origin: &str) -> Result<Rule, RuleError> {
    let Some(open) = line.find('(') else {
        return invalid("no option section `(...)`");
    };
    let Some(close) = line.rfind(')') else {
        return invalid("option section is not closed with `)`");
    };
    if close < open || !line[close + 1..].trim().is_empty() {
        return invalid("text after the closing `)`");
    }
    let head = header_tokens(&line[..open]);
    if head.len() != 7 {
        return invalid(format!(
            "header needs 7 fields (action proto src sport dir dst dport), found {}",
            head.len()
        ));
    }
    let action = match head[0] {
        "alert" => Action::Alert,
        "drop" => Action::Drop,
        "reject" | "rejectsrc" | "rejectboth" | "rejectdst" => Action::Reject,
        "pass" => Action::Pass,
        other => return Err(RuleError::Unsupported(format!("action {other}"))),
    };
    let proto = match head[1].to_ascii_lowercase().as_str() {
        "tcp" | "ip" | "any" | "tcp-stream" => Proto::Any,
        "http" | "http1" | "http2" => Proto::Http,
        "tls" | "ssl" => Proto::Tls,
        other => return Err(RuleError::Unsupported(format!("protocol {other}"))),
    };
    let src = parse_addr(head[2], vars)?;
    let sport = parse_ports(head[3], vars)?;
    let bidirectional = match head[4] {
        "->" => false,
        "<>" => true,
        other => return invalid(format!("bad direction `{other}`")),
    };
    let dst = parse_addr(head[5], vars)?;
    let dport = parse_ports(head[6], vars)?;

    let mut rule = Rule {
        action,
        proto,
        src,
        sport,
        dst,
        dport,
        bidirectional,
        flow: FlowOpts::default(),
        sid: 0,
        rev: 0,
        msg: String::new(),
        classtype: None,
        priority: None,
        groups: Vec::new(),
        flowbits: Vec::new(),
        xbits: Vec::new(),
        flowints: Vec::new(),
        threshold: None,
        noalert: false,
        tls_version: None,
        app_events: 0,
        ssl_state: None,
        dsize: None,
        stream_size: None,
        fast_pattern: None,
        origin: origin.to_string(),
    };
    let mut have_sid = false;
    let mut items: Vec<Parsed> = Vec::new();
    // `byte_extract` variable names; a variable's slot is its index.
    let mut names: Vec<String> = Vec::new();
    let mut cur = Cursor {
        buffer: Buffer::Raw,
        dual: false,
        dotprefix: false,
        b64: false,
    };
    // Relative keywords continue the list of the condition before them
    // (which a legacy modifier may have moved off the sticky buffer).
    let prev_cursor = |items: &[Parsed], cur: Cursor| match items.last() {
        _ if cur.b64 => cur,
        Some(p) => Cursor {
            buffer: p.buffer,
            dual: p.dual,
            dotprefix: p.dotprefix,
            b64: false,
        },
        None => cur,
    };
    let push = |items: &mut Vec<Parsed>, at: Cursor, item: Item| {
        if at.b64 {
            if let Some(Parsed {
                item: Item::Base64 { data, .. },
                ..
            }) = items.last_mut()
            {
                data.push(item);
                return;
            }
        }
        items.push(Parsed {
            buffer: at.buffer,
            dual: at.dual,
            dotprefix: at.dotprefix,
            item,
        })
    };
    for (kw, val) in split_options(&line[open + 1..close])? {
        let v = val.as_deref();
        if let Some((b, dual)) = sticky(&kw) {
            if v.is_some() {
                return invalid(format!("`{kw}` takes no value"));
            }
            cur = Cursor {
                buffer: b,
                dual,
                dotprefix: false,
                b64: false,
            };
            continue;
        }
        if let Some((b, dual)) = legacy_modifier(&kw) {
            match items.last_mut() {
                Some(p) if p.buffer == Buffer::Raw && matches!(p.item, Item::Content(_)) => {
                    p.buffer = b;
                    p.dual = dual;
                }
                _ => return invalid(format!("`{kw}` does not follow a raw content")),
            }
            continue;
        }
        match kw.as_str() {
            "msg" => rule.msg = unquote(v.unwrap_or("")),
            "sid" => {
                rule.sid = num("sid", v)?;
                have_sid = true;
            }
            "rev" => rule.rev = num("rev", v)?,
            "gid" => {
                let g: u32 = num("gid", v)?;
                if g != 1 {
                    return Err(RuleError::Unsupported(format!("gid:{g}")));
                }
            }
            "classtype" => rule.classtype = v.map(|s| s.trim().to_string()),
            "priority" => rule.priority = Some(num("priority", v)?),
            // Descriptive only: they never change what matches.
            "reference" | "metadata" | "target" => {}
            "content" => {
                let (negated, pattern) = content_bytes(v.unwrap_or(""))?;
                push(
                    &mut items,
                    cur,
                    Item::Content(Content {
                        pattern,
                        nocase: false,
                        negated,
                        offset: None,
                        depth: None,
                        distance: None,
                        within: None,
                        startswith: false,
                        endswith: false,
                        fast_pattern: false,
                        searcher: None,
                        vars: PosVars::default(),
                    }),
                );
            }
            "nocase" => last_content(&mut items, &kw)?.nocase = true,
            "depth" => {
                let (n, var) = uint_or_var("depth", v.unwrap_or(""), &names)?;
                let c = last_content(&mut items, &kw)?;
                if var.is_none() && (n as usize) < c.pattern.len() {
                    return invalid(format!("depth {n} is shorter than its content"));
                }
                c.depth = Some(n as usize);
                c.vars.depth = var;
            }
            "offset" => {
                let (n, var) = uint_or_var("offset", v.unwrap_or(""), &names)?;
                let c = last_content(&mut items, &kw)?;
                c.offset = Some(n as usize);
                c.vars.offset = var;
            }
            "distance" => {
                let (n, var) = int_or_var("distance", v.unwrap_or(""), &names)?;
                let c = last_content(&mut items, &kw)?;
                c.distance = Some(n);
                c.vars.distance = var;
            }
            "within" => {
                let (n, var) = uint_or_var("within", v.unwrap_or(""), &names)?;
                let c = last_content(&mut items, &kw)?;
                if var.is_none() && (n as usize) < c.pattern.len() {
                    return invalid(format!("within {n} is shorter than its content"));
                }
                c.within = Some(n as usize);
                c.vars.within = var;
            }
            "startswith" => {
                let c = last_content(&mut items, &kw)?;
                if c.offset.is_some() || c.depth.is_some() || c.relative() {
                    return invalid("`startswith` with offset/depth/distance/within");
                }
                c.startswith = true;
            }
            "endswith" => last_content(&mut items, &kw)?.endswith = true,
            "fast_pattern" => {
                // `only` and `offset,length` narrow what the prefilter keys
                // on; keying on the whole content is as correct, if less
                // selective, because the matcher re-checks every condition.
                last_content(&mut items, &kw)?.fast_pattern = true;
            }
            "pcre" => {
                let (p, buf) = parse_pcre(v.unwrap_or(""))?;
                let at = match buf {
                    Some((b, dual)) => Cursor {
                        buffer: b,
                        dual,
                        dotprefix: false,
                        b64: false,
                    },
                    None if p.relative => prev_cursor(&items, cur),
                    None => cur,
                };
                push(&mut items, at, Item::Pcre(p));
            }
            "luhn" => match items.last_mut() {
                Some(Parsed {
                    item: Item::Pcre(p),
                    ..
                }) if !p.negated => p.luhn = true,
                _ => return invalid("`luhn` does not follow a (non-negated) pcre"),
            },
            "dotprefix" => {
                if cur.buffer == Buffer::Raw {
                    return invalid("`dotprefix` needs a sticky buffer");
                }
                cur.dotprefix = true;
            }
            "bsize" => {
                if cur.buffer == Buffer::Raw {
                    return invalid("`bsize` needs a sticky buffer");
                }
                let c = parse_cmp("bsize", v.unwrap_or(""))?;
                push(&mut items, cur, Item::Size(c));
            }
            "urilen" => {
                let (cmp, raw) = match v.unwrap_or("").split_once(',') {
                    Some((c, m)) => match m.trim() {
                        "raw" => (c, true),
                        "norm" => (c, false),
                        other => return Err(RuleError::Unsupported(format!("urilen:{other}"))),
                    },
                    None => (v.unwrap_or(""), false),
                };
                let c = parse_cmp("urilen", cmp)?;
                let b = if raw { Buffer::UriRaw } else { Buffer::Uri };
                push(
                    &mut items,
                    Cursor {
                        buffer: b,
                        dual: false,
                        dotprefix: false,
                        b64: false,
                    },
                    Item::Size(c),
                );
            }
            "isdataat" => {
                let it = parse_isdataat(v, &names)?;
                let at = match it {
                    Item::IsDataAt { relative: true, .. } => prev_cursor(&items, cur),
                    _ => cur,
                };
                push(&mut items, at, it);
            }
            "byte_test" | "byte_jump" | "byte_extract" => {
                if kw == "byte_extract" && cur.b64 {
                    return Err(RuleError::Unsupported("byte_extract in base64_data".into()));
                }
                let it = match kw.as_str() {
                    "byte_test" => parse_byte_test(v, &names)?,
                    "byte_jump" => parse_byte_jump(v, &names)?,
                    _ => parse_byte_extract(v, &mut names)?,
                };
                let relative = matches!(
                    &it,
                    Item::ByteTest { read, .. } | Item::ByteJump { read, .. } | Item::ByteExtract { read, .. } if read.relative
                );
                let at = if relative {
                    prev_cursor(&items, cur)
                } else {
                    cur
                };
                push(&mut items, at, it);
            }
            "base64_decode" => {
                if cur.b64 {
                    return Err(RuleError::Unsupported(
                        "base64_decode of base64_data".into(),
                    ));
                }
                let it = parse_base64_decode(v)?;
                let at = match it {
                    Item::Base64 { relative: true, .. } => prev_cursor(&items, cur),
                    _ => cur,
                };
                push(&mut items, at, it);
            }
            "base64_data" => {
                if v.is_some() {
                    return invalid("`base64_data` takes no value");
                }
                match items.last() {
                    Some(
                        p @ Parsed {
                            item: Item::Base64 { .. },
                            ..
                        },
                    ) if !cur.b64 => {
                        cur = Cursor {
                            buffer: p.buffer,
                            dual: p.dual,
                            dotprefix: p.dotprefix,
                            b64: true,
                        };
                    }
                    _ => return invalid("`base64_data` does not follow a base64_decode"),
                }
            }
            "flowbits" => parse_flowbits(v, &mut rule)?,
            "xbits" => rule.xbits.push(parse_xbits(v)?),
            "flowint" => rule.flowints.push(parse_flowint(v)?),
            "app-layer-event" => {
                let name = v.unwrap_or("").trim();
                match super::rule::app_event::by_name(name) {
                    Some(bit) => rule.app_events |= bit,
                    None => return Err(RuleError::Unsupported(format!("app-layer-event:{name}"))),
                }
            }
            "noalert" => rule.noalert = true,
            "threshold" | "detection_filter" => {
                if rule.threshold.is_some() {
                    return invalid("more than one threshold/detection_filter");
                }
                rule.threshold = Some(parse_threshold(&kw, v)?);
            }
            "tls.version" | "ssl_version" => rule.tls_version = Some(tls_version(&kw, v)?),
            "ssl_state" => {
                if rule.ssl_state.is_some() {
                    return Err(RuleError::Unsupported("ssl_state twice".into()));
                }
                rule.ssl_state = Some(parse_ssl_state(v)?);
            }
            "dsize" => {
                if rule.dsize.is_some() {
                    return invalid("more than one dsize");
                }
                rule.dsize = Some(parse_cmp("dsize", v.unwrap_or(""))?);
            }
            "stream_size" => {
                if rule.stream_size.is_some() {
                    return invalid("more than one stream_size");
                }
                rule.stream_size = Some(parse_stream_size(v)?);
            }
            "flow" => {
                for part in v.unwrap_or("").split(',') {
                    match part.trim() {
                        "to_server" | "from_client" => rule.flow.to_server = true,
                        "to_client" | "from_server" => rule.flow.to_client = true,
                        // Only established TCP streams are ever inspected,
                        // and only their reassembled bytes (`only_stream`
                        // holds by construction; `no_stream`, single
                        // packets, cannot).
                        "established" | "stateless" | "only_stream" => {}
                        other => return Err(RuleError::Unsupported(format!("flow:{other}"))),
                    }
                }
                if rule.flow.to_server && rule.flow.to_client {
                    return invalid("flow has both to_server and to_client");
                }
            }
            other => return Err(RuleError::Unsupported(other.to_string())),
        }
    }
    if !have_sid {
        return invalid("rule has no sid");
    }
    if !items.iter().any(|p| {
        matches!(
            p.item,
            Item::Content(_) | Item::Pcre(_) | Item::Base64 { .. }
        )
    }) {
        return invalid("rule has no content or pcre (header-only rules are not supported)");
    }
    // Group by buffer (and transform), keeping rule order inside each.
    let mut groups: Vec<Group> = Vec::new();
    for p in items {
        let b = if p.dual && rule.flow.to_client {
            p.buffer.to_response()
        } else {
            p.buffer
        };
        match groups
            .iter_mut()
            .find(|g| g.buffer == b && g.dotprefix == p.dotprefix)
        {
            Some(g) => g.items.push(p.item),
            None => groups.push(Group {
                buffer: b,
                dotprefix: p.dotprefix,
                items: vec![p.item],
            }),
        }
    }
    check_buffers(&mut rule, &groups)?;
    for g in &groups {
        check_vars(&g.items)?;
    }
    // Fast pattern: the flagged content, else the longest positive one.
    let mut best: Option<(&Group, &Content)> = None;
    for g in &groups {
        for it in &g.items {
            if let Item::Content(c) = it {
                if c.negated {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some((_, bc)) => {
                        (c.fast_pattern && !bc.fast_pattern)
                            || (c.fast_pattern == bc.fast_pattern
                                && c.pattern.len() > bc.pattern.len())
                    }
                };
                if better {
                    best = Some((g, c));
                }
            }
        }
    }
    rule.fast_pattern = best.and_then(|(g, c)| {
        // In a dot-prefixed buffer a literal starting with `.` may match the
        // added dot; the rest of it is in the real buffer.
        let lit = match c.pattern.strip_prefix(b".") {
            Some(rest) if g.dotprefix => rest,
            _ => &c.pattern[..],
        };
        (!lit.is_empty()).then(|| (g.buffer, lit.to_vec()))
    });
    for g in &mut groups {
        for it in g.items.iter_mut() {
            match it {
                Item::Content(c) => c.searcher = Some(build_searcher(&c.pattern, c.nocase)?),
                Item::Base64 { data, .. } => {
                    if !data
                        .iter()
                        .any(|d| matches!(d, Item::Content(_) | Item::Pcre(_)))
                    {
                        return invalid("base64_data without a content or pcre");
                    }
                    for d in data.iter_mut() {
                        if let Item::Content(c) = d {
                            c.searcher = Some(build_searcher(&c.pattern, c.nocase)?);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    rule.groups = groups;
    Ok(rule)
}

/// Checks that every `byte_extract` variable is used after its definition
/// in the same buffer, as Suricata requires: the value is a position in
/// that buffer.
fn check_vars(items: &[Item]) -> Result<(), RuleError> {
    let mut defined = 0u32;
    let check = |defined: u32, var: Option<u8>| match var {
        Some(v) if defined & (1 << v) == 0 => {
            invalid("a byte_extract variable is used outside the buffer it was extracted from")
        }
        _ => Ok(()),
    };
    for it in items {
        match it {
            Item::ByteExtract { var, .. } => defined |= 1 << var,
            Item::Content(c) => {
                for v in [c.vars.offset, c.vars.depth, c.vars.distance, c.vars.within] {
                    check(defined, v)?;
                }
            }
            Item::IsDataAt { n_var, .. } => check(defined, *n_var)?,
            Item::ByteTest {
                read, value_var, ..
            } => {
                check(defined, read.offset_var)?;
                check(defined, *value_var)?;
            }
            Item::ByteJump { read, .. } => check(defined, read.offset_var)?,
            Item::Base64 { data, .. } => check_vars(data)?,
            Item::Pcre(_) | Item::Size(_) => {}
        }
    }
    Ok(())
}

/// Refuses buffer combinations no inspection step provides.
fn check_buffers(rule: &mut Rule, groups: &[Group]) -> Result<(), RuleError> {
    let uses = |f: &dyn Fn(Buffer) -> bool| groups.iter().any(|g| f(g.buffer));
    let raw = uses(&|b| b == Buffer::Raw);
    let tls = uses(&|b| b.is_tls());
    let http = uses(&|b| b != Buffer::Raw && !b.is_tls());
    if let Some(s) = rule.ssl_state {
        // ssl_state needs the TLS parser's state, as in Suricata.
        if rule.proto == Proto::Http || http {
            return invalid("ssl_state in an http rule can never match");
        }
        rule.proto = Proto::Tls;
        let at_hello = s.holds(ssl_state::CLIENT_HELLO);
        let at_server = s.holds(ssl_state::SERVER_HELLO);
        if !at_hello && !at_server {
            return invalid("ssl_state holds at no step the engines see");
        }
        if !at_server && (rule.flow.to_client || uses(&|b| b.is_cert())) {
            return invalid("ssl_state:client_hello with the server's data can never match");
        }
    }
    if rule.stream_size.is_some() && (tls || rule.proto == Proto::Tls) {
        // The handshake steps run before the pipeline counts stream bytes.
        return Err(RuleError::Unsupported("stream_size in a tls rule".into()));
    }
    // dsize is the size of the chunk of stream data inspected, which only
    // raw-stream rules see: HTTP buffers are built from many chunks, TLS
    // buffers from the handshake.
    let dsize_refused = || {
        Err(RuleError::Unsupported(
            "dsize outside a raw-stream rule".into(),
        ))
    };
    let cert_step = rule.flow.to_client
        || uses(&|b| b.is_cert())
        || rule
            .ssl_state
            .is_some_and(|s| s.holds(ssl_state::SERVER_HELLO) && !s.holds(ssl_state::CLIENT_HELLO));
    if tls || rule.proto == Proto::Tls {
        if http {
            return Err(RuleError::Unsupported(
                "tls buffers mixed with http buffers".into(),
            ));
        }
        if rule.proto == Proto::Http {
            return invalid("tls buffers in an http rule can never match");
        }
        rule.proto = Proto::Tls;
        if raw && cert_step {
            // The appliance sees the ClientHello's bytes, not the server's
            // handshake records (encrypted from TLS 1.3 on).
            return Err(RuleError::Unsupported(
                "raw tls content from the server".into(),
            ));
        }
        if rule.dsize.is_some() {
            return dsize_refused();
        }
        if rule.tls_version.is_some() && cert_step {
            return Err(RuleError::Unsupported("tls.version of the server".into()));
        }
        let hello_only = |b: Buffer| b.is_tls() && !b.is_cert() || b == Buffer::Raw;
        if uses(&hello_only) && rule.bidirectional {
            return Err(RuleError::Unsupported("bidirectional tls rule".into()));
        }
        return Ok(());
    }
    if rule.tls_version.is_some() {
        return invalid("tls.version outside a tls rule");
    }
    if rule.dsize.is_some() && (rule.proto == Proto::Http || http) {
        return dsize_refused();
    }
    let req = uses(&|b| b != Buffer::Raw && !b.is_response());
    let resp = uses(&|b| b.is_response());
    if req && rule.flow.to_client && !resp {
        return invalid("request buffers with flow:to_client can never match");
    }
    if resp && rule.flow.to_server {
        return invalid("response buffers with flow:to_server can never match");
    }
    Ok(())
}

fn build_searcher(pattern: &[u8], nocase: bool) -> Result<AhoCorasick, RuleError> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(nocase)
        .match_kind(MatchKind::Standard)
        .build([pattern])
        .map_err(|e| RuleError::Invalid(format!("content searcher: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Rule, RuleError> {
        parse_rule(s, &Vars::default(), "t:1").map_err(|(_, e)| e)
    }

    fn content(r: &Rule, g: usize, i: usize) -> &Content {
        match &r.groups[g].items[i] {
            Item::Content(c) => c,
            _ => panic!("not a content"),
        }
    }

    #[test]
    fn header_fields() {
        let r = parse(
            r#"drop http [$HOME_NET,!10.1.0.0/16] ![80,443] <> $EXTERNAL_NET [1024:,!8080] (msg:"m"; sid:7; rev:2; classtype:web-application-attack; priority:1; content:"x";)"#,
        )
        .unwrap();
        assert_eq!(r.action, Action::Drop);
        assert_eq!(r.proto, Proto::Http);
        assert!(r.bidirectional);
        assert!(r.src.contains("10.2.3.4".parse().unwrap()));
        assert!(!r.src.contains("10.1.3.4".parse().unwrap()));
        assert!(!r.src.contains("8.8.8.8".parse().unwrap()));
        assert!(!r.sport.contains(80) && r.sport.contains(81));
        assert!(r.dst.contains("8.8.8.8".parse().unwrap()));
        assert!(!r.dst.contains("192.168.1.1".parse().unwrap()));
        assert!(r.dport.contains(2000) && !r.dport.contains(8080) && !r.dport.contains(80));
        assert_eq!((r.sid, r.rev, r.msg.as_str()), (7, 2, "m"));
        assert_eq!(r.classtype.as_deref(), Some("web-application-attack"));
        assert_eq!(r.priority, Some(1));
    }

    #[test]
    fn content_modifiers_and_hex() {
        let r = parse(
            r#"alert tcp any any -> any any (msg:"a\;b"; content:"GET|20 2f|"; nocase; offset:1; depth:10; content:!"x\"y"; distance:-2; within:5; content:"zz"; fast_pattern; sid:1;)"#,
        )
        .unwrap();
        assert_eq!(r.msg, "a;b");
        let c0 = content(&r, 0, 0);
        assert_eq!(c0.pattern, b"GET /");
        assert!(c0.nocase && !c0.negated);
        assert_eq!((c0.offset, c0.depth), (Some(1), Some(10)));
        let c1 = content(&r, 0, 1);
        assert_eq!(c1.pattern, b"x\"y");
        assert!(c1.negated);
        assert_eq!((c1.distance, c1.within), (Some(-2), Some(5)));
        assert_eq!(r.fast_pattern, Some((Buffer::Raw, b"zz".to_vec())));
    }

    #[test]
    fn sticky_buffers_and_legacy_modifiers() {
        let r = parse(
            r#"alert http any any -> any any (flow:established,to_server; http.method; content:"POST"; http.uri; content:"/a"; content:"/b"; pcre:"/x+/Hi"; http.user_agent; content:"curl"; http.host; content:"h"; http.request_body; content:"body"; sid:2;)"#,
        )
        .unwrap();
        let bufs: Vec<Buffer> = r.groups.iter().map(|g| g.buffer).collect();
        assert_eq!(
            bufs,
            [
                Buffer::Method,
                Buffer::Uri,
                Buffer::Header,
                Buffer::UserAgent,
                Buffer::Host,
                Buffer::RequestBody
            ]
        );
        assert!(r.flow.to_server);
        let r = parse(r#"alert tcp any any -> any any (content:"GET"; http_method; content:"/x"; http_uri; sid:9;)"#).unwrap();
        assert_eq!(r.groups[0].buffer, Buffer::Method);
        assert_eq!(r.groups[1].buffer, Buffer::Uri);
        let r = parse(
            r#"alert http any any -> any any (flow:to_client; http.stat_code; content:"500"; http.response_body; content:"err"; sid:3;)"#,
        )
        .unwrap();
        assert!(r.uses_response());
        // Longest literal wins without fast_pattern.
        assert_eq!(r.fast_pattern, Some((Buffer::StatCode, b"500".to_vec())));
    }

    #[test]
    fn descriptive_keywords_raw_uri_and_pkt_data() {
        let r = parse(
            r#"alert http any any -> any any (msg:"x"; flow:from_client,stateless; reference:url,example.com; metadata:created_at 2026_11_24; gid:1; http.uri.raw; content:"%2e%2e"; nocase; sid:20; rev:3;)"#,
        )
        .unwrap();
        assert!(r.flow.to_server);
        assert_eq!(r.groups[0].buffer, Buffer::UriRaw);
        assert_eq!(r.rev, 3);
        let r = parse(r#"alert tcp any any -> any any (http.uri; pkt_data; content:"|de ad be ef|"; sid:24;)"#).unwrap();
        assert_eq!(r.groups[0].buffer, Buffer::Raw);
        assert_eq!(content(&r, 0, 0).pattern, [0xde, 0xad, 0xbe, 0xef]);
        // A raw content beside HTTP buffers is matched with them (on the
        // message's bytes); the groups keep their buffers.
        let r = parse(
            r#"alert http any any -> any any (http.uri; content:"a"; pkt_data; content:"b"; sid:21;)"#,
        )
        .unwrap();
        let bufs: Vec<Buffer> = r.groups.iter().map(|g| g.buffer).collect();
        assert_eq!(bufs, [Buffer::Uri, Buffer::Raw]);
        assert!(r.uses_raw() && r.uses_http());
        assert!(matches!(
            parse(
                r#"alert http any any -> any any (flow:to_server; http.stat_code; content:"200"; sid:22;)"#
            ),
            Err(RuleError::Invalid(_))
        ));
        assert!(matches!(
            parse(r#"alert tcp any any -> any any (content:"a"; gid:3; sid:23;)"#),
            Err(RuleError::Unsupported(k)) if k == "gid:3"
        ));
    }

    #[test]
    fn pcre_flags_and_luhn() {
        let r =
            parse(r#"alert tcp any any -> any any (pcre:"/\d{4}/smiR"; luhn; sid:4;)"#).unwrap();
        let Item::Pcre(p) = &r.groups[0].items[0] else {
            panic!()
        };
        assert!(p.relative && p.luhn && !p.negated);
        assert!(p.re.is_match(b"ab1234"));
        assert!(matches!(
            parse(r#"alert tcp any any -> any any (pcre:"/a/T"; sid:5;)"#),
            Err(RuleError::Unsupported(k)) if k.contains("pcre flag `T`")
        ));
        assert!(parse(r#"alert tcp any any -> any any (content:"a"; luhn; sid:6;)"#).is_err());
    }

    fn pcre_of(rule: &str) -> Pcre {
        let r = parse(rule).unwrap();
        let Item::Pcre(p) = &r.groups[0].items[0] else {
            panic!("{rule}: no pcre first")
        };
        p.clone()
    }

    #[test]
    fn pcre_look_around_and_backreferences_use_the_backtracker() {
        let plain = pcre_of(r#"alert tcp any any -> any any (pcre:"/a+b/"; sid:1;)"#);
        assert!(matches!(plain.re, Regex::Automata(_)));
        for (pcre, yes, no) in [
            (r"/(?<=a)b/", &b"ab"[..], &b"cb"[..]),
            (
                r"/CN=(?:[^\r\n]+?\.)?evil\.run(?!\.)/",
                b"CN=x.evil.run",
                b"CN=x.evil.run.ok",
            ),
            (
                r"/(?P<h>[a-f0-9]{4})\/(?P=h)/",
                b"/beef/beef",
                b"/beef/cafe",
            ),
            (
                r"/^((?!<\/script>).)+?powershell/s",
                b"<script>powershell",
                b"</script>powershell",
            ),
            // Byte mode: `.` is any byte but newline, classes are ASCII.
            (r"/(?<!\w)\xe9./", b"\xe9\xff", b"a\xe9\xff"),
            (r"/(?<!\w)\xe9./", b"\xb5\xe9\xff", b"\xe9\n"),
        ] {
            let p = pcre_of(&format!(
                "alert tcp any any -> any any (pcre:\"{pcre}\"; sid:2;)"
            ));
            assert!(matches!(p.re, Regex::Backtracking(_)), "{pcre}");
            assert!(p.re.is_match(yes), "{pcre} on {yes:?}");
            assert!(!p.re.is_match(no), "{pcre} on {no:?}");
        }
        // What neither engine compiles still reports the pcre.
        assert!(matches!(
            parse(r#"alert tcp any any -> any any (pcre:"/a{2,1}/"; sid:5;)"#),
            Err(RuleError::Unsupported(k)) if k.starts_with("pcre")
        ));
        // A backreference-heavy pattern on a long input stops at the
        // backtrack limit: no match, no hang.
        let p =
            pcre_of(r#"alert tcp any any -> any any (pcre:"/^(?P<a>(a|aa)+)+(?P=a)b/"; sid:6;)"#);
        assert!(!p.re.is_match(&[b'a'; 4096]));
    }

    #[test]
    fn pcre_punctuation_escapes_are_literals_as_in_pcre() {
        // `\>` is `>` in PCRE (a word boundary in the regex crate), inside a
        // class or out; `\/`, `\"` and `\ ` are literals too.
        let p = pcre_of(
            r#"alert tcp any any -> any any (pcre:"/^\s+?[^\s\>]+?\s+?SYSTEM\s/"; sid:3;)"#,
        );
        assert!(p.re.is_match(b" <!DOCTYPE SYSTEM "));
        assert!(!p.re.is_match(b" a>b SYSTEM "));
        let p = pcre_of(r#"alert tcp any any -> any any (pcre:"/a\>b\/c\ d/"; sid:4;)"#);
        assert!(p.re.is_match(b"a>b/c d"));
        assert!(!p.re.is_match(b"ab/c d"));
        assert_eq!(pcre_escapes(r"\\\.\>\d\x41\]"), r"\\\.\x3E\d\x41\]");
        // A `{` that opens no quantifier is literal; `{,m}` is `{0,m}`.
        assert_eq!(
            pcre_escapes(r"\${\s*?%{a{2}b{2,}c{2,3}d{,4}[{,}]{x}"),
            r"\$\{\s*?%\{a{2}b{2,}c{2,3}d{0,4}[{,}]\{x}"
        );
        assert_eq!(pcre_escapes(r"[]{]{1}[^]{]{"), r"[]{]{1}[^]{]\{");
        assert_eq!(pcre_escapes(r"\x{e9}\p{L}{2}"), r"\x{e9}\p{L}{2}");
        let p = pcre_of(r#"alert tcp any any -> any any (pcre:"/try\s*?{}\s*?catch/"; sid:5;)"#);
        assert!(p.re.is_match(b"try {} catch"));
        assert!(!p.re.is_match(b"try catch"));
        let p = pcre_of(r#"alert tcp any any -> any any (pcre:"/^[^\x3c]{,3}\x27/"; sid:6;)"#);
        assert!(p.re.is_match(b"ab'"));
        assert!(!p.re.is_match(b"abcd'"));
    }

    #[test]
    fn unsupported_keywords_are_named_with_sid() {
        for (kw, rule) in [
            (
                "tag",
                r#"alert tcp any any -> any any (content:"a"; tag:session,5,packets; sid:10;)"#,
            ),
            (
                "byte_jump:dce",
                r#"alert tcp any any -> any any (content:"a"; byte_jump:4,0,dce; sid:10;)"#,
            ),
            (
                "threshold type rate",
                r#"alert tcp any any -> any any (content:"a"; threshold:type rate, track by_src, count 1, seconds 1; sid:10;)"#,
            ),
            (
                "protocol udp",
                r#"alert udp any any -> any any (content:"a"; sid:10;)"#,
            ),
            (
                "flow:no_stream",
                r#"alert tcp any any -> any any (content:"a"; flow:no_stream; sid:10;)"#,
            ),
            (
                "tls buffers mixed with http buffers",
                r#"alert tls any any -> any any (tls.sni; content:"a"; http.uri; content:"b"; sid:10;)"#,
            ),
            (
                "raw tls content from the server",
                r#"alert tls any any -> any any (flow:to_client; content:"|16 03|"; sid:10;)"#,
            ),
        ] {
            let e = parse_rule(rule, &Vars::default(), "f:3").unwrap_err();
            assert_eq!(e.0, Some(10));
            assert_eq!(e.1, RuleError::Unsupported(kw.to_string()), "{rule}");
        }
    }

    #[test]
    fn state_keywords_parse() {
        let r = parse(r#"alert http any any -> any any (flow:to_server; http.uri; content:"/a"; flowbits:set,x; flowbits:isnotset,y|z; flowbits:noalert; xbits:set,hit,track ip_src,expire 60; threshold: type both, track by_dst, count 5, seconds 60; sid:1;)"#).unwrap();
        assert_eq!(r.flowbits.len(), 2);
        assert!(r.flowbits[1].any && r.flowbits[1].names == ["y", "z"]);
        assert!(r.noalert);
        assert_eq!(r.xbits[0].expire, 60);
        let t = r.threshold.unwrap();
        assert_eq!(
            (t.kind, t.track, t.count, t.seconds),
            (ThresholdKind::Both, Track::Dst, 5, 60)
        );
        let r = parse(r#"alert http any any -> any any (http.uri; content:"/a"; flowint: ET.dl.count, +, 1; flowint:a,>=,b; flowint:a,notset; sid:4;)"#).unwrap();
        let f: Vec<(&str, IntOp, Option<IntValue>)> = r
            .flowints
            .iter()
            .map(|f| (f.name.as_str(), f.op, f.value.clone()))
            .collect();
        assert_eq!(
            f,
            [
                ("ET.dl.count", IntOp::Add, Some(IntValue::Number(1))),
                ("a", IntOp::Ge, Some(IntValue::Var("b".into()))),
                ("a", IntOp::NotSet, None),
            ]
        );
        for bad in [
            "a,+",
            "a,isset,1",
            "a,~,1",
            ",+,1",
            "a,+,1,2",
            "a,+,-1",
            "a,+,1x",
        ] {
            assert!(
                matches!(
                    parse(&format!(
                        r#"alert tcp any any -> any any (content:"a"; flowint:{bad}; sid:9;)"#
                    )),
                    Err(RuleError::Invalid(_))
                ),
                "{bad}"
            );
        }
        let r = parse(r#"alert http any any -> any any (http.uri; content:"/a"; detection_filter:track by_src, count 3, seconds 10; sid:2;)"#).unwrap();
        assert_eq!(r.threshold.unwrap().kind, ThresholdKind::DetectionFilter);
        let r = parse(r#"alert http any any -> any any (app-layer-event:http.invalid_transfer_encoding_value_in_request; content:"x"; sid:6;)"#).unwrap();
        assert_eq!(
            r.app_events,
            super::super::rule::app_event::HTTP_INVALID_TE_REQUEST
        );
        assert!(matches!(
            parse(r#"alert http any any -> any any (app-layer-event:http.gap; content:"x"; sid:7;)"#),
            Err(RuleError::Unsupported(k)) if k == "app-layer-event:http.gap"
        ));
        let r = parse(r#"alert http any any -> any any (flow:established,to_server,only_stream; http.uri; content:"/a"; sid:5;)"#).unwrap();
        assert!(r.flow.to_server && !r.flow.to_client);
        let r = parse(r#"alert tls any any -> any any (flow:to_server; tls.version:1.3; tls.sni; content:"x"; sid:3;)"#).unwrap();
        assert_eq!(r.tls_version.unwrap().versions, [0x0304]);
        assert_eq!(r.proto, Proto::Tls);
    }

    #[test]
    fn every_prefix_of_a_rule_is_an_error_or_a_rule_never_a_panic() {
        let rule = r#"drop http [$HOME_NET,!10.9.0.0/16] [1024:,!8080] -> $EXTERNAL_NET $HTTP_PORTS (msg:"x\;y"; flow:established,to_server; http.uri; content:"/a|20|b"; nocase; offset:1; depth:20; content:!"zz"; distance:0; within:9; pcre:"/c+d/Ri"; isdataat:!1,relative; byte_test:2,>=,0x10,-2,relative,string,hex; byte_jump:1,0,relative,align; bsize:<200; http.request_body; pcre:"/(\d{13,16})/"; luhn; http.host; dotprefix; content:".x.example"; endswith; urilen:1<>300; flowbits:set,a; xbits:isset,b,track ip_pair; threshold:type limit,track by_src,count 1,seconds 60; sid:77; rev:2; classtype:x; priority:3;)"#;
        assert!(parse(rule).is_ok(), "{:?}", parse(rule).err());
        for i in 0..rule.len() {
            if rule.is_char_boundary(i) {
                let _ = parse(&rule[..i]);
            }
        }
    }

    #[test]
    fn malformed_rules_are_errors() {
        for rule in [
            "",
            "alert tcp any any -> any any",
            r#"alert tcp any any -> any any (content:"a"; flowbits:set; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"a"; flowbits:set,a|b; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"a"; threshold:type limit, count 1; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"a"; xbits:set,x; sid:1;)"#,
            r#"alert http any any -> any any (http.uri; content:"a"; bsize:5<>2; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"a"; bsize:3; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"a"; byte_test:1,~,2,0; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"a"; isdataat:x; sid:1;)"#,
            r#"alert http any any -> any any (tls.sni; content:"a"; sid:1;)"#,
            r#"alert tcp any any -> any any (startswith; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"a"; sid:1"#,
            r#"alert tcp any any -> any any (content:"a";)"#,
            r#"alert tcp any any => any any (content:"a"; sid:1;)"#,
            r#"alert tcp 1.2.3 any -> any any (content:"a"; sid:1;)"#,
            r#"alert tcp any 70000 -> any any (content:"a"; sid:1;)"#,
            r#"alert tcp $NOPE any -> any any (content:"a"; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"|4|"; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"abc"; depth:2; sid:1;)"#,
            r#"alert tcp any any -> any any (nocase; sid:1;)"#,
            r#"alert tcp any any -> any any (content:"a; sid:1;)"#,
            r#"alert tcp any any -> any any (sid:1;)"#,
        ] {
            assert!(
                matches!(parse(rule), Err(RuleError::Invalid(_))),
                "{rule:?}"
            );
        }
    }

    #[test]
    fn ssl_state_picks_the_step_and_refuses_steps_never_seen() {
        use crate::inspect::ips::rule::ssl_state::{CLIENT_HELLO, SERVER_HELLO};
        let p = |opts: &str| parse(&format!("alert tls any any -> any any ({opts} sid:1;)"));
        let r = p(r#"ssl_state:client_hello; tls.sni; content:"a";"#).unwrap();
        let s = r.ssl_state.unwrap();
        assert!(s.holds(CLIENT_HELLO) && !s.holds(SERVER_HELLO));
        assert!(!r.uses_cert());
        let r = p(r#"ssl_state:server_hello; tls.sni; content:"a";"#).unwrap();
        assert!(
            r.uses_cert(),
            "the server's hello comes with the certificate"
        );
        let r = p(r#"ssl_state:!client_hello; tls.sni; content:"a";"#).unwrap();
        assert!(r.uses_cert());
        let r = p(r#"ssl_state:client_hello|server_hello; tls.sni; content:"a";"#).unwrap();
        let s = r.ssl_state.unwrap();
        assert!(s.holds(CLIENT_HELLO) && s.holds(SERVER_HELLO));
        // A tcp rule with ssl_state is a tls rule, as in Suricata.
        let r = parse(r#"alert tcp any any -> any any (ssl_state:client_hello; content:"|16 03|"; depth:2; sid:2;)"#).unwrap();
        assert_eq!(r.proto, Proto::Tls);
        for (opts, unsupported) in [
            (r#"ssl_state:client_keyx; tls.sni; content:"a";"#, true),
            (
                r#"ssl_state:server_hello|unknown; tls.sni; content:"a";"#,
                true,
            ),
            (r#"ssl_state:hello; tls.sni; content:"a";"#, false),
            (
                r#"ssl_state:client_hello; tls.cert_subject; content:"a";"#,
                false,
            ),
            (r#"ssl_state:server_hello; content:"|16|";"#, true),
        ] {
            match p(opts) {
                Err(RuleError::Unsupported(_)) if unsupported => {}
                Err(RuleError::Invalid(_)) if !unsupported => {}
                other => panic!("{opts}: {other:?}"),
            }
        }
        let http = parse(
            r#"alert http any any -> any any (ssl_state:client_hello; http.uri; content:"a"; sid:3;)"#,
        );
        assert!(matches!(http, Err(RuleError::Invalid(_))));
    }

    #[test]
    fn stream_size_and_dsize_parse_where_they_have_a_meaning() {
        use crate::inspect::ips::rule::StreamSide;
        let r = parse(r#"alert tcp any any -> any any (content:"a"; stream_size:either,>=,100; dsize:<10; sid:1;)"#).unwrap();
        let ss = r.stream_size.unwrap();
        assert_eq!((ss.side, ss.cmp), (StreamSide::Either, Cmp::Ge(100)));
        assert!(ss.holds(5, 100) && !ss.holds(99, 5));
        assert_eq!(r.dsize, Some(Cmp::Lt(10)));
        let both = parse(r#"alert http any any -> any any (http.uri; content:"a"; stream_size:both,<,50; sid:1;)"#).unwrap();
        assert!(
            both.stream_size.unwrap().holds(49, 49) && !both.stream_size.unwrap().holds(49, 50)
        );
        for (rule, unsupported) in [
            (
                r#"alert http any any -> any any (http.uri; content:"a"; dsize:>5; sid:1;)"#,
                true,
            ),
            (
                r#"alert tls any any -> any any (tls.sni; content:"a"; dsize:>5; sid:1;)"#,
                true,
            ),
            (
                r#"alert tls any any -> any any (tls.sni; content:"a"; stream_size:client,>,5; sid:1;)"#,
                true,
            ),
            (
                r#"alert tcp any any -> any any (content:"a"; stream_size:middle,>,5; sid:1;)"#,
                false,
            ),
            (
                r#"alert tcp any any -> any any (content:"a"; stream_size:client,~,5; sid:1;)"#,
                false,
            ),
            (
                r#"alert tcp any any -> any any (content:"a"; stream_size:client,>; sid:1;)"#,
                false,
            ),
            (
                r#"alert tcp any any -> any any (content:"a"; dsize:x; sid:1;)"#,
                false,
            ),
        ] {
            match parse(rule) {
                Err(RuleError::Unsupported(_)) if unsupported => {}
                Err(RuleError::Invalid(_)) if !unsupported => {}
                other => panic!("{rule}: {other:?}"),
            }
        }
    }

    #[test]
    fn ja3_keywords_are_sticky_buffers() {
        for kw in ["ja3.hash", "ja3_hash"] {
            let r = parse(&format!(r#"alert tls any any -> any any ({kw}; content:"e7d705a3286e19ea42f587b344ee6865"; sid:1;)"#)).unwrap();
            assert_eq!(r.groups[0].buffer, Buffer::Ja3Hash, "{kw}");
            assert_eq!(r.proto, Proto::Tls);
            assert!(!r.uses_cert());
        }
        for kw in ["ja3.string", "ja3_string"] {
            let r = parse(&format!(
                r#"alert tcp any any -> any any ({kw}; content:"771,"; sid:1;)"#
            ))
            .unwrap();
            assert_eq!(r.groups[0].buffer, Buffer::Ja3String, "{kw}");
            assert_eq!(r.proto, Proto::Tls);
        }
        assert!(matches!(
            parse(r#"alert tls any any <> any any (ja3.hash; content:"a"; sid:1;)"#),
            Err(RuleError::Unsupported(_))
        ));
        // ja3s is the server's hello, which the engines do not get.
        assert_eq!(
            parse(r#"alert tls any any -> any any (ja3s.hash; content:"a"; sid:1;)"#).unwrap_err(),
            RuleError::Unsupported("ja3s.hash".into())
        );
    }
}
