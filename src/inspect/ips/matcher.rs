//! Full evaluation of one rule against the buffers of one inspection step.
//!
//! Runs only for rules the prefilter nominated. Contents in a buffer are
//! matched in rule order with backtracking over every occurrence, because a
//! relative content (`distance`/`within`) may only fit after a later
//! occurrence of the content before it; a step budget bounds the work a
//! hostile buffer can cause.

#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use aho_corasick::Input;

use super::rule::{
    Buffer, ByteOp, ByteRead, Content, Group, Item, Pcre, Rule, VarValues, BUFFERS, MAX_VARS,
};

/// The buffers available to one inspection step; `None` = not present.
#[derive(Debug, Clone, Copy)]
pub struct Buffers<'a> {
    slots: [Option<&'a [u8]>; BUFFERS],
    /// `tls.certs`: each certificate of the chain, leaf first.
    certs: &'a [&'a [u8]],
    /// The [`app_event`](super::rule::app_event) bits the message raised.
    events: u32,
}

impl Default for Buffers<'_> {
    fn default() -> Self {
        Buffers {
            slots: [None; BUFFERS],
            certs: &[],
            events: 0,
        }
    }
}

impl<'a> Buffers<'a> {
    /// Sets buffer `b`.
    pub fn set(&mut self, b: Buffer, data: &'a [u8]) {
        if let Some(slot) = self.slots.get_mut(b as usize) {
            *slot = Some(data);
        }
    }

    /// Records the app-layer events the message raised.
    pub fn set_events(&mut self, events: u32) {
        self.events = events;
    }

    /// Removes buffer `b` (rules on it then cannot match).
    pub fn unset(&mut self, b: Buffer) {
        if let Some(slot) = self.slots.get_mut(b as usize) {
            *slot = None;
        }
    }

    /// Gets buffer `b` (for [`Buffer::Certs`], the leaf).
    pub fn get(&self, b: Buffer) -> Option<&'a [u8]> {
        if b == Buffer::Certs {
            return self.certs.first().copied();
        }
        self.slots.get(b as usize).copied().flatten()
    }

    /// Sets the certificate chain that [`Buffer::Certs`] iterates.
    pub fn set_certs(&mut self, certs: &'a [&'a [u8]]) {
        self.certs = certs;
    }

    /// Every instance of buffer `b`: the chain for [`Buffer::Certs`], else
    /// at most one.
    pub fn each(&self, b: Buffer) -> impl Iterator<Item = &'a [u8]> + '_ {
        let (one, many): (Option<&'a [u8]>, &'a [&'a [u8]]) = if b == Buffer::Certs {
            (None, self.certs)
        } else {
            (self.slots.get(b as usize).copied().flatten(), &[])
        };
        one.into_iter().chain(many.iter().copied())
    }
}

/// How many search steps one rule may take on one step's buffers.
const STEP_BUDGET: u32 = 10_000;
/// Most pcre matches tried per item (each may start a backtracking branch).
const PCRE_TRIES: usize = 64;

/// Whether every buffer group of `rule` matches.
pub fn rule_matches(rule: &Rule, bufs: &Buffers<'_>) -> bool {
    bufs.events & rule.app_events == rule.app_events
        && rule
            .groups
            .iter()
            .all(|g| bufs.each(g.buffer).any(|data| group_matches(g, data)))
}

fn group_matches(g: &Group, data: &[u8]) -> bool {
    let prefixed;
    let data = if g.dotprefix {
        prefixed = [b".", data].concat();
        &prefixed[..]
    } else {
        data
    };
    let mut budget = STEP_BUDGET;
    let mut vars = [0; MAX_VARS];
    sizes_ok(&g.items, data) && step(&g.items, 0, data, 0, &mut budget, &mut vars)
}

/// Size conditions do not depend on the match position.
fn sizes_ok(items: &[Item], data: &[u8]) -> bool {
    items.iter().all(|it| match it {
        Item::Size(c) => c.holds(data.len() as u64),
        _ => true,
    })
}

/// Most bytes one `base64_decode` produces: a bound on the work of one
/// rule on one buffer (the ET rules that decode ask for 300 bytes or a
/// parameter value).
const BASE64_MAX_DECODED: usize = 64 * 1024;

/// Decodes base64 as Suricata's RFC 4648 mode does: from the start of
/// `input` up to the first byte outside the alphabet (or `=`), a trailing
/// partial quantum decoding to the whole bytes it holds.
pub fn base64_decode(input: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    let n = input
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/'))
        .unwrap_or(input.len());
    let n = n.min(BASE64_MAX_DECODED / 3 * 4);
    // One sextet alone holds no whole byte.
    let n = if n % 4 == 1 { n - 1 } else { n };
    ENGINE
        .decode(input.get(..n).unwrap_or(input))
        .unwrap_or_default()
}

/// The value `byte_extract` stored in variable `v`.
fn var_value(vars: &VarValues, v: u8) -> u64 {
    vars.get(usize::from(v)).copied().unwrap_or_default()
}

/// The value of a position: its `byte_extract` variable's, else its own.
fn resolve(own: Option<usize>, var: Option<u8>, vars: &VarValues) -> Option<usize> {
    match var {
        Some(v) => Some(usize::try_from(var_value(vars, v)).unwrap_or(usize::MAX)),
        None => own,
    }
}

