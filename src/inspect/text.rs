//! Small text helpers shared by the engines: path globs and URI
//! normalization.
//!
//! Kept separate so the web filter, the app signatures and the IPS agree on
//! what a "normalized path" is; the IPS `http.uri` buffer and the web filter
//! see the same path, so an evasion that fools one fools neither. Host names
//! have their own grammar, `tlsinspect_pipeline::hostglob`.

#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

/// Matches `text` against a glob where `*` is any run of bytes and `?` one
/// byte: the grammar of URL paths and header values (not of host names).
///
/// `*` crosses `/` and `.` on purpose: `/upload/*` covers the whole subtree.
/// Iterative with one backtrack point, so it is linear-ish and never recurses.
pub fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&q) if q == b'?' || eq(q, c) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    while pattern.get(p) == Some(&b'*') {
        p += 1;
    }
    p == pattern.len()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; malformed escapes are kept literally (as libhtp does).
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let hex_at = |i: usize| input.get(i).copied().and_then(hex_val);
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            if let (Some(h), Some(l)) = (hex_at(i + 1), hex_at(i + 2)) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Removes `.` and `..` segments (RFC 3986 §5.2.4); `..` never climbs above `/`.
pub fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut segs: Vec<&[u8]> = Vec::new();
    let body = path.strip_prefix(b"/");
    let absolute = body.is_some();
    let body = body.unwrap_or(path);
    let parts: Vec<&[u8]> = body.split(|&b| b == b'/').collect();
    let n = parts.len();
    let mut trailing_slash = false;
    for (i, seg) in parts.into_iter().enumerate() {
        let last = i + 1 == n;
        match seg {
            b"." => trailing_slash = last,
            b".." => {
                segs.pop();
                trailing_slash = last;
            }
            s => {
                segs.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if absolute {
        out.push(b'/');
    }
    for (i, s) in segs.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(s);
    }
    if trailing_slash && out.last() != Some(&b'/') {
        out.push(b'/');
    }
    out
}

/// Normalizes a request target the way Suricata's `http.uri` sees it.
///
/// An absolute-form target (`http://host/p`) is reduced to its path; the
/// path is percent-decoded and then stripped of dot segments, so `/a/%2e%2e/b`
/// and `/a/../b` both become `/b`; the query is percent-decoded and kept.
pub fn normalize_uri(target: &[u8]) -> Vec<u8> {
    let mut t = target;
    if let Some(pos) = find(t, b"://") {
        let rest = t.get(pos + 3..).unwrap_or_default();
        t = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .and_then(|p| rest.get(p..))
            .unwrap_or(b"/");
    }
    let mut parts = t.splitn(2, |&b| b == b'?');
    let path = parts.next().unwrap_or(t);
    let query = parts.next();
    let decoded = percent_decode(path);
    let mut out = if decoded.first() == Some(&b'/') {
        remove_dot_segments(&decoded)
    } else {
        decoded
    };
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(&percent_decode(q));
    }
    out
}

/// Finds `needle` in `hay` (naive; used on short strings only).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Appends `s` to `out` with HTML special characters escaped (block pages).
pub fn html_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.example.com", b"www.EXAMPLE.com", true));
        assert!(!glob_match(b"*.example.com", b"example.com", true));
        assert!(glob_match(b"/upload/*", b"/upload/a/b.txt", false));
        assert!(!glob_match(b"/upload/*", b"/uploads", false));
        assert!(glob_match(b"*", b"", false));
        assert!(glob_match(b"/a?c", b"/abc", false));
        assert!(glob_match(
            b"*git-receive-pack",
            b"/o/r.git/git-receive-pack",
            false
        ));
        assert!(!glob_match(b"a*b*c", b"aXbX", false));
    }

    #[test]
    fn uri_normalization() {
        assert_eq!(normalize_uri(b"/a/../b"), b"/b");
        assert_eq!(
            normalize_uri(b"/a/%2e%2e/%2E%2e/etc/passwd"),
            b"/etc/passwd"
        );
        assert_eq!(normalize_uri(b"/a/./b/?x=%41"), b"/a/b/?x=A");
        assert_eq!(normalize_uri(b"/../../x"), b"/x");
        assert_eq!(normalize_uri(b"http://h.example/p/../q?z"), b"/q?z");
        assert_eq!(normalize_uri(b"/%zz%4"), b"/%zz%4");
        assert_eq!(normalize_uri(b"/a/b/.."), b"/a/");
        assert_eq!(normalize_uri(b"*"), b"*");
    }
}
