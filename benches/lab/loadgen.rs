//! The interception benchmark's TLS client, run inside the client namespace.
//!
//! The harness re-executes its own binary as `<bench> __loadgen <mode> ...`
//! under `ip netns exec`, so the client needs nothing installed and shares
//! the exact rustls build of the appliance. Every connection is a full
//! handshake (resumption disabled), verified against the trusted roots given
//! with `--ca`, and the issuer of the leaf the client saw is reported so the
//! harness can tell an intercepting middlebox (policy CA) from a relay
//! (origin certificate). Each mode prints one JSON line.
//!
//! Modes:
//! - `rate`: `--concurrency` threads, each looping connect + handshake +
//!   `GET --path` + read to close, for `--seconds`.
//! - `bulk`: `--conns` connections, each repeating keep-alive `GET --path`
//!   of a [`tlsinspect::demo::probe::pattern_bytes`] file for `--seconds`,
//!   checking every byte against the pattern.
//! - `hold`: opens `--count` connections (handshake only, no request) with
//!   `--concurrency` threads, prints the result, then holds them open until
//!   its stdin closes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};

/// What one load-generator run observed.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    /// Completed units: connections (`rate`, `hold`) or downloads (`bulk`).
    pub ok: u64,
    /// Failed connections.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// Issuer DN of the leaf certificate -> connections that saw it (sampled).
    pub issuers: BTreeMap<String, u64>,
    /// Negotiated protocol version and cipher suite -> connections (sampled).
    pub suites: BTreeMap<String, u64>,
    /// Body bytes received (`bulk`: checked against the pattern).
    pub bytes: u64,
    /// Body bytes that differed from the pattern (`bulk`).
    pub mismatched_downloads: u64,
    /// Wall time of the measured part, seconds.
    pub elapsed_s: f64,
}

impl LoadResult {
    fn merge(&mut self, o: LoadResult) {
        self.ok += o.ok;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        for (k, v) in o.issuers {
            *self.issuers.entry(k).or_default() += v;
        }
        for (k, v) in o.suites {
            *self.suites.entry(k).or_default() += v;
        }
        self.bytes += o.bytes;
        self.mismatched_downloads += o.mismatched_downloads;
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

struct Opts {
    connect: SocketAddr,
    sni: String,
    ca: Vec<PathBuf>,
    path: String,
    seconds: f64,
    concurrency: usize,
    count: u64,
    tls12_only: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        connect: "203.0.113.10:443".parse()?,
        sni: "www.example.com".into(),
        ca: Vec::new(),
        path: "/".into(),
        seconds: 10.0,
        concurrency: 32,
        count: 1,
        tls12_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--tls12" {
            o.tls12_only = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--connect" => o.connect = v.parse().with_context(|| format!("--connect {v}"))?,
            "--sni" => o.sni = v.clone(),
            "--ca" => o.ca.push(v.into()),
            "--path" => o.path = v.clone(),
            "--seconds" => o.seconds = v.parse().with_context(|| format!("--seconds {v}"))?,
            "--concurrency" => o.concurrency = v.parse().context("--concurrency")?,
            "--count" | "--conns" => o.count = v.parse().with_context(|| format!("{a} {v}"))?,
            other => bail!("unknown load-generator option {other}"),
        }
    }
    Ok(o)
}

fn client_config(o: &Opts) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for f in &o.ca {
        for c in
            CertificateDer::pem_file_iter(f).with_context(|| format!("reading {}", f.display()))?
        {
            roots.add(c.with_context(|| format!("parsing {}", f.display()))?)?;
        }
    }
    let builder = if o.tls12_only {
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        rustls::ClientConfig::builder()
    };
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection a full handshake: no tickets, no session IDs.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Connects and completes the handshake (verified) within `timeout`.
fn handshake(
    o: &Opts,
    config: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> anyhow::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let name = ServerName::try_from(o.sni.clone())?;
    let conn = rustls::ClientConnection::new(config.clone(), name)?;
    let sock = TcpStream::connect_timeout(&o.connect, timeout)
        .with_context(|| format!("connecting to {}", o.connect))?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    sock.set_nodelay(true)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .context("TLS handshake")?;
    }
    Ok(tls)
}