fn window(c: &Content, prev_end: usize, len: usize, vars: &VarValues) -> (usize, usize) {
    if c.relative() {
        let distance = match c.vars.distance {
            Some(v) => i64::try_from(var_value(vars, v)).unwrap_or(i64::MAX),
            None => c.distance.unwrap_or(0),
        };
        let base = (prev_end as i64).saturating_add(distance);
        let start = base.max(0) as usize;
        let end = match resolve(c.within, c.vars.within, vars) {
            Some(w) => base
                .saturating_add(i64::try_from(w).unwrap_or(i64::MAX))
                .max(0) as usize,
            None => len,
        };
        (start.min(len), end.min(len))
    } else if c.startswith {
        (0, c.pattern.len().min(len))
    } else {
        let start = resolve(c.offset, c.vars.offset, vars).unwrap_or(0);
        let end = match resolve(c.depth, c.vars.depth, vars) {
            Some(d) => start.saturating_add(d),
            None => len,
        };
        (start.min(len), end.min(len))
    }
}

/// Whether item `next` could match after a later position of the item
/// before it, having failed after an earlier one.
///
/// A non-relative item ignores the previous position; a positive relative
/// content without `within` searches a suffix that only shrinks as the
/// position grows, so what failed from an earlier position fails from any
/// later one. Skipping those retries keeps evaluation linear instead of
/// occurrences x buffer length.
fn retry_useful(items: &[Item], next: usize) -> bool {
    match items.get(next) {
        None => false,
        Some(Item::Content(c)) => c.relative() && (c.within.is_some() || c.negated),
        Some(Item::Pcre(p)) => p.relative,
        Some(Item::IsDataAt { relative, .. }) => *relative,
        Some(
            Item::ByteTest { read, .. }
            | Item::ByteJump { read, .. }
            | Item::ByteExtract { read, .. },
        ) => read.relative,
        Some(Item::Base64 { relative, .. }) => *relative,
        Some(Item::Size(_)) => retry_useful(items, next + 1),
    }
}

/// Reads the number a `byte_test`/`byte_jump` looks at; `None` when the
/// bytes are out of the buffer or are not digits.
fn read_number(
    r: &ByteRead,
    data: &[u8],
    prev_end: usize,
    vars: &VarValues,
) -> Option<(u64, usize)> {
    let base = if r.relative { prev_end as i64 } else { 0 };
    let offset = match r.offset_var {
        Some(v) => i64::try_from(var_value(vars, v)).ok()?,
        None => r.offset,
    };
    let start = usize::try_from(base.checked_add(offset)?).ok()?;
    let (start, end) = if r.nbytes == 0 {
        // A string number of any length (Suricata's strtoull without a
        // length): leading white space, then the digits there are.
        let rest = data.get(start..)?;
        let ws = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let radix = r.string_base?;
        let digits = rest
            .get(ws..)
            .unwrap_or_default()
            .iter()
            .position(|b| !(*b as char).is_digit(radix))
            .unwrap_or(rest.len() - ws);
        (start + ws, start + ws + digits)
    } else {
        (start, start.checked_add(r.nbytes)?)
    };
    let bytes = data.get(start..end)?;
    let mut v: u64 = match r.string_base {
        Some(radix) => {
            let digits: &[u8] = {
                let n = bytes
                    .iter()
                    .position(|b| !(*b as char).is_digit(radix))
                    .unwrap_or(bytes.len());
                bytes.get(..n).unwrap_or(bytes)
            };
            if digits.is_empty() {
                return None;
            }
            let s = std::str::from_utf8(digits).ok()?;
            u64::from_str_radix(s, radix).ok()?
        }
        None => {
            let mut v = 0u64;
            if r.little {
                for &b in bytes.iter().rev() {
                    v = (v << 8) | u64::from(b);
                }
            } else {
                for &b in bytes {
                    v = (v << 8) | u64::from(b);
                }
            }
            v
        }
    };
    if let Some(mask) = r.bitmask {
        v &= mask;
        if mask != 0 {
            v >>= mask.trailing_zeros();
        }
    }
    Some((v, end))
}

