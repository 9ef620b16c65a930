//! Host globs: the one pattern grammar for host names, used by
//! `exclude_sni`, the web filter's `host`, the application signatures'
//! `hosts` and `tlsinspect logs --sni`.
//!
//! The grammar:
//!
//! * Matching ignores ASCII case and a trailing dot, on the pattern and on
//!   the name (`WWW.Example.COM.` is `www.example.com`).
//! * A pattern without `*` matches exactly that name.
//! * A lone `*` matches every name (an IP literal or an empty host too).
//! * A leading `*.` matches one or more whole labels: `*.bank.example`
//!   matches `www.bank.example` and `a.b.bank.example`, never the apex
//!   `bank.example` itself (list the apex on its own to cover it).
//! * Anywhere else, `*` matches any run of characters (none included)
//!   inside one label and never a dot: `doc-*.googleusercontent.com`
//!   matches `doc-0s-1a.googleusercontent.com`, `gitlab.*` matches
//!   `gitlab.io` but not `gitlab.evil.example`.
//!
//! Refused, with the [`HostGlobError`] named: an empty pattern (`Empty`),
//! more than 253 bytes (`TooLong`), a character other than letters, digits,
//! `.`, `-`, `_` and `*` (`BadChar`, so no `?`, spaces or ports), an empty
//! label as in `a..b` or `.a` (`EmptyLabel`), a label over 63 bytes
//! (`LongLabel`), more than one `*` (`TwoStars`, so `*.*.example`), and a
//! leading `*` that is not a whole `*.` label (`LeadingStar`: `*bank.example`
//! is nearly always a mistyped `*.bank.example`, and would also match the
//! look-alike `evilbank.example`; `*.` alone is refused the same way).
//!
//! URL path globs (the web filter's `path`) are a different grammar, where
//! `*` crosses `/`; certificate names follow RFC 6125 (`pki::mint`).

use std::fmt;

/// Why a host glob was refused; the caller names the pattern and its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostGlobError {
    /// Nothing to match.
    #[error("is empty; a host name or glob is required")]
    Empty,
    /// Longer than a DNS name can be.
    #[error("is {0} bytes long; the limit is 253")]
    TooLong(usize),
    /// A character no host name has.
    #[error("contains {0:?}; a host glob uses letters, digits, '.', '-', '_' and '*'")]
    BadChar(char),
    /// `..`, or a leading `.`.
    #[error("has an empty label")]
    EmptyLabel,
    /// A label over 63 bytes.
    #[error("has a label longer than 63 bytes")]
    LongLabel,
    /// More than one `*`.
    #[error("has more than one '*'; a host glob has at most one")]
    TwoStars,
    /// A leading `*` that is not followed by `.` and a name.
    #[error("starts with a '*' that is not a whole label: write *.example.com for the names below example.com (*example.com would also match evilexample.com)")]
    LeadingStar,
}

/// A compiled host glob (see the module documentation for the grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGlob {
    /// The pattern as written, lower case.
    text: String,
}

