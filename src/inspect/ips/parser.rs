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

use super::rule::{Action, AddrSet, Buffer, Content, FlowOpts, Item, Pcre, PortSet, Proto, Rule};

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
    /// Suricata's shipped defaults: RFC 1918 is home, the rest external.
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
            ("HTTP_PORTS", "80"),
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

fn parse_pcre(v: &str) -> Result<(Pcre, Option<Buffer>), RuleError> {
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
            'E' => {}
            'R' => relative = true,
            'U' => buffer = Some(Buffer::Uri),
            'I' => buffer = Some(Buffer::UriRaw),
            'H' => buffer = Some(Buffer::Header),
            'P' => buffer = Some(Buffer::RequestBody),
            'Q' => buffer = Some(Buffer::ResponseBody),
            'M' => buffer = Some(Buffer::Method),
            'V' => buffer = Some(Buffer::UserAgent),
            'W' => buffer = Some(Buffer::Host),
            'S' => buffer = Some(Buffer::StatCode),
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
    src.push_str(&format!("(?:{pat})"));
    let re = regex::bytes::RegexBuilder::new(&src)
        .unicode(false)
        .size_limit(2 << 20)
        .dfa_size_limit(2 << 20)
        .build()
        .map_err(|e| {
            let first = e.to_string();
            let line = first
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .unwrap_or("cannot compile")
                .to_string();
            RuleError::Unsupported(format!("pcre /{pat}/ ({line})"))
        })?;
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

fn sticky(keyword: &str) -> Option<Buffer> {
    Some(match keyword {
        "pkt_data" => Buffer::Raw,
        "http.uri" => Buffer::Uri,
        "http.uri.raw" => Buffer::UriRaw,
        "http.host" => Buffer::Host,
        "http.method" => Buffer::Method,
        "http.header" => Buffer::Header,
        "http.user_agent" => Buffer::UserAgent,
        "http.request_body" | "http_client_body_sticky" => Buffer::RequestBody,
        "http.response_body" => Buffer::ResponseBody,
        "http.stat_code" => Buffer::StatCode,
        "http.response_header" => Buffer::ResponseHeader,
        _ => return None,
    })
}

/// Legacy (Suricata 4 / Snort) content modifiers that move the previous content.
fn legacy_modifier(keyword: &str) -> Option<Buffer> {
    Some(match keyword {
        "http_uri" => Buffer::Uri,
        "http_raw_uri" => Buffer::UriRaw,
        "http_host" => Buffer::Host,
        "http_method" => Buffer::Method,
        "http_header" => Buffer::Header,
        "http_user_agent" => Buffer::UserAgent,
        "http_client_body" => Buffer::RequestBody,
        "http_server_body" => Buffer::ResponseBody,
        "http_stat_code" => Buffer::StatCode,
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

fn last_content<'a>(
    items: &'a mut [(Buffer, Item)],
    kw: &str,
) -> Result<&'a mut Content, RuleError> {
    match items.last_mut() {
        Some((_, Item::Content(c))) => Ok(c),
        _ => invalid(format!("`{kw}` does not follow a content")),
    }
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
        fast_pattern: None,
        origin: origin.to_string(),
    };
    let mut have_sid = false;
    let mut items: Vec<(Buffer, Item)> = Vec::new();
    let mut cur = Buffer::Raw;
    for (kw, val) in split_options(&line[open + 1..close])? {
        let v = val.as_deref();
        if let Some(b) = sticky(&kw) {
            if v.is_some() {
                return invalid(format!("`{kw}` takes no value"));
            }
            cur = b;
            continue;
        }
        if let Some(b) = legacy_modifier(&kw) {
            match items.last_mut() {
                Some((buf, Item::Content(_))) if *buf == Buffer::Raw => *buf = b,
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
                items.push((
                    cur,
                    Item::Content(Content {
                        pattern,
                        nocase: false,
                        negated,
                        offset: None,
                        depth: None,
                        distance: None,
                        within: None,
                        fast_pattern: false,
                        searcher: None,
                    }),
                ));
            }
            "nocase" => last_content(&mut items, &kw)?.nocase = true,
            "depth" => {
                let n: usize = num("depth", v)?;
                let c = last_content(&mut items, &kw)?;
                if n < c.pattern.len() {
                    return invalid(format!("depth {n} is shorter than its content"));
                }
                c.depth = Some(n);
            }
            "offset" => last_content(&mut items, &kw)?.offset = Some(num("offset", v)?),
            "distance" => last_content(&mut items, &kw)?.distance = Some(num("distance", v)?),
            "within" => {
                let n: usize = num("within", v)?;
                let c = last_content(&mut items, &kw)?;
                if n < c.pattern.len() {
                    return invalid(format!("within {n} is shorter than its content"));
                }
                c.within = Some(n);
            }
            "fast_pattern" => {
                match v.map(str::trim) {
                    None | Some("only") => {}
                    Some(other) => {
                        return Err(RuleError::Unsupported(format!("fast_pattern:{other}")))
                    }
                }
                last_content(&mut items, &kw)?.fast_pattern = true;
            }
            "pcre" => {
                let (p, buf) = parse_pcre(v.unwrap_or(""))?;
                items.push((buf.unwrap_or(cur), Item::Pcre(p)));
            }
            "luhn" => match items.last_mut() {
                Some((_, Item::Pcre(p))) if !p.negated => p.luhn = true,
                _ => return invalid("`luhn` does not follow a (non-negated) pcre"),
            },
            "flow" => {
                for part in v.unwrap_or("").split(',') {
                    match part.trim() {
                        "to_server" | "from_client" => rule.flow.to_server = true,
                        "to_client" | "from_server" => rule.flow.to_client = true,
                        // Only established TCP streams are ever inspected.
                        "established" | "stateless" => {}
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
    if items.is_empty() {
        return invalid("rule has no content or pcre (header-only rules are not supported)");
    }
    // Group by buffer, keeping rule order inside each buffer.
    let mut groups: Vec<(Buffer, Vec<Item>)> = Vec::new();
    for (b, it) in items {
        match groups.iter_mut().find(|(gb, _)| *gb == b) {
            Some((_, list)) => list.push(it),
            None => groups.push((b, vec![it])),
        }
    }
    let uses_raw = groups.iter().any(|(b, _)| *b == Buffer::Raw);
    if uses_raw && groups.len() > 1 {
        return Err(RuleError::Unsupported(
            "raw stream content mixed with http buffers".into(),
        ));
    }
    let req = groups
        .iter()
        .any(|(b, _)| *b != Buffer::Raw && !b.is_response());
    let resp = groups.iter().any(|(b, _)| b.is_response());
    if req && rule.flow.to_client && !resp {
        return invalid("request buffers with flow:to_client can never match");
    }
    if resp && rule.flow.to_server {
        return invalid("response buffers with flow:to_server can never match");
    }
    // Fast pattern: the flagged content, else the longest positive one.
    let mut best: Option<(Buffer, &Content)> = None;
    for (b, list) in &groups {
        for it in list {
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
                    best = Some((*b, c));
                }
            }
        }
    }
    rule.fast_pattern = best.map(|(b, c)| (b, c.pattern.clone()));
    for (_, list) in &mut groups {
        for it in list.iter_mut() {
            if let Item::Content(c) = it {
                c.searcher = Some(build_searcher(&c.pattern, c.nocase)?);
            }
        }
    }
    rule.groups = groups;
    Ok(rule)
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
        match &r.groups[g].1[i] {
            Item::Content(c) => c,
            Item::Pcre(_) => panic!("not a content"),
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
        let bufs: Vec<Buffer> = r.groups.iter().map(|g| g.0).collect();
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
        assert_eq!(r.groups[0].0, Buffer::Method);
        assert_eq!(r.groups[1].0, Buffer::Uri);
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
        assert_eq!(r.groups[0].0, Buffer::UriRaw);
        assert_eq!(r.rev, 3);
        let r = parse(r#"alert tcp any any -> any any (http.uri; pkt_data; content:"|de ad be ef|"; sid:24;)"#).unwrap();
        assert_eq!(r.groups[0].0, Buffer::Raw);
        assert_eq!(content(&r, 0, 0).pattern, [0xde, 0xad, 0xbe, 0xef]);
        // A raw content mixed with HTTP buffers is refused as a whole.
        assert!(matches!(
            parse(
                r#"alert http any any -> any any (http.uri; content:"a"; pkt_data; content:"b"; sid:21;)"#
            ),
            Err(RuleError::Unsupported(_))
        ));
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
        let Item::Pcre(p) = &r.groups[0].1[0] else {
            panic!()
        };
        assert!(p.relative && p.luhn && !p.negated);
        assert!(p.re.is_match(b"ab1234"));
        assert!(matches!(
            parse(r#"alert tcp any any -> any any (pcre:"/a/O"; sid:5;)"#),
            Err(RuleError::Unsupported(k)) if k.contains("pcre flag `O`")
        ));
        assert!(matches!(
            parse(r#"alert tcp any any -> any any (pcre:"/(?<=a)b/"; sid:5;)"#),
            Err(RuleError::Unsupported(k)) if k.starts_with("pcre")
        ));
        assert!(parse(r#"alert tcp any any -> any any (content:"a"; luhn; sid:6;)"#).is_err());
    }

    #[test]
    fn unsupported_keywords_are_named_with_sid() {
        for (kw, rule) in [
            (
                "byte_test",
                r#"alert tcp any any -> any any (content:"a"; byte_test:1,>,2,0; sid:10;)"#,
            ),
            (
                "flowbits",
                r#"alert tcp any any -> any any (content:"a"; flowbits:set,x; sid:10;)"#,
            ),
            (
                "threshold",
                r#"alert tcp any any -> any any (content:"a"; threshold:type limit; sid:10;)"#,
            ),
            (
                "protocol udp",
                r#"alert udp any any -> any any (content:"a"; sid:10;)"#,
            ),
            (
                "flow:only_stream",
                r#"alert tcp any any -> any any (content:"a"; flow:only_stream; sid:10;)"#,
            ),
            (
                "fast_pattern:0,2",
                r#"alert tcp any any -> any any (content:"ab"; fast_pattern:0,2; sid:10;)"#,
            ),
        ] {
            let e = parse_rule(rule, &Vars::default(), "f:3").unwrap_err();
            assert_eq!(e.0, Some(10));
            assert_eq!(e.1, RuleError::Unsupported(kw.to_string()), "{rule}");
        }
    }

    #[test]
    fn every_prefix_of_a_rule_is_an_error_or_a_rule_never_a_panic() {
        let rule = r#"drop http [$HOME_NET,!10.9.0.0/16] [1024:,!8080] -> $EXTERNAL_NET $HTTP_PORTS (msg:"x\;y"; flow:established,to_server; http.uri; content:"/a|20|b"; nocase; offset:1; depth:20; content:!"zz"; distance:0; within:9; pcre:"/c+d/Ri"; http.request_body; pcre:"/(\d{13,16})/"; luhn; sid:77; rev:2; classtype:x; priority:3;)"#;
        assert!(parse(rule).is_ok());
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
}