/// Matches `items[i..]` from `prev_end`; `vars` holds the values the
/// `byte_extract`s on the current path read (each later item only reads
/// those set before it, so backtracking may overwrite them).
fn step(
    items: &[Item],
    i: usize,
    data: &[u8],
    prev_end: usize,
    budget: &mut u32,
    vars: &mut VarValues,
) -> bool {
    let Some(item) = items.get(i) else {
        return true;
    };
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    match item {
        Item::Content(c) => content_step(c, items, i, data, prev_end, budget, vars),
        Item::Pcre(p) => pcre_step(p, items, i, data, prev_end, budget, vars),
        Item::Size(_) => step(items, i + 1, data, prev_end, budget, vars),
        Item::Base64 {
            bytes,
            offset,
            relative,
            data: decoded_items,
        } => {
            let base = if *relative { prev_end } else { 0 };
            let start = base.saturating_add(*offset);
            if start >= data.len() {
                return false;
            }
            let end = match bytes {
                Some(b) => start.saturating_add(*b).min(data.len()),
                None => data.len(),
            };
            let decoded = base64_decode(data.get(start..end).unwrap_or_default());
            !decoded.is_empty()
                && sizes_ok(decoded_items, &decoded)
                && step(decoded_items, 0, &decoded, 0, budget, &mut [0; MAX_VARS])
                && step(items, i + 1, data, prev_end, budget, vars)
        }
        Item::IsDataAt {
            n,
            relative,
            negated,
            n_var,
        } => {
            let n = &resolve(Some(*n), *n_var, vars).unwrap_or(0);
            // As Suricata: absolute data at `n` exists when n < length;
            // relative when the previous match end + n <= length.
            let present = if *relative {
                prev_end.saturating_add(*n) <= data.len()
            } else {
                *n < data.len()
            };
            present != *negated && step(items, i + 1, data, prev_end, budget, vars)
        }
        Item::ByteTest {
            read,
            op,
            negated,
            value,
            value_var,
        } => {
            let Some((v, _)) = read_number(read, data, prev_end, vars) else {
                return false;
            };
            let value = &match value_var {
                Some(x) => var_value(vars, *x),
                None => *value,
            };
            let ok = match op {
                ByteOp::Lt => v < *value,
                ByteOp::Gt => v > *value,
                ByteOp::Eq => v == *value,
                ByteOp::Le => v <= *value,
                ByteOp::Ge => v >= *value,
                ByteOp::And => v & *value != 0,
                ByteOp::Xor => v ^ *value != 0,
            };
            ok != *negated && step(items, i + 1, data, prev_end, budget, vars)
        }
        Item::ByteExtract {
            read,
            multiplier,
            align,
            var,
        } => {
            // As Suricata: the value times the multiplier, rounded up to
            // the alignment; the match position moves past the bytes read.
            let Some((v, end)) = read_number(read, data, prev_end, vars) else {
                return false;
            };
            let mut v = v.saturating_mul(*multiplier);
            if *align > 0 {
                let a = u64::from(*align);
                v = v.saturating_add((a - v % a) % a);
            }
            if let Some(slot) = vars.get_mut(usize::from(*var)) {
                *slot = v;
            }
            step(items, i + 1, data, end, budget, vars)
        }
        Item::ByteJump {
            read,
            multiplier,
            post_offset,
            align,
            from_beginning,
        } => {
            let Some((v, end)) = read_number(read, data, prev_end, vars) else {
                return false;
            };
            let mut jump = v.saturating_mul(*multiplier);
            if *align {
                jump = jump.saturating_add((4 - jump % 4) % 4);
            }
            let from = if *from_beginning { 0 } else { end as u64 };
            let to = (from.saturating_add(jump) as i64).saturating_add(*post_offset);
            match usize::try_from(to) {
                Ok(to) if to <= data.len() => step(items, i + 1, data, to, budget, vars),
                _ => false,
            }
        }
    }
}

fn content_step(
    c: &Content,
    items: &[Item],
    i: usize,
    data: &[u8],
    prev_end: usize,
    budget: &mut u32,
    vars: &mut VarValues,
) -> bool {
    let (start, end) = window(c, prev_end, data.len(), vars);
    let Some(searcher) = c.searcher.as_ref() else {
        return false;
    };
    if end < start || end - start < c.pattern.len() {
        return c.negated && step(items, i + 1, data, prev_end, budget, vars);
    }
    if c.endswith {
        // The only candidate ends at the end of the buffer.
        let at = data.len() - c.pattern.len();
        let found = end == data.len()
            && at >= start
            && searcher
                .find(Input::new(data).span(at..data.len()))
                .is_some();
        return if c.negated {
            !found && step(items, i + 1, data, prev_end, budget, vars)
        } else {
            found && step(items, i + 1, data, data.len(), budget, vars)
        };
    }
    let input = Input::new(data).span(start..end);
    if c.negated {
        return searcher.find(input).is_none() && step(items, i + 1, data, prev_end, budget, vars);
    }
    let retry = retry_useful(items, i + 1);
    for m in searcher.find_overlapping_iter(input) {
        if step(items, i + 1, data, m.end(), budget, vars) {
            return true;
        }
        if *budget == 0 || !retry {
            return false;
        }
    }
    false
}

fn pcre_step(
    p: &Pcre,
    items: &[Item],
    i: usize,
    data: &[u8],
    prev_end: usize,
    budget: &mut u32,
    vars: &mut VarValues,
) -> bool {
    // A relative pcre sees the buffer from the previous match on, so `^`
    // anchors there, as in Suricata.
    let from = if p.relative {
        prev_end.min(data.len())
    } else {
        0
    };
    let hay = data.get(from..).unwrap_or_default();
    if p.negated {
        return !p.re.is_match(hay) && step(items, i + 1, data, prev_end, budget, vars);
    }
    let mut at = 0;
    for _ in 0..PCRE_TRIES {
        if at > hay.len() {
            return false;
        }
        let (m_start, m_end, digits_ok) = if p.luhn {
            let Some((whole, group)) = p.re.captures_at(hay, at) else {
                return false;
            };
            let (s, e) = group.unwrap_or(whole);
            (
                whole.0,
                whole.1,
                luhn_valid(hay.get(s..e).unwrap_or_default()),
            )
        } else {
            let Some((s, e)) = p.re.find_at(hay, at) else {
                return false;
            };
            (s, e, true)
        };
        if digits_ok {
            if step(items, i + 1, data, from + m_end, budget, vars) {
                return true;
            }
            if !retry_useful(items, i + 1) {
                return false;
            }
        }
        if *budget == 0 {
            return false;
        }
        // Next candidate starts one byte later (matches may overlap).
        at = if m_end > m_start {
            m_start + 1
        } else {
            m_end + 1
        };
    }
    false
}

