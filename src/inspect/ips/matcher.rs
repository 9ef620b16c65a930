//! Full evaluation of one rule against the buffers of one inspection step.
//!
//! Runs only for rules the prefilter nominated. Contents in a buffer are
//! matched in rule order with backtracking over every occurrence, because a
//! relative content (`distance`/`within`) may only fit after a later
//! occurrence of the content before it; a step budget bounds the work a
//! hostile buffer can cause.

use aho_corasick::Input;

use super::rule::{Buffer, Content, Item, Pcre, Rule, BUFFERS};

/// The buffers available to one inspection step; `None` = not present.
#[derive(Debug, Default, Clone, Copy)]
pub struct Buffers<'a> {
    slots: [Option<&'a [u8]>; BUFFERS],
}

impl<'a> Buffers<'a> {
    /// Sets buffer `b`.
    pub fn set(&mut self, b: Buffer, data: &'a [u8]) {
        self.slots[b as usize] = Some(data);
    }

    /// Gets buffer `b`.
    pub fn get(&self, b: Buffer) -> Option<&'a [u8]> {
        self.slots[b as usize]
    }
}

/// How many search steps one rule may take on one step's buffers.
const STEP_BUDGET: u32 = 10_000;
/// Most pcre matches tried per item (each may start a backtracking branch).
const PCRE_TRIES: usize = 64;

/// Whether every buffer group of `rule` matches.
pub fn rule_matches(rule: &Rule, bufs: &Buffers<'_>) -> bool {
    rule.groups.iter().all(|(b, items)| match bufs.get(*b) {
        Some(data) => {
            let mut budget = STEP_BUDGET;
            step(items, 0, data, 0, &mut budget)
        }
        None => false,
    })
}

fn window(c: &Content, prev_end: usize, len: usize) -> (usize, usize) {
    if c.relative() {
        let base = prev_end as i64 + c.distance.unwrap_or(0);
        let start = base.max(0) as usize;
        let end = match c.within {
            Some(w) => (base + w as i64).max(0) as usize,
            None => len,
        };
        (start.min(len), end.min(len))
    } else {
        let start = c.offset.unwrap_or(0);
        let end = match c.depth {
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
    }
}

fn step(items: &[Item], i: usize, data: &[u8], prev_end: usize, budget: &mut u32) -> bool {
    let Some(item) = items.get(i) else {
        return true;
    };
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    match item {
        Item::Content(c) => {
            let (start, end) = window(c, prev_end, data.len());
            let Some(searcher) = c.searcher.as_ref() else {
                return false;
            };
            if end < start || end - start < c.pattern.len() {
                return c.negated && step(items, i + 1, data, prev_end, budget);
            }
            let input = Input::new(data).span(start..end);
            if c.negated {
                return searcher.find(input).is_none()
                    && step(items, i + 1, data, prev_end, budget);
            }
            let retry = retry_useful(items, i + 1);
            for m in searcher.find_overlapping_iter(input) {
                if step(items, i + 1, data, m.end(), budget) {
                    return true;
                }
                if *budget == 0 || !retry {
                    return false;
                }
            }
            false
        }
        Item::Pcre(p) => pcre_step(p, items, i, data, prev_end, budget),
    }
}

fn pcre_step(
    p: &Pcre,
    items: &[Item],
    i: usize,
    data: &[u8],
    prev_end: usize,
    budget: &mut u32,
) -> bool {
    // A relative pcre sees the buffer from the previous match on, so `^`
    // anchors there, as in Suricata.
    let from = if p.relative {
        prev_end.min(data.len())
    } else {
        0
    };
    let hay = &data[from..];
    if p.negated {
        return p.re.find(hay).is_none() && step(items, i + 1, data, prev_end, budget);
    }
    let mut at = 0;
    for _ in 0..PCRE_TRIES {
        if at > hay.len() {
            return false;
        }
        let (m_start, m_end, digits_ok) = if p.luhn {
            let Some(caps) = p.re.captures_at(hay, at) else {
                return false;
            };
            let Some(whole) = caps.get(0) else {
                return false;
            };
            let subject = caps.get(1).unwrap_or(whole);
            (whole.start(), whole.end(), luhn_valid(subject.as_bytes()))
        } else {
            let Some(m) = p.re.find_at(hay, at) else {
                return false;
            };
            (m.start(), m.end(), true)
        };
        if digits_ok {
            if step(items, i + 1, data, from + m_end, budget) {
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
mod tests {
    use super::super::parser::{parse_rule, Vars};
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
}
