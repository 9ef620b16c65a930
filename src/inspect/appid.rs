//! Application identification and application control.
//!
//! A signature table maps request facts (host glob, path glob or regex,
//! method, header globs) to an application and an action (`browse`,
//! `upload`, `download`, `post`). The table is data (`configs/apps.toml`)
//! so new SaaS endpoints need no rebuild; the first matching signature wins,
//! so specific signatures (git push) sit above catch-alls (browse).
//! Application-control rules then allow or deny by app and action.

use std::path::Path;

use serde::Deserialize;
use tlsinspect_pipeline::hostglob::HostGlob;

use super::text::glob_match;
use super::webfilter::{host_without_port, path_of, Verdict};

/// Why a signature table could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields.
    #[error("{origin}: {msg}")]
    Toml {
        /// File or origin name.
        origin: String,
        /// Parser message (with line and column).
        msg: String,
    },
    /// A signature has a bad field.
    #[error("{origin}: signature {index} ({app}): {field}: {msg}")]
    Signature {
        /// File or origin name.
        origin: String,
        /// Index of the signature, from 0.
        index: usize,
        /// Its app.
        app: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        msg: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    #[serde(default)]
    signature: Vec<SigRepr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigRepr {
    app: String,
    action: String,
    #[serde(default)]
    name: Option<String>,
    hosts: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    path_regex: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// The actions an app signature may name.
pub const ACTIONS: [&str; 4] = ["browse", "upload", "download", "post"];

/// One compiled signature.
#[derive(Debug, Clone)]
pub struct Signature {
    /// Application name, e.g. `github`.
    pub app: String,
    /// Action: one of [`ACTIONS`].
    pub action: String,
    /// Optional human name, e.g. `git push`.
    pub name: Option<String>,
    /// Host globs (any may match), matched on the host without port.
    pub hosts: Vec<HostGlob>,
    /// Methods (empty = any).
    pub methods: Vec<String>,
    /// Glob over the normalized path without query.
    pub path: Option<String>,
    /// Regex over the normalized path with query.
    pub path_regex: Option<regex::bytes::Regex>,
    /// Header name -> value glob, all must match.
    pub headers: Vec<(String, String)>,
}

/// The request facts a signature looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Method.
    pub method: &'a str,
    /// Host or :authority.
    pub host: &'a str,
    /// Normalized URI (path and query).
    pub uri: &'a [u8],
    /// Header fields.
    pub headers: &'a [(String, Vec<u8>)],
}

impl Signature {
    fn matches(&self, req: &RequestFacts<'_>, host: &str) -> bool {
        (self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(req.method)))
            && self.hosts.iter().any(|h| h.matches(host))
            && self
                .path
                .as_ref()
                .is_none_or(|p| glob_match(p.as_bytes(), path_of(req.uri), false))
            && self.path_regex.as_ref().is_none_or(|r| r.is_match(req.uri))
            && self.headers.iter().all(|(name, glob)| {
                req.headers.iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case(name) && glob_match(glob.as_bytes(), v, true)
                })
            })
    }
}

/// The ordered signature table.
#[derive(Debug, Clone, Default)]
pub struct AppTable {
    sigs: Vec<Signature>,
}

impl AppTable {
    /// Reads and compiles a signature file.
    pub fn load(path: &Path) -> Result<AppTable, AppError> {
        let text = std::fs::read_to_string(path).map_err(|source| AppError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Compiles signatures from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<AppTable, AppError> {
        let f: FileRepr = toml::from_str(text).map_err(|e| AppError::Toml {
            origin: origin.to_string(),
            msg: e.to_string(),
        })?;
        let mut sigs = Vec::with_capacity(f.signature.len());
        for (index, s) in f.signature.into_iter().enumerate() {
            let err = |field: &'static str, msg: String| AppError::Signature {
                origin: origin.to_string(),
                index,
                app: s.app.clone(),
                field,
                msg,
            };
            if !ACTIONS.contains(&s.action.as_str()) {
                return Err(err(
                    "action",
                    format!("`{}` is not one of {ACTIONS:?}", s.action),
                ));
            }
            if s.hosts.is_empty() {
                return Err(err("hosts", "at least one host glob is required".into()));
            }
            let hosts = s
                .hosts
                .iter()
                .map(|h| HostGlob::new(h).map_err(|e| err("hosts", format!("{h:?} {e}"))))
                .collect::<Result<_, _>>()?;
            let path_regex = match &s.path_regex {
                Some(r) => Some(
                    regex::bytes::RegexBuilder::new(r)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| err("path_regex", e.to_string()))?,
                ),
                None => None,
            };
            sigs.push(Signature {
                app: s.app,
                action: s.action,
                name: s.name,
                hosts,
                methods: s.methods,
                path: s.path,
                path_regex,
                headers: s.headers.into_iter().collect(),
            });
        }
        Ok(AppTable { sigs })
    }

    /// Creates a table from compiled signatures.
    pub fn new(sigs: Vec<Signature>) -> Self {
        AppTable { sigs }
    }

    /// The signatures.
    pub fn signatures(&self) -> &[Signature] {
        &self.sigs
    }

    /// The first signature matching the request.
    pub fn identify(&self, req: &RequestFacts<'_>) -> Option<&Signature> {
        let host = host_without_port(req.host).trim_end_matches('.');
        self.sigs.iter().find(|s| s.matches(req, host))
    }
}

/// One application-control rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRule {
    /// Application name (`*` = any).
    pub app: String,
    /// Action (`*` = any).
    pub action: String,
    /// What to do.
    pub verdict: Verdict,
}

/// Application-control rules in precedence order; default allow.
#[derive(Debug, Clone, Default)]
pub struct AppControl {
    rules: Vec<AppRule>,
}