/// Whether the digits in `s` (spaces and dashes ignored) form a 13–19 digit
/// number with a valid Luhn check digit, as payment card numbers do.
pub fn luhn_valid(s: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut n = 0usize;
    for &b in s.iter().rev() {
        match b {
            b'0'..=b'9' => {
                let mut d = u32::from(b - b'0');
                if n % 2 == 1 {
                    d *= 2;
                    if d > 9 {
                        d -= 9;
                    }
                }
                sum += d;
                n += 1;
            }
            b' ' | b'-' => {}
            _ => return false,
        }
    }
    (13..=19).contains(&n) && sum % 10 == 0
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::parser::{parse_rule, RuleError, Vars};
    use super::*;

    fn m(rule: &str, buf: Buffer, data: &[u8]) -> bool {
        let r = parse_rule(rule, &Vars::default(), "t:1").unwrap();
        let mut b = Buffers::default();
        b.set(buf, data);
        rule_matches(&r, &b)
    }

    fn raw(opts: &str, data: &[u8]) -> bool {
        m(
            &format!("alert tcp any any -> any any ({opts} sid:1;)"),
            Buffer::Raw,
            data,
        )
    }

    #[test]
    fn content_positions() {
        assert!(raw(r#"content:"abc";"#, b"xxabcxx"));
        assert!(!raw(r#"content:"ABC";"#, b"xxabcxx"));
        assert!(raw(r#"content:"ABC"; nocase;"#, b"xxabcxx"));
        assert!(raw(r#"content:"abc"; offset:2; depth:3;"#, b"xxabcxx"));
        assert!(!raw(r#"content:"abc"; offset:3;"#, b"xxabcxx"));
        assert!(!raw(r#"content:"abc"; depth:4;"#, b"xxabcxx"));
        assert!(raw(r#"content:!"zzz";"#, b"xxabcxx"));
        assert!(!raw(r#"content:!"abc";"#, b"xxabcxx"));
    }

    #[test]
    fn relative_contents_backtrack() {
        // The first "a" is followed by "b" too far away; the second fits.
        assert!(raw(
            r#"content:"a"; content:"b"; distance:0; within:2;"#,
            b"a....ab"
        ));
        assert!(!raw(
            r#"content:"a"; content:"b"; distance:0; within:2;"#,
            b"a....a..b"
        ));
        assert!(raw(r#"content:"a"; content:"b"; distance:3;"#, b"a...b"));
        assert!(!raw(r#"content:"a"; content:"b"; distance:4;"#, b"a...b"));
        // Negative distance looks back before the previous match end.
        assert!(raw(
            r#"content:"bc"; content:"ab"; distance:-3; within:2;"#,
            b"abc"
        ));
        assert!(raw(
            r#"content:"a"; content:!"b"; distance:0; within:1;"#,
            b"ac"
        ));
        assert!(!raw(
            r#"content:"a"; content:!"b"; distance:0; within:1;"#,
            b"ab"
        ));
    }

    #[test]
    fn pcre_relative_negated_and_luhn() {
        assert!(raw(r#"content:"id="; pcre:"/^\d+/R";"#, b"x id=42"));
        assert!(!raw(r#"content:"id="; pcre:"/^\d+/R";"#, b"x id=x42"));
        assert!(raw(r#"content:"x"; pcre:!"/evil/i";"#, b"x good"));
        assert!(!raw(r#"content:"x"; pcre:!"/evil/i";"#, b"x EVIL"));
        let card = r#"pcre:"/\b(\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4})\b/"; luhn;"#;
        assert!(raw(card, b"card=4111 1111 1111 1111;"));
        assert!(!raw(card, b"card=4111 1111 1111 1112;"));
        // A failing number first does not hide a valid one later.
        assert!(raw(card, b"1234567812345678 and 5500-0000-0000-0004"));
    }

    #[test]
    fn pcre_look_around_and_backreferences_in_rules() {
        // A relative look-ahead: after the content, a name not followed by
        // another label.
        let tail = r#"content:"CN="; pcre:"/^(?:[^\r\n]+?\.)?evil\.run(?!\.)/R";"#;
        assert!(raw(tail, b"subject CN=a.evil.run"));
        assert!(!raw(tail, b"subject CN=a.evil.run.example"));
        // A backreference, negated.
        let echo = r#"content:"id="; pcre:!"/id=(?P<v>\w+)&back=(?P=v)/";"#;
        assert!(raw(echo, b"id=ab&back=cd"));
        assert!(!raw(echo, b"id=ab&back=ab"));
        // Luhn on the first group of a backtracking expression.
        let card = r#"pcre:"/(?<![0-9])(\d{16})(?![0-9])/"; luhn;"#;
        assert!(raw(card, b"x4111111111111111y"));
        assert!(!raw(card, b"x41111111111111111y"));
        assert!(!raw(card, b"x4111111111111112y"));
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"378282246310005"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"4111"));
        assert!(!luhn_valid(b"4111a111111111111"));
    }

    #[test]
    fn http_buffers() {
        let r = parse_rule(
            r#"alert http any any -> any any (http.method; content:"POST"; http.uri; content:"/login"; http.request_body; content:"' or 1=1"; nocase; sid:9;)"#,
            &Vars::default(),
            "t:1",
        )
        .unwrap();
        let mut b = Buffers::default();
        b.set(Buffer::Method, b"POST");
        b.set(Buffer::Uri, b"/login");
        assert!(!rule_matches(&r, &b), "body missing");
        b.set(Buffer::RequestBody, b"user=a' OR 1=1--");
        assert!(rule_matches(&r, &b));
        b.set(Buffer::Method, b"GET");
        assert!(!rule_matches(&r, &b));
    }

    fn buf(rule_opts: &str, b: Buffer, data: &[u8]) -> bool {
        m(
            &format!("alert http any any -> any any ({rule_opts} sid:1;)"),
            b,
            data,
        )
    }

    #[test]
    fn startswith_endswith_bsize_dotprefix() {
        let o = r#"http.host; content:"evil.example"; endswith;"#;
        assert!(buf(o, Buffer::Host, b"www.evil.example"));
        assert!(!buf(o, Buffer::Host, b"evil.example.org"));
        let o = r#"http.uri; content:"/adm"; startswith;"#;
        assert!(buf(o, Buffer::Uri, b"/admin"));
        assert!(!buf(o, Buffer::Uri, b"/x/admin"));
        let o = r#"http.uri; content:"/a"; startswith; content:"z"; distance:0; endswith;"#;
        assert!(buf(o, Buffer::Uri, b"/a/b/z"));
        assert!(!buf(o, Buffer::Uri, b"/a/b/zz/"));
        let o = r#"http.host; content:"ab.cd"; bsize:5;"#;
        assert!(buf(o, Buffer::Host, b"ab.cd"));
        assert!(!buf(o, Buffer::Host, b"xab.cd"));
        for (v, len, ok) in [
            ("<5", 4, true),
            ("<5", 5, false),
            (">=5", 5, true),
            ("3<>6", 3, false),
            ("3<>6", 5, true),
        ] {
            let o = format!(r#"http.uri; content:"a"; bsize:{v};"#);
            assert_eq!(buf(&o, Buffer::Uri, &b"aaaaaaa"[..len]), ok, "{v} {len}");
        }
        // dotprefix: `.example.com` + endswith matches the domain and its subdomains only.
        let r = r#"alert tls any any -> any any (tls.sni; dotprefix; content:".example.com"; endswith; sid:1;)"#;
        assert!(m(r, Buffer::Sni, b"example.com"));
        assert!(m(r, Buffer::Sni, b"a.example.com"));
        assert!(!m(r, Buffer::Sni, b"badexample.com"));
        let set = parse_rule(r, &Vars::default(), "t").unwrap();
        assert_eq!(
            set.fast_pattern,
            Some((Buffer::Sni, b"example.com".to_vec()))
        );
    }

    #[test]
    fn isdataat_and_urilen() {
        let o = r#"http.uri; content:"/x"; isdataat:!1,relative;"#;
        assert!(buf(o, Buffer::Uri, b"/a/x"));
        assert!(!buf(o, Buffer::Uri, b"/a/x?"));
        let o = r#"http.uri; content:"/x"; isdataat:2,relative;"#;
        assert!(buf(o, Buffer::Uri, b"/x12"));
        assert!(!buf(o, Buffer::Uri, b"/x1"));
        let o = r#"http.uri; content:"/"; isdataat:3;"#;
        assert!(buf(o, Buffer::Uri, b"/abc"));
        assert!(!buf(o, Buffer::Uri, b"/ab"));
        let o = r#"http.uri; content:"/"; urilen:<4;"#;
        assert!(buf(o, Buffer::Uri, b"/ab"));
        assert!(!buf(o, Buffer::Uri, b"/abc"));
        let r = parse_rule(
            r#"alert http any any -> any any (urilen:10,raw; content:"a"; http_uri; sid:3;)"#,
            &Vars::default(),
            "t",
        )
        .unwrap();
        assert!(r.groups.iter().any(|g| g.buffer == Buffer::UriRaw));
    }

    #[test]
    fn byte_test_and_byte_jump() {
        assert!(raw(r#"content:"A"; byte_test:1,>,0x51,0,relative;"#, b"AR"));
        assert!(!raw(
            r#"content:"A"; byte_test:1,>,0x51,0,relative;"#,
            b"AQ"
        ));
        assert!(raw(
            r#"content:"A"; byte_test:1,!=,0x51,0,relative;"#,
            b"AR"
        ));
        assert!(raw(
            r#"content:"L"; byte_test:2,=,0x0102,0,relative,little;"#,
            b"L\x02\x01"
        ));
        assert!(raw(
            r#"content:"n="; byte_test:3,<=,300,0,relative,string,dec;"#,
            b"n=299"
        ));
        assert!(!raw(
            r#"content:"n="; byte_test:3,<=,300,0,relative,string,dec;"#,
            b"n=301"
        ));
        assert!(!raw(
            r#"content:"n="; byte_test:3,<=,300,0,relative,string,dec;"#,
            b"n=xyz"
        ));
        assert!(raw(
            r#"content:"f"; byte_test:1,&,0x80,0,relative;"#,
            b"f\x81"
        ));
        assert!(
            !raw(r#"content:"n"; byte_test:2,>,1,0,relative;"#, b"n\x01"),
            "out of the buffer"
        );
        // Length-prefixed field: jump over it and find what follows.
        let o = r#"content:"H"; byte_jump:1,0,relative; content:"Z"; within:1;"#;
        assert!(raw(o, b"H\x03abcZ"));
        assert!(!raw(o, b"H\x02abcZ"));
        let o = r#"content:"H"; byte_jump:1,0,relative,multiplier 2,post_offset -1; content:"Z"; within:1;"#;
        assert!(raw(o, b"H\x02abcZ"));
        assert!(!raw(
            r#"content:"H"; byte_jump:1,0,relative; content:"Z";"#,
            b"H\xff"
        ));
        assert!(matches!(
            parse_rule(
                r#"alert tcp any any -> any any (content:"a"; byte_jump:4,0,dce; sid:1;)"#,
                &Vars::default(),
                "t"
            ),
            Err((Some(1), super::super::parser::RuleError::Unsupported(_)))
        ));
    }

    fn buffers_of(rule: &str) -> Vec<Buffer> {
        let r = parse_rule(rule, &Vars::default(), "t").unwrap();
        r.groups.iter().map(|g| g.buffer).collect()
    }

    #[test]
    fn pcre_buffer_modifiers() {
        assert_eq!(
            buffers_of(
                r#"alert http any any -> any any (flow:to_server; content:"x"; http_uri; pcre:"/a=b/C"; pcre:"/^Mozilla/V"; pcre:"/evil\.com$/W"; pcre:"/x-y/Hi"; sid:5;)"#
            ),
            [
                Buffer::Uri,
                Buffer::Cookie,
                Buffer::UserAgent,
                Buffer::Host,
                Buffer::Header
            ]
        );
        // In a rule to the client, H and C are the response's headers.
        assert_eq!(
            buffers_of(
                r#"alert http any any -> any any (flow:to_client; pcre:"/nginx/H"; pcre:"/sess=/C"; file.data; content:"<html"; sid:6;)"#
            ),
            [
                Buffer::ResponseHeader,
                Buffer::RespCookie,
                Buffer::ResponseBody
            ]
        );
    }

    #[test]
    fn direction_picks_the_side_of_dual_buffers() {
        for (flow, want) in [
            ("to_server", Buffer::RequestBody),
            ("to_client", Buffer::ResponseBody),
        ] {
            for kw in ["file.data", "file_data"] {
                let b = buffers_of(&format!(
                    r#"alert http any any -> any any (flow:established,{flow}; {kw}; content:"a"; sid:1;)"#
                ));
                assert_eq!(b, [want], "{flow} {kw}");
            }
        }
        // flow written after the buffer still decides.
        assert_eq!(
            buffers_of(
                r#"alert http any any -> any any (http.header; content:"a"; http.content_type; content:"b"; http.header_names; content:"c"; flow:to_client; sid:1;)"#
            ),
            [
                Buffer::ResponseHeader,
                Buffer::RespContentType,
                Buffer::RespHeaderNames
            ]
        );
    }

    #[test]
    fn modifiers_reach_back_over_bsize_and_isdataat() {
        let r = parse_rule(r#"alert tls any any -> any any (tls.sni; content:"a.b"; bsize:3; fast_pattern; nocase; sid:1;)"#, &Vars::default(), "t").unwrap();
        let Item::Content(c) = &r.groups[0].items[0] else {
            panic!()
        };
        assert!(c.fast_pattern && c.nocase);
    }

    #[test]
    fn base64_decode_and_data() {
        use base64::Engine as _;
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        // Suricata's RFC 4648 mode: stop at the first byte outside the
        // alphabet; a partial last quantum gives the bytes it holds.
        assert_eq!(base64_decode(b"aGVsbG8gd29ybGQ=&x=1"), b"hello world");
        assert_eq!(base64_decode(b"aGVsbG8"), b"hello");
        assert_eq!(base64_decode(b"aGVsbG8gdw"), b"hello w");
        assert_eq!(base64_decode(b"aGVsbG8gd"), b"hello ");
        assert_eq!(base64_decode(b"%%%"), b"");
        // ET's ManageEngine shape: relative to the parameter name.
        let rule = "http.request_body; content:\"SAMLResponse=\"; startswith; nocase; \
                    base64_decode:offset 0, relative; base64_data; \
                    content:\"|3a|getRuntime|28 29|\"; nocase; content:\"|3a|exec|28|\"; nocase;";
        let payload = b64(b"<x>java.lang.Runtime:getRuntime():exec(id)</x>");
        let body = format!("SAMLResponse={payload}&RelayState=x");
        assert!(buf(rule, Buffer::RequestBody, body.as_bytes()));
        // The decoded data, not the encoded text, is inspected.
        let plain = "SAMLResponse=:getRuntime():exec(";
        assert!(!buf(rule, Buffer::RequestBody, plain.as_bytes()));
        // Order inside the decoded data follows its own positions.
        let swapped = format!("SAMLResponse={}", b64(b":exec( then :getRuntime()"));
        assert!(buf(rule, Buffer::RequestBody, swapped.as_bytes()));
        let missing = format!("SAMLResponse={}", b64(b":getRuntime() only"));
        assert!(!buf(rule, Buffer::RequestBody, missing.as_bytes()));
        // `bytes` bounds the input; `offset` skips from the relative start.
        let bounded = "http.request_body; content:\"<m:Data>\"; \
                       base64_decode:bytes 8, offset 0, relative; base64_data; content:\"SYSTEM\";";
        let far = format!("<m:Data>{}", b64(b"0123456789 SYSTEM"));
        assert!(!buf(bounded, Buffer::RequestBody, far.as_bytes()));
        let near = format!("<m:Data>{}", b64(b"SYSTEM"));
        assert!(buf(bounded, Buffer::RequestBody, near.as_bytes()));
        let skip =
            "http.request_body; base64_decode:offset 4; base64_data; content:\"ok\"; startswith;";
        assert!(buf(
            skip,
            Buffer::RequestBody,
            format!("xxxx{}", b64(b"ok!")).as_bytes()
        ));
        assert!(!buf(
            skip,
            Buffer::RequestBody,
            format!("xx{}", b64(b"ok!")).as_bytes()
        ));
        // Backtracking: the first `<base64>` holds no match, the second does.
        let again = "http.request_body; content:\"<base64>\"; \
                     base64_decode:relative; base64_data; content:\"|60|\"; startswith;";
        let two = format!("<base64>{}</base64><base64>{}", b64(b"nope"), b64(b"`id`"));
        assert!(buf(again, Buffer::RequestBody, two.as_bytes()));
    }

    #[test]
    fn base64_keywords_parse_strictly() {
        let p = |opts: &str| {
            parse_rule(
                &format!("alert http any any -> any any (http.request_body; content:\"a\"; {opts} sid:1;)"),
                &Vars::default(),
                "t:1",
            )
            .map_err(|(_, e)| e)
        };
        assert!(
            p("base64_decode:bytes 10, offset 2, relative; base64_data; content:\"x\";").is_ok()
        );
        assert!(p("base64_decode; base64_data; content:\"x\";").is_ok());
        assert!(matches!(
            p("base64_data; content:\"x\";"),
            Err(RuleError::Invalid(_))
        ));
        assert!(matches!(
            p("base64_decode:bytes 0; base64_data; content:\"x\";"),
            Err(RuleError::Invalid(_))
        ));
        assert!(matches!(
            p("base64_decode:size 3; base64_data; content:\"x\";"),
            Err(RuleError::Invalid(_))
        ));
        assert!(matches!(
            p("base64_decode; base64_data;"),
            Err(RuleError::Invalid(_))
        ));
        // The decoded data's literal is never the prefilter's key: it is
        // not in the buffer the prefilter scans.
        let r = p("fast_pattern; base64_decode; base64_data; content:\"longer literal\";").unwrap();
        assert_eq!(r.fast_pattern, Some((Buffer::RequestBody, b"a".to_vec())));
    }

    #[test]
    fn byte_test_of_a_whole_string_number() {
        // ET's `http.content_len; byte_test:0,<=,30000,0,string,dec;`.
        let le = "byte_test:0,<=,30000,0,string,dec;";
        assert!(buf(
            &format!("http.content_len; {le} content:\"2\";"),
            Buffer::ContentLen,
            b"29999"
        ));
        assert!(!buf(
            &format!("http.content_len; {le} content:\"3\";"),
            Buffer::ContentLen,
            b"30001"
        ));
        // Every digit counts, however many (a 1-byte read would see "3").
        let gt = "http.content_len; content:\"3\"; byte_test:0,>,4000,0,string,dec;";
        assert!(buf(gt, Buffer::ContentLen, b"300000"));
        assert!(!buf(gt, Buffer::ContentLen, b"3000"));
        // No digits, or a number past u64: no match.
        let eq0 = "http.content_len; content:\"x\"; byte_test:0,=,0,0,string,dec;";
        assert!(!buf(eq0, Buffer::ContentLen, b"x"));
        let eq = "http.content_len; content:\"0\"; byte_test:0,=,0,0,string,dec;";
        assert!(buf(eq, Buffer::ContentLen, b"0"));
        let big = "http.content_len; content:\"9\"; byte_test:0,>,1,0,string,dec;";
        assert!(!buf(big, Buffer::ContentLen, b"99999999999999999999999"));
        // Relative, after white space, in hex.
        let hex = "http.content_len; content:\"len=\"; byte_test:0,=,255,0,relative,string,hex;";
        assert!(buf(hex, Buffer::ContentLen, b"len= ff;"));
        // Binary reads of 0 bytes stay refused, as do string reads in byte_jump.
        for opts in ["byte_test:0,=,0,0;", "byte_jump:0,0,string,dec;"] {
            let rule =
                format!("alert http any any -> any any (http.uri; content:\"a\"; {opts} sid:1;)");
            assert!(
                matches!(
                    parse_rule(&rule, &Vars::default(), "t:1"),
                    Err((_, RuleError::Unsupported(_)))
                ),
                "{opts}"
            );
        }
    }

    #[test]
    fn ja3_buffers() {
        let r = r#"alert tls any any -> any any (ja3.hash; content:"e7d705a3286e19ea42f587b344ee6865"; sid:1;)"#;
        assert!(m(r, Buffer::Ja3Hash, b"e7d705a3286e19ea42f587b344ee6865"));
        assert!(!m(r, Buffer::Ja3Hash, b"2c2fd40b0c825611677aeb4c6fee8701"));
        // The hash is not the string: a rule on one never sees the other.
        assert!(!m(
            r,
            Buffer::Ja3String,
            b"e7d705a3286e19ea42f587b344ee6865"
        ));
        let r = r#"alert tls any any -> any any (ja3_string; content:"771,"; startswith; content:",29-23,"; sid:1;)"#;
        assert!(m(r, Buffer::Ja3String, b"771,4865,0-10,29-23,0"));
        assert!(!m(r, Buffer::Ja3String, b"769,4865,0-10,23,0"));
    }

    #[test]
    fn byte_extract_feeds_later_keywords() {
        // A length byte, then that many bytes, then "Z".
        let o =
            r#"content:"L"; byte_extract:1,0,len,relative; content:"Z"; distance:len; within:1;"#;
        assert!(raw(o, b"L\x03abcZ"));
        assert!(!raw(o, b"L\x02abcZ"));
        // A decimal string, compared with the same number further on.
        let o = r#"content:"n="; byte_extract:2,0,n,relative,string,dec; content:";"; within:1; byte_test:2,=,n,0,relative,string,dec;"#;
        assert!(raw(o, b"n=12;12"));
        assert!(!raw(o, b"n=12;13"));
        // multiplier, then align: 1 * 3 rounds up to 4.
        let o = r#"content:"|01|"; depth:1; byte_extract:1,0,v,multiplier 3,align 4; isdataat:v;"#;
        assert!(raw(o, b"\x01abcd"));
        assert!(!raw(o, b"\x01abc"));
        // depth and offset from variables; little-endian; hex string.
        let o = r#"byte_extract:1,0,d; content:"x"; depth:d;"#;
        assert!(raw(o, b"\x04abx"));
        assert!(!raw(o, b"\x03abx"));
        let o = r#"byte_extract:2,0,off,little; content:"x"; offset:off; depth:1;"#;
        assert!(raw(o, b"\x03\x00.x"));
        assert!(!raw(o, b"\x02\x00.x"));
        let o = r#"content:"h="; byte_extract:2,0,h,relative,string,hex; byte_jump:1,h,relative; content:"!"; within:1;"#;
        assert!(raw(o, b"h=0a0123456789\x00!"));
        assert!(!raw(o, b"h=090123456789\x00!"));
        // Unreadable bytes: no match.
        assert!(!raw(
            r#"content:"n="; byte_extract:2,0,n,relative,string,dec; isdataat:n;"#,
            b"n=zz"
        ));
    }

    #[test]
    fn byte_extract_errors_are_reported() {
        let p = |opts: &str| {
            parse_rule(
                &format!("alert tcp any any -> any any (content:\"a\"; {opts} sid:1;)"),
                &Vars::default(),
                "t:1",
            )
            .map_err(|(_, e)| e)
        };
        assert!(p("byte_extract:1,0,v,relative; content:\"b\"; distance:v;").is_ok());
        for (opts, unsupported) in [
            ("byte_extract:4,0,v,dce; content:\"b\"; distance:v;", true),
            (
                "byte_extract:1,0,v,from_end; content:\"b\"; distance:v;",
                true,
            ),
            ("content:\"b\"; distance:v;", false),
            ("byte_extract:1,0,v; byte_extract:1,1,v;", false),
            ("byte_extract:1,0,9v;", false),
            ("byte_extract:1,0;", false),
            ("byte_extract:9,0,v;", true),
            ("byte_extract:1,0,v,align 3;", false),
            ("byte_extract:1,0,v,hex;", false),
            // Used in another buffer than the one it was read from.
            (
                "byte_extract:1,0,v; http.uri; content:\"b\"; offset:v;",
                false,
            ),
        ] {
            match p(opts) {
                Err(RuleError::Unsupported(_)) if unsupported => {}
                Err(RuleError::Invalid(_)) if !unsupported => {}
                other => panic!("{opts}: {other:?}"),
            }
        }
        let many: String = (0..9).map(|i| format!("byte_extract:1,0,v{i};")).collect();
        assert!(matches!(p(&many), Err(RuleError::Invalid(_))));
    }
}
