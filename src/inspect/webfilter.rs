//! Web filter: host glob ([`HostGlob`]) + path glob + methods -> allow/deny,
//! first match wins.
//!
//! Rules are plain data handed over by the config loader; the filter keeps
//! them in file order because operators write exceptions above the general
//! rule ("allow /upload/public/*" before "deny /upload/*"). No match means
//! allow.

use tlsinspect_pipeline::hostglob::HostGlob;

use super::text::glob_match;

/// What a rule does with a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through.
    Allow,
    /// Answer 403 and never forward the request.
    Deny,
}

impl Verdict {
    /// The log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// One web filter rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRule {
    /// Glob over the host name without port (`*.example.com`).
    pub host: HostGlob,
    /// Glob over the normalized path without query (`/upload/*`); `*` = any.
    pub path: String,
    /// Methods the rule covers (case-insensitive); empty = every method.
    pub methods: Vec<String>,
    /// What to do.
    pub verdict: Verdict,
}

/// The ordered web filter rule list.
#[derive(Debug, Clone, Default)]
pub struct WebFilter {
    rules: Vec<WebRule>,
}

/// Strips `:port` (and IPv6 brackets) from a Host header value.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// The normalized path without its query string.
pub fn path_of(uri: &[u8]) -> &[u8] {
    match uri.iter().position(|&b| b == b'?') {
        Some(q) => &uri[..q],
        None => uri,
    }
}

impl WebFilter {
    /// Creates a filter from rules in precedence order.
    pub fn new(rules: Vec<WebRule>) -> Self {
        WebFilter { rules }
    }

    /// The rules.
    pub fn rules(&self) -> &[WebRule] {
        &self.rules
    }

    /// The first rule matching the request: its index and verdict.
    ///
    /// `uri` is the normalized request URI (the query is ignored).
    pub fn decide(&self, method: &str, host: &str, uri: &[u8]) -> Option<(usize, Verdict)> {
        let host = host_without_port(host).trim_end_matches('.');
        let path = path_of(uri);
        self.rules.iter().enumerate().find_map(|(i, r)| {
            let m = (r.methods.is_empty()
                || r.methods.iter().any(|x| x.eq_ignore_ascii_case(method)))
                && r.host.matches(host)
                && glob_match(r.path.as_bytes(), path, false);
            m.then_some((i, r.verdict))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: &str, path: &str, methods: &[&str], verdict: Verdict) -> WebRule {
        WebRule {
            host: HostGlob::new(host).unwrap(),
            path: path.into(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            verdict,
        }
    }

    #[test]
    fn first_match_wins_default_allow() {
        let f = WebFilter::new(vec![
            rule("*.example.com", "/upload/public/*", &[], Verdict::Allow),
            rule(
                "*.example.com",
                "/upload/*",
                &["POST", "put"],
                Verdict::Deny,
            ),
            rule("blocked.test", "*", &[], Verdict::Deny),
        ]);
        assert_eq!(
            f.decide("POST", "www.example.com:443", b"/upload/x"),
            Some((1, Verdict::Deny))
        );
        assert_eq!(
            f.decide("PUT", "WWW.example.com", b"/upload/a/b?x"),
            Some((1, Verdict::Deny))
        );
        assert_eq!(f.decide("GET", "www.example.com", b"/upload/x"), None);
        assert_eq!(
            f.decide("POST", "www.example.com", b"/upload/public/x"),
            Some((0, Verdict::Allow))
        );
        assert_eq!(f.decide("POST", "www.example.com", b"/other"), None);
        assert_eq!(
            f.decide("GET", "blocked.test.", b"/"),
            Some((2, Verdict::Deny))
        );
        assert_eq!(f.decide("GET", "[2001:db8::1]:443", b"/"), None);
        assert_eq!(host_without_port("[2001:db8::1]:443"), "2001:db8::1");
    }
}