/// Records issuer and suite of a finished handshake.
fn note_session(r: &mut LoadResult, conn: &rustls::ClientConnection) {
    let issuer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .map_or_else(|| "?".to_owned(), |(_, x)| x.issuer().to_string());
    *r.issuers.entry(issuer).or_default() += 1;
    let suite = format!(
        "{:?} {:?}",
        conn.protocol_version(),
        conn.negotiated_cipher_suite().map(|s| s.suite())
    );
    *r.suites.entry(suite).or_default() += 1;
}

fn one_get(
    o: &Opts,
    config: &Arc<rustls::ClientConfig>,
    sample: bool,
    r: &mut LoadResult,
) -> anyhow::Result<()> {
    let mut tls = handshake(o, config, Duration::from_secs(10))?;
    if sample {
        note_session(r, &tls.conn);
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        o.path, o.sni
    );
    tls.write_all(req.as_bytes())?;
    let mut buf = [0u8; 16384];
    let mut got = 0usize;
    let mut head = Vec::new();
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if head.len() < 12 {
                    head.extend_from_slice(&buf[..n.min(12)]);
                }
                got += n;
            }
            // A peer closing without close_notify after the response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && got > 0 => break,
            Err(e) => return Err(e).context("reading the response"),
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!(
            "unexpected response {:?} ({got} bytes)",
            String::from_utf8_lossy(&head)
        );
    }
    Ok(())
}

fn rate(o: &Opts) -> anyhow::Result<LoadResult> {
    let config = client_config(o)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let results: Vec<LoadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.concurrency.max(1))
            .map(|_| {
                let config = &config;
                s.spawn(move || {
                    let mut r = LoadResult::default();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        // Sample the certificate on the first and every 64th connection.
                        match one_get(o, config, n % 64 == 0, &mut r) {
                            Ok(()) => r.ok += 1,
                            Err(e) => {
                                r.error(format!("{e:#}"));
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                        n += 1;
                    }
                    r
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut total = LoadResult::default();
    for r in results {
        total.merge(r);
    }
    total.elapsed_s = start.elapsed().as_secs_f64();
    Ok(total)
}

/// Compares a body stream against `pattern_bytes` without holding it whole.
struct PatternCheck {
    x: u64,
    expect: Vec<u8>,
    pos: usize,
    ok: bool,
}

impl PatternCheck {
    const CHUNK: usize = 1 << 20;

    fn new() -> Self {
        PatternCheck {
            x: 0x9e37_79b9_7f4a_7c15,
            expect: Vec::with_capacity(Self::CHUNK),
            pos: 0,
            ok: true,
        }
    }

    fn refill(&mut self) {
        // Same xorshift as pattern_bytes; CHUNK is a multiple of 8 so
        // consecutive chunks continue the stream exactly.
        self.expect.clear();
        while self.expect.len() < Self::CHUNK {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            self.expect.extend_from_slice(&self.x.to_le_bytes());
        }
        self.pos = 0;
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.pos == self.expect.len() {
                self.refill();
            }
            let n = data.len().min(self.expect.len() - self.pos);
            if data[..n] != self.expect[self.pos..self.pos + n] {
                self.ok = false;
            }
            self.pos += n;
            data = &data[n..];
        }
    }
}

fn bulk_conn(o: &Opts, config: &Arc<rustls::ClientConfig>, deadline: Instant) -> LoadResult {
    let mut r = LoadResult::default();
    if let Err(e) = bulk_downloads(o, config, deadline, &mut r) {
        r.error(format!("{e:#}"));
    }
    r
}

fn bulk_downloads(
    o: &Opts,
    config: &Arc<rustls::ClientConfig>,
    deadline: Instant,
    r: &mut LoadResult,
) -> anyhow::Result<()> {
    {
        let mut tls = handshake(o, config, Duration::from_secs(30))?;
        note_session(r, &tls.conn);
        let mut buf = vec![0u8; 256 << 10];
        let mut pending: Vec<u8> = Vec::new();
        while Instant::now() < deadline {
            let req = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n\r\n",
                o.path, o.sni
            );
            tls.write_all(req.as_bytes())?;
            // Head.
            let (len, body_start) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut headers);
                if let httparse::Status::Complete(off) = resp.parse(&pending)? {
                    if resp.code != Some(200) {
                        bail!("HTTP status {:?}", resp.code);
                    }
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .context("response without Content-Length")?;
                    break (len, off);
                }
                let n = tls.read(&mut buf)?;
                if n == 0 {
                    bail!("connection closed in the response head");
                }
                pending.extend_from_slice(&buf[..n]);
            };
            let mut check = PatternCheck::new();
            let mut left: u64 = len;
            let first = (pending.len() - body_start).min(len as usize);
            check.feed(&pending[body_start..body_start + first]);
            left -= first as u64;
            pending.drain(..body_start + first);
            while left > 0 {
                let n = tls.read(&mut buf)?;
                if n == 0 {
                    bail!("connection closed with {left} body bytes missing");
                }
                let take = (n as u64).min(left) as usize;
                check.feed(&buf[..take]);
                pending.extend_from_slice(&buf[take..n]);
                left -= take as u64;
            }
            r.bytes += len;
            r.ok += 1;
            if !check.ok {
                r.mismatched_downloads += 1;
            }
        }
        Ok(())
    }
}

