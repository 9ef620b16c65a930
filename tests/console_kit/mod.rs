//! Support for the console tests (`mod console_kit;`): an appliance control
//! plane with its console in this process, an HTTPS client that trusts
//! exactly the console's certificate, and a WebDriver client for Debian's
//! chromium + chromedriver.
//!
//! WebDriver is spoken as plain JSON over HTTP with `ureq` (already the
//! tests' HTTPS client): the dozen commands used here do not justify an
//! async WebDriver crate and its runtime in the tests.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tlsinspect::appliance::{Appliance, Services};
use tlsinspect::console::Console;

/// The admin password of the kit's config.
pub const PASSWORD: &str = "correct horse battery";

/// The tlsinspect binary cargo built for this test run.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tlsinspect"))
}

/// A console over a control plane without packet I/O.
pub struct Kit {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    pub audit: PathBuf,
    pub state: PathBuf,
    pub console: Option<Console>,
    pub services: Option<Services>,
    pub app: Arc<Appliance>,
    pub base: String,
    pub cert_der: Vec<u8>,
}

/// The kit's configuration: a policy made "with the CLI" (its CA outside
/// the console's CA dirs), comments to keep, a console on a free port.
pub fn config_text(dir: &Path, hash: &str) -> String {
    let d = dir.display();
    format!(
        r#"# operator's header comment: must survive console edits
[appliance]
mode = "tun"
lan = "ti-c-lan"
wan = "ti-c-wan"
cpus = [0]
log = "{d}/traffic.jsonl"
control = "{d}/control.sock"
state_dir = "{d}/state"

[[policy]]
id = "pol-cli"            # made with the CLI
name = "Made with the CLI"
enabled = true
ca_cert = "cli-ca/ca.crt"
ca_key = "cli-ca/ca.key"
  [[policy.scope]]
  id = "sc-1"
  source_ips = ["192.0.2.50"]
  source_ports = ["0/65535"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443"]

[console]
listen = "127.0.0.1:0"
admin_password_hash = "{hash}"
"#
    )
}

impl Kit {
    /// Starts the kit; `hash` defaults to the hash of [`PASSWORD`].
    pub fn start() -> anyhow::Result<Kit> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("tlsinspect-console-")
            .tempdir()?;
        tlsinspect::pki::trial::create(
            &dir.path().join("cli-ca"),
            tlsinspect::pki::KeyKind::EcdsaP256,
            std::time::SystemTime::now(),
        )?;
        let hash = tlsinspect::console::auth::hash_password(PASSWORD)?;
        let config = dir.path().join("tlsinspect.toml");
        std::fs::write(&config, config_text(dir.path(), &hash))?;
        let cfg = tlsinspect::config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let app = Arc::new(Appliance::start_without_dataplane(&config, cfg.clone())?);
        let services = Services::start(&app)?;
        let console = Console::start(app.clone(), &cfg)?;
        let cert_pem = std::fs::read(dir.path().join("state/console/console.crt"))?;
        let cert_der = pem::parse(&cert_pem)?.into_contents();
        let base = format!("https://{}", console.addr());
        Ok(Kit {
            log: dir.path().join("traffic.jsonl"),
            audit: dir.path().join("state/console-audit.jsonl"),
            state: dir.path().join("state"),
            config,
            dir,
            console: Some(console),
            services: Some(services),
            app,
            base,
            cert_der,
        })
    }

    /// The console's address.
    pub fn addr(&self) -> SocketAddr {
        self.console
            .as_ref()
            .map(|c| c.addr())
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into())
    }

    /// A client without a session.
    pub fn client(&self) -> Client {
        Client::new(&self.base, &self.cert_der)
    }

    /// A logged-in API client and its CSRF token.
    pub fn api(&self) -> anyhow::Result<(Client, String)> {
        let mut c = self.client();
        let r = c.post_json("/api/v1/login", &json!({ "password": PASSWORD }), None)?;
        anyhow::ensure!(r.status == 200, "login: {} {}", r.status, r.text);
        let csrf = r.json()?["csrf_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok((c, csrf))
    }

    /// The audit log's entries.
    pub fn audit_entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        drop(self.console.take());
        drop(self.services.take());
    }
}

/// A response: status, headers, body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub text: String,
}

impl Resp {
    /// The first header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("not JSON: {}", self.text))
    }
}

/// An HTTPS client trusting only the console's certificate, keeping the
/// session cookie itself (so tests can look at its attributes).
pub struct Client {
    agent: ureq::Agent,
    base: String,
    pub cookie: Option<String>,
}

impl Client {
    fn new(base: &str, cert_der: &[u8]) -> Client {
        let certs = vec![ureq::tls::Certificate::from_der(cert_der).to_owned()];
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client {
            agent,
            base: base.to_owned(),
            cookie: None,
        }
    }

    fn finish(
        &mut self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Resp> {
        let mut r = r?;
        let headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        if let Some(c) = headers.iter().find(|(k, _)| k == "set-cookie") {
            let pair = c.1.split(';').next().unwrap_or_default().to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        let status = r.status().as_u16();
        let body = r.body_mut().with_config().limit(64 << 20).read_to_vec()?;
        let text = String::from_utf8_lossy(&body).into_owned();
        Ok(Resp {
            status,
            headers,
            body,
            text,
        })
    }

    /// GET `path`.
    pub fn get(&mut self, path: &str) -> anyhow::Result<Resp> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.call();
        self.finish(r)
    }

    /// `method` with a JSON body and, if given, the CSRF header.
    pub fn send_json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        csrf: Option<&str>,
    ) -> anyhow::Result<Resp> {
        let url = format!("{}{path}", self.base);
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        if let Some(c) = &self.cookie {
            b = b.header("cookie", c);
        }
        if let Some(t) = csrf {
            b = b.header("x-csrf-token", t);
        }
        let text = body.map(|v| v.to_string()).unwrap_or_default();
        let req = b.header("content-type", "application/json").body(text)?;
        let r = self.agent.run(req);
        self.finish(r)
    }