impl AppControl {
    /// Creates the rule list.
    pub fn new(rules: Vec<AppRule>) -> Self {
        AppControl { rules }
    }

    /// The rules.
    pub fn rules(&self) -> &[AppRule] {
        &self.rules
    }

    /// The first rule matching `(app, action)`: its index and verdict.
    pub fn decide(&self, app: &str, action: &str) -> Option<(usize, Verdict)> {
        self.rules.iter().enumerate().find_map(|(i, r)| {
            ((r.app == "*" || r.app.eq_ignore_ascii_case(app))
                && (r.action == "*" || r.action.eq_ignore_ascii_case(action)))
            .then_some((i, r.verdict))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> AppTable {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/apps.toml");
        AppTable::load(&path).unwrap()
    }

    fn id(
        t: &AppTable,
        method: &str,
        host: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Option<(String, String)> {
        let headers: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        t.identify(&RequestFacts {
            method,
            host,
            uri: uri.as_bytes(),
            headers: &headers,
        })
        .map(|s| (s.app.clone(), s.action.clone()))
    }

    fn pair(a: &str, b: &str) -> Option<(String, String)> {
        Some((a.to_string(), b.to_string()))
    }

    #[test]
    fn shipped_table_identifies_the_required_apps() {
        let t = shipped();
        assert_eq!(
            id(&t, "GET", "github.com", "/rust-lang/rust", &[]),
            pair("github", "browse")
        );
        assert_eq!(
            id(
                &t,
                "POST",
                "github.com",
                "/acme/tools.git/git-receive-pack",
                &[]
            ),
            pair("github", "upload")
        );
        assert_eq!(
            id(
                &t,
                "GET",
                "github.com",
                "/acme/tools.git/info/refs?service=git-receive-pack",
                &[]
            ),
            pair("github", "upload")
        );
        assert_eq!(
            id(&t, "POST", "github.com", "/acme/tools/git-upload-pack", &[]),
            pair("github", "download")
        );
        assert_eq!(
            id(
                &t,
                "POST",
                "uploads.github.com",
                "/repos/a/b/releases/1/assets",
                &[]
            ),
            pair("github", "upload")
        );
        assert_eq!(
            id(&t, "POST", "gitlab.com", "/g/p.git/git-receive-pack", &[]),
            pair("gitlab", "upload")
        );
        assert_eq!(
            id(&t, "GET", "gitlab.com", "/g/p", &[]),
            pair("gitlab", "browse")
        );
        assert_eq!(
            id(
                &t,
                "POST",
                "www.googleapis.com",
                "/upload/drive/v3/files?uploadType=multipart",
                &[]
            ),
            pair("google-drive", "upload")
        );
        assert_eq!(
            id(&t, "GET", "drive.google.com", "/drive/my-drive", &[]),
            pair("google-drive", "browse")
        );
        assert_eq!(
            id(&t, "POST", "content.dropboxapi.com", "/2/files/upload", &[]),
            pair("dropbox", "upload")
        );
        assert_eq!(
            id(
                &t,
                "POST",
                "content.dropboxapi.com",
                "/2/files/download",
                &[]
            ),
            pair("dropbox", "download")
        );
        assert_eq!(
            id(
                &t,
                "PUT",
                "graph.microsoft.com",
                "/v1.0/me/drive/root:/a.txt:/content",
                &[]
            ),
            pair("onedrive", "upload")
        );
        assert_eq!(
            id(&t, "POST", "slack.com", "/api/files.upload", &[]),
            pair("slack", "upload")
        );
        assert_eq!(
            id(&t, "POST", "acme.slack.com", "/api/chat.postMessage", &[]),
            pair("slack", "post")
        );
        assert_eq!(
            id(&t, "POST", "pastebin.com", "/api/api_post.php", &[]),
            pair("pastebin", "post")
        );
        assert_eq!(
            id(&t, "GET", "pastebin.com", "/abc123", &[]),
            pair("pastebin", "browse")
        );
        assert_eq!(
            id(
                &t,
                "POST",
                "chatgpt.com",
                "/backend-api/conversation",
                &[("Content-Type", "application/json")]
            ),
            pair("chatgpt", "post")
        );
        assert_eq!(
            id(&t, "POST", "api.openai.com", "/v1/chat/completions", &[]),
            pair("chatgpt", "post")
        );
        assert_eq!(id(&t, "GET", "example.org", "/", &[]), None);
    }

    #[test]
    fn app_control_first_match() {
        let c = AppControl::new(vec![
            AppRule {
                app: "github".into(),
                action: "upload".into(),
                verdict: Verdict::Deny,
            },
            AppRule {
                app: "*".into(),
                action: "post".into(),
                verdict: Verdict::Deny,
            },
        ]);
        assert_eq!(c.decide("github", "upload"), Some((0, Verdict::Deny)));
        assert_eq!(c.decide("github", "browse"), None);
        assert_eq!(c.decide("chatgpt", "post"), Some((1, Verdict::Deny)));
    }

    #[test]
    fn bad_tables_name_the_field() {
        let e = AppTable::from_toml(
            "[[signature]]\napp='x'\naction='steal'\nhosts=['a']\n",
            "f.toml",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.toml: signature 0 (x): action: `steal` is not one of [\"browse\", \"upload\", \"download\", \"post\"]"
        );
        let e = AppTable::from_toml(
            "[[signature]]\napp='x'\naction='post'\nhosts=['a']\npath_regex='('\n",
            "f.toml",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.toml: signature 0 (x): path_regex:"),
            "{e}"
        );
        let e = AppTable::from_toml("[[signature]]\napp='x'\nbogus=1\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml: "), "{e}");
    }
}