fn bulk(o: &Opts) -> anyhow::Result<LoadResult> {
    let config = client_config(o)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let results: Vec<LoadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.count.max(1))
            .map(|_| {
                let config = &config;
                s.spawn(move || bulk_conn(o, config, deadline))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut total = LoadResult::default();
    for r in results {
        total.merge(r);
    }
    total.elapsed_s = start.elapsed().as_secs_f64();
    Ok(total)
}

fn hold(o: &Opts) -> anyhow::Result<()> {
    let config = client_config(o)?;
    let held: Mutex<Vec<TcpStream>> = Mutex::new(Vec::with_capacity(o.count as usize));
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let results: Vec<LoadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.concurrency.max(1))
            .map(|_| {
                let (config, held, next) = (&config, &held, &next);
                s.spawn(move || {
                    let mut r = LoadResult::default();
                    while next.fetch_add(1, Ordering::Relaxed) < o.count {
                        match handshake(o, config, Duration::from_secs(30)) {
                            Ok(tls) => {
                                if r.ok % 64 == 0 {
                                    note_session(&mut r, &tls.conn);
                                }
                                r.ok += 1;
                                // Keep only the socket: the connection stays
                                // open and idle; our TLS state is not needed.
                                let (_, sock) = tls.into_parts();
                                held.lock().unwrap_or_else(|e| e.into_inner()).push(sock);
                            }
                            Err(e) => r.error(format!("{e:#}")),
                        }
                    }
                    r
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut total = LoadResult::default();
    for r in results {
        total.merge(r);
    }
    total.elapsed_s = start.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string(&total)?);
    std::io::stdout().flush()?;
    // Hold until the harness closes our stdin (or kills us).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(held);
    Ok(())
}

/// Entry point of `__loadgen <mode> <options>`.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let (mode, rest) = args.split_first().context("__loadgen needs a mode")?;
    let o = parse(rest)?;
    let r = match mode.as_str() {
        "rate" => rate(&o)?,
        "bulk" => bulk(&o)?,
        "hold" => return hold(&o),
        other => bail!("unknown load-generator mode {other}"),
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