    /// POST JSON.
    pub fn post_json(
        &mut self,
        path: &str,
        body: &Value,
        csrf: Option<&str>,
    ) -> anyhow::Result<Resp> {
        self.send_json("POST", path, Some(body), csrf)
    }

    /// POST a form.
    pub fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> anyhow::Result<Resp> {
        let url = format!("{}{path}", self.base);
        let body: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut b = ureq::http::Request::builder().method("POST").uri(url);
        if let Some(c) = &self.cookie {
            b = b.header("cookie", c);
        }
        let req = b
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)?;
        let r = self.agent.run(req);
        self.finish(r)
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- WebDriver ------------------------------------------------------------

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether Debian's chromium and chromedriver are installed.
pub fn have_browser() -> bool {
    Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists()
}

/// chromedriver (started here, killed by PID on drop) with one headless chromium session.
pub struct Browser {
    driver: Child,
    http: ureq::Agent,
    url: String,
    session: String,
    _profile: tempfile::TempDir,
    pub downloads: PathBuf,
    pub shots: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session.
    /// Screenshots go to `target/console-screenshots/<tag>/`.
    pub fn start(tag: &str) -> anyhow::Result<Browser> {
        let port = free_port()?;
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting /usr/bin/chromedriver")?;
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let url = format!("http://127.0.0.1:{port}");
        let profile = tempfile::Builder::new()
            .prefix("tlsinspect-chromium-")
            .tempdir()?;
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads)?;
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/console-screenshots")
            .join(tag);
        std::fs::create_dir_all(&shots)?;
        let mut b = Browser {
            driver,
            http,
            url,
            session: String::new(),
            downloads: downloads.clone(),
            shots,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.http.get(format!("{}/status", b.url)).call().is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {}", b.url);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=1280,1000",
                         format!("--user-data-dir={}", b._profile.path().join("profile").display())],
                "prefs": { "download.default_directory": downloads.display().to_string(),
                           "download.prompt_for_download": false }
            }
        }}});
        let v = b.cmd("POST", "/session", Some(caps))?;
        b.session = v["sessionId"].as_str().context("no sessionId")?.to_owned();
        Ok(b)
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = if path == "/session" {
            format!("{}{path}", self.url)
        } else {
            format!("{}/session/{}{path}", self.url, self.session)
        };
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json")
            .body(body.unwrap_or(json!({})).to_string())?;
        let mut r = self.http.run(req)?;
        let status = r.status().as_u16();
        let v: Value = r.body_mut().with_config().limit(64 << 20).read_json()?;
        if status != 200 {
            bail!(
                "WebDriver {method} {path}: {status} {}",
                v["value"]["message"]
            );
        }
        Ok(v.get("value").cloned().unwrap_or(Value::Null))
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// The current URL.
    pub fn current_url(&self) -> anyhow::Result<String> {
        Ok(self
            .cmd("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The element matching `css`.
    pub fn find(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .with_context(|| format!("finding {css}"))?;
        Ok(v[ELEMENT]
            .as_str()
            .with_context(|| format!("finding {css}: no element in {v}"))?
            .to_owned())
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> anyhow::Result<usize> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(v.as_array().map_or(0, Vec::len))
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        let e = self.find(css)?;
        self.cmd("POST", &format!("/element/{e}/click"), None)
            .map(drop)
    }

    /// Clicks the element matching `css` and waits until the page it leads
    /// to is loaded (WebDriver's click does not wait for a navigation).
    pub fn click_nav(&self, css: &str) -> anyhow::Result<()> {
        let old = self.find("html")?;
        self.click(css)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let new = self.find("html").ok();
            let ready = self
                .cmd(
                    "POST",
                    "/execute/sync",
                    Some(json!({ "script": "return document.readyState", "args": [] })),
                )
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            if new.is_some_and(|n| n != old) && ready.as_deref() == Some("complete") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("clicking {css} did not load a new page within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces the value of the field matching `css` by typing `text`.
    pub fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.find(css)?;
        self.cmd("POST", &format!("/element/{e}/clear"), None)?;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    /// The visible text of the element matching `css`.
    pub fn text(&self, css: &str) -> anyhow::Result<String> {
        let e = self.find(css)?;
        Ok(self
            .cmd("GET", &format!("/element/{e}/text"), None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// An attribute of the element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> anyhow::Result<Option<String>> {
        let e = self.find(css)?;
        Ok(self
            .cmd("GET", &format!("/element/{e}/attribute/{name}"), None)?
            .as_str()
            .map(str::to_owned))
    }

    /// The page's visible text.
    pub fn body_text(&self) -> anyhow::Result<String> {
        self.text("body")
    }

    /// Writes a PNG screenshot of the window to `<shots>/<name>.png`.
    pub fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        use base64::Engine as _;
        let v = self.cmd("GET", "/screenshot", None)?;
        let png =
            base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?;
        let p = self.shots.join(format!("{name}.png"));
        std::fs::write(&p, png)?;
        Ok(p)
    }

    /// Waits until a file ending in `suffix` is in the download dir.
    pub fn wait_download(&self, suffix: &str) -> anyhow::Result<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for e in std::fs::read_dir(&self.downloads)?.flatten() {
                let p = e.path();
                if p.to_string_lossy().ends_with(suffix) {
                    return Ok(p);
                }
            }
            if Instant::now() > deadline {
                bail!("no {suffix} download in {}", self.downloads.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.cmd("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