impl HostGlob {
    /// Compiles `pattern`, refusing what the grammar does not allow.
    pub fn new(pattern: &str) -> Result<HostGlob, HostGlobError> {
        let text = pattern.to_ascii_lowercase();
        if text.is_empty() {
            return Err(HostGlobError::Empty);
        }
        if text.len() > 253 {
            return Err(HostGlobError::TooLong(text.len()));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*')))
        {
            return Err(HostGlobError::BadChar(c));
        }
        let glob = HostGlob { text };
        if glob.text == "*" {
            return Ok(glob);
        }
        let body = glob.body();
        if body.split('.').any(str::is_empty) {
            return Err(HostGlobError::EmptyLabel);
        }
        if body.split('.').any(|l| l.len() > 63) {
            return Err(HostGlobError::LongLabel);
        }
        if body.matches('*').count() > 1 {
            return Err(HostGlobError::TwoStars);
        }
        if body.starts_with('*') && !body.starts_with("*.") {
            return Err(HostGlobError::LeadingStar);
        }
        Ok(glob)
    }

    /// The pattern as written, lower case.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern without its trailing dot.
    fn body(&self) -> &str {
        self.text.strip_suffix('.').unwrap_or(&self.text)
    }

    /// Whether `name` (a host name without port) matches.
    pub fn matches(&self, name: &str) -> bool {
        let body = self.body();
        let Some((prefix, suffix)) = body.split_once('*') else {
            return name
                .strip_suffix('.')
                .unwrap_or(name)
                .eq_ignore_ascii_case(body);
        };
        if body == "*" {
            return true;
        }
        let name = name.strip_suffix('.').unwrap_or(name).as_bytes();
        let Some(end) = name.len().checked_sub(suffix.len()) else {
            return false;
        };
        let (Some(head), Some(star), Some(tail)) = (
            name.get(..prefix.len()),
            name.get(prefix.len()..end),
            name.get(end..),
        ) else {
            return false;
        };
        head.eq_ignore_ascii_case(prefix.as_bytes())
            && tail.eq_ignore_ascii_case(suffix.as_bytes())
            && if prefix.is_empty() {
                // A leading `*.`: one or more whole labels.
                !star.is_empty()
            } else {
                !star.contains(&b'.')
            }
    }
}

impl fmt::Display for HostGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> HostGlob {
        HostGlob::new(p).unwrap()
    }

    #[test]
    fn leading_star_label_covers_every_depth_below_but_not_the_apex() {
        let g = glob("*.Bank.Example");
        assert!(g.matches("www.bank.example"));
        assert!(g.matches("a.b.bank.example"));
        assert!(g.matches("WWW.BANK.EXAMPLE."));
        assert!(!g.matches("bank.example"), "the apex is not matched");
        assert!(!g.matches(".bank.example"));
        assert!(!g.matches("evilbank.example"));
        assert!(!g.matches("bank.example.evil"));
        assert_eq!(g.to_string(), "*.bank.example");
    }

    #[test]
    fn exact_names_and_the_lone_star() {
        let e = glob("bank.example");
        assert!(e.matches("bank.example") && e.matches("Bank.Example."));
        assert!(!e.matches("www.bank.example"));
        assert!(glob("bank.example.").matches("bank.example"));
        let any = glob("*");
        for name in ["anything.test", "", "2001:db8::1", "192.0.2.1"] {
            assert!(any.matches(name), "{name:?}");
        }
    }

    #[test]
    fn an_inner_star_stays_inside_its_label() {
        let g = glob("w*.bank.example");
        assert!(g.matches("www.bank.example") && g.matches("w.bank.example"));
        assert!(!g.matches("a.w.bank.example") && !g.matches("w.x.bank.example"));
        let g = glob("doc-*.googleusercontent.com");
        assert!(g.matches("doc-0s-1a.googleusercontent.com"));
        assert!(!g.matches("doc-a.b.googleusercontent.com"));
        let g = glob("gitlab.*");
        assert!(g.matches("GitLab.io") && !g.matches("gitlab.evil.example"));
        assert!(!g.matches("gitlab"));
        assert!(glob("a*b.example").matches("axxb.example"));
    }

    #[test]
    fn refusals_name_the_rule() {
        for (bad, why) in [
            ("", HostGlobError::Empty),
            ("*.", HostGlobError::LeadingStar),
            ("*.*.example", HostGlobError::TwoStars),
            ("bad name", HostGlobError::BadChar(' ')),
            ("host:443", HostGlobError::BadChar(':')),
            ("a?.example", HostGlobError::BadChar('?')),
            ("*bank.example", HostGlobError::LeadingStar),
            ("a..example", HostGlobError::EmptyLabel),
            (".example", HostGlobError::EmptyLabel),
        ] {
            assert_eq!(HostGlob::new(bad), Err(why), "{bad:?}");
        }
        assert_eq!(
            HostGlob::new(&"a".repeat(64)),
            Err(HostGlobError::LongLabel)
        );
        assert_eq!(
            HostGlob::new(&["a"; 128].join(".")),
            Err(HostGlobError::TooLong(255))
        );
    }
}
